//! The config sections every feed-taking or feed-serving daemon shares:
//! `[[feed]]`, `[feed_timing]` and `[downstream]`. Checked into the settings the
//! state machines take, with errors that name the key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use ivip_wire::control::Role;
use serde::Deserialize;

use super::subscribers::SubscribersSettings;
use super::upstreams::{FeedSpec, FeedTiming};
use crate::config::ConfigError;
use crate::net::IpPrefix;
use crate::time::Duration;

/// One `[[feed]]`: an upstream and its ordered alternatives.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FeedEntry {
    /// The primary upstream: the address it sends payloads from.
    pub address: SocketAddr,
    /// Used in order when the primary is silent or refuses.
    #[serde(default)]
    pub alternatives: Vec<SocketAddr>,
}

/// `[feed_timing]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FeedTimingConfig {
    /// A feed with no payload for this long has failed (RUAS heartbeats make
    /// silence meaningful): move to the next alternative.
    pub silence_ms: u64,
    /// Retry a Subscribe that got no answer after this long.
    pub subscribe_retry_ms: u64,
    /// While on an alternative, ask the primary again this often.
    pub probe_interval_ms: u64,
    /// Return to the primary after it has delivered without silence this long.
    pub return_hold_ms: u64,
}

impl Default for FeedTimingConfig {
    fn default() -> Self {
        FeedTimingConfig {
            silence_ms: 1000,
            subscribe_retry_ms: 200,
            probe_interval_ms: 500,
            return_hold_ms: 1000,
        }
    }
}

impl FeedTimingConfig {
    /// Check and convert.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn check(&self, path: &Path) -> Result<FeedTiming, ConfigError> {
        let need = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(Duration::from_ms(v))
            } else {
                Err(ConfigError::invalid(
                    path,
                    format!("feed_timing.{key}"),
                    format!("must be between {lo} and {hi} milliseconds, not {v}"),
                ))
            }
        };
        Ok(FeedTiming {
            silence: need("silence_ms", self.silence_ms, 20, 600_000)?,
            subscribe_retry: need("subscribe_retry_ms", self.subscribe_retry_ms, 5, 60_000)?,
            probe_interval: need("probe_interval_ms", self.probe_interval_ms, 5, 600_000)?,
            return_hold: need("return_hold_ms", self.return_hold_ms, 0, 3_600_000)?,
        })
    }
}

/// Check `[[feed]]` entries: at least `min` feeds, no address twice, none equal to
/// `own` (the daemon's own feed address).
///
/// # Errors
/// [`ConfigError::Invalid`] naming the entry.
pub fn check_feeds(
    path: &Path,
    key: &str,
    feeds: &[FeedEntry],
    min: usize,
    own: SocketAddr,
) -> Result<Vec<FeedSpec>, ConfigError> {
    if feeds.len() < min {
        return Err(ConfigError::invalid(
            path,
            key,
            format!(
                "{} feed(s) configured; at least {min} are needed so that one upstream's loss loses nothing \
                 (add [[{key}]] tables with `address = \"host:port\"`)",
                feeds.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, f) in feeds.iter().enumerate() {
        for a in std::iter::once(&f.address).chain(&f.alternatives) {
            if *a == own {
                return Err(ConfigError::invalid(
                    path,
                    format!("{key}[{i}]"),
                    format!("{a} is this daemon's own address"),
                ));
            }
            if !seen.insert(*a) {
                return Err(ConfigError::invalid(
                    path,
                    format!("{key}[{i}]"),
                    format!("{a} appears more than once among the feeds and alternatives"),
                ));
            }
        }
    }
    Ok(feeds
        .iter()
        .map(|f| FeedSpec {
            primary: f.address,
            alternatives: f.alternatives.clone(),
        })
        .collect())
}

/// `[downstream]`: who may subscribe to this replicator.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamConfig {
    /// Most subscribers served at once; more are refused ("capacity full").
    pub capacity: usize,
    /// Networks subscribers may come from (`"192.0.2.0/24"`, `"2001:db8::/32"`,
    /// or one address). Others are refused ("not allowed").
    pub allow: Vec<String>,
    /// Roles served: any of "replicator", "qsd", "mps", "recorder".
    pub roles: Vec<String>,
    /// Keepalive interval announced to subscribers.
    pub keepalive_ms: u64,
    /// A subscriber silent this long is dropped.
    pub expiry_ms: u64,
    /// The retry hint sent with "capacity full".
    pub refuse_retry_after_ms: u64,
}

impl Default for DownstreamConfig {
    fn default() -> Self {
        DownstreamConfig {
            capacity: 100,
            allow: Vec::new(),
            roles: vec![
                "replicator".into(),
                "qsd".into(),
                "mps".into(),
                "recorder".into(),
            ],
            keepalive_ms: 500,
            expiry_ms: 2000,
            refuse_retry_after_ms: 10_000,
        }
    }
}

/// The most subscribers one replicator may be configured for.
pub const CAPACITY_MAX: usize = 100_000;

impl DownstreamConfig {
    /// Check and convert.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn check(&self, path: &Path) -> Result<SubscribersSettings, ConfigError> {
        let bad =
            |key: &str, msg: String| ConfigError::invalid(path, format!("downstream.{key}"), msg);
        if self.capacity == 0 || self.capacity > CAPACITY_MAX {
            return Err(bad(
                "capacity",
                format!("must be 1..={CAPACITY_MAX}, not {}", self.capacity),
            ));
        }
        if self.allow.is_empty() {
            return Err(bad(
                "allow",
                "is empty, so no subscriber could ever be accepted; list your downstreams' \
                 networks, e.g. allow = [\"192.0.2.0/24\"]"
                    .into(),
            ));
        }
        let allow = self
            .allow
            .iter()
            .map(|s| s.parse::<IpPrefix>().map_err(|e| bad("allow", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let roles = self
            .roles
            .iter()
            .map(|r| match r.as_str() {
                "replicator" => Ok(Role::Replicator),
                "qsd" => Ok(Role::Qsd),
                "mps" => Ok(Role::Mps),
                "recorder" => Ok(Role::Recorder),
                other => Err(bad(
                    "roles",
                    format!("unknown role {other:?}; use replicator, qsd, mps or recorder"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.keepalive_ms < 10 || self.keepalive_ms > 60_000 {
            return Err(bad(
                "keepalive_ms",
                format!("must be 10..=60000, not {}", self.keepalive_ms),
            ));
        }
        if self.expiry_ms < 2 * self.keepalive_ms {
            return Err(bad(
                "expiry_ms",
                format!(
                    "must be at least twice keepalive_ms ({}), not {}",
                    self.keepalive_ms, self.expiry_ms
                ),
            ));
        }
        Ok(SubscribersSettings {
            capacity: self.capacity,
            allow,
            roles,
            keepalive: Duration::from_ms(self.keepalive_ms),
            expiry: Duration::from_ms(self.expiry_ms),
            refuse_retry_after: Duration::from_ms(self.refuse_retry_after_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_checked() {
        let p = Path::new("x.toml");
        let own: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let f = |a: &str, alts: &[&str]| FeedEntry {
            address: a.parse().unwrap(),
            alternatives: alts.iter().map(|s| s.parse().unwrap()).collect(),
        };
        let ok = [f("127.0.0.1:2", &["127.0.0.1:4"]), f("127.0.0.1:3", &[])];
        assert_eq!(check_feeds(p, "feed", &ok, 2, own).unwrap().len(), 2);
        let e = check_feeds(p, "feed", &ok[..1], 2, own).unwrap_err();
        assert!(e.to_string().contains("at least 2"), "{e}");
        let dup = [f("127.0.0.1:2", &[]), f("127.0.0.1:3", &["127.0.0.1:2"])];
        assert!(
            check_feeds(p, "feed", &dup, 2, own)
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
        let me = [f("127.0.0.1:1", &[]), f("127.0.0.1:3", &[])];
        assert!(
            check_feeds(p, "feed", &me, 2, own)
                .unwrap_err()
                .to_string()
                .contains("own address")
        );
    }

    #[test]
    fn downstream_section_is_checked() {
        let p = Path::new("x.toml");
        let mut d = DownstreamConfig::default();
        assert!(
            d.check(p)
                .unwrap_err()
                .to_string()
                .contains("downstream.allow")
        );
        d.allow = vec!["10.0.0.0/8".into()];
        let s = d.check(p).unwrap();
        assert_eq!((s.capacity, s.roles.len()), (100, 4));
        d.roles = vec!["router".into()];
        assert!(d.check(p).is_err());
        d.roles = vec!["qsd".into()];
        d.expiry_ms = 600;
        assert!(d.check(p).unwrap_err().to_string().contains("expiry_ms"));
        assert!(FeedTimingConfig::default().check(p).is_ok());
        let t = FeedTimingConfig {
            silence_ms: 1,
            ..FeedTimingConfig::default()
        };
        assert!(
            t.check(p)
                .unwrap_err()
                .to_string()
                .contains("feed_timing.silence_ms")
        );
    }
}
