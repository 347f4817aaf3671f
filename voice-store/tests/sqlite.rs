//! SQLite-specific behaviour behind the public API: reopening, schema
//! versions, concurrency and closing.

use std::path::Path;

use time::OffsetDateTime;
use voice_core::ErrorCode;
use voice_core::ids::MessageId;
use voice_core::model::{Conversation, Identity, NewMessage, User};
use voice_core::store::{MessageStore, Store, UserStore};
use voice_store::{SCHEMA_VERSION, SqliteOptions, SqliteStore};

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).unwrap()
}

async fn a_user(store: &SqliteStore) -> User {
    let identity = Identity {
        issuer: "https://tests.example".to_owned(),
        subject: MessageId::new().to_string(),
        email: None,
        email_verified: false,
        name: None,
        picture: None,
        hosted_domain: None,
    };
    store
        .upsert_user(&identity, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .0
}

fn message(sender: &User, body: String) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation: Conversation::direct(sender.id, voice_core::UserId::new()),
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
    let before = store.stats();

    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = store.clone();
            let new = message(&sender, format!("message {i}"));
            tokio::spawn(async move { store.insert_message(&new).await.map(|m| (m, new)) })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let (stored, new) = task.await.unwrap().unwrap();
        assert_eq!(stored.id, new.id);
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
    let mut pending = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let new = message(&sender, format!("queued {i}"));
        pending.push(new.id);
        tasks.push(tokio::spawn(async move {
            store.insert_message(&new).await.map(|_| ())
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
