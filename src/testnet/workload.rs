//! The testnet's users: a steady stream of end-user changes through the leaf UASes'
//! HTTP API (uas-api.md §4), signed with each user's agent key (§2.3).
//!
//! Each user owns micronets of 8 units in its UAB. Most changes move a micronet to
//! another ETR; some zero one and split it in two, or zero two halves and join them
//! again (s3.7, s4.3), so splits and joins travel the whole path too. Each thread
//! owns its own users, so a user's changes are never in flight twice at once and
//! the local model of its micronets stays exact. Randomness is seeded.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ivip_wire::addr::unit_addr;
use ivip_wire::{Family, Mab};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::plan::{Plan, UserPlan};
use crate::rng::Rng;
use crate::uas::upstream::HttpClient;

/// A change the UASes accepted: its MAB, per-MAB sequence, when it was handed to
/// the leaf UAS and when the UAS answered "accepted".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The MAB.
    pub mab: Mab,
    /// Its per-MAB sequence.
    pub mab_seq: u64,
    /// When it was sent to the leaf UAS (µs since the Unix epoch).
    pub sent_us: u64,
    /// When the UAS answered "accepted" (µs since the Unix epoch).
    pub at_us: u64,
}

/// Counters the progress line shows.
#[derive(Debug, Default)]
pub struct Counts {
    /// Changes sent.
    pub sent: AtomicU64,
    /// Accepted.
    pub accepted: AtomicU64,
    /// Refused by a UAS or the RUAS (each is a bug in the workload or the system).
    pub refused: AtomicU64,
    /// No answer (a daemon down, a time-out).
    pub failed: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum Net {
    Whole,
    Split,
}

struct User {
    plan: UserPlan,
    nets: Vec<Net>,
    client: Arc<HttpClient>,
}

fn etr(family: Family, r: u64) -> String {
    // Ordinary unicast space outside every MAB and special-purpose block.
    match family {
        Family::V4 => Ipv4Addr::from(0x4200_0000u32 | (r as u32 & 0x00ff_fffe) | 1).to_string(),
        Family::V6 => format!("2a00:{:x}::1", (r & 0xffff) | 1),
    }
}

fn range(family: Family, start: u64, len: u64) -> String {
    format!("{}+{len}", unit_addr(family, start))
}

impl User {
    fn base(&self, i: usize) -> u64 {
        self.plan.uab.start + 8 * i as u64
    }

    /// The command set that defines every micronet of the user.
    fn setup(&mut self, rng: &mut Rng) -> Value {
        let f = self.plan.uab.family;
        let cmds: Vec<Value> = (0..self.nets.len())
            .map(|i| {
                let e = rng.next_u64();
                self.nets[i] = Net::Whole;
                json!({"op": "define", "range": range(f, self.base(i), 8), "etr": etr(f, e)})
            })
            .collect();
        json!({ "commands": cmds })
    }

    /// One random change, and what the micronet will be if it is accepted.
    fn change(&self, rng: &mut Rng) -> (usize, Net, Value) {
        let f = self.plan.uab.family;
        let i = rng.below(self.nets.len() as u64) as usize;
        let s = self.base(i);
        let e = rng.next_u64();
        let toggle = rng.below(100) < 15;
        let (next, cmds) = match (self.nets[i], toggle) {
            (Net::Whole, false) => (
                Net::Whole,
                vec![json!({"op": "set-etr", "range": range(f, s, 8), "etr": etr(f, e)})],
            ),
            (Net::Whole, true) => (
                Net::Split,
                vec![
                    json!({"op": "set-etr", "range": range(f, s, 8), "etr": zero(f)}),
                    json!({"op": "split", "range": range(f, s, 8), "at": 4}),
                    json!({"op": "set-etr", "range": range(f, s, 4), "etr": etr(f, e)}),
                    json!({"op": "set-etr", "range": range(f, s + 4, 4), "etr": etr(f, e >> 16)}),
                ],
            ),
            (Net::Split, false) => (
                Net::Split,
                vec![
                    json!({"op": "set-etr", "range": range(f, s + 4 * (e % 2), 4), "etr": etr(f, e)}),
                ],
            ),
            (Net::Split, true) => (
                Net::Whole,
                vec![
                    json!({"op": "set-etr", "range": range(f, s, 4), "etr": zero(f)}),
                    json!({"op": "set-etr", "range": range(f, s + 4, 4), "etr": zero(f)}),
                    json!({"op": "join", "range": range(f, s, 8)}),
                    json!({"op": "set-etr", "range": range(f, s, 8), "etr": etr(f, e)}),
                ],
            ),
        };
        (i, next, json!({ "commands": cmds }))
    }

    /// POST a command set; `Ok(Some(seq))` when accepted, `Ok(None)` when refused.
    /// A set without an answer (a daemon down) is sent again with the same
    /// idempotency key for up to `RETRY_FOR`, so it is applied at most once and the
    /// local model stays exact (uas-api.md §4, sumuc.md §2).
    fn submit(&self, body: &Value, key: &str) -> Result<Option<u64>, String> {
        let body = body.to_string().into_bytes();
        let path = "/v1/commands";
        let give_up = Instant::now() + RETRY_FOR;
        let a = loop {
            let auth = crate::uas::auth::sign_request(
                &self.plan.key,
                &self.plan.name,
                "POST",
                &self.client.wire_path(path),
                crate::time::unix_now_us(),
                &body,
            );
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ];
            let t = Instant::now();
            let r = self.client.request("POST", path, &headers, &body);
            if t.elapsed() > Duration::from_secs(1) {
                log::warn!(
                    "{}: a change took {:?} to answer: {:?}",
                    self.plan.name,
                    t.elapsed(),
                    r.as_ref().map(|a| a.status)
                );
            }
            match r {
                Ok(a) if a.status < 500 => break a,
                Ok(a) if Instant::now() >= give_up => {
                    return Err(format!(
                        "HTTP {} {}",
                        a.status,
                        String::from_utf8_lossy(&a.body).trim()
                    ));
                }
                Err(e) if Instant::now() >= give_up => return Err(e.to_string()),
                other => {
                    log::warn!(
                        "{}: retrying a change: {:?}",
                        self.plan.name,
                        other
                            .map(|a| format!(
                                "HTTP {} {}",
                                a.status,
                                String::from_utf8_lossy(&a.body)
                            ))
                            .map_err(|e| e.to_string())
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        if a.status == 200 {
            let v: Value = serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
            return Ok(v["mab_seq"].as_u64());
        }
        log::warn!(
            "{}: change refused: HTTP {} {}",
            self.plan.name,
            a.status,
            String::from_utf8_lossy(&a.body).trim()
        );
        Ok(None)
    }
}

/// How long a change without an answer is sent again.
const RETRY_FOR: Duration = Duration::from_secs(30);

fn zero(f: Family) -> &'static str {
    match f {
        Family::V4 => "0.0.0.0",
        Family::V6 => "::",
    }
}

/// The users, split among worker threads.
pub struct Workload {
    groups: Vec<Vec<User>>,
    /// Counters.
    pub counts: Arc<Counts>,
    /// Accepted changes so far.
    pub accepted: Arc<Mutex<Vec<Accepted>>>,
}

impl Workload {
    /// Users from the plan, in `threads` groups.
    ///
    /// # Errors
    /// A UAS URL was bad.
    pub fn new(plan: &Plan, threads: usize) -> Result<Workload, String> {
        let threads = threads.clamp(1, plan.users.len().max(1));
        let mut groups: Vec<Vec<User>> = (0..threads).map(|_| Vec::new()).collect();
        let clients: Vec<Arc<HttpClient>> = plan
            .ruases
            .iter()
            .map(|r| {
                HttpClient::new(&format!("http://{}", r.leaf.1), Duration::from_secs(10))
                    .map(Arc::new)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for (i, u) in plan.users.iter().enumerate() {
            groups[i % threads].push(User {
                nets: vec![Net::Split; plan.shape.micronets_per_user],
                client: clients[u.ruas].clone(),
                plan: u.clone(),
            });
        }
        Ok(Workload {
            groups,
            counts: Arc::new(Counts::default()),
            accepted: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Define every user's micronets (one set per user).
    ///
    /// # Errors
    /// A set was refused or not answered.
    pub fn setup(&mut self, seed: u64) -> Result<(), String> {
        let mut rng = Rng::seeded(seed);
        for g in &mut self.groups {
            for u in g.iter_mut() {
                let body = u.setup(&mut rng);
                let key = format!("setup-{}-{seed}", u.plan.name);
                match u.submit(&body, &key)? {
                    Some(_) => {}
                    None => return Err(format!("{}: the setup set was refused", u.plan.name)),
                }
            }
        }
        Ok(())
    }

    /// Send changes at `rate` per second in all for `duration` (or until `stop`, or
    /// until `limit` changes were sent), spread over the worker threads.
    pub fn run(&mut self, rate: f64, duration: Duration, limit: u64, stop: &AtomicBool, seed: u64) {
        let threads = self.groups.len();
        let per_thread_gap = Duration::from_secs_f64(threads as f64 / rate.max(0.001));
        let end = Instant::now() + duration;
        let counts = &self.counts;
        let accepted = &self.accepted;
        std::thread::scope(|scope| {
            for (t, g) in self.groups.iter_mut().enumerate() {
                scope.spawn(move || {
                    let mut rng =
                        Rng::seeded(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    // Threads start staggered so the load is even.
                    let start = Instant::now() + per_thread_gap.mul_f64(t as f64 / threads as f64);
                    let mut k = 0u32;
                    while !g.is_empty() {
                        let due = start + per_thread_gap * k;
                        k += 1;
                        if let Some(w) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(w);
                        }
                        if stop.load(Ordering::Relaxed)
                            || Instant::now() >= end
                            || counts.sent.load(Ordering::Relaxed) >= limit
                        {
                            break;
                        }
                        let ui = rng.below(g.len() as u64) as usize;
                        let (ni, next, body) = g[ui].change(&mut rng);
                        let n = counts.sent.fetch_add(1, Ordering::Relaxed);
                        let key = format!("{seed}-{t}-{n}");
                        let sent_us = crate::time::unix_now_us();
                        match g[ui].submit(&body, &key) {
                            Ok(Some(seq)) => {
                                let at_us = crate::time::unix_now_us();
                                g[ui].nets[ni] = next;
                                counts.accepted.fetch_add(1, Ordering::Relaxed);
                                accepted.lock().push(Accepted {
                                    mab: g[ui].plan.mab,
                                    mab_seq: seq,
                                    sent_us,
                                    at_us,
                                });
                            }
                            Ok(None) => {
                                counts.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                log::debug!("change not answered: {e}");
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
    }
}
