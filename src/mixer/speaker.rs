//! Active-speaker detection with hysteresis. Levels come from the RTP audio-level header
//! extension (RFC 6464) when the sender uses it, else from decoded energy. A new speaker
//! takes over only after being the loudest, above a floor, for `hold` ticks in a row, and
//! by a margin over the current speaker — so coughs and crosstalk do not flap the layout.

use crate::ids::ParticipantId;

/// Smoothed levels below this (dBov) never make anyone the speaker.
const SPEECH_FLOOR_DB: f32 = -50.0;
/// How much louder (dB) a challenger must be than the current speaker.
const MARGIN_DB: f32 = 6.0;
/// Consecutive 20 ms ticks a challenger must win (400 ms).
const HOLD_TICKS: u32 = 20;
/// Exponential smoothing factor per tick.
const SMOOTHING: f32 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpeakerEvent {
    Changed(ParticipantId),
}

#[derive(Debug, Default)]
pub struct SpeakerDetector {
    /// Smoothed level per participant (a map: rooms of 1,000 observe every tick).
    levels: std::collections::HashMap<ParticipantId, f32>,
    current: Option<ParticipantId>,
    challenger: Option<(ParticipantId, u32)>,
}

impl SpeakerDetector {
    pub fn remove(&mut self, id: ParticipantId) {
        self.levels.remove(&id);
        if self.current == Some(id) {
            self.current = None;
        }
        if self.challenger.map(|c| c.0) == Some(id) {
            self.challenger = None;
        }
    }

    /// Feeds one tick's level (dBov, 0 loudest, -127 silent) for one participant.
    pub fn observe(&mut self, id: ParticipantId, level_db: f32) {
        self.levels
            .entry(id)
            .and_modify(|l| *l += (level_db - *l) * SMOOTHING)
            .or_insert(level_db);
    }

    /// Ends a tick: returns an event when the speaker changes.
    pub fn tick(&mut self) -> Option<SpeakerEvent> {
        let (loudest, level) = self
            .levels
            .iter()
            .map(|(p, l)| (*p, *l))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
        if level < SPEECH_FLOOR_DB || Some(loudest) == self.current {
            self.challenger = None;
            return None;
        }
        let current_level = self
            .current
            .and_then(|c| self.levels.get(&c))
            .map_or(-127.0, |l| *l);
        if level < current_level + MARGIN_DB {
            self.challenger = None;
            return None;
        }
        let count = match self.challenger {
            Some((p, n)) if p == loudest => n + 1,
            _ => 1,
        };
        if count >= HOLD_TICKS || self.current.is_none() {
            self.current = Some(loudest);
            self.challenger = None;
            Some(SpeakerEvent::Changed(loudest))
        } else {
            self.challenger = Some((loudest, count));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_talker_becomes_speaker_and_short_bursts_do_not_flap() {
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let mut d = SpeakerDetector::default();
        d.observe(a, -20.0);
        d.observe(b, -127.0);
        assert_eq!(d.tick(), Some(SpeakerEvent::Changed(a)));
        // b shouts for 5 ticks (100 ms): no change.
        for _ in 0..5 {
            d.observe(a, -30.0);
            d.observe(b, -5.0);
            assert_eq!(d.tick(), None);
        }
        // b keeps talking and a goes quiet: b takes over after the hold time.
        let mut changed_at = None;
        for t in 0..40 {
            d.observe(a, -127.0);
            d.observe(b, -10.0);
            if let Some(SpeakerEvent::Changed(p)) = d.tick() {
                changed_at = Some((t, p));
                break;
            }
        }
        let (t, p) = changed_at.expect("b should become speaker");
        assert_eq!(p, b);
        assert!(t >= 10, "changed too fast: tick {t}");
    }

    #[test]
    fn silence_never_elects_a_speaker() {
        let mut d = SpeakerDetector::default();
        for _ in 0..100 {
            d.observe(ParticipantId(1), -90.0);
            assert_eq!(d.tick(), None);
        }
    }
}
