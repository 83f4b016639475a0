//! One participant's video ingest: its packets reordered and cut into frames
//! ([`VideoAssembler`]), the decoder for the codec its payload type names (H.264, AV1,
//! VP8, VP9; replaced when the sender switches codec), the ingest limits (picture size,
//! bytes per frame, frame rate — an input over them is refused for [`REJECT_FOR`]), and
//! keyframe requests upstream after loss or an undecodable frame (rate-limited PLIs).
//! The video loop owns one per participant and calls it from its tick.

use super::Upstream;
use crate::codec::video::{Decoded, IngestLimits, VideoDecoder};
use crate::codec::{CodecError, VideoCodec};
use crate::media::jitter::{VideoAssembler, VideoPop};
use crate::media::I420Frame;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long an input over the ingest limits is refused before it may try again.
pub const REJECT_FOR: Duration = Duration::from_secs(5);
/// Minimum time between two PLIs to the same sender.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

pub(super) struct Input {
    pub(super) assembler: VideoAssembler,
    pub(super) decoder: Option<VideoDecoder>,
    pub(super) payload_types: HashMap<u8, VideoCodec>,
    pub(super) last_pt: Option<u8>,
    pub(super) need_keyframe: bool,
    pub(super) last_pli: Option<Instant>,
    pub(super) upstream: Option<mpsc::Sender<Upstream>>,
    pub(super) frame: I420Frame,
    pub(super) last_picture: Option<Instant>,
    pub(super) decoded: u64,
    pub(super) pli_sent: u64,
    pub(super) limits: IngestLimits,
    pub(super) max_fps: u32,
    /// Start of the current one-second frame-rate window and frames decoded in it.
    pub(super) fps_window: (Option<Instant>, u32),
    /// Refused until then (over the limits).
    pub(super) rejected_until: Option<Instant>,
    /// Why it was refused, until the room has been told.
    pub(super) rejection_to_report: Option<String>,
}

impl Input {
    pub(super) fn new(limits: IngestLimits, max_fps: u32) -> Self {
        Self {
            assembler: VideoAssembler::default(),
            decoder: None,
            payload_types: HashMap::new(),
            last_pt: None,
            need_keyframe: true,
            last_pli: None,
            upstream: None,
            frame: I420Frame::default(),
            last_picture: None,
            decoded: 0,
            pli_sent: 0,
            limits,
            max_fps,
            fps_window: (None, 0),
            rejected_until: None,
            rejection_to_report: None,
        }
    }

    /// Refuses this input for [`REJECT_FOR`] (frames dropped undecoded).
    pub(super) fn reject(&mut self, now: Instant, reason: String) {
        self.rejected_until = Some(now + REJECT_FOR);
        self.rejection_to_report = Some(reason);
        self.need_keyframe = true;
        self.discard_pending(now);
    }

    /// Counts a decoded frame; false when the frame rate is over the limit (with 25 %
    /// tolerance for bursts).
    pub(super) fn frame_rate_ok(&mut self, now: Instant) -> bool {
        let (start, n) = &mut self.fps_window;
        if start.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1)) {
            *start = Some(now);
            *n = 0;
        }
        *n += 1;
        *n <= self.max_fps + self.max_fps / 4
    }

    pub(super) fn request_keyframe(&mut self, now: Instant) {
        self.need_keyframe = true;
        if self
            .last_pli
            .is_some_and(|t| now.duration_since(t) < PLI_INTERVAL)
        {
            return;
        }
        self.keyframe_now(now);
    }

    /// Sends a PLI now without waiting for the keyframe: the frames before it still
    /// decode (e.g. the sender was asked for a larger picture, which should start with one).
    pub(super) fn keyframe_now(&mut self, now: Instant) {
        if let Some(up) = &self.upstream {
            if up.try_send(Upstream::KeyframeRequest).is_ok() {
                self.last_pli = Some(now);
                self.pli_sent += 1;
            }
        }
    }

    /// Drops complete frames of a participant nobody sees; it will need a keyframe.
    pub(super) fn discard_pending(&mut self, now: Instant) {
        while self.assembler.pop(now).is_some() {
            self.need_keyframe = true;
        }
    }

    /// Decodes every complete frame; returns whether a new picture arrived.
    pub(super) fn decode_pending(&mut self, now: Instant) -> bool {
        if let Some(until) = self.rejected_until {
            if now < until {
                self.discard_pending(now);
                return false;
            }
            self.rejected_until = None;
        }
        let mut got = false;
        while let Some(pop) = self.assembler.pop(now) {
            match pop {
                VideoPop::Lost => self.request_keyframe(now),
                VideoPop::Frame { payloads, .. } => {
                    let Some(codec) = self
                        .last_pt
                        .and_then(|pt| self.payload_types.get(&pt).copied())
                    else {
                        continue;
                    };
                    if self.decoder.as_ref().is_none_or(|d| d.codec() != codec) {
                        match VideoDecoder::with_limits(codec, self.limits) {
                            Ok(d) => self.decoder = Some(d),
                            Err(e) => {
                                tracing::warn!("video decoder: {e}");
                                continue;
                            }
                        }
                        self.need_keyframe = true;
                    }
                    let dec = self.decoder.as_mut().expect("created above");
                    let result = dec.decode(&payloads, self.need_keyframe, &mut self.frame);
                    self.assembler.recycle(payloads);
                    match result {
                        Ok(Decoded::Picture { .. }) if !self.frame_rate_ok(now) => {
                            let max = self.max_fps;
                            self.reject(now, format!("frame rate above {max} fps"));
                            return got;
                        }
                        Ok(Decoded::Picture { .. }) => {
                            self.need_keyframe = false;
                            self.last_picture = Some(now);
                            self.decoded += 1;
                            got = true;
                        }
                        Ok(Decoded::Nothing) => {
                            if self.need_keyframe {
                                self.request_keyframe(now);
                            }
                        }
                        Err(CodecError::OverLimits(reason)) => {
                            self.reject(now, reason);
                            return got;
                        }
                        Err(e) => {
                            tracing::debug!("video decode: {e}");
                            self.request_keyframe(now);
                        }
                    }
                }
            }
        }
        // Still waiting for a keyframe: keep asking (rate-limited).
        if self.need_keyframe && self.last_pt.is_some() {
            self.request_keyframe(now);
        }
        got
    }
}
