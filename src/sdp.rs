//! The one SDP model (RFC 4566, RFC 8866), for every way in: WebRTC offers and answers
//! (the `webrtc` stack does the real negotiation; the MCU reads its decisions here) and
//! phone calls' plain-RTP offers (`sip::sdp` builds its offer/answer on these sections).
//! Parsing is `rtc::sdp`'s; this module keeps, per m-section, what Tessera decides on:
//! kind, mid, direction, port, connection address, payload types in order, rtpmap, fmtp,
//! header-extension ids and SDES crypto lines.

use crate::codec::VideoCodec;
use rtc::sdp::description::session::SessionDescription;
use std::collections::HashMap;
use std::net::IpAddr;

pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Largest SDP read from a peer.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Media direction, from the point of view of the SDP's writer (RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn from_attr(key: &str) -> Option<Self> {
        match key {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    /// The answer's direction for this offer (RFC 3264 §6.1).
    pub fn answer(self) -> Self {
        match self {
            Self::SendRecv => Self::SendRecv,
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            Self::Inactive => Self::Inactive,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// Whether the writer wants to receive media.
    pub fn writer_receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }

    /// Whether the writer will send media.
    pub fn writer_sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct MediaSection {
    pub kind: String,
    pub mid: Option<String>,
    pub direction: Direction,
    /// Port 0 = rejected section, unless `bundle_only`.
    pub port: u16,
    /// `a=bundle-only` (RFC 8843 §6): port 0 in an offer, yet a live section carried on
    /// the bundle's transport (Firefox marks every m-line after the first so under
    /// `max-bundle`).
    pub bundle_only: bool,
    /// The transport protocol (`RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, …).
    pub proto: String,
    /// The connection address (`c=`, the section's or else the session's).
    pub connection: Option<IpAddr>,
    /// Payload types in the m-line's order (the writer's preference).
    pub formats: Vec<u8>,
    /// (payload type, encoding name, clock rate), in the m-line's order.
    pub rtpmap: Vec<(u8, String, u32)>,
    pub fmtp: HashMap<u8, String>,
    pub extmap: HashMap<String, u8>,
    /// `a=crypto` values (RFC 4568), in order.
    pub crypto: Vec<String>,
    /// `a=content:` (RFC 4796): `slides` marks a presenter's content, not a camera.
    pub content: Option<String>,
}

/// The value of `key` in an fmtp line (`a=1;key=value`).
pub fn fmtp_value<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
}

impl MediaSection {
    /// A presenter's content (`a=content:slides`, RFC 4796), not a camera.
    pub fn is_content(&self) -> bool {
        self.kind == "video"
            && self
                .content
                .as_deref()
                .is_some_and(|c| c.split(',').any(|v| v.trim() == "slides"))
    }

    /// Not rejected: a port, or bundle-only.
    pub fn is_live(&self) -> bool {
        self.port != 0 || self.bundle_only
    }
    /// Whether the writer of this SDP will receive media on this section.
    pub fn writer_receives(&self) -> bool {
        self.is_live() && self.direction.writer_receives()
    }
    /// Whether the writer of this SDP will send media on this section.
    pub fn writer_sends(&self) -> bool {
        self.is_live() && self.direction.writer_sends()
    }

    /// Payload types of ingestible video codecs.
    pub fn video_payload_types(&self) -> HashMap<u8, VideoCodec> {
        self.rtpmap
            .iter()
            .filter_map(|(pt, name, _)| VideoCodec::from_encoding_name(name).map(|c| (*pt, c)))
            .filter(|(pt, c)| {
                let fmtp = self.fmtp.get(pt).map(String::as_str).unwrap_or("");
                match c {
                    VideoCodec::H264 => fmtp.contains("packetization-mode=1"),
                    // 8-bit 4:2:0 only (profile 0, the default).
                    VideoCodec::Vp9 => fmtp_value(fmtp, "profile-id").is_none_or(|v| v == "0"),
                    _ => true,
                }
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

    /// The rtpmap entry of a payload type.
    pub fn rtpmap_of(&self, pt: u8) -> Option<(&str, u32)> {
        self.rtpmap
            .iter()
            .find(|(p, _, _)| *p == pt)
            .map(|(_, n, c)| (n.as_str(), *c))
    }
}

/// Why an SDP was refused (for a WebRTC offer, before it reaches the WebRTC stack; for a
/// phone's offer, the 488's Warning).
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
    #[error("no audio m-line")]
    NoAudio,
    #[error("no audio codec in common (we take PCMU, PCMA, G722, opus)")]
    NoCodec,
    #[error("no usable connection address")]
    NoAddress,
    #[error("{0}")]
    Crypto(String),
}

/// Parses an SDP body (bytes off the wire) into its m-sections.
pub fn parse_bytes(body: &[u8]) -> Result<Vec<MediaSection>, SdpError> {
    if body.len() > MAX_SDP_BYTES {
        return Err(SdpError::TooLarge(body.len()));
    }
    parse(std::str::from_utf8(body).map_err(|_| SdpError::Parse("not UTF-8".into()))?)
}

/// Parses the m-sections of an SDP.
pub fn parse(sdp: &str) -> Result<Vec<MediaSection>, SdpError> {
    if sdp.trim().is_empty() {
        return Err(SdpError::Empty);
    }
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SdpError::TooLarge(sdp.len()));
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(SdpError::NotSdp);
    }
    let sd = SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.trim_start().as_bytes()))
        .map_err(|e| SdpError::Parse(e.to_string()))?;
    let direction_of = |attrs: &[rtc::sdp::description::common::Attribute]| {
        attrs.iter().find_map(|a| Direction::from_attr(&a.key))
    };
    let address = |c: Option<&rtc::sdp::description::common::ConnectionInformation>| {
        c.and_then(|c| c.address.as_ref())
            .and_then(|a| a.address.parse::<IpAddr>().ok())
    };
    let session_direction = direction_of(&sd.attributes).unwrap_or_default();
    let session_address = address(sd.connection_information.as_ref());
    let sections: Vec<MediaSection> = sd
        .media_descriptions
        .iter()
        .map(|m| {
            let formats: Vec<u8> = m
                .media_name
                .formats
                .iter()
                .filter_map(|f| f.parse().ok())
                .collect();
            let mut codecs: Vec<_> = m.codecs().into_values().collect();
            codecs.sort_by_key(|c| {
                formats
                    .iter()
                    .position(|f| *f == c.payload_type)
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
                direction: direction_of(&m.attributes).unwrap_or(session_direction),
                port: u16::try_from(m.media_name.port.value).unwrap_or(0),
                bundle_only: m.attributes.iter().any(|a| a.key == "bundle-only"),
                proto: m.media_name.protos.join("/"),
                connection: address(m.connection_information.as_ref()).or(session_address),
                formats,
                fmtp: codecs
                    .iter()
                    .filter(|c| !c.fmtp.is_empty())
                    .map(|c| (c.payload_type, c.fmtp.clone()))
                    .collect(),
                rtpmap: codecs
                    .into_iter()
                    .map(|c| (c.payload_type, c.name, c.clock_rate))
                    .collect(),
                extmap,
                crypto: m
                    .attributes
                    .iter()
                    .filter(|a| a.key == "crypto")
                    .filter_map(|a| a.value.clone())
                    .collect(),
                content: m
                    .attribute("content")
                    .flatten()
                    .map(|v| v.trim().to_ascii_lowercase()),
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

/// The first live section of a kind (for video, the first camera: content sections are
/// found with [`content`]).
pub fn first<'a>(sections: &'a [MediaSection], kind: &str) -> Option<&'a MediaSection> {
    sections
        .iter()
        .find(|s| s.kind == kind && s.is_live() && !s.is_content())
}

/// The live content sections (`a=content:slides`) the writer sends.
pub fn contents(sections: &[MediaSection]) -> impl Iterator<Item = &MediaSection> {
    sections
        .iter()
        .filter(|s| s.is_content() && s.writer_sends())
}

/// The first of [`contents`].
pub fn content(sections: &[MediaSection]) -> Option<&MediaSection> {
    contents(sections).next()
}

/// `sdp` with `a=content:slides` added to the m-section whose mid is `mid` (an answer
/// echoes the offer's content attribute, RFC 4796).
pub fn mark_content(sdp: &str, mid: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 24);
    let want = format!("a=mid:{mid}");
    for line in sdp.split_inclusive('\n') {
        out.push_str(line);
        if line.trim_end() == want {
            out.push_str("a=content:slides\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 45 98 100\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\na=rtpmap:100 VP9/90000\r\na=fmtp:100 profile-id=2\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:45 AV1/90000\r\n";

    #[test]
    fn content_sections_are_not_cameras() {
        let offer = format!(
            "{OFFER}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\na=content:slides\r\na=rtpmap:96 VP8/90000\r\n"
        );
        let s = parse(&offer).unwrap();
        assert_eq!(first(&s, "video").unwrap().mid.as_deref(), Some("1"));
        let c = content(&s).unwrap();
        assert_eq!(c.mid.as_deref(), Some("2"));
        assert!(c.is_content() && !s[1].is_content());
        assert!(content(&parse(OFFER).unwrap()).is_none());
        let marked = mark_content("v=0\r\nm=video 9 X 96\r\na=mid:2\r\na=recvonly\r\n", "2");
        assert_eq!(
            marked,
            "v=0\r\nm=video 9 X 96\r\na=mid:2\r\na=content:slides\r\na=recvonly\r\n"
        );
    }

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
        assert_eq!(v.direction, Direction::SendOnly);
        assert_eq!(v.formats, [96, 102, 45, 98, 100]);
        assert_eq!(v.proto, "UDP/TLS/RTP/SAVPF");
        assert_eq!(v.rtpmap_of(102), Some(("H264", 90_000)));
        let pts = v.video_payload_types();
        assert_eq!(pts.get(&102), Some(&VideoCodec::H264));
        assert_eq!(pts.get(&45), Some(&VideoCodec::Av1));
        assert_eq!(pts.get(&96), Some(&VideoCodec::Vp8));
        assert_eq!(pts.get(&98), Some(&VideoCodec::Vp9));
        assert_eq!(
            pts.get(&100),
            None,
            "VP9 profile 2 (10-bit) is not ingested"
        );
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

    #[test]
    fn a_bundle_only_section_is_live_though_its_port_is_zero() {
        // Firefox under max-bundle: every m-line after the first has port 0 and
        // a=bundle-only (RFC 8843).
        let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 109\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\na=mid:0\r\na=rtpmap:109 opus/48000/2\r\nm=video 0 UDP/TLS/RTP/SAVPF 120\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\na=sendrecv\r\na=mid:1\r\na=rtpmap:120 VP8/90000\r\nm=video 0 UDP/TLS/RTP/SAVPF 120\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\na=mid:2\r\na=rtpmap:120 VP8/90000\r\n";
        let s = parse(offer).unwrap();
        let v = first(&s, "video").unwrap();
        assert!(v.bundle_only && v.is_live() && v.writer_receives() && v.writer_sends());
        assert_eq!(v.mid.as_deref(), Some("1"));
        assert!(!s[2].is_live(), "port 0 without bundle-only is rejected");
    }
}
