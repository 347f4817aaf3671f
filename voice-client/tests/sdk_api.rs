//! The SDK against a real server started in this process on 127.0.0.1:0:
//! sign-in (dev and the browser loopback flow with the server's test OIDC
//! provider), token refresh, every REST endpoint, the event stream with
//! its reconnects, and signaling over the WebSocket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use voice_client::client::{SavedSession, Session};
use voice_client::events::{ClientEvent, Connection, ConnectionState, EventStream, EventsConfig};
use voice_client::login::{BrowserLogin, OpenUrl};
use voice_client::signaling::{
    IceCandidate, SdpKind, SessionDescription, Signal, SignalingTransport,
};
use voice_client::{Client, ClientError};
use voice_core::ErrorCode;
use voice_core::ids::UserId;
use voice_core::model::{CallOutcome, Conversation, FriendStatus, GroupRole, Message};
use voice_core::wire::{CallStatus, Event, Recipient, SendMessageRequest, ServerEvent};
use voice_server::Config;
use voice_server::config::OidcConfig;

// The server's tests own these harnesses; share them rather than copy.
#[allow(unused_imports)]
#[path = "../../voice-server/tests/common/mod.rs"]
mod common;

use common::TestServer;
use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, TestProvider, TestUser};

/// A bound on waiting for something that should happen, so a broken
/// build fails instead of hanging; not a timing assertion.
const WAIT: Duration = Duration::from_secs(10);

/// The server's test harness with the per-user message rate lifted: these
/// tests send many messages from one user.
async fn start_server(configure: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start(|config| {
        config.limits.messages_per_second = 1_000;
        config.limits.messages_burst = 1_000;
        configure(config);
    })
    .await
}

async fn signed_in(server: &TestServer, name: &str) -> Client {
    let client = Client::new(&server.url("")).unwrap();
    client.dev_login(name).await.unwrap();
    client
}

fn id(client: &Client) -> UserId {
    client.user().expect("signed in").id
}

async fn befriend(a: &Client, b: &Client) {
    a.send_friend_request(id(b)).await.unwrap();
    let accepted = b.accept_friend_request(id(a)).await.unwrap();
    assert_eq!(accepted.status, FriendStatus::Accepted);
}

/// The first event `pick` accepts, skipping others.
async fn wait_for<T>(
    stream: &mut EventStream,
    mut pick: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await {
                Some(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("the event came in time")
}

fn server_event(event: &ClientEvent) -> Option<&Event> {
    match event {
        ClientEvent::Server(ServerEvent { event, .. }) => Some(event),
        _ => None,
    }
}

fn created(event: &ClientEvent) -> Option<Message> {
    match server_event(event) {
        Some(Event::MessageCreated { message }) => Some(message.clone()),
        _ => None,
    }
}

fn connected(event: &ClientEvent) -> Option<u64> {
    match event {
        ClientEvent::Connected { latest_seq } => Some(*latest_seq),
        _ => None,
    }
}

fn api_code(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, ErrorCode) {
    match result {
        Err(ClientError::Api { status, error }) => (status, error.code),
        other => panic!("expected a server refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn dev_sign_in_friends_and_live_messages() {
    let server = start_server(|_| {}).await;
    let alice = Client::new(&server.url("")).unwrap();
    let session = alice.dev_login("alice").await.unwrap();
    assert_eq!(session.user.name.as_deref(), Some("alice"));
    assert!(session.session_id().is_some(), "the sid claim is readable");
    assert_eq!(alice.me().await.unwrap().id, session.user.id);
    let bob = signed_in(&server, "bob").await;

    let mut alice_events = alice.events().await.unwrap();
    let mut bob_events = bob.events().await.unwrap();
    wait_for(&mut alice_events, connected).await;
    wait_for(&mut bob_events, connected).await;

    let sent = alice.send_friend_request(id(&bob)).await.unwrap();
    assert_eq!(sent.status, FriendStatus::RequestSent);
    let from = wait_for(&mut bob_events, |event| match server_event(event) {
        Some(Event::FriendRequest { from }) => Some(from.id),
        _ => None,
    })
    .await;
    assert_eq!(from, id(&alice));
    let requests = bob.friend_requests().await.unwrap();
    assert_eq!(requests.incoming.len(), 1);
    assert_eq!(requests.incoming[0].user.id, id(&alice));
    bob.accept_friend_request(id(&alice)).await.unwrap();
    let friend = wait_for(&mut alice_events, |event| match server_event(event) {
        Some(Event::FriendAccepted { user }) => Some(user.id),
        _ => None,
    })
    .await;
    assert_eq!(friend, id(&bob));
    let friends = alice.friends().await.unwrap();
    assert_eq!(friends.friends.len(), 1);
    assert_eq!(friends.friends[0].user.id, id(&bob));

    let message = alice
        .send_message(Recipient::User(id(&bob)), "hi bob")
        .await
        .unwrap();
    assert!(message.client_id.is_some(), "sends are idempotent");
    let received = wait_for(&mut bob_events, created).await;
    assert_eq!(received.id, message.id);
    assert_eq!(received.body.as_deref(), Some("hi bob"));

    // A retry with the same client_id is the same message.
    let retry = alice
        .send_message_with(&SendMessageRequest {
            to: Recipient::User(id(&bob)),
            body: "something else".into(),
            client_id: message.client_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(retry.id, message.id);

    // Typing goes over the socket.
    alice_events
        .connection()
        .send_typing(message.conversation)
        .await
        .unwrap();
    let typist = wait_for(&mut bob_events, |event| match server_event(event) {
        Some(Event::Typing { user_id, .. }) => Some(*user_id),
        _ => None,
    })
    .await;
    assert_eq!(typist, id(&alice));

    let summary = &bob.conversations().await.unwrap().conversations[0];
    assert_eq!(summary.unread, 1);
    bob.mark_read(message.conversation, message.id)
        .await
        .unwrap();
    assert_eq!(
        bob.conversations().await.unwrap().conversations[0].unread,
        0
    );

    let tombstone = alice.delete_message(message.id).await.unwrap();
    assert!(tombstone.body.is_none() && tombstone.deleted_at.is_some());
    let deleted = wait_for(&mut bob_events, |event| match server_event(event) {
        Some(Event::MessageDeleted { message_id, .. }) => Some(*message_id),
        _ => None,
    })
    .await;
    assert_eq!(deleted, message.id);
    server.stop().await;
}

#[tokio::test]
async fn history_pages_walk_back_without_gaps() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    befriend(&alice, &bob).await;
    for n in 1..=5 {
        alice
            .send_message(Recipient::User(id(&bob)), format!("message {n}"))
            .await
            .unwrap();
    }
    let conversation = Conversation::direct(id(&alice), id(&bob));
    let mut seqs = Vec::new();
    let mut before = None;
    loop {
        let page = bob.history(conversation, before, Some(2)).await.unwrap();
        assert!(page.messages.len() <= 2);
        seqs.extend(page.messages.iter().map(|message| message.seq));
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seqs, vec![5, 4, 3, 2, 1]);
    let newest = bob.history(conversation, None, None).await.unwrap();
    assert_eq!(newest.messages[0].body.as_deref(), Some("message 5"));
}

#[tokio::test]
async fn server_refusals_keep_their_status_and_code() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let carol = signed_in(&server, "carol").await;

    let refused = alice
        .send_message(Recipient::User(id(&carol)), "hello stranger")
        .await;
    assert_eq!(api_code(refused), (403, ErrorCode::Forbidden));
    let conversation = Conversation::direct(id(&alice), id(&carol));
    assert_eq!(
        api_code(alice.history(conversation, None, Some(0)).await),
        (400, ErrorCode::BadRequest)
    );
    assert_eq!(
        api_code(alice.accept_friend_request(id(&carol)).await),
        (404, ErrorCode::NotFound)
    );
    assert_eq!(
        api_code(alice.search_users("c").await),
        (400, ErrorCode::BadRequest)
    );
    assert_eq!(
        api_code(
            Client::new(&server.url(""))
                .unwrap()
                .dev_login("Not Valid")
                .await
        ),
        (400, ErrorCode::BadRequest)
    );
    let error = alice.start_call(id(&carol)).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Forbidden));

    // Without a session nothing is even sent.
    let anonymous = Client::new(&server.url("")).unwrap();
    assert!(matches!(
        anonymous.me().await,
        Err(ClientError::NotSignedIn(_))
    ));
    assert!(matches!(
        anonymous.events().await,
        Err(ClientError::NotSignedIn(_))
    ));
    assert!(matches!(
        Client::new("ftp://example.com"),
        Err(ClientError::Protocol(_))
    ));
}

#[tokio::test]
async fn a_closed_port_is_unreachable_and_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    match client.dev_login("alice").await {
        Err(ClientError::Unreachable { url, reason }) => {
            assert_eq!(url, format!("http://127.0.0.1:{port}/v1/auth/dev-login"));
            assert!(!reason.is_empty());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(client.health().await.is_err());
}

#[tokio::test]
async fn access_tokens_refresh_ahead_of_expiry_once_for_concurrent_requests() {
    // With a 4 s lifetime the client refreshes from 2 s on, while the
    // token is still good: any refresh seen is a proactive one.
    let server = start_server(|config| config.auth.access_token_ttl_secs = 4).await;
    let alice = signed_in(&server, "alice").await;
    let first = alice.session().unwrap();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let saved = Arc::new(Mutex::new(None::<SavedSession>));
    {
        let refreshes = refreshes.clone();
        let saved = saved.clone();
        alice.on_session_change(move |session| {
            refreshes.fetch_add(1, Ordering::SeqCst);
            *saved.lock().unwrap() = session.cloned();
        });
    }

    alice.me().await.unwrap();
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        0,
        "fresh tokens are used as they are"
    );

    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let calls = (0..8).map(|_| {
        let alice = alice.clone();
        async move { alice.me().await }
    });
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.unwrap().id, first.user.id);
    }
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        1,
        "concurrent requests share one refresh"
    );
    let second = alice.session().unwrap();
    assert_ne!(second.access_token, first.access_token);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(second.access_expires_at > first.access_expires_at);
    let stored = saved
        .lock()
        .unwrap()
        .clone()
        .expect("the listener got the new session");
    assert_eq!(stored.refresh_token, second.refresh_token);
    assert_eq!(stored.server_url, server.url(""));
}

#[tokio::test]
async fn a_401_refreshes_and_retries_once_and_a_refused_refresh_signs_out() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let good = alice.session().unwrap();
    // Forget the original client: its refresh token is about to be spent.
    drop(alice);

    let stale = Client::with_session(
        &server.url(""),
        Session {
            access_token: "not-a-valid-token".into(),
            ..good.clone()
        },
    )
    .unwrap();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counter = refreshes.clone();
    stale.on_session_change(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(stale.me().await.unwrap().id, good.user.id);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_ne!(stale.session().unwrap().access_token, "not-a-valid-token");

    let ended = Arc::new(Mutex::new(false));
    let hopeless = Client::with_session(
        &server.url(""),
        Session {
            access_token: "not-a-valid-token".into(),
            refresh_token: "vrt_not-a-valid-token".into(),
            ..good
        },
    )
    .unwrap();
    let flag = ended.clone();
    hopeless.on_session_change(move |session| *flag.lock().unwrap() = session.is_none());
    assert!(matches!(
        hopeless.me().await,
        Err(ClientError::NotSignedIn(_))
    ));
    assert!(hopeless.session().is_none());
    assert!(*ended.lock().unwrap(), "the listener heard the session end");
}

#[tokio::test]
async fn saved_sessions_restore_a_device() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let saved = alice.saved_session().unwrap();
    let text = serde_json::to_string(&saved).unwrap();
    let saved: SavedSession = serde_json::from_str(&text).unwrap();
    assert!(
        !format!("{:?} {:?}", saved, alice.session().unwrap()).contains(&saved.refresh_token),
        "tokens stay out of Debug output"
    );
    drop(alice);

    let restored = Client::restore(&saved).await.unwrap();
    assert_eq!(restored.me().await.unwrap().name.as_deref(), Some("alice"));
    assert_ne!(
        restored.session().unwrap().refresh_token,
        saved.refresh_token,
        "restoring rotates the refresh token"
    );

    let bogus = SavedSession {
        refresh_token: "vrt_bogus".into(),
        ..saved
    };
    assert!(matches!(
        Client::restore(&bogus).await,
        Err(ClientError::NotSignedIn(_))
    ));
}

#[tokio::test]
async fn reconnects_resume_with_since_exactly_once() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    befriend(&alice, &bob).await;
    let to_bob = Recipient::User(id(&bob));

    let quick = EventsConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..EventsConfig::default()
    };
    let connection = bob.connect_events(quick).await.unwrap();
    let mut stream = connection.subscribe();
    tokio::time::timeout(WAIT, connection.wait_connected())
        .await
        .unwrap()
        .unwrap();

    // Closed, then reopened: what came meanwhile is replayed, before ready.
    connection.close().await;
    assert_eq!(connection.state(), ConnectionState::Closed);
    wait_for(&mut stream, |event| {
        (*event == ClientEvent::Closed).then_some(())
    })
    .await;
    assert!(stream.next().await.is_none());
    let mut offline = Vec::new();
    for n in 0..3 {
        offline.push(
            alice
                .send_message(to_bob, format!("while away {n}"))
                .await
                .unwrap()
                .id,
        );
    }
    let mut stream = bob.events().await.unwrap();
    let mut replayed = Vec::new();
    let latest = wait_for(&mut stream, |event| {
        if let Some(message) = created(event) {
            replayed.push(message.id);
        }
        connected(event)
    })
    .await;
    assert_eq!(replayed, offline);
    assert_eq!(Some(latest), bob.event_cursor());

    // Dropped again and again while messages keep coming, some of them
    // in the gap: each arrives once, in order. A burst right after each
    // drop lands while the socket is being reopened, so it comes back in
    // the replay (before `Connected`) rather than live.
    let connection = stream.connection().clone();
    let sender = {
        let alice = alice.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            for round in 0..6 {
                connection.force_reconnect();
                // Sequential, so the server's seqs follow the bodies.
                for n in 0..5 {
                    alice
                        .send_message(to_bob, format!("live {}", round * 5 + n))
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let expected: Vec<String> = (0..30).map(|n| format!("live {n}")).collect();
    let mut bodies = Vec::new();
    let mut reconnects = 0;
    let mut connects = 0;
    let mut replayed = 0;
    let mut between = false;
    tokio::time::timeout(WAIT, async {
        while bodies.len() < expected.len() {
            match stream.next().await.expect("the stream goes on") {
                ClientEvent::Reconnecting { .. } => {
                    reconnects += 1;
                    between = true;
                }
                ClientEvent::Connected { .. } => {
                    connects += 1;
                    between = false;
                }
                event => {
                    if let Some(message) = created(&event) {
                        replayed += usize::from(between);
                        bodies.push(message.body.unwrap_or_default());
                    }
                }
            }
        }
    })
    .await
    .expect("every message arrived in time");
    sender.await.unwrap();
    // Anything repeated would come right after.
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), stream.next()).await
    {
        if let Some(message) = created(&event) {
            bodies.push(message.body.unwrap_or_default());
        }
    }
    // A reopen takes a ticket request and a handshake, a send one
    // request: in six rounds some sends always win (six of six here).
    assert!(replayed >= 1, "some messages came through `since`");
    assert_eq!(bodies, expected);
    assert!(reconnects >= 1, "the socket was dropped");
    assert!(connects >= 1, "and came back");
    server.stop().await;
}

#[tokio::test]
async fn ending_the_session_ends_the_stream() {
    let server = start_server(|_| {}).await;
    let bob = signed_in(&server, "bob").await;
    let mut stream = bob.events().await.unwrap();
    wait_for(&mut stream, connected).await;
    bob.logout().await.unwrap();
    let reason = wait_for(&mut stream, |event| match event {
        ClientEvent::SessionEnded { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("signed out"), "{reason}");
    assert!(stream.next().await.is_none());
    assert_eq!(stream.connection().state(), ConnectionState::SessionEnded);
    assert!(matches!(bob.me().await, Err(ClientError::NotSignedIn(_))));
    assert!(matches!(
        stream
            .connection()
            .send_typing(Conversation::direct(UserId::new(), UserId::new()))
            .await,
        Err(ClientError::SignalingClosed(_))
    ));
}

#[tokio::test]
async fn groups_calls_blocks_and_the_rest_of_the_api() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    let carol = signed_in(&server, "carol").await;
    befriend(&alice, &bob).await;
    befriend(&alice, &carol).await;

    assert_eq!(alice.health().await.unwrap().status, "ok");
    let found = alice.search_users("bo").await.unwrap();
    assert_eq!(found.users[0].id, id(&bob));
    assert!(
        alice
            .find_user_by_email("bob@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(alice.ws_ticket().await.unwrap().ticket.starts_with("vwt_"));
    alice.ice_servers().await.unwrap();
    assert_eq!(
        api_code(alice.admin_stun_servers().await),
        (403, ErrorCode::Forbidden)
    );

    // Groups.
    let view = alice.create_group("Climbing", &[id(&bob)]).await.unwrap();
    let group = view.group.id;
    assert_eq!(view.members.len(), 2);
    assert_eq!(alice.groups().await.unwrap().groups[0].id, group);
    assert_eq!(
        alice
            .rename_group(group, "Climbing club")
            .await
            .unwrap()
            .name,
        "Climbing club"
    );
    assert_eq!(bob.group(group).await.unwrap().group.name, "Climbing club");
    let member = alice
        .add_group_member(group, id(&carol), GroupRole::Admin)
        .await
        .unwrap();
    assert_eq!(member.role, GroupRole::Admin);
    assert_eq!(alice.group_members(group).await.unwrap().len(), 3);
    alice
        .send_message(Recipient::Group(group), "hello club")
        .await
        .unwrap();
    alice.remove_group_member(group, id(&carol)).await.unwrap();
    bob.leave_group(group).await.unwrap();
    assert_eq!(api_code(bob.group(group).await), (404, ErrorCode::NotFound));
    assert_eq!(
        api_code(alice.leave_group(group).await),
        (409, ErrorCode::Conflict)
    );

    // Requests withdrawn and declined, friendship ended, blocks.
    alice.remove_friend(id(&carol)).await.unwrap();
    alice.send_friend_request(id(&carol)).await.unwrap();
    alice.cancel_friend_request(id(&carol)).await.unwrap();
    alice.send_friend_request(id(&carol)).await.unwrap();
    carol.decline_friend_request(id(&alice)).await.unwrap();
    assert!(alice.friend_requests().await.unwrap().outgoing.is_empty());
    alice.block(id(&carol)).await.unwrap();
    assert_eq!(alice.blocks().await.unwrap().blocked, vec![id(&carol)]);
    alice.unblock(id(&carol)).await.unwrap();
    assert_eq!(
        api_code(alice.unblock(id(&carol)).await),
        (404, ErrorCode::NotFound)
    );

    // Calls: cancelled, rejected, answered.
    let call = alice.start_call(id(&bob)).await.unwrap();
    assert_eq!(call.status, CallStatus::Ringing);
    let active = bob.active_calls().await.unwrap();
    assert_eq!(active.calls[0].call_id, call.call_id);
    alice.cancel_call(call.call_id).await.unwrap();
    let call = alice.start_call(id(&bob)).await.unwrap();
    bob.reject_call(call.call_id).await.unwrap();
    let call = alice.start_call(id(&bob)).await.unwrap();
    let answered = bob.accept_call(call.call_id).await.unwrap();
    assert_eq!(answered.status, CallStatus::Accepted);
    assert_eq!(answered.callee_device, bob.session_id());
    alice.call_connected(call.call_id).await.unwrap();
    alice.hangup_call(call.call_id).await.unwrap();
    assert_eq!(
        api_code(alice.hangup_call(call.call_id).await),
        (410, ErrorCode::Gone)
    );
    let history = alice.call_history(None, Some(10)).await.unwrap();
    let outcomes: Vec<_> = history
        .calls
        .iter()
        .map(|entry| entry.record.outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![
            Some(CallOutcome::Answered),
            Some(CallOutcome::Rejected),
            Some(CallOutcome::Cancelled)
        ]
    );
    let older = alice
        .call_history(Some(history.calls[0].record.started_at), Some(10))
        .await
        .unwrap();
    assert_eq!(older.calls.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn signaling_over_the_websocket() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    befriend(&alice, &bob).await;
    let alice_signaling = alice.signaling().await.unwrap();
    let mut bob_events = bob.events().await.unwrap();
    let bob_signaling = bob_events.connection().signaling();
    for connection in [alice_signaling.connection(), bob_signaling.connection()] {
        tokio::time::timeout(WAIT, connection.wait_connected())
            .await
            .unwrap()
            .unwrap();
    }

    let call = alice.start_call(id(&bob)).await.unwrap().call_id;
    let offer = Signal::Sdp(SessionDescription {
        kind: SdpKind::Offer,
        sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 AB:CD\r\n".into(),
    });
    // Sent while it rings: the server holds it for the answering device,
    // and bob's SDK holds it until bob subscribes.
    alice_signaling.send(call, offer.clone()).await.unwrap();
    // The right shape for the server, but not a signal: skipped by bob.
    alice_signaling
        .connection()
        .send_raw(format!(
            r#"{{"type":"call.signal","call_id":"{call}","payload":{{"sdp":5}}}}"#
        ))
        .await
        .unwrap();
    bob.accept_call(call).await.unwrap();
    for _ in 0..2 {
        wait_for(&mut bob_events, |event| match server_event(event) {
            Some(Event::CallSignal { call_id, .. }) => (*call_id == call).then_some(()),
            _ => None,
        })
        .await;
    }
    let mut at_bob = bob_signaling.subscribe(call);
    assert_eq!(at_bob.recv().await.unwrap(), offer);
    assert!(at_bob.try_recv().is_err(), "the malformed one was skipped");

    let mut at_alice = alice_signaling.subscribe(call);
    let answer = Signal::Sdp(SessionDescription {
        kind: SdpKind::Answer,
        sdp: "v=0\r\n".into(),
    });
    let candidate = Signal::Candidate(Some(IceCandidate {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    }));
    for signal in [answer.clone(), candidate.clone(), Signal::Candidate(None)] {
        bob_signaling.send(call, signal).await.unwrap();
    }
    for expected in [answer, candidate, Signal::Candidate(None)] {
        let got = tokio::time::timeout(WAIT, at_alice.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, expected);
    }
    alice_signaling.unsubscribe(call);
    alice.hangup_call(call).await.unwrap();
    server.stop().await;
}

/// Plays the browser: follows every redirect from the sign-in page to the
/// loopback listener, after poking the listener with requests that must
/// not count. Returns what it saw, for the test to check.
fn browser() -> (OpenUrl, tokio::sync::oneshot::Receiver<Vec<(String, u16)>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let open = OpenUrl::Custom(Box::new(move |url: &str| {
        let url = url.to_string();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let redirect_uri = url::Url::parse(&url)
                .unwrap()
                .query_pairs()
                .find(|(key, _)| key == "redirect_uri")
                .map(|(_, value)| value.into_owned())
                .unwrap();
            let mut seen = Vec::new();
            for probe in [
                format!("{redirect_uri}?code=vlc_forged&state=not-the-state"),
                redirect_uri.replace("/callback", "/favicon.ico"),
            ] {
                let status = http.get(&probe).send().await.unwrap().status().as_u16();
                seen.push((probe, status));
            }
            let page = http.get(&url).send().await.unwrap();
            let status = page.status().as_u16();
            let text = page.text().await.unwrap();
            seen.push((text, status));
            let _ = tx.send(seen);
        });
        Ok(())
    }));
    (open, rx)
}

#[tokio::test]
async fn browser_sign_in_through_the_loopback_redirect() {
    let provider = TestProvider::start().await;
    let issuer = provider.issuer();
    let server = start_server(move |config| {
        config.auth.oidc = Some(OidcConfig {
            issuer_url: issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            ..OidcConfig::default()
        });
        config.auth.open_registration = true;
    })
    .await;

    let alice = Client::new(&server.url("")).unwrap();
    let (open, seen) = browser();
    let session = alice
        .browser_login(BrowserLogin {
            timeout: WAIT,
            open,
        })
        .await
        .unwrap();
    assert_eq!(session.user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.me().await.unwrap().id, session.user.id);
    let seen = seen.await.unwrap();
    assert_eq!(seen[0].1, 400, "a redirect with the wrong state is refused");
    assert_eq!(seen[1].1, 404);
    assert_eq!(seen[2].1, 200);
    assert!(seen[2].0.contains("close this tab"), "{}", seen[2].0);

    // A second user, then a friend request by email address.
    provider.sign_in_as(TestUser::new("bob-sub", "bob@example.com"));
    let bob = Client::new(&server.url("")).unwrap();
    let (open, _) = browser();
    bob.browser_login(BrowserLogin {
        timeout: WAIT,
        open,
    })
    .await
    .unwrap();
    let asked = alice
        .send_friend_request_by_email("BOB@example.com")
        .await
        .unwrap()
        .expect("bob is found by his address");
    assert_eq!(asked.user_id, id(&bob));
    assert_eq!(asked.status, FriendStatus::RequestSent);
    assert!(
        alice
            .send_friend_request_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // Dev sign-in is off next to a provider.
    assert_eq!(
        api_code(Client::new(&server.url("")).unwrap().dev_login("eve").await),
        (404, ErrorCode::NotFound)
    );
}

#[tokio::test]
async fn a_browser_that_never_comes_back_times_out() {
    let server = start_server(|_| {}).await;
    let client = Client::new(&server.url("")).unwrap();
    let pending = client
        .start_browser_login(Duration::from_millis(200))
        .await
        .unwrap();
    assert!(pending.redirect_uri().starts_with("http://127.0.0.1:"));
    assert!(pending.url().contains("code_challenge_method=S256"));
    assert!(matches!(
        pending.finish().await,
        Err(ClientError::SignIn(_))
    ));
    assert!(!client.is_signed_in());
}

// ---- messages over the event WebSocket (`Connection::send_message`) ----

async fn up(connection: &Connection) {
    tokio::time::timeout(WAIT, connection.wait_connected())
        .await
        .expect("connected in time")
        .expect("connected");
}

/// The `message.created` events `stream` yields up to and including the
/// one for `marker`, which was sent after everything the test looks for:
/// a device gets its stored events in `seq` order, so anything sent
/// earlier (or an answer frame written earlier) comes before it.
async fn until_marker(stream: &mut EventStream, marker: &str) -> Vec<ClientEvent> {
    let mut seen = Vec::new();
    wait_for(stream, |event| {
        seen.push(event.clone());
        created(event)
            .filter(|message| message.body.as_deref() == Some(marker))
            .map(drop)
    })
    .await;
    seen
}

fn created_ids(events: &[ClientEvent]) -> Vec<voice_core::ids::MessageId> {
    events
        .iter()
        .filter_map(created)
        .map(|message| message.id)
        .collect()
}

/// A refusal as (status, code, message), to compare the two paths.
fn refusal(result: Result<Message, ClientError>) -> (u16, ErrorCode, String) {
    match result {
        Err(ClientError::Api { status, error }) => (status, error.code, error.message),
        other => panic!("expected a server refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn socket_sends_are_pipelined_and_each_caller_gets_its_own_answer() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    befriend(&alice, &bob).await;
    let connection = alice.connection().await.unwrap();
    let mut alice_events = connection.subscribe();
    let mut bob_events = bob.events().await.unwrap();
    up(&connection).await;
    up(bob_events.connection()).await;

    // Without a session the HTTP path fails (NotSignedIn) while the open
    // socket stays up: every send below can only succeed over the socket.
    let alice_id = id(&alice);
    alice.forget_session();
    let to_bob = Recipient::User(id(&bob));
    let bodies: Vec<String> = (0..20).map(|n| format!("pipelined {n}")).collect();
    let sent = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| connection.send_message(to_bob, body.clone())),
    )
    .await;
    let sent: Vec<Message> = sent
        .into_iter()
        .map(|result| result.expect("sent over the socket"))
        .collect();
    for (message, body) in sent.iter().zip(&bodies) {
        assert_eq!(message.body.as_deref(), Some(body.as_str()));
        assert_eq!(message.sender, alice_id);
        assert!(message.client_id.is_some(), "sends are idempotent");
    }
    let mut ids: Vec<_> = sent.iter().map(|message| message.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every call got its own message");
    // The server handles one device's sends in order.
    let seqs: Vec<u64> = sent.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());

    // Bob's device gets each exactly once; the marker comes after them all.
    bob.send_message(Recipient::User(alice_id), "marker")
        .await
        .unwrap();
    let mut at_bob = created_ids(&until_marker(&mut bob_events, "marker").await);
    at_bob.pop();
    at_bob.sort();
    assert_eq!(at_bob, ids);

    // Alice's stream got the stored events, but the answers went to their
    // callers only.
    let at_alice = until_marker(&mut alice_events, "marker").await;
    let mut stored = created_ids(&at_alice);
    stored.pop();
    stored.sort();
    assert_eq!(stored, ids);
    assert!(
        !at_alice.iter().any(|event| matches!(
            server_event(event),
            Some(Event::MessageSent { .. } | Event::Error { .. })
        )),
        "answers are not stream events: {at_alice:?}"
    );

    let history = bob
        .history(sent[0].conversation, None, Some(100))
        .await
        .unwrap();
    let mut stored: Vec<_> = history
        .messages
        .iter()
        .filter(|message| message.sender == alice_id)
        .map(|message| message.id)
        .collect();
    stored.sort();
    assert_eq!(stored, ids);
    server.stop().await;
}

#[tokio::test]
async fn socket_refusals_are_the_errors_http_gives() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    let carol = signed_in(&server, "carol").await;
    befriend(&alice, &bob).await;
    let connection = alice.connection().await.unwrap();
    let mut alice_events = connection.subscribe();
    up(&connection).await;

    let requests = [
        // Not a friend: 403.
        SendMessageRequest {
            to: Recipient::User(id(&carol)),
            body: "hello stranger".into(),
            client_id: Some("stranger-1".into()),
        },
        // Over limits.max_message_bytes (16 KiB), but the frame is within
        // the socket's limit: refused by the shared send path, 413.
        SendMessageRequest {
            to: Recipient::User(id(&bob)),
            body: "x".repeat(20_000),
            client_id: None,
        },
        // A frame over the socket's 64 KiB would close the socket: it goes
        // over HTTP, refused there.
        SendMessageRequest {
            to: Recipient::User(id(&bob)),
            body: "x".repeat(70_000),
            client_id: Some("huge-1".into()),
        },
    ];
    let mut over_socket = Vec::new();
    for request in &requests {
        let socket = refusal(connection.send_message_with(request).await);
        let http = refusal(alice.send_message_with(request).await);
        assert_eq!(socket, http, "{:?}", request.to);
        over_socket.push((socket.0, socket.1));
    }
    assert_eq!(
        over_socket,
        vec![
            (403, ErrorCode::Forbidden),
            (413, ErrorCode::PayloadTooLarge),
            (413, ErrorCode::PayloadTooLarge),
        ]
    );

    // The socket stayed up through all of it, and the refusals answered
    // their callers without showing up as stream events.
    connection
        .send_message(Recipient::User(id(&bob)), "marker")
        .await
        .unwrap();
    let seen = until_marker(&mut alice_events, "marker").await;
    assert!(
        !seen.iter().any(|event| matches!(
            event,
            ClientEvent::Reconnecting { .. }
                | ClientEvent::Server(ServerEvent {
                    event: Event::Error { .. } | Event::MessageSent { .. },
                    ..
                })
        )),
        "{seen:?}"
    );
    assert_eq!(connection.state(), ConnectionState::Connected);
    server.stop().await;
}

#[tokio::test]
async fn sends_while_the_socket_is_down_go_over_http_once() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    befriend(&alice, &bob).await;
    let mut bob_events = bob.events().await.unwrap();
    up(bob_events.connection()).await;
    let to_bob = Recipient::User(id(&bob));

    // Before the first connect is through (nothing has run yet on this
    // single-threaded runtime), then after close().
    let connection = alice.connection().await.unwrap();
    assert_eq!(connection.state(), ConnectionState::Connecting);
    let early = connection.send_message(to_bob, "before").await.unwrap();
    up(&connection).await;
    connection.close().await;
    assert_eq!(connection.state(), ConnectionState::Closed);
    let late = connection
        .send_message(to_bob, "after close")
        .await
        .unwrap();
    assert_ne!(early.id, late.id);
    assert_eq!(late.body.as_deref(), Some("after close"));
    assert!(late.client_id.is_some());

    bob.send_message(Recipient::User(id(&alice)), "marker")
        .await
        .unwrap();
    let received = created_ids(&until_marker(&mut bob_events, "marker").await);
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(&received[..2], &[early.id, late.id]);
    let history = bob.history(late.conversation, None, None).await.unwrap();
    assert_eq!(history.messages.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn one_client_id_over_the_socket_and_over_http_is_one_message() {
    let server = start_server(|_| {}).await;
    let alice = signed_in(&server, "alice").await;
    let bob = signed_in(&server, "bob").await;
    befriend(&alice, &bob).await;
    let connection = alice.connection().await.unwrap();
    up(&connection).await;
    let request = |client_id: &str, body: &str| SendMessageRequest {
        to: Recipient::User(id(&bob)),
        body: body.into(),
        client_id: Some(client_id.into()),
    };

    let over_socket = connection
        .send_message_with(&request("dup-1", "first"))
        .await
        .unwrap();
    let over_http = alice
        .send_message_with(&request("dup-1", "retried"))
        .await
        .unwrap();
    assert_eq!(over_http, over_socket);
    assert_eq!(over_http.body.as_deref(), Some("first"));

    // And the other way round.
    let over_http = alice
        .send_message_with(&request("dup-2", "second"))
        .await
        .unwrap();
    let over_socket = connection
        .send_message_with(&request("dup-2", "retried"))
        .await
        .unwrap();
    assert_eq!(over_socket, over_http);

    let history = alice
        .history(over_http.conversation, None, None)
        .await
        .unwrap();
    let bodies: Vec<_> = history
        .messages
        .iter()
        .map(|message| message.body.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(bodies, vec!["second", "first"]);
    server.stop().await;
}

/// A TCP proxy in front of the server that can hold back what the server
/// sends and cut every connection: "the server got the frame, its answer
/// never arrived", on demand.
struct Proxy {
    addr: SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, _) = tokio::sync::watch::channel(false);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let hold = hold.clone();
            let connections = connections.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let task = tokio::spawn(relay(client, server, hold.subscribe()));
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            hold,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// While held, bytes from the server wait in the proxy.
    fn hold(&self, held: bool) {
        self.hold.send_replace(held);
    }

    /// Drops every connection, with whatever was held back.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut hold: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if hold.wait_for(|held| !*held).await.is_err()
                || client_write.write_all(&buffer[..n]).await.is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

#[tokio::test]
async fn a_socket_lost_before_the_answer_falls_back_with_the_same_client_id() {
    let server = start_server(|_| {}).await;
    let proxy = Proxy::start(server.addr).await;
    // Alice reaches the server only through the proxy, bob directly.
    let alice = Client::new(&proxy.url()).unwrap();
    alice.dev_login("alice").await.unwrap();
    let bob = signed_in(&server, "bob").await;
    befriend(&alice, &bob).await;
    let connection = alice
        .connect_events(EventsConfig {
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..EventsConfig::default()
        })
        .await
        .unwrap();
    let mut bob_events = bob.events().await.unwrap();
    up(&connection).await;
    up(bob_events.connection()).await;
    let to_bob = Recipient::User(id(&bob));

    // Stored, answered, but the answer is held back and the socket cut.
    proxy.hold(true);
    let send = tokio::spawn({
        let connection = connection.clone();
        async move { connection.send_message(to_bob, "in the gap").await }
    });
    let stored = wait_for(&mut bob_events, created).await;
    assert_eq!(stored.body.as_deref(), Some("in the gap"));
    proxy.cut();
    proxy.hold(false);
    let sent = tokio::time::timeout(WAIT, send)
        .await
        .expect("answered in time")
        .unwrap()
        .expect("sent again over HTTP");
    assert_eq!(sent, stored, "the retry returned the stored message");

    // Without a client_id nothing is retried: the outcome is unknown.
    up(&connection).await;
    proxy.hold(true);
    let send = tokio::spawn({
        let connection = connection.clone();
        async move {
            connection
                .send_message_with(&SendMessageRequest {
                    to: to_bob,
                    body: "no client id".into(),
                    client_id: None,
                })
                .await
        }
    });
    let stored_too = wait_for(&mut bob_events, created).await;
    assert_eq!(stored_too.body.as_deref(), Some("no client id"));
    proxy.cut();
    proxy.hold(false);
    match tokio::time::timeout(WAIT, send).await.unwrap().unwrap() {
        Err(ClientError::Unreachable { reason, .. }) => {
            assert!(reason.contains("may or may not"), "{reason}");
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }

    // Each was stored and delivered exactly once.
    bob.send_message(Recipient::User(id(&alice)), "marker")
        .await
        .unwrap();
    let later = created_ids(&until_marker(&mut bob_events, "marker").await);
    assert_eq!(later.len(), 1, "nothing came twice: {later:?}");
    let history = bob.history(sent.conversation, None, None).await.unwrap();
    let bodies: Vec<_> = history
        .messages
        .iter()
        .map(|message| message.body.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(bodies, vec!["marker", "no client id", "in the gap"]);
    server.stop().await;
}
