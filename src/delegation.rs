//! Who may change what: the signer of a SUMUC must be a configured child UAS, and
//! every command must lie in ranges delegated to it (seed s4.3: "UAS-Y will only
//! accept update commands if they are signed by one of its branch UASes, and for the
//! particular address range that UAS has been authorised to control").
//!
//! Shared by the RUAS and by every UAS that has children.

use ivip_wire::Family;
use ivip_wire::sumuc::SumucView;

use crate::range::{UnitRange, covered_by};
use crate::sign::{PublicKey, Verifier};

/// A child and its delegated ranges.
#[derive(Debug, Clone)]
pub struct Child {
    /// For logs.
    pub name: String,
    /// Its key.
    pub public_key: PublicKey,
    /// What it may change.
    pub ranges: Vec<UnitRange>,
}

/// Why a SUMUC is not authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The signer is not a configured child.
    UnknownSigner,
    /// The signature does not verify.
    BadSignature,
    /// Signed too long ago (or too far in the future).
    Stale {
        /// Its age in seconds (negative: from the future).
        age_s: i64,
    },
    /// Command `index` touches units not delegated to the signer.
    NotDelegated {
        /// The command's index.
        index: usize,
    },
}

impl Refusal {
    /// The stable error code (spec/http.md).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownSigner => "unknown_signer",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale { .. } => "stale",
            Refusal::NotDelegated { .. } => "not_delegated",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownSigner => f.write_str("the signer is not a configured child UAS"),
            Refusal::BadSignature => {
                f.write_str("the signature does not verify with the signer's key")
            }
            Refusal::Stale { age_s } => write!(
                f,
                "signed {age_s} s ago, outside the replay window; check the signer's clock and resubmit"
            ),
            Refusal::NotDelegated { index } => write!(
                f,
                "command {index} touches addresses not delegated to the signer"
            ),
        }
    }
}

/// Check a parsed SUMUC against the children: signer, signature, freshness,
/// delegation. Returns the child that signed it.
///
/// # Errors
/// [`Refusal`].
pub fn authorise<'c>(
    children: &'c [Child],
    verifier: &dyn Verifier,
    s: &SumucView<'_>,
    now_unix_us: u64,
    replay_window_s: u64,
) -> Result<&'c Child, Refusal> {
    let child = children
        .iter()
        .find(|c| &c.public_key == s.signer())
        .ok_or(Refusal::UnknownSigner)?;
    verifier
        .verify(&child.public_key, s.signed_bytes(), &s.signature())
        .map_err(|_| Refusal::BadSignature)?;
    let age_us = i128::from(now_unix_us) - i128::from(s.header().timestamp_us.get());
    if age_us.unsigned_abs() > u128::from(replay_window_s) * 1_000_000 {
        return Err(Refusal::Stale {
            age_s: (age_us / 1_000_000) as i64,
        });
    }
    let family: Family = s.mab().family();
    for (index, c) in s.commands().iter().enumerate() {
        let (start, len) = c.range();
        if !covered_by(&child.ranges, family, start, len) {
            return Err(Refusal::NotDelegated { index });
        }
    }
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{Ed25519Verifier, KeyPair};
    use ivip_wire::sumuc::Sumuc;
    use ivip_wire::{Command, Etr};

    fn signed(k: &KeyPair, ts: u64, start: u64) -> Vec<u8> {
        let s = Sumuc {
            signer: k.public(),
            request_id: 1,
            timestamp_us: ts,
            execute_at_us: 0,
            mab: "20.0.0.0/14".parse().unwrap(),
            origin: "t".into(),
            commands: vec![Command::SetEtr {
                start,
                len: 4,
                etr: Etr::V4("192.0.2.1".parse().unwrap()),
            }],
            signature: [0; 64],
        };
        let mut b = s.to_vec().unwrap();
        let n = b.len() - 64;
        let sig = k.sign(&b[..n]);
        b[n..].copy_from_slice(&sig);
        b
    }

    #[test]
    fn each_refusal_and_the_accepting_path() {
        let k = KeyPair::from_seed(&[1; 32]);
        let children = vec![Child {
            name: "uas-y".into(),
            public_key: k.public(),
            ranges: vec!["20.1.0.0+65536".parse().unwrap()],
        }];
        let now = 1_000_000_000_000;
        let ok = signed(&k, now, 0x1401_0000);
        let v = SumucView::new_checked(&ok).unwrap();
        assert_eq!(
            authorise(&children, &Ed25519Verifier, &v, now, 300)
                .unwrap()
                .name,
            "uas-y"
        );
        let outside = signed(&k, now, 0x1401_fffe);
        let v = SumucView::new_checked(&outside).unwrap();
        assert_eq!(
            authorise(&children, &Ed25519Verifier, &v, now, 300).unwrap_err(),
            Refusal::NotDelegated { index: 0 }
        );
        let stale = signed(&k, now - 301_000_000, 0x1401_0000);
        let v = SumucView::new_checked(&stale).unwrap();
        assert!(matches!(
            authorise(&children, &Ed25519Verifier, &v, now, 300),
            Err(Refusal::Stale { age_s: 301 })
        ));
        let other = signed(&KeyPair::from_seed(&[2; 32]), now, 0x1401_0000);
        let v = SumucView::new_checked(&other).unwrap();
        assert_eq!(
            authorise(&children, &Ed25519Verifier, &v, now, 300).unwrap_err(),
            Refusal::UnknownSigner
        );
        let mut forged = ok.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let v = SumucView::new_checked(&forged).unwrap();
        assert_eq!(
            authorise(&children, &Ed25519Verifier, &v, now, 300).unwrap_err(),
            Refusal::BadSignature
        );
    }
}
