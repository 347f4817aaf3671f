//! The `voice-server` binary as a self-hoster runs it: it starts with no
//! configuration in a fresh directory, serves, and on SIGTERM or SIGINT
//! finishes and closes its database cleanly.

use std::process::{Child, Command};

mod support;
use std::time::Duration;
use support::start;

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("the server did not exit after the signal");
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_with_no_configuration_and_shuts_down_cleanly_on_signals() {
    for signal_name in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path(), &["--bind", "127.0.0.1:0"]);
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::new();

        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let tokens: serde_json::Value = client
            .post(format!("{base}/v1/auth/dev-login"))
            .json(&serde_json::json!({ "username": "alice" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(tokens["access_token"].is_string());

        let data = dir.path().join("voice-data");
        assert!(
            data.join("voice.db").exists(),
            "the default data dir is ./voice-data"
        );
        assert!(data.join("voice.db-wal").exists(), "WAL mode while running");

        signal(&server.child, signal_name);
        let status = wait_for_exit(&mut server.child);
        assert!(status.success(), "SIG{signal_name}: {status:?}");
        // SQLite removes the WAL when the last connection closes cleanly.
        assert!(
            !data.join("voice.db-wal").exists(),
            "database closed cleanly"
        );
    }
}

#[test]
fn refuses_dev_sign_in_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_voice-server"))
        .args(["--bind", "0.0.0.0:0"])
        .current_dir(dir.path())
        .env("VOICE_AUTH__DEV_LOGIN", "true")
        .env("VOICE_ICE__STUN_SERVERS", "[]")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not loopback"), "{stderr}");
}
