//! The conformance suite for [`Store`]: the documented semantics of every
//! method, as assertions any backend must pass. SQLite runs it in its own
//! tests; a later backend (PostgreSQL) runs the same functions against its
//! own store.
//!
//! Each run uses fresh ids and identities, so it can run against a
//! database that already holds data, even one shared with other runs. It
//! panics on the first violated expectation, like any test.
//!
//! Timestamps are whole milliseconds: the coarsest precision a backend may
//! store, so values can be compared exactly after a round trip.

use std::fmt::Debug;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use voice_core::ErrorCode;
use voice_core::error::Result;
use voice_core::ids::{GroupId, MessageId, SessionId, UserId};
use voice_core::model::{
    Conversation, FriendStatus, Group, GroupRole, Identity, Message, NewMessage, RefreshToken,
    Session, SpendOutcome, User,
};
use voice_core::store::Store;

/// Runs every check in this module.
pub async fn run_all(store: &dyn Store) {
    ping(store).await;
    users(store).await;
    sessions(store).await;
    refresh_tokens(store).await;
    friends(store).await;
    messages(store).await;
    groups(store).await;
}

/// `ping` succeeds on a working store.
pub async fn ping(store: &dyn Store) {
    store.ping().await.expect("ping on a working store");
}

/// `upsert_user` registers once per (issuer, subject) and refreshes the
/// profile afterwards; `get_user` and `count_users` see the result.
pub async fn users(store: &dyn Store) {
    let t0 = now();
    let identity = identity();
    let before = store.count_users().await.unwrap();

    let (user, created) = store.upsert_user(&identity, t0).await.unwrap();
    assert!(created, "the first sight of an identity registers it");
    assert_eq!(user.issuer, identity.issuer);
    assert_eq!(user.subject, identity.subject);
    assert_eq!(user.email, identity.email);
    assert_eq!(user.name, identity.name);
    assert_eq!(user.picture, identity.picture);
    assert_eq!(user.created_at, t0);
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(user.clone()));
    assert!(store.count_users().await.unwrap() > before);

    let changed = Identity {
        email: Some(format!("new-{}@example.com", Uuid::now_v7())),
        name: Some("Renamed".to_owned()),
        picture: None,
        ..identity.clone()
    };
    let (again, created) = store
        .upsert_user(&changed, t0 + Duration::minutes(5))
        .await
        .unwrap();
    assert!(!created, "a known identity is not registered twice");
    assert_eq!(again.id, user.id);
    assert_eq!(
        again.created_at, t0,
        "refreshing keeps the registration date"
    );
    assert_eq!(again.email, changed.email);
    assert_eq!(again.name, changed.name);
    assert_eq!(again.picture, None);
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(again));

    // Users are keyed by issuer and subject together.
    let other_issuer = Identity {
        issuer: format!("https://other-{}.example", Uuid::now_v7()),
        ..identity.clone()
    };
    let (other, created) = store.upsert_user(&other_issuer, t0).await.unwrap();
    assert!(
        created,
        "the same subject at another issuer is another user"
    );
    assert_ne!(other.id, user.id);

    assert_eq!(store.get_user(UserId::new()).await.unwrap(), None);
}

/// Sessions are stored with their first token, read back, and revoked once.
pub async fn sessions(store: &dyn Store) {
    let t0 = now();
    let user = new_user(store).await;
    let session = new_session(&user, t0);
    let first = token(&session, t0 + Duration::hours(1));
    store.create_session(&session, &first).await.unwrap();
    assert_eq!(
        store.get_session(session.id).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store.get_refresh_token(first.hash).await.unwrap(),
        Some(first.clone())
    );
    assert_code(
        store.create_session(&session, &token(&session, t0)).await,
        ErrorCode::Conflict,
        "creating a session twice",
    );
    assert_eq!(store.get_session(SessionId::new()).await.unwrap(), None);
    assert_eq!(store.get_refresh_token(hash()).await.unwrap(), None);

    let t1 = t0 + Duration::seconds(30);
    assert!(store.revoke_session(session.id, t1).await.unwrap());
    assert!(
        !store
            .revoke_session(session.id, t1 + Duration::seconds(1))
            .await
            .unwrap(),
        "revoking again reports it was not live"
    );
    let revoked = store.get_session(session.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(t1), "the first revocation counts");
    assert!(!store.revoke_session(SessionId::new(), t1).await.unwrap());
}

/// Refresh-token rotation: spend once, detect reuse, refuse the unknown,
/// the expired and the revoked, and let concurrent spends race safely.
pub async fn refresh_tokens(store: &dyn Store) {
    let t0 = now();
    let user = new_user(store).await;
    let session = new_session(&user, t0);
    let first = token(&session, t0 + Duration::hours(1));
    store.create_session(&session, &first).await.unwrap();

    // The successor's session and user come from the spent token.
    let stranger = new_session(&user, t0);
    let successor = RefreshToken {
        session_id: stranger.id,
        user_id: UserId::new(),
        ..token(&session, t0 + Duration::hours(2))
    };
    let t1 = t0 + Duration::minutes(1);
    assert_eq!(
        store
            .spend_refresh_token(first.hash, &successor, t1)
            .await
            .unwrap(),
        SpendOutcome::Rotated {
            user_id: user.id,
            session_id: session.id
        }
    );
    let spent = store.get_refresh_token(first.hash).await.unwrap().unwrap();
    assert_eq!(spent.spent_at, Some(t1));
    assert_eq!(spent.successor_hash, Some(successor.hash));
    let stored = store
        .get_refresh_token(successor.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored,
        RefreshToken {
            hash: successor.hash,
            session_id: session.id,
            user_id: user.id,
            expires_at: successor.expires_at,
            spent_at: None,
            successor_hash: None,
        }
    );

    // Spending again returns the spent token untouched and stores nothing.
    let retry = token(&session, t0 + Duration::hours(2));
    assert_eq!(
        store
            .spend_refresh_token(first.hash, &retry, t1 + Duration::seconds(1))
            .await
            .unwrap(),
        SpendOutcome::AlreadySpent(spent.clone())
    );
    assert_eq!(
        store.get_refresh_token(first.hash).await.unwrap(),
        Some(spent)
    );
    assert_eq!(store.get_refresh_token(retry.hash).await.unwrap(), None);

    // Unknown.
    assert_eq!(
        store
            .spend_refresh_token(hash(), &token(&session, t1), t1)
            .await
            .unwrap(),
        SpendOutcome::Invalid
    );

    // Expired: `expires_at` is the first instant it no longer works.
    let expired_session = new_session(&user, t0);
    let expiring = token(&expired_session, t1);
    store
        .create_session(&expired_session, &expiring)
        .await
        .unwrap();
    let unused = token(&expired_session, t1 + Duration::hours(1));
    assert_eq!(
        store
            .spend_refresh_token(expiring.hash, &unused, t1)
            .await
            .unwrap(),
        SpendOutcome::Invalid,
        "a token is dead at its expiry instant"
    );
    assert_eq!(
        store
            .spend_refresh_token(expiring.hash, &unused, t1 + Duration::seconds(1))
            .await
            .unwrap(),
        SpendOutcome::Invalid
    );
    assert_eq!(store.get_refresh_token(unused.hash).await.unwrap(), None);
    assert_eq!(
        store
            .get_refresh_token(expiring.hash)
            .await
            .unwrap()
            .unwrap()
            .spent_at,
        None,
        "a refused spend changes nothing"
    );

    // Two concurrent spends of one live token: exactly one rotates.
    let (a, b) = (
        token(&session, t0 + Duration::hours(3)),
        token(&session, t0 + Duration::hours(3)),
    );
    let t2 = t1 + Duration::minutes(1);
    let (first_try, second_try) = tokio::join!(
        store.spend_refresh_token(successor.hash, &a, t2),
        store.spend_refresh_token(successor.hash, &b, t2),
    );
    let outcomes = [first_try.unwrap(), second_try.unwrap()];
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, SpendOutcome::Rotated { .. }))
        .count();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, SpendOutcome::AlreadySpent(_)))
        .count();
    assert_eq!((rotated, reused), (1, 1), "concurrent spends: {outcomes:?}");
    let (winner, loser) = if matches!(outcomes[0], SpendOutcome::Rotated { .. }) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(
        store
            .get_refresh_token(winner.hash)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.get_refresh_token(loser.hash).await.unwrap(), None);

    // Revoking the session kills its live token.
    assert!(store.revoke_session(session.id, t2).await.unwrap());
    assert_eq!(
        store
            .spend_refresh_token(winner.hash, &token(&session, t2), t2)
            .await
            .unwrap(),
        SpendOutcome::Invalid,
        "a revoked session's token is invalid"
    );
}

/// Friend requests, mutual acceptance, removal, blocking and listing.
pub async fn friends(store: &dyn Store) {
    let t0 = now();
    let [a, b, c, d] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];

    // A request, seen from both sides; asking again changes nothing.
    assert_eq!(store.friendship(a, b).await.unwrap(), None);
    assert_eq!(
        store.request_friend(a, b, t0).await.unwrap(),
        FriendStatus::RequestSent
    );
    assert_eq!(
        store
            .request_friend(a, b, t0 + Duration::seconds(1))
            .await
            .unwrap(),
        FriendStatus::RequestSent
    );
    assert_eq!(
        store.friendship(a, b).await.unwrap(),
        Some(FriendStatus::RequestSent)
    );
    assert_eq!(
        store.friendship(b, a).await.unwrap(),
        Some(FriendStatus::RequestReceived)
    );

    // Accepting: only the receiver, only while pending.
    assert_code(
        store.accept_friend(a, b, t0).await,
        ErrorCode::NotFound,
        "the requester accepting their own request",
    );
    let t1 = t0 + Duration::seconds(10);
    store.accept_friend(b, a, t1).await.unwrap();
    assert_eq!(
        store.friendship(a, b).await.unwrap(),
        Some(FriendStatus::Accepted)
    );
    assert_eq!(
        store.friendship(b, a).await.unwrap(),
        Some(FriendStatus::Accepted)
    );
    assert_code(
        store.accept_friend(b, a, t1).await,
        ErrorCode::NotFound,
        "accepting a friendship that is no longer pending",
    );
    assert_code(
        store.accept_friend(a, c, t1).await,
        ErrorCode::NotFound,
        "accepting a request nobody made",
    );
    assert_eq!(
        store.request_friend(b, a, t1).await.unwrap(),
        FriendStatus::Accepted,
        "asking a friend changes nothing"
    );
    let friends_of_a = store.list_friends(a).await.unwrap();
    assert_eq!(friends_of_a.len(), 1);
    assert_eq!(friends_of_a[0].user_id, b);
    assert_eq!(friends_of_a[0].status, FriendStatus::Accepted);
    assert_eq!(friends_of_a[0].since, t1);

    // Asking someone who already asked you makes you friends at once.
    assert_eq!(
        store.request_friend(a, c, t1).await.unwrap(),
        FriendStatus::RequestSent
    );
    assert_eq!(
        store
            .request_friend(c, a, t1 + Duration::seconds(1))
            .await
            .unwrap(),
        FriendStatus::Accepted
    );
    assert_eq!(
        store.friendship(a, c).await.unwrap(),
        Some(FriendStatus::Accepted)
    );

    // Removing ends a friendship from both sides, once.
    assert!(store.remove_friend(b, a).await.unwrap());
    assert_eq!(store.friendship(a, b).await.unwrap(), None);
    assert_eq!(store.friendship(b, a).await.unwrap(), None);
    assert!(!store.remove_friend(a, b).await.unwrap());

    // It also withdraws (requester) and declines (receiver) a request.
    store.request_friend(a, d, t1).await.unwrap();
    assert!(store.remove_friend(a, d).await.unwrap());
    assert_eq!(store.friendship(d, a).await.unwrap(), None);
    store.request_friend(a, d, t1).await.unwrap();
    assert!(store.remove_friend(d, a).await.unwrap());
    assert_eq!(store.friendship(a, d).await.unwrap(), None);

    // Blocking ends the friendship; nobody can ask across a block, from
    // either side; removing leaves the block alone.
    let t2 = t1 + Duration::minutes(1);
    store.block_user(a, c, t2).await.unwrap();
    assert_eq!(
        store.friendship(a, c).await.unwrap(),
        Some(FriendStatus::Blocked)
    );
    assert_eq!(store.friendship(c, a).await.unwrap(), None);
    assert_code(
        store.request_friend(c, a, t2).await,
        ErrorCode::Conflict,
        "asking someone who blocked you",
    );
    assert_code(
        store.request_friend(a, c, t2).await,
        ErrorCode::Conflict,
        "asking someone you blocked",
    );
    assert!(!store.remove_friend(a, c).await.unwrap());
    assert!(!store.remove_friend(c, a).await.unwrap());
    assert_eq!(
        store.friendship(a, c).await.unwrap(),
        Some(FriendStatus::Blocked)
    );
    // Blocking a pending request works the same way.
    store.request_friend(d, b, t2).await.unwrap();
    store.block_user(b, d, t2).await.unwrap();
    assert_eq!(
        store.friendship(b, d).await.unwrap(),
        Some(FriendStatus::Blocked)
    );
    assert_eq!(store.friendship(d, b).await.unwrap(), None);

    // Listing is oldest first, with each relation as seen by the lister.
    let [e, f, g, h] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    store
        .request_friend(e, g, t0 + Duration::seconds(2))
        .await
        .unwrap();
    store
        .request_friend(e, f, t0 + Duration::seconds(1))
        .await
        .unwrap();
    store
        .request_friend(h, e, t0 + Duration::seconds(3))
        .await
        .unwrap();
    store
        .block_user(e, b, t0 + Duration::seconds(4))
        .await
        .unwrap();
    let listed: Vec<_> = store
        .list_friends(e)
        .await
        .unwrap()
        .into_iter()
        .map(|friend| (friend.user_id, friend.status, friend.since))
        .collect();
    assert_eq!(
        listed,
        vec![
            (f, FriendStatus::RequestSent, t0 + Duration::seconds(1)),
            (g, FriendStatus::RequestSent, t0 + Duration::seconds(2)),
            (h, FriendStatus::RequestReceived, t0 + Duration::seconds(3)),
            (b, FriendStatus::Blocked, t0 + Duration::seconds(4)),
        ]
    );
    assert!(store.list_friends(UserId::new()).await.unwrap().is_empty());

    assert!(
        store.request_friend(a, a, t2).await.is_err(),
        "befriending yourself is refused"
    );
}

/// Message history, idempotent sends and tombstones.
pub async fn messages(store: &dyn Store) {
    let t0 = now();
    let [a, b, c] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let direct = Conversation::direct(a, b);
    let elsewhere = Conversation::direct(a, c);

    let mut sent: Vec<Message> = Vec::new();
    for i in 0..5 {
        let new = new_message(direct, if i % 2 == 0 { a } else { b }, t0 + millis(i));
        let stored = store.insert_message(&new).await.unwrap();
        assert_eq!(stored, expected(&new));
        // Interleave another conversation, which must never show up.
        store
            .insert_message(&new_message(elsewhere, a, t0 + millis(i)))
            .await
            .unwrap();
        sent.push(stored);
    }
    assert_eq!(
        store.get_message(sent[0].id).await.unwrap(),
        Some(sent[0].clone())
    );
    assert_eq!(store.get_message(MessageId::new()).await.unwrap(), None);

    // Newest first, strictly older than the cursor, at most `limit`.
    let newest_first: Vec<Message> = sent.iter().rev().cloned().collect();
    assert_eq!(
        store.list_messages(direct, None, 10).await.unwrap(),
        newest_first
    );
    assert_eq!(
        store.list_messages(direct, None, 2).await.unwrap(),
        newest_first[..2]
    );
    assert_eq!(
        store
            .list_messages(direct, Some(sent[2].id), 10)
            .await
            .unwrap(),
        vec![sent[1].clone(), sent[0].clone()]
    );
    assert_eq!(
        store
            .list_messages(direct, Some(sent[4].id), 2)
            .await
            .unwrap(),
        vec![sent[3].clone(), sent[2].clone()]
    );
    assert!(
        store
            .list_messages(direct, Some(sent[0].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_messages(direct, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_messages(Conversation::direct(b, c), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // With a client id, a second send returns the first message unchanged.
    let client_id = format!("client-{}", Uuid::now_v7());
    let first = NewMessage {
        client_id: Some(client_id.clone()),
        ..new_message(direct, a, t0 + millis(10))
    };
    let stored = store.insert_message(&first).await.unwrap();
    assert_eq!(stored, expected(&first));
    let resend = NewMessage {
        client_id: Some(client_id.clone()),
        body: "a different body".to_owned(),
        ..new_message(direct, a, t0 + millis(11))
    };
    assert_eq!(store.insert_message(&resend).await.unwrap(), stored);
    assert_eq!(store.get_message(resend.id).await.unwrap(), None);
    // Another sender may use the same client id.
    let theirs = NewMessage {
        client_id: Some(client_id.clone()),
        ..new_message(direct, b, t0 + millis(12))
    };
    assert_eq!(
        store.insert_message(&theirs).await.unwrap(),
        expected(&theirs)
    );
    // Without a client id, identical bodies are separate messages.
    let plain = new_message(direct, a, t0 + millis(13));
    let twin = NewMessage {
        body: plain.body.clone(),
        ..new_message(direct, a, t0 + millis(13))
    };
    store.insert_message(&plain).await.unwrap();
    store.insert_message(&twin).await.unwrap();
    assert!(store.get_message(twin.id).await.unwrap().is_some());
    // Concurrent sends with one client id store one message.
    let racing_id = format!("client-{}", Uuid::now_v7());
    let (x, y) = (
        NewMessage {
            client_id: Some(racing_id.clone()),
            ..new_message(direct, a, t0 + millis(14))
        },
        NewMessage {
            client_id: Some(racing_id.clone()),
            ..new_message(direct, a, t0 + millis(14))
        },
    );
    let (from_x, from_y) = tokio::join!(store.insert_message(&x), store.insert_message(&y));
    assert_eq!(from_x.unwrap(), from_y.unwrap());

    // Deleting leaves a tombstone in place; the first deletion counts.
    let victim = &sent[1];
    let t1 = t0 + Duration::minutes(1);
    let tombstone = store.delete_message(victim.id, t1).await.unwrap().unwrap();
    assert_eq!(
        tombstone,
        Message {
            body: None,
            deleted_at: Some(t1),
            ..victim.clone()
        }
    );
    assert_eq!(
        store
            .delete_message(victim.id, t1 + Duration::minutes(1))
            .await
            .unwrap(),
        Some(tombstone.clone())
    );
    assert_eq!(
        store.get_message(victim.id).await.unwrap(),
        Some(tombstone.clone())
    );
    assert_eq!(
        store
            .list_messages(direct, Some(sent[2].id), 10)
            .await
            .unwrap(),
        vec![tombstone, sent[0].clone()]
    );
    assert_eq!(
        store.delete_message(MessageId::new(), t1).await.unwrap(),
        None
    );

    // Group conversations page the same way.
    let group = new_group(a, t0);
    store.create_group(&group, &[b]).await.unwrap();
    let in_group = Conversation::Group(group.id);
    let first = store
        .insert_message(&new_message(in_group, a, t0))
        .await
        .unwrap();
    let second = store
        .insert_message(&new_message(in_group, b, t0 + millis(1)))
        .await
        .unwrap();
    assert_eq!(
        store.list_messages(in_group, None, 50).await.unwrap(),
        vec![second, first]
    );
}

/// Groups: creation with roles, renaming, membership changes, listings.
pub async fn groups(store: &dyn Store) {
    let t0 = now();
    let [owner, m1, m2, newcomer, loner] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let group = new_group(owner, t0);
    // Listing the owner among the members must not demote them.
    store.create_group(&group, &[m1, owner, m2]).await.unwrap();
    assert_eq!(
        store.get_group(group.id).await.unwrap(),
        Some(group.clone())
    );
    assert_eq!(store.get_group(GroupId::new()).await.unwrap(), None);

    let owner_member = store.group_member(group.id, owner).await.unwrap().unwrap();
    assert_eq!(owner_member.role, GroupRole::Owner);
    assert_eq!(owner_member.joined_at, group.created_at);
    let member = store.group_member(group.id, m1).await.unwrap().unwrap();
    assert_eq!(member.role, GroupRole::Member);
    assert_eq!(store.group_member(group.id, loner).await.unwrap(), None);
    let mut members: Vec<_> = store
        .list_group_members(group.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.user_id, m.role))
        .collect();
    members.sort_by_key(|(user, _)| *user);
    let mut expected = vec![
        (owner, GroupRole::Owner),
        (m1, GroupRole::Member),
        (m2, GroupRole::Member),
    ];
    expected.sort_by_key(|(user, _)| *user);
    assert_eq!(members, expected);

    assert!(store.rename_group(group.id, "Renamed").await.unwrap());
    assert_eq!(
        store.get_group(group.id).await.unwrap().unwrap().name,
        "Renamed"
    );
    assert!(!store.rename_group(GroupId::new(), "Nobody").await.unwrap());

    let t1 = t0 + Duration::minutes(1);
    assert!(
        store
            .add_group_member(group.id, newcomer, GroupRole::Admin, t1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_group_member(group.id, newcomer, GroupRole::Member, t1)
            .await
            .unwrap(),
        "adding a member twice reports false"
    );
    let added = store
        .group_member(group.id, newcomer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (added.user_id, added.role, added.joined_at),
        (newcomer, GroupRole::Admin, t1),
        "a second add changes nothing"
    );
    assert_eq!(store.list_group_members(group.id).await.unwrap().len(), 4);

    assert!(store.remove_group_member(group.id, m2).await.unwrap());
    assert!(!store.remove_group_member(group.id, m2).await.unwrap());
    assert_eq!(store.group_member(group.id, m2).await.unwrap(), None);
    assert_eq!(store.list_group_members(group.id).await.unwrap().len(), 3);

    let later = new_group(m2, t1);
    store.create_group(&later, &[m1]).await.unwrap();
    let ids = |groups: Vec<Group>| groups.into_iter().map(|g| g.id).collect::<Vec<_>>();
    let mut of_m1 = ids(store.list_user_groups(m1).await.unwrap());
    of_m1.sort();
    let mut both = vec![group.id, later.id];
    both.sort();
    assert_eq!(of_m1, both);
    assert_eq!(
        ids(store.list_user_groups(m2).await.unwrap()),
        vec![later.id],
        "a removed member no longer lists the group"
    );
    assert!(store.list_user_groups(loner).await.unwrap().is_empty());
}

/// The current time at millisecond precision.
fn now() -> OffsetDateTime {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(nanos - nanos.rem_euclid(1_000_000))
        .expect("the current time is representable")
}

fn millis(n: i64) -> Duration {
    Duration::milliseconds(n)
}

fn identity() -> Identity {
    let unique = Uuid::now_v7();
    Identity {
        issuer: "https://conformance.example".to_owned(),
        subject: format!("subject-{unique}"),
        email: Some(format!("{unique}@example.com")),
        email_verified: true,
        name: Some("Conformance".to_owned()),
        picture: Some(format!("https://example.com/{unique}.png")),
        hosted_domain: None,
    }
}

async fn new_user(store: &dyn Store) -> User {
    let (user, created) = store.upsert_user(&identity(), now()).await.unwrap();
    assert!(created);
    user
}

fn new_session(user: &User, at: OffsetDateTime) -> Session {
    Session {
        id: SessionId::new(),
        user_id: user.id,
        created_at: at,
        revoked_at: None,
    }
}

/// A fresh 32-byte hash: two UUIDv7s carry enough randomness to never
/// collide within a test run.
fn hash() -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..16].copy_from_slice(Uuid::now_v7().as_bytes());
    hash[16..].copy_from_slice(Uuid::now_v7().as_bytes());
    hash
}

fn token(session: &Session, expires_at: OffsetDateTime) -> RefreshToken {
    RefreshToken {
        hash: hash(),
        session_id: session.id,
        user_id: session.user_id,
        expires_at,
        spent_at: None,
        successor_hash: None,
    }
}

fn new_message(conversation: Conversation, sender: UserId, at: OffsetDateTime) -> NewMessage {
    let id = MessageId::new();
    NewMessage {
        id,
        conversation,
        sender,
        body: format!("message {id}"),
        client_id: None,
        created_at: at,
    }
}

fn expected(new: &NewMessage) -> Message {
    Message {
        id: new.id,
        conversation: new.conversation,
        sender: new.sender,
        body: Some(new.body.clone()),
        client_id: new.client_id.clone(),
        created_at: new.created_at,
        deleted_at: None,
    }
}

fn new_group(owner: UserId, at: OffsetDateTime) -> Group {
    let id = GroupId::new();
    Group {
        id,
        name: format!("group {id}"),
        owner,
        created_at: at,
    }
}

#[track_caller]
fn assert_code<T: Debug>(result: Result<T>, code: ErrorCode, what: &str) {
    match result {
        Err(error) => assert_eq!(error.code, code, "{what}: {error}"),
        Ok(value) => panic!("{what}: expected a {code:?} error, got Ok({value:?})"),
    }
}
