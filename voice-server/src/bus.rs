//! The in-process [`EventBus`]: events published on this node reach the
//! devices connected to this node. Each device has a bounded queue;
//! publishing never waits, and a device whose queue is full is cut off
//! ([`SubscriptionEnd::Lagged`]) so one slow reader can neither hold up
//! the others nor make the server's memory grow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use voice_core::bus::{Envelope, EventBus, Subscription, SubscriptionEnd};
use voice_core::error::Result;
use voice_core::wire::SharedEvent;
use voice_core::{SessionId, UserId};

struct Subscriber {
    id: u64,
    session: SessionId,
    queue: mpsc::Sender<SharedEvent>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Subscribers {
    by_user: Mutex<HashMap<UserId, Vec<Subscriber>>>,
    next_id: AtomicU64,
}

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Subscriber>>> {
        // The map holds plain data; a panic elsewhere leaves it usable.
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Delivers within one process.
#[derive(Clone, Default)]
pub struct LocalBus {
    subscribers: Arc<Subscribers>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many devices are subscribed now, for tests and metrics.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().values().map(Vec::len).sum()
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<()> {
        let mut by_user = self.subscribers.lock();
        for Envelope {
            user,
            devices: wanted,
            event,
        } in envelopes
        {
            let Some(devices) = by_user.get_mut(&user) else {
                continue;
            };
            devices.retain(|device| {
                if !wanted.includes(device.session) {
                    return true;
                }
                match device.queue.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        // Dropping the sender ends the stream after what is
                        // queued; the flag tells the device why.
                        device.lagged.store(true, Ordering::Release);
                        false
                    }
                    Err(TrySendError::Closed(_)) => false,
                }
            });
            if devices.is_empty() {
                by_user.remove(&user);
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        user: UserId,
        session: SessionId,
        capacity: usize,
    ) -> Result<Box<dyn Subscription>> {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.subscribers.next_id.fetch_add(1, Ordering::Relaxed);
        self.subscribers
            .lock()
            .entry(user)
            .or_default()
            .push(Subscriber {
                id,
                session,
                queue,
                lagged: lagged.clone(),
            });
        Ok(Box::new(LocalSubscription {
            receiver,
            lagged,
            id,
            user,
            subscribers: self.subscribers.clone(),
        }))
    }
}

struct LocalSubscription {
    receiver: mpsc::Receiver<SharedEvent>,
    lagged: Arc<AtomicBool>,
    id: u64,
    user: UserId,
    subscribers: Arc<Subscribers>,
}

#[async_trait]
impl Subscription for LocalSubscription {
    async fn next(&mut self) -> std::result::Result<SharedEvent, SubscriptionEnd> {
        match self.receiver.recv().await {
            Some(event) => Ok(event),
            None if self.lagged.load(Ordering::Acquire) => Err(SubscriptionEnd::Lagged),
            None => Err(SubscriptionEnd::Closed),
        }
    }
}

impl Drop for LocalSubscription {
    fn drop(&mut self) {
        let mut by_user = self.subscribers.lock();
        if let Some(devices) = by_user.get_mut(&self.user) {
            devices.retain(|device| device.id != self.id);
            if devices.is_empty() {
                by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voice_core::bus::Devices;
    use voice_core::wire::Event;

    fn event(n: u64) -> SharedEvent {
        SharedEvent::new(
            Some(n),
            std::sync::Arc::new(Event::FriendRemoved {
                user_id: UserId::new(),
            }),
        )
    }

    #[tokio::test]
    async fn every_device_of_a_user_gets_every_event_in_order() {
        let bus = LocalBus::new();
        let (alice, bob) = (UserId::new(), UserId::new());
        let phone_session = SessionId::new();
        let mut phone = bus.subscribe(alice, phone_session, 8).await.unwrap();
        let mut laptop = bus.subscribe(alice, SessionId::new(), 8).await.unwrap();
        let mut other = bus.subscribe(bob, SessionId::new(), 8).await.unwrap();
        bus.publish(vec![
            Envelope::to_user(alice, event(1)),
            Envelope::to_user(alice, event(2)),
            Envelope::to_user(bob, event(9)),
            Envelope {
                user: alice,
                devices: Devices::Only(phone_session),
                event: event(3),
            },
            Envelope {
                user: alice,
                devices: Devices::AllBut(phone_session),
                event: event(4),
            },
        ])
        .await
        .unwrap();
        for device in [&mut phone, &mut laptop] {
            assert_eq!(device.next().await.unwrap().seq, Some(1));
            assert_eq!(device.next().await.unwrap().seq, Some(2));
        }
        assert_eq!(phone.next().await.unwrap().seq, Some(3));
        assert_eq!(laptop.next().await.unwrap().seq, Some(4));
        assert_eq!(other.next().await.unwrap().seq, Some(9));
    }

    #[tokio::test]
    async fn a_full_queue_cuts_off_only_that_device_after_what_it_holds() {
        let bus = LocalBus::new();
        let user = UserId::new();
        let mut slow = bus.subscribe(user, SessionId::new(), 2).await.unwrap();
        let mut fast = bus.subscribe(user, SessionId::new(), 100).await.unwrap();
        for n in 1..=5 {
            bus.publish(vec![Envelope::to_user(user, event(n))])
                .await
                .unwrap();
            assert_eq!(fast.next().await.unwrap().seq, Some(n));
        }
        assert_eq!(slow.next().await.unwrap().seq, Some(1));
        assert_eq!(slow.next().await.unwrap().seq, Some(2));
        assert_eq!(slow.next().await.unwrap_err(), SubscriptionEnd::Lagged);
        assert_eq!(bus.subscriber_count(), 1);
        drop(fast);
        assert_eq!(bus.subscriber_count(), 0);
    }
}
