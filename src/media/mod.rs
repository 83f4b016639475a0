//! Media primitives shared by every stage: the planar I420 frame, the jitter buffers that
//! turn network packets back into an ordered stream, and the clock constants.

pub mod frame;
pub mod jitter;

pub use frame::I420Frame;

use std::time::Duration;

/// Audio runs at 48 kHz mono internally (Opus's native rate).
pub const AUDIO_RATE: u32 = 48_000;
/// One mixer tick.
pub const AUDIO_TICK: Duration = Duration::from_millis(20);
/// Samples in one mixer tick (20 ms at 48 kHz).
pub const SAMPLES_PER_TICK: usize = 960;
/// RTP clock of every video codec we use.
pub const VIDEO_CLOCK: u32 = 90_000;
