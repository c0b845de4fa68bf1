//! A small blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! One request per connection (`Connection: close`). Every wait is bounded: the
//! connect by [`Client::connect_timeout`], the whole exchange by
//! [`Client::total_timeout`] (each read and write gets what is left of it), the
//! response head by [`HEAD_BYTES_MAX`], and the body by [`Client::body_max`].
//! Bodies are framed by `Content-Length`, `Transfer-Encoding: chunked`, or the end
//! of the connection. Only `http://` URLs: `http://host[:port]/path[?query]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration as StdDuration, Instant as StdInstant};

/// The largest status line plus headers accepted, in bytes.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// The most header lines accepted.
pub const HEADER_COUNT_MAX: usize = 100;

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// The URL is not `http://host[:port]/...`.
    BadUrl(String),
    /// The host name did not resolve.
    Resolve {
        /// `host:port`.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// No address of the host accepted a connection in time.
    Connect {
        /// `host:port`.
        host: String,
        /// The last error.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The total deadline passed.
    Timeout,
    /// The server's answer is not valid HTTP/1.x; says what was wrong.
    BadResponse(&'static str),
    /// The response head or body is larger than allowed.
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::BadUrl(u) => write!(f, "not an http://host[:port]/path URL: {u:?}"),
            ClientError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            ClientError::Connect { host, source } => {
                write!(f, "cannot connect to {host}: {source}")
            }
            ClientError::Io(e) => write!(f, "HTTP I/O error: {e}"),
            ClientError::Timeout => f.write_str("HTTP request timed out"),
            ClientError::BadResponse(why) => write!(f, "bad HTTP response: {why}"),
            ClientError::TooLarge { max } => write!(f, "HTTP response larger than {max} bytes"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> ClientError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout,
            _ => ClientError::Io(e),
        }
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (as sent) and values.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Client settings; cheap to copy, no connection pool.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// Longest wait for a TCP connection.
    pub connect_timeout: StdDuration,
    /// Longest time for the whole exchange after connecting.
    pub total_timeout: StdDuration,
    /// The largest body accepted, in bytes.
    pub body_max: usize,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            connect_timeout: StdDuration::from_secs(2),
            total_timeout: StdDuration::from_secs(10),
            body_max: 16 * 1024 * 1024,
        }
    }
}

struct Url<'a> {
    host: &'a str,
    port: u16,
    target: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, ClientError> {
    let bad = || ClientError::BadUrl(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || target.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 80,
            None => return Err(bad()),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (authority, 80),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Url { host, port, target })
}

/// A reader that gives each read what is left of a total deadline.
struct Deadline<'a> {
    stream: &'a TcpStream,
    deadline: StdInstant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(StdInstant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&*self.stream).read(buf)
    }
}

impl Client {
    /// `GET url`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn get(&self, url: &str) -> Result<HttpResponse, ClientError> {
        self.request("GET", url, &[], None)
    }

    /// `POST url` with a body.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn post(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<HttpResponse, ClientError> {
        self.request("POST", url, &[("Content-Type", content_type)], Some(body))
    }

    /// Any request. `headers` are added after `Host`, `Connection` and
    /// `Content-Length`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, ClientError> {
        let u = parse_url(url)?;
        let hostport = format!("{}:{}", u.host, u.port);
        let addrs: Vec<SocketAddr> = (u.host, u.port)
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                host: hostport.clone(),
                source,
            })?
            .collect();
        let mut last = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(ClientError::Connect {
            host: hostport.clone(),
            source: last,
        })?;
        let deadline = StdInstant::now() + self.total_timeout;
        let _ = stream.set_nodelay(true);
        let host_header = if u.host.contains(':') {
            format!("[{}]:{}", u.host, u.port)
        } else {
            hostport
        };
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\nUser-Agent: ivip\r\n",
            u.target
        );
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let left = deadline.saturating_duration_since(StdInstant::now());
        stream.set_write_timeout(Some(left.max(StdDuration::from_millis(1))))?;
        (&stream).write_all(head.as_bytes())?;
        if let Some(b) = body {
            (&stream).write_all(b)?;
        }
        let mut r = BufReader::new(Deadline {
            stream: &stream,
            deadline,
        });
        read_response(&mut r, method == "HEAD", self.body_max)
    }
}

fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<String, ClientError> {
    let mut line = Vec::new();
    let n = r.take(*budget as u64 + 1).read_until(b'\n', &mut line)?;
    if n > *budget {
        return Err(ClientError::TooLarge {
            max: HEAD_BYTES_MAX,
        });
    }
    *budget -= n;
    if !line.ends_with(b"\n") {
        return Err(ClientError::BadResponse(
            "connection closed inside the head",
        ));
    }
    while line.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| ClientError::BadResponse("head is not UTF-8"))
}

fn read_response(
    r: &mut impl BufRead,
    head_only: bool,
    body_max: usize,
) -> Result<HttpResponse, ClientError> {
    let mut budget = HEAD_BYTES_MAX;
    // Skip interim 1xx responses.
    let (status, headers) = loop {
        let status_line = read_line(r, &mut budget)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(ClientError::BadResponse("status line is not HTTP/1.x"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..=999).contains(s))
            .ok_or(ClientError::BadResponse("bad status code"))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r, &mut budget)?;
            if line.is_empty() {
                break;
            }
            if headers.len() >= HEADER_COUNT_MAX {
                return Err(ClientError::BadResponse("too many headers"));
            }
            let (k, v) = line
                .split_once(':')
                .ok_or(ClientError::BadResponse("header line without a colon"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        break (status, headers);
    };
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 {
        // no body
    } else if find("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        read_chunked(r, body_max, &mut body)?;
    } else if let Some(len) = find("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| ClientError::BadResponse("bad Content-Length"))?;
        if len > body_max {
            return Err(ClientError::TooLarge { max: body_max });
        }
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                ClientError::BadResponse("body shorter than Content-Length")
            }
            _ => e.into(),
        })?;
    } else {
        r.take(body_max as u64 + 1).read_to_end(&mut body)?;
        if body.len() > body_max {
            return Err(ClientError::TooLarge { max: body_max });
        }
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn read_chunked(
    r: &mut impl BufRead,
    body_max: usize,
    body: &mut Vec<u8>,
) -> Result<(), ClientError> {
    let mut budget = HEAD_BYTES_MAX;
    loop {
        let line = read_line(r, &mut budget)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| ClientError::BadResponse("bad chunk size"))?;
        if size == 0 {
            // Trailers, then an empty line.
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(());
        }
        if body.len().saturating_add(size) > body_max {
            return Err(ClientError::TooLarge { max: body_max });
        }
        let at = body.len();
        body.resize(at + size, 0);
        r.read_exact(&mut body[at..]).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ClientError::BadResponse("chunk cut short"),
            _ => e.into(),
        })?;
        if !read_line(r, &mut budget)?.is_empty() {
            return Err(ClientError::BadResponse("chunk not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/payload/1?x=2").unwrap();
        assert_eq!(
            (u.host, u.port, u.target),
            ("127.0.0.1", 8080, "/payload/1?x=2")
        );
        let u = parse_url("http://[::1]:9/").unwrap();
        assert_eq!((u.host, u.port), ("::1", 9));
        let u = parse_url("http://example.net").unwrap();
        assert_eq!((u.port, u.target), (80, "/"));
        for bad in [
            "https://x/",
            "http://",
            "http://:80/",
            "http://h:x/",
            "http://[::1/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_length_chunked_and_close_framing() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        let r = read_response(&mut Cursor::new(&cl[..]), false, 100).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
        let r = read_response(&mut Cursor::new(&ch[..]), false, 100).unwrap();
        assert_eq!(r.body, b"abcde");
        let close = b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\nnope";
        let r = read_response(&mut Cursor::new(&close[..]), false, 100).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
        assert_eq!(r.header("x"), Some("y"));
        let cont = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            read_response(&mut Cursor::new(&cont[..]), false, 100)
                .unwrap()
                .status,
            204
        );
    }

    #[test]
    fn limits_and_malformed_answers() {
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n";
        assert!(matches!(
            read_response(&mut Cursor::new(&big[..]), false, 100),
            Err(ClientError::TooLarge { max: 100 })
        ));
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n";
        assert!(matches!(
            read_response(&mut Cursor::new(&ch[..]), false, 100),
            Err(ClientError::TooLarge { .. })
        ));
        for bad in [
            &b"SMTP 200\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert!(
                matches!(
                    read_response(&mut Cursor::new(bad), false, 100),
                    Err(ClientError::BadResponse(_))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', HEAD_BYTES_MAX + 10));
        assert!(matches!(
            read_response(&mut Cursor::new(&huge[..]), false, 100),
            Err(ClientError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let c = Client {
            total_timeout: StdDuration::from_millis(200),
            ..Client::default()
        };
        let t0 = StdInstant::now();
        assert!(matches!(c.get(&url), Err(ClientError::Timeout)));
        assert!(t0.elapsed() < StdDuration::from_secs(5));
        drop(l);
    }
}
