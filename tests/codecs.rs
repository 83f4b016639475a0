//! Integration: senders and viewers without H.264. An H.264 client, a client that offers
//! only VP8 (libvpx, packetised by the `rtc` crate) and one that offers only VP9 (a real
//! libvpx VP9 stream) join one room: everyone's composite shows the other two colours where
//! the grid puts them, the VP8 client is sent VP8 (it offered nothing else) and the H.264
//! client H.264; everyone hears the others' tones and not their own. (Hostile VP8/VP9 is in
//! `tests/hostile_media.rs`; random payloads on every video payload type in
//! `tests/bad_input.rs`.)

mod common;

use common::*;
use std::time::Duration;
use tessera::codec::VideoCodec;
use tessera::layout::LayoutSet;
use tessera::media::frame::rgb_to_yuv;
use tessera::media::I420Frame;
use tessera::mixer::tone_power;

/// `ffmpeg -f lavfi -i color=c=0x1e1edc:s=320x180:r=30 -frames:v 30 -c:v libvpx-vp9
/// -deadline realtime -cpu-used 8 -b:v 200k -g 15 blue_320x180.ivf`
const VP9_BLUE: &[u8] = include_bytes!("data/vp9/blue_320x180.ivf");

/// The colour the VP9 clip decodes to (what its encoder made of 0x1e1edc).
fn vp9_colour() -> (u8, u8, u8) {
    let mut dec = tessera::codec::vpx::VpxDecoder::new(tessera::codec::vpx::VpxKind::Vp9).unwrap();
    let mut out = I420Frame::default();
    let frame = tessera::codec::vpx::ivf_frames(VP9_BLUE)[0];
    assert!(dec.decode(frame, &mut out, |_, _| Ok(())).unwrap());
    let (y, u, v) = out.mean_yuv(100, 50, 120, 80);
    (y.round() as u8, u.round() as u8, v.round() as u8)
}

fn close(a: (f64, f64, f64), b: (u8, u8, u8), tol: f64) -> bool {
    (a.0 - b.0 as f64).abs() < tol
        && (a.1 - b.1 as f64).abs() < tol
        && (a.2 - b.2 as f64).abs() < tol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vp8_and_vp9_senders_appear_in_every_composite_and_a_vp8_only_viewer_gets_vp8() {
    let server = TestServer::start().await;
    let red = rgb_to_yuv(220, 30, 30);
    let green = rgb_to_yuv(30, 200, 30);
    let blue = vp9_colour();
    let people = [
        ("H264", red, 400.0f32),
        ("VP8", green, 650.0),
        ("VP9", blue, 1000.0),
    ];
    let mut clients = Vec::new();
    for (name, _, tone) in people {
        let mut media = Media::steady((220, 30, 30), tone);
        media.video = match name {
            "VP8" => Video::Vp8 {
                width: 320,
                height: 180,
            },
            "VP9" => Video::Vp9File(VP9_BLUE),
            _ => media.video,
        };
        if name == "VP8" {
            media.rgb = (30, 200, 30);
        }
        clients.push(Client::join_ws_at(server.addr, "codecs", name, media).await);
    }
    // The VP9-only client offers no codec we send: it hears the room but gets no video.
    wait_until(
        "H.264 and VP8 viewers to decode 60 frames, everyone 1.5 s of audio",
        60,
        || {
            clients[..2].iter().all(|c| c.frames() >= 60)
                && clients.iter().all(|c| c.last_audio(72_000).len() >= 72_000)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        *clients[0].received.video_codec.lock().unwrap(),
        Some(VideoCodec::H264)
    );
    assert_eq!(
        *clients[1].received.video_codec.lock().unwrap(),
        Some(VideoCodec::Vp8),
        "a viewer that offered only VP8 is sent VP8"
    );
    assert_eq!(
        clients[2].frames(),
        0,
        "nothing we send was offered by the VP9-only client"
    );
    let answer = tessera::sdp::parse(&clients[1].answer).unwrap();
    let v = tessera::sdp::first(&answer, "video").unwrap();
    assert!(v.payload_type("VP8", None).is_some() && v.payload_type("H264", None).is_none());

    let grid = LayoutSet::builtin().get("grid").unwrap().place(2, W, H);
    for k in 0..2 {
        let frame = clients[k].last_frame().expect("a composite");
        assert_eq!((frame.width as u32, frame.height as u32), (W, H));
        let others: Vec<usize> = (0..3).filter(|&i| i != k).collect();
        for (rect, &o) in grid.iter().zip(&others) {
            let (cx, cy) = rect.center();
            let (w, h) = ((rect.w / 3) as usize, (rect.h / 3) as usize);
            let mean = frame.mean_yuv(cx as usize - w / 2, cy as usize - h / 2, w, h);
            assert!(
                close(mean, people[o].1, 14.0),
                "{}: tile {rect:?} should show {} {:?}, has {mean:?}",
                people[k].0,
                people[o].0,
                people[o].1
            );
        }
    }
    for (k, c) in clients.iter().enumerate() {
        let audio = c.last_audio(48_000);
        let powers: Vec<f64> = people.iter().map(|p| tone_power(&audio, p.2)).collect();
        let weakest = (0..3)
            .filter(|&i| i != k)
            .map(|i| powers[i])
            .fold(f64::MAX, f64::min);
        eprintln!("{}: tone powers {powers:?}", people[k].0);
        assert!(
            weakest > 1e6,
            "{}: the others' tones are missing: {powers:?}",
            people[k].0
        );
        assert!(
            10.0 * (powers[k] / weakest).log10() < -30.0,
            "{}: hears itself: {powers:?}",
            people[k].0
        );
    }
    // Two codecs of one room: the room runs a VP8 encoder beside the H.264 ones.
    let room = server.rooms.list().into_iter().next().unwrap();
    let encoders = room
        .stats
        .encoders
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(encoders >= 2, "{encoders} encoders");
    for c in &clients {
        c.close().await;
    }
    server.stop().await;
}
