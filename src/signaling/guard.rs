//! What one HTTP client may hold and ask for, counted per source before anything else is
//! read: a token bucket per source and request class ([`RateLimiter`], a pure struct that
//! takes `now`), and caps on open connections in all and per source ([`ConnectionGate`]).
//! A source is an IPv4 address or an IPv6 /64 (one host usually has a whole /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The unit limits are kept per: an IPv4 address, or the /64 an IPv6 address lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4(u32),
    /// The upper 64 bits of the address.
    V6Prefix(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets per source: `rate` tokens per second up to `burst`; a request takes one.
/// Memory is bounded: buckets that have refilled (the same as no bucket) are dropped, and
/// at most `max_sources` are tracked — when that many sources are all active at once, new
/// sources are refused until some refill (fail closed, never grow without bound).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<Source, Bucket>,
}

impl RateLimiter {
    pub fn new(rate_per_s: f64, burst: u32, max_sources: usize) -> Self {
        Self {
            rate: rate_per_s,
            burst: burst.max(1) as f64,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `source`, or says how long until one is available.
    pub fn check(&mut self, source: Source, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.prune(now);
            if self.buckets.len() >= self.max_sources {
                return Err(Duration::from_secs_f64(1.0 / self.rate));
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    /// Drops the buckets that have refilled to `burst` by `now`.
    pub fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
        });
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnRefusal {
    #[error("server connection limit ({0}) reached")]
    Total(usize),
    #[error("connection limit per client ({0}) reached")]
    PerSource(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<Source, usize>,
}

/// Caps open connections in all and per source. `admit` hands out a permit that gives the
/// slot back when dropped.
#[derive(Clone, Debug)]
pub struct ConnectionGate {
    max_total: usize,
    max_per_source: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit {
    source: Source,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionGate {
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            max_total,
            max_per_source,
            counts: Arc::default(),
        }
    }

    pub fn admit(&self, ip: IpAddr) -> Result<ConnPermit, ConnRefusal> {
        let source = Source::from(ip);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max_total {
            return Err(ConnRefusal::Total(self.max_total));
        }
        let n = c.per_source.entry(source).or_insert(0);
        if *n >= self.max_per_source {
            return Err(ConnRefusal::PerSource(self.max_per_source));
        }
        *n += 1;
        c.total += 1;
        Ok(ConnPermit {
            source,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Source {
        Source::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2.0, 5, 100);
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            rl.check(a, t0).unwrap();
        }
        let wait = rl.check(a, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        // Another source has its own bucket.
        rl.check(ip("192.0.2.2"), t0).unwrap();
        // After 0.5 s at 2/s there is one token again, not more.
        let t1 = t0 + Duration::from_millis(500);
        rl.check(a, t1).unwrap();
        assert!(rl.check(a, t1).is_err());
        // A long pause refills to the burst only.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            rl.check(a, t2).unwrap();
        }
        assert!(rl.check(a, t2).is_err());
    }

    #[test]
    fn memory_is_bounded_and_refilled_buckets_are_dropped() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 2, 3);
        for i in 1..=3 {
            rl.check(ip(&format!("198.51.100.{i}")), t0).unwrap();
        }
        // A fourth active source while three are still draining: refused, not tracked.
        assert!(rl.check(ip("198.51.100.4"), t0).is_err());
        assert_eq!(rl.tracked(), 3);
        // Once the three have refilled, they are forgotten and the fourth gets in.
        let t1 = t0 + Duration::from_secs(2);
        rl.check(ip("198.51.100.4"), t1).unwrap();
        assert_eq!(rl.tracked(), 1);
    }

    #[test]
    fn ipv6_sources_are_per_64_and_mapped_v4_is_v4() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
        assert_ne!(ip("::1"), ip("0.0.0.1"));
    }

    #[test]
    fn gate_caps_total_and_per_source_and_frees_on_drop() {
        let g = ConnectionGate::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = g.admit(a).unwrap();
        let _p2 = g.admit(a).unwrap();
        assert_eq!(g.admit(a).unwrap_err(), ConnRefusal::PerSource(2));
        let _p3 = g.admit(b).unwrap();
        assert_eq!(g.admit(b).unwrap_err(), ConnRefusal::Total(3));
        drop(p1);
        assert_eq!(g.open(), 2);
        g.admit(a).unwrap();
    }
}
