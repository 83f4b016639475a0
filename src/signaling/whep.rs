//! WHEP (WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep): `POST /whep/{room}` with a
//! `recvonly` SDP offer makes the caller a *watcher* of the room and answers `201 Created`
//! with the answer SDP (all server candidates included) and the session's `Location`;
//! `DELETE` on that location stops watching. A watcher receives the room's audience
//! picture (`[live] layout`, a shared canvas) on the quality ladder — its own rung from
//! its link's estimate, congestion control, NACK/RTX, keyframes on PLI, exactly as a
//! participant's picture — and the full mix. Watchers sharing a rung share its encoder,
//! so a hundred of them cost what the distinct rungs cost. They are not participants:
//! not listed, not mixed, bounded by `[live] max_watchers` per room and
//! `max_watchers_total`, counted in `tessera_watchers`.
//!
//! Access: a bearer token for the room granting `subscribe` (or the admin key); an open
//! server admits anyone, and a room's PIN is given as `?pin=`. Cross-origin by design
//! (CORS `*`). Like WHIP, trickle ICE (`PATCH`) is answered `405`; in a cluster the POST
//! is redirected (`307`) to the node that hosts the room.

use super::whip::{self, WhipOffer};
use super::AppState;
use crate::admission;
use crate::transport;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;

pub async fn post(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    grant: Option<axum::Extension<crate::auth::JoinGrant>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // (The route gate has checked the token's `subscribe` right.)
    let (grant, offer, cap) =
        match whip::read_post(grant, &headers, &room, &q, &body, Some("watcher")) {
            Ok(r) => r,
            Err(r) => return r,
        };
    let WhipOffer {
        room: room_id,
        name,
        sdp: offer,
    } = offer;
    let request = admission::Request {
        room: &room_id,
        name: &name,
        kind: crate::room::ParticipantKind::Watcher,
        credential: admission::Credential::Grant {
            grant: &grant,
            pin: q.get("pin").map(String::as_str),
        },
        codec: crate::codec::voice::AudioCodec::Opus,
    };
    let (room, info) = match state.admission.admit(request).await {
        Ok(admitted) => admitted,
        Err(e) => return whip::refused(&e, &room_id, &uri),
    };
    if let Some(link) = room.link(info.id) {
        link.set_cap(cap.0, cap.1);
    }
    let opts = transport::ConnectOptions {
        wait_for_gathering: true,
        publish: false,
        subscribe: true,
        content: false,
    };
    whip::open_session(&state, room, info.id, offer, opts, "whep").await
}
