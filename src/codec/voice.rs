//! The audio codecs a participant may speak — Opus (WebRTC, some SIP phones), G.711 µ-law and
//! A-law (PCMU/PCMA, every phone) and G.722 — behind one decoder and one encoder type that
//! the room's audio thread uses without caring which it is. The room mixes at 48 kHz; the
//! narrowband codecs are resampled to and from it with `rubato`'s fixed-ratio FFT resampler.
//!
//! Everything here is allocation-free per packet except G.722, whose library returns a
//! fresh vector per call (a few hundred bytes, only for callers that chose G.722).

use super::audio::{OpusDecoder, OpusEncoder};
use super::CodecError;
use crate::media::SAMPLES_PER_TICK;
use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// An audio codec as negotiated in SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum AudioCodec {
    Opus,
    Pcmu,
    Pcma,
    G722,
}

impl AudioCodec {
    /// From an SDP `rtpmap` encoding name and clock rate.
    pub fn from_rtpmap(name: &str, clock: u32) -> Option<Self> {
        match (name.to_ascii_uppercase().as_str(), clock) {
            ("OPUS", 48_000) => Some(Self::Opus),
            ("PCMU", 8_000) => Some(Self::Pcmu),
            ("PCMA", 8_000) => Some(Self::Pcma),
            ("G722", 8_000) => Some(Self::G722),
            _ => None,
        }
    }

    /// From a static payload type (RFC 3551 table 4).
    pub fn from_static_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(Self::Pcmu),
            8 => Some(Self::Pcma),
            9 => Some(Self::G722),
            _ => None,
        }
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Opus => "opus",
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
        }
    }

    /// The RTP clock rate. G.722 samples at 16 kHz but its RTP clock is 8 kHz (RFC 3551 4.5.2).
    pub fn rtp_clock(self) -> u32 {
        match self {
            Self::Opus => 48_000,
            _ => 8_000,
        }
    }

    /// `a=rtpmap` encoding parameters (channels) written in an answer.
    pub fn rtpmap_suffix(self) -> &'static str {
        match self {
            Self::Opus => "/2",
            _ => "",
        }
    }

    /// Samples per second of the decoded signal.
    pub fn sample_rate(self) -> usize {
        match self {
            Self::Opus => 48_000,
            Self::Pcmu | Self::Pcma => 8_000,
            Self::G722 => 16_000,
        }
    }

    /// RTP timestamp units per 20 ms.
    pub fn ts_per_tick(self) -> u32 {
        self.rtp_clock() / 50
    }

    /// Decoded samples per 20 ms.
    fn samples_per_tick(self) -> usize {
        self.sample_rate() / 50
    }
}

// ---------------------------------------------------------------------------------------
// G.711 (ITU-T G.711; the segment/quantisation layout of the classic reference code).

const fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = (((u & 0x0f) as i32) << 3) + 0x84;
    let t = t << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

const fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

const ULAW: [i16; 256] = table(false);
const ALAW: [i16; 256] = table(true);

pub fn ulaw_decode(u: u8) -> i16 {
    ULAW[u as usize]
}

pub fn alaw_decode(a: u8) -> i16 {
    ALAW[a as usize]
}

/// Segment of `v` among the upper bounds `ends` (8 when above the last).
fn segment(v: i32, ends: &[i32; 8]) -> i32 {
    ends.iter().position(|&e| v <= e).unwrap_or(8) as i32
}

pub fn ulaw_encode(pcm: i16) -> u8 {
    const ENDS: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];
    let (v, mask) = if pcm < 0 {
        (0x84 - pcm as i32, 0x7f)
    } else {
        (pcm as i32 + 0x84, 0xff)
    };
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    (((seg << 4) | ((v >> (seg + 3)) & 0x0f)) as u8) ^ mask
}

pub fn alaw_encode(pcm: i16) -> u8 {
    const ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let v = (pcm as i32) >> 3;
    let (v, mask) = if v >= 0 { (v, 0xd5) } else { (-v - 1, 0x55) };
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let q = if seg < 2 {
        (v >> 1) & 0x0f
    } else {
        (v >> seg) & 0x0f
    };
    (((seg << 4) | q) as u8) ^ mask
}

// ---------------------------------------------------------------------------------------
// Resampling between a codec's rate and the room's 48 kHz, 20 ms at a time.

/// A fixed-ratio resampler for one 20 ms chunk per call, with its own scratch.
struct Rate {
    inner: Fft<f32>,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl Rate {
    fn new(from: usize, to: usize) -> Result<Self, CodecError> {
        let (n_in, n_out) = (from / 50, to / 50);
        let inner = Fft::<f32>::new(from, to, n_in, 1, FixedSync::Both)
            .map_err(|e| CodecError::Resample(e.to_string()))?;
        debug_assert_eq!(inner.input_frames_next(), n_in);
        Ok(Self {
            inner,
            input: vec![0.0; n_in],
            output: vec![0.0; n_out],
        })
    }

    /// Resamples exactly one chunk (`input.len()` samples) into `out` (`output.len()`).
    fn run(&mut self, input: &[i16], out: &mut [i16]) -> Result<(), CodecError> {
        for (f, &s) in self.input.iter_mut().zip(input) {
            *f = s as f32;
        }
        let (n_in, n_out) = (self.input.len(), self.output.len());
        let a = InterleavedSlice::new(&self.input[..], 1, n_in)
            .map_err(|e| CodecError::Resample(e.to_string()))?;
        let mut b = InterleavedSlice::new_mut(&mut self.output[..], 1, n_out)
            .map_err(|e| CodecError::Resample(e.to_string()))?;
        self.inner
            .process_into_buffer(&a, &mut b, None)
            .map_err(|e| CodecError::Resample(e.to_string()))?;
        for (o, &f) in out.iter_mut().zip(&self.output) {
            *o = f.round().clamp(-32768.0, 32767.0) as i16;
        }
        Ok(())
    }
}

/// A whole 16 kHz clip at 48 kHz (prompts; not for the media path).
pub fn upsample_16k(pcm: &[i16]) -> Vec<i16> {
    let Ok(mut rate) = Rate::new(16_000, 48_000) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(pcm.len() * 3 + SAMPLES_PER_TICK);
    let mut chunk = vec![0i16; 320];
    let mut up = vec![0i16; SAMPLES_PER_TICK];
    // One chunk more than the input, to flush the resampler's delay.
    for start in (0..pcm.len() + 320).step_by(320) {
        chunk.fill(0);
        let part = pcm.get(start..).unwrap_or(&[]);
        let n = part.len().min(320);
        chunk[..n].copy_from_slice(&part[..n]);
        if rate.run(&chunk, &mut up).is_err() {
            break;
        }
        out.extend_from_slice(&up);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Decoding to 48 kHz.

enum Narrow {
    Pcmu,
    Pcma,
    G722(Box<ezk_g722::libg722::decoder::Decoder>),
}

/// Decodes one participant's stream, whatever its codec, into 48 kHz samples.
pub enum AudioDecoder {
    Opus(OpusDecoder),
    Narrow(NarrowDecoder),
}

/// A narrowband decoder: codec samples collect in a FIFO and leave it 20 ms at a time,
/// resampled to 48 kHz (so packets of any duration work).
pub struct NarrowDecoder {
    codec: Narrow,
    rate: Rate,
    fifo: Vec<i16>,
    len: usize,
    chunk: usize,
    /// The last 20 ms played, for concealment.
    last: Vec<i16>,
    conceal_gain: f32,
}

/// How much narrowband audio one caller may have buffered (200 ms at 16 kHz).
const NARROW_FIFO: usize = 3_200;

impl AudioDecoder {
    pub fn new(codec: AudioCodec) -> Result<Self, CodecError> {
        let narrow = match codec {
            AudioCodec::Opus => return Ok(Self::Opus(OpusDecoder::new()?)),
            AudioCodec::Pcmu => Narrow::Pcmu,
            AudioCodec::Pcma => Narrow::Pcma,
            AudioCodec::G722 => Narrow::G722(Box::new(ezk_g722::libg722::decoder::Decoder::new(
                ezk_g722::libg722::Bitrate::Mode1_64000,
                false,
                false,
            ))),
        };
        let chunk = codec.samples_per_tick();
        Ok(Self::Narrow(NarrowDecoder {
            codec: narrow,
            rate: Rate::new(codec.sample_rate(), 48_000)?,
            fifo: vec![0; NARROW_FIFO],
            len: 0,
            chunk,
            last: vec![0; chunk],
            conceal_gain: 1.0,
        }))
    }

    /// Decodes a packet, writing what is ready (whole 20 ms at 48 kHz for narrowband
    /// codecs) into `out`; returns the samples written. `out` must hold 960 samples; Opus
    /// packets may fill up to 5 760.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        match self {
            Self::Opus(d) => d.decode(packet, out),
            Self::Narrow(n) => {
                n.push_packet(packet);
                n.pull(out)
            }
        }
    }

    /// Narrowband only (`false` for Opus): buffers a packet's samples at the codec's own
    /// rate without resampling, so the level can be measured first
    /// ([`AudioDecoder::buffered_tick`]) and the 48 kHz conversion ([`AudioDecoder::drain`])
    /// paid only for what is mixed.
    pub fn buffer(&mut self, packet: &[u8]) -> bool {
        match self {
            Self::Opus(_) => false,
            Self::Narrow(n) => {
                n.push_packet(packet);
                true
            }
        }
    }

    /// Narrowband: buffers 20 ms of concealment (the last 20 ms again, 6 dB quieter).
    pub fn buffer_concealment(&mut self) {
        if let Self::Narrow(n) = self {
            n.push_concealment();
        }
    }

    /// Narrowband: the next 20 ms at the codec's rate, if buffered (for measuring it).
    pub fn buffered_tick(&self) -> Option<&[i16]> {
        match self {
            Self::Narrow(n) if n.len >= n.chunk => Some(&n.fifo[..n.chunk]),
            _ => None,
        }
    }

    /// Narrowband: drops the next 20 ms unconverted (a caller measured and not mixed).
    pub fn discard_tick(&mut self) {
        if let Self::Narrow(n) = self {
            if n.len >= n.chunk {
                n.advance();
            }
        }
    }

    pub fn is_narrowband(&self) -> bool {
        matches!(self, Self::Narrow(_))
    }

    /// Samples still buffered from earlier packets (narrowband codecs), up to `out.len()`.
    pub fn drain(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        match self {
            Self::Opus(_) => Ok(0),
            Self::Narrow(n) => n.pull(out),
        }
    }

    /// 20 ms of concealment for a lost packet: Opus PLC; for G.711/G.722 the last 20 ms
    /// again, 6 dB quieter each time.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        match self {
            Self::Opus(d) => d.conceal(out),
            Self::Narrow(n) => {
                n.push_concealment();
                n.pull(out)
            }
        }
    }
}

impl NarrowDecoder {
    /// A received packet's samples (ends any concealment fade).
    fn push_packet(&mut self, packet: &[u8]) {
        self.push(packet);
        self.conceal_gain = 1.0;
    }

    /// 20 ms of concealment: the last 20 ms again, 6 dB quieter each time.
    fn push_concealment(&mut self) {
        self.conceal_gain *= 0.5;
        let (g, chunk) = (self.conceal_gain, self.chunk);
        if self.len + chunk <= self.fifo.len() {
            for i in 0..chunk {
                self.fifo[self.len + i] = (self.last[i] as f32 * g) as i16;
            }
            self.len += chunk;
        }
    }

    /// Drops the next 20 ms from the FIFO, keeping it as the last played.
    fn advance(&mut self) {
        self.last.copy_from_slice(&self.fifo[..self.chunk]);
        self.fifo.copy_within(self.chunk..self.len, 0);
        self.len -= self.chunk;
    }

    fn push(&mut self, packet: &[u8]) {
        let room = self.fifo.len() - self.len;
        match &mut self.codec {
            Narrow::Pcmu => {
                let n = packet.len().min(room);
                for (d, &b) in self.fifo[self.len..].iter_mut().zip(&packet[..n]) {
                    *d = ULAW[b as usize];
                }
                self.len += n;
            }
            Narrow::Pcma => {
                let n = packet.len().min(room);
                for (d, &b) in self.fifo[self.len..].iter_mut().zip(&packet[..n]) {
                    *d = ALAW[b as usize];
                }
                self.len += n;
            }
            Narrow::G722(d) => {
                // Two samples per byte at 64 kbit/s; bound what a peer's packet can cost.
                let n = packet.len().min(room / 2);
                let pcm = d.decode(&packet[..n]);
                let m = pcm.len().min(room);
                self.fifo[self.len..self.len + m].copy_from_slice(&pcm[..m]);
                self.len += m;
            }
        }
    }

    fn pull(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let mut written = 0;
        while self.len >= self.chunk && out.len() - written >= SAMPLES_PER_TICK {
            self.rate.run(
                &self.fifo[..self.chunk],
                &mut out[written..written + SAMPLES_PER_TICK],
            )?;
            self.advance();
            written += SAMPLES_PER_TICK;
        }
        Ok(written)
    }
}

// ---------------------------------------------------------------------------------------
// Encoding from 48 kHz.

/// Encodes one output, whatever its codec, from 20 ms at 48 kHz.
pub enum AudioEncoder {
    Opus(OpusEncoder),
    #[allow(private_interfaces)]
    Narrow {
        codec: AudioCodec,
        enc: Option<Box<ezk_g722::libg722::encoder::Encoder>>,
        rate: Rate,
        pcm: Vec<i16>,
    },
}

impl AudioEncoder {
    /// `bitrate_bps` and `complexity` apply to Opus; G.711 and G.722 have fixed rates.
    pub fn new(codec: AudioCodec, bitrate_bps: i32, complexity: i32) -> Result<Self, CodecError> {
        if codec == AudioCodec::Opus {
            return Ok(Self::Opus(OpusEncoder::new(bitrate_bps, complexity)?));
        }
        let enc = (codec == AudioCodec::G722).then(|| {
            Box::new(ezk_g722::libg722::encoder::Encoder::new(
                ezk_g722::libg722::Bitrate::Mode1_64000,
                false,
                false,
            ))
        });
        Ok(Self::Narrow {
            codec,
            enc,
            rate: Rate::new(48_000, codec.sample_rate())?,
            pcm: vec![0; codec.samples_per_tick()],
        })
    }

    pub fn codec(&self) -> AudioCodec {
        match self {
            Self::Opus(_) => AudioCodec::Opus,
            Self::Narrow { codec, .. } => *codec,
        }
    }

    /// Encodes 960 samples (20 ms at 48 kHz) into `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        match self {
            Self::Opus(e) => e.encode(pcm, out),
            Self::Narrow {
                codec,
                enc,
                rate,
                pcm: narrow,
            } => {
                rate.run(&pcm[..SAMPLES_PER_TICK], narrow)?;
                match (codec, enc) {
                    (AudioCodec::Pcmu, _) => {
                        for (o, &s) in out.iter_mut().zip(narrow.iter()) {
                            *o = ulaw_encode(s);
                        }
                        Ok(narrow.len().min(out.len()))
                    }
                    (AudioCodec::Pcma, _) => {
                        for (o, &s) in out.iter_mut().zip(narrow.iter()) {
                            *o = alaw_encode(s);
                        }
                        Ok(narrow.len().min(out.len()))
                    }
                    (_, Some(g)) => {
                        let bytes = g.encode(narrow);
                        let n = bytes.len().min(out.len());
                        out[..n].copy_from_slice(&bytes[..n]);
                        Ok(n)
                    }
                    _ => Err(CodecError::Resample("no G.722 encoder".into())),
                }
            }
        }
    }

    /// Sizes Opus in-band FEC for the reported loss (other codecs have none).
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        match self {
            Self::Opus(e) => e.set_expected_loss(percent),
            Self::Narrow { .. } => Ok(()),
        }
    }

    pub fn expected_loss(&self) -> u8 {
        match self {
            Self::Opus(e) => e.expected_loss(),
            Self::Narrow { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: usize, n: usize, from: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| {
                ((i as f32 * 2.0 * std::f32::consts::PI * freq / rate as f32).sin() * 8_000.0)
                    as i16
            })
            .collect()
    }

    #[test]
    fn g711_reference_values() {
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
    }

    #[test]
    fn g711_round_trip_is_within_a_quantisation_step() {
        for v in (-32_000i32..32_000).step_by(37) {
            let v = v as i16;
            let (u, a) = (ulaw_decode(ulaw_encode(v)), alaw_decode(alaw_encode(v)));
            // Steps grow with the segment: at most 1/16 of the magnitude (plus the floor).
            let tol = (v as i32).abs() / 16 + 16;
            assert!((u as i32 - v as i32).abs() <= tol, "µ-law {v} -> {u}");
            assert!((a as i32 - v as i32).abs() <= tol, "A-law {v} -> {a}");
        }
        // Every code decodes and re-encodes to itself (except µ-law's negative zero).
        for c in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(c)), c);
            if c != 0x7f {
                assert_eq!(ulaw_encode(ulaw_decode(c)), c, "{c:#x}");
            }
        }
    }

    /// A 1 kHz tone through each codec (48 kHz → codec → 48 kHz) keeps its frequency and
    /// level; a 3 kHz tone, out of band for nothing, too. Packets of 10, 20 and 30 ms.
    #[test]
    fn every_codec_carries_a_tone_through_the_resamplers() {
        for codec in [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
        ] {
            let mut enc = AudioEncoder::new(codec, 32_000, 5).unwrap();
            let mut dec = AudioDecoder::new(codec).unwrap();
            let mut got = Vec::new();
            let mut pkt = vec![0u8; 1500];
            let mut out = vec![0i16; 5760];
            for k in 0..50 {
                let pcm = tone(1_000.0, 48_000, 960, k * 960);
                let n = enc.encode(&pcm, &mut pkt).unwrap();
                let expect = match codec {
                    AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => 160,
                    AudioCodec::Opus => n,
                };
                assert_eq!(n, expect, "{codec:?}");
                // Narrowband: split each packet in two (10 ms packets) to exercise the FIFO.
                if codec != AudioCodec::Opus && k % 2 == 1 {
                    let h = n / 2;
                    let m = dec.decode(&pkt[..h], &mut out).unwrap();
                    got.extend_from_slice(&out[..m]);
                    let m = dec.decode(&pkt[h..n], &mut out).unwrap();
                    got.extend_from_slice(&out[..m]);
                } else {
                    let m = dec.decode(&pkt[..n], &mut out).unwrap();
                    got.extend_from_slice(&out[..m]);
                }
            }
            assert!(got.len() >= 47 * 960, "{codec:?}: {}", got.len());
            let tail = &got[got.len() - 20 * 960..];
            let on = crate::mixer::tone_power(tail, 1_000.0);
            let off = crate::mixer::tone_power(tail, 1_700.0);
            let expected = 8_000.0f64.powi(2); // a sine of amplitude A: A²
            assert!(
                on > expected * 0.5 && on < expected * 1.5,
                "{codec:?}: {on} vs {expected}"
            );
            assert!(on > off * 1_000.0, "{codec:?}: on {on} off {off}");
        }
    }

    #[test]
    fn concealment_fades_and_garbage_does_not_panic() {
        let mut dec = AudioDecoder::new(AudioCodec::Pcmu).unwrap();
        let mut out = vec![0i16; 960];
        // 500 Hz repeats every 160 samples at 8 kHz: the same packet is a continuous tone.
        let pkt: Vec<u8> = tone(500.0, 8_000, 160, 0)
            .iter()
            .map(|&s| ulaw_encode(s))
            .collect();
        for _ in 0..5 {
            assert_eq!(dec.decode(&pkt, &mut out).unwrap(), 960);
        }
        let first: i64 = out.iter().map(|&s| (s as i64).abs()).sum();
        assert_eq!(dec.conceal(&mut out).unwrap(), 960);
        let concealed: i64 = out.iter().map(|&s| (s as i64).abs()).sum();
        assert!(concealed < first && concealed > 0);
        // A huge packet fills the FIFO to its bound and no further.
        let mut dec = AudioDecoder::new(AudioCodec::G722).unwrap();
        let big = vec![0x55u8; 60_000];
        let mut total = dec.decode(&big, &mut out).unwrap();
        while let Ok(n @ 1..) = dec.drain(&mut out) {
            total += n;
        }
        assert!(total <= NARROW_FIFO / 320 * 960 + 960);
    }
}
