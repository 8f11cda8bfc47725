//! # cohort-actors: the cohort agent
//!
//! The long-running service a cluster runs on every node, built as actix actors around the sans-IO core
//! (`cohort`). Each actor owns one kind of IO and decides nothing the core should decide:
//!
//! - [`transport::TransportActor`]: the UDP socket, AEAD authentication and encryption, the link filter.
//! - [`membership::MembershipActor`]: the core's state machine, its timers, and the execution of its outputs.
//! - [`epoch_registry::EpochRegistryActor`]: the data directory (epoch, registry snapshot, lock).
//! - [`fencing::FencingActor`]: runs fence agents with timeouts, retries and levels.
//! - [`client_api::ClientApiActor`]: the local Unix sockets, for applications and for operators
//!   ([`client_access`]: who may use which, and for what).
//! - [`event_log::EventLogActor`]: the event log (`shared/spec/event-log.md`).
//! - [`admin::AdminActor`]: `GET /status` and `GET /metrics`.
//! - [`supervisor`]: the composition root ([`supervisor::start_node`]) and the `NodeSupervisor`.
//! - [`service_manager::ServiceManagerActor`]: readiness, status and watchdog for systemd
//!   ([`sd_notify`] is the protocol); [`reload`] is what SIGHUP applies.
//!
//! Built on the public client API only: [`lock`], a distributed lock service, and [`demo`], the
//! `cohort demo` command that plays the partition and stateful-merge story with it.
//!
//! [`fuzzing`] holds the bodies of the fuzz targets (`fuzz/`, `scripts/fuzz`), which
//! `tests/fuzz_corpus.rs` replays over the kept corpus in the normal suite.
//!
//! Actors talk only through the typed messages in [`messages`], held as `Recipient`s, so each one is
//! tested against probe actors. **Deliberately absent:** no protocol decisions here (who is primary,
//! who to fence, whether a merge is stateful: all in the core), no global registry or system services.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod client_access;
pub mod client_api;
pub mod client_cli;
mod client_conn;
pub mod client_proto;
pub mod crypto;
pub mod demo;
pub mod epoch_registry;
pub mod event_log;
pub mod fencing;
pub mod fuzzing;
pub mod inquiry;
pub mod key_file;
pub mod lock;
pub mod manpages;
pub mod membership;
pub mod messages;
pub mod metrics;
pub mod reload;
pub mod replay;
pub mod sd_notify;
pub mod service_manager;
pub mod settings;
pub mod settings_load;
pub mod supervisor;
pub mod telemetry;
pub mod transport;
