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

/// Histogram of tick lateness (how long after its deadline a tick started), 100 µs
/// buckets up to 100 ms, the last bucket catching everything beyond.
pub struct Lateness {
    buckets: Vec<AtomicU64>,
}

const BUCKET_NS: u64 = 100_000;
const BUCKETS: usize = 1001;

impl Default for Lateness {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
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
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Upper edge of the bucket holding quantile `q` (0..=1); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let target = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
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
