//! bytes → HistoryRecord / IndexFile / IndexHeader parsers (spec/history.md).
//! What parses must re-encode to the same bytes; nothing may panic.
#![no_main]
use ivip_wire::history::{self, HistoryRecord, IndexFile, IndexHeader, IndexMeta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = HistoryRecord::parse(data) {
        assert_eq!(r.to_vec().as_deref(), Ok(data));
        let _ = r.to_string();
    }
    if let Ok(f) = IndexFile::parse(data) {
        assert_eq!(f.to_vec().as_deref(), Ok(data));
        let _ = f.to_string();
    }
    if let Ok(h) = IndexHeader::parse(data) {
        let _ = IndexMeta::parse(&h, data.get(64..).unwrap_or(&[]));
        for i in 0..4 {
            let _ = history::parse_block(&h, i, data);
        }
        let _ = h.file_len();
    }
    let _ = ivip_wire::frame::split(data);
});
