//! Feeds: subscribing to upstream replicators, and serving subscribers.
//!
//! spec: control.md §5; seed s8 ("Each Replicator should be able to request and
//! quickly gain a replacement feed from another upstream Replicator"), s3.10,
//! s3.11.
//!
//! What it is: two sans-IO state machines, both fed `(now, input)` and writing
//! control datagrams into the caller's [`crate::net::Outbox`]:
//! - [`FeedSet`] (downstream side, used by replicators, MPSes, QSDs, recorders):
//!   per configured feed a primary upstream and ordered alternatives; subscribes,
//!   answers challenges, re-subscribes every keepalive, notices silence, fails over,
//!   probes the primary and returns to it.
//! - [`Subscribers`] (upstream side, used by replicators): the subscription table
//!   with an allow list, roles served, a capacity with typed refusals, return-
//!   routability cookies, and expiry of silent subscribers.
//!
//! What it is not: payload handling. Cores tell the [`FeedSet`] when a payload came
//! from one of its upstreams ([`Liveness::note`], lock-free, from any thread), and
//! expand their own fan-out to [`Subscribers::addrs`].

pub mod config;
pub mod subscribers;
pub mod upstreams;

pub use config::{DownstreamConfig, FeedEntry, FeedTimingConfig};
pub use subscribers::{SubOutcome, Subscribers, SubscribersSettings};
pub use upstreams::{FeedOutcome, FeedSet, FeedSpec, FeedStatus, FeedTiming, Liveness};
