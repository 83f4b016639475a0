//! Fuzz targets for everything Tessera reads from the outside; see FUZZING.md.
#[path = "targets.rs"]
mod targets;
pub use targets::*;
