//! Graceful overload for the video thread. When its ticks take longer than the frame
//! interval, skipping whichever tick happens to be late gives everyone a jerky picture;
//! instead the output frame rate of **all** pictures steps down (30 → 20 → 15 for a
//! 30 fps room) so everyone gets a steady, lower rate, and steps back up when the load
//! falls. Audio has its own thread and clock and is never slowed by this.
//!
//! A pure policy: fed each tick's work time and lateness with `now`, it answers the frame
//! rate to run at. Decisions are made per one-second window:
//! - **down** one step when the window's mean work time exceeds [`DOWN_LOAD`] of the frame
//!   interval, or more than a tenth of its ticks started over a frame late;
//! - **up** one step after [`CALM_FOR`] of windows whose work, scaled to the higher rate,
//!   would stay under [`UP_LOAD`] of its interval; if the load comes back within
//!   [`RELAPSE_WITHIN`] of stepping up, the next step up waits twice as long (up to
//!   [`MAX_CALM`]), so a load at the edge does not flap.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);
pub const DOWN_LOAD: f64 = 0.9;
pub const UP_LOAD: f64 = 0.7;
pub const CALM_FOR: Duration = Duration::from_secs(3);
pub const MAX_CALM: Duration = Duration::from_secs(48);
pub const RELAPSE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FrameRateGovernor {
    /// The rates it may run at, highest first.
    steps: [u32; 3],
    level: usize,
    window_start: Option<Instant>,
    busy: Duration,
    ticks: u32,
    late: u32,
    calm_since: Option<Instant>,
    calm_needed: Duration,
    stepped_up_at: Option<Instant>,
    /// Steps down taken so far.
    pub steps_down: u64,
}

impl FrameRateGovernor {
    /// For a room configured at `fps`: steps `fps`, ⅔·`fps`, ½·`fps` (30 → 20 → 15).
    pub fn new(fps: u32) -> Self {
        let fps = fps.max(1);
        Self {
            steps: [fps, (fps * 2 / 3).max(1), (fps / 2).max(1)],
            level: 0,
            window_start: None,
            busy: Duration::ZERO,
            ticks: 0,
            late: 0,
            calm_since: None,
            calm_needed: CALM_FOR,
            stepped_up_at: None,
            steps_down: 0,
        }
    }

    /// The frame rate to run at now.
    pub fn fps(&self) -> u32 {
        self.steps[self.level]
    }

    pub fn period(&self) -> Duration {
        Duration::from_secs(1) / self.fps()
    }

    /// One tick done at `now`: it took `busy` and started `late` after its deadline.
    /// Returns the new frame rate when it changes.
    pub fn observe(&mut self, now: Instant, busy: Duration, late: Duration) -> Option<u32> {
        let start = *self.window_start.get_or_insert(now);
        self.busy += busy;
        self.ticks += 1;
        if late > self.period() {
            self.late += 1;
        }
        if now.duration_since(start) < WINDOW {
            return None;
        }
        let load = self.busy.as_secs_f64() / (self.ticks as f64 * self.period().as_secs_f64());
        let lagging = self.late * 10 > self.ticks;
        self.window_start = Some(now);
        self.busy = Duration::ZERO;
        self.ticks = 0;
        self.late = 0;
        if load > DOWN_LOAD || lagging {
            self.calm_since = None;
            if self
                .stepped_up_at
                .is_some_and(|t| now.duration_since(t) < RELAPSE_WITHIN)
            {
                self.calm_needed = (self.calm_needed * 2).min(MAX_CALM);
            }
            self.stepped_up_at = None;
            if self.level + 1 < self.steps.len() {
                self.level += 1;
                self.steps_down += 1;
                return Some(self.fps());
            }
            return None;
        }
        if self.level == 0 {
            return None;
        }
        // The same work per tick at the higher rate's shorter interval.
        let higher = self.steps[self.level - 1];
        if load * higher as f64 / self.fps() as f64 >= UP_LOAD {
            self.calm_since = None;
            return None;
        }
        let since = *self.calm_since.get_or_insert(now);
        if now.duration_since(since) + WINDOW < self.calm_needed {
            return None;
        }
        self.level -= 1;
        self.calm_since = None;
        self.stepped_up_at = Some(now);
        Some(self.fps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `secs` seconds of ticks at the governor's own rate, each busy for `busy(fps)`;
    /// returns the rate after each second.
    fn run(
        g: &mut FrameRateGovernor,
        t: &mut Instant,
        secs: u32,
        busy: impl Fn(u32) -> Duration,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        for _ in 0..secs {
            let end = *t + Duration::from_secs(1);
            while *t < end {
                let fps = g.fps();
                g.observe(*t, busy(fps), Duration::ZERO);
                *t += g.period();
            }
            out.push(g.fps());
        }
        out
    }

    #[test]
    fn overload_steps_down_to_a_steady_rate_and_recovers_when_load_falls() {
        let mut g = FrameRateGovernor::new(30);
        let mut t = Instant::now();
        // Work of 48 ms per tick: over 33 ms (30 fps) and 0.9 × 50 ms (20 fps); fits
        // 66 ms (15 fps). A window is judged at the first tick after it.
        let heavy = |_| Duration::from_millis(48);
        let rates = run(&mut g, &mut t, 5, heavy);
        assert_eq!(rates[..4], [30, 20, 15, 15], "{rates:?}");
        assert_eq!(g.steps_down, 2);
        // Stays at 15 while the load lasts: no flapping.
        assert!(run(&mut g, &mut t, 10, heavy).iter().all(|&f| f == 15));
        // Load falls to 10 ms: back to 20 after the calm period, then to 30.
        let rates = run(&mut g, &mut t, 10, |_| Duration::from_millis(10));
        assert_eq!(rates.last(), Some(&30), "{rates:?}");
        let first_up = rates.iter().position(|&f| f == 20).unwrap();
        assert!(
            (2..=4).contains(&first_up),
            "up after about CALM_FOR: {rates:?}"
        );
    }

    #[test]
    fn moderate_load_stops_at_the_rate_that_fits() {
        let mut g = FrameRateGovernor::new(30);
        let mut t = Instant::now();
        // 35 ms: too much for 30 fps, fine for 20 (70 % of 50 ms), and 35 × 30/20 would
        // not fit 30 again: stays at 20.
        let rates = run(&mut g, &mut t, 20, |_| Duration::from_millis(35));
        assert!(rates[1..].iter().all(|&f| f == 20), "{rates:?}");
    }

    #[test]
    fn late_ticks_count_as_overload_and_a_relapse_doubles_the_wait() {
        let mut g = FrameRateGovernor::new(30);
        let mut t = Instant::now();
        // Cheap ticks that start late (another process holds the cores).
        for _ in 0..40 {
            g.observe(t, Duration::from_millis(5), Duration::from_millis(50));
            t += Duration::from_millis(33);
        }
        assert_eq!(g.fps(), 20);
        // Calm: up after CALM_FOR.
        let rates = run(&mut g, &mut t, 5, |_| Duration::from_millis(5));
        assert_eq!(rates.last(), Some(&30));
        // Relapse right away: down again, and the next step up waits twice as long.
        run(&mut g, &mut t, 2, |_| Duration::from_millis(40));
        assert_eq!(g.fps(), 20);
        let rates = run(&mut g, &mut t, 8, |_| Duration::from_millis(5));
        let up = rates.iter().position(|&f| f == 30).unwrap();
        assert!(up >= 5, "waited {up} s: {rates:?}");
    }

    #[test]
    fn odd_configured_rates_have_sane_steps() {
        assert_eq!(FrameRateGovernor::new(25).steps, [25, 16, 12]);
        assert_eq!(FrameRateGovernor::new(1).steps, [1, 1, 1]);
        assert_eq!(FrameRateGovernor::new(0).fps(), 1);
    }
}
