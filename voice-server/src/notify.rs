//! Getting events to users: stored events go into each user's log first
//! (so a device that is away replays them later) and then onto the bus for
//! the devices connected now; ephemeral ones (typing, presence, call
//! signaling) only onto the bus.
//!
//! Stored events go onto the bus in commit order when the store can feed
//! its commits to the server
//! ([`voice_core::store::EventStore::feed_commits`]; SQLite can): one
//! task publishes each committed transaction's deliveries as the store
//! hands them over, so every device gets its events in `seq` order. With a
//! store that cannot, whoever wrote publishes what the write returned, and
//! concurrent writers' events reach the bus in whatever order their tasks
//! run (each connection puts them back in order, see
//! [`crate::event_order`]).

use std::sync::Arc;

use time::OffsetDateTime;
use voice_core::UserId;
use voice_core::bus::{Devices, Envelope, EventBus};
use voice_core::error::Result;
use voice_core::store::Store;
use voice_core::wire::{Delivery, Event, SharedEvent};

use crate::state::AppState;

/// The store and the bus: all it takes to reach users.
#[derive(Clone)]
pub struct Notifier {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Whether the store's commit feed publishes stored events (see
    /// [`publish_commits`]), so that writers need not.
    pub store_publishes: bool,
}

impl Notifier {
    /// Stores `events` in their users' logs, then pushes them to connected
    /// devices.
    pub async fn notify(&self, events: Vec<(UserId, Event)>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let notifier = self.clone();
        to_the_end(async move {
            let deliveries = notifier
                .store
                .append_events(&events, OffsetDateTime::now_utc())
                .await?;
            notifier.publish(&deliveries).await;
            Ok(())
        })
        .await?
    }

    /// Pushes already stored events to connected devices, unless the
    /// store's commit feed does.
    pub async fn publish(&self, deliveries: &[Delivery]) {
        if !self.store_publishes {
            publish_stored(self.bus.as_ref(), deliveries).await;
        }
    }

    /// Pushes events that are not stored to every connected device of
    /// their users.
    pub async fn publish_ephemeral(&self, events: Vec<(UserId, Event)>) {
        let mut encoder = Encoder::default();
        let envelopes = events
            .into_iter()
            .map(|(user, event)| Envelope::to_user(user, encoder.share(None, &Arc::new(event))))
            .collect();
        self.send(envelopes).await;
    }

    /// Pushes an event that is not stored to some devices of one user.
    pub async fn publish_to_devices(&self, user: UserId, devices: Devices, event: Event) {
        let envelope = Envelope {
            user,
            devices,
            event: SharedEvent::new(None, Arc::new(event)),
        };
        self.send(vec![envelope]).await;
    }

    async fn send(&self, envelopes: Vec<Envelope>) {
        send(self.bus.as_ref(), envelopes).await;
    }
}

/// Has `store` hand every committed transaction's deliveries to one task
/// that publishes them on `bus` in that order. Returns whether the store
/// took the feed; if not, writers publish their own deliveries.
///
/// The task holds the bus but not the store, and ends when the store drops
/// the feed (when it closes).
pub fn publish_commits(store: &dyn Store, bus: Arc<dyn EventBus>) -> bool {
    let (feed, mut commits) = tokio::sync::mpsc::unbounded_channel::<Vec<Delivery>>();
    // Unbounded, because the store's thread must never wait on it; it holds
    // what is committed and not yet published, which the publisher (a few
    // queue pushes per delivery) takes far faster than commits add to it.
    let taken = store.feed_commits(Box::new(move |deliveries| {
        let _ = feed.send(deliveries);
    }));
    if taken {
        tokio::spawn(async move {
            while let Some(deliveries) = commits.recv().await {
                publish_stored(bus.as_ref(), &deliveries).await;
            }
        });
    }
    taken
}

/// Puts stored events on the bus, each distinct event encoded once.
async fn publish_stored(bus: &dyn EventBus, deliveries: &[Delivery]) {
    let mut encoder = Encoder::default();
    let envelopes = deliveries
        .iter()
        .map(|delivery| {
            let event = encoder.share(Some(delivery.seq), &delivery.event);
            Envelope::to_user(delivery.user_id, event)
        })
        .collect();
    send(bus, envelopes).await;
}

async fn send(bus: &dyn EventBus, envelopes: Vec<Envelope>) {
    if envelopes.is_empty() {
        return;
    }
    // Stored events are safe in the store; a device that misses them now
    // replays them on its next connection.
    if let Err(error) = bus.publish(envelopes).await {
        tracing::warn!(%error, "publishing events failed");
    }
}

/// Encodes each distinct event once for the bus. The copies of one event
/// for several users come in a row (a message's deliveries, a presence
/// change for each friend), so comparing with the previous one finds them.
#[derive(Default)]
struct Encoder {
    previous: Option<SharedEvent>,
}

impl Encoder {
    fn share(&mut self, seq: Option<u64>, event: &Arc<Event>) -> SharedEvent {
        let shared = match &self.previous {
            Some(previous) if Arc::ptr_eq(&previous.event, event) || previous.event == *event => {
                previous.with_seq(seq)
            }
            _ => SharedEvent::new(seq, event.clone()),
        };
        self.previous = Some(shared.clone());
        shared
    }
}

/// Runs `work` in a task of its own and waits for it. A request's future
/// is dropped when its client hangs up, but a write it queued commits
/// anyway: a write and the publishing of its events go in `work`, so that
/// whoever committed events also publishes them, whether or not anybody
/// still waits for the answer.
pub async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work).await.map_err(|error| {
        tracing::error!(%error, "a write and publish task failed");
        voice_core::Error::internal()
    })
}

/// [`Notifier::notify`] with the state's store and bus.
pub async fn notify(state: &AppState, events: Vec<(UserId, Event)>) -> Result<()> {
    state.notifier.notify(events).await
}

/// [`Notifier::publish`] with the state's bus.
pub async fn publish(state: &AppState, deliveries: &[Delivery]) {
    state.notifier.publish(deliveries).await
}

/// [`Notifier::publish_ephemeral`] with the state's bus.
pub async fn publish_ephemeral(state: &AppState, events: Vec<(UserId, Event)>) {
    state.notifier.publish_ephemeral(events).await
}
