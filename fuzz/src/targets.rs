//! The bodies of the fuzz targets, one plain function per target, so that the normal test
//! suite (`tests/fuzz_corpora.rs`, stable Rust, no sanitizer) replays every corpus and
//! regression input through exactly the code the fuzzers ran. Each function must never
//! panic on any input; the `assert!`s inside are properties that must hold.
//!
//! Uses only `tessera`, `rtc` and `bytes`, which both crates depend on.

#![allow(clippy::all)]
use bytes::Bytes;
use tessera::codec::video::{Decoded, VideoDecoder};
use tessera::codec::VideoCodec;
use tessera::config::Config;
use tessera::layout::LayoutSpec;
use tessera::media::frame::I420Frame;
use tessera::sdp;
use tessera::signaling::protocol::{parse_client_message, validate_name, ClientMessage};
use tessera::signaling::whip::check_offer;
use tessera::transport::keyframe::is_keyframe_request;

/// WebSocket signaling: every text frame a client sends goes through `parse_client_message`,
/// and every name through `validate_name`. Neither may panic; a name that validates must
/// validate to itself (normalisation is idempotent).
pub fn signaling_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ClientMessage::Join { name, .. }) = parse_client_message(text) {
        if let Ok(n) = validate_name(&name) {
            assert_eq!(validate_name(&n).ok().as_deref(), Some(n.as_str()));
        }
    }
    if let Ok(n) = validate_name(text) {
        assert_eq!(validate_name(&n).ok().as_deref(), Some(n.as_str()));
    }
}

/// SDP offers (WebSocket `offer` and WHIP bodies, and phones' INVITE bodies): Tessera's
/// one SDP model (`sdp::parse` and the per-section queries the session makes), the SIP
/// bridge's offer reading on it, and the `rtc-sdp` parse that
/// `RTCSessionDescription::offer` runs on the same text.
pub fn sdp_offer(data: &[u8]) {
    let _ = tessera::sip::sdp::parse_offer(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sections) = sdp::parse(text) {
        for s in &sections {
            let _ = s.writer_receives();
            let _ = s.writer_sends();
            let _ = s.video_payload_types();
            let _ = s.payload_type("opus", None);
            let _ = s.payload_type("H264", Some("packetization-mode=1"));
        }
        let _ = sdp::first(&sections, "video");
    }
    let _ = rtc::peer_connection::sdp::RTCSessionDescription::offer(text.to_owned());
}

/// WHIP `POST /whip/{room}?name=…`: everything `check_offer` decides before a room is
/// touched. Input layout: content type, room, name and body separated by the first three
/// 0xFF bytes (a name slot that is empty means "no name given").
pub fn whip_request(data: &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0xff);
    let ct = parts.next().unwrap_or_default();
    let room = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let name = parts
        .next()
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned());
    let body = parts.next().unwrap_or_default();
    if let Ok(offer) = check_offer(Some(ct), &room, name.as_deref(), body) {
        // What passed is what the handler goes on with: a valid room name, a name within
        // the protocol's bounds and the body itself.
        assert_eq!(offer.sdp.as_bytes(), body);
        assert!(!offer.name.is_empty());
        assert_eq!(offer.room.as_str().len(), offer.room.as_str().trim().len());
    }
}

/// Layout files (`layouts/*.json`, `--layouts-dir`): parse + validate, then place every
/// tile count on a range of canvas sizes. Every rectangle must lie inside the canvas with
/// even coordinates and sizes, as the compositor relies on.
pub fn layout_json(data: &[u8]) {
    // The first 4 bytes pick the canvas, the rest is the file.
    if data.len() < 4 {
        return;
    }
    let (dims, text) = data.split_at(4);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(spec) = LayoutSpec::from_json("fuzz.json", text) else {
        return;
    };
    // Output sizes the config accepts: even, 64..=3840 × 64..=2160.
    let w = 64 + 2 * (u16::from_le_bytes([dims[0], dims[1]]) as u32 % 1889);
    let h = 64 + 2 * (u16::from_le_bytes([dims[2], dims[3]]) as u32 % 1049);
    for n in 0..=spec.capacity() + 1 {
        let rects = spec.place(n, w, h);
        assert!(rects.len() <= n.min(spec.capacity()));
        for r in rects {
            assert!(r.x + r.w <= w && r.y + r.h <= h, "{r:?} outside {w}x{h}");
            assert!(
                r.x % 2 == 0 && r.y % 2 == 0 && r.w % 2 == 0 && r.h % 2 == 0,
                "{r:?} not even"
            );
        }
    }
}

/// `tessera.toml`: parse and validate. Neither may panic whatever the file holds.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        let _ = config.validate();
        let _ = config.ingest.limits();
    }
}

/// H.264 ingest: a sequence of RTP payloads through the bounded depacketiser and
/// openh264, one access unit at a time as the video loop feeds them, with the default
/// ingest limits. Input: records `[len: u16 BE][marker: u8][payload: len bytes]`; a record
/// whose marker byte is odd ends the access unit (the RTP marker bit); a truncated last
/// record keeps what is there. `fuzz_seeds` writes real streams in this form.
pub fn h264_ingest(data: &[u8]) {
    video_ingest(data, VideoCodec::H264)
}

/// Splits `data` into access units of payloads (see `h264_ingest` for the layout).
pub fn records(mut data: &[u8]) -> Vec<Vec<Bytes>> {
    let mut units = vec![Vec::new()];
    while data.len() >= 3 && units.len() <= 64 {
        let len = u16::from_be_bytes([data[0], data[1]]) as usize;
        let marker = data[2] & 1 == 1;
        let body = &data[3..];
        let take = len.min(body.len());
        let unit = units.last_mut().expect("never empty");
        if unit.len() < 512 {
            unit.push(Bytes::copy_from_slice(&body[..take]));
        }
        data = &body[take..];
        if marker {
            units.push(Vec::new());
        }
    }
    units.retain(|u| !u.is_empty());
    units
}

fn video_ingest(data: &[u8], codec: VideoCodec) {
    let mut dec = VideoDecoder::new(codec).expect("decoder");
    let mut out = I420Frame::default();
    let mut need_keyframe = true;
    for payloads in records(data) {
        match dec.decode(&payloads, need_keyframe, &mut out) {
            Ok(Decoded::Picture { .. }) => {
                need_keyframe = false;
                // The default limits: 1920x1080 in either orientation.
                assert!(out.width <= 1920 && out.height <= 1920);
                assert!(out.width * out.height <= 1920 * 1080);
            }
            Ok(Decoded::Nothing) => {}
            Err(_) => need_keyframe = true,
        }
    }
}

/// AV1 ingest: as `h264_ingest`, through the bounded AV1 depacketiser and dav1d.
pub fn av1_ingest(data: &[u8]) {
    video_ingest(data, VideoCodec::Av1)
}

/// VP8 ingest: as `h264_ingest`, through the bounded VP8 depacketiser and libvpx.
pub fn vp8_ingest(data: &[u8]) {
    video_ingest(data, VideoCodec::Vp8)
}

/// VP9 ingest: as `h264_ingest`, through the bounded VP9 depacketiser and libvpx.
pub fn vp9_ingest(data: &[u8]) {
    video_ingest(data, VideoCodec::Vp9)
}

/// RTCP from viewers: compound packets parsed by `rtc-rtcp` as the interceptor chain does,
/// then the keyframe-request filter Tessera applies to them.
pub fn rtcp_feedback(data: &[u8]) {
    let mut buf = bytes::Bytes::copy_from_slice(data);
    if let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut buf) {
        for p in &packets {
            let _ = is_keyframe_request(p.as_ref());
            let _ = p.destination_ssrc();
            let _ = p.marshal_size();
        }
    }
}
