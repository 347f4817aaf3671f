//! The voice server binary: flags, logging, and the library's `Server`.
//! With no flags it listens on 127.0.0.1:8080 and keeps its SQLite
//! database in `./voice-data/`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use voice_server::config::{CliOverrides, Config};
use voice_server::{Server, shutdown_signal};

/// The server's Rust allocations go to jemalloc: with glibc's allocator,
/// malloc and free took about 14% of the server's samples in a fan-out
/// profile, and jemalloc raised saturated throughput in most A/B runs
/// (docs/BENCHMARKS.md) at no cost in idle memory. SQLite's C allocations
/// go there too (the crate's unprefixed `malloc`, see examples/Cargo.toml):
/// glibc's malloc was still about 6% of a fan-out profile, on the store's
/// writer. This is the binary's choice: the library leaves it to whoever
/// embeds it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Self-hosted private messaging and voice calls.
#[derive(Parser)]
#[command(name = "voice-server", version)]
struct Args {
    /// Address and port to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    /// Directory for the database and the server secret [default: ./voice-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("VOICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stdout().is_terminal()).init();
    }

    let overrides = CliOverrides {
        bind: args.bind,
        data_dir: args.data_dir,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("voice-server: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("voice-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(addr) => tracing::info!(%addr, "voice-server listening"),
        Err(e) => tracing::warn!(error = %e, "cannot read the bound address"),
    }
    match server.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voice-server: {e}");
            ExitCode::FAILURE
        }
    }
}
