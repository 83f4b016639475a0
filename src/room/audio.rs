//! The room's audio thread: every 20 ms (absolute deadline) it pulls one frame per
//! participant from its jitter buffer (decode, Opus PLC for a missing packet, silence when
//! nothing is buffered), sums all contributions in i32, and for each listener subtracts its
//! own contribution, limits, Opus-encodes and hands the packet to the listener's sink with
//! an RTP timestamp from the mixer clock. It also runs active-speaker detection.

use super::clock::TickClock;
use super::{AudioCmd, RoomEvent, RoomStats, RtpSink};
use crate::codec::audio::{OpusDecoder, OpusEncoder};
use crate::config::Config;
use crate::ids::ParticipantId;
use crate::media::jitter::{AudioJitter, AudioPop};
use crate::media::{AUDIO_TICK, SAMPLES_PER_TICK};
use crate::mixer::{self, Limiter, SpeakerDetector, SpeakerEvent};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// Consecutive missing packets concealed with PLC before the participant counts as silent.
const MAX_PLC_TICKS: u32 = 5;
/// Decoded-sample FIFO capacity: one 120 ms Opus packet plus a tick.
const FIFO_CAP: usize = 5_760 + SAMPLES_PER_TICK;

struct Participant {
    id: ParticipantId,
    jitter: AudioJitter,
    decoder: Option<OpusDecoder>,
    fifo: Vec<i16>,
    fifo_len: usize,
    frame: Vec<i16>,
    /// Whether `frame` holds sound this tick (false = silent, skipped in the sum).
    active: bool,
    muted: bool,
    plc_run: u32,
    /// Last RFC 6464 level (0..=127 -dBov) and the tick it came in.
    ext_level: Option<(u8, u64)>,
    out: Option<Output>,
}

struct Output {
    encoder: OpusEncoder,
    limiter: Limiter,
    mix: Vec<i32>,
    pcm: Vec<i16>,
    packet: Vec<u8>,
    sink: RtpSink,
}

pub struct AudioLoop {
    participants: Vec<Participant>,
    total: Vec<i32>,
    speaker: SpeakerDetector,
    speaker_shared: Arc<AtomicU64>,
    events: broadcast::Sender<RoomEvent>,
    stats: Arc<RoomStats>,
    bitrate: i32,
    complexity: i32,
    tick: u64,
}

impl AudioLoop {
    pub fn new(
        config: &Config,
        events: broadcast::Sender<RoomEvent>,
        speaker_shared: Arc<AtomicU64>,
        stats: Arc<RoomStats>,
    ) -> Self {
        Self {
            participants: Vec::new(),
            total: vec![0; SAMPLES_PER_TICK],
            speaker: SpeakerDetector::default(),
            speaker_shared,
            events,
            stats,
            bitrate: config.audio.bitrate_kbps as i32 * 1000,
            complexity: config.audio.complexity as i32,
            tick: 0,
        }
    }

    pub fn run(mut self, rx: Receiver<AudioCmd>) {
        let mut clock = TickClock::new(Instant::now(), AUDIO_TICK);
        loop {
            let now = Instant::now();
            if let Some(k) = clock.take_due(now) {
                self.tick = k;
                self.mix_tick();
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

    fn find(&mut self, id: ParticipantId) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    pub fn handle(&mut self, cmd: AudioCmd) {
        match cmd {
            AudioCmd::Join { id } => {
                let decoder = match OpusDecoder::new() {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::error!(%id, "opus decoder: {e}");
                        None
                    }
                };
                self.participants.push(Participant {
                    id,
                    jitter: AudioJitter::default(),
                    decoder,
                    fifo: vec![0; FIFO_CAP],
                    fifo_len: 0,
                    frame: vec![0; SAMPLES_PER_TICK],
                    active: false,
                    muted: false,
                    plc_run: 0,
                    ext_level: None,
                    out: None,
                });
            }
            AudioCmd::Attach { id, sink } => {
                let (bitrate, complexity) = (self.bitrate, self.complexity);
                if let (Some(p), Some(sink)) = (self.find(id), sink) {
                    match OpusEncoder::new(bitrate, complexity) {
                        Ok(encoder) => {
                            p.out = Some(Output {
                                encoder,
                                limiter: Limiter::default(),
                                mix: vec![0; SAMPLES_PER_TICK],
                                pcm: vec![0; SAMPLES_PER_TICK],
                                packet: vec![0; 1500],
                                sink,
                            })
                        }
                        Err(e) => tracing::error!(%id, "opus encoder: {e}"),
                    }
                }
            }
            AudioCmd::Leave { id } => {
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
            AudioCmd::Stop => {}
        }
    }

    /// Fills `p.frame` with this tick's 960 samples.
    fn pull_frame(p: &mut Participant) {
        while p.fifo_len < SAMPLES_PER_TICK {
            let Some(dec) = p.decoder.as_mut() else { break };
            let got = match p.jitter.pop() {
                AudioPop::Packet(pkt) => {
                    p.plc_run = 0;
                    dec.decode(&pkt, &mut p.fifo[p.fifo_len..]).unwrap_or(0)
                }
                AudioPop::Missing if p.plc_run < MAX_PLC_TICKS => {
                    p.plc_run += 1;
                    dec.conceal(&mut p.fifo[p.fifo_len..]).unwrap_or(0)
                }
                AudioPop::Missing | AudioPop::Idle => 0,
            };
            if got == 0 {
                break;
            }
            p.fifo_len += got;
        }
        if p.fifo_len >= SAMPLES_PER_TICK {
            p.frame.copy_from_slice(&p.fifo[..SAMPLES_PER_TICK]);
            p.fifo.copy_within(SAMPLES_PER_TICK..p.fifo_len, 0);
            p.fifo_len -= SAMPLES_PER_TICK;
            p.active = true;
        } else {
            // Underrun: what we have, then silence; counts as silent if nothing at all.
            p.active = p.fifo_len > 0;
            p.frame[..p.fifo_len].copy_from_slice(&p.fifo[..p.fifo_len]);
            p.frame[p.fifo_len..].fill(0);
            p.fifo_len = 0;
        }
    }

    /// One 20 ms tick.
    pub fn mix_tick(&mut self) {
        let tick = self.tick;
        for p in &mut self.participants {
            Self::pull_frame(p);
            // Level for speaker detection: the sender's own RFC 6464 value if fresh.
            let level = match p.ext_level {
                Some((l, at)) if tick.saturating_sub(at) <= 5 => -(l as f32),
                _ if p.active => mixer::level_dbfs(&p.frame),
                _ => -127.0,
            };
            self.speaker
                .observe(p.id, if p.muted { -127.0 } else { level });
        }
        if let Some(SpeakerEvent::Changed(id)) = self.speaker.tick() {
            self.speaker_shared.store(id.0, Ordering::Relaxed);
            let _ = self.events.send(RoomEvent::ActiveSpeaker {
                participant_id: Some(id),
            });
        }
        // Sum everyone audible.
        self.total.fill(0);
        for p in &self.participants {
            if p.active && !p.muted {
                for (t, s) in self.total.iter_mut().zip(&p.frame) {
                    *t += *s as i32;
                }
            }
        }
        let ts = (tick as u32).wrapping_mul(SAMPLES_PER_TICK as u32);
        for p in &mut self.participants {
            let own = (p.active && !p.muted).then_some(p.frame.as_slice());
            let Some(o) = p.out.as_mut() else { continue };
            mixer::minus_own(&self.total, own, &mut o.mix);
            o.limiter.process(&o.mix, &mut o.pcm);
            match o.encoder.encode(&o.pcm, &mut o.packet) {
                Ok(n) => o.sink.send_frame(ts, &o.packet[..n]),
                Err(e) => tracing::warn!(id = %p.id, "opus encode: {e}"),
            }
        }
    }
}
