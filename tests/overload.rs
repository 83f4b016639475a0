//! Control is never starved: with the video loop permanently behind its deadlines, a
//! recording stop and a room stop still complete within a bounded time, and the recording
//! is finalised.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera::codec::VideoCodec;
use tessera::config::Config;
use tessera::ids::RoomId;
use tessera::layout::LayoutSet;
use tessera::room::{Attachment, Room, RoomSettings, RtpSink};
use tokio::sync::mpsc;

#[test]
fn a_recording_stop_and_a_room_stop_complete_while_ticks_are_overdue() {
    let dir = std::env::temp_dir().join(format!("tessera-overload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::default();
    // Personal 1080p60 composites for 12 viewers: far more than two cores encode in 16 ms.
    config.video.width = 1920;
    config.video.height = 1080;
    config.video.fps = 60;
    config.max_participants = 16;
    config.recording.dir = dir.clone();
    config.recording.width = 1920;
    config.recording.height = 1080;
    let room = Room::start(
        RoomId::parse("overload").unwrap(),
        Arc::new(RoomSettings {
            config,
            layouts: LayoutSet::builtin(),
        }),
    )
    .unwrap();
    let mut keep = Vec::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let info = room.join(&format!("Viewer {i}")).unwrap();
        ids.push(info.id);
        let (vtx, vrx) = mpsc::channel(100_000);
        let (atx, arx) = mpsc::channel(100_000);
        let (up, up_rx) = mpsc::channel(64);
        room.attach(
            info.id,
            Attachment {
                video_payload_types: HashMap::from([(102, VideoCodec::H264)]),
                audio_out: Some(RtpSink::new(2 * i + 1, 111, atx)),
                video_out: Some(RtpSink::new(2 * i + 2, 102, vtx)),
                upstream: up,
            },
        )
        .unwrap();
        keep.push((vrx, arx, up_rx));
    }
    // Live cameras: every viewer's picture changes (an unchanging one is not encoded).
    let clip = common::moving_clip((90, 120, 160), 30);
    let stop_feed = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (room, stop) = (room.clone(), stop_feed.clone());
        std::thread::spawn(move || {
            let mut seq = 0u16;
            for k in 0usize.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let packets = &clip[k % clip.len()];
                for &id in &ids {
                    for (j, p) in packets.iter().enumerate() {
                        let marker = j + 1 == packets.len();
                        room.video_packet(
                            id,
                            102,
                            seq.wrapping_add(j as u16),
                            (k * 3000) as u32,
                            marker,
                            p.clone(),
                        );
                    }
                }
                seq = seq.wrapping_add(packets.len() as u16);
                std::thread::sleep(Duration::from_millis(33));
            }
        })
    };
    room.start_recording().unwrap();
    std::thread::sleep(Duration::from_secs(3));

    // The precondition: the video loop is behind (otherwise this test proves nothing).
    let late = room.stats.video_lateness.quantile(0.5);
    let ticks = room.stats.video_ticks.load(Ordering::Relaxed);
    eprintln!("video ticks in 3 s: {ticks} (of 180), median lateness {late:?}");
    assert!(
        ticks < 150 || late > Duration::from_millis(16),
        "the loop is not overloaded ({ticks} ticks, median lateness {late:?})"
    );

    let t = Instant::now();
    let info = room.stop_recording().expect("a recording was running");
    let stop_recording = t.elapsed();
    eprintln!("recording stop took {stop_recording:?}: {info:?}");
    assert!(
        stop_recording < Duration::from_secs(3),
        "recording stop took {stop_recording:?}"
    );
    assert!(info.error.is_none(), "{info:?}");
    assert!(info.duration_seconds > 1.0, "{info:?}");

    let t = Instant::now();
    room.stop();
    let stop_room = t.elapsed();
    stop_feed.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    eprintln!("room stop took {stop_room:?}");
    assert!(
        stop_room < Duration::from_secs(3),
        "room stop took {stop_room:?}"
    );

    // The file is complete: ffprobe reads a duration.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "mp4"))
        .expect("a recording file");
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "{stderr}");
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(secs > 1.0, "duration {secs}");
    let _ = std::fs::remove_dir_all(&dir);
}
