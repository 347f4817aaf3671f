//! Finding this device's candidates: host addresses from the interfaces,
//! the ICE servers' addresses from their URLs, and server-reflexive
//! addresses from STUN Binding probes (voice-core's sans-IO
//! [`StunProbe`], the same one the server's health checks use).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use voice_core::ice_url::{StunUrl, TurnTransport, TurnUrl};
use voice_core::stun_check::{ProbeConfig, StunProbe};
use voice_core::wire::IceServer;

/// A TURN server the call may relay through.
#[derive(Clone, Debug)]
pub struct TurnServer {
    pub addr: SocketAddr,
    pub username: String,
    pub credential: String,
}

/// The call's ICE servers, resolved.
#[derive(Clone, Debug, Default)]
pub struct ResolvedServers {
    pub stun: Vec<SocketAddr>,
    pub turn: Vec<TurnServer>,
}

/// Every address of every interface that is up; IPv6 link-local left
/// out.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    addresses.retain(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
    });
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Resolves the servers' names. A URL that does not parse or resolve is
/// logged and skipped: one bad entry must not stop a call. TURN over TCP
/// is skipped too (the SDK relays over UDP).
pub async fn resolve(servers: &[IceServer]) -> ResolvedServers {
    let mut resolved = ResolvedServers::default();
    for server in servers {
        for url in &server.urls {
            if url.starts_with("stun:") {
                match StunUrl::parse(url) {
                    Ok(stun) => resolved.stun.extend(lookup(&stun.authority()).await),
                    Err(e) => tracing::warn!(%url, error = %e.message, "skipping STUN server"),
                }
            } else if url.starts_with("turn:") {
                let turn = match TurnUrl::parse(url) {
                    Ok(turn) if turn.transport == TurnTransport::Udp => turn,
                    Ok(_) => {
                        tracing::debug!(%url, "skipping TURN over TCP");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(%url, error = %e.message, "skipping TURN server");
                        continue;
                    }
                };
                let (Some(username), Some(credential)) = (&server.username, &server.credential)
                else {
                    tracing::warn!(%url, "skipping TURN server without credentials");
                    continue;
                };
                for addr in lookup(&turn.authority()).await {
                    resolved.turn.push(TurnServer {
                        addr,
                        username: username.clone(),
                        credential: credential.clone(),
                    });
                }
            } else {
                tracing::debug!(%url, "skipping an ICE server URL of another scheme");
            }
        }
    }
    resolved
}

async fn lookup(authority: &str) -> Vec<SocketAddr> {
    match tokio::net::lookup_host(authority).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            tracing::warn!(%authority, error = %e, "ICE server name does not resolve");
            Vec::new()
        }
    }
}

/// Server-reflexive gathering: one Binding probe per (local socket, STUN
/// server of the same family). Sans-IO: the driver feeds datagrams and
/// time, and sends what [`poll_transmit`](Self::poll_transmit) returns.
pub struct SrflxGatherer {
    probes: Vec<(SocketAddr, StunProbe)>,
    transmits: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    found: VecDeque<(SocketAddr, SocketAddr)>,
}

impl SrflxGatherer {
    pub fn new(now: Instant, locals: &[SocketAddr], servers: &[SocketAddr]) -> Self {
        // Fewer, quicker retransmissions than a health check: a call
        // should not wait long for a slow STUN server.
        let config = &ProbeConfig {
            initial_rto: Duration::from_millis(250),
            max_transmits: 4,
            timeout: Duration::from_secs(3),
        };
        let probes = locals
            .iter()
            .filter(|local| !local.ip().is_loopback())
            .flat_map(|&local| {
                servers
                    .iter()
                    .filter(move |server| server.is_ipv4() == local.is_ipv4())
                    .map(move |&server| {
                        (local, StunProbe::new(now, server, rand::random(), config))
                    })
            })
            .collect();
        let mut gatherer = Self {
            probes,
            transmits: VecDeque::new(),
            found: VecDeque::new(),
        };
        gatherer.collect_transmits();
        gatherer
    }

    /// Takes a datagram that answers one of the probes; `false` when it is
    /// not for us.
    pub fn handle_input(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some((_, probe)) = self
            .probes
            .iter_mut()
            .find(|(l, p)| *l == local && p.server() == from && !p.is_done())
        else {
            return false;
        };
        probe.handle_input(now, from, data);
        if let Some(Ok(success)) = probe.result() {
            // No NAT in between: the mapped address is the host address,
            // which is a candidate already.
            if success.mapped != local {
                self.found.push_back((local, success.mapped));
            }
        }
        true
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for (_, probe) in &mut self.probes {
            probe.handle_timeout(now);
        }
        self.collect_transmits();
    }

    fn collect_transmits(&mut self) {
        for (local, probe) in &mut self.probes {
            while let Some(t) = probe.poll_transmit() {
                self.transmits.push_back((*local, t.destination, t.payload));
            }
        }
    }

    /// `(local socket, destination, bytes)`.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// `(base, server-reflexive address)`.
    pub fn poll_candidate(&mut self) -> Option<(SocketAddr, SocketAddr)> {
        self.found.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probes
            .iter()
            .filter_map(|(_, p)| p.poll_timeout())
            .min()
    }
}
