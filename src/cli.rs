//! Command-line dispatch: one arm per role or tool. Roles parse their own options
//! with `lexopt` and load their TOML config through `ivip::config`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Printed for `--help` and usage errors.
pub(crate) const USAGE: &str = "\
usage: ivip <command> [options]

daemons (each takes --config FILE, a TOML file; see contrib/examples/):
  replicator --config FILE   copy update payloads: Fresh/Repeat, fan-out, feed failover
  mps --config FILE          keep payloads ~10 minutes, serve them over HTTP, fill gaps from peers

tools:
  keygen [--out FILE]     make an Ed25519 key pair; prints the public key
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
        "replicator" => replicator(args),
        "mps" => mps(args),
        other => Err(Failed::Usage(format!("unknown command `{other}`"))),
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

fn mps(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    let path = config_path(args)?;
    let settings = ivip::mps::MpsConfig::load(&path).map_err(|e| Failed::Error(e.to_string()))?;
    ivip::mps::run(&settings, ivip::daemon::Shutdown::on_signals())
        .map_err(|e| Failed::Error(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn keygen(args: Vec<OsString>) -> Result<ExitCode, Failed> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut out: Option<PathBuf> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("out") | Short('o') => out = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let k = ivip::sign::KeyPair::generate();
    let public = ivip_wire::hex::encode(&k.public());
    let secret = ivip_wire::hex::encode(&k.seed());
    match out {
        Some(path) => {
            ivip::keyfile::write_new(&path, &k).map_err(|e| Failed::Error(e.to_string()))?;
            println!("{public}");
        }
        None => {
            println!("secret = \"{secret}\"\npublic = \"{public}\"");
        }
    }
    Ok(ExitCode::SUCCESS)
}
