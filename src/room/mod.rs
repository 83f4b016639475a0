//! Rooms: the registry (name → running room), and each room's two media threads.
//!
//! A room owns an **audio thread** (20 ms mixer ticks: jitter buffers, Opus decode/PLC,
//! N-1 mix, limiter, Opus encode, active speaker) and a **video thread** (ticks at the
//! output frame rate: frame assembly, decode, tile rendering, per-viewer composition and
//! H.264 encode, parallelised with rayon). Network tasks talk to them only through
//! channels that never block the sender (media beyond a bound is dropped and counted,
//! control is never dropped: see `Room::try_audio`); the threads never await and never
//! lock in their loops. Control-plane state (roster, layout
//! name) lives behind a std `Mutex` that the media threads never touch.

pub mod audio;
pub mod clock;
pub mod link;
pub mod overload;
pub mod policy;
pub mod presentation;
pub mod server_events;
pub mod sink;
pub mod video;

use crate::codec::VideoCodec;
use crate::config::Config;
use crate::ids::{ParticipantId, RoomId};
use crate::layout::{LayoutSet, LayoutSpec};
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc};

pub use sink::RtpSink;

/// Something every client in the room is told about.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum RoomEvent {
    #[serde(rename_all = "camelCase")]
    ParticipantJoined { participant: ParticipantInfo },
    #[serde(rename_all = "camelCase")]
    ParticipantLeft { participant_id: ParticipantId },
    #[serde(rename_all = "camelCase")]
    ParticipantUpdated { participant: ParticipantInfo },
    #[serde(rename_all = "camelCase")]
    ActiveSpeaker {
        participant_id: Option<ParticipantId>,
    },
    #[serde(rename_all = "camelCase")]
    LayoutChanged { layout: String },
    #[serde(rename_all = "camelCase")]
    RecordingChanged { recording: bool },
    /// The room's lock, PIN presence or tones changed.
    #[serde(rename_all = "camelCase")]
    RoomPolicy { policy: policy::RoomPolicy },
    /// This participant was removed by a moderator (sent before it leaves).
    #[serde(rename_all = "camelCase")]
    ParticipantKicked { participant_id: ParticipantId },
    /// A participant's video exceeded the ingest limits and is refused for a while
    /// (its last good picture stays; then a fresh keyframe is requested).
    #[serde(rename_all = "camelCase")]
    InputRejected {
        participant_id: ParticipantId,
        reason: String,
    },
    /// A call the bridge placed from this room changed state (`sip::dialout::OutCall`).
    CallUpdated { call: serde_json::Value },
    /// A participant started presenting (its content is shown).
    #[serde(rename_all = "camelCase")]
    PresentationStarted { participant_id: ParticipantId },
    /// A presentation ended: `reason` is `ended`, `moderator`, `replaced` or `left`.
    #[serde(rename_all = "camelCase")]
    PresentationStopped {
        participant_id: ParticipantId,
        reason: presentation::StopReason,
    },
}

/// A participant as the control plane and clients see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub audio_muted: bool,
    pub video_muted: bool,
    pub kind: ParticipantKind,
    pub moderator: bool,
    /// The audio codec it sends and receives (Opus for WebRTC; phones vary).
    pub audio_codec: crate::codec::voice::AudioCodec,
}

/// How a participant reached the room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantKind {
    /// The web client (WebSocket signaling).
    #[default]
    Web,
    Whip,
    /// A phone (SIP, plain RTP).
    Sip,
    /// A watcher (WHEP): receives the audience picture and the full mix; not listed,
    /// not mixed, not shown.
    Watcher,
}

/// What a joiner is, beyond its name.
#[derive(Clone, Copy, Debug)]
pub struct Joiner {
    pub kind: ParticipantKind,
    pub codec: crate::codec::voice::AudioCodec,
    /// Joins waiting (a caller still entering its PIN): heard by nobody, shown to nobody,
    /// until [`Room::admit`].
    pub waiting: bool,
    pub moderator: bool,
}

impl Default for Joiner {
    fn default() -> Self {
        Self {
            kind: ParticipantKind::Web,
            codec: crate::codec::voice::AudioCodec::Opus,
            waiting: false,
            moderator: false,
        }
    }
}

/// What the room asks of a participant's network side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// A moderator removed it: end the session (SIP BYE, WebSocket close).
    Kick,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomError {
    #[error("room is full ({0} participants)")]
    Full(usize),
    #[error("unknown layout `{0}`")]
    UnknownLayout(String),
    #[error("no such participant")]
    NoSuchParticipant,
    #[error("room is closing")]
    Closed,
    #[error("the room is locked")]
    Locked,
    #[error(transparent)]
    Floor(#[from] presentation::FloorError),
    #[error("the room has its most watchers ({0})")]
    WatchersFull(usize),
    #[error("live output: {0}")]
    Live(String),
    #[error(transparent)]
    Stream(#[from] crate::live::rtmp::RtmpError),
}

/// Who left, as [`Room::leave`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Left {
    /// Nobody (participant or watcher) is left.
    pub empty: bool,
    pub watcher: bool,
}

/// A request from the media threads to a participant's network side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Ask the sender for a keyframe (RTCP PLI).
    KeyframeRequest,
    /// Ask the sender to send no more than this (REMB; the web client's `sendLimit`).
    SendLimit(video::SendLimit),
}

/// Where a participant's outputs go and how its inputs are labelled.
pub struct Attachment {
    /// RTP payload type → video codec, from the negotiated SDP.
    pub video_payload_types: HashMap<u8, VideoCodec>,
    pub audio_out: Option<RtpSink>,
    pub video_out: Option<RtpSink>,
    pub upstream: mpsc::Sender<Upstream>,
}

/// Static settings every room thread reads.
#[derive(Clone, Debug)]
pub struct RoomSettings {
    pub config: Config,
    pub layouts: LayoutSet,
}

/// What `GET /api/rooms` (and the cluster's room lists) say about a running room.
#[derive(Debug, serde::Serialize)]
pub struct LatenessMs {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    pub room: String,
    pub layout: String,
    pub participants: Vec<ParticipantInfo>,
    /// Each viewer's downlink: estimate, rung, frame rate, requested cap, loss, NACKs.
    pub links: Vec<link::LinkInfo>,
    pub active_speaker: Option<crate::ids::ParticipantId>,
    pub video_encoders: u64,
    pub video_frames_encoded: u64,
    pub video_frames_decoded: u64,
    pub dropped_inputs: u64,
    /// Audio ticks so far, and how late they started (since the room started).
    pub audio_ticks: u64,
    pub audio_tick_lateness_ms: LatenessMs,
    /// 20 ms frames concealed (packet missing at its turn), all participants.
    pub audio_concealed: u64,
    /// Opus/G.711/G.722 encodes in the last audio tick.
    pub audio_encoders: u64,
    pub recording: Option<crate::recording::RecordingInfo>,
}

/// Counters a room keeps for logs and tests (atomics written by the media threads).
#[derive(Debug, Default)]
pub struct RoomStats {
    pub audio_ticks: AtomicU64,
    pub video_ticks: AtomicU64,
    pub dropped_inputs: AtomicU64,
    pub video_frames_decoded: AtomicU64,
    pub video_frames_encoded: AtomicU64,
    /// IDRs among them.
    pub video_idrs: AtomicU64,
    /// Video encoders running now (= distinct pictures).
    pub encoders: AtomicU64,
    /// Frames of pictures not composed or encoded because nothing in them changed.
    pub video_frames_unchanged: AtomicU64,
    /// Send limits asked of senders (each change of what a camera's sender should send).
    pub send_limits: AtomicU64,
    /// Presentations started in this room.
    pub presentations: AtomicU64,
    /// Who presents now (0: nobody); content packets from anyone else are dropped.
    pub presenter: AtomicU64,
    /// Opus encodes in the last audio tick (talkers + one shared mix).
    pub audio_encoders: AtomicU64,
    /// Opus decodes in the last audio tick.
    pub audio_decoders: AtomicU64,
    /// Audio frames concealed because their packet was missing at its turn.
    pub audio_concealed: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    /// Media commands (packets, keyframe requests) waiting for the audio/video thread.
    pub audio_queued: AtomicU64,
    pub video_queued: AtomicU64,
    /// Times an input was refused for exceeding the ingest limits.
    pub video_inputs_rejected: AtomicU64,
    /// CPU time per phase, all threads.
    pub cpu: crate::metrics::PhaseCpu,
    pub video_lateness: crate::metrics::Lateness,
    pub audio_lateness: crate::metrics::Lateness,
    /// How long each tick's work took (wall clock).
    pub video_tick_duration: crate::metrics::Lateness,
    pub audio_tick_duration: crate::metrics::Lateness,
    /// Ticks the clocks skipped because a loop fell behind.
    pub video_ticks_skipped: AtomicU64,
    pub audio_ticks_skipped: AtomicU64,
    /// The video output frame rate now (lowered in steps under overload).
    pub video_fps: AtomicU64,
    /// Times the output frame rate was lowered.
    pub video_fps_steps_down: AtomicU64,
    /// Times a viewer waited a tick because no ready encoder was there yet.
    pub video_encoder_waits: AtomicU64,
    /// RTP received from and sent to participants (payload bytes), all transports.
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl RoomStats {
    /// Counts one packet sent to a participant.
    pub fn sent(&self, payload_bytes: usize) {
        self.packets_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out
            .fetch_add(payload_bytes as u64, Ordering::Relaxed);
    }

    fn received(&self, payload_bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in
            .fetch_add(payload_bytes as u64, Ordering::Relaxed);
    }
}

/// Commands and media for the audio thread.
pub enum AudioCmd {
    Join {
        id: ParticipantId,
        /// What it sends and will be sent.
        codec: crate::codec::voice::AudioCodec,
        /// False: waiting (hears only its prompts, is heard by no one) until `Admit`.
        admitted: bool,
    },
    Admit {
        id: ParticipantId,
    },
    /// Plays a 48 kHz clip to one participant (a prompt) or to everyone (a tone).
    Play {
        id: Option<ParticipantId>,
        clip: audio::Clip,
    },
    Attach {
        id: ParticipantId,
        sink: Option<RtpSink>,
        /// The listener's link (its reported loss sizes the Opus FEC).
        link: Option<Arc<link::ViewerLink>>,
    },
    Leave {
        id: ParticipantId,
    },
    /// A watcher hears the full mix (Opus, the shared mix's packets).
    Watch {
        id: ParticipantId,
        sink: Option<RtpSink>,
    },
    /// The live output receives the full mix (PCM) every tick.
    LiveStart(crate::live::LiveSender),
    LiveStop,
    Mute {
        id: ParticipantId,
        muted: bool,
    },
    Packet {
        id: ParticipantId,
        seq: u16,
        payload: Bytes,
        level: Option<u8>,
    },
    /// Encode the room mix once more for this recorder.
    StartRecording {
        encoder: crate::codec::audio::OpusEncoder,
        tx: crate::recording::RecSender,
    },
    StopRecording,
    Stop,
}

/// Commands and media for the video thread.
pub enum VideoCmd {
    Join {
        id: ParticipantId,
        name: String,
    },
    Attach {
        id: ParticipantId,
        payload_types: HashMap<u8, VideoCodec>,
        sink: Option<RtpSink>,
        upstream: mpsc::Sender<Upstream>,
        link: Arc<link::ViewerLink>,
    },
    Leave {
        id: ParticipantId,
    },
    /// A watcher receives the audience picture on the ladder, like a viewer.
    Watch {
        id: ParticipantId,
        sink: RtpSink,
        link: Arc<link::ViewerLink>,
    },
    /// The audience view's layout (a shared canvas).
    AudienceLayout(LayoutSpec),
    /// The live output receives the audience view at (at most) this size.
    LiveStart {
        tap: crate::live::VideoTap,
        width: u32,
        height: u32,
    },
    LiveStop,
    Mute {
        id: ParticipantId,
        muted: bool,
    },
    Layout(LayoutSpec),
    /// `id` presents: its content is decoded (own limits) and shown from now on.
    Present {
        id: ParticipantId,
        payload_types: HashMap<u8, VideoCodec>,
        upstream: mpsc::Sender<Upstream>,
    },
    StopPresenting {
        id: ParticipantId,
    },
    Packet {
        id: ParticipantId,
        /// From its content (shared screen), not its camera.
        content: bool,
        arrival: Instant,
        pt: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Bytes,
    },
    KeyframeRequest {
        id: ParticipantId,
    },
    /// Render and encode the recording picture for this recorder.
    StartRecording {
        layout: LayoutSpec,
        width: u32,
        height: u32,
        bitrate_bps: u32,
        tx: crate::recording::RecSender,
    },
    StopRecording,
    Stop,
}

/// Bounded queue sizes: ~1 s of audio packets for 50 talkers; ~2 s of 720p packets for 10.
const AUDIO_QUEUE: usize = 2_500;
const VIDEO_QUEUE: usize = 8_000;

/// A running room.
pub struct Room {
    pub id: RoomId,
    settings: Arc<RoomSettings>,
    audio_tx: Sender<AudioCmd>,
    video_tx: Sender<VideoCmd>,
    events: broadcast::Sender<RoomEvent>,
    roster: Mutex<Vec<ParticipantInfo>>,
    /// Joined but not yet admitted (callers entering a PIN): not listed, not heard.
    waiting: Mutex<Vec<ParticipantInfo>>,
    /// Watchers (WHEP) and their names: not listed, not mixed; they keep the room running.
    watchers: Mutex<HashMap<ParticipantId, String>>,
    /// Each participant's network side, for kicks.
    controls: Mutex<HashMap<ParticipantId, mpsc::Sender<Control>>>,
    /// Join/leave tones (from the room's policy).
    tones: std::sync::atomic::AtomicBool,
    /// Each participant's downlink state (shared with its transport and the video thread).
    links: Mutex<HashMap<ParticipantId, Arc<link::ViewerLink>>>,
    layout: Mutex<String>,
    /// Active speaker, written by the audio thread, read by the video thread (0 = none).
    speaker: Arc<AtomicU64>,
    pub stats: Arc<RoomStats>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The running recording, if any (control plane only).
    recording: Mutex<Option<crate::recording::Recording>>,
    /// The server's event bus, once the room is registered with [`Rooms`].
    server: Arc<std::sync::OnceLock<Arc<server_events::ServerEvents>>>,
    /// The live output (HLS, RTMP) while it runs (control plane only).
    live: Mutex<Option<crate::live::Live>>,
    /// The room's RTMP pushes.
    pub streams: Arc<crate::live::rtmp::Streams>,
    /// Who presents, and the layout to go back to (control plane only).
    floor: Mutex<presentation::Floor>,
    /// The room's floor policy and whether it switches layouts (from its policy).
    floor_rules: Mutex<(crate::config::FloorPolicy, bool)>,
}

impl Room {
    /// Starts the room's two media threads. Fails only when the OS refuses a thread;
    /// then nothing of the room is left running.
    pub fn start(id: RoomId, settings: Arc<RoomSettings>) -> Result<Arc<Self>, std::io::Error> {
        init_media_pool();
        let (audio_tx, audio_rx) = channel();
        let (video_tx, video_rx) = channel();
        let (events, _) = broadcast::channel(256);
        let speaker = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(RoomStats::default());
        let layout_name = settings.config.default_layout.clone();
        let layout = settings
            .layouts
            .get(&layout_name)
            .cloned()
            .expect("default layout validated at start-up");
        let a = audio::AudioLoop::new(
            &settings.config,
            events.clone(),
            speaker.clone(),
            stats.clone(),
        );
        let v = video::VideoLoop::new(
            &settings.config,
            layout,
            events.clone(),
            speaker.clone(),
            stats.clone(),
        );
        let name = id.to_string();
        let server: Arc<std::sync::OnceLock<Arc<server_events::ServerEvents>>> = Arc::default();
        let streams = {
            let (bus, room) = (server.clone(), name.clone());
            Arc::new(crate::live::rtmp::Streams::new(move |e| {
                use crate::live::rtmp::StreamEvent as S;
                use server_events::ServerEvent as E;
                let room = room.clone();
                let ev = match e {
                    S::Started { id, url } => E::StreamStarted {
                        room,
                        stream_id: id,
                        url,
                    },
                    S::Failed { id, url, error } => E::StreamFailed {
                        room,
                        stream_id: id,
                        url,
                        error,
                    },
                    S::Stopped { id, url } => E::StreamStopped {
                        room,
                        stream_id: id,
                        url,
                    },
                };
                if let Some(bus) = bus.get() {
                    bus.emit(ev);
                }
            }))
        };
        let audio = spawn_thread(format!("audio-{name}"), move || a.run(audio_rx))?;
        // If the second thread cannot start, dropping `audio_tx` ends the first one.
        let video = spawn_thread(format!("video-{name}"), move || v.run(video_rx))?;
        Ok(Arc::new(Self {
            id,
            audio_tx,
            video_tx,
            events,
            roster: Mutex::new(Vec::new()),
            waiting: Mutex::new(Vec::new()),
            watchers: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            tones: std::sync::atomic::AtomicBool::new(true),
            links: Mutex::new(HashMap::new()),
            layout: Mutex::new(layout_name),
            speaker,
            stats,
            threads: Mutex::new(vec![audio, video]),
            recording: Mutex::new(None),
            server,
            live: Mutex::new(None),
            streams,
            floor: Mutex::new(presentation::Floor::default()),
            floor_rules: Mutex::new((
                settings.config.presentation.floor,
                settings.config.presentation.switch_layout,
            )),
            settings,
        }))
    }

    /// The live output, started if it is not running: the video thread feeds it the
    /// audience view at the configured video size, the audio thread the full mix.
    pub fn live(&self) -> Result<Arc<crate::live::HlsOutput>, RoomError> {
        let mut slot = lock(&self.live);
        if let Some(l) = slot.as_ref() {
            return Ok(l.hls.clone());
        }
        let c = &self.settings.config;
        let opus = crate::codec::audio::OpusEncoder::new(
            c.audio.bitrate_kbps as i32 * 1000,
            c.audio.complexity as i32,
        )
        .map_err(|e| RoomError::Live(e.to_string()))?;
        let (w, h) = (c.video.width, c.video.height);
        let live = crate::live::Live::start(self.id.as_str(), w, h, opus, self.streams.clone())
            .map_err(|e| RoomError::Live(e.to_string()))?;
        self.send_video(VideoCmd::LiveStart {
            tap: crate::live::VideoTap::new(live.tx.clone()),
            width: w,
            height: h,
        })?;
        self.send_audio(AudioCmd::LiveStart(live.tx.clone()))?;
        tracing::info!(room = %self.id, "live output started ({w}x{h})");
        let hls = live.hls.clone();
        *slot = Some(live);
        Ok(hls)
    }

    /// Stops the live output when nothing uses it: no RTMP stream and no HLS request
    /// for `idle`.
    pub fn stop_live_if_unused(&self, idle: std::time::Duration) {
        let mut slot = lock(&self.live);
        let unused = slot.as_ref().is_some_and(|l| {
            !self.streams.any()
                && l.hls
                    .last_request
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed()
                    >= idle
        });
        if unused {
            let _ = self.send_video(VideoCmd::LiveStop);
            let _ = self.send_audio(AudioCmd::LiveStop);
            *slot = None;
            tracing::info!(room = %self.id, "live output stopped (unused)");
        }
    }

    /// Whether the live output runs.
    pub fn is_live(&self) -> bool {
        lock(&self.live).is_some()
    }

    /// Starts an RTMP push of the live output (starting the live output).
    pub fn add_stream(&self, url: &str) -> Result<crate::live::rtmp::StreamInfo, RoomError> {
        let target = crate::live::rtmp::Target::parse(url)?;
        let tls = if target.tls {
            let ca = self.settings.config.live.ca_file.as_deref();
            Some(
                crate::signaling::tls::client_connector(ca)
                    .map_err(|e| RoomError::Live(e.to_string()))?,
            )
        } else {
            None
        };
        self.live()?;
        Ok(self.streams.add(url, tls)?)
    }

    /// Starts recording this room (composed picture + full mix) into the recording
    /// directory. Errors (unwritable directory, disk full) come back at once.
    pub fn start_recording(&self) -> Result<crate::recording::RecordingInfo, RecordingStartError> {
        let mut slot = lock(&self.recording);
        if slot.is_some() {
            return Err(RecordingStartError::AlreadyRecording);
        }
        let rc = &self.settings.config.recording;
        let layout = self
            .settings
            .layouts
            .get(&rc.layout)
            .cloned()
            .ok_or_else(|| RecordingStartError::Layout(rc.layout.clone()))?;
        let mut encoder = crate::codec::audio::OpusEncoder::new(
            self.settings.config.audio.bitrate_kbps as i32 * 1000,
            self.settings.config.audio.complexity as i32,
        )
        .map_err(|e| RecordingStartError::Codec(e.to_string()))?;
        let pre_skip = encoder.lookahead();
        let (rec, tx) = crate::recording::Recording::start(
            &rc.dir,
            self.id.as_str(),
            rc.width,
            rc.height,
            pre_skip,
            Instant::now(),
        )?;
        self.send_video(VideoCmd::StartRecording {
            layout,
            width: rc.width,
            height: rc.height,
            bitrate_bps: rc.bitrate_kbps * 1000,
            tx: tx.clone(),
        })
        .map_err(|_| RecordingStartError::Closed)?;
        self.send_audio(AudioCmd::StartRecording { encoder, tx })
            .map_err(|_| RecordingStartError::Closed)?;
        if rc.announce {
            // Everyone in the room (and the file) hears that it is being recorded.
            let _ = self.send_audio(AudioCmd::Play {
                id: None,
                clip: crate::prompts::Prompt::Recording.clip(),
            });
        }
        let info = recording_info(&rec, true);
        *slot = Some(rec);
        let _ = self
            .events
            .send(RoomEvent::RecordingChanged { recording: true });
        Ok(info)
    }

    /// Stops the recording and waits (briefly) for its file to be finalised.
    pub fn stop_recording(&self) -> Option<crate::recording::RecordingInfo> {
        let mut rec = lock(&self.recording).take()?;
        let _ = self.send_video(VideoCmd::StopRecording);
        let _ = self.send_audio(AudioCmd::StopRecording);
        rec.join(std::time::Duration::from_secs(10));
        let _ = self
            .events
            .send(RoomEvent::RecordingChanged { recording: false });
        let info = recording_info(&rec, false);
        self.recording_finished(&info, &rec.path);
        Some(info)
    }

    fn recording_finished(&self, info: &crate::recording::RecordingInfo, path: &std::path::Path) {
        if let Some(bus) = self.server.get() {
            bus.emit(server_events::ServerEvent::RecordingFinished {
                room: self.id.to_string(),
                recording: info.clone(),
                path: path.display().to_string(),
            });
        }
    }

    pub fn is_recording(&self) -> bool {
        lock(&self.recording).is_some()
    }

    /// The running recording's live info.
    pub fn recording_info(&self) -> Option<crate::recording::RecordingInfo> {
        lock(&self.recording)
            .as_ref()
            .map(|r| recording_info(r, true))
    }

    /// Tells the room's clients about a call placed from it.
    pub fn call_updated(&self, call: serde_json::Value) {
        let _ = self.events.send(RoomEvent::CallUpdated { call });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.events.subscribe()
    }

    pub fn participants(&self) -> Vec<ParticipantInfo> {
        lock(&self.roster).clone()
    }

    pub fn layout(&self) -> String {
        lock(&self.layout).clone()
    }

    pub fn active_speaker(&self) -> Option<ParticipantId> {
        match self.speaker.load(Ordering::Relaxed) {
            0 => None,
            n => Some(ParticipantId(n)),
        }
    }

    pub fn layouts(&self) -> Vec<String> {
        self.settings.layouts.names()
    }

    /// Adds a web participant (before its media is connected).
    pub fn join(&self, name: &str) -> Result<ParticipantInfo, RoomError> {
        self.join_as(name, Joiner::default())
    }

    /// Adds a participant of any kind (before its media is connected).
    pub fn join_as(&self, name: &str, j: Joiner) -> Result<ParticipantInfo, RoomError> {
        let info = {
            let mut roster = lock(&self.roster);
            let mut waiting = lock(&self.waiting);
            let max = self.settings.config.max_participants;
            if roster.len() + waiting.len() >= max {
                return Err(RoomError::Full(max));
            }
            let info = ParticipantInfo {
                id: ParticipantId::next(),
                name: name.to_owned(),
                audio_muted: false,
                video_muted: false,
                kind: j.kind,
                moderator: j.moderator,
                audio_codec: j.codec,
            };
            if j.waiting {
                waiting.push(info.clone());
            } else {
                roster.push(info.clone());
            }
            lock(&self.links).insert(info.id, Arc::default());
            info
        };
        self.send_audio(AudioCmd::Join {
            id: info.id,
            codec: j.codec,
            admitted: !j.waiting,
        })?;
        if !j.waiting {
            self.announce_joined(&info)?;
        }
        Ok(info)
    }

    /// Adds a watcher (before its media is connected): it will receive the audience
    /// picture and the full mix. Refused beyond `[live] max_watchers`.
    pub fn watch(&self, name: &str) -> Result<ParticipantInfo, RoomError> {
        let mut watchers = lock(&self.watchers);
        let max = self.settings.config.live.max_watchers;
        if watchers.len() >= max {
            return Err(RoomError::WatchersFull(max));
        }
        let info = ParticipantInfo {
            id: ParticipantId::next(),
            name: name.to_owned(),
            audio_muted: false,
            video_muted: false,
            kind: ParticipantKind::Watcher,
            moderator: false,
            audio_codec: crate::codec::voice::AudioCodec::Opus,
        };
        watchers.insert(info.id, info.name.clone());
        lock(&self.links).insert(info.id, Arc::default());
        Ok(info)
    }

    /// Watchers now.
    pub fn watcher_count(&self) -> usize {
        lock(&self.watchers).len()
    }

    fn is_watcher(&self, id: ParticipantId) -> bool {
        lock(&self.watchers).contains_key(&id)
    }

    fn announce_joined(&self, info: &ParticipantInfo) -> Result<(), RoomError> {
        self.send_video(VideoCmd::Join {
            id: info.id,
            name: info.name.clone(),
        })?;
        self.tone(&JOIN_TONE);
        let _ = self.events.send(RoomEvent::ParticipantJoined {
            participant: info.clone(),
        });
        Ok(())
    }

    /// Admits a waiting participant (its PIN was right): listed, heard, hears the room.
    pub fn admit(&self, id: ParticipantId, moderator: bool) -> Result<ParticipantInfo, RoomError> {
        let info = {
            let mut waiting = lock(&self.waiting);
            let i = waiting
                .iter()
                .position(|p| p.id == id)
                .ok_or(RoomError::NoSuchParticipant)?;
            let mut info = waiting.remove(i);
            info.moderator = moderator;
            lock(&self.roster).push(info.clone());
            info
        };
        self.send_audio(AudioCmd::Admit { id })?;
        self.announce_joined(&info)?;
        Ok(info)
    }

    /// Plays a tone to everyone, when the room has tones on and someone is there to hear.
    fn tone(&self, clip: &std::sync::LazyLock<audio::Clip>) {
        if self.tones.load(Ordering::Relaxed) && lock(&self.roster).len() > 1 {
            let _ = self.send_audio(AudioCmd::Play {
                id: None,
                clip: std::sync::LazyLock::force(clip).clone(),
            });
        }
    }

    /// Plays a prompt to one participant.
    pub fn prompt(&self, id: ParticipantId, clip: audio::Clip) {
        let _ = self.send_audio(AudioCmd::Play { id: Some(id), clip });
    }

    pub fn set_tones(&self, on: bool) {
        self.tones.store(on, Ordering::Relaxed);
    }

    /// Registers a participant's network side, to be told of kicks.
    pub fn set_control(&self, id: ParticipantId, tx: mpsc::Sender<Control>) {
        lock(&self.controls).insert(id, tx);
    }

    /// Grants (or takes) moderator rights.
    pub fn set_moderator(&self, id: ParticipantId, moderator: bool) -> Result<(), RoomError> {
        self.update(id, |p| p.moderator = moderator)
    }

    /// Changes a listed participant's info and tells every client.
    fn update(
        &self,
        id: ParticipantId,
        change: impl FnOnce(&mut ParticipantInfo),
    ) -> Result<(), RoomError> {
        let info = {
            let mut roster = lock(&self.roster);
            let p = roster
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or(RoomError::NoSuchParticipant)?;
            change(p);
            p.clone()
        };
        let _ = self
            .events
            .send(RoomEvent::ParticipantUpdated { participant: info });
        Ok(())
    }

    /// Whether `id` is a listed participant with moderator rights.
    pub fn is_moderator(&self, id: ParticipantId) -> bool {
        lock(&self.roster).iter().any(|p| p.id == id && p.moderator)
    }

    /// Tells `id`'s network side to end its session (the caller then leaves as usual).
    pub fn kick(&self, id: ParticipantId) -> Result<(), RoomError> {
        let listed = lock(&self.roster).iter().any(|p| p.id == id)
            || lock(&self.waiting).iter().any(|p| p.id == id);
        if !listed {
            return Err(RoomError::NoSuchParticipant);
        }
        let _ = self
            .events
            .send(RoomEvent::ParticipantKicked { participant_id: id });
        if let Some(tx) = lock(&self.controls).get(&id) {
            let _ = tx.try_send(Control::Kick);
        }
        Ok(())
    }

    /// Mutes (or unmutes) everyone except moderators; returns how many changed.
    pub fn mute_all(&self, muted: bool) -> usize {
        let ids: Vec<_> = lock(&self.roster)
            .iter()
            .filter(|p| !p.moderator && p.audio_muted != muted)
            .map(|p| p.id)
            .collect();
        for &id in &ids {
            let _ = self.set_muted(id, Some(muted), None);
        }
        ids.len()
    }

    /// Listed plus waiting participants plus watchers (the room runs while this is
    /// not zero).
    pub fn occupancy(&self) -> usize {
        lock(&self.roster).len() + lock(&self.waiting).len() + lock(&self.watchers).len()
    }

    /// Connects a participant's outputs (after negotiation).
    pub fn attach(&self, id: ParticipantId, a: Attachment) -> Result<(), RoomError> {
        let link = self.link(id).ok_or(RoomError::NoSuchParticipant)?;
        if self.is_watcher(id) {
            // A watcher sends nothing: only its outputs are connected.
            self.send_audio(AudioCmd::Watch {
                id,
                sink: a.audio_out,
            })?;
            if let Some(sink) = a.video_out {
                self.send_video(VideoCmd::Watch { id, sink, link })?;
            }
            return Ok(());
        }
        self.send_audio(AudioCmd::Attach {
            id,
            sink: a.audio_out,
            link: Some(link.clone()),
        })?;
        self.send_video(VideoCmd::Attach {
            id,
            payload_types: a.video_payload_types,
            sink: a.video_out,
            upstream: a.upstream,
            link,
        })
    }

    /// A participant's downlink state (estimate, requested size, rung), while it is here.
    pub fn link(&self, id: ParticipantId) -> Option<Arc<link::ViewerLink>> {
        lock(&self.links).get(&id).cloned()
    }

    /// Every attached viewer's link, for the API.
    pub fn links(&self) -> Vec<link::LinkInfo> {
        let mut v: Vec<_> = lock(&self.links)
            .iter()
            .map(|(id, l)| l.info(*id))
            .collect();
        v.sort_by_key(|l| l.participant_id);
        v
    }

    /// Removes a participant or watcher; `None` if it was not here.
    pub fn leave(&self, id: ParticipantId) -> Option<Left> {
        let (listed, was_waiting, watcher, empty) = {
            let mut roster = lock(&self.roster);
            let mut waiting = lock(&self.waiting);
            let mut watchers = lock(&self.watchers);
            let (before, before_waiting) = (roster.len(), waiting.len());
            roster.retain(|p| p.id != id);
            waiting.retain(|p| p.id != id);
            let watcher = watchers.remove(&id).is_some();
            lock(&self.links).remove(&id);
            lock(&self.controls).remove(&id);
            (
                roster.len() != before,
                waiting.len() != before_waiting,
                watcher,
                roster.is_empty() && waiting.is_empty() && watchers.is_empty(),
            )
        };
        if watcher {
            let _ = self.send_audio(AudioCmd::Leave { id });
            let _ = self.send_video(VideoCmd::Leave { id });
            return Some(Left {
                empty,
                watcher: true,
            });
        }
        if listed || was_waiting {
            let _ = self.send_audio(AudioCmd::Leave { id });
        }
        if listed {
            self.release_floor(id, presentation::StopReason::Left);
            let _ = self.send_video(VideoCmd::Leave { id });
            self.tone(&LEAVE_TONE);
            let _ = self
                .events
                .send(RoomEvent::ParticipantLeft { participant_id: id });
        }
        (listed || was_waiting).then_some(Left {
            empty,
            watcher: false,
        })
    }

    pub fn set_muted(
        &self,
        id: ParticipantId,
        audio: Option<bool>,
        video: Option<bool>,
    ) -> Result<(), RoomError> {
        self.update(id, |p| {
            if let Some(a) = audio {
                p.audio_muted = a;
            }
            if let Some(v) = video {
                p.video_muted = v;
            }
        })?;
        if let Some(a) = audio {
            self.send_audio(AudioCmd::Mute { id, muted: a })?;
        }
        if let Some(v) = video {
            self.send_video(VideoCmd::Mute { id, muted: v })?;
        }
        Ok(())
    }

    /// Someone chooses the room's layout; the video thread applies it at its next tick. A
    /// choice made during a presentation stays after it.
    pub fn set_layout(&self, name: &str) -> Result<(), RoomError> {
        self.apply_layout(name)?;
        lock(&self.floor).layout_chosen();
        Ok(())
    }

    /// Who presents now.
    pub fn presenter(&self) -> Option<ParticipantId> {
        lock(&self.floor).presenter()
    }

    /// The room's floor policy and layout switching (from its policy; see
    /// `[presentation]`).
    pub fn set_floor_rules(&self, floor: crate::config::FloorPolicy, switch_layout: bool) {
        *lock(&self.floor_rules) = (floor, switch_layout);
    }

    /// `id` asks to present: granted (the room may switch to the presentation layout,
    /// a previous presenter may lose the floor) or refused. Its content is shown once
    /// [`Self::attach_content`] connects it.
    pub fn request_floor(&self, id: ParticipantId) -> Result<(), RoomError> {
        if !lock(&self.roster).iter().any(|p| p.id == id) {
            return Err(RoomError::NoSuchParticipant);
        }
        let (policy, switch) = *lock(&self.floor_rules);
        let to = switch.then_some(self.settings.config.presentation.layout.as_str());
        let layout = self.layout();
        let change = lock(&self.floor).request(id, policy, &layout, to)?;
        self.apply_floor(change);
        Ok(())
    }

    /// `id`'s content is negotiated: the video thread decodes and shows it.
    pub fn attach_content(
        &self,
        id: ParticipantId,
        payload_types: HashMap<u8, VideoCodec>,
        upstream: mpsc::Sender<Upstream>,
    ) -> Result<(), RoomError> {
        if self.presenter() != Some(id) {
            return Err(presentation::FloorError::NobodyPresenting.into());
        }
        self.send_video(VideoCmd::Present {
            id,
            payload_types,
            upstream,
        })
    }

    /// `id` stops presenting (or its content connection ended, or it left).
    pub fn release_floor(&self, id: ParticipantId, reason: presentation::StopReason) {
        let layout = self.layout();
        let change = lock(&self.floor).release(id, reason, &layout);
        self.apply_floor(change);
    }

    /// Stops whoever presents: by participant `by` (a moderator, or the presenter), or by
    /// the control API (`None`). Returns who presented.
    pub fn stop_presentation(&self, by: Option<ParticipantId>) -> Result<ParticipantId, RoomError> {
        let by = by.map(|b| (b, self.is_moderator(b)));
        let layout = self.layout();
        let change = lock(&self.floor).stop(by, &layout)?;
        let who = change.stopped.map(|s| s.0);
        self.apply_floor(change);
        who.ok_or(presentation::FloorError::NobodyPresenting.into())
    }

    /// Carries out what the floor decided: content stopped and started in the video
    /// thread, clients told, the layout switched.
    fn apply_floor(&self, change: presentation::FloorChange) {
        if let Some((id, reason)) = change.stopped {
            self.stats.presenter.store(0, Ordering::Relaxed);
            let _ = self.send_video(VideoCmd::StopPresenting { id });
            tracing::info!(room = %self.id, %id, ?reason, "presentation stopped");
            let _ = self.events.send(RoomEvent::PresentationStopped {
                participant_id: id,
                reason,
            });
            if let Some(bus) = self.server.get() {
                bus.emit(server_events::ServerEvent::PresentationStopped {
                    room: self.id.to_string(),
                    participant_id: id,
                    reason,
                });
            }
        }
        if let Some(id) = change.started {
            self.stats.presenter.store(id.0, Ordering::Relaxed);
            self.stats.presentations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(room = %self.id, %id, "presentation started");
            let _ = self
                .events
                .send(RoomEvent::PresentationStarted { participant_id: id });
            if let Some(bus) = self.server.get() {
                bus.emit(server_events::ServerEvent::PresentationStarted {
                    room: self.id.to_string(),
                    participant_id: id,
                });
            }
        }
        if let Some(layout) = change.layout {
            if let Err(e) = self.apply_layout(&layout) {
                tracing::warn!(room = %self.id, "presentation layout: {e}");
            }
        }
    }

    /// Switches the room's layout (by a choice or by the floor).
    fn apply_layout(&self, name: &str) -> Result<(), RoomError> {
        let spec = self
            .settings
            .layouts
            .get(name)
            .cloned()
            .ok_or_else(|| RoomError::UnknownLayout(name.to_owned()))?;
        self.send_video(VideoCmd::Layout(spec))?;
        *lock(&self.layout) = name.to_owned();
        let _ = self.events.send(RoomEvent::LayoutChanged {
            layout: name.to_owned(),
        });
        Ok(())
    }

    /// An incoming audio packet (from a network task; never blocks).
    pub fn audio_packet(&self, id: ParticipantId, seq: u16, payload: Bytes, level: Option<u8>) {
        self.stats.received(payload.len());
        self.try_audio(AudioCmd::Packet {
            id,
            seq,
            payload,
            level,
        });
    }

    /// An incoming video packet (from a network task; never blocks).
    #[allow(clippy::too_many_arguments)]
    pub fn video_packet(
        &self,
        id: ParticipantId,
        pt: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Bytes,
    ) {
        self.video_in(id, false, pt, seq, ts, marker, payload)
    }

    /// An incoming packet of `id`'s content (dropped unless `id` presents).
    pub fn content_packet(
        &self,
        id: ParticipantId,
        pt: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Bytes,
    ) {
        if self.stats.presenter.load(Ordering::Relaxed) == id.0 {
            self.video_in(id, true, pt, seq, ts, marker, payload)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn video_in(
        &self,
        id: ParticipantId,
        content: bool,
        pt: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Bytes,
    ) {
        self.stats.received(payload.len());
        self.try_video(VideoCmd::Packet {
            id,
            content,
            arrival: Instant::now(),
            pt,
            seq,
            ts,
            marker,
            payload,
        });
    }

    /// A viewer's PLI/FIR for its composite.
    pub fn keyframe_request(&self, id: ParticipantId) {
        self.try_video(VideoCmd::KeyframeRequest { id });
    }

    // Queue policy. Nothing here ever blocks the caller (async network tasks): both
    // channels are unbounded, media is bounded by counting — a packet or keyframe
    // request arriving while AUDIO_QUEUE/VIDEO_QUEUE of them wait is dropped and counted —
    // and control commands (join, leave, mute, layout, recording, stop) are never dropped;
    // their number is bounded by the sessions that send them.
    fn try_audio(&self, cmd: AudioCmd) {
        self.admit_media(&self.audio_tx, &self.stats.audio_queued, AUDIO_QUEUE, cmd);
    }

    fn try_video(&self, cmd: VideoCmd) {
        self.admit_media(&self.video_tx, &self.stats.video_queued, VIDEO_QUEUE, cmd);
    }

    /// Counted admission of a media command (the loop calls [`media_dequeued`]).
    fn admit_media<T>(&self, tx: &Sender<T>, queued: &AtomicU64, cap: usize, cmd: T) {
        if queued.fetch_add(1, Ordering::Relaxed) >= cap as u64 || tx.send(cmd).is_err() {
            queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped_inputs.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send_audio(&self, cmd: AudioCmd) -> Result<(), RoomError> {
        self.audio_tx.send(cmd).map_err(|_| RoomError::Closed)
    }
    fn send_video(&self, cmd: VideoCmd) -> Result<(), RoomError> {
        self.video_tx.send(cmd).map_err(|_| RoomError::Closed)
    }

    /// The room as the API lists it.
    pub fn summary(&self) -> RoomSummary {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        RoomSummary {
            room: self.id.to_string(),
            layout: self.layout(),
            participants: self.participants(),
            links: self.links(),
            active_speaker: self.active_speaker(),
            video_encoders: s.encoders.load(Relaxed),
            video_frames_encoded: s.video_frames_encoded.load(Relaxed),
            video_frames_decoded: s.video_frames_decoded.load(Relaxed),
            dropped_inputs: s.dropped_inputs.load(Relaxed),
            audio_ticks: s.audio_ticks.load(Relaxed),
            audio_tick_lateness_ms: LatenessMs {
                p50: s.audio_lateness.quantile(0.5).as_secs_f64() * 1e3,
                p99: s.audio_lateness.quantile(0.99).as_secs_f64() * 1e3,
            },
            audio_concealed: s.audio_concealed.load(Relaxed),
            audio_encoders: s.audio_encoders.load(Relaxed),
            recording: self.recording_info(),
        }
    }

    /// Stops both media threads and waits for them; finalises a running recording.
    pub fn stop(&self) {
        self.streams.stop_all();
        let _ = self.audio_tx.send(AudioCmd::Stop);
        let _ = self.video_tx.send(VideoCmd::Stop);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
        // The threads dropped their senders: the recorder writes its last fragment.
        let rec = lock(&self.recording).take();
        if let Some(mut rec) = rec {
            rec.join(std::time::Duration::from_secs(10));
            self.recording_finished(&recording_info(&rec, false), &rec.path);
        }
    }
}

/// Why a recording did not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordingStartError {
    #[error("the room is already being recorded")]
    AlreadyRecording,
    #[error("recording layout `{0}` does not exist")]
    Layout(String),
    #[error("{0}")]
    Codec(String),
    #[error("room is closing")]
    Closed,
    #[error(transparent)]
    Recording(#[from] crate::recording::RecordingError),
}

fn recording_info(
    r: &crate::recording::Recording,
    active: bool,
) -> crate::recording::RecordingInfo {
    use std::sync::atomic::Ordering::Relaxed;
    crate::recording::RecordingInfo {
        id: r.id.clone(),
        room: r.room.clone(),
        started_at: crate::recording::utc_rfc3339(r.started_at_unix),
        duration_seconds: r.status.media_ms.load(Relaxed) as f64 / 1000.0,
        size_bytes: r.status.bytes.load(Relaxed),
        active,
        dropped_frames: r.status.dropped_frames.load(Relaxed),
        error: r.error(),
    }
}

/// A media command admitted by `Room::admit_media` has left the queue (called by the
/// loops; saturates at zero for commands fed directly, as benchmarks and tests do).
/// Two rising beeps when someone joins; two falling when someone leaves.
static JOIN_TONE: std::sync::LazyLock<audio::Clip> =
    std::sync::LazyLock::new(|| crate::mixer::tones::beeps(&[(660.0, 90), (880.0, 110)]));
static LEAVE_TONE: std::sync::LazyLock<audio::Clip> =
    std::sync::LazyLock::new(|| crate::mixer::tones::beeps(&[(880.0, 90), (660.0, 110)]));

/// Lowers the calling thread's scheduling priority (nice 5): video work (the video thread,
/// the rayon pool that composes and encodes, the encoder factory) yields to the audio
/// threads and the network, so an overloaded room loses video frames, not audio ticks.
pub fn lower_thread_priority() {
    // SAFETY: setpriority on this thread's own id; a failure only leaves the priority.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, VIDEO_NICE);
    }
}

const VIDEO_NICE: i32 = 5;

/// The process-wide rayon pool with video priority (see [`lower_thread_priority`]);
/// built once, before the first room uses it.
pub fn init_media_pool() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let built = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("media-{i}"))
            .start_handler(|_| lower_thread_priority())
            .build_global();
        if let Err(e) = built {
            tracing::debug!("rayon pool already built: {e}");
        }
    });
}

pub(crate) fn media_dequeued(queued: &AtomicU64) {
    let _ = queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Test hook: this many thread spawns fail as if the OS were out of threads, after
/// [`INJECT_SPAWN_AFTER`] more have succeeded.
pub static INJECT_SPAWN_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Test hook: spawns that still succeed before the injected failures begin.
pub static INJECT_SPAWN_AFTER: AtomicU64 = AtomicU64::new(0);

/// Spawns a named OS thread (rooms, room stoppers).
fn spawn_thread(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, std::io::Error> {
    let dec = |n: u64| n.checked_sub(1);
    if INJECT_SPAWN_FAILURES.load(Ordering::SeqCst) > 0
        && INJECT_SPAWN_AFTER
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, dec)
            .is_err()
        && INJECT_SPAWN_FAILURES
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, dec)
            .is_ok()
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable (injected)",
        ));
    }
    std::thread::Builder::new().name(name).spawn(f)
}

/// Locks a control-plane mutex. The data behind these locks stays consistent even if a
/// holder panicked (single assignments and map edits), so a poisoned lock is used as is
/// instead of failing every later request.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a join was refused before reaching a room.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room is full ({0} participants)")]
    RoomFull(usize),
    #[error("server is full ({0})")]
    ServerFull(String),
    #[error("cannot start the room: {0}")]
    Unavailable(String),
    #[error("the room is locked")]
    Locked,
    #[error("the room has its most watchers ({0})")]
    WatchersFull(usize),
    /// The server is draining (about to be stopped): rooms already running take joins,
    /// no new room starts here.
    #[error("this server is draining and starts no new rooms; try another server")]
    Draining,
}

/// All running rooms.
pub struct Rooms {
    settings: Arc<RoomSettings>,
    /// PINs, locks and tones, per room name (whether or not the room runs).
    pub policies: policy::Policies,
    rooms: Mutex<HashMap<RoomId, Arc<Room>>>,
    /// Participants in all rooms (joins reserve a place first).
    participants: std::sync::atomic::AtomicUsize,
    /// Watchers in all rooms (likewise).
    watchers: std::sync::atomic::AtomicUsize,
    /// Rooms that emptied and are stopping (threads joining, recordings finalising);
    /// `stop_all` waits for them so a shutdown never cuts a recording short.
    stopping: Mutex<Vec<JoinHandle<()>>>,
    /// Held while a participant leaves and its `participantLeft` is emitted, so that two
    /// leaving at once are told in the order they left, both before `roomFinished`.
    leaving: Mutex<()>,
    /// Rooms started/finished, participants joined/left, recordings finished.
    pub events: Arc<server_events::ServerEvents>,
    /// Set once the server drains: when it stops, whatever rooms are still running.
    drain_deadline: Mutex<Option<std::time::Instant>>,
    /// Webhook deliveries (`crate::webhooks`), for `/metrics`.
    pub webhook_stats: Arc<crate::webhooks::WebhookStats>,
    /// The SIP bridge's dial-out, when SIP is on (set once it starts).
    pub dialer: std::sync::OnceLock<Arc<crate::sip::dialout::Dialer>>,
}

impl Rooms {
    pub fn new(settings: RoomSettings) -> Self {
        Self {
            policies: policy::Policies::new(
                &settings.config.rooms,
                settings.config.max_rooms.max(settings.config.rooms.len()) * 4,
            ),
            settings: Arc::new(settings),
            rooms: Mutex::new(HashMap::new()),
            participants: std::sync::atomic::AtomicUsize::new(0),
            watchers: std::sync::atomic::AtomicUsize::new(0),
            stopping: Mutex::new(Vec::new()),
            leaving: Mutex::new(()),
            events: Arc::default(),
            drain_deadline: Mutex::new(None),
            dialer: Default::default(),
            webhook_stats: Arc::default(),
        }
    }

    /// Starts draining: no new room starts here from now on; running rooms go on until
    /// they empty or `deadline` passes (the server's main loop then stops). A second call
    /// keeps the first deadline. Returns the deadline in force.
    pub fn begin_drain(&self, within: std::time::Duration) -> std::time::Instant {
        // Lock order: rooms before drain_deadline (as in `get_or_start`).
        let running = lock(&self.rooms).len();
        let mut d = lock(&self.drain_deadline);
        *d.get_or_insert_with(|| {
            tracing::info!(
                rooms = running,
                "draining: no new rooms; running rooms go on for at most {} s",
                within.as_secs()
            );
            std::time::Instant::now() + within
        })
    }

    /// The drain deadline, once draining.
    pub fn drain_deadline(&self) -> Option<std::time::Instant> {
        *lock(&self.drain_deadline)
    }

    /// Draining and done: no room left, or the deadline passed.
    pub fn drained(&self, now: std::time::Instant) -> bool {
        self.drain_deadline()
            .is_some_and(|d| now >= d || lock(&self.rooms).is_empty())
    }

    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    pub fn get(&self, id: &RoomId) -> Option<Arc<Room>> {
        lock(&self.rooms).get(id).cloned()
    }

    /// Participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.participants.load(Ordering::Relaxed)
    }

    /// Watchers in all rooms.
    pub fn watcher_count(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Adds a watcher to room `id`, starting the room if needed (an audience may arrive
    /// before the speakers). Refused when the room or the server has its most watchers,
    /// or the room is locked.
    pub fn watch(
        &self,
        id: &RoomId,
        name: &str,
    ) -> Result<(Arc<Room>, ParticipantInfo), JoinError> {
        if self.policies.get(id).locked {
            return Err(JoinError::Locked);
        }
        let max = self.settings.config.live.max_watchers_total;
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .watchers
            .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return Err(JoinError::ServerFull(format!("{max} watchers")));
        }
        let result = self.enter(id, |room| room.watch(name));
        match &result {
            Ok((room, info)) => tracing::info!(room = %room.id, id = %info.id, "watcher joined"),
            Err(_) => {
                self.watchers.fetch_sub(1, SeqCst);
            }
        }
        result
    }

    /// Joins `name` to room `id`, starting the room if needed. Refused when the room or
    /// the server is full, or when the room's threads cannot be started (that join only:
    /// nothing is left half-started and later joins try again).
    pub fn join(&self, id: &RoomId, name: &str) -> Result<(Arc<Room>, ParticipantInfo), JoinError> {
        self.join_as(id, name, Joiner::default())
    }

    /// Joins a participant of any kind; a locked room refuses.
    pub fn join_as(
        &self,
        id: &RoomId,
        name: &str,
        joiner: Joiner,
    ) -> Result<(Arc<Room>, ParticipantInfo), JoinError> {
        if self.policies.get(id).locked {
            return Err(JoinError::Locked);
        }
        let c = &self.settings.config;
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .participants
            .fetch_update(SeqCst, SeqCst, |n| {
                (n < c.max_participants_total).then_some(n + 1)
            })
            .is_err()
        {
            return Err(JoinError::ServerFull(format!(
                "{} participants",
                c.max_participants_total
            )));
        }
        let result = self.enter(id, |room| room.join_as(name, joiner));
        if let Ok((room, info)) = &result {
            self.events
                .emit(server_events::ServerEvent::ParticipantJoined {
                    room: room.id.to_string(),
                    participant: info.clone(),
                });
        }
        if result.is_err() {
            self.participants.fetch_sub(1, SeqCst);
        }
        result
    }

    /// Runs `join` on room `id` (started if needed) with its place already reserved.
    fn enter(
        &self,
        id: &RoomId,
        join: impl Fn(&Room) -> Result<ParticipantInfo, RoomError>,
    ) -> Result<(Arc<Room>, ParticipantInfo), JoinError> {
        // The join happens under the rooms lock, so the last participant leaving cannot
        // remove the room between finding it and joining it; if that happened just
        // before, the room is started afresh.
        for _ in 0..3 {
            let (room, started) = self.get_or_start(id)?;
            let joined = {
                let rooms = lock(&self.rooms);
                if !rooms.get(id).is_some_and(|r| Arc::ptr_eq(r, &room)) {
                    continue;
                }
                join(&room)
            };
            return self.finish_join(id, room, started, joined);
        }
        Err(JoinError::Unavailable(
            "the room is restarting; try again".into(),
        ))
    }

    fn finish_join(
        &self,
        id: &RoomId,
        room: Arc<Room>,
        started: bool,
        joined: Result<ParticipantInfo, RoomError>,
    ) -> Result<(Arc<Room>, ParticipantInfo), JoinError> {
        match joined {
            Ok(info) => {
                if started && self.settings.config.recording.auto {
                    if let Err(e) = room.start_recording() {
                        tracing::error!(room = %id, "automatic recording did not start: {e}");
                    }
                }
                Ok((room, info))
            }
            Err(e) => {
                if started {
                    self.remove_if_empty(&room);
                }
                Err(match e {
                    RoomError::Full(n) => JoinError::RoomFull(n),
                    RoomError::Locked => JoinError::Locked,
                    RoomError::WatchersFull(n) => JoinError::WatchersFull(n),
                    other => JoinError::Unavailable(other.to_string()),
                })
            }
        }
    }

    /// The running room `id`, or a new one (threads started without holding the rooms
    /// lock; if two joins race to create it, one room wins and the other is stopped).
    fn get_or_start(&self, id: &RoomId) -> Result<(Arc<Room>, bool), JoinError> {
        let max_rooms = self.settings.config.max_rooms;
        {
            let rooms = lock(&self.rooms);
            if let Some(r) = rooms.get(id) {
                return Ok((r.clone(), false));
            }
            if self.drain_deadline().is_some() {
                return Err(JoinError::Draining);
            }
            if rooms.len() >= max_rooms {
                return Err(JoinError::ServerFull(format!("{max_rooms} rooms")));
            }
        }
        let room = Room::start(id.clone(), self.settings.clone()).map_err(|e| {
            tracing::error!(room = %id, "cannot start room threads: {e}");
            JoinError::Unavailable(e.to_string())
        })?;
        let mut rooms = lock(&self.rooms);
        if let Some(existing) = rooms.get(id).cloned() {
            drop(rooms);
            self.stop_in_background(room);
            return Ok((existing, false));
        }
        if rooms.len() >= max_rooms {
            drop(rooms);
            self.stop_in_background(room);
            return Err(JoinError::ServerFull(format!("{max_rooms} rooms")));
        }
        let policy = self.policies.get(id);
        room.set_tones(policy.tones);
        let (floor, switch) = policy.floor_rules(&self.settings.config.presentation);
        room.set_floor_rules(floor, switch);
        let c = &self.settings.config;
        let audience = c
            .rooms
            .iter()
            .find(|r| r.name == id.as_str())
            .and_then(|r| r.audience_layout.as_deref())
            .unwrap_or(&c.live.layout);
        if let Some(spec) = self.settings.layouts.get(audience) {
            let _ = room.send_video(VideoCmd::AudienceLayout(spec.clone()));
        }
        let _ = room.server.set(self.events.clone());
        rooms.insert(id.clone(), room.clone());
        self.events.emit(server_events::ServerEvent::RoomStarted {
            room: id.to_string(),
        });
        Ok((room, true))
    }

    /// Changes a room's policy (running or not); a running room applies it at once.
    pub fn patch_policy(
        &self,
        id: &RoomId,
        patch: &policy::PolicyPatch,
    ) -> Result<policy::RoomPolicy, policy::PolicyError> {
        let p = self.policies.patch(id, patch)?;
        if let Some(room) = self.get(id) {
            room.set_tones(p.tones);
            let (floor, switch) = p.floor_rules(&self.settings.config.presentation);
            room.set_floor_rules(floor, switch);
            let _ = room
                .events
                .send(RoomEvent::RoomPolicy { policy: p.clone() });
        }
        Ok(p)
    }

    pub fn list(&self) -> Vec<Arc<Room>> {
        lock(&self.rooms).values().cloned().collect()
    }

    /// Whether a room could be started now: the OS still gives threads. (`/healthz`.)
    pub fn can_start_rooms(&self) -> bool {
        spawn_thread("healthz-probe".into(), || {}).is_ok_and(|h| h.join().is_ok())
    }

    /// Removes `id` from its room and stops the room when it is empty.
    pub fn leave(&self, room: &Arc<Room>, id: ParticipantId) {
        let order = lock(&self.leaving);
        let Some(left) = room.leave(id) else { return };
        if left.watcher {
            self.watchers.fetch_sub(1, Ordering::SeqCst);
            tracing::info!(room = %room.id, %id, "watcher left");
        } else {
            self.participants.fetch_sub(1, Ordering::SeqCst);
            self.events
                .emit(server_events::ServerEvent::ParticipantLeft {
                    room: room.id.to_string(),
                    participant_id: id,
                });
        }
        drop(order);
        if left.empty {
            self.remove_if_empty(room);
        }
    }

    fn remove_if_empty(&self, room: &Arc<Room>) {
        let removed = {
            let mut rooms = lock(&self.rooms);
            // Only if still empty: someone may have joined meanwhile.
            if room.occupancy() == 0 && rooms.get(&room.id).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.id)
            } else {
                None
            }
        };
        if let Some(r) = removed {
            self.events.emit(server_events::ServerEvent::RoomFinished {
                room: r.id.to_string(),
            });
            self.stop_in_background(r);
        }
    }

    /// Joining threads blocks; do it off the async runtime. If no thread can be had,
    /// the room is stopped here (blocking this caller briefly) rather than leaked.
    fn stop_in_background(&self, room: Arc<Room>) {
        let r = room.clone();
        let stop = move || {
            r.stop();
            drop(r);
            release_freed_memory();
            // Sessions may still free their state after this.
            note_memory_freed();
        };
        match spawn_thread(format!("stop-{}", room.id), stop) {
            Ok(handle) => {
                let mut stopping = lock(&self.stopping);
                stopping.retain(|h| !h.is_finished());
                stopping.push(handle);
            }
            Err(_) => room.stop(),
        }
    }

    /// Stops every room (shutdown).
    pub fn stop_all(&self) {
        let rooms: Vec<_> = lock(&self.rooms).drain().map(|(_, r)| r).collect();
        for r in rooms {
            r.stop();
            self.events.emit(server_events::ServerEvent::RoomFinished {
                room: r.id.to_string(),
            });
        }
        let stopping = std::mem::take(&mut *lock(&self.stopping));
        for h in stopping {
            let _ = h.join();
        }
    }
}

/// Hands the memory a stopped room freed back to the OS. glibc keeps freed memory in its
/// per-thread arenas, so without this a server's RSS stays at its busiest moment's figure
/// for ever (the churn soak measured 38 → 85 → 141 MB at successive empty points, tracking
/// peak concurrency, not joins). Called on the room's stop thread, never on a media thread
/// or the async runtime; it costs about a millisecond. Sessions ending call it too (their
/// WebRTC state is freed after the room has stopped).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes glibc serve large blocks (pictures, encoder state: 256 KiB and up) from their
/// own mappings, returned to the OS when freed. By default glibc raises this threshold
/// after the first such block is freed and then carves later ones out of its heaps, where
/// they fragment: the churn soak's RSS at empty points wandered between 16.7 and 22.4 MB
/// with the default. Called once at start-up, before any thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Set when sessions or rooms have freed memory since the last trim.
static MEMORY_FREED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that a session ended (its WebRTC state freed, possibly after its room stopped):
/// the housekeeping task ([`trim_if_freed`], every few seconds) hands the memory back.
pub fn note_memory_freed() {
    MEMORY_FREED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// [`release_freed_memory`] if anything was freed since the last call. Blocking: run it
/// on the blocking pool.
pub fn trim_if_freed() {
    if MEMORY_FREED.swap(false, std::sync::atomic::Ordering::Relaxed) {
        release_freed_memory();
    }
}
