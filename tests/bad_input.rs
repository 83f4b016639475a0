//! Bad input never crashes the server or disturbs other participants: garbage on the
//! WebSocket, malformed WHIP requests and random datagrams at the media ports each get an
//! error (or are dropped) while two real clients keep receiving media.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn ws_exchange(addr: std::net::SocketAddr, msgs: Vec<Message>) -> Vec<serde_json::Value> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let n = msgs.len();
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let mut replies = Vec::new();
    while replies.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                // Room chatter (speaker changes, others joining) is not a reply.
                if matches!(
                    v["type"].as_str(),
                    Some("error" | "joined" | "answer" | "layoutChanged")
                ) {
                    replies.push(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "socket ended early after {} replies: {other:?}",
                replies.len()
            ),
        }
    }
    replies
}

fn codes(replies: &[serde_json::Value]) -> Vec<String> {
    replies
        .iter()
        .map(|r| {
            if r["type"] == "error" {
                r["code"].as_str().unwrap().to_owned()
            } else {
                r["type"].as_str().unwrap().to_owned()
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_gets_errors_and_media_keeps_flowing() {
    let server = TestServer::start().await;
    let a = Client::join_ws(&server, "bad", "Ada", (220, 30, 30), 400.0).await;
    let b = Client::join_ws(&server, "bad", "Bob", (30, 30, 220), 650.0).await;
    wait_until("both clients to receive video and audio", 30, || {
        a.frames() > 30 && b.frames() > 30 && a.audio_packets() > 50 && b.audio_packets() > 50
    })
    .await;
    let start = (a.frames(), b.frames(), a.audio_packets(), b.audio_packets());

    // 1. WebSocket garbage, one error per message, session survives each.
    let r = ws_exchange(
        server.addr,
        vec![
            Message::Text("not json".into()),
            Message::Text("{}".into()),
            Message::Text(r#"{"type":"teleport"}"#.into()),
            Message::Binary(vec![0, 1, 2, 3].into()),
            Message::Text(r#"{"type":"offer","sdp":"v=0"}"#.into()),
            Message::Text(r#"{"type":"join","room":"a/b","name":"x"}"#.into()),
            Message::Text(r#"{"type":"join","room":"bad","name":""}"#.into()),
            Message::Text(
                format!(
                    r#"{{"type":"join","room":"bad","name":"{}"}}"#,
                    "n".repeat(100)
                )
                .into(),
            ),
        ],
    )
    .await;
    assert_eq!(
        codes(&r),
        [
            "bad_message",
            "bad_message",
            "bad_message",
            "bad_message",
            "bad_state",
            "invalid_room",
            "invalid_name",
            "invalid_name"
        ]
    );

    // 2. Joined, then bad SDP, bad layout, bad candidate before an offer.
    let r = ws_exchange(
        server.addr,
        vec![
            Message::Text(r#"{"type":"join","room":"bad","name":"Mallory"}"#.into()),
            Message::Text(r#"{"type":"offer","sdp":"hello"}"#.into()),
            Message::Text(r#"{"type":"offer","sdp":"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"}"#.into()),
            Message::Text(r#"{"type":"setLayout","layout":"hexagon"}"#.into()),
            Message::Text(r#"{"type":"candidate","candidate":"candidate:garbage"}"#.into()),
        ],
    )
    .await;
    let c = codes(&r);
    assert_eq!(c[0], "joined");
    assert_eq!(c[1], "bad_sdp");
    assert!(c[2] == "negotiation_failed" || c[2] == "bad_sdp", "{c:?}");
    assert_eq!(&c[3..], ["unknown_layout", "bad_state"]);
    // A valid layout switch is announced to everyone (applied at the next video tick).
    let r = ws_exchange(
        server.addr,
        vec![
            Message::Text(r#"{"type":"join","room":"bad","name":"Lay"}"#.into()),
            Message::Text(r#"{"type":"setLayout","layout":"speaker"}"#.into()),
        ],
    )
    .await;
    assert_eq!(codes(&r), ["joined", "layoutChanged"]);

    // 3. Malformed WHIP requests.
    let offer = b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
    assert_eq!(
        http(
            server.addr,
            "POST",
            "/whip/bad",
            Some(("text/plain", offer))
        )
        .await
        .status,
        415
    );
    assert_eq!(
        http(
            server.addr,
            "POST",
            "/whip/bad",
            Some(("application/sdp", b"garbage"))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        http(
            server.addr,
            "POST",
            "/whip/bad",
            Some(("application/sdp", &[0xff, 0xfe, 0x00]))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        http(
            server.addr,
            "POST",
            "/whip/bad",
            Some(("application/sdp", offer))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        http(
            server.addr,
            "POST",
            "/whip/a%2Fb",
            Some(("application/sdp", offer))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        http(server.addr, "DELETE", "/whip/bad/nope", None)
            .await
            .status,
        404
    );
    assert_eq!(
        http(
            server.addr,
            "PATCH",
            "/whip/bad/nope",
            Some(("application/trickle-ice-sdpfrag", b"a=x"))
        )
        .await
        .status,
        405
    );

    // 4. Random datagrams (and protocol-looking junk) at every server media port.
    let ports: Vec<u16> = a
        .server_ports()
        .into_iter()
        .chain(b.server_ports())
        .collect();
    assert!(!ports.is_empty(), "no server candidates seen");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x2545_f491u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for i in 0..3000 {
        let len = (rnd() % 1400) as usize + 1;
        let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        match i % 4 {
            0 => d[0] = 0x80, // looks like RTP
            1 => d[0] = 0x00, // looks like STUN
            2 => d[0] = 0x16, // looks like DTLS
            _ => {}
        }
        for p in &ports {
            let _ = sock.send_to(&d, ("127.0.0.1", *p)).await;
        }
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Media kept flowing for both real participants, and the server still answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.frames() > start.0 + 40 && b.frames() > start.1 + 40,
        "video stalled: {start:?} -> {} {}",
        a.frames(),
        b.frames()
    );
    assert!(
        a.audio_packets() > start.2 + 75 && b.audio_packets() > start.3 + 75,
        "audio stalled"
    );
    assert_eq!(http(server.addr, "GET", "/healthz", None).await.status, 200);
    a.close().await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_websocket_message_gets_bad_message_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let big = format!(
        "{{\"type\":\"join\",\"room\":\"r\",\"name\":\"{}\"}}",
        "x".repeat(100 * 1024)
    );
    let replies = ws_exchange(
        server.addr,
        vec![
            Message::Text(big.into()),
            Message::Text(r#"{"type":"join","room":"big","name":"Ada"}"#.into()),
        ],
    )
    .await;
    assert_eq!(codes(&replies), ["bad_message", "joined"], "{replies:?}");
    assert!(
        replies[0]["message"].as_str().unwrap().contains("exceeds"),
        "{replies:?}"
    );
    server.stop().await;
}

/// Ada and Bob watch `room` while Eve — real ICE, DTLS and SRTP — sends `eve_media`.
/// Returns Ada's and Bob's received frame rates over 6 s and the three clients, after
/// checking that Eve herself still receives the room and /healthz answers.
async fn viewers_beside(
    server: &TestServer,
    room: &str,
    eve_media: Media,
) -> ((f64, f64), [Client; 3]) {
    let a = Client::join_ws(server, room, "Ada", (220, 30, 30), 400.0).await;
    let b = Client::join_ws(server, room, "Bob", (30, 30, 220), 650.0).await;
    wait_until("media", 30, || a.frames() > 20 && b.frames() > 20).await;
    let eve = Client::join_ws_at(server.addr, room, "Eve", eve_media).await;
    wait_until("Eve receives the room", 20, || eve.frames() > 10).await;
    let (fa, fb, t0) = (a.frames(), b.frames(), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let secs = t0.elapsed().as_secs_f64();
    let fps = (
        (a.frames() - fa) as f64 / secs,
        (b.frames() - fb) as f64 / secs,
    );
    let before = eve.frames();
    wait_until("Eve keeps receiving", 10, || eve.frames() > before + 30).await;
    assert!(eve.audio_packets() > 0);
    assert_eq!(http(server.addr, "GET", "/healthz", None).await.status, 200);
    (fps, [a, b, eve])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_rtp_inside_an_established_session_hurts_nobody() {
    let server = TestServer::start().await;
    // Only Eve's video payloads are random bytes, in turn on the H.264, AV1, VP8 and VP9
    // payload types.
    let mut media = Media::steady((30, 220, 30), 900.0);
    media.video = Video::Garbage;
    let ((fps_a, fps_b), clients) = viewers_beside(&server, "junk", media).await;
    eprintln!("with random RTP payloads in the room: viewers at {fps_a:.1} / {fps_b:.1} fps");
    assert!(
        fps_a >= 25.0 && fps_b >= 25.0,
        "{fps_a:.1} / {fps_b:.1} fps"
    );
    for c in &clients {
        c.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_rtcp_inside_an_established_session_hurts_nobody() {
    let server = TestServer::start().await;
    // Eve's RTCP (inside valid SRTCP) is random, 50 packets a second.
    let mut media = Media::steady((30, 220, 30), 900.0);
    media.rtcp_garbage = true;
    let ((fps_a, fps_b), clients) = viewers_beside(&server, "rtcp-junk", media).await;
    let sent = RTCP_GARBAGE_SENT.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("with random RTCP in the room ({sent} packets sent): viewers at {fps_a:.1} / {fps_b:.1} fps");
    assert!(sent > 100, "only {sent} malformed RTCP packets went out");
    assert!(
        fps_a >= 25.0 && fps_b >= 25.0,
        "{fps_a:.1} / {fps_b:.1} fps"
    );
    let room = tessera::ids::RoomId::parse("rtcp-junk").unwrap();
    assert_eq!(server.rooms.get(&room).unwrap().participants().len(), 3);
    for c in &clients {
        c.close().await;
    }
    server.stop().await;
}
