//! HLS with fMP4 (CMAF) segments: a rolling window of the audience picture's segments in
//! memory and the media playlist that lists them (RFC 8216, version 7: `EXT-X-MAP` names
//! the init segment). Pure: segments in, playlist text and segment bytes out; the live
//! thread fills it, HTTP handlers read it.

use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt::Write;

/// One media segment (a `moof` + `mdat` fragment).
#[derive(Clone, Debug)]
pub struct Segment {
    pub sequence: u64,
    pub duration_s: f64,
    pub data: Bytes,
}

/// The init segment and the last `window` media segments.
#[derive(Debug)]
pub struct Playlist {
    init: Option<Bytes>,
    segments: VecDeque<Segment>,
    window: usize,
    next_sequence: u64,
    /// The longest segment so far, rounded up (EXT-X-TARGETDURATION may not shrink).
    target_s: u32,
    /// The codecs of the stream (`CODECS` of a multivariant playlist; informative).
    pub codecs: String,
}

impl Playlist {
    pub fn new(window: usize, target_s: u32) -> Self {
        Self {
            init: None,
            segments: VecDeque::with_capacity(window + 1),
            window: window.max(3),
            next_sequence: 0,
            target_s,
            codecs: String::new(),
        }
    }

    pub fn set_init(&mut self, init: Bytes) {
        self.init = Some(init);
    }

    pub fn init(&self) -> Option<Bytes> {
        self.init.clone()
    }

    /// Adds a finished segment; the oldest beyond the window goes.
    pub fn push(&mut self, data: Bytes, duration_s: f64) {
        self.target_s = self.target_s.max(duration_s.ceil() as u32);
        self.segments.push_back(Segment {
            sequence: self.next_sequence,
            duration_s,
            data,
        });
        self.next_sequence += 1;
        while self.segments.len() > self.window {
            self.segments.pop_front();
        }
    }

    /// Segments in the window.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn segment(&self, sequence: u64) -> Option<Bytes> {
        self.segments
            .iter()
            .find(|s| s.sequence == sequence)
            .map(|s| s.data.clone())
    }

    /// The media playlist; `query` (e.g. `?token=…`) is appended to every URI, as players
    /// do not carry the playlist's own query over to the segments.
    pub fn render(&self, query: &str) -> String {
        let mut out = String::with_capacity(256 + 48 * self.segments.len());
        let first = self.segments.front().map_or(0, |s| s.sequence);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4{query}\"\n",
            self.target_s
        );
        for s in &self.segments {
            let _ = write!(
                out,
                "#EXTINF:{:.3},\nsegment-{}.m4s{query}\n",
                s.duration_s, s.sequence
            );
        }
        out
    }
}

/// `segment-{n}.m4s` → `n`.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".m4s")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolling_window_with_the_init_segment_and_the_query_on_every_uri() {
        let mut p = Playlist::new(3, 2);
        p.set_init(Bytes::from_static(b"init"));
        for i in 0..5 {
            p.push(Bytes::from(vec![i as u8]), if i == 4 { 2.4 } else { 2.0 });
        }
        assert_eq!(p.len(), 3);
        let text = p.render("?token=abc");
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:3\n"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{text}");
        assert!(
            text.contains("#EXT-X-MAP:URI=\"init.mp4?token=abc\"\n"),
            "{text}"
        );
        assert!(
            text.contains("#EXTINF:2.400,\nsegment-4.m4s?token=abc\n"),
            "{text}"
        );
        assert!(!text.contains("segment-1.m4s"));
        assert_eq!(p.segment(4).as_deref(), Some(&[4u8][..]));
        assert!(p.segment(1).is_none(), "left the window");
        assert_eq!(parse_segment_name("segment-17.m4s"), Some(17));
        for bad in ["segment-.m4s", "segment-1.ts", "../x", "segment--1.m4s"] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
