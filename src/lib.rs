//! # Tessera — a WebRTC MCU
//!
//! Every participant sends one audio and one video stream; the server decodes them all,
//! mixes audio so each hears everyone but themselves, composites video into a layout, and
//! sends **one** H.264 + Opus stream back to each participant.
//!
//! ```text
//!  browser / WHIP ──WebSocket or HTTP──▶ signaling ──▶ transport::connect (webrtc 0.21)
//!        ▲                                                   │ remote tracks (tokio tasks)
//!        │                                                   ▼ try_send (bounded)
//!        │                          ┌──────────── room ─────────────────────────────┐
//!        │                          │ audio thread, every 20 ms:                    │
//!        │                          │   jitter → Opus decode/PLC → Σ → −own → limit │
//!        │                          │   → Opus encode → RtpSink                     │
//!        │                          │ video thread, every 1/fps:                    │
//!        │                          │   assemble → decode (rayon) → tiles (rayon,   │
//!        │                          │   once per size) → compose+H.264 (rayon)      │
//!        │                          │   → RtpSink                                   │
//!        │                          └───────────────────────────────────────────────┘
//!        └──────── local tracks (tokio tasks) ◀── try_send (bounded) ◀──┘
//!                                   recording picture + room mix ──try_send──▶ recorder
//!                                   thread (fragmented MP4, one write per fragment)
//! ```
//!
//! ## Cost model
//! The floor is decode(inputs) + encode(distinct outputs). Viewers with identical
//! pictures share one encoder (`room::video`), only talkers are decoded and mixed, at
//! most `top_k` at once (`room::audio`, `mixer::talkers`), unseen participants are not decoded, and each (participant,
//! tile size) is scaled once per new picture (`compositor::TileCache`). `tessera bench
//! room` (`bench`) measures the whole pipeline without a network; `metrics` attributes
//! CPU to phases.
//!
//! ## Threads and time
//! tokio runs network I/O and signaling only. Each room has one audio and one video
//! thread on absolute-deadline clocks (`room::clock`): tick k is due at start + k·period,
//! and RTP timestamps derive from k, so output clocks never drift. The media threads own
//! all codec state; they never await and take no locks in their loops. Channels between
//! the two worlds are bounded and non-blocking: a full queue drops and counts.
//!
//! ## Pure cores
//! `mixer`, `compositor`, `layout`, `media::jitter` and `room::clock` take time as an
//! argument and touch no sockets: they are unit-tested directly.
//!
//! ## Several nodes
//! With a Redis URL, `cluster` publishes the node's record and claims each room for one
//! node (Lua compare-and-set); signaling asks it where a join goes and redirects the
//! client (WebSocket `redirect`, WHIP 307, SIP 302). The placement rule
//! (`cluster::placement`) is pure.
//!
//! ## Errors
//! Network and user input never panic: each module returns its own `thiserror` type and a
//! failing participant only loses its own session. Every `expect` states why it cannot
//! fail.

pub mod admission;
pub mod auth;
pub mod bench;
pub mod cluster;
pub mod codec;
pub mod compositor;
pub mod config;
pub mod ids;
pub mod ladder;
pub mod layout;
pub mod live;
pub mod load;
pub mod media;
pub mod metrics;
pub mod mixer;
pub mod prompts;
pub mod recording;
pub mod room;
pub mod sdp;
pub mod signaling;
pub mod sip;
pub mod transport;
pub mod webhooks;
