//! Name labels drawn into I420 with an 8×8 bitmap font compiled into the binary
//! (`font8x8`, public domain), scaled by an integer factor. Only luma carries the glyph;
//! the label's backing box is a darkened, desaturated band so text reads on any video.

use crate::media::I420Frame;
use font8x8::UnicodeFonts;

/// Glyph bitmap for a character (Latin-1 supported; anything else draws as '?').
fn glyph(c: char) -> [u8; 8] {
    font8x8::BASIC_FONTS
        .get(c)
        .or_else(|| font8x8::LATIN_FONTS.get(c))
        .or_else(|| font8x8::BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 8 * scale
}

/// Draws `text` with its top-left at (x, y), clipped to the frame, luma value `luma`.
pub fn draw_text(frame: &mut I420Frame, x: usize, y: usize, scale: usize, text: &str, luma: u8) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        let gx = x + i * 8 * scale;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    let py = y + row * scale + dy;
                    if py >= frame.height {
                        break;
                    }
                    for dx in 0..scale {
                        let px = gx + col * scale + dx;
                        if px < frame.width {
                            frame.y[py * frame.width + px] = luma;
                        }
                    }
                }
            }
        }
    }
}

/// Darkens a rectangle (luma halved, chroma pulled to grey) as a label background.
pub fn shade_box(frame: &mut I420Frame, x: usize, y: usize, w: usize, h: usize) {
    let x1 = (x + w).min(frame.width);
    let y1 = (y + h).min(frame.height);
    for py in y..y1 {
        for v in &mut frame.y[py * frame.width + x..py * frame.width + x1] {
            *v = 16 + (*v).saturating_sub(16) / 3;
        }
    }
    let cw = frame.chroma_width();
    for py in y / 2..y1.div_ceil(2) {
        for px in x / 2..x1.div_ceil(2) {
            let i = py * cw + px;
            frame.u[i] = ((frame.u[i] as u16 + 128 * 3) / 4) as u8;
            frame.v[i] = ((frame.v[i] as u16 + 128 * 3) / 4) as u8;
        }
    }
}

/// Integer text scale that suits a tile of height `h`.
pub fn label_scale(h: usize) -> usize {
    (h / 180).clamp(1, 3)
}

/// Draws a name label in the bottom-left corner of a tile.
pub fn draw_label(tile: &mut I420Frame, name: &str) {
    let scale = label_scale(tile.height);
    let pad = 4 * scale;
    let max_chars = tile.width.saturating_sub(2 * pad) / (8 * scale);
    if max_chars == 0 {
        return;
    }
    let end = name
        .char_indices()
        .nth(max_chars)
        .map_or(name.len(), |(i, _)| i);
    let shown = &name[..end];
    let w = text_width(shown, scale) + 2 * pad;
    let h = 8 * scale + 2 * pad;
    if h >= tile.height {
        return;
    }
    let y = tile.height - h;
    shade_box(tile, 0, y, w.min(tile.width), h);
    draw_text(tile, pad, y + pad, scale, shown, 235);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_draws_white_text_on_a_dark_band_inside_the_tile() {
        let mut f = I420Frame::solid(200, 120, (180, 128, 128));
        draw_label(&mut f, "Ada");
        let bright = f.y.iter().filter(|&&v| v == 235).count();
        assert!(bright > 20, "glyph pixels drawn: {bright}");
        // The top half is untouched.
        assert!(f.y[..200 * 60].iter().all(|&v| v == 180));
        // The band is darker than the background.
        assert!(f.y[(120 - 2) * 200 + 1] < 100);
    }

    #[test]
    fn long_names_are_clipped_and_unknown_chars_do_not_panic() {
        let mut f = I420Frame::solid(40, 40, (100, 128, 128));
        draw_label(&mut f, "ドイツ語の名前 with a very long tail");
        let mut tiny = I420Frame::solid(4, 4, (100, 128, 128));
        draw_label(&mut tiny, "x");
    }
}
