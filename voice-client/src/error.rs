//! The SDK's one error type. Server refusals keep the server's stable
//! [`ErrorCode`] so callers can match on it; everything else says which
//! part failed (network, media, audio files) in plain words.

use voice_core::error::{Error as ApiError, ErrorCode};

/// Everything an SDK call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error body (`{"error":{code,message}}`).
    #[error("server refused ({status}): {}", .error.message)]
    Api { status: u16, error: ApiError },
    /// The server could not be reached at all (connection refused, DNS,
    /// timeout).
    #[error("server unreachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// No usable session: never signed in, or the refresh token was
    /// refused. Sign in again.
    #[error("not signed in: {0}")]
    NotSignedIn(String),
    /// The server's answer was not what the protocol promises.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The sign-in flow failed (browser flow cancelled, state mismatch,
    /// provider error).
    #[error("sign-in failed: {0}")]
    SignIn(String),
    /// The WebSocket or signaling transport is closed.
    #[error("signaling closed: {0}")]
    SignalingClosed(String),
    /// The call ended (rejected, missed, busy, hung up) before what was
    /// waited for happened.
    #[error("call ended: {0}")]
    CallEnded(String),
    /// The media path failed (sockets, ICE, DTLS, codec).
    #[error("media: {0}")]
    Media(String),
    /// Reading or writing audio (WAV files, devices) failed.
    #[error("audio: {0}")]
    Audio(String),
    /// Local I/O (config file, sockets).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    pub(crate) fn media(reason: impl std::fmt::Display) -> Self {
        ClientError::Media(reason.to_string())
    }

    pub(crate) fn audio(reason: impl std::fmt::Display) -> Self {
        ClientError::Audio(reason.to_string())
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
