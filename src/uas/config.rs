//! The UAS configuration file: where it sits in the delegation tree and whom it
//! serves (seed s3.6, s4.3, Figure 1).
//!
//! A UAS names its parent (another UAS or the RUAS: URL and public key), its own
//! Ed25519 key, its child UASes (their keys and the ranges delegated to each: any
//! start and length), its end users (their UABs and credentials), and every MAB it
//! knows of (so that no ETR points into SPI space). Loaded with
//! [`crate::config::load`]; every semantic check names the key it concerns. This
//! module does not open files other than the config itself and the MAB directory
//! file; the key file is read by the driver.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ivip_wire::{Family, Mab};
use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;
use crate::range::UnitRange;

/// Longest node, child and user name (they go into the SUMUC origin text, which
/// holds at most 255 bytes: `node/user`).
pub const NAME_LEN_MAX: usize = 64;

/// The file as written (see `contrib/examples/uas.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UasConfigFile {
    /// This UAS's name, for audit trails and SUMUC origins (`uas-z`).
    pub name: String,
    /// Its Ed25519 key file (`ivip keygen --out FILE`); relative to the config file.
    pub key_file: PathBuf,
    /// Address for the HTTP API, the web page and `/metrics`.
    pub listen: SocketAddr,
    /// Directory of the audit trail (an append-only log); relative to the config file.
    pub audit_dir: PathBuf,
    /// Every MAB in the Ivip system this UAS knows of (`20.0.0.0/14`).
    #[serde(default, with = "crate::config::mab_list")]
    pub mabs: Vec<Mab>,
    /// A file listing more MABs, one per line (`#` comments); relative to the config file.
    #[serde(default)]
    pub mabs_file: Option<PathBuf>,
    /// The parent: a UAS or the RUAS.
    pub parent: ParentConfig,
    /// Child UASes and what each was delegated.
    #[serde(default)]
    pub children: Vec<ChildConfig>,
    /// End users (and their agents, such as multihoming monitors).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The default per-user rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Sizes and times.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Prefixes exempt from the special-purpose (RFC 6890) ETR rules, for lab and
    /// test networks (`192.0.2.0/24`). Never exempts MAB space.
    #[serde(default)]
    pub etr_allow: Vec<String>,
}

/// The parent node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentConfig {
    /// Base URL, `http://HOST:PORT` (SUMUCs go to `URL/v1/sumuc`).
    pub url: String,
    /// The parent's Ed25519 public key (64 hex digits): its answers must carry its
    /// signature (spec: uas-api.md §6).
    #[serde(with = "crate::config::hex32")]
    pub public_key: [u8; 32],
    /// Where to read current mapping state (`GET /v1/mapping`); defaults to `url`.
    /// Mapping data is public, so a leaf may read straight from the RUAS and save
    /// the hops.
    #[serde(default)]
    pub mapping_url: Option<String>,
    /// The same for `mapping_url`'s answers; defaults to `public_key`.
    #[serde(default, deserialize_with = "de_opt_key")]
    pub mapping_public_key: Option<[u8; 32]>,
}

/// A child UAS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildConfig {
    /// Its name (audit only).
    pub name: String,
    /// Its Ed25519 public key: SUMUCs signed by it are accepted.
    #[serde(with = "crate::config::hex32")]
    pub public_key: [u8; 32],
    /// The ranges it may change (`START+LEN` or `FIRST-LAST`).
    pub ranges: Vec<UnitRange>,
}

/// An end user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// The user's address blocks (seed s3.3).
    pub uab: Vec<UnitRange>,
    /// An Argon2 PHC string (`ivip uas hash-password`); never the password.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Ed25519 public keys of the user's agents (64 hex digits each).
    #[serde(default, deserialize_with = "de_keys")]
    pub public_keys: Vec<[u8; 32]>,
    /// This user's own rate limit, instead of the default.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// A token bucket: `burst` requests at once, refilled at `per_s` a second.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub per_s: f64,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_s: 2.0,
            burst: 20,
        }
    }
}

/// Sizes and times.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body (JSON commands or a SUMUC); larger gets 413.
    pub body_bytes_max: usize,
    /// Most commands in one set.
    pub commands_max: usize,
    /// A child's SUMUC older or newer than this (by its timestamp) is refused.
    pub replay_window_s: u64,
    /// How long a login session lasts.
    pub session_s: u64,
    /// Key-signed requests whose time differs from ours by more are refused.
    pub key_auth_skew_s: u64,
    /// Timeout of one request to the parent.
    pub parent_timeout_ms: u64,
    /// HTTP worker threads.
    pub threads: usize,
    /// Audit log segment size.
    pub audit_segment_bytes_max: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: 65_536,
            commands_max: 1_000,
            replay_window_s: 300,
            session_s: 3_600,
            key_auth_skew_s: 120,
            parent_timeout_ms: 5_000,
            threads: 8,
            audit_segment_bytes_max: 64 << 20,
        }
    }
}

// ---------------------------------------------------------------------------
// Checked form
// ---------------------------------------------------------------------------

/// An IP prefix (for `etr_allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The address, IPv4 in the low 32 bits.
    pub addr: u128,
    /// Prefix length in bits.
    pub len: u8,
    /// IPv4 or IPv6.
    pub family: Family,
}

impl Prefix {
    /// `true` when `ip` lies inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (family, v, bits) = match ip {
            IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (Family::V6, u128::from(a), 128u32),
        };
        if family != self.family {
            return false;
        }
        let shift = bits - u32::from(self.len);
        if shift >= 128 {
            return true;
        }
        (v >> shift) == (self.addr >> shift)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: write a prefix as ADDRESS/LENGTH"))?;
        let ip: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let len: u8 = l.parse().map_err(|_| format!("`{l}` is not a length"))?;
        let (family, addr, bits) = match ip {
            IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a)), 32u8),
            IpAddr::V6(a) => (Family::V6, u128::from(a), 128u8),
        };
        if len > bits {
            return Err(format!("`{s}`: length over {bits}"));
        }
        let host = u32::from(bits - len);
        if host < 128 && (addr & ((1u128 << host) - 1)) != 0 {
            return Err(format!("`{s}`: bits set past the prefix length"));
        }
        Ok(Prefix { addr, len, family })
    }
}

/// A user, checked.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// UABs, each inside one known MAB.
    pub uabs: Vec<UnitRange>,
    /// The parsed PHC string, if the user logs in with a password.
    pub password_hash: Option<String>,
    /// Agent keys.
    pub public_keys: Vec<[u8; 32]>,
    /// The user's token bucket.
    pub rate_limit: RateLimitConfig,
}

pub use crate::delegation::Child;

/// A checked UAS configuration with paths resolved.
#[derive(Debug, Clone)]
pub struct UasConfig {
    /// This node's name.
    pub name: String,
    /// Key file (absolute or relative to the working directory).
    pub key_file: PathBuf,
    /// API address.
    pub listen: SocketAddr,
    /// Audit directory.
    pub audit_dir: PathBuf,
    /// Every known MAB, sorted, without duplicates.
    pub mabs: Vec<Mab>,
    /// Parent base URL (no trailing slash).
    pub parent_url: String,
    /// Parent key.
    pub parent_key: [u8; 32],
    /// Base URL for mapping reads.
    pub mapping_url: String,
    /// Key that signs mapping answers.
    pub mapping_key: [u8; 32],
    /// Children.
    pub children: Vec<Child>,
    /// Users.
    pub users: Vec<User>,
    /// Default token bucket.
    pub rate_limit: RateLimitConfig,
    /// Sizes and times.
    pub limits: LimitsConfig,
    /// ETR exemptions.
    pub etr_allow: Vec<Prefix>,
}

fn de_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| {
            crate::sign::key_from_hex(s).ok_or_else(|| {
                serde::de::Error::custom("expected 64 hex digits (an Ed25519 public key)")
            })
        })
        .collect()
}

fn de_opt_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
    let s = String::deserialize(d)?;
    crate::sign::key_from_hex(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits (an Ed25519 public key)"))
}

fn check_name(path: &Path, key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            path,
            key,
            format!("`{name}`: use 1 to {NAME_LEN_MAX} letters, digits, `-`, `_` or `.`"),
        ))
    }
}

fn check_url(path: &Path, key: &str, url: &str) -> Result<String, ConfigError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ConfigError::invalid(
            path,
            key,
            format!("`{url}`: write http://HOST:PORT (answers are signed; put TLS in front if the path is untrusted)"),
        )
    })?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || !authority.contains(':') {
        return Err(ConfigError::invalid(
            path,
            key,
            format!("`{url}`: the URL needs HOST:PORT"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The MAB that holds all of `r`, if one does.
pub fn mab_of(mabs: &[Mab], r: &UnitRange) -> Option<Mab> {
    mabs.iter()
        .copied()
        .find(|m| m.family() == r.family && m.contains_range(r.start, r.len))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Read MABs from a directory file: one prefix a line, `#` comments.
///
/// # Errors
/// [`ConfigError`] naming the file and line.
pub fn read_mabs_file(path: &Path) -> Result<Vec<Mab>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let m = line.parse::<Mab>().map_err(|_| {
            ConfigError::invalid(
                path,
                format!("line {}", i + 1),
                format!("`{line}` is not a MAB (write a prefix such as 20.0.0.0/14)"),
            )
        })?;
        v.push(m);
    }
    Ok(v)
}

impl UasConfig {
    /// Load and check the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, key and fix.
    pub fn load(path: &Path) -> Result<UasConfig, ConfigError> {
        let f: UasConfigFile = crate::config::load(path)?;
        UasConfig::from_file(path, f)
    }

    /// Check a parsed file; `path` locates relative paths and names errors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn from_file(path: &Path, f: UasConfigFile) -> Result<UasConfig, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        check_name(path, "name", &f.name)?;
        let mut mabs = f.mabs.clone();
        if let Some(mf) = &f.mabs_file {
            mabs.extend(read_mabs_file(&resolve(base, mf))?);
        }
        mabs.sort();
        mabs.dedup();
        if mabs.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "mabs",
                "list every MAB of the Ivip system (`mabs = [\"20.0.0.0/14\"]` or `mabs_file`): ETRs inside them are refused",
            ));
        }
        for (i, a) in mabs.iter().enumerate() {
            for b in &mabs[i + 1..] {
                if a.family() == b.family()
                    && u128::from(a.start()) < b.end()
                    && u128::from(b.start()) < a.end()
                {
                    return Err(ConfigError::invalid(
                        path,
                        "mabs",
                        format!("MABs {a} and {b} overlap"),
                    ));
                }
            }
        }
        let parent_url = check_url(path, "parent.url", &f.parent.url)?;
        let mapping_url = match &f.parent.mapping_url {
            Some(u) => check_url(path, "parent.mapping_url", u)?,
            None => parent_url.clone(),
        };
        let mapping_key = f.parent.mapping_public_key.unwrap_or(f.parent.public_key);

        let mut children = Vec::new();
        for (i, c) in f.children.iter().enumerate() {
            let key = format!("children[{i}]");
            check_name(path, &format!("{key}.name"), &c.name)?;
            if c.ranges.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    format!("{key}.ranges"),
                    "a child needs at least one delegated range",
                ));
            }
            for (j, r) in c.ranges.iter().enumerate() {
                if mab_of(&mabs, r).is_none() {
                    return Err(ConfigError::invalid(
                        path,
                        format!("{key}.ranges[{j}]"),
                        format!("{r} is not inside one of the configured MABs"),
                    ));
                }
            }
            if children
                .iter()
                .any(|o: &Child| o.public_key == c.public_key)
            {
                return Err(ConfigError::invalid(
                    path,
                    format!("{key}.public_key"),
                    "two children share a key",
                ));
            }
            children.push(Child {
                name: c.name.clone(),
                public_key: c.public_key,
                ranges: c.ranges.clone(),
            });
        }

        let mut users: Vec<User> = Vec::new();
        for (i, u) in f.users.iter().enumerate() {
            let key = format!("users[{i}]");
            check_name(path, &format!("{key}.name"), &u.name)?;
            if users.iter().any(|o| o.name == u.name) {
                return Err(ConfigError::invalid(
                    path,
                    format!("{key}.name"),
                    format!("user `{}` is listed twice", u.name),
                ));
            }
            if u.uab.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    format!("{key}.uab"),
                    "a user needs at least one UAB",
                ));
            }
            for (j, r) in u.uab.iter().enumerate() {
                if mab_of(&mabs, r).is_none() {
                    return Err(ConfigError::invalid(
                        path,
                        format!("{key}.uab[{j}]"),
                        format!("{r} is not inside one of the configured MABs"),
                    ));
                }
            }
            if u.password_hash.is_none() && u.public_keys.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    key,
                    "give the user a password_hash or public_keys (or both)",
                ));
            }
            if let Some(h) = &u.password_hash {
                crate::uas::auth::check_phc(h)
                    .map_err(|m| ConfigError::invalid(path, format!("{key}.password_hash"), m))?;
            }
            let rl = u.rate_limit.unwrap_or(f.rate_limit);
            check_rate(path, &format!("{key}.rate_limit"), &rl)?;
            users.push(User {
                name: u.name.clone(),
                uabs: u.uab.clone(),
                password_hash: u.password_hash.clone(),
                public_keys: u.public_keys.clone(),
                rate_limit: rl,
            });
        }
        check_rate(path, "rate_limit", &f.rate_limit)?;

        // Delegations and UABs are exclusive: a range is changed through exactly one
        // path, so a UAS's view of its users' space is never raced by another.
        let mut owned: Vec<(String, UnitRange)> = Vec::new();
        for c in &children {
            for r in &c.ranges {
                owned.push((format!("child `{}`", c.name), *r));
            }
        }
        for u in &users {
            for r in &u.uabs {
                owned.push((format!("user `{}`", u.name), *r));
            }
        }
        for (i, (a, ra)) in owned.iter().enumerate() {
            for (b, rb) in &owned[i + 1..] {
                if ra.overlaps(rb) {
                    return Err(ConfigError::invalid(
                        path,
                        "users/children",
                        format!(
                            "{a} ({ra}) and {b} ({rb}) overlap: each range belongs to one user or child"
                        ),
                    ));
                }
            }
        }

        let mut etr_allow = Vec::new();
        for (i, p) in f.etr_allow.iter().enumerate() {
            etr_allow.push(
                p.parse::<Prefix>()
                    .map_err(|m| ConfigError::invalid(path, format!("etr_allow[{i}]"), m))?,
            );
        }
        let l = f.limits;
        if l.threads == 0 || l.threads > 256 {
            return Err(ConfigError::invalid(path, "limits.threads", "use 1 to 256"));
        }
        if l.body_bytes_max < 1024 || l.body_bytes_max > (16 << 20) {
            return Err(ConfigError::invalid(
                path,
                "limits.body_bytes_max",
                "use 1024 to 16777216 bytes",
            ));
        }
        if l.commands_max == 0 || l.commands_max > usize::from(u16::MAX) {
            return Err(ConfigError::invalid(
                path,
                "limits.commands_max",
                "use 1 to 65535",
            ));
        }
        Ok(UasConfig {
            name: f.name,
            key_file: resolve(base, &f.key_file),
            listen: f.listen,
            audit_dir: resolve(base, &f.audit_dir),
            mabs,
            parent_url,
            parent_key: f.parent.public_key,
            mapping_url,
            mapping_key,
            children,
            users,
            rate_limit: f.rate_limit,
            limits: l,
            etr_allow,
        })
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The child whose key is `key`.
    pub fn child(&self, key: &[u8; 32]) -> Option<&Child> {
        self.children.iter().find(|c| &c.public_key == key)
    }
}

fn check_rate(path: &Path, key: &str, r: &RateLimitConfig) -> Result<(), ConfigError> {
    if !(r.per_s.is_finite() && r.per_s > 0.0) || r.burst == 0 {
        return Err(ConfigError::invalid(
            path,
            key,
            "per_s must be above 0 and burst at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn base() -> String {
        format!(
            r#"
name = "uas-z"
key_file = "z.key"
listen = "127.0.0.1:0"
audit_dir = "audit"
mabs = ["20.0.0.0/14", "2001:db8::/32"]
[parent]
url = "http://127.0.0.1:9"
public_key = "{KEY}"
"#
        )
    }

    fn load(extra: &str) -> Result<UasConfig, ConfigError> {
        let p = Path::new("/etc/ivip/uas.toml");
        let f: UasConfigFile = crate::config::parse(p, &(base() + extra))?;
        UasConfig::from_file(p, f)
    }

    #[test]
    fn paths_resolve_beside_the_file_and_defaults_apply() {
        let c = load("").unwrap();
        assert_eq!(c.key_file, Path::new("/etc/ivip/z.key"));
        assert_eq!(c.audit_dir, Path::new("/etc/ivip/audit"));
        assert_eq!(c.mapping_url, "http://127.0.0.1:9");
        assert_eq!(c.limits.body_bytes_max, 65_536);
    }

    #[test]
    fn overlapping_users_and_children_are_refused() {
        let e = load(&format!(
            r#"
[[children]]
name = "y"
public_key = "{KEY}"
ranges = ["20.1.0.0+65536"]
[[users]]
name = "u"
uab = ["20.1.0.10+4"]
public_keys = ["{KEY}"]
"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn a_uab_outside_every_mab_is_refused() {
        let e = load(&format!(
            "[[users]]\nname = \"u\"\nuab = [\"21.0.0.0+4\"]\npublic_keys = [\"{KEY}\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("users[0].uab[0]"), "{e}");
    }

    #[test]
    fn a_user_without_credentials_is_refused() {
        let e = load("[[users]]\nname = \"u\"\nuab = [\"20.0.0.0+4\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("password_hash or public_keys"), "{e}");
    }

    #[test]
    fn a_plain_password_is_refused() {
        let e =
            load("[[users]]\nname = \"u\"\nuab = [\"20.0.0.0+4\"]\npassword_hash = \"hunter2\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("PHC"), "{e}");
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p: Prefix = "192.0.2.0/24".parse().unwrap();
        assert!(p.contains("192.0.2.200".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        assert!("192.0.2.1/24".parse::<Prefix>().is_err());
        let all: Prefix = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn bad_names_and_urls_are_refused() {
        let p = Path::new("x.toml");
        let f: UasConfigFile = crate::config::parse(p, &base().replace("uas-z", "uas z")).unwrap();
        assert!(UasConfig::from_file(p, f).is_err());
        let f: UasConfigFile =
            crate::config::parse(p, &base().replace("http://127.0.0.1:9", "ftp://x")).unwrap();
        assert!(
            UasConfig::from_file(p, f)
                .unwrap_err()
                .to_string()
                .contains("parent.url")
        );
    }
}
