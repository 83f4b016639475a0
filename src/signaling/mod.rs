//! Signaling and HTTP: the WebSocket protocol for the web client, WHIP for standard
//! clients, a small read-only rooms API, and the embedded web client — all on one axum
//! router. `serve` runs it until the shutdown future resolves, then ends every session
//! (clients get `bye`), closes peers and joins the room threads.

pub mod protocol;
pub mod recordings;
pub mod whip;
pub mod ws;

use crate::config::Config;
use crate::room::{JoinError, ParticipantInfo, Room, Rooms};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything request handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub rooms: Arc<Rooms>,
    pub whip: Mutex<HashMap<String, whip::WhipSession>>,
    /// Flips to `true` once shutdown starts.
    pub shutdown: watch::Receiver<bool>,
}

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

fn asset(body: &'static str, ct: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomSummary {
    room: String,
    layout: String,
    participants: Vec<crate::room::ParticipantInfo>,
    active_speaker: Option<crate::ids::ParticipantId>,
    video_encoders: u64,
    video_frames_encoded: u64,
    video_frames_decoded: u64,
    dropped_inputs: u64,
    recording: Option<crate::recording::RecordingInfo>,
}

/// Joins `name` to room `id` off the runtime (starting a room spawns threads and may
/// open a recording file).
async fn join_room(
    state: &AppState,
    id: &crate::ids::RoomId,
    name: &str,
) -> Result<(Arc<Room>, ParticipantInfo), JoinError> {
    let rooms = state.rooms.clone();
    let (id, name) = (id.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || rooms.join(&id, &name))
        .await
        .unwrap_or_else(|e| Err(JoinError::Unavailable(e.to_string())))
}

/// 200 `ok` while the server can start rooms; 503 when the OS refuses threads (so an
/// orchestrator restarts it). Cheap: one short-lived thread, no locks.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let rooms = state.rooms.clone();
    let ok = tokio::task::spawn_blocking(move || rooms.can_start_rooms())
        .await
        .unwrap_or(false);
    if ok {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot start rooms: out of threads",
        )
            .into_response()
    }
}

async fn list_rooms(State(state): State<Arc<AppState>>) -> Json<Vec<RoomSummary>> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out: Vec<RoomSummary> = state
        .rooms
        .list()
        .iter()
        .map(|r| RoomSummary {
            room: r.id.to_string(),
            layout: r.layout(),
            participants: r.participants(),
            active_speaker: r.active_speaker(),
            video_encoders: r.stats.encoders.load(Relaxed),
            video_frames_encoded: r.stats.video_frames_encoded.load(Relaxed),
            video_frames_decoded: r.stats.video_frames_decoded.load(Relaxed),
            dropped_inputs: r.stats.dropped_inputs.load(Relaxed),
            recording: r.recording_info(),
        })
        .collect();
    out.sort_by(|a, b| a.room.cmp(&b.room));
    Json(out)
}

async fn ws_upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(protocol::MAX_WS_MESSAGE_BYTES)
        .max_frame_size(protocol::MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| ws::run(socket, state))
}

/// WHIP clients are often pages on other origins: allow them.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_whip = req.uri().path().starts_with("/whip/");
    let mut resp = next.run(req).await;
    if is_whip {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization, If-Match"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, Link, ETag"),
        );
    }
    resp
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/healthz", get(healthz))
        .route("/ws", get(ws_upgrade))
        .route("/api/rooms", get(list_rooms))
        .route(
            "/api/rooms/{room}/recording",
            post(recordings::start).delete(recordings::stop),
        )
        .route("/api/recordings", get(recordings::list))
        .route("/api/recordings/{id}", get(recordings::download))
        .route("/whip/{room}", post(whip::post).options(whip::options))
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(whip::delete)
                .patch(whip::patch)
                .options(whip::options),
        )
        .fallback(|method: Method| async move {
            if method == Method::GET {
                (StatusCode::NOT_FOUND, "not found")
            } else {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
        })
        .layer(axum::middleware::from_fn(cors))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then shuts everything down in order.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    rooms: Arc<Rooms>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        config: Arc::new(config),
        rooms: rooms.clone(),
        whip: Mutex::new(HashMap::new()),
        shutdown: stop_rx,
    });
    let app = router(state.clone());
    let mut stop_rx2 = state.shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx2.changed().await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("shutting down: ending sessions");
    let _ = stop_tx.send(true);
    whip::end_all(&state).await;
    // WebSocket sessions see the flag, say `bye`, leave their rooms and close their peers.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    tokio::task::spawn_blocking(move || rooms.stop_all())
        .await
        .ok();
    tracing::info!("shutdown complete");
    Ok(())
}
