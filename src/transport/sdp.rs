//! Just enough SDP reading for the MCU's decisions (the `webrtc` stack does the real
//! negotiation): per m-section its kind, mid, direction, payload types and header-extension
//! ids, read from `rtc::sdp`'s session description (one SDP model for WebRTC and SIP).

use crate::codec::VideoCodec;
use rtc::sdp::description::session::SessionDescription;
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
    #[error("unparsable SDP: {0}")]
    Parse(String),
}

/// Parses the m-sections of an SDP (with `rtc::sdp`, the model the WebRTC stack and the
/// SIP bridge use too).
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
    let sd = SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.trim_start().as_bytes()))
        .map_err(|e| SdpError::Parse(e.to_string()))?;
    let direction_of = |attrs: &[rtc::sdp::description::common::Attribute]| {
        attrs
            .iter()
            .map(|a| a.key.as_str())
            .find(|k| matches!(*k, "sendrecv" | "sendonly" | "recvonly" | "inactive"))
            .map(str::to_owned)
    };
    let session_direction = direction_of(&sd.attributes).unwrap_or_else(|| "sendrecv".into());
    let sections: Vec<MediaSection> = sd
        .media_descriptions
        .iter()
        .map(|m| {
            let mut codecs: Vec<_> = m.codecs().into_values().collect();
            codecs.sort_by_key(|c| {
                m.media_name
                    .formats
                    .iter()
                    .position(|f| f.parse() == Ok(c.payload_type))
                    .unwrap_or(usize::MAX)
            });
            let extmap = m
                .attributes
                .iter()
                .filter(|a| a.key == "extmap")
                .filter_map(|a| {
                    let v = a.value.as_deref()?;
                    let (id, rest) = v.split_once(' ')?;
                    let id = id.split('/').next()?.parse().ok()?;
                    Some((rest.split_whitespace().next()?.to_owned(), id))
                })
                .collect();
            MediaSection {
                kind: m.media_name.media.clone(),
                mid: m.attribute("mid").flatten().map(str::to_owned),
                direction: direction_of(&m.attributes).unwrap_or_else(|| session_direction.clone()),
                port: u32::try_from(m.media_name.port.value).unwrap_or(0),
                fmtp: codecs
                    .iter()
                    .filter(|c| !c.fmtp.is_empty())
                    .map(|c| (c.payload_type, c.fmtp.clone()))
                    .collect(),
                rtpmap: codecs
                    .into_iter()
                    .map(|c| (c.payload_type, c.name, c.clock_rate.to_string()))
                    .collect(),
                extmap,
            }
        })
        .collect();
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
        assert_eq!(
            parse("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"),
            Err(SdpError::NoMedia)
        );
        assert!(matches!(parse("v=0\r\ns=-\r\n"), Err(SdpError::Parse(_))));
        assert!(matches!(
            parse(&format!("v=0\n{}", "a".repeat(70_000))),
            Err(SdpError::TooLarge(_))
        ));
        // Odd but harmless lines do not panic.
        let _ = parse("v=0\nm=\na=rtpmap:\na=fmtp:x\na=extmap:/ \nm=video x\n");
    }
}
