//! Call media: the [`MediaEngine`] trait and its str0m implementation.
//!
//! A [`MediaSession`] is one call's audio path. The engine spawns a driver
//! task per call ([`driver`]) that owns the call's UDP sockets and a sans-IO
//! str0m `Rtc`; it gathers host, server-reflexive ([`gather`]) and relayed
//! ([`relay`], a TURN client) candidates, trickles them over the
//! [`SignalingTransport`], and once DTLS-SRTP is up moves Opus frames
//! between the call's [`AudioSource`]/[`AudioSink`] and the peer.

#[doc(hidden)]
pub mod candidates;
mod driver;
mod gather;
mod relay;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use voice_core::ids::CallId;
use voice_core::wire::IceServer;

use crate::audio::{AudioSink, AudioSource};
use crate::error::{ClientError, Result};
use crate::signaling::SignalingTransport;

/// Which side of the offer/answer exchange this device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The caller: sends the offer as soon as the call starts (the server
    /// holds it until a device answers).
    Offerer,
    /// The answering device: waits for the offer.
    Answerer,
}

/// Which local candidates a call may use (`RTCIceTransportPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IcePolicy {
    /// Host, server-reflexive and relayed.
    #[default]
    All,
    /// Only relayed candidates through TURN: hides this device's addresses
    /// from the peer, and works behind symmetric NATs.
    RelayOnly,
}

/// How a call's media connects.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// What the server handed out with the call (`stun:` and `turn:` URLs).
    pub ice_servers: Vec<IceServer>,
    pub policy: IcePolicy,
    /// The addresses to gather host candidates on. `None`: every address
    /// of every interface that is up, loopback included, IPv6 link-local
    /// excluded (it needs scope ids that candidates cannot carry).
    pub host_addresses: Option<Vec<IpAddr>>,
    /// Send host candidates under random `.local` names instead of their
    /// addresses, as browsers do for privacy (RFC 8828 mode 2 without the
    /// mDNS responder). The peer then reaches this device through the
    /// addresses it learns from connectivity checks.
    pub hide_host_addresses: bool,
    /// Give up when ICE and DTLS are not up after this long.
    pub connect_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            policy: IcePolicy::All,
            host_addresses: None,
            hide_host_addresses: false,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a call's audio comes from and goes to.
pub struct CallAudio {
    pub source: Box<dyn AudioSource>,
    pub sink: Box<dyn AudioSink>,
}

impl CallAudio {
    pub fn new(source: impl AudioSource + 'static, sink: impl AudioSink + 'static) -> Self {
        Self {
            source: Box::new(source),
            sink: Box::new(sink),
        }
    }
}

/// Where a call's media path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaState {
    /// Gathering candidates and exchanging the offer and answer.
    Connecting,
    /// ICE and DTLS-SRTP are up; audio flows.
    Connected,
    /// ICE lost the peer; it may come back.
    Disconnected,
    /// The media path could not be set up, or broke for good.
    Failed(String),
    /// Closed by [`MediaSession::close`] or by the peer.
    Closed,
}

impl MediaState {
    pub fn is_final(&self) -> bool {
        matches!(self, MediaState::Failed(_) | MediaState::Closed)
    }
}

/// What a call's media has done so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    /// Round-trip time from RTCP reports.
    pub rtt: Option<Duration>,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Packets the sequence numbers say never arrived.
    pub packets_lost: u64,
    /// Interarrival jitter (RFC 3550), from our receiver's view.
    pub jitter: Option<Duration>,
    /// From the session's start to ICE and DTLS being up.
    pub connected_after: Option<Duration>,
    /// From the session's start to the first decoded audio frame.
    pub first_audio_after: Option<Duration>,
    /// Datagrams sent to the peer through the TURN relay.
    pub packets_via_relay: u64,
    pub remote_candidates_skipped: u64,
    pub muted: bool,
}

enum Command {
    SetMuted(bool),
    Close,
}

/// One call's media path. Dropping it closes the path too, but
/// [`close`](Self::close) also waits for the recording to be flushed.
pub struct MediaSession {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<MediaState>,
    stats: Arc<Mutex<CallStats>>,
    task: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl MediaSession {
    pub fn state(&self) -> MediaState {
        self.state.borrow().clone()
    }

    /// Waits until audio can flow; fails when the path failed, closed or
    /// did not come up within `timeout`.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        let wait = self
            .state
            .wait_for(|s| *s == MediaState::Connected || s.is_final());
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(ClientError::media(
                "the call's media did not connect in time",
            )),
            Ok(Err(_)) => Err(ClientError::media("the media task ended")),
            Ok(Ok(state)) => match &*state {
                MediaState::Connected => Ok(()),
                MediaState::Failed(why) => Err(ClientError::media(why)),
                other => Err(ClientError::media(format!("media is {other:?}"))),
            },
        }
    }

    /// Waits until the media path is over (failed, or closed by the peer).
    pub async fn wait_ended(&mut self) -> MediaState {
        match self.state.wait_for(MediaState::is_final).await {
            Ok(state) => state.clone(),
            Err(_) => MediaState::Closed,
        }
    }

    /// Waits for the first audio frame from the peer.
    pub async fn wait_first_audio(&self, timeout: Duration) -> Result<Duration> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(after) = self.stats().first_audio_after {
                return Ok(after);
            }
            if self.state().is_final() || tokio::time::Instant::now() >= deadline {
                return Err(ClientError::media("no audio arrived from the peer"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends silence instead of the source while muted (the peer keeps
    /// receiving packets, so its jitter buffer and stats stay sane).
    pub fn set_muted(&self, muted: bool) {
        let _ = self.commands.send(Command::SetMuted(muted));
    }

    pub fn stats(&self) -> CallStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// When the session started, the origin of the `*_after` stats.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Stops the media, flushes the sink, and returns the final stats.
    pub async fn close(mut self) -> CallStats {
        let _ = self.commands.send(Command::Close);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.stats()
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// Sets up a call's media path.
#[async_trait]
pub trait MediaEngine: Send + Sync {
    async fn start(
        &self,
        call: CallId,
        role: Role,
        config: MediaConfig,
        signaling: Arc<dyn SignalingTransport>,
        audio: CallAudio,
    ) -> Result<MediaSession>;
}

/// The str0m engine: WebRTC in-process, Opus over DTLS-SRTP.
#[derive(Clone, Copy, Debug, Default)]
pub struct Str0mEngine;

#[async_trait]
impl MediaEngine for Str0mEngine {
    async fn start(
        &self,
        call: CallId,
        role: Role,
        config: MediaConfig,
        signaling: Arc<dyn SignalingTransport>,
        audio: CallAudio,
    ) -> Result<MediaSession> {
        let started = Instant::now();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(MediaState::Connecting);
        let stats = Arc::new(Mutex::new(CallStats::default()));
        let signals = signaling.subscribe(call);
        let driver = driver::Driver::new(driver::Setup {
            call,
            role,
            config,
            signaling,
            signals,
            audio,
            commands: command_rx,
            state: state_tx,
            stats: stats.clone(),
            started,
        })
        .await?;
        let task = tokio::spawn(driver.run());
        Ok(MediaSession {
            commands: command_tx,
            state: state_rx,
            stats,
            task: Some(task),
            started,
        })
    }
}
