//! `ivip mps --config FILE`: the TOML file and its checks.
//!
//! See `contrib/examples/mps.toml`. An MPS takes two or more `[[feed]]`s like a
//! QSD, verifies payloads with the `[[ruas]]` keys, and asks `peers` (other MPSes'
//! HTTP base URLs) for what it missed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use ivip_wire::RuasId;
use serde::Deserialize;

use super::core::{FillSettings, Settings};
use crate::config::{self, ConfigError};
use crate::feed::config::check_feeds;
use crate::feed::{FeedEntry, FeedTimingConfig};
use crate::net::{FaultConfig, LoopConfig, SocketConfig};
use crate::sign::PublicKey;
use crate::time::Duration;

/// One `[[ruas]]`: a RUAS and its public key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuasKey {
    /// The RUAS id, 0..=127.
    pub id: u8,
    /// Its Ed25519 public key, 64 hex digits.
    #[serde(with = "crate::config::hex32")]
    pub public_key: [u8; 32],
}

/// `[store]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Keep payloads this many seconds.
    pub retention_s: u64,
    /// Memory budget for payloads, bytes; the oldest go first when it is full.
    pub bytes_max: usize,
    /// Most sequence numbers one range request may span.
    pub range_max: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_s: 600,
            bytes_max: 256 << 20,
            range_max: 1024,
        }
    }
}

/// `[fill]`: asking peers for missed payloads.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FillConfig {
    /// Wait this long after noticing a gap before asking a peer.
    pub grace_ms: u64,
    /// Ask again (the next peer) after this long.
    pub retry_ms: u64,
    /// Give up on a missing payload after this many seconds.
    pub give_up_s: u64,
    /// Timeout of one peer request, milliseconds.
    pub timeout_ms: u64,
}

impl Default for FillConfig {
    fn default() -> Self {
        FillConfig {
            grace_ms: 200,
            retry_ms: 1000,
            give_up_s: 120,
            timeout_ms: 2000,
        }
    }
}

/// The MPS's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpsConfig {
    /// The feed socket (upstreams send payloads here).
    pub listen: SocketAddr,
    /// The HTTP address: payloads and `/metrics`.
    pub http: SocketAddr,
    /// Upstream feeds (two or more).
    #[serde(default)]
    pub feed: Vec<FeedEntry>,
    /// Feed timers.
    #[serde(default)]
    pub feed_timing: FeedTimingConfig,
    /// RUAS keys: payloads of other RUASes are dropped.
    #[serde(default)]
    pub ruas: Vec<RuasKey>,
    /// Peer MPSes' base URLs (`http://host:port`).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Storage.
    #[serde(default)]
    pub store: StoreConfig,
    /// Gap filling.
    #[serde(default)]
    pub fill: FillConfig,
    /// Socket buffers.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Fault injection (testing only).
    #[serde(default)]
    pub fault: FaultConfig,
}

/// A checked MPS configuration.
#[derive(Debug, Clone)]
pub struct MpsSettings {
    /// Feed socket address.
    pub listen: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Peer base URLs, without a trailing slash.
    pub peers: Vec<String>,
    /// The core's settings.
    pub core: Settings,
    /// Retention.
    pub retention: Duration,
    /// Memory budget.
    pub bytes_max: usize,
    /// Peer request timeout.
    pub fetch_timeout: std::time::Duration,
    /// Socket buffers.
    pub socket: SocketConfig,
    /// Fault injection.
    pub fault: FaultConfig,
    /// Event-loop limits.
    pub event_loop: LoopConfig,
}

impl MpsConfig {
    /// Read and check a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line or key.
    pub fn load(path: &Path) -> Result<MpsSettings, ConfigError> {
        config::load::<MpsConfig>(path)?.check(path)
    }

    /// Check a parsed config.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn check(&self, path: &Path) -> Result<MpsSettings, ConfigError> {
        let bad = |key: String, msg: String| ConfigError::invalid(path, key, msg);
        let feeds = check_feeds(path, "feed", &self.feed, 2, self.listen)?;
        let timing = self.feed_timing.check(path)?;
        if self.ruas.is_empty() {
            return Err(bad(
                "ruas".into(),
                "no [[ruas]] keys: every payload would be dropped; add `id` and `public_key` \
                 for each RUAS"
                    .into(),
            ));
        }
        let mut seen = HashSet::new();
        let mut keys: Vec<(RuasId, PublicKey)> = Vec::new();
        for (i, k) in self.ruas.iter().enumerate() {
            let id = RuasId::new(k.id).ok_or_else(|| {
                bad(
                    format!("ruas[{i}].id"),
                    format!("must be 0..=127, not {}", k.id),
                )
            })?;
            if !seen.insert(k.id) {
                return Err(bad(
                    format!("ruas[{i}].id"),
                    format!("RUAS {} is listed twice", k.id),
                ));
            }
            match ed25519_dalek::VerifyingKey::from_bytes(&k.public_key) {
                Ok(vk) if !vk.is_weak() => {}
                _ => {
                    return Err(bad(
                        format!("ruas[{i}].public_key"),
                        "is not a valid Ed25519 public key".into(),
                    ));
                }
            }
            keys.push((id, k.public_key));
        }
        let mut peers = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            let rest = p.strip_prefix("http://").ok_or_else(|| {
                bad(
                    format!("peers[{i}]"),
                    format!("{p:?} must be an http://host:port URL"),
                )
            })?;
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(bad(format!("peers[{i}]"), format!("{p:?} has no host")));
            }
            peers.push(p.trim_end_matches('/').to_string());
        }
        let s = &self.store;
        if s.retention_s == 0 || s.retention_s > 86_400 {
            return Err(bad(
                "store.retention_s".into(),
                format!("must be 1..=86400, not {}", s.retention_s),
            ));
        }
        if s.bytes_max < 1 << 20 {
            return Err(bad(
                "store.bytes_max".into(),
                format!("must be at least 1 MiB (1048576), not {}", s.bytes_max),
            ));
        }
        if s.range_max == 0 || s.range_max > u32::from(u16::MAX) {
            return Err(bad(
                "store.range_max".into(),
                format!("must be 1..=65535, not {}", s.range_max),
            ));
        }
        let f = &self.fill;
        if f.timeout_ms == 0 || f.retry_ms == 0 || f.give_up_s == 0 {
            return Err(bad(
                "fill".into(),
                "timeout_ms, retry_ms and give_up_s must be above 0".into(),
            ));
        }
        self.fault
            .check()
            .map_err(|e| bad("fault.loss_percent".into(), e))?;
        Ok(MpsSettings {
            listen: self.listen,
            http: self.http,
            core: Settings {
                keys,
                feeds,
                timing,
                peers: peers.len(),
                range_max: s.range_max,
                fill: FillSettings {
                    grace: Duration::from_ms(f.grace_ms),
                    retry: Duration::from_ms(f.retry_ms),
                    give_up: Duration::from_secs(f.give_up_s),
                    ..FillSettings::default()
                },
            },
            peers,
            retention: Duration::from_secs(s.retention_s),
            bytes_max: s.bytes_max,
            fetch_timeout: std::time::Duration::from_millis(f.timeout_ms),
            socket: self.socket,
            fault: self.fault,
            event_loop: LoopConfig::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/examples/mps.toml");
        MpsConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
    }

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn parse(extra: &str) -> Result<MpsSettings, ConfigError> {
        let text = format!(
            "listen = \"127.0.0.1:4600\"\nhttp = \"127.0.0.1:8080\"\n\
             peers = [\"http://127.0.0.1:8081/\"]\n{extra}\n\
             [[feed]]\naddress = \"127.0.0.1:4500\"\n[[feed]]\naddress = \"127.0.0.1:4501\"\n"
        );
        let p = Path::new("m.toml");
        config::parse::<MpsConfig>(p, &text)?.check(p)
    }

    #[test]
    fn a_good_config_and_named_mistakes() {
        let ok = parse(&format!("[[ruas]]\nid = 3\npublic_key = \"{KEY}\"\n")).unwrap();
        assert_eq!(ok.peers, ["http://127.0.0.1:8081"]);
        assert_eq!(ok.core.keys.len(), 1);
        assert_eq!(ok.retention, Duration::from_secs(600));
        assert!(parse("").unwrap_err().to_string().contains("[[ruas]]"));
        let e = parse(&format!("[[ruas]]\nid = 200\npublic_key = \"{KEY}\"\n")).unwrap_err();
        assert!(e.to_string().contains("ruas[0].id"), "{e}");
        let e = parse(&format!(
            "[[ruas]]\nid = 1\npublic_key = \"{}\"\n",
            "01".to_string() + &"00".repeat(31)
        ))
        .unwrap_err();
        assert!(e.to_string().contains("public_key"), "{e}");
        let e = parse(&format!(
            "[store]\nrange_max = 0\n[[ruas]]\nid = 3\npublic_key = \"{KEY}\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("store.range_max"), "{e}");
    }
}
