//! bytes → Bundle::new_checked → BundleRepr → emit → must equal the input.
#![no_main]
use ivip_wire::mps::{Bundle, BundleRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bundle::new_checked(data) {
        let n = b.iter().count();
        let r = BundleRepr::parse(&b);
        let mut v = vec![0u8; r.buffer_len()];
        r.emit(&mut v).expect("a parsed bundle re-encodes");
        assert_eq!(v, data);
        assert!(n <= data.len());
    }
});
