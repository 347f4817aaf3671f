//! Per-IP rate limiting for the endpoints worth guessing at (sign-in,
//! token exchange, refresh). The quota comes from `auth.rate_limit_*`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use voice_core::Error;

use crate::error::ApiError;
use crate::state::AppState;

/// How often idle per-IP entries are dropped from the limiter.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub async fn limit_by_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Behind no proxy the peer address is the client; without connect
    // info (in-process tests) everyone shares one bucket.
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if state.auth_limiter.check_key(&ip).is_err() {
        return ApiError::from(Error::rate_limited("too many requests; slow down")).into_response();
    }
    next.run(request).await
}
