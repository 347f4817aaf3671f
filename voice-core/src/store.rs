//! The storage traits. The server talks to persistence only through these,
//! so SQLite (now) and PostgreSQL (later) are interchangeable. They are
//! async and object safe: the server holds an `Arc<dyn Store>`.
//!
//! Every write is acknowledged only once it is durable. Each method that
//! must be atomic (spending a refresh token, a mutual friend request) is
//! one method, so no backend needs caller-side transactions.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::Result;
use crate::ids::{CallId, GroupId, MessageId, SessionId, UserId};
use crate::model::{
    CallOutcome, CallRecord, Conversation, ConversationAccess, ConversationSummary, Friend,
    FriendStatus, Group, GroupMember, GroupRole, Identity, Message, MessageDeletion, MessageInsert,
    NewMessage, RefreshToken, SendOutcome, Session, SpendOutcome, User,
};
use crate::wire::{Delivery, Event, Replay};

/// Users, keyed by identity provider issuer and subject.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Registers the identity on first sight, or refreshes its email, name
    /// and picture. Returns the user and whether it was created now.
    async fn upsert_user(&self, identity: &Identity, now: OffsetDateTime) -> Result<(User, bool)>;

    async fn get_user(&self, id: UserId) -> Result<Option<User>>;

    /// Users whose name or email starts with `query`, ignoring case, at
    /// most `limit`, ordered by name.
    async fn search_users(&self, query: &str, limit: u32) -> Result<Vec<User>>;

    /// Records when the user was last connected.
    async fn set_last_seen(&self, id: UserId, at: OffsetDateTime) -> Result<()>;

    /// Counts users: for readiness reports and tests that check nobody was
    /// registered.
    async fn count_users(&self) -> Result<u64>;
}

/// Signed-in sessions (devices) and their refresh-token families.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session together with its first refresh token.
    async fn create_session(&self, session: &Session, first_token: &RefreshToken) -> Result<()>;

    async fn get_session(&self, id: SessionId) -> Result<Option<Session>>;

    /// Atomically spends the live token `hash` and stores `successor` in its
    /// family. A token that was spent before is returned untouched as
    /// [`SpendOutcome::AlreadySpent`]; unknown, expired or revoked tokens
    /// are [`SpendOutcome::Invalid`]. `successor.session_id` and `user_id`
    /// are taken from the spent token.
    async fn spend_refresh_token(
        &self,
        hash: [u8; 32],
        successor: &RefreshToken,
        now: OffsetDateTime,
    ) -> Result<SpendOutcome>;

    async fn get_refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshToken>>;

    /// Revokes a session: its refresh tokens stop working and its access
    /// tokens are refused. Returns whether it was live before.
    async fn revoke_session(&self, id: SessionId, now: OffsetDateTime) -> Result<bool>;
}

/// Friendships, stored from both sides.
#[async_trait]
pub trait FriendStore: Send + Sync {
    /// `from` asks `to`. If `to` had already asked `from`, both become
    /// friends at once. Returns `from`'s status afterwards. Asking someone
    /// who blocked you, or whom you blocked, is a conflict.
    async fn request_friend(
        &self,
        from: UserId,
        to: UserId,
        now: OffsetDateTime,
    ) -> Result<FriendStatus>;

    /// `user` accepts the pending request from `requester`; not found if
    /// there is none.
    async fn accept_friend(
        &self,
        user: UserId,
        requester: UserId,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// Ends a friendship or withdraws or declines a request, from both
    /// sides. Returns whether anything was there. A block is left alone.
    async fn remove_friend(&self, user: UserId, other: UserId) -> Result<bool>;

    /// `user` blocks `other`: any friendship or request between them ends.
    async fn block_user(&self, user: UserId, other: UserId, now: OffsetDateTime) -> Result<()>;

    /// Lifts `user`'s block of `other`. Returns whether there was one.
    async fn unblock_user(&self, user: UserId, other: UserId) -> Result<bool>;

    /// `user`'s view of the relationship with `other`.
    async fn friendship(&self, user: UserId, other: UserId) -> Result<Option<FriendStatus>>;

    /// Everyone `user` has a relationship with, oldest first.
    async fn list_friends(&self, user: UserId) -> Result<Vec<Friend>>;
}

/// A write already queued in its backend: awaiting it only waits for the
/// outcome.
pub type QueuedWrite<T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>;

/// Messages of direct and group conversations, and who has read what.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores `message` if its sender may send to its conversation, in one
    /// transaction with the check: a direct message only to an accepted
    /// friend, a group message only by a current member. Its recipients
    /// are the conversation's participants at that moment (both users of a
    /// direct conversation, a group's current members), and it is stored
    /// as [`MessageStore::insert_message`] stores it.
    ///
    /// The write is queued by this call, not by the first poll of the
    /// returned future: messages sent one after another are stored in that
    /// order even when their futures are awaited together, so a device can
    /// have many sends in flight and keep their order.
    fn send_message(&self, message: NewMessage) -> QueuedWrite<SendOutcome>;

    /// Who hears what `sender` says in `conversation` now (both users of a
    /// direct conversation, a group's current members), or `None` if
    /// `sender` may not speak there: the rule
    /// [`MessageStore::send_message`] applies, for what is not stored
    /// (typing).
    async fn allowed_recipients(
        &self,
        sender: UserId,
        conversation: Conversation,
    ) -> Result<Option<Vec<UserId>>>;

    /// Stores a message with the next `seq` of its conversation and, in the
    /// same transaction, appends `message.created` to the event log of each
    /// of `recipients` (so an acknowledged message is never without its
    /// events). With a `client_id` the insert is idempotent: a second send
    /// with the same sender and client id returns the first message
    /// unchanged, `created: false` and no deliveries.
    ///
    /// The conversation's participants are remembered for
    /// [`MessageStore::list_conversations`]; for a direct conversation both
    /// users become participants on its first message.
    async fn insert_message(
        &self,
        message: &NewMessage,
        recipients: &[UserId],
    ) -> Result<MessageInsert>;

    async fn get_message(&self, id: MessageId) -> Result<Option<Message>>;

    /// A page of history, newest first: messages with `seq < before` (all
    /// if `None`) and `seq <= readable_until` (if given), at most `limit`.
    async fn list_messages(
        &self,
        conversation: Conversation,
        before: Option<u64>,
        readable_until: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>>;

    /// Erases the body and leaves a tombstone, appending `message.deleted`
    /// to each of `recipients`' logs in the same transaction. Returns
    /// `None` for an unknown id. Deleting twice keeps the first deletion
    /// and delivers nothing the second time.
    async fn delete_message(
        &self,
        id: MessageId,
        now: OffsetDateTime,
        recipients: &[UserId],
    ) -> Result<Option<MessageDeletion>>;

    /// Whether `user` may read `conversation`: a direct conversation's two
    /// users may; a group's current members may read all of it, former
    /// members up to the `seq` at which they left. `None`: no access.
    async fn conversation_access(
        &self,
        user: UserId,
        conversation: Conversation,
    ) -> Result<Option<ConversationAccess>>;

    /// Marks everything up to `seq` read for `user`. Never moves backwards.
    async fn mark_read(&self, user: UserId, conversation: Conversation, seq: u64) -> Result<()>;

    /// Every conversation `user` takes part in or took part in, newest
    /// activity first, with the last readable message and unread count.
    async fn list_conversations(&self, user: UserId) -> Result<Vec<ConversationSummary>>;
}

/// Takes the deliveries of each committed write, in commit order: see
/// [`EventStore::feed_commits`]. It is called on the store's own thread,
/// so it must not block: hand the deliveries on (to a channel) and return.
pub type CommitFeed = Box<dyn Fn(Vec<Delivery>) + Send + Sync>;

/// Each user's log of events, for replay after a reconnect.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Asks the store to hand `feed` the deliveries of every write it
    /// commits from now on, a transaction's all at once, in the order the
    /// transactions commit, and only after the writers have been answered.
    /// Each user's deliveries then reach `feed` in `seq` order, so
    /// publishing them from there needs no reordering downstream.
    ///
    /// Returns `false` when this store cannot (the default) or already has
    /// a feed; whoever wrote then publishes the deliveries the write
    /// returned.
    fn feed_commits(&self, feed: CommitFeed) -> bool {
        drop(feed);
        false
    }

    /// Appends each event to its user's log with that user's next `seq`,
    /// in one transaction, and returns the stored deliveries in order.
    async fn append_events(
        &self,
        events: &[(UserId, Event)],
        now: OffsetDateTime,
    ) -> Result<Vec<Delivery>>;

    /// The events of `user` after `since`, oldest first, at most `limit`.
    /// If any event after `since` was pruned, or `since` is beyond the last
    /// event, the answer is [`Replay::ResyncRequired`].
    async fn events_since(&self, user: UserId, since: u64, limit: u32) -> Result<Replay>;

    /// The `seq` of `user`'s newest event (0 if none ever).
    async fn latest_event_seq(&self, user: UserId) -> Result<u64>;

    /// Drops, from the start of each user's log, the events created before
    /// `before`; the first one to keep ends the run, so a log never gets a
    /// hole (an old event logged after a newer one waits for that one).
    /// Returns how many were dropped.
    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64>;
}

/// Groups and their current members.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates the group with its owner (as [`GroupRole::Owner`]) and the
    /// other `members` (as [`GroupRole::Member`]).
    async fn create_group(&self, group: &Group, members: &[UserId]) -> Result<()>;

    async fn get_group(&self, id: GroupId) -> Result<Option<Group>>;

    /// Returns whether the group exists.
    async fn rename_group(&self, id: GroupId, name: &str) -> Result<bool>;

    /// Returns false if the user was already a member.
    async fn add_group_member(
        &self,
        group: GroupId,
        user: UserId,
        role: GroupRole,
        now: OffsetDateTime,
    ) -> Result<bool>;

    /// Returns false if the user was not a member. A former member keeps
    /// read access to the messages sent before they left (see
    /// [`MessageStore::conversation_access`]); adding them again restores
    /// full access.
    async fn remove_group_member(&self, group: GroupId, user: UserId) -> Result<bool>;

    async fn group_member(&self, group: GroupId, user: UserId) -> Result<Option<GroupMember>>;

    async fn list_group_members(&self, group: GroupId) -> Result<Vec<GroupMember>>;

    /// The current members' ids, in no particular order: all that
    /// delivering to the group needs, read for every group message.
    async fn group_member_ids(&self, group: GroupId) -> Result<Vec<UserId>> {
        Ok(self
            .list_group_members(group)
            .await?
            .into_iter()
            .map(|member| member.user_id)
            .collect())
    }

    async fn list_user_groups(&self, user: UserId) -> Result<Vec<Group>>;
}

/// Call history. Calls themselves live in memory while they ring and run;
/// the store keeps their record, so history survives and a restarted
/// server can close the calls it lost.
#[async_trait]
pub trait CallStore: Send + Sync {
    /// Records a call as it starts (`outcome: None`), or one already over
    /// (a busy attempt).
    async fn insert_call(&self, record: &CallRecord) -> Result<()>;

    /// Records when the call was answered. Returns false for an unknown or
    /// finished call.
    async fn mark_call_answered(&self, id: CallId, at: OffsetDateTime) -> Result<bool>;

    /// Records how the call ended. Returns false (and changes nothing) if
    /// it was unknown or had already ended: the first ending wins.
    async fn finish_call(
        &self,
        id: CallId,
        outcome: CallOutcome,
        reason: &str,
        ended_at: OffsetDateTime,
    ) -> Result<bool>;

    async fn get_call(&self, id: CallId) -> Result<Option<CallRecord>>;

    /// `user`'s calls (as caller or callee), newest first, started strictly
    /// before `before` if given, at most `limit`.
    async fn list_calls(
        &self,
        user: UserId,
        before: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<CallRecord>>;

    /// Calls without an outcome: after a restart, the ones that were lost.
    async fn unfinished_calls(&self) -> Result<Vec<CallRecord>>;
}

/// Admins' runtime edits to the list of STUN servers. The effective list
/// is the configured one plus the URLs added here, minus those removed
/// here, so an edit survives restarts and a removed default stays removed.
#[async_trait]
pub trait IceStore: Send + Sync {
    /// Every edit: each URL with whether it was added (`true`) or removed
    /// (`false`), in the order they were first made.
    async fn stun_overrides(&self) -> Result<Vec<(String, bool)>>;

    /// Records that `url` is added (`true`) or removed (`false`); a later
    /// edit of the same URL replaces the earlier one.
    async fn set_stun_override(&self, url: &str, added: bool, now: OffsetDateTime) -> Result<()>;
}

/// Everything the server needs from persistence.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + FriendStore
    + MessageStore
    + GroupStore
    + EventStore
    + CallStore
    + IceStore
{
    /// Succeeds when the database answers a query: the readiness probe.
    async fn ping(&self) -> Result<()>;
}
