//! Access control against the real server: every protected route refuses anonymous
//! callers, tokens are checked (forged, expired, wrong room), other origins cannot drive a
//! user's browser against the server, and a valid token joins with media — its name, its
//! moderator grant and its `publish` grant applied.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tessera::auth::{unix_now, Access, Claims, Grants};
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "test-secret-test-secret-test-secret!";
const ADMIN_KEY: &str = "admin-key-admin-key-admin-key";

async fn secured() -> TestServer {
    TestServer::start_with(|c| {
        c.api_secret = Some(SECRET.into());
        c.admin_key = Some(ADMIN_KEY.into());
    })
    .await
}

fn issue(room: Option<&str>, name: &str, grants: Grants, exp_in: i64) -> String {
    let now = unix_now();
    Access::new(Some(SECRET), None, &[])
        .issue(&Claims {
            sub: name.into(),
            name: Some(name.into()),
            room: room.map(str::to_owned),
            iat: now - 5,
            exp: (now as i64 + exp_in) as u64,
            grants,
        })
        .unwrap()
}

fn join_grant() -> Grants {
    Grants {
        join: true,
        ..Default::default()
    }
}

/// Every route that is not public, with a request that would otherwise be valid.
const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/api/rooms"),
    ("PATCH", "/api/rooms/r"),
    ("DELETE", "/api/rooms/r/participants/1"),
    ("POST", "/api/rooms/r/participants/1/mute"),
    ("POST", "/api/rooms/r/mute-all"),
    ("POST", "/api/rooms/r/recording"),
    ("DELETE", "/api/rooms/r/recording"),
    ("GET", "/api/recordings"),
    ("GET", "/api/recordings/r-20260101T000000Z"),
    ("GET", "/api/events"),
    ("GET", "/metrics"),
    ("GET", "/dashboard"),
    ("POST", "/whip/r"),
    ("DELETE", "/whip/r/0123456789abcdef0123456789abcdef"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_protected_route_refuses_anonymous_and_under_granted_callers() {
    let server = secured().await;
    let a = server.addr;
    let plain = issue(Some("r"), "Pat", join_grant(), 600);
    let other_room = issue(
        Some("other"),
        "Olga",
        Grants {
            moderator: true,
            record: true,
            ..join_grant()
        },
        600,
    );
    for &(method, path) in PROTECTED {
        let anon = http(a, method, path, None).await;
        assert_eq!(anon.status, 401, "anonymous {method} {path}: {}", anon.body);
        assert!(
            anon.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{method} {path}"
        );
        let bad = http_with(
            a,
            method,
            path,
            &[("Authorization", "Bearer not.a.token")],
            None,
        )
        .await;
        assert_eq!(bad.status, 401, "garbage token {method} {path}");
        // A participant's join token and a token for another room are not enough for the
        // control API (the WHIP routes are for `r`, where the join token is valid).
        if !path.starts_with("/whip/") {
            let auth = format!("Bearer {plain}");
            let r = http_with(a, method, path, &[("Authorization", &auth)], None).await;
            assert_eq!(r.status, 403, "join token {method} {path}: {}", r.body);
        }
        let auth = format!("Bearer {other_room}");
        let r = http_with(a, method, path, &[("Authorization", &auth)], None).await;
        assert_eq!(
            r.status, 403,
            "other room's token {method} {path}: {}",
            r.body
        );
    }
    // The admin key passes every check (what follows is the handler's own answer).
    let auth = format!("Bearer {ADMIN_KEY}");
    for &(method, path) in PROTECTED {
        if path == "/api/events" {
            continue; // a stream: checked in its own test
        }
        let r = http_with(a, method, path, &[("Authorization", &auth)], None).await;
        assert!(
            r.status != 401 && r.status != 403,
            "admin key {method} {path}: {} {}",
            r.status,
            r.body
        );
    }
    // Public routes stay public.
    for path in ["/", "/app.js", "/style.css", "/healthz"] {
        assert_eq!(http(a, "GET", path, None).await.status, 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_expired_and_wrong_room_tokens_cannot_join() {
    let server = secured().await;
    let a = server.addr;
    let forged = {
        let now = unix_now();
        Access::new(Some("another-secret-another-secret-another"), None, &[])
            .issue(&Claims {
                sub: "m".into(),
                name: None,
                room: Some("r".into()),
                iat: now,
                exp: now + 600,
                grants: join_grant(),
            })
            .unwrap()
    };
    let cases = [
        ("no token", None),
        ("forged", Some(forged)),
        ("expired", Some(issue(Some("r"), "E", join_grant(), -120))),
        ("wrong room", Some(issue(Some("s"), "W", join_grant(), 600))),
        (
            "no join grant",
            Some(issue(Some("r"), "N", Grants::default(), 600)),
        ),
    ];
    for (what, token) in &cases {
        // WebSocket: `join` answers `unauthorized`, the session goes on.
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{a}/ws"))
            .await
            .unwrap();
        let mut join = serde_json::json!({"type":"join","room":"r","name":"x"});
        if let Some(t) = token {
            join["token"] = t.clone().into();
        }
        ws.send(Message::Text(join.to_string().into()))
            .await
            .unwrap();
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "error", "{what}: {reply}");
        assert_eq!(reply["code"], "unauthorized", "{what}: {reply}");
        // WHIP: 401 or 403, nobody joins.
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|h| ("Authorization", h))
            .into_iter()
            .collect();
        let r = http_with(
            a,
            "POST",
            "/whip/r",
            &headers,
            Some(("application/sdp", b"v=0\r\n")),
        )
        .await;
        assert!(
            r.status == 401 || r.status == 403,
            "{what}: WHIP {}",
            r.status
        );
    }
    assert!(server.rooms.list().is_empty(), "nobody joined");
    server.stop().await;
}

async fn next_json(ws: &mut WsStream) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in 10 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_origins_cannot_post_or_open_websockets() {
    // Open mode (loopback, no secret) is where this matters most: no credential stands in
    // the way, so the Origin is what stops a page on the web from using a local server.
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let a = server.addr;
    let room = "originroom";
    let (_ws, joined) = ws_join_only(a, room, "Owner").await;
    assert_eq!(joined["type"], "joined");
    let evil = [("Origin", "http://evil.example")];
    // The request a hostile page can send without a preflight.
    let r = http_with(
        a,
        "POST",
        &format!("/api/rooms/{room}/recording"),
        &evil,
        Some(("text/plain", b"x")),
    )
    .await;
    assert_eq!(r.status, 403, "cross-origin POST: {}", r.body);
    assert!(server.rooms.list()[0].recording_info().is_none());
    let r = http_with(
        a,
        "DELETE",
        &format!("/api/rooms/{room}/participants/1"),
        &evil,
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    // Same origin and an allow-listed origin pass.
    let own = format!("http://{a}");
    let r = http_with(
        a,
        "PATCH",
        &format!("/api/rooms/{room}"),
        &[("Origin", &own)],
        Some(("application/json", b"{\"tones\":false}")),
    )
    .await;
    assert_eq!(r.status, 200, "same origin: {}", r.body);
    let r = http_with(
        a,
        "PATCH",
        &format!("/api/rooms/{room}"),
        &[("Origin", "https://app.example")],
        Some(("application/json", b"{\"tones\":true}")),
    )
    .await;
    assert_eq!(r.status, 200, "allow-listed origin: {}", r.body);
    // WebSocket upgrades from a foreign origin are refused before the upgrade.
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{a}/ws"))
            .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        Err(e) => panic!("expected an HTTP 403, got {e}"),
        Ok(_) => panic!("a foreign-origin WebSocket was upgraded"),
    }
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{a}/ws"))
            .unwrap();
    req.headers_mut().insert("Origin", own.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valid_tokens_join_with_their_name_moderator_and_publish_grants() {
    let server = secured().await;
    let a = server.addr;
    let room = "tokenroom";
    // The room has a PIN: a token for the room stands in for it.
    let auth = format!("Bearer {ADMIN_KEY}");
    let r = http_with(
        a,
        "PATCH",
        &format!("/api/rooms/{room}"),
        &[("Authorization", &auth)],
        Some(("application/json", b"{\"pin\":\"4321\"}")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let moderator = issue(
        Some(room),
        "Mona",
        Grants {
            moderator: true,
            ..join_grant()
        },
        600,
    );
    let listener = issue(
        Some(room),
        "Lars",
        Grants {
            publish: false,
            ..join_grant()
        },
        600,
    );
    let whip = issue(Some(room), "Wes", join_grant(), 600);
    let m = Client::join_ws_token(
        a,
        room,
        "typed name",
        Media::steady((200, 40, 40), 440.0),
        Some(&moderator),
    )
    .await;
    let l = Client::join_ws_token(
        a,
        room,
        "Lars",
        Media::steady((40, 200, 40), 1000.0),
        Some(&listener),
    )
    .await;
    let w = Client::join_whip_token(a, room, "ignored", (40, 40, 200), 660.0, Some(&whip)).await;
    let r = &server.rooms.list()[0];
    let people = r.participants();
    let names: Vec<&str> = people.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"Mona") && names.contains(&"Wes"),
        "token names win: {names:?}"
    );
    assert!(people.iter().any(|p| p.name == "Mona" && p.moderator));
    assert!(people.iter().all(|p| p.name == "Mona" || !p.moderator));
    // Media flows; the listener (no `publish`) is heard by nobody but hears everyone.
    wait_until("audio mixes", 20, || {
        [&m, &l]
            .iter()
            .all(|c| c.last_audio(48_000).len() >= 48_000)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heard_by_mona = m.last_audio(48_000);
    let p_wes = tone_power(&heard_by_mona, 660.0);
    let p_lars = tone_power(&heard_by_mona, 1000.0);
    assert!(
        p_wes > 100.0 * (p_lars + 1.0),
        "Mona hears Wes ({p_wes:.0}) but not Lars ({p_lars:.0})"
    );
    let heard_by_lars = l.last_audio(48_000);
    assert!(tone_power(&heard_by_lars, 440.0) > 100.0 * (tone_power(&heard_by_lars, 1000.0) + 1.0));
    // The WHIP session is ended with the same token, not with another room's.
    let loc = w.whip_location.clone().unwrap();
    let other = format!("Bearer {}", issue(Some("other"), "O", join_grant(), 600));
    let r = http_with(a, "DELETE", &loc, &[("Authorization", &other)], None).await;
    assert_eq!(r.status, 403);
    let own = format!("Bearer {whip}");
    let r = http_with(a, "DELETE", &loc, &[("Authorization", &own)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for c in [m, l] {
        c.close().await;
    }
    server.stop().await;
}

#[test]
fn the_binary_refuses_an_open_network_listener_and_prints_tokens() {
    let bin = env!("CARGO_BIN_EXE_tessera");
    let out = std::process::Command::new(bin)
        .args(["--listen", "0.0.0.0:0", "--sip-listen", "off"])
        .env_remove("TESSERA_API_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--insecure") && err.contains("api-secret"),
        "{err}"
    );
    // `tessera token` signs with the secret it is given; the last line is the token.
    let out = std::process::Command::new(bin)
        .args([
            "token",
            "--room",
            "standup",
            "--name",
            "Ana",
            "--moderator",
            "--ttl",
            "2h",
        ])
        .env("TESSERA_API_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap();
    let access = Access::new(Some(SECRET), None, &[]);
    let g = access
        .authorize_join(Some(token), "standup", unix_now())
        .unwrap();
    assert_eq!(g.name.as_deref(), Some("Ana"));
    assert!(g.moderator);
    let c = access.verify(token, unix_now()).unwrap();
    assert!((7100..=7200).contains(&(c.exp - c.iat)), "2 h lifetime");
    assert!(access
        .authorize_join(Some(token), "other", unix_now())
        .is_err());
    // Without a secret it says what is missing.
    let out = std::process::Command::new(bin)
        .args(["token", "--room", "r"])
        .env_remove("TESSERA_API_SECRET")
        .env_remove("TESSERA_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("API secret"));
}
