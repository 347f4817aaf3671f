//! `voice-load` runs each workload end to end at a small scale against the
//! real `voice-server` binary (and the baseline relay), and its JSON result
//! says what it measured. Figures are never asserted: only that the
//! bookkeeping holds (every acknowledged message delivered exactly once).

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let output = Command::new(env!("CARGO_BIN_EXE_voice-load"))
        .args(args)
        .args(["--quiet", "--out", out.to_str().unwrap()])
        .args(["--server-bin", env!("CARGO_BIN_EXE_voice-server")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "voice-load {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

#[test]
fn direct_messages_against_the_server_and_the_baseline() {
    for via in ["socket", "http"] {
        let result = run(&[
            "dm",
            "--clients",
            "6",
            "--rate",
            "60",
            "--duration",
            "1",
            "--baseline",
            "--via",
            via,
        ]);
        check_direct(&result, via);
    }
}

fn check_direct(result: &serde_json::Value, via: &str) {
    for side in ["voice", "baseline"] {
        let report = &result[side];
        assert_eq!(report["via"], via, "{side}: {report}");
        assert_eq!(report["sent"], 60, "{side}: {report}");
        assert_eq!(report["acked"], 60, "{side}: {report}");
        assert_eq!(report["deliveries"], 60, "{side}: {report}");
        assert_eq!(report["exactly_once"], true, "{side}: {report}");
        assert!(report["latency_us"]["p50"].as_u64().unwrap() > 0);
        assert!(
            report["server_cpu_secs"].is_number() && report["server_rss_max_bytes"].is_number()
        );
    }
    assert!(result["ratio_to_baseline"]["acked_per_sec"].is_number());
    assert!(result["machine"]["cores"].as_u64().unwrap() >= 1);
}

#[test]
fn group_fan_out_reaches_every_other_member_once() {
    let result = run(&[
        "fanout",
        "--clients",
        "8",
        "--rate",
        "20",
        "--duration",
        "1",
    ]);
    let report = &result["voice"];
    assert_eq!(report["acked"], 20, "{report}");
    assert_eq!(report["deliveries"], 20 * 7, "{report}");
    assert_eq!(report["exactly_once"], true, "{report}");
}

#[test]
fn idle_connections_and_a_call_storm() {
    let idle = run(&["idle", "--clients", "50", "--duration", "0.5"]);
    assert_eq!(idle["voice"]["connections"], 50);
    assert!(idle["voice"]["rss_per_connection_bytes"].is_number());

    let calls = run(&[
        "calls",
        "--clients",
        "20",
        "--rate",
        "10",
        "--duration",
        "1",
    ]);
    let report = &calls["voice"];
    assert_eq!(report["acked"], 10, "{report}");
    // The ring timeout is 2 s; the tool waits for the expiries.
    assert_eq!(report["calls_expired_seen"], 10, "{report}");
}

#[test]
fn only_loopback_targets() {
    let output = Command::new(env!("CARGO_BIN_EXE_voice-load"))
        .args(["dm", "--target", "http://192.0.2.1:8080", "--quiet"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
