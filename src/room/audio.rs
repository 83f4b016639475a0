//! The room's audio thread: every 20 ms (absolute deadline) it
//! 1. reads each participant's level — the sender's RFC 6464 audio-level header extension
//!    when present (no decoding needed), else the energy of the decoded frame; a phone's
//!    (G.711/G.722) is measured on its 8/16 kHz samples before any resampling,
//! 2. picks who is in the mix ([`crate::mixer::talkers`]): every talker up to `top_k`
//!    (default 8); above that by level, with turns so nobody is locked out,
//! 3. decodes only talkers (plus Opus senders without the level extension, and anyone
//!    fading out); everyone else's packets are drained undecoded, and a measured phone's
//!    20 ms is converted to 48 kHz only if it is mixed,
//! 4. mixes the talkers in i32 with a 20 ms linear cross-fade whenever someone enters or
//!    leaves the mix (no clicks), and
//! 5. sends each talker its own N-1 mix (total minus itself) and every non-talker one
//!    shared mix, limited and Opus-encoded **once**, with RTP timestamps from the mixer
//!    clock.
//!
//! It also runs active-speaker detection for the layouts and clients.
//!
//! Participants speak any [`AudioCodec`]: WebRTC ones Opus, phones G.711/G.722/Opus; each
//! is decoded to (and its mix encoded from) the 48 kHz mix, and the shared mix is encoded
//! once **per codec** in use. A participant may be *waiting* (a caller entering a PIN): it
//! contributes nothing and hears nothing but its own prompts until admitted. Prompts play
//! to one participant; tones (join/leave) to everyone.

use super::clock::TickClock;
use super::link::ViewerLink;
use super::{AudioCmd, RoomEvent, RoomStats, RtpSink};
use crate::codec::audio::OpusEncoder;
use crate::codec::pack::SharedBuf;
use crate::codec::voice::{AudioCodec, AudioDecoder, AudioEncoder};
use crate::config::Config;
use crate::ids::ParticipantId;
use crate::media::jitter::{AudioJitter, AudioPop};
use crate::media::{AUDIO_TICK, SAMPLES_PER_TICK};
use crate::mixer::{self, Limiter, SpeakerDetector, SpeakerEvent, TalkerSelector, TalkerState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// Consecutive missing packets concealed with PLC before the participant counts as silent.
const MAX_PLC_TICKS: u32 = 5;
/// Decoded-sample FIFO capacity: one 120 ms Opus packet plus a tick.
const FIFO_CAP: usize = 5_760 + SAMPLES_PER_TICK;
/// Level smoothing per tick when the level falls.
const LEVEL_SMOOTHING: f32 = 0.35;
/// An RFC 6464 level older than this many ticks is stale.
const EXT_LEVEL_FRESH_TICKS: u64 = 5;

struct Participant {
    id: ParticipantId,
    jitter: AudioJitter,
    codec: AudioCodec,
    decoder: Option<AudioDecoder>,
    /// Admitted to the conference (false while a caller enters its PIN).
    admitted: bool,
    /// A prompt playing to this participant only, and how far it has played.
    prompt: Option<(Clip, usize)>,
    fifo: Vec<i16>,
    fifo_len: usize,
    /// This tick's decoded samples (valid when `decoded`).
    frame: Vec<i16>,
    /// This tick's contribution to the mix (frame × fade gain).
    contrib: Vec<i16>,
    decoded: bool,
    /// Narrowband: this tick's 20 ms is buffered at the codec's rate and measured, not yet
    /// converted to 48 kHz (done only if it is mixed).
    measured: bool,
    /// Whether `frame` holds sound this tick.
    active: bool,
    muted: bool,
    /// Its media is connected (packets may come), whether or not it receives a mix.
    attached: bool,
    plc_run: u32,
    /// Frames concealed since the last tick's count.
    concealed: u64,
    /// Last RFC 6464 level (0..=127 -dBov) and the tick it came in.
    ext_level: Option<(u8, u64)>,
    /// Its smoothed level and place in the mix.
    talk: TalkerState,
    /// Mix gain at the end of the last tick (0 = out of the mix, 1 = fully in).
    gain: f32,
    /// Contributes to this tick's mix (a talker, or fading in or out).
    in_mix: bool,
    out: Option<Output>,
}

impl AsRef<TalkerState> for Participant {
    fn as_ref(&self) -> &TalkerState {
        &self.talk
    }
}

impl AsMut<TalkerState> for Participant {
    fn as_mut(&mut self) -> &mut TalkerState {
        &mut self.talk
    }
}

/// A short 48 kHz clip (prompt or tone), shared by everyone who plays it.
pub type Clip = Arc<[i16]>;

struct Output {
    encoder: AudioEncoder,
    limiter: Limiter,
    sink: RtpSink,
    link: Option<Arc<ViewerLink>>,
    /// Its packets, from one reclaimed buffer (no allocation per tick).
    buf: SharedBuf,
}

/// Clips playing to everyone at once, at most.
const MAX_ANNOUNCEMENTS: usize = 4;

/// Every second, the Opus FEC of each output follows its listeners' reported loss.
const FEC_UPDATE_TICKS: u64 = 50;

/// Scratch for the outputs.
struct MixBuffers {
    mix: Vec<i32>,
    pcm: Vec<i16>,
    packet: Vec<u8>,
}

impl MixBuffers {
    fn new() -> Self {
        Self {
            mix: vec![0; SAMPLES_PER_TICK],
            pcm: vec![0; SAMPLES_PER_TICK],
            packet: vec![0; 1500],
        }
    }
}

/// The mix every non-talker of one codec hears, encoded once per tick.
struct SharedMix {
    encoder: AudioEncoder,
    limiter: Limiter,
    /// This tick's packet (empty when the encode failed).
    packet: bytes::Bytes,
    /// The tick `packet` was encoded for.
    encoded_at: Option<u64>,
    buf: SharedBuf,
}

impl SharedMix {
    /// Encodes `total` for tick `tick` unless already done; returns the encode's CPU
    /// time when it ran. One buffer, reference-counted into every listener's RTP packet
    /// (the last tick's view released first, so its storage can be reused).
    fn encode_once(&mut self, tick: u64, total: &[i32], b: &mut MixBuffers) -> Option<u64> {
        if self.encoded_at == Some(tick) {
            return None;
        }
        self.encoded_at = Some(tick);
        self.limiter.process(total, &mut b.pcm);
        let t = crate::metrics::thread_cpu_ns();
        let len = self.encoder.encode(&b.pcm, &mut b.packet).unwrap_or(0);
        let ns = crate::metrics::thread_cpu_ns() - t;
        self.packet = bytes::Bytes::new();
        self.packet = self.buf.share(&b.packet[..len]);
        Some(ns)
    }
}

pub struct AudioLoop {
    participants: Vec<Participant>,
    total: Vec<i32>,
    scratch: MixBuffers,
    /// The mix every non-talker hears (everyone in the mix), encoded once per codec.
    shared: Vec<SharedMix>,
    /// Clips playing to everyone (tones, the recording announcement; a few at once, each
    /// with how far it has played).
    announce: Vec<(Clip, usize)>,
    talkers: TalkerSelector,
    speaker: SpeakerDetector,
    speaker_shared: Arc<AtomicU64>,
    events: broadcast::Sender<RoomEvent>,
    stats: Arc<RoomStats>,
    bitrate: i32,
    complexity: i32,
    tick: u64,
    /// When tick 0 was due; tick k's time is `clock_start + 20 ms · k` (recording timestamps).
    clock_start: Instant,
    /// The full room mix, encoded once more for the recorder.
    recording: Option<(OpusEncoder, Limiter, crate::recording::RecSender, SharedBuf)>,
    /// Watchers (WHEP): each hears the full mix, the shared Opus mix's packets.
    watchers: Vec<(ParticipantId, RtpSink)>,
    /// The live output: the limited full mix as PCM, every tick.
    live: Option<(crate::live::LiveSender, Limiter, SharedBuf)>,
}

impl AudioLoop {
    pub fn new(
        config: &Config,
        events: broadcast::Sender<RoomEvent>,
        speaker_shared: Arc<AtomicU64>,
        stats: Arc<RoomStats>,
    ) -> Self {
        let bitrate = config.audio.bitrate_kbps as i32 * 1000;
        let complexity = config.audio.complexity as i32;
        Self {
            participants: Vec::new(),
            total: vec![0; SAMPLES_PER_TICK],
            scratch: MixBuffers::new(),
            shared: Vec::new(),
            announce: Vec::with_capacity(MAX_ANNOUNCEMENTS),
            talkers: TalkerSelector::new(config.audio.top_k),
            speaker: SpeakerDetector::default(),
            speaker_shared,
            events,
            stats,
            bitrate,
            complexity,
            tick: 0,
            clock_start: Instant::now(),
            recording: None,
            watchers: Vec::new(),
            live: None,
        }
    }

    pub fn run(mut self, rx: Receiver<AudioCmd>) {
        self.clock_start = Instant::now();
        let mut clock = TickClock::new(self.clock_start, AUDIO_TICK);
        loop {
            // Everything queued first (at most a queue's worth, so a flood cannot keep the
            // loop here): commands are handled within a tick even when ticks are overdue.
            for _ in 0..super::AUDIO_QUEUE {
                match rx.try_recv() {
                    Ok(AudioCmd::Stop) | Err(TryRecvError::Disconnected) => return,
                    Ok(cmd) => self.handle(cmd),
                    Err(TryRecvError::Empty) => break,
                }
            }
            if self.is_idle() {
                // Nothing attached and nothing recorded: nothing to produce. Sleep until
                // a command comes instead of ticking (an idle room costs no CPU).
                match rx.recv() {
                    Ok(AudioCmd::Stop) | Err(_) => return,
                    Ok(cmd) => self.handle(cmd),
                }
                clock.resume_at(Instant::now());
                continue;
            }
            let now = Instant::now();
            if let Some(k) = clock.take_due(now) {
                self.stats
                    .audio_lateness
                    .record(now.saturating_duration_since(clock.deadline() - clock.period()));
                self.tick = k;
                self.mix_tick();
                self.stats.audio_tick_duration.record(now.elapsed());
                self.stats
                    .audio_ticks_skipped
                    .store(clock.skipped, Ordering::Relaxed);
                self.stats.audio_ticks.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match rx.recv_timeout(clock.deadline().saturating_duration_since(now)) {
                Ok(AudioCmd::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Sets the tick index (for driving the loop without its thread, e.g. benchmarks).
    pub fn set_tick(&mut self, k: u64) {
        self.tick = k;
    }

    /// Current talkers, in join order.
    pub fn talkers(&self) -> Vec<ParticipantId> {
        self.participants
            .iter()
            .filter(|p| p.talk.talker)
            .map(|p| p.id)
            .collect()
    }

    /// No participant's media is attached (so no packet can come), nobody is sent a mix
    /// and nothing is recorded.
    fn is_idle(&self) -> bool {
        self.recording.is_none()
            && self.live.is_none()
            && self.watchers.is_empty()
            && self.participants.iter().all(|p| !p.attached)
    }

    fn find(&mut self, id: ParticipantId) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    pub fn handle(&mut self, cmd: AudioCmd) {
        if matches!(cmd, AudioCmd::Packet { .. }) {
            super::media_dequeued(&self.stats.audio_queued);
        }
        match cmd {
            AudioCmd::Join {
                id,
                codec,
                admitted,
            } => {
                let decoder = AudioDecoder::new(codec)
                    .map_err(|e| tracing::error!(%id, "{codec:?} decoder: {e}"))
                    .ok();
                self.participants.push(Participant {
                    id,
                    codec,
                    admitted,
                    prompt: None,
                    jitter: AudioJitter::default(),
                    decoder,
                    fifo: vec![0; FIFO_CAP],
                    fifo_len: 0,
                    frame: vec![0; SAMPLES_PER_TICK],
                    contrib: vec![0; SAMPLES_PER_TICK],
                    decoded: false,
                    measured: false,
                    active: false,
                    muted: false,
                    attached: false,
                    plc_run: 0,
                    concealed: 0,
                    ext_level: None,
                    talk: TalkerState::silent(),
                    gain: 0.0,
                    in_mix: false,
                    out: None,
                });
            }
            AudioCmd::Attach { id, sink, link } => {
                if let Some(p) = self.find(id) {
                    p.attached = true;
                }
                let (bitrate, complexity) = (self.bitrate, self.complexity);
                let Some(codec) = self.find(id).map(|p| p.codec) else {
                    return;
                };
                if sink.is_some() {
                    self.ensure_shared(codec);
                }
                if let (Some(p), Some(sink)) = (self.find(id), sink) {
                    match AudioEncoder::new(codec, bitrate, complexity) {
                        Ok(encoder) => {
                            p.out = Some(Output {
                                encoder,
                                limiter: Limiter::default(),
                                sink,
                                link,
                                buf: SharedBuf::default(),
                            })
                        }
                        Err(e) => tracing::error!(%id, "{codec:?} encoder: {e}"),
                    }
                }
            }
            AudioCmd::Admit { id } => {
                if let Some(p) = self.find(id) {
                    p.admitted = true;
                }
            }
            AudioCmd::Play { id: Some(id), clip } => {
                if let Some(p) = self.find(id) {
                    p.prompt = Some((clip, 0));
                }
            }
            AudioCmd::Play { id: None, clip } => {
                // Overlapping clips play together; the oldest gives way beyond a few.
                if self.announce.len() == MAX_ANNOUNCEMENTS {
                    self.announce.remove(0);
                }
                self.announce.push((clip, 0));
            }
            AudioCmd::Watch { id, sink } => {
                if let Some(sink) = sink {
                    self.ensure_shared(AudioCodec::Opus);
                    self.watchers.push((id, sink));
                }
            }
            AudioCmd::LiveStart(tx) => {
                self.live = Some((tx, Limiter::default(), SharedBuf::default()))
            }
            AudioCmd::LiveStop => self.live = None,
            AudioCmd::Leave { id } => {
                self.watchers.retain(|(w, _)| *w != id);
                self.participants.retain(|p| p.id != id);
                self.speaker.remove(id);
                if self.speaker_shared.load(Ordering::Relaxed) == id.0 {
                    self.speaker_shared.store(0, Ordering::Relaxed);
                    let _ = self.events.send(RoomEvent::ActiveSpeaker {
                        participant_id: None,
                    });
                }
            }
            AudioCmd::Mute { id, muted } => {
                if let Some(p) = self.find(id) {
                    p.muted = muted;
                }
            }
            AudioCmd::Packet {
                id,
                seq,
                payload,
                level,
            } => {
                let tick = self.tick;
                if let Some(p) = self.find(id) {
                    p.jitter.push(seq, payload);
                    if let Some(l) = level {
                        p.ext_level = Some((l, tick));
                    }
                }
            }
            AudioCmd::StartRecording { encoder, tx } => {
                self.recording = Some((encoder, Limiter::default(), tx, SharedBuf::default()))
            }
            AudioCmd::StopRecording => self.recording = None,
            AudioCmd::Stop => {}
        }
    }

    /// The shared mix of `codec`, started if there is none.
    fn ensure_shared(&mut self, codec: AudioCodec) {
        if self.shared.iter().any(|m| m.encoder.codec() == codec) {
            return;
        }
        match AudioEncoder::new(codec, self.bitrate, self.complexity) {
            Ok(encoder) => self.shared.push(SharedMix {
                encoder,
                limiter: Limiter::default(),
                packet: bytes::Bytes::new(),
                encoded_at: None,
                buf: SharedBuf::default(),
            }),
            Err(e) => tracing::error!("shared {codec:?} encoder: {e}"),
        }
    }

    /// Decodes this tick's 960 samples into `p.frame` (once per tick).
    fn decode(p: &mut Participant) {
        if p.decoded {
            return;
        }
        p.decoded = true;
        // A few packets at most (narrowband packets may be shorter than a tick).
        for _ in 0..4 {
            if p.fifo_len >= SAMPLES_PER_TICK {
                break;
            }
            let Some(dec) = p.decoder.as_mut() else { break };
            let got = dec.drain(&mut p.fifo[p.fifo_len..]).unwrap_or(0);
            if got > 0 {
                p.fifo_len += got;
                continue;
            }
            match p.jitter.pop() {
                AudioPop::Packet(pkt) => {
                    p.plc_run = 0;
                    p.fifo_len += dec.decode(&pkt, &mut p.fifo[p.fifo_len..]).unwrap_or(0);
                }
                AudioPop::Missing if p.plc_run < MAX_PLC_TICKS => {
                    p.plc_run += 1;
                    p.concealed += 1;
                    p.fifo_len += dec.conceal(&mut p.fifo[p.fifo_len..]).unwrap_or(0);
                }
                AudioPop::Missing | AudioPop::Idle => break,
            }
        }
        if p.fifo_len >= SAMPLES_PER_TICK {
            p.frame.copy_from_slice(&p.fifo[..SAMPLES_PER_TICK]);
            p.fifo.copy_within(SAMPLES_PER_TICK..p.fifo_len, 0);
            p.fifo_len -= SAMPLES_PER_TICK;
            p.active = true;
        } else {
            // Underrun: what we have, then silence; silent if nothing at all.
            p.active = p.fifo_len > 0;
            p.frame[..p.fifo_len].copy_from_slice(&p.fifo[..p.fifo_len]);
            p.frame[p.fifo_len..].fill(0);
            p.fifo_len = 0;
        }
    }

    /// A narrowband caller's level from this tick's 20 ms at its codec's rate (8 or 16
    /// kHz), buffered but not yet resampled: callers send no RFC 6464 level, and
    /// converting every caller to 48 kHz just to measure it was most of a big bridge's
    /// tick. Only the mixed ones are converted ([`Self::decode`]); the rest are dropped
    /// unconverted ([`Self::skip`]).
    fn measure_narrow(p: &mut Participant) -> f32 {
        p.measured = true;
        let Some(dec) = p.decoder.as_mut() else {
            return -127.0;
        };
        for _ in 0..4 {
            if dec.buffered_tick().is_some() {
                break;
            }
            match p.jitter.pop() {
                AudioPop::Packet(pkt) => {
                    p.plc_run = 0;
                    dec.buffer(&pkt);
                }
                AudioPop::Missing if p.plc_run < MAX_PLC_TICKS => {
                    p.plc_run += 1;
                    p.concealed += 1;
                    dec.buffer_concealment();
                }
                AudioPop::Missing | AudioPop::Idle => break,
            }
        }
        dec.buffered_tick().map_or(-127.0, mixer::level_dbfs)
    }

    /// Keeps an undecoded participant's buffer moving (one packet per tick, discarded; a
    /// measured caller's buffered 20 ms, unconverted).
    fn skip(p: &mut Participant) {
        if p.measured {
            if let Some(dec) = p.decoder.as_mut() {
                dec.discard_tick();
            }
        } else {
            let _ = p.jitter.pop();
        }
        p.fifo_len = 0;
        p.active = false;
    }

    /// Sizes each output's in-band FEC for the loss its listener reports; the shared mix's
    /// for the worst of the listeners it serves (a talker's own mix serves only itself).
    fn adapt_fec(&mut self) {
        let mut shared_loss = None::<u8>;
        for p in &mut self.participants {
            let Some(o) = p.out.as_mut() else { continue };
            let Some(loss) = o.link.as_ref().map(|l| l.loss_percent()) else {
                continue;
            };
            if let Err(e) = o.encoder.set_expected_loss(loss) {
                tracing::debug!(id = %p.id, "opus fec: {e}");
            }
            if !p.talk.talker && p.codec == AudioCodec::Opus {
                shared_loss = Some(shared_loss.map_or(loss, |s| s.max(loss)));
            }
        }
        if let (Some(loss), Some(m)) = (shared_loss, self.shared_mix(AudioCodec::Opus)) {
            let _ = m.encoder.set_expected_loss(loss);
        }
    }

    fn shared_mix(&mut self, codec: AudioCodec) -> Option<&mut SharedMix> {
        self.shared.iter_mut().find(|m| m.encoder.codec() == codec)
    }

    /// The loss the shared Opus mix's FEC is sized for (tests).
    pub fn shared_expected_loss(&self) -> Option<u8> {
        self.shared
            .iter()
            .find(|m| m.encoder.codec() == AudioCodec::Opus)
            .map(|m| m.encoder.expected_loss())
    }

    /// One 20 ms tick.
    pub fn mix_tick(&mut self) {
        if self.tick % FEC_UPDATE_TICKS == 0 {
            self.adapt_fec();
        }
        let cpu = crate::metrics::thread_cpu_ns;
        let tick_start = cpu();
        let (mut decode_ns, mut encode_ns) = (0u64, 0u64);
        let tick = self.tick;
        let mut decodes = 0;
        // 1. Levels: the sender's own value when fresh, else decode and measure.
        for p in &mut self.participants {
            p.decoded = false;
            p.measured = false;
            let ext = p
                .ext_level
                .filter(|(_, at)| tick.saturating_sub(*at) <= EXT_LEVEL_FRESH_TICKS);
            let narrow = p.decoder.as_ref().is_some_and(|d| d.is_narrowband());
            let level = match ext {
                Some((l, _)) => -(l as f32),
                None if narrow => {
                    let t = cpu();
                    let level = Self::measure_narrow(p);
                    decode_ns += cpu() - t;
                    level
                }
                None => {
                    let t = cpu();
                    Self::decode(p);
                    decode_ns += cpu() - t;
                    decodes += 1;
                    if p.active {
                        mixer::level_dbfs(&p.frame)
                    } else {
                        -127.0
                    }
                }
            };
            let level = if p.muted || !p.admitted {
                -127.0
            } else {
                level
            };
            // Fast attack, smoothed release: a new talker is admitted on its first loud
            // tick (no clipped word starts); a short pause does not drop anyone.
            let t = &mut p.talk;
            t.level = if level >= t.level {
                level
            } else {
                t.level + (level - t.level) * LEVEL_SMOOTHING
            };
            t.muted = p.muted || !p.admitted;
            self.speaker.observe(p.id, level);
        }
        if let Some(SpeakerEvent::Changed(id)) = self.speaker.tick() {
            self.speaker_shared.store(id.0, Ordering::Relaxed);
            let _ = self.events.send(RoomEvent::ActiveSpeaker {
                participant_id: Some(id),
            });
        }
        // 2. Talkers.
        self.talkers.tick(&mut self.participants);
        // 3. Decode who is (or is fading) in the mix; drain the rest.
        self.total.fill(0);
        let n = SAMPLES_PER_TICK as f32;
        for p in &mut self.participants {
            let target = if p.talk.talker { 1.0 } else { 0.0 };
            p.in_mix = !(target == 0.0 && p.gain == 0.0);
            if !p.in_mix {
                if !p.decoded {
                    Self::skip(p);
                }
                continue;
            }
            if !p.decoded {
                let t = cpu();
                Self::decode(p);
                decode_ns += cpu() - t;
                decodes += 1;
            }
            // 4. Cross-fade from last tick's gain to this tick's target.
            let g0 = p.gain;
            let audible = p.active && !p.muted && p.admitted;
            for (i, (c, s)) in p.contrib.iter_mut().zip(&p.frame).enumerate() {
                let g = g0 + (target - g0) * (i as f32 + 1.0) / n;
                *c = if audible { (*s as f32 * g) as i16 } else { 0 };
            }
            p.gain = target;
            for (t, c) in self.total.iter_mut().zip(&p.contrib) {
                *t += *c as i32;
            }
        }
        // Tones play to everyone (and the recording).
        for (clip, pos) in &mut self.announce {
            *pos = add_clip(&mut self.total, clip, *pos);
        }
        self.announce.retain(|(clip, pos)| *pos < clip.len());
        // 5. Outputs: contributors hear total minus themselves, a participant with a prompt
        //    or still waiting its own mix; everyone else the shared mix of its codec,
        //    encoded once for all of them.
        let b = &mut self.scratch;
        let mut encodes = 0;
        for p in &mut self.participants {
            let Some(o) = p.out.as_mut() else { continue };
            let ts = (tick as u32).wrapping_mul(p.codec.ts_per_tick());
            if p.in_mix || p.prompt.is_some() || !p.admitted {
                if !p.admitted {
                    b.mix.fill(0);
                } else if p.in_mix {
                    mixer::minus_own(&self.total, Some(&p.contrib), &mut b.mix);
                } else {
                    b.mix.copy_from_slice(&self.total);
                }
                if let Some((clip, pos)) = p.prompt.as_mut() {
                    *pos = add_clip(&mut b.mix, clip, *pos);
                    if *pos >= clip.len() {
                        p.prompt = None;
                    }
                }
                o.limiter.process(&b.mix, &mut b.pcm);
                encodes += 1;
                let t = cpu();
                let r = o.encoder.encode(&b.pcm, &mut b.packet);
                encode_ns += cpu() - t;
                match r {
                    Ok(len) => {
                        let pkt = o.buf.share(&b.packet[..len]);
                        o.sink.send_packet(ts, pkt)
                    }
                    Err(e) => tracing::warn!(id = %p.id, "{:?} encode: {e}", p.codec),
                }
                continue;
            }
            let Some(m) = self
                .shared
                .iter_mut()
                .find(|m| m.encoder.codec() == p.codec)
            else {
                continue;
            };
            if let Some(ns) = m.encode_once(tick, &self.total, b) {
                encodes += 1;
                encode_ns += ns;
            }
            if !m.packet.is_empty() {
                o.sink.send_packet(ts, m.packet.clone());
            }
        }
        // Watchers hear everyone: the shared Opus mix, encoded once for all of them (and
        // for the participants who hear it too).
        if !self.watchers.is_empty() {
            if let Some(m) = self
                .shared
                .iter_mut()
                .find(|m| m.encoder.codec() == AudioCodec::Opus)
            {
                if let Some(ns) = m.encode_once(tick, &self.total, b) {
                    encodes += 1;
                    encode_ns += ns;
                }
                if !m.packet.is_empty() {
                    let ts = (tick as u32).wrapping_mul(AudioCodec::Opus.ts_per_tick());
                    for (_, sink) in &mut self.watchers {
                        sink.send_packet(ts, m.packet.clone());
                    }
                }
            }
        }
        // The live output hears everyone too; it encodes on its own thread.
        if let Some((tx, lim, buf)) = self.live.as_mut() {
            lim.process(&self.total, &mut b.pcm);
            let at = (self.clock_start + AUDIO_TICK * tick as u32)
                .checked_sub(crate::recording::AUDIO_ADVANCE)
                .unwrap_or(self.clock_start);
            tx.send(crate::live::LiveMsg::Audio {
                at,
                pcm: buf.share(i16_bytes(&b.pcm)),
            });
        }
        // The recording hears everyone in the mix (no N-1).
        if let Some((enc, lim, tx, buf)) = self.recording.as_mut() {
            lim.process(&self.total, &mut b.pcm);
            let t = cpu();
            if let Ok(len) = enc.encode(&b.pcm, &mut b.packet) {
                // Audio waited in the jitter buffer longer than video waited for its tick:
                // stamp it earlier by the difference so the file is in sync.
                let at = (self.clock_start + AUDIO_TICK * tick as u32)
                    .checked_sub(crate::recording::AUDIO_ADVANCE)
                    .unwrap_or(self.clock_start);
                tx.send(crate::recording::RecMsg::Audio {
                    at,
                    data: buf.share(&b.packet[..len]),
                });
            }
            encode_ns += cpu() - t;
            encodes += 1;
        }
        self.stats.audio_encoders.store(encodes, Ordering::Relaxed);
        self.stats.audio_decoders.store(decodes, Ordering::Relaxed);
        let concealed: u64 = self
            .participants
            .iter_mut()
            .map(|p| std::mem::take(&mut p.concealed))
            .sum();
        if concealed > 0 {
            self.stats
                .audio_concealed
                .fetch_add(concealed, Ordering::Relaxed);
        }
        let c = &self.stats.cpu;
        c.decode.fetch_add(decode_ns, Ordering::Relaxed);
        c.encode.fetch_add(encode_ns, Ordering::Relaxed);
        c.mix.fetch_add(
            (cpu() - tick_start).saturating_sub(decode_ns + encode_ns),
            Ordering::Relaxed,
        );
    }
}

/// The samples' bytes (little-endian on every target Tessera builds for).
fn i16_bytes(x: &[i16]) -> &[u8] {
    // SAFETY: i16 has no padding and any byte pattern is a valid u8; the length is the
    // slice's size in bytes and the lifetime is the input's.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

/// Adds `clip[pos..]` (up to one tick) into `mix`; returns the new position.
fn add_clip(mix: &mut [i32], clip: &[i16], pos: usize) -> usize {
    let n = clip.len().saturating_sub(pos).min(mix.len());
    for (m, &c) in mix.iter_mut().zip(&clip[pos..pos + n]) {
        *m += c as i32;
    }
    pos + n
}

#[cfg(test)]
mod tests;
