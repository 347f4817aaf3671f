//! Acknowledged writes survive `kill -9`: a child process inserts messages
//! and prints each id once its insert is acknowledged; the test kills it
//! with SIGKILL mid-stream, reopens the database and looks for every
//! printed id. Whatever was committed is whole: every stored message has
//! its seq and its event in both users' logs.
//!
//! This checks the process-crash guarantee of both synchronous levels. The
//! power-loss guarantee of `full` cannot be tested without cutting power.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use voice_core::ids::MessageId;
use voice_core::model::Conversation;
use voice_core::store::{EventStore, MessageStore};
use voice_core::wire::{Event, Replay};
use voice_store::{SqliteOptions, SqliteStore};

/// How many acknowledged inserts to wait for before killing.
const ACKNOWLEDGED: usize = 200;

async fn acknowledged_writes_survive_sigkill(level: &str, tasks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_durability-writer"))
        .arg(&path)
        .arg(level)
        .arg(tasks.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the writer starts");
    let stdout = child.stdout.take().unwrap();
    let mut ids = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("the writer's output is readable");
        ids.push(line.parse::<MessageId>().expect("the writer prints ids"));
        if ids.len() == ACKNOWLEDGED {
            break;
        }
    }
    assert_eq!(ids.len(), ACKNOWLEDGED, "the writer stopped early");
    // On Unix this is SIGKILL: no destructor, no flush, no checkpoint.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");

    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    for id in &ids {
        let message = store.get_message(*id).await.unwrap().unwrap_or_else(|| {
            panic!("acknowledged message {id} was lost ({level}, {tasks} tasks)")
        });
        assert_eq!(message.body, Some(format!("durable {id}")));
    }

    // Committed, acknowledged or not: messages 1..=n, each announced in
    // both logs in the same order.
    let conversation = store
        .get_message(ids[0])
        .await
        .unwrap()
        .unwrap()
        .conversation;
    let Conversation::Direct { low, high } = conversation else {
        panic!("the writer writes to a direct conversation");
    };
    let stored = store
        .list_messages(conversation, None, None, u32::MAX)
        .await
        .unwrap();
    let n = stored.len() as u64;
    assert!(n >= ACKNOWLEDGED as u64);
    let seqs: Vec<u64> = stored.iter().rev().map(|message| message.seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    for user in [low, high] {
        let Replay::Events(events) = store.events_since(user, 0, u32::MAX).await.unwrap() else {
            panic!("nothing was pruned");
        };
        let announced: Vec<MessageId> = events
            .iter()
            .map(|delivery| match &*delivery.event {
                Event::MessageCreated { message } => message.id,
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        let in_order: Vec<MessageId> = stored.iter().rev().map(|message| message.id).collect();
        assert_eq!(announced, in_order, "{user}'s log ({level}, {tasks} tasks)");
    }
    store.close().await;
}

#[tokio::test]
async fn normal_one_writer() {
    acknowledged_writes_survive_sigkill("normal", 1).await;
}

#[tokio::test]
async fn normal_concurrent_writers() {
    acknowledged_writes_survive_sigkill("normal", 16).await;
}

#[tokio::test]
async fn full_one_writer() {
    acknowledged_writes_survive_sigkill("full", 1).await;
}

#[tokio::test]
async fn full_concurrent_writers() {
    acknowledged_writes_survive_sigkill("full", 16).await;
}
