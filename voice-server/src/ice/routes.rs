//! `GET /v1/ice-servers` for every signed-in user, and the admin endpoints
//! that edit the STUN list and show how each server fares.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::Error;
use voice_core::wire::{
    ErrorBody, IceServersResponse, IceStatusResponse, StunListResponse, StunUrlRequest,
};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Json};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ice_servers))
        .routes(routes!(list_stun, add_stun, remove_stun))
        .routes(routes!(status))
}

/// A signed-in user whose email is among `ice.admins`.
pub struct Admin(pub AuthUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let email = state
            .store
            .get_user(user.user_id)
            .await?
            .and_then(|u| u.email);
        if !state.ice.is_admin(email.as_deref()) {
            return Err(Error::forbidden("only admins may do this").into());
        }
        Ok(Admin(user))
    }
}

#[utoipa::path(get, path = "/v1/ice-servers", tag = "ice", security(("bearer" = [])),
    description = "ICE servers for WebRTC: STUN servers verified recently (fastest first), then TURN with credentials valid for `ttl` seconds. `warning` is set when no STUN server is healthy.",
    responses((status = 200, body = IceServersResponse), (status = 401, body = ErrorBody)))]
async fn ice_servers(State(state): State<AppState>, user: AuthUser) -> Json<IceServersResponse> {
    Json(state.ice.ice_servers(user.user_id))
}

#[utoipa::path(get, path = "/v1/admin/ice/stun", tag = "ice", security(("bearer" = [])),
    responses((status = 200, body = StunListResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_stun(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<StunListResponse>> {
    Ok(Json(StunListResponse {
        servers: state.ice.stun_list().await?,
    }))
}

#[utoipa::path(post, path = "/v1/admin/ice/stun", tag = "ice", security(("bearer" = [])), request_body = StunUrlRequest,
    description = "Adds a `stun:host[:port]` server; the edit persists.",
    responses((status = 200, body = StunListResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn add_stun(
    State(state): State<AppState>,
    _admin: Admin,
    Json(request): Json<StunUrlRequest>,
) -> ApiResult<Json<StunListResponse>> {
    state.ice.edit(&request.url, true).await?;
    Ok(Json(StunListResponse {
        servers: state.ice.stun_list().await?,
    }))
}

#[utoipa::path(delete, path = "/v1/admin/ice/stun", tag = "ice", security(("bearer" = [])), request_body = StunUrlRequest,
    description = "Removes a server (configured ones too); the edit persists.",
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn remove_stun(
    State(state): State<AppState>,
    _admin: Admin,
    Json(request): Json<StunUrlRequest>,
) -> ApiResult<StatusCode> {
    state.ice.edit(&request.url, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/admin/ice/status", tag = "ice", security(("bearer" = [])),
    description = "Each STUN server's state, last check, round-trip time and last error, and the built-in responder's counters.",
    responses((status = 200, body = IceStatusResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn status(State(state): State<AppState>, _admin: Admin) -> Json<IceStatusResponse> {
    Json(state.ice.status())
}
