//! The voice server as a library: build an [`AppState`], get the axum
//! router from [`app`], or let [`Server`] do it all (open the store, run
//! OIDC discovery, bind, serve until shut down).
//!
//! Modules, each with one job:
//! - [`config`]: settings and where they come from.
//! - [`state`]: the shared state handlers see.
//! - [`error`]: the one error type and JSON extractors.
//! - [`auth`]: sign-in, tokens, the `AuthUser` extractor.
//! - [`users`], [`friends`], [`messages`], [`groups`]: the REST API.
//! - [`ws`]: the event WebSocket; [`notify`] and [`bus`] get events to it;
//!   [`presence`] counts connections.
//! - [`openapi`]: the OpenAPI document, served at `/v1/openapi.json`.
//! - [`health`]: liveness and readiness.
//! - [`rate_limit`]: per-IP limits on the auth endpoints.

pub mod auth;
pub mod bus;
pub mod calls;
pub mod config;
pub mod error;
pub mod event_order;
pub mod friends;
pub mod groups;
pub mod health;
pub mod ice;
pub mod messages;
pub mod notify;
mod one_shot;
pub mod openapi;
pub mod presence;
pub mod rate_limit;
pub mod state;
pub mod users;
pub mod web;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::serve::ListenerExt as _;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::auth::IdentityProvider;
use voice_store::SqliteStore;

pub use config::Config;
pub use state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open the database: {0}")]
    Store(voice_core::Error),
    #[error("cannot reach the identity provider: {0}")]
    Provider(String),
}

/// The routes and their OpenAPI document, before state and layers.
fn routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(auth::router(state.clone()))
        .merge(users::router())
        .merge(friends::router())
        .merge(messages::router())
        .merge(groups::router())
        .merge(ws::router())
        .merge(calls::routes::router())
        .merge(ice::routes::router())
        .routes(routes!(openapi::openapi_json))
        .split_for_parts()
}

/// The OpenAPI document of [`app`].
pub fn openapi_document(state: &AppState) -> utoipa::openapi::OpenApi {
    routes(state).1
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    let (router, document) = routes(&state);
    let document = openapi::OpenApiJson(Arc::new(
        document.to_json().expect("the OpenAPI document serializes"),
    ));
    router
        .merge(web::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            // Paths only: query strings carry authorization and login codes.
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}

/// A server ready to run: store opened, provider discovered, port bound.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    store: SqliteStore,
}

impl Server {
    /// Opens everything the configuration names. Fails early and clearly:
    /// a bad setting, an unreachable provider or a database from a newer
    /// version stops the start.
    pub async fn start(mut config: Config) -> Result<Self, StartupError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let listener = TcpListener::bind(config.bind).await?;
        // With port 0 the real port is known only now; URLs derived from
        // the bind address (the OIDC callback) must use it.
        config.bind = listener.local_addr()?;
        let provider: Option<Arc<dyn IdentityProvider>> = match &config.auth.oidc {
            Some(oidc) => {
                let callback = format!("{}/v1/auth/callback", config.public_url());
                let provider = auth::oidc::OidcProvider::discover(oidc, callback)
                    .await
                    .map_err(StartupError::Provider)?;
                tracing::info!(issuer = provider.issuer(), "OpenID Connect provider ready");
                Some(Arc::new(provider))
            }
            None => None,
        };
        let db_path = config.data_dir.join("voice.db");
        let store =
            SqliteStore::open(&db_path, config.store.clone()).map_err(StartupError::Store)?;
        let state = AppState::new(
            config,
            Arc::new(store.clone()),
            provider,
            Arc::new(bus::LocalBus::new()),
        )?;
        if state.config.ice.responder.enabled {
            let responder = start_responder(&state).await?;
            state
                .ice
                .attach_responder(responder)
                .await
                .map_err(StartupError::Store)?;
        }
        match calls::close_lost_calls(&state.notifier).await {
            Ok(0) => {}
            Ok(closed) => tracing::info!(closed, "closed the calls the last run left open"),
            Err(error) => tracing::error!(%error, "cannot close the calls the last run left open"),
        }
        if state.dev_login {
            tracing::warn!(
                "DEV SIGN-IN IS ON: anyone who can reach this server can sign in as any user name. \
                 Configure auth.oidc for real use."
            );
        }
        Ok(Self {
            listener,
            state,
            store,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish
    /// (for at most `limits.shutdown_grace_secs`), then closes the database.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = Duration::from_secs(self.state.config.limits.shutdown_grace_secs);
        let limiter = self.state.auth_limiter.clone();
        let sweeper = tokio::spawn(async move {
            let mut interval = tokio::time::interval(rate_limit::SWEEP_INTERVAL);
            loop {
                interval.tick().await;
                limiter.retain_recent();
            }
        });

        let store = self.state.store.clone();
        let retention = time::Duration::seconds(self.state.config.events.retention_secs as i64);
        let prune_every = Duration::from_secs(self.state.config.events.prune_interval_secs.max(1));
        let pruner = tokio::spawn(async move {
            let mut interval = tokio::time::interval(prune_every);
            loop {
                interval.tick().await;
                match store
                    .prune_events(time::OffsetDateTime::now_utc() - retention)
                    .await
                {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "pruned old events"),
                    Err(error) => tracing::warn!(%error, "pruning events failed"),
                }
            }
        });

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let connections = self.state.shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            // Upgraded WebSocket connections are not in-flight requests:
            // they are told to close themselves.
            connections.send_replace(true);
            let _ = stopping_tx.send(());
        };
        let nodelay = self.state.config.ws.tcp_nodelay;
        let event_order = self.state.event_order.clone();
        let service = app(self.state).into_make_service_with_connect_info::<SocketAddr>();
        // See `ws.tcp_nodelay`: latency against packets under load.
        let listener = self.listener.tap_io(move |tcp| {
            if let Err(error) = tcp.set_nodelay(nodelay) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
        });
        let serve = axum::serve(listener, service).with_graceful_shutdown(shutdown);
        // Boxed rather than pinned on the stack, so it can be dropped (and
        // with it the router's state) before the database closes.
        let mut serve = Box::pin(serve.into_future());
        let result = tokio::select! {
            result = &mut serve => result,
            _ = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("in-flight requests did not finish within the grace period");
                Ok(())
            }
        };
        drop(serve);
        sweeper.abort();
        pruner.abort();
        let order = event_order.snapshot();
        tracing::info!(
            early_events = order.early,
            gap_fills = order.fills,
            "live events out of order, over the connections that closed"
        );
        let stats = self.store.stats();
        self.store.close().await;
        tracing::info!(
            batches = stats.batches,
            writes = stats.writes,
            largest_batch = stats.largest_batch,
            failed_batches = stats.failed_batches,
            rerun_batches = stats.rerun_batches,
            "database closed"
        );
        result
    }
}

/// Binds the built-in STUN responder next to the HTTP listener.
async fn start_responder(state: &AppState) -> Result<ice::responder::Responder, StartupError> {
    let config = &state.config;
    let bind = config
        .ice
        .responder
        .bind
        .unwrap_or_else(|| SocketAddr::new(config.bind.ip(), ice::url::DEFAULT_STUN_PORT));
    let host = url::Url::parse(&config.public_url())
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| bind.ip().to_string());
    let responder = ice::responder::Responder::start(
        &config.ice.responder,
        bind,
        String::new(),
        state.shutdown.subscribe(),
    )
    .await
    .map_err(|e| StartupError::Config(format!("cannot bind the STUN responder on {bind}: {e}")))?;
    let url = config
        .ice
        .responder
        .url
        .clone()
        .unwrap_or_else(|| format!("stun:{host}:{}", responder.addr.port()));
    Ok(ice::responder::Responder { url, ..responder })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
