//! Compositing cost: scaling alone (libyuv vs the reference scaler), and full composites
//! (render every tile from a 640x360 input, then compose) for 4/9/16 tiles into
//! 1280x720 and 640x360, on one thread and on the rayon pool.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tessera::bench::synth::camera_frame;
use tessera::compositor::scale::{scale_cover, scale_cover_reference};
use tessera::compositor::{compose, TileCache, TileJob, TileKey};
use tessera::ids::ParticipantId;
use tessera::layout::{LayoutSet, Rect};
use tessera::media::I420Frame;

fn inputs(n: usize) -> Vec<I420Frame> {
    (0..n)
        .map(|i| {
            let mut f = I420Frame::default();
            camera_frame(i, 0, 640, 360, &mut f, 7);
            f
        })
        .collect()
}

fn scaler(c: &mut Criterion) {
    let src = inputs(1).remove(0);
    let mut g = c.benchmark_group("scale/640x360_to");
    for (w, h) in [(426usize, 240usize), (1280, 720), (320, 180)] {
        let mut dst = I420Frame::new(w, h);
        g.bench_function(BenchmarkId::new("libyuv", format!("{w}x{h}")), |b| {
            b.iter(|| scale_cover(&src, &mut dst))
        });
        g.bench_function(BenchmarkId::new("reference", format!("{w}x{h}")), |b| {
            b.iter(|| scale_cover_reference(&src, &mut dst))
        });
    }
    g.finish();
}

fn composite(c: &mut Criterion) {
    let grid = LayoutSet::builtin().get("grid").unwrap().clone();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("composite");
    for (cw, ch) in [(1280u32, 720u32), (640, 360)] {
        for n in [4usize, 9, 16] {
            let frames = inputs(n);
            let rects: Vec<Rect> = grid.place(n, cw, ch);
            let mut canvas = I420Frame::new(cw as usize, ch as usize);
            let mut cache = TileCache::default();
            let mut version = 0u64;
            let run = |cache: &mut TileCache, canvas: &mut I420Frame, version: u64| {
                // Every input has a new picture: every tile is re-rendered, then composed.
                let jobs: Vec<TileJob<'_>> = rects
                    .iter()
                    .enumerate()
                    .map(|(i, r)| TileJob {
                        key: TileKey {
                            participant: ParticipantId(i as u64 + 1),
                            w: r.w,
                            h: r.h,
                            look: Default::default(),
                        },
                        version,
                        source: Some(&frames[i]),
                        name: "Participant",
                    })
                    .collect();
                cache.prepare(&jobs);
                let pairs: Vec<(Rect, &I420Frame)> = jobs
                    .iter()
                    .zip(&rects)
                    .map(|(j, r)| (*r, cache.get(&j.key).unwrap()))
                    .collect();
                compose(canvas, &pairs);
            };
            g.bench_function(BenchmarkId::new(format!("{cw}x{ch}/1_thread"), n), |b| {
                b.iter(|| {
                    version += 1;
                    one.install(|| run(&mut cache, &mut canvas, version))
                })
            });
            g.bench_function(BenchmarkId::new(format!("{cw}x{ch}/rayon"), n), |b| {
                b.iter(|| {
                    version += 1;
                    run(&mut cache, &mut canvas, version)
                })
            });
            // Composing already-rendered tiles (what each extra viewer costs).
            let jobs: Vec<TileJob<'_>> = rects
                .iter()
                .enumerate()
                .map(|(i, r)| TileJob {
                    key: TileKey {
                        participant: ParticipantId(i as u64 + 1),
                        w: r.w,
                        h: r.h,
                        look: Default::default(),
                    },
                    version: 0,
                    source: Some(&frames[i]),
                    name: "P",
                })
                .collect();
            cache.prepare(&jobs);
            let pairs: Vec<(Rect, &I420Frame)> = jobs
                .iter()
                .zip(&rects)
                .map(|(j, r)| (*r, cache.get(&j.key).unwrap()))
                .collect();
            g.bench_function(
                BenchmarkId::new(format!("{cw}x{ch}/compose_only"), n),
                |b| b.iter(|| compose(&mut canvas, &pairs)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, scaler, composite);
criterion_main!(benches);
