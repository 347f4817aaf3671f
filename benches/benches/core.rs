//! Wire protocol encode/decode and access-token verification: work done on
//! every event and every authenticated request.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use time::OffsetDateTime;
use voice_core::auth::TokenIssuer;
use voice_core::model::{Conversation, Message};
use voice_core::wire::{Event, ServerEvent};
use voice_core::{MessageId, SessionId, UserId};
use voice_server::auth::tokens::{ServerSecret, Tokens};

fn sample_event() -> ServerEvent {
    let (a, b) = (UserId::new(), UserId::new());
    ServerEvent::new(
        Some(42),
        Event::MessageCreated {
            message: Message {
                id: MessageId::new(),
                conversation: Conversation::direct(a, b),
                seq: 1_234,
                sender: a,
                body: Some("Are we still on for the call at six? I will bring the notes.".into()),
                client_id: Some("c-123".into()),
                created_at: OffsetDateTime::now_utc(),
                deleted_at: None,
            },
        },
    )
}

fn wire(c: &mut Criterion) {
    let event = sample_event();
    let text = event.encode();
    c.bench_function("wire/encode message.created", |b| {
        b.iter(|| black_box(&event).encode())
    });
    c.bench_function("wire/decode message.created", |b| {
        b.iter(|| ServerEvent::decode(black_box(&text)).unwrap())
    });
}

fn tokens(c: &mut Criterion) {
    let tokens = Tokens::new(
        &ServerSecret::from_bytes([1; 32]),
        "https://bench".into(),
        "voice".into(),
        600,
    );
    let (token, _) = tokens
        .issue_access(UserId::new(), SessionId::new(), OffsetDateTime::now_utc())
        .unwrap();
    c.bench_function("auth/verify access token", |b| {
        b.iter(|| tokens.verify_access(black_box(&token)).unwrap())
    });
    c.bench_function("auth/issue access token", |b| {
        b.iter(|| {
            tokens
                .issue_access(UserId::new(), SessionId::new(), OffsetDateTime::now_utc())
                .unwrap()
        })
    });
}

criterion_group!(benches, wire, tokens);
criterion_main!(benches);
