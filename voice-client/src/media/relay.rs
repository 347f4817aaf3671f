//! Relayed candidates: a TURN client (RFC 8656) over UDP for one call,
//! built on the sans-IO `turn-client-proto` and driven by the call's
//! driver task. It allocates a relayed address, installs a permission for
//! each peer address ICE talks to (the library refreshes allocation and
//! permissions before they expire), and wraps and unwraps the peer's
//! datagrams.
//!
//! Time is an argument (`now: Instant`); the wrapper maps it onto the
//! library's own clock type.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use turn_client_proto::api::{Transmit, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::*;
use turn_client_proto::stun::types::TransportType;
use turn_client_proto::types::TurnCredentials;
use turn_client_proto::udp::TurnClientUdp;

use super::gather::TurnServer;

/// What the driver must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// The server gave us this relayed address: a local candidate.
    Allocated(SocketAddr),
    /// The allocation failed (wrong or expired credentials, refused).
    Failed(String),
}

/// A datagram from a peer, through the relay.
#[derive(Debug)]
pub struct PeerDatagram {
    pub peer: SocketAddr,
    pub data: Vec<u8>,
}

pub struct TurnRelay {
    client: TurnClientUdp,
    server: SocketAddr,
    relayed: Option<SocketAddr>,
    /// The origin of the library's clock.
    epoch: Instant,
    permissions_asked: HashSet<IpAddr>,
    events: VecDeque<RelayEvent>,
}

impl TurnRelay {
    /// Starts allocating from `local` (the socket that talks to the
    /// server).
    pub fn allocate(now: Instant, local: SocketAddr, server: &TurnServer) -> Self {
        let config = TurnConfig::new(TurnCredentials::new(&server.username, &server.credential));
        Self {
            client: TurnClientUdp::allocate(local, server.addr, config),
            server: server.addr,
            relayed: None,
            epoch: now,
            permissions_asked: HashSet::new(),
            events: VecDeque::new(),
        }
        .polled(now)
    }

    fn polled(mut self, now: Instant) -> Self {
        self.handle_timeout(now);
        self
    }

    fn clock(&self, now: Instant) -> turn_client_proto::stun::Instant {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        turn_client_proto::stun::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// A datagram from the TURN server. Returns the peer's data it
    /// carried, if any.
    pub fn handle_input(
        &mut self,
        now: Instant,
        local: SocketAddr,
        data: &[u8],
    ) -> Option<PeerDatagram> {
        let clock = self.clock(now);
        let transmit = Transmit::new(data, TransportType::Udp, self.server, local);
        let peer = match self.client.recv(transmit, clock) {
            TurnRecvRet::PeerData(peer) => Some(PeerDatagram {
                peer: peer.peer,
                data: peer.data().to_vec(),
            }),
            TurnRecvRet::Handled | TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => None,
        };
        self.collect_events();
        peer
    }

    /// Wraps `data` for `peer`; returns the datagram to send to the TURN
    /// server. Installs a permission for the peer's address first when
    /// there is none (the first packets to a new peer are dropped until
    /// it exists; ICE retransmits its checks).
    pub fn send_to(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        self.relayed?;
        self.ensure_permission(now, peer.ip());
        let clock = self.clock(now);
        match self.client.send_to(TransportType::Udp, peer, data, clock) {
            Ok(Some(transmit)) => Some(transmit.build().data),
            Ok(None) => None,
            Err(e) => {
                tracing::trace!(%peer, error = %e, "TURN send deferred");
                None
            }
        }
    }

    /// Asks for a permission for `peer` (once per address; the library
    /// keeps it refreshed).
    pub fn ensure_permission(&mut self, now: Instant, peer: IpAddr) {
        if self.relayed.is_none() || !self.permissions_asked.insert(peer) {
            return;
        }
        let clock = self.clock(now);
        if let Err(e) = self
            .client
            .create_permission(TransportType::Udp, peer, clock)
        {
            tracing::debug!(%peer, error = %e, "TURN permission not requested");
            self.permissions_asked.remove(&peer);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let clock = self.clock(now);
        if let TurnPollRet::Closed = self.client.poll(clock)
            && self.relayed.is_none()
        {
            self.events.push_back(RelayEvent::Failed(
                "the TURN server refused the allocation".into(),
            ));
        }
        self.collect_events();
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(TransportType::Udp, addr) => {
                    self.relayed = Some(addr);
                    self.events.push_back(RelayEvent::Allocated(addr));
                }
                TurnEvent::AllocationCreateFailed(family) => self.events.push_back(
                    RelayEvent::Failed(format!("TURN allocation failed ({family:?})")),
                ),
                TurnEvent::PermissionCreateFailed(_, ip) => {
                    tracing::warn!(%ip, "TURN permission refused");
                }
                other => tracing::trace!(?other, "TURN event"),
            }
        }
    }

    /// A datagram to send to the TURN server.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let clock = self.clock(now);
        self.client
            .poll_transmit(clock)
            .map(|t| t.data.as_ref().to_vec())
    }

    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let clock = self.clock(now);
        match self.client.poll(clock) {
            TurnPollRet::WaitUntil(at) => {
                let nanos = u64::try_from(at.as_nanos()).unwrap_or(0);
                Some(self.epoch + Duration::from_nanos(nanos))
            }
            _ => None,
        }
    }

    /// Releases the allocation (a Refresh with lifetime 0); the driver
    /// sends what [`poll_transmit`](Self::poll_transmit) returns next.
    pub fn release(&mut self, now: Instant) {
        let clock = self.clock(now);
        let _ = self.client.delete(clock);
    }
}
