//! Key files: a node's Ed25519 secret seed on disk.
//!
//! Format: one line of 64 hex digits (the 32-byte seed), optionally followed by a
//! newline. Written with mode 0600 and never overwritten: losing a RUAS key by
//! accident must be impossible. Configs name the file with `key_file = "..."`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::sign::KeyPair;

/// Why a key file could not be used.
#[derive(Debug)]
pub enum KeyFileError {
    /// Reading or creating the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not hold 64 hex digits.
    Format {
        /// The file.
        path: PathBuf,
    },
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFileError::Io { path, source } => {
                write!(f, "key file {}: {source}", path.display())
            }
            KeyFileError::Format { path } => write!(
                f,
                "key file {}: expected one line of 64 hex digits (make one with `ivip keygen --out FILE`)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Read a key file.
///
/// # Errors
/// [`KeyFileError`].
pub fn read(path: &Path) -> Result<KeyPair, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let seed = crate::sign::key_from_hex(&text).ok_or_else(|| KeyFileError::Format {
        path: path.to_path_buf(),
    })?;
    Ok(KeyPair::from_seed(&seed))
}

/// Write a new key file (mode 0600); refuses to overwrite an existing file.
///
/// # Errors
/// [`KeyFileError::Io`], also when the file exists.
pub fn write_new(path: &Path, key: &KeyPair) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    writeln!(f, "{}", ivip_wire::hex::encode(&key.seed())).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_refuse_overwrite() {
        let dir = std::env::temp_dir().join(format!("ivip-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        let _ = std::fs::remove_file(&p);
        let k = KeyPair::generate();
        write_new(&p, &k).unwrap();
        assert_eq!(read(&p).unwrap().public(), k.public());
        assert!(write_new(&p, &k).is_err());
        std::fs::write(&p, "nothex").unwrap();
        assert!(matches!(read(&p), Err(KeyFileError::Format { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
