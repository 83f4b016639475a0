//! WHIP (RFC 9725): `POST /whip/{room}` with an SDP offer creates a participant and answers
//! `201 Created` with the answer SDP (all server candidates included) and the session's
//! `Location`; `DELETE` on that location leaves. A client whose offer has sendrecv
//! transceivers receives its personal composite and N-1 mix on them. Trickle ICE over
//! `PATCH` is not supported (`405`), which RFC 9725 allows.
//!
//! A second video m-line marked `a=content:slides` (RFC 4796) is the client's content (a
//! shared screen), not another camera: the client presents for as long as the session
//! lasts. Floor control applies: when someone else holds the floor and the room refuses
//! a second presenter, the POST is answered `409 Conflict` and nobody joins.

use super::AppState;
use crate::admission::{self, Refusal};
use crate::ids::{ParticipantId, RoomId};
use crate::room::Room;
use crate::transport::{self, PeerEvent, PeerSession, TransportError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCPeerConnectionState;

/// A live WHIP or WHEP session.
pub struct Session {
    room: Arc<Room>,
    id: ParticipantId,
    peer: PeerSession,
}

fn lock(
    m: &std::sync::Mutex<HashMap<String, Session>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

/// A WHIP offer that passed every check that needs no room: what `post` goes on with.
#[derive(Debug, PartialEq, Eq)]
pub struct WhipOffer<'a> {
    pub room: RoomId,
    pub name: String,
    pub sdp: &'a str,
}

/// Checks a WHIP `POST` without touching any room: `Content-Type`, room name, participant
/// name and the SDP offer. Pure, so that it can be fuzzed; the error is the status and
/// text the client gets.
pub fn check_offer<'a>(
    content_type: Option<&[u8]>,
    room: &str,
    name: Option<&str>,
    body: &'a [u8],
) -> Result<WhipOffer<'a>, (StatusCode, String)> {
    let ct = content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/sdp".into(),
        ));
    }
    let Ok(room) = RoomId::parse(room) else {
        return Err((StatusCode::BAD_REQUEST, "invalid room name".into()));
    };
    let Ok(sdp) = std::str::from_utf8(body) else {
        return Err((StatusCode::BAD_REQUEST, "SDP must be UTF-8".into()));
    };
    if let Err(e) = crate::sdp::parse(sdp) {
        return Err((StatusCode::BAD_REQUEST, format!("invalid SDP offer: {e}")));
    }
    let name = match name.map(super::protocol::validate_name) {
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err((StatusCode::BAD_REQUEST, "invalid name".into())),
        None => "WHIP client".to_owned(),
    };
    Ok(WhipOffer { room, name, sdp })
}

/// The HTTP answer to a refused WHIP or WHEP POST. In a cluster the room's node answers
/// (RFC 9725 §4.5 allows redirecting the POST).
pub fn refused(e: &Refusal, room: &RoomId, uri: &axum::http::Uri) -> Response {
    use crate::room::JoinError;
    let status = match e {
        Refusal::Elsewhere(node) => return super::temporary_redirect(&node.public_url, uri),
        Refusal::PinRequired | Refusal::PhoneNeedsPin => {
            return plain(
                StatusCode::FORBIDDEN,
                format!("room `{room}` needs its PIN (`?pin=`) or an access token"),
            )
        }
        Refusal::Join(JoinError::Locked) => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut resp = plain(status, format!("room `{room}`: {e}"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// A viewer's own maximum picture (`?maxWidth=&maxHeight=`; 0: no cap).
pub fn size_cap(q: &HashMap<String, String>) -> Result<(u32, u32), String> {
    Ok((dimension(q, "maxWidth")?, dimension(q, "maxHeight")?))
}

/// An optional size query parameter: 0 when absent, else 16..=8192.
fn dimension(q: &HashMap<String, String>, key: &str) -> Result<u32, String> {
    match q.get(key) {
        None => Ok(0),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (16..=8192).contains(n))
            .ok_or_else(|| format!("{key} must be a number of pixels between 16 and 8192")),
    }
}

/// What a WHIP or WHEP `POST` brings, checked: the access grant (the route gate has
/// checked the bearer token, or that the server is open), the offer and the viewer's own
/// maximum picture (`?maxWidth=&maxHeight=`, a phone asking for 360p). `Err`: the answer.
pub fn read_post<'a>(
    grant: Option<axum::Extension<crate::auth::JoinGrant>>,
    headers: &HeaderMap,
    room: &str,
    q: &HashMap<String, String>,
    body: &'a [u8],
    default_name: Option<&str>,
) -> Result<(crate::auth::JoinGrant, WhipOffer<'a>, (u32, u32)), Response> {
    let Some(axum::Extension(grant)) = grant else {
        return Err(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no access decision",
        ));
    };
    let name = grant
        .name
        .as_deref()
        .or(q.get("name").map(String::as_str))
        .or(default_name);
    let offer = check_offer(
        headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        room,
        name,
        body,
    )
    .map_err(|(status, msg)| plain(status, msg))?;
    let cap = size_cap(q).map_err(|m| plain(StatusCode::BAD_REQUEST, m))?;
    Ok((grant, offer, cap))
}

pub async fn post(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    grant: Option<axum::Extension<crate::auth::JoinGrant>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (grant, offer, cap) = match read_post(grant, &headers, &room, &q, &body, None) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let WhipOffer {
        room: room_id,
        name,
        sdp: offer,
    } = offer;
    // A token for the room stands in for its PIN; without one, `?pin=` gives it.
    let request = admission::Request {
        room: &room_id,
        name: &name,
        kind: crate::room::ParticipantKind::Whip,
        credential: admission::Credential::Grant {
            grant: &grant,
            pin: q.get("pin").map(String::as_str),
        },
        codec: crate::codec::voice::AudioCodec::Opus,
    };
    let (room, info) = match state.admission.admit(request).await {
        Ok(joined) => joined,
        Err(e) => return refused(&e, &room_id, &uri),
    };
    if let Some(link) = room.link(info.id) {
        link.set_cap(cap.0, cap.1);
    }
    let presents = grant.publish
        && crate::sdp::parse(offer)
            .ok()
            .is_some_and(|s| crate::sdp::content(&s).is_some());
    if presents {
        if let Err(e) = room.request_floor(info.id) {
            state.rooms.leave(&room, info.id);
            return plain(StatusCode::CONFLICT, format!("cannot present: {e}"));
        }
    }
    let opts = transport::ConnectOptions {
        wait_for_gathering: true,
        publish: grant.publish,
        subscribe: grant.subscribe,
        content: false,
    };
    open_session(&state, room, info.id, offer, opts, "whip").await
}

/// Connects an admitted participant or watcher's offer and answers `201 Created` with the
/// answer SDP and the session's `Location` (`/{base}/{room}/{session}`); the session ends
/// on `DELETE`, when its connection fails or closes, when it never connects, or on a
/// kick. A failed negotiation leaves the room again.
pub async fn open_session(
    state: &Arc<AppState>,
    room: Arc<Room>,
    id: ParticipantId,
    offer: &str,
    opts: transport::ConnectOptions,
    base: &str,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    let peer = match transport::connect(room.clone(), id, offer, &state.config, tx, opts).await {
        Ok(p) => p,
        Err(e) => {
            state.rooms.leave(&room, id);
            let status = match e {
                TransportError::BadSdp(_) | TransportError::Negotiation(_) => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return plain(status, e.to_string());
        }
    };
    let answer = peer.answer.clone();
    let session_id = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let location = format!("/{base}/{}/{session_id}", room.id);
    tracing::info!(room = %room.id, %id, "{base} session started");
    let (ctl_tx, ctl_rx) = mpsc::channel(2);
    room.set_control(id, ctl_tx);
    lock(&state.sessions).insert(session_id.clone(), Session { room, id, peer });
    tokio::spawn(watch(state.clone(), session_id, rx, ctl_rx));
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    resp
}

/// Ends the session when its connection fails or closes.
async fn watch(
    state: Arc<AppState>,
    session_id: String,
    mut rx: mpsc::UnboundedReceiver<PeerEvent>,
    mut control: mpsc::Receiver<crate::room::Control>,
) {
    // A session whose media never connects (a client that POSTed and went away) ends too.
    let connect_by = tokio::time::Instant::now()
        + std::time::Duration::from_secs(state.config.timeouts.connect_s as u64);
    let mut connected = false;
    loop {
        let next = async {
            if connected {
                Ok(rx.recv().await)
            } else {
                tokio::time::timeout_at(connect_by, rx.recv()).await
            }
        };
        let ev = tokio::select! {
            ev = next => match ev {
                Ok(ev) => ev,
                Err(_) => {
                    tracing::info!(session = %session_id, "WHIP session never connected");
                    end(&state, &session_id).await;
                    return;
                }
            },
            Some(crate::room::Control::Kick) = control.recv() => {
                tracing::info!(session = %session_id, "WHIP participant kicked");
                end(&state, &session_id).await;
                return;
            }
        };
        match ev {
            Some(PeerEvent::State(RTCPeerConnectionState::Connected)) => connected = true,
            Some(PeerEvent::State(
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
            )) => {
                end(&state, &session_id).await;
                return;
            }
            Some(_) => {}
            None => return,
        }
    }
}

async fn end(state: &AppState, session_id: &str) -> bool {
    let s = lock(&state.sessions).remove(session_id);
    match s {
        Some(s) => {
            s.peer.close().await;
            state.rooms.leave(&s.room, s.id);
            tracing::info!(room = %s.room.id, id = %s.id, "session ended");
            drop(s);
            crate::room::note_memory_freed();
            true
        }
        None => false,
    }
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path((room, session)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Response {
    // The token was checked for `room`: only that room's sessions may be ended with it.
    let in_room = lock(&state.sessions)
        .get(&session)
        .is_some_and(|s| s.room.id.as_str() == room);
    if in_room && end(&state, &session).await {
        return StatusCode::OK.into_response();
    }
    // A client that kept the node it first POSTed to: the session is on the room's node.
    if let Ok(id) = RoomId::parse(&room) {
        if let Some(r) = super::redirect_to_owner(&state, &id, &uri).await {
            return r;
        }
    }
    plain(StatusCode::NOT_FOUND, "no such session")
}

pub async fn patch() -> Response {
    plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported; send all candidates in the offer",
    )
}

pub async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r
}

/// Closes every WHIP and WHEP session (shutdown).
pub async fn end_all(state: &AppState) {
    let ids: Vec<String> = lock(&state.sessions).keys().cloned().collect();
    for id in ids {
        end(state, &id).await;
    }
}
