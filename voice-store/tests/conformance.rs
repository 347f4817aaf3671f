//! Runs the public conformance suite against a real SQLite file, the way
//! another backend's tests would call it.

use voice_store::{SqliteOptions, SqliteStore, Synchronous, conformance};

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("voice.db"), SqliteOptions::default()).unwrap();
    conformance::run_all(&store).await;
    store.close().await;
}

#[tokio::test]
async fn the_suite_runs_again_on_a_database_that_has_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.db");
    let options = SqliteOptions {
        synchronous: Synchronous::Full,
        readers: 1,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options.clone()).unwrap();
    conformance::run_all(&store).await;
    store.close().await;

    let reopened = SqliteStore::open(&path, options).unwrap();
    conformance::run_all(&reopened).await;
    reopened.close().await;
}

/// The checks that read a global list (here the STUN overrides) look only
/// at their own rows, so two runs editing one database at once both pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_overrides_pass_beside_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("voice.db"), SqliteOptions::default()).unwrap();
    tokio::join!(
        conformance::ice_overrides(&store),
        conformance::ice_overrides(&store)
    );
    store.close().await;
}
