//! A node's link identity: a private key, a self-signed X.509 certificate for it,
//! and the fingerprint peers pin.
//!
//! spec: dtls.md §2. The fingerprint is SHA-256 over the DER SubjectPublicKeyInfo
//! of the certificate's key, written `sha256:` and 64 hex digits. It names the
//! *key*, not the certificate, so a certificate made again for the same key (a
//! new validity, a new name) keeps every pin valid, as an SSH host key does.
//!
//! Key kinds: the node's Ed25519 key is reused when the OpenSSL in use can sign a
//! DTLS 1.2 handshake with it ([`ed25519_usable`] finds out by trying one in
//! memory); OpenSSL 3.0 cannot (it allows Ed25519 in TLS 1.2 only), so `ivip
//! keygen` then makes a P-256 key. Key files are either ivip's own one-line hex
//! Ed25519 seed (`keyfile.rs`) or PEM (PKCS#8), told apart by their first line.
//!
//! What it is not: a CA. Certificates are self-signed; trust comes from pins
//! ([`super::pins`]), never from a chain.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use openssl::x509::{X509, X509NameBuilder, X509Ref};

use crate::sign::KeyPair;

/// Bytes of a fingerprint (SHA-256).
pub const FINGERPRINT_LEN: usize = 32;
/// The text prefix of a fingerprint.
pub const FINGERPRINT_PREFIX: &str = "sha256:";
/// The common name put in certificates `ivip keygen` makes when none is given.
pub const DEFAULT_NAME: &str = "ivip node";

// ---------------------------------------------------------------------------
// Fingerprint
// ---------------------------------------------------------------------------

/// SHA-256 of a public key's DER SubjectPublicKeyInfo: what peers pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The fingerprint of a public (or private) key.
    ///
    /// # Errors
    /// OpenSSL could not encode the key.
    pub fn of_key<T: HasPublic>(key: &PKeyRef<T>) -> Result<Fingerprint, IdentityError> {
        let der = key.public_key_to_der().map_err(IdentityError::openssl)?;
        Ok(Fingerprint::of_spki_der(&der))
    }

    /// The fingerprint of a certificate's key.
    ///
    /// # Errors
    /// The certificate's key cannot be read.
    pub fn of_cert(cert: &X509Ref) -> Result<Fingerprint, IdentityError> {
        let k = cert.public_key().map_err(IdentityError::openssl)?;
        Fingerprint::of_key(&k)
    }

    /// The fingerprint of DER SubjectPublicKeyInfo bytes.
    pub fn of_spki_der(der: &[u8]) -> Fingerprint {
        use sha2::Digest as _;
        Fingerprint(sha2::Sha256::digest(der).into())
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{FINGERPRINT_PREFIX}{}", ivip_wire::hex::encode(&self.0))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let bad = || {
            format!(
                "{s:?} is not a fingerprint: expected `sha256:` and 64 hex digits, as `ivip keygen` prints"
            )
        };
        let hex = s.trim().strip_prefix(FINGERPRINT_PREFIX).ok_or_else(bad)?;
        let bytes = ivip_wire::hex::decode(&hex.to_ascii_lowercase()).ok_or_else(bad)?;
        let arr: [u8; FINGERPRINT_LEN] = bytes.try_into().map_err(|_| bad())?;
        Ok(Fingerprint(arr))
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why an identity could not be made, read or used.
#[derive(Debug)]
pub enum IdentityError {
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key or certificate file does not hold what it should.
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate is for another key.
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The key kind cannot be used for DTLS 1.2 by this OpenSSL.
    Unusable(String),
    /// OpenSSL failed.
    OpenSsl(String),
}

impl IdentityError {
    fn openssl(e: openssl::error::ErrorStack) -> IdentityError {
        IdentityError::OpenSsl(e.to_string())
    }
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            IdentityError::Format { path, message } => {
                write!(f, "{}: {message}", path.display())
            }
            IdentityError::Mismatch { key, cert } => write!(
                f,
                "the certificate {} is not for the key {} (make a matching one with `ivip keygen --key {} --cert FILE`)",
                cert.display(),
                key.display(),
                key.display()
            ),
            IdentityError::Unusable(m) => f.write_str(m),
            IdentityError::OpenSsl(m) => write!(f, "OpenSSL: {m}"),
        }
    }
}

impl std::error::Error for IdentityError {}

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

/// The kind of key of an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Ed25519 (RFC 8032), used in DTLS only where OpenSSL allows it.
    Ed25519,
    /// ECDSA on NIST P-256 (secp256r1) with SHA-256.
    P256,
}

impl KeyKind {
    /// The name used in messages.
    pub const fn name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::P256 => "P-256",
        }
    }
}

/// A private key and a certificate for it.
#[derive(Clone)]
pub struct Identity {
    key: PKey<Private>,
    cert: X509,
    fingerprint: Fingerprint,
    kind: KeyKind,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} {})", self.kind.name(), self.fingerprint)
    }
}

fn kind_of(key: &PKeyRef<Private>) -> Option<KeyKind> {
    match key.id() {
        Id::ED25519 => Some(KeyKind::Ed25519),
        Id::EC => {
            let ec = key.ec_key().ok()?;
            (ec.group().curve_name() == Some(Nid::X9_62_PRIME256V1)).then_some(KeyKind::P256)
        }
        _ => None,
    }
}

impl Identity {
    /// A new key of `kind` with a self-signed certificate naming `name`.
    ///
    /// # Errors
    /// OpenSSL failed.
    pub fn generate(kind: KeyKind, name: &str) -> Result<Identity, IdentityError> {
        let key = match kind {
            KeyKind::Ed25519 => {
                let k = KeyPair::generate();
                PKey::private_key_from_raw_bytes(&k.seed(), Id::ED25519)
                    .map_err(IdentityError::openssl)?
            }
            KeyKind::P256 => {
                let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                    .map_err(IdentityError::openssl)?;
                PKey::from_ec_key(EcKey::generate(&g).map_err(IdentityError::openssl)?)
                    .map_err(IdentityError::openssl)?
            }
        };
        Identity::for_key(key, name)
    }

    /// A self-signed certificate for an existing key.
    ///
    /// # Errors
    /// The key is neither Ed25519 nor P-256, or OpenSSL failed.
    pub fn for_key(key: PKey<Private>, name: &str) -> Result<Identity, IdentityError> {
        let kind = kind_of(&key).ok_or_else(|| {
            IdentityError::Unusable("the key is neither Ed25519 nor P-256".into())
        })?;
        let cert = self_signed(&key, kind, name).map_err(IdentityError::openssl)?;
        let fingerprint = Fingerprint::of_key(&key)?;
        Ok(Identity {
            key,
            cert,
            fingerprint,
            kind,
        })
    }

    /// The node's Ed25519 signing key as a DTLS identity.
    ///
    /// # Errors
    /// OpenSSL failed.
    pub fn from_ed25519(k: &KeyPair, name: &str) -> Result<Identity, IdentityError> {
        let key = PKey::private_key_from_raw_bytes(&k.seed(), Id::ED25519)
            .map_err(IdentityError::openssl)?;
        Identity::for_key(key, name)
    }

    /// Read a key file (ivip hex seed or PEM) and its certificate (PEM), and check
    /// that they belong together.
    ///
    /// # Errors
    /// [`IdentityError`] naming the file.
    pub fn load(key_file: &Path, cert_file: &Path) -> Result<Identity, IdentityError> {
        let key = read_key(key_file)?;
        let kind = kind_of(&key).ok_or_else(|| IdentityError::Format {
            path: key_file.to_path_buf(),
            message: "the key is neither Ed25519 nor P-256".into(),
        })?;
        let pem = std::fs::read(cert_file).map_err(|source| IdentityError::Io {
            path: cert_file.to_path_buf(),
            source,
        })?;
        let cert = X509::from_pem(&pem).map_err(|_| IdentityError::Format {
            path: cert_file.to_path_buf(),
            message: "expected a PEM certificate (-----BEGIN CERTIFICATE-----); make one with `ivip keygen --key KEY --cert FILE`".into(),
        })?;
        let fingerprint = Fingerprint::of_key(&key)?;
        if Fingerprint::of_cert(&cert)? != fingerprint {
            return Err(IdentityError::Mismatch {
                key: key_file.to_path_buf(),
                cert: cert_file.to_path_buf(),
            });
        }
        Ok(Identity {
            key,
            cert,
            fingerprint,
            kind,
        })
    }

    /// What peers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The key kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The private key.
    pub fn key(&self) -> &PKeyRef<Private> {
        &self.key
    }

    /// The certificate.
    pub fn cert(&self) -> &X509Ref {
        &self.cert
    }

    /// The certificate as PEM.
    ///
    /// # Errors
    /// OpenSSL failed.
    pub fn cert_pem(&self) -> Result<Vec<u8>, IdentityError> {
        self.cert.to_pem().map_err(IdentityError::openssl)
    }

    /// The private key as PKCS#8 PEM.
    ///
    /// # Errors
    /// OpenSSL failed.
    pub fn key_pem(&self) -> Result<Vec<u8>, IdentityError> {
        self.key
            .private_key_to_pem_pkcs8()
            .map_err(IdentityError::openssl)
    }

    /// `Err` naming the key kind when this OpenSSL cannot use it for DTLS 1.2.
    ///
    /// # Errors
    /// [`IdentityError::Unusable`].
    pub fn check_usable(&self) -> Result<(), IdentityError> {
        if self.kind == KeyKind::Ed25519 && !ed25519_usable() {
            return Err(IdentityError::Unusable(format!(
                "{} cannot sign DTLS 1.2 handshakes with Ed25519 keys (it allows them in TLS 1.2 only); \
                 make a P-256 identity with `ivip keygen --out KEY --cert CERT`",
                openssl::version::version()
            )));
        }
        Ok(())
    }
}

/// Read a private key: ivip's one-line hex Ed25519 seed, or PEM.
///
/// # Errors
/// [`IdentityError`] naming the file.
pub fn read_key(path: &Path) -> Result<PKey<Private>, IdentityError> {
    let bytes = std::fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.starts_with(b"-----BEGIN") {
        return PKey::private_key_from_pem(&bytes).map_err(|_| IdentityError::Format {
            path: path.to_path_buf(),
            message: "a PEM file that does not hold a private key OpenSSL can read".into(),
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    let seed = crate::sign::key_from_hex(&text).ok_or_else(|| IdentityError::Format {
        path: path.to_path_buf(),
        message: "expected a PEM private key or one line of 64 hex digits (an Ed25519 seed)".into(),
    })?;
    PKey::private_key_from_raw_bytes(&seed, Id::ED25519).map_err(IdentityError::openssl)
}

/// Write `bytes` to a new file with `mode`; refuses to overwrite.
///
/// # Errors
/// [`IdentityError::Io`], also when the file exists.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn self_signed(
    key: &PKeyRef<Private>,
    kind: KeyKind,
    name: &str,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_text("CN", name)?;
    let n = n.build();
    b.set_subject_name(&n)?;
    b.set_issuer_name(&n)?;
    b.set_pubkey(key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    b.set_not_before(&not_before)?;
    // RFC 5280 §4.1.2.5: "no well-defined expiration date". Pins, not dates, say
    // whom to trust; a key is retired by removing its pin.
    let not_after = Asn1Time::from_str_x509("99991231235959Z")?;
    b.set_not_after(&not_after)?;
    let md = match kind {
        KeyKind::Ed25519 => MessageDigest::null(),
        KeyKind::P256 => MessageDigest::sha256(),
    };
    b.sign(key, md)?;
    Ok(b.build())
}

/// Make a new identity of `kind` and write it: the key to `key_out` (an ivip hex
/// seed for Ed25519, so the same file is the node's signing key; PKCS#8 PEM for
/// P-256; mode 0600) and the certificate to `cert_out` (PEM). Refuses to
/// overwrite either file, and to make a key this OpenSSL cannot use in DTLS.
///
/// # Errors
/// [`IdentityError`] naming the file.
pub fn write_new_identity(
    key_out: &Path,
    cert_out: &Path,
    kind: KeyKind,
    name: &str,
) -> Result<Identity, IdentityError> {
    if cert_out.exists() {
        return Err(IdentityError::Io {
            path: cert_out.to_path_buf(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    if kind == KeyKind::Ed25519 {
        Identity::generate(KeyKind::Ed25519, name)?.check_usable()?;
    }
    let id = match kind {
        KeyKind::Ed25519 => {
            let k = KeyPair::generate();
            crate::keyfile::write_new(key_out, &k).map_err(|e| IdentityError::Format {
                path: key_out.to_path_buf(),
                message: e.to_string(),
            })?;
            Identity::from_ed25519(&k, name)?
        }
        KeyKind::P256 => {
            let id = Identity::generate(KeyKind::P256, name)?;
            write_new_file(key_out, &id.key_pem()?, 0o600)?;
            id
        }
    };
    write_new_file(cert_out, &id.cert_pem()?, 0o644)?;
    Ok(id)
}

/// Write a certificate for the key already in `key_file` (the node's Ed25519
/// signing key where OpenSSL can use it in DTLS, or a PEM key).
///
/// # Errors
/// [`IdentityError`] naming the file; [`IdentityError::Unusable`] for an
/// Ed25519 key this OpenSSL cannot use in DTLS 1.2.
pub fn certify_existing_key(
    key_file: &Path,
    cert_out: &Path,
    name: &str,
) -> Result<Identity, IdentityError> {
    let id = Identity::for_key(read_key(key_file)?, name)?;
    id.check_usable()?;
    write_new_file(cert_out, &id.cert_pem()?, 0o644)?;
    Ok(id)
}

/// `true` when this OpenSSL completes a DTLS 1.2 handshake with Ed25519
/// certificates on both sides. Tried once, in memory, then remembered.
pub fn ed25519_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| super::link::probe_handshake(KeyKind::Ed25519).unwrap_or(false))
}

/// The key kind `ivip keygen` makes: Ed25519 where DTLS can use it, else P-256.
pub fn preferred_kind() -> KeyKind {
    if ed25519_usable() {
        KeyKind::Ed25519
    } else {
        KeyKind::P256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ivip-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fingerprints_parse_print_and_name_the_key() {
        let id = Identity::generate(KeyKind::P256, "a").unwrap();
        let text = id.fingerprint().to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), id.fingerprint());
        assert_eq!(
            text.to_uppercase()
                .replace("SHA256:", "sha256:")
                .parse::<Fingerprint>()
                .unwrap(),
            id.fingerprint()
        );
        for bad in [
            "",
            "sha256:",
            "sha1:00",
            "sha256:zz",
            &text[..text.len() - 2],
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
        // A new certificate for the same key keeps the fingerprint.
        let again = Identity::for_key(id.key.clone(), "b").unwrap();
        assert_eq!(again.fingerprint(), id.fingerprint());
        assert_eq!(
            Fingerprint::of_cert(again.cert()).unwrap(),
            id.fingerprint()
        );
    }

    #[test]
    fn identities_round_trip_through_files_and_mismatches_are_named() {
        let d = dir("files");
        let id = Identity::generate(KeyKind::P256, "node").unwrap();
        let (k, c) = (d.join("k.pem"), d.join("c.pem"));
        write_new_file(&k, &id.key_pem().unwrap(), 0o600).unwrap();
        write_new_file(&c, &id.cert_pem().unwrap(), 0o644).unwrap();
        assert!(write_new_file(&k, b"x", 0o600).is_err(), "never overwrites");
        let back = Identity::load(&k, &c).unwrap();
        assert_eq!(back.fingerprint(), id.fingerprint());
        assert_eq!(back.kind(), KeyKind::P256);
        // An ivip hex seed is an Ed25519 key.
        let seed = d.join("seed");
        let kp = KeyPair::generate();
        crate::keyfile::write_new(&seed, &kp).unwrap();
        let ed = Identity::from_ed25519(&kp, "n").unwrap();
        let edc = d.join("ed.pem");
        write_new_file(&edc, &ed.cert_pem().unwrap(), 0o644).unwrap();
        assert_eq!(
            Identity::load(&seed, &edc).unwrap().kind(),
            KeyKind::Ed25519
        );
        // The P-256 certificate is not for the seed's key.
        let e = Identity::load(&seed, &c).unwrap_err().to_string();
        assert!(e.contains("is not for the key"), "{e}");
        std::fs::write(d.join("junk"), "hello").unwrap();
        let e = Identity::load(&d.join("junk"), &c).unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = Identity::load(&k, &d.join("junk")).unwrap_err().to_string();
        assert!(e.contains("PEM certificate"), "{e}");
        let e = Identity::load(&d.join("missing"), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_preferred_kind_is_one_this_openssl_can_use() {
        let id = Identity::generate(preferred_kind(), "x").unwrap();
        id.check_usable().unwrap();
        let ed = Identity::generate(KeyKind::Ed25519, "x").unwrap();
        assert_eq!(ed.check_usable().is_ok(), ed25519_usable());
    }
}
