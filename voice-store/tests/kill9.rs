//! Acknowledged writes survive `kill -9`: a child process inserts messages
//! and prints each id once its insert is acknowledged; the test kills it
//! with SIGKILL mid-stream, reopens the database and looks for every
//! printed id.
//!
//! This checks the process-crash guarantee of both synchronous levels. The
//! power-loss guarantee of `full` cannot be tested without cutting power.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use voice_core::ids::MessageId;
use voice_core::store::MessageStore;
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
