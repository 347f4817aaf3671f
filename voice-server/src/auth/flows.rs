//! Short-lived sign-in state kept in memory: sign-ins waiting at the
//! provider (keyed by `state`) and login codes waiting to be redeemed
//! (keyed by their hash). Both are single use, expire, and are bounded in
//! number so a flood of abandoned logins cannot grow memory without end.
//!
//! Time is passed in, so tests need no sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use url::Url;
use voice_core::auth::PendingLogin;
use voice_core::{Error, UserId};

use crate::one_shot::OneShotMap;

/// A sign-in sent to the provider and not yet back.
#[derive(Debug)]
pub struct PendingSignIn {
    pub provider: PendingLogin,
    /// Where the client wants its login code.
    pub client_redirect: Url,
    /// The client's PKCE challenge; the code is redeemed with its verifier.
    pub client_challenge: String,
    /// Opaque client state, echoed back with the code.
    pub client_state: Option<String>,
}

/// A login code waiting to be redeemed.
#[derive(Debug, Clone)]
pub struct LoginGrant {
    pub user_id: UserId,
    pub client_challenge: String,
}

/// Both kinds of in-flight sign-in state.
pub struct AuthFlows {
    pending: Mutex<OneShotMap<String, PendingSignIn>>,
    codes: Mutex<OneShotMap<[u8; 32], LoginGrant>>,
}

impl AuthFlows {
    pub fn new(capacity: usize, pending_ttl: Duration, code_ttl: Duration) -> Self {
        Self {
            pending: Mutex::new(OneShotMap::new(capacity, pending_ttl)),
            codes: Mutex::new(OneShotMap::new(capacity, code_ttl)),
        }
    }

    pub fn insert_pending(&self, sign_in: PendingSignIn, now: Instant) -> Result<(), Error> {
        let state = sign_in.provider.state.clone();
        lock(&self.pending).insert(state, sign_in, now)
    }

    pub fn take_pending(&self, state: &str, now: Instant) -> Option<PendingSignIn> {
        lock(&self.pending).take(&state.to_string(), now)
    }

    pub fn insert_code(
        &self,
        code_hash: [u8; 32],
        grant: LoginGrant,
        now: Instant,
    ) -> Result<(), Error> {
        lock(&self.codes).insert(code_hash, grant, now)
    }

    pub fn take_code(&self, code_hash: &[u8; 32], now: Instant) -> Option<LoginGrant> {
        lock(&self.codes).take(code_hash, now)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still valid.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> LoginGrant {
        LoginGrant {
            user_id: UserId::new(),
            client_challenge: "c".into(),
        }
    }

    #[test]
    fn codes_are_single_use_and_expire() {
        let flows = AuthFlows::new(10, Duration::from_secs(600), Duration::from_secs(60));
        let start = Instant::now();
        flows.insert_code([1; 32], grant(), start).unwrap();
        assert!(
            flows
                .take_code(&[1; 32], start + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            flows
                .take_code(&[1; 32], start + Duration::from_secs(59))
                .is_none()
        );

        flows.insert_code([2; 32], grant(), start).unwrap();
        assert!(
            flows
                .take_code(&[2; 32], start + Duration::from_secs(60))
                .is_none()
        );
    }

    #[test]
    fn capacity_is_bounded_but_expired_entries_make_room() {
        let flows = AuthFlows::new(2, Duration::from_secs(600), Duration::from_secs(60));
        let start = Instant::now();
        flows.insert_code([1; 32], grant(), start).unwrap();
        flows.insert_code([2; 32], grant(), start).unwrap();
        assert!(flows.insert_code([3; 32], grant(), start).is_err());
        let later = start + Duration::from_secs(61);
        flows.insert_code([3; 32], grant(), later).unwrap();
        assert!(flows.take_code(&[3; 32], later).is_some());
    }
}
