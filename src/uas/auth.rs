//! Who is asking: end users by password (kept only as an Argon2 hash), by a login
//! session, or by an Ed25519 key; and how often they may ask (seed s3.7, s4.3).
//!
//! spec: uas-api.md §2 (the `Authorization` schemes) and §3 (rate limit). Sans-IO:
//! every call takes the monotonic time and the wall time; randomness for session
//! tokens comes from the operating system (`getrandom`), because a session token
//! is a secret. Not here: what an authenticated user may change (that is
//! [`crate::uas::check`]) and child UASes (they sign SUMUCs, see
//! [`crate::uas::forward`]).
//!
//! Rate limiting happens *before* a password is checked, keyed by the claimed user
//! name, so a flood of guesses costs the server one token-bucket look-up each, not
//! one Argon2 run. A flood against one name does lock that name out for the
//! flood's duration: the operator sees it in the audit trail. Names that are not
//! configured share one bucket.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use parking_lot::Mutex;
use sha2::Digest as _;

use crate::sign::{Ed25519Verifier, KeyPair, Verifier as _};
use crate::time::{Duration, Instant};
use crate::uas::config::{RateLimitConfig, UasConfig};

/// The label at the start of every key-signed request (spec: uas-api.md §2.3).
pub const REQUEST_SIGNATURE_LABEL: &str = "ivip-uas-request-v1";
/// Live sessions one user may hold; the oldest is dropped past this.
pub const SESSIONS_PER_USER_MAX: usize = 16;
/// Key-signed requests remembered per user to refuse replays.
pub const REPLAY_ENTRIES_PER_USER_MAX: usize = 4_096;
/// Argon2 memory cost below which `ivip uas` warns at start (KiB; OWASP's minimum
/// for Argon2id with t=2 is 19 MiB).
pub const WEAK_M_COST_KIB: u32 = 19 * 1024;

// ---------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------

/// Hash a password for the config file: Argon2id, default parameters (19 MiB,
/// t=2, p=1), a 16-byte random salt; a PHC string.
///
/// # Errors
/// A message when the OS random source or the hasher fails.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

/// Check that `phc` is an Argon2 PHC string with a salt and a hash.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc)
        .map_err(|e| format!("not a PHC string ({e}); make one with `ivip uas hash-password`"))?;
    if !h.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "algorithm `{}` is not Argon2; make a hash with `ivip uas hash-password`",
            h.algorithm
        ));
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err("the PHC string has no salt or no hash".into());
    }
    argon2::Params::try_from(&h).map_err(|e| format!("bad Argon2 parameters: {e}"))?;
    Ok(())
}

/// The Argon2 memory cost (KiB) of a PHC string, if it parses.
pub fn phc_m_cost(phc: &str) -> Option<u32> {
    let h = PasswordHash::new(phc).ok()?;
    argon2::Params::try_from(&h).ok().map(|p| p.m_cost())
}

/// `true` when `password` matches the PHC string (constant-time compare inside).
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Token bucket
// ---------------------------------------------------------------------------

/// A token bucket: `burst` at once, `per_s` a second after that.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(cfg: &RateLimitConfig, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(cfg.burst),
            last: now,
        }
    }

    /// Take one token, or say how long until one is there.
    ///
    /// # Errors
    /// The wait, when the bucket is empty.
    pub fn take(&mut self, cfg: &RateLimitConfig, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_since(self.last).as_us() as f64 / 1e6;
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * cfg.per_s).min(f64::from(cfg.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = (1.0 - self.tokens) / cfg.per_s;
            Err(Duration::from_us((wait_s * 1e6).ceil() as u64))
        }
    }
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// What an `Authorization` header carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic base64(user:password)`.
    Password {
        /// Claimed user.
        user: String,
        /// The password.
        password: String,
    },
    /// `Bearer TOKEN` from `POST /v1/login`.
    Session {
        /// The token (64 hex digits).
        token: String,
    },
    /// `Ivip-Ed25519 user=U key=HEX time=T sig=HEX`.
    Key {
        /// Claimed user.
        user: String,
        /// The agent's public key.
        key: [u8; 32],
        /// When the request was signed, µs since the Unix epoch.
        time_us: u64,
        /// Signature over [`request_message`].
        sig: [u8; 64],
    },
}

impl Credentials {
    /// The user the credentials claim to be, when they name one.
    pub fn claimed_user(&self) -> Option<&str> {
        match self {
            Credentials::Password { user, .. } | Credentials::Key { user, .. } => Some(user),
            Credentials::Session { .. } => None,
        }
    }

    /// Parse an `Authorization` header value.
    ///
    /// # Errors
    /// [`AuthError::Malformed`] with what was wrong.
    pub fn parse(value: &str) -> Result<Credentials, AuthError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64_decode(rest)
                .ok_or(AuthError::Malformed("Basic credentials are not base64"))?;
            let text = String::from_utf8(raw)
                .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
            let (user, password) = text
                .split_once(':')
                .ok_or(AuthError::Malformed("Basic credentials need user:password"))?;
            Ok(Credentials::Password {
                user: user.to_string(),
                password: password.to_string(),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() {
                return Err(AuthError::Malformed("Bearer needs a token"));
            }
            Ok(Credentials::Session {
                token: rest.to_string(),
            })
        } else if scheme.eq_ignore_ascii_case("ivip-ed25519") {
            let mut user = None;
            let mut key = None;
            let mut time_us = None;
            let mut sig = None;
            for part in rest.split([' ', ',']).filter(|p| !p.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or(AuthError::Malformed("Ivip-Ed25519 fields are NAME=VALUE"))?;
                let v = v.trim_matches('"');
                match k {
                    "user" => user = Some(v.to_string()),
                    "key" => key = crate::sign::key_from_hex(v),
                    "time" => time_us = v.parse().ok(),
                    "sig" => {
                        sig = ivip_wire::hex::decode(v).and_then(|b| <[u8; 64]>::try_from(b).ok())
                    }
                    _ => return Err(AuthError::Malformed("unknown Ivip-Ed25519 field")),
                }
            }
            match (user, key, time_us, sig) {
                (Some(user), Some(key), Some(time_us), Some(sig)) => Ok(Credentials::Key {
                    user,
                    key,
                    time_us,
                    sig,
                }),
                _ => Err(AuthError::Malformed(
                    "Ivip-Ed25519 needs user=, key= (64 hex), time= (µs) and sig= (128 hex)",
                )),
            }
        } else {
            Err(AuthError::Malformed(
                "use Basic, Bearer or Ivip-Ed25519 authorization",
            ))
        }
    }
}

/// The bytes a key-authenticated request signs (spec: uas-api.md §2.3):
/// `ivip-uas-request-v1 \n METHOD \n PATH?QUERY \n TIME_US \n hex(SHA-256(body))`.
pub fn request_message(method: &str, path_and_query: &str, time_us: u64, body: &[u8]) -> Vec<u8> {
    let digest: [u8; 32] = sha2::Sha256::digest(body).into();
    format!(
        "{REQUEST_SIGNATURE_LABEL}\n{method}\n{path_and_query}\n{time_us}\n{}",
        ivip_wire::hex::encode(&digest)
    )
    .into_bytes()
}

/// An `Authorization` header value signing a request with an agent key.
pub fn sign_request(
    key: &KeyPair,
    user: &str,
    method: &str,
    path_and_query: &str,
    time_us: u64,
    body: &[u8],
) -> String {
    let sig = key.sign(&request_message(method, path_and_query, time_us, body));
    format!(
        "Ivip-Ed25519 user={user} key={} time={time_us} sig={}",
        ivip_wire::hex::encode(&key.public()),
        ivip_wire::hex::encode(&sig)
    )
}

/// A `Basic` header value.
pub fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

// ---------------------------------------------------------------------------
// The authenticator
// ---------------------------------------------------------------------------

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// The header could not be read.
    Malformed(&'static str),
    /// Unknown user, wrong password, unknown key or bad signature (one answer for
    /// all, so nothing is learnt about which).
    BadCredentials,
    /// The session token is unknown or expired.
    SessionExpired,
    /// A key-signed request's time is too far from ours.
    Stale,
    /// A key-signed request seen before.
    Replay,
    /// Too many requests for this user: retry after this long.
    RateLimited(Duration),
}

impl AuthError {
    /// A stable token for the JSON error (`unauthorized` or `rate_limited`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::RateLimited(_) => "rate_limited",
            _ => "unauthorized",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str(
                "authentication required: send Basic, Bearer (from POST /v1/login) or Ivip-Ed25519 authorization",
            ),
            AuthError::Malformed(m) => write!(f, "bad Authorization header: {m}"),
            AuthError::BadCredentials => f.write_str("wrong user name, password or key"),
            AuthError::SessionExpired => f.write_str("session expired or unknown: log in again"),
            AuthError::Stale => f.write_str(
                "the signed time is too far from the server's clock: check the client's clock",
            ),
            AuthError::Replay => f.write_str("this signed request was already used"),
            AuthError::RateLimited(d) => write!(
                f,
                "too many requests for this user: retry in {} s",
                retry_after_s(*d)
            ),
        }
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_s(d: Duration) -> u64 {
    d.as_us().div_ceil(1_000_000).max(1)
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Password (Basic or login).
    Password,
    /// Session token.
    Session,
    /// Agent key.
    Key,
}

impl AuthMethod {
    /// `password`, `session` or `key`.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Session => "session",
            AuthMethod::Key => "key",
        }
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name (as configured).
    pub user: String,
    /// How.
    pub method: AuthMethod,
}

#[derive(Debug)]
struct Session {
    user: String,
    expires: Instant,
    made: Instant,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<String, TokenBucket>,
    unknown_bucket: Option<TokenBucket>,
    /// SHA-256 of the token → session.
    sessions: HashMap<[u8; 32], Session>,
    /// Per user: (signed time µs, signature) of recent key-signed requests.
    seen: HashMap<String, VecDeque<(u64, [u8; 64])>>,
}

/// Authentication and rate limiting for one UAS.
#[derive(Debug)]
pub struct Authenticator {
    users: HashMap<String, UserAuth>,
    default_rate: RateLimitConfig,
    session_len: Duration,
    skew_us: u64,
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct UserAuth {
    password_hash: Option<String>,
    keys: Vec<[u8; 32]>,
    rate: RateLimitConfig,
}

fn token_hash(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    /// For the users of `cfg`.
    pub fn new(cfg: &UasConfig) -> Authenticator {
        let users = cfg
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    UserAuth {
                        password_hash: u.password_hash.clone(),
                        keys: u.public_keys.clone(),
                        rate: u.rate_limit,
                    },
                )
            })
            .collect();
        Authenticator {
            users,
            default_rate: cfg.rate_limit,
            session_len: Duration::from_secs(cfg.limits.session_s),
            skew_us: cfg.limits.key_auth_skew_s.saturating_mul(1_000_000),
            state: Mutex::new(State::default()),
        }
    }

    /// Take a token from `user`'s bucket (or the shared bucket of unknown names).
    ///
    /// # Errors
    /// [`AuthError::RateLimited`].
    pub fn rate_limit(&self, user: Option<&str>, now: Instant) -> Result<(), AuthError> {
        let mut st = self.state.lock();
        let (bucket, cfg) = match user.and_then(|u| self.users.get(u).map(|a| (u, a))) {
            Some((name, a)) => (
                st.buckets
                    .entry(name.to_string())
                    .or_insert_with(|| TokenBucket::full(&a.rate, now)),
                a.rate,
            ),
            None => (
                st.unknown_bucket
                    .get_or_insert_with(|| TokenBucket::full(&self.default_rate, now)),
                self.default_rate,
            ),
        };
        bucket.take(&cfg, now).map_err(AuthError::RateLimited)
    }

    /// Authenticate a request: rate-limit the claimed user, then check the
    /// credentials. `method`, `path_and_query` and `body` are what a key signs.
    ///
    /// # Errors
    /// [`AuthError`].
    pub fn authenticate(
        &self,
        creds: &Credentials,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now: Instant,
        wall_us: u64,
    ) -> Result<Principal, AuthError> {
        match creds {
            Credentials::Session { token } => {
                let user = {
                    let st = self.state.lock();
                    match st.sessions.get(&token_hash(token)) {
                        Some(s) if s.expires > now => s.user.clone(),
                        _ => String::new(),
                    }
                };
                if user.is_empty() {
                    self.rate_limit(None, now)?;
                    return Err(AuthError::SessionExpired);
                }
                self.rate_limit(Some(&user), now)?;
                Ok(Principal {
                    user,
                    method: AuthMethod::Session,
                })
            }
            Credentials::Password { user, password } => {
                self.rate_limit(Some(user), now)?;
                self.check_password(user, password)?;
                Ok(Principal {
                    user: user.clone(),
                    method: AuthMethod::Password,
                })
            }
            Credentials::Key {
                user,
                key,
                time_us,
                sig,
            } => {
                self.rate_limit(Some(user), now)?;
                let a = self.users.get(user).ok_or(AuthError::BadCredentials)?;
                if !a.keys.contains(key) {
                    return Err(AuthError::BadCredentials);
                }
                if time_us.abs_diff(wall_us) > self.skew_us {
                    return Err(AuthError::Stale);
                }
                let msg = request_message(method, path_and_query, *time_us, body);
                Ed25519Verifier
                    .verify(key, &msg, sig)
                    .map_err(|_| AuthError::BadCredentials)?;
                let mut st = self.state.lock();
                let seen = st.seen.entry(user.clone()).or_default();
                let horizon = wall_us.saturating_sub(2 * self.skew_us);
                while seen.front().is_some_and(|(t, _)| *t < horizon) {
                    seen.pop_front();
                }
                if seen.iter().any(|(_, s)| s == sig) {
                    return Err(AuthError::Replay);
                }
                if seen.len() >= REPLAY_ENTRIES_PER_USER_MAX {
                    return Err(AuthError::RateLimited(Duration::from_secs(1)));
                }
                // Kept in arrival order; the horizon prune above is approximate when
                // clients' clocks differ, which only keeps entries a little longer.
                seen.push_back((*time_us, *sig));
                Ok(Principal {
                    user: user.clone(),
                    method: AuthMethod::Key,
                })
            }
        }
    }

    fn check_password(&self, user: &str, password: &str) -> Result<(), AuthError> {
        match self
            .users
            .get(user)
            .and_then(|a| a.password_hash.as_deref())
        {
            Some(phc) if verify_password(phc, password) => Ok(()),
            _ => Err(AuthError::BadCredentials),
        }
    }

    /// `POST /v1/login`: check the password and open a session. Returns the token
    /// (64 hex digits) and how long it lasts.
    ///
    /// # Errors
    /// [`AuthError::RateLimited`], [`AuthError::BadCredentials`], or
    /// [`AuthError::Malformed`] when the OS gives no randomness.
    pub fn login(
        &self,
        user: &str,
        password: &str,
        now: Instant,
    ) -> Result<(String, Duration), AuthError> {
        self.rate_limit(Some(user), now)?;
        self.check_password(user, password)?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|_| AuthError::Malformed("no randomness"))?;
        let token = ivip_wire::hex::encode(&raw);
        let mut st = self.state.lock();
        st.sessions.retain(|_, s| s.expires > now);
        let mine: Vec<([u8; 32], Instant)> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (*k, s.made))
            .collect();
        if mine.len() >= SESSIONS_PER_USER_MAX
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, m)| *m)
        {
            st.sessions.remove(oldest);
        }
        st.sessions.insert(
            token_hash(&token),
            Session {
                user: user.to_string(),
                expires: now + self.session_len,
                made: now,
            },
        );
        Ok((token, self.session_len))
    }

    /// End a session (`POST /v1/logout`). Returns whether it existed.
    pub fn logout(&self, token: &str) -> bool {
        self.state
            .lock()
            .sessions
            .remove(&token_hash(token))
            .is_some()
    }
}

// ---------------------------------------------------------------------------
// Base64 (RFC 4648 §4), for Basic authorization only
// ---------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encode with padding.
pub fn base64_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decode padded or unpadded base64; `None` on any other character.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for ch in s.bytes() {
        let v = B64.iter().position(|&c| c == ch)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cheap hash (m=256 KiB, t=1) so unit tests stay fast; verification takes
    /// its parameters from the string.
    pub(crate) fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(256, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), b"0123456789abcdef")
            .unwrap()
            .to_string()
    }

    fn cfg() -> UasConfig {
        let key = KeyPair::from_seed(&[7; 32]);
        let text = format!(
            r#"
name = "uas-z"
key_file = "k"
listen = "127.0.0.1:0"
audit_dir = "a"
mabs = ["20.0.0.0/14"]
rate_limit = {{ per_s = 1.0, burst = 3 }}
[parent]
url = "http://127.0.0.1:9"
public_key = "{pk}"
[[users]]
name = "alice"
uab = ["20.0.0.0+16"]
password_hash = "{h}"
public_keys = ["{pk}"]
"#,
            pk = ivip_wire::hex::encode(&key.public()),
            h = cheap_hash("correct horse")
        );
        let p = std::path::Path::new("t.toml");
        UasConfig::from_file(p, crate::config::parse(p, &text).unwrap()).unwrap()
    }

    #[test]
    fn a_real_hash_is_a_salted_argon2id_phc_string() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_ne!(h, hash_password("pw").unwrap(), "salted");
        assert!(check_phc(&h).is_ok());
        assert!(verify_password(&h, "pw"));
        assert!(!verify_password(&h, "pW"));
        assert!(check_phc("$2b$12$abc").is_err());
        assert_eq!(phc_m_cost(&cheap_hash("x")), Some(256));
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "alice:correct horse"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn passwords_and_sessions() {
        let a = Authenticator::new(&cfg());
        let t = Instant(1_000_000);
        let good = Credentials::parse(&basic_header("alice", "correct horse")).unwrap();
        let p = a.authenticate(&good, "GET", "/v1/me", b"", t, 0).unwrap();
        assert_eq!(p.method, AuthMethod::Password);
        let bad = Credentials::parse(&basic_header("alice", "wrong")).unwrap();
        assert_eq!(
            a.authenticate(&bad, "GET", "/", b"", t, 0),
            Err(AuthError::BadCredentials)
        );
        let (token, _) = a
            .login("alice", "correct horse", t + Duration::from_secs(5))
            .unwrap();
        let s = Credentials::parse(&format!("Bearer {token}")).unwrap();
        let t2 = t + Duration::from_secs(6);
        assert_eq!(
            a.authenticate(&s, "GET", "/", b"", t2, 0).unwrap().method,
            AuthMethod::Session
        );
        let late = t + Duration::from_secs(3_700);
        assert_eq!(
            a.authenticate(&s, "GET", "/", b"", late, 0),
            Err(AuthError::SessionExpired)
        );
        assert!(a.login("alice", "nope", late).is_err());
        let (t2k, _) = a
            .login("alice", "correct horse", late + Duration::from_secs(9))
            .unwrap();
        assert!(a.logout(&t2k));
        assert!(!a.logout(&t2k));
    }

    #[test]
    fn rate_limit_refuses_past_the_burst_and_says_when_to_retry() {
        let a = Authenticator::new(&cfg());
        let t = Instant(0);
        let bad = Credentials::parse(&basic_header("alice", "wrong")).unwrap();
        for _ in 0..3 {
            assert_eq!(
                a.authenticate(&bad, "GET", "/", b"", t, 0),
                Err(AuthError::BadCredentials)
            );
        }
        let e = a.authenticate(&bad, "GET", "/", b"", t, 0).unwrap_err();
        assert_eq!(e, AuthError::RateLimited(Duration::from_secs(1)));
        assert_eq!(e.code(), "rate_limited");
        // One token a second comes back.
        let later = t + Duration::from_secs(1);
        assert_eq!(
            a.authenticate(&bad, "GET", "/", b"", later, 0),
            Err(AuthError::BadCredentials)
        );
        // Unknown names share a bucket of their own.
        let who = Credentials::parse(&basic_header("mallory", "x")).unwrap();
        for _ in 0..3 {
            assert_eq!(
                a.authenticate(&who, "GET", "/", b"", t, 0),
                Err(AuthError::BadCredentials)
            );
        }
        assert!(matches!(
            a.authenticate(&who, "GET", "/", b"", t, 0),
            Err(AuthError::RateLimited(_))
        ));
    }

    #[test]
    fn key_signed_requests_verify_once_and_only_in_time() {
        let a = Authenticator::new(&cfg());
        let key = KeyPair::from_seed(&[7; 32]);
        let wall = 1_700_000_000_000_000u64;
        let h = sign_request(&key, "alice", "POST", "/v1/commands", wall, b"{}");
        let c = Credentials::parse(&h).unwrap();
        let ok = a.authenticate(
            &c,
            "POST",
            "/v1/commands",
            b"{}",
            Instant(10_000_000),
            wall + 5,
        );
        assert_eq!(ok.unwrap().method, AuthMethod::Key);
        assert_eq!(
            a.authenticate(
                &c,
                "POST",
                "/v1/commands",
                b"{}",
                Instant(20_000_000),
                wall + 5
            ),
            Err(AuthError::Replay)
        );
        let h2 = sign_request(&key, "alice", "POST", "/v1/commands", wall + 1, b"{}");
        let c2 = Credentials::parse(&h2).unwrap();
        assert_eq!(
            a.authenticate(
                &c2,
                "POST",
                "/v1/commands",
                b"{\"x\":1}",
                Instant(30_000_000),
                wall
            ),
            Err(AuthError::BadCredentials),
            "body is covered"
        );
        assert_eq!(
            a.authenticate(
                &c2,
                "POST",
                "/v1/commands",
                b"{}",
                Instant(40_000_000),
                wall + 600_000_000
            ),
            Err(AuthError::Stale)
        );
        let other = KeyPair::from_seed(&[8; 32]);
        let h3 = sign_request(&other, "alice", "POST", "/v1/commands", wall, b"{}");
        assert_eq!(
            a.authenticate(
                &Credentials::parse(&h3).unwrap(),
                "POST",
                "/v1/commands",
                b"{}",
                Instant(50_000_000),
                wall
            ),
            Err(AuthError::BadCredentials),
            "unknown key"
        );
        assert!(Credentials::parse("Ivip-Ed25519 user=alice").is_err());
        assert!(Credentials::parse("Digest x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn header_parsing_never_panics(s in ".{0,200}") {
            let _ = Credentials::parse(&s);
            let _ = base64_decode(&s);
            let _ = Credentials::parse(&format!("Basic {s}"));
            let _ = Credentials::parse(&format!("Ivip-Ed25519 {s}"));
        }
    }
}
