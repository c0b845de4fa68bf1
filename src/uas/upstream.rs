//! A small blocking HTTP/1.1 client for talking to the parent (another UAS or the
//! RUAS): `Content-Length` and chunked bodies, timeouts on every step, signed
//! answers checked by the caller.
//!
//! One request per connection (`Connection: close`). Keep-alive would save a
//! loopback handshake, but tiny_http 0.12 serves each connection on a pooled thread
//! for as long as the connection lives and, in a burst of new connections, queues
//! some behind threads that are blocked on idle kept-alive ones: those requests then
//! wait until another connection closes (measured in `ivip testnet`: 5 s stalls at
//! the parent time-out, and whole-run stalls in `cargo bench --bench ruas`). With a
//! connection per request every server task is short and none waits long.
//!
//! Not a general HTTP client: `http://` only (answers are signed, spec: uas-api.md
//! §6; put TLS in front where the path is untrusted), no redirects, no proxies. A
//! request whose connection fails before any answer byte arrived is retried once on
//! a fresh connection; that is safe for SUMUCs because the RUAS answers a repeated
//! request id with its first outcome (sumuc.md §2).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

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
}

/// A client for one server.
#[derive(Debug)]
pub struct HttpClient {
    authority: String,
    base_path: String,
    timeout: Duration,
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
        })
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
                    return Ok(Conn {
                        reader: BufReader::new(s),
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
        let conn = self.connect()?;
        match self.exchange(conn, method, path_and_query, headers, body) {
            Ok(a) => Ok(a),
            Err((e, answered)) if !answered => {
                log::debug!(
                    "connection to {} failed before an answer ({e}); retrying once",
                    self.authority
                );
                let conn = self.connect()?;
                self.exchange(conn, method, path_and_query, headers, body)
                    .map_err(|(e, _)| e)
            }
            Err((e, _)) => Err(e),
        }
    }

    /// One exchange; on error also says whether any answer byte had arrived.
    fn exchange(
        &self,
        mut conn: Conn,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, (UpstreamError, bool)> {
        let to = format!(
            "{method} http://{}{}{path_and_query}",
            self.authority, self.base_path
        );
        let io = |e| (UpstreamError::Io(to.clone(), e), false);
        let mut head = format!(
            "{method} {}{path_and_query} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.base_path,
            self.authority,
            body.len()
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
        // One request per connection (see the module doc).
        let _ = close;
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
            (&mut conn.reader)
                .take(ANSWER_BYTES_MAX as u64 + 1)
                .read_to_end(&mut body)
                .map_err(io)?;
            if body.len() > ANSWER_BYTES_MAX {
                return Err(bad("answer too large"));
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
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
