//! Getting events to users: stored events go into each user's log first
//! (so a device that is away replays them later) and then onto the bus for
//! the devices connected now; ephemeral ones (typing, presence) only onto
//! the bus.

use time::OffsetDateTime;
use voice_core::UserId;
use voice_core::error::Result;
use voice_core::wire::{Delivery, Event, ServerEvent};

use crate::state::AppState;

/// Stores `events` in their users' logs, then pushes them to connected
/// devices.
pub async fn notify(state: &AppState, events: Vec<(UserId, Event)>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let deliveries = state
        .store
        .append_events(&events, OffsetDateTime::now_utc())
        .await?;
    publish(state, &deliveries).await;
    Ok(())
}

/// Pushes already stored events to connected devices.
pub async fn publish(state: &AppState, deliveries: &[Delivery]) {
    let events = deliveries
        .iter()
        .map(|delivery| (delivery.user_id, delivery.to_server_event()))
        .collect();
    send(state, events).await;
}

/// Pushes events that are not stored to connected devices.
pub async fn publish_ephemeral(state: &AppState, events: Vec<(UserId, Event)>) {
    let events = events
        .into_iter()
        .map(|(user, event)| (user, ServerEvent::new(None, event)))
        .collect();
    send(state, events).await;
}

async fn send(state: &AppState, events: Vec<(UserId, ServerEvent)>) {
    if events.is_empty() {
        return;
    }
    // The events are safe in the store; a device that misses them now
    // replays them on its next connection.
    if let Err(error) = state.bus.publish(events).await {
        tracing::warn!(%error, "publishing events failed");
    }
}
