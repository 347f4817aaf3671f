//! Each user's event counter (`users.last_event_seq`) as a write
//! transaction moves it: read from the user's row the first time the batch
//! needs it, counted up in memory, and written back once, just before the
//! commit. A user who gets many events in one batch (every member of a busy
//! group) then costs one read and one write of their row per batch instead
//! of per event; the event rows themselves are still written as they come.
//!
//! The counters live only as long as one transaction, so nothing that
//! happens outside it (another connection, a failed commit) can leave them
//! stale. A job whose savepoint is rolled back takes its counts back with
//! it.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use voice_core::{Error, UserId};

use crate::error::DbResult;

/// Where the next event of a user's log goes: the user's key in the log
/// (`users.log_key`) and the event's seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogSlot {
    pub(crate) user_key: i64,
    pub(crate) seq: i64,
}

#[derive(Debug, Default)]
pub(crate) struct EventCounters {
    /// Each user's key and the newest seq handed out to them in this
    /// transaction.
    current: HashMap<UserId, LogSlot>,
    /// What the running job changed, oldest first, with each counter's
    /// value before the change (`None`: not yet read in this transaction),
    /// so that rolling the job back restores exactly what was there.
    job_changes: Vec<(UserId, Option<LogSlot>)>,
}

impl EventCounters {
    /// Where `user`'s next event goes. An unknown user is not found.
    pub(crate) fn next(&mut self, conn: &Connection, user: UserId) -> DbResult<LogSlot> {
        let before = self.current.get(&user).copied();
        let last = match before {
            Some(last) => last,
            None => conn
                .prepare_cached("SELECT log_key, last_event_seq FROM users WHERE id = ?1")?
                .query_row([user.to_string()], |row| {
                    Ok(LogSlot {
                        user_key: row.get(0)?,
                        seq: row.get(1)?,
                    })
                })
                .optional()?
                .ok_or_else(|| Error::not_found("no such user"))?,
        };
        let next = LogSlot {
            seq: last.seq + 1,
            ..last
        };
        self.current.insert(user, next);
        self.job_changes.push((user, before));
        Ok(next)
    }

    /// A job starts: what it changes can be rolled back on its own.
    pub(crate) fn begin_job(&mut self) {
        self.job_changes.clear();
    }

    /// The running job's savepoint was rolled back: so are its counts.
    pub(crate) fn roll_back_job(&mut self) {
        while let Some((user, before)) = self.job_changes.pop() {
            match before {
                Some(value) => self.current.insert(user, value),
                None => self.current.remove(&user),
            };
        }
    }

    /// Writes every moved counter to its user's row, inside the transaction
    /// about to commit, and forgets them.
    pub(crate) fn write_back(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.job_changes.clear();
        // By the key read with the counter: no id to format and compare.
        let mut update =
            conn.prepare_cached("UPDATE users SET last_event_seq = ?2 WHERE log_key = ?1")?;
        for (_, last) in self.current.drain() {
            update.execute(params![last.user_key, last.seq])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(users: &[UserId]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, log_key INTEGER,
                                 last_event_seq INTEGER NOT NULL DEFAULT 0)",
        )
        .unwrap();
        for (key, user) in (1..).zip(users) {
            conn.execute(
                "INSERT INTO users (id, log_key, last_event_seq) VALUES (?1, ?2, 5)",
                params![user.to_string(), key],
            )
            .unwrap();
        }
        conn
    }

    fn stored(conn: &Connection, user: UserId) -> i64 {
        conn.query_row(
            "SELECT last_event_seq FROM users WHERE id = ?1",
            [user.to_string()],
            |row| row.get(0),
        )
        .unwrap()
    }

    #[test]
    fn counts_in_memory_and_writes_back_once() {
        let (a, b) = (UserId::new(), UserId::new());
        let conn = database(&[a, b]);
        let mut counters = EventCounters::default();
        counters.begin_job();
        assert_eq!(counters.next(&conn, a).unwrap().seq, 6);
        assert_eq!(counters.next(&conn, a).unwrap().seq, 7);
        assert_eq!(
            counters.next(&conn, b).unwrap(),
            LogSlot {
                user_key: 2,
                seq: 6
            },
            "each user's events go under their own key"
        );
        assert_eq!(stored(&conn, a), 5, "nothing is written before write_back");
        counters.write_back(&conn).unwrap();
        assert_eq!((stored(&conn, a), stored(&conn, b)), (7, 6));
        // Forgotten after the write-back: the next transaction reads again.
        conn.execute("UPDATE users SET last_event_seq = 40", [])
            .unwrap();
        assert_eq!(counters.next(&conn, a).unwrap().seq, 41);
    }

    #[test]
    fn a_rolled_back_job_takes_back_only_its_own_counts() {
        let (a, b) = (UserId::new(), UserId::new());
        let conn = database(&[a, b]);
        let mut counters = EventCounters::default();
        counters.begin_job();
        assert_eq!(counters.next(&conn, a).unwrap().seq, 6);
        counters.begin_job();
        assert_eq!(counters.next(&conn, a).unwrap().seq, 7);
        assert_eq!(counters.next(&conn, a).unwrap().seq, 8);
        assert_eq!(counters.next(&conn, b).unwrap().seq, 6);
        counters.roll_back_job();
        counters.begin_job();
        assert_eq!(counters.next(&conn, a).unwrap().seq, 7);
        assert_eq!(counters.next(&conn, b).unwrap().seq, 6);
        counters.write_back(&conn).unwrap();
        assert_eq!((stored(&conn, a), stored(&conn, b)), (7, 6));
    }

    #[test]
    fn an_unknown_user_is_not_found_and_changes_nothing() {
        let a = UserId::new();
        let conn = database(&[a]);
        let mut counters = EventCounters::default();
        counters.begin_job();
        let error = counters.next(&conn, UserId::new()).unwrap_err();
        assert_eq!(
            error.into_error().code,
            voice_core::ErrorCode::NotFound,
            "an unknown user is reported as such"
        );
        counters.write_back(&conn).unwrap();
        assert_eq!(stored(&conn, a), 5);
    }
}
