//! The tokio driver of voice-core's sans-IO [`StunChecker`] and
//! [`StunProbe`]: resolves each server's name every round (IPv4 and
//! IPv6), probes over UDP, feeds results back, and publishes a snapshot
//! that handlers read without waiting.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use time::OffsetDateTime;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use voice_core::stun_check::{CheckerConfig, ProbeConfig, ServerState, StunChecker, StunProbe};
use voice_core::wire::StunServerStatus;

use super::Snapshot;
use super::url::StunUrl;
use crate::config::IceConfig;

/// Largest datagram read from a STUN server.
const MAX_DATAGRAM: usize = 2048;

/// What the prober needs from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    checker: CheckerConfig,
    probe: ProbeConfig,
    /// Largest random delay added to an interval.
    max_jitter: Duration,
}

pub fn settings(config: &IceConfig) -> Settings {
    let interval = Duration::from_secs(config.probe_interval_secs.max(1));
    Settings {
        checker: CheckerConfig {
            interval,
            unhealthy_after: config.unhealthy_after,
        },
        probe: ProbeConfig {
            initial_rto: Duration::from_millis(config.probe_rto_ms.max(1)),
            max_transmits: config.probe_max_transmits,
            timeout: Duration::from_millis(config.probe_timeout_ms.max(1)),
        },
        max_jitter: interval.mul_f64(config.probe_jitter.clamp(0.0, 1.0)),
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs until the last sender of `lists` is gone.
pub async fn run(
    settings: Settings,
    mut lists: mpsc::Receiver<Vec<String>>,
    snapshot: Arc<RwLock<Snapshot>>,
) {
    let mut checker = StunChecker::new(settings.checker.clone());
    let (results_tx, mut results) =
        mpsc::channel::<(String, Result<(SocketAddr, Duration), String>)>(64);
    loop {
        let due = checker.poll_due(now(), || {
            let max = settings.max_jitter.as_millis() as u64;
            Duration::from_millis(if max == 0 {
                0
            } else {
                rand::thread_rng().gen_range(0..=max)
            })
        });
        for name in due {
            let results = results_tx.clone();
            let probe = settings.probe.clone();
            tokio::spawn(async move {
                let result = probe_url(&name, &probe).await;
                let _ = results.send((name, result)).await;
            });
        }
        let next = checker.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            list = lists.recv() => match list {
                Some(list) => checker.handle_servers(now(), list),
                None => return,
            },
            Some((name, result)) = results.recv() => {
                if let Err(error) = &result {
                    tracing::debug!(server = %name, %error, "STUN probe failed");
                }
                // A server removed meanwhile is no longer known: fine.
                let _ = checker.handle_probe_result(now(), &name, result);
            }
            _ = sleep_until(next) => {}
        }
        publish(&checker, &snapshot);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn publish(checker: &StunChecker, snapshot: &RwLock<Snapshot>) {
    let now_std = now();
    let now_wall = OffsetDateTime::now_utc();
    let status = checker
        .status()
        .into_iter()
        .map(|server| StunServerStatus {
            url: server.name,
            state: match server.state {
                ServerState::Unknown => "unknown",
                ServerState::Healthy => "healthy",
                ServerState::Unhealthy => "unhealthy",
            }
            .to_string(),
            last_check: server
                .last_check
                .map(|at| now_wall - now_std.saturating_duration_since(at)),
            rtt_ms: server.last_rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            last_error: server.last_error,
            consecutive_failures: server.consecutive_failures,
        })
        .collect();
    let healthy = checker
        .healthy_by_rtt()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    *snapshot.write().unwrap_or_else(|p| p.into_inner()) = Snapshot { healthy, status };
}

/// Probes one server: its name is resolved now (it may have moved), then
/// the first address of each family is tried; any answer counts.
async fn probe_url(url: &str, config: &ProbeConfig) -> Result<(SocketAddr, Duration), String> {
    let url = StunUrl::parse(url).map_err(|e| e.message)?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(url.authority())
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut tried = Vec::new();
    for family_v4 in [true, false] {
        if let Some(address) = addresses.iter().find(|a| a.is_ipv4() == family_v4) {
            tried.push(*address);
        }
    }
    if tried.is_empty() {
        return Err(format!("cannot resolve {}: no addresses", url.host));
    }
    let mut errors = Vec::new();
    for address in tried {
        match probe_address(address, config).await {
            Ok(found) => return Ok(found),
            Err(error) => errors.push(format!("{address}: {error}")),
        }
    }
    Err(errors.join("; "))
}

async fn probe_address(
    server: SocketAddr,
    config: &ProbeConfig,
) -> Result<(SocketAddr, Duration), String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("a literal address")
    } else {
        "[::]:0".parse().expect("a literal address")
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot open a socket: {e}"))?;
    let transaction_id: [u8; 12] = rand::random();
    let mut probe = StunProbe::new(now(), server, transaction_id, config);
    let mut buffer = [0u8; MAX_DATAGRAM];
    loop {
        while let Some(transmit) = probe.poll_transmit() {
            // A failed send is a lost datagram: retransmission covers it.
            let _ = socket
                .send_to(&transmit.payload, transmit.destination)
                .await;
        }
        if let Some(result) = probe.result() {
            return result
                .map(|success| (success.mapped, success.rtt))
                .map_err(|failure| failure.to_string());
        }
        let deadline = probe.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            read = socket.recv_from(&mut buffer) => {
                if let Ok((len, from)) = read {
                    probe.handle_input(now(), from, &buffer[..len]);
                }
            }
            _ = sleep_until(deadline) => probe.handle_timeout(now()),
        }
    }
}
