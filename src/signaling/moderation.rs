//! Room access and moderator controls, for the control API and for moderators in the web
//! client (one core, [`apply`]):
//! - `PATCH /api/rooms/{room}` `{"pin": "4321", "moderatorPin": "9999", "locked": false,
//!   "tones": true}` — the room need not be running; `null` or `""` clears a PIN
//! - `POST /api/rooms/{room}/participants/{id}/mute` `{"muted": true}`
//! - `POST /api/rooms/{room}/mute-all` `{"muted": true}` — everyone but the moderators
//! - `DELETE /api/rooms/{room}/participants/{id}` — kick (a caller gets a BYE)
//! - `DELETE /api/rooms/{room}/presentation` — stop whoever presents
//! - dialling a phone into the room and hanging it up (`dial`, `hangUp`; over the API:
//!   `signaling::calls`)
//!
//! Every change reaches the room's web clients as an event (`participantUpdated`,
//! `participantLeft`, `roomPolicy`).

use super::AppState;
use crate::ids::{ParticipantId, RoomId};
use crate::room::policy::{PolicyError, PolicyPatch};
use crate::room::{RoomError, Rooms};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

/// What a moderator can do.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum Moderation {
    #[serde(rename_all = "camelCase")]
    Mute {
        participant_id: ParticipantId,
        muted: bool,
    },
    MuteAll {
        muted: bool,
    },
    #[serde(rename_all = "camelCase")]
    Kick {
        participant_id: ParticipantId,
    },
    Lock {
        locked: bool,
    },
    /// Sets (or with `null`, clears) the room PIN.
    SetPin {
        pin: Option<String>,
    },
    /// Calls a phone into the room (`sip::dialout`); progress comes as `callUpdated`.
    Dial {
        to: String,
        #[serde(default)]
        name: Option<String>,
    },
    /// Hangs up a call placed from the room.
    #[serde(rename_all = "camelCase")]
    HangUp {
        call_id: String,
    },
    /// Stops whoever presents.
    StopPresentation,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModError {
    #[error("room `{0}` is not running")]
    NoRoom(RoomId),
    #[error("no such participant")]
    NoParticipant,
    #[error("nobody is presenting")]
    NotPresenting,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Room(String),
    #[error("{0}")]
    Dial(String),
}

impl ModError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoRoom(_) | Self::NoParticipant | Self::NotPresenting => StatusCode::NOT_FOUND,
            Self::Policy(PolicyError::BadPin) => StatusCode::BAD_REQUEST,
            Self::Policy(PolicyError::TooMany(_)) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Room(_) => StatusCode::CONFLICT,
            Self::Dial(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<RoomError> for ModError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::NoSuchParticipant => Self::NoParticipant,
            RoomError::Floor(crate::room::presentation::FloorError::NobodyPresenting) => {
                Self::NotPresenting
            }
            other => Self::Room(other.to_string()),
        }
    }
}

/// Applies one moderator action to room `id`.
pub fn apply(rooms: &Rooms, id: &RoomId, m: &Moderation) -> Result<(), ModError> {
    let policy = |patch: PolicyPatch| rooms.patch_policy(id, &patch).map(|_| ());
    // Access rules apply whether or not the room runs; the rest needs the running room.
    let room = || rooms.get(id).ok_or_else(|| ModError::NoRoom(id.clone()));
    match m {
        Moderation::Lock { locked } => policy(PolicyPatch {
            locked: Some(*locked),
            ..Default::default()
        })?,
        Moderation::SetPin { pin } => policy(PolicyPatch {
            pin: Some(pin.clone().filter(|p| !p.is_empty())),
            ..Default::default()
        })?,
        Moderation::Mute {
            participant_id,
            muted,
        } => room()?.set_muted(*participant_id, Some(*muted), None)?,
        Moderation::MuteAll { muted } => {
            room()?.mute_all(*muted);
        }
        Moderation::Kick { participant_id } => room()?.kick(*participant_id)?,
        Moderation::Dial { to, name } => {
            let dialer = rooms
                .dialer
                .get()
                .ok_or_else(|| ModError::Dial("SIP is off on this server".into()))?;
            dialer
                .place(id, to, name.as_deref())
                .map_err(|e| ModError::Dial(e.to_string()))?;
        }
        Moderation::StopPresentation => {
            room()?.stop_presentation(None)?;
        }
        Moderation::HangUp { call_id } => {
            let hung = rooms.dialer.get().is_some_and(|d| d.hang_up(id, call_id));
            if !hung {
                return Err(ModError::Dial("no such call".into()));
            }
        }
    }
    Ok(())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn room_id(room: &str) -> Result<RoomId, Response> {
    RoomId::parse(room).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

fn respond(r: Result<(), ModError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

/// A JSON body, or the 400 that says why not.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

pub async fn patch_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let id = match room_id(&room) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let patch: PolicyPatch = match body(&bytes) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match state.rooms.patch_policy(&id, &patch) {
        Ok(p) => Json(p).into_response(),
        Err(e) => {
            let e = ModError::from(e);
            error(e.status(), e.to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Muted {
    muted: bool,
}

pub async fn mute(
    State(state): State<Arc<AppState>>,
    Path((room, pid)): Path<(String, u64)>,
    bytes: axum::body::Bytes,
) -> Response {
    let (id, m) = match (room_id(&room), body::<Muted>(&bytes)) {
        (Ok(id), Ok(m)) => (id, m),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let action = Moderation::Mute {
        participant_id: ParticipantId(pid),
        muted: m.muted,
    };
    respond(apply(&state.rooms, &id, &action))
}

pub async fn mute_all(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let (id, m) = match (room_id(&room), body::<Muted>(&bytes)) {
        (Ok(id), Ok(m)) => (id, m),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    respond(apply(
        &state.rooms,
        &id,
        &Moderation::MuteAll { muted: m.muted },
    ))
}

pub async fn kick(
    State(state): State<Arc<AppState>>,
    Path((room, pid)): Path<(String, u64)>,
) -> Response {
    let id = match room_id(&room) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let action = Moderation::Kick {
        participant_id: ParticipantId(pid),
    };
    respond(apply(&state.rooms, &id, &action))
}

/// `DELETE /api/rooms/{room}/presentation`: stops whoever presents (`404` when nobody does).
pub async fn stop_presentation(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Response {
    let id = match room_id(&room) {
        Ok(id) => id,
        Err(r) => return r,
    };
    respond(apply(&state.rooms, &id, &Moderation::StopPresentation))
}
