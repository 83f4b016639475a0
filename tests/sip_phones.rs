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
    let mut config = Config::default();
    config.tls_cert = Some(cert.to_owned());
    config.tls_key = Some(key.to_owned());
    config.sip_tls_listen = Some("127.0.0.1:0".parse().unwrap());
    config.rooms = vec![vault];
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
    sip.stop();
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
