//! The JSON shapes of the UAS API and the one-line text form of a command used by
//! `ivip update` and the audit trail.
//!
//! spec: uas-api.md §4. Pure data and conversions: no I/O. Addresses are text,
//! ranges are `START+LEN` (or `FIRST-LAST` on input), lengths in units.

use std::fmt;
use std::net::IpAddr;

use ivip_wire::addr::{unit_addr, unit_of};
use ivip_wire::{Command, Etr, Family, Mab};
use serde::{Deserialize, Serialize};

use crate::range::UnitRange;

/// One command as JSON: `{"op": "set-etr", "range": "20.0.0.4+4", "etr": "192.0.2.1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CommandJson {
    /// Change the ETR of the micronet that is exactly `range`.
    SetEtr {
        /// The micronet.
        range: UnitRange,
        /// The new ETR (`0.0.0.0` / `::` = drop).
        etr: IpAddr,
    },
    /// Make a micronet over unassigned or zero-mapped units.
    Define {
        /// The new micronet.
        range: UnitRange,
        /// Its ETR.
        etr: IpAddr,
    },
    /// Split the zero-mapped micronet `range` after `at` units.
    Split {
        /// The micronet.
        range: UnitRange,
        /// Units in the first part.
        at: u64,
    },
    /// Join the zero-mapped micronets that tile `range`.
    Join {
        /// The range.
        range: UnitRange,
    },
    /// Remove the micronet that is exactly `range`.
    Delete {
        /// The micronet.
        range: UnitRange,
    },
}

impl CommandJson {
    /// The range named.
    pub fn range(&self) -> UnitRange {
        match self {
            CommandJson::SetEtr { range, .. }
            | CommandJson::Define { range, .. }
            | CommandJson::Split { range, .. }
            | CommandJson::Join { range }
            | CommandJson::Delete { range } => *range,
        }
    }

    /// The wire command. The ETR's family is checked later (a wrong family is a
    /// refused ETR, not a parse error).
    pub fn to_command(&self) -> Command {
        let r = self.range();
        let (start, len) = (r.start, r.len);
        match *self {
            CommandJson::SetEtr { etr, .. } => Command::SetEtr {
                start,
                len,
                etr: Etr::from(etr),
            },
            CommandJson::Define { etr, .. } => Command::Define {
                start,
                len,
                etr: Etr::from(etr),
            },
            CommandJson::Split { at, .. } => Command::Split { start, len, at },
            CommandJson::Join { .. } => Command::Join { start, len },
            CommandJson::Delete { .. } => Command::Delete { start, len },
        }
    }

    /// From a wire command of `family`.
    pub fn from_command(family: Family, c: &Command) -> CommandJson {
        let (start, len) = c.range();
        let range = UnitRange { family, start, len };
        match *c {
            Command::SetEtr { etr, .. } => CommandJson::SetEtr {
                range,
                etr: etr.ip(),
            },
            Command::Define { etr, .. } => CommandJson::Define {
                range,
                etr: etr.ip(),
            },
            Command::Split { at, .. } => CommandJson::Split { range, at },
            Command::Join { .. } => CommandJson::Join { range },
            Command::Delete { .. } => CommandJson::Delete { range },
        }
    }

    /// Parse the text form from words: `set-etr RANGE ETR`, `define RANGE ETR`,
    /// `split RANGE at N`, `join RANGE`, `delete RANGE`. Returns the command and
    /// the words used.
    ///
    /// # Errors
    /// A sentence naming the word that is wrong.
    pub fn parse_words(words: &[&str]) -> Result<(CommandJson, usize), String> {
        let op = *words.first().ok_or("expected a command")?;
        let range = |i: usize| -> Result<UnitRange, String> {
            let w = words
                .get(i)
                .ok_or_else(|| format!("`{op}` needs a range (START+LEN or FIRST-LAST)"))?;
            w.parse::<UnitRange>().map_err(|e| format!("`{op}`: {e}"))
        };
        let ip = |i: usize| -> Result<IpAddr, String> {
            let w = words
                .get(i)
                .ok_or_else(|| format!("`{op}` needs an ETR address"))?;
            w.parse::<IpAddr>()
                .map_err(|_| format!("`{op}`: `{w}` is not an IP address"))
        };
        match op {
            "set-etr" => Ok((
                CommandJson::SetEtr {
                    range: range(1)?,
                    etr: ip(2)?,
                },
                3,
            )),
            "define" => Ok((
                CommandJson::Define {
                    range: range(1)?,
                    etr: ip(2)?,
                },
                3,
            )),
            "split" => {
                let r = range(1)?;
                if words.get(2) != Some(&"at") {
                    return Err("write `split RANGE at N`".into());
                }
                let at = words
                    .get(3)
                    .and_then(|w| w.parse::<u64>().ok())
                    .ok_or("`split RANGE at N`: N is a number of units")?;
                Ok((CommandJson::Split { range: r, at }, 4))
            }
            "join" => Ok((CommandJson::Join { range: range(1)? }, 2)),
            "delete" => Ok((CommandJson::Delete { range: range(1)? }, 2)),
            other => Err(format!(
                "unknown command `{other}` (set-etr, define, split, join, delete)"
            )),
        }
    }

    /// Parse a whole sequence of text commands.
    ///
    /// # Errors
    /// As [`CommandJson::parse_words`], with the command's position.
    pub fn parse_all(words: &[&str]) -> Result<Vec<CommandJson>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < words.len() {
            let (c, n) = CommandJson::parse_words(&words[at..])
                .map_err(|e| format!("command {}: {e}", out.len()))?;
            out.push(c);
            at += n;
        }
        Ok(out)
    }
}

impl fmt::Display for CommandJson {
    /// The text form: `set-etr 20.0.0.4+4 192.0.2.1`, `split 20.0.0.4+4 at 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandJson::SetEtr { range, etr } => write!(f, "set-etr {range} {etr}"),
            CommandJson::Define { range, etr } => write!(f, "define {range} {etr}"),
            CommandJson::Split { range, at } => write!(f, "split {range} at {at}"),
            CommandJson::Join { range } => write!(f, "join {range}"),
            CommandJson::Delete { range } => write!(f, "delete {range}"),
        }
    }
}

/// The body of `POST /v1/commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsRequest {
    /// The set, executed in order and as one.
    pub commands: Vec<CommandJson>,
    /// Check against current state and sign nothing, send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Execute at this time (µs since the Unix epoch); 0 = at once.
    #[serde(default)]
    pub execute_at_us: u64,
}

/// The body of `POST /v1/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// A micronet as JSON (the RUAS's `GET /v1/mapping` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicronetJson {
    /// First address.
    pub start: IpAddr,
    /// Length in units.
    pub len: u64,
    /// ETR (`0.0.0.0` = drop).
    pub etr: IpAddr,
}

/// A changed range: `etr` null when it became unassigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedJson {
    /// First address.
    pub start: IpAddr,
    /// Length in units.
    pub len: u64,
    /// Final ETR, or null for unassigned.
    pub etr: Option<IpAddr>,
}

/// The RUAS's answer to `GET /v1/mapping` (spec: http.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingAnswer {
    /// The MAB.
    pub mab: String,
    /// Its sequence number at the time of the read.
    pub mab_seq: u64,
    /// Micronets intersecting the range, whole, in order.
    pub micronets: Vec<MicronetJson>,
    /// More follow: ask again from after the last one.
    pub truncated: bool,
}

/// A micronet in units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micronet {
    /// First unit.
    pub start: u64,
    /// Units.
    pub len: u64,
    /// ETR.
    pub etr: Etr,
}

impl MicronetJson {
    /// In units, checked against `mab`'s family.
    pub fn to_micronet(&self, mab: &Mab) -> Option<Micronet> {
        let (f, start) = unit_of(self.start);
        let etr = Etr::from(self.etr);
        if f != mab.family() || etr.family() != f || self.len == 0 {
            return None;
        }
        Some(Micronet {
            start,
            len: self.len,
            etr,
        })
    }

    /// From units.
    pub fn from_micronet(family: Family, m: &Micronet) -> MicronetJson {
        MicronetJson {
            start: unit_addr(family, m.start),
            len: m.len,
            etr: m.etr.ip(),
        }
    }
}

/// A JSON error body: `{"error": CODE, "detail": TEXT}` plus the failing
/// command's index and reason where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    /// Stable token.
    pub error: String,
    /// For people.
    pub detail: String,
    /// Index of the failing command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<usize>,
    /// Short reason token (`private`, `not_zero`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_from_json_and_text_alike() {
        let j = r#"{"commands": [
            {"op": "set-etr", "range": "20.0.0.4+4", "etr": "0.0.0.0"},
            {"op": "split", "range": "20.0.0.4-20.0.0.7", "at": 1},
            {"op": "join", "range": "20.0.0.4+4"},
            {"op": "define", "range": "20.0.0.4+4", "etr": "11.0.0.1"},
            {"op": "delete", "range": "20.0.0.4+4"}
        ], "dry_run": true}"#;
        let r: CommandsRequest = serde_json::from_str(j).unwrap();
        assert!(r.dry_run);
        let text = "set-etr 20.0.0.4+4 0.0.0.0 split 20.0.0.4+4 at 1 join 20.0.0.4+4 \
                    define 20.0.0.4+4 11.0.0.1 delete 20.0.0.4+4";
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(CommandJson::parse_all(&words).unwrap(), r.commands);
        let shown: Vec<String> = r.commands.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown[1], "split 20.0.0.4+4 at 1");
        for c in &r.commands {
            assert_eq!(&CommandJson::from_command(Family::V4, &c.to_command()), c);
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        assert!(
            serde_json::from_str::<CommandsRequest>(r#"{"commands": [{"op": "fly"}]}"#).is_err()
        );
        assert!(
            serde_json::from_str::<CommandsRequest>(
                r#"{"commands": [{"op": "join", "range": "20.0.0.4+4", "x": 1}]}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<CommandsRequest>(r#"{"commands": [], "bogus": 1}"#).is_err()
        );
        assert!(CommandJson::parse_all(&["split", "20.0.0.4+4", "1"]).is_err());
        assert!(CommandJson::parse_all(&["set-etr", "20.0.0.4+4"]).is_err());
        assert!(CommandJson::parse_all(&["fly"]).is_err());
    }
}
