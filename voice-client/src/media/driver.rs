//! The task that runs one call's media: it owns the sockets, the str0m
//! `Rtc`, the TURN client and the STUN probes, and moves everything
//! between them. All protocol logic lives in those sans-IO parts; this
//! loop only waits for the next thing to happen (a datagram, a signal, a
//! command, the 20 ms audio tick or a deadline), feeds it in, and drains
//! the outputs.
//!
//! str0m's rule is honoured throughout: every mutation of the `Rtc` is
//! followed by draining `poll_output` to a timeout ([`Driver::drain`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use voice_core::ids::CallId;

use super::candidates::{self, RemoteCandidate};
use super::gather::{self, SrflxGatherer};
use super::relay::{RelayEvent, TurnRelay};
use super::{CallAudio, CallStats, Command, IcePolicy, MediaConfig, MediaState, Role};
use crate::audio::{AudioSink, AudioSource, FRAME_SAMPLES, Frame, OpusDecoder, OpusEncoder};
use crate::error::{ClientError, Result};
use crate::signaling::{IceCandidate, SdpKind, SessionDescription, Signal, SignalingTransport};

const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Datagrams queued between the socket readers and the loop; beyond it
/// they are dropped, as a full socket buffer would.
const DATAGRAM_QUEUE: usize = 1024;
/// At most this many concealed frames for one gap: longer gaps are the
/// peer pausing, not loss worth filling.
const MAX_CONCEALED_FRAMES: u64 = 5;

pub struct Setup {
    pub call: CallId,
    pub role: Role,
    pub config: MediaConfig,
    pub signaling: Arc<dyn SignalingTransport>,
    pub signals: mpsc::UnboundedReceiver<Signal>,
    pub audio: CallAudio,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub state: watch::Sender<MediaState>,
    pub stats: Arc<Mutex<CallStats>>,
    pub started: Instant,
}

struct Datagram {
    local: SocketAddr,
    source: SocketAddr,
    data: Vec<u8>,
}

struct HostSocket {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    relay: TurnRelay,
}

pub struct Driver {
    call: CallId,
    role: Role,
    rtc: Rtc,
    rtc_timeout: Instant,
    hosts: Vec<HostSocket>,
    relay: Option<RelaySocket>,
    gatherer: SrflxGatherer,
    datagrams: mpsc::Receiver<Datagram>,
    readers: Vec<JoinHandle<()>>,
    signals: mpsc::UnboundedReceiver<Signal>,
    signaling: Arc<dyn SignalingTransport>,
    outgoing: mpsc::UnboundedSender<Signal>,
    sender: JoinHandle<()>,
    commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<MediaState>,
    stats: Arc<Mutex<CallStats>>,
    started: Instant,
    connect_deadline: Instant,
    pending_offer: Option<SdpPendingOffer>,
    /// The peer's description is applied: its candidates can go in.
    remote_described: bool,
    early_remote_candidates: Vec<Candidate>,
    /// Our description went out: trickled candidates may follow it.
    local_described: bool,
    early_local_candidates: Vec<IceCandidate>,
    hidden_host_name: Option<String>,
    mid: Option<Mid>,
    pt: Option<Pt>,
    connected: bool,
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    source_ended: bool,
    muted: bool,
    samples_sent: u64,
    highest_seq: Option<u64>,
    failure: Option<String>,
}

impl Driver {
    pub async fn new(setup: Setup) -> Result<Self> {
        let now = Instant::now();
        let Setup {
            call,
            role,
            config,
            signaling,
            signals,
            audio,
            commands,
            state,
            stats,
            started,
        } = setup;
        let servers = gather::resolve(&config.ice_servers).await;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);

        let (datagram_tx, datagrams) = mpsc::channel(DATAGRAM_QUEUE);
        let mut readers = Vec::new();
        let mut hosts = Vec::new();
        if config.policy == IcePolicy::All {
            let addresses = config
                .host_addresses
                .clone()
                .unwrap_or_else(gather::interface_addresses);
            for ip in addresses {
                let socket = match UdpSocket::bind(SocketAddr::new(ip, 0)).await {
                    Ok(socket) => Arc::new(socket),
                    Err(e) => {
                        tracing::debug!(%ip, error = %e, "no socket on this address");
                        continue;
                    }
                };
                let local = socket.local_addr()?;
                match Candidate::host(local, "udp") {
                    Ok(candidate) => {
                        rtc.add_local_candidate(candidate);
                    }
                    Err(e) => {
                        tracing::debug!(%local, error = %e, "not a host candidate");
                        continue;
                    }
                }
                readers.push(spawn_reader(socket.clone(), local, datagram_tx.clone()));
                hosts.push(HostSocket { socket, local });
            }
        }

        let relay = match servers.turn.first() {
            Some(server) => {
                let unspecified = if server.addr.is_ipv4() {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    SocketAddr::from(([0u16; 8], 0))
                };
                let socket = UdpSocket::bind(unspecified).await?;
                // Connected, so the kernel picks the local address that
                // routes to the server, and only the server gets in.
                socket.connect(server.addr).await?;
                let local = socket.local_addr()?;
                let socket = Arc::new(socket);
                readers.push(spawn_reader(socket.clone(), local, datagram_tx.clone()));
                Some(RelaySocket {
                    socket,
                    local,
                    relay: TurnRelay::allocate(now, local, server),
                })
            }
            None => None,
        };
        if hosts.is_empty() && relay.is_none() {
            return Err(ClientError::media(match config.policy {
                IcePolicy::RelayOnly => {
                    "relay-only was asked for, but the server gave no usable TURN server"
                }
                IcePolicy::All => "no local address to send media from",
            }));
        }
        let host_locals: Vec<SocketAddr> = hosts.iter().map(|h| h.local).collect();
        let gatherer = SrflxGatherer::new(now, &host_locals, &servers.stun);

        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let sender = tokio::spawn(send_signals(call, signaling.clone(), outgoing_rx));
        let hidden_host_name = config
            .hide_host_addresses
            .then(|| format!("{}.local", uuid::Uuid::now_v7().simple()));

        let mut driver = Self {
            call,
            role,
            rtc,
            rtc_timeout: now,
            hosts,
            relay,
            gatherer,
            datagrams,
            readers,
            signals,
            signaling,
            outgoing,
            sender,
            commands,
            state,
            stats,
            started,
            connect_deadline: now + config.connect_timeout,
            pending_offer: None,
            remote_described: false,
            early_remote_candidates: Vec::new(),
            local_described: false,
            early_local_candidates: Vec::new(),
            hidden_host_name,
            mid: None,
            pt: None,
            connected: false,
            encoder: OpusEncoder::new()?,
            decoder: OpusDecoder::new()?,
            source: audio.source,
            sink: audio.sink,
            source_ended: false,
            muted: false,
            samples_sent: 0,
            highest_seq: None,
            failure: None,
        };
        driver.drain(now);
        if role == Role::Offerer {
            driver.send_offer(now)?;
        }
        Ok(driver)
    }

    fn send_offer(&mut self, now: Instant) -> Result<()> {
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| ClientError::media("str0m made no offer"))?;
        self.drain(now);
        self.mid = Some(mid);
        self.pending_offer = Some(pending);
        self.send_description(SdpKind::Offer, offer.to_sdp_string());
        Ok(())
    }

    fn send_description(&mut self, kind: SdpKind, sdp: String) {
        let sdp = match &self.hidden_host_name {
            Some(name) => candidates::hide_host_addresses(&sdp, name),
            None => sdp,
        };
        let _ = self
            .outgoing
            .send(Signal::Sdp(SessionDescription { kind, sdp }));
        self.local_described = true;
        for candidate in std::mem::take(&mut self.early_local_candidates) {
            let _ = self.outgoing.send(Signal::Candidate(Some(candidate)));
        }
    }

    pub async fn run(mut self) {
        let mut audio_tick = tokio::time::interval(FRAME_DURATION);
        audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            self.flush_side_channels(now);
            if let Some(why) = self.failure.clone() {
                self.set_state(MediaState::Failed(why));
                break;
            }
            if !self.rtc.is_alive() {
                self.set_state(MediaState::Closed);
                break;
            }
            let wake = self.next_wake(now);
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::SetMuted(muted)) => {
                        self.muted = muted;
                        self.update_stats(|s| s.muted = muted);
                    }
                    Some(Command::Close) | None => {
                        self.set_state(MediaState::Closed);
                        break;
                    }
                },
                Some(datagram) = self.datagrams.recv() => self.handle_datagram(datagram),
                signal = self.signals.recv(), if !self.signals.is_closed() => match signal {
                    Some(signal) => self.handle_signal(signal),
                    None => tracing::debug!(call = %self.call, "signaling ended; media goes on"),
                },
                _ = audio_tick.tick() => self.send_audio_frame(),
                _ = tokio::time::sleep_until(wake.into()) => self.handle_timeouts(Instant::now()),
            }
        }
        self.shut_down().await;
    }

    fn next_wake(&mut self, now: Instant) -> Instant {
        let mut wake = self.rtc_timeout;
        if let Some(t) = self.gatherer.poll_timeout() {
            wake = wake.min(t);
        }
        if let Some(t) = self.relay.as_mut().and_then(|r| r.relay.poll_timeout(now)) {
            wake = wake.min(t);
        }
        if !self.connected {
            wake = wake.min(self.connect_deadline);
        }
        wake.max(now)
    }

    fn handle_timeouts(&mut self, now: Instant) {
        if !self.connected && now >= self.connect_deadline {
            self.failure = Some("the call's media did not connect (ICE or DTLS timed out)".into());
            return;
        }
        self.gatherer.handle_timeout(now);
        if let Some(relay) = &mut self.relay {
            relay.relay.handle_timeout(now);
        }
        if now >= self.rtc_timeout {
            self.mutate(now, |rtc| rtc.handle_input(Input::Timeout(now)));
        }
    }

    /// Sends what the STUN probes and the TURN client want sent, and turns
    /// what they found into local candidates.
    fn flush_side_channels(&mut self, now: Instant) {
        while let Some((local, destination, payload)) = self.gatherer.poll_transmit() {
            if let Some(host) = self.hosts.iter().find(|h| h.local == local) {
                let _ = host.socket.try_send_to(&payload, destination);
            }
        }
        while let Some((base, mapped)) = self.gatherer.poll_candidate() {
            match Candidate::server_reflexive(mapped, base, "udp") {
                Ok(candidate) => self.add_local_candidate(now, candidate),
                Err(e) => tracing::debug!(%mapped, error = %e, "unusable server-reflexive address"),
            }
        }
        let mut allocated = Vec::new();
        if let Some(relay) = &mut self.relay {
            while let Some(datagram) = relay.relay.poll_transmit(now) {
                let _ = relay.socket.try_send(&datagram);
            }
            while let Some(event) = relay.relay.poll_event() {
                match event {
                    RelayEvent::Allocated(addr) => allocated.push((addr, relay.local)),
                    RelayEvent::Failed(why) => {
                        tracing::warn!(call = %self.call, %why, "no relayed candidate");
                        if self.hosts.is_empty() {
                            self.failure = Some(why);
                        }
                    }
                }
            }
        }
        for (addr, local) in allocated {
            match Candidate::relayed(addr, local, "udp") {
                Ok(candidate) => self.add_local_candidate(now, candidate),
                Err(e) => tracing::warn!(%addr, error = %e, "unusable relayed address"),
            }
        }
    }

    fn add_local_candidate(&mut self, now: Instant, candidate: Candidate) {
        let added = self.rtc.add_local_candidate(candidate).cloned();
        self.drain(now);
        let Some(candidate) = added else {
            return;
        };
        let mid = self.mid.map(|m| m.to_string());
        let signal =
            candidates::to_signal(&candidate, mid.as_deref(), self.hidden_host_name.as_deref());
        if self.local_described {
            let _ = self.outgoing.send(Signal::Candidate(Some(signal)));
        } else {
            self.early_local_candidates.push(signal);
        }
    }

    fn handle_datagram(&mut self, datagram: Datagram) {
        let now = Instant::now();
        if let Some(relay) = self.relay.as_mut().filter(|r| r.local == datagram.local) {
            let Some(peer) = relay
                .relay
                .handle_input(now, datagram.local, &datagram.data)
            else {
                return;
            };
            let Some(relayed) = relay.relay.relayed_addr() else {
                return;
            };
            self.receive(now, peer.peer, relayed, &peer.data);
            return;
        }
        if self
            .gatherer
            .handle_input(now, datagram.local, datagram.source, &datagram.data)
        {
            return;
        }
        self.receive(now, datagram.source, datagram.local, &datagram.data);
    }

    fn receive(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, data) else {
            tracing::trace!(%source, "not a WebRTC datagram");
            return;
        };
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(%source, error = %e, "datagram refused");
        }
        self.drain(now);
    }

    fn handle_signal(&mut self, signal: Signal) {
        let now = Instant::now();
        match signal {
            Signal::Sdp(description) => {
                if let Err(e) = self.apply_description(now, description) {
                    self.failure = Some(e.to_string());
                }
            }
            Signal::Candidate(Some(candidate)) => match candidates::parse_remote(&candidate) {
                RemoteCandidate::Usable(candidate) => {
                    if self.remote_described {
                        self.add_remote_candidate(now, candidate);
                    } else {
                        self.early_remote_candidates.push(candidate);
                    }
                }
                RemoteCandidate::MdnsName(name) => {
                    tracing::debug!(%name, "peer hides its host address; waiting for its checks");
                    self.update_stats(|s| s.remote_candidates_skipped += 1);
                }
                RemoteCandidate::Unusable(why) => {
                    tracing::debug!(%why, "skipping a remote candidate");
                    self.update_stats(|s| s.remote_candidates_skipped += 1);
                }
            },
            Signal::Candidate(None) => {}
        }
    }

    fn apply_description(&mut self, now: Instant, description: SessionDescription) -> Result<()> {
        let (sdp, skipped) = candidates::strip_mdns_candidates(&description.sdp);
        if skipped > 0 {
            self.update_stats(|s| s.remote_candidates_skipped += skipped as u64);
        }
        match (self.role, description.kind) {
            (Role::Answerer, SdpKind::Offer) if !self.remote_described => {
                let offer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| ClientError::media(format!("the peer's offer: {e}")))?;
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| ClientError::media(format!("cannot answer the offer: {e}")))?;
                self.drain(now);
                self.remote_described = true;
                self.send_description(SdpKind::Answer, answer.to_sdp_string());
            }
            (Role::Offerer, SdpKind::Answer) => {
                let Some(pending) = self.pending_offer.take() else {
                    tracing::debug!("an answer without an offer pending; ignored");
                    return Ok(());
                };
                let answer = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| ClientError::media(format!("the peer's answer: {e}")))?;
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| ClientError::media(format!("cannot apply the answer: {e}")))?;
                self.drain(now);
                self.remote_described = true;
            }
            (role, kind) => {
                tracing::debug!(?role, ?kind, "unexpected description; ignored");
                return Ok(());
            }
        }
        for candidate in std::mem::take(&mut self.early_remote_candidates) {
            self.add_remote_candidate(now, candidate);
        }
        Ok(())
    }

    fn add_remote_candidate(&mut self, now: Instant, candidate: Candidate) {
        if let Some(relay) = &mut self.relay {
            relay.relay.ensure_permission(now, candidate.addr().ip());
        }
        self.rtc.add_remote_candidate(candidate);
        self.drain(now);
    }

    fn send_audio_frame(&mut self) {
        if !self.connected {
            return;
        }
        let (Some(mid), Some(pt)) = (self.mid, self.opus_pt()) else {
            return;
        };
        let mut frame: Frame = [0; FRAME_SAMPLES];
        if !self.muted && !self.source_ended && !self.source.read_frame(&mut frame) {
            self.source_ended = true;
        }
        let packet = match self.encoder.encode(&frame) {
            Ok(packet) => packet.to_vec(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a frame");
                return;
            }
        };
        let now = Instant::now();
        let rtp_time = MediaTime::new(self.samples_sent, Frequency::FORTY_EIGHT_KHZ);
        self.samples_sent += FRAME_SAMPLES as u64;
        let written = match self.rtc.writer(mid) {
            Some(writer) => writer.write(pt, now, rtp_time, packet),
            None => return,
        };
        self.drain(now);
        match written {
            Ok(()) => self.update_stats(|s| s.packets_sent += 1),
            Err(e) => tracing::debug!(error = %e, "frame not sent"),
        }
    }

    /// The payload type the peer agreed to for Opus.
    fn opus_pt(&mut self) -> Option<Pt> {
        if self.pt.is_none() {
            let mid = self.mid?;
            let writer = self.rtc.writer(mid)?;
            self.pt = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
        }
        self.pt
    }

    /// Feeds one input and drains.
    fn mutate(
        &mut self,
        now: Instant,
        input: impl FnOnce(&mut Rtc) -> std::result::Result<(), str0m::RtcError>,
    ) {
        if let Err(e) = input(&mut self.rtc) {
            tracing::debug!(error = %e, "str0m refused an input");
        }
        self.drain(now);
    }

    /// Drains str0m's output to its next timeout.
    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.rtc_timeout = at;
                    return;
                }
                Ok(Output::Transmit(transmit)) => self.transmit(
                    now,
                    transmit.source,
                    transmit.destination,
                    &transmit.contents,
                ),
                Ok(Output::Event(event)) => self.handle_event(event),
                Err(e) => {
                    self.failure = Some(format!("WebRTC failed: {e}"));
                    self.rtc_timeout = now + Duration::from_secs(1);
                    return;
                }
            }
        }
    }

    fn transmit(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if let Some(relay) = self
            .relay
            .as_mut()
            .filter(|r| r.relay.relayed_addr() == Some(source))
        {
            if let Some(datagram) = relay.relay.send_to(now, destination, data)
                && relay.socket.try_send(&datagram).is_ok()
            {
                self.update_stats(|s| s.packets_via_relay += 1);
            }
            return;
        }
        match self.hosts.iter().find(|h| h.local == source) {
            Some(host) => {
                let _ = host.socket.try_send_to(data, destination);
            }
            None => tracing::trace!(%source, "no socket for this source"),
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::MediaAdded(added) if self.mid.is_none() => self.mid = Some(added.mid),
            Event::Connected => {
                self.connected = true;
                let after = self.started.elapsed();
                self.update_stats(|s| s.connected_after = Some(after));
                self.set_state(MediaState::Connected);
            }
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Disconnected => self.set_state(MediaState::Disconnected),
                IceConnectionState::Connected | IceConnectionState::Completed if self.connected => {
                    self.set_state(MediaState::Connected)
                }
                _ => {}
            },
            Event::MediaData(data) => {
                let first = **data.seq_range.start();
                let last = **data.seq_range.end();
                let gap = match self.highest_seq {
                    Some(highest) if first > highest + 1 => first - highest - 1,
                    _ => 0,
                };
                if self.highest_seq.is_none_or(|h| last > h) {
                    self.highest_seq = Some(last);
                }
                let mut frame: Frame = [0; FRAME_SAMPLES];
                for _ in 0..gap.min(MAX_CONCEALED_FRAMES) {
                    if self.decoder.conceal(&mut frame).is_ok() {
                        self.sink.write_frame(&frame);
                    }
                }
                match self.decoder.decode(&data.data, &mut frame) {
                    Ok(()) => self.sink.write_frame(&frame),
                    Err(e) => tracing::debug!(error = %e, "undecodable Opus packet"),
                }
                let started = self.started;
                self.update_stats(|s| {
                    s.packets_received += 1;
                    s.packets_lost += gap;
                    s.first_audio_after.get_or_insert_with(|| started.elapsed());
                });
            }
            Event::MediaIngressStats(ingress) => {
                let jitter = Duration::from_secs_f64(f64::from(ingress.jitter) / 48_000.0);
                self.update_stats(|s| {
                    s.jitter = Some(jitter);
                    if ingress.rtt.is_some() {
                        s.rtt = ingress.rtt;
                    }
                });
            }
            Event::MediaEgressStats(egress) if egress.rtt.is_some() => {
                self.update_stats(|s| s.rtt = egress.rtt)
            }
            _ => {}
        }
    }

    fn update_stats(&self, change: impl FnOnce(&mut CallStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            change(&mut stats);
        }
    }

    fn set_state(&self, state: MediaState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state && !current.is_final();
            if changed {
                *current = state;
            }
            changed
        });
    }

    async fn shut_down(mut self) {
        let now = Instant::now();
        if let Some(relay) = &mut self.relay {
            relay.relay.release(now);
            while let Some(datagram) = relay.relay.poll_transmit(now) {
                let _ = relay.socket.send(&datagram).await;
            }
        }
        self.rtc.disconnect();
        if let Err(e) = self.sink.finish() {
            tracing::warn!(error = %e, "could not finish the recording");
        }
        self.signaling.unsubscribe(self.call);
        for reader in &self.readers {
            reader.abort();
        }
        // Let queued signals go out, then stop the sender.
        drop(self.outgoing);
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.sender).await;
        self.sender.abort();
    }
}

fn spawn_reader(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    to: mpsc::Sender<Datagram>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((len, source)) => {
                    let datagram = Datagram {
                        local,
                        source,
                        data: buf[..len].to_vec(),
                    };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = to.try_send(datagram) {
                        return;
                    }
                }
                // ICMP port unreachable surfaces as an error on some
                // systems; the socket itself is still fine.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::debug!(%local, error = %e, "socket read failed");
                    return;
                }
            }
        }
    })
}

/// Sends signals one at a time, in order, so an answer never overtakes
/// the description it follows.
async fn send_signals(
    call: CallId,
    signaling: Arc<dyn SignalingTransport>,
    mut outgoing: mpsc::UnboundedReceiver<Signal>,
) {
    while let Some(signal) = outgoing.recv().await {
        if let Err(e) = signaling.send(call, signal).await {
            tracing::warn!(%call, error = %e, "could not send a signal");
        }
    }
}
