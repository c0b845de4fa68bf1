//! The RUAS's HTTP resources (spec: http.md §3): SUMUC ingest, the read API,
//! snapshot files, metrics. Handlers run on the HTTP threads; they check what they
//! can alone (bytes, signer, signature, delegation) and hand authorised SUMUCs to
//! the writer thread, then wait for its decision, which comes only after the WAL
//! commit that made it durable.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use crossbeam_channel::{Sender, bounded};
use ivip_wire::addr::unit_addr;
use ivip_wire::sumuc::SumucView;
use ivip_wire::{Family, Mab};
use serde_json::{Value, json};

use super::engine::Outcome;
use super::snapshots::Catalog;
use crate::delegation::{Child, Refusal, authorise};
use crate::http::{Request, Response};
use crate::metrics::{Counter, CounterVec, Registry};
use crate::range::UnitRange;
use crate::sign::{KeyPair, Verifier};
use crate::table::{Change, DbReader, Mapping};

/// How long an HTTP thread waits for the writer before answering 503.
pub const WRITER_WAIT_MS: u64 = 30_000;
/// Most micronets in one read-API answer.
pub const MAPPING_ANSWER_MAX: usize = 10_000;

/// A request for the writer thread.
#[derive(Debug)]
pub struct WriterRequest {
    /// The SUMUC as received (authorised already).
    pub bytes: Vec<u8>,
    /// Check only.
    pub dry_run: bool,
    /// Where the decision goes: `Ok` after it is durable, `Err` when storage
    /// failed and nothing was accepted.
    pub reply: Sender<Result<Outcome, String>>,
}

/// Rejection reasons counted in metrics.
pub const REJECT_REASONS: &[&str] = &[
    "malformed",
    "unknown_signer",
    "bad_signature",
    "stale",
    "unknown_mab",
    "not_delegated",
    "invalid_commands",
    "storage",
];

/// What the handler needs.
pub struct HttpState {
    /// Child UASes.
    pub children: Vec<Child>,
    /// The MABs of this RUAS.
    pub mabs: Vec<Mab>,
    /// Signature checks.
    pub verifier: Arc<dyn Verifier>,
    /// The writer's inbox.
    pub writer: Sender<WriterRequest>,
    /// The master database, read-only.
    pub reader: DbReader,
    /// Snapshot files.
    pub catalog: Arc<Catalog>,
    /// Metrics.
    pub registry: Registry,
    /// SUMUCs accepted (answered 200 accepted or 202 scheduled).
    pub accepted: Counter,
    /// Refusals by reason.
    pub rejected: CounterVec,
    /// Replay window for SUMUC timestamps.
    pub replay_window_s: u64,
    /// Signs answers to `/v1/sumuc` and `/v1/mapping` (spec: uas-api.md §6): a UAS
    /// accepts its parent's answers only with this signature.
    pub answer_key: KeyPair,
}

fn json_response(status: u16, v: &Value) -> Response {
    Response::new(status, "application/json", v.to_string().into_bytes())
}

fn error(status: u16, code: &str, detail: impl Into<String>) -> Response {
    json_response(status, &json!({"error": code, "detail": detail.into()}))
}

fn changes_json(family: Family, changed: &[Change]) -> Value {
    Value::Array(
        changed
            .iter()
            .map(|c| {
                json!({
                    "start": unit_addr(family, c.start).to_string(),
                    "len": c.len,
                    "etr": c.etr.map(|e| e.to_string()),
                })
            })
            .collect(),
    )
}

impl HttpState {
    fn reject(&self, status: u16, code: &str, detail: impl Into<String>) -> Response {
        if let Some(c) = self.rejected.with(code) {
            c.inc();
        }
        error(status, code, detail)
    }

    /// Route one request; sign the answer where a UAS will check it.
    pub fn handle(&self, r: &Request) -> Response {
        let mut resp = self.route(r);
        if matches!(r.segments().as_slice(), ["v1", "sumuc" | "mapping"]) {
            let url = if r.query.is_empty() {
                r.path.clone()
            } else {
                format!("{}?{}", r.path, r.query)
            };
            let sig = crate::uas::forward::sign_answer(
                &self.answer_key,
                &r.method,
                &url,
                &r.body,
                resp.status,
                &resp.body,
            );
            resp = resp.with_header(crate::uas::forward::ANSWER_SIGNATURE_HEADER, &sig);
        }
        resp
    }

    fn route(&self, r: &Request) -> Response {
        let segs = r.segments();
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["v1", "sumuc"]) => self.sumuc(r),
            ("GET", ["v1", "mapping"]) => self.mapping(r),
            ("GET", ["v1", "status"]) => self.status(r),
            ("GET", ["v1", "snapshots"]) => self.snapshot_list(),
            ("GET", ["v1", "snapshots", "latest"]) => self.snapshot_latest(r),
            ("GET", ["v1", "snapshots", name]) => self.snapshot_file(name),
            ("GET", ["metrics"]) => crate::http::metrics_response(&self.registry),
            (_, ["v1", "sumuc"]) => Response::method_not_allowed("POST"),
            _ => error(404, "not_found", format!("no resource {}", r.path)),
        }
    }

    fn sumuc(&self, r: &Request) -> Response {
        let dry_run = matches!(r.query_param("dry_run"), Some("1" | "true"));
        let s = match SumucView::new_checked(&r.body) {
            Ok(s) => s,
            Err(e) => {
                return self.reject(400, "malformed", format!("the body is not a SUMUC: {e}"));
            }
        };
        let now_us = crate::time::unix_now_us();
        if let Err(why) = authorise(
            &self.children,
            self.verifier.as_ref(),
            &s,
            now_us,
            self.replay_window_s,
        ) {
            let status = match why {
                Refusal::Stale { .. } => 400,
                _ => 403,
            };
            let mut resp = json!({"error": why.code(), "detail": why.to_string()});
            if let Refusal::NotDelegated { index } = why {
                resp["command"] = json!(index);
            }
            if let Some(c) = self.rejected.with(why.code()) {
                c.inc();
            }
            return json_response(status, &resp);
        }
        if !self.mabs.contains(&s.mab()) {
            return self.reject(
                404,
                "unknown_mab",
                format!("{} is not a MAB of this RUAS", s.mab()),
            );
        }
        let request_id = format!("{:016x}", s.header().request_id.get());
        let (tx, rx) = bounded(1);
        let req = WriterRequest {
            bytes: r.body.clone(),
            dry_run,
            reply: tx,
        };
        if self.writer.send(req).is_err() {
            return self.reject(503, "storage", "the RUAS is stopping; nothing was accepted");
        }
        let outcome = match rx.recv_timeout(StdDuration::from_millis(WRITER_WAIT_MS)) {
            Ok(Ok(o)) => o,
            Ok(Err(why)) => return self.reject(503, "storage", why),
            Err(_) => {
                return self.reject(
                    503,
                    "storage",
                    "no decision in time; the set may or may not be accepted: retry with the same request id",
                );
            }
        };
        let family = s.mab().family();
        match outcome {
            Outcome::Accepted {
                mab,
                mab_seq,
                changed,
            } => {
                self.accepted.inc();
                json_response(
                    200,
                    &json!({"outcome": "accepted", "request_id": request_id, "mab": mab.to_string(),
                            "mab_seq": mab_seq, "changed": changes_json(family, &changed)}),
                )
            }
            Outcome::Scheduled { execute_at_us } => {
                self.accepted.inc();
                json_response(
                    202,
                    &json!({"outcome": "scheduled", "request_id": request_id, "execute_at_us": execute_at_us}),
                )
            }
            Outcome::DryRunOk { mab, changed } => json_response(
                200,
                &json!({"outcome": "dry_run_ok", "request_id": request_id, "mab": mab.to_string(),
                        "changed": changes_json(family, &changed)}),
            ),
            Outcome::UnknownMab(m) => {
                self.reject(404, "unknown_mab", format!("{m} is not a MAB of this RUAS"))
            }
            Outcome::Invalid(e) => {
                if let Some(c) = self.rejected.with("invalid_commands") {
                    c.inc();
                }
                json_response(
                    409,
                    &json!({"error": "invalid_commands", "detail": e.to_string(), "command": e.index,
                            "reason": e.reason.code()}),
                )
            }
        }
    }

    fn mapping(&self, r: &Request) -> Response {
        let Some(raw) = r.query_param("range") else {
            return error(400, "bad_range", "give range=START+LEN or range=FIRST-LAST");
        };
        let text = percent_decode(raw).replace(' ', "+");
        let range: UnitRange = match text.parse() {
            Ok(x) => x,
            Err(e) => return error(400, "bad_range", e.to_string()),
        };
        let Some(mab) = self
            .mabs
            .iter()
            .find(|m| m.family() == range.family && m.contains_range(range.start, range.len))
        else {
            return error(
                404,
                "unknown_mab",
                format!("{range} is not inside one MAB of this RUAS"),
            );
        };
        let Some(view) = self.reader.view(mab) else {
            return error(503, "not_ready", "the master database is not loaded yet");
        };
        let mut nets = Vec::new();
        let mut truncated = false;
        for m in view.range(range.start, range.len) {
            if let Mapping::Micronet(n) = m {
                if nets.len() == MAPPING_ANSWER_MAX {
                    truncated = true;
                    break;
                }
                nets.push(json!({
                    "start": unit_addr(range.family, n.start).to_string(),
                    "len": n.len,
                    "etr": n.etr.to_string(),
                }));
            }
        }
        json_response(
            200,
            &json!({"mab": mab.to_string(), "mab_seq": view.mab_seq(), "micronets": nets, "truncated": truncated}),
        )
    }

    /// Every MAB's per-MAB sequence and, with `hash=1`, its canonical hash (for
    /// comparing copies, e.g. `ivip testnet`'s convergence check).
    fn status(&self, r: &Request) -> Response {
        let with_hash = matches!(r.query_param("hash"), Some("1" | "true"));
        let mabs: Vec<Value> = self
            .mabs
            .iter()
            .map(|m| match self.reader.view(m) {
                Some(v) => {
                    let hash = with_hash.then(|| ivip_wire::hex::encode(&v.hash()));
                    json!({"mab": m.to_string(), "mab_seq": v.mab_seq(), "micronets": v.micronets(), "sha256": hash})
                }
                None => json!({"mab": m.to_string(), "state": "loading"}),
            })
            .collect();
        json_response(200, &json!({"mabs": mabs}))
    }

    fn snapshot_list(&self) -> Response {
        let list: Vec<Value> = self
            .catalog
            .list()
            .iter()
            .map(|f| {
                json!({"name": f.name, "mab": f.mab.to_string(), "mab_seq": f.mab_seq,
                       "created_us": f.created_us, "sha256": ivip_wire::hex::encode(&f.sha256), "bytes": f.bytes})
            })
            .collect();
        json_response(200, &Value::Array(list))
    }

    fn snapshot_latest(&self, r: &Request) -> Response {
        let Some(m) = r.query_param("mab") else {
            return Response::bad_request("give mab=PREFIX, e.g. mab=20.0.0.0/14");
        };
        let Ok(mab) = percent_decode(m).parse::<Mab>() else {
            return Response::bad_request("mab is not a prefix such as 20.0.0.0/14");
        };
        match self.catalog.latest(&mab) {
            Some(f) => self
                .snapshot_file(&f.name)
                .with_header("Ivip-Snapshot-Name", &f.name),
            None => Response::not_found(&format!("no snapshot of {mab} yet")),
        }
    }

    fn snapshot_file(&self, name: &str) -> Response {
        let Some(path) = self.catalog.path_of(name) else {
            return Response::not_found(&format!("no snapshot named {name}"));
        };
        match std::fs::read(&path) {
            Ok(b) => Response::new(200, crate::http::CONTENT_TYPE_OCTETS, b),
            // Replaced between the listing and the read: the client asks again.
            Err(_) => Response::not_found(&format!("snapshot {name} was just replaced; ask again")),
        }
    }
}

/// Decode `%XX` escapes (invalid ones are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
