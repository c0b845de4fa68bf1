//! The audit trail: an append-only, fsynced log of every request a UAS handles —
//! who, from where, what, and the outcome (seed s4.3: "UAS-Z would keep an audit
//! trail of all interactions").
//!
//! spec: audit.md. Records are JSON objects ([`AuditRecord`]) in the frames of a
//! kind-2 log (log.md, [`crate::store::log::AppendLog`]): CRC-checked, group
//! committed, torn tails cut on recovery. A request is answered only after its
//! record is on disk, so an answer the user saw is never missing from the trail
//! after a crash. A set that is forwarded gets an `intent` record before it is
//! signed and a `done` record with the outcome.
//!
//! Not here: deciding outcomes; shipping the trail elsewhere (operators tail it with
//! `ivip uas audit DIR`).

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use ivip_wire::frame::{self, SEGMENT_HEADER_LEN, SegmentHeader, kind};
use serde::{Deserialize, Serialize};

use crate::store::log::{AppendLog, LogError};

/// Current record version.
pub const AUDIT_VERSION: u32 = 1;
/// Records waiting for the writer; a full queue makes handlers wait.
pub const AUDIT_QUEUE_MAX: usize = 4_096;
/// Longest `detail` text kept in a record.
pub const DETAIL_LEN_MAX: usize = 1_000;

/// What a record marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A command set about to be signed and forwarded (written before anything is
    /// sent).
    Intent,
    /// A request finished: its outcome.
    Done,
}

/// One audit record (spec: audit.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// [`AUDIT_VERSION`].
    pub v: u32,
    /// When the request arrived, µs since the Unix epoch.
    pub time_us: u64,
    /// `intent` or `done`.
    pub event: AuditEvent,
    /// User name, `child:NAME` for a child UAS, or `-` when not authenticated
    /// (then `claimed` may say who it said it was).
    pub who: String,
    /// `password`, `session`, `key`, `child` or `none`.
    pub auth: String,
    /// The peer's address and port.
    pub from: String,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The name given in failed credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    /// The SUMUC request id, 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The MAB of the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mab: Option<String>,
    /// The commands, one text line each (`set-etr 20.0.0.4+4 192.0.2.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<String>>,
    /// A dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Execute-at time asked for, µs since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute_at_us: Option<u64>,
    /// HTTP status answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Outcome token: `accepted`, `scheduled`, `dry_run_ok`, `ok`, or an error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Index of the failing command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<usize>,
    /// The reason, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The per-MAB sequence the RUAS gave an accepted set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mab_seq: Option<u64>,
}

impl AuditRecord {
    /// A `done` record with the request's identity filled in and the rest empty.
    pub fn new(time_us: u64, event: AuditEvent, from: &str, method: &str, path: &str) -> Self {
        AuditRecord {
            v: AUDIT_VERSION,
            time_us,
            event,
            who: "-".into(),
            auth: "none".into(),
            from: from.into(),
            method: method.into(),
            path: path.into(),
            claimed: None,
            request_id: None,
            mab: None,
            commands: None,
            dry_run: None,
            execute_at_us: None,
            status: None,
            code: None,
            command: None,
            detail: None,
            mab_seq: None,
        }
    }

    /// The JSON body of the frame.
    pub fn to_json(&self) -> Vec<u8> {
        let mut r = self.clone();
        if let Some(d) = &mut r.detail
            && d.len() > DETAIL_LEN_MAX
        {
            let mut cut = DETAIL_LEN_MAX;
            while !d.is_char_boundary(cut) {
                cut -= 1;
            }
            d.truncate(cut);
        }
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(&r).unwrap_or_default()
    }
}

/// Why a record could not be made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditError(pub String);

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit trail unavailable: {}", self.0)
    }
}

impl std::error::Error for AuditError {}

type Job = (Vec<u8>, Sender<Result<(), AuditError>>);

/// The audit trail writer: a thread owning the log, committing whatever records
/// are waiting with one fsync (group commit).
#[derive(Debug)]
pub struct AuditLog {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Open (creating) the trail in `dir`; returns it and how many records it holds.
    ///
    /// # Errors
    /// [`LogError`] (including corruption a torn write cannot explain).
    pub fn open(dir: &Path, segment_bytes_max: u64) -> Result<(AuditLog, usize), LogError> {
        let (log, records, _) = AppendLog::open(dir, kind::UAS_AUDIT, segment_bytes_max)?;
        let (tx, rx) = bounded::<Job>(AUDIT_QUEUE_MAX);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("uas-audit".into())
            .spawn(move || writer(log, rx, dir, segment_bytes_max))
            .map_err(|source| LogError::Io {
                path: PathBuf::new(),
                op: "cannot start the audit thread for",
                source,
            })?;
        Ok((
            AuditLog {
                tx: Some(tx),
                thread: Some(thread),
            },
            records.len(),
        ))
    }

    /// Append `rec` and wait until it is on disk.
    ///
    /// # Errors
    /// [`AuditError`] when the write or fsync failed: the caller must not go on as
    /// if the request were recorded.
    pub fn record(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let (reply, wait) = bounded(1);
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| AuditError("closed".into()))?;
        tx.send((rec.to_json(), reply))
            .map_err(|_| AuditError("writer stopped".into()))?;
        wait.recv()
            .map_err(|_| AuditError("writer stopped".into()))?
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn writer(mut log: AppendLog, rx: Receiver<Job>, dir: PathBuf, segment_bytes_max: u64) {
    let mut broken: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < AUDIT_QUEUE_MAX {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if broken.is_some() {
            // A failed commit leaves the log unusable; reopening replays what reached
            // the disk and cuts a torn tail.
            match AppendLog::open(&dir, kind::UAS_AUDIT, segment_bytes_max) {
                Ok((l, _, _)) => {
                    log = l;
                    broken = None;
                }
                Err(e) => broken = Some(e.to_string()),
            }
        }
        let result = match &broken {
            Some(e) => Err(AuditError(e.clone())),
            None => {
                for (body, _) in &batch {
                    log.append(body);
                }
                log.commit().map_err(|e| {
                    log::error!("audit trail: {e}");
                    broken = Some(e.to_string());
                    AuditError(e.to_string())
                })
            }
        };
        for (_, reply) in batch {
            let _ = reply.send(result.clone());
        }
    }
}

/// Why one frame of the trail is not a record (spec: audit.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditParseError {
    /// The bytes end inside the frame (a torn tail when at the end of the log).
    Incomplete,
    /// The frame's checksum does not match.
    Corrupt,
    /// The body is not a JSON record of this format.
    BadRecord,
    /// Bytes follow the frame.
    TrailingBytes,
}

impl std::fmt::Display for AuditParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuditParseError::Incomplete => "frame cut short",
            AuditParseError::Corrupt => "frame checksum mismatch",
            AuditParseError::BadRecord => "frame body is not an audit record",
            AuditParseError::TrailingBytes => "bytes after the frame",
        })
    }
}

/// Parse one whole frame holding one record.
///
/// # Errors
/// [`AuditParseError`].
pub fn parse_frame(b: &[u8]) -> Result<AuditRecord, AuditParseError> {
    let (body, n) = frame::split(b).map_err(|e| match e {
        frame::FrameError::Incomplete => AuditParseError::Incomplete,
        frame::FrameError::Corrupt => AuditParseError::Corrupt,
    })?;
    if n != b.len() {
        return Err(AuditParseError::TrailingBytes);
    }
    parse_body(body)
}

/// Parse a frame body. Unknown fields are ignored (audit.md §4); `v` must be 1.
///
/// # Errors
/// [`AuditParseError::BadRecord`].
pub fn parse_body(body: &[u8]) -> Result<AuditRecord, AuditParseError> {
    let r: AuditRecord = serde_json::from_slice(body).map_err(|_| AuditParseError::BadRecord)?;
    if r.v != AUDIT_VERSION {
        return Err(AuditParseError::BadRecord);
    }
    Ok(r)
}

/// Why the trail could not be read.
#[derive(Debug)]
pub enum AuditReadError {
    /// A file could not be read.
    Io(PathBuf, std::io::Error),
    /// A segment is damaged before its end, or a record is not JSON.
    Corrupt(PathBuf, u64, String),
}

impl std::fmt::Display for AuditReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditReadError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            AuditReadError::Corrupt(p, at, why) => {
                write!(
                    f,
                    "audit segment {} is damaged at byte {at}: {why}",
                    p.display()
                )
            }
        }
    }
}

impl std::error::Error for AuditReadError {}

/// Read every record in `dir` without changing anything (safe while the UAS
/// runs). A torn tail of the newest segment is ignored, as recovery would.
///
/// # Errors
/// [`AuditReadError`].
pub fn read_records(dir: &Path) -> Result<Vec<AuditRecord>, AuditReadError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| AuditReadError::Io(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 24 && n.ends_with(".log"))
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for (i, p) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let mut b = Vec::new();
        File::open(p)
            .and_then(|mut f| f.read_to_end(&mut b))
            .map_err(|e| AuditReadError::Io(p.clone(), e))?;
        if b.len() < SEGMENT_HEADER_LEN && last {
            break;
        }
        let h = SegmentHeader::parse(&b)
            .map_err(|e| AuditReadError::Corrupt(p.clone(), 0, e.to_string()))?;
        if h.kind != kind::UAS_AUDIT {
            return Err(AuditReadError::Corrupt(
                p.clone(),
                0,
                format!("segment of kind {}, not the audit trail", h.kind),
            ));
        }
        let mut at = SEGMENT_HEADER_LEN;
        while at < b.len() {
            match frame::split(&b[at..]) {
                Ok((body, n)) => {
                    let r = parse_body(body).map_err(|e| {
                        AuditReadError::Corrupt(p.clone(), at as u64, e.to_string())
                    })?;
                    out.push(r);
                    at += n;
                }
                Err(_) if last => break,
                Err(e) => {
                    return Err(AuditReadError::Corrupt(
                        p.clone(),
                        at as u64,
                        format!("{e:?}"),
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ivip-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn records_are_durable_and_read_back_in_order() {
        let d = tmp("order");
        {
            let (log, n) = AuditLog::open(&d, 1 << 20).unwrap();
            assert_eq!(n, 0);
            let mut threads = Vec::new();
            let log = std::sync::Arc::new(log);
            for i in 0..4u64 {
                let log = log.clone();
                threads.push(std::thread::spawn(move || {
                    for j in 0..25u64 {
                        let mut r = AuditRecord::new(
                            i * 100 + j,
                            AuditEvent::Done,
                            "127.0.0.1:1",
                            "GET",
                            "/v1/me",
                        );
                        r.who = format!("user{i}");
                        log.record(&r).unwrap();
                    }
                }));
            }
            for t in threads {
                t.join().unwrap();
            }
        }
        let recs = read_records(&d).unwrap();
        assert_eq!(recs.len(), 100);
        for i in 0..4u64 {
            let mine: Vec<u64> = recs
                .iter()
                .filter(|r| r.who == format!("user{i}"))
                .map(|r| r.time_us)
                .collect();
            assert_eq!(mine, (0..25).map(|j| i * 100 + j).collect::<Vec<_>>());
        }
        let (_, n) = AuditLog::open(&d, 1 << 20).unwrap();
        assert_eq!(n, 100);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn long_details_are_cut_on_a_char_boundary() {
        let mut r = AuditRecord::new(1, AuditEvent::Done, "a", "GET", "/");
        r.detail = Some("é".repeat(DETAIL_LEN_MAX));
        let back: AuditRecord = serde_json::from_slice(&r.to_json()).unwrap();
        assert!(back.detail.unwrap().len() <= DETAIL_LEN_MAX);
    }

    fn vector_records() -> Vec<(&'static str, AuditRecord)> {
        let mut intent = AuditRecord::new(
            1_764_073_316_000_000,
            AuditEvent::Intent,
            "192.0.2.7:40000",
            "POST",
            "/v1/commands",
        );
        intent.who = "user-u".into();
        intent.auth = "session".into();
        intent.request_id = Some("1122334455667788".into());
        intent.mab = Some("20.0.0.0/14".into());
        intent.commands = Some(vec![
            "set-etr 20.1.2.0+16 0.0.0.0".into(),
            "split 20.1.2.0+16 at 4".into(),
        ]);
        intent.dry_run = Some(false);
        let mut done = intent.clone();
        done.event = AuditEvent::Done;
        done.status = Some(200);
        done.code = Some("accepted".into());
        done.mab_seq = Some(42);
        let mut refused = AuditRecord::new(
            1_764_073_317_000_000,
            AuditEvent::Done,
            "[2001:db8::9]:5555",
            "POST",
            "/v1/commands",
        );
        refused.claimed = Some("user-u".into());
        refused.status = Some(401);
        refused.code = Some("unauthorized".into());
        refused.detail = Some("wrong user name, password or key".into());
        let mut child = AuditRecord::new(
            1_764_073_318_000_000,
            AuditEvent::Done,
            "127.0.0.1:41000",
            "POST",
            "/v1/sumuc",
        );
        child.who = "child:uas-z".into();
        child.auth = "child".into();
        child.claimed = Some("uas-z/user-u".into());
        child.request_id = Some("1122334455667788".into());
        child.mab = Some("20.0.0.0/14".into());
        child.commands = Some(vec!["set-etr 20.1.8.0+4 11.0.0.1".into()]);
        child.status = Some(403);
        child.code = Some("not_delegated".into());
        child.command = Some(0);
        child.detail = Some("command 0 touches addresses not delegated to the signer".into());
        vec![
            (
                "intent: a user's set about to be signed and forwarded",
                intent,
            ),
            ("done: the RUAS accepted it with per-MAB sequence 42", done),
            (
                "done: wrong password, refused before anything else",
                refused,
            ),
            ("done: a child UAS's SUMUC refused as not delegated", child),
        ]
    }

    fn hex_lines(b: &[u8]) -> String {
        b.chunks(32)
            .map(|c| format!("hex: {}\n", ivip_wire::hex::encode(c)))
            .collect()
    }

    const VECTORS: &str = include_str!("../../spec/vectors/audit.txt");

    #[test]
    fn spec_vectors_parse_and_re_encode_exactly() {
        if std::env::var_os("IVIP_WRITE_VECTORS").is_some() {
            let mut out = String::from(
                "# Audit trail records (spec/audit.md): each vector is one whole log frame\n\
                 # (length, CRC-32C, JSON body; log.md §3). `fields:` is the body.\n\n",
            );
            for (name, r) in vector_records() {
                out += &format!("name: {name}\n");
                out += &hex_lines(&frame::encode(&r.to_json()));
                out += &format!("fields: {}\n\n", String::from_utf8(r.to_json()).unwrap());
            }
            let bad = [
                ("body is not JSON", frame::encode(b"not json"), "BadRecord"),
                (
                    "required field `who` missing",
                    frame::encode(br#"{"v":1,"time_us":1,"event":"done","auth":"none","from":"x","method":"GET","path":"/"}"#),
                    "BadRecord",
                ),
                (
                    "unknown version",
                    frame::encode(br#"{"v":2,"time_us":1,"event":"done","who":"-","auth":"none","from":"x","method":"GET","path":"/"}"#),
                    "BadRecord",
                ),
                ("checksum does not match", {
                    let mut f = frame::encode(&vector_records()[0].1.to_json());
                    f[12] ^= 1;
                    f
                }, "Corrupt"),
                ("frame cut short", {
                    let f = frame::encode(&vector_records()[0].1.to_json());
                    f[..f.len() - 1].to_vec()
                }, "Incomplete"),
            ];
            for (name, b, e) in bad {
                out += &format!("name: {name}\n{}error: {e}\n\n", hex_lines(&b));
            }
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/spec/vectors/audit.txt"),
                out.trim_end().to_string() + "\n",
            )
            .unwrap();
            return;
        }
        let mut valid = 0;
        let mut invalid = 0;
        for block in VECTORS.split("\n\n") {
            let mut hex = String::new();
            let mut fields = None;
            let mut error = None;
            for line in block.lines() {
                if let Some(h) = line.strip_prefix("hex: ") {
                    hex.push_str(h.trim());
                } else if let Some(f) = line.strip_prefix("fields: ") {
                    fields = Some(f);
                } else if let Some(e) = line.strip_prefix("error: ") {
                    error = Some(e);
                }
            }
            if hex.is_empty() {
                continue;
            }
            let bytes = ivip_wire::hex::decode(&hex).unwrap();
            match (fields, error) {
                (Some(f), None) => {
                    let r = parse_frame(&bytes).unwrap();
                    assert_eq!(String::from_utf8(r.to_json()).unwrap(), f);
                    assert_eq!(frame::encode(&r.to_json()), bytes);
                    valid += 1;
                }
                (None, Some(e)) => {
                    let got = parse_frame(&bytes).unwrap_err();
                    assert_eq!(format!("{got:?}"), e);
                    invalid += 1;
                }
                _ => panic!("vector needs fields: or error: {block}"),
            }
        }
        assert_eq!((valid, invalid), (4, 5));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_on_random_or_mutated_frames(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            flip in 0usize..400,
        ) {
            let _ = parse_frame(&bytes);
            let mut f = frame::encode(&vector_records()[1].1.to_json());
            let i = flip % f.len();
            f[i] ^= 0x20;
            let _ = parse_frame(&f);
            let _ = parse_body(&bytes);
        }
    }
}
