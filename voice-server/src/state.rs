//! The one state every handler shares, built once at start from the
//! configuration and the opened store.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use voice_core::UserId;
use voice_core::auth::IdentityProvider;
use voice_core::bus::EventBus;
use voice_core::store::Store;

use crate::StartupError;
use crate::auth::AuthUser;
use crate::auth::allowlist::{RedirectPolicy, UserAllowlist};
use crate::auth::flows::AuthFlows;
use crate::auth::tokens::{ServerSecret, Tokens};
use crate::calls::{Calls, call_config};
use crate::config::Config;
use crate::event_order::OrderTotals;
use crate::ice::Ice;
use crate::notify::{Notifier, publish_commits};
use crate::one_shot::OneShotMap;
use crate::presence::PresenceTracker;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub tokens: Arc<Tokens>,
    /// The configured identity provider; `None` when only dev sign-in (or
    /// nothing) is available.
    pub provider: Option<Arc<dyn IdentityProvider>>,
    pub flows: Arc<AuthFlows>,
    pub users: Arc<UserAllowlist>,
    pub redirects: Arc<RedirectPolicy>,
    /// Whether `POST /v1/auth/dev-login` works; decided once at start.
    pub dev_login: bool,
    /// Per-IP limiter for the auth endpoints.
    pub auth_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Per-user limiter for messages and typing notices.
    pub message_limiter: Arc<DefaultKeyedRateLimiter<UserId>>,
    /// Carries events to connected devices.
    pub bus: Arc<dyn EventBus>,
    pub presence: Arc<PresenceTracker>,
    /// Single-use WebSocket tickets for browsers, by hash.
    pub ws_tickets: Arc<Mutex<OneShotMap<[u8; 32], AuthUser>>>,
    /// Turns true when the server starts shutting down, so long-lived
    /// connections close themselves.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// The calls in progress (a driver task owns them).
    pub calls: Calls,
    /// ICE servers for clients, and their health.
    pub ice: Ice,
    /// How often live events came out of order, over closed connections.
    pub event_order: Arc<OrderTotals>,
    /// The store and the bus, and whether the store publishes stored
    /// events as it commits them (see [`crate::notify::publish_commits`]).
    pub notifier: Notifier,
}

impl AppState {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        provider: Option<Arc<dyn IdentityProvider>>,
        bus: Arc<dyn EventBus>,
    ) -> Result<Self, StartupError> {
        let auth = &config.auth;
        let dev_login = decide_dev_login(&config, provider.is_some())?;
        let users = UserAllowlist::new(&auth.allowed_emails, auth.open_registration)
            .map_err(StartupError::Config)?;
        if provider.is_some() && users.is_closed() {
            tracing::warn!(
                "auth.allowed_emails is empty and open_registration is off: nobody can sign in"
            );
        }
        let public_url = config.public_url();
        let own_origin = url::Url::parse(&public_url)
            .map_err(|e| StartupError::Config(format!("public_url {public_url:?}: {e}")))?
            .origin()
            .ascii_serialization();
        let redirects = RedirectPolicy::new(
            auth.web_origins
                .iter()
                .cloned()
                .chain(std::iter::once(own_origin)),
        );

        std::fs::create_dir_all(&config.data_dir).map_err(StartupError::Io)?;
        let secret = ServerSecret::load(auth.secret.as_deref(), &config.data_dir)
            .map_err(StartupError::Io)?;
        let tokens = Tokens::new(
            &secret,
            auth.token_issuer
                .clone()
                .unwrap_or_else(|| public_url.clone()),
            auth.token_audience.clone(),
            auth.access_token_ttl_secs,
        );
        let flows = AuthFlows::new(
            auth.max_pending_logins,
            Duration::from_secs(auth.pending_login_ttl_secs),
            Duration::from_secs(auth.login_code_ttl_secs),
        );
        let auth_limiter = RateLimiter::keyed(
            Quota::per_minute(at_least_one(
                auth.rate_limit_per_minute,
                "auth.rate_limit_per_minute",
            )?)
            .allow_burst(at_least_one(
                auth.rate_limit_burst,
                "auth.rate_limit_burst",
            )?),
        );
        let limits = &config.limits;
        let message_limiter = RateLimiter::keyed(
            Quota::per_second(at_least_one(
                limits.messages_per_second,
                "limits.messages_per_second",
            )?)
            .allow_burst(at_least_one(
                limits.messages_burst,
                "limits.messages_burst",
            )?),
        );
        let ws_tickets = OneShotMap::new(
            config.ws.max_tickets,
            Duration::from_secs(config.ws.ticket_ttl_secs),
        );

        let ice = Ice::start(config.ice.clone(), store.clone());
        let notifier = Notifier {
            store: store.clone(),
            bus: bus.clone(),
            store_publishes: publish_commits(store.as_ref(), bus.clone()),
        };
        let calls = Calls::spawn(call_config(&config.calls), notifier.clone());

        Ok(Self {
            config: Arc::new(config),
            store,
            tokens: Arc::new(tokens),
            provider,
            flows: Arc::new(flows),
            users: Arc::new(users),
            redirects: Arc::new(redirects),
            dev_login,
            auth_limiter: Arc::new(auth_limiter),
            message_limiter: Arc::new(message_limiter),
            bus,
            presence: Arc::new(PresenceTracker::default()),
            ws_tickets: Arc::new(Mutex::new(ws_tickets)),
            shutdown: Arc::new(tokio::sync::watch::Sender::new(false)),
            calls,
            ice,
            event_order: Arc::default(),
            notifier,
        })
    }
}

fn at_least_one(value: u32, name: &str) -> Result<NonZeroU32, StartupError> {
    NonZeroU32::new(value).ok_or_else(|| StartupError::Config(format!("{name} must be at least 1")))
}

/// Dev sign-in hands a session to anyone who names a user, so it is only
/// ever on for a server nobody else can reach and that has no real
/// provider.
fn decide_dev_login(config: &Config, has_provider: bool) -> Result<bool, StartupError> {
    let loopback = config.bind.ip().is_loopback();
    match config.auth.dev_login {
        Some(true) if has_provider => Err(StartupError::Config(
            "auth.dev_login cannot be on while an OIDC provider is configured".into(),
        )),
        Some(true) if !loopback => Err(StartupError::Config(format!(
            "refusing to start: dev sign-in is on and the server would listen on {}, which is not loopback",
            config.bind
        ))),
        Some(explicit) => Ok(explicit),
        None => Ok(!has_provider && loopback),
    }
}
