//! bytes → split_record / RecordRepr::parse / peek_client_hello (spec/dtls.md §3).
//! Walking a datagram's records accounts for every byte; what parses as a record
//! re-encodes to the same bytes; a peeked ClientHello agrees with the record it
//! came from; a record built from arbitrary fields either refuses to emit or
//! parses back to itself. Nothing may panic.
#![no_main]
use ivip_wire::dtls::{
    self, ContentType, RECORD_FRAGMENT_MAX, RECORD_HEADER_LEN, RecordRepr, peek_client_hello,
    split_record,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Every record of the datagram, in order: consumed plus rest is the input.
    let mut rest = data;
    while !rest.is_empty() {
        let Ok((r, tail)) = dtls::split_record(rest) else {
            break;
        };
        let consumed = rest.len() - tail.len();
        assert_eq!(consumed, RECORD_HEADER_LEN + r.fragment.len());
        assert!(r.fragment.len() <= RECORD_FRAGMENT_MAX);
        assert!(r.sequence >> 48 == 0);
        let repr = RecordRepr {
            content_type: r.content_type,
            version: r.version,
            epoch: r.epoch,
            sequence: r.sequence,
            fragment: r.fragment.to_vec(),
        };
        assert_eq!(repr.to_vec().as_deref(), Ok(&rest[..consumed]));
        assert_eq!(RecordRepr::parse(&rest[..consumed]).as_ref(), Ok(&repr));
        rest = tail;
    }

    if let Ok(r) = RecordRepr::parse(data) {
        assert_eq!(r.to_vec().as_deref(), Ok(data));
        let mut wrong = vec![0u8; r.buffer_len() + 1];
        assert!(r.emit(&mut wrong).is_err());
        let _ = r.to_string();
    }

    if let Ok(c) = peek_client_hello(data) {
        let (r, _) = split_record(data).expect("a peeked ClientHello is a record");
        assert_eq!((r.content_type, r.epoch), (ContentType::Handshake, 0));
        assert_eq!(c.record_sequence, r.sequence);
        assert!(r.fragment.len() >= dtls::HANDSHAKE_HEADER_LEN + 2 + dtls::RANDOM_LEN);
        assert_eq!(r.fragment[0], dtls::HANDSHAKE_CLIENT_HELLO);
        let body = &r.fragment[dtls::HANDSHAKE_HEADER_LEN..];
        assert_eq!(c.client_version, u16::from_be_bytes([body[0], body[1]]));
        assert_eq!(&c.random[..], &body[2..2 + dtls::RANDOM_LEN]);
        let _ = c.to_string();
    }

    // The emit side: fields taken from the input, fragment the rest of it.
    if data.len() >= 12 {
        let seq = u64::from_be_bytes([
            data[4], data[5], data[6], data[7], data[8], data[9], data[10], data[11],
        ]);
        let r = RecordRepr {
            content_type: ContentType::from_code(20 + data[0] % 4).expect("20..=23"),
            version: u16::from_be_bytes([data[1], data[2]]),
            epoch: u16::from(data[3]),
            sequence: seq >> (data[0] >> 5),
            fragment: data[12..].to_vec(),
        };
        if let Ok(v) = r.to_vec() {
            assert_eq!(v.len(), r.buffer_len());
            assert_eq!(RecordRepr::parse(&v).as_ref(), Ok(&r));
        }
    }
});
