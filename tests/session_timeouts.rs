//! Sessions that squat or vanish are ended: a `join` with no `offer`, a WHIP session whose
//! media never connects, a WHIP client that is killed (its packets simply stop), and a
//! WebSocket client whose network vanishes while its TCP connection stays open.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_without_an_offer_times_out() {
    let server = TestServer::start_with(|c| c.timeouts.offer_s = 1).await;
    let t0 = Instant::now();
    let (mut ws, r) = ws_join_only(server.addr, "squat", "S").await;
    assert_eq!(r["type"], "joined", "{r}");
    assert_eq!(server.rooms.participant_count(), 1);
    // The next thing the server says is the timeout, then it closes the socket.
    use futures_util::StreamExt;
    let mut timeout = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "error" {
                timeout = Some(v);
            }
        }
    }
    let v = timeout.expect("an error before the socket closed");
    assert_eq!(v["code"], "timeout", "{v}");
    assert!(v["message"].as_str().unwrap().contains("no offer"), "{v}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    wait_until("the squatter removed", 5, || {
        server.rooms.participant_count() == 0
    })
    .await;
    assert!(server.rooms.list().is_empty(), "the empty room is stopped");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_session_that_never_connects_is_ended() {
    let server = TestServer::start_with(|c| c.timeouts.connect_s = 2).await;
    // A real offer, but the client never applies the answer: ICE never completes.
    let received = std::sync::Arc::new(Received::default());
    let (pc, offer, ..) = make_peer(received).await;
    let resp = http(
        server.addr,
        "POST",
        "/whip/halfopen?name=H",
        Some(("application/sdp", offer.as_bytes())),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(server.rooms.participant_count(), 1);
    let t0 = Instant::now();
    wait_until("the half-open session ended", 10, || {
        server.rooms.participant_count() == 0
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "ended too early: {:?}",
        t0.elapsed()
    );
    let _ = pc.close().await;
    server.stop().await;
}

/// Joins one isolated client to `room`, waits for its media, makes it vanish without a
/// word (its runtime dropped: no DTLS close, no DELETE or `leave`), and returns how long
/// the server took to remove it, with the WebSocket's socket when `keep_tcp`.
async fn vanish_and_time_removal(
    server: &TestServer,
    how: Signaling,
    room: &'static str,
    keep_tcp: bool,
) -> (Duration, Option<std::os::fd::OwnedFd>) {
    let addr = server.addr;
    let client = tokio::task::spawn_blocking(move || {
        IsolatedClient::start(addr, how, room, "Gone", (30, 200, 30), 700.0).unwrap()
    })
    .await
    .unwrap();
    // (Alone, its picture is empty and unchanging: a refresh a second.)
    wait_until("the client receives media", 20, || client.frames() >= 3).await;
    assert_eq!(server.rooms.participant_count(), 1);
    let t0 = Instant::now();
    let kept = tokio::task::spawn_blocking(move || client.end(End::Vanish { keep_tcp }))
        .await
        .unwrap();
    wait_until("the vanished client removed", 15, || {
        server.rooms.participant_count() == 0
    })
    .await;
    let gone = t0.elapsed();
    eprintln!("vanished {how:?} client removed after {gone:?}");
    assert!(
        gone < Duration::from_secs(10),
        "removed only after {gone:?}"
    );
    (gone, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_whip_client_is_removed_within_10_s() {
    let server = TestServer::start().await; // default timeouts
    vanish_and_time_removal(&server, Signaling::Whip, "vanish", false).await;
    let room = tessera::ids::RoomId::parse("vanish").unwrap();
    assert!(server.rooms.get(&room).is_none(), "its room stopped");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_client_whose_network_vanishes_is_removed_within_10_s() {
    // Default timeouts. Media stops without a word while the WebSocket's TCP connection
    // stays open (its socket is kept by a second descriptor), as when Wi-Fi drops.
    let server = TestServer::start().await;
    let (gone, kept) = vanish_and_time_removal(&server, Signaling::Ws, "ws-vanish", true).await;
    let removed = Instant::now();
    let kept = kept.expect("the WebSocket's socket is kept open");
    // The server also ends the signaling session rather than keeping the socket forever.
    let std_sock = std::net::TcpStream::from(kept);
    std_sock.set_nonblocking(true).unwrap();
    let mut sock = tokio::net::TcpStream::from_std(std_sock).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server kept the WebSocket open");
    eprintln!(
        "its WebSocket closed by the server {:?} after the removal ({gone:?})",
        removed.elapsed()
    );
    server.stop().await;
}
