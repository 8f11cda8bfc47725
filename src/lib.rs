//! # cohort: the sans-IO virtual-synchrony core
//!
//! This crate is the whole protocol of cohort as pure state machines: identity and epochs, the wire
//! format, failure detection, view changes with flush, total order with agreed and safe delivery, quorum,
//! the replicated epoch registry, stateful-merge detection and resolution, the fencing gate, process groups
//! with state transfer, and the watchdog.
//!
//! **What it deliberately does not do:** no sockets, no files, no clock reads, no threads, no runtime, no
//! unseeded randomness. Time arrives as an argument (`now_ms`) and everything the node wants done comes
//! back as [`node::Output`] values in the order they must be carried out (send a datagram, persist durable
//! state, append an event-log record, notify the application, run a fence agent, restart with a new epoch).
//! That is what makes the deterministic simulator (`tests/sim`) possible, and it keeps the actors in
//! `cohort-actors` thin.
//!
//! Entry points: [`node::Node`] (one member's state machine), [`checker`] (the guarantees of
//! `guarantees.md` checked over event-log records), [`wire`] (the versioned envelope and fragmentation),
//! [`quorum::is_quorate`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod config;
pub mod inquiry;
pub mod msg;
pub mod node;
pub mod ordering;
pub mod quorum;
pub mod record;
pub mod registry;
pub mod tripwire;
pub mod types;
pub mod wire;

pub use config::{Config, ConfigError, FencingMode, MergePolicy, NodeSpec, QuorumConfig, Timing};
pub use node::{Durable, NewEpochReason, Node, Notification, Output, SendError, Status};
pub use record::{BlockReason, Event, FenceMethod, MergeAction, Record, TransferRole};
pub use types::{Delivery, Epoch, Member, MsgId, NodeId, View, ViewId};

/// The version string written in `start` events.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
