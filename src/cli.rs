//! Command-line dispatch: one arm per role or tool. Roles parse their own options
//! with `lexopt` and load their TOML config through `ivip::config`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Printed for `--help` and usage errors.
pub(crate) const USAGE: &str = "\
usage: ivip <command> [options]

daemons (each takes --config FILE, a TOML file; see contrib/examples/):
  ruas --config FILE         authoritative root: master database, SUMUC ingest, payloads, snapshots
  qsd --config FILE          full-database query server: boots from snapshots, follows the stream
  qsc --config FILE          caching query server: answers from cache, asks QSDs, relays notifications
  replicator --config FILE   copy update payloads: Fresh/Repeat, fan-out, feed failover
  mps --config FILE          keep payloads ~10 minutes, serve them over HTTP, fill gaps from peers
  uas --config FILE          end users' update authorisation server: HTTP API and web
                             page; checks, audits, signs and forwards their sets
  uas hash-password [--password-file FILE]
                             print an Argon2id hash for a UAS user (stdin if no file)
  uas audit DIR              print a UAS audit trail as JSON lines
  history --config FILE      record every mapping change durably; search it over HTTP

the main job:
  testnet [--duration S] [--rate N] [--loss PCT] [--kill-replicator] [--json] ...
                          a whole system on loopback, driven and measured
                          (`ivip testnet --help`); exit 3 if it did not converge

tools:
  keygen [--out FILE]     make an Ed25519 key pair; prints the public key
  keygen --out KEY --cert CERT [--name NAME] [--p256 | --ed25519]
                          make a node's DTLS identity: a key (Ed25519 where this
                          OpenSSL can use it in DTLS 1.2, else P-256) and a
                          self-signed certificate; prints the fingerprint to pin
  keygen --key KEY --cert CERT [--name NAME]
                          a certificate for an existing key (reuse the node's key)
  keygen --fingerprint CERT
                          print the fingerprint peers pin (sha256:...)
  query ADDRESS --server HOST:PORT [--server ...] [--timeout-ms MS]
                          ask a QSD or QSC for an address's mapping; exit status
                          0 mapped, 3 unassigned (in a MAB, no micronet),
                          4 not SPI space, 1 no answer or error
  update --uas URL --user NAME (--password-file F | --key-file F) [--dry-run]
         [--execute-at-us T] [--idempotency-key K] [--uas-key HEX] COMMAND...
  update --uas URL --user NAME (--password-file F | --key-file F) --list
                          submit (or dry-run) one command set to a UAS, or list
                          your micronets. COMMAND: set-etr RANGE ETR | define
                          RANGE ETR | split RANGE at N | join RANGE | delete RANGE;
                          RANGE is START+LEN or FIRST-LAST. Exit status 0 done,
                          3 refused, 1 no answer or error
  history ADDRESS --server URL [--from TIME] [--to TIME] [--json]
                          every mapping ADDRESS had in the window, with the RUAS
                          and payload behind each (TIME: RFC 3339 or µs since 1970)
  history --mab MAB --server URL [--from TIME] [--to TIME] [--after RECORD]
          [--limit N] [--json]
                          every change of one MAB in the window (an audit)
  help                    this text
";

/// How a command failed.
pub(crate) enum Failed {
    /// Bad arguments: print usage.
    Usage(String),
    /// The command ran and failed: one operator line.
    Error(String),
}

impl From<lexopt::Error> for Failed {
    fn from(e: lexopt::Error) -> Failed {
        Failed::Usage(e.to_string())
    }
}

/// Run `cmd` with its arguments.
pub(crate) fn run(cmd: &str, args: Vec<OsString>) -> Result<ExitCode, Failed> {
    match cmd {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        "keygen" => keygen(args),
        "testnet" => match ivip::testnet::cli(args) {
            Ok(true) => Ok(ExitCode::SUCCESS),
            Ok(false) => Ok(ExitCode::from(3)),
            Err(e) => Err(Failed::Error(e)),
        },
        "ruas" => ruas(args),
        "qsd" => qsd(args),
        "qsc" => qsc(args),
        "query" => query(args),
        "replicator" => replicator(args),
        "mps" => mps(args),
        "uas" => tool(ivip::uas::tool::uas_main(args)),
        "update" => tool(ivip::uas::tool::update_main(args)),
        "history" => history(args),
        other => Err(Failed::Usage(format!("unknown command `{other}`"))),
    }
}

fn tool(r: Result<u8, ivip::uas::tool::ToolError>) -> Result<ExitCode, Failed> {
    match r {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(ivip::uas::tool::ToolError::Usage(m)) => Err(Failed::Usage(m)),
        Err(ivip::uas::tool::ToolError::Error(m)) => Err(Failed::Error(m)),
    }
}

/// `--config FILE`, the only option most daemons take.
pub(crate) fn config_path(args: Vec<OsString>) -> Result<PathBuf, Failed> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut path = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") | Short('c') => path = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    path.ok_or_else(|| Failed::Usage("--config FILE is required".into()))
}

fn replicator(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    let path = config_path(args)?;
    let settings = ivip::replicator::ReplicatorConfig::load(&path)
        .map_err(|e| Failed::Error(e.to_string()))?;
    ivip::replicator::run(&settings, ivip::daemon::Shutdown::on_signals())
        .map_err(|e| Failed::Error(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn ruas(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    let path = config_path(args)?;
    let cfg = ivip::ruas::RuasConfig::load(&path).map_err(|e| Failed::Error(e.to_string()))?;
    ivip::ruas::run(&cfg, ivip::daemon::Shutdown::on_signals())
        .map_err(|e| Failed::Error(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn qsd(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    let path = config_path(args)?;
    let s = ivip::qsd::QsdConfig::load(&path).map_err(|e| Failed::Error(e.to_string()))?;
    ivip::qsd::run(&s, ivip::daemon::Shutdown::on_signals())
        .map_err(|e| Failed::Error(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn qsc(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    let path = config_path(args)?;
    let c = ivip::qsc::QscConfig::load(&path).map_err(|e| Failed::Error(e.to_string()))?;
    ivip::qsc::run(&c, ivip::daemon::Shutdown::on_signals()).map_err(Failed::Error)?;
    Ok(ExitCode::SUCCESS)
}

fn mps(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    let path = config_path(args)?;
    let settings = ivip::mps::MpsConfig::load(&path).map_err(|e| Failed::Error(e.to_string()))?;
    ivip::mps::run(&settings, ivip::daemon::Shutdown::on_signals())
        .map_err(|e| Failed::Error(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// `ivip history --config FILE` runs the recorder; `ivip history ADDRESS ...` and
/// `ivip history --mab MAB ...` search one (spec: http.md, History).
fn history(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    use lexopt::prelude::*;
    if args.iter().any(|a| a == "--config" || a == "-c") {
        let path = config_path(args)?;
        let settings = ivip::history::config::HistoryConfig::load(&path)
            .map_err(|e| Failed::Error(e.to_string()))?;
        ivip::history::driver::run(&settings, ivip::daemon::Shutdown::on_signals())
            .map_err(|e| Failed::Error(e.to_string()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut p = lexopt::Parser::from_args(args);
    let (mut address, mut mab, mut server) = (None, None, None);
    let mut query: Vec<(&str, String)> = Vec::new();
    let mut json = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("server") | Short('s') => server = Some(p.value()?.string()?),
            Long("from") => query.push(("from", p.value()?.string()?)),
            Long("to") => query.push(("to", p.value()?.string()?)),
            Long("after") => query.push(("after", p.value()?.string()?)),
            Long("limit") => query.push(("limit", p.value()?.string()?)),
            Long("mab") => mab = Some(p.value()?.string()?),
            Long("json") => json = true,
            Value(v) if address.is_none() => address = Some(v.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let server = server.ok_or_else(|| Failed::Usage("--server URL is required".into()))?;
    let server = server.trim_end_matches('/');
    let (path, first) = match (&address, &mab) {
        (Some(a), None) => {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(Failed::Usage(format!("`{a}` is not an IP address")));
            }
            ("/v1/history", ("address", a.clone()))
        }
        (None, Some(m)) => ("/v1/history/mab", ("mab", m.clone())),
        _ => return Err(Failed::Usage("give either ADDRESS or --mab MAB".into())),
    };
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut url = format!("{server}{path}?{}={}", first.0, enc(&first.1));
    for (k, v) in &query {
        url.push_str(&format!("&{k}={}", enc(v)));
    }
    let r = ivip::http::Client::default()
        .get(&url)
        .map_err(|e| Failed::Error(format!("{url}: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|_| Failed::Error(format!("{url}: HTTP {}: the answer is not JSON", r.status)))?;
    if r.status != 200 {
        return Err(Failed::Error(format!(
            "{}: {}",
            v["error"].as_str().unwrap_or("error"),
            v["detail"].as_str().unwrap_or("")
        )));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if address.is_some() {
        print!("{}", ivip::history::text::address_text(&v));
    } else {
        print!("{}", ivip::history::text::mab_text(&v));
    }
    Ok(ExitCode::SUCCESS)
}

fn keygen(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    use ivip::dtls::identity::{self, KeyKind};
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut out: Option<PathBuf> = None;
    let mut key: Option<PathBuf> = None;
    let mut cert: Option<PathBuf> = None;
    let mut fingerprint: Option<PathBuf> = None;
    let mut name = identity::DEFAULT_NAME.to_string();
    let mut kind: Option<KeyKind> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("out") | Short('o') => out = Some(PathBuf::from(p.value()?)),
            Long("key") => key = Some(PathBuf::from(p.value()?)),
            Long("cert") => cert = Some(PathBuf::from(p.value()?)),
            Long("fingerprint") => fingerprint = Some(PathBuf::from(p.value()?)),
            Long("name") => name = p.value()?.string()?,
            Long("p256") => kind = Some(KeyKind::P256),
            Long("ed25519") => kind = Some(KeyKind::Ed25519),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let err = |e: identity::IdentityError| Failed::Error(e.to_string());
    match (out, key, cert, fingerprint) {
        (None, None, None, Some(c)) => {
            let pem =
                std::fs::read(&c).map_err(|e| Failed::Error(format!("{}: {e}", c.display())))?;
            let x = openssl::x509::X509::from_pem(&pem)
                .map_err(|_| Failed::Error(format!("{}: not a PEM certificate", c.display())))?;
            println!("{}", ivip::dtls::Fingerprint::of_cert(&x).map_err(err)?);
        }
        (Some(k), None, Some(c), None) => {
            let kind = kind.unwrap_or_else(identity::preferred_kind);
            let id = identity::write_new_identity(&k, &c, kind, &name).map_err(err)?;
            if kind == KeyKind::Ed25519 {
                let seed = ivip::keyfile::read(&k).map_err(|e| Failed::Error(e.to_string()))?;
                println!("public = \"{}\"", ivip_wire::hex::encode(&seed.public()));
            }
            println!("key = \"{}\" ({})", k.display(), kind.name());
            println!("cert = \"{}\"", c.display());
            println!("fingerprint = \"{}\"", id.fingerprint());
        }
        (None, Some(k), Some(c), None) => {
            let id = identity::certify_existing_key(&k, &c, &name).map_err(err)?;
            println!("cert = \"{}\"", c.display());
            println!("fingerprint = \"{}\"", id.fingerprint());
        }
        (out, None, None, None) => {
            let k = ivip::sign::KeyPair::generate();
            let public = ivip_wire::hex::encode(&k.public());
            let secret = ivip_wire::hex::encode(&k.seed());
            match out {
                Some(path) => {
                    ivip::keyfile::write_new(&path, &k)
                        .map_err(|e| Failed::Error(e.to_string()))?;
                    println!("{public}");
                }
                None => {
                    println!("secret = \"{secret}\"\npublic = \"{public}\"");
                }
            }
        }
        _ => {
            return Err(Failed::Usage(
                "keygen takes --out FILE, --out KEY --cert CERT, --key KEY --cert CERT, or --fingerprint CERT"
                    .into(),
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn query(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    use ivip::client::{Answer, QueryClient, describe_range};
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut addr: Option<std::net::IpAddr> = None;
    let mut servers = Vec::new();
    let mut timeout_ms = 500u64;
    while let Some(arg) = p.next()? {
        match arg {
            Long("server") | Short('s') => {
                let v = p.value()?.string()?;
                let sa = std::net::ToSocketAddrs::to_socket_addrs(&v)
                    .map_err(|e| Failed::Usage(format!("--server {v}: {e}")))?
                    .next()
                    .ok_or_else(|| Failed::Usage(format!("--server {v}: no address")))?;
                servers.push(sa);
            }
            Long("timeout-ms") => timeout_ms = p.value()?.parse()?,
            Value(v) if addr.is_none() => {
                let v = v.string()?;
                addr = Some(
                    v.parse()
                        .map_err(|_| Failed::Usage(format!("`{v}` is not an IP address")))?,
                );
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let addr = addr.ok_or_else(|| Failed::Usage("ADDRESS is required".into()))?;
    if servers.is_empty() {
        return Err(Failed::Usage("--server HOST:PORT is required".into()));
    }
    let mut client = QueryClient::new(servers)
        .map_err(|e| Failed::Error(format!("cannot open a UDP socket: {e}")))?;
    client.timeout = std::time::Duration::from_millis(timeout_ms);
    let family = ivip_wire::addr::unit_of(addr).0;
    match client.query(addr) {
        Ok(Answer::Mapped {
            micronet,
            cache_time_s,
            server,
        }) => {
            println!("address:    {addr}");
            println!("micronet:   {}", describe_range(family, &micronet));
            if micronet.etr.is_zero() {
                println!("etr:        {} (drop)", micronet.etr);
            } else {
                println!("etr:        {}", micronet.etr);
            }
            println!("cache time: {cache_time_s} s");
            println!("server:     {server}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Answer::Unassigned {
            gap,
            cache_time_s,
            server,
        }) => {
            println!("address:    {addr}");
            println!(
                "unassigned: {} (in a MAB, in no micronet: dropped)",
                describe_range(family, &gap)
            );
            println!("cache time: {cache_time_s} s");
            println!("server:     {server}");
            Ok(ExitCode::from(3))
        }
        Ok(Answer::NotSpi {
            cache_time_s,
            server,
        }) => {
            println!("address:    {addr}");
            println!("not SPI space (in no MAB); cache time {cache_time_s} s; server {server}");
            Ok(ExitCode::from(4))
        }
        Err(e) => Err(Failed::Error(format!("query for {addr}: {e}"))),
    }
}
