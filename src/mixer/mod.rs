//! Audio mixing: the N-1 mix ("everyone but me"), the limiter that keeps a loud sum from
//! wrapping or clipping, who is in the mix ([`talkers`]), and active-speaker detection.
//!
//! The mix is computed as one wide total minus each listener's own contribution, so a room
//! of N costs O(N) per tick rather than O(N²).

pub mod limiter;
pub mod speaker;
pub mod talkers;
pub mod tones;

pub use limiter::Limiter;
pub use speaker::{SpeakerDetector, SpeakerEvent};
pub use talkers::{TalkerSelector, TalkerState};

/// Sums every contribution into `total` (i32, so 65 536 full-scale talkers cannot overflow).
/// `contributions[i]` is `None` for a silent/muted participant.
pub fn sum_into(total: &mut [i32], contributions: &[Option<&[i16]>]) {
    total.fill(0);
    for c in contributions.iter().flatten() {
        for (t, s) in total.iter_mut().zip(c.iter()) {
            *t += *s as i32;
        }
    }
}

/// Writes `total - own` into `out`: what a participant hears (everyone but themselves),
/// before limiting.
pub fn minus_own(total: &[i32], own: Option<&[i16]>, out: &mut [i32]) {
    match own {
        Some(own) => {
            for ((o, t), s) in out.iter_mut().zip(total).zip(own) {
                *o = *t - *s as i32;
            }
        }
        None => out.copy_from_slice(&total[..out.len()]),
    }
}

/// Full N-1 mix: `outputs[k]` = limited sum of every contribution except `k`'s.
/// Pure function used by tests and benchmarks; the room loop uses the same pieces with
/// buffers it keeps between ticks.
pub fn mix_minus_one(
    contributions: &[Option<&[i16]>],
    limiters: &mut [Limiter],
    outputs: &mut [Vec<i16>],
    scratch_total: &mut Vec<i32>,
    scratch_one: &mut Vec<i32>,
) {
    let n = outputs.first().map_or(0, |o| o.len());
    scratch_total.resize(n, 0);
    scratch_one.resize(n, 0);
    sum_into(scratch_total, contributions);
    for (k, out) in outputs.iter_mut().enumerate() {
        minus_own(scratch_total, contributions[k], scratch_one);
        limiters[k].process(scratch_one, out);
    }
}

/// Root-mean-square level of a block in dBFS (full scale = 0 dB, silence = -127).
pub fn level_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return -127.0;
    }
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    let rms = (sum / samples.len() as f64).sqrt() / 32768.0;
    if rms <= 1e-7 {
        -127.0
    } else {
        (20.0 * rms.log10()) as f32
    }
}

/// Power of one frequency in 48 kHz samples (Goertzel), normalised so a full-length sine
/// of amplitude A gives about A². Used to check who hears whom (tests, recordings).
pub fn tone_power(x: &[i16], freq: f32) -> f64 {
    tone_power_at(x, freq, 48_000.0)
}

/// [`tone_power`] for samples at `rate` Hz (e.g. 8 kHz telephony audio).
pub fn tone_power_at(x: &[i16], freq: f32, rate: f32) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq as f64 / rate as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let p = s1 * s1 + s2 * s2 - c * s1 * s2;
    p / (x.len() as f64 * x.len() as f64 / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::SAMPLES_PER_TICK;

    fn sine(freq: f32, amp: f32, n: usize, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + phase0) as f32 / 48_000.0;
                (amp * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn each_output_holds_every_tone_but_its_own() {
        let freqs = [300.0, 500.0, 700.0, 1100.0, 1300.0];
        let n = SAMPLES_PER_TICK * 10;
        let inputs: Vec<Vec<i16>> = freqs.iter().map(|&f| sine(f, 6000.0, n, 0)).collect();
        let contributions: Vec<Option<&[i16]>> =
            inputs.iter().map(|v| Some(v.as_slice())).collect();
        let mut limiters = vec![Limiter::default(); freqs.len()];
        let mut outputs = vec![vec![0i16; n]; freqs.len()];
        let (mut t, mut o) = (Vec::new(), Vec::new());
        mix_minus_one(&contributions, &mut limiters, &mut outputs, &mut t, &mut o);
        for (k, out) in outputs.iter().enumerate() {
            let own = tone_power(out, freqs[k]);
            for (j, &f) in freqs.iter().enumerate() {
                if j == k {
                    continue;
                }
                let other = tone_power(out, f);
                let db = 10.0 * (other / own.max(1e-12)).log10();
                assert!(
                    db >= 30.0,
                    "output {k}: tone {f} only {db:.1} dB above own tone"
                );
            }
        }
    }

    #[test]
    fn muted_participant_is_absent_from_every_mix() {
        // 400 and 800 Hz complete whole cycles in 20 ms, so Goertzel sees no leakage.
        let a = sine(400.0, 8000.0, 960, 0);
        let b = sine(800.0, 8000.0, 960, 0);
        let contributions = [Some(a.as_slice()), None, Some(b.as_slice())];
        let mut limiters = vec![Limiter::default(); 3];
        let mut outputs = vec![vec![0i16; 960]; 3];
        let (mut t, mut o) = (Vec::new(), Vec::new());
        mix_minus_one(&contributions, &mut limiters, &mut outputs, &mut t, &mut o);
        // The muted participant hears both others; the others hear only each other.
        assert!(tone_power(&outputs[1], 400.0) > 1e6 && tone_power(&outputs[1], 800.0) > 1e6);
        assert!(tone_power(&outputs[0], 400.0) < 1e-3 * tone_power(&outputs[0], 800.0));
        assert!(tone_power(&outputs[2], 800.0) < 1e-3 * tone_power(&outputs[2], 400.0));
    }

    #[test]
    fn level_of_full_scale_and_silence() {
        assert!(level_dbfs(&[0; 960]) <= -127.0);
        let loud = sine(1000.0, 32767.0, 960, 0);
        let l = level_dbfs(&loud);
        assert!(
            (l + 3.0).abs() < 0.5,
            "sine at full scale is -3 dBFS RMS, got {l}"
        );
    }
}
