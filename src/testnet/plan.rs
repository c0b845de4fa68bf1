//! The testnet's plan: who runs where, with which keys and configs (issue 8).
//!
//! Everything is generated into one directory: key files, one TOML config per
//! daemon, the QSDs' directory file. Every daemon is started from its config file
//! through the same `load` function `ivip ROLE --config FILE` uses, so the testnet
//! exercises the real start-up path. Ports are chosen free on 127.0.0.1 when the
//! plan is made.
//!
//! Links are DTLS by default (issue 9): every daemon gets an identity made as
//! `ivip keygen` makes one, and pins every other node's key at its UDP address
//! (RUASes, whose UDP port is chosen at start, by IP); snapshots and MPS payloads
//! go over HTTPS with the same pins. `Knobs::insecure_plain_udp` runs the old
//! plain network instead.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ivip_wire::Mab;

use crate::dtls::Fingerprint;
use crate::dtls::identity::{preferred_kind, write_new_identity};
use crate::range::UnitRange;
use crate::sign::KeyPair;

/// The shape of the network.
#[derive(Debug, Clone)]
pub struct Shape {
    /// RUASes (each with its own MABs and UAS tree).
    pub ruases: usize,
    /// IPv4 MABs per RUAS (each a /16).
    pub v4_mabs: usize,
    /// IPv6 MABs per RUAS (each a /40 of /64 units).
    pub v6_mabs: usize,
    /// Users per MAB (each with one UAB).
    pub users_per_mab: usize,
    /// Micronets per user (each 8 units).
    pub micronets_per_user: usize,
    /// Level-0 replicators (a full mesh).
    pub level0: usize,
    /// Replicators at each further level.
    pub levels: Vec<usize>,
    /// QSDs.
    pub qsds: usize,
    /// MPSes.
    pub mpses: usize,
    /// QSD query workers.
    pub qsd_workers: usize,
}

impl Default for Shape {
    /// The testnet: 2 RUASes with several MABs of each family, 4 level-0
    /// replicators, two further levels, 20 QSDs, 2 MPSes (and a QSC).
    fn default() -> Self {
        Shape {
            ruases: 2,
            v4_mabs: 2,
            v6_mabs: 1,
            users_per_mab: 8,
            micronets_per_user: 16,
            level0: 4,
            levels: vec![4, 6],
            qsds: 20,
            mpses: 2,
            qsd_workers: 1,
        }
    }
}

impl Shape {
    /// A smaller network for the whole-system tests.
    pub fn small() -> Shape {
        Shape {
            ruases: 2,
            v4_mabs: 1,
            v6_mabs: 1,
            users_per_mab: 4,
            micronets_per_user: 8,
            level0: 4,
            levels: vec![2, 2],
            qsds: 4,
            mpses: 2,
            qsd_workers: 1,
        }
    }
}

/// Knobs that change configs.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Loss on every link, in the send path.
    pub loss_percent: f64,
    /// The RUASes' batch window.
    pub batch_window_ms: u64,
    /// Feed silence before failover.
    pub silence_ms: u64,
    /// RUAS heartbeat.
    pub heartbeat_ms: u64,
    /// RUAS snapshot interval.
    pub snapshot_interval_s: u64,
    /// Plain UDP and HTTP instead of DTLS and HTTPS.
    pub insecure_plain_udp: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            loss_percent: 0.0,
            batch_window_ms: 0,
            silence_ms: 600,
            heartbeat_ms: 200,
            snapshot_interval_s: 10,
            insecure_plain_udp: false,
        }
    }
}

/// A user and where it may change mappings.
#[derive(Debug, Clone)]
pub struct UserPlan {
    /// Login name.
    pub name: String,
    /// Its agent key.
    pub key: KeyPair,
    /// Its UAB.
    pub uab: UnitRange,
    /// The MAB holding it.
    pub mab: Mab,
    /// Which RUAS (index).
    pub ruas: usize,
}

/// One RUAS and its UAS tree.
#[derive(Debug, Clone)]
pub struct RuasPlan {
    /// Its 7-bit id.
    pub id: u8,
    /// Its config file.
    pub config: PathBuf,
    /// HTTP.
    pub http: SocketAddr,
    /// Its key.
    pub key: KeyPair,
    /// Its MABs.
    pub mabs: Vec<Mab>,
    /// The middle UAS's config and address.
    pub middle: (PathBuf, SocketAddr),
    /// The leaf UAS's config and address (users talk to it).
    pub leaf: (PathBuf, SocketAddr),
    /// Its DTLS identity (key and certificate files), unless plain.
    pub dtls: Option<(PathBuf, PathBuf)>,
}

/// A replicator.
#[derive(Debug, Clone)]
pub struct ReplicatorPlan {
    /// Level (0 = the mesh).
    pub level: usize,
    /// Config file.
    pub config: PathBuf,
    /// Its address.
    pub addr: SocketAddr,
    /// Its DTLS key's fingerprint, unless plain.
    pub fingerprint: Option<Fingerprint>,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The directory everything lives in.
    pub dir: PathBuf,
    /// Shape.
    pub shape: Shape,
    /// RUASes.
    pub ruases: Vec<RuasPlan>,
    /// Users.
    pub users: Vec<UserPlan>,
    /// Replicators by level.
    pub replicators: Vec<Vec<ReplicatorPlan>>,
    /// MPS configs and HTTP addresses.
    pub mpses: Vec<(PathBuf, SocketAddr)>,
    /// QSD configs and (query, admin) addresses.
    pub qsds: Vec<(PathBuf, SocketAddr, SocketAddr)>,
    /// The QSC config and address.
    pub qsc: (PathBuf, SocketAddr),
    /// The ports, held until the daemons start ([`Plan::release_ports`]).
    pub reserved: Reserved,
}

impl Plan {
    /// Let go of the reserved ports, just before the daemons bind them.
    pub fn release_ports(&mut self) {
        self.reserved = Reserved::default();
    }
}

/// Ports picked for the plan, held open until the daemons start so that no two
/// picks (nor another program) get the same port in between.
#[derive(Debug, Default)]
pub struct Reserved {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

impl Reserved {
    fn udp(&mut self) -> std::io::Result<SocketAddr> {
        let s = pick_port(std::net::UdpSocket::bind)?;
        let a = s.local_addr()?;
        self.udp.push(s);
        Ok(a)
    }

    fn tcp(&mut self) -> std::io::Result<SocketAddr> {
        let s = pick_port(std::net::TcpListener::bind)?;
        let a = s.local_addr()?;
        self.tcp.push(s);
        Ok(a)
    }
}

/// The lowest port the kernel hands out for outgoing connections (Linux's
/// `ip_local_port_range`; 32768 where that cannot be read).
fn ephemeral_low() -> u16 {
    static LOW: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *LOW.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768)
    })
}

/// Bind a loopback port below the ephemeral range. A port taken with `:0` comes
/// from that range, and once the plan lets it go (between reserving and the daemon
/// binding it, or while a killed daemon restarts) the kernel may give it to any
/// outgoing connection. Below the range only another explicit bind can take it, and
/// the picks walk the range from a per-process start, so testnets in one process
/// (or two processes) do not pick the same port twice in a row.
fn pick_port<S>(bind: impl Fn(SocketAddr) -> std::io::Result<S>) -> std::io::Result<S> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = u32::from(ephemeral_low()).max(LOW + 1_000);
    let span = high - LOW;
    let start = (std::process::id().wrapping_mul(7_919)) % span;
    let _ = NEXT.compare_exchange(0, start + 1, Ordering::Relaxed, Ordering::Relaxed);
    let mut last = None;
    for _ in 0..1_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + n % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        match bind(SocketAddr::from(([127, 0, 0, 1], port))) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    // Nothing free below the range: let the kernel choose.
    match bind(SocketAddr::from(([127, 0, 0, 1], 0))) {
        Ok(s) => Ok(s),
        Err(e) => Err(last.unwrap_or(e)),
    }
}

impl Clone for Reserved {
    /// A clone holds nothing: the ports stay with the original.
    fn clone(&self) -> Self {
        Reserved::default()
    }
}

fn hex(k: &KeyPair) -> String {
    ivip_wire::hex::encode(&k.public())
}

fn quoted(v: &[SocketAddr]) -> String {
    v.iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// A node's DTLS identity and where peers pin it.
struct Node {
    name: String,
    fingerprint: Fingerprint,
    /// `ip:port`, or an IP for a node whose port is chosen at start.
    pin_at: String,
}

/// Identities of every node, and the `[dtls]` section each config gets.
struct Dtls {
    plain: bool,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Dtls {
    /// Make `name`'s identity, pinned at `pin_at` by the others.
    fn node(&mut self, name: &str, pin_at: String) -> std::io::Result<Option<Fingerprint>> {
        if self.plain {
            return Ok(None);
        }
        let (k, c) = self.files(name);
        let id = write_new_identity(&k, &c, preferred_kind(), name)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.nodes.push(Node {
            name: name.to_string(),
            fingerprint: id.fingerprint(),
            pin_at,
        });
        Ok(Some(id.fingerprint()))
    }

    fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}-dtls.key")),
            self.dir.join(format!("{name}-dtls.crt")),
        )
    }

    /// `[dtls]` for `name`: its identity and a pin for every other node.
    fn section(&self, name: &str) -> String {
        if self.plain {
            return "[dtls]\ninsecure_plain_udp = true\n".into();
        }
        // Every node shares 127.0.0.1, so the per-IP handshake limits (sized for
        // one node per address) are raised to the totals.
        let mut t = format!(
            "[dtls]\nkey_file = \"{name}-dtls.key\"\ncert_file = \"{name}-dtls.crt\"\n\
             half_open_per_ip_max = 64\nhello_per_ip_per_s = 2000\n"
        );
        for n in self.nodes.iter().filter(|n| n.name != name) {
            let _ = writeln!(
                t,
                "[[dtls.peer]]\nname = \"{}\"\nfingerprint = \"{}\"\naddress = [\"{}\"]",
                n.name, n.fingerprint, n.pin_at
            );
        }
        t
    }

    /// `https` or `http`.
    fn scheme(&self) -> &'static str {
        if self.plain { "http" } else { "https" }
    }
}

fn key_file(dir: &Path, name: &str) -> std::io::Result<KeyPair> {
    let k = KeyPair::generate();
    crate::keyfile::write_new(&dir.join(format!("{name}.key")), &k)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(k)
}

/// Make the plan: keys, configs and the directory file, in `dir`.
///
/// # Errors
/// File or socket errors.
pub fn make(dir: &Path, shape: &Shape, knobs: &Knobs) -> std::io::Result<Plan> {
    std::fs::create_dir_all(dir)?;
    let mut ports = Reserved::default();
    let mut dtls = Dtls {
        plain: knobs.insecure_plain_udp,
        dir: dir.to_path_buf(),
        nodes: Vec::new(),
    };
    // Configs are written once every node's identity exists (each pins the rest).
    let mut configs: Vec<(PathBuf, String, String)> = Vec::new();
    let fault = |seed: u64| {
        format!(
            "[fault]\nloss_percent = {}\nseed = {seed}\n",
            knobs.loss_percent
        )
    };
    let timing = format!(
        "[feed_timing]\nsilence_ms = {}\nsubscribe_retry_ms = 100\nprobe_interval_ms = 300\nreturn_hold_ms = 1000\n",
        knobs.silence_ms
    );

    // Replicators, level by level.
    let mut levels: Vec<Vec<SocketAddr>> = Vec::new();
    levels.push(
        (0..shape.level0)
            .map(|_| ports.udp())
            .collect::<std::io::Result<_>>()?,
    );
    for &n in &shape.levels {
        levels.push(
            (0..n)
                .map(|_| ports.udp())
                .collect::<std::io::Result<_>>()?,
        );
    }
    let mut replicators = Vec::new();
    for (lvl, addrs) in levels.iter().enumerate() {
        let mut plans = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let mut t = format!("listen = \"{a}\"\nworkers = 1\n");
            if lvl == 0 {
                let mesh: Vec<SocketAddr> = addrs.iter().filter(|b| *b != a).copied().collect();
                let _ = writeln!(
                    t,
                    "ruas_sources = [\"127.0.0.1\"]\nmesh = [{}]",
                    quoted(&mesh)
                );
            } else {
                // Two feeds from the level above, from different upstreams, each
                // with the rest of that level as alternatives.
                feeds(&mut t, &levels[lvl - 1], i);
                t.push_str(&timing);
            }
            let _ = writeln!(
                t,
                "[downstream]\ncapacity = 200\nallow = [\"127.0.0.0/8\"]\n[dedupe]\nwindow = 65536"
            );
            t.push_str(&fault(100 * lvl as u64 + i as u64 + 1));
            let name = format!("replicator-{lvl}-{i}");
            let config = dir.join(format!("{name}.toml"));
            let fingerprint = dtls.node(&name, a.to_string())?;
            configs.push((config.clone(), t, name));
            plans.push(ReplicatorPlan {
                level: lvl,
                config,
                addr: *a,
                fingerprint,
            });
        }
        replicators.push(plans);
    }
    let last = levels.last().cloned().unwrap_or_default();
    let second_last = if levels.len() >= 2 {
        levels[levels.len() - 2].clone()
    } else {
        last.clone()
    };

    // Every RUAS's MABs: IPv4 /16s in 20.0.0.0/8, 21.0.0.0/8, ...; IPv6 /40s in
    // 2001:db8::/32. UASes know them all (an ETR inside any MAB is refused).
    let bad = |e: ivip_wire::WireError| std::io::Error::other(e.to_string());
    let mut layout: Vec<Vec<Mab>> = Vec::new();
    for r in 0..shape.ruases {
        let mut mabs: Vec<Mab> = Vec::new();
        for m in 0..shape.v4_mabs {
            let start = ((20u64 + r as u64) << 24) | ((m as u64) << 16);
            mabs.push(Mab::new(ivip_wire::Family::V4, start, 16).map_err(bad)?);
        }
        for m in 0..shape.v6_mabs {
            let start = 0x2001_0db8_0000_0000u64 | ((r as u64 * 16 + m as u64) << 24);
            mabs.push(Mab::new(ivip_wire::Family::V6, start, 40).map_err(bad)?);
        }
        layout.push(mabs);
    }
    let every_mab = layout
        .iter()
        .flatten()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");

    // RUASes, their UAS trees and users.
    let mut ruases = Vec::new();
    let mut snapshot_urls = Vec::new();
    let mut users = Vec::new();
    for (r, mabs) in layout.into_iter().enumerate() {
        let name = format!("ruas-{r}");
        let key = key_file(dir, &name)?;
        // The RUAS's UDP port is chosen when it starts (and again after a
        // restart): its peers pin it by address.
        let ruas_dtls = dtls
            .node(&name, "127.0.0.1".into())?
            .map(|_| dtls.files(&name));
        let middle_key = key_file(dir, &format!("uas-middle-{r}"))?;
        let leaf_key = key_file(dir, &format!("uas-leaf-{r}"))?;
        let http = ports.tcp()?;
        let https_addr = if dtls.plain { None } else { Some(ports.tcp()?) };
        let https = https_addr.map_or(String::new(), |a| format!("https_listen = \"{a}\"\n"));
        snapshot_urls.push(match https_addr {
            Some(a) => format!("https://{a}"),
            None => format!("http://{http}"),
        });
        let middle_addr = ports.tcp()?;
        let leaf_addr = ports.tcp()?;
        let mut user_ranges = Vec::new();
        let span = 8 * shape.micronets_per_user as u64;
        for mab in &mabs {
            for u in 0..shape.users_per_mab {
                let uab = UnitRange {
                    family: mab.family(),
                    start: mab.start() + 4096 * u as u64,
                    len: span,
                };
                user_ranges.push(uab);
                users.push(UserPlan {
                    name: format!("user-{r}-{}", users.len()),
                    key: KeyPair::generate(),
                    uab,
                    mab: *mab,
                    ruas: r,
                });
            }
        }
        let mab_list = mabs
            .iter()
            .map(|m| format!("\"{m}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let whole: Vec<String> = mabs
            .iter()
            .map(|m| {
                format!(
                    "\"{}\"",
                    UnitRange {
                        family: m.family(),
                        start: m.start(),
                        len: m.len()
                    }
                )
            })
            .collect();
        let leaf_ranges: Vec<String> = user_ranges.iter().map(|u| format!("\"{u}\"")).collect();
        let config = dir.join(format!("{name}.toml"));
        configs.push((
            config.clone(),
            format!(
                "ruas_id = {}\nkey_file = \"{name}.key\"\ndata_dir = \"{name}-data\"\nhttp_listen = \"{http}\"\n\
                 {https}udp_bind = \"127.0.0.1:0\"\nreplicators = [{}]\nmabs = [{mab_list}]\nbatch_window_ms = {}\n\
                 heartbeat_ms = {}\nsnapshot_interval_s = {}\nhttp_threads = 16\n{}\
                 [[uas]]\nname = \"uas-middle-{r}\"\npublic_key = \"{}\"\nranges = [{}]\n",
                r + 1,
                quoted(&levels[0]),
                knobs.batch_window_ms,
                knobs.heartbeat_ms,
                knobs.snapshot_interval_s,
                fault(1000 + r as u64),
                hex(&middle_key),
                whole.join(", ")
            ),
            name.clone(),
        ));
        let middle_cfg = dir.join(format!("uas-middle-{r}.toml"));
        write(
            &middle_cfg,
            &format!(
                "name = \"uas-middle-{r}\"\nkey_file = \"uas-middle-{r}.key\"\nlisten = \"{middle_addr}\"\naudit_dir = \"uas-middle-{r}-audit\"\n\
                 mabs = [{every_mab}]\n[parent]\nurl = \"http://{http}\"\npublic_key = \"{}\"\n[limits]\nthreads = 16\n\
                 [[children]]\nname = \"uas-leaf-{r}\"\npublic_key = \"{}\"\nranges = [{}]\n",
                hex(&key),
                hex(&leaf_key),
                leaf_ranges.join(", ")
            ),
        )?;
        let leaf_cfg = dir.join(format!("uas-leaf-{r}.toml"));
        let mut t = format!(
            "name = \"uas-leaf-{r}\"\nkey_file = \"uas-leaf-{r}.key\"\nlisten = \"{leaf_addr}\"\naudit_dir = \"uas-leaf-{r}-audit\"\n\
             mabs = [{every_mab}]\nrate_limit = {{ per_s = 100000.0, burst = 100000 }}\n\
             [parent]\nurl = \"http://{middle_addr}\"\npublic_key = \"{}\"\nmapping_url = \"http://{http}\"\nmapping_public_key = \"{}\"\n\
             [limits]\nthreads = 16\n",
            hex(&middle_key),
            hex(&key)
        );
        for u in users.iter().filter(|u| u.ruas == r) {
            let _ = writeln!(
                t,
                "[[users]]\nname = \"{}\"\nuab = [\"{}\"]\npublic_keys = [\"{}\"]",
                u.name,
                u.uab,
                hex(&u.key)
            );
        }
        write(&leaf_cfg, &t)?;
        ruases.push(RuasPlan {
            id: (r + 1) as u8,
            config,
            http,
            key,
            mabs,
            middle: (middle_cfg, middle_addr),
            leaf: (leaf_cfg, leaf_addr),
            dtls: ruas_dtls,
        });
    }

    // The QSDs' directory.
    let mut d = String::new();
    for r in &ruases {
        let mabs = r
            .mabs
            .iter()
            .map(|m| format!("\"{m}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            d,
            "[[ruas]]\nid = {}\npublic_key = \"{}\"\nsnapshot_urls = [\"{}\"]\nmabs = [{mabs}]",
            r.id,
            hex(&r.key),
            snapshot_urls[(r.id - 1) as usize]
        );
    }
    write(&dir.join("directory.toml"), &d)?;

    // MPSes: fed from the second-to-last level, peers of each other.
    // Peers and QSDs fetch over HTTPS when the links are DTLS.
    let mut mps_addrs = Vec::new();
    for _ in 0..shape.mpses {
        let (udp, http) = (ports.udp()?, ports.tcp()?);
        let served = if dtls.plain { http } else { ports.tcp()? };
        mps_addrs.push((udp, http, served));
    }
    let mut mpses = Vec::new();
    for (i, (udp, http, served)) in mps_addrs.iter().enumerate() {
        let mut t = format!("listen = \"{udp}\"\nhttp = \"{http}\"\n");
        if !dtls.plain {
            let _ = writeln!(t, "https = \"{served}\"");
        }
        let peers: Vec<String> = mps_addrs
            .iter()
            .filter(|p| p.1 != *http)
            .map(|p| format!("\"{}://{}\"", dtls.scheme(), p.2))
            .collect();
        let _ = writeln!(t, "peers = [{}]", peers.join(", "));
        for r in &ruases {
            let _ = writeln!(
                t,
                "[[ruas]]\nid = {}\npublic_key = \"{}\"",
                r.id,
                hex(&r.key)
            );
        }
        for k in 0..2 {
            let primary = second_last[(i + k) % second_last.len()];
            let _ = writeln!(t, "[[feed]]\naddress = \"{primary}\"");
        }
        t.push_str(&timing);
        let _ = writeln!(
            t,
            "[fill]\ngrace_ms = 50\nretry_ms = 200\ngive_up_s = 60\ntimeout_ms = 1000"
        );
        let name = format!("mps-{i}");
        let config = dir.join(format!("{name}.toml"));
        dtls.node(&name, udp.to_string())?;
        configs.push((config.clone(), t, name));
        mpses.push((config, *http));
    }
    let mps_urls: Vec<String> = mps_addrs
        .iter()
        .map(|p| format!("\"{}://{}\"", dtls.scheme(), p.2))
        .collect();

    // QSDs: two feeds from the last level, the rest of it as alternatives.
    let mut qsds = Vec::new();
    for i in 0..shape.qsds {
        let (q, f, a) = (ports.udp()?, ports.udp()?, ports.tcp()?);
        let mut t = format!(
            "query_listen = \"{q}\"\nworkers = {}\nfeed_listen = \"{f}\"\nadmin_listen = \"{a}\"\ndirectory = \"directory.toml\"\n\
             mps = [{}]\ngap_wait_ms = 30\nfetch_retry_ms = 150\n",
            shape.qsd_workers,
            // A near MPS first, then the others (s4.1.3).
            rotate(&mps_urls, i).join(", ")
        );
        feeds(&mut t, &last, i);
        t.push_str(&timing);
        t.push_str(&fault(5000 + i as u64));
        let name = format!("qsd-{i}");
        let config = dir.join(format!("{name}.toml"));
        dtls.node(&name, f.to_string())?;
        configs.push((config.clone(), t, name));
        qsds.push((config, q, a));
    }
    for (config, text, name) in &configs {
        write(config, &format!("{text}{}", dtls.section(name)))?;
    }

    // A QSC in front of the first two QSDs.
    let qsc_addr = ports.udp()?;
    let qsc_cfg = dir.join("qsc.toml");
    let ups: Vec<SocketAddr> = qsds.iter().take(2).map(|q| q.1).collect();
    write(
        &qsc_cfg,
        &format!(
            "listen = \"{qsc_addr}\"\nupstreams = [{}]\nadmin_listen = \"{}\"\n",
            quoted(&ups),
            ports.tcp()?
        ),
    )?;
    Ok(Plan {
        dir: dir.to_path_buf(),
        shape: shape.clone(),
        ruases,
        users,
        replicators,
        mpses,
        qsds,
        qsc: (qsc_cfg, qsc_addr),
        reserved: ports,
    })
}

/// Two feeds from `up`, starting at upstream `i`: the upstreams are dealt to the two
/// feeds in turn, the first of each being its primary and the rest its
/// alternatives (an address may serve only one feed of a node).
fn feeds(t: &mut String, up: &[SocketAddr], i: usize) {
    let n = up.len();
    for k in 0..2.min(n) {
        let mine: Vec<SocketAddr> = (0..n)
            .filter(|j| j % 2 == k)
            .map(|j| up[(i + j) % n])
            .collect();
        let _ = writeln!(
            t,
            "[[feed]]\naddress = \"{}\"\nalternatives = [{}]",
            mine[0],
            quoted(&mine[1..])
        );
    }
}

fn rotate(v: &[String], by: usize) -> Vec<String> {
    if v.is_empty() {
        return Vec::new();
    }
    (0..v.len())
        .map(|i| v[(i + by) % v.len()].clone())
        .collect()
}
