//! bytes → SumucView::new_checked → Sumuc → emit → must equal the input.
#![no_main]
use ivip_wire::sumuc::SumucView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = SumucView::new_checked(data) {
        let s = view.to_owned();
        let v = s.to_vec().expect("a parsed SUMUC re-encodes");
        assert_eq!(v, data);
        assert_eq!(SumucView::new_checked(&v).expect("re-parse").to_owned(), s);
    }
});
