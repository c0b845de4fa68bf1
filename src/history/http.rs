//! The recorder's HTTP API: searches as JSON, status, and the signed evidence
//! behind every answer (spec: http.md, History).
//!
//! What it is: a pure routing function from a [`Request`] to a [`Response`]
//! over a [`StoreReader`], served by `ivip::http`'s tiny_http server. Every bad
//! parameter gets 400 with `{"error": CODE, "detail": TEXT}` naming the
//! parameter and what is wrong. What it is not: the search logic (`query`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ivip_wire::Mab;
use ivip_wire::history::HistoryRecord;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::ingest::RuasProgress;
use super::query::{self, MAB_CHANGES_MAX, QueryError};
use super::store::StoreReader;
use crate::http::server::{Handler, Request, Response};
use crate::metrics::Registry;

/// Content type of the JSON answers.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Default page size of a MAB audit.
pub const MAB_LIMIT_DEFAULT: usize = 1000;

/// What the ingest side last committed, for `/v1/history/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestStatus {
    /// Per RUAS: the next payload to record (everything before it is recorded
    /// and durable, or recorded as a gap).
    pub ruas: Vec<RuasProgress>,
    /// Per MAB: its layout's per-MAB sequence, or `null` while out of sync.
    pub mabs: Vec<(String, Option<u64>)>,
    /// Payloads recorded since start.
    pub payloads_recorded: u64,
}

/// What the handler serves from.
#[derive(Debug, Clone)]
pub struct Api {
    /// The record.
    pub reader: StoreReader,
    /// Metrics for `/metrics`.
    pub registry: Registry,
    /// The ingest side's progress (absent for a read-only server).
    pub status: Option<Arc<Mutex<IngestStatus>>>,
}

fn json_response(status: u16, v: &Value) -> Response {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    Response::new(status, CONTENT_TYPE_JSON, body)
}

/// An error answer: `{"error": code, "detail": detail}`.
pub fn error(status: u16, code: &str, detail: &str) -> Response {
    json_response(status, &json!({"error": code, "detail": detail}))
}

/// Decode `%XX` escapes (a `+` stays a `+`: no parameter holds spaces, and
/// times carry `+` offsets).
fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded query parameters; refuses unknown or repeated ones.
fn params(req: &Request, allowed: &[&str]) -> Result<Vec<(String, String)>, Response> {
    let mut out: Vec<(String, String)> = Vec::new();
    for kv in req.query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let (Some(k), Some(v)) = (pct_decode(k), pct_decode(v)) else {
            return Err(error(
                400,
                "bad_encoding",
                &format!("`{kv}` is not valid percent-encoding"),
            ));
        };
        if !allowed.contains(&k.as_str()) {
            return Err(error(
                400,
                "unknown_parameter",
                &format!(
                    "unknown parameter `{k}`; this resource takes {}",
                    allowed.join(", ")
                ),
            ));
        }
        if out.iter().any(|(x, _)| *x == k) {
            return Err(error(
                400,
                "repeated_parameter",
                &format!("parameter `{k}` is given twice"),
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

fn time_param(p: &[(String, String)], k: &str, default: u64) -> Result<u64, Response> {
    match get(p, k) {
        None | Some("") => Ok(default),
        Some(v) => query::parse_time(v).map_err(|e| error(400, "bad_time", &format!("`{k}`: {e}"))),
    }
}

fn query_error(e: &QueryError) -> Response {
    let code = match e {
        QueryError::BadWindow { .. } => "bad_window",
        QueryError::BadLimit { .. } => "bad_limit",
    };
    error(400, code, &e.to_string())
}

/// The handler for [`crate::http::HttpServer`].
pub fn handler(api: Api) -> Handler {
    let api = Arc::new(api);
    Arc::new(move |req: &Request| route(&api, req))
}

/// Answer one request.
pub fn route(api: &Api, req: &Request) -> Response {
    if req.method != "GET" {
        let mut r = error(405, "method_not_allowed", "only GET is defined");
        r.headers.push(("Allow".into(), "GET".into()));
        return r;
    }
    let segs = req.segments();
    let r = match segs.as_slice() {
        ["v1", "history"] => address(api, req),
        ["v1", "history", "mab"] => mab(api, req),
        ["v1", "history", "status"] => Ok(status(api)),
        ["v1", "history", "payload"] => payload(api, req),
        ["v1", "history", "baselines", name] => baseline(api, name),
        ["metrics"] => Ok(crate::http::metrics_response(&api.registry)),
        _ => Err(error(
            404,
            "not_found",
            &format!("no resource {}", req.path),
        )),
    };
    r.unwrap_or_else(|e| e)
}

fn address(api: &Api, req: &Request) -> Result<Response, Response> {
    let p = params(req, &["address", "from", "to"])?;
    let a = get(&p, "address").ok_or_else(|| {
        error(
            400,
            "missing_parameter",
            "`address` is required: the IPv4 or IPv6 address to look up",
        )
    })?;
    let addr: IpAddr = a.parse().map_err(|_| {
        error(
            400,
            "bad_address",
            &format!("`address`: `{a}` is not an IP address"),
        )
    })?;
    let from = time_param(&p, "from", 0)?;
    let to = time_param(&p, "to", u64::MAX)?;
    let h = query::address_history(&api.reader, addr, from, to).map_err(|e| query_error(&e))?;
    Ok(json_response(200, &h.to_json()))
}

fn mab(api: &Api, req: &Request) -> Result<Response, Response> {
    let p = params(req, &["mab", "from", "to", "after", "limit"])?;
    let m = get(&p, "mab").ok_or_else(|| {
        error(
            400,
            "missing_parameter",
            "`mab` is required, e.g. 20.0.0.0/14",
        )
    })?;
    let mab: Mab = m
        .parse()
        .map_err(|e| error(400, "bad_mab", &format!("`mab`: `{m}`: {e}")))?;
    let from = time_param(&p, "from", 0)?;
    let to = time_param(&p, "to", u64::MAX)?;
    let after = match get(&p, "after") {
        None | Some("") => None,
        Some(v) => Some(
            query::parse_location(v)
                .map_err(|e| error(400, "bad_record", &format!("`after`: {e}")))?,
        ),
    };
    let limit = match get(&p, "limit") {
        None | Some("") => MAB_LIMIT_DEFAULT,
        Some(v) => v.parse::<usize>().map_err(|_| {
            error(
                400,
                "bad_limit",
                &format!("`limit`: `{v}` is not a number 1..={MAB_CHANGES_MAX}"),
            )
        })?,
    };
    let c = query::mab_changes(&api.reader, mab, from, to, after, limit)
        .map_err(|e| query_error(&e))?;
    Ok(json_response(200, &c.to_json()))
}

fn status(api: &Api) -> Response {
    let st = api.reader.status();
    let ingest = api.status.as_ref().map(|s| s.lock().clone());
    json_response(
        200,
        &json!({
            "store": st,
            "ingest": ingest,
        }),
    )
}

fn payload(api: &Api, req: &Request) -> Result<Response, Response> {
    let p = params(req, &["record"])?;
    let r = get(&p, "record").ok_or_else(|| {
        error(
            400,
            "missing_parameter",
            "`record` is required: SEGMENT:OFFSET from an answer",
        )
    })?;
    let at = query::parse_location(r)
        .map_err(|e| error(400, "bad_record", &format!("`record`: {e}")))?;
    match api.reader.frames().read(at) {
        Ok(HistoryRecord::Payload(p)) => Ok(Response::new(
            200,
            crate::http::CONTENT_TYPE_OCTETS,
            p.payload,
        )),
        Ok(_) => Err(error(
            404,
            "not_a_payload",
            &format!("the record at {r} is not a payload"),
        )),
        Err(e) => Err(error(
            404,
            "no_record",
            &format!("no readable record at {r}: {e:?}"),
        )),
    }
}

fn baseline(api: &Api, name: &str) -> Result<Response, Response> {
    name.parse::<ivip_wire::snapshot::SnapshotName>()
        .map_err(|_| {
            error(
                400,
                "bad_name",
                &format!("`{name}` is not a standard snapshot file name"),
            )
        })?;
    let path: PathBuf = api
        .reader
        .dir()
        .join(super::driver::BASELINES_DIR)
        .join(name);
    let bytes = std::fs::read(&path)
        .map_err(|_| error(404, "no_baseline", &format!("no baseline file {name}")))?;
    Ok(Response::new(200, crate::http::CONTENT_TYPE_OCTETS, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> (Api, PathBuf) {
        let d = std::env::temp_dir().join(format!("ivip-hhttp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (s, _) = super::super::Store::open(&d, super::super::StoreConfig::default()).unwrap();
        (
            Api {
                reader: s.reader(),
                registry: Registry::new(),
                status: None,
            },
            d,
        )
    }

    fn code(r: &Response) -> String {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["error"].as_str().unwrap_or("").to_string()
    }

    #[test]
    fn bad_parameters_get_a_400_naming_the_reason() {
        let (a, d) = api();
        let cases = [
            ("/v1/history", "missing_parameter"),
            ("/v1/history?address=20.0.0.300", "bad_address"),
            ("/v1/history?address=20.0.0.1&from=yesterday", "bad_time"),
            ("/v1/history?address=20.0.0.1&from=20&to=10", "bad_window"),
            (
                "/v1/history?address=20.0.0.1&colour=red",
                "unknown_parameter",
            ),
            (
                "/v1/history?address=20.0.0.1&address=20.0.0.2",
                "repeated_parameter",
            ),
            ("/v1/history?address=%zz", "bad_encoding"),
            ("/v1/history/mab?mab=20.0.0.1/14", "bad_mab"),
            ("/v1/history/mab?mab=20.0.0.0/14&limit=0", "bad_limit"),
            ("/v1/history/mab?mab=20.0.0.0/14&limit=many", "bad_limit"),
            ("/v1/history/mab?mab=20.0.0.0/14&after=x", "bad_record"),
            ("/v1/history/payload?record=1", "bad_record"),
            ("/v1/history/baselines/x.ivsnap", "bad_name"),
        ];
        for (url, want) in cases {
            let r = route(&a, &Request::get(url));
            assert_eq!(r.status, 400, "{url}");
            assert_eq!(code(&r), want, "{url}");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(!v["detail"].as_str().unwrap().is_empty());
        }
        let ok = route(
            &a,
            &Request::get("/v1/history?address=20.0.0.1&from=2025-11-25T12%3A00%3A00%2B01%3A00"),
        );
        assert_eq!(ok.status, 200);
        assert_eq!(route(&a, &Request::get("/nope")).status, 404);
        let mut post = Request::get("/v1/history");
        post.method = "POST".into();
        assert_eq!(route(&a, &post).status, 405);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
