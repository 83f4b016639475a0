//! Opus at 48 kHz mono, 20 ms frames.

use super::CodecError;
use crate::media::SAMPLES_PER_TICK;

/// Decodes one participant's Opus stream; conceals losses with Opus PLC.
pub struct OpusDecoder {
    inner: opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: opus::Decoder::new(48_000, opus::Channels::Mono)?,
        })
    }

    /// Decodes a packet into `out` (which must hold up to 120 ms = 5 760 samples);
    /// returns the samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        Ok(self.inner.decode(packet, out, false)?)
    }

    /// Packet-loss concealment for one 20 ms tick into `out[..960]`.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        Ok(self
            .inner
            .decode(&[], &mut out[..SAMPLES_PER_TICK], false)?)
    }
}

/// Loss assumed until the listener's receiver reports say otherwise.
pub const INITIAL_EXPECTED_LOSS: u8 = 5;

/// Encodes one output mix. In-band FEC is on; how many bits it gets follows the loss its
/// listeners report ([`OpusEncoder::set_expected_loss`]).
pub struct OpusEncoder {
    inner: opus::Encoder,
    /// The packet loss (%) the in-band FEC is sized for.
    expected_loss: u8,
}

impl OpusEncoder {
    pub fn new(bitrate_bps: i32, complexity: i32) -> Result<Self, CodecError> {
        let mut inner = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
        inner.set_bitrate(opus::Bitrate::Bits(bitrate_bps))?;
        inner.set_complexity(complexity)?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(INITIAL_EXPECTED_LOSS as i32)?;
        Ok(Self {
            inner,
            expected_loss: INITIAL_EXPECTED_LOSS,
        })
    }

    /// Sizes the in-band FEC for `percent` loss (0 = no FEC bits; at most 50).
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        let percent = percent.min(50);
        if percent != self.expected_loss {
            self.inner.set_packet_loss_perc(percent as i32)?;
            self.expected_loss = percent;
        }
        Ok(())
    }

    pub fn expected_loss(&self) -> u8 {
        self.expected_loss
    }

    /// Encoder delay in samples (the Opus "pre-skip" a container must announce).
    pub fn lookahead(&mut self) -> u16 {
        self.inner
            .get_lookahead()
            .map_or(312, |v| v.clamp(0, u16::MAX as i32) as u16)
    }

    /// Encodes 960 samples into `out`, returning the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        Ok(self.inner.encode(pcm, out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_a_tone() {
        let mut enc = OpusEncoder::new(32_000, 5).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut pkt = vec![0u8; 1500];
        let mut out = vec![0i16; 5760];
        let mut energy = 0f64;
        for k in 0..20 {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    ((((k * 960 + i) as f32) * 2.0 * std::f32::consts::PI * 440.0 / 48_000.0).sin()
                        * 10_000.0) as i16
                })
                .collect();
            let n = enc.encode(&pcm, &mut pkt).unwrap();
            let m = dec.decode(&pkt[..n], &mut out).unwrap();
            assert_eq!(m, 960);
            if k > 5 {
                energy += out[..m].iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
            }
        }
        assert!(energy / (14.0 * 960.0) > 1e6);
        assert_eq!(dec.conceal(&mut out).unwrap(), 960);
    }

    #[test]
    fn garbage_packet_is_an_error_not_a_crash() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = vec![0i16; 5760];
        // A TOC claiming code 3 with an impossible frame count.
        let _ = dec.decode(&[0xff, 0xff, 0xff, 0xff], &mut out);
        let _ = dec.decode(&[0x03], &mut out);
    }
}
