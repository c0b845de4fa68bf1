//! Ed25519 signing and verification behind traits (STYLE practice 11).
//!
//! seed s4.2: every payload, snapshot and SUMUC is signed with Ed25519. Cores take
//! a [`Verifier`] so the simulator and fuzzers can use a cheap fake; production
//! uses [`Ed25519Verifier`], which calls `verify_strict` (rejects small-order keys
//! and non-canonical signatures). Keys are kept and printed as lower-case hex.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// A public key, as bytes.
pub type PublicKey = [u8; PUBLIC_KEY_LEN];

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    /// The public key is not a valid Ed25519 point (or is weak).
    BadKey,
    /// The signature does not verify.
    BadSignature,
}

impl core::fmt::Display for SignError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SignError::BadKey => "public key is not a valid Ed25519 key",
            SignError::BadSignature => "signature does not verify",
        })
    }
}

impl std::error::Error for SignError {}

/// Something that checks signatures.
pub trait Verifier: Send + Sync {
    /// `Ok` when `sig` is `key`'s signature over `msg`.
    ///
    /// # Errors
    /// [`SignError`].
    fn verify(
        &self,
        key: &PublicKey,
        msg: &[u8],
        sig: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignError>;

    /// Check many at once; `Ok` only if all verify. The default checks one by one.
    ///
    /// # Errors
    /// [`SignError`] if any fails (callers then check one by one to find which).
    fn verify_batch(
        &self,
        items: &[(&PublicKey, &[u8], &[u8; SIGNATURE_LEN])],
    ) -> Result<(), SignError> {
        items.iter().try_for_each(|(k, m, s)| self.verify(k, m, s))
    }
}

/// Real Ed25519 verification (`verify_strict`; batch via `ed25519_dalek::verify_batch`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ed25519Verifier;

impl Verifier for Ed25519Verifier {
    fn verify(
        &self,
        key: &PublicKey,
        msg: &[u8],
        sig: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignError> {
        let vk = verifying_key(key)?;
        vk.verify_strict(msg, &Signature::from_bytes(sig))
            .map_err(|_| SignError::BadSignature)
    }

    fn verify_batch(
        &self,
        items: &[(&PublicKey, &[u8], &[u8; SIGNATURE_LEN])],
    ) -> Result<(), SignError> {
        if items.len() < 2 {
            return items.iter().try_for_each(|(k, m, s)| self.verify(k, m, s));
        }
        let mut keys = Vec::with_capacity(items.len());
        for (k, _, _) in items {
            keys.push(verifying_key(k)?);
        }
        let msgs: Vec<&[u8]> = items.iter().map(|(_, m, _)| *m).collect();
        let sigs: Vec<Signature> = items
            .iter()
            .map(|(_, _, s)| Signature::from_bytes(s))
            .collect();
        ed25519_dalek::verify_batch(&msgs, &sigs, &keys).map_err(|_| SignError::BadSignature)
    }
}

/// Most decompressed keys kept by [`verifying_key`]; a full cache starts over.
const KEY_CACHE_MAX: usize = 4096;

/// `key` decompressed and checked (not weak), from a process-wide cache. Turning
/// 32 bytes into a curve point costs a field square root, about a fifth of a
/// verification; a daemon checks signatures of a handful of keys (its RUASes,
/// its UASes) millions of times. Invalid keys are not cached.
fn verifying_key(key: &PublicKey) -> Result<VerifyingKey, SignError> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static CACHE: OnceLock<parking_lot::RwLock<HashMap<PublicKey, VerifyingKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(vk) = cache.read().get(key) {
        return Ok(*vk);
    }
    let vk = VerifyingKey::from_bytes(key).map_err(|_| SignError::BadKey)?;
    if vk.is_weak() {
        return Err(SignError::BadKey);
    }
    let mut w = cache.write();
    if w.len() >= KEY_CACHE_MAX {
        w.clear();
    }
    w.insert(*key, vk);
    Ok(vk)
}

/// A verifier that accepts a signature equal to the first 64 bytes of
/// `SHA-256(key || msg)` twice over: cheap, deterministic, and still rejects
/// tampering. For the simulator and fuzzers only.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeVerifier;

impl FakeVerifier {
    /// The fake signature of `msg` under `key`.
    pub fn sign(key: &PublicKey, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(key);
        h.update(msg);
        let d: [u8; 32] = h.finalize().into();
        let mut s = [0u8; SIGNATURE_LEN];
        s[..32].copy_from_slice(&d);
        s[32..].copy_from_slice(&d);
        s
    }
}

impl Verifier for FakeVerifier {
    fn verify(
        &self,
        key: &PublicKey,
        msg: &[u8],
        sig: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignError> {
        if FakeVerifier::sign(key, msg) == *sig {
            Ok(())
        } else {
            Err(SignError::BadSignature)
        }
    }
}

/// An Ed25519 key pair.
#[derive(Clone)]
pub struct KeyPair {
    sk: SigningKey,
}

impl core::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "KeyPair(public {})",
            ivip_wire::hex::encode(&self.public())
        )
    }
}

impl KeyPair {
    /// A new key from the operating system's random source.
    pub fn generate() -> KeyPair {
        KeyPair {
            sk: SigningKey::generate(&mut rand_core::UnwrapErr(getrandom::SysRng)),
        }
    }

    /// A key from its 32-byte secret seed (tests use fixed seeds).
    pub fn from_seed(seed: &[u8; 32]) -> KeyPair {
        KeyPair {
            sk: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed.
    pub fn seed(&self) -> [u8; 32] {
        self.sk.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.sk.verifying_key().to_bytes()
    }

    /// Sign `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.sk.sign(msg).to_bytes()
    }
}

/// Parse a 32-byte key written as 64 hex digits.
pub fn key_from_hex(s: &str) -> Option<[u8; 32]> {
    ivip_wire::hex::decode(s.trim())?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_signatures_verify_and_forgeries_do_not() {
        let k = KeyPair::from_seed(&[1; 32]);
        let sig = k.sign(b"payload");
        let v = Ed25519Verifier;
        assert_eq!(v.verify(&k.public(), b"payload", &sig), Ok(()));
        assert_eq!(
            v.verify(&k.public(), b"payloaD", &sig),
            Err(SignError::BadSignature)
        );
        let other = KeyPair::from_seed(&[2; 32]);
        assert_eq!(
            v.verify(&other.public(), b"payload", &sig),
            Err(SignError::BadSignature)
        );
        let sig2 = other.sign(b"two");
        let pk1 = k.public();
        let pk2 = other.public();
        assert_eq!(
            v.verify_batch(&[(&pk1, b"payload", &sig), (&pk2, b"two", &sig2)]),
            Ok(())
        );
        assert_eq!(
            v.verify_batch(&[(&pk1, b"payload", &sig), (&pk2, b"tw0", &sig2)]),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            Ed25519Verifier.verify(&identity, b"x", &[0; 64]),
            Err(SignError::BadKey)
        );
    }

    #[test]
    fn the_key_cache_answers_as_decompression_does_and_survives_filling_up() {
        let v = Ed25519Verifier;
        let keys: Vec<KeyPair> = (0..KEY_CACHE_MAX as u32 + 10)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..4].copy_from_slice(&i.to_be_bytes());
                KeyPair::from_seed(&seed)
            })
            .collect();
        // Fill it past its bound (it starts over), then check answers both ways.
        for k in &keys {
            assert_eq!(
                verifying_key(&k.public()).map(|vk| vk.to_bytes()),
                Ok(k.public())
            );
        }
        for k in [&keys[0], &keys[keys.len() - 1]] {
            let sig = k.sign(b"m");
            assert_eq!(v.verify(&k.public(), b"m", &sig), Ok(()));
            assert_eq!(
                v.verify(&k.public(), b"n", &sig),
                Err(SignError::BadSignature)
            );
        }
        // A key that is not a point, twice: refused both times, never cached.
        let not_a_point = (2..=255u8)
            .map(|i| {
                let mut k = [0u8; 32];
                k[0] = i;
                k
            })
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .expect("some small y is off the curve");
        for _ in 0..2 {
            assert_eq!(verifying_key(&not_a_point), Err(SignError::BadKey));
        }
    }

    #[test]
    fn fake_verifier_rejects_tampering() {
        let key = [9u8; 32];
        let s = FakeVerifier::sign(&key, b"m");
        assert!(FakeVerifier.verify(&key, b"m", &s).is_ok());
        assert!(FakeVerifier.verify(&key, b"n", &s).is_err());
    }

    #[test]
    fn seed_round_trip_and_hex() {
        let k = KeyPair::generate();
        assert_eq!(KeyPair::from_seed(&k.seed()).public(), k.public());
        let hex = ivip_wire::hex::encode(&k.public());
        assert_eq!(key_from_hex(&hex), Some(k.public()));
        assert_eq!(key_from_hex("abcd"), None);
    }
}
