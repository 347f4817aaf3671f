//! The sign-in endpoints. Handlers are thin: each checks its input, asks
//! the provider, the store or the token issuer, and shapes the answer.
//!
//! The flow for a client (web or native):
//! 1. `GET /v1/auth/login?redirect_uri&code_challenge` sends the browser to
//!    the provider with this server's own state, nonce and PKCE.
//! 2. `GET /v1/auth/callback` verifies the ID token, applies the allowlist,
//!    registers the user on first sight and sends the browser back to the
//!    client's `redirect_uri` with a one-time login code.
//! 3. `POST /v1/auth/token` redeems the code with the client's PKCE
//!    verifier for an access and a refresh token.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use voice_core::auth::TokenIssuer;
use voice_core::model::{Identity, RefreshToken, Session, SpendOutcome};
use voice_core::wire::{
    AuthMethods, DevLoginRequest, ErrorBody, Me, RefreshRequest, TokenRequest, TokenResponse,
};
use voice_core::{Error, SessionId, UserId};

use super::extract::AuthUser;
use super::flows::{LoginGrant, PendingSignIn};
use super::tokens::{
    LOGIN_CODE_PREFIX, REFRESH_PREFIX, hash_token, is_valid_challenge, pkce_challenge, random_token,
};
use crate::error::{ApiResult, Json, Query};
use crate::notify::to_the_end;
use crate::rate_limit::limit_by_ip;
use crate::state::AppState;

/// The issuer recorded for users created by dev sign-in.
pub const DEV_ISSUER: &str = "voice-dev";
/// Longest client `state` echoed back with a login code.
const MAX_CLIENT_STATE: usize = 512;

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    let no_store = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    let no_referrer = SetResponseHeaderLayer::overriding(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let callback = OpenApiRouter::new()
        .routes(routes!(callback))
        .layer(no_referrer);
    let limited = OpenApiRouter::new()
        .routes(routes!(login))
        .merge(callback)
        .routes(routes!(token))
        .routes(routes!(refresh))
        .routes(routes!(dev_login))
        .route_layer(middleware::from_fn_with_state(state, limit_by_ip));
    OpenApiRouter::new()
        .merge(limited)
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(methods))
        .layer(no_store)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LoginQuery {
    redirect_uri: String,
    code_challenge: String,
    code_challenge_method: Option<String>,
    state: Option<String>,
}

#[utoipa::path(get, path = "/v1/auth/login", tag = "auth", params(LoginQuery),
    description = "Starts a sign-in: sends the browser to the identity provider.",
    responses((status = 303, description = "Redirect to the provider"),
        (status = 400, body = ErrorBody), (status = 403, description = "redirect_uri not allowed", body = ErrorBody),
        (status = 404, description = "No provider configured", body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> ApiResult<Response> {
    let provider = state
        .provider
        .as_ref()
        .ok_or_else(|| Error::not_found("this server has no sign-in provider configured"))?;
    if query
        .code_challenge_method
        .as_deref()
        .is_some_and(|m| m != "S256")
    {
        return Err(Error::bad_request("code_challenge_method must be S256").into());
    }
    if !is_valid_challenge(&query.code_challenge) {
        return Err(Error::bad_request("code_challenge must be a base64url S256 challenge").into());
    }
    if query
        .state
        .as_ref()
        .is_some_and(|s| s.len() > MAX_CLIENT_STATE)
    {
        return Err(Error::bad_request("state is too long").into());
    }
    let client_redirect = state.redirects.check(&query.redirect_uri)?;
    let start = provider.begin_login().await?;
    state.flows.insert_pending(
        PendingSignIn {
            provider: start.pending,
            client_redirect,
            client_challenge: query.code_challenge,
            client_state: query.state,
        },
        Instant::now(),
    )?;
    Ok(Redirect::to(&start.authorize_url).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[utoipa::path(get, path = "/v1/auth/callback", tag = "auth", params(CallbackQuery),
    description = "Where the provider returns the browser. Verifies the ID token, applies the allowlist and redirects to the client's redirect_uri with a one-time login code.",
    responses((status = 303, description = "Redirect to the client with `code` and `state`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not allowlisted", body = ErrorBody)))]
async fn callback(
    State(state): State<AppState>,
    Query(query): Query<CallbackQuery>,
) -> ApiResult<Response> {
    let provider = state
        .provider
        .as_ref()
        .ok_or_else(|| Error::not_found("this server has no sign-in provider configured"))?;
    let login_state = query
        .state
        .ok_or_else(|| Error::bad_request("the provider sent no state"))?;
    let pending = state
        .flows
        .take_pending(&login_state, Instant::now())
        .ok_or_else(|| Error::bad_request("unknown, used or expired sign-in; start again"))?;
    if let Some(error) = query.error {
        return Err(
            Error::unauthorized(format!("the provider did not sign you in: {error}")).into(),
        );
    }
    let code = query
        .code
        .ok_or_else(|| Error::bad_request("the provider sent no code"))?;

    let mut identity = provider.finish_login(pending.provider, &code).await?;
    state.users.check(&identity)?;
    if !identity.email_verified {
        // Only reachable with open registration: keep the account, not an
        // address nobody proved.
        identity.email = None;
    }
    let (user, created) = state
        .store
        .upsert_user(&identity, OffsetDateTime::now_utc())
        .await?;
    if created {
        tracing::info!(user = %user.id, "registered a new user");
    }

    let login_code = random_token(LOGIN_CODE_PREFIX);
    state.flows.insert_code(
        hash_token(&login_code),
        LoginGrant {
            user_id: user.id,
            client_challenge: pending.client_challenge,
        },
        Instant::now(),
    )?;
    let mut target = pending.client_redirect;
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("code", &login_code);
        if let Some(client_state) = &pending.client_state {
            pairs.append_pair("state", client_state);
        }
    }
    Ok(Redirect::to(target.as_str()).into_response())
}

/// RFC 7636 section 4.1: 43 to 128 unreserved characters.
fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = TokenRequest,
    description = "Redeems a login code with the PKCE verifier.",
    responses((status = 200, body = TokenResponse), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn token(
    State(state): State<AppState>,
    Json(request): Json<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let invalid = || Error::bad_request("invalid, used or expired login code");
    if !request.code.starts_with(LOGIN_CODE_PREFIX) {
        return Err(invalid().into());
    }
    // Taking the code burns it, so a wrong verifier cannot be retried.
    let grant = state
        .flows
        .take_code(&hash_token(&request.code), Instant::now())
        .ok_or_else(invalid)?;
    let expected = grant.client_challenge.as_bytes();
    if !is_valid_verifier(&request.code_verifier)
        || !bool::from(
            pkce_challenge(&request.code_verifier)
                .as_bytes()
                .ct_eq(expected),
        )
    {
        return Err(Error::bad_request("the PKCE verifier does not match the challenge").into());
    }
    Ok(Json(start_session(&state, grant.user_id).await?))
}

/// A new session (device) with its first token pair.
async fn start_session(state: &AppState, user_id: UserId) -> ApiResult<TokenResponse> {
    let now = OffsetDateTime::now_utc();
    let session = Session {
        id: SessionId::new(),
        user_id,
        created_at: now,
        revoked_at: None,
    };
    let refresh_token = random_token(REFRESH_PREFIX);
    state
        .store
        .create_session(
            &session,
            &new_refresh_record(state, &refresh_token, session.id, user_id, now),
        )
        .await?;
    let (access_token, expires_in) = state.tokens.issue_access(user_id, session.id, now)?;
    Ok(token_response(access_token, expires_in, refresh_token))
}

fn new_refresh_record(
    state: &AppState,
    token: &str,
    session_id: SessionId,
    user_id: UserId,
    now: OffsetDateTime,
) -> RefreshToken {
    RefreshToken {
        hash: hash_token(token),
        session_id,
        user_id,
        expires_at: now + time::Duration::seconds(state.config.auth.refresh_token_ttl_secs as i64),
        spent_at: None,
        successor_hash: None,
    }
}

fn token_response(access_token: String, expires_in: u64, refresh_token: String) -> TokenResponse {
    TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in,
        refresh_token,
    }
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    description = "Rotates a refresh token. Reuse of a spent token revokes the session.",
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    Json(request): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let invalid = || Error::unauthorized("invalid or expired refresh token");
    let presented = request.refresh_token;
    if !presented.starts_with(REFRESH_PREFIX) {
        return Err(invalid().into());
    }
    let now = OffsetDateTime::now_utc();
    let successor = state.tokens.successor_of(&presented);
    // The store fills in the session and user of the spent token.
    let nil_session = SessionId::from(Uuid::nil());
    let nil_user = UserId::from(Uuid::nil());
    let record = new_refresh_record(&state, &successor, nil_session, nil_user, now);
    let (user_id, session_id) = match state
        .store
        .spend_refresh_token(hash_token(&presented), &record, now)
        .await?
    {
        SpendOutcome::Rotated {
            user_id,
            session_id,
        } => (user_id, session_id),
        SpendOutcome::Invalid => return Err(invalid().into()),
        SpendOutcome::AlreadySpent(spent) => {
            if is_lost_response_retry(&state, &spent, &record, now).await? {
                (spent.user_id, spent.session_id)
            } else {
                end_session(
                    &state,
                    spent.user_id,
                    spent.session_id,
                    "session revoked: refresh token reused",
                    now,
                )
                .await?;
                tracing::warn!(session = %spent.session_id, "refresh token reused; session revoked");
                return Err(
                    Error::unauthorized("refresh token reused; the session was revoked").into(),
                );
            }
        }
    };
    let (access_token, expires_in) = state.tokens.issue_access(user_id, session_id, now)?;
    Ok(Json(token_response(access_token, expires_in, successor)))
}

/// A spent token presented again soon after its rotation, whose successor
/// has not been used yet, is a client that lost the response: it gets the
/// same successor. Anything else is reuse.
async fn is_lost_response_retry(
    state: &AppState,
    spent: &RefreshToken,
    successor: &RefreshToken,
    now: OffsetDateTime,
) -> ApiResult<bool> {
    let grace = time::Duration::seconds(state.config.auth.refresh_retry_grace_secs as i64);
    let recent = spent.spent_at.is_some_and(|at| now - at <= grace);
    if !recent || spent.successor_hash != Some(successor.hash) {
        return Ok(false);
    }
    let successor_unused = state
        .store
        .get_refresh_token(successor.hash)
        .await?
        .is_some_and(|token| token.spent_at.is_none() && token.expires_at > now);
    let session_live = state
        .store
        .get_session(spent.session_id)
        .await?
        .is_some_and(|session| session.revoked_at.is_none());
    Ok(successor_unused && session_live)
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "The session ended"), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    end_session(
        &state,
        user.user_id,
        user.session_id,
        "signed out",
        OffsetDateTime::now_utc(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes `session` and closes its device's WebSocket. Both happen even
/// if the client hangs up in between: a revoked session's socket must not
/// stay open.
async fn end_session(
    state: &AppState,
    user: UserId,
    session: SessionId,
    reason: &'static str,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let state = state.clone();
    to_the_end(async move {
        state.store.revoke_session(session, now).await?;
        state
            .notifier
            .publish_to_devices(
                user,
                voice_core::bus::Devices::Only(session),
                voice_core::wire::Event::SessionEnded {
                    reason: reason.into(),
                },
            )
            .await;
        Ok(())
    })
    .await?
}

#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Me>> {
    let found = state
        .store
        .get_user(user.user_id)
        .await?
        .ok_or_else(|| Error::not_found("user not found"))?;
    Ok(Json(Me {
        id: found.id,
        email: found.email,
        name: found.name,
        picture: found.picture,
    }))
}

fn is_valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[utoipa::path(get, path = "/v1/auth/methods", tag = "auth",
    description = "How users can sign in here, so a client shows the right buttons.",
    responses((status = 200, body = AuthMethods)))]
async fn methods(State(state): State<AppState>) -> Json<AuthMethods> {
    Json(AuthMethods {
        provider: state.provider.is_some(),
        dev_login: state.dev_login,
    })
}

#[utoipa::path(post, path = "/v1/auth/dev-login", tag = "auth", request_body = DevLoginRequest,
    description = "Dev sign-in: only on a loopback server without a provider.",
    responses((status = 200, body = TokenResponse), (status = 400, body = ErrorBody), (status = 404, description = "Dev sign-in is off", body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn dev_login(
    State(state): State<AppState>,
    Json(request): Json<DevLoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    if !state.dev_login {
        return Err(Error::not_found("dev sign-in is off on this server").into());
    }
    if !is_valid_username(&request.username) {
        return Err(Error::bad_request(
            "username must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-'",
        )
        .into());
    }
    tracing::warn!(username = %request.username, "DEV SIGN-IN used: no identity was verified");
    let identity = Identity {
        name: Some(request.username.clone()),
        ..Identity::new(DEV_ISSUER, request.username)
    };
    let (user, _) = state
        .store
        .upsert_user(&identity, OffsetDateTime::now_utc())
        .await?;
    Ok(Json(start_session(&state, user.id).await?))
}
