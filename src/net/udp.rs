//! Batched UDP over libc: sockets with `SO_REUSEPORT`, `recvmmsg` into one
//! preallocated buffer, `sendmmsg` of many destinations in one call.
//!
//! This is the one audited `unsafe` module of the crate (with `daemon.rs`'s
//! signal handler). Every `unsafe` block is a single foreign call or a plain-data
//! conversion, with a `SAFETY:` comment saying what makes it sound. Pointers
//! handed to the kernel are rebuilt before every call from buffers this module
//! owns (or, for sends, from slices borrowed for the duration of the call), so no
//! pointer outlives what it points at in any use.
//!
//! Linux only (recvmmsg/sendmmsg); the project targets Linux servers.

#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, sockaddr_storage, socklen_t};

use super::fault::FaultInjector;

/// Bytes of each receive slot. Larger than any valid ivip datagram (payloads are
/// at most 1200 bytes), so a longer datagram arrives cut and flagged, and is
/// counted as oversized rather than parsed.
pub const RECV_SLOT_LEN: usize = 2048;
/// How many times a send waits for the socket to drain when the kernel's send
/// buffer is full, before the rest of the batch is dropped and counted.
pub const SEND_WAIT_COUNT_MAX: u32 = 3;
/// How long each such wait may take, in milliseconds.
pub const SEND_WAIT_MS: c_int = 1;

// ---------------------------------------------------------------------------
// Socket addresses
// ---------------------------------------------------------------------------

/// A socket address in the kernel's form, converted once and reused.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SockAddr {
    // First field, so a pointer to the struct is a pointer to the sockaddr.
    storage: sockaddr_storage,
    len: socklen_t,
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_std() {
            Some(a) => write!(f, "SockAddr({a})"),
            None => f.write_str("SockAddr(?)"),
        }
    }
}

fn zeroed_storage() -> sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        let mut storage = zeroed_storage();
        let len = match a {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_in is plain old data; all-zero is valid.
                let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                };
                // SAFETY: sockaddr_storage is at least as large as and aligned for
                // every sockaddr type, sockaddr_in included (its defining purpose).
                unsafe {
                    std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin);
                }
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
                let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_flowinfo = v6.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                sin6.sin6_scope_id = v6.scope_id();
                // SAFETY: as above, for sockaddr_in6.
                unsafe {
                    std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6);
                }
                size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as socklen_t,
        }
    }
}

impl SockAddr {
    /// Back to the standard type (`None` for a family other than IPv4/IPv6).
    pub fn to_std(&self) -> Option<SocketAddr> {
        from_storage(&self.storage)
    }
}

fn from_storage(s: &sockaddr_storage) -> Option<SocketAddr> {
    match c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is
            // large enough and aligned for it; we only read.
            let sin = unsafe { &*(std::ptr::from_ref(s).cast::<libc::sockaddr_in>()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(std::ptr::from_ref(s).cast::<libc::sockaddr_in6>()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Socket creation
// ---------------------------------------------------------------------------

/// Options for [`bind`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// Set `SO_REUSEPORT`, so several sockets (one per worker) share the port and
    /// the kernel spreads flows over them.
    pub reuse_port: bool,
    /// `SO_RCVBUF` in bytes (tries `SO_RCVBUFFORCE` first, which root may use to
    /// pass `net.core.rmem_max`).
    pub recv_buffer_bytes: Option<usize>,
    /// `SO_SNDBUF` in bytes (tries `SO_SNDBUFFORCE` first).
    pub send_buffer_bytes: Option<usize>,
}

fn setsockopt_int(fd: &OwnedFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<c_void>(),
            size_of::<c_int>() as socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking, close-on-exec UDP socket bound to `addr` with `opts`.
///
/// # Errors
/// The OS error of `socket`, `setsockopt` (`SO_REUSEPORT`) or `bind`. Buffer
/// sizes the kernel refuses are logged and ignored.
pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a plain system call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if opts.reuse_port {
        setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    for (bytes, force, plain, what) in [
        (
            opts.recv_buffer_bytes,
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            "receive",
        ),
        (
            opts.send_buffer_bytes,
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            "send",
        ),
    ] {
        if let Some(n) = bytes {
            let n = c_int::try_from(n).unwrap_or(c_int::MAX);
            if setsockopt_int(&sock, libc::SOL_SOCKET, force, n).is_err()
                && let Err(e) = setsockopt_int(&sock, libc::SOL_SOCKET, plain, n)
            {
                log::warn!("{addr}: cannot set the {what} buffer to {n} bytes: {e}");
            }
        }
    }
    let sa = SockAddr::from(addr);
    // SAFETY: sa.storage holds a valid sockaddr of length sa.len for this family.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const sa.storage).cast::<libc::sockaddr>(),
            sa.len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UdpSocket::from(sock))
}

fn zeroed_mmsghdr() -> mmsghdr {
    // SAFETY: mmsghdr is plain old data (pointers may be null); all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn empty_iovec() -> iovec {
    iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

// ---------------------------------------------------------------------------
// Receive
// ---------------------------------------------------------------------------

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The sender.
    pub from: SocketAddr,
    /// The bytes (at most [`RECV_SLOT_LEN`]).
    pub bytes: &'a [u8],
    /// The datagram was longer than [`RECV_SLOT_LEN`] and was cut.
    pub truncated: bool,
}

/// A reusable `recvmmsg` batch: `cap` slots of [`RECV_SLOT_LEN`] bytes in one
/// buffer. Not `Send` (it holds kernel-facing pointers): make it on the thread
/// that uses it.
pub struct RecvBatch {
    bufs: Box<[u8]>,
    addrs: Box<[sockaddr_storage]>,
    iovs: Box<[iovec]>,
    hdrs: Box<[mmsghdr]>,
    n: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvBatch(cap {}, holding {})", self.hdrs.len(), self.n)
    }
}

impl RecvBatch {
    /// A batch of `cap` slots (at least 1).
    pub fn new(cap: usize) -> RecvBatch {
        let cap = cap.max(1);
        RecvBatch {
            bufs: vec![0u8; cap * RECV_SLOT_LEN].into_boxed_slice(),
            addrs: (0..cap).map(|_| zeroed_storage()).collect(),
            iovs: (0..cap).map(|_| empty_iovec()).collect(),
            hdrs: (0..cap).map(|_| zeroed_mmsghdr()).collect(),
            n: 0,
        }
    }

    /// Slots in the batch.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receive up to `capacity()` datagrams without blocking; returns how many.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is waiting; `Interrupted`; other OS errors.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        let cap = self.hdrs.len();
        self.n = 0;
        let buf_base = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            iov.iov_base = buf_base.wrapping_add(i * RECV_SLOT_LEN).cast::<c_void>();
            iov.iov_len = RECV_SLOT_LEN;
        }
        let iov_base = self.iovs.as_mut_ptr();
        let addr_base = self.addrs.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = addr_base.wrapping_add(i).cast::<c_void>();
            h.msg_hdr.msg_namelen = size_of::<sockaddr_storage>() as socklen_t;
            h.msg_hdr.msg_iov = iov_base.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs[0..cap] each point at a distinct live iovec covering a
        // distinct RECV_SLOT_LEN-byte slot of self.bufs, and at a distinct live
        // sockaddr_storage with its size; all of them are owned by self, which is
        // borrowed mutably for the whole call, and none moves during it.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                cap as c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.n = (r as usize).min(cap);
        Ok(self.n)
    }

    /// Datagrams held from the last `recv`.
    pub fn len(&self) -> usize {
        self.n
    }

    /// `true` when the last `recv` got nothing.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The `i`-th datagram of the last `recv` (`None` past the end or for an
    /// address family other than IPv4/IPv6).
    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.n {
            return None;
        }
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(RECV_SLOT_LEN);
        let from = from_storage(&self.addrs[i])?;
        Some(Received {
            from,
            bytes: &self.bufs[i * RECV_SLOT_LEN..i * RECV_SLOT_LEN + len],
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }
}

// ---------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------

/// What one [`SendBatch::batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Datagrams the kernel refused, or dropped because the send buffer stayed full.
    pub errors: u64,
    /// Datagrams the fault injector dropped.
    pub fault_dropped: u64,
}

/// A reusable `sendmmsg` batch of up to `cap` datagrams per system call, with the
/// fault injector in front of it. Not `Send`: make it on the thread that uses it.
pub struct SendBatch {
    addrs: Box<[SockAddr]>,
    iovs: Box<[iovec]>,
    hdrs: Box<[mmsghdr]>,
    fault: FaultInjector,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendBatch(cap {})", self.hdrs.len())
    }
}

/// Queues datagrams inside [`SendBatch::batch`]; the bytes must live for `'b`,
/// which covers the whole batch call.
pub struct Pusher<'s, 'b> {
    batch: &'s mut SendBatch,
    fd: RawFd,
    n: usize,
    report: SendReport,
    _bytes: PhantomData<&'b [u8]>,
}

impl<'b> Pusher<'_, 'b> {
    /// Queue one datagram; sends a full batch at once.
    #[inline]
    pub fn push(&mut self, to: &SockAddr, bytes: &'b [u8]) {
        if self.batch.fault.drop_next() {
            self.report.fault_dropped += 1;
            return;
        }
        let i = self.n;
        self.batch.addrs[i] = *to;
        self.batch.iovs[i] = iovec {
            iov_base: bytes.as_ptr().cast_mut().cast::<c_void>(),
            iov_len: bytes.len(),
        };
        self.n += 1;
        if self.n == self.batch.hdrs.len() {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let n = self.n;
        self.n = 0;
        if n == 0 {
            return;
        }
        let iov_base = self.batch.iovs.as_mut_ptr();
        let addr_base = self.batch.addrs.as_mut_ptr();
        for i in 0..n {
            let h = &mut self.batch.hdrs[i];
            // SockAddr is repr(C) with the sockaddr_storage first.
            h.msg_hdr.msg_name = addr_base.wrapping_add(i).cast::<c_void>();
            h.msg_hdr.msg_namelen = self.batch.addrs[i].len;
            h.msg_hdr.msg_iov = iov_base.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let mut done = 0usize;
        let mut waits = 0u32;
        while done < n {
            // SAFETY: hdrs[done..n] each point at a live SockAddr (owned by the
            // batch, borrowed mutably) with its length, and at a live iovec whose
            // buffer is a slice borrowed for 'b, which outlives this call. The
            // kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd,
                    self.batch.hdrs.as_mut_ptr().wrapping_add(done),
                    (n - done) as c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                done += r as usize;
                self.report.sent += r as u64;
                continue;
            }
            let err = if r == 0 {
                io::Error::from(io::ErrorKind::WouldBlock)
            } else {
                io::Error::last_os_error()
            };
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if waits < SEND_WAIT_COUNT_MAX => {
                    waits += 1;
                    wait_writable(self.fd, SEND_WAIT_MS);
                }
                io::ErrorKind::WouldBlock => {
                    self.report.errors += (n - done) as u64;
                    log::debug!("send buffer full: dropped {} datagrams", n - done);
                    return;
                }
                _ => {
                    // The first datagram of the rest failed (bad address, no
                    // route, too big): skip it and go on with the others.
                    log::debug!(
                        "send to {:?} failed: {err}",
                        self.batch.addrs[done].to_std()
                    );
                    self.report.errors += 1;
                    done += 1;
                }
            }
        }
    }
}

fn wait_writable(fd: RawFd, ms: c_int) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1; the result only tells us to retry.
    let _ = unsafe { libc::poll(&raw mut p, 1, ms) };
}

impl SendBatch {
    /// A batch of up to `cap` datagrams per `sendmmsg` (at least 1; the kernel
    /// takes at most 1024), with `fault` deciding drops.
    pub fn new(cap: usize, fault: FaultInjector) -> SendBatch {
        let cap = cap.clamp(1, 1024);
        SendBatch {
            addrs: (0..cap)
                .map(|_| SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))))
                .collect(),
            iovs: (0..cap).map(|_| empty_iovec()).collect(),
            hdrs: (0..cap).map(|_| zeroed_mmsghdr()).collect(),
            fault,
        }
    }

    /// Send whatever `fill` pushes, in batches of `cap` datagrams per system call.
    pub fn batch<'b>(
        &mut self,
        sock: &impl AsRawFd,
        fill: impl FnOnce(&mut Pusher<'_, 'b>),
    ) -> SendReport {
        let mut p = Pusher {
            batch: self,
            fd: sock.as_raw_fd(),
            n: 0,
            report: SendReport::default(),
            _bytes: PhantomData,
        };
        fill(&mut p);
        p.flush();
        p.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SocketOptions {
        SocketOptions {
            reuse_port: false,
            recv_buffer_bytes: Some(1 << 20),
            send_buffer_bytes: None,
        }
    }

    #[test]
    fn sockaddr_round_trips() {
        for a in [
            "127.0.0.1:4500",
            "[::1]:9",
            "[2001:db8::7]:65535",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(SockAddr::from(a).to_std(), Some(a));
        }
    }

    #[test]
    fn sendmmsg_to_many_and_recvmmsg_with_truncation() {
        let rx = bind("127.0.0.1:0".parse().unwrap(), &opts()).unwrap();
        let rx2 = bind("127.0.0.1:0".parse().unwrap(), &opts()).unwrap();
        let tx = bind("127.0.0.1:0".parse().unwrap(), &opts()).unwrap();
        let to1 = SockAddr::from(rx.local_addr().unwrap());
        let to2 = SockAddr::from(rx2.local_addr().unwrap());
        let big = vec![7u8; RECV_SLOT_LEN + 10];
        let mut sb = SendBatch::new(2, FaultInjector::none());
        let report = sb.batch(&tx, |p| {
            p.push(&to1, b"one");
            p.push(&to2, b"two");
            p.push(&to1, b"three");
            p.push(&to1, &big);
        });
        assert_eq!(report.sent, 4);
        let mut rb = RecvBatch::new(8);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < 3 && std::time::Instant::now() < deadline {
            match rb.recv(&rx) {
                Ok(n) => {
                    for i in 0..n {
                        let d = rb.get(i).unwrap();
                        assert_eq!(d.from, tx.local_addr().unwrap());
                        got.push((d.bytes.len(), d.truncated));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, [(3, false), (5, false), (RECV_SLOT_LEN, true)]);
        let mut rb2 = RecvBatch::new(1);
        let mut n = 0;
        while n == 0 && std::time::Instant::now() < deadline {
            n = rb2.recv(&rx2).unwrap_or(0);
        }
        assert_eq!(rb2.get(0).map(|d| d.bytes.to_vec()), Some(b"two".to_vec()));
        assert!(rb2.get(1).is_none());
    }

    #[test]
    fn fault_injector_drops_in_the_send_path() {
        let rx = bind("127.0.0.1:0".parse().unwrap(), &opts()).unwrap();
        let tx = bind("127.0.0.1:0".parse().unwrap(), &opts()).unwrap();
        let to = SockAddr::from(rx.local_addr().unwrap());
        let mut sb = SendBatch::new(16, FaultInjector::new(100.0, 1));
        let r = sb.batch(&tx, |p| {
            for _ in 0..10 {
                p.push(&to, b"x");
            }
        });
        assert_eq!((r.sent, r.fault_dropped), (0, 10));
    }

    #[test]
    fn reuse_port_lets_workers_share_a_port() {
        let o = SocketOptions {
            reuse_port: true,
            ..opts()
        };
        let a = bind("127.0.0.1:0".parse().unwrap(), &o).unwrap();
        let b = bind(a.local_addr().unwrap(), &o).unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        assert!(bind(a.local_addr().unwrap(), &opts()).is_err());
    }
}
