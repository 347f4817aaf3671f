//! `voice call` and `voice answer`: real calls from the terminal, with a
//! WAV file, a tone or silence as what you say, and optionally a WAV file
//! recording what you hear. Status lines go to stderr as the call moves
//! from ringing to connected to ended.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use voice_client::Client;
use voice_client::audio::{AudioSink, AudioSource, NullSink, Silence, Tone, WavSink, WavSource};
use voice_client::call::{Call, CallOptions};
use voice_client::events::ClientEvent;
use voice_client::media::CallAudio;
use voice_core::wire::{Event, UserProfile};

use crate::{Failure, Outcome, describe};

const RING_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct AudioArgs {
    /// Send this WAV file (any rate and channels; it becomes 48 kHz mono).
    #[arg(long, value_name = "FILE.wav", conflicts_with = "tone")]
    play: Option<PathBuf>,
    /// Send a sine tone at this frequency (Hz).
    #[arg(long, value_name = "HZ")]
    tone: Option<f64>,
    /// Record what you hear to this WAV file (48 kHz mono, 16-bit).
    #[arg(long, value_name = "OUT.wav")]
    record: Option<PathBuf>,
    /// Hang up after this many seconds once connected (default: when the
    /// other side hangs up, or on Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
}

impl AudioArgs {
    fn audio(&self) -> Result<CallAudio, Failure> {
        let source: Box<dyn AudioSource> = match (&self.play, self.tone) {
            (Some(path), _) => Box::new(WavSource::open(path)?),
            (None, Some(hz)) if hz > 0.0 && hz < 24_000.0 => Box::new(Tone::new(hz)),
            (None, Some(hz)) => return Err(Failure(format!("--tone {hz}: pick 1 to 23999 Hz"))),
            (None, None) => Box::new(Silence),
        };
        let sink: Box<dyn AudioSink> = match &self.record {
            Some(path) => Box::new(WavSink::create(path)?),
            None => Box::new(NullSink),
        };
        Ok(CallAudio { source, sink })
    }
}

pub async fn call(client: &Client, friend: &UserProfile, args: AudioArgs) -> Outcome {
    let audio = args.audio()?;
    eprintln!("calling {}…", describe(friend));
    let mut call = client
        .place_call(friend.id, audio, CallOptions::default())
        .await?;
    eprintln!("ringing (call {})", call.id());
    tokio::select! {
        answered = call.wait_answered(RING_TIMEOUT) => {
            if let Err(e) = answered {
                let _ = call.hangup().await;
                return Err(e.into());
            }
        }
        _ = tokio::signal::ctrl_c() => {
            call.hangup().await?;
            eprintln!("cancelled");
            return Ok(());
        }
    }
    eprintln!("answered; connecting…");
    talk(call, args.duration).await
}

pub async fn answer(client: &Client, auto: bool, wait: Option<u64>, args: AudioArgs) -> Outcome {
    let mut events = client.events().await?;
    eprintln!("waiting for a call…");
    let waiting = async {
        loop {
            match events.next().await {
                Some(ClientEvent::Server(server)) => {
                    if let Event::CallIncoming {
                        call_id, caller, ..
                    } = server.event
                    {
                        return Ok((call_id, caller));
                    }
                }
                Some(ClientEvent::SessionEnded { reason }) => {
                    return Err(Failure(format!("session ended: {reason}")));
                }
                Some(_) => {}
                None => return Err(Failure("the event connection closed".into())),
            }
        }
    };
    let (call_id, caller) = match wait {
        Some(secs) => tokio::time::timeout(Duration::from_secs(secs), waiting)
            .await
            .map_err(|_| Failure(format!("no call came in {secs} s")))??,
        None => waiting.await?,
    };
    eprintln!("incoming call from {}", describe(&caller));
    if !auto && !confirm("answer? [y/N] ").await {
        client.reject_call(call_id).await?;
        eprintln!("rejected");
        return Ok(());
    }
    let call = client
        .answer_call(call_id, args.audio()?, CallOptions::default())
        .await?;
    eprintln!("answered; connecting…");
    talk(call, args.duration).await
}

async fn confirm(prompt: &str) -> bool {
    use tokio::io::AsyncBufReadExt;
    eprint!("{prompt}");
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    stdin.read_line(&mut line).await.is_ok() && line.trim().eq_ignore_ascii_case("y")
}

async fn talk(mut call: Call, duration: Option<f64>) -> Outcome {
    if let Err(e) = call.wait_connected(CONNECT_TIMEOUT).await {
        let _ = call.hangup().await;
        return Err(e.into());
    }
    eprintln!("connected");
    let limit = duration.map(Duration::from_secs_f64);
    let ended_by_peer = tokio::select! {
        end = call.wait_ended() => Some(end),
        _ = sleep_or_forever(limit) => None,
        _ = tokio::signal::ctrl_c() => None,
    };
    let stats = match &ended_by_peer {
        Some(end) => {
            eprintln!("call ended: {}", end.reason);
            call.close().await
        }
        None => {
            let stats = call.hangup().await?;
            eprintln!("hung up");
            stats
        }
    };
    eprintln!(
        "sent {} packets, received {} ({} lost){}",
        stats.packets_sent,
        stats.packets_received,
        stats.packets_lost,
        stats
            .rtt
            .map(|rtt| format!(", rtt {} ms", rtt.as_millis()))
            .unwrap_or_default()
    );
    Ok(())
}

async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}
