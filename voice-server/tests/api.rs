//! The API's edges over real HTTP: which tokens are refused, dev sign-in
//! and its guard rails, error bodies, limits, and the health probes.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, TestProvider};
use common::{TestServer, error_code, http};
use serde_json::{Value, json};
use time::OffsetDateTime;
use voice_core::auth::TokenIssuer;
use voice_core::wire::TokenResponse;
use voice_core::{SessionId, UserId};
use voice_server::config::OidcConfig;
use voice_server::{Config, Server};

async fn dev_login(server: &TestServer, username: &str) -> reqwest::Response {
    http()
        .post(server.url("/v1/auth/dev-login"))
        .json(&json!({ "username": username }))
        .send()
        .await
        .unwrap()
}

async fn dev_tokens(server: &TestServer, username: &str) -> TokenResponse {
    let response = dev_login(server, username).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn me_status(server: &TestServer, bearer: &str) -> u16 {
    http()
        .get(server.url("/v1/me"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn dev_sign_in_works_on_a_loopback_server_without_a_provider() {
    let server = TestServer::start(|_| {}).await;
    let tokens = dev_tokens(&server, "alice").await;
    let body: Value = http()
        .get(server.url("/v1/me"))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["name"], "alice");
    assert_eq!(body["email"], Value::Null);
    let again = dev_tokens(&server, "alice").await;
    assert_ne!(again.refresh_token, tokens.refresh_token);
    assert_eq!(server.state.store.count_users().await.unwrap(), 1);

    let bad = dev_login(&server, "Not A Name!").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad).await, "bad_request");
    server.stop().await;
}

/// No public STUN servers and no responder on a public port: a test
/// sends nothing off this machine.
fn stays_on_this_machine(config: &mut Config) {
    config.ice.stun_servers = Vec::new();
    config.ice.responder.enabled = false;
}

#[tokio::test]
async fn dev_sign_in_is_off_with_a_provider_and_refused_off_loopback() {
    let provider = TestProvider::start().await;
    let issuer = provider.issuer();
    let with_provider = TestServer::start(move |config| {
        config.auth.oidc = Some(OidcConfig {
            issuer_url: issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            ..OidcConfig::default()
        });
    })
    .await;
    let response = dev_login(&with_provider, "alice").await;
    assert_eq!(response.status(), 404);

    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        bind: "0.0.0.0:0".parse().unwrap(),
        ..Config::default()
    };
    stays_on_this_machine(&mut config);
    config.auth.dev_login = Some(true);
    let error = Server::start(config).await.err().expect("refuses to start");
    assert!(error.to_string().contains("not loopback"), "{error}");

    // Without the explicit setting, a public bind just leaves it off.
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        bind: "0.0.0.0:0".parse().unwrap(),
        ..Config::default()
    };
    stays_on_this_machine(&mut config);
    let server = Server::start(config).await.unwrap();
    assert!(!server.state().dev_login);
}

#[tokio::test]
async fn expired_tampered_unsigned_and_wrong_kind_tokens_are_refused() {
    let server = TestServer::start(|_| {}).await;
    let tokens = dev_tokens(&server, "alice").await;
    assert_eq!(me_status(&server, &tokens.access_token).await, 200);

    let old = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let grant = server
        .state
        .tokens
        .verify_access(&tokens.access_token)
        .unwrap();
    let (expired, _) = server
        .state
        .tokens
        .issue_access(grant.user_id, grant.session_id, old)
        .unwrap();
    assert_eq!(me_status(&server, &expired).await, 401);

    let parts: Vec<&str> = tokens.access_token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!(UserId::new());
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(me_status(&server, &tampered).await, 401);

    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    assert_eq!(me_status(&server, &unsigned).await, 401);

    let hs512_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"at+jwt"}"#);
    let other_alg = format!("{hs512_header}.{}.{}", parts[1], parts[2]);
    assert_eq!(me_status(&server, &other_alg).await, 401);

    // Refresh tokens are not access tokens, and the reverse.
    assert_eq!(me_status(&server, &tokens.refresh_token).await, 401);
    let response = http()
        .post(server.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": tokens.access_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Nor is a refresh token a login code.
    let response = http()
        .post(server.url("/v1/auth/token"))
        .json(&json!({ "code": tokens.refresh_token, "code_verifier": "a".repeat(43) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // An access token for a session that never existed.
    let (orphan, _) = server
        .state
        .tokens
        .issue_access(UserId::new(), SessionId::new(), OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(me_status(&server, &orphan).await, 401);
    let unauthorized = http().get(server.url("/v1/me")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(
        unauthorized.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    assert_eq!(error_code(unauthorized).await, "unauthorized");
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let server = TestServer::start(|config| config.limits.max_body_bytes = 1024).await;
    let client = http();

    let missing = client
        .get(server.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "not_found");

    let wrong_method = client
        .get(server.url("/v1/auth/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);

    let malformed = client
        .post(server.url("/v1/auth/dev-login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(error_code(malformed).await, "bad_request");

    let too_large = client
        .post(server.url("/v1/auth/dev-login"))
        .json(&json!({ "username": "a".repeat(4096) }))
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(error_code(too_large).await, "payload_too_large");

    let no_provider = client
        .get(server.url("/v1/auth/login?redirect_uri=x&code_challenge=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_provider.status(), 404);
}

#[tokio::test]
async fn auth_endpoints_are_rate_limited_per_ip() {
    let server = TestServer::start(|config| {
        config.auth.rate_limit_per_minute = 1;
        config.auth.rate_limit_burst = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(dev_login(&server, "alice").await.status(), 200);
    }
    let limited = dev_login(&server, "alice").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(error_code(limited).await, "rate_limited");
    // Health is not an auth endpoint.
    assert_eq!(
        http()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start(|_| {}).await;
    let health: Value = http()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = http().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(server.data_dir.path().join("voice.db").exists());
    assert!(server.data_dir.path().join("server-secret").exists());
    server.stop().await;
}
