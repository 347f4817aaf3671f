//! A bounded map whose entries expire and can be taken once: the shape of
//! every short-lived credential the server hands out and later redeems
//! (sign-ins in progress, login codes, WebSocket tickets). Time is passed
//! in, so tests need no sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use voice_core::Error;

struct Expiring<T> {
    value: T,
    expires_at: Instant,
}

/// A bounded map whose entries expire and are taken at most once.
pub struct OneShotMap<K, V> {
    entries: HashMap<K, Expiring<V>>,
    capacity: usize,
    ttl: Duration,
}

impl<K: std::hash::Hash + Eq, V> OneShotMap<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            ttl,
        }
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) -> Result<(), Error> {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, entry| entry.expires_at > now);
        }
        if self.entries.len() >= self.capacity {
            return Err(Error::rate_limited(
                "too many pending requests of this kind; try again shortly",
            ));
        }
        self.entries.insert(
            key,
            Expiring {
                value,
                expires_at: now + self.ttl,
            },
        );
        Ok(())
    }

    /// Removes the entry; returns it only if it has not expired.
    pub fn take(&mut self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .remove(key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.value)
    }
}
