//! What an operator can tune about the SQLite store. The server embeds
//! [`SqliteOptions`] in its configuration, so every field has a default and
//! the shape is stable under serde.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How hard SQLite works to keep an acknowledged write, in WAL mode. See the
/// crate documentation for what each level survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Survives a crash or kill of the process; the WAL is synced only at
    /// checkpoints.
    #[default]
    Normal,
    /// Also survives power loss: the WAL is synced at every commit.
    Full,
}

impl Synchronous {
    /// The value of `PRAGMA synchronous`.
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Settings for [`crate::SqliteStore::open`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SqliteOptions {
    /// Durability of acknowledged writes.
    pub synchronous: Synchronous,
    /// Reader threads, each with its own connection. Reads run in parallel
    /// with each other and with the writer (WAL), so this bounds read
    /// concurrency. At least one is started.
    pub readers: usize,
    /// How long a connection waits for a lock held by another process
    /// before failing. Within one store the writer thread is the only
    /// writer, so this matters only when other processes open the file. In
    /// configuration files it is a number of milliseconds.
    #[serde(with = "millis")]
    pub busy_timeout: Duration,
    /// The most writes committed in one transaction. Larger batches share
    /// one sync among more writes but make each caller in the batch wait
    /// for all of them. At least one. The writer takes only what is already
    /// queued, so this bounds batches under heavy load and never delays a
    /// lone write. A batch writes each page it changed to the WAL once, and
    /// under load most of a message's pages (its conversation's index
    /// leaf, each recipient's event-log leaf) are shared with the other
    /// messages of its batch: the default, 4,096, cut the WAL written per
    /// message by about a fifth against 1,024 in saturated direct messages.
    pub max_batch: usize,
    /// How often a background connection checkpoints the WAL into the
    /// database file (and, with `synchronous = normal`, syncs it), so that
    /// the writer never stops to do it between batches. Zero leaves it to
    /// the writer, as SQLite does by default (every 1,000 pages). In
    /// configuration files it is a number of milliseconds.
    #[serde(with = "millis")]
    pub checkpoint_interval: Duration,
    /// With background checkpoints on, the writer still checkpoints by
    /// itself once the WAL holds this many pages (4 KiB each). Under
    /// sustained writes the background checkpoints never find the WAL
    /// empty, and SQLite starts the WAL over only after a checkpoint by the
    /// writer, so without this backstop the file would grow for as long as
    /// the writes go on. Most pages are already copied by then, so the
    /// writer's checkpoint is short. The default, 32,000 pages, lets the
    /// WAL file reach about 150 MB under sustained writes (SQLite keeps
    /// the file at that size and reuses it): at 8,000 the writer's own
    /// checkpoints took a tenth of its time in a saturated profile, and a
    /// page rewritten many times between two checkpoints is copied once.
    pub max_wal_pages: u32,
    /// The writer connection's page cache, in KiB. It must hold the pages
    /// a batch dirties (a few hundred in a saturated batch), or they spill
    /// to the WAL before the commit and are written twice; SQLite's own
    /// default, 2 MiB, spilled. Bigger is not better: SQLite walks the
    /// whole cache at the end of any transaction in which a B-tree
    /// rebalanced pages out of page-number order (many batches under
    /// load, while the file is under 1 GiB), so such a commit costs time
    /// in proportion to it. The default, 8 MiB, took about 0.4 µs per
    /// direct message off the writer against 64 MiB (docs/BENCHMARKS.md).
    /// At least 1,024.
    pub writer_cache_kib: u32,
    /// Users whose old events one write transaction prunes. Pruning walks
    /// every user's log, a batch of users at a time, so that other writes
    /// go on between the batches. At least one.
    pub prune_users_per_write: usize,
    /// Most events one pruning write transaction deletes; a user with more
    /// to prune is finished in the next. Every other write waits while one
    /// runs: at the default, a few milliseconds (docs/BENCHMARKS.md). At
    /// least one.
    pub prune_events_per_write: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            max_batch: 4096,
            checkpoint_interval: Duration::from_millis(200),
            max_wal_pages: 32_000,
            writer_cache_kib: 8 * 1024,
            prune_users_per_write: 1000,
            prune_events_per_write: 10_000,
        }
    }
}

/// A [`Duration`] as whole milliseconds: what people write in a config file.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_their_defaults() {
        let options: SqliteOptions =
            serde_json::from_str(r#"{"synchronous":"full","busy_timeout":250}"#).unwrap();
        assert_eq!(options.synchronous, Synchronous::Full);
        assert_eq!(options.busy_timeout, Duration::from_millis(250));
        assert_eq!(options.readers, SqliteOptions::default().readers);
        assert_eq!(options.max_batch, SqliteOptions::default().max_batch);

        let empty: SqliteOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, SqliteOptions::default());
    }

    #[test]
    fn options_round_trip_and_reject_unknown_levels() {
        let options = SqliteOptions::default();
        let json = serde_json::to_string(&options).unwrap();
        assert!(json.contains(r#""synchronous":"normal""#), "{json}");
        assert_eq!(
            serde_json::from_str::<SqliteOptions>(&json).unwrap(),
            options
        );
        assert!(serde_json::from_str::<SqliteOptions>(r#"{"synchronous":"off"}"#).is_err());
    }
}
