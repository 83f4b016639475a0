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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Timing and margins of the policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Kept free for the viewer's audio (Opus plus RTP/SRTP overhead).
    pub audio_headroom_kbps: u32,
    /// How long the current rung must not fit before moving down.
    pub down_after: Duration,
    /// How long the next better rung must fit (with the margin) before moving up.
    pub up_after: Duration,
    /// The next better rung must fit with this factor to count towards moving up.
    pub up_margin: f64,
    /// Lowest frame rate below the lowest rung.
    pub min_fps: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            audio_headroom_kbps: 48,
            down_after: Duration::from_millis(500),
            up_after: Duration::from_secs(6),
            up_margin: 1.15,
            min_fps: 2,
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
    /// The rung changed with this update (the viewer needs an IDR on its new encoder).
    pub moved: bool,
}

/// One viewer's position on a ladder.
#[derive(Clone, Debug)]
pub struct RungPolicy {
    config: PolicyConfig,
    rung: usize,
    cap: usize,
    /// Since when the current rung has not fitted.
    short_since: Option<Instant>,
    /// Since when the next better rung has fitted with the margin.
    room_since: Option<Instant>,
}

impl RungPolicy {
    /// A viewer starting on `start` (e.g. the rung the initial estimate carries).
    pub fn new(config: PolicyConfig, start: usize) -> Self {
        Self {
            config,
            rung: start,
            cap: 0,
            short_since: None,
            room_since: None,
        }
    }

    pub fn rung(&self) -> usize {
        self.rung
    }

    /// Caps the viewer at rung `cap` (an index: nothing better than it). Takes effect at
    /// the next update, at once if the viewer is above it.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    fn need(&self, ladder: &Ladder, rung: usize) -> u64 {
        (ladder.get(rung).bitrate_kbps + self.config.audio_headroom_kbps) as u64
    }

    /// Feeds the estimate (kbit/s) at `now`; returns where the viewer is now.
    pub fn update(&mut self, ladder: &Ladder, estimate_kbps: u32, now: Instant) -> Decision {
        let est = estimate_kbps as u64;
        let before = self.rung;
        let lowest = ladder.lowest();
        let cap = self.cap.min(lowest);
        if self.rung < cap {
            // Over the viewer's own cap: no reason to wait.
            self.rung = cap;
        } else if self.rung > lowest {
            self.rung = lowest;
        }
        // Down: the current rung has not fitted for `down_after`.
        if self.need(ladder, self.rung) > est {
            let since = *self.short_since.get_or_insert(now);
            if now.duration_since(since) >= self.config.down_after {
                let fits = (self.rung..=lowest).find(|&r| self.need(ladder, r) <= est);
                self.rung = fits.unwrap_or(lowest);
                self.short_since = None;
            }
        } else {
            self.short_since = None;
        }
        // Up: the next better rung (within the cap) fits with the margin for `up_after`.
        let up = self.rung.checked_sub(1).filter(|&r| r >= cap);
        match up {
            Some(r) if self.need(ladder, r) as f64 * self.config.up_margin <= est as f64 => {
                let since = *self.room_since.get_or_insert(now);
                if now.duration_since(since) >= self.config.up_after {
                    self.rung = r;
                    self.room_since = None;
                }
            }
            _ => self.room_since = None,
        }
        let moved = self.rung != before;
        if moved {
            // A fresh start on the new rung: no credit carried over either way.
            self.short_since = None;
            self.room_since = None;
        }
        let r = ladder.get(self.rung);
        let fps = if self.rung == lowest && self.need(ladder, lowest) > est {
            // Below the lowest rung: fewer frames, never none.
            let video = est.saturating_sub(self.config.audio_headroom_kbps as u64);
            ((r.fps as u64 * video) / r.bitrate_kbps as u64)
                .clamp(self.config.min_fps as u64, r.fps as u64) as u32
        } else {
            r.fps
        };
        Decision {
            rung: self.rung,
            fps,
            moved,
        }
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
        let mut t = Instant::now();
        let mut p = RungPolicy::new(PolicyConfig::default(), 0);
        p.set_cap(l.best_within(640, 400));
        let d = run(&mut p, &l, &mut t, 20.0, |_| 5000);
        assert!(d[0].moved && d.iter().all(|d| d.rung == 1));
    }
}
