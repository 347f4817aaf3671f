//! Wire protocol encode/decode and access-token verification: work done on
//! every event and every authenticated request. Also STUN encode/decode
//! (the server's responder and health probes, the SDK's gathering) and the
//! call queue under 100,000 pending calls.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use time::OffsetDateTime;
use voice_core::auth::TokenIssuer;
use voice_core::model::{Conversation, Message};
use voice_core::wire::{Event, ServerEvent, SharedEvent};
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
    // What the server does per device since events are shared: the event
    // is encoded once per message, and each copy only framed with its seq.
    let shared = SharedEvent::new(event.seq, std::sync::Arc::new(event.event.clone()));
    c.bench_function("wire/frame a shared message.created", |b| {
        b.iter(|| black_box(&shared).with_seq(Some(43)).encode())
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

/// The call queue with 100,000 calls ringing: inserting a request and
/// expiring it must stay O(log n). Each measured request includes making
/// its `CallId`, as the server does per request; that UUIDv7 draws from
/// the OS (a `getrandom` call), about 0.5 µs of the 2 µs target here.
fn call_queue(c: &mut Criterion) {
    use std::time::{Duration, Instant};
    use voice_core::call::{CallConfig, Device};
    use voice_core::call_queue::CallQueue;
    use voice_core::{CallId, SessionId};

    const PENDING: usize = 100_000;
    let device = || Device {
        user: UserId::new(),
        session: SessionId::new(),
    };
    let mut group = c.benchmark_group("call_queue");
    group.throughput(criterion::Throughput::Elements(PENDING as u64));
    group.sample_size(10);
    group.bench_function("insert 100k then expire all (per batch)", |b| {
        b.iter_batched(
            || {
                let callers: Vec<(Device, UserId)> =
                    (0..PENDING).map(|_| (device(), UserId::new())).collect();
                (CallQueue::new(CallConfig::default()), callers)
            },
            |(mut queue, callers)| {
                let start = Instant::now();
                for (i, (caller, callee)) in callers.into_iter().enumerate() {
                    let at = start + Duration::from_micros(i as u64);
                    queue
                        .handle_request(at, CallId::new(), caller, callee)
                        .unwrap();
                }
                while queue.poll_output().is_some() {}
                queue.handle_timeout(start + Duration::from_secs(3600));
                assert!(queue.is_empty());
                while queue.poll_output().is_some() {}
                queue
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();

    // One more request, and its expiry, with 100,000 others ringing.
    let mut queue = CallQueue::new(CallConfig::default());
    let start = Instant::now();
    for _ in 0..PENDING {
        queue
            .handle_request(start, CallId::new(), device(), UserId::new())
            .unwrap();
    }
    while queue.poll_output().is_some() {}
    let mut later = start;
    c.bench_function("call_queue/insert and cancel one among 100k pending", |b| {
        b.iter(|| {
            later += Duration::from_nanos(1);
            let id = CallId::new();
            queue
                .handle_request(later, id, device(), UserId::new())
                .unwrap();
            queue.handle_reject(later, id, UserId::new()).unwrap_err();
            queue
                .handle_cancel(later, id, queue.get(id).unwrap().caller.user)
                .unwrap();
            while queue.poll_output().is_some() {}
        })
    });
}

fn stun(c: &mut Criterion) {
    let request = voice_core::stun::binding_request([7; 12]);
    let from: std::net::SocketAddr = "203.0.113.9:54321".parse().unwrap();
    let response = voice_core::stun::answer_binding_request(&request, from).unwrap();
    c.bench_function("stun/encode binding request", |b| {
        b.iter(|| voice_core::stun::binding_request(black_box([7; 12])))
    });
    c.bench_function("stun/answer binding request (decode + encode)", |b| {
        b.iter(|| voice_core::stun::answer_binding_request(black_box(&request), from).unwrap())
    });
    c.bench_function("stun/decode binding response", |b| {
        b.iter(|| voice_core::stun::parse_binding_response(black_box(&response)).unwrap())
    });
}

criterion_group!(benches, wire, tokens, call_queue, stun);
criterion_main!(benches);
