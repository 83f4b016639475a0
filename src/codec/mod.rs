//! Thin synchronous adapters over the codec libraries: Opus (`opus`), H.264 (`openh264`,
//! both directions), AV1 decode (`dav1d`), VP8 (both directions) and VP9 decode (libvpx). Each owns its library state and reusable
//! buffers; none touches the network or the clock.

pub mod audio;
mod bits;
pub mod depack;
pub mod pack;
pub mod video;
pub mod voice;
pub mod vpx;

/// A codec failure, with the library's message.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("openh264: {0}")]
    H264(String),
    #[error("dav1d: {0}")]
    Av1(String),
    #[error("libvpx: {0}")]
    Vpx(String),
    #[error("depacketize: {0}")]
    Depacketize(String),
    /// The input exceeds the configured ingest limits (size, bytes per frame).
    #[error("input over the limits: {0}")]
    OverLimits(String),
    #[error("resampler: {0}")]
    Resample(String),
    #[error("unsupported video format: {0}")]
    Unsupported(String),
}

/// The video codecs Tessera ingests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum VideoCodec {
    H264,
    Av1,
    Vp8,
    Vp9,
}

impl VideoCodec {
    /// From an SDP `rtpmap` encoding name (case-insensitive).
    pub fn from_encoding_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "H264" => Some(Self::H264),
            "AV1" | "AV1X" => Some(Self::Av1),
            "VP8" => Some(Self::Vp8),
            "VP9" => Some(Self::Vp9),
            _ => None,
        }
    }
}

/// The video codecs Tessera sends to viewers (each viewer gets one, from its own offer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputCodec {
    H264,
    Vp8,
}
