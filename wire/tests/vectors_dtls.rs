//! spec: dtls.md §3 — the link layer's record and ClientHello vectors, read from
//! `spec/vectors/dtls.txt`. Record vectors (`record=` fields) parse to the listed
//! fields, emit back to the same bytes into a buffer prefilled with 0xa5 and
//! re-parse to the same value; ClientHello vectors (`client_hello` fields) are
//! peeked (the link layer never emits a ClientHello itself: OpenSSL does); each
//! invalid vector fails with exactly the listed error. The ClientHellos were
//! captured from OpenSSL 3.0 (DTLS 1.2, the first one and the one that echoes a
//! cookie). Property tests: no input makes either reader panic, and whatever
//! parses as a record re-emits to the same bytes.

mod common;

use common::Vector;
use ivip_wire::WireError;
use ivip_wire::dtls::{
    ContentType, RecordRepr, VERSION_DTLS10, VERSION_DTLS12, peek_client_hello, split_record,
};
use proptest::prelude::*;

/// A first ClientHello from OpenSSL 3.0.19 (no cookie yet).
const CLIENT_HELLO_1: &str = concat!(
    "16feff0000000000000000008c010000800000000000000080fefdd4ecae94f7",
    "2bdd098558438a2280b6ba516dd17e39204cf7be9234633d81282d00000008c0",
    "2bcca9c02c00ff0100004e000b000403000102000a000c000a001d0017001e00",
    "1900180016000000170000000d002a0028040305030603080708080809080a08",
    "0b080408050806040105010601030303010302040205020602",
);
/// The same client's second ClientHello, echoing the cookie "abcd".
const CLIENT_HELLO_2: &str = concat!(
    "16feff00000000000000010090010000840001000000000084fefdd4ecae94f7",
    "2bdd098558438a2280b6ba516dd17e39204cf7be9234633d81282d0004616263",
    "640008c02bcca9c02c00ff0100004e000b000403000102000a000c000a001d00",
    "17001e001900180016000000170000000d002a00280403050306030807080808",
    "09080a080b080408050806040105010601030303010302040205020602",
);
/// The HelloVerifyRequest between them (epoch 0; not a ClientHello).
const HELLO_VERIFY_REQUEST: &str =
    "16feff00000000000000000013030000070000000000000007feff0461626364";

fn hex(s: &str) -> Vec<u8> {
    ivip_wire::hex::decode(s).expect("hex")
}

fn valid_records() -> Vec<(&'static str, RecordRepr)> {
    let r = |content_type, version, epoch, sequence, fragment: Vec<u8>| RecordRepr {
        content_type,
        version,
        epoch,
        sequence,
        fragment,
    };
    vec![
        (
            "application data, epoch 1 (an encrypted ivip datagram)",
            r(
                ContentType::ApplicationData,
                VERSION_DTLS12,
                1,
                7,
                vec![0x5a; 45],
            ),
        ),
        (
            "alert, epoch 1 (an encrypted close_notify)",
            r(
                ContentType::Alert,
                VERSION_DTLS12,
                1,
                0xffff_ffff_ffff,
                vec![0xa5; 26],
            ),
        ),
        (
            "change cipher spec, epoch 0",
            r(ContentType::ChangeCipherSpec, VERSION_DTLS12, 0, 3, vec![1]),
        ),
        (
            "handshake record with a DTLS 1.0 version field and no fragment",
            r(ContentType::Handshake, VERSION_DTLS10, 0, 0, vec![]),
        ),
    ]
}

fn invalid() -> Vec<(&'static str, Vec<u8>, WireError)> {
    let app = valid_records()[0].1.to_vec().unwrap();
    let m = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    let ch = hex(CLIENT_HELLO_1);
    vec![
        ("empty", vec![], WireError::Truncated),
        ("twelve bytes", app[..12].to_vec(), WireError::Truncated),
        (
            "a plain ivip payload (version 1, kind 1)",
            m(&app, &|b| {
                b[0] = 1;
                b[1] = 1;
            }),
            WireError::UnknownType,
        ),
        (
            "content type 24 (heartbeat)",
            m(&app, &|b| b[0] = 24),
            WireError::UnknownType,
        ),
        (
            "TLS, not DTLS (version 0x0303)",
            m(&app, &|b| b[1] = 3),
            WireError::UnsupportedVersion,
        ),
        (
            "length beyond the datagram",
            m(&app, &|b| {
                b.pop();
            }),
            WireError::Truncated,
        ),
        (
            "length above 2^14 + 2048",
            m(&app, &|b| {
                b[11] = 0x48;
                b[12] = 0x01;
            }),
            WireError::TooLong,
        ),
        (
            "a trailing byte after the record",
            m(&app, &|b| b.push(0)),
            WireError::TrailingBytes,
        ),
        (
            "client hello: not a handshake record",
            app.clone(),
            WireError::UnknownType,
        ),
        (
            "client hello: a HelloVerifyRequest",
            hex(HELLO_VERIFY_REQUEST),
            WireError::UnknownType,
        ),
        (
            "client hello: epoch 1",
            m(&ch, &|b| b[4] = 1),
            WireError::UnsupportedVersion,
        ),
        (
            "client hello: cut inside the random",
            m(&ch, &|b| {
                b.truncate(13 + 12 + 2 + 20);
                b[11] = 0;
                b[12] = 34;
            }),
            WireError::Truncated,
        ),
        (
            "client hello: fragment offset 1",
            m(&ch, &|b| b[13 + 8] = 1),
            WireError::BadFragment,
        ),
        (
            "client hello: fragment longer than the message",
            m(&ch, &|b| b[13 + 3] = 0),
            WireError::BadFragment,
        ),
        (
            "client hello: fragment longer than the record",
            m(&ch, &|b| {
                b[13 + 1] = 1;
                b[13 + 9] = 1;
            }),
            WireError::BadFragment,
        ),
        (
            // The random would come from bytes outside the declared fragment.
            "client hello: a zero-length fragment",
            m(&ch, &|b| {
                b[13 + 3] = 0;
                b[13 + 11] = 0;
            }),
            WireError::Truncated,
        ),
    ]
}

/// Vectors for `RecordRepr::parse` end with `record=`; the rest are peeked.
fn is_client_hello_vector(v: &Vector) -> bool {
    v.name.starts_with("client hello")
}

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let mut out = Vec::new();
    for (name, r) in valid_records() {
        out.push(Vector::valid(
            name,
            r.to_vec().unwrap(),
            common::lines(&r.to_string()),
        ));
    }
    for (name, h) in [
        ("client hello: the first, from OpenSSL 3.0", CLIENT_HELLO_1),
        ("client hello: the second, echoing a cookie", CLIENT_HELLO_2),
    ] {
        let b = hex(h);
        let fields = common::lines(&peek_client_hello(&b).unwrap().to_string());
        out.push(Vector::valid(name, b, fields));
    }
    for (name, b, e) in invalid() {
        out.push(Vector {
            name: format!("reject {name}"),
            bytes: b,
            fields: vec![],
            error: Some(e),
        });
    }
    common::write(
        "dtls.txt",
        "DTLS 1.2 record and ClientHello test vectors (spec/dtls.md §3).\n\
         Record: content type, version (2), epoch (2), sequence (6), length (2), fragment.\n\
         Vectors named `client hello...` are read with peek_client_hello, the rest with\n\
         RecordRepr::parse. Invalid vectors are mutations of valid ones.",
        &out,
    );
}

#[test]
fn dtls_vectors_parse_emit_peek_and_reject() {
    let (mut records, mut hellos, mut invalid_n) = (0, 0, 0);
    for v in common::load("dtls.txt") {
        let hello = is_client_hello_vector(&v) || v.name.starts_with("reject client hello");
        match (v.error, hello) {
            (None, false) => {
                let r = RecordRepr::parse(&v.bytes)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                assert_eq!(common::lines(&r.to_string()), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; r.buffer_len()];
                r.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                assert_eq!(RecordRepr::parse(&buf), Ok(r), "{}", v.name);
                records += 1;
            }
            (None, true) => {
                let c = peek_client_hello(&v.bytes)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                assert_eq!(common::lines(&c.to_string()), v.fields, "{}", v.name);
                hellos += 1;
            }
            (Some(e), false) => {
                assert_eq!(RecordRepr::parse(&v.bytes), Err(e), "{}", v.name);
                invalid_n += 1;
            }
            (Some(e), true) => {
                assert_eq!(peek_client_hello(&v.bytes), Err(e), "{}", v.name);
                invalid_n += 1;
            }
        }
    }
    assert!(
        records >= 4 && hellos >= 2 && invalid_n >= 12,
        "{records} records, {hellos} hellos, {invalid_n} invalid"
    );
}

#[test]
fn both_client_hellos_of_one_handshake_carry_the_same_random() {
    let a = peek_client_hello(&hex(CLIENT_HELLO_1)).unwrap();
    let b = peek_client_hello(&hex(CLIENT_HELLO_2)).unwrap();
    assert_eq!(a.random, b.random);
    assert_eq!((a.message_seq, b.message_seq), (0, 1));
    assert_eq!(a.client_version, VERSION_DTLS12);
}

proptest! {
    #[test]
    fn record_split_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok((r, rest)) = split_record(&bytes) {
            prop_assert_eq!(13 + r.fragment.len() + rest.len(), bytes.len());
        }
        let _ = peek_client_hello(&bytes);
        if let Ok(r) = RecordRepr::parse(&bytes) {
            prop_assert_eq!(r.to_vec().unwrap(), bytes);
        }
    }

    #[test]
    fn mutated_client_hellos_never_panic(
        pos in 0usize..160, val in any::<u8>(), cut in 0usize..=160,
    ) {
        let mut b = hex(CLIENT_HELLO_1);
        if pos < b.len() {
            b[pos] = val;
        }
        b.truncate(cut);
        if let Ok(c) = peek_client_hello(&b) {
            prop_assert!(b.len() >= 13 + 12 + 34);
            prop_assert_eq!(c.random.len(), 32);
        }
    }
}
