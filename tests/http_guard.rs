//! Connection caps, header/idle timeouts and per-source rate limits, against the real
//! server on loopback. Sources are told apart by binding clients to other loopback
//! addresses (127.0.0.2, 127.0.0.3 …), which Linux routes like 127.0.0.1.

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tessera::config::HttpConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{src}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Sends one request on a fresh connection from `src` and returns (status, headers+body).
async fn request_from(src: &str, to: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = connect_from(src, to).await;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("a response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Whether the server has closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_flood_does_not_block_healthz_or_a_join_and_is_timed_out() {
    let server = TestServer::start_with(|c| {
        // The real connection caps; a short header timeout so the test is quick.
        let d = HttpConfig::default();
        c.http.max_connections = d.max_connections;
        c.http.max_connections_per_ip = d.max_connections_per_ip;
        c.http.header_timeout_s = 2;
    })
    .await;
    let addr = server.addr;
    let per_ip = HttpConfig::default().max_connections_per_ip;

    // 127.0.0.2 opens twice its share of connections and sends nothing; 127.0.0.3 opens
    // its share and sends half a request head each.
    let mut idle = Vec::new();
    for _ in 0..2 * per_ip {
        idle.push(connect_from("127.0.0.2", addr).await);
    }
    let mut half = Vec::new();
    for _ in 0..per_ip {
        let mut s = connect_from("127.0.0.3", addr).await;
        s.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        half.push(s);
    }
    // The connections beyond 127.0.0.2's share were refused at once with a 503.
    let mut refused = 0;
    for s in idle.iter_mut().skip(per_ip) {
        let mut buf = vec![0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    assert_eq!(
        refused, per_ip,
        "every connection over the per-IP cap gets a 503"
    );

    // A legitimate client is served meanwhile.
    let t = Instant::now();
    let (status, _) = request_from("127.0.0.1", addr, "GET", "/healthz").await;
    assert_eq!(status, 200);
    let (_ws, joined) = ws_join_only(addr, "flooded", "Ada").await;
    assert_eq!(joined["type"], "joined", "{joined}");
    eprintln!("healthz + join during the flood: {:?}", t.elapsed());

    // The header timeout (2 s) closes both the silent and the half-sent connections.
    for s in idle.iter_mut().take(per_ip).chain(half.iter_mut()) {
        assert!(
            closed_within(s, Duration::from_secs(6)).await,
            "an idle connection outlived the header timeout"
        );
    }
    // Their slots are free again: 127.0.0.2 is served.
    let (status, _) = request_from("127.0.0.2", addr, "GET", "/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(|c| c.http.header_timeout_s = 1).await;
    let mut s = connect_from("127.0.0.1", server.addr).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The connection stays open for a next request, then idles out.
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn total_connection_cap_refuses_and_recovers() {
    let server = TestServer::start_with(|c| {
        c.http.max_connections = 20;
        c.http.max_connections_per_ip = 20;
        c.http.header_timeout_s = 2;
    })
    .await;
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from("127.0.0.4", addr).await);
    }
    // The server has seen them all once this one is refused.
    let (status, text) = request_from("127.0.0.1", addr, "GET", "/healthz").await;
    let mut tries = 0;
    let (mut status, mut text) = (status, text);
    while status != 503 && tries < 20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        (status, text) = request_from("127.0.0.1", addr, "GET", "/healthz").await;
        tries += 1;
    }
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("Retry-After: 5"), "{text}");
    assert!(text.contains("connection limit"), "{text}");
    // The header timeout frees the slots.
    wait_until_async("healthz served again", 10, || async {
        request_from("127.0.0.1", addr, "GET", "/healthz").await.0 == 200
    })
    .await;
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_and_api_calls_are_rate_limited_per_source_healthz_is_not() {
    let server = TestServer::start_with(|c| {
        c.http.join_rate = 0.2;
        c.http.join_burst = 3;
        c.http.api_rate = 0.2;
        c.http.api_burst = 5;
    })
    .await;
    let addr = server.addr;
    // Joins: WebSocket upgrades and WHIP offers share one bucket (a bare GET /ws is
    // refused by the upgrade check but still counted, as it comes before it).
    for _ in 0..2 {
        let (s, _) = request_from("127.0.0.5", addr, "GET", "/ws").await;
        assert_ne!(s, 429);
    }
    let (s, _) = request_from("127.0.0.5", addr, "POST", "/whip/r1").await;
    assert_eq!(s, 415, "counted, then refused for its content type");
    let (s, text) = request_from("127.0.0.5", addr, "POST", "/whip/r1").await;
    assert_eq!(s, 429, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("access-control-allow-origin: *"),
        "a refused WHIP request still carries CORS headers: {text}"
    );
    let retry: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or(l.strip_prefix("Retry-After: "))
        })
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    let (s, _) = request_from("127.0.0.5", addr, "GET", "/ws").await;
    assert_eq!(s, 429);
    // The API has its own bucket; /healthz none.
    for _ in 0..5 {
        assert_eq!(
            request_from("127.0.0.5", addr, "GET", "/api/rooms").await.0,
            200
        );
    }
    assert_eq!(
        request_from("127.0.0.5", addr, "GET", "/api/rooms").await.0,
        429
    );
    for _ in 0..50 {
        assert_eq!(
            request_from("127.0.0.5", addr, "GET", "/healthz").await.0,
            200
        );
    }
    // Another source is unaffected and can join.
    let mut s6 = connect_from("127.0.0.6", addr).await;
    s6.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s6.read_to_end(&mut raw).await.unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    let (_ws, joined) = ws_join_only(addr, "limited", "Bea").await;
    assert_eq!(joined["type"], "joined");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_body_gets_408_within_the_request_timeout() {
    let server = TestServer::start_with(|c| c.http.request_timeout_s = 1).await;
    let mut s = connect_from("127.0.0.1", server.addr).await;
    s.write_all(
        b"POST /whip/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    eprintln!("408 after {:?}", t.elapsed());
    server.stop().await;
}

async fn wait_until_async<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}
