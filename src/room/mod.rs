//! Rooms: the registry (name → running room), and each room's two media threads.
//!
//! A room owns an **audio thread** (20 ms mixer ticks: jitter buffers, Opus decode/PLC,
//! N-1 mix, limiter, Opus encode, active speaker) and a **video thread** (ticks at the
//! output frame rate: frame assembly, decode, tile rendering, per-viewer composition and
//! H.264 encode, parallelised with rayon). Network tasks talk to them only through bounded
//! channels (`try_send`: a full queue drops and counts, it never blocks the network); the
//! threads never await and never lock in their loops. Control-plane state (roster, layout
//! name) lives behind a std `Mutex` that the media threads never touch.

pub mod audio;
pub mod clock;
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
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
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
}

/// A participant as the control plane and clients see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub audio_muted: bool,
    pub video_muted: bool,
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
}

/// A request from the media threads to a participant's network side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Ask the sender for a keyframe (RTCP PLI).
    KeyframeRequest,
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

/// Counters a room keeps for logs and tests (atomics written by the media threads).
#[derive(Debug, Default)]
pub struct RoomStats {
    pub audio_ticks: AtomicU64,
    pub video_ticks: AtomicU64,
    pub dropped_inputs: AtomicU64,
    pub video_frames_decoded: AtomicU64,
    pub video_frames_encoded: AtomicU64,
    /// Video encoders running now (= distinct pictures).
    pub encoders: AtomicU64,
    /// Opus encodes in the last audio tick (talkers + one shared mix).
    pub audio_encoders: AtomicU64,
    /// Opus decodes in the last audio tick.
    pub audio_decoders: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    /// CPU time per phase, all threads.
    pub cpu: crate::metrics::PhaseCpu,
    pub video_lateness: crate::metrics::Lateness,
    pub audio_lateness: crate::metrics::Lateness,
}

/// Commands and media for the audio thread.
pub enum AudioCmd {
    Join {
        id: ParticipantId,
    },
    Attach {
        id: ParticipantId,
        sink: Option<RtpSink>,
    },
    Leave {
        id: ParticipantId,
    },
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
    },
    Leave {
        id: ParticipantId,
    },
    Mute {
        id: ParticipantId,
        muted: bool,
    },
    Layout(LayoutSpec),
    Packet {
        id: ParticipantId,
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
    audio_tx: SyncSender<AudioCmd>,
    video_tx: SyncSender<VideoCmd>,
    events: broadcast::Sender<RoomEvent>,
    roster: Mutex<Vec<ParticipantInfo>>,
    layout: Mutex<String>,
    /// Active speaker, written by the audio thread, read by the video thread (0 = none).
    speaker: Arc<AtomicU64>,
    pub stats: Arc<RoomStats>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The running recording, if any (control plane only).
    recording: Mutex<Option<crate::recording::Recording>>,
}

impl Room {
    pub fn start(id: RoomId, settings: Arc<RoomSettings>) -> Arc<Self> {
        let (audio_tx, audio_rx) = sync_channel(AUDIO_QUEUE);
        let (video_tx, video_rx) = sync_channel(VIDEO_QUEUE);
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
        let v = video::VideoLoop::new(&settings.config, layout, speaker.clone(), stats.clone());
        let name = id.to_string();
        let threads = vec![
            std::thread::Builder::new()
                .name(format!("audio-{name}"))
                .spawn(move || a.run(audio_rx))
                .expect("spawning a thread only fails when the OS is out of resources"),
            std::thread::Builder::new()
                .name(format!("video-{name}"))
                .spawn(move || v.run(video_rx))
                .expect("spawning a thread only fails when the OS is out of resources"),
        ];
        Arc::new(Self {
            id,
            settings,
            audio_tx,
            video_tx,
            events,
            roster: Mutex::new(Vec::new()),
            layout: Mutex::new(layout_name),
            speaker,
            stats,
            threads: Mutex::new(threads),
            recording: Mutex::new(None),
        })
    }

    /// Starts recording this room (composed picture + full mix) into the recording
    /// directory. Errors (unwritable directory, disk full) come back at once.
    pub fn start_recording(&self) -> Result<crate::recording::RecordingInfo, RecordingStartError> {
        let mut slot = self.recording.lock().expect("recording lock poisoned");
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
        let info = recording_info(&rec, true);
        *slot = Some(rec);
        let _ = self
            .events
            .send(RoomEvent::RecordingChanged { recording: true });
        Ok(info)
    }

    /// Stops the recording and waits (briefly) for its file to be finalised.
    pub fn stop_recording(&self) -> Option<crate::recording::RecordingInfo> {
        let mut rec = self
            .recording
            .lock()
            .expect("recording lock poisoned")
            .take()?;
        let _ = self.send_video(VideoCmd::StopRecording);
        let _ = self.send_audio(AudioCmd::StopRecording);
        rec.join(std::time::Duration::from_secs(10));
        let _ = self
            .events
            .send(RoomEvent::RecordingChanged { recording: false });
        Some(recording_info(&rec, false))
    }

    pub fn is_recording(&self) -> bool {
        self.recording
            .lock()
            .expect("recording lock poisoned")
            .is_some()
    }

    /// The running recording's live info.
    pub fn recording_info(&self) -> Option<crate::recording::RecordingInfo> {
        self.recording
            .lock()
            .expect("recording lock poisoned")
            .as_ref()
            .map(|r| recording_info(r, true))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.events.subscribe()
    }

    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.roster.lock().expect("roster lock poisoned").clone()
    }

    pub fn layout(&self) -> String {
        self.layout.lock().expect("layout lock poisoned").clone()
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

    /// Adds a participant (before its media is connected).
    pub fn join(&self, name: &str) -> Result<ParticipantInfo, RoomError> {
        let info = {
            let mut roster = self.roster.lock().expect("roster lock poisoned");
            let max = self.settings.config.max_participants;
            if roster.len() >= max {
                return Err(RoomError::Full(max));
            }
            let info = ParticipantInfo {
                id: ParticipantId::next(),
                name: name.to_owned(),
                audio_muted: false,
                video_muted: false,
            };
            roster.push(info.clone());
            info
        };
        self.send_audio(AudioCmd::Join { id: info.id })?;
        self.send_video(VideoCmd::Join {
            id: info.id,
            name: info.name.clone(),
        })?;
        let _ = self.events.send(RoomEvent::ParticipantJoined {
            participant: info.clone(),
        });
        Ok(info)
    }

    /// Connects a participant's outputs (after negotiation).
    pub fn attach(&self, id: ParticipantId, a: Attachment) -> Result<(), RoomError> {
        self.send_audio(AudioCmd::Attach {
            id,
            sink: a.audio_out,
        })?;
        self.send_video(VideoCmd::Attach {
            id,
            payload_types: a.video_payload_types,
            sink: a.video_out,
            upstream: a.upstream,
        })
    }

    /// Removes a participant; returns whether the room is now empty.
    pub fn leave(&self, id: ParticipantId) -> bool {
        let (found, empty) = {
            let mut roster = self.roster.lock().expect("roster lock poisoned");
            let before = roster.len();
            roster.retain(|p| p.id != id);
            (roster.len() != before, roster.is_empty())
        };
        if found {
            let _ = self.send_audio(AudioCmd::Leave { id });
            let _ = self.send_video(VideoCmd::Leave { id });
            let _ = self
                .events
                .send(RoomEvent::ParticipantLeft { participant_id: id });
        }
        empty
    }

    pub fn set_muted(
        &self,
        id: ParticipantId,
        audio: Option<bool>,
        video: Option<bool>,
    ) -> Result<(), RoomError> {
        let info = {
            let mut roster = self.roster.lock().expect("roster lock poisoned");
            let p = roster
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or(RoomError::NoSuchParticipant)?;
            if let Some(a) = audio {
                p.audio_muted = a;
            }
            if let Some(v) = video {
                p.video_muted = v;
            }
            p.clone()
        };
        if let Some(a) = audio {
            self.send_audio(AudioCmd::Mute { id, muted: a })?;
        }
        if let Some(v) = video {
            self.send_video(VideoCmd::Mute { id, muted: v })?;
        }
        let _ = self
            .events
            .send(RoomEvent::ParticipantUpdated { participant: info });
        Ok(())
    }

    /// Switches the room's layout; the video thread applies it at its next tick.
    pub fn set_layout(&self, name: &str) -> Result<(), RoomError> {
        let spec = self
            .settings
            .layouts
            .get(name)
            .cloned()
            .ok_or_else(|| RoomError::UnknownLayout(name.to_owned()))?;
        self.send_video(VideoCmd::Layout(spec))?;
        *self.layout.lock().expect("layout lock poisoned") = name.to_owned();
        let _ = self.events.send(RoomEvent::LayoutChanged {
            layout: name.to_owned(),
        });
        Ok(())
    }

    /// An incoming audio packet (from a network task; never blocks).
    pub fn audio_packet(&self, id: ParticipantId, seq: u16, payload: Bytes, level: Option<u8>) {
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
        self.try_video(VideoCmd::Packet {
            id,
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

    fn try_audio(&self, cmd: AudioCmd) {
        if let Err(TrySendError::Full(_)) = self.audio_tx.try_send(cmd) {
            self.stats.dropped_inputs.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn try_video(&self, cmd: VideoCmd) {
        if let Err(TrySendError::Full(_)) = self.video_tx.try_send(cmd) {
            self.stats.dropped_inputs.fetch_add(1, Ordering::Relaxed);
        }
    }

    // Control commands must not be lost to a full media queue: they wait for room.
    fn send_audio(&self, cmd: AudioCmd) -> Result<(), RoomError> {
        self.audio_tx.send(cmd).map_err(|_| RoomError::Closed)
    }
    fn send_video(&self, cmd: VideoCmd) -> Result<(), RoomError> {
        self.video_tx.send(cmd).map_err(|_| RoomError::Closed)
    }

    /// Stops both media threads and waits for them; finalises a running recording.
    pub fn stop(&self) {
        let _ = self.audio_tx.send(AudioCmd::Stop);
        let _ = self.video_tx.send(VideoCmd::Stop);
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock poisoned"));
        for t in threads {
            let _ = t.join();
        }
        // The threads dropped their senders: the recorder writes its last fragment.
        if let Some(mut rec) = self
            .recording
            .lock()
            .expect("recording lock poisoned")
            .take()
        {
            rec.join(std::time::Duration::from_secs(10));
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

/// All running rooms.
pub struct Rooms {
    settings: Arc<RoomSettings>,
    rooms: Mutex<HashMap<RoomId, Arc<Room>>>,
    /// Rooms that emptied and are stopping (threads joining, recordings finalising);
    /// `stop_all` waits for them so a shutdown never cuts a recording short.
    stopping: Mutex<Vec<JoinHandle<()>>>,
}

impl Rooms {
    pub fn new(settings: RoomSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            rooms: Mutex::new(HashMap::new()),
            stopping: Mutex::new(Vec::new()),
        }
    }

    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    pub fn get(&self, id: &RoomId) -> Option<Arc<Room>> {
        self.rooms
            .lock()
            .expect("rooms lock poisoned")
            .get(id)
            .cloned()
    }

    pub fn get_or_start(&self, id: &RoomId) -> Arc<Room> {
        let mut rooms = self.rooms.lock().expect("rooms lock poisoned");
        let mut started = false;
        let room = rooms
            .entry(id.clone())
            .or_insert_with(|| {
                started = true;
                Room::start(id.clone(), self.settings.clone())
            })
            .clone();
        drop(rooms);
        if started && self.settings.config.recording.auto {
            if let Err(e) = room.start_recording() {
                tracing::error!(room = %id, "automatic recording did not start: {e}");
            }
        }
        room
    }

    pub fn list(&self) -> Vec<Arc<Room>> {
        self.rooms
            .lock()
            .expect("rooms lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Removes `id` from its room and stops the room when it is empty.
    pub fn leave(&self, room: &Arc<Room>, id: ParticipantId) {
        if room.leave(id) {
            let removed = {
                let mut rooms = self.rooms.lock().expect("rooms lock poisoned");
                // Only if still empty: someone may have joined meanwhile.
                if room.participants().is_empty()
                    && rooms.get(&room.id).is_some_and(|r| Arc::ptr_eq(r, room))
                {
                    rooms.remove(&room.id)
                } else {
                    None
                }
            };
            if let Some(r) = removed {
                // Joining threads blocks; do it off the async runtime.
                let handle = std::thread::spawn(move || r.stop());
                let mut stopping = self.stopping.lock().expect("stopping lock poisoned");
                stopping.retain(|h| !h.is_finished());
                stopping.push(handle);
            }
        }
    }

    /// Stops every room (shutdown).
    pub fn stop_all(&self) {
        let rooms: Vec<_> = self
            .rooms
            .lock()
            .expect("rooms lock poisoned")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in rooms {
            r.stop();
        }
        let stopping = std::mem::take(&mut *self.stopping.lock().expect("stopping lock poisoned"));
        for h in stopping {
            let _ = h.join();
        }
    }
}
