//! Finding people: `GET /v1/users?q=`, and the profile and presence
//! lookups other modules share.

use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::wire::{ErrorBody, Presence, UserProfile, UserSearchResponse};
use voice_core::{Error, UserId};

use crate::auth::AuthUser;
use crate::error::{ApiResult, Json, Query};
use crate::state::AppState;

/// Shortest query a search accepts: one letter would list everyone.
const MIN_QUERY_CHARS: usize = 2;
const MAX_QUERY_CHARS: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    q: String,
}

#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])), params(SearchQuery),
    description = "Users whose name or email starts with `q` (2 to 100 characters), at most `limits.max_search_results`.",
    responses((status = 200, body = UserSearchResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<SearchQuery>,
) -> ApiResult<Json<UserSearchResponse>> {
    let q = query.q.trim();
    let chars = q.chars().count();
    if !(MIN_QUERY_CHARS..=MAX_QUERY_CHARS).contains(&chars) {
        return Err(Error::bad_request(format!(
            "q must be {MIN_QUERY_CHARS} to {MAX_QUERY_CHARS} characters"
        ))
        .into());
    }
    let found = state
        .store
        .search_users(q, state.config.limits.max_search_results + 1)
        .await?;
    let users = found
        .iter()
        .filter(|found| found.id != user.user_id)
        .take(state.config.limits.max_search_results as usize)
        .map(UserProfile::from)
        .collect();
    Ok(Json(UserSearchResponse { users }))
}

/// The profile of an existing user; 404 otherwise.
pub async fn profile_of(state: &AppState, user_id: UserId) -> ApiResult<UserProfile> {
    let user = state
        .store
        .get_user(user_id)
        .await?
        .ok_or_else(|| Error::not_found("no such user"))?;
    Ok(UserProfile::from(&user))
}

/// Profile and presence together, for friend lists.
pub async fn profile_and_presence(
    state: &AppState,
    user_id: UserId,
) -> ApiResult<(UserProfile, Presence)> {
    let user = state
        .store
        .get_user(user_id)
        .await?
        .ok_or_else(|| Error::not_found("no such user"))?;
    let presence = Presence {
        online: state.presence.is_online(user_id),
        last_seen_at: user.last_seen_at,
    };
    Ok((UserProfile::from(&user), presence))
}
