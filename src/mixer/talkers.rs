//! Who is in the mix: every active talker up to a limit (`[audio] top_k`, 8 by default),
//! and above it a choice by level with hold times, so nobody is cut mid-word and nobody
//! is locked out.
//!
//! Per 20 ms tick, from each participant's smoothed level:
//! - a talker below the speech floor for a second (or muted) gives up its slot;
//! - free slots go at once to the loudest participants above the floor;
//! - with every slot taken, a challenger that is clearly louder (6 dB over the quietest
//!   talker for 100 ms) takes that talker's slot;
//! - and, so that equally loud talkers take turns, one that has been talking while left
//!   out for [`WAIT_FOR_PAUSE_TICKS`] takes the slot of a talker that has had its turn
//!   ([`MIN_TURN_TICKS`]) as soon as that talker pauses between words; after
//!   [`MAX_WAIT_TICKS`] it takes the slot of the talker in the mix longest, pause or not.
//!
//! Pure state, no audio: the room's audio thread feeds levels and reads `talker`.

/// Below this (dBov / dBFS) nobody is a talker.
pub const SPEECH_FLOOR_DB: f32 = -55.0;
/// A challenger must be this much louder than the quietest talker…
const SWAP_MARGIN_DB: f32 = 6.0;
/// …for this many consecutive ticks (100 ms).
const SWAP_HOLD_TICKS: u32 = 5;
/// A talker below the floor this long (1 s) gives up its slot.
const QUIET_DROP_TICKS: u32 = 50;
/// A talker keeps its slot at least this long against a waiting one of equal level (2 s).
pub const MIN_TURN_TICKS: u32 = 100;
/// Left out while talking this long (1 s), a participant takes the slot of a talker that
/// has had its turn and pauses.
pub const WAIT_FOR_PAUSE_TICKS: u32 = 50;
/// Left out while talking this long (3 s), it takes the slot of the longest talker even
/// mid-word: nobody is left out longer than this while it keeps talking.
pub const MAX_WAIT_TICKS: u32 = 150;

/// One participant's part in the choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct TalkerState {
    /// Smoothed level this tick (dBov; -127 silent).
    pub level: f32,
    /// Muted or not admitted: never a talker.
    pub muted: bool,
    /// In the mix.
    pub talker: bool,
    /// Consecutive ticks below the floor (or muted).
    quiet_ticks: u32,
    /// Ticks in the mix since it last entered.
    turn_ticks: u32,
    /// Ticks talking while left out.
    wait_ticks: u32,
}

impl AsRef<TalkerState> for TalkerState {
    fn as_ref(&self) -> &TalkerState {
        self
    }
}

impl AsMut<TalkerState> for TalkerState {
    fn as_mut(&mut self) -> &mut TalkerState {
        self
    }
}

impl TalkerState {
    fn eligible(&self) -> bool {
        !self.talker && !self.muted && self.level >= SPEECH_FLOOR_DB
    }

    fn enter(&mut self) {
        self.talker = true;
        self.turn_ticks = 0;
        self.wait_ticks = 0;
    }

    fn leave(&mut self) {
        self.talker = false;
        self.turn_ticks = 0;
    }

    /// A silent participant, out of the mix.
    pub fn silent() -> Self {
        Self {
            level: -127.0,
            ..Default::default()
        }
    }

    /// Ticks it has been waiting while talking (tests, stats).
    pub fn waiting(&self) -> u32 {
        self.wait_ticks
    }
}

/// What the selector reads and updates in each participant.
pub trait Slot: AsRef<TalkerState> + AsMut<TalkerState> {}
impl<P: AsRef<TalkerState> + AsMut<TalkerState>> Slot for P {}

/// The choice across ticks: the limit and the pending loudness challenge.
#[derive(Debug)]
pub struct TalkerSelector {
    max: usize,
    /// The loudest challenger and for how many ticks it has beaten the quietest talker.
    challenger: Option<(usize, u32)>,
}

impl TalkerSelector {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            challenger: None,
        }
    }

    /// Updates `talker` for one tick. `ps` is in a stable order (join order); a
    /// participant's index may change only when someone leaves, which at worst restarts a
    /// 100 ms challenge.
    pub fn tick<P: Slot>(&mut self, ps: &mut [P]) {
        for p in ps.iter_mut() {
            let s = p.as_mut();
            let quiet = s.muted || s.level < SPEECH_FLOOR_DB;
            s.quiet_ticks = if quiet { s.quiet_ticks + 1 } else { 0 };
            if s.talker {
                s.turn_ticks += 1;
                if s.muted || s.quiet_ticks >= QUIET_DROP_TICKS {
                    s.leave();
                }
            } else if quiet {
                if s.quiet_ticks >= QUIET_DROP_TICKS {
                    s.wait_ticks = 0;
                }
            } else {
                s.wait_ticks += 1;
            }
        }
        // Free slots to the loudest at once.
        let mut talkers = ps.iter().filter(|p| p.as_ref().talker).count();
        while talkers < self.max {
            let Some(best) = loudest(ps, |s| s.eligible()) else {
                break;
            };
            ps[best].as_mut().enter();
            talkers += 1;
        }
        self.louder_challenger(ps);
        self.take_turns(ps);
    }

    /// A clearly louder challenger replaces the quietest talker.
    fn louder_challenger<P: Slot>(&mut self, ps: &mut [P]) {
        let challenger = loudest(ps, |s| s.eligible());
        let weakest = quietest(ps, |s| s.talker);
        match (challenger, weakest) {
            (Some(c), Some(w)) if ps[c].as_ref().level > ps[w].as_ref().level + SWAP_MARGIN_DB => {
                let n = match self.challenger {
                    Some((i, n)) if i == c => n + 1,
                    _ => 1,
                };
                if n >= SWAP_HOLD_TICKS {
                    ps[w].as_mut().leave();
                    ps[c].as_mut().enter();
                    self.challenger = None;
                } else {
                    self.challenger = Some((c, n));
                }
            }
            _ => self.challenger = None,
        }
    }

    /// Equally loud talkers take turns: the longest-waiting talker left out replaces a
    /// talker that has had its turn — at its next pause, or after the longest wait.
    fn take_turns<P: Slot>(&mut self, ps: &mut [P]) {
        loop {
            // The one waiting longest (ties: the louder).
            let Some(w) = (0..ps.len())
                .filter(|&i| {
                    let s = ps[i].as_ref();
                    s.eligible() && s.wait_ticks >= WAIT_FOR_PAUSE_TICKS
                })
                .max_by(|&a, &b| {
                    let (sa, sb) = (ps[a].as_ref(), ps[b].as_ref());
                    sa.wait_ticks
                        .cmp(&sb.wait_ticks)
                        .then(sa.level.total_cmp(&sb.level))
                })
            else {
                return;
            };
            let overdue = ps[w].as_ref().wait_ticks >= MAX_WAIT_TICKS;
            // Who gives way: a talker that has had its turn, pausing now (the longest
            // turn first); if the waiter is overdue, the longest turn pause or not.
            let out = (0..ps.len())
                .filter(|&i| {
                    let s = ps[i].as_ref();
                    s.talker && s.turn_ticks >= MIN_TURN_TICKS && (overdue || s.quiet_ticks > 0)
                })
                .max_by_key(|&i| ps[i].as_ref().turn_ticks);
            let Some(out) = out else { return };
            ps[out].as_mut().leave();
            ps[w].as_mut().enter();
        }
    }
}

fn loudest<P: Slot>(ps: &[P], f: impl Fn(&TalkerState) -> bool) -> Option<usize> {
    (0..ps.len())
        .filter(|&i| f(ps[i].as_ref()))
        // Ties: the one that joined first.
        .max_by(|&a, &b| {
            ps[a]
                .as_ref()
                .level
                .total_cmp(&ps[b].as_ref().level)
                .then(b.cmp(&a))
        })
}

fn quietest<P: Slot>(ps: &[P], f: impl Fn(&TalkerState) -> bool) -> Option<usize> {
    (0..ps.len())
        .filter(|&i| f(ps[i].as_ref()))
        .min_by(|&a, &b| ps[a].as_ref().level.total_cmp(&ps[b].as_ref().level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(levels: &[f32]) -> Vec<TalkerState> {
        levels
            .iter()
            .map(|&level| TalkerState {
                level,
                ..Default::default()
            })
            .collect()
    }

    fn talkers(ps: &[TalkerState]) -> Vec<usize> {
        (0..ps.len()).filter(|&i| ps[i].talker).collect()
    }

    #[test]
    fn everyone_talking_is_mixed_up_to_the_limit_and_silence_never_is() {
        let mut ps = room(&[-20.0, -30.0, -127.0, -40.0, -60.0]);
        let mut sel = TalkerSelector::new(8);
        sel.tick(&mut ps);
        assert_eq!(talkers(&ps), [0, 1, 3]);
        let mut ps = room(&[-20.0; 12]);
        sel.tick(&mut ps);
        assert_eq!(talkers(&ps).len(), 8);
    }

    #[test]
    fn a_clearly_louder_challenger_takes_the_quietest_slot_after_100_ms() {
        let mut ps = room(&[-30.0, -35.0, -127.0]);
        let mut sel = TalkerSelector::new(2);
        sel.tick(&mut ps);
        ps[2].level = -10.0;
        for _ in 0..SWAP_HOLD_TICKS - 1 {
            sel.tick(&mut ps);
            assert_eq!(talkers(&ps), [0, 1]);
        }
        sel.tick(&mut ps);
        assert_eq!(talkers(&ps), [0, 2]);
    }

    #[test]
    fn a_talker_pausing_between_words_keeps_its_slot_when_nobody_waits() {
        let mut ps = room(&[-30.0, -30.0]);
        let mut sel = TalkerSelector::new(1);
        ps[1].level = -127.0;
        sel.tick(&mut ps);
        for t in 0..QUIET_DROP_TICKS - 1 {
            ps[0].level = if t % 10 < 3 { -127.0 } else { -30.0 };
            sel.tick(&mut ps);
            assert_eq!(talkers(&ps), [0]);
        }
    }

    /// Continuous, equally loud talkers beyond the limit: nobody waits longer than
    /// MAX_WAIT_TICKS, and everyone gets turns.
    #[test]
    fn equally_loud_continuous_talkers_beyond_the_limit_all_take_turns() {
        for (n, max) in [(4, 3), (9, 8), (12, 8), (5, 1)] {
            let mut ps = room(&vec![-20.0; n]);
            let mut sel = TalkerSelector::new(max);
            let mut longest_out = vec![0u32; n];
            let mut out_run = vec![0u32; n];
            let mut in_ticks = vec![0u32; n];
            for _ in 0..3_000 {
                sel.tick(&mut ps);
                assert_eq!(talkers(&ps).len(), max);
                for i in 0..n {
                    if ps[i].talker {
                        out_run[i] = 0;
                        in_ticks[i] += 1;
                    } else {
                        out_run[i] += 1;
                        longest_out[i] = longest_out[i].max(out_run[i]);
                    }
                }
            }
            let worst = *longest_out.iter().max().unwrap();
            // Turns are handed over in order, so with k waiting the wait is bounded by
            // the turn length times the queue, never by the whole call.
            let bound = MAX_WAIT_TICKS + MIN_TURN_TICKS * (n - max - 1) as u32;
            assert!(
                worst <= bound,
                "{n} talkers, {max} slots: someone was left out {worst} ticks"
            );
            for (i, t) in in_ticks.iter().enumerate() {
                assert!(*t > 300, "{n}/{max}: talker {i} mixed only {t} ticks");
            }
        }
    }

    #[test]
    fn a_waiting_talker_gets_in_at_the_first_pause_after_the_others_had_their_turn() {
        let mut ps = room(&[-20.0, -20.0, -20.0]);
        let mut sel = TalkerSelector::new(2);
        sel.tick(&mut ps);
        assert_eq!(talkers(&ps), [0, 1]);
        for _ in 0..MIN_TURN_TICKS + 5 {
            sel.tick(&mut ps);
        }
        assert_eq!(talkers(&ps), [0, 1], "no pause yet, not overdue yet");
        // Talker 1 pauses for one tick: 2 takes its slot at once.
        ps[1].level = -127.0;
        sel.tick(&mut ps);
        assert_eq!(talkers(&ps), [0, 2]);
        ps[1].level = -20.0;
        sel.tick(&mut ps);
        assert_eq!(
            talkers(&ps),
            [0, 2],
            "the one that paused now waits its turn"
        );
    }

    #[test]
    fn muted_participants_are_never_mixed_and_a_quiet_waiter_stops_waiting() {
        let mut ps = room(&[-20.0, -20.0, -20.0]);
        ps[2].muted = true;
        let mut sel = TalkerSelector::new(8);
        sel.tick(&mut ps);
        assert_eq!(talkers(&ps), [0, 1]);
        let mut ps = room(&[-20.0, -20.0]);
        let mut sel = TalkerSelector::new(1);
        for _ in 0..60 {
            sel.tick(&mut ps);
        }
        assert_eq!(ps[1].waiting(), 60);
        ps[1].level = -127.0;
        for _ in 0..QUIET_DROP_TICKS {
            sel.tick(&mut ps);
        }
        assert_eq!(ps[1].waiting(), 0);
    }
}
