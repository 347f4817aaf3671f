//! Friends: requests (send, accept, decline, cancel), removal, blocks, and
//! the friends list with presence. Every change is told to both sides'
//! devices; a block is told to nobody but the blocker's own devices.

use axum::extract::State;
use axum::http::StatusCode;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::model::FriendStatus;
use voice_core::wire::{
    BlocksResponse, ErrorBody, Event, FriendRequestsResponse, FriendStatusResponse, FriendView,
    FriendsResponse, UserRef,
};
use voice_core::{Error, ErrorCode, UserId};

use crate::auth::AuthUser;
use crate::error::{ApiResult, Json, Path};
use crate::notify::notify;
use crate::state::AppState;
use crate::users::{profile_and_presence, profile_of};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_friends))
        .routes(routes!(remove_friend))
        .routes(routes!(list_requests, send_request))
        .routes(routes!(cancel_request))
        .routes(routes!(accept_request))
        .routes(routes!(decline_request))
        .routes(routes!(list_blocks, block))
        .routes(routes!(unblock))
}

/// Whether either user blocked the other.
pub async fn blocked_between(state: &AppState, a: UserId, b: UserId) -> ApiResult<bool> {
    Ok(
        state.store.friendship(a, b).await? == Some(FriendStatus::Blocked)
            || state.store.friendship(b, a).await? == Some(FriendStatus::Blocked),
    )
}

/// Whether the two are friends (which also means neither blocked the other).
pub async fn are_friends(state: &AppState, a: UserId, b: UserId) -> ApiResult<bool> {
    Ok(state.store.friendship(a, b).await? == Some(FriendStatus::Accepted))
}

async fn views(state: &AppState, user: UserId, wanted: FriendStatus) -> ApiResult<Vec<FriendView>> {
    let mut views = Vec::new();
    for friend in state.store.list_friends(user).await? {
        if friend.status != wanted {
            continue;
        }
        let (profile, presence) = profile_and_presence(state, friend.user_id).await?;
        views.push(FriendView {
            user: profile,
            status: friend.status,
            since: friend.since,
            presence,
        });
    }
    Ok(views)
}

#[utoipa::path(get, path = "/v1/friends", tag = "friends", security(("bearer" = [])), responses((status = 200, body = FriendsResponse), (status = 401, body = ErrorBody)))]
async fn list_friends(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<FriendsResponse>> {
    Ok(Json(FriendsResponse {
        friends: views(&state, user.user_id, FriendStatus::Accepted).await?,
    }))
}

#[utoipa::path(get, path = "/v1/friends/requests", tag = "friends", security(("bearer" = [])), responses((status = 200, body = FriendRequestsResponse), (status = 401, body = ErrorBody)))]
async fn list_requests(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<FriendRequestsResponse>> {
    Ok(Json(FriendRequestsResponse {
        incoming: views(&state, user.user_id, FriendStatus::RequestReceived).await?,
        outgoing: views(&state, user.user_id, FriendStatus::RequestSent).await?,
    }))
}

fn not_yourself(user: &AuthUser, other: UserId) -> ApiResult<()> {
    if user.user_id == other {
        return Err(Error::bad_request("that is you").into());
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/friends/requests", tag = "friends", security(("bearer" = [])), request_body = UserRef,
    description = "Asks someone to be friends; if they had asked already, you are friends at once.",
    responses((status = 201, body = FriendStatusResponse), (status = 200, description = "Nothing new", body = FriendStatusResponse),
        (status = 400, body = ErrorBody), (status = 403, description = "Blocked", body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn send_request(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<UserRef>,
) -> ApiResult<(StatusCode, Json<FriendStatusResponse>)> {
    let other = body.user_id;
    not_yourself(&user, other)?;
    let other_profile = profile_of(&state, other).await?;
    if blocked_between(&state, user.user_id, other).await? {
        return Err(Error::forbidden("you cannot send this user a friend request").into());
    }
    let before = state.store.friendship(user.user_id, other).await?;
    let status = state
        .store
        .request_friend(user.user_id, other, OffsetDateTime::now_utc())
        .await
        .map_err(|e| match e.code {
            ErrorCode::Conflict => Error::forbidden("you cannot send this user a friend request"),
            _ => e,
        })?;
    if before != Some(status) {
        let me = profile_of(&state, user.user_id).await?;
        let events = match status {
            FriendStatus::Accepted => vec![
                (other, Event::FriendAccepted { user: me }),
                (
                    user.user_id,
                    Event::FriendAccepted {
                        user: other_profile,
                    },
                ),
            ],
            _ => vec![(other, Event::FriendRequest { from: me })],
        };
        notify(&state, events).await?;
    }
    let code = if before != Some(status) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        code,
        Json(FriendStatusResponse {
            user_id: other,
            status,
        }),
    ))
}

#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/accept", tag = "friends", security(("bearer" = [])), params(("user_id" = UserId, Path, description = "The other user")), responses((status = 200, body = FriendStatusResponse), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn accept_request(
    State(state): State<AppState>,
    user: AuthUser,
    Path(requester): Path<UserId>,
) -> ApiResult<Json<FriendStatusResponse>> {
    not_yourself(&user, requester)?;
    state
        .store
        .accept_friend(user.user_id, requester, OffsetDateTime::now_utc())
        .await?;
    let me = profile_of(&state, user.user_id).await?;
    let them = profile_of(&state, requester).await?;
    notify(
        &state,
        vec![
            (requester, Event::FriendAccepted { user: me }),
            (user.user_id, Event::FriendAccepted { user: them }),
        ],
    )
    .await?;
    Ok(Json(FriendStatusResponse {
        user_id: requester,
        status: FriendStatus::Accepted,
    }))
}

/// Ends the relationship if the caller's view of it is `expected`; both
/// sides are told.
async fn end_relationship(
    state: &AppState,
    user: &AuthUser,
    other: UserId,
    expected: FriendStatus,
    missing: &str,
) -> ApiResult<StatusCode> {
    not_yourself(user, other)?;
    if state.store.friendship(user.user_id, other).await? != Some(expected) {
        return Err(Error::not_found(missing).into());
    }
    state.store.remove_friend(user.user_id, other).await?;
    notify(
        state,
        vec![
            (
                other,
                Event::FriendRemoved {
                    user_id: user.user_id,
                },
            ),
            (user.user_id, Event::FriendRemoved { user_id: other }),
        ],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/decline", tag = "friends", security(("bearer" = [])), params(("user_id" = UserId, Path, description = "The other user")), responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn decline_request(
    State(state): State<AppState>,
    user: AuthUser,
    Path(requester): Path<UserId>,
) -> ApiResult<StatusCode> {
    end_relationship(
        &state,
        &user,
        requester,
        FriendStatus::RequestReceived,
        "no request from this user",
    )
    .await
}

#[utoipa::path(delete, path = "/v1/friends/requests/{user_id}", tag = "friends", security(("bearer" = [])), params(("user_id" = UserId, Path, description = "The other user")), responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn cancel_request(
    State(state): State<AppState>,
    user: AuthUser,
    Path(other): Path<UserId>,
) -> ApiResult<StatusCode> {
    end_relationship(
        &state,
        &user,
        other,
        FriendStatus::RequestSent,
        "no request to this user",
    )
    .await
}

#[utoipa::path(delete, path = "/v1/friends/{user_id}", tag = "friends", security(("bearer" = [])), params(("user_id" = UserId, Path, description = "The other user")), responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn remove_friend(
    State(state): State<AppState>,
    user: AuthUser,
    Path(other): Path<UserId>,
) -> ApiResult<StatusCode> {
    end_relationship(&state, &user, other, FriendStatus::Accepted, "not a friend").await
}

#[utoipa::path(get, path = "/v1/blocks", tag = "friends", security(("bearer" = [])), responses((status = 200, body = BlocksResponse), (status = 401, body = ErrorBody)))]
async fn list_blocks(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<BlocksResponse>> {
    let blocked = state
        .store
        .list_friends(user.user_id)
        .await?
        .into_iter()
        .filter(|friend| friend.status == FriendStatus::Blocked)
        .map(|friend| friend.user_id)
        .collect();
    Ok(Json(BlocksResponse { blocked }))
}

#[utoipa::path(post, path = "/v1/blocks", tag = "friends", security(("bearer" = [])), request_body = UserRef,
    description = "Blocks a user: any friendship or request ends, and they can no longer request, message or call you.",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn block(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<UserRef>,
) -> ApiResult<StatusCode> {
    let other = body.user_id;
    not_yourself(&user, other)?;
    profile_of(&state, other).await?;
    let before = state.store.friendship(user.user_id, other).await?;
    state
        .store
        .block_user(user.user_id, other, OffsetDateTime::now_utc())
        .await?;
    if matches!(
        before,
        Some(FriendStatus::Accepted | FriendStatus::RequestSent | FriendStatus::RequestReceived)
    ) {
        // The other side sees the friendship or request end, not why.
        notify(
            &state,
            vec![
                (
                    other,
                    Event::FriendRemoved {
                        user_id: user.user_id,
                    },
                ),
                (user.user_id, Event::FriendRemoved { user_id: other }),
            ],
        )
        .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/blocks/{user_id}", tag = "friends", security(("bearer" = [])), params(("user_id" = UserId, Path, description = "The other user")), responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn unblock(
    State(state): State<AppState>,
    user: AuthUser,
    Path(other): Path<UserId>,
) -> ApiResult<StatusCode> {
    if state.store.unblock_user(user.user_id, other).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("this user is not blocked").into())
    }
}
