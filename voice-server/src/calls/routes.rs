//! The call endpoints. Each turns a request into a command for the call
//! driver and its answer into a status: 403 for someone who is not part
//! of the call, 409 when it was already answered (or the caller is busy),
//! 410 when it is over.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::call::{CallError, CallPhase, Device};
use voice_core::call_queue::{CallView, Requested};
use voice_core::wire::{
    ActiveCall, ActiveCallsResponse, CallHistoryEntry, CallHistoryResponse, CallStarted,
    CallStatus, ErrorBody, StartCallRequest,
};
use voice_core::{CallId, Error};

use super::wall_clock;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::friends::are_friends;
use crate::state::AppState;
use crate::users::profile_of;

/// Call history page size when the client does not say.
const DEFAULT_HISTORY_PAGE: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(accept))
        .routes(routes!(reject))
        .routes(routes!(cancel))
        .routes(routes!(hangup))
        .routes(routes!(connected))
        .routes(routes!(active))
        .routes(routes!(history))
}

fn device(user: &AuthUser) -> Device {
    Device {
        user: user.user_id,
        session: user.session_id,
    }
}

/// Turns a refusal of the call machine into an HTTP error. A call the
/// driver no longer knows is 410 if history says it ended, 404 otherwise.
pub async fn call_error(state: &AppState, id: CallId, error: CallError) -> ApiError {
    let message = error.to_string();
    match error {
        CallError::NotFound => match state.store.get_call(id).await {
            Ok(Some(record)) if record.outcome.is_some() => Error::gone("the call is over").into(),
            Ok(_) => Error::not_found("no such call").into(),
            Err(error) => error.into(),
        },
        CallError::NotParticipant => Error::forbidden(message).into(),
        CallError::AlreadyAnswered
        | CallError::AlreadyInCall
        | CallError::WrongPhase(_)
        | CallError::IdInUse => Error::conflict(message).into(),
        CallError::Over => Error::gone(message).into(),
        CallError::SignalBufferFull => Error::rate_limited(message).into(),
    }
}

fn status(phase: CallPhase) -> CallStatus {
    match phase {
        CallPhase::Ringing => CallStatus::Ringing,
        CallPhase::Accepted => CallStatus::Accepted,
        CallPhase::Connected | CallPhase::Ended(_) => CallStatus::Connected,
    }
}

fn active_call(view: &CallView) -> ActiveCall {
    ActiveCall {
        call_id: view.id,
        caller: view.caller.user,
        caller_device: view.caller.session,
        callee: view.callee,
        callee_device: view.callee_device.map(|d| d.session),
        status: status(view.phase),
        expires_at: wall_clock(view.ring_deadline),
    }
}

#[utoipa::path(post, path = "/v1/calls", tag = "calls", security(("bearer" = [])), request_body = StartCallRequest,
    description = "Calls a friend: every device of the callee rings (call.incoming). If the callee was calling the caller at that moment, that call is answered instead (glare) and returned with status accepted.",
    responses((status = 201, body = CallStarted), (status = 200, description = "Glare: joined the callee's call", body = CallStarted),
        (status = 403, description = "Not a friend, or blocked", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The callee is busy, or the caller is already in a call", body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<StartCallRequest>,
) -> ApiResult<(StatusCode, Json<CallStarted>)> {
    if request.callee == user.user_id {
        return Err(Error::bad_request("you cannot call yourself").into());
    }
    profile_of(&state, request.callee).await?;
    if !are_friends(&state, user.user_id, request.callee).await? {
        return Err(Error::forbidden("you can only call your friends").into());
    }
    let id = CallId::new();
    let requested = state.calls.request(id, device(&user), request.callee).await;
    let requested = match requested {
        Ok(requested) => requested,
        Err(error) => return Err(call_error(&state, id, error).await),
    };
    let ice_servers = state.ice.ice_servers(user.user_id).ice_servers;
    match requested {
        Requested::Ringing { call, deadline } => Ok((
            StatusCode::CREATED,
            Json(CallStarted {
                call_id: call,
                status: CallStatus::Ringing,
                expires_at: wall_clock(deadline),
                ice_servers,
            }),
        )),
        Requested::JoinedGlare { call } => Ok((
            StatusCode::OK,
            Json(CallStarted {
                call_id: call,
                status: CallStatus::Accepted,
                expires_at: OffsetDateTime::now_utc(),
                ice_servers,
            }),
        )),
        Requested::Busy { .. } => Err(Error::conflict("the callee is in another call").into()),
    }
}

/// Runs one call command and answers 204, or the error.
async fn command(
    state: &AppState,
    id: CallId,
    result: Result<(), CallError>,
) -> ApiResult<StatusCode> {
    match result {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(error) => Err(call_error(state, id, error).await),
    }
}

#[utoipa::path(post, path = "/v1/calls/{id}/accept", tag = "calls", security(("bearer" = [])), params(("id" = CallId, Path)),
    description = "Answers from this device: it becomes the call's peer; the callee's other devices get call.answered_elsewhere.",
    responses((status = 200, body = ActiveCall), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Another device answered first", body = ErrorBody), (status = 410, description = "The call is over", body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn accept(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<CallId>,
) -> ApiResult<Json<ActiveCall>> {
    if let Err(error) = state.calls.accept(id, device(&user)).await {
        return Err(call_error(&state, id, error).await);
    }
    let view = state
        .calls
        .call_of(user.user_id)
        .await
        .filter(|view| view.id == id)
        .ok_or_else(|| Error::gone("the call is over"))?;
    Ok(Json(active_call(&view)))
}

#[utoipa::path(post, path = "/v1/calls/{id}/reject", tag = "calls", security(("bearer" = [])), params(("id" = CallId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn reject(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<CallId>,
) -> ApiResult<StatusCode> {
    let result = state.calls.reject(id, user.user_id).await;
    command(&state, id, result).await
}

#[utoipa::path(post, path = "/v1/calls/{id}/cancel", tag = "calls", security(("bearer" = [])), params(("id" = CallId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<CallId>,
) -> ApiResult<StatusCode> {
    let result = state.calls.cancel(id, user.user_id).await;
    command(&state, id, result).await
}

#[utoipa::path(post, path = "/v1/calls/{id}/hangup", tag = "calls", security(("bearer" = [])), params(("id" = CallId, Path)),
    description = "Ends the call from either side (while ringing: cancels or declines).",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn hangup(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<CallId>,
) -> ApiResult<StatusCode> {
    let result = state.calls.hangup(id, device(&user)).await;
    command(&state, id, result).await
}

#[utoipa::path(post, path = "/v1/calls/{id}/connected", tag = "calls", security(("bearer" = [])), params(("id" = CallId, Path)),
    description = "A participant's device reports that media flows.",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn connected(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<CallId>,
) -> ApiResult<StatusCode> {
    let result = state.calls.connected(id, device(&user)).await;
    command(&state, id, result).await
}

#[utoipa::path(get, path = "/v1/calls/active", tag = "calls", security(("bearer" = [])),
    description = "The call the user is in (ringing or answered), if any.",
    responses((status = 200, body = ActiveCallsResponse), (status = 401, body = ErrorBody)))]
async fn active(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<ActiveCallsResponse>> {
    let calls = state
        .calls
        .call_of(user.user_id)
        .await
        .iter()
        .map(active_call)
        .collect();
    Ok(Json(ActiveCallsResponse { calls }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only calls started before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    before: Option<OffsetDateTime>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/calls/history", tag = "calls", security(("bearer" = [])), params(HistoryQuery),
    description = "The user's calls, newest first, with outcome (answered, missed, rejected, cancelled, busy, failed) and duration.",
    responses((status = 200, body = CallHistoryResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<HistoryQuery>,
) -> ApiResult<Json<CallHistoryResponse>> {
    let max = state.config.limits.max_history_page;
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY_PAGE);
    if !(1..=max).contains(&limit) {
        return Err(Error::bad_request(format!("limit must be 1 to {max}")).into());
    }
    let calls = state
        .store
        .list_calls(user.user_id, query.before, limit)
        .await?
        .into_iter()
        .map(|record| CallHistoryEntry {
            duration_secs: record.duration_secs(),
            record,
        })
        .collect();
    Ok(Json(CallHistoryResponse { calls }))
}
