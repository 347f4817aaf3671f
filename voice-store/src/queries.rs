//! The SQL behind each [`Store`] method. Every method is one closure sent
//! to a store thread: writes run atomically in their own savepoint, so
//! read-then-write logic (a mutual friend request, spending a token) needs
//! no further locking.

use std::str::FromStr;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use voice_core::Error;
use voice_core::error::Result;
use voice_core::ids::{GroupId, MessageId, SessionId, UserId};
use voice_core::model::{
    Conversation, Friend, FriendStatus, Group, GroupMember, GroupRole, Identity, Message,
    NewMessage, RefreshToken, Session, SpendOutcome, User,
};
use voice_core::store::{FriendStore, GroupStore, MessageStore, SessionStore, Store, UserStore};

use crate::error::DbResult;
use crate::store::SqliteStore;

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

const USER_COLUMNS: &str = "id, issuer, subject, email, name, picture, created_at";

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: parse_at(row, 0)?,
        issuer: row.get(1)?,
        subject: row.get(2)?,
        email: row.get(3)?,
        name: row.get(4)?,
        picture: row.get(5)?,
        created_at: time_at(row, 6)?,
    })
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

const MESSAGE_COLUMNS: &str = "id, conversation, sender, body, client_id, created_at, deleted_at";

fn message_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: parse_at(row, 0)?,
        conversation: parse_at(row, 1)?,
        sender: parse_at(row, 2)?,
        body: row.get(3)?,
        client_id: row.get(4)?,
        created_at: time_at(row, 5)?,
        deleted_at: opt_time_at(row, 6)?,
    })
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

/// Adds a member unless already there; returns whether it was added.
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
             ON CONFLICT (group_id, user_id) DO NOTHING",
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
            let existing = conn
                .prepare_cached(
                    "SELECT id, created_at FROM users WHERE issuer = ?1 AND subject = ?2",
                )?
                .query_row([&identity.issuer, &identity.subject], |row| {
                    Ok((parse_at::<UserId>(row, 0)?, time_at(row, 1)?))
                })
                .optional()?;
            let (id, created_at, created) = match existing {
                Some((id, created_at)) => {
                    conn.prepare_cached(
                        "UPDATE users SET email = ?2, name = ?3, picture = ?4 WHERE id = ?1",
                    )?
                    .execute(params![
                        id.to_string(),
                        identity.email,
                        identity.name,
                        identity.picture
                    ])?;
                    (id, created_at, false)
                }
                None => {
                    let id = UserId::new();
                    conn.prepare_cached(&format!(
                        "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ))?
                    .execute(params![
                        id.to_string(),
                        identity.issuer,
                        identity.subject,
                        identity.email,
                        identity.name,
                        identity.picture,
                        ms(now)
                    ])?;
                    (id, stored(now), true)
                }
            };
            let user = User {
                id,
                issuer: identity.issuer,
                subject: identity.subject,
                email: identity.email,
                name: identity.name,
                picture: identity.picture,
                created_at,
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
    async fn insert_message(&self, message: &NewMessage) -> Result<Message> {
        let message = message.clone();
        self.write(move |conn| {
            if let Some(client_id) = &message.client_id {
                let first = conn
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender = ?1 AND client_id = ?2"
                    ))?
                    .query_row([message.sender.to_string(), client_id.clone()], message_row)
                    .optional()?;
                if let Some(first) = first {
                    return Ok(first);
                }
            }
            conn.prepare_cached(
                "INSERT INTO messages (id, conversation, sender, body, client_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                message.id.to_string(),
                message.conversation.to_string(),
                message.sender.to_string(),
                message.body,
                message.client_id,
                ms(message.created_at),
            ])?;
            Ok(Message {
                id: message.id,
                conversation: message.conversation,
                sender: message.sender,
                body: Some(message.body),
                client_id: message.client_id,
                created_at: stored(message.created_at),
                deleted_at: None,
            })
        })
        .await
    }

    async fn get_message(&self, id: MessageId) -> Result<Option<Message>> {
        self.read(move |conn| get_message(conn, id)).await
    }

    async fn list_messages(
        &self,
        conversation: Conversation,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.read(move |conn| {
            // Two statements rather than `(?2 IS NULL OR id < ?2)`, so each
            // is a plain range scan of the (conversation, id) index.
            let conversation = conversation.to_string();
            let limit = i64::from(limit);
            let rows = match before {
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1
                         ORDER BY id DESC LIMIT ?2"
                    ))?
                    .query_map(params![conversation, limit], message_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Some(before) => conn
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND id < ?2
                         ORDER BY id DESC LIMIT ?3"
                    ))?
                    .query_map(
                        params![conversation, before.to_string(), limit],
                        message_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })
        .await
    }

    async fn delete_message(&self, id: MessageId, now: OffsetDateTime) -> Result<Option<Message>> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE messages SET body = NULL, deleted_at = ?2
                 WHERE id = ?1 AND deleted_at IS NULL",
            )?
            .execute(params![id.to_string(), ms(now)])?;
            get_message(conn, id)
        })
        .await
    }
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
                group.name,
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
            for member in members {
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
                .execute([id.to_string(), name])?;
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
            let removed = conn
                .prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
                .execute([group.to_string(), user.to_string()])?;
            Ok(removed == 1)
        })
        .await
    }

    async fn group_member(&self, group: GroupId, user: UserId) -> Result<Option<GroupMember>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT user_id, role, joined_at FROM group_members
                     WHERE group_id = ?1 AND user_id = ?2",
                )?
                .query_row([group.to_string(), user.to_string()], member_row)
                .optional()?)
        })
        .await
    }

    async fn list_group_members(&self, group: GroupId) -> Result<Vec<GroupMember>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT user_id, role, joined_at FROM group_members WHERE group_id = ?1
                 ORDER BY joined_at, user_id",
            )?;
            let members = statement
                .query_map([group.to_string()], member_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(members)
        })
        .await
    }

    async fn list_user_groups(&self, user: UserId) -> Result<Vec<Group>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM group_members m JOIN groups g ON g.id = m.group_id
                 WHERE m.user_id = ?1 ORDER BY g.created_at, g.id"
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
