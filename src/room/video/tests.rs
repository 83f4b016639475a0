//! Encoder sharing: the number of running encoders equals the number of distinct pictures,
//! viewers of the same picture get the same encoded frames, and the count follows joins,
//! leaves and speaker changes.

use super::*;
use crate::layout::LayoutSet;
use rtc::rtp::codec::h264::H264Payloader;

struct Harness {
    video: VideoLoop,
    ids: Vec<ParticipantId>,
    outs: Vec<mpsc::Receiver<rtc::rtp::packet::Packet>>,
    speaker: Arc<AtomicU64>,
    k: u64,
}

impl Harness {
    fn new(layout: LayoutSpec, n: usize) -> Self {
        let mut config = Config::default();
        config.video.width = 160;
        config.video.height = 90;
        let speaker = Arc::new(AtomicU64::new(0));
        let mut h = Self {
            video: VideoLoop::new(
                &config,
                layout,
                speaker.clone(),
                Arc::new(RoomStats::default()),
            ),
            ids: vec![],
            outs: vec![],
            speaker,
            k: 0,
        };
        for i in 0..n {
            h.join(&format!("P{i}"));
        }
        h
    }

    fn join(&mut self, name: &str) {
        let id = ParticipantId::next();
        let (tx, rx) = mpsc::channel(100_000);
        let (up, _) = mpsc::channel(8);
        self.video.handle(VideoCmd::Join {
            id,
            name: name.into(),
        });
        self.video.handle(VideoCmd::Attach {
            id,
            payload_types: HashMap::new(),
            sink: Some(RtpSink::new(1, 102, Box::new(H264Payloader::default()), tx)),
            upstream: up,
        });
        self.ids.push(id);
        self.outs.push(rx);
    }

    fn tick(&mut self) {
        self.video.tick(Instant::now(), self.k);
        self.k += 1;
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
    h.last_frames();
    h.tick();
    let f = h.last_frames();
    assert!(!f[2].is_empty());
    assert_eq!(f[2], f[3]);
    assert_eq!(f[3], f[4]);
    assert_ne!(f[0], f[2]);

    // P3 becomes the active speaker: P3 sees [P0, P1]; P0 sees [P3, P1]; P1, P2, P4
    // see [P3, P0] -> still three pictures, different groups.
    h.speaker.store(h.ids[3].0, Ordering::Relaxed);
    h.tick();
    assert_eq!(h.video.encoder_count(), 3);
    h.last_frames();
    h.tick();
    let f = h.last_frames();
    assert_eq!(f[1], f[2]);
    assert_eq!(f[2], f[4]);
    assert_ne!(f[0], f[1]);

    // Leaving shrinks the count: with three people, everyone sees the other two.
    h.video.handle(VideoCmd::Leave { id: h.ids[4] });
    h.video.handle(VideoCmd::Leave { id: h.ids[3] });
    h.tick();
    assert_eq!(h.video.encoder_count(), 3);
    h.video.handle(VideoCmd::Leave { id: h.ids[2] });
    h.tick();
    assert_eq!(h.video.encoder_count(), 2);
}

#[test]
fn a_viewer_moving_to_another_picture_gets_an_idr() {
    let mut h = Harness::new(strip_of_one(), 4);
    for _ in 0..5 {
        h.tick();
    }
    h.last_frames();
    // Speaker change regroups viewers; every regrouped viewer's next frame is an IDR.
    h.speaker.store(h.ids[2].0, Ordering::Relaxed);
    h.tick();
    let frames = h.last_frames();
    for (i, f) in frames.iter().enumerate() {
        assert!(!f.is_empty(), "viewer {i} got a frame");
    }
    // P3 moved from [P0,P1] to [P2,P0]: its frame must start with an IDR (STAP-A or NAL 5/7).
    let first_nal = frames[3][0] & 0x1f;
    assert!(
        first_nal == 24 || first_nal == 7 || first_nal == 5,
        "P3's first packet after regrouping: NAL type {first_nal}"
    );
}
