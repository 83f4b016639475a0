//! What the network side knows about one viewer's downlink, shared lock-free between the
//! viewer's transport (which writes the congestion-control estimate, REMB, NACK/PLI counts
//! and loss as RTCP arrives), its signaling (the viewer's requested maximum size) and the
//! room's video thread (which reads them every tick and writes back the rung it chose).
//! Only atomics: the video thread never locks.

use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// One viewer's downlink state.
#[derive(Debug, Default)]
pub struct ViewerLink {
    /// Send-side estimate (GCC over transport-wide feedback), bit/s; 0 = none yet.
    gcc_bps: AtomicU64,
    /// The receiver's own REMB, bit/s; 0 = never sent. The estimate for receivers that send
    /// no transport-wide feedback.
    remb_bps: AtomicU64,
    /// The viewer's requested maximum picture, `width << 32 | height`; 0 = no cap.
    cap: AtomicU64,
    /// Rung the video thread put the viewer on, plus one (0 = none yet).
    rung: AtomicU32,
    /// Frames per second the viewer is sent.
    fps: AtomicU32,
    /// Fraction lost reported in the viewer's receiver reports, in 1/256 (RFC 3550).
    loss: AtomicU32,
    /// NACKed packets (sequence numbers asked for).
    pub nacked: AtomicU64,
    /// Keyframe requests (PLI/FIR) from the viewer.
    pub keyframe_requests: AtomicU64,
    /// IDRs the viewer was sent on request or on a move.
    pub idrs: AtomicU64,
}

/// A link as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkInfo {
    pub participant_id: crate::ids::ParticipantId,
    /// What the server estimates the viewer's downlink carries (kbit/s), if known.
    pub estimate_kbps: Option<u32>,
    /// The viewer's REMB, if it sends one (kbit/s).
    pub remb_kbps: Option<u32>,
    /// Index into the ladder (0 = best), once chosen.
    pub rung: Option<u32>,
    pub fps: u32,
    pub max_width: u32,
    pub max_height: u32,
    pub loss_percent: f32,
    pub nacked_packets: u64,
    pub keyframe_requests: u64,
}

impl ViewerLink {
    pub fn set_gcc_bps(&self, bps: f64) {
        self.gcc_bps.store(bps.max(1.0) as u64, Relaxed);
    }

    pub fn set_remb_bps(&self, bps: u64) {
        self.remb_bps.store(bps, Relaxed);
    }

    /// The estimate the rung policy works from, kbit/s: the send-side estimate over the
    /// viewer's transport-wide feedback; a receiver that gives none is judged by its REMB.
    /// (REMB is not used as a bound beside TWCC: headless Chromium, which does both, sent
    /// REMB of 23 kbit/s under 3 % random loss while it received 630 kbit/s without trouble.)
    /// `None` until either exists.
    pub fn estimate_kbps(&self) -> Option<u32> {
        let gcc = self.gcc_bps.load(Relaxed);
        let remb = self.remb_bps.load(Relaxed);
        let bps = match (gcc, remb) {
            (0, 0) => return None,
            (0, r) => r,
            (g, _) => g,
        };
        Some((bps / 1000).min(u32::MAX as u64) as u32)
    }

    /// The viewer's requested maximum picture (0 = no limit on that side).
    pub fn set_cap(&self, width: u32, height: u32) {
        self.cap
            .store(((width as u64) << 32) | height as u64, Relaxed);
    }

    pub fn cap(&self) -> (u32, u32) {
        let c = self.cap.load(Relaxed);
        ((c >> 32) as u32, c as u32)
    }

    pub fn set_loss(&self, fraction_lost: u8) {
        self.loss.store(fraction_lost as u32, Relaxed);
    }

    /// The loss the viewer last reported, in whole percent (rounded up), if any.
    pub fn loss_percent(&self) -> u8 {
        (self.loss.load(Relaxed) * 100).div_ceil(256) as u8
    }

    /// Written by the video thread.
    pub fn set_rung(&self, rung: usize, fps: u32) {
        self.rung.store(rung as u32 + 1, Relaxed);
        self.fps.store(fps, Relaxed);
    }

    pub fn info(&self, id: crate::ids::ParticipantId) -> LinkInfo {
        let (max_width, max_height) = self.cap();
        let remb = self.remb_bps.load(Relaxed);
        LinkInfo {
            participant_id: id,
            estimate_kbps: self.estimate_kbps(),
            remb_kbps: (remb > 0).then_some((remb / 1000) as u32),
            rung: self.rung.load(Relaxed).checked_sub(1),
            fps: self.fps.load(Relaxed),
            max_width,
            max_height,
            loss_percent: self.loss.load(Relaxed) as f32 * 100.0 / 256.0,
            nacked_packets: self.nacked.load(Relaxed),
            keyframe_requests: self.keyframe_requests.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remb_serves_receivers_without_transport_feedback_and_zero_means_unknown() {
        let l = ViewerLink::default();
        assert_eq!(l.estimate_kbps(), None);
        l.set_remb_bps(400_000);
        assert_eq!(l.estimate_kbps(), Some(400));
        l.set_gcc_bps(900_000.0);
        assert_eq!(l.estimate_kbps(), Some(900));
        l.set_gcc_bps(300_000.0);
        assert_eq!(l.estimate_kbps(), Some(300));
        l.set_cap(640, 360);
        assert_eq!(l.cap(), (640, 360));
        l.set_rung(1, 30);
        let i = l.info(crate::ids::ParticipantId(3));
        assert_eq!((i.rung, i.fps, i.remb_kbps), (Some(1), 30, Some(400)));
    }
}
