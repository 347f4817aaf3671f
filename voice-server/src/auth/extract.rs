//! The `AuthUser` extractor: a handler that takes one runs only for a
//! request with a valid access token of a live session.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use voice_core::auth::TokenIssuer;
use voice_core::{Error, SessionId, UserId};

use crate::error::ApiError;
use crate::state::AppState;

/// The signed-in device a request acts for.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser {
    pub user_id: UserId,
    pub session_id: SessionId,
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token =
            bearer_token(parts).ok_or_else(|| Error::unauthorized("missing bearer token"))?;
        let grant = state.tokens.verify_access(token)?;
        // A signed token outlives a logout by up to its lifetime unless the
        // session is checked; a logout should take effect at once.
        match state.store.get_session(grant.session_id).await? {
            Some(session) if session.revoked_at.is_none() && session.user_id == grant.user_id => {
                Ok(AuthUser {
                    user_id: grant.user_id,
                    session_id: grant.session_id,
                })
            }
            _ => Err(Error::unauthorized("the session has ended; sign in again").into()),
        }
    }
}
