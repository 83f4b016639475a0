//! `tessera bench encoder`: what openh264's analysis passes (scene-change detection,
//! background detection) cost and what they buy on the pictures Tessera encodes. The
//! inputs (camera clips, or the synthetic ones) are decoded and composed into a grid on
//! the output canvas, frame by frame, as a room would; then the same composed frames are
//! encoded once per variant at the same bitrate, timing each encode on the thread's CPU
//! clock, and the encoded stream is decoded again for its PSNR (luma) against the
//! composed source.

use super::{parse_bitrate, parse_size, synth, BenchError};
use crate::codec::video::{Decoded, EncoderAnalysis, EncoderSettings, H264Encoder, VideoDecoder};
use crate::codec::VideoCodec;
use crate::compositor;
use crate::layout::LayoutSet;
use crate::media::I420Frame;
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use std::path::PathBuf;

/// Arguments of `tessera bench encoder`.
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderBenchArgs {
    /// H.264 clips (Annex B), one per tile; without them, synthetic 640x360 clips.
    #[arg(long, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Tiles in the grid (clips are reused round-robin).
    #[arg(long, default_value_t = 9)]
    pub tiles: usize,
    #[arg(long, default_value = "1280x720")]
    pub output: String,
    #[arg(long, default_value = "1200k")]
    pub bitrate: String,
    /// Frames composed and encoded per variant (at 30 fps).
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    /// openh264 complexity (the server's `[video] complexity`).
    #[arg(long, value_enum, default_value = "low")]
    pub complexity: crate::codec::video::EncoderComplexity,
    /// Rounds over all variants; each variant's time is its fastest round (a single
    /// round's time moves ±0.3 ms/frame with whatever else the machine does).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also write the composed frames as raw I420 (for encoding them with another encoder:
    /// `benches/codec_floor.sh`).
    #[arg(long)]
    pub write_source: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// One variant's result.
#[derive(Debug, serde::Serialize)]
pub struct VariantReport {
    pub scene_change: bool,
    pub background: bool,
    /// Mean encode CPU time per frame, in the fastest round.
    pub ms_per_frame: f64,
    pub kbps: f64,
    /// Mean luma PSNR of the decoded stream against the composed source.
    pub psnr_y: f64,
    /// A hash of the whole encoded stream: equal hashes mean the option changed nothing.
    pub stream_hash: String,
}

/// The composed source frames, from the clips.
fn compose_source(args: &EncoderBenchArgs, w: u32, h: u32) -> Result<Vec<I420Frame>, BenchError> {
    let clips = synth::clips(&args.inputs, args.tiles, (640, 360), 30, 600_000)?;
    let mut pay = H264Payloader::default();
    let payloads: Vec<Vec<Vec<Bytes>>> = clips
        .iter()
        .map(|c| {
            c.access_units
                .iter()
                .map(|au| {
                    pay.payload(1200, &Bytes::copy_from_slice(au))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let grid = LayoutSet::builtin()
        .get("grid")
        .expect("built-in grid")
        .clone();
    let rects = grid.place(args.tiles, w, h);
    let mut decoders: Vec<VideoDecoder> = (0..args.tiles)
        .map(|_| VideoDecoder::new(VideoCodec::H264))
        .collect::<Result<_, _>>()?;
    let mut decoded: Vec<I420Frame> = (0..args.tiles).map(|_| I420Frame::default()).collect();
    let mut tiles: Vec<I420Frame> = rects
        .iter()
        .map(|r| I420Frame::new(r.w as usize, r.h as usize))
        .collect();
    let mut out = Vec::with_capacity(args.frames);
    for f in 0..args.frames {
        for t in 0..args.tiles {
            let clip = &payloads[t % payloads.len()];
            // Loop each clip from its start (its first frame is its IDR).
            let au = &clip[f % clip.len()];
            if let Ok(Decoded::Picture { .. }) = decoders[t].decode(au, false, &mut decoded[t]) {
                compositor::render_tile(Some(&decoded[t]), "", &mut tiles[t]);
            }
        }
        let mut canvas = I420Frame::new(w as usize, h as usize);
        compositor::compose_iter(&mut canvas, rects.iter().copied().zip(tiles.iter()));
        out.push(canvas);
    }
    Ok(out)
}

fn psnr_y(a: &I420Frame, b: &I420Frame) -> f64 {
    let se: f64 =
        a.y.iter()
            .zip(&b.y)
            .map(|(&x, &y)| {
                let d = x as f64 - y as f64;
                d * d
            })
            .sum();
    let mse = se / a.y.len().max(1) as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

pub fn run(args: &EncoderBenchArgs) -> Result<Vec<VariantReport>, BenchError> {
    let (w, h) = parse_size("output", &args.output)?;
    let bitrate = parse_bitrate(&args.bitrate)?;
    eprintln!(
        "bench encoder: composing {} frames of {} tiles…",
        args.frames, args.tiles
    );
    let source = compose_source(args, w, h)?;
    if let Some(path) = &args.write_source {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for frame in &source {
            f.write_all(&frame.y)?;
            f.write_all(&frame.u)?;
            f.write_all(&frame.v)?;
        }
        f.flush()?;
    }
    // openh264's default (both on), then each off, then both off (Tessera's choice).
    // (Adaptive quantisation is no variant: openh264 turns it off whatever it is asked.)
    let variants = [(true, true), (false, true), (true, false), (false, false)];
    let mut best_ns = vec![u64::MAX; variants.len()];
    let mut streams: Vec<Vec<Vec<u8>>> = vec![Vec::new(); variants.len()];
    // Round 0 warms up and is not counted (the first runs pay for cold caches).
    for round in 0..=args.rounds.max(1) {
        for (i, &(scene_change, background)) in variants.iter().enumerate() {
            let settings = EncoderSettings {
                width: w,
                height: h,
                fps: 30,
                bitrate_bps: bitrate,
                idr_interval_frames: 3000,
                complexity: args.complexity,
                analysis: EncoderAnalysis {
                    scene_change,
                    background,
                },
            };
            let mut enc = H264Encoder::new(settings)?;
            let mut aus: Vec<Vec<u8>> = Vec::with_capacity(source.len());
            let mut au = Vec::new();
            let t0 = crate::metrics::thread_cpu_ns();
            for f in &source {
                au.clear();
                enc.encode(f, &mut au)?;
                aus.push(au.clone());
            }
            let cpu_ns = crate::metrics::thread_cpu_ns() - t0;
            if round > 0 {
                best_ns[i] = best_ns[i].min(cpu_ns);
            }
            streams[i] = aus;
        }
    }
    let mut reports = Vec::new();
    for (i, &(scene_change, background)) in variants.iter().enumerate() {
        let aus = &streams[i];
        let cpu_ns = best_ns[i];
        let bytes: usize = aus.iter().map(|a| a.len()).sum();
        // Decode and compare frame by frame (a skipped frame shows the last picture).
        let mut dec = VideoDecoder::new(VideoCodec::H264)?;
        let mut pay = H264Payloader::default();
        let mut pic = I420Frame::default();
        let mut psnr_sum = 0.0;
        let mut n = 0;
        for (a, src) in aus.iter().zip(&source) {
            if !a.is_empty() {
                let p = pay
                    .payload(1200, &Bytes::copy_from_slice(a))
                    .unwrap_or_default();
                let _ = dec.decode(&p, false, &mut pic);
            }
            if pic.width == src.width {
                psnr_sum += psnr_y(&pic, src);
                n += 1;
            }
        }
        reports.push(VariantReport {
            scene_change,
            background,
            ms_per_frame: cpu_ns as f64 / 1e6 / source.len() as f64,
            kbps: bytes as f64 * 8.0 * 30.0 / source.len() as f64 / 1000.0,
            psnr_y: psnr_sum / n.max(1) as f64,
            stream_hash: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                aus.hash(&mut h);
                format!("{:016x}", h.finish())
            },
        });
    }
    Ok(reports)
}

pub fn print_table(r: &[VariantReport]) {
    println!("| scene-change detection | background detection | encode ms/frame | kbit/s | PSNR-Y dB | stream |");
    println!("|---|---|---|---|---|---|");
    for v in r {
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.3} | {} |",
            if v.scene_change { "on" } else { "off" },
            if v.background { "on" } else { "off" },
            v.ms_per_frame,
            v.kbps,
            v.psnr_y,
            v.stream_hash
        );
    }
}
