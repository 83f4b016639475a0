//! One participant sends video that is too big or never ends (H.264, AV1, VP8, VP9); the
//! others keep their frame rate, memory stays flat, and the sender is told its input was
//! refused.
//!
//! The scenarios run one at a time (a shared lock): each measures another viewer's frame
//! rate, which must not be disturbed by the other scenarios' load.

mod common;

use common::*;
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a room of two well-behaved participants plus one sending `hostile`; returns the
/// messages the hostile participant received. `max_rss_growth_mib` bounds this process's
/// growth (server and clients share it, so it is only meaningful where the client side is
/// cheap).
async fn viewers_keep_their_frame_rate_while(
    hostile: Video,
    max_rss_growth_mib: Option<f64>,
) -> Vec<serde_json::Value> {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let a = Client::join_ws(&server, "hostile", "Ada", (220, 30, 30), 400.0).await;
    let b = Client::join_ws(&server, "hostile", "Bob", (30, 30, 220), 650.0).await;
    wait_until("media", 30, || a.frames() > 20 && b.frames() > 20).await;

    let mut media = Media::steady((30, 220, 30), 900.0);
    media.video = hostile;
    let mut eve = Client::join_ws_at(server.addr, "hostile", "Eve", media).await;
    let rss0 = rss_mib();
    // Let the hostile stream get going, then measure over 8 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (fa, fb, t0) = (a.frames(), b.frames(), Instant::now());
    tokio::time::sleep(Duration::from_secs(8)).await;
    let secs = t0.elapsed().as_secs_f64();
    let fps_a = (a.frames() - fa) as f64 / secs;
    let fps_b = (b.frames() - fb) as f64 / secs;
    let grown = rss_mib() - rss0;
    let room = server
        .rooms
        .get(&tessera::ids::RoomId::parse("hostile").unwrap())
        .unwrap();
    let s = &room.stats;
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "viewers: {fps_a:.1} and {fps_b:.1} fps; RSS grew {grown:.1} MiB; room: decode CPU {} ms, \
         {} frames decoded, {} inputs dropped, {} PLIs, {} inputs refused",
        s.cpu.decode.load(Relaxed) / 1_000_000,
        s.video_frames_decoded.load(Relaxed),
        s.dropped_inputs.load(Relaxed),
        s.keyframe_requests_sent.load(Relaxed),
        s.video_inputs_rejected.load(Relaxed),
    );
    assert!(
        fps_a >= 25.0 && fps_b >= 25.0,
        "viewers fell to {fps_a:.1} / {fps_b:.1} fps"
    );
    if let Some(max) = max_rss_growth_mib {
        assert!(grown < max, "RSS grew {grown:.1} MiB");
    }
    // The room is intact: Ada still sees Bob's colour.
    let frame = a.last_frame().expect("Ada has a picture");
    assert!(frame.width > 0);

    let mut messages = Vec::new();
    while let Ok(m) = eve.messages.try_recv() {
        messages.push(m);
    }
    eve.close().await;
    a.close().await;
    b.close().await;
    server.stop().await;
    messages
}

fn rejection(messages: &[serde_json::Value]) -> Option<String> {
    messages
        .iter()
        .find(|m| m["type"] == "inputRejected")
        .map(|m| m["reason"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_av1_fragment_that_never_ends_costs_the_room_nothing() {
    // ~16 Mbit/s of continuation packets: rtc-rtp's depacketiser buffered and re-copied
    // them without limit.
    viewers_keep_their_frame_rate_while(
        Video::Av1EndlessFragment {
            packets_per_frame: 60,
        },
        Some(64.0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_8192x8192_av1_stream_is_refused_and_the_sender_told() {
    let messages = viewers_keep_their_frame_rate_while(
        Video::Av1File(include_bytes!("data/av1/red_8192x8192.obu")),
        Some(64.0),
    )
    .await;
    let reason = rejection(&messages).expect("inputRejected sent to the participant");
    assert!(reason.contains("8192x8192"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h264_stream_over_the_size_limit_is_refused_and_the_sender_told() {
    // No memory bound here: this process also runs the client's 2560x1440 encoder.
    let messages = viewers_keep_their_frame_rate_while(
        Video::H264 {
            width: 2560,
            height: 1440,
        },
        None,
    )
    .await;
    let reason = rejection(&messages).expect("inputRejected sent to the participant");
    assert!(reason.contains("2560x1440"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_vp8_keyframe_is_refused_and_the_sender_told() {
    // 16383x16383, VP8's largest: libvpx would allocate it.
    let messages = viewers_keep_their_frame_rate_while(Video::Vp8Huge, Some(64.0)).await;
    let reason = rejection(&messages).expect("inputRejected sent to the participant");
    assert!(reason.contains("16383x16383"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_16384x16384_vp9_keyframe_is_refused_and_the_sender_told() {
    let messages = viewers_keep_their_frame_rate_while(Video::Vp9Huge, Some(64.0)).await;
    let reason = rejection(&messages).expect("inputRejected sent to the participant");
    assert!(reason.contains("16384x16384"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endless_vp8_partitions_cost_the_room_nothing() {
    // ~16 Mbit/s of packets that keep starting partitions.
    viewers_keep_their_frame_rate_while(
        Video::Vp8EndlessPartitions {
            packets_per_frame: 60,
        },
        Some(64.0),
    )
    .await;
}
