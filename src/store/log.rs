//! A segmented, append-only, checksummed log with group commit.
//!
//! spec: log.md. Files `DIR/NNNNNNNNNNNNNNNNNNNN.log`, each a segment header and
//! frames (`ivip_wire::frame`). [`AppendLog::append`] buffers; [`AppendLog::commit`]
//! writes everything buffered and calls `fdatasync` once — so many records share
//! one fsync (group commit), and a caller acknowledges a record only after the
//! commit that carried it returned `Ok`.
//!
//! Recovery ([`AppendLog::open`]) replays every frame in order. A frame cut short or
//! failing its checksum at the very end of the last segment is a torn write — it was
//! never acknowledged — and is cut off. Damage anywhere else (a bad frame followed by
//! a good one, or a bad frame in an older segment) is corruption: `open` refuses with
//! the file and offset, because silently dropping acknowledged records is worse than
//! not starting.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use ivip_wire::frame::{self, FrameError, SEGMENT_HEADER_LEN, SegmentHeader};

/// Why the log could not be used.
#[derive(Debug)]
pub enum LogError {
    /// An I/O operation failed (disk full, permissions, ...).
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A segment is damaged where a torn write cannot explain it.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the first bad frame.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Io { path, op, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "log segment {} is corrupt at byte {offset}: {reason}; restore it from a \
                 replica or backup, or move it aside to discard what it holds",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LogError {}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { path, op, source }
}

/// One record read back during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The segment it is in.
    pub segment: u64,
    /// The record body.
    pub body: Vec<u8>,
}

/// What recovery found besides the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: usize,
    /// Records replayed.
    pub records: usize,
    /// Bytes of a torn tail that were cut off (never acknowledged).
    pub torn_bytes: u64,
}

/// An open log, positioned to append to its newest segment.
#[derive(Debug)]
pub struct AppendLog {
    dir: PathBuf,
    kind: u8,
    file: File,
    segment: u64,
    segment_len: u64,
    segment_bytes_max: u64,
    pending: Vec<u8>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.log"))
}

/// The segment numbers present in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir, "cannot list log directory"))? {
        let e = e.map_err(io(dir, "cannot list log directory"))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name.strip_suffix(".log")
            && num.len() == 20
            && let Ok(n) = num.parse::<u64>()
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "cannot sync log directory"))
}

/// `true` when a valid frame starts anywhere in `b` (used to tell a torn tail from
/// damage in the middle).
fn any_valid_frame(b: &[u8]) -> bool {
    (0..b.len()).any(|i| matches!(frame::split(&b[i..]), Ok((_, n)) if n > frame::FRAME_HEADER_LEN))
}

impl AppendLog {
    /// Open (creating if needed) the log in `dir`, replay every record, cut off a
    /// torn tail, and position for appending. `segment_bytes_max` is when
    /// [`AppendLog::commit`] starts a new segment.
    ///
    /// # Errors
    /// [`LogError::Io`]; [`LogError::Corrupt`] for damage a torn write cannot
    /// explain, or a segment of another kind.
    pub fn open(
        dir: &Path,
        kind: u8,
        segment_bytes_max: u64,
    ) -> Result<(AppendLog, Vec<Replayed>, RecoveryReport), LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "cannot create log directory"))?;
        let segments = list_segments(dir)?;
        let mut records = Vec::new();
        let mut report = RecoveryReport::default();
        for (i, &n) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let path = segment_path(dir, n);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(&path, "cannot read log segment"))?;
            let corrupt = |offset: usize, reason| LogError::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                reason,
            };
            if bytes.len() < SEGMENT_HEADER_LEN && last {
                // A crash while creating the segment: nothing in it was acknowledged.
                report.torn_bytes += bytes.len() as u64;
                std::fs::remove_file(&path).map_err(io(&path, "cannot remove torn segment"))?;
                continue;
            }
            let h = SegmentHeader::parse(&bytes).map_err(|_| corrupt(0, "bad segment header"))?;
            if h.kind != kind || h.number != n {
                return Err(corrupt(0, "segment of another log or misnumbered"));
            }
            let mut at = SEGMENT_HEADER_LEN;
            while at < bytes.len() {
                match frame::split(&bytes[at..]) {
                    Ok((body, used)) => {
                        records.push(Replayed {
                            segment: n,
                            body: body.to_vec(),
                        });
                        at += used;
                    }
                    Err(e) => {
                        let reason = match e {
                            FrameError::Incomplete => "frame cut short",
                            FrameError::Corrupt => "checksum mismatch",
                        };
                        if !last || any_valid_frame(&bytes[at + 1..]) {
                            return Err(corrupt(at, reason));
                        }
                        report.torn_bytes += (bytes.len() - at) as u64;
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io(&path, "cannot open log segment"))?;
                        f.set_len(at as u64)
                            .and_then(|()| f.sync_all())
                            .map_err(io(&path, "cannot cut torn tail of"))?;
                        bytes.truncate(at);
                    }
                }
            }
            report.segments += 1;
        }
        report.records = records.len();
        let segment = list_segments(dir)?.last().copied();
        let (file, segment, segment_len) = match segment {
            Some(n) => {
                let path = segment_path(dir, n);
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io(&path, "cannot open log segment"))?;
                let len = f
                    .seek(SeekFrom::End(0))
                    .map_err(io(&path, "cannot open log segment"))?;
                (f, n, len)
            }
            None => {
                let (f, n) = Self::create_segment(dir, kind, 0)?;
                (f, n, SEGMENT_HEADER_LEN as u64)
            }
        };
        Ok((
            AppendLog {
                dir: dir.to_path_buf(),
                kind,
                file,
                segment,
                segment_len,
                segment_bytes_max,
                pending: Vec::new(),
            },
            records,
            report,
        ))
    }

    fn create_segment(dir: &Path, kind: u8, n: u64) -> Result<(File, u64), LogError> {
        let path = segment_path(dir, n);
        let mut f = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path, "cannot create log segment"))?;
        f.write_all(&SegmentHeader { kind, number: n }.to_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&path, "cannot write log segment header to"))?;
        sync_dir(dir)?;
        Ok((f, n))
    }

    /// Buffer a record; it is durable once a later [`AppendLog::commit`] returns `Ok`.
    pub fn append(&mut self, body: &[u8]) {
        frame::append(&mut self.pending, body);
    }

    /// Bytes buffered and not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Write everything buffered and `fdatasync` once. Starts a new segment
    /// afterwards when the current one has grown past its limit.
    ///
    /// # Errors
    /// [`LogError::Io`]: the buffered records are *not* durable; the caller must
    /// not acknowledge them. The log is then unusable until reopened (which replays
    /// whatever reached the disk).
    pub fn commit(&mut self) -> Result<(), LogError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.segment);
        self.file
            .write_all(&self.pending)
            .and_then(|()| self.file.sync_data())
            .map_err(io(&path, "cannot write log segment"))?;
        self.segment_len += self.pending.len() as u64;
        self.pending.clear();
        if self.segment_len >= self.segment_bytes_max {
            self.rotate()?;
        }
        Ok(())
    }

    /// Start a new segment now; returns its number. Everything committed before is
    /// in earlier segments.
    ///
    /// # Errors
    /// [`LogError::Io`].
    pub fn rotate(&mut self) -> Result<u64, LogError> {
        let (f, n) = Self::create_segment(&self.dir, self.kind, self.segment + 1)?;
        self.file = f;
        self.segment = n;
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        Ok(n)
    }

    /// The segment now being appended to.
    pub fn current_segment(&self) -> u64 {
        self.segment
    }

    /// Delete every segment numbered below `n` (after a checkpoint made them
    /// unnecessary). The current segment is never deleted.
    ///
    /// # Errors
    /// [`LogError::Io`].
    pub fn remove_segments_before(&mut self, n: u64) -> Result<usize, LogError> {
        let mut removed = 0;
        for s in list_segments(&self.dir)? {
            if s < n && s < self.segment {
                let p = segment_path(&self.dir, s);
                std::fs::remove_file(&p).map_err(io(&p, "cannot remove old log segment"))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ivip-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn bodies(r: &[Replayed]) -> Vec<Vec<u8>> {
        r.iter().map(|x| x.body.clone()).collect()
    }

    #[test]
    fn committed_records_are_replayed_in_order_across_segments() {
        let d = tmp("order");
        {
            let (mut log, r, _) = AppendLog::open(&d, 1, 100).unwrap();
            assert!(r.is_empty());
            for i in 0..20u8 {
                log.append(&[i; 10]);
                log.commit().unwrap();
            }
            assert!(log.current_segment() > 0, "rotated past 100 bytes");
            log.append(b"never committed");
        }
        let (_, r, rep) = AppendLog::open(&d, 1, 100).unwrap();
        assert_eq!(
            bodies(&r),
            (0..20u8).map(|i| vec![i; 10]).collect::<Vec<_>>()
        );
        assert_eq!(rep.torn_bytes, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_and_appending_continues() {
        let d = tmp("torn");
        {
            let (mut log, _, _) = AppendLog::open(&d, 1, 1 << 20).unwrap();
            log.append(b"one");
            log.append(b"two");
            log.commit().unwrap();
        }
        let p = segment_path(&d, 0);
        let len = std::fs::metadata(&p).unwrap().len();
        // Tear the last frame in half.
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        {
            let (mut log, r, rep) = AppendLog::open(&d, 1, 1 << 20).unwrap();
            assert_eq!(bodies(&r), vec![b"one".to_vec()]);
            assert_eq!(rep.torn_bytes, 9);
            log.append(b"three");
            log.commit().unwrap();
        }
        let (_, r, _) = AppendLog::open(&d, 1, 1 << 20).unwrap();
        assert_eq!(bodies(&r), vec![b"one".to_vec(), b"three".to_vec()]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damage_in_the_middle_is_refused_with_its_location() {
        let d = tmp("corrupt");
        {
            let (mut log, _, _) = AppendLog::open(&d, 1, 1 << 20).unwrap();
            log.append(b"aaaa");
            log.append(b"bbbb");
            log.commit().unwrap();
        }
        let p = segment_path(&d, 0);
        let mut b = std::fs::read(&p).unwrap();
        b[SEGMENT_HEADER_LEN + 8] ^= 0xff; // first body byte
        std::fs::write(&p, &b).unwrap();
        match AppendLog::open(&d, 1, 1 << 20) {
            Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, SEGMENT_HEADER_LEN as u64),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn another_kind_is_refused_and_old_segments_can_go() {
        let d = tmp("kind");
        {
            let (mut log, _, _) = AppendLog::open(&d, 1, 10).unwrap();
            for _ in 0..3 {
                log.append(b"x");
                log.commit().unwrap();
            }
            let cur = log.current_segment();
            assert_eq!(log.remove_segments_before(cur).unwrap(), cur as usize);
        }
        assert!(matches!(
            AppendLog::open(&d, 2, 10),
            Err(LogError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
