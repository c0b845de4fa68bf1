//! The replicator's driver: sockets, worker threads, clock, admin HTTP.
//!
//! One `SO_REUSEPORT` socket and one [`UdpLoop`] per worker (thread per core),
//! all sharing one [`Shared`]; worker 0 runs the control-plane timers. The only
//! place the replicator reads a clock, makes randomness or touches a socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::config::ReplicatorSettings;
use super::core::{Core, Shared};
use crate::daemon::Shutdown;
use crate::feed::FeedStatus;
use crate::http::{self, HttpServer, Request, Response, ServerConfig};
use crate::metrics::Registry;
use crate::net::event_loop::Stop;
use crate::net::{LoopMetrics, UdpLoop, cores, random_bytes};
use crate::time::SystemClock;

/// Why a replicator could not start or stopped with an error.
#[derive(Debug)]
pub enum ReplicatorError {
    /// The feed socket could not be bound.
    Bind(std::io::Error),
    /// The admin HTTP server could not start.
    Admin(http::ServerError),
    /// A worker thread could not start, or its loop failed.
    Worker(std::io::Error),
    /// Settings the core refused, or no randomness.
    Setup(String),
}

impl std::fmt::Display for ReplicatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicatorError::Bind(e) => write!(f, "{e} (is another daemon using the port?)"),
            ReplicatorError::Admin(e) => write!(f, "admin: {e}"),
            ReplicatorError::Worker(e) => write!(f, "worker: {e}"),
            ReplicatorError::Setup(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ReplicatorError {}

/// A running replicator.
pub struct Replicator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    admin: Option<HttpServer>,
    registry: Registry,
    stop: Stop,
    workers: Vec<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replicator({})", self.addr)
    }
}

/// Start a replicator; it runs until `shutdown` is requested, or [`Replicator::stop`].
///
/// # Errors
/// [`ReplicatorError`].
pub fn start(s: &ReplicatorSettings, shutdown: Shutdown) -> Result<Replicator, ReplicatorError> {
    let registry = Registry::new();
    let clock = SystemClock::new();
    let nonce = u64::from_be_bytes(random_bytes::<8>().map_err(ReplicatorError::Setup)?);
    let secret = random_bytes::<32>().map_err(ReplicatorError::Setup)?;
    let shared = Shared::new(&s.core, clock.now(), nonce, secret, &registry)
        .map_err(ReplicatorError::Setup)?;
    let n = cores::worker_count(s.workers);
    let sockets =
        cores::bind_group(s.listen, n, s.socket.options()).map_err(ReplicatorError::Bind)?;
    let addr = sockets[0].local_addr().map_err(ReplicatorError::Bind)?;
    let loop_metrics = LoopMetrics::register(&registry, "ivip_replicator");
    let stop = Stop::new(shutdown.clone());
    let mut workers = Vec::with_capacity(n);
    for (i, sock) in sockets.into_iter().enumerate() {
        let lp = UdpLoop::new(
            sock,
            s.event_loop,
            s.fault.injector(i as u64),
            loop_metrics.clone(),
            clock,
        )
        .map_err(ReplicatorError::Worker)?;
        let mut core = Core::new(shared.clone(), i == 0);
        let worker_stop = stop.clone();
        let t = cores::spawn(format!("replicator-{i}"), move || {
            lp.run(&mut core, &worker_stop)
        });
        match t {
            Ok(t) => workers.push(t),
            Err(e) => {
                stop.abort();
                return Err(ReplicatorError::Worker(e));
            }
        }
    }
    let admin = match s.admin {
        None => None,
        Some(a) => {
            let reg = registry.clone();
            let handler: http::server::Handler =
                Arc::new(
                    move |r: &Request| match (r.method.as_str(), r.path.as_str()) {
                        ("GET", "/metrics") => http::metrics_response(&reg),
                        (_, "/metrics") => Response::method_not_allowed("GET"),
                        _ => Response::not_found("no such resource; try /metrics"),
                    },
                );
            match HttpServer::spawn(a, "replicator", ServerConfig::default(), shutdown, handler) {
                Ok(h) => Some(h),
                Err(e) => {
                    stop.abort();
                    return Err(ReplicatorError::Admin(e));
                }
            }
        }
    };
    log::info!(
        "replicator on {addr}: {n} worker(s), {} feed(s), RUAS sources {}",
        s.core.feeds.len(),
        s.core.ruas_sources.ips.len() + s.core.ruas_sources.addrs.len()
    );
    Ok(Replicator {
        shared,
        addr,
        admin,
        registry,
        stop,
        workers,
    })
}

/// Start and run until `shutdown` (SIGTERM/SIGINT in the binary).
///
/// # Errors
/// [`ReplicatorError`].
pub fn run(s: &ReplicatorSettings, shutdown: Shutdown) -> Result<(), ReplicatorError> {
    start(s, shutdown)?.wait()
}

impl Replicator {
    /// The feed socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(HttpServer::local_addr)
    }

    /// The metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The shared core state (metrics, downstreams, feeds).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Subscribers now.
    pub fn downstream_count(&self) -> usize {
        self.shared.downstream_count()
    }

    /// What each upstream feed is doing.
    pub fn feed_status(&self) -> Vec<FeedStatus> {
        self.shared.feed_status()
    }

    fn join(mut self) -> Result<(), ReplicatorError> {
        let mut result = Ok(());
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(ReplicatorError::Worker(e)),
                Err(_) => {
                    result = Err(ReplicatorError::Worker(std::io::Error::other(
                        "a worker thread panicked",
                    )))
                }
            }
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
        result
    }

    /// Wait until the shutdown flag stops the workers.
    ///
    /// # Errors
    /// A worker's loop failed.
    pub fn wait(self) -> Result<(), ReplicatorError> {
        self.join()
    }

    /// Stop gracefully: unsubscribe from upstreams, tell downstreams, join.
    ///
    /// # Errors
    /// A worker's loop failed.
    pub fn stop(self) -> Result<(), ReplicatorError> {
        self.stop.stop();
        self.join()
    }

    /// Stop at once without a word to peers, as a crash would (tests and
    /// `ivip testnet` use it). The sockets are closed when this returns.
    pub fn abort(self) {
        self.stop.abort();
        let _ = self.join();
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop.abort();
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}
