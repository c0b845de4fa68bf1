//! The MPS's HTTP resources (spec: http.md §2).
//!
//! `GET /payload/{ruas}/{epoch}/{seq}` → one payload's bytes or 404;
//! `GET /payloads/{ruas}/{epoch}?from=A&to=B` → a bundle (mps.md) of those held;
//! `GET /metrics`. Bad parameters get 400 with a one-line reason; other methods
//! 405. The handler only reads the store.

use std::sync::Arc;

use ivip_wire::mps::BundleWriter;
use ivip_wire::{PayloadId, RuasId, Seq};

use super::store::Store;
use crate::http::server::Handler;
use crate::http::{self, CONTENT_TYPE_OCTETS, Request, Response};
use crate::metrics::{CounterVec, Registry};

/// Content type of a bundle (spec: mps.md §2).
pub const CONTENT_TYPE_BUNDLE: &str = "application/x-ivip-bundle";

/// Labels of `ivip_mps_http_requests_total`.
const STATUS_LABELS: [&str; 5] = ["200", "400", "404", "405", "other"];

fn number(what: &str, s: &str, max: u64) -> Result<u64, Response> {
    let bad = || {
        Response::bad_request(&format!(
            "{what} must be a decimal number from 0 to {max}, not {s:?}"
        ))
    };
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse::<u64>().ok().filter(|v| *v <= max).ok_or_else(bad)
}

fn ruas_epoch(r: &str, e: &str) -> Result<(RuasId, u32), Response> {
    let ruas = number("ruas", r, u64::from(RuasId::MAX))?;
    let epoch = number("epoch", e, u64::from(u32::MAX))?;
    Ok((RuasId::masked(ruas as u8), epoch as u32))
}

fn one(store: &Store, r: &str, e: &str, s: &str) -> Result<Response, Response> {
    let (ruas, epoch) = ruas_epoch(r, e)?;
    let seq = Seq(number("seq", s, u64::from(u32::MAX))? as u32);
    let id = PayloadId { ruas, epoch, seq };
    match store.get(id) {
        Some(b) => Ok(Response::new(200, CONTENT_TYPE_OCTETS, b.to_vec())),
        None => Err(Response::not_found(&format!(
            "payload {id} is not held here"
        ))),
    }
}

fn range(
    store: &Store,
    range_max: u32,
    req: &Request,
    r: &str,
    e: &str,
) -> Result<Response, Response> {
    let (ruas, epoch) = ruas_epoch(r, e)?;
    let param = |k: &str| {
        req.query_param(k)
            .ok_or_else(|| Response::bad_request(&format!("query parameter `{k}` is required")))
    };
    let from = Seq(number("from", param("from")?, u64::from(u32::MAX))? as u32);
    let to = Seq(number("to", param("to")?, u64::from(u32::MAX))? as u32);
    let span = to.distance_from(from);
    if span < 0 || to.serial_cmp(from).is_none() {
        return Err(Response::bad_request(&format!(
            "`to` ({to}) is before `from` ({from}) in sequence order"
        )));
    }
    if span + 1 > i64::from(range_max) {
        return Err(Response::bad_request(&format!(
            "a range of {} sequence numbers is more than range_max ({range_max})",
            span + 1
        )));
    }
    let mut w = BundleWriter::new();
    for p in store.range(ruas, epoch, from, to, range_max) {
        // Stored payloads passed the full check; a push cannot fail.
        let _ = w.push(&p);
    }
    Ok(Response::new(200, CONTENT_TYPE_BUNDLE, w.finish()))
}

/// The request handler.
pub fn handler(store: Arc<Store>, registry: Registry, range_max: u32) -> Handler {
    let by_status: CounterVec = registry.counter_vec(
        "ivip_mps_http_requests_total",
        "HTTP requests, by status code.",
        "status",
        &STATUS_LABELS,
    );
    Arc::new(move |req: &Request| {
        let resp = route(&store, &registry, range_max, req);
        let i = STATUS_LABELS
            .iter()
            .position(|l| *l == resp.status.to_string())
            .unwrap_or(STATUS_LABELS.len() - 1);
        by_status.at(i).inc();
        resp
    })
}

fn route(store: &Store, registry: &Registry, range_max: u32, req: &Request) -> Response {
    if req.method != "GET" {
        return Response::method_not_allowed("GET");
    }
    let r = match req.segments().as_slice() {
        ["metrics"] => Ok(http::metrics_response(registry)),
        ["payload", r, e, s] => one(store, r, e, s),
        ["payloads", r, e] => range(store, range_max, req, r, e),
        _ => Err(Response::not_found(
            "no such resource; see /payload/RUAS/EPOCH/SEQ and /payloads/RUAS/EPOCH?from=A&to=B",
        )),
    };
    r.unwrap_or_else(|e| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Duration, Instant};
    use ivip_wire::mps::Bundle;
    use ivip_wire::payload::{PayloadRepr, Record};

    fn payload(seq: u32) -> Vec<u8> {
        PayloadRepr {
            id: PayloadId {
                ruas: RuasId::new(3).unwrap(),
                epoch: 1,
                seq: Seq(seq),
            },
            timestamp_us: 0,
            records: vec![Record::Heartbeat { interval_ms: 100 }],
            signature: [0; 64],
        }
        .to_vec()
        .unwrap()
    }

    fn setup() -> Handler {
        let store = Arc::new(Store::new(Duration::from_secs(600), 1 << 20));
        for s in [u32::MAX, 0, 1, 5] {
            let p = payload(s);
            store.insert(Instant(0), ivip_wire::payload::peek_id(&p).unwrap(), &p);
        }
        handler(store, Registry::new(), 100)
    }

    #[test]
    fn one_payload_by_identity() {
        let h = setup();
        let r = h(&Request::get("/payload/3/1/5"));
        assert_eq!((r.status, r.body.clone()), (200, payload(5)));
        assert_eq!(r.content_type, CONTENT_TYPE_OCTETS);
        assert_eq!(h(&Request::get("/payload/3/1/6")).status, 404);
        assert_eq!(h(&Request::get("/payload/3/2/5")).status, 404);
        for bad in [
            "/payload/128/1/5",
            "/payload/3/x/5",
            "/payload/3/1/-1",
            "/payload/3/1/+5",
            "/payload/3/1/4294967296",
        ] {
            let r = h(&Request::get(bad));
            assert_eq!(r.status, 400, "{bad}");
            assert!(!r.body.is_empty());
        }
    }

    #[test]
    fn ranges_cross_the_wrap_and_are_checked() {
        let h = setup();
        let r = h(&Request::get("/payloads/3/1?from=4294967295&to=5"));
        assert_eq!(
            (r.status, r.content_type.as_str()),
            (200, CONTENT_TYPE_BUNDLE)
        );
        let seqs: Vec<u32> = Bundle::new_checked(&r.body)
            .unwrap()
            .iter()
            .map(|(id, _)| id.seq.0)
            .collect();
        assert_eq!(seqs, [u32::MAX, 0, 1, 5]);
        let empty = h(&Request::get("/payloads/3/1?from=10&to=20"));
        assert_eq!(Bundle::new_checked(&empty.body).unwrap().len(), 0);
        for bad in [
            "/payloads/3/1?from=5",
            "/payloads/3/1?from=5&to=4",
            "/payloads/3/1?from=0&to=100",
            "/payloads/3/1?from=a&to=4",
        ] {
            assert_eq!(h(&Request::get(bad)).status, 400, "{bad}");
        }
        assert_eq!(h(&Request::get("/payloads/3/1?from=0&to=99")).status, 200);
    }

    #[test]
    fn other_paths_and_methods() {
        let h = setup();
        assert_eq!(h(&Request::get("/nope")).status, 404);
        let mut post = Request::get("/payload/3/1/5");
        post.method = "POST".into();
        let r = h(&post);
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, [("Allow".to_string(), "GET".to_string())]);
        let m = h(&Request::get("/metrics"));
        assert!(
            String::from_utf8(m.body)
                .unwrap()
                .contains("ivip_mps_http_requests_total{status=\"404\"} 1")
        );
    }
}
