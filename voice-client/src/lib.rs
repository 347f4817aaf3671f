//! The async client SDK for voice. For now it re-exports the wire protocol
//! that clients speak; the SDK proper (sign-in, WebSocket, calls with
//! str0m) arrives with the client SDK issue.

pub use voice_core::wire;
