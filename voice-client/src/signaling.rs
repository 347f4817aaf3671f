//! The WebRTC handshake as the SDK exchanges it: [`Signal`] is the payload
//! of a `call.signal` message (the same JSON a browser's
//! `RTCSessionDescription` and `RTCIceCandidate` serialize to), and
//! [`SignalingTransport`] is whatever carries it to the other device. The
//! WebSocket implementation lives in [`crate::events`]; tests and embedders
//! can plug in their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use voice_core::ids::CallId;

use crate::error::Result;

/// One `call.signal` payload: `{"sdp":{…}}` or `{"candidate":{…}}`.
/// `{"candidate":null}` is the end of candidates, as in the browser API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Sdp(SessionDescription),
    Candidate(Option<IceCandidate>),
}

/// `RTCSessionDescriptionInit`: `{"type":"offer"|"answer","sdp":"v=0…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: SdpKind,
    pub sdp: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    Offer,
    Answer,
}

/// `RTCIceCandidateInit`, as browsers send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// `candidate:… typ host|srflx|relay …` (an SDP attribute without
    /// `a=`); browsers send `""` for end of candidates.
    pub candidate: String,
    #[serde(rename = "sdpMid", default)]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    pub sdp_mline_index: Option<u16>,
}

/// Carries a call's signals between the two devices in it.
#[async_trait]
pub trait SignalingTransport: Send + Sync {
    /// Sends one signal to the other device in `call`.
    async fn send(&self, call: CallId, signal: Signal) -> Result<()>;

    /// The signals arriving for `call`, in order. Signals that arrived
    /// before anyone subscribed are delivered first (a callee's device gets
    /// the caller's buffered offer right after it accepts). One subscriber
    /// per call: a second `subscribe` replaces the first.
    fn subscribe(&self, call: CallId) -> mpsc::UnboundedReceiver<Signal>;

    /// Forgets `call`: drops its subscriber and anything buffered for it.
    fn unsubscribe(&self, call: CallId);
}

/// Two transports wired to each other in memory: what one sends, the other
/// receives. For tests and for embedding two peers in one process.
pub fn in_memory_pair() -> (InMemorySignaling, InMemorySignaling) {
    let a = Arc::new(Mutex::new(Mailbox::default()));
    let b = Arc::new(Mutex::new(Mailbox::default()));
    (
        InMemorySignaling {
            own: a.clone(),
            peer: b.clone(),
        },
        InMemorySignaling { own: b, peer: a },
    )
}

/// One end of [`in_memory_pair`].
pub struct InMemorySignaling {
    own: Arc<Mutex<Mailbox>>,
    peer: Arc<Mutex<Mailbox>>,
}

#[derive(Default)]
struct Mailbox {
    subscribers: HashMap<CallId, mpsc::UnboundedSender<Signal>>,
    waiting: HashMap<CallId, Vec<Signal>>,
}

#[async_trait]
impl SignalingTransport for InMemorySignaling {
    async fn send(&self, call: CallId, signal: Signal) -> Result<()> {
        let mut peer = self
            .peer
            .lock()
            .map_err(|_| crate::ClientError::SignalingClosed("poisoned".into()))?;
        match peer.subscribers.get(&call) {
            Some(tx) if tx.send(signal.clone()).is_ok() => {}
            _ => peer.waiting.entry(call).or_default().push(signal),
        }
        Ok(())
    }

    fn subscribe(&self, call: CallId) -> mpsc::UnboundedReceiver<Signal> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut own) = self.own.lock() {
            for signal in own.waiting.remove(&call).unwrap_or_default() {
                let _ = tx.send(signal);
            }
            own.subscribers.insert(call, tx);
        }
        rx
    }

    fn unsubscribe(&self, call: CallId) {
        if let Ok(mut own) = self.own.lock() {
            own.subscribers.remove(&call);
            own.waiting.remove(&call);
        }
    }
}
