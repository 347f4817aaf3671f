//! Two str0m media sessions in one process, signaling in memory, media
//! over real UDP on loopback: Opus over DTLS-SRTP both ways, checked by
//! the tone each side hears.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use voice_client::audio::{MemorySink, Tone, dominant_frequency, rms};
use voice_client::media::{CallAudio, MediaConfig, MediaEngine, Role, Str0mEngine};
use voice_client::signaling::in_memory_pair;
use voice_core::ids::CallId;

fn loopback_only() -> MediaConfig {
    MediaConfig {
        host_addresses: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        ..MediaConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tones_cross_a_call_both_ways() {
    let (a_signaling, b_signaling) = in_memory_pair();
    let call = CallId::new();
    let a_heard = MemorySink::new();
    let b_heard = MemorySink::new();
    let mut a = Str0mEngine
        .start(
            call,
            Role::Offerer,
            loopback_only(),
            Arc::new(a_signaling),
            CallAudio::new(Tone::new(440.0), a_heard.clone()),
        )
        .await
        .unwrap();
    let mut b = Str0mEngine
        .start(
            call,
            Role::Answerer,
            MediaConfig {
                hide_host_addresses: true,
                ..loopback_only()
            },
            Arc::new(b_signaling),
            CallAudio::new(Tone::new(660.0), b_heard.clone()),
        )
        .await
        .unwrap();
    a.wait_connected(Duration::from_secs(10)).await.unwrap();
    b.wait_connected(Duration::from_secs(10)).await.unwrap();
    a.wait_first_audio(Duration::from_secs(5)).await.unwrap();
    b.wait_first_audio(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.set_muted(true);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let a_stats = a.close().await;
    let b_stats = b.close().await;
    assert_eq!(b_stats.remote_candidates_skipped, 0);
    assert!(a_stats.remote_candidates_skipped >= 1, "{a_stats:?}");
    for stats in [&a_stats, &b_stats] {
        assert!(
            stats.packets_sent > 40 && stats.packets_received > 40,
            "{stats:?}"
        );
    }
    let candidates = [220.0, 440.0, 660.0, 880.0, 1000.0];
    let b_samples = b_heard.samples();
    let a_samples = a_heard.samples();
    // Skip the first 200 ms (codec start-up).
    assert_eq!(
        dominant_frequency(&b_samples[9600..], &candidates)
            .unwrap()
            .0,
        440.0
    );
    // A heard B's tone, then silence once B muted.
    let tone_part = &a_samples[9600..a_samples.len().min(9600 + 24_000)];
    assert_eq!(dominant_frequency(tone_part, &candidates).unwrap().0, 660.0);
    let tail = &a_samples[a_samples.len() - 9600..];
    assert!(rms(tail) < 0.01, "muted side still loud: {}", rms(tail));
}

// The server's tests own the coturn harness; share it rather than copy it.
#[allow(dead_code)]
#[path = "../../voice-server/tests/common/coturn.rs"]
mod coturn;

/// Relay-only on one side: every packet it sends goes through a real
/// coturn, with TURN REST credentials as the server issues them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_call_goes_through_coturn() {
    let coturn = coturn::Coturn::start();
    let (username, credential) = voice_server::ice::turn::credentials(
        &coturn.secret,
        voice_core::ids::UserId::new(),
        time::OffsetDateTime::now_utc() + time::Duration::minutes(10),
    );
    let turn = voice_core::wire::IceServer {
        urls: vec![format!("turn:127.0.0.1:{}?transport=udp", coturn.port)],
        username: Some(username),
        credential: Some(credential),
    };
    let (a_signaling, b_signaling) = in_memory_pair();
    let call = CallId::new();
    let b_heard = MemorySink::new();
    let mut a = Str0mEngine
        .start(
            call,
            Role::Offerer,
            MediaConfig {
                ice_servers: vec![turn],
                policy: voice_client::media::IcePolicy::RelayOnly,
                ..MediaConfig::default()
            },
            Arc::new(a_signaling),
            CallAudio::new(Tone::new(440.0), voice_client::audio::NullSink),
        )
        .await
        .unwrap();
    let mut b = Str0mEngine
        .start(
            call,
            Role::Answerer,
            loopback_only(),
            Arc::new(b_signaling),
            CallAudio::new(Tone::new(660.0), b_heard.clone()),
        )
        .await
        .unwrap();
    a.wait_connected(Duration::from_secs(15)).await.unwrap();
    b.wait_connected(Duration::from_secs(15)).await.unwrap();
    b.wait_first_audio(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_stats = a.close().await;
    b.close().await;
    assert!(a_stats.packets_via_relay > 40, "{a_stats:?}");
    let samples = b_heard.samples();
    assert_eq!(
        dominant_frequency(&samples[9600..], &[220.0, 440.0, 660.0, 880.0])
            .unwrap()
            .0,
        440.0
    );
}
