//! `tessera load` against the real server (both as processes): every synthetic participant
//! joins with a token, gets its tracks and media, and the summary reads the server's CPU
//! from `/metrics` with the admin key.

use std::io::BufRead;

#[test]
fn the_load_generator_joins_measures_and_reports() {
    let bin = env!("CARGO_BIN_EXE_tessera");
    let secret = "load-test-secret-load-test-secret-0";
    let key = "load-test-admin-key-load-test";
    let mut server = std::process::Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--sip-listen",
            "off",
            "--video-size",
            "320x180",
        ])
        .env("TESSERA_API_SECRET", secret)
        .env("TESSERA_ADMIN_KEY", key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let run = std::process::Command::new(bin)
        .args([
            "load",
            "--url",
            &url,
            "--room",
            "loadtest",
            "-n",
            "3",
            "--rate",
            "10",
            "--duration",
            "3",
            "--video-size",
            "320x180",
            "--video-kbps",
            "300",
            "--json",
        ])
        .env("TESSERA_API_SECRET", secret)
        .env("TESSERA_ADMIN_KEY", key)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&run.stdout)));
    assert_eq!(s["joined"], 3, "{s}");
    assert_eq!(s["errors"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(s["tracksExpected"], 6);
    assert_eq!(s["tracksReceived"], 6, "{s}");
    assert!(s["videoKbpsPerParticipant"].as_f64().unwrap() > 50.0, "{s}");
    assert!(s["audioKbpsPerParticipant"].as_f64().unwrap() > 10.0, "{s}");
    assert!(s["serverCpuPercent"].as_f64().unwrap() > 0.0, "{s}");
    let first_media_p99 = s["joinFirstMediaMs"][1].as_f64().unwrap();
    assert!(first_media_p99 > 0.0, "{s}");
}
