//! Who is connected now. A user is online while at least one of their
//! devices holds a WebSocket to this node; the first connection and the
//! last disconnection are the moments friends are told.

use std::collections::HashMap;
use std::sync::Mutex;

use voice_core::UserId;

use crate::auth::flows::lock;

#[derive(Default)]
pub struct PresenceTracker {
    connections: Mutex<HashMap<UserId, usize>>,
}

impl PresenceTracker {
    /// Counts a new connection; true if the user just came online.
    pub fn connect(&self, user: UserId) -> bool {
        let mut connections = lock(&self.connections);
        let count = connections.entry(user).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Counts a closed connection; true if the user just went offline.
    pub fn disconnect(&self, user: UserId) -> bool {
        let mut connections = lock(&self.connections);
        match connections.get_mut(&user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                connections.remove(&user);
                true
            }
            None => false,
        }
    }

    pub fn is_online(&self, user: UserId) -> bool {
        lock(&self.connections).contains_key(&user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_from_the_first_connection_to_the_last() {
        let presence = PresenceTracker::default();
        let user = UserId::new();
        assert!(presence.connect(user));
        assert!(!presence.connect(user));
        assert!(!presence.disconnect(user));
        assert!(presence.is_online(user));
        assert!(presence.disconnect(user));
        assert!(!presence.is_online(user));
        assert!(!presence.disconnect(user));
    }
}
