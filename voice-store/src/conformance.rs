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

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use voice_core::ErrorCode;
use voice_core::error::Result;
use voice_core::ids::{CallId, GroupId, MessageId, SessionId, UserId};
use voice_core::model::{
    CallOutcome, CallRecord, Conversation, ConversationAccess, ConversationSummary, FriendStatus,
    Group, GroupRole, Identity, Message, MessageDeletion, MessageInsert, NewMessage, RefreshToken,
    SendOutcome, Session, SpendOutcome, User,
};
use voice_core::store::Store;
use voice_core::wire::{Delivery, Event, Replay};

/// Runs every check in this module.
pub async fn run_all(store: &dyn Store) {
    ping(store).await;
    users(store).await;
    last_seen(store).await;
    search_users(store).await;
    sessions(store).await;
    refresh_tokens(store).await;
    friends(store).await;
    blocks(store).await;
    messages(store).await;
    message_seqs(store).await;
    sends(store).await;
    queued_sends_keep_their_order(store).await;
    conversation_access(store).await;
    read_state(store).await;
    conversation_list(store).await;
    groups(store).await;
    events(store).await;
    event_pruning(store).await;
    calls(store).await;
    call_history(store).await;
    ice_overrides(store).await;
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
    assert_eq!(user.last_seen_at, None);
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

/// `set_last_seen` records when a user was last connected; signing in
/// again keeps it.
pub async fn last_seen(store: &dyn Store) {
    let t0 = now();
    let identity = identity();
    let (user, _) = store.upsert_user(&identity, t0).await.unwrap();
    assert_eq!(user.last_seen_at, None, "never connected yet");

    let t1 = t0 + Duration::minutes(1);
    store.set_last_seen(user.id, t1).await.unwrap();
    assert_eq!(
        store.get_user(user.id).await.unwrap().unwrap().last_seen_at,
        Some(t1)
    );
    let t2 = t1 + Duration::minutes(1);
    store.set_last_seen(user.id, t2).await.unwrap();
    assert_eq!(
        store.get_user(user.id).await.unwrap().unwrap().last_seen_at,
        Some(t2)
    );
    let (again, created) = store
        .upsert_user(&identity, t2 + Duration::minutes(1))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.last_seen_at, Some(t2), "signing in keeps it");
}

/// `search_users`: a case-insensitive prefix of the name or the email,
/// ordered by name (ignoring case too), at most `limit`; `%`, `_` and `\`
/// in the query are ordinary characters.
pub async fn search_users(store: &dyn Store) {
    // Every name here starts with a fresh tag, so other data cannot match.
    let tag = || Uuid::now_v7().simple().to_string();
    let search = |query: String, limit| async move {
        store
            .search_users(&query, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|user| user.id)
            .collect::<Vec<_>>()
    };

    // Case is ignored for matching and for the order.
    let t = tag();
    let upper = t.to_uppercase();
    let alice = named_user(store, Some(&format!("{upper}Alice")), None).await;
    let bob = named_user(store, Some(&format!("{t}bob")), None).await;
    let carol = named_user(store, Some(&format!("{upper}Carol")), None).await;
    let everyone = vec![alice, bob, carol];
    assert_eq!(search(t.clone(), 10).await, everyone);
    assert_eq!(search(upper.clone(), 10).await, everyone);
    assert_eq!(search(format!("{t}B"), 10).await, vec![bob]);
    assert_eq!(search(t.clone(), 2).await, everyone[..2]);
    assert!(search(t.clone(), 0).await.is_empty());
    assert!(search(tag(), 10).await.is_empty(), "nobody has this name");

    // The email counts as well; the middle of a name does not.
    let t = tag();
    let dave = named_user(store, Some("Dave"), Some(&format!("{t}.Dave@Example.com"))).await;
    named_user(store, Some(&format!("Eve {t}")), None).await;
    assert_eq!(
        search(format!("{}.dAVE@", t.to_uppercase()), 10).await,
        vec![dave]
    );
    assert_eq!(search(t, 10).await, vec![dave]);

    // LIKE's wildcards and its usual escape character match themselves.
    let t = tag();
    let percent = named_user(store, Some(&format!("{t}%p")), None).await;
    let underscore = named_user(store, Some(&format!("{t}_u")), None).await;
    let backslash = named_user(store, Some(&format!("{t}\\w")), None).await;
    let plain = named_user(store, Some(&format!("{t}plain")), None).await;
    assert_eq!(search(format!("{t}%"), 10).await, vec![percent]);
    assert_eq!(search(format!("{t}_"), 10).await, vec![underscore]);
    assert_eq!(search(format!("{t}\\"), 10).await, vec![backslash]);
    let mut all = search(t, 10).await;
    all.sort();
    let mut expected = vec![percent, underscore, backslash, plain];
    expected.sort();
    assert_eq!(all, expected);

    // Case is ignored beyond ASCII too.
    let t = tag();
    let elodie = named_user(store, Some(&format!("{t}Élodie")), None).await;
    assert_eq!(search(format!("{t}élo"), 10).await, vec![elodie]);
    assert_eq!(search(t.clone(), 10).await, vec![elodie]);
    assert_eq!(
        search(format!("{}ÉLODIE", t.to_uppercase()), 10).await,
        vec![elodie]
    );
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

/// `unblock_user` lifts only the caller's own block, and only a block.
pub async fn blocks(store: &dyn Store) {
    let t0 = now();
    let [a, b, c] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    assert!(
        !store.unblock_user(a, b).await.unwrap(),
        "there was no block to lift"
    );

    store.block_user(a, b, t0).await.unwrap();
    assert!(
        !store.unblock_user(b, a).await.unwrap(),
        "the blocked user cannot lift the block"
    );
    assert_eq!(
        store.friendship(a, b).await.unwrap(),
        Some(FriendStatus::Blocked)
    );
    assert!(store.unblock_user(a, b).await.unwrap());
    assert_eq!(store.friendship(a, b).await.unwrap(), None);
    assert_eq!(store.friendship(b, a).await.unwrap(), None);
    assert!(
        !store.unblock_user(a, b).await.unwrap(),
        "lifting twice reports false"
    );
    assert_eq!(
        store.request_friend(b, a, t0).await.unwrap(),
        FriendStatus::RequestSent,
        "without the block they may ask again"
    );

    // A friendship is not a block: unblocking leaves it alone.
    store.request_friend(a, c, t0).await.unwrap();
    store.accept_friend(c, a, t0).await.unwrap();
    assert!(!store.unblock_user(a, c).await.unwrap());
    assert_eq!(
        store.friendship(a, c).await.unwrap(),
        Some(FriendStatus::Accepted)
    );

    // With blocks on both sides, each lifts only their own.
    store.block_user(a, b, t0).await.unwrap();
    store.block_user(b, a, t0).await.unwrap();
    assert!(store.unblock_user(a, b).await.unwrap());
    assert_eq!(store.friendship(a, b).await.unwrap(), None);
    assert_eq!(
        store.friendship(b, a).await.unwrap(),
        Some(FriendStatus::Blocked)
    );
    assert_code(
        store.request_friend(a, b, t0).await,
        ErrorCode::Conflict,
        "asking someone whose block still stands",
    );
}

/// Storing, numbering, paging, idempotent sends and tombstones, with the
/// events each insert and deletion appends.
pub async fn messages(store: &dyn Store) {
    let t0 = now();
    let [a, b, c] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let direct = Conversation::direct(a, b);
    let elsewhere = Conversation::direct(a, c);
    let mut logs = Logs::default();

    let mut sent: Vec<Message> = Vec::new();
    for i in 0..5 {
        let new = new_message(direct, if i % 2 == 0 { a } else { b }, t0 + millis(i));
        let inserted = store.insert_message(&new, &[a, b]).await.unwrap();
        assert!(inserted.created);
        assert_eq!(inserted.message, expected(&new, i as u64 + 1));
        logs.check(
            store,
            &inserted.deliveries,
            &[a, b],
            &Event::MessageCreated {
                message: inserted.message.clone(),
            },
        )
        .await;
        // Another conversation numbers its messages by itself and never
        // shows up in this one's history.
        let other = store
            .insert_message(&new_message(elsewhere, a, t0 + millis(i)), &[a, c])
            .await
            .unwrap();
        assert_eq!(other.message.seq, i as u64 + 1);
        logs.check(
            store,
            &other.deliveries,
            &[a, c],
            &Event::MessageCreated {
                message: other.message.clone(),
            },
        )
        .await;
        sent.push(inserted.message);
    }
    assert_eq!(
        store.get_message(sent[0].id).await.unwrap(),
        Some(sent[0].clone())
    );
    assert_eq!(store.get_message(MessageId::new()).await.unwrap(), None);

    // Newest first, by seq: below `before`, at most `readable_until`, at
    // most `limit`.
    let newest_first: Vec<Message> = sent.iter().rev().cloned().collect();
    let page = |before, until, limit| store.list_messages(direct, before, until, limit);
    assert_eq!(page(None, None, 10).await.unwrap(), newest_first);
    assert_eq!(page(None, None, 2).await.unwrap(), newest_first[..2]);
    assert_eq!(page(Some(3), None, 10).await.unwrap(), newest_first[3..]);
    assert_eq!(page(Some(5), None, 2).await.unwrap(), newest_first[1..3]);
    assert_eq!(page(Some(100), None, 10).await.unwrap(), newest_first);
    assert!(page(Some(1), None, 10).await.unwrap().is_empty());
    assert!(page(Some(0), None, 10).await.unwrap().is_empty());
    assert_eq!(page(None, Some(3), 10).await.unwrap(), newest_first[2..]);
    assert_eq!(page(None, Some(3), 1).await.unwrap(), newest_first[2..3]);
    assert_eq!(page(Some(3), Some(4), 10).await.unwrap(), newest_first[3..]);
    assert_eq!(page(Some(5), Some(2), 10).await.unwrap(), newest_first[3..]);
    assert_eq!(page(None, Some(100), 10).await.unwrap(), newest_first);
    assert!(page(None, Some(0), 10).await.unwrap().is_empty());
    assert!(page(None, None, 0).await.unwrap().is_empty());
    assert!(
        store
            .list_messages(Conversation::direct(b, c), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // No recipients, no events.
    let quiet = store
        .insert_message(&new_message(direct, a, t0 + millis(9)), &[])
        .await
        .unwrap();
    assert!(quiet.created);
    assert_eq!(quiet.message.seq, 6);
    assert!(quiet.deliveries.is_empty());

    // With a client id, a second send returns the first message unchanged,
    // delivers nothing and uses no seq.
    let client_id = format!("client-{}", Uuid::now_v7());
    let first = NewMessage {
        client_id: Some(client_id.clone()),
        ..new_message(direct, a, t0 + millis(10))
    };
    let inserted = store.insert_message(&first, &[a, b]).await.unwrap();
    assert!(inserted.created);
    assert_eq!(inserted.message, expected(&first, 7));
    logs.check(
        store,
        &inserted.deliveries,
        &[a, b],
        &Event::MessageCreated {
            message: inserted.message.clone(),
        },
    )
    .await;
    let resend = NewMessage {
        client_id: Some(client_id.clone()),
        body: "a different body".to_owned(),
        ..new_message(direct, a, t0 + millis(11))
    };
    let again = store.insert_message(&resend, &[a, b]).await.unwrap();
    assert_eq!(
        again,
        MessageInsert {
            message: inserted.message.clone(),
            created: false,
            deliveries: Vec::new(),
        }
    );
    assert_eq!(store.get_message(resend.id).await.unwrap(), None);
    logs.check_unchanged(store, &[a, b]).await;
    // Another sender may use the same client id; it takes the next seq.
    let theirs = NewMessage {
        client_id: Some(client_id.clone()),
        ..new_message(direct, b, t0 + millis(12))
    };
    let inserted = store.insert_message(&theirs, &[a, b]).await.unwrap();
    assert!(inserted.created);
    assert_eq!(inserted.message, expected(&theirs, 8));
    logs.count(&inserted.deliveries);
    // Without a client id, identical bodies are separate messages.
    let plain = new_message(direct, a, t0 + millis(13));
    let twin = NewMessage {
        body: plain.body.clone(),
        ..new_message(direct, a, t0 + millis(13))
    };
    let plain = store.insert_message(&plain, &[a, b]).await.unwrap();
    let twin = store.insert_message(&twin, &[a, b]).await.unwrap();
    assert_eq!((plain.message.seq, twin.message.seq), (9, 10));
    logs.count(&plain.deliveries);
    logs.count(&twin.deliveries);
    // Concurrent sends with one client id store one message and deliver
    // it once.
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
    let both = [a, b];
    let (from_x, from_y) = tokio::join!(
        store.insert_message(&x, &both),
        store.insert_message(&y, &both)
    );
    let (from_x, from_y) = (from_x.unwrap(), from_y.unwrap());
    assert_eq!(from_x.message, from_y.message);
    assert_eq!(from_x.message.seq, 11);
    assert!(from_x.created != from_y.created, "exactly one was created");
    assert_eq!(from_x.deliveries.len() + from_y.deliveries.len(), 2);
    logs.count(&from_x.deliveries);
    logs.count(&from_y.deliveries);
    logs.check_unchanged(store, &[a, b]).await;

    // Every message has its own seq, 1, 2, 3... without a gap.
    let seqs: Vec<u64> = store
        .list_messages(direct, None, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|message| message.seq)
        .collect();
    assert_eq!(seqs, (1..=11).rev().collect::<Vec<_>>());

    // Deleting leaves a tombstone in place and tells the recipients; the
    // first deletion counts and a second delivers nothing.
    let victim = &sent[1];
    let t1 = t0 + Duration::minutes(1);
    let deletion = store
        .delete_message(victim.id, t1, &[a, b])
        .await
        .unwrap()
        .unwrap();
    let tombstone = Message {
        body: None,
        deleted_at: Some(t1),
        ..victim.clone()
    };
    assert_eq!(deletion.message, tombstone);
    logs.check(
        store,
        &deletion.deliveries,
        &[a, b],
        &Event::MessageDeleted {
            conversation: direct,
            message_id: victim.id,
            message_seq: victim.seq,
        },
    )
    .await;
    assert!(deletion.deliveries.iter().all(|d| d.created_at == t1));
    assert_eq!(
        store
            .delete_message(victim.id, t1 + Duration::minutes(1), &[a, b])
            .await
            .unwrap(),
        Some(MessageDeletion {
            message: tombstone.clone(),
            deliveries: Vec::new(),
        })
    );
    logs.check_unchanged(store, &[a, b]).await;
    assert_eq!(
        store.get_message(victim.id).await.unwrap(),
        Some(tombstone.clone())
    );
    // The logs it was delivered to replay the tombstone, not the body.
    for user in [a, b] {
        let Replay::Events(log) = store.events_since(user, 0, 1000).await.unwrap() else {
            panic!("nothing was pruned");
        };
        let replayed: Vec<&Message> = log
            .iter()
            .filter_map(|delivery| match &*delivery.event {
                Event::MessageCreated { message } if message.id == victim.id => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(replayed, vec![&tombstone], "{user}'s log");
    }
    assert_eq!(
        page(Some(3), None, 10).await.unwrap(),
        vec![tombstone, sent[0].clone()]
    );
    assert_eq!(
        store
            .delete_message(MessageId::new(), t1, &[a, b])
            .await
            .unwrap(),
        None
    );
    // A deletion frees no seq.
    let after = store
        .insert_message(&new_message(direct, b, t1), &[a, b])
        .await
        .unwrap();
    assert_eq!(after.message.seq, 12);

    // Group conversations number and page the same way.
    let group = new_group(a, t0);
    store.create_group(&group, &[b]).await.unwrap();
    let in_group = Conversation::Group(group.id);
    let first = store
        .insert_message(&new_message(in_group, a, t0), &[a, b])
        .await
        .unwrap()
        .message;
    let second = store
        .insert_message(&new_message(in_group, b, t0 + millis(1)), &[a, b])
        .await
        .unwrap()
        .message;
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(
        store.list_messages(in_group, None, None, 50).await.unwrap(),
        vec![second, first]
    );
}

/// Concurrent sends into two conversations: each numbers its own messages
/// 1, 2, 3... with no gap and no repeat, in commit order.
pub async fn message_seqs(store: &dyn Store) {
    let t0 = now();
    let [a, b, c] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let one = Conversation::direct(a, b);
    let two = Conversation::direct(b, c);
    let send = |conversation: Conversation, sender: UserId, recipients: [UserId; 2]| async move {
        let mut seqs = Vec::new();
        for i in 0..10 {
            let new = new_message(conversation, sender, t0 + millis(i));
            let inserted = store.insert_message(&new, &recipients).await.unwrap();
            seqs.push(inserted.message.seq);
        }
        seqs
    };
    let (s1, s2, s3, s4) = tokio::join!(
        send(one, a, [a, b]),
        send(one, b, [a, b]),
        send(two, b, [b, c]),
        send(two, c, [b, c]),
    );
    for (conversation, seqs) in [(one, [s1, s2]), (two, [s3, s4])] {
        // Each sender's own sends were answered in order...
        for seqs in &seqs {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        }
        // ...and together they are exactly 1..=20.
        let mut all: Vec<u64> = seqs.concat();
        all.sort_unstable();
        assert_eq!(all, (1..=20).collect::<Vec<_>>(), "{conversation}");
        let listed: Vec<u64> = store
            .list_messages(conversation, None, None, 100)
            .await
            .unwrap()
            .iter()
            .map(|message| message.seq)
            .collect();
        assert_eq!(listed, (1..=20).rev().collect::<Vec<_>>());
    }
    // b received all 40, in one log, numbered 1..=40.
    assert_eq!(store.latest_event_seq(b).await.unwrap(), 40);
    assert_eq!(store.latest_event_seq(a).await.unwrap(), 20);
}

/// `send_message` stores a message only where its sender may send, and
/// delivers it to the conversation's participants of that moment.
pub async fn sends(store: &dyn Store) {
    let t0 = now();
    let [a, b, stranger, owner, former] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let stored = |outcome: SendOutcome| match outcome {
        SendOutcome::Stored(inserted) => inserted,
        SendOutcome::NotAllowed => panic!("a permitted send was refused"),
    };
    let send = |conversation: Conversation, sender: UserId, at: OffsetDateTime| {
        store.send_message(new_message(conversation, sender, at))
    };
    // Refused by send_message, and so by allowed_recipients, which
    // applies the same rule without storing anything.
    let refused = async |conversation: Conversation, sender: UserId, what: &str| {
        let outcome = send(conversation, sender, t0).await.unwrap();
        assert_eq!(outcome, SendOutcome::NotAllowed, "{what}");
        let recipients = store.allowed_recipients(sender, conversation).await;
        assert_eq!(recipients.unwrap(), None, "{what}");
    };
    let direct = Conversation::direct(a, b);

    refused(direct, a, "no relationship").await;
    store.request_friend(a, b, t0).await.unwrap();
    refused(direct, a, "a pending request").await;
    store.accept_friend(b, a, t0).await.unwrap();
    assert_eq!(
        store.allowed_recipients(b, direct).await.unwrap(),
        Some(vec![a.min(b), a.max(b)])
    );
    let new = new_message(direct, b, t0 + millis(1));
    let inserted = stored(store.send_message(new.clone()).await.unwrap());
    assert_eq!(inserted.message, expected(&new, 1));
    assert!(inserted.created);
    let event = Event::MessageCreated {
        message: inserted.message.clone(),
    };
    assert_eq!(
        inserted.deliveries,
        vec![
            delivery(a.min(b), 1, event.clone(), new.created_at),
            delivery(a.max(b), 1, event, new.created_at),
        ]
    );
    // Idempotent with a client_id, as insert_message is.
    let mut retried = new_message(direct, a, t0 + millis(2));
    retried.client_id = Some(format!("client-{}", Uuid::now_v7()));
    let first = stored(store.send_message(retried.clone()).await.unwrap());
    let mut again = retried.clone();
    again.id = MessageId::new();
    let second = stored(store.send_message(again).await.unwrap());
    assert!(first.created && !second.created);
    assert_eq!(second.message, first.message);
    assert!(second.deliveries.is_empty());
    // A user is never a party to someone else's conversation.
    refused(direct, stranger, "an outsider").await;
    store.block_user(b, a, t0).await.unwrap();
    refused(direct, a, "blocked").await;

    let group = new_group(owner, t0);
    store.create_group(&group, &[a, former]).await.unwrap();
    store.remove_group_member(group.id, former).await.unwrap();
    let in_group = Conversation::Group(group.id);
    refused(in_group, stranger, "not a member").await;
    refused(in_group, former, "a former member").await;
    refused(Conversation::Group(GroupId::new()), a, "no such group").await;
    let inserted = stored(send(in_group, a, t0 + millis(3)).await.unwrap());
    let mut recipients: Vec<UserId> = inserted.deliveries.iter().map(|d| d.user_id).collect();
    recipients.sort_unstable();
    let mut members = vec![owner, a];
    members.sort_unstable();
    assert_eq!(recipients, members, "the current members, the sender too");
    let mut allowed = store
        .allowed_recipients(a, in_group)
        .await
        .unwrap()
        .expect("a member may speak in the group");
    allowed.sort_unstable();
    assert_eq!(allowed, members);
    assert_eq!(inserted.message.seq, 1);
}

/// Sends queued one after another are stored in that order, however their
/// futures are awaited: each is queued by the call, not by its first poll.
pub async fn queued_sends_keep_their_order(store: &dyn Store) {
    let t0 = now();
    let [a, b] = [new_user(store).await.id, new_user(store).await.id];
    store.request_friend(a, b, t0).await.unwrap();
    store.accept_friend(b, a, t0).await.unwrap();
    let conversation = Conversation::direct(a, b);
    let sent: Vec<NewMessage> = (0..40)
        .map(|i| new_message(conversation, if i % 3 == 0 { b } else { a }, t0 + millis(i)))
        .collect();
    let queued: Vec<_> = sent
        .iter()
        .map(|message| store.send_message(message.clone()))
        .collect();
    // Awaited last first: the last one's outcome cannot be known before
    // all the others were stored, and it must not have jumped ahead.
    let mut seqs = Vec::new();
    for outcome in queued.into_iter().rev() {
        match outcome.await.unwrap() {
            SendOutcome::Stored(inserted) => seqs.push(inserted.message.seq),
            SendOutcome::NotAllowed => panic!("a send between friends was refused"),
        }
    }
    seqs.reverse();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    let listed: Vec<MessageId> = store
        .list_messages(conversation, None, None, 100)
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|message| message.id)
        .collect();
    let ids: Vec<MessageId> = sent.iter().map(|message| message.id).collect();
    assert_eq!(listed, ids);
}

/// Who may read what: a direct conversation's two users; a group's
/// current members all of it, its former members up to where they left.
pub async fn conversation_access(store: &dyn Store) {
    let t0 = now();
    let [owner, stays, leaves, stranger] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let full = Some(ConversationAccess {
        readable_until: None,
    });
    let until = |seq| {
        Some(ConversationAccess {
            readable_until: Some(seq),
        })
    };

    // Direct: by the id alone, even before any message.
    let direct = Conversation::direct(owner, stays);
    for (user, access) in [(owner, full), (stays, full), (stranger, None)] {
        assert_eq!(
            store.conversation_access(user, direct).await.unwrap(),
            access
        );
    }
    let (x, y) = (UserId::new(), UserId::new());
    assert_eq!(
        store
            .conversation_access(x, Conversation::direct(x, y))
            .await
            .unwrap(),
        full
    );

    let group = new_group(owner, t0);
    store.create_group(&group, &[stays, leaves]).await.unwrap();
    let conversation = Conversation::Group(group.id);
    for user in [owner, stays, leaves] {
        assert_eq!(
            store.conversation_access(user, conversation).await.unwrap(),
            full
        );
    }
    for i in 0..3 {
        store
            .insert_message(&new_message(conversation, owner, t0 + millis(i)), &[])
            .await
            .unwrap();
    }
    assert!(store.remove_group_member(group.id, leaves).await.unwrap());
    for i in 3..5 {
        store
            .insert_message(&new_message(conversation, stays, t0 + millis(i)), &[])
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .conversation_access(leaves, conversation)
            .await
            .unwrap(),
        until(3),
        "a former member reads up to where they left"
    );
    assert_eq!(
        store
            .conversation_access(stays, conversation)
            .await
            .unwrap(),
        full
    );
    assert_eq!(
        store
            .conversation_access(stranger, conversation)
            .await
            .unwrap(),
        None,
        "never a member"
    );
    assert_eq!(
        store
            .conversation_access(owner, Conversation::Group(GroupId::new()))
            .await
            .unwrap(),
        None,
        "no such group"
    );
    // What a former member's page holds.
    let seqs = |messages: Vec<Message>| messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(
            store
                .list_messages(conversation, None, Some(3), 10)
                .await
                .unwrap()
        ),
        vec![3, 2, 1]
    );

    // Back in: full access again. Out again: the new point counts.
    assert!(
        store
            .add_group_member(group.id, leaves, GroupRole::Member, t0)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .conversation_access(leaves, conversation)
            .await
            .unwrap(),
        full
    );
    assert!(store.remove_group_member(group.id, leaves).await.unwrap());
    assert_eq!(
        store
            .conversation_access(leaves, conversation)
            .await
            .unwrap(),
        until(5)
    );

    // Leaving before any message leaves nothing to read.
    let quiet = new_group(owner, t0);
    store.create_group(&quiet, &[leaves]).await.unwrap();
    assert!(store.remove_group_member(quiet.id, leaves).await.unwrap());
    assert_eq!(
        store
            .conversation_access(leaves, Conversation::Group(quiet.id))
            .await
            .unwrap(),
        until(0)
    );
}

/// Read marks never move backwards; unread counts only others' live
/// messages after the mark, within what the user may read.
pub async fn read_state(store: &dyn Store) {
    let t0 = now();
    let [a, b, c] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let direct = Conversation::direct(a, b);
    for (i, sender) in [a, a, a, b, b].into_iter().enumerate() {
        store
            .insert_message(&new_message(direct, sender, t0 + millis(i as i64)), &[a, b])
            .await
            .unwrap();
    }
    assert_eq!(read_of(store, a, direct).await, (2, 0));
    assert_eq!(read_of(store, b, direct).await, (3, 0));

    store.mark_read(a, direct, 4).await.unwrap();
    assert_eq!(read_of(store, a, direct).await, (1, 4));
    store.mark_read(a, direct, 2).await.unwrap();
    assert_eq!(
        read_of(store, a, direct).await,
        (1, 4),
        "a read mark never moves backwards"
    );
    assert_eq!(
        read_of(store, b, direct).await,
        (3, 0),
        "each user has their own mark"
    );
    store.mark_read(a, direct, 5).await.unwrap();
    assert_eq!(read_of(store, a, direct).await, (0, 5));

    // Deleted messages are not unread.
    let t1 = t0 + Duration::seconds(1);
    let gone = store
        .insert_message(&new_message(direct, b, t1), &[a, b])
        .await
        .unwrap()
        .message;
    store
        .insert_message(&new_message(direct, b, t1 + millis(1)), &[a, b])
        .await
        .unwrap();
    assert_eq!(read_of(store, a, direct).await, (2, 5));
    store.delete_message(gone.id, t1, &[a, b]).await.unwrap();
    assert_eq!(read_of(store, a, direct).await, (1, 5));

    // In a group, a former member's unread stops where they left.
    let group = new_group(a, t0);
    store.create_group(&group, &[b, c]).await.unwrap();
    let conversation = Conversation::Group(group.id);
    for i in 0..3 {
        store
            .insert_message(&new_message(conversation, a, t1 + millis(i)), &[])
            .await
            .unwrap();
    }
    store.mark_read(c, conversation, 1).await.unwrap();
    assert!(store.remove_group_member(group.id, c).await.unwrap());
    for i in 3..6 {
        store
            .insert_message(&new_message(conversation, b, t1 + millis(i)), &[])
            .await
            .unwrap();
    }
    assert_eq!(read_of(store, c, conversation).await, (2, 1));
    assert_eq!(read_of(store, b, conversation).await, (3, 0));
    assert_eq!(read_of(store, a, conversation).await, (3, 0));
    store.mark_read(b, conversation, 6).await.unwrap();
    assert_eq!(read_of(store, b, conversation).await, (0, 6));
}

/// `list_conversations`: every conversation the user takes or took part
/// in, newest activity first, with what they may read of it.
pub async fn conversation_list(store: &dyn Store) {
    let t0 = now();
    let [user, p, q, r, other] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    assert!(store.list_conversations(user).await.unwrap().is_empty());

    // A group the user left: only what they could read counts, even for
    // the order.
    let left = new_group(other, t0);
    store.create_group(&left, &[user]).await.unwrap();
    let left_conversation = Conversation::Group(left.id);
    let last_seen_there = store
        .insert_message(
            &new_message(left_conversation, other, t0 + millis(500)),
            &[],
        )
        .await
        .unwrap()
        .message;
    assert!(store.remove_group_member(left.id, user).await.unwrap());
    store
        .insert_message(
            &new_message(left_conversation, other, t0 + Duration::seconds(10)),
            &[],
        )
        .await
        .unwrap();

    let with_p = Conversation::direct(user, p);
    let to_p = store
        .insert_message(
            &new_message(with_p, user, t0 + Duration::seconds(1)),
            &[user, p],
        )
        .await
        .unwrap()
        .message;
    // A group with no message yet is listed from its membership.
    let quiet = new_group(other, t0 + Duration::seconds(2));
    store.create_group(&quiet, &[user]).await.unwrap();
    let with_q = Conversation::direct(q, user);
    let from_q = store
        .insert_message(
            &new_message(with_q, q, t0 + Duration::seconds(3)),
            &[user, q],
        )
        .await
        .unwrap()
        .message;
    // Not listed: a direct conversation without a message (marking it read
    // does not make one), and a group the user never joined.
    store
        .mark_read(user, Conversation::direct(user, r), 1)
        .await
        .unwrap();
    let elsewhere = new_group(other, t0 + Duration::seconds(4));
    store.create_group(&elsewhere, &[p]).await.unwrap();

    let listed = store.list_conversations(user).await.unwrap();
    assert_eq!(
        listed,
        vec![
            ConversationSummary {
                conversation: with_q,
                last_message: Some(from_q.clone()),
                unread: 1,
                last_read_seq: 0,
                active: true,
            },
            ConversationSummary {
                conversation: Conversation::Group(quiet.id),
                last_message: None,
                unread: 0,
                last_read_seq: 0,
                active: true,
            },
            ConversationSummary {
                conversation: with_p,
                last_message: Some(to_p.clone()),
                unread: 0,
                last_read_seq: 0,
                active: true,
            },
            ConversationSummary {
                conversation: left_conversation,
                last_message: Some(last_seen_there),
                unread: 1,
                last_read_seq: 0,
                active: false,
            },
        ]
    );

    // New activity moves a conversation up; the other side lists it too.
    let reply = store
        .insert_message(
            &new_message(with_p, p, t0 + Duration::seconds(5)),
            &[user, p],
        )
        .await
        .unwrap()
        .message;
    store.mark_read(user, with_p, reply.seq).await.unwrap();
    let listed = store.list_conversations(user).await.unwrap();
    assert_eq!(listed[0].conversation, with_p);
    assert_eq!(listed[0].last_message, Some(reply));
    assert_eq!((listed[0].unread, listed[0].last_read_seq), (0, 2));
    // (p is also in the group the user never joined, which is newer.)
    let of_p: Vec<_> = store
        .list_conversations(p)
        .await
        .unwrap()
        .into_iter()
        .map(|summary| (summary.conversation, summary.unread))
        .collect();
    assert_eq!(
        of_p,
        vec![(with_p, 1), (Conversation::Group(elsewhere.id), 0)]
    );

    // The last readable message may be a tombstone.
    let deletion = store
        .delete_message(from_q.id, t0 + Duration::seconds(6), &[])
        .await
        .unwrap()
        .unwrap();
    let listed = store.list_conversations(user).await.unwrap();
    let summary = listed
        .iter()
        .find(|summary| summary.conversation == with_q)
        .unwrap();
    assert_eq!(summary.last_message, Some(deletion.message));
    assert_eq!(summary.unread, 0, "a deleted message is not unread");

    // Back in the group: active again, and its newer messages readable.
    assert!(
        store
            .add_group_member(left.id, user, GroupRole::Member, t0)
            .await
            .unwrap()
    );
    let listed = store.list_conversations(user).await.unwrap();
    let summary = &listed[0];
    assert_eq!(summary.conversation, left_conversation);
    assert!(summary.active);
    assert_eq!(summary.unread, 2);
    assert_eq!(summary.last_message.as_ref().map(|m| m.seq), Some(2));
}

/// Groups: creation with roles, renaming, membership changes, listings,
/// and former members who come back.
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
    assert!(
        !store.remove_group_member(group.id, loner).await.unwrap(),
        "removing someone who never was a member"
    );
    assert_eq!(store.group_member(group.id, m2).await.unwrap(), None);
    assert_eq!(store.list_group_members(group.id).await.unwrap().len(), 3);
    assert!(
        store
            .list_group_members(group.id)
            .await
            .unwrap()
            .iter()
            .all(|member| member.user_id != m2),
        "a former member is not listed"
    );
    let mut listed: Vec<UserId> = store
        .list_group_members(group.id)
        .await
        .unwrap()
        .into_iter()
        .map(|member| member.user_id)
        .collect();
    let mut member_ids = store.group_member_ids(group.id).await.unwrap();
    listed.sort();
    member_ids.sort();
    assert_eq!(member_ids, listed, "the ids are the listed members'");

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

    // A former member added again is a member again, as added now.
    let t2 = t1 + Duration::minutes(1);
    assert!(
        store
            .add_group_member(group.id, m2, GroupRole::Admin, t2)
            .await
            .unwrap(),
        "adding a former member reports true"
    );
    let back = store.group_member(group.id, m2).await.unwrap().unwrap();
    assert_eq!(
        (back.user_id, back.role, back.joined_at),
        (m2, GroupRole::Admin, t2)
    );
    assert_eq!(store.list_group_members(group.id).await.unwrap().len(), 4);
    let mut of_m2 = ids(store.list_user_groups(m2).await.unwrap());
    of_m2.sort();
    assert_eq!(of_m2, both);
}

/// The per-user event log: numbering from 1 per user, replay in order
/// and in pages, and when a replay is impossible.
pub async fn events(store: &dyn Store) {
    let t0 = now();
    let [a, b] = [new_user(store).await.id, new_user(store).await.id];
    assert_eq!(store.latest_event_seq(a).await.unwrap(), 0);
    assert_eq!(
        store.latest_event_seq(UserId::new()).await.unwrap(),
        0,
        "a user never seen has no events"
    );
    assert_eq!(
        store.events_since(a, 0, 10).await.unwrap(),
        Replay::Events(vec![])
    );
    assert_eq!(
        store.events_since(a, 1, 10).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 0 },
        "a client ahead of the log must resync"
    );
    assert!(store.append_events(&[], t0).await.unwrap().is_empty());

    // Each user counts for themselves; the answer keeps the input order.
    let (e1, e2, e3) = (event(), event(), event());
    let first = store
        .append_events(&[(a, e1.clone()), (b, e2.clone()), (a, e3.clone())], t0)
        .await
        .unwrap();
    assert_eq!(
        first,
        vec![
            delivery(a, 1, e1, t0),
            delivery(b, 1, e2, t0),
            delivery(a, 2, e3, t0),
        ]
    );
    let t1 = t0 + millis(1);
    let more: Vec<(UserId, Event)> = (0..3).map(|_| (a, event())).collect();
    let second = store.append_events(&more, t1).await.unwrap();
    assert_eq!(
        second.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(store.latest_event_seq(a).await.unwrap(), 5);
    assert_eq!(store.latest_event_seq(b).await.unwrap(), 1);

    // Oldest first, after `since`, at most `limit`.
    let log_of_a: Vec<Delivery> = first
        .iter()
        .filter(|d| d.user_id == a)
        .chain(&second)
        .cloned()
        .collect();
    let replay = |since, limit| store.events_since(a, since, limit);
    assert_eq!(
        replay(0, 100).await.unwrap(),
        Replay::Events(log_of_a.clone())
    );
    assert_eq!(
        replay(0, 2).await.unwrap(),
        Replay::Events(log_of_a[..2].to_vec())
    );
    assert_eq!(
        replay(2, 2).await.unwrap(),
        Replay::Events(log_of_a[2..4].to_vec())
    );
    assert_eq!(
        replay(4, 100).await.unwrap(),
        Replay::Events(log_of_a[4..].to_vec())
    );
    assert_eq!(replay(5, 100).await.unwrap(), Replay::Events(vec![]));
    assert_eq!(replay(0, 0).await.unwrap(), Replay::Events(vec![]));
    assert_eq!(
        replay(6, 100).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 5 }
    );
    assert_eq!(
        store.events_since(b, 0, 100).await.unwrap(),
        Replay::Events(vec![first[1].clone()])
    );

    // Concurrent appends to one user never share a seq.
    let (two, one) = ([(b, event()), (b, event())], [(b, event())]);
    let (x, y) = tokio::join!(store.append_events(&two, t1), store.append_events(&one, t1));
    let mut seqs: Vec<u64> = x
        .unwrap()
        .iter()
        .chain(&y.unwrap())
        .map(|d| d.seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![2, 3, 4]);
}

/// Pruning drops old events, keeps the numbering going, and makes a replay
/// that would miss a pruned event a resync.
///
/// Pruning is global, so this check dates its events in 2001: it never
/// prunes what other checks (dated now) wrote. Two runs sharing a database
/// may prune each other's 2001 events; run it alone.
pub async fn event_pruning(store: &dyn Store) {
    let base = OffsetDateTime::from_unix_timestamp(978_307_200).expect("2001 is representable");
    let hour = Duration::hours(1);
    let [u, v] = [new_user(store).await.id, new_user(store).await.id];
    let old: Vec<(UserId, Event)> = (0..3).map(|_| (u, event())).collect();
    store.append_events(&old, base).await.unwrap();
    let newer = store
        .append_events(&[(u, event()), (u, event()), (v, event())], base + hour)
        .await
        .unwrap();

    let removed = store.prune_events(base + hour / 2).await.unwrap();
    assert!(removed >= 3, "pruned {removed}");
    let replay = |user, since| store.events_since(user, since, 100);
    assert_eq!(
        replay(u, 0).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 5 }
    );
    assert_eq!(
        replay(u, 2).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 5 }
    );
    assert_eq!(
        replay(u, 3).await.unwrap(),
        Replay::Events(newer[..2].to_vec()),
        "a client that had everything pruned replays the rest"
    );
    assert_eq!(replay(u, 5).await.unwrap(), Replay::Events(vec![]));
    assert_eq!(
        replay(u, 6).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 5 }
    );
    assert_eq!(
        replay(v, 0).await.unwrap(),
        Replay::Events(newer[2..].to_vec()),
        "newer events stay"
    );
    assert_eq!(store.latest_event_seq(u).await.unwrap(), 5);

    // Pruning everything keeps the numbering.
    let sixth = store
        .append_events(&[(u, event())], base + hour)
        .await
        .unwrap();
    assert_eq!(sixth[0].seq, 6);
    let removed = store.prune_events(base + hour * 2).await.unwrap();
    assert!(removed >= 4, "pruned {removed}");
    assert_eq!(store.latest_event_seq(u).await.unwrap(), 6);
    assert_eq!(replay(u, 6).await.unwrap(), Replay::Events(vec![]));
    assert_eq!(
        replay(u, 5).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 6 }
    );
    assert_eq!(
        replay(v, 0).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 1 }
    );
    let next = store
        .append_events(&[(v, event())], base + hour)
        .await
        .unwrap();
    assert_eq!(next[0].seq, 2);
    assert_eq!(replay(v, 1).await.unwrap(), Replay::Events(next));

    // A log loses only its leading old events: one dated before the cut
    // but logged after a newer one stays, so the log has no hole.
    let w = new_user(store).await.id;
    let mut logged = Vec::new();
    for at in [base, base + hour * 3, base] {
        logged.extend(store.append_events(&[(w, event())], at).await.unwrap());
    }
    let removed = store.prune_events(base + hour).await.unwrap();
    assert!(removed >= 1, "pruned {removed}");
    assert_eq!(
        replay(w, 0).await.unwrap(),
        Replay::ResyncRequired { latest_seq: 3 }
    );
    assert_eq!(
        replay(w, 1).await.unwrap(),
        Replay::Events(logged[1..].to_vec()),
        "the old event behind a newer one is kept"
    );
}

/// A call's record through its life: recorded as it starts or already
/// over, answered, ended once (the first ending wins, racing or not), and
/// listed among the calls still on exactly while it has no outcome.
///
/// `unfinished_calls` is global: this looks only at the calls it made.
pub async fn calls(store: &dyn Store) {
    let t0 = now();
    let [a, b, c] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    let get = |id| async move { store.get_call(id).await.unwrap() };
    let mut ours = HashSet::new();

    // A call as it starts.
    let ringing = call(a, b, t0);
    ours.insert(ringing.id);
    store.insert_call(&ringing).await.unwrap();
    assert_eq!(get(ringing.id).await, Some(ringing.clone()));
    assert_eq!(get(CallId::new()).await, None);
    assert_code(
        store
            .insert_call(&CallRecord {
                caller: c,
                ..ringing.clone()
            })
            .await,
        ErrorCode::Conflict,
        "recording a call id twice",
    );
    assert_eq!(
        get(ringing.id).await,
        Some(ringing.clone()),
        "the first record stays"
    );
    assert_code(
        store.insert_call(&call(a, UserId::new(), t0)).await,
        ErrorCode::NotFound,
        "calling a user who does not exist",
    );
    assert_code(
        store.insert_call(&call(UserId::new(), a, t0)).await,
        ErrorCode::NotFound,
        "a call from a user who does not exist",
    );

    // Answered: the call is still on.
    let t1 = t0 + Duration::seconds(5);
    assert!(store.mark_call_answered(ringing.id, t1).await.unwrap());
    let answered = CallRecord {
        answered_at: Some(t1),
        ..ringing.clone()
    };
    assert_eq!(get(ringing.id).await, Some(answered.clone()));
    assert!(
        !store.mark_call_answered(CallId::new(), t1).await.unwrap(),
        "answering an unknown call"
    );

    // Ended, once: a second ending changes nothing.
    let t2 = t1 + Duration::minutes(3);
    assert!(
        store
            .finish_call(ringing.id, CallOutcome::Answered, "hung up", t2)
            .await
            .unwrap()
    );
    let ended = CallRecord {
        ended_at: Some(t2),
        outcome: Some(CallOutcome::Answered),
        reason: Some("hung up".to_owned()),
        ..answered
    };
    assert_eq!(get(ringing.id).await, Some(ended.clone()));
    let t3 = t2 + Duration::seconds(1);
    assert!(
        !store
            .finish_call(ringing.id, CallOutcome::Failed, "server restarted", t3)
            .await
            .unwrap(),
        "ending an ended call"
    );
    assert!(
        !store.mark_call_answered(ringing.id, t3).await.unwrap(),
        "answering an ended call"
    );
    assert_eq!(
        get(ringing.id).await,
        Some(ended.clone()),
        "the first ending stays"
    );
    assert!(
        !store
            .finish_call(CallId::new(), CallOutcome::Missed, "no answer", t3)
            .await
            .unwrap(),
        "ending an unknown call"
    );

    // Rang out: ended without ever being answered.
    let unanswered = call(b, c, t0 + millis(1));
    ours.insert(unanswered.id);
    store.insert_call(&unanswered).await.unwrap();
    assert!(
        store
            .finish_call(unanswered.id, CallOutcome::Missed, "no answer", t1)
            .await
            .unwrap()
    );
    assert_eq!(
        get(unanswered.id).await,
        Some(CallRecord {
            ended_at: Some(t1),
            outcome: Some(CallOutcome::Missed),
            reason: Some("no answer".to_owned()),
            ..unanswered
        })
    );

    // Over before it began: a busy attempt is recorded finished, and
    // stays as recorded.
    let busy = CallRecord {
        ended_at: Some(t0),
        outcome: Some(CallOutcome::Busy),
        reason: Some("in another call".to_owned()),
        ..call(c, a, t0)
    };
    ours.insert(busy.id);
    store.insert_call(&busy).await.unwrap();
    assert_eq!(get(busy.id).await, Some(busy.clone()));
    assert!(!store.mark_call_answered(busy.id, t1).await.unwrap());
    assert!(
        !store
            .finish_call(busy.id, CallOutcome::Failed, "lost", t1)
            .await
            .unwrap()
    );
    assert_eq!(get(busy.id).await, Some(busy.clone()));

    // Two endings racing: exactly one wins, and the record is all its.
    let raced = call(a, c, t0);
    ours.insert(raced.id);
    store.insert_call(&raced).await.unwrap();
    let (rejected, cancelled) = tokio::join!(
        store.finish_call(raced.id, CallOutcome::Rejected, "declined", t1),
        store.finish_call(raced.id, CallOutcome::Cancelled, "gave up", t2),
    );
    let (rejected, cancelled) = (rejected.unwrap(), cancelled.unwrap());
    assert!(
        rejected != cancelled,
        "one ending wins: {rejected} {cancelled}"
    );
    let (outcome, reason, at) = if rejected {
        (CallOutcome::Rejected, "declined", t1)
    } else {
        (CallOutcome::Cancelled, "gave up", t2)
    };
    assert_eq!(
        get(raced.id).await,
        Some(CallRecord {
            ended_at: Some(at),
            outcome: Some(outcome),
            reason: Some(reason.to_owned()),
            ..raced
        })
    );

    // The calls still on are exactly those without an outcome, answered
    // or not.
    let on_answered = call(b, a, t0 + millis(2));
    let on_ringing = call(c, b, t0 + millis(3));
    for record in [&on_answered, &on_ringing] {
        ours.insert(record.id);
        store.insert_call(record).await.unwrap();
    }
    assert!(store.mark_call_answered(on_answered.id, t1).await.unwrap());
    let on_answered = CallRecord {
        answered_at: Some(t1),
        ..on_answered
    };
    let unfinished = || async {
        let mut mine: Vec<CallRecord> = store
            .unfinished_calls()
            .await
            .unwrap()
            .into_iter()
            .filter(|record| ours.contains(&record.id))
            .collect();
        mine.sort_by_key(|record| record.id);
        mine
    };
    let mut expected = vec![on_answered.clone(), on_ringing.clone()];
    expected.sort_by_key(|record| record.id);
    assert_eq!(unfinished().await, expected);
    assert!(
        store
            .finish_call(on_ringing.id, CallOutcome::Failed, "server restarted", t2)
            .await
            .unwrap()
    );
    assert_eq!(
        unfinished().await,
        vec![on_answered],
        "an ended call is no longer on"
    );
}

/// `list_calls`: a user's calls from either side, newest first, started
/// strictly before `before`, at most `limit`, so that pages ending at the
/// last start time follow on without gap or overlap.
pub async fn call_history(store: &dyn Store) {
    let t0 = now();
    let [u, v, w, nobody] = [
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
        new_user(store).await.id,
    ];
    // One call a minute; u is on either side, in runs, and not in the
    // call between v and w. Some have ended, one before it began.
    let sides = [
        (u, v),
        (v, u),
        (w, u),
        (u, w),
        (v, w),
        (u, v),
        (u, w),
        (w, u),
    ];
    let mut history = Vec::new();
    for (minute, (caller, callee)) in (0..).zip(sides) {
        let record = call(caller, callee, t0 + Duration::minutes(minute));
        store.insert_call(&record).await.unwrap();
        history.push(record);
    }
    let t9 = t0 + Duration::minutes(9);
    store
        .finish_call(history[0].id, CallOutcome::Answered, "hung up", t9)
        .await
        .unwrap();
    let busy = CallRecord {
        ended_at: Some(t9),
        outcome: Some(CallOutcome::Busy),
        reason: Some("busy".to_owned()),
        ..call(v, u, t0 + Duration::minutes(8))
    };
    store.insert_call(&busy).await.unwrap();
    history.push(busy);
    // Newest first, as the store has them now.
    let mut stored = Vec::new();
    for record in history.iter().rev() {
        stored.push(store.get_call(record.id).await.unwrap().unwrap());
    }
    let of = |user: UserId| -> Vec<CallRecord> {
        stored
            .iter()
            .filter(|r| r.caller == user || r.callee == user)
            .cloned()
            .collect()
    };
    let list =
        |user, before, limit| async move { store.list_calls(user, before, limit).await.unwrap() };

    let all_of_u = of(u);
    assert_eq!(all_of_u.len(), 8);
    assert_eq!(list(u, None, 100).await, all_of_u);
    assert_eq!(list(v, None, 100).await, of(v));
    assert_eq!(list(w, None, 100).await, of(w));
    assert!(list(nobody, None, 100).await.is_empty());
    assert!(list(UserId::new(), None, 100).await.is_empty());
    assert!(list(u, None, 0).await.is_empty());
    assert_eq!(list(u, None, 3).await, all_of_u[..3]);

    // Strictly before: a call started at `before` is on the next page.
    let fifth = &all_of_u[4];
    assert_eq!(
        list(u, Some(fifth.started_at), 100).await,
        all_of_u[5..],
        "calls started before {}",
        fifth.started_at
    );
    assert_eq!(
        list(u, Some(fifth.started_at + millis(1)), 2).await,
        all_of_u[4..6]
    );
    assert!(list(u, Some(t0), 100).await.is_empty());

    // Page by page, each starting before the last one's oldest call.
    for limit in [1, 2, 3, 8] {
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let page = list(u, before, limit).await;
            assert!(page.len() <= limit as usize, "{limit}: {page:?}");
            let Some(last) = page.last() else { break };
            before = Some(last.started_at);
            paged.extend(page);
        }
        assert_eq!(paged, all_of_u, "pages of {limit}");
    }
}

/// `set_stun_override` and `stun_overrides`: each edited URL once, with
/// its latest edit (added or removed), in the order the URLs were first
/// edited; editing a URL again, even racing, keeps its place. A URL must
/// be 1 to 512 bytes long (bytes, not characters); others are bad requests
/// and change nothing.
///
/// The list is global: this looks only at the URLs it made, each naming
/// this run.
pub async fn ice_overrides(store: &dyn Store) {
    let t0 = now();
    let run = Uuid::now_v7().to_string();
    let url = |name: &str| format!("stun:{name}-{run}.example:3478");
    let [first, second, third, raced] = ["first", "second", "third", "raced"].map(url);
    let ours = || async {
        store
            .stun_overrides()
            .await
            .unwrap()
            .into_iter()
            .filter(|(url, _)| url.contains(&run))
            .collect::<Vec<_>>()
    };
    let set = |url: &str, added, at| {
        let url = url.to_owned();
        async move { store.set_stun_override(&url, added, at).await.unwrap() }
    };
    let edit = |url: &String, added| (url.clone(), added);

    assert!(ours().await.is_empty(), "nothing edited yet");
    set(&first, true, t0).await;
    assert_eq!(ours().await, vec![edit(&first, true)]);
    set(&second, false, t0 + millis(1)).await;
    assert_eq!(
        ours().await,
        vec![edit(&first, true), edit(&second, false)],
        "a removal is an edit too, listed after the earlier one"
    );

    // Removing what was added, then adding it back: the URL keeps its
    // first place.
    set(&first, false, t0 + millis(2)).await;
    assert_eq!(
        ours().await,
        vec![edit(&first, false), edit(&second, false)]
    );
    set(&third, true, t0 + millis(3)).await;
    set(&first, true, t0 + millis(4)).await;
    assert_eq!(
        ours().await,
        vec![edit(&first, true), edit(&second, false), edit(&third, true)],
        "a re-added URL stays where it was first edited"
    );
    // The same edit again changes nothing.
    set(&second, false, t0 + millis(5)).await;
    assert_eq!(
        ours().await,
        vec![edit(&first, true), edit(&second, false), edit(&third, true)]
    );

    // Two edits of a new URL racing: it is listed once, with one of them.
    let at = t0 + millis(6);
    tokio::join!(set(&raced, true, at), set(&raced, false, at));
    let listed = ours().await;
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(
        listed[..3],
        [edit(&first, true), edit(&second, false), edit(&third, true)]
    );
    assert_eq!(listed[3].0, raced, "{listed:?}");

    // Lengths count bytes: 512 is the most, whatever the characters.
    let padded = |pad: &str, bytes: usize| {
        let mut url = url("long");
        while url.len() + pad.len() <= bytes {
            url.push_str(pad);
        }
        url
    };
    let longest = padded("a", 512);
    assert_eq!(longest.len(), 512);
    set(&longest, true, t0 + millis(7)).await;
    let too_long = padded("a", 513);
    assert_eq!(too_long.len(), 513);
    // Fewer than 512 characters, more than 512 bytes.
    let wide = padded("é", 514);
    assert!(wide.len() > 512 && wide.chars().count() < 512, "{wide}");
    for (url, what) in [
        (String::new(), "an empty URL"),
        (too_long, "a URL of 513 bytes"),
        (wide, "a URL of more than 512 bytes in fewer characters"),
    ] {
        assert_code(
            store.set_stun_override(&url, true, t0 + millis(8)).await,
            ErrorCode::BadRequest,
            what,
        );
    }
    let listed = ours().await;
    assert_eq!(listed.len(), 5, "only the valid URLs: {listed:?}");
    assert_eq!(listed[4], (longest, true));
    assert!(
        !store
            .stun_overrides()
            .await
            .unwrap()
            .iter()
            .any(|(url, _)| url.is_empty()),
        "no backend stores an empty URL"
    );
}

/// A call from `caller` to `callee`, just started.
fn call(caller: UserId, callee: UserId, started_at: OffsetDateTime) -> CallRecord {
    CallRecord {
        id: CallId::new(),
        caller,
        callee,
        started_at,
        answered_at: None,
        ended_at: None,
        outcome: None,
        reason: None,
    }
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

fn expected(new: &NewMessage, seq: u64) -> Message {
    Message {
        id: new.id,
        conversation: new.conversation,
        seq,
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

/// A fresh user with the given name and email (`None`: none).
async fn named_user(store: &dyn Store, name: Option<&str>, email: Option<&str>) -> UserId {
    let identity = Identity {
        name: name.map(str::to_owned),
        email: email.map(str::to_owned),
        ..identity()
    };
    let (user, created) = store.upsert_user(&identity, now()).await.unwrap();
    assert!(created);
    user.id
}

/// A distinct event, for log checks.
fn event() -> Event {
    Event::FriendRemoved {
        user_id: UserId::new(),
    }
}

fn delivery(user_id: UserId, seq: u64, event: Event, created_at: OffsetDateTime) -> Delivery {
    Delivery {
        user_id,
        seq,
        event: std::sync::Arc::new(event),
        created_at,
    }
}

/// `user`'s (unread, last_read_seq) in `conversation`, from their list.
async fn read_of(store: &dyn Store, user: UserId, conversation: Conversation) -> (u64, u64) {
    let listed = store.list_conversations(user).await.unwrap();
    let summary = listed
        .iter()
        .find(|summary| summary.conversation == conversation)
        .unwrap_or_else(|| panic!("{conversation} is not in {user}'s list: {listed:?}"));
    (summary.unread, summary.last_read_seq)
}

/// How far each user's event log should have got, for checking that
/// message writes append exactly the events they report.
#[derive(Default)]
struct Logs(HashMap<UserId, u64>);

impl Logs {
    /// `deliveries` carry `event` to `users`, in that order, each with its
    /// user's next seq, and the logs hold exactly them.
    async fn check(
        &mut self,
        store: &dyn Store,
        deliveries: &[Delivery],
        users: &[UserId],
        event: &Event,
    ) {
        assert_eq!(deliveries.len(), users.len(), "{deliveries:?}");
        for (delivery, user) in deliveries.iter().zip(users) {
            let seq = self.0.entry(*user).or_default();
            *seq += 1;
            assert_eq!(
                (delivery.user_id, delivery.seq, &*delivery.event),
                (*user, *seq, event)
            );
            assert_eq!(
                store.events_since(*user, *seq - 1, 10).await.unwrap(),
                Replay::Events(vec![delivery.clone()]),
                "the log holds the delivery, and nothing after it"
            );
        }
    }

    /// Counts deliveries that `check` does not look into.
    fn count(&mut self, deliveries: &[Delivery]) {
        for delivery in deliveries {
            let seq = self.0.entry(delivery.user_id).or_default();
            *seq += 1;
            assert_eq!(delivery.seq, *seq, "{delivery:?}");
        }
    }

    /// Nothing was appended to `users`' logs since last counted.
    async fn check_unchanged(&self, store: &dyn Store, users: &[UserId]) {
        for user in users {
            assert_eq!(
                store.latest_event_seq(*user).await.unwrap(),
                self.0.get(user).copied().unwrap_or(0)
            );
        }
    }
}

#[track_caller]
fn assert_code<T: Debug>(result: Result<T>, code: ErrorCode, what: &str) {
    match result {
        Err(error) => assert_eq!(error.code, code, "{what}: {error}"),
        Ok(value) => panic!("{what}: expected a {code:?} error, got Ok({value:?})"),
    }
}
