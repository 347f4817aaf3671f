//! Domain types: what the product is about, independent of how it is stored
//! or sent. Wire shapes live in [`crate::wire`]; these are the values the
//! store returns and the server reasons about.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{CallId, GroupId, MessageId, SessionId, UserId};

/// A registered user. Users are keyed by their identity provider's
/// issuer and subject, never by email: an email can change hands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub picture: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the user was last connected; `None` if never.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
}

/// What a sign-in proved about a person: the input to registering or
/// updating a [`User`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub picture: Option<String>,
    /// Google's hosted-domain claim (`hd`), present for Workspace accounts.
    pub hosted_domain: Option<String>,
}

impl Identity {
    /// An identity with only its issuer and subject: no email, name,
    /// picture or domain claims. Set the others with struct update syntax.
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            subject: subject.into(),
            email: None,
            email_verified: false,
            name: None,
            picture: None,
            hosted_domain: None,
        }
    }
}

/// One user's view of a relationship with another user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FriendStatus {
    /// This user asked; the other has not answered.
    RequestSent,
    /// The other user asked; this user has not answered.
    RequestReceived,
    /// Both agreed.
    Accepted,
    /// This user blocked the other.
    Blocked,
}

impl FriendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FriendStatus::RequestSent => "request_sent",
            FriendStatus::RequestReceived => "request_received",
            FriendStatus::Accepted => "accepted",
            FriendStatus::Blocked => "blocked",
        }
    }
}

impl FromStr for FriendStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "request_sent" => FriendStatus::RequestSent,
            "request_received" => FriendStatus::RequestReceived,
            "accepted" => FriendStatus::Accepted,
            "blocked" => FriendStatus::Blocked,
            other => return Err(format!("unknown friend status {other:?}")),
        })
    }
}

/// A relationship as seen from one side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Friend {
    pub user_id: UserId,
    pub status: FriendStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// Where a message lives. A direct conversation is the unordered pair of
/// its two users, so both sides name it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conversation {
    Direct { low: UserId, high: UserId },
    Group(GroupId),
}

impl Conversation {
    /// The direct conversation between two users, whichever order they come in.
    pub fn direct(a: UserId, b: UserId) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        Conversation::Direct { low, high }
    }

    /// Whether `user` takes part, for a direct conversation. Group
    /// membership needs the store, so groups answer `None`.
    pub fn direct_includes(&self, user: UserId) -> Option<bool> {
        match self {
            Conversation::Direct { low, high } => Some(*low == user || *high == user),
            Conversation::Group(_) => None,
        }
    }
}

impl fmt::Display for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conversation::Direct { low, high } => write!(f, "d:{low}:{high}"),
            Conversation::Group(group) => write!(f, "g:{group}"),
        }
    }
}

impl FromStr for Conversation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid conversation id {s:?}");
        if let Some(rest) = s.strip_prefix("d:") {
            let (a, b) = rest.split_once(':').ok_or_else(bad)?;
            let a: UserId = a.parse().map_err(|_| bad())?;
            let b: UserId = b.parse().map_err(|_| bad())?;
            if a == b {
                return Err(bad());
            }
            Ok(Conversation::direct(a, b))
        } else if let Some(rest) = s.strip_prefix("g:") {
            Ok(Conversation::Group(rest.parse().map_err(|_| bad())?))
        } else {
            Err(bad())
        }
    }
}

impl Serialize for Conversation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Conversation {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A conversation: `d:<user id>:<user id>` (direct, lower id first) or `g:<group id>`",
            ))
            .examples(["g:0195f1c2-7a6b-7d3e-9a41-2f5c8e1b7a90"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Conversation {}

impl<'de> Deserialize<'de> for Conversation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A message to be stored. `client_id`, when given, makes the send
/// idempotent: the same sender and client id store one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub id: MessageId,
    pub conversation: Conversation,
    pub sender: UserId,
    pub body: String,
    pub client_id: Option<String>,
    pub created_at: OffsetDateTime,
}

/// A stored message. A deleted message keeps its place as a tombstone: its
/// body is erased and `deleted_at` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: MessageId,
    pub conversation: Conversation,
    /// Position in its conversation: 1, 2, 3... in commit order, without
    /// gaps. History pages use it as their cursor, so a page never misses
    /// or repeats a message however many are sent meanwhile.
    pub seq: u64,
    pub sender: UserId,
    pub body: Option<String>,
    pub client_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deleted_at: Option<OffsetDateTime>,
}

/// The result of storing a message.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageInsert {
    pub message: Message,
    /// False when the `client_id` had been used before: `message` is then
    /// the first one, unchanged, and nothing was delivered again.
    pub created: bool,
    /// The `message.created` events appended to the recipients' logs.
    pub deliveries: Vec<crate::wire::Delivery>,
}

/// The result of [`crate::store::MessageStore::send_message`].
#[derive(Clone, Debug, PartialEq)]
pub enum SendOutcome {
    /// Stored (or, for a repeated `client_id`, found stored before).
    Stored(MessageInsert),
    /// The sender may not send to the conversation: not friends with the
    /// other user, or not a member of the group (or no such group).
    NotAllowed,
}

/// The result of deleting a message.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageDeletion {
    /// The tombstone.
    pub message: Message,
    /// The `message.deleted` events appended; empty if it was deleted before.
    pub deliveries: Vec<crate::wire::Delivery>,
}

/// What a user may read of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversationAccess {
    /// Set for a former group member: the last `seq` they may read.
    pub readable_until: Option<u64>,
}

/// One line of a user's conversation list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationSummary {
    pub conversation: Conversation,
    /// The newest message the user may read (a tombstone if deleted).
    pub last_message: Option<Message>,
    /// Messages from others after `last_read_seq`, not deleted.
    pub unread: u64,
    pub last_read_seq: u64,
    /// False for a group the user has left or was removed from.
    pub active: bool,
}

/// A group conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub owner: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A member's standing in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    Owner,
    Admin,
    Member,
}

impl GroupRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Owner => "owner",
            GroupRole::Admin => "admin",
            GroupRole::Member => "member",
        }
    }

    /// Owners and admins manage the group's name and members.
    pub fn can_manage(self) -> bool {
        matches!(self, GroupRole::Owner | GroupRole::Admin)
    }
}

impl FromStr for GroupRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "owner" => GroupRole::Owner,
            "admin" => GroupRole::Admin,
            "member" => GroupRole::Member,
            other => return Err(format!("unknown group role {other:?}")),
        })
    }
}

/// A current member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMember {
    pub user_id: UserId,
    pub role: GroupRole,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

/// A signed-in device. Its id names the refresh-token family and is the
/// `sid` claim of its access tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A refresh token as the store keeps it: only a hash of the token itself,
/// so a copy of the database does not hand out sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the opaque token.
    pub hash: [u8; 32],
    pub session_id: SessionId,
    pub user_id: UserId,
    pub expires_at: OffsetDateTime,
    /// Set once the token was exchanged for its successor.
    pub spent_at: Option<OffsetDateTime>,
    /// Hash of the token that replaced this one.
    pub successor_hash: Option<[u8; 32]>,
}

/// What became of an attempt to spend a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpendOutcome {
    /// The token was live; it is now spent and its successor stored.
    Rotated {
        user_id: UserId,
        session_id: SessionId,
    },
    /// The token had been spent before. The caller decides between a
    /// retry (same successor) and reuse (revoke the family).
    AlreadySpent(RefreshToken),
    /// Unknown, expired, or its session was revoked.
    Invalid,
}

/// How a call ended, for history. Unanswered calls are `Missed` when they
/// rang out and `Rejected`, `Cancelled` or `Busy` when someone said so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Answered, then hung up (or lost) after talking.
    Answered,
    /// Nobody answered before the ring timeout.
    Missed,
    Rejected,
    /// The caller gave up while it rang.
    Cancelled,
    /// The callee was already in a call.
    Busy,
    /// It broke: a participant disappeared, or the server restarted.
    Failed,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Busy => "busy",
            CallOutcome::Failed => "failed",
        }
    }
}

impl FromStr for CallOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "answered" => CallOutcome::Answered,
            "missed" => CallOutcome::Missed,
            "rejected" => CallOutcome::Rejected,
            "cancelled" => CallOutcome::Cancelled,
            "busy" => CallOutcome::Busy,
            "failed" => CallOutcome::Failed,
            other => return Err(format!("unknown call outcome {other:?}")),
        })
    }
}

/// A call as history keeps it. `outcome` is `None` while the call is on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallRecord {
    pub id: CallId,
    pub caller: UserId,
    pub callee: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub answered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub outcome: Option<CallOutcome>,
    /// Why it ended, in words.
    pub reason: Option<String>,
}

impl CallRecord {
    /// Talk time: from answer to end.
    pub fn duration_secs(&self) -> Option<i64> {
        Some((self.ended_at? - self.answered_at?).whole_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_conversation_is_the_same_from_both_sides() {
        let a = UserId::new();
        let b = UserId::new();
        assert_eq!(Conversation::direct(a, b), Conversation::direct(b, a));
        let text = Conversation::direct(b, a).to_string();
        assert_eq!(
            text.parse::<Conversation>().unwrap(),
            Conversation::direct(a, b)
        );
        assert_eq!(Conversation::direct(a, b).direct_includes(a), Some(true));
        assert_eq!(
            Conversation::direct(a, b).direct_includes(UserId::new()),
            Some(false)
        );
    }

    #[test]
    fn malformed_conversation_ids_are_errors() {
        let a = UserId::new();
        for bad in ["", "x:1", "d:nope", &format!("d:{a}:{a}"), "g:not-a-uuid"] {
            assert!(bad.parse::<Conversation>().is_err(), "{bad}");
        }
    }
}
