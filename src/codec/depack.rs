//! Bounded RTP depacketisers for H.264 (RFC 6184, packetization-mode 1), AV1 (the AV1
//! RTP payload format, §4), VP8 (RFC 7741) and VP9 (RFC 9628): one access unit's payloads
//! in, the elementary stream out (Annex B for H.264, low-overhead OBUs with size fields
//! for AV1, the frame(s) for VP8/VP9), appended to a reused buffer that never grows beyond
//! a limit.
//!
//! They replace the `rtc-rtp` depacketisers on the ingest path because those keep an
//! unbounded fragment across packets and frames (an AV1 fragment that never ends was
//! buffered without limit and re-copied on every packet), and the H.264 one indexes past
//! the end of a truncated STAP-A. Here every access unit starts from a clean state, work is
//! linear in its bytes, and any malformed input is an error, never a panic.

/// Why an access unit could not be reassembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DepackError {
    #[error("access unit larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed {codec} payload: {what}")]
    Malformed {
        codec: &'static str,
        what: &'static str,
    },
}

fn malformed(codec: &'static str, what: &'static str) -> DepackError {
    DepackError::Malformed { codec, what }
}

fn push(out: &mut Vec<u8>, bytes: &[u8], limit: usize) -> Result<(), DepackError> {
    if out.len() + bytes.len() > limit {
        return Err(DepackError::TooLarge { limit });
    }
    out.extend_from_slice(bytes);
    Ok(())
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// H.264: single NAL unit packets, STAP-A and FU-A. `out` is cleared first; `frag` is
/// scratch space reused across calls.
pub fn h264(
    payloads: &[bytes::Bytes],
    out: &mut Vec<u8>,
    frag: &mut Vec<u8>,
    limit: usize,
) -> Result<(), DepackError> {
    const C: &str = "H.264";
    out.clear();
    frag.clear();
    // Whether a fragmented NAL is being collected (an FU-A start was seen).
    let mut in_fu = false;
    for p in payloads {
        let Some(&b0) = p.first() else {
            return Err(malformed(C, "empty payload"));
        };
        if b0 & 0x80 != 0 {
            return Err(malformed(C, "forbidden_zero_bit set"));
        }
        match b0 & 0x1f {
            1..=23 => {
                if in_fu {
                    return Err(malformed(C, "FU-A interrupted"));
                }
                push(out, &START_CODE, limit)?;
                push(out, p, limit)?;
            }
            24 => {
                if in_fu {
                    return Err(malformed(C, "FU-A interrupted"));
                }
                let mut rest = &p[1..];
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err(malformed(C, "truncated STAP-A size"));
                    }
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    rest = &rest[2..];
                    if n == 0 || n > rest.len() {
                        return Err(malformed(C, "STAP-A unit size out of range"));
                    }
                    push(out, &START_CODE, limit)?;
                    push(out, &rest[..n], limit)?;
                    rest = &rest[n..];
                }
            }
            28 => {
                if p.len() < 3 {
                    return Err(malformed(C, "short FU-A"));
                }
                let (start, end) = (p[1] & 0x80 != 0, p[1] & 0x40 != 0);
                if start {
                    if in_fu {
                        return Err(malformed(C, "FU-A restarted before its end"));
                    }
                    in_fu = true;
                    frag.clear();
                    // Reconstructed NAL header: F and NRI from the indicator, type from the FU header.
                    frag.push((b0 & 0xe0) | (p[1] & 0x1f));
                } else if !in_fu {
                    return Err(malformed(C, "FU-A without its start"));
                }
                if out.len() + START_CODE.len() + frag.len() + p.len() - 2 > limit {
                    return Err(DepackError::TooLarge { limit });
                }
                frag.extend_from_slice(&p[2..]);
                if end {
                    push(out, &START_CODE, limit)?;
                    push(out, frag, limit)?;
                    frag.clear();
                    in_fu = false;
                }
            }
            _ => {
                return Err(malformed(
                    C,
                    "unsupported NAL/packet type (STAP-B, MTAP, FU-B)",
                ))
            }
        }
    }
    if in_fu {
        return Err(malformed(C, "FU-A not finished at the end of the frame"));
    }
    Ok(())
}

const OBU_HAS_SIZE: u8 = 0x02;
const OBU_HAS_EXTENSION: u8 = 0x04;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_TILE_LIST: u8 = 8;

/// Reads an unsigned LEB128 (at most 8 bytes, value within u32): (value, bytes used).
pub(crate) fn leb128(b: &[u8]) -> Option<(usize, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().take(8).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v <= u64::from(u32::MAX)).then_some((v as usize, i + 1));
        }
    }
    None
}

fn put_leb128(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends one complete OBU (as carried in RTP: normally without a size field) to `out`
/// with `obu_has_size_field` set. Temporal delimiters and tile lists are dropped.
fn emit_obu(obu: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DepackError> {
    const C: &str = "AV1";
    let Some(&header) = obu.first() else {
        return Ok(()); // empty element: nothing to emit
    };
    if header & 0x80 != 0 {
        return Err(malformed(C, "obu_forbidden_bit set"));
    }
    let kind = (header >> 3) & 0x0f;
    if kind == OBU_TEMPORAL_DELIMITER || kind == OBU_TILE_LIST {
        return Ok(());
    }
    let header_len = if header & OBU_HAS_EXTENSION != 0 {
        2
    } else {
        1
    };
    if obu.len() < header_len {
        return Err(malformed(C, "truncated OBU header"));
    }
    let mut body = &obu[header_len..];
    if header & OBU_HAS_SIZE != 0 {
        let (size, used) = leb128(body).ok_or_else(|| malformed(C, "bad obu_size"))?;
        body = &body[used..];
        if size > body.len() {
            return Err(malformed(C, "obu_size beyond the element"));
        }
        body = &body[..size];
    }
    // header (+ extension) + up to 5 size bytes + body
    if out.len() + header_len + 5 + body.len() > limit {
        return Err(DepackError::TooLarge { limit });
    }
    out.push(header | OBU_HAS_SIZE);
    if header_len == 2 {
        out.push(obu[1]);
    }
    put_leb128(out, body.len());
    out.extend_from_slice(body);
    Ok(())
}

/// AV1: aggregation header `|Z|Y|W W|N|-|-|-|`, OBU elements with LEB128 lengths (all but
/// the last when W > 0), OBUs fragmented across packets by Z/Y. `out` is cleared first;
/// `frag` is scratch space reused across calls. A fragment may not outlive its frame.
pub fn av1(
    payloads: &[bytes::Bytes],
    out: &mut Vec<u8>,
    frag: &mut Vec<u8>,
    limit: usize,
) -> Result<(), DepackError> {
    const C: &str = "AV1";
    out.clear();
    frag.clear();
    // The previous packet ended with a fragment (Y) that this packet must continue (Z).
    let mut open = false;
    for p in payloads {
        let Some(&agg) = p.first() else {
            return Err(malformed(C, "empty payload"));
        };
        let (z, y, w) = (
            agg & 0x80 != 0,
            agg & 0x40 != 0,
            usize::from((agg >> 4) & 3),
        );
        if z != open {
            return Err(malformed(
                C,
                if z {
                    "continuation without a fragment before it"
                } else {
                    "fragment not continued"
                },
            ));
        }
        let mut rest = &p[1..];
        let mut index = 0usize;
        while !rest.is_empty() {
            let element = if w != 0 && index + 1 == w {
                std::mem::take(&mut rest)
            } else {
                let (len, used) = leb128(rest).ok_or_else(|| malformed(C, "bad element length"))?;
                rest = &rest[used..];
                if len > rest.len() {
                    return Err(malformed(C, "element length beyond the packet"));
                }
                let (e, r) = rest.split_at(len);
                rest = r;
                e
            };
            let first = index == 0;
            let last = rest.is_empty();
            index += 1;
            if w != 0 && index > w {
                return Err(malformed(C, "more elements than W says"));
            }
            if first && z {
                if frag.len() + element.len() + out.len() > limit {
                    return Err(DepackError::TooLarge { limit });
                }
                frag.extend_from_slice(element);
            } else {
                frag.clear();
                if element.len() + out.len() > limit {
                    return Err(DepackError::TooLarge { limit });
                }
                frag.extend_from_slice(element);
            }
            if !(last && y) {
                emit_obu(frag, out, limit)?;
                frag.clear();
            }
        }
        if index == 0 && (z || y) {
            return Err(malformed(C, "Z/Y set on a packet without elements"));
        }
        open = y;
    }
    if open {
        return Err(malformed(
            C,
            "fragment not finished at the end of the frame",
        ));
    }
    Ok(())
}

/// The VP8 payload descriptor (RFC 7741 §4.2) at the start of `p`: (its length, S bit,
/// partition index). Every optional field is bounds-checked.
fn vp8_descriptor(p: &[u8]) -> Result<(usize, bool, u8), DepackError> {
    const C: &str = "VP8";
    let &b0 = p.first().ok_or_else(|| malformed(C, "empty payload"))?;
    let (start, pid) = (b0 & 0x10 != 0, b0 & 0x07);
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let &x = p
            .get(at)
            .ok_or_else(|| malformed(C, "truncated descriptor"))?;
        at += 1;
        if x & 0x80 != 0 {
            let &m = p
                .get(at)
                .ok_or_else(|| malformed(C, "truncated PictureID"))?;
            at += if m & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    if at > p.len() {
        return Err(malformed(C, "truncated descriptor"));
    }
    Ok((at, start, pid))
}

/// VP8 (RFC 7741): strips each packet's payload descriptor; the frame must start with
/// S=1 of partition 0. `out` is cleared first; the frame is the concatenation.
pub fn vp8(payloads: &[bytes::Bytes], out: &mut Vec<u8>, limit: usize) -> Result<(), DepackError> {
    const C: &str = "VP8";
    out.clear();
    for (i, p) in payloads.iter().enumerate() {
        let (at, start, pid) = vp8_descriptor(p)?;
        if i == 0 && !(start && pid == 0) {
            return Err(malformed(C, "frame does not start a partition 0"));
        }
        push(out, &p[at..], limit)?;
    }
    Ok(())
}

/// Byte ranges of the frames (spatial layers) of one VP9 picture in the depacketised
/// buffer: each is decoded in turn.
pub type Vp9Frames = Vec<std::ops::Range<usize>>;

/// VP9 (RFC 9628): strips each packet's payload descriptor (picture ID, layer indices,
/// reference diffs, scalability structure — all bounds-checked) and joins the packets of
/// each frame from its B (beginning) to its E (end) bit. `out` is cleared first; `frames`
/// receives each frame's range.
pub fn vp9(
    payloads: &[bytes::Bytes],
    out: &mut Vec<u8>,
    frames: &mut Vp9Frames,
    limit: usize,
) -> Result<(), DepackError> {
    const C: &str = "VP9";
    out.clear();
    frames.clear();
    let mut open: Option<usize> = None;
    for p in payloads {
        let &b0 = p.first().ok_or_else(|| malformed(C, "empty payload"))?;
        let (i, pf, l, f, b, e, v) = (
            b0 & 0x80 != 0,
            b0 & 0x40 != 0,
            b0 & 0x20 != 0,
            b0 & 0x10 != 0,
            b0 & 0x08 != 0,
            b0 & 0x04 != 0,
            b0 & 0x02 != 0,
        );
        let mut at = 1;
        let byte = |at: usize| -> Result<u8, DepackError> {
            p.get(at)
                .copied()
                .ok_or_else(|| malformed(C, "truncated descriptor"))
        };
        if i {
            at += if byte(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if l {
            at += 1;
            if !f {
                at += 1; // TL0PICIDX
            }
        }
        if pf && f {
            // Up to three reference diffs, each with a "next" bit.
            let mut n = 0;
            loop {
                let d = byte(at)?;
                at += 1;
                n += 1;
                if d & 1 == 0 {
                    break;
                }
                if n == 3 {
                    return Err(malformed(C, "more than 3 reference diffs"));
                }
            }
        }
        if v {
            let ss = byte(at)?;
            at += 1;
            let n_s = usize::from(ss >> 5) + 1;
            if ss & 0x10 != 0 {
                at += 4 * n_s; // widths and heights
            }
            if ss & 0x08 != 0 {
                let n_g = usize::from(byte(at)?);
                at += 1;
                for _ in 0..n_g {
                    let r = usize::from((byte(at)? >> 2) & 3);
                    at += 1 + r;
                }
            }
        }
        if at > p.len() {
            return Err(malformed(C, "truncated descriptor"));
        }
        if b {
            if open.is_some() {
                return Err(malformed(C, "frame begins before the last one ended"));
            }
            open = Some(out.len());
        }
        let Some(start) = open else {
            return Err(malformed(C, "packet outside a frame"));
        };
        push(out, &p[at..], limit)?;
        if e {
            if frames.len() >= 8 {
                return Err(malformed(C, "more than 8 frames in a picture"));
            }
            frames.push(start..out.len());
            open = None;
        }
    }
    if open.is_some() {
        return Err(malformed(C, "frame not finished at the end of the picture"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::codec::av1::Av1Payloader;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::Payloader;

    const LIMIT: usize = 1 << 20;

    fn nal(kind: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0x60 | kind];
        v.extend((0..len).map(|i| (i % 251) as u8 | 1));
        v
    }

    fn annexb(nals: &[Vec<u8>]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| START_CODE.iter().chain(n).copied())
            .collect()
    }

    #[test]
    fn h264_round_trips_single_stap_and_fua() {
        // SPS + PPS (aggregated into STAP-A by the payloader) and an IDR split into FU-As.
        let nals = vec![nal(7, 12), nal(8, 4), nal(5, 5000)];
        let au = annexb(&nals);
        let pkts = H264Payloader::default()
            .payload(1200, &Bytes::from(au))
            .unwrap();
        assert!(pkts.len() > 4);
        let (mut out, mut frag) = (Vec::new(), Vec::new());
        h264(&pkts, &mut out, &mut frag, LIMIT).unwrap();
        assert_eq!(out, annexb(&nals));
    }

    #[test]
    fn h264_refuses_truncated_stap_a_and_orphan_fragments() {
        let (mut out, mut frag) = (Vec::new(), Vec::new());
        for bad in [
            vec![24u8, 0, 0, 5],     // rtc-rtp 0.21 indexes past the end here
            vec![24, 0, 9, 1, 2],    // size beyond the packet
            vec![24, 0],             // half a size
            vec![28, 0x05, 1, 2, 3], // FU-A middle without a start
            vec![0x9c, 0x85, 1],     // forbidden bit
            vec![25, 1, 2],          // STAP-B
        ] {
            let r = h264(&[Bytes::from(bad.clone())], &mut out, &mut frag, LIMIT);
            assert!(
                matches!(r, Err(DepackError::Malformed { .. })),
                "{bad:?}: {r:?}"
            );
        }
        // An FU-A that starts and never ends.
        let r = h264(
            &[Bytes::from_static(&[28, 0x85, 1, 2])],
            &mut out,
            &mut frag,
            LIMIT,
        );
        assert!(matches!(r, Err(DepackError::Malformed { .. })));
    }

    #[test]
    fn h264_stops_at_the_limit() {
        let au = annexb(&[nal(5, 50_000)]);
        let pkts = H264Payloader::default()
            .payload(1200, &Bytes::from(au))
            .unwrap();
        let (mut out, mut frag) = (Vec::new(), Vec::new());
        assert_eq!(
            h264(&pkts, &mut out, &mut frag, 10_000),
            Err(DepackError::TooLarge { limit: 10_000 })
        );
        assert!(out.capacity() <= 20_000 && frag.capacity() <= 20_000);
    }

    /// A sequence header and a frame OBU (with size fields, as an encoder writes them).
    fn av1_tu(frame_len: usize) -> Vec<u8> {
        let mut tu = vec![0x12, 0x00]; // temporal delimiter
        tu.extend([
            0x0a, 0x0a, 0, 0, 0, 0x24, 0xc4, 0xff, 0xdf, 0x00, 0x68, 0x02,
        ]); // sequence header
        tu.push(0x32); // OBU_FRAME with size
        put_leb128(&mut tu, frame_len);
        tu.extend((0..frame_len).map(|i| (i % 253) as u8));
        tu
    }

    #[test]
    fn av1_round_trips_through_the_library_payloader() {
        for len in [10, 1500, 40_000] {
            let tu = av1_tu(len);
            let pkts = Av1Payloader::default()
                .payload(1100, &Bytes::from(tu.clone()))
                .unwrap();
            let (mut out, mut frag) = (Vec::new(), Vec::new());
            av1(&pkts, &mut out, &mut frag, LIMIT).unwrap();
            assert_eq!(
                out,
                tu[2..],
                "temporal delimiter dropped, the rest byte-exact ({len})"
            );
        }
    }

    #[test]
    fn av1_fragment_that_never_ends_is_bounded_and_refused() {
        // Every packet continues the previous one and promises more (Z=1, Y=1, W=1).
        let mut pkts = vec![Bytes::from([&[0x50u8][..], &[0x32; 1100]].concat())];
        pkts.extend((0..2000).map(|_| Bytes::from([&[0xd0u8][..], &[7; 1100]].concat())));
        let (mut out, mut frag) = (Vec::new(), Vec::new());
        assert_eq!(
            av1(&pkts, &mut out, &mut frag, 100_000),
            Err(DepackError::TooLarge { limit: 100_000 })
        );
        assert!(frag.capacity() < 250_000, "grew to {}", frag.capacity());
        // Under the limit it is still refused at the end of the frame.
        let r = av1(&pkts[..10], &mut out, &mut frag, LIMIT);
        assert!(matches!(r, Err(DepackError::Malformed { .. })), "{r:?}");
    }

    #[test]
    fn av1_refuses_malformed_packets() {
        let (mut out, mut frag) = (Vec::new(), Vec::new());
        for bad in [
            vec![0x80u8, 0x02, 0x30, 0x00], // Z without a fragment before
            vec![0x00, 0x05, 0x30],         // element length beyond the packet
            vec![0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // endless LEB128
            vec![0x10, 0xb0, 0x00],         // forbidden bit in the OBU header
            vec![0x10, 0x32, 0x09, 1],      // obu_size beyond the element
            vec![0x40],                     // Y on a packet without elements
        ] {
            let r = av1(&[Bytes::from(bad.clone())], &mut out, &mut frag, LIMIT);
            assert!(
                matches!(r, Err(DepackError::Malformed { .. })),
                "{bad:?}: {r:?}"
            );
        }
    }

    #[test]
    fn vp8_round_trips_through_the_library_payloader() {
        use rtc::rtp::codec::vp8::Vp8Payloader;
        let frame: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        for pid in [false, true] {
            let mut pay = Vp8Payloader::default();
            pay.enable_picture_id = pid;
            let payloads = pay.payload(1100, &Bytes::from(frame.clone())).unwrap();
            assert!(payloads.len() >= 5);
            let mut out = Vec::new();
            vp8(&payloads, &mut out, LIMIT).unwrap();
            assert_eq!(out, frame);
            assert!(matches!(
                vp8(&payloads, &mut out, 1000),
                Err(DepackError::TooLarge { .. })
            ));
            // A frame whose first packet is not a partition start is refused.
            assert!(vp8(&payloads[1..], &mut out, LIMIT).is_err());
        }
        // Truncated descriptors.
        for bad in [
            &[0x90][..],
            &[0x90, 0x80][..],
            &[0x90, 0x80, 0x80][..],
            &[][..],
        ] {
            assert!(vp8(&[Bytes::copy_from_slice(bad)], &mut Vec::new(), LIMIT).is_err());
        }
    }

    #[test]
    fn vp9_round_trips_through_the_library_payloader() {
        use rtc::rtp::codec::vp9::Vp9Payloader;
        let frame: Vec<u8> = (0..4000u32).map(|i| (i % 241) as u8).collect();
        let mut pay = Vp9Payloader::default();
        let payloads = pay.payload(1100, &Bytes::from(frame.clone())).unwrap();
        assert!(payloads.len() >= 4);
        let (mut out, mut frames) = (Vec::new(), Vec::new());
        vp9(&payloads, &mut out, &mut frames, LIMIT).unwrap();
        assert_eq!(out, frame);
        assert_eq!(frames, vec![0..frame.len()]);
        // Without its end, or without its beginning, the picture is refused.
        assert!(vp9(
            &payloads[..payloads.len() - 1],
            &mut out,
            &mut frames,
            LIMIT
        )
        .is_err());
        assert!(vp9(&payloads[1..], &mut out, &mut frames, LIMIT).is_err());
        assert!(matches!(
            vp9(&payloads, &mut out, &mut frames, 1000),
            Err(DepackError::TooLarge { .. })
        ));
        // Flexible mode with four reference diffs, and a truncated scalability structure.
        for bad in [
            &[0xd8 | 0x04, 0x81, 0x01, 0x03, 0x05, 0x07, 0x09, 0xaa][..],
            &[0x0e, 0xf8][..],
        ] {
            let p = [Bytes::copy_from_slice(bad)];
            assert!(vp9(&p, &mut out, &mut frames, LIMIT).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut out, mut frag) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let n = (next() % 4) as usize + 1;
            let pkts: Vec<Bytes> = (0..n)
                .map(|_| {
                    let len = (next() % 40) as usize;
                    Bytes::from((0..len).map(|_| next() as u8).collect::<Vec<_>>())
                })
                .collect();
            let _ = h264(&pkts, &mut out, &mut frag, 4096);
            let _ = av1(&pkts, &mut out, &mut frag, 4096);
            assert!(out.len() <= 4096 && frag.len() <= 4096);
            let _ = vp8(&pkts, &mut out, 4096);
            assert!(out.len() <= 4096);
            let mut frames = Vec::new();
            let _ = vp9(&pkts, &mut out, &mut frames, 4096);
            assert!(out.len() <= 4096 && frag.len() <= 4096);
        }
    }
}
