//! Layouts as data. A layout file (`layouts/*.json`) names a placement rule and its
//! parameters; `LayoutSpec::place` turns "n tiles on a w×h canvas" into pixel rectangles.
//! Files are validated at load: a bad file is rejected with its path and the offending
//! field, never half-applied. See `docs/layouts.md`.

mod geometry;

pub use geometry::Rect;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One layout definition, as written in a layout file.
// Unknown keys are rejected by `LayoutKind` (serde cannot deny them on a struct that
// flattens another).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayoutSpec {
    /// Unique name clients use to select it (`[a-z0-9-]+`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Whose picture is whose: `personal` (default: everyone sees the others, not
    /// themself — one picture per viewer) or `shared` (everyone, self included, sees the
    /// same picture — one encode per rung of the ladder whatever the room's size).
    #[serde(default)]
    pub canvas: Canvas,
    #[serde(flatten)]
    pub kind: LayoutKind,
}

/// See [`LayoutSpec::canvas`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Canvas {
    #[default]
    Personal,
    Shared,
}

/// The placement rule and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayoutKind {
    /// Equal tiles, rows×columns picked from the count.
    Grid {
        #[serde(default = "default_gap")]
        gap: u32,
        #[serde(default = "default_max_tiles")]
        max_tiles: u32,
        /// The grid has room for at least this many (a gallery whose tiles keep their
        /// size as people join); 0: exactly as many as shown.
        #[serde(default)]
        min_cells: u32,
    },
    /// One large tile (the focus, usually the active speaker) plus a strip of small ones.
    Focus {
        #[serde(default)]
        strip: StripSide,
        #[serde(default = "default_strip_fraction")]
        strip_fraction: f32,
        #[serde(default = "default_max_strip")]
        max_strip: u32,
        #[serde(default = "default_gap")]
        gap: u32,
    },
    /// Someone's content (a shared screen) large, letterboxed so nothing is cut, the
    /// cameras in a strip — the presenter's first, the active speaker marked. Below
    /// `content_only_below` pixels of canvas width the content fills the picture alone
    /// (the cameras are dropped first, so a small picture keeps the content legible).
    /// Without a presentation it is a grid of the cameras.
    Presentation {
        #[serde(default)]
        strip: StripSide,
        #[serde(default = "default_strip_fraction")]
        strip_fraction: f32,
        #[serde(default = "default_max_strip")]
        max_strip: u32,
        #[serde(default = "default_gap")]
        gap: u32,
        #[serde(default = "default_content_only_below")]
        content_only_below: u32,
    },
    /// The focus full frame, the others as insets in a corner, drawn on top.
    Pip {
        #[serde(default)]
        corner: Corner,
        #[serde(default = "default_inset_fraction")]
        inset_fraction: f32,
        #[serde(default = "default_margin")]
        margin: u32,
        #[serde(default = "default_max_insets")]
        max_insets: u32,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StripSide {
    #[default]
    Bottom,
    Top,
    Left,
    Right,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    #[default]
    BottomRight,
}

fn default_gap() -> u32 {
    4
}
fn default_max_tiles() -> u32 {
    16
}
fn default_strip_fraction() -> f32 {
    0.2
}
fn default_max_strip() -> u32 {
    6
}
fn default_content_only_below() -> u32 {
    480
}
fn default_inset_fraction() -> f32 {
    0.25
}
fn default_margin() -> u32 {
    16
}
fn default_max_insets() -> u32 {
    3
}

/// The strip parameters `focus` and `presentation` share: the offending field and why.
fn check_strip(
    fraction: f32,
    max_strip: u32,
    gap: u32,
) -> Result<(), (&'static str, &'static str)> {
    if !(0.05..=0.5).contains(&fraction) {
        return Err(("strip_fraction", "must be between 0.05 and 0.5"));
    }
    if !(1..=16).contains(&max_strip) {
        return Err(("max_strip", "must be between 1 and 16"));
    }
    if gap > 64 {
        return Err(("gap", "must be between 0 and 64 pixels"));
    }
    Ok(())
}

/// Why a layout file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Invalid {
        file: String,
        field: &'static str,
        message: String,
    },
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: layout name `{name}` is already defined by another file")]
    Duplicate { file: String, name: String },
}

impl LayoutSpec {
    /// Parses and validates one layout file's text; `file` names it in errors.
    pub fn from_json(file: &str, text: &str) -> Result<Self, LayoutError> {
        let spec: LayoutSpec = serde_json::from_str(text).map_err(|e| LayoutError::Parse {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        spec.validate(file)?;
        Ok(spec)
    }

    fn validate(&self, file: &str) -> Result<(), LayoutError> {
        let bad = |field: &'static str, message: &str| {
            Err(LayoutError::Invalid {
                file: file.to_owned(),
                field,
                message: message.to_owned(),
            })
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return bad("name", "must be 1 to 32 characters of a-z, 0-9 or '-'");
        }
        match self.kind {
            LayoutKind::Grid {
                gap,
                max_tiles,
                min_cells,
            } => {
                if gap > 64 {
                    return bad("gap", "must be between 0 and 64 pixels");
                }
                if !(1..=64).contains(&max_tiles) {
                    return bad("max_tiles", "must be between 1 and 64");
                }
                if min_cells > max_tiles {
                    return bad("min_cells", "must be between 0 and max_tiles");
                }
            }
            LayoutKind::Focus {
                strip_fraction,
                max_strip,
                gap,
                ..
            } => check_strip(strip_fraction, max_strip, gap).or_else(|(f, m)| bad(f, m))?,
            LayoutKind::Presentation {
                strip_fraction,
                max_strip,
                gap,
                content_only_below,
                ..
            } => {
                check_strip(strip_fraction, max_strip, gap).or_else(|(f, m)| bad(f, m))?;
                if content_only_below > 3840 {
                    return bad("content_only_below", "must be between 0 and 3840 pixels");
                }
            }
            LayoutKind::Pip {
                inset_fraction,
                margin,
                max_insets,
                ..
            } => {
                if !(0.1..=0.5).contains(&inset_fraction) {
                    return bad("inset_fraction", "must be between 0.1 and 0.5");
                }
                if margin > 128 {
                    return bad("margin", "must be between 0 and 128 pixels");
                }
                if !(1..=8).contains(&max_insets) {
                    return bad("max_insets", "must be between 1 and 8");
                }
            }
        }
        Ok(())
    }

    /// The most tiles this layout shows (beyond it, later participants are not shown).
    pub fn capacity(&self) -> usize {
        match self.kind {
            LayoutKind::Grid { max_tiles, .. } => max_tiles as usize,
            LayoutKind::Focus { max_strip, .. } => 1 + max_strip as usize,
            LayoutKind::Presentation { max_strip, .. } => 1 + max_strip as usize,
            LayoutKind::Pip { max_insets, .. } => 1 + max_insets as usize,
        }
    }

    /// Rectangles for `n` tiles on a `width`×`height` canvas, in drawing order. Tile 0 is
    /// the focus for `focus` and `pip`. Returns `min(n, capacity)` rectangles, all inside
    /// the canvas, with even coordinates and sizes (I420 chroma alignment).
    pub fn place(&self, n: usize, width: u32, height: u32) -> Vec<Rect> {
        let mut out = Vec::new();
        self.place_into(n, width, height, &mut out);
        out
    }

    /// `place` into a reused vector (cleared first): the media loop's allocation-free form.
    pub fn place_into(&self, n: usize, width: u32, height: u32, out: &mut Vec<Rect>) {
        self.place_with_content(n, false, width, height, out)
    }

    /// Rectangles for `n` tiles, tile 0 being a presentation's content when `content`
    /// (into `out`, cleared first). Every layout shows content as its tile 0 (the focus of
    /// `focus` and `pip`, the first cell of a grid); the `presentation` layout gives it
    /// the room it needs, or the whole canvas below its `content_only_below` width.
    pub fn place_with_content(
        &self,
        n: usize,
        content: bool,
        width: u32,
        height: u32,
        out: &mut Vec<Rect>,
    ) {
        out.clear();
        let n = n.min(self.capacity());
        match self.kind {
            LayoutKind::Presentation {
                content_only_below, ..
            } if content && width < content_only_below => {
                geometry::grid(n.min(1), width, height, 0, out)
            }
            LayoutKind::Presentation {
                strip,
                strip_fraction,
                gap,
                ..
            } if content => geometry::focus(n, width, height, strip, strip_fraction, gap, out),
            LayoutKind::Presentation { gap, .. } => geometry::grid(n, width, height, gap, out),
            LayoutKind::Grid { gap, min_cells, .. } => {
                geometry::grid_of(n, min_cells as usize, width, height, gap, out)
            }
            LayoutKind::Focus {
                strip,
                strip_fraction,
                gap,
                ..
            } => geometry::focus(n, width, height, strip, strip_fraction, gap, out),
            LayoutKind::Pip {
                corner,
                inset_fraction,
                margin,
                ..
            } => geometry::pip(n, width, height, corner, inset_fraction, margin, out),
        }
    }

    /// Everyone sees the same picture, themself included.
    pub fn shared(&self) -> bool {
        self.canvas == Canvas::Shared
    }

    /// Whether tile 0 should be the active speaker (focus and pip) rather than join order.
    pub fn speaker_first(&self) -> bool {
        matches!(self.kind, LayoutKind::Focus { .. } | LayoutKind::Pip { .. })
    }

    /// A layout made for presentations: the presenter's camera leads the strip and the
    /// active speaker's tile is marked.
    pub fn is_presentation(&self) -> bool {
        matches!(self.kind, LayoutKind::Presentation { .. })
    }
}

/// Every layout known to the server, by name. Built-ins come from `layouts/` at compile
/// time; a configured directory adds or overrides them.
#[derive(Clone, Debug)]
pub struct LayoutSet {
    layouts: BTreeMap<String, LayoutSpec>,
}

const BUILTIN: [(&str, &str); 5] = [
    ("layouts/grid.json", include_str!("../../layouts/grid.json")),
    (
        "layouts/grid-shared.json",
        include_str!("../../layouts/grid-shared.json"),
    ),
    (
        "layouts/speaker.json",
        include_str!("../../layouts/speaker.json"),
    ),
    ("layouts/pip.json", include_str!("../../layouts/pip.json")),
    (
        "layouts/presentation.json",
        include_str!("../../layouts/presentation.json"),
    ),
];

impl LayoutSet {
    /// The layouts compiled into the binary.
    pub fn builtin() -> Self {
        let mut layouts = BTreeMap::new();
        for (file, text) in BUILTIN {
            let spec = LayoutSpec::from_json(file, text)
                .expect("built-in layouts are valid (unit-tested)");
            layouts.insert(spec.name.clone(), spec);
        }
        Self { layouts }
    }

    /// Built-ins plus every `*.json` in `dir` (which win on a name clash with a built-in,
    /// but two files in `dir` may not define the same name).
    pub fn load_dir(dir: &Path) -> Result<Self, LayoutError> {
        let mut set = Self::builtin();
        let io = |e| LayoutError::Io {
            file: dir.display().to_string(),
            source: e,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let mut seen = BTreeMap::new();
        for path in paths {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| LayoutError::Io {
                file: file.clone(),
                source: e,
            })?;
            let spec = LayoutSpec::from_json(&file, &text)?;
            if seen.insert(spec.name.clone(), file.clone()).is_some() {
                return Err(LayoutError::Duplicate {
                    file,
                    name: spec.name,
                });
            }
            set.layouts.insert(spec.name.clone(), spec);
        }
        Ok(set)
    }

    pub fn get(&self, name: &str) -> Option<&LayoutSpec> {
        self.layouts.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.layouts.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load() {
        let set = LayoutSet::builtin();
        assert_eq!(
            set.names(),
            vec!["grid", "grid-shared", "pip", "presentation", "speaker"]
        );
        assert!(set.get("presentation").unwrap().is_presentation());
        assert!(set.get("grid-shared").unwrap().shared());
        assert!(!set.get("grid").unwrap().shared());
    }

    #[test]
    fn the_canvas_field_is_checked() {
        let e = LayoutSpec::from_json("x.json", r#"{"name":"g","type":"grid","canvas":"mine"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown variant `mine`"), "{e}");
    }

    #[test]
    fn bad_files_name_file_and_field() {
        let e =
            LayoutSpec::from_json("x.json", r#"{"name":"g","type":"grid","gap":500}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.json: field `gap`: must be between 0 and 64 pixels"
        );
        let e =
            LayoutSpec::from_json("y.json", r#"{"name":"g","type":"grid","gapp":5}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("y.json: ") && e.to_string().contains("gapp"),
            "{e}"
        );
        let e = LayoutSpec::from_json("z.json", r#"{"name":"g","type":"hexagon"}"#).unwrap_err();
        assert!(
            e.to_string().contains("z.json") && e.to_string().contains("hexagon"),
            "{e}"
        );
        let e =
            LayoutSpec::from_json("n.json", r#"{"name":"Bad Name","type":"grid"}"#).unwrap_err();
        assert!(e.to_string().contains("field `name`"), "{e}");
        let e = LayoutSpec::from_json(
            "s.json",
            r#"{"name":"f","type":"focus","strip_fraction":2}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("field `strip_fraction`"), "{e}");
        assert!(LayoutSpec::from_json("t.json", "not json").is_err());
    }

    #[test]
    fn dir_overrides_and_rejects_bad_file() {
        let dir = std::env::temp_dir().join(format!("tessera-layouts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.json"),
            r#"{"name":"wide","type":"grid","gap":0}"#,
        )
        .unwrap();
        let set = LayoutSet::load_dir(&dir).unwrap();
        assert!(set.get("wide").is_some() && set.get("grid").is_some());
        std::fs::write(
            dir.join("b.json"),
            r#"{"name":"oops","type":"pip","margin":-1}"#,
        )
        .unwrap();
        let e = LayoutSet::load_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("b.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
