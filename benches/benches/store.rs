//! Store benchmarks: what one acknowledged message insert (the message and
//! its event in both users' logs) costs at each durability level, how much
//! group commit recovers under concurrency (one conversation, and the load
//! tool's spread over many), how fast a history page reads, and, for
//! comparison, each of them on raw rusqlite with the same pragmas and SQL
//! but none of the store's threads.
//!
//! `cargo bench -p voice-benches --bench store -- --test` runs each once as
//! a smoke test.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use voice_core::ids::{MessageId, UserId};
use voice_core::model::{Conversation, Identity, Message, NewMessage};
use voice_core::store::{EventStore, MessageStore, Store, UserStore};
use voice_core::wire::Event;
use voice_store::{SqliteOptions, SqliteStore, Synchronous};

/// Concurrent inserts per iteration of the group-commit benchmark.
const CONCURRENT: usize = 64;
/// Messages in the conversation the history benchmark pages through.
const HISTORY: usize = 10_000;
/// What the pruning benchmark prunes in one pass: (users, old events in
/// each one's log), 200,000 events either way. Many short logs, and a few
/// long ones that each take several pruning writes.
const PRUNED_LOGS: [(&str, usize, usize); 2] = [
    ("200_users_1000_events", 200, 1_000),
    ("2_users_100000_events", 2, 100_000),
];

/// The load tool's direct-message workload in miniature: this many pairs
/// of users, each pair a conversation, and messages sent round the pairs
/// this many at once, so that a transaction touches every conversation's
/// and every user's pages as under load.
const CROWD_PAIRS: usize = 100;
const CROWD_BATCH: usize = 1_000;

const LEVELS: [(Synchronous, &str); 2] =
    [(Synchronous::Normal, "normal"), (Synchronous::Full, "full")];

/// A store on a fresh file with two users, one sending to the other. The
/// directory is kept so the file lives as long as the store.
struct Fixture {
    _dir: TempDir,
    store: SqliteStore,
    sender: UserId,
    partner: UserId,
    conversation: Conversation,
}

impl Fixture {
    fn new(runtime: &Runtime, synchronous: Synchronous) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&dir.path().join("bench.db"), options).expect("store opens");
        let [sender, partner] = ["sender", "partner"].map(|subject| {
            runtime.block_on(bench_user(&store, subject, OffsetDateTime::now_utc()))
        });
        Fixture {
            _dir: dir,
            store,
            sender,
            partner,
            conversation: Conversation::direct(sender, partner),
        }
    }

    fn message(&self) -> NewMessage {
        message(self.sender, self.conversation)
    }

    /// Who gets the `message.created` events: both users, as the server
    /// sends them.
    fn recipients(&self) -> [UserId; 2] {
        [self.sender, self.partner]
    }
}

/// Signs up the user `subject` (created at `at`) and returns their id.
async fn bench_user(store: &SqliteStore, subject: &str, at: OffsetDateTime) -> UserId {
    let identity = Identity::new("https://bench.example", subject);
    let (user, _) = store.upsert_user(&identity, at).await.expect("user stored");
    user.id
}

fn message(sender: UserId, conversation: Conversation) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation,
        sender,
        body: "a message of an ordinary length, about sixty characters long".to_owned(),
        client_id: None,
        created_at: OffsetDateTime::now_utc(),
    }
}

/// Inserts `count` messages at once and waits for all of them.
async fn insert_concurrently(fixture: &Fixture, count: usize) {
    insert_round(&fixture.store, &[(fixture.sender, fixture.partner)], count).await;
}

/// As many workers as the machine kind has cores.
fn two_workers() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime")
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One insert at a time, each awaited: the latency of a lone write, next to
/// raw rusqlite doing one transaction per insert, on the calling thread and
/// on a thread of its own.
fn insert_one(c: &mut Criterion) {
    let runtime = current_thread();
    let mut group = c.benchmark_group("insert_one");
    for (level, name) in LEVELS {
        let fixture = Fixture::new(&runtime, level);
        group.bench_function(BenchmarkId::new("store", name), |b| {
            b.iter(|| {
                let new = fixture.message();
                black_box(
                    runtime
                        .block_on(fixture.store.insert_message(&new, &fixture.recipients()))
                        .expect("insert"),
                )
            })
        });
        let raw = Raw::take_over(&runtime, fixture, level);
        group.bench_function(BenchmarkId::new("raw_rusqlite", name), |b| {
            b.iter(|| raw.insert_in_one_transaction(1))
        });
        let on_a_thread = RawThread::start(raw);
        group.bench_function(BenchmarkId::new("raw_rusqlite_on_a_thread", name), |b| {
            b.iter(|| runtime.block_on(on_a_thread.insert()))
        });
        on_a_thread.stop();
    }
    group.finish();
}

/// Raw rusqlite behind the store's two hand-offs and nothing else: a
/// thread of its own runs each insert, taken from a channel, and answers
/// through a oneshot that the caller awaits. Set against `raw_rusqlite`, it
/// prices the hand-offs on the machine at hand; set against `store`, what
/// the store does besides them.
struct RawThread {
    jobs: std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<()>,
}

impl RawThread {
    fn start(raw: Raw) -> RawThread {
        let (jobs, queued) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        let thread = std::thread::spawn(move || {
            while let Ok(reply) = queued.recv() {
                raw.insert_in_one_transaction(1);
                let _ = reply.send(());
            }
        });
        RawThread { jobs, thread }
    }

    async fn insert(&self) {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.jobs.send(reply).expect("raw thread running");
        done.await.expect("raw insert answered");
    }

    fn stop(self) {
        drop(self.jobs);
        self.thread.join().expect("raw thread ends");
    }
}

/// What a store call costs besides its SQL: `ping` runs `SELECT 1` on a
/// reader thread, so it is the hand-off to that thread and the answer back
/// to the awaiting task, next to the same statement on the calling thread.
/// A write pays the same two hand-offs (to the writer thread and back).
fn round_trip(c: &mut Criterion) {
    let runtime = current_thread();
    let mut group = c.benchmark_group("round_trip");
    let fixture = Fixture::new(&runtime, Synchronous::Normal);
    group.bench_function("store_ping", |b| {
        b.iter(|| runtime.block_on(fixture.store.ping()).expect("ping"))
    });
    let raw = Raw::take_over(&runtime, fixture, Synchronous::Normal);
    group.bench_function("raw_rusqlite_select_1", |b| {
        b.iter(|| {
            let one: i64 = raw
                .conn
                .prepare_cached("SELECT 1")
                .expect("prepare")
                .query_row([], |row| row.get(0))
                .expect("select");
            black_box(one)
        })
    });
    group.finish();
}

/// The store's writes straight on one connection: same file layout, same
/// pragmas, cached prepared statements, on the calling thread. Like the
/// store, a message insert numbers the message, records both participants
/// and appends the event (by message id) to both users' logs.
struct Raw {
    /// Keeps the database file alive as long as the connection.
    _dir: TempDir,
    conn: rusqlite::Connection,
    /// Each direct conversation written to, with its two users (sender
    /// first); a lone insert writes to the first.
    pairs: Vec<RawPair>,
}

/// A direct conversation as raw rusqlite writes it: its id and its two
/// users, the sender first.
struct RawPair {
    conversation: String,
    users: [String; 2],
}

impl RawPair {
    fn of(sender: UserId, partner: UserId) -> RawPair {
        RawPair {
            conversation: Conversation::direct(sender, partner).to_string(),
            users: [sender.to_string(), partner.to_string()],
        }
    }
}

impl Raw {
    /// Closes the fixture's store, which created the schema, and opens the
    /// same file: only one writer is ever measured.
    fn take_over(runtime: &Runtime, fixture: Fixture, level: Synchronous) -> Raw {
        let Fixture {
            _dir: dir,
            store,
            sender,
            partner,
            conversation: _,
        } = fixture;
        Raw::open(
            runtime,
            dir,
            store,
            level,
            vec![RawPair::of(sender, partner)],
        )
    }

    fn open(
        runtime: &Runtime,
        dir: TempDir,
        store: SqliteStore,
        level: Synchronous,
        pairs: Vec<RawPair>,
    ) -> Raw {
        runtime.block_on(store.close());
        let conn = rusqlite::Connection::open(dir.path().join("bench.db")).expect("raw open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        let synchronous = match level {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .expect("synchronous");
        conn.pragma_update(None, "foreign_keys", true)
            .expect("foreign keys");
        // The writer's cache: SQLite's default, 2 MiB, cannot hold the
        // pages a transaction of many conversations dirties, and spills.
        let cache_kib = i64::from(SqliteOptions::default().writer_cache_kib);
        conn.pragma_update(None, "cache_size", -cache_kib)
            .expect("cache size");
        // As on the store's writer, whose checkpoints a thread of their own
        // makes meanwhile; raw rusqlite makes them all itself, only later.
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            SqliteOptions::default().max_wal_pages,
        )
        .expect("checkpoint threshold");
        // As on the store's connections: without it, a statement whose
        // WHERE binds a parameter compared with a partial index's
        // condition (the seq read) is prepared again at every run.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .expect("query planner stability guarantee");
        Raw {
            _dir: dir,
            conn,
            pairs,
        }
    }

    /// `count` messages in one `BEGIN IMMEDIATE` transaction: with 1, a
    /// lone insert; with more, what group commit aims at. `BEGIN` and
    /// `COMMIT` are cached statements, as in the store's writer, so that
    /// parsing them does not count against raw rusqlite.
    fn insert_in_one_transaction(&self, count: usize) {
        self.run_cached("BEGIN IMMEDIATE");
        for pair in self.pairs.iter().cycle().take(count) {
            self.insert(pair);
        }
        self.run_cached("COMMIT");
    }

    fn run_cached(&self, sql: &str) {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .expect(sql);
    }

    /// One message as plain SQL would write it: the message, both
    /// participants, and for each user a read of their counter, its update
    /// and the event.
    fn insert(&self, pair: &RawPair) {
        let (message_key, _, now) = self.insert_message_row(pair);
        self.record_participants(pair);
        for user in &pair.users {
            let (user_key, event_seq): (i64, i64) = self.event_slot(user);
            self.conn
                .prepare_cached("UPDATE users SET last_event_seq = ?2 WHERE id = ?1")
                .and_then(|mut count| count.execute(rusqlite::params![user, event_seq]))
                .expect("count");
            self.append_event(user_key, event_seq, now, message_key);
        }
    }

    /// `count` messages in one transaction with the statements the store's
    /// writer runs for them: each user's counter read once and written
    /// back once per transaction, the participants recorded with a
    /// conversation's first message only. What the store's SQL costs
    /// without its threads, queue and answers.
    fn insert_as_the_writer_does(&self, count: usize) {
        self.run_cached("BEGIN IMMEDIATE");
        let mut counters: HashMap<&str, (i64, i64)> = HashMap::new();
        for pair in self.pairs.iter().cycle().take(count) {
            let (message_key, seq, now) = self.insert_message_row(pair);
            if seq == 1 {
                self.record_participants(pair);
            }
            for user in &pair.users {
                let (user_key, event_seq) = counters
                    .entry(user.as_str())
                    .or_insert_with(|| self.event_slot(user));
                self.append_event(*user_key, *event_seq, now, message_key);
                *event_seq += 1;
            }
        }
        // By the key read with the counter, as the writer does.
        for (user_key, next_seq) in counters.into_values() {
            self.conn
                .prepare_cached("UPDATE users SET last_event_seq = ?2 WHERE log_key = ?1")
                .and_then(|mut count| count.execute(rusqlite::params![user_key, next_seq - 1]))
                .expect("count");
        }
        self.run_cached("COMMIT");
    }

    /// Numbers and inserts a message of `pair`'s sender; returns its key,
    /// its seq and the time it was stamped with.
    fn insert_message_row(&self, pair: &RawPair) -> (i64, i64, i64) {
        let RawPair {
            conversation,
            users,
        } = pair;
        let conn = &self.conn;
        let id = MessageId::new().to_string();
        let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let body = "a message of an ordinary length, about sixty characters long";
        let seq: i64 = conn
            .prepare_cached(
                "SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE conversation = ?1",
            )
            .and_then(|mut next| next.query_row([conversation], |row| row.get(0)))
            .expect("seq");
        conn.prepare_cached(
            "INSERT INTO messages (id, conversation, seq, sender, body, client_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
        )
        .and_then(|mut insert| {
            insert.execute(rusqlite::params![
                id,
                conversation,
                seq,
                users[0],
                body,
                now
            ])
        })
        .expect("insert");
        (conn.last_insert_rowid(), seq, now)
    }

    fn record_participants(&self, pair: &RawPair) {
        for user in &pair.users {
            self.conn
                .prepare_cached(
                    "INSERT INTO direct_participants (user_id, conversation) VALUES (?1, ?2)
                     ON CONFLICT (user_id, conversation) DO NOTHING",
                )
                .and_then(|mut participant| participant.execute([user, &pair.conversation]))
                .expect("participant");
        }
    }

    /// `user`'s key in the event log and the seq of their next event.
    fn event_slot(&self, user: &str) -> (i64, i64) {
        self.conn
            .prepare_cached("SELECT log_key, last_event_seq + 1 FROM users WHERE id = ?1")
            .and_then(|mut next| next.query_row([user], |row| Ok((row.get(0)?, row.get(1)?))))
            .expect("event seq")
    }

    fn append_event(&self, user_key: i64, seq: i64, now: i64, message_key: i64) {
        self.conn
            .prepare_cached(
                "INSERT INTO events (user_key, seq, event, created_at, message_key)
                 VALUES (?1, ?2, '', ?3, ?4)",
            )
            .and_then(|mut append| {
                append.execute(rusqlite::params![user_key, seq, now, message_key])
            })
            .expect("append");
    }

    /// The store's history query, each row decoded into a [`Message`].
    fn history_page(&self, newest: u64, limit: u32) -> Vec<Message> {
        let mut page = self
            .conn
            .prepare_cached(
                "SELECT id, conversation, seq, sender, body, client_id, created_at, deleted_at
                 FROM messages WHERE conversation = ?1 AND seq <= ?2
                 ORDER BY seq DESC LIMIT ?3",
            )
            .expect("prepare");
        let rows = page
            .query_map(
                rusqlite::params![
                    self.pairs[0].conversation,
                    newest.min(i64::MAX as u64) as i64,
                    limit
                ],
                |row| {
                    let text = |index| row.get::<_, String>(index);
                    let time = |ms: i64| {
                        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                            .expect("stored times are in range")
                    };
                    Ok(Message {
                        id: text(0)?.parse().expect("stored ids parse"),
                        conversation: text(1)?.parse().expect("stored conversations parse"),
                        seq: row.get::<_, i64>(2)? as u64,
                        sender: text(3)?.parse().expect("stored ids parse"),
                        body: row.get(4)?,
                        client_id: row.get(5)?,
                        created_at: time(row.get(6)?),
                        deleted_at: row.get::<_, Option<i64>>(7)?.map(time),
                    })
                },
            )
            .expect("query");
        rows.collect::<rusqlite::Result<Vec<_>>>().expect("rows")
    }
}

/// Many inserts in flight at once: group commit shares transactions (and,
/// with `full`, syncs) among them. Raw rusqlite puts the same number of
/// messages in one transaction: the most group commit could save.
fn insert_concurrent(c: &mut Criterion) {
    let runtime = two_workers();
    let mut group = c.benchmark_group("insert_concurrent");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    for (level, name) in LEVELS {
        let fixture = Fixture::new(&runtime, level);
        group.bench_function(BenchmarkId::new("store", name), |b| {
            b.iter(|| runtime.block_on(insert_concurrently(&fixture, CONCURRENT)))
        });
        let stats = fixture.store.stats();
        if stats.batches > 0 {
            eprintln!(
                "insert_concurrent/{name}: {:.1} writes per transaction on average, at most {}",
                stats.writes as f64 / stats.batches as f64,
                stats.largest_batch
            );
        }
        let raw = Raw::take_over(&runtime, fixture, level);
        group.bench_function(
            BenchmarkId::new("raw_rusqlite_one_transaction", name),
            |b| b.iter(|| raw.insert_in_one_transaction(CONCURRENT)),
        );
    }
    group.finish();
}

/// [`CROWD_BATCH`] inserts at once round [`CROWD_PAIRS`] conversations, as
/// under the load tool's direct messages: the store's group commit in the
/// regime it is built for, against raw rusqlite writing all of them in one
/// transaction, with plain SQL and with the statements the store's writer
/// runs (the least the store's SQL costs on the machine).
fn insert_crowd(c: &mut Criterion) {
    let runtime = two_workers();
    let mut group = c.benchmark_group("insert_crowd");
    group.throughput(Throughput::Elements(CROWD_BATCH as u64));
    for (level, name) in LEVELS {
        let fixture = Fixture::new(&runtime, level);
        let pairs: Vec<(UserId, UserId)> = runtime.block_on(async {
            let mut pairs = Vec::with_capacity(CROWD_PAIRS);
            for n in 0..CROWD_PAIRS {
                let now = OffsetDateTime::now_utc();
                let sender = bench_user(&fixture.store, &format!("crowd-{n}-a"), now).await;
                let partner = bench_user(&fixture.store, &format!("crowd-{n}-b"), now).await;
                pairs.push((sender, partner));
            }
            pairs
        });
        let before = fixture.store.stats();
        group.bench_function(BenchmarkId::new("store", name), |b| {
            b.iter(|| runtime.block_on(insert_round(&fixture.store, &pairs, CROWD_BATCH)))
        });
        let stats = fixture.store.stats();
        if stats.batches > before.batches {
            eprintln!(
                "insert_crowd/{name}: {:.1} writes per transaction on average",
                (stats.writes - before.writes) as f64 / (stats.batches - before.batches) as f64,
            );
        }
        let Fixture {
            _dir: dir, store, ..
        } = fixture;
        let raw_pairs = pairs
            .iter()
            .map(|(sender, partner)| RawPair::of(*sender, *partner))
            .collect();
        let raw = Raw::open(&runtime, dir, store, level, raw_pairs);
        group.bench_function(
            BenchmarkId::new("raw_rusqlite_one_transaction", name),
            |b| b.iter(|| raw.insert_in_one_transaction(CROWD_BATCH)),
        );
        group.bench_function(
            BenchmarkId::new("raw_rusqlite_as_the_writer_does", name),
            |b| b.iter(|| raw.insert_as_the_writer_does(CROWD_BATCH)),
        );
    }
    group.finish();
}

/// Inserts `count` messages at once, round `pairs` (each pair's first user
/// sending), and waits for all of them.
async fn insert_round(store: &SqliteStore, pairs: &[(UserId, UserId)], count: usize) {
    let mut inserts = JoinSet::new();
    for (sender, partner) in pairs.iter().cycle().take(count) {
        let store = store.clone();
        let new = message(*sender, Conversation::direct(*sender, *partner));
        let recipients = [*sender, *partner];
        inserts.spawn(async move {
            store
                .insert_message(&new, &recipients)
                .await
                .expect("insert")
        });
    }
    while let Some(done) = inserts.join_next().await {
        done.expect("insert task");
    }
}

/// One page of 50 from a conversation of 10,000 messages: the newest page
/// and a page from the middle (a cursor), then the same query on raw
/// rusqlite.
fn history_page(c: &mut Criterion) {
    let runtime = current_thread();
    let fixture = Fixture::new(&runtime, Synchronous::Normal);
    runtime.block_on(async {
        for _ in 0..HISTORY / 500 {
            insert_concurrently(&fixture, 500).await;
        }
    });
    let all = runtime
        .block_on(
            fixture
                .store
                .list_messages(fixture.conversation, None, None, HISTORY as u32),
        )
        .expect("list");
    assert_eq!(all.len(), HISTORY);
    let middle = all[HISTORY / 2].seq;

    let mut group = c.benchmark_group("history_page");
    for (name, before) in [("newest_50", None), ("middle_50", Some(middle))] {
        group.bench_function(BenchmarkId::new("store", name), |b| {
            b.iter(|| {
                let page = runtime
                    .block_on(
                        fixture
                            .store
                            .list_messages(fixture.conversation, before, None, 50),
                    )
                    .expect("list");
                black_box(page)
            })
        });
    }
    let expected_middle = runtime
        .block_on(
            fixture
                .store
                .list_messages(fixture.conversation, Some(middle), None, 50),
        )
        .expect("list");
    let raw = Raw::take_over(&runtime, fixture, Synchronous::Normal);
    // The comparison is only fair if both return the same page.
    assert_eq!(raw.history_page(middle - 1, 50), expected_middle);
    for (name, newest) in [("newest_50", u64::MAX), ("middle_50", middle - 1)] {
        group.bench_function(BenchmarkId::new("raw_rusqlite", name), |b| {
            b.iter(|| black_box(raw.history_page(newest, 50)))
        });
    }
    group.finish();
}

/// One pruning pass over each of [`PRUNED_LOGS`], while lone inserts go
/// on one after another: pruning shares the writer with every message, so
/// what matters besides the pass's time is how long the inserts wait.
fn prune(c: &mut Criterion) {
    let runtime = current_thread();
    let mut group = c.benchmark_group("prune");
    group.sample_size(10);
    for (name, users, events_each) in PRUNED_LOGS {
        group.throughput(Throughput::Elements((users * events_each) as u64));
        let mut waits = Vec::new();
        group.bench_function(BenchmarkId::new("pass_with_inserts_waiting", name), |b| {
            b.iter_custom(|iterations| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iterations {
                    let fixture = pruning_fixture(&runtime, users, events_each);
                    let (took, insert_waits) = runtime.block_on(prune_while_inserting(
                        &fixture,
                        (users * events_each) as u64,
                    ));
                    total += took;
                    waits = insert_waits;
                }
                total
            })
        });
        waits.sort();
        if let (Some(longest), Some(median)) = (waits.last(), waits.get(waits.len() / 2)) {
            eprintln!(
                "prune/{name}: {} lone inserts during the last pass; median wait {median:?}, longest {longest:?}",
                waits.len()
            );
        }
    }
    group.finish();
}

/// A store with the usual two users plus `users` users whose logs hold
/// `events_each` events dated an hour ago.
fn pruning_fixture(runtime: &Runtime, users: usize, events_each: usize) -> Fixture {
    let fixture = Fixture::new(runtime, Synchronous::Normal);
    let an_hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    runtime.block_on(async {
        for n in 0..users {
            let user = bench_user(&fixture.store, &format!("pruned-{n}"), an_hour_ago).await;
            let log = vec![(user, Event::FriendRemoved { user_id: user }); events_each];
            fixture
                .store
                .append_events(&log, an_hour_ago)
                .await
                .expect("events stored");
        }
    });
    fixture
}

/// Prunes everything older than a minute ago (`expected` events);
/// meanwhile inserts one message at a time. Returns the pass's time and
/// each insert's.
async fn prune_while_inserting(
    fixture: &Fixture,
    expected: u64,
) -> (std::time::Duration, Vec<std::time::Duration>) {
    let pruning_done = std::sync::atomic::AtomicBool::new(false);
    let pass = async {
        let started = std::time::Instant::now();
        let removed = fixture
            .store
            .prune_events(OffsetDateTime::now_utc() - time::Duration::minutes(1))
            .await
            .expect("prune");
        assert_eq!(removed, expected);
        pruning_done.store(true, std::sync::atomic::Ordering::Relaxed);
        started.elapsed()
    };
    let inserts = async {
        let mut waits = Vec::new();
        while !pruning_done.load(std::sync::atomic::Ordering::Relaxed) {
            let started = std::time::Instant::now();
            fixture
                .store
                .insert_message(&fixture.message(), &fixture.recipients())
                .await
                .expect("insert");
            waits.push(started.elapsed());
        }
        waits
    };
    tokio::join!(pass, inserts)
}

criterion_group!(
    benches,
    insert_one,
    insert_concurrent,
    insert_crowd,
    history_page,
    round_trip,
    prune
);
criterion_main!(benches);
