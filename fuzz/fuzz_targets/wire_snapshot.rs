//! bytes → Snapshot::new_checked → SnapshotRepr → emit → must equal the input.
#![no_main]
use ivip_wire::snapshot::{Snapshot, SnapshotRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Snapshot::new_checked(data) {
        let _ = s.stream_position();
        let r = SnapshotRepr::parse(&s);
        let v = r.to_vec().expect("a parsed snapshot re-encodes");
        assert_eq!(v, data);
    }
});
