//! Dial-out through the control API (`sip::dialout`), for an admin or a moderator of the
//! room (the route table gives `/api/rooms/{room}/…` the moderate right):
//! - `POST /api/rooms/{room}/calls` `{"to": "sip:bob@pbx.example.com", "name": "Bob"}` →
//!   `201` with the call (`id`, `state`: `dialing`, …) and its `Location`
//! - `GET /api/rooms/{room}/calls` → the room's calls; `GET …/calls/{id}` → one
//! - `DELETE …/calls/{id}` → hang up (CANCEL while ringing, BYE once answered)
//!
//! Refusals: `400` bad body or `to`, `409` the room requires encrypted media (placed
//! calls are plain RTP), `429` over the room's calls per minute, `503` over the per-room
//! or per-server limit, or SIP off.

use super::AppState;
use crate::ids::RoomId;
use crate::sip::dialout::{DialError, Dialer};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialBody {
    pub to: String,
    #[serde(default)]
    pub name: Option<String>,
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn parts(state: &AppState, room: &str) -> Result<(RoomId, Arc<Dialer>), Response> {
    let room = RoomId::parse(room).map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let dialer = state.rooms.dialer.get().cloned().ok_or_else(|| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SIP is off on this server (--sip-listen)".into(),
        )
    })?;
    Ok((room, dialer))
}

pub async fn place(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Result<Json<DialBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (room, dialer) = match parts(&state, &room) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(Json(body)) = body else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "body must be {\"to\": \"sip:…\", \"name\": \"…\"}".into(),
        );
    };
    match dialer.place(&room, &body.to, body.name.as_deref()) {
        Ok(call) => {
            let location = format!("/api/rooms/{}/calls/{}", room, call.id);
            (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(call),
            )
                .into_response()
        }
        Err(e) => {
            let status = match e {
                DialError::BadTarget => StatusCode::BAD_REQUEST,
                DialError::NeedsEncryption => StatusCode::CONFLICT,
                DialError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                DialError::RoomLimit(_) | DialError::ServerLimit(_) | DialError::Closing => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            refuse(status, e.to_string())
        }
    }
}

pub async fn list(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match parts(&state, &room) {
        Ok((room, dialer)) => Json(dialer.list(&room)).into_response(),
        Err(r) => r,
    }
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    match parts(&state, &room) {
        Ok((room, dialer)) => match dialer.get(&room, &id) {
            Some(c) => Json(c).into_response(),
            None => refuse(StatusCode::NOT_FOUND, "no such call".into()),
        },
        Err(r) => r,
    }
}

pub async fn hang_up(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    match parts(&state, &room) {
        Ok((room, dialer)) => {
            if dialer.hang_up(&room, &id) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                refuse(StatusCode::NOT_FOUND, "no such call".into())
            }
        }
        Err(r) => r,
    }
}
