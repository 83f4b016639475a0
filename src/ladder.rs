//! The quality ladder and the per-viewer rung policy: which rung of a picture's ladder a
//! viewer's link carries, given its bandwidth estimate over time. A pure struct that takes
//! `now` (no sockets, no clocks of its own), so its timing is unit-tested exactly.
//!
//! Policy: a rung "fits" when its video bitrate plus the audio headroom is within the
//! estimate. Down is fast — once the current rung has not fitted for `down_after`
//! (default 0.5 s; the estimator itself reacts to congestion within about a second), the
//! viewer drops straight to the best rung that fits. Up is slow — the next better rung
//! must fit with a margin (`up_margin`, default 15 %) continuously for `up_after`
//! (default 6 s), and only one rung is climbed at a time. A noisy estimate around a rung's
//! threshold therefore moves a viewer down at most once and never back up unless the
//! estimate really clears the next rung: no oscillation. Below the lowest rung the viewer
//! stays on it at a reduced frame rate (never a frozen picture). The viewer's own cap
//! (its video element's size, a phone asking for 360p) excludes larger rungs.

use std::time::{Duration, Instant};

/// One rung: an output format and the bitrate it is encoded at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
}

/// Why a ladder is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("a ladder needs at least one rung")]
    Empty,
    #[error("rung {0}: bitrates must fall strictly from the first (best) rung to the last")]
    NotDescending(usize),
    #[error("rung {0}: width and height must be even and at least 16, fps 1..=60, bitrate at least 50 kbit/s")]
    Invalid(usize),
}

/// Rungs from best (index 0) to cheapest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ladder {
    rungs: Vec<Rung>,
}

impl Ladder {
    pub fn new(rungs: Vec<Rung>) -> Result<Self, LadderError> {
        if rungs.is_empty() {
            return Err(LadderError::Empty);
        }
        for (i, r) in rungs.iter().enumerate() {
            let ok = r.width >= 16
                && r.height >= 16
                && r.width % 2 == 0
                && r.height % 2 == 0
                && (1..=60).contains(&r.fps)
                && r.bitrate_kbps >= 50;
            if !ok {
                return Err(LadderError::Invalid(i));
            }
            if i > 0 && r.bitrate_kbps >= rungs[i - 1].bitrate_kbps {
                return Err(LadderError::NotDescending(i));
            }
        }
        Ok(Self { rungs })
    }

    /// The ladder under a top rung: the top itself, then each of the default rungs that is
    /// both smaller and cheaper than it (so `[video]` 1280x720 at 1200 kbit/s gives the
    /// default ladder, and a 320x180 output a one-rung ladder).
    pub fn under(top: Rung) -> Vec<Rung> {
        let mut rungs = vec![top];
        rungs.extend(Self::default_rungs().into_iter().filter(|r| {
            r.width < top.width && r.height < top.height && r.bitrate_kbps < top.bitrate_kbps
        }));
        for r in &mut rungs[1..] {
            r.fps = r.fps.min(top.fps);
        }
        rungs
    }

    /// The highest frame rate of any rung (the rate the video thread ticks at).
    pub fn max_fps(&self) -> u32 {
        self.rungs.iter().map(|r| r.fps).max().unwrap_or(1)
    }

    /// 1280x720@30 1.2 Mbit/s, 640x360@30 500 kbit/s, 320x180@15 150 kbit/s.
    pub fn default_rungs() -> Vec<Rung> {
        vec![
            Rung {
                width: 1280,
                height: 720,
                fps: 30,
                bitrate_kbps: 1200,
            },
            Rung {
                width: 640,
                height: 360,
                fps: 30,
                bitrate_kbps: 500,
            },
            Rung {
                width: 320,
                height: 180,
                fps: 15,
                bitrate_kbps: 150,
            },
        ]
    }

    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    pub fn get(&self, i: usize) -> Rung {
        self.rungs[i.min(self.rungs.len() - 1)]
    }

    pub fn lowest(&self) -> usize {
        self.rungs.len() - 1
    }

    /// The smallest rung that still covers a `width`×`height` display (so nothing larger
    /// is sent than the viewer can show); the best rung if none covers it.
    pub fn covering(&self, width: u32, height: u32) -> usize {
        self.rungs
            .iter()
            .rposition(|r| r.width >= width && r.height >= height)
            .unwrap_or(0)
    }

    /// The best rung that fits a `max_width`×`max_height` box (either may be 0 = no cap).
    /// The lowest rung if none does.
    pub fn best_within(&self, max_width: u32, max_height: u32) -> usize {
        self.rungs
            .iter()
            .position(|r| {
                (max_width == 0 || r.width <= max_width)
                    && (max_height == 0 || r.height <= max_height)
            })
            .unwrap_or(self.lowest())
    }
}

/// Frame rates below the lowest rung's, best first: a viewer whose link cannot carry the
/// lowest rung keeps its resolution and gets fewer frames (never a frozen picture).
pub const FPS_STEPS: [u32; 5] = [10, 7, 5, 3, 2];

impl Ladder {
    /// Levels the policy moves between: every rung at its own frame rate, then the lowest
    /// rung at each of [`FPS_STEPS`] below its rate (down to `min_fps`).
    fn level_count(&self, min_fps: u32) -> usize {
        let low = self.rungs[self.lowest()].fps;
        self.rungs.len()
            + FPS_STEPS
                .iter()
                .filter(|&&f| f < low && f >= min_fps)
                .count()
    }

    /// (rung index, fps, video kbit/s) of level `i`.
    fn level(&self, i: usize, min_fps: u32) -> (usize, u32, u32) {
        if i < self.rungs.len() {
            let r = self.rungs[i];
            return (i, r.fps, r.bitrate_kbps);
        }
        let lowest = self.lowest();
        let r = self.rungs[lowest];
        let fps = FPS_STEPS
            .iter()
            .copied()
            .filter(|&f| f < r.fps && f >= min_fps)
            .nth(i - self.rungs.len())
            .unwrap_or(min_fps.clamp(1, r.fps));
        (lowest, fps, (r.bitrate_kbps * fps / r.fps).max(1))
    }
}

/// Timing and margins of the policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Kept free for the viewer's audio (Opus plus RTP/SRTP overhead).
    pub audio_headroom_kbps: u32,
    /// How long the current level must not fit before moving down.
    pub down_after: Duration,
    /// How long the next better rung must fit (with the margin) before moving up. Frame-rate
    /// steps below the lowest rung are climbed three times faster.
    pub up_after: Duration,
    /// The next better rung must fit with this factor to count towards moving up (frame-rate
    /// steps below the lowest rung need only fit).
    pub up_margin: f64,
    /// Lowest frame rate below the lowest rung.
    pub min_fps: u32,
    /// A move up that has to be undone within this time failed: that level is not tried
    /// again for `retry_after` (doubling with each failure in a row, up to `retry_max`).
    pub fail_window: Duration,
    pub retry_after: Duration,
    pub retry_max: Duration,
    /// Within `congestion_memory` of a move down, a better *rung* (not a frame-rate step)
    /// must fit for `up_after_congestion` instead of `up_after`: an estimate that grows
    /// while the viewer receives little is not yet evidence that the link carries more.
    pub up_after_congestion: Duration,
    pub congestion_memory: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            audio_headroom_kbps: 48,
            down_after: Duration::from_millis(500),
            up_after: Duration::from_secs(6),
            up_margin: 1.15,
            min_fps: 2,
            fail_window: Duration::from_secs(10),
            retry_after: Duration::from_secs(30),
            retry_max: Duration::from_secs(300),
            up_after_congestion: Duration::from_secs(20),
            congestion_memory: Duration::from_secs(60),
        }
    }
}

/// What a viewer should get now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index into the ladder.
    pub rung: usize,
    /// Frames per second to send: the rung's, or fewer below the lowest rung.
    pub fps: u32,
    /// The level changed with this update (the viewer needs an IDR on its new encoder).
    pub moved: bool,
}

/// One viewer's position on a ladder.
#[derive(Clone, Debug)]
pub struct RungPolicy {
    config: PolicyConfig,
    /// Index into the ladder's levels (rungs, then frame-rate steps of the lowest rung).
    level: usize,
    /// Best rung the viewer accepts.
    cap: usize,
    /// Since when the current level has not fitted.
    short_since: Option<Instant>,
    /// Since when the next better level has fitted with the margin.
    room_since: Option<Instant>,
    /// The last move up: when, and to which level.
    last_up: Option<(Instant, usize)>,
    /// A level that failed recently, and until when it is not tried again.
    blocked: Option<(usize, Instant)>,
    backoff: Duration,
    /// The last move down.
    last_down: Option<Instant>,
}

impl RungPolicy {
    /// A viewer starting on rung `start` (e.g. the best rung its cap allows).
    pub fn new(config: PolicyConfig, start: usize) -> Self {
        Self {
            config,
            level: start,
            cap: 0,
            short_since: None,
            room_since: None,
            last_up: None,
            blocked: None,
            backoff: config.retry_after,
            last_down: None,
        }
    }

    /// The current rung and frame rate, without an update.
    pub fn current(&self, ladder: &Ladder) -> Decision {
        let (rung, fps, _) = ladder.level(
            self.level.min(ladder.level_count(self.config.min_fps) - 1),
            self.config.min_fps,
        );
        Decision {
            rung,
            fps,
            moved: false,
        }
    }

    pub fn rung(&self) -> usize {
        self.level
    }

    /// Caps the viewer at rung `cap` (an index: nothing better than it). Takes effect at
    /// the next update, at once if the viewer is above it.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    fn need(&self, ladder: &Ladder, level: usize) -> u64 {
        (ladder.level(level, self.config.min_fps).2 + self.config.audio_headroom_kbps) as u64
    }

    /// Feeds the estimate (kbit/s) at `now`; returns where the viewer is now.
    pub fn update(&mut self, ladder: &Ladder, estimate_kbps: u32, now: Instant) -> Decision {
        let est = estimate_kbps as u64;
        let before = self.level;
        let last = ladder.level_count(self.config.min_fps) - 1;
        let cap = self.cap.min(ladder.lowest());
        if self.level < cap {
            // Over the viewer's own cap: no reason to wait.
            self.level = cap;
        } else if self.level > last {
            self.level = last;
        }
        // Down: the current level has not fitted for `down_after`.
        if self.need(ladder, self.level) > est {
            let since = *self.short_since.get_or_insert(now);
            if now.duration_since(since) >= self.config.down_after {
                let fits = (self.level..=last).find(|&l| self.need(ladder, l) <= est);
                self.level = fits.unwrap_or(last);
                self.short_since = None;
                self.last_down = Some(now);
                if let Some((at, to)) = self.last_up {
                    if now.duration_since(at) < self.config.fail_window {
                        // The last move up did not hold: do not try that level again soon.
                        self.blocked = Some((to, now + self.backoff));
                        self.backoff = (self.backoff * 2).min(self.config.retry_max);
                    }
                    self.last_up = None;
                }
            }
        } else {
            self.short_since = None;
        }
        if let Some((at, _)) = self.last_up {
            if now.duration_since(at) >= self.config.fail_window {
                // It held: the next failure starts from the initial back-off again.
                self.last_up = None;
                self.backoff = self.config.retry_after;
            }
        }
        if self.blocked.is_some_and(|(_, until)| now >= until) {
            self.blocked = None;
        }
        // Up: the next better level (within the cap) fits with the margin for long enough.
        let up = self
            .level
            .checked_sub(1)
            .filter(|&l| l >= cap)
            .filter(|&l| self.blocked.is_none_or(|(b, _)| b != l));
        // Frame-rate steps need no margin: they keep the resolution and are undone as fast.
        let margin = |l: usize| {
            if l >= ladder.lowest() {
                1.0
            } else {
                self.config.up_margin
            }
        };
        match up {
            Some(l) if self.need(ladder, l) as f64 * margin(l) <= est as f64 => {
                let since = *self.room_since.get_or_insert(now);
                let wait = if l >= ladder.lowest() {
                    self.config.up_after / 3
                } else if self
                    .last_down
                    .is_some_and(|t| now.duration_since(t) < self.config.congestion_memory)
                {
                    self.config.up_after_congestion
                } else {
                    self.config.up_after
                };
                if now.duration_since(since) >= wait {
                    self.level = l;
                    self.room_since = None;
                    self.last_up = Some((now, l));
                }
            }
            _ => self.room_since = None,
        }
        let moved = self.level != before;
        if moved {
            // A fresh start on the new level: no credit carried over either way.
            self.short_since = None;
            self.room_since = None;
        }
        let (rung, fps, _) = ladder.level(self.level, self.config.min_fps);
        Decision { rung, fps, moved }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder::new(Ladder::default_rungs()).unwrap()
    }

    /// Feeds `kbps` every 100 ms for `secs`; returns the decisions.
    fn run(
        p: &mut RungPolicy,
        l: &Ladder,
        t: &mut Instant,
        secs: f64,
        kbps: impl Fn(usize) -> u32,
    ) -> Vec<Decision> {
        let n = (secs * 10.0) as usize;
        (0..n)
            .map(|i| {
                *t += Duration::from_millis(100);
                p.update(l, kbps(i), *t)
            })
            .collect()
    }

    #[test]
    fn ladders_are_validated() {
        assert_eq!(Ladder::new(vec![]), Err(LadderError::Empty));
        let mut r = Ladder::default_rungs();
        r[2].bitrate_kbps = 600;
        assert_eq!(Ladder::new(r), Err(LadderError::NotDescending(2)));
        let mut r = Ladder::default_rungs();
        r[1].width = 641;
        assert_eq!(Ladder::new(r), Err(LadderError::Invalid(1)));
    }

    #[test]
    fn down_is_fast_and_skips_rungs_that_do_not_fit() {
        let l = ladder();
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 0);
        assert!(run(&mut p, &l, &mut t, 3.0, |_| 3000)
            .iter()
            .all(|d| d.rung == 0));
        // The link collapses to 400 kbit/s: 720p (1248) and 360p (548) do not fit.
        let d = run(&mut p, &l, &mut t, 2.0, |_| 400);
        let first = d.iter().position(|d| d.rung == 2).expect("moved down");
        assert!(first <= 5, "down after {} ms", (first + 1) * 100);
        assert_eq!(
            d.iter().filter(|d| d.moved).count(),
            1,
            "one move, straight to 180p"
        );
    }

    #[test]
    fn up_is_slow_one_rung_at_a_time() {
        let l = ladder();
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 2);
        let d = run(&mut p, &l, &mut t, 20.0, |_| 3000);
        let moves: Vec<usize> = d
            .iter()
            .enumerate()
            .filter(|(_, d)| d.moved)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(
            moves[0] >= 59,
            "first step up after {} ms",
            (moves[0] + 1) * 100
        );
        assert!(moves[1] - moves[0] >= 60, "second step waits again");
        assert_eq!(p.rung(), 0);
        // Enough for 720p but not with the margin: stays on 360p.
        let mut p = RungPolicy::new(PolicyConfig::default(), 1);
        assert!(run(&mut p, &l, &mut t, 20.0, |_| 1300)
            .iter()
            .all(|d| d.rung == 1));
    }

    #[test]
    fn a_noisy_estimate_does_not_flap() {
        let l = ladder();
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 0);
        // ±25 % noise around 720p's need (1248 kbit/s), deterministic.
        let noisy =
            |i: usize| (1248.0 * (1.0 + 0.25 * ((i * 7919 % 101) as f64 / 50.0 - 1.0))) as u32;
        let d = run(&mut p, &l, &mut t, 120.0, noisy);
        let moves = d.iter().filter(|d| d.moved).count();
        assert!(moves <= 1, "{moves} moves in 2 minutes");
    }

    #[test]
    fn a_short_dip_does_not_move_and_below_the_lowest_rung_lowers_fps() {
        let l = ladder();
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 0);
        let d = run(&mut p, &l, &mut t, 3.0, |i| {
            if (10..13).contains(&i) {
                500
            } else {
                3000
            }
        });
        assert!(
            d.iter().all(|d| d.rung == 0),
            "a 300 ms dip moved the viewer"
        );
        let d = run(&mut p, &l, &mut t, 3.0, |_| 120);
        let last = d.last().unwrap();
        assert_eq!(last.rung, 2);
        // 120 - 48 = 72 kbit/s for video of a 150 kbit/s, 15 fps rung: 7 fps.
        assert_eq!(last.fps, 7);
        let d = run(&mut p, &l, &mut t, 1.0, |_| 10);
        assert_eq!(d.last().unwrap().fps, 2, "never below min_fps");
    }

    #[test]
    fn the_viewers_cap_excludes_larger_rungs() {
        let l = ladder();
        assert_eq!(l.best_within(640, 360), 1);
        assert_eq!(l.best_within(0, 0), 0);
        assert_eq!(l.best_within(100, 100), 2);
        assert_eq!(l.covering(800, 450), 0);
        assert_eq!(l.covering(640, 360), 1);
        assert_eq!(l.covering(300, 170), 2);
        assert_eq!(l.covering(3000, 2000), 0);
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 0);
        p.set_cap(l.best_within(640, 400));
        let d = run(&mut p, &l, &mut t, 20.0, |_| 5000);
        assert!(d[0].moved && d.iter().all(|d| d.rung == 1));
    }

    #[test]
    fn below_the_lowest_rung_frame_rate_steps_down_and_climbs_back() {
        let l = ladder();
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 2);
        // 100 kbit/s: 52 for video of a 150 kbit/s 15 fps rung -> the 5 fps step (50).
        let d = run(&mut p, &l, &mut t, 2.0, |_| 100);
        assert_eq!((d.last().unwrap().rung, d.last().unwrap().fps), (2, 5));
        assert_eq!(d.iter().filter(|d| d.moved).count(), 1);
        // Back to plenty: frame-rate steps are climbed every 2 s, then 15 fps.
        let d = run(&mut p, &l, &mut t, 8.0, |_| 300);
        let fps: Vec<u32> = d.iter().filter(|d| d.moved).map(|d| d.fps).collect();
        assert_eq!(fps, vec![7, 10, 15]);
    }

    #[test]
    fn after_congestion_resolution_is_climbed_more_slowly() {
        let l = ladder();
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 1);
        run(&mut p, &l, &mut t, 1.0, |_| 300); // congested: down to 180p
        assert_eq!(p.current(&l).rung, 2);
        let d = run(&mut p, &l, &mut t, 30.0, |_| 3000);
        let first = d.iter().position(|d| d.moved).expect("climbs back");
        assert!(first >= 199, "first rung up after {} ms", (first + 1) * 100);
    }

    #[test]
    fn a_move_up_that_fails_is_not_retried_for_a_while() {
        let l = ladder();
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 1);
        // An estimate that looks like room for 720p, then collapses when it is tried, and
        // recovers at once (a path that only looked free while we sent less).
        let mut tried_at = None;
        let mut moves_up = 0;
        for i in 0..1200 {
            t += Duration::from_millis(100);
            let est = if p.rung() == 0 { 900 } else { 1600 };
            let d = p.update(&l, est, t);
            if d.moved && d.rung == 0 {
                moves_up += 1;
                tried_at.get_or_insert(i);
            }
        }
        // Two minutes: first try after 6 s, then 30 s + 6 s, then 60 s + ... : at most 3.
        assert!(tried_at.is_some_and(|i| i >= 59));
        assert!((2..=3).contains(&moves_up), "{moves_up} tries in 2 minutes");
        // A move up that holds resets the back-off and is kept.
        let mut p = RungPolicy::new(PolicyConfig::default(), 1);
        let d = run(&mut p, &l, &mut t, 30.0, |_| 1600);
        assert_eq!(d.iter().filter(|d| d.moved).count(), 1);
        assert_eq!(p.current(&l).rung, 0);
    }
}
