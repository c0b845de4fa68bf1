//! spec: query.md §8 — the query-protocol test vectors in `spec/vectors/query.txt`.

mod common;

use common::Vector;
use ivip_wire::query::{
    MapReply, MapRequest, MappedRange, Notification, NotifyAck, QueryMessage, Status,
};
use ivip_wire::{Etr, Family, WireError};

fn valid() -> Vec<(&'static str, QueryMessage)> {
    let e4 = Etr::V4("192.0.2.1".parse().unwrap());
    let e6 = Etr::V6("2001:db8:ffff::1".parse().unwrap());
    vec![
        (
            "IPv4 request",
            QueryMessage::Request(MapRequest {
                nonce: 0x0102_0304_0506_0708,
                addr: "20.0.0.5".parse().unwrap(),
            }),
        ),
        (
            "IPv6 request",
            QueryMessage::Request(MapRequest {
                nonce: 7,
                addr: "2001:db8:0:10::42".parse().unwrap(),
            }),
        ),
        (
            "IPv4 reply found: the whole micronet",
            QueryMessage::Reply(MapReply {
                nonce: 0x0102_0304_0506_0708,
                status: Status::Found,
                family: Family::V4,
                cache_time_s: 600,
                range: Some(MappedRange {
                    start: 0x1400_0004,
                    len: 4,
                    etr: e4,
                }),
            }),
        ),
        (
            "IPv6 reply found",
            QueryMessage::Reply(MapReply {
                nonce: 7,
                status: Status::Found,
                family: Family::V6,
                cache_time_s: 600,
                range: Some(MappedRange {
                    start: 0x2001_0db8_0000_0010,
                    len: 4,
                    etr: e6,
                }),
            }),
        ),
        (
            "IPv4 reply unassigned: the gap",
            QueryMessage::Reply(MapReply {
                nonce: 8,
                status: Status::Unassigned,
                family: Family::V4,
                cache_time_s: 60,
                range: Some(MappedRange {
                    start: 0x1400_0100,
                    len: 256,
                    etr: Etr::zero(Family::V4),
                }),
            }),
        ),
        (
            "IPv4 reply not SPI space",
            QueryMessage::Reply(MapReply {
                nonce: 9,
                status: Status::NotSpi,
                family: Family::V4,
                cache_time_s: 3600,
                range: None,
            }),
        ),
        (
            "IPv6 reply resyncing",
            QueryMessage::Reply(MapReply {
                nonce: 10,
                status: Status::Resyncing,
                family: Family::V6,
                cache_time_s: 0,
                range: None,
            }),
        ),
        (
            "IPv4 notification after a split (s4.3): two micronets clipped to the old range",
            QueryMessage::Notify(Notification {
                notify_id: 99,
                nonce: 0x0102_0304_0506_0708,
                family: Family::V4,
                cache_time_s: 540,
                flush: false,
                entries: vec![
                    MappedRange {
                        start: 0x1400_0004,
                        len: 1,
                        etr: e4,
                    },
                    MappedRange {
                        start: 0x1400_0005,
                        len: 3,
                        etr: Etr::V4("198.51.100.7".parse().unwrap()),
                    },
                ],
            }),
        ),
        (
            "IPv6 notification flush",
            QueryMessage::Notify(Notification {
                notify_id: 100,
                nonce: 7,
                family: Family::V6,
                cache_time_s: 30,
                flush: true,
                entries: vec![],
            }),
        ),
        ("ack", QueryMessage::Ack(NotifyAck { notify_id: 99 })),
    ]
}

fn invalid(req: &[u8], reply: &[u8], notify: &[u8]) -> Vec<(&'static str, Vec<u8>, WireError)> {
    let m = |b: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = b.to_vec();
        f(&mut v);
        v
    };
    vec![
        ("empty", vec![], WireError::Truncated),
        (
            "request cut short",
            m(req, &|v| v.truncate(15)),
            WireError::Truncated,
        ),
        (
            "request with a trailing byte",
            m(req, &|v| v.push(0)),
            WireError::TrailingBytes,
        ),
        (
            "version 0",
            m(req, &|v| v[0] = 0),
            WireError::UnsupportedVersion,
        ),
        ("kind 9", m(req, &|v| v[1] = 9), WireError::UnknownType),
        (
            "request flags set",
            m(req, &|v| v[2] = 1),
            WireError::ReservedNonZero,
        ),
        (
            "request family 5",
            m(req, &|v| v[3] = 5),
            WireError::BadFamily,
        ),
        (
            "request family 6 with 4 address bytes",
            m(req, &|v| v[3] = 6),
            WireError::Truncated,
        ),
        (
            "reply status 9",
            m(reply, &|v| v[2] = 9),
            WireError::UnknownStatus,
        ),
        (
            "reply found with length 0",
            m(reply, &|v| v[20..24].fill(0)),
            WireError::BadRange,
        ),
        (
            "reply not-spi with a range",
            m(reply, &|v| v[2] = 2),
            WireError::StatusFieldsNonZero,
        ),
        (
            "reply unassigned with an ETR",
            m(reply, &|v| v[2] = 1),
            WireError::StatusFieldsNonZero,
        ),
        (
            "notify reserved bits",
            m(notify, &|v| v[2] = 2),
            WireError::ReservedNonZero,
        ),
        (
            "notify count too high",
            m(notify, &|v| v[25] = 3),
            WireError::CountOverrun,
        ),
        (
            "notify count too low",
            m(notify, &|v| v[25] = 1),
            WireError::TrailingBytes,
        ),
        (
            "notify entries out of order",
            m(notify, &|v| v[28 + 3] = 6),
            WireError::Unsorted,
        ),
        (
            "notify flush with entries",
            m(notify, &|v| v[2] = 1),
            WireError::StatusFieldsNonZero,
        ),
        ("1201 bytes", vec![1u8; 1201], WireError::TooLong),
    ]
}

fn fields(m: &QueryMessage) -> Vec<String> {
    common::lines(&m.to_string())
}

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let v = valid();
    let mut out: Vec<Vector> = v
        .iter()
        .map(|(name, m)| Vector::valid(*name, m.to_vec().unwrap(), fields(m)))
        .collect();
    let bytes = |i: usize| v[i].1.to_vec().unwrap();
    for (name, b, e) in invalid(&bytes(0), &bytes(2), &bytes(7)) {
        out.push(Vector::reject(name, b, e));
    }
    common::write(
        "query.txt",
        "Query protocol test vectors (spec/query.md).\n\
         Invalid vectors are mutations of the IPv4 request, the IPv4 found reply\n\
         and the IPv4 notification.",
        &out,
    );
}

#[test]
fn query_vectors_parse_emit_and_reject() {
    let (mut ok, mut bad) = (0, 0);
    for v in common::load("query.txt") {
        match v.error {
            None => {
                let m = QueryMessage::parse(&v.bytes)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                assert_eq!(fields(&m), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; m.buffer_len()];
                m.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                assert_eq!(QueryMessage::parse(&buf).unwrap(), m, "{}", v.name);
                ok += 1;
            }
            Some(e) => {
                assert_eq!(QueryMessage::parse(&v.bytes), Err(e), "{}", v.name);
                bad += 1;
            }
        }
    }
    assert!(ok >= 10 && bad >= 15, "{ok} valid, {bad} invalid");
}
