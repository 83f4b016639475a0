//! baresip (Debian `baresip-core`), an independent SIP phone, driven from tests: a config
//! directory of its own (loopback only, `ausine` as the microphone, ALSA `null` as the
//! speaker, `sndfile` dumping what it hears), one account, and either a number to dial or
//! auto-answer. Its console output is kept for the test to read.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Phone {
    pub dir: PathBuf,
    child: Option<Child>,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

/// What the phone does.
pub struct PhoneSetup<'a> {
    /// The account line, e.g. `<sip:alice@127.0.0.1;transport=tls>;mediaenc=srtp-mand`.
    pub account: String,
    /// Its microphone: a sine of this frequency (Hz).
    pub tone: u32,
    /// The CA certificate (PEM) it trusts for TLS.
    pub ca: Option<&'a Path>,
    /// A URI to dial at start.
    pub dial: Option<String>,
    /// Where it listens for SIP (auto-answer tests): `127.0.0.1:PORT`.
    pub listen: Option<String>,
    /// Quit after this long.
    pub secs: u32,
}

impl Phone {
    pub fn start(setup: PhoneSetup<'_>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tessera-baresip-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!(
            "poll_method epoll\n\
             sip_listen {listen}\n\
             net_interface 127.0.0.1\n\
             audio_player alsa,null\n\
             audio_alert alsa,null\n\
             audio_source ausine,{tone}\n\
             ausrc_srate 48000\n\
             ausrc_channels 2\n\
             module_path /usr/lib/baresip/modules\n\
             module stdio.so\n\
             module g711.so\n\
             module ausine.so\n\
             module alsa.so\n\
             module sndfile.so\n\
             module srtp.so\n\
             module_app account.so\n\
             module_app menu.so\n\
             snd_path {snd}\n",
            listen = setup.listen.as_deref().unwrap_or("127.0.0.1:0"),
            tone = setup.tone,
            snd = dir.display(),
        );
        if let Some(ca) = setup.ca {
            config += &format!("sip_cafile {}\n", ca.display());
        }
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(dir.join("accounts"), format!("{}\n", setup.account)).unwrap();
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(&dir)
            .args(["-t", &setup.secs.to_string()]);
        if let Some(uri) = &setup.dial {
            cmd.args(["-e", &format!("/dial {uri}")]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baresip (scripts/setup.sh --test installs baresip-core)");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Self {
            dir,
            child: Some(child),
            out,
        }
    }

    /// Its console output so far.
    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until its output holds `text` (or `secs` pass); true if it did.
    pub fn wait_for(&self, text: &str, secs: f64) -> bool {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            if self.output().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits for it to exit (its `-t` time), at most `secs`.
    pub fn wait(&mut self, secs: f64) {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        if let Some(c) = self.child.as_mut() {
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What it heard (its `sndfile` decoder dump): samples and their rate.
    pub fn heard(&self) -> (Vec<i16>, u32) {
        let dump = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| {
                panic!(
                    "no decoder dump in {}: {}",
                    self.dir.display(),
                    self.output()
                )
            });
        read_wav(&std::fs::read(dump).unwrap())
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 16-bit PCM WAV (first channel) and its sample rate.
pub fn read_wav(b: &[u8]) -> (Vec<i16>, u32) {
    assert!(
        b.len() > 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE",
        "not a WAV"
    );
    let (mut rate, mut channels, mut pos) = (0u32, 1usize, 12usize);
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &b[pos + 8..(pos + 8 + len).min(b.len())];
        if id == b"fmt " {
            channels = u16::from_le_bytes([body[2], body[3]]) as usize;
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
        } else if id == b"data" {
            let samples = body
                .chunks_exact(2 * channels)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (samples, rate);
        }
        pos += 8 + len + (len & 1);
    }
    panic!("no data chunk");
}
