//! SRTP keyed by SDES (RFC 4568) for phone calls: reading the caller's `a=crypto` lines,
//! making our key, writing our line, and the two SRTP contexts (RFC 3711) of a call.
//!
//! Suites: `AES_CM_128_HMAC_SHA1_80` (preferred) and `AES_CM_128_HMAC_SHA1_32`, the ones
//! every SDES phone offers. Keys travel only in SDP carried over TLS (`sips:`); the call
//! decides that ([`super::call`]). Key material is never printed: [`KeyLine`] and
//! [`Srtp`] have redacting `Debug`s and no `Display`.

use base64::Engine;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// Master key (16) + master salt (14) for the AES-128 suites.
const KEY_SALT_LEN: usize = 30;
/// Longest `a=crypto` value we read.
const MAX_LINE: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdesError {
    #[error("no crypto suite in common (we take AES_CM_128_HMAC_SHA1_80 and _32)")]
    NoSuite,
    #[error("SRTP context: {0}")]
    Context(String),
}

/// A suite we speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl Suite {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(Self::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(Self::AesCm128HmacSha1_32),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Self::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Self::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

/// One usable `a=crypto` line: its tag, suite and key||salt.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyLine {
    pub tag: u32,
    pub suite: Suite,
    key_salt: [u8; KEY_SALT_LEN],
}

impl std::fmt::Debug for KeyLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyLine({} {}, key redacted)",
            self.tag,
            self.suite.name()
        )
    }
}

impl KeyLine {
    /// Reads one `a=crypto` value: `tag suite inline:KEY[|lifetime][|MKI:len] [params]`.
    /// Lines we cannot use (other suites, MKIs, several keys, session parameters that
    /// change the transform) give `None`.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() > MAX_LINE {
            return None;
        }
        let mut parts = value.split_whitespace();
        let tag: u32 = parts.next()?.parse().ok()?;
        let suite = Suite::parse(parts.next()?)?;
        let key_params = parts.next()?;
        // Session parameters (UNENCRYPTED_SRTP, KDR, …) change the transform: refuse.
        if parts.next().is_some() || key_params.contains(';') {
            return None;
        }
        let inline = key_params.strip_prefix("inline:")?;
        let mut fields = inline.split('|');
        let b64 = fields.next()?;
        for f in fields {
            // A lifetime is fine; an MKI is not supported.
            if f.contains(':') {
                return None;
            }
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let key_salt: [u8; KEY_SALT_LEN] = bytes.try_into().ok()?;
        Some(Self {
            tag,
            suite,
            key_salt,
        })
    }

    /// The offer's first line we can use (RFC 4568 §7.1.1: in the offerer's preference).
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, SdesError> {
        values
            .into_iter()
            .find_map(Self::parse)
            .ok_or(SdesError::NoSuite)
    }

    /// Our key for the answer: the same tag and suite, fresh key and salt from the
    /// crypto provider's secure random source.
    pub fn ours(&self) -> Result<Self, SdesError> {
        let mut key_salt = [0u8; KEY_SALT_LEN];
        provider()?
            .random()
            .fill(&mut key_salt)
            .map_err(|e| SdesError::Context(e.to_string()))?;
        Ok(Self {
            tag: self.tag,
            suite: self.suite,
            key_salt,
        })
    }

    /// The `a=crypto` value (the only place a key is ever written: the SDP answer sent
    /// over TLS).
    pub fn sdp_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(self.key_salt)
        )
    }

    fn context(&self) -> Result<Context, SdesError> {
        let (key, salt) = self.key_salt.split_at(16);
        Context::new(
            key,
            salt,
            self.suite.profile(),
            // Replayed packets are refused (RFC 3711 §3.3.2), 64-packet windows.
            Some(rtc::srtp::option::srtp_replay_protection(64)),
            Some(rtc::srtp::option::srtcp_replay_protection(64)),
            provider()?.crypto(),
        )
        .map_err(|e| SdesError::Context(e.to_string()))
    }
}

/// The crypto the WebRTC stack uses (ring).
fn provider() -> Result<std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider>, SdesError> {
    rtc::crypto::default_provider().map_err(|e| SdesError::Context(e.to_string()))
}

/// A call's SRTP: the caller's key decrypts what it sends, ours encrypts what we send.
pub struct Srtp {
    inbound: Context,
    outbound: Context,
}

impl std::fmt::Debug for Srtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Srtp(keys redacted)")
    }
}

impl Srtp {
    pub fn new(theirs: &KeyLine, ours: &KeyLine) -> Result<Self, SdesError> {
        Ok(Self {
            inbound: theirs.context()?,
            outbound: ours.context()?,
        })
    }

    /// Authenticates and decrypts an SRTP packet (`None`: forged, replayed or malformed).
    pub fn unprotect_rtp(&mut self, data: &[u8]) -> Option<bytes::BytesMut> {
        self.inbound.decrypt_rtp(data).ok()
    }

    pub fn unprotect_rtcp(&mut self, data: &[u8]) -> Option<bytes::BytesMut> {
        self.inbound.decrypt_rtcp(data).ok()
    }

    pub fn protect_rtp(&mut self, data: &[u8]) -> Option<bytes::BytesMut> {
        self.outbound.encrypt_rtp(data).ok()
    }

    pub fn protect_rtcp(&mut self, data: &[u8]) -> Option<bytes::BytesMut> {
        self.outbound.encrypt_rtcp(data).ok()
    }
}

/// Why a call's media security was refused (the 488's Warning text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("SRTP keys (a=crypto) are taken only over TLS: call sips:")]
    KeysInClear,
    #[error("no SRTP crypto suite in common (we take AES_CM_128_HMAC_SHA1_80 and _32)")]
    NoSuite,
    #[error("RTP/SAVP without SDES a=crypto lines is not supported")]
    SavpWithoutKeys,
    #[error("this room requires encrypted media: call sips: with SRTP (SDES)")]
    Required,
}

/// The media-security decision for one offer (pure): `Some(their key)` for SRTP, `None`
/// for plain RTP, or a refusal. `savp`: the offer's profile is RTP/SAVP(F), i.e. SRTP is
/// mandatory for the offerer; `crypto`: its `a=crypto` values; `tls`: the INVITE came
/// over TLS; `required`: the room requires encryption.
pub fn negotiate<'a>(
    savp: bool,
    crypto: impl IntoIterator<Item = &'a str>,
    tls: bool,
    required: bool,
) -> Result<Option<KeyLine>, Refusal> {
    let crypto: Vec<&str> = crypto.into_iter().collect();
    let wants = savp || required;
    if crypto.is_empty() {
        return match (savp, required) {
            (true, _) => Err(Refusal::SavpWithoutKeys),
            (false, true) => Err(Refusal::Required),
            (false, false) => Ok(None),
        };
    }
    // Keys in clear text are already exposed: never use them, never answer ours so.
    if !tls {
        return if wants {
            Err(Refusal::KeysInClear)
        } else {
            Ok(None)
        };
    }
    match KeyLine::choose(crypto) {
        Ok(k) => Ok(Some(k)),
        Err(_) if !wants => Ok(None),
        Err(_) => Err(Refusal::NoSuite),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_table() {
        let k = [BARESIP_LINE];
        let none: [&str; 0] = [];
        let bad = ["1 F8_128_HMAC_SHA1_80 inline:x"];
        // (savp, crypto, tls, required)
        assert!(negotiate(true, k, true, false).unwrap().is_some());
        assert!(
            negotiate(false, k, true, false).unwrap().is_some(),
            "best effort"
        );
        assert!(negotiate(true, k, true, true).unwrap().is_some());
        assert_eq!(negotiate(true, k, false, false), Err(Refusal::KeysInClear));
        assert_eq!(negotiate(false, k, false, true), Err(Refusal::KeysInClear));
        assert_eq!(
            negotiate(false, k, false, false),
            Ok(None),
            "best effort over UDP"
        );
        assert_eq!(negotiate(false, none, false, false), Ok(None));
        assert_eq!(negotiate(false, none, true, true), Err(Refusal::Required));
        assert_eq!(negotiate(false, none, false, true), Err(Refusal::Required));
        assert_eq!(
            negotiate(true, none, true, false),
            Err(Refusal::SavpWithoutKeys)
        );
        assert_eq!(negotiate(true, bad, true, false), Err(Refusal::NoSuite));
        assert_eq!(negotiate(false, bad, true, false), Ok(None));
        assert_eq!(negotiate(false, bad, true, true), Err(Refusal::NoSuite));
    }

    // RFC 4568 §9.1's example key.
    const RFC_LINE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32";
    const BARESIP_LINE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:3XQ6Xdg/+6XoO/DlYqCfFnqbOZaWZX5Yp7M9rUwh";

    #[test]
    fn reads_usable_lines_and_refuses_the_rest() {
        let l = KeyLine::parse(BARESIP_LINE).unwrap();
        assert_eq!((l.tag, l.suite), (1, Suite::AesCm128HmacSha1_80));
        let l32 = BARESIP_LINE.replace("_80", "_32");
        assert_eq!(
            KeyLine::parse(&l32).unwrap().suite,
            Suite::AesCm128HmacSha1_32
        );
        // An MKI, an unknown suite, a short key, session parameters, junk.
        assert_eq!(KeyLine::parse(RFC_LINE), None);
        assert_eq!(
            KeyLine::parse(&BARESIP_LINE.replace("AES_CM_128", "F8_128")),
            None
        );
        assert_eq!(
            KeyLine::parse("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"),
            None
        );
        assert_eq!(
            KeyLine::parse(&format!("{BARESIP_LINE} UNENCRYPTED_SRTP")),
            None
        );
        assert_eq!(KeyLine::parse("x y z"), None);
        assert_eq!(KeyLine::parse(&"1 ".repeat(1000)), None);
        // A lifetime alone is fine.
        assert!(KeyLine::parse(&format!("{BARESIP_LINE}|2^31")).is_some());
    }

    #[test]
    fn chooses_the_first_usable_and_answers_with_a_fresh_key_of_the_same_tag() {
        let offer = [
            "1 AEAD_AES_256_GCM inline:xxxx",
            BARESIP_LINE,
            "3 AES_CM_128_HMAC_SHA1_32 inline:3XQ6Xdg/+6XoO/DlYqCfFnqbOZaWZX5Yp7M9rUwh",
        ];
        let theirs = KeyLine::choose(offer).unwrap();
        assert_eq!(theirs.tag, 1);
        let ours = theirs.ours().unwrap();
        assert_eq!((ours.tag, ours.suite), (theirs.tag, theirs.suite));
        assert_ne!(ours.key_salt, theirs.key_salt);
        let back = KeyLine::parse(&ours.sdp_value()).unwrap();
        assert_eq!(back, ours);
        assert_eq!(
            KeyLine::choose(["1 NULL inline:x"]),
            Err(SdesError::NoSuite)
        );
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let l = KeyLine::parse(BARESIP_LINE).unwrap();
        let shown = format!("{l:?}");
        assert!(!shown.contains("3XQ6"), "{shown}");
        let s = Srtp::new(&l, &l.ours().unwrap()).unwrap();
        assert_eq!(format!("{s:?}"), "Srtp(keys redacted)");
    }

    /// Two ends with swapped keys talk; a forged or replayed packet is refused.
    #[test]
    fn protects_and_unprotects_rtp_and_rtcp_and_refuses_forgeries() {
        let a_key = KeyLine::parse(BARESIP_LINE).unwrap();
        let b_key = a_key.ours().unwrap();
        let mut a = Srtp::new(&b_key, &a_key).unwrap();
        let mut b = Srtp::new(&a_key, &b_key).unwrap();
        let mut rtp = vec![0x80, 0, 0, 7, 0, 0, 0, 160, 1, 2, 3, 4];
        rtp.extend_from_slice(&[0x55; 160]);
        let sealed = a.protect_rtp(&rtp).unwrap();
        assert_ne!(&sealed[12..172], &rtp[12..]);
        assert_eq!(b.unprotect_rtp(&sealed).unwrap().as_ref(), &rtp[..]);
        assert!(b.unprotect_rtp(&sealed).is_none(), "replay");
        let mut forged = sealed.to_vec();
        forged[20] ^= 1;
        forged[3] = 8;
        assert!(b.unprotect_rtp(&forged).is_none(), "forgery");
        let rr = [0x80, 201, 0, 1, 1, 2, 3, 4];
        let sealed = a.protect_rtcp(&rr).unwrap();
        assert_eq!(b.unprotect_rtcp(&sealed).unwrap().as_ref(), &rr[..]);
        assert!(b.unprotect_rtcp(&rr).is_none(), "plain RTCP refused");
    }
}
