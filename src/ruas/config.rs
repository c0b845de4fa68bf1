//! The RUAS configuration file (TOML), checked at start with errors that name the
//! key and say what to do. Example: `contrib/examples/ruas.toml`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ivip_wire::{Mab, RuasId};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::dtls::{DtlsConfig, Security};
use crate::range::UnitRange;

/// A child UAS allowed to submit SUMUCs (seed s4.3, Figure 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UasEntry {
    /// A name for logs and metrics.
    pub name: String,
    /// Its Ed25519 public key, 64 hex digits.
    #[serde(with = "crate::config::hex32")]
    pub public_key: [u8; 32],
    /// The ranges delegated to it: any start and length (`20.1.0.0+65536`).
    pub ranges: Vec<UnitRange>,
}

fn default_batch_window_ms() -> u64 {
    100
}
fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_quota_interval_ms() -> u64 {
    100
}
fn default_snapshot_interval_s() -> u64 {
    300
}
fn default_replay_window_s() -> u64 {
    300
}
fn default_http_threads() -> usize {
    32
}
fn default_segment_bytes() -> u64 {
    64 << 20
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuasConfig {
    /// This RUAS's 7-bit id (seed s5), as every QSD's directory knows it.
    pub ruas_id: u8,
    /// The Ed25519 key file that signs payloads and snapshots (`ivip keygen --out`).
    pub key_file: PathBuf,
    /// Where the write-ahead log and snapshots live.
    pub data_dir: PathBuf,
    /// HTTP: SUMUC ingest, read API, snapshots, metrics.
    pub http_listen: SocketAddr,
    /// UDP source address for payloads (port 0 = any).
    #[serde(default = "default_udp_bind")]
    pub udp_bind: SocketAddr,
    /// Level-0 replicators every payload goes to.
    pub replicators: Vec<SocketAddr>,
    /// The MABs this RUAS is authoritative for.
    #[serde(with = "crate::config::mab_list")]
    pub mabs: Vec<Mab>,
    /// Child UASes.
    #[serde(default)]
    pub uas: Vec<UasEntry>,
    /// How long a MAB's first queued set waits for more (0 = send at once).
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// A signed heartbeat after this long without a payload.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Bytes that may be sent per quota interval (s4.1.1); 0 = no quota.
    #[serde(default)]
    pub quota_bytes: u64,
    /// The quota interval.
    #[serde(default = "default_quota_interval_ms")]
    pub quota_interval_ms: u64,
    /// A snapshot of each MAB this often (s4.1.2).
    #[serde(default = "default_snapshot_interval_s")]
    pub snapshot_interval_s: u64,
    /// SUMUCs signed longer ago than this are refused as stale.
    #[serde(default = "default_replay_window_s")]
    pub replay_window_s: u64,
    /// HTTP worker threads. Each waits for the writer's group commit while it
    /// holds a request, so this bounds how many SUMUCs share one fsync.
    #[serde(default = "default_http_threads")]
    pub http_threads: usize,
    /// A new WAL segment after this many bytes.
    #[serde(default = "default_segment_bytes")]
    pub wal_segment_bytes: u64,
    /// Test-only fault injection in the send path (`ivip testnet --loss`).
    #[serde(default)]
    pub fault: crate::net::FaultConfig,
    /// HTTPS: the same resources as `http_listen` (snapshots above all), with
    /// the `[dtls]` identity, which QSDs pin (spec: dtls.md §7).
    #[serde(default)]
    pub https_listen: Option<SocketAddr>,
    /// Link security of the payload links to level 0 (spec: dtls.md).
    #[serde(default)]
    pub dtls: DtlsConfig,
}

fn default_udp_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The smallest DTLS queue a RUAS accepts (spec: dtls.md §7, `pending_max`).
pub const RUAS_PENDING_MIN: usize = 256;

impl RuasConfig {
    /// Load and check a config file. Relative paths are taken from the file's
    /// directory.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and key.
    pub fn load(path: &Path) -> Result<RuasConfig, ConfigError> {
        let mut c: RuasConfig = crate::config::load(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if c.key_file.is_relative() {
            c.key_file = base.join(&c.key_file);
        }
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        for f in [&mut c.dtls.key_file, &mut c.dtls.cert_file]
            .into_iter()
            .flatten()
        {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        c.check(path)?;
        Ok(c)
    }

    /// The checked `[dtls]` section (file names as [`RuasConfig::load`] left them).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn security(&self, path: &Path) -> Result<Security, ConfigError> {
        let s = self.dtls.check(path)?;
        for (i, r) in self.replicators.iter().enumerate() {
            s.require_pinned(path, &format!("replicators[{i}]"), *r)?;
        }
        if s.is_dtls() && self.dtls.pending_max < RUAS_PENDING_MIN {
            return Err(ConfigError::invalid(
                path,
                "dtls.pending_max",
                format!(
                    "{} leaves no room: after a restart the RUAS sends its last 64 payloads \
                     again and keeps making new ones while its first handshakes run, and what \
                     does not fit is lost at the origin; use at least {RUAS_PENDING_MIN} \
                     (default {})",
                    self.dtls.pending_max,
                    crate::dtls::link::PENDING_MAX_DEFAULT
                ),
            ));
        }
        if self.https_listen.is_some() && !s.is_dtls() {
            return Err(ConfigError::invalid(
                path,
                "https_listen",
                "HTTPS serves the [dtls] identity, and insecure_plain_udp has none",
            ));
        }
        Ok(s)
    }

    /// The RUAS id as a checked value.
    pub fn id(&self) -> RuasId {
        RuasId::masked(self.ruas_id)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: String| Err(ConfigError::invalid(path, key, msg));
        if RuasId::new(self.ruas_id).is_none() {
            return bad(
                "ruas_id",
                format!("{} does not fit 7 bits; use 0..=127", self.ruas_id),
            );
        }
        if self.mabs.is_empty() {
            return bad(
                "mabs",
                "list at least one MAB this RUAS is authoritative for".into(),
            );
        }
        for (i, a) in self.mabs.iter().enumerate() {
            for b in &self.mabs[i + 1..] {
                let ra = UnitRange {
                    family: a.family(),
                    start: a.start(),
                    len: a.len(),
                };
                let rb = UnitRange {
                    family: b.family(),
                    start: b.start(),
                    len: b.len(),
                };
                if ra.overlaps(&rb) {
                    return bad(
                        "mabs",
                        format!("{a} and {b} overlap; each unit belongs to one MAB"),
                    );
                }
            }
        }
        if self.replicators.is_empty() {
            return bad(
                "replicators",
                "list at least one level-0 replicator address".into(),
            );
        }
        if self.http_threads == 0 || self.http_threads > 1024 {
            return bad("http_threads", "must be between 1 and 1024".into());
        }
        if self.heartbeat_ms == 0 {
            return bad(
                "heartbeat_ms",
                "must be above 0: heartbeats make silence meaningful".into(),
            );
        }
        if self.quota_bytes > 0 && self.quota_interval_ms == 0 {
            return bad(
                "quota_interval_ms",
                "must be above 0 when quota_bytes is set".into(),
            );
        }
        if self.snapshot_interval_s == 0 {
            return bad("snapshot_interval_s", "must be above 0".into());
        }
        if let Err(e) = self.fault.check() {
            return bad("fault.loss_percent", e);
        }
        self.security(path)?;
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, u) in self.uas.iter().enumerate() {
            let key = format!("uas[{i}]");
            if !names.insert(&u.name) {
                return bad(&key, format!("name `{}` is used twice", u.name));
            }
            if !keys.insert(u.public_key) {
                return bad(&key, "public_key is used by another UAS".into());
            }
            if crate::sign::Ed25519Verifier.verify(&u.public_key, b"", &[0; 64])
                == Err(crate::sign::SignError::BadKey)
            {
                return bad(
                    &format!("{key}.public_key"),
                    "not a valid Ed25519 public key".into(),
                );
            }
            for (j, r) in u.ranges.iter().enumerate() {
                if !self
                    .mabs
                    .iter()
                    .any(|m| m.family() == r.family && m.contains_range(r.start, r.len))
                {
                    return bad(
                        &format!("{key}.ranges[{j}]"),
                        format!("{r} is not inside any of this RUAS's MABs"),
                    );
                }
            }
        }
        Ok(())
    }
}

use crate::sign::Verifier as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/examples/ruas.toml");
        let c = RuasConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.uas[0].ranges.len(), 2);
        assert!(c.key_file.ends_with("contrib/examples/ruas.key"));
    }

    fn parse(text: &str) -> Result<RuasConfig, ConfigError> {
        let p = Path::new("r.toml");
        let c: RuasConfig = crate::config::parse(p, text)?;
        c.check(p)?;
        Ok(c)
    }

    const BASE: &str = "ruas_id = 1\nkey_file = \"k\"\ndata_dir = \"d\"\nhttp_listen = \"127.0.0.1:0\"\n\
                        replicators = [\"127.0.0.1:9\"]\nmabs = [\"20.0.0.0/14\"]\n\
                        [dtls]\ninsecure_plain_udp = true\n";

    #[test]
    fn bad_values_name_their_key() {
        assert!(parse(BASE).is_ok());
        let e = parse(&BASE.replace("ruas_id = 1", "ruas_id = 200")).unwrap_err();
        assert!(e.to_string().contains("`ruas_id`"), "{e}");
        let e = parse(&BASE.replace("[\"20.0.0.0/14\"]", "[\"20.0.0.1/14\"]")).unwrap_err();
        assert!(e.to_string().contains("not a MAB"), "{e}");
        let e = parse(&BASE.replace("[\"20.0.0.0/14\"]", "[\"20.0.0.0/14\", \"20.1.0.0/16\"]"))
            .unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = parse(&format!(
            "{BASE}[[uas]]\nname = \"a\"\npublic_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"\nranges = [\"21.0.0.0+5\"]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("uas[0].ranges[0]"), "{e}");
    }

    #[test]
    fn every_replicator_needs_a_pin() {
        let text = BASE.replace(
            "insecure_plain_udp = true",
            "key_file = \"dtls.key\"\ncert_file = \"dtls.crt\"",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("replicators[0]") && e.contains("127.0.0.1:9"),
            "{e}"
        );
        let fp = format!("sha256:{}", "00".repeat(32));
        let ok = parse(&format!(
            "{text}[[dtls.peer]]\nname = \"l0\"\nfingerprint = \"{fp}\"\naddress = [\"127.0.0.1:9\"]\n"
        ))
        .unwrap();
        assert!(ok.security(Path::new("r.toml")).unwrap().is_dtls());
        let e = parse(&format!(
            "{text}pending_max = 64\n[[dtls.peer]]\nname = \"l0\"\nfingerprint = \"{fp}\"\naddress = [\"127.0.0.1:9\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("dtls.pending_max") && e.contains("at least 256"),
            "{e}"
        );
    }
}
