//! libvpx, through `env-libvpx-sys`: the VP8 and VP9 decoders of ingest and the VP8 encoder
//! of viewers that cannot take H.264. Each wrapper owns its `vpx_codec_ctx_t` (boxed, so
//! its address never moves), destroys it on drop, and turns every libvpx status into a
//! [`CodecError::Vpx`] with libvpx's own message. Nothing here allocates per frame once
//! warm: the encoder wraps the caller's planes, and the decoder copies into the caller's
//! reused frame.
//!
//! Sizes are checked *before* libvpx sees a keyframe ([`vp8_keyframe_size`],
//! [`vp9_frame_size`]): libvpx would otherwise allocate whatever a hostile header declares
//! (16383x16383 for VP8, 65536x65536 for VP9).

use super::CodecError;
use crate::media::I420Frame;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::c_int;
use vpx_sys as sys;

fn vpx_err(ctx: *mut sys::vpx_codec_ctx_t, what: &str, rc: sys::vpx_codec_err_t) -> CodecError {
    // SAFETY: both return static or context-owned NUL-terminated strings (or null).
    let msg = unsafe {
        let p = if ctx.is_null() {
            sys::vpx_codec_err_to_string(rc)
        } else {
            sys::vpx_codec_error(ctx)
        };
        if p.is_null() {
            format!("{rc:?}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    CodecError::Vpx(format!("{what}: {msg}"))
}

fn check(
    ctx: *mut sys::vpx_codec_ctx_t,
    what: &str,
    rc: sys::vpx_codec_err_t,
) -> Result<(), CodecError> {
    if rc == sys::vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(vpx_err(ctx, what, rc))
    }
}

/// Which libvpx decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VpxKind {
    Vp8,
    Vp9,
}

/// One stream's libvpx decoder (single-threaded: rooms decode participants in parallel).
pub struct VpxDecoder {
    ctx: Box<MaybeUninit<sys::vpx_codec_ctx_t>>,
    kind: VpxKind,
}

// SAFETY: the context is only used through `&mut self`; libvpx keeps no thread affinity,
// and `&self` methods read only plain Rust fields.
unsafe impl Send for VpxDecoder {}
unsafe impl Sync for VpxDecoder {}

impl VpxDecoder {
    pub fn new(kind: VpxKind) -> Result<Self, CodecError> {
        let mut ctx = Box::new(MaybeUninit::<sys::vpx_codec_ctx_t>::zeroed());
        let cfg = sys::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: init writes the context; the interface pointers are static.
        let rc = unsafe {
            let iface = match kind {
                VpxKind::Vp8 => sys::vpx_codec_vp8_dx(),
                VpxKind::Vp9 => sys::vpx_codec_vp9_dx(),
            };
            sys::vpx_codec_dec_init_ver(
                ctx.as_mut_ptr(),
                iface,
                &cfg,
                0,
                sys::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        check(std::ptr::null_mut(), "decoder init", rc)?;
        Ok(Self { ctx, kind })
    }

    pub fn kind(&self) -> VpxKind {
        self.kind
    }

    fn ctx(&mut self) -> *mut sys::vpx_codec_ctx_t {
        self.ctx.as_mut_ptr()
    }

    /// Decodes one compressed frame; the last picture it produced (8-bit 4:2:0 only) is
    /// copied into `out`, after `accept(w, h)` approved its size. Returns whether a
    /// picture came out.
    pub fn decode(
        &mut self,
        data: &[u8],
        out: &mut I420Frame,
        accept: impl Fn(u32, u32) -> Result<(), CodecError>,
    ) -> Result<bool, CodecError> {
        let ctx = self.ctx();
        let len = u32::try_from(data.len())
            .map_err(|_| CodecError::OverLimits("frame over 4 GiB".into()))?;
        // SAFETY: `data` outlives the call; libvpx copies what it keeps.
        let rc = unsafe { sys::vpx_codec_decode(ctx, data.as_ptr(), len, std::ptr::null_mut(), 0) };
        check(ctx, "decode", rc)?;
        let mut iter: sys::vpx_codec_iter_t = std::ptr::null();
        let mut got = false;
        loop {
            // SAFETY: the image belongs to the decoder until the next decode call.
            let img = unsafe { sys::vpx_codec_get_frame(ctx, &mut iter) };
            let Some(img) = (unsafe { img.as_ref() }) else {
                break;
            };
            if img.fmt != sys::vpx_img_fmt::VPX_IMG_FMT_I420 {
                return Err(CodecError::Unsupported(format!(
                    "{:?} picture ({:?})",
                    self.kind, img.fmt
                )));
            }
            let (w, h) = (img.d_w, img.d_h);
            accept(w, h)?;
            let (w, h) = (w as usize, h as usize);
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let plane = |i: usize, rows: usize| -> &[u8] {
                let stride = img.stride[i].max(0) as usize;
                if rows == 0 || img.planes[i].is_null() {
                    return &[];
                }
                // SAFETY: libvpx's plane `i` holds `rows` rows of `stride` bytes.
                unsafe { std::slice::from_raw_parts(img.planes[i], stride * rows) }
            };
            let (ys, us, vs) = (
                img.stride[0].max(0) as usize,
                img.stride[1].max(0) as usize,
                img.stride[2].max(0) as usize,
            );
            if ys < w || us < cw || vs < cw {
                return Err(CodecError::Vpx("picture with short strides".into()));
            }
            out.copy_from_planes(w, h, plane(0, h), ys, plane(1, ch), us, plane(2, ch), vs);
            got = true;
        }
        Ok(got)
    }
}

impl Drop for VpxDecoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` (a failed init returns before `Self` exists).
        unsafe {
            sys::vpx_codec_destroy(self.ctx.as_mut_ptr());
        }
    }
}

/// libvpx's VP8 speed setting (`VP8E_SET_CPUUSED`, -16 fastest … 16) for a complexity.
fn vp8_cpu_used(c: super::video::EncoderComplexity) -> c_int {
    use super::video::EncoderComplexity as C;
    match c {
        C::Low => -12,
        C::Medium => -8,
        C::High => -6,
    }
}

/// One output's VP8 encoder: realtime, CBR, one pass, no lag, error resilient (a lost
/// packet does not corrupt later frames' entropy contexts), frame drops allowed so rate
/// control holds the bitrate (as openh264's skip-frames does).
pub struct Vp8Encoder {
    ctx: Box<MaybeUninit<sys::vpx_codec_ctx_t>>,
    cfg: Box<sys::vpx_codec_enc_cfg_t>,
    settings: super::video::EncoderSettings,
    img: Box<MaybeUninit<sys::vpx_image_t>>,
    pts: i64,
    force_key: bool,
    initialised: bool,
}

// SAFETY: as for the decoder; the image only points into the frame during `encode`.
unsafe impl Send for Vp8Encoder {}
unsafe impl Sync for Vp8Encoder {}

/// The RTP clock: pts and durations are in 90 kHz ticks, so a frame-rate change needs no
/// new time base.
const TIMEBASE: i64 = 90_000;

impl Vp8Encoder {
    pub fn new(settings: super::video::EncoderSettings) -> Result<Self, CodecError> {
        if settings.width == 0
            || settings.height == 0
            || settings.width > 16383
            || settings.height > 16383
        {
            return Err(CodecError::Vpx(format!(
                "VP8 cannot encode {}x{}",
                settings.width, settings.height
            )));
        }
        let mut cfg = Box::new(MaybeUninit::<sys::vpx_codec_enc_cfg_t>::zeroed());
        // SAFETY: fills `cfg` with the VP8 defaults.
        let rc = unsafe {
            sys::vpx_codec_enc_config_default(sys::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0)
        };
        check(std::ptr::null_mut(), "encoder defaults", rc)?;
        // SAFETY: initialised just above.
        let mut cfg: Box<sys::vpx_codec_enc_cfg_t> =
            unsafe { Box::from_raw(Box::into_raw(cfg).cast()) };
        cfg.g_w = settings.width;
        cfg.g_h = settings.height;
        cfg.g_threads = 1;
        cfg.g_timebase = sys::vpx_rational {
            num: 1,
            den: TIMEBASE as c_int,
        };
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = 1; // VPX_ERROR_RESILIENT_DEFAULT
        cfg.g_pass = sys::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_end_usage = sys::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = (settings.bitrate_bps / 1000).max(1);
        cfg.rc_dropframe_thresh = 30;
        cfg.rc_resize_allowed = 0;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.kf_mode = sys::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = settings.idr_interval_frames.max(1);
        let mut ctx = Box::new(MaybeUninit::<sys::vpx_codec_ctx_t>::zeroed());
        // SAFETY: init writes the context from a valid configuration.
        let rc = unsafe {
            sys::vpx_codec_enc_init_ver(
                ctx.as_mut_ptr(),
                sys::vpx_codec_vp8_cx(),
                &*cfg,
                0,
                sys::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        check(std::ptr::null_mut(), "encoder init", rc)?;
        let mut enc = Self {
            ctx,
            cfg,
            settings,
            img: Box::new(MaybeUninit::zeroed()),
            pts: 0,
            force_key: true,
            initialised: false,
        };
        let p = enc.ctx.as_mut_ptr();
        let controls = [
            (
                sys::vp8e_enc_control_id::VP8E_SET_CPUUSED,
                vp8_cpu_used(settings.complexity),
            ),
            (sys::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0),
            (sys::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1),
            (sys::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS, 0),
            // Keyframes at most 3x an average frame, so one does not stall the link.
            (
                sys::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT,
                300,
            ),
        ];
        for (id, value) in controls {
            // SAFETY: each of these controls takes one int.
            let rc = unsafe { sys::vpx_codec_control_(p, id as c_int, value) };
            check(p, "encoder control", rc)?;
        }
        Ok(enc)
    }

    pub fn settings(&self) -> super::video::EncoderSettings {
        self.settings
    }

    fn ctx(&mut self) -> *mut sys::vpx_codec_ctx_t {
        self.ctx.as_mut_ptr()
    }

    /// Encodes one black frame so the first real frame costs no set-up; that one is still
    /// a keyframe.
    pub fn warm_up(&mut self) -> Result<(), CodecError> {
        if !self.initialised {
            let s = self.settings;
            let black = I420Frame::new(s.width as usize, s.height as usize);
            let mut out = Vec::new();
            self.encode(&black, &mut out)?;
            self.force_key = true;
        }
        Ok(())
    }

    /// A new frame rate and bitrate for a running encoder (no keyframe).
    pub fn set_rate(&mut self, fps: u32, bitrate_bps: u32) -> Result<(), CodecError> {
        if bitrate_bps != self.settings.bitrate_bps {
            self.cfg.rc_target_bitrate = (bitrate_bps / 1000).max(1);
            let ctx = self.ctx();
            // SAFETY: a complete configuration of this encoder.
            let rc = unsafe { sys::vpx_codec_enc_config_set(ctx, &*self.cfg) };
            check(ctx, "rate change", rc)?;
        }
        self.settings.fps = fps.max(1);
        self.settings.bitrate_bps = bitrate_bps;
        Ok(())
    }

    /// The bitrate libvpx runs with (its configuration), kbit/s.
    pub fn target_kbps(&self) -> u32 {
        self.cfg.rc_target_bitrate
    }

    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// A keyframe was asked for and not yet made.
    pub fn keyframe_pending(&self) -> bool {
        self.force_key
    }

    /// Encodes `frame` into `out` (one VP8 frame, cleared first; empty when rate control
    /// dropped it). Returns whether it is a keyframe.
    pub fn encode(&mut self, frame: &I420Frame, out: &mut Vec<u8>) -> Result<bool, CodecError> {
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        if frame.width != w || frame.height != h {
            return Err(CodecError::Vpx(format!(
                "frame {}x{} for a {w}x{h} encoder",
                frame.width, frame.height
            )));
        }
        out.clear();
        let ctx = self.ctx();
        let img = self.img.as_mut_ptr();
        // SAFETY: wraps the frame's planes (valid for this call; libvpx reads them only
        // during vpx_codec_encode and copies what it keeps as references).
        unsafe {
            sys::vpx_img_wrap(
                img,
                sys::vpx_img_fmt::VPX_IMG_FMT_I420,
                w as u32,
                h as u32,
                1,
                frame.y.as_ptr() as *mut u8,
            );
            (*img).planes[0] = frame.y.as_ptr() as *mut u8;
            (*img).planes[1] = frame.u.as_ptr() as *mut u8;
            (*img).planes[2] = frame.v.as_ptr() as *mut u8;
            (*img).stride[0] = w as c_int;
            (*img).stride[1] = frame.chroma_width() as c_int;
            (*img).stride[2] = frame.chroma_width() as c_int;
        }
        let duration = (TIMEBASE / i64::from(self.settings.fps.max(1))) as std::os::raw::c_ulong;
        let flags = if std::mem::take(&mut self.force_key) {
            sys::VPX_EFLAG_FORCE_KF as sys::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: `img` is wrapped above; deadline realtime.
        let rc = unsafe {
            sys::vpx_codec_encode(
                ctx,
                img,
                self.pts,
                duration,
                flags,
                sys::VPX_DL_REALTIME as std::os::raw::c_ulong,
            )
        };
        self.pts += duration as i64;
        if let Err(e) = check(ctx, "encode", rc) {
            self.force_key = true;
            return Err(e);
        }
        self.initialised = true;
        let mut key = false;
        let mut iter: sys::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: packets belong to the encoder until the next encode call.
            let pkt = unsafe { sys::vpx_codec_get_cx_data(ctx, &mut iter) };
            let Some(pkt) = (unsafe { pkt.as_ref() }) else {
                break;
            };
            if pkt.kind != sys::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: a frame packet's union member is `frame`.
            let f = unsafe { pkt.data.frame };
            if !f.buf.is_null() && f.sz > 0 {
                // SAFETY: `sz` bytes at `buf`, owned by the encoder.
                out.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize)
                });
            }
            key |= f.flags & sys::VPX_FRAME_IS_KEY != 0;
        }
        if out.is_empty() && flags != 0 {
            self.force_key = true; // the forced keyframe was dropped: ask again
        }
        Ok(key)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`.
        unsafe {
            sys::vpx_codec_destroy(self.ctx.as_mut_ptr());
        }
    }
}

/// Whether a VP8 frame is a keyframe (frame tag bit 0 clear, RFC 6386 §9.1).
pub fn vp8_is_keyframe(frame: &[u8]) -> bool {
    frame.len() >= 10 && frame[0] & 1 == 0 && frame[3..6] == [0x9d, 0x01, 0x2a]
}

/// The picture size a VP8 keyframe declares (RFC 6386 §9.1; scaling bits ignored).
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    if !vp8_is_keyframe(frame) {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((u32::from(w), u32::from(h)))
}

/// What the uncompressed header of a VP9 frame says (VP9 bitstream spec §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Vp9Header {
    pub keyframe: bool,
    /// An intra-only frame: decodable without references, like a keyframe.
    pub intra_only: bool,
    /// A size written in the header (keyframes, intra-only frames, inter frames that do
    /// not take a reference's size).
    pub size: Option<(u32, u32)>,
}

/// Reads the uncompressed header of one VP9 frame far enough for its type and size.
pub fn vp9_header(frame: &[u8]) -> Option<Vp9Header> {
    let mut b = super::bits::Bits::new(frame);
    if b.f(2)? != 2 {
        return None; // frame_marker
    }
    let profile = b.f(1)? | (b.f(1)? << 1);
    if profile == 3 {
        b.f(1)?;
    }
    if b.f(1)? == 1 {
        return Some(Vp9Header::default()); // show_existing_frame
    }
    let keyframe = b.f(1)? == 0;
    let show_frame = b.f(1)? == 1;
    let error_resilient = b.f(1)? == 1;
    let sync = |b: &mut super::bits::Bits| -> Option<()> { (b.f(24)? == 0x49_83_42).then_some(()) };
    let color = |b: &mut super::bits::Bits| -> Option<()> {
        if profile >= 2 {
            b.f(1)?;
        }
        let cs = b.f(3)?;
        if cs != 7 {
            b.f(1)?;
            if profile == 1 || profile == 3 {
                b.f(3)?;
            }
        } else if profile == 1 || profile == 3 {
            b.f(1)?;
        }
        Some(())
    };
    let size =
        |b: &mut super::bits::Bits| -> Option<(u32, u32)> { Some((b.f(16)? + 1, b.f(16)? + 1)) };
    if keyframe {
        sync(&mut b)?;
        color(&mut b)?;
        return Some(Vp9Header {
            keyframe: true,
            intra_only: false,
            size: Some(size(&mut b)?),
        });
    }
    let intra_only = if show_frame { false } else { b.f(1)? == 1 };
    if !error_resilient {
        b.f(2)?; // reset_frame_context
    }
    if intra_only {
        sync(&mut b)?;
        if profile > 0 {
            color(&mut b)?;
        }
        b.f(8)?; // refresh_frame_flags
        return Some(Vp9Header {
            keyframe: false,
            intra_only: true,
            size: Some(size(&mut b)?),
        });
    }
    b.f(8)?; // refresh_frame_flags
    for _ in 0..3 {
        b.f(4)?; // ref_frame_idx, sign_bias
    }
    for _ in 0..3 {
        if b.f(1)? == 1 {
            return Some(Vp9Header::default()); // found_ref: a reference's size
        }
    }
    Some(Vp9Header {
        size: Some(size(&mut b)?),
        ..Default::default()
    })
}

/// The explicit size of a VP9 frame, if its header has one.
pub fn vp9_frame_size(frame: &[u8]) -> Option<(u32, u32)> {
    vp9_header(frame).and_then(|h| h.size)
}

/// The frames of an IVF file (the container libvpx's tools and ffmpeg write VP8/VP9 raw
/// streams in: a 32-byte file header, then `[size: u32 LE][pts: u64 LE][frame]`). Stops at
/// the first truncated frame. For fixtures, seeds and benchmarks.
pub fn ivf_frames(data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    if data.len() < 32 || &data[..4] != b"DKIF" {
        return frames;
    }
    let header = usize::from(u16::from_le_bytes([data[6], data[7]]));
    let mut at = header.max(32);
    while let Some(h) = data.get(at..at + 12) {
        let size = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let Some(frame) = data.get(at + 12..at + 12 + size) else {
            break;
        };
        frames.push(frame);
        at += 12 + size;
    }
    frames
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::video::{EncoderComplexity, EncoderSettings};
    use crate::media::frame::rgb_to_yuv;

    fn settings(w: u32, h: u32) -> EncoderSettings {
        EncoderSettings {
            width: w,
            height: h,
            fps: 30,
            bitrate_bps: 600_000,
            idr_interval_frames: 300,
            complexity: EncoderComplexity::Low,
            analysis: Default::default(),
        }
    }

    #[test]
    fn vp8_encodes_and_decodes_back_with_its_colour() {
        let mut enc = Vp8Encoder::new(settings(320, 180)).unwrap();
        enc.warm_up().unwrap();
        let mut dec = VpxDecoder::new(VpxKind::Vp8).unwrap();
        let colour = rgb_to_yuv(200, 40, 40);
        let frame = I420Frame::solid(320, 180, colour);
        let (mut data, mut out) = (Vec::new(), I420Frame::default());
        let mut keys = Vec::new();
        for _ in 0..5 {
            keys.push(enc.encode(&frame, &mut data).unwrap());
            assert!(!data.is_empty());
            assert_eq!(vp8_is_keyframe(&data), keys[keys.len() - 1]);
            assert!(dec.decode(&data, &mut out, |_, _| Ok(())).unwrap());
        }
        assert_eq!(
            keys,
            [true, false, false, false, false],
            "first after warm-up is a key"
        );
        assert_eq!((out.width, out.height), (320, 180));
        let (y, u, v) = out.mean_yuv(100, 50, 100, 80);
        assert!((y - colour.0 as f64).abs() < 6.0, "{y}");
        assert!((u - colour.1 as f64).abs() < 6.0 && (v - colour.2 as f64).abs() < 6.0);
        enc.request_keyframe();
        assert!(enc.encode(&frame, &mut data).unwrap());
        assert_eq!(vp8_keyframe_size(&data), Some((320, 180)));
    }

    #[test]
    fn vp8_rate_changes_reach_libvpx_without_a_keyframe() {
        let mut enc = Vp8Encoder::new(settings(320, 180)).unwrap();
        let f = I420Frame::solid(320, 180, (90, 100, 140));
        let mut data = Vec::new();
        assert!(enc.encode(&f, &mut data).unwrap());
        enc.set_rate(15, 250_000).unwrap();
        assert_eq!(enc.target_kbps(), 250);
        assert!(!enc.encode(&f, &mut data).unwrap());
        assert_eq!(enc.settings().fps, 15);
    }

    #[test]
    fn a_decoder_refuses_a_size_its_caller_refuses() {
        let mut enc = Vp8Encoder::new(settings(320, 180)).unwrap();
        let mut data = Vec::new();
        enc.encode(&I420Frame::solid(320, 180, (50, 60, 70)), &mut data)
            .unwrap();
        let mut dec = VpxDecoder::new(VpxKind::Vp8).unwrap();
        let mut out = I420Frame::default();
        let r = dec.decode(&data, &mut out, |w, h| {
            Err(CodecError::OverLimits(format!("{w}x{h}")))
        });
        assert!(matches!(r, Err(CodecError::OverLimits(s)) if s == "320x180"));
        assert_eq!(out.width, 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        for kind in [VpxKind::Vp8, VpxKind::Vp9] {
            let mut dec = VpxDecoder::new(kind).unwrap();
            let mut out = I420Frame::default();
            let mut seed = 99u32;
            for _ in 0..200 {
                let len = (seed % 400) as usize + 1;
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                        (seed >> 24) as u8
                    })
                    .collect();
                let _ = dec.decode(&data, &mut out, |w, h| {
                    if w * h <= 1920 * 1080 {
                        Ok(())
                    } else {
                        Err(CodecError::OverLimits(String::new()))
                    }
                });
            }
        }
    }

    /// `ffmpeg -f lavfi -i testsrc2=s=640x360:r=30 -frames:v 30 -c:v libvpx-vp9
    /// -deadline realtime -cpu-used 8 -b:v 400k -g 300 testsrc_640x360.ivf`
    pub(crate) const VP9_CLIP: &[u8] = include_bytes!("../../tests/data/vp9/testsrc_640x360.ivf");

    #[test]
    fn a_real_vp9_stream_decodes_and_its_headers_say_what_it_is() {
        let frames = ivf_frames(VP9_CLIP);
        assert_eq!(frames.len(), 30);
        let first = vp9_header(frames[0]).unwrap();
        assert!(
            first.keyframe && first.size == Some((640, 360)),
            "{first:?}"
        );
        assert!(!vp9_header(frames[1]).unwrap().keyframe);
        let mut dec = VpxDecoder::new(VpxKind::Vp9).unwrap();
        let mut out = I420Frame::default();
        let mut pictures = 0;
        for f in &frames {
            pictures += dec.decode(f, &mut out, |_, _| Ok(())).unwrap() as u32;
        }
        assert_eq!(pictures, 30);
        assert_eq!((out.width, out.height), (640, 360));
    }

    #[test]
    fn vp9_headers_give_type_and_size() {
        // frame_marker 10, profile 0 (0,0), show_existing 0, frame_type 0 (key), show 1,
        // error_res 0, sync 0x498342, color_space 1 (3 bits), range 0,
        // width-1 = 639, height-1 = 359.
        let mut bits = String::from("10" /*marker*/);
        bits += "00"; // profile
        bits += "0"; // show_existing
        bits += "0"; // key
        bits += "1"; // show
        bits += "0"; // error resilient
        bits += &format!("{:024b}", 0x49_83_42);
        bits += "001"; // color space
        bits += "0"; // range
        bits += &format!("{:016b}{:016b}", 639, 359);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let bytes: Vec<u8> = bits
            .as_bytes()
            .chunks(8)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap())
            .collect();
        let h = vp9_header(&bytes).unwrap();
        assert!(h.keyframe);
        assert_eq!(h.size, Some((640, 360)));
        assert_eq!(vp9_header(&[0x00]), None, "not a frame marker");
        assert_eq!(vp9_header(&bytes[..5]), None, "truncated");
    }

    #[test]
    fn vp8_keyframe_headers_give_their_size() {
        let mut kf = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a];
        kf.extend_from_slice(&16383u16.to_le_bytes());
        kf.extend_from_slice(&(16383u16 | 0xc000).to_le_bytes());
        assert_eq!(vp8_keyframe_size(&kf), Some((16383, 16383)));
        kf[0] |= 1;
        assert_eq!(vp8_keyframe_size(&kf), None, "an inter frame");
    }
}
