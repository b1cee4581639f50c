//! Wire types of WuKong HA's HTTP API and a typed async client.
//!
//! This crate owns the JSON shapes that cross the HTTP boundary: WuKongIM's client API
//! (`/user/token`, `/message/send`, `/channel/messagesync`, ...) and the operator API
//! (`/cluster/...`). The node serves them, `wkctl` and the dashboard consume them; neither
//! of the latter depends on node internals. It may depend on serde and reqwest only, plus
//! xxhash for the snapshot file's checksum (`snapshot`: the file format the node writes, `wkctl`
//! saves and inspects and `wknode --restore` reads) and rustls for the crypto provider of
//! `https://` endpoints.
//!
//! `ports` picks loopback ports for local clusters that survive node restarts; `prereq` says
//! what a test does when a prerequisite is missing.
//!
//! It also holds the rules the node, `wkctl`, the dashboard and the tests all apply, each
//! written once: the error codes ([`ErrorCode`]), the node's ready line ([`ReadyLine`]) and how
//! to read a channel's replica view ([`ChannelReplicas::agreement`] and its neighbours).

pub mod client;
mod error_code;
pub mod ports;
pub mod prereq;
mod ready;
mod replicas;
pub mod snapshot;
mod types;

pub use client::{Client, ClientError, install_crypto_provider};
pub use error_code::ErrorCode;
pub use ready::ReadyLine;
pub use replicas::{Agreement, Divergence};
pub use types::*;
