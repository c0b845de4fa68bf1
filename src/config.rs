//! Loading TOML configuration files with errors an operator can act on.
//!
//! Every role's config is a `serde::Deserialize` struct with
//! `#[serde(deny_unknown_fields)]`, loaded by [`load`]. Errors name the file, the
//! line and column, the key, and what was expected; semantic checks after parsing
//! use [`ConfigError::invalid`] with the key they concern. Configs never `unwrap`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this role (syntax, unknown key, wrong type).
    Parse {
        /// The file.
        path: PathBuf,
        /// `line:column`, when known.
        at: Option<(usize, usize)>,
        /// The TOML parser's message (it names the key).
        message: String,
    },
    /// The file parsed but a value breaks a rule.
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`feeds[1].address`).
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ConfigError {
    /// A value that parsed but breaks a rule.
    pub fn invalid(path: &Path, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Parse { path, at, message } => {
                write!(f, "config file {}", path.display())?;
                if let Some((l, c)) = at {
                    write!(f, " line {l} column {c}")?;
                }
                write!(f, ": {}", message.trim().replace('\n', " "))
            }
            ConfigError::Invalid { path, key, message } => {
                write!(f, "config file {}: `{key}`: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Read and parse a TOML file into `T`.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Parse`].
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parse TOML text that came from `path` (used for error messages only).
///
/// # Errors
/// [`ConfigError::Parse`].
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let at = e.span().map(|s| line_col(text, s.start));
        ConfigError::Parse {
            path: path.to_path_buf(),
            at,
            message: e.message().to_string(),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// A 32-byte key or seed written as 64 hex digits, for serde.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Deserialize 64 hex digits.
    ///
    /// # Errors
    /// A serde error naming what was wrong.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        crate::sign::key_from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits (a 32-byte key)"))
    }

    /// Serialize as 64 hex digits.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ivip_wire::hex::encode(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        port: u16,
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let p = Path::new("/etc/ivip/x.toml");
        let e = parse::<Sample>(p, "name = \"a\"\nport = 70000\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("/etc/ivip/x.toml line 2"), "{s}");
        let e = parse::<Sample>(p, "name = \"a\"\nport = 1\nbogus = 2\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = load::<Sample>(Path::new("/nonexistent/ivip.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read config file /nonexistent/ivip.toml")
        );
    }
}

/// A list of MABs written as prefixes (`["20.0.0.0/14", "2001:db8::/32"]`), for serde
/// (`#[serde(with = "crate::config::mab_list")]`).
pub mod mab_list {
    use ivip_wire::Mab;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Deserialize prefixes into MABs.
    ///
    /// # Errors
    /// A serde error naming the bad prefix.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mab>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                s.parse::<Mab>().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not a MAB: write an aligned prefix such as 20.0.0.0/14 or 2001:db8::/32 (IPv6 up to /64)"
                    ))
                })
            })
            .collect()
    }

    /// Serialize MABs as prefixes.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(m: &[Mab], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|m| m.to_string()))
    }
}
