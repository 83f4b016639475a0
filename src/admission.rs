//! Admission: the one way into a room, whatever the entrance — the web client's
//! WebSocket, WHIP, a phone over SIP, a WHEP watcher. In order: the cluster places the
//! room (another node hosts it: the entrance redirects there), the credential is checked
//! against the room's policy (a token for the room stands in for its PIN; a phone enters
//! its PIN on the keypad once in, so it waits; with access control on, a phone reaches
//! only rooms with a PIN), then the participant or watcher joins off the async runtime
//! (starting a room spawns threads and may open a recording). Each entrance turns a
//! [`Refusal`] into its own protocol's answer (an error message, an HTTP status, a SIP
//! response); none of them decides anything this module decides.

use crate::auth::JoinGrant;
use crate::cluster::{Cluster, ClusterError, NodeRecord, Placement};
use crate::codec::voice::AudioCodec;
use crate::ids::RoomId;
use crate::room::{JoinError, Joiner, ParticipantInfo, ParticipantKind, Room, Rooms};
use std::sync::Arc;

/// What the joiner proves.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// A checked grant (a token's, or the open server's) and the PIN it typed, if any.
    Grant {
        grant: &'a JoinGrant,
        pin: Option<&'a str>,
    },
    /// A phone: nothing yet; it enters the PIN on its keypad once in the room.
    Keypad,
    /// Someone the room called (a moderator placed the call): no PIN.
    Invited,
}

/// Someone asking to enter a room.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub room: &'a RoomId,
    pub name: &'a str,
    /// How it comes in; [`ParticipantKind::Watcher`] watches instead of joining.
    pub kind: ParticipantKind,
    pub credential: Credential<'a>,
    /// The audio codec it speaks (phones vary; everyone else Opus).
    pub codec: AudioCodec,
}

/// Why someone was not let in.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Another node hosts the room: go there.
    #[error("room is hosted by node {}", .0.id)]
    Elsewhere(Box<NodeRecord>),
    /// The cluster cannot place the room now (Redis down, no node can take it).
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    #[error("the room needs its PIN")]
    PinRequired,
    /// Access control is on and the room has no PIN: a phone has no credential to give.
    #[error("access control is on: phones reach only rooms with a PIN")]
    PhoneNeedsPin,
    #[error(transparent)]
    Join(#[from] JoinError),
}

impl Refusal {
    /// Worth trying again shortly (a `Retry-After` / 503 case).
    pub fn transient(&self) -> bool {
        matches!(
            self,
            Refusal::Cluster(_) | Refusal::Join(JoinError::Unavailable(_) | JoinError::Draining)
        )
    }
}

/// The shared parts every entrance admits through.
#[derive(Clone)]
pub struct Admission {
    pub rooms: Arc<Rooms>,
    pub cluster: Option<Arc<Cluster>>,
    /// Access control is on (an API secret is set).
    pub tokens: bool,
}

impl Admission {
    /// Lets `req` in: the room (started if needed) and who it is there.
    pub async fn admit(&self, req: Request<'_>) -> Result<(Arc<Room>, ParticipantInfo), Refusal> {
        if let Some(c) = &self.cluster {
            if let Placement::Remote(node) = c.place(req.room).await? {
                return Err(Refusal::Elsewhere(node));
            }
        }
        let joiner = self.joiner(&req)?;
        let (rooms, id, name) = (self.rooms.clone(), req.room.clone(), req.name.to_owned());
        let watch = req.kind == ParticipantKind::Watcher;
        tokio::task::spawn_blocking(move || {
            if watch {
                rooms.watch(&id, &name)
            } else {
                rooms.join_as(&id, &name, joiner)
            }
        })
        .await
        .unwrap_or_else(|e| Err(JoinError::Unavailable(e.to_string())))
        .map_err(Refusal::Join)
    }

    /// What the room's policy makes of the credential (pure: no room is touched).
    pub fn joiner(&self, req: &Request<'_>) -> Result<Joiner, Refusal> {
        let policy = self.rooms.policies.get(req.room);
        let (moderator, waiting) = match req.credential {
            // A token for this room stands in for its PIN.
            Credential::Grant { grant, .. } if grant.skips_pin => (grant.moderator, false),
            Credential::Grant { pin, .. } => {
                (policy.check_pin(pin).ok_or(Refusal::PinRequired)?, false)
            }
            Credential::Keypad if self.tokens && !policy.needs_pin() => {
                return Err(Refusal::PhoneNeedsPin)
            }
            Credential::Keypad => (false, policy.needs_pin()),
            Credential::Invited => (false, false),
        };
        Ok(Joiner {
            kind: req.kind,
            codec: req.codec,
            waiting,
            moderator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RoomDecl};

    fn admission(tokens: bool) -> Admission {
        let config = Config {
            rooms: vec![RoomDecl {
                name: "locked-pin".into(),
                pin: Some("1234".into()),
                moderator_pin: Some("9999".into()),
                ..Default::default()
            }],
            ..Config::default()
        };
        let rooms = Rooms::new(crate::room::RoomSettings {
            config,
            layouts: crate::layout::LayoutSet::builtin(),
        });
        Admission {
            rooms: Arc::new(rooms),
            cluster: None,
            tokens,
        }
    }

    fn open_grant() -> JoinGrant {
        JoinGrant {
            name: None,
            moderator: false,
            publish: true,
            subscribe: true,
            skips_pin: false,
        }
    }

    fn req<'a>(room: &'a RoomId, credential: Credential<'a>) -> Request<'a> {
        Request {
            room,
            name: "n",
            kind: ParticipantKind::Web,
            credential,
            codec: AudioCodec::Opus,
        }
    }

    #[test]
    fn pins_tokens_and_phones() {
        let a = admission(false);
        let pinned = RoomId::parse("locked-pin").unwrap();
        let open = RoomId::parse("anything").unwrap();
        let g = open_grant();
        let with = |pin| Credential::Grant { grant: &g, pin };
        assert!(matches!(
            a.joiner(&req(&pinned, with(None))),
            Err(Refusal::PinRequired)
        ));
        assert!(matches!(
            a.joiner(&req(&pinned, with(Some("1")))),
            Err(Refusal::PinRequired)
        ));
        let j = a.joiner(&req(&pinned, with(Some("1234")))).unwrap();
        assert!(!j.moderator && !j.waiting);
        assert!(
            a.joiner(&req(&pinned, with(Some("9999"))))
                .unwrap()
                .moderator
        );
        assert!(!a.joiner(&req(&open, with(None))).unwrap().moderator);
        // A token for the room skips the PIN and carries its moderator right.
        let token = JoinGrant {
            skips_pin: true,
            moderator: true,
            ..open_grant()
        };
        let j = a
            .joiner(&req(
                &pinned,
                Credential::Grant {
                    grant: &token,
                    pin: None,
                },
            ))
            .unwrap();
        assert!(j.moderator && !j.waiting);
        // Phones wait for their PIN where there is one.
        assert!(a.joiner(&req(&pinned, Credential::Keypad)).unwrap().waiting);
        assert!(!a.joiner(&req(&open, Credential::Keypad)).unwrap().waiting);
        // With access control on, a phone reaches only rooms with a PIN.
        let secured = admission(true);
        assert!(matches!(
            secured.joiner(&req(&open, Credential::Keypad)),
            Err(Refusal::PhoneNeedsPin)
        ));
        assert!(
            secured
                .joiner(&req(&pinned, Credential::Keypad))
                .unwrap()
                .waiting
        );
    }

    #[tokio::test]
    async fn watchers_are_not_participants_and_are_bounded() {
        let mut a = admission(false);
        let mut config = a.rooms.settings().config.clone();
        config.live.max_watchers = 2;
        a.rooms = Arc::new(Rooms::new(crate::room::RoomSettings {
            config,
            layouts: crate::layout::LayoutSet::builtin(),
        }));
        let room = RoomId::parse("hall").unwrap();
        let g = open_grant();
        let watcher = Request {
            kind: ParticipantKind::Watcher,
            ..req(
                &room,
                Credential::Grant {
                    grant: &g,
                    pin: None,
                },
            )
        };
        let (r, w1) = a.admit(watcher).await.unwrap();
        assert_eq!(w1.kind, ParticipantKind::Watcher);
        let (_, w2) = a.admit(watcher).await.unwrap();
        assert!(matches!(
            a.admit(watcher).await,
            Err(Refusal::Join(JoinError::WatchersFull(2)))
        ));
        // Not listed, not counted as participants; the room runs while watched.
        assert!(r.participants().is_empty());
        assert_eq!(
            (a.rooms.participant_count(), a.rooms.watcher_count()),
            (0, 2)
        );
        let (_, p) = a
            .admit(req(
                &room,
                Credential::Grant {
                    grant: &g,
                    pin: None,
                },
            ))
            .await
            .unwrap();
        assert_eq!(r.participants().len(), 1);
        a.rooms.leave(&r, p.id);
        a.rooms.leave(&r, w1.id);
        assert!(a.rooms.get(&room).is_some(), "a watcher is still there");
        a.rooms.leave(&r, w2.id);
        assert_eq!(a.rooms.watcher_count(), 0);
        assert!(a.rooms.get(&room).is_none());
        a.rooms.stop_all();
    }
}
