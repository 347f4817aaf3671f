//! ICE servers for clients: STUN servers verified recently (fastest
//! first), the server's own STUN responder, and TURN with short-lived
//! credentials.
//!
//! - [`url`]: `stun:` URLs.
//! - [`responder`]: the built-in STUN responder (UDP).
//! - [`prober`]: the tokio driver of voice-core's sans-IO STUN checker.
//! - [`turn`]: TURN REST credentials.
//! - [`routes`]: `GET /v1/ice-servers` and the admin endpoints.

pub mod prober;
pub mod responder;
pub mod routes;
pub mod turn;
pub use voice_core::ice_url as url;

use std::sync::{Arc, RwLock};

use time::OffsetDateTime;
use tokio::sync::mpsc;
use voice_core::store::Store;
use voice_core::wire::{IceServer, IceServersResponse, IceStatusResponse, StunServerStatus};
use voice_core::{Error, UserId};

use crate::config::IceConfig;
use responder::Responder;
use url::StunUrl;

/// What the prober last found, for handlers to read without waiting.
#[derive(Default)]
pub struct Snapshot {
    /// Healthy servers, fastest first.
    pub healthy: Vec<String>,
    pub status: Vec<StunServerStatus>,
}

struct Inner {
    config: IceConfig,
    store: Arc<dyn Store>,
    responder: RwLock<Option<Responder>>,
    snapshot: Arc<RwLock<Snapshot>>,
    /// New server lists for the prober.
    lists: mpsc::Sender<Vec<String>>,
}

/// The ICE service; cheap to clone.
#[derive(Clone)]
pub struct Ice {
    inner: Arc<Inner>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

impl Ice {
    /// Starts the prober on the configured list plus the stored edits.
    pub fn start(config: IceConfig, store: Arc<dyn Store>) -> Self {
        let (lists, inbox) = mpsc::channel(16);
        let snapshot = Arc::new(RwLock::new(Snapshot::default()));
        tokio::spawn(prober::run(
            prober::settings(&config),
            inbox,
            snapshot.clone(),
        ));
        let ice = Self {
            inner: Arc::new(Inner {
                config,
                store,
                responder: RwLock::new(None),
                snapshot,
                lists,
            }),
        };
        let starting = ice.clone();
        tokio::spawn(async move {
            if let Err(error) = starting.refresh_list().await {
                tracing::error!(%error, "cannot load the STUN server list");
            }
        });
        ice
    }

    /// The responder joins the list of servers checked and handed out.
    pub async fn attach_responder(&self, responder: Responder) -> voice_core::error::Result<()> {
        *self
            .inner
            .responder
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(responder);
        self.refresh_list().await
    }

    pub fn responder(&self) -> Option<Responder> {
        read(&self.inner.responder).clone()
    }

    /// The configured list, plus admins' additions, minus their removals,
    /// with the built-in responder first.
    pub async fn stun_list(&self) -> voice_core::error::Result<Vec<String>> {
        let mut list: Vec<String> = self.responder().map(|r| r.url).into_iter().collect();
        for url in &self.inner.config.stun_servers {
            if !list.contains(url) {
                list.push(url.clone());
            }
        }
        for (url, added) in self.inner.store.stun_overrides().await? {
            if added {
                if !list.contains(&url) {
                    list.push(url);
                }
            } else {
                list.retain(|existing| *existing != url);
            }
        }
        Ok(list)
    }

    async fn refresh_list(&self) -> voice_core::error::Result<()> {
        let list = self.stun_list().await?;
        // The prober keeps the state of servers still on the list.
        let _ = self.inner.lists.send(list).await;
        Ok(())
    }

    /// An admin adds (or removes) a server; the edit persists.
    pub async fn edit(&self, url: &str, added: bool) -> voice_core::error::Result<()> {
        StunUrl::parse(url)?;
        self.inner
            .store
            .set_stun_override(url, added, OffsetDateTime::now_utc())
            .await?;
        self.refresh_list().await
    }

    /// What a client gets: healthy STUN servers, fastest first, then TURN
    /// with credentials for `user`.
    pub fn ice_servers(&self, user: UserId) -> IceServersResponse {
        let healthy = read(&self.inner.snapshot).healthy.clone();
        let warning = healthy
            .is_empty()
            .then(|| "no STUN server is reachable now; calls may fail to connect".to_string());
        if warning.is_some() {
            tracing::warn!("no healthy STUN server to hand out");
        }
        let mut ice_servers: Vec<IceServer> = healthy
            .into_iter()
            .map(|url| IceServer {
                urls: vec![url],
                username: None,
                credential: None,
            })
            .collect();
        let turn = &self.inner.config.turn;
        let mut ttl = self.inner.config.probe_interval_secs;
        if let (false, Some(secret)) = (turn.urls.is_empty(), turn.secret.as_deref()) {
            let expires_at =
                OffsetDateTime::now_utc() + time::Duration::seconds(turn.ttl_secs as i64);
            let (username, credential) = turn::credentials(secret, user, expires_at);
            ice_servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
            ttl = ttl.min(turn.ttl_secs);
        }
        IceServersResponse {
            ice_servers,
            ttl,
            warning,
        }
    }

    pub fn status(&self) -> IceStatusResponse {
        IceStatusResponse {
            servers: read(&self.inner.snapshot).status.clone(),
            responder: self.responder().map(|r| r.status()),
        }
    }

    /// Whether `email` belongs to an admin.
    pub fn is_admin(&self, email: Option<&str>) -> bool {
        let Some(email) = email else { return false };
        let email = email.trim().to_lowercase();
        self.inner
            .config
            .admins
            .iter()
            .any(|admin| admin.trim().to_lowercase() == email)
    }
}

/// Refuses unknown URLs early with a clear message.
pub fn check_url(url: &str) -> Result<(), Error> {
    StunUrl::parse(url).map(|_| ())
}
