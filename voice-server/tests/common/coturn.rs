//! A real coturn (`turnserver`, from Debian's package) on a loopback port,
//! with TURN REST authentication, for the ICE tests.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REALM: &str = "voice.test";

pub struct Coturn {
    child: Child,
    pub port: u16,
    pub secret: String,
    _dir: tempfile::TempDir,
}

/// A UDP port nobody holds right now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Coturn {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let secret = format!("secret-{port}");
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                &format!("--realm={REALM}"),
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
                "--min-port=40000",
                "--max-port=60000",
                &format!("--pidfile={}", dir.path().join("pid").display()),
                &format!("--db={}", dir.path().join("turndb").display()),
                "--log-file=stdout",
                "--simple-log",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (Debian's coturn package; the test command installs it)");
        let coturn = Self {
            child,
            port,
            secret,
            _dir: dir,
        };
        coturn.wait_until_answering();
        coturn
    }

    fn wait_until_answering(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        let request = voice_core::stun::binding_request([7; 12]);
        let mut buffer = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(15) {
            socket.send_to(&request, ("127.0.0.1", self.port)).unwrap();
            if let Ok(len) = socket.recv(&mut buffer)
                && voice_core::stun::parse_binding_response(&buffer[..len]).is_ok()
            {
                return;
            }
        }
        panic!("coturn did not start answering on port {}", self.port);
    }

    /// Runs `turnutils_uclient` with these credentials: true if it
    /// allocated a relay and sent data through it.
    pub fn allocate(&self, username: &str, credential: &str) -> bool {
        let output = Command::new("turnutils_uclient")
            .args([
                "-y",
                "-c",
                "-n",
                "5",
                "-e",
                "127.0.0.1",
                "-X",
                "-u",
                username,
                "-w",
                credential,
            ])
            .args(["-p", &self.port.to_string(), "127.0.0.1"])
            .output()
            .expect("turnutils_uclient runs");
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        output.status.success() && !text.contains("Cannot complete Allocation")
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
