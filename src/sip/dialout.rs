//! Dial-out: the bridge calls a phone into a room (`POST /api/rooms/{room}/calls`).
//!
//! A call we place goes through `[sip] outbound_proxy` when set (straight to the callee's
//! host otherwise), answers a digest challenge (RFC 3261 §22, RFC 8760: MD5 or SHA-256)
//! with `[sip] outbound_username`/`outbound_password`, rings at most
//! `[sip] ring_timeout_s` (then CANCEL), and once answered joins the room with no PIN (it
//! was invited) and runs like any call ([`super::call`]), its media taken only from the
//! callee ([`super::source`]). Progress — `dialing`, `ringing`, `answered`, then `ended`,
//! or `busy`, `no_answer`, `declined`, `failed` (with the SIP code), `cancelled` — goes to
//! the room's WebSocket (`callUpdated`), the server's SSE stream and `GET …/calls/{id}`.
//! Bounded: calls per server and per room, and new calls per room per minute. Placed calls
//! are plain RTP, so a room that requires encrypted media places none (`409`).
//!
//! The outcome of a final response ([`outcome`]) and the per-room rate ([`RoomRate`]) are
//! pure and unit-tested.

use super::call;
use super::sdp::{self, AudioOffer};
use super::source::SourceGuard;
use super::Bridge;
use crate::ids::{ParticipantId, RoomId};
use crate::room::ParticipantKind;
use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::invitation::InviteOption;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Longest callee URI taken.
const MAX_TARGET: usize = 256;
/// Finished calls kept for `GET` (the oldest are forgotten first).
const KEPT_FINISHED: usize = 256;

/// Where a placed call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Dialing,
    Ringing,
    Answered,
    /// Answered, then ended by either side.
    Ended,
    Busy,
    NoAnswer,
    Declined,
    Failed,
    /// Hung up (DELETE) before it was answered.
    Cancelled,
}

impl CallState {
    pub fn finished(self) -> bool {
        !matches!(self, Self::Dialing | Self::Ringing | Self::Answered)
    }
}

/// The state a final non-2xx response leaves a call in (RFC 3261 §21).
pub fn outcome(code: u16) -> CallState {
    match code {
        486 | 600 => CallState::Busy,
        603 => CallState::Declined,
        408 | 480 => CallState::NoAnswer,
        _ => CallState::Failed,
    }
}

/// A placed call as the API and events show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutCall {
    pub id: String,
    pub room: String,
    pub to: String,
    pub name: String,
    pub state: CallState,
    /// The final SIP status when it was not answered (or failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The participant it became once answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<ParticipantId>,
    /// Unix ms of the INVITE, the first ringing, the answer and the first audio from the
    /// callee.
    pub started_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringing_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at_ms: Option<u64>,
}

/// Why a call was not placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DialError {
    #[error("`to` must be a sip: or sips: URI of at most {MAX_TARGET} printable characters")]
    BadTarget,
    #[error("the room already has {0} calls being placed or running")]
    RoomLimit(usize),
    #[error("the server already has {0} calls being placed or running")]
    ServerLimit(usize),
    #[error("too many calls placed from this room in the last minute (limit {0})")]
    RateLimited(u32),
    #[error("the server is shutting down")]
    Closing,
    #[error("this room requires encrypted media and calls placed from it would be plain RTP")]
    NeedsEncryption,
}

/// New calls per room in a sliding minute (pure: `now` is an argument).
#[derive(Debug, Default)]
pub struct RoomRate {
    placed: VecDeque<Instant>,
}

impl RoomRate {
    /// Takes one call from the room's minute if there is room for it.
    pub fn take(&mut self, now: Instant, per_minute: u32) -> bool {
        while self
            .placed
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.placed.pop_front();
        }
        if self.placed.len() >= per_minute as usize {
            return false;
        }
        self.placed.push_back(now);
        true
    }
}

struct Entry {
    call: OutCall,
    hang_up: CancellationToken,
}

/// Every call the bridge has placed (running, and the last finished ones).
pub struct Dialer {
    bridge: Weak<Bridge>,
    calls: Mutex<HashMap<String, Entry>>,
    finished: Mutex<VecDeque<String>>,
    rates: Mutex<HashMap<RoomId, RoomRate>>,
    next: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A callee URI we accept: `sip:` or `sips:`, bounded, printable, parsable.
pub fn parse_target(to: &str) -> Result<rsipstack::sip::Uri, DialError> {
    let t = to.trim();
    if t.is_empty()
        || t.len() > MAX_TARGET
        || !(t.starts_with("sip:") || t.starts_with("sips:"))
        || t.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return Err(DialError::BadTarget);
    }
    rsipstack::sip::Uri::try_from(t).map_err(|_| DialError::BadTarget)
}

impl Dialer {
    pub fn new(bridge: Weak<Bridge>) -> Self {
        Self {
            bridge,
            calls: Mutex::new(HashMap::new()),
            finished: Mutex::new(VecDeque::new()),
            rates: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Places a call from `room` to `to`; it proceeds in its own task.
    pub fn place(
        self: &Arc<Self>,
        room: &RoomId,
        to: &str,
        name: Option<&str>,
    ) -> Result<OutCall, DialError> {
        let target = parse_target(to)?;
        let bridge = self.bridge.upgrade().ok_or(DialError::Closing)?;
        if bridge.closing.is_cancelled() {
            return Err(DialError::Closing);
        }
        let cfg = &bridge.config.sip;
        // Placed calls are plain RTP: a room that requires encryption places none.
        let policy = bridge.rooms.policies.get(room);
        if policy.media_encryption.unwrap_or(cfg.media_encryption)
            == crate::config::MediaEncryption::Required
        {
            return Err(DialError::NeedsEncryption);
        }
        let name = super::caller_name(name, target.auth.as_ref().map(|a| a.user.as_str()));
        let call = {
            let mut calls = lock(&self.calls);
            let running = calls.values().filter(|e| !e.call.state.finished());
            let (total, here) = running.fold((0, 0), |(t, h), e| {
                (t + 1, h + usize::from(e.call.room == room.as_str()))
            });
            if total >= cfg.max_outbound_calls {
                return Err(DialError::ServerLimit(cfg.max_outbound_calls));
            }
            if here >= cfg.max_outbound_calls_per_room {
                return Err(DialError::RoomLimit(cfg.max_outbound_calls_per_room));
            }
            if !lock(&self.rates)
                .entry(room.clone())
                .or_default()
                .take(Instant::now(), cfg.outbound_calls_per_minute)
            {
                return Err(DialError::RateLimited(cfg.outbound_calls_per_minute));
            }
            let id = format!("c{}", self.next.fetch_add(1, Ordering::Relaxed));
            let call = OutCall {
                id: id.clone(),
                room: room.to_string(),
                to: target.to_string(),
                name,
                state: CallState::Dialing,
                code: None,
                participant_id: None,
                started_at_ms: now_ms(),
                ringing_at_ms: None,
                answered_at_ms: None,
            };
            let hang_up = CancellationToken::new();
            calls.insert(
                id,
                Entry {
                    call: call.clone(),
                    hang_up: hang_up.clone(),
                },
            );
            tokio::spawn(place(
                self.clone(),
                bridge.clone(),
                call.clone(),
                target,
                hang_up,
            ));
            call
        };
        tracing::info!(room = %room, call = %call.id, to = %call.to, "placing a call");
        self.announce(&bridge, &call);
        Ok(call)
    }

    pub fn get(&self, room: &RoomId, id: &str) -> Option<OutCall> {
        lock(&self.calls)
            .get(id)
            .filter(|e| e.call.room == room.as_str())
            .map(|e| e.call.clone())
    }

    /// The room's calls, oldest first.
    pub fn list(&self, room: &RoomId) -> Vec<OutCall> {
        let mut v: Vec<OutCall> = lock(&self.calls)
            .values()
            .filter(|e| e.call.room == room.as_str())
            .map(|e| e.call.clone())
            .collect();
        v.sort_by_key(|c| (c.started_at_ms, c.id.len(), c.id.clone()));
        v
    }

    /// Hangs up (CANCEL while it rings, BYE once answered). False: no such call.
    pub fn hang_up(&self, room: &RoomId, id: &str) -> bool {
        match lock(&self.calls).get(id) {
            Some(e) if e.call.room == room.as_str() => {
                e.hang_up.cancel();
                true
            }
            _ => false,
        }
    }

    /// Changes a call and tells everyone who follows it.
    fn update(&self, bridge: &Bridge, id: &str, f: impl FnOnce(&mut OutCall)) {
        let call = {
            let mut calls = lock(&self.calls);
            let Some(e) = calls.get_mut(id) else { return };
            let was = e.call.state.finished();
            f(&mut e.call);
            let call = e.call.clone();
            if !was && call.state.finished() {
                let mut done = lock(&self.finished);
                done.push_back(id.to_owned());
                while done.len() > KEPT_FINISHED {
                    if let Some(old) = done.pop_front() {
                        calls.remove(&old);
                    }
                }
            }
            call
        };
        tracing::info!(room = %call.room, call = %call.id, state = ?call.state, code = ?call.code, "placed call");
        self.announce(bridge, &call);
    }

    fn announce(&self, bridge: &Bridge, call: &OutCall) {
        if let Some(room) = RoomId::parse(&call.room)
            .ok()
            .and_then(|r| bridge.rooms.get(&r))
        {
            room.call_updated(serde_json::to_value(call).unwrap_or_default());
        }
        bridge.rooms.events.call_updated(&call.room, call);
    }
}

/// The call's task: INVITE, progress, answer (or not), then the call itself.
async fn place(
    dialer: Arc<Dialer>,
    bridge: Arc<Bridge>,
    call: OutCall,
    target: rsipstack::sip::Uri,
    hang_up: CancellationToken,
) {
    let id = call.id.clone();
    let fail = |state: CallState, code: Option<u16>| {
        dialer.update(&bridge, &id, |c| {
            c.state = state;
            c.code = code;
        })
    };
    let Ok(room_id) = RoomId::parse(&call.room) else {
        return fail(CallState::Failed, None);
    };
    let socket = match call::bind_rtp(&bridge.config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("no RTP port for a placed call: {e}");
            return fail(CallState::Failed, None);
        }
    };
    let local = match socket.local_addr() {
        Ok(a) => SocketAddr::new(bridge.local.ip(), a.port()),
        Err(_) => return fail(CallState::Failed, None),
    };
    let session = (rand::random::<u32>() as u64, 1u64);
    let cfg = &bridge.config.sip;
    let destination = match cfg.outbound_proxy.as_deref().map(|p| {
        rsipstack::sip::Uri::try_from(p)
            .ok()
            .and_then(|u| rsipstack::transport::SipAddr::try_from(&u).ok())
    }) {
        None => None,
        Some(Some(d)) => Some(d),
        Some(None) => {
            tracing::error!("[sip] outbound_proxy is not a SIP URI");
            return fail(CallState::Failed, None);
        }
    };
    let from: Result<rsipstack::sip::Uri, _> = format!("sip:{}@{}", room_id, bridge.local)
        .as_str()
        .try_into();
    let Ok(from) = from else {
        return fail(CallState::Failed, None);
    };
    let call_id = format!("{:032x}@tessera", rand::random::<u128>());
    let offer = sdp::offer(local, session).into_bytes();
    let ring_end =
        tokio::time::Instant::now() + Duration::from_secs(cfg.ring_timeout_s.max(1) as u64);
    // Why we cancelled, if we did.
    let mut cancelled: Option<CallState> = None;
    // A digest answer to send with the next attempt (at most one retry per challenge kind).
    let mut credentials: Option<rsipstack::sip::Header> = None;
    let mut attempts = 0;
    let (dialog, states, dialog_id, resp) = loop {
        attempts += 1;
        let opt = InviteOption {
            caller_display_name: Some(format!("Tessera {room_id}")),
            caller: from.clone(),
            callee: target.clone(),
            destination: destination.clone(),
            content_type: Some("application/sdp".into()),
            offer: Some(offer.clone()),
            contact: from.clone(),
            headers: credentials.clone().map(|h| vec![h]),
            // Our own Call-ID (the stack's default names its authors' domain), kept across
            // the authenticated retry.
            call_id: Some(call_id.clone()),
            ..Default::default()
        };
        let (state_tx, mut states) = bridge.dialogs.new_dialog_state_channel();
        let (dialog, mut invite) = match bridge.dialogs.do_invite_async(opt, state_tx) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(call = %id, "INVITE not sent: {e}");
                return fail(CallState::Failed, None);
            }
        };
        let ring = tokio::time::sleep_until(ring_end);
        tokio::pin!(ring);
        let result = loop {
            tokio::select! {
                r = &mut invite => break r,
                s = states.recv() => {
                    if let Some(DialogState::Early(_, resp)) = s {
                        let code = u16::from(resp.status_code.clone());
                        if cancelled.is_none() && (180..=183).contains(&code) {
                            dialer.update(&bridge, &id, |c| {
                                if c.state == CallState::Dialing {
                                    c.state = CallState::Ringing;
                                    c.ringing_at_ms = Some(now_ms());
                                }
                            });
                        }
                    }
                }
                _ = &mut ring, if cancelled.is_none() => {
                    cancelled = Some(CallState::NoAnswer);
                    let _ = dialog.cancel().await;
                }
                _ = hang_up.cancelled(), if cancelled.is_none() => {
                    cancelled = Some(CallState::Cancelled);
                    let _ = dialog.cancel().await;
                }
                _ = bridge.closing.cancelled(), if cancelled.is_none() => {
                    cancelled = Some(CallState::Cancelled);
                    let _ = dialog.cancel().await;
                }
            }
        };
        let (dialog_id, resp) = match result {
            Ok(Ok((dialog_id, Some(resp)))) => (dialog_id, resp),
            Ok(Ok((_, None))) | Ok(Err(_)) | Err(_) => {
                return fail(cancelled.unwrap_or(CallState::Failed), None);
            }
        };
        let code = u16::from(resp.status_code.clone());
        if (code == 401 || code == 407) && cancelled.is_none() && attempts == 1 {
            if let Some(h) = authorize(cfg, &resp, &target) {
                credentials = Some(h);
                continue;
            }
        }
        break (dialog, states, dialog_id, resp);
    };
    let code = u16::from(resp.status_code.clone());
    if !(200..300).contains(&code) {
        return fail(cancelled.unwrap_or_else(|| outcome(code)), Some(code));
    }
    if let Some(state) = cancelled {
        // Answered as we cancelled: the stack ends that 2xx with a BYE.
        return fail(state, None);
    }
    let answered = answered(&bridge, &id, &call, &room_id, &resp).await;
    let Some((room, pid, remote, pt, codec)) = answered else {
        let _ = dialog.bye().await;
        bridge.dialogs.remove_dialog(&dialog_id);
        return fail(CallState::Failed, Some(code));
    };
    let Some(attached) = call::attach(&room, pid, pt) else {
        bridge.rooms.leave(&room, pid);
        let _ = dialog.bye().await;
        bridge.dialogs.remove_dialog(&dialog_id);
        return fail(CallState::Failed, Some(code));
    };
    dialer.update(&bridge, &id, |c| {
        c.state = CallState::Answered;
        c.answered_at_ms = Some(now_ms());
        c.participant_id = Some(pid);
    });
    // Media only from the address the answer named (or where the answer came from).
    let source = SourceGuard::new(remote.remote.map(|a| a.ip()), resp_source(&resp));
    let parts = call::Parts {
        bridge: bridge.clone(),
        room,
        id: pid,
        dialog,
        socket,
        local,
        remote,
        pt,
        codec,
        source,
        session,
        keys: None,
        pin: false,
    };
    // Hanging up through the API once answered: a kick (the call sends BYE).
    let kick = {
        let (bridge, room_id) = (bridge.clone(), room_id.clone());
        let hang_up = hang_up.clone();
        tokio::spawn(async move {
            hang_up.cancelled().await;
            if let Some(room) = bridge.rooms.get(&room_id) {
                let _ = room.kick(pid);
            }
        })
    };
    let end = call::run(parts, states, attached).await;
    kick.abort();
    bridge.dialogs.remove_dialog(&dialog_id);
    tracing::info!(call = %id, ?end, "placed call ended");
    dialer.update(&bridge, &id, |c| c.state = CallState::Ended);
}

/// The credentials header answering a 401/407 challenge with `[sip] outbound_username` and
/// `outbound_password` (`None`: no credential configured, or a challenge we cannot answer).
fn authorize(
    cfg: &crate::config::SipConfig,
    resp: &rsipstack::sip::Response,
    target: &rsipstack::sip::Uri,
) -> Option<rsipstack::sip::Header> {
    use rsipstack::sip::Header;
    let user = cfg.outbound_username.as_deref()?;
    let password = cfg.outbound_password.as_deref().unwrap_or_default();
    let (challenge, proxy) = resp.headers.iter().find_map(|h| match h {
        Header::ProxyAuthenticate(v) => Some((v.value().to_owned(), true)),
        Header::WwwAuthenticate(v) => Some((v.value().to_owned(), false)),
        _ => None,
    })?;
    let Some(ch) = super::digest::Challenge::parse(&challenge) else {
        tracing::info!("a digest challenge we cannot answer (scheme or algorithm)");
        return None;
    };
    let cnonce = format!("{:016x}", rand::random::<u64>());
    let answer = ch.answer(user, password, "INVITE", &target.to_string(), &cnonce);
    Some(if proxy {
        Header::ProxyAuthorization(answer.into())
    } else {
        Header::Authorization(answer.into())
    })
}

/// Reads the callee's answer and joins the room (no PIN).
async fn answered(
    bridge: &Bridge,
    id: &str,
    call: &OutCall,
    room_id: &RoomId,
    resp: &rsipstack::sip::Response,
) -> Option<(
    Arc<crate::room::Room>,
    ParticipantId,
    AudioOffer,
    u8,
    crate::codec::voice::AudioCodec,
)> {
    let remote = match sdp::parse_offer(&resp.body) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(call = %id, "the callee's answer is unusable: {e}");
            return None;
        }
    };
    // The answer names one of the codecs we offered (on our payload type or its own).
    let (pt, codec) = remote.chosen()?;
    let request = crate::admission::Request {
        room: room_id,
        name: &call.name,
        kind: ParticipantKind::Sip,
        credential: crate::admission::Credential::Invited,
        codec,
    };
    match bridge.admission().admit(request).await {
        Ok((room, info)) => Some((room, info.id, remote, pt, codec)),
        Err(e) => {
            tracing::info!(call = %id, "the callee answered but cannot join: {e}");
            None
        }
    }
}

/// Where the answer came from.
fn resp_source(resp: &rsipstack::sip::Response) -> Option<std::net::IpAddr> {
    use rsipstack::sip::prelude::HeadersExt;
    super::via_source(resp.via_header().ok()?.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_responses_map_to_states() {
        assert_eq!(outcome(486), CallState::Busy);
        assert_eq!(outcome(600), CallState::Busy);
        assert_eq!(outcome(603), CallState::Declined);
        assert_eq!(outcome(480), CallState::NoAnswer);
        assert_eq!(outcome(408), CallState::NoAnswer);
        assert_eq!(outcome(404), CallState::Failed);
        assert_eq!(outcome(503), CallState::Failed);
        assert!(CallState::Busy.finished() && !CallState::Ringing.finished());
    }

    #[test]
    fn targets_are_sip_uris_of_bounded_printable_text() {
        assert!(parse_target("sip:bob@127.0.0.1:5070").is_ok());
        assert!(parse_target("sips:bob@example.com").is_ok());
        for bad in [
            "",
            "tel:+15551234",
            "http://x",
            "sip:bob@x\r\nVia: evil",
            "sip:a b@x",
            "sip:<bob>@x",
        ] {
            assert_eq!(parse_target(bad), Err(DialError::BadTarget), "{bad:?}");
        }
        assert_eq!(
            parse_target(&format!("sip:{}@x", "a".repeat(300))),
            Err(DialError::BadTarget)
        );
    }

    #[test]
    fn a_room_places_at_most_n_calls_a_minute() {
        let mut r = RoomRate::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(r.take(t0 + Duration::from_secs(i), 3));
        }
        assert!(!r.take(t0 + Duration::from_secs(30), 3));
        assert!(
            r.take(t0 + Duration::from_secs(60), 3),
            "the first left the window"
        );
        assert!(!r.take(t0 + Duration::from_millis(60_500), 3));
    }
}
