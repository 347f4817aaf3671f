//! No token, code or secret ever reaches the logs: a whole sign-in (and a
//! refresh) runs with every voice and HTTP log line captured at TRACE, and
//! none of the credentials exchanged appears in them.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, TestProvider};
use common::{TestServer, http, location, pkce, query_param};
use voice_core::wire::TokenResponse;
use voice_server::config::OidcConfig;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn credentials_never_appear_in_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let provider = TestProvider::start().await;
    let issuer = provider.issuer();
    let secret = "a-configured-server-secret-of-enough-length".to_string();
    let configured_secret = secret.clone();
    let server = TestServer::start(move |config| {
        config.auth.secret = Some(configured_secret);
        config.auth.allowed_emails = vec!["alice@example.com".into()];
        config.auth.oidc = Some(OidcConfig {
            issuer_url: issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            ..OidcConfig::default()
        });
    })
    .await;

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
    let provider_code = query_param(&callback, "code").unwrap();
    let back = location(&client.get(&callback).send().await.unwrap());
    let login_code = query_param(&back, "code").unwrap();
    let tokens: TokenResponse = client
        .post(server.url("/v1/auth/token"))
        .json(&serde_json::json!({ "code": login_code, "code_verifier": verifier }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refreshed: TokenResponse = client
        .post(server.url("/v1/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": tokens.refresh_token }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me = client
        .get(server.url("/v1/me"))
        .bearer_auth(&refreshed.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    server.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/v1/auth/callback"), "requests are logged");
    for (what, value) in [
        ("provider code", provider_code.as_str()),
        ("login code", login_code.as_str()),
        ("PKCE verifier", verifier.as_str()),
        ("access token", tokens.access_token.as_str()),
        ("refresh token", tokens.refresh_token.as_str()),
        ("rotated refresh token", refreshed.refresh_token.as_str()),
        ("client secret", CLIENT_SECRET),
        ("server secret", secret.as_str()),
    ] {
        assert!(!logs.contains(value), "the {what} was logged");
    }
}
