//! The four OpenSSL calls the `openssl` crate does not wrap, and nothing else.
//!
//! This is the audited `unsafe` module of the DTLS layer. Each function is one
//! foreign call on an `SSL` the caller borrows for the duration of the call (so
//! the pointer is live and not used by anyone else: `SslRef` is only reachable
//! through `&`/`&mut` of its owner, and OpenSSL's SSL functions are not called
//! concurrently on one object here because every association sits behind its own
//! mutex). Declarations follow `include/openssl/ssl.h` and `dtls1.h` of OpenSSL
//! 1.1.1 and 3.x, where these symbols exist unchanged:
//!
//! * `int DTLSv1_listen(SSL *s, BIO_ADDR *client)`: stateless cookie exchange
//!   (RFC 6347 §4.2.1). OpenSSL buffers the ClientHello that carried a valid
//!   cookie, so the next `SSL_accept` continues from it.
//! * `SSL_ctrl(s, DTLS_CTRL_GET_TIMEOUT = 73, 0, struct timeval *)` and
//!   `SSL_ctrl(s, DTLS_CTRL_HANDLE_TIMEOUT = 74, 0, NULL)`: the macros
//!   `DTLSv1_get_timeout` and `DTLSv1_handle_timeout`, which let the event loop
//!   own the retransmission timer.
//! * `void DTLS_set_timer_cb(SSL *s, DTLS_timer_cb cb)`: the retransmission
//!   back-off (spec: dtls.md §4.4).

#![allow(unsafe_code)]

use std::os::raw::{c_int, c_long, c_uint, c_void};
use std::time::Duration;

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;
use openssl_sys::SSL;

/// `BIO_ADDR`, opaque.
#[repr(C)]
struct BioAddr {
    _opaque: [u8; 0],
}

/// `DTLS_CTRL_GET_TIMEOUT` in `dtls1.h`.
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
/// `DTLS_CTRL_HANDLE_TIMEOUT` in `dtls1.h`.
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

/// The first retransmission of a flight after this long, in microseconds.
pub(super) const RETRANSMIT_INITIAL_US: c_uint = 250_000;
/// Retransmissions back off by doubling up to this, in microseconds.
pub(super) const RETRANSMIT_MAX_US: c_uint = 4_000_000;

type DtlsTimerCb = unsafe extern "C" fn(s: *mut SSL, timer_us: c_uint) -> c_uint;

unsafe extern "C" {
    fn DTLSv1_listen(s: *mut SSL, client: *mut BioAddr) -> c_int;
    fn BIO_ADDR_new() -> *mut BioAddr;
    fn BIO_ADDR_free(a: *mut BioAddr);
    fn DTLS_set_timer_cb(s: *mut SSL, cb: Option<DtlsTimerCb>);
}

/// What [`listen`] did with the datagram in the SSL's read queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listen {
    /// No valid cookie: a HelloVerifyRequest was written (or the datagram was
    /// not a usable ClientHello and was dropped).
    NoCookie,
    /// A ClientHello with a valid cookie: continue with `accept`.
    Accepted,
    /// OpenSSL refused to listen (misconfiguration or out of memory).
    Failed,
}

/// Run `DTLSv1_listen` once on `ssl`, whose read side holds one datagram.
pub(super) fn listen(ssl: &SslRef) -> Listen {
    // SAFETY: BIO_ADDR_new allocates a zeroed address or returns NULL (checked).
    let addr = unsafe { BIO_ADDR_new() };
    if addr.is_null() {
        return Listen::Failed;
    }
    // SAFETY: `ssl` is a live SSL borrowed for the call; `addr` is a live BIO_ADDR
    // that OpenSSL writes (or clears) and we free right after.
    let r = unsafe { DTLSv1_listen(ssl.as_ptr(), addr) };
    // SAFETY: `addr` came from BIO_ADDR_new and is freed once.
    unsafe { BIO_ADDR_free(addr) };
    match r {
        1 => Listen::Accepted,
        0 => Listen::NoCookie,
        _ => Listen::Failed,
    }
}

/// Time left until the running retransmission timer fires (`None`: no timer).
pub(super) fn timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one struct timeval through parg, which
    // points at a live local; `ssl` is borrowed for the call.
    let r = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&raw mut tv).cast::<c_void>(),
        )
    };
    if r <= 0 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Retransmit the last flight if OpenSSL's timer has expired (harmless early).
/// Returns `false` when OpenSSL gave up on the handshake.
pub(super) fn handle_timeout(ssl: &SslRef) -> bool {
    // SAFETY: DTLS_CTRL_HANDLE_TIMEOUT takes no argument (parg NULL); `ssl` is
    // borrowed for the call; any retransmission goes through its own BIO.
    let r: c_long = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
    r >= 0
}

/// The back-off: [`RETRANSMIT_INITIAL_US`] first, then doubling, at most
/// [`RETRANSMIT_MAX_US`].
unsafe extern "C" fn timer_cb(_s: *mut SSL, timer_us: c_uint) -> c_uint {
    if timer_us == 0 {
        RETRANSMIT_INITIAL_US
    } else {
        timer_us.saturating_mul(2).min(RETRANSMIT_MAX_US)
    }
}

/// Install the back-off on `ssl`.
pub(super) fn set_timer_cb(ssl: &SslRef) {
    // SAFETY: `ssl` is live for the call; `timer_cb` is a plain function valid for
    // the life of the program and touches nothing through its SSL argument.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(timer_cb)) };
}
