//! bytes → Control::parse → to_bytes → must equal the input.
#![no_main]
use ivip_wire::control::Control;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Control::parse(data) {
        assert_eq!(&c.to_bytes()[..], data);
    }
});
