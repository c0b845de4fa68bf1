//! The canonical MAB hash, and writing and loading snapshot files (spec:
//! snapshot.md; seed s4.1.2, s4.2.1). The bytes are `ivip_wire::snapshot`'s; the
//! SHA-256 and Ed25519 work is here.

use ivip_wire::snapshot::{
    ENTRY_V4_LEN, Entries, Layout, Snapshot, SnapshotMeta, entry_len, hash_prefix,
};
use ivip_wire::{Mab, RuasId};
use sha2::{Digest, Sha256};

use super::error::SnapshotError;
use super::mab::{Snap, Table, TableView};
use crate::sign::{KeyPair, PublicKey, Verifier};

/// Bytes encoded per SHA-256 update while hashing a table.
const HASH_CHUNK_BYTES: usize = 64 * 1024;

/// Call `f` with the micronets of `snap` in entry encoding, in order, many entries
/// per call (spec: snapshot.md §3.2: start, length, ETR, big-endian).
fn for_each_entry(snap: &Snap<'_>, mab: &Mab, mut f: impl FnMut(&[u8])) {
    let n = entry_len(mab.family());
    let mut buf = vec![0u8; HASH_CHUNK_BYTES / n * n];
    let mut at = 0;
    let mut runs = snap.runs_from(mab.start());
    while let Some((start, end, etr)) = runs.next_run() {
        let Some(x) = etr else { continue };
        let len = (end - u128::from(start)) as u64;
        let e = &mut buf[at..at + n];
        if n == ENTRY_V4_LEN {
            // A run of an IPv4 table fits 32 bits: it is inside the MAB.
            e[..4].copy_from_slice(&(start as u32).to_be_bytes());
            e[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            e[8..12].copy_from_slice(&(x as u32).to_be_bytes());
        } else {
            e[..8].copy_from_slice(&start.to_be_bytes());
            e[8..16].copy_from_slice(&len.to_be_bytes());
            e[16..32].copy_from_slice(&x.to_be_bytes());
        }
        at += n;
        if at == buf.len() {
            f(&buf);
            at = 0;
        }
    }
    if at > 0 {
        f(&buf[..at]);
    }
}

/// spec: snapshot.md §4 — SHA-256 of the prefix and every micronet in entry
/// encoding, ascending.
pub(crate) fn canonical_hash(snap: &Snap<'_>, mab: &Mab, mab_seq: u64, micronets: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(hash_prefix(mab, mab_seq, micronets));
    for_each_entry(snap, mab, |b| h.update(b));
    h.finalize().into()
}

/// Write a signed snapshot file of `snap`, with `ext` (whole extension records,
/// snapshot.md §3.3) after the entries.
fn write(
    snap: &Snap<'_>,
    meta: &SnapshotMeta,
    micronets: u64,
    key: &KeyPair,
    ext: &[u8],
) -> Vec<u8> {
    let layout = Layout {
        family: meta.mab.family(),
        count: micronets,
        ext_len: u32::try_from(ext.len()).unwrap_or(0),
    };
    // The table is in memory, so its snapshot's size fits in usize.
    let total = layout.buffer_len().unwrap_or(0);
    let mut b = vec![0u8; total];
    let sig_at = total - 64;
    let hash_at = sig_at - 32;
    // Cannot fail: the buffer holds a header.
    let _ = meta.emit_header(micronets, layout.ext_len, &mut b);
    let mut at = layout.entries_offset();
    for_each_entry(snap, &meta.mab, |e| {
        // The count is the table's micronet count, so the entries fit exactly.
        if let Some(dst) = b.get_mut(at..at + e.len()) {
            dst.copy_from_slice(e);
        }
        at += e.len();
    });
    let entries_end = at;
    if let Some(dst) = b.get_mut(at..at + layout.ext_len as usize) {
        dst.copy_from_slice(&ext[..layout.ext_len as usize]);
    }
    debug_assert_eq!(at + layout.ext_len as usize, hash_at);
    let mut h = Sha256::new();
    h.update(hash_prefix(&meta.mab, meta.mab_seq, micronets));
    h.update(&b[layout.entries_offset()..entries_end]);
    let hash: [u8; 32] = h.finalize().into();
    b[hash_at..sig_at].copy_from_slice(&hash);
    let sig = key.sign(&b[..sig_at]);
    b[sig_at..].copy_from_slice(&sig);
    b
}

/// Check a snapshot file and build a table from it.
fn load(
    bytes: &[u8],
    verifier: &dyn Verifier,
    ruas_key: &PublicKey,
    expected_mab: Option<Mab>,
) -> Result<(Table, SnapshotMeta), SnapshotError> {
    let s = Snapshot::new_checked(bytes)?;
    let meta = s.meta();
    if let Some(m) = expected_mab
        && m != meta.mab
    {
        return Err(SnapshotError::WrongMab {
            expected: m,
            found: meta.mab,
        });
    }
    verifier
        .verify(ruas_key, s.signed_bytes(), &s.signature())
        .map_err(SnapshotError::Signature)?;
    let (prefix, entries) = s.hash_input();
    let mut h = Sha256::new();
    h.update(prefix);
    h.update(entries);
    let hash: [u8; 32] = h.finalize().into();
    if hash != s.stored_sha256() {
        return Err(SnapshotError::HashMismatch);
    }
    let table = match s.entries() {
        Entries::V4(es) => {
            if let Some(e) = es.iter().find(|e| e.etr == [255; 4]) {
                return Err(SnapshotError::ReservedEtr {
                    start: u64::from(e.start.get()),
                });
            }
            Table::from_runs(
                meta.mab,
                meta.mab_seq,
                es.iter().map(|e| {
                    (
                        u64::from(e.start.get()),
                        u64::from(e.len.get()),
                        u128::from(u32::from_be_bytes(e.etr)),
                    )
                }),
            )
        }
        Entries::V6(es) => Table::from_runs(
            meta.mab,
            meta.mab_seq,
            es.iter()
                .map(|e| (e.start.get(), e.len.get(), u128::from_be_bytes(e.etr))),
        ),
    };
    Ok((table, meta))
}

impl Table {
    /// Write the working state as a signed snapshot file (spec: snapshot.md), at
    /// [`Table::mab_seq`]. The hash inside is [`Table::hash`].
    pub fn write_snapshot(&self, key: &KeyPair, ruas: RuasId, created_us: u64) -> Vec<u8> {
        let meta = SnapshotMeta {
            mab: self.mab(),
            ruas,
            mab_seq: self.mab_seq(),
            created_us,
        };
        write(&self.snap(), &meta, self.micronets(), key, &[])
    }

    /// Load a snapshot file: check its structure, that it is of `expected_mab` (if
    /// given), its signature with `ruas_key`, and its canonical hash; then build the
    /// table at the snapshot's per-MAB sequence. Returns the table and the file's
    /// header fields (RUAS id, creation time).
    ///
    /// # Errors
    /// [`SnapshotError`]: `Malformed` (with the wire error), `WrongMab`,
    /// `Signature`, `HashMismatch`, `ReservedEtr`.
    pub fn load_snapshot(
        bytes: &[u8],
        verifier: &dyn Verifier,
        ruas_key: &PublicKey,
        expected_mab: Option<Mab>,
    ) -> Result<(Table, SnapshotMeta), SnapshotError> {
        load(bytes, verifier, ruas_key, expected_mab)
    }
}

impl TableView {
    /// Write this published version as a signed snapshot file. With
    /// [`super::TableReader::load_owned`] a RUAS writes snapshots on another thread
    /// while its writer goes on applying sets.
    pub fn write_snapshot(&self, key: &KeyPair, ruas: RuasId, created_us: u64) -> Vec<u8> {
        let v = self.version();
        let meta = SnapshotMeta {
            mab: v.mab(),
            ruas,
            mab_seq: v.mab_seq(),
            created_us,
        };
        write(&v.snap(), &meta, v.micronets(), key, &[])
    }

    /// [`TableView::write_snapshot`] with extension records (whole records, e.g.
    /// `ivip_wire::snapshot::StreamPosition::to_record`).
    pub fn write_snapshot_with(
        &self,
        key: &KeyPair,
        ruas: RuasId,
        created_us: u64,
        ext: &[u8],
    ) -> Vec<u8> {
        let v = self.version();
        let meta = SnapshotMeta {
            mab: v.mab(),
            ruas,
            mab_seq: v.mab_seq(),
            created_us,
        };
        write(&v.snap(), &meta, v.micronets(), key, ext)
    }
}

#[cfg(test)]
mod ext_tests {
    use super::*;
    use crate::sign::{Ed25519Verifier, KeyPair};
    use ivip_wire::snapshot::{Snapshot, StreamPosition};
    use ivip_wire::{Command, Etr};

    #[test]
    fn stream_position_travels_in_the_file_and_not_in_the_hash() {
        let mab: Mab = "20.0.0.0/14".parse().unwrap();
        let mut t = Table::new(mab);
        t.apply_at(
            3,
            &[Command::Define {
                start: 0x1400_0010,
                len: 4,
                etr: Etr::V4("192.0.2.1".parse().unwrap()),
            }],
        )
        .unwrap();
        t.publish();
        let key = KeyPair::from_seed(&[3; 32]);
        let pos = StreamPosition { epoch: 2, seq: 77 };
        let view = t.reader().load_owned();
        let bytes = view.write_snapshot_with(&key, RuasId::new(1).unwrap(), 5, &pos.to_record());
        let s = Snapshot::new_checked(&bytes).unwrap();
        assert_eq!(s.stream_position(), Some(pos));
        assert_eq!(s.stored_sha256(), t.hash(), "extensions are not hashed");
        let (loaded, meta) =
            Table::load_snapshot(&bytes, &Ed25519Verifier, &key.public(), Some(mab)).unwrap();
        assert_eq!((loaded.hash(), meta.mab_seq), (t.hash(), 3));
    }
}
