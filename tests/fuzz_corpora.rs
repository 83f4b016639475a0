//! Replays every fuzz seed, corpus and regression input (`fuzz/seeds/<target>/`,
//! `fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the same target functions the fuzzers run
//! (`fuzz/src/targets.rs`), on the normal build: what once crashed or hung stays fixed,
//! without fuzzing in CI. See FUZZING.md.

#[path = "../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;
use std::time::Instant;

const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("signaling_message", targets::signaling_message),
    ("sdp_offer", targets::sdp_offer),
    ("whip_request", targets::whip_request),
    ("layout_json", targets::layout_json),
    ("config_toml", targets::config_toml),
    ("h264_ingest", targets::h264_ingest),
    ("av1_ingest", targets::av1_ingest),
    ("vp8_ingest", targets::vp8_ingest),
    ("vp9_ingest", targets::vp9_ingest),
    ("rtcp_feedback", targets::rtcp_feedback),
];

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    v
}

#[test]
fn every_corpus_and_regression_input_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, run) in TARGETS {
        let seeds = inputs(&root.join("seeds").join(name));
        let corpus = inputs(&root.join("corpus").join(name));
        let regressions = inputs(&root.join("regressions").join(name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} is empty");
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name} is empty: every target keeps a corpus"
        );
        let t = Instant::now();
        for p in seeds.iter().chain(&corpus).chain(&regressions) {
            let data = std::fs::read(p).unwrap();
            // A panic here names the input through the test's output.
            eprintln!("replaying {}", p.display());
            run(&data);
        }
        eprintln!(
            "{name}: {} seeds + {} corpus + {} regression inputs in {:?}",
            seeds.len(),
            corpus.len(),
            regressions.len(),
            t.elapsed()
        );
    }
}

/// The ingest seeds are real streams in the record form: if the form or the seeds broke,
/// the fuzzers would only ever see garbage.
#[test]
fn ingest_seeds_are_decodable_streams() {
    use tessera::codec::video::{Decoded, VideoDecoder};
    use tessera::codec::VideoCodec;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (file, codec, want) in [
        ("h264_ingest/stream_320x180", VideoCodec::H264, 6),
        ("av1_ingest/blue_320x180", VideoCodec::Av1, 3),
    ] {
        let data = std::fs::read(root.join(file)).unwrap();
        let mut dec = VideoDecoder::new(codec).unwrap();
        let mut out = tessera::media::I420Frame::default();
        let mut pictures = 0;
        for unit in targets::records(&data) {
            if let Ok(Decoded::Picture { .. }) = dec.decode(&unit, pictures == 0, &mut out) {
                pictures += 1;
            }
        }
        assert_eq!(pictures, want, "{file}: pictures decoded");
        assert_eq!((out.width, out.height), (320, 180), "{file}");
    }
}
