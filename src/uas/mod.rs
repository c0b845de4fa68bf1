//! The UAS: an Update Authorisation System, one node of a MAB's delegation tree
//! (seed s3.6, s3.7, s3.8, s4.3, Figure 1).
//!
//! End users (and agents with their credentials, such as multihoming monitors)
//! log in, look at their micronets, and submit or dry-run ordered command sets
//! over an HTTP JSON API or a small web page. A leaf UAS checks each set (inside
//! the user's UAB; allowed ETRs; micronet rules against current state), records it
//! in its audit trail, signs it as a SUMUC and POSTs it to its parent. A parent UAS
//! checks its child's signature and delegation, re-signs, and forwards; the RUAS's
//! answer travels back the same way.
//!
//! Reading order: [`config`] (the tree), [`check`] (ETR and UAB rules), [`state`]
//! (micronet rules of `ivip::table` over state read from the parent), [`auth`],
//! [`audit`], [`forward`] (SUMUCs and signed answers), [`service`] (the request
//! handler), [`http`] (sockets, threads, the daemon). API: spec/uas-api.md.

pub mod api;
pub mod audit;
pub mod auth;
pub mod check;
pub mod config;
pub mod forward;
pub mod http;
pub mod service;
pub mod state;
pub mod tool;
pub mod upstream;
