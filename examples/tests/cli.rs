//! The `voice` CLI as a user runs it, against the `voice-server` binary:
//! sign-in, friends, messages, groups, history, a live chat, and a real
//! call between two CLI processes whose recordings carry each other's
//! tone. Also its errors: not signed in, server unreachable, not a friend.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use voice_client::audio::{AudioSource, FRAME_SAMPLES, WavSource, dominant_frequency};

mod support;

const TONES: [f64; 4] = [330.0, 440.0, 660.0, 880.0];

struct User {
    config: PathBuf,
    server: String,
}

impl User {
    fn new(dir: &Path, name: &str, server: &str) -> Self {
        Self {
            config: dir.join(format!("{name}.json")),
            server: server.to_string(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_voice"));
        command
            .args(["--server", &self.server])
            .args(args)
            .env("VOICE_CONFIG", &self.config)
            .env_remove("VOICE_SERVER");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "voice {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(!output.status.success(), "voice {args:?} should fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// Forwards a child's stderr lines, so a test can wait for a status line.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return;
        }
    }
}

fn dominant_tone(path: &Path) -> f64 {
    let mut source = WavSource::open(path).unwrap();
    let mut samples = Vec::new();
    let mut frame = [0i16; FRAME_SAMPLES];
    while source.read_frame(&mut frame) {
        samples.extend_from_slice(&frame);
    }
    assert!(
        samples.len() > 48_000,
        "only {} samples recorded",
        samples.len()
    );
    dominant_frequency(&samples[9600..], &TONES).unwrap().0
}

#[test]
fn the_cli_signs_in_befriends_chats_and_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = support::start(dir.path(), &["--bind", "127.0.0.1:0"]);
    let url = format!("http://{}", server.addr);
    let alice = User::new(dir.path(), "alice", &url);
    let bob = User::new(dir.path(), "bob", &url);

    // Errors a user meets first.
    assert!(alice.fails(&["whoami"]).contains("not signed in"));
    let unreachable = User::new(dir.path(), "nobody", "http://127.0.0.1:1");
    assert!(
        unreachable
            .fails(&["login", "--dev", "x"])
            .contains("cannot reach the server")
    );

    assert!(alice.ok(&["login", "--dev", "alice"]).contains("signed in"));
    assert!(bob.ok(&["login", "--dev", "bob"]).contains("signed in"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&alice.config)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the config file holds a token");
    }
    assert!(alice.ok(&["whoami"]).contains("alice"));

    // Friends.
    assert!(
        alice
            .fails(&["send", "bob", "hi"])
            .contains("not your friend")
    );
    alice.ok(&["friends", "add", "bob"]);
    assert!(bob.ok(&["friends", "requests"]).contains("alice"));
    bob.ok(&["friends", "accept", "alice"]);
    assert!(alice.ok(&["friends"]).contains("bob"));

    // Messages, a group, history.
    alice.ok(&["send", "bob", "hello bob"]);
    assert!(bob.ok(&["history", "alice"]).contains("hello bob"));
    alice.ok(&["groups", "create", "crew", "bob"]);
    assert!(bob.ok(&["groups"]).contains("crew"));
    alice.ok(&["send", "crew", "hi crew"]);
    assert!(bob.ok(&["history", "crew"]).contains("hi crew"));

    // A live chat: Bob's incoming message shows while he can type.
    let mut chat = bob
        .command(&["chat", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, chat_out) = mpsc::channel();
    let stdout = BufReader::new(chat.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    wait_for_line(&chat_out, "type a line");
    alice.ok(&["send", "bob", "are you there?"]);
    wait_for_line(&chat_out, "are you there?");
    let mut stdin = chat.stdin.take().unwrap();
    writeln!(stdin, "typed in the chat").unwrap();
    wait_for_line(&chat_out, "typed in the chat");
    drop(stdin);
    assert!(chat.wait().unwrap().success());
    assert!(alice.ok(&["history", "bob"]).contains("typed in the chat"));

    // A real call: Bob answers automatically and records; Alice plays
    // 440 Hz and records Bob's 660 Hz.
    let bob_recording = dir.path().join("bob-heard.wav");
    let alice_recording = dir.path().join("alice-heard.wav");
    let mut answering = bob
        .command(&[
            "answer",
            "--auto",
            "--wait",
            "60",
            "--tone",
            "660",
            "--record",
            bob_recording.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let answer_lines = stderr_lines(&mut answering);
    wait_for_line(&answer_lines, "waiting for a call");
    let calling = alice
        .command(&[
            "call",
            "bob",
            "--tone",
            "440",
            "--duration",
            "3",
            "--record",
            alice_recording.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let call_log = String::from_utf8_lossy(&calling.stderr);
    assert!(calling.status.success(), "{call_log}");
    for status in ["ringing", "connected", "hung up"] {
        assert!(call_log.contains(status), "no {status:?} in {call_log}");
    }
    assert!(answering.wait().unwrap().success());
    assert_eq!(dominant_tone(&bob_recording), 440.0);
    assert_eq!(dominant_tone(&alice_recording), 660.0);
    assert!(alice.ok(&["history"]).contains("outgoing answered"));
    assert!(bob.ok(&["history"]).contains("incoming answered"));

    alice.ok(&["logout"]);
    assert!(alice.fails(&["friends"]).contains("login"));
    server.child.kill().unwrap();
    let _ = server.child.wait();
}
