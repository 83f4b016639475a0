//! A caller's keypad: PIN entry before admission, then in-call keys. Pure: keys in, actions
//! out; the call applies them.
//!
//! | Keys | Who | Does |
//! |---|---|---|
//! | PIN `#` | waiting caller | enters (the moderator PIN enters as moderator); 3 wrong tries end the call; `*` restarts the entry |
//! | `*6` | anyone | mutes / unmutes oneself |
//! | `*0` PIN `#` | anyone | becomes moderator with the moderator PIN |
//! | `*7` | moderator | mutes everyone but the moderators |
//! | `*8` | moderator | unmutes everyone |
//! | `*5` | moderator | locks / unlocks the room (new joins refused) |

use crate::room::policy::RoomPolicy;

/// Wrong PINs before the call is ended.
pub const MAX_TRIES: u8 = 3;
/// Longest digit string kept (longer entries are simply wrong).
const MAX_DIGITS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The PIN was right: join the conference (as moderator or not).
    Admit {
        moderator: bool,
    },
    /// Wrong PIN; try again.
    WrongPin,
    /// The last try was wrong: end the call.
    HangUp,
    ToggleMute,
    BecomeModerator,
    MuteOthers,
    UnmuteOthers,
    ToggleLock,
    /// A moderator key from someone who is not one.
    NotAllowed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Entering the PIN to be admitted.
    Pin,
    InCall,
    /// `*` pressed in the call.
    Star,
    /// `*0`: entering the moderator PIN.
    ModeratorPin,
    /// Too many wrong PINs: the call is ending; no key counts.
    Closed,
}

#[derive(Debug)]
pub struct Keypad {
    state: State,
    digits: String,
    tries: u8,
    moderator: bool,
}

impl Keypad {
    /// `needs_pin`: the caller waits for its PIN; otherwise it is in the call already.
    pub fn new(needs_pin: bool) -> Self {
        Self {
            state: if needs_pin { State::Pin } else { State::InCall },
            digits: String::with_capacity(MAX_DIGITS),
            tries: 0,
            moderator: false,
        }
    }

    pub fn is_moderator(&self) -> bool {
        self.moderator
    }

    /// Whether the caller is still entering its PIN.
    pub fn waiting(&self) -> bool {
        self.state == State::Pin
    }

    /// One key; the policy is read now (PINs may change while a call runs).
    pub fn key(&mut self, key: char, policy: &RoomPolicy) -> Option<Action> {
        match (self.state, key) {
            (State::Closed, _) => None,
            (State::Pin | State::ModeratorPin, '0'..='9') => {
                if self.digits.len() < MAX_DIGITS + 1 {
                    self.digits.push(key);
                }
                None
            }
            (State::Pin, '*') => {
                self.digits.clear();
                None
            }
            (State::Pin, '#') => {
                let granted = (self.digits.len() <= MAX_DIGITS)
                    .then(|| policy.check_pin(Some(&self.digits)))
                    .flatten();
                self.digits.clear();
                match granted {
                    Some(moderator) => {
                        self.state = State::InCall;
                        self.moderator = moderator;
                        Some(Action::Admit { moderator })
                    }
                    None => {
                        self.tries += 1;
                        Some(if self.tries >= MAX_TRIES {
                            self.state = State::Closed;
                            Action::HangUp
                        } else {
                            Action::WrongPin
                        })
                    }
                }
            }
            (State::ModeratorPin, '#') => {
                self.state = State::InCall;
                let ok = policy.moderator_pin.is_some()
                    && self.digits.len() <= MAX_DIGITS
                    && policy.check_pin(Some(&self.digits)) == Some(true);
                self.digits.clear();
                if ok {
                    self.moderator = true;
                    Some(Action::BecomeModerator)
                } else {
                    Some(Action::WrongPin)
                }
            }
            (State::ModeratorPin, _) => {
                self.digits.clear();
                self.state = State::InCall;
                None
            }
            (State::InCall, '*') => {
                self.state = State::Star;
                None
            }
            (State::InCall, _) | (State::Pin, _) => None,
            (State::Star, k) => {
                self.state = State::InCall;
                let moderated = |a| {
                    Some(if self.moderator {
                        a
                    } else {
                        Action::NotAllowed
                    })
                };
                match k {
                    '6' => Some(Action::ToggleMute),
                    '0' => {
                        self.state = State::ModeratorPin;
                        None
                    }
                    '7' => moderated(Action::MuteOthers),
                    '8' => moderated(Action::UnmuteOthers),
                    '5' => moderated(Action::ToggleLock),
                    '*' => {
                        self.state = State::Star;
                        None
                    }
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoomDecl;
    use crate::ids::RoomId;
    use crate::room::policy::Policies;

    fn policy() -> RoomPolicy {
        let d = RoomDecl {
            name: "b".into(),
            pin: Some("4321".into()),
            moderator_pin: Some("9999".into()),
            locked: false,
            tones: true,
            ..Default::default()
        };
        Policies::new(&[d], 4).get(&RoomId::parse("b").unwrap())
    }

    fn keys(k: &mut Keypad, s: &str, p: &RoomPolicy) -> Vec<Action> {
        s.chars().filter_map(|c| k.key(c, p)).collect()
    }

    #[test]
    fn pin_entry_admits_or_hangs_up_after_three_wrong_tries() {
        let p = policy();
        let mut k = Keypad::new(true);
        assert!(k.waiting());
        assert_eq!(keys(&mut k, "12#", &p), vec![Action::WrongPin]);
        assert_eq!(
            keys(&mut k, "99*4321#", &p),
            vec![Action::Admit { moderator: false }]
        );
        assert!(!k.waiting() && !k.is_moderator());

        let mut k = Keypad::new(true);
        assert_eq!(
            keys(&mut k, "9999#", &p),
            vec![Action::Admit { moderator: true }]
        );
        assert!(k.is_moderator());

        let mut k = Keypad::new(true);
        assert_eq!(
            keys(&mut k, "1#2#3#4321#", &p),
            vec![Action::WrongPin, Action::WrongPin, Action::HangUp],
            "nothing after the third wrong try is taken"
        );
        // Too many digits never match, even if a prefix would.
        let mut k = Keypad::new(true);
        assert_eq!(
            keys(&mut k, "43214321432143214321#", &p),
            vec![Action::WrongPin]
        );
        // In-call keys do nothing while waiting.
        let mut k = Keypad::new(true);
        assert_eq!(keys(&mut k, "*6*7", &p), vec![]);
    }

    #[test]
    fn in_call_keys_and_moderator_keys() {
        let p = policy();
        let mut k = Keypad::new(false);
        assert_eq!(keys(&mut k, "*6", &p), vec![Action::ToggleMute]);
        assert_eq!(keys(&mut k, "*7*8*5", &p), vec![Action::NotAllowed; 3]);
        assert_eq!(keys(&mut k, "*01111#", &p), vec![Action::WrongPin]);
        assert_eq!(keys(&mut k, "*09999#", &p), vec![Action::BecomeModerator]);
        assert_eq!(
            keys(&mut k, "*7*8*5 5 *6", &p),
            vec![
                Action::MuteOthers,
                Action::UnmuteOthers,
                Action::ToggleLock,
                Action::ToggleMute
            ]
        );
        assert_eq!(
            keys(&mut k, "123#", &p),
            vec![],
            "digits in the call do nothing"
        );
    }
}
