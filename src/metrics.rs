//! A small Prometheus metrics registry: counters, gauges and counters or gauges
//! with one label, rendered in the text exposition format (version 0.0.4).
//!
//! What it is: handles ([`Counter`], [`Gauge`], [`CounterVec`], [`GaugeVec`])
//! that are cheap to clone and update with one relaxed atomic operation from any
//! thread, without locks or allocation; and a [`Registry`] that owns them and
//! renders them for `GET /metrics` (spec: http.md §1). Label values are fixed
//! when a family is registered, so the hot path never looks up a string.
//!
//! What it is not: histograms, summaries or a global registry. Each daemon makes
//! its own registry and hands handles to its cores.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A counter not attached to any registry (for tests and unused paths).
    pub fn detached() -> Counter {
        Counter::default()
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// A gauge not attached to any registry.
    pub fn detached() -> Gauge {
        Gauge::default()
    }

    /// Set the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Add `d` (may be negative).
    #[inline]
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters sharing a name, one per value of a single label.
#[derive(Debug, Clone)]
pub struct CounterVec {
    values: Arc<[(String, Counter)]>,
}

impl CounterVec {
    /// The counter for the `i`-th label value given at registration. Callers
    /// index with their own enum (`reason as usize`); an index past the end
    /// returns the last counter rather than panicking.
    #[inline]
    pub fn at(&self, i: usize) -> &Counter {
        let n = self.values.len();
        &self.values[i.min(n - 1)].1
    }

    /// The counter for a label value, if it was registered (cold paths and tests).
    pub fn with(&self, value: &str) -> Option<&Counter> {
        self.values.iter().find(|(v, _)| v == value).map(|(_, c)| c)
    }

    /// Sum over all label values.
    pub fn total(&self) -> u64 {
        self.values.iter().map(|(_, c)| c.get()).sum()
    }
}

/// Gauges sharing a name, one per value of a single label.
#[derive(Debug, Clone)]
pub struct GaugeVec {
    values: Arc<[(String, Gauge)]>,
}

impl GaugeVec {
    /// The gauge for the `i`-th label value given at registration (clamped as
    /// [`CounterVec::at`]).
    #[inline]
    pub fn at(&self, i: usize) -> &Gauge {
        let n = self.values.len();
        &self.values[i.min(n - 1)].1
    }

    /// The gauge for a label value, if it was registered.
    pub fn with(&self, value: &str) -> Option<&Gauge> {
        self.values.iter().find(|(v, _)| v == value).map(|(_, g)| g)
    }
}

#[derive(Debug)]
enum Family {
    Counter(Counter),
    Gauge(Gauge),
    CounterVec(String, CounterVec),
    GaugeVec(String, GaugeVec),
}

#[derive(Debug)]
struct Entry {
    name: String,
    help: String,
    family: Family,
}

/// The metrics of one daemon. Registration takes a lock (start-up only);
/// updates never do.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn push(&self, name: &str, help: &str, family: Family) {
        debug_assert!(valid_name(name), "bad metric name {name}");
        self.entries.lock().push(Entry {
            name: name.to_string(),
            help: help.to_string(),
            family,
        });
    }

    /// Register a counter. Names end in `_total` by convention.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.push(name, help, Family::Counter(c.clone()));
        c
    }

    /// Register a gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.push(name, help, Family::Gauge(g.clone()));
        g
    }

    /// Register a counter per value of `label`. `values` must not be empty
    /// (an empty list gets one value, `"none"`).
    pub fn counter_vec(&self, name: &str, help: &str, label: &str, values: &[&str]) -> CounterVec {
        let v = CounterVec {
            values: label_values(values)
                .map(|s| (s, Counter::default()))
                .collect(),
        };
        self.push(name, help, Family::CounterVec(label.to_string(), v.clone()));
        v
    }

    /// Register a gauge per value of `label` (same rules as [`Registry::counter_vec`]).
    pub fn gauge_vec(&self, name: &str, help: &str, label: &str, values: &[&str]) -> GaugeVec {
        let v = GaugeVec {
            values: label_values(values)
                .map(|s| (s, Gauge::default()))
                .collect(),
        };
        self.push(name, help, Family::GaugeVec(label.to_string(), v.clone()));
        v
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for e in self.entries.lock().iter() {
            let kind = match e.family {
                Family::Counter(_) | Family::CounterVec(..) => "counter",
                Family::Gauge(_) | Family::GaugeVec(..) => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", e.name, escape_help(&e.help));
            let _ = writeln!(out, "# TYPE {} {kind}", e.name);
            match &e.family {
                Family::Counter(c) => {
                    let _ = writeln!(out, "{} {}", e.name, c.get());
                }
                Family::Gauge(g) => {
                    let _ = writeln!(out, "{} {}", e.name, g.get());
                }
                Family::CounterVec(label, v) => {
                    for (value, c) in v.values.iter() {
                        let _ = writeln!(
                            out,
                            "{}{{{label}=\"{}\"}} {}",
                            e.name,
                            escape_label(value),
                            c.get()
                        );
                    }
                }
                Family::GaugeVec(label, v) => {
                    for (value, g) in v.values.iter() {
                        let _ = writeln!(
                            out,
                            "{}{{{label}=\"{}\"}} {}",
                            e.name,
                            escape_label(value),
                            g.get()
                        );
                    }
                }
            }
        }
        out
    }
}

fn label_values<'a>(values: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    let none: &'a [&'a str] = &["none"];
    let v = if values.is_empty() { none } else { values };
    v.iter().map(|s| s.to_string())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Read one sample's value from a rendered exposition: `name` alone, or
/// `name{label="value"}`. For tests and tools that scrape `/metrics`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::new();
        let c = r.counter("ivip_test_fresh_total", "Fresh payloads.");
        let g = r.gauge("ivip_test_downstreams", "Subscribers now.");
        let v = r.counter_vec(
            "ivip_test_dropped_total",
            "Dropped, by reason.",
            "reason",
            &["truncated", "odd\"one"],
        );
        c.add(3);
        g.set(-2);
        v.at(0).inc();
        v.at(99).add(5);
        let text = r.render();
        assert!(text.contains("# TYPE ivip_test_fresh_total counter\nivip_test_fresh_total 3\n"));
        assert!(text.contains("ivip_test_downstreams -2\n"));
        assert!(text.contains("ivip_test_dropped_total{reason=\"truncated\"} 1\n"));
        assert!(text.contains("ivip_test_dropped_total{reason=\"odd\\\"one\"} 5\n"));
        assert_eq!(sample(&text, "ivip_test_fresh_total"), Some(3.0));
        assert_eq!(
            sample(&text, "ivip_test_dropped_total{reason=\"truncated\"}"),
            Some(1.0)
        );
        assert_eq!(v.total(), 6);
        assert_eq!(v.with("truncated").map(Counter::get), Some(1));
    }

    #[test]
    fn increments_from_many_threads_are_not_lost() {
        let r = Registry::new();
        let c = r.counter("ivip_test_total", "x");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 40_000);
    }
}
