//! Reading current mapping state from the parent and checking a command set
//! against it (seed s3.7: "trialling mapping changes ... without actually executing
//! the changes").
//!
//! The UAS does not keep the master database (the RUAS does, s4.3); it reads the
//! micronets that intersect the set's ranges (`GET /v1/mapping`, spec: http.md),
//! loads them into a fresh mapping table of the set's MAB, and lets the mapping
//! engine (`ivip::table`, the same engine as the RUAS's master) check the set there. A command's validity depends only on the
//! micronets that intersect its range, and those are read whole, so the partial
//! table gives the same verdict as the master would at the moment of the read.
//! The RUAS checks again when it applies the set.

use ivip_wire::addr::unit_addr;
use ivip_wire::{Command, Etr, Family, Mab};

use crate::range::UnitRange;
use crate::table::{ApplyError, Change, Reason, Table};
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

/// Micronets read for one range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The MAB's sequence number the read reflects.
    pub mab_seq: u64,
    /// Micronets intersecting the range, whole, in order.
    pub micronets: Vec<Micronet>,
    /// More than `max` intersect the range; `micronets` holds the first `max`.
    pub truncated: bool,
}

/// Times a read starts again because the MAB changed between its pages.
pub const READ_RETRIES_MAX: usize = 3;

/// Every micronet intersecting `r` (up to `max`), whole, in order, all from one
/// version of the MAB: a read that spans pages starts again (at most
/// [`READ_RETRIES_MAX`] times) when the MAB's sequence moved between them.
///
/// # Errors
/// [`StateError`].
pub fn read_range(
    parent: &ParentLink,
    mab: &Mab,
    r: &UnitRange,
    max: usize,
) -> Result<Read, StateError> {
    for _ in 0..READ_RETRIES_MAX {
        if let Some(read) = read_once(parent, mab, r, max)? {
            return Ok(read);
        }
    }
    Err(StateError::BadAnswer(format!(
        "{mab} kept changing while its micronets in {r} were read; try again"
    )))
}

/// One attempt; `None` when the sequence moved between pages.
fn read_once(
    parent: &ParentLink,
    mab: &Mab,
    r: &UnitRange,
    max: usize,
) -> Result<Option<Read>, StateError> {
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
        if *seq.get_or_insert(m.mab_seq) != m.mab_seq {
            return Ok(None);
        }
        for j in &m.micronets {
            let n = j
                .to_micronet(mab)
                .filter(|n| mab.contains_range(n.start, n.len))
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
            if out.len() == max {
                return Ok(Some(Read {
                    mab_seq: m.mab_seq,
                    micronets: out,
                    truncated: true,
                }));
            }
            out.push(n);
        }
        let next = match (m.truncated, out.last()) {
            (false, _) => None,
            (true, Some(last)) => Some(u128::from(last.start) + u128::from(last.len)),
            (true, None) => {
                return Err(StateError::BadAnswer("truncated but empty".into()));
            }
        };
        match next {
            Some(n) if n < end && n > u128::from(from) => from = n as u64,
            Some(n) if n <= u128::from(from) => {
                return Err(StateError::BadAnswer(
                    "a truncated page made no progress".into(),
                ));
            }
            _ => {
                return Ok(Some(Read {
                    mab_seq: m.mab_seq,
                    micronets: out,
                    truncated: false,
                }));
            }
        }
    }
    Ok(Some(Read {
        mab_seq: seq.unwrap_or(0),
        micronets: out,
        truncated: true,
    }))
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

/// A stable token for a mapping-engine reason (the `reason` of a 409
/// `invalid_commands` answer; spec: uas-api.md §4.1, commands.md §4).
pub fn reason_code(r: &Reason) -> &'static str {
    r.code()
}

/// Load micronets read from the parent into a fresh table of `mab` (one set of
/// `define`s over unassigned space).
///
/// # Errors
/// [`StateError::BadAnswer`] when they do not form a valid state.
pub fn load_table(mab: &Mab, current: &[Micronet]) -> Result<Table, StateError> {
    let mut t = Table::new(*mab);
    let defs: Vec<Command> = current
        .iter()
        .map(|m| Command::Define {
            start: m.start,
            len: m.len,
            etr: m.etr,
        })
        .collect();
    if !defs.is_empty() {
        t.apply(&defs)
            .map_err(|e| StateError::BadAnswer(format!("the micronets read do not load: {e}")))?;
    }
    Ok(t)
}

/// Check `cmds` with the mapping engine (`ivip::table`) against the micronets
/// read ([`read_range`]); the ranges whose mapping would change, in their final
/// state.
///
/// # Errors
/// `Ok(Err(SetRejection))` naming the failing command; `Err` when the state read
/// is not valid.
pub fn check_set(
    mab: &Mab,
    current: &[Micronet],
    cmds: &[Command],
) -> Result<Result<Vec<ChangedJson>, SetRejection>, StateError> {
    let t = load_table(mab, current)?;
    Ok(t.check(cmds)
        .map(|changes| changes_json(mab.family(), &changes))
        .map_err(|e: ApplyError| SetRejection {
            command: e.index,
            reason: reason_code(&e.reason).into(),
            detail: e.to_string(),
        }))
}

/// Engine changes as JSON (commands.md §2.1).
pub fn changes_json(family: Family, changes: &[Change]) -> Vec<ChangedJson> {
    changes
        .iter()
        .map(|c| changed_json(family, c.start, c.len, c.etr))
        .collect()
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
    use std::net::IpAddr;

    fn etr(s: &str) -> Etr {
        Etr::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn sets_are_checked_by_the_mapping_engine_against_what_was_read() {
        let mab: Mab = "20.0.0.0/14".parse().unwrap();
        let s = 0x1400_0000;
        let cur = [
            Micronet {
                start: s,
                len: 8,
                etr: etr("11.0.0.1"),
            },
            Micronet {
                start: s + 8,
                len: 8,
                etr: etr("0.0.0.0"),
            },
        ];
        // The s3.7 example on the first micronet: zero, split in three, map each.
        let z = Etr::zero(Family::V4);
        let ok = check_set(
            &mab,
            &cur,
            &[
                Command::SetEtr {
                    start: s,
                    len: 8,
                    etr: z,
                },
                Command::Split {
                    start: s,
                    len: 8,
                    at: 2,
                },
                Command::Split {
                    start: s + 2,
                    len: 6,
                    at: 3,
                },
                Command::SetEtr {
                    start: s,
                    len: 2,
                    etr: etr("11.0.0.2"),
                },
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok[0].start.to_string(), "20.0.0.0");
        assert_eq!(ok[0].etr, Some(etr("11.0.0.2").ip()));
        let bad = check_set(&mab, &cur, &[Command::Join { start: s, len: 16 }])
            .unwrap()
            .unwrap_err();
        assert_eq!((bad.command, bad.reason.as_str()), (0, "not_zero"));
        let bad = check_set(
            &mab,
            &cur,
            &[Command::Define {
                start: s + 4,
                len: 8,
                etr: etr("11.0.0.3"),
            }],
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(bad.reason, "overlap");
        let overlapping = [
            cur[0],
            Micronet {
                start: s + 4,
                len: 8,
                etr: z,
            },
        ];
        assert!(check_set(&mab, &overlapping, &[Command::Delete { start: s, len: 8 }]).is_err());
    }

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
