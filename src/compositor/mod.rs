//! The compositor: turns decoded participant pictures into per-viewer I420 canvases.
//!
//! Two stages, both data-parallel with rayon:
//! 1. **Tiles** — each (participant, tile size) pair that any output needs is rendered once
//!    (scaled with crop-to-fill, name label drawn, or a placeholder when there is no video)
//!    and cached until the participant's picture changes. Every output that shows that
//!    participant at that size shares the same tile.
//! 2. **Canvases** — each output canvas is filled and the shared tiles are copied in.
//!
//! Aspect ratio: tiles **crop** (cover) — the source is cut to the tile's shape, never
//! stretched and never letterboxed.

pub mod scale;
pub mod text;

use crate::ids::ParticipantId;
use crate::layout::Rect;
use crate::media::I420Frame;
use rayon::prelude::*;
use std::collections::HashMap;

/// Canvas background (dark grey).
pub const BACKGROUND: (u8, u8, u8) = (24, 128, 128);
/// Placeholder tile colour (slate).
const PLACEHOLDER: (u8, u8, u8) = (52, 136, 124);

/// Renders one tile: the scaled picture (or a placeholder) with the name label.
pub fn render_tile(src: Option<&I420Frame>, name: &str, out: &mut I420Frame) {
    match src {
        Some(frame) if frame.width >= 2 && frame.height >= 2 => scale::scale_cover(frame, out),
        _ => placeholder(name, out),
    }
    text::draw_label(out, name);
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
}

struct CachedTile {
    version: u64,
    used: bool,
    frame: I420Frame,
}

/// Rendered tiles shared by all outputs, keyed by participant and size.
#[derive(Default)]
pub struct TileCache {
    tiles: HashMap<TileKey, CachedTile>,
}

/// One tile the current tick needs.
pub struct TileJob<'a> {
    pub key: TileKey,
    pub version: u64,
    pub source: Option<&'a I420Frame>,
    pub name: &'a str,
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
        for t in self.tiles.values_mut() {
            t.used = false;
        }
        let mut stale: Vec<(&TileJob<'_>, CachedTile)> = Vec::new();
        for job in jobs {
            match self.tiles.get_mut(&job.key) {
                Some(t) if t.version == job.version => t.used = true,
                _ => {
                    // Reuse the old buffer when there is one.
                    let frame = self
                        .tiles
                        .remove(&job.key)
                        .map(|t| t.frame)
                        .unwrap_or_else(|| I420Frame::new(job.key.w as usize, job.key.h as usize));
                    if !stale.iter().any(|(j, _)| j.key == job.key) {
                        stale.push((
                            job,
                            CachedTile {
                                version: job.version,
                                used: true,
                                frame,
                            },
                        ));
                    }
                }
            }
        }
        let rendered = stale.len();
        stale.par_iter_mut().for_each(|(job, tile)| {
            crate::metrics::timed(cpu_ns, || {
                render_tile(job.source, job.name, &mut tile.frame)
            });
        });
        for (job, tile) in stale {
            self.tiles.insert(job.key, tile);
        }
        self.tiles.retain(|_, t| t.used);
        rendered
    }

    pub fn get(&self, key: &TileKey) -> Option<&I420Frame> {
        self.tiles.get(key).map(|t| &t.frame)
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
