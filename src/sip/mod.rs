//! The telephony bridge: SIP dial-in (UAS, RFC 3261) over UDP, TCP and TLS (`sips:`), with
//! RTP audio — SRTP keyed by SDES (RFC 4568, [`sdes`]) on calls that offer it over TLS —
//! taken only from the caller ([`source`]).
//!
//! The SIP stack is `rsipstack` (transactions, retransmissions, dialogs); this module
//! decides: a call to `sip:{room}@host` (or a number mapped in `[sip] numbers`) joins that
//! room as an audio participant; OPTIONS is answered; re-INVITE holds and resumes; INFO
//! carries DTMF; BYE ends the call from either side. Each call's media runs in its own task
//! ([`call`]), which talks to the room like any other participant.
//!
//! In a cluster, a call to a room another node hosts is answered `302 Moved Temporarily`
//! with that node's Contact (RFC 3261 §21.3.3); Redis unreachable for a new room → 503.
//!
//! Refusals: unknown or invalid room → 404, locked room (or, with access control on, a room
//! without a PIN: phones carry no token) → 403, full room or server → 486,
//! no common codec or no SDP offer → 488, too many calls from one source → 503.

pub mod call;
pub mod dialout;
pub mod digest;
pub mod dtmf;
pub mod keypad;
pub mod rtcp;
pub mod sdes;
pub mod sdp;
pub mod source;

use crate::config::Config;
use crate::ids::RoomId;
use crate::room::Rooms;
use rsipstack::dialog::dialog::Dialog;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::DialogId;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{TcpListenerConnection, TransportLayer};
use rsipstack::EndpointBuilder;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE";

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("SIP listen {0}: {1}")]
    Bind(SocketAddr, String),
}

/// The running SIP listener.
pub struct SipServer {
    /// Where it listens (UDP and TCP share the port).
    pub addr: SocketAddr,
    /// Where SIP over TLS listens, when on.
    pub tls_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    bridge: Arc<Bridge>,
}

/// How long shutdown waits for calls to send their BYE.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

impl SipServer {
    /// The address calls are answered from (our Contact): where other nodes send phones.
    pub fn contact(&self) -> SocketAddr {
        self.bridge.local
    }

    /// Joins the bridge to a cluster (once, after the cluster has started).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.bridge.cluster.set(cluster);
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Ends every call with a BYE (new calls are refused from now on), waits up to 3 s for
    /// them to finish, then stops the listener.
    pub async fn shutdown(&self) {
        self.bridge.closing.cancel();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.bridge.calls.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.cancel.cancel();
    }
}

impl Drop for SipServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What every call's task shares.
pub struct Bridge {
    pub config: Arc<Config>,
    pub rooms: Arc<Rooms>,
    pub dialogs: Arc<DialogLayer>,
    /// The address in our Contact and SDP.
    pub local: SocketAddr,
    /// Our TLS address (the Contact of calls that came over TLS).
    pub tls_local: Option<SocketAddr>,
    rates: Mutex<crate::signaling::guard::RateLimiter>,
    /// Cancelled when the server shuts down: calls end with a BYE, new ones are refused.
    pub closing: CancellationToken,
    /// Calls running now.
    pub calls: std::sync::atomic::AtomicUsize,
    /// Cluster mode: calls to rooms hosted elsewhere get `302` to that node.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Binds `addr` (UDP, then TCP on the same port) and serves calls until stopped.
pub async fn start(
    addr: SocketAddr,
    config: Arc<Config>,
    rooms: Arc<Rooms>,
) -> Result<SipServer, SipError> {
    let cancel = CancellationToken::new();
    let transport = TransportLayer::new(cancel.clone());
    let bind_err = |e: rsipstack::Error| SipError::Bind(addr, e.to_string());
    let udp = UdpConnection::create_connection(addr, None, Some(cancel.child_token()))
        .await
        .map_err(bind_err)?;
    let bound = udp.get_addr().get_socketaddr().map_err(bind_err)?;
    transport.add_transport(udp.into());
    let tcp = TcpListenerConnection::new(bound, None)
        .await
        .map_err(|e| SipError::Bind(bound, e.to_string()))?;
    transport.add_transport(tcp.into());
    let tls_bound = match config.sip_tls_listen {
        Some(mut tls_addr) => {
            let tls_err = |e: String| SipError::Bind(tls_addr, e);
            // rsipstack binds the TLS listener only once the endpoint serves, so a port 0
            // (tests) is resolved here: a free port, taken and released at once.
            if tls_addr.port() == 0 {
                tls_addr = std::net::TcpListener::bind(tls_addr)
                    .and_then(|l| l.local_addr())
                    .map_err(|e| tls_err(e.to_string()))?;
            }
            let tls_err = |e: String| SipError::Bind(tls_addr, e);
            let (cert, key) = crate::signaling::tls::pem_pair(&config)
                .map_err(|e| tls_err(e.to_string()))?
                .ok_or_else(|| tls_err("no certificate configured".into()))?;
            let tls_config = rsipstack::transport::tls::TlsConfig {
                cert: Some(cert),
                key: Some(key),
                ..Default::default()
            };
            let tls =
                rsipstack::transport::tls::TlsListenerConnection::new(tls_addr, None, tls_config)
                    .await
                    .map_err(|e| tls_err(e.to_string()))?;
            transport.add_transport(tls.into());
            Some(tls_addr)
        }
        None => None,
    };
    let endpoint = EndpointBuilder::new()
        .with_cancel_token(cancel.clone())
        .with_transport_layer(transport)
        .with_user_agent("Tessera")
        .build();
    let incoming = endpoint
        .incoming_transactions()
        .map_err(|e| SipError::Bind(bound, e.to_string()))?;
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
    let local = if bound.ip().is_unspecified() {
        SocketAddr::new(config.public_ip.unwrap_or(config.media_ip), bound.port())
    } else {
        bound
    };
    let bridge = Arc::new(Bridge {
        rates: Mutex::new(crate::signaling::guard::RateLimiter::new(
            config.sip.invite_rate,
            config.sip.invite_burst,
            10_000,
        )),
        config,
        rooms,
        dialogs,
        local,
        tls_local: tls_bound.map(|a| {
            if a.ip().is_unspecified() {
                SocketAddr::new(local.ip(), a.port())
            } else {
                a
            }
        }),
        closing: CancellationToken::new(),
        calls: Default::default(),
        cluster: Default::default(),
    });
    let _ = bridge
        .rooms
        .dialer
        .set(Arc::new(dialout::Dialer::new(Arc::downgrade(&bridge))));
    tokio::spawn(async move { endpoint.serve().await });
    tokio::spawn(accept_loop(bridge.clone(), incoming, cancel.clone()));
    Ok(SipServer {
        addr: bound,
        tls_addr: tls_bound,
        cancel,
        bridge,
    })
}

async fn accept_loop(
    bridge: Arc<Bridge>,
    mut incoming: rsipstack::transaction::TransactionReceiver,
    cancel: CancellationToken,
) {
    loop {
        let tx = tokio::select! {
            _ = cancel.cancelled() => return,
            tx = incoming.recv() => match tx { Some(tx) => tx, None => return },
        };
        let bridge = bridge.clone();
        tokio::spawn(async move { route(bridge, tx).await });
    }
}

/// One new server transaction: a new call, a request inside a call, or out of any call.
async fn route(bridge: Arc<Bridge>, mut tx: Transaction) {
    let in_dialog = DialogId::try_from(&tx)
        .ok()
        .filter(|id| !id.local_tag.is_empty());
    if let Some(id) = in_dialog {
        match bridge.dialogs.get_dialog(&id) {
            Some(Dialog::Invite(mut d)) => {
                if let Err(e) = d.handle(&mut tx).await {
                    tracing::debug!(%id, "in-dialog {}: {e}", tx.original.method);
                }
            }
            _ if tx.original.method == Method::Ack => {}
            _ => {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
        }
        return;
    }
    match tx.original.method {
        Method::Invite => call::incoming(bridge, tx).await,
        Method::Options => {
            let headers = vec![
                Header::Allow(ALLOW.into()),
                Header::Accept("application/sdp".into()),
            ];
            let _ = tx.reply_with(StatusCode::OK, headers, None).await;
        }
        Method::Ack => {}
        // A CANCEL whose INVITE is gone (the stack answers those it still holds).
        Method::Cancel | Method::Bye | Method::Info => {
            let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
        }
        _ => {
            let _ = tx
                .reply_with(
                    StatusCode::MethodNotAllowed,
                    vec![Header::Allow(ALLOW.into())],
                    None,
                )
                .await;
        }
    }
}

impl Bridge {
    /// The one admission path, as the bridge's calls use it.
    pub fn admission(&self) -> crate::admission::Admission {
        crate::admission::Admission {
            rooms: self.rooms.clone(),
            cluster: self.cluster.get().cloned(),
            tokens: self.config.api_secret.is_some(),
        }
    }

    /// Takes one call from `ip`'s budget, or says it is over it.
    fn admit(&self, ip: IpAddr) -> bool {
        if self.closing.is_cancelled() {
            return false;
        }
        self.rates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(ip.into(), std::time::Instant::now())
            .is_ok()
    }

    /// The room a Request-URI user part names: a mapped number, else the name itself.
    pub fn room_for(&self, user: &str) -> Option<RoomId> {
        let name = self
            .config
            .sip
            .numbers
            .get(user)
            .map_or(user, |r| r.as_str());
        RoomId::parse(name).ok()
    }
}

/// The address a SIP message came from, from its top Via as the transport saw it: the
/// `received` parameter (RFC 3261 §18.2.1), else the Via's host.
pub fn via_source(via: &str) -> Option<IpAddr> {
    via.split(';')
        .find_map(|p| p.trim().strip_prefix("received="))
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            let host = via.split_whitespace().nth(1)?.split(';').next()?;
            host.parse::<SocketAddr>()
                .map(|a| a.ip())
                .ok()
                .or_else(|| host.parse().ok())
        })
}

/// The caller's name for the roster: its display name, else "Caller {user}" (bounded,
/// printable).
pub fn caller_name(display: Option<&str>, user: Option<&str>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .take(40)
            .collect::<String>()
            .trim()
            .to_owned()
    };
    if let Some(d) = display.map(clean).filter(|d| !d.is_empty()) {
        return d;
    }
    match user.map(clean).filter(|u| !u.is_empty()) {
        Some(u) => format!("Caller {u}"),
        None => "Caller".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_sources() {
        let v = |s: &str| via_source(s).map(|ip| ip.to_string());
        assert_eq!(
            v("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;received=203.0.113.7;rport=1"),
            Some("203.0.113.7".into())
        );
        assert_eq!(
            v("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx"),
            Some("10.0.0.5".into())
        );
        assert_eq!(
            v("SIP/2.0/TLS 10.0.0.6;branch=z9hG4bKx"),
            Some("10.0.0.6".into())
        );
        assert_eq!(v("SIP/2.0/UDP pbx.example.com;branch=z"), None);
        assert_eq!(v("garbage"), None);
    }

    #[test]
    fn caller_names() {
        assert_eq!(caller_name(Some("Alice"), Some("1001")), "Alice");
        assert_eq!(caller_name(Some(" "), Some("1234")), "Caller 1234");
        assert_eq!(caller_name(None, None), "Caller");
        assert_eq!(caller_name(Some("a\u{7}b"), None), "ab");
        assert_eq!(caller_name(Some(&"x".repeat(500)), None).len(), 40);
    }
}
