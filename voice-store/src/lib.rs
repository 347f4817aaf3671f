//! SQLite storage for voice: an implementation of [`voice_core::store::Store`]
//! on one database file, plus a conformance suite that any backend of the
//! trait can run.
//!
//! # Layout
//!
//! - [`options`]: what an operator can tune ([`SqliteOptions`]).
//! - `schema`: the embedded, versioned migrations.
//! - `worker`: the threads that own the connections; the writer's group
//!   commit lives here.
//! - `event_counters`: each user's event seq as a write transaction moves
//!   it, written to the user's row once per transaction.
//! - `store`: the cheap, cloneable [`SqliteStore`] handle that sends work to
//!   those threads.
//! - `queries`: the SQL behind each trait method.
//! - `conformance` (feature `conformance`): the backend-independent test
//!   suite.
//!
//! # Threads
//!
//! SQLite calls block, so none of them run on the async runtime. One writer
//! thread owns the only write connection; a few reader threads own a
//! connection each. A caller's future only waits on a `tokio` oneshot.
//!
//! The writer does *group commit*: it waits for one write, takes every
//! write already queued behind it (up to [`SqliteOptions::max_batch`]), runs
//! them in one `BEGIN IMMEDIATE` transaction, commits once, and only then
//! answers every caller. Under load one disk sync covers many writes;
//! alone, a write costs one transaction as usual. A failing write rolls
//! back only itself: the batch runs without savepoints (they copy every
//! page a write changes), and if a write fails, the transaction is rolled
//! back and the batch runs again with a `SAVEPOINT` around each write.
//!
//! # Messages and their events
//!
//! A message's `seq` is chosen inside the write transaction (its
//! conversation's highest plus one), and the events announcing a message
//! or its deletion are appended to the recipients' logs in that same
//! transaction: an acknowledged message is never without its events, nor
//! an event without its message. Each user's log numbers its events 1, 2,
//! 3... The user's row keeps the newest seq (counted in memory during a
//! write transaction and written back before it commits, so a batch that
//! brings one user many events writes their row once) and the highest
//! pruned one, so
//! pruning never restarts the numbering and `events_since` can tell a
//! client that events it has not seen are gone. Pruning takes the old
//! events from the start of each user's log, walking the logs through
//! their primary key a batch of users per write (there is no index by
//! date, which every event would pay for). Deleting a message also
//! replaces it by its tombstone in the logged `message.created` events.
//! The log names users and messages by small integer keys
//! (`users.log_key`, a column of its own, and `messages.key`, the
//! message's rowid), not by their 36-character ids: a message to a group
//! of 100 writes 99 rows of about 20 bytes instead of about 90, so the
//! log's pages fill and split several times less often.
//!
//! # Durability
//!
//! A write is acknowledged only after the transaction that holds it has
//! committed. The journal is always WAL. What survives depends on
//! [`Synchronous`]:
//!
//! - [`Synchronous::Normal`] (the default): a commit reaches the WAL file in
//!   the operating system's cache, which is synced at checkpoints. Every
//!   acknowledged write survives the process crashing or being killed
//!   (`kill -9`). An operating-system crash or power loss can lose the most
//!   recent acknowledged writes, but never corrupts the database.
//! - [`Synchronous::Full`]: the WAL is synced to disk at every commit before
//!   anyone is answered, so acknowledged writes also survive power loss, as
//!   far as the disk honours flushes. Group commit shares each sync among
//!   the writes of a batch.
//!
//! Dropping the last [`SqliteStore`] handle lets the threads finish the
//! queued work and closes the database; [`SqliteStore::close`] does the same
//! without blocking the runtime.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod event_counters;
pub mod options;
mod queries;
mod schema;
mod store;
mod worker;

pub use options::{SqliteOptions, Synchronous};
pub use schema::SCHEMA_VERSION;
pub use store::SqliteStore;
pub use worker::StoreStats;
