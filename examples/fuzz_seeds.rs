//! Writes the seed corpora for the fuzz targets in `fuzz/` (see FUZZING.md):
//! `cargo run --release --example fuzz_seeds -- fuzz/seeds`. Real inputs made by real
//! code: H.264 from Tessera's encoder and AV1 from the test fixture, both packetised by the
//! `rtc` payloaders the WebRTC stack uses; RTCP marshalled by `rtc-rtcp`; the built-in
//! layouts, a config file and signaling messages as clients send them.

use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp::codec::av1::Av1Payloader;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use std::path::Path;
use tessera::codec::video::{EncoderSettings, H264Encoder};
use tessera::media::frame::rgb_to_yuv;
use tessera::media::I420Frame;

fn main() -> anyhow::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let root = Path::new(&root);
    let put = |target: &str, name: &str, data: &[u8]| -> anyhow::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)?;
        Ok(())
    };

    // Signaling messages.
    for (i, m) in [
        r#"{"type":"join","room":"standup","name":"Ada Lovelace"}"#,
        r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}"#,
        r#"{"type":"candidate","candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
        r#"{"type":"setLayout","layout":"focus"}"#,
        r#"{"type":"mute","audio":true,"video":false}"#,
        r#"{"type":"leave"}"#,
    ]
    .iter()
    .enumerate()
    {
        put("signaling_message", &format!("msg{i}"), m.as_bytes())?;
    }

    // SDP offers as Chromium and webrtc-rs send them.
    let chromium = include_str!("../tests/data/sdp/chromium_offer.sdp");
    let webrtc_rs = include_str!("../tests/data/sdp/webrtc_rs_offer.sdp");
    put("sdp_offer", "chromium", chromium.as_bytes())?;
    put("sdp_offer", "webrtc_rs", webrtc_rs.as_bytes())?;
    let mut whip = b"application/sdp\xffstandup\xffOBS\xff".to_vec();
    whip.extend_from_slice(webrtc_rs.as_bytes());
    put("whip_request", "obs", &whip)?;
    let mut whip = b"application/sdp; charset=utf-8\xffroom.1\xff\xff".to_vec();
    whip.extend_from_slice(chromium.as_bytes());
    put("whip_request", "noname", &whip)?;

    // Layouts and config.
    for entry in std::fs::read_dir("layouts")? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "json") {
            let mut data = vec![0x80, 0x02, 0x68, 0x01]; // a 1280x720-ish canvas
            data.extend(std::fs::read(&p)?);
            put(
                "layout_json",
                &p.file_stem().unwrap().to_string_lossy(),
                &data,
            )?;
        }
    }
    put(
        "config_toml",
        "full",
        br#"listen = "0.0.0.0:8080"
media_ip = "0.0.0.0"
public_ip = "203.0.113.7"
udp_port_min = 40000
udp_port_max = 40100
max_participants = 16
[[ice_servers]]
urls = ["turn:turn.example.org:3478"]
username = "tessera"
credential = "secret"
[video]
width = 1280
height = 720
fps = 30
bitrate_kbps = 1500
complexity = "low"
[audio]
top_k = 3
[recording]
dir = "recordings"
auto = false
[ingest]
max_width = 1920
max_height = 1080
[timeouts]
media_s = 5
[http]
join_rate = 2.0
join_burst = 20
"#,
    )?;

    // H.264: an IDR and P frames from Tessera's encoder, changing colour, packetised.
    for (w, h) in [(160u32, 90u32), (320, 180)] {
        let mut enc = H264Encoder::new(EncoderSettings {
            width: w,
            height: h,
            fps: 30,
            bitrate_bps: 300_000,
            idr_interval_frames: 300,
            complexity: Default::default(),
            analysis: Default::default(),
        })?;
        let mut pay = H264Payloader::default();
        let mut au = Vec::new();
        let mut units = Vec::new();
        for i in 0..6u8 {
            // A moving diagonal gradient, so P frames carry motion.
            let mut f = I420Frame::solid(w as usize, h as usize, rgb_to_yuv(40 * i, 200, 90));
            for y in 0..h as usize {
                for x in 0..w as usize {
                    f.y[y * w as usize + x] = (x + 2 * y + 8 * i as usize) as u8;
                }
            }
            enc.encode(&f, &mut au)?; // true = an IDR
            if !au.is_empty() {
                units.push(pay.payload(500, &Bytes::from(au.clone()))?);
            }
        }
        put("h264_ingest", &format!("stream_{w}x{h}"), &records(&units))?;
    }
    // AV1: the fixtures' temporal units, packetised.
    for (name, file) in [
        (
            "blue_320x180",
            &include_bytes!("../tests/data/av1/blue_320x180.obu")[..],
        ),
        (
            "red_8192x8192",
            &include_bytes!("../tests/data/av1/red_8192x8192.obu")[..],
        ),
    ] {
        let mut pay = Av1Payloader::default();
        let mut units = Vec::new();
        for tu in tessera::codec::video::av1_temporal_units(file)
            .into_iter()
            .take(6)
        {
            units.push(pay.payload(500, &Bytes::copy_from_slice(tu))?);
        }
        put("av1_ingest", name, &records(&units))?;
    }

    // VP8: a keyframe and inter frames from Tessera's encoder; a keyframe header that
    // declares 16383x16383 (the format's largest).
    {
        let mut enc = tessera::codec::vpx::Vp8Encoder::new(EncoderSettings {
            width: 320,
            height: 180,
            fps: 30,
            bitrate_bps: 300_000,
            idr_interval_frames: 300,
            complexity: Default::default(),
            analysis: Default::default(),
        })?;
        let mut pay = rtc::rtp::codec::vp8::Vp8Payloader::default();
        pay.enable_picture_id = true;
        let mut data = Vec::new();
        let mut units = Vec::new();
        for i in 0..6u8 {
            let mut f = I420Frame::solid(320, 180, rgb_to_yuv(40 * i, 90, 200));
            for y in 0..180 {
                for x in 0..320 {
                    f.y[y * 320 + x] = (x + 2 * y + 8 * i as usize) as u8;
                }
            }
            enc.encode(&f, &mut data)?;
            if !data.is_empty() {
                units.push(pay.payload(500, &Bytes::from(data.clone()))?);
            }
        }
        put("vp8_ingest", "stream_320x180", &records(&units))?;
        let mut huge = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0x3f, 0xff, 0x3f];
        huge.extend_from_slice(&[0u8; 32]);
        put(
            "vp8_ingest",
            "keyframe_16383x16383",
            &records(&[pay.payload(500, &Bytes::from(huge))?]),
        )?;
    }
    // VP9: the fixture's frames (libvpx via ffmpeg), packetised.
    {
        let clip = include_bytes!("../tests/data/vp9/testsrc_640x360.ivf");
        let mut pay = rtc::rtp::codec::vp9::Vp9Payloader::default();
        let mut units = Vec::new();
        for f in tessera::codec::vpx::ivf_frames(clip).into_iter().take(4) {
            units.push(pay.payload(500, &Bytes::copy_from_slice(f))?);
        }
        put("vp9_ingest", "testsrc_640x360", &records(&units))?;
    }

    // RTCP feedback a viewer sends.
    use rtc::shared::marshal::Marshal;
    let rr = ReceiverReport {
        ssrc: 0x1111,
        reports: vec![ReceptionReport {
            ssrc: 0x2222,
            fraction_lost: 12,
            total_lost: 40,
            last_sequence_number: 5000,
            jitter: 30,
            last_sender_report: 0x1234_5678,
            delay: 655,
        }],
        ..Default::default()
    };
    let pli = PictureLossIndication {
        sender_ssrc: 0x1111,
        media_ssrc: 0x2222,
    };
    let fir = FullIntraRequest {
        sender_ssrc: 0x1111,
        media_ssrc: 0x2222,
        fir: vec![FirEntry {
            ssrc: 0x2222,
            sequence_number: 7,
        }],
    };
    let nack = TransportLayerNack {
        sender_ssrc: 0x1111,
        media_ssrc: 0x2222,
        nacks: vec![NackPair {
            packet_id: 100,
            lost_packets: 0b1010,
        }],
    };
    let remb = ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 0x1111,
        bitrate: 450_000.0,
        ssrcs: vec![0x2222],
    };
    put("rtcp_feedback", "rr", &rr.marshal()?)?;
    put("rtcp_feedback", "pli", &pli.marshal()?)?;
    put("rtcp_feedback", "fir", &fir.marshal()?)?;
    put("rtcp_feedback", "nack", &nack.marshal()?)?;
    put("rtcp_feedback", "remb", &remb.marshal()?)?;
    let mut compound = rr.marshal()?.to_vec();
    compound.extend_from_slice(&pli.marshal()?);
    compound.extend_from_slice(&remb.marshal()?);
    put("rtcp_feedback", "rr_pli_remb", &compound)?;
    Ok(())
}

/// Access units of RTP payloads in the fuzz targets' record form.
fn records(units: &[Vec<Bytes>]) -> Vec<u8> {
    let mut out = Vec::new();
    for unit in units {
        for (i, p) in unit.iter().enumerate() {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.push((i + 1 == unit.len()) as u8);
            out.extend_from_slice(p);
        }
    }
    out
}
