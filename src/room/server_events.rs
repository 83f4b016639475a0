//! Server-wide events — rooms started and finished, participants joined and left,
//! recordings finished, presentations started and stopped, RTMP streams started, failed
//! and stopped — for operators (and webhooks) (the `/api/events` SSE stream) and the counters
//! `/metrics` exports. Sending never blocks: a subscriber that falls behind loses the
//! oldest events and is told how many.

use super::ParticipantInfo;
use crate::ids::ParticipantId;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::broadcast;

/// Events buffered for a slow subscriber before it loses some.
const BACKLOG: usize = 1024;

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerEvent {
    RoomStarted {
        room: String,
    },
    RoomFinished {
        room: String,
    },
    ParticipantJoined {
        room: String,
        participant: ParticipantInfo,
    },
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        room: String,
        participant_id: ParticipantId,
    },
    RecordingFinished {
        room: String,
        recording: crate::recording::RecordingInfo,
        /// The file on this node.
        path: String,
    },
    /// A call the bridge placed changed state (`sip::dialout`).
    CallUpdated {
        room: String,
        call: serde_json::Value,
    },
    #[serde(rename_all = "camelCase")]
    PresentationStarted {
        room: String,
        participant_id: ParticipantId,
    },
    #[serde(rename_all = "camelCase")]
    PresentationStopped {
        room: String,
        participant_id: ParticipantId,
        reason: super::presentation::StopReason,
    },
    /// An RTMP push is publishing (again). `url` never shows the stream key.
    #[serde(rename_all = "camelCase")]
    StreamStarted {
        room: String,
        stream_id: u64,
        url: String,
    },
    /// An RTMP push lost or could not make its connection; it retries until deleted.
    #[serde(rename_all = "camelCase")]
    StreamFailed {
        room: String,
        stream_id: u64,
        url: String,
        error: String,
    },
    #[serde(rename_all = "camelCase")]
    StreamStopped {
        room: String,
        stream_id: u64,
        url: String,
    },
}

/// An event with its sequence number (the SSE `id`) and time (Unix ms).
#[derive(Clone, Debug, Serialize)]
pub struct Stamped {
    pub seq: u64,
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: ServerEvent,
}

/// The event bus and its running totals.
#[derive(Debug)]
pub struct ServerEvents {
    tx: broadcast::Sender<Stamped>,
    seq: AtomicU64,
    pub rooms_started: AtomicU64,
    pub rooms_finished: AtomicU64,
    pub participants_joined: AtomicU64,
    pub participants_left: AtomicU64,
    pub recordings_finished: AtomicU64,
    /// RTMP (re)publishes and failed connections.
    pub streams_started: AtomicU64,
    pub streams_failed: AtomicU64,
    /// SIP media datagrams dropped because they did not come from the caller
    /// (`sip::source`).
    pub sip_rtp_rejected: AtomicU64,
}

impl Default for ServerEvents {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            seq: AtomicU64::new(0),
            rooms_started: AtomicU64::new(0),
            rooms_finished: AtomicU64::new(0),
            participants_joined: AtomicU64::new(0),
            participants_left: AtomicU64::new(0),
            recordings_finished: AtomicU64::new(0),
            streams_started: AtomicU64::new(0),
            streams_failed: AtomicU64::new(0),
            sip_rtp_rejected: AtomicU64::new(0),
        }
    }
}

impl ServerEvents {
    /// Counts and publishes `event` (never blocks; nobody listening is fine).
    pub fn emit(&self, event: ServerEvent) {
        let counter = match &event {
            ServerEvent::RoomStarted { .. } => Some(&self.rooms_started),
            ServerEvent::RoomFinished { .. } => Some(&self.rooms_finished),
            ServerEvent::ParticipantJoined { .. } => Some(&self.participants_joined),
            ServerEvent::ParticipantLeft { .. } => Some(&self.participants_left),
            ServerEvent::RecordingFinished { .. } => Some(&self.recordings_finished),
            // (Presentations are counted per room: `tessera_presentations_total`.)
            ServerEvent::CallUpdated { .. }
            | ServerEvent::PresentationStarted { .. }
            | ServerEvent::PresentationStopped { .. } => None,
            ServerEvent::StreamStarted { .. } => Some(&self.streams_started),
            ServerEvent::StreamFailed { .. } => Some(&self.streams_failed),
            ServerEvent::StreamStopped { .. } => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, Relaxed);
        }
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = self.tx.send(Stamped {
            seq: self.seq.fetch_add(1, Relaxed) + 1,
            at_ms,
            event,
        });
    }

    /// A placed call's new state.
    pub fn call_updated(&self, room: &str, call: &impl Serialize) {
        self.emit(ServerEvent::CallUpdated {
            room: room.to_owned(),
            call: serde_json::to_value(call).unwrap_or_default(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Stamped> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_calls_are_published_but_not_counted() {
        let bus = ServerEvents::default();
        let mut rx = bus.subscribe();
        bus.call_updated("r", &serde_json::json!({ "id": "c1", "state": "ringing" }));
        let json = serde_json::to_value(rx.try_recv().unwrap()).unwrap();
        assert_eq!(json["type"], "callUpdated");
        assert_eq!(json["room"], "r");
        assert_eq!(json["call"]["state"], "ringing");
        assert_eq!(bus.rooms_started.load(Relaxed), 0);
    }

    #[test]
    fn events_are_counted_numbered_and_delivered() {
        let bus = ServerEvents::default();
        bus.emit(ServerEvent::RoomStarted { room: "a".into() });
        let mut rx = bus.subscribe();
        bus.emit(ServerEvent::RoomFinished { room: "a".into() });
        let got = rx.try_recv().unwrap();
        assert_eq!(got.seq, 2);
        assert_eq!(got.event, ServerEvent::RoomFinished { room: "a".into() });
        assert_eq!(bus.rooms_started.load(Relaxed), 1);
        assert_eq!(bus.rooms_finished.load(Relaxed), 1);
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(json["type"], "roomFinished");
        assert_eq!(json["room"], "a");
    }
}
