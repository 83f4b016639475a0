//! A SIP caller written here from the RFCs: plain UDP SIP (RFC 3261) and RTP (RFC 3550)
//! carrying G.711 µ-law, DTMF as RFC 4733 events and as SIP INFO (shared by the bridge and
//! cluster tests).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tessera::codec::voice::{ulaw_decode, ulaw_encode};

/// Power of `freq` in 8 kHz samples (≈ A² for a sine of amplitude A).
pub fn power(x: &[i16], freq: f32) -> f64 {
    tessera::mixer::tone_power_at(x, freq, 8_000.0)
}

/// Heard clearly (a -16 dBFS tone through the mix gives ~1e6..1e7).
pub const HEARD: f64 = 1e5;

pub struct Caller {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub server: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub cseq: u32,
    /// Where the server wants our RTP.
    pub media: Option<SocketAddr>,
    /// Tone we send (Hz); `None` = silence.
    pub tone: Option<f32>,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub heard: Vec<i16>,
    /// The server sent BYE.
    pub ended: bool,
    /// Final status of the INVITE.
    pub status: u16,
    /// Responses seen while polling (for in-dialog requests).
    pub responses: Vec<String>,
    /// The Contact of a 3xx answer to the INVITE.
    pub redirect: Option<String>,
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Caller {
    pub fn new(server: SocketAddr, tone: Option<f32>) -> Self {
        let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        Self {
            sip,
            rtp,
            server,
            call_id: format!("{:016x}@test", rand::random::<u64>()),
            from_tag: format!("{:08x}", rand::random::<u32>()),
            to_tag: String::new(),
            cseq: 1,
            media: None,
            tone,
            seq: rand::random(),
            ts: rand::random(),
            ssrc: rand::random(),
            heard: Vec::new(),
            ended: false,
            status: 0,
            responses: Vec::new(),
            redirect: None,
        }
    }

    /// Where a 3xx's Contact (`<sip:user@host:port>`) sends the call.
    pub fn redirect_target(&self) -> Option<SocketAddr> {
        let c = self.redirect.as_deref()?;
        let inner = c.trim().trim_start_matches('<').split('>').next()?;
        inner.split('@').nth(1)?.split(';').next()?.parse().ok()
    }

    pub fn local(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    pub fn request(
        &self,
        method: &str,
        uri: &str,
        branch: &str,
        extra: &str,
        body: &str,
    ) -> String {
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: \"Tester {port}\" <sip:{port}@127.0.0.1>;tag={ft}\r\n\
             To: <{uri}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:{port}@{l}>\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
            l = self.local(),
            port = self.local().port(),
            ft = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
            len = body.len(),
        )
    }

    pub fn send(&self, text: &str) {
        self.sip.send_to(text.as_bytes(), self.server).unwrap();
    }

    /// Next SIP message within `secs` (answering any BYE the server sends).
    /// `secs == 0`: only what has arrived (the socket timeout is in kernel ticks, several
    /// ms, too coarse for a 20 ms loop).
    pub fn recv(&mut self, secs: f64) -> Option<String> {
        self.sip.set_nonblocking(secs == 0.0).unwrap();
        if secs > 0.0 {
            self.sip
                .set_read_timeout(Some(Duration::from_secs_f64(secs)))
                .unwrap();
        }
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.sip.recv_from(&mut buf).ok()?;
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.starts_with("BYE ") {
            self.ended = true;
            self.reply_ok(&msg);
        }
        if msg.starts_with("SIP/2.0 ") {
            self.responses.push(msg.clone());
        }
        Some(msg)
    }

    pub fn reply_ok(&self, req: &str) {
        let mut resp = String::from("SIP/2.0 200 OK\r\n");
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = header(req, h) {
                resp += &format!("{h}: {v}\r\n");
            }
        }
        resp += "Content-Length: 0\r\n\r\n";
        self.send(&resp);
    }

    /// INVITE `room`; waits for the final answer and ACKs a 2xx. Returns the status.
    pub fn call(&mut self, room: &str) -> u16 {
        self.call_with_sdp(
            room,
            "RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
        )
    }

    /// INVITE `room` offering `m=audio PORT {profile_and_formats}` with PCMU and `extra`
    /// attribute lines.
    pub fn call_with_sdp(&mut self, room: &str, profile_and_formats: &str, extra: &str) -> u16 {
        let uri = format!("sip:{room}@{}", self.server);
        let rtp = self.rtp.local_addr().unwrap();
        let sdp = format!(
            "v=0\r\no=test 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} {profile_and_formats}\r\na=rtpmap:0 PCMU/8000\r\n\
             {extra}a=ptime:20\r\n",
            rtp.port()
        );
        let branch = format!("{:x}", rand::random::<u64>());
        let invite = self.request(
            "INVITE",
            &uri,
            &branch,
            "Content-Type: application/sdp\r\n",
            &sdp,
        );
        self.send(&invite);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Some(msg) = self.recv(0.5) else {
                continue;
            };
            let Some(code) = msg
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r[..3].parse::<u16>().ok())
            else {
                continue;
            };
            if code < 200 {
                continue;
            }
            self.status = code;
            if (300..400).contains(&code) {
                self.redirect = header(&msg, "Contact").map(str::to_owned);
            }
            if let Some(tag) = header(&msg, "To").and_then(|t| t.split(";tag=").nth(1)) {
                self.to_tag = tag.split(';').next().unwrap().to_owned();
            }
            let ack_branch = if code < 300 {
                format!("{:x}", rand::random::<u64>())
            } else {
                branch.clone()
            };
            let ack = self.request("ACK", &uri, &ack_branch, "", "").replace(
                &format!("CSeq: {} ACK", self.cseq),
                &format!("CSeq: {} ACK", self.cseq),
            );
            self.send(&ack);
            if code < 300 {
                let body = msg.split("\r\n\r\n").nth(1).unwrap_or("");
                let ip = body
                    .lines()
                    .find_map(|l| l.strip_prefix("c=IN IP4 "))
                    .unwrap()
                    .trim();
                let port: u16 = body
                    .lines()
                    .find_map(|l| l.strip_prefix("m=audio "))
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap()
                    .parse()
                    .unwrap();
                self.media = Some(format!("{ip}:{port}").parse().unwrap());
            }
            return code;
        }
        panic!("no final answer to INVITE");
    }

    pub fn rtp_packet(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let Some(to) = self.media else { return };
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        let _ = self.rtp.send_to(&p, to);
    }

    /// One 20 ms tick: our tone out, whatever arrived in.
    pub fn tick(&mut self, k: u64) {
        if self.ended || self.media.is_none() {
            return;
        }
        let payload: Vec<u8> = (0..160u64)
            .map(|i| {
                let s = match self.tone {
                    Some(f) => {
                        ((k * 160 + i) as f32 * 2.0 * std::f32::consts::PI * f / 8_000.0).sin()
                            * 8_000.0
                    }
                    None => 0.0,
                };
                ulaw_encode(s as i16)
            })
            .collect();
        let ts = self.ts;
        self.rtp_packet(0, false, ts, &payload);
        self.ts = self.ts.wrapping_add(160);
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.rtp.recv(&mut buf) {
            if n > 12 && buf[1] & 0x7f == 0 {
                self.heard
                    .extend(buf[12..n].iter().map(|&b| ulaw_decode(b)));
            }
        }
    }

    /// A key as RFC 4733 events: three packets sharing a timestamp, no marker bit.
    pub fn key_rtp(&mut self, key: char) {
        let event = match key {
            '0'..='9' => key as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("key {key}"),
        };
        let ts = self.ts;
        for (i, dur) in [400u16, 800, 800].into_iter().enumerate() {
            let e = if i == 2 { 0x80 } else { 0 };
            let [d0, d1] = dur.to_be_bytes();
            self.rtp_packet(101, false, ts, &[event, e | 10, d0, d1]);
        }
        self.ts = self.ts.wrapping_add(800);
    }

    /// A key as SIP INFO (application/dtmf-relay), retransmitted every 500 ms until
    /// answered (RFC 3261 17.1.2), while everyone keeps sending audio.
    pub fn key_info(callers: &mut [&mut Caller], who: usize, k: &mut u64, key: char) -> u16 {
        let c = &mut *callers[who];
        c.cseq += 1;
        let uri = format!("sip:x@{}", c.server);
        let branch = format!("{:x}", rand::random::<u64>());
        let body = format!("Signal={key}\r\nDuration=160\r\n");
        let req = c.request(
            "INFO",
            &uri,
            &branch,
            "Content-Type: application/dtmf-relay\r\n",
            &body,
        );
        let cseq = format!("CSeq: {} INFO", c.cseq);
        for _ in 0..8 {
            callers[who].send(&req);
            for _ in 0..5 {
                run(callers, k, 0.1);
                if let Some(r) = callers[who].responses.iter().find(|r| r.contains(&cseq)) {
                    return r[8..11].parse().unwrap_or(0);
                }
            }
        }
        panic!("INFO never answered");
    }

    /// re-INVITE with media `dir` (sendrecv, sendonly, …) at our current RTP socket; ACKs
    /// the 200 and returns it.
    pub fn reinvite(&mut self, room: &str, dir: &str) -> String {
        self.cseq += 1;
        let uri = format!("sip:{room}@{}", self.server);
        let rtp = self.rtp.local_addr().unwrap().port();
        let sdp = format!(
            "v=0\r\no=test 1 {v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na={dir}\r\n",
            v = self.cseq
        );
        let branch = format!("{:x}", rand::random::<u64>());
        let req = self.request(
            "INVITE",
            &uri,
            &branch,
            "Content-Type: application/sdp\r\n",
            &sdp,
        );
        self.send(&req);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(m) = self.recv(0.5).filter(|m| m.starts_with("SIP/2.0 200")) {
                let ack =
                    self.request("ACK", &uri, &format!("{:x}", rand::random::<u64>()), "", "");
                self.send(&ack);
                return m;
            }
        }
        panic!("re-INVITE not answered");
    }

    pub fn bye(&mut self) {
        self.cseq += 1;
        let uri = format!("sip:x@{}", self.server);
        let branch = format!("{:x}", rand::random::<u64>());
        let req = self.request("BYE", &uri, &branch, "", "");
        self.send(&req);
        self.ended = true;
    }

    pub fn last(&self, secs: f64) -> &[i16] {
        let n = (secs * 8_000.0) as usize;
        &self.heard[self.heard.len().saturating_sub(n)..]
    }
}

/// Paces every caller 20 ms at a time for `secs`; keys in flight are handled by the caller.
pub fn run(callers: &mut [&mut Caller], k: &mut u64, secs: f64) {
    let start = Instant::now();
    let ticks = (secs * 50.0) as u64;
    for t in 0..ticks {
        for c in callers.iter_mut() {
            c.tick(*k);
            // Requests from the server (BYE) are answered as they come.
            while c.recv(0.0).is_some() {}
        }
        *k += 1;
        let due = start + Duration::from_millis(20 * (t + 1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
}
