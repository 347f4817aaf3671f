//! The workloads and their bookkeeping: signing users in, making them
//! friends or a group, holding one WebSocket per user, sending at a fixed
//! offered rate (open loop: each send has a scheduled time, and latency
//! runs from it, so a stalled server cannot hide its stall), and checking
//! that every acknowledged message reached every recipient exactly once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::bursts::write_bursts;
use crate::process::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    Direct,
    Fanout,
    Idle,
    Calls,
}

/// How messages are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `message.send` on the sender's open WebSocket, answered by
    /// `message.sent` (or an `error`) carrying the send's `ref`.
    Socket,
    /// One `POST /v1/messages` per message.
    Http,
}

pub struct Settings {
    pub load: Load,
    pub via: Via,
    pub clients: usize,
    pub rate: f64,
    pub duration: Duration,
    pub max_messages: u64,
    pub max_in_flight: usize,
    pub progress: bool,
}

/// Microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub target: String,
    /// How messages were sent: `socket` or `http`.
    pub via: &'static str,
    pub clients: usize,
    pub offered_rate: f64,
    pub duration_secs: f64,
    /// Messages (or call requests) sent.
    pub sent: u64,
    /// Sends the server acknowledged (201/200): for messages, after commit.
    pub acked: u64,
    pub acked_per_sec: f64,
    /// Messages received by recipients (one per recipient).
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    /// From the scheduled send time to the recipient's socket.
    pub latency_us: Percentiles,
    /// From the scheduled send time to the acknowledgement.
    pub ack_latency_us: Percentiles,
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_us_per_message: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_max_bytes: Option<u64>,
    /// Idle workload: server memory per open connection.
    pub rss_per_connection_bytes: Option<f64>,
    pub connections: usize,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Acknowledged messages some recipient never got.
    pub missing: u64,
    /// Deliveries beyond one per recipient.
    pub duplicates: u64,
    /// A few of the missing messages, each with the users it never
    /// reached and the last event seq each of them got.
    pub missing_samples: Vec<String>,
    pub exactly_once: bool,
    /// Calls workload: `call.expired` events the callers received.
    pub calls_expired_seen: Option<u64>,
}

impl Report {
    /// This report's figures divided by the baseline's.
    pub fn ratios_to(&self, baseline: &Report) -> serde_json::Value {
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                Some((a / b * 100.0).round() / 100.0)
            } else {
                None
            }
        };
        serde_json::json!({
            "acked_per_sec": ratio(self.acked_per_sec, baseline.acked_per_sec),
            "deliveries_per_sec": ratio(self.deliveries_per_sec, baseline.deliveries_per_sec),
            "latency_p50": ratio(self.latency_us.p50 as f64, baseline.latency_us.p50 as f64),
            "latency_p99": ratio(self.latency_us.p99 as f64, baseline.latency_us.p99 as f64),
            "cpu_per_message": match (self.server_cpu_us_per_message, baseline.server_cpu_us_per_message) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => None,
            },
            "rss_max": match (self.server_rss_max_bytes, baseline.server_rss_max_bytes) {
                (Some(a), Some(b)) => ratio(a as f64, b as f64),
                _ => None,
            },
            "rss_per_connection": match (self.rss_per_connection_bytes, baseline.rss_per_connection_bytes) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => None,
            },
        })
    }
}

struct Peer {
    index: usize,
    id: String,
    token: Option<String>,
}

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, String> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.map_err(|e| e.to_string())
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<T, String> {
        let response = self.succeed(method, path, token, body).await?;
        response.json().await.map_err(|e| format!("{path}: {e}"))
    }

    /// [`Http::request`], with any status but success an error that says
    /// what the server answered.
    async fn succeed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, String> {
        let response = self.request(method, path, token, body).await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{path}: {status} {text}"));
        }
        Ok(response)
    }
}

/// What the readers and senders share.
struct Tracker {
    start: Instant,
    expected_per_message: u32,
    counts: Vec<AtomicU32>,
    /// Who got each message: `words` bits (one per user) per message.
    received_by: Vec<AtomicU64>,
    words: usize,
    /// Who sent each message (`u32::MAX`: not sent).
    sender: Vec<AtomicU32>,
    /// The last event seq each user's socket got (from `ready` on).
    last_seq: Vec<AtomicU64>,
    acked: Vec<AtomicBool>,
    deliveries: AtomicU64,
    last_delivery_ns: AtomicU64,
    expired: AtomicU64,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
    latency: Mutex<Histogram<u64>>,
    ack_latency: Mutex<Histogram<u64>>,
    /// Sends not answered yet; a permit is taken per send and given back
    /// by whoever sees the answer (the HTTP task or the socket's reader).
    in_flight: Semaphore,
    max_in_flight: usize,
}

impl Tracker {
    fn new(messages: usize, users: usize, expected_per_message: u32, max_in_flight: usize) -> Self {
        let words = users.div_ceil(64).max(1);
        let histogram =
            || Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"));
        Self {
            start: Instant::now(),
            expected_per_message,
            counts: (0..messages).map(|_| AtomicU32::new(0)).collect(),
            received_by: (0..messages * words).map(|_| AtomicU64::new(0)).collect(),
            words,
            sender: (0..messages).map(|_| AtomicU32::new(u32::MAX)).collect(),
            last_seq: (0..users).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..messages).map(|_| AtomicBool::new(false)).collect(),
            deliveries: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_samples: Mutex::new(Vec::new()),
            latency: histogram(),
            ack_latency: histogram(),
            in_flight: Semaphore::new(max_in_flight),
            max_in_flight,
        }
    }

    /// Send `k`, scheduled at `scheduled_ns`, was acknowledged.
    fn ack(&self, k: usize, scheduled_ns: u64) {
        if let Some(acked) = self.acked.get(k) {
            acked.store(true, Ordering::Relaxed);
        }
        let now = self.now_ns();
        if let Ok(mut h) = self.ack_latency.lock() {
            let _ = h.record((now.saturating_sub(scheduled_ns) / 1000).max(1));
        }
    }

    /// An answer (acknowledgement or error) to a socket send arrived.
    fn answered(&self, reference: &str, error: Option<&serde_json::Value>) {
        let parsed = reference
            .split_once(':')
            .and_then(|(k, ns)| Some((k.parse::<usize>().ok()?, ns.parse::<u64>().ok()?)));
        match (parsed, error) {
            (Some((k, scheduled_ns)), None) => self.ack(k, scheduled_ns),
            (_, error) => self.error(format!("ref {reference}: {error:?}")),
        }
        self.in_flight.add_permits(1);
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut samples) = self.error_samples.lock()
            && samples.len() < 5
        {
            samples.push(what);
        }
    }

    /// A `message.created` body arrived at user `receiver`.
    fn delivered(&self, receiver: usize, body: &str) {
        let mut parts = body.split(' ');
        let (Some("L"), Some(id), Some(sent_ns), Some(sender)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let (Ok(id), Ok(sent_ns), Ok(sender)) = (
            id.parse::<usize>(),
            sent_ns.parse::<u64>(),
            sender.parse::<usize>(),
        ) else {
            return;
        };
        // The sender's own devices get their message too; not a delivery.
        if sender == receiver {
            return;
        }
        let now = self.now_ns();
        if let Some(count) = self.counts.get(id) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(word) = self.received_by.get(id * self.words + receiver / 64) {
            word.fetch_or(1 << (receiver % 64), Ordering::Relaxed);
        }
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record((now.saturating_sub(sent_ns) / 1000).max(1));
        }
    }

    /// Up to `limit` acknowledged messages that some user never got, with
    /// those users (all but the sender, when every user should have got
    /// it) and the last event seq each of them got.
    fn missing_samples(&self, limit: usize) -> Vec<String> {
        let users = self.last_seq.len();
        let to_everyone = self.expected_per_message as usize + 1 == users;
        (0..self.counts.len())
            .filter(|&k| self.is_missing(k))
            .take(limit)
            .map(|k| {
                let count = self.counts[k].load(Ordering::Relaxed);
                let sender = self.sender[k].load(Ordering::Relaxed) as usize;
                let mut text = format!(
                    "message {k} from user {sender} reached {count} of {}",
                    self.expected_per_message
                );
                if to_everyone {
                    let missed: Vec<String> = (0..users)
                        .filter(|&user| user != sender)
                        .filter(|&user| {
                            let word = &self.received_by[k * self.words + user / 64];
                            word.load(Ordering::Relaxed) & (1 << (user % 64)) == 0
                        })
                        .map(|user| {
                            let seq = self.last_seq[user].load(Ordering::Relaxed);
                            format!("user {user} (last seq {seq})")
                        })
                        .collect();
                    text.push_str(&format!("; not {}", missed.join(", ")));
                }
                text
            })
            .collect()
    }

    /// Whether message `k` was acknowledged but some recipient has not
    /// got it (yet).
    fn is_missing(&self, k: usize) -> bool {
        self.acked[k].load(Ordering::Relaxed)
            && self.counts[k].load(Ordering::Relaxed) < self.expected_per_message
    }

    fn outstanding(&self) -> u64 {
        (0..self.counts.len())
            .filter(|&k| self.is_missing(k))
            .count() as u64
    }
}

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
}

#[derive(Deserialize)]
struct Me {
    id: String,
}

#[derive(Deserialize)]
struct Ticket {
    ticket: String,
}

#[derive(Deserialize)]
struct GroupView {
    group: GroupId,
}

#[derive(Deserialize)]
struct GroupId {
    id: String,
}

pub async fn run(target: &Target, settings: &Settings, baseline: bool) -> Result<Report, String> {
    let http = Http {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(settings.max_in_flight)
            .build()
            .map_err(|e| e.to_string())?,
        base: target.url.clone(),
    };
    let peers = sign_in(&http, settings.clients, baseline).await?;
    eprintln!("{} users signed in", peers.len());
    let group = relate(&http, &peers, settings.load, baseline).await?;

    let total = ((settings.rate * settings.duration.as_secs_f64()) as u64)
        .min(settings.max_messages) as usize;
    let expected = match settings.load {
        Load::Direct => 1,
        Load::Fanout => (peers.len() as u32).saturating_sub(1),
        Load::Idle | Load::Calls => 0,
    };
    let tracker = Arc::new(Tracker::new(
        total,
        peers.len(),
        expected,
        settings.max_in_flight,
    ));

    let rss_before_connections = target.rss();
    let sockets = connect_all(&http, &peers, baseline, tracker.clone()).await?;
    eprintln!("{} sockets open", sockets.len());

    let mut report = Report {
        target: if baseline {
            "baseline relay".into()
        } else {
            target.url.clone()
        },
        via: match settings.via {
            Via::Socket => "socket",
            Via::Http => "http",
        },
        clients: peers.len(),
        offered_rate: settings.rate,
        duration_secs: settings.duration.as_secs_f64(),
        connections: sockets.len(),
        ..Report::default()
    };

    let rss_max = Arc::new(AtomicU64::new(target.rss().unwrap_or(0)));
    let sampler = {
        let (rss_max, pid) = (rss_max.clone(), target.pid);
        tokio::spawn(async move {
            let probe = Target::external(String::new(), pid);
            loop {
                if let Some(rss) = probe.rss() {
                    rss_max.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    if settings.load == Load::Idle {
        // Let the server settle its buffers, then hold.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let (Some(before), Some(after)) = (rss_before_connections, target.rss()) {
            report.rss_per_connection_bytes =
                Some(after.saturating_sub(before) as f64 / sockets.len().max(1) as f64);
        }
        tokio::time::sleep(settings.duration).await;
    } else {
        let cpu_before = target.cpu_time();
        let send_started = Instant::now();
        let sent = send_all(
            &http,
            &peers,
            &sockets,
            group.as_deref(),
            settings,
            total,
            tracker.clone(),
        )
        .await;
        let send_elapsed = send_started.elapsed().as_secs_f64();
        // Wait (bounded) for deliveries to catch up, or for rings to expire.
        let drain_until = Instant::now()
            + if settings.load == Load::Calls {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(15)
            };
        while Instant::now() < drain_until {
            if settings.load != Load::Calls && tracker.outstanding() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu_after = target.cpu_time();
        let acked = tracker
            .acked
            .iter()
            .filter(|a| a.load(Ordering::Relaxed))
            .count() as u64;
        let deliveries = tracker.deliveries.load(Ordering::Relaxed);
        report.sent = sent;
        report.acked = acked;
        report.acked_per_sec = acked as f64 / send_elapsed;
        report.deliveries = deliveries;
        let delivery_span = (tracker.last_delivery_ns.load(Ordering::Relaxed) as f64 / 1e9
            - send_started.duration_since(tracker.start).as_secs_f64())
        .max(send_elapsed);
        report.deliveries_per_sec = deliveries as f64 / delivery_span;
        if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
            let cpu = (after - before).as_secs_f64();
            report.server_cpu_secs = Some(cpu);
            if acked > 0 {
                report.server_cpu_us_per_message = Some(cpu * 1e6 / acked as f64);
            }
            if deliveries > 0 {
                report.server_cpu_us_per_delivery = Some(cpu * 1e6 / deliveries as f64);
            }
        }
        if settings.load == Load::Calls {
            report.calls_expired_seen = Some(tracker.expired.load(Ordering::Relaxed));
        } else {
            let missing = tracker.outstanding();
            let duplicates = tracker
                .counts
                .iter()
                .map(|count| u64::from(count.load(Ordering::Relaxed).saturating_sub(expected)))
                .sum();
            report.missing = missing;
            report.missing_samples = tracker.missing_samples(5);
            report.duplicates = duplicates;
            report.exactly_once = missing == 0 && duplicates == 0 && acked > 0;
        }
    }
    sampler.abort();
    let peak = rss_max.load(Ordering::Relaxed);
    report.server_rss_max_bytes = (peak > 0).then_some(peak);
    report.latency_us = tracker
        .latency
        .lock()
        .map(|h| Percentiles::of(&h))
        .unwrap_or_default();
    report.ack_latency_us = tracker
        .ack_latency
        .lock()
        .map(|h| Percentiles::of(&h))
        .unwrap_or_default();
    report.errors = tracker.errors.load(Ordering::Relaxed);
    report.error_samples = tracker
        .error_samples
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    for socket in sockets {
        socket.reader.abort();
        socket.writer.abort();
    }
    Ok(report)
}

async fn sign_in(http: &Http, count: usize, baseline: bool) -> Result<Vec<Peer>, String> {
    if baseline {
        return Ok((0..count)
            .map(|index| Peer {
                index,
                id: uuid::Uuid::now_v7().to_string(),
                token: None,
            })
            .collect());
    }
    // A fresh name per run, so runs against one server never collide.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 8..];
    let results: Vec<Result<Peer, String>> = stream::iter(0..count)
        .map(|index| {
            let http = http.clone();
            let username = format!("load-{run}-{index}");
            async move {
                let tokens: Tokens = http
                    .json(
                        reqwest::Method::POST,
                        "/v1/auth/dev-login",
                        None,
                        Some(serde_json::json!({ "username": username })),
                    )
                    .await?;
                let me: Me = http
                    .json(
                        reqwest::Method::GET,
                        "/v1/me",
                        Some(&tokens.access_token),
                        None,
                    )
                    .await?;
                Ok(Peer {
                    index,
                    id: me.id,
                    token: Some(tokens.access_token),
                })
            }
        })
        .buffered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Friendships (pairs, or everyone with user 0) and the fan-out group.
async fn relate(
    http: &Http,
    peers: &[Peer],
    load: Load,
    baseline: bool,
) -> Result<Option<String>, String> {
    let friendships: Vec<(usize, usize)> = match load {
        Load::Direct | Load::Calls => (0..peers.len() / 2).map(|k| (2 * k, 2 * k + 1)).collect(),
        Load::Fanout => (1..peers.len()).map(|k| (0, k)).collect(),
        Load::Idle => Vec::new(),
    };
    if !baseline {
        let results: Vec<Result<(), String>> = stream::iter(friendships)
            .map(|(a, b)| {
                let http = http.clone();
                let (from, to) = (&peers[a], &peers[b]);
                async move {
                    http.succeed(
                        reqwest::Method::POST,
                        "/v1/friends/requests",
                        from.token.as_deref(),
                        Some(serde_json::json!({ "user_id": to.id })),
                    )
                    .await?;
                    http.succeed(
                        reqwest::Method::POST,
                        &format!("/v1/friends/requests/{}/accept", from.id),
                        to.token.as_deref(),
                        None,
                    )
                    .await?;
                    Ok(())
                }
            })
            .buffered(32)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
    }
    if load != Load::Fanout {
        return Ok(None);
    }
    let members: Vec<String> = peers[1..].iter().map(|p| p.id.clone()).collect();
    if baseline {
        let id = uuid::Uuid::now_v7().to_string();
        let all: Vec<String> = peers.iter().map(|p| p.id.clone()).collect();
        http.request(
            reqwest::Method::POST,
            "/baseline/groups",
            None,
            Some(serde_json::json!({ "id": id, "members": all })),
        )
        .await?;
        return Ok(Some(id));
    }
    let view: GroupView = http
        .json(
            reqwest::Method::POST,
            "/v1/groups",
            peers[0].token.as_deref(),
            Some(serde_json::json!({ "name": "load", "members": members })),
        )
        .await?;
    Ok(Some(view.group.id))
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    message: Option<IncomingMessage>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    error: Option<serde_json::Value>,
    /// Set on stored events: the device's event seq.
    seq: Option<u64>,
    /// Set on `ready`: the seq the live events follow.
    latest_seq: Option<u64>,
}

/// One user's open WebSocket: a task reading events, and a task writing
/// what is pushed into `outgoing`.
struct Socket {
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    outgoing: tokio::sync::mpsc::UnboundedSender<String>,
}

#[derive(Deserialize)]
struct IncomingMessage {
    body: Option<String>,
}

async fn connect_all(
    http: &Http,
    peers: &[Peer],
    baseline: bool,
    tracker: Arc<Tracker>,
) -> Result<Vec<Socket>, String> {
    let ws_base = http.base.replacen("http", "ws", 1);
    let results: Vec<Result<Socket, String>> = stream::iter(peers)
        .map(|peer| {
            let (http, ws_base, tracker) = (http.clone(), ws_base.clone(), tracker.clone());
            async move {
                let url = if baseline {
                    format!("{ws_base}/v1/ws?user={}", peer.id)
                } else {
                    let ticket: Ticket = http
                        .json(
                            reqwest::Method::POST,
                            "/v1/ws/ticket",
                            peer.token.as_deref(),
                            None,
                        )
                        .await?;
                    format!("{ws_base}/v1/ws?ticket={}", ticket.ticket)
                };
                // No Nagle: each send is a small frame that should go at
                // once, as a real client's would.
                let (socket, _) = tokio_tungstenite::connect_async_with_config(&url, None, true)
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let receiver = peer.index;
                let (sink, mut stream) = socket.split();
                let (outgoing, to_send) = tokio::sync::mpsc::unbounded_channel::<String>();
                let writer = tokio::spawn(write_bursts(to_send, sink, |text| {
                    Message::Text(text.into())
                }));
                let (ready, is_ready) = tokio::sync::oneshot::channel::<()>();
                let mut ready = Some(ready);
                let reader = tokio::spawn(async move {
                    // A socket ends only when the run is over and this
                    // task is aborted; before that, its end is an error:
                    // every delivery after it would be missing unexplained.
                    while let Some(message) = stream.next().await {
                        let text = match message {
                            Ok(Message::Text(text)) => text,
                            Ok(Message::Close(frame)) => {
                                tracker.error(format!(
                                    "the server closed user {receiver}'s socket: {frame:?}"
                                ));
                                return;
                            }
                            Ok(_) => continue,
                            Err(error) => {
                                tracker.error(format!("user {receiver}'s socket failed: {error}"));
                                return;
                            }
                        };
                        let event = match serde_json::from_str::<Incoming>(&text) {
                            Ok(event) => event,
                            Err(error) => {
                                tracker.error(format!("user {receiver} got {text}: {error}"));
                                continue;
                            }
                        };
                        // Stored events must come one seq after another:
                        // a jump is events the device never got.
                        let last_seq = &tracker.last_seq[receiver];
                        if event.kind == "ready" {
                            last_seq.store(event.latest_seq.unwrap_or(0), Ordering::Relaxed);
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                        } else if let Some(seq) = event.seq {
                            let last = last_seq.swap(seq, Ordering::Relaxed);
                            if seq != last + 1 {
                                tracker.error(format!(
                                    "user {receiver} got seq {seq} after {last} ({})",
                                    event.kind
                                ));
                            }
                        }
                        match event.kind.as_str() {
                            "message.created" => {
                                if let Some(body) = event.message.and_then(|m| m.body) {
                                    tracker.delivered(receiver, &body);
                                }
                            }
                            "message.sent" | "error" => match &event.reference {
                                Some(reference) => {
                                    tracker.answered(reference, event.error.as_ref())
                                }
                                None => tracker.error(format!("{:?}", event.error)),
                            },
                            "resync_required" => {
                                tracker
                                    .error(format!("user {receiver} was told to resync: {text}"));
                            }
                            "call.expired" if receiver.is_multiple_of(2) => {
                                tracker.expired.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    tracker.error(format!("user {receiver}'s socket ended"));
                });
                // Live events start at `ready`: what is stored before it is
                // history, not a delivery, so no send may go before every
                // socket is there.
                if !matches!(
                    tokio::time::timeout(Duration::from_secs(10), is_ready).await,
                    Ok(Ok(()))
                ) {
                    reader.abort();
                    writer.abort();
                    return Err(format!("{url}: no ready event within 10 s"));
                }
                Ok(Socket {
                    reader,
                    writer,
                    outgoing,
                })
            }
        })
        .buffered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Sleeps with the operating system's precision (tens of microseconds)
/// on a thread of its own. tokio's timer wheel fires up to a millisecond
/// late, which at 1,000 sends/s put about half a millisecond of the load
/// tool's own delay into every measured latency. A sender that is behind
/// its schedule never asks, so under saturation this costs nothing.
struct PreciseClock {
    wake_at: std::sync::mpsc::Sender<(Instant, tokio::sync::oneshot::Sender<()>)>,
}

impl PreciseClock {
    fn start() -> Self {
        let (wake_at, requests) =
            std::sync::mpsc::channel::<(Instant, tokio::sync::oneshot::Sender<()>)>();
        std::thread::spawn(move || {
            for (at, wake) in requests {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let _ = wake.send(());
            }
        });
        Self { wake_at }
    }

    async fn sleep_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (wake, woken) = tokio::sync::oneshot::channel();
        if self.wake_at.send((at, wake)).is_ok() {
            let _ = woken.await;
        }
    }
}

async fn send_all(
    http: &Http,
    peers: &[Peer],
    sockets: &[Socket],
    group: Option<&str>,
    settings: &Settings,
    total: usize,
    tracker: Arc<Tracker>,
) -> u64 {
    let progress = if settings.progress {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sent, {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let interval = Duration::from_secs_f64(1.0 / settings.rate.max(0.001));
    let clock = PreciseClock::start();
    let started = Instant::now();
    let pairs = (peers.len() / 2).max(1);
    let mut sent = 0;
    for k in 0..total {
        // Latency counts from here, when the send is due: a send that goes
        // late (the sender is behind) is not excused its wait.
        let scheduled = started + interval.mul_f64(k as f64);
        clock.sleep_until(scheduled).await;
        let Ok(permit) = tracker.in_flight.acquire().await else {
            break;
        };
        let scheduled_ns = tracker.now_ns().saturating_sub(
            Instant::now()
                .saturating_duration_since(scheduled)
                .as_nanos() as u64,
        );
        let (sender, path, body) = match settings.load {
            Load::Direct => {
                let pair = k % pairs;
                // Alternate directions so both ends send.
                let (from, to) = if (k / pairs).is_multiple_of(2) {
                    (2 * pair, 2 * pair + 1)
                } else {
                    (2 * pair + 1, 2 * pair)
                };
                let text = format!("L {k} {scheduled_ns} {from}");
                (
                    from,
                    "/v1/messages",
                    serde_json::json!({ "to": { "user": peers[to].id }, "body": text }),
                )
            }
            Load::Fanout => {
                let from = k % peers.len();
                let text = format!("L {k} {scheduled_ns} {from}");
                (
                    from,
                    "/v1/messages",
                    serde_json::json!({ "to": { "group": group.unwrap_or_default() }, "body": text }),
                )
            }
            Load::Calls => {
                let pair = k % pairs;
                (
                    2 * pair,
                    "/v1/calls",
                    serde_json::json!({ "callee": peers[2 * pair + 1].id }),
                )
            }
            Load::Idle => break,
        };
        // The permit goes back when the answer is seen.
        permit.forget();
        if let Some(slot) = tracker.sender.get(k) {
            slot.store(sender as u32, Ordering::Relaxed);
        }
        if settings.via == Via::Socket && path == "/v1/messages" {
            let mut frame = body;
            frame["type"] = "message.send".into();
            frame["ref"] = format!("{k}:{scheduled_ns}").into();
            if sockets[sender].outgoing.send(frame.to_string()).is_err() {
                tracker.error(format!("user {sender}'s socket is closed"));
                tracker.in_flight.add_permits(1);
            }
        } else {
            let (http, tracker) = (http.clone(), tracker.clone());
            let token = peers[sender].token.clone();
            tokio::spawn(async move {
                let result = http
                    .request(reqwest::Method::POST, path, token.as_deref(), Some(body))
                    .await;
                match result {
                    Ok(response) if response.status().is_success() => tracker.ack(k, scheduled_ns),
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        tracker.error(format!(
                            "{status}: {}",
                            text.chars().take(200).collect::<String>()
                        ));
                    }
                    Err(e) => tracker.error(e),
                }
                tracker.in_flight.add_permits(1);
            });
        }
        sent += 1;
        if k % 256 == 0 {
            progress.set_position(k as u64);
            progress.set_message(format!(
                "{} delivered, {} errors",
                tracker.deliveries.load(Ordering::Relaxed),
                tracker.errors.load(Ordering::Relaxed)
            ));
        }
    }
    // Every send answered before the clock stops (bounded: a socket that
    // died leaves its sends unanswered).
    let all = tracker.max_in_flight as u32;
    if let Ok(Ok(permits)) =
        tokio::time::timeout(Duration::from_secs(30), tracker.in_flight.acquire_many(all)).await
    {
        drop(permits);
    } else {
        tracker.error("some sends were never answered".into());
    }
    progress.finish_and_clear();
    sent
}
