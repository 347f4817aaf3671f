//! The call queue: every call in progress, each a [`Call`] state machine,
//! with one timer for all of them. Sans-IO like the calls: the driver
//! sleeps until [`CallQueue::poll_timeout`], calls
//! [`CallQueue::handle_timeout`], and carries out what
//! [`CallQueue::poll_output`] yields.
//!
//! Deadlines sit in an ordered map keyed by `(deadline, call)`, so arming,
//! re-arming and expiring cost O(log n) each, and the next deadline is the
//! map's first entry: 100,000 ringing calls cost no more per call than ten.
//!
//! The calls themselves live in a slab, one dense array, and the timers
//! and the per-user index point into it by slot: expiring a call needs no
//! lookup to find it, and growing the queue never moves the calls through
//! a rehash.
//!
//! Glare: when A calls B while B's call to A is still ringing, A's request
//! answers B's call from A's requesting device. Both wanted to talk; one
//! call connects them, and nobody is left ringing.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use slab::Slab;

use crate::call::{Call, CallConfig, CallError, CallOutput, CallPhase, Device};
use crate::ids::{CallId, SessionId, UserId};
use crate::model::CallOutcome;

/// What became of a call request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// A new call rings until `deadline`.
    Ringing { call: CallId, deadline: Instant },
    /// The callee was calling the caller: that call is now answered.
    JoinedGlare { call: CallId },
    /// The callee is in another call; the attempt ended at once.
    Busy { call: CallId },
}

/// A call as the queue reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallView {
    pub id: CallId,
    pub caller: Device,
    pub callee: UserId,
    pub callee_device: Option<Device>,
    pub phase: CallPhase,
    pub ring_deadline: Instant,
}

/// The maps are keyed by ids the server made, so std's SipHash, the
/// costliest part of every lookup, buys little flood resistance here;
/// foldhash is far cheaper and still seeded per process.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A call and the deadline its timer is armed at, kept together so that
/// re-arming needs no second lookup.
struct Slot {
    call: Call,
    armed: Option<Instant>,
}

#[derive(Default)]
pub struct CallQueue {
    slots: Slab<Slot>,
    /// Each call's slot.
    by_id: Map<CallId, usize>,
    /// The slot of the one call each user is in.
    by_user: Map<UserId, usize>,
    /// Armed deadlines, with the slot of their call.
    timers: BTreeMap<(Instant, CallId), usize>,
    outputs: VecDeque<CallOutput>,
    config: CallConfig,
}

impl CallQueue {
    pub fn new(config: CallConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    // Getters.

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get(&self, id: CallId) -> Option<CallView> {
        self.by_id.get(&id).map(|&key| self.view(key))
    }

    /// The call `user` is in, if any.
    pub fn call_of(&self, user: UserId) -> Option<CallView> {
        self.by_user.get(&user).map(|&key| self.view(key))
    }

    // Inputs.

    /// `caller` asks to call `callee`, with the id the new call would get.
    pub fn handle_request(
        &mut self,
        now: Instant,
        id: CallId,
        caller: Device,
        callee: UserId,
    ) -> Result<Requested, CallError> {
        // Deadlines that passed count before anything is decided on them.
        self.handle_timeout(now);
        if caller.user == callee {
            return Err(CallError::NotParticipant);
        }
        // Ids come from the driver; a repeat would make two calls share
        // one entry in `by_id`, so it is refused before anything changes.
        if self.by_id.contains_key(&id) {
            return Err(CallError::IdInUse);
        }
        if let Some(&existing) = self.by_user.get(&caller.user) {
            let call = &self.slots[existing].call;
            let glare = call.caller().user == callee
                && call.callee() == caller.user
                && call.phase() == CallPhase::Ringing;
            if !glare {
                return Err(CallError::AlreadyInCall);
            }
            let existing_id = call.id();
            self.with_slot(existing, |call| call.handle_accept(now, caller))?;
            return Ok(Requested::JoinedGlare { call: existing_id });
        }
        let key = self.slots.vacant_key();
        // One lookup both finds a busy callee and claims a free one.
        match self.by_user.entry(callee) {
            Entry::Occupied(_) => {
                self.outputs.push_back(CallOutput::Ended {
                    call: id,
                    caller,
                    callee,
                    outcome: CallOutcome::Busy,
                    reason: "the callee is in another call",
                    answered_at: None,
                });
                return Ok(Requested::Busy { call: id });
            }
            Entry::Vacant(entry) => {
                entry.insert(key);
            }
        }
        self.by_user.insert(caller.user, key);
        self.by_id.insert(id, key);
        let mut call = Call::new(id, caller, callee, now, self.config.clone());
        let deadline = call.ring_deadline();
        self.outputs
            .extend(std::iter::from_fn(|| call.poll_output()));
        let armed = call.poll_timeout();
        if let Some(at) = armed {
            self.timers.insert((at, id), key);
        }
        self.slots.insert(Slot { call, armed });
        Ok(Requested::Ringing { call: id, deadline })
    }

    pub fn handle_accept(
        &mut self,
        now: Instant,
        id: CallId,
        device: Device,
    ) -> Result<(), CallError> {
        self.with_call(id, |call| call.handle_accept(now, device))
    }

    pub fn handle_reject(
        &mut self,
        now: Instant,
        id: CallId,
        user: UserId,
    ) -> Result<(), CallError> {
        self.with_call(id, |call| call.handle_reject(now, user))
    }

    pub fn handle_cancel(
        &mut self,
        now: Instant,
        id: CallId,
        user: UserId,
    ) -> Result<(), CallError> {
        self.with_call(id, |call| call.handle_cancel(now, user))
    }

    pub fn handle_hangup(
        &mut self,
        now: Instant,
        id: CallId,
        device: Device,
    ) -> Result<(), CallError> {
        self.with_call(id, |call| call.handle_hangup(now, device))
    }

    pub fn handle_connected(
        &mut self,
        now: Instant,
        id: CallId,
        device: Device,
    ) -> Result<(), CallError> {
        self.with_call(id, |call| call.handle_connected(now, device))
    }

    pub fn handle_signal(
        &mut self,
        now: Instant,
        id: CallId,
        from: Device,
        payload: String,
    ) -> Result<(), CallError> {
        self.with_call(id, |call| call.handle_signal(now, from, payload))
    }

    /// A device's WebSocket closed.
    pub fn handle_device_away(&mut self, now: Instant, device: Device) {
        if let Some(&key) = self.by_user.get(&device.user) {
            let _ = self.with_slot(key, |call| {
                call.handle_device_away(now, device.session);
                Ok(())
            });
        }
    }

    /// A device's WebSocket opened.
    pub fn handle_device_back(&mut self, device: Device) {
        if let Some(&key) = self.by_user.get(&device.user) {
            let _ = self.with_slot(key, |call| {
                call.handle_device_back(device.session);
                Ok(())
            });
        }
    }

    /// Ends every call whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(deadline, _), &key)) = self.timers.first_key_value() {
            if deadline > now {
                break;
            }
            let _ = self.with_slot(key, |call| {
                call.handle_timeout(now);
                Ok(())
            });
        }
    }

    // Output.

    /// The earliest deadline of all calls.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers
            .first_key_value()
            .map(|(&(deadline, _), _)| deadline)
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.outputs.pop_front()
    }

    fn view(&self, key: usize) -> CallView {
        let call = &self.slots[key].call;
        CallView {
            id: call.id(),
            caller: call.caller(),
            callee: call.callee(),
            callee_device: call.callee_device(),
            phase: call.phase(),
            ring_deadline: call.ring_deadline(),
        }
    }

    /// [`Self::with_slot`] for the call with id `id`.
    fn with_call(
        &mut self,
        id: CallId,
        input: impl FnOnce(&mut Call) -> Result<(), CallError>,
    ) -> Result<(), CallError> {
        let key = *self.by_id.get(&id).ok_or(CallError::NotFound)?;
        self.with_slot(key, input)
    }

    /// Runs an input on the call in slot `key`, then collects its output,
    /// re-arms its timer, and forgets it once it ended.
    fn with_slot(
        &mut self,
        key: usize,
        input: impl FnOnce(&mut Call) -> Result<(), CallError>,
    ) -> Result<(), CallError> {
        let Slot { call, armed } = &mut self.slots[key];
        let result = input(call);
        self.outputs
            .extend(std::iter::from_fn(|| call.poll_output()));
        let id = call.id();
        if let Some(device) = call.callee_device() {
            self.by_user.insert(device.user, key);
        }
        // Most inputs (a relayed signal, say) leave the deadline as it was,
        // and then the timer stays as it is.
        let deadline = call.poll_timeout();
        if deadline != *armed {
            if let Some(old) = *armed {
                self.timers.remove(&(old, id));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, id), key);
            }
            *armed = deadline;
        }
        if call.is_ended() {
            let Slot { call, .. } = self.slots.remove(key);
            for user in [call.caller().user, call.callee()] {
                if let Entry::Occupied(entry) = self.by_user.entry(user)
                    && *entry.get() == key
                {
                    entry.remove();
                }
            }
            // Checked like the users, so a driver that reused an id cannot
            // unlist the call that reused it.
            if let Entry::Occupied(entry) = self.by_id.entry(id)
                && *entry.get() == key
            {
                entry.remove();
            }
        }
        result
    }
}

/// Whether a session is one of the two devices of a call.
pub fn is_peer(view: &CallView, session: SessionId) -> bool {
    view.caller.session == session || view.callee_device.is_some_and(|d| d.session == session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn device() -> Device {
        Device {
            user: UserId::new(),
            session: SessionId::new(),
        }
    }

    fn outputs(queue: &mut CallQueue) -> Vec<CallOutput> {
        std::iter::from_fn(|| queue.poll_output()).collect()
    }

    fn ended(queue: &mut CallQueue) -> Vec<(CallId, CallOutcome)> {
        outputs(queue)
            .into_iter()
            .filter_map(|output| match output {
                CallOutput::Ended { call, outcome, .. } => Some((call, outcome)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_timer_expires_every_due_call_and_rearms_at_the_next() {
        let start = Instant::now();
        let mut queue = CallQueue::new(CallConfig::default());
        let mut ids = Vec::new();
        for i in 0..5u64 {
            let id = CallId::new();
            queue
                .handle_request(start + Duration::from_secs(i), id, device(), UserId::new())
                .unwrap();
            ids.push(id);
        }
        assert_eq!(queue.poll_timeout(), Some(start + Duration::from_secs(30)));
        outputs(&mut queue);
        queue.handle_timeout(start + Duration::from_secs(32));
        let expired: Vec<CallId> = ended(&mut queue).into_iter().map(|(id, _)| id).collect();
        assert_eq!(expired, ids[..3]);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.poll_timeout(), Some(start + Duration::from_secs(33)));
    }

    #[test]
    fn an_id_already_in_use_is_refused_and_changes_nothing() {
        let now = Instant::now();
        let mut queue = CallQueue::new(CallConfig::default());
        let (alice, bob, carol, dave) = (device(), device(), device(), device());
        let id = CallId::new();
        queue.handle_request(now, id, alice, bob.user).unwrap();
        outputs(&mut queue);
        assert_eq!(
            queue.handle_request(now, id, carol, dave.user),
            Err(CallError::IdInUse)
        );
        assert!(outputs(&mut queue).is_empty());
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.get(id).map(|call| call.caller), Some(alice));
        assert!(queue.call_of(carol.user).is_none());
        assert!(queue.call_of(dave.user).is_none());
    }

    #[test]
    fn a_busy_callee_ends_the_attempt_and_a_caller_in_a_call_cannot_call() {
        let now = Instant::now();
        let mut queue = CallQueue::new(CallConfig::default());
        let (alice, bob, carol) = (device(), device(), device());
        queue
            .handle_request(now, CallId::new(), alice, bob.user)
            .unwrap();
        let attempt = CallId::new();
        assert_eq!(
            queue.handle_request(now, attempt, carol, bob.user),
            Ok(Requested::Busy { call: attempt })
        );
        assert!(ended(&mut queue).contains(&(attempt, CallOutcome::Busy)));
        assert_eq!(
            queue.handle_request(now, CallId::new(), alice, carol.user),
            Err(CallError::AlreadyInCall)
        );
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn glare_turns_two_requests_into_one_answered_call() {
        let now = Instant::now();
        let mut queue = CallQueue::new(CallConfig::default());
        let (alice, bob) = (device(), device());
        let first = CallId::new();
        queue.handle_request(now, first, alice, bob.user).unwrap();
        outputs(&mut queue);
        assert_eq!(
            queue.handle_request(now, CallId::new(), bob, alice.user),
            Ok(Requested::JoinedGlare { call: first })
        );
        assert!(
            matches!(outputs(&mut queue)[..], [CallOutput::Accepted { device, .. }] if device == bob)
        );
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.get(first).unwrap().phase, CallPhase::Accepted);
        assert_eq!(
            queue.poll_timeout(),
            None,
            "an answered call has no deadline"
        );
    }

    #[test]
    fn ended_calls_free_their_users_and_timers() {
        let now = Instant::now();
        let mut queue = CallQueue::new(CallConfig::default());
        let (alice, bob) = (device(), device());
        let id = CallId::new();
        queue.handle_request(now, id, alice, bob.user).unwrap();
        queue.handle_reject(now, id, bob.user).unwrap();
        assert!(queue.is_empty());
        assert_eq!(queue.poll_timeout(), None);
        assert_eq!(queue.call_of(alice.user), None);
        assert_eq!(queue.handle_accept(now, id, bob), Err(CallError::NotFound));
        queue
            .handle_request(now, CallId::new(), bob, alice.user)
            .unwrap();
    }

    /// Random inputs at random times never panic, every call ends once its
    /// deadlines have passed, and every call that ends says so once.
    #[test]
    fn random_event_sequences_always_settle() {
        use proptest::prelude::*;
        #[derive(Clone, Debug)]
        enum Step {
            Request(usize, usize),
            Accept(usize),
            Reject(usize),
            Cancel(usize),
            Hangup(usize),
            Connected(usize),
            Signal(usize),
            Away(usize),
            Back(usize),
            Advance(u64),
        }
        let step = prop_oneof![
            (0..6usize, 0..6usize).prop_map(|(a, b)| Step::Request(a, b)),
            (0..6usize).prop_map(Step::Accept),
            (0..6usize).prop_map(Step::Reject),
            (0..6usize).prop_map(Step::Cancel),
            (0..6usize).prop_map(Step::Hangup),
            (0..6usize).prop_map(Step::Connected),
            (0..6usize).prop_map(Step::Signal),
            (0..6usize).prop_map(Step::Away),
            (0..6usize).prop_map(Step::Back),
            (0..20_000u64).prop_map(Step::Advance),
        ];
        proptest!(ProptestConfig::with_cases(300), |(steps in proptest::collection::vec(step, 1..80))| {
            let config = CallConfig {
                ring_timeout: Duration::from_secs(30),
                disconnect_grace: Duration::from_secs(10),
                ..CallConfig::default()
            };
            let mut queue = CallQueue::new(config);
            let start = Instant::now();
            let mut now = start;
            let devices: Vec<Device> = (0..6).map(|_| device()).collect();
            let mut started = Vec::new();
            let mut ends: HashMap<CallId, usize> = HashMap::new();
            for step in steps {
                let call_of = |queue: &CallQueue, d: usize| queue.call_of(devices[d].user).map(|v| v.id);
                match step {
                    Step::Request(a, b) => {
                        let id = CallId::new();
                        if let Ok(Requested::Ringing { call, .. }) = queue.handle_request(now, id, devices[a], devices[b].user) {
                            started.push(call);
                        }
                    }
                    Step::Accept(d) => if let Some(id) = call_of(&queue, d) { let _ = queue.handle_accept(now, id, devices[d]); },
                    Step::Reject(d) => if let Some(id) = call_of(&queue, d) { let _ = queue.handle_reject(now, id, devices[d].user); },
                    Step::Cancel(d) => if let Some(id) = call_of(&queue, d) { let _ = queue.handle_cancel(now, id, devices[d].user); },
                    Step::Hangup(d) => if let Some(id) = call_of(&queue, d) { let _ = queue.handle_hangup(now, id, devices[d]); },
                    Step::Connected(d) => if let Some(id) = call_of(&queue, d) { let _ = queue.handle_connected(now, id, devices[d]); },
                    Step::Signal(d) => if let Some(id) = call_of(&queue, d) { let _ = queue.handle_signal(now, id, devices[d], "{}".into()); },
                    Step::Away(d) => queue.handle_device_away(now, devices[d]),
                    Step::Back(d) => queue.handle_device_back(devices[d]),
                    Step::Advance(ms) => {
                        now += Duration::from_millis(ms);
                        if queue.poll_timeout().is_some_and(|t| t <= now) {
                            queue.handle_timeout(now);
                        }
                    }
                }
                for (id, _) in ended(&mut queue) {
                    *ends.entry(id).or_default() += 1;
                }
                // The driver handles the timer when it fires, so nothing
                // is ever left overdue.
                prop_assert!(queue.poll_timeout().is_none_or(|deadline| deadline > now));
            }
            // Take every device away and let all deadlines pass: everything ends.
            for d in &devices {
                queue.handle_device_away(now, *d);
            }
            now += Duration::from_secs(31);
            queue.handle_timeout(now);
            for (id, _) in ended(&mut queue) {
                *ends.entry(id).or_default() += 1;
            }
            prop_assert!(queue.is_empty(), "calls left: {}", queue.len());
            prop_assert_eq!(queue.poll_timeout(), None);
            for id in started {
                prop_assert_eq!(ends.get(&id).copied(), Some(1), "call {:?} ended once", id);
            }
        });
    }
}
