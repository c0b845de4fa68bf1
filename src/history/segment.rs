//! History segment files: a segment header, then checksummed frames whose bodies
//! are history records.
//!
//! spec: history.md §2 (and log.md §2–§3 for the header and frames). What this is:
//! creating, appending to (group commit: many frames, one `fdatasync`), scanning
//! and reading single frames of one segment file. What it is not: the recovery
//! policy across segments, or the index (see `store` and `index`).
//!
//! Unlike the RUAS write-ahead log (`store::log`), a history scan does not stop at
//! damage: it reports each damaged stretch with its offset and length, finds the
//! next valid frame, and goes on, so that one bad sector costs only the records in
//! it (issue: "a corrupted segment is ... reported with its location, and the rest
//! stays searchable").

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use ivip_wire::frame::{self, FRAME_BODY_MAX, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
use ivip_wire::history::HistoryRecord;

use super::error::StoreError;

/// Directory of the segment files inside a history directory.
pub const SEGMENTS_DIR: &str = "segments";
/// Largest segment size a store accepts (frame offsets are 32-bit; keep well
/// below).
pub const SEGMENT_BYTES_MAX_LIMIT: u64 = 1 << 30;

/// The path of segment `n`.
pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(SEGMENTS_DIR).join(format!("{n:020}.log"))
}

/// The segment numbers present, ascending.
///
/// # Errors
/// [`StoreError::Io`].
pub fn list_segments(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let sdir = dir.join(SEGMENTS_DIR);
    let mut v = Vec::new();
    let rd = std::fs::read_dir(&sdir).map_err(StoreError::io(&sdir, "cannot list"))?;
    for e in rd {
        let e = e.map_err(StoreError::io(&sdir, "cannot list"))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name.strip_suffix(".log")
            && num.len() == 20
            && let Ok(n) = num.parse::<u32>()
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// `fsync` a directory so that created, renamed and removed names are durable.
///
/// # Errors
/// [`StoreError::Io`].
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir, "cannot sync directory"))
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    path: PathBuf,
    number: u32,
    file: File,
    /// Bytes durable on disk.
    committed: u64,
    /// Frames encoded and not yet written.
    pending: Vec<u8>,
}

impl SegmentWriter {
    /// Create segment `n` (header written and synced, then the directory).
    ///
    /// # Errors
    /// [`StoreError::Io`]; creating a segment that exists is an error.
    pub fn create(dir: &Path, n: u32) -> Result<SegmentWriter, StoreError> {
        let path = segment_path(dir, n);
        let mut file = OpenOptions::new()
            .append(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .map_err(StoreError::io(&path, "cannot create segment"))?;
        let h = SegmentHeader {
            kind: frame::kind::HISTORY,
            number: u64::from(n),
        };
        file.write_all(&h.to_bytes())
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io(&path, "cannot write segment header to"))?;
        sync_dir(&dir.join(SEGMENTS_DIR))?;
        Ok(SegmentWriter {
            path,
            number: n,
            file,
            committed: SEGMENT_HEADER_LEN as u64,
            pending: Vec::new(),
        })
    }

    /// Continue appending to segment `n`, whose valid content ends at `len`
    /// (anything after is cut off first: a torn tail).
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn reopen(dir: &Path, n: u32, len: u64) -> Result<SegmentWriter, StoreError> {
        let path = segment_path(dir, n);
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .map_err(StoreError::io(&path, "cannot open segment"))?;
        let on_disk = file
            .metadata()
            .map_err(StoreError::io(&path, "cannot stat segment"))?
            .len();
        if on_disk != len {
            file.set_len(len)
                .and_then(|()| file.sync_all())
                .map_err(StoreError::io(&path, "cannot cut the torn tail of segment"))?;
        }
        Ok(SegmentWriter {
            path,
            number: n,
            file,
            committed: len,
            pending: Vec::new(),
        })
    }

    /// The segment's number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Bytes durable on disk.
    pub fn committed_len(&self) -> u64 {
        self.committed
    }

    /// Bytes buffered and not yet committed.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Buffer a frame around `body`; returns the offset it will have. It is durable
    /// once a later [`SegmentWriter::commit`] returns `Ok`.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] when the body is over the frame limit or the
    /// segment would pass the 32-bit offset range.
    pub fn append(&mut self, body: &[u8]) -> Result<u32, StoreError> {
        if body.len() > FRAME_BODY_MAX {
            return Err(StoreError::TooLarge {
                what: "history record",
                bytes: body.len() as u64,
            });
        }
        let at = self.committed + self.pending.len() as u64;
        let end = at + (FRAME_HEADER_LEN + body.len()) as u64;
        if end > u64::from(u32::MAX) {
            return Err(StoreError::TooLarge {
                what: "segment",
                bytes: end,
            });
        }
        frame::append(&mut self.pending, body);
        Ok(at as u32)
    }

    /// Write everything buffered and `fdatasync` once.
    ///
    /// # Errors
    /// [`StoreError::Io`]: nothing buffered is durable; the writer must not be
    /// used again (reopen the store, which keeps whatever reached the disk whole).
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.pending)
            .and_then(|()| self.file.sync_data())
            .map_err(StoreError::io(&self.path, "cannot write segment"))?;
        self.committed += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------

/// A damaged stretch of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment number.
    pub segment: u32,
    /// The file.
    pub path: PathBuf,
    /// Byte offset where the damage starts.
    pub offset: u64,
    /// Bytes skipped (up to the next valid frame, or the end of the file).
    pub len: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "history segment {} is damaged at bytes {}..{}: {}; the records there are \
             lost, the rest stays searchable (restore the file from another recorder \
             or a backup to recover them)",
            self.path.display(),
            self.offset,
            self.offset + self.len,
            self.reason
        )
    }
}

/// What a scan of one segment found.
#[derive(Debug, Clone, Default)]
pub struct ScanOutcome {
    /// Valid frames visited.
    pub frames: u64,
    /// Damaged stretches (not including a torn tail).
    pub damage: Vec<Damage>,
    /// Offset where a torn tail starts (only when the caller allowed one).
    pub torn_at: Option<u64>,
    /// Byte length of the valid content: the file length, or `torn_at`.
    pub valid_len: u64,
}

/// `true` when a valid history frame starts at the front of `b`.
fn frame_at(b: &[u8]) -> Option<(HistoryRecord, usize)> {
    // Cheap rejections first: resynchronising calls this at every byte.
    if b.len() < FRAME_HEADER_LEN + 2 {
        return None;
    }
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if !(2..=FRAME_BODY_MAX).contains(&len) || len > b.len() - FRAME_HEADER_LEN {
        return None;
    }
    let kind = b[FRAME_HEADER_LEN];
    if !(1..=3).contains(&kind) || b[FRAME_HEADER_LEN + 1] != 0 {
        return None;
    }
    let (body, used) = frame::split(b).ok()?;
    let rec = HistoryRecord::parse(body).ok()?;
    Some((rec, used))
}

/// Read segment `n` whole and visit every valid record with its offset.
///
/// Damage is skipped and reported. When `tail_may_tear` (the segment was being
/// appended to when the recorder stopped), damage that runs to the end of the file
/// with no valid frame after it is a torn write, reported in `torn_at` instead.
///
/// # Errors
/// [`StoreError::Io`] when the file cannot be read.
pub fn scan(
    dir: &Path,
    n: u32,
    tail_may_tear: bool,
    mut visit: impl FnMut(u32, HistoryRecord),
) -> Result<ScanOutcome, StoreError> {
    let path = segment_path(dir, n);
    let bytes = std::fs::read(&path).map_err(StoreError::io(&path, "cannot read segment"))?;
    let mut out = ScanOutcome::default();
    let damage = |offset: usize, len: usize, reason: String| Damage {
        segment: n,
        path: path.clone(),
        offset: offset as u64,
        len: len as u64,
        reason,
    };
    if bytes.len() < SEGMENT_HEADER_LEN {
        if tail_may_tear {
            out.torn_at = Some(0);
        } else {
            out.damage
                .push(damage(0, bytes.len(), "segment header cut short".into()));
        }
        return Ok(out);
    }
    match SegmentHeader::parse(&bytes) {
        Ok(h) if h.kind == frame::kind::HISTORY && h.number == u64::from(n) => {}
        Ok(_) => out.damage.push(damage(
            0,
            SEGMENT_HEADER_LEN,
            "segment header names another log kind or number".into(),
        )),
        Err(e) => out.damage.push(damage(
            0,
            SEGMENT_HEADER_LEN,
            format!("segment header: {e}"),
        )),
    }
    let mut at = SEGMENT_HEADER_LEN;
    while at < bytes.len() {
        let reason = match frame::split(&bytes[at..]) {
            Ok((body, used)) => match HistoryRecord::parse(body) {
                Ok(rec) => {
                    visit(at as u32, rec);
                    out.frames += 1;
                    at += used;
                    continue;
                }
                Err(e) => format!("frame checksum is right but the record is invalid: {e}"),
            },
            Err(frame::FrameError::Incomplete) => "frame cut short".to_string(),
            Err(frame::FrameError::Corrupt) => "frame checksum mismatch".to_string(),
        };
        // Find the next valid frame.
        let next = (at + 1..bytes.len()).find(|&i| frame_at(&bytes[i..]).is_some());
        match next {
            Some(i) => {
                out.damage.push(damage(at, i - at, reason));
                at = i;
            }
            None if tail_may_tear => {
                out.torn_at = Some(at as u64);
                out.valid_len = at as u64;
                return Ok(out);
            }
            None => {
                out.damage.push(damage(at, bytes.len() - at, reason));
                at = bytes.len();
            }
        }
    }
    out.valid_len = bytes.len() as u64;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Random access
// ---------------------------------------------------------------------------

/// Why one frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameReadError {
    /// The file could not be opened or read (e.g. removed by retention).
    Io(String),
    /// The frame is damaged or does not hold a valid record.
    Damaged(String),
}

/// Bytes read on the first try; most records are smaller.
const FIRST_READ_LEN: usize = 4096;

/// Read and check the record whose frame starts at `offset` of an open segment.
///
/// # Errors
/// [`FrameReadError`].
pub fn read_record(file: &File, offset: u32) -> Result<HistoryRecord, FrameReadError> {
    let mut buf = vec![0u8; FIRST_READ_LEN];
    let n = read_at_most(file, &mut buf, u64::from(offset))?;
    buf.truncate(n);
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FrameReadError::Damaged("frame cut short".into()));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > FRAME_BODY_MAX {
        return Err(FrameReadError::Damaged(
            "frame length over the limit".into(),
        ));
    }
    let total = FRAME_HEADER_LEN + len;
    if buf.len() < total {
        let have = buf.len();
        buf.resize(total, 0);
        let m = read_at_most(file, &mut buf[have..], u64::from(offset) + have as u64)?;
        buf.truncate(have + m);
    }
    let (body, _) = frame::split(&buf).map_err(|e| {
        FrameReadError::Damaged(
            match e {
                frame::FrameError::Incomplete => "frame cut short",
                frame::FrameError::Corrupt => "frame checksum mismatch",
            }
            .into(),
        )
    })?;
    HistoryRecord::parse(body).map_err(|e| FrameReadError::Damaged(format!("invalid record: {e}")))
}

fn read_at_most(file: &File, buf: &mut [u8], mut offset: u64) -> Result<usize, FrameReadError> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameReadError::Io(e.to_string())),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivip_wire::Mab;
    use ivip_wire::history::GapRecord;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ivip-hseg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(SEGMENTS_DIR)).unwrap();
        d
    }

    fn gap(i: u64) -> Vec<u8> {
        HistoryRecord::Gap(GapRecord::MabSets {
            recv_us: i,
            mab: "20.0.0.0/14".parse::<Mab>().unwrap(),
            first: i,
            last: i + 1,
        })
        .to_vec()
        .unwrap()
    }

    fn all(d: &Path, n: u32, tear: bool) -> (Vec<(u32, HistoryRecord)>, ScanOutcome) {
        let mut v = Vec::new();
        let o = scan(d, n, tear, |at, r| v.push((at, r))).unwrap();
        (v, o)
    }

    #[test]
    fn frames_come_back_at_their_offsets() {
        let d = tmp("offsets");
        let mut w = SegmentWriter::create(&d, 0).unwrap();
        let a = w.append(&gap(1)).unwrap();
        let b = w.append(&gap(2)).unwrap();
        assert_eq!(a, SEGMENT_HEADER_LEN as u32);
        w.commit().unwrap();
        let (v, o) = all(&d, 0, false);
        assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), vec![a, b]);
        assert!(o.damage.is_empty());
        let f = File::open(segment_path(&d, 0)).unwrap();
        assert_eq!(read_record(&f, b).unwrap(), v[1].1);
        assert!(matches!(
            read_record(&f, b + 1),
            Err(FrameReadError::Damaged(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damage_in_the_middle_is_reported_and_skipped() {
        let d = tmp("middle");
        let mut w = SegmentWriter::create(&d, 3).unwrap();
        let offs: Vec<u32> = (0..5).map(|i| w.append(&gap(i)).unwrap()).collect();
        w.commit().unwrap();
        let p = segment_path(&d, 3);
        let mut b = std::fs::read(&p).unwrap();
        b[offs[2] as usize + 12] ^= 0x55;
        std::fs::write(&p, &b).unwrap();
        let (v, o) = all(&d, 3, true);
        assert_eq!(v.len(), 4, "only the damaged record is lost");
        assert_eq!(o.damage.len(), 1);
        assert_eq!(o.damage[0].offset, u64::from(offs[2]));
        assert_eq!(o.damage[0].len, u64::from(offs[3] - offs[2]));
        assert_eq!(o.torn_at, None);
        assert!(o.damage[0].to_string().contains("00000000000000000003.log"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_tail_is_told_apart_and_cut_on_reopen() {
        let d = tmp("torn");
        let mut w = SegmentWriter::create(&d, 0).unwrap();
        let offs: Vec<u32> = (0..3).map(|i| w.append(&gap(i)).unwrap()).collect();
        w.commit().unwrap();
        let p = segment_path(&d, 0);
        let len = std::fs::metadata(&p).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (v, o) = all(&d, 0, true);
        assert_eq!(v.len(), 2);
        assert_eq!(o.torn_at, Some(u64::from(offs[2])));
        // Not the last segment: the same bytes are damage, not a torn tail.
        let (_, o2) = all(&d, 0, false);
        assert_eq!(o2.damage.len(), 1);
        let mut w = SegmentWriter::reopen(&d, 0, o.valid_len).unwrap();
        let c = w.append(&gap(9)).unwrap();
        assert_eq!(c, offs[2]);
        w.commit().unwrap();
        let (v, o) = all(&d, 0, true);
        assert_eq!((v.len(), o.torn_at), (3, None));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
