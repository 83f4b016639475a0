//! Spoken prompts, shipped in the binary: made with espeak-ng and sox by
//! `src/prompts/make.sh` (16 kHz raw PCM), turned into 48 kHz clips on first use. Phone
//! callers hear the keypad's prompts; everyone hears the recording announcement.

use crate::room::audio::Clip;
use std::sync::LazyLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    EnterPin,
    WrongPin,
    Goodbye,
    Alone,
    Muted,
    Unmuted,
    Moderator,
    NotAllowed,
    Locked,
    Unlocked,
    EveryoneMuted,
    EveryoneUnmuted,
    /// "This conference is now being recorded" (`[recording] announce`).
    Recording,
}

macro_rules! prompts {
    ($($variant:ident => $file:literal),* $(,)?) => {
        impl Prompt {
            /// The prompt as a 48 kHz clip.
            pub fn clip(self) -> Clip {
                match self {
                    $(Self::$variant => {
                        static C: LazyLock<Clip> = LazyLock::new(|| {
                            load(include_bytes!(concat!("prompts/", $file, ".raw")))
                        });
                        C.clone()
                    })*
                }
            }
        }
    };
}

prompts! {
    EnterPin => "enter_pin",
    WrongPin => "wrong_pin",
    Goodbye => "goodbye",
    Alone => "alone",
    Muted => "muted",
    Unmuted => "unmuted",
    Moderator => "moderator",
    NotAllowed => "not_allowed",
    Locked => "locked",
    Unlocked => "unlocked",
    EveryoneMuted => "everyone_muted",
    EveryoneUnmuted => "everyone_unmuted",
    Recording => "recording",
}

fn load(raw: &[u8]) -> Clip {
    let pcm: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    crate::codec::voice::upsample_16k(&pcm).into()
}

impl Prompt {
    /// How long the prompt plays.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.clip().len() as u64 / 48)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_load_as_speech_length_clips() {
        for p in [
            Prompt::EnterPin,
            Prompt::WrongPin,
            Prompt::Goodbye,
            Prompt::Muted,
            Prompt::Recording,
        ] {
            let c = p.clip();
            let secs = c.len() as f64 / 48_000.0;
            assert!((0.3..6.0).contains(&secs), "{p:?}: {secs} s");
            let peak = c.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(peak > 8_000, "{p:?}: peak {peak}");
        }
    }
}
