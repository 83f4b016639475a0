//! Cluster mode: several nodes, one room namespace, kept in Redis. This module owns the
//! node's record, the room → node claims and where a join should go; the signaling edges
//! (WebSocket `redirect`, WHIP `307`, SIP `302`) ask it and act on the answer.
//!
//! Keys (all under `tessera:`):
//! - `node:{id}` — the node's [`NodeRecord`] (JSON), rewritten every [`REFRESH`], expiring
//!   after [`NODE_TTL`]: a node that dies or loses Redis drops out within that time.
//!   `nodes` is the set of ids that have published (dead ones are pruned when read).
//! - `node:{id}:rooms`, `node:{id}:recordings` — its room and recording lists (JSON), same
//!   lifetime, so that the API's lists span the cluster.
//! - `room:{name}` — the id of the node that hosts the room, claimed `SET NX PX` for
//!   [`CLAIM_TTL`] and renewed by the owner every refresh; renewal, takeover and release are
//!   Lua compare-and-set scripts, so a node never extends or deletes another's claim. A
//!   claim whose owner has no live record is stale: the next join re-places the room.
//! - `placing:{id}` — rooms placed on a node in the last few seconds (a sorted set scored
//!   by Redis's clock): their first participant may still be on the way, so they count as
//!   load unless the node's record already lists them running.
//!
//! Without Redis a node keeps its running rooms (joins to them need no Redis) and refuses
//! to start new ones with [`ClusterError::Store`]; the connection manager reconnects and
//! the next refresh re-publishes the record and re-claims the rooms.

pub mod placement;

pub use placement::NodeRecord;

use crate::config::Config;
use crate::ids::{NodeId, RoomId};
use crate::room::Rooms;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node publishes its record and renews its claims.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A record not refreshed for this long is gone (the node is dead or cut off).
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// A room claim's lifetime without renewal. Longer than [`NODE_TTL`] so that a short
/// Redis outage loses no claim; a dead owner's claim is taken over as soon as its record
/// is gone, whatever the claim's own lifetime left.
pub const CLAIM_TTL: Duration = Duration::from_secs(15);
/// How long a placement counts on the chosen node before its record reports the room.
const PLACING_TTL: Duration = Duration::from_secs(10);
/// After Redis starts empty (first start, restart without persistence, flush), no new room
/// is placed until every node has had a refresh to re-claim its running rooms: otherwise a
/// join could start a second copy of a room that runs on a node that has not renewed yet.
pub const SETTLE: Duration = Duration::from_millis(3000);
/// Every Redis command gives up after this (the join waiting on it is refused).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Entries of a node's published recording list (newest kept).
const MAX_PUBLISHED_RECORDINGS: usize = 2000;

const PREFIX: &str = "tessera:";

fn node_key(id: &str) -> String {
    format!("{PREFIX}node:{id}")
}
fn room_key(room: &RoomId) -> String {
    format!("{PREFIX}room:{room}")
}
fn placing_key(id: &str) -> String {
    format!("{PREFIX}placing:{id}")
}
fn nodes_key() -> String {
    format!("{PREFIX}nodes")
}
/// When Redis first held cluster data (gone after a restart without persistence or a
/// flush: then it is set again and the cluster settles).
fn since_key() -> String {
    format!("{PREFIX}since")
}

/// `{owner, alive}`: the claim's node ("" if none) and whether its record exists.
const LOOKUP: &str = r"
local owner = redis.call('GET', KEYS[1])
if not owner then return {'', 0} end
return {owner, redis.call('EXISTS', ARGV[1] .. owner)}
";

/// Claims KEYS[1] for ARGV[1] if it is unclaimed (ARGV[2] = '') or still held by the
/// dead owner ARGV[2]; notes the placement of room ARGV[5] in the sorted set KEYS[2]
/// (scored by Redis's clock). Returns the owner after the call.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur and ARGV[2] == '') or cur == ARGV[2] then
  if ARGV[2] == '' then
    if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
      return redis.call('GET', KEYS[1]) or ''
    end
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  end
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return ARGV[1]
end
return cur or ''
";

/// Renews ARGV[1]'s claim on KEYS[1], or claims it again if it lapsed (Redis restarted
/// empty, or was away longer than the claim). Returns the owner after the call.
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return cur
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
";

/// Deletes KEYS[1] only if ARGV[1] holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// How old Redis's cluster data is (ms, from the `since` marker KEYS[2], set now if
/// missing), then the live records with the rooms placed on them in the last ARGV[3] ms:
/// `[age, json, "room1,room2", …]`. Ids whose record expired are removed from the set.
const NODES: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('SET', KEYS[2], now, 'NX')
local out = {tostring(now - tonumber(redis.call('GET', KEYS[2])))}
local since = now - tonumber(ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then
    redis.call('ZREMRANGEBYSCORE', ARGV[2] .. id, '-inf', since)
    table.insert(out, v)
    table.insert(out, table.concat(redis.call('ZRANGE', ARGV[2] .. id, 0, -1), ','))
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
";

/// Why a join cannot be placed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the cluster's Redis is unreachable ({0}): rooms already running here go on, \
         but no new room can be placed until it is back"
    )]
    Store(String),
    #[error("no node in the cluster can start a room now (every node is draining or full)")]
    NoNode,
    #[error(
        "the cluster's Redis has just started empty: nodes are re-claiming their running \
         rooms, new rooms are placed again within 3 s"
    )]
    Settling,
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        Self::Store(e.to_string())
    }
}

/// Where a join goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// This node hosts the room (it runs here, or was just claimed for this node).
    Local,
    /// Another node does: send the client there.
    Remote(Box<NodeRecord>),
}

/// Which published list [`Cluster::peer_lists`] reads.
#[derive(Clone, Copy, Debug)]
pub enum List {
    Rooms,
    Recordings,
}

impl List {
    fn key(self, node: &str) -> String {
        match self {
            List::Rooms => format!("{}:rooms", node_key(node)),
            List::Recordings => format!("{}:recordings", node_key(node)),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Joins sent to another node (WebSocket, WHIP, SIP).
    pub redirects: AtomicU64,
    /// Joins refused because Redis could not be reached.
    pub store_refusals: AtomicU64,
    /// Rooms this node placed (here or elsewhere).
    pub placements: AtomicU64,
    /// Claims found held by another node at renewal (a split the next joins resolve).
    pub lost_claims: AtomicU64,
}

/// One node's view of the cluster.
pub struct Cluster {
    me: NodeId,
    public_url: String,
    sip: Option<String>,
    conn: ConnectionManager,
    rooms: Arc<Rooms>,
    config: Arc<Config>,
    /// The live records as last read (refreshed every [`REFRESH`]): for origin checks and
    /// redirects without a round trip.
    known: Mutex<Vec<NodeRecord>>,
    /// Whether the last refresh reached Redis.
    redis_up: AtomicBool,
    /// Whether Redis's data was older than [`SETTLE`] at the last read.
    settled: AtomicBool,
    /// Rooms running here whose claim another node holds (it placed them while this node
    /// was cut off from Redis): their new joins go to that node, so the copy here empties.
    lost: Mutex<std::collections::HashSet<RoomId>>,
    /// Random per process: tells this process's record from another's under the same id.
    instance: String,
    pub stats: ClusterStats,
    stop: CancellationToken,
    /// CPU seconds used and when, at the last refresh (for the record's `cpu`).
    cpu_mark: Mutex<(f64, std::time::Instant)>,
}

impl Cluster {
    /// Connects lazily to `config.redis_url` and starts publishing. `public_url`: the URL
    /// other nodes send this node's clients to; `sip`: where phones are sent.
    pub fn start(
        config: Arc<Config>,
        rooms: Arc<Rooms>,
        public_url: String,
        sip: Option<String>,
    ) -> Result<Arc<Self>, ClusterError> {
        let url = config
            .redis_url
            .clone()
            .ok_or_else(|| ClusterError::Store("no redis_url".into()))?;
        let client = redis::Client::open(url.as_str())?;
        let conn = ConnectionManager::new_lazy_with_config(
            client,
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500)),
        )?;
        let me = config
            .node_id
            .as_deref()
            .and_then(NodeId::parse)
            .unwrap_or_else(NodeId::random);
        let cluster = Arc::new(Self {
            me,
            public_url: public_url.trim_end_matches('/').to_owned(),
            sip,
            conn,
            rooms,
            config,
            known: Mutex::new(Vec::new()),
            redis_up: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            lost: Mutex::default(),
            instance: format!("{:016x}", rand::random::<u64>()),
            stats: ClusterStats::default(),
            stop: CancellationToken::new(),
            cpu_mark: Mutex::new((process_cpu_seconds(), std::time::Instant::now())),
        });
        tokio::spawn(cluster.clone().run());
        Ok(cluster)
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether the last refresh reached Redis.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Whether this node would place a new room now: Redis reachable and its data older
    /// than [`SETTLE`] (a draining node still places rooms, on other nodes).
    pub fn placing(&self) -> bool {
        self.redis_up() && self.settled.load(Ordering::Relaxed)
    }

    /// Live nodes as last read (this one included once it has published).
    pub fn nodes(&self) -> Vec<NodeRecord> {
        lock(&self.known).clone()
    }

    /// Whether `origin` (an `Origin` header) is a live node's public URL: pages served by
    /// one node may open the WebSocket of the node a room lives on.
    pub fn is_node_origin(&self, origin: &str) -> bool {
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
        lock(&self.known).iter().any(|n| n.origin() == o)
    }

    /// Where a join to `room` goes. A room running here stays here without asking Redis;
    /// otherwise the room's claim decides, and an unclaimed room (or one whose node is
    /// gone, or is this node while it drains) is claimed for the least-loaded live node.
    pub async fn place(&self, room: &RoomId) -> Result<Placement, ClusterError> {
        if self.rooms.get(room).is_some() && !lock(&self.lost).contains(room) {
            return Ok(Placement::Local);
        }
        let result = self.place_new(room).await;
        match &result {
            Err(ClusterError::Store(e)) => {
                self.stats.store_refusals.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%room, "join refused: Redis unreachable ({e})");
            }
            Ok(Placement::Remote(n)) => {
                self.stats.redirects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%room, node = %n.id, "join redirected to the room's node");
            }
            _ => {}
        }
        result
    }

    async fn place_new(&self, room: &RoomId) -> Result<Placement, ClusterError> {
        let key = room_key(room);
        let draining = self.rooms.drain_deadline().is_some();
        for _ in 0..4 {
            let mut conn = self.conn.clone();
            let (owner, alive): (String, i64) = redis::Script::new(LOOKUP)
                .key(&key)
                .arg(node_key(""))
                .invoke_async(&mut conn)
                .await?;
            let usable = alive == 1 && !(owner == self.me.as_str() && draining);
            if usable {
                if owner == self.me.as_str() {
                    return Ok(Placement::Local);
                }
                if let Some(n) = self.record_of(&owner).await? {
                    return Ok(Placement::Remote(Box::new(n)));
                }
                continue; // its record expired in between: look again
            }
            // Unclaimed, or held by a node that is gone (or draining here): place it, once
            // every node has re-claimed what it runs.
            let (age, nodes) = self.read_nodes().await?;
            if age < SETTLE {
                return Err(ClusterError::Settling);
            }
            let Some(target) = placement::choose(&nodes).cloned() else {
                return Err(ClusterError::NoNode);
            };
            let winner: String = redis::Script::new(CLAIM)
                .key(&key)
                .key(placing_key(target.id.as_str()))
                .arg(target.id.as_str())
                .arg(&owner)
                .arg(CLAIM_TTL.as_millis() as u64)
                .arg(PLACING_TTL.as_millis() as u64)
                .arg(room.as_str())
                .invoke_async(&mut conn)
                .await?;
            if winner == target.id.as_str() {
                self.stats.placements.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%room, node = %target.id, replaced = %owner, "room placed");
                return Ok(if winner == self.me.as_str() {
                    Placement::Local
                } else {
                    Placement::Remote(Box::new(target))
                });
            }
            // Another node placed it first: follow its choice on the next pass.
        }
        Err(ClusterError::Store(
            "the room's claim kept changing; try again".into(),
        ))
    }

    /// Where a room that does not run here lives, if on another live node (for API calls
    /// and WHIP session requests that reach the wrong node). Errors count as "nowhere".
    pub async fn owner_elsewhere(&self, room: &RoomId) -> Option<NodeRecord> {
        if self.rooms.get(room).is_some() {
            return None;
        }
        let mut conn = self.conn.clone();
        let (owner, alive): (String, i64) = redis::Script::new(LOOKUP)
            .key(room_key(room))
            .arg(node_key(""))
            .invoke_async(&mut conn)
            .await
            .ok()?;
        if alive != 1 || owner == self.me.as_str() {
            return None;
        }
        self.record_of(&owner).await.ok().flatten()
    }

    async fn record_of(&self, id: &str) -> Result<Option<NodeRecord>, ClusterError> {
        if let Some(n) = lock(&self.known).iter().find(|n| n.id.as_str() == id) {
            return Ok(Some(n.clone()));
        }
        Ok(self
            .read_nodes()
            .await?
            .1
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| n.id.as_str() == id))
    }

    /// How old Redis's cluster data is, and the live records with their recent
    /// placements; updates the cached list.
    async fn read_nodes(&self) -> Result<(Duration, Vec<(NodeRecord, usize)>), ClusterError> {
        let mut conn = self.conn.clone();
        let flat: Vec<String> = redis::Script::new(NODES)
            .key(nodes_key())
            .key(since_key())
            .arg(node_key(""))
            .arg(placing_key(""))
            .arg(PLACING_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        let age = flat
            .first()
            .and_then(|a| a.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        self.settled.store(age >= SETTLE, Ordering::Relaxed);
        let nodes: Vec<(NodeRecord, usize)> = flat[1.min(flat.len())..]
            .chunks_exact(2)
            .filter_map(|c| {
                let rec: NodeRecord = serde_json::from_str(&c[0]).ok()?;
                let placing = placement::not_yet_running(&rec, &c[1]);
                Some((rec, placing))
            })
            .collect();
        *lock(&self.known) = nodes.iter().map(|(n, _)| n.clone()).collect();
        Ok((age, nodes))
    }

    /// This node's entries (`local`) and every other live node's published ones, each
    /// given its `node` field. Only this node's when Redis is unreachable.
    pub async fn whole_list(
        &self,
        which: List,
        mut local: Vec<serde_json::Value>,
    ) -> Vec<serde_json::Value> {
        for v in &mut local {
            v["node"] = self.me.as_str().into();
        }
        local.extend(self.peer_lists(which).await);
        local
    }

    /// Other live nodes' published lists, each entry given a `node` field. Empty when Redis
    /// is unreachable (the caller lists what it has itself).
    async fn peer_lists(&self, which: List) -> Vec<serde_json::Value> {
        let peers: Vec<NodeId> = match self.read_nodes().await {
            Ok((_, n)) => n
                .into_iter()
                .map(|(n, _)| n.id)
                .filter(|id| *id != self.me)
                .collect(),
            Err(e) => {
                tracing::warn!("cluster lists: Redis unreachable ({e}); listing this node only");
                return Vec::new();
            }
        };
        if peers.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = peers.iter().map(|p| which.key(p.as_str())).collect();
        let mut conn = self.conn.clone();
        let lists: Vec<Option<String>> =
            match redis::cmd("MGET").arg(&keys).query_async(&mut conn).await {
                Ok(l) => l,
                Err(_) => return Vec::new(),
            };
        let mut out = Vec::new();
        for (peer, list) in peers.iter().zip(lists) {
            let Some(Ok(serde_json::Value::Array(items))) =
                list.map(|l| serde_json::from_str::<serde_json::Value>(&l))
            else {
                continue;
            };
            for mut item in items {
                item["node"] = peer.as_str().into();
                out.push(item);
            }
        }
        out
    }

    /// Which live node lists the recording `id` (for downloads that reach the wrong node).
    pub async fn recording_node(&self, id: &str) -> Option<NodeRecord> {
        let node = self
            .peer_lists(List::Recordings)
            .await
            .into_iter()
            .find(|r| r["id"] == id)?["node"]
            .as_str()?
            .to_owned();
        self.record_of(&node).await.ok().flatten()
    }

    /// Publishes and renews every [`REFRESH`] until [`Cluster::leave`]; releases the
    /// claims of rooms that finish here as they finish.
    async fn run(self: Arc<Self>) {
        let mut events = self.rooms.events.subscribe();
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut catalog = Some(crate::recording::Catalog::default());
        let mut reported_down = false;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tick.tick() => {
                    // Transitions are logged once each (at start too, if Redis is not there).
                    match self.refresh(&mut catalog).await {
                        Ok(()) => {
                            if !self.redis_up.swap(true, Ordering::Relaxed) {
                                tracing::info!(node = %self.me, url = %self.public_url, "connected to Redis: node published");
                            }
                            reported_down = false;
                        }
                        Err(e) => {
                            if !reported_down {
                                tracing::error!("{e}; retrying every {} s", REFRESH.as_secs());
                                reported_down = true;
                            }
                            self.redis_up.store(false, Ordering::Relaxed);
                        }
                    }
                }
                ev = events.recv() => match ev {
                    Ok(e) => {
                        if let crate::room::server_events::ServerEvent::RoomFinished { room } = &e.event {
                            self.release_if_gone(room).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }

    async fn release_if_gone(&self, room: &str) {
        let Ok(id) = RoomId::parse(room) else { return };
        if self.rooms.get(&id).is_some() {
            return; // started again meanwhile: still ours
        }
        let mut conn = self.conn.clone();
        let r: Result<i64, _> = redis::Script::new(RELEASE)
            .key(room_key(&id))
            .arg(self.me.as_str())
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::debug!(%room, "claim not released ({e}); it lapses by itself");
        }
    }

    /// One refresh: the record, the lists, and a renewal per running room, in one round
    /// trip; then the live records are read back.
    async fn refresh(
        &self,
        catalog: &mut Option<crate::recording::Catalog>,
    ) -> Result<(), ClusterError> {
        let running = self.rooms.list();
        let record = self.record(&running);
        let summaries: Vec<_> = running.iter().map(|r| r.summary()).collect();
        let recordings = self.scan_recordings(catalog, &running).await;
        let ttl = NODE_TTL.as_millis() as u64;
        let me = self.me.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(me))
            .arg(serde_json::to_string(&record).unwrap_or_default())
            .arg("PX")
            .arg(ttl)
            .arg("GET")
            .cmd("SADD")
            .arg(nodes_key())
            .arg(me)
            .ignore()
            .cmd("SET")
            .arg(List::Rooms.key(me))
            .arg(serde_json::to_string(&summaries).unwrap_or_default())
            .arg("PX")
            .arg(ttl)
            .ignore();
        if let Some(r) = &recordings {
            pipe.cmd("SET")
                .arg(List::Recordings.key(me))
                .arg(serde_json::to_string(r).unwrap_or_default())
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        for room in &running {
            pipe.cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(room_key(&room.id))
                .arg(me)
                .arg(CLAIM_TTL.as_millis() as u64);
        }
        let mut conn = self.conn.clone();
        let (previous, owners): (Option<String>, Vec<String>) = {
            let mut v: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            let owners = v.split_off(1.min(v.len()));
            let previous = v
                .pop()
                .and_then(|p| redis::from_redis_value::<Option<String>>(p).ok())
                .flatten();
            let owners = owners
                .into_iter()
                .filter_map(|o| redis::from_redis_value::<String>(o).ok())
                .collect();
            (previous, owners)
        };
        if let Some(prev) = previous.and_then(|p| serde_json::from_str::<NodeRecord>(&p).ok()) {
            if prev.instance != self.instance {
                tracing::error!(
                    node = %self.me, other = %prev.public_url,
                    "another process publishes under this node id: give every node its own \
                     --node-id (joins are misrouted until then)"
                );
            }
        }
        let mut lost = std::collections::HashSet::new();
        for (room, owner) in running.iter().zip(owners) {
            if owner != me {
                if !lock(&self.lost).contains(&room.id) {
                    self.stats.lost_claims.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        room = %room.id, %owner,
                        "room runs here but is claimed by another node (placed there while this \
                         node was cut off): its participants stay here, new joins go there"
                    );
                }
                lost.insert(room.id.clone());
            }
        }
        *lock(&self.lost) = lost;
        self.read_nodes().await?;
        Ok(())
    }

    /// This node's record now.
    fn record(&self, running: &[Arc<crate::room::Room>]) -> NodeRecord {
        let cpu = {
            let mut mark = lock(&self.cpu_mark);
            let (now_cpu, now) = (process_cpu_seconds(), std::time::Instant::now());
            let wall = now.duration_since(mark.1).as_secs_f64();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let share = if wall > 0.0 {
                ((now_cpu - mark.0) / (wall * cores)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            *mark = (now_cpu, now);
            share as f32
        };
        let c = &self.config;
        NodeRecord {
            id: self.me.clone(),
            public_url: self.public_url.clone(),
            sip: self.sip.clone(),
            media_ip: c.public_ip.unwrap_or(c.media_ip).to_string(),
            draining: self.rooms.drain_deadline().is_some(),
            rooms: running.len(),
            participants: self.rooms.participant_count(),
            encoders: running
                .iter()
                .map(|r| r.stats.encoders.load(Ordering::Relaxed))
                .sum(),
            cpu,
            max_rooms: c.max_rooms,
            max_participants: c.max_participants_total,
            room_names: running.iter().map(|r| r.id.to_string()).collect(),
            instance: self.instance.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The local recording list (off the runtime; files measured once per size).
    async fn scan_recordings(
        &self,
        catalog: &mut Option<crate::recording::Catalog>,
        running: &[Arc<crate::room::Room>],
    ) -> Option<Vec<crate::recording::RecordingInfo>> {
        let mut cat = catalog.take().unwrap_or_default();
        let dir = self.config.recording.dir.clone();
        let live: Vec<_> = running.iter().filter_map(|r| r.recording_info()).collect();
        let (cat, list) = tokio::task::spawn_blocking(move || {
            let list = cat.scan(&dir, &live);
            (cat, list)
        })
        .await
        .ok()?;
        *catalog = Some(cat);
        match list {
            Ok(mut l) => {
                let excess = l.len().saturating_sub(MAX_PUBLISHED_RECORDINGS);
                l.drain(..excess);
                Some(l)
            }
            Err(e) => {
                tracing::warn!("recording directory not listed for the cluster: {e}");
                None
            }
        }
    }

    /// Stops publishing, deletes this node's record and releases its rooms' claims, so
    /// the other nodes re-place them at once (shutdown). Best effort: what fails lapses.
    pub async fn leave(&self) {
        self.stop.cancel();
        let me = self.me.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(node_key(me))
            .arg(List::Rooms.key(me))
            .arg(List::Recordings.key(me))
            .ignore()
            .cmd("SREM")
            .arg(nodes_key())
            .arg(me)
            .ignore();
        for room in self.rooms.list() {
            pipe.cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(room_key(&room.id))
                .arg(me)
                .ignore();
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => tracing::info!(node = %self.me, "left the cluster"),
            Err(e) => tracing::warn!("leaving the cluster: {e} (the record lapses by itself)"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CPU seconds (user + system) this process has used.
fn process_cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}
