//! RTCP for plain-RTP calls (RFC 3550 6.4): what we received (for our reception report
//! block) and what we sent (for our sender report). Pure counters; the call sends the
//! packets every 5 s.

use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::shared::marshal::Marshal;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Reception statistics for the caller's stream (RFC 3550 A.1/A.3, without probation).
#[derive(Debug, Default)]
pub struct Received {
    ssrc: u32,
    started: bool,
    base: u32,
    /// Highest extended sequence number.
    max: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl Received {
    pub fn packet(&mut self, ssrc: u32, seq: u16) {
        if !self.started || ssrc != self.ssrc {
            *self = Self {
                ssrc,
                started: true,
                base: seq as u32,
                max: seq as u32,
                last_sr: self.last_sr,
                ..Self::default()
            };
        }
        let cycles = self.max & 0xffff_0000;
        let last = self.max as u16;
        let delta = seq.wrapping_sub(last);
        if delta < 0x8000 {
            // In order (or a duplicate): wrap when the sequence does.
            let ext = if seq < last {
                cycles + 0x1_0000
            } else {
                cycles
            } | seq as u32;
            self.max = self.max.max(ext);
        }
        self.received = self.received.saturating_add(1);
    }

    pub fn sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// Our report block about the caller's stream (and resets the interval counters).
    pub fn report(&mut self, now: Instant) -> Option<ReceptionReport> {
        if !self.started {
            return None;
        }
        let expected = self.max.wrapping_sub(self.base).wrapping_add(1);
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = if expected_interval == 0 {
            0
        } else {
            ((lost_interval as u64 * 256) / expected_interval as u64).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (now.duration_since(at).as_secs_f64() * 65_536.0) as u32,
            ),
            None => (0, 0),
        };
        Some(ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost: fraction,
            total_lost: lost.min(0x7f_ffff),
            last_sequence_number: self.max,
            jitter: 0,
            last_sender_report: lsr,
            delay: dlsr,
        })
    }
}

/// What we sent, for our sender report.
#[derive(Debug, Default)]
pub struct Sent {
    pub packets: u32,
    pub octets: u32,
    /// RTP timestamp of the last packet and when it left.
    last: Option<(u32, Instant)>,
}

impl Sent {
    pub fn packet(&mut self, ts: u32, payload_len: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        self.last = Some((ts, now));
    }
}

/// NTP time now (RFC 3550 4).
pub fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((d.subsec_nanos() as u64) << 32) / 1_000_000_000
}

/// A compound SR (+ our report block on the caller's stream), or an RR-less SR when we have
/// heard nothing yet. `clock`: the RTP clock rate of what we send.
pub fn sender_report(
    ssrc: u32,
    clock: u32,
    sent: &Sent,
    received: &mut Received,
    now: Instant,
) -> Option<Vec<u8>> {
    let (last_ts, at) = sent.last?;
    let rtp_time =
        last_ts.wrapping_add((now.duration_since(at).as_secs_f64() * clock as f64) as u32);
    let sr = SenderReport {
        ssrc,
        ntp_time: ntp_now(),
        rtp_time,
        packet_count: sent.packets,
        octet_count: sent.octets,
        reports: received.report(now).into_iter().collect(),
        profile_extensions: Default::default(),
    };
    sr.marshal().ok().map(|b| b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_counted_across_a_sequence_wrap() {
        let mut r = Received::default();
        let now = Instant::now();
        assert!(r.report(now).is_none());
        // 65530..=65535, 0..=13 with 3 and 7 missing: 20 expected, 18 received.
        for s in (65_530u32..65_550)
            .map(|s| s as u16)
            .filter(|&s| s != 3 && s != 7)
        {
            r.packet(42, s);
        }
        let rep = r.report(now).unwrap();
        assert_eq!(rep.total_lost, 2);
        assert_eq!(rep.fraction_lost, (2 * 256 / 20) as u8);
        assert_eq!(rep.last_sequence_number, 0x1_0000 + 13);
        // Next interval: no loss.
        for s in 14..24 {
            r.packet(42, s);
        }
        assert_eq!(r.report(now).unwrap().fraction_lost, 0);
    }

    #[test]
    fn sender_report_marshals_with_our_counts() {
        use rtc::shared::marshal::Unmarshal;
        let mut sent = Sent::default();
        let mut r = Received::default();
        let now = Instant::now();
        assert!(
            sender_report(1, 8000, &sent, &mut r, now).is_none(),
            "nothing sent yet"
        );
        sent.packet(1000, 160, now);
        sent.packet(1160, 160, now);
        r.packet(9, 1);
        let buf = sender_report(7, 8000, &sent, &mut r, now).unwrap();
        let sr = SenderReport::unmarshal(&mut &buf[..]).unwrap();
        assert_eq!((sr.ssrc, sr.packet_count, sr.octet_count), (7, 2, 320));
        assert_eq!(sr.reports.len(), 1);
        assert_eq!(sr.reports[0].ssrc, 9);
    }
}
