//! The media loops allocate nothing per tick once a room is steady (issue 12): the video
//! tick (decode, tiles, plans, encoder groups, compose, encode — H.264 and, for one viewer,
//! VP8 — packetise once, send) and
//! the audio tick (levels, top-K, mixes, encodes, send) are run against real H.264 and
//! Opus input while a counting global allocator watches every thread of this process.
//!
//! Feeding packets and draining the outputs (the network's side) happen between ticks and
//! are not counted; the ticks themselves are.

mod common;

use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tessera::codec::VideoCodec;
use tessera::config::Config;
use tessera::ids::ParticipantId;
use tessera::layout::LayoutSet;

use tessera::room::audio::AudioLoop;
use tessera::room::link::ViewerLink;
use tessera::room::video::VideoLoop;
use tessera::room::{AudioCmd, RoomStats, RtpSink, VideoCmd};
use tokio::sync::{broadcast, mpsc};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts the allocations `f` makes on any thread.
fn counted(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    ARMED.store(true, Ordering::SeqCst);
    f();
    ARMED.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Per participant: `frames` H.264 access units of a moving colour picture, as RTP
/// payloads.
fn clips(n: usize, frames: usize) -> Vec<Vec<Vec<Bytes>>> {
    (0..n)
        .map(|i| common::moving_clip((60 + 30 * i as u8, 90, 160), frames))
        .collect()
}

/// One test (the counter is process-wide): the serial tick, then the pipelined one.
#[test]
fn steady_media_ticks_do_not_allocate() {
    steady_ticks(false);
    steady_ticks(true);
}

fn steady_ticks(pipeline: bool) {
    let mut config = Config::default();
    config.video.pipeline = pipeline;
    config.video.width = 320;
    config.video.height = 180;
    let n = 4;
    let stats = Arc::new(RoomStats::default());
    let speaker = Arc::new(AtomicU64::new(0));
    let grid = LayoutSet::builtin().get("grid").unwrap().clone();
    let mut video = VideoLoop::new(
        &config,
        grid,
        broadcast::channel(64).0,
        speaker.clone(),
        stats.clone(),
    );
    let mut audio = AudioLoop::new(&config, broadcast::channel(1024).0, speaker, stats.clone());
    let mut ids = Vec::new();
    let mut outs = Vec::new();
    let mut ups = Vec::new();
    for i in 0..n {
        let id = ParticipantId::next();
        let (vtx, vrx) = mpsc::channel(4096);
        let (atx, arx) = mpsc::channel(4096);
        let (up, up_rx) = mpsc::channel(64);
        ups.push(up_rx);
        video.handle(VideoCmd::Join {
            id,
            name: format!("P{i}"),
        });
        video.handle(VideoCmd::Attach {
            id,
            payload_types: HashMap::from([(102, VideoCodec::H264)]),
            // The last viewer is sent VP8 (its own payload descriptors, libvpx's encoder).
            sink: Some(if i == n - 1 {
                RtpSink::new(10 + i as u32, 96, vtx).with_vp8()
            } else {
                RtpSink::new(10 + i as u32, 102, vtx)
            }),
            upstream: up,
            link: Arc::new(ViewerLink::default()),
        });
        audio.handle(AudioCmd::Join {
            id,
            codec: tessera::codec::voice::AudioCodec::Opus,
            admitted: true,
        });
        audio.handle(AudioCmd::Attach {
            id,
            sink: Some(RtpSink::new(20 + i as u32, 111, atx)),
            link: None,
        });
        ids.push(id);
        outs.push((vrx, arx));
    }
    let video_in = clips(n, 120);
    // Opus packets of a tone per participant (levels included: the top-K path).
    let audio_in: Vec<Vec<Bytes>> = (0..n)
        .map(|i| {
            let mut enc = tessera::codec::audio::OpusEncoder::new(32_000, 5).unwrap();
            let mut out = vec![0u8; 1500];
            (0..50)
                .map(|k| {
                    let pcm: Vec<i16> = (0..960)
                        .map(|s| {
                            let t = (k * 960 + s) as f32 / 48_000.0;
                            ((t * (300.0 + 200.0 * i as f32) * std::f32::consts::TAU).sin()
                                * 8000.0) as i16
                        })
                        .collect();
                    let len = enc.encode(&pcm, &mut out).unwrap();
                    Bytes::copy_from_slice(&out[..len])
                })
                .collect()
        })
        .collect();

    let t0 = Instant::now();
    let period = video.period();
    let (mut vseq, mut aseq) = (vec![0u16; n], 0u16);
    let mut audio_tick = 0u64;
    let (mut video_allocs, mut audio_allocs, mut encoded) = (0, 0, 0);
    // 2 s warm-up (buffers reach their sizes, encoders exist), then 2 s counted.
    for k in 0..120u64 {
        let now = t0 + period * k as u32;
        for (i, &id) in ids.iter().enumerate() {
            let aus = &video_in[i][k as usize % 120];
            for (j, p) in aus.iter().enumerate() {
                video.handle(VideoCmd::Packet {
                    id,
                    content: false,
                    arrival: now,
                    pt: 102,
                    seq: vseq[i],
                    ts: k as u32 * 3000,
                    marker: j + 1 == aus.len(),
                    payload: p.clone(),
                });
                vseq[i] = vseq[i].wrapping_add(1);
            }
        }
        if k == 0 || k == 59 {
            // Encoders are built on the pool's thread: nothing is being built while the
            // ticks are counted (the factory's allocations are not the tick's).
            video.settle_encoders();
        }
        let counting = k >= 60;
        let before = stats.video_frames_encoded.load(Ordering::Relaxed);
        let a = counted(|| video.tick(now, k));
        if counting {
            video_allocs += a;
            encoded += stats.video_frames_encoded.load(Ordering::Relaxed) - before;
        }
        while audio_tick * 20 <= (k + 1) * 1000 / 30 {
            for (i, &id) in ids.iter().enumerate() {
                audio.handle(AudioCmd::Packet {
                    id,
                    seq: aseq,
                    payload: audio_in[i][audio_tick as usize % 50].clone(),
                    level: Some(20 + i as u8),
                });
            }
            aseq = aseq.wrapping_add(1);
            audio.set_tick(audio_tick);
            let a = counted(|| audio.mix_tick());
            if counting {
                audio_allocs += a;
            }
            audio_tick += 1;
            // The network task sends each audio packet long before the next tick.
            for (_, a) in &mut outs {
                while a.try_recv().is_ok() {}
            }
        }
        // The network side: send what was queued (dropping the packets).
        let mut got = 0;
        for (v, a) in &mut outs {
            while v.try_recv().is_ok() {
                got += 1;
            }
            while a.try_recv().is_ok() {}
        }
        for u in &mut ups {
            while u.try_recv().is_ok() {}
        }
        if counting {
            assert!(got > 0, "tick {k}: no video packets");
        }
    }
    // The ticks did their work: four pictures a tick, every tick.
    assert_eq!(encoded, 4 * 60, "pictures encoded in the counted ticks");
    assert!(stats.video_frames_decoded.load(Ordering::Relaxed) >= 4 * 100);
    eprintln!("allocations: {video_allocs} in 60 video ticks, {audio_allocs} in the audio ticks");
    // Tessera's code allocates nothing. What is left is rayon's: the video thread hands
    // the pool 3 jobs a tick (decode, tiles, pictures) and the pool's queue takes a new
    // block of 63 slots as it fills (crossbeam's Injector; seen with a backtrace), so at
    // most ceil(3 × 60 / 63) = 3 allocations in 60 ticks. One allocation per tick of our
    // own would make it 60+.
    assert!(
        video_allocs <= 3,
        "{video_allocs} allocations in 60 steady video ticks"
    );
    assert_eq!(audio_allocs, 0, "allocations in the steady audio ticks");
}
