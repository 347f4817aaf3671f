//! Calls over real WebSockets against a real server: ringing every device
//! of the callee, answering on one, the ways a call ends, glare, busy,
//! lost devices, signaling that reaches only the right device unchanged,
//! and a server restart while calls ring.

mod common;

use common::TestServer;
use common::client::{Socket, User, befriend};
use serde_json::{Value, json};
use voice_server::Config;

fn fast_calls(config: &mut Config) {
    config.limits.messages_per_second = 10_000;
    config.limits.messages_burst = 10_000;
    config.calls.ring_timeout_secs = 30;
    config.calls.disconnect_grace_secs = 1;
    // Fixed, so tokens stay valid across a restart on another port.
    config.auth.token_issuer = Some("https://voice.test".into());
}

/// Alice (one device) and Bob (phone and laptop), friends, all connected.
struct Scene {
    server: TestServer,
    alice: User,
    phone: User,
    laptop: User,
    alice_socket: Socket,
    phone_socket: Socket,
    laptop_socket: Socket,
}

async fn scene(configure: impl FnOnce(&mut Config)) -> Scene {
    let server = TestServer::start(|config| {
        fast_calls(config);
        configure(config);
    })
    .await;
    let [alice, phone, laptop] = User::sign_in_all(&server, ["alice", "bob", "bob"]).await;
    befriend(&alice, &phone).await;
    let mut alice_socket = alice.connect(None).await;
    let mut phone_socket = phone.connect(None).await;
    let mut laptop_socket = laptop.connect(None).await;
    for socket in [&mut alice_socket, &mut phone_socket, &mut laptop_socket] {
        socket.next_of("ready").await;
    }
    Scene {
        server,
        alice,
        phone,
        laptop,
        alice_socket,
        phone_socket,
        laptop_socket,
    }
}

async fn call(from: &User, to: &User) -> (u16, Value) {
    from.post("/v1/calls", json!({ "callee": to.id })).await
}

async fn ring(scene: &mut Scene) -> String {
    let (status, started) = call(&scene.alice, &scene.phone).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["status"], "ringing");
    assert!(started["expires_at"].is_string());
    assert!(started["ice_servers"].is_array());
    let id = started["call_id"].as_str().unwrap().to_string();
    for socket in [&mut scene.phone_socket, &mut scene.laptop_socket] {
        let incoming = socket.next_of("call.incoming").await;
        assert_eq!(incoming["call_id"], id.as_str());
        assert_eq!(incoming["caller"]["id"], scene.alice.id.as_str());
        assert!(
            incoming["seq"].is_u64(),
            "stored, so a device that comes back learns of it"
        );
    }
    id
}

async fn history(user: &User) -> Vec<Value> {
    let (status, body) = user.get("/v1/calls/history").await;
    assert_eq!(status, 200);
    body["calls"].as_array().unwrap().clone()
}

#[tokio::test]
async fn answering_on_one_device_stops_the_others_and_hangup_ends_it() {
    let mut s = scene(|_| {}).await;
    let id = ring(&mut s).await;
    let (status, accepted) = s
        .phone
        .post(&format!("/v1/calls/{id}/accept"), json!({}))
        .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["callee_device"], s.phone.session().as_str());
    let elsewhere = s.laptop_socket.next_of("call.answered_elsewhere").await;
    assert_eq!(elsewhere["call_id"], id.as_str());
    let event = s.alice_socket.next_of("call.accepted").await;
    assert_eq!(event["device"], s.phone.session().as_str());

    let (_, active) = s.alice.get("/v1/calls/active").await;
    assert_eq!(active["calls"][0]["call_id"], id.as_str());
    assert_eq!(
        s.phone
            .post(&format!("/v1/calls/{id}/connected"), json!({}))
            .await
            .0,
        204
    );
    assert_eq!(
        s.laptop
            .post(&format!("/v1/calls/{id}/hangup"), json!({}))
            .await
            .0,
        403,
        "not the answering device"
    );
    assert_eq!(
        s.alice
            .post(&format!("/v1/calls/{id}/hangup"), json!({}))
            .await
            .0,
        204
    );
    for socket in [&mut s.alice_socket, &mut s.phone_socket] {
        let ended = socket.next_of("call.ended").await;
        assert_eq!(
            (ended["outcome"].as_str(), ended["call_id"].as_str()),
            (Some("answered"), Some(id.as_str()))
        );
    }
    let (_, active) = s.alice.get("/v1/calls/active").await;
    assert_eq!(active["calls"].as_array().unwrap().len(), 0);
    let calls = history(&s.phone).await;
    assert_eq!(calls[0]["id"], id.as_str());
    assert_eq!(calls[0]["outcome"], "answered");
    assert!(calls[0]["duration_secs"].is_i64());
    assert_eq!(
        s.alice
            .post(&format!("/v1/calls/{id}/hangup"), json!({}))
            .await
            .0,
        410
    );
}

#[tokio::test]
async fn two_devices_answering_at_once_one_wins() {
    let mut s = scene(|_| {}).await;
    let id = ring(&mut s).await;
    let path = format!("/v1/calls/{id}/accept");
    let (a, b) = tokio::join!(
        s.phone.post(&path, json!({})),
        s.laptop.post(&path, json!({}))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(
        s.alice.post(&path, json!({})).await.0,
        403,
        "the caller cannot answer"
    );
}

#[tokio::test]
async fn an_unanswered_call_expires_reaches_devices_that_come_back_and_cannot_be_accepted() {
    let server = TestServer::start(|config| {
        fast_calls(config);
        config.calls.ring_timeout_secs = 1;
    })
    .await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let mut alice_socket = alice.connect(None).await;
    alice_socket.next_of("ready").await;

    // Bob is offline while it rings.
    let (status, started) = call(&alice, &bob).await;
    assert_eq!(status, 201);
    let id = started["call_id"].as_str().unwrap().to_string();
    let expired = alice_socket.next_of("call.expired").await;
    assert_eq!(expired["call_id"], id.as_str());
    assert_eq!(
        bob.post(&format!("/v1/calls/{id}/accept"), json!({}))
            .await
            .0,
        410
    );

    // Back online, Bob replays the missed call.
    let mut bob_socket = bob.connect(Some(0)).await;
    let incoming = bob_socket.next_of("call.incoming").await;
    assert_eq!(incoming["call_id"], id.as_str());
    let missed = bob_socket.next_of("call.expired").await;
    assert_eq!(missed["call_id"], id.as_str());
    let calls = history(&bob).await;
    assert_eq!(calls[0]["outcome"], "missed");
}

#[tokio::test]
async fn reject_and_cancel() {
    let mut s = scene(|_| {}).await;
    let id = ring(&mut s).await;
    assert_eq!(
        s.alice
            .post(&format!("/v1/calls/{id}/reject"), json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        s.laptop
            .post(&format!("/v1/calls/{id}/reject"), json!({}))
            .await
            .0,
        204
    );
    assert_eq!(
        s.alice_socket.next_of("call.rejected").await["call_id"],
        id.as_str()
    );
    assert_eq!(
        s.phone_socket.next_of("call.rejected").await["call_id"],
        id.as_str()
    );
    assert_eq!(history(&s.alice).await[0]["outcome"], "rejected");

    let id = ring(&mut s).await;
    assert_eq!(
        s.phone
            .post(&format!("/v1/calls/{id}/cancel"), json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        s.alice
            .post(&format!("/v1/calls/{id}/cancel"), json!({}))
            .await
            .0,
        204
    );
    for socket in [&mut s.phone_socket, &mut s.laptop_socket] {
        assert_eq!(
            socket.next_of("call.cancelled").await["call_id"],
            id.as_str()
        );
    }
    assert_eq!(history(&s.phone).await[0]["outcome"], "cancelled");
}

#[tokio::test]
async fn a_callee_in_a_call_is_busy_and_only_friends_can_be_called() {
    let mut s = scene(|_| {}).await;
    let id = ring(&mut s).await;
    s.phone
        .post(&format!("/v1/calls/{id}/accept"), json!({}))
        .await;
    let carol = User::sign_in(&s.server, "carol").await;
    let (status, _) = call(&carol, &s.phone).await;
    assert_eq!(status, 403, "not a friend");
    befriend(&carol, &s.phone).await;
    let mut carol_socket = carol.connect(None).await;
    let (status, body) = call(&carol, &s.phone).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    assert_eq!(
        carol_socket.next_of("call.busy").await["callee"],
        s.phone.id.as_str()
    );
    assert_eq!(history(&carol).await[0]["outcome"], "busy");
    let (status, _) = call(&s.phone, &carol).await;
    assert_eq!(status, 409, "bob is already in a call");

    s.phone
        .post("/v1/blocks", json!({ "user_id": carol.id }))
        .await;
    assert_eq!(call(&carol, &s.phone).await.0, 403, "blocked");
}

#[tokio::test]
async fn glare_makes_one_call() {
    let mut s = scene(|_| {}).await;
    let id = ring(&mut s).await;
    let (status, started) = call(&s.phone, &s.alice).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["call_id"], id.as_str());
    assert_eq!(started["status"], "accepted");
    let accepted = s.alice_socket.next_of("call.accepted").await;
    assert_eq!(accepted["device"], s.phone.session().as_str());
    assert_eq!(
        s.laptop_socket.next_of("call.answered_elsewhere").await["call_id"],
        id.as_str()
    );
    let (_, active) = s.alice.get("/v1/calls/active").await;
    assert_eq!(active["calls"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_lost_device_ends_the_call_after_the_grace_period() {
    let mut s = scene(|_| {}).await;
    let id = ring(&mut s).await;
    s.phone
        .post(&format!("/v1/calls/{id}/accept"), json!({}))
        .await;
    s.alice_socket.next_of("call.accepted").await;
    s.phone_socket.close().await;
    let ended = s.alice_socket.next_of("call.ended").await;
    assert_eq!(ended["call_id"], id.as_str());
    assert_eq!(ended["outcome"], "failed");
    assert_eq!(ended["reason"], "the callee's device was lost");
}

#[tokio::test]
async fn a_device_that_comes_back_within_the_grace_keeps_the_call() {
    let mut s = scene(|config| config.calls.disconnect_grace_secs = 30).await;
    let id = ring(&mut s).await;
    s.phone
        .post(&format!("/v1/calls/{id}/accept"), json!({}))
        .await;
    s.phone_socket.close().await;
    let mut phone_again = s.phone.connect(None).await;
    phone_again.next_of("ready").await;
    let (_, active) = s.alice.get("/v1/calls/active").await;
    assert_eq!(active["calls"][0]["status"], "accepted");
}

#[tokio::test]
async fn signaling_reaches_only_the_other_device_byte_for_byte() {
    let mut s = scene(|_| {}).await;
    // Alice has a second device too; it is not the calling one.
    let alice_tablet = User::sign_in(&s.server, "alice").await;
    let mut tablet_socket = alice_tablet.connect(None).await;
    tablet_socket.next_of("ready").await;
    let id = ring(&mut s).await;
    // Odd spacing and escapes on purpose: the bytes must arrive as sent.
    let offer = r#"{"sdp":{"type":"offer","sdp":"v=0\r\na=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B\r\na=setup:actpass\u0000"}}"#;
    let candidate_1 = r#"{ "candidate" : {"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0"} }"#;
    let candidate_2 = r#"{"candidate":{"candidate":"candidate:2 1 udp 1686052607 127.0.0.1 50001 typ srflx","sdpMid":"0"}}"#;
    for payload in [offer, candidate_1, candidate_2] {
        s.alice_socket
            .send_text(&format!(
                r#"{{"type":"call.signal","call_id":"{id}","payload":{payload}}}"#
            ))
            .await;
    }
    // The callee cannot signal before answering.
    s.laptop_socket
        .send_text(&format!(
            r#"{{"type":"call.signal","call_id":"{id}","payload":{candidate_2}}}"#
        ))
        .await;
    assert_eq!(
        s.laptop_socket.next_of("error").await["error"]["code"],
        "forbidden"
    );

    s.phone
        .post(&format!("/v1/calls/{id}/accept"), json!({}))
        .await;
    // Buffered while ringing, delivered in order once the phone answered.
    for payload in [offer, candidate_1, candidate_2] {
        let text = loop {
            let text = s.phone_socket.next_text().await;
            if text.contains("\"call.signal\"") {
                break text;
            }
        };
        assert!(text.contains(&format!(r#""payload":{payload}"#)), "{text}");
        let event: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(event["from"], s.alice.session().as_str());
        assert!(event.get("seq").is_none(), "signaling is not stored");
    }
    let answer = r#"{"sdp":{"type":"answer","sdp":"v=0\r\na=fingerprint:sha-256 11:22:33\r\n"}}"#;
    s.phone_socket
        .send_text(&format!(
            r#"{{"type":"call.signal","call_id":"{id}","payload":{answer}}}"#
        ))
        .await;
    let text = loop {
        let text = s.alice_socket.next_text().await;
        if text.contains("\"call.signal\"") {
            break text;
        }
    };
    assert!(text.contains(&format!(r#""payload":{answer}"#)), "{text}");

    // Someone else's signal, a spoofed sender and bad payloads are refused.
    let carol = User::sign_in(&s.server, "carol").await;
    let mut carol_socket = carol.connect(None).await;
    carol_socket
        .send_text(&format!(
            r#"{{"type":"call.signal","call_id":"{id}","payload":{offer}}}"#
        ))
        .await;
    assert_eq!(
        carol_socket.next_of("error").await["error"]["code"],
        "forbidden"
    );
    s.laptop_socket
        .send_text(&format!(
            r#"{{"type":"call.signal","call_id":"{id}","from":"{}","payload":{offer}}}"#,
            s.phone.session()
        ))
        .await;
    assert_eq!(
        s.laptop_socket.next_of("error").await["error"]["code"],
        "bad_request"
    );
    s.alice_socket
        .send_text(&format!(
            r#"{{"type":"call.signal","call_id":"{id}","payload":{{"video":1}}}}"#
        ))
        .await;
    assert_eq!(
        s.alice_socket.next_of("error").await["error"]["code"],
        "bad_request"
    );
    let huge = format!(r#"{{"candidate":"{}"}}"#, "x".repeat(5000));
    s.alice_socket
        .send_text(&format!(
            r#"{{"type":"call.signal","call_id":"{id}","payload":{huge}}}"#
        ))
        .await;
    assert_eq!(
        s.alice_socket.next_of("error").await["error"]["code"],
        "payload_too_large"
    );

    // The laptop never saw any signaling: its next call event is the end.
    s.alice
        .post(&format!("/v1/calls/{id}/hangup"), json!({}))
        .await;
    loop {
        let event = s.laptop_socket.next_event().await;
        assert_ne!(event["type"], "call.signal", "{event}");
        if event["type"] == "call.ended" {
            break;
        }
    }
}

#[tokio::test]
async fn a_restart_ends_the_calls_that_were_ringing() {
    let mut s = scene(|_| {}).await;
    let id = ring(&mut s).await;
    let Scene {
        server,
        alice,
        phone,
        ..
    } = s;
    let data = server.stop_keeping_data().await;
    let server = TestServer::start_in(data, fast_calls).await;
    let alice = alice.on(&server);
    let phone = phone.on(&server);
    for user in [&alice, &phone] {
        let mut socket = user.connect(Some(0)).await;
        let ended = socket.next_of("call.ended").await;
        assert_eq!(ended["call_id"], id.as_str());
        assert_eq!(ended["outcome"], "failed");
        assert_eq!(ended["reason"], "the server restarted");
    }
    let (_, active) = phone.get("/v1/calls/active").await;
    assert_eq!(active["calls"].as_array().unwrap().len(), 0);
    assert_eq!(
        phone
            .post(&format!("/v1/calls/{id}/accept"), json!({}))
            .await
            .0,
        410
    );
    assert_eq!(history(&alice).await[0]["outcome"], "failed");
}
