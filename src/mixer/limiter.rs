//! A look-ahead-free peak limiter for 20 ms blocks. The wide (i32) sum of several talkers
//! can exceed i16; instead of wrapping (a loud crack) or hard clipping (distortion), the
//! gain ramps down smoothly within the block to exactly what fits, and recovers slowly.

/// Per-output limiter state: the gain applied at the end of the last block.
#[derive(Clone, Debug)]
pub struct Limiter {
    gain: f32,
}

impl Default for Limiter {
    fn default() -> Self {
        Self { gain: 1.0 }
    }
}

/// The peak the limiter aims for (a little under i16::MAX, leaving room for Opus overshoot).
const CEILING: f32 = 32_000.0;
/// Fraction of the remaining distance to unity gain recovered per 20 ms block (~200 ms release).
const RELEASE: f32 = 0.1;

impl Limiter {
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// Limits one block from `input` (wide) into `out` (i16). Never wraps; samples can only
    /// reach the ceiling through the gain ramp, never by clamping, except in the first sample
    /// of an extreme transient where the clamp is the safety net.
    pub fn process(&mut self, input: &[i32], out: &mut [i16]) {
        let peak = input.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0) as f32;
        let needed = if peak > CEILING { CEILING / peak } else { 1.0 };
        let target = if needed < self.gain {
            needed // attack: reach the needed gain within this block
        } else {
            (self.gain + (1.0 - self.gain) * RELEASE).min(needed)
        };
        let start = self.gain;
        let n = input.len().max(1) as f32;
        for (i, (o, &s)) in out.iter_mut().zip(input).enumerate() {
            // Attack ramps over the first eighth of the block so the peak (anywhere) is covered.
            let t = if target < start {
                ((i as f32 + 1.0) / (n / 8.0)).min(1.0)
            } else {
                (i as f32 + 1.0) / n
            };
            let g = start + (target - start) * t;
            // A peak inside the attack ramp may still exceed: take the lower of ramp and need.
            let g = if (s.unsigned_abs() as f32) * g > CEILING {
                CEILING / s.unsigned_abs() as f32
            } else {
                g
            };
            *o = (s as f32 * g).round().clamp(-32768.0, 32767.0) as i16;
        }
        self.gain = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_signal_passes_unchanged() {
        let mut l = Limiter::default();
        let input: Vec<i32> = (0..960).map(|i| ((i % 200) as i32 - 100) * 50).collect();
        let mut out = vec![0i16; 960];
        l.process(&input, &mut out);
        for (a, b) in input.iter().zip(&out) {
            assert_eq!(*a as i16, *b);
        }
    }

    #[test]
    fn loud_sum_never_wraps_or_exceeds_ceiling() {
        let mut l = Limiter::default();
        // Ten full-scale talkers in phase: 10 × 32767, both signs.
        for block in 0..20 {
            let input: Vec<i32> = (0..960)
                .map(|i| {
                    let s = ((i + block * 960) as f32 * 0.05).sin();
                    (s * 327_670.0) as i32
                })
                .collect();
            let mut out = vec![0i16; 960];
            l.process(&input, &mut out);
            for (a, b) in input.iter().zip(&out) {
                // Sign preserved (no wrap-around) and bounded.
                assert!(*a == 0 || (*a > 0) == (*b >= 0), "wrapped: {a} -> {b}");
                assert!(
                    (*b as i32).abs() <= CEILING as i32 + 1,
                    "exceeded ceiling: {b}"
                );
            }
        }
        assert!(l.gain() < 0.2);
    }

    #[test]
    fn gain_recovers_after_a_transient() {
        let mut l = Limiter::default();
        let mut out = vec![0i16; 960];
        l.process(&vec![100_000; 960], &mut out);
        let low = l.gain();
        for _ in 0..50 {
            l.process(&vec![1000; 960], &mut out);
        }
        assert!(low < 0.5 && l.gain() > 0.99);
    }
}
