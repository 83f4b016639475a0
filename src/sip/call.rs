//! One phone call: answering the INVITE (or, for a call we placed, its answer), then its
//! media task — symmetric RTP in and out (RFC 3550, 3551), SRTP where negotiated
//! ([`super::sdes`]), media taken from and sent to the far end only ([`super::source`]),
//! RTCP sender reports, DTMF (RFC 4733 and INFO) through the keypad, prompts, hold/resume by
//! re-INVITE, kicks, and the BYE from either side.

use super::keypad::{Action, Keypad};
use super::sdes::{self, KeyLine, Srtp};
use super::sdp::{self, AudioOffer};
use super::source::{SourceGuard, Verdict};
use super::{caller_name, Bridge};
use crate::admission::{self, Refusal};
use crate::codec::voice::AudioCodec;
use crate::ids::ParticipantId;
use crate::prompts::Prompt;
use crate::room::{Attachment, Control, JoinError, ParticipantKind, Room, RtpSink};
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TransactionHandle};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::headers::untyped::ToTypedHeader;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Request, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// RTCP every 5 s (RFC 3550's minimum interval).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// The SIP answer to a refused call: another node's contact (`302`), or why not.
async fn refuse(tx: &mut Transaction, e: &Refusal, user: &str) {
    let warning =
        |text: &str| Header::Warning(format!("399 tessera \"{}\"", text.replace('"', "'")).into());
    let (code, headers) = match e {
        Refusal::Elsewhere(node) => match &node.sip {
            Some(contact) => (
                StatusCode::MovedTemporarily,
                vec![Header::Contact(format!("<sip:{user}@{contact}>").into())],
            ),
            None => (
                StatusCode::TemporarilyUnavailable,
                vec![warning("the room's node takes no calls")],
            ),
        },
        Refusal::Cluster(_) => (
            StatusCode::ServiceUnavailable,
            vec![Header::RetryAfter("5".into()), warning(&e.to_string())],
        ),
        Refusal::PhoneNeedsPin | Refusal::PinRequired => {
            (StatusCode::Forbidden, vec![warning(&e.to_string())])
        }
        Refusal::Join(JoinError::Locked) => (StatusCode::Forbidden, vec![]),
        Refusal::Join(
            JoinError::RoomFull(_) | JoinError::ServerFull(_) | JoinError::WatchersFull(_),
        ) => (StatusCode::BusyHere, vec![]),
        Refusal::Join(JoinError::Unavailable(_) | JoinError::Draining) => {
            (StatusCode::ServiceUnavailable, vec![])
        }
    };
    let _ = tx.reply_with(code, headers, None).await;
}

/// Answers a new INVITE: refuses it with the right code, or joins the room and runs the
/// call until it ends.
pub async fn incoming(bridge: Arc<Bridge>, mut tx: Transaction) {
    let _ = tx.send_trying().await;
    let req = tx.original.clone();
    let source = source_ip(&req);
    if let Some(ip) = source {
        if !bridge.admit(ip) {
            let _ = tx
                .reply_with(
                    StatusCode::ServiceUnavailable,
                    vec![Header::RetryAfter("5".into())],
                    None,
                )
                .await;
            return;
        }
    }
    let user = req.uri.auth.as_ref().map(|a| a.user.clone());
    let Some(room_id) = user.as_deref().and_then(|u| bridge.room_for(u)) else {
        let _ = tx.reply(StatusCode::NotFound).await;
        return;
    };
    let offer = match sdp::parse_offer(&req.body) {
        Ok(o) => o,
        Err(e) => {
            tracing::info!(room = %room_id, "SIP call refused: {e}");
            let warning = Header::Warning(format!("399 tessera \"{e}\"").into());
            let _ = tx
                .reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                .await;
            return;
        }
    };
    let Some((pt, codec)) = offer.chosen() else {
        let _ = tx.reply(StatusCode::NotAcceptableHere).await;
        return;
    };
    let policy = bridge.rooms.policies.get(&room_id);
    // Media security: SRTP keyed by SDES when offered over TLS (keys never in clear).
    let tls = tx
        .connection
        .as_ref()
        .is_some_and(|c| c.transport() == rsipstack::sip::transport::Transport::Tls);
    let required = policy
        .media_encryption
        .unwrap_or(bridge.config.sip.media_encryption)
        == crate::config::MediaEncryption::Required;
    let keys = match sdes::negotiate(
        offer.savp,
        offer.crypto.iter().map(String::as_str),
        tls,
        required,
    )
    .map_err(|e| e.to_string())
    .and_then(|theirs| match theirs {
        None => Ok(None),
        Some(t) => {
            let ours = t.ours().map_err(|e| e.to_string())?;
            let srtp = Srtp::new(&t, &ours).map_err(|e| e.to_string())?;
            Ok(Some((t, ours, srtp)))
        }
    }) {
        Ok(k) => k,
        Err(e) => {
            tracing::info!(room = %room_id, tls, "SIP call refused: {e}");
            let warning = Header::Warning(format!("399 tessera \"{e}\"").into());
            let _ = tx
                .reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                .await;
            return;
        }
    };
    let socket = match bind_rtp(&bridge.config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("no RTP port for a SIP call: {e}");
            let _ = tx.reply(StatusCode::ServiceUnavailable).await;
            return;
        }
    };
    let from = req.from_header().ok().and_then(|f| f.typed().ok());
    let name = caller_name(
        from.as_ref().and_then(|f| f.display_name.as_deref()),
        from.as_ref()
            .and_then(|f| f.uri.auth.as_ref())
            .map(|a| a.user.as_str()),
    );
    // Phones carry no access token: the PIN, entered on the keypad, is the credential.
    let request = admission::Request {
        room: &room_id,
        name: &name,
        kind: ParticipantKind::Sip,
        credential: admission::Credential::Keypad,
        codec,
    };
    let (room, info) = match bridge.admission().admit(request).await {
        Ok(j) => j,
        Err(e) => {
            tracing::info!(room = %room_id, "SIP call refused: {e}");
            refuse(&mut tx, &e, user.as_deref().unwrap_or(room_id.as_str())).await;
            return;
        }
    };
    let (state_tx, state_rx) = bridge.dialogs.new_dialog_state_channel();
    // In-dialog requests come back the way the call came: over TLS for a TLS call.
    let contact = match bridge.tls_local.filter(|_| tls) {
        Some(t) => format!("sip:{room_id}@{t};transport=tls"),
        None => format!("sip:{}@{}", room_id, bridge.local),
    };
    let dialog = match bridge.dialogs.get_or_create_server_invite(
        &tx,
        state_tx,
        None,
        contact.as_str().try_into().ok(),
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("SIP dialog: {e}");
            bridge.rooms.leave(&room, info.id);
            let _ = tx.reply(StatusCode::ServerInternalError).await;
            return;
        }
    };
    let local = match socket.local_addr() {
        Ok(a) => SocketAddr::new(bridge.local.ip(), a.port()),
        Err(_) => bridge.local,
    };
    let session = (rand::random::<u32>() as u64, 1u64);
    let answer = sdp::answer(
        local,
        session,
        (pt, codec),
        offer.dtmf,
        offer.direction.answer(),
        keys.as_ref().map(|(_, ours, _)| (ours, offer.savp)),
    );
    let attached = attach(&room, info.id, pt);
    if attached.is_none()
        || dialog
            .accept(
                Some(vec![Header::ContentType("application/sdp".into())]),
                Some(answer.into_bytes()),
            )
            .is_err()
    {
        bridge.rooms.leave(&room, info.id);
        return;
    }
    tracing::info!(room = %room_id, id = %info.id, %name, ?codec, tls, srtp = keys.is_some(), "SIP call answered");
    let mut handler = dialog.clone();
    tokio::spawn(async move {
        let _ = handler.handle(&mut tx).await;
    });
    let Some(attached) = attached else {
        return;
    };
    let parts = Parts {
        bridge: bridge.clone(),
        room,
        id: info.id,
        dialog,
        socket,
        local,
        source: SourceGuard::new(offer.remote.map(|a| a.ip()), source),
        remote: offer,
        pt,
        codec,
        session,
        keys,
        pin: policy.needs_pin(),
    };
    run(parts, state_rx, attached).await;
}

/// What [`attach`] hands the call task: our SSRC, the mix to send, the room's controls.
pub(super) type Attached = (
    u32,
    mpsc::Receiver<rtc::rtp::packet::Packet>,
    mpsc::Receiver<Control>,
);

/// Connects a call's audio to its room participant: the sink the audio thread sends our
/// mix into (drained by the call task) and the control channel (kicks). `None`: the room
/// refused (the participant is gone).
pub(super) fn attach(room: &Room, id: ParticipantId, pt: u8) -> Option<Attached> {
    let (out_tx, out_rx) = mpsc::channel(64);
    let ssrc: u32 = rand::random();
    let (upstream, _) = mpsc::channel(1);
    room.attach(
        id,
        Attachment {
            video_payload_types: Default::default(),
            audio_out: Some(RtpSink::new(ssrc, pt, out_tx)),
            video_out: None,
            upstream,
        },
    )
    .ok()?;
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    room.set_control(id, ctl_tx);
    Some((ssrc, out_rx, ctl_rx))
}

/// The parts of a call whose media is agreed, whoever placed it.
pub(super) struct Parts {
    pub bridge: Arc<Bridge>,
    pub room: Arc<Room>,
    pub id: ParticipantId,
    pub dialog: InviteDialog,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    /// The far end's SDP (its offer, or its answer to ours).
    pub remote: AudioOffer,
    pub pt: u8,
    pub codec: AudioCodec,
    pub source: SourceGuard,
    pub session: (u64, u64),
    /// SRTP: the far end's key line, ours, and the contexts (`None`: plain RTP).
    pub keys: Option<(KeyLine, KeyLine, Srtp)>,
    /// It must enter the room's PIN first (a caller to a room with a PIN; never a callee).
    pub pin: bool,
}

/// Runs an answered call, ours or the caller's, until it ends.
pub(super) async fn run(parts: Parts, states: DialogStateReceiver, attached: Attached) -> End {
    let (ssrc, out_rx, ctl_rx) = attached;
    parts
        .bridge
        .calls
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let call = Call {
        bridge: parts.bridge,
        room: parts.room,
        id: parts.id,
        dialog: parts.dialog,
        socket: parts.socket,
        local: parts.local,
        offer: parts.remote,
        pt: parts.pt,
        codec: parts.codec,
        ssrc,
        keypad: Keypad::new(parts.pin),
        dtmf: Default::default(),
        received: Default::default(),
        sent: Default::default(),
        source: parts.source,
        held: false,
        hangup_at: None,
        session: parts.session,
        last_rtp: Instant::now(),
        keys: parts.keys,
    };
    call.run(states, out_rx, ctl_rx).await
}

/// The caller's address as the transport saw it.
fn source_ip(req: &Request) -> Option<std::net::IpAddr> {
    super::via_source(req.via_header().ok()?.value())
}

/// An RTP socket on the media IP (in the configured port range when there is one).
pub(super) async fn bind_rtp(config: &crate::config::Config) -> std::io::Result<UdpSocket> {
    let ip = config.media_ip;
    match (config.udp_port_min, config.udp_port_max) {
        (Some(a), Some(b)) => {
            let start = a + rand::random::<u16>() % (b - a + 1);
            for k in 0..=(b - a) {
                let port = a + (start - a + k) % (b - a + 1);
                if let Ok(s) = UdpSocket::bind((ip, port)).await {
                    return Ok(s);
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "every port in udp_port_min..=udp_port_max is taken",
            ))
        }
        _ => UdpSocket::bind((ip, 0)).await,
    }
}

struct Call {
    bridge: Arc<Bridge>,
    room: Arc<Room>,
    id: ParticipantId,
    dialog: InviteDialog,
    socket: UdpSocket,
    local: SocketAddr,
    offer: AudioOffer,
    pt: u8,
    codec: AudioCodec,
    ssrc: u32,
    keypad: Keypad,
    dtmf: super::dtmf::EventReceiver,
    received: super::rtcp::Received,
    sent: super::rtcp::Sent,
    /// Which source the caller's media is taken from and sent to (symmetric RTP, learned).
    source: SourceGuard,
    held: bool,
    /// A hang-up scheduled after a prompt (three wrong PINs).
    hangup_at: Option<tokio::time::Instant>,
    session: (u64, u64),
    last_rtp: Instant,
    /// SRTP: the caller's key line, ours, and the contexts (`None`: plain RTP).
    keys: Option<(KeyLine, KeyLine, Srtp)>,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The far end hung up (or cancelled, or the dialog timed out).
    Remote,
    /// We end it: BYE.
    Local(&'static str),
}

impl Call {
    async fn run(
        mut self,
        mut states: DialogStateReceiver,
        mut out: mpsc::Receiver<rtc::rtp::packet::Packet>,
        mut control: mpsc::Receiver<Control>,
    ) -> End {
        let mut events = self.room.subscribe();
        let mut buf = vec![0u8; 2048];
        let mut rtcp = tokio::time::interval(RTCP_INTERVAL);
        rtcp.tick().await;
        let media_timeout = Duration::from_secs(self.bridge.config.timeouts.media_s.max(1) as u64);
        if self.keypad.waiting() {
            self.room.prompt(self.id, Prompt::EnterPin.clip());
        } else {
            self.admitted();
        }
        let end = loop {
            let hangup = async {
                match self.hangup_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                state = states.recv() => match state {
                    None | Some(DialogState::Terminated(..)) => break End::Remote,
                    Some(DialogState::Info(_, req, handle)) => self.info(&req, handle).await,
                    Some(DialogState::Updated(_, req, handle)) => self.reinvite(&req, handle).await,
                    Some(DialogState::Options(_, _, handle)) => {
                        let _ = handle.reply(StatusCode::OK).await;
                    }
                    Some(_) => {}
                },
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        if let Some(end) = self.rtp(&buf[..n], from) {
                            break end;
                        }
                    }
                }
                pkt = out.recv() => match pkt {
                    Some(p) => self.send(p).await,
                    None => break End::Local("room closed"),
                },
                c = control.recv() => if let Some(Control::Kick) = c {
                    break End::Local("kicked");
                },
                e = events.recv() => self.event(e),
                _ = rtcp.tick() => {
                    self.send_rtcp().await;
                    if !self.held && self.last_rtp.elapsed() > media_timeout {
                        break End::Local("no RTP");
                    }
                }
                _ = hangup => break End::Local("wrong PIN"),
                _ = self.bridge.closing.cancelled() => break End::Local("server shutting down"),
            }
        };
        self.bridge.rooms.leave(&self.room, self.id);
        if let End::Local(why) = end {
            tracing::info!(id = %self.id, "ending SIP call: {why}");
            // The BYE goes out at once; its answer is not waited for beyond 2 s.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.dialog.bye()).await;
        } else {
            tracing::info!(id = %self.id, "SIP call ended by the caller");
        }
        self.bridge.dialogs.remove_dialog(&self.dialog.id());
        self.bridge
            .calls
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        end
    }

    /// After admission: tell a lone caller it is alone, and anyone that the conference is
    /// being recorded.
    fn admitted(&self) {
        let alone = self.room.participants().len() <= 1;
        let recorded =
            self.bridge.config.recording.announce && self.room.recording_info().is_some();
        let clip = match (alone, recorded) {
            (false, false) => return,
            (true, false) => Prompt::Alone.clip(),
            (false, true) => Prompt::Recording.clip(),
            (true, true) => [Prompt::Alone.clip(), Prompt::Recording.clip()]
                .concat()
                .into(),
        };
        self.room.prompt(self.id, clip);
    }

    /// One datagram on the RTP port. RTCP arrives here too when the caller multiplexes it.
    fn rtp(&mut self, data: &[u8], from: SocketAddr) -> Option<End> {
        let rtcp = data.len() >= 2 && (200..=207).contains(&data[1]);
        // SRTP: authenticate first (only from a source that may be the caller, so a
        // stranger cannot make the contexts track its SSRCs); a forgery counts as rejected.
        let plain;
        let data = match self.keys.as_mut() {
            None => data,
            Some(_) if !self.source.may_be_caller(from) => {
                let verdict = self.source.forged(from);
                self.admit(from, verdict);
                return None;
            }
            Some((_, _, srtp)) => {
                let opened = if rtcp {
                    srtp.unprotect_rtcp(data)
                } else {
                    srtp.unprotect_rtp(data)
                };
                match opened {
                    Some(p) => {
                        plain = p;
                        &plain[..]
                    }
                    None => {
                        // Counted like a stranger's packet, logged as what it is.
                        if let Verdict::Reject { log: true } = self.source.forged(from) {
                            tracing::info!(id = %self.id, %from, "SIP call: a datagram failed SRTP authentication (dropped; more from this source are counted, not logged)");
                        }
                        self.count_rejected();
                        return None;
                    }
                }
            }
        };
        if rtcp {
            let verdict = self.source.rtcp(from);
            if self.admit(from, verdict) {
                self.rtcp_in(data);
            }
            return None;
        }
        let Ok(pkt) = rtc::rtp::packet::Packet::unmarshal(&mut &data[..]) else {
            return None;
        };
        if pkt.header.version != 2 {
            return None;
        }
        let verdict = self
            .source
            .rtp(from, pkt.header.ssrc, pkt.header.sequence_number);
        if !self.admit(from, verdict) {
            return None;
        }
        self.last_rtp = Instant::now();
        let h = &pkt.header;
        if Some(h.payload_type) == self.offer.dtmf {
            if let Some(key) = self.dtmf.packet(h.timestamp, &pkt.payload) {
                return self.key(key);
            }
            return None;
        }
        if h.payload_type != self.pt {
            return None;
        }
        self.received.packet(h.ssrc, h.sequence_number);
        if !self.held {
            self.room
                .audio_packet(self.id, h.sequence_number, pkt.payload, None);
        }
        None
    }

    /// One more datagram in `tessera_sip_rtp_rejected_total`.
    fn count_rejected(&self) {
        self.bridge
            .rooms
            .events
            .sip_rtp_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Applies the source rule's verdict: true to take the datagram. A rejected one is
    /// counted (`tessera_sip_rtp_rejected_total`) and its source logged once.
    fn admit(&mut self, from: SocketAddr, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Accept => true,
            Verdict::Learning => false,
            Verdict::Reject { log } => {
                self.count_rejected();
                if log {
                    tracing::warn!(id = %self.id, %from, "SIP call: media from a source that is not the caller dropped");
                }
                false
            }
        }
    }

    fn rtcp_in(&mut self, data: &[u8]) {
        let Ok(pkts) = rtc::rtcp::packet::unmarshal(&mut &data[..]) else {
            return;
        };
        for p in pkts {
            if let Some(sr) = p
                .as_any()
                .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
            {
                self.received.sender_report(sr.ntp_time, Instant::now());
            }
        }
    }

    /// A DTMF key (RTP event or INFO).
    fn key(&mut self, key: char) -> Option<End> {
        let policy = self.bridge.rooms.policies.get(&self.room.id);
        let action = self.keypad.key(key, &policy)?;
        tracing::debug!(id = %self.id, ?action, "keypad");
        let prompt = |p: Prompt| self.room.prompt(self.id, p.clip());
        match action {
            Action::Admit { moderator } => match self.room.admit(self.id, moderator) {
                Ok(_) => self.admitted(),
                Err(_) => return Some(End::Local("cannot admit")),
            },
            Action::WrongPin => prompt(Prompt::WrongPin),
            Action::HangUp => {
                self.room.prompt(self.id, Prompt::WrongPin.clip());
                self.hangup_at = Some(
                    tokio::time::Instant::now()
                        + Prompt::WrongPin.duration()
                        + Duration::from_millis(300),
                );
            }
            Action::ToggleMute => {
                let muted = self
                    .room
                    .participants()
                    .iter()
                    .find(|p| p.id == self.id)
                    .is_some_and(|p| p.audio_muted);
                let _ = self.room.set_muted(self.id, Some(!muted), None);
            }
            Action::BecomeModerator => {
                let _ = self.room.set_moderator(self.id, true);
                prompt(Prompt::Moderator);
            }
            Action::MuteOthers => {
                self.room.mute_all(true);
                prompt(Prompt::EveryoneMuted);
            }
            Action::UnmuteOthers => {
                self.room.mute_all(false);
                prompt(Prompt::EveryoneUnmuted);
            }
            Action::ToggleLock => {
                let locked = !policy.locked;
                let patch = crate::room::policy::PolicyPatch {
                    locked: Some(locked),
                    ..Default::default()
                };
                if self
                    .bridge
                    .rooms
                    .patch_policy(&self.room.id, &patch)
                    .is_ok()
                {
                    prompt(if locked {
                        Prompt::Locked
                    } else {
                        Prompt::Unlocked
                    });
                }
            }
            Action::NotAllowed => prompt(Prompt::NotAllowed),
        }
        None
    }

    /// Room events that concern this caller: being muted or unmuted by anyone.
    fn event(
        &mut self,
        e: Result<crate::room::RoomEvent, tokio::sync::broadcast::error::RecvError>,
    ) {
        if let Ok(crate::room::RoomEvent::ParticipantUpdated { participant }) = e {
            if participant.id == self.id {
                let p = if participant.audio_muted {
                    Prompt::Muted
                } else {
                    Prompt::Unmuted
                };
                self.room.prompt(self.id, p.clip());
            }
        }
    }

    async fn info(&mut self, req: &Request, handle: TransactionHandle) {
        let ct = req
            .headers
            .iter()
            .find_map(|h| match h {
                Header::ContentType(c) => Some(c.value().to_owned()),
                _ => None,
            })
            .unwrap_or_default();
        match super::dtmf::info_key(&ct, &req.body) {
            Some(key) => {
                let _ = handle.reply(StatusCode::OK).await;
                if let Some(End::Local(_)) = self.key(key) {
                    self.hangup_at = Some(tokio::time::Instant::now());
                }
            }
            None => {
                let _ = handle.reply(StatusCode::UnsupportedMediaType).await;
            }
        }
    }

    /// re-INVITE (or UPDATE): hold, resume, or a new address; the codec stays.
    async fn reinvite(&mut self, req: &Request, handle: TransactionHandle) {
        if req.body.is_empty() {
            // No offer: answer with our current SDP as an offer would need an ACK answer;
            // refreshes without SDP are fine.
            let _ = handle.reply(StatusCode::OK).await;
            return;
        }
        let offer = match sdp::parse_offer(&req.body) {
            Ok(o)
                if o.codecs
                    .iter()
                    .any(|&(pt, c)| pt == self.pt && c == self.codec) =>
            {
                o
            }
            _ => {
                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                return;
            }
        };
        // The media security of a call never changes: SRTP stays SRTP (the caller may send
        // a new key; ours stays), plain stays plain.
        if let Some((theirs, ours, srtp)) = self.keys.as_mut() {
            match KeyLine::choose(offer.crypto.iter().map(String::as_str)) {
                Ok(new) if new == *theirs => {}
                Ok(new) if new.suite == ours.suite => match Srtp::new(&new, ours) {
                    Ok(fresh) => {
                        *srtp = fresh;
                        *theirs = new;
                    }
                    Err(_) => {
                        let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                        return;
                    }
                },
                _ => {
                    let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                    return;
                }
            }
        } else if offer.savp {
            let _ = handle.reply(StatusCode::NotAcceptableHere).await;
            return;
        }
        let held = offer.is_hold();
        if held != self.held {
            tracing::info!(id = %self.id, held, "SIP call hold state");
            self.held = held;
            let _ = self.room.set_muted(self.id, Some(held), None);
        }
        if offer.remote != self.offer.remote && offer.remote.is_some() {
            self.source
                .moved(offer.remote.map(|a| a.ip()), source_ip(req));
        }
        let dtmf = offer.dtmf;
        self.offer = offer;
        self.session.1 += 1;
        let answer = sdp::answer(
            self.local,
            self.session,
            (self.pt, self.codec),
            dtmf,
            self.offer.direction.answer(),
            self.keys
                .as_ref()
                .map(|(_, ours, _)| (ours, self.offer.savp)),
        );
        let _ = handle
            .respond(
                StatusCode::OK,
                Some(vec![Header::ContentType("application/sdp".into())]),
                Some(answer.into_bytes()),
            )
            .await;
    }

    /// Where our media goes: only to a source that proved itself (never just to the
    /// address an SDP named).
    fn target(&self) -> Option<SocketAddr> {
        self.source.latched()
    }

    async fn send(&mut self, pkt: rtc::rtp::packet::Packet) {
        if self.held || !self.offer.direction.writer_receives() {
            return;
        }
        let Some(to) = self.target() else { return };
        let (ts, len) = (pkt.header.timestamp, pkt.payload.len());
        let Ok(b) = pkt.marshal() else { return };
        let b = match self.keys.as_mut() {
            None => Some(b),
            Some((_, _, srtp)) => srtp.protect_rtp(&b),
        };
        if let Some(b) = b {
            if self.socket.send_to(&b, to).await.is_ok() {
                self.sent.packet(ts, len, Instant::now());
                self.room.stats.sent(len);
            }
        }
    }

    async fn send_rtcp(&mut self) {
        let Some(to) = self.target() else { return };
        let clock = self.codec.rtp_clock();
        if let Some(b) = super::rtcp::sender_report(
            self.ssrc,
            clock,
            &self.sent,
            &mut self.received,
            Instant::now(),
        ) {
            let b = match self.keys.as_mut() {
                None => Some(b),
                Some((_, _, srtp)) => srtp.protect_rtcp(&b).map(|p| p.to_vec()),
            };
            // RTCP on the next port up (RFC 3550 11) unless the caller muxes it.
            let rtcp_to = SocketAddr::new(to.ip(), to.port().wrapping_add(1));
            if let Some(b) = b {
                let _ = self.socket.send_to(&b, rtcp_to).await;
            }
        }
    }
}
