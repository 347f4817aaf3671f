//! The process under load: a `voice-server` (or the baseline relay) started
//! as a child on a loopback port, or a server already running elsewhere on
//! this machine, found by pid. CPU time and RSS come from `/proc/<pid>`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Target {
    pub url: String,
    pub pid: Option<u32>,
    child: Option<Child>,
    _data: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts `program args…` in a fresh data directory with `env`, and
    /// waits for its "listening addr=" log line.
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, String)]) -> Result<Self, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(data.path())
            .env("VOICE_LOG", "warn,voice_server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(rest) = line.split("addr=").nth(1)
                && line.contains("listening")
            {
                addr = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let addr =
            addr.ok_or_else(|| format!("{} did not report its address", program.display()))?;
        Ok(Self {
            url: format!("http://{addr}"),
            pid: Some(child.id()),
            child: Some(child),
            _data: Some(data),
        })
    }

    pub fn external(url: String, pid: Option<u32>) -> Self {
        Self {
            url,
            pid,
            child: None,
            _data: None,
        }
    }

    /// User plus system CPU time the process has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid?)).ok()?;
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on Linux for every architecture we run on.
        Some(Duration::from_millis(ticks * 10))
    }

    /// Resident set size in bytes.
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
