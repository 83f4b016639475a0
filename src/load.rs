//! `tessera load`: a load generator that joins synthetic participants to a running server
//! over WHIP with the `webrtc` crate — real ICE, DTLS, SRTP and congestion feedback, so the
//! server is measured with its network path — at a given rate, shows a progress bar, holds
//! them for a while and prints a summary: tracks expected and received, bitrate, packet
//! loss, join times, errors, and (given the admin key) the server's CPU from `/metrics`.
//!
//! Every participant sends the same pre-encoded content (a synthetic camera in H.264, one
//! second looped, and an Opus tone), so the generator's own cost is packetising and SRTP,
//! not encoding.

use crate::bench::synth;
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

/// `tessera load` options.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The server's base URL (http:// only: run the generator next to the server).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Room name (with --rooms > 1: ROOM-1 … ROOM-M).
    #[arg(long, default_value = "load")]
    pub room: String,
    /// Rooms to fill.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Participants per room.
    #[arg(long, short = 'n', default_value_t = 9)]
    pub participants: usize,
    /// Joins per second.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Seconds to hold everyone once all have joined (the measured window).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Audio only (like phones): no video sent, none asked for.
    #[arg(long)]
    pub audio_only: bool,
    /// Size of the video each participant sends.
    #[arg(long, default_value = "640x360")]
    pub video_size: String,
    /// Bitrate of the video each participant sends (kbit/s).
    #[arg(long, default_value_t = 500)]
    pub video_kbps: u32,
    /// API secret: each participant gets a join token signed with it.
    #[arg(long, env = "TESSERA_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Admin key: the server's CPU is read from /metrics over the measured window.
    #[arg(long, env = "TESSERA_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Local address the participants' media sockets bind to.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// WHEP watchers per room, joined after the participants (recvonly: they receive the
    /// audience view and the mix and send nothing).
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Record each room over the measured window (needs --admin-key).
    #[arg(long)]
    pub record: bool,
    /// Push each room to this RTMP URL over the measured window (needs --admin-key).
    #[arg(long)]
    pub rtmp: Option<String>,
    /// Play each room's HLS over the measured window, as a player does (the playlist and
    /// every new segment).
    #[arg(long)]
    pub hls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--url must be http://HOST:PORT ({0})")]
    Url(String),
    #[error("--video-size: {0}")]
    Size(String),
    #[error("{0}")]
    Setup(String),
}

/// What one participant saw.
#[derive(Default)]
struct Counters {
    tracks: AtomicU64,
    video_packets: AtomicU64,
    video_bytes: AtomicU64,
    audio_packets: AtomicU64,
    audio_bytes: AtomicU64,
    /// Packets missing by sequence number, over the received tracks.
    lost: AtomicU64,
    /// Microseconds from the WHIP POST to the first media packet received (0 = none yet).
    first_media_us: AtomicU64,
}

struct Handler {
    counters: Arc<Counters>,
    gathered: Arc<Notify>,
    started: Instant,
    /// True once ICE + DTLS are up (media written before would be dropped).
    connected: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.connected
            .send_replace(state == RTCPeerConnectionState::Connected);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (c, started) = (self.counters.clone(), self.started);
        c.tracks.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let video = track.kind().await == RtpCodecKind::Video;
            let mut last_seq: Option<u16> = None;
            while let Some(evt) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = evt else {
                    continue;
                };
                if c.first_media_us.load(Relaxed) == 0 {
                    let us = started.elapsed().as_micros().max(1) as u64;
                    let _ = c.first_media_us.compare_exchange(0, us, Relaxed, Relaxed);
                }
                let seq = pkt.header.sequence_number;
                if let Some(prev) = last_seq {
                    let gap = seq.wrapping_sub(prev);
                    // Forward jumps count their holes; reordering (a "backward" jump) does not.
                    if (2..0x8000).contains(&gap) {
                        c.lost.fetch_add(u64::from(gap - 1), Relaxed);
                    }
                    if gap < 0x8000 {
                        last_seq = Some(seq);
                    }
                } else {
                    last_seq = Some(seq);
                }
                let (p, b) = if video {
                    (&c.video_packets, &c.video_bytes)
                } else {
                    (&c.audio_packets, &c.audio_bytes)
                };
                p.fetch_add(1, Relaxed);
                b.fetch_add(pkt.payload.len() as u64, Relaxed);
            }
        });
    }
}

/// The content every participant sends.
struct Content {
    video: Vec<Bytes>,
    audio: Vec<Bytes>,
}

struct Participant {
    pc: Arc<dyn PeerConnection>,
    counters: Arc<Counters>,
    signaling: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One finished run.
#[derive(serde::Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub participants: usize,
    pub rooms: usize,
    pub audio_only: bool,
    pub joined: usize,
    pub errors: Vec<String>,
    pub tracks_expected: usize,
    pub tracks_received: u64,
    /// Received per participant over the measured window (kbit/s, payload), mean.
    pub video_kbps_per_participant: f64,
    pub audio_kbps_per_participant: f64,
    pub packet_loss_percent: f64,
    pub join_signaling_ms: (f64, f64),
    pub join_first_media_ms: (f64, f64),
    pub window_s: f64,
    /// Server CPU over the window (% of one core), when the admin key was given.
    pub server_cpu_percent: Option<f64>,
    /// WHEP watchers joined, and how many of them received media.
    pub watchers: usize,
    pub watchers_receiving: usize,
    /// This generator's own CPU over the window (% of one core).
    pub generator_cpu_percent: f64,
}

fn host_port(url: &str) -> Result<String, LoadError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| LoadError::Url(url.into()))?;
    Ok(rest.trim_end_matches('/').to_owned())
}

/// One HTTP/1.1 request (Content-Length bodies, `Connection: close`); status and body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, String, Vec<(String, String)>), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(body).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status from {addr}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, body.to_owned(), headers))
}

/// A join token, or for a watcher a subscribe-only one.
fn token_with(args: &LoadArgs, room: &str, name: &str, watcher: bool) -> Option<String> {
    let secret = args.api_secret.as_deref()?;
    let now = crate::auth::unix_now();
    crate::auth::Access::new(Some(secret), None, &[]).issue(&crate::auth::Claims {
        sub: name.into(),
        name: Some(name.into()),
        room: Some(room.into()),
        iat: now,
        exp: now + 24 * 3600,
        grants: crate::auth::Grants {
            join: !watcher,
            publish: !watcher,
            ..Default::default()
        },
    })
}

async fn join(
    args: &LoadArgs,
    addr: &str,
    room: &str,
    name: &str,
    content: &Arc<Content>,
) -> Result<Participant, String> {
    join_as(args, addr, room, name, content, false).await
}

/// A participant (WHIP, sending), or with `watcher` a WHEP watcher (recvonly).
async fn join_as(
    args: &LoadArgs,
    addr: &str,
    room: &str,
    name: &str,
    content: &Arc<Content>,
    watcher: bool,
) -> Result<Participant, String> {
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let gathered = Arc::new(Notify::new());
    let connected = tokio::sync::watch::channel(false).0;
    let mut engine = crate::transport::media_engine().map_err(|e| e.to_string())?;
    let registry =
        register_default_interceptors(Registry::new(), &mut engine).map_err(|e| e.to_string())?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(50))
        .with_include_loopback_candidate(args.bind.is_loopback())
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            counters: counters.clone(),
            gathered: gathered.clone(),
            started,
            connected: connected.clone(),
        }))
        .with_udp_addrs(vec![format!("{}:0", args.bind)])
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let (assrc, vssrc) = (rand::random::<u32>(), rand::random::<u32>());
    let at = crate::transport::local_track(RtpCodecKind::Audio, name, assrc, None, None);
    if watcher {
        use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            };
            pc.add_transceiver_from_kind(kind, Some(init))
                .await
                .map_err(|e| e.to_string())?;
        }
    } else {
        pc.add_track(at.clone()).await.map_err(|e| e.to_string())?;
    }
    let vt = if args.audio_only || watcher {
        None
    } else {
        let vt = crate::transport::local_track(RtpCodecKind::Video, name, vssrc, None, None);
        pc.add_track(vt.clone()).await.map_err(|e| e.to_string())?;
        Some(vt)
    };
    let offer = pc.create_offer(None).await.map_err(|e| e.to_string())?;
    let wait = gathered.notified();
    pc.set_local_description(offer)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
    let offer = pc
        .local_description()
        .await
        .ok_or("no local description")?
        .sdp;
    let mut headers = vec![("Content-Type", "application/sdp".to_owned())];
    if let Some(t) = token_with(args, room, name, watcher) {
        headers.push(("Authorization", format!("Bearer {t}")));
    }
    let path = if watcher {
        format!("/whep/{room}")
    } else {
        format!("/whip/{room}?name={name}")
    };
    let (status, answer, _) = http(addr, "POST", &path, &headers, offer.as_bytes()).await?;
    if status != 201 {
        let _ = pc.close().await;
        let what = if watcher { "WHEP" } else { "WHIP" };
        return Err(format!("{what} {status}: {}", answer.trim()));
    }
    if watcher {
        let desc = RTCSessionDescription::answer(answer).map_err(|e| e.to_string())?;
        pc.set_remote_description(desc)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Participant {
            pc,
            counters,
            signaling: started.elapsed(),
            tasks: Vec::new(),
        });
    }
    let signaling = started.elapsed();
    let desc = RTCSessionDescription::answer(answer.clone()).map_err(|e| e.to_string())?;
    pc.set_remote_description(desc)
        .await
        .map_err(|e| e.to_string())?;
    let sections = crate::sdp::parse(&answer).map_err(|e| e.to_string())?;
    let apt = crate::sdp::first(&sections, "audio")
        .and_then(|a| a.payload_type("opus", None))
        .ok_or("no Opus in the answer")?;
    let mut tasks = vec![tokio::spawn(send(
        at,
        assrc,
        apt,
        false,
        content.clone(),
        connected.subscribe(),
    ))];
    if let Some(vt) = vt {
        let vpt = crate::sdp::first(&sections, "video")
            .and_then(|v| v.payload_type("H264", Some("packetization-mode=1")))
            .ok_or("no H.264 in the answer")?;
        tasks.push(tokio::spawn(send(
            vt,
            vssrc,
            vpt,
            true,
            content.clone(),
            connected.subscribe(),
        )));
    }
    Ok(Participant {
        pc,
        counters,
        signaling,
        tasks,
    })
}

fn rtp(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    payload: Bytes,
) -> rtc::rtp::packet::Packet {
    rtc::rtp::packet::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

/// Sends the shared content on `t` once the connection is up, in real time: video
/// frames every 1/30 s (H.264 payloaded, marker on each frame's last packet), audio packets
/// every 20 ms.
async fn send(
    t: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    video: bool,
    content: Arc<Content>,
    mut up: tokio::sync::watch::Receiver<bool>,
) {
    if up.wait_for(|c| *c).await.is_err() {
        return;
    }
    let (frames, period, ts_step) = if video {
        (&content.video, Duration::from_micros(33_333), 3000)
    } else {
        (&content.audio, Duration::from_millis(20), 960)
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
    let mut pay = H264Payloader::default();
    for k in 0usize.. {
        tick.tick().await;
        let frame = &frames[k % frames.len()];
        let packets = if video {
            pay.payload(1100, frame).unwrap_or_default()
        } else {
            vec![frame.clone()]
        };
        let n = packets.len();
        for (i, p) in packets.into_iter().enumerate() {
            let _ = t
                .write_rtp(rtp(pt, seq, ts, ssrc, video && i + 1 == n, p))
                .await;
            seq = seq.wrapping_add(1);
        }
        ts = ts.wrapping_add(ts_step);
    }
}

/// Starts the recording and the RTMP push asked for on `room`; the errors.
async fn start_outputs(args: &LoadArgs, addr: &str, room: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let auth = args
        .admin_key
        .as_ref()
        .map(|k| ("Authorization", format!("Bearer {k}")));
    let headers: Vec<(&str, String)> = auth.into_iter().collect();
    if args.record {
        match http(
            addr,
            "POST",
            &format!("/api/rooms/{room}/recording"),
            &headers,
            b"",
        )
        .await
        {
            Ok((201, _, _)) => {}
            Ok((s, b, _)) => errors.push(format!("recording: {s} {}", b.trim())),
            Err(e) => errors.push(format!("recording: {e}")),
        }
    }
    if let Some(url) = &args.rtmp {
        let body = serde_json::json!({ "url": url }).to_string();
        let mut h = headers.clone();
        h.push(("Content-Type", "application/json".into()));
        match http(
            addr,
            "POST",
            &format!("/api/rooms/{room}/streams"),
            &h,
            body.as_bytes(),
        )
        .await
        {
            Ok((201, _, _)) => {}
            Ok((s, b, _)) => errors.push(format!("RTMP push: {s} {}", b.trim())),
            Err(e) => errors.push(format!("RTMP push: {e}")),
        }
    }
    errors
}

/// Plays `room`'s HLS as a player would: the playlist every second, each new segment once.
async fn play_hls(addr: String, room: String, token: Option<String>) {
    let q = token.map_or(String::new(), |t| format!("?token={t}"));
    let mut fetched = std::collections::HashSet::new();
    loop {
        if let Ok((200, playlist, _)) = http(
            &addr,
            "GET",
            &format!("/hls/{room}/index.m3u8{q}"),
            &[],
            b"",
        )
        .await
        {
            for uri in playlist
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                if fetched.insert(uri.to_owned()) {
                    let _ = http(&addr, "GET", &format!("/hls/{room}/{uri}"), &[], b"").await;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The server's `process_cpu_seconds_total`, if the admin key reads `/metrics`.
async fn server_cpu(addr: &str, key: Option<&str>) -> Option<f64> {
    let key = key?;
    let (status, body, _) = http(
        addr,
        "GET",
        "/metrics",
        &[("Authorization", format!("Bearer {key}"))],
        b"",
    )
    .await
    .ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

fn percentile_ms(mut v: Vec<Duration>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

/// Runs the load and returns its summary.
pub async fn run(args: LoadArgs) -> Result<Summary, LoadError> {
    let addr = host_port(&args.url)?;
    let (w, h) = crate::media::parse_size(&args.video_size)
        .ok_or_else(|| LoadError::Size(format!("`{}` is not WIDTHxHEIGHT", args.video_size)))?;
    if !(args.rate > 0.0) || args.participants == 0 || args.rooms == 0 {
        return Err(LoadError::Setup(
            "--rate, --participants and --rooms must be positive".into(),
        ));
    }
    let video_kbps = args.video_kbps;
    let content = tokio::task::spawn_blocking(move || Content {
        video: synth::synthetic_clip(0, w as usize, h as usize, 30, 30, video_kbps * 1000)
            .access_units
            .into_iter()
            .map(Bytes::from)
            .collect(),
        audio: synth::tone_packets(440.0, 6000.0)
            .into_iter()
            .map(Bytes::from)
            .collect(),
    })
    .await
    .map_err(|e| LoadError::Setup(e.to_string()))?;
    let content = Arc::new(content);
    let total = args.participants * args.rooms;
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} joining [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .map_err(|e| LoadError::Setup(e.to_string()))?
        .progress_chars("=> "),
    );
    let mut joins = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let mut next = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(next).await;
        next += gap;
        let room = if args.rooms == 1 {
            args.room.clone()
        } else {
            format!("{}-{}", args.room, i % args.rooms + 1)
        };
        let (a, addr, content) = (args.clone(), addr.clone(), content.clone());
        joins.spawn(
            async move { join(&a, &addr, &room, &format!("load-{}", i + 1), &content).await },
        );
    }
    let mut people = Vec::new();
    let mut errors = Vec::new();
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok(p)) => people.push(p),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
        bar.inc(1);
        bar.set_message(format!("{} errors", errors.len()));
    }
    bar.finish_and_clear();
    let rooms: Vec<String> = (0..args.rooms)
        .map(|i| {
            if args.rooms == 1 {
                args.room.clone()
            } else {
                format!("{}-{}", args.room, i + 1)
            }
        })
        .collect();
    // Watchers, then the live outputs asked for.
    let mut watchers = Vec::new();
    for room in &rooms {
        for i in 0..args.watchers {
            tokio::time::sleep(gap).await;
            match join_as(
                &args,
                &addr,
                room,
                &format!("watcher-{}", i + 1),
                &content,
                true,
            )
            .await
            {
                Ok(w) => watchers.push(w),
                Err(e) => errors.push(e),
            }
        }
    }
    let mut players = Vec::new();
    for room in &rooms {
        errors.extend(start_outputs(&args, &addr, room).await);
        if args.hls {
            players.push(tokio::spawn(play_hls(
                addr.clone(),
                room.clone(),
                token_with(&args, room, "hls", true),
            )));
        }
    }
    if !watchers.is_empty() || args.record || args.rtmp.is_some() || args.hls {
        // The outputs start and settle (an HLS player's first segment, a push's publish).
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // Let the last joins connect and get their first pictures, then measure a window.
    let settle = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < settle
        && people
            .iter()
            .any(|p| p.counters.first_media_us.load(Relaxed) == 0)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = |p: &Participant| {
        (
            p.counters.video_bytes.load(Relaxed),
            p.counters.audio_bytes.load(Relaxed),
            p.counters.video_packets.load(Relaxed) + p.counters.audio_packets.load(Relaxed),
            p.counters.lost.load(Relaxed),
        )
    };
    let before: Vec<_> = people.iter().map(snap).collect();
    let cpu0 = server_cpu(&addr, args.admin_key.as_deref()).await;
    let own0 = crate::metrics::process_cpu_ns();
    let t0 = Instant::now();
    let window = Duration::from_secs(args.duration.max(1));
    let wbar = indicatif::ProgressBar::new(window.as_secs());
    wbar.set_style(
        indicatif::ProgressStyle::with_template("measuring [{bar:30}] {pos}/{len} s")
            .map_err(|e| LoadError::Setup(e.to_string()))?
            .progress_chars("=> "),
    );
    for _ in 0..window.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        wbar.inc(1);
    }
    wbar.finish_and_clear();
    let dt = t0.elapsed().as_secs_f64();
    let cpu1 = server_cpu(&addr, args.admin_key.as_deref()).await;
    let own = (crate::metrics::process_cpu_ns() - own0) as f64 / 1e9 / dt * 100.0;
    let after: Vec<_> = people.iter().map(snap).collect();
    let n = people.len().max(1) as f64;
    let (mut vb, mut ab, mut pk, mut lost) = (0u64, 0u64, 0u64, 0u64);
    for (b, a) in before.iter().zip(&after) {
        vb += a.0 - b.0;
        ab += a.1 - b.1;
        pk += a.2 - b.2;
        lost += a.3 - b.3;
    }
    let first_media: Vec<Duration> = people
        .iter()
        .filter_map(|p| match p.counters.first_media_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        })
        .collect();
    let missing_media = people.len() - first_media.len();
    if missing_media > 0 {
        errors.push(format!("{missing_media} participants received no media"));
    }
    let signaling: Vec<Duration> = people.iter().map(|p| p.signaling).collect();
    let summary = Summary {
        participants: total,
        rooms: args.rooms,
        audio_only: args.audio_only,
        joined: people.len(),
        tracks_expected: total * if args.audio_only { 1 } else { 2 },
        tracks_received: people.iter().map(|p| p.counters.tracks.load(Relaxed)).sum(),
        video_kbps_per_participant: vb as f64 * 8.0 / dt / 1e3 / n,
        audio_kbps_per_participant: ab as f64 * 8.0 / dt / 1e3 / n,
        packet_loss_percent: if pk + lost > 0 {
            100.0 * lost as f64 / (pk + lost) as f64
        } else {
            0.0
        },
        join_signaling_ms: (
            percentile_ms(signaling.clone(), 0.5),
            percentile_ms(signaling, 0.99),
        ),
        join_first_media_ms: (
            percentile_ms(first_media.clone(), 0.5),
            percentile_ms(first_media, 0.99),
        ),
        window_s: dt,
        server_cpu_percent: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b - a) / dt * 100.0),
            _ => None,
        },
        generator_cpu_percent: own,
        errors,
        watchers: 0,
        watchers_receiving: 0,
    };
    for p in &players {
        p.abort();
    }
    let watcher_first_media = watchers
        .iter()
        .filter(|w| w.counters.first_media_us.load(Relaxed) != 0)
        .count();
    let summary = Summary {
        watchers: watchers.len(),
        watchers_receiving: watcher_first_media,
        ..summary
    };
    for p in people.into_iter().chain(watchers) {
        for t in &p.tasks {
            t.abort();
        }
        let _ = p.pc.close().await;
    }
    Ok(summary)
}

/// The summary as a table.
pub fn print_summary(s: &Summary) {
    let kind = if s.audio_only {
        "audio only"
    } else {
        "audio + video"
    };
    println!(
        "tessera load: {} participants in {} room(s), {kind}, measured over {:.1} s",
        s.participants, s.rooms, s.window_s
    );
    let rows: Vec<(&str, String)> = vec![
        ("Joined", format!("{} / {}", s.joined, s.participants)),
        (
            "Tracks received / expected",
            format!("{} / {}", s.tracks_received, s.tracks_expected),
        ),
        (
            "Video received per participant",
            format!("{:.0} kbit/s", s.video_kbps_per_participant),
        ),
        (
            "Audio received per participant",
            format!("{:.1} kbit/s", s.audio_kbps_per_participant),
        ),
        ("Packet loss", format!("{:.2} %", s.packet_loss_percent)),
        (
            "Join, signaling p50 / p99",
            format!(
                "{:.0} / {:.0} ms",
                s.join_signaling_ms.0, s.join_signaling_ms.1
            ),
        ),
        (
            "Join, first media p50 / p99",
            format!(
                "{:.0} / {:.0} ms",
                s.join_first_media_ms.0, s.join_first_media_ms.1
            ),
        ),
        (
            "Server CPU",
            match s.server_cpu_percent {
                Some(c) => format!(
                    "{c:.0} % of a core ({:.2} % per participant)",
                    c / s.joined.max(1) as f64
                ),
                None => "(give --admin-key to read it from /metrics)".into(),
            },
        ),
        (
            "Generator CPU",
            format!("{:.0} % of a core", s.generator_cpu_percent),
        ),
        (
            "Watchers receiving / joined",
            format!("{} / {}", s.watchers_receiving, s.watchers),
        ),
        ("Errors", s.errors.len().to_string()),
    ];
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
    for e in s.errors.iter().take(10) {
        println!("  error: {e}");
    }
}
