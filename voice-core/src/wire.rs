//! The wire protocol: JSON bodies of the REST API and the events sent over
//! the WebSocket, shared by server and clients so both sides agree by
//! construction. Events carry the protocol version `v`; a client that sees
//! a newer major version than it knows should ask its user to upgrade.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use time::OffsetDateTime;

use crate::error::Error;
use crate::ids::{CallId, GroupId, MessageId, SessionId, UserId};
use crate::model::{
    CallOutcome, CallRecord, Conversation, ConversationSummary, FriendStatus, Group, GroupMember,
    GroupRole, Message, User,
};

/// The version of the event protocol this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: Error,
}

/// OAuth 2.0 token response (RFC 6749 section 5.1 field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    pub refresh_token: String,
}

/// `POST /v1/auth/token`: redeem a one-time login code with the PKCE
/// verifier whose S256 challenge was given at `/v1/auth/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    pub code: String,
    pub code_verifier: String,
}

/// `POST /v1/auth/refresh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `GET /v1/auth/methods`: how users can sign in on this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthMethods {
    /// Through the OpenID Connect provider (`GET /v1/auth/login`).
    pub provider: bool,
    /// Dev sign-in (`POST /v1/auth/dev-login`): loopback servers without
    /// a provider only.
    pub dev_login: bool,
}

/// `POST /v1/auth/dev-login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevLoginRequest {
    pub username: String,
}

/// A user as other users see them. `GET /v1/me` answers with one too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserProfile {
    pub id: UserId,
    pub email: Option<String>,
    pub name: Option<String>,
    pub picture: Option<String>,
}

/// `GET /v1/me`.
pub type Me = UserProfile;

impl From<&User> for UserProfile {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            name: user.name.clone(),
            picture: user.picture.clone(),
        }
    }
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}

/// `GET /v1/users?q=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserSearchResponse {
    pub users: Vec<UserProfile>,
}

/// Body naming one user: friend requests, blocks, group members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserRef {
    pub user_id: UserId,
}

/// Whether someone is connected now, and when they last were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Presence {
    pub online: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
}

/// A relationship as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendView {
    pub user: UserProfile,
    pub status: FriendStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub presence: Presence,
}

/// `GET /v1/friends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendsResponse {
    pub friends: Vec<FriendView>,
}

/// `GET /v1/friends/requests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendRequestsResponse {
    pub incoming: Vec<FriendView>,
    pub outgoing: Vec<FriendView>,
}

/// The answer to a friend request: the caller's status afterwards
/// (`accepted` when the other had already asked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendStatusResponse {
    pub user_id: UserId,
    pub status: FriendStatus,
}

/// `GET /v1/blocks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlocksResponse {
    pub blocked: Vec<UserId>,
}

/// Where a message goes: `{"user": id}` or `{"group": id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    User(UserId),
    Group(GroupId),
}

/// `POST /v1/messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendMessageRequest {
    pub to: Recipient,
    pub body: String,
    /// Makes the send idempotent: a retry with the same value returns the
    /// same message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// `GET /v1/conversations/{id}/messages`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagesPage {
    pub messages: Vec<Message>,
    /// Pass as `before` for the next (older) page; absent at the start.
    pub next_before: Option<u64>,
}

/// `GET /v1/conversations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationsResponse {
    pub conversations: Vec<ConversationSummary>,
}

/// `POST /v1/conversations/{id}/read`: everything up to and including
/// this message is read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MarkReadRequest {
    pub message_id: MessageId,
}

/// `POST /v1/groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateGroupRequest {
    pub name: String,
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// `PATCH /v1/groups/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenameGroupRequest {
    pub name: String,
}

/// `POST /v1/groups/{id}/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddMemberRequest {
    pub user_id: UserId,
    /// `member` (default) or `admin`.
    #[serde(default = "default_role")]
    pub role: GroupRole,
}

fn default_role() -> GroupRole {
    GroupRole::Member
}

/// A group with its current members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupView {
    pub group: Group,
    pub members: Vec<GroupMember>,
}

/// `GET /v1/groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupsResponse {
    pub groups: Vec<Group>,
}

/// `POST /v1/calls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartCallRequest {
    pub callee: UserId,
}

/// A STUN or TURN server for WebRTC's `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `GET /v1/ice-servers`: what a client gives WebRTC as `iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServersResponse {
    /// STUN servers verified recently, fastest first, then TURN.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the list (and its TURN credentials) stays good.
    pub ttl: u64,
    /// Set when no STUN server is healthy now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Body naming one `stun:` URL, for the admin endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StunUrlRequest {
    pub url: String,
}

/// `GET /v1/admin/ice/stun`: the STUN servers the server checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StunListResponse {
    pub servers: Vec<String>,
}

/// How one STUN server fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StunServerStatus {
    pub url: String,
    /// `unknown` (not checked yet), `healthy` or `unhealthy`.
    pub state: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_check: Option<OffsetDateTime>,
    /// Round-trip time of the last successful check, in milliseconds.
    pub rtt_ms: Option<f64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

/// The built-in STUN responder's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StunResponderStatus {
    pub address: String,
    pub url: String,
    pub answered: u64,
    pub malformed: u64,
    pub rate_limited: u64,
}

/// `GET /v1/admin/ice/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceStatusResponse {
    pub servers: Vec<StunServerStatus>,
    pub responder: Option<StunResponderStatus>,
}

/// Where a call stands, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Ringing,
    Accepted,
    Connected,
}

/// The answer to `POST /v1/calls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallStarted {
    pub call_id: CallId,
    /// `ringing`, or `accepted` when the callee was calling the caller at
    /// the same moment (glare: the two requests became this one call).
    pub status: CallStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub ice_servers: Vec<IceServer>,
}

/// A call in progress, as `GET /v1/calls/active` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveCall {
    pub call_id: CallId,
    pub caller: UserId,
    pub caller_device: SessionId,
    pub callee: UserId,
    /// The callee's device that answered, once one did.
    pub callee_device: Option<SessionId>,
    pub status: CallStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `GET /v1/calls/active`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveCallsResponse {
    pub calls: Vec<ActiveCall>,
}

/// One line of call history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallHistoryEntry {
    #[serde(flatten)]
    pub record: CallRecord,
    /// Talk time in seconds, for answered calls.
    pub duration_secs: Option<i64>,
}

/// `GET /v1/calls/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallHistoryResponse {
    pub calls: Vec<CallHistoryEntry>,
}

/// `POST /v1/ws/ticket`: a single-use ticket for a browser's WebSocket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WsTicket {
    pub ticket: String,
    pub expires_in: u64,
}

/// An event sent from the server to a connected device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerEvent {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Per-user sequence number, for replay after a reconnect. Absent on
    /// events that are not stored (typing, presence, errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub event: Event,
}

/// The events themselves, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum Event {
    #[serde(rename = "message.created")]
    MessageCreated { message: Message },
    #[serde(rename = "message.deleted")]
    MessageDeleted {
        conversation: Conversation,
        message_id: MessageId,
        /// The message's place in its conversation (not the event's `seq`).
        message_seq: u64,
    },
    #[serde(rename = "friend.request")]
    FriendRequest { from: UserProfile },
    #[serde(rename = "friend.accepted")]
    FriendAccepted { user: UserProfile },
    /// A friendship ended, or a request was declined or withdrawn.
    #[serde(rename = "friend.removed")]
    FriendRemoved { user_id: UserId },
    #[serde(rename = "group.updated")]
    GroupUpdated { group: Group },
    #[serde(rename = "group.member_added")]
    GroupMemberAdded {
        group_id: GroupId,
        user_id: UserId,
        role: GroupRole,
    },
    #[serde(rename = "group.member_removed")]
    GroupMemberRemoved { group_id: GroupId, user_id: UserId },
    #[serde(rename = "presence.changed")]
    PresenceChanged { user_id: UserId, presence: Presence },
    #[serde(rename = "typing")]
    Typing {
        conversation: Conversation,
        user_id: UserId,
    },
    /// To every device of the callee: ring. Stored, so a device that comes
    /// back later learns of it (and of how it ended).
    #[serde(rename = "call.incoming")]
    CallIncoming {
        call_id: CallId,
        caller: UserProfile,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// To both users: `device` took the call.
    #[serde(rename = "call.accepted")]
    CallAccepted { call_id: CallId, device: SessionId },
    /// To the callee's devices that did not take the call: stop ringing.
    #[serde(rename = "call.answered_elsewhere")]
    CallAnsweredElsewhere { call_id: CallId },
    #[serde(rename = "call.rejected")]
    CallRejected { call_id: CallId },
    #[serde(rename = "call.cancelled")]
    CallCancelled { call_id: CallId },
    /// Nobody answered in time: a missed call.
    #[serde(rename = "call.expired")]
    CallExpired { call_id: CallId },
    /// To the caller: the callee is in another call.
    #[serde(rename = "call.busy")]
    CallBusy { call_id: CallId, callee: UserId },
    /// An answered call is over (hung up, or a participant was lost).
    #[serde(rename = "call.ended")]
    CallEnded {
        call_id: CallId,
        outcome: CallOutcome,
        reason: String,
    },
    /// Signaling from the other participant's device, relayed unchanged.
    #[serde(rename = "call.signal")]
    CallSignal {
        call_id: CallId,
        from: SessionId,
        payload: RawJson,
    },
    /// Sent once per connection after any replay: the device is up to
    /// date to `latest_seq`, its cursor for the next `since`.
    #[serde(rename = "ready")]
    Ready { latest_seq: u64 },
    /// The device's session ended (signed out or revoked); the connection
    /// closes with 4001 next.
    #[serde(rename = "session.ended")]
    SessionEnded { reason: String },
    /// The events after the client's `since` are not available (pruned,
    /// or `since` is ahead of the log): reload state over REST, then
    /// continue from `latest_seq`.
    #[serde(rename = "resync_required")]
    ResyncRequired { reason: String, latest_seq: u64 },
    /// Answers a `message.send` once the message is committed. The message
    /// also arrives as a stored `message.created`, on every device of every
    /// participant, the sending one included.
    #[serde(rename = "message.sent")]
    MessageSent {
        #[serde(rename = "ref")]
        reference: String,
        message: Message,
    },
    #[serde(rename = "error")]
    Error {
        error: Error,
        /// The `ref` of the client message this answers, if it had one.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

/// A stored event in one user's log.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub user_id: UserId,
    /// Per-user, strictly increasing, starting at 1.
    pub seq: u64,
    /// Shared by every recipient's copy: a message to a group of 100 is one
    /// event in 99 logs.
    pub event: Arc<Event>,
    pub created_at: OffsetDateTime,
}

impl Delivery {
    pub fn to_server_event(&self) -> ServerEvent {
        ServerEvent::new(Some(self.seq), Event::clone(&self.event))
    }
}

/// What a reconnecting device gets from the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Replay {
    /// The stored events after `since`, oldest first (at most the limit
    /// asked for; ask again from the last one for more).
    Events(Vec<Delivery>),
    /// Some events after `since` were pruned, or `since` is ahead of the
    /// log: the client must reload its state. `latest_seq` is where to
    /// continue from afterwards.
    ResyncRequired { latest_seq: u64 },
}

impl ServerEvent {
    pub fn new(seq: Option<u64>, event: Event) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            seq,
            event,
        }
    }

    pub fn encode(&self) -> String {
        // Serializing these plain data types cannot fail: no maps with
        // non-string keys, no custom serializers that error.
        serde_json::to_string(self).expect("server events always serialize")
    }

    /// Decodes an event, refusing unknown versions and malformed input.
    pub fn decode(text: &str) -> Result<Self, Error> {
        let event: ServerEvent = serde_json::from_str(text)
            .map_err(|e| Error::bad_request(format!("malformed event: {e}")))?;
        if event.v != PROTOCOL_VERSION {
            return Err(Error::bad_request(format!(
                "unsupported protocol version {}",
                event.v
            )));
        }
        Ok(event)
    }
}

/// A [`ServerEvent`] on its way to many devices, encoded once. The copies
/// of one event (a group message reaches each member with that member's
/// `seq`) differ only in `seq`, so the event's own fields are encoded once
/// and shared, and each copy is framed with its `v` and `seq`:
/// [`SharedEvent::encode`] gives exactly the text of
/// [`ServerEvent::encode`]. Clones share the event and its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedEvent {
    pub seq: Option<u64>,
    pub event: Arc<Event>,
    /// `event` alone as JSON: `{"type":...}`.
    json: Arc<str>,
}

impl SharedEvent {
    /// Encodes `event`.
    pub fn new(seq: Option<u64>, event: Arc<Event>) -> Self {
        // As in `ServerEvent::encode`: these plain data types cannot fail
        // to serialize.
        let json = serde_json::to_string(&*event).expect("server events always serialize");
        Self {
            seq,
            event,
            json: json.into(),
        }
    }

    /// The same event with another `seq`, sharing its encoding.
    pub fn with_seq(&self, seq: Option<u64>) -> Self {
        Self {
            seq,
            event: self.event.clone(),
            json: self.json.clone(),
        }
    }

    /// The text of `ServerEvent::new(self.seq, event).encode()`.
    pub fn encode(&self) -> String {
        // An event is a JSON object led by its `type` tag, and a
        // `ServerEvent` is `v`, then `seq` if any, then the event's fields.
        let fields = self.json.strip_prefix('{').unwrap_or(&self.json);
        let mut text = String::with_capacity(self.json.len() + 32);
        let _ = write!(text, "{{\"v\":{PROTOCOL_VERSION},");
        if let Some(seq) = self.seq {
            let _ = write!(text, "\"seq\":{seq},");
        }
        text.push_str(fields);
        text
    }
}

/// JSON kept exactly as it arrived, so what a device sends reaches its peer
/// byte for byte (an SDP's DTLS fingerprint must not change on the way).
#[derive(Clone, Debug)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// Wraps JSON text, checking only that it is JSON.
    pub fn from_text(text: &str) -> Result<Self, Error> {
        serde_json::value::RawValue::from_string(text.to_owned())
            .map(Self)
            .map_err(|e| Error::bad_request(format!("malformed JSON: {e}")))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    /// The same JSON, however it is spaced.
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
            || serde_json::from_str::<serde_json::Value>(self.get()).ok()
                == serde_json::from_str::<serde_json::Value>(other.get()).ok()
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Inside a tagged enum serde buffers the input, which a RawValue
        // cannot borrow from; going through Value keeps the content (the
        // server relays from ClientMessage::decode, which keeps the bytes).
        let value = serde_json::Value::deserialize(deserializer)?;
        serde_json::value::RawValue::from_string(value.to_string())
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// What a device sends over its WebSocket.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `{"type":"typing","conversation":…}`: relayed, never stored.
    Typing { conversation: Conversation },
    /// `{"type":"call.signal","call_id":…,"payload":{"sdp":…}|{"candidate":…}}`:
    /// relayed to the other participant's device exactly as sent.
    CallSignal { call_id: CallId, payload: RawJson },
    /// `{"type":"message.send","ref":…,"to":…,"body":…,"client_id"?:…}`:
    /// sends a message as `POST /v1/messages` does, without a request per
    /// message. Answered with `message.sent` after the commit, or with an
    /// `error`; both carry `ref`, which the client chooses.
    SendMessage {
        reference: String,
        request: SendMessageRequest,
    },
}

impl ClientMessage {
    pub fn decode(text: &str) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: &'a str,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Typing {
            #[serde(rename = "type")]
            _kind: String,
            conversation: Conversation,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CallSignal<'a> {
            #[serde(rename = "type")]
            _kind: String,
            call_id: CallId,
            #[serde(borrow)]
            payload: &'a serde_json::value::RawValue,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SendMessage {
            #[serde(rename = "type")]
            _kind: String,
            #[serde(rename = "ref")]
            reference: String,
            to: Recipient,
            body: String,
            #[serde(default)]
            client_id: Option<String>,
        }
        let malformed =
            |e: serde_json::Error| Error::bad_request(format!("malformed message: {e}"));
        let tag: Tag<'_> = serde_json::from_str(text).map_err(malformed)?;
        match tag.kind {
            "typing" => {
                let typing: Typing = serde_json::from_str(text).map_err(malformed)?;
                Ok(ClientMessage::Typing {
                    conversation: typing.conversation,
                })
            }
            "call.signal" => {
                let signal: CallSignal<'_> = serde_json::from_str(text).map_err(malformed)?;
                Ok(ClientMessage::CallSignal {
                    call_id: signal.call_id,
                    payload: RawJson(signal.payload.to_owned()),
                })
            }
            "message.send" => {
                let send: SendMessage = serde_json::from_str(text).map_err(malformed)?;
                Ok(ClientMessage::SendMessage {
                    reference: send.reference,
                    request: SendMessageRequest {
                        to: send.to,
                        body: send.body,
                        client_id: send.client_id,
                    },
                })
            }
            other => Err(Error::bad_request(format!(
                "unknown message type {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;
    use time::OffsetDateTime;

    #[test]
    fn events_round_trip_with_their_type_tag() {
        let a = UserId::new();
        let b = UserId::new();
        let message = Message {
            id: MessageId::new(),
            conversation: Conversation::direct(a, b),
            seq: 1,
            sender: a,
            body: Some("hello".into()),
            client_id: None,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            deleted_at: None,
        };
        let event = ServerEvent::new(Some(7), Event::MessageCreated { message });
        let text = event.encode();
        assert!(text.contains("\"type\":\"message.created\""), "{text}");
        assert!(text.contains("\"v\":1"), "{text}");
        assert_eq!(ServerEvent::decode(&text).unwrap(), event);
    }

    /// The shared encoding is the same text as encoding each copy, stored
    /// or not, with fields or with only the tag.
    #[test]
    fn a_shared_event_encodes_exactly_like_a_server_event() {
        let a = UserId::new();
        let events = [
            Event::MessageCreated {
                message: Message {
                    id: MessageId::new(),
                    conversation: Conversation::direct(a, UserId::new()),
                    seq: 3,
                    sender: a,
                    body: Some("quote \" and { brace".into()),
                    client_id: Some("c1".into()),
                    created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
                    deleted_at: None,
                },
            },
            Event::FriendRemoved { user_id: a },
            Event::SessionEnded {
                reason: "revoked".into(),
            },
        ];
        for event in events {
            let shared = SharedEvent::new(None, Arc::new(event.clone()));
            for seq in [None, Some(1), Some(u64::MAX)] {
                let copy = shared.with_seq(seq);
                let expected = ServerEvent::new(seq, event.clone()).encode();
                assert_eq!(copy.encode(), expected);
                assert_eq!(ServerEvent::decode(&copy.encode()).unwrap().event, event);
            }
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let from = UserId::new();
        let text = format!(r#"{{"v":2,"type":"friend.removed","user_id":"{from}"}}"#);
        assert!(ServerEvent::decode(&text).is_err());
        assert!(ServerEvent::decode("{").is_err());
        assert!(ServerEvent::decode(r#"{"v":1,"type":"no.such"}"#).is_err());
    }

    #[test]
    fn recipients_and_client_messages_have_their_documented_shape() {
        let user = UserId::new();
        let to: Recipient = serde_json::from_str(&format!(r#"{{"user":"{user}"}}"#)).unwrap();
        assert_eq!(to, Recipient::User(user));
        let conversation = Conversation::direct(user, UserId::new());
        let typing = format!(r#"{{"type":"typing","conversation":"{conversation}"}}"#);
        assert_eq!(
            ClientMessage::decode(&typing).unwrap(),
            ClientMessage::Typing { conversation }
        );
        assert!(ClientMessage::decode(r#"{"type":"nope"}"#).is_err());

        let send = format!(
            r#"{{"type":"message.send","ref":"r1","to":{{"user":"{user}"}},"body":"hi","client_id":"c1"}}"#
        );
        assert_eq!(
            ClientMessage::decode(&send).unwrap(),
            ClientMessage::SendMessage {
                reference: "r1".into(),
                request: SendMessageRequest {
                    to: Recipient::User(user),
                    body: "hi".into(),
                    client_id: Some("c1".into()),
                },
            }
        );
        let without_ref =
            format!(r#"{{"type":"message.send","to":{{"user":"{user}"}},"body":"hi"}}"#);
        assert!(ClientMessage::decode(&without_ref).is_err());
        let error = ServerEvent::new(
            None,
            Event::Error {
                error: Error::forbidden("no"),
                reference: Some("r1".into()),
            },
        );
        assert!(
            error.encode().contains(r#""ref":"r1""#),
            "{}",
            error.encode()
        );
    }

    #[test]
    fn signal_payloads_keep_their_exact_bytes() {
        let call = CallId::new();
        let payload =
            r#"{ "sdp" : {"type":"offer","sdp":"v=0\r\na=fingerprint:sha-256 AB:CD\u0041"} }"#;
        let text = format!(r#"{{"type":"call.signal","call_id":"{call}","payload":{payload}}}"#);
        let ClientMessage::CallSignal {
            call_id,
            payload: raw,
        } = ClientMessage::decode(&text).unwrap()
        else {
            panic!("a call signal");
        };
        assert_eq!(call_id, call);
        assert_eq!(raw.get(), payload);
        let event = ServerEvent::new(
            None,
            Event::CallSignal {
                call_id,
                from: SessionId::new(),
                payload: raw,
            },
        );
        assert!(event.encode().contains(payload));
        assert!(
            ClientMessage::decode(&format!(r#"{{"type":"call.signal","call_id":"{call}"}}"#))
                .is_err()
        );
    }
}
