//! Benchmark inputs: camera-like moving pictures (a drifting gradient, moving shapes and
//! sensor-like noise, distinct per participant) pre-encoded to H.264 so decoding is on the
//! measured path; Opus tones per participant; and H.264 files (Annex B, or MP4 through
//! ffmpeg) so the same clips can be fed to Tessera and to a peer.

use crate::codec::audio::OpusEncoder;
use crate::codec::video::{EncoderSettings, H264Encoder};
use crate::media::I420Frame;
use std::path::Path;

/// One pre-encoded input stream: access units (Annex B) in decode order, looped.
pub struct Clip {
    pub access_units: Vec<Vec<u8>>,
}

/// Deterministic xorshift noise.
struct Noise(u32);
impl Noise {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// Frame `t` of participant `who`'s synthetic camera.
pub fn camera_frame(
    who: usize,
    t: usize,
    w: usize,
    h: usize,
    out: &mut I420Frame,
    noise_seed: u32,
) {
    out.resize(w, h);
    let mut n = Noise(noise_seed.wrapping_add((who * 7919 + t * 104_729) as u32) | 1);
    let drift = t * 2;
    for y in 0..h {
        for x in 0..w {
            let base = ((x + drift) * 160 / w + (y * 60 / h)) as i32 + 30;
            let grain = (n.next() % 9) as i32 - 4;
            out.y[y * w + x] = (base + grain).clamp(16, 235) as u8;
        }
    }
    // Two moving shapes.
    for (k, size) in [(0usize, h / 3), (1, h / 5)] {
        let cx = (w / 4 + (t * (3 + k * 2) + who * 37) % (w / 2)) as i64;
        let cy = (h / 3 + (t * (2 + k) + who * 23) % (h / 3)) as i64;
        for y in cy.max(0)..(cy + size as i64).min(h as i64) {
            for x in cx.max(0)..(cx + size as i64).min(w as i64) {
                out.y[y as usize * w + x as usize] = if k == 0 { 200 } else { 60 };
            }
        }
    }
    let (cw, ch) = (out.chroma_width(), out.chroma_height());
    let hue = (who * 53 % 180) as i32;
    for y in 0..ch {
        for x in 0..cw {
            out.u[y * cw + x] = (60 + hue + (x * 20 / cw) as i32).clamp(16, 240) as u8;
            out.v[y * cw + x] = (200 - hue + (y * 20 / ch) as i32).clamp(16, 240) as u8;
        }
    }
}

/// Encodes `frames` of participant `who`'s camera at `w`×`h` (IDR first, then every
/// `frames` — i.e. one per loop, like a camera answering the MCU's initial PLI).
pub fn synthetic_clip(
    who: usize,
    w: usize,
    h: usize,
    fps: u32,
    frames: usize,
    bitrate_bps: u32,
) -> Clip {
    encode_clip(w, h, fps, frames, bitrate_bps, |t, f| {
        camera_frame(who, t, w, h, f, 0x9e37_79b9)
    })
}

/// Encodes `frames` pictures drawn by `draw(t, frame)` to H.264 (one IDR per loop).
fn encode_clip(
    w: usize,
    h: usize,
    fps: u32,
    frames: usize,
    bitrate_bps: u32,
    mut draw: impl FnMut(usize, &mut I420Frame),
) -> Clip {
    let mut enc = H264Encoder::new(EncoderSettings {
        width: w as u32,
        height: h as u32,
        fps,
        bitrate_bps,
        idr_interval_frames: frames as u32,
        complexity: Default::default(),
        analysis: Default::default(),
    })
    .expect("openh264 encoder for synthetic input");
    let mut frame = I420Frame::default();
    let mut au = Vec::new();
    let mut access_units = Vec::with_capacity(frames);
    for t in 0..frames {
        draw(t, &mut frame);
        if enc.encode(&frame, &mut au).is_ok() && !au.is_empty() {
            access_units.push(au.clone());
        }
    }
    Clip { access_units }
}

/// What a presenter's screen does in the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Screen {
    /// One slide, unchanged (a capturer still sends frames: the same picture).
    Static,
    /// The slide scrolling by 4 rows a frame (reading a document).
    Scroll,
}

/// A slide (white, dark text lines, a fine checkerboard), `offset` rows scrolled.
pub fn slide_frame(w: usize, h: usize, offset: usize, out: &mut I420Frame) {
    out.resize(w, h);
    out.fill((235, 128, 128));
    let lines = [
        "Quarterly results",
        "Revenue grew 42 percent over the year",
        "Costs per meeting fell by a third",
        "Next steps: ship presenting to every room",
    ];
    let scale = (h / 180).max(1);
    let page = h * 2;
    for (i, text) in lines.iter().cycle().take(12).enumerate() {
        let y = (i * page / 12 + page - offset % page) % page;
        if y + 8 * scale < h {
            crate::compositor::text::draw_text(out, w / 16, y, scale, text, 30);
        }
    }
    let cell = (h / 45).max(2);
    for y in h * 3 / 4..h - h / 16 {
        let row = (y + offset) / cell;
        for x in w / 2..w - w / 16 {
            if (x / cell + row) % 2 == 1 {
                out.y[y * w + x] = 40;
            }
        }
    }
}

/// Encodes `frames` of a presenter's screen (IDR first).
pub fn screen_clip(screen: Screen, w: usize, h: usize, fps: u32, frames: usize) -> Clip {
    encode_clip(w, h, fps, frames, 2_000_000, |t, f| {
        let offset = if screen == Screen::Scroll { t * 4 } else { 0 };
        slide_frame(w, h, offset, f)
    })
}

/// Splits an Annex B H.264 stream into access units (a new one starts at each VCL NAL
/// whose first_mb_in_slice is 0, taking any SPS/PPS/SEI/AUD just before it).
pub fn split_annexb(data: &[u8]) -> Vec<Vec<u8>> {
    // Start offsets (of the start code) and NAL header positions.
    let mut nals = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let start = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
            nals.push((start, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut aus: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut cur_has_vcl = false;
    for (k, &(start, hdr)) in nals.iter().enumerate() {
        let end = nals.get(k + 1).map_or(data.len(), |n| n.0);
        let Some(&h) = data.get(hdr) else { continue };
        let t = h & 0x1f;
        let vcl = (1..=5).contains(&t);
        // first_mb_in_slice == 0 ⇔ the first bit of the slice header's ue(v) is 1.
        let first_slice = vcl && data.get(hdr + 1).is_some_and(|b| b & 0x80 != 0);
        let starts_au = (first_slice || (!vcl && matches!(t, 6..=9))) && cur_has_vcl;
        if starts_au {
            aus.push(std::mem::take(&mut cur));
            cur_has_vcl = false;
        }
        cur.extend_from_slice(&data[start..end]);
        cur_has_vcl |= vcl;
    }
    if cur_has_vcl {
        aus.push(cur);
    }
    aus
}

/// Why an input file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(
        "{0}: ffmpeg could not convert it to Annex B H.264 (is ffmpeg installed? is it H.264?)"
    )]
    Convert(String),
    #[error("{0}: no H.264 access units found")]
    Empty(String),
}

/// Loads an `.h264` (Annex B) file, or an `.mp4` converted with ffmpeg.
/// The clips at `inputs`, or without any, `n` synthetic ones of `size` (two seconds each
/// at `fps` and `bitrate`).
pub fn clips(
    inputs: &[std::path::PathBuf],
    n: usize,
    size: (u32, u32),
    fps: u32,
    bitrate: u32,
) -> Result<Vec<Clip>, InputError> {
    if inputs.is_empty() {
        let (w, h) = (size.0 as usize, size.1 as usize);
        return Ok((0..n)
            .map(|i| synthetic_clip(i, w, h, fps, 2 * fps as usize, bitrate))
            .collect());
    }
    inputs.iter().map(|p| load_clip(p)).collect()
}

pub fn load_clip(path: &Path) -> Result<Clip, InputError> {
    let name = path.display().to_string();
    let data = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"))
    {
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args([
                "-an",
                "-c:v",
                "copy",
                "-bsf:v",
                "h264_mp4toannexb",
                "-f",
                "h264",
                "-",
            ])
            .output()
            .map_err(|_| InputError::Convert(name.clone()))?;
        if !out.status.success() {
            return Err(InputError::Convert(name));
        }
        out.stdout
    } else {
        std::fs::read(path).map_err(|e| InputError::Io(name.clone(), e))?
    };
    let access_units = split_annexb(&data);
    if access_units.is_empty() {
        return Err(InputError::Empty(name));
    }
    Ok(Clip { access_units })
}

/// One second of Opus packets (50 × 20 ms) carrying a tone; looped by the feeder.
pub fn tone_packets(freq: f32, amplitude: f32) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(32_000, 5).expect("opus encoder");
    let mut out = vec![0u8; 1500];
    (0..50u64)
        .map(|k| {
            let pcm: Vec<i16> = (0..960u64)
                .map(|i| {
                    ((((k * 960 + i) as f64) * 2.0 * std::f64::consts::PI * freq as f64 / 48_000.0)
                        .sin()
                        * amplitude as f64) as i16
                })
                .collect();
            let n = enc.encode(&pcm, &mut out).unwrap_or(0);
            out[..n].to_vec()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_round_trip_splits_into_the_encoded_access_units() {
        let clip = synthetic_clip(1, 160, 96, 30, 12, 300_000);
        assert_eq!(clip.access_units.len(), 12);
        let joined: Vec<u8> = clip.access_units.concat();
        let split = split_annexb(&joined);
        assert_eq!(split.len(), clip.access_units.len());
        assert_eq!(split, clip.access_units);
    }

    #[test]
    fn frames_differ_between_participants_and_over_time() {
        let (mut a, mut b, mut c) = (
            I420Frame::default(),
            I420Frame::default(),
            I420Frame::default(),
        );
        camera_frame(0, 0, 64, 36, &mut a, 1);
        camera_frame(1, 0, 64, 36, &mut b, 1);
        camera_frame(0, 5, 64, 36, &mut c, 1);
        assert_ne!(a.u, b.u);
        assert_ne!(a.y, c.y);
    }
}
