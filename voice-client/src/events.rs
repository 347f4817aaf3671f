//! Live events: one WebSocket per [`Client`] that stays up by itself, and
//! a typed stream of what comes over it.
//!
//! A background task owns the socket. It authenticates every (re)connect
//! with a fresh single-use ticket (`POST /v1/ws/ticket`, which also keeps
//! the access token fresh), remembers the `seq` of the last stored event
//! it saw, and after any drop reconnects with `?since=<seq>`, so the app
//! gets every stored event exactly once and in order. Drops are retried
//! with jittered exponential backoff (100 ms doubling to 5 s by default);
//! only the end of the session (close code 4001, or a refused ticket) or
//! [`Connection::close`] stops it.
//!
//! Apps read [`ClientEvent`]s from an [`EventStream`]; any number of
//! streams can be open, each gets every event (a tokio broadcast channel).
//! A stream that falls more than [`EventsConfig::capacity`] events behind
//! loses the oldest and gets [`ClientEvent::Lagged`] instead: reload state
//! over REST then, as after [`ClientEvent::ResyncRequired`]. The resume
//! cursor belongs to the connection, not to a stream, so a lagging stream
//! does not make the connection replay anything.
//!
//! [`WsSignaling`] carries WebRTC signaling (`call.signal`) over the same
//! socket for [`crate::media`].
//!
//! [`Connection::send_message`] sends chat messages over the socket
//! (`message.send`), several at once, each answered by `message.sent` or
//! an `error` carrying its `ref`; when the socket is down or drops before
//! the answer, it falls back to `POST /v1/messages` with the same
//! `client_id`, so a message is never stored twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voice_core::error::Error as ApiError;
use voice_core::ids::CallId;
use voice_core::model::{Conversation, Message};
use voice_core::wire::{
    Event, PROTOCOL_VERSION, RawJson, Recipient, SendMessageRequest, ServerEvent,
};

use crate::client::{Client, error_chain, lock, with_fresh_client_id};
use crate::error::{ClientError, Result};
use crate::signaling::{Signal, SignalingTransport};

/// The server closes with this after `session.ended`.
const CLOSE_SESSION_ENDED: u16 = 4001;
/// The server closes with this when this device's queue overflowed; the
/// protocol asks to reconnect at once.
const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Signals kept per call that has no subscriber yet.
pub const MAX_BUFFERED_SIGNALS_PER_CALL: usize = 64;
/// Calls whose signals are kept without a subscriber; beyond, the oldest
/// call's are dropped.
pub const MAX_BUFFERED_SIGNAL_CALLS: usize = 32;

/// `message.send`s waiting for their answer on one connection; beyond,
/// [`Connection::send_message_with`] sends over HTTP instead.
pub const MAX_SENDS_IN_FLIGHT: usize = 1024;
/// The largest `message.send` frame sent over the socket: the server's
/// default `ws.max_inbound_bytes`. A larger frame would make the server
/// close the socket (1009) under every send in flight, so such a message
/// goes over HTTP, which answers it as the server sees fit (413 when the
/// body is over `limits.max_message_bytes`).
pub const MAX_SOCKET_SEND_BYTES: usize = 64 * 1024;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How the event connection behaves.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Events each [`EventStream`] may fall behind before it lags.
    pub capacity: usize,
    /// First reconnect delay; it doubles per failed attempt…
    pub backoff_min: Duration,
    /// …up to this. Each delay is jittered down by up to half.
    pub backoff_max: Duration,
    /// Bound on the ticket request and the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Reconnect when nothing (not even a ping) came for this long. The
    /// server pings every 20 s by default.
    pub idle_timeout: Duration,
    /// Messages to the server held while the socket is down.
    pub outgoing_queue: usize,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(90),
            outgoing_queue: 256,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What an [`EventStream`] yields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An event from the server. `ready`, `resync_required` and
    /// `session.ended` come as the variants below instead.
    Server(ServerEvent),
    /// The socket is up and any replay is done: the device is up to date
    /// to `latest_seq`. Comes after every (re)connect.
    Connected { latest_seq: u64 },
    /// The socket dropped (or could not be opened); the next attempt
    /// starts after `delay`.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// Events after the cursor are gone on the server: reload state over
    /// REST. The stream goes on from `latest_seq`.
    ResyncRequired { reason: String, latest_seq: u64 },
    /// The session ended (signed out or revoked): sign in again. Nothing
    /// follows.
    SessionEnded { reason: String },
    /// This stream fell behind and lost `missed` events: reload state
    /// over REST.
    Lagged { missed: u64 },
    /// [`Connection::close`] was called. Nothing follows.
    Closed,
}

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first attempt is under way.
    Connecting,
    /// Up, and past the replay.
    Connected,
    /// Down, trying again.
    Reconnecting,
    /// Over: the session ended.
    SessionEnded,
    /// Over: closed by the app.
    Closed,
}

impl ConnectionState {
    pub fn is_over(self) -> bool {
        matches!(
            self,
            ConnectionState::SessionEnded | ConnectionState::Closed
        )
    }
}

enum Control {
    Reconnect,
    Close(oneshot::Sender<()>),
}

/// What the handles share with the task. When the last handle goes, the
/// control sender goes with it and the task ends.
pub(crate) struct Shared {
    events: broadcast::Sender<ClientEvent>,
    control: mpsc::UnboundedSender<Control>,
    outgoing: mpsc::Sender<Outbound>,
    state: watch::Receiver<ConnectionState>,
    cursor: Arc<StdMutex<Option<u64>>>,
    router: Arc<StdMutex<SignalRouter>>,
    sends: Arc<StdMutex<Sends>>,
    /// For the HTTP fallback of [`Connection::send_message_with`]. The
    /// client only holds a weak reference back, so this is no cycle.
    client: Client,
}

/// A frame for the socket. A `message.send` names its `ref`, so the task
/// can skip it when nobody waits for its answer any more.
struct Outbound {
    text: String,
    send_ref: Option<String>,
}

impl Outbound {
    fn plain(text: String) -> Self {
        Self {
            text,
            send_ref: None,
        }
    }
}

/// The `message.send`s waiting for their answer, by `ref`: the handles add
/// and remove them, the task answers them. At most
/// [`MAX_SENDS_IN_FLIGHT`]; an entry leaves when its answer comes, when
/// its caller stops waiting (see [`PendingSend`]), or when its socket ends.
#[derive(Default)]
struct Sends {
    /// A socket is up and past `ready`: only then are sends taken. The
    /// task clears it and fails every entry under one lock when the
    /// socket ends, so no entry outlives its socket unanswered.
    open: bool,
    waiting: HashMap<String, Waiter>,
}

struct Waiter {
    answer: oneshot::Sender<SendAnswer>,
    /// The task took the frame off the queue to write it: from then on
    /// the server may have it.
    written: bool,
}

enum SendAnswer {
    Sent(Message),
    Refused(ApiError),
    /// The socket ended before the answer.
    Dropped {
        written: bool,
    },
}

impl Sends {
    /// Notes that the frame for `reference` is about to be written; false
    /// when nobody waits for it any more, and then it must not be.
    fn start_writing(&mut self, reference: &str) -> bool {
        match self.waiting.get_mut(reference) {
            Some(waiter) => {
                waiter.written = true;
                true
            }
            None => false,
        }
    }

    /// Hands `answer` to whoever waits for `reference`; false if nobody
    /// does.
    fn answer(&mut self, reference: &str, answer: impl FnOnce() -> SendAnswer) -> bool {
        match self.waiting.remove(reference) {
            Some(waiter) => {
                let _ = waiter.answer.send(answer());
                true
            }
            None => false,
        }
    }

    /// The socket ended: every send still waiting is answered with that.
    fn socket_ended(&mut self) {
        self.open = false;
        for (_, waiter) in self.waiting.drain() {
            let _ = waiter.answer.send(SendAnswer::Dropped {
                written: waiter.written,
            });
        }
    }
}

/// A registered send; dropping it (the caller's future dropped, or done)
/// removes the entry if it is still there.
struct PendingSend<'a> {
    sends: &'a StdMutex<Sends>,
    reference: String,
}

impl PendingSend<'_> {
    /// Stops waiting; `Some(written)` if the entry was still there (no
    /// answer came), and its frame will not be written from now on.
    fn withdraw(&self) -> Option<bool> {
        lock(self.sends)
            .waiting
            .remove(&self.reference)
            .map(|waiter| waiter.written)
    }
}

impl Drop for PendingSend<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// How a send over the socket went.
enum SocketSend {
    /// Answered: the message, or the server's refusal.
    Answered(Result<Message>),
    /// Nothing reached the server: HTTP may send it, with or without a
    /// `client_id`.
    NotSent,
    /// The frame may have reached the server, but no answer came.
    Unknown(String),
}

/// A handle on a client's event connection. Clones share it; it runs
/// until [`Connection::close`], the end of the session, or until every
/// handle, stream and [`WsSignaling`] on it is dropped.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state())
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

/// One consumer's view of the events. See the module docs for lag.
pub struct EventStream {
    receiver: broadcast::Receiver<ClientEvent>,
    connection: Connection,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("connection", &self.connection)
            .field("done", &self.done)
            .finish()
    }
}

impl Client {
    /// A new stream of this client's events, opening the connection if
    /// there is none. A stream sees what happens after it was made; a
    /// first connection without a cursor starts at "now" (its
    /// [`ClientEvent::Connected`] carries the cursor), so wait for that
    /// before relying on live events.
    pub async fn events(&self) -> Result<EventStream> {
        let (connection, first) = self.connect(EventsConfig::default())?;
        Ok(match first {
            Some(receiver) => EventStream {
                receiver,
                connection,
                done: false,
            },
            None => connection.subscribe(),
        })
    }

    /// The event connection, opened with default settings if there is
    /// none.
    pub async fn connection(&self) -> Result<Connection> {
        self.connect(EventsConfig::default())
            .map(|(connection, _)| connection)
    }

    /// The event connection, opened with `config` if there is none (an
    /// open one keeps its settings).
    pub async fn connect_events(&self, config: EventsConfig) -> Result<Connection> {
        self.connect(config).map(|(connection, _)| connection)
    }

    /// WebRTC signaling over the event connection.
    pub async fn signaling(&self) -> Result<WsSignaling> {
        Ok(self.connection().await?.signaling())
    }

    /// The `seq` of the last stored event received, shared by all of this
    /// client's connections: persist it to resume after a restart.
    pub fn event_cursor(&self) -> Option<u64> {
        *lock(&self.inner.event_cursor)
    }

    /// Sets where the next connection (or reconnect) resumes from; `None`
    /// starts at "now", without replay.
    pub fn set_event_cursor(&self, seq: Option<u64>) {
        *lock(&self.inner.event_cursor) = seq;
    }

    /// Returns the live connection, or starts one (with a receiver made
    /// before the task runs, so the first stream misses nothing).
    fn connect(
        &self,
        config: EventsConfig,
    ) -> Result<(Connection, Option<broadcast::Receiver<ClientEvent>>)> {
        if !self.is_signed_in() {
            return Err(ClientError::NotSignedIn(
                "sign in before opening the event connection".into(),
            ));
        }
        let mut slot = lock(&self.inner.events);
        if let Some(shared) = slot.upgrade()
            && !shared.state.borrow().is_over()
            && !shared.control.is_closed()
        {
            return Ok((Connection { shared }, None));
        }
        let (shared, receiver) = start(self.clone(), config);
        *slot = Arc::downgrade(&shared);
        Ok((Connection { shared }, Some(receiver)))
    }
}

fn start(client: Client, config: EventsConfig) -> (Arc<Shared>, broadcast::Receiver<ClientEvent>) {
    let (events, receiver) = broadcast::channel(config.capacity.max(1));
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (outgoing_tx, outgoing_rx) = mpsc::channel(config.outgoing_queue.max(1));
    let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
    let cursor = client.inner.event_cursor.clone();
    let router = Arc::new(StdMutex::new(SignalRouter::default()));
    let sends = Arc::new(StdMutex::new(Sends::default()));
    let shared = Arc::new(Shared {
        events: events.clone(),
        control: control_tx,
        outgoing: outgoing_tx,
        state: state_rx,
        cursor: cursor.clone(),
        router: router.clone(),
        sends: sends.clone(),
        client: client.clone(),
    });
    let task = Task {
        client,
        config,
        events,
        control: control_rx,
        outgoing: outgoing_rx,
        state: state_tx,
        cursor,
        router,
        sends,
    };
    tokio::spawn(task.run());
    (shared, receiver)
}

impl Connection {
    /// A new stream of the events from now on.
    pub fn subscribe(&self) -> EventStream {
        EventStream {
            receiver: self.shared.events.subscribe(),
            connection: self.clone(),
            done: false,
        }
    }

    pub fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    /// The `seq` of the last stored event received (the resume cursor).
    pub fn last_seq(&self) -> Option<u64> {
        *lock(&self.shared.cursor)
    }

    /// Waits until the connection is up and past its replay. Fails once
    /// the connection is over.
    pub async fn wait_connected(&self) -> Result<()> {
        let mut state = self.shared.state.clone();
        loop {
            let now = *state.borrow_and_update();
            match now {
                ConnectionState::Connected => return Ok(()),
                ConnectionState::SessionEnded => {
                    return Err(ClientError::NotSignedIn("the session ended".into()));
                }
                ConnectionState::Closed => {
                    return Err(ClientError::SignalingClosed(
                        "the event connection was closed".into(),
                    ));
                }
                ConnectionState::Connecting | ConnectionState::Reconnecting => {}
            }
            if state.changed().await.is_err() {
                return Err(ClientError::SignalingClosed(
                    "the event connection stopped".into(),
                ));
            }
        }
    }

    /// Drops the socket at once, without a close handshake, as a network
    /// failure would; the connection then resumes with `since` as after
    /// any drop. For tests and for apps that know the network changed.
    pub fn force_reconnect(&self) {
        let _ = self.shared.control.send(Control::Reconnect);
    }

    /// Closes the socket (with a close frame) and stops reconnecting.
    /// Streams get [`ClientEvent::Closed`]. A later [`Client::events`]
    /// opens a new connection that resumes from the cursor.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.shared.control.send(Control::Close(ack)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
    }

    /// Sends `typing` for `conversation`. The server relays it to the
    /// other participants; send at most one every few seconds.
    pub async fn send_typing(&self, conversation: Conversation) -> Result<()> {
        self.send_outgoing(&Outgoing::Typing { conversation })
    }

    /// Sends one `call.signal` to the other device in `call`.
    pub async fn send_signal(&self, call: CallId, signal: &Signal) -> Result<()> {
        self.send_outgoing(&Outgoing::CallSignal {
            call_id: call,
            payload: signal,
        })
    }

    /// Sends a client message as given (one JSON object), for message
    /// types this SDK does not know yet. The server answers bad ones with
    /// an `error` event.
    pub async fn send_raw(&self, text: String) -> Result<()> {
        self.enqueue(text)
    }

    /// Sends a message over this connection with a fresh `client_id` and
    /// returns it as stored: the socket counterpart of
    /// [`Client::send_message`], with the same checks and errors but no
    /// HTTP request per message. See [`Connection::send_message_with`]
    /// for pipelining and for what happens when the socket is down.
    pub async fn send_message(&self, to: Recipient, body: impl Into<String>) -> Result<Message> {
        self.send_message_with(&with_fresh_client_id(to, body.into()))
            .await
    }

    /// Sends `request` as a `message.send` with a fresh `ref`, and returns
    /// the stored message once its `message.sent` comes (the server sends
    /// it after the commit). The socket counterpart of
    /// [`Client::send_message_with`].
    ///
    /// - **Pipelined.** Any number of calls may wait at once (up to
    ///   [`MAX_SENDS_IN_FLIGHT`]): each frame carries its own `ref`, and
    ///   each answer goes to the call with that `ref`. The server handles
    ///   one device's sends in the order they arrive.
    /// - **Refusals** (an `error` with this send's `ref`) become the same
    ///   [`ClientError::Api`] that `POST /v1/messages` gives for that
    ///   code, with the code's HTTP status.
    /// - **Not over the socket.** While the socket is not up and past its
    ///   replay (connecting, reconnecting, closed, session over), when its
    ///   queue or the in-flight table is full, or when the frame would be
    ///   over [`MAX_SOCKET_SEND_BYTES`], the request goes over HTTP
    ///   ([`Client::send_message_with`]). Nothing reached the server over
    ///   the socket then, so this is safe with or without a `client_id`.
    /// - **Dropped before the answer.** When the socket ends after the
    ///   frame may have reached the server (or no answer comes within
    ///   [`ClientOptions::request_timeout`](crate::ClientOptions::request_timeout)):
    ///   with a `client_id`, the request goes again over HTTP with the
    ///   same `client_id`, and the server's idempotency returns the
    ///   message if the first attempt stored it, instead of a second
    ///   copy. Without one, nothing is retried: the call fails with
    ///   [`ClientError::Unreachable`] and the outcome is unknown, as for
    ///   an HTTP send without `client_id` that failed in transit.
    /// - **Not events.** A `message.sent` or `error` that answers a call of
    ///   this method goes to that call only, not to the [`EventStream`]s:
    ///   it answers a request, and every stream still gets the stored
    ///   `message.created`. Answers nobody waits for any more (a caller
    ///   that was dropped, or the refs of the app's own
    ///   [`Connection::send_raw`]) reach the streams as
    ///   [`ClientEvent::Server`], as any event does.
    ///
    /// Dropping the future withdraws the send: a frame not written yet is
    /// not written at all.
    pub async fn send_message_with(&self, request: &SendMessageRequest) -> Result<Message> {
        let client = &self.shared.client;
        match self.send_over_socket(request).await {
            SocketSend::Answered(result) => result,
            SocketSend::NotSent => client.send_message_with(request).await,
            SocketSend::Unknown(reason) if request.client_id.is_some() => {
                tracing::debug!(%reason, "no answer over the socket; sending again over HTTP with the same client_id");
                client.send_message_with(request).await
            }
            SocketSend::Unknown(reason) => Err(ClientError::Unreachable {
                url: format!("{}/v1/ws", client.server_url()),
                reason: format!(
                    "{reason}; the message may or may not have been stored \
                     (send with a client_id to retry safely)"
                ),
            }),
        }
    }

    /// One attempt over the socket: registers a fresh `ref`, queues the
    /// frame and waits for its answer.
    async fn send_over_socket(&self, request: &SendMessageRequest) -> SocketSend {
        let reference = uuid::Uuid::now_v7().to_string();
        let text = match serde_json::to_string(&Outgoing::SendMessage {
            reference: &reference,
            to: request.to,
            body: &request.body,
            client_id: request.client_id.as_deref(),
        }) {
            Ok(text) if text.len() <= MAX_SOCKET_SEND_BYTES => text,
            _ => return SocketSend::NotSent,
        };
        let (answer, mut answered) = oneshot::channel();
        {
            let mut sends = lock(&self.shared.sends);
            if !sends.open || sends.waiting.len() >= MAX_SENDS_IN_FLIGHT {
                return SocketSend::NotSent;
            }
            sends.waiting.insert(
                reference.clone(),
                Waiter {
                    answer,
                    written: false,
                },
            );
        }
        let pending = PendingSend {
            sends: &self.shared.sends,
            reference: reference.clone(),
        };
        if self
            .shared
            .outgoing
            .try_send(Outbound {
                text,
                send_ref: Some(reference),
            })
            .is_err()
        {
            // Not queued: `pending` goes, and with it the entry.
            return SocketSend::NotSent;
        }
        let timeout = self.shared.client.request_timeout();
        let answer = match tokio::time::timeout(timeout, &mut answered).await {
            Ok(answer) => answer.ok(),
            Err(_) => match pending.withdraw() {
                Some(false) => return SocketSend::NotSent,
                Some(true) => {
                    return SocketSend::Unknown(format!(
                        "no answer over the event connection within {} s",
                        timeout.as_secs()
                    ));
                }
                // Answered just as the wait ran out.
                None => answered.try_recv().ok(),
            },
        };
        match answer {
            Some(SendAnswer::Sent(message)) => SocketSend::Answered(Ok(message)),
            Some(SendAnswer::Refused(error)) => {
                // The same error the HTTP path gives: the code's status.
                SocketSend::Answered(Err(ClientError::Api {
                    status: error.code.http_status(),
                    error,
                }))
            }
            Some(SendAnswer::Dropped { written: false }) => SocketSend::NotSent,
            Some(SendAnswer::Dropped { written: true }) => SocketSend::Unknown(
                "the event connection dropped before the server answered".into(),
            ),
            // The task went without answering (it cannot, while this handle
            // keeps it alive, short of a panic); the frame may be out.
            None => SocketSend::Unknown(
                "the event connection stopped before the server answered".into(),
            ),
        }
    }

    /// Signaling for calls over this connection.
    pub fn signaling(&self) -> WsSignaling {
        WsSignaling {
            connection: self.clone(),
        }
    }

    fn send_outgoing(&self, message: &Outgoing<'_>) -> Result<()> {
        let text = serde_json::to_string(message)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the message: {e}")))?;
        self.enqueue(text)
    }

    /// Queues a message for the socket. Accepted means queued: while the
    /// socket is down messages wait (up to [`EventsConfig::outgoing_queue`])
    /// and go out after the reconnect; one being written at the moment the
    /// socket drops is lost (the server keeps no signals either).
    fn enqueue(&self, text: String) -> Result<()> {
        if self.state().is_over() {
            return Err(ClientError::SignalingClosed(
                "the event connection is over".into(),
            ));
        }
        self.shared
            .outgoing
            .try_send(Outbound::plain(text))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => ClientError::SignalingClosed(
                    "too many messages waiting for the event connection".into(),
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    ClientError::SignalingClosed("the event connection stopped".into())
                }
            })
    }
}

impl EventStream {
    /// The next event; `None` once the connection is over (after
    /// [`ClientEvent::SessionEnded`] or [`ClientEvent::Closed`]).
    pub async fn next(&mut self) -> Option<ClientEvent> {
        if self.done {
            return None;
        }
        if self.connection.state().is_over() {
            // The terminal event may predate this stream: hand out what
            // is queued, then end instead of waiting forever.
            return match self.receiver.try_recv() {
                Ok(event) => Some(self.note(event)),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    Some(ClientEvent::Lagged { missed })
                }
                Err(_) => {
                    self.done = true;
                    None
                }
            };
        }
        match self.receiver.recv().await {
            Ok(event) => Some(self.note(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(ClientEvent::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.done = true;
                None
            }
        }
    }

    fn note(&mut self, event: ClientEvent) -> ClientEvent {
        if matches!(
            event,
            ClientEvent::SessionEnded { .. } | ClientEvent::Closed
        ) {
            self.done = true;
        }
        event
    }

    /// The connection this stream reads from.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// The client messages of the protocol (section 3.5).
#[derive(Serialize)]
#[serde(tag = "type")]
enum Outgoing<'a> {
    #[serde(rename = "typing")]
    Typing { conversation: Conversation },
    #[serde(rename = "call.signal")]
    CallSignal {
        call_id: CallId,
        payload: &'a Signal,
    },
    #[serde(rename = "message.send")]
    SendMessage {
        #[serde(rename = "ref")]
        reference: &'a str,
        to: Recipient,
        body: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
    },
}

/// How one connection attempt or socket ended.
enum End {
    /// For good: closed, session over, or nobody holds a handle.
    Stop,
    /// Connect again.
    Retry {
        reason: String,
        at_once: bool,
        /// The socket got as far as `ready`, so the backoff starts over.
        was_ready: bool,
    },
}

/// What one text message meant for the connection.
enum Handled {
    Continue,
    Ready,
    SessionEnded,
}

struct Task {
    client: Client,
    config: EventsConfig,
    events: broadcast::Sender<ClientEvent>,
    control: mpsc::UnboundedReceiver<Control>,
    outgoing: mpsc::Receiver<Outbound>,
    state: watch::Sender<ConnectionState>,
    cursor: Arc<StdMutex<Option<u64>>>,
    router: Arc<StdMutex<SignalRouter>>,
    sends: Arc<StdMutex<Sends>>,
}

impl Task {
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                tokio::select! {
                    _ = &mut sleep => {}
                    control = self.control.recv() => match control {
                        None => return,
                        Some(Control::Close(ack)) => {
                            self.finish(ConnectionState::Closed, ClientEvent::Closed);
                            let _ = ack.send(());
                            return;
                        }
                        Some(Control::Reconnect) => {}
                    },
                }
            }
            let opened = tokio::select! {
                opened = open(&self.client, &self.config, *lock(&self.cursor)) => opened,
                control = self.control.recv() => match control {
                    None => return,
                    Some(Control::Close(ack)) => {
                        self.finish(ConnectionState::Closed, ClientEvent::Closed);
                        let _ = ack.send(());
                        return;
                    }
                    Some(Control::Reconnect) => Err(Opening::Retry("reconnect requested".into())),
                },
            };
            let end = match opened {
                Ok(socket) => {
                    let end = self.serve(socket).await;
                    // Whatever was not answered on it never will be.
                    lock(&self.sends).socket_ended();
                    end
                }
                Err(Opening::SessionEnded(reason)) => {
                    self.end_session(reason);
                    End::Stop
                }
                Err(Opening::Retry(reason)) => End::Retry {
                    reason,
                    at_once: false,
                    was_ready: false,
                },
            };
            match end {
                End::Stop => return,
                End::Retry {
                    reason,
                    at_once,
                    was_ready,
                } => {
                    if was_ready {
                        attempt = 0;
                    }
                    attempt = attempt.saturating_add(1);
                    delay = if at_once {
                        Duration::ZERO
                    } else {
                        backoff(&self.config, attempt)
                    };
                    tracing::debug!(attempt, ?delay, %reason, "event connection down; reconnecting");
                    self.state.send_replace(ConnectionState::Reconnecting);
                    self.emit(ClientEvent::Reconnecting {
                        attempt,
                        delay,
                        reason,
                    });
                }
            }
        }
    }

    /// Relays one socket until it ends.
    async fn serve(&mut self, socket: Socket) -> End {
        let (mut sink, mut stream) = socket.split();
        let mut was_ready = false;
        let idle_timeout = self.config.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                control = self.control.recv() => match control {
                    None => {
                        close_politely(&mut sink).await;
                        return End::Stop;
                    }
                    Some(Control::Close(ack)) => {
                        close_politely(&mut sink).await;
                        self.finish(ConnectionState::Closed, ClientEvent::Closed);
                        let _ = ack.send(());
                        return End::Stop;
                    }
                    Some(Control::Reconnect) => {
                        return End::Retry { reason: "reconnect requested".into(), at_once: true, was_ready };
                    }
                },
                outgoing = self.outgoing.recv() => match outgoing {
                    None => {
                        close_politely(&mut sink).await;
                        return End::Stop;
                    }
                    Some(Outbound { text, send_ref }) => {
                        // A send nobody waits for any more is not written:
                        // its caller was told it did not go out.
                        let wanted = send_ref
                            .as_deref()
                            .is_none_or(|reference| lock(&self.sends).start_writing(reference));
                        if wanted && let Err(error) = sink.send(WsMessage::Text(text.into())).await {
                            return End::Retry { reason: format!("sending failed: {error}"), at_once: false, was_ready };
                        }
                    }
                },
                incoming = stream.next() => {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    match incoming {
                        None => {
                            return End::Retry { reason: "the connection ended".into(), at_once: false, was_ready };
                        }
                        Some(Err(error)) => {
                            return End::Retry { reason: format!("connection lost: {}", error_chain(&error)), at_once: false, was_ready };
                        }
                        Some(Ok(WsMessage::Text(text))) => match self.handle_text(text.as_str()) {
                            Handled::Continue => {}
                            Handled::Ready => was_ready = true,
                            Handled::SessionEnded => return End::Stop,
                        },
                        Some(Ok(WsMessage::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|frame| (u16::from(frame.code), frame.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            if code == CLOSE_SESSION_ENDED {
                                self.end_session(if reason.is_empty() { "session ended".into() } else { reason });
                                return End::Stop;
                            }
                            return End::Retry {
                                reason: format!("closed by the server ({code} {reason})"),
                                at_once: code == CLOSE_SLOW_CONSUMER,
                                was_ready,
                            };
                        }
                        // Pings are answered by tungstenite itself.
                        Some(Ok(_)) => {}
                    }
                }
                _ = &mut idle => {
                    return End::Retry {
                        reason: format!("nothing heard from the server for {} s", idle_timeout.as_secs()),
                        at_once: false,
                        was_ready,
                    };
                }
            }
        }
    }

    fn handle_text(&self, text: &str) -> Handled {
        let event = match ServerEvent::decode(text) {
            Ok(event) => event,
            Err(error) => {
                self.skip_unreadable(text, &error.message);
                return Handled::Continue;
            }
        };
        if let Some(seq) = event.seq {
            let mut cursor = lock(&self.cursor);
            if cursor.is_some_and(|last| seq <= last) {
                // Already handed out: a replay never repeats an event.
                return Handled::Continue;
            }
            *cursor = Some(seq);
        }
        match &event.event {
            Event::Ready { latest_seq } => {
                *lock(&self.cursor) = Some(*latest_seq);
                lock(&self.sends).open = true;
                self.state.send_replace(ConnectionState::Connected);
                self.emit(ClientEvent::Connected {
                    latest_seq: *latest_seq,
                });
                Handled::Ready
            }
            Event::ResyncRequired { reason, latest_seq } => {
                *lock(&self.cursor) = Some(*latest_seq);
                self.emit(ClientEvent::ResyncRequired {
                    reason: reason.clone(),
                    latest_seq: *latest_seq,
                });
                Handled::Continue
            }
            Event::SessionEnded { reason } => {
                self.end_session(reason.clone());
                Handled::SessionEnded
            }
            Event::CallSignal {
                call_id, payload, ..
            } => {
                lock(&self.router).deliver(*call_id, payload);
                self.emit(ClientEvent::Server(event));
                Handled::Continue
            }
            // Answers to `Connection::send_message_with` go to their caller
            // only; see there.
            Event::MessageSent { reference, message } => {
                let answered =
                    lock(&self.sends).answer(reference, || SendAnswer::Sent(message.clone()));
                if !answered {
                    self.emit(ClientEvent::Server(event));
                }
                Handled::Continue
            }
            Event::Error {
                error,
                reference: Some(reference),
            } => {
                let answered =
                    lock(&self.sends).answer(reference, || SendAnswer::Refused(error.clone()));
                if !answered {
                    self.emit(ClientEvent::Server(event));
                }
                Handled::Continue
            }
            _ => {
                self.emit(ClientEvent::Server(event));
                Handled::Continue
            }
        }
    }

    /// An event this SDK cannot read (a newer type or version): skipped,
    /// but a stored one still moves the cursor, as the protocol asks, so
    /// it is not replayed forever.
    fn skip_unreadable(&self, text: &str, error: &str) {
        let envelope: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let field = |name: &str| {
            envelope
                .as_ref()
                .and_then(|value| value.get(name))
                .and_then(serde_json::Value::as_u64)
        };
        if let Some(version) = field("v")
            && version > u64::from(PROTOCOL_VERSION)
        {
            tracing::warn!(
                version,
                "the server speaks a newer event protocol; upgrade this app"
            );
        }
        tracing::debug!(%error, "skipped an event this SDK does not understand");
        if let Some(seq) = field("seq") {
            let mut cursor = lock(&self.cursor);
            if cursor.is_none_or(|last| seq > last) {
                *cursor = Some(seq);
            }
        }
    }

    fn emit(&self, event: ClientEvent) {
        // No stream listening is fine: the cursor still moves.
        let _ = self.events.send(event);
    }

    /// Sets the state before telling the streams, so a stream made in
    /// between sees the end (see [`EventStream::next`]).
    fn finish(&self, state: ConnectionState, event: ClientEvent) {
        self.state.send_replace(state);
        self.emit(event);
    }

    fn end_session(&self, reason: String) {
        if *self.state.borrow() != ConnectionState::SessionEnded {
            self.finish(
                ConnectionState::SessionEnded,
                ClientEvent::SessionEnded { reason },
            );
        }
    }
}

/// Why a connection attempt failed.
enum Opening {
    SessionEnded(String),
    Retry(String),
}

/// Gets a ticket and opens the socket, resuming after `since`.
async fn open(
    client: &Client,
    config: &EventsConfig,
    since: Option<u64>,
) -> std::result::Result<Socket, Opening> {
    let ticket = match tokio::time::timeout(config.connect_timeout, client.ws_ticket()).await {
        Err(_) => return Err(Opening::Retry("timed out asking for a ticket".into())),
        Ok(Ok(ticket)) => ticket,
        Ok(Err(ClientError::NotSignedIn(reason))) => return Err(Opening::SessionEnded(reason)),
        Ok(Err(ClientError::Api {
            status: 401, error, ..
        })) => return Err(Opening::SessionEnded(error.message)),
        Ok(Err(error)) => return Err(Opening::Retry(error.to_string())),
    };
    let url = ws_url(client.server_url(), &ticket.ticket, since).map_err(Opening::Retry)?;
    open_socket(&url, config).await.map_err(Opening::Retry)
}

/// `ws(s)://…/v1/ws?ticket=…&since=…` for a server at `base`.
fn ws_url(base: &str, ticket: &str, since: Option<u64>) -> std::result::Result<String, String> {
    let mut url = url::Url::parse(&format!("{base}/v1/ws"))
        .map_err(|e| format!("invalid server URL {base:?}: {e}"))?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => return Err(format!("cannot open a WebSocket to a {other}: server")),
    };
    url.set_scheme(scheme)
        .map_err(|()| format!("cannot make a WebSocket URL from {base:?}"))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("ticket", ticket);
        if let Some(since) = since {
            query.append_pair("since", &since.to_string());
        }
    }
    Ok(url.into())
}

/// Opens the WebSocket: plain for `ws://`, rustls with the webpki roots
/// for `wss://` (the same ring-backed rustls reqwest uses, so there is one
/// crypto provider in the process).
async fn open_socket(url: &str, config: &EventsConfig) -> std::result::Result<Socket, String> {
    let request = url
        .into_client_request()
        .map_err(|e| format!("invalid WebSocket URL: {e}"))?;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    // No Nagle: sends and call signals are small frames that should go at
    // once, not wait for the acknowledgement of the one before.
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Err(_) => Err("timed out opening the WebSocket".into()),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(format!(
                "the server refused the WebSocket ({}): {}",
                response.status(),
                body.chars().take(200).collect::<String>()
            ))
        }
        Ok(Err(error)) => Err(format!(
            "cannot open the WebSocket: {}",
            error_chain(&error)
        )),
    }
}

/// Sends a close frame, bounded: a dead peer must not hold the task.
async fn close_politely<S>(sink: &mut S)
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(WsMessage::Close(Some(frame))),
    )
    .await;
}

/// The delay before reconnect attempt `attempt` (1-based): doubling from
/// `backoff_min` up to `backoff_max`, jittered down by up to half so that
/// devices that lost the server together do not return together.
fn backoff(config: &EventsConfig, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    let ceiling = config
        .backoff_min
        .saturating_mul(1 << doublings)
        .min(config.backoff_max);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let floor_ms = ceiling_ms / 2;
    Duration::from_millis(rand::thread_rng().gen_range(floor_ms..=ceiling_ms))
}

/// Routes incoming `call.signal`s to the subscriber of their call, and
/// keeps those for calls nobody subscribed to yet (the offer often comes
/// before the app has set up the call), within bounds.
#[derive(Default)]
struct SignalRouter {
    subscribers: HashMap<CallId, mpsc::UnboundedSender<Signal>>,
    /// Oldest call first.
    buffered: VecDeque<(CallId, Vec<Signal>)>,
}

impl SignalRouter {
    fn deliver(&mut self, call: CallId, payload: &RawJson) {
        match serde_json::from_str::<Signal>(payload.get()) {
            Ok(signal) => self.route(call, signal),
            Err(error) => {
                tracing::warn!(%call, %error, "skipped a call.signal payload that is not a signal");
            }
        }
    }

    fn route(&mut self, call: CallId, signal: Signal) {
        let signal = match self.subscribers.get(&call) {
            Some(subscriber) => match subscriber.send(signal) {
                Ok(()) => return,
                Err(mpsc::error::SendError(signal)) => {
                    // The subscriber went away without unsubscribing.
                    self.subscribers.remove(&call);
                    signal
                }
            },
            None => signal,
        };
        self.buffer(call, signal);
    }

    fn buffer(&mut self, call: CallId, signal: Signal) {
        if let Some((_, queue)) = self.buffered.iter_mut().find(|(id, _)| *id == call) {
            if queue.len() >= MAX_BUFFERED_SIGNALS_PER_CALL {
                // The first signals (the offer) matter most: drop the new one.
                tracing::warn!(%call, "dropped a signal: too many waiting for this call");
            } else {
                queue.push(signal);
            }
            return;
        }
        if self.buffered.len() >= MAX_BUFFERED_SIGNAL_CALLS
            && let Some((dropped, _)) = self.buffered.pop_front()
        {
            tracing::warn!(call = %dropped, "dropped the waiting signals of the oldest call");
        }
        self.buffered.push_back((call, vec![signal]));
    }

    fn subscribe(&mut self, call: CallId) -> mpsc::UnboundedReceiver<Signal> {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Some(index) = self.buffered.iter().position(|(id, _)| *id == call)
            && let Some((_, waiting)) = self.buffered.remove(index)
        {
            for signal in waiting {
                let _ = sender.send(signal);
            }
        }
        self.subscribers.insert(call, sender);
        receiver
    }

    fn unsubscribe(&mut self, call: CallId) {
        self.subscribers.remove(&call);
        self.buffered.retain(|(id, _)| *id != call);
    }
}

/// [`SignalingTransport`] over a client's event connection: `send` writes
/// a `call.signal` message, and incoming `call.signal` events go to the
/// subscriber of their call. Payloads that are not a [`Signal`] are logged
/// and skipped.
#[derive(Clone, Debug)]
pub struct WsSignaling {
    connection: Connection,
}

impl WsSignaling {
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

#[async_trait]
impl SignalingTransport for WsSignaling {
    async fn send(&self, call: CallId, signal: Signal) -> Result<()> {
        self.connection.send_signal(call, &signal).await
    }

    fn subscribe(&self, call: CallId) -> mpsc::UnboundedReceiver<Signal> {
        lock(&self.connection.shared.router).subscribe(call)
    }

    fn unsubscribe(&self, call: CallId) {
        lock(&self.connection.shared.router).unsubscribe(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::{IceCandidate, SdpKind, SessionDescription};

    fn candidate(n: usize) -> Signal {
        Signal::Candidate(Some(IceCandidate {
            candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        }))
    }

    fn raw(signal: &Signal) -> RawJson {
        RawJson::from_text(&serde_json::to_string(signal).unwrap()).unwrap()
    }

    #[test]
    fn signals_wait_for_their_subscriber_then_flow_directly() {
        let mut router = SignalRouter::default();
        let call = CallId::new();
        let offer = Signal::Sdp(SessionDescription {
            kind: SdpKind::Offer,
            sdp: "v=0\r\n".into(),
        });
        router.deliver(call, &raw(&offer));
        router.deliver(call, &raw(&candidate(1)));
        let mut receiver = router.subscribe(call);
        assert_eq!(receiver.try_recv().unwrap(), offer);
        assert_eq!(receiver.try_recv().unwrap(), candidate(1));
        router.deliver(call, &raw(&Signal::Candidate(None)));
        assert_eq!(receiver.try_recv().unwrap(), Signal::Candidate(None));
        assert!(router.buffered.is_empty());

        router.unsubscribe(call);
        router.deliver(call, &raw(&candidate(2)));
        let mut again = router.subscribe(call);
        assert_eq!(again.try_recv().unwrap(), candidate(2));
    }

    #[test]
    fn malformed_payloads_are_skipped() {
        let mut router = SignalRouter::default();
        let call = CallId::new();
        let mut receiver = router.subscribe(call);
        for text in [
            r#"{"sdp":5}"#,
            r#"{"candidate":{"nope":1}}"#,
            "[]",
            r#"{"x":{}}"#,
        ] {
            router.deliver(call, &RawJson::from_text(text).unwrap());
        }
        router.deliver(call, &raw(&candidate(7)));
        assert_eq!(receiver.try_recv().unwrap(), candidate(7));
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn buffers_are_bounded_per_call_and_in_calls() {
        let mut router = SignalRouter::default();
        let first = CallId::new();
        for n in 0..MAX_BUFFERED_SIGNALS_PER_CALL + 10 {
            router.route(first, candidate(n));
        }
        let mut receiver = router.subscribe(first);
        let mut got = Vec::new();
        while let Ok(signal) = receiver.try_recv() {
            got.push(signal);
        }
        assert_eq!(got.len(), MAX_BUFFERED_SIGNALS_PER_CALL);
        assert_eq!(got[0], candidate(0), "the oldest signals are kept");

        let calls: Vec<CallId> = (0..MAX_BUFFERED_SIGNAL_CALLS + 1)
            .map(|_| CallId::new())
            .collect();
        for (n, call) in calls.iter().enumerate() {
            router.route(*call, candidate(n));
        }
        assert_eq!(router.buffered.len(), MAX_BUFFERED_SIGNAL_CALLS);
        assert!(
            router.subscribe(calls[0]).try_recv().is_err(),
            "the oldest call was dropped"
        );
        let last = *calls.last().unwrap();
        assert_eq!(
            router.subscribe(last).try_recv().unwrap(),
            candidate(MAX_BUFFERED_SIGNAL_CALLS)
        );
    }

    #[test]
    fn a_dropped_subscriber_does_not_lose_signals() {
        let mut router = SignalRouter::default();
        let call = CallId::new();
        drop(router.subscribe(call));
        router.route(call, candidate(1));
        assert_eq!(router.subscribe(call).try_recv().unwrap(), candidate(1));
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_with_jitter() {
        let config = EventsConfig::default();
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first));
            let fourth = backoff(&config, 4);
            assert!((Duration::from_millis(400)..=Duration::from_millis(800)).contains(&fourth));
            let late = backoff(&config, 40);
            assert!((Duration::from_millis(2500)..=Duration::from_secs(5)).contains(&late));
        }
    }

    #[test]
    fn websocket_urls_follow_the_server_scheme() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080", "vwt_a", Some(7)).unwrap(),
            "ws://127.0.0.1:8080/v1/ws?ticket=vwt_a&since=7"
        );
        assert_eq!(
            ws_url("https://voice.example/prefix", "vwt_b", None).unwrap(),
            "wss://voice.example/prefix/v1/ws?ticket=vwt_b"
        );
    }

    #[test]
    fn client_messages_have_the_protocol_shape() {
        let call = CallId::new();
        let text = serde_json::to_string(&Outgoing::CallSignal {
            call_id: call,
            payload: &Signal::Candidate(None),
        })
        .unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"type":"call.signal","call_id":"{call}","payload":{{"candidate":null}}}}"#
            )
        );
        let decoded = voice_core::wire::ClientMessage::decode(&text).unwrap();
        assert!(matches!(
            decoded,
            voice_core::wire::ClientMessage::CallSignal { call_id, .. } if call_id == call
        ));
        let conversation = Conversation::Group(voice_core::ids::GroupId::new());
        let typing = serde_json::to_string(&Outgoing::Typing { conversation }).unwrap();
        assert_eq!(
            voice_core::wire::ClientMessage::decode(&typing).unwrap(),
            voice_core::wire::ClientMessage::Typing { conversation }
        );
    }

    #[test]
    fn message_sends_have_the_protocol_shape() {
        let user = voice_core::ids::UserId::new();
        for client_id in [Some("c-1"), None] {
            let text = serde_json::to_string(&Outgoing::SendMessage {
                reference: "r1",
                to: Recipient::User(user),
                body: "hi \"there\"",
                client_id,
            })
            .unwrap();
            assert_eq!(
                voice_core::wire::ClientMessage::decode(&text).unwrap(),
                voice_core::wire::ClientMessage::SendMessage {
                    reference: "r1".into(),
                    request: SendMessageRequest {
                        to: Recipient::User(user),
                        body: "hi \"there\"".into(),
                        client_id: client_id.map(String::from),
                    },
                },
                "{text}"
            );
        }
    }

    fn waiter(sends: &mut Sends, reference: &str) -> oneshot::Receiver<SendAnswer> {
        let (answer, answered) = oneshot::channel();
        sends.waiting.insert(
            reference.into(),
            Waiter {
                answer,
                written: false,
            },
        );
        answered
    }

    #[test]
    fn sends_are_answered_once_and_failed_with_their_socket() {
        let mut sends = Sends {
            open: true,
            ..Sends::default()
        };
        let mut refused = waiter(&mut sends, "a");
        let mut written = waiter(&mut sends, "b");
        let mut queued = waiter(&mut sends, "c");
        assert!(sends.answer("a", || SendAnswer::Refused(ApiError::forbidden("no"))));
        assert!(matches!(refused.try_recv(), Ok(SendAnswer::Refused(e)) if e.message == "no"));
        assert!(
            !sends.answer("a", || SendAnswer::Refused(ApiError::forbidden("again"))),
            "a second answer for a ref finds nobody"
        );
        assert!(!sends.answer("unknown", || unreachable!("not built for nobody")));
        assert!(sends.start_writing("b"));
        assert!(!sends.start_writing("a"), "answered sends are not written");

        sends.socket_ended();
        assert!(!sends.open);
        assert!(sends.waiting.is_empty());
        assert!(matches!(
            written.try_recv(),
            Ok(SendAnswer::Dropped { written: true })
        ));
        assert!(matches!(
            queued.try_recv(),
            Ok(SendAnswer::Dropped { written: false })
        ));
        assert!(
            !sends.start_writing("c"),
            "a frame still queued when its socket ended is never written"
        );
    }

    #[test]
    fn a_withdrawn_send_leaves_the_table() {
        let sends = StdMutex::new(Sends::default());
        let _answered = waiter(&mut lock(&sends), "a");
        let pending = PendingSend {
            sends: &sends,
            reference: "a".into(),
        };
        assert!(lock(&sends).start_writing("a"));
        drop(pending);
        assert!(lock(&sends).waiting.is_empty());
        assert!(!lock(&sends).start_writing("a"));
    }

    /// wss:// goes through rustls: a TLS failure must be an error, not the
    /// "no process-level CryptoProvider" panic of a tree with two
    /// providers (or none).
    #[tokio::test]
    async fn wss_failures_are_errors() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot tls").await;
            }
        });
        let error = open_socket(
            &format!("wss://127.0.0.1:{port}/v1/ws"),
            &EventsConfig::default(),
        )
        .await
        .expect_err("a TLS handshake with a plain server fails");
        assert!(error.contains("cannot open the WebSocket"), "{error}");
    }
}
