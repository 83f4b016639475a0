//! Compositor tests, including golden images: small synthetic inputs composed through a
//! layout and compared (with a small tolerance) to PNGs under `tests/golden/`. Set
//! `TESSERA_UPDATE_GOLDEN=1` to rewrite them after an intended change, then look at them.
//! Because the goldens are the code's own output, the same composites are also checked
//! against an independent reference built by ffmpeg, within a PSNR bound.

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

/// The same composite built by ffmpeg, independently of Tessera's scaler and blitter: each
/// input scaled to cover its tile (bilinear, centre crop) and overlaid on the background.
/// Returns the canvas and, per tile with a picture, its rectangle.
fn ffmpeg_reference(layout: &str, n: usize, w: u32, h: u32) -> (I420Frame, Vec<Rect>) {
    let dir = std::env::temp_dir().join(format!(
        "tessera-golden-{layout}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, f: &I420Frame| {
        let mut raw = f.y.clone();
        raw.extend_from_slice(&f.u);
        raw.extend_from_slice(&f.v);
        std::fs::write(dir.join(name), raw).unwrap();
    };
    write(
        "bg.yuv",
        &I420Frame::solid(w as usize, h as usize, BACKGROUND),
    );
    let rects = LayoutSet::builtin().get(layout).unwrap().place(n, w, h);
    let mut args: Vec<String> = vec!["-v".into(), "error".into()];
    args.extend(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s"].map(String::from));
    args.push(format!("{w}x{h}"));
    args.extend(["-i".into(), dir.join("bg.yuv").display().to_string()]);
    let mut graph = String::new();
    let mut last = "0:v".to_owned();
    let mut shown = Vec::new();
    for (i, r) in rects.iter().enumerate() {
        if i == 2 {
            continue; // the placeholder tile (no picture), as in `compose_layout`
        }
        let name = format!("in{i}.yuv");
        write(&name, &pattern(64, 36, i as u8));
        args.extend(
            ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "64x36", "-i"].map(String::from),
        );
        args.push(dir.join(&name).display().to_string());
        let input = shown.len() + 1;
        graph += &format!(
            "[{input}:v]scale={}:{}:force_original_aspect_ratio=increase:flags=bilinear,\
             crop={}:{}[t{i}];[{last}][t{i}]overlay={}:{}[o{i}];",
            r.w, r.h, r.w, r.h, r.x, r.y
        );
        last = format!("o{i}");
        shown.push(*r);
    }
    graph.pop();
    let out = dir.join("ref.yuv");
    args.extend([
        "-filter_complex".into(),
        graph,
        "-map".into(),
        format!("[{last}]"),
    ]);
    args.extend(
        [
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-y",
        ]
        .map(String::from),
    );
    args.push(out.display().to_string());
    let status = std::process::Command::new("ffmpeg")
        .args(&args)
        .status()
        .expect(
            "ffmpeg is needed for the independent golden reference (scripts/setup.sh installs it)",
        );
    assert!(status.success(), "ffmpeg {args:?}");
    let raw = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut f = I420Frame::new(w as usize, h as usize);
    let (ys, cs) = (f.y.len(), f.u.len());
    assert_eq!(raw.len(), ys + 2 * cs, "ffmpeg output size");
    f.y.copy_from_slice(&raw[..ys]);
    f.u.copy_from_slice(&raw[ys..ys + cs]);
    f.v.copy_from_slice(&raw[ys + cs..]);
    (f, shown)
}

/// PSNR (dB) of `a` against `b` over the picture part of `rects`: inside some tile, and
/// outside every tile's bottom band (where Tessera draws the name label; an inset's band
/// lies over the tile under it). Y, U and V together.
fn psnr_in(a: &I420Frame, b: &I420Frame, rects: &[Rect]) -> f64 {
    let (w, h) = (a.width, a.height);
    let mut mask = vec![false; w * h];
    for r in rects {
        for y in r.y as usize..(r.y + r.h) as usize {
            mask[y * w + r.x as usize..y * w + (r.x + r.w) as usize].fill(true);
        }
    }
    for r in rects {
        let band = (16 * text::label_scale(r.h as usize)).min(r.h as usize);
        for y in (r.y + r.h) as usize - band..(r.y + r.h) as usize {
            mask[y * w + r.x as usize..y * w + (r.x + r.w) as usize].fill(false);
        }
    }
    let (mut se, mut count) = (0f64, 0usize);
    let cw = a.chroma_width();
    for y in 0..h {
        for x in 0..w {
            if !mask[y * w + x] {
                continue;
            }
            let i = y * w + x;
            se += (a.y[i] as f64 - b.y[i] as f64).powi(2);
            count += 1;
            if x % 2 == 0 && y % 2 == 0 {
                let c = (y / 2) * cw + x / 2;
                se += (a.u[c] as f64 - b.u[c] as f64).powi(2);
                se += (a.v[c] as f64 - b.v[c] as f64).powi(2);
                count += 2;
            }
        }
    }
    let mse = se / count.max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The golden images are Tessera's own output; this holds them (and the code that must
/// reproduce them) to an independent reference within a PSNR bound, so a wrong crop,
/// offset, filter or channel would fail even if someone re-blessed the goldens.
#[test]
fn golden_composites_match_an_independent_ffmpeg_reference() {
    // Measured 2026-11-22 (ffmpeg 5.1 swscale vs libyuv, both bilinear): 47.5–51.7 dB;
    // a 2-pixel shift of one tile scored 29.2–29.7 dB and swapped chroma 9.4–12.3 dB.
    const MIN_PSNR_DB: f64 = 38.0;
    for (layout, n) in [("grid", 3), ("speaker", 3), ("pip", 2)] {
        let ours = compose_layout(layout, n, 192, 108);
        let (reference, rects) = ffmpeg_reference(layout, n, 192, 108);
        let db = psnr_in(&ours, &reference, &rects);
        eprintln!("{layout}{n}: {db:.1} dB against ffmpeg");
        assert!(
            db >= MIN_PSNR_DB,
            "{layout}{n}: {db:.1} dB < {MIN_PSNR_DB} dB"
        );

        // The check can fail: the same composite with a tile shifted by 2 px, or with
        // chroma planes swapped, must fall below the bound.
        let mut shifted = ours.clone();
        let r = rects[0];
        for y in r.y as usize..(r.y + r.h) as usize {
            let row = y * shifted.width;
            shifted.y[row + r.x as usize..row + (r.x + r.w) as usize].rotate_left(2);
        }
        let mut swapped = ours.clone();
        std::mem::swap(&mut swapped.u, &mut swapped.v);
        for (what, bad) in [("shifted", &shifted), ("chroma-swapped", &swapped)] {
            let db = psnr_in(bad, &reference, &rects);
            eprintln!("{layout}{n} {what}: {db:.1} dB");
            assert!(
                db < MIN_PSNR_DB,
                "{layout}{n} {what} still scores {db:.1} dB"
            );
        }
    }
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
                look: Default::default(),
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
            look: Default::default(),
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

#[test]
fn content_is_fitted_whole_and_letterboxed() {
    use crate::compositor::scale::{contain_window, scale_contain};
    // A 4:3 picture with a white border in a 16:9 tile: pillarboxed, border kept.
    let (sw, sh) = (640, 480);
    let mut src = I420Frame::solid(sw, sh, rgb_to_yuv(0, 0, 255));
    for y in 0..sh {
        for x in 0..sw {
            if x < 8 || y < 8 || x >= sw - 8 || y >= sh - 8 {
                src.y[y * sw + x] = 235;
            }
        }
    }
    let mut tile = I420Frame::new(640, 360);
    render_tile_as(Some(&src), "Ada", Look::Content, &mut tile);
    let win = contain_window(sw, sh, 640, 360);
    assert_eq!((win.w, win.h, win.y), (480, 360, 0));
    assert_eq!(win.x, 80);
    // Bars either side, the picture between them with its border (nothing cut).
    assert_eq!(tile.pixel(10, 180), LETTERBOX);
    assert_eq!(tile.pixel(630, 180), LETTERBOX);
    assert!(tile.pixel(81, 180).0 > 200, "left border kept");
    assert!(tile.pixel(558, 180).0 > 200, "right border kept");
    assert!(tile.pixel(320, 1).0 > 200, "top border kept");
    assert!(tile.pixel(320, 358).0 > 200, "bottom border kept");
    let near = |a: (u8, u8, u8), b: (u8, u8, u8)| {
        a.0.abs_diff(b.0) <= 2 && a.1.abs_diff(b.1) <= 2 && a.2.abs_diff(b.2) <= 2
    };
    assert!(near(tile.pixel(320, 180), rgb_to_yuv(0, 0, 255)));
    // Same shape: no bars at all.
    let mut same = I420Frame::new(320, 240);
    scale_contain(&src, &mut same, LETTERBOX);
    assert!(same.pixel(1, 120).0 > 200 && same.pixel(318, 120).0 > 200);
    // Wider source: bars above and below.
    let wide = I420Frame::solid(1920, 1080, rgb_to_yuv(255, 0, 0));
    let mut square = I420Frame::new(400, 400);
    scale_contain(&wide, &mut square, LETTERBOX);
    assert_eq!(square.pixel(200, 10), LETTERBOX);
    assert!(near(square.pixel(200, 200), rgb_to_yuv(255, 0, 0)));
    assert_eq!(contain_window(1920, 1080, 400, 400).h, 224);
}

#[test]
fn the_speaker_mark_frames_a_camera_tile() {
    let cam = I420Frame::solid(320, 180, rgb_to_yuv(0, 200, 0));
    let mut plain = I420Frame::new(320, 180);
    let mut marked = I420Frame::new(320, 180);
    render_tile_as(Some(&cam), "", Look::Camera, &mut plain);
    render_tile_as(Some(&cam), "", Look::Speaker, &mut marked);
    assert_eq!(plain.pixel(0, 90), rgb_to_yuv(0, 200, 0));
    assert_ne!(marked.pixel(0, 90), rgb_to_yuv(0, 200, 0));
    assert_eq!(marked.pixel(160, 90), rgb_to_yuv(0, 200, 0));
}
