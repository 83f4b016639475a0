//! Just enough SDP reading for the MCU's decisions (the `webrtc` stack does the real
//! negotiation): per m-section its kind, mid, direction, payload types and header-extension
//! ids. Pure string processing, tolerant of anything it does not understand.

use crate::codec::VideoCodec;
use std::collections::HashMap;

pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

#[derive(Debug, Default, Clone, PartialEq)]
pub struct MediaSection {
    pub kind: String,
    pub mid: Option<String>,
    /// `sendrecv`, `sendonly`, `recvonly` or `inactive` (from the writer's point of view).
    pub direction: String,
    /// Port 0 = rejected section.
    pub port: u32,
    pub rtpmap: Vec<(u8, String, String)>,
    pub fmtp: HashMap<u8, String>,
    pub extmap: HashMap<String, u8>,
}

impl MediaSection {
    /// Whether the writer of this SDP will receive media on this section.
    pub fn writer_receives(&self) -> bool {
        self.port != 0 && matches!(self.direction.as_str(), "sendrecv" | "recvonly")
    }
    /// Whether the writer of this SDP will send media on this section.
    pub fn writer_sends(&self) -> bool {
        self.port != 0 && matches!(self.direction.as_str(), "sendrecv" | "sendonly")
    }

    /// Payload types of ingestible video codecs.
    pub fn video_payload_types(&self) -> HashMap<u8, VideoCodec> {
        self.rtpmap
            .iter()
            .filter_map(|(pt, name, _)| VideoCodec::from_encoding_name(name).map(|c| (*pt, c)))
            .filter(|(pt, c)| {
                *c != VideoCodec::H264
                    || self
                        .fmtp
                        .get(pt)
                        .is_some_and(|f| f.contains("packetization-mode=1"))
            })
            .collect()
    }

    /// First payload type with this encoding name (and, if given, fmtp fragment).
    pub fn payload_type(&self, name: &str, fmtp_contains: Option<&str>) -> Option<u8> {
        self.rtpmap
            .iter()
            .find(|(pt, n, _)| {
                n.eq_ignore_ascii_case(name)
                    && fmtp_contains
                        .is_none_or(|f| self.fmtp.get(pt).is_some_and(|x| x.contains(f)))
            })
            .map(|(pt, _, _)| *pt)
    }
}

/// Why an SDP was refused before it reached the WebRTC stack.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is empty")]
    Empty,
    #[error("SDP is too large ({0} bytes, limit 64 KiB)")]
    TooLarge(usize),
    #[error("not an SDP: it must start with `v=0`")]
    NotSdp,
    #[error("SDP has no audio or video m-section")]
    NoMedia,
}

/// Parses the m-sections of an SDP.
pub fn parse(sdp: &str) -> Result<Vec<MediaSection>, SdpError> {
    if sdp.trim().is_empty() {
        return Err(SdpError::Empty);
    }
    if sdp.len() > 64 * 1024 {
        return Err(SdpError::TooLarge(sdp.len()));
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(SdpError::NotSdp);
    }
    let mut sections: Vec<MediaSection> = Vec::new();
    let mut session_direction = "sendrecv".to_owned();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let kind = parts.next().unwrap_or("").to_owned();
            let port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            sections.push(MediaSection {
                kind,
                port,
                direction: session_direction.clone(),
                ..Default::default()
            });
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
        let Some(cur) = sections.last_mut() else {
            if matches!(name, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                session_direction = name.to_owned();
            }
            continue;
        };
        match name {
            "mid" => cur.mid = Some(value.to_owned()),
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => cur.direction = name.to_owned(),
            "rtpmap" => {
                if let Some((pt, rest)) = value.split_once(' ') {
                    if let Ok(pt) = pt.parse() {
                        let (enc, clock) = rest.split_once('/').unwrap_or((rest, ""));
                        cur.rtpmap.push((pt, enc.to_owned(), clock.to_owned()));
                    }
                }
            }
            "fmtp" => {
                if let Some((pt, rest)) = value.split_once(' ') {
                    if let Ok(pt) = pt.parse() {
                        cur.fmtp.insert(pt, rest.to_owned());
                    }
                }
            }
            "extmap" => {
                if let Some((id, rest)) = value.split_once(' ') {
                    let id = id.split('/').next().and_then(|i| i.parse().ok());
                    if let (Some(id), Some(uri)) = (id, rest.split_whitespace().next()) {
                        cur.extmap.insert(uri.to_owned(), id);
                    }
                }
            }
            _ => {}
        }
    }
    if !sections
        .iter()
        .any(|s| s.kind == "audio" || s.kind == "video")
    {
        return Err(SdpError::NoMedia);
    }
    Ok(sections)
}

/// The first section of a kind.
pub fn first<'a>(sections: &'a [MediaSection], kind: &str) -> Option<&'a MediaSection> {
    sections.iter().find(|s| s.kind == kind && s.port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 45\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:45 AV1/90000\r\n";

    #[test]
    fn reads_sections() {
        let s = parse(OFFER).unwrap();
        assert_eq!(s.len(), 2);
        let a = first(&s, "audio").unwrap();
        assert_eq!(a.mid.as_deref(), Some("0"));
        assert_eq!(a.extmap.get(AUDIO_LEVEL_URI), Some(&1));
        assert!(a.writer_receives() && a.writer_sends());
        assert_eq!(a.payload_type("opus", None), Some(111));
        let v = first(&s, "video").unwrap();
        assert!(!v.writer_receives() && v.writer_sends());
        let pts = v.video_payload_types();
        assert_eq!(pts.get(&102), Some(&VideoCodec::H264));
        assert_eq!(pts.get(&45), Some(&VideoCodec::Av1));
        assert_eq!(pts.get(&96), None);
        assert_eq!(
            v.payload_type("H264", Some("packetization-mode=1")),
            Some(102)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(""), Err(SdpError::Empty));
        assert_eq!(parse("hello"), Err(SdpError::NotSdp));
        assert_eq!(parse("v=0\r\ns=-\r\n"), Err(SdpError::NoMedia));
        assert!(matches!(
            parse(&format!("v=0\n{}", "a".repeat(70_000))),
            Err(SdpError::TooLarge(_))
        ));
        // Odd but harmless lines do not panic.
        let _ = parse("v=0\nm=\na=rtpmap:\na=fmtp:x\na=extmap:/ \nm=video x\n");
    }
}
