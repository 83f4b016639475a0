//! `GET /metrics`: the server's state in the Prometheus/OpenMetrics text format, written
//! with `prometheus-client`. Nothing is kept twice: each scrape takes a [`Snapshot`] of
//! the counters the rooms already keep (atomics written by the media threads) and encodes
//! it. Room-labelled series live as long as their room; server totals never reset.

use crate::room::{ParticipantKind, Rooms};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Histogram bounds for tick lateness and duration (seconds).
const EDGES_MS: [f64; 9] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 33.3, 50.0, 100.0];

#[derive(Debug, Default)]
struct Histogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl Histogram {
    fn of(h: &crate::metrics::Lateness) -> Self {
        let edges: Vec<Duration> = EDGES_MS
            .iter()
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
            .collect();
        let cumulative = h.cumulative(&edges);
        // The encoder takes each bucket's own count and accumulates them itself.
        let mut below = 0;
        let buckets = cumulative
            .iter()
            .map(|&(le, n)| {
                let own = n - below;
                below = n;
                (le, own)
            })
            .collect();
        Self {
            sum: h.sum().as_secs_f64(),
            count: below,
            buckets,
        }
    }
}

#[derive(Debug, Default)]
struct LinkSnap {
    participant: String,
    estimate_bps: Option<f64>,
    rung: Option<u32>,
    fps: u32,
    loss_ratio: f64,
}

#[derive(Debug, Default)]
struct RoomSnap {
    room: String,
    /// Participants by kind: web, whip, sip.
    by_kind: [u64; 3],
    counters: Vec<(&'static str, &'static str, u64)>,
    gauges: Vec<(&'static str, &'static str, f64)>,
    histograms: Vec<(&'static str, &'static str, Histogram)>,
    links: Vec<LinkSnap>,
}

/// Everything one scrape reports.
#[derive(Debug, Default)]
pub struct Snapshot {
    rooms: Vec<RoomSnap>,
    totals: Vec<(&'static str, &'static str, u64)>,
    process_cpu_seconds: f64,
    process_rss_bytes: u64,
    draining: bool,
    /// Cluster mode only: Redis reachable, live nodes, then counters.
    cluster: Option<ClusterSnap>,
}

#[derive(Debug, Default)]
struct ClusterSnap {
    redis_up: bool,
    nodes: usize,
    counters: Vec<(&'static str, &'static str, u64)>,
}

/// A listed participant's kind (watchers are not participants: `tessera_watchers`).
fn kind_index(k: ParticipantKind) -> Option<usize> {
    match k {
        ParticipantKind::Web => Some(0),
        ParticipantKind::Whip => Some(1),
        ParticipantKind::Sip => Some(2),
        ParticipantKind::Watcher => None,
    }
}

const KINDS: [&str; 3] = ["web", "whip", "sip"];

/// Resident set size from `/proc/self/statm` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

impl Snapshot {
    /// Reads every counter now (takes the rooms' control-plane locks briefly: call it off
    /// the async runtime).
    pub fn take(rooms: &Rooms) -> Self {
        let mut out = Snapshot::default();
        for r in rooms.list() {
            let s = &r.stats;
            let mut snap = RoomSnap {
                room: r.id.to_string(),
                ..Default::default()
            };
            for p in r.participants() {
                if let Some(k) = kind_index(p.kind) {
                    snap.by_kind[k] += 1;
                }
            }
            let links = r.links();
            let nacks: u64 = links.iter().map(|l| l.nacked_packets).sum();
            let plis: u64 = links.iter().map(|l| l.keyframe_requests).sum();
            snap.counters = vec![
                (
                    "tessera_rtp_packets_received",
                    "RTP packets received from participants",
                    s.packets_in.load(Relaxed),
                ),
                (
                    "tessera_rtp_payload_bytes_received",
                    "RTP payload bytes received from participants",
                    s.bytes_in.load(Relaxed),
                ),
                (
                    "tessera_rtp_packets_sent",
                    "RTP packets sent to participants",
                    s.packets_out.load(Relaxed),
                ),
                (
                    "tessera_rtp_payload_bytes_sent",
                    "RTP payload bytes sent to participants",
                    s.bytes_out.load(Relaxed),
                ),
                (
                    "tessera_video_ticks",
                    "Video ticks run",
                    s.video_ticks.load(Relaxed),
                ),
                (
                    "tessera_audio_ticks",
                    "Audio ticks run",
                    s.audio_ticks.load(Relaxed),
                ),
                (
                    "tessera_video_ticks_skipped",
                    "Video ticks skipped because the loop fell behind",
                    s.video_ticks_skipped.load(Relaxed),
                ),
                (
                    "tessera_audio_ticks_skipped",
                    "Audio ticks skipped because the loop fell behind",
                    s.audio_ticks_skipped.load(Relaxed),
                ),
                (
                    "tessera_video_frames_decoded",
                    "Input video frames decoded",
                    s.video_frames_decoded.load(Relaxed),
                ),
                (
                    "tessera_video_frames_encoded",
                    "Output video frames encoded",
                    s.video_frames_encoded.load(Relaxed),
                ),
                (
                    "tessera_dropped_inputs",
                    "Media packets dropped because a media thread's queue was full",
                    s.dropped_inputs.load(Relaxed),
                ),
                (
                    "tessera_video_inputs_rejected",
                    "Input pictures refused for exceeding the ingest limits",
                    s.video_inputs_rejected.load(Relaxed),
                ),
                (
                    "tessera_audio_frames_concealed",
                    "20 ms audio frames concealed (packet missing at its turn)",
                    s.audio_concealed.load(Relaxed),
                ),
                (
                    "tessera_nacked_packets",
                    "Packets viewers asked to have resent (NACK)",
                    nacks,
                ),
                (
                    "tessera_keyframe_requests_received",
                    "PLI/FIR received from viewers",
                    plis,
                ),
                (
                    "tessera_keyframe_requests_sent",
                    "PLI sent to publishers",
                    s.keyframe_requests_sent.load(Relaxed),
                ),
                (
                    "tessera_video_fps_steps_down",
                    "Times the video output frame rate was lowered because ticks ran late",
                    s.video_fps_steps_down.load(Relaxed),
                ),
                (
                    "tessera_video_encoder_waits",
                    "Times a viewer waited a tick because no ready encoder was there",
                    s.video_encoder_waits.load(Relaxed),
                ),
                (
                    "tessera_presentations",
                    "Presentations started (screens shared)",
                    s.presentations.load(Relaxed),
                ),
                (
                    "tessera_video_frames_unchanged",
                    "Frames of pictures not encoded because nothing in them changed",
                    s.video_frames_unchanged.load(Relaxed),
                ),
                (
                    "tessera_send_limits",
                    "Changes of what a camera's sender is asked to send (size, bitrate, frame rate)",
                    s.send_limits.load(Relaxed),
                ),
            ];
            let rec = r.recording_info();
            snap.gauges = vec![
                (
                    "tessera_watchers",
                    "WHEP watchers of the room (not participants)",
                    r.watcher_count() as f64,
                ),
                (
                    "tessera_presenting",
                    "1 while someone presents in the room",
                    (s.presenter.load(Relaxed) != 0) as u8 as f64,
                ),
                (
                    "tessera_video_encoders",
                    "Video encoders running (distinct pictures)",
                    s.encoders.load(Relaxed) as f64,
                ),
                (
                    "tessera_video_output_fps",
                    "The room's video output frame rate now (lowered in steps under overload)",
                    s.video_fps.load(Relaxed) as f64,
                ),
                (
                    "tessera_audio_encoders",
                    "Audio encodes in the last audio tick",
                    s.audio_encoders.load(Relaxed) as f64,
                ),
                (
                    "tessera_audio_decoders",
                    "Audio decodes in the last audio tick",
                    s.audio_decoders.load(Relaxed) as f64,
                ),
                (
                    "tessera_recording_active",
                    "1 while the room is being recorded",
                    rec.is_some() as u8 as f64,
                ),
                (
                    "tessera_recording_dropped_frames",
                    "Frames the running recording dropped",
                    rec.map_or(0, |r| r.dropped_frames) as f64,
                ),
            ];
            snap.histograms = vec![
                (
                    "tessera_video_tick_lateness_seconds",
                    "How long after its deadline each video tick started",
                    Histogram::of(&s.video_lateness),
                ),
                (
                    "tessera_audio_tick_lateness_seconds",
                    "How long after its deadline each audio tick started",
                    Histogram::of(&s.audio_lateness),
                ),
                (
                    "tessera_video_tick_duration_seconds",
                    "Wall time of each video tick's work",
                    Histogram::of(&s.video_tick_duration),
                ),
                (
                    "tessera_audio_tick_duration_seconds",
                    "Wall time of each audio tick's work",
                    Histogram::of(&s.audio_tick_duration),
                ),
            ];
            snap.links = links
                .iter()
                .map(|l| LinkSnap {
                    participant: l.participant_id.to_string(),
                    estimate_bps: l.estimate_kbps.map(|k| k as f64 * 1e3),
                    rung: l.rung,
                    fps: l.fps,
                    loss_ratio: l.loss_percent as f64 / 100.0,
                })
                .collect();
            out.rooms.push(snap);
        }
        out.rooms.sort_by(|a, b| a.room.cmp(&b.room));
        let e = &rooms.events;
        out.totals = vec![
            (
                "tessera_rooms_started",
                "Rooms started",
                e.rooms_started.load(Relaxed),
            ),
            (
                "tessera_rooms_finished",
                "Rooms finished",
                e.rooms_finished.load(Relaxed),
            ),
            (
                "tessera_participants_joined",
                "Participants joined",
                e.participants_joined.load(Relaxed),
            ),
            (
                "tessera_participants_left",
                "Participants left",
                e.participants_left.load(Relaxed),
            ),
            (
                "tessera_recordings_finished",
                "Recordings finished",
                e.recordings_finished.load(Relaxed),
            ),
            (
                "tessera_streams_started",
                "RTMP pushes that started publishing (reconnections included)",
                e.streams_started.load(Relaxed),
            ),
            (
                "tessera_streams_failed",
                "RTMP push connections that failed or dropped (each is retried)",
                e.streams_failed.load(Relaxed),
            ),
            (
                "tessera_webhooks_delivered",
                "Events a webhook receiver accepted (2xx)",
                rooms.webhook_stats.delivered.load(Relaxed),
            ),
            (
                "tessera_webhooks_retried",
                "Webhook attempts that failed and were retried",
                rooms.webhook_stats.retried.load(Relaxed),
            ),
            (
                "tessera_webhooks_given_up",
                "Events given up on after every retry failed",
                rooms.webhook_stats.given_up.load(Relaxed),
            ),
            (
                "tessera_webhooks_dropped",
                "Events dropped because a receiver's queue was full",
                rooms.webhook_stats.dropped.load(Relaxed),
            ),
            (
                "tessera_sip_rtp_rejected",
                "RTP/RTCP datagrams on a call's port dropped for not coming from the caller",
                e.sip_rtp_rejected.load(Relaxed),
            ),
        ];
        out.process_cpu_seconds = crate::metrics::process_cpu_ns() as f64 / 1e9;
        out.process_rss_bytes = rss_bytes();
        out.draining = rooms.drain_deadline().is_some();
        out
    }

    /// The OpenMetrics text exposition.
    /// Adds the cluster's gauges and counters (cluster mode).
    pub fn with_cluster(mut self, c: Option<&crate::cluster::Cluster>) -> Self {
        self.cluster = c.map(|c| {
            let st = &c.stats;
            ClusterSnap {
                redis_up: c.redis_up(),
                nodes: c.nodes().len(),
                counters: vec![
                    (
                        "tessera_cluster_redirects",
                        "Joins sent to the node that hosts their room (WebSocket, WHIP, SIP)",
                        st.redirects.load(Relaxed),
                    ),
                    (
                        "tessera_cluster_placements",
                        "New rooms this node placed (on itself or another node)",
                        st.placements.load(Relaxed),
                    ),
                    (
                        "tessera_cluster_store_refusals",
                        "Joins to new rooms refused because Redis was unreachable",
                        st.store_refusals.load(Relaxed),
                    ),
                    (
                        "tessera_cluster_lost_claims",
                        "Renewals that found a running room claimed by another node",
                        st.lost_claims.load(Relaxed),
                    ),
                ],
            }
        });
        self
    }

    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, &str)>, u64)],
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)?;
        } else {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, &str)>, f64)],
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_gauge(v)?;
        } else {
            m.encode_family(labels)?.encode_gauge(v)?;
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        gauge(
            &mut enc,
            "tessera_rooms",
            "Rooms running",
            &[(vec![], self.rooms.len() as f64)],
        )?;
        gauge(
            &mut enc,
            "tessera_draining",
            "1 while the node drains (starts no new rooms)",
            &[(vec![], f64::from(u8::from(self.draining)))],
        )?;
        if let Some(c) = &self.cluster {
            gauge(
                &mut enc,
                "tessera_cluster_redis_up",
                "1 if the last refresh reached Redis",
                &[(vec![], f64::from(u8::from(c.redis_up)))],
            )?;
            gauge(
                &mut enc,
                "tessera_cluster_nodes",
                "Live nodes as last read from Redis",
                &[(vec![], c.nodes as f64)],
            )?;
            for (name, help, v) in &c.counters {
                counter(&mut enc, name, help, &[(vec![], *v)])?;
            }
        }
        let by_kind: Vec<(Vec<(&str, &str)>, f64)> = (0..3)
            .map(|k| {
                let n: u64 = self.rooms.iter().map(|r| r.by_kind[k]).sum();
                (vec![("kind", KINDS[k])], n as f64)
            })
            .collect();
        gauge(
            &mut enc,
            "tessera_participants",
            "Participants in all rooms, by how they joined",
            &by_kind,
        )?;
        let room_series: Vec<(Vec<(&str, &str)>, f64)> = self
            .rooms
            .iter()
            .flat_map(|r| {
                (0..3).map(move |k| {
                    (
                        vec![("room", r.room.as_str()), ("kind", KINDS[k])],
                        r.by_kind[k] as f64,
                    )
                })
            })
            .collect();
        gauge(
            &mut enc,
            "tessera_room_participants",
            "Participants per room, by how they joined",
            &room_series,
        )?;
        for (name, help, v) in &self.totals {
            counter(&mut enc, name, help, &[(vec![], *v)])?;
        }
        if let Some(first) = self.rooms.first() {
            for i in 0..first.counters.len() {
                let (name, help, _) = first.counters[i];
                let series: Vec<_> = self
                    .rooms
                    .iter()
                    .map(|r| (vec![("room", r.room.as_str())], r.counters[i].2))
                    .collect();
                counter(&mut enc, name, help, &series)?;
            }
            for i in 0..first.gauges.len() {
                let (name, help, _) = first.gauges[i];
                let series: Vec<_> = self
                    .rooms
                    .iter()
                    .map(|r| (vec![("room", r.room.as_str())], r.gauges[i].2))
                    .collect();
                gauge(&mut enc, name, help, &series)?;
            }
            for i in 0..first.histograms.len() {
                let (name, help, _) = first.histograms[i];
                let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
                for r in &self.rooms {
                    let h = &r.histograms[i].2;
                    let label = vec![("room", r.room.as_str())];
                    m.encode_family(&label)?
                        .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                }
            }
        }
        let links = |f: &dyn Fn(&LinkSnap) -> Option<f64>| -> Vec<(Vec<(&str, &str)>, f64)> {
            self.rooms
                .iter()
                .flat_map(|r| {
                    r.links.iter().filter_map(move |l| {
                        f(l).map(|v| {
                            (
                                vec![
                                    ("room", r.room.as_str()),
                                    ("participant", l.participant.as_str()),
                                ],
                                v,
                            )
                        })
                    })
                })
                .collect()
        };
        gauge(
            &mut enc,
            "tessera_link_estimate_bps",
            "Estimated downlink of each viewer (bit/s)",
            &links(&|l| l.estimate_bps),
        )?;
        gauge(
            &mut enc,
            "tessera_link_rung",
            "Ladder rung each viewer is sent (0 = best)",
            &links(&|l| l.rung.map(f64::from)),
        )?;
        gauge(
            &mut enc,
            "tessera_link_fps",
            "Frame rate each viewer is sent",
            &links(&|l| Some(l.fps as f64)),
        )?;
        gauge(
            &mut enc,
            "tessera_link_loss_ratio",
            "Loss each viewer reports (0..1)",
            &links(&|l| Some(l.loss_ratio)),
        )?;
        let mut m = enc.encode_descriptor(
            "process_cpu_seconds",
            "CPU time of the server process (user + system)",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&self.process_cpu_seconds, None)?;
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            &[(vec![], self.process_rss_bytes as f64)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_server_encodes_valid_openmetrics() {
        let rooms = Rooms::new(crate::room::RoomSettings {
            config: crate::config::Config::default(),
            layouts: crate::layout::LayoutSet::builtin(),
        });
        let text = Snapshot::take(&rooms).encode();
        assert!(
            text.contains("# TYPE tessera_rooms gauge\ntessera_rooms 0"),
            "{text}"
        );
        assert!(text.contains("tessera_participants{kind=\"sip\"} 0"));
        assert!(text.contains("tessera_rooms_started_total 0"));
        assert!(text.contains("process_cpu_seconds_total "));
        assert!(text.ends_with("# EOF\n"));
    }
}
