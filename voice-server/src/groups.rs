//! Group conversations: create (with the creator's friends), rename, add
//! and remove members (owner and admins), leave, and look at members.
//! Members hear of every change; a removed member hears of their removal
//! and nothing after it.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::model::{Group, GroupMember, GroupRole};
use voice_core::wire::{
    AddMemberRequest, CreateGroupRequest, ErrorBody, Event, GroupView, GroupsResponse,
    RenameGroupRequest,
};
use voice_core::{Error, GroupId, UserId};

use crate::auth::AuthUser;
use crate::error::{ApiResult, Json, Path};
use crate::friends::are_friends;
use crate::notify::notify;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, rename))
        .routes(routes!(members, add_member))
        .routes(routes!(remove_member))
        .routes(routes!(leave))
}

fn valid_name(state: &AppState, name: &str) -> ApiResult<String> {
    let name = name.trim();
    let max = state.config.limits.max_group_name_chars;
    if name.is_empty() || name.chars().count() > max {
        return Err(Error::bad_request(format!("a group name is 1 to {max} characters")).into());
    }
    Ok(name.to_string())
}

/// The group and the caller's membership; 404 for non-members, so that
/// groups one is not in stay invisible.
async fn membership(
    state: &AppState,
    group: GroupId,
    user: UserId,
) -> ApiResult<(Group, GroupMember)> {
    let not_found = || Error::not_found("no such group");
    let found = state.store.get_group(group).await?.ok_or_else(not_found)?;
    let member = state
        .store
        .group_member(group, user)
        .await?
        .ok_or_else(not_found)?;
    Ok((found, member))
}

async fn member_ids(state: &AppState, group: GroupId) -> ApiResult<Vec<UserId>> {
    Ok(state
        .store
        .list_group_members(group)
        .await?
        .into_iter()
        .map(|member| member.user_id)
        .collect())
}

fn to_all(users: &[UserId], event: Event) -> Vec<(UserId, Event)> {
    users.iter().map(|user| (*user, event.clone())).collect()
}

#[utoipa::path(post, path = "/v1/groups", tag = "groups", security(("bearer" = [])), request_body = CreateGroupRequest,
    description = "Creates a group with the caller as owner; members must be the caller's friends.",
    responses((status = 201, body = GroupView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    let name = valid_name(&state, &request.name)?;
    let members: BTreeSet<UserId> = request
        .members
        .into_iter()
        .filter(|member| *member != user.user_id)
        .collect();
    let max = state.config.limits.max_group_members;
    if members.len() + 1 > max {
        return Err(Error::bad_request(format!("a group has at most {max} members")).into());
    }
    for member in &members {
        if !are_friends(&state, user.user_id, *member).await? {
            return Err(Error::forbidden("group members must be your friends").into());
        }
    }
    let group = Group {
        id: GroupId::new(),
        name,
        owner: user.user_id,
        created_at: OffsetDateTime::now_utc(),
    };
    let members: Vec<UserId> = members.into_iter().collect();
    state.store.create_group(&group, &members).await?;
    let view = GroupView {
        group: state
            .store
            .get_group(group.id)
            .await?
            .ok_or_else(Error::internal)?,
        members: state.store.list_group_members(group.id).await?,
    };
    let everyone = member_ids(&state, group.id).await?;
    notify(
        &state,
        to_all(
            &everyone,
            Event::GroupUpdated {
                group: view.group.clone(),
            },
        ),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/groups", tag = "groups", security(("bearer" = [])), responses((status = 200, body = GroupsResponse), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<GroupsResponse>> {
    Ok(Json(GroupsResponse {
        groups: state.store.list_user_groups(user.user_id).await?,
    }))
}

#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups", security(("bearer" = [])), params(("id" = GroupId, Path)), responses((status = 200, body = GroupView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<GroupId>,
) -> ApiResult<Json<GroupView>> {
    let (group, _) = membership(&state, id, user.user_id).await?;
    Ok(Json(GroupView {
        group,
        members: state.store.list_group_members(id).await?,
    }))
}

#[utoipa::path(get, path = "/v1/groups/{id}/members", tag = "groups", security(("bearer" = [])), params(("id" = GroupId, Path)), responses((status = 200, body = [GroupMember]), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn members(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<GroupId>,
) -> ApiResult<Json<Vec<GroupMember>>> {
    membership(&state, id, user.user_id).await?;
    Ok(Json(state.store.list_group_members(id).await?))
}

#[utoipa::path(patch, path = "/v1/groups/{id}", tag = "groups", security(("bearer" = [])), params(("id" = GroupId, Path)), request_body = RenameGroupRequest, responses((status = 200, body = Group), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn rename(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<GroupId>,
    Json(request): Json<RenameGroupRequest>,
) -> ApiResult<Json<Group>> {
    let (_, me) = membership(&state, id, user.user_id).await?;
    if !me.role.can_manage() {
        return Err(Error::forbidden("only the owner and admins rename a group").into());
    }
    let name = valid_name(&state, &request.name)?;
    state.store.rename_group(id, &name).await?;
    let group = state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| Error::not_found("no such group"))?;
    let everyone = member_ids(&state, id).await?;
    notify(
        &state,
        to_all(
            &everyone,
            Event::GroupUpdated {
                group: group.clone(),
            },
        ),
    )
    .await?;
    Ok(Json(group))
}

#[utoipa::path(post, path = "/v1/groups/{id}/members", tag = "groups", security(("bearer" = [])), params(("id" = GroupId, Path)), request_body = AddMemberRequest, responses((status = 201, body = GroupMember), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<GroupId>,
    Json(request): Json<AddMemberRequest>,
) -> ApiResult<(StatusCode, Json<GroupMember>)> {
    let (group, me) = membership(&state, id, user.user_id).await?;
    let allowed = match request.role {
        GroupRole::Owner => false,
        GroupRole::Admin => me.role == GroupRole::Owner,
        GroupRole::Member => me.role.can_manage(),
    };
    if !allowed {
        return Err(Error::forbidden("you cannot add members with this role").into());
    }
    if !are_friends(&state, user.user_id, request.user_id).await? {
        return Err(Error::forbidden("you can only add your friends").into());
    }
    let max = state.config.limits.max_group_members;
    if state.store.list_group_members(id).await?.len() >= max {
        return Err(Error::conflict(format!("the group is full ({max} members)")).into());
    }
    let added = state
        .store
        .add_group_member(id, request.user_id, request.role, OffsetDateTime::now_utc())
        .await?;
    if !added {
        return Err(Error::conflict("already a member").into());
    }
    let everyone = member_ids(&state, id).await?;
    let mut events = to_all(
        &everyone,
        Event::GroupMemberAdded {
            group_id: id,
            user_id: request.user_id,
            role: request.role,
        },
    );
    events.push((request.user_id, Event::GroupUpdated { group }));
    notify(&state, events).await?;
    let member = state
        .store
        .group_member(id, request.user_id)
        .await?
        .ok_or_else(Error::internal)?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// Removes `target` and tells the remaining members and the target.
async fn drop_member(state: &AppState, group: GroupId, target: UserId) -> ApiResult<StatusCode> {
    let mut told = member_ids(state, group).await?;
    if !state.store.remove_group_member(group, target).await? {
        return Err(Error::not_found("not a member").into());
    }
    if !told.contains(&target) {
        told.push(target);
    }
    notify(
        state,
        to_all(
            &told,
            Event::GroupMemberRemoved {
                group_id: group,
                user_id: target,
            },
        ),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/groups/{id}/members/{user_id}", tag = "groups", security(("bearer" = [])), params(("id" = GroupId, Path), ("user_id" = UserId, Path)), responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, target)): Path<(GroupId, UserId)>,
) -> ApiResult<StatusCode> {
    let (_, me) = membership(&state, id, user.user_id).await?;
    if target == user.user_id {
        return Err(Error::bad_request("use /leave to leave a group").into());
    }
    let them = state
        .store
        .group_member(id, target)
        .await?
        .ok_or_else(|| Error::not_found("not a member"))?;
    let allowed = match me.role {
        GroupRole::Owner => true,
        GroupRole::Admin => them.role == GroupRole::Member,
        GroupRole::Member => false,
    };
    if !allowed {
        return Err(Error::forbidden("you cannot remove this member").into());
    }
    drop_member(&state, id, target).await
}

#[utoipa::path(post, path = "/v1/groups/{id}/leave", tag = "groups", security(("bearer" = [])), params(("id" = GroupId, Path)), responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "The owner cannot leave", body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn leave(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<GroupId>,
) -> ApiResult<StatusCode> {
    let (_, me) = membership(&state, id, user.user_id).await?;
    if me.role == GroupRole::Owner {
        return Err(Error::conflict("the owner cannot leave their group").into());
    }
    drop_member(&state, id, user.user_id).await
}
