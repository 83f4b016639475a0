//! Top-K mixing, driven tick by tick without the thread: who hears what is checked by
//! tones, and the work done by counting decoders and encoders.

use super::*;
use crate::codec::audio::OpusDecoder;
use crate::mixer::tone_power;
use crate::room::Attachment;
use tokio::sync::mpsc;

const TONES: [f32; 4] = [400.0, 650.0, 1000.0, 1300.0];

struct Harness {
    mix: AudioLoop,
    ids: Vec<ParticipantId>,
    links: Vec<Arc<ViewerLink>>,
    encoders: Vec<OpusEncoder>,
    outs: Vec<mpsc::Receiver<rtc::rtp::packet::Packet>>,
    decoders: Vec<OpusDecoder>,
    heard: Vec<Vec<i16>>,
    last_payloads: Vec<Vec<u8>>,
    stats: Arc<RoomStats>,
    seq: u16,
}

/// Joins a participant to `mix` with `codec` and attaches a sink sending payload type `pt`
/// (and `link`, for the loss it reports); returns its id and what it is sent.
fn join(
    mix: &mut AudioLoop,
    codec: crate::codec::voice::AudioCodec,
    admitted: bool,
    pt: u8,
    link: Option<Arc<ViewerLink>>,
) -> (ParticipantId, mpsc::Receiver<rtc::rtp::packet::Packet>) {
    let id = ParticipantId::next();
    let (tx, rx) = mpsc::channel(10_000);
    mix.handle(AudioCmd::Join {
        id,
        codec,
        admitted,
    });
    mix.handle(AudioCmd::Attach {
        id,
        sink: Some(RtpSink::new(1, pt, tx)),
        link,
    });
    (id, rx)
}

impl Harness {
    fn new(n: usize, top_k: usize) -> Self {
        let mut config = Config::default();
        config.audio.top_k = top_k;
        let stats = Arc::new(RoomStats::default());
        let mut mix = AudioLoop::new(
            &config,
            broadcast::channel(64).0,
            Arc::new(AtomicU64::new(0)),
            stats.clone(),
        );
        let mut ids = Vec::new();
        let mut outs = Vec::new();
        let mut links = Vec::new();
        for _ in 0..n {
            let link = Arc::new(ViewerLink::default());
            let (id, rx) = join(
                &mut mix,
                crate::codec::voice::AudioCodec::Opus,
                true,
                111,
                Some(link.clone()),
            );
            ids.push(id);
            outs.push(rx);
            links.push(link);
        }
        let _ = std::mem::size_of::<Attachment>();
        Self {
            mix,
            ids,
            links,
            encoders: (0..n)
                .map(|_| OpusEncoder::new(32_000, 5).unwrap())
                .collect(),
            outs,
            decoders: (0..n).map(|_| OpusDecoder::new().unwrap()).collect(),
            heard: vec![Vec::new(); n],
            last_payloads: vec![Vec::new(); n],
            stats,
            seq: 0,
        }
    }

    /// One tick: participant i sends tone i (silence beyond the tones) announcing `levels[i]`.
    fn tick(&mut self, k: u64, levels: &[u8]) {
        let mut buf = vec![0u8; 1500];
        for (i, id) in self.ids.iter().enumerate() {
            let pcm: Vec<i16> = (0..960u64)
                .map(|s| match TONES.get(i) {
                    Some(f) => {
                        ((((k * 960 + s) as f64) * 2.0 * std::f64::consts::PI * *f as f64
                            / 48_000.0)
                            .sin()
                            * 5000.0) as i16
                    }
                    None => 0,
                })
                .collect();
            let n = self.encoders[i].encode(&pcm, &mut buf).unwrap();
            self.mix.handle(AudioCmd::Packet {
                id: *id,
                seq: self.seq,
                payload: bytes::Bytes::copy_from_slice(&buf[..n]),
                level: Some(levels[i]),
            });
        }
        self.seq = self.seq.wrapping_add(1);
        self.mix.set_tick(k);
        self.mix.mix_tick();
        let mut pcm = vec![0i16; 5760];
        for (i, rx) in self.outs.iter_mut().enumerate() {
            while let Ok(pkt) = rx.try_recv() {
                let n = self.decoders[i].decode(&pkt.payload, &mut pcm).unwrap();
                self.heard[i].extend_from_slice(&pcm[..n]);
                self.last_payloads[i] = pkt.payload.to_vec();
            }
        }
    }

    fn last_second(&self, i: usize) -> &[i16] {
        let h = &self.heard[i];
        &h[h.len().saturating_sub(48_000)..]
    }

    fn hears(&self, i: usize, tone: usize) -> bool {
        tone_power(self.last_second(i), TONES[tone]) > 1e5
    }
}

#[test]
fn only_the_three_loudest_are_mixed_and_non_talkers_share_one_encode() {
    // Tones 0..3 at -10, -15, -20, -30 dBov; two silent participants.
    let levels = [10u8, 15, 20, 30, 127, 127];
    let mut h = Harness::new(6, 3);
    for k in 0..120 {
        h.tick(k, &levels);
    }
    assert_eq!(h.mix.talkers(), h.ids[..3].to_vec());
    assert_eq!(
        h.stats.audio_decoders.load(Ordering::Relaxed),
        3,
        "only talkers are decoded"
    );
    assert_eq!(
        h.stats.audio_encoders.load(Ordering::Relaxed),
        4,
        "3 personal mixes + 1 shared"
    );
    for t in 0..3 {
        for other in 0..3 {
            assert_eq!(
                h.hears(t, other),
                t != other,
                "talker {t} hearing tone {other}"
            );
        }
        assert!(!h.hears(t, 3), "tone 3 is not in the top 3");
    }
    for listener in 3..6 {
        assert!(
            h.hears(listener, 0) && h.hears(listener, 1) && h.hears(listener, 2),
            "listener {listener}"
        );
        assert!(!h.hears(listener, 3));
    }
    // The non-talkers receive the very same encoded packet.
    assert_eq!(h.last_payloads[3], h.last_payloads[4]);
    assert_eq!(h.last_payloads[4], h.last_payloads[5]);
    assert_ne!(h.last_payloads[0], h.last_payloads[3]);
}

#[test]
fn a_louder_newcomer_takes_the_quietest_slot_after_the_hold_without_clicks() {
    let mut h = Harness::new(5, 3);
    for k in 0..60 {
        h.tick(k, &[10, 15, 20, 30, 127]);
    }
    assert_eq!(h.mix.talkers(), h.ids[..3].to_vec());
    // Participant 3 gets loud; a 2-tick burst does not swap…
    for k in 60..62 {
        h.tick(k, &[10, 15, 20, 5, 127]);
    }
    h.tick(62, &[10, 15, 20, 30, 127]);
    assert_eq!(
        h.mix.talkers(),
        h.ids[..3].to_vec(),
        "no flap on a short burst"
    );
    // …a sustained one does.
    let before = h.heard[4].len();
    for k in 63..140 {
        h.tick(k, &[10, 15, 20, 5, 127]);
    }
    assert_eq!(h.mix.talkers(), vec![h.ids[0], h.ids[1], h.ids[3]]);
    assert!(
        h.hears(4, 3) && !h.hears(4, 2),
        "listener now hears tone 3 instead of tone 2"
    );
    // Across the switch the listener's signal has no step larger than the tones' own slope
    // (three 5000-amplitude tones change by at most ~1.4k per sample; a hard cut of one
    // tone would jump by up to 5000).
    let x = &h.heard[4][before..];
    let max_step = x
        .windows(2)
        .map(|w| (w[1] as i32 - w[0] as i32).abs())
        .max()
        .unwrap();
    assert!(
        max_step < 2600,
        "click: step of {max_step} across the talker switch"
    );
}

#[test]
fn participants_without_levels_are_decoded_to_measure_them() {
    let mut h = Harness::new(4, 2);
    // No RFC 6464 levels: the mixer must decode everyone to rank them.
    for k in 0..40 {
        let mut buf = vec![0u8; 1500];
        for (i, id) in h.ids.clone().iter().enumerate() {
            let amp = [8000.0, 4000.0, 500.0, 0.0][i];
            let pcm: Vec<i16> = (0..960u64)
                .map(|s| {
                    ((((k * 960 + s) as f64) * 2.0 * std::f64::consts::PI * TONES[i] as f64
                        / 48_000.0)
                        .sin()
                        * amp) as i16
                })
                .collect();
            let n = h.encoders[i].encode(&pcm, &mut buf).unwrap();
            h.mix.handle(AudioCmd::Packet {
                id: *id,
                seq: k as u16,
                payload: bytes::Bytes::copy_from_slice(&buf[..n]),
                level: None,
            });
        }
        h.mix.set_tick(k);
        h.mix.mix_tick();
    }
    assert_eq!(h.stats.audio_decoders.load(Ordering::Relaxed), 4);
    assert_eq!(
        h.mix.talkers(),
        h.ids[..2].to_vec(),
        "the two loudest by decoded energy"
    );
}

#[test]
fn opus_fec_follows_the_loss_listeners_report() {
    // Four participants, top-2: P0 and P1 talk (own N-1 mixes), P2 and P3 hear the shared mix.
    let mut h = Harness::new(4, 2);
    let levels = [10, 12, 127, 127];
    for k in 0..60 {
        h.tick(k, &levels);
    }
    // Nobody reported loss: no FEC bits anywhere.
    assert_eq!(h.mix.shared_expected_loss(), Some(0));
    // P3 reports 10 % (26/256), P0 3 % (8/256).
    h.links[3].set_loss(26);
    h.links[0].set_loss(8);
    for k in 60..110 {
        h.tick(k, &levels);
    }
    assert_eq!(
        h.mix.shared_expected_loss(),
        Some(11),
        "the worst shared listener"
    );
    let own: Vec<u8> = h
        .mix
        .participants
        .iter()
        .map(|p| p.out.as_ref().unwrap().encoder.expected_loss())
        .collect();
    assert_eq!(own, vec![4, 0, 0, 11]);
    // Everyone still hears what they should.
    assert!(h.hears(2, 0) && h.hears(2, 1) && h.hears(0, 1) && !h.hears(0, 0));
}

/// Participants of four codecs (no level extension, as phones send none): each hears every
/// other tone and not its own; a waiting caller hears only its prompt and nobody hears it;
/// once admitted it is heard. The shared mix is encoded once per codec in use.
#[test]
fn callers_of_every_codec_hear_each_other_and_a_waiting_caller_is_isolated() {
    use crate::codec::voice::{AudioCodec, AudioDecoder, AudioEncoder};

    let codecs = [
        AudioCodec::Pcmu,
        AudioCodec::Pcma,
        AudioCodec::G722,
        AudioCodec::Opus,
        AudioCodec::Pcmu,
    ];
    let tones = [400.0f32, 650.0, 1000.0, 1300.0, 1700.0];
    let waiting = 4;
    let mut config = Config::default();
    config.audio.top_k = 5;
    let stats = Arc::new(RoomStats::default());
    let mut mix = AudioLoop::new(
        &config,
        broadcast::channel(64).0,
        Arc::new(AtomicU64::new(0)),
        stats.clone(),
    );
    let mut ids = Vec::new();
    let mut outs = Vec::new();
    for (i, &codec) in codecs.iter().enumerate() {
        let (id, rx) = join(&mut mix, codec, i != waiting, 0, None);
        ids.push(id);
        outs.push(rx);
    }
    let prompt: Clip = (0..48_000)
        .map(|s| {
            ((s as f32 * 2.0 * std::f32::consts::PI * 2_200.0 / 48_000.0).sin() * 4000.0) as i16
        })
        .collect::<Vec<_>>()
        .into();
    mix.handle(AudioCmd::Play {
        id: Some(ids[waiting]),
        clip: prompt,
    });
    let mut encs: Vec<_> = codecs
        .iter()
        .map(|&c| AudioEncoder::new(c, 32_000, 5).unwrap())
        .collect();
    let mut decs: Vec<_> = codecs
        .iter()
        .map(|&c| AudioDecoder::new(c).unwrap())
        .collect();
    let mut heard = vec![Vec::<i16>::new(); codecs.len()];
    let mut run = |mix: &mut AudioLoop, from: u64, to: u64, heard: &mut Vec<Vec<i16>>| {
        let mut buf = vec![0u8; 1500];
        let mut pcm = vec![0i16; 5760];
        for k in from..to {
            for (i, id) in ids.iter().enumerate() {
                let tone: Vec<i16> = (0..960u64)
                    .map(|s| {
                        (((k * 960 + s) as f32 * 2.0 * std::f32::consts::PI * tones[i] / 48_000.0)
                            .sin()
                            * 5000.0) as i16
                    })
                    .collect();
                let n = encs[i].encode(&tone, &mut buf).unwrap();
                mix.handle(AudioCmd::Packet {
                    id: *id,
                    seq: k as u16,
                    payload: bytes::Bytes::copy_from_slice(&buf[..n]),
                    level: None,
                });
            }
            mix.set_tick(k);
            mix.mix_tick();
            for (i, rx) in outs.iter_mut().enumerate() {
                while let Ok(pkt) = rx.try_recv() {
                    let n = decs[i].decode(&pkt.payload, &mut pcm).unwrap();
                    heard[i].extend_from_slice(&pcm[..n]);
                }
            }
        }
    };
    run(&mut mix, 0, 50, &mut heard);
    let last = |h: &Vec<i16>| h[h.len() - 24_000..].to_vec();
    for i in 0..codecs.len() {
        let h = last(&heard[i]);
        for (j, &f) in tones.iter().enumerate() {
            let p = tone_power(&h, f);
            let expect = i != j && j != waiting && i != waiting;
            assert_eq!(
                p > 1e5,
                expect,
                "{:?} {i} hears tone {j}: {p:.0}",
                codecs[i]
            );
        }
        let prompt = tone_power(&h, 2_200.0) > 1e5;
        assert_eq!(prompt, i == waiting, "{i} hears the prompt");
    }
    // Own tone at least 20 dB below the others.
    for i in 0..waiting {
        let h = last(&heard[i]);
        let own = tone_power(&h, tones[i]);
        let other = tone_power(&h, tones[(i + 1) % waiting]);
        assert!(other > own * 100.0, "{i}: own {own:.0} other {other:.0}");
    }
    mix.handle(AudioCmd::Admit { id: ids[waiting] });
    for h in heard.iter_mut() {
        h.clear();
    }
    run(&mut mix, 50, 100, &mut heard);
    let h = last(&heard[0]);
    assert!(
        tone_power(&h, tones[waiting]) > 1e5,
        "the admitted caller is heard"
    );
    let h = last(&heard[waiting]);
    assert!(
        tone_power(&h, tones[0]) > 1e5,
        "the admitted caller hears the room"
    );
}

/// G.711 callers (no RFC 6464 levels), each sending a tone of its own, and one of them
/// listening.
struct PhoneRoom {
    mix: AudioLoop,
    ids: Vec<ParticipantId>,
    outs: Vec<mpsc::Receiver<rtc::rtp::packet::Packet>>,
    encs: Vec<crate::codec::voice::AudioEncoder>,
    dec: crate::codec::voice::AudioDecoder,
    stats: Arc<RoomStats>,
    /// What the listener heard, at 48 kHz.
    heard: Vec<i16>,
}

impl PhoneRoom {
    fn new(n: usize, config: &Config) -> Self {
        use crate::codec::voice::{AudioCodec, AudioDecoder, AudioEncoder};
        let stats = Arc::new(RoomStats::default());
        let mut mix = AudioLoop::new(
            config,
            broadcast::channel(64).0,
            Arc::new(AtomicU64::new(0)),
            stats.clone(),
        );
        let (mut ids, mut outs) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (id, rx) = join(&mut mix, AudioCodec::Pcmu, true, 0, None);
            ids.push(id);
            outs.push(rx);
        }
        Self {
            mix,
            ids,
            outs,
            encs: (0..n)
                .map(|_| AudioEncoder::new(AudioCodec::Pcmu, 0, 0).unwrap())
                .collect(),
            dec: AudioDecoder::new(AudioCodec::Pcmu).unwrap(),
            stats,
            heard: Vec::new(),
        }
    }

    /// Tick `k`: caller i sends `tones[i]` (Hz, amplitude; silence for amplitude 0);
    /// `listener` hears the room, the others' outputs are drained.
    fn tick(&mut self, k: u64, tones: &[(f32, f32)], listener: usize) {
        let (mut buf, mut pcm) = (vec![0u8; 1500], vec![0i16; 5760]);
        for (i, &(f, amp)) in tones.iter().enumerate() {
            let tone: Vec<i16> = (0..960u64)
                .map(|s| {
                    ((((k * 960 + s) as f32 * 2.0 * std::f32::consts::PI * f / 48_000.0).sin())
                        * amp) as i16
                })
                .collect();
            let n = self.encs[i].encode(&tone, &mut buf).unwrap();
            self.mix.handle(AudioCmd::Packet {
                id: self.ids[i],
                seq: k as u16,
                payload: bytes::Bytes::copy_from_slice(&buf[..n]),
                level: None,
            });
        }
        self.mix.set_tick(k);
        self.mix.mix_tick();
        for (i, o) in self.outs.iter_mut().enumerate() {
            while let Ok(pkt) = o.try_recv() {
                if i == listener {
                    let n = self.dec.decode(&pkt.payload, &mut pcm).unwrap();
                    self.heard.extend_from_slice(&pcm[..n]);
                }
            }
        }
    }
}

#[test]
fn narrowband_talkers_stay_coherent_with_a_silent_listener() {
    let mut room = PhoneRoom::new(3, &Config::default());
    for k in 0..100u64 {
        room.tick(k, &[(440.0, 5000.0), (730.0, 5000.0), (0.0, 0.0)], 0);
    }
    let p = tone_power(&room.heard[room.heard.len() - 24_000..], 730.0);
    assert!(p > 5e6, "coherent: {p:.0}");
}

#[test]
fn phone_callers_are_measured_at_8_khz_and_only_the_mixed_ones_are_resampled() {
    // Six G.711 callers (no RFC 6464 levels) at falling loudness, two mixed at a time.
    let mut config = Config::default();
    config.audio.top_k = 2;
    let mut room = PhoneRoom::new(6, &config);
    let tones = [
        (440.0f32, 9000.0f32),
        (730.0, 6000.0),
        (1170.0, 2500.0),
        (1500.0, 2000.0),
        (1850.0, 1500.0),
        (2300.0, 1000.0),
    ];
    // The quietest caller listens (it hears the shared mix).
    for k in 0..100u64 {
        room.tick(k, &tones, 5);
    }
    assert_eq!(
        room.mix.talkers(),
        room.ids[..2].to_vec(),
        "the two loudest, measured at 8 kHz"
    );
    assert_eq!(
        room.stats.audio_decoders.load(Ordering::Relaxed),
        2,
        "only the mixed callers are converted to 48 kHz"
    );
    let last = &room.heard[room.heard.len() - 24_000..];
    for (i, (f, _)) in tones.iter().enumerate() {
        let p = tone_power(last, *f);
        if i < 2 {
            assert!(p > 1e5, "tone {f} Hz is mixed: {p}");
        } else {
            assert!(p < 1e4, "tone {f} Hz is not mixed: {p}");
        }
    }
}
