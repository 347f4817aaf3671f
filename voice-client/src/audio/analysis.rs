//! Measuring received audio: the power at one frequency (Goertzel), the
//! strongest frequency among candidates, and the overall level. Tests use
//! it to prove a tone crossed a call; the CLI uses it to report levels.

use super::SAMPLE_RATE;

/// The power of `samples` at `frequency` Hz, normalised by the length so
/// windows of different sizes compare (the Goertzel algorithm: one DFT bin
/// without computing the others).
pub fn goertzel_power(samples: &[i16], frequency: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let coefficient = 2.0 * (std::f64::consts::TAU * frequency / f64::from(SAMPLE_RATE)).cos();
    let (mut previous, mut before_previous) = (0.0f64, 0.0f64);
    for &sample in samples {
        let current =
            f64::from(sample) / f64::from(i16::MAX) + coefficient * previous - before_previous;
        before_previous = previous;
        previous = current;
    }
    let power = previous * previous + before_previous * before_previous
        - coefficient * previous * before_previous;
    power / (samples.len() as f64).powi(2)
}

/// Of `candidates`, the frequency with the most power in `samples`, with
/// that power.
pub fn dominant_frequency(samples: &[i16], candidates: &[f64]) -> Option<(f64, f64)> {
    candidates
        .iter()
        .map(|&f| (f, goertzel_power(samples, f)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Root mean square level, 0.0 (silence) to 1.0 (full scale).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|&s| (f64::from(s) / f64::from(i16::MAX)).powi(2))
        .sum();
    (sum / samples.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioSource, FRAME_SAMPLES, Silence, Tone};

    fn render(source: &mut dyn AudioSource, frames: usize) -> Vec<i16> {
        let mut out = Vec::new();
        let mut frame = [0i16; FRAME_SAMPLES];
        for _ in 0..frames {
            source.read_frame(&mut frame);
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn a_tone_has_its_power_at_its_frequency() {
        let samples = render(&mut Tone::new(440.0), 50);
        let at_440 = goertzel_power(&samples, 440.0);
        let at_880 = goertzel_power(&samples, 880.0);
        assert!(at_440 > 1000.0 * at_880, "{at_440} vs {at_880}");
        let candidates = [300.0, 440.0, 660.0, 880.0];
        assert_eq!(dominant_frequency(&samples, &candidates).unwrap().0, 440.0);
        // A sine at half scale has an RMS of 0.5 / sqrt(2).
        assert!((rms(&samples) - 0.3535).abs() < 0.01);
    }

    #[test]
    fn silence_has_no_power() {
        let samples = render(&mut Silence, 10);
        assert_eq!(goertzel_power(&samples, 440.0), 0.0);
        assert_eq!(rms(&samples), 0.0);
        assert_eq!(rms(&[]), 0.0);
    }
}
