//! Measurement helpers for the cost model: per-thread and per-process CPU time (so work
//! done on rayon threads is attributed to the right phase), and a lock-free histogram of
//! tick lateness that media threads write and reporters read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are always supported
    // on Linux. On failure the zeroed value is returned, which only skews a measurement.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed by the whole process (all threads, user + system).
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Runs `f` and adds its thread CPU time to `acc`.
pub fn timed<R>(acc: &AtomicU64, f: impl FnOnce() -> R) -> R {
    let t0 = thread_cpu_ns();
    let r = f();
    acc.fetch_add(thread_cpu_ns().saturating_sub(t0), Ordering::Relaxed);
    r
}

/// CPU nanoseconds per pipeline phase, summed over all threads.
#[derive(Debug, Default)]
pub struct PhaseCpu {
    pub decode: AtomicU64,
    pub composite: AtomicU64,
    pub encode: AtomicU64,
    pub mix: AtomicU64,
}

/// Histogram of tick lateness (how long after its deadline a tick started) or of tick
/// duration: 100 µs buckets up to 100 ms, the last bucket catching everything beyond, and
/// the sum (for Prometheus).
pub struct Lateness {
    buckets: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

const BUCKET_NS: u64 = 100_000;
const BUCKETS: usize = 1001;

impl Default for Lateness {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Lateness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lateness(n={}, p50={:?})",
            self.count(),
            self.quantile(0.5)
        )
    }
}

impl Lateness {
    pub fn record(&self, late: Duration) {
        let i = ((late.as_nanos() as u64) / BUCKET_NS).min(BUCKETS as u64 - 1) as usize;
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            late.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Sum of all recorded values.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed))
    }

    /// Cumulative counts at each upper bound in `edges` (ascending), as Prometheus
    /// histogram buckets (seconds, count ≤ bound); `+Inf` is added last. A bound falls on
    /// a bucket edge (multiples of 100 µs) or is rounded down to one.
    pub fn cumulative(&self, edges: &[Duration]) -> Vec<(f64, u64)> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut out = Vec::with_capacity(edges.len() + 1);
        let mut acc = 0u64;
        let mut i = 0usize;
        for e in edges {
            // Bucket i holds values in [i, i+1) × 100 µs: it is ≤ e when (i+1)·100 µs ≤ e.
            let upto = ((e.as_nanos() as u64) / BUCKET_NS).min(BUCKETS as u64 - 1) as usize;
            while i < upto {
                acc += counts[i];
                i += 1;
            }
            out.push((e.as_secs_f64(), acc));
        }
        let total: u64 = counts.iter().sum();
        out.push((f64::INFINITY, total));
        out
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Upper edge of the bucket holding quantile `q` (0..=1); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        self.quantile_since(&[], q)
    }

    /// The bucket counts now (to measure a later interval with [`Self::quantile_since`]).
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// `quantile` of what was recorded since `before` (from [`Self::counts`]; empty: all).
    pub fn quantile_since(&self, before: &[u64], q: f64) -> Duration {
        let count = |i: usize, b: &AtomicU64| {
            b.load(Ordering::Relaxed)
                .saturating_sub(before.get(i).copied().unwrap_or(0))
        };
        let n: u64 = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| count(i, b))
            .sum();
        if n == 0 {
            return Duration::ZERO;
        }
        let target = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += count(i, b);
            if seen >= target {
                return Duration::from_nanos((i as u64 + 1) * BUCKET_NS);
            }
        }
        Duration::from_nanos(BUCKETS as u64 * BUCKET_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let h = Lateness::default();
        for ms in 0..100 {
            h.record(Duration::from_micros(ms * 1000 + 50));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Duration::from_micros(49_100));
        assert_eq!(h.quantile(0.99), Duration::from_micros(98_100));
        h.record(Duration::from_secs(5));
        assert_eq!(
            h.quantile(1.0),
            Duration::from_millis(100) + Duration::from_micros(100)
        );
        let c = h.cumulative(&[Duration::from_millis(1), Duration::from_millis(50)]);
        assert_eq!(c, vec![(0.001, 1), (0.05, 50), (f64::INFINITY, 101)]);
        assert!(h.sum() > Duration::from_secs(9));
    }

    #[test]
    fn cpu_clocks_advance() {
        let a = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > a);
        assert!(process_cpu_ns() >= thread_cpu_ns());
    }
}
