//! Integration: presenting a screen. A WHIP client presents with a second video m-line
//! marked `a=content:slides` (RFC 4796) and is composed as content, not as another camera;
//! WebSocket clients present over a second connection (as the web client does); floor
//! control (one presenter, refuse or take per room policy, moderators stop it, others
//! cannot); the room switches to the presentation layout and back; a viewer capped to
//! 320x180 gets the content full frame; oversize and garbage content is bounded like a
//! camera's. Pictures are checked by content: colours where the layout puts them.

mod common;

use common::*;
use std::time::Duration;
use tessera::compositor::scale::contain_window;
use tessera::layout::{LayoutSet, Rect};
use tessera::media::frame::rgb_to_yuv;
use tessera::media::I420Frame;

const YELLOW: (u8, u8, u8) = (230, 220, 40);
const RED: (u8, u8, u8) = (220, 30, 30);
const GREEN: (u8, u8, u8) = (30, 200, 30);

fn near(a: (f64, f64, f64), rgb: (u8, u8, u8), tol: f64) -> bool {
    let b = rgb_to_yuv(rgb.0, rgb.1, rgb.2);
    (a.0 - b.0 as f64).abs() < tol
        && (a.1 - b.1 as f64).abs() < tol
        && (a.2 - b.2 as f64).abs() < tol
}

fn mean_at(f: &I420Frame, (x, y): (u32, u32)) -> (f64, f64, f64) {
    f.mean_yuv(x as usize - 6, y as usize - 6, 12, 12)
}

/// Where the presentation layout puts the content (the fitted picture of `content` size)
/// and the cameras on a `w`×`h` picture with `cameras` cameras.
fn presentation_rects(cameras: usize, w: u32, h: u32, content: (u32, u32)) -> (Rect, Vec<Rect>) {
    let spec = LayoutSet::builtin().get("presentation").unwrap().clone();
    let mut rects = Vec::new();
    spec.place_with_content(cameras + 1, true, w, h, &mut rects);
    let area = rects[0];
    let win = contain_window(
        content.0 as usize,
        content.1 as usize,
        area.w as usize,
        area.h as usize,
    );
    let fitted = Rect {
        x: area.x + win.x as u32,
        y: area.y + win.y as u32,
        w: win.w as u32,
        h: win.h as u32,
    };
    (fitted, rects[1..].to_vec())
}

/// Waits for a message of `kind` (skipping others); returns it.
async fn next_message(c: &mut Client, kind: &str) -> serde_json::Value {
    loop {
        let v = tokio::time::timeout(Duration::from_secs(10), c.messages.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} in 10 s"))
            .expect("socket open");
        if v["type"] == kind {
            return v;
        }
    }
}

/// A server whose pictures are 640x360 (the test default, 320x180, is below the
/// presentation layout's content-only width), plus `tweak`.
async fn server_with(tweak: impl FnOnce(&mut tessera::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.video.width = 640;
        c.video.height = 360;
        tweak(c)
    })
    .await
}

/// The next `presentationStopped` about `who`.
async fn stopped_for(c: &mut Client, who: u64) -> serde_json::Value {
    loop {
        let v = next_message(c, "presentationStopped").await;
        if v["participantId"].as_u64() == Some(who) {
            return v;
        }
    }
}

fn content_picture(w: usize, h: usize) -> ContentPicture {
    ContentPicture::Picture(I420Frame::solid(
        w,
        h,
        rgb_to_yuv(YELLOW.0, YELLOW.1, YELLOW.2),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_client_presents_with_content_slides_and_is_composed_as_content() {
    let server = server_with(|_| {}).await;
    let mut ada = Client::join_ws(&server, "talk", "Ada", RED, 440.0).await;
    let (bob, slides) = Client::join_whip_presenting(
        server.addr,
        "talk",
        "Bob",
        GREEN,
        660.0,
        content_picture(640, 480),
    )
    .await
    .expect("the WHIP POST with a content m-line is accepted");
    assert!(
        bob.answer.contains("a=content:slides"),
        "the answer echoes the content attribute:\n{}",
        bob.answer
    );
    let started = next_message(&mut ada, "presentationStarted").await;
    let bob_id = started["participantId"].as_u64().unwrap();
    let layout = next_message(&mut ada, "layoutChanged").await;
    assert_eq!(layout["layout"], "presentation");
    // Ada's picture: the 4:3 content fitted (pillarboxed) in the content area; a strip of
    // exactly two cameras — Bob's (the presenter's) first, then Ada's (a shared canvas).
    let mut checked = false;
    wait_until("the presentation composed", 20, || {
        let Some(f) = ada.last_frame() else {
            return false;
        };
        let (content, cams) = presentation_rects(2, f.width as u32, f.height as u32, (640, 480));
        let ok = near(mean_at(&f, content.center()), YELLOW, 14.0)
            && near(
                mean_at(&f, (content.x + 8, content.y + content.h / 2)),
                YELLOW,
                14.0,
            )
            && f.mean_yuv(content.x as usize - 24, 100, 12, 12).0 < 40.0
            && cams.len() == 2
            && near(mean_at(&f, cams[0].center()), GREEN, 14.0)
            && near(mean_at(&f, cams[1].center()), RED, 14.0);
        checked |= ok;
        ok
    })
    .await;
    assert!(checked);
    let summary = http(server.addr, "GET", "/api/rooms", None).await;
    assert!(
        summary.body.contains("\"layout\":\"presentation\""),
        "{}",
        summary.body
    );
    // The WHIP session ends: the presentation stops and the room goes back to its grid.
    let loc = bob.whip_location.clone().unwrap();
    assert_eq!(http(server.addr, "DELETE", &loc, None).await.status, 200);
    let stopped = next_message(&mut ada, "presentationStopped").await;
    assert_eq!(stopped["participantId"].as_u64(), Some(bob_id));
    assert_eq!(stopped["reason"], "left");
    let layout = next_message(&mut ada, "layoutChanged").await;
    assert_eq!(layout["layout"], "grid");
    slides.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floor_control_one_presenter_moderators_stop_it_others_cannot() {
    let server = server_with(|c| {
        c.rooms = vec![tessera::config::RoomDecl {
            name: "floor".into(),
            moderator_pin: Some("9999".into()),
            tones: true,
            ..Default::default()
        }]
    })
    .await;
    // The operators' event stream (SSE) sees the presentations too.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sse = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    sse.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .await
        .unwrap();
    let media = |rgb| Media::steady(rgb, 500.0);
    let mut ada = Client::join_ws_at(server.addr, "floor", "Ada", media(RED)).await;
    let mut bob = Client::join_ws_at(server.addr, "floor", "Bob", media(GREEN)).await;
    let mod_ = Client::join_ws_with(
        server.addr,
        "floor",
        "Mo",
        media((30, 30, 220)),
        None,
        Some("9999"),
    )
    .await;
    let ada_screen = ada
        .present(content_picture(640, 360))
        .await
        .expect("the first presenter gets the floor");
    let started = next_message(&mut bob, "presentationStarted").await;
    let ada_id = started["participantId"].as_u64().unwrap();
    // Bob's picture shows Ada's content (16:9: the whole content area).
    wait_until("Ada's content at Bob", 20, || {
        bob.last_frame().is_some_and(|f| {
            let (content, _) = presentation_rects(3, f.width as u32, f.height as u32, (640, 360));
            near(mean_at(&f, content.center()), YELLOW, 14.0)
        })
    })
    .await;
    // A second presenter is refused (the default policy)...
    let refused = bob
        .present(content_picture(320, 180))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused["code"], "floor_taken", "{refused}");
    // ...a participant cannot stop Ada's presentation...
    bob.signal(serde_json::json!({"type": "moderate", "action": "stopPresentation"}));
    let e = next_message(&mut bob, "error").await;
    assert_eq!(e["code"], "not_moderator");
    // ...a moderator can.
    mod_.signal(serde_json::json!({"type": "moderate", "action": "stopPresentation"}));
    let stopped = next_message(&mut ada, "presentationStopped").await;
    assert_eq!(stopped["participantId"].as_u64(), Some(ada_id));
    assert_eq!(stopped["reason"], "moderator");
    let layout = next_message(&mut ada, "layoutChanged").await;
    assert_eq!(layout["layout"], "grid", "back to the room's layout");
    ada_screen.stop().await;
    let mut events = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(events.contains("\"type\":\"presentationStarted\"")
        && events.contains("\"reason\":\"moderator\""))
    {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(until, sse.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no presentation events on /api/events: {events}"))
            .unwrap();
        events.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(
        events.contains("\"type\":\"presentationStopped\""),
        "{events}"
    );
    // The room lets a second presenter take the floor (room policy, `PATCH`).
    let patched = http(
        server.addr,
        "PATCH",
        "/api/rooms/floor",
        Some(("application/json", br#"{"floor": "take"}"#)),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert!(
        patched.body.contains("\"floor\":\"take\""),
        "{}",
        patched.body
    );
    let ada_screen = ada
        .present(content_picture(640, 360))
        .await
        .expect("free floor");
    let bob_screen = bob
        .present(content_picture(320, 180))
        .await
        .expect("Bob takes the floor");
    let stopped = stopped_for(&mut ada, ada_id).await;
    assert_eq!(stopped["reason"], "replaced");
    let bob_id = next_message(&mut ada, "presentationStarted").await["participantId"]
        .as_u64()
        .unwrap();
    // The control API stops whoever presents; then nobody does.
    let r = http(server.addr, "DELETE", "/api/rooms/floor/presentation", None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let stopped = stopped_for(&mut bob, bob_id).await;
    assert_eq!(stopped["reason"], "moderator");
    let r = http(server.addr, "DELETE", "/api/rooms/floor/presentation", None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    ada_screen.stop().await;
    bob_screen.stop().await;
    // The web client's own stop: present, stopPresenting, the event says `ended`.
    let s = bob
        .present(content_picture(320, 180))
        .await
        .expect("free again");
    bob.signal(serde_json::json!({"type": "stopPresenting"}));
    let stopped = stopped_for(&mut bob, bob_id).await;
    assert_eq!(stopped["reason"], "ended");
    s.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_capped_to_320x180_gets_the_content_full_frame() {
    let server = server_with(|_| {}).await;
    let mut ada = Client::join_ws(&server, "small", "Ada", RED, 440.0).await;
    let mut phone = Client::join_ws(&server, "small", "Phone", GREEN, 660.0).await;
    phone.signal(serde_json::json!({"type": "videoSize", "width": 320, "height": 180}));
    let screen = ada
        .present(content_picture(1280, 720))
        .await
        .expect("presents");
    next_message(&mut phone, "presentationStarted").await;
    let mut share = 0.0;
    wait_until("the content full frame at 320x180", 20, || {
        let Some(f) = phone.last_frame() else {
            return false;
        };
        if (f.width, f.height) != (320, 180) {
            return false;
        }
        let mut hits = 0;
        let mut all = 0;
        for y in (4..176).step_by(8) {
            for x in (4..316).step_by(8) {
                all += 1;
                hits += near(f.mean_yuv(x, y, 2, 2), YELLOW, 16.0) as u32;
            }
        }
        share = hits as f64 / all as f64;
        share >= 0.9
    })
    .await;
    eprintln!(
        "content covers {:.1} % of the 320x180 picture",
        share * 100.0
    );
    // A full-size viewer still sees the cameras in the strip.
    let f = ada.last_frame().unwrap();
    let (_, cams) = presentation_rects(2, f.width as u32, f.height as u32, (1280, 720));
    assert_eq!(cams.len(), 2);
    screen.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_and_garbage_content_is_bounded_like_a_camera() {
    let server = server_with(|c| {
        c.presentation.max_width = 640;
        c.presentation.max_height = 480;
    })
    .await;
    let mut ada = Client::join_ws(&server, "hostile", "Ada", RED, 440.0).await;
    let mut bob = Client::join_ws(&server, "hostile", "Bob", GREEN, 660.0).await;
    // Over the content limit (camera limits are larger): refused, the room is told.
    let big = bob
        .present(ContentPicture::Oversize(1280, 720))
        .await
        .expect("presents");
    let rejected = next_message(&mut ada, "inputRejected").await;
    assert!(
        rejected["reason"].as_str().unwrap().contains("1280x720"),
        "{rejected}"
    );
    // Ada still gets pictures, with Bob's camera in them.
    let before = ada.frames();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ada.frames() - before > 15,
        "Ada's picture goes on (15 fps with content)"
    );
    big.stop().await;
    // Garbage content: nothing shown from it, nothing else hurt.
    let junk = bob
        .present(ContentPicture::Garbage)
        .await
        .expect("presents");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ada.frames();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ada.frames() - before > 15,
        "Ada's picture goes on (15 fps with content)"
    );
    let f = ada.last_frame().unwrap();
    let (_, cams) = presentation_rects(2, f.width as u32, f.height as u32, (16, 9));
    assert!(
        near(mean_at(&f, cams[0].center()), GREEN, 14.0),
        "Bob's camera still shown"
    );
    junk.stop().await;
    // Endless content (~16 Mbit/s of one H.264 fragment that never ends): bounded by the
    // bytes-per-frame limit, like a camera's; memory stays put, nobody else suffers.
    let endless = bob
        .present(ContentPicture::Endless {
            packets_per_frame: 60,
        })
        .await
        .expect("presents");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss0, before) = (rss_mib(), ada.frames());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let grown = rss_mib() - rss0;
    let fps = (ada.frames() - before) as f64 / 4.0;
    eprintln!("endless content: Ada at {fps:.1} fps, RSS grew {grown:.1} MiB");
    assert!(
        fps > 10.0,
        "Ada's picture goes on at the content rate: {fps:.1} fps"
    );
    assert!(grown < 64.0, "RSS grew {grown:.1} MiB");
    endless.stop().await;
    let s = http(server.addr, "GET", "/metrics", None).await;
    assert!(
        s.body.contains("tessera_presentations_total"),
        "metrics count presentations"
    );
    server.stop().await;
}
