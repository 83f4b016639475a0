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

/// Parses a picture size `WIDTHxHEIGHT` (the one parser for every flag and field that takes
/// one). Only the syntax is checked; callers bound the values.
pub fn parse_size(text: &str) -> Option<(u32, u32)> {
    let (w, h) = text.trim().split_once(['x', 'X'])?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("1280x720"), Some((1280, 720)));
        assert_eq!(super::parse_size(" 640X360 "), Some((640, 360)));
        assert_eq!(super::parse_size("640"), None);
        assert_eq!(super::parse_size("ax360"), None);
        assert_eq!(super::parse_size("-1x2"), None);
    }
}
