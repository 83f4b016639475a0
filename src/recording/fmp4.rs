//! A fragmented-MP4 (ISO BMFF) writer for one H.264 video track and one Opus audio track,
//! built on `mp4-atom`'s box types. Pure: samples and their timestamps in, bytes out.
//!
//! Layout: `ftyp` + `moov` (written once the first IDR brings SPS/PPS), then one
//! `moof`+`mdat` pair per fragment. A fragment is cut at the first video keyframe at least
//! `target` after the previous cut (the recording encoder sends an IDR every second), or
//! at `max` regardless, so fragments stay ≤ 2 s. Each fragment is returned as one buffer
//! the caller writes with a single `write` — after a crash the file ends on a fragment
//! boundary and plays up to it.

use mp4_atom::Mehd;
use mp4_atom::{
    Audio, Avc1, Avcc, Dinf, Dops, Dref, Encode, FourCC, Ftyp, Hdlr, Mdat, Mdhd, Mdia, Mfhd, Minf,
    Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf,
    Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

pub const VIDEO_TIMESCALE: u32 = 90_000;
pub const AUDIO_TIMESCALE: u32 = 48_000;
const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;
/// Sample flags: a sync sample, and a non-sync sample that depends on others.
const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("mp4 encoding: {0}")]
    Encode(String),
    #[error("the first video frame is not an IDR with SPS and PPS")]
    NoParameterSets,
}

struct Sample {
    /// Decode time in the track's timescale.
    time: u64,
    data: Vec<u8>,
    key: bool,
}

/// Converts an Annex B access unit to length-prefixed NAL units, dropping SPS/PPS/AUD
/// (parameter sets live in `avcC`). Returns (sample, sps, pps, is_idr).
pub fn annexb_to_sample(au: &[u8]) -> (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>, bool) {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(au.len() + 16);
    let (mut sps, mut pps, mut idr) = (None, None, false);
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(au.len(), |n| n - 3);
        // Trim the zero byte of a following 4-byte start code and trailing zeros.
        while e > s && au[e - 1] == 0 {
            e -= 1;
        }
        let nal = &au[s..e];
        let Some(&h) = nal.first() else { continue };
        match h & 0x1f {
            7 => sps = Some(nal.to_vec()),
            8 => pps = Some(nal.to_vec()),
            9 => {}
            t => {
                idr |= t == 5;
                out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                out.extend_from_slice(nal);
            }
        }
    }
    (out, sps, pps, idr)
}

pub struct Fmp4Writer {
    width: u16,
    height: u16,
    opus_pre_skip: u16,
    /// Cut a fragment at the first keyframe this long (video ticks) after the last cut…
    target: u64,
    /// …or at this long regardless.
    max: u64,
    initialized: bool,
    sequence: u32,
    video: Vec<Sample>,
    audio: Vec<Sample>,
    /// Decode time (90 kHz) where the current fragment starts.
    fragment_start: u64,
    /// Last emitted sample durations, reused for the final sample of each track.
    last_video_duration: u32,
    /// Total media duration written (90 kHz), for reporting.
    pub written_until: u64,
    /// Where the init segment's duration fields are (offset, width in bytes, timescale):
    /// patched when the recording ends so players know the length up front (they stay 0
    /// after a crash; players then scan the fragments).
    duration_fields: Vec<(u64, usize, u32)>,
    /// Bytes handed out so far (= file offset of the next box).
    emitted: u64,
    /// (first video decode time, moof offset) per fragment, for the closing `mfra` index.
    index: Vec<(u64, u64)>,
}

impl Fmp4Writer {
    pub fn new(width: u32, height: u32, opus_pre_skip: u16) -> Self {
        Self {
            width: width as u16,
            height: height as u16,
            opus_pre_skip,
            target: VIDEO_TIMESCALE as u64,
            max: 2 * VIDEO_TIMESCALE as u64 - 3000,
            initialized: false,
            sequence: 0,
            video: Vec::new(),
            audio: Vec::new(),
            fragment_start: 0,
            last_video_duration: 3000,
            written_until: 0,
            duration_fields: Vec::new(),
            emitted: 0,
            index: Vec::new(),
        }
    }

    /// Cuts fragments at the first keyframe `target` (90 kHz) after the last cut, or at
    /// `max` regardless (HLS segments: 2 s).
    pub fn with_fragments(mut self, target: u64, max: u64) -> Self {
        self.target = target;
        self.max = max.max(target);
        self
    }

    /// Where the fragment being collected starts (90 kHz): after a cut, where it was cut.
    pub fn fragment_start(&self) -> u64 {
        self.fragment_start
    }

    /// Whether the init segment (`ftyp` + `moov`) has been written.
    pub fn initialized(&self) -> bool {
        self.initialized
    }

    fn init_segment(&self, sps: Vec<u8>, pps: Vec<u8>) -> Result<Vec<u8>, Fmp4Error> {
        let e = |x: mp4_atom::Error| Fmp4Error::Encode(x.to_string());
        let mut buf = Vec::new();
        Ftyp {
            major_brand: b"iso6".into(),
            minor_version: 0,
            compatible_brands: vec![
                b"iso6".into(),
                b"iso5".into(),
                b"mp41".into(),
                b"avc1".into(),
            ],
        }
        .encode(&mut buf)
        .map_err(e)?;
        let (profile, compat, level) = (
            sps.get(1).copied().unwrap_or(66),
            sps.get(2).copied().unwrap_or(0),
            sps.get(3).copied().unwrap_or(31),
        );
        let avc1 = Avc1 {
            visual: Visual {
                data_reference_index: 1,
                width: self.width,
                height: self.height,
                horizresolution: 72.into(),
                vertresolution: 72.into(),
                frame_count: 1,
                compressor: "Tessera H.264".into(),
                depth: 24,
            },
            avcc: Avcc {
                configuration_version: 1,
                avc_profile_indication: profile,
                profile_compatibility: compat,
                avc_level_indication: level,
                length_size: 4,
                sequence_parameter_sets: vec![sps],
                picture_parameter_sets: vec![pps],
                ext: None,
            },
            ..Default::default()
        };
        let opus = Opus {
            audio: Audio {
                data_reference_index: 1,
                channel_count: 1,
                sample_size: 16,
                sample_rate: 48000.into(),
            },
            dops: Dops {
                output_channel_count: 1,
                pre_skip: self.opus_pre_skip,
                input_sample_rate: 48_000,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        };
        let video = fragmented_track(
            Tkhd {
                track_id: VIDEO_TRACK,
                enabled: true,
                in_movie: true,
                width: self.width.into(),
                height: self.height.into(),
                ..Default::default()
            },
            VIDEO_TIMESCALE,
            b"vide",
            "Tessera composite",
            avc1.into(),
        );
        let audio = fragmented_track(
            Tkhd {
                track_id: AUDIO_TRACK,
                enabled: true,
                in_movie: true,
                volume: 1.into(),
                alternate_group: 1,
                ..Default::default()
            },
            AUDIO_TIMESCALE,
            b"soun",
            "Tessera mix",
            opus.into(),
        );
        let trex = |track_id| Trex {
            track_id,
            default_sample_description_index: 1,
            ..Default::default()
        };
        Moov {
            mvhd: Mvhd {
                timescale: 1000,
                rate: 1.into(),
                volume: 1.into(),
                next_track_id: 3,
                ..Default::default()
            },
            mvex: Some(Mvex {
                mehd: Some(Mehd {
                    fragment_duration: 0,
                }),
                trex: vec![trex(VIDEO_TRACK), trex(AUDIO_TRACK)],
            }),
            trak: vec![video, audio],
            ..Default::default()
        }
        .encode(&mut buf)
        .map_err(e)?;
        Ok(buf)
    }

    /// The final duration, as (file offset, big-endian bytes) writes into `mvhd`,
    /// `tkhd`, `mdhd` and `mehd`. The init segment starts the file, so its offsets are
    /// file offsets.
    pub fn duration_patches(&self) -> Vec<(u64, Vec<u8>)> {
        self.duration_fields
            .iter()
            .map(|&(offset, width, timescale)| {
                let d = self.written_until * timescale as u64 / VIDEO_TIMESCALE as u64;
                let bytes = if width == 8 {
                    d.to_be_bytes().to_vec()
                } else {
                    (d.min(u32::MAX as u64) as u32).to_be_bytes().to_vec()
                };
                (offset, bytes)
            })
            .collect()
    }

    /// Finds the duration fields in an encoded init segment.
    fn find_duration_fields(init: &[u8]) -> Vec<(u64, usize, u32)> {
        let mut out = Vec::new();
        // (box type, offset of the duration after the type for v0 / v1, timescale source)
        for (kind, v0, v1) in [
            (b"mvhd", 20, 28),
            (b"tkhd", 24, 32),
            (b"mdhd", 20, 28),
            (b"mehd", 8, 8),
        ] {
            let mut from = 0;
            while let Some(p) = init[from..]
                .windows(4)
                .position(|w| w == kind)
                .map(|p| p + from)
            {
                from = p + 4;
                let Some(&version) = init.get(p + 4) else {
                    break;
                };
                let (off, width) = if version == 1 {
                    (p + v1, 8)
                } else {
                    (p + v0, 4)
                };
                if kind == b"mdhd" {
                    // timescale sits just before the duration
                    let ts = init
                        .get(off - 4..off)
                        .map_or(1000, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    out.push((off as u64, width, ts));
                } else {
                    out.push((off as u64, width, 1000)); // movie timescale (mvhd: 1000)
                }
            }
        }
        out
    }

    /// Adds a video access unit (Annex B) at decode time `time` (90 kHz). Returns bytes to
    /// append to the file (init segment and/or a finished fragment), possibly empty.
    pub fn push_video(&mut self, time: u64, annexb: &[u8]) -> Result<Vec<u8>, Fmp4Error> {
        let (data, sps, pps, key) = annexb_to_sample(annexb);
        let mut out = Vec::new();
        if !self.initialized {
            let (Some(sps), Some(pps), true) = (sps, pps, key) else {
                return Ok(out); // wait for the first IDR
            };
            out = self.init_segment(sps, pps)?;
            self.duration_fields = Self::find_duration_fields(&out);
            self.emitted += out.len() as u64;
            self.initialized = true;
            self.fragment_start = time;
            // Audio that arrived before the first picture is kept; it starts the timeline.
        }
        if data.is_empty() {
            return Ok(out);
        }
        let span = time.saturating_sub(self.fragment_start);
        if !self.video.is_empty() && ((key && span >= self.target) || span >= self.max) {
            out.extend(self.fragment(time)?);
        }
        self.video.push(Sample { time, data, key });
        Ok(out)
    }

    /// Adds an Opus packet at presentation time `time` (48 kHz).
    pub fn push_audio(&mut self, time: u64, packet: &[u8]) {
        if !packet.is_empty() {
            self.audio.push(Sample {
                time,
                data: packet.to_vec(),
                key: true,
            });
        }
    }

    /// Audio-only recordings: cut by time when there is no video at all.
    pub fn maybe_cut_audio_only(&mut self, now_audio: u64) -> Result<Vec<u8>, Fmp4Error> {
        if self.video.is_empty()
            && self.initialized
            && now_audio * 15 / 8 >= self.fragment_start + self.target
        {
            return self.fragment(now_audio * 15 / 8);
        }
        Ok(Vec::new())
    }

    /// Emits everything before `until` (90 kHz) as one fragment.
    fn fragment(&mut self, until: u64) -> Result<Vec<u8>, Fmp4Error> {
        let e = |x: mp4_atom::Error| Fmp4Error::Encode(x.to_string());
        let video: Vec<Sample> = std::mem::take(&mut self.video);
        let until_audio = until * AUDIO_TIMESCALE as u64 / VIDEO_TIMESCALE as u64;
        let split = self
            .audio
            .iter()
            .position(|s| s.time >= until_audio)
            .unwrap_or(self.audio.len());
        let audio: Vec<Sample> = self.audio.drain(..split).collect();
        if video.is_empty() && audio.is_empty() {
            return Ok(Vec::new());
        }
        self.sequence += 1;
        let mut entries_v = Vec::with_capacity(video.len());
        for (i, s) in video.iter().enumerate() {
            let next = video.get(i + 1).map_or(until, |n| n.time);
            let d = next.saturating_sub(s.time).clamp(1, VIDEO_TIMESCALE as u64) as u32;
            self.last_video_duration = d;
            entries_v.push(TrunEntry {
                duration: Some(d),
                size: Some(s.data.len() as u32),
                flags: Some(if s.key { SYNC } else { NON_SYNC }),
                cts: None,
            });
        }
        let mut entries_a = Vec::with_capacity(audio.len());
        for (i, s) in audio.iter().enumerate() {
            let next = audio.get(i + 1).map_or(s.time + 960, |n| n.time);
            entries_a.push(TrunEntry {
                duration: Some(next.saturating_sub(s.time).clamp(1, 48_000) as u32),
                size: Some(s.data.len() as u32),
                flags: None,
                cts: None,
            });
        }
        let traf = |track_id, base: u64, entries: Vec<TrunEntry>| Traf {
            tfhd: Tfhd {
                track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: base,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(entries),
            }],
            ..Default::default()
        };
        let mut trafs = Vec::new();
        if let Some(first) = video.first() {
            trafs.push(traf(VIDEO_TRACK, first.time, entries_v));
        }
        if let Some(first) = audio.first() {
            trafs.push(traf(AUDIO_TRACK, first.time, entries_a));
        }
        let mut moof = Moof {
            mfhd: Mfhd {
                sequence_number: self.sequence,
            },
            traf: trafs,
        };
        // Data offsets are relative to the moof start: moof size + mdat header (8).
        let mut probe = Vec::new();
        moof.encode(&mut probe).map_err(e)?;
        let moof_len = probe.len() as i32;
        let video_bytes: usize = video.iter().map(|s| s.data.len()).sum();
        let mut offset = moof_len + 8;
        for t in &mut moof.traf {
            t.trun[0].data_offset = Some(offset);
            if t.tfhd.track_id == VIDEO_TRACK {
                offset += video_bytes as i32;
            }
        }
        let mut data =
            Vec::with_capacity(video_bytes + audio.iter().map(|s| s.data.len()).sum::<usize>());
        for s in video.iter().chain(audio.iter()) {
            data.extend_from_slice(&s.data);
        }
        let mut out = Vec::with_capacity(data.len() + probe.len() + 16);
        moof.encode(&mut out).map_err(e)?;
        debug_assert_eq!(out.len() as i32, moof_len);
        Mdat { data }.encode(&mut out).map_err(e)?;
        if let Some(first) = video.first() {
            self.index.push((first.time, self.emitted));
        }
        self.emitted += out.len() as u64;
        self.fragment_start = until;
        self.written_until = self.written_until.max(until);
        Ok(out)
    }

    /// Emits the remaining samples (the last video frame gets the previous frame's
    /// duration) as a final fragment.
    pub fn finish(&mut self) -> Result<Vec<u8>, Fmp4Error> {
        let end_video = self
            .video
            .last()
            .map_or(0, |s| s.time + self.last_video_duration as u64);
        let end_audio = self.audio.last().map_or(0, |s| {
            (s.time + 960) * VIDEO_TIMESCALE as u64 / AUDIO_TIMESCALE as u64
        });
        if !self.initialized {
            return Ok(Vec::new());
        }
        let mut out = self.fragment(end_video.max(end_audio) + 1)?;
        out.extend(self.random_access_index()?);
        Ok(out)
    }

    /// `mfra`: where each fragment starts, so players know the length and can seek
    /// without reading every fragment (written only when the recording ends cleanly).
    fn random_access_index(&self) -> Result<Vec<u8>, Fmp4Error> {
        use mp4_atom::{FragmentInfo, Mfra, Mfro, Tfra};
        let e = |x: mp4_atom::Error| Fmp4Error::Encode(x.to_string());
        let entries = self
            .index
            .iter()
            .map(|&(time, moof_offset)| FragmentInfo {
                time,
                moof_offset,
                traf_number: 1,
                trun_number: 1,
                sample_delta: 1,
            })
            .collect();
        let mut mfra = Mfra {
            tfra: vec![Tfra {
                track_id: VIDEO_TRACK,
                entries,
            }],
            mfro: Mfro { parent_size: 0 },
        };
        let mut buf = Vec::new();
        mfra.encode(&mut buf).map_err(e)?;
        mfra.mfro.parent_size = buf.len() as u32;
        buf.clear();
        mfra.encode(&mut buf).map_err(e)?;
        Ok(buf)
    }
}

/// A track whose samples all come in fragments: just its header and sample entry.
fn fragmented_track(
    tkhd: Tkhd,
    timescale: u32,
    handler: &[u8; 4],
    name: &str,
    codec: mp4_atom::Codec,
) -> Trak {
    let video = handler == b"vide";
    Trak {
        tkhd,
        mdia: Mdia {
            mdhd: Mdhd {
                timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: handler.into(),
                name: name.into(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![Url::default().into()],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![codec],
                    },
                    stts: Stts::default(),
                    stsc: Stsc::default(),
                    stsz: Stsz::default(),
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// Reads back the sizes of top-level boxes (for tests and crash checks).
pub fn top_level_boxes(data: &[u8]) -> Vec<(FourCC, usize)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 8 <= data.len() {
        let size = u32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
        let kind = FourCC::new(&[data[p + 4], data[p + 5], data[p + 6], data[p + 7]]);
        if size < 8 || p + size > data.len() {
            break;
        }
        out.push((kind, size));
        p += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::video::{EncoderSettings, H264Encoder};
    use crate::media::I420Frame;

    #[test]
    fn annexb_conversion_extracts_parameter_sets() {
        let mut enc = H264Encoder::new(EncoderSettings {
            width: 64,
            height: 64,
            fps: 30,
            bitrate_bps: 100_000,
            idr_interval_frames: 30,
            complexity: Default::default(),
            analysis: Default::default(),
        })
        .unwrap();
        let mut au = Vec::new();
        enc.encode(&I420Frame::solid(64, 64, (100, 128, 128)), &mut au)
            .unwrap();
        let (sample, sps, pps, idr) = annexb_to_sample(&au);
        assert!(idr && sps.is_some() && pps.is_some());
        // Walk the length prefixes: they cover the sample exactly.
        let mut p = 0;
        while p < sample.len() {
            let n = u32::from_be_bytes(sample[p..p + 4].try_into().unwrap()) as usize;
            assert!(n > 0);
            p += 4 + n;
        }
        assert_eq!(p, sample.len());
    }

    #[test]
    fn fragments_are_cut_at_keyframes_and_stay_under_two_seconds() {
        let mut enc = H264Encoder::new(EncoderSettings {
            width: 64,
            height: 64,
            fps: 30,
            bitrate_bps: 100_000,
            idr_interval_frames: 30,
            complexity: Default::default(),
            analysis: Default::default(),
        })
        .unwrap();
        let mut w = Fmp4Writer::new(64, 64, 312);
        let mut file = Vec::new();
        let mut au = Vec::new();
        for k in 0..100u64 {
            let f = I420Frame::solid(64, 64, ((k * 2) as u8 + 20, 128, 128));
            enc.encode(&f, &mut au).unwrap();
            file.extend(w.push_video(k * 3000, &au).unwrap());
            for a in 0..3 {
                // 1.5 audio packets per frame on average; keep it simple.
                if (k * 3 + a) % 2 == 0 {
                    w.push_audio((k * 3 + a) / 2 * 960, &[0xfc, 0xff, 0xfe]);
                }
            }
        }
        file.extend(w.finish().unwrap());
        let boxes = top_level_boxes(&file);
        let kinds: Vec<String> = boxes.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(&kinds[..2], ["ftyp", "moov"]);
        let moofs = kinds.iter().filter(|k| *k == "moof").count();
        assert_eq!(moofs, kinds.iter().filter(|k| *k == "mdat").count());
        // 100 frames with an IDR every 30: cuts at 30, 60, 90 + the final fragment.
        assert_eq!(moofs, 4, "{kinds:?}");
        assert_eq!(
            boxes.iter().map(|(_, s)| s).sum::<usize>(),
            file.len(),
            "boxes tile the file"
        );
        // The final duration is patched into the init segment and reads back.
        let patches = w.duration_patches();
        assert_eq!(patches.len(), 6, "mvhd, 2 tkhd, 2 mdhd, mehd");
        for (off, bytes) in patches {
            file[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
        }
        let mut cur = std::io::Cursor::new(&file[boxes[0].1..]);
        let moov = <Moov as mp4_atom::Decode>::decode(&mut cur).unwrap();
        let ms = moov
            .mvex
            .as_ref()
            .unwrap()
            .mehd
            .as_ref()
            .unwrap()
            .fragment_duration;
        assert!(
            (3300..=3400).contains(&ms),
            "duration {ms} ms for 100 frames at 30 fps"
        );
        assert_eq!(moov.mvhd.duration, ms);
        assert_eq!(moov.trak[0].tkhd.duration, ms);
        let v = moov.trak[0].mdia.mdhd.duration;
        let a = moov.trak[1].mdia.mdhd.duration;
        assert!(
            (v as f64 / 90.0 - ms as f64).abs() < 2.0 && (a as f64 / 48.0 - ms as f64).abs() < 2.0,
            "{v} {a}"
        );
    }
}
