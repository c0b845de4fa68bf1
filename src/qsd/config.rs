//! `ivip qsd --config FILE`: the TOML file and its checks. Example:
//! `contrib/examples/qsd.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::stream::StreamConfig;
use crate::config::{self, ConfigError};
use crate::dtls::{DtlsConfig, Security};
use crate::feed::config::check_feeds;
use crate::feed::{FeedEntry, FeedSpec, FeedTiming, FeedTimingConfig};
use crate::net::{FaultConfig, IpPrefix, SocketConfig};
use crate::time::Duration;

fn default_cache_time_s() -> u64 {
    600
}
fn default_negative_cache_time_s() -> u64 {
    60
}
fn default_gap_wait_ms() -> u64 {
    50
}
fn default_fetch_retry_ms() -> u64 {
    250
}
fn default_directory_refresh_s() -> u64 {
    86_400
}

/// The file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QsdConfig {
    /// UDP: map requests from ITRs and QSCs (query.md).
    pub query_listen: SocketAddr,
    /// Query workers; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// UDP: payloads from upstream replicators (it subscribes from here).
    pub feed_listen: SocketAddr,
    /// HTTP: /metrics, /v1/status, /v1/applied.
    pub admin_listen: SocketAddr,
    /// Upstream feeds (two or more).
    #[serde(default)]
    pub feed: Vec<FeedEntry>,
    /// Feed timers.
    #[serde(default)]
    pub feed_timing: FeedTimingConfig,
    /// The directory as a local file (relative to this file).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Or fetched over HTTP, with its detached signature at `URL.sig`.
    #[serde(default)]
    pub directory_url: Option<String>,
    /// The key that signs the fetched directory.
    #[serde(default, with = "opt_hex32")]
    pub directory_key: Option<[u8; 32]>,
    /// How often the fetched directory is fetched again (s5: daily).
    #[serde(default = "default_directory_refresh_s")]
    pub directory_refresh_s: u64,
    /// MPS base URLs, nearest first (s4.1.3: "a close one and a distant one").
    #[serde(default)]
    pub mps: Vec<String>,
    /// Cache time of positive and unassigned answers.
    #[serde(default = "default_cache_time_s")]
    pub cache_time_s: u64,
    /// Cache time of not-SPI answers.
    #[serde(default = "default_negative_cache_time_s")]
    pub negative_cache_time_s: u64,
    /// Querier prefixes served (others get `refused`); empty = everyone.
    #[serde(default)]
    pub clients: Vec<String>,
    /// How long a payload gap waits for the other feed before an MPS is asked.
    #[serde(default = "default_gap_wait_ms")]
    pub gap_wait_ms: u64,
    /// Ask the next MPS after this long without the missing payloads.
    #[serde(default = "default_fetch_retry_ms")]
    pub fetch_retry_ms: u64,
    /// Socket options.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Test-only fault injection.
    #[serde(default)]
    pub fault: FaultConfig,
    /// Link security of the feed socket (and HTTPS fetches): spec: dtls.md.
    #[serde(default)]
    pub dtls: DtlsConfig,
}

mod opt_hex32 {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            crate::sign::key_from_hex(&s)
                .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits (a 32-byte key)"))
        })
        .transpose()
    }
}

/// Where the directory comes from.
#[derive(Debug, Clone)]
pub enum DirectorySource {
    /// A local file.
    File(PathBuf),
    /// An HTTP URL and the key that signs it.
    Url {
        /// The URL.
        url: String,
        /// The signing key.
        key: [u8; 32],
    },
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct QsdSettings {
    /// Query port.
    pub query_listen: SocketAddr,
    /// Workers.
    pub workers: usize,
    /// Feed port.
    pub feed_listen: SocketAddr,
    /// Admin HTTP.
    pub admin_listen: SocketAddr,
    /// Feeds.
    pub feeds: Vec<FeedSpec>,
    /// Feed timers.
    pub timing: FeedTiming,
    /// The directory.
    pub directory: DirectorySource,
    /// Refresh period of a fetched directory.
    pub directory_refresh: Duration,
    /// MPS base URLs.
    pub mps: Vec<String>,
    /// Answer cache times.
    pub cache_time: Duration,
    /// Not-SPI cache time.
    pub negative_cache_time: Duration,
    /// Served prefixes.
    pub clients: Vec<IpPrefix>,
    /// Stream timers.
    pub stream: StreamConfig,
    /// Sockets.
    pub socket: SocketConfig,
    /// Fault injection.
    pub fault: FaultConfig,
    /// DTLS or (tests only) plain UDP on the feed socket; pins for HTTPS.
    pub dtls: Security,
}

/// `Ok` for `http://` URLs, and for `https://` ones when `dtls` has pins to
/// check the server with.
///
/// # Errors
/// A message for the operator.
pub fn check_url(u: &str, dtls: &Security) -> Result<(), String> {
    if u.starts_with("http://") {
        return Ok(());
    }
    if let Some(rest) = u.strip_prefix("https://") {
        let Security::Dtls(s) = dtls else {
            return Err(format!(
                "{u:?}: https needs [dtls] pins to check the server (insecure_plain_udp has none)"
            ));
        };
        // A server named by IP address must be covered by some pin, or every
        // fetch would fail its key check (a host name is checked when connecting).
        let host = rest.split('/').next().unwrap_or("");
        if let Ok(a) = host.parse::<std::net::SocketAddr>()
            && !s.pins.pins().iter().any(|p| p.covers(a, true))
        {
            return Err(format!(
                "{u:?}: no [[dtls.peer]] covers {}, so its HTTPS key could not be checked: pin \
                 it with address = [\"{}\"]",
                a.ip(),
                a.ip()
            ));
        }
        return Ok(());
    }
    Err(format!("{u:?} is not an http:// or https:// URL"))
}

impl QsdConfig {
    /// Load and check.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn load(path: &Path) -> Result<QsdSettings, ConfigError> {
        config::load::<QsdConfig>(path)?.check(path)
    }

    /// Check a parsed file.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn check(&self, path: &Path) -> Result<QsdSettings, ConfigError> {
        let bad = |k: &str, m: String| ConfigError::invalid(path, k, m);
        let dtls = self.dtls.check(path)?;
        let feeds = check_feeds(path, "feed", &self.feed, 1, self.feed_listen)?;
        for (i, f) in self.feed.iter().enumerate() {
            for a in std::iter::once(&f.address).chain(&f.alternatives) {
                dtls.require_pinned(path, &format!("feed[{i}]"), *a)?;
            }
        }
        let timing = self.feed_timing.check(path)?;
        let directory = match (&self.directory, &self.directory_url, &self.directory_key) {
            (Some(f), None, _) => {
                let base = path.parent().unwrap_or(Path::new("."));
                DirectorySource::File(if f.is_relative() {
                    base.join(f)
                } else {
                    f.clone()
                })
            }
            (None, Some(u), Some(k)) => {
                check_url(u, &dtls).map_err(|m| bad("directory_url", m))?;
                DirectorySource::Url {
                    url: u.clone(),
                    key: *k,
                }
            }
            (None, Some(_), None) => {
                return Err(bad(
                    "directory_key",
                    "a fetched directory needs the key that signs it".into(),
                ));
            }
            _ => {
                return Err(bad(
                    "directory",
                    "give either `directory = FILE` or `directory_url` with `directory_key`".into(),
                ));
            }
        };
        for (i, u) in self.mps.iter().enumerate() {
            check_url(u, &dtls).map_err(|m| bad(&format!("mps[{i}]"), m))?;
        }
        let mut clients = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            clients.push(
                c.parse::<IpPrefix>()
                    .map_err(|e| bad(&format!("clients[{i}]"), format!("{c:?}: {e}")))?,
            );
        }
        if self.cache_time_s == 0 || self.cache_time_s > 86_400 {
            return Err(bad("cache_time_s", "must be 1..=86400".into()));
        }
        self.fault
            .check()
            .map_err(|e| bad("fault.loss_percent", e))?;
        Ok(QsdSettings {
            query_listen: self.query_listen,
            workers: crate::net::cores::worker_count(self.workers),
            feed_listen: self.feed_listen,
            admin_listen: self.admin_listen,
            feeds,
            timing,
            directory,
            directory_refresh: Duration::from_secs(self.directory_refresh_s.max(60)),
            mps: self
                .mps
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            cache_time: Duration::from_secs(self.cache_time_s),
            negative_cache_time: Duration::from_secs(self.negative_cache_time_s),
            clients,
            stream: StreamConfig {
                gap_wait: Duration::from_ms(self.gap_wait_ms),
                fetch_retry: Duration::from_ms(self.fetch_retry_ms.max(10)),
                ..StreamConfig::default()
            },
            socket: self.socket,
            fault: self.fault,
            dtls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_and_directory_load() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/examples/qsd.toml");
        let s = QsdConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        let DirectorySource::File(d) = &s.directory else {
            panic!("a file")
        };
        let dir = crate::qsd::driver::load_directory(&DirectorySource::File(d.clone())).unwrap();
        assert_eq!(dir.mabs().len(), 2);
        assert_eq!(s.feeds.len(), 2);
        assert_eq!(s.clients.len(), 2);
    }

    #[test]
    fn a_directory_must_be_named() {
        let p = Path::new("q.toml");
        let text = "query_listen = \"127.0.0.1:0\"\nfeed_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                    [[feed]]\naddress = \"127.0.0.1:9\"\n[dtls]\ninsecure_plain_udp = true\n";
        let e = config::parse::<QsdConfig>(p, text)
            .unwrap()
            .check(p)
            .unwrap_err();
        assert!(e.to_string().contains("`directory`"), "{e}");
    }
}
