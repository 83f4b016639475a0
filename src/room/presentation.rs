//! Floor control: who presents in a room, and what starting or stopping a presentation
//! does to the room's layout. A pure core (no I/O, no room): [`Floor`] answers requests
//! with what the room must do; `Room` applies it (commands to the video thread, events).
//!
//! Rules: one presenter at a time. A second request is refused, or takes the floor,
//! per the room's [`FloorPolicy`]; the presenter may present again (a new screen replaces
//! its old one). When a presentation starts in a room that switches layouts, the room
//! goes to the presentation layout and remembers the one it had; when the floor becomes
//! free it goes back — unless someone chose a layout meanwhile (a manual choice wins).

use crate::config::FloorPolicy;
use crate::ids::ParticipantId;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FloorError {
    #[error("participant {0} is presenting: the floor is taken")]
    Taken(ParticipantId),
    #[error("nobody is presenting")]
    NobodyPresenting,
    #[error("only a moderator may stop someone else's presentation")]
    NotModerator,
}

/// Why a presentation ended (told to clients in `presentationStopped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// The presenter stopped (or its content connection ended).
    Ended,
    /// A moderator or the control API stopped it.
    Moderator,
    /// Someone else took the floor.
    Replaced,
    /// The presenter left the room.
    Left,
}

/// What the room must do after a change of the floor.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FloorChange {
    /// This presentation ended (its content goes, its clients are told).
    pub stopped: Option<(ParticipantId, StopReason)>,
    /// This participant now presents.
    pub started: Option<ParticipantId>,
    /// Switch the room's layout to this one.
    pub layout: Option<String>,
}

/// One room's floor.
#[derive(Debug, Default)]
pub struct Floor {
    presenter: Option<ParticipantId>,
    /// The layout the room had before a presentation switched it (restored when the
    /// floor is free, unless someone chose a layout meanwhile).
    restore: Option<String>,
}

impl Floor {
    pub fn presenter(&self) -> Option<ParticipantId> {
        self.presenter
    }

    /// `who` asks to present. `layout` is the room's layout now; `switch_to` the
    /// presentation layout when the room switches layouts.
    pub fn request(
        &mut self,
        who: ParticipantId,
        policy: FloorPolicy,
        layout: &str,
        switch_to: Option<&str>,
    ) -> Result<FloorChange, FloorError> {
        let mut change = FloorChange {
            started: Some(who),
            ..Default::default()
        };
        match self.presenter {
            Some(p) if p == who => change.stopped = Some((p, StopReason::Ended)),
            Some(p) if policy == FloorPolicy::Refuse => return Err(FloorError::Taken(p)),
            Some(p) => change.stopped = Some((p, StopReason::Replaced)),
            None => {
                if let Some(to) = switch_to.filter(|to| *to != layout) {
                    self.restore = Some(layout.to_owned());
                    change.layout = Some(to.to_owned());
                }
            }
        }
        self.presenter = Some(who);
        Ok(change)
    }

    /// `who`'s presentation ends for `reason` (its own stop, its connection, leaving).
    /// Nothing happens if `who` does not present.
    pub fn release(&mut self, who: ParticipantId, reason: StopReason, layout: &str) -> FloorChange {
        if self.presenter != Some(who) {
            return FloorChange::default();
        }
        self.presenter = None;
        FloorChange {
            stopped: Some((who, reason)),
            started: None,
            layout: self.restore.take().filter(|l| l != layout),
        }
    }

    /// Stops whoever presents, on behalf of `by` (`None`: the control API), which must be
    /// a moderator unless it is the presenter itself.
    pub fn stop(
        &mut self,
        by: Option<(ParticipantId, bool)>,
        layout: &str,
    ) -> Result<FloorChange, FloorError> {
        let p = self.presenter.ok_or(FloorError::NobodyPresenting)?;
        let reason = match by {
            Some((id, _)) if id == p => StopReason::Ended,
            Some((_, false)) => return Err(FloorError::NotModerator),
            _ => StopReason::Moderator,
        };
        Ok(self.release(p, reason, layout))
    }

    /// Someone chose a layout: it stays after the presentation (a manual choice wins).
    pub fn layout_chosen(&mut self) {
        self.restore = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);
    const M: ParticipantId = ParticipantId(3);

    #[test]
    fn one_presenter_switches_the_layout_and_back() {
        let mut f = Floor::default();
        let c = f
            .request(A, FloorPolicy::Refuse, "grid", Some("presentation"))
            .unwrap();
        assert_eq!(c.started, Some(A));
        assert_eq!(c.stopped, None);
        assert_eq!(c.layout.as_deref(), Some("presentation"));
        assert_eq!(f.presenter(), Some(A));
        let c = f.release(A, StopReason::Ended, "presentation");
        assert_eq!(c.stopped, Some((A, StopReason::Ended)));
        assert_eq!(c.layout.as_deref(), Some("grid"));
        assert_eq!(f.presenter(), None);
        // Releasing again, or by someone else, does nothing.
        assert_eq!(
            f.release(A, StopReason::Ended, "grid"),
            FloorChange::default()
        );
    }

    #[test]
    fn a_second_presenter_is_refused_or_takes_the_floor_per_policy() {
        let mut f = Floor::default();
        f.request(A, FloorPolicy::Refuse, "grid", Some("presentation"))
            .unwrap();
        assert_eq!(
            f.request(B, FloorPolicy::Refuse, "presentation", Some("presentation")),
            Err(FloorError::Taken(A))
        );
        assert_eq!(f.presenter(), Some(A));
        let c = f
            .request(B, FloorPolicy::Take, "presentation", Some("presentation"))
            .unwrap();
        assert_eq!(c.stopped, Some((A, StopReason::Replaced)));
        assert_eq!(c.started, Some(B));
        assert_eq!(c.layout, None, "the room already shows the presentation");
        assert_eq!(f.presenter(), Some(B));
        // A's late release does not end B's presentation.
        assert_eq!(
            f.release(A, StopReason::Ended, "presentation"),
            FloorChange::default()
        );
        // When B stops, the layout from before the first presentation comes back.
        let c = f.release(B, StopReason::Ended, "presentation");
        assert_eq!(c.layout.as_deref(), Some("grid"));
    }

    #[test]
    fn the_presenter_may_present_again() {
        let mut f = Floor::default();
        f.request(A, FloorPolicy::Refuse, "grid", None).unwrap();
        let c = f.request(A, FloorPolicy::Refuse, "grid", None).unwrap();
        assert_eq!(c.stopped, Some((A, StopReason::Ended)));
        assert_eq!(c.started, Some(A));
    }

    #[test]
    fn moderators_stop_a_presentation_others_cannot() {
        let mut f = Floor::default();
        f.request(A, FloorPolicy::Refuse, "speaker", Some("presentation"))
            .unwrap();
        assert_eq!(
            f.stop(Some((B, false)), "presentation"),
            Err(FloorError::NotModerator)
        );
        assert_eq!(f.presenter(), Some(A));
        let c = f.stop(Some((M, true)), "presentation").unwrap();
        assert_eq!(c.stopped, Some((A, StopReason::Moderator)));
        assert_eq!(c.layout.as_deref(), Some("speaker"));
        assert_eq!(f.stop(None, "speaker"), Err(FloorError::NobodyPresenting));
        // The presenter may stop itself; the API (no participant) is trusted.
        f.request(A, FloorPolicy::Refuse, "grid", None).unwrap();
        assert_eq!(
            f.stop(Some((A, false)), "grid").unwrap().stopped,
            Some((A, StopReason::Ended))
        );
        f.request(B, FloorPolicy::Refuse, "grid", None).unwrap();
        assert_eq!(
            f.stop(None, "grid").unwrap().stopped,
            Some((B, StopReason::Moderator))
        );
    }

    #[test]
    fn a_manual_layout_choice_wins_over_the_switch_back() {
        let mut f = Floor::default();
        f.request(A, FloorPolicy::Refuse, "grid", Some("presentation"))
            .unwrap();
        f.layout_chosen();
        assert_eq!(f.release(A, StopReason::Ended, "pip").layout, None);
        // No switch configured: the layout is left alone both ways.
        let c = f.request(A, FloorPolicy::Refuse, "pip", None).unwrap();
        assert_eq!(c.layout, None);
        assert_eq!(f.release(A, StopReason::Left, "pip").layout, None);
        // Already in the presentation layout: nothing to switch or restore.
        let c = f
            .request(A, FloorPolicy::Refuse, "presentation", Some("presentation"))
            .unwrap();
        assert_eq!(c.layout, None);
        assert_eq!(f.release(A, StopReason::Ended, "presentation").layout, None);
    }
}
