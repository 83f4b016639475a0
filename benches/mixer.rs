//! Audio mixer tick cost: the pure N-1 mix (sum − own, limiter) and the room's top-K tick
//! (levels from RFC 6464, decode of talkers only, K personal mixes + 1 shared encode).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tessera::codec::audio::OpusEncoder;
use tessera::config::Config;
use tessera::ids::ParticipantId;
use tessera::mixer::{mix_minus_one, Limiter};
use tessera::room::audio::AudioLoop;
use tessera::room::{AudioCmd, RoomStats, RtpSink};

fn n_minus_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("mixer/n_minus_one_960_samples");
    for n in [4usize, 16, 64, 1000] {
        let inputs: Vec<Vec<i16>> = (0..n)
            .map(|i| {
                (0..960)
                    .map(|s| ((s * (i + 3)) % 2000) as i16 - 1000)
                    .collect()
            })
            .collect();
        let contributions: Vec<Option<&[i16]>> =
            inputs.iter().map(|v| Some(v.as_slice())).collect();
        let mut limiters = vec![Limiter::default(); n];
        let mut outputs = vec![vec![0i16; 960]; n];
        let (mut t, mut o) = (Vec::new(), Vec::new());
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| mix_minus_one(&contributions, &mut limiters, &mut outputs, &mut t, &mut o))
        });
    }
    g.finish();
}

/// The room's audio tick with `top_k` talkers mixed at most (3 was the default before
/// issue 22, 8 is now): everyone sends RFC 6464 levels, -20 dBov for the first and 1 dB
/// quieter for each next one, so the loudest 36 are above the speech floor.
fn room_tick(c: &mut Criterion, top_k: usize) {
    let mut g = c.benchmark_group(format!("mixer/room_tick_top{top_k}_with_levels"));
    g.sample_size(20);
    for n in [4usize, 16, 64, 1000] {
        let mut config = Config::default();
        config.audio.top_k = top_k;
        let stats = Arc::new(RoomStats::default());
        let mut mix = AudioLoop::new(
            &config,
            tokio::sync::broadcast::channel(16).0,
            Arc::new(AtomicU64::new(0)),
            stats,
        );
        let mut enc = OpusEncoder::new(32_000, 5).unwrap();
        let mut buf = vec![0u8; 1500];
        let pcm: Vec<i16> = (0..960)
            .map(|s| ((s as f32 * 0.06).sin() * 6000.0) as i16)
            .collect();
        let len = enc.encode(&pcm, &mut buf).unwrap();
        let packet = bytes::Bytes::copy_from_slice(&buf[..len]);
        let mut ids = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..n {
            let id = ParticipantId::next();
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            mix.handle(AudioCmd::Join {
                id,
                codec: tessera::codec::voice::AudioCodec::Opus,
                admitted: true,
            });
            mix.handle(AudioCmd::Attach {
                id,
                link: None,
                sink: Some(RtpSink::new(1, 111, tx)),
            });
            ids.push(id);
            rxs.push(rx);
        }
        let mut k = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for (i, id) in ids.iter().enumerate() {
                    mix.handle(AudioCmd::Packet {
                        id: *id,
                        seq: k as u16,
                        payload: packet.clone(),
                        level: Some((20 + i).min(127) as u8),
                    });
                }
                mix.set_tick(k);
                mix.mix_tick();
                k += 1;
                for r in &mut rxs {
                    while r.try_recv().is_ok() {}
                }
            })
        });
    }
    g.finish();
}

fn top_k_room_tick(c: &mut Criterion) {
    room_tick(c, 3);
    room_tick(c, 8);
}

criterion_group!(benches, n_minus_one, top_k_room_tick);
criterion_main!(benches);
