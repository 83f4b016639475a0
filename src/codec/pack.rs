//! RTP payloads for an encoded H.264 access unit (RFC 6184, packetization-mode 1) or VP8
//! frame (RFC 7741), made **once per encoded frame** and shared by every viewer of that
//! encoder: all payloads are
//! written back to back into one buffer and handed out as slices of it, so sending a frame
//! to N viewers copies nothing and, once the network tasks have released the previous
//! frame, allocates nothing (the buffer's storage is reclaimed, `BytesMut::reserve`).
//!
//! The payloads are byte-for-byte those of the `rtc` crate's `H264Payloader` (checked in
//! the tests): SPS and PPS are aggregated into one STAP-A ahead of the next NAL unit, a NAL
//! unit that fits the MTU is sent alone, a larger one as FU-A fragments; AUD and filler
//! NAL units are dropped.
//!
//! VP8 payloads are shared without their payload descriptor: its PictureID and TL0PICIDX
//! must run on without a gap *per viewer* (a viewer moved to another encoder's stream would
//! otherwise see them jump, and a receiver takes a PictureID gap for loss), so each viewer's
//! [`Vp8Descriptors`] writes them in front of the shared bytes.

use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Range;

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const SPS: u8 = 7;
const PPS: u8 = 8;
const AUD: u8 = 9;
const FILLER: u8 = 12;
/// NRI of the STAP-A header (as `rtc` writes it: forbidden 0, NRI 3).
const STAP_A_HEADER: u8 = 0x60 | STAP_A;

/// One frame's payloads: `slices()` hands out `Bytes` views of a single shared buffer.
#[derive(Default)]
pub struct PacketizedFrame {
    data: Bytes,
    ranges: Vec<Range<usize>>,
    format: FrameFormat,
}

/// What a viewer's sink must add to a frame's payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrameFormat {
    /// Complete payloads (H.264).
    #[default]
    Complete,
    /// VP8 partition bytes; each needs its viewer's payload descriptor in front.
    Vp8,
}

impl PacketizedFrame {
    pub fn format(&self) -> FrameFormat {
        self.format
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Payload `i` (a reference-counted view: no copy).
    #[cfg(test)]
    pub fn payload(&self, i: usize) -> Bytes {
        self.data.slice(self.ranges[i].clone())
    }

    /// Payloads in order (reference-counted views).
    pub fn payloads(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.ranges.iter().map(|r| self.data.slice(r.clone()))
    }
}

/// Hands out copies of small frames (audio packets, recorded frames) as `Bytes` from one
/// reused buffer: once the previous frame's views are all dropped (the network task sent
/// it), the next frame goes into the same storage instead of a new allocation.
#[derive(Default)]
pub struct SharedBuf {
    buf: BytesMut,
}

impl SharedBuf {
    pub fn share(&mut self, data: &[u8]) -> Bytes {
        self.buf.clear();
        self.buf.reserve(data.len());
        self.buf.extend_from_slice(data);
        self.buf.split().freeze()
    }
}

/// Bytes of the VP8 payload descriptor Tessera writes: X, I (15-bit PictureID), L
/// (TL0PICIDX), T (TID 0, Y).
pub const VP8_DESCRIPTOR_LEN: usize = 6;

/// The least storage a VP8 packetiser or a viewer's descriptor writer starts with.
const VP8_BUFFER: usize = 128 * 1024;

/// Packetises a VP8 frame: chunks of at most `mtu - VP8_DESCRIPTOR_LEN` bytes, one
/// partition (descriptors are per viewer, see [`Vp8Descriptors`]).
#[derive(Default)]
pub struct Vp8Packetizer {
    buf: BytesMut,
}

impl Vp8Packetizer {
    pub fn packetize(&mut self, frame: &[u8], mtu: usize, out: &mut PacketizedFrame) {
        out.ranges.clear();
        out.data = Bytes::new();
        out.format = FrameFormat::Vp8;
        if frame.is_empty() || mtu <= VP8_DESCRIPTOR_LEN {
            return;
        }
        self.buf.clear();
        // At least VP8_BUFFER from the start: the storage is reclaimed frame after frame
        // only while frames fit the first allocation (a static picture's first frames
        // are tiny, a later keyframe is not).
        self.buf.reserve(frame.len().max(VP8_BUFFER));
        self.buf.extend_from_slice(frame);
        let max = mtu - VP8_DESCRIPTOR_LEN;
        let mut at = 0;
        while at < frame.len() {
            let end = (at + max).min(frame.len());
            out.ranges.push(at..end);
            at = end;
        }
        out.data = self.buf.split().freeze();
    }
}

/// One viewer's VP8 payload descriptors: a PictureID and TL0PICIDX that advance by one per
/// frame *this viewer* is sent, whichever encoder made it, written in front of the shared
/// bytes into a reused buffer.
pub struct Vp8Descriptors {
    picture_id: u16,
    tl0: u8,
    buf: BytesMut,
    ranges: Vec<Range<usize>>,
}

impl Vp8Descriptors {
    pub fn new(picture_id: u16, tl0: u8) -> Self {
        Self {
            picture_id: picture_id & 0x7fff,
            tl0,
            buf: BytesMut::new(),
            ranges: Vec::new(),
        }
    }

    /// This viewer's payloads of `frame` (a VP8 frame from [`Vp8Packetizer`]).
    pub fn payloads<'a>(&'a mut self, frame: &PacketizedFrame) -> impl Iterator<Item = Bytes> + 'a {
        self.buf.clear();
        self.ranges.clear();
        let bytes: usize = frame.ranges.iter().map(|r| r.len()).sum();
        self.buf
            .reserve((bytes + frame.len() * VP8_DESCRIPTOR_LEN).max(VP8_BUFFER));
        let pid = self.picture_id;
        for (i, r) in frame.ranges.iter().enumerate() {
            let start = self.buf.len();
            let s_bit = if i == 0 { 0x10 } else { 0 };
            self.buf.put_slice(&[
                0x80 | s_bit,            // X, S (partition 0)
                0xe0,                    // I, L, T
                0x80 | (pid >> 8) as u8, // M: 15-bit PictureID
                pid as u8,
                self.tl0, // TL0PICIDX
                0x20,     // TID 0, Y
            ]);
            self.buf.put_slice(&frame.data[r.clone()]);
            self.ranges.push(start..self.buf.len());
        }
        self.picture_id = (pid + 1) & 0x7fff;
        self.tl0 = self.tl0.wrapping_add(1);
        let data = self.buf.split().freeze();
        self.ranges.iter().map(move |r| data.slice(r.clone()))
    }
}

/// Either codec's packetiser (one per encoder).
pub enum Packetizer {
    H264(H264Packetizer),
    Vp8(Vp8Packetizer),
}

impl Packetizer {
    pub fn new(codec: crate::codec::OutputCodec) -> Self {
        match codec {
            crate::codec::OutputCodec::H264 => Self::H264(H264Packetizer::default()),
            crate::codec::OutputCodec::Vp8 => Self::Vp8(Vp8Packetizer::default()),
        }
    }

    pub fn packetize(&mut self, frame: &[u8], mtu: usize, out: &mut PacketizedFrame) {
        match self {
            Self::H264(p) => p.packetize(frame, mtu, out),
            Self::Vp8(p) => p.packetize(frame, mtu, out),
        }
    }
}

/// Packetises access units into a reused buffer (one per encoder).
#[derive(Default)]
pub struct H264Packetizer {
    buf: BytesMut,
}

impl H264Packetizer {
    /// Cuts the Annex B access unit `au` into payloads of at most `mtu` bytes, replacing
    /// `out`'s contents. Payloads of the previous frame still held elsewhere stay valid.
    pub fn packetize(&mut self, au: &[u8], mtu: usize, out: &mut PacketizedFrame) {
        out.ranges.clear();
        out.data = Bytes::new();
        out.format = FrameFormat::Complete;
        if au.is_empty() || mtu <= 2 {
            return;
        }
        // Reclaims the previous frame's storage when every view of it was dropped.
        self.buf.clear();
        self.buf.reserve(au.len() + au.len() / mtu * 2 + 64);
        let buf = &mut self.buf;
        let ranges = &mut out.ranges;
        let mut sps: Option<&[u8]> = None;
        let mut pps: Option<&[u8]> = None;
        for nal in annexb_nals(au) {
            let Some(&first) = nal.first() else { continue };
            let kind = first & 0x1f;
            match kind {
                AUD | FILLER => continue,
                SPS => {
                    sps = Some(nal);
                    continue;
                }
                PPS => {
                    pps = Some(nal);
                    continue;
                }
                _ => {}
            }
            if let (Some(s), Some(p)) = (sps.take(), pps.take()) {
                let len = 1 + 2 + s.len() + 2 + p.len();
                if len <= mtu {
                    let start = buf.len();
                    buf.put_u8(STAP_A_HEADER);
                    buf.put_u16(s.len() as u16);
                    buf.put_slice(s);
                    buf.put_u16(p.len() as u16);
                    buf.put_slice(p);
                    ranges.push(start..buf.len());
                }
            }
            if nal.len() <= mtu {
                let start = buf.len();
                buf.put_slice(nal);
                ranges.push(start..buf.len());
                continue;
            }
            // FU-A: the NAL header's NRI and type move into the FU indicator and header.
            let max = mtu - 2;
            let body = &nal[1..];
            let n = body.len().div_ceil(max);
            for (i, chunk) in body.chunks(max).enumerate() {
                let start = buf.len();
                buf.put_u8(FU_A | (first & 0x60));
                let mut header = kind;
                if i == 0 {
                    header |= 0x80;
                } else if i + 1 == n {
                    header |= 0x40;
                }
                buf.put_u8(header);
                buf.put_slice(chunk);
                ranges.push(start..buf.len());
            }
        }
        out.data = self.buf.split().freeze();
    }
}

/// The NAL units of an Annex B stream (start codes of 3 or 4 bytes; a stream without a
/// start code is one NAL unit).
fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = match find_start(data, 0) {
        Some((s, len)) => s + len,
        None => 0,
    };
    let mut done = data.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match find_start(data, pos) {
            Some((s, len)) => {
                let nal = &data[pos..s];
                pos = s + len;
                Some(nal)
            }
            None => {
                done = true;
                Some(&data[pos..])
            }
        }
    })
    .filter(|n| !n.is_empty())
}

/// The next start code at or after `from`: (index of its first zero, its length).
fn find_start(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut zeros = 0;
    for (i, &b) in data.iter().enumerate().skip(from) {
        match b {
            0 => zeros += 1,
            1 if zeros >= 2 => {
                let len = zeros.min(3) + 1;
                return Some((i + 1 - len, len));
            }
            _ => zeros = 0,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::video::{EncoderSettings, H264Encoder};
    use crate::media::I420Frame;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::Payloader;

    fn encoded_frames() -> Vec<Vec<u8>> {
        let mut enc = H264Encoder::new(EncoderSettings {
            width: 640,
            height: 360,
            fps: 30,
            bitrate_bps: 2_000_000,
            idr_interval_frames: 300,
            complexity: Default::default(),
            analysis: Default::default(),
        })
        .unwrap();
        let mut frames = Vec::new();
        let mut f = I420Frame::new(640, 360);
        for k in 0..4u32 {
            // Noise, so the IDR is many packets.
            let mut s = 7 + k;
            for p in f.y.iter_mut() {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                *p = (s >> 24) as u8;
            }
            let mut au = Vec::new();
            enc.encode(&f, &mut au).unwrap();
            frames.push(au);
        }
        frames
    }

    #[test]
    fn payloads_are_those_of_the_rtc_payloader() {
        let mut mine = H264Packetizer::default();
        let mut theirs = H264Payloader::default();
        let mut out = PacketizedFrame::default();
        let frames = encoded_frames();
        assert!(frames[0].len() > 5 * 1100, "an IDR of several packets");
        for au in &frames {
            for mtu in [1100, 300] {
                mine.packetize(au, mtu, &mut out);
                let expected = theirs.payload(mtu, &Bytes::copy_from_slice(au)).unwrap();
                let got: Vec<Bytes> = out.payloads().collect();
                assert_eq!(got, expected, "mtu {mtu}");
                assert!(got.iter().all(|p| p.len() <= mtu));
            }
        }
        // The IDR starts with the STAP-A carrying SPS and PPS, then FU-A fragments.
        mine.packetize(&frames[0], 1100, &mut out);
        assert_eq!(out.payload(0)[0] & 0x1f, STAP_A);
        assert_eq!(out.payload(1)[0] & 0x1f, FU_A);
        assert_eq!(out.payload(1)[1] & 0x80, 0x80, "start bit");
    }

    #[test]
    fn packets_depacketise_back_to_the_access_unit() {
        let mut p = H264Packetizer::default();
        let mut out = PacketizedFrame::default();
        let (mut back, mut frag) = (Vec::new(), Vec::new());
        for au in encoded_frames() {
            p.packetize(&au, 1100, &mut out);
            let payloads: Vec<Bytes> = out.payloads().collect();
            crate::codec::depack::h264(&payloads, &mut back, &mut frag, usize::MAX).unwrap();
            let strip = |x: &[u8]| -> Vec<Vec<u8>> { annexb_nals(x).map(<[u8]>::to_vec).collect() };
            assert_eq!(strip(&back), strip(&au));
        }
    }

    #[test]
    fn the_buffer_is_reused_once_the_views_are_dropped() {
        let mut p = H264Packetizer::default();
        let mut out = PacketizedFrame::default();
        let frames = encoded_frames();
        p.packetize(&frames[0], 1100, &mut out);
        let held = out.payload(1);
        // A view is still held: the next frame goes elsewhere and the view stays intact.
        let copy = held.to_vec();
        p.packetize(&frames[0], 1100, &mut out);
        assert_eq!(held, copy);
        drop(held);
        // Everything released: the same storage, frame after frame.
        p.packetize(&frames[0], 1100, &mut out);
        let storage = out.payload(0).as_ptr();
        for au in frames.iter().filter(|au| !au.is_empty()) {
            p.packetize(au, 1100, &mut out);
            assert_eq!(out.payload(0).as_ptr(), storage);
        }
    }

    #[test]
    fn a_shared_buffer_reuses_its_storage_once_released() {
        let mut b = SharedBuf::default();
        let first = b.share(&[1; 200]);
        let held = first.clone();
        drop(first);
        let second = b.share(&[2; 200]);
        assert_eq!(held, vec![1; 200], "a held frame is never overwritten");
        assert_ne!(second.as_ptr(), held.as_ptr());
        drop((held, second));
        let third = b.share(&[3; 180]);
        let at = third.as_ptr();
        drop(third);
        assert_eq!(b.share(&[4; 190]).as_ptr(), at, "released: same storage");
    }

    #[test]
    fn vp8_payloads_carry_each_viewers_own_picture_ids_and_depacketise_back() {
        let frame: Vec<u8> = (0..2500u32).map(|i| (i % 249) as u8).collect();
        let mut out = PacketizedFrame::default();
        Vp8Packetizer::default().packetize(&frame, 1100, &mut out);
        assert_eq!(out.format(), FrameFormat::Vp8);
        assert_eq!(out.len(), 3);
        let mut a = Vp8Descriptors::new(0x7ffe, 255);
        let mut b = Vp8Descriptors::new(100, 7);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let pa: Vec<Bytes> = a.payloads(&out).collect();
            let pb: Vec<Bytes> = b.payloads(&out).collect();
            assert!(pa.iter().all(|p| p.len() <= 1100));
            // Each viewer's frame depacketises to the same bytes (RFC 7741 reader).
            for p in [&pa, &pb] {
                let mut back = Vec::new();
                crate::codec::depack::vp8(p, &mut back, usize::MAX).unwrap();
                assert_eq!(back, frame);
                assert_eq!(p[0][0] & 0x10, 0x10, "S on the first packet only");
                assert!(p[1..].iter().all(|q| q[0] & 0x10 == 0));
            }
            let pid = |p: &Bytes| (u16::from(p[2] & 0x7f) << 8) | u16::from(p[3]);
            assert!(
                pa.iter().all(|p| pid(p) == pid(&pa[0])),
                "one PictureID per frame"
            );
            ids.push((pid(&pa[0]), pa[0][4], pid(&pb[0]), pb[0][4]));
        }
        // Per viewer, consecutive and wrapping (15 bits, 8 bits).
        assert_eq!(
            ids,
            [(0x7ffe, 255, 100, 7), (0x7fff, 0, 101, 8), (0, 1, 102, 9)]
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let mut p = H264Packetizer::default();
        let mut out = PacketizedFrame::default();
        for au in [
            &[][..],
            &[0, 0, 1][..],
            &[0, 0, 0, 1, 0x67][..],
            &[0x65, 1, 2, 3][..],
            &[0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x65, 9][..],
        ] {
            p.packetize(au, 1100, &mut out);
        }
        assert_eq!(out.len(), 1, "AUD dropped, the slice kept");
        p.packetize(&[0x65; 50], 2, &mut out);
        assert!(out.is_empty());
    }
}
