//! The `ivip` binary: `ivip <role> --config FILE` for the daemons, and client tools.
//!
//! Each role's entry point returns `Result<(), String>`: on failure the binary
//! prints one line for the operator (what, where, what to do) to stderr and exits
//! with status 1. Status 2 is a usage error.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    // The testnet runs dozens of daemons in one process: only their warnings.
    if first.as_deref() == Some(std::ffi::OsStr::new("testnet")) {
        ivip::daemon::set_default_log_level("warn");
    }
    ivip::daemon::init_logging();
    let Some(cmd) = first else {
        eprint!("{}", cli::USAGE);
        return ExitCode::from(2);
    };
    let rest: Vec<std::ffi::OsString> = args.collect();
    let cmd = cmd.to_string_lossy().into_owned();
    match cli::run(&cmd, rest) {
        Ok(code) => code,
        Err(cli::Failed::Usage(msg)) => {
            eprintln!("ivip {cmd}: {msg}\n");
            eprint!("{}", cli::USAGE);
            ExitCode::from(2)
        }
        Err(cli::Failed::Error(msg)) => {
            eprintln!("ivip {cmd}: error: {msg}");
            ExitCode::from(1)
        }
    }
}
