//! Webhooks: every server event (rooms started and finished, participants joined and left,
//! recordings finished, RTMP streams started/failed/stopped, presentations started and
//! stopped) POSTed as JSON to each `[[webhooks]]` receiver — the same body as on
//! `/api/events` (`seq`, `at_ms`, `type`, …). Each body is signed: `X-Tessera-Signature:
//! sha256=<hex HMAC-SHA256 of the body under the receiver's secret>`; `X-Tessera-Event`
//! names the type, `X-Tessera-Delivery` the sequence number (a receiver can drop a
//! retried duplicate by it).
//!
//! One task per receiver delivers in order (so per room in order), one event at a time,
//! retrying a failure (no answer, not 2xx) with backoff from [`FIRST_RETRY`] doubling,
//! then giving up on that event (logged, counted) and going on. Events wait in a bounded
//! queue per receiver ([`QUEUE`]); a receiver that stays down loses the oldest, counted.
//! Nothing here can block media or signalling: the event bus never waits.

use crate::config::WebhookConfig;
use crate::room::server_events::{ServerEvents, Stamped};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Events waiting per receiver.
pub const QUEUE: usize = 1024;
/// The wait before the first retry (then 2×, 4×, … up to a minute).
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Delivery counts over all receivers (for `/metrics`).
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub given_up: AtomicU64,
    pub dropped: AtomicU64,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Starts delivering `events` to every receiver until `stop` flips.
pub fn spawn(
    hooks: &[WebhookConfig],
    ca_file: Option<std::path::PathBuf>,
    events: &ServerEvents,
    stats: Arc<WebhookStats>,
    stop: watch::Receiver<bool>,
) {
    if hooks.is_empty() {
        return;
    }
    let mut queues = Vec::new();
    for hook in hooks {
        let (tx, rx) = mpsc::channel::<Arc<(String, Bytes, u64)>>(QUEUE);
        queues.push(tx);
        tokio::spawn(deliver(
            hook.clone(),
            ca_file.clone(),
            rx,
            stats.clone(),
            stop.clone(),
        ));
    }
    let mut rx = events.subscribe();
    let mut stop = stop;
    tokio::spawn(async move {
        loop {
            let e: Stamped = tokio::select! {
                r = rx.recv() => match r {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        stats.dropped.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!("webhooks: {n} events lost (the bus moved on)");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = stop.changed() => return,
            };
            let Ok(body) = serde_json::to_vec(&e) else {
                continue;
            };
            let kind = serde_json::to_value(&e.event)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let item = Arc::new((kind, Bytes::from(body), e.seq));
            for q in &queues {
                if q.try_send(item.clone()).is_err() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
}

async fn deliver(
    hook: WebhookConfig,
    ca_file: Option<std::path::PathBuf>,
    mut rx: mpsc::Receiver<Arc<(String, Bytes, u64)>>,
    stats: Arc<WebhookStats>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(item) = tokio::select! {
        i = rx.recv() => i,
        _ = stop.changed() => None,
    } {
        let (kind, body, seq) = &*item;
        let sig = signature(hook.secret.as_bytes(), body);
        let mut wait = FIRST_RETRY;
        let mut attempt = 0;
        loop {
            match post(&hook.url, kind, *seq, &sig, body.clone(), &ca_file).await {
                Ok(()) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if attempt < hook.retries => {
                    attempt += 1;
                    stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(url = %hook.url, seq, "webhook failed ({e}); retry {attempt} in {wait:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
                Err(e) => {
                    stats.given_up.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %hook.url, seq, event = %kind, "webhook given up after {} attempts: {e}", attempt + 1);
                    break;
                }
            }
        }
    }
}

/// One POST; `Ok` on a 2xx answer.
async fn post(
    url: &str,
    kind: &str,
    seq: u64,
    sig: &str,
    body: Bytes,
    ca_file: &Option<std::path::PathBuf>,
) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map_or(host.clone(), |a| a.as_str().to_owned());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "Tessera-Webhooks")
        .header("x-tessera-event", kind)
        .header("x-tessera-delivery", seq.to_string())
        .header("x-tessera-signature", sig)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let status = if https {
            let tls = crate::signaling::tls::client_connector(ca_file.as_deref())
                .map_err(|e| e.to_string())?;
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(stream, req).await?
        } else {
            send(tcp, req).await?
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
}

async fn send<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Result<hyper::StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read (and bound) the answer so the connection ends cleanly.
    let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
