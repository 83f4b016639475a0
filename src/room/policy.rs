//! Who may join a room and how: its PIN, moderator PIN, lock and tones. Known before the
//! room runs (declared in the config's `[[rooms]]`, or set with `PATCH /api/rooms/{room}`)
//! and kept after it stops, so a bridge keeps its PIN between meetings.

use crate::config::{valid_pin, FloorPolicy, PresentationConfig, RoomDecl};
use crate::ids::RoomId;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// One room's access rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomPolicy {
    #[serde(skip)]
    pub pin: Option<String>,
    #[serde(skip)]
    pub moderator_pin: Option<String>,
    /// Whether a PIN is set (the PINs themselves are never listed).
    pub has_pin: bool,
    pub has_moderator_pin: bool,
    pub locked: bool,
    pub tones: bool,
    /// SRTP for this room's calls (declared in the config), else the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_encryption: Option<crate::config::MediaEncryption>,
    /// A second presenter is refused or takes the floor (`None`: `[presentation] floor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<FloorPolicy>,
    /// Switch to the presentation layout and back (`None`: `[presentation]
    /// switch_layout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_layout: Option<bool>,
}

impl Default for RoomPolicy {
    fn default() -> Self {
        Self {
            pin: None,
            moderator_pin: None,
            has_pin: false,
            has_moderator_pin: false,
            locked: false,
            tones: true,
            media_encryption: None,
            floor: None,
            switch_layout: None,
        }
    }
}

impl RoomPolicy {
    fn from_decl(d: &RoomDecl) -> Self {
        let mut p = Self {
            pin: d.pin.clone(),
            moderator_pin: d.moderator_pin.clone(),
            locked: d.locked,
            tones: d.tones,
            media_encryption: d.media_encryption,
            floor: d.floor,
            switch_layout: d.switch_layout,
            ..Self::default()
        };
        p.refresh();
        p
    }

    fn refresh(&mut self) {
        self.has_pin = self.pin.is_some();
        self.has_moderator_pin = self.moderator_pin.is_some();
    }

    /// The floor policy and layout switching in force, given the server's defaults.
    pub fn floor_rules(&self, defaults: &PresentationConfig) -> (FloorPolicy, bool) {
        (
            self.floor.unwrap_or(defaults.floor),
            self.switch_layout.unwrap_or(defaults.switch_layout),
        )
    }

    /// Whether a joiner must give a PIN before it is admitted.
    pub fn needs_pin(&self) -> bool {
        self.pin.is_some()
    }

    /// What `given` grants: `Some(true)` moderator, `Some(false)` participant, `None` no entry.
    pub fn check_pin(&self, given: Option<&str>) -> Option<bool> {
        let given = given.filter(|g| !g.is_empty());
        if let (Some(m), Some(g)) = (&self.moderator_pin, given) {
            if constant_time_eq(m.as_bytes(), g.as_bytes()) {
                return Some(true);
            }
        }
        match (&self.pin, given) {
            (None, _) => Some(false),
            (Some(p), Some(g)) if constant_time_eq(p.as_bytes(), g.as_bytes()) => Some(false),
            _ => None,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A `PATCH /api/rooms/{room}` body: absent fields stay, `null` or `""` clears a PIN.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyPatch {
    #[serde(default, deserialize_with = "present")]
    pub pin: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub moderator_pin: Option<Option<String>>,
    pub locked: Option<bool>,
    pub tones: Option<bool>,
    pub floor: Option<FloorPolicy>,
    pub switch_layout: Option<bool>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(
        Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()),
    ))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("a PIN is 1 to 16 digits")]
    BadPin,
    #[error("too many rooms with settings ({0})")]
    TooMany(usize),
}

/// Every room's policy (rooms without one have the default: open, tones on).
pub struct Policies {
    map: Mutex<HashMap<RoomId, RoomPolicy>>,
    max: usize,
}

impl Policies {
    pub fn new(decls: &[RoomDecl], max: usize) -> Self {
        let map = decls
            .iter()
            .filter_map(|d| Some((RoomId::parse(&d.name).ok()?, RoomPolicy::from_decl(d))))
            .collect();
        Self {
            map: Mutex::new(map),
            max,
        }
    }

    pub fn get(&self, room: &RoomId) -> RoomPolicy {
        super::lock(&self.map)
            .get(room)
            .cloned()
            .unwrap_or_default()
    }

    /// Applies `patch`; returns the new policy.
    pub fn patch(&self, room: &RoomId, patch: &PolicyPatch) -> Result<RoomPolicy, PolicyError> {
        for pin in [&patch.pin, &patch.moderator_pin]
            .into_iter()
            .flatten()
            .flatten()
        {
            if !valid_pin(pin) {
                return Err(PolicyError::BadPin);
            }
        }
        let mut map = super::lock(&self.map);
        if !map.contains_key(room) && map.len() >= self.max {
            return Err(PolicyError::TooMany(self.max));
        }
        let p = map.entry(room.clone()).or_default();
        if let Some(pin) = &patch.pin {
            p.pin = pin.clone();
        }
        if let Some(pin) = &patch.moderator_pin {
            p.moderator_pin = pin.clone();
        }
        if let Some(l) = patch.locked {
            p.locked = l;
        }
        if let Some(t) = patch.tones {
            p.tones = t;
        }
        if let Some(f) = patch.floor {
            p.floor = Some(f);
        }
        if let Some(s) = patch.switch_layout {
            p.switch_layout = Some(s);
        }
        p.refresh();
        Ok(p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_grant_roles_and_patches_merge() {
        let decl = RoomDecl {
            name: "bridge".into(),
            pin: Some("4321".into()),
            moderator_pin: Some("9999".into()),
            locked: false,
            tones: true,
            media_encryption: None,
            floor: None,
            switch_layout: None,
            audience_layout: None,
        };
        let all = Policies::new(&[decl], 10);
        let id = RoomId::parse("bridge").unwrap();
        let p = all.get(&id);
        assert_eq!(p.check_pin(Some("4321")), Some(false));
        assert_eq!(p.check_pin(Some("9999")), Some(true));
        assert_eq!(p.check_pin(Some("1234")), None);
        assert_eq!(p.check_pin(None), None);
        let patch: PolicyPatch = serde_json::from_str(r#"{"pin": null, "locked": true}"#).unwrap();
        let p = all.patch(&id, &patch).unwrap();
        assert!(p.locked && !p.needs_pin());
        assert_eq!(p.check_pin(None), Some(false));
        assert_eq!(
            p.moderator_pin.as_deref(),
            Some("9999"),
            "absent fields stay"
        );
        let bad: PolicyPatch = serde_json::from_str(r#"{"pin": "12a4"}"#).unwrap();
        assert_eq!(all.patch(&id, &bad), Err(PolicyError::BadPin));
        assert!(serde_json::from_str::<PolicyPatch>(r#"{"pinn": "1"}"#).is_err());
        // Rooms nobody declared are open, and the PINs never serialise.
        let open = all.get(&RoomId::parse("other").unwrap());
        assert_eq!(open.check_pin(None), Some(false));
        let json = serde_json::to_string(&all.get(&id)).unwrap();
        assert!(!json.contains("9999"), "{json}");
    }
}
