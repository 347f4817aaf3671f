//! A real coturn (`turnserver`, from Debian's package) on a loopback port,
//! with TURN REST authentication, for the ICE tests.

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const REALM: &str = "voice.test";

pub struct Coturn {
    child: Child,
    pub port: u16,
    pub secret: String,
    _dir: tempfile::TempDir,
}

/// A port that no socket, UDP or TCP, holds on loopback right now, and
/// that the kernel will not hand out as an ephemeral port later.
///
/// coturn listens on both UDP and TCP at its port, and if the TCP bind
/// fails it retries forever without ever answering on UDP. A port from the
/// ephemeral range can be taken at any moment by some test's outgoing TCP
/// connection or by another coturn's relay allocation, so the port is picked
/// below that range, where only an explicit bind can take it.
fn free_port_outside_the_ephemeral_range() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16;
    let span = u64::from(ephemeral_low.saturating_sub(low).max(1));
    for _ in 0..1000 {
        let port = low + (random_u64() % span) as u16;
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free port between {low} and {ephemeral_low}");
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

impl Coturn {
    /// Starts coturn and waits until it answers a STUN binding request. A
    /// start that does not answer in time is retried on another port.
    pub fn start() -> Self {
        const ATTEMPTS: usize = 3;
        let mut logs = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::start_once() {
                Ok(coturn) => return coturn,
                Err(log) => logs.push(log),
            }
        }
        panic!(
            "coturn did not start answering in {ATTEMPTS} attempts; the end of each log:\n{}",
            logs.join("\n---\n")
        );
    }

    fn start_once() -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_outside_the_ephemeral_range();
        let secret = format!("secret-{port}");
        let log_path = dir.path().join("turnserver.log");
        let log = std::fs::File::create(&log_path).unwrap();
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
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("turnserver runs (Debian's coturn package; the test command installs it)");
        let mut coturn = Self {
            child,
            port,
            secret,
            _dir: dir,
        };
        if coturn.wait_until_answering(Duration::from_secs(10)) {
            return Ok(coturn);
        }
        let exit = coturn.child.try_wait().ok().flatten();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        Err(format!("port {port}, exit {exit:?}:\n{tail}"))
    }

    fn wait_until_answering(&mut self, patience: Duration) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        let request = voice_core::stun::binding_request([7; 12]);
        let mut buffer = [0u8; 1024];
        while started.elapsed() < patience {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            socket.send_to(&request, ("127.0.0.1", self.port)).unwrap();
            if let Ok(len) = socket.recv(&mut buffer)
                && voice_core::stun::parse_binding_response(&buffer[..len]).is_ok()
            {
                return true;
            }
        }
        false
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
