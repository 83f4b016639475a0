//! The telephony bridge with an independent phone, baresip (Debian `baresip-core`): SIP
//! over TLS with mandatory SRTP (SDES) into a room with a WebRTC participant, both hearing
//! each other; the media-encryption policy refusing plain RTP (and keys in clear text).

mod common;

use common::baresip::{Phone, PhoneSetup};
use common::sip_caller::{header, Caller};
use common::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera::config::{Config, MediaEncryption, RoomDecl};
use tessera::mixer::{tone_power, tone_power_at};

/// A certificate for 127.0.0.1 and localhost, written as PEM; (dir, cert, key).
fn certificate() -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "tessera-phones-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

/// The in-process server (HTTP for the WebRTC participant) with SIP on UDP/TCP and TLS.
async fn servers(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (TestServer, tessera::sip::SipServer) {
    let vault = RoomDecl {
        name: "vault".into(),
        media_encryption: Some(MediaEncryption::Required),
        tones: true,
        ..Default::default()
    };
    let server = TestServer::start_with(|c| c.rooms = vec![vault.clone()]).await;
    let config = Config {
        tls_cert: Some(cert.to_owned()),
        tls_key: Some(key.to_owned()),
        sip_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        rooms: vec![vault],
        ..Default::default()
    };
    let sip = tessera::sip::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(config),
        server.rooms.clone(),
    )
    .await
    .unwrap();
    (server, sip)
}

/// baresip calls over TLS with mandatory SRTP into a room that requires encryption, where
/// a WebRTC participant is: each hears the other's tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baresip_over_tls_with_mandatory_srtp_and_a_web_participant_hear_each_other() {
    let (dir, cert, key) = certificate();
    let (server, sip) = servers(&cert, &key).await;
    let tls = sip.tls_addr.expect("a TLS listener");
    let web = Client::join_ws(&server, "vault", "Web", (200, 40, 40), 1_000.0).await;
    let ca = cert.clone();
    let phone = tokio::task::spawn_blocking(move || {
        let phone = Phone::start(PhoneSetup {
            account: "<sip:alice@127.0.0.1;transport=tls>;mediaenc=srtp-mand;regint=0".into(),
            tone: 440,
            ca: Some(&ca),
            dial: Some(format!("sip:vault@{tls};transport=tls")),
            listen: None,
            secs: 9,
        });
        assert!(
            phone.wait_for("Call established", 8.0),
            "baresip did not get through: {}",
            phone.output()
        );
        phone
    })
    .await
    .unwrap();
    assert!(
        phone
            .output()
            .contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
        "{}",
        phone.output()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The web participant hears the phone's 440 Hz.
    let heard = web.last_audio(2 * 48_000);
    let p440 = tone_power(&heard, 440.0);
    println!("web hears the phone: 440 Hz power {p440:.0}");
    assert!(
        p440 > 1e5,
        "the web participant does not hear the phone: {p440:.0}"
    );
    let mut phone = tokio::task::spawn_blocking(move || {
        let mut phone = phone;
        phone.wait(10.0);
        phone
    })
    .await
    .unwrap();
    // The phone heard the web participant's 1 kHz (its last 2 s, at its own rate).
    let (samples, rate) = phone.heard();
    let tail = &samples[samples.len().saturating_sub(2 * rate as usize)..];
    let p1k = tone_power_at(tail, 1_000.0, rate as f32);
    let p440_back = tone_power_at(tail, 440.0, rate as f32);
    println!("phone hears the web participant: 1 kHz power {p1k:.0} (own tone {p440_back:.0})");
    assert!(
        p1k > 1e5,
        "the phone does not hear the web participant: {p1k:.0}"
    );
    assert!(p440_back * 100.0 < p1k, "the phone hears itself");
    phone.wait(1.0);
    web.close().await;
    sip.stop();
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A room that requires encryption answers a plain-RTP offer 488, and SDES keys offered in
/// clear text (over UDP) are never used: RTP/SAVP over UDP gets 488 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_rtp_to_a_required_room_and_keys_in_clear_text_get_488() {
    let (dir, cert, key) = certificate();
    let (server, sip) = servers(&cert, &key).await;
    let udp = sip.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let mut plain = Caller::new(udp, None);
        let plain_code = plain.call("vault");
        let warning = plain
            .responses
            .iter()
            .find(|r| r.starts_with("SIP/2.0 488"))
            .and_then(|r| header(r, "Warning").map(str::to_owned));
        // An SRTP offer over UDP: the key would travel in clear text.
        let mut clear = Caller::new(udp, None);
        let clear_code = clear.call_with_sdp(
            "open",
            "RTP/SAVP 0",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:3XQ6Xdg/+6XoO/DlYqCfFnqbOZaWZX5Yp7M9rUwh\r\n",
        );
        // A plain call to a room without the requirement is answered.
        let mut ok = Caller::new(udp, None);
        let ok_code = ok.call("open");
        ok.bye();
        (plain_code, warning, clear_code, ok_code)
    })
    .await
    .unwrap();
    println!("answers: {answers:?}");
    assert_eq!(answers.0, 488);
    assert!(
        answers
            .1
            .as_deref()
            .is_some_and(|w| w.contains("requires encrypted media")),
        "{:?}",
        answers.1
    );
    assert_eq!(answers.2, 488, "an SRTP offer with its key in clear text");
    assert_eq!(answers.3, 200);
    // Calls placed from a room are plain RTP: the room that requires encryption places none.
    let resp = post_call(&server, "vault", "sip:bob@127.0.0.1:5099").await;
    assert_eq!(resp.status, 409, "{}", resp.body);
    assert!(
        resp.body.contains("requires encrypted media"),
        "{}",
        resp.body
    );
    sip.stop();
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A free UDP (and TCP) port on loopback for a phone to listen on.
fn free_port() -> u16 {
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.local_addr().unwrap().port()
}

/// A baresip that waits for calls on a free loopback port (`answermode` `auto` or
/// `manual`), playing 440 Hz, for `secs`; ready when returned. Gives it and its port.
fn listening_phone(user: &str, answermode: &str, secs: u32) -> (Phone, u16) {
    let port = free_port();
    let phone = Phone::start(PhoneSetup {
        account: format!("<sip:{user}@127.0.0.1>;answermode={answermode};regint=0"),
        tone: 440,
        ca: None,
        dial: None,
        listen: Some(format!("127.0.0.1:{port}")),
        secs,
    });
    assert!(
        phone.wait_for("baresip is ready", 10.0),
        "{}",
        phone.output()
    );
    (phone, port)
}

/// `POST /api/rooms/{room}/calls` to `to` (named Bob), whatever the answer.
async fn post_call(server: &TestServer, room: &str, to: &str) -> HttpResponse {
    let body = serde_json::json!({ "to": to, "name": "Bob" }).to_string();
    http(
        server.addr,
        "POST",
        &format!("/api/rooms/{room}/calls"),
        Some(("application/json", body.as_bytes())),
    )
    .await
}

/// Places a call, which must be accepted (201); gives the call.
async fn dial(server: &TestServer, room: &str, to: &str) -> serde_json::Value {
    let resp = post_call(server, room, to).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    serde_json::from_str(&resp.body).unwrap()
}

async fn call_state(server: &TestServer, room: &str, id: &str) -> serde_json::Value {
    let resp = http(
        server.addr,
        "GET",
        &format!("/api/rooms/{room}/calls/{id}"),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    serde_json::from_str(&resp.body).unwrap()
}

/// Polls the call until `done` holds (at most `secs`).
async fn wait_call(
    server: &TestServer,
    room: &str,
    id: &str,
    secs: u64,
    done: impl Fn(&str) -> bool,
) -> serde_json::Value {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let c = call_state(server, room, id).await;
        if done(c["state"].as_str().unwrap_or_default()) || std::time::Instant::now() > end {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Dial-out through the API to a baresip that answers by itself: it joins the room with
/// no PIN, the web participant and the phone hear each other, progress reaches the room's
/// WebSocket, and DELETE hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dial_out_to_a_phone_that_answers_brings_it_into_the_room() {
    let (dir, cert, key) = certificate();
    let (server, sip) = servers(&cert, &key).await;
    let mut web = Client::join_ws(&server, "dial", "Web", (40, 200, 40), 1_000.0).await;
    let (phone, port) = listening_phone("bob", "auto", 20);
    let t0 = std::time::Instant::now();
    let call = dial(&server, "dial", &format!("sip:bob@127.0.0.1:{port}")).await;
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(call["state"], "dialing");
    let answered = wait_call(&server, "dial", &id, 10, |s| {
        s != "dialing" && s != "ringing"
    })
    .await;
    assert_eq!(answered["state"], "answered", "{answered}");
    let answered_after = t0.elapsed();
    // First audio from the callee: its 440 Hz in the web participant's mix.
    let mut first_audio = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if tone_power(&web.last_audio(4_800), 440.0) > 1e5 {
            first_audio = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = answered["startedAtMs"].as_u64().unwrap();
    println!(
        "dial-out: INVITE -> ringing {:?} ms, -> answered {:?} ms (API poll: {answered_after:?}), \
         -> first audio {first_audio:?}",
        answered["ringingAtMs"].as_u64().map(|t| t - started),
        answered["answeredAtMs"].as_u64().map(|t| t - started),
    );
    assert!(first_audio.is_some(), "the callee is never heard");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p440 = tone_power(&web.last_audio(48_000), 440.0);
    assert!(
        p440 > 1e5,
        "the web participant hears the callee: {p440:.0}"
    );
    // The room's WebSocket saw the call's progress.
    let mut states = Vec::new();
    while let Ok(m) = web.messages.try_recv() {
        if m["type"] == "callUpdated" {
            states.push(m["call"]["state"].as_str().unwrap_or_default().to_owned());
        }
    }
    println!("room WebSocket: {states:?}");
    assert_eq!(states.first().map(String::as_str), Some("dialing"));
    assert!(states.iter().any(|s| s == "answered"), "{states:?}");
    // The callee is a participant (no PIN asked).
    let room = server.rooms.list().into_iter().next().unwrap();
    assert_eq!(room.participants().len(), 2);
    // Hang up through the API.
    let resp = http(
        server.addr,
        "DELETE",
        &format!("/api/rooms/dial/calls/{id}"),
        None,
    )
    .await;
    assert_eq!(resp.status, 204);
    let ended = wait_call(&server, "dial", &id, 5, |s| s == "ended").await;
    assert_eq!(ended["state"], "ended");
    assert!(phone.wait_for("terminated", 5.0), "{}", phone.output());
    // What the phone heard: the web participant's 1 kHz.
    let mut phone = phone;
    phone.wait(1.0);
    let (samples, rate) = phone.heard();
    let p1k = tone_power_at(&samples, 1_000.0, rate as f32);
    println!("the callee heard the web participant at {p1k:.0}");
    assert!(p1k > 1e5, "the callee does not hear the room: {p1k:.0}");
    web.close().await;
    sip.stop();
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Busy (486) and declining (603) phones — SIPp ringing then refusing — and a baresip that
/// rings and never answers give `busy`, `declined` and `no_answer` (after the ring timeout,
/// with a CANCEL); bad targets are refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dial_out_reports_busy_declined_and_unanswered_calls() {
    let (dir, _cert, _key) = certificate();
    let server = TestServer::start().await;
    let mut config = Config::default();
    config.sip.ring_timeout_s = 2;
    config.sip.max_outbound_calls_per_room = 1;
    let sip = tessera::sip::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(config),
        server.rooms.clone(),
    )
    .await
    .unwrap();
    let _web = Client::join_ws(&server, "out", "Web", (40, 40, 200), 1_000.0).await;
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sipp/reject.xml.in"),
    )
    .unwrap();
    for (code, want) in [(486, "busy"), (603, "declined")] {
        let port = free_port();
        let scenario = dir.join(format!("reject-{code}.xml"));
        std::fs::write(&scenario, template.replace("[code]", &code.to_string())).unwrap();
        let mut sipp = std::process::Command::new("sipp")
            .current_dir(&dir)
            .arg("-sf")
            .arg(&scenario)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                "1",
                "-nostdin",
            ])
            .args(["-timeout", "20s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sipp");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let call = dial(&server, "out", &format!("sip:carol@127.0.0.1:{port}")).await;
        let id = call["id"].as_str().unwrap().to_owned();
        let done = wait_call(&server, "out", &id, 10, |s| {
            !matches!(s, "dialing" | "ringing")
        })
        .await;
        println!("SIPp answering {code}: {done}");
        assert_eq!(done["state"], want, "{done}");
        assert_eq!(done["code"], code);
        assert!(done["ringingAtMs"].is_u64(), "the 180 was seen: {done}");
        let _ = tokio::task::spawn_blocking(move || sipp.wait()).await;
    }
    // A phone that rings and is never picked up.
    let (phone, port) = listening_phone("dave", "manual", 15);
    let call = dial(&server, "out", &format!("sip:dave@127.0.0.1:{port}")).await;
    let id = call["id"].as_str().unwrap().to_owned();
    // While it rings the room is at its limit of one call: another is refused.
    let refused = post_call(&server, "out", &format!("sip:erin@127.0.0.1:{port}")).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("already has 1 calls"),
        "{}",
        refused.body
    );
    let done = wait_call(&server, "out", &id, 10, |s| {
        !matches!(s, "dialing" | "ringing")
    })
    .await;
    println!("unanswered: {done}");
    assert_eq!(done["state"], "no_answer", "{done}");
    assert!(phone.wait_for("Incoming call", 1.0), "{}", phone.output());
    // Bad targets.
    for bad in ["tel:+15551234", "sip:a b@x", "http://example.com"] {
        let resp = post_call(&server, "out", bad).await;
        assert_eq!(resp.status, 400, "{bad}: {}", resp.body);
    }
    drop(phone);
    sip.stop();
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A real SIP proxy and registrar (Debian's kamailio) that challenges every INVITE with
/// digest authentication; `algorithm` MD5 or SHA-256. Killed on drop.
struct Proxy {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Proxy {
    fn start(algorithm: &str, password: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tessera-kamailio-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let cfg = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kamailio.cfg.in"),
        )
        .unwrap()
        .replace("@PORT@", &port.to_string())
        .replace("@ALGORITHM@", algorithm)
        .replace("@PASSWORD@", password)
        .replace("@USER@", "tessera");
        std::fs::write(dir.join("kamailio.cfg"), cfg).unwrap();
        let child = std::process::Command::new("kamailio")
            .arg("-DD")
            .arg("-E")
            .arg("-f")
            .arg(dir.join("kamailio.cfg"))
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .arg("-Y")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("kamailio (scripts/setup.sh --test installs it)");
        Self { child, dir, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM: kamailio's main process takes its children down with it.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Dial-out through `[sip] outbound_proxy` to a phone registered there: the proxy
/// challenges the INVITE (407, digest with MD5, then with SHA-256 — RFC 8760) and our
/// credential passes; a wrong password ends the call `failed` with the 407.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dial_out_through_a_proxy_that_challenges_with_digest() {
    for algorithm in ["MD5", "SHA-256"] {
        let proxy = Proxy::start(algorithm, "s3cret");
        let port = free_port();
        let phone = Phone::start(PhoneSetup {
            account: format!(
                "<sip:bob@127.0.0.1:{}>;answermode=auto;regint=60",
                proxy.port
            ),
            tone: 440,
            ca: None,
            dial: None,
            listen: Some(format!("127.0.0.1:{port}")),
            secs: 20,
        });
        assert!(
            phone.wait_for("200 OK", 10.0),
            "baresip did not register with kamailio: {}",
            phone.output()
        );
        for (password, want) in [("s3cret", "answered"), ("wrong", "failed")] {
            let server = TestServer::start().await;
            let mut config = Config::default();
            config.sip.outbound_proxy = Some(format!("sip:127.0.0.1:{}", proxy.port));
            config.sip.outbound_username = Some("tessera".into());
            config.sip.outbound_password = Some(password.into());
            let sip = tessera::sip::start(
                "127.0.0.1:0".parse().unwrap(),
                Arc::new(config),
                server.rooms.clone(),
            )
            .await
            .unwrap();
            let _web = Client::join_ws(&server, "pbx", "Web", (40, 40, 200), 1_000.0).await;
            let call = dial(&server, "pbx", &format!("sip:bob@127.0.0.1:{}", proxy.port)).await;
            let id = call["id"].as_str().unwrap().to_owned();
            let done = wait_call(&server, "pbx", &id, 10, |s| {
                !matches!(s, "dialing" | "ringing")
            })
            .await;
            println!("{algorithm}, password {password:?}: {done}");
            assert_eq!(done["state"], want, "{done}\n{}", proxy.log());
            if want == "failed" {
                assert_eq!(done["code"], 407);
            } else {
                let _ = http(
                    server.addr,
                    "DELETE",
                    &format!("/api/rooms/pbx/calls/{id}"),
                    None,
                )
                .await;
                wait_call(&server, "pbx", &id, 5, |s| s == "ended").await;
            }
            sip.stop();
            server.stop().await;
        }
        let log = proxy.log();
        assert!(log.contains("challenging INVITE"), "{log}");
        assert!(log.contains("authenticated INVITE from"), "{log}");
    }
}
