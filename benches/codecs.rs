//! Codec costs on this machine: openh264 and libvpx VP8 encode of composite-like content
//! (what the MCU really encodes: several moving camera tiles) at 640x360 and 1280x720, the
//! same frames for both, and decode of H.264 (openh264), AV1 (dav1d), VP8 and VP9
//! (libvpx) and Opus, and RTP depacketisation of a large keyframe.
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, RateControlMode, UsageType,
};
use openh264::OpenH264API;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tessera::bench::synth::{camera_frame, synthetic_clip};
use tessera::codec::audio::{OpusDecoder, OpusEncoder};
use tessera::codec::video::{EncoderSettings, H264Encoder, VideoDecoder};
use tessera::codec::vpx::ivf_frames;
use tessera::codec::VideoCodec;
use tessera::compositor::{compose, render_tile};
use tessera::layout::{LayoutSet, Rect};
use tessera::media::I420Frame;

/// 30 frames of a 9-tile composite of moving synthetic cameras.
fn composites(w: u32, h: u32) -> Vec<I420Frame> {
    let rects: Vec<Rect> = LayoutSet::builtin().get("grid").unwrap().place(9, w, h);
    (0..30)
        .map(|t| {
            let mut canvas = I420Frame::new(w as usize, h as usize);
            let tiles: Vec<I420Frame> = rects
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut cam = I420Frame::default();
                    camera_frame(i, t, 640, 360, &mut cam, 11);
                    let mut tile = I420Frame::new(r.w as usize, r.h as usize);
                    render_tile(Some(&cam), "Participant", &mut tile);
                    tile
                })
                .collect();
            let pairs: Vec<(Rect, &I420Frame)> = rects.iter().copied().zip(tiles.iter()).collect();
            compose(&mut canvas, &pairs);
            canvas
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("openh264_encode_composite");
    g.sample_size(30);
    for (w, h, bps) in [(640u32, 360u32, 600_000u32), (1280, 720, 1_200_000)] {
        let frames = composites(w, h);
        let settings = EncoderSettings {
            width: w,
            height: h,
            fps: 30,
            bitrate_bps: bps,
            idr_interval_frames: 300,
            complexity: Default::default(),
            analysis: Default::default(),
        };
        let mut enc = H264Encoder::new(settings).unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        g.bench_function(
            BenchmarkId::new("tessera_settings", format!("{w}x{h}@{}k", bps / 1000)),
            |b| {
                b.iter(|| {
                    enc.encode(&frames[i % frames.len()], &mut out).unwrap();
                    i += 1;
                })
            },
        );
        // The same frames as VP8 (libvpx, Tessera's settings): what a viewer without H.264
        // costs.
        let mut vp8 = tessera::codec::vpx::Vp8Encoder::new(settings).unwrap();
        g.bench_function(
            BenchmarkId::new(
                "libvpx_vp8_tessera_settings",
                format!("{w}x{h}@{}k", bps / 1000),
            ),
            |b| {
                b.iter(|| {
                    vp8.encode(&frames[i % frames.len()], &mut out).unwrap();
                    i += 1;
                })
            },
        );
        // The same with openh264's low-complexity mode, to see what it would save.
        let cfg = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bps))
            .max_frame_rate(FrameRate::from_hz(30.0))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(true)
            .complexity(Complexity::Low);
        let mut low = Encoder::with_api_config(OpenH264API::from_source(), cfg).unwrap();
        g.bench_function(
            BenchmarkId::new("complexity_low", format!("{w}x{h}@{}k", bps / 1000)),
            |b| {
                b.iter(|| {
                    let bs = low.encode(&frames[i % frames.len()]).unwrap();
                    std::hint::black_box(bs.to_vec());
                    i += 1;
                })
            },
        );
    }
    g.finish();
}

/// Which openh264 options cost what at 720p (exploration, complexity Low as the base).
fn encode_options(c: &mut Criterion) {
    let mut g = c.benchmark_group("openh264_720p_options");
    g.sample_size(20);
    let frames = composites(1280, 720);
    let base = || {
        EncoderConfig::new()
            .bitrate(BitRate::from_bps(1_200_000))
            .max_frame_rate(FrameRate::from_hz(30.0))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(true)
            .complexity(Complexity::Low)
    };
    let variants: Vec<(&str, EncoderConfig)> = vec![
        ("low", base()),
        (
            "low_intra_period_300",
            base().intra_frame_period(openh264::encoder::IntraFramePeriod::from_num_frames(300)),
        ),
        ("low_no_scene_change", base().scene_change_detect(false)),
        ("low_no_background", base().background_detection(false)),
        ("low_no_adaptive_quant", base().adaptive_quantization(false)),
        (
            "low_none_of_the_three",
            base()
                .scene_change_detect(false)
                .background_detection(false)
                .adaptive_quantization(false),
        ),
    ];
    for (name, cfg) in variants {
        let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).unwrap();
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let bs = enc.encode(&frames[i % frames.len()]).unwrap();
                std::hint::black_box(bs.to_vec());
                i += 1;
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    // H.264 640x360 camera clip (IDR every 60 frames), one frame per iteration.
    let clip = synthetic_clip(0, 640, 360, 30, 60, 600_000);
    let mut pay = H264Payloader::default();
    let aus: Vec<Vec<Bytes>> = clip
        .access_units
        .iter()
        .map(|a| pay.payload(1100, &Bytes::copy_from_slice(a)).unwrap())
        .collect();
    let mut dec = VideoDecoder::new(VideoCodec::H264).unwrap();
    let mut out = I420Frame::default();
    let mut i = 0;
    g.bench_function("openh264_640x360", |b| {
        b.iter(|| {
            let _ = dec.decode(&aus[i % aus.len()], false, &mut out);
            i += 1;
        })
    });
    // AV1 640x360 (libaom-encoded test pattern, benches/data), through the RTP depacketizer
    // path is not needed here: feed temporal units to dav1d directly via VideoDecoder's
    // low-overhead input by wrapping each unit as a single aggregated OBU payload.
    let ivf = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/data/av1_640x360.ivf"
    ))
    .unwrap();
    let units: Vec<Vec<u8>> = ivf_frames(&ivf).into_iter().map(<[u8]>::to_vec).collect();
    let mut settings = dav1d::Settings::new();
    settings.set_n_threads(1);
    settings.set_max_frame_delay(1);
    let mut av1 = dav1d::Decoder::with_settings(&settings).unwrap();
    let mut j = 0;
    g.bench_function("dav1d_640x360", |b| {
        b.iter(|| {
            if j % units.len() == 0 {
                av1.flush();
            }
            let _ = av1.send_data(units[j % units.len()].clone(), None, None, None);
            while av1.get_picture().is_ok() {}
            j += 1;
        })
    });
    // VP8 640x360: the camera clip's frames encoded by libvpx (Tessera's settings), key
    // frame every 60, through the depacketiser like received frames.
    let mut vp8_enc = tessera::codec::vpx::Vp8Encoder::new(EncoderSettings {
        width: 640,
        height: 360,
        fps: 30,
        bitrate_bps: 600_000,
        idr_interval_frames: 60,
        complexity: Default::default(),
        analysis: Default::default(),
    })
    .unwrap();
    let mut vp8_pay = rtc::rtp::codec::vp8::Vp8Payloader::default();
    vp8_pay.enable_picture_id = true;
    let mut vp8_units = Vec::new();
    let mut cam = I420Frame::default();
    let mut data = Vec::new();
    for t in 0..60 {
        camera_frame(0, t, 640, 360, &mut cam, 11);
        vp8_enc.encode(&cam, &mut data).unwrap();
        if !data.is_empty() {
            vp8_units.push(vp8_pay.payload(1100, &Bytes::from(data.clone())).unwrap());
        }
    }
    let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
    let mut k = 0;
    g.bench_function("libvpx_vp8_640x360", |b| {
        b.iter(|| {
            let _ = dec.decode(&vp8_units[k % vp8_units.len()], false, &mut out);
            k += 1;
        })
    });
    // VP9 640x360: libvpx-vp9 (ffmpeg) test pattern, tests/data/vp9, 30 frames, looped on
    // its keyframe.
    let clip = include_bytes!("../tests/data/vp9/testsrc_640x360.ivf");
    let mut vp9_pay = rtc::rtp::codec::vp9::Vp9Payloader::default();
    let vp9_units: Vec<Vec<Bytes>> = ivf_frames(clip)
        .into_iter()
        .map(|f| vp9_pay.payload(1100, &Bytes::copy_from_slice(f)).unwrap())
        .collect();
    let mut dec = VideoDecoder::new(VideoCodec::Vp9).unwrap();
    let mut k = 0;
    g.bench_function("libvpx_vp9_640x360", |b| {
        b.iter(|| {
            let _ = dec.decode(&vp9_units[k % vp9_units.len()], false, &mut out);
            k += 1;
        })
    });
    // Opus 20 ms mono.
    let mut enc = OpusEncoder::new(32_000, 5).unwrap();
    let pcm: Vec<i16> = (0..960)
        .map(|s| ((s as f32 * 0.05).sin() * 8000.0) as i16)
        .collect();
    let mut pkt = vec![0u8; 1500];
    let n = enc.encode(&pcm, &mut pkt).unwrap();
    let mut od = OpusDecoder::new().unwrap();
    let mut buf = vec![0i16; 5760];
    g.bench_function("opus_20ms", |b| {
        b.iter(|| od.decode(&pkt[..n], &mut buf).unwrap())
    });
    g.bench_function("opus_encode_20ms_complexity5", |b| {
        b.iter(|| enc.encode(&pcm, &mut pkt).unwrap())
    });
    // The telephony codecs through the resamplers, 20 ms at a time (one caller per tick):
    // packet → 48 kHz for the mix, and 48 kHz mix → packet.
    use tessera::codec::voice::{AudioCodec, AudioDecoder, AudioEncoder};
    for codec in [AudioCodec::Pcmu, AudioCodec::G722] {
        let mut e = AudioEncoder::new(codec, 0, 0).unwrap();
        let mut d = AudioDecoder::new(codec).unwrap();
        let n = e.encode(&pcm, &mut pkt).unwrap();
        g.bench_function(format!("{codec:?}_decode_to_48k_20ms"), |b| {
            b.iter(|| d.decode(&pkt[..n], &mut buf).unwrap())
        });
        let mut out = vec![0u8; 1500];
        g.bench_function(format!("{codec:?}_encode_from_48k_20ms"), |b| {
            b.iter(|| e.encode(&pcm, &mut out).unwrap())
        });
    }
    g.finish();
}

/// Reassembling one access unit from its RTP payloads (runs for every received frame):
/// a 100 KB keyframe in 1,100-byte packets, H.264 (FU-A) and AV1 (fragmented OBU).
fn depacketize(c: &mut Criterion) {
    use rtc::rtp::codec::av1::Av1Payloader;
    use tessera::codec::depack;
    let mut g = c.benchmark_group("depacketize");
    let mut h264_au = vec![0, 0, 0, 1, 0x65];
    h264_au.extend((0..100_000u32).map(|i| (i % 251) as u8 | 1));
    let h264 = H264Payloader::default()
        .payload(1100, &Bytes::from(h264_au))
        .unwrap();
    let mut av1_tu = vec![0x32, 0xa0, 0x8d, 0x06]; // OBU_FRAME, size 100,000 (LEB128)
    av1_tu.extend((0..100_000u32).map(|i| (i % 253) as u8));
    let av1 = Av1Payloader::default()
        .payload(1100, &Bytes::from(av1_tu))
        .unwrap();
    let (mut out, mut frag) = (Vec::new(), Vec::new());
    g.bench_function("h264_100kB", |b| {
        b.iter(|| depack::h264(&h264, &mut out, &mut frag, 1 << 20).unwrap())
    });
    g.bench_function("av1_100kB", |b| {
        b.iter(|| depack::av1(&av1, &mut out, &mut frag, 1 << 20).unwrap())
    });
    g.finish();
}

criterion_group!(benches, encode, encode_options, decode, depacketize);
criterion_main!(benches);
