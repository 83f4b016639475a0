//! The WebSocket signaling protocol (documented in `docs/protocol.md`): JSON objects
//! tagged by `type`, camelCase fields. One module, used by the server and by tests.

use crate::config::IceServer;
use crate::ids::ParticipantId;
use crate::room::{ParticipantInfo, RoomEvent};
use serde::{Deserialize, Serialize};

/// Largest signaling message accepted (an SDP offer is ~5–10 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// What the WebSocket layer accepts at all: messages between [`MAX_MESSAGE_BYTES`] and this
/// get `bad_message` and the session goes on; beyond it the socket is closed (1009).
pub const MAX_WS_MESSAGE_BYTES: usize = 1024 * 1024;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        room: String,
        name: String,
        /// The room's PIN (or its moderator PIN, which makes this participant a moderator).
        #[serde(default)]
        pin: Option<String>,
        /// Access token (required when the server has an API secret).
        #[serde(default)]
        token: Option<String>,
    },
    /// A moderator's action (`action`: `mute`, `muteAll`, `kick`, `lock`, `setPin`,
    /// `dial`, `hangUp`, `stopPresentation`).
    Moderate(super::moderation::Moderation),
    Offer {
        sdp: String,
    },
    #[serde(rename_all = "camelCase")]
    Candidate {
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
        #[serde(default, rename = "sdpMLineIndex")]
        sdp_mline_index: Option<u16>,
    },
    SetLayout {
        layout: String,
    },
    Mute {
        #[serde(default)]
        audio: Option<bool>,
        #[serde(default)]
        video: Option<bool>,
    },
    /// Present a screen: an offer for a second connection carrying only the client's
    /// content (one sendonly video m-line; all candidates in it — no trickle). Answered
    /// with `presentAnswer`, or an error (`floorTaken`) when the room refuses a second
    /// presenter.
    Present {
        sdp: String,
    },
    /// Stop presenting (the content connection closes).
    StopPresenting,
    /// The size (device pixels) the client shows the composite at: the server sends no
    /// rung larger than the smallest one that covers it.
    VideoSize {
        width: u32,
        height: u32,
    },
    Leave,
}

/// Video output settings, so the client knows what to expect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Joined {
        participant_id: ParticipantId,
        room: String,
        participants: Vec<ParticipantInfo>,
        layout: String,
        layouts: Vec<String>,
        ice_servers: Vec<IceServer>,
        active_speaker: Option<ParticipantId>,
        video: VideoInfo,
        /// Whether the room is being recorded (show an indicator).
        recording: bool,
        /// Who presents now.
        presenter: Option<ParticipantId>,
    },
    Answer {
        sdp: String,
    },
    /// The answer for a `present` offer (all server candidates included).
    PresentAnswer {
        sdp: String,
    },
    #[serde(rename_all = "camelCase")]
    Candidate {
        candidate: String,
        sdp_mid: Option<String>,
        #[serde(rename = "sdpMLineIndex")]
        sdp_mline_index: Option<u16>,
    },
    #[serde(rename_all = "camelCase")]
    ConnectionState {
        state: String,
    },
    /// The room lives on another node of the cluster: connect to `url` (its WebSocket)
    /// and send the same `join` there. This session stays in the lobby.
    Redirect {
        url: String,
        node: String,
    },
    /// What the room can use of this participant's camera: the largest size any
    /// picture shows it at (a 16:9 box: scale the source down until it just covers it),
    /// the bitrate that needs and the frame rate. The client applies it to its camera's
    /// sender (`scaleResolutionDownBy`, `maxBitrate`, `maxFramerate`).
    #[serde(rename_all = "camelCase")]
    SendLimit {
        width: u32,
        height: u32,
        max_bitrate: u32,
        max_framerate: u32,
    },
    /// The server is ending this session (e.g. shutting down).
    Bye {
        reason: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Room events, flattened (`participantJoined`, `activeSpeaker`, …).
    #[serde(untagged)]
    Room(RoomEvent),
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, unknown type, missing or extra fields, binary frame, too large.
    BadMessage,
    /// A message that is valid but not allowed now (e.g. offer before join).
    BadState,
    InvalidRoom,
    InvalidName,
    RoomFull,
    /// The room has a PIN and none, or a wrong one, was given.
    PinRequired,
    /// Only a moderator may do that.
    NotModerator,
    /// No access token, or one that is forged, expired or for another room.
    Unauthorized,
    /// The room is locked by a moderator: no new joins.
    RoomLocked,
    /// The server's room or participant limit is reached.
    ServerFull,
    /// The server cannot start the room now (out of OS resources); try again later.
    Unavailable,
    UnknownLayout,
    BadSdp,
    NegotiationFailed,
    BadCandidate,
    /// Someone else presents and the room refuses a second presenter.
    FloorTaken,
    /// The session waited too long (no offer after join, media never connected).
    Timeout,
    Internal,
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

/// Parses one text frame; the error is ready to send back.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ServerMessage> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ServerMessage::error(
            ErrorCode::BadMessage,
            format!("message exceeds {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| ServerMessage::error(ErrorCode::BadMessage, format!("invalid message: {e}")))
}

/// Validates a display name: 1..=64 characters after trimming, no control characters.
pub fn validate_name(name: &str) -> Result<String, ServerMessage> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
        return Err(ServerMessage::error(
            ErrorCode::InvalidName,
            "display name must be 1 to 64 printable characters",
        ));
    }
    Ok(n.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            parse_client_message(r#"{"type":"join","room":"r","name":"Ada"}"#).unwrap(),
            ClientMessage::Join {
                room: "r".into(),
                name: "Ada".into(),
                pin: None,
                token: None,
            }
        );
        assert_eq!(
            parse_client_message(
                r#"{"type":"moderate","action":"mute","participantId":3,"muted":true}"#
            )
            .unwrap(),
            ClientMessage::Moderate(super::super::moderation::Moderation::Mute {
                participant_id: crate::ids::ParticipantId(3),
                muted: true
            })
        );
        assert!(parse_client_message(r#"{"type":"moderate","action":"explode"}"#).is_err());
        assert_eq!(
            parse_client_message(r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 5 typ host","sdpMid":"0","sdpMLineIndex":0}"#).unwrap(),
            ClientMessage::Candidate { candidate: "candidate:1 1 udp 1 127.0.0.1 5 typ host".into(), sdp_mid: Some("0".into()), sdp_mline_index: Some(0) }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"mute","audio":true}"#).unwrap(),
            ClientMessage::Mute {
                audio: Some(true),
                video: None
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave
        );
    }

    #[test]
    fn rejects_bad_messages_with_a_code() {
        for bad in [
            "",
            "nope",
            "[]",
            r#"{"type":"fly"}"#,
            r#"{"type":"join","room":"r"}"#,
            r#"{"type":"join","room":"r","name":"a","x":1}"#,
        ] {
            match parse_client_message(bad) {
                Err(ServerMessage::Error {
                    code: ErrorCode::BadMessage,
                    ..
                }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(parse_client_message(&"x".repeat(MAX_MESSAGE_BYTES + 1)).is_err());
    }

    #[test]
    fn server_messages_serialize_flat() {
        let m = ServerMessage::Room(RoomEvent::ActiveSpeaker {
            participant_id: Some(ParticipantId(3)),
        });
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"activeSpeaker","participantId":3}"#
        );
        let e = ServerMessage::error(ErrorCode::RoomFull, "full");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(validate_name("  Ada ").unwrap(), "Ada");
        assert!(validate_name("").is_err());
        assert!(validate_name("a\u{7}b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
