//! An HTTP server on tiny_http: a handler function run on a few threads.
//!
//! Each worker thread waits for a request at most [`SHUTDOWN_POLL_MS`], so it sees
//! a stop request within that time; [`HttpServer::stop`] (or drop) stops and joins
//! the workers and closes the listening socket. Request bodies are read up to
//! [`ServerConfig::body_max`] bytes; a longer one gets 413 without calling the
//! handler. A handler that panics gets the client a 500, and the worker lives on.

use std::io::Read as _;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use crate::daemon::{SHUTDOWN_POLL_MS, Shutdown};

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Worker threads taking requests (at least 1).
    pub threads: usize,
    /// The largest request body read, in bytes.
    pub body_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: 2,
            body_max: 64 * 1024,
        }
    }
}

/// Why a server could not start.
#[derive(Debug)]
pub enum ServerError {
    /// Binding the address failed.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What tiny_http said.
        message: String,
    },
    /// A worker thread could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind { addr, message } => write!(
                f,
                "cannot listen for HTTP on {addr}: {message} (is the address in use or not local?)"
            ),
            ServerError::Thread(e) => write!(f, "cannot start an HTTP thread: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// A request as handlers see it: the body is already read (bounded).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ... (upper case as sent).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string after `?`, without it (empty when absent).
    pub query: String,
    /// Header names and values, as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The client's address.
    pub remote: Option<SocketAddr>,
}

impl Request {
    /// A request for tests and in-process callers.
    pub fn get(url: &str) -> Request {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        Request {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            headers: Vec::new(),
            body: Vec::new(),
            remote: None,
        }
    }

    /// The first value of query parameter `key` (no percent-decoding: ivip's
    /// parameters are numbers and names).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The non-empty path segments: `/payload/3/1/42` → `["payload", "3", "1", "42"]`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }
}

/// A response a handler returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body,
        }
    }

    /// A one-line plain-text response (a newline is added).
    pub fn text(status: u16, line: &str) -> Response {
        let mut body = line.as_bytes().to_vec();
        body.push(b'\n');
        Response::new(status, super::CONTENT_TYPE_TEXT, body)
    }

    /// 404 with a one-line reason.
    pub fn not_found(what: &str) -> Response {
        Response::text(404, what)
    }

    /// 400 with a one-line reason.
    pub fn bad_request(why: &str) -> Response {
        Response::text(400, why)
    }

    /// 405 with an `Allow` header.
    pub fn method_not_allowed(allow: &str) -> Response {
        let mut r = Response::text(405, &format!("method not allowed; use {allow}"));
        r.headers.push(("Allow".into(), allow.into()));
        r
    }

    /// Add a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The handler type.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A running server.
pub struct HttpServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpServer({})", self.addr)
    }
}

impl HttpServer {
    /// Listen on `addr` (port 0 picks one; see [`HttpServer::local_addr`]) and
    /// serve `handler` on `cfg.threads` threads named `{name}-http-{i}` until
    /// `shutdown` is requested or [`HttpServer::stop`] is called.
    ///
    /// # Errors
    /// [`ServerError`].
    pub fn spawn(
        addr: SocketAddr,
        name: &str,
        cfg: ServerConfig,
        shutdown: Shutdown,
        handler: Handler,
    ) -> Result<HttpServer, ServerError> {
        let server = tiny_http::Server::http(addr).map_err(|e| ServerError::Bind {
            addr,
            message: e.to_string(),
        })?;
        let local = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..cfg.threads.max(1) {
            let (server, worker_stop, shutdown, handler) = (
                server.clone(),
                stop.clone(),
                shutdown.clone(),
                handler.clone(),
            );
            let t = std::thread::Builder::new()
                .name(format!("{name}-http-{i}"))
                .spawn(move || serve(&server, &worker_stop, &shutdown, &handler, cfg.body_max));
            match t {
                Ok(t) => workers.push(t),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(ServerError::Thread(e));
                }
            }
        }
        log::info!("{name}: HTTP on http://{local}");
        Ok(HttpServer {
            addr: local,
            server,
            stop,
            workers,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop taking requests, finish the ones in hand, and join the workers.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn serve(
    server: &tiny_http::Server,
    stop: &AtomicBool,
    shutdown: &Shutdown,
    handler: &Handler,
    body_max: usize,
) {
    let wait = StdDuration::from_millis(SHUTDOWN_POLL_MS);
    while !stop.load(Ordering::SeqCst) && !shutdown.is_requested() {
        match server.recv_timeout(wait) {
            Ok(Some(rq)) => handle(rq, handler, body_max),
            Ok(None) => {}
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                log::debug!("HTTP accept: {e}");
            }
        }
    }
}

fn handle(mut rq: tiny_http::Request, handler: &Handler, body_max: usize) {
    let (path, query) = {
        let url = rq.url();
        let (p, q) = url.split_once('?').unwrap_or((url, ""));
        (p.to_string(), q.to_string())
    };
    let too_long = rq.body_length().is_some_and(|n| n > body_max);
    let mut body = Vec::new();
    let response = if too_long {
        Response::text(413, &format!("request body larger than {body_max} bytes"))
    } else {
        match rq
            .as_reader()
            .take(body_max as u64 + 1)
            .read_to_end(&mut body)
        {
            Err(e) => Response::bad_request(&format!("cannot read request body: {e}")),
            Ok(_) if body.len() > body_max => {
                Response::text(413, &format!("request body larger than {body_max} bytes"))
            }
            Ok(_) => {
                let req = Request {
                    method: rq.method().as_str().to_string(),
                    path,
                    query,
                    headers: rq
                        .headers()
                        .iter()
                        .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
                        .collect(),
                    body,
                    remote: rq.remote_addr().copied(),
                };
                std::panic::catch_unwind(AssertUnwindSafe(|| handler(&req))).unwrap_or_else(|_| {
                    log::error!("HTTP handler panicked on {} {}", req.method, req.path);
                    Response::text(500, "internal error")
                })
            }
        }
    };
    let mut out = tiny_http::Response::from_data(response.body).with_status_code(response.status);
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", response.content_type.as_bytes()) {
        out = out.with_header(h);
    }
    for (k, v) in &response.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            out = out.with_header(h);
        }
    }
    if let Err(e) = rq.respond(out) {
        log::debug!("HTTP respond: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_segments() {
        let r = Request::get("/payloads/3/1?from=5&to=9&flag");
        assert_eq!(r.segments(), ["payloads", "3", "1"]);
        assert_eq!(r.query_param("from"), Some("5"));
        assert_eq!(r.query_param("to"), Some("9"));
        assert_eq!(r.query_param("flag"), Some(""));
        assert_eq!(r.query_param("x"), None);
    }
}
