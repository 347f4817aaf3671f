//! `voice-load`: drives a voice server on this machine with simulated
//! users at a fixed offered rate for a fixed time, and reports throughput,
//! send-to-deliver latency, the server's CPU time and memory, errors, and
//! whether every acknowledged message was delivered exactly once. With
//! `--baseline` the same workload also runs against a bare WebSocket relay
//! (no auth, no storage), and every figure is shown as a ratio to it.
//!
//! ```text
//! voice-load dm --clients 200 --rate 5000 --duration 10 --baseline --out dm.json
//! voice-load fanout --rate 500 --duration 10 --baseline
//! voice-load idle --clients 10000
//! voice-load calls --clients 400 --rate 200 --duration 10
//! ```
//!
//! Loopback only, and bounded: `--duration` caps the time and
//! `--max-messages` the count.

mod bursts;
mod process;
mod relay;
mod workload;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use process::Target;
use workload::{Load, Report};

#[derive(Parser)]
#[command(
    name = "voice-load",
    about = "Load generator for voice servers (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Direct messages between pairs of friends.
    Dm(Common),
    /// Messages to one group, delivered to every other member.
    Fanout(Common),
    /// Connections that only stay open: server memory per connection.
    Idle(Common),
    /// Call requests nobody answers, expiring after the ring timeout.
    Calls(Common),
    /// Runs the baseline relay (used by --baseline; useful by hand too).
    Relay {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Simulated users (dm: pairs of them; fanout: the group's size).
    #[arg(long)]
    clients: Option<usize>,
    /// Offered rate: messages (or calls) per second, open loop.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of offered load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Never send more than this many messages or calls.
    #[arg(long, default_value_t = 2_000_000)]
    max_messages: u64,
    /// Requests in flight at most; beyond, sending waits (and the wait
    /// counts in the latency, which runs from the scheduled send time).
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// How messages are sent: `message.send` on each user's open
    /// WebSocket, or one `POST /v1/messages` each.
    #[arg(long, value_enum, default_value_t = SendVia::Socket)]
    via: SendVia,
    /// The started server's `store.synchronous`.
    #[arg(long, value_enum, default_value_t = Sync::Normal)]
    synchronous: Sync,
    /// Also run the workload against the bare relay and show ratios.
    #[arg(long)]
    baseline: bool,
    /// Use a running server at this URL (loopback) instead of starting one.
    #[arg(long)]
    target: Option<String>,
    /// The running server's pid, for CPU and memory figures.
    #[arg(long)]
    target_pid: Option<u32>,
    /// The voice-server binary to start (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SendVia {
    Socket,
    Http,
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Sync {
    Normal,
    Full,
}

#[derive(Serialize)]
struct Output {
    workload: &'static str,
    date: String,
    machine: Machine,
    voice: Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_baseline: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    memory_bytes: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("voice-load: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voice-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let (name, load, common) = match cli.command {
        Command::Relay { bind } => return relay::serve(bind).await.map_err(|e| e.to_string()),
        Command::Dm(c) => ("dm", Load::Direct, c),
        Command::Fanout(c) => ("fanout", Load::Fanout, c),
        Command::Idle(c) => ("idle", Load::Idle, c),
        Command::Calls(c) => ("calls", Load::Calls, c),
    };
    let clients = common.clients.unwrap_or(match load {
        Load::Direct => 200,
        Load::Fanout => 100,
        Load::Idle => 10_000,
        Load::Calls => 400,
    });
    // A caller whose last call still rings cannot call again (409), so
    // the storm needs enough pairs to cover the ring timeout (2 s) with
    // room to spare: rate x 3 s pairs.
    let clients = if load == Load::Calls {
        let needed = 2 * (common.rate * 3.0).ceil() as usize;
        if clients < needed {
            eprintln!(
                "calls at {} /s need {needed} clients; using {needed}",
                common.rate
            );
        }
        clients.max(needed)
    } else {
        clients
    };
    let settings = workload::Settings {
        load,
        via: match common.via {
            SendVia::Socket => workload::Via::Socket,
            SendVia::Http => workload::Via::Http,
        },
        clients,
        rate: common.rate,
        duration: Duration::from_secs_f64(common.duration.clamp(0.1, 3600.0)),
        max_messages: common.max_messages,
        max_in_flight: common.max_in_flight.max(1),
        progress: !common.quiet,
    };

    let voice_target = match &common.target {
        Some(url) => {
            check_loopback(url)?;
            Target::external(url.trim_end_matches('/').to_string(), common.target_pid)
        }
        None => start_server(&common, load)?,
    };
    eprintln!(
        "voice server at {} ({name}, {clients} clients)",
        voice_target.url
    );
    let voice = workload::run(&voice_target, &settings, false).await?;
    drop(voice_target);
    print_report("voice", &voice);

    let baseline = if common.baseline && load != Load::Calls {
        let relay = Target::spawn(
            &std::env::current_exe().map_err(|e| e.to_string())?,
            &["relay"],
            &[],
        )?;
        eprintln!("baseline relay at {}", relay.url);
        let report = workload::run(&relay, &settings, true).await?;
        print_report("baseline", &report);
        Some(report)
    } else {
        None
    };
    let ratio_to_baseline = baseline.as_ref().map(|b| {
        let ratios = voice.ratios_to(b);
        println!("voice / baseline: {ratios}");
        ratios
    });

    if let Some(path) = &common.out {
        let output = Output {
            workload: name,
            date: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            machine: Machine {
                cores: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                memory_bytes: memory_total(),
            },
            voice,
            baseline,
            ratio_to_baseline,
        };
        let json = serde_json::to_vec_pretty(&output).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("results in {}", path.display());
    }
    Ok(())
}

fn check_loopback(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{url} is not on this machine: voice-load only loads loopback servers"
        ))
    }
}

fn start_server(common: &Common, load: Load) -> Result<Target, String> {
    let program = match &common.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("voice-server"),
    };
    let synchronous = match common.synchronous {
        Sync::Normal => "normal",
        Sync::Full => "full",
    };
    let mut env = vec![
        ("VOICE_STORE__SYNCHRONOUS", synchronous.to_string()),
        // The load comes from one address and a few users: lift the
        // per-IP and per-user limits a real deployment keeps.
        ("VOICE_AUTH__RATE_LIMIT_PER_MINUTE", "100000000".to_string()),
        ("VOICE_AUTH__RATE_LIMIT_BURST", "100000000".to_string()),
        ("VOICE_LIMITS__MESSAGES_PER_SECOND", "100000000".to_string()),
        ("VOICE_LIMITS__MESSAGES_BURST", "100000000".to_string()),
        ("VOICE_WS__MAX_TICKETS", "1000000".to_string()),
        ("VOICE_WS__OUTBOUND_QUEUE", "100000".to_string()),
        ("VOICE_ICE__STUN_SERVERS", "[]".to_string()),
        ("VOICE_ICE__RESPONDER__ENABLED", "false".to_string()),
    ];
    if load == Load::Calls {
        env.push(("VOICE_CALLS__RING_TIMEOUT_SECS", "2".to_string()));
    }
    Target::spawn(&program, &["--bind", "127.0.0.1:0"], &env)
}

fn print_report(name: &str, report: &Report) {
    println!(
        "{name}: {}",
        serde_json::to_string(report).unwrap_or_default()
    );
}

fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
