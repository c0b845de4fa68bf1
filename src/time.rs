//! The project's own time types (STYLE practice 6).
//!
//! Cores never read a clock: they are handed an [`Instant`] (monotonic,
//! microseconds since an arbitrary origin) and, where wall time matters (payload
//! timestamps, snapshot names), a [`WallClock`]. Drivers read the real clocks
//! through [`SystemClock`]; the simulator and tests make any instant they like.

use core::fmt;
use core::ops::{Add, Sub};

/// A span of time in microseconds. Saturating arithmetic: never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub u64);

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration(0);

    /// From microseconds.
    pub const fn from_us(us: u64) -> Duration {
        Duration(us)
    }

    /// From milliseconds.
    pub const fn from_ms(ms: u64) -> Duration {
        Duration(ms.saturating_mul(1_000))
    }

    /// From seconds.
    pub const fn from_secs(s: u64) -> Duration {
        Duration(s.saturating_mul(1_000_000))
    }

    /// Microseconds.
    pub const fn as_us(self) -> u64 {
        self.0
    }

    /// Whole milliseconds.
    pub const fn as_ms(self) -> u64 {
        self.0 / 1_000
    }

    /// As a `std::time::Duration`, for poll timeouts.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0)
    }

    /// `self * n`, saturating.
    pub const fn saturating_mul(self, n: u64) -> Duration {
        Duration(self.0.saturating_mul(n))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Duration {
        Duration(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1_000_000 {
            write!(f, "{:.3}s", self.0 as f64 / 1e6)
        } else if self.0 >= 1_000 {
            write!(f, "{:.3}ms", self.0 as f64 / 1e3)
        } else {
            write!(f, "{}us", self.0)
        }
    }
}

/// A point in monotonic time: microseconds since an arbitrary origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// Microseconds since the origin.
    pub const fn as_us(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

/// Wall-clock time: microseconds since 1970-01-01 UTC.
pub trait WallClock: Send + Sync {
    /// Now, in microseconds since the Unix epoch.
    fn now_unix_us(&self) -> u64;
}

/// The real clocks. `now()` is monotonic (from `std::time::Instant`), measured from
/// the moment the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        Instant(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock for SystemClock {
    fn now_unix_us(&self) -> u64 {
        unix_now_us()
    }
}

/// Wall-clock now in microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A wall clock a test sets by hand.
#[derive(Debug, Default)]
pub struct ManualWallClock(pub std::sync::atomic::AtomicU64);

impl WallClock for ManualWallClock {
    fn now_unix_us(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Render microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
pub fn format_unix_us(us: u64) -> String {
    let secs = us / 1_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        us % 1_000_000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (the one
/// implementation, shared with snapshot file names).
pub use ivip_wire::snapshot::civil_from_days;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant(5) - Instant(9), Duration::ZERO);
        assert_eq!(Instant(u64::MAX) + Duration(1), Instant(u64::MAX));
        assert_eq!(Duration::from_ms(3).as_us(), 3000);
    }

    #[test]
    fn formats_wall_time() {
        assert_eq!(format_unix_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_unix_us(1_764_073_316_123_456),
            "2025-11-25T12:21:56.123456Z"
        );
    }
}
