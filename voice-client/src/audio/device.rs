//! The microphone and the speaker through cpal (the `cpal` feature).
//!
//! cpal streams may not leave the thread that built them, while sources
//! and sinks move into the call's task; so each device runs its stream on
//! a thread of its own and trades samples with the call through a bounded
//! buffer. Streams open at 48 kHz with the device's channel count (ALSA's
//! and PulseAudio's default devices convert rates); a device that refuses
//! 48 kHz is an error, not a silent resample.

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::{AudioSink, AudioSource, FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::error::{ClientError, Result};

/// Half a second of audio at most waits in either direction; beyond it the
/// oldest samples go, so latency cannot grow without bound.
const MAX_BUFFERED: usize = SAMPLE_RATE as usize / 2;

type Shared = Arc<Mutex<VecDeque<i16>>>;

/// Keeps a device's stream alive on its own thread until dropped.
struct StreamThread {
    stop: Option<std_mpsc::Sender<()>>,
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread, which drops the stream.
        self.stop.take();
    }
}

fn spawn_stream(
    build: impl FnOnce() -> Result<cpal::Stream> + Send + 'static,
) -> Result<StreamThread> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("voice-audio-device".into())
        .spawn(move || {
            let stream =
                match build().and_then(|s| s.play().map(|()| s).map_err(ClientError::audio)) {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
            let _ = ready_tx.send(Ok(()));
            // Blocks until the owner drops its sender.
            let _ = stop_rx.recv();
            drop(stream);
        })?;
    ready_rx
        .recv()
        .map_err(|_| ClientError::audio("the audio device thread died"))??;
    Ok(StreamThread {
        stop: Some(stop_tx),
    })
}

fn config(channels: u16) -> cpal::StreamConfig {
    cpal::StreamConfig {
        channels,
        sample_rate: SAMPLE_RATE,
        buffer_size: cpal::BufferSize::Default,
    }
}

fn push_bounded(buffer: &Shared, samples: impl Iterator<Item = i16>) {
    if let Ok(mut buffer) = buffer.lock() {
        buffer.extend(samples);
        let excess = buffer.len().saturating_sub(MAX_BUFFERED);
        buffer.drain(..excess);
    }
}

/// The default input device.
pub struct Microphone {
    buffer: Shared,
    _stream: StreamThread,
}

impl Microphone {
    pub fn open_default() -> Result<Self> {
        let buffer: Shared = Arc::default();
        let captured = buffer.clone();
        let stream = spawn_stream(move || {
            let device = cpal::default_host()
                .default_input_device()
                .ok_or_else(|| ClientError::audio("no microphone"))?;
            let channels = device
                .default_input_config()
                .map_err(ClientError::audio)?
                .channels()
                .max(1);
            device
                .build_input_stream(
                    config(channels),
                    move |data: &[f32], _: &cpal::InputCallbackInfo| {
                        let mono = data.chunks(usize::from(channels)).map(|frame| {
                            let sum: f32 = frame.iter().sum();
                            ((sum / frame.len() as f32).clamp(-1.0, 1.0) * f32::from(i16::MAX))
                                as i16
                        });
                        push_bounded(&captured, mono);
                    },
                    |e| tracing::warn!(error = %e, "microphone error"),
                    None,
                )
                .map_err(ClientError::audio)
        })?;
        Ok(Self {
            buffer,
            _stream: stream,
        })
    }
}

impl AudioSource for Microphone {
    fn read_frame(&mut self, frame: &mut Frame) -> bool {
        frame.fill(0);
        if let Ok(mut buffer) = self.buffer.lock() {
            let available = buffer.len().min(FRAME_SAMPLES);
            for (slot, sample) in frame.iter_mut().zip(buffer.drain(..available)) {
                *slot = sample;
            }
        }
        // A microphone never ends; an empty buffer is a late device.
        true
    }
}

/// The default output device.
pub struct Speaker {
    buffer: Shared,
    _stream: StreamThread,
}

impl Speaker {
    pub fn open_default() -> Result<Self> {
        let buffer: Shared = Arc::default();
        let playing = buffer.clone();
        let stream = spawn_stream(move || {
            let device = cpal::default_host()
                .default_output_device()
                .ok_or_else(|| ClientError::audio("no speaker"))?;
            let channels = device
                .default_output_config()
                .map_err(ClientError::audio)?
                .channels()
                .max(1);
            device
                .build_output_stream(
                    config(channels),
                    move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
                        let Ok(mut buffer) = playing.lock() else {
                            data.fill(0.0);
                            return;
                        };
                        for frame in data.chunks_mut(usize::from(channels)) {
                            // Underrun plays silence rather than stalling.
                            let sample = buffer.pop_front().unwrap_or(0);
                            frame.fill(f32::from(sample) / f32::from(i16::MAX));
                        }
                    },
                    |e| tracing::warn!(error = %e, "speaker error"),
                    None,
                )
                .map_err(ClientError::audio)
        })?;
        Ok(Self {
            buffer,
            _stream: stream,
        })
    }
}

impl AudioSink for Speaker {
    fn write_frame(&mut self, frame: &Frame) {
        push_bounded(&self.buffer, frame.iter().copied());
    }
}
