//! Records of the RUAS write-ahead log (frames of a kind-1 log, log.md).
//!
//! spec: wal.md. Each frame body is one record: a type byte, then its fields. The
//! log holds every accepted SUMUC verbatim (so the master database and the audit
//! of who asked can be rebuilt), the release of scheduled sets, every payload sent
//! (so the sequence continues exactly after a crash and an unsent tail is sent
//! again), and epoch changes.

use crate::WireError;
use crate::sumuc::SumucView;

/// Record type: a SUMUC accepted into the master database (or scheduled).
pub const WAL_ACCEPTED: u8 = 1;
/// Record type: a scheduled set was applied (or failed) at its execute-at time.
pub const WAL_RELEASED: u8 = 2;
/// Record type: a payload about to be sent.
pub const WAL_PAYLOAD: u8 = 3;
/// Record type: a new epoch starts.
pub const WAL_EPOCH: u8 = 4;

/// One WAL record, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalRecord<'a> {
    /// A SUMUC accepted at `accepted_us`. `mab_seq` is its per-MAB sequence, or 0
    /// when it is scheduled for later (`execute_at_us` in the SUMUC).
    Accepted {
        /// Per-MAB sequence, 0 = scheduled.
        mab_seq: u64,
        /// When it was accepted, µs since the Unix epoch.
        accepted_us: u64,
        /// The SUMUC as received (checked when read back).
        sumuc: &'a [u8],
    },
    /// The scheduled SUMUC `(signer, request_id)` was applied with `mab_seq`, or
    /// failed (`mab_seq` 0) because it no longer fit the master state.
    Released {
        /// The signer of the scheduled SUMUC.
        signer: [u8; 32],
        /// Its request id.
        request_id: u64,
        /// The per-MAB sequence it got; 0 = it failed and was dropped.
        mab_seq: u64,
    },
    /// A payload, logged before it is sent.
    Payload(&'a [u8]),
    /// From here on the RUAS sends in this epoch, from sequence 0.
    Epoch(u32),
}

impl<'a> WalRecord<'a> {
    /// Parse one frame body.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::LengthMismatch`],
    /// [`WireError::UnknownType`], and SUMUC errors for an accepted record.
    pub fn parse(b: &'a [u8]) -> Result<WalRecord<'a>, WireError> {
        let (&t, rest) = b.split_first().ok_or(WireError::Truncated)?;
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&rest[i..i + 8]);
            u64::from_be_bytes(a)
        };
        match t {
            WAL_ACCEPTED => {
                if rest.len() < 16 {
                    return Err(WireError::Truncated);
                }
                let sumuc = &rest[16..];
                SumucView::new_checked(sumuc)?;
                Ok(WalRecord::Accepted {
                    mab_seq: u64_at(0),
                    accepted_us: u64_at(8),
                    sumuc,
                })
            }
            WAL_RELEASED => {
                if rest.len() != 48 {
                    return Err(WireError::LengthMismatch);
                }
                let mut signer = [0u8; 32];
                signer.copy_from_slice(&rest[..32]);
                Ok(WalRecord::Released {
                    signer,
                    request_id: u64_at(32),
                    mab_seq: u64_at(40),
                })
            }
            WAL_PAYLOAD => {
                crate::payload::peek_id(rest)?;
                Ok(WalRecord::Payload(rest))
            }
            WAL_EPOCH => {
                if rest.len() != 4 {
                    return Err(WireError::LengthMismatch);
                }
                Ok(WalRecord::Epoch(u32::from_be_bytes([
                    rest[0], rest[1], rest[2], rest[3],
                ])))
            }
            _ => Err(WireError::UnknownType),
        }
    }

    /// Encode into a new vector (a frame body).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            WalRecord::Accepted {
                mab_seq,
                accepted_us,
                sumuc,
            } => {
                v.push(WAL_ACCEPTED);
                v.extend_from_slice(&mab_seq.to_be_bytes());
                v.extend_from_slice(&accepted_us.to_be_bytes());
                v.extend_from_slice(sumuc);
            }
            WalRecord::Released {
                signer,
                request_id,
                mab_seq,
            } => {
                v.push(WAL_RELEASED);
                v.extend_from_slice(signer);
                v.extend_from_slice(&request_id.to_be_bytes());
                v.extend_from_slice(&mab_seq.to_be_bytes());
            }
            WalRecord::Payload(p) => {
                v.push(WAL_PAYLOAD);
                v.extend_from_slice(p);
            }
            WalRecord::Epoch(e) => {
                v.push(WAL_EPOCH);
                v.extend_from_slice(&e.to_be_bytes());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_records_round_trip_and_reject() {
        for r in [
            WalRecord::Released {
                signer: [4; 32],
                request_id: 9,
                mab_seq: 12,
            },
            WalRecord::Epoch(3),
        ] {
            assert_eq!(WalRecord::parse(&r.to_vec()), Ok(r));
        }
        assert_eq!(WalRecord::parse(&[]), Err(WireError::Truncated));
        assert_eq!(WalRecord::parse(&[9]), Err(WireError::UnknownType));
        assert_eq!(
            WalRecord::parse(&[WAL_EPOCH, 0, 0, 1]),
            Err(WireError::LengthMismatch)
        );
        assert_eq!(
            WalRecord::parse(&[WAL_PAYLOAD, 1, 1]),
            Err(WireError::Truncated)
        );
    }
}
