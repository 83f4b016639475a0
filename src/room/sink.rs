//! Output sinks: the media thread hands a finished frame to a sink — an H.264 access unit
//! or VP8 frame already cut into payloads once for all its viewers (`codec::pack`), or one
//! audio packet — which adds this receiver's RTP header (SSRC, sequence number, timestamp
//! from the media clock) and, for VP8, its own payload descriptor (PictureID, TL0PICIDX),
//! and queues the packets — without blocking — for the network task that owns the track.
//! A full queue drops the packet and counts it; the media loop never waits on the network.

use bytes::Bytes;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use tokio::sync::mpsc;

/// Max payload bytes per RTP packet (leaves room for SRTP, header extensions, TURN).
pub const RTP_MTU: usize = 1100;

pub struct RtpSink {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    ts_offset: u32,
    tx: mpsc::Sender<Packet>,
    /// Packets dropped because the network task had not drained the queue.
    pub dropped: u64,
    /// A VP8 viewer's own payload descriptors (PictureID, TL0PICIDX); `None`: H.264/audio.
    vp8: Option<crate::codec::pack::Vp8Descriptors>,
}

impl RtpSink {
    pub fn new(ssrc: u32, payload_type: u8, tx: mpsc::Sender<Packet>) -> Self {
        Self {
            ssrc,
            payload_type,
            seq: rand::random(),
            ts_offset: rand::random(),
            tx,
            dropped: 0,
            vp8: None,
        }
    }

    /// This video sink sends VP8 (each frame gets this viewer's payload descriptors).
    pub fn with_vp8(mut self) -> Self {
        self.vp8 = Some(crate::codec::pack::Vp8Descriptors::new(
            rand::random(),
            rand::random(),
        ));
        self
    }

    /// The video codec this sink's viewer receives.
    pub fn codec(&self) -> crate::codec::OutputCodec {
        match self.vp8 {
            Some(_) => crate::codec::OutputCodec::Vp8,
            None => crate::codec::OutputCodec::H264,
        }
    }

    /// Sends a frame packetised once for all its viewers (`codec::pack`): only the header
    /// (this sink's SSRC, sequence numbers, timestamp offset) is per viewer; the payloads
    /// are shared views, not copies.
    pub fn send_packetized(&mut self, ts: u32, frame: &crate::codec::pack::PacketizedFrame) {
        use crate::codec::pack::FrameFormat;
        let n = frame.len();
        match (frame.format(), self.vp8.take()) {
            (FrameFormat::Complete, vp8) => {
                self.vp8 = vp8;
                for (i, payload) in frame.payloads().enumerate() {
                    self.push(ts, i + 1 == n, payload);
                }
            }
            (FrameFormat::Vp8, Some(mut d)) => {
                for (i, payload) in d.payloads(frame).enumerate() {
                    self.push(ts, i + 1 == n, payload);
                }
                self.vp8 = Some(d);
            }
            // A VP8 frame for a sink that does not send VP8: never sent as something else.
            (FrameFormat::Vp8, None) => self.dropped += n as u64,
        }
    }

    /// Sends one payload as one packet (audio: every codec's 20 ms frame fits one packet;
    /// the marker is set on it, as the rtc payloaders set it on a frame's last packet).
    pub fn send_packet(&mut self, ts: u32, payload: Bytes) {
        self.push(ts, true, payload);
    }

    fn push(&mut self, ts: u32, marker: bool, payload: Bytes) {
        let pkt = Packet {
            header: Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp: ts.wrapping_add(self.ts_offset),
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.seq = self.seq.wrapping_add(1);
        if self.tx.try_send(pkt).is_err() {
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_timestamps_are_monotonic_and_full_queue_drops() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut s = RtpSink::new(7, 111, tx);
        s.send_packet(0, Bytes::from_static(&[1, 2, 3]));
        s.send_packet(960, Bytes::from_static(&[4]));
        s.send_packet(1920, Bytes::from_static(&[5]));
        assert_eq!(s.dropped, 1);
        let a = rx.try_recv().unwrap();
        let b = rx.try_recv().unwrap();
        assert_eq!(
            b.header.sequence_number,
            a.header.sequence_number.wrapping_add(1)
        );
        assert_eq!(b.header.timestamp.wrapping_sub(a.header.timestamp), 960);
        assert_eq!((a.header.ssrc, a.header.payload_type), (7, 111));
        assert!(a.header.marker);
    }

    #[test]
    fn one_packetised_frame_goes_to_many_viewers_with_their_own_headers() {
        use crate::codec::pack::{H264Packetizer, PacketizedFrame};
        let mut frame = PacketizedFrame::default();
        let mut au = vec![0, 0, 0, 1, 0x65];
        au.extend(std::iter::repeat_n(0xab, 3000));
        H264Packetizer::default().packetize(&au, RTP_MTU, &mut frame);
        assert_eq!(frame.len(), 3);
        let (tx1, mut rx1) = mpsc::channel(8);
        let (tx2, mut rx2) = mpsc::channel(8);
        let mut a = RtpSink::new(1, 102, tx1);
        let mut b = RtpSink::new(2, 102, tx2);
        a.send_packetized(3000, &frame);
        b.send_packetized(3000, &frame);
        let (pa, pb): (Vec<Packet>, Vec<Packet>) = (
            std::iter::from_fn(|| rx1.try_recv().ok()).collect(),
            std::iter::from_fn(|| rx2.try_recv().ok()).collect(),
        );
        assert_eq!((pa.len(), pb.len()), (3, 3));
        for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
            assert_eq!((x.header.ssrc, y.header.ssrc), (1, 2));
            assert_eq!(x.header.marker, i == 2);
            assert_eq!(
                x.header.sequence_number,
                pa[0].header.sequence_number.wrapping_add(i as u16)
            );
            // The same bytes, not a copy.
            assert_eq!(x.payload.as_ptr(), y.payload.as_ptr());
        }
    }
}
