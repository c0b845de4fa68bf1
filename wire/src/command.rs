//! Mapping commands: the ordered steps of a command set (seed s3.4, s3.7, s4.3).
//!
//! spec: commands.md. A command set is a list of these for one MAB, executed in
//! order and as one. The wire format of one command is an opcode byte followed by
//! unit numbers (4 bytes each for IPv4, 8 for IPv6) and, where present, an ETR
//! (4 or 16 bytes). The family comes from the MAB the set belongs to; it is never
//! repeated per command.
//!
//! This module checks only what the bytes alone can show (opcode, non-empty range
//! inside the address space, split offset inside the micronet). Whether a command
//! fits the current mapping is the mapping engine's business (`ivip::table`).

use core::fmt;

use crate::WireError;
use crate::addr::{Etr, Family, check_range, read_unit, unit_addr, write_unit};

/// One mapping command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Change the ETR of the existing micronet that starts at `start` and is exactly
    /// `len` units long.
    SetEtr {
        /// First unit of the micronet.
        start: u64,
        /// Its length in units.
        len: u64,
        /// The new mapping (zero means drop).
        etr: Etr,
    },
    /// Make a new micronet over units that are unassigned or in micronets mapped to
    /// zero; what remains of those zero micronets stays, mapped to zero.
    Define {
        /// First unit of the new micronet.
        start: u64,
        /// Its length in units.
        len: u64,
        /// Its mapping (zero is allowed: a defined micronet that drops).
        etr: Etr,
    },
    /// Split the zero-mapped micronet `[start, start + len)` into `[start, start +
    /// at)` and `[start + at, start + len)`, both mapped to zero.
    Split {
        /// First unit of the micronet.
        start: u64,
        /// Its length in units.
        len: u64,
        /// Offset of the second part, `1 <= at < len`.
        at: u64,
    },
    /// Join the two or more adjacent zero-mapped micronets that exactly tile `[start,
    /// start + len)` into one micronet mapped to zero.
    Join {
        /// First unit of the first micronet.
        start: u64,
        /// Total length in units.
        len: u64,
    },
    /// Remove the micronet that starts at `start` and is exactly `len` units long;
    /// its units become unassigned.
    Delete {
        /// First unit of the micronet.
        start: u64,
        /// Its length in units.
        len: u64,
    },
}

/// Opcode of [`Command::SetEtr`].
pub const OP_SET_ETR: u8 = 1;
/// Opcode of [`Command::Define`].
pub const OP_DEFINE: u8 = 2;
/// Opcode of [`Command::Split`].
pub const OP_SPLIT: u8 = 3;
/// Opcode of [`Command::Join`].
pub const OP_JOIN: u8 = 4;
/// Opcode of [`Command::Delete`].
pub const OP_DELETE: u8 = 5;

impl Command {
    /// The opcode byte.
    pub const fn opcode(&self) -> u8 {
        match self {
            Command::SetEtr { .. } => OP_SET_ETR,
            Command::Define { .. } => OP_DEFINE,
            Command::Split { .. } => OP_SPLIT,
            Command::Join { .. } => OP_JOIN,
            Command::Delete { .. } => OP_DELETE,
        }
    }

    /// A short lowercase name (`set-etr`, `define`, `split`, `join`, `delete`).
    pub const fn name(&self) -> &'static str {
        match self {
            Command::SetEtr { .. } => "set-etr",
            Command::Define { .. } => "define",
            Command::Split { .. } => "split",
            Command::Join { .. } => "join",
            Command::Delete { .. } => "delete",
        }
    }

    /// The range of units the command names: `(start, len)`.
    pub const fn range(&self) -> (u64, u64) {
        match *self {
            Command::SetEtr { start, len, .. }
            | Command::Define { start, len, .. }
            | Command::Split { start, len, .. }
            | Command::Join { start, len }
            | Command::Delete { start, len } => (start, len),
        }
    }

    /// The ETR the command carries, if any.
    pub const fn etr(&self) -> Option<Etr> {
        match *self {
            Command::SetEtr { etr, .. } | Command::Define { etr, .. } => Some(etr),
            _ => None,
        }
    }

    /// Bytes this command takes on the wire for `family`.
    pub const fn buffer_len(&self, family: Family) -> usize {
        encoded_len(self.opcode(), family)
    }

    /// Check what the bytes alone can show: the range is non-empty and inside the
    /// family's space, a split offset is inside, the ETR is of `family`.
    ///
    /// # Errors
    /// [`WireError::BadRange`], [`WireError::BadSplit`], [`WireError::BadFamily`].
    pub fn check(&self, family: Family) -> Result<(), WireError> {
        let (start, len) = self.range();
        check_range(family, start, len)?;
        if let Command::Split { at, .. } = *self
            && (at == 0 || at >= len)
        {
            return Err(WireError::BadSplit);
        }
        if let Some(etr) = self.etr()
            && etr.family() != family
        {
            return Err(WireError::BadFamily);
        }
        Ok(())
    }

    /// Decode one command of `family` from the front of `b`; returns it and the
    /// bytes consumed.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::UnknownCommand`], and those of
    /// [`Command::check`].
    pub fn split_from(family: Family, b: &[u8]) -> Result<(Command, usize), WireError> {
        let op = *b.first().ok_or(WireError::Truncated)?;
        let n = encoded_len(op, family);
        if n == 0 {
            return Err(WireError::UnknownCommand);
        }
        if b.len() < n {
            return Err(WireError::Truncated);
        }
        let u = family.unit_len();
        let start = read_unit(family, &b[1..]);
        let len = read_unit(family, &b[1 + u..]);
        let third = 1 + 2 * u;
        let cmd = match op {
            OP_SET_ETR => Command::SetEtr {
                start,
                len,
                etr: Etr::read(family, &b[third..]),
            },
            OP_DEFINE => Command::Define {
                start,
                len,
                etr: Etr::read(family, &b[third..]),
            },
            OP_SPLIT => Command::Split {
                start,
                len,
                at: read_unit(family, &b[third..]),
            },
            OP_JOIN => Command::Join { start, len },
            _ => Command::Delete { start, len },
        };
        cmd.check(family)?;
        Ok((cmd, n))
    }

    /// Encode into the front of `b`, which must hold [`Command::buffer_len`] bytes.
    /// Returns the bytes written.
    ///
    /// # Errors
    /// [`WireError::BufferSize`] when `b` is too short; those of [`Command::check`].
    pub fn emit(&self, family: Family, b: &mut [u8]) -> Result<usize, WireError> {
        self.check(family)?;
        let n = self.buffer_len(family);
        if b.len() < n {
            return Err(WireError::BufferSize);
        }
        let u = family.unit_len();
        let (start, len) = self.range();
        b[0] = self.opcode();
        write_unit(family, start, &mut b[1..]);
        write_unit(family, len, &mut b[1 + u..]);
        let third = 1 + 2 * u;
        match *self {
            Command::SetEtr { etr, .. } | Command::Define { etr, .. } => etr.write(&mut b[third..]),
            Command::Split { at, .. } => write_unit(family, at, &mut b[third..]),
            Command::Join { .. } | Command::Delete { .. } => {}
        }
        Ok(n)
    }

    /// A one-line rendering in the form used by the test vectors:
    /// `command=set-etr start=20.0.0.5 len=1 etr=192.0.2.1`.
    pub fn display(&self, family: Family) -> impl fmt::Display + '_ {
        CommandDisplay { cmd: self, family }
    }
}

/// Bytes a command with `op` takes for `family`; 0 for an unknown opcode.
pub const fn encoded_len(op: u8, family: Family) -> usize {
    let u = family.unit_len();
    match op {
        OP_SET_ETR | OP_DEFINE => 1 + 2 * u + family.etr_len(),
        OP_SPLIT => 1 + 3 * u,
        OP_JOIN | OP_DELETE => 1 + 2 * u,
        _ => 0,
    }
}

struct CommandDisplay<'a> {
    cmd: &'a Command,
    family: Family,
}

impl fmt::Display for CommandDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, len) = self.cmd.range();
        write!(
            f,
            "command={} start={} len={}",
            self.cmd.name(),
            unit_addr(self.family, start),
            len
        )?;
        match *self.cmd {
            Command::SetEtr { etr, .. } | Command::Define { etr, .. } => write!(f, " etr={etr}"),
            Command::Split { at, .. } => write!(f, " at={at}"),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Command lists
// ---------------------------------------------------------------------------

/// A checked, borrowed list of commands of one family: `count` commands that use
/// up exactly the bytes given. Iterating cannot fail once constructed.
#[derive(Debug, Clone, Copy)]
pub struct Commands<'a> {
    family: Family,
    count: u16,
    bytes: &'a [u8],
}

impl<'a> Commands<'a> {
    /// Check that `bytes` holds exactly `count` valid commands of `family`.
    ///
    /// # Errors
    /// [`WireError::Empty`] for `count == 0`; [`WireError::CountOverrun`] when the
    /// commands need more bytes than given; [`WireError::TrailingBytes`] when bytes
    /// are left over; and any error of [`Command::split_from`].
    pub fn new_checked(family: Family, count: u16, bytes: &'a [u8]) -> Result<Self, WireError> {
        if count == 0 {
            return Err(WireError::Empty);
        }
        let mut rest = bytes;
        for _ in 0..count {
            if rest.is_empty() {
                return Err(WireError::CountOverrun);
            }
            let (_, n) = Command::split_from(family, rest).map_err(|e| match e {
                WireError::Truncated => WireError::CountOverrun,
                e => e,
            })?;
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes);
        }
        Ok(Commands {
            family,
            count,
            bytes,
        })
    }

    /// The family of every command.
    pub const fn family(&self) -> Family {
        self.family
    }

    /// Number of commands.
    pub const fn count(&self) -> u16 {
        self.count
    }

    /// The encoded bytes.
    pub const fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Iterate over the commands.
    pub fn iter(&self) -> CommandIter<'a> {
        CommandIter {
            family: self.family,
            rest: self.bytes,
        }
    }
}

impl<'a> IntoIterator for &Commands<'a> {
    type Item = Command;
    type IntoIter = CommandIter<'a>;
    fn into_iter(self) -> CommandIter<'a> {
        self.iter()
    }
}

/// Iterator over a checked [`Commands`] list.
#[derive(Debug, Clone)]
pub struct CommandIter<'a> {
    family: Family,
    rest: &'a [u8],
}

impl Iterator for CommandIter<'_> {
    type Item = Command;
    fn next(&mut self) -> Option<Command> {
        // The list was checked in `Commands::new_checked`; a failure here would mean
        // the bytes changed, which a shared borrow rules out. End quietly anyway.
        let (cmd, n) = Command::split_from(self.family, self.rest).ok()?;
        self.rest = &self.rest[n..];
        Some(cmd)
    }
}

/// Bytes the whole list takes for `family`.
pub fn commands_len(family: Family, cmds: &[Command]) -> usize {
    cmds.iter().map(|c| c.buffer_len(family)).sum()
}

/// Encode a list of commands into the front of `b`; returns bytes written.
///
/// # Errors
/// As [`Command::emit`].
pub fn emit_commands(family: Family, cmds: &[Command], b: &mut [u8]) -> Result<usize, WireError> {
    let mut at = 0;
    for c in cmds {
        at += c.emit(family, b.get_mut(at..).ok_or(WireError::BufferSize)?)?;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(a: [u8; 4]) -> u64 {
        u64::from(u32::from(Ipv4Addr::from(a)))
    }

    #[test]
    fn every_opcode_round_trips() {
        let etr = Etr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let s = v4([20, 0, 0, 5]);
        let cmds = [
            Command::SetEtr {
                start: s,
                len: 1,
                etr,
            },
            Command::Define {
                start: s,
                len: 8,
                etr,
            },
            Command::Split {
                start: s,
                len: 8,
                at: 3,
            },
            Command::Join { start: s, len: 8 },
            Command::Delete { start: s, len: 8 },
        ];
        let mut buf = [0xa5u8; 256];
        let n = emit_commands(Family::V4, &cmds, &mut buf).unwrap();
        assert_eq!(n, commands_len(Family::V4, &cmds));
        let list = Commands::new_checked(Family::V4, 5, &buf[..n]).unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), cmds);
        assert_eq!(
            Commands::new_checked(Family::V4, 6, &buf[..n]).unwrap_err(),
            WireError::CountOverrun
        );
        assert_eq!(
            Commands::new_checked(Family::V4, 4, &buf[..n]).unwrap_err(),
            WireError::TrailingBytes
        );
    }

    #[test]
    fn checks() {
        let bad_split = Command::Split {
            start: 1,
            len: 4,
            at: 4,
        };
        assert_eq!(bad_split.check(Family::V4), Err(WireError::BadSplit));
        let zero = Command::Join { start: 1, len: 0 };
        assert_eq!(zero.check(Family::V4), Err(WireError::BadRange));
        let wrong_family = Command::SetEtr {
            start: 1,
            len: 1,
            etr: Etr::zero(Family::V6),
        };
        assert_eq!(wrong_family.check(Family::V4), Err(WireError::BadFamily));
        assert_eq!(
            Command::split_from(Family::V4, &[9, 0, 0]).unwrap_err(),
            WireError::UnknownCommand
        );
        assert_eq!(
            Command::split_from(Family::V4, &[1, 0, 0]).unwrap_err(),
            WireError::Truncated
        );
    }
}
