//! A small blocking HTTP/1.1 client for talking to the parent (another UAS or the
//! RUAS): `Content-Length` and chunked bodies, timeouts on every step, signed
//! answers checked by the caller.
//!
//! # Connections
//! By default one request per connection (`Connection: close`). With
//! [`HttpClient::with_keep_alive`] (a UAS's link to its parent) finished
//! connections go back to a small pool and carry later requests, which saves a
//! TCP handshake and teardown per SUMUC: at a few thousand SUMUCs/s on loopback
//! those were a fifth of all CPU (`cargo bench --bench ruas`, perf). Kept
//! connections are recycled on a budget, [`KeepAlive`]: at most `requests_max`
//! requests and `age_max` per connection, closed after `idle_max` unused (a reaper
//! thread sweeps the pools). The budget matters because of the server: tiny_http
//! 0.12 serves each connection on a pooled thread for as long as it lives, and in
//! a burst of new connections can queue one behind threads held by other
//! connections (its `TaskPool` counts a woken thread as still idle). Unbounded
//! keep-alive made such a connection wait until another closed: 5 s stalls at the
//! parent time-out in `ivip testnet`. With the budget, every connection gives its
//! thread back within `age_max` (busy) or `idle_max` (quiet), so a queued one
//! waits at most that long.
//!
//! Not a general HTTP client: `http://` only (answers are signed, spec: uas-api.md
//! §6; put TLS in front where the path is untrusted), no redirects, no proxies. A
//! request whose connection fails before any answer byte arrived is retried once on
//! a fresh connection; that is safe for SUMUCs because the RUAS answers a repeated
//! request id with its first outcome (sumuc.md §2), and it covers a kept
//! connection the server closed meanwhile.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Largest answer body read.
pub const ANSWER_BYTES_MAX: usize = 16 << 20;
/// Longest status line or header line.
pub const HEADER_LINE_BYTES_MAX: usize = 8 << 10;
/// Most header lines in an answer.
pub const HEADER_LINES_MAX: usize = 100;

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// The URL is not `http://HOST:PORT[/PATH]`.
    BadUrl(String),
    /// Could not connect, send or receive (includes timeouts).
    Io(String, std::io::Error),
    /// The answer is not HTTP/1.x as expected.
    BadAnswer(String, &'static str),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::BadUrl(u) => write!(f, "`{u}` is not an http://HOST:PORT URL"),
            UpstreamError::Io(to, e) => write!(f, "{to}: {e}"),
            UpstreamError::BadAnswer(to, why) => write!(f, "{to}: bad HTTP answer: {why}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Conn {
    reader: BufReader<TcpStream>,
    opened: Instant,
    /// Requests sent on it so far.
    uses: u32,
    /// When it last went back to the pool.
    idle_since: Instant,
}

/// How long a kept connection may live (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Requests one connection carries at most.
    pub requests_max: u32,
    /// A connection is not reused once this old.
    pub age_max: Duration,
    /// A pooled connection unused this long is closed.
    pub idle_max: Duration,
    /// Connections kept in the pool at most.
    pub pool_max: usize,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            requests_max: 1000,
            // A new connection the server queued waits at most about this long
            // (module doc); reconnecting 4 times a second per client costs little.
            age_max: Duration::from_millis(250),
            idle_max: Duration::from_millis(100),
            pool_max: 64,
        }
    }
}

#[derive(Debug)]
struct Pool {
    budget: KeepAlive,
    idle: Mutex<Vec<Conn>>,
    /// On the reaper's list (set by [`watch`], cleared by the sweep that finds
    /// the pool empty and drops it from the list).
    watched: AtomicBool,
}

impl Pool {
    fn usable(&self, c: &Conn, now: Instant) -> bool {
        c.uses < self.budget.requests_max
            && now.saturating_duration_since(c.opened) < self.budget.age_max
            && now.saturating_duration_since(c.idle_since) < self.budget.idle_max
    }

    /// The most recently used connection still within budget; the others that
    /// are not are closed.
    fn take(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some(c) = idle.pop() {
            if self.usable(&c, now) && quiet(&c) {
                return Some(c);
            }
        }
        None
    }

    /// Keep `c` for a later request; `true` when it was kept.
    fn put(&self, mut c: Conn, now: Instant) -> bool {
        c.idle_since = now;
        if !self.usable(&c, now) {
            return false;
        }
        let mut idle = self.idle.lock();
        if idle.len() >= self.budget.pool_max {
            return false;
        }
        idle.push(c);
        true
    }

    /// Close what is over budget; `true` when nothing is left (the pool is then
    /// no longer watched: the reaper drops it from its list).
    fn sweep(&self, now: Instant) -> bool {
        let mut idle = self.idle.lock();
        idle.retain(|c| self.usable(c, now));
        let empty = idle.is_empty();
        if empty {
            // Under the pool's lock: a `put` after this sees the flag clear and
            // puts the pool back on the list.
            self.watched.store(false, Ordering::Release);
        }
        empty
    }
}

/// `true` when nothing arrived on a kept connection since its last answer: no
/// close from the server and no bytes nobody asked for (which would otherwise be
/// read as the next request's answer).
fn quiet(c: &Conn) -> bool {
    let s = c.reader.get_ref();
    if !c.reader.buffer().is_empty() || s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let clean = matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    clean && s.set_nonblocking(false).is_ok()
}

/// Pools with connections in them, swept by one reaper thread while any exist.
static REAPER: Mutex<Option<Vec<Weak<Pool>>>> = Mutex::new(None);

/// Sweep period of the reaper.
const REAP_EVERY: Duration = Duration::from_millis(50);

/// Make sure the reaper watches `pool` (it starts when the first pool gets a
/// connection and ends when every pool is empty or gone).
fn watch(pool: &Arc<Pool>) {
    // Once per pool while it holds connections, not once per request.
    if pool.watched.swap(true, Ordering::AcqRel) {
        return;
    }
    let mut r = REAPER.lock();
    let start = r.is_none();
    r.get_or_insert_with(Vec::new).push(Arc::downgrade(pool));
    if start {
        let spawned = std::thread::Builder::new()
            .name("http-reaper".into())
            .spawn(reap);
        if spawned.is_err() {
            // No reaper: connections are still checked when taken, only idle
            // ones are not closed early. Try again with the next put.
            *r = None;
            pool.watched.store(false, Ordering::Release);
        }
    }
}

fn reap() {
    loop {
        std::thread::sleep(REAP_EVERY);
        let now = Instant::now();
        let mut r = REAPER.lock();
        let Some(list) = r.as_mut() else {
            return;
        };
        list.retain(|w| w.upgrade().is_some_and(|p| !p.sweep(now)));
        if list.is_empty() {
            *r = None;
            return;
        }
    }
}

/// A client for one server.
#[derive(Debug)]
pub struct HttpClient {
    authority: String,
    base_path: String,
    timeout: Duration,
    pool: Option<Arc<Pool>>,
}

impl HttpClient {
    /// A client for `url` (`http://HOST:PORT[/PATH]`); requests' paths are appended
    /// to `PATH`.
    ///
    /// # Errors
    /// [`UpstreamError::BadUrl`].
    pub fn new(url: &str, timeout: Duration) -> Result<HttpClient, UpstreamError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UpstreamError::BadUrl(url.into()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') {
            return Err(UpstreamError::BadUrl(url.into()));
        }
        Ok(HttpClient {
            authority: authority.to_string(),
            base_path: path.to_string(),
            timeout,
            pool: None,
        })
    }

    /// Keep connections open between requests, within `budget`.
    #[must_use]
    pub fn with_keep_alive(mut self, budget: KeepAlive) -> HttpClient {
        self.pool = Some(Arc::new(Pool {
            budget,
            idle: Mutex::new(Vec::new()),
            watched: AtomicBool::new(false),
        }));
        self
    }

    /// Connections kept open now (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.idle.lock().len())
    }

    /// `HOST:PORT`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path a request for `path_and_query` carries on the wire (the URL's
    /// path prefix, then it): what the server sees and signs.
    pub fn wire_path(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base_path)
    }

    fn connect(&self) -> Result<Conn, UpstreamError> {
        let err = |e| UpstreamError::Io(format!("connect to {}", self.authority), e);
        let addrs: Vec<_> = self.authority.to_socket_addrs().map_err(err)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.timeout)).map_err(err)?;
                    s.set_write_timeout(Some(self.timeout)).map_err(err)?;
                    let _ = s.set_nodelay(true);
                    let now = Instant::now();
                    return Ok(Conn {
                        reader: BufReader::new(s),
                        opened: now,
                        uses: 0,
                        idle_since: now,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(err(last))
    }

    /// Send one request and read the answer.
    ///
    /// # Errors
    /// [`UpstreamError`].
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, UpstreamError> {
        let kept = self.pool.as_ref().and_then(|p| p.take(Instant::now()));
        let conn = match kept {
            Some(c) => c,
            None => self.connect()?,
        };
        let first = match self.exchange(conn, method, path_and_query, headers, body) {
            Err((e, answered)) if !answered => {
                log::debug!(
                    "connection to {} failed before an answer ({e}); retrying once",
                    self.authority
                );
                let conn = self.connect()?;
                self.exchange(conn, method, path_and_query, headers, body)
            }
            r => r,
        };
        let (answer, reusable) = first.map_err(|(e, _)| e)?;
        if let (Some(p), Some(c)) = (&self.pool, reusable)
            && p.put(c, Instant::now())
        {
            watch(p);
        }
        Ok(answer)
    }

    /// One exchange: the answer, and the connection when it can carry another
    /// request; on error also says whether any answer byte had arrived.
    fn exchange(
        &self,
        mut conn: Conn,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(Answer, Option<Conn>), (UpstreamError, bool)> {
        let to = format!(
            "{method} http://{}{}{path_and_query}",
            self.authority, self.base_path
        );
        let io = |e| (UpstreamError::Io(to.clone(), e), false);
        conn.uses += 1;
        let mut head = format!(
            "{method} {}{path_and_query} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{}",
            self.base_path,
            self.authority,
            body.len(),
            if self.pool.is_some() {
                ""
            } else {
                "Connection: close\r\n"
            }
        );
        for (n, v) in headers {
            head.push_str(n);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        conn.reader.get_mut().write_all(&msg).map_err(io)?;
        conn.reader.get_mut().flush().map_err(io)?;

        let bad = |why| (UpstreamError::BadAnswer(to.clone(), why), true);
        let status_line = read_line(&mut conn.reader).map_err(io)?;
        if status_line.is_empty() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before an answer",
            )));
        }
        let io = |e| (UpstreamError::Io(to.clone(), e), true);
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad("not HTTP/1.x"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status code"))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut conn.reader).map_err(io)?;
            if line.is_empty() {
                break;
            }
            if headers.len() >= HEADER_LINES_MAX {
                return Err(bad("too many header lines"));
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| bad("header without a colon"))?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let find = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || version == "HTTP/1.0";
        let chunked =
            find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut body = Vec::new();
        // The body's end is known (not "until the server closes").
        let mut delimited = true;
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        } else if chunked {
            loop {
                let size_line = read_line(&mut conn.reader).map_err(io)?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    while !read_line(&mut conn.reader).map_err(io)?.is_empty() {}
                    break;
                }
                if body.len() + size > ANSWER_BYTES_MAX {
                    return Err(bad("answer too large"));
                }
                let at = body.len();
                body.resize(at + size, 0);
                conn.reader.read_exact(&mut body[at..]).map_err(io)?;
                read_line(&mut conn.reader).map_err(io)?;
            }
        } else if let Some(len) = find("content-length") {
            let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
            if len > ANSWER_BYTES_MAX {
                return Err(bad("answer too large"));
            }
            body.resize(len, 0);
            conn.reader.read_exact(&mut body).map_err(io)?;
        } else {
            delimited = false;
            (&mut conn.reader)
                .take(ANSWER_BYTES_MAX as u64 + 1)
                .read_to_end(&mut body)
                .map_err(io)?;
            if body.len() > ANSWER_BYTES_MAX {
                return Err(bad("answer too large"));
            }
        }
        let reusable = (self.pool.is_some() && delimited && !close).then_some(conn);
        Ok((
            Answer {
                status,
                headers,
                body,
            },
            reusable,
        ))
    }
}

/// Read one CRLF- or LF-terminated line, without the terminator; empty at EOF.
fn read_line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(HEADER_LINE_BYTES_MAX as u64)
        .read_until(b'\n', &mut buf)?;
    if n > 0 && !buf.ends_with(b"\n") && n >= HEADER_LINE_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "header line too long",
        ));
    }
    while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "header line is not UTF-8")
    })
}

/// Percent-encode a query value (unreserved characters kept).
pub fn query_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// Poll `f` until it holds or `limit` passes.
    fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f()
    }

    /// Read one request (head and Content-Length body) from a raw server socket.
    fn read_request(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
        let mut len = 0;
        loop {
            let line = read_line(r).ok()?;
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        Some(body)
    }

    fn answer(r: &mut BufReader<TcpStream>, body: &[u8], chunked: bool) {
        let s = r.get_mut();
        if chunked {
            let mut m = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for c in body.chunks(3) {
                m.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                m.extend_from_slice(c);
                m.extend_from_slice(b"\r\n");
            }
            m.extend_from_slice(b"0\r\n\r\n");
            s.write_all(&m).unwrap();
        } else {
            let mut m =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            m.extend_from_slice(body);
            s.write_all(&m).unwrap();
        }
    }

    #[test]
    fn one_connection_per_request_and_a_failed_connection_is_retried_once() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            // Connection 1: closed before any answer; the client retries.
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            assert!(read_request(&mut r).is_some());
            drop(r);
            // Then one connection per request, each asking to be closed.
            for (i, chunked) in [(1, false), (2, true), (3, false)] {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s);
                let mut head = String::new();
                loop {
                    let line = read_line(&mut r).unwrap();
                    if line.is_empty() {
                        break;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                    head.push('\n');
                }
                assert!(head.contains("connection: close"), "{head}");
                let mut b = vec![0; 5];
                r.read_exact(&mut b).unwrap();
                answer(
                    &mut r,
                    &[format!("{i}:").as_bytes(), &b[..]].concat(),
                    chunked,
                );
            }
        });
        let c = HttpClient::new(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
        for i in 1..=3 {
            let a = c.request("POST", "/x", &[("X-A", "b")], b"hello").unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(a.body, format!("{i}:hello").as_bytes());
        }
        t.join().unwrap();
        assert!(HttpClient::new("https://x:1", Duration::from_secs(1)).is_err());
        assert_eq!(query_escape("20.0.0.0+256"), "20.0.0.0%2B256");
    }

    /// Serve `per_conn[i]` requests on the i-th connection (closing it after),
    /// each answered with its connection and request number; the last answer on
    /// a connection says `Connection: close` when `say_close`. Returns what each
    /// connection's requests asked for in `Connection`.
    fn kept_server(
        per_conn: Vec<usize>,
        say_close: bool,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<Vec<String>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (c, n) in per_conn.into_iter().enumerate() {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s);
                let mut conn_hdrs = Vec::new();
                for i in 0..n {
                    let mut connection = String::new();
                    loop {
                        let line = read_line(&mut r).unwrap().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("connection:") {
                            connection = v.trim().to_string();
                        }
                    }
                    let mut b = vec![0; 2];
                    r.read_exact(&mut b).unwrap();
                    conn_hdrs.push(connection);
                    let body = format!("{c}.{i}");
                    let close = if say_close && i + 1 == n {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    let m = format!(
                        "HTTP/1.1 200 OK\r\n{close}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    r.get_mut().write_all(m.as_bytes()).unwrap();
                }
                seen.push(conn_hdrs);
            }
            seen
        });
        (addr, t)
    }

    fn bodies(c: &HttpClient, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let a = c.request("POST", "/s", &[], b"hi").unwrap();
                String::from_utf8(a.body).unwrap()
            })
            .collect()
    }

    #[test]
    fn kept_connections_carry_requests_up_to_their_budget() {
        let (addr, t) = kept_server(vec![3, 2], false);
        let budget = KeepAlive {
            requests_max: 3,
            ..KeepAlive::default()
        };
        let c = HttpClient::new(&format!("http://{addr}"), Duration::from_secs(5))
            .unwrap()
            .with_keep_alive(budget);
        assert_eq!(bodies(&c, 5), ["0.0", "0.1", "0.2", "1.0", "1.1"]);
        assert_eq!(c.idle_connections(), 1);
        drop(c);
        let seen = t.join().unwrap();
        assert!(seen.iter().flatten().all(|h| h.is_empty()), "{seen:?}");
    }

    #[test]
    fn a_kept_connection_the_server_closed_is_replaced_without_an_error() {
        // The server closes each connection after two answers, the second saying
        // so once and not the other time.
        for say_close in [true, false] {
            let (addr, t) = kept_server(vec![2, 2], say_close);
            let c = HttpClient::new(&format!("http://{addr}"), Duration::from_secs(5))
                .unwrap()
                .with_keep_alive(KeepAlive {
                    idle_max: Duration::from_secs(30),
                    ..KeepAlive::default()
                });
            assert_eq!(bodies(&c, 2), ["0.0", "0.1"]);
            if say_close {
                assert_eq!(c.idle_connections(), 0, "`Connection: close` is obeyed");
            } else {
                // Kept, but the server has closed it: the next request finds out
                // (before sending, or by the retry) and uses a new one.
                let closed = wait_until(Duration::from_secs(10), || {
                    let p = c.pool.as_ref().unwrap().idle.lock();
                    p.first().is_some_and(|k| !quiet(k))
                });
                assert!(closed, "the server's close is seen");
            }
            assert_eq!(bodies(&c, 2), ["1.0", "1.1"]);
            t.join().unwrap();
        }
    }

    #[test]
    fn idle_kept_connections_are_closed_by_the_reaper() {
        let (addr, t) = kept_server(vec![1], false);
        let c = HttpClient::new(&format!("http://{addr}"), Duration::from_secs(5))
            .unwrap()
            .with_keep_alive(KeepAlive {
                idle_max: Duration::from_millis(100),
                ..KeepAlive::default()
            });
        assert_eq!(bodies(&c, 1), ["0.0"]);
        assert!(wait_until(Duration::from_secs(10), || c.idle_connections() == 0));
        // The server sees the close (its thread is free again).
        t.join().unwrap();
    }

    #[test]
    fn a_dead_server_is_an_io_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = HttpClient::new(&format!("http://{addr}"), Duration::from_secs(2)).unwrap();
        assert!(matches!(
            c.request("GET", "/", &[], b""),
            Err(UpstreamError::Io(..))
        ));
    }
}
