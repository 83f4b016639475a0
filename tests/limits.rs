//! Server-wide limits: rooms and participants are capped, refusals are clear
//! (`server_full` over WebSocket, 503 with Retry-After over WHIP), and places free up when
//! people leave.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_are_capped_and_a_refused_room_leaves_nothing_behind() {
    let server = TestServer::start_with(|c| c.max_rooms = 2).await;
    let (_a, r) = ws_join_only(server.addr, "one", "A").await;
    assert_eq!(r["type"], "joined", "{r}");
    let (_b, r) = ws_join_only(server.addr, "two", "B").await;
    assert_eq!(r["type"], "joined", "{r}");
    let (_c, r) = ws_join_only(server.addr, "three", "C").await;
    assert_eq!(r["code"], "server_full", "{r}");
    assert!(r["message"].as_str().unwrap().contains("2 rooms"), "{r}");
    assert_eq!(server.rooms.list().len(), 2);
    assert_eq!(server.rooms.participant_count(), 2);
    // Existing rooms still take people.
    let (_d, r) = ws_join_only(server.addr, "one", "D").await;
    assert_eq!(r["type"], "joined", "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_are_capped_per_room_and_per_server_and_freed_on_leave() {
    let server = TestServer::start_with(|c| {
        c.max_participants_total = 3;
        c.max_participants = 2;
    })
    .await;
    let (a, r) = ws_join_only(server.addr, "x", "A").await;
    assert_eq!(r["type"], "joined", "{r}");
    let (_b, r) = ws_join_only(server.addr, "x", "B").await;
    assert_eq!(r["type"], "joined", "{r}");
    let (_c, r) = ws_join_only(server.addr, "x", "C").await;
    assert_eq!(r["code"], "room_full", "{r}");
    let (_c, r) = ws_join_only(server.addr, "y", "C").await;
    assert_eq!(r["type"], "joined", "{r}");
    // Three in all: full even for a room with space, and no empty room is left behind.
    let (_d, r) = ws_join_only(server.addr, "z", "D").await;
    assert_eq!(r["code"], "server_full", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("3 participants"),
        "{r}"
    );
    let (_d, r) = ws_join_only(server.addr, "y", "D").await;
    assert_eq!(r["code"], "server_full", "{r}");
    assert_eq!(server.rooms.participant_count(), 3);
    assert_eq!(server.rooms.list().len(), 2);

    // Leaving frees the place.
    drop(a);
    wait_until("A's place freed", 10, || {
        server.rooms.participant_count() == 2
    })
    .await;
    let (_d, r) = ws_join_only(server.addr, "y", "D").await;
    assert_eq!(r["type"], "joined", "{r}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whip_is_refused_with_503_and_retry_after_when_the_server_is_full() {
    let server = TestServer::start_with(|c| c.max_rooms = 1).await;
    let (_a, r) = ws_join_only(server.addr, "only", "A").await;
    assert_eq!(r["type"], "joined", "{r}");
    // A syntactically valid offer (the join is refused before negotiation).
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
    let resp = http(
        server.addr,
        "POST",
        "/whip/other?name=W",
        Some(("application/sdp", offer.as_bytes())),
    )
    .await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert!(resp.body.contains("server is full"), "{}", resp.body);
    server.stop().await;
}

/// Joins racing the last leave of the same room: whoever is in a room is in the room that
/// is registered under its name (never in one that is being stopped), and when everyone
/// has left, nothing is counted or running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_racing_the_last_leave_never_land_in_a_stopping_room() {
    let server = TestServer::start().await;
    let rooms = server.rooms.clone();
    let id = tessera::ids::RoomId::parse("churn").unwrap();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (rooms, id) = (rooms.clone(), id.clone());
            std::thread::spawn(move || {
                let mut stray = 0;
                for i in 0..2000 {
                    let (room, info) = rooms.join(&id, &format!("W{w}-{i}")).unwrap();
                    if !rooms
                        .get(&id)
                        .is_some_and(|r| std::sync::Arc::ptr_eq(&r, &room))
                    {
                        stray += 1;
                    }
                    rooms.leave(&room, info.id);
                }
                stray
            })
        })
        .collect();
    let stray: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(
        stray, 0,
        "{stray} joins landed in a room no longer registered"
    );
    assert_eq!(rooms.participant_count(), 0);
    assert!(rooms.list().is_empty());
    server.stop().await;
}
