//! Pure tile geometry: counts and canvas sizes in, even-aligned rectangles out.

use super::{Corner, StripSide};
use serde::Serialize;

/// A tile rectangle in canvas pixels. `x`, `y`, `w`, `h` are always even.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    fn even(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self {
            x: x & !1,
            y: y & !1,
            w: (w & !1).max(2),
            h: (h & !1).max(2),
        }
    }
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
    pub fn inside(&self, width: u32, height: u32) -> bool {
        self.x + self.w <= width && self.y + self.h <= height
    }
    pub fn center(&self) -> (u32, u32) {
        (self.x + self.w / 2, self.y + self.h / 2)
    }
}

/// Columns and rows for `n` equal tiles: the most square arrangement that fits a 16:9-ish
/// canvas (cols ≥ rows).
pub fn grid_shape(n: usize) -> (u32, u32) {
    if n == 0 {
        return (0, 0);
    }
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    (cols, rows)
}

/// `count` equal cells in a `cols`×`rows` grid inside the area; a short last row is centred.
fn cells(count: usize, cols: u32, rows: u32, area: Rect, gap: u32, out: &mut Vec<Rect>) {
    if count == 0 {
        return;
    }
    let cw = (area.w.saturating_sub(gap * (cols - 1))) / cols;
    let ch = (area.h.saturating_sub(gap * (rows - 1))) / rows;
    for i in 0..count as u32 {
        let (r, c) = (i / cols, i % cols);
        let in_row = if r == rows - 1 {
            count as u32 - r * cols
        } else {
            cols
        };
        let row_w = in_row * cw + gap * (in_row - 1);
        let x0 = area.x + (area.w - row_w) / 2;
        out.push(Rect::even(
            x0 + c * (cw + gap),
            area.y + r * (ch + gap),
            cw,
            ch,
        ));
    }
}

/// Appends the rectangles of an `n`-tile grid to `out`.
pub fn grid(n: usize, width: u32, height: u32, gap: u32, out: &mut Vec<Rect>) {
    grid_of(n, 0, width, height, gap, out)
}

/// `n` tiles in the cells of a grid shaped for at least `min_cells` (rows filled first,
/// a short last row centred).
pub fn grid_of(n: usize, min_cells: usize, width: u32, height: u32, gap: u32, out: &mut Vec<Rect>) {
    let (cols, rows) = grid_shape(n.max(min_cells));
    let area = Rect {
        x: 0,
        y: 0,
        w: width,
        h: height,
    };
    cells(n, cols, rows, area, gap, out)
}

pub fn focus(
    n: usize,
    width: u32,
    height: u32,
    side: StripSide,
    fraction: f32,
    gap: u32,
    out: &mut Vec<Rect>,
) {
    if n <= 1 {
        return grid(n, width, height, 0, out);
    }
    let others = (n - 1) as u32;
    let horizontal = matches!(side, StripSide::Bottom | StripSide::Top);
    let strip_len = if horizontal { height } else { width };
    let strip = ((strip_len as f32 * fraction) as u32) & !1;
    let (main, strip_area) = match side {
        StripSide::Bottom => (
            Rect {
                x: 0,
                y: 0,
                w: width,
                h: height - strip - gap,
            },
            Rect {
                x: 0,
                y: height - strip,
                w: width,
                h: strip,
            },
        ),
        StripSide::Top => (
            Rect {
                x: 0,
                y: strip + gap,
                w: width,
                h: height - strip - gap,
            },
            Rect {
                x: 0,
                y: 0,
                w: width,
                h: strip,
            },
        ),
        StripSide::Right => (
            Rect {
                x: 0,
                y: 0,
                w: width - strip - gap,
                h: height,
            },
            Rect {
                x: width - strip,
                y: 0,
                w: strip,
                h: height,
            },
        ),
        StripSide::Left => (
            Rect {
                x: strip + gap,
                y: 0,
                w: width - strip - gap,
                h: height,
            },
            Rect {
                x: 0,
                y: 0,
                w: strip,
                h: height,
            },
        ),
    };
    out.push(Rect::even(main.x, main.y, main.w, main.h));
    // Strip tiles keep a 16:9 shape where they can, centred along the strip.
    let (cols, rows) = if horizontal { (others, 1) } else { (1, others) };
    let (mut area, tile_w, tile_h);
    if horizontal {
        tile_h = strip_area.h;
        tile_w = (tile_h * 16 / 9).min((strip_area.w.saturating_sub(gap * (others - 1))) / others);
        let total = tile_w * others + gap * (others - 1);
        area = Rect {
            x: (strip_area.w - total) / 2,
            y: strip_area.y,
            w: total,
            h: tile_h,
        };
    } else {
        tile_w = strip_area.w;
        tile_h = (tile_w * 9 / 16).min((strip_area.h.saturating_sub(gap * (others - 1))) / others);
        let total = tile_h * others + gap * (others - 1);
        area = Rect {
            x: strip_area.x,
            y: (strip_area.h - total) / 2,
            w: tile_w,
            h: total,
        };
    }
    area.w = area.w.max(2);
    cells(others as usize, cols, rows, area, gap, out);
}

pub fn pip(
    n: usize,
    width: u32,
    height: u32,
    corner: Corner,
    fraction: f32,
    margin: u32,
    out: &mut Vec<Rect>,
) {
    if n == 0 {
        return;
    }
    out.push(Rect::even(0, 0, width, height));
    let iw = ((width as f32 * fraction) as u32) & !1;
    let ih = (iw * 9 / 16) & !1;
    for i in 0..(n - 1) as u32 {
        // Insets stack away from the corner along the vertical edge.
        let step = i * (ih + margin);
        let x = match corner {
            Corner::TopLeft | Corner::BottomLeft => margin,
            _ => width - margin - iw,
        };
        let y = match corner {
            Corner::TopLeft | Corner::TopRight => margin + step,
            _ => height.saturating_sub(margin + ih + step),
        };
        out.push(Rect::even(x, y, iw, ih));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LayoutKind, LayoutSet};
    use super::*;

    const CANVASES: [(u32, u32); 3] = [(1280, 720), (640, 360), (320, 180)];

    #[test]
    fn every_layout_keeps_tiles_inside_and_apart_for_1_to_16() {
        let set = LayoutSet::builtin();
        for name in set.names() {
            let spec = set.get(&name).unwrap();
            for (w, h) in CANVASES {
                for n in 1..=16 {
                    let rects = spec.place(n, w, h);
                    assert_eq!(rects.len(), n.min(spec.capacity()), "{name} n={n}");
                    for r in &rects {
                        assert!(r.inside(w, h), "{name} n={n} {w}x{h}: {r:?} outside");
                        assert!(r.w >= 2 && r.h >= 2);
                        assert!(r.x % 2 == 0 && r.y % 2 == 0 && r.w % 2 == 0 && r.h % 2 == 0);
                    }
                    // Pip draws insets over the main tile by design; insets never overlap.
                    let skip = if matches!(spec.kind, LayoutKind::Pip { .. }) {
                        1
                    } else {
                        0
                    };
                    for (i, a) in rects.iter().enumerate().skip(skip) {
                        for b in rects.iter().skip(i + 1) {
                            assert!(!a.overlaps(b), "{name} n={n} {w}x{h}: {a:?} overlaps {b:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn presentation_gives_content_the_room_and_drops_cameras_on_small_canvases() {
        let set = LayoutSet::builtin();
        let spec = set.get("presentation").unwrap();
        let mut r = Vec::new();
        for (w, h) in CANVASES {
            for n in 1..=8 {
                spec.place_with_content(n, true, w, h, &mut r);
                for x in &r {
                    assert!(x.inside(w, h) && x.w % 2 == 0 && x.x % 2 == 0, "{x:?}");
                }
                for (i, a) in r.iter().enumerate() {
                    for b in r.iter().skip(i + 1) {
                        assert!(!a.overlaps(b), "n={n} {w}x{h}: {a:?} overlaps {b:?}");
                    }
                }
                let content = r[0];
                if w < 480 {
                    // Content alone, full frame: the cameras are dropped first.
                    assert_eq!(r, vec![Rect { x: 0, y: 0, w, h }], "n={n} {w}x{h}");
                } else {
                    assert_eq!(r.len(), n.min(spec.capacity()));
                    // The content area has the canvas' width and most of its height.
                    assert_eq!(content.w, w);
                    assert!(content.h * 10 >= h * 7, "{content:?}");
                    for cam in &r[1..] {
                        assert!(cam.w * cam.h * 8 <= content.w * content.h);
                    }
                }
            }
        }
        // No presentation: a grid of the cameras.
        spec.place_with_content(4, false, 1280, 720, &mut r);
        let mut g = Vec::new();
        grid(4, 1280, 720, 4, &mut g);
        assert_eq!(r, g);
    }

    #[test]
    fn grid_shapes() {
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(2), (2, 1));
        assert_eq!(grid_shape(3), (2, 2));
        assert_eq!(grid_shape(5), (3, 2));
        assert_eq!(grid_shape(9), (3, 3));
        assert_eq!(grid_shape(10), (4, 3));
        assert_eq!(grid_shape(16), (4, 4));
    }

    #[test]
    fn one_tile_fills_the_canvas() {
        let set = LayoutSet::builtin();
        for name in set.names() {
            let r = set.get(&name).unwrap().place(1, 1280, 720);
            assert_eq!(
                r,
                vec![Rect {
                    x: 0,
                    y: 0,
                    w: 1280,
                    h: 720
                }],
                "{name}"
            );
        }
    }

    #[test]
    fn two_tiles_side_by_side_in_grid() {
        let mut r = Vec::new();
        grid(2, 1280, 720, 4, &mut r);
        assert_eq!(r[0].y, r[1].y);
        assert!(r[0].x < r[1].x);
    }
}
