//! `ivip replicator --config FILE`: the TOML file and its checks.
//!
//! See `contrib/examples/replicator.toml` for a commented example. A level-0
//! replicator lists `ruas_sources` (who may inject payloads) and `mesh` (the
//! other level-0 replicators); a level-n replicator lists two or more `[[feed]]`
//! tables, each an upstream with ordered alternatives. Downstreams are never
//! listed: they subscribe (spec: control.md).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Deserialize;

use super::core::{RuasSources, Settings};
use crate::config::{self, ConfigError};
use crate::feed::config::check_feeds;
use crate::feed::{DownstreamConfig, FeedEntry, FeedSpec, FeedTimingConfig};
use crate::net::{FaultConfig, LoopConfig, SocketConfig};

/// `[dedupe]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    /// Sequence numbers remembered per RUAS (a power of two, 64..=1048576). The
    /// window takes `128 × window × 8` bytes.
    pub window: usize,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig {
            window: super::dedupe::WINDOW_DEFAULT,
        }
    }
}

/// The replicator's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicatorConfig {
    /// The feed socket: payloads in and out, subscriptions. Upstreams and
    /// downstreams know this node by this address.
    pub listen: SocketAddr,
    /// Admin HTTP address for `/metrics` (none: no admin server).
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Worker threads (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// Level 0: RUAS addresses allowed to inject payloads (`"192.0.2.7"` for any
    /// port, or `"192.0.2.7:4500"`).
    #[serde(default)]
    pub ruas_sources: Vec<String>,
    /// Level 0: the other level-0 replicators (their feed addresses).
    #[serde(default)]
    pub mesh: Vec<SocketAddr>,
    /// Level n: upstream feeds.
    #[serde(default)]
    pub feed: Vec<FeedEntry>,
    /// Feed timers.
    #[serde(default)]
    pub feed_timing: FeedTimingConfig,
    /// Who may subscribe.
    #[serde(default)]
    pub downstream: DownstreamConfig,
    /// Fresh/Repeat window.
    #[serde(default)]
    pub dedupe: DedupeConfig,
    /// Socket buffers.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Fault injection (testing only).
    #[serde(default)]
    pub fault: FaultConfig,
}

/// A checked replicator configuration.
#[derive(Debug, Clone)]
pub struct ReplicatorSettings {
    /// Feed socket address.
    pub listen: SocketAddr,
    /// Admin HTTP address.
    pub admin: Option<SocketAddr>,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// The core's settings.
    pub core: Settings,
    /// Socket buffers.
    pub socket: SocketConfig,
    /// Fault injection.
    pub fault: FaultConfig,
    /// Event-loop limits.
    pub event_loop: LoopConfig,
}

impl ReplicatorConfig {
    /// Read and check a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line or key.
    pub fn load(path: &Path) -> Result<ReplicatorSettings, ConfigError> {
        config::load::<ReplicatorConfig>(path)?.check(path)
    }

    /// Check a parsed config (`path` is used in messages).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn check(&self, path: &Path) -> Result<ReplicatorSettings, ConfigError> {
        let mut ruas = RuasSources::default();
        for (i, s) in self.ruas_sources.iter().enumerate() {
            if let Ok(a) = s.parse::<SocketAddr>() {
                ruas.addrs.insert(a);
            } else if let Ok(ip) = s.parse::<IpAddr>() {
                ruas.ips.insert(ip.to_canonical());
            } else {
                return Err(ConfigError::invalid(
                    path,
                    format!("ruas_sources[{i}]"),
                    format!("{s:?} is neither an IP address nor an address:port"),
                ));
            }
        }
        let level0 = !self.ruas_sources.is_empty();
        let feeds: Vec<FeedSpec> = if level0 {
            if !self.feed.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    "feed",
                    "a level-0 replicator (one with ruas_sources) takes payloads from RUASes and \
                     its mesh peers only; list the other level-0 replicators under `mesh`",
                ));
            }
            let mesh: Vec<FeedEntry> = self
                .mesh
                .iter()
                .map(|a| FeedEntry {
                    address: *a,
                    alternatives: vec![],
                })
                .collect();
            check_feeds(path, "mesh", &mesh, 0, self.listen)?
        } else {
            if !self.mesh.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    "mesh",
                    "only level-0 replicators (with ruas_sources) have mesh peers; a level-n \
                     replicator lists its upstreams as [[feed]]",
                ));
            }
            check_feeds(path, "feed", &self.feed, 2, self.listen)?
        };
        let timing = self.feed_timing.check(path)?;
        let downstream = self.downstream.check(path)?;
        if let Err(e) = super::dedupe::Dedupe::new(self.dedupe.window).map(|_| ()) {
            return Err(ConfigError::invalid(path, "dedupe.window", e));
        }
        self.fault
            .check()
            .map_err(|e| ConfigError::invalid(path, "fault.loss_percent", e))?;
        Ok(ReplicatorSettings {
            listen: self.listen,
            admin: self.admin,
            workers: self.workers,
            core: Settings {
                ruas_sources: ruas,
                feeds,
                timing,
                downstream,
                window: self.dedupe.window,
            },
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
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/examples/replicator.toml");
        ReplicatorConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
    }

    fn parse(text: &str) -> Result<ReplicatorSettings, ConfigError> {
        let p = Path::new("r.toml");
        config::parse::<ReplicatorConfig>(p, text)?.check(p)
    }

    #[test]
    fn level_zero_and_level_n() {
        let s = parse(
            r#"
            listen = "127.0.0.1:4500"
            ruas_sources = ["127.0.0.9", "127.0.0.8:99"]
            mesh = ["127.0.0.1:4501"]
            [downstream]
            allow = ["127.0.0.0/8"]
            "#,
        )
        .unwrap();
        assert_eq!(s.core.feeds.len(), 1);
        assert!(
            s.core
                .ruas_sources
                .ips
                .contains(&"127.0.0.9".parse::<IpAddr>().unwrap())
        );
        let s = parse(
            r#"
            listen = "127.0.0.1:4500"
            [[feed]]
            address = "127.0.0.1:4501"
            alternatives = ["127.0.0.1:4503"]
            [[feed]]
            address = "127.0.0.1:4502"
            [downstream]
            allow = ["127.0.0.0/8"]
            "#,
        )
        .unwrap();
        assert_eq!(s.core.feeds[0].alternatives.len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                "listen = \"127.0.0.1:1\"\n[[feed]]\naddress = \"127.0.0.1:2\"\n[downstream]\nallow=[\"::1\"]\n",
                "at least 2",
            ),
            (
                "listen = \"127.0.0.1:1\"\nruas_sources=[\"x\"]\n[downstream]\nallow=[\"::1\"]\n",
                "ruas_sources[0]",
            ),
            (
                "listen = \"127.0.0.1:1\"\nruas_sources=[\"::1\"]\n[[feed]]\naddress=\"127.0.0.1:2\"\n[downstream]\nallow=[\"::1\"]\n",
                "`feed`",
            ),
            (
                "listen = \"127.0.0.1:1\"\nruas_sources=[\"::1\"]\n[dedupe]\nwindow=100\n[downstream]\nallow=[\"::1\"]\n",
                "dedupe.window",
            ),
            (
                "listen = \"127.0.0.1:1\"\nruas_sources=[\"::1\"]\n[fault]\nloss_percent=200.0\n[downstream]\nallow=[\"::1\"]\n",
                "fault.loss_percent",
            ),
            ("listen = \"127.0.0.1:1\"\nbogus = 1\n", "bogus"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
