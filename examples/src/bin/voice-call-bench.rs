//! Call setup time on loopback: a real server in this process, two SDK
//! clients, and for each call the time from the call request to the
//! answer, to ICE and DTLS connected, and to the first audio frame the
//! caller receives. Prints the median and the worst of N calls.
//!
//! `cargo run --release -p voice-examples --bin voice-call-bench -- --calls 20`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use voice_client::Client;
use voice_client::audio::{NullSink, Tone};
use voice_client::call::CallOptions;
use voice_client::events::ClientEvent;
use voice_client::media::{CallAudio, MediaConfig};
use voice_core::wire::Event;

const WAIT: Duration = Duration::from_secs(15);

struct Timing {
    answered: Duration,
    connected: Duration,
    first_audio: Duration,
}

#[derive(clap::Parser)]
struct Args {
    /// How many calls to time, one after the other.
    #[arg(long, default_value_t = 20)]
    calls: usize,
}

fn main() {
    let calls = <Args as clap::Parser>::parse().calls.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let timings = runtime.block_on(run(calls));
    report(&timings);
}

async fn run(calls: usize) -> Vec<Timing> {
    let data = tempfile::tempdir().unwrap();
    let mut config = voice_server::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        ..voice_server::Config::default()
    };
    config.ice.stun_servers = Vec::new();
    config.ice.responder.enabled = false;
    let server = voice_server::Server::start(config).await.unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let alice = Client::new(&url).unwrap();
    let bob = Client::new(&url).unwrap();
    alice.dev_login("alice").await.unwrap();
    bob.dev_login("bob").await.unwrap();
    let bob_id = bob.user().unwrap().id;
    alice.send_friend_request(bob_id).await.unwrap();
    bob.accept_friend_request(alice.user().unwrap().id)
        .await
        .unwrap();
    let mut bob_events = bob.events().await.unwrap();
    let options = || CallOptions {
        media: MediaConfig {
            host_addresses: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            ..MediaConfig::default()
        },
        ..CallOptions::default()
    };

    let mut timings = Vec::new();
    for _ in 0..calls {
        let requested = Instant::now();
        let mut call = alice
            .place_call(
                bob_id,
                CallAudio::new(Tone::new(440.0), NullSink),
                options(),
            )
            .await
            .unwrap();
        let call_id = loop {
            match tokio::time::timeout(WAIT, bob_events.next()).await.unwrap() {
                Some(ClientEvent::Server(s)) => {
                    if let Event::CallIncoming { call_id, .. } = s.event {
                        break call_id;
                    }
                }
                Some(_) => {}
                None => panic!("bob's events ended"),
            }
        };
        let mut answered_call = bob
            .answer_call(
                call_id,
                CallAudio::new(Tone::new(660.0), NullSink),
                options(),
            )
            .await
            .unwrap();
        call.wait_answered(WAIT).await.unwrap();
        let answered = requested.elapsed();
        call.wait_connected(WAIT).await.unwrap();
        let connected = requested.elapsed();
        call.wait_first_audio(WAIT).await.unwrap();
        let first_audio = requested.elapsed();
        timings.push(Timing {
            answered,
            connected,
            first_audio,
        });
        answered_call.wait_connected(WAIT).await.unwrap();
        call.hangup().await.unwrap();
        let _ = tokio::time::timeout(WAIT, answered_call.wait_ended()).await;
        answered_call.close().await;
    }
    let _ = stop.send(());
    let _ = serving.await;
    timings
}

fn report(timings: &[Timing]) {
    let column = |pick: fn(&Timing) -> Duration| {
        let mut values: Vec<Duration> = timings.iter().map(pick).collect();
        values.sort();
        let median = values[values.len() / 2];
        let worst = values[values.len() - 1];
        (median, worst)
    };
    println!(
        "call setup on loopback, {} calls (from the call request):",
        timings.len()
    );
    for (name, pick) in [
        (
            "answered",
            (|t: &Timing| t.answered) as fn(&Timing) -> Duration,
        ),
        ("ICE+DTLS connected", |t: &Timing| t.connected),
        ("first audio frame", |t: &Timing| t.first_audio),
    ] {
        let (median, worst) = column(pick);
        println!(
            "  {name:<20} median {:>7.1} ms   worst {:>7.1} ms",
            median.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0
        );
    }
}
