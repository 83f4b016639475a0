//! `tessera bench room`: runs N synthetic participants through the very decode → mix /
//! composite → encode code the server uses (`room::video::VideoLoop`,
//! `room::audio::AudioLoop`), without a network. Inputs are pre-encoded H.264 (camera-like
//! synthetic clips, or files) and Opus tones with RFC 6464 levels, packetized like RTP.
//!
//! Two modes: **fast** drives both loops tick by tick as fast as the machine allows (the
//! audio loop on its own thread beside the video loop, as in a room) and reports the
//! realtime factor; **paced** (`--paced`) runs a real `Room` (its own audio and
//! video threads on their absolute-deadline clocks) fed in real time, and reports tick
//! lateness. Both report CPU per media second, the share per phase, running encoders and
//! the overhead ratio = total CPU / (decode + encode CPU).

pub mod encoder;
pub mod synth;

use crate::codec::VideoCodec;
use crate::config::Config;
use crate::ids::ParticipantId;
use crate::layout::LayoutSet;
use crate::metrics::process_cpu_ns;
use crate::room::audio::AudioLoop;
use crate::room::video::VideoLoop;
use crate::room::{Attachment, AudioCmd, Room, RoomSettings, RoomStats, RtpSink, VideoCmd};
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// Arguments of `tessera bench room`.
#[derive(clap::Args, Debug, Clone)]
pub struct RoomBenchArgs {
    #[arg(long, default_value_t = 9)]
    pub participants: usize,
    /// Synthetic input size (ignored with --inputs).
    #[arg(long, default_value = "640x360")]
    pub input: String,
    /// Synthetic inputs' bitrate, e.g. 600k; `asked`: what the server asks a sender of
    /// `--input`'s size for (`sendLimit`: 0.1 bit per pixel at 30 fps).
    #[arg(long, default_value = "600k")]
    pub input_bitrate: String,
    /// Output canvas size.
    #[arg(long, default_value = "1280x720")]
    pub output: String,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Output video bitrate, e.g. 1200k or 2M.
    #[arg(long, default_value = "1200k")]
    pub bitrate: String,
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, default_value = "grid")]
    pub layout: String,
    /// Audio only (no video decode/composite/encode).
    #[arg(long)]
    pub audio_only: bool,
    /// Most talkers mixed at once (the server's `[audio] top_k` default).
    #[arg(long, default_value_t = 8)]
    pub top_k: usize,
    /// Run the real room threads in real time and report tick lateness.
    #[arg(long)]
    pub paced: bool,
    /// H.264 inputs (Annex B .h264, or .mp4 through ffmpeg), assigned round-robin.
    #[arg(long, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Write the synthetic clips as DIR/input-N.h264 (for feeding a peer) and exit.
    #[arg(long)]
    pub write_inputs: Option<PathBuf>,
    /// Viewers per rung of the ladder, best first (e.g. `3,3,3` for nine viewers). The
    /// ladder is the server's default under --output/--bitrate/--fps; viewers are held on
    /// their rung by a size cap, as a client asking for a smaller picture would be.
    #[arg(long, value_delimiter = ',')]
    pub rungs: Vec<usize>,
    /// How many viewers (the last ones) are sent VP8 instead of H.264, as viewers whose
    /// offer has no H.264 (Firefox without OpenH264) are: e.g. `--vp8 3` with 9
    /// participants is 6 H.264 + 3 VP8 viewers.
    #[arg(long, default_value_t = 0)]
    pub vp8: usize,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Encode tick t-1's pictures while tick t decodes (`[video] pipeline = true`), to
    /// measure what pipelining gives.
    #[arg(long)]
    pub pipeline: bool,
    /// Participant 0 also presents a 1280x720 screen: one `static` slide or a `scroll`ing
    /// one (use with `--layout presentation`).
    #[arg(long)]
    pub present: Option<synth::Screen>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--{0}: `{1}` is not WIDTHxHEIGHT with even sizes")]
    Size(&'static str, String),
    #[error("--bitrate: `{0}` is not a bitrate like 1200k or 2M")]
    Bitrate(String),
    #[error("unknown layout `{0}`")]
    Layout(String),
    #[error("--rungs: {0}")]
    Rungs(String),
    #[error("{0}")]
    Input(#[from] synth::InputError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("codec: {0}")]
    Codec(#[from] crate::codec::CodecError),
}

fn parse_size(flag: &'static str, s: &str) -> Result<(u32, u32), BenchError> {
    let bad = || BenchError::Size(flag, s.to_owned());
    let (w, h) = crate::media::parse_size(s).ok_or_else(bad)?;
    if w < 16 || h < 16 || w % 2 != 0 || h % 2 != 0 {
        return Err(bad());
    }
    Ok((w, h))
}

fn parse_bitrate(s: &str) -> Result<u32, BenchError> {
    let bad = || BenchError::Bitrate(s.to_owned());
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = match t.strip_suffix('k') {
        Some(n) => (n, 1_000.0),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 1_000_000.0),
            None => (t.as_str(), 1.0),
        },
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    Ok((v * mul) as u32)
}

#[derive(Debug, Serialize)]
pub struct PhaseShare {
    pub decode: f64,
    pub composite: f64,
    pub encode: f64,
    pub mix: f64,
    pub other: f64,
}

#[derive(Debug, Serialize)]
pub struct Lateness {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The summary, printed as a table or JSON.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub mode: &'static str,
    pub participants: usize,
    pub input: String,
    pub output: String,
    pub fps: u32,
    pub bitrate_bps: u32,
    pub layout: String,
    pub audio_only: bool,
    pub top_k: usize,
    pub media_seconds: f64,
    pub wall_seconds: f64,
    pub realtime_factor: f64,
    pub cpu_seconds_per_media_second: f64,
    pub cpu_share: PhaseShare,
    pub overhead_ratio: f64,
    pub video_encoders: u64,
    pub audio_encoders: u64,
    pub audio_decoders: u64,
    /// Audio decode + mix + encode CPU per 20 ms tick (audio-only runs).
    pub audio_cpu_ms_per_tick: Option<f64>,
    pub video_tick_lateness: Option<Lateness>,
    pub audio_tick_lateness: Option<Lateness>,
    pub video_frames_encoded: u64,
    /// Paced mode: what the room's video thread delivered over the measured seconds.
    pub video_pacing: Option<Pacing>,
    /// Times a viewer waited a tick for a ready encoder (the pool had none).
    pub encoder_waits: u64,
    /// Viewers and encoders per rung (best first), with the rungs' formats.
    pub rungs: Vec<RungReport>,
    /// Viewers sent (H.264, VP8).
    pub viewers_per_codec: (usize, usize),
    /// `--present`: what participant 0's screen does.
    pub present: Option<synth::Screen>,
    /// Encoders running per codec at the end, (H.264, VP8) (fast mode).
    pub encoders_per_codec: Option<(usize, usize)>,
    pub threads: usize,
}

/// What a paced run's video thread delivered: a paced run always takes its wall time, so
/// its "realtime factor" says nothing; these say whether it kept up.
#[derive(Debug, Serialize)]
pub struct Pacing {
    /// Video ticks done (each one a frame for every picture due).
    pub ticks: u64,
    /// Ticks the clock skipped because the thread fell behind.
    pub skipped: u64,
    /// Ticks done per media second.
    pub fps: f64,
    /// The output frame rate at the end, and how many times it was stepped down.
    pub fps_now: u64,
    pub fps_steps_down: u64,
}

#[derive(Debug, Serialize)]
pub struct RungReport {
    pub format: String,
    pub viewers: usize,
    /// Encoders running on this rung at the end (fast mode; the paced mode's room keeps
    /// them on its own thread).
    pub encoders: Option<usize>,
    /// Video sent to each of its viewers over the measured seconds (RTP payload).
    pub kbit_s_per_viewer: Option<f64>,
}

/// The size cap that holds viewer `i` on its rung of `--rungs` (none without the flag).
fn rung_caps(
    args: &RoomBenchArgs,
    ladder: &crate::ladder::Ladder,
    n: usize,
) -> Result<Vec<(u32, u32)>, BenchError> {
    if args.rungs.is_empty() {
        return Ok(vec![(0, 0); n]);
    }
    if args.rungs.len() > ladder.rungs().len() {
        return Err(BenchError::Rungs(format!(
            "the ladder has {} rungs: {:?}",
            ladder.rungs().len(),
            ladder.rungs()
        )));
    }
    if args.rungs.iter().sum::<usize>() != n {
        return Err(BenchError::Rungs(format!(
            "the counts must add up to --participants ({n})"
        )));
    }
    Ok(args
        .rungs
        .iter()
        .enumerate()
        .flat_map(|(r, &count)| {
            let rung = ladder.get(r);
            std::iter::repeat_n((rung.width, rung.height), count)
        })
        .collect())
}

/// Inputs ready to feed: per participant, RTP payloads per access unit and Opus packets.
struct Feed {
    video: Vec<Vec<Vec<Bytes>>>,
    /// Per participant: packets in one loop of its clip, and packets before each AU.
    packets_per_loop: Vec<u64>,
    prefix: Vec<Vec<u64>>,
    audio: Vec<Vec<Bytes>>,
    levels: Vec<u8>,
}

const TONES: [f32; 9] = [
    300.0, 400.0, 500.0, 650.0, 800.0, 1000.0, 1200.0, 1500.0, 1800.0,
];

fn prepare(args: &RoomBenchArgs) -> Result<Feed, BenchError> {
    let n = args.participants.max(1);
    let (iw, ih) = parse_size("input", &args.input)?;
    let mut video = Vec::new();
    if !args.audio_only {
        let bitrate = input_bitrate(args)?;
        if args.inputs.is_empty() {
            eprintln!(
                "bench: encoding {n} synthetic {iw}x{ih} inputs at {} kbit/s…",
                bitrate / 1000
            );
        }
        let clips = synth::clips(&args.inputs, n, (iw, ih), args.fps, bitrate)?;
        let mut pay = H264Payloader::default();
        for i in 0..n {
            video.push(payloads(&mut pay, &clips[i % clips.len()]));
        }
    }
    let audio = (0..n)
        .map(|i| {
            synth::tone_packets(
                TONES[i % TONES.len()] + (i / TONES.len()) as f32 * 7.0,
                6000.0,
            )
            .into_iter()
            .map(Bytes::from)
            .collect()
        })
        .collect();
    // Staggered speech levels: participant 0 loudest (-20 dBov), then 1 dB quieter each.
    let levels = (0..n).map(|i| (20 + i).min(126) as u8).collect();
    Ok(Feed::new(video, audio, levels))
}

impl Feed {
    /// The feed of these payloads, with each clip's packet counts for sequence numbers.
    fn new(video: Vec<Vec<Vec<Bytes>>>, audio: Vec<Vec<Bytes>>, levels: Vec<u8>) -> Self {
        let prefix = video
            .iter()
            .map(|aus: &Vec<Vec<Bytes>>| {
                aus.iter()
                    .scan(0u64, |acc, au| {
                        let before = *acc;
                        *acc += au.len() as u64;
                        Some(before)
                    })
                    .collect()
            })
            .collect();
        let packets_per_loop = video
            .iter()
            .map(|aus| aus.iter().map(|a| a.len() as u64).sum())
            .collect();
        Feed {
            video,
            packets_per_loop,
            prefix,
            audio,
            levels,
        }
    }
}

/// A clip's access units as RTP payloads.
fn payloads(pay: &mut H264Payloader, clip: &synth::Clip) -> Vec<Vec<Bytes>> {
    clip.access_units
        .iter()
        .map(|au| {
            pay.payload(crate::room::sink::RTP_MTU, &Bytes::copy_from_slice(au))
                .unwrap_or_default()
        })
        .collect()
}

fn config_for(args: &RoomBenchArgs) -> Result<(Config, crate::layout::LayoutSpec), BenchError> {
    let (ow, oh) = parse_size("output", &args.output)?;
    let mut c = Config::default();
    c.video.width = ow;
    c.video.height = oh;
    c.video.fps = args.fps;
    c.video.bitrate_kbps = parse_bitrate(&args.bitrate)? / 1000;
    c.audio.top_k = args.top_k;
    c.video.pipeline = args.pipeline;
    c.max_participants = args.participants.max(1);
    c.validate()?;
    let layout = LayoutSet::builtin()
        .get(&args.layout)
        .cloned()
        .ok_or_else(|| BenchError::Layout(args.layout.clone()))?;
    Ok((c, layout))
}

/// The synthetic inputs' bitrate (`--input-bitrate`).
fn input_bitrate(args: &RoomBenchArgs) -> Result<u32, BenchError> {
    if args.input_bitrate == "asked" {
        let (w, h) = parse_size("input", &args.input)?;
        return Ok(crate::room::video::demand::limit_for(Some((w, h)), args.fps).max_bitrate_bps);
    }
    parse_bitrate(&args.input_bitrate)
}

/// Writes the synthetic clips as Annex B files (for the ffmpeg peer).
pub fn write_inputs(args: &RoomBenchArgs, dir: &std::path::Path) -> Result<(), BenchError> {
    let (iw, ih) = parse_size("input", &args.input)?;
    std::fs::create_dir_all(dir)?;
    for i in 0..args.participants.max(1) {
        let clip = synth::synthetic_clip(
            i,
            iw as usize,
            ih as usize,
            args.fps,
            (args.seconds * args.fps as f64).max(1.0) as usize,
            input_bitrate(args)?,
        );
        let path = dir.join(format!("input-{i}.h264"));
        std::fs::write(&path, clip.access_units.concat())?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

struct Sinks {
    rx: Vec<mpsc::Receiver<rtc::rtp::packet::Packet>>,
    /// The rung of each sink's viewer (video sinks only).
    rung_of: Vec<Option<usize>>,
    bytes: u64,
    /// Video payload bytes sent to the viewers of each rung.
    rung_bytes: Vec<u64>,
}

impl Sinks {
    fn drain(&mut self) {
        for (i, r) in self.rx.iter_mut().enumerate() {
            while let Ok(p) = r.try_recv() {
                self.bytes += p.payload.len() as u64;
                if let Some(rung) = self.rung_of[i] {
                    if self.rung_bytes.len() <= rung {
                        self.rung_bytes.resize(rung + 1, 0);
                    }
                    self.rung_bytes[rung] += p.payload.len() as u64;
                }
            }
        }
    }
}

fn sink(pt: u8, sinks: &mut Sinks, cap: usize) -> RtpSink {
    let (tx, rx) = mpsc::channel(cap);
    sinks.rx.push(rx);
    sinks.rung_of.push(None);
    RtpSink::new(rand::random(), pt, tx)
}

const H264_PT: u8 = 102;
const VP8_PT: u8 = 96;

/// Viewer `i` of `n`'s video sink (on `rung`): the last `vp8` viewers are sent VP8.
fn viewer_sink(i: usize, n: usize, vp8: usize, rung: usize, sinks: &mut Sinks) -> RtpSink {
    let s = if i + vp8.min(n) >= n {
        sink(VP8_PT, sinks, 4096).with_vp8()
    } else {
        sink(H264_PT, sinks, 4096)
    };
    *sinks.rung_of.last_mut().expect("just pushed") = Some(rung);
    s
}

/// The rung viewer `i` is held on by `--rungs` (0 without it).
fn rung_of_viewer(args: &RoomBenchArgs, i: usize) -> usize {
    let mut seen = 0;
    for (r, &count) in args.rungs.iter().enumerate() {
        seen += count;
        if i < seen {
            return r;
        }
    }
    0
}

/// The presenter's screen as RTP payloads (participant 0's content), for `--present`.
fn prepare_screen(args: &RoomBenchArgs) -> Option<Feed> {
    let screen = args.present?;
    eprintln!("bench: encoding a 1280x720 {screen:?} screen…");
    let clip = synth::screen_clip(screen, 1280, 720, args.fps, 2 * args.fps as usize);
    let video = payloads(&mut H264Payloader::default(), &clip);
    Some(Feed::new(vec![video], Vec::new(), Vec::new()))
}

fn snapshot(stats: &RoomStats) -> [u64; 4] {
    let c = &stats.cpu;
    [
        c.decode.load(Ordering::Relaxed),
        c.composite.load(Ordering::Relaxed),
        c.encode.load(Ordering::Relaxed),
        c.mix.load(Ordering::Relaxed),
    ]
}

/// Runs the benchmark and returns its report.
pub fn run(args: &RoomBenchArgs) -> Result<BenchReport, BenchError> {
    let (config, layout) = config_for(args)?;
    let feed = prepare(args)?;
    let n = args.participants.max(1);
    let period = Duration::from_secs(1) / args.fps;
    let video_ticks = (args.seconds * args.fps as f64).round().max(1.0) as u64;
    // Excluded from the numbers: one second, or three when paced (the room's frame-rate
    // governor judges one-second windows: its first step down, if the machine cannot
    // keep up, happens in the warm-up and the numbers are the steady state it reached;
    // the steps it took are reported).
    let warmup_s = if args.paced { 3 } else { 1 };
    let warmup_ticks = args.fps as u64 * warmup_s;
    let stats = Arc::new(RoomStats::default());
    let pt_map: HashMap<u8, VideoCodec> = [(H264_PT, VideoCodec::H264)].into();
    let mut sinks = Sinks {
        rx: Vec::new(),
        rung_of: Vec::new(),
        bytes: 0,
        rung_bytes: Vec::new(),
    };
    let screen = prepare_screen(args);
    // Per-rung bytes from the end of the warm-up.
    let mut rung_bytes0 = Vec::new();
    eprintln!(
        "bench: {} mode, {n} participants, {} media seconds (+{warmup_s} s warm-up)…",
        if args.paced { "paced" } else { "fast" },
        args.seconds
    );

    let ladder = config
        .video
        .ladder()
        .map_err(|e| BenchError::Rungs(e.to_string()))?;
    let caps = rung_caps(args, &ladder, n)?;
    let mut per_rung: Vec<usize> = Vec::new();
    let mut per_codec = None;
    let mut pacing = None;
    let (wall, cpu, phases, lateness) = if args.paced {
        let room = Room::start(
            crate::ids::RoomId::parse("bench").expect("valid literal"),
            Arc::new(RoomSettings {
                config: config.clone(),
                layouts: LayoutSet::builtin(),
            }),
        )?;
        room.set_layout(&args.layout)
            .map_err(|_| BenchError::Layout(args.layout.clone()))?;
        let mut ids = Vec::new();
        for (i, &(cap_w, cap_h)) in caps.iter().enumerate() {
            let info = room
                .join(&format!("P{i}"))
                .map_err(|e| BenchError::Io(std::io::Error::other(e.to_string())))?;
            if let Some(link) = room.link(info.id) {
                link.set_cap(cap_w, cap_h);
            }
            let (up, _) = mpsc::channel(64);
            let a = sink(111, &mut sinks, 4096);
            let v = (!args.audio_only)
                .then(|| viewer_sink(i, n, args.vp8, rung_of_viewer(args, i), &mut sinks));
            room.attach(
                info.id,
                Attachment {
                    video_payload_types: pt_map.clone(),
                    audio_out: Some(a),
                    video_out: v,
                    upstream: up,
                },
            )
            .map_err(|e| BenchError::Io(std::io::Error::other(e.to_string())))?;
            ids.push(info.id);
        }
        if let (Some(_), Some(&presenter)) = (&screen, ids.first()) {
            room.request_floor(presenter)
                .and_then(|_| room.attach_content(presenter, pt_map.clone(), mpsc::channel(64).0))
                .map_err(|e| BenchError::Io(std::io::Error::other(e.to_string())))?;
            // The room switched to `[presentation] layout`; --layout is what it shows.
            room.set_layout(&args.layout)
                .map_err(|_| BenchError::Layout(args.layout.clone()))?;
        }
        let room_stats = room.stats.clone();
        let start = Instant::now();
        let total_ticks = video_ticks + warmup_ticks;
        let mut snap = None;
        let mut ticks0 = (0, 0);
        // Lateness over the measured seconds only (not the warm-up).
        let mut late0 = (Vec::new(), Vec::new());
        let mut audio_tick = 0u64;
        for k in 0..total_ticks {
            if k == warmup_ticks {
                snap = Some((Instant::now(), process_cpu_ns(), snapshot(&room_stats)));
                ticks0 = (
                    room_stats.video_ticks.load(Ordering::Relaxed),
                    room_stats.video_ticks_skipped.load(Ordering::Relaxed),
                );
                late0 = (
                    room_stats.video_lateness.counts(),
                    room_stats.audio_lateness.counts(),
                );
            }
            let due = start + period * k as u32;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            feed_video(&feed, &ids, k, |id, seq, ts, marker, payload| {
                room.video_packet(id, H264_PT, seq, ts, marker, payload)
            });
            if let Some(screen) = &screen {
                feed_video(screen, &ids[..1], k, |id, seq, ts, marker, payload| {
                    room.content_packet(id, H264_PT, seq, ts, marker, payload)
                });
            }
            if k == warmup_ticks {
                sinks.drain();
                rung_bytes0.clone_from(&sinks.rung_bytes);
            }
            while audio_tick * 20_000 <= (k + 1) * 1_000_000 / args.fps as u64 {
                feed_audio(&feed, &ids, audio_tick, |id, seq, payload, level| {
                    room.audio_packet(id, seq, payload, level)
                });
                audio_tick += 1;
            }
            sinks.drain();
        }
        let (t0, c0, p0) = snap.expect("warm-up shorter than the run");
        let wall = t0.elapsed();
        let cpu = process_cpu_ns() - c0;
        let p1 = snapshot(&room_stats);
        let ticks = room_stats.video_ticks.load(Ordering::Relaxed) - ticks0.0;
        pacing = (!args.audio_only).then(|| Pacing {
            ticks,
            skipped: room_stats.video_ticks_skipped.load(Ordering::Relaxed) - ticks0.1,
            fps: ticks as f64 / wall.as_secs_f64(),
            fps_now: room_stats.video_fps.load(Ordering::Relaxed),
            fps_steps_down: room_stats.video_fps_steps_down.load(Ordering::Relaxed),
        });
        let q = |h: &crate::metrics::Lateness, before: &[u64]| Lateness {
            p50_ms: h.quantile_since(before, 0.5).as_secs_f64() * 1e3,
            p99_ms: h.quantile_since(before, 0.99).as_secs_f64() * 1e3,
        };
        let lateness = (
            Some(q(&room_stats.video_lateness, &late0.0)).filter(|_| !args.audio_only),
            Some(q(&room_stats.audio_lateness, &late0.1)),
        );
        copy_counts(&room_stats, &stats);
        room.stop();
        (
            wall,
            cpu,
            [p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2], p1[3] - p0[3]],
            lateness,
        )
    } else {
        let speaker = Arc::new(AtomicU64::new(0));
        let mut video = VideoLoop::new(
            &config,
            layout,
            broadcast::channel(16).0,
            speaker.clone(),
            stats.clone(),
        );
        let mut audio = AudioLoop::new(&config, broadcast::channel(1024).0, speaker, stats.clone());
        let mut ids = Vec::new();
        for (i, &(cap_w, cap_h)) in caps.iter().enumerate() {
            let id = ParticipantId::next();
            let (up, _) = mpsc::channel(64);
            audio.handle(AudioCmd::Join {
                id,
                codec: crate::codec::voice::AudioCodec::Opus,
                admitted: true,
            });
            audio.handle(AudioCmd::Attach {
                id,
                sink: Some(sink(111, &mut sinks, 4096)),
                link: None,
            });
            if !args.audio_only {
                video.handle(VideoCmd::Join {
                    id,
                    name: format!("P{i}"),
                });
                let v = viewer_sink(i, n, args.vp8, rung_of_viewer(args, i), &mut sinks);
                let link = Arc::new(crate::room::link::ViewerLink::default());
                link.set_cap(cap_w, cap_h);
                video.handle(VideoCmd::Attach {
                    id,
                    payload_types: pt_map.clone(),
                    sink: Some(v),
                    upstream: up,
                    link,
                });
            }
            ids.push(id);
        }
        if let (Some(_), Some(&presenter)) = (&screen, ids.first()) {
            video.handle(VideoCmd::Present {
                id: presenter,
                payload_types: pt_map.clone(),
                upstream: mpsc::channel(64).0,
            });
        }
        // Encoders come from the pool's factory thread: have them ready before timing.
        video.settle_encoders();
        let t_start = Instant::now();
        let mut snap = None;
        // The audio loop runs on its own thread, as in a room (`Room::start`): told each
        // video tick, it mixes the audio ticks up to that tick's media time while the
        // video tick runs (at most two video ticks behind).
        let (audio_to, audio_rx) = std::sync::mpsc::sync_channel::<u64>(2);
        let fps = args.fps as u64;
        let audio_ids = ids.clone();
        let feed_ref = &feed;
        std::thread::scope(|scope| {
            let audio_thread = scope.spawn(move || {
                let mut audio_tick = 0u64;
                for k in audio_rx {
                    while audio_tick * 20_000 <= k * 1_000_000 / fps {
                        feed_audio(
                            feed_ref,
                            &audio_ids,
                            audio_tick,
                            |id, seq, payload, level| {
                                audio.handle(AudioCmd::Packet {
                                    id,
                                    seq,
                                    payload,
                                    level,
                                })
                            },
                        );
                        audio.set_tick(audio_tick);
                        audio.mix_tick();
                        audio_tick += 1;
                    }
                }
            });
            for k in 0..video_ticks + warmup_ticks {
                if k == warmup_ticks {
                    snap = Some((Instant::now(), process_cpu_ns(), snapshot(&stats)));
                    sinks.drain();
                    rung_bytes0.clone_from(&sinks.rung_bytes);
                }
                let media_now = t_start + period * k as u32;
                // Audio ticks up to this video tick's media time, beside it.
                if audio_to.send(k).is_err() {
                    break;
                }
                if !args.audio_only {
                    // Cameras, then the presenter's screen (participant 0's content).
                    let inputs = [
                        (Some(&feed), &ids[..], false),
                        (screen.as_ref(), &ids[..1], true),
                    ];
                    for (input, who, content) in inputs {
                        let Some(input) = input else { continue };
                        feed_video(input, who, k, |id, seq, ts, marker, payload| {
                            video.handle(VideoCmd::Packet {
                                id,
                                content,
                                arrival: media_now,
                                pt: H264_PT,
                                seq,
                                ts,
                                marker,
                                payload,
                            })
                        });
                    }
                    video.tick(media_now, k);
                }
                sinks.drain();
                if k % (args.fps as u64 * 2) == 0 {
                    eprintln!(
                        "bench: {:.0}/{:.0} media seconds",
                        k as f64 / args.fps as f64,
                        args.seconds + warmup_s as f64
                    );
                }
            }
            drop(audio_to);
            audio_thread.join().expect("the bench's audio thread");
        });
        sinks.drain();
        let (t0, c0, p0) = snap.expect("warm-up shorter than the run");
        let p1 = snapshot(&stats);
        per_rung = video.encoders_per_rung();
        per_codec = Some(video.encoders_per_codec());
        (
            t0.elapsed(),
            process_cpu_ns() - c0,
            [p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2], p1[3] - p0[3]],
            (None, None),
        )
    };

    let media = video_ticks as f64 / args.fps as f64;
    let total = cpu as f64;
    let [d, c, e, m] = phases.map(|x| x as f64);
    let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
    let audio_ticks = (media * 50.0).max(1.0);
    Ok(BenchReport {
        mode: if args.paced { "paced" } else { "fast" },
        participants: n,
        input: if args.inputs.is_empty() {
            args.input.clone()
        } else {
            format!("{} file(s)", args.inputs.len())
        },
        output: args.output.clone(),
        fps: args.fps,
        bitrate_bps: config.video.bitrate_kbps * 1000,
        layout: args.layout.clone(),
        audio_only: args.audio_only,
        top_k: args.top_k,
        media_seconds: media,
        wall_seconds: wall.as_secs_f64(),
        realtime_factor: media / wall.as_secs_f64(),
        cpu_seconds_per_media_second: total / 1e9 / media,
        cpu_share: PhaseShare {
            decode: share(d),
            composite: share(c),
            encode: share(e),
            mix: share(m),
            other: share((total - d - c - e - m).max(0.0)),
        },
        overhead_ratio: if d + e > 0.0 {
            total / (d + e)
        } else {
            f64::NAN
        },
        video_encoders: stats.encoders.load(Ordering::Relaxed),
        audio_encoders: stats.audio_encoders.load(Ordering::Relaxed),
        audio_decoders: stats.audio_decoders.load(Ordering::Relaxed),
        audio_cpu_ms_per_tick: args.audio_only.then(|| (d + e + m) / 1e6 / audio_ticks),
        video_tick_lateness: lateness.0,
        audio_tick_lateness: lateness.1,
        video_frames_encoded: stats.video_frames_encoded.load(Ordering::Relaxed),
        video_pacing: pacing,
        encoder_waits: stats.video_encoder_waits.load(Ordering::Relaxed),
        rungs: ladder
            .rungs()
            .iter()
            .enumerate()
            .map(|(r, rung)| RungReport {
                format: format!(
                    "{}x{}@{} {} kbit/s",
                    rung.width, rung.height, rung.fps, rung.bitrate_kbps
                ),
                viewers: if args.rungs.is_empty() {
                    if r == 0 {
                        n
                    } else {
                        0
                    }
                } else {
                    args.rungs.get(r).copied().unwrap_or(0)
                },
                encoders: per_rung.get(r).copied(),
                kbit_s_per_viewer: {
                    let viewers = if args.rungs.is_empty() {
                        if r == 0 {
                            n
                        } else {
                            0
                        }
                    } else {
                        args.rungs.get(r).copied().unwrap_or(0)
                    };
                    let sent = sinks.rung_bytes.get(r).copied().unwrap_or(0)
                        - rung_bytes0.get(r).copied().unwrap_or(0);
                    (viewers > 0 && !args.audio_only)
                        .then(|| sent as f64 * 8.0 / 1000.0 / media / viewers as f64)
                },
            })
            .collect(),
        viewers_per_codec: (n - args.vp8.min(n), args.vp8.min(n)),
        present: args.present,
        encoders_per_codec: per_codec.filter(|_| !args.audio_only),
        threads: rayon::current_num_threads(),
    })
}

fn copy_counts(from: &RoomStats, to: &RoomStats) {
    for (a, b) in [
        (&from.encoders, &to.encoders),
        (&from.audio_encoders, &to.audio_encoders),
        (&from.audio_decoders, &to.audio_decoders),
        (&from.video_frames_encoded, &to.video_frames_encoded),
        (&from.video_encoder_waits, &to.video_encoder_waits),
    ] {
        b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

fn feed_video(
    feed: &Feed,
    ids: &[ParticipantId],
    k: u64,
    mut push: impl FnMut(ParticipantId, u16, u32, bool, Bytes),
) {
    for (i, id) in ids.iter().enumerate() {
        let Some(aus) = feed.video.get(i) else { return };
        if aus.is_empty() {
            continue;
        }
        let payloads = &aus[(k as usize) % aus.len()];
        // Sequence numbers continue across loops of the clip: packets before AU k.
        let per_loop = feed.packets_per_loop[i];
        let base = (k / aus.len() as u64) * per_loop + feed.prefix[i][(k as usize) % aus.len()];
        let ts = (k * 3000) as u32;
        for (j, p) in payloads.iter().enumerate() {
            push(
                *id,
                (base + j as u64) as u16,
                ts,
                j + 1 == payloads.len(),
                p.clone(),
            );
        }
    }
}

fn feed_audio(
    feed: &Feed,
    ids: &[ParticipantId],
    j: u64,
    mut push: impl FnMut(ParticipantId, u16, Bytes, Option<u8>),
) {
    for (i, id) in ids.iter().enumerate() {
        let pkts = &feed.audio[i];
        push(
            *id,
            j as u16,
            pkts[(j as usize) % pkts.len()].clone(),
            Some(feed.levels[i]),
        );
    }
}

/// Prints the report as an aligned table.
pub fn print_table(r: &BenchReport) {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let late = |l: &Option<Lateness>| {
        l.as_ref().map_or("-".to_owned(), |l| {
            format!("p50 {:.1} ms, p99 {:.1} ms", l.p50_ms, l.p99_ms)
        })
    };
    let rows: Vec<(&str, String)> = vec![
        ("mode", r.mode.to_owned()),
        ("participants", r.participants.to_string()),
        (
            "input → output",
            format!(
                "{} → {} @ {} fps, {} kbit/s",
                r.input,
                r.output,
                r.fps,
                r.bitrate_bps / 1000
            ),
        ),
        (
            "layout / audio",
            format!(
                "{} / {}top-{}",
                r.layout,
                if r.audio_only { "audio only, " } else { "" },
                r.top_k
            ),
        ),
        (
            "media / wall seconds",
            format!("{:.1} / {:.2}", r.media_seconds, r.wall_seconds),
        ),
        (
            "realtime factor",
            if r.mode == "paced" {
                // Paced runs take their wall time by design.
                "- (paced: see ticks and lateness)".to_owned()
            } else {
                format!("{:.2}x", r.realtime_factor)
            },
        ),
        (
            "CPU s per media s",
            format!("{:.2}", r.cpu_seconds_per_media_second),
        ),
        ("share decode", pct(r.cpu_share.decode)),
        ("share composite", pct(r.cpu_share.composite)),
        ("share encode", pct(r.cpu_share.encode)),
        ("share mix", pct(r.cpu_share.mix)),
        ("share other", pct(r.cpu_share.other)),
        ("overhead ratio", format!("{:.3}", r.overhead_ratio)),
        ("video encoders running", r.video_encoders.to_string()),
        (
            "presenter's screen",
            r.present.map_or("-".into(), |p| format!("{p:?}")),
        ),
        (
            "viewers H.264 / VP8",
            format!("{} / {}", r.viewers_per_codec.0, r.viewers_per_codec.1),
        ),
        (
            "encoders H.264 / VP8",
            r.encoders_per_codec
                .map_or("-".into(), |(a, b)| format!("{a} / {b}")),
        ),
        (
            "rungs: viewers / encoders / sent",
            r.rungs
                .iter()
                .map(|g| {
                    let e = g.encoders.map_or("-".into(), |e| e.to_string());
                    let k = g
                        .kbit_s_per_viewer
                        .map_or("-".into(), |k| format!("{k:.0} kbit/s each"));
                    format!("{}: {} / {e} / {k}", g.format, g.viewers)
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            "audio encodes / decodes per tick",
            format!("{} / {}", r.audio_encoders, r.audio_decoders),
        ),
        (
            "audio CPU per 20 ms tick",
            r.audio_cpu_ms_per_tick
                .map_or("-".into(), |v| format!("{v:.3} ms")),
        ),
        ("video tick lateness", late(&r.video_tick_lateness)),
        (
            "video ticks done / skipped",
            r.video_pacing.as_ref().map_or("-".into(), |p| {
                format!(
                    "{} / {} ({:.1} per s; output now {} fps, {} step(s) down)",
                    p.ticks, p.skipped, p.fps, p.fps_now, p.fps_steps_down
                )
            }),
        ),
        ("encoder waits", r.encoder_waits.to_string()),
        ("audio tick lateness", late(&r.audio_tick_lateness)),
        ("rayon threads", r.threads.to_string()),
    ];
    for (k, v) in rows {
        println!("{k:<34} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_bitrates() {
        assert_eq!(parse_size("x", "640x360").unwrap(), (640, 360));
        assert!(parse_size("x", "641x360").is_err());
        assert_eq!(parse_bitrate("1200k").unwrap(), 1_200_000);
        assert_eq!(parse_bitrate("2M").unwrap(), 2_000_000);
        assert!(parse_bitrate("fast").is_err());
    }

    /// A one-second fast run of three participants on small pictures.
    fn tiny(output: &str, bitrate: &str, rungs: Vec<usize>) -> RoomBenchArgs {
        RoomBenchArgs {
            participants: 3,
            input: "160x96".into(),
            input_bitrate: "600k".into(),
            output: output.into(),
            fps: 15,
            bitrate: bitrate.into(),
            seconds: 1.0,
            layout: "grid".into(),
            audio_only: false,
            top_k: 8,
            paced: false,
            inputs: vec![],
            write_inputs: None,
            rungs,
            json: false,
            pipeline: false,
            vp8: 0,
            present: None,
        }
    }

    #[test]
    fn a_presenter_runs_one_shared_picture_per_rung_at_the_content_rate() {
        // 320x180: below the presentation layout's content-only width, the picture is the
        // screen alone, so a static screen leaves nothing to send but the refreshes.
        let run_with = |screen| {
            let mut args = tiny("320x180", "300k", vec![]);
            args.layout = "presentation".into();
            args.present = Some(screen);
            args.seconds = 3.0;
            run(&args).unwrap()
        };
        let (still, scroll) = (
            run_with(synth::Screen::Static),
            run_with(synth::Screen::Scroll),
        );
        for r in [&still, &scroll] {
            assert_eq!(r.video_encoders, 1, "one shared picture");
        }
        let kbit = |r: &BenchReport| r.rungs[0].kbit_s_per_viewer.unwrap();
        assert!(
            kbit(&still) * 20.0 < kbit(&scroll),
            "static {} kbit/s, scrolling {} kbit/s",
            kbit(&still),
            kbit(&scroll)
        );
        // 15 fps requested (the content cap, [presentation] output_fps, is 15 too).
        let per_s = scroll.video_frames_encoded as f64 / (scroll.media_seconds + 1.0);
        assert!(per_s > 10.0, "scrolling: {per_s} frames a second");
    }

    #[test]
    fn a_codec_mix_runs_one_encoder_per_picture_and_codec() {
        // A shared canvas: one picture; two H.264 viewers and one VP8 viewer.
        let args = RoomBenchArgs {
            layout: "grid-shared".into(),
            vp8: 1,
            ..tiny("320x180", "300k", vec![])
        };
        let r = run(&args).unwrap();
        assert_eq!(r.viewers_per_codec, (2, 1));
        assert_eq!(r.encoders_per_codec, Some((1, 1)));
        assert_eq!(r.video_encoders, 2);
    }

    #[test]
    fn a_tiny_fast_run_produces_a_consistent_report() {
        let args = tiny("320x180", "300k", vec![]);
        let r = run(&args).unwrap();
        assert_eq!(r.video_encoders, 3);
        assert_eq!(r.rungs.len(), 1, "320x180 has no smaller default rung");
        assert_eq!(
            r.audio_encoders, 3,
            "three talkers, no listeners left for the shared mix"
        );
        assert!(r.video_frames_encoded >= 3 * 15);
        // The factor is what was measured: media produced over wall time, one second of it.
        assert!((r.media_seconds - args.seconds).abs() < 0.15, "{r:?}");
        assert!(r.wall_seconds > 0.0);
        assert!((r.realtime_factor * r.wall_seconds - r.media_seconds).abs() < 1e-9);
        assert!(r.overhead_ratio >= 1.0, "{r:?}");
        // Every phase ran and was attributed; the phases never account for more CPU than
        // the process used, and with `other` they make up all of it.
        let s = &r.cpu_share;
        assert!(
            s.decode > 0.0 && s.composite > 0.0 && s.encode > 0.0 && s.mix > 0.0,
            "{s:?}"
        );
        let phases = s.decode + s.composite + s.encode + s.mix;
        assert!(
            phases <= 1.02,
            "phases {phases:.3} of the process CPU: {s:?}"
        );
        assert!((phases + s.other - 1.0).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn a_paced_run_reports_what_the_video_thread_delivered() {
        let args = RoomBenchArgs {
            paced: true,
            ..tiny("320x180", "300k", vec![])
        };
        let r = run(&args).unwrap();
        let p = r
            .video_pacing
            .as_ref()
            .expect("paced runs report their ticks");
        // The clock's books balance: every due tick was either done or counted skipped
        // (15 fps over the measured wall time, ±2 for the edges).
        let due = r.wall_seconds * 15.0;
        assert!(
            ((p.ticks + p.skipped) as f64 - due).abs() <= 2.0,
            "{p:?} over {:.2} s",
            r.wall_seconds
        );
        assert!(p.ticks > 0 && p.fps > 0.0);
        assert!([15, 10, 7].contains(&p.fps_now), "{p:?}");
        assert!(r.video_tick_lateness.is_some() && r.audio_tick_lateness.is_some());
        assert!(r.video_frames_encoded > 0);
    }

    #[test]
    fn rungs_put_viewers_on_their_rung_with_one_encoder_per_picture_and_rung() {
        let args = tiny("640x360", "500k", vec![2, 1]);
        let r = run(&args).unwrap();
        let got: Vec<(String, usize, Option<usize>)> = r
            .rungs
            .iter()
            .map(|g| (g.format.clone(), g.viewers, g.encoders))
            .collect();
        assert_eq!(
            got,
            vec![
                ("640x360@15 500 kbit/s".to_owned(), 2, Some(2)),
                ("320x180@15 150 kbit/s".to_owned(), 1, Some(1)),
            ]
        );
        let bad = RoomBenchArgs {
            rungs: vec![1, 1],
            ..args
        };
        assert!(matches!(run(&bad), Err(BenchError::Rungs(_))));
    }
}
