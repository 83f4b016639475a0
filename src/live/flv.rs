//! FLV tag bodies for RTMP (the payloads of RTMP audio and video messages, as in the FLV
//! specification v10.1, E.4.2/E.4.3): H.264 as AVC packets (a sequence header with the
//! `AVCDecoderConfigurationRecord`, then length-prefixed NAL units) and AAC (a sequence
//! header with the `AudioSpecificConfig`, then raw frames). Pure.

/// `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15) for one SPS and one PPS.
pub fn avc_config(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(11 + sps.len() + pps.len());
    v.push(1);
    v.extend_from_slice(sps.get(1..4).unwrap_or(&[66, 0, 31]));
    v.push(0xFF); // 4-byte NAL lengths
    v.push(0xE1); // one SPS
    v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    v.extend_from_slice(sps);
    v.push(1); // one PPS
    v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    v.extend_from_slice(pps);
    v
}

/// A video tag body: AVC sequence header (`config`: [`avc_config`]).
pub fn video_sequence_header(config: &[u8]) -> Vec<u8> {
    let mut v = vec![0x17, 0x00, 0, 0, 0];
    v.extend_from_slice(config);
    v
}

/// A video tag body: one access unit of 4-byte length-prefixed NAL units.
pub fn video_frame(nalus: &[u8], keyframe: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + nalus.len());
    v.push(if keyframe { 0x17 } else { 0x27 });
    v.extend_from_slice(&[0x01, 0, 0, 0]); // NALU, composition time 0 (no B-frames)
    v.extend_from_slice(nalus);
    v
}

/// AAC, 44 kHz flag (FLV's AAC is always marked so), 16-bit, stereo flag (ditto).
const AAC_HEADER: u8 = 0xAF;

/// An audio tag body: AAC sequence header (`asc`: the `AudioSpecificConfig`).
pub fn audio_sequence_header(asc: &[u8]) -> Vec<u8> {
    let mut v = vec![AAC_HEADER, 0x00];
    v.extend_from_slice(asc);
    v
}

/// An audio tag body: one raw AAC frame.
pub fn audio_frame(raw: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + raw.len());
    v.extend_from_slice(&[AAC_HEADER, 0x01]);
    v.extend_from_slice(raw);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_the_flv_headers() {
        let sps = [0x67, 0x42, 0xC0, 0x1F, 0xAA];
        let pps = [0x68, 0xCE];
        let c = avc_config(&sps, &pps);
        assert_eq!(&c[..6], &[1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1]);
        assert_eq!(&c[6..8], &[0, 5]);
        assert_eq!(&c[8..13], &sps);
        assert_eq!(&c[13..], &[1, 0, 2, 0x68, 0xCE]);
        assert_eq!(&video_sequence_header(&c)[..5], &[0x17, 0, 0, 0, 0]);
        assert_eq!(
            &video_frame(&[0, 0, 0, 1, 0x65], true)[..5],
            &[0x17, 1, 0, 0, 0]
        );
        assert_eq!(video_frame(&[0, 0, 0, 1, 0x41], false)[0], 0x27);
        assert_eq!(
            audio_sequence_header(&[0x11, 0x88]),
            vec![0xAF, 0, 0x11, 0x88]
        );
        assert_eq!(audio_frame(&[9]), vec![0xAF, 1, 9]);
    }
}
