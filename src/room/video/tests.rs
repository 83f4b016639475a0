//! Encoder sharing: the number of running encoders equals the number of distinct pictures,
//! viewers of the same picture get the same encoded frames, and the count follows joins,
//! leaves and speaker changes.

use super::*;
use crate::codec::video::H264Encoder;
use crate::codec::video::{Decoded, VideoDecoder};
use crate::codec::VideoCodec;
use crate::layout::LayoutSet;
use rtc::rtp::codec::h264::H264Payloader;
use std::collections::HashMap;
use tokio::sync::mpsc;

struct Harness {
    video: VideoLoop,
    events: broadcast::Receiver<RoomEvent>,
    ids: Vec<ParticipantId>,
    outs: Vec<mpsc::Receiver<rtc::rtp::packet::Packet>>,
    links: Vec<Arc<ViewerLink>>,
    speaker: Arc<AtomicU64>,
    k: u64,
    t0: Instant,
    /// Every camera shows a new frame each tick (as live cameras do), so pictures change;
    /// off, tiles change only when a test feeds frames.
    moving: bool,
}

impl Harness {
    fn new(layout: LayoutSpec, n: usize) -> Self {
        Self::with_config(layout, n, &small())
    }

    fn with_config(layout: LayoutSpec, n: usize, config: &Config) -> Self {
        let config = config.clone();
        let speaker = Arc::new(AtomicU64::new(0));
        let (events_tx, events) = broadcast::channel(64);
        let mut h = Self {
            events,
            video: VideoLoop::new(
                &config,
                layout,
                events_tx,
                speaker.clone(),
                Arc::new(RoomStats::default()),
            ),
            ids: vec![],
            outs: vec![],
            links: vec![],
            speaker,
            k: 0,
            t0: Instant::now(),
            moving: true,
        };
        for i in 0..n {
            h.join(&format!("P{i}"));
        }
        h
    }

    fn join(&mut self, name: &str) {
        let _ = self.join_with(name, |s| s);
    }

    /// A participant whose requests upstream (PLIs, send limits) the test reads.
    fn join_kept(&mut self, name: &str) -> mpsc::Receiver<Upstream> {
        self.join_with(name, |s| s)
    }

    /// A viewer whose offer had no H.264: it is sent VP8.
    fn join_vp8(&mut self, name: &str) {
        let _ = self.join_with(name, RtpSink::with_vp8);
    }

    /// Joins a participant (its video, if any, H.264); returns where its requests upstream
    /// go (dropped by most tests: then nothing is delivered there).
    fn join_with(
        &mut self,
        name: &str,
        sink: impl FnOnce(RtpSink) -> RtpSink,
    ) -> mpsc::Receiver<Upstream> {
        let id = ParticipantId::next();
        let (tx, rx) = mpsc::channel(100_000);
        let (up, up_rx) = mpsc::channel(64);
        let link = Arc::new(ViewerLink::default());
        self.video.handle(VideoCmd::Join {
            id,
            name: name.into(),
        });
        self.video.handle(VideoCmd::Attach {
            id,
            payload_types: [(102, VideoCodec::H264)].into(),
            sink: Some(sink(RtpSink::new(1, 102, tx))),
            upstream: up,
            link: link.clone(),
        });
        self.ids.push(id);
        self.outs.push(rx);
        self.links.push(link);
        up_rx
    }

    /// One tick at media time k/fps (a virtual clock: the policy's timing is exact).
    fn tick(&mut self) {
        // Ready encoders for everyone (the room's thread never waits; a test wants each
        // tick's outcome to be the same on a loaded machine).
        self.video.settle_encoders();
        if self.moving {
            self.video.touch_cameras();
        }
        let now = self.t0 + self.video.period() * self.k as u32;
        self.video.tick(now, self.k);
        self.k += 1;
    }

    fn idrs(&self, i: usize) -> u64 {
        self.links[i].idrs.load(Ordering::Relaxed)
    }

    /// The payload bytes each viewer received in the last tick.
    fn last_frames(&mut self) -> Vec<Vec<u8>> {
        self.outs
            .iter_mut()
            .map(|rx| {
                // Drain everything; keep the packets of the last complete frame.
                let (mut last, mut cur) = (Vec::new(), Vec::new());
                while let Ok(p) = rx.try_recv() {
                    cur.extend_from_slice(&p.payload);
                    if p.header.marker {
                        last = std::mem::take(&mut cur);
                    }
                }
                last
            })
            .collect()
    }
}

#[test]
fn senders_are_asked_for_their_largest_tile_and_a_raise_brings_a_pli() {
    // 1280x720, focus + one strip tile, four people, P0 speaking: P0 and P1 are in a
    // focus somewhere, P2 only in strips, P3 in nobody's picture.
    let mut h = Harness::with_config(strip_of_one(), 0, &Config::default());
    let mut ups: Vec<_> = (0..4).map(|i| h.join_kept(&format!("P{i}"))).collect();
    h.speaker.store(h.ids[0].0, Ordering::Relaxed);
    let asked = |rx: &mut mpsc::Receiver<Upstream>| {
        let mut got = Vec::new();
        while let Ok(u) = rx.try_recv() {
            got.push(u);
        }
        got
    };
    for _ in 0..3 {
        h.tick();
    }
    let first: Vec<_> = ups.iter_mut().map(asked).collect();
    let size = |u: &[Upstream]| match u {
        [Upstream::SendLimit(l)] => (l.width, l.height),
        other => panic!("one send limit expected, got {other:?}"),
    };
    assert_eq!(size(&first[0]), (1280, 720));
    assert_eq!(size(&first[1]), (1280, 720));
    assert!(size(&first[2]).1 <= 180, "{:?}", first[2]);
    assert!(first[3].is_empty(), "shown nowhere: not asked yet");
    assert_eq!(h.video.stats.send_limits.load(Ordering::Relaxed), 3);
    // Nothing changes: nothing more is asked.
    for _ in 0..40 {
        h.tick();
    }
    assert!(ups.iter_mut().all(|rx| asked(rx).is_empty()));
    // Shown nowhere for HIDDEN_AFTER: P3 is asked for the floor.
    h.k += 30 * demand::HIDDEN_AFTER.as_secs();
    h.tick();
    let p3 = asked(&mut ups[3]);
    assert!(
        matches!(p3.as_slice(), [Upstream::SendLimit(l)] if (l.width, l.height) == demand::FLOOR),
        "{p3:?}"
    );
    // P3 speaks: it is asked for the focus size at once, and a PLI follows; P2, now in
    // nobody's picture, is lowered to the floor HIDDEN_AFTER later.
    h.k += 31; // (a second after the last change)
    h.speaker.store(h.ids[3].0, Ordering::Relaxed);
    h.tick();
    let p3 = asked(&mut ups[3]);
    assert!(
        matches!(p3.as_slice(), [Upstream::SendLimit(l), Upstream::KeyframeRequest] if l.height == 720),
        "{p3:?}"
    );
    for _ in 0..31 {
        h.tick();
    }
    assert!(asked(&mut ups[2]).is_empty(), "a lower size waits");
    h.k += 30 * demand::HIDDEN_AFTER.as_secs();
    h.tick();
    let p2 = asked(&mut ups[2]);
    assert!(
        matches!(p2.as_slice(), [Upstream::SendLimit(l)] if (l.width, l.height) == demand::FLOOR),
        "{p2:?}"
    );
}

/// Whether a PLI is among the requests sent upstream since the last look (send limits
/// go the same way).
fn pli_sent(rx: &mut mpsc::Receiver<Upstream>) -> bool {
    let mut pli = false;
    while let Ok(u) = rx.try_recv() {
        pli |= u == Upstream::KeyframeRequest;
    }
    pli
}

fn strip_of_one() -> LayoutSpec {
    LayoutSpec::from_json("test", r#"{"name":"duo","type":"focus","max_strip":1}"#).unwrap()
}

#[test]
fn two_people_two_pictures() {
    let mut h = Harness::new(LayoutSet::builtin().get("grid").unwrap().clone(), 2);
    h.tick();
    assert_eq!(h.video.encoder_count(), 2);
}

#[test]
fn personal_grids_need_one_encoder_each() {
    let mut h = Harness::new(LayoutSet::builtin().get("grid").unwrap().clone(), 5);
    h.tick();
    assert_eq!(h.video.encoder_count(), 5);
}

#[test]
fn viewers_who_see_the_same_picture_share_an_encoder() {
    // Focus + 1 strip tile shows two people. With five, P0 and P1 each see a picture of
    // their own; P2, P3 and P4 all see [P0, P1].
    let mut h = Harness::new(strip_of_one(), 5);
    h.tick();
    assert_eq!(h.video.encoder_count(), 3);
    // Compare the first frames: IDRs, whose bytes carry each picture's content. (Later P
    // frames of unchanged pictures are all-skip and can be byte-identical across encoders:
    // at openh264's Low complexity they are.)
    let f = h.last_frames();
    assert!(!f[2].is_empty());
    assert_eq!(f[2], f[3]);
    assert_eq!(f[3], f[4]);
    assert_ne!(f[0], f[2]);

    // P3 becomes the active speaker: P3 sees [P0, P1]; P0 sees [P3, P1]; P1, P2, P4
    // see [P3, P0] -> still three pictures, different groups. Each group keeps the encoder
    // most of its viewers were on, which just encodes the new picture: P0 keeps its own,
    // P2 and P4 keep theirs (no IDR). P3 leaves that stream for a new encoder (IDR first),
    // and P1 moves onto P2's and P4's stream: it needs an IDR, from a private encoder, so
    // that the others' stream does not restart.
    let before: Vec<u64> = (0..5).map(|i| h.idrs(i)).collect();
    h.speaker.store(h.ids[3].0, Ordering::Relaxed);
    h.tick();
    assert_eq!(
        h.video.encoder_count(),
        4,
        "three pictures + P1's private one"
    );
    let idrs: Vec<u64> = (0..5).map(|i| h.idrs(i) - before[i]).collect();
    assert_eq!(idrs, vec![0, 1, 0, 1, 0], "only the movers get an IDR");
    let f = h.last_frames();
    assert_eq!(f[2], f[4], "P2 and P4 still share");
    assert_ne!(f[1], f[2], "P1's private stream");
    // At the shared encoder's next IDR (at most SHARED_IDR_INTERVAL after its last) P1
    // rejoins it: three encoders again, and the same bytes for P1, P2 and P4.
    for _ in 0..(SHARED_IDR_INTERVAL.as_millis() / 33 + 2) {
        h.tick();
    }
    assert_eq!(h.video.encoder_count(), 3);
    h.tick();
    let f = h.last_frames();
    assert_eq!(f[1], f[2]);
    assert_eq!(f[2], f[4]);

    // Leaving shrinks the count: with three people, everyone sees the other two.
    h.video.handle(VideoCmd::Leave { id: h.ids[4] });
    h.video.handle(VideoCmd::Leave { id: h.ids[3] });
    h.tick();
    assert_eq!(h.video.encoder_count(), 3);
    h.video.handle(VideoCmd::Leave { id: h.ids[2] });
    h.tick();
    assert_eq!(h.video.encoder_count(), 2);
}

/// Four people, focus + one strip tile, five ticks: P2 and P3 share [P0, P1]. Returns
/// the harness and everyone's IDR count so far.
fn four_settled(config: &Config) -> (Harness, Vec<u64>) {
    let mut h = Harness::with_config(strip_of_one(), 4, config);
    for _ in 0..5 {
        h.tick();
    }
    assert_eq!(h.video.encoder_count(), 3);
    h.last_frames();
    let before = (0..4).map(|i| h.idrs(i)).collect();
    (h, before)
}

fn small() -> Config {
    let mut config = Config::default();
    config.video.width = 160;
    config.video.height = 90;
    config
}

#[test]
fn a_viewer_moving_to_another_picture_gets_an_idr() {
    let (mut h, before) = four_settled(&small());
    // P2 speaks: P0 sees [P2, P1], P1 and P3 see [P2, P0], P2 still sees [P0, P1]. P1's
    // encoder just encodes P1's new picture; P3 moves onto that stream, which is not its
    // decoder's: it must start with an IDR (here from a private encoder, since P1's
    // encoder sent its IDR 5 ticks ago), and P1's stream must not restart for it.
    h.speaker.store(h.ids[2].0, Ordering::Relaxed);
    h.tick();
    let frames = h.last_frames();
    for (i, f) in frames.iter().enumerate() {
        assert!(!f.is_empty(), "viewer {i} got a frame");
    }
    let first_nal = frames[3][0] & 0x1f;
    assert!(
        is_idr_start(first_nal),
        "P3's first packet after regrouping: NAL type {first_nal}"
    );
    let idrs: Vec<u64> = (0..4).map(|i| h.idrs(i) - before[i]).collect();
    assert_eq!(idrs, vec![0, 0, 0, 1], "an IDR for the mover only");
    let p1 = frames[1][0] & 0x1f;
    assert!(!is_idr_start(p1), "P1 kept its stream: NAL type {p1}");
    assert_eq!(h.video.encoder_count(), 4, "P3's private encoder");
}

/// Feeds one H.264 frame (solid colour) from every participant.
fn feed_frames(
    h: &mut Harness,
    encs: &mut [crate::codec::video::H264Encoder],
    seqs: &mut [u16],
    k: u32,
) {
    for (i, id) in h.ids.clone().into_iter().enumerate() {
        let f = I420Frame::solid(64, 36, (40 + 40 * i as u8, 128, 128));
        send_h264(h, id, false, &mut encs[i], &f, &mut seqs[i], k);
    }
}

#[test]
fn participants_nobody_sees_are_not_decoded_and_get_a_pli_when_shown() {
    // Focus + one strip tile shows two people; with four, P3 is in nobody's picture.
    let mut h = Harness::new(strip_of_one(), 0);
    let mut upstream = Vec::new();
    for i in 0..4 {
        let id = ParticipantId::next();
        let (tx, _rx) = mpsc::channel(100_000);
        let (up, up_rx) = mpsc::channel(64);
        h.video.handle(VideoCmd::Join {
            id,
            name: format!("P{i}"),
        });
        h.video.handle(VideoCmd::Attach {
            id,
            payload_types: [(102, VideoCodec::H264)].into(),
            sink: Some(RtpSink::new(1, 102, tx)),
            upstream: up,
            link: Default::default(),
        });
        h.ids.push(id);
        upstream.push(up_rx);
    }
    let settings = EncoderSettings {
        width: 64,
        height: 36,
        fps: 30,
        bitrate_bps: 100_000,
        idr_interval_frames: 1000,
        complexity: Default::default(),
        analysis: Default::default(),
    };
    let mut encs: Vec<_> = (0..4)
        .map(|_| H264Encoder::new(settings).unwrap())
        .collect();
    let mut seqs = vec![0u16; 4];
    for k in 0..10 {
        feed_frames(&mut h, &mut encs, &mut seqs, k);
        h.tick();
    }
    let decoded = |h: &Harness, i: usize| {
        h.video
            .participants
            .iter()
            .find(|p| p.id == h.ids[i])
            .unwrap()
            .input
            .decoded
    };
    for i in 0..3 {
        assert!(
            decoded(&h, i) >= 9,
            "P{i} is on screen and decoded: {}",
            decoded(&h, i)
        );
    }
    assert_eq!(decoded(&h, 3), 0, "P3 is on nobody's screen");
    for rx in &mut upstream {
        while rx.try_recv().is_ok() {}
    }
    // P3 becomes the active speaker: now everyone else sees P3, so P3 is decoded; its
    // frames so far were P-frames, so the server asks it for a keyframe first.
    h.speaker.store(h.ids[3].0, Ordering::Relaxed);
    feed_frames(&mut h, &mut encs, &mut seqs, 10);
    h.tick();
    assert!(
        pli_sent(&mut upstream[3]),
        "PLI to the newly visible participant"
    );
    encs[3].request_keyframe();
    for k in 11..15 {
        feed_frames(&mut h, &mut encs, &mut seqs, k);
        h.tick();
    }
    assert!(
        decoded(&h, 3) >= 3,
        "P3 decodes once its keyframe arrives: {}",
        decoded(&h, 3)
    );
}

/// Sends one AV1 temporal unit from participant `id` as RTP packets.
fn send_av1(h: &mut Harness, id: ParticipantId, tu: &[u8], seq: &mut u16, ts: u32, now: Instant) {
    use rtc::rtp::packetizer::Payloader;
    let pkts = rtc::rtp::codec::av1::Av1Payloader::default()
        .payload(1100, &bytes::Bytes::copy_from_slice(tu))
        .unwrap();
    let n = pkts.len();
    for (i, payload) in pkts.into_iter().enumerate() {
        h.video.handle(VideoCmd::Packet {
            id,
            content: false,
            arrival: now,
            pt: 45,
            seq: *seq,
            ts,
            marker: i + 1 == n,
            payload,
        });
        *seq = seq.wrapping_add(1);
    }
}

#[test]
fn an_oversize_input_is_refused_for_a_while_and_only_that_participant() {
    let huge = crate::codec::video::av1_temporal_units(include_bytes!(
        "../../../tests/data/av1/red_8192x8192.obu"
    ))
    .iter()
    .map(|u| u.to_vec())
    .collect::<Vec<_>>();
    let small = crate::codec::video::av1_temporal_units(include_bytes!(
        "../../../tests/data/av1/blue_320x180.obu"
    ))
    .iter()
    .map(|u| u.to_vec())
    .collect::<Vec<_>>();
    let mut h = Harness::new(LayoutSet::builtin().get("grid").unwrap().clone(), 2);
    let (bad, viewer) = (h.ids[0], h.ids[1]);
    let (up_tx, mut up_rx) = mpsc::channel(64);
    h.video.handle(VideoCmd::Attach {
        id: bad,
        payload_types: HashMap::from([(45, VideoCodec::Av1)]),
        sink: None,
        upstream: up_tx,
        link: Default::default(),
    });
    let t0 = Instant::now();
    let mut seq = 1000u16;
    for (i, tu) in huge.iter().enumerate() {
        send_av1(&mut h, bad, tu, &mut seq, i as u32 * 3000, t0);
    }
    h.video.settle_encoders();
    h.video.tick(t0, 0);
    let event = h.events.try_recv().expect("the room is told");
    match event {
        RoomEvent::InputRejected {
            participant_id,
            reason,
        } => {
            assert_eq!(participant_id, bad);
            assert!(reason.contains("8192x8192"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        h.video.stats.video_inputs_rejected.load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        h.video.stats.video_frames_decoded.load(Ordering::Relaxed),
        0
    );
    // Within the back-off even a valid stream is dropped undecoded, and not reported again.
    let mut ts = 10 * 3000;
    for (k, tu) in small.iter().enumerate() {
        send_av1(
            &mut h,
            bad,
            tu,
            &mut seq,
            ts,
            t0 + Duration::from_millis(100),
        );
        ts += 3000;
        h.video
            .tick(t0 + Duration::from_millis(100 + k as u64), 1 + k as u64);
    }
    assert_eq!(
        h.video.stats.video_frames_decoded.load(Ordering::Relaxed),
        0
    );
    assert!(h.events.try_recv().is_err());
    while up_rx.try_recv().is_ok() {}
    // The viewer's picture kept coming.
    assert!(
        !h.last_frames()[1].is_empty(),
        "viewer {viewer:?} got no frame"
    );
    // After the back-off: a keyframe is requested and a valid stream decodes again.
    let later = t0 + REJECT_FOR + Duration::from_millis(200);
    h.video.tick(later, 20);
    assert!(pli_sent(&mut up_rx));
    for tu in &small {
        send_av1(&mut h, bad, tu, &mut seq, ts, later);
        ts += 3000;
    }
    h.video.tick(later + Duration::from_millis(40), 21);
    assert!(h.video.stats.video_frames_decoded.load(Ordering::Relaxed) >= 1);
}

/// 160x90@30 300 kbit/s over 80x44@30 100 kbit/s: small enough to encode fast.
fn two_rungs() -> Config {
    let mut config = Config::default();
    config.video.width = 160;
    config.video.height = 90;
    config.video.rungs = vec![
        crate::ladder::Rung {
            width: 160,
            height: 90,
            fps: 30,
            bitrate_kbps: 300,
        },
        crate::ladder::Rung {
            width: 80,
            height: 44,
            fps: 30,
            bitrate_kbps: 100,
        },
    ];
    config
}

/// The NAL type of the first payload of each frame a viewer got since the last call.
fn frame_starts(rx: &mut mpsc::Receiver<rtc::rtp::packet::Packet>) -> Vec<u8> {
    let mut starts = Vec::new();
    let mut at_start = true;
    while let Ok(p) = rx.try_recv() {
        if at_start {
            starts.push(p.payload[0] & 0x1f);
        }
        at_start = p.header.marker;
    }
    starts
}

fn is_idr_start(nal: u8) -> bool {
    nal == 24 || nal == 7 || nal == 5
}

#[test]
fn encoders_are_shared_per_picture_and_rung_and_a_move_is_an_idr_for_the_mover_only() {
    // Five people, focus + one strip tile: P2, P3 and P4 all see [P0, P1].
    let mut h = Harness::with_config(strip_of_one(), 5, &two_rungs());
    for _ in 0..30 {
        h.tick();
    }
    assert_eq!(h.video.encoder_count(), 3);
    assert_eq!(h.video.encoders_per_rung(), vec![3, 0]);
    let before: Vec<u64> = (0..5).map(|i| h.idrs(i)).collect();
    for rx in &mut h.outs {
        frame_starts(rx);
    }
    // P4's link collapses to 120 kbit/s: 300 + 48 does not fit, 100 + 48 does.
    h.links[4].set_gcc_bps(160_000.0);
    for _ in 0..30 {
        h.tick();
    }
    assert_eq!(
        h.links[4].info(h.ids[4]).rung,
        Some(1),
        "moved down within 1 s"
    );
    assert_eq!(h.video.encoders_per_rung(), vec![3, 1]);
    let p4 = frame_starts(&mut h.outs[4]);
    let moved_at = p4
        .iter()
        .position(|&n| is_idr_start(n))
        .expect("P4 got an IDR");
    assert!(
        moved_at <= 16,
        "P4's move landed on an IDR at frame {moved_at}"
    );
    assert_eq!(h.idrs(4), before[4] + 1);
    for i in 0..4 {
        assert_eq!(
            h.idrs(i),
            before[i],
            "viewer {i} was sent an IDR for P4's move"
        );
    }
    // P3 follows onto the same rung: it shares P4's picture there, and needs an IDR of its
    // own without making P4's stream restart (P4's encoder sent one less than 3 s ago): a
    // private encoder for P3 until that encoder's next IDR, then one shared encoder again.
    h.links[3].set_gcc_bps(160_000.0);
    let mut most = 0;
    for _ in 0..20 {
        h.tick();
        most = most.max(h.video.encoder_count());
    }
    assert_eq!(h.links[3].info(h.ids[3]).rung, Some(1));
    assert_eq!(most, 5, "P3 got a private encoder for the move");
    assert_eq!(h.idrs(3), before[3] + 1);
    assert_eq!(
        h.idrs(4),
        before[4] + 1,
        "P4 was not sent an IDR for P3's move"
    );
    for _ in 0..90 {
        h.tick();
    }
    assert_eq!(
        h.video.encoders_per_rung(),
        vec![3, 1],
        "P3 and P4 share again"
    );
    assert_eq!(h.idrs(2), before[2], "P2 never saw an IDR");
    // Viewers of one (picture, rung) get the same bytes.
    h.tick();
    let f = h.last_frames();
    assert_eq!(f[3], f[4]);
}

#[test]
fn a_viewer_that_keeps_sending_pli_does_not_make_the_shared_stream_a_keyframe_stream() {
    let mut h = Harness::with_config(strip_of_one(), 5, &two_rungs());
    h.tick();
    let before: Vec<u64> = (0..5).map(|i| h.idrs(i)).collect();
    // P4 asks for a keyframe every tick for 9 s.
    let mut most = 0;
    for _ in 0..270 {
        h.video.handle(VideoCmd::KeyframeRequest { id: h.ids[4] });
        h.tick();
        most = most.max(h.video.encoder_count());
    }
    let (p2, p4) = (h.idrs(2) - before[2], h.idrs(4) - before[4]);
    // The shared picture's IDRs: at most one per SHARED_IDR_INTERVAL (3 s) in 9 s.
    assert!(p2 <= 3, "P2 (sharing P4's picture) got {p2} IDRs in 9 s");
    // P4 itself is served: about one per SOLO_IDR_INTERVAL (1 s), from its own encoder.
    // (plus the shared IDRs it rejoins on).
    assert!((6..=12).contains(&p4), "P4 got {p4} IDRs in 9 s");
    assert_eq!(most, 4, "at most one private encoder");
    assert_eq!(h.idrs(0) - before[0], 0, "other pictures untouched");
}

#[test]
fn below_the_lowest_rung_a_viewer_gets_fewer_frames_not_none() {
    let mut h = Harness::with_config(
        LayoutSet::builtin().get("grid").unwrap().clone(),
        2,
        &two_rungs(),
    );
    h.links[1].set_gcc_bps(70_000.0);
    for _ in 0..90 {
        h.tick();
    }
    for rx in &mut h.outs {
        frame_starts(rx);
    }
    for _ in 0..60 {
        h.tick();
    }
    let fast = frame_starts(&mut h.outs[0]).len();
    let slow = frame_starts(&mut h.outs[1]).len();
    let info = h.links[1].info(h.ids[1]);
    // 70 - 48 = 22 kbit/s for a 100 kbit/s 30 fps rung: the 5 fps step (16.7).
    assert_eq!((info.rung, info.fps), (Some(1), 5));
    assert_eq!(fast, 60);
    assert_eq!(slow, 10, "5 fps for 2 s");
}

#[test]
fn a_viewers_size_cap_holds_it_on_a_smaller_rung() {
    let mut h = Harness::with_config(
        LayoutSet::builtin().get("grid").unwrap().clone(),
        2,
        &two_rungs(),
    );
    h.links[0].set_cap(100, 60);
    h.tick();
    assert_eq!(h.links[0].info(h.ids[0]).rung, Some(1));
    assert_eq!(h.links[1].info(h.ids[1]).rung, Some(0));
    assert_eq!(h.video.encoders_per_rung(), vec![1, 1]);
}

#[test]
fn a_shared_canvas_is_one_encoder_per_rung_whatever_the_room_size() {
    let shared = LayoutSet::builtin().get("grid-shared").unwrap().clone();
    let mut h = Harness::with_config(shared, 16, &two_rungs());
    h.tick();
    assert_eq!(h.video.encoder_count(), 1, "16 viewers, one picture");
    // Everyone gets the same bytes, and the picture shows all 16 (self included).
    let f = h.last_frames();
    assert!(!f[0].is_empty());
    assert!(f.iter().all(|x| *x == f[0]));
    assert!(h.video.outputs.iter().all(|o| o.plan.len() == 16));
    assert!(h
        .video
        .outputs
        .iter()
        .all(|o| o.plan.iter().any(|(_, k)| k.participant == o.viewer)));
    // A viewer held on the lower rung: one encoder per rung in use.
    h.links[5].set_cap(100, 60);
    h.tick();
    assert_eq!(h.video.encoders_per_rung(), vec![1, 1]);
    // A newcomer sees the same picture. The others keep their stream (no IDR); the
    // newcomer starts on an IDR from a private encoder, and shares from the shared
    // encoder's next IDR on.
    let before: Vec<u64> = (0..16).map(|i| h.idrs(i)).collect();
    h.join("P16");
    for _ in 0..3 {
        h.tick();
    }
    assert_eq!(h.video.encoders_per_rung(), vec![2, 1]);
    assert!(
        h.video.outputs.iter().all(|o| o.plan.len() == 16),
        "max_tiles"
    );
    assert_eq!(h.idrs(16), 1, "the newcomer starts on an IDR");
    assert!(
        (0..16).all(|i| h.idrs(i) == before[i]),
        "nobody else got an IDR"
    );
    for _ in 0..(SHARED_IDR_INTERVAL.as_millis() / 33 + 2) {
        h.tick();
    }
    assert_eq!(h.video.encoders_per_rung(), vec![1, 1]);
}

#[test]
fn the_output_frame_rate_applies_to_every_picture() {
    let mut h = Harness::with_config(
        LayoutSet::builtin().get("grid").unwrap().clone(),
        3,
        &two_rungs(),
    );
    h.links[2].set_cap(100, 60);
    for _ in 0..30 {
        h.tick();
    }
    for rx in &mut h.outs {
        frame_starts(rx);
    }
    let before: Vec<u64> = (0..3).map(|i| h.idrs(i)).collect();
    // 30 → 15 fps: the tick interval doubles; every picture gets a frame each tick and no
    // stream restarts.
    h.video.set_output_fps(15);
    for _ in 0..30 {
        h.tick();
    }
    for (i, rx) in h.outs.iter_mut().enumerate() {
        assert_eq!(frame_starts(rx).len(), 30, "viewer {i}: one frame per tick");
    }
    assert_eq!((0..3).map(|i| h.idrs(i)).collect::<Vec<_>>(), before);
    assert_eq!(h.video.stats.video_fps.load(Ordering::Relaxed), 15);
    assert!(h.video.encoders.iter().all(|e| e.fps == 15));
    assert!(h
        .video
        .encoders
        .iter_mut()
        .all(|e| e.parts.encoder.effective_rate().unwrap().0 == 15.0));
}

#[test]
fn pipelined_ticks_regroup_one_tick_later_with_the_same_idr_rules() {
    let mut config = small();
    config.video.pipeline = true;
    let (mut h, before) = four_settled(&config);
    h.speaker.store(h.ids[2].0, Ordering::Relaxed);
    // This tick encodes the pictures planned last tick: nobody has moved yet.
    h.tick();
    let frames = h.last_frames();
    assert!(frames.iter().all(|f| !f.is_empty()));
    assert_eq!(frames[2], frames[3], "P2 and P3 still share [P0, P1]");
    assert_eq!((0..4).map(|i| h.idrs(i) - before[i]).sum::<u64>(), 0);
    // The next one encodes the new plans: P3 moved, and starts on an IDR of its own.
    h.tick();
    let frames = h.last_frames();
    assert!(is_idr_start(frames[3][0] & 0x1f));
    let idrs: Vec<u64> = (0..4).map(|i| h.idrs(i) - before[i]).collect();
    assert_eq!(idrs, vec![0, 0, 0, 1]);
    assert_eq!(h.video.encoder_count(), 4);
}

#[test]
fn h264_and_vp8_viewers_of_one_picture_use_one_encoder_per_codec_and_keyframes_stay_per_codec() {
    // A shared canvas: everyone sees the same picture. Three H.264 viewers, one VP8.
    let shared = LayoutSet::builtin().get("grid-shared").unwrap().clone();
    let mut h = Harness::with_config(shared, 3, &two_rungs());
    h.join_vp8("firefox");
    for _ in 0..5 {
        h.tick();
    }
    assert_eq!(h.video.encoder_count(), 2, "one H.264 and one VP8 encoder");
    assert_eq!(h.video.encoders_per_codec(), (1, 1));
    // The VP8 viewer's packets carry its payload descriptor and depacketise to VP8 frames
    // that decode to the composite; the others get H.264.
    let (mut starts, mut units, mut cur) = (Vec::new(), Vec::new(), Vec::new());
    while let Ok(p) = h.outs[3].try_recv() {
        cur.push(p.payload.clone());
        if p.header.marker {
            units.push(std::mem::take(&mut cur));
        }
    }
    let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
    let mut out = I420Frame::default();
    let mut pictures = 0;
    for (i, u) in units.iter().enumerate() {
        let mut frame = Vec::new();
        crate::codec::depack::vp8(u, &mut frame, usize::MAX).unwrap();
        starts.push(crate::codec::vpx::vp8_is_keyframe(&frame));
        if let Ok(Decoded::Picture { .. }) = dec.decode(u, i == 0, &mut out) {
            pictures += 1;
        }
    }
    assert_eq!(units.len(), 5, "a frame each tick");
    assert_eq!(starts, [true, false, false, false, false]);
    assert_eq!(pictures, 5);
    assert_eq!((out.width, out.height), (160, 90));
    let h264 = frame_starts(&mut h.outs[0]);
    assert!(is_idr_start(h264[0]) && h264.len() == 5, "{h264:?}");
    for rx in &mut h.outs {
        frame_starts(rx);
    }
    // The VP8 viewer's PLI: a keyframe for it (its encoder is its own), none for the
    // H.264 viewers.
    for _ in 0..40 {
        h.tick();
    }
    let before: Vec<u64> = (0..4).map(|i| h.idrs(i)).collect();
    h.video.handle(VideoCmd::KeyframeRequest { id: h.ids[3] });
    h.tick();
    assert_eq!(
        h.idrs(3),
        before[3] + 1,
        "the VP8 viewer got a keyframe at once"
    );
    for (i, &b) in before.iter().enumerate().take(3) {
        assert_eq!(h.idrs(i), b, "H.264 viewer {i} got an IDR");
    }
    assert_eq!(h.video.encoders_per_codec(), (1, 1));
    // A VP8 viewer on the lower rung: a VP8 encoder of that rung, the H.264 one untouched.
    h.links[3].set_cap(100, 60);
    h.tick();
    assert_eq!(h.video.encoders_per_rung(), vec![1, 1]);
    assert_eq!(h.video.encoders_per_codec(), (1, 1));
}

/// Sends one H.264 frame of `frame` as participant `id`'s camera or content.
fn send_h264(
    h: &mut Harness,
    id: ParticipantId,
    content: bool,
    enc: &mut H264Encoder,
    frame: &I420Frame,
    seq: &mut u16,
    k: u32,
) {
    use rtc::rtp::packetizer::Payloader;
    let mut au = Vec::new();
    enc.encode(frame, &mut au).unwrap();
    let payloads = H264Payloader::default()
        .payload(1100, &bytes::Bytes::copy_from_slice(&au))
        .unwrap();
    let n = payloads.len();
    for (j, p) in payloads.into_iter().enumerate() {
        h.video.handle(VideoCmd::Packet {
            id,
            content,
            arrival: Instant::now(),
            pt: 102,
            seq: *seq,
            ts: k * 3000,
            marker: j + 1 == n,
            payload: p,
        });
        *seq = seq.wrapping_add(1);
    }
}

/// Decodes every complete frame a viewer received; returns (frames, last picture).
fn decode_received(
    rx: &mut mpsc::Receiver<rtc::rtp::packet::Packet>,
    dec: &mut VideoDecoder,
    out: &mut I420Frame,
) -> usize {
    let (mut cur, mut n) = (Vec::new(), 0);
    while let Ok(p) = rx.try_recv() {
        cur.push(p.payload.clone());
        if p.header.marker {
            if let Ok(Decoded::Picture { .. }) = dec.decode(&cur, false, out) {
                n += 1;
            }
            cur.clear();
        }
    }
    n
}

#[test]
fn content_is_tile_0_fitted_for_everyone_and_a_static_slide_is_not_encoded_again() {
    let mut config = Config::default();
    config.video.width = 640;
    config.video.height = 360;
    let presentation = LayoutSet::builtin().get("presentation").unwrap().clone();
    let mut h = Harness::with_config(presentation, 3, &config);
    h.moving = false; // tiles change only with the frames fed here
    let settings = EncoderSettings {
        width: 64,
        height: 36,
        fps: 30,
        bitrate_bps: 300_000,
        idr_interval_frames: 1000,
        complexity: Default::default(),
        analysis: Default::default(),
    };
    let mut cams: Vec<_> = (0..3)
        .map(|_| H264Encoder::new(settings).unwrap())
        .collect();
    let mut slides = H264Encoder::new(EncoderSettings {
        width: 192,
        height: 144,
        ..settings
    })
    .unwrap();
    let colours = [(60, 90, 200), (110, 200, 60), (160, 60, 90)];
    let slide = I420Frame::solid(192, 144, (200, 128, 128));
    let mut seqs = [0u16; 4];
    let presenter = h.ids[1];
    let (up, _up_rx) = mpsc::channel(8);
    for id in h.ids.clone() {
        h.video.handle(VideoCmd::Attach {
            id,
            payload_types: [(102, VideoCodec::H264)].into(),
            sink: None,
            upstream: mpsc::channel(8).0,
            link: Default::default(),
        });
    }
    h.video.handle(VideoCmd::Present {
        id: presenter,
        payload_types: [(102, VideoCodec::H264)].into(),
        upstream: up,
    });
    for k in 0..8u32 {
        for i in 0..3 {
            let f = I420Frame::solid(64, 36, colours[i]);
            let id = h.ids[i];
            send_h264(&mut h, id, false, &mut cams[i], &f, &mut seqs[i], k);
        }
        send_h264(
            &mut h,
            presenter,
            true,
            &mut slides,
            &slide,
            &mut seqs[3],
            k,
        );
        h.tick();
    }
    // One picture for everyone (shared canvas), the presenter included, at
    // `[presentation] output_fps` (15 of the room's 30) on the rung's whole bitrate.
    assert_eq!(h.video.encoder_count(), 1);
    let rate = |h: &Harness| {
        h.video
            .viewer_encoders()
            .map(|e| (e.fps, e.parts.encoder.settings().bitrate_bps))
            .collect::<Vec<_>>()
    };
    let top = h.video.ladder.get(0).bitrate_kbps * 1000;
    assert_eq!(rate(&h), [(15, top)]);
    let mut pictures = Vec::new();
    for i in 0..3 {
        let mut dec = VideoDecoder::new(VideoCodec::H264).unwrap();
        let mut out = I420Frame::default();
        let n = decode_received(&mut h.outs[i], &mut dec, &mut out);
        assert!(
            (3..=5).contains(&n),
            "about 4 frames in 8 ticks at 15 fps: {n}"
        );
        pictures.push(out);
    }
    let pic = &pictures[0];
    assert_eq!((pic.width, pic.height), (640, 360));
    // The 4:3 content in the 640x284 content area: pillarboxed, 378 wide, centred.
    let y = |x: usize, yy: usize| pic.pixel(x, yy).0 as i32;
    assert!(
        (y(320, 142) - 200).abs() < 12,
        "content at the centre: {}",
        y(320, 142)
    );
    assert!((y(140, 142) - 200).abs() < 12, "content near its left edge");
    assert!(
        y(20, 142) < 40,
        "letterbox, not a cropped fill: {}",
        y(20, 142)
    );
    assert!(y(620, 142) < 40, "letterbox on the right");
    // The strip: the presenter's camera first (its colour at the first strip tile).
    let strip_y = 288 + 36;
    let first = pic.mean_yuv(200, strip_y - 10, 40, 20).0;
    assert!(
        (first - colours[1].0 as f64).abs() < 15.0,
        "presenter's camera leads the strip: {first}"
    );
    for p in &pictures[1..] {
        assert!(
            (p.pixel(320, 142).0 as i32 - y(320, 142)).abs() <= 2,
            "the same picture for everyone"
        );
    }
    // Nothing changes now (no new frames): no frame is encoded, except one refresh per
    // second; a keyframe request is still answered at once.
    h.tick(); // last frames arrive
    for rx in &mut h.outs {
        frame_starts(rx);
    }
    let unchanged_before = h.video.stats.video_frames_unchanged.load(Ordering::Relaxed);
    for _ in 0..20 {
        h.tick();
    }
    assert!(
        frame_starts(&mut h.outs[0]).is_empty(),
        "a static slide is not encoded again"
    );
    assert_eq!(
        h.video.stats.video_frames_unchanged.load(Ordering::Relaxed) - unchanged_before,
        10,
        "every frame due in 20 ticks at 15 fps was skipped"
    );
    h.video.handle(VideoCmd::KeyframeRequest { id: h.ids[0] });
    h.tick();
    let starts = frame_starts(&mut h.outs[0]);
    assert_eq!(starts.len(), 1, "the keyframe is sent");
    assert!(is_idr_start(starts[0]));
    for _ in 0..40 {
        h.tick();
    }
    assert!(
        !frame_starts(&mut h.outs[1]).is_empty(),
        "refreshed at least once a second"
    );
    // The presentation stops: the grid of cameras again, encoded every tick (live
    // cameras: a new frame in every tile each tick).
    h.moving = true;
    h.video.handle(VideoCmd::StopPresenting { id: presenter });
    for _ in 0..3 {
        h.tick();
    }
    for rx in &mut h.outs {
        frame_starts(rx);
    }
    for _ in 0..3 {
        h.tick();
    }
    assert_eq!(
        frame_starts(&mut h.outs[0]).len(),
        3,
        "cameras only: 30 fps again"
    );
    assert!(h.video.participants.iter().all(|p| !p.content));
    assert_eq!(rate(&h), [(30, top)]);
}

#[test]
fn content_is_refused_over_its_own_limits() {
    let mut config = small();
    config.presentation.max_width = 128;
    config.presentation.max_height = 128;
    let presentation = LayoutSet::builtin().get("presentation").unwrap().clone();
    let mut h = Harness::with_config(presentation, 2, &config);
    let presenter = h.ids[0];
    h.video.handle(VideoCmd::Present {
        id: presenter,
        payload_types: [(102, VideoCodec::H264)].into(),
        upstream: mpsc::channel(8).0,
    });
    let mut enc = H264Encoder::new(EncoderSettings {
        width: 320,
        height: 180,
        fps: 30,
        bitrate_bps: 300_000,
        idr_interval_frames: 1000,
        complexity: Default::default(),
        analysis: Default::default(),
    })
    .unwrap();
    let mut seq = 0;
    let f = I420Frame::solid(320, 180, (200, 128, 128));
    for k in 0..3 {
        send_h264(&mut h, presenter, true, &mut enc, &f, &mut seq, k);
        h.tick();
    }
    let mut refused = None;
    while let Ok(ev) = h.events.try_recv() {
        if let RoomEvent::InputRejected {
            participant_id,
            reason,
        } = ev
        {
            refused = Some((participant_id, reason));
        }
    }
    let (who, reason) = refused.expect("the oversize content is refused");
    assert_eq!(who, presenter);
    assert!(reason.contains("320x180"), "{reason}");
    // The camera of the same participant is not affected (it has the camera limits).
    assert!(h
        .video
        .participants
        .iter()
        .any(|p| p.id == presenter && !p.content));
}

#[test]
fn a_camera_among_twenty_audio_only_callers_costs_a_refresh_a_second_not_thirty_frames() {
    // One camera, twenty callers without video (phones): the camera's viewer sees sixteen
    // name tiles that never change. Before, that picture was encoded every tick.
    let mut config = Config::default();
    config.video.width = 640;
    config.video.height = 360;
    let grid = LayoutSet::builtin().get("grid").unwrap().clone();
    let mut h = Harness::with_config(grid, 0, &config);
    h.moving = false; // no camera frame reaches anyone's picture but the phones'
    let _up = h.join_kept("Camera");
    for i in 0..20 {
        let id = ParticipantId::next();
        h.video.handle(VideoCmd::Join {
            id,
            name: format!("Phone {i}"),
        });
        let (up, _) = mpsc::channel(8);
        h.video.handle(VideoCmd::Attach {
            id,
            payload_types: HashMap::new(),
            sink: None,
            upstream: up,
            link: Default::default(),
        });
    }
    let mut dec = VideoDecoder::new(VideoCodec::H264).unwrap();
    let (mut first, mut last) = (I420Frame::default(), I420Frame::default());
    h.tick();
    assert_eq!(decode_received(&mut h.outs[0], &mut dec, &mut first), 1);
    let stats = h.video.stats.clone();
    let before = stats.video_frames_encoded.load(Ordering::Relaxed);
    let ticks = 90; // three seconds
    for _ in 0..ticks {
        h.tick();
    }
    let encoded = stats.video_frames_encoded.load(Ordering::Relaxed) - before;
    let skipped = stats.video_frames_unchanged.load(Ordering::Relaxed);
    assert!(
        encoded * 3 <= ticks,
        "{encoded} frames encoded in {ticks} ticks (before: {ticks})"
    );
    assert!(
        (2..=4).contains(&encoded),
        "one refresh a second: {encoded}"
    );
    assert_eq!(
        encoded + skipped,
        ticks,
        "every tick's frame encoded or skipped"
    );
    // The viewer's picture is the same as before: the refreshes decode to it.
    let got = decode_received(&mut h.outs[0], &mut dec, &mut last);
    assert_eq!(got as u64, encoded);
    let (a, b) = (
        first.mean_yuv(0, 0, 640, 360),
        last.mean_yuv(0, 0, 640, 360),
    );
    assert!((a.0 - b.0).abs() < 1.0, "{a:?} vs {b:?}");
    for (x, y) in [(80, 45), (240, 130), (400, 220), (560, 310)] {
        let (p, q) = (first.pixel(x, y).0 as i32, last.pixel(x, y).0 as i32);
        assert!((p - q).abs() <= 3, "at ({x},{y}): {p} then {q}");
    }
    // A keyframe request is still answered at once.
    let idrs = h.idrs(0);
    h.video.handle(VideoCmd::KeyframeRequest { id: h.ids[0] });
    h.tick();
    assert_eq!(h.idrs(0), idrs + 1);
}
