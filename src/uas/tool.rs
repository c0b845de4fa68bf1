//! The command-line side of the UAS: `ivip uas` (the daemon and its helpers) and
//! `ivip update` (a user's command set from the shell).
//!
//! ```text
//! ivip uas --config FILE                 run the UAS
//! ivip uas hash-password [--password-file FILE]
//!                                        print an Argon2id PHC string for a user's
//!                                        `password_hash` (reads stdin without a file)
//! ivip uas audit DIR                     print the audit trail as JSON lines
//! ivip update --uas URL --user NAME (--password-file FILE | --key-file FILE)
//!             [--dry-run] [--execute-at-us T] [--idempotency-key K]
//!             [--uas-key HEX] COMMAND...
//! ivip update --uas URL --user NAME (...) --list
//! ```
//!
//! COMMAND is `set-etr RANGE ETR`, `define RANGE ETR`, `split RANGE at N`,
//! `join RANGE` or `delete RANGE`; several make one set, executed in order and as
//! one. RANGE is `START+LEN` or `FIRST-LAST`.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::sign::{Ed25519Verifier, KeyPair, Verifier as _};
use crate::uas::api::{CommandJson, CommandsRequest};
use crate::uas::auth::{basic_header, sign_request};
use crate::uas::forward::{ANSWER_SIGNATURE_HEADER, answer_message};
use crate::uas::upstream::{Answer, HttpClient};

/// How a tool failed.
#[derive(Debug)]
pub enum ToolError {
    /// Bad arguments.
    Usage(String),
    /// It ran and failed.
    Error(String),
}

impl From<lexopt::Error> for ToolError {
    fn from(e: lexopt::Error) -> ToolError {
        ToolError::Usage(e.to_string())
    }
}

/// `ivip uas ...`. Returns the exit status.
///
/// # Errors
/// [`ToolError`].
pub fn uas_main(args: Vec<OsString>) -> Result<u8, ToolError> {
    use lexopt::prelude::*;
    let first = args.first().and_then(|a| a.to_str()).unwrap_or("");
    match first {
        "hash-password" => {
            let mut p = lexopt::Parser::from_args(args.into_iter().skip(1));
            let mut file: Option<PathBuf> = None;
            while let Some(arg) = p.next()? {
                match arg {
                    Long("password-file") => file = Some(PathBuf::from(p.value()?)),
                    _ => return Err(arg.unexpected().into()),
                }
            }
            let pw = read_secret(file.as_ref())?;
            let h = crate::uas::auth::hash_password(&pw).map_err(ToolError::Error)?;
            println!("{h}");
            Ok(0)
        }
        "audit" => {
            let dir = args
                .get(1)
                .ok_or_else(|| ToolError::Usage("ivip uas audit DIR".into()))?;
            let recs = crate::uas::audit::read_records(std::path::Path::new(dir))
                .map_err(|e| ToolError::Error(e.to_string()))?;
            for r in recs {
                println!("{}", String::from_utf8_lossy(&r.to_json()));
            }
            Ok(0)
        }
        _ => {
            let mut p = lexopt::Parser::from_args(args);
            let mut config = None;
            while let Some(arg) = p.next()? {
                match arg {
                    Long("config") | Short('c') => config = Some(PathBuf::from(p.value()?)),
                    _ => return Err(arg.unexpected().into()),
                }
            }
            let config =
                config.ok_or_else(|| ToolError::Usage("--config FILE is required".into()))?;
            crate::uas::http::run(&config).map_err(ToolError::Error)?;
            Ok(0)
        }
    }
}

fn read_secret(file: Option<&PathBuf>) -> Result<String, ToolError> {
    let mut s = String::new();
    match file {
        Some(f) => {
            s = std::fs::read_to_string(f)
                .map_err(|e| ToolError::Error(format!("{}: {e}", f.display())))?
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| ToolError::Error(format!("stdin: {e}")))?;
        }
    }
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(ToolError::Error("the password is empty".into()));
    }
    Ok(s)
}

enum Cred {
    Password(String),
    Key(KeyPair),
}

/// `ivip update ...`. Exit status 0: accepted, scheduled or dry run ok; 3: the UAS
/// (or a node behind it) refused the set; 1: no answer or another error.
///
/// # Errors
/// [`ToolError`].
pub fn update_main(args: Vec<OsString>) -> Result<u8, ToolError> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut url = None;
    let mut user = None;
    let mut cred = None;
    let mut dry_run = false;
    let mut list = false;
    let mut execute_at_us = 0u64;
    let mut idem: Option<String> = None;
    let mut uas_key: Option<[u8; 32]> = None;
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("uas") => url = Some(p.value()?.string()?),
            Long("user") => user = Some(p.value()?.string()?),
            Long("password-file") => {
                cred = Some(Cred::Password(read_secret(Some(&PathBuf::from(
                    p.value()?,
                )))?))
            }
            Long("key-file") => {
                let f = PathBuf::from(p.value()?);
                cred = Some(Cred::Key(
                    crate::keyfile::read(&f).map_err(|e| ToolError::Error(e.to_string()))?,
                ));
            }
            Long("dry-run") => dry_run = true,
            Long("list") => list = true,
            Long("execute-at-us") => execute_at_us = p.value()?.parse()?,
            Long("idempotency-key") => idem = Some(p.value()?.string()?),
            Long("uas-key") => {
                let v = p.value()?.string()?;
                uas_key = Some(
                    crate::sign::key_from_hex(&v)
                        .ok_or_else(|| ToolError::Usage("--uas-key takes 64 hex digits".into()))?,
                );
            }
            Value(v) => words.push(v.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let url = url.ok_or_else(|| ToolError::Usage("--uas URL is required".into()))?;
    let user = user.ok_or_else(|| ToolError::Usage("--user NAME is required".into()))?;
    let cred = cred.ok_or_else(|| {
        ToolError::Usage("--password-file FILE or --key-file FILE is required".into())
    })?;
    let client = HttpClient::new(&url, Duration::from_secs(30))
        .map_err(|e| ToolError::Usage(e.to_string()))?;

    let (method, path, body) = if list {
        if !words.is_empty() {
            return Err(ToolError::Usage("--list takes no commands".into()));
        }
        ("GET", "/v1/micronets".to_string(), Vec::new())
    } else {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let commands = CommandJson::parse_all(&refs).map_err(ToolError::Usage)?;
        if commands.is_empty() {
            return Err(ToolError::Usage(
                "give COMMAND... (set-etr RANGE ETR, define RANGE ETR, split RANGE at N, join RANGE, delete RANGE) or --list".into(),
            ));
        }
        let req = CommandsRequest {
            commands,
            dry_run,
            execute_at_us,
        };
        (
            "POST",
            "/v1/commands".to_string(),
            serde_json::to_vec(&req).map_err(|e| ToolError::Error(e.to_string()))?,
        )
    };
    let auth = match &cred {
        Cred::Password(pw) => basic_header(&user, pw),
        Cred::Key(k) => sign_request(k, &user, method, &path, crate::time::unix_now_us(), &body),
    };
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(k) = &idem {
        headers.push(("Idempotency-Key", k.as_str()));
    }
    let a = client
        .request(method, &path, &headers, &body)
        .map_err(|e| ToolError::Error(e.to_string()))?;
    if let Some(k) = uas_key {
        verify(&k, method, &client.wire_path(&path), &body, &a)?;
    }
    print_answer(list, &a)
}

fn verify(
    key: &[u8; 32],
    method: &str,
    path: &str,
    body: &[u8],
    a: &Answer,
) -> Result<(), ToolError> {
    let sig = a
        .header(&ANSWER_SIGNATURE_HEADER.to_ascii_lowercase())
        .and_then(ivip_wire::hex::decode)
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| ToolError::Error("the answer is not signed".into()))?;
    Ed25519Verifier
        .verify(
            key,
            &answer_message(method, path, body, a.status, &a.body),
            &sig,
        )
        .map_err(|_| {
            ToolError::Error("the answer's signature does not verify with --uas-key".into())
        })
}

fn print_answer(list: bool, a: &Answer) -> Result<u8, ToolError> {
    let v: serde_json::Value = serde_json::from_slice(&a.body).map_err(|_| {
        ToolError::Error(format!(
            "status {} with a body that is not JSON: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        ))
    })?;
    if !(200..300).contains(&a.status) {
        let mut line = format!(
            "refused ({}): {}: {}",
            a.status,
            v["error"].as_str().unwrap_or("error"),
            v["detail"].as_str().unwrap_or("")
        );
        if let Some(c) = v["command"].as_u64() {
            line.push_str(&format!(" [command {c}]"));
        }
        eprintln!("{line}");
        if let Some(r) = a.header("retry-after") {
            eprintln!("retry after {r} s");
        }
        return Ok(if a.status >= 500 { 1 } else { 3 });
    }
    if list {
        for u in v["uabs"].as_array().into_iter().flatten() {
            println!(
                "UAB {} in MAB {} (sequence {})",
                u["range"].as_str().unwrap_or("?"),
                u["mab"].as_str().unwrap_or("?"),
                u["mab_seq"]
            );
            for m in u["micronets"].as_array().into_iter().flatten() {
                println!(
                    "  {}+{}  {}",
                    m["start"].as_str().unwrap_or("?"),
                    m["len"],
                    m["etr"].as_str().unwrap_or("?")
                );
            }
        }
        return Ok(0);
    }
    let outcome = v["outcome"].as_str().unwrap_or("?");
    let mut line = outcome.to_string();
    if let Some(r) = v["request_id"].as_str() {
        line.push_str(&format!(" request {r}"));
    }
    if let Some(s) = v["mab_seq"].as_u64() {
        line.push_str(&format!(
            " mab {} sequence {s}",
            v["mab"].as_str().unwrap_or("?")
        ));
    }
    if let Some(t) = v["execute_at_us"].as_u64() {
        line.push_str(&format!(" at {}", crate::time::format_unix_us(t)));
    }
    println!("{line}");
    for c in v["changed"].as_array().into_iter().flatten() {
        println!(
            "  {}+{} -> {}",
            c["start"].as_str().unwrap_or("?"),
            c["len"],
            c["etr"].as_str().unwrap_or("unassigned")
        );
    }
    Ok(0)
}
