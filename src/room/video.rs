//! The room's video thread. Packets are reordered and cut into frames as they arrive
//! (per participant, [`ingest`]); at every output tick (absolute deadline, `1/fps`) it
//! 1. works out every viewer's picture from the layout — everyone but the viewer, the
//!    active speaker first for focus layouts — as a *plan* (tile rectangles + who),
//! 2. decodes, in parallel, only participants that some plan shows (the others' frames
//!    are dropped; when they become visible a PLI fetches a keyframe),
//! 3. renders each distinct (participant, tile size) once into the shared tile cache,
//! 4. composes and encodes each **distinct (picture, rung, codec)** once (in parallel):
//!    viewers with identical pictures on the same rung of the quality ladder in the same
//!    codec (H.264, or VP8 for viewers whose offer has no H.264) share one encoder and one
//!    encoded frame, so the number of running encoders equals the number of distinct
//!    (picture, rung, codec) in use. Which encoder each viewer receives from, which are
//!    kept, started or retired and who needs a keyframe is decided by a pure function,
//!    [`sharing`]; this module applies it.
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
//! retransmission in its transport, not by keyframes. VP8 viewers' PictureIDs run on per
//! viewer across these moves (their sinks write the payload descriptors).
//!
//! **Nothing in the tick that can be done before it.** Encoders come ready from a pool
//! (built and initialised on another thread, [`pool`]); a viewer whose picture changes
//! keeps its encoder, which simply encodes the new picture (no IDR: its decoder's state
//! stays valid), and only a viewer that moves to *another* encoder's stream needs an IDR.
//! Each encoded frame is packetised once per encoder and sent to its viewers as shared
//! payloads with per-viewer headers ([`RtpSink::send_packetized`]). Plans, tile lists and
//! groupings live in buffers reused from tick to tick: a steady room allocates nothing per
//! tick (`tests/allocations.rs`).
//!
//! **Overload.** The run loop measures every tick; when ticks run late it lowers the
//! output frame rate of every picture in steps ([`FrameRateGovernor`]: 30 → 20 → 15) and
//! raises it again when the load falls, instead of skipping random ticks.
//!
//! **Presentations.** A source is a participant's camera or, while it presents, its
//! content (a shared screen, with the `[presentation]` ingest limits): the content is
//! tile 0 of every picture, fitted and letterboxed (`compositor::Look::Content`). A picture
//! holding content runs at `[presentation] output_fps` on its rung's whole bitrate.
//! Identical content pictures are detected by hashing (a screen capturer sends the same
//! picture again and again).
//!
//! **Unchanged pictures are not encoded again.** A picture none of whose tiles changed
//! since its last frame (name tiles of audio-only callers, paused senders, a still slide)
//! is neither composed nor encoded; one refresh a second keeps receivers' statistics live,
//! keyframe requests are still answered, and the next frame carries its own tick's RTP
//! timestamp (the frame rate steps down, the timing stays honest).
//!
//! **Watchers and the live output.** A watcher (WHEP) is an output like a viewer's, but
//! its picture is the room's *audience view* (`[live] layout`, a shared canvas of
//! everyone; the presentation layout while the room shows one): watchers on one rung
//! share one encoder, and so does the live output ([`LIVE_VIEWER`]), whose frames go to
//! the live thread (HLS, RTMP) instead of RTP and whose encoder sends an IDR every
//! segment.
//!
//! Loss or an undecodable frame makes a participant wait for a keyframe (its last good
//! picture stays on screen) and sends a rate-limited PLI upstream.
//!
//! An input over the ingest limits (picture size, bytes per frame, frame rate) is refused
//! for [`REJECT_FOR`]: its frames are dropped undecoded, the room is told once
//! (`inputRejected`), and afterwards a PLI asks for a fresh keyframe. Only that
//! participant's tile is affected.

pub mod demand;
mod ingest;
mod pool;
pub mod sharing;

pub use demand::SendLimit;
use ingest::Input;
pub use ingest::REJECT_FOR;

use pool::{EncoderPool, Shape, Spare};
pub use sharing::{SHARED_IDR_INTERVAL, SOLO_IDR_INTERVAL};

use super::clock::TickClock;
use super::link::ViewerLink;
use super::overload::FrameRateGovernor;
use super::{RoomEvent, RoomStats, RtpSink, Upstream, VideoCmd};
use crate::codec::video::{EncoderSettings, IngestLimits, VideoEncoder};
use crate::codec::OutputCodec;
use crate::compositor::{self, Look, TileCache, TileKey, TileNeed};
use crate::config::Config;
use crate::ids::ParticipantId;
use crate::ladder::{Decision, Ladder, PolicyConfig, RungPolicy};
use crate::layout::{LayoutSpec, Rect};
use crate::media::{I420Frame, VIDEO_CLOCK};
use crate::metrics::timed;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// A picture whose canvas has not changed is still sent every this many
/// seconds.
const STATIC_REFRESH_S: u32 = 1;
/// A participant whose last picture is older than this shows the placeholder.
const STALE_AFTER: Duration = Duration::from_secs(3);
/// How often each viewer's estimate and rung are logged (debug level; moves at info).
const LINK_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What one viewer sees: tiles in drawing order.
type Plan = Vec<(Rect, TileKey)>;

/// A source of pictures: a participant's camera, or its content while it presents.
struct Participant {
    id: ParticipantId,
    /// This is the participant's content (a shared screen), not its camera.
    content: bool,
    /// Content only: a hash of the last decoded picture. A screen capturer sends the
    /// same picture again and again; an identical one changes nothing (no new tile, and
    /// a picture showing only unchanged tiles is not encoded again).
    picture_hash: u64,
    name: String,
    muted: bool,
    /// Bumped whenever the tile's look changes (new picture, mute, stale).
    version: u64,
    showing_video: bool,
    /// Shown in at least one picture this tick.
    visible: bool,
    input: Input,
    /// What the sender is asked to send (cameras only).
    demand: demand::Demand,
}

impl Participant {
    fn new(id: ParticipantId, name: String, content: bool, input: Input) -> Self {
        Self {
            id,
            content,
            picture_hash: 0,
            name,
            muted: false,
            version: 0,
            showing_video: false,
            visible: false,
            input,
            demand: demand::Demand::default(),
        }
    }
}

/// Where an output's frames go: a viewer's RTP track, or the room's live output.
enum OutSink {
    Rtp(RtpSink),
    Live(crate::live::VideoTap),
}

/// The live output's place among the outputs (no participant has this id).
pub const LIVE_VIEWER: ParticipantId = ParticipantId(u64::MAX);

struct Output {
    viewer: ParticipantId,
    /// A watcher: it sees the audience view, not the room's layout.
    audience: bool,
    /// The codec its sink sends (negotiated from its offer).
    codec: OutputCodec,
    sink: OutSink,
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

/// One distinct (picture, rung, frame rate, codec) and the encoder that makes it.
struct PictureEncoder {
    id: u64,
    plan: Plan,
    rung: usize,
    codec: OutputCodec,
    /// The frame rate it runs at: the viewers' rate, capped by the room's output rate.
    fps: u32,
    /// The viewers' rate (their decision); a change of it means another encoder, with a
    /// fresh rate control, as a change of rung does.
    want_fps: u32,
    /// Made for this viewer alone until the shared encoder of the same picture sends an IDR.
    private_for: Option<ParticipantId>,
    /// Encoder, canvas, encoded frame and its packets (from the pool, back to it).
    parts: Spare,
    /// Indices into `outputs` of the viewers receiving this picture this tick.
    viewers: Vec<usize>,
    /// The recorder, when this is the recording's picture (then it has no viewers and
    /// takes no part in sharing).
    recorder: Option<Box<Recorder>>,
    /// The group (this tick's) whose picture it makes.
    group: usize,
    /// Frame-rate accumulator: a frame is due when it reaches the tick rate.
    credit: u32,
    /// `Some(idr)` when a frame was encoded this tick.
    encoded: Option<bool>,
    /// What the last encoded frame showed (see [`picture_signature`]); a picture with
    /// content is not encoded again while this is unchanged.
    shown: Option<u64>,
    /// Frames not encoded since the last one because nothing changed.
    unchanged: u32,
    last_idr: Option<Instant>,
    /// A requested IDR deferred by the interval limits.
    idr_due: Option<Instant>,
}

impl PictureEncoder {
    fn format(&self) -> sharing::Format {
        sharing::Format {
            rung: self.rung,
            fps: self.want_fps,
            codec: self.codec,
        }
    }
}

/// Viewers that see the same picture on the same rung at the same rate this tick.
#[derive(Default)]
struct Group {
    /// An output whose plan and decision are the group's.
    lead: usize,
    members: Vec<usize>,
}

/// The recorder as the consumer of a picture: what it asks for (everyone, in the recording
/// layout, at the recording size) and where the encoded frames go. Its encoder is an
/// ordinary [`PictureEncoder`] in the room's list (one of its own: the recording's size,
/// bitrate and one-second IDRs are no viewer's), encoded and timed with the others; only
/// the delivery differs (a queue to the recorder instead of RTP sinks).
struct Recorder {
    layout: LayoutSpec,
    width: u32,
    height: u32,
    /// The picture planned this tick (its encoder takes it when encoders are assigned,
    /// as viewers' encoders take their group's plan).
    plan: Plan,
    tx: crate::recording::RecSender,
    /// Frames handed to the recorder, from one reclaimed buffer.
    out: crate::codec::pack::SharedBuf,
    /// A frame was dropped: only an IDR may follow.
    awaiting_idr: bool,
}

/// Buffers the tick reuses instead of allocating.
#[derive(Default)]
struct Scratch {
    order: Vec<usize>,
    rects: Vec<Rect>,
    groups: Vec<Group>,
    groups_used: usize,
    /// The sharing decision's inputs and output (`sharing`).
    formats: Vec<sharing::Format>,
    viewers: Vec<sharing::Viewer>,
    running: Vec<sharing::Running>,
    out_group: Vec<usize>,
    sharing: sharing::Scratch,
    decision: sharing::Decision,
    /// Ids of the encoders started this tick (per `decision.started`; `None`: none ready).
    started: Vec<Option<u64>>,
    encoded: Vec<sharing::Encoded>,
    moves: Vec<(ParticipantId, u64, u64)>,
    needs: Vec<TileNeed>,
    sizes: Vec<pool::Shape>,
    /// The largest tile each camera is shown at this tick (`demand`).
    largest: Vec<(ParticipantId, u32, u32)>,
}

pub struct VideoLoop {
    participants: Vec<Participant>,
    outputs: Vec<Output>,
    encoders: Vec<PictureEncoder>,
    pool: EncoderPool,
    next_encoder_id: u64,
    ladder: Ladder,
    policy: PolicyConfig,
    layout: LayoutSpec,
    /// The audience view watchers see (a shared canvas).
    audience: LayoutSpec,
    tiles: TileCache,
    speaker: Arc<AtomicU64>,
    /// Recent speakers, newest last, so a speaker sees the previous one focused.
    last_speakers: Vec<ParticipantId>,
    stats: Arc<RoomStats>,
    settings: EncoderSettings,
    /// The output frame rate now (the configured one, lower under overload).
    tick_fps: u32,
    /// When tick 0 was due (RTP and recording timestamps count from it).
    clock_start: Instant,
    events: broadcast::Sender<RoomEvent>,
    limits: IngestLimits,
    max_input_fps: u32,
    /// The same for a presenter's content.
    content_limits: IngestLimits,
    content_max_fps: u32,
    /// The frame rate of pictures holding content (`[presentation] output_fps`).
    content_fps: u32,
    scratch: Scratch,
    /// `[video] pipeline`: encode tick t-1's pictures while tick t decodes (see `tick_at`).
    pipeline: bool,
    /// Pipelined: the tiles being rendered for the next tick's encodes.
    next_tiles: TileCache,
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
        let settings = EncoderSettings {
            width: v.width,
            height: v.height,
            fps: v.fps,
            bitrate_bps: v.bitrate_kbps * 1000,
            idr_interval_frames: v.fps * v.idr_interval_s,
            complexity: v.complexity,
            analysis: Default::default(),
        };
        stats.video_fps.store(v.fps as u64, Ordering::Relaxed);
        Self {
            participants: Vec::new(),
            outputs: Vec::new(),
            encoders: Vec::new(),
            pool: EncoderPool::new(settings),
            next_encoder_id: 0,
            ladder: v.ladder().expect("ladder validated at start-up"),
            policy: PolicyConfig::default(),
            audience: layout.clone(),
            layout,
            tiles: TileCache::default(),
            speaker,
            last_speakers: Vec::new(),
            stats,
            settings,
            tick_fps: v.fps,
            clock_start: Instant::now(),
            events,
            limits: config.ingest.limits(),
            max_input_fps: config.ingest.max_fps,
            content_limits: config.presentation.limits(&config.ingest),
            content_max_fps: config.presentation.max_fps,
            content_fps: config.presentation.output_fps,
            scratch: Scratch::default(),
            pipeline: v.pipeline,
            next_tiles: TileCache::default(),
        }
    }

    /// The tick interval at the configured frame rate.
    pub fn period(&self) -> Duration {
        Duration::from_secs(1) / self.settings.fps
    }

    pub fn run(mut self, rx: Receiver<VideoCmd>) {
        super::lower_thread_priority();
        self.clock_start = Instant::now();
        let mut clock = TickClock::new(self.clock_start, self.period());
        let mut governor = FrameRateGovernor::new(self.settings.fps);
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
            if clock.take_due(now).is_some() {
                let due = clock.deadline() - clock.period();
                let late = now.saturating_duration_since(due);
                self.stats.video_lateness.record(late);
                self.tick_at(now, due);
                let busy = now.elapsed();
                self.stats.video_tick_duration.record(busy);
                self.stats
                    .video_ticks_skipped
                    .store(clock.skipped, Ordering::Relaxed);
                self.stats.video_ticks.fetch_add(1, Ordering::Relaxed);
                if let Some(fps) = governor.observe(Instant::now(), busy, late) {
                    tracing::info!(
                        "video output {} -> {fps} fps (tick work {:.1} ms)",
                        self.tick_fps,
                        busy.as_secs_f64() * 1e3
                    );
                    self.set_output_fps(fps);
                    clock.set_period(governor.period());
                    self.stats
                        .video_fps_steps_down
                        .store(governor.steps_down, Ordering::Relaxed);
                }
                continue;
            }
            match rx.recv_timeout(clock.deadline().saturating_duration_since(now)) {
                Ok(VideoCmd::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The output frame rate of every picture (the tick rate); encoders follow at their
    /// next frame, without restarting.
    pub fn set_output_fps(&mut self, fps: u32) {
        self.tick_fps = fps.clamp(1, self.settings.fps);
        self.stats
            .video_fps
            .store(self.tick_fps as u64, Ordering::Relaxed);
    }

    /// No participant's media is attached (so no packet can come), nobody is sent a
    /// picture and nothing is recorded.
    fn is_idle(&self) -> bool {
        self.outputs.is_empty()
            && !self.recording()
            && self.participants.iter().all(|p| p.input.upstream.is_none())
    }

    /// A recording is running.
    fn recording(&self) -> bool {
        self.encoders.iter().any(|e| e.recorder.is_some())
    }

    /// The encoders that make viewers' pictures (not the recording's).
    fn viewer_encoders(&self) -> impl Iterator<Item = &PictureEncoder> {
        self.encoders.iter().filter(|e| e.recorder.is_none())
    }

    /// A participant's camera source (`content`: its content source, while it presents).
    fn find(&mut self, id: ParticipantId, content: bool) -> Option<&mut Participant> {
        self.participants
            .iter_mut()
            .find(|p| p.id == id && p.content == content)
    }

    /// Video encoders running (one per distinct picture and rung, plus private ones).
    pub fn encoder_count(&self) -> usize {
        self.viewer_encoders().count()
    }

    /// Encoders running per rung of the ladder.
    pub fn encoders_per_rung(&self) -> Vec<usize> {
        let mut n = vec![0; self.ladder.rungs().len()];
        for e in self.viewer_encoders() {
            n[e.rung] += 1;
        }
        n
    }

    /// The policy timing (tests shorten it).
    pub fn set_policy(&mut self, policy: PolicyConfig) {
        self.policy = policy;
    }

    /// Makes sure every attached viewer can get an encoder at the next tick, waiting for
    /// the pool (the benchmark and tests call it before ticking; the room's thread never
    /// waits, it serves a viewer a tick later instead).
    pub fn settle_encoders(&mut self) {
        self.scratch.sizes.clear();
        for i in 0..self.outputs.len() {
            let d = self.outputs[i].decision;
            let r = self.ladder.get(d.rung);
            let shape = Shape::new(self.outputs[i].codec, r.width, r.height, self.rate_for(d).1);
            self.scratch.sizes.push(shape);
        }
        for &shape in &self.scratch.sizes {
            let n = self.scratch.sizes.iter().filter(|s| **s == shape).count();
            self.pool.reserve(shape, n);
        }
        self.wanted_shapes();
        for i in 0..self.scratch.sizes.len() {
            self.pool.reserve(self.scratch.sizes[i], 1);
        }
        self.pool.settle();
    }

    pub fn handle(&mut self, cmd: VideoCmd) {
        if matches!(
            cmd,
            VideoCmd::Packet { .. } | VideoCmd::KeyframeRequest { .. }
        ) {
            super::media_dequeued(&self.stats.video_queued);
        }
        match cmd {
            VideoCmd::Join { id, name } => self.participants.push(Participant::new(
                id,
                name,
                false,
                Input::new(self.limits, self.max_input_fps),
            )),
            VideoCmd::Attach {
                id,
                payload_types,
                sink,
                upstream,
                link,
            } => {
                if let Some(p) = self.find(id, false) {
                    p.input.payload_types = payload_types;
                    p.input.upstream = Some(upstream);
                }
                if let Some(sink) = sink {
                    let codec = sink.codec();
                    self.add_output(id, OutSink::Rtp(sink), codec, link, false);
                }
            }
            VideoCmd::Watch { id, sink, link } => {
                let codec = sink.codec();
                self.add_output(id, OutSink::Rtp(sink), codec, link, true);
            }
            VideoCmd::LiveStart { tap, width, height } => {
                self.outputs.retain(|o| o.viewer != LIVE_VIEWER);
                // No estimate: the best rung within the live size.
                let link = Arc::new(ViewerLink::default());
                link.set_cap(width, height);
                self.add_output(
                    LIVE_VIEWER,
                    OutSink::Live(tap),
                    OutputCodec::H264,
                    link,
                    true,
                );
            }
            VideoCmd::LiveStop => self.outputs.retain(|o| o.viewer != LIVE_VIEWER),
            VideoCmd::AudienceLayout(spec) => self.audience = spec,
            VideoCmd::Leave { id } => {
                self.participants.retain(|p| p.id != id);
                self.outputs.retain(|o| o.viewer != id);
                self.last_speakers.retain(|p| *p != id);
            }
            VideoCmd::Present {
                id,
                payload_types,
                upstream,
            } => {
                // One content source per participant; a new one replaces the old.
                self.participants.retain(|p| !(p.id == id && p.content));
                let Some(name) = self.find(id, false).map(|p| p.name.clone()) else {
                    return;
                };
                let mut input = Input::new(self.content_limits, self.content_max_fps);
                input.payload_types = payload_types;
                input.upstream = Some(upstream);
                self.participants
                    .push(Participant::new(id, name, true, input));
            }
            VideoCmd::StopPresenting { id } => {
                self.participants.retain(|p| !(p.id == id && p.content));
            }
            VideoCmd::Mute { id, muted } => {
                if let Some(p) = self.find(id, false) {
                    p.muted = muted;
                    p.version += 1;
                }
            }
            VideoCmd::Layout(spec) => self.layout = spec,
            VideoCmd::Packet {
                id,
                content,
                arrival,
                pt,
                seq,
                ts,
                marker,
                payload,
            } => {
                if let Some(p) = self.find(id, content) {
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
                // (Built here, once per recording, not per tick.)
                let settings = EncoderSettings {
                    width,
                    height,
                    bitrate_bps,
                    idr_interval_frames: self.settings.fps,
                    ..self.settings
                };
                match VideoEncoder::new(OutputCodec::H264, settings) {
                    Ok(encoder) => {
                        self.encoders.retain(|e| e.recorder.is_none());
                        self.next_encoder_id += 1;
                        self.encoders.push(PictureEncoder {
                            id: self.next_encoder_id,
                            plan: Vec::new(),
                            rung: 0,
                            codec: OutputCodec::H264,
                            fps: self.tick_fps,
                            want_fps: self.tick_fps,
                            private_for: None,
                            parts: Spare {
                                encoder,
                                canvas: I420Frame::new(width as usize, height as usize),
                                au: Vec::with_capacity(512 * 1024),
                                packetizer: crate::codec::pack::Packetizer::new(OutputCodec::H264),
                                packets: Default::default(),
                            },
                            viewers: Vec::new(),
                            recorder: Some(Box::new(Recorder {
                                layout,
                                width,
                                height,
                                plan: Vec::new(),
                                tx,
                                out: Default::default(),
                                awaiting_idr: false,
                            })),
                            group: usize::MAX,
                            credit: 0,
                            encoded: None,
                            last_idr: None,
                            idr_due: None,
                            shown: None,
                            unchanged: 0,
                        });
                    }
                    Err(e) => tracing::error!("recording encoder: {e}"),
                }
            }
            VideoCmd::StopRecording => self.encoders.retain(|e| e.recorder.is_none()),
            VideoCmd::Stop => {}
        }
    }

    /// A viewer (or watcher) starts receiving, on the best rung it accepts; its link's
    /// estimate moves it down.
    fn add_output(
        &mut self,
        id: ParticipantId,
        sink: OutSink,
        codec: OutputCodec,
        link: Arc<ViewerLink>,
        audience: bool,
    ) {
        let (w, h) = link.cap();
        let cap = self.ladder.best_within(w, h);
        let mut policy = RungPolicy::new(self.policy, cap);
        policy.set_cap(cap);
        let decision = policy.current(&self.ladder);
        link.set_rung(decision.rung, decision.fps);
        // Its encoder is being built while it finishes connecting.
        let r = self.ladder.get(decision.rung);
        let on_rung = self
            .outputs
            .iter()
            .filter(|o| o.decision.rung == decision.rung && o.codec == codec)
            .count();
        let shape = Shape::new(codec, r.width, r.height, self.rate_for(decision).1);
        self.pool.reserve(shape, on_rung + 1);
        self.outputs.push(Output {
            viewer: id,
            audience,
            codec,
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

    /// Step 1: every viewer's plan (and the recording's); marks who is visible.
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
        // While the room shows a presentation in a presentation layout, the audience and
        // the recording follow it.
        let presenting =
            self.layout.is_presentation() && self.participants.iter().any(|p| p.content);
        let audience = if presenting {
            &self.layout
        } else {
            &self.audience
        };
        let Scratch { order, rects, .. } = &mut self.scratch;
        let mut picture = Picturing {
            participants: &mut self.participants,
            speaker,
            order,
            rects,
        };
        for out in &mut self.outputs {
            let rung = self.ladder.get(out.decision.rung);
            let layout = if out.audience { audience } else { &self.layout };
            // A shared canvas has no viewer to leave out.
            let viewer = (!layout.shared()).then_some(out.viewer);
            let size = (rung.width, rung.height);
            picture.plan(layout, size, viewer, &self.last_speakers, &mut out.plan);
        }
        // The recorder's picture: everyone, join order (the current speaker first for
        // focus layouts).
        for rec in self.encoders.iter_mut().filter_map(|e| e.recorder.as_mut()) {
            picture.plan(
                if presenting {
                    &self.layout
                } else {
                    &rec.layout
                },
                (rec.width, rec.height),
                None,
                &[],
                &mut rec.plan,
            );
        }
    }

    /// Step 1b: asks every camera's sender for what the plans show of it ([`demand`]):
    /// the largest tile over every picture, the recording's included; a larger size is
    /// followed by a PLI so it starts with a keyframe.
    fn ask_senders(&mut self, now: Instant) {
        let largest = &mut self.scratch.largest;
        demand::largest_tiles(
            self.outputs.iter().map(|o| o.plan.as_slice()).chain(
                self.encoders
                    .iter()
                    .filter_map(|e| e.recorder.as_ref())
                    .map(|r| r.plan.as_slice()),
            ),
            largest,
        );
        for p in self.participants.iter_mut().filter(|p| !p.content) {
            let Some(up) = &p.input.upstream else {
                continue; // not attached yet: nobody to ask
            };
            let tile = largest.iter().find(|t| t.0 == p.id).map(|t| (t.1, t.2));
            let want = demand::limit_for(tile, self.settings.fps);
            let Some(ask) = p.demand.update(want, tile.is_some(), now) else {
                continue;
            };
            if up.try_send(Upstream::SendLimit(ask.limit)).is_err() {
                continue; // asked again next tick
            }
            p.demand.sent(ask.limit, now);
            self.stats.send_limits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                participant = %p.id,
                "asking for {}x{} at {} kbit/s",
                ask.limit.width,
                ask.limit.height,
                ask.limit.max_bitrate_bps / 1000
            );
            if ask.raised {
                p.input.keyframe_now(now);
            }
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

    /// The frame rate and bitrate of a picture for decision `d`: the rung's bitrate (the
    /// same bits per frame below the rung's rate), at most the room's output rate.
    fn rate_for(&self, d: Decision) -> (u32, u32) {
        let r = self.ladder.get(d.rung);
        let bitrate = if d.fps < r.fps {
            r.bitrate_kbps * 1000 / r.fps * d.fps
        } else {
            r.bitrate_kbps * 1000
        };
        (d.fps.min(self.tick_fps), bitrate)
    }

    /// A picture's frame rates and bitrate: the viewers' rate (its format's), the rate it
    /// runs at and its bitrate. A picture holding content runs at no more than
    /// `[presentation] output_fps` on the rung's whole bitrate: detail over motion, each
    /// frame gets more of the rung's bits.
    fn picture_rate(&self, d: Decision, plan: &Plan) -> (u32, u32, u32) {
        let (fps, bitrate) = self.rate_for(d);
        let cap = |f| content_capped(plan, f, self.content_fps);
        (cap(d.fps), cap(fps), bitrate)
    }

    /// A ready encoder for `plan` at decision `d` (its first frame an IDR), or `None` when
    /// the pool has none ready yet.
    fn new_encoder(
        &mut self,
        plan: &Plan,
        d: Decision,
        codec: OutputCodec,
        private_for: Option<ParticipantId>,
        group: usize,
        now: Instant,
    ) -> Option<u64> {
        let r = self.ladder.get(d.rung);
        let (want_fps, fps, bitrate) = self.picture_rate(d, plan);
        let parts = self
            .pool
            .take(Shape::new(codec, r.width, r.height, bitrate), fps)?;
        self.next_encoder_id += 1;
        let mut e = PictureEncoder {
            id: self.next_encoder_id,
            plan: Vec::new(),
            rung: d.rung,
            codec,
            fps,
            want_fps,
            private_for,
            parts,
            viewers: Vec::new(),
            recorder: None,
            group,
            credit: self.tick_fps,
            encoded: None,
            last_idr: Some(now),
            idr_due: None,
            shown: None,
            unchanged: 0,
        };
        e.plan.clone_from(plan);
        self.encoders.push(e);
        Some(self.next_encoder_id)
    }

    /// Step 4's bookkeeping: one encoder per distinct (plan, rung, frame rate, codec). The
    /// decision is `sharing::decide` (pure, unit-tested there); this applies it: encoders
    /// retired to the pool, kept ones retargeted to their group's picture and rate, new
    /// ones taken from the pool (a viewer whose encoder is not ready waits a tick and asks
    /// again), keyframes requested or scheduled.
    fn assign_encoders(&mut self, now: Instant) {
        self.group_outputs();
        let sc = &mut self.scratch;
        let groups = sc.groups_used;
        sc.formats.clear();
        sc.out_group.clear();
        sc.out_group.resize(self.outputs.len(), 0);
        for g in 0..groups {
            let lead = &self.outputs[sc.groups[g].lead];
            sc.formats.push(sharing::Format {
                rung: lead.decision.rung,
                fps: content_capped(&lead.plan, lead.decision.fps, self.content_fps),
                codec: lead.codec,
            });
            for &o in &sc.groups[g].members {
                sc.out_group[o] = g;
            }
        }
        sc.viewers.clear();
        for (o, out) in self.outputs.iter_mut().enumerate() {
            sc.viewers.push(sharing::Viewer {
                id: out.viewer,
                group: sc.out_group[o],
                previous: out.encoder,
                wants_keyframe: std::mem::take(&mut out.wants_idr),
            });
        }
        sc.running.clear();
        sc.running.extend(
            self.encoders
                .iter()
                .filter(|e| e.recorder.is_none())
                .map(|e| sharing::Running {
                    id: e.id,
                    format: e.format(),
                    private_for: e.private_for,
                    last_idr: e.last_idr,
                    idr_due: e.idr_due,
                }),
        );
        sharing::decide(
            &sc.viewers,
            &sc.formats,
            &sc.running,
            now,
            &mut sc.sharing,
            &mut sc.decision,
        );
        let d = &self.scratch.decision;

        for &id in &d.retired {
            if let Some(i) = self.encoders.iter().position(|e| e.id == id) {
                let e = self.encoders.swap_remove(i);
                self.pool.give_back(e.parts);
            }
        }
        for e in &mut self.encoders {
            e.viewers.clear();
            if d.promoted.contains(&e.id) {
                e.private_for = None;
            }
            if d.keyframe_now.contains(&e.id) {
                e.parts.encoder.request_keyframe();
            }
            if let Some(&(_, due)) = d.idr_due.iter().find(|(id, _)| *id == e.id) {
                e.idr_due = due;
            }
        }
        // The recording's encoder takes the recorder's picture, at the room's rate.
        let tick_fps = self.tick_fps;
        for e in &mut self.encoders {
            if let Some(rec) = e.recorder.as_ref() {
                if e.plan != rec.plan {
                    e.plan.clone_from(&rec.plan);
                }
                e.fps = tick_fps;
            }
        }
        // Kept encoders follow their group's picture and rate (no restart, no IDR).
        for k in 0..self.scratch.decision.kept.len() {
            let (id, g) = self.scratch.decision.kept[k];
            let lead = self.scratch.groups[g].lead;
            let (_, fps, bitrate) =
                self.picture_rate(self.outputs[lead].decision, &self.outputs[lead].plan);
            let Some(e) = self.encoders.iter_mut().find(|e| e.id == id) else {
                continue;
            };
            e.group = g;
            if e.plan != self.outputs[lead].plan {
                e.plan.clone_from(&self.outputs[lead].plan);
            }
            if e.fps != fps || e.parts.encoder.settings().bitrate_bps != bitrate {
                e.fps = fps;
                if let Err(err) = e.parts.encoder.set_rate(fps, bitrate) {
                    tracing::warn!("video encoder rate: {err}");
                }
            }
        }
        // New encoders, ready from the pool (each starts with an IDR).
        self.scratch.started.clear();
        for n in 0..self.scratch.decision.started.len() {
            let st = self.scratch.decision.started[n];
            let lead = self.scratch.groups[st.group].lead;
            let (d, codec) = (self.outputs[lead].decision, self.outputs[lead].codec);
            let private_for = st.private_for.map(|o| self.outputs[o].viewer);
            let plan = std::mem::take(&mut self.outputs[lead].plan);
            let made = self.new_encoder(&plan, d, codec, private_for, st.group, now);
            self.outputs[lead].plan = plan;
            self.scratch.started.push(made);
        }
        // Viewers onto their encoders.
        for o in 0..self.outputs.len() {
            let id = match self.scratch.decision.sources[o] {
                Some(sharing::Source::Running(id)) => Some(id),
                Some(sharing::Source::Started(n)) => self.scratch.started[n],
                None => None,
            };
            match id.and_then(|id| self.encoders.iter_mut().find(|e| e.id == id)) {
                Some(e) => {
                    e.viewers.push(o);
                    self.outputs[o].encoder = Some(e.id);
                }
                // None ready: it waits (and keeps asking) rather than get a stream it
                // cannot decode.
                None => self.outputs[o].wants_idr = true,
            }
        }
        self.stats
            .encoders
            .store(self.encoder_count() as u64, Ordering::Relaxed);
        self.stats
            .video_encoder_waits
            .store(self.pool.waits, Ordering::Relaxed);
    }

    /// Groups outputs by (plan, rung, frame rate, codec) into `scratch.groups[..groups_used]`.
    fn group_outputs(&mut self) {
        let Scratch {
            groups,
            groups_used,
            ..
        } = &mut self.scratch;
        *groups_used = 0;
        for o in 0..self.outputs.len() {
            let (plan, d, codec) = (
                &self.outputs[o].plan,
                self.outputs[o].decision,
                self.outputs[o].codec,
            );
            let found = groups[..*groups_used].iter_mut().find(|g| {
                let lead = &self.outputs[g.lead];
                lead.decision.rung == d.rung
                    && lead.decision.fps == d.fps
                    && lead.codec == codec
                    && lead.plan == *plan
            });
            match found {
                Some(g) => g.members.push(o),
                None => {
                    if *groups_used == groups.len() {
                        groups.push(Group::default());
                    }
                    let g = &mut groups[*groups_used];
                    g.lead = o;
                    g.members.clear();
                    g.members.push(o);
                    *groups_used += 1;
                }
            }
        }
    }

    /// One tick at media time `k` periods after the start (the benchmark and tests drive
    /// ticks this way; the room's thread uses [`Self::tick_at`]).
    pub fn tick(&mut self, now: Instant, k: u64) {
        let at = self.clock_start + Duration::from_secs(1) * k as u32 / self.tick_fps;
        self.tick_at(now, at)
    }

    /// One tick whose scheduled time is `at` (RTP and recording timestamps follow it).
    ///
    /// Serial (the default): plan, decode, render tiles, then compose and encode every
    /// picture. With `[video] pipeline` the pictures encoded at tick t are those planned
    /// and rendered at tick t-1, while tick t's decodes and tiles run on the same pool
    /// *at the same time* — the cores stay busy through the encodes' uneven tail, for one
    /// frame interval of added video delay.
    pub fn tick_at(&mut self, now: Instant, at: Instant) {
        self.pool.poll();
        if self.pipeline {
            // Encoders take the plans made last tick (their tiles are ready).
            self.assign_encoders(now);
            self.choose_rungs(now);
            self.plan();
            self.ask_senders(now);
            self.start_encodes();
            let Self {
                participants,
                outputs,
                encoders,
                tiles,
                next_tiles,
                scratch,
                stats,
                tick_fps,
                ..
            } = self;
            let stats = &**stats;
            let tick_fps = *tick_fps;
            let tiles_now = &*tiles;
            // The recorder's new plan is read by the tile side while its encoder encodes
            // last tick's: lent out for the join (a move, no copy).
            let rec_plan = encoders
                .iter_mut()
                .find_map(|e| e.recorder.as_mut())
                .map(|r| std::mem::take(&mut r.plan));
            rayon::join(
                || encode_pictures(encoders, tiles_now, tick_fps, stats),
                || {
                    decode_inputs(participants, now, stats);
                    build_needs(
                        &mut scratch.needs,
                        outputs,
                        rec_plan.as_deref(),
                        participants,
                    );
                    prepare_tiles(next_tiles, &scratch.needs, participants, stats);
                },
            );
            if let (Some(rec), Some(plan)) = (
                self.encoders.iter_mut().find_map(|e| e.recorder.as_mut()),
                rec_plan,
            ) {
                rec.plan = plan;
            }
            std::mem::swap(&mut self.tiles, &mut self.next_tiles);
        } else {
            self.choose_rungs(now);
            self.plan();
            self.ask_senders(now);
            decode_inputs(&mut self.participants, now, &self.stats);
            let rec_plan = self
                .encoders
                .iter()
                .find_map(|e| e.recorder.as_ref())
                .map(|r| r.plan.as_slice());
            build_needs(
                &mut self.scratch.needs,
                &self.outputs,
                rec_plan,
                &self.participants,
            );
            prepare_tiles(
                &mut self.tiles,
                &self.scratch.needs,
                &self.participants,
                &self.stats,
            );
            self.assign_encoders(now);
            self.start_encodes();
            encode_pictures(&mut self.encoders, &self.tiles, self.tick_fps, &self.stats);
        }
        self.report_rejections();
        self.finish_tick(now, at);
    }

    /// Frame-rate credits for this tick; nothing encoded yet.
    fn start_encodes(&mut self) {
        for e in &mut self.encoders {
            e.credit += e.fps;
            e.encoded = None;
        }
    }

    fn report_rejections(&mut self) {
        for p in &mut self.participants {
            if let Some(reason) = p.input.rejection_to_report.take() {
                self.stats
                    .video_inputs_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(participant = %p.id, "video input refused for {}s: {reason}", REJECT_FOR.as_secs());
                let _ = self.events.send(RoomEvent::InputRejected {
                    participant_id: p.id,
                    reason,
                });
            }
        }
    }

    /// Sends what was encoded, moves private viewers back to shared encoders, and keeps
    /// spares coming.
    fn finish_tick(&mut self, now: Instant, at: Instant) {
        let stats = &*self.stats;
        stats.keyframe_requests_sent.store(
            self.participants.iter().map(|p| p.input.pli_sent).sum(),
            Ordering::Relaxed,
        );
        let media = at.saturating_duration_since(self.clock_start);
        let ts = (media.as_nanos() * VIDEO_CLOCK as u128 / 1_000_000_000) as u32;
        let (mut encoded, mut idrs) = (0, 0);
        for e in &mut self.encoders {
            if let Some(idr) = e.encoded {
                if idr {
                    e.last_idr = Some(now);
                }
                if e.recorder.is_none() {
                    encoded += 1;
                    idrs += idr as u64;
                }
            }
        }
        // A private viewer rejoins its shared encoder when that one sends an IDR.
        let sc = &mut self.scratch;
        sc.encoded.clear();
        sc.encoded.extend(
            self.encoders
                .iter()
                .filter(|e| e.recorder.is_none())
                .map(|e| sharing::Encoded {
                    id: e.id,
                    group: e.group,
                    private_for: e.private_for,
                    idr: e.encoded == Some(true),
                }),
        );
        sharing::rejoin(&sc.encoded, &mut sc.moves);
        for m in 0..self.scratch.moves.len() {
            let (viewer, from, to) = self.scratch.moves[m];
            let Some(o) = self.outputs.iter().position(|o| o.viewer == viewer) else {
                continue;
            };
            if let Some(e) = self.encoders.iter_mut().find(|e| e.id == from) {
                e.viewers.retain(|&v| v != o);
            }
            if let Some(e) = self.encoders.iter_mut().find(|e| e.id == to) {
                e.viewers.push(o);
                self.outputs[o].encoder = Some(to);
            }
        }
        for e in &mut self.encoders {
            if let (Some(idr), Some(rec)) = (e.encoded, e.recorder.as_mut()) {
                // After a frame was lost to a full queue, only an IDR may follow.
                if !rec.awaiting_idr || idr {
                    // The recorder releases the previous frame long before: its storage is
                    // reused instead of allocating.
                    rec.awaiting_idr = !rec.tx.send(crate::recording::RecMsg::Video {
                        at,
                        data: rec.out.share(&e.parts.au),
                    });
                    if rec.awaiting_idr {
                        e.parts.encoder.request_keyframe();
                    }
                }
            }
        }
        for e in &mut self.encoders {
            let mut live_wants_idr = false;
            if let Some(idr) = e.encoded {
                for &o in &e.viewers {
                    let out = &mut self.outputs[o];
                    match &mut out.sink {
                        OutSink::Rtp(sink) => sink.send_packetized(ts, &e.parts.packets),
                        OutSink::Live(tap) => {
                            tap.send(at, &e.parts.au, idr, now);
                            live_wants_idr = tap.wants_idr(now);
                        }
                    }
                    if idr {
                        out.link.idrs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // The live output's encoder sends an IDR every segment (its viewers get it too).
            if live_wants_idr {
                e.parts.encoder.request_keyframe();
            }
        }
        stats
            .video_frames_encoded
            .fetch_add(encoded, Ordering::Relaxed);
        stats.video_idrs.fetch_add(idrs, Ordering::Relaxed);

        // A spare of every rung's shape while anyone watches: new viewers, moves between
        // rungs and keyframe requests never wait for a build.
        self.wanted_shapes();
        self.pool.want(&self.scratch.sizes);
    }

    /// Tests: every camera shows a new frame (its tiles change) without decoding one.
    #[cfg(test)]
    fn touch_cameras(&mut self) {
        for p in self.participants.iter_mut().filter(|p| !p.content) {
            p.version += 1;
        }
    }

    /// Every rung's shape in every codec a viewer receives, into `scratch.sizes`.
    fn wanted_shapes(&mut self) {
        let sizes = &mut self.scratch.sizes;
        sizes.clear();
        for codec in [OutputCodec::H264, OutputCodec::Vp8] {
            if self.outputs.iter().any(|o| o.codec == codec) {
                sizes.extend(
                    self.ladder
                        .rungs()
                        .iter()
                        .map(|r| Shape::new(codec, r.width, r.height, r.bitrate_kbps * 1000)),
                );
            }
        }
    }

    /// Encoders running per output codec: (H.264, VP8).
    pub fn encoders_per_codec(&self) -> (usize, usize) {
        let vp8 = self
            .viewer_encoders()
            .filter(|e| e.codec == OutputCodec::Vp8)
            .count();
        (self.encoder_count() - vp8, vp8)
    }
}

/// Step 2: decodes what is shown (participants in parallel), drops what nobody sees.
fn decode_inputs(participants: &mut [Participant], now: Instant, stats: &RoomStats) {
    let decoded: u64 = participants
        .par_iter_mut()
        .map(|p| {
            timed(&stats.cpu.decode, || {
                let (decoded, got) = if p.visible {
                    let decoded = p.input.decode_pending(now);
                    let changed = if decoded && p.content {
                        // (Still a picture for the staleness clock: the screen is live.)
                        let h = picture_hash(&p.input.frame);
                        std::mem::replace(&mut p.picture_hash, h) != h
                    } else {
                        decoded
                    };
                    (decoded, changed)
                } else {
                    p.input.discard_pending(now);
                    (false, false)
                };
                let showing = !p.muted
                    && p.input
                        .last_picture
                        .is_some_and(|t| now.duration_since(t) < STALE_AFTER);
                if got || showing != p.showing_video {
                    p.version += 1;
                }
                p.showing_video = showing;
                decoded as u64
            })
        })
        .sum();
    stats
        .video_frames_decoded
        .fetch_add(decoded, Ordering::Relaxed);
}

/// The distinct tiles this tick's plans (and the recording's) need, into `needs`.
fn build_needs(
    needs: &mut Vec<TileNeed>,
    outputs: &[Output],
    rec_plan: Option<&[(Rect, TileKey)]>,
    participants: &[Participant],
) {
    needs.clear();
    for plan in outputs.iter().map(|o| o.plan.as_slice()).chain(rec_plan) {
        for (_, key) in plan {
            if needs.iter().any(|n| n.key == *key) {
                continue;
            }
            let content = key.look == Look::Content;
            if let Some(i) = participants
                .iter()
                .position(|p| p.id == key.participant && p.content == content)
            {
                needs.push(TileNeed {
                    key: *key,
                    version: participants[i].version,
                    source: i,
                });
            }
        }
    }
}

/// Step 3: renders each distinct tile once (in parallel).
fn prepare_tiles(
    tiles: &mut TileCache,
    needs: &[TileNeed],
    participants: &[Participant],
    stats: &RoomStats,
) {
    tiles.prepare_needs(
        needs,
        |i| {
            let p = &participants[i];
            (p.showing_video.then_some(&p.input.frame), p.name.as_str())
        },
        &stats.cpu.composite,
    );
}

/// Step 4: composes and encodes every picture due this tick (in parallel) and packetises
/// each once for its viewers (the recording's picture is one of them; it needs no packets).
fn encode_pictures(
    encoders: &mut [PictureEncoder],
    tiles: &TileCache,
    tick_fps: u32,
    stats: &RoomStats,
) {
    encoders.par_iter_mut().for_each(|e| {
        if e.credit < tick_fps || (e.viewers.is_empty() && e.recorder.is_none()) {
            return; // a lower frame rate than the tick's, or nobody to send it to
        }
        e.credit -= tick_fps;
        // A picture is composed and encoded only when something in it changed: a tile
        // showed a new frame, a label or mute changed, the layout moved. Static name
        // tiles of audio-only callers, paused senders and a still slide cost next to
        // nothing; at least one frame every STATIC_REFRESH_S goes out so receivers and
        // their statistics see the stream live, and keyframe requests are answered. The
        // next frame's RTP timestamp is its own tick's: the frame rate steps down, the
        // timing stays honest. The recording keeps its regular frames (its IDR cadence).
        let shown = e
            .recorder
            .is_none()
            .then(|| picture_signature(&e.plan, tiles));
        if shown.is_some()
            && shown == e.shown
            && !e.parts.encoder.keyframe_pending()
            && e.unchanged < e.fps.max(1) * STATIC_REFRESH_S
        {
            e.unchanged += 1;
            stats.video_frames_unchanged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let p = &mut e.parts;
        e.encoded = render_picture(
            &e.plan,
            tiles,
            &mut p.canvas,
            &mut p.encoder,
            &mut p.au,
            stats,
        );
        if e.encoded.is_some() {
            e.shown = shown;
            e.unchanged = 0;
        }
        if e.encoded.is_some() && !e.viewers.is_empty() {
            // Once per encoder, shared by its viewers.
            p.packetizer
                .packetize(&p.au, super::sink::RTP_MTU, &mut p.packets);
        }
    });
}

/// A fast hash of a whole picture (every byte of the three planes, 8 at a time).
fn picture_hash(f: &I420Frame) -> u64 {
    let mut h: u64 = (f.width as u64) << 32 | f.height as u64;
    for plane in [&f.y, &f.u, &f.v] {
        let chunks = plane.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(27);
        }
        for &b in rest {
            h = (h ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    h
}

/// `fps`, or at most `cap` for a picture holding content.
fn content_capped(plan: &Plan, fps: u32, cap: u32) -> u32 {
    if plan.iter().any(|(_, k)| k.look == Look::Content) {
        fps.min(cap)
    } else {
        fps
    }
}

/// What a picture shows: every tile's place, source and picture version, hashed (FNV-1a).
/// Equal signatures mean an identical canvas.
fn picture_signature(plan: &Plan, tiles: &TileCache) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        for b in v.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (r, k) in plan {
        mix(((r.x as u64) << 32) | r.y as u64);
        mix(((r.w as u64) << 32) | r.h as u64);
        mix(k.participant.0 ^ ((k.look as u64) << 62));
        mix(tiles.version(k).unwrap_or(u64::MAX));
    }
    h
}

/// Lays out pictures: who is seen, where (buffers reused from tick to tick).
struct Picturing<'a> {
    participants: &'a mut [Participant],
    speaker: Option<ParticipantId>,
    order: &'a mut Vec<usize>,
    rects: &'a mut Vec<Rect>,
}

impl Picturing<'_> {
    /// `plan` for a `size` canvas in `layout`, seen by `viewer` (`None`: everyone is in
    /// it — a shared canvas, the recording). A presenter's content, if any, is tile 0 for
    /// everyone (the presenter too), fitted, never cropped; in a presentation layout the
    /// presenter's camera comes next and the active speaker's tile is marked. For focus
    /// layouts the active speaker comes first (after the content); for the speaker
    /// themself (personal canvas) the one before, from `last_speakers`. Marks who is
    /// shown as visible.
    fn plan(
        &mut self,
        layout: &LayoutSpec,
        size: (u32, u32),
        viewer: Option<ParticipantId>,
        last_speakers: &[ParticipantId],
        plan: &mut Plan,
    ) {
        let (participants, order) = (&mut *self.participants, &mut *self.order);
        order.clear();
        order.extend(
            (0..participants.len())
                .filter(|&i| !participants[i].content && Some(participants[i].id) != viewer),
        );
        let content = participants.iter().position(|p| p.content);
        let presenter = content
            .filter(|_| layout.is_presentation())
            .map(|c| participants[c].id);
        if let Some(presenter) = presenter {
            if let Some(pos) = order.iter().position(|&i| participants[i].id == presenter) {
                order[..=pos].rotate_right(1);
            }
        } else if layout.speaker_first() {
            let focus = match self.speaker {
                Some(s) if Some(s) != viewer => Some(s),
                _ => last_speakers
                    .iter()
                    .rev()
                    .copied()
                    .find(|&p| Some(p) != viewer),
            };
            if let Some(pos) =
                focus.and_then(|f| order.iter().position(|&i| participants[i].id == f))
            {
                order[..=pos].rotate_right(1);
            }
        }
        if let Some(c) = content {
            order.insert(0, c);
        }
        layout.place_with_content(order.len(), content.is_some(), size.0, size.1, self.rects);
        let marked = self.speaker.filter(|_| layout.is_presentation());
        plan.clear();
        for (r, &i) in self.rects.iter().zip(order.iter()) {
            let p = &mut participants[i];
            p.visible = true;
            let look = if p.content {
                Look::Content
            } else if Some(p.id) == marked {
                Look::Speaker
            } else {
                Look::Camera
            };
            plan.push((
                *r,
                TileKey {
                    participant: p.id,
                    w: r.w,
                    h: r.h,
                    look,
                },
            ));
        }
    }
}

/// Composes `plan` from the shared tiles into `canvas` and encodes it into `au`.
/// Returns whether the frame is an IDR, or `None` when nothing was produced.
fn render_picture(
    plan: &Plan,
    tiles: &TileCache,
    canvas: &mut I420Frame,
    encoder: &mut VideoEncoder,
    au: &mut Vec<u8>,
    stats: &RoomStats,
) -> Option<bool> {
    timed(&stats.cpu.composite, || {
        compositor::compose_iter(
            canvas,
            plan.iter()
                .filter_map(|(r, key)| tiles.get(key).map(|t| (*r, t))),
        );
    });
    match timed(&stats.cpu.encode, || encoder.encode(canvas, au)) {
        Ok(idr) if !au.is_empty() => Some(idr),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("video encode: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests;
