//! bytes → Payload::new_checked → PayloadRepr → emit → must equal the input, and
//! parse again to the same value. peek_id must agree with the full parse.
#![no_main]
use ivip_wire::payload::{Payload, PayloadRepr, peek_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peek = peek_id(data);
    if let Ok(p) = Payload::new_checked(data) {
        assert_eq!(peek, Ok(p.id()));
        let r = PayloadRepr::parse(&p);
        let v = r.to_vec().expect("a parsed payload re-encodes");
        assert_eq!(v, data);
        let again = PayloadRepr::parse(&Payload::new_checked(&v).expect("re-parse"));
        assert_eq!(again, r);
    }
});
