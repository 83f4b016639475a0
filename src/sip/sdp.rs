//! Plain-RTP audio offer/answer for phone calls (RFC 3264), on the one SDP model
//! ([`crate::sdp`]): what a caller's offer asks for, and our answer.

use crate::codec::voice::AudioCodec;
pub use crate::sdp::{Direction, SdpError};
use std::net::SocketAddr;

/// What we take from a caller's offer.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioOffer {
    /// Where the caller expects our RTP (`None`: hold with 0.0.0.0, or port 0).
    pub remote: Option<SocketAddr>,
    /// Supported codecs in the offerer's order of preference.
    pub codecs: Vec<(u8, AudioCodec)>,
    /// The `telephone-event/8000` payload type, if offered.
    pub dtmf: Option<u8>,
    pub direction: Direction,
    /// The profile is RTP/SAVP or RTP/SAVPF: SRTP is mandatory for the offerer.
    pub savp: bool,
    /// Its `a=crypto` values (RFC 4568).
    pub crypto: Vec<String>,
}

impl AudioOffer {
    /// The codec we answer with: the offerer's first that we support (RFC 3264 6.1).
    pub fn chosen(&self) -> Option<(u8, AudioCodec)> {
        self.codecs.first().copied()
    }

    /// Whether this offer puts the call on hold (RFC 3264 8.4; RFC 2543's 0.0.0.0 too).
    pub fn is_hold(&self) -> bool {
        self.remote.is_none() || !self.direction.writer_receives()
    }
}

pub fn parse_offer(body: &[u8]) -> Result<AudioOffer, SdpError> {
    let sections = crate::sdp::parse_bytes(body)?;
    let m = crate::sdp::first(&sections, "audio").ok_or(SdpError::NoAudio)?;
    let mut codecs = Vec::new();
    let mut dtmf = None;
    for &pt in &m.formats {
        let codec = match m.rtpmap_of(pt) {
            Some((name, 8000)) if name.eq_ignore_ascii_case("telephone-event") => {
                dtmf.get_or_insert(pt);
                continue;
            }
            Some((name, clock)) => AudioCodec::from_rtpmap(name, clock),
            None => AudioCodec::from_static_payload_type(pt),
        };
        if let Some(c) = codec {
            codecs.push((pt, c));
        }
    }
    if codecs.is_empty() {
        return Err(SdpError::NoCodec);
    }
    let ip = m.connection.ok_or(SdpError::NoAddress)?;
    let remote = (!ip.is_unspecified()).then(|| SocketAddr::new(ip, m.port));
    Ok(AudioOffer {
        remote,
        codecs,
        dtmf,
        direction: m.direction,
        savp: m.proto.to_ascii_uppercase().contains("SAVP"),
        crypto: m.crypto.clone(),
    })
}

/// Our answer: one audio m-line with the chosen codec (and telephone-event when offered),
/// 20 ms packets, on `local` (the address we send from and receive on); with SRTP, the
/// offer's profile and our `a=crypto` line.
pub fn answer(
    local: SocketAddr,
    session: (u64, u64),
    codec: (u8, AudioCodec),
    dtmf: Option<u8>,
    direction: Direction,
    srtp: Option<(&super::sdes::KeyLine, bool)>,
) -> String {
    write(local, session, &[codec], dtmf, direction, srtp)
}

/// The codecs a call we place offers, best first: Opus, G.722, G.711 µ-law and A-law.
pub const OFFERED: [(u8, AudioCodec); 4] = [
    (96, AudioCodec::Opus),
    (9, AudioCodec::G722),
    (0, AudioCodec::Pcmu),
    (8, AudioCodec::Pcma),
];
/// The payload type of telephone-event in our offers.
pub const OFFERED_DTMF: u8 = 101;

/// Our offer for a call we place (dial-out): [`OFFERED`] and telephone-event, sendrecv.
pub fn offer(local: SocketAddr, session: (u64, u64)) -> String {
    write(
        local,
        session,
        &OFFERED,
        Some(OFFERED_DTMF),
        Direction::SendRecv,
        None,
    )
}

fn write(
    local: SocketAddr,
    session: (u64, u64),
    codecs: &[(u8, AudioCodec)],
    dtmf: Option<u8>,
    direction: Direction,
    srtp: Option<(&super::sdes::KeyLine, bool)>,
) -> String {
    let ip = local.ip();
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let fmts: Vec<String> = codecs
        .iter()
        .map(|(pt, _)| pt.to_string())
        .chain(dtmf.map(|d| d.to_string()))
        .collect();
    let mut s = format!(
        "v=0\r\no=tessera {} {} IN {fam} {ip}\r\ns=Tessera\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {} {} {}\r\n",
        session.0,
        session.1,
        local.port(),
        match srtp {
            Some((_, true)) => "RTP/SAVP",
            _ => "RTP/AVP",
        },
        fmts.join(" "),
    );
    for &(pt, c) in codecs {
        s.push_str(&format!(
            "a=rtpmap:{pt} {}/{}{}\r\n",
            c.encoding_name(),
            c.rtp_clock(),
            c.rtpmap_suffix()
        ));
        if c == AudioCodec::Opus {
            s.push_str(&format!("a=fmtp:{pt} useinbandfec=1\r\n"));
        }
    }
    if let Some(d) = dtmf {
        s.push_str(&format!(
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-15\r\n"
        ));
    }
    if let Some((key, _)) = srtp {
        s.push_str(&format!("a=crypto:{}\r\n", key.sdp_value()));
    }
    // RTCP to the RTP port (RFC 3605): we tell the two apart by packet type (RFC 5761 4).
    s.push_str(&format!(
        "a=rtcp:{}\r\na=ptime:20\r\na={}\r\n",
        local.port(),
        direction.as_str()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\n\
        a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

    #[test]
    fn reads_a_sipp_offer_and_answers_with_its_first_codec() {
        let o = parse_offer(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(o.remote, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(
            o.codecs,
            vec![(8, AudioCodec::Pcma), (0, AudioCodec::Pcmu)],
            "static PT 0 without rtpmap is PCMU"
        );
        assert_eq!(o.dtmf, Some(101));
        assert!(!o.is_hold());
        let a = answer(
            "127.0.0.1:7000".parse().unwrap(),
            (1, 1),
            o.chosen().unwrap(),
            o.dtmf,
            o.direction.answer(),
            None,
        );
        // Our own answer reads back through the same model.
        let back = parse_offer(a.as_bytes()).unwrap();
        assert_eq!(back.codecs, vec![(8, AudioCodec::Pcma)]);
        assert_eq!(back.dtmf, Some(101));
        assert_eq!(back.remote, Some("127.0.0.1:7000".parse().unwrap()));
    }

    #[test]
    fn an_srtp_offer_reads_its_profile_and_keys_and_the_answer_carries_ours() {
        let offer = SIPP_OFFER.replace("RTP/AVP 8 0 101", "RTP/SAVP 0").replace(
            "a=rtpmap:8 PCMA/8000\r\n",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:3XQ6Xdg/+6XoO/DlYqCfFnqbOZaWZX5Yp7M9rUwh\r\n",
        );
        let o = parse_offer(offer.as_bytes()).unwrap();
        assert!(o.savp);
        assert_eq!(o.crypto.len(), 1);
        let theirs =
            super::super::sdes::KeyLine::choose(o.crypto.iter().map(String::as_str)).unwrap();
        let ours = theirs.ours().unwrap();
        let a = answer(
            "127.0.0.1:7000".parse().unwrap(),
            (1, 1),
            o.chosen().unwrap(),
            None,
            o.direction.answer(),
            Some((&ours, true)),
        );
        assert!(a.contains("m=audio 7000 RTP/SAVP 0\r\n"), "{a}");
        let back = parse_offer(a.as_bytes()).unwrap();
        assert!(back.savp);
        assert_eq!(back.crypto, vec![ours.sdp_value()]);
        assert!(!parse_offer(SIPP_OFFER.as_bytes()).unwrap().savp);
    }

    #[test]
    fn our_offer_reads_back_with_every_codec_in_order() {
        let o = offer("127.0.0.1:7000".parse().unwrap(), (5, 1));
        let back = parse_offer(o.as_bytes()).unwrap();
        assert_eq!(back.codecs, OFFERED.to_vec());
        assert_eq!(back.dtmf, Some(OFFERED_DTMF));
        assert_eq!(back.direction, Direction::SendRecv);
        assert_eq!(back.remote, Some("127.0.0.1:7000".parse().unwrap()));
    }

    #[test]
    fn hold_offers_and_bad_offers() {
        let hold = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        let o = parse_offer(hold.as_bytes()).unwrap();
        assert!(o.is_hold());
        assert_eq!(o.direction.answer(), Direction::RecvOnly);
        let old_hold = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        assert!(parse_offer(old_hold.as_bytes()).unwrap().is_hold());
        let video_only = SIPP_OFFER.replace("m=audio", "m=video");
        assert_eq!(parse_offer(video_only.as_bytes()), Err(SdpError::NoAudio));
        let g729 = SIPP_OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 18");
        assert_eq!(parse_offer(g729.as_bytes()), Err(SdpError::NoCodec));
        assert_eq!(parse_offer(b"garbage"), Err(SdpError::NotSdp));
        assert!(matches!(
            parse_offer(b"v=0\r\ns=-\r\n"),
            Err(SdpError::Parse(_))
        ));
        assert!(matches!(
            parse_offer(&[0xff, 0xfe]),
            Err(SdpError::Parse(_))
        ));
        assert_eq!(
            parse_offer(&vec![b'a'; crate::sdp::MAX_SDP_BYTES + 1]),
            Err(SdpError::TooLarge(crate::sdp::MAX_SDP_BYTES + 1))
        );
        let opus = SIPP_OFFER
            .replace("RTP/AVP 8 0 101", "RTP/AVP 96 9")
            .replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:96 opus/48000/2");
        let o = parse_offer(opus.as_bytes()).unwrap();
        assert_eq!(
            o.codecs,
            vec![(96, AudioCodec::Opus), (9, AudioCodec::G722)]
        );
        assert_eq!(o.dtmf, None);
    }
}
