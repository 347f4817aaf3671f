//! Server configuration: one struct with a sane default for every setting,
//! loaded from a TOML file, then `VOICE_*` environment variables, then
//! command-line overrides (each layer wins over the one before).
//!
//! Nested keys in the environment use a double underscore:
//! `VOICE_AUTH__OPEN_REGISTRATION=true` sets `auth.open_registration`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use voice_store::SqliteOptions;

/// Everything the server can be told.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Loopback by default: nothing is exposed until
    /// the self-hoster says so.
    pub bind: SocketAddr,
    /// Where the SQLite database and the generated server secret live.
    pub data_dir: PathBuf,
    /// The URL users reach this server at; the OIDC callback is
    /// `<public_url>/v1/auth/callback`. Defaults to `http://<bind>`.
    pub public_url: Option<String>,
    pub store: SqliteOptions,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub ws: WsConfig,
    pub events: EventsConfig,
    pub calls: CallsConfig,
    pub ice: IceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./voice-data"),
            public_url: None,
            store: SqliteOptions::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            ws: WsConfig::default(),
            events: EventsConfig::default(),
            calls: CallsConfig::default(),
            ice: IceConfig::default(),
        }
    }
}

impl Config {
    /// The public base URL without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.bind),
        }
    }

    /// Loads the layers: defaults, then `file` (if given), then `VOICE_*`
    /// environment variables, then `overrides` (from flags).
    pub fn load(
        file: Option<&Path>,
        overrides: &CliOverrides,
    ) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            // VOICE_LOG is the log filter, read by the binary.
            .merge(Env::prefixed("VOICE_").ignore(&["log"]).split("__"))
            .merge(Serialized::defaults(overrides));
        figment.extract().map_err(Box::new)
    }
}

/// The settings that also have command-line flags.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// Sign-in and tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The OpenID Connect provider users sign in with. Absent: no provider,
    /// and dev sign-in decides whether anyone can sign in at all.
    pub oidc: Option<OidcConfig>,
    /// Dev sign-in (`POST /v1/auth/dev-login`). Unset means on exactly when
    /// no provider is configured and the server listens on loopback.
    /// Setting it to true anywhere else makes the server refuse to start.
    pub dev_login: Option<bool>,
    /// Who may sign in: exact emails (`alice@example.com`) and domains
    /// (`@example.com`). Empty means nobody, unless `open_registration`.
    pub allowed_emails: Vec<String>,
    /// Lets anyone the provider vouches for register.
    pub open_registration: bool,
    /// Web origins (`https://voice.example.com`) that may receive login
    /// codes; loopback redirect targets for native clients are always
    /// allowed, and so is this server's own public URL.
    pub web_origins: Vec<String>,
    /// A server secret (at least 32 bytes). Unset: one is generated in the
    /// data directory on first start and kept there.
    pub secret: Option<String>,
    /// `iss` and `aud` of the access tokens this server issues.
    pub token_issuer: Option<String>,
    pub token_audience: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// A refresh token presented again within this many seconds of its
    /// rotation gets the same successor (the first response was lost);
    /// later, it counts as theft and revokes the session.
    pub refresh_retry_grace_secs: u64,
    pub login_code_ttl_secs: u64,
    /// How long a sign-in may take at the provider.
    pub pending_login_ttl_secs: u64,
    /// Upper bound on sign-ins in progress and unredeemed login codes.
    pub max_pending_logins: usize,
    /// Per-IP rate limit on the auth endpoints.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            oidc: None,
            dev_login: None,
            allowed_emails: Vec::new(),
            open_registration: false,
            web_origins: Vec::new(),
            secret: None,
            token_issuer: None,
            token_audience: "voice".to_string(),
            access_token_ttl_secs: 600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_retry_grace_secs: 10,
            login_code_ttl_secs: 60,
            pending_login_ttl_secs: 600,
            max_pending_logins: 10_000,
            rate_limit_per_minute: 60,
            rate_limit_burst: 20,
        }
    }
}

/// An OpenID Connect provider. Only `client_id` and `client_secret` are
/// needed for Google.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    /// Keys are re-fetched when an ID token names an unknown key id, but
    /// no more often than this.
    pub jwks_min_refresh_secs: u64,
    /// Tolerated clock difference with the provider, for `iat`.
    pub clock_skew_secs: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer_url: "https://accounts.google.com".to_string(),
            client_id: String::new(),
            client_secret: None,
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            jwks_min_refresh_secs: 60,
            clock_skew_secs: 120,
        }
    }
}

/// Request limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish at shutdown.
    pub shutdown_grace_secs: u64,
    /// Largest message body, in bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Longest `client_id` of a message.
    pub max_client_id_bytes: usize,
    /// Most members of a group, owner included.
    pub max_group_members: usize,
    /// Longest group name, in characters.
    pub max_group_name_chars: usize,
    /// Messages (and typing notices) a user may send per second, on
    /// average, and in a burst.
    pub messages_per_second: u32,
    pub messages_burst: u32,
    /// Most users one search returns.
    pub max_search_results: u32,
    /// Largest history page.
    pub max_history_page: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            shutdown_grace_secs: 10,
            max_message_bytes: 16 * 1024,
            max_client_id_bytes: 128,
            max_group_members: 256,
            max_group_name_chars: 100,
            messages_per_second: 20,
            messages_burst: 50,
            max_search_results: 20,
            max_history_page: 200,
        }
    }
}

/// WebSocket connections.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Events that may wait for one connection. A connection whose queue
    /// overflows is closed with code 4008 and resumes later with `since`.
    pub outbound_queue: usize,
    /// Milliseconds one write to a connection may take before the
    /// connection counts as stuck and is dropped.
    pub send_timeout_ms: u64,
    /// Bytes the server buffers for one connection's socket.
    pub max_write_buffer_bytes: usize,
    /// Largest inbound message (and frame), in bytes.
    pub max_inbound_bytes: usize,
    /// The read buffer each connection keeps, in bytes. Larger frames
    /// still arrive (up to `max_inbound_bytes`); this is what an idle
    /// connection costs (tungstenite's default is 128 KiB).
    pub read_buffer_bytes: usize,
    /// Bytes of events a connection gathers before writing them to the
    /// socket, short of a flush (each burst of events ends with one). A
    /// burst larger than this goes out in several writes, so a small
    /// value costs system calls under fan-out; a connection's buffer keeps
    /// the largest size it reached, so a large one costs memory on busy
    /// connections (an idle connection's is not affected). tungstenite's
    /// own default is 128 KiB.
    pub write_buffer_bytes: usize,
    /// Seconds between pings.
    pub ping_interval_secs: u64,
    /// Seconds without any inbound traffic (pongs included) after which a
    /// connection is closed.
    pub idle_timeout_secs: u64,
    /// Lifetime of a browser's single-use connection ticket.
    pub ticket_ttl_secs: u64,
    /// Upper bound on unredeemed tickets.
    pub max_tickets: usize,
    /// Events read from the store per batch while replaying `since`.
    pub replay_batch: u32,
    /// Milliseconds a live event that came before an earlier one (both
    /// published, each by the task that committed it) waits for it before
    /// the gap is filled from the store.
    pub reorder_wait_ms: u64,
    /// Most live events a connection holds behind such a gap; past this
    /// it fills the gap from the store at once.
    pub reorder_max_events: usize,
    /// `message.send`s one connection may have waiting for their commit.
    /// Past this the server reads nothing more from the socket until one
    /// is answered, so a device's sends share batches with each other's
    /// instead of waiting one commit each.
    pub max_pending_sends: usize,
    /// TCP_NODELAY on every connection the server accepts. On, each
    /// flush of a WebSocket goes out at once; off, Nagle's algorithm
    /// holds a small write while the one before is unacknowledged (up to
    /// the peer's delayed-acknowledgement timer, 40 ms on Linux, more on
    /// some systems), which merges packets under heavy load (saturated
    /// group fan-out measured about 30% higher) at that cost in latency.
    pub tcp_nodelay: bool,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            outbound_queue: 512,
            send_timeout_ms: 5_000,
            max_write_buffer_bytes: 1024 * 1024,
            max_inbound_bytes: 64 * 1024,
            read_buffer_bytes: 4 * 1024,
            write_buffer_bytes: 16 * 1024,
            ping_interval_secs: 20,
            idle_timeout_secs: 60,
            ticket_ttl_secs: 30,
            max_tickets: 10_000,
            replay_batch: 500,
            reorder_wait_ms: 20,
            reorder_max_events: 256,
            max_pending_sends: 32,
            tcp_nodelay: true,
        }
    }
}

/// Calls and their signaling.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// Seconds a call rings before it is missed.
    pub ring_timeout_secs: u64,
    /// Seconds a participant's device may be disconnected before the call
    /// ends.
    pub disconnect_grace_secs: u64,
    /// Largest `call.signal` payload carrying an SDP, in bytes.
    pub max_sdp_bytes: usize,
    /// Largest `call.signal` payload carrying an ICE candidate, in bytes.
    pub max_candidate_bytes: usize,
    /// Signals the caller may send before a device answers, and their bytes.
    pub max_buffered_signals: usize,
    pub max_buffered_bytes: usize,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            ring_timeout_secs: 30,
            disconnect_grace_secs: 15,
            max_sdp_bytes: 16 * 1024,
            max_candidate_bytes: 1024,
            max_buffered_signals: 64,
            max_buffered_bytes: 64 * 1024,
        }
    }
}

/// The ICE servers handed to clients: STUN servers the server verified
/// recently, its own STUN responder, and TURN with short-lived credentials.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    /// `stun:host[:port]` URLs to verify and hand out. Admins edit the
    /// list at run time (`/v1/admin/ice/stun`); edits persist in the store.
    pub stun_servers: Vec<String>,
    /// Emails of the users who may edit the list and see its status.
    pub admins: Vec<String>,
    /// Seconds between two probes of one server, before jitter.
    pub probe_interval_secs: u64,
    /// Each interval is stretched or shrunk by up to this fraction, at
    /// random, so probes do not march in step.
    pub probe_jitter: f64,
    /// First retransmission timeout of a probe (RFC 5389 RTO), doubling.
    pub probe_rto_ms: u64,
    /// Most transmissions of one probe.
    pub probe_max_transmits: u32,
    /// A probe with no answer after this long has failed.
    pub probe_timeout_ms: u64,
    /// Consecutive failed probes after which a server counts as unhealthy.
    pub unhealthy_after: u32,
    pub responder: StunResponderConfig,
    pub turn: TurnConfig,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            stun_servers: vec![
                "stun:stun.l.google.com:19302".into(),
                "stun:stun1.l.google.com:19302".into(),
                "stun:stun.cloudflare.com:3478".into(),
            ],
            admins: Vec::new(),
            probe_interval_secs: 60,
            probe_jitter: 0.2,
            probe_rto_ms: 500,
            probe_max_transmits: 7,
            probe_timeout_ms: 5_000,
            unhealthy_after: 3,
            responder: StunResponderConfig::default(),
            turn: TurnConfig::default(),
        }
    }
}

/// The server's own STUN responder (Binding requests over UDP).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StunResponderConfig {
    pub enabled: bool,
    /// Where it listens. Unset: the server's bind address, port 3478.
    pub bind: Option<SocketAddr>,
    /// The URL clients are given for it. Unset: `stun:<public_url host>:<port>`.
    pub url: Option<String>,
    /// Answers per second per source address, on average and in a burst;
    /// beyond that requests are dropped (and counted).
    pub per_source_per_second: u32,
    pub per_source_burst: u32,
}

impl Default for StunResponderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: None,
            url: None,
            per_source_per_second: 20,
            per_source_burst: 40,
        }
    }
}

/// A TURN server using coturn's `use-auth-secret` (TURN REST) scheme.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs. Empty: no TURN.
    pub urls: Vec<String>,
    /// The `static-auth-secret` shared with the TURN server.
    pub secret: Option<String>,
    /// Lifetime of the credentials handed out. They cannot be revoked, so
    /// keep it short.
    pub ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: None,
            ttl_secs: 3600,
        }
    }
}

/// The per-user event log kept for reconnecting devices.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// How long events are kept for replay. A device away longer gets
    /// `resync_required`.
    pub retention_secs: u64,
    /// How often old events are pruned.
    pub prune_interval_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_secs: 7 * 24 * 3600,
            prune_interval_secs: 3600,
        }
    }
}

#[cfg(test)]
// figment's Jail fixes the closure's error type; it is only test code.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_environment_over_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "voice.toml",
                r#"
                bind = "127.0.0.1:9000"
                data_dir = "/from/file"
                [auth]
                open_registration = true
                access_token_ttl_secs = 30
                "#,
            )?;
            jail.set_env("VOICE_DATA_DIR", "/from/env");
            jail.set_env("VOICE_LOG", "debug");
            jail.set_env("VOICE_AUTH__ACCESS_TOKEN_TTL_SECS", "45");
            let overrides = CliOverrides {
                bind: Some("127.0.0.1:9100".parse().unwrap()),
                data_dir: None,
            };
            let config = Config::load(Some(Path::new("voice.toml")), &overrides).map_err(|e| *e)?;
            assert_eq!(config.bind, "127.0.0.1:9100".parse().unwrap());
            assert_eq!(config.data_dir, PathBuf::from("/from/env"));
            assert!(config.auth.open_registration);
            assert_eq!(config.auth.access_token_ttl_secs, 45);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("voice.toml", "bnid = \"127.0.0.1:1\"")?;
            assert!(Config::load(Some(Path::new("voice.toml")), &CliOverrides::default()).is_err());
            Ok(())
        });
    }
}
