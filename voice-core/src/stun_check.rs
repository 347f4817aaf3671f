//! Checking STUN servers, sans-IO: [`StunProbe`] is one Binding
//! transaction with one server address, [`StunChecker`] the health of a
//! list of servers over time. Neither owns a socket, reads a clock or draws
//! random numbers: `now`, datagrams, transaction ids and jitter come in as
//! arguments, and the driver sleeps until `poll_timeout`.
//!
//! A driver, per server due in [`StunChecker::poll_due`]: resolve the
//! name, start a [`StunProbe`] with a random transaction id, send what
//! [`StunProbe::poll_transmit`] yields, feed datagrams to
//! [`StunProbe::handle_input`] and wake-ups to [`StunProbe::handle_timeout`]
//! until [`StunProbe::result`] is `Some`, then hand that to
//! [`StunChecker::handle_probe_result`]. How a name with several addresses
//! counts (the first, or any of them) is the driver's choice.
//!
//! Retransmission follows RFC 5389 section 7.2.1: the request goes out at
//! once, again after the initial RTO, and again after each doubled RTO
//! (gaps of 500, 1000, 2000 ms ... by default), at most
//! [`ProbeConfig::max_transmits`] times. The overall
//! [`ProbeConfig::timeout`] bounds the whole transaction and stands in for
//! the RFC's final wait of Rm × RTO: when it passes without an answer the
//! probe fails with [`ProbeFailure::Timeout`]. With the defaults (5 s) the
//! request is sent 4 times, at 0, 0.5, 1.5 and 3.5 s.
//!
//! The RTT is measured from the first transmission (the `now` given to
//! [`StunProbe::new`]), whichever transmission the answer belongs to. With
//! retransmissions the transmission answered cannot be known (Karn's
//! problem); the time since the first one is what a browser gathering
//! candidates would wait, which is what the checker ranks servers by. It
//! is not used to tune the RTO.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stun::{StunError, binding_request, parse_binding_response};

/// Delays are capped here so that adding them to an `Instant` cannot
/// overflow, whatever the configuration says.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// `now + delay`, never panicking.
fn after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(MAX_DELAY)).unwrap_or(now)
}

/// Retransmission and timeout of one probe.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// The wait after the first transmission; doubled after each one.
    pub initial_rto: Duration,
    /// Transmissions at most, the first included (RFC 5389's Rc). Zero
    /// counts as one.
    pub max_transmits: u32,
    /// From the first transmission to giving up.
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            initial_rto: Duration::from_millis(500),
            max_transmits: 7,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A datagram for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// A probe's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSuccess {
    /// Our address as the server saw it.
    pub mapped: SocketAddr,
    /// From the first transmission to the answer.
    pub rtt: Duration,
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// No matching answer before [`ProbeConfig::timeout`].
    #[error("no answer before the timeout")]
    Timeout,
    /// The server answered with a Binding error response.
    #[error("error response {code}: {reason}")]
    ErrorResponse { code: u16, reason: String },
}

/// How a probe ended.
pub type ProbeResult = Result<ProbeSuccess, ProbeFailure>;

/// What a probe sent and what it ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Transmissions handed out by [`StunProbe::poll_transmit`].
    pub transmits: u32,
    /// Datagrams from an address other than the server's.
    pub wrong_source: u64,
    /// Binding responses for another transaction.
    pub wrong_transaction: u64,
    /// Datagrams that were not Binding responses.
    pub invalid: u64,
    /// Datagrams that came after the probe had ended.
    pub late: u64,
}

/// One Binding transaction with one server address.
///
/// Getters: [`server`](Self::server), [`transaction_id`](Self::transaction_id),
/// [`stats`](Self::stats), [`result`](Self::result). Inputs:
/// [`handle_input`](Self::handle_input), [`handle_timeout`](Self::handle_timeout).
/// Outputs: [`poll_transmit`](Self::poll_transmit),
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub struct StunProbe {
    server: SocketAddr,
    transaction_id: [u8; 12],
    /// The request, the same bytes every time (RFC 5389: a retransmission
    /// keeps the transaction id).
    request: Vec<u8>,
    /// The first transmission; RTTs count from here.
    started: Instant,
    /// When the probe gives up.
    deadline: Instant,
    /// The next retransmission, while any remain.
    next_transmit: Option<Instant>,
    /// The wait before the retransmission after `next_transmit`.
    rto: Duration,
    /// Transmissions scheduled so far, the first included.
    scheduled: u32,
    max_transmits: u32,
    /// A transmission is waiting for `poll_transmit`.
    pending_transmit: bool,
    result: Option<ProbeResult>,
    stats: ProbeStats,
}

impl StunProbe {
    /// A probe whose first transmission is due at once (`now`).
    pub fn new(
        now: Instant,
        server: SocketAddr,
        transaction_id: [u8; 12],
        config: &ProbeConfig,
    ) -> Self {
        let max_transmits = config.max_transmits.max(1);
        let next_transmit = (max_transmits > 1).then(|| after(now, config.initial_rto));
        Self {
            server,
            transaction_id,
            request: binding_request(transaction_id),
            started: now,
            deadline: after(now, config.timeout),
            next_transmit,
            rto: config.initial_rto.saturating_mul(2),
            scheduled: 1,
            max_transmits,
            pending_transmit: true,
            result: None,
            stats: ProbeStats::default(),
        }
    }

    // Getters.

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    pub fn transaction_id(&self) -> [u8; 12] {
        self.transaction_id
    }

    pub fn stats(&self) -> ProbeStats {
        self.stats
    }

    /// How the probe ended; `None` while it runs.
    pub fn result(&self) -> Option<ProbeResult> {
        self.result.clone()
    }

    pub fn is_done(&self) -> bool {
        self.result.is_some()
    }

    // Inputs.

    /// A datagram arrived from `from`. Only a Binding response from the
    /// server's address (an IPv4-mapped IPv6 form counts as the IPv4
    /// address) with this probe's transaction id ends the probe; anything
    /// else is ignored and counted in [`stats`](Self::stats).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        // A deadline that passed counts before the datagram does.
        self.handle_timeout(now);
        if self.result.is_some() {
            self.stats.late += 1;
            return;
        }
        if canonical(from) != canonical(self.server) {
            self.stats.wrong_source += 1;
            return;
        }
        match parse_binding_response(data) {
            Ok(response) if response.transaction_id == self.transaction_id => {
                self.finish(Ok(ProbeSuccess {
                    mapped: response.mapped,
                    rtt: now.saturating_duration_since(self.started),
                }));
            }
            Err(StunError::ErrorResponse {
                transaction_id,
                code,
                reason,
            }) if transaction_id == self.transaction_id => {
                self.finish(Err(ProbeFailure::ErrorResponse { code, reason }));
            }
            Ok(_) | Err(StunError::ErrorResponse { .. }) => self.stats.wrong_transaction += 1,
            Err(_) => self.stats.invalid += 1,
        }
    }

    /// Time passed: retransmit when due, give up at the deadline. Early
    /// or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        if now >= self.deadline {
            self.finish(Err(ProbeFailure::Timeout));
            return;
        }
        if let Some(at) = self.next_transmit
            && now >= at
        {
            self.pending_transmit = true;
            self.scheduled += 1;
            self.next_transmit =
                (self.scheduled < self.max_transmits).then(|| after(now, self.rto));
            self.rto = self.rto.saturating_mul(2);
        }
    }

    // Outputs.

    /// The request to send, once per (re)transmission.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if !std::mem::take(&mut self.pending_transmit) {
            return None;
        }
        self.stats.transmits += 1;
        Some(Transmit {
            destination: self.server,
            payload: self.request.clone(),
        })
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None`
    /// once the probe has ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        Some(match self.next_transmit {
            Some(at) => at.min(self.deadline),
            None => self.deadline,
        })
    }

    fn finish(&mut self, result: ProbeResult) {
        self.result = Some(result);
        self.pending_transmit = false;
        self.next_transmit = None;
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of IPv4) as
/// IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// How often servers are checked and when they count as down.
#[derive(Clone, Debug)]
pub struct CheckerConfig {
    /// Between two checks of a server, before jitter.
    pub interval: Duration,
    /// Consecutive failures that make a server unhealthy. Zero counts as
    /// one.
    pub unhealthy_after: u32,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            unhealthy_after: 3,
        }
    }
}

/// A server's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Not checked yet, or failing but not yet `unhealthy_after` times.
    Unknown,
    /// Its last check succeeded, or fewer than `unhealthy_after` failed
    /// since.
    Healthy,
    /// The last `unhealthy_after` checks or more failed.
    Unhealthy,
}

/// One server as the checker sees it. Times are `Instant`s; the server
/// turns them into something an admin can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// As configured, e.g. `stun:stun.example.org:3478`.
    pub name: String,
    pub state: ServerState,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When the last result came in.
    pub last_check: Option<Instant>,
    /// The RTT of the last success.
    pub last_rtt: Option<Duration>,
    /// Our address as the last success saw it.
    pub last_mapped: Option<SocketAddr>,
    /// The last failure's text; `None` after a success.
    pub last_error: Option<String>,
    /// When [`StunChecker::poll_due`] next returns the server.
    pub next_check: Instant,
}

/// What a probe result did to a server's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: ServerState,
    pub to: ServerState,
}

impl Transition {
    pub fn changed(self) -> bool {
        self.from != self.to
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckerError {
    /// A result for a server no longer (or never) in the list; dropped.
    #[error("unknown STUN server {0:?}")]
    UnknownServer(String),
}

/// The health of a list of STUN servers over time.
///
/// Getters: [`status`](Self::status), [`healthy_by_rtt`](Self::healthy_by_rtt).
/// Inputs: [`handle_servers`](Self::handle_servers),
/// [`handle_probe_result`](Self::handle_probe_result). Outputs:
/// [`poll_due`](Self::poll_due), [`poll_timeout`](Self::poll_timeout).
///
/// Each server is due when it joins the list, then `interval` plus the
/// caller's jitter after each time [`poll_due`](Self::poll_due) returned
/// it. The schedule does not wait for results: a probe ends well within
/// an interval, and a lost result cannot stop a server from being
/// checked again. Lists are a handful of servers, so they sit in a `Vec`
/// in configuration order.
#[derive(Clone, Debug, Default)]
pub struct StunChecker {
    servers: Vec<ServerStatus>,
    config: CheckerConfig,
}

impl StunChecker {
    /// A checker with no servers; give it some with
    /// [`handle_servers`](Self::handle_servers).
    pub fn new(config: CheckerConfig) -> Self {
        Self {
            servers: Vec::new(),
            config,
        }
    }

    // Getters.

    /// Every server, in list order.
    pub fn status(&self) -> Vec<ServerStatus> {
        self.servers.clone()
    }

    /// Healthy servers with their last RTT, fastest first (ties in list
    /// order).
    pub fn healthy_by_rtt(&self) -> Vec<(String, Duration)> {
        let mut healthy: Vec<(String, Duration)> = self
            .servers
            .iter()
            .filter(|server| server.state == ServerState::Healthy)
            .filter_map(|server| Some((server.name.clone(), server.last_rtt?)))
            .collect();
        healthy.sort_by_key(|(_, rtt)| *rtt);
        healthy
    }

    // Inputs.

    /// Replaces the list. Servers still in it keep their state and
    /// schedule; new ones start `Unknown` and are due at `now`. A name
    /// given twice counts once.
    pub fn handle_servers(&mut self, now: Instant, names: impl IntoIterator<Item = String>) {
        let mut old = std::mem::take(&mut self.servers);
        for name in names {
            if self.servers.iter().any(|server| server.name == name) {
                continue;
            }
            let server = match old.iter().position(|server| server.name == name) {
                Some(index) => old.swap_remove(index),
                None => ServerStatus {
                    name,
                    state: ServerState::Unknown,
                    consecutive_failures: 0,
                    last_check: None,
                    last_rtt: None,
                    last_mapped: None,
                    last_error: None,
                    next_check: now,
                },
            };
            self.servers.push(server);
        }
    }

    /// A probe of `name` ended: `Ok((mapped, rtt))` or the failure's text.
    /// A success makes the server healthy; `unhealthy_after` failures in a
    /// row make it unhealthy.
    pub fn handle_probe_result(
        &mut self,
        now: Instant,
        name: &str,
        result: Result<(SocketAddr, Duration), String>,
    ) -> Result<Transition, CheckerError> {
        let unhealthy_after = self.config.unhealthy_after.max(1);
        let server = self
            .servers
            .iter_mut()
            .find(|server| server.name == name)
            .ok_or_else(|| CheckerError::UnknownServer(name.to_owned()))?;
        let from = server.state;
        server.last_check = Some(now);
        match result {
            Ok((mapped, rtt)) => {
                server.state = ServerState::Healthy;
                server.consecutive_failures = 0;
                server.last_rtt = Some(rtt);
                server.last_mapped = Some(mapped);
                server.last_error = None;
            }
            Err(error) => {
                server.consecutive_failures = server.consecutive_failures.saturating_add(1);
                server.last_error = Some(error);
                if server.consecutive_failures >= unhealthy_after {
                    server.state = ServerState::Unhealthy;
                }
            }
        }
        Ok(Transition {
            from,
            to: server.state,
        })
    }

    // Outputs.

    /// The servers to probe now, in list order. Each is scheduled again
    /// `interval + jitter()` from `now`, one `jitter()` call per server
    /// returned, so the caller's randomness spreads them out (tests pass
    /// fixed values). A tenth of the interval is a reasonable range.
    pub fn poll_due(&mut self, now: Instant, mut jitter: impl FnMut() -> Duration) -> Vec<String> {
        let interval = self.config.interval;
        self.servers
            .iter_mut()
            .filter(|server| server.next_check <= now)
            .map(|server| {
                server.next_check = after(now, interval.saturating_add(jitter()));
                server.name.clone()
            })
            .collect()
    }

    /// When the next server is due; `None` without servers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.servers.iter().map(|server| server.next_check).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::answer_binding_request;

    const TID: [u8; 12] = [7; 12];

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn server() -> SocketAddr {
        "192.0.2.1:3478".parse().unwrap()
    }

    fn mapped() -> SocketAddr {
        "203.0.113.5:40000".parse().unwrap()
    }

    fn answer(tid: [u8; 12]) -> Vec<u8> {
        answer_binding_request(&binding_request(tid), mapped()).unwrap()
    }

    /// Runs a probe nobody answers, jumping from timeout to timeout; the
    /// offsets of its transmissions from `start`.
    fn run_unanswered(start: Instant, probe: &mut StunProbe) -> Vec<Duration> {
        let mut sent = Vec::new();
        let mut now = start;
        loop {
            while let Some(transmit) = probe.poll_transmit() {
                assert_eq!(transmit.destination, server());
                assert_eq!(transmit.payload, binding_request(TID));
                sent.push(now - start);
            }
            let Some(next) = probe.poll_timeout() else {
                return sent;
            };
            assert!(next > now, "timeouts move forward");
            now = next;
            probe.handle_timeout(now);
        }
    }

    #[test]
    fn retransmits_with_doubling_rto_until_the_overall_timeout() {
        let start = Instant::now();
        let mut probe = StunProbe::new(start, server(), TID, &ProbeConfig::default());
        assert_eq!(probe.poll_timeout(), Some(start + ms(500)));
        let sent = run_unanswered(start, &mut probe);
        assert_eq!(sent, [ms(0), ms(500), ms(1500), ms(3500)]);
        assert_eq!(probe.result(), Some(Err(ProbeFailure::Timeout)));
        assert_eq!(probe.stats().transmits, 4);
        assert_eq!(probe.poll_timeout(), None);
    }

    #[test]
    fn stops_at_max_transmits_and_waits_for_the_timeout() {
        let start = Instant::now();
        let config = ProbeConfig {
            timeout: Duration::from_secs(60),
            ..ProbeConfig::default()
        };
        let mut probe = StunProbe::new(start, server(), TID, &config);
        let sent = run_unanswered(start, &mut probe);
        // RFC 5389's example: 0, 500, 1500, 3500, 7500, 15500, 31500 ms.
        let expected: Vec<Duration> = [0, 500, 1500, 3500, 7500, 15500, 31500]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(sent, expected);
        let gaps: Vec<u128> = sent.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(gaps, [500, 1000, 2000, 4000, 8000, 16000]);
        assert_eq!(probe.result(), Some(Err(ProbeFailure::Timeout)));

        for max_transmits in [0, 1] {
            let config = ProbeConfig {
                max_transmits,
                ..ProbeConfig::default()
            };
            let mut probe = StunProbe::new(start, server(), TID, &config);
            assert_eq!(probe.poll_timeout(), Some(start + Duration::from_secs(5)));
            assert_eq!(run_unanswered(start, &mut probe), [ms(0)]);
        }
    }

    #[test]
    fn early_and_repeated_timeouts_do_nothing() {
        let start = Instant::now();
        let mut probe = StunProbe::new(start, server(), TID, &ProbeConfig::default());
        assert!(probe.poll_transmit().is_some());
        assert!(probe.poll_transmit().is_none());
        probe.handle_timeout(start + ms(499));
        assert!(probe.poll_transmit().is_none());
        probe.handle_timeout(start + ms(500));
        probe.handle_timeout(start + ms(500));
        assert!(probe.poll_transmit().is_some());
        assert!(probe.poll_transmit().is_none());
        assert_eq!(probe.poll_timeout(), Some(start + ms(1500)));
    }

    #[test]
    fn a_late_wake_up_sends_one_retransmission_and_counts_the_rto_from_then() {
        let start = Instant::now();
        let mut probe = StunProbe::new(start, server(), TID, &ProbeConfig::default());
        probe.poll_transmit();
        probe.handle_timeout(start + ms(800));
        assert!(probe.poll_transmit().is_some());
        assert!(probe.poll_transmit().is_none());
        assert_eq!(probe.poll_timeout(), Some(start + ms(1800)));
    }

    #[test]
    fn answer_ends_the_probe_with_rtt_from_the_first_transmission() {
        let start = Instant::now();
        let mut probe = StunProbe::new(start, server(), TID, &ProbeConfig::default());
        probe.poll_transmit();
        probe.handle_timeout(start + ms(500));
        probe.poll_transmit();
        probe.handle_input(start + ms(700), server(), &answer(TID));
        assert_eq!(
            probe.result(),
            Some(Ok(ProbeSuccess {
                mapped: mapped(),
                rtt: ms(700)
            }))
        );
        assert_eq!(probe.poll_timeout(), None);
        probe.handle_timeout(start + ms(1500));
        assert!(probe.poll_transmit().is_none());

        // A duplicate answer is late, and changes nothing.
        probe.handle_input(start + ms(900), server(), &answer(TID));
        assert_eq!(probe.stats().late, 1);
        assert_eq!(probe.result().unwrap().unwrap().rtt, ms(700));
    }

    #[test]
    fn ignores_and_counts_what_is_not_its_answer() {
        let start = Instant::now();
        let mut probe = StunProbe::new(start, server(), TID, &ProbeConfig::default());
        probe.poll_transmit();
        let now = start + ms(100);
        probe.handle_input(now, server(), &answer([8; 12]));
        probe.handle_input(now, "192.0.2.2:3478".parse().unwrap(), &answer(TID));
        probe.handle_input(now, "192.0.2.1:3479".parse().unwrap(), &answer(TID));
        probe.handle_input(now, server(), b"garbage");
        probe.handle_input(now, server(), &[]);
        probe.handle_input(now, server(), &binding_request(TID));
        assert_eq!(
            probe.stats(),
            ProbeStats {
                transmits: 1,
                wrong_source: 2,
                wrong_transaction: 1,
                invalid: 3,
                late: 0,
            }
        );
        assert_eq!(probe.result(), None);
        assert_eq!(probe.poll_timeout(), Some(start + ms(500)));

        // The server's address as a dual-stack socket reports it.
        let mapped_v6: SocketAddr = "[::ffff:192.0.2.1]:3478".parse().unwrap();
        probe.handle_input(start + ms(200), mapped_v6, &answer(TID));
        assert_eq!(probe.result().unwrap().unwrap().rtt, ms(200));
    }

    fn error_response(tid: [u8; 12]) -> Vec<u8> {
        use bytecodec::EncodeExt;
        use stun_codec::rfc5389::{Attribute, attributes::ErrorCode, methods::BINDING};
        use stun_codec::{Message, MessageClass, MessageEncoder, TransactionId};
        let mut message = Message::<Attribute>::new(
            MessageClass::ErrorResponse,
            BINDING,
            TransactionId::new(tid),
        );
        message.add_attribute(ErrorCode::new(500, "Server Error".into()).unwrap());
        MessageEncoder::new().encode_into_bytes(message).unwrap()
    }

    #[test]
    fn error_response_for_its_transaction_fails_the_probe() {
        let start = Instant::now();
        let mut probe = StunProbe::new(start, server(), TID, &ProbeConfig::default());
        probe.poll_transmit();
        probe.handle_input(start + ms(10), server(), &error_response([8; 12]));
        assert_eq!(probe.stats().wrong_transaction, 1);
        assert_eq!(probe.result(), None);
        probe.handle_input(start + ms(20), server(), &error_response(TID));
        assert_eq!(
            probe.result(),
            Some(Err(ProbeFailure::ErrorResponse {
                code: 500,
                reason: "Server Error".into()
            }))
        );
    }

    #[test]
    fn an_answer_after_the_deadline_is_late_even_before_the_timeout_is_handled() {
        let start = Instant::now();
        let mut probe = StunProbe::new(start, server(), TID, &ProbeConfig::default());
        probe.poll_transmit();
        probe.handle_input(start + Duration::from_secs(5), server(), &answer(TID));
        assert_eq!(probe.result(), Some(Err(ProbeFailure::Timeout)));
        assert_eq!(probe.stats().late, 1);
    }

    #[test]
    fn absurd_configuration_does_not_panic() {
        let start = Instant::now();
        let config = ProbeConfig {
            initial_rto: Duration::MAX,
            max_transmits: u32::MAX,
            timeout: Duration::MAX,
        };
        let mut probe = StunProbe::new(start, server(), TID, &config);
        assert!(probe.poll_transmit().is_some());
        // Both delays are capped at a year, so the retransmission and
        // the deadline coincide, and the deadline wins.
        let next = probe.poll_timeout().unwrap();
        assert_eq!(next, start + MAX_DELAY);
        probe.handle_timeout(next);
        assert_eq!(probe.result(), Some(Err(ProbeFailure::Timeout)));

        let mut checker = StunChecker::new(CheckerConfig {
            interval: Duration::MAX,
            unhealthy_after: u32::MAX,
        });
        checker.handle_servers(start, names(&["a"]));
        checker.poll_due(start, || Duration::MAX);
        assert_eq!(checker.poll_timeout(), Some(start + MAX_DELAY));
    }

    // The checker.

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    fn no_jitter() -> Duration {
        Duration::ZERO
    }

    fn ok(rtt: u64) -> Result<(SocketAddr, Duration), String> {
        Ok((mapped(), ms(rtt)))
    }

    fn fail() -> Result<(SocketAddr, Duration), String> {
        Err(ProbeFailure::Timeout.to_string())
    }

    fn state(checker: &StunChecker, name: &str) -> ServerStatus {
        checker
            .status()
            .into_iter()
            .find(|server| server.name == name)
            .unwrap()
    }

    #[test]
    fn new_servers_are_due_at_once_then_every_interval() {
        let start = Instant::now();
        let mut checker = StunChecker::new(CheckerConfig::default());
        assert_eq!(checker.poll_timeout(), None);
        checker.handle_servers(start, names(&["a", "b"]));
        assert_eq!(checker.poll_timeout(), Some(start));
        assert_eq!(checker.poll_due(start, no_jitter), names(&["a", "b"]));
        assert!(checker.poll_due(start, no_jitter).is_empty());
        let next = start + Duration::from_secs(60);
        assert_eq!(checker.poll_timeout(), Some(next));
        assert!(checker.poll_due(next - ms(1), no_jitter).is_empty());
        assert_eq!(checker.poll_due(next, no_jitter), names(&["a", "b"]));
        assert_eq!(checker.poll_timeout(), Some(next + Duration::from_secs(60)));
    }

    #[test]
    fn jitter_spreads_servers_apart() {
        let start = Instant::now();
        let mut checker = StunChecker::new(CheckerConfig::default());
        checker.handle_servers(start, names(&["a", "b", "c"]));
        let mut jitters = [ms(3000), ms(1000), ms(2000)].into_iter();
        let due = checker.poll_due(start, || jitters.next().unwrap());
        assert_eq!(due, names(&["a", "b", "c"]));

        let base = start + Duration::from_secs(60);
        let next_checks: Vec<Instant> = checker.status().iter().map(|s| s.next_check).collect();
        assert_eq!(
            next_checks,
            [base + ms(3000), base + ms(1000), base + ms(2000)]
        );
        let mut order = Vec::new();
        while let Some(at) = checker.poll_timeout() {
            if at > base + ms(3000) {
                break;
            }
            order.extend(checker.poll_due(at, no_jitter));
        }
        assert_eq!(order, names(&["b", "c", "a"]));
    }

    #[test]
    fn healthy_after_a_success_unhealthy_after_n_failures_and_back() {
        let start = Instant::now();
        let mut checker = StunChecker::new(CheckerConfig::default());
        checker.handle_servers(start, names(&["a"]));
        assert_eq!(state(&checker, "a").state, ServerState::Unknown);

        let t = checker.handle_probe_result(start, "a", ok(40)).unwrap();
        assert_eq!(
            t,
            Transition {
                from: ServerState::Unknown,
                to: ServerState::Healthy
            }
        );
        assert!(t.changed());

        // Two failures are tolerated, the third is not.
        for (i, expected) in [
            ServerState::Healthy,
            ServerState::Healthy,
            ServerState::Unhealthy,
        ]
        .into_iter()
        .enumerate()
        {
            let now = start + Duration::from_secs(60 * (i as u64 + 1));
            let t = checker.handle_probe_result(now, "a", fail()).unwrap();
            assert_eq!(t.to, expected);
            let status = state(&checker, "a");
            assert_eq!(status.consecutive_failures, i as u32 + 1);
            assert_eq!(status.last_check, Some(now));
            assert_eq!(
                status.last_error.as_deref(),
                Some("no answer before the timeout")
            );
            // The last good RTT stays for the record.
            assert_eq!(status.last_rtt, Some(ms(40)));
        }
        let t = checker.handle_probe_result(start, "a", fail()).unwrap();
        assert!(!t.changed());
        assert_eq!(state(&checker, "a").consecutive_failures, 4);

        let t = checker.handle_probe_result(start, "a", ok(25)).unwrap();
        assert_eq!(
            t,
            Transition {
                from: ServerState::Unhealthy,
                to: ServerState::Healthy
            }
        );
        let status = state(&checker, "a");
        assert_eq!(status.consecutive_failures, 0);
        assert_eq!(status.last_error, None);
        assert_eq!(status.last_rtt, Some(ms(25)));
        assert_eq!(status.last_mapped, Some(mapped()));
    }

    #[test]
    fn an_unchecked_server_that_fails_stays_unknown_until_n_failures() {
        let start = Instant::now();
        let mut checker = StunChecker::new(CheckerConfig {
            unhealthy_after: 2,
            ..CheckerConfig::default()
        });
        checker.handle_servers(start, names(&["a"]));
        let t = checker.handle_probe_result(start, "a", fail()).unwrap();
        assert_eq!(t.to, ServerState::Unknown);
        let t = checker.handle_probe_result(start, "a", fail()).unwrap();
        assert_eq!(t.to, ServerState::Unhealthy);

        // Zero counts as one.
        let mut checker = StunChecker::new(CheckerConfig {
            unhealthy_after: 0,
            ..CheckerConfig::default()
        });
        checker.handle_servers(start, names(&["a"]));
        let t = checker.handle_probe_result(start, "a", fail()).unwrap();
        assert_eq!(t.to, ServerState::Unhealthy);
    }

    #[test]
    fn healthy_by_rtt_lists_healthy_servers_fastest_first() {
        let start = Instant::now();
        let mut checker = StunChecker::new(CheckerConfig {
            unhealthy_after: 1,
            ..CheckerConfig::default()
        });
        checker.handle_servers(start, names(&["slow", "down", "fast", "new", "tie"]));
        checker.handle_probe_result(start, "slow", ok(90)).unwrap();
        checker.handle_probe_result(start, "down", ok(1)).unwrap();
        checker.handle_probe_result(start, "down", fail()).unwrap();
        checker.handle_probe_result(start, "fast", ok(10)).unwrap();
        checker.handle_probe_result(start, "tie", ok(90)).unwrap();
        assert_eq!(
            checker.healthy_by_rtt(),
            [
                ("fast".to_string(), ms(10)),
                ("slow".to_string(), ms(90)),
                ("tie".to_string(), ms(90)),
            ]
        );
    }

    #[test]
    fn replacing_the_list_keeps_the_state_of_servers_still_in_it() {
        let start = Instant::now();
        let mut checker = StunChecker::new(CheckerConfig::default());
        checker.handle_servers(start, names(&["a", "b"]));
        checker.poll_due(start, no_jitter);
        checker.handle_probe_result(start, "a", ok(30)).unwrap();
        checker.handle_probe_result(start, "b", ok(30)).unwrap();

        let later = start + Duration::from_secs(10);
        checker.handle_servers(later, names(&["c", "a", "c"]));
        let status = checker.status();
        assert_eq!(
            status.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["c", "a"]
        );
        assert_eq!(status[0].state, ServerState::Unknown);
        assert_eq!(status[0].next_check, later);
        assert_eq!(status[1].state, ServerState::Healthy);
        assert_eq!(status[1].next_check, start + Duration::from_secs(60));
        assert_eq!(checker.poll_due(later, no_jitter), names(&["c"]));

        assert_eq!(
            checker.handle_probe_result(later, "b", ok(1)),
            Err(CheckerError::UnknownServer("b".into()))
        );
        checker.handle_servers(later, Vec::new());
        assert!(checker.status().is_empty());
        assert_eq!(checker.poll_timeout(), None);
    }

    #[test]
    fn server_state_serializes_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&ServerState::Unhealthy).unwrap(),
            "\"unhealthy\""
        );
    }

    /// The whole loop in memory: the checker picks servers, probes talk to
    /// the responder's core (one of them never answers), results go back.
    #[test]
    fn checker_probes_and_responder_in_memory() {
        let start = Instant::now();
        let us: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
        let up: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let silent: SocketAddr = "[2001:db8::2]:3478".parse().unwrap();
        let addresses = |name: &str| if name == "up" { up } else { silent };
        let mut checker = StunChecker::new(CheckerConfig::default());
        checker.handle_servers(start, names(&["silent", "up"]));

        let mut now = start;
        for round in 0..3u8 {
            let due = checker.poll_due(now, no_jitter);
            assert_eq!(due, names(&["silent", "up"]));
            for name in due {
                let mut probe =
                    StunProbe::new(now, addresses(&name), [round; 12], &ProbeConfig::default());
                let mut t = now;
                while probe.result().is_none() {
                    while let Some(transmit) = probe.poll_transmit() {
                        if transmit.destination == up {
                            let reply = answer_binding_request(&transmit.payload, us).unwrap();
                            probe.handle_input(t + ms(30), up, &reply);
                        }
                    }
                    if let Some(next) = probe.poll_timeout() {
                        t = next;
                        probe.handle_timeout(t);
                    }
                }
                let result = probe
                    .result()
                    .unwrap()
                    .map(|ok| (ok.mapped, ok.rtt))
                    .map_err(|error| error.to_string());
                checker.handle_probe_result(t, &name, result).unwrap();
            }
            now = checker.poll_timeout().unwrap();
        }
        assert_eq!(checker.healthy_by_rtt(), [("up".to_string(), ms(30))]);
        let status = checker.status();
        assert_eq!(status[0].state, ServerState::Unhealthy);
        assert_eq!(status[1].last_mapped, Some(us));
    }
}
