//! The micronet rules applied to a command set over the state a UAS has read
//! (spec: commands.md §2, §2.1, §4; seed s3.4, s3.7).
//!
//! A dry run only: the state is a small map of the micronets that intersect the
//! set's ranges, built for one check and thrown away. It is not the mapping table
//! of the RUAS and QSDs (`ivip::table`), which keeps whole MABs; the UAS uses that
//! engine's rules and error reasons so that what a dry run accepts, the RUAS
//! accepts against the same state.

use std::collections::BTreeMap;

use ivip_wire::{Command, Etr, Mab};

use crate::uas::api::{ChangedJson, Micronet};
use crate::uas::state::{SetRejection, changed_json};

/// A micronet's bounds and ETR, keyed by start.
type Map = BTreeMap<u64, (u64, Etr)>;

fn end(start: u64, len: u64) -> u128 {
    u128::from(start) + u128::from(len)
}

fn reject(command: usize, reason: &str, detail: String) -> SetRejection {
    SetRejection {
        command,
        reason: reason.into(),
        detail,
    }
}

/// Micronets overlapping `[s, e)`, as (start, len, etr).
fn overlapping(m: &Map, s: u64, e: u128) -> Vec<(u64, u64, Etr)> {
    let mut out = Vec::new();
    if let Some((&ps, &(pl, pe))) = m.range(..s).next_back()
        && end(ps, pl) > u128::from(s)
    {
        out.push((ps, pl, pe));
    }
    for (&ms, &(ml, me)) in m.range(s..) {
        if u128::from(ms) >= e {
            break;
        }
        out.push((ms, ml, me));
    }
    out
}

fn apply_one(m: &mut Map, mab: &Mab, i: usize, c: &Command) -> Result<(), SetRejection> {
    let (s, l) = c.range();
    let family = mab.family();
    let show = |s: u64, l: u64| format!("{}+{l}", ivip_wire::addr::unit_addr(family, s));
    if !mab.contains_range(s, l) {
        return Err(reject(
            i,
            "outside_mab",
            format!("command {i}: {} is not inside MAB {mab}", show(s, l)),
        ));
    }
    if let Some(etr) = c.etr()
        && etr.family() != family
    {
        return Err(reject(
            i,
            "wrong_family",
            format!("command {i}: ETR {etr} is not {family}"),
        ));
    }
    let exact = |m: &Map| -> Result<Etr, SetRejection> {
        match m.get(&s) {
            Some(&(len, etr)) if len == l => Ok(etr),
            _ => Err(reject(
                i,
                "no_such_micronet",
                format!("command {i}: no micronet is exactly {}", show(s, l)),
            )),
        }
    };
    match *c {
        Command::SetEtr { etr, .. } => {
            exact(m)?;
            m.insert(s, (l, etr));
        }
        Command::Delete { .. } => {
            exact(m)?;
            m.remove(&s);
        }
        Command::Split { at, .. } => {
            let etr = exact(m)?;
            if !etr.is_zero() {
                return Err(reject(
                    i,
                    "not_zero",
                    format!(
                        "command {i}: micronet {} is mapped to {etr}; map it to zero before splitting",
                        show(s, l)
                    ),
                ));
            }
            m.insert(s, (at, etr));
            m.insert(s + at, (l - at, etr));
        }
        Command::Join { .. } => {
            let parts = overlapping(m, s, end(s, l));
            let mut at = u128::from(s);
            for &(ps, pl, _) in &parts {
                if u128::from(ps) != at {
                    return Err(reject(
                        i,
                        "not_tiled",
                        format!(
                            "command {i}: {} is not exactly tiled by micronets",
                            show(s, l)
                        ),
                    ));
                }
                at = end(ps, pl);
            }
            if at != end(s, l) {
                return Err(reject(
                    i,
                    "not_tiled",
                    format!(
                        "command {i}: {} is not exactly tiled by micronets",
                        show(s, l)
                    ),
                ));
            }
            if parts.len() < 2 {
                return Err(reject(
                    i,
                    "too_few",
                    format!("command {i}: joining needs two or more micronets"),
                ));
            }
            if let Some(&(ps, pl, pe)) = parts.iter().find(|p| !p.2.is_zero()) {
                return Err(reject(
                    i,
                    "not_zero",
                    format!(
                        "command {i}: micronet {} is mapped to {pe}; map it to zero before joining",
                        show(ps, pl)
                    ),
                ));
            }
            for &(ps, _, _) in &parts {
                m.remove(&ps);
            }
            m.insert(s, (l, Etr::zero(family)));
        }
        Command::Define { etr, .. } => {
            let e = end(s, l);
            let parts = overlapping(m, s, e);
            if let Some(&(ps, pl, pe)) = parts.iter().find(|p| !p.2.is_zero()) {
                return Err(reject(
                    i,
                    "not_free",
                    format!(
                        "command {i}: {} overlaps micronet {} mapped to {pe}; new micronets go only in unassigned or zero-mapped space",
                        show(s, l),
                        show(ps, pl)
                    ),
                ));
            }
            for &(ps, pl, pe) in &parts {
                m.remove(&ps);
                if ps < s {
                    m.insert(ps, (s - ps, pe));
                }
                let pend = end(ps, pl);
                if pend > e {
                    m.insert(e as u64, ((pend - e) as u64, pe));
                }
            }
            m.insert(s, (l, etr));
        }
    }
    Ok(())
}

/// A micronet as (start, len, etr).
type Net = (u64, u64, Etr);

/// What a unit is in: a micronet, or unassigned.
fn state_at(m: &Map, u: u64) -> Option<Net> {
    let (&s, &(l, e)) = m.range(..=u).next_back()?;
    (end(s, l) > u128::from(u)).then_some((s, l, e))
}

/// Apply `cmds` to `current` (micronets sorted by start) and return the changed
/// ranges in their final state (commands.md §2.1).
///
/// # Errors
/// [`SetRejection`] naming the first failing command and why.
pub fn check(
    mab: &Mab,
    current: &[Micronet],
    cmds: &[Command],
) -> Result<Vec<ChangedJson>, SetRejection> {
    apply(mab, current, cmds).map(|(_, c)| c)
}

/// As [`check`], also returning the micronets after the set, in order.
///
/// # Errors
/// [`SetRejection`] naming the first failing command and why.
pub fn apply(
    mab: &Mab,
    current: &[Micronet],
    cmds: &[Command],
) -> Result<(Vec<Micronet>, Vec<ChangedJson>), SetRejection> {
    let before: Map = current.iter().map(|m| (m.start, (m.len, m.etr))).collect();
    let mut after = before.clone();
    for (i, c) in cmds.iter().enumerate() {
        apply_one(&mut after, mab, i, c)?;
    }
    // Elementary segments: every boundary of either state inside the touched span.
    let mut cuts: Vec<u128> = Vec::new();
    for c in cmds {
        let (s, l) = c.range();
        cuts.push(u128::from(s));
        cuts.push(end(s, l));
    }
    for (&s, &(l, _)) in before.iter().chain(after.iter()) {
        cuts.push(u128::from(s));
        cuts.push(end(s, l));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u64, u64, Option<Net>)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a >= mab.end() {
            break;
        }
        let u = a as u64;
        let was = state_at(&before, u);
        let now = state_at(&after, u);
        if was == now {
            continue;
        }
        let len = (b - a) as u64;
        match out.last_mut() {
            Some(last) if end(last.0, last.1) == a && last.2 == now => last.1 += len,
            _ => out.push((u, len, now)),
        }
    }
    let changed = out
        .into_iter()
        .map(|(s, l, st)| changed_json(mab.family(), s, l, st.map(|x| x.2)))
        .collect();
    let nets = after
        .into_iter()
        .map(|(start, (len, etr))| Micronet { start, len, etr })
        .collect();
    Ok((nets, changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const S: u64 = 0x1400_0000;

    fn mab() -> Mab {
        "20.0.0.0/14".parse().unwrap()
    }

    fn etr(s: &str) -> Etr {
        Etr::from(s.parse::<IpAddr>().unwrap())
    }

    fn mn(start: u64, len: u64, e: &str) -> Micronet {
        Micronet {
            start: S + start,
            len,
            etr: etr(e),
        }
    }

    fn shown(v: &[ChangedJson]) -> Vec<String> {
        v.iter()
            .map(|c| {
                format!(
                    "{}+{}={}",
                    c.start,
                    c.len,
                    c.etr.map_or("-".into(), |e| e.to_string())
                )
            })
            .collect()
    }

    #[test]
    fn the_s3_7_example_zero_split_map() {
        // commands.md §2: zero an 8-long micronet, split into three, map each.
        let cur = [mn(0, 8, "11.0.0.1")];
        let z = Etr::zero(ivip_wire::Family::V4);
        let cmds = [
            Command::SetEtr {
                start: S,
                len: 8,
                etr: z,
            },
            Command::Split {
                start: S,
                len: 8,
                at: 2,
            },
            Command::Split {
                start: S + 2,
                len: 6,
                at: 3,
            },
            Command::SetEtr {
                start: S,
                len: 2,
                etr: etr("11.0.0.2"),
            },
            Command::SetEtr {
                start: S + 2,
                len: 3,
                etr: etr("11.0.0.3"),
            },
            Command::SetEtr {
                start: S + 5,
                len: 3,
                etr: etr("11.0.0.4"),
            },
        ];
        let c = check(&mab(), &cur, &cmds).unwrap();
        assert_eq!(
            shown(&c),
            [
                "20.0.0.0+2=11.0.0.2",
                "20.0.0.2+3=11.0.0.3",
                "20.0.0.5+3=11.0.0.4"
            ]
        );
    }

    #[test]
    fn each_rule_names_the_failing_command() {
        let cur = [
            mn(0, 4, "11.0.0.1"),
            mn(4, 4, "0.0.0.0"),
            mn(8, 4, "0.0.0.0"),
        ];
        let z = Etr::zero(ivip_wire::Family::V4);
        let r = |cmds: &[Command]| check(&mab(), &cur, cmds).unwrap_err();
        let e = r(&[Command::SetEtr {
            start: S,
            len: 3,
            etr: z,
        }]);
        assert_eq!((e.command, e.reason.as_str()), (0, "no_such_micronet"));
        let e = r(&[
            Command::Join {
                start: S + 4,
                len: 8,
            },
            Command::Split {
                start: S,
                len: 4,
                at: 1,
            },
        ]);
        assert_eq!((e.command, e.reason.as_str()), (1, "not_zero"));
        let e = r(&[Command::Join { start: S, len: 8 }]);
        assert_eq!((e.command, e.reason.as_str()), (0, "not_zero"));
        let e = r(&[Command::Join {
            start: S + 4,
            len: 4,
        }]);
        assert_eq!(e.reason, "too_few");
        let e = r(&[Command::Join {
            start: S + 4,
            len: 9,
        }]);
        assert_eq!(e.reason, "not_tiled");
        let e = r(&[Command::Define {
            start: S + 2,
            len: 4,
            etr: etr("11.0.0.9"),
        }]);
        assert_eq!(e.reason, "not_free");
        let e = r(&[Command::Delete {
            start: 0x1500_0000,
            len: 1,
        }]);
        assert_eq!(e.reason, "outside_mab");
    }

    #[test]
    fn define_keeps_zero_remnants_and_changed_is_exact() {
        let cur = [mn(4, 8, "0.0.0.0")];
        let c = check(
            &mab(),
            &cur,
            &[Command::Define {
                start: S + 6,
                len: 8,
                etr: etr("11.0.0.9"),
            }],
        )
        .unwrap();
        // 6..12 was in the zero micronet 4+8 (other bounds now), 12..14 was unassigned;
        // 4..6 stays zero but is now its own micronet with other bounds.
        assert_eq!(shown(&c), ["20.0.0.4+2=0.0.0.0", "20.0.0.6+8=11.0.0.9"]);
        let c = check(
            &mab(),
            &cur,
            &[Command::Delete {
                start: S + 4,
                len: 8,
            }],
        )
        .unwrap();
        assert_eq!(shown(&c), ["20.0.0.4+8=-"]);
        let c = check(
            &mab(),
            &cur,
            &[
                Command::Split {
                    start: S + 4,
                    len: 8,
                    at: 4,
                },
                Command::Join {
                    start: S + 4,
                    len: 8,
                },
            ],
        )
        .unwrap();
        assert!(c.is_empty(), "split then join changes nothing: {c:?}");
    }
}
