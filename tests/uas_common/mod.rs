//! Shared pieces of the UAS tests: temporary directories, keys, UAS nodes started
//! in-process on loopback port 0, and a RUAS stand-in that speaks exactly
//! spec/http.md's RUAS section (POST /v1/sumuc, GET /v1/mapping) with signed
//! answers (spec: uas-api.md §6), verifying SUMUC signatures with the configured
//! child keys and checking delegation with `ivip::delegation` — the same check the
//! RUAS uses.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::PasswordHasher as _;
use ivip::daemon::Shutdown;
use ivip::delegation::{Child, Refusal, authorise};
use ivip::range::UnitRange;
use ivip::sign::{Ed25519Verifier, KeyPair};
use ivip::table::{Mapping, Table};
use ivip::uas::api::{MappingAnswer, Micronet, MicronetJson};
use ivip::uas::forward::{ANSWER_SIGNATURE_HEADER, sign_answer};
use ivip::uas::upstream::{Answer, HttpClient};
use ivip_wire::sumuc::{Sumuc, SumucView};
use ivip_wire::{Etr, Mab};
use parking_lot::Mutex;
use serde_json::json;

/// A fresh directory for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ivip-uas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A cheap Argon2id hash (m=256 KiB, t=1) so tests stay fast; the UAS takes the
/// parameters from the string.
pub fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(256, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"saltsaltsaltsalt")
        .unwrap()
        .to_string()
}

pub fn hex(k: &[u8]) -> String {
    ivip_wire::hex::encode(k)
}

/// Write `key` as a key file in `dir`.
pub fn key_file(dir: &Path, name: &str, key: &KeyPair) -> PathBuf {
    let p = dir.join(format!("{name}.key"));
    let _ = std::fs::remove_file(&p);
    ivip::keyfile::write_new(&p, key).unwrap();
    p
}

pub fn etr(s: &str) -> Etr {
    Etr::from(s.parse::<std::net::IpAddr>().unwrap())
}

/// A client with a short timeout.
pub fn client(url: &str) -> HttpClient {
    HttpClient::new(url, Duration::from_secs(20)).unwrap()
}

pub fn json_of(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|_| {
        panic!(
            "status {} body not JSON: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        )
    })
}

// ---------------------------------------------------------------------------
// RUAS stand-in
// ---------------------------------------------------------------------------

/// The stand-in's state, for assertions.
pub struct RuasState {
    /// The master: the same engine as the RUAS's.
    pub table: Table,
    pub mab_seq: u64,
    /// Every SUMUC POST that reached it (including refused ones).
    pub posts: u64,
    /// Accepted SUMUCs, in order.
    pub accepted: Vec<Sumuc>,
    decided: HashMap<([u8; 32], u64), (u16, Vec<u8>)>,
    /// Micronets per mapping page (10,000 in the spec; tests lower it to page).
    pub page_max: usize,
}

pub struct RuasStandin {
    pub url: String,
    pub key: KeyPair,
    pub mab: Mab,
    pub state: Arc<Mutex<RuasState>>,
    stop: Shutdown,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for RuasStandin {
    fn drop(&mut self) {
        self.stop.request();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl RuasStandin {
    pub fn start(mab: &str, children: Vec<Child>, initial: Vec<Micronet>) -> RuasStandin {
        let key = KeyPair::from_seed(&[0x52; 32]);
        let mab: Mab = mab.parse().unwrap();
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr: SocketAddr = server.server_addr().to_ip().unwrap();
        let state = Arc::new(Mutex::new(RuasState {
            table: ivip::uas::state::load_table(&mab, &initial).unwrap(),
            mab_seq: 0,
            posts: 0,
            accepted: Vec::new(),
            decided: HashMap::new(),
            page_max: 10_000,
        }));
        let stop = Shutdown::new();
        let children = Arc::new(children);
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (server, state, stop, children, key) = (
                server.clone(),
                state.clone(),
                stop.clone(),
                children.clone(),
                key.clone(),
            );
            threads.push(std::thread::spawn(move || {
                while !stop.is_requested() {
                    if let Ok(Some(mut rq)) = server.recv_timeout(Duration::from_millis(50)) {
                        let mut body = Vec::new();
                        let _ = rq.as_reader().take(70_000).read_to_end(&mut body);
                        let url = rq.url().to_string();
                        let method = rq.method().as_str().to_string();
                        let (status, out) = handle(&method, &url, &body, &mab, &children, &state);
                        let sig = sign_answer(&key, &method, &url, &body, status, &out);
                        let resp = tiny_http::Response::from_data(out)
                            .with_status_code(status)
                            .with_header(
                                tiny_http::Header::from_bytes(
                                    &b"Content-Type"[..],
                                    &b"application/json"[..],
                                )
                                .unwrap(),
                            )
                            .with_header(
                                tiny_http::Header::from_bytes(
                                    ANSWER_SIGNATURE_HEADER.as_bytes(),
                                    sig.as_bytes(),
                                )
                                .unwrap(),
                            );
                        let _ = rq.respond(resp);
                    }
                }
            }));
        }
        RuasStandin {
            url: format!("http://{addr}"),
            key,
            mab,
            state,
            stop,
            threads,
        }
    }

    pub fn posts(&self) -> u64 {
        self.state.lock().posts
    }

    pub fn micronets(&self) -> Vec<Micronet> {
        let st = self.state.lock();
        micronets_in(&st.table, self.mab.start(), self.mab.len())
    }
}

/// The micronets meeting a range, whole, in order.
pub fn micronets_in(t: &Table, start: u64, len: u64) -> Vec<Micronet> {
    t.range(start, len)
        .filter_map(|m| match m {
            Mapping::Micronet(n) => Some(Micronet {
                start: n.start,
                len: n.len,
                etr: n.etr,
            }),
            _ => None,
        })
        .collect()
}

fn err(status: u16, code: &str, detail: &str) -> (u16, Vec<u8>) {
    (
        status,
        serde_json::to_vec(&json!({"error": code, "detail": detail})).unwrap(),
    )
}

fn query(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%2B", "+").replace("%3A", ":"))
    })
}

fn handle(
    method: &str,
    url: &str,
    body: &[u8],
    mab: &Mab,
    children: &[Child],
    state: &Mutex<RuasState>,
) -> (u16, Vec<u8>) {
    let path = url.split('?').next().unwrap_or("");
    match (method, path) {
        ("POST", "/v1/sumuc") => sumuc(url, body, mab, children, state),
        ("GET", "/v1/mapping") => {
            let Some(r) = query(url, "range") else {
                return err(400, "malformed", "give ?range=");
            };
            let Ok(r) = r.parse::<UnitRange>() else {
                return err(400, "malformed", "bad range");
            };
            if !mab.contains_range(r.start, r.len) || r.family != mab.family() {
                return err(404, "unknown_mab", "range not in one MAB of this RUAS");
            }
            let st = state.lock();
            let hits = micronets_in(&st.table, r.start, r.len);
            let truncated = hits.len() > st.page_max;
            let a = MappingAnswer {
                mab: mab.to_string(),
                mab_seq: st.mab_seq,
                micronets: hits
                    .iter()
                    .take(st.page_max)
                    .map(|m| MicronetJson::from_micronet(mab.family(), m))
                    .collect(),
                truncated,
            };
            (200, serde_json::to_vec(&a).unwrap())
        }
        _ => err(404, "not_found", "no such resource"),
    }
}

fn sumuc(
    url: &str,
    body: &[u8],
    mab: &Mab,
    children: &[Child],
    state: &Mutex<RuasState>,
) -> (u16, Vec<u8>) {
    let mut st = state.lock();
    st.posts += 1;
    if body.len() > 65_536 {
        return err(413, "too_large", "over 65536 bytes");
    }
    let v = match SumucView::new_checked(body) {
        Ok(v) => v,
        Err(e) => return err(400, "malformed", &e.to_string()),
    };
    let now = ivip::time::unix_now_us();
    let known = v.mab() == *mab;
    match authorise(children, &Ed25519Verifier, &v, now, 300) {
        Err(Refusal::NotDelegated { .. }) | Ok(_) if !known => {
            return err(404, "unknown_mab", "not a MAB of this RUAS");
        }
        Err(r) => {
            let status = if matches!(r, Refusal::Stale { .. }) {
                400
            } else {
                403
            };
            let mut j = json!({"error": r.code(), "detail": r.to_string()});
            if let Refusal::NotDelegated { index } = r {
                j["command"] = json!(index);
            }
            return (status, serde_json::to_vec(&j).unwrap());
        }
        Ok(_) => {}
    }
    let s = v.to_owned();
    let dry = query(url, "dry_run").as_deref() == Some("1");
    let key = (s.signer, s.request_id);
    if !dry && let Some(first) = st.decided.get(&key) {
        return first.clone();
    }
    let rid = format!("{:016x}", s.request_id);
    let checked = st.table.check(&s.commands);
    let out = match checked {
        Err(e) => (
            409,
            serde_json::to_vec(&json!({
                "error": "invalid_commands", "detail": e.to_string(),
                "command": e.index, "reason": ivip::uas::state::reason_code(&e.reason)
            }))
            .unwrap(),
        ),
        Ok(ch) if dry => (
            200,
            serde_json::to_vec(&json!({"outcome": "dry_run_ok", "request_id": rid,
                "mab": mab.to_string(),
                "changed": ivip::uas::state::changes_json(mab.family(), &ch)}))
            .unwrap(),
        ),
        Ok(_) if s.execute_at_us > now => {
            st.accepted.push(s.clone());
            (
                202,
                serde_json::to_vec(&json!({"outcome": "scheduled", "request_id": rid,
                    "execute_at_us": s.execute_at_us}))
                .unwrap(),
            )
        }
        Ok(_) => {
            let ch = st.table.apply(&s.commands).unwrap();
            st.table.publish();
            let changed = ivip::uas::state::changes_json(mab.family(), &ch);
            st.mab_seq += 1;
            st.accepted.push(s.clone());
            (
                200,
                serde_json::to_vec(&json!({"outcome": "accepted", "request_id": rid,
                    "mab": mab.to_string(), "mab_seq": st.mab_seq, "changed": changed}))
                .unwrap(),
            )
        }
    };
    if !dry {
        st.decided.insert(key, out.clone());
    }
    out
}

// ---------------------------------------------------------------------------
// UAS nodes
// ---------------------------------------------------------------------------

pub struct Node {
    pub url: String,
    pub key: KeyPair,
    pub audit_dir: PathBuf,
    pub config_path: PathBuf,
    server: Option<ivip::uas::http::UasServer>,
}

impl Node {
    /// Write `toml` (with `{KEY_FILE}` and `{AUDIT}` filled in) to `dir/name.toml`
    /// and start it in-process.
    pub fn start(dir: &Path, name: &str, key: &KeyPair, toml: &str) -> Node {
        let config_path = Node::write(dir, name, key, toml);
        let cfg = ivip::uas::config::UasConfig::load(&config_path).unwrap();
        let audit_dir = cfg.audit_dir.clone();
        let server = ivip::uas::http::start(cfg, Shutdown::new()).unwrap();
        Node {
            url: format!("http://{}", server.local_addr()),
            key: key.clone(),
            audit_dir,
            config_path,
            server: Some(server),
        }
    }

    pub fn write(dir: &Path, name: &str, key: &KeyPair, toml: &str) -> PathBuf {
        let kf = key_file(dir, name, key);
        let text = toml
            .replace("{KEY_FILE}", &kf.display().to_string())
            .replace(
                "{AUDIT}",
                &dir.join(format!("{name}-audit")).display().to_string(),
            );
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn audit(&self) -> Vec<ivip::uas::audit::AuditRecord> {
        ivip::uas::audit::read_records(&self.audit_dir).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

pub fn child(name: &str, key: &KeyPair, ranges: &[&str]) -> Child {
    Child {
        name: name.into(),
        public_key: key.public(),
        ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

/// Micronet in units from text.
pub fn mn(start: &str, len: u64, e: &str) -> Micronet {
    let a: std::net::IpAddr = start.parse().unwrap();
    Micronet {
        start: ivip_wire::addr::unit_of(a).1,
        len,
        etr: etr(e),
    }
}
