//! One WebSocket signaling session: lobby → joined (room + participant) → connected
//! (peer). Every client message is validated; a bad one gets an `error` reply and the
//! session goes on. When the socket closes, the participant leaves and its peer closes.
//!
//! Presenting: `present` carries the offer of a second peer connection that holds only
//! the client's screen (floor control first, then negotiation without trickle); it lasts
//! until `stopPresenting`, until its connection fails or closes, or until the room ends
//! the presentation (a moderator, another presenter taking the floor).

use super::protocol::{
    parse_client_message, validate_name, ClientMessage, ErrorCode, ServerMessage, VideoInfo,
};
use super::AppState;
use crate::admission::{self, Refusal};
use crate::ids::{ParticipantId, RoomId};
use crate::room::{JoinError, Room};
use crate::transport::{self, PeerEvent, PeerSession};
use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use webrtc::peer_connection::{RTCIceCandidateInit, RTCPeerConnectionState};

struct Joined {
    room: Arc<Room>,
    id: ParticipantId,
    events: broadcast::Receiver<crate::room::RoomEvent>,
    peer: Option<PeerSession>,
    /// The content connection while it presents.
    content: Option<PeerSession>,
    /// The media connection has been established.
    connected: bool,
    /// What the token allows (everything in open mode).
    grant: crate::auth::JoinGrant,
}

pub async fn run(socket: WebSocket, state: Arc<AppState>) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ServerMessage>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let text = match serde_json::to_string(&msg) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let send = |m: ServerMessage| {
        let _ = out_tx.send(m);
    };
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let (content_tx, mut content_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let mut shutdown = state.shutdown.clone();
    let mut joined: Option<Joined> = None;
    // Set while a joined session has no established media: by then it must have offered
    // (`offer_s` after join) and connected (`connect_s` after the offer).
    let mut deadline: Option<(tokio::time::Instant, &'static str)> = None;
    let t = &state.config.timeouts;
    let (offer_wait, connect_wait) = (
        std::time::Duration::from_secs(t.offer_s as u64),
        std::time::Duration::from_secs(t.connect_s as u64),
    );

    loop {
        deadline = match (&joined, deadline) {
            (None, _) => None,
            (Some(j), None) if j.peer.is_none() => {
                Some((tokio::time::Instant::now() + offer_wait, "no offer"))
            }
            (Some(j), Some((_, "no offer"))) if j.peer.is_some() && !j.connected => Some((
                tokio::time::Instant::now() + connect_wait,
                "media did not connect",
            )),
            (Some(j), Some(_)) if j.connected => None,
            (_, d) => d,
        };
        tokio::select! {
            _ = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let why = deadline.map_or("", |d| d.1);
                let secs = if why == "no offer" { t.offer_s } else { t.connect_s };
                send(ServerMessage::error(
                    ErrorCode::Timeout,
                    format!("{why} within {secs} s: the session is closed"),
                ));
                break;
            }
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        send(ServerMessage::error(ErrorCode::BadMessage, "binary frames are not part of the protocol"));
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                };
                let msg = match parse_client_message(&text) {
                    Ok(m) => m,
                    Err(e) => {
                        send(e);
                        continue;
                    }
                };
                if matches!(msg, ClientMessage::Leave) {
                    break;
                }
                handle(msg, &state, &mut joined, (&peer_tx, &content_tx), &send).await;
            }
            ev = async {
                match joined.as_mut() {
                    Some(j) => j.events.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match ev {
                    // The joiner learns about itself from `joined`.
                    Ok(crate::room::RoomEvent::ParticipantJoined { participant }) if joined.as_ref().is_some_and(|j| j.id == participant.id) => {}
                    // Kicked by a moderator: told, then the session ends (and leaves).
                    Ok(ev @ crate::room::RoomEvent::ParticipantKicked { participant_id }) if joined.as_ref().is_some_and(|j| j.id == participant_id) => {
                        send(ServerMessage::Room(ev));
                        break;
                    }
                    // This client's presentation ended in the room: its connection goes.
                    Ok(ev @ crate::room::RoomEvent::PresentationStopped { participant_id, .. }) if joined.as_ref().is_some_and(|j| j.id == participant_id) => {
                        if let Some(c) = joined.as_mut().and_then(|j| j.content.take()) {
                            c.close().await;
                        }
                        send(ServerMessage::Room(ev));
                    }
                    Ok(ev) => send(ServerMessage::Room(ev)),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!("signaling client lagged {n} room events"),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            Some(pe) = peer_rx.recv() => match pe {
                PeerEvent::SendLimit(l) => send(ServerMessage::SendLimit {
                    width: l.width,
                    height: l.height,
                    max_bitrate: l.max_bitrate_bps,
                    max_framerate: l.max_fps,
                }),
                PeerEvent::LocalCandidate(c) => send(ServerMessage::Candidate {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                }),
                PeerEvent::State(s) => {
                    send(ServerMessage::ConnectionState { state: s.to_string() });
                    if s == RTCPeerConnectionState::Connected {
                        if let Some(j) = joined.as_mut() {
                            j.connected = true;
                        }
                    }
                    if s == RTCPeerConnectionState::Failed {
                        send(ServerMessage::error(ErrorCode::NegotiationFailed, "media connection failed"));
                        break;
                    }
                    if s == RTCPeerConnectionState::Closed {
                        break; // the client hung up its media: it has left
                    }
                }
            },
            Some(pe) = content_rx.recv() => {
                if let PeerEvent::State(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) = pe {
                    if let Some(j) = joined.as_mut() {
                        if let Some(c) = j.content.take() {
                            c.close().await;
                            j.room.release_floor(j.id, crate::room::presentation::StopReason::Ended);
                        }
                    }
                }
            }
            _ = shutdown.changed() => {
                send(ServerMessage::Bye { reason: "server is shutting down".into() });
                break;
            }
        }
    }
    if let Some(j) = joined.take() {
        leave(&state, j).await;
    }
    drop(out_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
}

async fn leave(state: &AppState, j: Joined) {
    if let Some(peer) = &j.peer {
        peer.close().await;
    }
    if let Some(content) = &j.content {
        content.close().await;
    }
    state.rooms.leave(&j.room, j.id);
    tracing::info!(room = %j.room.id, id = %j.id, "participant left");
    drop(j);
    crate::room::note_memory_freed();
}

/// The error a client gets for an offer the transport refused.
fn refused(e: &transport::TransportError) -> ServerMessage {
    let code = match e {
        transport::TransportError::BadSdp(_) => ErrorCode::BadSdp,
        _ => ErrorCode::NegotiationFailed,
    };
    ServerMessage::error(code, e.to_string())
}

async fn handle(
    msg: ClientMessage,
    state: &Arc<AppState>,
    joined: &mut Option<Joined>,
    (peer_tx, content_tx): (
        &mpsc::UnboundedSender<PeerEvent>,
        &mpsc::UnboundedSender<PeerEvent>,
    ),
    send: &impl Fn(ServerMessage),
) {
    let bad_state = |m: &str| ServerMessage::error(ErrorCode::BadState, m);
    match msg {
        ClientMessage::Join {
            room,
            name,
            pin,
            token,
        } => {
            if joined.is_some() {
                return send(bad_state(
                    "already joined; open a new connection to join another room",
                ));
            }
            let Ok(room_id) = RoomId::parse(&room) else {
                return send(ServerMessage::error(
                    ErrorCode::InvalidRoom,
                    "room name must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
                ));
            };
            let grant = match state.access.authorize_join(
                token.as_deref(),
                room_id.as_str(),
                crate::auth::unix_now(),
            ) {
                Ok(g) => g,
                Err(e) => {
                    tracing::info!(room = %room_id, "join refused: {e}");
                    return send(ServerMessage::error(ErrorCode::Unauthorized, e.to_string()));
                }
            };
            // A name carried by the token wins over the one typed in.
            let name = match validate_name(grant.name.as_deref().unwrap_or(&name)) {
                Ok(n) => n,
                Err(e) => return send(e),
            };
            let request = admission::Request {
                room: &room_id,
                name: &name,
                kind: crate::room::ParticipantKind::Web,
                credential: admission::Credential::Grant {
                    grant: &grant,
                    pin: pin.as_deref(),
                },
                codec: crate::codec::voice::AudioCodec::Opus,
            };
            let (room, info) = match state.admission.admit(request).await {
                Ok(joined) => joined,
                // The room's node checks its PIN and admits: send the client there.
                Err(Refusal::Elsewhere(node)) => {
                    return send(ServerMessage::Redirect {
                        url: node.ws_url(),
                        node: node.id.to_string(),
                    });
                }
                Err(e) => {
                    let code = match &e {
                        Refusal::PinRequired | Refusal::PhoneNeedsPin => ErrorCode::PinRequired,
                        Refusal::Join(JoinError::RoomFull(_)) => ErrorCode::RoomFull,
                        Refusal::Join(JoinError::Locked) => ErrorCode::RoomLocked,
                        Refusal::Join(JoinError::ServerFull(_) | JoinError::WatchersFull(_)) => {
                            ErrorCode::ServerFull
                        }
                        Refusal::Elsewhere(_)
                        | Refusal::Cluster(_)
                        | Refusal::Join(JoinError::Unavailable(_) | JoinError::Draining) => {
                            ErrorCode::Unavailable
                        }
                    };
                    return send(ServerMessage::error(code, format!("room `{room_id}`: {e}")));
                }
            };
            let events = room.subscribe();
            tracing::info!(room = %room_id, id = %info.id, name = %info.name, "participant joined");
            let v = &state.config.video;
            send(ServerMessage::Joined {
                participant_id: info.id,
                room: room_id.to_string(),
                participants: room.participants(),
                layout: room.layout(),
                layouts: room.layouts(),
                ice_servers: state.config.ice_servers.clone(),
                active_speaker: room.active_speaker(),
                video: VideoInfo {
                    width: v.width,
                    height: v.height,
                    fps: v.fps,
                },
                recording: room.is_recording(),
                presenter: room.presenter(),
            });
            *joined = Some(Joined {
                room,
                id: info.id,
                events,
                peer: None,
                content: None,
                connected: false,
                grant,
            });
        }
        ClientMessage::Offer { sdp } => {
            let Some(j) = joined.as_mut() else {
                return send(bad_state("join a room before sending an offer"));
            };
            if j.peer.is_some() {
                return send(bad_state("this session already has a media connection"));
            }
            match transport::connect(
                j.room.clone(),
                j.id,
                &sdp,
                &state.config,
                peer_tx.clone(),
                transport::ConnectOptions {
                    wait_for_gathering: false,
                    publish: j.grant.publish,
                    subscribe: j.grant.subscribe,
                    content: false,
                },
            )
            .await
            {
                Ok(peer) => {
                    send(ServerMessage::Answer {
                        sdp: peer.answer.clone(),
                    });
                    j.peer = Some(peer);
                }
                Err(e) => {
                    tracing::info!(id = %j.id, "offer refused: {e}");
                    send(refused(&e));
                }
            }
        }
        ClientMessage::Present { sdp } => {
            let Some(j) = joined.as_mut() else {
                return send(bad_state("join a room before presenting"));
            };
            if !j.grant.publish {
                return send(ServerMessage::error(
                    ErrorCode::Unauthorized,
                    "this token does not allow publishing",
                ));
            }
            // A new screen replaces this client's old one.
            if let Some(old) = j.content.take() {
                old.close().await;
            }
            if let Err(e) = j.room.request_floor(j.id) {
                return send(ServerMessage::error(ErrorCode::FloorTaken, e.to_string()));
            }
            match transport::connect(
                j.room.clone(),
                j.id,
                &sdp,
                &state.config,
                content_tx.clone(),
                transport::ConnectOptions {
                    wait_for_gathering: true,
                    publish: true,
                    subscribe: false,
                    content: true,
                },
            )
            .await
            {
                Ok(peer) => {
                    send(ServerMessage::PresentAnswer {
                        sdp: peer.answer.clone(),
                    });
                    j.content = Some(peer);
                }
                Err(e) => {
                    j.room
                        .release_floor(j.id, crate::room::presentation::StopReason::Ended);
                    tracing::info!(id = %j.id, "present offer refused: {e}");
                    send(refused(&e));
                }
            }
        }
        ClientMessage::StopPresenting => {
            let Some(j) = joined.as_mut() else {
                return send(bad_state("join a room first"));
            };
            if let Some(c) = j.content.take() {
                c.close().await;
            }
            j.room
                .release_floor(j.id, crate::room::presentation::StopReason::Ended);
        }
        ClientMessage::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
        } => {
            let Some(peer) = joined.as_ref().and_then(|j| j.peer.as_ref()) else {
                return send(bad_state("send an offer before candidates"));
            };
            let init = RTCIceCandidateInit {
                candidate,
                sdp_mid,
                sdp_mline_index,
                ..Default::default()
            };
            if let Err(e) = peer.add_remote_candidate(init).await {
                send(ServerMessage::error(ErrorCode::BadCandidate, e.to_string()));
            }
        }
        ClientMessage::SetLayout { layout } => {
            let Some(j) = joined.as_ref() else {
                return send(bad_state("join a room first"));
            };
            if let Err(e) = j.room.set_layout(&layout) {
                send(ServerMessage::error(
                    ErrorCode::UnknownLayout,
                    e.to_string(),
                ));
            }
        }
        ClientMessage::Mute { audio, video } => {
            let Some(j) = joined.as_ref() else {
                return send(bad_state("join a room first"));
            };
            if let Err(e) = j.room.set_muted(j.id, audio, video) {
                send(ServerMessage::error(ErrorCode::Internal, e.to_string()));
            }
        }
        ClientMessage::VideoSize { width, height } => {
            let Some(j) = joined.as_ref() else {
                return send(bad_state("join a room first"));
            };
            if !(1..=16_384).contains(&width) || !(1..=16_384).contains(&height) {
                return send(ServerMessage::error(
                    ErrorCode::BadMessage,
                    "videoSize: width and height must be 1..16384".to_owned(),
                ));
            }
            if let (Some(link), Ok(ladder)) = (j.room.link(j.id), state.config.video.ladder()) {
                let r = ladder.get(ladder.covering(width, height));
                link.set_cap(r.width, r.height);
            }
        }
        ClientMessage::Moderate(action) => {
            let Some(j) = joined.as_ref() else {
                return send(bad_state("join a room first"));
            };
            // A presenter may stop its own presentation this way too.
            let own = matches!(action, super::moderation::Moderation::StopPresentation)
                && j.room.presenter() == Some(j.id);
            if !own && !j.room.is_moderator(j.id) {
                return send(ServerMessage::error(
                    ErrorCode::NotModerator,
                    "only a moderator may do that",
                ));
            }
            if let Err(e) = super::moderation::apply(&state.rooms, &j.room.id, &action) {
                send(ServerMessage::error(ErrorCode::BadState, e.to_string()));
            }
        }
        ClientMessage::Leave => {}
    }
}
