//! The room's video thread. Packets are reordered and cut into frames as they arrive; at
//! every output tick (absolute deadline, `1/fps`) it
//! 1. works out every viewer's picture from the layout — everyone but the viewer, the
//!    active speaker first for focus layouts — as a *plan* (tile rectangles + who),
//! 2. decodes, in parallel, only participants that some plan shows (the others' frames
//!    are dropped; when they become visible a PLI fetches a keyframe),
//! 3. renders each distinct (participant, tile size) once into the shared tile cache,
//! 4. composes and H.264-encodes each **distinct (picture, rung)** once (in parallel):
//!    viewers with identical pictures on the same rung of the quality ladder share one
//!    encoder and one encoded frame, so the number of running encoders equals the number of
//!    distinct (picture, rung) pairs in use.
//!
//! **Rungs.** Every viewer has a [`RungPolicy`] fed with its link's bandwidth estimate
//! ([`ViewerLink`], written by its transport) and capped by the size it asked for; its
//! picture is laid out at its rung's size and encoded at its rung's bitrate and frame rate
//! (fewer frames below the lowest rung).
//!
//! **Keyframes without storms.** A viewer that needs an IDR (it moved to another picture or
//! rung, or it sent a PLI) gets one from its encoder at once if it is that encoder's only
//! viewer (at most one per [`SOLO_IDR_INTERVAL`]) or if the shared encoder's last IDR is
//! older than [`SHARED_IDR_INTERVAL`]. Otherwise the others are not made to pay: the viewer
//! gets a *private* encoder of the same (picture, rung), which starts with an IDR, and
//! rejoins the shared encoder at that encoder's next IDR (scheduled no later than
//! `SHARED_IDR_INTERVAL` after its last). A viewer's own losses are repaired by NACK
//! retransmission in its transport, not by keyframes.
//!
//! Loss or an undecodable frame makes a participant wait for a keyframe (its last good
//! picture stays on screen) and sends a rate-limited PLI upstream.
//!
//! An input over the ingest limits (picture size, bytes per frame, frame rate) is refused
//! for [`REJECT_FOR`]: its frames are dropped undecoded, the room is told once
//! (`inputRejected`), and afterwards a PLI asks for a fresh keyframe. Only that
//! participant's tile is affected.

use super::clock::TickClock;
use super::link::ViewerLink;
use super::{RoomEvent, RoomStats, RtpSink, Upstream, VideoCmd};
use crate::codec::video::{Decoded, EncoderSettings, H264Encoder, IngestLimits, VideoDecoder};
use crate::codec::{CodecError, VideoCodec};
use crate::compositor::{self, TileCache, TileJob, TileKey};
use crate::config::Config;
use crate::ids::ParticipantId;
use crate::ladder::{Decision, Ladder, PolicyConfig, RungPolicy};
use crate::layout::{LayoutSpec, Rect};
use crate::media::jitter::{VideoAssembler, VideoPop};
use crate::media::{I420Frame, VIDEO_CLOCK};
use crate::metrics::timed;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// How long an input over the ingest limits is refused before it may try again.
pub const REJECT_FOR: Duration = Duration::from_secs(5);
/// Minimum time between two PLIs to the same sender.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// A participant whose last picture is older than this shows the placeholder.
const STALE_AFTER: Duration = Duration::from_secs(3);
/// How often each viewer's estimate and rung are logged (debug level; moves at info).
const LINK_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum time between two requested IDRs of an encoder with one viewer.
pub const SOLO_IDR_INTERVAL: Duration = Duration::from_secs(1);
/// Minimum time between two requested IDRs of an encoder that several viewers share.
pub const SHARED_IDR_INTERVAL: Duration = Duration::from_secs(3);

/// What one viewer sees: tiles in drawing order.
type Plan = Vec<(Rect, TileKey)>;

struct Input {
    assembler: VideoAssembler,
    decoder: Option<VideoDecoder>,
    payload_types: HashMap<u8, VideoCodec>,
    last_pt: Option<u8>,
    need_keyframe: bool,
    last_pli: Option<Instant>,
    upstream: Option<mpsc::Sender<Upstream>>,
    frame: I420Frame,
    last_picture: Option<Instant>,
    decoded: u64,
    pli_sent: u64,
    limits: IngestLimits,
    max_fps: u32,
    /// Start of the current one-second frame-rate window and frames decoded in it.
    fps_window: (Option<Instant>, u32),
    /// Refused until then (over the limits).
    rejected_until: Option<Instant>,
    /// Why it was refused, until the room has been told.
    rejection_to_report: Option<String>,
}

struct Participant {
    id: ParticipantId,
    name: String,
    muted: bool,
    /// Bumped whenever the tile's look changes (new picture, mute, stale).
    version: u64,
    showing_video: bool,
    /// Shown in at least one picture this tick.
    visible: bool,
    input: Input,
}

struct Output {
    viewer: ParticipantId,
    sink: RtpSink,
    /// The viewer's picture, laid out at its rung's size.
    plan: Plan,
    link: Arc<ViewerLink>,
    policy: RungPolicy,
    decision: Decision,
    /// The cap last read from the link.
    cap: (u32, u32),
    /// The encoder it received from last tick.
    encoder: Option<u64>,
    /// It asked for a keyframe (PLI/FIR) since the last tick.
    wants_idr: bool,
    /// When its link was last logged.
    logged_at: Option<Instant>,
}

/// One distinct (picture, rung, frame rate) and the encoder that makes it.
struct PictureEncoder {
    id: u64,
    plan: Plan,
    rung: usize,
    fps: u32,
    /// Made for this viewer alone until the shared encoder of the same picture sends an IDR.
    private_for: Option<ParticipantId>,
    encoder: H264Encoder,
    canvas: I420Frame,
    au: Vec<u8>,
    /// Indices into `outputs` of the viewers receiving this picture this tick.
    viewers: Vec<usize>,
    /// Frame-rate accumulator: a frame is due when it reaches the tick rate.
    credit: u32,
    /// `Some(idr)` when a frame was encoded this tick.
    encoded: Option<bool>,
    last_idr: Option<Instant>,
    /// A requested IDR deferred by the interval limits.
    idr_due: Option<Instant>,
}

impl PictureEncoder {
    fn makes(&self, plan: &Plan, d: Decision) -> bool {
        self.rung == d.rung && self.fps == d.fps && self.plan == *plan
    }

    /// Makes the same (picture, rung, frame rate) as `other`.
    fn same_picture(&self, other: &PictureEncoder) -> bool {
        self.rung == other.rung && self.fps == other.fps && self.plan == other.plan
    }

    /// Asks for an IDR, no sooner than `interval` after the last one.
    fn request_idr(&mut self, now: Instant, interval: Duration) {
        match self.last_idr {
            Some(t) if now.duration_since(t) < interval => {
                let at = t + interval;
                self.idr_due = Some(self.idr_due.map_or(at, |d| d.min(at)));
            }
            _ => {
                self.encoder.request_keyframe();
                self.idr_due = None;
            }
        }
    }
}

/// The recorder's picture: everyone, in the recording layout, at the recording size.
struct RecordingPicture {
    layout: LayoutSpec,
    width: u32,
    height: u32,
    encoder: H264Encoder,
    canvas: I420Frame,
    au: Vec<u8>,
    plan: Plan,
    tx: crate::recording::RecSender,
    /// A frame was dropped: only an IDR may follow.
    awaiting_idr: bool,
    encoded: Option<bool>,
}

pub struct VideoLoop {
    participants: Vec<Participant>,
    outputs: Vec<Output>,
    encoders: Vec<PictureEncoder>,
    next_encoder_id: u64,
    ladder: Ladder,
    policy: PolicyConfig,
    layout: LayoutSpec,
    tiles: TileCache,
    speaker: Arc<AtomicU64>,
    /// Recent speakers, newest last, so a speaker sees the previous one focused.
    last_speakers: Vec<ParticipantId>,
    stats: Arc<RoomStats>,
    settings: EncoderSettings,
    /// When tick 0 was due (recording timestamps: tick k at clock_start + k/fps).
    clock_start: Instant,
    recording: Option<RecordingPicture>,
    events: broadcast::Sender<RoomEvent>,
    limits: IngestLimits,
    max_input_fps: u32,
}

impl Input {
    fn new(limits: IngestLimits, max_fps: u32) -> Self {
        Self {
            assembler: VideoAssembler::default(),
            decoder: None,
            payload_types: HashMap::new(),
            last_pt: None,
            need_keyframe: true,
            last_pli: None,
            upstream: None,
            frame: I420Frame::default(),
            last_picture: None,
            decoded: 0,
            pli_sent: 0,
            limits,
            max_fps,
            fps_window: (None, 0),
            rejected_until: None,
            rejection_to_report: None,
        }
    }

    /// Refuses this input for [`REJECT_FOR`] (frames dropped undecoded).
    fn reject(&mut self, now: Instant, reason: String) {
        self.rejected_until = Some(now + REJECT_FOR);
        self.rejection_to_report = Some(reason);
        self.need_keyframe = true;
        self.discard_pending(now);
    }

    /// Counts a decoded frame; false when the frame rate is over the limit (with 25 %
    /// tolerance for bursts).
    fn frame_rate_ok(&mut self, now: Instant) -> bool {
        let (start, n) = &mut self.fps_window;
        if start.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1)) {
            *start = Some(now);
            *n = 0;
        }
        *n += 1;
        *n <= self.max_fps + self.max_fps / 4
    }

    fn request_keyframe(&mut self, now: Instant) {
        self.need_keyframe = true;
        if self
            .last_pli
            .is_some_and(|t| now.duration_since(t) < PLI_INTERVAL)
        {
            return;
        }
        if let Some(up) = &self.upstream {
            if up.try_send(Upstream::KeyframeRequest).is_ok() {
                self.last_pli = Some(now);
                self.pli_sent += 1;
            }
        }
    }

    /// Drops complete frames of a participant nobody sees; it will need a keyframe.
    fn discard_pending(&mut self, now: Instant) {
        while self.assembler.pop(now).is_some() {
            self.need_keyframe = true;
        }
    }

    /// Decodes every complete frame; returns whether a new picture arrived.
    fn decode_pending(&mut self, now: Instant) -> bool {
        if let Some(until) = self.rejected_until {
            if now < until {
                self.discard_pending(now);
                return false;
            }
            self.rejected_until = None;
        }
        let mut got = false;
        while let Some(pop) = self.assembler.pop(now) {
            match pop {
                VideoPop::Lost => self.request_keyframe(now),
                VideoPop::Frame { payloads, .. } => {
                    let Some(codec) = self
                        .last_pt
                        .and_then(|pt| self.payload_types.get(&pt).copied())
                    else {
                        continue;
                    };
                    if self.decoder.as_ref().is_none_or(|d| d.codec() != codec) {
                        match VideoDecoder::with_limits(codec, self.limits) {
                            Ok(d) => self.decoder = Some(d),
                            Err(e) => {
                                tracing::warn!("video decoder: {e}");
                                continue;
                            }
                        }
                        self.need_keyframe = true;
                    }
                    let dec = self.decoder.as_mut().expect("created above");
                    match dec.decode(&payloads, self.need_keyframe, &mut self.frame) {
                        Ok(Decoded::Picture { .. }) if !self.frame_rate_ok(now) => {
                            let max = self.max_fps;
                            self.reject(now, format!("frame rate above {max} fps"));
                            return got;
                        }
                        Ok(Decoded::Picture { .. }) => {
                            self.need_keyframe = false;
                            self.last_picture = Some(now);
                            self.decoded += 1;
                            got = true;
                        }
                        Ok(Decoded::Nothing) => {
                            if self.need_keyframe {
                                self.request_keyframe(now);
                            }
                        }
                        Err(CodecError::OverLimits(reason)) => {
                            self.reject(now, reason);
                            return got;
                        }
                        Err(e) => {
                            tracing::debug!("video decode: {e}");
                            self.request_keyframe(now);
                        }
                    }
                }
            }
        }
        // Still waiting for a keyframe: keep asking (rate-limited).
        if self.need_keyframe && self.last_pt.is_some() {
            self.request_keyframe(now);
        }
        got
    }
}

impl VideoLoop {
    pub fn new(
        config: &Config,
        layout: LayoutSpec,
        events: broadcast::Sender<RoomEvent>,
        speaker: Arc<AtomicU64>,
        stats: Arc<RoomStats>,
    ) -> Self {
        let v = &config.video;
        Self {
            participants: Vec::new(),
            outputs: Vec::new(),
            encoders: Vec::new(),
            next_encoder_id: 0,
            ladder: v.ladder().expect("ladder validated at start-up"),
            policy: PolicyConfig::default(),
            layout,
            tiles: TileCache::default(),
            speaker,
            last_speakers: Vec::new(),
            stats,
            settings: EncoderSettings {
                width: v.width,
                height: v.height,
                fps: v.fps,
                bitrate_bps: v.bitrate_kbps * 1000,
                idr_interval_frames: v.fps * v.idr_interval_s,
                complexity: v.complexity,
            },
            clock_start: Instant::now(),
            recording: None,
            events,
            limits: config.ingest.limits(),
            max_input_fps: config.ingest.max_fps,
        }
    }

    pub fn period(&self) -> Duration {
        Duration::from_secs(1) / self.settings.fps
    }

    pub fn run(mut self, rx: Receiver<VideoCmd>) {
        self.clock_start = Instant::now();
        let mut clock = TickClock::new(self.clock_start, self.period());
        loop {
            // Everything queued first (at most a queue's worth, so a flood cannot keep the
            // loop here): commands are handled within a tick even when ticks are overdue.
            for _ in 0..super::VIDEO_QUEUE {
                match rx.try_recv() {
                    Ok(VideoCmd::Stop) | Err(TryRecvError::Disconnected) => return,
                    Ok(cmd) => self.handle(cmd),
                    Err(TryRecvError::Empty) => break,
                }
            }
            if self.is_idle() {
                // Nothing attached and nothing recorded: nothing to produce. Sleep until
                // a command comes instead of ticking (an idle room costs no CPU).
                match rx.recv() {
                    Ok(VideoCmd::Stop) | Err(_) => return,
                    Ok(cmd) => self.handle(cmd),
                }
                clock.resume_at(Instant::now());
                continue;
            }
            let now = Instant::now();
            if let Some(k) = clock.take_due(now) {
                self.stats
                    .video_lateness
                    .record(now.saturating_duration_since(clock.deadline() - clock.period()));
                self.tick(now, k);
                self.stats.video_tick_duration.record(now.elapsed());
                self.stats
                    .video_ticks_skipped
                    .store(clock.skipped, Ordering::Relaxed);
                self.stats.video_ticks.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match rx.recv_timeout(clock.deadline().saturating_duration_since(now)) {
                Ok(VideoCmd::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// No participant's media is attached (so no packet can come), nobody is sent a
    /// picture and nothing is recorded.
    fn is_idle(&self) -> bool {
        self.outputs.is_empty()
            && self.recording.is_none()
            && self.participants.iter().all(|p| p.input.upstream.is_none())
    }

    fn find(&mut self, id: ParticipantId) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    /// Video encoders running (one per distinct picture and rung, plus private ones).
    pub fn encoder_count(&self) -> usize {
        self.encoders.len()
    }

    /// Encoders running per rung of the ladder.
    pub fn encoders_per_rung(&self) -> Vec<usize> {
        let mut n = vec![0; self.ladder.rungs().len()];
        for e in &self.encoders {
            n[e.rung] += 1;
        }
        n
    }

    /// The policy timing (tests shorten it).
    pub fn set_policy(&mut self, policy: PolicyConfig) {
        self.policy = policy;
    }

    pub fn handle(&mut self, cmd: VideoCmd) {
        if matches!(
            cmd,
            VideoCmd::Packet { .. } | VideoCmd::KeyframeRequest { .. }
        ) {
            super::media_dequeued(&self.stats.video_queued);
        }
        match cmd {
            VideoCmd::Join { id, name } => self.participants.push(Participant {
                id,
                name,
                muted: false,
                version: 0,
                showing_video: false,
                visible: false,
                input: Input::new(self.limits, self.max_input_fps),
            }),
            VideoCmd::Attach {
                id,
                payload_types,
                sink,
                upstream,
                link,
            } => {
                if let Some(p) = self.find(id) {
                    p.input.payload_types = payload_types;
                    p.input.upstream = Some(upstream);
                }
                if let Some(sink) = sink {
                    // Start on the best rung the viewer accepts; the estimate moves it down.
                    let (w, h) = link.cap();
                    let cap = self.ladder.best_within(w, h);
                    let mut policy = RungPolicy::new(self.policy, cap);
                    policy.set_cap(cap);
                    let decision = policy.current(&self.ladder);
                    link.set_rung(decision.rung, decision.fps);
                    self.outputs.push(Output {
                        viewer: id,
                        sink,
                        plan: Vec::new(),
                        link,
                        policy,
                        decision,
                        cap: (w, h),
                        encoder: None,
                        wants_idr: false,
                        logged_at: None,
                    });
                }
            }
            VideoCmd::Leave { id } => {
                self.participants.retain(|p| p.id != id);
                self.outputs.retain(|o| o.viewer != id);
                self.last_speakers.retain(|p| *p != id);
            }
            VideoCmd::Mute { id, muted } => {
                if let Some(p) = self.find(id) {
                    p.muted = muted;
                    p.version += 1;
                }
            }
            VideoCmd::Layout(spec) => self.layout = spec,
            VideoCmd::Packet {
                id,
                arrival,
                pt,
                seq,
                ts,
                marker,
                payload,
            } => {
                if let Some(p) = self.find(id) {
                    p.input.last_pt = Some(pt);
                    p.input.assembler.push(arrival, seq, ts, marker, payload);
                }
            }
            VideoCmd::KeyframeRequest { id } => {
                if let Some(o) = self.outputs.iter_mut().find(|o| o.viewer == id) {
                    o.wants_idr = true;
                }
            }
            VideoCmd::StartRecording {
                layout,
                width,
                height,
                bitrate_bps,
                tx,
            } => {
                // An IDR every second lets the recorder cut fragments of about a second.
                let settings = EncoderSettings {
                    width,
                    height,
                    bitrate_bps,
                    idr_interval_frames: self.settings.fps,
                    ..self.settings
                };
                match H264Encoder::new(settings) {
                    Ok(encoder) => {
                        self.recording = Some(RecordingPicture {
                            layout,
                            width,
                            height,
                            encoder,
                            canvas: I420Frame::new(width as usize, height as usize),
                            au: Vec::with_capacity(512 * 1024),
                            plan: Vec::new(),
                            tx,
                            awaiting_idr: false,
                            encoded: None,
                        })
                    }
                    Err(e) => tracing::error!("recording encoder: {e}"),
                }
            }
            VideoCmd::StopRecording => self.recording = None,
            VideoCmd::Stop => {}
        }
    }

    /// The participants `viewer` sees, in tile order.
    fn visible_for(&self, viewer: ParticipantId, speaker: Option<ParticipantId>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.participants.len())
            .filter(|&i| self.participants[i].id != viewer)
            .collect();
        if self.layout.speaker_first() {
            // The focus is the active speaker, or for the speaker themself the one before.
            let focus = match speaker {
                Some(s) if s != viewer => Some(s),
                _ => self
                    .last_speakers
                    .iter()
                    .rev()
                    .copied()
                    .find(|&p| p != viewer),
            };
            if let Some(pos) =
                focus.and_then(|f| order.iter().position(|&i| self.participants[i].id == f))
            {
                let i = order.remove(pos);
                order.insert(0, i);
            }
        }
        order
    }

    /// Step 1: every viewer's plan; marks who is visible.
    fn plan(&mut self) {
        let speaker = match self.speaker.load(Ordering::Relaxed) {
            0 => None,
            n => Some(ParticipantId(n)),
        };
        if let Some(s) = speaker {
            if self.last_speakers.last() != Some(&s) {
                self.last_speakers.retain(|p| *p != s);
                self.last_speakers.push(s);
            }
        }
        for p in &mut self.participants {
            p.visible = false;
        }
        for o in 0..self.outputs.len() {
            let rung = self.ladder.get(self.outputs[o].decision.rung);
            let visible = self.visible_for(self.outputs[o].viewer, speaker);
            let rects = self.layout.place(visible.len(), rung.width, rung.height);
            let mut plan = std::mem::take(&mut self.outputs[o].plan);
            plan.clear();
            for (r, &i) in rects.iter().zip(&visible) {
                let p = &mut self.participants[i];
                p.visible = true;
                plan.push((
                    *r,
                    TileKey {
                        participant: p.id,
                        w: r.w,
                        h: r.h,
                    },
                ));
            }
            self.outputs[o].plan = plan;
        }
        if let Some(mut rec) = self.recording.take() {
            // Everyone, join order (speaker first for focus layouts).
            let mut order: Vec<usize> = (0..self.participants.len()).collect();
            if rec.layout.speaker_first() {
                if let Some(pos) =
                    speaker.and_then(|s| order.iter().position(|&i| self.participants[i].id == s))
                {
                    let i = order.remove(pos);
                    order.insert(0, i);
                }
            }
            let rects = rec.layout.place(order.len(), rec.width, rec.height);
            rec.plan.clear();
            for (r, &i) in rects.iter().zip(&order) {
                let p = &mut self.participants[i];
                p.visible = true;
                rec.plan.push((
                    *r,
                    TileKey {
                        participant: p.id,
                        w: r.w,
                        h: r.h,
                    },
                ));
            }
            self.recording = Some(rec);
        }
    }

    /// Step 0: every viewer's rung from its link's estimate and cap.
    fn choose_rungs(&mut self, now: Instant) {
        for out in &mut self.outputs {
            let cap = out.link.cap();
            if cap != out.cap {
                out.cap = cap;
                out.policy.set_cap(self.ladder.best_within(cap.0, cap.1));
            }
            // No estimate (a viewer without congestion feedback): only the cap applies.
            let estimate = out.link.estimate_kbps().unwrap_or(u32::MAX);
            let d = out.policy.update(&self.ladder, estimate, now);
            if d.moved {
                let r = self.ladder.get(d.rung);
                tracing::info!(
                    viewer = %out.viewer,
                    estimate_kbps = estimate,
                    "rung {} -> {}: {}x{} at {} fps",
                    out.decision.rung, d.rung, r.width, r.height, d.fps
                );
                out.link.set_rung(d.rung, d.fps);
            }
            if out
                .logged_at
                .is_none_or(|t| now.duration_since(t) >= LINK_LOG_INTERVAL)
            {
                out.logged_at = Some(now);
                tracing::debug!(
                    viewer = %out.viewer,
                    estimate_kbps = ?out.link.estimate_kbps(),
                    rung = d.rung,
                    fps = d.fps,
                    "link"
                );
            }
            out.decision = d;
        }
    }

    /// A new encoder for (plan, rung, fps); its first frame is an IDR.
    fn new_encoder(
        &mut self,
        plan: &Plan,
        d: Decision,
        private_for: Option<ParticipantId>,
        now: Instant,
    ) -> Option<usize> {
        let r = self.ladder.get(d.rung);
        let settings = EncoderSettings {
            width: r.width,
            height: r.height,
            fps: d.fps,
            // Fewer frames below the lowest rung: the same bits per frame.
            bitrate_bps: r.bitrate_kbps * 1000 / r.fps * d.fps,
            idr_interval_frames: d.fps * self.settings.idr_interval_frames / self.settings.fps,
            complexity: self.settings.complexity,
        };
        match H264Encoder::new(settings) {
            Ok(encoder) => {
                self.next_encoder_id += 1;
                self.encoders.push(PictureEncoder {
                    id: self.next_encoder_id,
                    plan: plan.clone(),
                    rung: d.rung,
                    fps: d.fps,
                    private_for,
                    encoder,
                    canvas: I420Frame::new(r.width as usize, r.height as usize),
                    au: Vec::with_capacity(256 * 1024),
                    viewers: Vec::new(),
                    credit: self.settings.fps,
                    encoded: None,
                    last_idr: Some(now),
                    idr_due: None,
                });
                Some(self.encoders.len() - 1)
            }
            Err(e) => {
                tracing::error!("h264 encoder: {e}");
                None
            }
        }
    }

    /// Step 4's bookkeeping: one encoder per distinct (plan, rung, fps); viewers that moved
    /// or asked for a keyframe get an IDR without making everyone else's stream a keyframe
    /// stream (see the module doc).
    fn assign_encoders(&mut self, now: Instant) {
        for e in &mut self.encoders {
            e.viewers.clear();
        }
        // Viewers (index) that need an IDR from the encoder they are put on.
        let mut need_idr: Vec<(usize, usize)> = Vec::new();
        let mut created: Vec<u64> = Vec::new();
        for o in 0..self.outputs.len() {
            let (plan, d) = (&self.outputs[o].plan, self.outputs[o].decision);
            let current = self.outputs[o]
                .encoder
                .and_then(|id| self.encoders.iter().position(|e| e.id == id))
                .filter(|&i| self.encoders[i].makes(plan, d));
            let (idx, moved) = match current {
                Some(i) => (i, false),
                None => match self
                    .encoders
                    .iter()
                    .position(|e| e.private_for.is_none() && e.makes(plan, d))
                {
                    Some(i) => (i, true),
                    None => {
                        let plan = plan.clone();
                        let Some(i) = self.new_encoder(&plan, d, None, now) else {
                            continue;
                        };
                        created.push(self.encoders[i].id);
                        (i, false)
                    }
                },
            };
            self.encoders[idx].viewers.push(o);
            if moved || std::mem::take(&mut self.outputs[o].wants_idr) {
                need_idr.push((o, idx));
            }
        }
        let mut requested: Vec<u64> = Vec::new();
        for (o, idx) in need_idr {
            let e = &mut self.encoders[idx];
            if created.contains(&e.id) || requested.contains(&e.id) {
                continue; // its next frame is an IDR anyway
            }
            let shared_fresh = e
                .last_idr
                .is_none_or(|t| now.duration_since(t) >= SHARED_IDR_INTERVAL);
            if e.viewers.len() == 1 {
                e.request_idr(now, SOLO_IDR_INTERVAL);
                requested.push(e.id);
            } else if shared_fresh {
                e.request_idr(now, SHARED_IDR_INTERVAL);
                requested.push(e.id);
            } else {
                // Not everyone's stream for one viewer: a private encoder (IDR first) until
                // the shared one's next IDR, which is scheduled.
                if let Some(t) = e.last_idr {
                    let at = t + SHARED_IDR_INTERVAL;
                    e.idr_due = Some(e.idr_due.map_or(at, |d| d.min(at)));
                }
                e.viewers.retain(|&v| v != o);
                let (plan, d, viewer) = (
                    self.outputs[o].plan.clone(),
                    self.outputs[o].decision,
                    self.outputs[o].viewer,
                );
                match self.new_encoder(&plan, d, Some(viewer), now) {
                    Some(p) => {
                        self.encoders[p].viewers.push(o);
                        created.push(self.encoders[p].id);
                    }
                    None => self.encoders[idx].viewers.push(o),
                }
            }
        }
        self.encoders.retain(|e| !e.viewers.is_empty());
        // A private encoder whose shared counterpart is gone becomes the shared one.
        for i in 0..self.encoders.len() {
            if self.encoders[i].private_for.is_some()
                && !self
                    .encoders
                    .iter()
                    .any(|s| s.private_for.is_none() && s.same_picture(&self.encoders[i]))
            {
                self.encoders[i].private_for = None;
            }
        }
        for e in &mut self.encoders {
            for &o in &e.viewers {
                self.outputs[o].encoder = Some(e.id);
            }
            if e.idr_due.is_some_and(|t| now >= t) {
                e.encoder.request_keyframe();
                e.idr_due = None;
            }
        }
        self.stats
            .encoders
            .store(self.encoders.len() as u64, Ordering::Relaxed);
    }

    pub fn tick(&mut self, now: Instant, k: u64) {
        self.choose_rungs(now);
        self.plan();

        // 2. Decode what is shown (participants in parallel).
        let stats = self.stats.clone();
        let stats = &stats;
        let decoded: u64 = self
            .participants
            .par_iter_mut()
            .map(|p| {
                timed(&stats.cpu.decode, || {
                    let got = if p.visible {
                        p.input.decode_pending(now)
                    } else {
                        p.input.discard_pending(now);
                        false
                    };
                    let showing = !p.muted
                        && p.input
                            .last_picture
                            .is_some_and(|t| now.duration_since(t) < STALE_AFTER);
                    if got || showing != p.showing_video {
                        p.version += 1;
                    }
                    p.showing_video = showing;
                    got as u64
                })
            })
            .sum();
        stats
            .video_frames_decoded
            .fetch_add(decoded, Ordering::Relaxed);
        stats.keyframe_requests_sent.store(
            self.participants.iter().map(|p| p.input.pli_sent).sum(),
            Ordering::Relaxed,
        );
        for p in &mut self.participants {
            if let Some(reason) = p.input.rejection_to_report.take() {
                stats.video_inputs_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(participant = %p.id, "video input refused for {}s: {reason}", REJECT_FOR.as_secs());
                let _ = self.events.send(RoomEvent::InputRejected {
                    participant_id: p.id,
                    reason,
                });
            }
        }

        // 3. Render each distinct tile once.
        let mut jobs: Vec<TileJob<'_>> = Vec::new();
        let rec_plan = self.recording.as_ref().map(|r| &r.plan);
        for plan in self.outputs.iter().map(|o| &o.plan).chain(rec_plan) {
            for (_, key) in plan {
                if jobs.iter().any(|j| j.key == *key) {
                    continue;
                }
                if let Some(p) = self.participants.iter().find(|p| p.id == key.participant) {
                    jobs.push(TileJob {
                        key: *key,
                        version: p.version,
                        source: p.showing_video.then_some(&p.input.frame),
                        name: &p.name,
                    });
                }
            }
        }
        self.tiles.prepare_timed(&jobs, &stats.cpu.composite);
        drop(jobs);

        // 4. One encoder per distinct (picture, rung); IDRs for viewers that need them.
        self.assign_encoders(now);
        let tick_fps = self.settings.fps;
        for e in &mut self.encoders {
            e.credit += e.fps;
            e.encoded = None;
        }
        let tiles = &self.tiles;
        let recording = &mut self.recording;
        let record = move || {
            if let Some(rec) = recording.as_mut() {
                rec.encoded = render_picture(
                    &rec.plan,
                    tiles,
                    &mut rec.canvas,
                    &mut rec.encoder,
                    &mut rec.au,
                    stats,
                );
            }
        };
        let encoders = &mut self.encoders;
        let pictures = move || {
            encoders.par_iter_mut().for_each(|e| {
                if e.credit < tick_fps {
                    return; // a lower frame rate than the tick's: not due this tick
                }
                e.credit -= tick_fps;
                e.encoded = render_picture(
                    &e.plan,
                    tiles,
                    &mut e.canvas,
                    &mut e.encoder,
                    &mut e.au,
                    stats,
                );
            })
        };
        rayon::join(pictures, record);
        let at = self.clock_start + self.period() * k as u32;
        if let Some(rec) = self.recording.as_mut() {
            if let Some(idr) = rec.encoded.take() {
                // After a frame was lost to a full queue, only an IDR may follow.
                if !rec.awaiting_idr || idr {
                    rec.awaiting_idr = !rec.tx.send(crate::recording::RecMsg::Video {
                        at,
                        data: rec.au.clone(),
                    });
                    if rec.awaiting_idr {
                        rec.encoder.request_keyframe();
                    }
                }
            }
        }
        let ts = ((k as u128 * VIDEO_CLOCK as u128) / self.settings.fps as u128) as u32;
        let (mut encoded, mut idrs) = (0, 0);
        for e in &mut self.encoders {
            if let Some(idr) = e.encoded {
                encoded += 1;
                if idr {
                    idrs += 1;
                    e.last_idr = Some(now);
                }
            }
        }
        // A private viewer rejoins its shared encoder when that one sends an IDR.
        for i in 0..self.encoders.len() {
            let Some(viewer) = self.encoders[i].private_for else {
                continue;
            };
            let shared = self.encoders.iter().position(|s| {
                s.private_for.is_none()
                    && s.encoded == Some(true)
                    && s.same_picture(&self.encoders[i])
            });
            if let Some(s) = shared {
                if let Some(o) = self.outputs.iter().position(|o| o.viewer == viewer) {
                    self.encoders[i].viewers.retain(|&v| v != o);
                    self.encoders[s].viewers.push(o);
                    self.outputs[o].encoder = Some(self.encoders[s].id);
                }
            }
        }
        for e in &self.encoders {
            if let Some(idr) = e.encoded {
                for &o in &e.viewers {
                    let out = &mut self.outputs[o];
                    out.sink.send_frame(ts, &e.au);
                    if idr {
                        out.link.idrs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        stats
            .video_frames_encoded
            .fetch_add(encoded, Ordering::Relaxed);
        stats.video_idrs.fetch_add(idrs, Ordering::Relaxed);
    }
}

/// Composes `plan` from the shared tiles into `canvas` and encodes it into `au`.
/// Returns whether the frame is an IDR, or `None` when nothing was produced.
fn render_picture(
    plan: &Plan,
    tiles: &TileCache,
    canvas: &mut I420Frame,
    encoder: &mut H264Encoder,
    au: &mut Vec<u8>,
    stats: &RoomStats,
) -> Option<bool> {
    timed(&stats.cpu.composite, || {
        let pairs: Vec<(Rect, &I420Frame)> = plan
            .iter()
            .filter_map(|(r, key)| tiles.get(key).map(|t| (*r, t)))
            .collect();
        compositor::compose(canvas, &pairs);
    });
    match timed(&stats.cpu.encode, || encoder.encode(canvas, au)) {
        Ok(idr) if !au.is_empty() => Some(idr),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("h264 encode: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests;
