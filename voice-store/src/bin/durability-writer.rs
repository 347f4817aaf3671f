//! A helper for the kill -9 durability test (tests/kill9.rs): writes
//! messages through the async API and prints each message id on stdout the
//! moment its insert is acknowledged. The test kills it at an arbitrary
//! point and checks that every printed id survived.
//!
//! Usage: `durability-writer PATH normal|full [TASKS]`. With several tasks
//! the inserts overlap, so acknowledgements come from group commits.

use std::io::Write;
use std::path::PathBuf;

use time::OffsetDateTime;
use voice_core::ids::MessageId;
use voice_core::model::{Conversation, Identity, NewMessage};
use voice_core::store::{MessageStore, UserStore};
use voice_store::{SqliteOptions, SqliteStore, Synchronous};

/// The body stored for a message id, so the test can check content too.
fn body(id: MessageId) -> String {
    format!("durable {id}")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(level)) = (args.next(), args.next()) else {
        eprintln!("usage: durability-writer PATH normal|full [TASKS]");
        std::process::exit(2);
    };
    let synchronous = match level.as_str() {
        "normal" => Synchronous::Normal,
        "full" => Synchronous::Full,
        other => {
            eprintln!("unknown synchronous level {other:?}");
            std::process::exit(2);
        }
    };
    let tasks: usize = args
        .next()
        .map_or(1, |n| n.parse().expect("TASKS is a number"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime starts");
    runtime.block_on(run(PathBuf::from(path), synchronous, tasks.max(1)));
}

async fn run(path: PathBuf, synchronous: Synchronous, tasks: usize) {
    let options = SqliteOptions {
        synchronous,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options).expect("the store opens");
    // The writer talks to a partner; each message goes to both logs, as
    // the server's would.
    let mut users = Vec::new();
    for subject in ["writer", "partner"] {
        let identity = Identity::new("https://durability.example", subject);
        let (user, _) = store
            .upsert_user(&identity, OffsetDateTime::now_utc())
            .await
            .expect("the writer's users are stored");
        users.push(user.id);
    }
    let (user, partner) = (users[0], users[1]);
    let conversation = Conversation::direct(user, partner);

    let mut writers = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            // Runs until killed, or until an insert fails.
            loop {
                let id = MessageId::new();
                let message = NewMessage {
                    id,
                    conversation,
                    sender: user,
                    body: body(id),
                    client_id: None,
                    created_at: OffsetDateTime::now_utc(),
                };
                if let Err(error) = store.insert_message(&message, &[user, partner]).await {
                    eprintln!("insert failed: {error}");
                    return;
                }
                let mut out = std::io::stdout().lock();
                writeln!(out, "{id}").expect("stdout is open");
                out.flush().expect("stdout is open");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    // Only reached after a failure: the test then sees the output stop.
    std::process::exit(1);
}
