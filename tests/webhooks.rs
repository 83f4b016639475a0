//! Integration: webhooks. A local receiver gets each server event once, in order, signed
//! with HMAC-SHA256 of the body under its secret; a receiver that is down is retried and
//! then given up on, without touching the room or the other receiver.

mod common;

use common::*;
use hmac::{Hmac, KeyInit, Mac};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-secret-0123456789";

/// One request the receiver got: its headers (lower-case names) and body.
type Got = (Vec<(String, String)>, Vec<u8>);

/// A minimal HTTP/1.1 receiver answering 200 to everything.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Got>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&raw[..end]).to_string();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    if raw.len() < end + 4 + len {
                        continue;
                    }
                    let body = raw[end + 4..end + 4 + len].to_vec();
                    raw.drain(..end + 4 + len);
                    g.lock().unwrap().push((headers, body));
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (addr, got)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_event_arrives_once_in_order_and_signed_and_a_dead_receiver_is_given_up() {
    let (addr, got) = receiver().await;
    // A port nothing listens on: the dead receiver.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let server = TestServer::start_with(|c| {
        c.webhooks = vec![
            tessera::config::WebhookConfig {
                url: format!("http://{addr}/hooks/tessera"),
                secret: SECRET.into(),
                retries: 5,
            },
            tessera::config::WebhookConfig {
                url: format!("http://{dead_addr}/down"),
                secret: SECRET.into(),
                retries: 2,
            },
        ];
    })
    .await;
    let a = Client::join_ws(&server, "hooked", "Ada", (200, 40, 40), 500.0).await;
    let b = Client::join_ws(&server, "hooked", "Bob", (40, 200, 40), 700.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.close().await;
    a.close().await;
    wait_until("roomFinished at the receiver", 20, || {
        got.lock().unwrap().iter().any(|(_, b)| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["type"] == "roomFinished"
        })
    })
    .await;
    let got = got.lock().unwrap().clone();
    let mut seqs = Vec::new();
    let mut kinds = Vec::new();
    for (h, body) in &got {
        // The signature is HMAC-SHA256 of the exact body under the shared secret.
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(header(h, "x-tessera-signature"), format!("sha256={want}"));
        assert_eq!(header(h, "content-type"), "application/json");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(header(h, "x-tessera-event"), v["type"].as_str().unwrap());
        assert_eq!(header(h, "x-tessera-delivery"), v["seq"].to_string());
        seqs.push(v["seq"].as_u64().unwrap());
        kinds.push(v["type"].as_str().unwrap().to_owned());
    }
    eprintln!("received {kinds:?}");
    // Once each, in the order they happened.
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seqs, sorted, "in order, no duplicates");
    assert_eq!(
        kinds,
        [
            "roomStarted",
            "participantJoined",
            "participantJoined",
            "participantLeft",
            "participantLeft",
            "roomFinished"
        ]
    );
    // The dead receiver: each event tried 3 times, then given up; nothing else suffered.
    wait_until("the dead receiver's events to be given up", 30, || {
        server
            .rooms
            .webhook_stats
            .given_up
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    let metrics = http(server.addr, "GET", "/metrics", None).await.body;
    let m = parse_openmetrics(&metrics);
    let get = |name: &str| m.get(&format!("{name}{{}}")).copied().unwrap_or(-1.0);
    let (delivered, retried, given_up) = (
        get("tessera_webhooks_delivered_total"),
        get("tessera_webhooks_retried_total"),
        get("tessera_webhooks_given_up_total"),
    );
    eprintln!("delivered {delivered}, retried {retried}, given up {given_up}");
    assert!(delivered >= 6.0, "the live receiver got every event");
    // Each given-up event was first tried 1 + 2 times.
    assert!(
        given_up >= 1.0 && retried >= 2.0 * given_up,
        "{retried} / {given_up}"
    );
    // A room works while a receiver is down.
    let c = Client::join_ws(&server, "after", "Cy", (40, 40, 200), 900.0).await;
    let d = Client::join_ws(&server, "after", "Di", (200, 200, 40), 1100.0).await;
    wait_until("a call while a receiver is down", 20, || {
        c.frames() > 30 && d.frames() > 30
    })
    .await;
    server.stop().await;
}
