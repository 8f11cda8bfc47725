//! `cohort-cpg`: corosync 3's CPG API (`corosync/cpg.h`) on top of the cohort agent's client socket.
//!
//! Built as `libcohort_cpg.so` / `libcohort_cpg.a`, it is a drop-in for `-lcpg`: a CPG program compiles
//! unchanged against Debian's `libcpg-dev` headers, links with `-lcohort_cpg` instead, and runs on a
//! cohort cluster. The agent's socket is `$COHORT_CLIENT_SOCKET`, else `/var/lib/cohort/cohort.sock`.
//! `include/cohort/cpg_ext.h` declares what CPG never offered: a callback for cohort's own events
//! (blocked and unblocked, stateful merge refused, recovered, removed from the primary view,
//! self-fenced), and state transfer at join (provide and apply functions).
//!
//! Entry points: the C functions in [`ffi`] (the only module with `unsafe` code; see
//! docs/adr/0006-cpg-c-library-unsafe-boundary.md), and for Rust programs the same sessions without C
//! types: [`Session`] and the [`Callback`]s it dispatches. Each session is a
//! [`cohort_actors::client::Client`] driven by a worker thread ([`session`]); how cohort's groups map to
//! CPG members and confchg callbacks is [`mapping`]. No client protocol logic lives here: framing,
//! requests and replies are the Rust client's.
//!
//! **Deliberately absent:** several processes of one node in the same group (cohort gives a group one
//! local owner: the second gets `CS_ERR_EXIST`), messages larger than one cohort message (corosync
//! fragments them; here they are `CS_ERR_TOO_BIG`), and true zero copy (`cpg_zcb_*` allocate ordinary
//! memory and copy once, as `cpg_mcast_joined` does).

pub mod ffi;
pub mod mapping;
pub mod session;
pub mod types;

pub use session::Session;

/// A ring id as CPG's totem confchg gives it: cohort's view id (its coordinator and sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingId {
    /// The view's coordinator.
    pub nodeid: u32,
    /// The view's sequence number.
    pub seq: u64,
}

/// A cohort event that CPG has no callback for (reported through `cpg_ext.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CohortEvent {
    /// Stop changing shared state: `no_quorum`, `fencing`, `stateful_merge_wait` (a member came back
    /// with its old state and is refused until fenced), `state_transfer`.
    Blocked {
        /// The reason, as in the agent's event log.
        reason: String,
    },
    /// No block remains.
    Unblocked,
    /// These failed nodes are fenced: their recovery may proceed.
    Recovered {
        /// The nodes.
        nodes: Vec<u32>,
    },
    /// This node was removed from the primary view: its state is stale, it must not act on it.
    RemovedSelf,
    /// The node's watchdog fired: stop acting on shared state now.
    SelfFenced {
        /// Why.
        reason: String,
    },
    /// The group's state arrived by state transfer from `provider` (cohort transfers state at every
    /// join into a group with members).
    StateApplied {
        /// The group.
        group: String,
        /// The providing node.
        provider: u32,
    },
}

/// A callback due on a session, in the order `cpg_dispatch` runs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callback {
    /// `cpg_deliver_fn`: a message of the group, in cohort's total order.
    Deliver {
        /// The group.
        group: String,
        /// The sender's node.
        nodeid: u32,
        /// The sender's pid.
        pid: u32,
        /// The message.
        data: Vec<u8>,
    },
    /// `cpg_confchg_fn`: the group's CPG membership changed.
    Confchg {
        /// The group.
        group: String,
        /// Every member now, sorted by node id.
        members: Vec<types::CpgAddress>,
        /// Who left, and why.
        left: Vec<types::CpgAddress>,
        /// Who joined.
        joined: Vec<types::CpgAddress>,
    },
    /// `cpg_totem_confchg_fn`: cohort installed a view.
    Totem {
        /// The view id.
        ring: RingId,
        /// Its nodes, sorted.
        members: Vec<u32>,
    },
    /// The extension callback of `cpg_ext.h`.
    Cohort(CohortEvent),
    /// A member joins a group of this process: provide the group's state as of this point with
    /// [`Session::provide_state`] (only after `Session::set_state_transfer(true)`).
    ProvideState {
        /// The group.
        group: String,
        /// Who joins.
        joiner: cohort::Member,
        /// The transfer, to be passed back.
        token: cohort::msg::TransferToken,
    },
    /// This process joined: replace the group's state with this one, before any later delivery (only
    /// after `Session::set_state_transfer(true)`).
    ApplyState {
        /// The group.
        group: String,
        /// The providing node.
        provider: u32,
        /// The state.
        state: Vec<u8>,
    },
}
