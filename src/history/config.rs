//! `ivip history --config FILE`: the recorder's TOML file and its checks.
//!
//! See `contrib/examples/history.toml`. A recorder takes two or more `[[feed]]`s
//! like an MPS, verifies payloads with the `[[ruas]]` keys, boots each RUAS's MABs
//! from the signed snapshots at its `snapshots` URL, asks `peers` (MPSes) for what
//! it missed, and keeps the record in `dir` (spec: history.md).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ivip_wire::RuasId;
use serde::Deserialize;

use super::ingest::RepairSettings;
use super::store::{Retention, StoreConfig as StoreSettings};
use crate::config::{self, ConfigError};
use crate::dtls::{DtlsConfig, Security};
use crate::feed::config::check_feeds;
use crate::feed::{FeedEntry, FeedTimingConfig};
use crate::mps::core::{FillSettings, Settings as MpsCoreSettings};
use crate::net::{FaultConfig, LoopConfig, SocketConfig};
use crate::sign::PublicKey;
use crate::time::Duration;

/// One `[[ruas]]`: a RUAS, its key, and where its snapshots are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuasEntry {
    /// The RUAS id, 0..=127.
    pub id: u8,
    /// Its Ed25519 public key, 64 hex digits.
    #[serde(with = "crate::config::hex32")]
    pub public_key: [u8; 32],
    /// The RUAS's HTTP base URL (`http://host:port`, or `https://` checked
    /// against the `[dtls]` pins), where `GET /v1/snapshots` lists its snapshots
    /// (http.md, RUAS).
    pub snapshots: String,
}

/// `[store]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreEntry {
    /// Seal a segment (and write its index file) once it is this large.
    pub segment_bytes: u64,
    /// Check every segment's and index file's checksums at start.
    pub verify_on_start: bool,
    /// Record a checkpoint baseline of each MAB this often (at a snapshot
    /// announcement that matched its layout); 0 = never.
    pub checkpoint_hours: u64,
}

impl Default for StoreEntry {
    fn default() -> Self {
        StoreEntry {
            segment_bytes: super::store::SEGMENT_BYTES_MAX_DEFAULT,
            verify_on_start: true,
            checkpoint_hours: 720,
        }
    }
}

/// `[retention]`: the default keeps everything.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionEntry {
    /// Delete sealed segments whose newest record is older than this; 0 = never.
    pub max_age_days: u64,
    /// Delete the oldest sealed segments while the record is larger; 0 = no limit.
    pub max_bytes: u64,
}

/// `[repair]`: missing payloads and snapshots.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RepairEntry {
    /// Wait this long for a missing payload before asking a peer MPS.
    pub grace_ms: u64,
    /// Ask again, the next peer, after this long.
    pub retry_ms: u64,
    /// Give up on a missing payload after this long (a gap is recorded).
    pub give_up_s: u64,
    /// Most sequence numbers per range request.
    pub range_max: u32,
    /// Hold a RUAS's stream at most this long while waiting for a snapshot.
    pub snapshot_wait_s: u64,
    /// Ask for a newer snapshot this often while a MAB is out of sync.
    pub resync_retry_s: u64,
    /// Timeout of one HTTP request (peer MPS or snapshot), milliseconds.
    pub timeout_ms: u64,
}

impl Default for RepairEntry {
    fn default() -> Self {
        RepairEntry {
            grace_ms: 200,
            retry_ms: 1000,
            give_up_s: 120,
            range_max: 1024,
            snapshot_wait_s: 30,
            resync_retry_s: 10,
            timeout_ms: 5000,
        }
    }
}

/// `[buffer]`: verified payloads waiting for their turn, in memory.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferEntry {
    /// Keep buffered payloads this long.
    pub retention_s: u64,
    /// Memory budget, bytes.
    pub bytes_max: usize,
}

impl Default for BufferEntry {
    fn default() -> Self {
        BufferEntry {
            retention_s: 600,
            bytes_max: 256 << 20,
        }
    }
}

/// The recorder's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// The feed socket (upstreams send payloads here).
    pub listen: SocketAddr,
    /// HTTP: searches, status, evidence, `/metrics`.
    pub http: SocketAddr,
    /// The directory of the record.
    pub dir: PathBuf,
    /// Upstream feeds (two or more).
    #[serde(default)]
    pub feed: Vec<FeedEntry>,
    /// Feed timers.
    #[serde(default)]
    pub feed_timing: FeedTimingConfig,
    /// RUASes recorded.
    #[serde(default)]
    pub ruas: Vec<RuasEntry>,
    /// MPSes asked for missed payloads (`http://host:port`, or `https://`
    /// checked against the `[dtls]` pins).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Storage.
    #[serde(default)]
    pub store: StoreEntry,
    /// Retention policy.
    #[serde(default)]
    pub retention: RetentionEntry,
    /// Repair.
    #[serde(default)]
    pub repair: RepairEntry,
    /// The in-memory buffer.
    #[serde(default)]
    pub buffer: BufferEntry,
    /// Socket buffers.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Fault injection (testing only).
    #[serde(default)]
    pub fault: FaultConfig,
    /// Link security: identity and pinned peers (spec: dtls.md).
    #[serde(default)]
    pub dtls: DtlsConfig,
}

/// A checked recorder configuration.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Feed socket.
    pub listen: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// The record's directory.
    pub dir: PathBuf,
    /// The store.
    pub store: StoreSettings,
    /// The MPS core inside (feeds, keys; no peers: the recorder plans repairs).
    pub mps: MpsCoreSettings,
    /// RUAS keys.
    pub keys: Vec<(RuasId, PublicKey)>,
    /// RUAS snapshot base URLs, by RUAS.
    pub snapshot_urls: Vec<(RuasId, String)>,
    /// Peer MPS base URLs.
    pub peers: Vec<String>,
    /// Repair settings.
    pub repair: RepairSettings,
    /// HTTP request timeout.
    pub timeout: std::time::Duration,
    /// Buffer retention.
    pub buffer_retention: Duration,
    /// Buffer memory.
    pub buffer_bytes: usize,
    /// Socket buffers.
    pub socket: SocketConfig,
    /// Fault injection.
    pub fault: FaultConfig,
    /// Event-loop limits.
    pub event_loop: LoopConfig,
    /// DTLS or (tests only) plain UDP; pins for HTTPS fetches.
    pub dtls: Security,
}

fn http_url(path: &Path, key: String, url: &str, dtls: &Security) -> Result<String, ConfigError> {
    crate::qsd::config::check_url(url, dtls)
        .map_err(|m| ConfigError::invalid(path, key.clone(), m))?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(ConfigError::invalid(
            path,
            key,
            format!("{url:?} has no host"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl HistoryConfig {
    /// Read and check a config file. A relative `dir` is taken from the file's
    /// directory.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line or key.
    pub fn load(path: &Path) -> Result<HistorySettings, ConfigError> {
        let mut c = config::load::<HistoryConfig>(path)?;
        if c.dir.is_relative() {
            c.dir = path.parent().unwrap_or(Path::new(".")).join(&c.dir);
        }
        c.check(path)
    }

    /// Check a parsed config.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn check(&self, path: &Path) -> Result<HistorySettings, ConfigError> {
        let bad = |key: &str, msg: String| ConfigError::invalid(path, key, msg);
        let dtls = self.dtls.check(path)?;
        let feeds = check_feeds(path, "feed", &self.feed, 2, self.listen)?;
        for (i, f) in self.feed.iter().enumerate() {
            for a in std::iter::once(&f.address).chain(&f.alternatives) {
                dtls.require_pinned(path, &format!("feed[{i}]"), *a)?;
            }
        }
        let timing = self.feed_timing.check(path)?;
        if self.ruas.is_empty() {
            return Err(bad(
                "ruas",
                "no [[ruas]]: nothing would be recorded; add `id`, `public_key` and \
                 `snapshots` for each RUAS"
                    .into(),
            ));
        }
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut urls = Vec::new();
        for (i, r) in self.ruas.iter().enumerate() {
            let id = RuasId::new(r.id).ok_or_else(|| {
                bad(
                    &format!("ruas[{i}].id"),
                    format!("must be 0..=127, not {}", r.id),
                )
            })?;
            if !seen.insert(r.id) {
                return Err(bad(
                    &format!("ruas[{i}].id"),
                    format!("RUAS {} is listed twice", r.id),
                ));
            }
            match ed25519_dalek::VerifyingKey::from_bytes(&r.public_key) {
                Ok(vk) if !vk.is_weak() => {}
                _ => {
                    return Err(bad(
                        &format!("ruas[{i}].public_key"),
                        "is not a valid Ed25519 public key".into(),
                    ));
                }
            }
            keys.push((id, r.public_key));
            urls.push((
                id,
                http_url(path, format!("ruas[{i}].snapshots"), &r.snapshots, &dtls)?,
            ));
        }
        let peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| http_url(path, format!("peers[{i}]"), p, &dtls))
            .collect::<Result<Vec<_>, _>>()?;
        let s = &self.store;
        if s.segment_bytes < 1 << 20 || s.segment_bytes > super::segment::SEGMENT_BYTES_MAX_LIMIT {
            return Err(bad(
                "store.segment_bytes",
                format!(
                    "must be 1 MiB to {} bytes, not {}",
                    super::segment::SEGMENT_BYTES_MAX_LIMIT,
                    s.segment_bytes
                ),
            ));
        }
        let r = &self.repair;
        if r.grace_ms == 0 || r.retry_ms == 0 || r.give_up_s == 0 || r.timeout_ms == 0 {
            return Err(bad(
                "repair",
                "grace_ms, retry_ms, give_up_s and timeout_ms must be above 0".into(),
            ));
        }
        if r.range_max == 0 || r.range_max > u32::from(u16::MAX) {
            return Err(bad(
                "repair.range_max",
                format!("must be 1..=65535, not {}", r.range_max),
            ));
        }
        let b = &self.buffer;
        if b.retention_s == 0 || b.bytes_max < 1 << 20 {
            return Err(bad(
                "buffer",
                "retention_s must be above 0 and bytes_max at least 1 MiB (1048576)".into(),
            ));
        }
        self.fault
            .check()
            .map_err(|e| bad("fault.loss_percent", e))?;
        let days = self.retention.max_age_days;
        let retention = Retention {
            max_age_us: (days > 0).then(|| days.saturating_mul(86_400_000_000)),
            max_bytes: (self.retention.max_bytes > 0).then_some(self.retention.max_bytes),
        };
        Ok(HistorySettings {
            listen: self.listen,
            http: self.http,
            dir: self.dir.clone(),
            store: StoreSettings {
                segment_bytes_max: s.segment_bytes,
                verify_on_open: s.verify_on_start,
                retention,
                ..StoreSettings::default()
            },
            mps: MpsCoreSettings {
                keys: keys.clone(),
                feeds,
                timing,
                peers: 0,
                range_max: r.range_max,
                fill: FillSettings::default(),
            },
            keys,
            snapshot_urls: urls,
            peers,
            repair: RepairSettings {
                grace: Duration::from_ms(r.grace_ms),
                retry: Duration::from_ms(r.retry_ms),
                give_up: Duration::from_secs(r.give_up_s),
                range_max: r.range_max,
                snapshot_wait: Duration::from_secs(r.snapshot_wait_s),
                resync_retry: Duration::from_secs(r.resync_retry_s.max(1)),
                checkpoint_us: s.checkpoint_hours.saturating_mul(3_600_000_000),
            },
            timeout: std::time::Duration::from_millis(r.timeout_ms),
            buffer_retention: Duration::from_secs(b.retention_s),
            buffer_bytes: b.bytes_max,
            socket: self.socket,
            fault: self.fault,
            event_loop: LoopConfig::default(),
            dtls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/examples/history.toml");
        let s = HistoryConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.store.retention,
            Retention::default(),
            "the default keeps everything"
        );
        assert_eq!(s.keys.len(), 1);
    }

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn parse(extra: &str, ruas: &str) -> Result<HistorySettings, ConfigError> {
        let text = format!(
            "listen = \"127.0.0.1:4700\"\nhttp = \"127.0.0.1:8090\"\ndir = \"/tmp/h\"\n{extra}\n{ruas}\n\
             [[feed]]\naddress = \"127.0.0.1:4500\"\n[[feed]]\naddress = \"127.0.0.1:4501\"\n\
             [dtls]\ninsecure_plain_udp = true\n"
        );
        let p = Path::new("h.toml");
        config::parse::<HistoryConfig>(p, &text)?.check(p)
    }

    #[test]
    fn a_good_config_and_named_mistakes() {
        let ruas = format!(
            "[[ruas]]\nid = 3\npublic_key = \"{KEY}\"\nsnapshots = \"http://127.0.0.1:8443/\"\n"
        );
        let ok = parse("[retention]\nmax_age_days = 365\n", &ruas).unwrap();
        assert_eq!(ok.snapshot_urls[0].1, "http://127.0.0.1:8443");
        assert_eq!(ok.store.retention.max_age_us, Some(365 * 86_400_000_000));
        assert_eq!(ok.mps.peers, 0);
        assert!(parse("", "").unwrap_err().to_string().contains("[[ruas]]"));
        let e = parse("", &ruas.replace("http://", "ftp://")).unwrap_err();
        assert!(e.to_string().contains("ruas[0].snapshots"), "{e}");
        let e = parse("[store]\nsegment_bytes = 5\n", &ruas).unwrap_err();
        assert!(e.to_string().contains("store.segment_bytes"), "{e}");
        let e = parse("peers = [\"127.0.0.1:1\"]\n", &ruas).unwrap_err();
        assert!(e.to_string().contains("peers[0]"), "{e}");
        // Plain UDP has no pins to check an HTTPS server against.
        let e = parse("peers = [\"https://127.0.0.1:1\"]\n", &ruas).unwrap_err();
        assert!(e.to_string().contains("needs [dtls] pins"), "{e}");
    }
}
