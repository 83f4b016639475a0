//! Newtype identifiers. A room name and a participant number are different things even
//! though both are "just" a string and an integer; the types keep them apart.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A room's name as the user typed it (validated: 1..=64 chars of `[A-Za-z0-9_.-]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomId(String);

/// Why a string is not a valid room name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("room name must be 1 to 64 characters of letters, digits, '-', '_' or '.'")]
pub struct InvalidRoomId;

/// The one name rule for rooms and cluster nodes: 1..=64 of `[A-Za-z0-9_.-]` (safe in a
/// URL path, a SIP user part and a Redis key).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl RoomId {
    pub fn parse(s: &str) -> Result<Self, InvalidRoomId> {
        if valid_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidRoomId)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cluster node's id (same rule as a room name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// `None` unless [`valid_name`].
    pub fn parse(s: &str) -> Option<Self> {
        valid_name(s).then(|| Self(s.to_owned()))
    }
    /// A fresh random id (`node-` and 8 hex digits).
    pub fn random() -> Self {
        Self(format!("node-{:08x}", rand::random::<u32>()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A participant, unique for the lifetime of the process (never reused, never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

impl ParticipantId {
    /// Allocates the next process-wide id.
    pub fn next() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_validated() {
        assert!(RoomId::parse("standup-1.a_b").is_ok());
        assert_eq!(RoomId::parse(""), Err(InvalidRoomId));
        assert_eq!(RoomId::parse("a/b"), Err(InvalidRoomId));
        assert_eq!(RoomId::parse(&"x".repeat(65)), Err(InvalidRoomId));
    }

    #[test]
    fn participant_ids_are_unique() {
        let a = ParticipantId::next();
        let b = ParticipantId::next();
        assert_ne!(a, b);
        assert!(a.0 > 0);
    }
}
