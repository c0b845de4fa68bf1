//! The QSC daemon: one mio loop on its socket (ITRs and upstream QSDs both talk to
//! it there), the admin HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::config::QscConfig;
use super::core::{Outbox as CoreOutbox, QscCore, QscCoreConfig};
use crate::daemon::Shutdown;
use crate::http::{self, HttpServer, ServerConfig};
use crate::metrics::{Counter, Registry};
use crate::net::event_loop::Stop;
use crate::net::{DatagramCore, LoopConfig, LoopMetrics, Outbox, UdpLoop, cores};
use crate::notify::NotifierConfig;
use crate::rng::Rng;
use crate::time::{Duration, Instant, SystemClock};

struct Metrics {
    hits: Counter,
    misses: Counter,
    coalesced: Counter,
    upstream_timeouts: Counter,
    upstream_failures: Counter,
    malformed: Counter,
    unexpected: Counter,
    overloaded: Counter,
    upstream_notifications: Counter,
    notify_sent: Counter,
    notify_acked: Counter,
}

fn sync(c: &Counter, total: u64) {
    let have = c.get();
    if total > have {
        c.add(total - have);
    }
}

/// The core on one socket: datagrams from configured upstreams are replies and
/// notifications; everything else is a querier.
struct Driven {
    core: QscCore,
    upstreams: Vec<SocketAddr>,
    out: CoreOutbox,
    m: Metrics,
}

impl Driven {
    fn flush(&mut self, out: &mut Outbox) {
        for t in self.out.client.drain(..).chain(self.out.upstream.drain(..)) {
            let _ = out.push_to(t.to, &t.bytes);
        }
    }
}

impl DatagramCore for Driven {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        if self.upstreams.contains(&from) {
            self.core.handle_upstream(now, from, bytes, &mut self.out);
        } else {
            self.core.handle_client(now, from, bytes, &mut self.out);
        }
        self.flush(out);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.core.handle_timeout(now, &mut self.out);
        self.flush(out);
        let s = self.core.stats();
        sync(&self.m.hits, s.hits);
        sync(&self.m.misses, s.misses);
        sync(&self.m.coalesced, s.coalesced);
        sync(&self.m.upstream_timeouts, s.upstream_timeouts);
        sync(&self.m.upstream_failures, s.upstream_failures);
        sync(&self.m.malformed, s.malformed);
        sync(&self.m.unexpected, s.unexpected);
        sync(&self.m.overloaded, s.overloaded);
        sync(&self.m.upstream_notifications, s.upstream_notifications);
        let n = self.core.notifier().stats();
        sync(&self.m.notify_sent, n.sent);
        sync(&self.m.notify_acked, n.acked);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
}

/// A running QSC.
pub struct Qsc {
    addr: SocketAddr,
    admin: Option<HttpServer>,
    registry: Registry,
    stop: Stop,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Qsc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Qsc({})", self.addr)
    }
}

/// Start a QSC.
///
/// # Errors
/// A socket, thread or HTTP server could not start (one operator line).
pub fn start(c: &QscConfig, shutdown: Shutdown) -> Result<Qsc, String> {
    let registry = Registry::new();
    let r = &registry;
    let m = Metrics {
        hits: r.counter(
            "ivip_qsc_cache_hits_total",
            "Requests answered from the cache.",
        ),
        misses: r.counter(
            "ivip_qsc_cache_misses_total",
            "Requests that needed an upstream.",
        ),
        coalesced: r.counter(
            "ivip_qsc_coalesced_total",
            "Misses merged into one already asked upstream.",
        ),
        upstream_timeouts: r.counter(
            "ivip_qsc_upstream_timeouts_total",
            "Upstream tries that timed out.",
        ),
        upstream_failures: r.counter(
            "ivip_qsc_upstream_failures_total",
            "Misses no upstream answered (answered `resyncing`).",
        ),
        malformed: r.counter("ivip_qsc_malformed_total", "Malformed datagrams."),
        unexpected: r.counter(
            "ivip_qsc_unexpected_total",
            "Datagrams from unexpected sources or with unknown nonces.",
        ),
        overloaded: r.counter(
            "ivip_qsc_overloaded_total",
            "Misses dropped: too many waiting.",
        ),
        upstream_notifications: r.counter(
            "ivip_qsc_upstream_notifications_total",
            "Notifications from upstream.",
        ),
        notify_sent: r.counter(
            "ivip_qsc_notifications_sent_total",
            "Notifications passed on to queriers.",
        ),
        notify_acked: r.counter(
            "ivip_qsc_notifications_acked_total",
            "Notifications acknowledged by queriers.",
        ),
    };
    let clock = SystemClock::new();
    let sock = cores::bind_group(c.listen, 1, c.socket.options())
        .map_err(|e| e.to_string())?
        .remove(0);
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let lp = UdpLoop::new(
        sock,
        LoopConfig::default(),
        c.fault.injector(0),
        LoopMetrics::register(&registry, "ivip_qsc"),
        clock,
    )
    .map_err(|e| e.to_string())?;
    let core = QscCore::new(
        QscCoreConfig {
            upstreams: c.upstreams.clone(),
            query_timeout: Duration::from_ms(c.query_timeout_ms),
            cache_entries_max: c.cache_entries_max,
            pending_max: c.pending_max,
            notifier: NotifierConfig::default(),
        },
        Rng::from_os(),
    );
    let mut driven = Driven {
        core,
        upstreams: c.upstreams.clone(),
        out: CoreOutbox::default(),
        m,
    };
    let stop = Stop::new(shutdown.clone());
    let st = stop.clone();
    let thread =
        cores::spawn("qsc".into(), move || lp.run(&mut driven, &st)).map_err(|e| e.to_string())?;
    let reg = registry.clone();
    let admin = HttpServer::spawn(
        c.admin_listen,
        "qsc",
        ServerConfig::default(),
        shutdown,
        Arc::new(move |r| match r.segments().as_slice() {
            ["metrics"] => http::metrics_response(&reg),
            _ => http::Response::not_found(&format!("no resource {}", r.path)),
        }),
    )
    .map_err(|e| e.to_string())?;
    log::info!(
        "qsc: queries on {addr}, {} upstream(s), admin http://{}",
        c.upstreams.len(),
        admin.local_addr()
    );
    Ok(Qsc {
        addr,
        admin: Some(admin),
        registry,
        stop,
        thread: Some(thread),
    })
}

impl Qsc {
    /// The query port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stop.
    pub fn stop(mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
    }
}

impl Drop for Qsc {
    fn drop(&mut self) {
        self.stop.abort();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run until SIGTERM/SIGINT.
///
/// # Errors
/// One operator line.
pub fn run(c: &QscConfig, shutdown: Shutdown) -> Result<(), String> {
    let q = start(c, shutdown.clone())?;
    while !shutdown.is_requested() {
        std::thread::sleep(std::time::Duration::from_millis(
            crate::daemon::SHUTDOWN_POLL_MS,
        ));
    }
    q.stop();
    Ok(())
}
