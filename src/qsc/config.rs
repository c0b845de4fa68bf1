//! `ivip qsc --config FILE`: the TOML file. Example: `contrib/examples/qsc.toml`.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::config::{self, ConfigError};
use crate::net::{FaultConfig, SocketConfig};

fn default_timeout_ms() -> u64 {
    250
}
fn default_cache_entries_max() -> usize {
    1_000_000
}
fn default_pending_max() -> usize {
    100_000
}

/// The file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QscConfig {
    /// UDP: map requests from ITRs (and downstream QSCs); upstream replies and
    /// notifications arrive here too.
    pub listen: SocketAddr,
    /// Upstream QSDs (or QSCs), in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// HTTP: /metrics.
    pub admin_listen: SocketAddr,
    /// Ask the next upstream after this long without a reply.
    #[serde(default = "default_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Most cached answers.
    #[serde(default = "default_cache_entries_max")]
    pub cache_entries_max: usize,
    /// Most misses waiting for an upstream at once.
    #[serde(default = "default_pending_max")]
    pub pending_max: usize,
    /// Socket options.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Test-only fault injection.
    #[serde(default)]
    pub fault: FaultConfig,
}

impl QscConfig {
    /// Load and check.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load(path: &Path) -> Result<QscConfig, ConfigError> {
        let c: QscConfig = config::load(path)?;
        c.check(path)?;
        Ok(c)
    }

    /// Check a parsed file.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "upstreams",
                "list at least one upstream QSD",
            ));
        }
        if self.upstreams.contains(&self.listen) {
            return Err(ConfigError::invalid(
                path,
                "upstreams",
                "a QSC cannot be its own upstream",
            ));
        }
        if self.query_timeout_ms == 0 || self.cache_entries_max == 0 || self.pending_max == 0 {
            return Err(ConfigError::invalid(
                path,
                "query_timeout_ms",
                "query_timeout_ms, cache_entries_max and pending_max must be above 0",
            ));
        }
        self.fault
            .check()
            .map_err(|e| ConfigError::invalid(path, "fault.loss_percent", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/examples/qsc.toml");
        let c = QscConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.upstreams.len(), 2);
    }
}
