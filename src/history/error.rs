//! Errors of the history store (STYLE practice 8: what failed, where, what to do).

use std::path::{Path, PathBuf};

/// Why the history store could not do what was asked.
#[derive(Debug)]
pub enum StoreError {
    /// An I/O operation failed (disk full, permissions, ...).
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something is larger than the store's formats allow.
    TooLarge {
        /// What.
        what: &'static str,
        /// How many bytes.
        bytes: u64,
    },
    /// A record could not be encoded (a bug in the caller: it built an invalid
    /// value).
    Encode(ivip_wire::WireError),
    /// The store's settings are unusable.
    Config(String),
    /// An earlier write failed; the store must be reopened.
    Poisoned,
}

impl StoreError {
    /// An adapter for `map_err` on I/O results.
    pub fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, op, source }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io { path, op, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            StoreError::TooLarge { what, bytes } => {
                write!(
                    f,
                    "{what} of {bytes} bytes is larger than the history format allows"
                )
            }
            StoreError::Encode(e) => write!(f, "cannot encode a history record: {e}"),
            StoreError::Config(m) => write!(f, "history store settings: {m}"),
            StoreError::Poisoned => f.write_str(
                "an earlier write to the history store failed; restart the recorder \
                 (it resumes from the last complete record)",
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<ivip_wire::WireError> for StoreError {
    fn from(e: ivip_wire::WireError) -> StoreError {
        StoreError::Encode(e)
    }
}
