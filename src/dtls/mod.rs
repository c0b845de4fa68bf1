//! DTLS on every FMS UDP hop: RUAS → level-0 replicators, replicator ↔
//! replicator, replicators → QSDs, MPSes and recorders (seed s2.1, s4.2; issue 9).
//!
//! What it is: a link layer between the event loop's socket and the role cores.
//! Every node has an identity (a key and a self-signed certificate,
//! [`identity`]); peers are pinned by key fingerprint, as SSH pins host keys
//! ([`pins`]). A [`Link`] holds one socket's associations keyed by peer address
//! and turns received datagrams into plaintexts and the cores' datagrams into
//! records ([`link`]); `net::UdpLoop` drives it when configured with one, so
//! cores see only authenticated plaintext from pinned peers and never change.
//! End-to-end Ed25519 signatures on payloads stay: DTLS adds per-link
//! authentication and privacy, so no datagram from an unknown sender is ever
//! replicated.
//!
//! What it is not: the query protocol's security (ITR queries stay plain UDP,
//! spec: query.md), a CA, or a DTLS implementation (OpenSSL does the protocol;
//! [`ffi`] holds the four raw calls the `openssl` crate lacks).
//!
//! spec: dtls.md. Reading order: [`identity`], [`pins`], [`config`], [`link`],
//! [`metrics`], [`blocking`] (a one-thread client for tools and tests), [`tls`]
//! (HTTPS with the same identities).

pub mod blocking;
pub mod config;
mod ffi;
pub mod identity;
pub mod link;
pub mod metrics;
pub mod pins;
pub mod tls;

pub use blocking::BlockingSocket;
pub use config::{DtlsConfig, DtlsSettings, PeerConfig, Security};
pub use identity::{Fingerprint, Identity, IdentityError, KeyKind};
pub use link::{Limits, Link, Opened, Sealed, Sealer, Wire};
pub use metrics::{Drop, DtlsMetrics, Outcome};
pub use pins::{AddrPattern, Pin, PinError, PinSet};

#[cfg(test)]
mod tests;
