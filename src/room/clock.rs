//! The absolute-deadline tick schedule used by both media loops: tick k is due at
//! `start + k·period`, never "now + period", so ticks do not drift. A loop that falls far
//! behind (a stall) skips the missed ticks instead of bursting through them, and counts them.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TickClock {
    start: Instant,
    period: Duration,
    next: u64,
    /// Ticks counted before the last period change.
    base: u64,
    /// Ticks skipped because the loop fell more than `MAX_BEHIND` periods behind.
    pub skipped: u64,
}

const MAX_BEHIND: u64 = 5;

impl TickClock {
    pub fn new(start: Instant, period: Duration) -> Self {
        Self {
            start,
            period,
            next: 0,
            base: 0,
            skipped: 0,
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// When the next tick is due.
    pub fn deadline(&self) -> Instant {
        self.start + self.period * self.next as u32
    }

    /// From the next deadline on, ticks come every `period` (the output frame rate
    /// changed). Tick indices keep counting.
    pub fn set_period(&mut self, period: Duration) {
        self.start = self.deadline();
        self.base += self.next;
        self.next = 0;
        self.period = period;
    }

    /// After an idle spell (the loop waited without ticking): the next tick is the first
    /// one due at or after `now`. Not counted as skipped; RTP timestamps jump by the idle
    /// time, as the wall clock did.
    pub fn resume_at(&mut self, now: Instant) {
        if now > self.deadline() {
            let p = self.period.as_nanos().max(1);
            self.next += (now - self.deadline()).as_nanos().div_ceil(p) as u64;
        }
    }

    /// If the next tick is due at `now`, consumes it and returns its index (ticks are
    /// numbered from 0; the index drives RTP timestamps).
    pub fn take_due(&mut self, now: Instant) -> Option<u64> {
        if now < self.deadline() {
            return None;
        }
        let behind = (now - self.deadline()).as_nanos() / self.period.as_nanos().max(1);
        if behind as u64 > MAX_BEHIND {
            self.skipped += behind as u64;
            self.next += behind as u64;
        }
        let k = self.base + self.next;
        self.next += 1;
        Some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_after_idle_skips_to_the_next_deadline_without_counting() {
        let t0 = Instant::now();
        let mut c = TickClock::new(t0, Duration::from_millis(20));
        assert_eq!(c.take_due(t0), Some(0));
        c.resume_at(t0 + Duration::from_millis(1_005));
        assert_eq!(c.deadline(), t0 + Duration::from_millis(1_020));
        assert_eq!(c.skipped, 0);
        assert_eq!(c.take_due(t0 + Duration::from_millis(1_020)), Some(51));
        // Resuming before the next deadline changes nothing.
        c.resume_at(t0 + Duration::from_millis(1_021));
        assert_eq!(c.take_due(t0 + Duration::from_millis(1_040)), Some(52));
    }

    #[test]
    fn deadlines_are_absolute() {
        let t0 = Instant::now();
        let p = Duration::from_millis(20);
        let mut c = TickClock::new(t0, p);
        assert_eq!(c.take_due(t0), Some(0));
        assert_eq!(c.take_due(t0 + Duration::from_millis(5)), None);
        // Late by 7 ms: the following deadline is still t0 + 40 ms, not +47.
        assert_eq!(c.take_due(t0 + Duration::from_millis(27)), Some(1));
        assert_eq!(c.deadline(), t0 + Duration::from_millis(40));
    }

    #[test]
    fn a_new_period_applies_from_the_next_deadline() {
        let t0 = Instant::now();
        let mut c = TickClock::new(t0, Duration::from_millis(20));
        assert_eq!(c.take_due(t0), Some(0));
        assert_eq!(c.take_due(t0 + Duration::from_millis(20)), Some(1));
        c.set_period(Duration::from_millis(50));
        assert_eq!(c.deadline(), t0 + Duration::from_millis(40));
        assert_eq!(c.take_due(t0 + Duration::from_millis(40)), Some(2));
        assert_eq!(c.deadline(), t0 + Duration::from_millis(90));
        assert_eq!(c.take_due(t0 + Duration::from_millis(89)), None);
        assert_eq!(c.take_due(t0 + Duration::from_millis(90)), Some(3));
    }

    #[test]
    fn long_stall_skips_instead_of_bursting() {
        let t0 = Instant::now();
        let mut c = TickClock::new(t0, Duration::from_millis(20));
        c.take_due(t0);
        let k = c.take_due(t0 + Duration::from_millis(1000)).unwrap();
        assert!(k >= 45, "resumed at tick {k}");
        assert!(c.skipped >= 40);
        assert_eq!(c.take_due(t0 + Duration::from_millis(1001)), None);
    }
}
