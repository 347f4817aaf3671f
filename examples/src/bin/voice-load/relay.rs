//! The baseline: a bare WebSocket relay with the same API shape as the
//! server's message path and nothing else. `POST /v1/messages` with
//! `{"to":{"user":id},"body":…}` (or `{"to":{"group":id}}`) is answered 201,
//! and a `{"type":"message.send","ref":…,"to":…,"body":…}` frame on a
//! socket is answered `{"type":"message.sent","ref":…}`; either way the body
//! goes out as a `message.created` event to the recipients' sockets
//! (`GET /v1/ws?user=id`). No auth, no storage, no sequence numbers: what
//! any server must at least do to pass a message on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::bursts::write_bursts;

#[derive(Default)]
struct Relay {
    sockets: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<String>>>>,
    groups: Mutex<HashMap<String, Vec<String>>>,
}

#[derive(Deserialize)]
struct Connect {
    user: String,
}

#[derive(Deserialize)]
struct Send {
    to: Recipient,
    body: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Recipient {
    User(String),
    Group(String),
}

#[derive(Deserialize)]
struct NewGroup {
    id: String,
    members: Vec<String>,
}

/// Serves the relay on `bind` until the process is killed; prints the
/// bound address the way voice-server logs it, so one parser finds both.
pub async fn serve(bind: SocketAddr) -> std::io::Result<()> {
    let relay = Arc::new(Relay::default());
    let app = Router::new()
        .route("/v1/ws", get(connect))
        .route("/v1/messages", post(send))
        .route("/baseline/groups", post(create_group))
        .with_state(relay);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!(
        "voice-server listening addr={} (baseline relay)",
        listener.local_addr()?
    );
    // As voice-server does: small frames go out at once.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

async fn connect(
    State(relay): State<Arc<Relay>>,
    Query(query): Query<Connect>,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| run_socket(relay, query.user, socket))
}

async fn run_socket(relay: Arc<Relay>, user: String, socket: WebSocket) {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    if let Ok(mut sockets) = relay.sockets.lock() {
        sockets.entry(user.clone()).or_default().push(tx.clone());
    }
    // As voice-server does: live events start here.
    let _ = tx.send(r#"{"type":"ready","latest_seq":0}"#.to_owned());
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_bursts(rx, sink, |text| Message::Text(text.into())));
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Close(_) => break,
            Message::Text(text) => {
                if let Ok(message) = serde_json::from_str::<Send>(text.as_str()) {
                    let answer =
                        serde_json::json!({"type": "message.sent", "ref": message.reference});
                    relay.deliver(message);
                    let _ = tx.send(answer.to_string());
                }
            }
            _ => {}
        }
    }
    writer.abort();
    if let Ok(mut sockets) = relay.sockets.lock()
        && let Some(list) = sockets.get_mut(&user)
    {
        list.retain(|tx| !tx.is_closed());
    }
}

async fn send(State(relay): State<Arc<Relay>>, Json(message): Json<Send>) -> StatusCode {
    relay.deliver(message);
    StatusCode::CREATED
}

impl Relay {
    /// Sends the body as a `message.created` event to every socket of every
    /// recipient.
    fn deliver(&self, message: Send) {
        let recipients = match message.to {
            Recipient::User(user) => vec![user],
            Recipient::Group(group) => self
                .groups
                .lock()
                .map(|g| g.get(&group).cloned().unwrap_or_default())
                .unwrap_or_default(),
        };
        let event =
            serde_json::json!({"type": "message.created", "message": {"body": message.body}})
                .to_string();
        if let Ok(sockets) = self.sockets.lock() {
            for user in recipients {
                for tx in sockets.get(&user).into_iter().flatten() {
                    let _ = tx.send(event.clone());
                }
            }
        }
    }
}

async fn create_group(State(relay): State<Arc<Relay>>, Json(group): Json<NewGroup>) -> StatusCode {
    if let Ok(mut groups) = relay.groups.lock() {
        groups.insert(group.id, group.members);
    }
    StatusCode::CREATED
}
