//! The RUAS's snapshot files: written under their standard names, kept two per
//! MAB, listed for HTTP, and read back at start as checkpoints (seed s4.1.2;
//! spec: snapshot.md, wal.md §3).
//!
//! A file is written to `NAME.tmp`, synced, renamed, and the directory synced, so a
//! crash leaves either the whole file or none under its name.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ivip_wire::Mab;
use ivip_wire::snapshot::{Snapshot, SnapshotName};

use crate::sign::{PublicKey, Verifier};
use crate::table::Table;

/// Files kept per MAB (s4.1.2: the previous one "should be available for a while").
pub const FILES_PER_MAB: usize = 2;

/// One file on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its standard name.
    pub name: String,
    /// The MAB.
    pub mab: Mab,
    /// The per-MAB sequence it reflects.
    pub mab_seq: u64,
    /// When it was taken.
    pub created_us: u64,
    /// Its canonical hash.
    pub sha256: [u8; 32],
    /// Its size.
    pub bytes: u64,
    /// The stream epoch it records (0 when absent).
    pub epoch: u32,
}

/// Why a snapshot file could not be used.
#[derive(Debug)]
pub struct SnapshotFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for SnapshotFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snapshot {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for SnapshotFileError {}

fn err(path: &Path, reason: impl Into<String>) -> SnapshotFileError {
    SnapshotFileError {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Describe a checked snapshot file.
pub fn describe(name: &str, bytes: &[u8]) -> Option<SnapshotFile> {
    let s = Snapshot::new_checked(bytes).ok()?;
    let meta = s.meta();
    Some(SnapshotFile {
        name: name.to_string(),
        mab: meta.mab,
        mab_seq: meta.mab_seq,
        created_us: meta.created_us,
        sha256: s.stored_sha256(),
        bytes: bytes.len() as u64,
        epoch: s.stream_position().map_or(0, |p| p.epoch),
    })
}

/// What start-up found in the snapshot directory.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest valid table of each MAB.
    pub checkpoints: Vec<Table>,
    /// Files kept, newest first per MAB.
    pub files: Vec<SnapshotFile>,
    /// The highest stream epoch any file records.
    pub highest_epoch: u32,
    /// Files that failed verification and were moved aside (`.bad`).
    pub refused: Vec<String>,
}

/// Read the directory: verify every file with the RUAS's own key, keep the newest
/// valid one per MAB as the checkpoint, move damaged files aside (`NAME.bad`) and
/// delete leftovers (`.tmp`) and files beyond [`FILES_PER_MAB`].
///
/// # Errors
/// [`SnapshotFileError`] when the directory cannot be read or created.
pub fn load_dir(
    dir: &Path,
    key: &PublicKey,
    verifier: &dyn Verifier,
    mabs: &[Mab],
) -> Result<Loaded, SnapshotFileError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    let mut found: Vec<(SnapshotFile, PathBuf)> = Vec::new();
    let mut out = Loaded::default();
    let entries = std::fs::read_dir(dir).map_err(|e| err(dir, format!("cannot list: {e}")))?;
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if name.parse::<SnapshotName>().is_err() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
        match Table::load_snapshot(&bytes, verifier, key, None) {
            Ok((_, _)) => {
                if let Some(f) = describe(&name, &bytes) {
                    out.highest_epoch = out.highest_epoch.max(f.epoch);
                    found.push((f, path));
                }
            }
            Err(e) => {
                log::error!(
                    "snapshot {}: {e}; moved aside as {name}.bad",
                    path.display()
                );
                let _ = std::fs::rename(&path, dir.join(format!("{name}.bad")));
                out.refused.push(name);
            }
        }
    }
    found.sort_by(|a, b| {
        (a.0.mab, b.0.created_us, b.0.mab_seq).cmp(&(b.0.mab, a.0.created_us, a.0.mab_seq))
    });
    let mut per_mab: std::collections::HashMap<Mab, usize> = std::collections::HashMap::new();
    for (f, path) in found {
        let n = per_mab.entry(f.mab).or_default();
        *n += 1;
        if *n > FILES_PER_MAB || !mabs.contains(&f.mab) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if *n == 1 {
            let bytes =
                std::fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
            let (t, _) = Table::load_snapshot(&bytes, verifier, key, Some(f.mab))
                .map_err(|e| err(&path, e.to_string()))?;
            out.checkpoints.push(t);
        }
        out.files.push(f);
    }
    Ok(out)
}

/// Write a file durably under `name` in `dir`.
///
/// # Errors
/// [`SnapshotFileError`].
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SnapshotFileError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let fin = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| err(&tmp, format!("cannot create: {e}")))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, &fin).map_err(|e| err(&fin, format!("cannot rename into place: {e}")))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, format!("cannot sync directory: {e}")))
}

/// The files on offer, shared between the snapshot writer and HTTP.
#[derive(Debug, Default)]
pub struct Catalog {
    files: parking_lot::RwLock<Vec<SnapshotFile>>,
    dir: PathBuf,
}

impl Catalog {
    /// A catalog of `dir` holding `files`.
    pub fn new(dir: PathBuf, files: Vec<SnapshotFile>) -> Catalog {
        Catalog {
            files: parking_lot::RwLock::new(files),
            dir,
        }
    }

    /// Every file, newest first per MAB.
    pub fn list(&self) -> Vec<SnapshotFile> {
        self.files.read().clone()
    }

    /// The newest file of `mab`.
    pub fn latest(&self, mab: &Mab) -> Option<SnapshotFile> {
        self.files.read().iter().find(|f| f.mab == *mab).cloned()
    }

    /// The path of a listed file (never of anything else in the directory).
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.files
            .read()
            .iter()
            .any(|f| f.name == name)
            .then(|| self.dir.join(name))
    }

    /// Record a new file and delete the ones it pushes past [`FILES_PER_MAB`].
    pub fn add(&self, f: SnapshotFile) {
        let mut files = self.files.write();
        files.insert(0, f.clone());
        let mut kept = 0;
        files.retain(|x| {
            if x.mab != f.mab {
                return true;
            }
            kept += 1;
            if kept > FILES_PER_MAB {
                let _ = std::fs::remove_file(self.dir.join(&x.name));
                return false;
            }
            true
        });
    }
}
