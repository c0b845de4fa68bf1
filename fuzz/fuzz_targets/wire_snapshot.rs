//! bytes → Snapshot::new_checked → SnapshotRepr → emit → must equal the input;
//! and the same bytes as a snapshot file name: parse → display → must equal them.
#![no_main]
use ivip_wire::snapshot::{Snapshot, SnapshotName, SnapshotRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Snapshot::new_checked(data) {
        let _ = s.stream_position();
        let r = SnapshotRepr::parse(&s);
        let v = r.to_vec().expect("a parsed snapshot re-encodes");
        assert_eq!(v, data);
    }
    if let Ok(text) = core::str::from_utf8(data)
        && let Ok(n) = text.parse::<SnapshotName>()
    {
        assert_eq!(n.to_string(), text, "a parsed name prints as it was");
    }
});
