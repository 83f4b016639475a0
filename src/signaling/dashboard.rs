//! The operator's dashboard: `/dashboard` (admin; the page takes its token as `?token=`
//! because a browser navigation cannot send a header), its script, the vendored uPlot
//! charting library, and `GET /api/stats` (admin), the server-wide figures the page polls
//! and turns into rates and windowed percentiles itself.

use super::{asset, AppState};
use crate::room::ParticipantKind;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub const DASHBOARD_HTML: &str = include_str!("../../web/dashboard.html");
pub const DASHBOARD_JS: &str = include_str!("../../web/dashboard.js");
pub const UPLOT_JS: &str = include_str!("../../web/vendor/uplot/uPlot.iife.min.js");
pub const UPLOT_CSS: &str = include_str!("../../web/vendor/uplot/uPlot.min.css");

/// Upper bounds (ms) of the lateness buckets the page computes percentiles from.
const EDGES_MS: [f64; 23] = [
    0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 33.3, 40.0,
    50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
];

#[derive(Serialize, Default)]
pub struct Participants {
    web: u64,
    whip: u64,
    sip: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    edges_ms: Vec<f64>,
    /// Cumulative tick counts at each edge, summed over running rooms (last: all ticks).
    video: Vec<u64>,
    audio: Vec<u64>,
}

/// Server-wide counters at one instant.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    at_ms: u64,
    rooms: usize,
    participants: Participants,
    /// RTP payload bytes received/sent by the running rooms since they started.
    bytes_in: u64,
    bytes_out: u64,
    video_encoders: u64,
    cpu_seconds: f64,
    rss_bytes: u64,
    latency: Latency,
}

fn stats_now(rooms: &crate::room::Rooms) -> Stats {
    let edges: Vec<Duration> = EDGES_MS
        .iter()
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect();
    let mut s = Stats {
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        rooms: 0,
        participants: Participants::default(),
        bytes_in: 0,
        bytes_out: 0,
        video_encoders: 0,
        cpu_seconds: crate::metrics::process_cpu_ns() as f64 / 1e9,
        rss_bytes: super::prometheus::rss_bytes(),
        latency: Latency {
            edges_ms: EDGES_MS.to_vec(),
            video: vec![0; EDGES_MS.len() + 1],
            audio: vec![0; EDGES_MS.len() + 1],
        },
    };
    for r in rooms.list() {
        s.rooms += 1;
        for p in r.participants() {
            match p.kind {
                ParticipantKind::Web => s.participants.web += 1,
                ParticipantKind::Whip => s.participants.whip += 1,
                ParticipantKind::Sip => s.participants.sip += 1,
                ParticipantKind::Watcher => {}
            }
        }
        let st = &r.stats;
        s.bytes_in += st.bytes_in.load(Relaxed);
        s.bytes_out += st.bytes_out.load(Relaxed);
        s.video_encoders += st.encoders.load(Relaxed);
        for (acc, h) in [
            (&mut s.latency.video, &st.video_lateness),
            (&mut s.latency.audio, &st.audio_lateness),
        ] {
            for (a, (_, n)) in acc.iter_mut().zip(h.cumulative(&edges)) {
                *a += n;
            }
        }
    }
    s
}

/// `GET /api/stats` (admin).
pub async fn stats(State(state): State<Arc<AppState>>) -> Response {
    let rooms = state.rooms.clone();
    match tokio::task::spawn_blocking(move || stats_now(&rooms)).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn page() -> Response {
    let mut r = asset(DASHBOARD_HTML, "text/html; charset=utf-8");
    // The URL carries a token: keep it out of Referer headers.
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    r
}

pub async fn script() -> Response {
    asset(DASHBOARD_JS, "text/javascript; charset=utf-8")
}

pub async fn uplot_js() -> Response {
    asset(UPLOT_JS, "text/javascript; charset=utf-8")
}

pub async fn uplot_css() -> Response {
    asset(UPLOT_CSS, "text/css; charset=utf-8")
}
