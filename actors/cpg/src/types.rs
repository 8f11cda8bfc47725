//! The values of corosync's `corotypes.h` and `cpg.h` that the safe side of the library speaks in:
//! error codes, dispatch modes, reasons, and the one struct it hands to C as is ([`CpgAddress`]).
//! The numbers are corosync 3's; `tests/c/abi.c` checks them against Debian's headers at compile time.

/// `cs_error_t`: why a call failed. The discriminants are corosync's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CsError {
    /// `CS_ERR_LIBRARY`: the agent is not reachable, or the connection to it was lost.
    Library = 2,
    /// `CS_ERR_TRY_AGAIN`: flow control (too many multicasts in flight) or cohort blocks (no quorum,
    /// fencing, stateful merge, state transfer); retry after dispatching.
    TryAgain = 6,
    /// `CS_ERR_INVALID_PARAM`: a null pointer, a bad length, a bad mode.
    InvalidParam = 7,
    /// `CS_ERR_NO_MEMORY`.
    NoMemory = 8,
    /// `CS_ERR_BAD_HANDLE`: not a handle of this library, or one already finalized.
    BadHandle = 9,
    /// `CS_ERR_NOT_EXIST`: the handle has not joined that group.
    NotExist = 12,
    /// `CS_ERR_NAME_TOO_LONG`.
    NameTooLong = 13,
    /// `CS_ERR_EXIST`: the handle already joined a group (corosync allows one per handle), or another
    /// process on this node owns the group (cohort allows one local owner per group).
    Exist = 14,
    /// `CS_ERR_NOT_SUPPORTED`.
    NotSupported = 19,
    /// `CS_ERR_TOO_BIG`: a message larger than `cpg_max_atomic_msgsize_get`.
    TooBig = 26,
}

/// `CS_OK`.
pub const CS_OK: u32 = 1;

/// `CS_DISPATCH_ONE`: wait for one callback and run it.
pub const DISPATCH_ONE: u32 = 1;
/// `CS_DISPATCH_ALL`: run every callback already due, without waiting.
pub const DISPATCH_ALL: u32 = 2;
/// `CS_DISPATCH_BLOCKING`: run callbacks as they come until the handle is finalized or the connection
/// is lost.
pub const DISPATCH_BLOCKING: u32 = 3;
/// `CS_DISPATCH_ONE_NONBLOCKING`: run at most one callback already due.
pub const DISPATCH_ONE_NONBLOCKING: u32 = 4;

/// `CPG_REASON_JOIN`.
pub const REASON_JOIN: u32 = 1;
/// `CPG_REASON_LEAVE`.
pub const REASON_LEAVE: u32 = 2;
/// `CPG_REASON_NODEDOWN`.
pub const REASON_NODEDOWN: u32 = 3;
/// `CPG_REASON_PROCDOWN`.
pub const REASON_PROCDOWN: u32 = 5;

/// `struct cpg_address`: a CPG member and, in left and joined lists, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CpgAddress {
    /// The node id.
    pub nodeid: u32,
    /// The process id.
    pub pid: u32,
    /// A `CPG_REASON_*` (0 in member lists).
    pub reason: u32,
}
