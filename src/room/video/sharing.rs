//! The encoder-sharing decision, as a pure function: this tick's viewer groups (viewers
//! that see the same picture in the same format), the encoders running since last tick and
//! where each viewer was, and `now` → which encoders are kept (and for which group),
//! started, retired or promoted, which one each viewer receives from, and which encoders
//! must make a keyframe now or later. No encoder, picture, pool or socket here: the video
//! loop (`room/video.rs`) applies the decision.
//!
//! The rules (see the module doc of `room/video.rs` for why):
//! - A viewer on a *private* encoder of its own (one made for its keyframe) stays there
//!   while its format is unchanged; the encoder follows its group's picture.
//! - Each group keeps the shared encoder most of its viewers were on (ties: the earlier
//!   group), if that encoder makes the group's format; a group without one gets a new one,
//!   unless all its viewers are on private encoders.
//! - A viewer that moved to another encoder's stream, or asked for a keyframe, needs one:
//!   from that encoder at once if nobody else receives from it (at most one per
//!   [`SOLO_IDR_INTERVAL`]) or its last IDR is at least [`SHARED_IDR_INTERVAL`] old;
//!   otherwise from a new private encoder of the same picture (which starts with one), and
//!   the shared encoder's next IDR is scheduled `SHARED_IDR_INTERVAL` after its last.
//! - A viewer on a new encoder needs nothing (a new encoder starts with a keyframe).
//! - Encoders nobody receives from and nobody kept are retired; a private encoder whose
//!   shared counterpart is gone becomes the shared one.
//! - After encoding ([`rejoin`]): a private viewer rejoins the shared encoder of its
//!   picture when that one made an IDR.

use crate::codec::OutputCodec;
use crate::ids::ParticipantId;
use std::time::{Duration, Instant};

/// Minimum time between two requested IDRs of an encoder with one viewer.
pub const SOLO_IDR_INTERVAL: Duration = Duration::from_secs(1);
/// Minimum time between two requested IDRs of an encoder that several viewers share.
pub const SHARED_IDR_INTERVAL: Duration = Duration::from_secs(3);

/// What an encoder makes besides the picture: rung, frame rate and codec. Viewers of one
/// picture in one format share an encoder; a change of format is another encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub rung: usize,
    pub fps: u32,
    pub codec: OutputCodec,
}

/// A viewer this tick.
#[derive(Clone, Copy, Debug)]
pub struct Viewer {
    pub id: ParticipantId,
    /// Index of its group (viewers of the same picture in the same format).
    pub group: usize,
    /// The encoder it received from last tick.
    pub previous: Option<u64>,
    /// It asked for a keyframe (PLI/FIR) since the last tick.
    pub wants_keyframe: bool,
}

/// An encoder running since last tick.
#[derive(Clone, Copy, Debug)]
pub struct Running {
    pub id: u64,
    pub format: Format,
    /// Made for this viewer alone until the shared encoder of its picture sends an IDR.
    pub private_for: Option<ParticipantId>,
    pub last_idr: Option<Instant>,
    /// A requested IDR deferred by the interval limits.
    pub idr_due: Option<Instant>,
}

/// Where a viewer receives from this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A running encoder (by id).
    Running(u64),
    /// The `n`th entry of [`Decision::started`].
    Started(usize),
}

/// An encoder to start (from the pool): the picture of `group`, its first frame a keyframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    pub group: usize,
    /// Index (into the viewers) of the viewer it is private to, if it is.
    pub private_for: Option<usize>,
}

/// The tick's decision (buffers reused from tick to tick).
#[derive(Debug, Default)]
pub struct Decision {
    /// Running encoders that continue, with the group whose picture they make.
    pub kept: Vec<(u64, usize)>,
    pub started: Vec<Start>,
    /// Running encoders to give back.
    pub retired: Vec<u64>,
    /// Private encoders that become shared (their shared counterpart is gone).
    pub promoted: Vec<u64>,
    /// Per viewer: its source, or `None` (it waits a tick: its group has no encoder).
    pub sources: Vec<Option<Source>>,
    /// Running encoders that must make a keyframe at their next frame.
    pub keyframe_now: Vec<u64>,
    /// Running encoders' deferred keyframe times after this tick (changed ones only).
    pub idr_due: Vec<(u64, Option<Instant>)>,
    /// Viewers that will get a keyframe because of this decision (moved, asked, or new).
    pub keyframe_for: Vec<usize>,
}

/// Scratch for [`decide`], reused.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per running encoder: claimed by a group this tick.
    claimed: Vec<bool>,
    /// Per running encoder: viewers on it this tick.
    count: Vec<usize>,
    due: Vec<Option<Instant>>,
    /// (votes, group, running index)
    votes: Vec<(usize, usize, usize)>,
    /// Per group: the encoder it runs on.
    group_source: Vec<Option<Source>>,
    /// (viewer, running index) that need a keyframe from that encoder.
    need: Vec<(usize, usize)>,
    /// Per group: whether a shared (non-private) encoder makes its picture.
    shared: Vec<bool>,
    /// Per viewer: a keyframe request not served yet.
    pending: Vec<bool>,
}

/// Decides this tick's encoders. `formats[g]` is group `g`'s format; every viewer's
/// `group` indexes it.
pub fn decide(
    viewers: &[Viewer],
    formats: &[Format],
    running: &[Running],
    now: Instant,
    s: &mut Scratch,
    d: &mut Decision,
) {
    d.kept.clear();
    d.started.clear();
    d.retired.clear();
    d.promoted.clear();
    d.sources.clear();
    d.sources.resize(viewers.len(), None);
    d.keyframe_now.clear();
    d.idr_due.clear();
    d.keyframe_for.clear();
    s.claimed.clear();
    s.claimed.resize(running.len(), false);
    s.count.clear();
    s.count.resize(running.len(), 0);
    s.due.clear();
    s.due.extend(running.iter().map(|r| r.idr_due));
    s.group_source.clear();
    s.group_source.resize(formats.len(), None);
    s.need.clear();
    let position = |id: u64| running.iter().position(|r| r.id == id);
    // The private encoder viewer `v` stays on, if any.
    let private_of = |v: &Viewer| -> Option<usize> {
        let i = position(v.previous?)?;
        let r = &running[i];
        (r.private_for == Some(v.id) && r.format == formats[v.group]).then_some(i)
    };
    // Keyframe requests still to serve, per viewer.
    let mut pending = std::mem::take(&mut s.pending);
    pending.clear();
    pending.extend(viewers.iter().map(|v| v.wants_keyframe));

    // Private viewers stay.
    for (o, v) in viewers.iter().enumerate() {
        if let Some(i) = private_of(v) {
            s.claimed[i] = true;
            s.count[i] += 1;
            d.sources[o] = Some(Source::Running(running[i].id));
            if !d.kept.iter().any(|&(id, _)| id == running[i].id) {
                d.kept.push((running[i].id, v.group));
            }
        }
    }
    // Votes: the shared encoders of the right format each group's viewers were on.
    s.votes.clear();
    for v in viewers {
        let Some(i) = v.previous.and_then(position) else {
            continue;
        };
        let r = &running[i];
        if r.private_for.is_some() || r.format != formats[v.group] {
            continue;
        }
        match s
            .votes
            .iter_mut()
            .find(|(_, g, e)| *g == v.group && *e == i)
        {
            Some(vote) => vote.0 += 1,
            None => s.votes.push((1, v.group, i)),
        }
    }
    s.votes
        .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for n in 0..s.votes.len() {
        let (_, g, i) = s.votes[n];
        if s.group_source[g].is_none() && !s.claimed[i] {
            s.claimed[i] = true;
            s.group_source[g] = Some(Source::Running(running[i].id));
            d.kept.push((running[i].id, g));
        }
    }
    // Groups without one get a new encoder (unless all their viewers are private).
    for g in 0..formats.len() {
        if s.group_source[g].is_some() {
            continue;
        }
        let members = viewers.iter().filter(|v| v.group == g);
        if members.clone().all(|v| private_of(v).is_some()) {
            continue;
        }
        d.started.push(Start {
            group: g,
            private_for: None,
        });
        s.group_source[g] = Some(Source::Started(d.started.len() - 1));
    }
    // Everyone else onto their group's encoder; who needs a keyframe from it.
    for (o, v) in viewers.iter().enumerate() {
        if d.sources[o].is_some() {
            continue; // on its private encoder
        }
        let Some(src) = s.group_source[v.group] else {
            continue;
        };
        let asked = std::mem::take(&mut pending[o]);
        match src {
            Source::Started(_) => {
                d.sources[o] = Some(src);
                d.keyframe_for.push(o);
            }
            Source::Running(id) => {
                let i = position(id).expect("kept encoders are running");
                if v.previous != Some(id) || asked {
                    s.need.push((o, i));
                } else {
                    d.sources[o] = Some(src);
                    s.count[i] += 1;
                }
            }
        }
    }
    // Keyframe requests of viewers on their private encoders.
    for (o, v) in viewers.iter().enumerate() {
        if let Some(Source::Running(id)) = d.sources[o] {
            let i = position(id).expect("running");
            if running[i].private_for == Some(v.id) && s.count[i] == 1 && pending[o] {
                pending[o] = false;
                request(running, i, now, SOLO_IDR_INTERVAL, s, d);
                d.keyframe_for.push(o);
            }
        }
    }
    // Serve the keyframe needs, one encoder at a time (in order of first need).
    for n in 0..s.need.len() {
        let (_, i) = s.need[n];
        if s.need[..n].iter().any(|&(_, e)| e == i) {
            continue; // served with its first requester
        }
        let r = &running[i];
        let fresh = r
            .last_idr
            .is_none_or(|t| now.duration_since(t) >= SHARED_IDR_INTERVAL);
        let interval = if s.count[i] == 0 {
            Some(SOLO_IDR_INTERVAL)
        } else if fresh {
            Some(SHARED_IDR_INTERVAL)
        } else {
            None
        };
        if let Some(interval) = interval {
            request(running, i, now, interval, s, d);
            for m in n..s.need.len() {
                let (o, e) = s.need[m];
                if e == i {
                    d.sources[o] = Some(Source::Running(r.id));
                    s.count[i] += 1;
                    d.keyframe_for.push(o);
                }
            }
            continue;
        }
        // Not everyone's stream for a few viewers: a private encoder each until the
        // shared one's next IDR, which is scheduled.
        if let Some(t) = r.last_idr {
            let at = t + SHARED_IDR_INTERVAL;
            s.due[i] = Some(s.due[i].map_or(at, |x| x.min(at)));
        }
        for m in n..s.need.len() {
            let (o, e) = s.need[m];
            if e == i {
                d.started.push(Start {
                    group: viewers[o].group,
                    private_for: Some(o),
                });
                d.sources[o] = Some(Source::Started(d.started.len() - 1));
                d.keyframe_for.push(o);
            }
        }
    }
    // Retire what nobody receives from and nobody kept.
    for (i, r) in running.iter().enumerate() {
        if s.count[i] == 0 && !s.claimed[i] {
            d.retired.push(r.id);
        }
    }
    // A private encoder whose picture has no shared encoder any more becomes shared.
    s.shared.clear();
    s.shared.resize(formats.len(), false);
    for &(id, g) in &d.kept {
        if running[position(id).expect("running")]
            .private_for
            .is_none()
        {
            s.shared[g] = true;
        }
    }
    for st in &d.started {
        if st.private_for.is_none() {
            s.shared[st.group] = true;
        }
    }
    for &(id, g) in &d.kept {
        let r = &running[position(id).expect("running")];
        if r.private_for.is_some() && !s.shared[g] {
            d.promoted.push(id);
        }
    }
    // Deferred keyframes that are due now.
    for (i, r) in running.iter().enumerate() {
        if d.retired.contains(&r.id) {
            continue;
        }
        let mut due = s.due[i];
        if due.is_some_and(|t| now >= t) {
            if !d.keyframe_now.contains(&r.id) {
                d.keyframe_now.push(r.id);
            }
            due = None;
        }
        if due != r.idr_due {
            d.idr_due.push((r.id, due));
        }
    }
    s.pending = pending;
}

/// Asks running encoder `i` for an IDR no sooner than `interval` after its last one
/// (now, or deferred).
fn request(
    running: &[Running],
    i: usize,
    now: Instant,
    interval: Duration,
    s: &mut Scratch,
    d: &mut Decision,
) {
    match running[i].last_idr {
        Some(t) if now.duration_since(t) < interval => {
            let at = t + interval;
            s.due[i] = Some(s.due[i].map_or(at, |x| x.min(at)));
        }
        _ => {
            if !d.keyframe_now.contains(&running[i].id) {
                d.keyframe_now.push(running[i].id);
            }
            s.due[i] = None;
        }
    }
}

/// An encoder after this tick's encode, for [`rejoin`].
#[derive(Clone, Copy, Debug)]
pub struct Encoded {
    pub id: u64,
    /// The group whose picture it made this tick.
    pub group: usize,
    pub private_for: Option<ParticipantId>,
    /// It made an IDR this tick.
    pub idr: bool,
}

/// Private viewers that rejoin their picture's shared encoder because it just made an
/// IDR: (viewer, from private encoder, to shared encoder).
pub fn rejoin(encoders: &[Encoded], out: &mut Vec<(ParticipantId, u64, u64)>) {
    out.clear();
    for p in encoders {
        let Some(viewer) = p.private_for else {
            continue;
        };
        if let Some(s) = encoders
            .iter()
            .find(|s| s.private_for.is_none() && s.idr && s.group == p.group)
        {
            out.push((viewer, p.id, s.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H264: Format = Format {
        rung: 0,
        fps: 30,
        codec: OutputCodec::H264,
    };
    const VP8: Format = Format {
        rung: 0,
        fps: 30,
        codec: OutputCodec::Vp8,
    };

    fn ids(n: usize) -> Vec<ParticipantId> {
        (0..n).map(|_| ParticipantId::next()).collect()
    }

    fn viewer(id: ParticipantId, group: usize, previous: Option<u64>) -> Viewer {
        Viewer {
            id,
            group,
            previous,
            wants_keyframe: false,
        }
    }

    fn shared(id: u64, format: Format, last_idr: Option<Instant>) -> Running {
        Running {
            id,
            format,
            private_for: None,
            last_idr,
            idr_due: None,
        }
    }

    fn run(v: &[Viewer], f: &[Format], r: &[Running], now: Instant) -> Decision {
        let mut d = Decision::default();
        decide(v, f, r, now, &mut Scratch::default(), &mut d);
        d
    }

    #[test]
    fn a_first_tick_starts_one_encoder_per_group_and_nobody_needs_more() {
        let p = ids(4);
        let now = Instant::now();
        // Three H.264 viewers and one VP8 viewer of one picture: two groups.
        let v = [
            viewer(p[0], 0, None),
            viewer(p[1], 0, None),
            viewer(p[2], 0, None),
            viewer(p[3], 1, None),
        ];
        let d = run(&v, &[H264, VP8], &[], now);
        assert_eq!(
            d.started,
            [
                Start {
                    group: 0,
                    private_for: None
                },
                Start {
                    group: 1,
                    private_for: None
                }
            ]
        );
        assert_eq!(
            d.sources,
            [
                Some(Source::Started(0)),
                Some(Source::Started(0)),
                Some(Source::Started(0)),
                Some(Source::Started(1))
            ]
        );
        assert!(d.keyframe_now.is_empty() && d.retired.is_empty());
    }

    #[test]
    fn a_steady_tick_keeps_everything_and_asks_for_nothing() {
        let p = ids(3);
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let v = [
            viewer(p[0], 0, Some(1)),
            viewer(p[1], 0, Some(1)),
            viewer(p[2], 1, Some(2)),
        ];
        let r = [shared(1, H264, Some(t0)), shared(2, VP8, Some(t0))];
        let d = run(&v, &[H264, VP8], &r, now);
        assert_eq!(d.kept, [(1, 0), (2, 1)]);
        assert!(d.started.is_empty() && d.retired.is_empty() && d.keyframe_now.is_empty());
        assert!(d.keyframe_for.is_empty());
    }

    #[test]
    fn a_pli_on_a_solo_encoder_is_served_at_most_once_a_second() {
        let p = ids(2);
        let t0 = Instant::now();
        let mut v = [viewer(p[0], 0, Some(1)), viewer(p[1], 1, Some(2))];
        v[1].wants_keyframe = true;
        let r = [shared(1, H264, Some(t0)), shared(2, VP8, Some(t0))];
        // 2 s after the last IDR: now.
        let d = run(&v, &[H264, VP8], &r, t0 + Duration::from_secs(2));
        assert_eq!(d.keyframe_now, [2], "the VP8 viewer's encoder only");
        assert_eq!(d.keyframe_for, [1]);
        // 0.4 s after: deferred to 1 s after the last.
        let d = run(&v, &[H264, VP8], &r, t0 + Duration::from_millis(400));
        assert!(d.keyframe_now.is_empty());
        assert_eq!(d.idr_due, [(2, Some(t0 + SOLO_IDR_INTERVAL))]);
    }

    #[test]
    fn a_mover_onto_a_busy_shared_encoder_gets_a_private_one_and_rejoins_at_its_idr() {
        let p = ids(3);
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1); // the shared IDR is 1 s old: not fresh
                                               // P0 and P1 on encoder 1; P2 moves from encoder 2 (another picture) into group 0.
        let v = [
            viewer(p[0], 0, Some(1)),
            viewer(p[1], 0, Some(1)),
            viewer(p[2], 0, Some(2)),
        ];
        let r = [shared(1, H264, Some(t0)), shared(2, H264, Some(t0))];
        let d = run(&v, &[H264], &r, now);
        assert_eq!(
            d.started,
            [Start {
                group: 0,
                private_for: Some(2)
            }]
        );
        assert_eq!(d.sources[2], Some(Source::Started(0)));
        assert_eq!(d.retired, [2]);
        assert_eq!(d.idr_due, [(1, Some(t0 + SHARED_IDR_INTERVAL))]);
        assert_eq!(d.keyframe_for, [2]);
        // Next tick it stays on its private encoder (id 3)...
        let r = [
            shared(1, H264, Some(t0)),
            Running {
                id: 3,
                format: H264,
                private_for: Some(p[2]),
                last_idr: Some(now),
                idr_due: None,
            },
        ];
        let v = [
            viewer(p[0], 0, Some(1)),
            viewer(p[1], 0, Some(1)),
            viewer(p[2], 0, Some(3)),
        ];
        let d = run(&v, &[H264], &r, now + Duration::from_millis(33));
        assert_eq!(d.kept, [(3, 0), (1, 0)]);
        assert!(d.started.is_empty() && d.promoted.is_empty());
        // ...and rejoins when the shared one makes its IDR.
        let mut moves = Vec::new();
        rejoin(
            &[
                Encoded {
                    id: 1,
                    group: 0,
                    private_for: None,
                    idr: true,
                },
                Encoded {
                    id: 3,
                    group: 0,
                    private_for: Some(p[2]),
                    idr: false,
                },
            ],
            &mut moves,
        );
        assert_eq!(moves, [(p[2], 3, 1)]);
    }

    #[test]
    fn a_mover_onto_a_shared_encoder_with_an_old_idr_makes_it_send_one() {
        let p = ids(3);
        let t0 = Instant::now();
        let v = [
            viewer(p[0], 0, Some(1)),
            viewer(p[1], 0, Some(1)),
            viewer(p[2], 0, Some(2)),
        ];
        let r = [shared(1, H264, Some(t0)), shared(2, H264, Some(t0))];
        let d = run(&v, &[H264], &r, t0 + Duration::from_secs(4));
        assert!(d.started.is_empty());
        assert_eq!(d.keyframe_now, [1]);
        assert_eq!(d.sources[2], Some(Source::Running(1)));
    }

    #[test]
    fn codecs_never_share_and_a_format_change_is_another_encoder() {
        let p = ids(2);
        let t0 = Instant::now();
        // P1 was on the H.264 encoder; it is now a VP8 group: a new encoder, the old one
        // kept by P0.
        let v = [viewer(p[0], 0, Some(1)), viewer(p[1], 1, Some(1))];
        let r = [shared(1, H264, Some(t0))];
        let d = run(&v, &[H264, VP8], &r, t0 + Duration::from_secs(5));
        assert_eq!(d.kept, [(1, 0)]);
        assert_eq!(
            d.started,
            [Start {
                group: 1,
                private_for: None
            }]
        );
        assert!(d.keyframe_now.is_empty(), "P0's stream is not disturbed");
    }

    #[test]
    fn the_majority_keeps_the_encoder_and_a_lone_private_is_promoted() {
        let p = ids(3);
        let t0 = Instant::now();
        // The shared encoder 1's viewers all left; P2's private encoder 2 remains.
        let v = [viewer(p[2], 0, Some(2))];
        let r = [
            shared(1, H264, Some(t0)),
            Running {
                id: 2,
                format: H264,
                private_for: Some(p[2]),
                last_idr: Some(t0),
                idr_due: None,
            },
        ];
        let d = run(&v, &[H264], &r, t0 + Duration::from_secs(1));
        assert_eq!(d.retired, [1]);
        assert_eq!(d.promoted, [2]);
        // Two groups voting: group 0 has two viewers on encoder 5, group 1 one.
        let v = [
            viewer(p[0], 0, Some(5)),
            viewer(p[1], 0, Some(5)),
            viewer(p[2], 1, Some(5)),
        ];
        let d = run(&v, &[H264, H264], &[shared(5, H264, Some(t0))], t0);
        assert_eq!(d.kept, [(5, 0)]);
        assert_eq!(d.started[0].group, 1);
    }
}
