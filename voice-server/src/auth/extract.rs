//! The `AuthUser` extractor: a handler that takes one runs only for a
//! request with a valid access token of a live session.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use voice_core::auth::TokenIssuer;
use voice_core::{Error, SessionId, UserId};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The signed-in device a request acts for.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser {
    pub user_id: UserId,
    pub session_id: SessionId,
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl AuthUser {
    /// Checks an access token and that its session is still live.
    pub async fn from_access_token(state: &AppState, token: &str) -> ApiResult<Self> {
        let grant = state.tokens.verify_access(token)?;
        let user = AuthUser {
            user_id: grant.user_id,
            session_id: grant.session_id,
        };
        user.ensure_live(state).await?;
        Ok(user)
    }

    /// Fails unless the session is still live. A signed token outlives a
    /// logout by up to its lifetime unless the session is checked, and a
    /// logout should take effect at once.
    pub async fn ensure_live(&self, state: &AppState) -> ApiResult<()> {
        match state.store.get_session(self.session_id).await? {
            Some(session) if session.revoked_at.is_none() && session.user_id == self.user_id => {
                Ok(())
            }
            _ => Err(Error::unauthorized("the session has ended; sign in again").into()),
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| Error::unauthorized("missing bearer token"))?;
        Self::from_access_token(state, token).await
    }
}
