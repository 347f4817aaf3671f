//! Where call audio comes from and where it goes.
//!
//! Audio moves in [`FRAME_SAMPLES`]-sample frames of mono 16-bit PCM at
//! [`SAMPLE_RATE`] (20 ms at 48 kHz: one Opus packet each). A call pulls
//! one frame from its [`AudioSource`] every 20 ms and pushes every decoded
//! frame into its [`AudioSink`].
//!
//! Sources: [`Tone`], [`Silence`], [`WavSource`]. Sinks: [`WavSink`],
//! [`MemorySink`], [`NullSink`]. With the `cpal` feature, [`device`] adds the
//! microphone and the speaker.

mod analysis;
mod codec;
#[cfg(feature = "cpal")]
pub mod device;
mod wav;

pub use analysis::{dominant_frequency, goertzel_power, rms};
pub use codec::{OpusDecoder, OpusEncoder};
pub use wav::{WavSink, WavSource};

use std::sync::{Arc, Mutex};

/// Samples per second of every frame.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;
/// One frame of mono PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// Produces the audio a call sends.
pub trait AudioSource: Send {
    /// Fills `frame` with the next 20 ms. Returns `false` once the source
    /// has nothing more (a WAV file that ended); the call then sends
    /// silence.
    fn read_frame(&mut self, frame: &mut Frame) -> bool;
}

/// Receives the audio a call plays.
pub trait AudioSink: Send {
    /// One decoded 20 ms frame, in arrival order.
    fn write_frame(&mut self, frame: &Frame);

    /// The call ended: flush what is buffered (a WAV file's header).
    fn finish(&mut self) -> crate::Result<()> {
        Ok(())
    }
}

/// A sine tone at a fixed frequency and amplitude.
#[derive(Clone, Debug)]
pub struct Tone {
    frequency: f64,
    amplitude: f64,
    /// Phase in cycles, kept in [0, 1) so long calls do not lose precision.
    phase: f64,
}

impl Tone {
    /// A tone at `frequency` Hz at half of full scale.
    pub fn new(frequency: f64) -> Self {
        Self {
            frequency,
            amplitude: 0.5,
            phase: 0.0,
        }
    }
}

impl AudioSource for Tone {
    fn read_frame(&mut self, frame: &mut Frame) -> bool {
        let step = self.frequency / f64::from(SAMPLE_RATE);
        for sample in frame.iter_mut() {
            let value = (self.phase * std::f64::consts::TAU).sin() * self.amplitude;
            *sample = (value * f64::from(i16::MAX)) as i16;
            self.phase = (self.phase + step).fract();
        }
        true
    }
}

/// Sends nothing audible, forever.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silence;

impl AudioSource for Silence {
    fn read_frame(&mut self, frame: &mut Frame) -> bool {
        frame.fill(0);
        true
    }
}

/// Drops what it receives.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl AudioSink for NullSink {
    fn write_frame(&mut self, _frame: &Frame) {}
}

/// Keeps every received sample in memory, shared with a handle the caller
/// keeps: for tests and for analysing a call's audio.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    samples: Arc<Mutex<Vec<i16>>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything received so far.
    pub fn samples(&self) -> Vec<i16> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl AudioSink for MemorySink {
    fn write_frame(&mut self, frame: &Frame) {
        if let Ok(mut samples) = self.samples.lock() {
            samples.extend_from_slice(frame);
        }
    }
}
