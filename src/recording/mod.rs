//! Recording a room as one composed picture with the full mix, into fragmented MP4.
//!
//! The room's video thread renders and encodes an extra picture (the recording layout,
//! with everyone, at the recording's size) and its audio thread encodes the room mix once
//! more; both hand the encoded frames to the **recorder thread** through one bounded queue
//! (`try_send`: when the disk is slow and the queue is full, frames are dropped and
//! counted — the room never waits). The recorder muxes them (`fmp4`) and appends each
//! finished fragment with one `write` followed by `sync_data`, so after a crash the file
//! plays up to the last fragment (≤ 2 s). Write errors (disk full…) are recorded in the
//! status, logged, and stop the writing, not the room.

pub mod fmp4;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How much earlier than its mix tick the recorded audio is stamped. A mixed frame holds
/// packets that waited in the jitter buffer (target 2 × 20 ms, so ~40 ms); a composed
/// video frame holds pictures that waited for the next video tick (half a 33 ms tick on
/// average). The difference keeps the recording in sync (measured by the recording sync
/// test: a flash and a tone sent at one instant land within ±45 ms of each other).
pub const AUDIO_ADVANCE: Duration = Duration::from_millis(23);

/// Frames queued between the media threads and the recorder (~4 s of audio + video).
const QUEUE: usize = 512;
/// Refuse to start with less free space than this.
const MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

/// An encoded frame for the recorder. `at` is the frame's scheduled tick time on the
/// room's media clock, shared by audio and video.
pub enum RecMsg {
    Video { at: Instant, data: bytes::Bytes },
    Audio { at: Instant, data: bytes::Bytes },
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("cannot create {0}: {1}")]
    Create(String, std::io::Error),
    #[error("disk full: {0} has {1} bytes free (need at least {MIN_FREE_BYTES})")]
    DiskFull(String, u64),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
}

impl RecordingError {
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::DiskFull(..) => true,
            Self::Write(_, e) | Self::Create(_, e) => e.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

/// Live state of one recording, shared with the API.
#[derive(Debug, Default)]
pub struct RecordingStatus {
    pub bytes: AtomicU64,
    /// Media written so far (milliseconds).
    pub media_ms: AtomicU64,
    pub dropped_frames: AtomicU64,
    pub finished: AtomicBool,
    pub error: Mutex<Option<String>>,
}

/// Sending side, held by the room's media threads.
#[derive(Clone)]
pub struct RecSender {
    tx: SyncSender<RecMsg>,
    status: Arc<RecordingStatus>,
}

impl RecSender {
    /// Queues a frame; returns false (and counts it) when it had to be dropped.
    pub fn send(&self, msg: RecMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.status.dropped_frames.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// A running recording: its file, status and thread.
pub struct Recording {
    pub id: String,
    pub room: String,
    pub path: PathBuf,
    pub started_at_unix: u64,
    pub status: Arc<RecordingStatus>,
    thread: Option<JoinHandle<()>>,
}

impl Recording {
    /// Creates the file (checking the directory and free space) and starts the recorder
    /// thread. Returns the recording and the sender for the media threads.
    pub fn start(
        dir: &Path,
        room: &str,
        width: u32,
        height: u32,
        opus_pre_skip: u16,
        t0: Instant,
    ) -> Result<(Self, RecSender), RecordingError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RecordingError::Dir(dir.display().to_string(), e))?;
        let free =
            free_bytes(dir).map_err(|e| RecordingError::Dir(dir.display().to_string(), e))?;
        if free < MIN_FREE_BYTES {
            return Err(RecordingError::DiskFull(dir.display().to_string(), free));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut id = format!("{room}_{}", utc_compact(now.as_secs()));
        let mut path = dir.join(format!("{id}.mp4"));
        let mut n = 1;
        while path.exists() {
            n += 1;
            id = format!("{room}_{}-{n}", utc_compact(now.as_secs()));
            path = dir.join(format!("{id}.mp4"));
        }
        let mut file = File::create_new(&path)
            .map_err(|e| RecordingError::Create(path.display().to_string(), e))?;
        // Prove the disk takes data now, not at the first fragment.
        let probe = [0u8; 0];
        file.write_all(&probe)
            .and_then(|_| file.sync_all())
            .map_err(|e| RecordingError::Write(path.display().to_string(), e))?;
        let status = Arc::new(RecordingStatus::default());
        let (tx, rx) = sync_channel(QUEUE);
        let writer = Writer {
            file,
            path: path.clone(),
            mux: fmp4::Fmp4Writer::new(width, height, opus_pre_skip),
            status: status.clone(),
            t0,
            failed: false,
        };
        let thread = std::thread::Builder::new()
            .name(format!("rec-{room}"))
            .spawn(move || writer.run(rx))
            .map_err(|e| RecordingError::Create(path.display().to_string(), e))?;
        tracing::info!(room, file = %path.display(), "recording started");
        Ok((
            Self {
                id,
                room: room.to_owned(),
                path,
                started_at_unix: now.as_secs(),
                status: status.clone(),
                thread: Some(thread),
            },
            RecSender { tx, status },
        ))
    }

    /// Waits for the recorder to finish (all senders dropped), up to `timeout`.
    pub fn join(&mut self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while !self.status.finished.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.status.finished.load(Ordering::Acquire) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub fn error(&self) -> Option<String> {
        self.status
            .error
            .lock()
            .expect("status lock poisoned")
            .clone()
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    mux: fmp4::Fmp4Writer,
    status: Arc<RecordingStatus>,
    t0: Instant,
    failed: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<RecMsg>) {
        while let Ok(msg) = rx.recv() {
            let out = match msg {
                RecMsg::Video { at, data } => {
                    let t = at.saturating_duration_since(self.t0).as_nanos() as u64
                        * fmp4::VIDEO_TIMESCALE as u64
                        / 1_000_000_000;
                    self.mux.push_video(t, &data)
                }
                RecMsg::Audio { at, data } => {
                    let t = at.saturating_duration_since(self.t0).as_nanos() as u64
                        * fmp4::AUDIO_TIMESCALE as u64
                        / 1_000_000_000;
                    self.mux.push_audio(t, &data);
                    self.mux.maybe_cut_audio_only(t)
                }
            };
            match out {
                Ok(bytes) => self.write(&bytes),
                Err(e) => self.fail(format!("muxing: {e}")),
            }
        }
        // Every sender is gone: the recording was stopped or the room ended.
        match self.mux.finish() {
            Ok(bytes) => self.write(&bytes),
            Err(e) => self.fail(format!("muxing: {e}")),
        }
        if !self.failed {
            use std::os::unix::fs::FileExt;
            for (offset, bytes) in self.mux.duration_patches() {
                if let Err(e) = self.file.write_all_at(&bytes, offset) {
                    tracing::warn!(file = %self.path.display(), "could not record the final duration: {e}");
                    break;
                }
            }
        }
        let _ = self.file.sync_all();
        tracing::info!(file = %self.path.display(), bytes = self.status.bytes.load(Ordering::Relaxed), "recording finished");
        self.status.finished.store(true, Ordering::Release);
    }

    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.failed {
            if self.failed && !bytes.is_empty() {
                self.status.dropped_frames.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        match self
            .file
            .write_all(bytes)
            .and_then(|_| self.file.sync_data())
        {
            Ok(()) => {
                self.status
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.status.media_ms.store(
                    self.mux.written_until * 1000 / fmp4::VIDEO_TIMESCALE as u64,
                    Ordering::Relaxed,
                );
            }
            Err(e) => {
                let full = e.raw_os_error() == Some(libc::ENOSPC);
                self.fail(format!(
                    "{} writing {}: {e}",
                    if full { "disk full" } else { "I/O error" },
                    self.path.display()
                ));
                // Cut back to the last complete fragment so the file stays playable.
                let good = self.status.bytes.load(Ordering::Relaxed);
                let _ = self.file.set_len(good);
            }
        }
    }

    fn fail(&mut self, msg: String) {
        tracing::error!(file = %self.path.display(), "recording failed: {msg}");
        *self.status.error.lock().expect("status lock poisoned") = Some(msg);
        self.failed = true;
    }
}

/// Free bytes for unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains NUL"))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time (UTC, proleptic Gregorian).
pub fn utc_compact(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// RFC 3339 UTC time for a Unix time.
pub fn utc_rfc3339(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// (year, month, day, hour, minute, second) of a Unix time, UTC.
fn utc_fields(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A finished or running recording file as the API lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingInfo {
    pub id: String,
    pub room: String,
    pub started_at: String,
    pub duration_seconds: f64,
    pub size_bytes: u64,
    pub active: bool,
    pub dropped_frames: u64,
    pub error: Option<String>,
}

/// The recordings in a directory, with each file's duration remembered by size so that a
/// repeated scan (the cluster publishes its list every 2 s) reads only new or grown files.
#[derive(Default)]
pub struct Catalog {
    /// id → (size when measured, duration then).
    durations: std::collections::HashMap<String, (u64, f64)>,
}

impl Catalog {
    /// Every `{id}.mp4` in `dir`, oldest first; `live` (recordings in progress) are listed
    /// as they report themselves. Blocking: call off the async runtime.
    pub fn scan(
        &mut self,
        dir: &std::path::Path,
        live: &[RecordingInfo],
    ) -> std::io::Result<Vec<RecordingInfo>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        let mut seen = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "mp4") || !valid_id(&id) {
                continue;
            }
            if let Some(l) = live.iter().find(|l| l.id == id) {
                out.push(l.clone());
                continue;
            }
            let Some((room, started)) = parse_id(&id) else {
                continue;
            };
            let size_bytes = std::fs::metadata(&path)?.len();
            let duration_seconds = match self.durations.get(&id) {
                Some(&(size, d)) if size == size_bytes => d,
                _ => {
                    let d = file_duration_seconds(&mut std::fs::File::open(&path)?)?;
                    self.durations.insert(id.clone(), (size_bytes, d));
                    d
                }
            };
            seen.insert(id.clone());
            out.push(RecordingInfo {
                duration_seconds,
                size_bytes,
                id,
                room,
                started_at: utc_rfc3339(started),
                active: false,
                dropped_frames: 0,
                error: None,
            });
        }
        self.durations.retain(|id, _| seen.contains(id));
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

/// Whether `id` is a safe file stem (no path tricks).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !id.starts_with('.')
}

/// Parses `{room}_{YYYYMMDDTHHMMSSZ}[-n]` back into (room, unix start).
pub fn parse_id(id: &str) -> Option<(String, u64)> {
    let (room, stamp) = id.rsplit_once('_')?;
    let stamp = stamp.split('-').next()?;
    if stamp.len() != 16 || !stamp.ends_with('Z') {
        return None;
    }
    let n = |a: usize, b: usize| stamp.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        n(0, 4)?,
        n(4, 6)?,
        n(6, 8)?,
        n(9, 11)?,
        n(11, 13)?,
        n(13, 15)?,
    );
    // days_from_civil
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((
        room.to_owned(),
        (days * 86_400 + h * 3600 + mi * 60 + s) as u64,
    ))
}

/// Duration of an fMP4 file written by us: the end of the last video sample, from each
/// `moof`'s video `tfdt` plus its `trun` durations. Reads box headers and the `moof` boxes
/// (a few kB each) only, never the media data, so listing hours of recordings costs
/// kilobytes of memory. A truncated last box (a crash) ends the walk.
pub fn file_duration_seconds(
    file: &mut (impl std::io::Read + std::io::Seek),
) -> std::io::Result<f64> {
    use mp4_atom::{Any, Atom, Decode, Moof};
    use std::io::SeekFrom;
    /// Larger is not a fragment header we wrote.
    const MAX_MOOF: u64 = 1 << 20;
    let len = file.seek(SeekFrom::End(0))?;
    let (mut p, mut end) = (0u64, 0u64);
    let mut buf = Vec::new();
    while p + 8 <= len {
        file.seek(SeekFrom::Start(p))?;
        let mut h = [0u8; 8];
        file.read_exact(&mut h)?;
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        if size < 8 || p + size > len {
            break;
        }
        if h[4..8] == *Moof::KIND.as_ref() && size <= MAX_MOOF {
            buf.resize(size as usize, 0);
            file.seek(SeekFrom::Start(p))?;
            file.read_exact(&mut buf)?;
            if let Ok(Any::Moof(m)) = Any::decode(&mut std::io::Cursor::new(&buf[..])) {
                for t in m.traf.iter().filter(|t| t.tfhd.track_id == 1) {
                    let base = t.tfdt.as_ref().map_or(0, |d| d.base_media_decode_time);
                    let dur: u64 = t
                        .trun
                        .iter()
                        .flat_map(|r| r.samples.iter())
                        .map(|e| e.duration.unwrap_or(0) as u64)
                        .sum();
                    end = end.max(base + dur);
                }
            }
        }
        p += size;
    }
    Ok(end as f64 / fmp4::VIDEO_TIMESCALE as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_names_round_trip() {
        assert_eq!(utc_compact(0), "19700101T000000Z");
        assert_eq!(utc_compact(1_795_000_000), "20261118T110640Z");
        assert_eq!(utc_rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(
            parse_id("standup_20261118T110640Z"),
            Some(("standup".into(), 1_795_000_000))
        );
        assert_eq!(
            parse_id("a_b_20261118T110640Z-2"),
            Some(("a_b".into(), 1_795_000_000))
        );
        assert_eq!(parse_id("nonsense"), None);
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        assert!(valid_id("room_20261118T110640Z"));
        assert!(!valid_id("../etc/passwd"));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id("a/b"));
    }

    #[test]
    fn unwritable_directory_is_a_clear_error_at_start() {
        let e = Recording::start(
            Path::new("/proc/tessera-cannot-exist"),
            "r",
            64,
            64,
            312,
            Instant::now(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("/proc/tessera-cannot-exist"), "{e}");
    }
}
