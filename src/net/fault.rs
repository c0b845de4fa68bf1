//! Fault injection in the send path: drop a configured share of outgoing
//! datagrams, decided by a seeded generator, so a test network (`ivip testnet
//! --loss`) has loss on every link without kernel help (netem is not available).
//!
//! Off by default (`loss_percent = 0`), and then costs one branch per datagram.

use serde::Deserialize;

/// `[fault]` in a daemon's config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Percentage of outgoing datagrams to drop, 0..=100.
    pub loss_percent: f64,
    /// Seed of the drop decisions (each worker adds its index).
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            loss_percent: 0.0,
            seed: 0,
        }
    }
}

impl FaultConfig {
    /// `Err` with a message when `loss_percent` is outside 0..=100.
    ///
    /// # Errors
    /// A message for the operator.
    pub fn check(&self) -> Result<(), String> {
        if self.loss_percent.is_finite() && (0.0..=100.0).contains(&self.loss_percent) {
            Ok(())
        } else {
            Err(format!(
                "loss_percent must be between 0 and 100, not {}",
                self.loss_percent
            ))
        }
    }

    /// The injector for worker `index`.
    pub fn injector(&self, index: u64) -> FaultInjector {
        FaultInjector::new(self.loss_percent, self.seed.wrapping_add(index))
    }
}

/// SplitMix64: a small, fast, seedable generator (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Decides, datagram by datagram, whether to drop it.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    /// Drop when the next random u64 is below this (0: never).
    threshold: u64,
    rng: SplitMix64,
}

impl FaultInjector {
    /// Drop `loss_percent` % of datagrams (clamped to 0..=100), seeded.
    pub fn new(loss_percent: f64, seed: u64) -> FaultInjector {
        let p = if loss_percent.is_finite() {
            loss_percent.clamp(0.0, 100.0) / 100.0
        } else {
            0.0
        };
        let threshold = if p >= 1.0 {
            u64::MAX
        } else {
            (p * u64::MAX as f64) as u64
        };
        FaultInjector {
            threshold,
            rng: SplitMix64::new(seed),
        }
    }

    /// Never drops.
    pub fn none() -> FaultInjector {
        FaultInjector::new(0.0, 0)
    }

    /// `true` when this injector drops anything.
    pub fn is_active(&self) -> bool {
        self.threshold != 0
    }

    /// `true`: drop the next datagram.
    #[inline]
    pub fn drop_next(&mut self) -> bool {
        self.threshold != 0 && (self.threshold == u64::MAX || self.rng.next_u64() < self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_about_the_configured_share_reproducibly() {
        let mut f = FaultInjector::new(5.0, 42);
        let dropped = (0..100_000).filter(|_| f.drop_next()).count();
        assert!((4_500..5_500).contains(&dropped), "{dropped}");
        let mut g = FaultInjector::new(5.0, 42);
        assert_eq!((0..100_000).filter(|_| g.drop_next()).count(), dropped);
        let mut none = FaultInjector::none();
        assert!(!none.is_active() && (0..1000).all(|_| !none.drop_next()));
        let mut all = FaultInjector::new(100.0, 1);
        assert!((0..1000).all(|_| all.drop_next()));
    }

    #[test]
    fn config_is_checked() {
        assert!(FaultConfig::default().check().is_ok());
        let bad = FaultConfig {
            loss_percent: 101.0,
            seed: 0,
        };
        assert!(bad.check().is_err());
    }
}
