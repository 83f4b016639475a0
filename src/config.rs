//! Server configuration: embedded defaults, optionally overridden by a TOML file, then by
//! environment variables, then by command-line flags (highest precedence). Everything is
//! validated once at start-up; a bad value stops the server with a message naming it.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A STUN or TURN server handed to clients and used by the server's own ICE agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Output video settings (every participant's composite).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Seconds between safety-net IDRs.
    pub idr_interval_s: u32,
    /// Encoder speed/quality: `low` (default, fastest), `medium`, `high`.
    pub complexity: crate::codec::video::EncoderComplexity,
    /// The quality ladder, best rung first (`[[video.rungs]]` with `width`, `height`,
    /// `fps`, `bitrate_kbps`). Empty (the default): `width`x`height` at `fps` and
    /// `bitrate_kbps` on top, then the default 640x360@30 500 kbit/s and
    /// 320x180@15 150 kbit/s rungs that are smaller and cheaper than it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<crate::ladder::Rung>,
    /// Encode the pictures of tick t-1 while tick t decodes and renders tiles, so that
    /// decode and tile work fill the cores during the encodes' uneven tail, at the cost of
    /// one frame interval more video delay. Off by default: on 2 cores it measured within
    /// noise of the serial tick (BENCHMARKS.md, "Pipelining").
    pub pipeline: bool,
    /// The codecs viewers are sent, in order of preference: each viewer gets the first of
    /// these its own offer carries (`h264`, `vp8`; default both, H.264 first).
    pub codecs: Vec<crate::codec::OutputCodec>,
}

impl VideoConfig {
    /// The ladder every picture is encoded on.
    pub fn ladder(&self) -> Result<crate::ladder::Ladder, crate::ladder::LadderError> {
        let rungs = if self.rungs.is_empty() {
            crate::ladder::Ladder::under(crate::ladder::Rung {
                width: self.width,
                height: self.height,
                fps: self.fps,
                bitrate_kbps: self.bitrate_kbps,
            })
        } else {
            self.rungs.clone()
        };
        crate::ladder::Ladder::new(rungs)
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 1200,
            idr_interval_s: 10,
            complexity: Default::default(),
            pipeline: false,
            rungs: Vec::new(),
            codecs: vec![
                crate::codec::OutputCodec::H264,
                crate::codec::OutputCodec::Vp8,
            ],
        }
    }
}

/// Output audio settings (every participant's N-1 mix).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    pub bitrate_kbps: u32,
    /// Opus encoder complexity 0..=10.
    pub complexity: u32,
    /// The most talkers mixed at once: everyone talking up to this, above it a choice by
    /// level with turns (`mixer::talkers`). Participants out of the mix are not decoded
    /// when they send RFC 6464 levels.
    pub top_k: usize,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            bitrate_kbps: 32,
            complexity: 5,
            top_k: 8,
        }
    }
}

/// Recording settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Where recordings are written (created if missing).
    pub dir: PathBuf,
    /// Record every room from its start to its end.
    pub auto: bool,
    /// Layout of the recorded picture (everyone is shown, names included).
    pub layout: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
    /// When a recording starts, everyone hears "this conference is now being recorded"
    /// (and a caller admitted while it runs hears it on admission).
    pub announce: bool,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("recordings"),
            auto: false,
            layout: "grid".into(),
            width: 1280,
            height: 720,
            bitrate_kbps: 2000,
            announce: true,
        }
    }
}

/// Presenting a screen: the layout a room switches to, who may take the floor, and what
/// one presenter's content may cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresentationConfig {
    /// The layout a room switches to when someone starts presenting.
    pub layout: String,
    /// Switch to `layout` when a presentation starts and back when it stops (unless
    /// someone chose a layout meanwhile). Rooms may override it (`PATCH`).
    pub switch_layout: bool,
    /// A second presenter while one presents: `refuse` it, or let it `take` the floor.
    /// Rooms may override it.
    pub floor: FloorPolicy,
    /// Largest content picture, either orientation.
    pub max_width: u32,
    pub max_height: u32,
    /// Highest content frame rate (25 % burst tolerance).
    pub max_fps: u32,
    /// The frame rate of pictures holding content, at the rung's whole bitrate: a screen
    /// needs detail more than motion (more bits per frame). At most the room's rate.
    pub output_fps: u32,
}

/// Live output: the audience picture every watcher and live output receives, and what
/// watching may cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// The audience view: a layout with a shared canvas (everyone, nobody cut out).
    /// Rooms may override it (`[[rooms]] audience_layout`). While someone presents in a
    /// room showing a presentation layout, the audience sees that.
    pub layout: String,
    /// WHEP watchers per room.
    pub max_watchers: usize,
    /// WHEP watchers in all rooms together.
    pub max_watchers_total: usize,
    /// PEM certificates trusted for `rtmps://` pushes and `https://` webhooks besides the
    /// system's CA bundle (a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            layout: "grid-shared".into(),
            max_watchers: 100,
            max_watchers_total: 1000,
            ca_file: None,
        }
    }
}

/// A receiver of server events: each is POSTed as JSON, signed with HMAC-SHA256 of the body
/// under `secret` (`X-Tessera-Signature: sha256=<hex>`), retried with backoff.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    /// At least 16 bytes; never logged or shown.
    #[serde(skip_serializing)]
    pub secret: String,
    /// Attempts after the first before an event is given up on.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
}

fn default_webhook_retries() -> u32 {
    5
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// What happens to a second presenter (see [`PresentationConfig::floor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloorPolicy {
    #[default]
    Refuse,
    Take,
}

impl Default for PresentationConfig {
    fn default() -> Self {
        Self {
            layout: "presentation".into(),
            switch_layout: true,
            floor: FloorPolicy::Refuse,
            max_width: 1920,
            max_height: 1080,
            max_fps: 30,
            output_fps: 15,
        }
    }
}

impl PresentationConfig {
    /// The content decoder's share of these limits (bytes per frame as for cameras).
    pub fn limits(&self, ingest: &IngestConfig) -> crate::codec::video::IngestLimits {
        crate::codec::video::IngestLimits {
            max_width: self.max_width,
            max_height: self.max_height,
            ..ingest.limits()
        }
    }
}

/// What one participant's input may cost; more is refused for that participant only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest input picture, either orientation (1080x1920 fits 1920x1080).
    pub max_width: u32,
    pub max_height: u32,
    /// Highest input frame rate (25 % burst tolerance).
    pub max_fps: u32,
    /// Largest access unit (one frame's reassembled payloads).
    pub max_frame_kbytes: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let l = crate::codec::video::IngestLimits::default();
        Self {
            max_width: l.max_width,
            max_height: l.max_height,
            max_fps: 60,
            max_frame_kbytes: (l.max_frame_bytes / 1024) as u32,
        }
    }
}

impl IngestConfig {
    /// The decoder's share of these limits (the frame rate is the room's to police).
    pub fn limits(&self) -> crate::codec::video::IngestLimits {
        crate::codec::video::IngestLimits {
            max_width: self.max_width,
            max_height: self.max_height,
            max_frame_bytes: self.max_frame_kbytes as usize * 1024,
        }
    }
}

/// How long a session may wait or go silent before it is ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// A WebSocket `join` must be followed by an `offer` within this.
    pub offer_s: u32,
    /// A media connection must be established (ICE + DTLS) within this.
    pub connect_s: u32,
    /// A participant from whom nothing arrives (ICE consent) is removed after this.
    pub media_s: u32,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            offer_s: 10,
            connect_s: 10,
            media_s: 5,
        }
    }
}

/// What one HTTP client may hold and ask for. Connections and request rates are counted
/// per source IP before anything else is read; `/healthz` and the static web client are
/// exempt from the rates (not from the connection caps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Open TCP connections in all (beyond it new connections get `503` and are closed).
    pub max_connections: usize,
    /// Open TCP connections from one IP.
    pub max_connections_per_ip: usize,
    /// A request's head must arrive within this; a keep-alive connection idle this long is
    /// closed.
    pub header_timeout_s: u32,
    /// A request (body included) must be answered within this (WebSockets excepted once
    /// upgraded).
    pub request_timeout_s: u32,
    /// Joins per second per IP (WebSocket upgrades and WHIP offers), sustained…
    pub join_rate: f64,
    /// …and in a burst.
    pub join_burst: u32,
    /// Other API requests (`/api/*`, WHIP `DELETE`) per second per IP, sustained…
    pub api_rate: f64,
    /// …and in a burst.
    pub api_burst: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            max_connections_per_ip: 64,
            header_timeout_s: 10,
            request_timeout_s: 30,
            join_rate: 2.0,
            join_burst: 20,
            api_rate: 10.0,
            api_burst: 50,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP/WebSocket/WHIP listen address.
    pub listen: SocketAddr,
    /// Address WebRTC media sockets bind to.
    pub media_ip: IpAddr,
    /// Address announced in ICE candidates instead of `media_ip` (1:1 NAT, e.g. a cloud VM).
    pub public_ip: Option<IpAddr>,
    /// First and last UDP port for media sockets (one per participant); `None` = any port.
    pub udp_port_min: Option<u16>,
    pub udp_port_max: Option<u16>,
    pub ice_servers: Vec<IceServer>,
    /// Participants per room.
    pub max_participants: usize,
    /// Participants in all rooms together.
    pub max_participants_total: usize,
    /// Rooms running at once (each costs two threads).
    pub max_rooms: usize,
    pub default_layout: String,
    /// Extra layout files (`*.json`) to load besides the built-ins.
    pub layouts_dir: Option<PathBuf>,
    pub video: VideoConfig,
    pub audio: AudioConfig,
    pub recording: RecordingConfig,
    pub ingest: IngestConfig,
    pub presentation: PresentationConfig,
    pub live: LiveConfig,
    pub timeouts: TimeoutsConfig,
    pub http: HttpConfig,
    /// SIP (UDP and TCP) listen address for phones dialling in; `"off"` disables SIP.
    #[serde(with = "sip_listen_serde")]
    pub sip_listen: Option<SocketAddr>,
    /// SIP over TLS (`sips:`) listen address, with the HTTPS listener's certificate
    /// (`tls_cert`/`tls_key` or `tls_self_signed`); an IP alone listens on 5061; `"off"`
    /// (the default) disables it. Needs `sip_listen` on.
    #[serde(
        serialize_with = "sip_listen_serde::serialize",
        deserialize_with = "de_sip_tls_listen"
    )]
    pub sip_tls_listen: Option<SocketAddr>,
    pub sip: SipConfig,
    /// Receivers of server events (`[[webhooks]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
    /// Rooms declared up front, with their PINs and options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<RoomDecl>,
    /// Secret that signs access tokens (at least 32 bytes). Set: joins need a token and the
    /// control API an admin credential. Unset: open mode, allowed on loopback only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_secret: Option<String>,
    /// Key (at least 24 bytes) that the control API, `/metrics` and the dashboard accept as
    /// a bearer, besides admin tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// Web origins (`https://host[:port]`, or `*`) besides the server's own whose pages may
    /// open WebSockets and call the API.
    pub allowed_origins: Vec<String>,
    /// Run open (no API secret) on a non-loopback address anyway.
    pub insecure: bool,
    /// HTTPS: certificate chain and private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// HTTPS with a certificate made at start for this host's names (LAN tests).
    pub tls_self_signed: bool,
    /// Redis (`redis://[:password@]host[:port][/db]`) shared by the nodes of a cluster.
    /// Set: cluster mode (rooms placed across nodes, joins redirected to the room's node).
    /// Unset: a single node, no Redis needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (1 to 64 of letters, digits, `-`, `_`, `.`); unset:
    /// a random one at each start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The base URL other nodes send this node's clients to (`https://mcu3.example.org`);
    /// unset: `http(s)://` + the address the HTTP listener bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    pub cluster: ClusterConfig,
}

/// The longest drain a node accepts (a day), from the configuration or the API.
pub const MAX_DRAIN_DEADLINE_S: u32 = 86_400;

/// `[cluster]`: multi-node behaviour (only with `redis_url`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How long a draining node (SIGTERM, `POST /api/admin/drain`) lets its rooms run
    /// before it stops them and exits.
    pub drain_deadline_s: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            drain_deadline_s: 3600,
        }
    }
}

/// `[sip]`: the telephony bridge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Dialled number (the Request-URI's user part) → room name, e.g. `"1000" = "standup"`.
    /// Other users are taken as the room name itself.
    pub numbers: std::collections::BTreeMap<String, String>,
    /// New calls accepted per second from one source address (token bucket refill).
    pub invite_rate: f64,
    /// Burst of calls one source may place at once.
    pub invite_burst: u32,
    /// SRTP for calls (rooms may override): `optional` takes SDES-keyed SRTP where a call
    /// offers it over TLS and plain RTP otherwise; `required` answers a plain-RTP offer 488.
    pub media_encryption: MediaEncryption,
    /// Dial-out: every call we place goes through this proxy (a SIP URI such as
    /// `sip:pbx.example.com:5060`); unset: straight to the callee's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_proxy: Option<String>,
    /// Dial-out: the digest credential (RFC 8760: MD5 or SHA-256) given when challenged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_username: Option<String>,
    #[serde(skip_serializing)]
    pub outbound_password: Option<String>,
    /// Dial-out: how long a call may ring unanswered.
    pub ring_timeout_s: u32,
    /// Dial-out: calls being placed or running, per server and per room.
    pub max_outbound_calls: usize,
    pub max_outbound_calls_per_room: usize,
    /// Dial-out: new calls per room per minute.
    pub outbound_calls_per_minute: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            numbers: Default::default(),
            invite_rate: 20.0,
            invite_burst: 200,
            media_encryption: MediaEncryption::Optional,
            outbound_proxy: None,
            outbound_username: None,
            outbound_password: None,
            ring_timeout_s: 30,
            max_outbound_calls: 20,
            max_outbound_calls_per_room: 4,
            outbound_calls_per_minute: 10,
        }
    }
}

/// Whether a phone call's media must be encrypted (SRTP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaEncryption {
    #[default]
    Optional,
    Required,
}

/// `[[rooms]]`: a room's access and options, known before anyone joins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomDecl {
    pub name: String,
    /// Digits callers (and web participants) must give to join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Digits that make a participant a moderator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderator_pin: Option<String>,
    /// New joins refused.
    #[serde(default)]
    pub locked: bool,
    /// Join and leave tones (default on).
    #[serde(default = "yes")]
    pub tones: bool,
    /// SRTP for this room's calls, overriding `[sip] media_encryption`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_encryption: Option<MediaEncryption>,
    /// Overrides `[presentation] floor` for this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<FloorPolicy>,
    /// Overrides `[presentation] switch_layout` for this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_layout: Option<bool>,
    /// Overrides `[live] layout` (the audience view) for this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_layout: Option<String>,
}

fn yes() -> bool {
    true
}

fn de_sip_tls_listen<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_sip_tls_listen(&text).map_err(serde::de::Error::custom)
}

/// `off`, `IP:PORT`, or an IP alone (port 5061, RFC 3261 §26.2).
pub fn parse_sip_tls_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Ok(ip) = t
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Some(SocketAddr::new(ip, 5061)));
    }
    t.parse()
        .map(Some)
        .map_err(|_| format!("`{text}` is not IP:PORT, an IP (port 5061) or `off`"))
}

/// A PIN is 1 to 16 digits.
pub fn valid_pin(pin: &str) -> bool {
    (1..=16).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

mod sip_listen_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_sip_listen(&text).map_err(serde::de::Error::custom)
    }
}

/// `ADDR` or `off`.
pub fn parse_sip_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| format!("`{text}` is not IP:PORT or `off`"))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            media_ip: "127.0.0.1".parse().expect("literal address"),
            public_ip: None,
            udp_port_min: None,
            udp_port_max: None,
            ice_servers: Vec::new(),
            max_participants: 16,
            max_participants_total: 200,
            max_rooms: 50,
            default_layout: "grid".into(),
            layouts_dir: None,
            video: VideoConfig::default(),
            audio: AudioConfig::default(),
            recording: RecordingConfig::default(),
            ingest: IngestConfig::default(),
            presentation: PresentationConfig::default(),
            live: LiveConfig::default(),
            timeouts: TimeoutsConfig::default(),
            http: HttpConfig::default(),
            sip_listen: Some("127.0.0.1:5060".parse().expect("literal address")),
            sip_tls_listen: None,
            sip: SipConfig::default(),
            rooms: Vec::new(),
            webhooks: Vec::new(),
            api_secret: None,
            admin_key: None,
            allowed_origins: Vec::new(),
            insecure: false,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            redis_url: None,
            node_id: None,
            public_url: None,
            cluster: ClusterConfig::default(),
        }
    }
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("config `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Command-line flags (each also readable from a `TESSERA_*` environment variable).
#[derive(Parser, Debug, Default)]
#[command(name = "tessera", version, about = "Tessera WebRTC MCU")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "TESSERA_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address, e.g. 0.0.0.0:8080.
    #[arg(long, env = "TESSERA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// SIP listen address (UDP and TCP), e.g. 0.0.0.0:5060, or `off`.
    #[arg(long, env = "TESSERA_SIP_LISTEN")]
    pub sip_listen: Option<String>,
    /// SIP over TLS listen address (an IP alone: port 5061), or `off` (the default). Uses
    /// the HTTPS certificate options.
    #[arg(long, env = "TESSERA_SIP_TLS_LISTEN")]
    pub sip_tls_listen: Option<String>,
    /// IP that media (UDP) sockets bind to.
    #[arg(long, env = "TESSERA_MEDIA_IP")]
    pub media_ip: Option<IpAddr>,
    /// Public IP announced in ICE candidates (behind 1:1 NAT).
    #[arg(long, env = "TESSERA_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// UDP port range for media, e.g. 40000-40100.
    #[arg(long, env = "TESSERA_UDP_PORTS")]
    pub udp_ports: Option<String>,
    /// ICE server URL for clients and server (repeatable), e.g. turn:turn.example.org:3478.
    #[arg(
        long = "ice-server",
        env = "TESSERA_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub ice_servers: Vec<String>,
    /// Username for the TURN servers given with --ice-server.
    #[arg(long, env = "TESSERA_ICE_USERNAME")]
    pub ice_username: Option<String>,
    /// Credential for the TURN servers given with --ice-server.
    #[arg(long, env = "TESSERA_ICE_CREDENTIAL")]
    pub ice_credential: Option<String>,
    /// Output canvas, e.g. 1280x720.
    #[arg(long, env = "TESSERA_VIDEO_SIZE")]
    pub video_size: Option<String>,
    #[arg(long, env = "TESSERA_VIDEO_FPS")]
    pub video_fps: Option<u32>,
    #[arg(long, env = "TESSERA_VIDEO_BITRATE_KBPS")]
    pub video_bitrate_kbps: Option<u32>,
    /// Loudest talkers mixed (top-K).
    #[arg(long, env = "TESSERA_AUDIO_TOP_K")]
    pub audio_top_k: Option<usize>,
    /// Participants per room.
    #[arg(long, env = "TESSERA_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    /// Participants in all rooms together.
    #[arg(long, env = "TESSERA_MAX_PARTICIPANTS_TOTAL")]
    pub max_participants_total: Option<usize>,
    /// Rooms running at once.
    #[arg(long, env = "TESSERA_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    #[arg(long, env = "TESSERA_DEFAULT_LAYOUT")]
    pub default_layout: Option<String>,
    #[arg(long, env = "TESSERA_LAYOUTS_DIR")]
    pub layouts_dir: Option<PathBuf>,
    /// Directory for recordings.
    #[arg(long, env = "TESSERA_RECORDING_DIR")]
    pub recording_dir: Option<PathBuf>,
    /// Record every room automatically.
    #[arg(long, env = "TESSERA_RECORD_ALL")]
    pub record_all: bool,
    /// Secret (≥ 32 bytes) that signs access tokens; turns access control on.
    #[arg(long, env = "TESSERA_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Admin key (≥ 24 bytes) accepted as a bearer by the control API and /metrics.
    #[arg(long, env = "TESSERA_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Extra web origin allowed to use the server (repeatable), or `*`.
    #[arg(
        long = "allowed-origin",
        env = "TESSERA_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Run without an API secret on a non-loopback address (anyone who reaches it may use it).
    #[arg(long, env = "TESSERA_INSECURE")]
    pub insecure: bool,
    /// HTTPS certificate chain (PEM).
    #[arg(long, env = "TESSERA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS private key (PEM).
    #[arg(long, env = "TESSERA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// HTTPS with a self-signed certificate made at start (LAN tests only).
    #[arg(long, env = "TESSERA_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Redis URL shared by a cluster's nodes (redis://host:6379); turns cluster mode on.
    #[arg(long = "redis", env = "TESSERA_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (default: random).
    #[arg(long, env = "TESSERA_NODE_ID")]
    pub node_id: Option<String>,
    /// Base URL clients of other nodes are sent to (default: http(s):// + listen address).
    #[arg(long, env = "TESSERA_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl Config {
    /// Defaults ← file (if any) ← flags/environment; then validated.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut c = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::File {
                    path: path.display().to_string(),
                    message,
                })?
            }
            None => Self::default(),
        };
        c.apply_cli(cli)?;
        c.validate()?;
        Ok(c)
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn apply_cli(&mut self, cli: &Cli) -> Result<(), ConfigError> {
        if let Some(v) = cli.listen {
            self.listen = v;
        }
        if let Some(v) = &cli.sip_listen {
            self.sip_listen = parse_sip_listen(v).map_err(|message| ConfigError::Invalid {
                field: "sip_listen",
                message,
            })?;
        }
        if let Some(v) = &cli.sip_tls_listen {
            self.sip_tls_listen =
                parse_sip_tls_listen(v).map_err(|message| ConfigError::Invalid {
                    field: "sip_tls_listen",
                    message,
                })?;
        }
        if let Some(v) = cli.media_ip {
            self.media_ip = v;
        }
        if cli.public_ip.is_some() {
            self.public_ip = cli.public_ip;
        }
        if let Some(r) = &cli.udp_ports {
            let bad = || ConfigError::Invalid {
                field: "udp_ports",
                message: format!("`{r}` is not MIN-MAX"),
            };
            let (a, b) = r.split_once('-').ok_or_else(bad)?;
            self.udp_port_min = Some(a.trim().parse().map_err(|_| bad())?);
            self.udp_port_max = Some(b.trim().parse().map_err(|_| bad())?);
        }
        if !cli.ice_servers.is_empty() {
            self.ice_servers = vec![IceServer {
                urls: cli.ice_servers.clone(),
                username: cli.ice_username.clone(),
                credential: cli.ice_credential.clone(),
            }];
        }
        if let Some(s) = &cli.video_size {
            let bad = || ConfigError::Invalid {
                field: "video_size",
                message: format!("`{s}` is not WIDTHxHEIGHT"),
            };
            let (w, h) = crate::media::parse_size(s).ok_or_else(bad)?;
            self.video.width = w;
            self.video.height = h;
        }
        if let Some(v) = cli.video_fps {
            self.video.fps = v;
        }
        if let Some(v) = cli.video_bitrate_kbps {
            self.video.bitrate_kbps = v;
        }
        if let Some(v) = cli.audio_top_k {
            self.audio.top_k = v;
        }
        if let Some(v) = cli.max_participants {
            self.max_participants = v;
        }
        if let Some(v) = cli.max_participants_total {
            self.max_participants_total = v;
        }
        if let Some(v) = cli.max_rooms {
            self.max_rooms = v;
        }
        if let Some(v) = &cli.default_layout {
            self.default_layout = v.clone();
        }
        if cli.layouts_dir.is_some() {
            self.layouts_dir = cli.layouts_dir.clone();
        }
        if let Some(d) = &cli.recording_dir {
            self.recording.dir = d.clone();
        }
        if cli.record_all {
            self.recording.auto = true;
        }
        if cli.api_secret.is_some() {
            self.api_secret = cli.api_secret.clone();
        }
        if cli.admin_key.is_some() {
            self.admin_key = cli.admin_key.clone();
        }
        if !cli.allowed_origins.is_empty() {
            self.allowed_origins = cli.allowed_origins.clone();
        }
        self.insecure |= cli.insecure;
        if cli.tls_cert.is_some() {
            self.tls_cert = cli.tls_cert.clone();
        }
        if cli.tls_key.is_some() {
            self.tls_key = cli.tls_key.clone();
        }
        self.tls_self_signed |= cli.tls_self_signed;
        if cli.redis_url.is_some() {
            self.redis_url = cli.redis_url.clone();
        }
        if cli.node_id.is_some() {
            self.node_id = cli.node_id.clone();
        }
        if cli.public_url.is_some() {
            self.public_url = cli.public_url.clone();
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        let v = &self.video;
        if !(16..=3840).contains(&v.width) || v.width % 2 != 0 {
            return bad("video.width", "must be even and between 16 and 3840");
        }
        if !(16..=2160).contains(&v.height) || v.height % 2 != 0 {
            return bad("video.height", "must be even and between 16 and 2160");
        }
        if !(1..=60).contains(&v.fps) {
            return bad("video.fps", "must be between 1 and 60");
        }
        if !(50..=20_000).contains(&v.bitrate_kbps) {
            return bad("video.bitrate_kbps", "must be between 50 and 20000");
        }
        if !(1..=300).contains(&v.idr_interval_s) {
            return bad("video.idr_interval_s", "must be between 1 and 300");
        }
        let pr = &self.presentation;
        if !(16..=3840).contains(&pr.max_width) || !(16..=3840).contains(&pr.max_height) {
            return bad(
                "presentation.max_width",
                "max_width and max_height must be between 16 and 3840",
            );
        }
        if !(1..=60).contains(&pr.max_fps) {
            return bad("presentation.max_fps", "must be between 1 and 60");
        }
        if !(1..=60).contains(&pr.output_fps) {
            return bad("presentation.output_fps", "must be between 1 and 60");
        }
        for w in &self.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
                || w.url.parse::<hyper::Uri>().is_err()
            {
                return bad("webhooks.url", "must be an http:// or https:// URL");
            }
            if w.secret.len() < 16 {
                return bad("webhooks.secret", "must be at least 16 bytes");
            }
            if w.retries > 20 {
                return bad("webhooks.retries", "must be at most 20");
            }
        }
        if !(1..=100_000).contains(&self.live.max_watchers) {
            return bad("live.max_watchers", "must be between 1 and 100000");
        }
        if !(1..=1_000_000).contains(&self.live.max_watchers_total) {
            return bad("live.max_watchers_total", "must be between 1 and 1000000");
        }
        if v.codecs.is_empty() {
            return bad(
                "video.codecs",
                "must name at least one of \"h264\", \"vp8\"",
            );
        }
        if (1..v.codecs.len()).any(|i| v.codecs[..i].contains(&v.codecs[i])) {
            return bad("video.codecs", "names a codec twice");
        }
        match v.ladder() {
            Err(e) => return bad("video.rungs", &e.to_string()),
            Ok(l) if l.max_fps() > v.fps => {
                return bad("video.rungs", "no rung may have more fps than video.fps");
            }
            Ok(l) if l.rungs().iter().any(|r| r.width > 3840 || r.height > 2160) => {
                return bad("video.rungs", "rungs are at most 3840x2160");
            }
            Ok(_) => {}
        }
        let r = &self.recording;
        if !(16..=3840).contains(&r.width)
            || r.width % 2 != 0
            || !(16..=2160).contains(&r.height)
            || r.height % 2 != 0
        {
            return bad(
                "recording.width/height",
                "must be even, 16..3840 x 16..2160",
            );
        }
        if !(50..=50_000).contains(&r.bitrate_kbps) {
            return bad("recording.bitrate_kbps", "must be between 50 and 50000");
        }
        let t = &self.timeouts;
        if !(1..=300).contains(&t.offer_s) || !(1..=300).contains(&t.connect_s) {
            return bad("timeouts.offer_s/connect_s", "must be between 1 and 300");
        }
        if !(2..=120).contains(&t.media_s) {
            return bad("timeouts.media_s", "must be between 2 and 120");
        }
        let i = &self.ingest;
        if !(16..=8192).contains(&i.max_width) || !(16..=8192).contains(&i.max_height) {
            return bad("ingest.max_width/max_height", "must be between 16 and 8192");
        }
        if !(1..=240).contains(&i.max_fps) {
            return bad("ingest.max_fps", "must be between 1 and 240");
        }
        if !(16..=65_536).contains(&i.max_frame_kbytes) {
            return bad("ingest.max_frame_kbytes", "must be between 16 and 65536");
        }
        let h = &self.http;
        if !(1..=1_000_000).contains(&h.max_connections)
            || !(1..=1_000_000).contains(&h.max_connections_per_ip)
        {
            return bad(
                "http.max_connections/max_connections_per_ip",
                "must be between 1 and 1000000",
            );
        }
        if !(1..=300).contains(&h.header_timeout_s) || !(1..=3600).contains(&h.request_timeout_s) {
            return bad(
                "http.header_timeout_s/request_timeout_s",
                "must be 1..300 and 1..3600 seconds",
            );
        }
        let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 1e6;
        if !rate_ok(h.join_rate) || !rate_ok(h.api_rate) {
            return bad(
                "http.join_rate/api_rate",
                "must be above 0 and at most 1000000 per second",
            );
        }
        if !(1..=1_000_000).contains(&h.join_burst) || !(1..=1_000_000).contains(&h.api_burst) {
            return bad("http.join_burst/api_burst", "must be between 1 and 1000000");
        }
        if !(6..=510).contains(&self.audio.bitrate_kbps) {
            return bad("audio.bitrate_kbps", "must be between 6 and 510");
        }
        if !(1..=64).contains(&self.audio.top_k) {
            return bad("audio.top_k", "must be between 1 and 64");
        }
        if self.audio.complexity > 10 {
            return bad("audio.complexity", "must be between 0 and 10");
        }
        if !(1..=10_000).contains(&self.max_participants) {
            return bad("max_participants", "must be between 1 and 10000");
        }
        if !(1..=100_000).contains(&self.max_participants_total) {
            return bad("max_participants_total", "must be between 1 and 100000");
        }
        if !(1..=10_000).contains(&self.max_rooms) {
            return bad("max_rooms", "must be between 1 and 10000");
        }
        match (self.udp_port_min, self.udp_port_max) {
            (None, None) => {}
            (Some(a), Some(b)) if a > 0 && a <= b => {}
            _ => {
                return bad(
                    "udp_port_min/udp_port_max",
                    "give both, with 0 < min <= max",
                )
            }
        }
        for s in &self.ice_servers {
            if s.urls.is_empty()
                || s.urls.iter().any(|u| {
                    !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:"))
                })
            {
                return bad(
                    "ice_servers",
                    "every url must start with stun:, turn: or turns:",
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.rooms {
            if crate::ids::RoomId::parse(&r.name).is_err() {
                return bad("rooms.name", "1 to 64 letters, digits, '-', '_' or '.'");
            }
            if !names.insert(r.name.as_str()) {
                return bad("rooms.name", "each room is declared once");
            }
            for pin in [&r.pin, &r.moderator_pin].into_iter().flatten() {
                if !valid_pin(pin) {
                    return bad("rooms.pin", "a PIN is 1 to 16 digits");
                }
            }
        }
        for room in self.sip.numbers.values() {
            if crate::ids::RoomId::parse(room).is_err() {
                return bad("sip.numbers", "every value must be a valid room name");
            }
        }
        if !(self.sip.invite_rate > 0.0) || self.sip.invite_burst == 0 {
            return bad("sip.invite_rate/invite_burst", "must be positive");
        }
        self.validate_cluster()?;
        self.validate_access()
    }

    /// The cluster settings: a Redis URL the client library accepts, a node id usable in
    /// key names, a public URL that is an origin, and one whenever the listen address
    /// cannot be handed to other nodes' clients.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let bad = |field, message: String| Err(ConfigError::Invalid { field, message });
        if let Some(u) = &self.redis_url {
            if let Err(e) = redis::Client::open(u.as_str()) {
                return bad("redis_url", format!("not a Redis URL ({e})"));
            }
        }
        if let Some(id) = &self.node_id {
            if !crate::ids::valid_name(id) {
                return bad(
                    "node_id",
                    "1 to 64 characters of letters, digits, '-', '_' or '.'".into(),
                );
            }
        }
        if let Some(u) = &self.public_url {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"));
            let ok = rest.is_some_and(|r| {
                let host = r.trim_end_matches('/');
                !host.is_empty()
                    && !host.contains(['/', '?', '#', '@'])
                    && !r.contains(char::is_whitespace)
            });
            if !ok {
                return bad("public_url", format!("`{u}` is not http(s)://host[:port]"));
            }
        }
        if !(1..=MAX_DRAIN_DEADLINE_S).contains(&self.cluster.drain_deadline_s) {
            return bad(
                "cluster.drain_deadline_s",
                format!("must be between 1 and {MAX_DRAIN_DEADLINE_S}"),
            );
        }
        if self.redis_url.is_some()
            && self.public_url.is_none()
            && self.listen.ip().is_unspecified()
        {
            return bad(
                "public_url",
                format!(
                    "cluster mode listening on {}: other nodes cannot send clients to an \
                     unspecified address; set --public-url / TESSERA_PUBLIC_URL",
                    self.listen
                ),
            );
        }
        Ok(())
    }

    /// The access-control and TLS settings: secrets long enough, TLS given whole, and no
    /// open server on a network address unless `insecure` says so.
    fn validate_access(&self) -> Result<(), ConfigError> {
        let bad = |field, message: String| Err(ConfigError::Invalid { field, message });
        if let Some(s) = &self.api_secret {
            if s.len() < crate::auth::MIN_SECRET_BYTES {
                return bad(
                    "api_secret",
                    format!(
                        "must be at least {} bytes (e.g. `openssl rand -hex 32`)",
                        crate::auth::MIN_SECRET_BYTES
                    ),
                );
            }
        }
        if let Some(k) = &self.admin_key {
            if k.len() < crate::auth::MIN_ADMIN_KEY_BYTES {
                return bad(
                    "admin_key",
                    format!(
                        "must be at least {} bytes",
                        crate::auth::MIN_ADMIN_KEY_BYTES
                    ),
                );
            }
            if self.api_secret.is_none() {
                return bad(
                    "admin_key",
                    "only means something with api_secret (open mode asks for nothing)".into(),
                );
            }
        }
        for o in &self.allowed_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.contains(char::is_whitespace)
                    && o.splitn(4, '/').nth(3).is_none_or(str::is_empty));
            if !ok {
                return bad(
                    "allowed_origins",
                    format!("`{o}` is not `*` or scheme://host[:port]"),
                );
            }
        }
        match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (Some(_), Some(_), false) | (None, None, _) => {}
            (Some(_), Some(_), true) => {
                return bad(
                    "tls_self_signed",
                    "give either tls_cert/tls_key or tls_self_signed".into(),
                )
            }
            _ => return bad("tls_cert/tls_key", "give both".into()),
        }
        if self.sip_tls_listen.is_some() {
            if self.sip_listen.is_none() {
                return bad(
                    "sip_tls_listen",
                    "needs sip_listen on (SIP over TLS runs beside UDP/TCP)".into(),
                );
            }
            if self.tls_cert.is_none() && !self.tls_self_signed {
                return bad(
                    "sip_tls_listen",
                    "needs a certificate: tls_cert/tls_key or tls_self_signed".into(),
                );
            }
        }
        if self.api_secret.is_none() && !self.insecure {
            let exposed = std::iter::once(self.listen)
                .chain(self.sip_listen)
                .chain(self.sip_tls_listen)
                .find(|a| !a.ip().is_loopback());
            if let Some(addr) = exposed {
                return bad(
                    "api_secret",
                    format!(
                        "{addr} is not a loopback address: without an API secret anyone who \
                         reaches it could join any room and use the control API. Set \
                         --api-secret / TESSERA_API_SECRET (and --admin-key), or pass \
                         --insecure to run open anyway"
                    ),
                );
            }
        }
        Ok(())
    }

    /// `https` when the listener serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() || self.tls_self_signed {
            "https"
        } else {
            "http"
        }
    }

    /// Access control built from this configuration.
    pub fn access(&self) -> crate::auth::Access {
        crate::auth::Access::new(
            self.api_secret.as_deref(),
            self.admin_key.as_deref(),
            &self.allowed_origins,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn cluster_settings_are_checked_and_flags_win() {
        let mut c = Config::from_toml(
            r#"
            redis_url = "redis://127.0.0.1:6379"
            node_id = "mcu-1"
            public_url = "https://mcu1.example.org"
            [cluster]
            drain_deadline_s = 600
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.cluster.drain_deadline_s, 600);
        c.apply_cli(&Cli {
            redis_url: Some("redis://:pw@10.0.0.2:6380/1".into()),
            node_id: Some("mcu-2".into()),
            public_url: Some("http://10.0.0.3:8080/".into()),
            ..Default::default()
        })
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.node_id.as_deref(), Some("mcu-2"));
        let field = |tweak: &dyn Fn(&mut Config)| {
            let mut c = Config {
                redis_url: Some("redis://127.0.0.1".into()),
                ..Default::default()
            };
            tweak(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { field, .. }) => field,
                other => panic!("accepted: {other:?}"),
            }
        };
        assert_eq!(
            field(&|c| c.redis_url = Some("http://x".into())),
            "redis_url"
        );
        assert_eq!(field(&|c| c.node_id = Some("a b".into())), "node_id");
        assert_eq!(field(&|c| c.node_id = Some("x".repeat(65))), "node_id");
        assert_eq!(
            field(&|c| c.public_url = Some("mcu.example.org".into())),
            "public_url"
        );
        assert_eq!(
            field(&|c| c.public_url = Some("https://h/path".into())),
            "public_url"
        );
        assert_eq!(
            field(&|c| c.cluster.drain_deadline_s = 0),
            "cluster.drain_deadline_s"
        );
        // Other nodes cannot send clients to 0.0.0.0: a public URL is required there.
        assert_eq!(
            field(&|c| {
                c.listen = "0.0.0.0:8080".parse().unwrap();
                c.api_secret = Some("0123456789abcdef0123456789abcdef".into());
            }),
            "public_url"
        );
    }

    #[test]
    fn toml_file_overrides_defaults_and_rejects_unknown_keys() {
        let c = Config::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            api_secret = "0123456789abcdef0123456789abcdef"
            public_ip = "203.0.113.7"
            udp_port_min = 40000
            udp_port_max = 40100
            [[ice_servers]]
            urls = ["turn:turn.example.org:3478"]
            username = "u"
            credential = "p"
            [video]
            width = 640
            height = 360
            pipeline = true
            codecs = ["vp8", "h264"]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.video.width, 640);
        use crate::codec::OutputCodec::{Vp8, H264};
        assert_eq!(c.video.codecs, [Vp8, H264]);
        assert_eq!(Config::default().video.codecs, [H264, Vp8]);
        for (codecs, why) in [("[]", "at least one"), ("[\"vp8\", \"vp8\"]", "twice")] {
            let c = Config::from_toml(&format!("[video]\ncodecs = {codecs}")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("video.codecs") && e.contains(why), "{e}");
        }
        assert!(Config::from_toml("[video]\ncodecs = [\"vp9\"]").is_err());
        assert!(c.video.pipeline && !Config::default().video.pipeline);
        assert_eq!(c.video.fps, 30, "unset keys keep defaults");
        assert_eq!(c.ice_servers[0].username.as_deref(), Some("u"));
        let e = Config::from_toml("lisen = \"x\"").unwrap_err();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn flags_win_and_bad_values_are_named() {
        let cli = Cli::parse_from([
            "tessera",
            "--video-size",
            "320x180",
            "--udp-ports",
            "5000-5010",
            "--ice-server",
            "stun:127.0.0.1:3478",
        ]);
        let c = Config::load(&cli).unwrap();
        assert_eq!((c.video.width, c.video.height), (320, 180));
        assert_eq!((c.udp_port_min, c.udp_port_max), (Some(5000), Some(5010)));
        let cli = Cli::parse_from(["tessera", "--video-size", "321x180"]);
        assert!(Config::load(&cli)
            .unwrap_err()
            .to_string()
            .contains("video.width"));
        let cli = Cli::parse_from(["tessera", "--udp-ports", "9-1"]);
        assert!(Config::load(&cli)
            .unwrap_err()
            .to_string()
            .contains("udp_port"));
    }

    #[test]
    fn a_network_address_needs_a_secret_or_insecure() {
        let load = |args: &[&str]| {
            let mut all = vec!["tessera"];
            all.extend_from_slice(args);
            Config::load(&Cli::parse_from(all)).map_err(|e| e.to_string())
        };
        let e = load(&["--listen", "0.0.0.0:8080"]).unwrap_err();
        assert!(e.contains("api_secret") && e.contains("--insecure"), "{e}");
        let e = load(&["--sip-listen", "0.0.0.0:5060"]).unwrap_err();
        assert!(e.contains("0.0.0.0:5060"), "{e}");
        load(&["--listen", "0.0.0.0:8080", "--insecure"]).unwrap();
        let secret = "s".repeat(32);
        load(&["--listen", "0.0.0.0:8080", "--api-secret", &secret]).unwrap();
        let e = load(&["--api-secret", "short"]).unwrap_err();
        assert!(e.contains("32 bytes"), "{e}");
        let e = load(&["--admin-key", &"k".repeat(24)]).unwrap_err();
        assert!(e.contains("admin_key"), "{e}");
        let e = load(&["--allowed-origin", "evil.example"]).unwrap_err();
        assert!(e.contains("allowed_origins"), "{e}");
        load(&["--allowed-origin", "https://app.example:8443,*"]).unwrap();
        let e = load(&["--tls-cert", "/x.pem"]).unwrap_err();
        assert!(e.contains("tls_cert"), "{e}");
        // Loopback stays zero-config.
        assert!(load(&[]).unwrap().access().is_open());
    }

    #[test]
    fn sip_over_tls_needs_a_certificate_and_sip_and_an_ip_alone_means_5061() {
        let load = |args: &[&str]| {
            let mut all = vec!["tessera"];
            all.extend_from_slice(args);
            Config::load(&Cli::parse_from(all)).map_err(|e| e.to_string())
        };
        let c = load(&["--sip-tls-listen", "127.0.0.1", "--tls-self-signed"]).unwrap();
        assert_eq!(c.sip_tls_listen, Some("127.0.0.1:5061".parse().unwrap()));
        let c = load(&["--sip-tls-listen", "127.0.0.1:6061", "--tls-self-signed"]).unwrap();
        assert_eq!(c.sip_tls_listen, Some("127.0.0.1:6061".parse().unwrap()));
        assert_eq!(
            load(&["--sip-tls-listen", "off"]).unwrap().sip_tls_listen,
            None
        );
        let e = load(&["--sip-tls-listen", "127.0.0.1"]).unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        let e = load(&[
            "--sip-tls-listen",
            "127.0.0.1",
            "--tls-self-signed",
            "--sip-listen",
            "off",
        ])
        .unwrap_err();
        assert!(e.contains("sip_listen"), "{e}");
        let e = load(&["--sip-tls-listen", "nonsense"]).unwrap_err();
        assert!(e.contains("sip_tls_listen"), "{e}");
        // From TOML too, with the media policy and dial-out keys.
        let c = Config::from_toml(
            "sip_tls_listen = \"127.0.0.1\"\n[sip]\nmedia_encryption = \"required\"\n\
             outbound_proxy = \"sip:pbx.example.com\"\nring_timeout_s = 20\n",
        )
        .unwrap();
        assert_eq!(c.sip_tls_listen, Some("127.0.0.1:5061".parse().unwrap()));
        assert_eq!(c.sip.media_encryption, MediaEncryption::Required);
        assert_eq!(c.sip.ring_timeout_s, 20);
        assert!(Config::from_toml("[sip]\nmedia_encryption = \"maybe\"\n").is_err());
    }
}
