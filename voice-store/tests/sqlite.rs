//! SQLite-specific behaviour behind the public API: reopening, schema
//! versions, concurrency and closing.

use std::collections::HashMap;
use std::path::Path;

use time::OffsetDateTime;
use voice_core::ErrorCode;
use voice_core::ids::{CallId, MessageId, UserId};
use voice_core::model::{CallOutcome, CallRecord, Conversation, Identity, NewMessage, User};
use voice_core::store::{CallStore, EventStore, IceStore, MessageStore, Store, UserStore};
use voice_core::wire::{Delivery, Event, Replay};
use voice_store::{SCHEMA_VERSION, SqliteOptions, SqliteStore};

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).unwrap()
}

/// A store in `dir` that prunes at most `users` users and `events` events
/// per write.
fn pruning_in_steps(dir: &Path, users: usize, events: usize) -> SqliteStore {
    let options = SqliteOptions {
        prune_users_per_write: users,
        prune_events_per_write: events,
        ..SqliteOptions::default()
    };
    SqliteStore::open(&dir.join("voice.db"), options).unwrap()
}

async fn a_user(store: &SqliteStore) -> User {
    let identity = Identity::new("https://tests.example", MessageId::new().to_string());
    store
        .upsert_user(&identity, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .0
}

fn message(sender: &User, to: &User, body: String) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation: Conversation::direct(sender.id, to.id),
        sender: sender.id,
        body,
        client_id: None,
        created_at: OffsetDateTime::now_utc(),
    }
}

fn schema_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

#[tokio::test]
async fn reopening_keeps_data_and_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.db");
    let store = open(&path);
    let user = a_user(&store).await;
    store.close().await;
    assert_eq!(schema_version(&path), SCHEMA_VERSION);

    let store = open(&path);
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(user));
    store.close().await;
    assert_eq!(schema_version(&path), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_database_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.db");
    open(&path).close().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();

    let error = match SqliteStore::open(&path, SqliteOptions::default()) {
        Ok(_) => panic!("a newer schema must be refused"),
        Err(error) => error,
    };
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.message.contains("newer"), "{}", error.message);
    // Refusing must not touch the file.
    assert_eq!(schema_version(&path), SCHEMA_VERSION + 1);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.db");
    std::fs::write(
        &path,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    let error = SqliteStore::open(&path, SqliteOptions::default())
        .err()
        .unwrap();
    assert_eq!(error.code, ErrorCode::Unavailable, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_writes_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let sender = a_user(&store).await;
    let partner = a_user(&store).await;
    let recipients = [sender.id, partner.id];
    let before = store.stats();

    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = store.clone();
            let new = message(&sender, &partner, format!("message {i}"));
            tokio::spawn(async move {
                store
                    .insert_message(&new, &recipients)
                    .await
                    .map(|m| (m, new))
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let (stored, new) = task.await.unwrap().unwrap();
        assert_eq!(stored.message.id, new.id);
        ids.push(new.id);
    }
    for id in ids {
        assert!(store.get_message(id).await.unwrap().is_some(), "{id} lost");
    }
    let after = store.stats();
    assert_eq!(after.writes - before.writes, 400, "{after:?}");
    // How the writes were grouped depends on timing; that they were never
    // more than one transaction each does not.
    assert!(after.batches - before.batches <= 400, "{after:?}");
    assert_eq!(after.failed_batches, 0);
    store.close().await;
}

#[tokio::test]
async fn the_last_handle_to_go_closes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.db");
    let wal = dir.path().join("voice.db-wal");
    let store = open(&path);
    let sender = a_user(&store).await;
    let partner = a_user(&store).await;
    let recipients = [sender.id, partner.id];
    let mut pending = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let new = message(&sender, &partner, format!("queued {i}"));
        pending.push(new.id);
        tasks.push(tokio::spawn(async move {
            store.insert_message(&new, &recipients).await.map(|_| ())
        }));
    }
    // Other handles live on in the tasks: closing this one leaves the
    // database open for them.
    store.close().await;
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // The tasks dropped the last handles: the writer has checkpointed and
    // closed, which removes the WAL.
    assert!(
        !wal.exists(),
        "the database is closed once no handle is left"
    );

    let reopened = open(&path);
    for id in pending {
        assert!(
            reopened.get_message(id).await.unwrap().is_some(),
            "{id} lost"
        );
    }
    assert!(reopened.ping().await.is_ok());
    reopened.close().await;
    assert!(!wal.exists());
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.db");
    let store = open(&path);
    let user = a_user(&store).await;
    let clone = store.clone();
    drop(store);
    assert!(clone.ping().await.is_ok(), "a clone keeps the store open");
    drop(clone);
    assert!(!dir.path().join("voice.db-wal").exists());
    let store = open(&path);
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(user));
}

/// Eight tasks send 100 messages each into one conversation at once. The
/// writer numbers them 1..=800 without a gap or a repeat, and each user's
/// events follow the messages' order with their own gapless seqs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_get_gapless_seqs_and_ordered_events() {
    const TASKS: usize = 8;
    const EACH: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let a = a_user(&store).await;
    let b = a_user(&store).await;
    let recipients = [a.id, b.id];

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                let mut inserted = Vec::new();
                for i in 0..EACH {
                    let sender = if (task + i) % 2 == 0 { &a } else { &b };
                    let to = if sender.id == a.id { &b } else { &a };
                    let new = message(sender, to, format!("task {task} message {i}"));
                    inserted.push(store.insert_message(&new, &recipients).await.unwrap());
                }
                inserted
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), TASKS * EACH);
    assert!(all.iter().all(|inserted| inserted.created));

    all.sort_by_key(|inserted| inserted.message.seq);
    let seqs: Vec<u64> = all.iter().map(|inserted| inserted.message.seq).collect();
    assert_eq!(seqs, (1..=(TASKS * EACH) as u64).collect::<Vec<_>>());

    // In message order, each user's delivery seqs go 1, 2, 3...: strictly
    // increasing, so a device replaying its log sees messages in order.
    let mut last: HashMap<UserId, u64> = HashMap::new();
    for inserted in &all {
        let users: Vec<UserId> = inserted.deliveries.iter().map(|d| d.user_id).collect();
        assert_eq!(users, recipients);
        for delivery in &inserted.deliveries {
            let previous = last.insert(delivery.user_id, delivery.seq).unwrap_or(0);
            assert_eq!(delivery.seq, previous + 1, "{delivery:?}");
            assert_eq!(
                *delivery.event,
                Event::MessageCreated {
                    message: inserted.message.clone()
                }
            );
        }
    }
    // The logs agree with what the inserts reported.
    for user in recipients {
        assert_eq!(
            store.latest_event_seq(user).await.unwrap(),
            (TASKS * EACH) as u64
        );
        let Replay::Events(replayed) = store.events_since(user, 0, 1000).await.unwrap() else {
            panic!("nothing was pruned");
        };
        let reported: Vec<Delivery> = all
            .iter()
            .flat_map(|inserted| inserted.deliveries.iter())
            .filter(|delivery| delivery.user_id == user)
            .cloned()
            .collect();
        assert_eq!(replayed, reported);
    }
    let listed = store
        .list_messages(Conversation::direct(a.id, b.id), None, None, 1000)
        .await
        .unwrap();
    assert_eq!(listed.len(), TASKS * EACH);
    assert!(listed.windows(2).all(|w| w[0].seq == w[1].seq + 1));
    store.close().await;
}

/// The commit feed gets every committed delivery once, each user's in seq
/// order, and nothing of a write that failed in a batch that committed
/// (its savepoint rolled back); a second feed is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_commit_feed_gets_each_committed_delivery_once_in_seq_order() {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let (fed, commits) = std::sync::mpsc::channel::<Vec<Delivery>>();
    assert!(store.feed_commits(Box::new(move |deliveries| {
        fed.send(deliveries).unwrap();
    })));
    assert!(!store.feed_commits(Box::new(|_| panic!("a second feed is never called"))));
    let a = a_user(&store).await;
    let b = a_user(&store).await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                let mut stored = Vec::new();
                for i in 0..EACH {
                    let new = message(&a, &b, format!("task {task} message {i}"));
                    // Every fifth names a recipient who does not exist, so
                    // it fails inside batches that others commit.
                    if i % 5 == 0 {
                        let refused = store.insert_message(&new, &[a.id, UserId::new()]).await;
                        assert_eq!(refused.unwrap_err().code, ErrorCode::NotFound);
                    } else {
                        let inserted = store.insert_message(&new, &[a.id, b.id]).await.unwrap();
                        stored.extend(inserted.deliveries);
                    }
                }
                stored
            })
        })
        .collect();
    let mut reported = Vec::new();
    for task in tasks {
        reported.extend(task.await.unwrap());
    }
    // Closing drops the feed, which ends the channel after the last batch.
    store.close().await;
    let fed: Vec<Delivery> = commits.iter().flatten().collect();

    let stored_each = (TASKS * EACH * 4 / 5) as u64;
    for user in [a.id, b.id] {
        let seqs: Vec<u64> = fed
            .iter()
            .filter(|delivery| delivery.user_id == user)
            .map(|delivery| delivery.seq)
            .collect();
        assert_eq!(seqs, (1..=stored_each).collect::<Vec<_>>());
    }
    let by_seq = |deliveries: &mut Vec<Delivery>| {
        deliveries.sort_by_key(|delivery| (delivery.user_id, delivery.seq));
    };
    let mut fed = fed;
    by_seq(&mut fed);
    by_seq(&mut reported);
    assert_eq!(fed, reported);
}

/// A message and its events are one transaction: when appending to one
/// recipient's log fails (an unknown user), the message is not stored and
/// no other recipient got the event.
#[tokio::test]
async fn a_message_and_its_events_commit_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let a = a_user(&store).await;
    let b = a_user(&store).await;
    let new = message(&a, &b, "never stored".to_owned());
    let error = store
        .insert_message(&new, &[a.id, UserId::new()])
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound, "{error}");
    assert_eq!(store.get_message(new.id).await.unwrap(), None);
    assert_eq!(store.latest_event_seq(a.id).await.unwrap(), 0);
    assert!(store.list_conversations(a.id).await.unwrap().is_empty());
    // The conversation's numbering did not move either.
    let next = store
        .insert_message(&message(&a, &b, "first".to_owned()), &[a.id, b.id])
        .await
        .unwrap();
    assert_eq!(next.message.seq, 1);
    assert_eq!(next.deliveries[0].seq, 1);
    store.close().await;
}

/// Deleting a message erases its body from the logged `message.created`
/// events too, so a replay after the deletion never shows it.
#[tokio::test]
async fn deleting_a_message_erases_its_body_from_the_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let a = a_user(&store).await;
    let b = a_user(&store).await;
    let new = message(&a, &b, "regrettable".to_owned());
    let inserted = store.insert_message(&new, &[a.id, b.id]).await.unwrap();
    let deletion = store
        .delete_message(new.id, OffsetDateTime::now_utc(), &[b.id])
        .await
        .unwrap()
        .unwrap();
    for user in [a.id, b.id] {
        let Replay::Events(events) = store.events_since(user, 0, 10).await.unwrap() else {
            panic!("nothing was pruned");
        };
        assert_eq!(
            *events[0].event,
            Event::MessageCreated {
                message: deletion.message.clone()
            },
            "the logged message is the tombstone"
        );
        assert_eq!(events[0].seq, inserted.deliveries[0].seq);
    }
    let raw: Vec<String> = {
        let conn = rusqlite::Connection::open(dir.path().join("voice.db")).unwrap();
        let mut statement = conn.prepare("SELECT event FROM events").unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(raw.len(), 3);
    assert!(
        raw.iter().all(|json| !json.contains("regrettable")),
        "{raw:?}"
    );
    store.close().await;
}

/// A read mark stops at the newest message, so marking ahead cannot hide
/// the messages still to come.
#[tokio::test]
async fn a_read_mark_stops_at_the_newest_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let a = a_user(&store).await;
    let b = a_user(&store).await;
    let conversation = Conversation::direct(a.id, b.id);
    store
        .insert_message(&message(&b, &a, "one".to_owned()), &[])
        .await
        .unwrap();
    store.mark_read(a.id, conversation, 1_000).await.unwrap();
    store
        .insert_message(&message(&b, &a, "two".to_owned()), &[])
        .await
        .unwrap();
    let listed = store.list_conversations(a.id).await.unwrap();
    assert_eq!((listed[0].last_read_seq, listed[0].unread), (1, 1));
    // u64::MAX does not overflow anything either.
    store.mark_read(a.id, conversation, u64::MAX).await.unwrap();
    let listed = store.list_conversations(a.id).await.unwrap();
    assert_eq!((listed[0].last_read_seq, listed[0].unread), (2, 0));
    assert_eq!(
        store
            .list_messages(conversation, Some(u64::MAX), Some(u64::MAX), 10)
            .await
            .unwrap()
            .len(),
        2
    );
    store.close().await;
}

/// `set_last_seen` of a user who does not exist is an error, not a no-op.
#[tokio::test]
async fn last_seen_of_an_unknown_user_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let error = store
        .set_last_seen(UserId::new(), OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);
    store.close().await;
}

/// A call just started at `at`.
fn call(caller: &User, callee: &User, at: OffsetDateTime) -> CallRecord {
    CallRecord {
        id: CallId::new(),
        caller: caller.id,
        callee: callee.id,
        started_at: at,
        answered_at: None,
        ended_at: None,
        outcome: None,
        reason: None,
    }
}

/// A whole second, so it reads back exactly.
fn at_second(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap()
}

/// A call has an outcome exactly when it has an end time: a record with
/// one and not the other is refused, and nothing is stored.
#[tokio::test]
async fn a_call_record_with_an_outcome_but_no_end_or_the_reverse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let (a, b) = (a_user(&store).await, a_user(&store).await);
    let no_end = CallRecord {
        outcome: Some(CallOutcome::Busy),
        ..call(&a, &b, at_second(0))
    };
    let no_outcome = CallRecord {
        ended_at: Some(at_second(1)),
        ..call(&a, &b, at_second(0))
    };
    for record in [no_end, no_outcome] {
        let error = store.insert_call(&record).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest, "{record:?}");
        assert_eq!(store.get_call(record.id).await.unwrap(), None);
    }
    store.close().await;
}

/// Answering again while the call is on reports true (the call is known
/// and on) but keeps the first answer time.
#[tokio::test]
async fn answering_twice_keeps_the_first_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let (a, b) = (a_user(&store).await, a_user(&store).await);
    let record = call(&a, &b, at_second(0));
    store.insert_call(&record).await.unwrap();
    assert!(
        store
            .mark_call_answered(record.id, at_second(2))
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_call_answered(record.id, at_second(3))
            .await
            .unwrap()
    );
    let stored = store.get_call(record.id).await.unwrap().unwrap();
    assert_eq!(stored.answered_at, Some(at_second(2)));
    store.close().await;
}

/// A call to oneself is listed once, not once per side; calls started in
/// the same millisecond are listed newest id first.
#[tokio::test]
async fn call_history_lists_a_self_call_once_and_breaks_ties_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    let (a, b) = (a_user(&store).await, a_user(&store).await);
    let to_self = call(&a, &a, at_second(0));
    let first = call(&a, &b, at_second(1));
    let second = call(&b, &a, at_second(1));
    for record in [&to_self, &first, &second] {
        store.insert_call(record).await.unwrap();
    }
    let listed: Vec<CallId> = store
        .list_calls(a.id, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.id)
        .collect();
    assert_eq!(listed, vec![second.id, first.id, to_self.id]);
    store.close().await;
}

/// STUN overrides first edited in the same millisecond are listed by URL;
/// a later edit keeps a URL's first place even when its clock reads
/// earlier.
#[tokio::test]
async fn stun_overrides_break_ties_by_url_and_keep_the_first_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("voice.db"));
    for (url, added, second) in [
        ("stun:c.example", true, 1),
        ("stun:b.example", false, 1),
        ("stun:a.example", true, 2),
        ("stun:c.example", false, 0),
    ] {
        store
            .set_stun_override(url, added, at_second(second))
            .await
            .unwrap();
    }
    assert_eq!(
        store.stun_overrides().await.unwrap(),
        vec![
            ("stun:b.example".to_owned(), false),
            ("stun:c.example".to_owned(), false),
            ("stun:a.example".to_owned(), true),
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn pruning_goes_through_every_user_a_batch_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = pruning_in_steps(dir.path(), 2, usize::MAX);
    let old = at_second(1_000);
    let mut users = Vec::new();
    for _ in 0..5 {
        let user = a_user(&store).await;
        let logged = store
            .append_events(&[(user.id, Event::FriendRemoved { user_id: user.id })], old)
            .await
            .unwrap();
        assert_eq!(logged[0].seq, 1);
        users.push(user);
    }
    let writes_before = store.stats().writes;

    let removed = store.prune_events(at_second(2_000)).await.unwrap();
    assert_eq!(removed, 5);
    for user in &users {
        assert_eq!(
            store.events_since(user.id, 0, 10).await.unwrap(),
            Replay::ResyncRequired { latest_seq: 1 }
        );
    }
    // Five users, two per write: three writes, the last one short.
    assert_eq!(store.stats().writes - writes_before, 3);
}

#[tokio::test]
async fn pruning_deletes_at_most_its_event_limit_per_write_and_finishes_a_log_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = pruning_in_steps(dir.path(), 10, 3);
    let (old, new) = (at_second(1_000), at_second(3_000));
    let log = |user: &User, count: usize| {
        vec![(user.id, Event::FriendRemoved { user_id: user.id }); count]
    };
    // Ids are made in creation order, so pruning walks the users as made.
    let long = a_user(&store).await;
    let short = a_user(&store).await;
    let recent = a_user(&store).await;
    store.append_events(&log(&long, 7), old).await.unwrap();
    store.append_events(&log(&long, 1), new).await.unwrap();
    store.append_events(&log(&short, 2), old).await.unwrap();
    store.append_events(&log(&recent, 1), new).await.unwrap();
    let writes_before = store.stats().writes;

    let removed = store.prune_events(at_second(2_000)).await.unwrap();
    assert_eq!(removed, 9);
    // Three of the long log's seven, three more, then its last one with the
    // short log's two; a fourth write finds nothing left to prune.
    assert_eq!(store.stats().writes - writes_before, 4);
    let kept = |replay: Replay| match replay {
        Replay::Events(events) => events.iter().map(|event| event.seq).collect::<Vec<_>>(),
        other => panic!("expected events, got {other:?}"),
    };
    assert_eq!(
        kept(store.events_since(long.id, 7, 10).await.unwrap()),
        vec![8]
    );
    assert_eq!(
        store.events_since(long.id, 6, 10).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 8 },
        "seq 7 went in the third write, and the log remembers it"
    );
    assert_eq!(
        store.events_since(short.id, 0, 10).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 2 }
    );
    assert_eq!(
        kept(store.events_since(recent.id, 0, 10).await.unwrap()),
        vec![1]
    );
    store.close().await;
}

#[tokio::test]
async fn pruning_with_the_largest_limits_prunes_everything_in_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = pruning_in_steps(dir.path(), usize::MAX, usize::MAX);
    let user = a_user(&store).await;
    let log = vec![(user.id, Event::FriendRemoved { user_id: user.id }); 5];
    store.append_events(&log, at_second(1_000)).await.unwrap();
    let writes_before = store.stats().writes;

    assert_eq!(store.prune_events(at_second(2_000)).await.unwrap(), 5);
    assert_eq!(store.stats().writes - writes_before, 1);
    store.close().await;
}
