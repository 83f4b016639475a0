//! Live output: the room's audience picture and full mix, encoded once, to every live
//! destination at once — HLS for players ([`hls`]) and RTMP pushes to platforms
//! ([`rtmp`]). The video thread treats the live output as one more viewer of the audience
//! view (so it shares the encoder of watchers on the same rung: no second composite, no
//! second encode) whose frames go to a [`VideoTap`] instead of RTP; it asks that encoder
//! for an IDR every [`SEGMENT`] so segments and late joiners can start. The audio thread
//! hands the limited full mix (PCM) to the same queue. The **live thread** ([`Live`])
//! does the rest off the media threads: Opus for HLS (fMP4 segments cut at the IDRs by
//! the recorder's writer, [`crate::recording::fmp4`]), AAC for RTMP (FDK AAC, only while
//! a stream runs), FLV tags to every stream. The queue is bounded: when the live thread
//! falls behind, frames are dropped and counted (video resumes at the next IDR); the
//! room never waits.

pub mod flv;
pub mod hls;
pub mod rtmp;

use crate::codec::pack::SharedBuf;
use crate::media::SAMPLES_PER_TICK;
use crate::recording::fmp4::{self, Fmp4Writer};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// HLS segment length, and how often the live encoder sends an IDR.
pub const SEGMENT: Duration = Duration::from_secs(2);
/// HLS segments kept (a 12 s window).
const WINDOW: usize = 6;
/// Frames queued between the media threads and the live thread (~4 s).
const QUEUE: usize = 512;

/// An encoded frame or a tick of mix for the live thread; `at` is the frame's scheduled
/// time on the room's media clock.
pub enum LiveMsg {
    Video {
        at: Instant,
        data: Bytes,
    },
    /// 20 ms of the limited full mix, 48 kHz mono i16 little-endian.
    Audio {
        at: Instant,
        pcm: Bytes,
    },
}

/// The media threads' side of the queue.
#[derive(Clone)]
pub struct LiveSender {
    tx: SyncSender<LiveMsg>,
    dropped: Arc<AtomicU64>,
}

impl LiveSender {
    /// Queues without waiting; false (counted) when the live thread is behind.
    pub fn send(&self, msg: LiveMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The live output as a viewer in the video thread: where its encoder's frames go.
pub struct VideoTap {
    tx: LiveSender,
    buf: SharedBuf,
    /// A frame was dropped: only an IDR may follow.
    awaiting_idr: bool,
    last_idr: Option<Instant>,
}

impl VideoTap {
    pub fn new(tx: LiveSender) -> Self {
        Self {
            tx,
            buf: SharedBuf::default(),
            awaiting_idr: true,
            last_idr: None,
        }
    }

    /// Hands an access unit (Annex B) to the live thread.
    pub fn send(&mut self, at: Instant, au: &[u8], idr: bool, now: Instant) {
        if idr {
            self.last_idr = Some(now);
        }
        if self.awaiting_idr && !idr {
            return;
        }
        let data = self.buf.share(au);
        self.awaiting_idr = !self.tx.send(LiveMsg::Video { at, data });
    }

    /// Its encoder owes it an IDR: a segment's worth since the last, or a frame was lost.
    pub fn wants_idr(&self, now: Instant) -> bool {
        self.last_idr
            .is_none_or(|t| now.duration_since(t) >= SEGMENT - Duration::from_millis(10))
            || self.awaiting_idr
    }
}

/// What the HTTP side reads of a room's HLS output.
pub struct HlsOutput {
    pub playlist: Mutex<hls::Playlist>,
    /// When a player last asked for anything (the output stops when nobody has for a while).
    pub last_request: Mutex<Instant>,
    /// Signalled whenever a segment is added (a first request waits for one).
    pub updated: tokio::sync::Notify,
}

/// A room's running live output: its thread, the HLS segments and the RTMP streams.
pub struct Live {
    pub tx: LiveSender,
    pub hls: Arc<HlsOutput>,
    pub streams: Arc<rtmp::Streams>,
    pub width: u32,
    pub height: u32,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts the live thread for a `width`x`height` picture. `opus` encodes the HLS
    /// audio; `t0` is the room's media clock origin for timestamps.
    pub fn start(
        room: &str,
        width: u32,
        height: u32,
        opus: crate::codec::audio::OpusEncoder,
        streams: Arc<rtmp::Streams>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let tx = LiveSender {
            tx,
            dropped: Arc::default(),
        };
        let hls = Arc::new(HlsOutput {
            playlist: Mutex::new(hls::Playlist::new(WINDOW, SEGMENT.as_secs() as u32)),
            last_request: Mutex::new(Instant::now()),
            updated: tokio::sync::Notify::new(),
        });
        let mut opus = opus;
        let pre_skip = opus.lookahead();
        let worker = Worker {
            mux: Fmp4Writer::new(width, height, pre_skip).with_fragments(
                SEGMENT.as_millis() as u64 * 90 - 1500,
                2 * SEGMENT.as_millis() as u64 * 90,
            ),
            opus,
            hls: hls.clone(),
            streams: streams.clone(),
            t0: None,
            pcm: Vec::with_capacity(2048),
            packet: vec![0; 1500],
            aac: None,
            aac_out: vec![0; 8192],
            avc: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("live-{room}"))
            .spawn(move || worker.run(rx))?;
        Ok(Self {
            tx,
            hls,
            streams,
            width,
            height,
            thread: Some(thread),
        })
    }

    /// Frames dropped because the live thread was behind.
    pub fn dropped(&self) -> u64 {
        self.tx.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // The media threads dropped their senders before this (the room stopped them).
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// The live thread's state.
struct Worker {
    mux: Fmp4Writer,
    opus: crate::codec::audio::OpusEncoder,
    hls: Arc<HlsOutput>,
    streams: Arc<rtmp::Streams>,
    /// The media clock's origin: the first message's time.
    t0: Option<Instant>,
    /// Mix samples waiting for a whole AAC frame (1024).
    pcm: Vec<i16>,
    packet: Vec<u8>,
    /// The AAC encoder and its AudioSpecificConfig, while any RTMP stream exists.
    /// (The FLV sequence-header tag, made once when the encoder starts.)
    aac: Option<(fdk_aac::enc::Encoder, Bytes)>,
    aac_out: Vec<u8>,
    /// The AVC decoder configuration of the stream (from its first IDR).
    avc: Option<Bytes>,
}

impl Worker {
    fn run(mut self, rx: Receiver<LiveMsg>) {
        let mut tick = [0i16; SAMPLES_PER_TICK];
        while let Ok(msg) = rx.recv() {
            match msg {
                LiveMsg::Video { at, data } => self.video(at, &data),
                LiveMsg::Audio { at, pcm } => {
                    for (s, b) in tick.iter_mut().zip(pcm.chunks_exact(2)) {
                        *s = i16::from_le_bytes([b[0], b[1]]);
                    }
                    self.audio(at, &tick);
                }
            }
        }
        tracing::debug!("live output finished");
    }

    fn ms(&mut self, at: Instant) -> u64 {
        let t0 = *self.t0.get_or_insert(at);
        at.saturating_duration_since(t0).as_millis() as u64
    }

    fn video(&mut self, at: Instant, au: &[u8]) {
        let ms = self.ms(at);
        let (nalus, sps, pps, idr) = fmp4::annexb_to_sample(au);
        if let (Some(sps), Some(pps)) = (&sps, &pps) {
            let config = flv::avc_config(sps, pps);
            if self.avc.as_deref() != Some(&config[..]) {
                self.avc = Some(Bytes::from(config));
            }
        }
        // HLS: the writer cuts a segment at the first IDR a segment after the last cut.
        let was_init = self.mux.initialized();
        let start = self.mux.fragment_start();
        match self.mux.push_video(ms * 90, au) {
            Ok(out) if out.is_empty() => {}
            Ok(out) => {
                let mut p = self.hls.playlist.lock().unwrap_or_else(|e| e.into_inner());
                if !was_init {
                    p.codecs = "avc1,opus".into();
                    p.set_init(Bytes::from(out));
                } else {
                    let secs = (self.mux.fragment_start() - start) as f64 / 90_000.0;
                    p.push(Bytes::from(out), secs);
                    drop(p);
                    self.hls.updated.notify_waiters();
                }
            }
            Err(e) => tracing::warn!("live HLS: {e}"),
        }
        // RTMP: every stream gets the same tag.
        if !nalus.is_empty() {
            let tag = Bytes::from(flv::video_frame(&nalus, idr));
            self.streams.video(ms, tag, idr, self.avc.as_ref());
        }
    }

    fn audio(&mut self, at: Instant, pcm: &[i16]) {
        let ms = self.ms(at);
        if let Ok(len) = self.opus.encode(pcm, &mut self.packet) {
            self.mux.push_audio(ms * 48, &self.packet[..len]);
        }
        if !self.streams.any() {
            self.aac = None;
            self.pcm.clear();
            return;
        }
        if self.aac.is_none() {
            match aac_encoder() {
                Ok(e) => self.aac = Some(e),
                Err(e) => {
                    tracing::error!("AAC encoder: {e}");
                    return;
                }
            }
        }
        self.pcm.extend_from_slice(pcm);
        while self.pcm.len() >= 1024 {
            let Some((enc, header)) = self.aac.as_ref() else {
                return;
            };
            // The first sample of this frame, in ms on the media clock.
            let behind = (self.pcm.len() as u64 * 1000) / 48_000;
            let frame_ms = (ms + 20).saturating_sub(behind);
            match enc.encode(&self.pcm[..1024], &mut self.aac_out) {
                Ok(info) => {
                    let consumed = info.input_consumed.clamp(1, 1024);
                    self.pcm.drain(..consumed);
                    if info.output_size > 0 {
                        let tag = Bytes::from(flv::audio_frame(&self.aac_out[..info.output_size]));
                        self.streams.audio(frame_ms, tag, header.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!("AAC encode: {e}");
                    self.pcm.clear();
                }
            }
        }
    }
}

/// AAC-LC, 48 kHz mono, 128 kbit/s CBR, raw frames; and the FLV sequence header that
/// carries its AudioSpecificConfig.
fn aac_encoder() -> Result<(fdk_aac::enc::Encoder, Bytes), String> {
    use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
    let enc = Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(128_000),
        sample_rate: 48_000,
        transport: Transport::Raw,
        channels: ChannelMode::Mono,
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .map_err(|e| e.to_string())?;
    let info = enc.info().map_err(|e| e.to_string())?;
    let n = (info.confSize as usize).min(info.confBuf.len());
    let header = flv::audio_sequence_header(&info.confBuf[..n]);
    Ok((enc, Bytes::from(header)))
}
