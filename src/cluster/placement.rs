//! What a node tells the others about itself, and which node a new room goes to. Pure:
//! records in, a choice out; the Redis side is in the parent module.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// A node's record, published every [`super::REFRESH`] under a key that lives
/// [`super::NODE_TTL`]: a node that stops refreshing drops out of every choice by then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub id: NodeId,
    /// Base URL clients are sent to (`http://10.0.0.3:8080`).
    pub public_url: String,
    /// `host:port` phones are sent to (`None`: SIP is off on that node).
    pub sip: Option<String>,
    /// The address its media sockets announce.
    pub media_ip: String,
    /// Draining nodes take joins for their running rooms only.
    pub draining: bool,
    pub rooms: usize,
    pub participants: usize,
    /// Video encoders running (the main cost of a room).
    pub encoders: u64,
    /// The process's CPU use over the last refresh, as a share of all the machine's cores.
    pub cpu: f32,
    pub max_rooms: usize,
    pub max_participants: usize,
    /// The rooms running on it (so that a recent placement is not counted twice).
    pub room_names: Vec<String>,
    /// Random per process (two processes given the same id are told apart and reported).
    pub instance: String,
    pub version: String,
}

/// How many of the rooms recently placed on `node` (`placed`: names joined by `,`) its
/// record does not show running yet.
pub fn not_yet_running(node: &NodeRecord, placed: &str) -> usize {
    placed
        .split(',')
        .filter(|r| !r.is_empty() && !node.room_names.iter().any(|n| n == r))
        .count()
}

/// Above this CPU share a node is chosen only if every node is above it.
pub const HOT_CPU: f32 = 0.85;
/// A room weighs as much as this many participants (each room runs a mixer, a compositor
/// and at least one encoder whoever is in it).
pub const ROOM_WEIGHT: usize = 4;

impl NodeRecord {
    /// Rooms counted for placement: running ones plus those placed on it in the last few
    /// seconds whose first participant may not have arrived yet.
    fn load(&self, placing: usize) -> usize {
        (self.rooms + placing) * ROOM_WEIGHT + self.participants
    }

    fn has_room_for_one_more(&self, placing: usize) -> bool {
        !self.draining
            && self.rooms + placing < self.max_rooms
            && self.participants < self.max_participants
    }

    /// The `Origin` its pages send (`scheme://host[:port]`, lower case).
    pub fn origin(&self) -> String {
        self.public_url.trim_end_matches('/').to_ascii_lowercase()
    }

    /// Its WebSocket signaling URL.
    pub fn ws_url(&self) -> String {
        let base = self.public_url.trim_end_matches('/');
        let rest = base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
            .unwrap_or_else(|| base.to_owned());
        format!("{rest}/ws")
    }
}

/// The least-loaded node that can start a room: not draining, under its room and
/// participant limits; among those, nodes under [`HOT_CPU`] first, then by load
/// (rooms × [`ROOM_WEIGHT`] + participants), then by id so that every node agrees.
/// `nodes` pairs each live record with the rooms placed on it recently.
pub fn choose(nodes: &[(NodeRecord, usize)]) -> Option<&NodeRecord> {
    nodes
        .iter()
        .filter(|(n, placing)| n.has_room_for_one_more(*placing))
        .min_by(|(a, pa), (b, pb)| {
            (a.cpu >= HOT_CPU, a.load(*pa), &a.id).cmp(&(b.cpu >= HOT_CPU, b.load(*pb), &b.id))
        })
        .map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, rooms: usize, participants: usize) -> NodeRecord {
        NodeRecord {
            id: NodeId::parse(id).unwrap(),
            public_url: format!("http://{id}:8080"),
            sip: None,
            media_ip: "127.0.0.1".into(),
            draining: false,
            rooms,
            participants,
            encoders: 0,
            cpu: 0.1,
            max_rooms: 10,
            max_participants: 100,
            room_names: (0..rooms).map(|i| format!("r{i}")).collect(),
            instance: "0".into(),
            version: "test".into(),
        }
    }

    fn pick(nodes: &[(NodeRecord, usize)]) -> Option<&str> {
        choose(nodes).map(|n| n.id.as_str())
    }

    #[test]
    fn the_least_loaded_node_wins_and_ties_go_to_the_lowest_id() {
        let nodes = [
            (node("b", 1, 2), 0),
            (node("a", 1, 2), 0),
            (node("c", 2, 0), 0),
        ];
        assert_eq!(pick(&nodes), Some("a"));
        let nodes = [(node("a", 2, 3), 0), (node("b", 1, 6), 0)];
        // 2×4+3 = 11 against 1×4+6 = 10.
        assert_eq!(pick(&nodes), Some("b"));
    }

    #[test]
    fn recent_placements_count_before_the_node_reports_them() {
        let nodes = [(node("a", 0, 0), 1), (node("b", 0, 0), 0)];
        assert_eq!(pick(&nodes), Some("b"));
        let nodes = [(node("a", 0, 0), 1), (node("b", 0, 0), 2)];
        assert_eq!(pick(&nodes), Some("a"));
    }

    #[test]
    fn a_placed_room_counts_once_whether_or_not_it_runs_yet() {
        let n = node("a", 2, 0); // runs r0, r1
        assert_eq!(not_yet_running(&n, ""), 0);
        assert_eq!(not_yet_running(&n, "r1"), 0);
        assert_eq!(not_yet_running(&n, "r1,x,y"), 2);
    }

    #[test]
    fn draining_full_and_hot_nodes_are_avoided() {
        let mut draining = node("a", 0, 0);
        draining.draining = true;
        let mut full = node("b", 10, 0);
        full.max_rooms = 10;
        let mut crowded = node("c", 0, 100);
        crowded.max_participants = 100;
        let busy = node("d", 5, 20);
        let nodes = [(draining, 0), (full, 0), (crowded, 0), (busy, 0)];
        assert_eq!(pick(&nodes), Some("d"));
        // Placements in flight fill a node too.
        let nodes = [(node("e", 8, 0), 2)];
        assert_eq!(pick(&nodes), None);
        let mut hot = node("f", 0, 0);
        hot.cpu = 0.95;
        let nodes = [(hot.clone(), 0), (node("g", 3, 10), 0)];
        assert_eq!(pick(&nodes), Some("g"));
        // Every node hot: still placed, by load.
        let mut hot2 = node("h", 1, 0);
        hot2.cpu = 0.9;
        assert_eq!(pick(&[(hot2, 0), (hot, 0)]), Some("f"));
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn urls_for_redirects() {
        let mut n = node("a", 0, 0);
        n.public_url = "https://MCU.example.org/".into();
        assert_eq!(n.ws_url(), "wss://MCU.example.org/ws");
        assert_eq!(n.origin(), "https://mcu.example.org");
        n.public_url = "http://127.0.0.1:9000".into();
        assert_eq!(n.ws_url(), "ws://127.0.0.1:9000/ws");
    }
}
