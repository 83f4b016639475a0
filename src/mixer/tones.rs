//! Synthesised tones (join/leave beeps, key clicks) as 48 kHz clips: short sine bursts with
//! 5 ms ramps (no clicks), 40 ms apart, at -16 dBFS.

use std::sync::Arc;

const RATE: f32 = 48_000.0;
const AMPLITUDE: f32 = 5_200.0;

/// Beeps of `(frequency Hz, duration ms)`, in order, with 40 ms of silence between them.
pub fn beeps(parts: &[(f32, u32)]) -> Arc<[i16]> {
    let mut out = Vec::new();
    for (i, &(freq, ms)) in parts.iter().enumerate() {
        if i > 0 {
            out.extend(std::iter::repeat_n(0i16, 40 * 48));
        }
        let n = (ms * 48) as usize;
        let ramp = 5 * 48;
        for k in 0..n {
            let env = (k.min(n - 1 - k) as f32 / ramp as f32).min(1.0);
            let v = (k as f32 * 2.0 * std::f32::consts::PI * freq / RATE).sin();
            out.push((v * env * AMPLITUDE) as i16);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn beeps_have_their_length_and_no_clicks() {
        let b = super::beeps(&[(660.0, 90), (880.0, 110)]);
        assert_eq!(b.len(), (90 + 40 + 110) * 48);
        assert_eq!(b[0], 0);
        assert!(b
            .windows(2)
            .all(|w| (w[0] as i32 - w[1] as i32).abs() < 1_000));
        assert!(crate::mixer::tone_power(&b[..90 * 48], 660.0) > 1e5);
    }
}
