//! An owned I420 (YUV 4:2:0 planar) picture. Every decoder writes into one, the compositor
//! reads from them and writes a canvas, and the encoder reads the canvas. Buffers are
//! reused: `resize` only reallocates when a frame grows.

/// Tightly packed I420: Y is `width*height`, U and V are `ceil(w/2)*ceil(h/2)` each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct I420Frame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl I420Frame {
    pub fn new(width: usize, height: usize) -> Self {
        let mut f = Self::default();
        f.resize(width, height);
        f
    }

    /// A frame filled with one colour given in YUV.
    pub fn solid(width: usize, height: usize, yuv: (u8, u8, u8)) -> Self {
        let mut f = Self::new(width, height);
        f.fill(yuv);
        f
    }

    pub fn chroma_width(&self) -> usize {
        self.width.div_ceil(2)
    }
    pub fn chroma_height(&self) -> usize {
        self.height.div_ceil(2)
    }

    /// Changes the dimensions, keeping allocations when they are big enough.
    pub fn resize(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        self.y.resize(width * height, 0);
        self.u.resize(cw * ch, 128);
        self.v.resize(cw * ch, 128);
    }

    pub fn fill(&mut self, (y, u, v): (u8, u8, u8)) {
        self.y.fill(y);
        self.u.fill(u);
        self.v.fill(v);
    }

    /// Copies planes with arbitrary strides (as decoders hand them out) into this frame.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_from_planes(
        &mut self,
        width: usize,
        height: usize,
        y: &[u8],
        y_stride: usize,
        u: &[u8],
        u_stride: usize,
        v: &[u8],
        v_stride: usize,
    ) {
        self.resize(width, height);
        copy_plane(y, y_stride, &mut self.y, width, width, height);
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        copy_plane(u, u_stride, &mut self.u, cw, cw, ch);
        copy_plane(v, v_stride, &mut self.v, cw, cw, ch);
    }

    /// The YUV value at a luma position (chroma sampled at the co-sited 2x2 block).
    pub fn pixel(&self, x: usize, y: usize) -> (u8, u8, u8) {
        let cw = self.chroma_width();
        (
            self.y[y * self.width + x],
            self.u[(y / 2) * cw + x / 2],
            self.v[(y / 2) * cw + x / 2],
        )
    }

    /// Mean YUV over a rectangle (used by tests and by content checks).
    pub fn mean_yuv(&self, x0: usize, y0: usize, w: usize, h: usize) -> (f64, f64, f64) {
        let (mut sy, mut su, mut sv) = (0u64, 0u64, 0u64);
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let (a, b, c) = self.pixel(x, y);
                sy += a as u64;
                su += b as u64;
                sv += c as u64;
            }
        }
        let n = (w * h).max(1) as f64;
        (sy as f64 / n, su as f64 / n, sv as f64 / n)
    }
}

fn copy_plane(
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    w: usize,
    h: usize,
) {
    for row in 0..h {
        let s = row * src_stride;
        let d = row * dst_stride;
        if s + w <= src.len() && d + w <= dst.len() {
            dst[d..d + w].copy_from_slice(&src[s..s + w]);
        }
    }
}

impl openh264::formats::YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        let cw = self.chroma_width();
        (self.width, cw, cw)
    }
    fn y(&self) -> &[u8] {
        &self.y
    }
    fn u(&self) -> &[u8] {
        &self.u
    }
    fn v(&self) -> &[u8] {
        &self.v
    }
}

/// BT.601 limited-range RGB → YUV, for colours given by users and tests.
pub fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    (y.round() as u8, u.round() as u8, v.round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_from_strided_planes() {
        let y: Vec<u8> = (0..8 * 2).map(|i| i as u8).collect(); // stride 8, width 4
        let u = vec![7u8; 4 * 1];
        let v = vec![9u8; 4 * 1];
        let mut f = I420Frame::default();
        f.copy_from_planes(4, 2, &y, 8, &u, 4, &v, 4);
        assert_eq!(f.y, vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(f.u, vec![7, 7]);
        assert_eq!(f.pixel(3, 1), (11, 7, 9));
    }

    #[test]
    fn odd_sizes_round_chroma_up() {
        let f = I420Frame::new(5, 3);
        assert_eq!((f.chroma_width(), f.chroma_height()), (3, 2));
        assert_eq!(f.u.len(), 6);
    }
}

/// BT.601 limited-range I420 → packed RGB (for PNG snapshots and golden images).
pub fn yuv_to_rgb(f: &I420Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.width * f.height * 3);
    for y in 0..f.height {
        for x in 0..f.width {
            let (yy, u, v) = f.pixel(x, y);
            let c = 1.164 * (yy as f32 - 16.0);
            let d = u as f32 - 128.0;
            let e = v as f32 - 128.0;
            out.push((c + 1.596 * e).round().clamp(0.0, 255.0) as u8);
            out.push((c - 0.392 * d - 0.813 * e).round().clamp(0.0, 255.0) as u8);
            out.push((c + 2.017 * d).round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}
