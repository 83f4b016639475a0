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

/// This node's recordings and, in a cluster, every live node's (each with its `node`).
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let local = match local_list(&state).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some(c) = &state.cluster else {
        return Json(local).into_response();
    };
    let local = local
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    let mut all = c.whole_list(crate::cluster::List::Recordings, local).await;
    all.sort_by(|a, b| {
        (a["startedAt"].as_str(), a["id"].as_str())
            .cmp(&(b["startedAt"].as_str(), b["id"].as_str()))
    });
    Json(all).into_response()
}

async fn local_list(state: &AppState) -> Result<Vec<RecordingInfo>, Response> {
    let dir = state.config.recording.dir.clone();
    let live: Vec<RecordingInfo> = state
        .rooms
        .list()
        .iter()
        .filter_map(|r| r.recording_info())
        .collect();
    let listed =
        tokio::task::spawn_blocking(move || recording::Catalog::default().scan(&dir, &live)).await;
    match listed {
        Ok(Ok(list)) => Ok(list),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the recording directory: {e}"),
        )),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

pub async fn download(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Response {
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
            // In a cluster the file may be on another node's disk.
            if let Some(c) = &state.cluster {
                if let Some(node) = c.recording_node(&id).await {
                    return super::temporary_redirect(&node.public_url, &uri);
                }
            }
            error(StatusCode::NOT_FOUND, "no such recording")
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
