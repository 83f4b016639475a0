//! Integration: live output. WHEP watchers (`POST /whep/{room}`, recvonly) of a room of
//! three participants, each sending a colour and a tone: a watcher sees the audience view
//! (`grid-shared`: all three, nobody cut out) and hears all three tones; it is not a
//! participant; watchers on one rung share one encoder; limits refuse clearly; DELETE
//! ends the session; tokens need `subscribe`.

mod common;

use common::*;
use std::time::Duration;
use tessera::layout::LayoutSet;
use tessera::media::frame::rgb_to_yuv;
use tessera::mixer::tone_power;

const SECRET: &str = "test-secret-test-secret-test-secret!";

/// Three people: a name, a colour and a tone each.
const PEOPLE: [(&str, (u8, u8, u8), f32); 3] = THREE_PEOPLE;

fn close(a: (f64, f64, f64), b: (u8, u8, u8), tol: f64) -> bool {
    (a.0 - b.0 as f64).abs() < tol
        && (a.1 - b.1 as f64).abs() < tol
        && (a.2 - b.2 as f64).abs() < tol
}

async fn three_people(server: &TestServer, room: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for (name, rgb, tone) in PEOPLE {
        clients.push(Client::join_ws(server, room, name, rgb, tone).await);
    }
    clients
}

/// The encoders the room runs now (viewers' and watchers').
async fn encoders(server: &TestServer, room: &str) -> u64 {
    let rooms: serde_json::Value =
        serde_json::from_str(&http(server.addr, "GET", "/api/rooms", None).await.body).unwrap();
    rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room)
        .map_or(0, |r| r["videoEncoders"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_sees_and_hears_everyone_and_is_not_a_participant() {
    let server = TestServer::start().await;
    let clients = three_people(&server, "hall").await;
    let watcher = Client::watch_whep(server.addr, "hall", None)
        .await
        .expect("WHEP watch");
    assert!(watcher.answer.contains("a=sendonly"), "{}", watcher.answer);
    wait_until(
        "the watcher to decode 60 frames and 1.5 s of audio",
        60,
        || watcher.frames() >= 60 && watcher.last_audio(72_000).len() >= 72_000,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let frame = watcher.last_frame().expect("a decoded picture");
    let (w, h) = (frame.width as u32, frame.height as u32);
    // The audience view is the shared grid: all three, in join order.
    let grid = LayoutSet::builtin()
        .get("grid-shared")
        .unwrap()
        .place(3, w, h);
    for (rect, (name, rgb, _)) in grid.iter().zip(PEOPLE) {
        let (cx, cy) = rect.center();
        let (tw, th) = ((rect.w / 3) as usize, (rect.h / 3) as usize);
        let mean = frame.mean_yuv(cx as usize - tw / 2, cy as usize - th / 2, tw, th);
        let want = rgb_to_yuv(rgb.0, rgb.1, rgb.2);
        assert!(
            close(mean, want, 14.0),
            "tile {rect:?} should show {name} {want:?}, has {mean:?}"
        );
    }
    let audio = watcher.last_audio(48_000);
    let powers: Vec<f64> = PEOPLE.iter().map(|p| tone_power(&audio, p.2)).collect();
    eprintln!("watcher: tone powers {powers:?}");
    assert!(
        powers.iter().all(|&p| p > 1e6),
        "the watcher hears every tone: {powers:?}"
    );

    // Not a participant: not listed, nobody was told it joined; counted as a watcher.
    let room = server
        .rooms
        .get(&tessera::ids::RoomId::parse("hall").unwrap())
        .unwrap();
    assert_eq!(room.participants().len(), 3);
    assert_eq!(room.watcher_count(), 1);
    let metrics = http(server.addr, "GET", "/metrics", None).await.body;
    assert!(
        metrics.contains("tessera_watchers{room=\"hall\"} 1"),
        "{metrics}"
    );
    // The participants still hear each other but not the watcher (it sends nothing).
    for c in &clients {
        assert!(c.frames() > 0);
    }

    // DELETE ends the session; the watcher slot is free again.
    let loc = watcher.whip_location.clone().unwrap();
    assert!(loc.starts_with("/whep/hall/"), "{loc}");
    assert_eq!(http(server.addr, "DELETE", &loc, None).await.status, 200);
    wait_until("the watcher to be gone", 5, || room.watcher_count() == 0).await;
    assert_eq!(http(server.addr, "DELETE", &loc, None).await.status, 404);
    assert_eq!(room.participants().len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_watchers_add_one_encoder_per_rung_in_use() {
    let server = TestServer::start().await;
    let _clients = three_people(&server, "town").await;
    wait_until("the room's encoders to settle", 20, || {
        server
            .rooms
            .get(&tessera::ids::RoomId::parse("town").unwrap())
            .is_some_and(|r| r.summary().video_encoders == 3)
    })
    .await;
    let before = encoders(&server, "town").await;
    let mut watchers = Vec::new();
    for _ in 0..20 {
        watchers.push(
            Client::watch_whep(server.addr, "town", None)
                .await
                .expect("WHEP watch"),
        );
    }
    wait_until("every watcher to decode 30 frames", 60, || {
        watchers.iter().all(|w| w.frames() >= 30)
    })
    .await;
    let room = server
        .rooms
        .get(&tessera::ids::RoomId::parse("town").unwrap())
        .unwrap();
    // The rungs the watchers are on (their links are the room's links beyond the three).
    let people: Vec<u64> = room.participants().iter().map(|p| p.id.0).collect();
    let rungs = || {
        let mut r: Vec<u32> = room
            .links()
            .iter()
            .filter(|l| !people.contains(&l.participant_id.0))
            .filter_map(|l| l.rung)
            .collect();
        r.sort();
        r.dedup();
        r
    };
    // Private encoders (a newcomer's keyframe) rejoin the shared one within seconds.
    wait_until(
        "one encoder per watcher rung beside the participants'",
        20,
        || room.summary().video_encoders == before + rungs().len() as u64,
    )
    .await;
    eprintln!(
        "20 watchers on rungs {:?}: encoders {before} -> {}",
        rungs(),
        room.summary().video_encoders
    );
    assert_eq!(room.watcher_count(), 20);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_limits_refuse_clearly_and_tokens_need_subscribe() {
    let server = TestServer::start_with(|c| {
        c.live.max_watchers = 2;
        c.live.max_watchers_total = 3;
    })
    .await;
    let a = Client::watch_whep(server.addr, "r1", None).await.unwrap();
    let _b = Client::watch_whep(server.addr, "r1", None).await.unwrap();
    let refused = Client::watch_whep(server.addr, "r1", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("most watchers (2)"),
        "{}",
        refused.body
    );
    let _c = Client::watch_whep(server.addr, "r2", None).await.unwrap();
    let refused = Client::watch_whep(server.addr, "r2", None)
        .await
        .err()
        .unwrap();
    assert!(refused.body.contains("3 watchers"), "{}", refused.body);
    // Watchers alone keep a room running: it has no participant.
    assert!(server
        .rooms
        .get(&tessera::ids::RoomId::parse("r1").unwrap())
        .is_some());
    assert_eq!(server.rooms.participant_count(), 0);
    // Not SDP, not a room name: 415 / 400, nothing admitted.
    let r = http_with(
        server.addr,
        "POST",
        "/whep/r3",
        &[],
        Some(("text/plain", b"x")),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = http_with(
        server.addr,
        "POST",
        "/whep/r3",
        &[],
        Some(("application/sdp", b"v=0\r\nnot sdp")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(server
        .rooms
        .get(&tessera::ids::RoomId::parse("r3").unwrap())
        .is_none());
    a.close().await;
    server.stop().await;

    // With access control: a publish-only token cannot watch; a subscribe token can.
    let server = TestServer::start_with(|c| {
        c.api_secret = Some(SECRET.into());
    })
    .await;
    let anonymous = Client::watch_whep(server.addr, "sec", None)
        .await
        .err()
        .unwrap();
    assert_eq!(anonymous.status, 401);
    let publish_only = token("sec", r#"{"join": true, "subscribe": false}"#);
    let refused = Client::watch_whep(server.addr, "sec", Some(&publish_only))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    let watch = token("sec", r#"{"subscribe": true, "publish": false}"#);
    let ok = Client::watch_whep(server.addr, "sec", Some(&watch)).await;
    assert!(ok.is_ok());
    server.stop().await;
}

/// A token for `room` with these grants, signed with the server's secret.
fn token(room: &str, grants: &str) -> String {
    let now = tessera::auth::unix_now();
    let claims: tessera::auth::Claims = serde_json::from_value(serde_json::json!({
        "sub": "t",
        "room": room,
        "iat": now,
        "exp": now + 600,
        "grants": serde_json::from_str::<serde_json::Value>(grants).unwrap(),
    }))
    .unwrap();
    tessera::auth::Access::new(Some(SECRET), None, &[])
        .issue(&claims)
        .unwrap()
}

/// The codecs of an `ffprobe` answer's streams.
fn codec_names(probe: &serde_json::Value) -> Vec<&str> {
    probe["streams"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["codec_name"].as_str()).collect())
        .unwrap_or_default()
}

/// Runs `ffprobe` on `url`; its JSON.
fn ffprobe(url: &str) -> serde_json::Value {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            url,
        ])
        .output()
        .expect("ffprobe (Debian ffmpeg) installed by scripts/setup.sh --test");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_of_the_audience_view_validates_with_ffprobe_and_shows_everyone() {
    let server = TestServer::start_with(|c| {
        c.video.width = 640;
        c.video.height = 360;
    })
    .await;
    let _clients = three_people(&server, "lecture").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first request starts the live output and waits for its first segment.
    let first = http(server.addr, "GET", "/hls/lecture/index.m3u8", None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert!(
        first.body.contains("#EXT-X-MAP:URI=\"init.mp4\""),
        "{}",
        first.body
    );
    // Let a few segments accumulate, then read it as a player would.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let url = format!("http://{}/hls/lecture/index.m3u8", server.addr);
    let probe = tokio::task::spawn_blocking(move || ffprobe(&url))
        .await
        .unwrap();
    let streams = probe["streams"].as_array().unwrap();
    let codecs = codec_names(&probe);
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"opus"),
        "{probe}"
    );
    let video = streams.iter().find(|s| s["codec_name"] == "h264").unwrap();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    let playlist = http(server.addr, "GET", "/hls/lecture/index.m3u8", None)
        .await
        .body;
    let durations: Vec<f64> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse().unwrap())
        .collect();
    eprintln!("playlist:\n{playlist}");
    assert!(durations.len() >= 2, "{playlist}");
    assert!(
        durations.iter().all(|d| (1.5..=4.0).contains(d)),
        "segments of about 2 s: {durations:?}"
    );
    // The last segment's picture (decoded by ffmpeg) shows all three colours.
    let last = playlist
        .lines()
        .filter(|l| l.starts_with("segment-"))
        .last()
        .unwrap();
    let (init, seg) = (
        http_bytes(server.addr, "/hls/lecture/init.mp4").await,
        http_bytes(server.addr, &format!("/hls/lecture/{last}")).await,
    );
    let dir = std::env::temp_dir().join(format!("tessera-hls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("last.mp4");
    std::fs::write(&file, [init, seg].concat()).unwrap();
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 640 * 360 * 3);
    for (name, rgb, _) in PEOPLE {
        let n = out
            .stdout
            .chunks_exact(3)
            .filter(|p| {
                (p[0] as i32 - rgb.0 as i32).abs() < 40
                    && (p[1] as i32 - rgb.1 as i32).abs() < 40
                    && (p[2] as i32 - rgb.2 as i32).abs() < 40
            })
            .count();
        let share = n as f64 / (640.0 * 360.0);
        assert!(
            share > 0.08,
            "{name} covers {:.1}% of the HLS picture",
            share * 100.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Unknown files and rooms: 404; not a path escape.
    assert_eq!(
        http(server.addr, "GET", "/hls/lecture/segment-999999.m4s", None)
            .await
            .status,
        404
    );
    assert_eq!(
        http(server.addr, "GET", "/hls/lecture/..%2Fx", None)
            .await
            .status,
        404
    );
    assert_eq!(
        http(server.addr, "GET", "/hls/nobody/index.m3u8", None)
            .await
            .status,
        404
    );
    server.stop().await;
}

/// A real nginx with Debian's RTMP module on loopback, recording what is published to
/// `live/*` into `dir/<key>.flv`.
struct Nginx {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(dir: &std::path::Path, port: u16) -> Self {
        Self::start_with(dir, port, "")
    }

    /// With `extra` configuration at the top level (modules, a `stream` block).
    fn start_with(dir: &std::path::Path, port: u16, extra: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n{extra}\
                 daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
                 events {{}}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
                   application live {{ live on; record all; record_path {d}; record_unique on; }} }} }}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .spawn()
            .expect("nginx (Debian nginx-light + libnginx-mod-rtmp, installed by scripts/setup.sh --test)");
        let n = Self {
            child,
            dir: dir.to_owned(),
        };
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return n;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    fn kill(self) {
        drop(self);
    }

    /// The recordings so far (`<key>-<time>.flv`), oldest first.
    fn recordings(&self) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "flv"))
            .collect();
        v.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        v
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stream's state as the API shows it.
async fn stream_state(server: &TestServer, room: &str) -> serde_json::Value {
    let r = http(
        server.addr,
        "GET",
        &format!("/api/rooms/{room}/streams"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v[0].clone()
}

/// Decodes `file`'s video (first frame after `skip_s`) and audio with ffmpeg.
fn decode_flv(file: &std::path::Path, skip_s: f64) -> (Vec<u8>, Vec<i16>) {
    let video = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &skip_s.to_string(), "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(
        video.status.success(),
        "{}",
        String::from_utf8_lossy(&video.stderr)
    );
    let audio = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-vn", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .unwrap();
    assert!(
        audio.status.success(),
        "{}",
        String::from_utf8_lossy(&audio.stderr)
    );
    let pcm = audio
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    (video.stdout, pcm)
}

fn check_everyone(what: &str, rgb24: &[u8], pcm: &[i16], pixels: usize) {
    assert_eq!(rgb24.len(), pixels * 3, "{what}: one decoded frame");
    for (name, rgb, hz) in PEOPLE {
        let n = rgb24
            .chunks_exact(3)
            .filter(|p| {
                (p[0] as i32 - rgb.0 as i32).abs() < 40
                    && (p[1] as i32 - rgb.1 as i32).abs() < 40
                    && (p[2] as i32 - rgb.2 as i32).abs() < 40
            })
            .count();
        let share = n as f64 / pixels as f64;
        assert!(share > 0.08, "{what}: {name} covers {:.1}%", share * 100.0);
        let tail = &pcm[pcm.len().saturating_sub(48_000)..];
        let p = tone_power(tail, hz);
        assert!(p > 1e6, "{what}: {name}'s {hz} Hz tone has power {p:.0}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmp_push_to_nginx_carries_h264_and_aac_and_resumes_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("tessera-rtmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = 19350;
    let nginx = Nginx::start(&dir, port);
    let server = TestServer::start_with(|c| {
        c.video.width = 640;
        c.video.height = 360;
    })
    .await;
    let _clients = three_people(&server, "webinar").await;
    let mut events = EventStream::open(server.addr).await;
    let url = format!("rtmp://127.0.0.1:{port}/live/SECRETKEY42");
    let body = serde_json::json!({ "url": url }).to_string();
    let r = http_with(
        server.addr,
        "POST",
        "/api/rooms/webinar/streams",
        &[],
        Some(("application/json", body.as_bytes())),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        !r.body.contains("SECRETKEY42"),
        "the key in an answer: {}",
        r.body
    );
    let id = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let started = events.next_of("streamStarted", 15).await;
    assert_eq!(started["streamId"], id);
    assert!(!started.to_string().contains("SECRETKEY42"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(stream_state(&server, "webinar").await["state"], "live");

    // The far end goes away mid-stream, and comes back.
    nginx.kill();
    let failed = events.next_of("streamFailed", 15).await;
    assert_eq!(failed["streamId"], id);
    assert!(!failed.to_string().contains("SECRETKEY42"));
    let first = {
        let n = Nginx::start(&dir, port);
        let restarted = std::time::Instant::now();
        let again = events.next_of("streamStarted", 15).await;
        let took = restarted.elapsed();
        eprintln!("the push resumed {took:?} after nginx came back");
        assert_eq!(again["streamId"], id);
        assert!(took < Duration::from_secs(10), "resumed after {took:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        n
    };
    let s = stream_state(&server, "webinar").await;
    assert_eq!(
        (s["state"].as_str(), s["publishes"].as_u64()),
        (Some("live"), Some(2)),
        "{s}"
    );

    // Stop; nginx finalises its recordings: one per publish.
    let r = http(
        server.addr,
        "DELETE",
        &format!("/api/rooms/webinar/streams/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stopped = events.next_of("streamStopped", 15).await;
    assert_eq!(stopped["streamId"], id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let files = first.recordings();
    first.kill();
    assert_eq!(files.len(), 2, "one recording per publish: {files:?}");
    for f in &files {
        let p = f.to_str().unwrap().to_owned();
        let probe = tokio::task::spawn_blocking(move || ffprobe(&p))
            .await
            .unwrap();
        let codecs = codec_names(&probe);
        assert!(
            codecs.contains(&"h264") && codecs.contains(&"aac"),
            "{f:?}: {probe}"
        );
        let duration: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // (The first ends where nginx was killed, a few seconds in.)
        assert!(duration > 2.0, "{f:?}: {duration} s");
        let (rgb, pcm) = decode_flv(f, duration - 1.0);
        check_everyone(&format!("{f:?}"), &rgb, &pcm, 640 * 360);
    }
    // The key never reached the log lines the server wrote to nginx's side either.
    assert_eq!(
        server
            .rooms
            .get(&tessera::ids::RoomId::parse("webinar").unwrap())
            .unwrap()
            .streams
            .list()
            .len(),
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmps_push_through_a_tls_front_reaches_nginx_and_verifies_its_certificate() {
    let dir = std::env::temp_dir().join(format!("tessera-rtmps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A private CA's certificate for localhost (what a platform's ingest presents).
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let (rtmp_port, tls_port) = (19360, 19443);
    // nginx: RTMP on one port, and a TLS front (the stream module) that forwards to it.
    let front = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         stream {{ server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {d}/cert.pem;\n\
           ssl_certificate_key {d}/key.pem; proxy_pass 127.0.0.1:{rtmp_port}; }} }}\n",
        d = dir.display()
    );
    let nginx = Nginx::start_with(&dir, rtmp_port, &front);
    let ca = dir.join("cert.pem");
    let server = TestServer::start_with(move |c| {
        c.video.width = 640;
        c.video.height = 360;
        c.live.ca_file = Some(ca);
    })
    .await;
    let _clients = three_people(&server, "secure").await;
    let mut events = EventStream::open(server.addr).await;
    let post = |url: String| async move {
        let body = serde_json::json!({ "url": url }).to_string();
        http_with(
            server.addr,
            "POST",
            "/api/rooms/secure/streams",
            &[],
            Some(("application/json", body.as_bytes())),
        )
        .await
    };
    let r = post(format!("rtmps://localhost:{tls_port}/live/TLSKEY")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.body
            .contains(&format!("rtmps://localhost:{tls_port}/live/***")),
        "{}",
        r.body
    );
    let started = events.next_of("streamStarted", 15).await;
    assert!(started["url"].as_str().unwrap().starts_with("rtmps://"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = stream_state(&server, "secure").await;
    // (Still pictures and a tone: mostly AAC at 16 kB/s once synced at an IDR.)
    assert!(s["bytesSent"].as_u64().unwrap() > 20_000, "{s}");
    let id = s["id"].as_u64().unwrap();
    assert_eq!(
        http(
            server.addr,
            "DELETE",
            &format!("/api/rooms/secure/streams/{id}"),
            None
        )
        .await
        .status,
        200
    );
    events.next_of("streamStopped", 15).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let files = nginx.recordings();
    assert_eq!(files.len(), 1, "{files:?}");
    let p = files[0].to_str().unwrap().to_owned();
    let probe = tokio::task::spawn_blocking(move || ffprobe(&p))
        .await
        .unwrap();
    let codecs = codec_names(&probe);
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"aac"),
        "{probe}"
    );

    // A certificate the server does not trust (127.0.0.1 is not its name) fails, is
    // retried and reported, and never publishes.
    let r = post(format!("rtmps://127.0.0.1:{tls_port}/live/OTHER")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let failed = events.next_of("streamFailed", 15).await;
    eprintln!("untrusted: {failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("TLS"),
        "{failed}"
    );
    nginx.kill();
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}
