//! Whole-path tests of the UAS on loopback: a three-level delegation tree (leaf UAS
//! -> middle UAS -> RUAS) carrying a user's change into the RUAS master, every
//! rejection reason, the audit trail surviving SIGKILL, and `ivip update`.
//!
//! The first test runs the real RUAS (`ivip::ruas`, in-process, its payloads
//! caught on a UDP socket standing for a level-0 replicator). The others use the
//! RUAS stand-in of `uas_common` (spec/http.md RUAS section, the same
//! `ivip::delegation` checks and `ivip::table` engine), which can count every POST
//! that reaches it, so a test can show that nothing was forwarded.

mod uas_common;

use std::io::BufRead as _;
use std::process::{Command as Proc, Stdio};
use std::time::Duration;

use ivip::sign::KeyPair;
use ivip::uas::auth::{basic_header, sign_request};
use ivip::uas::upstream::Answer;
use ivip_wire::sumuc::Sumuc;
use serde_json::json;
use uas_common::*;

const MABS: &str = r#"mabs = ["20.0.0.0/14", "30.0.0.0/16", "2001:db9::/32"]"#;

/// The middle UAS "uas-y": its parent, and "uas-z" (key `zk`) as its child.
fn middle_toml(parent_url: &str, parent_key: &str, zk: &str) -> String {
    format!(
        r#"
name = "uas-y"
key_file = "{{KEY_FILE}}"
listen = "127.0.0.1:0"
audit_dir = "{{AUDIT}}"
{MABS}
[parent]
url = "{parent_url}"
public_key = "{parent_key}"
[[children]]
name = "uas-z"
public_key = "{zk}"
ranges = ["20.1.2.0+512"]
"#
    )
}

/// The leaf UAS "uas-z" under `parent_url`, serving `users`; with a per-user
/// rate limit of 100/s (burst 200) when `rate_limit`.
fn leaf_toml(parent_url: &str, parent_key: &str, users: &str, rate_limit: bool) -> String {
    let rate = if rate_limit {
        "rate_limit = { per_s = 100.0, burst = 200 }\n"
    } else {
        ""
    };
    format!(
        r#"
name = "uas-z"
key_file = "{{KEY_FILE}}"
listen = "127.0.0.1:0"
audit_dir = "{{AUDIT}}"
{MABS}
{rate}[parent]
url = "{parent_url}"
public_key = "{parent_key}"
{users}"#
    )
}

struct Tree {
    ruas: RuasStandin,
    middle: Node,
    leaf: Node,
    agent: KeyPair,
}

fn leaf_users(agent: &KeyPair) -> String {
    format!(
        r#"
[[users]]
name = "alice"
uab = ["20.1.2.0+256"]
password_hash = "{a}"
public_keys = ["{k}"]

[[users]]
name = "bob"
uab = ["20.1.3.0+256"]
password_hash = "{b}"

[[users]]
name = "carol"
uab = ["20.1.4.0+16"]
password_hash = "{c}"

[[users]]
name = "dave"
uab = ["20.1.5.0+16"]
password_hash = "{d}"
rate_limit = {{ per_s = 0.01, burst = 2 }}
"#,
        a = cheap_hash("alice-pw"),
        b = cheap_hash("bob-pw"),
        c = cheap_hash("carol-pw"),
        d = cheap_hash("dave-pw"),
        k = hex(&agent.public()),
    )
}

/// RUAS <- uas-y (20.1.0.0+65536) <- uas-z (20.1.2.0+512) <- users.
fn tree(name: &str) -> Tree {
    tree_with(name, None)
}

fn tree_with(name: &str, leaf_parent_key: Option<[u8; 32]>) -> Tree {
    let dir = tmp(name);
    let y = KeyPair::from_seed(&[0x59; 32]);
    let z = KeyPair::from_seed(&[0x5a; 32]);
    let agent = KeyPair::from_seed(&[0x41; 32]);
    let ruas = RuasStandin::start(
        "20.0.0.0/14",
        vec![child("uas-y", &y, &["20.1.0.0+65536"])],
        vec![
            mn("20.1.2.0", 16, "11.0.0.1"),
            mn("20.1.2.16", 16, "0.0.0.0"),
            mn("20.1.3.0", 8, "11.0.0.7"),
        ],
    );
    let middle = Node::start(
        &dir,
        "uas-y",
        &y,
        &middle_toml(&ruas.url, &hex(&ruas.key.public()), &hex(&z.public())),
    );
    let leaf = Node::start(
        &dir,
        "uas-z",
        &z,
        &leaf_toml(
            &middle.url,
            &hex(&leaf_parent_key.unwrap_or(y.public())),
            &leaf_users(&agent),
            true,
        ),
    );
    Tree {
        ruas,
        middle,
        leaf,
        agent,
    }
}

fn post(node: &Node, user: &str, pw: &str, body: &serde_json::Value) -> Answer {
    let auth = basic_header(user, pw);
    client(&node.url)
        .request(
            "POST",
            "/v1/commands",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &serde_json::to_vec(body).unwrap(),
        )
        .unwrap()
}

fn get(node: &Node, path: &str, auth: Option<&str>) -> Answer {
    let mut h = Vec::new();
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    client(&node.url).request("GET", path, &h, b"").unwrap()
}

fn set(cmds: serde_json::Value) -> serde_json::Value {
    json!({ "commands": cmds })
}

/// The last `done` record of a node's audit trail.
fn last_done(n: &Node) -> ivip::uas::audit::AuditRecord {
    n.audit()
        .into_iter()
        .rev()
        .find(|r| r.event == ivip::uas::audit::AuditEvent::Done)
        .expect("a done record")
}

/// Assert a refusal: status, code, nothing reached the RUAS, the leaf audited it.
fn assert_refused(t: &Tree, a: &Answer, status: u16, code: &str) -> serde_json::Value {
    let v = json_of(a);
    assert_eq!((a.status, v["error"].as_str()), (status, Some(code)), "{v}");
    assert_eq!(t.ruas.posts(), 0, "nothing forwarded for {code}");
    let rec = last_done(&t.leaf);
    assert_eq!(rec.code.as_deref(), Some(code));
    assert_eq!(rec.status, Some(status));
    assert!(rec.from.starts_with("127.0.0.1:"), "{rec:?}");
    v
}

// ---------------------------------------------------------------------------
// The whole path
// ---------------------------------------------------------------------------

#[test]
fn three_level_tree_carries_a_users_change_into_the_real_ruas_and_its_payloads() {
    use ivip::sign::Verifier as _;
    use ivip_wire::payload::{Payload, RecordView};
    let dir = tmp("realruas");
    let ruas_key = KeyPair::from_seed(&[0x52; 32]);
    let y = KeyPair::from_seed(&[0x59; 32]);
    let z = KeyPair::from_seed(&[0x5a; 32]);
    let agent = KeyPair::from_seed(&[0x41; 32]);
    key_file(&dir, "ruas", &ruas_key);
    let replicator = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    replicator
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let ruas_cfg = dir.join("ruas.toml");
    std::fs::write(
        &ruas_cfg,
        format!(
            "ruas_id = 7\nkey_file = \"ruas.key\"\ndata_dir = \"ruas-data\"\n\
             http_listen = \"127.0.0.1:0\"\nudp_bind = \"127.0.0.1:0\"\n\
             replicators = [\"{}\"]\nmabs = [\"20.0.0.0/14\"]\nbatch_window_ms = 0\n\
             [[uas]]\nname = \"uas-y\"\npublic_key = \"{}\"\nranges = [\"20.1.0.0+65536\"]\n\
             [dtls]\ninsecure_plain_udp = true\n",
            replicator.local_addr().unwrap(),
            hex(&y.public())
        ),
    )
    .unwrap();
    let cfg = ivip::ruas::RuasConfig::load(&ruas_cfg).unwrap();
    let ruas = ivip::ruas::start(&cfg, ivip::daemon::Shutdown::new()).unwrap();
    let ruas_url = format!("http://{}", ruas.http_addr());
    let middle = Node::start(
        &dir,
        "uas-y",
        &y,
        &middle_toml(&ruas_url, &hex(&ruas_key.public()), &hex(&z.public())),
    );
    let leaf = Node::start(
        &dir,
        "uas-z",
        &z,
        &leaf_toml(&middle.url, &hex(&y.public()), &leaf_users(&agent), false),
    );

    // The master starts empty: alice defines a micronet, then changes its ETR.
    let a = post(
        &leaf,
        "alice",
        "alice-pw",
        &set(json!([{"op": "define", "range": "20.1.2.0+16", "etr": "11.0.0.1"}])),
    );
    assert_eq!(
        (a.status, json_of(&a)["mab_seq"].as_u64()),
        (200, Some(1)),
        "{}",
        json_of(&a)
    );
    let a = post(
        &leaf,
        "alice",
        "alice-pw",
        &set(json!([{"op": "set-etr", "range": "20.1.2.0+16", "etr": "11.0.0.2"}])),
    );
    let v = json_of(&a);
    assert_eq!(
        (a.status, v["outcome"].as_str()),
        (200, Some("accepted")),
        "{v}"
    );
    assert_eq!(v["mab_seq"], 2);
    assert_eq!(
        v["changed"],
        json!([{"start": "20.1.2.0", "len": 16, "etr": "11.0.0.2"}])
    );

    // The RUAS master holds it ...
    match ruas.reader().lookup("20.1.2.5".parse().unwrap()) {
        ivip::table::Mapping::Micronet(m) => assert_eq!(m.etr, etr("11.0.0.2")),
        other => panic!("{other:?}"),
    }
    // ... the user reads it back through the tree (answers signed by each hop) ...
    let m = json_of(&get(
        &leaf,
        "/v1/micronets",
        Some(&basic_header("alice", "alice-pw")),
    ));
    assert_eq!(m["uabs"][0]["mab_seq"], 2);
    assert_eq!(
        m["uabs"][0]["micronets"],
        json!([{"start": "20.1.2.0", "len": 16, "etr": "11.0.0.2"}])
    );
    // ... and the change leaves the RUAS as a signed payload towards the replicators.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seqs = Vec::new();
    let mut buf = [0u8; 2048];
    while !seqs.contains(&2) {
        assert!(
            std::time::Instant::now() < deadline,
            "no payload with set 2: {seqs:?}"
        );
        if let Ok((n, _)) = replicator.recv_from(&mut buf) {
            let p = Payload::new_checked(&buf[..n]).unwrap();
            assert!(
                ivip::sign::Ed25519Verifier
                    .verify(&ruas_key.public(), p.signed_bytes(), &p.signature())
                    .is_ok()
            );
            for r in p.records() {
                if let RecordView::MabUpdate { mab_seq, .. } = r {
                    seqs.push(mab_seq);
                }
            }
        }
    }
    let mid = middle
        .audit()
        .into_iter()
        .filter(|r| r.path == "/v1/sumuc")
        .collect::<Vec<_>>();
    assert_eq!(mid.len(), 2);
    assert_eq!(mid[1].mab_seq, Some(2));
    drop(leaf);
    drop(middle);
    ruas.stop().unwrap();
}

#[test]
fn three_level_tree_carries_a_users_change_into_the_ruas_master() {
    let t = tree("path");
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &set(json!([{"op": "set-etr", "range": "20.1.2.0+16", "etr": "11.0.0.2"}])),
    );
    let v = json_of(&a);
    assert_eq!(a.status, 200, "{v}");
    assert_eq!(v["outcome"], "accepted");
    assert_eq!(v["mab"], "20.0.0.0/14");
    assert_eq!(v["mab_seq"], 1);
    assert_eq!(
        v["changed"],
        json!([{"start": "20.1.2.0", "len": 16, "etr": "11.0.0.2"}])
    );

    // The RUAS master holds the change; the SUMUC it got was signed by the middle
    // UAS (its direct child) and kept the leaf's request id and origin.
    assert!(t.ruas.micronets().contains(&mn("20.1.2.0", 16, "11.0.0.2")));
    let got: Sumuc = t.ruas.state.lock().accepted[0].clone();
    assert_eq!(got.signer, t.middle.key.public());
    assert_eq!(got.origin, "uas-z/alice");
    assert_eq!(
        format!("{:016x}", got.request_id),
        v["request_id"].as_str().unwrap()
    );

    // The user sees the new mapping, read back through the tree.
    let m = json_of(&get(
        &t.leaf,
        "/v1/micronets",
        Some(&basic_header("alice", "alice-pw")),
    ));
    assert_eq!(m["uabs"][0]["mab_seq"], 1);
    assert_eq!(
        m["uabs"][0]["micronets"][0],
        json!({"start": "20.1.2.0", "len": 16, "etr": "11.0.0.2"})
    );

    // Both UASes audited it: the leaf an intent before signing and the outcome;
    // the middle who the child was.
    let leaf = t.leaf.audit();
    let commands: Vec<_> = leaf.iter().filter(|r| r.path == "/v1/commands").collect();
    assert_eq!(commands.len(), 2);
    assert_eq!(commands[0].event, ivip::uas::audit::AuditEvent::Intent);
    assert_eq!(commands[1].code.as_deref(), Some("accepted"));
    assert_eq!(commands[1].mab_seq, Some(1));
    assert_eq!(commands[1].who, "alice");
    assert_eq!(
        commands[1].commands.as_ref().unwrap()[0],
        "set-etr 20.1.2.0+16 11.0.0.2"
    );
    let mid = t
        .middle
        .audit()
        .into_iter()
        .find(|r| r.path == "/v1/sumuc")
        .unwrap();
    assert_eq!(
        (mid.who.as_str(), mid.auth.as_str()),
        ("child:uas-z", "child")
    );
    assert_eq!(mid.claimed.as_deref(), Some("uas-z/alice"));
    assert_eq!(mid.code.as_deref(), Some("accepted"));
    assert_eq!(mid.request_id, commands[1].request_id);

    // And counted it.
    let m = String::from_utf8(get(&t.leaf, "/metrics", None).body).unwrap();
    assert_eq!(
        ivip::metrics::sample(&m, "ivip_uas_outcomes_total{code=\"accepted\"}"),
        Some(1.0)
    );
    assert_eq!(
        ivip::metrics::sample(&m, "ivip_uas_forwards_total"),
        Some(1.0)
    );
}

#[test]
fn a_dry_run_shows_the_changes_and_sends_nothing() {
    let t = tree("dry");
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &json!({"dry_run": true, "commands": [
            {"op": "set-etr", "range": "20.1.2.0+16", "etr": "0.0.0.0"},
            {"op": "join", "range": "20.1.2.0+32"},
            {"op": "define", "range": "20.1.2.32+8", "etr": "11.0.0.9"}
        ]}),
    );
    let v = json_of(&a);
    assert_eq!(
        (a.status, v["outcome"].as_str()),
        (200, Some("dry_run_ok")),
        "{v}"
    );
    assert_eq!(
        v["changed"],
        json!([
            {"start": "20.1.2.0", "len": 32, "etr": "0.0.0.0"},
            {"start": "20.1.2.32", "len": 8, "etr": "11.0.0.9"}
        ])
    );
    assert_eq!(t.ruas.posts(), 0, "a dry run sends nothing");
    assert_eq!(t.ruas.micronets()[0], mn("20.1.2.0", 16, "11.0.0.1"));
    assert_eq!(last_done(&t.leaf).code.as_deref(), Some("dry_run_ok"));
}

#[test]
fn split_and_join_travel_as_one_ordered_set() {
    let t = tree("splitjoin");
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &set(json!([
            {"op": "set-etr", "range": "20.1.2.0+16", "etr": "0.0.0.0"},
            {"op": "split", "range": "20.1.2.0+16", "at": 4},
            {"op": "set-etr", "range": "20.1.2.0+4", "etr": "11.0.0.3"},
            {"op": "set-etr", "range": "20.1.2.4+12", "etr": "11.0.0.4"}
        ])),
    );
    assert_eq!(a.status, 200, "{}", json_of(&a));
    let nets = t.ruas.micronets();
    assert!(nets.contains(&mn("20.1.2.0", 4, "11.0.0.3")), "{nets:?}");
    assert!(nets.contains(&mn("20.1.2.4", 12, "11.0.0.4")));
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &set(json!([
            {"op": "set-etr", "range": "20.1.2.0+4", "etr": "0.0.0.0"},
            {"op": "set-etr", "range": "20.1.2.4+12", "etr": "0.0.0.0"},
            {"op": "join", "range": "20.1.2.0+32"}
        ])),
    );
    assert_eq!(a.status, 200, "{}", json_of(&a));
    assert!(t.ruas.micronets().contains(&mn("20.1.2.0", 32, "0.0.0.0")));
    assert_eq!(t.ruas.state.lock().mab_seq, 2);
}

#[test]
fn a_retry_with_the_same_idempotency_key_is_applied_once() {
    let t = tree("idem");
    let body = serde_json::to_vec(&set(
        json!([{"op": "set-etr", "range": "20.1.2.0+16", "etr": "11.0.0.5"}]),
    ))
    .unwrap();
    let auth = basic_header("alice", "alice-pw");
    let send = || {
        client(&t.leaf.url)
            .request(
                "POST",
                "/v1/commands",
                &[("Authorization", &auth), ("Idempotency-Key", "monitor-42")],
                &body,
            )
            .unwrap()
    };
    let first = json_of(&send());
    let second = json_of(&send());
    assert_eq!(first["outcome"], "accepted");
    assert_eq!(
        first, second,
        "the RUAS answers a repeated request id with its first outcome"
    );
    assert_eq!(t.ruas.state.lock().accepted.len(), 1);
}

#[test]
fn mapping_reads_page_through_truncated_answers() {
    let t = tree("paging");
    t.ruas.state.lock().page_max = 1;
    let m = json_of(&get(
        &t.leaf,
        "/v1/micronets",
        Some(&basic_header("alice", "alice-pw")),
    ));
    let nets = m["uabs"][0]["micronets"].as_array().unwrap();
    assert_eq!(nets.len(), 2, "{m}");
    assert_eq!(nets[1]["start"], "20.1.2.16");
}

// ---------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------

#[test]
fn wrong_credentials_are_refused_and_audited() {
    let t = tree("creds");
    let body = set(json!([{"op": "set-etr", "range": "20.1.2.0+16", "etr": "11.0.0.2"}]));
    let a = post(&t.leaf, "alice", "wrong", &body);
    assert_refused(&t, &a, 401, "unauthorized");
    let rec = last_done(&t.leaf);
    assert_eq!(
        (rec.who.as_str(), rec.claimed.as_deref()),
        ("-", Some("alice"))
    );
    let a = post(&t.leaf, "mallory", "x", &body);
    assert_refused(&t, &a, 401, "unauthorized");
    let a = client(&t.leaf.url)
        .request(
            "POST",
            "/v1/commands",
            &[],
            &serde_json::to_vec(&body).unwrap(),
        )
        .unwrap();
    assert_refused(&t, &a, 401, "unauthorized");
    assert!(a.header("www-authenticate").is_some());
    let a = get(&t.leaf, "/v1/micronets", Some("Bearer 00ff"));
    assert_refused(&t, &a, 401, "unauthorized");
    let a = get(&t.leaf, "/v1/me", Some("Digest nonsense"));
    assert_refused(&t, &a, 401, "unauthorized");
}

#[test]
fn a_range_outside_the_uab_is_refused() {
    let t = tree("uab");
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &set(json!([
            {"op": "set-etr", "range": "20.1.2.0+16", "etr": "11.0.0.2"},
            {"op": "set-etr", "range": "20.1.3.0+8", "etr": "11.0.0.2"}
        ])),
    );
    let v = assert_refused(&t, &a, 403, "outside_uab");
    assert_eq!(v["command"], 1, "names bob's micronet, the second command");
    // Straddling the end of the UAB is outside too.
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &set(json!([{"op": "delete", "range": "20.1.2.250+8"}])),
    );
    assert_refused(&t, &a, 403, "outside_uab");
}

#[test]
fn disallowed_etrs_are_refused_with_their_reason() {
    let t = tree("etr");
    for (etr, reason) in [
        ("10.0.0.1", "private"),
        ("192.168.7.7", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.0.9", "link_local"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "reserved"),
        ("20.2.0.1", "inside_mab"),
        ("30.0.0.1", "inside_mab"),
        ("2001:4860::1", "wrong_family"),
    ] {
        let a = post(
            &t.leaf,
            "alice",
            "alice-pw",
            &set(json!([{"op": "set-etr", "range": "20.1.2.0+16", "etr": etr}])),
        );
        let v = assert_refused(&t, &a, 400, "bad_etr");
        assert_eq!(v["reason"], reason, "{etr}: {v}");
        assert_eq!(v["command"], 0);
    }
}

#[test]
fn malformed_json_and_oversized_bodies_are_refused() {
    let t = tree("malformed");
    let auth = basic_header("alice", "alice-pw");
    for body in [
        &b"{not json"[..],
        br#"{"commands": [{"op": "teleport", "range": "20.1.2.0+1"}]}"#,
        br#"{"commands": [{"op": "join", "range": "20.1.2.0+0"}]}"#,
        br#"{"commands": []}"#,
        br#"{"commands": [{"op": "split", "range": "20.1.2.0+16", "at": 16}]}"#,
    ] {
        let a = client(&t.leaf.url)
            .request("POST", "/v1/commands", &[("Authorization", &auth)], body)
            .unwrap();
        assert_refused(&t, &a, 400, "malformed");
    }
    let big = vec![b' '; 70_000];
    let a = client(&t.leaf.url)
        .request("POST", "/v1/commands", &[("Authorization", &auth)], &big)
        .unwrap();
    assert_refused(&t, &a, 413, "too_large");
}

#[test]
fn a_set_invalid_against_current_state_is_refused_before_signing() {
    let t = tree("state");
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &set(json!([{"op": "split", "range": "20.1.2.0+16", "at": 4}])),
    );
    let v = assert_refused(&t, &a, 409, "invalid_commands");
    assert_eq!(
        (v["command"].as_u64(), v["reason"].as_str()),
        (Some(0), Some("not_zero"))
    );
    let a = post(
        &t.leaf,
        "alice",
        "alice-pw",
        &set(json!([{"op": "define", "range": "20.1.2.8+16", "etr": "11.0.0.3"}])),
    );
    let v = assert_refused(&t, &a, 409, "invalid_commands");
    assert_eq!(v["reason"], "overlap");
    assert!(
        t.leaf
            .audit()
            .iter()
            .all(|r| r.event != ivip::uas::audit::AuditEvent::Intent)
    );
}

#[test]
fn the_rate_limit_answers_429_with_retry_after() {
    let t = tree("rate");
    let auth = basic_header("dave", "dave-pw");
    for _ in 0..2 {
        assert_eq!(get(&t.leaf, "/v1/me", Some(&auth)).status, 200);
    }
    let a = get(&t.leaf, "/v1/me", Some(&auth));
    assert_refused(&t, &a, 429, "rate_limited");
    let secs: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=100).contains(&secs), "{secs}");
    // Other users are not affected.
    assert_eq!(
        get(&t.leaf, "/v1/me", Some(&basic_header("alice", "alice-pw"))).status,
        200
    );
}

#[test]
fn a_parent_refuses_what_its_child_was_not_delegated() {
    let t = tree("delegation");
    // carol's UAB is configured at the leaf but not delegated to it by the middle.
    let a = post(
        &t.leaf,
        "carol",
        "carol-pw",
        &set(json!([{"op": "define", "range": "20.1.4.0+16", "etr": "11.0.0.8"}])),
    );
    let v = json_of(&a);
    assert_eq!(
        (a.status, v["error"].as_str()),
        (403, Some("not_delegated")),
        "{v}"
    );
    assert_eq!(v["command"], 0);
    assert_eq!(t.ruas.posts(), 0, "the middle forwarded nothing");
    assert_eq!(last_done(&t.middle).code.as_deref(), Some("not_delegated"));
    assert_eq!(last_done(&t.leaf).code.as_deref(), Some("not_delegated"));
}

#[test]
fn a_parent_refuses_forged_stale_or_unknown_child_sumucs() {
    let t = tree("forged");
    let z = KeyPair::from_seed(&[0x5a; 32]);
    let now = ivip::time::unix_now_us();
    let s = |start: &str| Sumuc {
        signer: [0; 32],
        request_id: 5,
        timestamp_us: 0,
        execute_at_us: 0,
        mab: "20.0.0.0/14".parse().unwrap(),
        origin: "uas-z/alice".into(),
        commands: vec![ivip_wire::Command::Delete {
            start: mn(start, 1, "0.0.0.0").start,
            len: 16,
        }],
        signature: [0; 64],
    };
    let sign = ivip::uas::forward::sign_sumuc;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"garbage".to_vec(), 400, "malformed"),
        (
            sign(s("20.1.2.0"), &KeyPair::from_seed(&[1; 32]), now).unwrap(),
            403,
            "unknown_signer",
        ),
        (
            {
                let mut b = sign(s("20.1.2.0"), &z, now).unwrap();
                let n = b.len();
                b[n - 3] ^= 0x40;
                b
            },
            403,
            "bad_signature",
        ),
        (
            sign(s("20.1.2.0"), &z, now - 3_600_000_000).unwrap(),
            400,
            "stale",
        ),
        (sign(s("20.1.8.0"), &z, now).unwrap(), 403, "not_delegated"),
    ];
    for (body, status, code) in cases {
        let a = client(&t.middle.url)
            .request(
                "POST",
                "/v1/sumuc",
                &[("Content-Type", "application/octet-stream")],
                &body,
            )
            .unwrap();
        let v = json_of(&a);
        assert_eq!((a.status, v["error"].as_str()), (status, Some(code)), "{v}");
        assert_eq!(last_done(&t.middle).code.as_deref(), Some(code));
    }
    assert_eq!(t.ruas.posts(), 0);
}

#[test]
fn agents_authenticate_with_ed25519_keys_and_replays_are_refused() {
    let t = tree("agent");
    let body = serde_json::to_vec(&set(
        json!([{"op": "set-etr", "range": "20.1.2.0+16", "etr": "11.0.0.6"}]),
    ))
    .unwrap();
    let h = sign_request(
        &t.agent,
        "alice",
        "POST",
        "/v1/commands",
        ivip::time::unix_now_us(),
        &body,
    );
    let a = client(&t.leaf.url)
        .request("POST", "/v1/commands", &[("Authorization", &h)], &body)
        .unwrap();
    assert_eq!(a.status, 200, "{}", json_of(&a));
    assert_eq!(last_done(&t.leaf).auth, "key");
    let posts = t.ruas.posts();
    let again = client(&t.leaf.url)
        .request("POST", "/v1/commands", &[("Authorization", &h)], &body)
        .unwrap();
    assert_eq!(again.status, 401);
    assert_eq!(
        json_of(&again)["detail"],
        "this signed request was already used"
    );
    // Signed by a key that is not alice's.
    let other = KeyPair::from_seed(&[0x42; 32]);
    let h = sign_request(
        &other,
        "alice",
        "POST",
        "/v1/commands",
        ivip::time::unix_now_us(),
        &body,
    );
    let a = client(&t.leaf.url)
        .request("POST", "/v1/commands", &[("Authorization", &h)], &body)
        .unwrap();
    assert_eq!(a.status, 401);
    assert_eq!(t.ruas.posts(), posts, "nothing forwarded after the first");
}

#[test]
fn login_sessions_work_and_logout_ends_them() {
    let t = tree("session");
    let a = client(&t.leaf.url)
        .request(
            "POST",
            "/v1/login",
            &[],
            br#"{"user": "alice", "password": "alice-pw"}"#,
        )
        .unwrap();
    let token = json_of(&a)["token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let me = json_of(&get(&t.leaf, "/v1/me", Some(&bearer)));
    assert_eq!(me["user"], "alice");
    assert_eq!(
        me["uabs"][0],
        json!({"range": "20.1.2.0+256", "mab": "20.0.0.0/14"})
    );
    let a = client(&t.leaf.url)
        .request("POST", "/v1/logout", &[("Authorization", &bearer)], b"")
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(get(&t.leaf, "/v1/me", Some(&bearer)).status, 401);
    let a = client(&t.leaf.url)
        .request(
            "POST",
            "/v1/login",
            &[],
            br#"{"user": "alice", "password": "nope"}"#,
        )
        .unwrap();
    assert_refused(&t, &a, 401, "unauthorized");
}

#[test]
fn answers_are_signed_and_a_wrong_parent_key_is_refused() {
    let t = tree_with("parentkey", Some(KeyPair::from_seed(&[0x99; 32]).public()));
    let a = get(
        &t.leaf,
        "/v1/micronets",
        Some(&basic_header("alice", "alice-pw")),
    );
    let v = assert_refused(&t, &a, 502, "parent_bad_answer");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("not signed by the configured parent key")
    );
    // The leaf's own answer is signed with its key.
    let sig = a.header("ivip-answer-signature").unwrap();
    let sig: [u8; 64] = ivip_wire::hex::decode(sig).unwrap().try_into().unwrap();
    let msg = ivip::uas::forward::answer_message("GET", "/v1/micronets", b"", a.status, &a.body);
    use ivip::sign::Verifier as _;
    assert!(
        ivip::sign::Ed25519Verifier
            .verify(&t.leaf.key.public(), &msg, &sig)
            .is_ok()
    );
}

// ---------------------------------------------------------------------------
// The binary: audit trail across SIGKILL, ivip update, hash-password
// ---------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_ivip");

/// Start `ivip uas --config`, wait (bounded) for its "listening" line.
fn spawn_uas(config: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Proc::new(BIN)
        .args(["uas", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening ") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("ivip uas printed its address");
    (child, format!("http://{addr}"))
}

fn two_level(name: &str) -> (std::path::PathBuf, RuasStandin, std::path::PathBuf, KeyPair) {
    let dir = tmp(name);
    let z = KeyPair::from_seed(&[0x5a; 32]);
    let agent = KeyPair::from_seed(&[0x41; 32]);
    let ruas = RuasStandin::start(
        "20.0.0.0/14",
        vec![child("uas-z", &z, &["20.1.2.0+512"])],
        vec![mn("20.1.2.0", 16, "11.0.0.1")],
    );
    let cfg = Node::write(
        &dir,
        "uas-z",
        &z,
        &leaf_toml(
            &ruas.url,
            &hex(&ruas.key.public()),
            &leaf_users(&agent),
            true,
        ),
    );
    (dir, ruas, cfg, agent)
}

#[test]
fn the_audit_trail_survives_sigkill() {
    let (dir, ruas, cfg, _) = two_level("sigkill");
    let (mut proc_, url) = spawn_uas(&cfg);
    let c = client(&url);
    let good = basic_header("alice", "alice-pw");
    let mut expect = Vec::new();
    for i in 0..6u8 {
        let (auth, etr, code) = if i % 2 == 0 {
            (good.as_str(), format!("11.0.0.{}", 20 + i), "accepted")
        } else {
            (good.as_str(), "10.0.0.1".to_string(), "bad_etr")
        };
        let body = serde_json::to_vec(&set(
            json!([{"op": "set-etr", "range": "20.1.2.0+16", "etr": etr}]),
        ))
        .unwrap();
        let a = c
            .request("POST", "/v1/commands", &[("Authorization", auth)], &body)
            .unwrap();
        let v = json_of(&a);
        assert_eq!(
            v["outcome"].as_str().or(v["error"].as_str()),
            Some(code),
            "{v}"
        );
        expect.push(code);
    }
    let a = c
        .request(
            "GET",
            "/v1/me",
            &[("Authorization", &basic_header("alice", "no"))],
            b"",
        )
        .unwrap();
    assert_eq!(a.status, 401);
    expect.push("unauthorized");
    // Every answer above was given after its record was fsynced: kill -9 now.
    proc_.kill().unwrap();
    proc_.wait().unwrap();
    let audit = dir.join("uas-z-audit");
    let recs = ivip::uas::audit::read_records(&audit).unwrap();
    let done: Vec<&str> = recs
        .iter()
        .filter(|r| r.event == ivip::uas::audit::AuditEvent::Done)
        .map(|r| r.code.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(done, expect);
    let intents = recs
        .iter()
        .filter(|r| r.event == ivip::uas::audit::AuditEvent::Intent)
        .count();
    assert_eq!(intents, 3);
    assert_eq!(ruas.state.lock().accepted.len(), 3);
    // A restart recovers the trail and appends after it.
    let (mut proc_, url) = spawn_uas(&cfg);
    assert_eq!(
        client(&url)
            .request("GET", "/v1/me", &[("Authorization", &good)], b"")
            .unwrap()
            .status,
        200
    );
    proc_.kill().unwrap();
    proc_.wait().unwrap();
    let after = ivip::uas::audit::read_records(&audit).unwrap();
    assert_eq!(after.len(), recs.len() + 1);
    assert_eq!(after[..recs.len()], recs[..]);
    // The operator's view.
    let out = Proc::new(BIN)
        .args(["uas", "audit"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        after.len()
    );
}

#[test]
fn ivip_update_submits_and_dry_runs_from_the_command_line() {
    let (dir, ruas, cfg, agent) = two_level("cli");
    let (mut proc_, url) = spawn_uas(&cfg);
    let pw = dir.join("alice.pw");
    std::fs::write(&pw, "alice-pw\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Proc::new(BIN)
            .args([
                "update",
                "--uas",
                &url,
                "--user",
                "alice",
                "--password-file",
            ])
            .arg(&pw)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "--dry-run",
        "set-etr",
        "20.1.2.0+16",
        "0.0.0.0",
        "split",
        "20.1.2.0+16",
        "at",
        "4",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("dry_run_ok"), "{out}");
    assert!(out.contains("20.1.2.0+4 -> 0.0.0.0"), "{out}");
    assert_eq!(ruas.posts(), 0);
    let (code, out, err) = run(&["set-etr", "20.1.2.0-20.1.2.15", "11.0.0.77"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("accepted request "), "{out}");
    assert!(out.contains("mab 20.0.0.0/14 sequence 1"), "{out}");
    assert!(ruas.micronets().contains(&mn("20.1.2.0", 16, "11.0.0.77")));
    let (code, _, err) = run(&["set-etr", "20.1.2.0+16", "127.0.0.1"]);
    assert_eq!(code, 3);
    assert!(err.contains("refused (400): bad_etr"), "{err}");
    let (code, out, _) = run(&["--list"]);
    assert_eq!(code, 0);
    assert!(out.contains("20.1.2.0+16  11.0.0.77"), "{out}");
    let (code, _, err) = run(&["split", "20.1.2.0+16", "4"]);
    assert_eq!(code, 2, "usage error: {err}");
    // An agent key instead of a password, and the UAS's answer signature checked.
    let kf = key_file(&dir, "agent", &agent);
    let zk = hex(&KeyPair::from_seed(&[0x5a; 32]).public());
    let out = Proc::new(BIN)
        .args(["update", "--uas", &url, "--user", "alice", "--key-file"])
        .arg(&kf)
        .args(["--uas-key", &zk, "set-etr", "20.1.2.0+16", "11.0.0.78"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGTERM stops the daemon cleanly (bounded wait).
    sigterm(proc_.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = proc_.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ivip uas ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

fn sigterm(pid: u32) {
    // SAFETY: kill(2) on the id of a child process this test started and has not
    // reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

#[test]
fn hash_password_makes_a_hash_the_uas_accepts() {
    let dir = tmp("hashpw");
    let pw = dir.join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let out = Proc::new(BIN)
        .args(["uas", "hash-password", "--password-file"])
        .arg(&pw)
        .output()
        .unwrap();
    assert!(out.status.success());
    let h = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(h.starts_with("$argon2id$"), "{h}");
    assert!(ivip::uas::auth::verify_password(&h, "s3cret"));
    assert!(!ivip::uas::auth::verify_password(&h, "s3cret\n"));
}

#[test]
fn the_example_config_loads() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/examples/uas.toml");
    let c = ivip::uas::config::UasConfig::load(&p).unwrap();
    assert_eq!(c.name, "uas-z");
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.children.len(), 1);
    assert!(c.key_file.ends_with("uas-z.key"));
}
