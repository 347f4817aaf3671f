//! The WebSocket: `GET /v1/ws`, one per device.
//!
//! Authenticated at the upgrade: `Authorization: Bearer` for native
//! clients, or a single-use ticket from `POST /v1/ws/ticket` as `?ticket=`
//! for browsers (which cannot set headers on a WebSocket), so no access
//! token is ever put in a URL. A request with an `Origin` header (every
//! browser sends one) must come from an allowed web origin.
//!
//! With `?since=<seq>` the device first gets its stored events after
//! `seq`, in order, then live ones, without duplicates; if some were
//! pruned it gets `resync_required` instead. A device that cannot keep up
//! is closed with code 4008 and resumes later with `since`.
//!
//! A device can send messages over its socket (`message.send`, the same
//! checks and storage as `POST /v1/messages`, without a request per
//! message): each is answered with `message.sent` after its commit, or an
//! `error`, both carrying the client's `ref`. One device's sends are
//! handled in the order they arrive, up to `ws.max_pending_sends` of them
//! at once, so that they share the store's batches.
//!
//! After any replay the device gets `ready` with its current `latest_seq`.
//! Live events come in order when the store publishes its commits (see
//! [`crate::notify`]). Otherwise they can be published out of order (each
//! by the task that committed it): one that comes early waits for those
//! before it (see [`crate::event_order`]), and a gap that stays open is
//! filled from the store, so a device sees its events once each, in order.
//!
//! Close codes: 1001 server shutting down; 1002 malformed frame; 1009
//! inbound message too large; 1011 server error; 4001 the session ended
//! (signed out); 4002 idle (no traffic, pongs included, for
//! `ws.idle_timeout_secs`); 4008 slow consumer (its queue of
//! `ws.outbound_queue` events overflowed), or the socket stopped taking
//! writes for `ws.send_timeout_ms` (then dropped without a close frame,
//! which could not be delivered anyway).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use axum::response::Response;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::bus::SubscriptionEnd;
use voice_core::call::Device;
use voice_core::model::FriendStatus;
use voice_core::model::{Conversation, MessageInsert};
use voice_core::wire::{
    ClientMessage, ErrorBody, Event, Presence, RawJson, Replay, ServerEvent, SharedEvent, WsTicket,
};
use voice_core::{CallId, Error, UserId};

use crate::auth::AuthUser;
use crate::auth::extract::bearer_token;
use crate::auth::flows::lock;
use crate::auth::tokens::{hash_token, random_token};
use crate::calls::routes::call_error;
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::event_order::EventOrder;
use crate::messages::{check_message_rate, queue_message};
use crate::notify::{publish, publish_ephemeral};
use crate::state::AppState;

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_TOO_LARGE: u16 = 1009;
pub const CLOSE_SERVER_ERROR: u16 = 1011;
pub const CLOSE_SESSION_ENDED: u16 = 4001;
pub const CLOSE_IDLE: u16 = 4002;
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

const TICKET_PREFIX: &str = "vwt_";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_ticket))
        .routes(routes!(upgrade))
}

#[utoipa::path(post, path = "/v1/ws/ticket", tag = "events", security(("bearer" = [])),
    description = "A single-use, short-lived ticket for a browser's WebSocket (`/v1/ws?ticket=`).",
    responses((status = 200, body = WsTicket), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn issue_ticket(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<WsTicket>> {
    let ticket = random_token(TICKET_PREFIX);
    lock(&state.ws_tickets).insert(hash_token(&ticket), user, Instant::now())?;
    Ok(Json(WsTicket {
        ticket,
        expires_in: state.config.ws.ticket_ttl_secs,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ConnectQuery {
    ticket: Option<String>,
    since: Option<u64>,
}

#[utoipa::path(get, path = "/v1/ws", tag = "events", security(("bearer" = [])), params(ConnectQuery),
    description = "The event WebSocket. Authenticate with `Authorization: Bearer` or `?ticket=`; `?since=<seq>` replays stored events first. Events and close codes: docs/PROTOCOL.md.",
    responses((status = 101, description = "Switching protocols"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Origin not allowed", body = ErrorBody)))]
async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ConnectQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    if let Some(origin) = headers.get(ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| state.redirects.is_web_origin(origin));
        if !allowed {
            return Err(Error::forbidden("this origin may not connect").into());
        }
    }
    let user = match (&query.ticket, bearer_token(&headers)) {
        (Some(ticket), _) => {
            let user = lock(&state.ws_tickets)
                .take(&hash_token(ticket), Instant::now())
                .ok_or_else(|| Error::unauthorized("invalid, used or expired ticket"))?;
            user.ensure_live(&state).await?;
            user
        }
        (None, Some(token)) => AuthUser::from_access_token(&state, token).await?,
        (None, None) => return Err(Error::unauthorized("missing bearer token or ticket").into()),
    };
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(voice_core::ErrorCode::BadRequest, rejection.body_text())
    })?;
    let ws = &state.config.ws;
    Ok(upgrade
        .max_message_size(ws.max_inbound_bytes)
        .max_frame_size(ws.max_inbound_bytes)
        .max_write_buffer_size(ws.max_write_buffer_bytes)
        .read_buffer_size(ws.read_buffer_bytes)
        .write_buffer_size(ws.write_buffer_bytes)
        .on_upgrade(move |socket| connection(state, user, query.since, socket)))
}

/// Why a connection is ending, and what the device is told.
#[derive(Clone, Copy)]
struct Close {
    code: u16,
    reason: &'static str,
}

impl Close {
    const SERVER_ERROR: Close = Close {
        code: CLOSE_SERVER_ERROR,
        reason: "server error",
    };
    const SHUTTING_DOWN: Close = Close {
        code: CLOSE_GOING_AWAY,
        reason: "server shutting down",
    };
}

/// Lives as long as one device's connection.
async fn connection(state: AppState, user: AuthUser, since: Option<u64>, socket: WebSocket) {
    let mut link = Link {
        socket,
        send_timeout: Duration::from_millis(state.config.ws.send_timeout_ms),
    };
    let subscription = match state
        .bus
        .subscribe(
            user.user_id,
            user.session_id,
            state.config.ws.outbound_queue,
        )
        .await
    {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%error, "cannot subscribe a connection to the bus");
            link.close(Close::SERVER_ERROR).await;
            return;
        }
    };
    if state.presence.connect(user.user_id) {
        announce_presence(&state, user.user_id, true, None).await;
    }
    let device = Device {
        user: user.user_id,
        session: user.session_id,
    };
    state.calls.device_back(device).await;
    let close = serve(&state, user, since, &mut link, subscription).await;
    if let Some(close) = close {
        link.close(close).await;
    }
    state.calls.device_away(device).await;
    if state.presence.disconnect(user.user_id) {
        // To the millisecond, as the store keeps it.
        let now = OffsetDateTime::now_utc();
        let now = now
            .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
            .unwrap_or(now);
        if let Err(error) = state.store.set_last_seen(user.user_id, now).await {
            tracing::warn!(%error, "cannot record last seen");
        }
        announce_presence(&state, user.user_id, false, Some(now)).await;
    }
}

/// Tells the user's friends that they came online or went offline.
async fn announce_presence(
    state: &AppState,
    user: UserId,
    online: bool,
    last_seen_at: Option<OffsetDateTime>,
) {
    let friends = match state.store.list_friends(user).await {
        Ok(friends) => friends,
        Err(error) => {
            tracing::warn!(%error, "cannot list friends for presence");
            return;
        }
    };
    let event = Event::PresenceChanged {
        user_id: user,
        presence: Presence {
            online,
            last_seen_at,
        },
    };
    let events = friends
        .into_iter()
        .filter(|friend| friend.status == FriendStatus::Accepted)
        .map(|friend| (friend.user_id, event.clone()))
        .collect();
    publish_ephemeral(state, events).await;
}

/// The socket with a bound on how long one write may take: a device that
/// stops reading must not hold its task forever.
struct Link {
    socket: WebSocket,
    send_timeout: Duration,
}

impl Link {
    async fn send(&mut self, event: &ServerEvent) -> Result<(), ()> {
        self.send_message(Message::Text(event.encode().into()))
            .await
    }

    /// Writes `event` into the socket's buffer without flushing it.
    async fn feed(&mut self, event: &SharedEvent) -> Result<(), ()> {
        let message = Message::Text(event.encode().into());
        within(self.send_timeout, self.socket.feed(message)).await
    }

    /// Writes `event` into the socket's buffer without flushing it.
    async fn feed_unshared(&mut self, event: &ServerEvent) -> Result<(), ()> {
        let message = Message::Text(event.encode().into());
        within(self.send_timeout, self.socket.feed(message)).await
    }

    async fn flush(&mut self) -> Result<(), ()> {
        within(self.send_timeout, self.socket.flush()).await
    }

    async fn send_message(&mut self, message: Message) -> Result<(), ()> {
        within(self.send_timeout, self.socket.send(message)).await
    }

    async fn close(&mut self, close: Close) {
        let frame = CloseFrame {
            code: close.code,
            reason: close.reason.into(),
        };
        let _ = self.send_message(Message::Close(Some(frame))).await;
    }

    async fn send_error(&mut self, error: Error, reference: Option<String>) -> Result<(), ()> {
        self.send(&ServerEvent::new(None, Event::Error { error, reference }))
            .await
    }
}

/// A socket write that must finish within `limit`; `Err` if it failed or
/// took longer.
async fn within<E>(
    limit: Duration,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), ()> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Replays, then relays live events and handles what the device sends,
/// until the connection should end. Returns the close to send, if any.
async fn serve(
    state: &AppState,
    user: AuthUser,
    since: Option<u64>,
    link: &mut Link,
    mut subscription: Box<dyn voice_core::bus::Subscription>,
) -> Option<Close> {
    // Subscribed before replaying: an event stored during the replay is
    // either replayed or arrives live, and `last_seq` drops the repeat.
    let last_seq = match since {
        Some(since) => match replay(state, user.user_id, since, link).await {
            Ok(Some(seq)) => seq,
            Ok(None) => return None,
            Err(()) => return Some(Close::SERVER_ERROR),
        },
        None => match state.store.latest_event_seq(user.user_id).await {
            Ok(seq) => seq,
            Err(error) => {
                tracing::error!(%error, "reading the latest event seq failed");
                return Some(Close::SERVER_ERROR);
            }
        },
    };
    if link
        .send(&ServerEvent::new(
            None,
            Event::Ready {
                latest_seq: last_seq,
            },
        ))
        .await
        .is_err()
    {
        return None;
    }

    let config = &state.config.ws;
    let mut order = EventOrder::new(
        last_seq,
        Duration::from_millis(config.reorder_wait_ms),
        config.reorder_max_events,
    );
    let mut sends = Sends::new();
    let close = relay(
        state,
        user,
        link,
        &mut order,
        subscription.as_mut(),
        &mut sends,
    )
    .await;
    state.event_order.add(order.stats());
    // The sends already queued are stored whether or not the device is
    // still there to hear the answer; their events must still go out.
    while let Some((_, outcome)) = sends.next().await {
        if let Ok(inserted) = outcome {
            publish(state, &inserted.deliveries).await;
        }
    }
    close
}

/// A `message.send` queued in the store, with its `ref`.
type PendingSend = Pin<Box<dyn Future<Output = (String, ApiResult<MessageInsert>)> + Send>>;

/// A connection's sends waiting for their commit, answered in the order
/// they came.
type Sends = FuturesOrdered<PendingSend>;

/// Relays live events to the device and handles what it sends until the
/// connection should end. Returns the close to send, if any.
async fn relay(
    state: &AppState,
    user: AuthUser,
    link: &mut Link,
    order: &mut EventOrder,
    subscription: &mut dyn voice_core::bus::Subscription,
    sends: &mut Sends,
) -> Option<Close> {
    let config = &state.config.ws;
    let idle_timeout = Duration::from_secs(config.idle_timeout_secs);
    let mut ping = tokio::time::interval(Duration::from_secs(config.ping_interval_secs));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut shutdown = state.shutdown.subscribe();

    loop {
        // Committed sends go first (select! alone picks among the ready
        // branches at random): with a store that has no commit feed,
        // everyone else's devices wait for their events, and a late
        // publish holds back a gap at each of them.
        match answer_committed_sends(state, link, sends).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(close) => return close,
        }
        tokio::select! {
            Some(answer) = sends.next(), if !sends.is_empty() => {
                if let Err(close) = Box::pin(answer_sends(state, link, answer, sends)).await {
                    return close;
                }
            }
            event = subscription.next() => {
                // The store answers a write before it publishes the write's
                // events, so if this event came from one of this device's
                // sends, that send is ready: answering it first keeps the
                // answer ahead of the device's own copy of the message
                // (usually; the protocol allows either order).
                if let Err(close) = answer_committed_sends(state, link, sends).await {
                    return close;
                }
                // Boxed, once per wake-up: the writes' state would
                // otherwise be part of every idle connection's future
                // (measured: about 600 bytes per idle connection).
                let forwarded = forward_queued(state, user, link, order, Some(event), subscription);
                if let Err(close) = Box::pin(forwarded).await {
                    return close;
                }
            }
            () = gap_deadline(order.deadline()) => {
                // What is queued goes first: it may close the gap.
                let forwarded = forward_queued(state, user, link, order, None, subscription);
                if let Err(close) = Box::pin(forwarded).await {
                    return close;
                }
            }
            // Reading stops while the device has its fill of sends waiting.
            incoming = link.socket.recv(), if sends.len() < config.max_pending_sends => {
                last_heard = Instant::now();
                match incoming {
                    None => return None,
                    // Answer the device's close, as the protocol asks.
                    Some(Ok(Message::Close(_))) => return Some(Close { code: CLOSE_NORMAL, reason: "" }),
                    Some(Err(error)) => {
                        tracing::debug!(%error, "WebSocket read failed");
                        let text = error.to_string();
                        return Some(if text.contains("too long") || text.contains("Space limit") {
                            Close { code: CLOSE_TOO_LARGE, reason: "message too large" }
                        } else {
                            Close { code: CLOSE_PROTOCOL, reason: "malformed frame" }
                        });
                    }
                    Some(Ok(Message::Text(text))) => {
                        // Boxed: its state (a whole message send) would
                        // otherwise be part of every idle connection's.
                        if Box::pin(handle_client_message(state, user, text.as_str(), link, sends)).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        if link.send_error(Error::bad_request("binary messages are not understood; send JSON text"), None).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    return Some(Close { code: CLOSE_IDLE, reason: "idle" });
                }
                if link.send_message(Message::Ping(Vec::new().into())).await.is_err() {
                    return None;
                }
            }
            _ = stopping(&mut shutdown) => {
                return Some(Close::SHUTTING_DOWN);
            }
        }
    }
}

/// Most live events written to a socket before it is flushed.
const COALESCE_EVENTS: usize = 64;

/// Writes `first` (if any) and whatever else is already queued (up to
/// [`COALESCE_EVENTS`]), fills a gap from the store if one is due, then
/// flushes once: as few socket writes as the write buffer allows. `Err`
/// ends the connection, with the close to send if any.
async fn forward_queued(
    state: &AppState,
    user: AuthUser,
    link: &mut Link,
    order: &mut EventOrder,
    first: Option<Result<SharedEvent, SubscriptionEnd>>,
    subscription: &mut dyn voice_core::bus::Subscription,
) -> Result<(), Option<Close>> {
    let mut next = first;
    let mut taken = 0;
    let more_queued = loop {
        let event = match next.take() {
            Some(event) => event,
            None => match subscription.next().now_or_never() {
                Some(event) => event,
                None => break false,
            },
        };
        forward(link, order, event).await?;
        taken += 1;
        if taken == COALESCE_EVENTS {
            break true;
        }
    };
    if order.must_fill(Instant::now(), more_queued) {
        fill_gap(state, user, link, order).await?;
    }
    link.flush().await.map_err(|()| None)
}

/// Passes one event from the bus to the device (written, not yet flushed):
/// stored ones in `seq` order and without repeats, through `order`.
/// `Err` ends the connection, with the close to send if any.
async fn forward(
    link: &mut Link,
    order: &mut EventOrder,
    event: Result<SharedEvent, SubscriptionEnd>,
) -> Result<(), Option<Close>> {
    let event = match event {
        Ok(event) => event,
        Err(SubscriptionEnd::Lagged) => {
            return Err(Some(Close {
                code: CLOSE_SLOW_CONSUMER,
                reason: "too slow: reconnect with since",
            }));
        }
        Err(SubscriptionEnd::Closed) => {
            return Err(Some(Close::SHUTTING_DOWN));
        }
    };
    if let Event::SessionEnded { .. } = *event.event {
        let _ = link
            .send_message(Message::Text(event.encode().into()))
            .await;
        return Err(Some(Close {
            code: CLOSE_SESSION_ENDED,
            reason: "session ended",
        }));
    }
    if event.seq.is_none() {
        return link.feed(&event).await.map_err(|()| None);
    }
    order.push(event, Instant::now());
    feed_ready(link, order).await
}

/// Writes the held events that are next in order.
async fn feed_ready(link: &mut Link, order: &mut EventOrder) -> Result<(), Option<Close>> {
    while let Some(event) = order.pop_ready() {
        link.feed(&event).await.map_err(|()| None)?;
    }
    Ok(())
}

/// Sends what the store holds after the device's last seq (everything
/// published is committed, so that covers the gap), then what was held
/// behind the gap.
async fn fill_gap(
    state: &AppState,
    user: AuthUser,
    link: &mut Link,
    order: &mut EventOrder,
) -> Result<(), Option<Close>> {
    // What was fed must reach the socket before what the replay sends.
    link.flush().await.map_err(|()| None)?;
    match replay(state, user.user_id, order.last_seq(), link).await {
        Ok(Some(seq)) => order.filled_up_to(seq, Instant::now()),
        Ok(None) => return Err(None),
        Err(()) => return Err(Some(Close::SERVER_ERROR)),
    }
    feed_ready(link, order).await
}

/// Completes at `deadline`; never without one.
async fn gap_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Completes once the server starts shutting down.
pub(crate) async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any await.
    let _ = shutdown.wait_for(|stopping| *stopping).await.map(|_| ());
}

/// Sends the stored events after `since`; returns the last `seq` sent (or
/// the one to continue from after a resync), `None` if the device left.
async fn replay(
    state: &AppState,
    user: UserId,
    since: u64,
    link: &mut Link,
) -> Result<Option<u64>, ()> {
    let batch = state.config.ws.replay_batch.max(1);
    let mut cursor = since;
    loop {
        let replay = state
            .store
            .events_since(user, cursor, batch)
            .await
            .map_err(|error| {
                tracing::error!(%error, "replaying events failed");
            })?;
        match replay {
            Replay::Events(events) => {
                for delivery in &events {
                    if link.send(&delivery.to_server_event()).await.is_err() {
                        return Ok(None);
                    }
                    cursor = delivery.seq;
                }
                if events.len() < batch as usize {
                    return Ok(Some(cursor));
                }
            }
            Replay::ResyncRequired { latest_seq } => {
                let event = Event::ResyncRequired {
                    reason: format!(
                        "events after {since} are no longer kept; reload and continue from {latest_seq}"
                    ),
                    latest_seq,
                };
                if link.send(&ServerEvent::new(None, event)).await.is_err() {
                    return Ok(None);
                }
                return Ok(Some(latest_seq));
            }
        }
    }
}

/// A signal payload is `{"sdp": …}` or `{"candidate": …}`, within its
/// size limit. Only the shape is checked; the bytes are relayed as sent.
fn check_signal(state: &AppState, payload: &RawJson) -> Result<(), Error> {
    let limits = &state.config.calls;
    let shape: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload.get())
        .map_err(|_| Error::bad_request("payload must be {\"sdp\": …} or {\"candidate\": …}"))?;
    let limit = match (shape.len(), shape.keys().next().map(String::as_str)) {
        (1, Some("sdp")) => limits.max_sdp_bytes,
        (1, Some("candidate")) => limits.max_candidate_bytes,
        _ => {
            return Err(Error::bad_request(
                "payload must be {\"sdp\": …} or {\"candidate\": …}",
            ));
        }
    };
    if payload.get().len() > limit {
        return Err(Error::new(
            voice_core::ErrorCode::PayloadTooLarge,
            format!("this signal may be at most {limit} bytes"),
        ));
    }
    Ok(())
}

/// Handles one text message from the device. Bad input gets an error
/// event; only a failed write ends the connection.
async fn handle_client_message(
    state: &AppState,
    user: AuthUser,
    text: &str,
    link: &mut Link,
    sends: &mut Sends,
) -> Result<(), ()> {
    let message = match ClientMessage::decode(text) {
        Ok(message) => message,
        Err(error) => return link.send_error(error, None).await,
    };
    let outcome = match message {
        ClientMessage::Typing { conversation } => typing(state, user, conversation).await,
        ClientMessage::CallSignal { call_id, payload } => {
            call_signal(state, user, call_id, payload).await
        }
        ClientMessage::SendMessage { reference, request } => {
            // The ref is echoed back, so it gets the client_id's bound.
            let max = state.config.limits.max_client_id_bytes;
            if reference.is_empty() || reference.len() > max {
                let error = Error::bad_request(format!("ref must be 1 to {max} bytes"));
                return link.send_error(error, None).await;
            }
            // Queued now, answered (in order) once committed.
            let stored = queue_message(state, user.user_id, request);
            sends.push_back(Box::pin(async move { (reference, stored.await) }));
            return Ok(());
        }
        _ => Err(Error::bad_request("unsupported message")),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(error) => link.send_error(error, None).await,
    }
}

/// Answers the device's sends that have committed, if the oldest has;
/// returns whether it had. `Err` ends the connection.
async fn answer_committed_sends(
    state: &AppState,
    link: &mut Link,
    sends: &mut Sends,
) -> Result<bool, Option<Close>> {
    let Some(Some(oldest)) = sends.next().now_or_never() else {
        return Ok(false);
    };
    Box::pin(answer_sends(state, link, oldest, sends)).await?;
    Ok(true)
}

/// Publishes the events of a committed send, and of those after it that
/// are committed too (unless the store publishes its commits), then
/// answers them in order. Publishing goes first:
/// the other devices should not wait on this one's socket, and this
/// device still gets each answer before its own copy of the event, which
/// is forwarded only after this returns. `Err` ends the connection.
async fn answer_sends(
    state: &AppState,
    link: &mut Link,
    first: (String, ApiResult<MessageInsert>),
    sends: &mut Sends,
) -> Result<(), Option<Close>> {
    let mut done = vec![first];
    while let Some(Some(answer)) = sends.next().now_or_never() {
        done.push(answer);
    }
    let mut deliveries = Vec::new();
    let answers: Vec<Event> = done
        .into_iter()
        .map(|(reference, outcome)| match outcome {
            Ok(inserted) => {
                deliveries.extend(inserted.deliveries);
                Event::MessageSent {
                    reference,
                    message: inserted.message,
                }
            }
            Err(error) => Event::Error {
                error: error.0,
                reference: Some(reference),
            },
        })
        .collect();
    publish(state, &deliveries).await;
    for answer in answers {
        link.feed_unshared(&ServerEvent::new(None, answer))
            .await
            .map_err(|()| None)?;
    }
    link.flush().await.map_err(|()| None)
}

/// Relays a typing indicator to the conversation's other participants.
async fn typing(state: &AppState, user: AuthUser, conversation: Conversation) -> Result<(), Error> {
    check_message_rate(state, user.user_id).map_err(|e| e.0)?;
    let Some(participants) = state
        .store
        .allowed_recipients(user.user_id, conversation)
        .await?
    else {
        return Err(Error::forbidden("you cannot write in this conversation"));
    };
    let others = participants
        .into_iter()
        .filter(|other| *other != user.user_id)
        .map(|other| {
            (
                other,
                Event::Typing {
                    conversation,
                    user_id: user.user_id,
                },
            )
        })
        .collect();
    publish_ephemeral(state, others).await;
    Ok(())
}

/// Relays SDP or a candidate to the other participant of a call.
async fn call_signal(
    state: &AppState,
    user: AuthUser,
    call_id: CallId,
    payload: RawJson,
) -> Result<(), Error> {
    check_message_rate(state, user.user_id).map_err(|e| e.0)?;
    check_signal(state, &payload)?;
    let from = Device {
        user: user.user_id,
        session: user.session_id,
    };
    match state
        .calls
        .signal(call_id, from, payload.get().to_owned())
        .await
    {
        Ok(()) => Ok(()),
        Err(error) => Err(call_error(state, call_id, error).await.0),
    }
}
