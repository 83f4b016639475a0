//! DTMF from callers: RFC 4733 `telephone-event` RTP packets and SIP INFO bodies
//! (`application/dtmf-relay`, `application/dtmf`).
//!
//! An RFC 4733 event is sent as several packets (with growing duration, the last three with
//! the E bit) that share one RTP timestamp. Some phones never set the marker bit on the
//! first, so a key is recognised by a **new timestamp**, not by the marker.

/// Recognises keys in a stream of `telephone-event` packets.
#[derive(Debug, Default)]
pub struct EventReceiver {
    /// Timestamp of the last event reported.
    last: Option<u32>,
}

impl EventReceiver {
    /// One `telephone-event` packet (RTP timestamp, payload); the key if it starts a new event.
    pub fn packet(&mut self, ts: u32, payload: &[u8]) -> Option<char> {
        if payload.len() < 4 {
            return None;
        }
        let key = event_key(payload[0])?;
        if self.last == Some(ts) {
            return None;
        }
        self.last = Some(ts);
        Some(key)
    }
}

/// RFC 4733 3.2: events 0–9, `*` (10), `#` (11), A–D (12–15).
fn event_key(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => (b'0' + event) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + event - 12) as char,
        _ => return None,
    })
}

/// The key in a SIP INFO body: `Signal=5` (`application/dtmf-relay`) or a bare `5`
/// (`application/dtmf`).
pub fn info_key(content_type: &str, body: &[u8]) -> Option<char> {
    let body = std::str::from_utf8(body.get(..body.len().min(512))?).ok()?;
    let ct = content_type.trim().to_ascii_lowercase();
    let value = if ct.starts_with("application/dtmf-relay") {
        body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?
    } else if ct.starts_with("application/dtmf") {
        body.trim()
    } else {
        return None;
    };
    let mut chars = value.chars();
    let c = chars.next()?.to_ascii_uppercase();
    if chars.next().is_some() {
        // Some send the event number (10 for `*`).
        return value.parse::<u8>().ok().and_then(event_key);
    }
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_keyed_by_timestamp_not_marker() {
        let mut r = EventReceiver::default();
        // Key 5: three packets with the same timestamp (no marker anywhere), the last with E.
        assert_eq!(r.packet(1000, &[5, 0x0a, 0, 160]), Some('5'));
        assert_eq!(r.packet(1000, &[5, 0x0a, 1, 64]), None);
        assert_eq!(r.packet(1000, &[5, 0x8a, 1, 224]), None);
        assert_eq!(r.packet(1000, &[5, 0x8a, 1, 224]), None, "E-bit repeats");
        // The same key again is a new event: a new timestamp.
        assert_eq!(r.packet(2600, &[5, 0x0a, 0, 160]), Some('5'));
        assert_eq!(r.packet(4000, &[11, 0x0a, 0, 160]), Some('#'));
        assert_eq!(r.packet(5000, &[10, 0x0a, 0, 160]), Some('*'));
        assert_eq!(r.packet(6000, &[16, 0, 0, 0]), None, "flash is not a key");
        assert_eq!(r.packet(7000, &[1, 0]), None, "short packet");
    }

    #[test]
    fn info_bodies() {
        assert_eq!(
            info_key("application/dtmf-relay", b"Signal=7\r\nDuration=160\r\n"),
            Some('7')
        );
        assert_eq!(
            info_key("application/dtmf-relay", b"Signal= *\r\n"),
            Some('*')
        );
        assert_eq!(
            info_key("application/dtmf-relay", b"Signal=11\r\n"),
            Some('#')
        );
        assert_eq!(info_key("application/dtmf", b"#"), Some('#'));
        assert_eq!(info_key("text/plain", b"Signal=1"), None);
        assert_eq!(info_key("application/dtmf-relay", b"Duration=1"), None);
        assert_eq!(info_key("application/dtmf-relay", &[0xff, 0xfe]), None);
    }
}
