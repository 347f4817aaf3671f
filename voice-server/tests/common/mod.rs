//! Helpers shared by the server's integration tests: a real server on an
//! ephemeral loopback port, an HTTP client that does not follow
//! redirects (the tests follow them by hand to look at each hop), and PKCE.

#![allow(dead_code)]

pub mod client;
pub mod coturn;
pub mod oidc_provider;

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use voice_server::{AppState, Config, Server};

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with its database in a fresh
    /// temporary directory; `configure` adjusts the defaults.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), configure).await
    }

    /// Starts a server on the data of an earlier one.
    pub async fn start_in(
        data_dir: tempfile::TempDir,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config {
            bind: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        // Most tests sign in many times from one address.
        config.auth.rate_limit_per_minute = 10_000;
        config.auth.rate_limit_burst = 10_000;
        // Nothing leaves this machine: no public STUN servers, and the
        // responder on a port of its own.
        config.ice.stun_servers = Vec::new();
        config.ice.responder.bind = Some("127.0.0.1:0".parse().unwrap());
        configure(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let addr = server.local_addr().unwrap();
        let state = server.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            data_dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and hands back its data, for a restart.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.shutdown_and_wait().await;
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, placeholder)
    }

    /// Stops the server gracefully and waits until the database is closed.
    pub async fn stop(mut self) {
        self.shutdown_and_wait().await;
    }

    async fn shutdown_and_wait(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A fresh PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The `Location` of a 303 response, asserting that it is one.
pub fn location(response: &reqwest::Response) -> String {
    assert_eq!(
        response.status(),
        303,
        "expected a redirect, got {response:?}"
    );
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The error code of a `{"error":{"code","message"}}` body.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    body["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_string()
}

/// Signs in through the OIDC provider as whoever it signs in next, and
/// returns the access token.
pub async fn oidc_access_token(server: &TestServer) -> String {
    let client = http();
    let (verifier, challenge) = pkce();
    let login = client
        .get(server.url("/v1/auth/login"))
        .query(&[
            ("redirect_uri", "http://127.0.0.1:40000/cb"),
            ("code_challenge", challenge.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let authorize = location(&login);
    let callback = location(&client.get(&authorize).send().await.unwrap());
    let back = location(&client.get(&callback).send().await.unwrap());
    let code = query_param(&back, "code").unwrap();
    let tokens: serde_json::Value = client
        .post(server.url("/v1/auth/token"))
        .json(&serde_json::json!({ "code": code, "code_verifier": verifier }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["access_token"].as_str().unwrap().to_string()
}
