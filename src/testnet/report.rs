//! What the testnet measures, and how it says it: propagation latency from UAS
//! acceptance to application in every QSD, payloads sent/lost/recovered,
//! convergence; a table, a JSON line, and an SVG histogram of the latencies.

use std::collections::HashMap;
use std::fmt::Write as _;

use ivip_wire::Mab;

use super::net::{Testnet, get_json, metric};
use super::workload::Accepted;

/// The end result.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// QSDs in the network.
    pub qsds: usize,
    /// Changes accepted by the UASes.
    pub changes: usize,
    /// Changes refused (should be 0).
    pub refused: u64,
    /// Changes never answered.
    pub failed: u64,
    /// Every QSD's hashes equal the masters'.
    pub converged: bool,
    /// QSDs whose hashes equal the masters'.
    pub converged_qsds: usize,
    /// (change, QSD) pairs where the QSD has not applied the change.
    pub missing: u64,
    /// Latency samples, ms: one per (change, QSD).
    pub latencies_ms: Vec<f64>,
    /// Payloads the RUASes sent.
    pub payloads_sent: u64,
    /// Payload sequence numbers QSDs found missing on arrival (summed over QSDs).
    pub payloads_lost: u64,
    /// Payloads QSDs fetched from MPSes (summed over QSDs): gap repairs, and
    /// at boot the payloads between a snapshot and the live stream.
    pub payloads_recovered: u64,
    /// Datagrams dropped by the injected loss (all links).
    pub datagrams_dropped: u64,
    /// The slowest RUAS write-ahead-log commit (fsync), ms.
    pub wal_commit_max_ms: f64,
}

impl Summary {
    /// Percentile of the latencies (0 when none).
    pub fn pct(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_ms.len() - 1) as f64 * p).round() as usize;
        self.latencies_ms[i]
    }

    /// The JSON line of `--json`.
    pub fn json(&self) -> String {
        serde_json::json!({
            "qsds": self.qsds,
            "changes": self.changes,
            "converged": self.converged,
            "missing": self.missing,
            "latency_ms_p50": round(self.pct(0.5)),
            "latency_ms_p99": round(self.pct(0.99)),
            "latency_ms_max": round(self.latencies_ms.last().copied().unwrap_or(0.0)),
            "payloads_sent": self.payloads_sent,
            "payloads_lost": self.payloads_lost,
            "payloads_recovered": self.payloads_recovered,
            "refused": self.refused,
            "failed": self.failed,
        })
        .to_string()
    }

    /// The end table.
    pub fn table(&self, header: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n{header}");
        let _ = writeln!(
            s,
            "  changes accepted {:>8}   refused {:>4}   unanswered {:>4}",
            self.changes, self.refused, self.failed
        );
        let _ = writeln!(
            s,
            "  propagation latency, change handed to the UAS -> applied, per QSD ({} samples):",
            self.latencies_ms.len()
        );
        let _ = writeln!(
            s,
            "      p50 {:>8.2} ms    p99 {:>8.2} ms    max {:>8.2} ms",
            self.pct(0.5),
            self.pct(0.99),
            self.latencies_ms.last().copied().unwrap_or(0.0)
        );
        let _ = writeln!(
            s,
            "  payloads sent {:>8}   lost (gaps at QSDs) {:>6}   fetched from MPSes (gaps, boot fill) {:>6}   datagrams dropped {:>6}",
            self.payloads_sent, self.payloads_lost, self.payloads_recovered, self.datagrams_dropped
        );
        let _ = writeln!(
            s,
            "  slowest RUAS WAL commit (fsync) {:>8.2} ms",
            self.wal_commit_max_ms
        );
        let _ = writeln!(
            s,
            "  missing {:>6}   converged: {} ({}/{} QSDs hold exactly the RUAS masters' hashes)",
            self.missing,
            if self.converged { "yes" } else { "NO" },
            self.converged_qsds,
            self.qsds
        );
        s
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Applied times of one QSD for one MAB: seq -> µs.
fn applied(net: &Testnet, qsd: usize, mab: &Mab, from: u64, to: u64) -> HashMap<u64, u64> {
    let url = format!(
        "http://{}/v1/applied?mab={mab}&from={from}&to={to}",
        net.qsd_admin_addr(qsd)
    );
    get_json(&url)
        .ok()
        .and_then(|v| {
            v["applied"].as_array().map(|a| {
                a.iter()
                    .filter_map(|p| Some((p[0].as_u64()?, p[1].as_u64()?)))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Latency samples and missing count for the accepted changes, across QSDs.
pub fn latencies(net: &Testnet, accepted: &[Accepted]) -> (Vec<f64>, u64) {
    let mut by_mab: HashMap<Mab, Vec<&Accepted>> = HashMap::new();
    for a in accepted {
        by_mab.entry(a.mab).or_default().push(a);
    }
    let mut lat = Vec::new();
    let mut missing = 0u64;
    for q in 0..net.plan.qsds.len() {
        let seqs: HashMap<String, u64> = net.qsd_seqs(q).into_iter().collect();
        for (mab, list) in &by_mab {
            let from = list.iter().map(|a| a.mab_seq).min().unwrap_or(0);
            let to = list.iter().map(|a| a.mab_seq).max().unwrap_or(0);
            let times = applied(net, q, mab, from, to);
            let at = seqs.get(&mab.to_string()).copied().unwrap_or(0);
            for a in list {
                match times.get(&a.mab_seq) {
                    // From the moment the change was handed to the leaf UAS: the
                    // UAS answers only after the RUAS logged and sent it, by which
                    // time QSDs have usually applied it already.
                    Some(&t) => {
                        let ms = t.saturating_sub(a.sent_us) as f64 / 1000.0;
                        if ms > 1000.0 {
                            log::warn!(
                                "slow: qsd {q} {mab}#{} applied {ms:.0} ms after it was sent (answered after {:.0} ms)",
                                a.mab_seq,
                                a.at_us.saturating_sub(a.sent_us) as f64 / 1000.0
                            );
                        }
                        lat.push(ms)
                    }
                    // Applied through a snapshot after a restart: no time, not missing.
                    None if at >= a.mab_seq => {}
                    None => missing += 1,
                }
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    (lat, missing)
}

/// The slowest WAL commit of any RUAS, ms.
pub fn wal_commit_max_ms(net: &Testnet) -> f64 {
    net.plan
        .ruases
        .iter()
        .map(|r| {
            metric(
                &format!("http://{}/metrics", r.http),
                "ivip_ruas_wal_commit_max_microseconds",
            ) / 1000.0
        })
        .fold(0.0, f64::max)
}

/// Counters summed over the daemons.
pub fn payload_counts(net: &Testnet) -> (u64, u64, u64, u64) {
    let mut sent = 0.0;
    let mut dropped = 0.0;
    for r in &net.plan.ruases {
        let url = format!("http://{}/metrics", r.http);
        sent += metric(&url, "ivip_ruas_payloads_sent_total");
        dropped += metric(&url, "ivip_ruas_fault_dropped_total");
    }
    let (mut lost, mut recovered) = (0.0, 0.0);
    for q in 0..net.plan.qsds.len() {
        let url = format!("http://{}/metrics", net.qsd_admin_addr(q));
        lost += metric(&url, "ivip_qsd_payload_gaps_total");
        recovered += metric(&url, "ivip_qsd_mps_payloads_total");
    }
    (sent as u64, lost as u64, recovered as u64, dropped as u64)
}

/// An SVG histogram of latencies (ms, sorted ascending), log-spaced bins over
/// the range the samples span, ticks at 1-2-5 values, and the p50, p99 and
/// maximum marked.
pub fn histogram_svg(lat: &[f64], title: &str) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let first = lat.first().copied().unwrap_or(1.0).max(0.001);
    let last = lat.last().copied().unwrap_or(1.0).max(first);
    // One 1-2-5 step below the fastest sample and a little above the slowest.
    let lo = nice_below(first);
    let hi = (last * 1.2).max(lo * 10.0);
    let bins = 40usize;
    let span = (hi / lo).ln();
    let x_of = |v: f64| pad + (w - 2.0 * pad) * ((v.max(lo) / lo).ln() / span).clamp(0.0, 1.0);
    let mut counts = vec![0usize; bins];
    for &x in lat {
        let b = (((x.max(lo) / lo).ln() / span) * bins as f64) as usize;
        counts[b.min(bins - 1)] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\">{title}</text>",
        w / 2.0
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"34\" text-anchor=\"middle\" fill=\"#555\">{} samples</text>",
        w / 2.0,
        lat.len()
    );
    let bw = (w - 2.0 * pad) / bins as f64;
    for (i, c) in counts.iter().enumerate() {
        let bh = (h - 2.0 * pad) * (*c as f64 / max);
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4a78b5\"/>",
            pad + i as f64 * bw,
            h - pad - bh,
            bw - 1.0
        );
    }
    for v in ticks_125(lo, hi) {
        let x = x_of(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"black\"/>\n\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            h - pad,
            h - pad + 4.0,
            h - pad + 16.0,
            fmt_ms(v)
        );
    }
    if !lat.is_empty() {
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        for (i, (name, v)) in [("p50", pct(0.5)), ("p99", pct(0.99)), ("max", last)]
            .into_iter()
            .enumerate()
        {
            let x = x_of(v);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#c0392b\" stroke-dasharray=\"4 3\"/>\n\
                 <text x=\"{:.1}\" y=\"{}\" fill=\"#c0392b\">{name} {} ms</text>",
                pad - 4.0,
                h - pad,
                x + 3.0,
                pad + 2.0 + 13.0 * i as f64,
                fmt_ms(v)
            );
        }
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency, ms (log scale)</text>",
        w / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        "<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">samples per bin (tallest {max})</text>",
        h / 2.0,
        h / 2.0
    );
    let _ = writeln!(
        s,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - pad,
        w - pad,
        h - pad
    );
    s.push_str("</svg>\n");
    s
}

/// The largest 1-2-5 value (…, 0.5, 1, 2, 5, 10, …) at or below `v` (> 0).
fn nice_below(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * p)
        .find(|x| *x <= v)
        .unwrap_or(p)
}

/// The 1-2-5 values in `[lo, hi]`.
fn ticks_125(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut p = 10f64.powf(lo.log10().floor());
    while p <= hi && out.len() < 64 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * p;
            if v >= lo * 0.999 && v <= hi {
                out.push(v);
            }
        }
        p *= 10.0;
    }
    out
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_json() {
        let s = Summary {
            qsds: 2,
            changes: 3,
            converged: true,
            latencies_ms: vec![1.0, 2.0, 3.0, 4.0],
            ..Summary::default()
        };
        assert_eq!(s.pct(0.5), 3.0);
        let v: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        for k in [
            "qsds",
            "changes",
            "converged",
            "missing",
            "latency_ms_p50",
            "latency_ms_p99",
            "latency_ms_max",
            "payloads_lost",
            "payloads_recovered",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["latency_ms_max"], 4.0);
        let svg = histogram_svg(&s.latencies_ms, "t");
        assert!(svg.starts_with("<svg") && svg.contains("<rect"));
        assert!(
            svg.contains("p50 3.0 ms") && svg.contains("max 4.0 ms"),
            "{svg}"
        );
        assert_eq!(nice_below(3.7), 2.0);
        assert_eq!(nice_below(0.07), 0.05);
        assert_eq!(ticks_125(2.0, 48.0), [2.0, 5.0, 10.0, 20.0]);
    }
}
