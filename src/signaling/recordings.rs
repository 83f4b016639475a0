//! Recording control API:
//! - `POST /api/rooms/{room}/recording` starts recording a running room (201, JSON info)
//! - `DELETE /api/rooms/{room}/recording` stops it and finalises the file (200, JSON info)
//! - `GET /api/recordings` lists files: room, start, duration, size, live status
//! - `GET /api/recordings/{id}` downloads one (`video/mp4`)

use super::AppState;
use crate::ids::RoomId;
use crate::recording::{self, RecordingInfo};
use crate::room::RecordingStartError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub async fn start(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    let Ok(id) = RoomId::parse(&room) else {
        return error(StatusCode::BAD_REQUEST, "invalid room name");
    };
    let Some(room) = state.rooms.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("room `{id}` is not running"));
    };
    match tokio::task::spawn_blocking(move || room.start_recording()).await {
        Ok(Ok(info)) => (StatusCode::CREATED, Json(info)).into_response(),
        Ok(Err(RecordingStartError::AlreadyRecording)) => {
            error(StatusCode::CONFLICT, "the room is already being recorded")
        }
        Ok(Err(RecordingStartError::Recording(e))) if e.is_disk_full() => {
            error(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn stop(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    let Ok(id) = RoomId::parse(&room) else {
        return error(StatusCode::BAD_REQUEST, "invalid room name");
    };
    let Some(room) = state.rooms.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("room `{id}` is not running"));
    };
    match tokio::task::spawn_blocking(move || room.stop_recording()).await {
        Ok(Some(info)) => Json(info).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "the room is not being recorded"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let dir = state.config.recording.dir.clone();
    let live: Vec<RecordingInfo> = state
        .rooms
        .list()
        .iter()
        .filter_map(|r| r.recording_info())
        .collect();
    let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<RecordingInfo>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "mp4") || !recording::valid_id(&id) {
                continue;
            }
            if let Some(l) = live.iter().find(|l| l.id == id) {
                out.push(l.clone());
                continue;
            }
            let Some((room, started)) = recording::parse_id(&id) else {
                continue;
            };
            let mut file = std::fs::File::open(&path)?;
            let size_bytes = file.metadata()?.len();
            out.push(RecordingInfo {
                duration_seconds: recording::file_duration_seconds(&mut file)?,
                size_bytes,
                id,
                room,
                started_at: recording::utc_rfc3339(started),
                active: false,
                dropped_frames: 0,
                error: None,
            });
        }
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(out)
    })
    .await;
    match listed {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the recording directory: {e}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn download(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = id.strip_suffix(".mp4").unwrap_or(&id).to_owned();
    if !recording::valid_id(&id) {
        return error(StatusCode::BAD_REQUEST, "invalid recording id");
    }
    let path = state.config.recording.dir.join(format!("{id}.mp4"));
    match tokio::fs::File::open(&path).await {
        Ok(f) => {
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
            (
                [
                    (header::CONTENT_TYPE, "video/mp4".to_owned()),
                    (header::CONTENT_LENGTH, len.to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{id}.mp4\""),
                    ),
                ],
                body,
            )
                .into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            error(StatusCode::NOT_FOUND, "no such recording")
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
