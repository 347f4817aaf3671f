//! The database schema as embedded, ordered migrations. `PRAGMA
//! user_version` records how many have been applied; each runs in its own
//! transaction with the version bump, so a crash mid-upgrade leaves the
//! previous version intact.
//!
//! Conventions: ids are TEXT holding hyphenated UUIDs (their text order is
//! their creation order, which the message cursor relies on); timestamps
//! are INTEGER Unix milliseconds; tables are STRICT so a wrong type is an
//! error instead of a silent conversion.
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

    #[test]
    fn the_real_schema_applies() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
    }
}
