//! The async client SDK for voice.
//!
//! - [`Client`] signs in (browser loopback flow or dev sign-in), keeps its
//!   tokens fresh and has a typed method for every REST endpoint.
//! - [`events`] holds one WebSocket per client that reconnects and resumes
//!   by itself, and turns server events into a typed stream.
//! - [`signaling`] and [`media`]: the WebRTC handshake over that socket and
//!   the str0m media engine (Opus over DTLS-SRTP, TURN relaying).
//! - [`audio`]: where call audio comes from and goes to (WAV files, tones,
//!   silence, and devices behind the `cpal` feature).

pub mod audio;
pub mod call;
pub mod client;
pub mod error;
pub mod events;
pub mod login;
pub mod media;
pub mod signaling;

pub use client::{Client, ClientOptions, SavedSession, Session};
pub use error::{ClientError, Result};
pub use events::{
    ClientEvent, Connection, ConnectionState, EventStream, EventsConfig, WsSignaling,
};
pub use login::{BrowserLogin, OpenUrl, PendingLogin};
pub use voice_core::wire;
