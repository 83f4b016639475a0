//! Recording, checked with real tools: real WebRTC clients send distinct colours and
//! tones; the file is inspected with `ffprobe` (errors, streams, codecs, duration) and
//! decoded with `ffmpeg` (every participant's colour where the recording layout puts it,
//! every tone in the mix, audio/video sync of a flash+beep marker). A server process is
//! killed with SIGKILL and its file must still play up to ≤ 2 s before the kill; a full
//! disk is refused at start and stops only the recording when it fills up mid-way.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tessera::layout::LayoutSet;
use tessera::media::frame::rgb_to_yuv;

const RW: u32 = 320;
const RH: u32 = 180;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tessera-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_recordings(dir: &Path) -> impl FnOnce(&mut tessera::config::Config) + '_ {
    move |c| {
        c.recording.dir = dir.to_owned();
        c.recording.width = RW;
        c.recording.height = RH;
        c.recording.bitrate_kbps = 400;
    }
}

/// `ffprobe -v error` output (must be empty) and the parsed JSON description.
fn ffprobe(path: &Path) -> (String, serde_json::Value) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe is installed (scripts/setup.sh --test)");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
    )
}

fn stream<'a>(probe: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    probe["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["codec_type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} stream in {probe}"))
}

fn duration(probe: &serde_json::Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// Decodes the whole audio track to 48 kHz mono s16.
fn decode_audio(path: &Path) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vn", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .unwrap();
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Per-frame (pts seconds, mean Y, U, V) of a crop, via ffmpeg's showinfo filter.
fn frame_means(path: &Path, x: u32, y: u32, w: u32, h: u32) -> Vec<(f64, f64, f64, f64)> {
    let out = Command::new("ffmpeg")
        .args(["-v", "info", "-i"])
        .arg(path)
        .args([
            "-an",
            "-vf",
            &format!("crop={w}:{h}:{x}:{y},showinfo"),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter(|l| l.contains("pts_time:") && l.contains("mean:["))
        .filter_map(|l| {
            let t: f64 = l
                .split("pts_time:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let m = l.split("mean:[").nth(1)?.split(']').next()?;
            let v: Vec<f64> = m
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Some((t, *v.first()?, *v.get(1)?, *v.get(2)?))
        })
        .collect()
}

fn near(m: (f64, f64, f64), rgb: (u8, u8, u8)) -> bool {
    let c = rgb_to_yuv(rgb.0, rgb.1, rgb.2);
    (m.0 - c.0 as f64).abs() < 16.0
        && (m.1 - c.1 as f64).abs() < 16.0
        && (m.2 - c.2 as f64).abs() < 16.0
}

const PEOPLE: [(&str, (u8, u8, u8), f32); 3] = [
    ("Red", (220, 30, 30), 400.0),
    ("Green", (30, 200, 30), 650.0),
    ("Blue", (30, 30, 220), 1000.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recording_holds_every_participant_and_every_tone() {
    let dir = tempdir("rec");
    let server = TestServer::start_with(small_recordings(&dir)).await;
    let mut clients = Vec::new();
    for (name, rgb, tone) in PEOPLE {
        clients.push(Client::join_ws(&server, "rec", name, rgb, tone).await);
    }
    wait_until("clients to receive media", 30, || {
        clients.iter().all(|c| c.frames() > 20)
    })
    .await;
    // Joined participants are told about the recording when it starts.
    let started = Instant::now();
    let resp = http(server.addr, "POST", "/api/rooms/rec/recording", None).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let info: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    let id = info["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("rec_") && info["active"] == true);
    assert_eq!(
        http(server.addr, "POST", "/api/rooms/rec/recording", None)
            .await
            .status,
        409,
        "already recording"
    );
    assert_eq!(
        http(server.addr, "POST", "/api/rooms/nobody/recording", None)
            .await
            .status,
        404
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let resp = http(server.addr, "DELETE", "/api/rooms/rec/recording", None).await;
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        http(server.addr, "DELETE", "/api/rooms/rec/recording", None)
            .await
            .status,
        404
    );

    let path = dir.join(format!("{id}.mp4"));
    let (errors, probe) = ffprobe(&path);
    assert!(errors.is_empty(), "ffprobe -v error printed: {errors}");
    let v = stream(&probe, "video");
    let a = stream(&probe, "audio");
    assert_eq!(
        (
            v["codec_name"].as_str(),
            v["width"].as_u64(),
            v["height"].as_u64()
        ),
        (Some("h264"), Some(RW as u64), Some(RH as u64))
    );
    assert_eq!(a["codec_name"].as_str(), Some("opus"));
    let d = duration(&probe);
    assert!(
        (d - wall).abs() <= 0.5,
        "recording lasts {d:.2} s, wall time {wall:.2} s"
    );

    // Every participant's colour where the grid puts them (last frames).
    let rects = LayoutSet::builtin().get("grid").unwrap().place(3, RW, RH);
    for (r, (name, rgb, _)) in rects.iter().zip(PEOPLE) {
        let (cx, cy) = r.center();
        let means = frame_means(
            &path,
            cx - r.w / 6,
            cy - r.h / 6,
            r.w / 3 & !1,
            r.h / 3 & !1,
        );
        let last = means.last().expect("decoded frames");
        assert!(
            near((last.1, last.2, last.3), rgb),
            "{name}'s tile {r:?} shows {last:?}"
        );
    }
    // Every tone in the mix.
    let pcm = decode_audio(&path);
    assert!(pcm.len() > 48_000 * 4, "{} samples", pcm.len());
    let tail = &pcm[pcm.len() - 48_000..];
    for (name, _, tone) in PEOPLE {
        assert!(
            tone_power(tail, tone) > 1e6,
            "{name}'s tone {tone} Hz missing from the recording"
        );
    }

    // Listed and downloadable.
    let list: serde_json::Value =
        serde_json::from_str(&http(server.addr, "GET", "/api/recordings", None).await.body)
            .unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.as_str())
        .expect("listed");
    assert_eq!(entry["room"], "rec");
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(entry["sizeBytes"].as_u64(), Some(size));
    assert!((entry["durationSeconds"].as_f64().unwrap() - d).abs() < 0.2);
    let dl = http(server.addr, "GET", &format!("/api/recordings/{id}"), None).await;
    assert_eq!(dl.status, 200);
    assert_eq!(dl.header("content-type"), Some("video/mp4"));
    assert_eq!(
        http(server.addr, "GET", "/api/recordings/..%2Fsecret", None)
            .await
            .status,
        400
    );
    for c in &clients {
        c.close().await;
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_and_video_stay_in_sync_across_joins_leaves_and_mutes() {
    let dir = tempdir("sync");
    // The recording announcement is speech with energy at the 1 kHz this test times the
    // tone's onset by (once in CI it was taken for the onset): off here, it has its own
    // tests.
    let server = TestServer::start_with(|c| {
        small_recordings(&dir)(c);
        c.recording.announce = false;
    })
    .await;
    let a = Client::join_ws(&server, "sync", "Ada", (220, 30, 30), 400.0).await;
    let b = Client::join_ws(&server, "sync", "Bob", (30, 200, 30), 650.0).await;
    wait_until("media", 30, || a.frames() > 20 && b.frames() > 20).await;
    assert_eq!(
        http(server.addr, "POST", "/api/rooms/sync/recording", None)
            .await
            .status,
        201
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Late joiner whose camera flips from white to blue while its 1 kHz tone starts.
    let switch = Instant::now() + Duration::from_millis(3500);
    let marker = Media {
        marker: Some((switch, (235, 235, 235))),
        ..Media::steady((30, 30, 220), 1000.0)
    };
    let c = Client::join_ws_at(server.addr, "sync", "Cy", marker).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.signal(serde_json::json!({"type":"mute","audio":true}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.signal(serde_json::json!({"type":"leave"})); // Bob leaves
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.close().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        http(server.addr, "DELETE", "/api/rooms/sync/recording", None)
            .await
            .status,
        200
    );
    let id = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "mp4"))
        .unwrap();
    let (errors, probe) = ffprobe(&id);
    assert!(errors.is_empty(), "{errors}");
    let v_start: f64 = stream(&probe, "video")["start_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let a_start: f64 = stream(&probe, "audio")["start_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Video: the first frame where Cy's tile turns from white to blue. Rather than assume
    // where the layout put Cy, look at a grid of spots for that transition.
    let spots: Vec<(u32, u32)> = (1..5)
        .flat_map(|i| (1..4).map(move |j| (i * RW / 5, j * RH / 4)))
        .collect();
    let flips: Vec<f64> = spots
        .iter()
        .filter_map(|&(cx, cy)| {
            let means = frame_means(&id, cx - 10, cy - 10, 20, 20);
            let white_seen = means.iter().any(|m| near((m.1, m.2, m.3), (235, 235, 235)));
            means
                .iter()
                .find(|m| white_seen && near((m.1, m.2, m.3), (30, 30, 220)))
                .map(|m| m.0)
        })
        .collect();
    let t_video = *flips.first().expect("Cy's tile turned blue");
    // Audio: the first 10 ms window where the 1 kHz tone is clearly present.
    let pcm = decode_audio(&id);
    let win = 480;
    let onset = pcm
        .chunks(win)
        .position(|w| w.len() == win && tone_power(w, 1000.0) > 4e6)
        .expect("tone onset");
    let t_audio = a_start + (onset * win) as f64 / 48_000.0;
    let skew_ms = (t_audio - t_video) * 1000.0;
    eprintln!("A/V sync: video flip at {t_video:.3} s (stream start {v_start:.3}), tone onset at {t_audio:.3} s: audio − video = {skew_ms:.1} ms");
    assert!(skew_ms.abs() <= 45.0, "A/V skew {skew_ms:.1} ms");
    a.close().await;
    c.close().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the real binary (so it can be killed) with a recording directory and every room
/// recorded automatically.
fn spawn_server(dir: &Path, auto: bool) -> (std::process::Child, std::net::SocketAddr) {
    spawn_server_with(dir, &format!("[video]\nwidth = 320\nheight = 180\nbitrate_kbps = 400\n[recording]\ndir = \"{}\"\nauto = {auto}\nwidth = {RW}\nheight = {RH}\nbitrate_kbps = 400\n", dir.join("rec").display()))
}

fn spawn_server_with(dir: &Path, config: &str) -> (std::process::Child, std::net::SocketAddr) {
    let cfg = dir.join("tessera.toml");
    std::fs::write(&cfg, config).unwrap();
    spawn_tessera(&cfg, None)
}

fn only_recording(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("rec"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "mp4"))
        .expect("a recording file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_leaves_a_playable_file_up_to_two_seconds_before_the_kill() {
    let dir = tempdir("kill");
    let (mut child, addr) = spawn_server(&dir, true);
    let t0 = Instant::now();
    let a = Client::join_ws_at(addr, "k", "Ada", Media::steady((220, 30, 30), 400.0)).await;
    let b = Client::join_ws_at(addr, "k", "Bob", Media::steady((30, 30, 220), 650.0)).await;
    wait_until("media", 30, || a.frames() > 20 && b.frames() > 20).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alive = t0.elapsed().as_secs_f64();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let path = only_recording(&dir);
    let (errors, probe) = ffprobe(&path);
    assert!(errors.is_empty(), "ffprobe after SIGKILL: {errors}");
    let d = duration(&probe);
    eprintln!("after SIGKILL: {d:.2} s of {alive:.2} s survived");
    assert!(
        d >= alive - 2.0,
        "only {d:.2} s of {alive:.2} s survived the kill"
    );
    assert!(!decode_audio(&path).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finalises_the_recording_with_the_full_duration() {
    let dir = tempdir("term");
    let (mut child, addr) = spawn_server(&dir, false);
    let a = Client::join_ws_at(addr, "t", "Ada", Media::steady((220, 30, 30), 400.0)).await;
    // (Alone, Ada's picture is empty and unchanging: a refresh a second.)
    wait_until("media", 30, || a.frames() >= 3).await;
    // Started through the API so the wall-clock reference is exact.
    let t0 = Instant::now();
    assert_eq!(
        http(addr, "POST", "/api/rooms/t/recording", None)
            .await
            .status,
        201
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alive = t0.elapsed().as_secs_f64();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    let (errors, probe) = ffprobe(&only_recording(&dir));
    assert!(errors.is_empty(), "{errors}");
    let d = duration(&probe);
    eprintln!("recording {d:.2} s, wall {alive:.2} s");
    // What this checks is the tail: SIGTERM must not cut the recording short of the moment
    // it came. Its head may start up to a second late on a loaded machine (the first
    // picture waits for its encoder; FACTS.md: 2.05 s of 3.00 s seen under CI load), so
    // the slack is on that side only.
    assert!(
        d <= alive + 0.5 && d >= alive - 1.2,
        "recording {d:.2} s vs wall {alive:.2} s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_full_load_exits_within_5_s_with_the_recording_finalised() {
    let dir = tempdir("term-load");
    // Personal 1080p60 composites plus a 1080p recording: far more than two cores encode
    // in 16 ms, so every video tick is overdue when SIGTERM arrives.
    let (mut child, addr) = spawn_server_with(
        &dir,
        &format!(
            "[video]\nwidth = 1920\nheight = 1080\nfps = 60\nbitrate_kbps = 2500\n\
             [recording]\ndir = \"{}\"\nauto = true\nwidth = 1920\nheight = 1080\n\
             bitrate_kbps = 2500\n",
            dir.join("rec").display()
        ),
    );
    let mut clients = Vec::new();
    for (i, rgb) in [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30)]
        .into_iter()
        .enumerate()
    {
        let media = Media::steady(rgb, 400.0 + 150.0 * i as f32);
        clients.push(Client::join_ws_at(addr, "busy", &format!("P{i}"), media).await);
    }
    let t0 = Instant::now();
    wait_until("media", 30, || clients.iter().all(|c| c.frames() > 5)).await;
    // The precondition: the server encodes far fewer frames than 4 viewers x 60 fps.
    let encoded = |body: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v[0]["videoFramesEncoded"].as_u64().unwrap_or(0)
    };
    let e0 = encoded(&http(addr, "GET", "/api/rooms", None).await.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let e1 = encoded(&http(addr, "GET", "/api/rooms", None).await.body);
    let fps = (e1 - e0) as f64 / 3.0;
    eprintln!("encoded {fps:.0} frames/s for 4 viewers at 60 fps (240 if not overloaded)");
    assert!(
        fps < 200.0,
        "the server is not overloaded ({fps:.0} frames/s)"
    );
    let alive = t0.elapsed().as_secs_f64();

    let t = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let took = t.elapsed();
    eprintln!("SIGTERM under load: exited after {took:?} ({status:?})");
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let path = only_recording(&dir);
    let (errors, probe) = ffprobe(&path);
    assert!(
        errors.is_empty(),
        "recording after SIGTERM under load: {errors}"
    );
    let d = duration(&probe);
    eprintln!("recording: {d:.2} s for {alive:.2} s of room time");
    assert!(
        d >= alive - 2.0,
        "recording {d:.2} s, room ran {alive:.2} s"
    );
    drop(clients);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mounts a small tmpfs. Needs root in a private mount namespace, so the test that uses it
/// is `#[ignore]`d (cargo reports it as ignored, never as passed); scripts/test.sh runs the
/// tests under `unshare -n -m` and includes it there.
fn mount_small_tmpfs(dir: &Path, size: &str) {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "could not mount a tmpfs at {} (run as root under `unshare -m`)",
        dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root in a private mount namespace: scripts/test.sh runs it under unshare -n -m"]
async fn a_full_disk_is_refused_at_start_and_stops_only_the_recording_when_it_fills() {
    let dir = tempdir("full");
    mount_small_tmpfs(&dir, "6m");
    let server = TestServer::start_with(small_recordings(&dir)).await;
    let a = Client::join_ws(&server, "full", "Ada", (220, 30, 30), 400.0).await;
    let b = Client::join_ws(&server, "full", "Bob", (30, 30, 220), 650.0).await;
    wait_until("media", 30, || a.frames() > 20 && b.frames() > 20).await;

    // Almost full: refused at start with a clear error.
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![0u8; 5 * 1024 * 1024]).unwrap();
    let resp = http(server.addr, "POST", "/api/rooms/full/recording", None).await;
    assert_eq!(resp.status, 507, "{}", resp.body);
    assert!(resp.body.contains("disk full"), "{}", resp.body);

    // Room for the start check, then the disk fills up while recording.
    std::fs::remove_file(&filler).unwrap();
    let resp = http(server.addr, "POST", "/api/rooms/full/recording", None).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let free = tessera::recording::free_bytes(&dir).unwrap();
    // Leave a few pages: the audio alone (~4 KB/s) fills them within seconds.
    std::fs::write(&filler, vec![0u8; (free - 12 * 1024) as usize]).unwrap();
    let before = (a.frames(), b.frames());
    let mut error = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let list: serde_json::Value =
            serde_json::from_str(&http(server.addr, "GET", "/api/rooms", None).await.body).unwrap();
        if let Some(e) = list[0]["recording"]["error"].as_str() {
            error = Some(e.to_owned());
            break;
        }
    }
    let error = error.expect("the recording reports the full disk");
    assert!(error.contains("disk full"), "{error}");
    // The room is unaffected.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        a.frames() > before.0 + 30 && b.frames() > before.1 + 30,
        "media stalled when the disk filled"
    );
    let resp = http(server.addr, "DELETE", "/api/rooms/full/recording", None).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.contains("disk full"));
    // What was written before the disk filled still plays.
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "mp4"))
        .unwrap();
    let (errors, _) = ffprobe(&path);
    assert!(errors.is_empty(), "{errors}");
    a.close().await;
    b.close().await;
    server.stop().await;
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
}

/// RMS of 16-bit samples.
fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// When a recording starts, everyone hears "this conference is now being recorded": a web
/// participant and a phone caller (both silent themselves, so what they hear is the
/// announcement), and it is in the file too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_web_participant_and_a_caller_hear_the_recording_announcement() {
    use common::sip_caller::{run, Caller};
    let dir = tempdir("announce");
    let server = TestServer::start_with(small_recordings(&dir)).await;
    let mut config = tessera::config::Config::default();
    small_recordings(&dir)(&mut config);
    let sip = tessera::sip::start(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::new(config),
        server.rooms.clone(),
    )
    .await
    .unwrap();
    // A silent web participant (a 0 Hz tone) and a silent caller.
    let web = Client::join_ws_at(
        server.addr,
        "announce",
        "Web",
        Media::steady((200, 200, 200), 0.0),
    )
    .await;
    let sip_addr = sip.addr;
    let caller = tokio::task::spawn_blocking(move || {
        let mut c = Caller::new(sip_addr, None);
        assert_eq!(c.call("announce"), 200);
        let mut k = 0;
        // Let the join tone pass, then measure 1 s of quiet.
        run(&mut [&mut c], &mut k, 2.0);
        c.heard.clear();
        run(&mut [&mut c], &mut k, 1.0);
        let quiet = rms(&c.heard);
        (c, k, quiet)
    });
    let (mut c, mut k, caller_quiet) = caller.await.unwrap();
    let web_quiet = rms(&web.last_audio(48_000));
    let resp = http(server.addr, "POST", "/api/rooms/announce/recording", None).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let caller = tokio::task::spawn_blocking(move || {
        c.heard.clear();
        run(&mut [&mut c], &mut k, 3.0);
        let loud = rms(&c.heard);
        c.bye();
        loud
    });
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let web_loud = rms(&web.last_audio(3 * 48_000));
    let caller_loud = caller.await.unwrap();
    println!(
        "announcement RMS: caller {caller_quiet:.0} -> {caller_loud:.0}, web {web_quiet:.0} -> {web_loud:.0}"
    );
    assert!(
        caller_loud > 300.0 && caller_loud > 10.0 * caller_quiet.max(1.0),
        "the caller did not hear the announcement: {caller_quiet:.0} -> {caller_loud:.0}"
    );
    assert!(
        web_loud > 300.0 && web_loud > 10.0 * web_quiet.max(1.0),
        "the web participant did not hear the announcement: {web_quiet:.0} -> {web_loud:.0}"
    );
    web.close().await;
    let _ = http(server.addr, "DELETE", "/api/rooms/announce/recording", None).await;
    sip.stop();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[recording] announce = false`: a recording starts without the announcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_announce_off_a_recording_starts_silently() {
    let dir = tempdir("quiet");
    let server = TestServer::start_with(|c| {
        small_recordings(&dir)(c);
        c.recording.announce = false;
    })
    .await;
    let web = Client::join_ws_at(
        server.addr,
        "quiet",
        "Web",
        Media::steady((200, 200, 200), 0.0),
    )
    .await;
    wait_until("the client to receive 1 s of audio", 30, || {
        web.last_audio(48_000).len() >= 48_000
    })
    .await;
    let resp = http(server.addr, "POST", "/api/rooms/quiet/recording", None).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let heard = rms(&web.last_audio(3 * 48_000));
    assert!(
        heard < 30.0,
        "heard {heard:.0} RMS with the announcement off"
    );
    web.close().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
