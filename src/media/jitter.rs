//! Jitter and reorder buffers, one per incoming stream. Pure state machines: packets and
//! `now` go in, ordered media comes out. No clock reads, no sockets, fixed-size rings
//! (no allocation per packet beyond the payload the network layer already allocated).

use bytes::Bytes;
use std::time::{Duration, Instant};

/// Extends 16-bit RTP sequence numbers to a monotonic 64-bit space (handles wrap-around).
#[derive(Debug, Default, Clone)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.last {
            None => (1u64 << 32) + seq as u64, // start high so "earlier" never underflows
            Some(last) => {
                let base = last & !0xffff;
                let cands = [
                    base.wrapping_sub(0x10000) + seq as u64,
                    base + seq as u64,
                    base + 0x10000 + seq as u64,
                ];
                *cands
                    .iter()
                    .min_by_key(|c| c.abs_diff(last))
                    .expect("three candidates")
            }
        };
        if self.last.is_none_or(|l| ext > l) {
            self.last = Some(ext);
        }
        ext
    }
}

// ---------------------------------------------------------------- audio

/// What the audio buffer yields for one 20 ms tick.
#[derive(Debug, PartialEq)]
pub enum AudioPop {
    /// The next packet in order.
    Packet(Bytes),
    /// The next packet is missing (lost or late): conceal it.
    Missing,
    /// Not playing (nothing buffered yet, or after a long silence): treat as silent.
    Idle,
}

const AUDIO_RING: usize = 64;

/// Playout buffer for one audio stream: starts once `target` packets are queued, then
/// yields one packet per tick in sequence order. Late packets are dropped; when more than
/// `cap` are queued the oldest are dropped (latency bound); after `idle_after` consecutive
/// misses it stops and re-buffers.
#[derive(Debug)]
pub struct AudioJitter {
    slots: Vec<Option<(u64, Bytes)>>,
    ext: SeqExtender,
    next: Option<u64>,
    highest: Option<u64>,
    playing: bool,
    misses: u32,
    target: usize,
    cap: usize,
    idle_after: u32,
    /// Packets dropped because they arrived after their slot was played or skipped.
    pub late: u64,
    /// Packets dropped to bound latency.
    pub overflow: u64,
}

impl Default for AudioJitter {
    fn default() -> Self {
        Self::new(2, 12, 10)
    }
}

impl AudioJitter {
    pub fn new(target: usize, cap: usize, idle_after: u32) -> Self {
        Self {
            slots: vec![None; AUDIO_RING],
            ext: SeqExtender::default(),
            next: None,
            highest: None,
            playing: false,
            misses: 0,
            target: target.max(1),
            cap: cap.clamp(target.max(1), AUDIO_RING - 1),
            idle_after,
            late: 0,
            overflow: 0,
        }
    }

    fn queued(&self) -> usize {
        match (self.next, self.highest) {
            (Some(n), Some(h)) if h >= n => (h - n + 1) as usize,
            _ => 0,
        }
    }

    pub fn push(&mut self, seq: u16, payload: Bytes) {
        let s = self.ext.extend(seq);
        match self.next {
            // Reordered before playout started: begin earlier.
            Some(n) if s < n && !self.playing && n - s < AUDIO_RING as u64 / 2 => {
                self.next = Some(s)
            }
            Some(n) if s < n => {
                self.late += 1;
                return;
            }
            Some(n) if s - n >= AUDIO_RING as u64 => {
                // A jump far ahead (sender restart): start over from here.
                self.slots.iter_mut().for_each(|x| *x = None);
                self.next = Some(s);
                self.highest = None;
                self.playing = false;
            }
            Some(_) => {}
            None => self.next = Some(s),
        }
        self.slots[(s % AUDIO_RING as u64) as usize] = Some((s, payload));
        self.highest = Some(self.highest.map_or(s, |h| h.max(s)));
        while self.queued() > self.cap {
            let n = self.next.expect("queued > 0 implies next");
            self.slots[(n % AUDIO_RING as u64) as usize] = None;
            self.next = Some(n + 1);
            self.overflow += 1;
        }
        if !self.playing && self.queued() >= self.target {
            self.playing = true;
            self.misses = 0;
        }
    }

    pub fn pop(&mut self) -> AudioPop {
        if !self.playing {
            return AudioPop::Idle;
        }
        let Some(n) = self.next else {
            return AudioPop::Idle;
        };
        let slot = &mut self.slots[(n % AUDIO_RING as u64) as usize];
        let got = match slot.take() {
            Some((s, p)) if s == n => Some(p),
            other => {
                *slot = other;
                None
            }
        };
        if self.highest.is_some_and(|h| h >= n) {
            self.next = Some(n + 1);
        }
        match got {
            Some(p) => {
                self.misses = 0;
                AudioPop::Packet(p)
            }
            None => {
                self.misses += 1;
                if self.misses >= self.idle_after {
                    self.playing = false;
                    self.misses = 0;
                    if let Some(h) = self.highest {
                        self.next = Some(h + 1);
                    }
                    AudioPop::Idle
                } else {
                    AudioPop::Missing
                }
            }
        }
    }
}

// ---------------------------------------------------------------- video

const VIDEO_RING: usize = 1024;

/// What the video assembler yields.
#[derive(Debug, PartialEq)]
pub enum VideoPop {
    /// A complete frame: its RTP timestamp and payloads in sequence order.
    Frame {
        timestamp: u32,
        payloads: Vec<Bytes>,
    },
    /// Packets were lost for good; the decoder needs a keyframe.
    Lost,
}

#[derive(Debug, Clone)]
struct Slot {
    seq: u64,
    ts: u32,
    marker: bool,
    arrival: Instant,
    payload: Bytes,
}

/// Reorders a video stream's packets and cuts it into frames (marker bit / timestamp
/// change). A gap waits up to `max_wait` for a late or retransmitted packet, then the
/// damaged frames are skipped and `Lost` is reported.
#[derive(Debug)]
pub struct VideoAssembler {
    slots: Vec<Option<Slot>>,
    ext: SeqExtender,
    next: Option<u64>,
    highest: Option<u64>,
    max_wait: Duration,
    /// Whether a frame or loss has been emitted (before that, reordering may move `next` back).
    started: bool,
    /// Packets dropped as too late or as duplicates.
    pub late: u64,
    /// Frames abandoned because of loss.
    pub lost_events: u64,
    /// A frame's payload list handed back by the consumer ([`Self::recycle`]), reused
    /// for the next frame instead of allocating one.
    spare: Vec<Bytes>,
}

impl Default for VideoAssembler {
    fn default() -> Self {
        Self::new(Duration::from_millis(120))
    }
}

impl VideoAssembler {
    pub fn new(max_wait: Duration) -> Self {
        Self {
            slots: vec![None; VIDEO_RING],
            ext: SeqExtender::default(),
            next: None,
            highest: None,
            max_wait,
            started: false,
            late: 0,
            lost_events: 0,
            spare: Vec::new(),
        }
    }

    /// Gives a popped frame's payload list back for reuse (its packets are dropped).
    pub fn recycle(&mut self, mut payloads: Vec<Bytes>) {
        if payloads.capacity() > self.spare.capacity() {
            payloads.clear();
            self.spare = payloads;
        }
    }

    fn slot(&self, s: u64) -> Option<&Slot> {
        self.slots[(s % VIDEO_RING as u64) as usize]
            .as_ref()
            .filter(|x| x.seq == s)
    }

    pub fn push(&mut self, now: Instant, seq: u16, ts: u32, marker: bool, payload: Bytes) {
        let s = self.ext.extend(seq);
        match self.next {
            Some(n) if s < n && !self.started && n - s < 64 => self.next = Some(s),
            Some(n) if s < n => {
                self.late += 1;
                return;
            }
            Some(n) if s - n >= VIDEO_RING as u64 => {
                self.slots.iter_mut().for_each(|x| *x = None);
                self.next = Some(s);
                self.highest = None;
                self.lost_events += 1;
            }
            None => self.next = Some(s),
            _ => {}
        }
        let idx = (s % VIDEO_RING as u64) as usize;
        if self.slots[idx].as_ref().is_some_and(|x| x.seq == s) {
            self.late += 1; // duplicate
            return;
        }
        self.slots[idx] = Some(Slot {
            seq: s,
            ts,
            marker,
            arrival: now,
            payload,
        });
        self.highest = Some(self.highest.map_or(s, |h| h.max(s)));
    }

    /// Returns the next complete frame, a loss report, or `None` (waiting). Frames made
    /// only of padding (bandwidth probes) are consumed silently.
    pub fn pop(&mut self, now: Instant) -> Option<VideoPop> {
        loop {
            match self.pop_one(now)? {
                VideoPop::Frame { payloads, .. } if payloads.is_empty() => {
                    self.recycle(payloads);
                    continue;
                }
                other => return Some(other),
            }
        }
    }

    fn pop_one(&mut self, now: Instant) -> Option<VideoPop> {
        let (n, h) = (self.next?, self.highest?);
        // Walk forward from `next` collecting one frame.
        let mut s = n;
        let mut frame_ts = None;
        while s <= h {
            let Some(p) = self.slot(s) else { break };
            match frame_ts {
                None => frame_ts = Some(p.ts),
                Some(t) if t != p.ts => {
                    // Timestamp changed without a marker: the previous frame ended at s-1.
                    return Some(self.take_frame(n, s));
                }
                _ => {}
            }
            if p.marker {
                return Some(self.take_frame(n, s + 1));
            }
            s += 1;
        }
        if s > h {
            return None; // everything present so far; the frame is still arriving
        }
        // Gap at `s`. Wait for it unless it is old enough to give up on.
        let oldest_after_gap = (s + 1..=h)
            .filter_map(|x| self.slot(x))
            .map(|p| p.arrival)
            .min()?;
        if now.duration_since(oldest_after_gap) < self.max_wait {
            return None;
        }
        // Give up: drop everything up to the first packet of a later frame.
        let broken_ts = frame_ts.or_else(|| self.slot(s + 1).map(|p| p.ts));
        let mut resume = s + 1;
        while resume <= h {
            match self.slot(resume) {
                Some(p) if Some(p.ts) != broken_ts => break,
                _ => resume += 1,
            }
        }
        for x in n..resume {
            self.slots[(x % VIDEO_RING as u64) as usize] = None;
        }
        self.next = Some(resume);
        self.started = true;
        self.lost_events += 1;
        Some(VideoPop::Lost)
    }

    fn take_frame(&mut self, from: u64, to: u64) -> VideoPop {
        let mut payloads = std::mem::take(&mut self.spare);
        payloads.clear();
        payloads.reserve((to - from) as usize);
        let mut timestamp = 0;
        for x in from..to {
            if let Some(p) = self.slots[(x % VIDEO_RING as u64) as usize].take() {
                if !p.payload.is_empty() {
                    timestamp = p.ts;
                    payloads.push(p.payload);
                }
            }
        }
        self.next = Some(to);
        self.started = true;
        VideoPop::Frame {
            timestamp,
            payloads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: u8) -> Bytes {
        Bytes::from(vec![x])
    }

    #[test]
    fn seq_extension_wraps() {
        let mut e = SeqExtender::default();
        let a = e.extend(65534);
        assert_eq!(e.extend(65535), a + 1);
        assert_eq!(e.extend(0), a + 2);
        assert_eq!(e.extend(65535), a + 1, "late packet from before the wrap");
        assert_eq!(e.extend(1), a + 3);
    }

    #[test]
    fn audio_reorders_and_conceals() {
        let mut j = AudioJitter::new(2, 12, 10);
        assert_eq!(j.pop(), AudioPop::Idle);
        j.push(11, b(11));
        assert_eq!(j.pop(), AudioPop::Idle, "waits for the target depth");
        j.push(10, b(10));
        assert_eq!(j.pop(), AudioPop::Packet(b(10)));
        assert_eq!(j.pop(), AudioPop::Packet(b(11)));
        j.push(13, b(13));
        assert_eq!(j.pop(), AudioPop::Missing, "12 never came");
        assert_eq!(j.pop(), AudioPop::Packet(b(13)));
        j.push(12, b(12));
        assert_eq!(j.late, 1);
    }

    #[test]
    fn audio_bounds_latency_and_goes_idle() {
        let mut j = AudioJitter::new(2, 5, 3);
        for s in 0..20u16 {
            j.push(s, b(s as u8));
        }
        assert_eq!(j.overflow, 15);
        assert_eq!(j.pop(), AudioPop::Packet(b(15)));
        for _ in 0..4 {
            j.pop();
        }
        assert_eq!(j.pop(), AudioPop::Missing);
        assert_eq!(j.pop(), AudioPop::Missing);
        assert_eq!(j.pop(), AudioPop::Idle, "stops after 3 misses");
    }

    #[test]
    fn video_assembles_reordered_frames() {
        let t0 = Instant::now();
        let mut v = VideoAssembler::default();
        v.push(t0, 101, 3000, true, b(2));
        v.push(t0, 100, 3000, false, b(1));
        v.push(t0, 102, 6000, false, b(3));
        assert_eq!(
            v.pop(t0),
            Some(VideoPop::Frame {
                timestamp: 3000,
                payloads: vec![b(1), b(2)]
            })
        );
        assert_eq!(v.pop(t0), None, "second frame incomplete");
        v.push(t0, 103, 6000, true, b(4));
        assert_eq!(
            v.pop(t0),
            Some(VideoPop::Frame {
                timestamp: 6000,
                payloads: vec![b(3), b(4)]
            })
        );
    }

    #[test]
    fn video_reports_loss_after_waiting_then_resumes() {
        let t0 = Instant::now();
        let mut v = VideoAssembler::new(Duration::from_millis(100));
        v.push(t0, 1, 100, true, b(1));
        assert!(matches!(v.pop(t0), Some(VideoPop::Frame { .. })));
        // Frame 200 = seq 2,3 (3 lost); frame 300 = seq 4.
        v.push(t0, 2, 200, false, b(2));
        v.push(t0, 4, 300, true, b(4));
        assert_eq!(
            v.pop(t0 + Duration::from_millis(50)),
            None,
            "still waiting for 3"
        );
        assert_eq!(v.pop(t0 + Duration::from_millis(150)), Some(VideoPop::Lost));
        assert_eq!(
            v.pop(t0 + Duration::from_millis(150)),
            Some(VideoPop::Frame {
                timestamp: 300,
                payloads: vec![b(4)]
            })
        );
        // A retransmission that arrives after giving up is dropped.
        v.push(t0, 3, 200, true, b(3));
        assert_eq!(v.late, 1);
    }

    #[test]
    fn padding_packets_fill_sequence_gaps_without_making_frames() {
        let t0 = Instant::now();
        let mut v = VideoAssembler::default();
        v.push(t0, 1, 100, true, b(1));
        v.push(t0, 2, 100, false, Bytes::new()); // padding after the frame
        v.push(t0, 3, 100, false, Bytes::new());
        v.push(t0, 4, 200, true, b(4));
        assert_eq!(
            v.pop(t0),
            Some(VideoPop::Frame {
                timestamp: 100,
                payloads: vec![b(1)]
            })
        );
        assert_eq!(
            v.pop(t0),
            Some(VideoPop::Frame {
                timestamp: 200,
                payloads: vec![b(4)]
            })
        );
        assert_eq!(v.pop(t0), None);
        assert_eq!(v.lost_events, 0);
    }

    #[test]
    fn video_late_packet_within_wait_completes_the_frame() {
        let t0 = Instant::now();
        let mut v = VideoAssembler::new(Duration::from_millis(100));
        v.push(t0, 10, 100, false, b(1));
        v.push(t0, 12, 100, true, b(3));
        assert_eq!(v.pop(t0), None);
        v.push(t0 + Duration::from_millis(30), 11, 100, false, b(2));
        assert_eq!(
            v.pop(t0 + Duration::from_millis(30)),
            Some(VideoPop::Frame {
                timestamp: 100,
                payloads: vec![b(1), b(2), b(3)]
            })
        );
    }
}
