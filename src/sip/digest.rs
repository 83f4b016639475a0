//! SIP digest authentication for calls we place (RFC 3261 §22.4, RFC 8760): reading a
//! `WWW-Authenticate`/`Proxy-Authenticate` challenge and writing the matching
//! `Authorization`/`Proxy-Authorization`, with MD5 or SHA-256 and `qop=auth`.
//!
//! Ours rather than the SIP stack's because the stack reads RFC 8760's `SHA-256` token as
//! an error (it takes only `SHA256`), which fails every SHA-256 challenge from a standard
//! server. Pure: the client nonce comes in as an argument.

use md5::Digest as _;

/// Longest challenge header value read.
const MAX_CHALLENGE: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        fn hex(bytes: &[u8]) -> String {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        match self {
            Self::Md5 => hex(&md5::Md5::digest(data.as_bytes())),
            Self::Sha256 => hex(&sha2::Sha256::digest(data.as_bytes())),
        }
    }
}

/// What a challenge asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered `qop=auth` (else the RFC 2069 form).
    pub qop_auth: bool,
}

/// Splits `a=b, c="d, e"` into pairs (quoted values may hold commas).
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            value = q[..end].to_owned();
            rest = q.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',');
        out.push((key, value));
    }
    out
}

impl Challenge {
    /// Reads a `Digest …` challenge; `None` for other schemes, algorithms we do not speak
    /// (`-sess`, SHA-512-256), or a missing realm or nonce.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() > MAX_CHALLENGE {
            return None;
        }
        let v = value.trim();
        let scheme_end = v.find(char::is_whitespace)?;
        if !v[..scheme_end].eq_ignore_ascii_case("digest") {
            return None;
        }
        let (mut realm, mut nonce, mut opaque) = (None, None, None);
        let mut algorithm = Algorithm::Md5;
        let mut qop_auth = false;
        for (k, val) in params(&v[scheme_end..]) {
            match k.as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "opaque" => opaque = Some(val),
                "algorithm" => {
                    algorithm = match val.to_ascii_uppercase().as_str() {
                        "MD5" => Algorithm::Md5,
                        "SHA-256" => Algorithm::Sha256,
                        _ => return None,
                    }
                }
                "qop" => {
                    qop_auth = val
                        .split(',')
                        .any(|q| q.trim().eq_ignore_ascii_case("auth"))
                }
                _ => {}
            }
        }
        Some(Self {
            realm: realm?,
            nonce: nonce?,
            opaque,
            algorithm,
            qop_auth,
        })
    }

    /// The credentials header value answering this challenge for one request.
    pub fn answer(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let a = self.algorithm;
        let ha1 = a.hash(&format!("{user}:{}:{password}", self.realm));
        let ha2 = a.hash(&format!("{method}:{uri}"));
        let nc = "00000001";
        let response = if self.qop_auth {
            a.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            a.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}",
            self.realm,
            self.nonce,
            a.token()
        );
        if self.qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(o) = &self.opaque {
            out.push_str(&format!(", opaque=\"{o}\""));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1's example (the same digest computation as SIP's).
    const RFC7616: &str = "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
        algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
        opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";

    #[test]
    fn answers_rfc_7616s_example_with_sha_256_and_md5() {
        let c = Challenge::parse(RFC7616).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(c.qop_auth);
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let a = c.answer("Mufasa", "Circle of Life", "GET", "/dir/index.html", cnonce);
        assert!(
            a.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{a}"
        );
        assert!(a.contains("algorithm=SHA-256") && a.contains("opaque=\"FQhe"));
        let md5 = Challenge::parse(&RFC7616.replace("SHA-256", "MD5")).unwrap();
        let a = md5.answer("Mufasa", "Circle of Life", "GET", "/dir/index.html", cnonce);
        assert!(
            a.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""),
            "{a}"
        );
    }

    #[test]
    fn rfc_2069_form_without_qop_and_refusals() {
        let c = Challenge::parse("Digest realm=\"r\",nonce=\"n\"").unwrap();
        assert_eq!((c.algorithm, c.qop_auth), (Algorithm::Md5, false));
        let a = c.answer("u", "p", "INVITE", "sip:bob@x", "c");
        let ha1 = Algorithm::Md5.hash("u:r:p");
        let ha2 = Algorithm::Md5.hash("INVITE:sip:bob@x");
        let want = Algorithm::Md5.hash(&format!("{ha1}:n:{ha2}"));
        assert!(a.contains(&want) && !a.contains("qop"), "{a}");
        assert_eq!(Challenge::parse("Basic realm=\"r\""), None);
        assert_eq!(Challenge::parse("Digest realm=\"r\""), None, "no nonce");
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess"),
            None
        );
        assert_eq!(Challenge::parse(&"Digest a=b,".repeat(500)), None);
        let _ = Challenge::parse("Digest ,,,=\"");
    }
}
