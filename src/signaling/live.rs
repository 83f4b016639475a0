//! The HTTP side of live output:
//! - `GET /hls/{room}/index.m3u8`, `init.mp4`, `segment-{n}.m4s`: HLS of a running room's
//!   audience view (fMP4 segments of [`SEGMENT`](crate::live::SEGMENT), a rolling
//!   window). Same access as WHEP (a `subscribe` token, given as `?token=` since players
//!   cannot set headers, or the room's `?pin=`); the playlist repeats the query on every
//!   URI. The first request starts the room's live output and waits for its first
//!   segment; the output stops when nobody has asked for a while and no RTMP push runs.
//! - `POST /api/rooms/{room}/streams` `{"url": "rtmp://host/app/key"}` (the `record`
//!   right), `GET` the room's streams, `DELETE /api/rooms/{room}/streams/{id}`: RTMP
//!   pushes. Answers show the URL with its key hidden.

use super::AppState;
use crate::admission;
use crate::ids::RoomId;
use crate::live::{hls, rtmp::RtmpError};
use crate::room::RoomError;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the first playlist request waits for the first segment.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(8);

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn running(state: &AppState, room: &str) -> Result<Arc<crate::room::Room>, Response> {
    let id =
        RoomId::parse(room).map_err(|_| error(StatusCode::BAD_REQUEST, "invalid room name"))?;
    state
        .rooms
        .get(&id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("room `{id}` is not running")))
}

/// `token` and `pin` of the request's query, to repeat on the playlist's URIs.
fn passthrough(query: Option<&str>) -> String {
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| kv.starts_with("token=") || kv.starts_with("pin="))
        .filter(|kv| kv.len() <= 4096 && !kv.contains(['"', '\n', '\r', '#']))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

pub async fn hls(
    State(state): State<Arc<AppState>>,
    Path((room, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    grant: Option<axum::Extension<crate::auth::JoinGrant>>,
) -> Response {
    let Some(axum::Extension(grant)) = grant else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no access decision");
    };
    let room = match running(&state, &room) {
        Ok(r) => r,
        Err(r) => return r,
    };
    // The room's PIN, where there is one and no token stands in for it.
    let pin = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("pin="));
    let request = admission::Request {
        room: &room.id,
        name: "hls",
        kind: crate::room::ParticipantKind::Watcher,
        credential: admission::Credential::Grant { grant: &grant, pin },
        codec: crate::codec::voice::AudioCodec::Opus,
    };
    if let Err(e) = state.admission.joiner(&request) {
        return error(StatusCode::FORBIDDEN, format!("room `{}`: {e}", room.id));
    }
    let r = room.clone();
    let out = match tokio::task::spawn_blocking(move || r.live()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    *out.last_request.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    let media = |bytes: bytes::Bytes| {
        (
            [
                (header::CONTENT_TYPE, "video/mp4"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            bytes,
        )
            .into_response()
    };
    let not_yet = || {
        error(
            StatusCode::NOT_FOUND,
            "not (or no longer) in the live window",
        )
    };
    match file.as_str() {
        "index.m3u8" => {
            let deadline = tokio::time::Instant::now() + FIRST_SEGMENT_WAIT;
            loop {
                let wait = out.updated.notified();
                {
                    let p = out.playlist.lock().unwrap_or_else(|e| e.into_inner());
                    if !p.is_empty() && p.init().is_some() {
                        let body = p.render(&passthrough(query.as_deref()));
                        return (
                            [
                                (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                                (header::CACHE_CONTROL, "no-cache"),
                            ],
                            body,
                        )
                            .into_response();
                    }
                }
                if tokio::time::timeout_at(deadline, wait).await.is_err() {
                    let mut r = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the live output is starting; try again shortly",
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
                    return r;
                }
            }
        }
        "init.mp4" => {
            let init = out
                .playlist
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .init();
            init.map_or_else(not_yet, media)
        }
        name => match hls::parse_segment_name(name) {
            Some(n) => {
                let seg = out
                    .playlist
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .segment(n);
                seg.map_or_else(not_yet, media)
            }
            None => error(StatusCode::NOT_FOUND, "no such file"),
        },
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStream {
    url: String,
}

fn stream_error(e: RoomError) -> Response {
    let status = match &e {
        RoomError::Stream(RtmpError::BadUrl) => StatusCode::BAD_REQUEST,
        RoomError::Stream(RtmpError::TooMany) => StatusCode::CONFLICT,
        RoomError::Stream(RtmpError::NoSuchStream) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// `POST /api/rooms/{room}/streams`: starts an RTMP push (201 with the stream, key hidden).
pub async fn add_stream(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let room = match running(&state, &room) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let req: NewStream = match serde_json::from_slice(&body) {
        Ok(r) => r,
        // (serde's message may quote the body, which holds the key: not repeated.)
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be {\"url\": \"rtmp://host[:port]/app/key\"}",
            )
        }
    };
    match room.add_stream(&req.url) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => stream_error(e),
    }
}

pub async fn list_streams(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Response {
    match running(&state, &room) {
        Ok(r) => Json(r.streams.list()).into_response(),
        Err(r) => r,
    }
}

pub async fn delete_stream(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let room = match running(&state, &room) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    match room.streams.remove(id) {
        Ok(info) => Json(info).into_response(),
        Err(e) => stream_error(e.into()),
    }
}
