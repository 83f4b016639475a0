//! Compositor tests, including golden images: small synthetic inputs composed through a
//! layout and compared (with a small tolerance) to PNGs under `tests/golden/`. Set
//! `TESSERA_UPDATE_GOLDEN=1` to rewrite them after an intended change, then look at them.

use super::*;
use crate::layout::LayoutSet;
use crate::media::frame::{rgb_to_yuv, yuv_to_rgb};

fn pattern(w: usize, h: usize, seed: u8) -> I420Frame {
    let mut f = I420Frame::new(w, h);
    for y in 0..h {
        for x in 0..w {
            f.y[y * w + x] = (16 + ((x * 200 / w) as u8 / 2)).wrapping_add(seed.wrapping_mul(30))
                | (y as u8 & 0x10);
        }
    }
    let (u, v) = match seed {
        0 => (90, 240),
        1 => (54, 34),
        _ => (240, 110),
    };
    f.u.fill(u);
    f.v.fill(v);
    f
}

fn compose_layout(layout: &str, n: usize, w: u32, h: u32) -> I420Frame {
    let set = LayoutSet::builtin();
    let rects = set.get(layout).unwrap().place(n, w, h);
    let inputs: Vec<I420Frame> = (0..n).map(|i| pattern(64, 36, i as u8)).collect();
    let names = ["Ada", "Bob", "Cy"];
    let mut tiles = Vec::new();
    for (i, r) in rects.iter().enumerate() {
        let mut t = I420Frame::new(r.w as usize, r.h as usize);
        // The third participant has no video: placeholder.
        let src = if i == 2 { None } else { Some(&inputs[i]) };
        render_tile(src, names[i % 3], &mut t);
        tiles.push(t);
    }
    let mut canvas = I420Frame::new(w as usize, h as usize);
    let pairs: Vec<(Rect, &I420Frame)> = rects.iter().copied().zip(tiles.iter()).collect();
    compose(&mut canvas, &pairs);
    canvas
}

fn check_golden(name: &str, frame: &I420Frame) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let rgb = yuv_to_rgb(frame);
    if std::env::var_os("TESSERA_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::save_buffer(
            &path,
            &rgb,
            frame.width as u32,
            frame.height as u32,
            image::ColorType::Rgb8,
        )
        .unwrap();
        return;
    }
    let golden = image::open(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with TESSERA_UPDATE_GOLDEN=1 to create)",
                path.display()
            )
        })
        .to_rgb8();
    assert_eq!(
        (golden.width(), golden.height()),
        (frame.width as u32, frame.height as u32)
    );
    let worst = golden
        .as_raw()
        .iter()
        .zip(&rgb)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    assert!(
        worst <= 2,
        "{name}: pixels differ from golden by up to {worst}"
    );
}

#[test]
fn golden_grid_three() {
    check_golden("grid3.png", &compose_layout("grid", 3, 192, 108));
}

#[test]
fn golden_speaker_three() {
    check_golden("speaker3.png", &compose_layout("speaker", 3, 192, 108));
}

#[test]
fn golden_pip_two() {
    check_golden("pip2.png", &compose_layout("pip", 2, 192, 108));
}

#[test]
fn tiles_land_where_the_layout_puts_them() {
    let set = LayoutSet::builtin();
    let rects = set.get("grid").unwrap().place(2, 640, 360);
    let red = I420Frame::solid(320, 180, rgb_to_yuv(255, 0, 0));
    let blue = I420Frame::solid(320, 180, rgb_to_yuv(0, 0, 255));
    let mut cache = TileCache::default();
    let jobs: Vec<TileJob<'_>> = rects
        .iter()
        .zip([(1, &red), (2, &blue)])
        .map(|(r, (id, f))| TileJob {
            key: TileKey {
                participant: ParticipantId(id),
                w: r.w,
                h: r.h,
            },
            version: 1,
            source: Some(f),
            name: "",
        })
        .collect();
    assert_eq!(cache.prepare(&jobs), 2);
    assert_eq!(
        cache.prepare(&jobs),
        0,
        "unchanged tiles are not re-rendered"
    );
    let pairs: Vec<(Rect, &I420Frame)> = jobs
        .iter()
        .zip(&rects)
        .map(|(j, r)| (*r, cache.get(&j.key).unwrap()))
        .collect();
    let mut canvas = I420Frame::new(640, 360);
    compose(&mut canvas, &pairs);
    let (cx, cy) = rects[0].center();
    assert_eq!(
        canvas.pixel(cx as usize, cy as usize),
        rgb_to_yuv(255, 0, 0)
    );
    let (cx, cy) = rects[1].center();
    assert_eq!(
        canvas.pixel(cx as usize, cy as usize),
        rgb_to_yuv(0, 0, 255)
    );
}

#[test]
fn cache_drops_tiles_nobody_needs() {
    let f = I420Frame::solid(16, 16, (100, 128, 128));
    let mut cache = TileCache::default();
    let job = |id| TileJob {
        key: TileKey {
            participant: ParticipantId(id),
            w: 8,
            h: 8,
        },
        version: 1,
        source: Some(&f),
        name: "",
    };
    cache.prepare(&[job(1), job(2)]);
    assert_eq!(cache.len(), 2);
    cache.prepare(&[job(2)]);
    assert_eq!(cache.len(), 1);
}
