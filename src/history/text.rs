//! Plain-text renderings of the recorder's JSON answers, for `ivip history`.
//!
//! What it is: formatting only, from the JSON of http.md (History), so the
//! command line shows exactly what the API says. Times are shown in UTC.

use serde_json::Value;

use crate::time::format_unix_us;

fn time(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_string(), format_unix_us)
}

fn range(v: &Value) -> String {
    match (v["start"].as_str(), v["len"].as_u64(), v["last"].as_str()) {
        (Some(s), Some(1), _) => s.to_string(),
        (Some(s), Some(n), Some(l)) => format!("{s}+{n} ({s}-{l})"),
        _ => "?".to_string(),
    }
}

fn payload(v: &Value) -> String {
    match (v["ruas"].as_u64(), v["epoch"].as_u64(), v["seq"].as_u64()) {
        (Some(r), Some(e), Some(s)) => format!("{r}/{e}/{s}"),
        _ => "-".to_string(),
    }
}

/// An address history answer as text: one line per mapping, then notes.
pub fn address_text(v: &Value) -> String {
    let mut s = String::new();
    let mabs: Vec<&str> = v["mabs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    s.push_str(&format!(
        "address {}  MAB {}  window {} .. {}\n",
        v["address"].as_str().unwrap_or("?"),
        if mabs.is_empty() {
            "(none recorded)".to_string()
        } else {
            mabs.join(", ")
        },
        time(&v["from_us"]),
        if v["to_us"].is_null() {
            "now".to_string()
        } else {
            time(&v["to_us"])
        },
    ));
    for m in v["mappings"].as_array().into_iter().flatten() {
        let what = match m["state"].as_str() {
            Some("mapped") => format!(
                "micronet {} -> {}{}",
                range(&m["micronet"]),
                m["etr"].as_str().unwrap_or("?"),
                if m["drop"].as_bool() == Some(true) {
                    " (drop)"
                } else {
                    ""
                }
            ),
            Some("unassigned") => match &m["range"] {
                Value::Null => "unassigned (in no micronet)".to_string(),
                r => format!("unassigned {}", range(r)),
            },
            _ => "unknown (no record before this)".to_string(),
        };
        let who = match m["source"].as_str() {
            Some("change") => format!(
                "RUAS {} payload {} set {} record {}",
                m["ruas"],
                payload(&m["payload"]),
                m["mab_seq"],
                m["record"].as_str().unwrap_or("-")
            ),
            Some("baseline") => format!(
                "RUAS {} snapshot at set {} record {}",
                m["ruas"],
                m["mab_seq"],
                m["record"].as_str().unwrap_or("-")
            ),
            _ => String::new(),
        };
        s.push_str(&format!(
            "{}  {}  {what}  {who}\n",
            time(&m["since_us"]),
            if m["until_us"].is_null() {
                "...                        ".to_string()
            } else {
                time(&m["until_us"])
            }
        ));
    }
    if v["truncated"].as_bool() == Some(true) {
        s.push_str("(more changes: ask again from the last one's time)\n");
    }
    for n in v["snapshots"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "snapshot announced {}  MAB {} set {} sha256 {} ({})\n",
            time(&n["time_us"]),
            n["mab"].as_str().unwrap_or("?"),
            n["mab_seq"],
            n["sha256"].as_str().unwrap_or("?"),
            n["check"].as_str().unwrap_or("?")
        ));
    }
    for g in v["gaps"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "GAP: sets {}..={} of {} were never received (noticed {})\n",
            g["first_mab_seq"],
            g["last_mab_seq"],
            g["mab"].as_str().unwrap_or("?"),
            time(&g["recorded_us"])
        ));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("WARNING: {}\n", w.as_str().unwrap_or("?")));
    }
    s
}

/// A MAB audit page as text.
pub fn mab_text(v: &Value) -> String {
    let mut s = format!(
        "MAB {}  window {} .. {}\n",
        v["mab"].as_str().unwrap_or("?"),
        time(&v["from_us"]),
        if v["to_us"].is_null() {
            "now".to_string()
        } else {
            time(&v["to_us"])
        }
    );
    for c in v["changes"].as_array().into_iter().flatten() {
        let head = format!(
            "{}  RUAS {}  {}",
            time(&c["time_us"]),
            c["ruas"],
            c["kind"].as_str().unwrap_or("?")
        );
        match c["kind"].as_str() {
            Some("set") => {
                s.push_str(&format!(
                    "{head} {} ({}) payload {}\n",
                    c["mab_seq"],
                    c["outcome"].as_str().unwrap_or("?"),
                    payload(&c["payload"])
                ));
                for r in c["changed"].as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "    {} -> {}\n",
                        range(r),
                        r["etr"].as_str().unwrap_or("unassigned")
                    ));
                }
            }
            Some("gap") => s.push_str(&format!(
                "{head} sets {}..={} never received\n",
                c["first_mab_seq"], c["last_mab_seq"]
            )),
            _ => s.push_str(&format!(
                "{head} at set {} sha256 {}\n",
                c["mab_seq"],
                c["sha256"].as_str().unwrap_or("?")
            )),
        }
    }
    if let Some(n) = v["next"].as_str() {
        s.push_str(&format!("(more: ask again with --after {n})\n"));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("WARNING: {}\n", w.as_str().unwrap_or("?")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_state() {
        let v = serde_json::json!({
            "address": "20.0.0.5", "mabs": ["20.0.0.0/14"], "from_us": 0, "to_us": null,
            "mappings": [
                {"since_us": null, "until_us": 1_000_000, "state": "unknown", "source": null},
                {"since_us": 1_000_000, "until_us": 2_000_000, "state": "mapped",
                 "micronet": {"start": "20.0.0.4", "len": 4, "last": "20.0.0.7"},
                 "etr": "192.0.2.1", "drop": false, "source": "change", "ruas": 3,
                 "payload": {"ruas": 3, "epoch": 1, "seq": 9}, "mab_seq": 7, "record": "0:24"},
                {"since_us": 2_000_000, "until_us": null, "state": "unassigned", "range": null,
                 "source": "baseline", "ruas": 3, "mab_seq": 9, "record": "1:24"}
            ],
            "truncated": false, "snapshots": [], "gaps": [], "warnings": ["w"]
        });
        let t = address_text(&v);
        assert!(
            t.contains("micronet 20.0.0.4+4 (20.0.0.4-20.0.0.7) -> 192.0.2.1"),
            "{t}"
        );
        assert!(t.contains("payload 3/1/9 set 7"), "{t}");
        assert!(t.contains("unassigned (in no micronet)"), "{t}");
        assert!(t.contains("unknown"), "{t}");
        assert!(t.contains("WARNING: w"), "{t}");
    }
}
