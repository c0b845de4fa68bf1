//! Reading current mapping state from the parent and checking a command set
//! against it (seed s3.7: "trialling mapping changes ... without actually executing
//! the changes").
//!
//! The UAS does not keep the master database (the RUAS does, s4.3); it reads the
//! micronets that intersect the set's ranges (`GET /v1/mapping`, spec: http.md),
//! loads them into a mapping table of the set's MAB, and lets the mapping engine
//! (`ivip::table`) check the set there. A command's validity depends only on the
//! micronets that intersect its range, and those are read whole, so the partial
//! table gives the same verdict as the master would at the moment of the read.
//! The RUAS checks again when it applies the set.

use ivip_wire::addr::unit_addr;
use ivip_wire::{Command, Etr, Family, Mab};

use crate::range::UnitRange;
use crate::uas::api::{ChangedJson, MappingAnswer, Micronet};
use crate::uas::forward::{ForwardError, ParentLink};

/// Pages of one mapping read at most (each up to 10,000 micronets).
pub const MAPPING_PAGES_MAX: usize = 1_000;

/// Why state could not be read.
#[derive(Debug)]
pub enum StateError {
    /// The parent could not be asked.
    Parent(ForwardError),
    /// The parent answered with an error status.
    Refused {
        /// Its status.
        status: u16,
        /// Its body (JSON error, for the user).
        body: Vec<u8>,
    },
    /// The answer does not have the documented shape.
    BadAnswer(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Parent(e) => e.fmt(f),
            StateError::Refused { status, body } => write!(
                f,
                "the parent refused the mapping read ({status}): {}",
                String::from_utf8_lossy(body)
            ),
            StateError::BadAnswer(why) => write!(f, "the parent's mapping answer is bad: {why}"),
        }
    }
}

impl std::error::Error for StateError {}

/// The range as `FIRST-LAST`, which needs no escaping in a query string.
pub fn range_query(r: &UnitRange) -> String {
    let last = r.start + (r.len - 1);
    format!(
        "{}-{}",
        unit_addr(r.family, r.start),
        unit_addr(r.family, last)
    )
}

/// Every micronet intersecting `r`, whole, in order, and the MAB's sequence at the
/// first read.
///
/// # Errors
/// [`StateError`].
pub fn read_range(
    parent: &ParentLink,
    mab: &Mab,
    r: &UnitRange,
) -> Result<(u64, Vec<Micronet>), StateError> {
    let end = r.end();
    let mut from = r.start;
    let mut out: Vec<Micronet> = Vec::new();
    let mut seq = None;
    for _ in 0..MAPPING_PAGES_MAX {
        let page = UnitRange {
            family: r.family,
            start: from,
            len: (end - u128::from(from)) as u64,
        };
        let a = parent
            .get_mapping(&format!("/v1/mapping?range={}", range_query(&page)))
            .map_err(StateError::Parent)?;
        if a.status != 200 {
            return Err(StateError::Refused {
                status: a.status,
                body: a.body,
            });
        }
        let m: MappingAnswer =
            serde_json::from_slice(&a.body).map_err(|e| StateError::BadAnswer(e.to_string()))?;
        if m.mab != mab.to_string() {
            return Err(StateError::BadAnswer(format!(
                "asked for {mab}, got {}",
                m.mab
            )));
        }
        seq.get_or_insert(m.mab_seq);
        for j in &m.micronets {
            let n = j
                .to_micronet(mab)
                .ok_or_else(|| StateError::BadAnswer(format!("bad micronet {j:?}")))?;
            if out
                .last()
                .is_some_and(|p| u128::from(p.start) + u128::from(p.len) > u128::from(n.start))
            {
                if out.last() == Some(&n) {
                    continue; // a page boundary repeats the last micronet
                }
                return Err(StateError::BadAnswer(
                    "micronets overlap or are out of order".into(),
                ));
            }
            out.push(n);
        }
        match (m.truncated, out.last()) {
            (true, Some(last)) => {
                let next = u128::from(last.start) + u128::from(last.len);
                if next >= end || next <= u128::from(from) {
                    break;
                }
                from = next as u64;
            }
            (true, None) => {
                return Err(StateError::BadAnswer("truncated but empty".into()));
            }
            (false, _) => break,
        }
    }
    Ok((seq.unwrap_or(0), out))
}

/// The ranges the commands name, merged where they overlap or touch.
pub fn command_span(family: Family, cmds: &[Command]) -> Vec<UnitRange> {
    let mut rs: Vec<(u128, u128)> = cmds
        .iter()
        .map(|c| {
            let (s, l) = c.range();
            (u128::from(s), u128::from(s) + u128::from(l))
        })
        .collect();
    rs.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (s, e) in rs {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
        .into_iter()
        .map(|(s, e)| UnitRange {
            family,
            start: s as u64,
            len: (e - s) as u64,
        })
        .collect()
}

/// Why a set does not fit the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRejection {
    /// The failing command's index.
    pub command: usize,
    /// A short token (`no_such_micronet`, `not_zero`, ...).
    pub reason: String,
    /// For people.
    pub detail: String,
}

/// Check `cmds` against the micronets read ([`read_range`]) with the mapping
/// engine; the ranges whose mapping would change, in their final state.
///
/// # Errors
/// [`SetRejection`] naming the failing command.
pub fn check_set(
    mab: &Mab,
    current: &[Micronet],
    cmds: &[Command],
) -> Result<Vec<ChangedJson>, SetRejection> {
    crate::uas::engine::check(mab, current, cmds)
}

/// A changed range as JSON.
pub fn changed_json(family: Family, start: u64, len: u64, etr: Option<Etr>) -> ChangedJson {
    ChangedJson {
        start: unit_addr(family, start),
        len,
        etr: etr.map(|e| e.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_and_query_as_first_last() {
        let c = |s, l| Command::Join { start: s, len: l };
        let v = command_span(Family::V4, &[c(20, 4), c(0, 4), c(4, 2), c(30, 1)]);
        let shown: Vec<String> = v.iter().map(|r| r.to_string()).collect();
        assert_eq!(shown, ["0.0.0.0+6", "0.0.0.20+4", "0.0.0.30+1"]);
        assert_eq!(
            range_query(&"20.0.0.4+4".parse().unwrap()),
            "20.0.0.4-20.0.0.7"
        );
        let r6: UnitRange = "2001:db8:0:10::+16".parse().unwrap();
        assert_eq!(range_query(&r6), "2001:db8:0:10::-2001:db8:0:1f::");
        assert_eq!(range_query(&r6).parse::<UnitRange>().unwrap(), r6);
    }
}
