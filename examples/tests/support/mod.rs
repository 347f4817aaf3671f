//! Starting the `voice-server` binary for the examples' tests, as a
//! self-hoster would, on a loopback port it reports in its log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Running {
    pub child: Child,
    pub addr: String,
}

/// Starts the binary in `dir` with extra args, and reads the bound address
/// from its log.
pub fn start(dir: &std::path::Path, args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_voice-server"))
        .args(args)
        .current_dir(dir)
        .env("VOICE_LOG", "info")
        // Nothing leaves this machine in tests: no public STUN servers.
        .env("VOICE_ICE__STUN_SERVERS", "[]")
        .env("VOICE_ICE__RESPONDER__BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    for line in stdout.by_ref() {
        let line = line.unwrap();
        if !line.contains("voice-server listening") {
            continue;
        }
        if let Some(rest) = line.split("addr=").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    // Keep reading the log, or a full pipe would block the server.
    std::thread::spawn(move || stdout.for_each(drop));
    Running {
        child,
        addr: addr.expect("the server logs its address"),
    }
}
