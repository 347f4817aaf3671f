//! Messages and conversations: sending (idempotent with `client_id`),
//! deleting (tombstones), the conversation list with unread counts,
//! history pages and read markers.
//!
//! Who may do what: direct messages only between friends; group messages
//! only by current members; history only by participants (former group
//! members up to when they left); deletion by the sender, or in a group by
//! its owner and admins.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::model::{
    Conversation, ConversationAccess, Message, MessageInsert, NewMessage, SendOutcome,
};
use voice_core::wire::{
    ConversationsResponse, ErrorBody, MarkReadRequest, MessagesPage, Recipient, SendMessageRequest,
};
use voice_core::{Error, ErrorCode, MessageId, UserId};

use crate::auth::AuthUser;
use crate::error::{ApiResult, Json, Path, Query};
use crate::notify::{publish, to_the_end};
use crate::state::AppState;

/// History page size when the client does not say.
const DEFAULT_PAGE: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(remove))
        .routes(routes!(list_conversations))
        .routes(routes!(history))
        .routes(routes!(mark_read))
}

/// Refuses a user over their message rate.
pub fn check_message_rate(state: &AppState, user: UserId) -> ApiResult<()> {
    if state.message_limiter.check_key(&user).is_err() {
        return Err(Error::rate_limited(format!(
            "at most {} messages per second",
            state.config.limits.messages_per_second
        ))
        .into());
    }
    Ok(())
}

/// The users whose devices hear about a conversation: both sides of a
/// direct conversation, the current members of a group.
pub async fn participants(state: &AppState, conversation: Conversation) -> ApiResult<Vec<UserId>> {
    Ok(match conversation {
        Conversation::Direct { low, high } => vec![low, high],
        Conversation::Group(group) => state.store.group_member_ids(group).await?,
    })
}

#[utoipa::path(post, path = "/v1/messages", tag = "messages", security(("bearer" = [])), request_body = SendMessageRequest,
    description = "Sends a direct (to a friend) or group (as a member) message. With `client_id` a retry returns the same message (200) instead of a new one.",
    responses((status = 201, body = Message), (status = 200, description = "An idempotent retry", body = Message),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<SendMessageRequest>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let queued = queue_message(&state, user.user_id, request);
    let inserted = to_the_end(async move {
        let inserted = queued.await?;
        publish(&state, &inserted.deliveries).await;
        ApiResult::Ok(inserted)
    })
    .await??;
    let status = if inserted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(inserted.message)))
}

/// Checks a message from `sender` and queues it for storage: the one path
/// behind `POST /v1/messages` and the WebSocket's `message.send`. The
/// future resolves once the message is committed (or was already, for a
/// retry with the same `client_id`); the caller then publishes its
/// deliveries. The message is queued by this call, so messages queued one
/// after another are stored in that order however their futures are
/// awaited. Whether the sender may send there is checked in the store, in
/// the transaction that stores the message.
pub fn queue_message(
    state: &AppState,
    sender: UserId,
    request: SendMessageRequest,
) -> impl Future<Output = ApiResult<MessageInsert>> + Send + 'static {
    let queued = new_message(state, sender, request)
        .map(|message| (message.conversation, state.store.send_message(message)));
    async move {
        let (conversation, outcome) = queued?;
        match outcome.await? {
            SendOutcome::Stored(inserted) => Ok(inserted),
            SendOutcome::NotAllowed => Err(Error::forbidden(match conversation {
                Conversation::Direct { .. } => "you can only message your friends",
                Conversation::Group(_) => "you are not a member of this group",
            })
            .into()),
        }
    }
}

/// The message `request` asks `sender` to send, if it is within their
/// rate and the limits.
fn new_message(
    state: &AppState,
    sender: UserId,
    request: SendMessageRequest,
) -> ApiResult<NewMessage> {
    check_message_rate(state, sender)?;
    let limits = &state.config.limits;
    if request.body.trim().is_empty() {
        return Err(Error::bad_request("the message is empty").into());
    }
    if request.body.len() > limits.max_message_bytes {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!("a message holds at most {} bytes", limits.max_message_bytes),
        )
        .into());
    }
    if let Some(client_id) = &request.client_id
        && (client_id.is_empty() || client_id.len() > limits.max_client_id_bytes)
    {
        return Err(Error::bad_request(format!(
            "client_id must be 1 to {} bytes",
            limits.max_client_id_bytes
        ))
        .into());
    }
    let conversation = match request.to {
        Recipient::User(to) if to == sender => {
            return Err(Error::bad_request("you cannot message yourself").into());
        }
        Recipient::User(to) => Conversation::direct(sender, to),
        // A group one is not in answers like one that does not exist.
        Recipient::Group(group) => Conversation::Group(group),
    };
    Ok(NewMessage {
        id: MessageId::new(),
        conversation,
        sender,
        body: request.body,
        client_id: request.client_id,
        created_at: OffsetDateTime::now_utc(),
    })
}

#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages", security(("bearer" = [])), params(("id" = MessageId, Path)),
    description = "Deletes a message: its sender may, and in a group its owner and admins. The body is erased; a tombstone stays.",
    responses((status = 200, description = "The tombstone", body = Message), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<MessageId>,
) -> ApiResult<Json<Message>> {
    let not_found = || Error::not_found("no such message");
    let message = state.store.get_message(id).await?.ok_or_else(not_found)?;
    let access = state
        .store
        .conversation_access(user.user_id, message.conversation)
        .await?;
    if !readable(access, message.seq) {
        return Err(not_found().into());
    }
    let allowed = message.sender == user.user_id
        || match message.conversation {
            Conversation::Group(group) => state
                .store
                .group_member(group, user.user_id)
                .await?
                .is_some_and(|member| member.role.can_manage()),
            Conversation::Direct { .. } => false,
        };
    if !allowed {
        return Err(Error::forbidden("you can only delete your own messages").into());
    }
    let recipients = participants(&state, message.conversation).await?;
    let deletion = to_the_end(async move {
        let deletion = state
            .store
            .delete_message(id, OffsetDateTime::now_utc(), &recipients)
            .await?;
        if let Some(deletion) = &deletion {
            publish(&state, &deletion.deliveries).await;
        }
        ApiResult::Ok(deletion)
    })
    .await??
    .ok_or_else(not_found)?;
    Ok(Json(deletion.message))
}

fn readable(access: Option<ConversationAccess>, seq: u64) -> bool {
    access.is_some_and(|access| access.readable_until.is_none_or(|until| seq <= until))
}

#[utoipa::path(get, path = "/v1/conversations", tag = "messages", security(("bearer" = [])), responses((status = 200, body = ConversationsResponse), (status = 401, body = ErrorBody)))]
async fn list_conversations(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<ConversationsResponse>> {
    Ok(Json(ConversationsResponse {
        conversations: state.store.list_conversations(user.user_id).await?,
    }))
}

/// The caller's access to a conversation named in a path, or 403.
async fn access_to(
    state: &AppState,
    user: UserId,
    id: &str,
) -> ApiResult<(Conversation, ConversationAccess)> {
    let conversation: Conversation = id.parse().map_err(Error::bad_request)?;
    let access = state
        .store
        .conversation_access(user, conversation)
        .await?
        .ok_or_else(|| Error::forbidden("you are not part of this conversation"))?;
    Ok((conversation, access))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])), params(("id" = String, Path, description = "A conversation id: `d:<user>:<user>` or `g:<group>`"), HistoryQuery),
    description = "A page of history, newest first. Pass `next_before` as `before` for the next page.",
    responses((status = 200, body = MessagesPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> ApiResult<Json<MessagesPage>> {
    let max = state.config.limits.max_history_page;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=max).contains(&limit) {
        return Err(Error::bad_request(format!("limit must be 1 to {max}")).into());
    }
    let (conversation, access) = access_to(&state, user.user_id, &id).await?;
    let messages = state
        .store
        .list_messages(conversation, query.before, access.readable_until, limit)
        .await?;
    let next_before = match messages.last() {
        Some(oldest) if messages.len() == limit as usize && oldest.seq > 1 => Some(oldest.seq),
        _ => None,
    };
    Ok(Json(MessagesPage {
        messages,
        next_before,
    }))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/read", tag = "messages", security(("bearer" = [])), params(("id" = String, Path, description = "A conversation id: `d:<user>:<user>` or `g:<group>`")), request_body = MarkReadRequest,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(request): Json<MarkReadRequest>,
) -> ApiResult<StatusCode> {
    let (conversation, access) = access_to(&state, user.user_id, &id).await?;
    let message = state
        .store
        .get_message(request.message_id)
        .await?
        .filter(|message| {
            message.conversation == conversation && readable(Some(access), message.seq)
        })
        .ok_or_else(|| Error::not_found("no such message in this conversation"))?;
    state
        .store
        .mark_read(user.user_id, conversation, message.seq)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
