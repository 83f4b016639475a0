//! Ready encoders, so that the video tick never builds one. Building and initialising an
//! openh264 encoder (and allocating its canvas) costs milliseconds: too much for a 33 ms
//! tick shared by a whole room. A process-wide *factory* thread builds them (warmed up:
//! initialised on a black frame, next frame an IDR) and also drops retired ones; each
//! room's pool keeps a spare per *shape* (codec, picture size and bitrate: the ladder's
//! rungs, in each codec its viewers receive),
//! asks for more as they are taken, and takes retired encoders back for reuse.
//!
//! Shapes include the bitrate because openh264 handles a running encoder's bitrate being
//! lowered badly (its rate control skips frames for a while: measured, 30 of 60 frames
//! skipped after 300 → 17 kbit/s), while a frame-rate change at the same bitrate is
//! seamless; so encoders are built at their bitrate and only their frame rate is set.
//!
//! When no spare of the needed size is ready, `take` says so and the caller waits a tick
//! (the viewer keeps what it had, or gets its first picture a little later) instead of
//! building one in the tick. Every such wait is counted.

use crate::codec::pack::{PacketizedFrame, Packetizer};
use crate::codec::video::{EncoderSettings, VideoEncoder};
use crate::codec::OutputCodec;
use crate::media::I420Frame;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::OnceLock;

/// An encoder and the buffers that go with it, ready to make a picture of one size.
pub struct Spare {
    pub encoder: VideoEncoder,
    pub canvas: I420Frame,
    pub au: Vec<u8>,
    pub packetizer: Packetizer,
    pub packets: PacketizedFrame,
}

enum Job {
    Make {
        codec: OutputCodec,
        settings: EncoderSettings,
        reply: Sender<Result<Spare, String>>,
    },
    Retire(Box<Spare>),
}

/// The process-wide factory thread (started on first use).
fn factory() -> &'static std::sync::Mutex<Sender<Job>> {
    static FACTORY: OnceLock<std::sync::Mutex<Sender<Job>>> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("encoder-factory".into())
            .spawn(move || {
                crate::room::lower_thread_priority();
                for job in rx {
                    match job {
                        Job::Make {
                            codec,
                            settings,
                            reply,
                        } => {
                            let _ = reply.send(build(codec, settings));
                        }
                        Job::Retire(spare) => drop(spare),
                    }
                }
            })
            .expect("spawning the encoder factory thread");
        std::sync::Mutex::new(tx)
    })
}

fn build(codec: OutputCodec, settings: EncoderSettings) -> Result<Spare, String> {
    let mut encoder = VideoEncoder::new(codec, settings).map_err(|e| e.to_string())?;
    encoder.warm_up().map_err(|e| e.to_string())?;
    Ok(Spare {
        encoder,
        canvas: I420Frame::new(settings.width as usize, settings.height as usize),
        au: Vec::with_capacity(256 * 1024),
        packetizer: Packetizer::new(codec),
        packets: PacketizedFrame::default(),
    })
}

fn send(job: Job) -> bool {
    match factory().lock() {
        Ok(tx) => tx.send(job).is_ok(),
        Err(_) => false,
    }
}

/// What an encoder makes: codec, picture size and bitrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub codec: OutputCodec,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
}

impl Shape {
    pub fn new(codec: OutputCodec, width: u32, height: u32, bitrate_bps: u32) -> Self {
        Self {
            codec,
            width,
            height,
            bitrate_bps,
        }
    }
}

fn shape_of(s: &Spare) -> Shape {
    let st = s.encoder.settings();
    Shape::new(s.encoder.codec(), st.width, st.height, st.bitrate_bps)
}

/// Spares kept per shape.
const SPARES_PER_SHAPE: usize = 1;
/// Retired encoders kept for reuse per shape (beyond it they go back to the factory).
const KEEP_PER_SHAPE: usize = 2;

/// One room's ready encoders.
pub struct EncoderPool {
    ready: Vec<Spare>,
    /// Shapes the room may need (the ladder's rungs).
    wanted: Vec<Shape>,
    /// Requested and not yet delivered.
    pending: Vec<Shape>,
    reply_tx: Sender<Result<Spare, String>>,
    reply_rx: Receiver<Result<Spare, String>>,
    /// Settings for new encoders; width, height and bitrate are set per request.
    base: EncoderSettings,
    /// Times the room wanted an encoder and none was ready.
    pub waits: u64,
    /// Waits since the last `want` (one tick).
    waits_now: usize,
    pub failures: u64,
}

impl EncoderPool {
    pub fn new(base: EncoderSettings) -> Self {
        let (reply_tx, reply_rx) = channel();
        Self {
            ready: Vec::new(),
            wanted: Vec::new(),
            pending: Vec::new(),
            reply_tx,
            reply_rx,
            base,
            waits: 0,
            waits_now: 0,
            failures: 0,
        }
    }

    /// Collects what the factory finished.
    pub fn poll(&mut self) {
        while let Ok(r) = self.reply_rx.try_recv() {
            self.arrived(r);
        }
    }

    fn arrived(&mut self, r: Result<Spare, String>) {
        match r {
            Ok(s) => {
                let shape = shape_of(&s);
                if let Some(i) = self.pending.iter().position(|p| *p == shape) {
                    self.pending.swap_remove(i);
                }
                self.ready.push(s);
            }
            Err(e) => {
                // The size is unknown here; a failed build frees the oldest request.
                if !self.pending.is_empty() {
                    self.pending.remove(0);
                }
                self.failures += 1;
                tracing::error!("video encoder: {e}");
            }
        }
    }

    /// The shapes to keep spares of (replaces the previous list); asks the factory for
    /// what is missing. Called once per tick.
    pub fn want(&mut self, shapes: &[Shape]) {
        self.waits_now = 0;
        if self.wanted.as_slice() != shapes {
            self.wanted.clear();
            self.wanted.extend_from_slice(shapes);
        }
        self.refill();
    }

    /// A spare of every wanted shape, ready or on its way.
    fn refill(&mut self) {
        for i in 0..self.wanted.len() {
            self.reserve(self.wanted[i], SPARES_PER_SHAPE);
        }
    }

    fn count(&self, shape: Shape) -> usize {
        let ready = self.ready.iter().filter(|s| shape_of(s) == shape).count();
        ready + self.pending.iter().filter(|p| **p == shape).count()
    }

    /// Makes sure `n` encoders of `shape` are ready or on their way.
    pub fn reserve(&mut self, shape: Shape, n: usize) {
        while self.count(shape) < n.min(64) {
            if !send(Job::Make {
                codec: shape.codec,
                settings: EncoderSettings {
                    width: shape.width,
                    height: shape.height,
                    bitrate_bps: shape.bitrate_bps,
                    ..self.base
                },
                reply: self.reply_tx.clone(),
            }) {
                return;
            }
            self.pending.push(shape);
        }
    }

    /// A ready encoder of `shape` running at `fps`, its next frame an IDR; `None`
    /// (counted, and one more asked for) when none is ready yet.
    pub fn take(&mut self, shape: Shape, fps: u32) -> Option<Spare> {
        let Some(i) = self.ready.iter().position(|s| shape_of(s) == shape) else {
            self.waits += 1;
            // Needed now: one more on its way for every wait this tick (bounded).
            let pending = self.pending.iter().filter(|p| **p == shape).count();
            self.waits_now += 1;
            if pending < self.waits_now.min(16) {
                self.reserve(shape, pending + 1);
            }
            return None;
        };
        let mut s = self.ready.swap_remove(i);
        if let Err(e) = s.encoder.set_rate(fps, shape.bitrate_bps) {
            tracing::warn!("video encoder rate: {e}");
        }
        s.encoder.request_keyframe();
        self.refill();
        Some(s)
    }

    /// Takes a retired encoder back: kept for reuse, or dropped on the factory thread.
    pub fn give_back(&mut self, mut spare: Spare) {
        let shape = shape_of(&spare);
        let kept = self.ready.iter().filter(|s| shape_of(s) == shape).count();
        if kept < KEEP_PER_SHAPE && self.wanted.contains(&shape) {
            spare.encoder.request_keyframe();
            self.ready.push(spare);
        } else {
            send(Job::Retire(Box::new(spare)));
        }
    }

    /// Waits until every requested encoder has arrived (tests and the benchmark use it
    /// to make runs deterministic; the room's thread never calls it).
    pub fn settle(&mut self) {
        while !self.pending.is_empty() {
            match self.reply_rx.recv() {
                Ok(r) => self.arrived(r),
                Err(_) => break,
            }
        }
    }

    /// Ready encoders held now.
    #[cfg(test)]
    pub fn ready(&self) -> usize {
        self.ready.len()
    }
}

impl Drop for EncoderPool {
    fn drop(&mut self) {
        // Freeing encoders is work too: not on the room's thread.
        for s in self.ready.drain(..) {
            send(Job::Retire(Box::new(s)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EncoderSettings {
        EncoderSettings {
            width: 0,
            height: 0,
            fps: 30,
            bitrate_bps: 300_000,
            idr_interval_frames: 300,
            complexity: Default::default(),
            analysis: Default::default(),
        }
    }

    #[test]
    fn spares_are_built_off_the_caller_and_replaced_when_taken() {
        let mut pool = EncoderPool::new(base());
        let top = Shape::new(OutputCodec::H264, 160, 90, 300_000);
        let low = Shape::new(OutputCodec::H264, 80, 44, 100_000);
        assert!(pool.take(top, 30).is_none(), "nothing ready yet");
        assert_eq!(pool.waits, 1);
        pool.want(&[top, low]);
        pool.settle();
        assert_eq!(
            pool.ready(),
            2,
            "the shape asked by `take`, and the other wanted one"
        );
        let mut s = pool.take(top, 15).expect("ready");
        let VideoEncoder::H264(h264) = &mut s.encoder else {
            panic!("an H.264 shape made another codec");
        };
        assert_eq!(h264.effective_rate().unwrap(), (15.0, 300_000));
        // Warmed up: the first real frame is an IDR and no re-initialisation happens.
        let f = I420Frame::solid(160, 90, (60, 90, 200));
        assert!(s.encoder.encode(&f, &mut s.au).unwrap());
        pool.settle();
        assert_eq!(pool.ready(), 2, "replaced");
        pool.give_back(s);
        assert_eq!(pool.ready(), 3, "kept for reuse");
        let mut again = pool.take(top, 30).unwrap();
        assert!(
            again.encoder.encode(&f, &mut again.au).unwrap(),
            "reused: IDR first"
        );
        assert_eq!(pool.failures, 0);
        // VP8 is a shape of its own, next to H.264 of the same size.
        let vp8 = Shape::new(OutputCodec::Vp8, 160, 90, 300_000);
        pool.reserve(vp8, 1);
        pool.settle();
        let mut v = pool.take(vp8, 30).expect("a VP8 spare");
        assert_eq!(v.encoder.codec(), OutputCodec::Vp8);
        assert!(v.encoder.encode(&f, &mut v.au).unwrap(), "keyframe first");
        assert!(crate::codec::vpx::vp8_is_keyframe(&v.au));
    }
}
