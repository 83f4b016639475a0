//! Who may do what: signed access tokens (HS256 JWT with expiry) carrying a room, an
//! identity and grants; the admin key; and the `Origin` allow-list that keeps other web
//! pages from driving a user's browser against the server. Pure: `now` is an argument,
//! nothing here touches a socket, so every rule is unit-tested directly.
//!
//! Two modes. **Open** (no API secret; only allowed when every listener is on loopback, or
//! with `--insecure`): joins and the control API need no credentials, as in a developer's
//! checkout. **Tokens** (an API secret is configured): a join needs a token for that room
//! with the `join` grant; the control API needs the admin key or a token with the `admin`
//! grant (room routes also take a token for that room with `moderator` or `record`). The
//! Origin rule applies in both modes.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shortest API secret accepted (bytes): HS256 with a short secret can be brute-forced
/// from one token.
pub const MIN_SECRET_BYTES: usize = 32;
/// Shortest admin key accepted (bytes).
pub const MIN_ADMIN_KEY_BYTES: usize = 24;
/// Longest token lifetime `tessera token` issues.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Clock skew tolerated on `exp`/`nbf`.
const LEEWAY_S: u64 = 30;
/// Longest token accepted at all (a bearer header or a join field).
const MAX_TOKEN_BYTES: usize = 4096;

/// What a token allows. Absent fields are `false`, except `publish`/`subscribe` which a
/// `join` token has unless it says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Grants {
    /// May join the room (WebSocket, WHIP).
    pub join: bool,
    /// Its audio and video reach the room.
    pub publish: bool,
    /// Receives the room's composite and mix; alone (without `join`), may watch the room
    /// (WHEP, HLS).
    pub subscribe: bool,
    /// Is a moderator of the room (mute, kick, lock, PIN).
    pub moderator: bool,
    /// May start and stop the room's recording.
    pub record: bool,
    /// Everything, every room, the control API, metrics and the dashboard.
    pub admin: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            join: false,
            publish: true,
            subscribe: true,
            moderator: false,
            record: false,
            admin: false,
        }
    }
}

/// The signed payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Identity (who the token was issued to).
    pub sub: String,
    /// Display name; when present the participant is shown with it, whatever it asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The one room the token is for; absent only on admin tokens (every room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub iat: u64,
    pub exp: u64,
    #[serde(default)]
    pub grants: Grants,
}

/// Why a request is refused. `Unauthenticated` (401) when no usable credential came,
/// `Forbidden` (403) when it came and does not allow this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an access token is required (Authorization: Bearer …)")]
    Missing,
    #[error("invalid access token: {0}")]
    Invalid(String),
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is for room `{0}`")]
    WrongRoom(String),
    #[error("the access token does not grant `{0}`")]
    NotGranted(&'static str),
    #[error("origin `{0}` is not allowed")]
    Origin(String),
}

impl AuthError {
    /// 401 for a missing or unusable credential, 403 for one that does not allow this.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::Missing | Self::Invalid(_) | Self::Expired)
    }
}

/// What a successful join check allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGrant {
    /// The name the token imposes, if any.
    pub name: Option<String>,
    pub moderator: bool,
    pub publish: bool,
    pub subscribe: bool,
    /// The token was checked for this room: the room's PIN is not asked again.
    pub skips_pin: bool,
}

impl JoinGrant {
    fn open() -> Self {
        Self {
            name: None,
            moderator: false,
            publish: true,
            subscribe: true,
            skips_pin: false,
        }
    }
}

/// A room-scoped right on the control API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomRight {
    Moderate,
    Record,
}

/// The server's credentials and rules; built once from the configuration.
pub struct Access {
    keys: Option<(EncodingKey, DecodingKey)>,
    admin_key: Option<String>,
    origins: Vec<String>,
    any_origin: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.keys.is_some())
            .field("admin_key", &self.admin_key.is_some())
            .field("origins", &self.origins)
            .finish()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Access {
    /// `secret`: the API secret (tokens mode) or `None` (open mode). `origins`: extra
    /// allowed origins (`scheme://host[:port]`, or `*` for any).
    pub fn new(secret: Option<&str>, admin_key: Option<&str>, origins: &[String]) -> Self {
        let keys = secret.map(|s| {
            (
                EncodingKey::from_secret(s.as_bytes()),
                DecodingKey::from_secret(s.as_bytes()),
            )
        });
        Self {
            keys,
            admin_key: admin_key.map(str::to_owned),
            any_origin: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Open mode: nothing is asked for (loopback development).
    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// Signs `claims` (tokens mode only).
    pub fn issue(&self, claims: &Claims) -> Option<String> {
        let (enc, _) = self.keys.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, enc).ok()
    }

    /// Checks signature, algorithm and expiry at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let Some((_, dec)) = &self.keys else {
            return Err(AuthError::Invalid("this server issues no tokens".into()));
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("too long".into()));
        }
        let mut v = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the caller's `now`, not the library's clock.
        v.validate_exp = false;
        v.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        let data = jsonwebtoken::decode::<Claims>(token, dec, &v)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let c = data.claims;
        if c.exp.saturating_add(LEEWAY_S) < now {
            return Err(AuthError::Expired);
        }
        if c.iat > now.saturating_add(LEEWAY_S) {
            return Err(AuthError::Invalid("issued in the future".into()));
        }
        Ok(c)
    }

    /// The claims of a valid token for `room` (or for every room: an admin token);
    /// `None` for the admin key.
    fn for_room(
        &self,
        token: Option<&str>,
        room: &str,
        now: u64,
    ) -> Result<Option<Claims>, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        if self.is_admin_key(token) {
            return Ok(None);
        }
        let c = self.verify(token, now)?;
        match &c.room {
            Some(r) if r != room => Err(AuthError::WrongRoom(r.clone())),
            None if !c.grants.admin => Err(AuthError::Invalid("no room in the token".into())),
            _ => Ok(Some(c)),
        }
    }

    /// May the holder of `token` join `room`? Open mode: yes, whatever is given.
    pub fn authorize_join(
        &self,
        token: Option<&str>,
        room: &str,
        now: u64,
    ) -> Result<JoinGrant, AuthError> {
        if self.is_open() {
            return Ok(JoinGrant::open());
        }
        let Some(c) = self.for_room(token, room, now)? else {
            // The operator: any room, as a moderator, under the name it gives.
            return Ok(JoinGrant {
                moderator: true,
                skips_pin: true,
                ..JoinGrant::open()
            });
        };
        let g = c.grants;
        if !(g.join || g.admin) {
            return Err(AuthError::NotGranted("join"));
        }
        Ok(JoinGrant {
            name: c.name,
            moderator: g.moderator || g.admin,
            publish: g.publish || g.admin,
            subscribe: g.subscribe || g.admin,
            skips_pin: true,
        })
    }

    /// May the holder of `token` watch `room` (WHEP, HLS)? A token for the room that
    /// grants `subscribe` (or `admin`), or the admin key. Open mode: yes.
    pub fn authorize_watch(
        &self,
        token: Option<&str>,
        room: &str,
        now: u64,
    ) -> Result<JoinGrant, AuthError> {
        if self.is_open() {
            return Ok(JoinGrant::open());
        }
        let Some(c) = self.for_room(token, room, now)? else {
            return Ok(JoinGrant {
                skips_pin: true,
                ..JoinGrant::open()
            });
        };
        let g = c.grants;
        if !(g.subscribe || g.admin) {
            return Err(AuthError::NotGranted("subscribe"));
        }
        Ok(JoinGrant {
            name: c.name,
            moderator: false,
            publish: false,
            subscribe: true,
            skips_pin: true,
        })
    }

    /// Is `bearer` the admin key or an admin token? Open mode: yes.
    pub fn authorize_admin(&self, bearer: Option<&str>, now: u64) -> Result<(), AuthError> {
        if self.is_open() {
            return Ok(());
        }
        let bearer = bearer.ok_or(AuthError::Missing)?;
        if self.is_admin_key(bearer) {
            return Ok(());
        }
        if self.verify(bearer, now)?.grants.admin {
            Ok(())
        } else {
            Err(AuthError::NotGranted("admin"))
        }
    }

    /// The admin key, an admin token, or a token for `room` granting `right`.
    pub fn authorize_room(
        &self,
        bearer: Option<&str>,
        room: &str,
        right: RoomRight,
        now: u64,
    ) -> Result<(), AuthError> {
        if self.is_open() {
            return Ok(());
        }
        let bearer = bearer.ok_or(AuthError::Missing)?;
        if self.is_admin_key(bearer) {
            return Ok(());
        }
        let c = self.verify(bearer, now)?;
        if c.grants.admin {
            return Ok(());
        }
        if c.room.as_deref() != Some(room) {
            return Err(AuthError::WrongRoom(c.room.unwrap_or_default()));
        }
        match right {
            RoomRight::Moderate if c.grants.moderator => Ok(()),
            RoomRight::Record if c.grants.record => Ok(()),
            RoomRight::Moderate => Err(AuthError::NotGranted("moderator")),
            RoomRight::Record => Err(AuthError::NotGranted("record")),
        }
    }

    fn is_admin_key(&self, given: &str) -> bool {
        self.admin_key
            .as_deref()
            .is_some_and(|k| constant_time_eq(k.as_bytes(), given.as_bytes()))
    }

    /// May a browser page from `origin` use this server whose `Host` is `host`? Same
    /// origin (the Origin's authority equals Host), an allow-listed origin, or `*`.
    /// Requests without `Origin` (non-browser clients, same-origin GETs) are not browser
    /// cross-origin requests and pass.
    pub fn check_origin(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), AuthError> {
        let Some(origin) = origin else {
            return Ok(());
        };
        if self.any_origin {
            return Ok(());
        }
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
        let authority = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"));
        if let (Some(a), Some(h)) = (authority, host) {
            if a == h.to_ascii_lowercase() {
                return Ok(());
            }
        }
        if self.origins.contains(&o) {
            return Ok(());
        }
        Err(AuthError::Origin(origin.chars().take(200).collect()))
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token from an `Authorization: Bearer …` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Parses a lifetime: `90s`, `30m`, `12h`, `7d`, or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 30m, 12h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    let d = Duration::from_secs(secs);
    if d.is_zero() || d > MAX_TTL {
        return Err(format!("`{text}`: between 1 s and 366 days"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn access() -> Access {
        Access::new(Some(SECRET), Some("admin-key-admin-key-admin"), &[])
    }

    fn token(a: &Access, room: Option<&str>, grants: Grants, exp: u64) -> String {
        a.issue(&Claims {
            sub: "alice".into(),
            name: Some("Alice".into()),
            room: room.map(str::to_owned),
            iat: NOW - 10,
            exp,
            grants,
        })
        .unwrap()
    }

    fn join() -> Grants {
        Grants {
            join: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_join_token_opens_its_room_only() {
        let a = access();
        let t = token(&a, Some("standup"), join(), NOW + 3600);
        let g = a.authorize_join(Some(&t), "standup", NOW).unwrap();
        assert_eq!(g.name.as_deref(), Some("Alice"));
        assert!(g.publish && g.subscribe && !g.moderator && g.skips_pin);
        assert_eq!(
            a.authorize_join(Some(&t), "other", NOW),
            Err(AuthError::WrongRoom("standup".into()))
        );
        assert_eq!(
            a.authorize_join(None, "standup", NOW),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn expired_forged_and_other_algorithm_tokens_are_refused() {
        let a = access();
        let t = token(&a, Some("r"), join(), NOW - 100);
        assert_eq!(
            a.authorize_join(Some(&t), "r", NOW),
            Err(AuthError::Expired)
        );
        // Within the leeway it still passes.
        let t = token(&a, Some("r"), join(), NOW - 10);
        assert!(a.authorize_join(Some(&t), "r", NOW).is_ok());
        // Signed with another secret.
        let other = Access::new(Some("another-secret-another-secret-xx"), None, &[]);
        let forged = token(&other, Some("r"), join(), NOW + 60);
        assert!(matches!(
            a.authorize_join(Some(&forged), "r", NOW),
            Err(AuthError::Invalid(_))
        ));
        // A payload edited after signing (grants admin).
        let good = token(&a, Some("r"), join(), NOW + 60);
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        use base64_url as b64;
        let mut payload: serde_json::Value =
            serde_json::from_slice(&b64::decode(&parts[1])).unwrap();
        payload["grants"]["admin"] = true.into();
        parts[1] = b64::encode(&serde_json::to_vec(&payload).unwrap());
        let edited = parts.join(".");
        assert!(matches!(
            a.authorize_admin(Some(&edited), NOW),
            Err(AuthError::Invalid(_))
        ));
        // `alg: none` with no signature.
        let none = format!(
            "{}.{}.",
            b64::encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(matches!(
            a.authorize_join(Some(&none), "r", NOW),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            a.authorize_join(Some("garbage"), "r", NOW),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            a.authorize_join(Some(&"x".repeat(10_000)), "r", NOW),
            Err(AuthError::Invalid(_))
        ));
    }

    /// Minimal base64url (no padding) for building hostile tokens in tests.
    mod base64_url {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(data: &[u8]) -> String {
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
                for i in 0..=chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
        pub fn decode(text: &str) -> Vec<u8> {
            let vals: Vec<u32> = text
                .bytes()
                .map(|c| A.iter().position(|&x| x == c).unwrap() as u32)
                .collect();
            let mut out = Vec::new();
            for chunk in vals.chunks(4) {
                let mut n = 0u32;
                for (i, v) in chunk.iter().enumerate() {
                    n |= v << (18 - 6 * i);
                }
                for i in 0..chunk.len() - 1 {
                    out.push((n >> (16 - 8 * i)) as u8);
                }
            }
            out
        }
    }

    #[test]
    fn grants_decide_the_control_api() {
        let a = access();
        let admin = token(
            &a,
            None,
            Grants {
                admin: true,
                ..Default::default()
            },
            NOW + 60,
        );
        let plain = token(&a, Some("r"), join(), NOW + 60);
        let moderator = token(
            &a,
            Some("r"),
            Grants {
                moderator: true,
                ..join()
            },
            NOW + 60,
        );
        assert!(a.authorize_admin(Some(&admin), NOW).is_ok());
        assert!(a
            .authorize_admin(Some("admin-key-admin-key-admin"), NOW)
            .is_ok());
        assert!(a
            .authorize_admin(Some("admin-key-admin-key-admiN"), NOW)
            .is_err());
        assert_eq!(
            a.authorize_admin(Some(&plain), NOW),
            Err(AuthError::NotGranted("admin"))
        );
        assert!(a
            .authorize_room(Some(&moderator), "r", RoomRight::Moderate, NOW)
            .is_ok());
        assert_eq!(
            a.authorize_room(Some(&moderator), "r", RoomRight::Record, NOW),
            Err(AuthError::NotGranted("record"))
        );
        assert!(a
            .authorize_room(Some(&moderator), "s", RoomRight::Moderate, NOW)
            .is_err());
        assert!(a
            .authorize_room(Some(&admin), "s", RoomRight::Record, NOW)
            .is_ok());
        // An admin token joins any room as a moderator.
        assert!(
            a.authorize_join(Some(&admin), "any", NOW)
                .unwrap()
                .moderator
        );
        // A roomless token without admin is not a join token.
        let roomless = token(&a, None, join(), NOW + 60);
        assert!(a.authorize_join(Some(&roomless), "r", NOW).is_err());
    }

    #[test]
    fn open_mode_asks_nothing() {
        let a = Access::new(None, None, &[]);
        assert!(a.is_open());
        assert!(a.authorize_admin(None, NOW).is_ok());
        assert!(!a.authorize_join(None, "r", NOW).unwrap().skips_pin);
    }

    #[test]
    fn origins() {
        let a = Access::new(None, None, &["https://app.example.com/".into()]);
        assert!(a.check_origin(None, Some("127.0.0.1:8080")).is_ok());
        assert!(a
            .check_origin(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"))
            .is_ok());
        assert!(a
            .check_origin(Some("https://APP.example.com"), Some("127.0.0.1:8080"))
            .is_ok());
        assert!(a
            .check_origin(Some("http://evil.example"), Some("127.0.0.1:8080"))
            .is_err());
        assert!(a
            .check_origin(Some("http://127.0.0.1:8081"), Some("127.0.0.1:8080"))
            .is_err());
        assert!(a
            .check_origin(Some("null"), Some("127.0.0.1:8080"))
            .is_err());
        assert!(a.check_origin(Some("http://x"), None).is_err());
        let any = Access::new(None, None, &["*".into()]);
        assert!(any.check_origin(Some("http://evil.example"), None).is_ok());
    }

    #[test]
    fn bearer_and_ttl() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("400d").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
