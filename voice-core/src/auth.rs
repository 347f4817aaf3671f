//! Traits for signing in: an [`IdentityProvider`] proves who someone is
//! (Google or any OpenID Connect issuer), and a [`TokenIssuer`] turns a
//! session into short-lived access tokens and checks them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::Result;
use crate::ids::{SessionId, UserId};
use crate::model::Identity;

/// What a provider needs to remember between sending someone away to sign
/// in and their coming back. Plain strings, so any store can keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The `state` sent to the provider; it comes back on the callback.
    pub state: String,
    /// The `nonce` that must come back inside the ID token.
    pub nonce: String,
    /// The PKCE verifier for the provider's code exchange.
    pub pkce_verifier: String,
}

/// The start of a sign-in: where to send the browser, and what to keep.
#[derive(Clone, Debug)]
pub struct LoginStart {
    pub authorize_url: String,
    pub pending: PendingLogin,
}

/// An external identity provider the server signs users in with.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// The issuer identifier, as found in its ID tokens.
    fn issuer(&self) -> &str;

    /// Prepares a sign-in: fresh state, nonce and PKCE pair.
    async fn begin_login(&self) -> Result<LoginStart>;

    /// Exchanges the authorization `code` and verifies the ID token
    /// against `pending`. Fails with `Unauthorized` for anything that does
    /// not verify (signature, issuer, audience, expiry, nonce).
    async fn finish_login(&self, pending: PendingLogin, code: &str) -> Result<Identity>;
}

/// The claims of a verified access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessGrant {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub expires_at: OffsetDateTime,
}

/// Issues and verifies the server's own access tokens.
pub trait TokenIssuer: Send + Sync {
    /// A signed access token for the session, and its lifetime in seconds.
    fn issue_access(
        &self,
        user_id: UserId,
        session_id: SessionId,
        now: OffsetDateTime,
    ) -> Result<(String, u64)>;

    /// Verifies signature, algorithm, type, issuer, audience and expiry.
    fn verify_access(&self, token: &str) -> Result<AccessGrant>;
}
