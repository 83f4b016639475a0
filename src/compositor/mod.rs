//! The compositor: turns decoded participant pictures into per-viewer I420 canvases.
//!
//! Two stages, both data-parallel with rayon:
//! 1. **Tiles** — each (participant, tile size) pair that any output needs is rendered once
//!    (scaled with crop-to-fill, name label drawn, or a placeholder when there is no video)
//!    and cached until the participant's picture changes. Every output that shows that
//!    participant at that size shares the same tile.
//! 2. **Canvases** — each output canvas is filled and the shared tiles are copied in.
//!
//! Aspect ratio: camera tiles **crop** (cover) — the source is cut to the tile's shape,
//! never stretched and never letterboxed. Content tiles (a shared screen) are **fitted**
//! (contain): scaled whole into the tile and letterboxed, so no text is cut off.

pub mod scale;
pub mod text;

use crate::ids::ParticipantId;
use crate::layout::Rect;
use crate::media::I420Frame;
use rayon::prelude::*;

/// Canvas background (dark grey).
pub const BACKGROUND: (u8, u8, u8) = (24, 128, 128);
/// Placeholder tile colour (slate).
const PLACEHOLDER: (u8, u8, u8) = (52, 136, 124);

/// Letterbox around fitted content (black).
pub const LETTERBOX: (u8, u8, u8) = (16, 128, 128);
/// The active speaker's frame in presentation layouts (amber).
const SPEAKER_MARK: (u8, u8, u8) = (170, 44, 180);

/// How a tile shows its source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Look {
    /// A camera: cropped to fill, name label (placeholder with initials without video).
    #[default]
    Camera,
    /// A camera marked as the active speaker (a coloured frame around it).
    Speaker,
    /// A participant's content (shared screen): fitted whole and letterboxed, no label.
    Content,
}

/// Renders one camera tile: the scaled picture (or a placeholder) with the name label.
pub fn render_tile(src: Option<&I420Frame>, name: &str, out: &mut I420Frame) {
    render_tile_as(src, name, Look::Camera, out)
}

/// Renders one tile the way `look` says.
pub fn render_tile_as(src: Option<&I420Frame>, name: &str, look: Look, out: &mut I420Frame) {
    let picture = src.filter(|f| f.width >= 2 && f.height >= 2);
    match (look, picture) {
        (Look::Content, Some(frame)) => scale::scale_contain(frame, out, LETTERBOX),
        (Look::Content, None) => out.fill(LETTERBOX),
        (_, Some(frame)) => scale::scale_cover(frame, out),
        (_, None) => placeholder(name, out),
    }
    if look != Look::Content {
        text::draw_label(out, name);
    }
    if look == Look::Speaker {
        frame_border(out, (out.height / 60).clamp(2, 8) & !1, SPEAKER_MARK);
    }
}

/// Paints a `t`-pixel border (even) around `f`.
fn frame_border(f: &mut I420Frame, t: usize, (y, u, v): (u8, u8, u8)) {
    let (w, h) = (f.width, f.height);
    if t == 0 || 2 * t >= w || 2 * t >= h {
        return;
    }
    for row in 0..h {
        let line = &mut f.y[row * w..(row + 1) * w];
        if row < t || row >= h - t {
            line.fill(y);
        } else {
            line[..t].fill(y);
            line[w - t..].fill(y);
        }
    }
    let (cw, ch, ct) = (f.chroma_width(), f.chroma_height(), t / 2);
    for plane in [(&mut f.u, u), (&mut f.v, v)] {
        let (p, val) = plane;
        for row in 0..ch {
            let line = &mut p[row * cw..(row + 1) * cw];
            if row < ct || row >= ch - ct {
                line.fill(val);
            } else {
                line[..ct].fill(val);
                line[cw - ct..].fill(val);
            }
        }
    }
}

/// A tile for someone without (or with muted) video: slate background, initials centred.
pub fn placeholder(name: &str, out: &mut I420Frame) {
    out.fill(PLACEHOLDER);
    let initials: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(|c| c.to_uppercase())
        .collect();
    let initials = if initials.is_empty() {
        "?".to_owned()
    } else {
        initials
    };
    let scale = (out.height / 48).clamp(1, 12);
    let w = text::text_width(&initials, scale);
    let h = 8 * scale;
    if w < out.width && h < out.height {
        text::draw_text(
            out,
            (out.width - w) / 2,
            (out.height - h) / 2,
            scale,
            &initials,
            220,
        );
    }
}

/// Copies `tile` into `canvas` at (x, y), clipped to the canvas. Coordinates are even.
pub fn blit(canvas: &mut I420Frame, tile: &I420Frame, x: usize, y: usize) {
    let w = tile.width.min(canvas.width.saturating_sub(x));
    let h = tile.height.min(canvas.height.saturating_sub(y));
    for row in 0..h {
        let d = (y + row) * canvas.width + x;
        canvas.y[d..d + w].copy_from_slice(&tile.y[row * tile.width..row * tile.width + w]);
    }
    let (ccw, tcw) = (canvas.chroma_width(), tile.chroma_width());
    let (cx, cy, cw, ch) = (x / 2, y / 2, w.div_ceil(2), h.div_ceil(2));
    for row in 0..ch {
        let d = (cy + row) * ccw + cx;
        let s = row * tcw;
        canvas.u[d..d + cw].copy_from_slice(&tile.u[s..s + cw]);
        canvas.v[d..d + cw].copy_from_slice(&tile.v[s..s + cw]);
    }
}

/// Fills `canvas` with the background and draws `tiles` in order.
pub fn compose(canvas: &mut I420Frame, tiles: &[(Rect, &I420Frame)]) {
    compose_iter(canvas, tiles.iter().map(|(r, t)| (*r, *t)));
}

/// `compose` from an iterator (the media loop's form: no list to build).
pub fn compose_iter<'a>(
    canvas: &mut I420Frame,
    tiles: impl IntoIterator<Item = (Rect, &'a I420Frame)>,
) {
    canvas.fill(BACKGROUND);
    for (r, t) in tiles {
        blit(canvas, t, r.x as usize, r.y as usize);
    }
}

/// What a tile shows: a participant's picture version (bumped on every new decoded frame,
/// on mute and on rename) so unchanged tiles are not re-rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileKey {
    pub participant: ParticipantId,
    pub w: u32,
    pub h: u32,
    /// Camera, marked speaker or content: each is its own tile.
    pub look: Look,
}

struct CachedTile {
    key: TileKey,
    version: u64,
    used: bool,
    /// To be rendered this call, from this need's source.
    dirty: Option<usize>,
    frame: I420Frame,
}

/// Rendered tiles shared by all outputs, keyed by participant and size. Kept in a vector
/// that lives as long as the room: once the tiles exist, preparing a tick allocates
/// nothing (a new tile size allocates its frame once).
#[derive(Default)]
pub struct TileCache {
    tiles: Vec<CachedTile>,
}

/// One tile the current tick needs.
pub struct TileJob<'a> {
    pub key: TileKey,
    pub version: u64,
    pub source: Option<&'a I420Frame>,
    pub name: &'a str,
}

/// One tile the current tick needs, its picture and name found through `source` (an index
/// the caller resolves), so the caller can keep its list of needs from tick to tick.
#[derive(Clone, Copy, Debug)]
pub struct TileNeed {
    pub key: TileKey,
    pub version: u64,
    pub source: usize,
}

impl TileCache {
    /// Renders (in parallel) every job whose tile is missing or stale, and drops tiles no
    /// job asked for. Returns how many tiles were rendered.
    pub fn prepare(&mut self, jobs: &[TileJob<'_>]) -> usize {
        self.prepare_timed(jobs, &std::sync::atomic::AtomicU64::new(0))
    }

    /// `prepare`, adding the rendering threads' CPU time to `cpu_ns`.
    pub fn prepare_timed(
        &mut self,
        jobs: &[TileJob<'_>],
        cpu_ns: &std::sync::atomic::AtomicU64,
    ) -> usize {
        let needs: Vec<TileNeed> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| TileNeed {
                key: j.key,
                version: j.version,
                source: i,
            })
            .collect();
        self.prepare_needs(&needs, |i| (jobs[i].source, jobs[i].name), cpu_ns)
    }

    /// Renders (in parallel) every needed tile that is missing or stale, drops tiles no
    /// need asked for, and adds the rendering CPU time to `cpu_ns`. `source(i)` gives the
    /// picture (`None`: placeholder) and name for a need's `source` index. Returns how
    /// many tiles were rendered.
    pub fn prepare_needs<'a, F>(
        &mut self,
        needs: &[TileNeed],
        source: F,
        cpu_ns: &std::sync::atomic::AtomicU64,
    ) -> usize
    where
        F: Fn(usize) -> (Option<&'a I420Frame>, &'a str) + Sync,
    {
        for t in &mut self.tiles {
            t.used = false;
            t.dirty = None;
        }
        let mut rendered = 0;
        for n in needs {
            match self.tiles.iter_mut().find(|t| t.key == n.key) {
                Some(t) if t.used => {} // asked twice this call
                Some(t) => {
                    t.used = true;
                    if t.version != n.version {
                        t.version = n.version;
                        t.dirty = Some(n.source);
                        rendered += 1;
                    }
                }
                None => {
                    self.tiles.push(CachedTile {
                        key: n.key,
                        version: n.version,
                        used: true,
                        dirty: Some(n.source),
                        frame: I420Frame::new(n.key.w as usize, n.key.h as usize),
                    });
                    rendered += 1;
                }
            }
        }
        self.tiles.retain(|t| t.used);
        self.tiles.par_iter_mut().for_each(|t| {
            if let Some(i) = t.dirty {
                let (src, name) = source(i);
                let look = t.key.look;
                crate::metrics::timed(cpu_ns, || render_tile_as(src, name, look, &mut t.frame));
            }
        });
        rendered
    }

    /// The picture version a cached tile was rendered from.
    pub fn version(&self, key: &TileKey) -> Option<u64> {
        self.tiles.iter().find(|t| t.key == *key).map(|t| t.version)
    }

    pub fn get(&self, key: &TileKey) -> Option<&I420Frame> {
        self.tiles.iter().find(|t| t.key == *key).map(|t| &t.frame)
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }
}

#[cfg(test)]
mod tests;
