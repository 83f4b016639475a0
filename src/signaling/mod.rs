//! Signaling and HTTP: the WebSocket protocol for the web client, WHIP for standard
//! clients, WHEP for watchers, HLS and RTMP pushes ([`live`]), the control API, and the
//! embedded web client — all on one axum router built from one route table
//! ([`routes`]); every way into a room goes through [`crate::admission`]. `serve` runs it until the shutdown future resolves, then ends every session
//! (clients get `bye`), closes peers and joins the room threads.

pub mod access;
pub mod calls;
pub mod dashboard;
pub mod guard;
pub mod live;
pub mod moderation;
pub mod prometheus;
pub mod protocol;
pub mod recordings;
pub mod routes;
pub mod tls;
pub mod whep;
pub mod whip;
pub mod ws;

use crate::config::Config;
use crate::room::Rooms;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A live output with no RTMP push stops after this long without an HLS request.
const HLS_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything request handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub rooms: Arc<Rooms>,
    /// WHIP and WHEP sessions by their id (the last part of their `Location`).
    pub sessions: Mutex<HashMap<String, whip::Session>>,
    /// Flips to `true` once shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// Request rates per source (joins, other API calls).
    pub rates: Mutex<Rates>,
    /// Tokens, admin key and allowed origins.
    pub access: crate::auth::Access,
    /// Cluster mode: where rooms live (`None`: a single node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The one way into a room (placement, PIN, join) every entrance uses.
    pub admission: crate::admission::Admission,
}

/// The per-source token buckets, one per request class.
pub struct Rates {
    pub join: guard::RateLimiter,
    pub api: guard::RateLimiter,
}

/// Sources tracked per rate class at most (a few MB); see `guard::RateLimiter`.
const MAX_RATE_SOURCES: usize = 100_000;

impl Rates {
    pub fn new(http: &crate::config::HttpConfig) -> Self {
        Self {
            join: guard::RateLimiter::new(http.join_rate, http.join_burst, MAX_RATE_SOURCES),
            api: guard::RateLimiter::new(http.api_rate, http.api_burst, MAX_RATE_SOURCES),
        }
    }
}

/// A compiled-in file, revalidated on every load.
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

/// A `307 Temporary Redirect` to the same path and query on the node that hosts `room`,
/// if that is another live node (API calls and WHIP session requests that reach the wrong
/// node).
pub async fn redirect_to_owner(
    state: &AppState,
    room: &crate::ids::RoomId,
    uri: &axum::http::Uri,
) -> Option<Response> {
    let owner = state.cluster.as_ref()?.owner_elsewhere(room).await?;
    Some(temporary_redirect(&owner.public_url, uri))
}

/// `307` to `base` + the request's path and query.
pub fn temporary_redirect(base: &str, uri: &axum::http::Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{}{path}", base.trim_end_matches('/'));
    match HeaderValue::from_str(&location) {
        Ok(v) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, v)],
            format!("this room is hosted at {location}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "bad node URL").into_response(),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DrainRequest {
    /// Seconds running rooms may go on (default `[cluster] drain_deadline_s`).
    deadline_seconds: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DrainStatus {
    draining: bool,
    /// Seconds until the node stops whatever still runs.
    deadline_in_seconds: Option<u64>,
    rooms: usize,
    participants: usize,
}

fn drain_status_now(rooms: &Rooms) -> DrainStatus {
    let left = rooms.drain_deadline().map(|d| {
        d.saturating_duration_since(std::time::Instant::now())
            .as_secs()
    });
    DrainStatus {
        draining: left.is_some(),
        deadline_in_seconds: left,
        rooms: rooms.list().len(),
        participants: rooms.participant_count(),
    }
}

/// `POST /api/admin/drain` (admin): this node starts no new room from now on; its running
/// rooms go on until they empty or the deadline passes, then the process exits (as after
/// SIGTERM in cluster mode). Body (optional): `{"deadlineSeconds": n}`.
async fn drain(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let req: DrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DrainRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("drain request: {e}")).into_response()
            }
        }
    };
    let secs = req
        .deadline_seconds
        .unwrap_or(state.config.cluster.drain_deadline_s);
    if !(1..=crate::config::MAX_DRAIN_DEADLINE_S).contains(&secs) {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "deadlineSeconds must be between 1 and {}",
                crate::config::MAX_DRAIN_DEADLINE_S
            ),
        )
            .into_response();
    }
    state
        .rooms
        .begin_drain(std::time::Duration::from_secs(secs.into()));
    (StatusCode::ACCEPTED, Json(drain_status_now(&state.rooms))).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterStatus {
    /// This node's id (`null`: a single node, not in a cluster).
    node: Option<String>,
    /// Whether the last refresh reached Redis.
    redis_up: bool,
    /// Whether new rooms can be placed now (Redis reachable, and its data older than the
    /// 3 s it takes every node to re-claim its rooms after Redis starts empty).
    placing: bool,
    /// Live nodes as last read from Redis (refreshed every 2 s).
    nodes: Vec<crate::cluster::NodeRecord>,
}

/// `GET /api/cluster` (admin): this node's view of the cluster.
async fn cluster_status(State(state): State<Arc<AppState>>) -> Json<ClusterStatus> {
    Json(match &state.cluster {
        None => ClusterStatus {
            node: None,
            redis_up: false,
            placing: true,
            nodes: Vec::new(),
        },
        Some(c) => ClusterStatus {
            node: Some(c.me().to_string()),
            redis_up: c.redis_up(),
            placing: c.placing(),
            nodes: c.nodes(),
        },
    })
}

async fn drain_status(State(state): State<Arc<AppState>>) -> Json<DrainStatus> {
    Json(drain_status_now(&state.rooms))
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

/// `GET /api/events` (admin): server events as Server-Sent Events — `event:` the type
/// (`roomStarted`, `roomFinished`, `participantJoined`, `participantLeft`,
/// `recordingFinished`), `id:` its sequence number, `data:` the JSON. A subscriber too slow
/// to keep up gets a `lagged` event with the number it missed. Ends at shutdown.
async fn events(State(state): State<Arc<AppState>>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let rx = state.rooms.events.subscribe();
    let stop = state.shutdown.clone();
    let stream = futures_util::stream::unfold((rx, stop), |(mut rx, mut stop)| async move {
        if *stop.borrow() {
            return None;
        }
        let ev = tokio::select! {
            r = rx.recv() => match r {
                Ok(e) => {
                    let name = serde_json::to_value(&e.event)
                        .ok()
                        .and_then(|v| v["type"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    Event::default()
                        .id(e.seq.to_string())
                        .event(name)
                        .json_data(&e)
                        .unwrap_or_default()
                }
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            },
            _ = stop.changed() => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(ev), (rx, stop)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

/// Prometheus scrape (admin): encoded off the runtime (it walks every room).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let (rooms, cluster) = (state.rooms.clone(), state.cluster.clone());
    let encode = move || {
        prometheus::Snapshot::take(&rooms)
            .with_cluster(cluster.as_deref())
            .encode()
    };
    match tokio::task::spawn_blocking(encode).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn list_rooms(State(state): State<Arc<AppState>>) -> Response {
    let mut out: Vec<serde_json::Value> = state
        .rooms
        .list()
        .iter()
        .filter_map(|r| serde_json::to_value(r.summary()).ok())
        .collect();
    if let Some(c) = &state.cluster {
        out = c.whole_list(crate::cluster::List::Rooms, out).await;
    }
    out.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
    Json(out).into_response()
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
    permit: Option<axum::Extension<Arc<guard::ConnPermit>>>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(protocol::MAX_WS_MESSAGE_BYTES)
        .max_frame_size(protocol::MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            // The upgraded socket keeps its connection slot until the session ends.
            let _permit = permit;
            ws::run(socket, state).await
        })
}

/// Counts a request against its source's bucket for `class`: over the rate is `429`
/// with `Retry-After`.
fn check_rate(
    state: &AppState,
    req: &axum::extract::Request,
    class: routes::RateClass,
) -> Result<(), Response> {
    let Some(ip) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return Ok(());
    };
    let verdict = {
        let mut rates = state.rates.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = match class {
            routes::RateClass::Join => &mut rates.join,
            routes::RateClass::Api => &mut rates.api,
        };
        bucket.check(ip.into(), std::time::Instant::now())
    };
    let Err(wait) = verdict else { return Ok(()) };
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    tracing::debug!(%ip, ?class, "rate limited");
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many requests from {ip}; retry in {secs} s"),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Err(resp)
}

pub use routes::router;

/// Serves until `shutdown` resolves, then shuts everything down in order.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    rooms: Arc<Rooms>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_node(listener, config, rooms, None, shutdown).await
}

/// [`serve`] as a node of a cluster (`cluster`: `Some`).
pub async fn serve_node(
    listener: TcpListener,
    config: Config,
    rooms: Arc<Rooms>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = tls::server_config(&config).map_err(std::io::Error::other)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        rooms: rooms.clone(),
        sessions: Mutex::new(HashMap::new()),
        shutdown: stop_rx,
        rates: Mutex::new(Rates::new(&config.http)),
        access: config.access(),
        admission: crate::admission::Admission {
            rooms: rooms.clone(),
            cluster: cluster.clone(),
            tokens: config.api_secret.is_some(),
        },
        config: Arc::new(config),
        cluster,
    });
    let app = router(state.clone());
    crate::webhooks::spawn(
        &state.config.webhooks,
        state.config.live.ca_file.clone(),
        &rooms.events,
        rooms.webhook_stats.clone(),
        state.shutdown.clone(),
    );
    // Housekeeping: hand memory freed by ended sessions back to the OS, at most every 5 s.
    let mut stop_housekeeping = state.shutdown.clone();
    let housekeeping_rooms = rooms.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let _ = tokio::task::spawn_blocking(crate::room::trim_if_freed).await;
                    // Live outputs nobody uses any more (no HLS request for a while, no
                    // RTMP push) stop.
                    let rooms = housekeeping_rooms.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for r in rooms.list() {
                            r.stop_live_if_unused(HLS_IDLE);
                        }
                    })
                    .await;
                }
                _ = stop_housekeeping.changed() => break,
            }
        }
    });
    let server = tokio::spawn(accept_loop(
        listener,
        app,
        state.config.http.clone(),
        tls,
        state.shutdown.clone(),
    ));
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

/// Accepts connections until shutdown: each is admitted by the [`guard::ConnectionGate`]
/// (over a cap: a `503` written without waiting, then closed), served by hyper's HTTP/1.1
/// with a header/idle timeout, and on shutdown asked to finish its current request.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    http: crate::config::HttpConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::TokioTimer;
    let gate = guard::ConnectionGate::new(http.max_connections, http.max_connections_per_ip);
    let mut builder = hyper::server::conn::http1::Builder::new();
    let header_timeout = std::time::Duration::from_secs(http.header_timeout_s.into());
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept:
                // back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match gate.admit(peer.ip()) {
            Ok(p) => Arc::new(p),
            Err(refusal) => {
                tracing::debug!(%peer, %refusal, "connection refused");
                if tls.is_some() {
                    drop(stream); // no plain-text answer inside a TLS port
                } else {
                    refuse(stream, refusal);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, stop, tls) = (app.clone(), builder.clone(), stop.clone(), tls.clone());
        conns.spawn(async move {
            let _permit = permit.clone();
            match tls {
                None => serve_connection(stream, peer, app, permit, &builder, stop).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request head.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(tls_stream, peer, app, permit, &builder, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Serves one connection (plain or TLS) with HTTP/1.1 and upgrades; on shutdown asks it to
/// finish its current request.
async fn serve_connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    app: Router,
    permit: Arc<guard::ConnPermit>,
    builder: &hyper::server::conn::http1::Builder,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        req.extensions_mut().insert(axum::Extension(permit.clone()));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Tells a refused client why, if its socket takes the bytes now, and closes it
/// gracefully: write side first, then a short drain of what the client already sent, so
/// the kernel does not answer its unread request with a reset that destroys the 503.
/// At most `MAX_LINGERING` refused connections linger (1 s, 4 KiB each); beyond that they
/// are closed at once.
fn refuse(stream: tokio::net::TcpStream, refusal: guard::ConnRefusal) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const MAX_LINGERING: usize = 256;
    static LINGERING: AtomicUsize = AtomicUsize::new(0);
    let body = format!("{refusal}\n");
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(msg.as_bytes());
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let mut left = buf.len();
            while left > 0 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}
