//! Which address a call's media is taken from and sent to: the defence against RTP
//! hijacking ("RTP bleed", Asterisk CVE-2017-14099).
//!
//! A call's RTP port is a small, scannable number. A source is *allowed* only when its IP
//! is the one the caller's SDP named (`c=`) or — behind NAT — the one its SIP signalling
//! came from. An allowed source is *learned* only after [`LEARN_PACKETS`] consecutive
//! in-sequence RTP packets (one SSRC, each sequence number one above the last); from then
//! on the call is *latched* to that exact address and never re-latched to another during
//! the call. A re-INVITE may move the media ([`SourceGuard::moved`]): learning starts again
//! against the new SDP address, while the old source stays valid (if its IP is still
//! allowed) until a new one is learned. Nothing is sent to the caller before a source is latched, so the room's audio
//! never goes to an address that has not proven itself.
//!
//! Pure state: no sockets, no clock. The WebRTC side needs no such rule: ICE connectivity
//! checks (with the peer's credentials from the authenticated signalling) and DTLS-SRTP
//! already bind media to the peer that proved itself.

use std::net::{IpAddr, SocketAddr};

/// In-sequence packets from one source before it is taken (3 × 20 ms).
pub const LEARN_PACKETS: u8 = 3;
/// Distinct rejected sources remembered for logging once each (more are counted, not
/// logged, so a flood from random ports cannot grow memory or the log).
const LOGGED_SOURCES: usize = 16;

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched source (or the one that just latched): take it.
    Accept,
    /// From an allowed address, still being learned: drop it quietly.
    Learning,
    /// From anywhere else: drop and count it; `log` is true the first time this source is
    /// seen (log it once).
    Reject { log: bool },
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    from: SocketAddr,
    ssrc: u32,
    seq: u16,
    count: u8,
}

/// One call's media source state.
#[derive(Debug)]
pub struct SourceGuard {
    /// The SDP's connection address and the signalling source.
    allowed: [Option<IpAddr>; 2],
    candidate: Option<Candidate>,
    latched: Option<SocketAddr>,
    /// A re-INVITE moved the media: a new source may be learned while latched.
    relearn: bool,
    logged: Vec<IpAddr>,
    rejected: u64,
}

impl SourceGuard {
    /// `sdp` is the offer's connection address (`None` for a hold address or none);
    /// `signalling` is the IP the INVITE came from.
    pub fn new(sdp: Option<IpAddr>, signalling: Option<IpAddr>) -> Self {
        Self {
            allowed: [sdp.filter(usable), signalling.filter(usable)],
            candidate: None,
            latched: None,
            relearn: false,
            logged: Vec::new(),
            rejected: 0,
        }
    }

    /// Where to send the caller's audio and RTCP: only a latched source.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Datagrams rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allowed.iter().flatten().any(|a| same_ip(*a, ip))
    }

    fn reject(&mut self, from: SocketAddr) -> Verdict {
        self.rejected += 1;
        let ip = from.ip();
        let log = !self.logged.contains(&ip) && self.logged.len() < LOGGED_SOURCES;
        if log {
            self.logged.push(ip);
        }
        Verdict::Reject { log }
    }

    /// Whether a datagram from `from` could be the caller's (worth authenticating, for
    /// SRTP): the latched source, or an allowed IP.
    pub fn may_be_caller(&self, from: SocketAddr) -> bool {
        self.latched == Some(from) || self.allowed(from.ip())
    }

    /// A datagram that failed SRTP authentication (or came from where the caller cannot
    /// be): rejected like any stranger's.
    pub fn forged(&mut self, from: SocketAddr) -> Verdict {
        self.reject(from)
    }

    /// One RTP packet from `from` with this SSRC and sequence number.
    pub fn rtp(&mut self, from: SocketAddr, ssrc: u32, seq: u16) -> Verdict {
        if self.latched == Some(from) {
            return Verdict::Accept;
        }
        // Latched: nothing else is learned unless a re-INVITE moved the media.
        if !self.allowed(from.ip()) || (self.latched.is_some() && !self.relearn) {
            return self.reject(from);
        }
        let next = match self.candidate {
            Some(c) if c.from == from && c.ssrc == ssrc && seq == c.seq.wrapping_add(1) => {
                Candidate {
                    seq,
                    count: c.count + 1,
                    ..c
                }
            }
            // A new source, a new SSRC or a jump: learning starts over with this packet.
            _ => Candidate {
                from,
                ssrc,
                seq,
                count: 1,
            },
        };
        if next.count >= LEARN_PACKETS {
            self.latched = Some(from);
            self.candidate = None;
            self.relearn = false;
            Verdict::Accept
        } else {
            self.candidate = Some(next);
            Verdict::Learning
        }
    }

    /// One RTCP packet: taken only from the latched source's IP (RTCP may come from the
    /// port above the RTP port, RFC 3550 §11).
    pub fn rtcp(&mut self, from: SocketAddr) -> Verdict {
        match self.latched {
            Some(l) if same_ip(l.ip(), from.ip()) => Verdict::Accept,
            _ if self.allowed(from.ip()) => Verdict::Learning,
            _ => self.reject(from),
        }
    }

    /// A re-INVITE named a new address: learning starts again against it (and the
    /// signalling source). The latched source stays valid until another is learned, so a
    /// re-INVITE that does not really move anything loses nothing.
    pub fn moved(&mut self, sdp: Option<IpAddr>, signalling: Option<IpAddr>) {
        self.allowed = [sdp.filter(usable), signalling.filter(usable)];
        self.candidate = None;
        // The old source remains reachable only if it is still an allowed address.
        if let Some(l) = self.latched {
            if !self.allowed(l.ip()) {
                self.latched = None;
            }
        }
        self.relearn = true;
    }
}

/// Not a hold or unspecified address.
fn usable(ip: &IpAddr) -> bool {
    !ip.is_unspecified()
}

/// IPv4 and its IPv4-mapped IPv6 form count as one address.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// Feeds `n` in-sequence packets from `from` starting at `seq`; returns the verdicts.
    fn feed(g: &mut SourceGuard, from: &str, ssrc: u32, seq: u16, n: u16) -> Vec<Verdict> {
        (0..n)
            .map(|i| g.rtp(at(from), ssrc, seq.wrapping_add(i)))
            .collect()
    }

    #[test]
    fn the_caller_is_learned_after_three_in_sequence_packets_and_nothing_is_sent_before() {
        let mut g = SourceGuard::new(ip("10.0.0.5"), ip("10.0.0.5"));
        assert_eq!(g.latched(), None);
        let v = feed(&mut g, "10.0.0.5:4000", 7, 65_534, 4);
        assert_eq!(
            v,
            [
                Verdict::Learning,
                Verdict::Learning,
                Verdict::Accept,
                Verdict::Accept
            ]
        );
        assert_eq!(g.latched(), Some(at("10.0.0.5:4000")));
    }

    #[test]
    fn an_attacker_on_another_ip_is_never_taken_before_during_or_after_learning() {
        let mut g = SourceGuard::new(ip("10.0.0.5"), ip("10.0.0.5"));
        // Before the caller: even a long in-sequence run (same SSRC as the caller's).
        for v in feed(&mut g, "10.9.9.9:4000", 7, 100, 50) {
            assert!(matches!(v, Verdict::Reject { .. }));
        }
        assert_eq!(g.latched(), None);
        // Interleaved with the caller's first packets: the caller still latches.
        for i in 0..3 {
            assert!(matches!(
                g.rtp(at("10.9.9.9:4001"), 8, 200 + i),
                Verdict::Reject { .. }
            ));
            g.rtp(at("10.0.0.5:4000"), 7, 10 + i);
        }
        assert_eq!(g.latched(), Some(at("10.0.0.5:4000")));
        // After: still rejected; logged once per source IP.
        assert_eq!(
            g.rtp(at("10.9.9.9:5000"), 7, 13),
            Verdict::Reject { log: false }
        );
        assert_eq!(
            g.rtp(at("10.9.9.8:5000"), 7, 13),
            Verdict::Reject { log: true }
        );
        assert_eq!(g.rejected(), 50 + 3 + 2);
    }

    #[test]
    fn out_of_sequence_or_ssrc_switching_packets_restart_learning() {
        let mut g = SourceGuard::new(ip("10.0.0.5"), None);
        g.rtp(at("10.0.0.5:4000"), 7, 1);
        g.rtp(at("10.0.0.5:4000"), 7, 2);
        // A jump restarts the count.
        assert_eq!(g.rtp(at("10.0.0.5:4000"), 7, 9), Verdict::Learning);
        // Another SSRC restarts it too.
        assert_eq!(g.rtp(at("10.0.0.5:4000"), 8, 10), Verdict::Learning);
        // Two sources on the allowed IP alternating never latch either.
        for i in 0..10 {
            assert_eq!(g.rtp(at("10.0.0.5:4001"), 9, 100 + i), Verdict::Learning);
            assert_eq!(g.rtp(at("10.0.0.5:4002"), 9, 100 + i), Verdict::Learning);
        }
        assert_eq!(g.latched(), None);
    }

    #[test]
    fn once_latched_another_port_on_the_same_ip_is_not_taken_without_a_reinvite() {
        let mut g = SourceGuard::new(ip("10.0.0.5"), None);
        feed(&mut g, "10.0.0.5:4000", 7, 1, 3);
        for v in feed(&mut g, "10.0.0.5:4444", 7, 4, 10) {
            assert!(matches!(v, Verdict::Reject { .. }));
        }
        assert_eq!(g.latched(), Some(at("10.0.0.5:4000")));
    }

    #[test]
    fn behind_nat_the_signalling_ip_is_allowed_when_the_sdp_names_a_private_one() {
        let mut g = SourceGuard::new(ip("192.168.1.20"), ip("203.0.113.7"));
        feed(&mut g, "203.0.113.7:31000", 1, 1, 3);
        assert_eq!(g.latched(), Some(at("203.0.113.7:31000")));
    }

    #[test]
    fn a_hold_address_allows_only_the_signalling_source() {
        let mut g = SourceGuard::new(ip("0.0.0.0"), ip("10.0.0.5"));
        assert!(matches!(
            g.rtp(at("0.0.0.0:4000"), 1, 1),
            Verdict::Reject { .. }
        ));
        feed(&mut g, "10.0.0.5:4000", 1, 1, 3);
        assert!(g.latched().is_some());
    }

    #[test]
    fn rtcp_only_from_the_latched_ip() {
        let mut g = SourceGuard::new(ip("10.0.0.5"), None);
        assert_eq!(g.rtcp(at("10.0.0.5:4001")), Verdict::Learning);
        assert!(matches!(
            g.rtcp(at("10.9.9.9:4001")),
            Verdict::Reject { .. }
        ));
        feed(&mut g, "10.0.0.5:4000", 7, 1, 3);
        assert_eq!(g.rtcp(at("10.0.0.5:4001")), Verdict::Accept);
        assert!(matches!(
            g.rtcp(at("10.9.9.9:4001")),
            Verdict::Reject { .. }
        ));
    }

    #[test]
    fn a_reinvite_moves_the_media_and_the_old_source_serves_until_the_new_one_is_learned() {
        let mut g = SourceGuard::new(ip("10.0.0.5"), ip("10.0.0.5"));
        feed(&mut g, "10.0.0.5:4000", 7, 1, 3);
        // Same IP, new port: the old source keeps working meanwhile.
        g.moved(ip("10.0.0.5"), ip("10.0.0.5"));
        assert_eq!(g.rtp(at("10.0.0.5:4000"), 7, 4), Verdict::Accept);
        assert_eq!(
            feed(&mut g, "10.0.0.5:6000", 9, 50, 3),
            [Verdict::Learning, Verdict::Learning, Verdict::Accept]
        );
        assert_eq!(g.latched(), Some(at("10.0.0.5:6000")));
        // Learning is closed again: the old port is now refused.
        assert!(matches!(
            g.rtp(at("10.0.0.5:4000"), 7, 5),
            Verdict::Reject { .. }
        ));
        // To another IP: the old one is dropped at once, the new one learned.
        g.moved(ip("10.0.0.6"), ip("10.0.0.6"));
        assert_eq!(g.latched(), None);
        feed(&mut g, "10.0.0.6:7000", 9, 60, 3);
        assert_eq!(g.latched(), Some(at("10.0.0.6:7000")));
    }

    #[test]
    fn a_flood_from_many_sources_logs_a_bounded_number_of_them() {
        let mut g = SourceGuard::new(ip("10.0.0.5"), None);
        let mut logged = 0;
        for i in 0..1000u32 {
            let from = SocketAddr::new(IpAddr::V4((0x0b00_0000 + i).into()), 4000);
            if let Verdict::Reject { log: true } = g.rtp(from, 1, 1) {
                logged += 1;
            }
        }
        assert_eq!(logged, LOGGED_SOURCES);
        assert_eq!(g.rejected(), 1000);
    }
}
