//! Puts one device's live stored events back into `seq` order.
//!
//! Each stored event is published by the task that committed it, so two
//! events committed in the same batch can reach a device in either order.
//! Reading the store at every such swap cost more than anything else the
//! device's connection did under load (a profile of group fan-out found
//! the store's readers busy with these gap fills; they hold 17% of the
//! server's samples). So an event that comes early is held until the ones
//! before it arrive, which is normally microseconds later. Only when the
//! gap has stayed open for `max_wait` (a publisher that never published,
//! say, because its request was cancelled after the commit) and nothing
//! more is queued for the device, or more than `max_held` events are
//! waiting, must the connection fill it from the store. The queue matters
//! under load: a connection busy with its own request often finds the
//! deadline passed while the missing event sits in its queue, and filling
//! then took about 30% of the server's CPU per message in saturated
//! group fan-out (docs/BENCHMARKS.md).
//!
//! Sans-IO: time comes in as an argument and the connection owns the
//! timer, so tests drive it with a made-up clock.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use voice_core::wire::SharedEvent;

/// What one device's [`EventOrder`] has done, for measuring how often the
/// reorder wait comes into play.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderStats {
    /// Live events that came before an earlier one and had to wait.
    pub early: u64,
    /// Gaps filled from the store (at the deadline, or with too many held).
    pub fills: u64,
}

/// [`OrderStats`] summed over the connections that have closed, shared by
/// their tasks.
#[derive(Debug, Default)]
pub struct OrderTotals {
    early: AtomicU64,
    fills: AtomicU64,
}

impl OrderTotals {
    /// Adds a closed connection's counts.
    pub fn add(&self, stats: OrderStats) {
        self.early.fetch_add(stats.early, Ordering::Relaxed);
        self.fills.fetch_add(stats.fills, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OrderStats {
        OrderStats {
            early: self.early.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
pub struct EventOrder {
    /// The newest seq the device has been given.
    last_seq: u64,
    /// Events after a gap, by seq.
    held: BTreeMap<u64, SharedEvent>,
    /// Since when something has been held: the oldest held event has
    /// waited at least this long.
    holding_since: Option<Instant>,
    max_wait: Duration,
    max_held: usize,
    stats: OrderStats,
}

impl EventOrder {
    /// A device that has been given every event up to `last_seq`.
    pub fn new(last_seq: u64, max_wait: Duration, max_held: usize) -> Self {
        Self {
            last_seq,
            held: BTreeMap::new(),
            holding_since: None,
            max_wait,
            max_held,
            stats: OrderStats::default(),
        }
    }

    /// Counts of what this device's ordering has done so far.
    pub fn stats(&self) -> OrderStats {
        self.stats
    }

    /// The newest seq handed out by [`Self::pop_ready`] or covered by
    /// [`Self::filled_up_to`].
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Takes a stored event (one with a seq) from the bus. Repeats of what
    /// the device has, or holds, are dropped.
    pub fn push(&mut self, event: SharedEvent, now: Instant) {
        let Some(seq) = event.seq else {
            debug_assert!(false, "only stored events are ordered");
            return;
        };
        if seq <= self.last_seq {
            return;
        }
        if self.held.is_empty() {
            self.holding_since = Some(now);
        }
        // A repeat of a held event is dropped, and counted once.
        if let Entry::Vacant(slot) = self.held.entry(seq) {
            if seq > self.last_seq + 1 {
                self.stats.early += 1;
            }
            slot.insert(event);
        }
    }

    /// The next event the device should get, if it is here.
    pub fn pop_ready(&mut self) -> Option<SharedEvent> {
        let entry = self.held.first_entry()?;
        if *entry.key() != self.last_seq + 1 {
            return None;
        }
        self.last_seq += 1;
        let event = entry.remove();
        if self.held.is_empty() {
            self.holding_since = None;
        }
        Some(event)
    }

    /// When the gap before the held events must be filled from the store,
    /// if anything is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.holding_since.map(|since| since + self.max_wait)
    }

    /// Whether the gap must be filled from the store now: too many held, or
    /// held too long with nothing more queued for the device (`more_queued`
    /// false). An event still in the device's queue may be the missing one:
    /// a connection busy with its own request can find the deadline passed
    /// while what closes the gap waits there, so the deadline counts only
    /// once the queue has been emptied.
    pub fn must_fill(&self, now: Instant, more_queued: bool) -> bool {
        self.held.len() > self.max_held
            || (!more_queued && self.deadline().is_some_and(|deadline| now >= deadline))
    }

    /// The store gave the device every event up to `seq`: what is held up
    /// to there is a repeat. What is held after it waits on (from `now`)
    /// for whatever gap is left.
    pub fn filled_up_to(&mut self, seq: u64, now: Instant) {
        self.stats.fills += 1;
        self.last_seq = self.last_seq.max(seq);
        self.held = self.held.split_off(&(self.last_seq + 1));
        self.holding_since = (!self.held.is_empty()).then_some(now);
    }
}

#[cfg(test)]
mod tests {
    use voice_core::wire::Event;

    use super::*;

    const WAIT: Duration = Duration::from_millis(20);

    fn stored(seq: u64) -> SharedEvent {
        SharedEvent::new(
            Some(seq),
            std::sync::Arc::new(Event::ResyncRequired {
                reason: String::new(),
                latest_seq: seq,
            }),
        )
    }

    fn ready(order: &mut EventOrder) -> Vec<u64> {
        std::iter::from_fn(|| order.pop_ready())
            .map(|event| event.seq.unwrap())
            .collect()
    }

    #[test]
    fn events_in_order_pass_straight_through() {
        let now = Instant::now();
        let mut order = EventOrder::new(3, WAIT, 8);
        for seq in 4..=6 {
            order.push(stored(seq), now);
            assert_eq!(ready(&mut order), [seq]);
            assert_eq!(order.deadline(), None);
        }
        assert_eq!(order.last_seq(), 6);
        assert_eq!(order.stats(), OrderStats::default(), "nothing waited");
    }

    #[test]
    fn an_early_event_waits_for_the_one_before_it() {
        let start = Instant::now();
        let mut order = EventOrder::new(3, WAIT, 8);
        order.push(stored(5), start);
        assert_eq!(ready(&mut order), Vec::<u64>::new());
        assert_eq!(order.deadline(), Some(start + WAIT));
        assert!(!order.must_fill(start + WAIT - Duration::from_millis(1), false));

        order.push(stored(4), start + Duration::from_millis(1));
        assert_eq!(ready(&mut order), [4, 5]);
        assert_eq!(order.deadline(), None, "nothing held, nothing to wait for");
        assert!(!order.must_fill(start + WAIT * 10, false));
    }

    #[test]
    fn repeats_are_dropped() {
        let now = Instant::now();
        let mut order = EventOrder::new(3, WAIT, 8);
        order.push(stored(2), now);
        order.push(stored(3), now);
        order.push(stored(5), now);
        order.push(stored(5), now);
        order.push(stored(4), now);
        assert_eq!(ready(&mut order), [4, 5]);
        order.push(stored(5), now);
        assert_eq!(ready(&mut order), Vec::<u64>::new());
        assert_eq!(order.deadline(), None);
        assert_eq!(
            order.stats(),
            OrderStats { early: 1, fills: 0 },
            "5 waited once, however often it came"
        );
    }

    #[test]
    fn a_gap_that_stays_open_is_filled_from_the_store_at_the_deadline() {
        let start = Instant::now();
        let mut order = EventOrder::new(3, WAIT, 8);
        order.push(stored(5), start);
        // Later arrivals do not move the deadline: the oldest has waited
        // since `start`.
        order.push(stored(7), start + Duration::from_millis(15));
        assert!(!order.must_fill(start + Duration::from_millis(19), false));
        assert!(order.must_fill(start + WAIT, false));

        // The store had everything up to 6 (5 again, and 4 and 6, which
        // never came live).
        let later = start + WAIT;
        order.filled_up_to(6, later);
        assert_eq!(ready(&mut order), [7]);
        assert_eq!(order.last_seq(), 7);
        assert_eq!(order.deadline(), None);
        assert_eq!(order.stats(), OrderStats { early: 2, fills: 1 });
    }

    #[test]
    fn what_is_held_past_a_fill_waits_again_from_the_fill() {
        let start = Instant::now();
        let mut order = EventOrder::new(3, WAIT, 8);
        order.push(stored(5), start);
        order.push(stored(9), start);
        let later = start + WAIT;
        order.filled_up_to(6, later);
        assert_eq!(ready(&mut order), Vec::<u64>::new(), "7 and 8 are missing");
        assert_eq!(order.deadline(), Some(later + WAIT));
        order.push(stored(8), later);
        order.push(stored(7), later);
        assert_eq!(ready(&mut order), [7, 8, 9]);
    }

    #[test]
    fn a_fill_behind_what_the_device_has_changes_nothing() {
        let now = Instant::now();
        let mut order = EventOrder::new(10, WAIT, 8);
        order.filled_up_to(4, now);
        assert_eq!(order.last_seq(), 10);
        order.push(stored(11), now);
        assert_eq!(ready(&mut order), [11]);
    }

    #[test]
    fn too_many_held_must_be_filled_at_once() {
        let now = Instant::now();
        let mut order = EventOrder::new(0, WAIT, 2);
        order.push(stored(2), now);
        order.push(stored(3), now);
        assert!(!order.must_fill(now, false));
        order.push(stored(4), now);
        assert!(order.must_fill(now, false), "three held, two allowed");
        // Memory is bounded even while more keeps coming.
        assert!(order.must_fill(now, true));
    }

    #[test]
    fn a_passed_deadline_waits_while_more_is_queued() {
        let start = Instant::now();
        let mut order = EventOrder::new(3, WAIT, 8);
        order.push(stored(5), start);
        let late = start + WAIT * 3;
        assert!(
            !order.must_fill(late, true),
            "what is queued may close the gap"
        );
        assert!(order.must_fill(late, false));
        order.push(stored(4), late);
        assert_eq!(ready(&mut order), [4, 5]);
        assert!(!order.must_fill(late, false));
    }

    #[test]
    fn after_a_gap_closes_a_new_one_waits_from_its_own_start() {
        let start = Instant::now();
        let mut order = EventOrder::new(0, WAIT, 8);
        order.push(stored(2), start);
        order.push(stored(1), start);
        assert_eq!(ready(&mut order), [1, 2]);
        let later = start + Duration::from_secs(1);
        order.push(stored(4), later);
        assert_eq!(order.deadline(), Some(later + WAIT));
    }
}
