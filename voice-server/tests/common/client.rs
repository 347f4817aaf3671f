//! A small test client: a signed-in user (dev sign-in) speaking REST and
//! WebSocket to a real server, with the assertions the messaging tests
//! share.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{TestServer, http};

/// How long a test waits for an event it expects before failing. Not a
/// timing assertion: only a bound so a broken server fails the test
/// instead of hanging it.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// One device of a signed-in user.
#[derive(Clone)]
pub struct User {
    pub base: String,
    pub token: String,
    pub id: String,
    pub name: String,
    client: reqwest::Client,
}

impl User {
    /// Signs in (a new device each call) with dev sign-in.
    /// Signs in one device per name, in order (a name given twice is two
    /// devices of one user).
    pub async fn sign_in_all<const N: usize>(server: &TestServer, names: [&str; N]) -> [Self; N] {
        let mut users = Vec::with_capacity(N);
        for name in names {
            users.push(User::sign_in(server, name).await);
        }
        users
            .try_into()
            .unwrap_or_else(|_| unreachable!("one user per name"))
    }

    pub async fn sign_in(server: &TestServer, name: &str) -> Self {
        let client = http();
        let tokens: Value = client
            .post(server.url("/v1/auth/dev-login"))
            .json(&json!({ "username": name }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = tokens["access_token"].as_str().unwrap().to_string();
        let me: Value = client
            .get(server.url("/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            base: server.url(""),
            token,
            id: me["id"].as_str().unwrap().to_string(),
            name: name.to_string(),
            client,
        }
    }

    /// The same device, talking to another server (after a restart).
    pub fn on(self, server: &TestServer) -> Self {
        Self {
            base: server.url(""),
            ..self
        }
    }

    /// This device's session id (the `sid` of its access token).
    pub fn session(&self) -> String {
        use base64::Engine;
        let payload = self.token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["sid"].as_str().unwrap().to_string()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Sends a direct message; returns the stored message.
    pub async fn message(&self, to: &User, body: &str) -> Value {
        let (status, message) = self
            .post(
                "/v1/messages",
                json!({ "to": { "user": to.id }, "body": body }),
            )
            .await;
        assert_eq!(status, 201, "{message}");
        message
    }

    pub async fn group_message(&self, group: &str, body: &str) -> Value {
        let (status, message) = self
            .post(
                "/v1/messages",
                json!({ "to": { "group": group }, "body": body }),
            )
            .await;
        assert_eq!(status, 201, "{message}");
        message
    }

    /// Opens a WebSocket with the bearer header, optionally resuming.
    pub async fn connect(&self, since: Option<u64>) -> Socket {
        self.connect_with_receive_buffer(since, None).await
    }

    /// Connects with the kernel's receive buffer capped at `receive_buffer`
    /// bytes (`None`: the kernel's own autotuning, which on loopback can
    /// hold tens of megabytes). Tests of slow readers cap it so that the
    /// server, not the kernel, is the one that runs out of room.
    pub async fn connect_with_receive_buffer(
        &self,
        since: Option<u64>,
        receive_buffer: Option<u32>,
    ) -> Socket {
        let mut url = format!("{}/v1/ws", self.base.replace("http://", "ws://"));
        if let Some(since) = since {
            url.push_str(&format!("?since={since}"));
        }
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let address = self
            .base
            .trim_start_matches("http://")
            .parse::<std::net::SocketAddr>()
            .expect("the test server listens on an IP address");
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(bytes) = receive_buffer {
            tcp.set_recv_buffer_size(bytes).unwrap();
        }
        let tcp = tcp.connect(address).await.unwrap();
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        let mut socket = Socket {
            stream,
            read_ahead: VecDeque::new(),
        };
        socket.read_ahead_to_ready().await;
        socket
    }
}

/// The id of the direct conversation between two users (lower id first).
pub fn direct_conversation(a: &User, b: &User) -> String {
    let (low, high) = if a.id <= b.id {
        (&a.id, &b.id)
    } else {
        (&b.id, &a.id)
    };
    format!("d:{low}:{high}")
}

/// Makes two users friends.
pub async fn befriend(a: &User, b: &User) {
    let (status, body) = a
        .post("/v1/friends/requests", json!({ "user_id": b.id }))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = b
        .post(&format!("/v1/friends/requests/{}/accept", a.id), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
}

pub struct Socket {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for `ready`, handed out first. `None`
    /// stands for the end of the connection.
    read_ahead: VecDeque<Option<WsMessage>>,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(Option<u16>),
    Dropped,
}

impl Socket {
    /// Reads up to and including `ready` (or the end of the connection)
    /// and keeps it all for the test to read. The server subscribes a
    /// connection only after the upgrade, and `ready` is what tells a
    /// device that live events flow from then on: an event published
    /// earlier is in the store, not on this socket.
    async fn read_ahead_to_ready(&mut self) {
        loop {
            let frame = self.read_frame().await.expect("ready in time");
            let is_end = match &frame {
                Some(WsMessage::Text(text)) => {
                    serde_json::from_str::<Value>(text.as_str()).unwrap()["type"] == "ready"
                }
                Some(WsMessage::Close(_)) | None => true,
                Some(_) => false,
            };
            self.read_ahead.push_back(frame);
            if is_end {
                return;
            }
        }
    }

    /// The next frame off the wire (`None`: the connection ended), or
    /// `Err` if none came within [`EVENT_WAIT`].
    async fn read_frame(&mut self) -> Result<Option<WsMessage>, tokio::time::error::Elapsed> {
        let frame = tokio::time::timeout(EVENT_WAIT, self.stream.next()).await?;
        Ok(frame.and_then(Result::ok))
    }

    /// The next frame, read ahead or off the wire.
    async fn next_frame(&mut self) -> Result<Option<WsMessage>, tokio::time::error::Elapsed> {
        match self.read_ahead.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read_frame().await,
        }
    }

    /// The next event's text exactly as sent, skipping pings.
    pub async fn next_text(&mut self) -> String {
        loop {
            let message = self
                .next_frame()
                .await
                .expect("an event in time")
                .expect("the socket is open");
            match message {
                WsMessage::Text(text) => return text.as_str().to_string(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The next JSON event, skipping pings.
    pub async fn next_event(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).unwrap()
    }

    /// The next event of `kind`, skipping others (presence, typing).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let event = self.next_event().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// The next stored event (one with a `seq`), skipping ephemeral ones.
    pub async fn next_stored(&mut self) -> Value {
        loop {
            let event = self.next_event().await;
            if event.get("seq").is_some() {
                return event;
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(WsMessage::Text(text.into()))
            .await
            .unwrap();
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(WsMessage::Binary(bytes.into()))
            .await
            .unwrap();
    }

    /// Reads until the server ends the connection; returns the close code
    /// if it sent one.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match self.next_frame().await {
                Err(_) => panic!("the connection stayed open"),
                Ok(None) => return Ended::Dropped,
                Ok(Some(WsMessage::Close(frame))) => {
                    return Ended::Closed(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(_)) => continue,
            }
        }
    }

    /// Sends a close frame and goes on reading, as a device that leaves
    /// cleanly does.
    pub async fn send_close(&mut self) {
        self.stream.send(WsMessage::Close(None)).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
