//! Running out of threads refuses that join only: the server keeps working, `/healthz`
//! says 503 while rooms cannot be started, and rooms start again once threads are back.
//! (Own test binary: the failure injection is process-wide.)

mod common;

use common::*;
use std::sync::atomic::Ordering;
use tessera::room::{INJECT_SPAWN_AFTER, INJECT_SPAWN_FAILURES};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_thread_spawn_refuses_one_join_and_the_server_recovers() {
    let server = TestServer::start().await;
    let (_a, r) = ws_join_only(server.addr, "before", "A").await;
    assert_eq!(r["type"], "joined", "{r}");

    // The OS refuses the next thread: healthz reports it.
    INJECT_SPAWN_FAILURES.store(1, Ordering::SeqCst);
    let resp = http(server.addr, "GET", "/healthz", None).await;
    assert_eq!(resp.status, 503, "{}", resp.body);

    // A new room cannot start: that join is refused with `unavailable`, nothing is left.
    INJECT_SPAWN_FAILURES.store(1, Ordering::SeqCst);
    let (_b, r) = ws_join_only(server.addr, "during", "B").await;
    assert_eq!(r["code"], "unavailable", "{r}");
    assert!(server
        .rooms
        .get(&tessera::ids::RoomId::parse("during").unwrap())
        .is_none());
    // The second of a room's two threads failing also leaves nothing behind: the audio
    // thread that did start ends.
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let threads_before = threads();
    INJECT_SPAWN_AFTER.store(1, Ordering::SeqCst);
    INJECT_SPAWN_FAILURES.store(1, Ordering::SeqCst);
    let (_c, r) = ws_join_only(server.addr, "during", "C").await;
    assert_eq!(r["code"], "unavailable", "{r}");
    assert_eq!(
        INJECT_SPAWN_FAILURES.load(Ordering::SeqCst),
        0,
        "the video thread's spawn failed"
    );
    wait_until("the orphan audio thread to end", 10, || {
        threads() <= threads_before
    })
    .await;
    // Existing rooms keep working meanwhile.
    let (_d, r) = ws_join_only(server.addr, "before", "D").await;
    assert_eq!(r["type"], "joined", "{r}");

    // Threads are back: healthz is fine, the API answers, new rooms start.
    let resp = http(server.addr, "GET", "/healthz", None).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = http(server.addr, "GET", "/api/rooms", None).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let (_e, r) = ws_join_only(server.addr, "after", "E").await;
    assert_eq!(r["type"], "joined", "{r}");
    let a = Client::join_ws(&server, "after2", "Ada", (220, 30, 30), 400.0).await;
    let b = Client::join_ws(&server, "after2", "Bob", (30, 30, 220), 650.0).await;
    wait_until("media after recovery", 30, || {
        a.frames() > 10 && b.frames() > 10
    })
    .await;
    server.stop().await;
}
