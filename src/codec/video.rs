//! Video: per-participant decoders (H.264 via openh264, AV1 via dav1d, VP8/VP9 via
//! libvpx) that take one frame's RTP payloads and leave the picture in a reused
//! `I420Frame`; the output encoders (openh264, and libvpx's VP8 for viewers without
//! H.264) behind one [`VideoEncoder`].

use super::{CodecError, OutputCodec, VideoCodec};
use crate::media::I420Frame;
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
    UsageType,
};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

/// Result of feeding one frame to a decoder.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Decoded {
    /// A new picture is in the output frame.
    Picture { keyframe: bool },
    /// The data was accepted but produced no picture (yet).
    Nothing,
}

/// What one input stream may cost: picture size (either orientation, so a portrait
/// phone at 1080x1920 fits 1920x1080) and bytes per access unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_frame_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_width: 1920,
            max_height: 1080,
            max_frame_bytes: 1 << 20,
        }
    }
}

impl IngestLimits {
    /// Whether a `w`x`h` picture is within the limits, in either orientation.
    pub fn fits(&self, w: u32, h: u32) -> bool {
        let (a, b) = (self.max_width, self.max_height);
        (w <= a && h <= b) || (w <= b && h <= a)
    }

    fn check_picture(&self, w: u32, h: u32) -> Result<(), CodecError> {
        if self.fits(w, h) {
            Ok(())
        } else {
            Err(CodecError::OverLimits(format!(
                "picture {w}x{h} larger than {}x{}",
                self.max_width, self.max_height
            )))
        }
    }
}

/// One incoming stream's decoder, with its access-unit buffers.
pub struct VideoDecoder {
    codec: VideoCodec,
    inner: Inner,
    limits: IngestLimits,
    au: Vec<u8>,
    /// Depacketiser scratch (a fragmented NAL/OBU being collected).
    frag: Vec<u8>,
    /// VP9: the frames (spatial layers) of the picture in `au`.
    vp9_frames: super::depack::Vp9Frames,
}

enum Inner {
    H264(Box<openh264::decoder::Decoder>),
    Av1(Box<dav1d::Decoder>),
    Vpx(Box<super::vpx::VpxDecoder>),
}

impl VideoDecoder {
    /// A decoder with the default ingest limits.
    pub fn new(codec: VideoCodec) -> Result<Self, CodecError> {
        Self::with_limits(codec, IngestLimits::default())
    }

    pub fn with_limits(codec: VideoCodec, limits: IngestLimits) -> Result<Self, CodecError> {
        let inner = match codec {
            VideoCodec::H264 => Inner::H264(Box::new(
                openh264::decoder::Decoder::new().map_err(|e| CodecError::H264(e.to_string()))?,
            )),
            VideoCodec::Av1 => {
                let mut s = dav1d::Settings::new();
                s.set_n_threads(1);
                s.set_max_frame_delay(1);
                // dav1d refuses larger frames before allocating them.
                s.set_frame_size_limit(limits.max_width.saturating_mul(limits.max_height));
                Inner::Av1(Box::new(
                    dav1d::Decoder::with_settings(&s)
                        .map_err(|e| CodecError::Av1(e.to_string()))?,
                ))
            }
            VideoCodec::Vp8 => Inner::Vpx(Box::new(super::vpx::VpxDecoder::new(
                super::vpx::VpxKind::Vp8,
            )?)),
            VideoCodec::Vp9 => Inner::Vpx(Box::new(super::vpx::VpxDecoder::new(
                super::vpx::VpxKind::Vp9,
            )?)),
        };
        Ok(Self {
            codec,
            inner,
            limits,
            au: Vec::with_capacity(64 * 1024),
            frag: Vec::with_capacity(16 * 1024),
            vp9_frames: Vec::with_capacity(4),
        })
    }

    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Reassembles the access unit from its RTP payloads (no decoding), within the limit.
    fn depacketize(&mut self, payloads: &[Bytes]) -> Result<(), CodecError> {
        let limit = self.limits.max_frame_bytes;
        match self.codec {
            VideoCodec::H264 => super::depack::h264(payloads, &mut self.au, &mut self.frag, limit),
            VideoCodec::Av1 => super::depack::av1(payloads, &mut self.au, &mut self.frag, limit),
            VideoCodec::Vp8 => super::depack::vp8(payloads, &mut self.au, limit),
            VideoCodec::Vp9 => {
                super::depack::vp9(payloads, &mut self.au, &mut self.vp9_frames, limit)
            }
        }
        .map_err(|e| match e {
            super::depack::DepackError::TooLarge { .. } => CodecError::OverLimits(e.to_string()),
            other => CodecError::Depacketize(other.to_string()),
        })
    }

    /// Whether the reassembled access unit can start decoding (IDR / sequence header).
    fn is_keyframe(&self) -> bool {
        match self.codec {
            VideoCodec::H264 => h264_has_idr(&self.au),
            VideoCodec::Av1 => av1_has_sequence_header(&self.au),
            VideoCodec::Vp8 => super::vpx::vp8_is_keyframe(&self.au),
            VideoCodec::Vp9 => self.vp9_frames.first().is_some_and(|r| {
                super::vpx::vp9_header(&self.au[r.clone()]).is_some_and(|h| h.keyframe)
            }),
        }
    }

    /// The picture size the headers of the access unit declare, checked before the
    /// decoder allocates for it.
    fn check_declared_size(&self) -> Result<(), CodecError> {
        match self.codec {
            VideoCodec::Av1 => {
                if let Some((w, h)) = av1_sequence_max_size(&self.au) {
                    self.limits.check_picture(w, h)?;
                }
            }
            VideoCodec::Vp8 => {
                if let Some((w, h)) = super::vpx::vp8_keyframe_size(&self.au) {
                    self.limits.check_picture(w, h)?;
                }
            }
            VideoCodec::Vp9 => {
                for r in &self.vp9_frames {
                    if let Some((w, h)) = super::vpx::vp9_frame_size(&self.au[r.clone()]) {
                        self.limits.check_picture(w, h)?;
                    }
                }
            }
            VideoCodec::H264 => {}
        }
        Ok(())
    }

    /// Decodes one frame. `need_keyframe` drops non-keyframes (after loss) instead of
    /// feeding the decoder pictures with missing references.
    pub fn decode(
        &mut self,
        payloads: &[Bytes],
        need_keyframe: bool,
        out: &mut I420Frame,
    ) -> Result<Decoded, CodecError> {
        self.depacketize(payloads)?;
        if self.au.is_empty() {
            return Ok(Decoded::Nothing);
        }
        let keyframe = self.is_keyframe();
        if need_keyframe && !keyframe {
            return Ok(Decoded::Nothing);
        }
        self.check_declared_size()?;
        match &mut self.inner {
            Inner::Vpx(dec) => {
                let limits = self.limits;
                let accept = |w, h| limits.check_picture(w, h);
                let mut got = false;
                if self.codec == VideoCodec::Vp9 {
                    for r in &self.vp9_frames {
                        got |= dec.decode(&self.au[r.clone()], out, accept)?;
                    }
                } else {
                    got = dec.decode(&self.au, out, accept)?;
                }
                Ok(if got {
                    Decoded::Picture { keyframe }
                } else {
                    Decoded::Nothing
                })
            }
            Inner::H264(dec) => match dec
                .decode(&self.au)
                .map_err(|e| CodecError::H264(e.to_string()))?
            {
                Some(yuv) => {
                    let (w, h) = yuv.dimensions();
                    self.limits.check_picture(w as u32, h as u32)?;
                    let (ys, us, vs) = yuv.strides();
                    out.copy_from_planes(w, h, yuv.y(), ys, yuv.u(), us, yuv.v(), vs);
                    Ok(Decoded::Picture { keyframe })
                }
                None => Ok(Decoded::Nothing),
            },
            Inner::Av1(dec) => {
                let data = self.au.clone();
                match dec.send_data(data, None, None, None) {
                    Ok(()) | Err(dav1d::Error::Again) => {}
                    Err(e) => return Err(CodecError::Av1(e.to_string())),
                }
                let mut got = false;
                loop {
                    match dec.get_picture() {
                        Ok(pic) => {
                            if pic.pixel_layout() != dav1d::PixelLayout::I420
                                || pic.bit_depth() != 8
                            {
                                return Err(CodecError::Unsupported(format!(
                                    "{:?} {}-bit",
                                    pic.pixel_layout(),
                                    pic.bit_depth()
                                )));
                            }
                            self.limits.check_picture(pic.width(), pic.height())?;
                            use dav1d::PlanarImageComponent as C;
                            let (y, u, v) = (pic.plane(C::Y), pic.plane(C::U), pic.plane(C::V));
                            out.copy_from_planes(
                                pic.width() as usize,
                                pic.height() as usize,
                                &y,
                                pic.stride(C::Y) as usize,
                                &u,
                                pic.stride(C::U) as usize,
                                &v,
                                pic.stride(C::V) as usize,
                            );
                            got = true;
                        }
                        Err(dav1d::Error::Again) => break,
                        Err(e) => return Err(CodecError::Av1(e.to_string())),
                    }
                    // Push any data dav1d could not take before.
                    match dec.send_pending_data() {
                        Ok(()) | Err(dav1d::Error::Again) => {}
                        Err(e) => return Err(CodecError::Av1(e.to_string())),
                    }
                }
                Ok(if got {
                    Decoded::Picture { keyframe }
                } else {
                    Decoded::Nothing
                })
            }
        }
    }
}

/// Scans an Annex B access unit for an IDR slice (NAL type 5).
pub fn h264_has_idr(au: &[u8]) -> bool {
    annexb_nal_types(au).any(|t| t == 5)
}

/// NAL unit types in an Annex B byte stream.
pub fn annexb_nal_types(au: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + 3 < au.len() {
            if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
                i += 3;
                return Some(au[i] & 0x1f);
            }
            i += 1;
        }
        None
    })
}

/// One OBU of a low-overhead AV1 bitstream (OBUs with size fields): its type, where it
/// lies in the stream, and its payload.
struct Obu<'a> {
    kind: u8,
    range: std::ops::Range<usize>,
    body: &'a [u8],
}

/// The OBUs of a low-overhead bitstream, in order; stops at the first one without a size
/// field or running past the end.
fn obus(data: &[u8]) -> impl Iterator<Item = Obu<'_>> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let &header = data.get(i)?;
        if header & 0x02 == 0 {
            return None;
        }
        let at = i + 1 + usize::from(header & 0x04 != 0);
        let (size, used) = super::depack::leb128(data.get(at..)?)?;
        let body_start = at + used;
        let end = body_start.checked_add(size).filter(|&e| e <= data.len())?;
        let obu = Obu {
            kind: (header >> 3) & 0x0f,
            range: i..end,
            body: &data[body_start..end],
        };
        i = end;
        Some(obu)
    })
}

/// Whether a low-overhead AV1 bitstream holds a sequence header OBU (type 1), which a
/// browser sends with every keyframe.
pub fn av1_has_sequence_header(data: &[u8]) -> bool {
    obus(data).any(|o| o.kind == 1)
}

/// Splits a low-overhead AV1 bitstream (OBUs with size fields, as in `.obu` files) into
/// temporal units at its temporal delimiters. Stops at the first malformed OBU.
pub fn av1_temporal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut units: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for obu in obus(data) {
        if obu.kind == 2 && obu.range.start > start {
            units.push(&data[start..obu.range.start]);
            start = obu.range.start;
        }
        end = obu.range.end;
    }
    if end > start {
        units.push(&data[start..end]);
    }
    units
}

/// The maximum frame size a sequence header in `data` (low-overhead OBUs with size
/// fields) declares, if there is one: lets an oversize AV1 stream be refused with a clear
/// reason before the decoder sees it.
pub fn av1_sequence_max_size(data: &[u8]) -> Option<(u32, u32)> {
    obus(data)
        .find(|o| o.kind == 1)
        .and_then(|o| parse_sequence_size(o.body))
}

/// `max_frame_width_minus_1`/`max_frame_height_minus_1` of a sequence header OBU body
/// (AV1 spec 5.5.1).
fn parse_sequence_size(body: &[u8]) -> Option<(u32, u32)> {
    let mut b = super::bits::Bits::new(body);
    b.f(3)?; // seq_profile
    b.f(1)?; // still_picture
    if b.f(1)? == 1 {
        b.f(5)?; // reduced_still_picture_header: seq_level_idx
    } else {
        let mut decoder_model = false;
        let mut buffer_delay_len = 0;
        if b.f(1)? == 1 {
            // timing_info
            b.f(32)?;
            b.f(32)?;
            if b.f(1)? == 1 {
                b.uvlc()?;
            }
            decoder_model = b.f(1)? == 1;
            if decoder_model {
                buffer_delay_len = b.f(5)? + 1;
                b.f(32)?;
                b.f(5)?;
                b.f(5)?;
            }
        }
        let initial_display_delay = b.f(1)? == 1;
        for _ in 0..=b.f(5)? {
            b.f(12)?; // operating_point_idc
            if b.f(5)? > 7 {
                b.f(1)?; // seq_tier
            }
            if decoder_model && b.f(1)? == 1 {
                b.f(buffer_delay_len)?;
                b.f(buffer_delay_len)?;
                b.f(1)?;
            }
            if initial_display_delay && b.f(1)? == 1 {
                b.f(4)?;
            }
        }
    }
    let wbits = b.f(4)? + 1;
    let hbits = b.f(4)? + 1;
    Some((b.f(wbits)? + 1, b.f(hbits)? + 1))
}

/// Settings of an output encoder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    /// Periodic IDR (safety net for receivers that missed a PLI answer).
    pub idr_interval_frames: u32,
    pub complexity: EncoderComplexity,
    /// openh264's pre-analysis (measured by `tessera bench encoder`, BENCHMARKS.md).
    pub analysis: EncoderAnalysis,
}

/// openh264's analysis passes before encoding a frame. The default is what measured best
/// for composed pictures (`tessera bench encoder`, BENCHMARKS.md "Encoder analysis"): both
/// off. Background detection *off* gains 0.18 dB (camera grid) / 0.54 dB (synthetic) at
/// the same bitrate; with it off, scene-change detection changes nothing on the camera
/// grid and costs 0.21 dB on the synthetic one (whose scenes cut), while it alone was
/// 3.4 % of a 9-person room's CPU (a SAD pass over every frame, `perf`).
///
/// Adaptive quantisation is not among them: this openh264 turns it off whatever it is
/// asked (`ParamValidation`: "algorithms needs to be refactored"), as reading the
/// encoder's parameters back shows, so encoders ask for it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderAnalysis {
    /// Scene-change detection (an IDR at a cut).
    pub scene_change: bool,
    /// Background detection (cheaper coding of a static background).
    pub background: bool,
}

/// openh264's speed/quality trade-off. `Low` measured ~40% cheaper than `Medium` at
/// 720p composites (BENCHMARKS.md), which is what lets a 2-core box serve 9 viewers.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum EncoderComplexity {
    #[default]
    Low,
    Medium,
    High,
}

impl From<EncoderComplexity> for openh264::encoder::Complexity {
    fn from(c: EncoderComplexity) -> Self {
        match c {
            EncoderComplexity::Low => Self::Low,
            EncoderComplexity::Medium => Self::Medium,
            EncoderComplexity::High => Self::High,
        }
    }
}

/// One output's H.264 encoder (constrained baseline, realtime).
pub struct H264Encoder {
    enc: Encoder,
    force_idr: bool,
    settings: EncoderSettings,
    /// openh264 initialises on the first frame; `warm_up` does it ahead of time.
    initialised: bool,
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, CodecError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            // Rate control only holds the bitrate when it may skip a frame under pressure.
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.idr_interval_frames,
            ))
            .complexity(settings.complexity.into())
            .scene_change_detect(settings.analysis.scene_change)
            .adaptive_quantization(false)
            .background_detection(settings.analysis.background);
        let enc = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| CodecError::H264(e.to_string()))?;
        Ok(Self {
            enc,
            force_idr: true,
            settings,
            initialised: false,
        })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Does openh264's initialisation now (it happens on the first frame otherwise) by
    /// encoding one black frame, so that a ready encoder costs a media tick nothing. The
    /// next real frame is still an IDR.
    pub fn warm_up(&mut self) -> Result<(), CodecError> {
        if !self.initialised {
            let black = I420Frame::new(self.settings.width as usize, self.settings.height as usize);
            let mut out = Vec::new();
            self.encode(&black, &mut out)?;
            self.force_idr = true;
        }
        Ok(())
    }

    /// Changes the frame rate and bitrate of a running encoder (no re-initialisation, no
    /// IDR): used when a picture's rate changes (output frame-rate steps under load, a
    /// viewer's rate below the lowest rung). Initialises the encoder first if needed.
    pub fn set_rate(&mut self, fps: u32, bitrate_bps: u32) -> Result<(), CodecError> {
        use openh264_sys2::{
            SBitrateInfo, ENCODER_OPTION_BITRATE, ENCODER_OPTION_FRAME_RATE, SPATIAL_LAYER_ALL,
        };
        if fps == self.settings.fps && bitrate_bps == self.settings.bitrate_bps {
            return Ok(());
        }
        self.warm_up()?;
        let mut rate = fps.max(1) as f32;
        let mut bitrate = SBitrateInfo {
            iLayer: SPATIAL_LAYER_ALL,
            iBitrate: bitrate_bps.min(i32::MAX as u32) as i32,
        };
        // SAFETY: FRAME_RATE reads one f32, BITRATE one SBitrateInfo, from the pointers.
        let rc = unsafe {
            let api = self.enc.raw_api();
            let a = api.set_option(ENCODER_OPTION_FRAME_RATE, (&mut rate as *mut f32).cast());
            let b = api.set_option(
                ENCODER_OPTION_BITRATE,
                (&mut bitrate as *mut SBitrateInfo).cast(),
            );
            a | b
        };
        if rc != 0 {
            return Err(CodecError::H264(format!("SetOption(rate) returned {rc}")));
        }
        self.settings.fps = fps;
        self.settings.bitrate_bps = bitrate_bps;
        Ok(())
    }

    /// The frame rate and bitrate openh264 runs with, read back through its raw API.
    pub fn effective_rate(&mut self) -> Result<(f32, u32), CodecError> {
        use openh264_sys2::{
            SBitrateInfo, ENCODER_OPTION_BITRATE, ENCODER_OPTION_FRAME_RATE, SPATIAL_LAYER_ALL,
        };
        let mut rate: f32 = 0.0;
        let mut bitrate = SBitrateInfo {
            iLayer: SPATIAL_LAYER_ALL,
            iBitrate: 0,
        };
        // SAFETY: as in `set_option`, GetOption writes one f32 / one SBitrateInfo.
        let rc = unsafe {
            let api = self.enc.raw_api();
            let a = api.get_option(ENCODER_OPTION_FRAME_RATE, (&mut rate as *mut f32).cast());
            let b = api.get_option(
                ENCODER_OPTION_BITRATE,
                (&mut bitrate as *mut SBitrateInfo).cast(),
            );
            a | b
        };
        if rc != 0 {
            return Err(CodecError::H264(format!("GetOption(rate) returned {rc}")));
        }
        Ok((rate, bitrate.iBitrate.max(0) as u32))
    }

    /// The complexity mode openh264 is actually running with, read back through its raw
    /// API (so a setting that never reaches the encoder cannot go unnoticed). openh264
    /// initialises on the first frame: `Err` before it.
    pub fn effective_complexity(&mut self) -> Result<EncoderComplexity, CodecError> {
        use openh264_sys2::{
            ENCODER_OPTION_COMPLEXITY, HIGH_COMPLEXITY, LOW_COMPLEXITY, MEDIUM_COMPLEXITY,
        };
        let mut mode: i32 = -1;
        // SAFETY: GetOption(ENCODER_OPTION_COMPLEXITY) writes one int32 to the pointer.
        let rc = unsafe {
            self.enc
                .raw_api()
                .get_option(ENCODER_OPTION_COMPLEXITY, (&mut mode as *mut i32).cast())
        };
        if rc != 0 {
            return Err(CodecError::H264(format!("GetOption returned {rc}")));
        }
        match mode {
            m if m == LOW_COMPLEXITY as i32 => Ok(EncoderComplexity::Low),
            m if m == MEDIUM_COMPLEXITY as i32 => Ok(EncoderComplexity::Medium),
            m if m == HIGH_COMPLEXITY as i32 => Ok(EncoderComplexity::High),
            other => Err(CodecError::H264(format!("unknown complexity mode {other}"))),
        }
    }

    /// The analysis passes openh264 is actually running with, read back through its raw
    /// API (its whole parameter set). `Err` before the encoder is initialised.
    pub fn effective_analysis(&mut self) -> Result<EncoderAnalysis, CodecError> {
        let p = encoder_params(&mut self.enc)?;
        Ok(EncoderAnalysis {
            scene_change: p.bEnableSceneChangeDetect,
            background: p.bEnableBackgroundDetection,
        })
    }

    /// The next frame will be an IDR (PLI/FIR from the receiver, or a new receiver).
    pub fn request_keyframe(&mut self) {
        self.force_idr = true;
    }

    /// An IDR was asked for and not yet made.
    pub fn keyframe_pending(&self) -> bool {
        self.force_idr
    }

    /// Encodes `frame` into `out` (Annex B, cleared first). Returns whether it is an IDR.
    pub fn encode(&mut self, frame: &I420Frame, out: &mut Vec<u8>) -> Result<bool, CodecError> {
        if self.force_idr {
            self.enc.force_intra_frame();
            self.force_idr = false;
        }
        let bs = self
            .enc
            .encode(frame)
            .map_err(|e| CodecError::H264(e.to_string()))?;
        self.initialised = true;
        out.clear();
        bs.write_vec(out);
        Ok(matches!(bs.frame_type(), FrameType::IDR))
    }
}

/// The whole parameter set an (initialised) openh264 encoder runs with.
fn encoder_params(enc: &mut Encoder) -> Result<openh264_sys2::SEncParamExt, CodecError> {
    use openh264_sys2::{SEncParamExt, ENCODER_OPTION_SVC_ENCODE_PARAM_EXT};
    let mut p = SEncParamExt::default();
    // SAFETY: GetOption(SVC_ENCODE_PARAM_EXT) copies one SEncParamExt to the pointer.
    let rc = unsafe {
        enc.raw_api().get_option(
            ENCODER_OPTION_SVC_ENCODE_PARAM_EXT,
            (&mut p as *mut SEncParamExt).cast(),
        )
    };
    if rc != 0 {
        return Err(CodecError::H264(format!("GetOption returned {rc}")));
    }
    Ok(p)
}

/// One viewer-side encoder of either output codec, with one interface for the room.
pub enum VideoEncoder {
    /// Boxed: openh264's state is far larger than libvpx's handle.
    H264(Box<H264Encoder>),
    Vp8(super::vpx::Vp8Encoder),
}

impl VideoEncoder {
    pub fn new(codec: OutputCodec, settings: EncoderSettings) -> Result<Self, CodecError> {
        Ok(match codec {
            OutputCodec::H264 => Self::H264(Box::new(H264Encoder::new(settings)?)),
            OutputCodec::Vp8 => Self::Vp8(super::vpx::Vp8Encoder::new(settings)?),
        })
    }

    pub fn codec(&self) -> OutputCodec {
        match self {
            Self::H264(_) => OutputCodec::H264,
            Self::Vp8(_) => OutputCodec::Vp8,
        }
    }

    pub fn settings(&self) -> EncoderSettings {
        match self {
            Self::H264(e) => e.settings(),
            Self::Vp8(e) => e.settings(),
        }
    }

    pub fn warm_up(&mut self) -> Result<(), CodecError> {
        match self {
            Self::H264(e) => e.warm_up(),
            Self::Vp8(e) => e.warm_up(),
        }
    }

    pub fn set_rate(&mut self, fps: u32, bitrate_bps: u32) -> Result<(), CodecError> {
        match self {
            Self::H264(e) => e.set_rate(fps, bitrate_bps),
            Self::Vp8(e) => e.set_rate(fps, bitrate_bps),
        }
    }

    pub fn request_keyframe(&mut self) {
        match self {
            Self::H264(e) => e.request_keyframe(),
            Self::Vp8(e) => e.request_keyframe(),
        }
    }

    /// A keyframe was asked for and not yet made (the next frame must be encoded).
    pub fn keyframe_pending(&self) -> bool {
        match self {
            Self::H264(e) => e.keyframe_pending(),
            Self::Vp8(e) => e.keyframe_pending(),
        }
    }

    /// The frame rate and bitrate the library runs with: read back from openh264; for
    /// libvpx, the frame duration it is given and its configured target.
    pub fn effective_rate(&mut self) -> Result<(f32, u32), CodecError> {
        match self {
            Self::H264(e) => e.effective_rate(),
            Self::Vp8(e) => Ok((e.settings().fps as f32, e.target_kbps() * 1000)),
        }
    }

    /// Encodes one picture (Annex B for H.264, one frame for VP8); returns whether it is
    /// a keyframe (IDR).
    pub fn encode(&mut self, frame: &I420Frame, out: &mut Vec<u8>) -> Result<bool, CodecError> {
        match self {
            Self::H264(e) => e.encode(frame, out),
            Self::Vp8(e) => e.encode(frame, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::rgb_to_yuv;
    use bytes::Bytes;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::Payloader;

    /// Real libaom streams (3 frames each), made with
    /// `ffmpeg -f lavfi -i color=c=red:s=8192x8192:r=30 -frames:v 3 -c:v libaom-av1
    /// -cpu-used 8 -usage realtime -b:v 100k -f obu` (and blue 320x180).
    const AV1_HUGE: &[u8] = include_bytes!("../../tests/data/av1/red_8192x8192.obu");
    const AV1_SMALL: &[u8] = include_bytes!("../../tests/data/av1/blue_320x180.obu");

    /// `[video] complexity` must reach openh264: read back what the encoder runs with.
    /// (Before this was wired, every encoder ran at openh264's default, Medium.)
    #[test]
    fn configured_complexity_is_what_the_encoder_runs_with() {
        for c in [
            EncoderComplexity::Low,
            EncoderComplexity::Medium,
            EncoderComplexity::High,
        ] {
            let mut enc = small_encoder(c, Default::default());
            let mut au = Vec::new();
            enc.encode(
                &I420Frame::solid(320, 180, rgb_to_yuv(10, 200, 30)),
                &mut au,
            )
            .unwrap();
            assert_eq!(enc.effective_complexity().unwrap(), c);
        }
        assert_eq!(EncoderComplexity::default(), EncoderComplexity::Low);
    }

    /// A 320x180 encoder at 300 kbit/s.
    fn small_encoder(complexity: EncoderComplexity, analysis: EncoderAnalysis) -> H264Encoder {
        H264Encoder::new(EncoderSettings {
            width: 320,
            height: 180,
            fps: 30,
            bitrate_bps: 300_000,
            idr_interval_frames: 30,
            complexity,
            analysis,
        })
        .unwrap()
    }

    /// The analysis passes chosen (both off by default: BENCHMARKS.md "Encoder analysis")
    /// are what openh264 runs with, read back from the encoder; each can be turned on.
    #[test]
    fn configured_analysis_is_what_the_encoder_runs_with() {
        let off = EncoderAnalysis::default();
        assert_eq!(
            off,
            EncoderAnalysis {
                scene_change: false,
                background: false
            }
        );
        let on = |scene_change, background| EncoderAnalysis {
            scene_change,
            background,
        };
        for a in [off, on(true, false), on(false, true), on(true, true)] {
            let mut enc = small_encoder(EncoderComplexity::Low, a);
            enc.warm_up().unwrap();
            assert_eq!(enc.effective_analysis().unwrap(), a);
        }
        // Adaptive quantisation, asked for, is still off (why it is not a setting).
        let mut enc = Encoder::with_api_config(
            OpenH264API::from_source(),
            EncoderConfig::new().adaptive_quantization(true),
        )
        .unwrap();
        enc.encode(&I420Frame::solid(320, 180, rgb_to_yuv(10, 200, 30)))
            .unwrap();
        assert!(!encoder_params(&mut enc).unwrap().bEnableAdaptiveQuant);
    }

    fn av1_payloads(tu: &[u8]) -> Vec<Bytes> {
        rtc::rtp::codec::av1::Av1Payloader::default()
            .payload(1100, &Bytes::copy_from_slice(tu))
            .unwrap()
    }

    #[test]
    fn av1_sequence_headers_declare_their_size() {
        let units = av1_temporal_units(AV1_HUGE);
        assert_eq!(units.len(), 3);
        assert_eq!(av1_sequence_max_size(units[0]), Some((8192, 8192)));
        assert_eq!(av1_sequence_max_size(units[1]), None, "inter frame");
        assert_eq!(av1_sequence_max_size(AV1_SMALL), Some((320, 180)));
    }

    #[test]
    fn an_av1_stream_over_the_size_limit_is_refused_before_decoding() {
        let mut dec = VideoDecoder::new(VideoCodec::Av1).unwrap();
        let mut out = I420Frame::default();
        let units = av1_temporal_units(AV1_HUGE);
        match dec.decode(&av1_payloads(units[0]), true, &mut out) {
            Err(CodecError::OverLimits(why)) => assert!(why.contains("8192x8192"), "{why}"),
            other => panic!("expected OverLimits, got {other:?}"),
        }
        assert_eq!(out.width, 0, "nothing decoded");
        // The same decoder still takes a stream within the limits.
        let mut pictures = 0;
        for (i, tu) in av1_temporal_units(AV1_SMALL).into_iter().enumerate() {
            if let Decoded::Picture { .. } =
                dec.decode(&av1_payloads(tu), i == 0, &mut out).unwrap()
            {
                pictures += 1;
            }
        }
        assert!(pictures >= 1);
        assert_eq!((out.width, out.height), (320, 180));
        // Tighter limits refuse it too, and portrait fits a landscape limit.
        let limits = IngestLimits {
            max_width: 160,
            max_height: 320,
            max_frame_bytes: 1 << 20,
        };
        assert!(limits.fits(320, 160) && limits.fits(160, 320) && !limits.fits(320, 180));
        let mut dec = VideoDecoder::with_limits(VideoCodec::Av1, limits).unwrap();
        let tu = av1_temporal_units(AV1_SMALL)[0];
        assert!(matches!(
            dec.decode(&av1_payloads(tu), true, &mut out),
            Err(CodecError::OverLimits(_))
        ));
    }

    #[test]
    fn an_access_unit_over_the_byte_limit_is_refused() {
        let limits = IngestLimits {
            max_width: 1920,
            max_height: 1080,
            max_frame_bytes: 64,
        };
        let mut dec = VideoDecoder::with_limits(VideoCodec::Av1, limits).unwrap();
        let mut out = I420Frame::default();
        let tu = av1_temporal_units(AV1_SMALL)[0];
        assert!(tu.len() > 64);
        assert!(matches!(
            dec.decode(&av1_payloads(tu), true, &mut out),
            Err(CodecError::OverLimits(_))
        ));
    }

    #[test]
    fn encode_packetize_depacketize_decode_keeps_the_colour() {
        let settings = EncoderSettings {
            width: 320,
            height: 180,
            fps: 30,
            bitrate_bps: 500_000,
            idr_interval_frames: 300,
            complexity: Default::default(),
            analysis: Default::default(),
        };
        let mut enc = H264Encoder::new(settings).unwrap();
        let mut dec = VideoDecoder::new(VideoCodec::H264).unwrap();
        let colour = rgb_to_yuv(200, 40, 40);
        let frame = I420Frame::solid(320, 180, colour);
        let mut au = Vec::new();
        let mut out = I420Frame::default();
        let mut pay = H264Payloader::default();
        let mut pictures = 0;
        for i in 0..5 {
            let idr = enc.encode(&frame, &mut au).unwrap();
            assert_eq!(idr, i == 0, "first frame is an IDR, then P frames");
            let payloads = pay.payload(1200, &Bytes::from(au.clone())).unwrap();
            if let Decoded::Picture { .. } = dec.decode(&payloads, i == 0, &mut out).unwrap() {
                pictures += 1;
            }
        }
        assert!(pictures >= 4);
        assert_eq!((out.width, out.height), (320, 180));
        let (y, u, v) = out.mean_yuv(100, 50, 100, 80);
        assert!(
            (y - colour.0 as f64).abs() < 6.0
                && (u - colour.1 as f64).abs() < 6.0
                && (v - colour.2 as f64).abs() < 6.0
        );
        enc.request_keyframe();
        assert!(enc.encode(&frame, &mut au).unwrap());
        assert!(h264_has_idr(&au));
    }

    #[test]
    fn garbage_does_not_crash_decoders_or_break_them() {
        let mut out = I420Frame::default();
        // A real H.264 stream to feed after the garbage: the decoder must still work.
        let mut enc = H264Encoder::new(EncoderSettings {
            width: 160,
            height: 90,
            fps: 30,
            bitrate_bps: 300_000,
            idr_interval_frames: 300,
            complexity: EncoderComplexity::Low,
            analysis: Default::default(),
        })
        .unwrap();
        let mut au = Vec::new();
        enc.encode(&I420Frame::solid(160, 90, (200, 80, 160)), &mut au)
            .unwrap();
        let payloads = H264Payloader::default()
            .payload(1100, &Bytes::copy_from_slice(&au))
            .unwrap();
        for codec in [
            VideoCodec::H264,
            VideoCodec::Av1,
            VideoCodec::Vp8,
            VideoCodec::Vp9,
        ] {
            let mut dec = VideoDecoder::new(codec).unwrap();
            let mut seed = 12345u32;
            let mut pictures = 0;
            for _ in 0..50 {
                let len = (seed % 300) as usize + 2;
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                        (seed >> 24) as u8
                    })
                    .collect();
                // Waiting for a keyframe, as the room does: garbage is never a picture.
                if let Ok(Decoded::Picture { .. }) =
                    dec.decode(&[Bytes::from(data)], true, &mut out)
                {
                    pictures += 1;
                }
            }
            assert_eq!(pictures, 0, "{codec:?} made a picture out of garbage");
            if codec == VideoCodec::H264 {
                // And then a real keyframe decodes, with its colour.
                let got = dec.decode(&payloads, true, &mut out).unwrap();
                assert!(matches!(got, Decoded::Picture { .. }), "{got:?}");
                assert_eq!((out.width, out.height), (160, 90));
                assert!((out.y[160 * 45 + 80] as i32 - 200).abs() < 12);
            }
        }
    }

    #[test]
    fn a_running_encoder_changes_rate_without_restarting() {
        let mut enc = H264Encoder::new(EncoderSettings {
            width: 320,
            height: 180,
            fps: 30,
            bitrate_bps: 600_000,
            idr_interval_frames: 300,
            complexity: EncoderComplexity::Low,
            analysis: Default::default(),
        })
        .unwrap();
        enc.warm_up().unwrap();
        assert_eq!(enc.effective_rate().unwrap(), (30.0, 600_000));
        enc.set_rate(20, 400_000).unwrap();
        assert_eq!(enc.effective_rate().unwrap(), (20.0, 400_000));
        assert_eq!(
            (enc.settings().fps, enc.settings().bitrate_bps),
            (20, 400_000)
        );
        // The first real frame after warm-up is an IDR, the next ones are not: a rate
        // change does not restart the stream.
        let (mut au, f) = (Vec::new(), I420Frame::solid(320, 180, (90, 100, 140)));
        assert!(enc.encode(&f, &mut au).unwrap());
        enc.set_rate(15, 300_000).unwrap();
        assert!(!enc.encode(&f, &mut au).unwrap());
        assert_eq!(enc.effective_rate().unwrap(), (15.0, 300_000));
    }

    #[test]
    fn vp8_and_vp9_streams_go_through_depacketiser_and_decoder_within_the_limits() {
        use crate::codec::vpx::{ivf_frames, Vp8Encoder};
        use rtc::rtp::codec::vp8::Vp8Payloader;
        use rtc::rtp::codec::vp9::Vp9Payloader;
        // VP8 from our encoder, packetised by the rtc payloader.
        let mut enc = Vp8Encoder::new(EncoderSettings {
            width: 320,
            height: 180,
            fps: 30,
            bitrate_bps: 400_000,
            idr_interval_frames: 300,
            complexity: EncoderComplexity::Low,
            analysis: Default::default(),
        })
        .unwrap();
        let mut pay = Vp8Payloader::default();
        pay.enable_picture_id = true;
        let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
        let (mut data, mut out) = (Vec::new(), I420Frame::default());
        let colour = rgb_to_yuv(30, 90, 220);
        let mut pictures = 0;
        for i in 0..4 {
            enc.encode(&I420Frame::solid(320, 180, colour), &mut data)
                .unwrap();
            let payloads = pay.payload(300, &Bytes::from(data.clone())).unwrap();
            let got = dec.decode(&payloads, i == 0, &mut out).unwrap();
            pictures += matches!(got, Decoded::Picture { .. }) as u32;
        }
        assert_eq!(pictures, 4);
        assert!((out.mean_yuv(10, 10, 100, 100).0 - colour.0 as f64).abs() < 6.0);
        // A decoder waiting for a keyframe drops inter frames.
        let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
        enc.encode(&I420Frame::solid(320, 180, colour), &mut data)
            .unwrap();
        let payloads = pay.payload(300, &Bytes::from(data.clone())).unwrap();
        assert_eq!(
            dec.decode(&payloads, true, &mut out).unwrap(),
            Decoded::Nothing
        );

        // VP9 from libvpx (ffmpeg), packetised by the rtc payloader.
        let mut pay = Vp9Payloader::default();
        let mut dec = VideoDecoder::new(VideoCodec::Vp9).unwrap();
        let mut keys = Vec::new();
        for f in ivf_frames(crate::codec::vpx::tests::VP9_CLIP)
            .iter()
            .take(5)
        {
            let payloads = pay.payload(1100, &Bytes::copy_from_slice(f)).unwrap();
            match dec.decode(&payloads, keys.is_empty(), &mut out).unwrap() {
                Decoded::Picture { keyframe } => keys.push(keyframe),
                Decoded::Nothing => panic!("a VP9 frame made no picture"),
            }
        }
        assert_eq!(keys, [true, false, false, false, false]);
        assert_eq!((out.width, out.height), (640, 360));
        // The same stream over tighter limits is refused before decoding.
        let limits = IngestLimits {
            max_width: 320,
            max_height: 180,
            max_frame_bytes: 1 << 20,
        };
        let mut dec = VideoDecoder::with_limits(VideoCodec::Vp9, limits).unwrap();
        let f = ivf_frames(crate::codec::vpx::tests::VP9_CLIP)[0];
        let payloads = pay.payload(1100, &Bytes::copy_from_slice(f)).unwrap();
        assert!(matches!(
            dec.decode(&payloads, true, &mut out),
            Err(CodecError::OverLimits(why)) if why.contains("640x360")
        ));
    }

    #[test]
    fn hostile_vp8_and_vp9_keyframe_headers_are_refused_before_the_decoder_allocates() {
        // A VP8 keyframe declaring 16383x16383 (the format's largest).
        let mut kf = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        kf.extend_from_slice(&16383u16.to_le_bytes());
        kf.extend_from_slice(&16383u16.to_le_bytes());
        kf.extend_from_slice(&[0u8; 64]);
        let mut payload = vec![0x10]; // S=1, PID 0
        payload.extend_from_slice(&kf);
        let mut dec = VideoDecoder::new(VideoCodec::Vp8).unwrap();
        let mut out = I420Frame::default();
        assert!(matches!(
            dec.decode(&[Bytes::from(payload)], true, &mut out),
            Err(CodecError::OverLimits(why)) if why.contains("16383x16383")
        ));
        // A VP9 keyframe declaring 65536x65536 (profile 0, BT.601).
        let mut bits = String::from("10000010");
        bits += &format!("{:024b}", 0x49_83_42);
        bits += "0010";
        bits += &format!("{:016b}{:016b}", 65535, 65535);
        bits += "00000000";
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let mut payload = vec![0x0c]; // B and E: one frame in one packet
        payload.extend(
            bits.as_bytes()
                .chunks(8)
                .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()),
        );
        payload.extend_from_slice(&[0u8; 64]);
        let mut dec = VideoDecoder::new(VideoCodec::Vp9).unwrap();
        assert!(matches!(
            dec.decode(&[Bytes::from(payload)], true, &mut out),
            Err(CodecError::OverLimits(why)) if why.contains("65536x65536")
        ));
        assert_eq!(out.width, 0);
    }

    #[test]
    fn av1_sequence_header_detection() {
        // temporal delimiter (type 2, size 0) then sequence header (type 1).
        assert!(av1_has_sequence_header(&[0x12, 0x00, 0x0a, 0x01, 0x00]));
        assert!(!av1_has_sequence_header(&[0x12, 0x00, 0x32, 0x01, 0x00]));
        assert!(!av1_has_sequence_header(&[0x12]));
    }
}
