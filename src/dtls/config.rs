//! `[dtls]` in the config of every daemon that speaks FMS UDP (RUAS, replicator,
//! QSD feed, MPS, recorder): the node's identity, its pinned peers, and the
//! link limits. Checked into [`Security`].
//!
//! spec: dtls.md §2, §5. DTLS is the default: a config without `[dtls]` key and
//! certificate files does not start, unless it says `insecure_plain_udp = true`,
//! which is logged as a warning at start.
//!
//! ```toml
//! [dtls]
//! key_file = "node.key"          # ivip keygen --out node.key --cert node.crt
//! cert_file = "node.crt"
//!
//! [[dtls.peer]]
//! name = "l0-b"
//! fingerprint = "sha256:…"       # what `ivip keygen` printed on that node
//! address = ["192.0.2.2:4500"]   # optional: where it speaks from
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::identity::{Fingerprint, Identity};
use super::link::{Limits, Link};
use super::pins::{AddrPattern, Pin, PinSet};
use crate::config::ConfigError;
use crate::metrics::Registry;
use crate::time::Duration;

/// One `[[dtls.peer]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// A name for logs and errors.
    pub name: String,
    /// Its key: `sha256:` and 64 hex digits.
    pub fingerprint: String,
    /// Where it may speak from: `ip:port`, an IP, or a prefix (empty: anywhere).
    #[serde(default)]
    pub address: Vec<String>,
}

/// `[dtls]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DtlsConfig {
    /// The private key: PEM, or an ivip hex Ed25519 seed where OpenSSL can use it.
    pub key_file: Option<PathBuf>,
    /// The self-signed certificate for it (PEM).
    pub cert_file: Option<PathBuf>,
    /// Plain UDP instead of DTLS: tests and labs only.
    pub insecure_plain_udp: bool,
    /// Pinned peers.
    pub peer: Vec<PeerConfig>,
    /// Associations whose handshake is running, at most.
    pub half_open_max: usize,
    /// Of those, from one IP, at most.
    pub half_open_per_ip_max: usize,
    /// A handshake not done after this long fails, milliseconds.
    pub handshake_timeout_ms: u64,
    /// An association idle this long either way is removed, seconds.
    pub idle_timeout_s: u64,
    /// Datagrams queued per peer while its handshake runs.
    pub pending_max: usize,
    /// ClientHellos per second accepted from one IP.
    pub hello_per_ip_per_s: u32,
    /// ClientHellos per second accepted in total.
    pub hello_total_per_s: u32,
    /// After a failed handshake with a peer, wait this long before the next, ms.
    pub retry_after_failure_ms: u64,
    /// Largest datagram written, bytes (records included).
    pub mtu: u32,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        let l = Limits::default();
        DtlsConfig {
            key_file: None,
            cert_file: None,
            insecure_plain_udp: false,
            peer: Vec::new(),
            half_open_max: l.half_open_max,
            half_open_per_ip_max: l.half_open_per_ip_max,
            handshake_timeout_ms: l.handshake_timeout.as_ms(),
            idle_timeout_s: l.idle_timeout.as_us() / 1_000_000,
            pending_max: l.pending_max,
            hello_per_ip_per_s: l.hello_per_ip_per_s,
            hello_total_per_s: l.hello_total_per_s,
            retry_after_failure_ms: l.retry_after_failure.as_ms(),
            mtu: l.mtu,
        }
    }
}

/// A checked `[dtls]`: how a daemon's FMS links are secured.
#[derive(Debug, Clone)]
pub enum Security {
    /// DTLS with this identity and these pins.
    Dtls(DtlsSettings),
    /// Plain UDP (`insecure_plain_udp = true`).
    InsecurePlainUdp,
}

/// Identity files, pins and limits.
#[derive(Debug, Clone)]
pub struct DtlsSettings {
    /// The key file (absolute or relative to the working directory).
    pub key_file: PathBuf,
    /// The certificate file.
    pub cert_file: PathBuf,
    /// The pinned peers.
    pub pins: PinSet,
    /// The limits.
    pub limits: Limits,
}

impl DtlsConfig {
    /// Check the section; relative file names are taken from the config file's
    /// directory.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key and what to do.
    pub fn check(&self, path: &Path) -> Result<Security, ConfigError> {
        let bad = |key: String, msg: String| ConfigError::invalid(path, key, msg);
        if self.insecure_plain_udp {
            return Ok(Security::InsecurePlainUdp);
        }
        let (Some(key), Some(cert)) = (&self.key_file, &self.cert_file) else {
            return Err(bad(
                "dtls".into(),
                "FMS links are DTLS by default and this node has no identity: make one with \
                 `ivip keygen --out node.key --cert node.crt`, set [dtls] key_file and cert_file, \
                 and pin the peers under [[dtls.peer]]; or set `insecure_plain_udp = true` \
                 (tests only)"
                    .into(),
            ));
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &PathBuf| {
            if p.is_relative() {
                base.join(p)
            } else {
                p.clone()
            }
        };
        let mut pins = Vec::with_capacity(self.peer.len());
        for (i, p) in self.peer.iter().enumerate() {
            let fingerprint: Fingerprint = p
                .fingerprint
                .parse()
                .map_err(|e| bad(format!("dtls.peer[{i}].fingerprint"), e))?;
            let addresses = p
                .address
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    a.parse::<AddrPattern>()
                        .map_err(|e| bad(format!("dtls.peer[{i}].address[{j}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if p.name.trim().is_empty() {
                return Err(bad(
                    format!("dtls.peer[{i}].name"),
                    "give the peer a name (it appears in logs and errors)".into(),
                ));
            }
            pins.push(Pin {
                name: p.name.clone(),
                fingerprint,
                addresses,
            });
        }
        let need = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(bad(
                    format!("dtls.{key}"),
                    format!("must be between {lo} and {hi}, not {v}"),
                ))
            }
        };
        let limits = Limits {
            half_open_max: need("half_open_max", self.half_open_max as u64, 1, 1 << 20)? as usize,
            half_open_per_ip_max: need(
                "half_open_per_ip_max",
                self.half_open_per_ip_max as u64,
                1,
                1 << 20,
            )? as usize,
            handshake_timeout: Duration::from_ms(need(
                "handshake_timeout_ms",
                self.handshake_timeout_ms,
                100,
                600_000,
            )?),
            idle_timeout: Duration::from_secs(need(
                "idle_timeout_s",
                self.idle_timeout_s,
                10,
                86_400,
            )?),
            pending_max: need("pending_max", self.pending_max as u64, 1, 65_536)? as usize,
            hello_per_ip_per_s: need(
                "hello_per_ip_per_s",
                u64::from(self.hello_per_ip_per_s),
                1,
                1_000_000,
            )? as u32,
            hello_total_per_s: need(
                "hello_total_per_s",
                u64::from(self.hello_total_per_s),
                1,
                10_000_000,
            )? as u32,
            retry_after_failure: Duration::from_ms(need(
                "retry_after_failure_ms",
                self.retry_after_failure_ms,
                0,
                600_000,
            )?),
            mtu: need("mtu", u64::from(self.mtu), 1280, 9000)? as u32,
        };
        Ok(Security::Dtls(DtlsSettings {
            key_file: rel(key),
            cert_file: rel(cert),
            pins: PinSet::new(pins),
            limits,
        }))
    }
}

impl Security {
    /// `true` for DTLS.
    pub fn is_dtls(&self) -> bool {
        matches!(self, Security::Dtls(_))
    }

    /// Refuse a config that sends to `addr` (a feed, a mesh peer, a replicator)
    /// without a pin for it: the link could never come up.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `key` and the address.
    pub fn require_pinned(
        &self,
        path: &Path,
        key: &str,
        addr: SocketAddr,
    ) -> Result<(), ConfigError> {
        match self {
            Security::Dtls(s) if !s.pins.covers(addr) => Err(ConfigError::invalid(
                path,
                key,
                format!(
                    "{addr} has no pinned DTLS key: add a [[dtls.peer]] with its fingerprint \
                     (and address = [\"{addr}\"])"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Refuse a config that takes datagrams from `ip` (a RUAS source) that no pin
    /// covers: its handshakes could never be accepted.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `key` and the address.
    pub fn require_pinned_ip(
        &self,
        path: &Path,
        key: &str,
        ip: std::net::IpAddr,
    ) -> Result<(), ConfigError> {
        let Security::Dtls(s) = self else {
            return Ok(());
        };
        let pins = s.pins.pins();
        if !pins.iter().any(|p| p.covers(SocketAddr::new(ip, 0), true)) {
            return Err(ConfigError::invalid(
                path,
                key,
                format!(
                    "{ip} has no pinned DTLS key: add a [[dtls.peer]] with its fingerprint \
                     (and address = [\"{ip}\"])"
                ),
            ));
        }
        // Covered, but perhaps only by `ip:port` patterns: a handshake from that
        // IP is then accepted from that one port only.
        if !pins.iter().any(|p| p.covers_every_port(ip)) {
            log::warn!(
                "{}: `{key}`: {ip} is pinned only as ip:port, so its DTLS handshakes are \
                 accepted from that port alone; give the sender a fixed source port \
                 (a RUAS's `udp_bind`) or pin the address without a port",
                path.display()
            );
        }
        Ok(())
    }

    /// Load the identity and make the link (`None` for plain UDP, with a warning
    /// naming `role`). Metrics go under `{prefix}_dtls_*`.
    ///
    /// # Errors
    /// A sentence for the operator: the identity files, or OpenSSL.
    pub fn link(
        &self,
        role: &str,
        registry: &Registry,
        prefix: &str,
    ) -> Result<Option<Arc<Link>>, String> {
        match self {
            Security::InsecurePlainUdp => {
                log::warn!(
                    "{role}: insecure_plain_udp = true: FMS links are plain UDP; anyone who can \
                     send to this node can inject datagrams from any source address. Use DTLS \
                     outside tests."
                );
                Ok(None)
            }
            Security::Dtls(s) => {
                let id = Identity::load(&s.key_file, &s.cert_file)
                    .map_err(|e| format!("[dtls] identity: {e}"))?;
                let link = Link::new(&id, s.pins.clone(), s.limits, registry, prefix)?;
                log::info!(
                    "{role}: DTLS 1.2 on FMS links, this node's key {} ({}), {} pinned peer(s)",
                    id.fingerprint(),
                    id.kind().name(),
                    s.pins.pins().len()
                );
                Ok(Some(link))
            }
        }
    }

    /// The identity and pins for HTTPS (`None` for plain UDP deployments).
    ///
    /// # Errors
    /// The identity files.
    pub fn https(&self) -> Result<Option<(Identity, Arc<PinSet>)>, String> {
        match self {
            Security::InsecurePlainUdp => Ok(None),
            Security::Dtls(s) => {
                let id = Identity::load(&s.key_file, &s.cert_file)
                    .map_err(|e| format!("[dtls] identity: {e}"))?;
                Ok(Some((id, Arc::new(s.pins.clone()))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Security, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            dtls: DtlsConfig,
        }
        let p = Path::new("/etc/ivip/x.toml");
        crate::config::parse::<File>(p, text)?.dtls.check(p)
    }

    #[test]
    fn dtls_is_required_unless_plain_udp_is_asked_for() {
        let e = parse("").unwrap_err().to_string();
        assert!(
            e.contains("ivip keygen") && e.contains("insecure_plain_udp"),
            "{e}"
        );
        assert!(matches!(
            parse("[dtls]\ninsecure_plain_udp = true\n").unwrap(),
            Security::InsecurePlainUdp
        ));
    }

    #[test]
    fn pins_and_paths_are_checked() {
        let fp = format!("sha256:{}", "ab".repeat(32));
        let s = parse(&format!(
            "[dtls]\nkey_file = \"k.pem\"\ncert_file = \"/abs/c.pem\"\nhandshake_timeout_ms = 2000\n\
             [[dtls.peer]]\nname = \"l0-b\"\nfingerprint = \"{fp}\"\naddress = [\"127.0.0.1:4501\", \"10.0.0.0/8\"]\n"
        ))
        .unwrap();
        let Security::Dtls(d) = &s else {
            panic!("not dtls")
        };
        assert_eq!(d.key_file, Path::new("/etc/ivip/k.pem"));
        assert_eq!(d.cert_file, Path::new("/abs/c.pem"));
        assert_eq!(d.limits.handshake_timeout, Duration::from_secs(2));
        assert!(d.pins.covers("127.0.0.1:4501".parse().unwrap()));
        assert!(
            s.require_pinned(Path::new("x"), "feed[0]", "127.0.0.1:4501".parse().unwrap())
                .is_ok()
        );
        let e = s
            .require_pinned(Path::new("x"), "feed[1]", "127.0.0.2:4501".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("feed[1]") && e.contains("127.0.0.2:4501") && e.contains("no pinned"),
            "{e}"
        );
        // HTTPS servers named by IP need a pin for that host (any port).
        let check_url = crate::qsd::config::check_url;
        assert!(check_url("https://127.0.0.1:8443/", &s).is_ok());
        assert!(check_url("https://10.1.2.3:443", &s).is_ok());
        assert!(check_url("https://snapshots.example:443", &s).is_ok());
        let e = check_url("https://192.0.2.9:8443", &s).unwrap_err();
        assert!(e.contains("no [[dtls.peer]] covers 192.0.2.9"), "{e}");
        let cases = [
            ("fingerprint = \"sha256:00\"", "dtls.peer[0].fingerprint"),
            (
                &format!("fingerprint = \"{fp}\"\naddress = [\"x\"]") as &str,
                "dtls.peer[0].address[0]",
            ),
        ];
        for (peer, key) in cases {
            let e = parse(&format!(
                "[dtls]\nkey_file = \"k\"\ncert_file = \"c\"\n[[dtls.peer]]\nname = \"p\"\n{peer}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = parse("[dtls]\nkey_file = \"k\"\ncert_file = \"c\"\nmtu = 100\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dtls.mtu"), "{e}");
    }
}
