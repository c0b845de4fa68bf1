//! What every `cargo bench` target here shares: the quick mode and the JSON line.

#![allow(dead_code)]

/// `IVIP_BENCH_QUICK=1`: small sizes and short phases (a smoke run).
pub fn quick() -> bool {
    std::env::var_os("IVIP_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Print one figure as a JSON line: `{"figure": NAME, "value": N, "unit": U, ...params}`.
/// Parameter values are written as given (numbers bare, strings quoted by the caller).
pub fn figure(name: &str, value: f64, unit: &str, params: &[(&str, String)]) {
    let mut s = format!("{{\"figure\": \"{name}\", \"value\": {value:.1}, \"unit\": \"{unit}\"");
    for (k, v) in params {
        s.push_str(&format!(", \"{k}\": {v}"));
    }
    s.push('}');
    println!("{s}");
}
