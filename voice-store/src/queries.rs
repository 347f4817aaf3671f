//! The SQL behind each [`Store`] method. Every method is one closure sent
//! to a store thread: writes run atomically in their own savepoint, so
//! read-then-write logic (a mutual friend request, spending a token) needs
//! no further locking.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use voice_core::Error;
use voice_core::error::Result;
use voice_core::ids::{CallId, GroupId, MessageId, SessionId, UserId};
use voice_core::model::{
    CallOutcome, CallRecord, Conversation, ConversationAccess, ConversationSummary, Friend,
    FriendStatus, Group, GroupMember, GroupRole, Identity, Message, MessageDeletion, MessageInsert,
    NewMessage, RefreshToken, SendOutcome, Session, SpendOutcome, User,
};
use voice_core::store::{
    CallStore, CommitFeed, EventStore, FriendStore, GroupStore, IceStore, MessageStore,
    QueuedWrite, SessionStore, Store, UserStore,
};
use voice_core::wire::{Delivery, Event, Replay};

use crate::error::DbResult;
use crate::store::{PruneLimits, SqliteStore};
use crate::worker::WriteTx;

/// Unix milliseconds: the stored form of every timestamp.
fn ms(time: OffsetDateTime) -> i64 {
    // Floor, not truncation toward zero, so that times before 1970 round
    // the same way as after it.
    time.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

/// `time` as it will read back from the database.
fn stored(time: OffsetDateTime) -> OffsetDateTime {
    from_ms(ms(time)).unwrap_or(time)
}

fn from_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn conversion_error(
    index: usize,
    kind: Type,
    error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, kind, error.into())
}

fn time_at(row: &Row<'_>, index: usize) -> rusqlite::Result<OffsetDateTime> {
    let value: i64 = row.get(index)?;
    from_ms(value).ok_or_else(|| {
        conversion_error(
            index,
            Type::Integer,
            format!("timestamp {value} out of range"),
        )
    })
}

fn opt_time_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<OffsetDateTime>> {
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(_) => time_at(row, index).map(Some),
    }
}

/// A `seq` bound as SQLite stores it. No stored seq exceeds `i64::MAX`, so
/// a larger bound means the same as `i64::MAX`: no bound.
fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_at(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value)
        .map_err(|_| conversion_error(index, Type::Integer, format!("negative seq {value}")))
}

fn opt_seq_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(_) => seq_at(row, index).map(Some),
    }
}

/// Parses a TEXT column into an id, status, role or conversation.
fn parse_at<T>(row: &Row<'_>, index: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|error: T::Err| conversion_error(index, Type::Text, error))
}

/// Parses a nullable TEXT column, like [`parse_at`].
fn opt_parse_at<T>(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<T>>
where
    T: FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match row.get::<_, Option<String>>(index)? {
        None => Ok(None),
        Some(_) => parse_at(row, index).map(Some),
    }
}

const USER_COLUMNS: &str = "id, issuer, subject, email, name, picture, created_at, last_seen_at";

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: parse_at(row, 0)?,
        issuer: row.get(1)?,
        subject: row.get(2)?,
        email: row.get(3)?,
        name: row.get(4)?,
        picture: row.get(5)?,
        created_at: time_at(row, 6)?,
        last_seen_at: opt_time_at(row, 7)?,
    })
}

/// The stored search key of a name or email: lower-cased character by
/// character (not with `str::to_lowercase`, whose final-sigma rule would
/// make the key of a prefix differ from the prefix of the key).
fn search_key(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

const SESSION_COLUMNS: &str = "id, user_id, created_at, revoked_at";

fn session_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: parse_at(row, 0)?,
        user_id: parse_at(row, 1)?,
        created_at: time_at(row, 2)?,
        revoked_at: opt_time_at(row, 3)?,
    })
}

const TOKEN_COLUMNS: &str = "hash, session_id, user_id, expires_at, spent_at, successor_hash";

fn token_row(row: &Row<'_>) -> rusqlite::Result<RefreshToken> {
    Ok(RefreshToken {
        hash: row.get(0)?,
        session_id: parse_at(row, 1)?,
        user_id: parse_at(row, 2)?,
        expires_at: time_at(row, 3)?,
        spent_at: opt_time_at(row, 4)?,
        successor_hash: row.get(5)?,
    })
}

fn insert_token(conn: &Connection, token: &RefreshToken) -> DbResult<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO refresh_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        token.hash,
        token.session_id.to_string(),
        token.user_id.to_string(),
        ms(token.expires_at),
        token.spent_at.map(ms),
        token.successor_hash,
    ])?;
    Ok(())
}

const MESSAGE_COLUMNS: &str =
    "id, conversation, seq, sender, body, client_id, created_at, deleted_at";

fn message_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    message_row_at(row, 0)
}

/// A message from [`MESSAGE_COLUMNS`] starting at column `first`.
fn message_row_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Message> {
    Ok(Message {
        id: parse_at(row, first)?,
        conversation: parse_at(row, first + 1)?,
        seq: seq_at(row, first + 2)?,
        sender: parse_at(row, first + 3)?,
        body: row.get(first + 4)?,
        client_id: row.get(first + 5)?,
        created_at: time_at(row, first + 6)?,
        deleted_at: opt_time_at(row, first + 7)?,
    })
}

/// The newest messages of `conversation` with `seq <= newest`, newest
/// first: one range scan of the (conversation, seq) index.
fn messages_up_to(
    conn: &Connection,
    conversation: &str,
    newest: u64,
    limit: u32,
) -> DbResult<Vec<Message>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND seq <= ?2
             ORDER BY seq DESC LIMIT ?3"
        ))?
        .query_map(
            params![conversation, sql_seq(newest), i64::from(limit)],
            message_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The seq of the newest message of `conversation`, 0 if it has none.
fn last_seq(conn: &Connection, conversation: &str) -> DbResult<i64> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM messages WHERE conversation = ?1")?
        .query_row([conversation], |row| row.get(0))?)
}

/// Each user once, in the order first given: a recipient listed twice
/// still gets one event.
fn distinct(users: &[UserId]) -> Vec<UserId> {
    let mut seen = std::collections::HashSet::new();
    users
        .iter()
        .copied()
        .filter(|user| seen.insert(*user))
        .collect()
}

/// How an event is kept in a user's log: a `message.created` as its
/// message's key (the message row is the event, read with it on replay),
/// any other event as its JSON.
enum LoggedEvent {
    Message(i64),
    Json(String),
}

impl LoggedEvent {
    /// How `event` is kept; a `message.created` whose message is not
    /// stored is not found.
    fn of(conn: &Connection, event: &Event) -> DbResult<LoggedEvent> {
        if let Event::MessageCreated { message } = event {
            return conn
                .prepare_cached("SELECT key FROM messages WHERE id = ?1")?
                .query_row([message.id.to_string()], |row| row.get(0))
                .optional()?
                .map(LoggedEvent::Message)
                .ok_or_else(|| Error::not_found("no such message").into());
        }
        serde_json::to_string(event)
            .map(LoggedEvent::Json)
            .map_err(|error| {
                tracing::error!(%error, "an event does not serialize");
                Error::internal().into()
            })
    }

    /// The `event` and `message_key` columns.
    fn columns(&self) -> (&str, Option<i64>) {
        match self {
            LoggedEvent::Message(key) => ("", Some(*key)),
            LoggedEvent::Json(json) => (json, None),
        }
    }
}

/// Appends `event` (kept as `logged`) to `user`'s log with their next
/// seq. The seq comes from the user's row, which pruning never touches, so
/// numbering goes on where it was; an unknown user is not found.
fn append_event(
    tx: &WriteTx<'_>,
    user: UserId,
    event: &Arc<Event>,
    logged: &LoggedEvent,
    now: OffsetDateTime,
) -> DbResult<Delivery> {
    let slot = tx.next_event_slot(user)?;
    let (json, message_key) = logged.columns();
    tx.prepare_cached(
        "INSERT INTO events (user_key, seq, event, created_at, message_key)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![slot.user_key, slot.seq, json, ms(now), message_key])?;
    let delivery = Delivery {
        user_id: user,
        seq: slot.seq as u64,
        event: Arc::clone(event),
        created_at: stored(now),
    };
    tx.stored(&delivery);
    Ok(delivery)
}

/// Appends one event to each of `users`' logs.
fn deliver(
    tx: &WriteTx<'_>,
    users: &[UserId],
    event: Event,
    now: OffsetDateTime,
) -> DbResult<Vec<Delivery>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let logged = LoggedEvent::of(tx, &event)?;
    deliver_logged(tx, users, event, &logged, now)
}

/// [`deliver`], for a caller that knows how the event is kept.
fn deliver_logged(
    tx: &WriteTx<'_>,
    users: &[UserId],
    event: Event,
    logged: &LoggedEvent,
    now: OffsetDateTime,
) -> DbResult<Vec<Delivery>> {
    let event = Arc::new(event);
    users
        .iter()
        .map(|user| append_event(tx, *user, &event, logged, now))
        .collect()
}

/// Stores `message` for `recipients` (each listed once): see
/// [`MessageStore::insert_message`].
fn insert_message(
    tx: &WriteTx<'_>,
    message: &NewMessage,
    recipients: &[UserId],
) -> DbResult<MessageInsert> {
    if let Some(client_id) = &message.client_id {
        let first = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender = ?1 AND client_id = ?2"
            ))?
            .query_row([message.sender.to_string(), client_id.clone()], message_row)
            .optional()?;
        if let Some(first) = first {
            return Ok(MessageInsert {
                message: first,
                created: false,
                deliveries: Vec::new(),
            });
        }
    }
    let conversation = message.conversation.to_string();
    // This runs inside the write transaction, which holds SQLite's
    // write lock: nothing can take this seq between reading the
    // maximum and inserting. The unique (conversation, seq) index
    // would refuse a duplicate anyway.
    let seq = last_seq(tx, &conversation)? + 1;
    tx.prepare_cached(&format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)"
    ))?
    .execute(params![
        message.id.to_string(),
        conversation,
        seq,
        message.sender.to_string(),
        message.body,
        message.client_id,
        ms(message.created_at),
    ])?;
    // The key column is the rowid, which the insert chose.
    let logged = LoggedEvent::Message(tx.last_insert_rowid());
    // A direct conversation's users are in its id; a group's come
    // from its membership rows instead. They are written with the first
    // message and never removed, so later messages need not look.
    if let Conversation::Direct { low, high } = message.conversation
        && seq == 1
    {
        for user in [low, high] {
            tx.prepare_cached(
                "INSERT INTO direct_participants (user_id, conversation) VALUES (?1, ?2)
                 ON CONFLICT (user_id, conversation) DO NOTHING",
            )?
            .execute([user.to_string(), conversation.clone()])?;
        }
    }
    let stored = Message {
        id: message.id,
        conversation: message.conversation,
        seq: seq as u64,
        sender: message.sender,
        body: Some(message.body.clone()),
        client_id: message.client_id.clone(),
        created_at: stored(message.created_at),
        deleted_at: None,
    };
    let event = Event::MessageCreated {
        message: stored.clone(),
    };
    // The events are dated like the message.
    let deliveries = deliver_logged(tx, recipients, event, &logged, message.created_at)?;
    Ok(MessageInsert {
        message: stored,
        created: true,
        deliveries,
    })
}

/// Who gets what `sender` sends to `conversation` now, or `None` if they
/// may not send there: see [`MessageStore::allowed_recipients`].
fn allowed_recipients(
    conn: &Connection,
    sender: UserId,
    conversation: Conversation,
) -> DbResult<Option<Vec<UserId>>> {
    Ok(match conversation {
        Conversation::Direct { low, high } => {
            let other = if sender == low { high } else { low };
            let party = sender == low || sender == high;
            (party && friend_status(conn, sender, other)? == Some(FriendStatus::Accepted))
                .then_some(vec![low, high])
        }
        Conversation::Group(group) => {
            let members = group_member_ids(conn, group)?;
            members.contains(&sender).then_some(members)
        }
    })
}

/// The current members of `group`.
fn group_member_ids(conn: &Connection, group: GroupId) -> DbResult<Vec<UserId>> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id FROM group_members WHERE group_id = ?1 AND left_seq IS NULL",
        )?
        .query_map([group.to_string()], |row| parse_at(row, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

fn get_message(conn: &Connection, id: MessageId) -> DbResult<Option<Message>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
        ))?
        .query_row([id.to_string()], message_row)
        .optional()?)
}

const GROUP_COLUMNS: &str = "g.id, g.name, g.owner, g.created_at";

fn group_row(row: &Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: parse_at(row, 0)?,
        name: row.get(1)?,
        owner: parse_at(row, 2)?,
        created_at: time_at(row, 3)?,
    })
}

fn member_row(row: &Row<'_>) -> rusqlite::Result<GroupMember> {
    Ok(GroupMember {
        user_id: parse_at(row, 0)?,
        role: parse_at(row, 1)?,
        joined_at: time_at(row, 2)?,
    })
}

/// Adds a member unless they are one now; returns whether they were added.
/// A former member becomes current again, with the new role and date, and
/// keeps how far they had read.
fn insert_member(
    conn: &Connection,
    group: GroupId,
    user: UserId,
    role: GroupRole,
    joined_at: OffsetDateTime,
) -> DbResult<bool> {
    let added = conn
        .prepare_cached(
            "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (group_id, user_id) DO UPDATE
             SET role = excluded.role, joined_at = excluded.joined_at, left_seq = NULL
             WHERE left_seq IS NOT NULL",
        )?
        .execute(params![
            group.to_string(),
            user.to_string(),
            role.as_str(),
            ms(joined_at)
        ])?;
    Ok(added == 1)
}

/// `user`'s side of the relationship with `other`.
fn friend_status(conn: &Connection, user: UserId, other: UserId) -> DbResult<Option<FriendStatus>> {
    Ok(conn
        .prepare_cached("SELECT status FROM friendships WHERE user_id = ?1 AND other_id = ?2")?
        .query_row([user.to_string(), other.to_string()], |row| {
            parse_at(row, 0)
        })
        .optional()?)
}

fn set_friend_status(
    conn: &Connection,
    user: UserId,
    other: UserId,
    status: FriendStatus,
    since: OffsetDateTime,
) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO friendships (user_id, other_id, status, since) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, other_id) DO UPDATE SET status = excluded.status, since = excluded.since",
    )?
    .execute(params![
        user.to_string(),
        other.to_string(),
        status.as_str(),
        ms(since)
    ])?;
    Ok(())
}

fn not_yourself(user: UserId, other: UserId) -> DbResult<()> {
    if user == other {
        return Err(Error::bad_request("a user has no relationship with themselves").into());
    }
    Ok(())
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn upsert_user(&self, identity: &Identity, now: OffsetDateTime) -> Result<(User, bool)> {
        let identity = identity.clone();
        self.write(move |conn| {
            let name_key = identity.name.as_deref().map(search_key);
            let email_key = identity.email.as_deref().map(search_key);
            let existing = conn
                .prepare_cached(
                    "SELECT id, created_at, last_seen_at FROM users
                     WHERE issuer = ?1 AND subject = ?2",
                )?
                .query_row([&identity.issuer, &identity.subject], |row| {
                    Ok((
                        parse_at::<UserId>(row, 0)?,
                        time_at(row, 1)?,
                        opt_time_at(row, 2)?,
                    ))
                })
                .optional()?;
            let (id, created_at, last_seen_at, created) = match existing {
                Some((id, created_at, last_seen_at)) => {
                    conn.prepare_cached(
                        "UPDATE users SET email = ?2, name = ?3, picture = ?4,
                                          email_key = ?5, name_key = ?6
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id.to_string(),
                        identity.email,
                        identity.name,
                        identity.picture,
                        email_key,
                        name_key,
                    ])?;
                    (id, created_at, last_seen_at, false)
                }
                None => {
                    let id = UserId::new();
                    conn.prepare_cached(
                        "INSERT INTO users (id, issuer, subject, email, name, picture, created_at,
                                            email_key, name_key, log_key)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                                 (SELECT coalesce(max(log_key), 0) + 1 FROM users))",
                    )?
                    .execute(params![
                        id.to_string(),
                        identity.issuer,
                        identity.subject,
                        identity.email,
                        identity.name,
                        identity.picture,
                        ms(now),
                        email_key,
                        name_key,
                    ])?;
                    (id, stored(now), None, true)
                }
            };
            let user = User {
                id,
                issuer: identity.issuer.clone(),
                subject: identity.subject.clone(),
                email: identity.email.clone(),
                name: identity.name.clone(),
                picture: identity.picture.clone(),
                created_at,
                last_seen_at,
            };
            Ok((user, created))
        })
        .await
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
                .query_row([id.to_string()], user_row)
                .optional()?)
        })
        .await
    }

    async fn search_users(&self, query: &str, limit: u32) -> Result<Vec<User>> {
        // A prefix of the lower-cased key is a range of keys: from the
        // query's key up to it followed by the last code point. A range
        // scan of each key's index needs no LIKE, so `%` and `_` in the
        // query are ordinary characters, and case is folded for all of
        // Unicode, not only ASCII as LIKE would. (A key that continues
        // with U+10FFFF itself, a noncharacter, is missed.)
        let low = search_key(query);
        let high = format!("{low}\u{10FFFF}");
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users
                 WHERE (name_key >= ?1 AND name_key < ?2) OR (email_key >= ?1 AND email_key < ?2)
                 ORDER BY name_key IS NULL, name_key, email_key, id
                 LIMIT ?3"
            ))?;
            let users = statement
                .query_map(params![low, high, i64::from(limit)], user_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(users)
        })
        .await
    }

    async fn set_last_seen(&self, id: UserId, at: OffsetDateTime) -> Result<()> {
        self.write(move |conn| {
            let changed = conn
                .prepare_cached("UPDATE users SET last_seen_at = ?2 WHERE id = ?1")?
                .execute(params![id.to_string(), ms(at)])?;
            if changed == 0 {
                return Err(Error::not_found("no such user").into());
            }
            Ok(())
        })
        .await
    }

    async fn count_users(&self) -> Result<u64> {
        self.read(|conn| {
            let count: i64 = conn
                .prepare_cached("SELECT count(*) FROM users")?
                .query_row([], |row| row.get(0))?;
            Ok(count.max(0) as u64)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: &Session, first_token: &RefreshToken) -> Result<()> {
        if first_token.session_id != session.id || first_token.user_id != session.user_id {
            return Err(Error::bad_request(
                "the first refresh token belongs to another session",
            ));
        }
        let (session, token) = (session.clone(), first_token.clone());
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4)"
            ))?
            .execute(params![
                session.id.to_string(),
                session.user_id.to_string(),
                ms(session.created_at),
                session.revoked_at.map(ms),
            ])?;
            insert_token(conn, &token)
        })
        .await
    }

    async fn get_session(&self, id: SessionId) -> Result<Option<Session>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
                ))?
                .query_row([id.to_string()], session_row)
                .optional()?)
        })
        .await
    }

    async fn spend_refresh_token(
        &self,
        hash: [u8; 32],
        successor: &RefreshToken,
        now: OffsetDateTime,
    ) -> Result<SpendOutcome> {
        let successor = successor.clone();
        self.write(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT t.hash, t.session_id, t.user_id, t.expires_at, t.spent_at,
                            t.successor_hash, s.revoked_at IS NOT NULL
                     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
                     WHERE t.hash = ?1",
                )?
                .query_row([hash], |row| Ok((token_row(row)?, row.get::<_, bool>(6)?)))
                .optional()?;
            let Some((token, revoked)) = found else {
                return Ok(SpendOutcome::Invalid);
            };
            // A revoked family is dead whatever the token's state. A spent
            // token is reported before its expiry, so that reuse of a stolen
            // token is noticed even late.
            if revoked {
                return Ok(SpendOutcome::Invalid);
            }
            if token.spent_at.is_some() {
                return Ok(SpendOutcome::AlreadySpent(token));
            }
            if ms(token.expires_at) <= ms(now) {
                return Ok(SpendOutcome::Invalid);
            }
            conn.prepare_cached(
                "UPDATE refresh_tokens SET spent_at = ?2, successor_hash = ?3 WHERE hash = ?1",
            )?
            .execute(params![hash, ms(now), successor.hash])?;
            insert_token(
                conn,
                &RefreshToken {
                    session_id: token.session_id,
                    user_id: token.user_id,
                    spent_at: None,
                    successor_hash: None,
                    ..successor
                },
            )?;
            Ok(SpendOutcome::Rotated {
                user_id: token.user_id,
                session_id: token.session_id,
            })
        })
        .await
    }

    async fn get_refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshToken>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM refresh_tokens WHERE hash = ?1"
                ))?
                .query_row([hash], token_row)
                .optional()?)
        })
        .await
    }

    async fn revoke_session(&self, id: SessionId, now: OffsetDateTime) -> Result<bool> {
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![id.to_string(), ms(now)])?;
            Ok(changed == 1)
        })
        .await
    }
}

#[async_trait]
impl FriendStore for SqliteStore {
    async fn request_friend(
        &self,
        from: UserId,
        to: UserId,
        now: OffsetDateTime,
    ) -> Result<FriendStatus> {
        self.write(move |conn| {
            not_yourself(from, to)?;
            let mine = friend_status(conn, from, to)?;
            let theirs = friend_status(conn, to, from)?;
            if mine == Some(FriendStatus::Blocked) || theirs == Some(FriendStatus::Blocked) {
                return Err(Error::conflict("one of the users has blocked the other").into());
            }
            match mine {
                // Asking again, or asking a friend, changes nothing.
                Some(status @ (FriendStatus::RequestSent | FriendStatus::Accepted)) => Ok(status),
                Some(FriendStatus::RequestReceived) => {
                    set_friend_status(conn, from, to, FriendStatus::Accepted, now)?;
                    set_friend_status(conn, to, from, FriendStatus::Accepted, now)?;
                    Ok(FriendStatus::Accepted)
                }
                Some(FriendStatus::Blocked) | None => {
                    set_friend_status(conn, from, to, FriendStatus::RequestSent, now)?;
                    set_friend_status(conn, to, from, FriendStatus::RequestReceived, now)?;
                    Ok(FriendStatus::RequestSent)
                }
            }
        })
        .await
    }

    async fn accept_friend(
        &self,
        user: UserId,
        requester: UserId,
        now: OffsetDateTime,
    ) -> Result<()> {
        self.write(move |conn| {
            if friend_status(conn, user, requester)? != Some(FriendStatus::RequestReceived) {
                return Err(Error::not_found("no pending friend request from this user").into());
            }
            set_friend_status(conn, user, requester, FriendStatus::Accepted, now)?;
            set_friend_status(conn, requester, user, FriendStatus::Accepted, now)?;
            Ok(())
        })
        .await
    }

    async fn remove_friend(&self, user: UserId, other: UserId) -> Result<bool> {
        self.write(move |conn| {
            let removed = conn
                .prepare_cached(
                    "DELETE FROM friendships
                     WHERE ((user_id = ?1 AND other_id = ?2) OR (user_id = ?2 AND other_id = ?1))
                       AND status <> 'blocked'",
                )?
                .execute([user.to_string(), other.to_string()])?;
            Ok(removed > 0)
        })
        .await
    }

    async fn block_user(&self, user: UserId, other: UserId, now: OffsetDateTime) -> Result<()> {
        self.write(move |conn| {
            not_yourself(user, other)?;
            // Blocking again keeps the original date.
            conn.prepare_cached(
                "INSERT INTO friendships (user_id, other_id, status, since)
                 VALUES (?1, ?2, 'blocked', ?3)
                 ON CONFLICT (user_id, other_id) DO UPDATE
                 SET status = 'blocked', since = excluded.since WHERE status <> 'blocked'",
            )?
            .execute(params![user.to_string(), other.to_string(), ms(now)])?;
            // The other side's view of a friendship or request goes; their
            // own block of this user, if any, stays.
            conn.prepare_cached(
                "DELETE FROM friendships WHERE user_id = ?1 AND other_id = ?2 AND status <> 'blocked'",
            )?
            .execute([other.to_string(), user.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn unblock_user(&self, user: UserId, other: UserId) -> Result<bool> {
        self.write(move |conn| {
            let removed = conn
                .prepare_cached(
                    "DELETE FROM friendships
                     WHERE user_id = ?1 AND other_id = ?2 AND status = 'blocked'",
                )?
                .execute([user.to_string(), other.to_string()])?;
            Ok(removed == 1)
        })
        .await
    }

    async fn friendship(&self, user: UserId, other: UserId) -> Result<Option<FriendStatus>> {
        self.read(move |conn| friend_status(conn, user, other))
            .await
    }

    async fn list_friends(&self, user: UserId) -> Result<Vec<Friend>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT other_id, status, since FROM friendships WHERE user_id = ?1
                 ORDER BY since, other_id",
            )?;
            let friends = statement
                .query_map([user.to_string()], |row| {
                    Ok(Friend {
                        user_id: parse_at(row, 0)?,
                        status: parse_at(row, 1)?,
                        since: time_at(row, 2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(friends)
        })
        .await
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(
        &self,
        message: &NewMessage,
        recipients: &[UserId],
    ) -> Result<MessageInsert> {
        let message = message.clone();
        let recipients = distinct(recipients);
        self.write(move |tx| insert_message(tx, &message, &recipients))
            .await
    }

    fn send_message(&self, message: NewMessage) -> QueuedWrite<SendOutcome> {
        Box::pin(self.queue_write(move |tx| {
            Ok(
                match allowed_recipients(tx, message.sender, message.conversation)? {
                    Some(recipients) => {
                        SendOutcome::Stored(insert_message(tx, &message, &recipients)?)
                    }
                    None => SendOutcome::NotAllowed,
                },
            )
        }))
    }

    async fn allowed_recipients(
        &self,
        sender: UserId,
        conversation: Conversation,
    ) -> Result<Option<Vec<UserId>>> {
        self.read(move |conn| allowed_recipients(conn, sender, conversation))
            .await
    }

    async fn get_message(&self, id: MessageId) -> Result<Option<Message>> {
        self.read(move |conn| get_message(conn, id)).await
    }

    async fn list_messages(
        &self,
        conversation: Conversation,
        before: Option<u64>,
        readable_until: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // Both bounds come down to one: the newest seq on the page.
        let newest = match before {
            Some(0) => return Ok(Vec::new()),
            Some(before) => before - 1,
            None => u64::MAX,
        };
        let newest = readable_until.map_or(newest, |until| until.min(newest));
        self.read(move |conn| messages_up_to(conn, &conversation.to_string(), newest, limit))
            .await
    }

    async fn delete_message(
        &self,
        id: MessageId,
        now: OffsetDateTime,
        recipients: &[UserId],
    ) -> Result<Option<MessageDeletion>> {
        let recipients = distinct(recipients);
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached(
                    "UPDATE messages SET body = NULL, deleted_at = ?2
                     WHERE id = ?1 AND deleted_at IS NULL",
                )?
                .execute(params![id.to_string(), ms(now)])?;
            let Some(tombstone) = get_message(conn, id)? else {
                return Ok(None);
            };
            if deleted == 0 {
                return Ok(Some(MessageDeletion {
                    message: tombstone,
                    deliveries: Vec::new(),
                }));
            }
            // The logs it was delivered to hold only its id: a replay of
            // its message.created shows the tombstone, not the body.
            let event = Event::MessageDeleted {
                conversation: tombstone.conversation,
                message_id: id,
                message_seq: tombstone.seq,
            };
            let deliveries = deliver(conn, &recipients, event, now)?;
            Ok(Some(MessageDeletion {
                message: tombstone,
                deliveries,
            }))
        })
        .await
    }

    async fn conversation_access(
        &self,
        user: UserId,
        conversation: Conversation,
    ) -> Result<Option<ConversationAccess>> {
        let full = ConversationAccess {
            readable_until: None,
        };
        let group = match conversation {
            // Decided by the id alone, even before the first message.
            Conversation::Direct { low, high } => {
                return Ok((user == low || user == high).then_some(full));
            }
            Conversation::Group(group) => group,
        };
        self.read(move |conn| {
            let left_seq = conn
                .prepare_cached(
                    "SELECT left_seq FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                )?
                .query_row([group.to_string(), user.to_string()], |row| {
                    opt_seq_at(row, 0)
                })
                .optional()?;
            Ok(left_seq.map(|readable_until| ConversationAccess { readable_until }))
        })
        .await
    }

    async fn mark_read(&self, user: UserId, conversation: Conversation, seq: u64) -> Result<()> {
        self.write(move |conn| {
            let text = conversation.to_string();
            // Marking beyond the newest message would hide the messages
            // still to come, so the mark stops at the newest one. Where the
            // user has no row (no part in it, or a direct conversation with
            // no message yet) there is nothing to mark.
            let seq = sql_seq(seq).min(last_seq(conn, &text)?);
            match conversation {
                Conversation::Direct { .. } => conn
                    .prepare_cached(
                        "UPDATE direct_participants SET last_read_seq = max(last_read_seq, ?3)
                         WHERE user_id = ?1 AND conversation = ?2",
                    )?
                    .execute(params![user.to_string(), text, seq])?,
                Conversation::Group(group) => conn
                    .prepare_cached(
                        "UPDATE group_members SET last_read_seq = max(last_read_seq, ?3)
                         WHERE group_id = ?1 AND user_id = ?2",
                    )?
                    .execute(params![group.to_string(), user.to_string(), seq])?,
            };
            Ok(())
        })
        .await
    }

    async fn list_conversations(&self, user: UserId) -> Result<Vec<ConversationSummary>> {
        self.read(move |conn| {
            // One snapshot, so that no summary mixes two states of the
            // database.
            let snapshot = conn.unchecked_transaction()?;
            let mut parts = conn
                .prepare_cached(
                    "SELECT conversation, last_read_seq FROM direct_participants WHERE user_id = ?1",
                )?
                .query_map([user.to_string()], |row| {
                    Ok(Participation {
                        conversation: parse_at(row, 0)?,
                        last_read_seq: seq_at(row, 1)?,
                        readable_until: None,
                        joined_at: None,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            parts.extend(
                conn.prepare_cached(
                    "SELECT group_id, last_read_seq, left_seq, joined_at FROM group_members
                     WHERE user_id = ?1",
                )?
                .query_map([user.to_string()], |row| {
                    Ok(Participation {
                        conversation: Conversation::Group(parse_at(row, 0)?),
                        last_read_seq: seq_at(row, 1)?,
                        readable_until: opt_seq_at(row, 2)?,
                        joined_at: Some(time_at(row, 3)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            );
            let mut summaries = parts
                .into_iter()
                .map(|part| summarize(conn, user, part))
                .collect::<DbResult<Vec<_>>>()?;
            snapshot.commit()?;
            // Newest activity first; the conversation id breaks ties so
            // the order is stable.
            summaries.sort_by(|(a_time, a), (b_time, b)| {
                b_time.cmp(a_time).then_with(|| {
                    b.conversation
                        .to_string()
                        .cmp(&a.conversation.to_string())
                })
            });
            Ok(summaries.into_iter().map(|(_, summary)| summary).collect())
        })
        .await
    }
}

/// A user's part in one conversation, as stored.
struct Participation {
    conversation: Conversation,
    last_read_seq: u64,
    /// Set for a former group member.
    readable_until: Option<u64>,
    /// For a group: when the user (last) joined, their activity until a
    /// message arrives.
    joined_at: Option<OffsetDateTime>,
}

/// The summary of one participation, with the time of its latest activity
/// for ordering.
fn summarize(
    conn: &Connection,
    user: UserId,
    part: Participation,
) -> DbResult<(Option<OffsetDateTime>, ConversationSummary)> {
    let conversation = part.conversation.to_string();
    let newest = part.readable_until.unwrap_or(u64::MAX);
    let last_message = messages_up_to(conn, &conversation, newest, 1)?.pop();
    let unread: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM messages
             WHERE conversation = ?1 AND seq > ?2 AND seq <= ?3
               AND sender <> ?4 AND deleted_at IS NULL",
        )?
        .query_row(
            params![
                conversation,
                sql_seq(part.last_read_seq),
                sql_seq(newest),
                user.to_string()
            ],
            |row| row.get(0),
        )?;
    let activity = last_message
        .as_ref()
        .map(|message| message.created_at)
        .or(part.joined_at);
    Ok((
        activity,
        ConversationSummary {
            conversation: part.conversation,
            last_message,
            unread: unread.max(0) as u64,
            last_read_seq: part.last_read_seq,
            active: part.readable_until.is_none(),
        },
    ))
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn create_group(&self, group: &Group, members: &[UserId]) -> Result<()> {
        let (group, members) = (group.clone(), members.to_vec());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO groups (id, name, owner, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                group.id.to_string(),
                &group.name,
                group.owner.to_string(),
                ms(group.created_at),
            ])?;
            // The owner goes first, so listing the owner among the members
            // does not demote them.
            insert_member(
                conn,
                group.id,
                group.owner,
                GroupRole::Owner,
                group.created_at,
            )?;
            for &member in &members {
                insert_member(conn, group.id, member, GroupRole::Member, group.created_at)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_group(&self, id: GroupId) -> Result<Option<Group>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {GROUP_COLUMNS} FROM groups g WHERE g.id = ?1"
                ))?
                .query_row([id.to_string()], group_row)
                .optional()?)
        })
        .await
    }

    async fn rename_group(&self, id: GroupId, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            let changed = conn
                .prepare_cached("UPDATE groups SET name = ?2 WHERE id = ?1")?
                .execute(params![id.to_string(), name])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn add_group_member(
        &self,
        group: GroupId,
        user: UserId,
        role: GroupRole,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.write(move |conn| insert_member(conn, group, user, role, now))
            .await
    }

    async fn remove_group_member(&self, group: GroupId, user: UserId) -> Result<bool> {
        self.write(move |conn| {
            // The row stays, marked with the last seq they may still read.
            let conversation = Conversation::Group(group).to_string();
            let left_seq = last_seq(conn, &conversation)?;
            let removed = conn
                .prepare_cached(
                    "UPDATE group_members SET left_seq = ?3
                     WHERE group_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
                )?
                .execute(params![group.to_string(), user.to_string(), left_seq])?;
            Ok(removed == 1)
        })
        .await
    }

    async fn group_member(&self, group: GroupId, user: UserId) -> Result<Option<GroupMember>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT user_id, role, joined_at FROM group_members
                     WHERE group_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
                )?
                .query_row([group.to_string(), user.to_string()], member_row)
                .optional()?)
        })
        .await
    }

    async fn list_group_members(&self, group: GroupId) -> Result<Vec<GroupMember>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT user_id, role, joined_at FROM group_members
                 WHERE group_id = ?1 AND left_seq IS NULL
                 ORDER BY joined_at, user_id",
            )?;
            let members = statement
                .query_map([group.to_string()], member_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(members)
        })
        .await
    }

    async fn group_member_ids(&self, group: GroupId) -> Result<Vec<UserId>> {
        self.read(move |conn| group_member_ids(conn, group)).await
    }

    async fn list_user_groups(&self, user: UserId) -> Result<Vec<Group>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM group_members m JOIN groups g ON g.id = m.group_id
                 WHERE m.user_id = ?1 AND m.left_seq IS NULL ORDER BY g.created_at, g.id"
            ))?;
            let groups = statement
                .query_map([user.to_string()], group_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(groups)
        })
        .await
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_events(
        &self,
        events: &[(UserId, Event)],
        now: OffsetDateTime,
    ) -> Result<Vec<Delivery>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Wrapped here, off the writer thread, and once however often the
        // write runs.
        let events: Vec<(UserId, Arc<Event>)> = events
            .iter()
            .map(|(user, event)| (*user, Arc::new(event.clone())))
            .collect();
        self.write(move |conn| {
            events
                .iter()
                .map(|(user, event)| {
                    append_event(conn, *user, event, &LoggedEvent::of(conn, event)?, now)
                })
                .collect()
        })
        .await
    }

    fn feed_commits(&self, feed: CommitFeed) -> bool {
        self.set_commit_feed(feed)
    }

    async fn events_since(&self, user: UserId, since: u64, limit: u32) -> Result<Replay> {
        self.read(move |conn| {
            // One snapshot: a prune committing between the check and the
            // read must not open a gap that the check did not see.
            let snapshot = conn.unchecked_transaction()?;
            let marks = event_marks(conn, user)?;
            // Every pruned seq is at most `pruned`, so one of them is after
            // `since` exactly when `pruned` is.
            if since > marks.latest || since < marks.pruned {
                return Ok(Replay::ResyncRequired {
                    latest_seq: marks.latest,
                });
            }
            let deliveries = conn
                .prepare_cached(&REPLAY_QUERY)?
                .query_map(
                    params![marks.user_key, sql_seq(since), i64::from(limit)],
                    |row| {
                        Ok(Delivery {
                            user_id: user,
                            seq: seq_at(row, 0)?,
                            event: Arc::new(logged_event_at(row)?),
                            created_at: time_at(row, 2)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            snapshot.commit()?;
            Ok(Replay::Events(deliveries))
        })
        .await
    }

    async fn latest_event_seq(&self, user: UserId) -> Result<u64> {
        self.read(move |conn| Ok(event_marks(conn, user)?.latest))
            .await
    }

    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64> {
        let before = ms(before);
        let limits = self.prune_limits();
        let mut removed = 0;
        let mut after = 0;
        loop {
            let cursor = after;
            let (chunk_removed, go_on_after) = self
                .write(move |conn| prune_users_after(conn, cursor, before, limits))
                .await?;
            removed += chunk_removed;
            match go_on_after {
                Some(user) => after = user,
                None => return Ok(removed),
            }
        }
    }
}

/// Prunes the logs of up to `limits.users` users after `after` (by their
/// key in the log; 0 starts at the first), deleting at most `limits.events` events: each
/// user loses its leading events created before `before`, and its row
/// remembers the newest seq pruned. Returns the events removed and the
/// user to go on after, `None` once every user has been looked at. A user
/// cut short by the event limit is looked at again by the next call.
///
/// Only the leading run goes, so a log stays one unbroken run of seqs and
/// the walk stops at its first event to keep. Events enter a log in commit
/// order and are dated as they are created, so an older one behind a newer
/// one is rare, and it is kept only until that newer one is pruned.
fn prune_users_after(
    conn: &Connection,
    after: i64,
    before: i64,
    limits: PruneLimits,
) -> DbResult<(u64, Option<i64>)> {
    let users = conn
        .prepare_cached("SELECT log_key FROM users WHERE log_key > ?1 ORDER BY log_key LIMIT ?2")?
        .query_map(
            params![after, i64::try_from(limits.users).unwrap_or(i64::MAX)],
            |row| row.get::<_, i64>(0),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let event_limit = limits.events as u64;
    let mut removed = 0;
    // The last user whose log is done, for the next call to go on after.
    let mut done_up_to = after;
    for &user in &users {
        // At least one: the loop stops once the limit is reached. A limit
        // past what SQL integers hold means no limit.
        let budget = i64::try_from(event_limit - removed).unwrap_or(i64::MAX);
        let Some(prunable) = prunable_run(conn, user, before, budget)? else {
            done_up_to = user;
            continue;
        };
        removed += conn
            .prepare_cached("DELETE FROM events WHERE user_key = ?1 AND seq <= ?2")?
            .execute(params![user, prunable.last])? as u64;
        conn.prepare_cached(
            "UPDATE users SET pruned_event_seq = max(pruned_event_seq, ?2) WHERE log_key = ?1",
        )?
        .execute(params![user, prunable.last])?;
        if !prunable.whole {
            return Ok((removed, Some(done_up_to)));
        }
        done_up_to = user;
        if removed >= event_limit {
            break;
        }
    }
    let more = users.len() == limits.users || removed >= event_limit;
    Ok((removed, more.then_some(done_up_to)))
}

/// The part of a user's leading run of old events that one write prunes.
struct PrunableRun {
    /// The last seq to prune now.
    last: i64,
    /// Whether that ends the run; if not, the rest waits for the next write.
    whole: bool,
}

/// The first at most `budget` (at least one) of the leading events of the
/// log of the user keyed `user` created before `before`, if there are any. Each lookup
/// goes through the primary key, and none reads more than `budget + 1` of
/// the log's events, however long its old run is.
fn prunable_run(
    conn: &Connection,
    user: i64,
    before: i64,
    budget: i64,
) -> DbResult<Option<PrunableRun>> {
    let first: Option<i64> = conn
        .prepare_cached("SELECT min(seq) FROM events WHERE user_key = ?1")?
        .query_row([user], |row| row.get(0))?;
    let Some(first) = first else {
        return Ok(None);
    };
    // The log is one unbroken run of seqs, so the window holds `budget`
    // events (fewer where the log ends).
    let window_end = first.saturating_add(budget - 1);
    let first_kept: Option<i64> = conn
        .prepare_cached(
            "SELECT seq FROM events WHERE user_key = ?1 AND seq <= ?2 AND created_at >= ?3
             ORDER BY seq LIMIT 1",
        )?
        .query_row(params![user, window_end, before], |row| row.get(0))
        .optional()?;
    if let Some(first_kept) = first_kept {
        return Ok((first_kept > first).then_some(PrunableRun {
            last: first_kept - 1,
            whole: true,
        }));
    }
    let last: i64 = conn
        .prepare_cached("SELECT max(seq) FROM events WHERE user_key = ?1 AND seq <= ?2")?
        .query_row(params![user, window_end], |row| row.get(0))?;
    // Whatever comes after the window decides whether the run goes on.
    let next_created_at: Option<i64> = conn
        .prepare_cached(
            "SELECT created_at FROM events WHERE user_key = ?1 AND seq > ?2 ORDER BY seq LIMIT 1",
        )?
        .query_row(params![user, last], |row| row.get(0))
        .optional()?;
    Ok(Some(PrunableRun {
        last,
        whole: next_created_at.is_none_or(|created_at| created_at >= before),
    }))
}

/// A user's events after a seq, each `message.created` with its message
/// ([`MESSAGE_COLUMNS`] from column 4, see [`logged_event_at`]). Built
/// once: a replay only looks it up in the statement cache.
static REPLAY_QUERY: LazyLock<String> = LazyLock::new(|| {
    let message_columns = MESSAGE_COLUMNS
        .split(", ")
        .map(|column| format!("m.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT e.seq, e.event, e.created_at, e.message_key, {message_columns}
         FROM events e LEFT JOIN messages m ON m.key = e.message_key
         WHERE e.user_key = ?1 AND e.seq > ?2 ORDER BY e.seq LIMIT ?3"
    )
});

/// The event of a replay row (see `events_since`): a `message.created`
/// made from the joined message, or the stored JSON.
fn logged_event_at(row: &Row<'_>) -> rusqlite::Result<Event> {
    let message_key: Option<i64> = row.get(3)?;
    if let Some(message_key) = message_key {
        // Messages are never removed, only tombstoned; a missing one is a
        // damaged database, reported like an unreadable event.
        let joined: Option<String> = row.get(4)?;
        if joined.is_none() {
            return Err(conversion_error(
                3,
                Type::Integer,
                format!("the event's message (key {message_key}) is missing"),
            ));
        }
        return Ok(Event::MessageCreated {
            message: message_row_at(row, 4)?,
        });
    }
    let json: String = row.get(1)?;
    serde_json::from_str(&json).map_err(|error| conversion_error(1, Type::Text, error))
}

/// Where a user's event log stands.
#[derive(Default)]
struct EventMarks {
    /// The user's key in the log (`users.log_key`); none for a user never
    /// seen.
    user_key: Option<i64>,
    /// The newest seq.
    latest: u64,
    /// The highest seq pruned.
    pruned: u64,
}

/// Where `user`'s event log stands; zeros for a user never seen.
fn event_marks(conn: &Connection, user: UserId) -> DbResult<EventMarks> {
    Ok(conn
        .prepare_cached(
            "SELECT log_key, last_event_seq, pruned_event_seq FROM users WHERE id = ?1",
        )?
        .query_row([user.to_string()], |row| {
            Ok(EventMarks {
                user_key: row.get(0)?,
                latest: seq_at(row, 1)?,
                pruned: seq_at(row, 2)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

const CALL_COLUMNS: &str = "id, caller, callee, started_at, answered_at, ended_at, outcome, reason";

fn call_row(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        id: parse_at(row, 0)?,
        caller: parse_at(row, 1)?,
        callee: parse_at(row, 2)?,
        started_at: time_at(row, 3)?,
        answered_at: opt_time_at(row, 4)?,
        ended_at: opt_time_at(row, 5)?,
        outcome: opt_parse_at(row, 6)?,
        reason: row.get(7)?,
    })
}

/// `?1`'s calls started before `?2`, newest first, at most `?3`: the newest
/// `?3` of each side, each a range scan of its index, merged. A call to
/// oneself is taken from the caller side only, so it is listed once.
const LIST_CALLS: &str = "
    SELECT * FROM (SELECT id, caller, callee, started_at, answered_at, ended_at, outcome, reason
                   FROM calls WHERE caller = ?1 AND started_at < ?2
                   ORDER BY started_at DESC, id DESC LIMIT ?3)
    UNION ALL
    SELECT * FROM (SELECT id, caller, callee, started_at, answered_at, ended_at, outcome, reason
                   FROM calls WHERE callee = ?1 AND caller <> ?1 AND started_at < ?2
                   ORDER BY started_at DESC, id DESC LIMIT ?3)
    ORDER BY started_at DESC, id DESC LIMIT ?3";

/// Oldest first, from the partial index of calls without an outcome.
const UNFINISHED_CALLS: &str = "
    SELECT id, caller, callee, started_at, answered_at, ended_at, outcome, reason
    FROM calls WHERE outcome IS NULL ORDER BY started_at, id";

#[async_trait]
impl CallStore for SqliteStore {
    async fn insert_call(&self, record: &CallRecord) -> Result<()> {
        // A finished call says when it ended; one still on has no end.
        if record.outcome.is_some() != record.ended_at.is_some() {
            return Err(Error::bad_request(
                "a call has an outcome exactly when it has an end time",
            ));
        }
        let record = record.clone();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO calls ({CALL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                record.id.to_string(),
                record.caller.to_string(),
                record.callee.to_string(),
                ms(record.started_at),
                record.answered_at.map(ms),
                record.ended_at.map(ms),
                record.outcome.map(CallOutcome::as_str),
                record.reason,
            ])?;
            Ok(())
        })
        .await
    }

    async fn mark_call_answered(&self, id: CallId, at: OffsetDateTime) -> Result<bool> {
        self.write(move |conn| {
            // Answering twice keeps the first time.
            let changed = conn
                .prepare_cached(
                    "UPDATE calls SET answered_at = coalesce(answered_at, ?2)
                     WHERE id = ?1 AND outcome IS NULL",
                )?
                .execute(params![id.to_string(), ms(at)])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn finish_call(
        &self,
        id: CallId,
        outcome: CallOutcome,
        reason: &str,
        ended_at: OffsetDateTime,
    ) -> Result<bool> {
        let reason = reason.to_owned();
        self.write(move |conn| {
            // The condition makes the first ending win: a later one finds
            // the outcome set and changes nothing.
            let changed = conn
                .prepare_cached(
                    "UPDATE calls SET outcome = ?2, reason = ?3, ended_at = ?4
                     WHERE id = ?1 AND outcome IS NULL",
                )?
                .execute(params![
                    id.to_string(),
                    outcome.as_str(),
                    reason,
                    ms(ended_at)
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn get_call(&self, id: CallId) -> Result<Option<CallRecord>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"))?
                .query_row([id.to_string()], call_row)
                .optional()?)
        })
        .await
    }

    async fn list_calls(
        &self,
        user: UserId,
        before: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<CallRecord>> {
        // No stored time reaches i64::MAX, so it stands for no bound.
        let before = before.map_or(i64::MAX, ms);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(LIST_CALLS)?
                .query_map(
                    params![user.to_string(), before, i64::from(limit)],
                    call_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn unfinished_calls(&self) -> Result<Vec<CallRecord>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(UNFINISHED_CALLS)?
                .query_map([], call_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

/// The longest STUN URL an override may name, in bytes (the schema checks
/// the same bound).
const MAX_STUN_URL_BYTES: usize = 512;

/// Every override, in the order its URL was first edited, url breaking
/// ties.
const STUN_OVERRIDES: &str = "SELECT url, added FROM stun_overrides ORDER BY first_set_at, url";

#[async_trait]
impl IceStore for SqliteStore {
    async fn stun_overrides(&self) -> Result<Vec<(String, bool)>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(STUN_OVERRIDES)?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_stun_override(&self, url: &str, added: bool, now: OffsetDateTime) -> Result<()> {
        if url.is_empty() {
            return Err(Error::bad_request("a STUN URL cannot be empty"));
        }
        if url.len() > MAX_STUN_URL_BYTES {
            return Err(Error::bad_request(format!(
                "a STUN URL is at most {MAX_STUN_URL_BYTES} bytes"
            )));
        }
        let url = url.to_owned();
        self.write(move |conn| {
            // A later edit replaces the earlier one but keeps its place.
            conn.prepare_cached(
                "INSERT INTO stun_overrides (url, added, first_set_at, updated_at)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (url) DO UPDATE
                 SET added = excluded.added, updated_at = excluded.updated_at",
            )?
            .execute(params![url, added, ms(now)])?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        // A store that can read but no longer write is not ready.
        if !self.writer_running() {
            return Err(Error::unavailable("database writer stopped"));
        }
        self.read(|conn| {
            conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps of `sql`'s query plan, as `EXPLAIN QUERY PLAN` words them.
    fn plan(sql: &str) -> Vec<String> {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let count = statement.parameter_count();
        let params: Vec<i64> = vec![1; count];
        statement
            .query_map(rusqlite::params_from_iter(params), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Each side of a user's history is a range scan of its own index, in
    /// the listing's order; only the at most `limit` rows each side yields
    /// are sorted again to merge them. No step reads the whole table.
    #[test]
    fn list_calls_searches_both_indexes() {
        let steps = plan(LIST_CALLS);
        for index in [
            "calls_by_caller (caller=? AND started_at<?)",
            "calls_by_callee (callee=? AND started_at<?)",
        ] {
            assert!(
                steps
                    .iter()
                    .any(|step| step == &format!("SEARCH calls USING INDEX {index}")),
                "{index} unused: {steps:#?}"
            );
        }
        assert!(
            !steps.iter().any(|step| step.starts_with("SCAN calls")),
            "{steps:#?}"
        );
    }

    /// The calls still on come from the partial index, already in order.
    #[test]
    fn unfinished_calls_scan_only_the_partial_index() {
        assert_eq!(
            plan(UNFINISHED_CALLS),
            vec!["SCAN calls USING INDEX calls_unfinished"]
        );
    }
}
