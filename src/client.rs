//! A small blocking client of the query protocol, for ITR authors and for
//! `ivip query` (spec: query.md).
//!
//! [`QueryClient::query`] asks the configured servers in turn, retrying on
//! timeout and moving on after a `resyncing` or `refused` answer, and checks that a
//! reply carries the nonce it sent. [`QueryClient::recv_notification`] waits for a
//! notification and acknowledges it, as query.md §5 requires.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ivip_wire::addr::unit_addr;
use ivip_wire::query::{
    MapReply, MapRequest, MappedRange, Notification, NotifyAck, QueryMessage, Status,
};

/// What a server said about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// In a micronet: its range and ETR (zero = drop).
    Mapped {
        /// The micronet.
        micronet: MappedRange,
        /// Seconds it may be cached.
        cache_time_s: u32,
        /// Which server answered.
        server: SocketAddr,
    },
    /// In a MAB but in no micronet: the extent of the gap.
    Unassigned {
        /// The gap (its ETR is zero).
        gap: MappedRange,
        /// Seconds it may be cached.
        cache_time_s: u32,
        /// Which server answered.
        server: SocketAddr,
    },
    /// In no MAB.
    NotSpi {
        /// Seconds it may be cached.
        cache_time_s: u32,
        /// Which server answered.
        server: SocketAddr,
    },
}

/// Why no answer could be had.
#[derive(Debug)]
pub enum QueryError {
    /// No server answered within the time and tries allowed.
    NoAnswer {
        /// Servers asked.
        servers: usize,
        /// Tries per server.
        tries: u32,
    },
    /// Every server that answered was resyncing or refused.
    Unavailable {
        /// The last status seen.
        last: Status,
    },
    /// The server said the request was malformed.
    Malformed,
    /// A local socket error.
    Io(std::io::Error),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::NoAnswer { servers, tries } => write!(
                f,
                "no answer from {servers} server(s) after {tries} tries each; check the address and that the server runs"
            ),
            QueryError::Unavailable { last } => write!(
                f,
                "every server that answered said `{}`; try again shortly or ask another server",
                last.name()
            ),
            QueryError::Malformed => f.write_str("the server could not parse the request"),
            QueryError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for QueryError {}

impl From<std::io::Error> for QueryError {
    fn from(e: std::io::Error) -> Self {
        QueryError::Io(e)
    }
}

/// A blocking query client.
#[derive(Debug)]
pub struct QueryClient {
    socket: UdpSocket,
    servers: Vec<SocketAddr>,
    /// Time to wait for each reply.
    pub timeout: Duration,
    /// Tries per server before moving to the next.
    pub tries: u32,
}

fn nonce() -> u64 {
    let mut b = [0u8; 8];
    // getrandom failing means the OS has no randomness; fall back to time so a
    // client still works (the nonce is then guessable, which only weakens spoofing
    // protection for this one request).
    if getrandom::fill(&mut b).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    u64::from_ne_bytes(b)
}

impl QueryClient {
    /// A client bound to an ephemeral port of the right family for the first
    /// server.
    ///
    /// # Errors
    /// Socket errors.
    pub fn new(servers: Vec<SocketAddr>) -> std::io::Result<QueryClient> {
        let bind: SocketAddr = match servers.first() {
            Some(SocketAddr::V6(_)) => "[::]:0".parse().map_err(std::io::Error::other)?,
            _ => "0.0.0.0:0".parse().map_err(std::io::Error::other)?,
        };
        Ok(QueryClient {
            socket: UdpSocket::bind(bind)?,
            servers,
            timeout: Duration::from_millis(500),
            tries: 2,
        })
    }

    /// The local address (where notifications arrive).
    ///
    /// # Errors
    /// Socket errors.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Ask for the mapping of `addr`.
    ///
    /// # Errors
    /// [`QueryError`].
    pub fn query(&self, addr: IpAddr) -> Result<Answer, QueryError> {
        let mut last_status = None;
        for &server in &self.servers {
            for _ in 0..self.tries {
                let n = nonce();
                let req = QueryMessage::Request(MapRequest { nonce: n, addr })
                    .to_vec()
                    .map_err(|e| QueryError::Io(std::io::Error::other(e)))?;
                self.socket.send_to(&req, server)?;
                match self.wait_reply(server, n)? {
                    None => continue,
                    Some(r) => match r.status {
                        Status::Found | Status::Unassigned | Status::NotSpi => {
                            return Ok(answer(&r, server));
                        }
                        Status::Malformed => return Err(QueryError::Malformed),
                        s @ (Status::Resyncing | Status::Refused) => {
                            last_status = Some(s);
                            break;
                        }
                    },
                }
            }
        }
        Err(match last_status {
            Some(last) => QueryError::Unavailable { last },
            None => QueryError::NoAnswer {
                servers: self.servers.len(),
                tries: self.tries,
            },
        })
    }

    /// Wait for the reply to `nonce` from `server`; other datagrams are ignored
    /// (notifications are acknowledged so the server stops resending).
    fn wait_reply(&self, server: SocketAddr, nonce: u64) -> Result<Option<MapReply>, QueryError> {
        self.receive(self.timeout, |from, m| match m {
            QueryMessage::Reply(r) if r.nonce == nonce && from == server => Some(r),
            _ => None,
        })
    }

    /// Receive until `want` takes a datagram or `timeout` passes. Every
    /// notification is acknowledged on the way (query.md §5: the server resends
    /// until acked).
    fn receive<T>(
        &self,
        timeout: Duration,
        mut want: impl FnMut(SocketAddr, QueryMessage) -> Option<T>,
    ) -> Result<Option<T>, QueryError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(m) = QueryMessage::parse(&buf[..n]) else {
                continue;
            };
            if let QueryMessage::Notify(note) = &m {
                self.ack(from, note)?;
            }
            if let Some(t) = want(from, m) {
                return Ok(Some(t));
            }
        }
    }

    fn ack(&self, to: SocketAddr, note: &Notification) -> Result<(), QueryError> {
        let ack = QueryMessage::Ack(NotifyAck {
            notify_id: note.notify_id,
        })
        .to_vec()
        .map_err(|e| QueryError::Io(std::io::Error::other(e)))?;
        self.socket.send_to(&ack, to)?;
        Ok(())
    }

    /// Wait up to `timeout` for a notification; acknowledge and return it.
    ///
    /// # Errors
    /// Socket errors.
    pub fn recv_notification(
        &self,
        timeout: Duration,
    ) -> Result<Option<(SocketAddr, Notification)>, QueryError> {
        self.receive(timeout, |from, m| match m {
            QueryMessage::Notify(note) => Some((from, note)),
            _ => None,
        })
    }
}

fn answer(r: &MapReply, server: SocketAddr) -> Answer {
    let zero = MappedRange {
        start: 0,
        len: 1,
        etr: ivip_wire::Etr::zero(r.family),
    };
    match r.status {
        Status::Found => Answer::Mapped {
            micronet: r.range.unwrap_or(zero),
            cache_time_s: r.cache_time_s,
            server,
        },
        Status::Unassigned => Answer::Unassigned {
            gap: r.range.unwrap_or(zero),
            cache_time_s: r.cache_time_s,
            server,
        },
        _ => Answer::NotSpi {
            cache_time_s: r.cache_time_s,
            server,
        },
    }
}

/// Render a range of units as `FIRST-LAST (LEN units)`.
pub fn describe_range(family: ivip_wire::Family, r: &MappedRange) -> String {
    let last = r.start.saturating_add(r.len - 1);
    format!(
        "{}-{} ({} {})",
        unit_addr(family, r.start),
        unit_addr(family, last),
        r.len,
        match family {
            ivip_wire::Family::V4 => "addresses",
            ivip_wire::Family::V6 => "/64s",
        }
    )
}
