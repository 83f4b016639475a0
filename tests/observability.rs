//! What an operator watches: `/metrics` parsed by the Prometheus project's own parser
//! (Debian's `python3-prometheus-client`, strict OpenMetrics) with counters that move with a
//! real call, and the `/api/events` Server-Sent Events stream.

mod common;

use common::*;
use std::time::Duration;

const SECRET: &str = "observability-secret-observability!!";
const ADMIN_KEY: &str = "observability-admin-key-0123";

async fn secured(tweak: impl FnOnce(&mut tessera::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.api_secret = Some(SECRET.into());
        c.admin_key = Some(ADMIN_KEY.into());
        tweak(c);
    })
    .await
}

fn join_token(room: &str, name: &str) -> String {
    let now = tessera::auth::unix_now();
    tessera::auth::Access::new(Some(SECRET), None, &[])
        .issue(&tessera::auth::Claims {
            sub: name.into(),
            name: Some(name.into()),
            room: Some(room.into()),
            iat: now,
            exp: now + 600,
            grants: tessera::auth::Grants {
                join: true,
                ..Default::default()
            },
        })
        .unwrap()
}

async fn scrape(server: &TestServer) -> Samples {
    let auth = format!("Bearer {ADMIN_KEY}");
    let r = http_with(
        server.addr,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    parse_openmetrics(&r.body)
}

fn get(s: &Samples, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have: {:?}", s.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_parse_and_move_with_a_real_call() {
    let server = secured(|_| {}).await;
    let idle = scrape(&server).await;
    assert_eq!(get(&idle, "tessera_rooms{}"), 0.0);
    let room = "metricsroom";
    let a = Client::join_ws_token(
        server.addr,
        room,
        "A",
        Media::steady((200, 30, 30), 440.0),
        Some(&join_token(room, "A")),
    )
    .await;
    let b = Client::join_ws_token(
        server.addr,
        room,
        "B",
        Media::steady((30, 200, 30), 660.0),
        Some(&join_token(room, "B")),
    )
    .await;
    // Composites can reach the clients (name tiles) before any input is decoded: wait for
    // both, so that every counter has started before the first scrape.
    wait_until(
        "both receive media and the server decodes theirs",
        20,
        || {
            a.frames() > 10
                && b.frames() > 10
                && a.audio_packets() > 20
                && server.rooms.list().first().is_some_and(|r| {
                    r.stats
                        .video_frames_decoded
                        .load(std::sync::atomic::Ordering::Relaxed)
                        > 10
                })
        },
    )
    .await;
    let first = scrape(&server).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = scrape(&server).await;
    let r = format!("room=\"{room}\"");
    assert_eq!(get(&second, "tessera_rooms{}"), 1.0);
    assert_eq!(get(&second, "tessera_participants{kind=\"web\"}"), 2.0);
    assert_eq!(get(&second, "tessera_participants_joined_total{}"), 2.0);
    assert_eq!(get(&second, &format!("tessera_video_encoders{{{r}}}")), 2.0);
    // The output frame rate is exported: the configured 30, or a step down from it.
    let fps = get(&second, &format!("tessera_video_output_fps{{{r}}}"));
    let steps = get(
        &second,
        &format!("tessera_video_fps_steps_down_total{{{r}}}"),
    );
    assert!([30.0, 20.0, 15.0].contains(&fps), "fps {fps}");
    if steps == 0.0 {
        assert_eq!(fps, 30.0, "lowered without a step counted");
    }
    get(
        &second,
        &format!("tessera_video_encoder_waits_total{{{r}}}"),
    );
    for counter in [
        "tessera_rtp_packets_received_total",
        "tessera_rtp_payload_bytes_received_total",
        "tessera_rtp_packets_sent_total",
        "tessera_rtp_payload_bytes_sent_total",
        "tessera_video_ticks_total",
        "tessera_audio_ticks_total",
        "tessera_video_frames_encoded_total",
        "tessera_video_frames_decoded_total",
    ] {
        let key = format!("{counter}{{{r}}}");
        let (x, y) = (get(&first, &key), get(&second, &key));
        assert!(y > x && x > 0.0, "{key}: {x} then {y}");
    }
    // Two seconds of 50 audio ticks a second, give or take scheduling.
    let ticks = |s: &Samples| {
        get(
            s,
            &format!("tessera_audio_tick_lateness_seconds_count{{{r}}}"),
        )
    };
    let grew = ticks(&second) - ticks(&first);
    assert!((80.0..=130.0).contains(&grew), "audio ticks in 2 s: {grew}");
    let inf = get(
        &second,
        &format!("tessera_audio_tick_lateness_seconds_bucket{{le=\"+Inf\",{r}}}"),
    );
    assert_eq!(inf, ticks(&second));
    assert!(
        get(&second, "process_cpu_seconds_total{}") > get(&first, "process_cpu_seconds_total{}")
    );
    assert!(get(&second, "process_resident_memory_bytes{}") > 1e6);
    a.close().await;
    b.close().await;
    wait_until("the room ends", 10, || server.rooms.list().is_empty()).await;
    let after = scrape(&server).await;
    assert_eq!(get(&after, "tessera_rooms{}"), 0.0);
    assert_eq!(get(&after, "tessera_participants_left_total{}"), 2.0);
    assert_eq!(get(&after, "tessera_rooms_finished_total{}"), 1.0);
    server.stop().await;
}

/// Reads the SSE stream until `want` (in order) have all been seen, or panics after `secs`.
async fn expect_events(
    stream: &mut tokio::net::TcpStream,
    buf: &mut String,
    want: &[&str],
    secs: u64,
) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let mut at = 0;
        let all = want
            .iter()
            .all(|w| match buf[at..].find(&format!("event: {w}\n")) {
                Some(i) => {
                    at += i + 1;
                    true
                }
                None => false,
            });
        if all {
            return;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("waiting for {want:?}; stream so far:\n{buf}"))
            .unwrap();
        assert!(n > 0, "stream closed; so far:\n{buf}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_event_stream_tells_rooms_participants_and_recordings() {
    use tokio::io::AsyncWriteExt;
    let dir = tempdir();
    let d = dir.clone();
    let server = secured(move |c| c.recording.dir = d).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    let room = "eventroom";
    let a = Client::join_ws_token(
        server.addr,
        room,
        "Eve",
        Media::steady((10, 10, 200), 500.0),
        Some(&join_token(room, "Eve")),
    )
    .await;
    expect_events(&mut s, &mut buf, &["roomStarted", "participantJoined"], 10).await;
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(buf.contains("text/event-stream"));
    assert!(buf.contains("\"name\":\"Eve\""), "{buf}");
    let auth = format!("Bearer {ADMIN_KEY}");
    let path = format!("/api/rooms/{room}/recording");
    let r = http_with(
        server.addr,
        "POST",
        &path,
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // (Eve alone sees an empty picture: it does not change, so it comes once a second.)
    wait_until("frames", 10, || a.frames() >= 3).await;
    let r = http_with(
        server.addr,
        "DELETE",
        &path,
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    expect_events(&mut s, &mut buf, &["recordingFinished"], 10).await;
    a.close().await;
    expect_events(
        &mut s,
        &mut buf,
        &[
            "roomStarted",
            "participantJoined",
            "recordingFinished",
            "participantLeft",
            "roomFinished",
        ],
        10,
    )
    .await;
    // A participant's token is not enough for the stream.
    let t = format!("Bearer {}", join_token(room, "Eve"));
    let r = http_with(
        server.addr,
        "GET",
        "/api/events",
        &[("Authorization", &t)],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tessera-events-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
