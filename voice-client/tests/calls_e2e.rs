//! Calls end to end: a real server on loopback, two SDK clients signed in
//! through it, real WebSocket signaling, and real WebRTC media (str0m,
//! Opus, DTLS-SRTP over UDP). What each side heard is checked by the tone
//! in it, so audio that did not really cross fails the test.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use voice_client::Client;
use voice_client::audio::{
    AudioSource, FRAME_SAMPLES, MemorySink, Tone, WavSink, WavSource, dominant_frequency,
};
use voice_client::call::{Call, CallOptions};
use voice_client::events::{ClientEvent, EventStream};
use voice_client::media::{CallAudio, IcePolicy, MediaConfig};
use voice_core::ids::CallId;
use voice_core::model::CallOutcome;
use voice_core::wire::{Event, Recipient};
use voice_server::Config;

// The server's tests own these harnesses; share them rather than copy.
#[allow(unused_imports)]
#[path = "../../voice-server/tests/common/mod.rs"]
mod common;

use common::TestServer;
use common::coturn::Coturn;

/// A bound on waiting for what should happen, so a broken build fails
/// instead of hanging; never a timing assertion.
const WAIT: Duration = Duration::from_secs(15);
const TONES: [f64; 5] = [220.0, 440.0, 660.0, 880.0, 1000.0];
/// The first 200 ms of a recording are the codec settling.
const SETTLE: usize = 9600;

struct Pair {
    server: TestServer,
    alice: Client,
    bob: Client,
    bob_events: EventStream,
}

fn quiet_server(config: &mut Config) {
    config.ice.responder.enabled = false;
}

/// Two users signed in by dev sign-in who are friends.
async fn friends(configure: impl FnOnce(&mut Config)) -> Pair {
    let server = TestServer::start(configure).await;
    let url = format!("http://{}", server.addr);
    let alice = Client::new(&url).unwrap();
    let bob = Client::new(&url).unwrap();
    alice.dev_login("alice").await.unwrap();
    bob.dev_login("bob").await.unwrap();
    let mut bob_events = bob.events().await.unwrap();
    wait_for(&mut bob_events, |e| {
        matches!(e, ClientEvent::Connected { .. })
    })
    .await;
    let bob_id = bob.user().unwrap().id;
    let alice_id = alice.user().unwrap().id;
    alice.send_friend_request(bob_id).await.unwrap();
    bob.accept_friend_request(alice_id).await.unwrap();
    Pair {
        server,
        alice,
        bob,
        bob_events,
    }
}

async fn wait_for(
    events: &mut EventStream,
    mut wanted: impl FnMut(&ClientEvent) -> bool,
) -> ClientEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.next().await.expect("the event stream goes on");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the expected event came")
}

async fn incoming_call(events: &mut EventStream) -> CallId {
    match wait_for(
        events,
        |e| matches!(e, ClientEvent::Server(s) if matches!(s.event, Event::CallIncoming { .. })),
    )
    .await
    {
        ClientEvent::Server(s) => match s.event {
            Event::CallIncoming { call_id, .. } => call_id,
            _ => unreachable!(),
        },
        _ => unreachable!(),
    }
}

fn loopback_media() -> CallOptions {
    CallOptions {
        media: MediaConfig {
            host_addresses: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            ..MediaConfig::default()
        },
        ..CallOptions::default()
    }
}

fn heard(samples: &[i16]) -> f64 {
    assert!(
        samples.len() > SETTLE + 24_000,
        "only {} samples heard",
        samples.len()
    );
    dominant_frequency(&samples[SETTLE..], &TONES).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_then_talk_with_tones_both_ways() {
    let Pair {
        server,
        alice,
        bob,
        mut bob_events,
    } = friends(|c| {
        // The server's own STUN responder is on (on a port of its own) and
        // handed out, so the clients also probe it.
        c.ice.responder.bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let bob_id = bob.user().unwrap().id;
    let alice_id = alice.user().unwrap().id;

    // Messages both ways, live.
    let mut alice_events = alice.events().await.unwrap();
    wait_for(&mut alice_events, |e| {
        matches!(e, ClientEvent::Connected { .. })
    })
    .await;
    alice
        .send_message(Recipient::User(bob_id), "call you in a sec?")
        .await
        .unwrap();
    wait_for(&mut bob_events, |e| {
        matches!(e, ClientEvent::Server(s) if matches!(&s.event, Event::MessageCreated { message } if message.body.as_deref() == Some("call you in a sec?")))
    })
    .await;
    bob.send_message(Recipient::User(alice_id), "sure")
        .await
        .unwrap();
    wait_for(&mut alice_events, |e| {
        matches!(e, ClientEvent::Server(s) if matches!(&s.event, Event::MessageCreated { message } if message.body.as_deref() == Some("sure")))
    })
    .await;

    // Alice plays 440 Hz; Bob answers with 660 Hz and records to a WAV.
    let recording_dir = tempfile::tempdir().unwrap();
    let recording = recording_dir.path().join("bob.wav");
    let alice_heard = MemorySink::new();
    let mut alice_call = alice
        .place_call(
            bob_id,
            CallAudio::new(Tone::new(440.0), alice_heard.clone()),
            loopback_media(),
        )
        .await
        .unwrap();
    let call_id = incoming_call(&mut bob_events).await;
    assert_eq!(call_id, alice_call.id());
    let mut bob_call = bob
        .answer_call(
            call_id,
            CallAudio::new(Tone::new(660.0), WavSink::create(&recording).unwrap()),
            loopback_media(),
        )
        .await
        .unwrap();
    audio_flows(&mut alice_call, &mut bob_call).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Alice hangs up: both sides see the call end, answered.
    let alice_stats = alice_call.hangup().await.unwrap();
    let bob_end = tokio::time::timeout(WAIT, bob_call.wait_ended())
        .await
        .unwrap();
    assert_eq!(bob_end.outcome, CallOutcome::Answered, "{bob_end:?}");
    let bob_stats = bob_call.close().await;
    assert!(alice_stats.packets_received > 50, "{alice_stats:?}");
    assert!(bob_stats.packets_received > 50, "{bob_stats:?}");

    let mut source = WavSource::open(&recording).unwrap();
    let mut bob_samples = Vec::new();
    let mut frame = [0i16; FRAME_SAMPLES];
    while source.read_frame(&mut frame) {
        bob_samples.extend_from_slice(&frame);
    }
    assert_eq!(heard(&bob_samples), 440.0);
    assert_eq!(heard(&alice_heard.samples()), 660.0);

    let history = alice.call_history(None, None).await.unwrap();
    assert_eq!(
        history.calls.first().map(|c| c.record.outcome),
        Some(Some(CallOutcome::Answered))
    );
    server.stop().await;
}

/// Waits until the callee has answered, both sides are connected, and each
/// has received its first audio.
async fn audio_flows(caller: &mut Call, callee: &mut Call) {
    caller.wait_answered(WAIT).await.unwrap();
    for call in [caller, callee] {
        call.wait_connected(WAIT).await.unwrap();
        call.wait_first_audio(WAIT).await.unwrap();
    }
}

/// Rings, answers, and checks both sides hear each other's tone.
async fn talk(
    alice: &Client,
    bob: &Client,
    bob_events: &mut EventStream,
    alice_options: CallOptions,
    bob_options: CallOptions,
) -> (
    voice_client::media::CallStats,
    voice_client::media::CallStats,
) {
    let bob_id = bob.user().unwrap().id;
    let (alice_heard, bob_heard) = (MemorySink::new(), MemorySink::new());
    let mut alice_call = alice
        .place_call(
            bob_id,
            CallAudio::new(Tone::new(440.0), alice_heard.clone()),
            alice_options,
        )
        .await
        .unwrap();
    let call_id = incoming_call(bob_events).await;
    let mut bob_call = bob
        .answer_call(
            call_id,
            CallAudio::new(Tone::new(880.0), bob_heard.clone()),
            bob_options,
        )
        .await
        .unwrap();
    audio_flows(&mut alice_call, &mut bob_call).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let bob_stats = bob_call.hangup().await.unwrap();
    let end = tokio::time::timeout(WAIT, alice_call.wait_ended())
        .await
        .unwrap();
    assert_eq!(end.outcome, CallOutcome::Answered);
    let alice_stats = alice_call.close().await;
    assert_eq!(heard(&bob_heard.samples()), 440.0);
    assert_eq!(heard(&alice_heard.samples()), 880.0);
    (alice_stats, bob_stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_connects_on_host_candidates_with_no_stun_servers() {
    let Pair {
        server,
        alice,
        bob,
        mut bob_events,
    } = friends(quiet_server).await;
    assert!(alice.ice_servers().await.unwrap().ice_servers.is_empty());
    // Every interface's addresses, as an app would use by default.
    talk(
        &alice,
        &bob,
        &mut bob_events,
        CallOptions::default(),
        CallOptions::default(),
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_call_connects_through_coturn_with_server_credentials() {
    let coturn = Coturn::start();
    let turn_url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let secret = coturn.secret.clone();
    let Pair {
        server,
        alice,
        bob,
        mut bob_events,
    } = friends(move |c| {
        quiet_server(c);
        c.ice.turn.urls = vec![turn_url];
        c.ice.turn.secret = Some(secret);
    })
    .await;
    let relay_only = CallOptions {
        media: MediaConfig {
            policy: IcePolicy::RelayOnly,
            ..MediaConfig::default()
        },
        ..CallOptions::default()
    };
    let (alice_stats, _) = talk(&alice, &bob, &mut bob_events, relay_only, loopback_media()).await;
    // Every packet Alice sent went through the relay: she had no other
    // candidate.
    assert!(
        alice_stats.packets_via_relay >= alice_stats.packets_sent,
        "{alice_stats:?}"
    );
    assert!(alice_stats.packets_sent > 40, "{alice_stats:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_socket_drops_while_ringing_and_the_call_still_works() {
    let Pair {
        server,
        alice,
        bob,
        mut bob_events,
    } = friends(quiet_server).await;
    let bob_id = bob.user().unwrap().id;
    let (alice_heard, bob_heard) = (MemorySink::new(), MemorySink::new());
    let mut alice_call = alice
        .place_call(
            bob_id,
            CallAudio::new(Tone::new(440.0), alice_heard.clone()),
            loopback_media(),
        )
        .await
        .unwrap();
    let call_id = incoming_call(&mut bob_events).await;

    // Bob's socket drops while it rings, and comes back by itself.
    bob.connection().await.unwrap().force_reconnect();
    wait_for(&mut bob_events, |e| {
        matches!(e, ClientEvent::Reconnecting { .. })
    })
    .await;
    wait_for(&mut bob_events, |e| {
        matches!(e, ClientEvent::Connected { .. })
    })
    .await;

    let mut bob_call = bob
        .answer_call(
            call_id,
            CallAudio::new(Tone::new(880.0), bob_heard.clone()),
            loopback_media(),
        )
        .await
        .unwrap();
    audio_flows(&mut alice_call, &mut bob_call).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    alice_call.hangup().await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, bob_call.wait_ended())
            .await
            .unwrap()
            .outcome,
        CallOutcome::Answered
    );
    bob_call.close().await;
    assert_eq!(heard(&bob_heard.samples()), 440.0);
    assert_eq!(heard(&alice_heard.samples()), 880.0);
    server.stop().await;
}
