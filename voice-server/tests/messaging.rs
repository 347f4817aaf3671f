//! Friends, direct and group messages, and events over real WebSockets
//! against a real server on loopback.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use common::client::{Ended, User, befriend, direct_conversation};
use serde_json::{Value, json};
use time::OffsetDateTime;
use voice_core::UserId;
use voice_core::store::EventStore;
use voice_core::wire::Event;
use voice_store::{SqliteOptions, SqliteStore};

async fn server() -> TestServer {
    TestServer::start(|config| {
        // The tests send in bursts; the rate limit has its own test.
        config.limits.messages_per_second = 10_000;
        config.limits.messages_burst = 10_000;
    })
    .await
}

fn seq(event: &Value) -> u64 {
    event["seq"].as_u64().expect("a stored event has a seq")
}

#[tokio::test]
async fn friend_requests_search_and_the_friends_list() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    let mut bob_socket = bob.connect(None).await;

    let (status, found) = alice.get("/v1/users?q=bo").await;
    assert_eq!(status, 200);
    assert_eq!(found["users"][0]["id"], bob.id.as_str());
    assert_eq!(alice.get("/v1/users?q=b").await.0, 400, "too short a query");

    let (status, body) = alice
        .post("/v1/friends/requests", json!({ "user_id": bob.id }))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (201, Some("request_sent"))
    );
    let request = bob_socket.next_of("friend.request").await;
    assert_eq!(request["from"]["id"], alice.id.as_str());
    let (_, requests) = bob.get("/v1/friends/requests").await;
    assert_eq!(requests["incoming"][0]["user"]["id"], alice.id.as_str());
    let (_, requests) = alice.get("/v1/friends/requests").await;
    assert_eq!(requests["outgoing"][0]["user"]["id"], bob.id.as_str());

    let (status, _) = bob
        .post(
            &format!("/v1/friends/requests/{}/accept", alice.id),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let accepted = bob_socket.next_of("friend.accepted").await;
    assert_eq!(accepted["user"]["id"], alice.id.as_str());

    let (_, friends) = alice.get("/v1/friends").await;
    let bob_entry = &friends["friends"][0];
    assert_eq!(bob_entry["user"]["id"], bob.id.as_str());
    assert_eq!(bob_entry["presence"]["online"], true, "bob is connected");

    bob_socket.close().await;
    let (status, _) = alice.delete(&format!("/v1/friends/{}", bob.id)).await;
    assert_eq!(status, 204);
    let (_, friends) = alice.get("/v1/friends").await;
    assert_eq!(friends["friends"].as_array().unwrap().len(), 0);

    // Declining and cancelling.
    alice
        .post("/v1/friends/requests", json!({ "user_id": bob.id }))
        .await;
    let (status, _) = bob
        .post(
            &format!("/v1/friends/requests/{}/decline", alice.id),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    alice
        .post("/v1/friends/requests", json!({ "user_id": bob.id }))
        .await;
    let (status, _) = alice
        .delete(&format!("/v1/friends/requests/{}", bob.id))
        .await;
    assert_eq!(status, 204);
    let (_, requests) = bob.get("/v1/friends/requests").await;
    assert_eq!(requests["incoming"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn presence_follows_connections() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let mut alice_socket = alice.connect(None).await;
    let bob_socket = bob.connect(None).await;
    let online = alice_socket.next_of("presence.changed").await;
    assert_eq!(
        (
            online["user_id"].as_str(),
            online["presence"]["online"].as_bool()
        ),
        (Some(bob.id.as_str()), Some(true))
    );
    bob_socket.close().await;
    let offline = alice_socket.next_of("presence.changed").await;
    assert_eq!(offline["presence"]["online"], false);
    assert!(offline["presence"]["last_seen_at"].is_string());
    let (_, friends) = alice.get("/v1/friends").await;
    assert_eq!(friends["friends"][0]["presence"]["online"], false);
    assert!(friends["friends"][0]["presence"]["last_seen_at"].is_string());
}

#[tokio::test]
async fn a_direct_message_reaches_every_device_of_both_users() {
    let server = server().await;
    let [alice, bob_phone, bob_laptop] = User::sign_in_all(&server, ["alice", "bob", "bob"]).await;
    befriend(&alice, &bob_phone).await;
    let mut phone = bob_phone.connect(None).await;
    let mut laptop = bob_laptop.connect(None).await;
    let mut alice_socket = alice.connect(None).await;

    let sent = alice.message(&bob_phone, "hello bob").await;
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["body"], "hello bob");
    for socket in [&mut phone, &mut laptop, &mut alice_socket] {
        let event = socket.next_of("message.created").await;
        assert_eq!(event["message"]["id"], sent["id"]);
        assert_eq!(event["message"]["body"], "hello bob");
        assert_eq!(event["v"], 1);
    }

    let (_, conversations) = bob_phone.get("/v1/conversations").await;
    let summary = &conversations["conversations"][0];
    assert_eq!(summary["unread"], 1);
    assert_eq!(summary["last_message"]["id"], sent["id"]);
    let conversation = summary["conversation"].as_str().unwrap().to_string();
    let (status, _) = bob_phone
        .post(
            &format!("/v1/conversations/{conversation}/read"),
            json!({ "message_id": sent["id"] }),
        )
        .await;
    assert_eq!(status, 204);
    let (_, conversations) = bob_laptop.get("/v1/conversations").await;
    assert_eq!(conversations["conversations"][0]["unread"], 0);
}

/// Sends `request` (a whole HTTP/1.1 request) and hangs up before the
/// answer, between the server queueing the request's write and its
/// commit: another connection holds the database's write lock meanwhile,
/// long enough for the server to queue the write and then to drop the
/// request's future when it sees the hang-up. Then the write commits.
async fn send_and_hang_up_before_the_commit(server: &TestServer, request: String) {
    use tokio::io::AsyncWriteExt;
    let lock = rusqlite::Connection::open(server.data_dir.path().join("voice.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tcp.shutdown().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    lock.execute_batch("COMMIT").unwrap();
}

/// A `method` request to `path` as `user` with a JSON `body`, as raw
/// HTTP/1.1.
fn raw_request(server: &TestServer, user: &User, method: &str, path: &str, body: &Value) -> String {
    let body = body.to_string();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        server.addr,
        user.token,
        body.len()
    )
}

/// A write queued before its sender hangs up commits anyway; its events
/// must then go out live too, not wait for a later event or a reconnect
/// to bring them.
#[tokio::test]
async fn a_send_or_delete_whose_client_hangs_up_still_goes_out_live() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let mut socket = bob.connect(None).await;
    socket.next_of("ready").await;

    for i in 0..3 {
        let body = json!({ "to": { "user": bob.id }, "body": format!("gone {i}") });
        let request = raw_request(&server, &alice, "POST", "/v1/messages", &body);
        send_and_hang_up_before_the_commit(&server, request).await;
        let event = socket.next_stored().await;
        assert_eq!(event["type"], "message.created");
        assert_eq!(event["message"]["body"], format!("gone {i}"));
    }

    let sent = alice.message(&bob, "to delete").await;
    socket.next_of("message.created").await;
    let path = format!("/v1/messages/{}", sent["id"].as_str().unwrap());
    let request = raw_request(&server, &alice, "DELETE", &path, &json!({}));
    send_and_hang_up_before_the_commit(&server, request).await;
    let event = socket.next_stored().await;
    assert_eq!(event["type"], "message.deleted");
    assert_eq!(event["message_id"], sent["id"]);
}

#[tokio::test]
async fn only_friends_can_message_and_blocks_stop_everything() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    let body = json!({ "to": { "user": bob.id }, "body": "hi" });
    let (status, error) = alice.post("/v1/messages", body.clone()).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    befriend(&alice, &bob).await;
    assert_eq!(alice.post("/v1/messages", body.clone()).await.0, 201);
    let (status, _) = bob.post("/v1/blocks", json!({ "user_id": alice.id })).await;
    assert_eq!(status, 204);
    assert_eq!(alice.post("/v1/messages", body.clone()).await.0, 403);
    let (status, _) = alice
        .post("/v1/friends/requests", json!({ "user_id": bob.id }))
        .await;
    assert_eq!(status, 403, "a blocked user cannot ask again");
    let (_, blocks) = bob.get("/v1/blocks").await;
    assert_eq!(blocks["blocked"][0], alice.id.as_str());
    assert_eq!(bob.delete(&format!("/v1/blocks/{}", alice.id)).await.0, 204);
    assert_eq!(
        alice.post("/v1/messages", body).await.0,
        403,
        "unblocked is not befriended"
    );
    assert_eq!(
        alice
            .post("/v1/friends/requests", json!({ "user_id": bob.id }))
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn an_idempotent_retry_makes_no_duplicate() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let mut bob_socket = bob.connect(None).await;
    let body = json!({ "to": { "user": bob.id }, "body": "once", "client_id": "c-1" });
    let (first_status, first) = alice.post("/v1/messages", body.clone()).await;
    let (retry_status, retry) = alice.post("/v1/messages", body).await;
    assert_eq!((first_status, retry_status), (201, 200));
    assert_eq!(first, retry);
    let later = alice.message(&bob, "later").await;

    assert_eq!(
        bob_socket.next_of("message.created").await["message"]["id"],
        first["id"]
    );
    // The next message event is the later message: the retry delivered nothing.
    assert_eq!(
        bob_socket.next_of("message.created").await["message"]["id"],
        later["id"]
    );
    let (_, conversations) = bob.get("/v1/conversations").await;
    let conversation = conversations["conversations"][0]["conversation"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, page) = bob
        .get(&format!("/v1/conversations/{conversation}/messages"))
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn messages_sent_over_the_socket_are_acknowledged_after_commit() {
    let server = server().await;
    let [alice, alice_laptop, bob, carol] =
        User::sign_in_all(&server, ["alice", "alice", "bob", "carol"]).await;
    befriend(&alice, &bob).await;
    let mut alice_socket = alice.connect(None).await;
    let mut laptop = alice_laptop.connect(None).await;
    let mut bob_socket = bob.connect(None).await;
    alice_socket.next_of("ready").await;

    let send = |reference: &str, to: &User, body: &str, client_id: Option<&str>| {
        let mut frame = json!({
            "type": "message.send", "ref": reference, "to": { "user": to.id }, "body": body,
        });
        if let Some(client_id) = client_id {
            frame["client_id"] = json!(client_id);
        }
        frame.to_string()
    };
    // Pipelined: the second is sent before the first is answered, and
    // the answers come in order.
    alice_socket
        .send_text(&send("r1", &bob, "over the socket", Some("c-1")))
        .await;
    alice_socket
        .send_text(&send("r2", &bob, "and again", None))
        .await;
    // The sending device also gets both `message.created` events, which
    // may come before, between or after the answers.
    let (mut answers, mut own_created) = (Vec::new(), Vec::new());
    while answers.len() < 2 || own_created.len() < 2 {
        let event = alice_socket.next_event().await;
        match event["type"].as_str() {
            Some("message.sent") => answers.push(event),
            Some("message.created") => own_created.push(event),
            _ => {}
        }
    }
    let (first, second) = (answers[0].clone(), answers[1].clone());
    assert_eq!(first["ref"], "r1");
    assert!(first.get("seq").is_none(), "an answer is not stored");
    assert_eq!(first["message"]["body"], "over the socket");
    assert_eq!(first["message"]["seq"], 1);
    assert_eq!(second["ref"], "r2");
    assert_eq!(second["message"]["seq"], 2);
    for (created, sent) in own_created.iter().zip([&first, &second]) {
        assert_eq!(created["message"], sent["message"]);
    }
    for socket in [&mut bob_socket, &mut laptop] {
        for sent in [&first, &second] {
            let created = socket.next_of("message.created").await;
            assert_eq!(created["message"], sent["message"]);
        }
    }
    // Acknowledged means stored: history has both.
    let conversation = direct_conversation(&alice, &bob);
    let (_, page) = bob
        .get(&format!("/v1/conversations/{conversation}/messages"))
        .await;
    assert_eq!(page["messages"][0]["id"], second["message"]["id"]);
    assert_eq!(page["messages"][1]["id"], first["message"]["id"]);

    // A retry with the same client_id answers with the same message and
    // delivers nothing new.
    alice_socket
        .send_text(&send("r3", &bob, "over the socket", Some("c-1")))
        .await;
    let retry = alice_socket.next_of("message.sent").await;
    assert_eq!(
        (&retry["ref"], &retry["message"]),
        (&json!("r3"), &first["message"])
    );

    // Refusals are error events carrying the ref, and the socket stays up.
    alice_socket
        .send_text(&send("r4", &carol, "not a friend", None))
        .await;
    let refused = alice_socket.next_of("error").await;
    assert_eq!(refused["ref"], "r4");
    assert_eq!(refused["error"]["code"], "forbidden");
    alice_socket.send_text(&send("r5", &bob, "   ", None)).await;
    let empty = alice_socket.next_of("error").await;
    assert_eq!(
        (&empty["ref"], &empty["error"]["code"]),
        (&json!("r5"), &json!("bad_request"))
    );
    alice_socket
        .send_text(r#"{"type":"message.send","to":{"user":"nobody"},"body":"x"}"#)
        .await;
    let malformed = alice_socket.next_of("error").await;
    assert!(malformed.get("ref").is_none(), "{malformed}");
    assert_eq!(malformed["error"]["code"], "bad_request");
    let long_ref = "r".repeat(129);
    alice_socket
        .send_text(&send(&long_ref, &bob, "a ref too long", None))
        .await;
    let refused = alice_socket.next_of("error").await;
    assert!(refused.get("ref").is_none(), "not echoed: {refused}");
    assert_eq!(refused["error"]["message"], "ref must be 1 to 128 bytes");
    alice_socket
        .send_text(&send("r6", &bob, "still here", None))
        .await;
    assert_eq!(alice_socket.next_of("message.sent").await["ref"], "r6");
    let (_, page) = bob
        .get(&format!("/v1/conversations/{conversation}/messages"))
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3, "{page}");
}

/// More sends in flight than `ws.max_pending_sends`: reading stops and
/// resumes, and the answers (refusals included) keep the sends' order. A
/// device that closes with sends still waiting for their commit does not
/// get their answers, but every one of them that was stored reaches the
/// other side live.
#[tokio::test]
async fn a_flood_of_pipelined_sends_keeps_its_order_and_outlives_the_socket() {
    let server = TestServer::start(|config| {
        config.limits.messages_per_second = 10_000;
        config.limits.messages_burst = 10_000;
        config.ws.max_pending_sends = 4;
    })
    .await;
    let [alice, bob, carol] = User::sign_in_all(&server, ["alice", "bob", "carol"]).await;
    befriend(&alice, &bob).await;
    let mut alice_socket = alice.connect(None).await;
    let mut bob_socket = bob.connect(None).await;
    alice_socket.next_of("ready").await;
    let bob_ready = bob_socket.next_of("ready").await;
    let mut bob_seq = bob_ready["latest_seq"].as_u64().unwrap();

    let frame = |i: usize, to: &User, body: &str| {
        json!({"type": "message.send", "ref": format!("r{i}"), "to": {"user": to.id}, "body": body})
            .to_string()
    };
    const FLOOD: usize = 60;
    let (refused, empty) = (20, 41);
    for i in 0..FLOOD {
        let text = match i {
            _ if i == refused => frame(i, &carol, "not a friend"),
            _ if i == empty => frame(i, &bob, " "),
            _ => frame(i, &bob, &format!("flood {i}")),
        };
        alice_socket.send_text(&text).await;
    }
    let mut next_seq = 1;
    for i in 0..FLOOD {
        let answer = loop {
            let event = alice_socket.next_event().await;
            if matches!(event["type"].as_str(), Some("message.sent" | "error")) {
                break event;
            }
        };
        assert_eq!(answer["ref"], format!("r{i}"), "{answer}");
        match i {
            _ if i == refused => assert_eq!(answer["error"]["code"], "forbidden"),
            _ if i == empty => assert_eq!(answer["error"]["code"], "bad_request"),
            _ => {
                assert_eq!(answer["message"]["body"], format!("flood {i}"));
                assert_eq!(answer["message"]["seq"], next_seq);
                next_seq += 1;
            }
        }
    }
    for expected in 1..next_seq {
        let created = bob_socket.next_stored().await;
        bob_seq += 1;
        assert_eq!(seq(&created), bob_seq);
        assert_eq!(created["message"]["seq"], expected);
    }

    // Sent, then closed at once: the last sends are most likely still
    // waiting for their commit when the server reads the close (it reads
    // in order, so it stores every one of them first).
    for i in FLOOD..2 * FLOOD {
        alice_socket
            .send_text(&frame(i, &bob, &format!("flood {i}")))
            .await;
    }
    alice_socket.send_close().await;
    alice_socket.ended().await;
    for i in FLOOD..2 * FLOOD {
        let created = bob_socket.next_stored().await;
        bob_seq += 1;
        assert_eq!(seq(&created), bob_seq, "live, in order, none missing");
        assert_eq!(created["message"]["body"], format!("flood {i}"));
    }
}

#[tokio::test]
async fn group_messages_fan_out_and_removed_members_stop_receiving() {
    let server = server().await;
    let owner = User::sign_in(&server, "owner").await;
    let mut members = Vec::new();
    for i in 0..20 {
        let member = User::sign_in(&server, &format!("member-{i}")).await;
        befriend(&owner, &member).await;
        members.push(member);
    }
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let (status, group) = owner
        .post("/v1/groups", json!({ "name": "Choir", "members": ids }))
        .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["members"].as_array().unwrap().len(), 21);
    let group_id = group["group"]["id"].as_str().unwrap().to_string();

    let mut sockets = Vec::new();
    for member in &members {
        sockets.push(member.connect(None).await);
    }
    let sent = owner.group_message(&group_id, "welcome").await;
    for socket in &mut sockets {
        assert_eq!(
            socket.next_of("message.created").await["message"]["id"],
            sent["id"]
        );
    }

    // A member replies; everyone, the owner included, gets it.
    let reply = members[3].group_message(&group_id, "thanks").await;
    for socket in &mut sockets {
        assert_eq!(
            socket.next_of("message.created").await["message"]["id"],
            reply["id"]
        );
    }

    // Remove member 0: they are told, then hear nothing more and cannot read on.
    let removed = &members[0];
    let (status, _) = owner
        .delete(&format!("/v1/groups/{group_id}/members/{}", removed.id))
        .await;
    assert_eq!(status, 204);
    let event = sockets[0].next_of("group.member_removed").await;
    assert_eq!(event["user_id"], removed.id.as_str());
    let after = owner.group_message(&group_id, "after the removal").await;
    let next_for_member_1 = sockets[1].next_of("message.created").await;
    assert_eq!(next_for_member_1["message"]["id"], after["id"]);
    let conversation = format!("g:{group_id}");
    let (status, page) = removed
        .get(&format!("/v1/conversations/{conversation}/messages"))
        .await;
    assert_eq!(status, 200, "a former member still reads what came before");
    let seen: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["thanks", "welcome"]);
    let (status, _) = removed
        .post(
            "/v1/messages",
            json!({ "to": { "group": group_id }, "body": "hey" }),
        )
        .await;
    assert_eq!(status, 403);
    // The next stored event the removed member gets is not the new message.
    let bystander = User::sign_in(&server, "bystander").await;
    befriend(removed, &bystander).await;
    let next = sockets[0].next_stored().await;
    assert_ne!(next["type"], "message.created", "{next}");

    // Leave, rename, and the owner's limits.
    let (status, _) = members[5]
        .post(&format!("/v1/groups/{group_id}/leave"), json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = members[6]
        .patch(&format!("/v1/groups/{group_id}"), json!({ "name": "Mine" }))
        .await;
    assert_eq!(status, 403, "members do not rename");
    let (status, renamed) = owner
        .patch(
            &format!("/v1/groups/{group_id}"),
            json!({ "name": "Big Choir" }),
        )
        .await;
    assert_eq!((status, renamed["name"].as_str()), (200, Some("Big Choir")));
    assert_eq!(
        sockets[6].next_of("group.updated").await["group"]["name"],
        "Big Choir"
    );
    let (_, current) = owner.get(&format!("/v1/groups/{group_id}/members")).await;
    assert_eq!(current.as_array().unwrap().len(), 19);
    assert_eq!(
        owner
            .post(&format!("/v1/groups/{group_id}/leave"), json!({}))
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn group_members_must_be_friends_and_outsiders_see_nothing() {
    let server = server().await;
    let [owner, friend, stranger] =
        User::sign_in_all(&server, ["owner", "friend", "stranger"]).await;
    befriend(&owner, &friend).await;
    let (status, _) = owner
        .post(
            "/v1/groups",
            json!({ "name": "x", "members": [stranger.id] }),
        )
        .await;
    assert_eq!(status, 403);
    let (_, group) = owner
        .post("/v1/groups", json!({ "name": "x", "members": [friend.id] }))
        .await;
    let group_id = group["group"]["id"].as_str().unwrap();
    let message = owner.group_message(group_id, "members only").await;

    assert_eq!(stranger.get(&format!("/v1/groups/{group_id}")).await.0, 404);
    assert_eq!(
        stranger
            .get(&format!("/v1/conversations/g:{group_id}/messages"))
            .await
            .0,
        403
    );
    assert_eq!(
        stranger
            .post(
                "/v1/messages",
                json!({ "to": { "group": group_id }, "body": "x" })
            )
            .await
            .0,
        403
    );
    assert_eq!(
        stranger
            .delete(&format!("/v1/messages/{}", message["id"].as_str().unwrap()))
            .await
            .0,
        404
    );
    assert_eq!(
        friend
            .delete(&format!("/v1/messages/{}", message["id"].as_str().unwrap()))
            .await
            .0,
        403
    );
    let direct = format!("d:{}:{}", owner.id, friend.id);
    assert_eq!(
        stranger
            .get(&format!("/v1/conversations/{direct}/messages"))
            .await
            .0,
        403
    );
    assert_eq!(
        stranger
            .get("/v1/conversations/not-a-conversation/messages")
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn deletion_erases_the_body_and_reaches_every_device() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let mut bob_socket = bob.connect(None).await;
    let sent = alice.message(&bob, "oops").await;
    let id = sent["id"].as_str().unwrap();
    assert_eq!(
        bob.delete(&format!("/v1/messages/{id}")).await.0,
        403,
        "not bob's message"
    );
    let (status, tombstone) = alice.delete(&format!("/v1/messages/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(tombstone["body"], Value::Null);
    assert!(tombstone["deleted_at"].is_string());
    let deleted = bob_socket.next_of("message.deleted").await;
    assert_eq!(deleted["message_id"], id);
    let conversation = sent["conversation"].as_str().unwrap();
    let (_, page) = bob
        .get(&format!("/v1/conversations/{conversation}/messages"))
        .await;
    assert_eq!(
        page["messages"][0]["body"],
        Value::Null,
        "only a tombstone is left"
    );
    assert_eq!(page["messages"][0]["id"], id);
}

#[tokio::test]
async fn reconnecting_with_since_recovers_exactly_the_missed_events() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let mut socket = bob.connect(None).await;
    alice.message(&bob, "before").await;
    let seen = seq(&socket.next_of("message.created").await);
    socket.close().await;

    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(alice.message(&bob, &format!("missed {i}")).await["id"].clone());
    }
    let mut socket = bob.connect(Some(seen)).await;
    for (i, id) in missed.iter().enumerate() {
        let event = socket.next_stored().await;
        assert_eq!(seq(&event), seen + 1 + i as u64);
        assert_eq!(event["message"]["id"], *id);
    }
    let live = alice.message(&bob, "live").await;
    let event = socket.next_stored().await;
    assert_eq!(seq(&event), seen + 6, "no gap and no repeat");
    assert_eq!(event["message"]["id"], live["id"]);

    // Past the retention window: told to resync instead.
    server
        .state
        .store
        .prune_events(time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .await
        .unwrap();
    let mut socket = bob.connect(Some(seen)).await;
    let event = socket.next_event().await;
    assert_eq!(event["type"], "resync_required", "{event}");
    assert_eq!(event["latest_seq"], seen + 6);
}

#[tokio::test]
async fn typing_reaches_the_other_participants_only_and_is_not_stored() {
    let server = server().await;
    let [alice, bob, stranger] = User::sign_in_all(&server, ["alice", "bob", "stranger"]).await;
    befriend(&alice, &bob).await;
    let mut alice_socket = alice.connect(None).await;
    let mut bob_socket = bob.connect(None).await;
    let conversation = direct_conversation(&alice, &bob);
    alice_socket
        .send_text(&json!({ "type": "typing", "conversation": conversation }).to_string())
        .await;
    let typing = bob_socket.next_of("typing").await;
    assert_eq!(typing["user_id"], alice.id.as_str());
    assert!(typing.get("seq").is_none());

    let mut stranger_socket = stranger.connect(None).await;
    stranger_socket
        .send_text(&json!({ "type": "typing", "conversation": conversation }).to_string())
        .await;
    let error = stranger_socket.next_of("error").await;
    assert_eq!(error["error"]["code"], "forbidden");
}

#[tokio::test]
async fn bad_frames_and_bodies_get_clear_errors() {
    let server = TestServer::start(|config| {
        config.limits.max_message_bytes = 100;
        config.ws.max_inbound_bytes = 1024;
    })
    .await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let (status, error) = alice
        .post(
            "/v1/messages",
            json!({ "to": { "user": bob.id }, "body": "x".repeat(101) }),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, error) = alice
        .post("/v1/messages", json!({ "to": { "user": bob.id } }))
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = alice
        .post(
            "/v1/messages",
            json!({ "to": { "user": bob.id }, "body": "   " }),
        )
        .await;
    assert_eq!(status, 400);

    let mut socket = alice.connect(None).await;
    socket.send_text("{not json").await;
    assert_eq!(
        socket.next_of("error").await["error"]["code"],
        "bad_request"
    );
    socket.send_text(r#"{"type":"no.such.thing"}"#).await;
    assert_eq!(
        socket.next_of("error").await["error"]["code"],
        "bad_request"
    );
    socket.send_binary(vec![1, 2, 3]).await;
    assert_eq!(
        socket.next_of("error").await["error"]["code"],
        "bad_request"
    );
    // Still open and working after all that.
    alice.message(&bob, "still here").await;
    socket.next_of("message.created").await;
    socket.send_text(&"x".repeat(4096)).await;
    assert_eq!(socket.ended().await, Ended::Closed(Some(1009)));
}

#[tokio::test]
async fn websocket_authentication_origin_and_tickets() {
    let server = TestServer::start(|config| {
        config.auth.web_origins = vec!["https://voice.example".into()];
    })
    .await;
    let alice = User::sign_in(&server, "alice").await;
    let ws_url = server.url("/v1/ws").replace("http://", "ws://");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let refused = tokio_tungstenite::connect_async(ws_url.as_str()).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401)
    );
    let with_token_in_url = format!("{ws_url}?access_token={}", alice.token);
    assert!(
        tokio_tungstenite::connect_async(with_token_in_url.as_str())
            .await
            .is_err()
    );

    let (status, ticket) = alice.post("/v1/ws/ticket", json!({})).await;
    assert_eq!(status, 200);
    let ticket = ticket["ticket"].as_str().unwrap();
    let mut request = format!("{ws_url}?ticket={ticket}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 403)
    );

    let mut request = format!("{ws_url}?ticket={ticket}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://voice.example".parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a ticket opens one socket");
    drop(socket);
    let mut request = format!("{ws_url}?ticket={ticket}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://voice.example".parse().unwrap());
    let reused = tokio_tungstenite::connect_async(request).await;
    assert!(
        matches!(reused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401)
    );
}

/// A burst of large messages to a reader that stops reading until the
/// burst is over, beside a reader that keeps up. The lagging reader's
/// kernel receive buffer is capped, so its server-side queue overflows
/// whatever the kernel's autotuning would have held. With a long
/// `send_timeout` the server waits for the reader to drain what was
/// already in flight and then closes with 4008; with a short one it gives
/// up on the blocked write and drops the socket. Returns how the lagging
/// connection ended after checking that the other reader got everything
/// and that resuming with `since` brings exactly what the lagging one
/// missed.
async fn burst_to_a_lagging_reader(send_timeout: std::time::Duration) -> Ended {
    let server = TestServer::start(|config| {
        config.limits.messages_per_second = 100_000;
        config.limits.messages_burst = 100_000;
        config.limits.max_message_bytes = 60 * 1024;
        config.limits.max_body_bytes = 128 * 1024;
        config.ws.outbound_queue = 8;
        config.ws.send_timeout_ms = send_timeout.as_millis() as u64;
        config.ws.max_write_buffer_bytes = 256 * 1024;
    })
    .await;
    let [alice, lagging, fast] = User::sign_in_all(&server, ["alice", "lagging", "fast"]).await;
    befriend(&alice, &lagging).await;
    befriend(&alice, &fast).await;
    let mut lagging_socket = lagging
        .connect_with_receive_buffer(None, Some(64 * 1024))
        .await;
    let mut fast_socket = fast.connect(None).await;

    // 10 MB: more than the server's send buffer (at most tcp_wmem's 4 MB
    // here), the capped receive buffer and the server's queue together.
    const COUNT: usize = 200;
    let body = "y".repeat(50 * 1024);
    let fast_reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < COUNT {
            let event = fast_socket.next_of("message.created").await;
            ids.push(event["message"]["id"].as_str().unwrap().to_string());
        }
        ids
    });
    let (burst_done, burst_over) = tokio::sync::oneshot::channel::<()>();
    let lagging_reader = tokio::spawn(async move {
        let _ = burst_over.await;
        let mut received = Vec::new();
        let mut last_seq = 0;
        loop {
            let next = tokio::time::timeout(
                common::client::EVENT_WAIT,
                futures_util::StreamExt::next(&mut lagging_socket.stream),
            )
            .await;
            match next.expect("the lagging reader was never cut off") {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    let event: Value = serde_json::from_str(text.as_str()).unwrap();
                    if event["type"] == "message.created" {
                        received.push(event["message"]["id"].as_str().unwrap().to_string());
                        last_seq = seq(&event);
                    }
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return (
                        received,
                        last_seq,
                        Ended::Closed(frame.map(|f| u16::from(f.code))),
                    );
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (received, last_seq, Ended::Dropped),
            }
        }
    });
    let mut sent_to_lagging = Vec::new();
    let mut sent_to_fast = Vec::new();
    for _ in 0..COUNT {
        sent_to_lagging.push(
            alice.message(&lagging, &body).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        sent_to_fast.push(
            alice.message(&fast, &body).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let _ = burst_done.send(());
    assert_eq!(
        fast_reader.await.unwrap(),
        sent_to_fast,
        "the fast reader got everything, in order"
    );
    let (mut received, last_seq, ending) = lagging_reader.await.unwrap();
    assert!(received.len() < COUNT, "it could not have kept up");
    assert_eq!(
        received,
        sent_to_lagging[..received.len()],
        "what it got came in order"
    );

    let mut resumed = lagging.connect(Some(last_seq)).await;
    while received.len() < COUNT {
        let event = resumed.next_stored().await;
        if event["type"] == "message.created" {
            received.push(event["message"]["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        received, sent_to_lagging,
        "resuming with since brought exactly the rest"
    );
    ending
}

#[tokio::test]
async fn a_slow_reader_is_closed_with_4008_and_resumes_with_since() {
    let ending = burst_to_a_lagging_reader(std::time::Duration::from_secs(60)).await;
    assert_eq!(ending, Ended::Closed(Some(4008)));
}

#[tokio::test]
async fn a_stalled_reader_is_dropped_and_resumes_with_since() {
    // Its socket takes no more bytes, so no close frame can reach it: the
    // server gives up on the write after ws.send_timeout_ms.
    let ending = burst_to_a_lagging_reader(std::time::Duration::from_millis(500)).await;
    assert!(
        matches!(ending, Ended::Dropped | Ended::Closed(Some(4008))),
        "{ending:?}"
    );
}

#[tokio::test]
async fn history_pages_have_no_gaps_or_duplicates_under_concurrent_sends() {
    let server = server().await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let conversation = alice.message(&bob, "first").await["conversation"]
        .as_str()
        .unwrap()
        .to_string();

    const SENDERS: usize = 4;
    const EACH: usize = 40;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (from, to) = if s % 2 == 0 {
            (alice.clone(), bob.clone())
        } else {
            (bob.clone(), alice.clone())
        };
        senders.push(tokio::spawn(async move {
            for i in 0..EACH {
                from.message(&to, &format!("{s}-{i}")).await;
            }
        }));
    }
    // Page through while the sends go on, with page sizes that vary.
    let mut walks = 0;
    let mut page_size = 1u32;
    loop {
        let done = senders.iter().all(|s| s.is_finished());
        let seqs = walk(&bob, &conversation, page_size).await;
        let top = seqs[0];
        let expected: Vec<u64> = (1..=top).rev().collect();
        assert_eq!(
            seqs, expected,
            "a walk from {top} with pages of {page_size}"
        );
        walks += 1;
        page_size = page_size % 17 + 3;
        if done {
            break;
        }
    }
    assert!(walks >= 1);
    let all = walk(&alice, &conversation, 50).await;
    assert_eq!(all.len(), 1 + SENDERS * EACH);
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len());
}

/// Every seq of the conversation from the newest down, page by page.
async fn walk(user: &User, conversation: &str, limit: u32) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut path = format!("/v1/conversations/{conversation}/messages?limit={limit}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let (status, page) = user.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seqs.extend(
            page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_u64().unwrap()),
        );
        match page["next_before"].as_u64() {
            Some(next) => before = Some(next),
            None => return seqs,
        }
    }
}

#[tokio::test]
async fn sending_too_fast_is_rate_limited() {
    let server = TestServer::start(|config| {
        config.limits.messages_per_second = 1;
        config.limits.messages_burst = 3;
    })
    .await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    for _ in 0..3 {
        alice.message(&bob, "quick").await;
    }
    let (status, error) = alice
        .post(
            "/v1/messages",
            json!({ "to": { "user": bob.id }, "body": "too quick" }),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let mut socket = alice.connect(None).await;
    let conversation = direct_conversation(&alice, &bob);
    socket
        .send_text(&json!({ "type": "typing", "conversation": conversation }).to_string())
        .await;
    assert_eq!(
        socket.next_of("error").await["error"]["code"],
        "rate_limited"
    );
}

// Several worker threads, as in production, so that publishing tasks race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_socket_gets_every_event_once_in_order_under_concurrent_senders() {
    let server = server().await;
    let bob = User::sign_in(&server, "bob").await;
    let mut senders = Vec::new();
    for i in 0..4 {
        let sender = User::sign_in(&server, &format!("sender-{i}")).await;
        befriend(&sender, &bob).await;
        senders.push(sender);
    }
    let mut socket = bob.connect(None).await;
    let ready = socket.next_of("ready").await;
    let mut expected_seq = ready["latest_seq"].as_u64().unwrap() + 1;

    const EACH: usize = 100;
    let mut tasks = Vec::new();
    for sender in senders {
        let bob = bob.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                sender.message(&bob, &format!("{i}")).await;
            }
        }));
    }
    let mut received = BTreeSet::new();
    while received.len() < 4 * EACH {
        let event = socket.next_stored().await;
        assert_eq!(seq(&event), expected_seq, "no gap, no repeat, in order");
        expected_seq += 1;
        received.insert(event["message"]["id"].as_str().unwrap().to_string());
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Bob's device, given a stored event that was never published here (as
/// when another node sharing the database stores it, or a store without a
/// commit feed loses the task that was to publish it) and then `live`
/// messages that were: it must get all of them once each, in order, with
/// the missing one from the store.
async fn an_unpublished_event_is_filled_in(
    reorder_wait_ms: u64,
    reorder_max_events: usize,
    live: usize,
) {
    let server = TestServer::start(|config| {
        config.ws.reorder_wait_ms = reorder_wait_ms;
        config.ws.reorder_max_events = reorder_max_events;
    })
    .await;
    let [alice, bob] = User::sign_in_all(&server, ["alice", "bob"]).await;
    befriend(&alice, &bob).await;
    let mut socket = bob.connect(None).await;
    let latest = socket.next_of("ready").await["latest_seq"]
        .as_u64()
        .unwrap();

    let alice_id: UserId = alice.id.parse().unwrap();
    // A second handle on the database: this server's commit feed never
    // sees what it stores.
    let elsewhere = SqliteStore::open(
        &server.data_dir.path().join("voice.db"),
        SqliteOptions::default(),
    )
    .unwrap();
    let unpublished = elsewhere
        .append_events(
            &[(
                bob.id.parse().unwrap(),
                Event::FriendRemoved { user_id: alice_id },
            )],
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    elsewhere.close().await;
    assert_eq!(unpublished[0].seq, latest + 1);
    for i in 0..live {
        alice.message(&bob, &format!("live {i}")).await;
    }

    let event = socket.next_stored().await;
    assert_eq!(
        (seq(&event), event["type"].as_str()),
        (latest + 1, Some("friend.removed"))
    );
    for i in 0..live {
        let event = socket.next_stored().await;
        assert_eq!(seq(&event), latest + 2 + i as u64, "in order, no repeat");
        assert_eq!(event["message"]["body"], format!("live {i}"));
    }
    // The connection adds its counts when it closes: the gap was filled
    // from the store once, and the live events had waited behind it.
    socket.close().await;
    let closed = async {
        while server.state.event_order.snapshot().fills == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), closed)
        .await
        .expect("the connection closes and adds its counts");
    let stats = server.state.event_order.snapshot();
    assert_eq!((stats.fills, stats.early), (1, live as u64));
}

#[tokio::test]
async fn a_gap_that_stays_open_is_filled_from_the_store_after_the_wait() {
    an_unpublished_event_is_filled_in(50, 256, 2).await;
}

#[tokio::test]
async fn a_gap_holding_back_too_many_events_is_filled_at_once() {
    // Ten minutes: only the count can trigger the fill before the test's
    // wait for an event runs out.
    an_unpublished_event_is_filled_in(600_000, 2, 3).await;
}

#[tokio::test]
async fn signing_out_closes_the_devices_socket() {
    let server = server().await;
    let [alice, other_device] = User::sign_in_all(&server, ["alice", "alice"]).await;
    let mut socket = alice.connect(None).await;
    let mut other = other_device.connect(None).await;
    socket.next_of("ready").await;
    other.next_of("ready").await;
    assert_eq!(alice.post("/v1/auth/logout", json!({})).await.0, 204);
    assert_eq!(socket.next_event().await["type"], "session.ended");
    assert_eq!(socket.ended().await, Ended::Closed(Some(4001)));
    // The other device stays connected and signed in.
    assert_eq!(other_device.get("/v1/me").await.0, 200);

    // Signing out and hanging up at once still closes the device's socket.
    let mut other = other_device.connect(None).await;
    other.next_of("ready").await;
    let request = raw_request(
        &server,
        &other_device,
        "POST",
        "/v1/auth/logout",
        &json!({}),
    );
    send_and_hang_up_before_the_commit(&server, request).await;
    assert_eq!(other.next_event().await["type"], "session.ended");
    assert_eq!(other.ended().await, Ended::Closed(Some(4001)));
    assert_eq!(other_device.get("/v1/me").await.0, 401);
}
