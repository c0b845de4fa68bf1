//! The directory: which RUASes exist, their keys, snapshot servers and MABs (seed
//! s5: "the identities of the RUASes, how each RUAS is represented in the 7 bit
//! 'ruas' field … and the exact details of each current MAB").
//!
//! spec: directory.md. A TOML file, read locally or fetched over HTTP with a
//! detached Ed25519 signature (`URL.sig`, 128 hex digits) by a key the QSD is
//! configured with, at start and daily.

use std::path::Path;

use ivip_wire::{Mab, RuasId};
use serde::Deserialize;

use super::stream::RuasInfo;
use crate::config::ConfigError;
use crate::sign::{PublicKey, Verifier};

/// One RUAS entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryRuas {
    /// Its 7-bit id.
    pub id: u8,
    /// Its Ed25519 key (payloads and snapshots).
    #[serde(with = "crate::config::hex32")]
    pub public_key: [u8; 32],
    /// HTTP base URLs of servers with its snapshots, nearest first.
    pub snapshot_urls: Vec<String>,
    /// Its MABs.
    #[serde(with = "crate::config::mab_list")]
    pub mabs: Vec<Mab>,
}

/// The whole directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Every RUAS.
    #[serde(default)]
    pub ruas: Vec<DirectoryRuas>,
}

impl Directory {
    /// Parse and check directory text (`origin` names it in errors).
    ///
    /// # Errors
    /// [`ConfigError`] naming the entry at fault.
    pub fn parse(origin: &Path, text: &str) -> Result<Directory, ConfigError> {
        let d: Directory = crate::config::parse(origin, text)?;
        d.check(origin)?;
        Ok(d)
    }

    fn check(&self, origin: &Path) -> Result<(), ConfigError> {
        let bad = |k: String, m: String| ConfigError::invalid(origin, k, m);
        let mut ids = std::collections::HashSet::new();
        let mut all: Vec<Mab> = Vec::new();
        for (i, r) in self.ruas.iter().enumerate() {
            if RuasId::new(r.id).is_none() {
                return Err(bad(
                    format!("ruas[{i}].id"),
                    format!("{} does not fit 7 bits", r.id),
                ));
            }
            if !ids.insert(r.id) {
                return Err(bad(
                    format!("ruas[{i}].id"),
                    format!("RUAS {} is listed twice", r.id),
                ));
            }
            if crate::sign::Ed25519Verifier.verify(&r.public_key, b"", &[0; 64])
                == Err(crate::sign::SignError::BadKey)
            {
                return Err(bad(
                    format!("ruas[{i}].public_key"),
                    "not a valid Ed25519 public key".into(),
                ));
            }
            if r.snapshot_urls.is_empty() {
                return Err(bad(
                    format!("ruas[{i}].snapshot_urls"),
                    "list at least one snapshot server".into(),
                ));
            }
            for (j, u) in r.snapshot_urls.iter().enumerate() {
                if !u.starts_with("http://") {
                    return Err(bad(
                        format!("ruas[{i}].snapshot_urls[{j}]"),
                        format!("{u:?} is not an http:// URL"),
                    ));
                }
            }
            for m in &r.mabs {
                if let Some(o) = all.iter().find(|o| {
                    o.family() == m.family()
                        && u128::from(o.start()) < m.end()
                        && u128::from(m.start()) < o.end()
                }) {
                    return Err(bad(format!("ruas[{i}].mabs"), format!("{m} overlaps {o}")));
                }
                all.push(*m);
            }
        }
        Ok(())
    }

    /// Parse text fetched from `url` whose detached signature is `sig_hex`, checking
    /// the signature with `key` first.
    ///
    /// # Errors
    /// A sentence saying what failed.
    pub fn parse_signed(
        url: &str,
        text: &[u8],
        sig_hex: &str,
        key: &PublicKey,
        verifier: &dyn Verifier,
    ) -> Result<Directory, String> {
        let sig: [u8; 64] = ivip_wire::hex::decode(sig_hex.trim())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("{url}.sig is not 128 hex digits"))?;
        verifier
            .verify(key, text, &sig)
            .map_err(|e| format!("directory {url}: {e}; refusing it"))?;
        let text =
            std::str::from_utf8(text).map_err(|_| format!("directory {url} is not UTF-8"))?;
        Directory::parse(Path::new(url), text).map_err(|e| e.to_string())
    }

    /// The RUASes as the stream core wants them.
    pub fn infos(&self) -> Vec<RuasInfo> {
        self.ruas
            .iter()
            .map(|r| RuasInfo {
                id: RuasId::masked(r.id),
                key: r.public_key,
                mabs: r.mabs.clone(),
            })
            .collect()
    }

    /// Every MAB, ascending by (family, start).
    pub fn mabs(&self) -> Vec<Mab> {
        let mut v: Vec<Mab> = self
            .ruas
            .iter()
            .flat_map(|r| r.mabs.iter().copied())
            .collect();
        v.sort_by_key(|m| (m.family(), m.start()));
        v
    }

    /// Snapshot servers of a RUAS.
    pub fn snapshot_urls(&self, id: RuasId) -> Vec<String> {
        self.ruas
            .iter()
            .find(|r| r.id == id.get())
            .map(|r| {
                r.snapshot_urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{Ed25519Verifier, KeyPair};

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn text(mabs: &str) -> String {
        format!(
            "[[ruas]]\nid = 3\npublic_key = \"{KEY}\"\nsnapshot_urls = [\"http://127.0.0.1:8080/\"]\nmabs = [{mabs}]\n"
        )
    }

    #[test]
    fn parses_and_refuses_overlaps() {
        let d = Directory::parse(
            Path::new("d.toml"),
            &text("\"20.0.0.0/14\", \"2001:db8::/32\""),
        )
        .unwrap();
        assert_eq!(d.mabs().len(), 2);
        assert_eq!(
            d.snapshot_urls(RuasId::new(3).unwrap()),
            vec!["http://127.0.0.1:8080".to_string()]
        );
        let e = Directory::parse(
            Path::new("d.toml"),
            &text("\"20.0.0.0/14\", \"20.1.0.0/16\""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn a_signed_directory_is_checked_before_use() {
        let k = KeyPair::generate();
        let t = text("\"20.0.0.0/14\"");
        let sig = ivip_wire::hex::encode(&k.sign(t.as_bytes()));
        assert!(
            Directory::parse_signed(
                "http://x/d",
                t.as_bytes(),
                &sig,
                &k.public(),
                &Ed25519Verifier
            )
            .is_ok()
        );
        let mut bad = t.clone().into_bytes();
        bad[0] = b'#';
        let e = Directory::parse_signed("http://x/d", &bad, &sig, &k.public(), &Ed25519Verifier)
            .unwrap_err();
        assert!(e.contains("refusing"), "{e}");
    }
}
