//! The shared heart of voice: identifiers, domain types, the wire protocol
//! spoken between server and clients, one error type, and the traits that
//! the server, the stores and the clients implement.
//!
//! Nothing in this crate performs I/O or reads a clock: it depends on none of
//! tokio, axum, rusqlite or str0m, so every other crate can build on it and
//! its logic can be tested with plain values.

pub mod auth;
pub mod bus;
pub mod call;
pub mod call_queue;
pub mod error;
pub mod ice_url;
pub mod ids;
pub mod model;
pub mod store;
pub mod stun;
pub mod stun_check;
pub mod wire;

pub use error::{Error, ErrorCode};
pub use ids::{CallId, GroupId, MessageId, SessionId, UserId};
