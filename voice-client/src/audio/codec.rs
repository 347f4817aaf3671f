//! Opus for calls: mono, 48 kHz, one packet per 20 ms frame, tuned for
//! voice (libopus through the `opus` crate).

use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::error::{ClientError, Result};

/// Largest Opus packet we produce; RFC 7587 caps a 20 ms voice packet far
/// below this, and a packet must fit one datagram with room for SRTP.
const MAX_PACKET_BYTES: usize = 1275;
/// 32 kbit/s: wideband voice with room to spare, a fraction of any link.
const BITRATE: i32 = 32_000;

pub struct OpusEncoder {
    encoder: opus::Encoder,
    packet: Vec<u8>,
}

impl OpusEncoder {
    pub fn new() -> Result<Self> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(ClientError::audio)?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(ClientError::audio)?;
        // In-band FEC lets the receiver rebuild a lost packet from the next.
        encoder.set_inband_fec(true).map_err(ClientError::audio)?;
        Ok(Self {
            encoder,
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// One frame to one Opus packet.
    pub fn encode(&mut self, frame: &Frame) -> Result<&[u8]> {
        let len = self
            .encoder
            .encode(frame, &mut self.packet)
            .map_err(ClientError::audio)?;
        Ok(&self.packet[..len])
    }
}

pub struct OpusDecoder {
    decoder: opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<Self> {
        let decoder =
            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(ClientError::audio)?;
        Ok(Self { decoder })
    }

    /// One packet to one frame. A packet of another duration (a browser
    /// may send 10 ms or 40 ms) is decoded and cut or padded to 20 ms, so
    /// sinks always see whole frames.
    pub fn decode(&mut self, packet: &[u8], frame: &mut Frame) -> Result<()> {
        // Room for the longest Opus packet (120 ms).
        let mut pcm = [0i16; FRAME_SAMPLES * 6];
        let samples = self
            .decoder
            .decode(packet, &mut pcm, false)
            .map_err(ClientError::audio)?;
        let used = samples.min(FRAME_SAMPLES);
        frame[..used].copy_from_slice(&pcm[..used]);
        frame[used..].fill(0);
        Ok(())
    }

    /// A frame in place of a lost packet (Opus packet loss concealment).
    pub fn conceal(&mut self, frame: &mut Frame) -> Result<()> {
        self.decoder
            .decode(&[], frame, false)
            .map_err(ClientError::audio)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioSource, Tone, goertzel_power};

    #[test]
    fn a_tone_survives_encode_and_decode() {
        let mut encoder = OpusEncoder::new().unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let mut tone = Tone::new(440.0);
        let mut decoded = Vec::new();
        let (mut input, mut output) = ([0i16; FRAME_SAMPLES], [0i16; FRAME_SAMPLES]);
        for _ in 0..50 {
            tone.read_frame(&mut input);
            let packet = encoder.encode(&input).unwrap().to_vec();
            assert!(packet.len() < 400, "{} bytes", packet.len());
            decoder.decode(&packet, &mut output).unwrap();
            decoded.extend_from_slice(&output);
        }
        // Skip the codec's start-up, then the tone dominates.
        let tail = &decoded[FRAME_SAMPLES * 10..];
        assert!(goertzel_power(tail, 440.0) > 100.0 * goertzel_power(tail, 1000.0));
        decoder.conceal(&mut output).unwrap();
    }
}
