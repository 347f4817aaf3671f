//! The [`EventBus`] trait: how events reach the devices connected to a
//! server. The server has an in-process implementation; a Redis or NATS
//! one can replace it to run several nodes on one database.
//!
//! The bus carries events only to devices connected now. Durability comes
//! from the store's event log: a device that was away (or fell behind and
//! was cut off) replays from there with `since`.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::UserId;
use crate::wire::ServerEvent;

/// Why a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// The subscriber did not keep up and events were dropped for it. It
    /// must reconnect and replay from the store.
    Lagged,
    /// The bus shut down.
    Closed,
}

/// Carries events to every connected device of a user.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Sends each event to every device of its user that is subscribed
    /// now, on any node. Never waits for a slow subscriber: one that cannot
    /// take an event more is ended with [`SubscriptionEnd::Lagged`].
    async fn publish(&self, events: Vec<(UserId, ServerEvent)>) -> Result<()>;

    /// Subscribes one device of `user`. Every event published after this
    /// returns is delivered to it, in order, until it ends. At most
    /// `capacity` events wait for it.
    async fn subscribe(&self, user: UserId, capacity: usize) -> Result<Box<dyn Subscription>>;
}

/// One device's stream of events.
#[async_trait]
pub trait Subscription: Send {
    /// The next event, or why there will be none.
    async fn next(&mut self) -> std::result::Result<ServerEvent, SubscriptionEnd>;
}
