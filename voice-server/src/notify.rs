//! Getting events to users: stored events go into each user's log first
//! (so a device that is away replays them later) and then onto the bus for
//! the devices connected now; ephemeral ones (typing, presence, call
//! signaling) only onto the bus.

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

    /// Pushes already stored events to connected devices.
    pub async fn publish(&self, deliveries: &[Delivery]) {
        let mut encoder = Encoder::default();
        let envelopes = deliveries
            .iter()
            .map(|delivery| {
                let event = encoder.share(Some(delivery.seq), &delivery.event);
                Envelope::to_user(delivery.user_id, event)
            })
            .collect();
        self.send(envelopes).await;
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
        if envelopes.is_empty() {
            return;
        }
        // Stored events are safe in the store; a device that misses them
        // now replays them on its next connection.
        if let Err(error) = self.bus.publish(envelopes).await {
            tracing::warn!(%error, "publishing events failed");
        }
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
    state.notifier().notify(events).await
}

/// [`Notifier::publish`] with the state's bus.
pub async fn publish(state: &AppState, deliveries: &[Delivery]) {
    state.notifier().publish(deliveries).await
}

/// [`Notifier::publish_ephemeral`] with the state's bus.
pub async fn publish_ephemeral(state: &AppState, events: Vec<(UserId, Event)>) {
    state.notifier().publish_ephemeral(events).await
}
