//! What each sender is asked to send. Every picture planned in a tick — viewers',
//! watchers', the live output's and the recording's — says at what size it shows each
//! camera; the largest of those is all the server can use of that sender, so that is what
//! it asks for ([`limit_for`]): a picture size (a 16:9 step at least as large as the
//! tile, never below [`FLOOR`]), the bitrate that size needs and the frame rate. A camera
//! nobody shows is asked for the floor.
//!
//! [`Demand`] paces the asks of one sender: a larger size is asked for at once (a speaker
//! became big; the caller follows it with a PLI so the new size starts with a keyframe),
//! a smaller one only after the want has held for [`LOWER_AFTER`] (a speaker who comes
//! back soon does not make the sender step down and up again), the floor of a camera
//! nobody shows only after [`HIDDEN_AFTER`] (someone alone in a room is usually about to
//! be seen, and a sender brought down to the floor takes seconds to climb back: Chromium
//! raises its resolution only as its bandwidth estimate grows), and never more than one
//! change per [`MIN_INTERVAL`].
//!
//! Plain data and functions of `now`: the video loop feeds them from its plans and sends
//! the asks upstream ([`super::Upstream::SendLimit`]), where the transport turns them into
//! REMB for RTP senders and a `sendLimit` message the web client applies with
//! `RTCRtpSender.setParameters`. A sender that ignores them is scaled as before.

use crate::compositor::{Look, TileKey};
use crate::ids::ParticipantId;
use crate::layout::Rect;
use std::time::{Duration, Instant};

/// Never ask for less than this (width, height).
pub const FLOOR: (u32, u32) = (160, 90);
/// At most one change of a sender's ask per this interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A smaller size is asked for once the want has been smaller for this long.
pub const LOWER_AFTER: Duration = Duration::from_secs(1);
/// A camera nobody shows is asked for the floor once nobody has shown it for this long.
pub const HIDDEN_AFTER: Duration = Duration::from_secs(10);
/// Picture heights asked for (16:9 steps); a tile is asked for at the first step that
/// covers it.
const STEPS: [u32; 8] = [90, 180, 270, 360, 540, 720, 1080, 2160];
/// Bits per pixel per frame of the bitrate asked for (~690 kbit/s for 640x360 at 30).
const BITS_PER_PIXEL: f64 = 0.1;
/// Bitrate bounds of an ask.
const MIN_BITRATE: u32 = 80_000;
const MAX_BITRATE: u32 = 2_500_000;

/// What a sender is asked to send at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendLimit {
    /// The picture the server needs: the sender scales its source down (keeping its
    /// aspect ratio) until it is no smaller than this in either dimension would require.
    pub width: u32,
    pub height: u32,
    pub max_bitrate_bps: u32,
    pub max_fps: u32,
}

/// The largest tile each camera is shown at over `plans`, as (participant, width,
/// height), into `out` (reused). Content tiles are not counted: a presentation keeps its
/// own ingest limits.
pub fn largest_tiles<'a>(
    plans: impl IntoIterator<Item = &'a [(Rect, TileKey)]>,
    out: &mut Vec<(ParticipantId, u32, u32)>,
) {
    out.clear();
    for plan in plans {
        for (r, k) in plan {
            if k.look == Look::Content {
                continue;
            }
            match out.iter_mut().find(|t| t.0 == k.participant) {
                Some(t) => {
                    t.1 = t.1.max(r.w);
                    t.2 = t.2.max(r.h);
                }
                None => out.push((k.participant, r.w, r.h)),
            }
        }
    }
}

/// The ask for a camera shown at most at `tile` (`None`: shown nowhere) at `fps`.
pub fn limit_for(tile: Option<(u32, u32)>, fps: u32) -> SendLimit {
    let (w, h) = tile.unwrap_or(FLOOR);
    let height = STEPS
        .iter()
        .copied()
        .find(|&s| s >= h && s * 16 / 9 >= w)
        .unwrap_or(STEPS[STEPS.len() - 1])
        .max(FLOOR.1);
    let width = height * 16 / 9;
    let bits = width as f64 * height as f64 * fps.max(1) as f64 * BITS_PER_PIXEL;
    SendLimit {
        width,
        height,
        max_bitrate_bps: (bits as u32).clamp(MIN_BITRATE, MAX_BITRATE),
        max_fps: fps,
    }
}

/// An ask to send: the limit, and whether it is larger than the last (follow it with a
/// keyframe request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub limit: SendLimit,
    pub raised: bool,
}

/// One sender's asks over time.
#[derive(Debug, Default)]
pub struct Demand {
    asked: Option<SendLimit>,
    asked_at: Option<Instant>,
    /// Since when the want has been smaller than the ask.
    lower_since: Option<Instant>,
    /// Since when nobody has shown the camera.
    hidden_since: Option<Instant>,
}

impl Demand {
    /// The ask due now for `want` (`shown`: some picture shows the camera), if any. Call
    /// [`Demand::sent`] once it is sent.
    pub fn update(&mut self, want: SendLimit, shown: bool, now: Instant) -> Option<Ask> {
        if shown {
            self.hidden_since = None;
        } else if now.duration_since(*self.hidden_since.get_or_insert(now)) < HIDDEN_AFTER {
            return None;
        }
        let Some(asked) = self.asked else {
            return Some(Ask {
                limit: want,
                raised: false,
            });
        };
        if want == asked {
            self.lower_since = None;
            return None;
        }
        let raised = want.height > asked.height || want.max_fps > asked.max_fps;
        // (Hidden, it has waited HIDDEN_AFTER already.)
        if raised || !shown {
            self.lower_since = None;
        } else {
            let since = *self.lower_since.get_or_insert(now);
            if now.duration_since(since) < LOWER_AFTER {
                return None;
            }
        }
        if self
            .asked_at
            .is_some_and(|t| now.duration_since(t) < MIN_INTERVAL)
        {
            return None;
        }
        Some(Ask {
            limit: want,
            raised,
        })
    }

    /// `limit` was sent at `now`.
    pub fn sent(&mut self, limit: SendLimit, now: Instant) {
        self.asked = Some(limit);
        self.asked_at = Some(now);
        self.lower_since = None;
    }

    /// The last ask sent.
    pub fn asked(&self) -> Option<SendLimit> {
        self.asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{LayoutSet, LayoutSpec};

    const W: u32 = 1280;
    const H: u32 = 720;

    fn key(p: u64, r: Rect, look: Look) -> (Rect, TileKey) {
        (
            r,
            TileKey {
                participant: ParticipantId(p),
                w: r.w,
                h: r.h,
                look,
            },
        )
    }

    /// Every viewer's personal picture in `layout` (everyone but the viewer; `first`
    /// in the first tile when it is not the viewer, else the others in order), plus
    /// the recording's (everyone) when `recording` is given.
    fn asks(layout: &str, n: u64, first: Option<u64>, recording: Option<&str>) -> Vec<SendLimit> {
        let set = LayoutSet::builtin();
        let spec = set.get(layout).unwrap();
        let mut plans: Vec<Vec<(Rect, TileKey)>> = Vec::new();
        let order = |viewer: Option<u64>| -> Vec<u64> {
            let mut o: Vec<u64> = (1..=n).filter(|&p| Some(p) != viewer).collect();
            if let Some(pos) = first.and_then(|f| o.iter().position(|&p| p == f)) {
                o[..=pos].rotate_right(1);
            }
            o
        };
        // `order`'s cameras in `spec`'s tiles.
        let picture = |spec: &LayoutSpec, o: Vec<u64>| -> Vec<(Rect, TileKey)> {
            let rects = spec.place(o.len(), W, H);
            rects
                .iter()
                .zip(&o)
                .map(|(r, &p)| key(p, *r, Look::Camera))
                .collect()
        };
        for v in 1..=n {
            plans.push(picture(spec, order((!spec.shared()).then_some(v))));
        }
        if let Some(rec) = recording {
            plans.push(picture(set.get(rec).unwrap(), order(None)));
        }
        let mut largest = Vec::new();
        largest_tiles(plans.iter().map(|p| p.as_slice()), &mut largest);
        (1..=n)
            .map(|p| {
                let t = largest
                    .iter()
                    .find(|t| t.0 == ParticipantId(p))
                    .map(|t| (t.1, t.2));
                limit_for(t, 30)
            })
            .collect()
    }

    fn sizes(l: &[SendLimit]) -> Vec<(u32, u32)> {
        l.iter().map(|l| (l.width, l.height)).collect()
    }

    #[test]
    fn a_grid_asks_for_its_tile_size() {
        // Personal grids: a 4-person room shows 3 in a 2x2 grid (638x358 tiles)...
        assert!(sizes(&asks("grid", 4, None, None))
            .iter()
            .all(|&s| s == (640, 360)));
        // ...a 10-person room 9 in a 3x3 grid (424x237): 480x270, as the issue asks.
        let nine = asks("grid", 10, None, None);
        assert!(sizes(&nine).iter().all(|&s| s == (480, 270)), "{nine:?}");
        assert!(nine.iter().all(|l| l.max_bitrate_bps < 500_000));
        // ...a 17-person room 16 in a 4x4 grid (317x177): 320x180.
        assert!(sizes(&asks("grid", 17, None, None))
            .iter()
            .all(|&s| s == (320, 180)));
        // The shared 16-grid (everyone, self included) the same.
        assert!(sizes(&asks("grid-shared", 16, None, None))
            .iter()
            .all(|&s| s == (320, 180)));
        // Smaller asks cost fewer bits.
        let (a, b) = (asks("grid", 4, None, None)[0], nine[0]);
        assert!(b.max_bitrate_bps < a.max_bitrate_bps);
    }

    #[test]
    fn the_speaker_is_asked_for_the_big_tile_and_the_strip_for_small_ones() {
        // Speaker focus, 6 people, participant 3 speaking: every viewer but 3 shows 3
        // large; 3 itself shows the others in its strip and someone large.
        let a = asks("speaker", 6, Some(3), None);
        assert_eq!((a[2].width, a[2].height), (1280, 720), "{a:?}");
        // Participant 1 is large in the speaker's own picture (first of the others).
        assert_eq!((a[0].width, a[0].height), (1280, 720));
        // The rest appear only in strips: a small tile.
        for l in &a[3..] {
            assert!(l.height <= 180, "{l:?}");
        }
        assert!(a[2].max_bitrate_bps > a[5].max_bitrate_bps * 4);
    }

    #[test]
    fn a_presentation_strip_asks_for_small_cameras() {
        // The presentation layout (a shared canvas) shows the content large and the
        // cameras in a strip of 20 % of the height.
        let set = LayoutSet::builtin();
        let spec = set.get("presentation").unwrap();
        let mut rects = Vec::new();
        spec.place_with_content(4, true, W, H, &mut rects);
        let plan: Vec<_> = rects
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let look = if i == 0 { Look::Content } else { Look::Camera };
                key(if i == 0 { 1 } else { i as u64 }, *r, look)
            })
            .collect();
        let mut largest = Vec::new();
        largest_tiles([plan.as_slice()], &mut largest);
        // The content tile does not count for the presenter's camera (participant 1).
        let one = largest.iter().find(|t| t.0 == ParticipantId(1)).unwrap();
        assert!(one.2 <= 144, "{one:?}");
        for t in &largest {
            let l = limit_for(Some((t.1, t.2)), 30);
            assert!(l.height <= 180, "{l:?}");
        }
    }

    #[test]
    fn the_recording_counts_and_nobody_shown_is_asked_for_the_floor() {
        // Speaker focus without recording: the strip-only people are small...
        let without = asks("speaker", 6, Some(3), None);
        assert!(without[5].height <= 180);
        // ...a grid recording shows everyone at 3x2 (424x357): they are asked for more.
        let with = asks("speaker", 6, Some(3), Some("grid"));
        assert_eq!((with[5].width, with[5].height), (640, 360), "{with:?}");
        // The speaker stays at the largest.
        assert_eq!(with[2].height, 720);
        // Alone in a room of personal pictures, nobody shows you: the floor.
        let alone = asks("grid", 1, None, None);
        assert_eq!((alone[0].width, alone[0].height), FLOOR);
        assert_eq!(alone[0].max_bitrate_bps, MIN_BITRATE);
    }

    #[test]
    fn sizes_are_steps_that_cover_the_tile_and_never_below_the_floor() {
        assert_eq!(limit_for(Some((20, 10)), 30).height, 90);
        assert_eq!(limit_for(Some((300, 300)), 30).height, 360);
        assert_eq!(limit_for(Some((1000, 100)), 30).width, 1280);
        assert_eq!(limit_for(Some((5000, 3000)), 30).height, 2160);
        assert_eq!(
            limit_for(Some((1920, 1080)), 30).max_bitrate_bps,
            MAX_BITRATE
        );
        assert_eq!(limit_for(None, 15).max_fps, 15);
    }

    #[test]
    fn raises_go_at_once_lowers_wait_and_one_change_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let (small, big) = (
            limit_for(Some((320, 180)), 30),
            limit_for(Some((1280, 720)), 30),
        );
        let mut d = Demand::default();
        // The first ask goes at once.
        let a = d.update(small, true, ms(0)).unwrap();
        assert!(!a.raised);
        d.sent(a.limit, ms(0));
        assert_eq!(d.update(small, true, ms(10)), None);
        // A raise within a second of the last change waits for the second...
        assert_eq!(d.update(big, true, ms(500)), None);
        let a = d.update(big, true, ms(1000)).unwrap();
        assert!(a.raised);
        d.sent(a.limit, ms(1000));
        // ...a lower want must hold for LOWER_AFTER (a speaker flicking back is ignored).
        assert_eq!(d.update(small, true, ms(2100)), None);
        assert_eq!(d.update(big, true, ms(2200)), None);
        assert_eq!(d.update(small, true, ms(2300)), None);
        assert_eq!(d.update(small, true, ms(3200)), None);
        let a = d.update(small, true, ms(3300)).unwrap();
        assert!(!a.raised);
        d.sent(a.limit, ms(3300));
        assert_eq!(d.asked(), Some(small));
        // An ask that was not sent (the queue was full) is proposed again.
        assert!(d.update(big, true, ms(4400)).is_some());
        assert!(d.update(big, true, ms(4401)).is_some());
    }

    #[test]
    fn a_camera_nobody_shows_is_lowered_to_the_floor_only_after_a_while() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let floor = limit_for(None, 30);
        let mut d = Demand::default();
        // Alone from the start: nothing is asked for HIDDEN_AFTER...
        assert_eq!(d.update(floor, false, s(0)), None);
        assert_eq!(d.update(floor, false, s(9)), None);
        let a = d.update(floor, false, s(10)).unwrap();
        d.sent(a.limit, s(10));
        assert_eq!(a.limit.width, FLOOR.0);
        // ...shown again: raised at once.
        let big = limit_for(Some((640, 360)), 30);
        assert!(d.update(big, true, s(12)).unwrap().raised);
        d.sent(big, s(12));
        // Hidden for a moment (a layout change, a speaker flicking) changes nothing.
        assert_eq!(d.update(floor, false, s(14)), None);
        assert_eq!(d.update(big, true, s(15)), None);
        assert_eq!(d.update(floor, false, s(16)), None);
        assert_eq!(d.update(floor, false, s(25)), None);
        assert!(d.update(floor, false, s(26)).is_some());
    }
}
