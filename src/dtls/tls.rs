//! HTTPS with the link identities: the MPS and snapshot servers present the
//! node's certificate; clients (QSD and MPS fetchers) accept a server only when
//! its key is pinned for its address.
//!
//! spec: dtls.md §7. TLS 1.2 or later (OpenSSL chooses 1.3 when both sides have
//! it), AEAD suites only on the client side; no host names and no CA: as for
//! DTLS, the pin is the trust. Ports in `ip:port` pin patterns are ignored here
//! (a node's HTTPS port differs from its UDP port).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use openssl::ssl::{
    HandshakeError, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use parking_lot::Mutex;

use super::identity::{Fingerprint, Identity, IdentityError};
use super::pins::{PinError, PinSet};

/// TLS 1.2 suites the client offers (TLS 1.3 suites are all AEAD).
pub const TLS12_CIPHER_LIST: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";

/// What an HTTPS server needs: the certificate and key as PEM.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Vec<u8>,
    /// The fingerprint clients pin.
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({})", self.fingerprint)
    }
}

impl ServerTls {
    /// The server side of `identity`.
    ///
    /// # Errors
    /// OpenSSL could not encode the key or certificate.
    pub fn new(identity: &Identity) -> Result<ServerTls, IdentityError> {
        Ok(ServerTls {
            cert_pem: identity.cert_pem()?,
            key_pem: identity.key_pem()?,
            fingerprint: identity.fingerprint(),
        })
    }
}

/// An HTTPS client that accepts only pinned servers.
pub struct ClientTls {
    ctx: SslContext,
    pins: Arc<PinSet>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls({} pins)", self.pins.pins().len())
    }
}

impl ClientTls {
    /// A client trusting `pins` (it presents no certificate of its own).
    ///
    /// # Errors
    /// OpenSSL failed.
    pub fn new(pins: Arc<PinSet>) -> Result<ClientTls, String> {
        let e = |what: &str, err: openssl::error::ErrorStack| format!("TLS client {what}: {err}");
        let mut b = SslContext::builder(SslMethod::tls_client()).map_err(|x| e("context", x))?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|x| e("min version", x))?;
        b.set_cipher_list(TLS12_CIPHER_LIST)
            .map_err(|x| e("cipher list", x))?;
        b.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_RENEGOTIATION);
        Ok(ClientTls {
            ctx: b.build(),
            pins,
        })
    }

    /// The pins.
    pub fn pins(&self) -> &PinSet {
        &self.pins
    }

    /// Run the TLS handshake on a connected stream to `peer` (its read and write
    /// timeouts bound the handshake).
    ///
    /// # Errors
    /// A sentence naming the peer: its key is not pinned, or the handshake failed.
    pub fn connect(
        &self,
        peer: SocketAddr,
        tcp: TcpStream,
    ) -> Result<SslStream<TcpStream>, String> {
        let mut ssl = Ssl::new(&self.ctx).map_err(|e| format!("TLS: {e}"))?;
        let refused: Arc<Mutex<Option<PinError>>> = Arc::new(Mutex::new(None));
        let (pins, slot) = (self.pins.clone(), refused.clone());
        ssl.set_verify_callback(SslVerifyMode::PEER, move |_preverified, ctx| {
            if ctx.error_depth() != 0 {
                return true;
            }
            let verdict = match ctx.current_cert().map(Fingerprint::of_cert) {
                Some(Ok(fp)) => pins.check(peer, fp, true),
                _ => Err(PinError::NoKey { peer }),
            };
            match verdict {
                Ok(_) => true,
                Err(e) => {
                    *slot.lock() = Some(e);
                    false
                }
            }
        });
        match ssl.connect(tcp) {
            Ok(s) => Ok(s),
            Err(err) => {
                if let Some(pe) = refused.lock().take() {
                    return Err(format!("HTTPS to {peer}: {pe}"));
                }
                Err(match err {
                    HandshakeError::SetupFailure(e) => format!("HTTPS to {peer}: {e}"),
                    HandshakeError::Failure(m) | HandshakeError::WouldBlock(m) => {
                        format!("HTTPS to {peer}: TLS handshake failed: {}", m.error())
                    }
                })
            }
        }
    }
}
