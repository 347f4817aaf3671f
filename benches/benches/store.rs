//! Store benchmarks: what one acknowledged message insert (the message and
//! its event in both users' logs) costs at each durability level, how much
//! group commit recovers under concurrency, how fast a history page reads,
//! and, for comparison, the same writes on raw rusqlite with the same
//! pragmas but none of the store's threads.
//!
//! `cargo bench -p voice-benches --bench store -- --test` runs each once as
//! a smoke test.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use voice_core::ids::{MessageId, UserId};
use voice_core::model::{Conversation, Identity, Message, NewMessage};
use voice_core::store::{MessageStore, UserStore};
use voice_core::wire::Event;
use voice_store::{SqliteOptions, SqliteStore, Synchronous};

/// Concurrent inserts per iteration of the group-commit benchmark.
const CONCURRENT: usize = 64;
/// Messages in the conversation the history benchmark pages through.
const HISTORY: usize = 10_000;

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
            let identity = Identity {
                issuer: "https://bench.example".to_owned(),
                subject: subject.to_owned(),
                email: None,
                email_verified: false,
                name: None,
                picture: None,
                hosted_domain: None,
            };
            let (user, _) = runtime
                .block_on(store.upsert_user(&identity, OffsetDateTime::now_utc()))
                .expect("user stored");
            user.id
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
    let mut inserts = JoinSet::new();
    for _ in 0..count {
        let store = fixture.store.clone();
        let new = fixture.message();
        let recipients = fixture.recipients();
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

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One insert at a time, each awaited: the latency of a lone write, next to
/// raw rusqlite doing one transaction per insert.
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
        raw_insert_one(&mut group, &runtime, fixture, level, name);
    }
    group.finish();
}

/// The same writes straight on a connection: same file layout, same
/// pragmas, prepared statements and one `BEGIN IMMEDIATE` transaction per
/// message, on the calling thread. Like the store, it numbers the message,
/// records both participants and appends the event to both logs.
fn raw_insert_one(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    fixture: Fixture,
    level: Synchronous,
    name: &str,
) {
    let Fixture {
        _dir: dir,
        store,
        sender,
        partner,
        conversation,
    } = fixture;
    // The store created the schema; it must be closed before the raw
    // connection takes over, so only one writer is measured.
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
    let mut next_seq = conn
        .prepare("SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE conversation = ?1")
        .expect("prepare");
    let mut insert = conn
        .prepare(
            "INSERT INTO messages (id, conversation, seq, sender, body, client_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .expect("prepare");
    let mut participant = conn
        .prepare(
            "INSERT INTO direct_participants (user_id, conversation) VALUES (?1, ?2)
             ON CONFLICT (user_id, conversation) DO NOTHING",
        )
        .expect("prepare");
    let mut event_seq = conn
        .prepare(
            "UPDATE users SET last_event_seq = last_event_seq + 1 WHERE id = ?1
             RETURNING last_event_seq",
        )
        .expect("prepare");
    let mut append = conn
        .prepare(
            "INSERT INTO events (user_id, seq, event, created_at, message_id)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .expect("prepare");
    let conversation_text = conversation.to_string();
    let users = [sender.to_string(), partner.to_string()];
    group.bench_function(BenchmarkId::new("raw_rusqlite", name), |b| {
        b.iter(|| {
            let id = MessageId::new();
            let created_at = OffsetDateTime::now_utc();
            let now = (created_at.unix_timestamp_nanos() / 1_000_000) as i64;
            let body = "a message of an ordinary length, about sixty characters long";
            conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
            let seq: i64 = next_seq
                .query_row([&conversation_text], |row| row.get(0))
                .expect("seq");
            insert
                .execute(rusqlite::params![
                    id.to_string(),
                    conversation_text,
                    seq,
                    users[0],
                    body,
                    None::<String>,
                    now
                ])
                .expect("insert");
            for user in &users {
                participant
                    .execute([user, &conversation_text])
                    .expect("participant");
            }
            let event = Event::MessageCreated {
                message: Message {
                    id,
                    conversation,
                    seq: seq as u64,
                    sender,
                    body: Some(body.to_owned()),
                    client_id: None,
                    created_at,
                    deleted_at: None,
                },
            };
            let json = serde_json::to_string(&event).expect("events serialize");
            for user in &users {
                let event_seq: i64 = event_seq
                    .query_row([user], |row| row.get(0))
                    .expect("event seq");
                append
                    .execute(rusqlite::params![
                        user,
                        event_seq,
                        json,
                        now,
                        id.to_string()
                    ])
                    .expect("append");
            }
            conn.execute_batch("COMMIT").expect("commit");
        })
    });
}

/// Many inserts in flight at once: group commit shares transactions (and,
/// with `full`, syncs) among them.
fn insert_concurrent(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
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
    }
    group.finish();
}

/// One page of 50 from a conversation of 10,000 messages: the newest page
/// and a page from the middle (a cursor).
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
    group.bench_function("newest_50", |b| {
        b.iter(|| {
            let page = runtime
                .block_on(
                    fixture
                        .store
                        .list_messages(fixture.conversation, None, None, 50),
                )
                .expect("list");
            black_box(page)
        })
    });
    group.bench_function("middle_50", |b| {
        b.iter(|| {
            let page = runtime
                .block_on(
                    fixture
                        .store
                        .list_messages(fixture.conversation, Some(middle), None, 50),
                )
                .expect("list");
            black_box(page)
        })
    });
    group.finish();
}

criterion_group!(benches, insert_one, insert_concurrent, history_page);
criterion_main!(benches);
