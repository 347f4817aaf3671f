//! TURN REST credentials, as coturn's `use-auth-secret` checks them:
//! `username = "<expiry unix time>:<user id>"`,
//! `credential = base64(HMAC-SHA1(secret, username))`. Anyone holding them
//! can relay until the expiry, and they cannot be revoked, so they are
//! short-lived.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use time::OffsetDateTime;
use voice_core::UserId;

/// Credentials for `user` that expire at `expires_at`.
pub fn credentials(secret: &str, user: UserId, expires_at: OffsetDateTime) -> (String, String) {
    let username = format!("{}:{user}", expires_at.unix_timestamp());
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_turn_rest_scheme() {
        let user: UserId = "0195f1c2-7a6b-7d3e-9a41-2f5c8e1b7a90".parse().unwrap();
        let expiry = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let (username, credential) = credentials("north", user, expiry);
        assert_eq!(username, "1700000000:0195f1c2-7a6b-7d3e-9a41-2f5c8e1b7a90");
        // Computed independently:
        // printf %s "$username" | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(credential, "Pw8uirNxlf5Bwgj0A7r6PPn6ufs=");
        let (_, again) = credentials("north", user, expiry);
        assert_eq!(credential, again);
        let (_, other) = credentials("south", user, expiry);
        assert_ne!(credential, other);
    }
}
