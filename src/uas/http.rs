//! The UAS daemon's socket side: a tiny_http server whose worker threads turn each
//! HTTP request into a [`Request`], call [`Uas::handle`] with the clocks, and write
//! the [`Response`]; and [`run`], the `ivip uas --config FILE` entry point.
//!
//! Thin on purpose: bodies are read up to the configured limit (a larger body is
//! not read; the handler answers 413 and audits it, and tiny_http discards the
//! unread rest before reading the connection's next request), everything else is
//! the service's. Not `ivip::http::server`, which answers 413 itself: here the
//! refusal must reach the audit trail. Workers look at the shutdown flag every
//! [`crate::daemon::SHUTDOWN_POLL_MS`].

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::daemon::{SHUTDOWN_POLL_MS, Shutdown};
use crate::sign::Ed25519Verifier;
use crate::time::SystemClock;
use crate::uas::audit::AuditLog;
use crate::uas::auth::{WEAK_M_COST_KIB, phc_m_cost};
use crate::uas::config::UasConfig;
use crate::uas::forward::ParentLink;
use crate::uas::service::{Request, Response, Uas};

/// A running server.
#[derive(Debug)]
pub struct UasServer {
    addr: SocketAddr,
    stop: Shutdown,
    workers: Vec<JoinHandle<()>>,
}

impl UasServer {
    /// Bind `listen` and start `threads` workers for `uas`.
    ///
    /// # Errors
    /// The bind error, as text.
    pub fn spawn(
        uas: Arc<Uas>,
        listen: SocketAddr,
        threads: usize,
        stop: Shutdown,
    ) -> Result<UasServer, String> {
        let server = Arc::new(
            tiny_http::Server::http(listen)
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?,
        );
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("{listen} is not an IP address"))?;
        let clock = SystemClock::new();
        let body_max = uas.config().limits.body_bytes_max;
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let server = server.clone();
            let uas = uas.clone();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("uas-http-{i}"))
                .spawn(move || {
                    while !stop.is_requested() {
                        match server
                            .recv_timeout(std::time::Duration::from_millis(SHUTDOWN_POLL_MS))
                        {
                            Ok(Some(rq)) => serve(rq, &uas, &clock, body_max),
                            Ok(None) => {}
                            Err(e) => {
                                log::warn!("uas http: {e}");
                                std::thread::sleep(std::time::Duration::from_millis(10));
                            }
                        }
                    }
                })
                .map_err(|e| format!("cannot start an HTTP thread: {e}"))?;
            workers.push(t);
        }
        Ok(UasServer {
            addr,
            stop,
            workers,
        })
    }

    /// The address bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop the workers and wait for them.
    pub fn stop(mut self) {
        self.stop.request();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Wait until the shutdown flag is set (by a signal or another thread), then
    /// stop.
    pub fn wait(self) {
        while !self.stop.is_requested() {
            std::thread::sleep(std::time::Duration::from_millis(SHUTDOWN_POLL_MS));
        }
        self.stop();
    }
}

fn serve(mut rq: tiny_http::Request, uas: &Uas, clock: &SystemClock, body_max: usize) {
    let headers: Vec<(String, String)> = rq
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let peer = rq
        .remote_addr()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut body = Vec::new();
    let mut too_large = rq.body_length().is_some_and(|n| n > body_max);
    if !too_large {
        match rq
            .as_reader()
            .take(body_max as u64 + 1)
            .read_to_end(&mut body)
        {
            Ok(_) if body.len() > body_max => {
                too_large = true;
                body.clear();
            }
            Ok(_) => {}
            Err(e) => {
                log::debug!("uas http: reading a body from {peer}: {e}");
                let _ = rq.respond(tiny_http::Response::empty(400));
                return;
            }
        }
    }
    let req = Request {
        method: rq.method().as_str().to_string(),
        url: rq.url().to_string(),
        headers,
        body,
        body_too_large: too_large,
        peer,
    };
    let now = clock.now();
    let wall = crate::time::unix_now_us();
    let resp =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| uas.handle(&req, now, wall)))
            .unwrap_or_else(|_| {
                log::error!("uas: handler panicked on {} {}", req.method, req.url);
                Response {
                    status: 500,
                    headers: vec![],
                    body: b"{\"error\":\"internal\",\"detail\":\"internal error\"}".to_vec(),
                }
            });
    let mut out = tiny_http::Response::from_data(resp.body).with_status_code(resp.status);
    for (n, v) in &resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()) {
            out.add_header(h);
        }
    }
    if let Err(e) = rq.respond(out) {
        log::debug!("uas http: answering {peer}: {e}");
    }
}

/// Load the pieces a UAS needs from its config: key, audit trail, parent link.
///
/// # Errors
/// One operator line.
pub fn build(cfg: UasConfig) -> Result<Uas, String> {
    let key = crate::keyfile::read(&cfg.key_file).map_err(|e| e.to_string())?;
    let (audit, n) = AuditLog::open(&cfg.audit_dir, cfg.limits.audit_segment_bytes_max)
        .map_err(|e| format!("audit trail: {e}"))?;
    log::info!(
        "uas {}: audit trail {} holds {n} records",
        cfg.name,
        cfg.audit_dir.display()
    );
    for u in &cfg.users {
        if let Some(m) = u.password_hash.as_deref().and_then(phc_m_cost)
            && m < WEAK_M_COST_KIB
        {
            log::warn!(
                "uas {}: user {}'s password hash uses only {m} KiB of memory; make a new one with `ivip uas hash-password`",
                cfg.name,
                u.name
            );
        }
    }
    let parent =
        ParentLink::new(&cfg, Box::new(Ed25519Verifier)).map_err(|e| format!("parent: {e}"))?;
    Ok(Uas::new(cfg, key, audit, parent))
}

/// `ivip uas --config FILE`: run until SIGTERM or SIGINT.
///
/// # Errors
/// One operator line.
pub fn run(config: &Path) -> Result<(), String> {
    let cfg = UasConfig::load(config).map_err(|e| e.to_string())?;
    let listen = cfg.listen;
    let threads = cfg.limits.threads;
    let name = cfg.name.clone();
    let parent = cfg.parent_url.clone();
    let uas = Arc::new(build(cfg)?);
    let stop = Shutdown::on_signals();
    let server = UasServer::spawn(uas, listen, threads, stop)?;
    log::info!(
        "uas {name}: listening on http://{} (parent {parent})",
        server.local_addr()
    );
    // The line tests and scripts wait for.
    println!("listening {}", server.local_addr());
    server.wait();
    log::info!("uas {name}: stopped");
    Ok(())
}

/// The port-0-friendly form of [`run`] for tests: start a UAS from a config and
/// return the running server.
///
/// # Errors
/// One operator line.
pub fn start(cfg: UasConfig, stop: Shutdown) -> Result<UasServer, String> {
    let listen = cfg.listen;
    let threads = cfg.limits.threads;
    let uas = Arc::new(build(cfg)?);
    UasServer::spawn(uas, listen, threads, stop)
}

/// The web page is served from here; used by tests to check the embedded files.
pub fn page_paths() -> &'static [&'static str] {
    &["/", "/app.js", "/app.css"]
}
