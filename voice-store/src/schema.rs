//! The database schema as embedded, ordered migrations. `PRAGMA
//! user_version` records how many have been applied; each runs in its own
//! transaction with the version bump, so a crash mid-upgrade leaves the
//! previous version intact.
//!
//! Conventions: ids are TEXT holding hyphenated UUIDs (their text order is
//! their creation order); timestamps are INTEGER Unix milliseconds;
//! sequence numbers (`seq`) are INTEGER counting from 1; tables are STRICT
//! so a wrong type is an error instead of a silent conversion.
//!
//! Never edit a released migration: append a new one.

use rusqlite::{Connection, TransactionBehavior};
use voice_core::Error;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE users (
        id TEXT PRIMARY KEY NOT NULL,
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        email TEXT,
        name TEXT,
        picture TEXT,
        created_at INTEGER NOT NULL,
        UNIQUE (issuer, subject)
    ) STRICT;

    CREATE TABLE sessions (
        id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id),
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) STRICT;
    CREATE INDEX sessions_by_user ON sessions (user_id);

    CREATE TABLE refresh_tokens (
        hash BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
        session_id TEXT NOT NULL REFERENCES sessions (id),
        user_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        spent_at INTEGER,
        successor_hash BLOB CHECK (successor_hash IS NULL OR length(successor_hash) = 32)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

    -- One row per side: (user_id, other_id) is user_id's view. The primary
    -- key doubles as the index by user.
    CREATE TABLE friendships (
        user_id TEXT NOT NULL REFERENCES users (id),
        other_id TEXT NOT NULL REFERENCES users (id),
        status TEXT NOT NULL
            CHECK (status IN ('request_sent', 'request_received', 'accepted', 'blocked')),
        since INTEGER NOT NULL,
        PRIMARY KEY (user_id, other_id),
        CHECK (user_id <> other_id)
    ) STRICT, WITHOUT ROWID;

    -- conversation is the text form of voice_core::model::Conversation.
    -- body is NULL once deleted (a tombstone).
    CREATE TABLE messages (
        id TEXT PRIMARY KEY NOT NULL,
        conversation TEXT NOT NULL,
        sender TEXT NOT NULL REFERENCES users (id),
        body TEXT,
        client_id TEXT,
        created_at INTEGER NOT NULL,
        deleted_at INTEGER
    ) STRICT;
    CREATE INDEX messages_by_conversation ON messages (conversation, id);
    CREATE UNIQUE INDEX messages_by_client_id ON messages (sender, client_id)
        WHERE client_id IS NOT NULL;

    CREATE TABLE groups (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        owner TEXT NOT NULL REFERENCES users (id),
        created_at INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE group_members (
        group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users (id),
        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (group_id, user_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX group_members_by_user ON group_members (user_id);
    ",
    // 2: messaging (per-conversation seq, read state, former group
    // members), user search and presence, and each user's event log.
    "
    ALTER TABLE users ADD COLUMN last_seen_at INTEGER;
    -- Name and email lower-cased by the store (Unicode, character by
    -- character), for case-insensitive prefix search as a range scan.
    -- SQL's lower() folds ASCII only: rows from before this migration get
    -- that until upsert_user refreshes them at the user's next sign-in.
    ALTER TABLE users ADD COLUMN name_key TEXT;
    ALTER TABLE users ADD COLUMN email_key TEXT;
    UPDATE users SET name_key = lower(name), email_key = lower(email);
    CREATE INDEX users_by_name_key ON users (name_key);
    CREATE INDEX users_by_email_key ON users (email_key);
    -- The seq of the user's newest event, and the highest seq ever pruned
    -- from their log. Kept here rather than derived from the log, so that
    -- pruning never restarts the numbering or hides that it happened.
    ALTER TABLE users ADD COLUMN last_event_seq INTEGER NOT NULL DEFAULT 0
        CHECK (last_event_seq >= 0);
    ALTER TABLE users ADD COLUMN pruned_event_seq INTEGER NOT NULL DEFAULT 0
        CHECK (pruned_event_seq >= 0);

    -- Messages gain seq: 1, 2, 3... per conversation. The table is rebuilt
    -- to make it NOT NULL; existing messages are numbered in id order,
    -- which is their creation order.
    CREATE TABLE messages_v2 (
        id TEXT PRIMARY KEY NOT NULL,
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq > 0),
        sender TEXT NOT NULL REFERENCES users (id),
        body TEXT,
        client_id TEXT,
        created_at INTEGER NOT NULL,
        deleted_at INTEGER
    ) STRICT;
    INSERT INTO messages_v2
        (id, conversation, seq, sender, body, client_id, created_at, deleted_at)
    SELECT id, conversation, row_number() OVER (PARTITION BY conversation ORDER BY id),
           sender, body, client_id, created_at, deleted_at
    FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v2 RENAME TO messages;
    -- History pages, the next seq (max + 1) and unread counts.
    CREATE UNIQUE INDEX messages_by_seq ON messages (conversation, seq);
    CREATE UNIQUE INDEX messages_by_client_id ON messages (sender, client_id)
        WHERE client_id IS NOT NULL;

    -- The two users of each direct conversation that has a message, and
    -- how far each has read. (A group's users are its group_members.)
    CREATE TABLE direct_participants (
        user_id TEXT NOT NULL REFERENCES users (id),
        conversation TEXT NOT NULL,
        last_read_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
        PRIMARY KEY (user_id, conversation)
    ) STRICT, WITHOUT ROWID;
    -- conversation is 'd:' || low || ':' || high with hyphenated UUIDs.
    -- History from before read tracking counts as read.
    INSERT INTO direct_participants (user_id, conversation, last_read_seq)
    SELECT u.id, c.conversation, c.last_seq
    FROM (SELECT conversation, max(seq) AS last_seq FROM messages
          WHERE conversation LIKE 'd:%' GROUP BY conversation) AS c
    JOIN users u ON u.id IN (substr(c.conversation, 3, 36), substr(c.conversation, 40, 36));

    -- A member who leaves keeps their row, with the last seq they may read;
    -- left_seq is NULL while they are a member.
    ALTER TABLE group_members ADD COLUMN left_seq INTEGER CHECK (left_seq >= 0);
    ALTER TABLE group_members ADD COLUMN last_read_seq INTEGER NOT NULL DEFAULT 0
        CHECK (last_read_seq >= 0);
    UPDATE group_members SET last_read_seq = coalesce(
        (SELECT max(seq) FROM messages WHERE conversation = 'g:' || group_members.group_id), 0);

    -- Each user's events, for replay after a reconnect. event is the JSON
    -- of voice_core::wire::Event. message_id is set on message.created
    -- events, so that deleting the message erases its body here too.
    CREATE TABLE events (
        user_id TEXT NOT NULL REFERENCES users (id),
        seq INTEGER NOT NULL CHECK (seq > 0),
        event TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        message_id TEXT,
        PRIMARY KEY (user_id, seq)
    ) STRICT, WITHOUT ROWID;
    -- Pruning by age. Like every index of a WITHOUT ROWID table it holds
    -- the primary key too, so it covers the per-user high-water mark that
    -- pruning records.
    CREATE INDEX events_by_created_at ON events (created_at);
    CREATE INDEX events_by_message ON events (message_id) WHERE message_id IS NOT NULL;
    ",
    // 3: call history.
    "
    -- One row per call. outcome is NULL while the call is on; ended_at is
    -- set exactly when outcome is, so a finished call always says when.
    -- outcome is voice_core::model::CallOutcome::as_str.
    CREATE TABLE calls (
        id TEXT PRIMARY KEY NOT NULL,
        caller TEXT NOT NULL REFERENCES users (id),
        callee TEXT NOT NULL REFERENCES users (id),
        started_at INTEGER NOT NULL,
        answered_at INTEGER,
        ended_at INTEGER,
        outcome TEXT CHECK (outcome IN
            ('answered', 'missed', 'rejected', 'cancelled', 'busy', 'failed')),
        reason TEXT,
        CHECK ((outcome IS NULL) = (ended_at IS NULL))
    ) STRICT;
    -- A user's history is two range scans, one per side, each already in
    -- the listing's order (newest first, id breaking ties).
    CREATE INDEX calls_by_caller ON calls (caller, started_at, id);
    CREATE INDEX calls_by_callee ON calls (callee, started_at, id);
    -- The calls still on: after a restart, the ones the server lost.
    CREATE INDEX calls_unfinished ON calls (started_at, id) WHERE outcome IS NULL;
    ",
    // 4: admins' runtime edits to the STUN server list.
    "
    -- One row per edited URL: added (1) or removed (0). A later edit of the
    -- same URL replaces added and updated_at but keeps first_set_at, which
    -- with url orders the list. url is at most 512 bytes, not characters.
    CREATE TABLE stun_overrides (
        url TEXT PRIMARY KEY NOT NULL
            CHECK (length(CAST(url AS BLOB)) BETWEEN 1 AND 512),
        added INTEGER NOT NULL CHECK (added IN (0, 1)),
        first_set_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
    ",
    // 5: message.created events point at their message.
    "
    -- A message.created event keeps only message_id, with event empty: the
    -- message row is the event, read with it on replay. Sending a message
    -- then stores its body once, not once per recipient, and deleting it
    -- leaves nothing to erase in the logs (the replay shows the tombstone).
    UPDATE events SET event = '' WHERE message_id IS NOT NULL;
    DROP INDEX events_by_message;
    ",
    // 6: pruning walks each user's log from its old end.
    "
    -- Every event paid for an entry here, for pruning alone: a message to
    -- a group of 100 wrote 99 of them. Pruning now takes each user's
    -- oldest events in seq order, through the primary key.
    DROP INDEX events_by_created_at;
    ",
    // 7: the event log without a foreign key.
    "
    -- Its check was a second lookup of the user's row on every event (99
    -- for a message to a group of 100): every append reads that row for
    -- the user's next seq first, which refuses an unknown user, and users
    -- are never deleted. SQLite cannot drop a constraint, so the table is
    -- rebuilt.
    CREATE TABLE events_v7 (
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq > 0),
        event TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        message_id TEXT,
        PRIMARY KEY (user_id, seq)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO events_v7 (user_id, seq, event, created_at, message_id)
    SELECT user_id, seq, event, created_at, message_id FROM events;
    DROP TABLE events;
    ALTER TABLE events_v7 RENAME TO events;
    ",
    // 8: the event log keyed by integers.
    "
    -- Each user and each message gets a small integer key, and the event
    -- log holds those instead of two 36-character ids: its rows shrink
    -- from about 90 bytes to about 20, so a busy log splits pages a
    -- fifth as often and its key comparisons are integer ones.
    --
    -- A user's key is a column of its own: SQLite may renumber the rowids
    -- of a table without an INTEGER PRIMARY KEY when it vacuums, and
    -- users cannot be rebuilt without lifting the foreign keys that point
    -- at them. The store sets it for every new user.
    ALTER TABLE users ADD COLUMN log_key INTEGER CHECK (log_key > 0);
    UPDATE users SET log_key = rowid;
    CREATE UNIQUE INDEX users_by_log_key ON users (log_key);

    -- A message's key is its rowid, made an INTEGER PRIMARY KEY so that
    -- it is stable; the table had a rowid and an index by id before, and
    -- has the same two now.
    CREATE TABLE messages_v8 (
        key INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq > 0),
        sender TEXT NOT NULL REFERENCES users (id),
        body TEXT,
        client_id TEXT,
        created_at INTEGER NOT NULL,
        deleted_at INTEGER
    ) STRICT;
    INSERT INTO messages_v8
        (key, id, conversation, seq, sender, body, client_id, created_at, deleted_at)
    SELECT rowid, id, conversation, seq, sender, body, client_id, created_at, deleted_at
    FROM messages;

    -- A message.created event with no message (never written: messages
    -- are only tombstoned) would keep a NULL key and fail on replay as an
    -- unreadable event, as it did before.
    CREATE TABLE events_v8 (
        user_key INTEGER NOT NULL,
        seq INTEGER NOT NULL CHECK (seq > 0),
        event TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        message_key INTEGER,
        PRIMARY KEY (user_key, seq)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO events_v8 (user_key, seq, event, created_at, message_key)
    SELECT u.log_key, e.seq, e.event, e.created_at, m.key
    FROM events e
    JOIN users u ON u.id = e.user_id
    LEFT JOIN messages_v8 m ON m.id = e.message_id;
    DROP TABLE events;
    ALTER TABLE events_v8 RENAME TO events;

    DROP TABLE messages;
    ALTER TABLE messages_v8 RENAME TO messages;
    CREATE UNIQUE INDEX messages_by_seq ON messages (conversation, seq);
    CREATE UNIQUE INDEX messages_by_client_id ON messages (sender, client_id)
        WHERE client_id IS NOT NULL;
    ",
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], refusing one that is
/// newer: an older binary must not write to a schema it does not know.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), Error> {
    migrate_with(conn, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, migrations: &[&str]) -> Result<(), Error> {
    let known = migrations.len() as i64;
    loop {
        // The version is read inside the write lock, so two processes
        // opening the same new file cannot both apply a migration.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| open_error("begin migration", &e))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| open_error("read schema version", &e))?;
        if version > known {
            return Err(Error::unavailable(format!(
                "database schema version {version} is newer than this build of voice \
                 understands (up to {known}); run a newer voice or restore a backup"
            )));
        }
        let Some(sql) = usize::try_from(version)
            .ok()
            .and_then(|v| migrations.get(v))
        else {
            if version < 0 {
                return Err(Error::unavailable(format!(
                    "database schema version {version} is not one voice ever wrote"
                )));
            }
            return Ok(());
        };
        tx.execute_batch(sql)
            .map_err(|e| open_error("apply migration", &e))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(|e| open_error("record schema version", &e))?;
        tx.commit()
            .map_err(|e| open_error("commit migration", &e))?;
        tracing::info!(version = version + 1, "applied database migration");
    }
}

/// Errors while opening are for the operator starting the server, so they
/// say what failed.
pub(crate) fn open_error(what: &str, error: &rusqlite::Error) -> Error {
    Error::unavailable(format!("cannot open the database: {what}: {error}"))
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use voice_core::UserId;
    use voice_core::model::Conversation;
    use voice_core::store::{EventStore, MessageStore, UserStore};
    use voice_core::wire::{Event, Replay};

    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn migrations_apply_in_order_and_only_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        let steps = [
            "CREATE TABLE a (x INTEGER)",
            "ALTER TABLE a ADD COLUMN y INTEGER",
        ];
        migrate_with(&mut conn, &steps[..1]).unwrap();
        assert_eq!(version(&conn), 1);
        migrate_with(&mut conn, &steps).unwrap();
        assert_eq!(version(&conn), 2);
        // Running again must not re-apply (the ALTER would fail).
        migrate_with(&mut conn, &steps).unwrap();
        conn.execute("INSERT INTO a (x, y) VALUES (1, 2)", [])
            .unwrap();
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let steps = [
            "CREATE TABLE a (x INTEGER)",
            "CREATE TABLE b (y INTEGER); nonsense",
        ];
        assert!(migrate_with(&mut conn, &steps).is_err());
        assert_eq!(version(&conn), 1);
        let b_exists: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'b'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(b_exists, 0);
    }

    /// A database of version 1 with data: after migration 2 its messages
    /// are numbered per conversation in id order, direct conversations
    /// know their (existing) users, and history counts as read.
    #[test]
    fn migration_2_upgrades_existing_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..1]).unwrap();
        let id = |n: u32| format!("00000000-0000-7000-8000-{n:012x}");
        let (a, b, ghost) = (id(0xa), id(0xb), id(0xf));
        let (direct, with_ghost) = (format!("d:{a}:{b}"), format!("d:{a}:{ghost}"));
        let group = id(0x100);
        let in_group = format!("g:{group}");
        for user in [&a, &b] {
            conn.execute(
                "INSERT INTO users (id, issuer, subject, name, email, created_at)
                 VALUES (?1, 'https://old.example', ?1, 'Ann ÉLAN', 'Ann@Example.com', 0)",
                [user],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO groups (id, name, owner, created_at) VALUES (?1, 'g', ?2, 0)",
            [&group, &a],
        )
        .unwrap();
        for user in [&a, &b] {
            conn.execute(
                "INSERT INTO group_members (group_id, user_id, role, joined_at)
                 VALUES (?1, ?2, 'member', 0)",
                [&group, user],
            )
            .unwrap();
        }
        // Inserted out of id order: the id decides the seq.
        for (message, conversation) in [
            (3, &direct),
            (1, &direct),
            (2, &with_ghost),
            (4, &in_group),
            (5, &direct),
            (6, &in_group),
        ] {
            conn.execute(
                "INSERT INTO messages (id, conversation, sender, body, created_at)
                 VALUES (?1, ?2, ?3, 'old', 0)",
                [&id(message), conversation, &a],
            )
            .unwrap();
        }

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let rows = |sql: &str| -> Vec<(String, i64)> {
            let mut statement = conn.prepare(sql).unwrap();
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(
            rows("SELECT id, seq FROM messages ORDER BY id"),
            vec![
                (id(1), 1),
                (id(2), 1),
                (id(3), 2),
                (id(4), 1),
                (id(5), 3),
                (id(6), 2),
            ]
        );
        assert_eq!(
            rows(
                "SELECT user_id || ' ' || conversation, last_read_seq FROM direct_participants
                 ORDER BY user_id, conversation"
            ),
            vec![
                (format!("{a} {direct}"), 3),
                (format!("{a} {with_ghost}"), 1),
                (format!("{b} {direct}"), 3),
            ],
            "a user who never existed gets no row"
        );
        assert_eq!(
            rows(
                "SELECT user_id, last_read_seq FROM group_members WHERE left_seq IS NULL
                 ORDER BY user_id"
            ),
            vec![(a.clone(), 2), (b.clone(), 2)]
        );
        assert_eq!(
            rows("SELECT name_key || ' ' || email_key, last_event_seq FROM users LIMIT 1"),
            vec![("ann Élan ann@example.com".to_owned(), 0)],
            "SQL's lower() folds ASCII only, until the next sign-in"
        );
        let seq_is_checked = conn.execute(
            "INSERT INTO messages (id, conversation, seq, sender, created_at)
             VALUES ('x', 'd:x:y', 0, ?1, 0)",
            [&a],
        );
        assert!(seq_is_checked.is_err());
        let foreign_key_errors: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(foreign_key_errors, 0);
    }

    /// A database of version 2 with users gains an empty call history
    /// whose constraints hold: known users only, known outcomes only, an
    /// end time exactly with an outcome.
    #[test]
    fn migration_3_adds_call_history() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..2]).unwrap();
        let id = |n: u32| format!("00000000-0000-7000-8000-{n:012x}");
        let (a, b, ghost) = (id(0xa), id(0xb), id(0xf));
        for user in [&a, &b] {
            conn.execute(
                "INSERT INTO users (id, issuer, subject, created_at)
                 VALUES (?1, 'https://old.example', ?1, 0)",
                [user],
            )
            .unwrap();
        }

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let users: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
            .unwrap();
        assert_eq!(users, 2, "existing data stays");
        let insert =
            |id: u32, caller: &str, callee: &str, ended_at: Option<i64>, outcome: Option<&str>| {
                conn.execute(
                    "INSERT INTO calls (id, caller, callee, started_at, ended_at, outcome)
                 VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                    rusqlite::params![format!("call-{id}"), caller, callee, ended_at, outcome],
                )
            };
        insert(1, &a, &b, None, None).unwrap();
        insert(2, &b, &a, Some(0), Some("busy")).unwrap();
        assert!(insert(3, &a, &ghost, None, None).is_err(), "unknown callee");
        assert!(insert(4, &ghost, &a, None, None).is_err(), "unknown caller");
        assert!(
            insert(5, &a, &b, Some(0), Some("hung_up")).is_err(),
            "unknown outcome"
        );
        assert!(
            insert(6, &a, &b, Some(0), None).is_err(),
            "an end without an outcome"
        );
        assert!(
            insert(7, &a, &b, None, Some("missed")).is_err(),
            "an outcome without an end"
        );
        assert!(insert(1, &b, &a, None, None).is_err(), "a duplicate id");
        let started_at_is_strict = conn.execute(
            "INSERT INTO calls (id, caller, callee, started_at) VALUES ('x', ?1, ?2, 'soon')",
            [&a, &b],
        );
        assert!(started_at_is_strict.is_err());
        let unfinished: Vec<String> = conn
            .prepare("SELECT id FROM calls INDEXED BY calls_unfinished WHERE outcome IS NULL")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(unfinished, vec!["call-1".to_owned()]);
    }

    /// A database of version 3 with users and a call gains an empty list
    /// of STUN overrides, one row per URL, whose constraints hold: added is
    /// 0 or 1, a URL is 1 to 512 bytes, times are integers.
    #[test]
    fn migration_4_adds_stun_overrides() {
        use rusqlite::types::Value::{Integer, Text};

        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..3]).unwrap();
        assert_eq!(version(&conn), 3);
        let id = |n: u32| format!("00000000-0000-7000-8000-{n:012x}");
        let (a, b) = (id(0xa), id(0xb));
        for user in [&a, &b] {
            conn.execute(
                "INSERT INTO users (id, issuer, subject, created_at)
                 VALUES (?1, 'https://old.example', ?1, 0)",
                [user],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO calls (id, caller, callee, started_at) VALUES ('call-1', ?1, ?2, 0)",
            [&a, &b],
        )
        .unwrap();

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
        };
        assert_eq!(
            (count("users"), count("calls")),
            (2, 1),
            "existing data stays"
        );
        assert_eq!(count("stun_overrides"), 0, "no edits yet");
        let insert = |url: &str, added: rusqlite::types::Value| {
            conn.execute(
                "INSERT INTO stun_overrides (url, added, first_set_at, updated_at)
                 VALUES (?1, ?2, 0, 0)",
                rusqlite::params![url, added],
            )
        };
        insert("stun:a.example", Integer(1)).unwrap();
        insert("stun:b.example", Integer(0)).unwrap();
        assert!(
            insert("stun:a.example", Integer(0)).is_err(),
            "one row per URL"
        );
        assert!(
            insert("stun:c.example", Integer(2)).is_err(),
            "added is 0 or 1"
        );
        assert!(
            insert("stun:c.example", Text("yes".to_owned())).is_err(),
            "added is an integer"
        );
        assert!(insert("", Integer(1)).is_err(), "an empty URL");
        insert(&"a".repeat(512), Integer(1)).unwrap();
        assert!(insert(&"a".repeat(513), Integer(1)).is_err(), "513 bytes");
        assert!(
            insert(&"é".repeat(257), Integer(1)).is_err(),
            "257 characters, 514 bytes"
        );
        let time_is_strict = conn.execute(
            "INSERT INTO stun_overrides (url, added, first_set_at, updated_at)
             VALUES ('stun:d.example', 1, 'soon', 0)",
            [],
        );
        assert!(time_is_strict.is_err());
        assert_eq!(count("stun_overrides"), 3);
    }

    /// A database at schema `version`, with one user; returns the user's id.
    fn database_with_a_user(version: usize) -> (Connection, &'static str) {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..version]).unwrap();
        let user = "00000000-0000-7000-8000-00000000000a";
        conn.execute(
            "INSERT INTO users (id, issuer, subject, created_at)
             VALUES (?1, 'https://old.example', ?1, 0)",
            [user],
        )
        .unwrap();
        (conn, user)
    }

    /// Whether `count_sql` (a `SELECT count(*)` taking `name`) counts any.
    fn counts_any(conn: &Connection, count_sql: &str, name: &str) -> bool {
        conn.query_row(count_sql, [name], |row| row.get::<_, i64>(0))
            .unwrap()
            > 0
    }

    /// Whether the schema has a table or index called `name`.
    fn has_object(conn: &Connection, name: &str) -> bool {
        counts_any(
            conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
            name,
        )
    }

    /// Whether `table` has a foreign key.
    fn has_foreign_key(conn: &Connection, table: &str) -> bool {
        counts_any(
            conn,
            "SELECT count(*) FROM pragma_foreign_key_list(?1)",
            table,
        )
    }

    /// Every row of `sql`, which selects five columns.
    fn five_column_rows<A, B, C, D, E>(conn: &Connection, sql: &str) -> Vec<(A, B, C, D, E)>
    where
        A: rusqlite::types::FromSql,
        B: rusqlite::types::FromSql,
        C: rusqlite::types::FromSql,
        D: rusqlite::types::FromSql,
        E: rusqlite::types::FromSql,
    {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Checks that `events` still refuses what it always has, for a user
    /// (named `user` in `user_column`) whose log holds seqs 1 and 2.
    fn assert_events_keep_their_checks(
        conn: &Connection,
        user_column: &str,
        user: &dyn rusqlite::ToSql,
    ) {
        let insert = |seq: i64, created_at: &str| {
            conn.execute(
                &format!(
                    "INSERT INTO events ({user_column}, seq, event, created_at)
                     VALUES (?1, ?2, '{{}}', {created_at})"
                ),
                rusqlite::params![user, seq],
            )
        };
        assert!(insert(2, "7").is_err(), "one event per user and seq");
        assert!(insert(0, "7").is_err(), "seqs count from 1");
        assert!(insert(3, "'soon'").is_err(), "still STRICT");
        let without_rowid = conn.query_row("SELECT rowid FROM events", [], |_| Ok(()));
        assert!(without_rowid.is_err(), "still WITHOUT ROWID");
    }

    #[test]
    fn migration_5_points_message_events_at_their_message() {
        let (mut conn, user) = database_with_a_user(4);
        let created = r#"{"type":"message.created","message":{"body":"hello"}}"#;
        let other = r#"{"type":"friend.accepted"}"#;
        conn.execute(
            "INSERT INTO events (user_id, seq, event, created_at, message_id)
             VALUES (?1, 1, ?2, 0, 'message-1'), (?1, 2, ?3, 0, NULL)",
            [user, created, other],
        )
        .unwrap();

        migrate_with(&mut conn, &MIGRATIONS[..5]).unwrap();
        assert_eq!(version(&conn), 5);
        let logged: Vec<(i64, String, Option<String>)> = conn
            .prepare("SELECT seq, event, message_id FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            logged,
            vec![
                (1, String::new(), Some("message-1".to_owned())),
                (2, other.to_owned(), None),
            ],
            "the body is gone from the log; other events stay as they were"
        );
        assert!(
            !has_object(&conn, "events_by_message"),
            "nothing looks events up by message any more"
        );
    }

    #[test]
    fn migration_6_drops_the_events_date_index_and_keeps_the_events() {
        let (mut conn, user) = database_with_a_user(5);
        conn.execute(
            "INSERT INTO events (user_id, seq, event, created_at) VALUES (?1, 1, '{}', 5)",
            [user],
        )
        .unwrap();

        migrate_with(&mut conn, &MIGRATIONS[..6]).unwrap();
        assert_eq!(version(&conn), 6);
        assert!(!has_object(&conn, "events_by_created_at"));
        let kept: (i64, i64) = conn
            .query_row("SELECT seq, created_at FROM events", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, (1, 5));
    }

    #[test]
    fn migration_7_keeps_the_events_and_their_checks_but_not_the_foreign_key() {
        let (mut conn, user) = database_with_a_user(6);
        assert!(has_foreign_key(&conn, "events"));
        conn.execute(
            "INSERT INTO events (user_id, seq, event, created_at, message_id)
             VALUES (?1, 1, '', 5, 'message-1'), (?1, 2, '{}', 6, NULL)",
            [user],
        )
        .unwrap();

        migrate_with(&mut conn, &MIGRATIONS[..7]).unwrap();
        assert_eq!(version(&conn), 7);
        assert!(!has_foreign_key(&conn, "events"));
        let kept: Vec<(String, i64, String, i64, Option<String>)> = five_column_rows(
            &conn,
            "SELECT user_id, seq, event, created_at, message_id FROM events ORDER BY seq",
        );
        assert_eq!(
            kept,
            vec![
                (
                    user.to_owned(),
                    1,
                    String::new(),
                    5,
                    Some("message-1".to_owned())
                ),
                (user.to_owned(), 2, "{}".to_owned(), 6, None),
            ]
        );
        assert_events_keep_their_checks(&conn, "user_id", &user);
    }

    /// A version-7 database at `path` with two users (the second, `b`,
    /// signed up first, so the keys follow row order, not ids), a message
    /// from `a` to `b`, and `a`'s log holding its `message.created` and a
    /// JSON event. Returns the two users and the message's id.
    fn version_7_with_a_conversation(path: &std::path::Path) -> (UserId, UserId, String) {
        let mut conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..7]).unwrap();
        let (a, b) = (UserId::new(), UserId::new());
        for (user, last_event_seq) in [(b, 0), (a, 2)] {
            conn.execute(
                "INSERT INTO users (id, issuer, subject, created_at, last_event_seq)
                 VALUES (?1, 'https://old.example', ?1, 0, ?2)",
                rusqlite::params![user.to_string(), last_event_seq],
            )
            .unwrap();
        }
        let message = "00000000-0000-7000-8000-000000000001".to_owned();
        let conversation = Conversation::direct(a, b).to_string();
        conn.execute(
            "INSERT INTO messages (id, conversation, seq, sender, body, created_at)
             VALUES (?1, ?2, 1, ?3, 'before the upgrade', 1000)",
            rusqlite::params![message, conversation, a.to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (user_id, seq, event, created_at, message_id)
             VALUES (?1, 1, '', 1000, ?2), (?1, 2, '{\"type\":\"friend.removed\",\"user_id\":\"' || ?3 || '\"}', 1001, NULL)",
            rusqlite::params![a.to_string(), message, b.to_string()],
        )
        .unwrap();
        (a, b, message)
    }

    #[test]
    fn migration_8_keys_the_event_log_by_integers_and_keeps_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("voice.db");
        let (a, b, message) = version_7_with_a_conversation(&path);
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..8]).unwrap();
        assert_eq!(version(&conn), 8);

        let key_of = |user: UserId| -> i64 {
            conn.query_row(
                "SELECT log_key FROM users WHERE id = ?1",
                [user.to_string()],
                |row| row.get(0),
            )
            .unwrap()
        };
        assert_eq!((key_of(b), key_of(a)), (1, 2), "keys follow the rows");
        let message_key: i64 = conn
            .query_row(
                "SELECT key FROM messages WHERE id = ?1",
                [&message],
                |row| row.get(0),
            )
            .unwrap();
        let logged: Vec<(i64, i64, String, i64, Option<i64>)> = five_column_rows(
            &conn,
            "SELECT user_key, seq, event, created_at, message_key FROM events ORDER BY seq",
        );
        assert_eq!(logged.len(), 2);
        assert_eq!(logged[0], (2, 1, String::new(), 1000, Some(message_key)));
        assert_eq!((logged[1].0, logged[1].1, logged[1].4), (2, 2, None));
        assert!(logged[1].2.contains("friend.removed"));

        assert_events_keep_their_checks(&conn, "user_key", &2);
        let duplicate_key = conn.execute("UPDATE users SET log_key = 1 WHERE log_key = 2", []);
        assert!(duplicate_key.is_err(), "one user per key");
        assert!(has_object(&conn, "messages_by_seq"));
        assert!(has_object(&conn, "messages_by_client_id"));
        assert!(
            has_foreign_key(&conn, "messages"),
            "the sender is still a user"
        );
    }

    #[tokio::test]
    async fn after_migration_8_the_store_replays_and_extends_the_old_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("voice.db");
        let (a, b, message) = version_7_with_a_conversation(&path);
        let store = crate::SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap();

        let Replay::Events(replayed) = store.events_since(a, 0, 10).await.unwrap() else {
            panic!("the log was not pruned");
        };
        assert_eq!(replayed.len(), 2);
        let Event::MessageCreated { message: stored } = replayed[0].event.as_ref() else {
            panic!("the first event is the message: {:?}", replayed[0].event);
        };
        assert_eq!(stored.id.to_string(), message);
        assert_eq!(stored.body.as_deref(), Some("before the upgrade"));
        assert_eq!(
            replayed[1].event.as_ref(),
            &Event::FriendRemoved { user_id: b }
        );

        // New users, messages and events go on from the old ones.
        let carol = store
            .upsert_user(
                &voice_core::model::Identity::new("https://new.example", "carol"),
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap()
            .0;
        let inserted = store
            .insert_message(
                &voice_core::model::NewMessage {
                    id: voice_core::MessageId::new(),
                    conversation: Conversation::direct(a, carol.id),
                    sender: a,
                    body: "after".into(),
                    client_id: None,
                    created_at: OffsetDateTime::now_utc(),
                },
                &[a, carol.id],
            )
            .await
            .unwrap();
        let seqs: Vec<(UserId, u64)> = inserted
            .deliveries
            .iter()
            .map(|delivery| (delivery.user_id, delivery.seq))
            .collect();
        assert_eq!(seqs, vec![(a, 3), (carol.id, 1)]);
        let Replay::Events(after) = store.events_since(a, 2, 10).await.unwrap() else {
            panic!("the log was not pruned");
        };
        assert_eq!(after.len(), 1);
        assert!(matches!(
            after[0].event.as_ref(),
            Event::MessageCreated { message } if message.body.as_deref() == Some("after")
        ));
        let Replay::Events(carols) = store.events_since(carol.id, 0, 10).await.unwrap() else {
            panic!("the log was not pruned");
        };
        assert_eq!(carols.len(), 1, "the new user's log is their own");
    }

    #[test]
    fn the_real_schema_applies() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
    }
}
