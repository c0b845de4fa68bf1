//! The UAS's request handling: one function from an HTTP request (method, path,
//! headers, body, peer) to an HTTP answer, with the audit record written before
//! the answer leaves (seed s3.6, s3.7, s4.3).
//!
//! spec: uas-api.md. Endpoints for people and their agents (`/v1/login`,
//! `/v1/me`, `/v1/micronets`, `/v1/commands`), for child UASes (`/v1/sumuc`,
//! `/v1/mapping`), the web page (`/`), and `/metrics`. Every `/v1/` answer is
//! signed with the UAS's key (uas-api.md §6). The socket side is in
//! [`crate::uas::http`]; time is passed in.

use std::net::SocketAddr;

use ivip_wire::sumuc::Sumuc;
use ivip_wire::{Command, Family, Mab};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use sha2::Digest as _;

use crate::metrics::{Counter, CounterVec, Registry};
use crate::range::UnitRange;
use crate::rng::Rng;
use crate::sign::{Ed25519Verifier, KeyPair};
use crate::time::Instant;
use crate::uas::api::{CommandJson, CommandsRequest, ErrorJson, LoginRequest, MicronetJson};
use crate::uas::audit::{AuditEvent, AuditLog, AuditRecord};
use crate::uas::auth::{AuthError, Authenticator, Credentials, Principal, retry_after_s};
use crate::uas::check::{check_etr, first_outside};
use crate::uas::config::{UasConfig, User, mab_of};
use crate::uas::forward::{
    ANSWER_SIGNATURE_HEADER, ForwardError, ParentLink, check_child_sumuc, sign_answer, sign_sumuc,
};
use crate::uas::state::{StateError, check_set, command_span, read_range};
use crate::uas::upstream::Answer;

/// The web page (embedded at build time).
const INDEX_HTML: &str = include_str!("page/index.html");
/// Its script.
const APP_JS: &str = include_str!("page/app.js");
/// Its style sheet.
const APP_CSS: &str = include_str!("page/app.css");

/// Most micronets listed per UAB by `GET /v1/micronets` (then `truncated`).
pub const LIST_MICRONETS_MAX: usize = 10_000;
/// Most micronets read to check one set.
pub const CHECK_MICRONETS_MAX: usize = 1_000_000;

/// Longest idempotency key a client may send.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;

/// An HTTP request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query as sent (`/v1/mapping?range=...`).
    pub url: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (empty when it was too large).
    pub body: Vec<u8>,
    /// The body was over the limit and was not read.
    pub body_too_large: bool,
    /// The peer.
    pub peer: SocketAddr,
}

impl Request {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.url.split('?').next().unwrap_or("")
    }

    /// A query parameter, percent-decoded (`+` is kept: ranges use it).
    pub fn query(&self, key: &str) -> Option<String> {
        let q = self.url.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status.
    pub status: u16,
    /// Headers (besides Content-Length).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, v: &impl Serialize) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    fn static_file(content_type: &str, body: &str) -> Response {
        Response {
            status: 200,
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                (
                    "Content-Security-Policy".into(),
                    "default-src 'self'; frame-ancestors 'none'".into(),
                ),
                ("X-Content-Type-Options".into(), "nosniff".into()),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A refusal: status, code, detail, and where applicable the command and reason.
#[derive(Debug, Clone)]
struct Refuse {
    status: u16,
    code: &'static str,
    detail: String,
    command: Option<usize>,
    reason: Option<String>,
    extra: Vec<(String, String)>,
}

impl Refuse {
    fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Refuse {
        Refuse {
            status,
            code,
            detail: detail.into(),
            command: None,
            reason: None,
            extra: Vec::new(),
        }
    }

    fn at(mut self, command: usize) -> Refuse {
        self.command = Some(command);
        self
    }

    fn reason(mut self, r: impl Into<String>) -> Refuse {
        self.reason = Some(r.into());
        self
    }

    fn response(&self) -> Response {
        let mut r = Response::json(
            self.status,
            &ErrorJson {
                error: self.code.into(),
                detail: self.detail.clone(),
                command: self.command,
                reason: self.reason.clone(),
            },
        );
        r.headers.extend(self.extra.iter().cloned());
        r
    }

    fn fill(&self, rec: &mut AuditRecord) {
        rec.status = Some(self.status);
        rec.code = Some(self.code.into());
        rec.detail = Some(self.detail.clone());
        rec.command = self.command;
    }
}

impl From<AuthError> for Refuse {
    fn from(e: AuthError) -> Refuse {
        let mut r = Refuse::new(
            if matches!(e, AuthError::RateLimited(_)) {
                429
            } else {
                401
            },
            e.code(),
            e.to_string(),
        );
        match e {
            AuthError::RateLimited(d) => {
                r.extra
                    .push(("Retry-After".into(), retry_after_s(d).to_string()));
            }
            _ => r.extra.push((
                "WWW-Authenticate".into(),
                "Bearer realm=\"ivip-uas\"".into(),
            )),
        }
        r
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Endpoints counted in `ivip_uas_requests_total`.
const ENDPOINTS: &[&str] = &[
    "login",
    "logout",
    "me",
    "micronets",
    "commands",
    "sumuc",
    "mapping",
    "other",
    "any",
];

/// Outcome codes counted in `ivip_uas_outcomes_total`; anything else (a code
/// relayed from a parent that this UAS does not know) counts as `other`.
const OUTCOMES: &[&str] = &[
    "accepted",
    "scheduled",
    "dry_run_ok",
    "ok",
    "unauthorized",
    "rate_limited",
    "malformed",
    "too_large",
    "spans_mabs",
    "bad_etr",
    "outside_uab",
    "invalid_commands",
    "not_found",
    "unknown_signer",
    "bad_signature",
    "stale",
    "unknown_mab",
    "not_delegated",
    "parent_unreachable",
    "parent_bad_answer",
    "audit_unavailable",
    "other",
];

/// The UAS's metrics (`GET /metrics`, Prometheus text via `ivip::metrics`).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry rendered at `/metrics`.
    pub registry: Registry,
    requests: CounterVec,
    outcomes: CounterVec,
    forward_us: Counter,
    forwards: Counter,
    audit_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let registry = Registry::new();
        Metrics {
            requests: registry.counter_vec(
                "ivip_uas_requests_total",
                "Audited requests by endpoint.",
                "endpoint",
                ENDPOINTS,
            ),
            outcomes: registry.counter_vec(
                "ivip_uas_outcomes_total",
                "Audited requests by outcome code (uas-api.md 4.1).",
                "code",
                OUTCOMES,
            ),
            forward_us: registry.counter(
                "ivip_uas_forward_microseconds_total",
                "Time spent forwarding SUMUCs to the parent and waiting for its answer.",
            ),
            forwards: registry.counter(
                "ivip_uas_forwards_total",
                "SUMUCs forwarded to the parent that got an answer.",
            ),
            audit_failures: registry.counter(
                "ivip_uas_audit_failures_total",
                "Audit records that could not be made durable (requests refused).",
            ),
            registry,
        }
    }
}

impl Metrics {
    fn count(&self, endpoint: &str, code: &str) {
        let e = ENDPOINTS
            .iter()
            .position(|x| *x == endpoint)
            .unwrap_or(ENDPOINTS.len() - 1);
        self.requests.at(e).inc();
        let o = OUTCOMES
            .iter()
            .position(|x| *x == code)
            .unwrap_or(OUTCOMES.len() - 1);
        self.outcomes.at(o).inc();
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// One UAS: configuration, key, authenticator, audit trail and parent link.
#[derive(Debug)]
pub struct Uas {
    cfg: UasConfig,
    key: KeyPair,
    auth: Authenticator,
    audit: AuditLog,
    parent: ParentLink,
    rng: Mutex<Rng>,
    /// Counters.
    pub metrics: Metrics,
}

/// What a handler returns: the answer and the audit record to write first.
struct Outcome {
    response: Response,
    record: Option<AuditRecord>,
    endpoint: &'static str,
}

impl Uas {
    /// Put the pieces together.
    pub fn new(cfg: UasConfig, key: KeyPair, audit: AuditLog, parent: ParentLink) -> Uas {
        Uas {
            auth: Authenticator::new(&cfg),
            cfg,
            key,
            audit,
            parent,
            rng: Mutex::new(Rng::from_os()),
            metrics: Metrics::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &UasConfig {
        &self.cfg
    }

    /// Handle one request. `now` is monotonic time, `wall_us` the wall clock.
    pub fn handle(&self, req: &Request, now: Instant, wall_us: u64) -> Response {
        let out = self.route(req, now, wall_us);
        let mut response = out.response;
        if let Some(rec) = out.record {
            let code = rec.code.clone().unwrap_or_default();
            if let Err(e) = self.audit.record(&rec) {
                self.metrics.audit_failures.inc();
                log::error!("{e}; refusing the request");
                response = Refuse::new(503, "audit_unavailable", e.to_string()).response();
            }
            self.metrics.count(out.endpoint, &code);
        }
        if req.path().starts_with("/v1/") {
            let sig = sign_answer(
                &self.key,
                &req.method,
                &req.url,
                &req.body,
                response.status,
                &response.body,
            );
            response.headers.push((ANSWER_SIGNATURE_HEADER.into(), sig));
        }
        response
    }

    fn record(&self, req: &Request, wall_us: u64) -> AuditRecord {
        AuditRecord::new(
            wall_us,
            AuditEvent::Done,
            &req.peer.to_string(),
            &req.method,
            &req.url,
        )
    }

    fn route(&self, req: &Request, now: Instant, wall_us: u64) -> Outcome {
        let plain = |response| Outcome {
            response,
            record: None,
            endpoint: "static",
        };
        match (req.method.as_str(), req.path()) {
            ("GET", "/") | ("GET", "/index.html") => {
                return plain(Response::static_file(
                    "text/html; charset=utf-8",
                    INDEX_HTML,
                ));
            }
            ("GET", "/app.js") => {
                return plain(Response::static_file(
                    "text/javascript; charset=utf-8",
                    APP_JS,
                ));
            }
            ("GET", "/app.css") => {
                return plain(Response::static_file("text/css; charset=utf-8", APP_CSS));
            }
            ("GET", "/metrics") => {
                return plain(Response {
                    status: 200,
                    headers: vec![(
                        "Content-Type".into(),
                        "text/plain; version=0.0.4; charset=utf-8".into(),
                    )],
                    body: self.metrics.render().into_bytes(),
                });
            }
            _ => {}
        }
        let mut rec = self.record(req, wall_us);
        let (endpoint, result) = if req.body_too_large {
            (
                "any",
                Err(Refuse::new(
                    413,
                    "too_large",
                    format!(
                        "the request body is over {} bytes",
                        self.cfg.limits.body_bytes_max
                    ),
                )),
            )
        } else {
            match (req.method.as_str(), req.path()) {
                ("POST", "/v1/login") => ("login", self.login(req, now, &mut rec)),
                ("POST", "/v1/logout") => ("logout", self.logout(req, now, wall_us, &mut rec)),
                ("GET", "/v1/me") => ("me", self.me(req, now, wall_us, &mut rec)),
                ("GET", "/v1/micronets") => {
                    ("micronets", self.micronets(req, now, wall_us, &mut rec))
                }
                ("POST", "/v1/commands") => {
                    ("commands", self.commands(req, now, wall_us, &mut rec))
                }
                ("POST", "/v1/sumuc") => ("sumuc", self.sumuc(req, wall_us, &mut rec)),
                ("GET", "/v1/mapping") => ("mapping", self.mapping(req, &mut rec)),
                (_, p) if p.starts_with("/v1/") => (
                    "other",
                    Err(Refuse::new(
                        404,
                        "not_found",
                        format!("no resource {} {}", req.method, p),
                    )),
                ),
                _ => {
                    return plain(Refuse::new(404, "not_found", "no such page").response());
                }
            }
        };
        let response = match result {
            Ok(r) => r,
            Err(refuse) => {
                refuse.fill(&mut rec);
                refuse.response()
            }
        };
        rec.status = Some(response.status);
        Outcome {
            response,
            record: Some(rec),
            endpoint,
        }
    }

    // -----------------------------------------------------------------------
    // People and agents
    // -----------------------------------------------------------------------

    fn authenticate(
        &self,
        req: &Request,
        now: Instant,
        wall_us: u64,
        rec: &mut AuditRecord,
    ) -> Result<(Principal, &User), Refuse> {
        let header = req
            .header("authorization")
            .ok_or(Refuse::from(AuthError::Missing))?;
        let creds = Credentials::parse(header).map_err(Refuse::from)?;
        rec.claimed = creds.claimed_user().map(str::to_string);
        let p = self
            .auth
            .authenticate(&creds, &req.method, &req.url, &req.body, now, wall_us)
            .map_err(Refuse::from)?;
        rec.who = p.user.clone();
        rec.auth = p.method.name().into();
        rec.claimed = None;
        let user = self
            .cfg
            .user(&p.user)
            .ok_or_else(|| Refuse::from(AuthError::BadCredentials))?;
        Ok((p, user))
    }

    fn login(
        &self,
        req: &Request,
        now: Instant,
        rec: &mut AuditRecord,
    ) -> Result<Response, Refuse> {
        let l: LoginRequest = serde_json::from_slice(&req.body)
            .map_err(|e| Refuse::new(400, "malformed", format!("bad login JSON: {e}")))?;
        rec.claimed = Some(l.user.clone());
        let (token, d) = self
            .auth
            .login(&l.user, &l.password, now)
            .map_err(Refuse::from)?;
        rec.who = l.user.clone();
        rec.auth = "password".into();
        rec.claimed = None;
        rec.code = Some("ok".into());
        Ok(Response::json(
            200,
            &json!({"token": token, "user": l.user, "expires_in_s": d.as_us() / 1_000_000}),
        ))
    }

    fn logout(
        &self,
        req: &Request,
        now: Instant,
        wall_us: u64,
        rec: &mut AuditRecord,
    ) -> Result<Response, Refuse> {
        self.authenticate(req, now, wall_us, rec)?;
        if let Some(Ok(Credentials::Session { token })) =
            req.header("authorization").map(Credentials::parse)
        {
            self.auth.logout(&token);
        }
        rec.code = Some("ok".into());
        Ok(Response::json(200, &json!({"outcome": "logged_out"})))
    }

    fn me(
        &self,
        req: &Request,
        now: Instant,
        wall_us: u64,
        rec: &mut AuditRecord,
    ) -> Result<Response, Refuse> {
        let (p, user) = self.authenticate(req, now, wall_us, rec)?;
        let uabs: Vec<_> = user
            .uabs
            .iter()
            .map(|r| {
                json!({
                    "range": r.to_string(),
                    "mab": mab_of(&self.cfg.mabs, r).map(|m| m.to_string()),
                })
            })
            .collect();
        rec.code = Some("ok".into());
        Ok(Response::json(
            200,
            &json!({"user": p.user, "auth": p.method.name(), "uas": self.cfg.name, "uabs": uabs}),
        ))
    }

    fn micronets(
        &self,
        req: &Request,
        now: Instant,
        wall_us: u64,
        rec: &mut AuditRecord,
    ) -> Result<Response, Refuse> {
        let (p, user) = self.authenticate(req, now, wall_us, rec)?;
        let mut uabs = Vec::new();
        for r in &user.uabs {
            let mab = mab_of(&self.cfg.mabs, r)
                .ok_or_else(|| Refuse::new(500, "config", "a UAB lies in no MAB"))?;
            let read =
                read_range(&self.parent, &mab, r, LIST_MICRONETS_MAX).map_err(state_refuse)?;
            let list: Vec<MicronetJson> = read
                .micronets
                .iter()
                .map(|m| MicronetJson::from_micronet(mab.family(), m))
                .collect();
            uabs.push(json!({
                "range": r.to_string(),
                "mab": mab.to_string(),
                "mab_seq": read.mab_seq,
                "micronets": list,
                "truncated": read.truncated,
            }));
        }
        rec.code = Some("ok".into());
        Ok(Response::json(200, &json!({"user": p.user, "uabs": uabs})))
    }

    fn commands(
        &self,
        req: &Request,
        now: Instant,
        wall_us: u64,
        rec: &mut AuditRecord,
    ) -> Result<Response, Refuse> {
        let (p, user) = self.authenticate(req, now, wall_us, rec)?;
        let set: CommandsRequest = serde_json::from_slice(&req.body)
            .map_err(|e| Refuse::new(400, "malformed", format!("bad command set JSON: {e}")))?;
        rec.commands = Some(set.commands.iter().map(|c| c.to_string()).collect());
        rec.dry_run = Some(set.dry_run);
        if set.execute_at_us != 0 {
            rec.execute_at_us = Some(set.execute_at_us);
        }
        let (mab, cmds) = self.validate(user, &set.commands)?;
        rec.mab = Some(mab.to_string());

        // Current state, then the mapping engine (seed s3.7).
        let mut current = Vec::new();
        for r in command_span(mab.family(), &cmds) {
            let mut read =
                read_range(&self.parent, &mab, &r, CHECK_MICRONETS_MAX).map_err(state_refuse)?;
            if read.truncated {
                return Err(Refuse::new(
                    400,
                    "too_large",
                    format!(
                        "the set's ranges meet more than {CHECK_MICRONETS_MAX} micronets; send smaller sets"
                    ),
                ));
            }
            current.append(&mut read.micronets);
        }
        current.sort_by_key(|m| m.start);
        current.dedup();
        let changed = check_set(&mab, &current, &cmds)
            .map_err(state_refuse)?
            .map_err(|e| {
                Refuse::new(409, "invalid_commands", e.detail)
                    .at(e.command)
                    .reason(e.reason)
            })?;
        if set.dry_run {
            rec.code = Some("dry_run_ok".into());
            return Ok(Response::json(
                200,
                &json!({"outcome": "dry_run_ok", "mab": mab.to_string(), "changed": changed}),
            ));
        }

        // Sign and forward (seed s3.8, s4.3).
        let request_id = self.request_id(&p.user, req.header("idempotency-key"))?;
        let rid = format!("{request_id:016x}");
        rec.request_id = Some(rid.clone());
        let mut intent = rec.clone();
        intent.event = AuditEvent::Intent;
        self.audit
            .record(&intent)
            .map_err(|e| Refuse::new(503, "audit_unavailable", e.to_string()))?;
        let origin = format!("{}/{}", self.cfg.name, p.user);
        let s = Sumuc {
            signer: self.key.public(),
            request_id,
            timestamp_us: wall_us,
            execute_at_us: set.execute_at_us,
            mab,
            origin,
            commands: cmds,
            signature: [0; 64],
        };
        let bytes = sign_sumuc(s, &self.key, wall_us).map_err(|e| {
            Refuse::new(400, "too_large", format!("the set cannot be encoded: {e}"))
        })?;
        let answer = self.forward(&bytes, false)?;
        self.relay(answer, rec)
    }

    /// UAB, MAB, ETR and byte-level rules; the set as wire commands and its MAB.
    fn validate(&self, user: &User, set: &[CommandJson]) -> Result<(Mab, Vec<Command>), Refuse> {
        if set.is_empty() {
            return Err(Refuse::new(400, "malformed", "the command set is empty"));
        }
        if set.len() > self.cfg.limits.commands_max {
            return Err(Refuse::new(
                400,
                "too_large",
                format!("more than {} commands", self.cfg.limits.commands_max),
            ));
        }
        let family: Family = set[0].range().family;
        let cmds: Vec<Command> = set.iter().map(CommandJson::to_command).collect();
        if let Some(i) = set.iter().position(|c| c.range().family != family) {
            return Err(Refuse::new(400, "spans_mabs", "a set mixes IPv4 and IPv6").at(i));
        }
        if let Some(i) = first_outside(&user.uabs, family, &cmds) {
            return Err(Refuse::new(
                403,
                "outside_uab",
                format!(
                    "command {i} ({}) reaches outside your address blocks ({})",
                    set[i],
                    user.uabs
                        .iter()
                        .map(UnitRange::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .at(i));
        }
        let mab = mab_of(&self.cfg.mabs, &set[0].range())
            .ok_or_else(|| Refuse::new(403, "outside_uab", "outside every MAB").at(0))?;
        if let Some(i) = set
            .iter()
            .position(|c| !mab.contains_range(c.range().start, c.range().len))
        {
            return Err(Refuse::new(
                400,
                "spans_mabs",
                format!(
                    "command {i} is in another MAB than command 0 ({mab}); send one set per MAB"
                ),
            )
            .at(i));
        }
        for (i, c) in cmds.iter().enumerate() {
            if let Some(etr) = c.etr() {
                check_etr(etr, family, &self.cfg.mabs, &self.cfg.etr_allow).map_err(|e| {
                    Refuse::new(400, "bad_etr", format!("command {i}: {e}"))
                        .at(i)
                        .reason(e.reason.code())
                })?;
            }
            c.check(family).map_err(|e| {
                Refuse::new(400, "malformed", format!("command {i} ({}): {e}", set[i])).at(i)
            })?;
        }
        Ok((mab, cmds))
    }

    /// A random request id, or one derived from the user and their idempotency key
    /// (so a client's retry after a lost answer is applied at most once, and one
    /// user cannot collide with another's ids).
    fn request_id(&self, user: &str, key: Option<&str>) -> Result<u64, Refuse> {
        match key {
            None => Ok(self.rng.lock().next_u64()),
            Some(k) if k.is_empty() || k.len() > IDEMPOTENCY_KEY_LEN_MAX => Err(Refuse::new(
                400,
                "malformed",
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters"),
            )),
            Some(k) => {
                let mut h = sha2::Sha256::new();
                h.update(b"ivip-uas-request-id\n");
                h.update(self.cfg.name.as_bytes());
                h.update(b"\n");
                h.update(user.as_bytes());
                h.update(b"\n");
                h.update(k.as_bytes());
                let d: [u8; 32] = h.finalize().into();
                let mut b = [0u8; 8];
                b.copy_from_slice(&d[..8]);
                Ok(u64::from_be_bytes(b))
            }
        }
    }

    fn forward(&self, bytes: &[u8], dry_run: bool) -> Result<Answer, Refuse> {
        let t = std::time::Instant::now();
        let a = self
            .parent
            .post_sumuc(bytes, dry_run)
            .map_err(|e| match e {
                ForwardError::Unreachable(_) => {
                    Refuse::new(502, "parent_unreachable", e.to_string())
                }
                ForwardError::UnsignedAnswer(_) => {
                    Refuse::new(502, "parent_bad_answer", e.to_string())
                }
            })?;
        self.metrics
            .forward_us
            .add(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        self.metrics.forwards.inc();
        Ok(a)
    }

    /// Pass the parent's answer back as it is, noting the outcome in the record.
    /// An answer that is not a JSON object is not passed on.
    fn relay(&self, a: Answer, rec: &mut AuditRecord) -> Result<Response, Refuse> {
        let v: serde_json::Value = match serde_json::from_slice(&a.body) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                return Err(Refuse::new(
                    502,
                    "parent_bad_answer",
                    format!(
                        "the parent answered {} with a body that is not a JSON object: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
                    ),
                ));
            }
        };
        let code = v
            .get("outcome")
            .or_else(|| v.get("error"))
            .and_then(|x| x.as_str())
            .unwrap_or("unknown");
        rec.code = Some(code.to_string());
        rec.mab_seq = v.get("mab_seq").and_then(serde_json::Value::as_u64);
        rec.command = v
            .get("command")
            .and_then(serde_json::Value::as_u64)
            .map(|c| c as usize);
        rec.detail = v.get("detail").and_then(|x| x.as_str()).map(str::to_string);
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(r) = a.header("retry-after") {
            headers.push(("Retry-After".into(), r.into()));
        }
        Ok(Response {
            status: a.status,
            headers,
            body: a.body,
        })
    }

    // -----------------------------------------------------------------------
    // Children
    // -----------------------------------------------------------------------

    fn sumuc(
        &self,
        req: &Request,
        wall_us: u64,
        rec: &mut AuditRecord,
    ) -> Result<Response, Refuse> {
        let dry_run = req.query("dry_run").is_some_and(|v| v == "1");
        rec.dry_run = Some(dry_run);
        let (s, child) = check_child_sumuc(&req.body, &self.cfg, &Ed25519Verifier, wall_us)
            .map_err(|e| {
                let mut r = Refuse::new(e.status(), e.code(), e.to_string());
                r.command = e.command();
                r
            })?;
        rec.who = format!("child:{}", child.name);
        rec.auth = "child".into();
        rec.request_id = Some(format!("{:016x}", s.request_id));
        rec.mab = Some(s.mab.to_string());
        rec.commands = Some(
            s.commands
                .iter()
                .map(|c| CommandJson::from_command(s.mab.family(), c).to_string())
                .collect(),
        );
        rec.claimed = Some(s.origin.clone());
        if s.execute_at_us != 0 {
            rec.execute_at_us = Some(s.execute_at_us);
        }
        let bytes = sign_sumuc(s, &self.key, wall_us)
            .map_err(|e| Refuse::new(400, "malformed", e.to_string()))?;
        let answer = self.forward(&bytes, dry_run)?;
        self.relay(answer, rec)
    }

    fn mapping(&self, req: &Request, rec: &mut AuditRecord) -> Result<Response, Refuse> {
        let r = req
            .query("range")
            .ok_or_else(|| Refuse::new(400, "malformed", "give ?range=START+LEN"))?;
        let range: UnitRange = r
            .parse()
            .map_err(|e| Refuse::new(400, "malformed", format!("range: {e}")))?;
        let path = format!(
            "/v1/mapping?range={}",
            crate::uas::state::range_query(&range)
        );
        let a = self
            .parent
            .get_mapping(&path)
            .map_err(|e| Refuse::new(502, "parent_unreachable", e.to_string()))?;
        rec.code = Some(if a.status == 200 {
            "ok".into()
        } else {
            format!("parent_{}", a.status)
        });
        Ok(Response {
            status: a.status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: a.body,
        })
    }
}

fn state_refuse(e: StateError) -> Refuse {
    match e {
        StateError::Parent(ForwardError::UnsignedAnswer(_)) => {
            Refuse::new(502, "parent_bad_answer", e.to_string())
        }
        StateError::Parent(_) => Refuse::new(502, "parent_unreachable", e.to_string()),
        StateError::Refused { .. } | StateError::BadAnswer(_) => {
            Refuse::new(502, "parent_bad_answer", e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_but_keep_plus() {
        let r = Request {
            method: "GET".into(),
            url: "/v1/mapping?x=1&range=20.0.0.0+256&y=%41%2B".into(),
            headers: vec![],
            body: vec![],
            body_too_large: false,
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        assert_eq!(r.path(), "/v1/mapping");
        assert_eq!(r.query("range").as_deref(), Some("20.0.0.0+256"));
        assert_eq!(r.query("y").as_deref(), Some("A+"));
        assert_eq!(r.query("z"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
