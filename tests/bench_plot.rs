//! `contrib/bench_plot.py`, the script that turns the benchmarks' JSON lines into
//! SVG charts: a fixed sample on stdin gives a capacity-curve chart and a bar
//! chart with the expected content; empty input exits 2 with a one-line message.
//! Needs `python3` on PATH (standard library only).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Two figures over micronets 10^6, 10^7, 10^8 (unit `1/s`, one family: six
/// points), a bar-only unit (`us`, no scale parameter), a line of cargo noise
/// and a malformed JSON line (line 10).
const SAMPLE: &str = r#"   Compiling ivip v0.1.0 (/work/main)
{"figure": "lookup_single_per_s", "value": 31000000.5, "unit": "1/s", "micronets": 1000000, "family": "ipv4", "per_cpu_s": 33000000}
{"figure": "lookup_single_per_s", "value": 24000000, "unit": "1/s", "micronets": 10000000, "family": "ipv4", "per_cpu_s": 25000000}
{"figure": "lookup_single_per_s", "value": 19500000, "unit": "1/s", "micronets": 100000000, "family": "ipv4", "per_cpu_s": 20000000}
{"figure": "lookup_batched_per_s", "value": 61000000, "unit": "1/s", "micronets": 1000000, "family": "ipv4", "batch": 64}
{"figure": "lookup_batched_per_s", "value": 47000000, "unit": "1/s", "micronets": 10000000, "family": "ipv4", "batch": 64}
{"figure": "lookup_batched_per_s", "value": 38000000, "unit": "1/s", "micronets": 100000000, "family": "ipv4", "batch": 64}
{"figure": "hop_latency_p50_us", "value": 28.273, "unit": "us", "payload_bytes": 502, "samples": 5000, "cpus": 2}
{"figure": "hop_latency_p99_us", "value": 91.5, "unit": "us", "payload_bytes": 502, "samples": 5000, "cpus": 2}
{"figure": "broken", "value":
"#;

/// A directory under the system's temp dir, removed when dropped (also when a
/// check fails).
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(name: &str) -> TmpDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let d = std::env::temp_dir().join(format!(
            "ivip-bench-plot-{name}-{}-{nanos}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        TmpDir(d)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `python3 contrib/bench_plot.py --out OUT` with `input` on stdin.
fn run(out: &Path, input: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/bench_plot.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start python3 ({e}): {} needs python3 on PATH; install it (apt-get install python3)",
                script.display()
            )
        });
    // The sample is far smaller than a pipe's buffer: written whole before reading.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(input.as_bytes())
        .expect("write the sample to the script's stdin");
    drop(stdin);
    child.wait_with_output().expect("wait for python3")
}

fn read_svg(path: &Path) -> String {
    let svg = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("expected chart {} ({e})", path.display()));
    let trimmed = svg.trim();
    assert!(
        trimmed.starts_with("<svg") && trimmed.ends_with("</svg>"),
        "{} is not an <svg>...</svg> document",
        path.display()
    );
    assert_eq!(
        svg.matches("<svg").count(),
        1,
        "{}: one svg element",
        path.display()
    );
    svg
}

#[test]
fn sample_gives_a_curve_chart_and_a_bar_chart() {
    let dir = TmpDir::new("sample");
    let out = run(&dir.0, SAMPLE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    // The malformed line is skipped with a warning naming its line; the cargo
    // noise line is ignored silently.
    assert!(
        stderr.contains("line 10") && stderr.contains("warning"),
        "no warning naming line 10 in stderr:\n{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one warning only:\n{stderr}");

    let curve = dir.0.join("1_per_s.svg");
    let bars = dir.0.join("us.svg");
    let mut written: Vec<&str> = stdout.lines().collect();
    written.sort_unstable();
    let mut expected = vec![
        curve.to_str().expect("utf-8 temp path"),
        bars.to_str().expect("utf-8 temp path"),
    ];
    expected.sort_unstable();
    assert_eq!(written, expected, "paths printed");

    let svg = read_svg(&curve);
    for name in ["lookup_single_per_s", "lookup_batched_per_s"] {
        assert!(svg.contains(name), "curve chart does not name {name}");
    }
    assert_eq!(
        svg.matches("<circle").count(),
        6,
        "one point per line of the two series"
    );
    assert_eq!(svg.matches("<polyline").count(), 2, "one line per series");
    assert!(svg.contains("higher is better"), "1/s: higher is better");
    assert!(svg.contains("log scale"), "10^6..10^8: log x axis");
    for tick in [">1M<", ">10M<", ">100M<"] {
        assert!(svg.contains(tick), "x tick {tick} (powers of ten)");
    }
    assert!(!svg.contains("broken"), "the malformed line is not drawn");

    let svg = read_svg(&bars);
    for name in ["hop_latency_p50_us", "hop_latency_p99_us"] {
        assert!(svg.contains(name), "bar chart does not name {name}");
    }
    assert_eq!(svg.matches("<circle").count(), 0, "bars have no points");
    assert!(svg.contains("lower is better"), "us: lower is better");
    assert!(svg.contains("28.3 us"), "value printed at the bar's end");
}

#[test]
fn empty_input_exits_2_with_one_line() {
    let dir = TmpDir::new("empty");
    let out = run(&dir.0, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one-line message:\n{stderr}"
    );
    assert!(
        stderr.contains("no JSON figure lines"),
        "message says what is wrong:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "no chart written");
    assert!(!dir.0.join("unitless.svg").exists());
}
