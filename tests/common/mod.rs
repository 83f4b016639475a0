//! Shared harness for integration tests: the real server on 127.0.0.1:0 and WebRTC clients
//! built on the `webrtc` crate that send a solid colour (H.264) and a pure tone (Opus), and
//! decode what the MCU sends back.
#![allow(dead_code)]

pub mod baresip;
pub mod sip_caller;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtp::codec::av1::Av1Payloader;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera::codec::audio::{OpusDecoder, OpusEncoder};
use tessera::codec::video::{Decoded, EncoderSettings, VideoDecoder, VideoEncoder};
use tessera::codec::{OutputCodec, VideoCodec};
use tessera::config::Config;
use tessera::layout::LayoutSet;
use tessera::media::frame::rgb_to_yuv;
use tessera::media::jitter::{VideoAssembler, VideoPop};
use tessera::media::I420Frame;
use tessera::room::{RoomSettings, Rooms};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

pub const W: u32 = 320;
pub const H: u32 = 180;

pub struct TestServer {
    pub addr: SocketAddr,
    pub rooms: Arc<Rooms>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test defaults, then `tweak` (e.g. a recording directory).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.video.width = W;
        config.video.height = H;
        config.video.bitrate_kbps = 400;
        // Tests join and poll far faster than any one client should; the limits have
        // their own tests (tests/http_guard.rs) with the real defaults.
        config.http.join_rate = 10_000.0;
        config.http.join_burst = 10_000;
        config.http.api_rate = 10_000.0;
        config.http.api_burst = 10_000;
        config.http.max_connections_per_ip = 10_000;
        tweak(&mut config);
        let rooms = Arc::new(Rooms::new(RoomSettings {
            config: config.clone(),
            layouts: LayoutSet::builtin(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let r = rooms.clone();
        let handle = tokio::spawn(async move {
            tessera::signaling::serve(listener, config, r, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            rooms,
            stop: Some(stop),
            handle,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.handle).await;
    }
}

/// What a client has received so far.
#[derive(Default)]
pub struct Received {
    pub frame: Mutex<Option<I420Frame>>,
    pub frames: AtomicU64,
    /// The last two seconds of decoded audio.
    pub audio: Mutex<VecDeque<i16>>,
    pub audio_packets: AtomicU64,
    /// Server ICE candidates seen (trickled or in the answer).
    pub server_candidates: Mutex<Vec<String>>,
    /// Video payload types of the answer (set before media flows; H.264 when unknown).
    pub video_pts: Mutex<std::collections::HashMap<u8, VideoCodec>>,
    /// The codec of the last decoded picture.
    pub video_codec: Mutex<Option<VideoCodec>>,
}

impl Received {
    /// Learns the answer's video payload types (which decoder each packet needs).
    pub fn set_answer(&self, answer: &str) {
        if let Some(v) = tessera::sdp::parse(answer)
            .ok()
            .as_deref()
            .and_then(|s| tessera::sdp::first(s, "video"))
        {
            *self.video_pts.lock().unwrap() = v.video_payload_types();
        }
    }
}

struct Handler {
    received: Arc<Received>,
    gathered: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move { receive(track, received).await });
    }
}

async fn receive(track: Arc<dyn TrackRemote>, received: Arc<Received>) {
    let kind = track.kind().await;
    let mut assembler = VideoAssembler::default();
    let mut video = VideoDecoder::new(VideoCodec::H264).unwrap();
    let mut audio = OpusDecoder::new().unwrap();
    let mut pcm = vec![0i16; 5760];
    let mut picture = I420Frame::default();
    let mut need_key = true;
    while let Some(evt) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = evt else {
            continue;
        };
        if kind == RtpCodecKind::Audio {
            if let Ok(n) = audio.decode(&pkt.payload, &mut pcm) {
                let mut a = received.audio.lock().unwrap();
                a.extend(&pcm[..n]);
                while a.len() > 96_000 {
                    a.pop_front();
                }
                received.audio_packets.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let h = &pkt.header;
            let pt = h.payload_type;
            assembler.push(
                Instant::now(),
                h.sequence_number,
                h.timestamp,
                h.marker,
                pkt.payload.clone(),
            );
            while let Some(pop) = assembler.pop(Instant::now()) {
                match pop {
                    VideoPop::Lost => need_key = true,
                    VideoPop::Frame { payloads, .. } => {
                        // The frame just completed is this packet's (one payload type a
                        // frame).
                        let codec = received
                            .video_pts
                            .lock()
                            .unwrap()
                            .get(&pt)
                            .copied()
                            .unwrap_or(VideoCodec::H264);
                        if video.codec() != codec {
                            video = VideoDecoder::new(codec).unwrap();
                            need_key = true;
                        }
                        if let Ok(Decoded::Picture { .. }) =
                            video.decode(&payloads, need_key, &mut picture)
                        {
                            need_key = false;
                            *received.video_codec.lock().unwrap() = Some(codec);
                            *received.frame.lock().unwrap() = Some(picture.clone());
                            received.frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

/// Which video codecs a test client offers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Offer {
    /// H.264, AV1, VP8 and VP9 (a browser with everything).
    All,
    /// VP8 only (an old stack, or a browser without H.264 told to prefer VP8).
    Vp8Only,
    /// VP9 only.
    Vp9Only,
}

fn engine(offer: Offer) -> MediaEngine {
    let mut m = MediaEngine::default();
    let c = |mime: &str, clock, ch, fmtp: &str, pt| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: clock,
            channels: ch,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    };
    m.register_codec(
        c(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
        RtpCodecKind::Audio,
    )
    .unwrap();
    if offer == Offer::All {
        m.register_codec(
            c(
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                125,
            ),
            RtpCodecKind::Video,
        )
        .unwrap();
        m.register_codec(c(MIME_TYPE_AV1, 90_000, 0, "", 45), RtpCodecKind::Video)
            .unwrap();
    }
    if offer != Offer::Vp9Only {
        m.register_codec(c(MIME_TYPE_VP8, 90_000, 0, "", 96), RtpCodecKind::Video)
            .unwrap();
    }
    if offer != Offer::Vp8Only {
        m.register_codec(
            c(MIME_TYPE_VP9, 90_000, 0, "profile-id=0", 98),
            RtpCodecKind::Video,
        )
        .unwrap();
    }
    m
}

fn local_track(kind: RtpCodecKind, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    tessera::transport::local_track(kind, &format!("client-{ssrc}"), ssrc, None, None)
}

/// A test participant.
pub struct Client {
    pub name: String,
    pub pc: Arc<dyn PeerConnection>,
    pub received: Arc<Received>,
    /// Server messages other than answer/candidate (for tests to inspect).
    pub messages: mpsc::UnboundedReceiver<serde_json::Value>,
    pub ws_out: Option<mpsc::UnboundedSender<String>>,
    pub whip_location: Option<String>,
    pub answer: String,
    /// The WebSocket's socket (WebSocket clients only), to keep it open past a vanish.
    pub ws_fd: Option<std::os::fd::RawFd>,
    /// The server it ended up on (after following cluster redirects).
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A test peer: the connection, its complete offer, its audio and video tracks and their
/// SSRCs.
pub type Peer = (
    Arc<dyn PeerConnection>,
    String,
    Arc<TrackLocalStaticRTP>,
    Arc<TrackLocalStaticRTP>,
    u32,
    u32,
);

/// Builds a peer with sendrecv audio+video and returns it with its complete offer.
pub async fn make_peer(received: Arc<Received>) -> Peer {
    make_peer_offering(received, Offer::All).await
}

/// [`make_peer`] offering only the `offer` video codecs.
pub async fn make_peer_offering(received: Arc<Received>, offer: Offer) -> Peer {
    let (pc, gathered) = build_pc(received, offer).await;
    let (assrc, vssrc) = (rand::random::<u32>(), rand::random::<u32>());
    let at = local_track(RtpCodecKind::Audio, assrc);
    let vt = local_track(RtpCodecKind::Video, vssrc);
    pc.add_track(at.clone()).await.unwrap();
    pc.add_track(vt.clone()).await.unwrap();
    let offer = complete_offer(&pc, &gathered).await;
    (pc, offer, at, vt, assrc, vssrc)
}

/// Sets a fresh offer as the local description and waits (3 s at most) for gathering.
async fn complete_offer(pc: &Arc<dyn PeerConnection>, gathered: &Notify) -> String {
    let offer = pc.create_offer(None).await.unwrap();
    let wait = gathered.notified();
    pc.set_local_description(offer).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
    pc.local_description().await.unwrap().sdp
}

/// A test peer connection on loopback, and the signal that its gathering completed.
async fn build_pc(received: Arc<Received>, offer: Offer) -> (Arc<dyn PeerConnection>, Arc<Notify>) {
    let mut m = engine(offer);
    let registry = register_default_interceptors(Registry::new(), &mut m).unwrap();
    let gathered = Arc::new(Notify::new());
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(50))
        .with_include_loopback_candidate(true)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(m)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            received,
            gathered: gathered.clone(),
        }))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .unwrap();
    (Arc::new(pc), gathered)
}

/// Resident set size of this process (server and clients), in MiB.
pub fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// A `201` WHIP answer applied to `pc`: its `Location` and the answer SDP.
/// POSTs an SDP offer (with `Authorization: Bearer {token}` if given); a cluster node that does not host the room answers 307 with the
/// room's node's URL (RFC 9725 §4.5): the POST is repeated there, at most 3 times.
/// Returns the node that answered last and its answer.
pub async fn post_sdp(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    offer: &str,
) -> (SocketAddr, HttpResponse) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let (mut addr, mut path) = (addr, path.to_owned());
    let mut hops = 0;
    loop {
        let resp = http_with(
            addr,
            "POST",
            &path,
            &headers,
            Some(("application/sdp", offer.as_bytes())),
        )
        .await;
        if resp.status != 307 || hops == 3 {
            return (addr, resp);
        }
        hops += 1;
        let loc = resp.header("location").expect("307 with a Location");
        let rest = loc.strip_prefix("http://").expect("absolute http Location");
        let (host, p) = rest.split_at(rest.find('/').expect("a path"));
        (addr, path) = (host.parse().expect("host:port"), p.to_owned());
    }
}

async fn accept_whip_answer(
    resp: &HttpResponse,
    pc: &Arc<dyn PeerConnection>,
    received: &Received,
) -> (String, String) {
    let location = resp.header("location").expect("Location header").to_owned();
    let answer = resp.body.clone();
    received.set_answer(&answer);
    pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
        .await
        .unwrap();
    (location, answer)
}

/// A presenter's content on its way: the connection that carries it (the participant's own
/// for WHIP) and the task sending the picture.
pub struct ContentSender {
    pub pc: Option<Arc<dyn PeerConnection>>,
    task: tokio::task::JoinHandle<()>,
}

impl ContentSender {
    /// Stops sending (and closes a content-only connection).
    pub async fn stop(self) {
        self.task.abort();
        if let Some(pc) = &self.pc {
            let _ = pc.close().await;
        }
    }
}

/// What a content track sends: one picture (re-encoded every frame, as a screen capturer
/// does), or oversize / garbage frames.
#[derive(Clone)]
pub enum ContentPicture {
    Picture(I420Frame),
    /// H.264 keyframes of this size (content over the limits).
    Oversize(u32, u32),
    Garbage,
    /// An H.264 fragment (FU-A) that starts and never ends: `packets_per_frame` packets of
    /// 1100 bytes every 33 ms, never a marker.
    Endless {
        packets_per_frame: usize,
    },
}

/// Sends `picture` as H.264 at 30 fps on `track` (payload type `pt`).
pub fn spawn_content(
    pt: u8,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    picture: ContentPicture,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (w, h) = match &picture {
            ContentPicture::Picture(f) => (f.width as u32, f.height as u32),
            ContentPicture::Oversize(w, h) => (*w, *h),
            ContentPicture::Garbage | ContentPicture::Endless { .. } => (64, 64),
        };
        let mut enc = VideoEncoder::new(
            OutputCodec::H264,
            EncoderSettings {
                width: w,
                height: h,
                fps: 30,
                bitrate_bps: 1_500_000,
                idr_interval_frames: 30,
                complexity: Default::default(),
                analysis: Default::default(),
            },
        )
        .unwrap();
        let frame = match &picture {
            ContentPicture::Picture(f) => f.clone(),
            _ => I420Frame::solid(w as usize, h as usize, (128, 128, 128)),
        };
        let mut pay = H264Payloader::default();
        let mut au = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
        let first_seq = seq;
        loop {
            tick.tick().await;
            let payloads = if let ContentPicture::Endless { packets_per_frame } = picture {
                (0..packets_per_frame)
                    .map(|i| {
                        // FU-A of an IDR slice: the first packet ever starts it (S), the
                        // rest continue it, none ends it (E never set).
                        let start = seq == first_seq && i == 0;
                        let mut p = vec![0x7c, if start { 0x85 } else { 0x05 }];
                        p.resize(1100, 0x5a);
                        Bytes::from(p)
                    })
                    .collect::<Vec<_>>()
            } else if matches!(picture, ContentPicture::Garbage) {
                (0..1 + rand::random::<u8>() as usize % 8)
                    .map(|_| {
                        let len = rand::random::<u16>() as usize % 1201;
                        Bytes::from((0..len).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
                    })
                    .collect()
            } else {
                if enc.encode(&frame, &mut au).is_err() || au.is_empty() {
                    continue;
                }
                pay.payload(1100, &Bytes::from(au.clone()))
                    .unwrap_or_default()
            };
            let n = payloads.len();
            for (i, p) in payloads.into_iter().enumerate() {
                let pkt = rtc::rtp::packet::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        marker: i + 1 == n && !matches!(picture, ContentPicture::Endless { .. }),
                        payload_type: pt,
                        sequence_number: seq,
                        timestamp: ts,
                        ssrc,
                        ..Default::default()
                    },
                    payload: p,
                };
                seq = seq.wrapping_add(1);
                let _ = track.write_rtp(pkt).await;
            }
            ts = ts.wrapping_add(3000);
        }
    })
}

/// A peer with no media but one video track (a content-only connection), its complete
/// offer, the track and its SSRC.
pub async fn make_content_peer() -> (
    Arc<dyn PeerConnection>,
    String,
    Arc<TrackLocalStaticRTP>,
    u32,
) {
    let (pc, gathered) = build_pc(Arc::new(Received::default()), Offer::All).await;
    let ssrc = rand::random::<u32>();
    let vt = local_track(RtpCodecKind::Video, ssrc);
    pc.add_track(vt.clone()).await.unwrap();
    let offer = complete_offer(&pc, &gathered).await;
    (pc, offer, vt, ssrc)
}

/// The H.264 payload type (packetization-mode 1) of the answer's section `mid` (or its
/// first video section).
pub fn h264_pt(answer: &str, mid: Option<&str>) -> u8 {
    let sections = tessera::sdp::parse(answer).unwrap();
    sections
        .iter()
        .find(|s| s.kind == "video" && mid.is_none_or(|m| s.mid.as_deref() == Some(m)))
        .and_then(|v| v.payload_type("H264", Some("packetization-mode=1")))
        .expect("H.264 in the answer")
}

/// Malformed RTCP packets the stack accepted for sending (`Media::rtcp_garbage`).
#[allow(dead_code)]
pub static RTCP_GARBAGE_SENT: AtomicU64 = AtomicU64::new(0);

/// What a client sends: a colour and a tone, optionally switching colour and starting the
/// tone at one instant (an A/V sync marker).
#[derive(Clone, Copy)]
pub struct Media {
    pub rgb: (u8, u8, u8),
    pub tone_hz: f32,
    /// Before this instant: the other colour and silence.
    pub marker: Option<(Instant, (u8, u8, u8))>,
    pub video: Video,
    /// Also send malformed RTCP (valid SRTCP around random compound packets), 50 a second.
    pub rtcp_garbage: bool,
}

/// The video a client sends, 30 frames a second.
#[derive(Clone, Copy)]
pub enum Video {
    /// The colour as H.264 at this size.
    H264 { width: u32, height: u32 },
    /// A low-overhead AV1 bitstream (`.obu`), its temporal units looped.
    Av1File(&'static [u8]),
    /// AV1 packets whose first OBU fragment never ends (Z and Y set on every packet), this
    /// many 1,100-byte packets a frame.
    Av1EndlessFragment { packets_per_frame: usize },
    /// Random payloads (0–1,200 bytes, 1–8 packets a frame), in turn on the H.264, AV1,
    /// VP8 and VP9 payload types: malformed RTP inside an established session.
    Garbage,
    /// The colour as VP8 (libvpx) at this size; the client offers VP8 only.
    Vp8 { width: u32, height: u32 },
    /// An IVF file's VP9 frames, looped; the client offers VP9 only.
    Vp9File(&'static [u8]),
    /// A VP8 keyframe header declaring 16383x16383 (VP8's largest), every frame.
    Vp8Huge,
    /// A VP9 keyframe header declaring 16384x16384, every frame.
    Vp9Huge,
    /// VP8 packets that keep starting partitions (S set, partition index cycling), this
    /// many 1,100-byte packets a frame.
    Vp8EndlessPartitions { packets_per_frame: usize },
}

impl Video {
    /// The codecs a client sending this offers.
    pub fn offer(&self) -> Offer {
        match self {
            Video::Vp8 { .. } => Offer::Vp8Only,
            Video::Vp9File(_) => Offer::Vp9Only,
            _ => Offer::All,
        }
    }
}

/// A VP9 keyframe (profile 0) whose header declares `w`x`h`, padded with zeros.
pub fn vp9_keyframe_header(w: u32, h: u32) -> Vec<u8> {
    let mut bits = String::from("10000010");
    bits += &format!("{:024b}", 0x49_83_42);
    bits += "0010";
    bits += &format!("{:016b}{:016b}", w - 1, h - 1);
    while bits.len() % 8 != 0 {
        bits.push('0');
    }
    let mut v: Vec<u8> = bits
        .as_bytes()
        .chunks(8)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap())
        .collect();
    v.resize(200, 0);
    v
}

impl Media {
    pub fn steady(rgb: (u8, u8, u8), tone_hz: f32) -> Self {
        Self {
            rgb,
            tone_hz,
            marker: None,
            video: Video::H264 {
                width: 320,
                height: 180,
            },
            rtcp_garbage: false,
        }
    }
    fn at(&self, t: Instant) -> ((u8, u8, u8), f64) {
        match self.marker {
            Some((switch, before)) if t < switch => (before, 0.0),
            _ => (self.rgb, 8000.0),
        }
    }
}

/// Sends a solid colour at 30 fps and a tone at 20 ms ptime on the negotiated payload types.
fn spawn_senders(
    answer: &str,
    at: Arc<TrackLocalStaticRTP>,
    vt: Arc<TrackLocalStaticRTP>,
    assrc: u32,
    vssrc: u32,
    rgb: (u8, u8, u8),
    tone_hz: f32,
) -> Vec<tokio::task::JoinHandle<()>> {
    spawn_media(answer, at, vt, assrc, vssrc, Media::steady(rgb, tone_hz))
}

fn spawn_media(
    answer: &str,
    at: Arc<TrackLocalStaticRTP>,
    vt: Arc<TrackLocalStaticRTP>,
    assrc: u32,
    vssrc: u32,
    media: Media,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sections = tessera::sdp::parse(answer).unwrap();
    let apt = tessera::sdp::first(&sections, "audio")
        .and_then(|a| a.payload_type("opus", None))
        .unwrap();
    let answer_video = tessera::sdp::first(&sections, "video");
    let vpt = answer_video.and_then(|v| v.payload_type("H264", Some("packetization-mode=1")));
    let av1_pt = answer_video.and_then(|v| v.payload_type("AV1", None));
    let vp8_pt = answer_video.and_then(|v| v.payload_type("VP8", None));
    let vp9_pt = answer_video.and_then(|v| v.payload_type("VP9", None));
    let mut tasks = Vec::new();
    if media.rtcp_garbage {
        let vt = vt.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                // A valid 4-byte header (version 2; the sender's stack insists), then
                // random type, count, length field and body: lengths that disagree with
                // the body, unknown types, truncated reports and feedback.
                let len = rand::random_range(4..400usize);
                let mut raw: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
                raw[0] = 0x80 | (raw[0] & 0x1f);
                raw[1] = [200, 201, 202, 203, 204, 205, 206, 207, raw[1]][rand::random_range(0..9)];
                let packets: Vec<Box<dyn rtc::rtcp::Packet>> =
                    vec![Box::new(rtc::rtcp::raw_packet::RawPacket(Bytes::from(raw)))];
                if vt.write_rtcp(packets).await.is_ok() {
                    RTCP_GARBAGE_SENT.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let video = tokio::spawn(async move {
        // The colour senders: H.264 or VP8 at their size (the others send no colour).
        let (codec, width, height) = match media.video {
            Video::Vp8 { width, height } => (OutputCodec::Vp8, width, height),
            Video::H264 { width, height } => (OutputCodec::H264, width, height),
            _ => (OutputCodec::H264, 320, 180),
        };
        let mut enc = VideoEncoder::new(
            codec,
            EncoderSettings {
                width,
                height,
                fps: 30,
                bitrate_bps: 300_000,
                idr_interval_frames: 15,
                complexity: Default::default(),
                analysis: Default::default(),
            },
        )
        .unwrap();
        let mut pay = H264Payloader::default();
        let mut vp8_pay = rtc::rtp::codec::vp8::Vp8Payloader::default();
        vp8_pay.enable_picture_id = true;
        let mut vp9_pay = rtc::rtp::codec::vp9::Vp9Payloader::default();
        let mut au = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
        let mut last_rgb = None;
        let mut frame_no = 0usize;
        loop {
            tick.tick().await;
            frame_no += 1;
            let (pt, payloads) = match media.video {
                Video::H264 { .. } | Video::Vp8 { .. } => {
                    let (rgb, _) = media.at(Instant::now());
                    if last_rgb.is_some_and(|c| c != rgb) {
                        enc.request_keyframe(); // make the switch visible at once
                    }
                    last_rgb = Some(rgb);
                    let frame = I420Frame::solid(
                        width as usize,
                        height as usize,
                        rgb_to_yuv(rgb.0, rgb.1, rgb.2),
                    );
                    if enc.encode(&frame, &mut au).is_err() || au.is_empty() {
                        continue;
                    }
                    let au = Bytes::from(au.clone());
                    match codec {
                        OutputCodec::H264 => (
                            vpt.expect("H.264 negotiated"),
                            pay.payload(1100, &au).unwrap_or_default(),
                        ),
                        OutputCodec::Vp8 => (
                            vp8_pt.expect("VP8 negotiated"),
                            vp8_pay.payload(1100, &au).unwrap_or_default(),
                        ),
                    }
                }
                Video::Vp9File(data) => {
                    let frames = tessera::codec::vpx::ivf_frames(data);
                    let f = frames[frame_no % frames.len()];
                    (
                        vp9_pt.expect("VP9 negotiated"),
                        vp9_pay
                            .payload(1100, &Bytes::copy_from_slice(f))
                            .unwrap_or_default(),
                    )
                }
                Video::Vp8Huge => {
                    let mut kf = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0x3f, 0xff, 0x3f];
                    kf.resize(200, 0);
                    (
                        vp8_pt.expect("VP8 negotiated"),
                        vp8_pay.payload(1100, &Bytes::from(kf)).unwrap_or_default(),
                    )
                }
                Video::Vp9Huge => (
                    vp9_pt.expect("VP9 negotiated"),
                    vp9_pay
                        .payload(1100, &Bytes::from(vp9_keyframe_header(16384, 16384)))
                        .unwrap_or_default(),
                ),
                Video::Vp8EndlessPartitions { packets_per_frame } => {
                    let payloads = (0..packets_per_frame)
                        .map(|i| {
                            let mut p = vec![0x10 | (i % 8) as u8];
                            p.resize(1100, (i % 251) as u8);
                            Bytes::from(p)
                        })
                        .collect();
                    (vp8_pt.expect("VP8 negotiated"), payloads)
                }
                Video::Av1File(data) => {
                    let units = tessera::codec::video::av1_temporal_units(data);
                    let tu = units[frame_no % units.len()];
                    let payloads = Av1Payloader::default()
                        .payload(1100, &Bytes::copy_from_slice(tu))
                        .unwrap_or_default();
                    (av1_pt.expect("AV1 negotiated"), payloads)
                }
                Video::Garbage => {
                    let n = 1 + rand::random::<u8>() as usize % 8;
                    let payloads = (0..n)
                        .map(|_| {
                            let len = rand::random::<u16>() as usize % 1201;
                            Bytes::from((0..len).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
                        })
                        .collect();
                    let pts: Vec<u8> = [vpt, av1_pt, vp8_pt, vp9_pt]
                        .into_iter()
                        .flatten()
                        .collect();
                    (pts[frame_no % pts.len()], payloads)
                }
                Video::Av1EndlessFragment { packets_per_frame } => {
                    let payloads = (0..packets_per_frame)
                        .map(|i| {
                            // Y only (W=1) starts the fragment — in every frame of the
                            // first 3 s, since packets sent before the connection is up
                            // are lost; after that Z|Y on every packet, forever.
                            let start = frame_no <= 90 && i == 0;
                            let mut p = vec![if start { 0x50 } else { 0xd0 }];
                            p.resize(1100, if start { 0x32 } else { 7 });
                            Bytes::from(p)
                        })
                        .collect();
                    (av1_pt.expect("AV1 negotiated"), payloads)
                }
            };
            let n = payloads.len();
            for (i, p) in payloads.into_iter().enumerate() {
                let pkt = rtc::rtp::packet::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        marker: i + 1 == n,
                        payload_type: pt,
                        sequence_number: seq,
                        timestamp: ts,
                        ssrc: vssrc,
                        ..Default::default()
                    },
                    payload: p,
                };
                seq = seq.wrapping_add(1);
                let _ = vt.write_rtp(pkt).await;
            }
            ts = ts.wrapping_add(3000);
        }
    });
    let audio = tokio::spawn(async move {
        let mut enc = OpusEncoder::new(32_000, 5).unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut seq, mut ts, mut n) = (rand::random::<u16>(), rand::random::<u32>(), 0u64);
        let mut out = vec![0u8; 1500];
        loop {
            tick.tick().await;
            let (_, amp) = media.at(Instant::now());
            let tone_hz = media.tone_hz;
            let pcm: Vec<i16> = (0..960u64)
                .map(|i| {
                    ((((n * 960 + i) as f64) * 2.0 * std::f64::consts::PI * tone_hz as f64
                        / 48_000.0)
                        .sin()
                        * amp) as i16
                })
                .collect();
            n += 1;
            let Ok(len) = enc.encode(&pcm, &mut out) else {
                continue;
            };
            let pkt = rtc::rtp::packet::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: apt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: assrc,
                    ..Default::default()
                },
                payload: Bytes::copy_from_slice(&out[..len]),
            };
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(960);
            let _ = at.write_rtp(pkt).await;
        }
    });
    tasks.push(video);
    tasks.push(audio);
    tasks
}

impl Client {
    /// Joins over the WebSocket protocol, like the web client.
    pub async fn join_ws(
        server: &TestServer,
        room: &str,
        name: &str,
        rgb: (u8, u8, u8),
        tone_hz: f32,
    ) -> Client {
        Self::join_ws_at(server.addr, room, name, Media::steady(rgb, tone_hz)).await
    }

    /// Joins the server at `addr` over the WebSocket protocol, sending `media`.
    pub async fn join_ws_at(addr: SocketAddr, room: &str, name: &str, media: Media) -> Client {
        Self::join_ws_token(addr, room, name, media, None).await
    }

    /// [`Client::join_ws_at`] with an access token in the `join`. A cluster's `redirect`
    /// is followed (at most 3 hops), as the web client does.
    pub async fn join_ws_token(
        addr: SocketAddr,
        room: &str,
        name: &str,
        media: Media,
        token: Option<&str>,
    ) -> Client {
        Self::join_ws_with(addr, room, name, media, token, None).await
    }

    /// [`Client::join_ws_token`] giving a PIN (a moderator PIN makes it a moderator).
    pub async fn join_ws_with(
        addr: SocketAddr,
        room: &str,
        name: &str,
        media: Media,
        token: Option<&str>,
        pin: Option<&str>,
    ) -> Client {
        let mut addr = addr;
        for _ in 0..4 {
            match Self::join_ws_once(addr, room, name, media, token, pin).await {
                Ok(c) => return c,
                Err(next) => addr = next,
            }
        }
        panic!("more than 3 redirects joining {room}");
    }

    /// One attempt: the client, or the address a `redirect` names.
    async fn join_ws_once(
        addr: SocketAddr,
        room: &str,
        name: &str,
        media: Media,
        token: Option<&str>,
        pin: Option<&str>,
    ) -> Result<Client, SocketAddr> {
        let received = Arc::new(Received::default());
        let (pc, offer, at, vt, assrc, vssrc) =
            make_peer_offering(received.clone(), media.video.offer()).await;
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let ws_fd = match ws.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => Some(std::os::fd::AsRawFd::as_raw_fd(s)),
            _ => None,
        };
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(Message::Text(m.into())).await.is_err() {
                    break;
                }
            }
        });
        let mut join = serde_json::json!({"type":"join","room":room,"name":name});
        if let Some(t) = token {
            join["token"] = t.into();
        }
        if let Some(p) = pin {
            join["pin"] = p.into();
        }
        out_tx.send(join.to_string()).unwrap();
        let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
        let (answer_tx, answer_rx) = oneshot::channel::<String>();
        let pc2 = pc.clone();
        let received2 = received.clone();
        let reader = tokio::spawn(async move {
            let mut answer_tx = Some(answer_tx);
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("answer") => {
                        if let Some(tx) = answer_tx.take() {
                            let _ = tx.send(v["sdp"].as_str().unwrap().to_owned());
                        }
                    }
                    Some("candidate") => {
                        received2
                            .server_candidates
                            .lock()
                            .unwrap()
                            .push(v["candidate"].as_str().unwrap_or("").to_owned());
                        let c = RTCIceCandidateInit {
                            candidate: v["candidate"].as_str().unwrap().to_owned(),
                            sdp_mid: v["sdpMid"].as_str().map(str::to_owned),
                            sdp_mline_index: v["sdpMLineIndex"].as_u64().map(|x| x as u16),
                            ..Default::default()
                        };
                        let _ = pc2.add_ice_candidate(c).await;
                    }
                    _ => {
                        let _ = msg_tx.send(v);
                    }
                }
            }
        });
        // Wait for `joined` before offering.
        loop {
            let v = tokio::time::timeout(Duration::from_secs(10), msg_rx.recv())
                .await
                .expect("joined in 10 s")
                .expect("socket open");
            if v["type"] == "joined" {
                break;
            }
            if v["type"] == "redirect" {
                let url = v["url"].as_str().expect("redirect url");
                let next = url
                    .strip_prefix("ws://")
                    .and_then(|r| r.strip_suffix("/ws"))
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("redirect to an unusable url: {v}"));
                writer.abort();
                reader.abort();
                let _ = pc.close().await;
                return Err(next);
            }
            assert_ne!(v["type"], "error", "join failed: {v}");
        }
        out_tx
            .send(serde_json::json!({"type":"offer","sdp":offer}).to_string())
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), answer_rx)
            .await
            .expect("answer in 10 s")
            .unwrap();
        received.set_answer(&answer);
        pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
            .await
            .unwrap();
        let mut tasks = vec![writer, reader];
        tasks.extend(spawn_media(&answer, at, vt, assrc, vssrc, media));
        Ok(Client {
            name: name.into(),
            pc,
            received,
            messages: msg_rx,
            ws_out: Some(out_tx),
            whip_location: None,
            answer,
            ws_fd,
            addr,
            tasks,
        })
    }

    /// Joins over WHIP with sendrecv transceivers (a full participant).
    pub async fn join_whip(
        server: &TestServer,
        room: &str,
        name: &str,
        rgb: (u8, u8, u8),
        tone_hz: f32,
    ) -> Client {
        Self::join_whip_at(server.addr, room, name, rgb, tone_hz).await
    }

    /// Joins the server at `addr` over WHIP.
    pub async fn join_whip_at(
        addr: SocketAddr,
        room: &str,
        name: &str,
        rgb: (u8, u8, u8),
        tone_hz: f32,
    ) -> Client {
        Self::join_whip_token(addr, room, name, rgb, tone_hz, None).await
    }

    /// [`Client::join_whip_at`] with `Authorization: Bearer {token}`.
    pub async fn join_whip_token(
        addr: SocketAddr,
        room: &str,
        name: &str,
        rgb: (u8, u8, u8),
        tone_hz: f32,
        token: Option<&str>,
    ) -> Client {
        let received = Arc::new(Received::default());
        let (pc, offer, at, vt, assrc, vssrc) = make_peer(received.clone()).await;
        let (addr, resp) =
            post_sdp(addr, &format!("/whip/{room}?name={name}"), token, &offer).await;
        assert_eq!(resp.status, 201, "WHIP POST: {}", resp.body);
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("application/sdp"));
        let (location, answer) = accept_whip_answer(&resp, &pc, &received).await;
        let tasks = spawn_senders(&answer, at, vt, assrc, vssrc, rgb, tone_hz);
        Self::whip(name, pc, received, location, addr, answer, tasks)
    }

    /// Watches `room` over WHEP (recvonly audio and video); `Err`: the refusal.
    pub async fn watch_whep(
        addr: SocketAddr,
        room: &str,
        token: Option<&str>,
    ) -> Result<Client, HttpResponse> {
        use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
        let received = Arc::new(Received::default());
        let (pc, gathered) = build_pc(received.clone(), Offer::All).await;
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            };
            pc.add_transceiver_from_kind(kind, Some(init))
                .await
                .unwrap();
        }
        let offer = complete_offer(&pc, &gathered).await;
        let (addr, resp) = post_sdp(addr, &format!("/whep/{room}"), token, &offer).await;
        if resp.status != 201 {
            let _ = pc.close().await;
            return Err(resp);
        }
        let (location, answer) = accept_whip_answer(&resp, &pc, &received).await;
        Ok(Self::whip(
            "watcher",
            pc,
            received,
            location,
            addr,
            answer,
            Vec::new(),
        ))
    }

    /// A WHIP client once its POST was answered.
    fn whip(
        name: &str,
        pc: Arc<dyn PeerConnection>,
        received: Arc<Received>,
        location: String,
        addr: SocketAddr,
        answer: String,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> Client {
        let (_tx, rx) = mpsc::unbounded_channel();
        Client {
            name: name.into(),
            pc,
            received,
            messages: rx,
            ws_out: None,
            whip_location: Some(location),
            ws_fd: None,
            addr,
            answer,
            tasks,
        }
    }

    /// Presents `picture` over the WebSocket protocol (a second, content-only connection,
    /// as the web client does). `Err`: the server's error message (e.g. `floor_taken`).
    pub async fn present(
        &mut self,
        picture: ContentPicture,
    ) -> Result<ContentSender, serde_json::Value> {
        let (pc, offer, track, ssrc) = make_content_peer().await;
        self.signal(serde_json::json!({"type": "present", "sdp": offer}));
        let answer = loop {
            let v = tokio::time::timeout(Duration::from_secs(10), self.messages.recv())
                .await
                .expect("an answer to present in 10 s")
                .expect("socket open");
            match v["type"].as_str() {
                Some("presentAnswer") => break v["sdp"].as_str().unwrap().to_owned(),
                Some("error") => {
                    let _ = pc.close().await;
                    return Err(v);
                }
                _ => {}
            }
        };
        pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
            .await
            .unwrap();
        let task = spawn_content(h264_pt(&answer, None), track, ssrc, picture);
        Ok(ContentSender { pc: Some(pc), task })
    }

    /// Joins over WHIP with sendrecv audio and camera and a third, sendonly video m-line
    /// marked `a=content:slides` (RFC 4796) carrying `picture`. `Err`: the POST's status
    /// and body when the server refuses it.
    pub async fn join_whip_presenting(
        addr: SocketAddr,
        room: &str,
        name: &str,
        rgb: (u8, u8, u8),
        tone_hz: f32,
        picture: ContentPicture,
    ) -> Result<(Client, ContentSender), (u16, String)> {
        let received = Arc::new(Received::default());
        let (pc, gathered) = build_pc(received.clone(), Offer::All).await;
        let (assrc, vssrc, cssrc) = (rand::random(), rand::random(), rand::random());
        let at = local_track(RtpCodecKind::Audio, assrc);
        let vt = local_track(RtpCodecKind::Video, vssrc);
        let ct = local_track(RtpCodecKind::Video, cssrc);
        for t in [&at, &vt, &ct] {
            pc.add_track(t.clone()).await.unwrap();
        }
        let offer = complete_offer(&pc, &gathered).await;
        // The third m-section is the content: say so (the stack does not write it).
        let sections = tessera::sdp::parse(&offer).unwrap();
        let content_mid = sections
            .iter()
            .filter(|s| s.kind == "video")
            .nth(1)
            .and_then(|s| s.mid.clone())
            .expect("a second video m-line");
        let offer = tessera::sdp::mark_content(&offer, &content_mid);
        let resp = http_with(
            addr,
            "POST",
            &format!("/whip/{room}?name={name}"),
            &[],
            Some(("application/sdp", offer.as_bytes())),
        )
        .await;
        if resp.status != 201 {
            let _ = pc.close().await;
            return Err((resp.status, resp.body));
        }
        let (location, answer) = accept_whip_answer(&resp, &pc, &received).await;
        let tasks = spawn_senders(&answer, at, vt, assrc, vssrc, rgb, tone_hz);
        let content = spawn_content(h264_pt(&answer, Some(&content_mid)), ct, cssrc, picture);
        Ok((
            Self::whip(name, pc, received, location, addr, answer, tasks),
            ContentSender {
                pc: None,
                task: content,
            },
        ))
    }

    /// UDP ports of the server's candidates for this client.
    pub fn server_ports(&self) -> Vec<u16> {
        let mut lines: Vec<String> = self
            .answer
            .lines()
            .filter_map(|l| l.strip_prefix("a=").map(str::to_owned))
            .filter(|l| l.starts_with("candidate:"))
            .collect();
        lines.extend(
            self.received
                .server_candidates
                .lock()
                .unwrap()
                .iter()
                .cloned(),
        );
        // candidate:<foundation> <component> <transport> <priority> <ip> <port> typ ...
        let mut ports: Vec<u16> = lines
            .iter()
            .filter_map(|l| l.split_whitespace().nth(5).and_then(|p| p.parse().ok()))
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }

    pub fn audio_packets(&self) -> u64 {
        self.received.audio_packets.load(Ordering::Relaxed)
    }

    pub fn frames(&self) -> u64 {
        self.received.frames.load(Ordering::Relaxed)
    }

    pub fn last_frame(&self) -> Option<I420Frame> {
        self.received.frame.lock().unwrap().clone()
    }

    pub fn last_audio(&self, samples: usize) -> Vec<i16> {
        let a = self.received.audio.lock().unwrap();
        a.iter()
            .skip(a.len().saturating_sub(samples))
            .copied()
            .collect()
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }

    /// Sends a raw signaling message (WebSocket clients only).
    pub fn signal(&self, msg: serde_json::Value) {
        if let Some(tx) = &self.ws_out {
            let _ = tx.send(msg.to_string());
        }
    }
}

/// Waits until `f` holds, polling every 100 ms, or panics after `secs` with `what`.
pub async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

#[allow(unused_imports)] // not every test file measures tones
pub use tessera::mixer::tone_power;

/// A minimal HTTP/1.1 client for WHIP and the API (no redirects, Content-Length bodies).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> HttpResponse {
    http_with(addr, method, path, &[], body).await
}

/// [`http`] with extra request headers (`Authorization`, `Origin`, …).
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if let Some((ct, b)) = body {
        req += &format!("Content-Type: {ct}\r\nContent-Length: {}\r\n", b.len());
    } else {
        req += "Content-Length: 0\r\n";
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    if let Some((_, b)) = body {
        s.write_all(b).await.unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A signaling-only session (no media): sends `join` and returns the socket with the
/// server's reply to it (`joined` or `error`; room events before it are skipped).
pub async fn ws_join_only(
    addr: SocketAddr,
    room: &str,
    name: &str,
) -> (WsStream, serde_json::Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws.send(Message::Text(
        serde_json::json!({"type":"join","room":room,"name":name})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply to join in 10 s")
            .expect("socket open")
            .unwrap();
        let Message::Text(t) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "joined" || v["type"] == "error" {
            return (ws, v);
        }
    }
}

/// How a client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // not every test file uses both
pub enum Signaling {
    Ws,
    Whip,
}

/// How an [`IsolatedClient`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum End {
    /// WebSocket `leave` or WHIP `DELETE`, then the peer is closed.
    Leave,
    /// Everything stops without a word, as when the process is killed. With `keep_tcp`
    /// the WebSocket's TCP connection stays open (as when the network vanishes under an
    /// idle connection): its socket is returned.
    Vanish { keep_tcp: bool },
}

/// A client with its own runtime on its own thread, so that it can vanish like a killed
/// process (its runtime is dropped: sockets close, no DTLS close, no BYE/DELETE).
#[allow(dead_code)]
pub struct IsolatedClient {
    pub received: Arc<Received>,
    end_tx: std::sync::mpsc::Sender<End>,
    kept_rx: std::sync::mpsc::Receiver<Option<std::os::fd::OwnedFd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[allow(dead_code)]
impl IsolatedClient {
    /// Joins and waits for the answer (blocking). `Err` if the join failed.
    pub fn start(
        addr: SocketAddr,
        how: Signaling,
        room: &str,
        name: &str,
        rgb: (u8, u8, u8),
        tone_hz: f32,
    ) -> Result<Self, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<End>();
        let (kept_tx, kept_rx) = std::sync::mpsc::channel();
        let (room, name) = (room.to_owned(), name.to_owned());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            // A failed join panics inside the helpers: report it instead of the client.
            let joined = rt.block_on(async {
                tokio::spawn(async move {
                    match how {
                        Signaling::Ws => {
                            Client::join_ws_at(addr, &room, &name, Media::steady(rgb, tone_hz))
                                .await
                        }
                        Signaling::Whip => {
                            Client::join_whip_at(addr, &room, &name, rgb, tone_hz).await
                        }
                    }
                })
                .await
            });
            let client = match joined {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("join failed: {e}")));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(client.received.clone()));
            match end_rx.recv().unwrap_or(End::Leave) {
                End::Leave => {
                    rt.block_on(async {
                        if let Some(loc) = &client.whip_location {
                            http(client.addr, "DELETE", loc, None).await;
                        }
                        if client.ws_out.is_some() {
                            client.signal(serde_json::json!({"type":"leave"}));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        client.close().await;
                        drop(client);
                    });
                    let _ = kept_tx.send(None);
                    rt.shutdown_timeout(Duration::from_secs(2));
                }
                End::Vanish { keep_tcp } => {
                    let kept = if keep_tcp {
                        client.ws_fd.and_then(|fd| {
                            // SAFETY: `fd` is the WebSocket's open socket; `dup` makes a
                            // second descriptor for it that we own.
                            let d = unsafe { libc::dup(fd) };
                            (d >= 0).then(|| unsafe {
                                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d)
                            })
                        })
                    } else {
                        None
                    };
                    let _ = kept_tx.send(kept);
                    std::mem::forget(client); // no Drop-time cleanup
                    rt.shutdown_background();
                }
            }
        });
        match ready_rx.recv() {
            Ok(Ok(received)) => Ok(Self {
                received,
                end_tx,
                kept_rx,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err("client thread ended before joining".into())
            }
        }
    }

    pub fn frames(&self) -> u64 {
        self.received.frames.load(Ordering::Relaxed)
    }

    /// Ends the client (blocking); returns the kept WebSocket socket for `Vanish { keep_tcp }`.
    pub fn end(mut self, how: End) -> Option<std::os::fd::OwnedFd> {
        let _ = self.end_tx.send(how);
        let kept = self.kept_rx.recv().ok().flatten();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        kept
    }
}

/// Starts the real `tessera` binary on `127.0.0.1:0` with the config file `config`, and
/// returns it with the address it printed. `log`: `Some(RUST_LOG filter)` shows its
/// stderr, `None` discards it.
#[allow(dead_code)]
pub fn spawn_tessera(
    config: &std::path::Path,
    log: Option<&str>,
) -> (std::process::Child, SocketAddr) {
    let (child, http, _sip) = spawn_tessera_sip(config, log);
    (child, http)
}

/// [`spawn_tessera`], and the SIP address (also `127.0.0.1:0`) it printed on its second line.
#[allow(dead_code)]
pub fn spawn_tessera_sip(
    config: &std::path::Path,
    log: Option<&str>,
) -> (std::process::Child, SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--sip-listen",
        "127.0.0.1:0",
        "--config",
    ])
    .arg(config)
    .stdout(std::process::Stdio::piped());
    match log {
        Some(filter) => cmd
            .env("RUST_LOG", filter)
            .stderr(std::process::Stdio::inherit()),
        None => cmd.stderr(std::process::Stdio::null()),
    };
    let mut child = cmd.spawn().expect("starting tessera");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut http, mut sip) = (String::new(), String::new());
    out.read_line(&mut http).unwrap();
    out.read_line(&mut sip).unwrap();
    // Keep reading (anything later) so the server never writes to a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let http_addr = http
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok());
    let sip_addr = sip
        .split("sip:")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok());
    match (http_addr, sip_addr) {
        (Some(h), Some(s)) => (child, h, s),
        _ => panic!("no HTTP and SIP addresses printed: {http:?} {sip:?}"),
    }
}

/// Samples keyed by `name{label="v",…}` (labels sorted), as the strict parser read them.
pub type Samples = std::collections::HashMap<String, f64>;

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;

pub fn parse_openmetrics(text: &str) -> Samples {
    use std::io::Write;
    // Debian's interpreter, where `python3-prometheus-client` is installed (a `python3`
    // earlier on PATH, e.g. pyenv's, would not have it).
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", PARSER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (scripts/setup.sh --test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `GET path`: the body's bytes (binary; the server sends a Content-Length).
pub async fn http_bytes(addr: SocketAddr, path: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&raw[..at])
    );
    raw.split_off(at + 4)
}

/// The operators' event stream (`GET /api/events`, Server-Sent Events) as JSON events.
pub struct EventStream {
    sock: tokio::net::TcpStream,
    buf: String,
    seen: VecDeque<serde_json::Value>,
}

impl EventStream {
    pub async fn open(addr: SocketAddr) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        Self {
            sock,
            buf: String::new(),
            seen: VecDeque::new(),
        }
    }

    /// The next event of `kind` (others before it are skipped), within `secs`.
    pub async fn next_of(&mut self, kind: &str, secs: u64) -> serde_json::Value {
        use tokio::io::AsyncReadExt;
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            while let Some(e) = self.seen.pop_front() {
                if e["type"] == kind {
                    return e;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(until, self.sock.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no `{kind}` event within {secs} s"))
                .unwrap();
            assert!(n > 0, "the event stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            while let Some(end) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=end).collect();
                if let Some(data) = line.trim_end().strip_prefix("data:") {
                    if let Ok(v) = serde_json::from_str(data.trim()) {
                        self.seen.push_back(v);
                    }
                }
            }
        }
    }
}

/// Three participants for content checks: a name, a solid colour and a tone each.
pub const THREE_PEOPLE: [(&str, (u8, u8, u8), f32); 3] = [
    ("Red", (220, 30, 30), 400.0),
    ("Green", (30, 200, 30), 650.0),
    ("Blue", (30, 30, 220), 1000.0),
];

/// `frames` H.264 access units (an IDR first) of a 160x96 picture of `rgb` with a bar
/// that moves, so that every frame is a new picture, as RTP payloads per frame.
pub fn moving_clip(rgb: (u8, u8, u8), frames: usize) -> Vec<Vec<Bytes>> {
    use rtc::rtp::packetizer::Payloader;
    let mut enc = tessera::codec::video::H264Encoder::new(tessera::codec::video::EncoderSettings {
        width: 160,
        height: 96,
        fps: 30,
        bitrate_bps: 300_000,
        idr_interval_frames: 1000,
        complexity: Default::default(),
        analysis: Default::default(),
    })
    .unwrap();
    let mut pay = rtc::rtp::codec::h264::H264Payloader::default();
    (0..frames)
        .map(|k| {
            let mut f = I420Frame::solid(160, 96, rgb);
            let x = (k * 4) % 150;
            for row in 0..96 {
                f.y[row * 160 + x..row * 160 + x + 8].fill(235);
            }
            let mut au = Vec::new();
            enc.encode(&f, &mut au).unwrap();
            pay.payload(1100, &Bytes::from(au)).unwrap()
        })
        .collect()
}
