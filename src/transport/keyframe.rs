//! The feedback a viewer sends about the streams we send it, out of the interceptor chain:
//! keyframe requests (PLI, FIR) handed to the application (the `webrtc` stack consumes
//! inbound RTCP inside its chain; only packets marked `DeliverToApplication` surface as
//! `TrackLocalEvent::OnRtcpPacket`, and an MCU needs exactly these to force an IDR), and the
//! link figures — congestion-control estimate, REMB, NACKs, loss — into the viewer's
//! [`ViewerLink`].

use crate::room::link::ViewerLink;
use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Gcc, Interceptor, Packet, PacketReport,
    StreamInfo, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
pub struct KeyframeRequestForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

pub fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Observes the RTCP a viewer sends about what we send it — REMB, NACKs, keyframe
/// requests, receiver reports — and records it in the viewer's [`ViewerLink`]. Sits at the
/// wire end of the chain (before the stack's own interceptors consume NACKs and filter
/// receiver reports); passes everything on untouched.
pub struct LinkTap {
    link: Arc<ViewerLink>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl LinkTap {
    pub fn new(link: Arc<ViewerLink>) -> Self {
        Self {
            link,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    fn observe(&self, p: &dyn rtc::rtcp::Packet) {
        let any = p.as_any();
        if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            if remb.bitrate.is_finite() && remb.bitrate > 0.0 {
                self.link.set_remb_bps(remb.bitrate as u64);
            }
        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            let n: u64 = nack
                .nacks
                .iter()
                .map(|p| 1 + p.lost_packets.count_ones() as u64)
                .sum();
            self.link.nacked.fetch_add(n, Ordering::Relaxed);
        } else if is_keyframe_request(p) {
            self.link.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            if let Some(worst) = rr.reports.iter().map(|r| r.fraction_lost).max() {
                self.link.set_loss(worst);
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LinkTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                self.observe(p.as_ref());
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for LinkTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Google Congestion Control, publishing its estimate into the viewer's link after every
/// change (the estimator lives inside the interceptor chain, out of the application's
/// reach, so the number is pushed out from here).
pub struct LinkEstimator {
    inner: Gcc,
    link: Arc<ViewerLink>,
}

impl LinkEstimator {
    pub fn new(link: Arc<ViewerLink>, initial_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        Self {
            inner: Gcc::new(initial_bps, min_bps, max_bps),
            link,
        }
    }
}

impl BandwidthEstimator for LinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        if !reports.is_empty() {
            self.link.set_gcc_bps(self.inner.target_bitrate());
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}
