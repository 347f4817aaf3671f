//! ICE servers: the STUN checker against a real coturn, the built-in
//! responder, a silent port, a peer answering garbage, a name that does not
//! resolve; the admin endpoints; and TURN credentials that real coturn
//! accepts (and refuses once expired). Everything stays on loopback.

mod common;

use std::time::Duration;

use common::coturn::Coturn;
use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, TestProvider, TestUser};
use common::{TestServer, http, oidc_access_token};
use serde_json::{Value, json};
use voice_server::Config;
use voice_server::config::OidcConfig;

const ADMIN: &str = "admin@example.com";

/// Probes often and gives up quickly, so the tests see states change.
fn quick_probes(config: &mut Config) {
    config.ice.probe_interval_secs = 1;
    config.ice.probe_jitter = 0.1;
    config.ice.probe_rto_ms = 100;
    config.ice.probe_timeout_ms = 400;
    config.ice.unhealthy_after = 2;
}

/// A server with an OIDC provider, so an admin with an email can sign in.
async fn server_with_admin(
    configure: impl FnOnce(&mut Config),
) -> (TestServer, String, TestProvider) {
    let provider = TestProvider::start().await;
    let issuer = provider.issuer();
    let server = TestServer::start(move |config| {
        config.auth.oidc = Some(OidcConfig {
            issuer_url: issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            ..OidcConfig::default()
        });
        config.auth.open_registration = true;
        config.ice.admins = vec![ADMIN.into()];
        quick_probes(config);
        configure(config);
    })
    .await;
    provider.sign_in_as(TestUser::new("admin-sub", ADMIN));
    let token = oidc_access_token(&server).await;
    (server, token, provider)
}

async fn get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let response = http()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn status_of(server: &TestServer, token: &str, url: &str) -> Value {
    let (status, body) = get(server, token, "/v1/admin/ice/status").await;
    assert_eq!(status, 200, "{body}");
    body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["url"] == url)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits (bounded) until the server's state is `state`.
async fn wait_for_state(server: &TestServer, token: &str, url: &str, state: &str) -> Value {
    for _ in 0..100 {
        let status = status_of(server, token, url).await;
        if status["state"] == state {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{url} never became {state}: {}",
        status_of(server, token, url).await
    );
}

#[tokio::test]
async fn coturn_is_verified_healthy_with_an_rtt_and_handed_out() {
    let coturn = Coturn::start();
    let url = format!("stun:127.0.0.1:{}", coturn.port);
    let configured = url.clone();
    let (server, token, _provider) = server_with_admin(move |config| {
        config.ice.stun_servers = vec![configured];
        config.ice.responder.enabled = false;
    })
    .await;
    let status = wait_for_state(&server, &token, &url, "healthy").await;
    assert!(status["rtt_ms"].as_f64().unwrap() >= 0.0);
    assert!(status["last_check"].is_string());
    let (_, servers) = get(&server, &token, "/v1/ice-servers").await;
    assert_eq!(servers["ice_servers"][0]["urls"][0], url.as_str());
    assert!(servers.get("warning").is_none());
}

#[tokio::test]
async fn the_built_in_responder_answers_and_lists_itself() {
    let (server, token, _provider) = server_with_admin(|_| {}).await;
    let responder = server.state.ice.responder().expect("the responder is on");
    let url = responder.url.clone();
    assert_eq!(url, format!("stun:127.0.0.1:{}", responder.addr.port()));
    wait_for_state(&server, &token, &url, "healthy").await;
    let (_, servers) = get(&server, &token, "/v1/ice-servers").await;
    assert_eq!(servers["ice_servers"][0]["urls"][0], url.as_str());

    // Garbage is dropped and counted; the responder keeps answering.
    // An async socket: the responder runs on this test's runtime.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for garbage in [&b""[..], b"hello", &[0u8; 20][..], &[0xff; 600][..]] {
        socket.send_to(garbage, responder.addr).await.unwrap();
    }
    let request = voice_core::stun::binding_request([9; 12]);
    socket.send_to(&request, responder.addr).await.unwrap();
    let mut buffer = [0u8; 1024];
    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = voice_core::stun::parse_binding_response(&buffer[..len]).unwrap();
    assert_eq!(answer.transaction_id, [9; 12]);
    assert_eq!(answer.mapped, socket.local_addr().unwrap());
    let (_, status) = get(&server, &token, "/v1/admin/ice/status").await;
    assert!(
        status["responder"]["malformed"].as_u64().unwrap() >= 4,
        "{status}"
    );
}

#[tokio::test]
async fn silent_garbage_and_unresolvable_servers_become_unhealthy() {
    // A port that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("stun:127.0.0.1:{}", silent.local_addr().unwrap().port());
    // A peer that answers garbage, and responses with a wrong transaction id.
    let liar = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let liar_url = format!("stun:127.0.0.1:{}", liar.local_addr().unwrap().port());
    tokio::spawn(async move {
        let mut buffer = [0u8; 1024];
        let mut turn = 0u8;
        while let Ok((len, from)) = liar.recv_from(&mut buffer).await {
            turn = turn.wrapping_add(1);
            let wrong_id = voice_core::stun::answer_binding_request(&buffer[..len], from)
                .map(|mut answer| {
                    answer[8] ^= 0xff; // a transaction id byte
                    answer
                })
                .unwrap_or_default();
            let reply = if turn.is_multiple_of(2) {
                wrong_id
            } else {
                b"not stun at all".to_vec()
            };
            let _ = liar.send_to(&reply, from).await;
        }
    });
    let unresolvable = "stun:does-not-exist.invalid:3478".to_string();
    let list = vec![silent_url.clone(), liar_url.clone(), unresolvable.clone()];
    let (server, token, _provider) = server_with_admin(move |config| {
        config.ice.stun_servers = list;
        config.ice.responder.enabled = false;
    })
    .await;
    for url in [&silent_url, &liar_url, &unresolvable] {
        let status = wait_for_state(&server, &token, url, "unhealthy").await;
        assert!(status["consecutive_failures"].as_u64().unwrap() >= 2);
        assert!(status["last_error"].is_string(), "{status}");
    }
    let status = status_of(&server, &token, &unresolvable).await;
    assert!(
        status["last_error"].as_str().unwrap().contains("resolve"),
        "{status}"
    );
    let (_, servers) = get(&server, &token, "/v1/ice-servers").await;
    assert_eq!(servers["ice_servers"].as_array().unwrap().len(), 0);
    assert!(
        servers["warning"].is_string(),
        "none healthy is said out loud"
    );
    drop(silent);
}

#[tokio::test]
async fn admins_edit_the_list_and_edits_persist() {
    let coturn = Coturn::start();
    let url = format!("stun:127.0.0.1:{}", coturn.port);
    let (server, token, provider) = server_with_admin(|config| {
        config.ice.stun_servers = vec!["stun:127.0.0.1:9".into()];
        config.ice.responder.enabled = false;
    })
    .await;
    let client = http();
    let add = client
        .post(server.url("/v1/admin/ice/stun"))
        .bearer_auth(&token)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(add.status(), 200);
    let remove = client
        .delete(server.url("/v1/admin/ice/stun"))
        .bearer_auth(&token)
        .json(&json!({ "url": "stun:127.0.0.1:9" }))
        .send()
        .await
        .unwrap();
    assert_eq!(remove.status(), 204);
    let bad = client
        .post(server.url("/v1/admin/ice/stun"))
        .bearer_auth(&token)
        .json(&json!({ "url": "http://nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let (_, list) = get(&server, &token, "/v1/admin/ice/stun").await;
    assert_eq!(list["servers"], json!([url]));
    wait_for_state(&server, &token, &url, "healthy").await;

    // Not an admin: refused.
    provider.sign_in_as(TestUser::new("someone-sub", "someone@example.com"));
    let someone = oidc_access_token(&server).await;
    assert_eq!(get(&server, &someone, "/v1/admin/ice/stun").await.0, 403);
    assert_eq!(get(&server, &someone, "/v1/admin/ice/status").await.0, 403);
    assert_eq!(get(&server, &someone, "/v1/ice-servers").await.0, 200);

    // The edits survive a restart.
    let data = server.stop_keeping_data().await;
    let issuer = provider.issuer();
    let server = TestServer::start_in(data, move |config| {
        config.auth.oidc = Some(OidcConfig {
            issuer_url: issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            ..OidcConfig::default()
        });
        config.auth.open_registration = true;
        config.ice.admins = vec![ADMIN.into()];
        config.ice.stun_servers = vec!["stun:127.0.0.1:9".into()];
        config.ice.responder.enabled = false;
        quick_probes(config);
    })
    .await;
    provider.sign_in_as(TestUser::new("admin-sub", ADMIN));
    let token = oidc_access_token(&server).await;
    let (_, list) = get(&server, &token, "/v1/admin/ice/stun").await;
    assert_eq!(list["servers"], json!([url]));
}

#[tokio::test]
async fn turn_credentials_are_accepted_by_coturn_and_refused_once_expired() {
    let coturn = Coturn::start();
    let turn_url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let secret = coturn.secret.clone();
    let configured_url = turn_url.clone();
    let server = TestServer::start(move |config| {
        config.ice.turn.urls = vec![configured_url];
        config.ice.turn.secret = Some(secret);
        config.ice.turn.ttl_secs = 600;
    })
    .await;
    let alice = common::client::User::sign_in(&server, "alice").await;
    let (status, servers) = alice.get("/v1/ice-servers").await;
    assert_eq!(status, 200);
    let turn = servers["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["urls"][0] == turn_url.as_str())
        .expect("TURN is handed out")
        .clone();
    assert!(servers["ttl"].as_u64().unwrap() <= 600);
    let username = turn["username"].as_str().unwrap();
    let credential = turn["credential"].as_str().unwrap();
    assert!(username.ends_with(&format!(":{}", alice.id)), "{username}");
    assert!(
        coturn.allocate(username, credential),
        "coturn accepts the server's credentials"
    );

    let expired_at = time::OffsetDateTime::now_utc() - time::Duration::seconds(60);
    let user: voice_core::UserId = alice.id.parse().unwrap();
    let (old_username, old_credential) =
        voice_server::ice::turn::credentials(&coturn.secret, user, expired_at);
    assert!(
        !coturn.allocate(&old_username, &old_credential),
        "expired credentials are refused"
    );
    assert!(
        !coturn.allocate(username, "not-the-credential"),
        "a wrong credential is refused"
    );
}

#[tokio::test]
async fn calls_carry_the_ice_servers() {
    let server = TestServer::start(|config| {
        config.ice.turn.urls = vec!["turn:127.0.0.1:3478".into()];
        config.ice.turn.secret = Some("s".into());
    })
    .await;
    let alice = common::client::User::sign_in(&server, "alice").await;
    let bob = common::client::User::sign_in(&server, "bob").await;
    common::client::befriend(&alice, &bob).await;
    let (status, started) = alice.post("/v1/calls", json!({ "callee": bob.id })).await;
    assert_eq!(status, 201);
    let servers = started["ice_servers"].as_array().unwrap();
    assert!(
        servers
            .iter()
            .any(|s| s["urls"][0] == "turn:127.0.0.1:3478" && s["credential"].is_string())
    );
}
