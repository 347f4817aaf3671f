//! The server's own STUN responder: answers Binding requests on a UDP port
//! so a self-hoster needs no outside STUN server. It faces the internet:
//! malformed datagrams are dropped and counted, and each source address is
//! rate-limited so the port cannot be used to flood anyone.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use voice_core::wire::StunResponderStatus;

use crate::config::StunResponderConfig;

/// Largest datagram read; a Binding request is far smaller.
const MAX_DATAGRAM: usize = 2048;

/// What the responder has done, for the admin status page.
#[derive(Default)]
pub struct ResponderCounters {
    pub answered: AtomicU64,
    pub malformed: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// A running responder.
#[derive(Clone)]
pub struct Responder {
    pub addr: SocketAddr,
    pub url: String,
    pub counters: Arc<ResponderCounters>,
}

impl Responder {
    /// Binds the port and starts answering until `shutdown` turns true.
    pub async fn start(
        config: &StunResponderConfig,
        bind: SocketAddr,
        url: String,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind).await?;
        let addr = socket.local_addr()?;
        let counters = Arc::new(ResponderCounters::default());
        let per_second =
            NonZeroU32::new(config.per_source_per_second.max(1)).expect("at least one");
        let burst = NonZeroU32::new(config.per_source_burst.max(1)).expect("at least one");
        let limiter: DefaultKeyedRateLimiter<IpAddr> =
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst));
        let task_counters = counters.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; MAX_DATAGRAM];
            let mut received: u64 = 0;
            loop {
                tokio::select! {
                    read = socket.recv_from(&mut buffer) => {
                        let Ok((len, from)) = read else { continue };
                        received += 1;
                        if received.is_multiple_of(4096) {
                            limiter.retain_recent();
                        }
                        if limiter.check_key(&from.ip()).is_err() {
                            task_counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        match voice_core::stun::answer_binding_request(&buffer[..len], from) {
                            Ok(answer) => {
                                if socket.send_to(&answer, from).await.is_ok() {
                                    task_counters.answered.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                task_counters.malformed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    _ = crate::ws::stopping(&mut shutdown) => break,
                }
            }
        });
        tracing::info!(%addr, "STUN responder listening");
        Ok(Self {
            addr,
            url,
            counters,
        })
    }

    pub fn status(&self) -> StunResponderStatus {
        StunResponderStatus {
            address: self.addr.to_string(),
            url: self.url.clone(),
            answered: self.counters.answered.load(Ordering::Relaxed),
            malformed: self.counters.malformed.load(Ordering::Relaxed),
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
        }
    }
}
