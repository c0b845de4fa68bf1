//! Reader for `spec/vectors/*.txt` (format: spec/README.md §6).
//!
//! A file is a list of vectors separated by blank lines. Lines starting with `#`
//! are comments. Keys: `name:` (one), `hex:` (one or more, concatenated),
//! `fields:` (zero or more: the expected `Display` rendering, line by line) and
//! `error:` (the expected `WireError` name, for vectors that must be rejected).

#![allow(dead_code)]

use std::path::PathBuf;

use ivip_wire::WireError;

/// One test vector.
#[derive(Debug)]
pub struct Vector {
    pub name: String,
    pub bytes: Vec<u8>,
    pub fields: Vec<String>,
    pub error: Option<WireError>,
}

impl Vector {
    /// A vector that parses, with its expected rendering.
    pub fn valid(name: impl Into<String>, bytes: Vec<u8>, fields: Vec<String>) -> Vector {
        Vector {
            name: name.into(),
            bytes,
            fields,
            error: None,
        }
    }

    /// A vector that must be rejected with `error`, named `reject: NAME`.
    pub fn reject(name: impl std::fmt::Display, bytes: Vec<u8>, error: WireError) -> Vector {
        Vector {
            name: format!("reject: {name}"),
            bytes,
            fields: vec![],
            error: Some(error),
        }
    }
}

/// The path of a vector file, from the `wire/` crate's manifest directory.
pub fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../spec/vectors")
        .join(file)
}

/// Load and check the shape of a vector file; panics (a test failure) on any
/// malformed line, naming the file and line.
pub fn load(file: &str) -> Vec<Vector> {
    let p = path(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut out = Vec::new();
    let mut cur: Option<(String, String, Vec<String>, Option<WireError>)> = None;
    let flush = |cur: &mut Option<(String, String, Vec<String>, Option<WireError>)>,
                 out: &mut Vec<Vector>| {
        if let Some((name, hex, fields, error)) = cur.take() {
            let bytes = ivip_wire::hex::decode(&hex)
                .unwrap_or_else(|| panic!("{file}: vector {name:?}: bad hex"));
            assert!(
                fields.is_empty() != error.is_none(),
                "{file}: vector {name:?} needs either fields: or error:"
            );
            out.push(Vector {
                name,
                bytes,
                fields,
                error,
            });
        }
    };
    for (no, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut cur, &mut out);
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{file}:{}: expected `key: value`", no + 1));
        let value = value.trim().to_string();
        match key {
            "name" => {
                flush(&mut cur, &mut out);
                cur = Some((value, String::new(), Vec::new(), None));
            }
            "hex" | "fields" | "error" => {
                let c = cur
                    .as_mut()
                    .unwrap_or_else(|| panic!("{file}:{}: `{key}:` before `name:`", no + 1));
                match key {
                    "hex" => {
                        c.1.push_str(&value);
                    }
                    "fields" => c.2.push(value),
                    _ => {
                        c.3 = Some(value.parse().unwrap_or_else(|()| {
                            panic!("{file}:{}: unknown WireError {value:?}", no + 1)
                        }))
                    }
                }
            }
            _ => panic!("{file}:{}: unknown key {key:?}", no + 1),
        }
    }
    flush(&mut cur, &mut out);
    assert!(!out.is_empty(), "{file}: no vectors");
    out
}

/// The `Display` rendering of a value as trimmed lines, to compare with `fields:`.
pub fn lines(rendered: &str) -> Vec<String> {
    rendered.lines().map(|l| l.trim().to_string()).collect()
}

/// Write a vector file (used by the generators when `IVIP_WRITE_VECTORS=1`).
pub fn write(file: &str, header: &str, vectors: &[Vector]) {
    let mut s = String::new();
    for l in header.lines() {
        s.push_str("# ");
        s.push_str(l);
        s.push('\n');
    }
    for v in vectors {
        s.push('\n');
        s.push_str(&format!("name: {}\n", v.name));
        for chunk in v.bytes.chunks(32) {
            s.push_str(&format!("hex: {}\n", ivip_wire::hex::encode(chunk)));
        }
        for f in &v.fields {
            s.push_str(&format!("fields: {f}\n"));
        }
        if let Some(e) = v.error {
            s.push_str(&format!("error: {}\n", e.name()));
        }
    }
    std::fs::write(path(file), s).unwrap();
}

/// `true` when the generators should rewrite the vector files.
pub fn regenerate() -> bool {
    std::env::var_os("IVIP_WRITE_VECTORS").is_some()
}
