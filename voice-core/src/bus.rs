//! The [`EventBus`] trait: how events reach the devices connected to a
//! server. The server has an in-process implementation; a Redis or NATS
//! one can replace it to run several nodes on one database.
//!
//! The bus carries events only to devices connected now. Durability comes
//! from the store's event log: a device that was away (or fell behind and
//! was cut off) replays from there with `since`.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{SessionId, UserId};
use crate::wire::SharedEvent;

/// Which of a user's devices an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Devices {
    All,
    Only(SessionId),
    AllBut(SessionId),
}

impl Devices {
    pub fn includes(self, session: SessionId) -> bool {
        match self {
            Devices::All => true,
            Devices::Only(only) => only == session,
            Devices::AllBut(excluded) => excluded != session,
        }
    }
}

/// One event on its way to some devices of one user.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub user: UserId,
    pub devices: Devices,
    /// Encoded once for all its copies: a device's queue holds pointers.
    pub event: SharedEvent,
}

impl Envelope {
    /// For every device of `user`.
    pub fn to_user(user: UserId, event: SharedEvent) -> Self {
        Self {
            user,
            devices: Devices::All,
            event,
        }
    }
}

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
    /// Sends each event to the devices of its user it names that are
    /// subscribed now, on any node. Never waits for a slow subscriber: one
    /// that cannot take an event more is ended with
    /// [`SubscriptionEnd::Lagged`].
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<()>;

    /// Subscribes one device (`session`) of `user`. Every event published
    /// for it after this returns is delivered, in order, until it ends. At
    /// most `capacity` events wait for it.
    async fn subscribe(
        &self,
        user: UserId,
        session: SessionId,
        capacity: usize,
    ) -> Result<Box<dyn Subscription>>;
}

/// One device's stream of events.
#[async_trait]
pub trait Subscription: Send {
    /// The next event, or why there will be none.
    async fn next(&mut self) -> std::result::Result<SharedEvent, SubscriptionEnd>;
}
