//! WAV files as call audio: [`WavSource`] plays one (any sample format,
//! channel count and rate, turned into 48 kHz mono), [`WavSink`] records a
//! call as 48 kHz mono 16-bit.

use std::io::BufWriter;
use std::path::Path;

use super::{AudioSink, AudioSource, FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::error::{ClientError, Result};

/// Plays a WAV file once.
pub struct WavSource {
    /// The whole file as 48 kHz mono; voice clips are small.
    samples: Vec<i16>,
    position: usize,
}

impl WavSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let reader = hound::WavReader::open(path)
            .map_err(|e| ClientError::audio(format!("cannot read {}: {e}", path.display())))?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        let interleaved: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .into_samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(ClientError::audio)?,
            hound::SampleFormat::Int => {
                let scale = 2f32.powi(i32::from(spec.bits_per_sample) - 1);
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|s| s as f32 / scale))
                    .collect::<Result<_, _>>()
                    .map_err(ClientError::audio)?
            }
        };
        let mono: Vec<f32> = interleaved
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect();
        let resampled = resample_linear(&mono, spec.sample_rate, SAMPLE_RATE);
        Ok(Self::from_samples(
            resampled
                .iter()
                // The inverse of the 2^(bits-1) scale above, so 16-bit
                // files come back sample for sample.
                .map(|s| (s * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16)
                .collect(),
        ))
    }

    /// Plays 48 kHz mono samples held in memory.
    pub fn from_samples(samples: Vec<i16>) -> Self {
        Self {
            samples,
            position: 0,
        }
    }

    /// The length in 48 kHz samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Linear interpolation between rates: enough for voice prompts and test
/// tones, which is what call files are.
fn resample_linear(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 {
        return input.to_vec();
    }
    let ratio = f64::from(from) / f64::from(to);
    let out_len = (input.len() as f64 / ratio).floor() as usize;
    (0..out_len)
        .map(|i| {
            let position = i as f64 * ratio;
            let index = position.floor() as usize;
            let fraction = (position - index as f64) as f32;
            let a = input[index.min(input.len() - 1)];
            let b = input[(index + 1).min(input.len() - 1)];
            a + (b - a) * fraction
        })
        .collect()
}

impl AudioSource for WavSource {
    fn read_frame(&mut self, frame: &mut Frame) -> bool {
        let remaining = &self.samples[self.position.min(self.samples.len())..];
        if remaining.is_empty() {
            frame.fill(0);
            return false;
        }
        let take = remaining.len().min(FRAME_SAMPLES);
        frame[..take].copy_from_slice(&remaining[..take]);
        frame[take..].fill(0);
        self.position += take;
        true
    }
}

/// Records a call into a WAV file; the header is completed on
/// [`AudioSink::finish`] (or on drop).
pub struct WavSink {
    writer: Option<hound::WavWriter<BufWriter<std::fs::File>>>,
    error: Option<String>,
}

impl WavSink {
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec)
            .map_err(|e| ClientError::audio(format!("cannot create {}: {e}", path.display())))?;
        Ok(Self {
            writer: Some(writer),
            error: None,
        })
    }
}

impl AudioSink for WavSink {
    fn write_frame(&mut self, frame: &Frame) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        for &sample in frame {
            if let Err(e) = writer.write_sample(sample) {
                // Keep the first failure for finish(); stop writing.
                self.error = Some(e.to_string());
                self.writer = None;
                return;
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.take() {
            writer.finalize().map_err(ClientError::audio)?;
        }
        match self.error.take() {
            Some(e) => Err(ClientError::audio(e)),
            None => Ok(()),
        }
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{Tone, goertzel_power};

    #[test]
    fn a_recording_plays_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.wav");
        let mut sink = WavSink::create(&path).unwrap();
        let mut tone = Tone::new(440.0);
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut written = Vec::new();
        for _ in 0..10 {
            tone.read_frame(&mut frame);
            sink.write_frame(&frame);
            written.extend_from_slice(&frame);
        }
        sink.finish().unwrap();

        let mut source = WavSource::open(&path).unwrap();
        assert_eq!(source.len(), written.len());
        let mut read = Vec::new();
        while source.read_frame(&mut frame) {
            read.extend_from_slice(&frame);
        }
        assert_eq!(read, written);
    }

    #[test]
    fn other_rates_and_stereo_become_48k_mono() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo16k.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..16_000 {
            let v = ((i as f64 / 16_000.0 * 500.0 * std::f64::consts::TAU).sin() * 10_000.0) as i16;
            writer.write_sample(v).unwrap();
            writer.write_sample(v).unwrap();
        }
        writer.finalize().unwrap();
        let source = WavSource::open(&path).unwrap();
        assert_eq!(source.len(), 48_000);
        assert!(
            goertzel_power(&source.samples, 500.0) > 100.0 * goertzel_power(&source.samples, 900.0)
        );
        assert!(WavSource::open(dir.path().join("missing.wav")).is_err());
    }
}
