//! WebRTC transport: builds one `webrtc` peer connection per participant, answers its
//! offer, and wires it to the room — remote tracks feed the room's media threads, the
//! room's sinks feed local tracks, keyframe requests flow both ways.
//!
//! Every network-facing step is fallible and returns a `TransportError`; nothing here can
//! take down the room or another participant.

pub mod keyframe;

use crate::codec::OutputCodec;
use crate::config::Config;
use crate::ids::ParticipantId;
use crate::room::sink::RtpSink;
use crate::room::{Attachment, Room, Upstream};
use crate::sdp;
use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, Slot, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceCandidateType, RTCIceGatheringState,
    RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder,
};

/// Why a peer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid SDP offer: {0}")]
    BadSdp(#[from] sdp::SdpError),
    #[error("offer rejected by the WebRTC stack: {0}")]
    Negotiation(String),
    #[error("no free UDP port in {0}-{1}")]
    NoPort(u16, u16),
    #[error("ICE candidate rejected: {0}")]
    Candidate(String),
    #[error("the room refused the participant: {0}")]
    Room(#[from] crate::room::RoomError),
}

fn webrtc_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Negotiation(e.to_string())
}

/// What a peer tells its signaling side.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// A server candidate to trickle to the client.
    LocalCandidate(RTCIceCandidateInit),
    /// Connection state changed (`Failed`/`Closed` end the session).
    State(RTCPeerConnectionState),
    /// The room asks the participant's camera for no more than this (the web client
    /// applies it with `RTCRtpSender.setParameters`; RTP senders get REMB).
    SendLimit(crate::room::video::SendLimit),
}

/// A connected (or connecting) participant's peer connection.
pub struct PeerSession {
    pc: Arc<dyn PeerConnection>,
    /// The answer SDP (with candidates when gathering was awaited).
    pub answer: String,
    /// mid of the first m-section, for trickled candidates.
    pub first_mid: String,
}

impl PeerSession {
    pub async fn add_remote_candidate(&self, c: RTCIceCandidateInit) -> Result<(), TransportError> {
        if c.candidate.len() > 1024 {
            return Err(TransportError::Candidate("too long".into()));
        }
        if c.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        self.pc
            .add_ice_candidate(c)
            .await
            .map_err(|e| TransportError::Candidate(e.to_string()))
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .iter()
    .map(|(t, p)| RTCPFeedback {
        typ: t.to_string(),
        parameter: p.to_string(),
    })
    .collect()
}

/// The codecs the server (and `tessera load`'s participants) negotiate: Opus; H.264
/// (packetization-mode 1: constrained baseline, baseline, main, high), AV1, VP8 and VP9
/// (profile 0) for ingest. Viewers are sent H.264 or VP8, per `[video] codecs` and what
/// each one offers ([`choose_output_codec`]).
pub fn media_engine() -> Result<MediaEngine, TransportError> {
    let mut m = MediaEngine::default();
    let codec = |mime: &str, clock, channels, fmtp: &str, fb: Vec<RTCPFeedback>, pt| {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate: clock,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: fb,
            },
            payload_type: pt,
        }
    };
    m.register_codec(
        codec(
            MIME_TYPE_OPUS,
            48_000,
            2,
            "minptime=10;useinbandfec=1",
            vec![],
            111,
        ),
        RtpCodecKind::Audio,
    )
    .map_err(webrtc_err)?;
    for (profile, pt) in [
        ("42e01f", 125),
        ("42001f", 102),
        ("4d001f", 39),
        ("640032", 123),
    ] {
        let fmtp =
            format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}");
        m.register_codec(
            codec(MIME_TYPE_H264, 90_000, 0, &fmtp, video_feedback(), pt),
            RtpCodecKind::Video,
        )
        .map_err(webrtc_err)?;
    }
    for (mime, fmtp, pt) in [
        (MIME_TYPE_AV1, "", 45),
        (MIME_TYPE_VP8, "", 96),
        (MIME_TYPE_VP9, "profile-id=0", 98),
    ] {
        m.register_codec(
            codec(mime, 90_000, 0, fmtp, video_feedback(), pt),
            RtpCodecKind::Video,
        )
        .map_err(webrtc_err)?;
    }
    // RFC 4588 retransmission, one per video codec: NACKed packets are resent on their own
    // SSRC, so the viewer can tell repairs from the stream (and count them).
    for (pt, apt) in [
        (124, 125),
        (103, 102),
        (40, 39),
        (122, 123),
        (46, 45),
        (97, 96),
        (99, 98),
    ] {
        m.register_codec(
            codec(MIME_TYPE_RTX, 90_000, 0, &format!("apt={apt}"), vec![], pt),
            RtpCodecKind::Video,
        )
        .map_err(webrtc_err)?;
    }
    m.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: sdp::AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        Some(RTCRtpTransceiverDirection::Recvonly),
    )
    .map_err(webrtc_err)?;
    Ok(m)
}

/// Picks the media socket address: `ip:0`, or the first free port of the configured range.
fn media_addr(config: &Config) -> Result<String, TransportError> {
    let ip = config.media_ip;
    match (config.udp_port_min, config.udp_port_max) {
        (Some(lo), Some(hi)) => {
            // Probe-bind; the stack binds it right after. A lost race fails that bind with a
            // clear error rather than sharing a port.
            let start = lo + (rand::random::<u16>() % (hi - lo + 1));
            (0..=(hi - lo))
                .map(|i| lo + (start - lo + i) % (hi - lo + 1))
                .find(|&p| std::net::UdpSocket::bind((ip, p)).is_ok())
                .map(|p| format!("{ip}:{p}"))
                .ok_or(TransportError::NoPort(lo, hi))
        }
        _ => Ok(format!("{ip}:0")),
    }
}

/// State the event handler shares with the session set-up.
struct Shared {
    room: Arc<Room>,
    id: ParticipantId,
    events: mpsc::UnboundedSender<PeerEvent>,
    audio_level_id: Option<u8>,
    first_mid: String,
    /// The remote video track, once it arrives, for sending PLIs upstream.
    remote_video: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    /// The remote content track (a presenter's screen), likewise.
    remote_content: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    /// Every video track of this connection is the participant's content (the web
    /// client's Present connection).
    content_only: bool,
    /// mids of the offer's content sections (`a=content:slides`).
    content_mids: Vec<String>,
    /// The connection, to find which m-section a remote track came on.
    pc: std::sync::OnceLock<std::sync::Weak<dyn PeerConnection>>,
    gathered: Notify,
    /// True once DTLS/SRTP is up: media written before that would be dropped by the stack.
    connected: tokio::sync::watch::Sender<bool>,
    /// The participant's media reaches the room (its token grants `publish`).
    publish: bool,
}

/// How [`connect`] sets a session up.
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    /// Answer only once every local candidate is in the SDP (WHIP has no trickle).
    pub wait_for_gathering: bool,
    /// What the participant receives is forwarded into the room.
    pub publish: bool,
    /// The room's composite and mix are sent on the participant's sendrecv transceivers.
    pub subscribe: bool,
    /// The connection carries only the participant's content (a shared screen): its
    /// video is content, nothing is sent, and the participant's camera connection,
    /// link and outputs are left alone. The floor must have been granted.
    pub content: bool,
}

struct Handler(Arc<Shared>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(mut init) = event.candidate.to_json() {
            init.sdp_mid = Some(self.0.first_mid.clone());
            init.sdp_mline_index = Some(0);
            let _ = self.0.events.send(PeerEvent::LocalCandidate(init));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.0.gathered.notify_waiters();
            self.0.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let up = state == RTCPeerConnectionState::Connected;
        self.0.connected.send_replace(up);
        if up && !self.0.content_only {
            // The viewer's decoder needs an IDR to start.
            self.0.room.keyframe_request(self.0.id);
        }
        let _ = self.0.events.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.0.clone();
        tokio::spawn(async move { read_remote_track(shared, track).await });
    }
}

/// The mid of the m-section `track` arrived on.
async fn track_mid(shared: &Shared, track: &Arc<dyn TrackRemote>) -> Option<String> {
    let pc = shared.pc.get()?.upgrade()?;
    let id = track.track_id().await;
    for t in pc.get_transceivers().await {
        let Ok(Some(r)) = t.receiver().await else {
            continue;
        };
        let same = std::ptr::addr_eq(Arc::as_ptr(r.track()), Arc::as_ptr(track))
            || r.track().track_id().await == id;
        if same {
            return t.mid().await.ok().flatten();
        }
    }
    None
}

/// Forwards one remote track's RTP into the room until the track ends.
async fn read_remote_track(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let kind = track.kind().await;
    let mut content = false;
    if kind == RtpCodecKind::Video {
        content = shared.content_only
            || (!shared.content_mids.is_empty()
                && track_mid(&shared, &track)
                    .await
                    .is_some_and(|m| shared.content_mids.contains(&m)));
        if let Some(ssrc) = track.ssrcs().await.first().copied() {
            let slot = if content {
                &shared.remote_content
            } else {
                &shared.remote_video
            };
            *slot.lock().await = Some((track.clone(), ssrc));
        }
    }
    let (room, id, level_id) = (&shared.room, shared.id, shared.audio_level_id);
    while let Some(evt) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = evt else {
            if matches!(evt, TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError) {
                break;
            }
            continue;
        };
        if !shared.publish {
            continue; // read (so the stack's queue drains) but not forwarded
        }
        let h = &pkt.header;
        match kind {
            RtpCodecKind::Audio => {
                if pkt.payload.is_empty() {
                    continue;
                }
                let level = level_id
                    .and_then(|lid| h.get_extension(lid))
                    .and_then(|b| b.first().map(|v| v & 0x7f));
                room.audio_packet(id, h.sequence_number, pkt.payload, level);
            }
            // Padding-only packets still occupy sequence numbers; pass them on so the
            // assembler does not mistake them for loss.
            RtpCodecKind::Video => {
                let forward = if content {
                    Room::content_packet
                } else {
                    Room::video_packet
                };
                forward(
                    room,
                    id,
                    h.payload_type,
                    h.sequence_number,
                    h.timestamp,
                    h.marker,
                    pkt.payload,
                );
            }
            _ => {}
        }
    }
    tracing::debug!(%id, ?kind, "remote track ended");
}

/// How many times a lost packet from a sender is asked for again (NACK, one every 100 ms):
/// what arrives later than that is past the jitter buffer's patience anyway.
const NACKS_PER_PACKET: u16 = 3;

/// How often the last send limit is repeated as REMB (RTCP is unreliable; a sender that
/// honours REMB keeps the last one it got).
const REMB_REPEAT: Duration = Duration::from_secs(2);

/// Carries the room's requests upstream (the remote video track may arrive later), to the
/// camera track or (`content`) the content track: PLIs, and send limits as REMB (repeated
/// every [`REMB_REPEAT`]) and as a [`PeerEvent::SendLimit`] for the signalling session.
async fn forward_upstream(shared: Arc<Shared>, mut rx: mpsc::Receiver<Upstream>, content: bool) {
    let slot = if content {
        &shared.remote_content
    } else {
        &shared.remote_video
    };
    let mut limit: Option<crate::room::video::SendLimit> = None;
    let mut repeat = tokio::time::interval(REMB_REPEAT);
    repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let req = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => Some(r),
                None => break,
            },
            _ = repeat.tick(), if limit.is_some() => None,
        };
        let target = slot.lock().await.clone();
        let packet: Box<dyn rtc::rtcp::Packet> = match req {
            Some(Upstream::KeyframeRequest) => {
                let Some((_, media_ssrc)) = target else {
                    continue;
                };
                Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                })
            }
            Some(Upstream::SendLimit(l)) => {
                limit = Some(l);
                let _ = shared.events.send(PeerEvent::SendLimit(l));
                repeat.reset();
                let Some((_, media_ssrc)) = target else {
                    continue;
                };
                remb(l, media_ssrc)
            }
            None => match (limit, &target) {
                (Some(l), Some((_, media_ssrc))) => remb(l, *media_ssrc),
                _ => continue,
            },
        };
        if let Some((track, _)) = target {
            if let Err(e) = track.write_rtcp(vec![packet]).await {
                tracing::debug!(id = %shared.id, "RTCP feedback not sent: {e}");
            }
        }
    }
}

/// A REMB (draft-alvestrand-rmcat-remb) capping `media_ssrc` at the limit's bitrate.
fn remb(l: crate::room::video::SendLimit, media_ssrc: u32) -> Box<dyn rtc::rtcp::Packet> {
    Box::new(
        rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 0,
            bitrate: l.max_bitrate_bps as f32,
            ssrcs: vec![media_ssrc],
        },
    )
}

/// Pumps packets from a room sink's queue into a local track, and keyframe requests from
/// the track back to the room.
fn spawn_local_track(
    shared: &Arc<Shared>,
    track: Arc<TrackLocalStaticRTP>,
    mut rx: mpsc::Receiver<rtc::rtp::Packet>,
    video: bool,
) {
    let t = track.clone();
    let id = shared.id;
    let connected = shared.connected.subscribe();
    let room = shared.room.clone();
    tokio::spawn(async move {
        while let Some(pkt) = rx.recv().await {
            if !*connected.borrow() {
                continue; // not connected (yet, or any more): drop
            }
            let len = pkt.payload.len();
            match t.write_rtp(pkt).await {
                Ok(()) => room.stats.sent(len),
                Err(e) => tracing::trace!(%id, "write_rtp: {e}"),
            }
        }
    });
    if video {
        let room = shared.room.clone();
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = evt else {
                    continue;
                };
                if packets
                    .iter()
                    .any(|p| keyframe::is_keyframe_request(p.as_ref()))
                {
                    room.keyframe_request(id);
                }
            }
        });
    }
}

/// The H.264 format our outputs use (what the track declares, so the stack binds its NACK
/// responder, sender reports and congestion control to it).
const OUTPUT_H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// The format the server sends `kind` in (declared on its tracks, so the stack binds its
/// NACK responder, sender reports and congestion control to them); `video` says which
/// video codec.
pub fn output_codec(kind: RtpCodecKind, video: OutputCodec) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Video if video == OutputCodec::Vp8 => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: video_feedback(),
        },
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: OUTPUT_H264_FMTP.to_owned(),
            rtcp_feedback: video_feedback(),
        },
    }
}

/// The codec a viewer is sent: the first of `preference` that its offer's video section
/// carries in a form we send (H.264 with packetization-mode 1; VP8). `None`: the viewer
/// offers neither, and gets no video.
pub fn choose_output_codec(
    offer: &sdp::MediaSection,
    preference: &[OutputCodec],
) -> Option<OutputCodec> {
    preference.iter().copied().find(|c| match c {
        OutputCodec::H264 => offer
            .payload_type("H264", Some("packetization-mode=1"))
            .is_some(),
        OutputCodec::Vp8 => offer.payload_type("VP8", None).is_some(),
    })
}

/// A local track that sends RTP we packetize ourselves, on SSRC `ssrc` (and `rtx` for
/// retransmissions where negotiated). The server's tracks must declare their `codec`:
/// without one the stack binds no interceptor to the stream — no NACK answered, no sender
/// report, no TWCC. A track without one offers every registered format (test clients).
pub fn local_track(
    kind: RtpCodecKind,
    stream: &str,
    ssrc: u32,
    rtx: Option<u32>,
    codec: Option<RTCRtpCodec>,
) -> Arc<TrackLocalStaticRTP> {
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::RTCRtpRtxParameters;
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream.to_owned(),
        format!("{stream}-{kind}"),
        format!("{stream} {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            codec: codec.unwrap_or_default(),
            ..Default::default()
        }],
    )))
}

/// Answers `offer` for participant `id` of `room` and connects its media.
/// `wait_for_gathering` puts every server candidate in the answer (WHIP); otherwise they
/// are trickled as `PeerEvent::LocalCandidate`.
pub async fn connect(
    room: Arc<Room>,
    id: ParticipantId,
    offer: &str,
    config: &Config,
    events: mpsc::UnboundedSender<PeerEvent>,
    opts: ConnectOptions,
) -> Result<PeerSession, TransportError> {
    let sections = sdp::parse(offer)?;
    let audio = sdp::first(&sections, "audio");
    let video = sdp::first(&sections, "video");
    let first_mid = sections
        .iter()
        .find_map(|s| s.mid.clone())
        .unwrap_or_else(|| "0".into());
    let shared = Arc::new(Shared {
        room: room.clone(),
        id,
        events,
        audio_level_id: audio.and_then(|a| a.extmap.get(sdp::AUDIO_LEVEL_URI).copied()),
        first_mid: first_mid.clone(),
        remote_video: Mutex::new(None),
        remote_content: Mutex::new(None),
        content_only: opts.content,
        content_mids: sdp::contents(&sections)
            .filter_map(|s| s.mid.clone())
            .collect(),
        pc: std::sync::OnceLock::new(),
        gathered: Notify::new(),
        connected: tokio::sync::watch::channel(false).0,
        publish: opts.publish,
    });

    let link = room
        .link(id)
        .ok_or(crate::room::RoomError::NoSuchParticipant)?;
    let mut engine = media_engine()?;
    // NACK generator and responder, RTCP reports, TWCC receiver (for what we receive; it
    // also registers `transport-cc` and its header extension for both kinds): the stack's
    // defaults, except that a lost packet is asked for at most NACKS_PER_PACKET times (the
    // stack's generator asks every 100 ms until it arrives: on a congested uplink the
    // retransmissions it draws took most of the link, 206 of 277 kbit/s in
    // tests/e2e/weak_link.test.mjs case c, and the sender's estimate collapsed)...
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(NACKS_PER_PACKET)
                .build(),
        );
    interceptor_registry::configure_simulcast_extension_headers(&mut engine).map_err(webrtc_err)?;
    let registry = interceptor_registry::configure_twcc_receiver_only(registry, &mut engine)
        .map_err(webrtc_err)?;
    let registry = interceptor_registry::configure_rtcp_reports(registry);
    // ...plus send-side congestion control over the viewer's TWCC feedback: transport-wide
    // sequence numbers on what we send, the send history, and GCC publishing its estimate
    // into the viewer's link. One feedback format only (TWCC; RFC 8888 is not offered). No
    // stack pacer: it would queue audio behind video in one FIFO; the video thread meets
    // the estimate by choosing the rung instead.
    let ladder = config.video.ladder().map_err(webrtc_err)?;
    let top = ladder.rungs()[0].bitrate_kbps as f64 * 1000.0;
    let estimator = keyframe::LinkEstimator::new(
        link.clone(),
        (top + 48_000.0) * 1.2,
        30_000.0,
        (top * 2.0).max(1_000_000.0),
    );
    // (A content connection sends nothing: no estimate of its own link may reach the
    // participant's, which its camera connection measures.)
    let registry = if opts.content {
        registry
    } else {
        registry
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(estimator).build(),
            )
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(Slot::from(500), keyframe::LinkTap::new(link))
    }
    .with(
        Slot::from(14_000),
        keyframe::KeyframeRequestForwarder::default(),
    );
    let mut settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(50))
        // Consent freshness: a peer that stops answering is `disconnected` after half of
        // `timeouts.media_s` and `failed` (the session ends) after all of it.
        .with_ice_timeouts(
            Some(Duration::from_secs(config.timeouts.media_s as u64) / 2),
            Some(Duration::from_secs(config.timeouts.media_s as u64)),
            Some(Duration::from_secs(1)),
        )
        .with_include_loopback_candidate(config.media_ip.is_loopback());
    if let Some(public) = config.public_ip {
        settings = settings.with_nat_1to1_ips(vec![public.to_string()], RTCIceCandidateType::Host);
    }
    let ice_servers = config
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(ice_servers)
                .build(),
        )
        .with_media_engine(engine)
        .with_setting_engine(settings.build())
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler(shared.clone())))
        .with_udp_addrs(vec![media_addr(config)?])
        .build()
        .await
        .map_err(webrtc_err)?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let _ = shared.pc.set(Arc::downgrade(&pc));
    let session = PeerSession {
        pc: pc.clone(),
        answer: String::new(),
        first_mid,
    };
    let video_codec = video.and_then(|v| choose_output_codec(v, &config.video.codecs));
    if video.is_some_and(|v| v.writer_receives()) && video_codec.is_none() && opts.subscribe {
        tracing::warn!(
            %id,
            "the offer carries none of the video codecs we send ({:?}): no video to this viewer",
            config.video.codecs
        );
    }
    let subscribe = opts.subscribe && !opts.content;
    match negotiate(
        &shared,
        &pc,
        offer,
        subscribe && audio.is_some_and(|a| a.writer_receives()),
        video_codec.filter(|_| subscribe && video.is_some_and(|v| v.writer_receives())),
        opts.wait_for_gathering,
    )
    .await
    {
        Ok(answer) => Ok(PeerSession { answer, ..session }),
        Err(e) => {
            session.close().await;
            Err(e)
        }
    }
}

async fn negotiate(
    shared: &Arc<Shared>,
    pc: &Arc<dyn PeerConnection>,
    offer: &str,
    send_audio: bool,
    send_video: Option<OutputCodec>,
    wait_for_gathering: bool,
) -> Result<String, TransportError> {
    let video_codec = send_video.unwrap_or(OutputCodec::H264);
    let send_video = send_video.is_some();
    let offer = RTCSessionDescription::offer(offer.to_owned()).map_err(webrtc_err)?;
    pc.set_remote_description(offer).await.map_err(webrtc_err)?;
    let (audio_ssrc, video_ssrc) = (rand::random::<u32>(), rand::random::<u32>());
    let audio_track = local_track(
        RtpCodecKind::Audio,
        &format!("tessera-{}", shared.id),
        audio_ssrc,
        None,
        Some(output_codec(RtpCodecKind::Audio, video_codec)),
    );
    let video_track = local_track(
        RtpCodecKind::Video,
        &format!("tessera-{}", shared.id),
        video_ssrc,
        Some(rand::random()),
        Some(output_codec(RtpCodecKind::Video, video_codec)),
    );
    if send_audio {
        pc.add_track(audio_track.clone())
            .await
            .map_err(webrtc_err)?;
    }
    if send_video {
        pc.add_track(video_track.clone())
            .await
            .map_err(webrtc_err)?;
    }
    let answer = pc.create_answer(None).await.map_err(webrtc_err)?;
    let gathered = shared.gathered.notified();
    pc.set_local_description(answer).await.map_err(webrtc_err)?;
    if wait_for_gathering {
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered).await;
    }
    let answer = pc
        .local_description()
        .await
        .ok_or_else(|| webrtc_err("no local description"))?
        .sdp;

    // Wire outputs on the payload types the answer settled on.
    let sections = sdp::parse(&answer)?;
    let mut audio_out = None;
    let mut video_out = None;
    if let Some(pt) = sdp::first(&sections, "audio")
        .filter(|_| send_audio)
        .and_then(|a| a.payload_type("opus", None))
    {
        let (tx, rx) = mpsc::channel(64);
        audio_out = Some(RtpSink::new(audio_ssrc, pt, tx));
        spawn_local_track(shared, audio_track, rx, false);
    }
    let answer_video = sdp::first(&sections, "video");
    // The payload type the stack bound the track's declared format to: VP8's, or for
    // H.264 that exact format if the viewer offered it, else the first H.264 with
    // packetization-mode 1.
    if let Some(pt) = answer_video
        .filter(|_| send_video)
        .and_then(|v| match video_codec {
            OutputCodec::Vp8 => v.payload_type("VP8", None),
            OutputCodec::H264 => v
                .payload_type("H264", Some("profile-level-id=42e01f"))
                .filter(|pt| {
                    v.fmtp
                        .get(pt)
                        .is_some_and(|f| f.contains("packetization-mode=1"))
                })
                .or_else(|| v.payload_type("H264", Some("packetization-mode=1"))),
        })
    {
        let (tx, rx) = mpsc::channel(1024);
        let sink = RtpSink::new(video_ssrc, pt, tx);
        video_out = Some(match video_codec {
            OutputCodec::Vp8 => sink.with_vp8(),
            OutputCodec::H264 => sink,
        });
        spawn_local_track(shared, video_track, rx, true);
    }
    let mut answer = answer;
    // The content: the whole connection's video, or the offer's content section.
    let content_section = if shared.content_only {
        sections.iter().find(|s| s.kind == "video" && s.is_live())
    } else {
        shared
            .content_mids
            .first()
            .and_then(|mid| sections.iter().find(|s| s.mid.as_deref() == Some(mid)))
    };
    if let Some(c) = content_section.filter(|_| shared.publish) {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(forward_upstream(shared.clone(), rx, true));
        shared
            .room
            .attach_content(shared.id, c.video_payload_types(), tx)?;
        if let Some(mid) = c.mid.as_deref() {
            answer = sdp::mark_content(&answer, mid);
        }
    }
    if shared.content_only {
        return Ok(answer);
    }
    let (up_tx, up_rx) = mpsc::channel(8);
    tokio::spawn(forward_upstream(shared.clone(), up_rx, false));
    shared.room.attach(
        shared.id,
        Attachment {
            video_payload_types: answer_video
                .map(|v| v.video_payload_types())
                .unwrap_or_default(),
            audio_out,
            video_out,
            upstream: up_tx,
        },
    )?;
    Ok(answer)
}
