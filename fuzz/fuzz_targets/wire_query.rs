//! bytes → QueryMessage::parse → emit → must equal the input.
#![no_main]
use ivip_wire::query::QueryMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = QueryMessage::request_nonce(data);
    if let Ok(m) = QueryMessage::parse(data) {
        let v = m.to_vec().expect("a parsed message re-encodes");
        assert_eq!(v, data);
        assert_eq!(QueryMessage::parse(&v), Ok(m));
    }
});
