//! Integration: three WebRTC clients (the `webrtc` crate; two over the WebSocket protocol,
//! one over WHIP) join one room, each sending a solid colour and a distinct tone. Each must
//! receive a composite in which the other two colours sit where the grid layout puts them
//! and its own colour is absent, and audio that holds the other two tones but not its own.

mod common;

use common::*;
use std::time::Duration;
use tessera::layout::LayoutSet;
use tessera::media::frame::rgb_to_yuv;
use tessera::media::I420Frame;

/// Three people: a name, a colour and a tone each.
const PEOPLE: [(&str, (u8, u8, u8), f32); 3] = THREE_PEOPLE;

fn close(a: (f64, f64, f64), b: (u8, u8, u8), tol: f64) -> bool {
    (a.0 - b.0 as f64).abs() < tol
        && (a.1 - b.1 as f64).abs() < tol
        && (a.2 - b.2 as f64).abs() < tol
}

/// Fraction of sampled pixels within `tol` of a colour.
fn share_of_colour(f: &I420Frame, yuv: (u8, u8, u8), tol: i32) -> f64 {
    let (mut hit, mut n) = (0, 0);
    for y in (0..f.height).step_by(4) {
        for x in (0..f.width).step_by(4) {
            let p = f.pixel(x, y);
            n += 1;
            if (p.0 as i32 - yuv.0 as i32).abs() < tol
                && (p.1 as i32 - yuv.1 as i32).abs() < tol
                && (p.2 as i32 - yuv.2 as i32).abs() < tol
            {
                hit += 1;
            }
        }
    }
    hit as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_see_and_hear_everyone_but_themselves() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for (i, (name, rgb, tone)) in PEOPLE.iter().enumerate() {
        let c = if i == 2 {
            Client::join_whip(&server, "conf", name, *rgb, *tone).await
        } else {
            Client::join_ws(&server, "conf", name, *rgb, *tone).await
        };
        clients.push(c);
    }
    wait_until(
        "every client to decode 60 composite frames and 1.5 s of audio",
        60,
        || {
            clients
                .iter()
                .all(|c| c.frames() >= 60 && c.last_audio(72_000).len() >= 72_000)
        },
    )
    .await;
    // Let every composite show everyone's latest picture (keyframes every 0.5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let grid = LayoutSet::builtin().get("grid").unwrap().place(2, W, H);
    for (k, client) in clients.iter().enumerate() {
        let frame = client.last_frame().expect("a decoded composite");
        assert_eq!(
            (frame.width as u32, frame.height as u32),
            (W, H),
            "{}: composite size",
            client.name
        );
        let others: Vec<usize> = (0..3).filter(|&i| i != k).collect();
        for (rect, &o) in grid.iter().zip(&others) {
            let (cx, cy) = rect.center();
            let (w, h) = ((rect.w / 3) as usize, (rect.h / 3) as usize);
            let mean = frame.mean_yuv(cx as usize - w / 2, cy as usize - h / 2, w, h);
            let want = rgb_to_yuv(PEOPLE[o].1 .0, PEOPLE[o].1 .1, PEOPLE[o].1 .2);
            assert!(
                close(mean, want, 14.0),
                "{}: tile {rect:?} should show {} {want:?}, has {mean:?}",
                client.name,
                PEOPLE[o].0
            );
        }
        let own = rgb_to_yuv(PEOPLE[k].1 .0, PEOPLE[k].1 .1, PEOPLE[k].1 .2);
        let own_share = share_of_colour(&frame, own, 14);
        assert!(
            own_share < 0.005,
            "{}: own colour covers {:.1}% of its composite",
            client.name,
            own_share * 100.0
        );

        let audio = client.last_audio(48_000);
        let powers: Vec<f64> = PEOPLE.iter().map(|p| tone_power(&audio, p.2)).collect();
        let weakest_other = others.iter().map(|&o| powers[o]).fold(f64::MAX, f64::min);
        let own_db = 10.0 * (powers[k] / weakest_other).log10();
        eprintln!(
            "{}: tone powers {:?}, own tone {own_db:.1} dB relative to the weakest other",
            client.name, powers
        );
        assert!(
            weakest_other > 1e6,
            "{}: the others' tones are missing: {powers:?}",
            client.name
        );
        assert!(
            own_db < -30.0,
            "{}: own tone only {own_db:.1} dB below the others",
            client.name
        );
    }

    // The WHIP participant leaves with DELETE; the others keep receiving.
    let loc = clients[2].whip_location.clone().unwrap();
    let resp = http(server.addr, "DELETE", &loc, None).await;
    assert_eq!(resp.status, 200);
    let room = server.rooms.list().into_iter().next().unwrap();
    wait_until("the room to have 2 participants", 5, || {
        room.participants().len() == 2
    })
    .await;
    let before: Vec<u64> = clients[..2].iter().map(|c| c.frames()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (c, b) in clients[..2].iter().zip(before) {
        assert!(
            c.frames() > b + 30,
            "{} stalled after a leave: {b} -> {}",
            c.name,
            c.frames()
        );
    }
    // Now a 1-to-1 call: each sees the other full frame.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (k, c) in clients[..2].iter().enumerate() {
        let f = c.last_frame().unwrap();
        let other = PEOPLE[1 - k].1;
        let mean = f.mean_yuv(
            W as usize / 4,
            H as usize / 8,
            W as usize / 2,
            H as usize / 2,
        );
        assert!(
            close(mean, rgb_to_yuv(other.0, other.1, other.2), 14.0),
            "{}: 1-to-1 should show the other full frame, has {mean:?}",
            c.name
        );
    }
    assert_eq!(
        http(server.addr, "DELETE", &loc, None).await.status,
        404,
        "a second DELETE finds no session"
    );
    for c in &clients {
        c.close().await;
    }
    server.stop().await;
}

/// Four participants talking at once (two over WebSocket, two over WHIP): each hears the
/// other three, window after window, and not itself. With the old top-3 mix one of four
/// equally loud talkers stayed out for whole calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_talking_at_once_each_hear_the_other_three() {
    const FOUR: [(&str, (u8, u8, u8), f32); 4] = [
        ("Red", (220, 30, 30), 400.0),
        ("Green", (30, 200, 30), 650.0),
        ("Blue", (30, 30, 220), 1000.0),
        ("Grey", (128, 128, 128), 1_450.0),
    ];
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for (i, (name, rgb, tone)) in FOUR.iter().enumerate() {
        clients.push(if i % 2 == 0 {
            Client::join_ws(&server, "four", name, *rgb, *tone).await
        } else {
            Client::join_whip(&server, "four", name, *rgb, *tone).await
        });
    }
    wait_until("every client to receive 2 s of audio", 60, || {
        clients.iter().all(|c| c.last_audio(96_000).len() >= 96_000)
    })
    .await;
    // Five checks a second apart, each over the last second.
    for round in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (k, c) in clients.iter().enumerate() {
            let audio = c.last_audio(48_000);
            let powers: Vec<f64> = FOUR.iter().map(|p| tone_power(&audio, p.2)).collect();
            for j in (0..4).filter(|&j| j != k) {
                assert!(
                    powers[j] > 1e6,
                    "round {round}: {} does not hear {}: {powers:?}",
                    c.name,
                    FOUR[j].0
                );
            }
            let weakest = (0..4)
                .filter(|&j| j != k)
                .map(|j| powers[j])
                .fold(f64::MAX, f64::min);
            assert!(
                powers[k] * 1000.0 < weakest,
                "round {round}: {} hears itself: {powers:?}",
                c.name
            );
        }
    }
    for c in &clients {
        c.close().await;
    }
    server.stop().await;
}
