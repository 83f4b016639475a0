//! RTMP pushes: a room's live output sent to platforms (`rtmp[s]://host[:port]/app/key`).
//! Each stream is a tokio task that connects, handshakes, connects to the app and
//! publishes the key (`rml_rtmp`'s client session, sans-I/O), then writes the FLV tags the
//! live thread hands it. When the far end drops or refuses, it reconnects with backoff
//! (0.5 s doubling to [`MAX_BACKOFF`]) until the stream is deleted; each (re)publish
//! starts with the sequence headers at the next IDR. Events say `started`, `failed`
//! (with why, and whether it retries) and `stopped`. The stream key is a secret: the URL
//! is only ever shown with its key replaced by `***` ([`Target::redacted`]).

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Streams per room.
pub const MAX_STREAMS: usize = 5;
/// Tags queued per stream (~4 s); beyond that the stream drops until the next IDR.
const QUEUE: usize = 400;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtmpError {
    #[error("the URL must be rtmp://host[:port]/app/key")]
    BadUrl,
    #[error("the room has its most streams ({MAX_STREAMS})")]
    TooMany,
    #[error("no such stream")]
    NoSuchStream,
    #[error("no TLS client for rtmps://")]
    NoTls,
}

/// Where a stream goes.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// `rtmps://`: RTMP over TLS (the server's certificate is verified).
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub app: String,
    key: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Target {
    /// `rtmp[s]://host[:port]/app[/more]/key`: the last path segment (with any query) is
    /// the stream key, the rest the app. Ports default to 1935 (RTMP) and 443 (RTMPS).
    pub fn parse(url: &str) -> Result<Self, RtmpError> {
        let url = url.trim();
        if url.len() > 2048 || url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(RtmpError::BadUrl);
        }
        let lower = url.get(..8).unwrap_or("").to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("rtmps://") {
            (true, &url[8..])
        } else if lower.starts_with("rtmp://") {
            (false, &url[7..])
        } else {
            return Err(RtmpError::BadUrl);
        };
        let (authority, path) = rest.split_once('/').ok_or(RtmpError::BadUrl)?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
                (h, p.parse().map_err(|_| RtmpError::BadUrl)?)
            }
            _ => (authority, if tls { 443 } else { 1935 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (app, key) = path.rsplit_once('/').ok_or(RtmpError::BadUrl)?;
        if host.is_empty() || app.is_empty() || key.is_empty() || port == 0 {
            return Err(RtmpError::BadUrl);
        }
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The URL with its stream key hidden: what logs, events and the API show.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        format!("{scheme}://{}:{}/{}/***", self.host, self.port, self.app)
    }
}

/// A stream's state as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Connecting,
    Live,
    /// The far end dropped or refused; trying again.
    Reconnecting,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    pub id: u64,
    /// The URL with the stream key hidden.
    pub url: String,
    pub state: StreamState,
    /// Times it (re)published.
    pub publishes: u64,
    pub bytes_sent: u64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// What a stream tells the room.
#[derive(Clone, Debug)]
pub enum StreamEvent {
    Started { id: u64, url: String },
    Failed { id: u64, url: String, error: String },
    Stopped { id: u64, url: String },
}

/// A tag for the connection task.
enum Tag {
    Video { ms: u32, data: Bytes },
    Audio { ms: u32, data: Bytes },
}

struct Stream {
    id: u64,
    target: Target,
    /// The TLS client for `rtmps://`.
    tls: Option<tokio_rustls::TlsConnector>,
    tx: mpsc::Sender<Tag>,
    /// False until the live thread sent this publish its sequence headers at an IDR.
    synced: AtomicBool,
    /// The media time (ms) of this publish's first tag.
    base_ms: AtomicU64,
    state: Mutex<StreamInfo>,
    cancel: CancellationToken,
}

impl Stream {
    fn info(&self) -> StreamInfo {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, f: impl FnOnce(&mut StreamInfo)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }
    fn send(&self, tag: Tag) {
        if self.tx.try_send(tag).is_err() {
            // Behind (a slow far end): resume at the next IDR with fresh headers.
            self.synced.store(false, Ordering::Release);
        }
    }
}

/// A room's RTMP streams.
pub struct Streams {
    list: Mutex<Vec<Arc<Stream>>>,
    next_id: AtomicU64,
    /// The AAC sequence header, once the encoder runs.
    audio_header: Mutex<Option<Bytes>>,
    events: Box<dyn Fn(StreamEvent) + Send + Sync>,
}

impl Streams {
    pub fn new(events: impl Fn(StreamEvent) + Send + Sync + 'static) -> Self {
        Self {
            list: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            audio_header: Mutex::new(None),
            events: Box::new(events),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Stream>>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    pub fn list(&self) -> Vec<StreamInfo> {
        self.lock().iter().map(|s| s.info()).collect()
    }

    pub fn get(&self, id: u64) -> Option<StreamInfo> {
        self.lock().iter().find(|s| s.id == id).map(|s| s.info())
    }

    /// Starts pushing to `url` (needs a tokio runtime); `tls` verifies an `rtmps://` server.
    pub fn add(
        self: &Arc<Self>,
        url: &str,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Result<StreamInfo, RtmpError> {
        let target = Target::parse(url)?;
        if target.tls && tls.is_none() {
            return Err(RtmpError::NoTls);
        }
        let mut list = self.lock();
        if list.len() >= MAX_STREAMS {
            return Err(RtmpError::TooMany);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let s = Arc::new(Stream {
            id,
            state: Mutex::new(StreamInfo {
                id,
                url: target.redacted(),
                state: StreamState::Connecting,
                publishes: 0,
                bytes_sent: 0,
                last_error: None,
            }),
            target,
            tls,
            tx,
            synced: AtomicBool::new(false),
            base_ms: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        });
        list.push(s.clone());
        drop(list);
        tracing::info!(stream = id, url = %s.target.redacted(), "RTMP stream added");
        tokio::spawn(run(s.clone(), rx, self.clone()));
        Ok(s.info())
    }

    /// Stops a stream (its task closes the connection and says `stopped`).
    pub fn remove(&self, id: u64) -> Result<StreamInfo, RtmpError> {
        let mut list = self.lock();
        let i = list
            .iter()
            .position(|s| s.id == id)
            .ok_or(RtmpError::NoSuchStream)?;
        let s = list.remove(i);
        s.cancel.cancel();
        s.set(|i| i.state = StreamState::Stopped);
        Ok(s.info())
    }

    /// Stops every stream (the room ends).
    pub fn stop_all(&self) {
        for s in self.lock().drain(..) {
            s.cancel.cancel();
        }
    }

    /// A video tag at media time `ms`; a stream not yet synced starts at an IDR with the
    /// sequence headers.
    pub fn video(&self, ms: u64, tag: Bytes, idr: bool, avc: Option<&Bytes>) {
        let audio = self
            .audio_header
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in self.lock().iter() {
            if !s.synced.load(Ordering::Acquire) {
                let (true, Some(avc)) = (idr, avc) else {
                    continue;
                };
                s.base_ms.store(ms, Ordering::Relaxed);
                s.send(Tag::Video {
                    ms: 0,
                    data: Bytes::from(super::flv::video_sequence_header(avc)),
                });
                if let Some(a) = &audio {
                    s.send(Tag::Audio {
                        ms: 0,
                        data: a.clone(),
                    });
                }
                s.synced.store(true, Ordering::Release);
            }
            let t = ms.saturating_sub(s.base_ms.load(Ordering::Relaxed)) as u32;
            s.send(Tag::Video {
                ms: t,
                data: tag.clone(),
            });
        }
    }

    /// An audio tag at media time `ms` (`header`: the AAC sequence header).
    pub fn audio(&self, ms: u64, tag: Bytes, header: Bytes) {
        {
            let mut h = self.audio_header.lock().unwrap_or_else(|e| e.into_inner());
            if h.as_ref() != Some(&header) {
                *h = Some(header);
            }
        }
        for s in self.lock().iter() {
            if s.synced.load(Ordering::Acquire) {
                let t = ms.saturating_sub(s.base_ms.load(Ordering::Relaxed)) as u32;
                s.send(Tag::Audio {
                    ms: t,
                    data: tag.clone(),
                });
            }
        }
    }
}

/// The connection task: publish, forward, reconnect with backoff until cancelled.
async fn run(s: Arc<Stream>, mut rx: mpsc::Receiver<Tag>, streams: Arc<Streams>) {
    let url = s.target.redacted();
    let mut backoff = Duration::from_millis(500);
    loop {
        let r = tokio::select! {
            r = publish(&s, &mut rx, &streams) => r,
            _ = s.cancel.cancelled() => break,
        };
        let error = match r {
            Ok(()) => "the server closed the connection".to_owned(),
            Err(e) => e,
        };
        if s.cancel.is_cancelled() {
            break;
        }
        tracing::warn!(stream = s.id, %url, "RTMP push failed: {error}; retrying in {backoff:?}");
        s.set(|i| {
            i.state = StreamState::Reconnecting;
            i.last_error = Some(error.clone());
        });
        (streams.events)(StreamEvent::Failed {
            id: s.id,
            url: url.clone(),
            error,
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = s.cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // A connection that lived a while starts the backoff afresh.
        if s.info().state == StreamState::Live {
            backoff = Duration::from_millis(500);
        }
    }
    s.set(|i| i.state = StreamState::Stopped);
    tracing::info!(stream = s.id, %url, "RTMP stream stopped");
    (streams.events)(StreamEvent::Stopped { id: s.id, url });
}

/// One connection: handshake, connect, publish, then forward tags until it fails.
async fn publish(
    s: &Arc<Stream>,
    rx: &mut mpsc::Receiver<Tag>,
    streams: &Streams,
) -> Result<(), String> {
    let t = &s.target;
    let addr = format!("{}:{}", t.host, t.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| format!("no connection to {} within {CONNECT_TIMEOUT:?}", t.host))?
        .map_err(|e| format!("connecting to {}: {e}", t.host))?;
    let _ = tcp.set_nodelay(true);
    match &s.tls {
        Some(tls) if t.tls => {
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("{}: {e}", t.host))?;
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
                .await
                .map_err(|_| "the TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS: {e}"))?;
            session(s, rx, streams, stream).await
        }
        _ => session(s, rx, streams, tcp).await,
    }
}

/// The RTMP session over a connected (plain or TLS) stream.
async fn session<S>(
    s: &Arc<Stream>,
    rx: &mut mpsc::Receiver<Tag>,
    streams: &Streams,
    mut sock: S,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let t = &s.target;
    let mut buf = vec![0u8; 16 * 1024];
    // Handshake.
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| format!("{e:?}"))?;
    write_out(&mut sock, &p0p1)
        .await
        .map_err(|e| e.to_string())?;
    let leftover = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during the handshake".to_owned());
            }
            match hs
                .process_bytes(&buf[..n])
                .map_err(|e| format!("handshake: {e:?}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    write_out(&mut sock, &response_bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    write_out(&mut sock, &response_bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(remaining_bytes);
                }
            }
        }
    })
    .await
    .map_err(|_| "handshake timed out".to_owned())??;
    // Connect to the app, then publish the key.
    let mut config = ClientSessionConfig::new();
    let scheme = if t.tls { "rtmps" } else { "rtmp" };
    config.tc_url = Some(format!("{scheme}://{}:{}/{}", t.host, t.port, t.app));
    let (mut session, initial) = ClientSession::new(config).map_err(|e| format!("{e:?}"))?;
    let mut out = Vec::new();
    collect(initial, &mut out, &mut Vec::new());
    let r = session
        .request_connection(t.app.clone())
        .map_err(|e| format!("{e:?}"))?;
    collect(vec![r], &mut out, &mut Vec::new());
    write_out(&mut sock, &out)
        .await
        .map_err(|e| e.to_string())?;
    let mut pending = leftover;
    let mut requested_publish = false;
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            let mut events = Vec::new();
            let mut out = Vec::new();
            if !pending.is_empty() {
                let r = session
                    .handle_input(&pending)
                    .map_err(|e| format!("{e:?}"))?;
                pending.clear();
                collect(r, &mut out, &mut events);
            }
            for e in events {
                match e {
                    ClientSessionEvent::ConnectionRequestAccepted if !requested_publish => {
                        requested_publish = true;
                        let r = session
                            .request_publishing(t.key.clone(), PublishRequestType::Live)
                            .map_err(|e| format!("{e:?}"))?;
                        collect(vec![r], &mut out, &mut Vec::new());
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(format!("the server refused the app: {description}"));
                    }
                    ClientSessionEvent::PublishRequestAccepted => {
                        write_out(&mut sock, &out)
                            .await
                            .map_err(|e| e.to_string())?;
                        return Ok(());
                    }
                    ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                        return Err(format!("the server refused to publish: {code}"));
                    }
                    _ => {}
                }
            }
            write_out(&mut sock, &out)
                .await
                .map_err(|e| e.to_string())?;
            let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection while publishing".to_owned());
            }
            pending.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .map_err(|_| "the server did not accept the publish in time".to_owned())??;
    // Publishing: stale tags go; the live thread starts this publish at the next IDR.
    while rx.try_recv().is_ok() {}
    s.synced.store(false, Ordering::Release);
    s.set(|i| {
        i.state = StreamState::Live;
        i.publishes += 1;
        i.last_error = None;
    });
    tracing::info!(stream = s.id, url = %t.redacted(), "RTMP stream publishing");
    (streams.events)(StreamEvent::Started {
        id: s.id,
        url: t.redacted(),
    });
    loop {
        tokio::select! {
            tag = rx.recv() => {
                let Some(tag) = tag else { return Ok(()) };
                let r = match tag {
                    Tag::Video { ms, data } => session.publish_video_data(data, RtmpTimestamp::new(ms), false),
                    Tag::Audio { ms, data } => session.publish_audio_data(data, RtmpTimestamp::new(ms), false),
                };
                let r = r.map_err(|e| format!("{e:?}"))?;
                let mut out = Vec::new();
                collect(vec![r], &mut out, &mut Vec::new());
                write_out(&mut sock, &out).await.map_err(|e| format!("writing: {e}"))?;
                s.set(|i| i.bytes_sent += out.len() as u64);
            }
            n = sock.read(&mut buf) => {
                let n = n.map_err(|e| format!("reading: {e}"))?;
                if n == 0 {
                    return Err("the server closed the connection".to_owned());
                }
                let r = session.handle_input(&buf[..n]).map_err(|e| format!("{e:?}"))?;
                let mut out = Vec::new();
                collect(r, &mut out, &mut Vec::new());
                if !out.is_empty() {
                    write_out(&mut sock, &out).await.map_err(|e| format!("writing: {e}"))?;
                }
            }
        }
    }
}

/// Writes and flushes (a TLS stream holds written bytes until flushed).
async fn write_out<W>(w: &mut W, bytes: &[u8]) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    w.write_all(bytes).await?;
    w.flush().await
}

fn collect(
    results: Vec<ClientSessionResult>,
    out: &mut Vec<u8>,
    events: &mut Vec<ClientSessionEvent>,
) {
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_app_and_a_key_that_is_never_shown() {
        let t = Target::parse("rtmp://live.example.com/live2/abc-SECRET?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.app.as_str()),
            ("live.example.com", 1935, "live2")
        );
        assert_eq!(t.key, "abc-SECRET?x=1");
        assert_eq!(t.redacted(), "rtmp://live.example.com:1935/live2/***");
        assert!(!format!("{t:?}").contains("SECRET"));
        let t = Target::parse("rtmp://127.0.0.1:19350/a/b/key").unwrap();
        assert_eq!(
            (t.port, t.app.as_str(), t.key.as_str()),
            (19350, "a/b", "key")
        );
        for bad in [
            "http://x/app/key",
            "rtmp://x/key",
            "rtmp:///app/key",
            "rtmp://x:99999/app/key",
            "rtmp://x/app/",
            "rtmp://x/app/ke y",
        ] {
            assert_eq!(Target::parse(bad), Err(RtmpError::BadUrl), "{bad}");
        }
        let t = Target::parse("rtmps://live.example.com/app/KEY").unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert_eq!(t.redacted(), "rtmps://live.example.com:443/app/***");
    }
}
