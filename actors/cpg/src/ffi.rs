//! The C ABI: every function of corosync 3's `cpg.h`, and cohort's `cpg_ext.h`, as thin wrappers of
//! [`Session`]. This is the only module of the workspace with `unsafe` code; the argument for its memory
//! safety is docs/adr/0006-cpg-c-library-unsafe-boundary.md. In short:
//!
//! - **Handles are numbers, never pointers.** A `cpg_handle_t` is a key into a table of live sessions
//!   behind a mutex; an unknown or finalized handle is `CS_ERR_BAD_HANDLE`, never a dangling access.
//! - **Every pointer the caller passes is checked for null and read or written only within the size
//!   the header gives it** (`struct cpg_name` is 128 bytes and its `length` is checked against that;
//!   member arrays are written up to the count the caller says it has room for). The library cannot
//!   check that a non-null pointer is valid: that is the C caller's contract, as with corosync's libcpg.
//! - **Nothing the library hands to a callback outlives the callback**: names, member lists and message
//!   bytes live on the dispatching thread's stack or heap until the callback returns.
//! - **No panic crosses the boundary**: each function runs its body under `catch_unwind` and answers
//!   `CS_ERR_LIBRARY` if it panicked.
//!
//! The layouts of the C types are checked against Debian's headers by `tests/c/abi.c` (static asserts
//! of sizes and offsets), compiled by the integration test.
#![allow(unsafe_code)]

use crate::session::{Session, MAX_ATOMIC_MSG_BYTES};
use crate::types::{CpgAddress, CsError, CS_OK};
use crate::{Callback, CohortEvent};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// `cs_error_t`.
pub type CsErrorT = c_uint;
/// `cpg_handle_t`.
pub type CpgHandle = u64;

/// `CPG_MAX_NAME_LENGTH`.
pub const CPG_MAX_NAME_LENGTH: usize = 128;

/// `struct cpg_name`.
#[repr(C)]
pub struct CpgName {
    /// Bytes used in `value`.
    pub length: u32,
    /// The name (not NUL-terminated).
    pub value: [c_char; CPG_MAX_NAME_LENGTH],
}

/// `struct cpg_ring_id`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpgRingId {
    /// The ring's representative node.
    pub nodeid: u32,
    /// The ring sequence.
    pub seq: u64,
}

/// `struct iovec`.
#[repr(C)]
pub struct IoVec {
    /// The bytes.
    pub iov_base: *const c_void,
    /// Their length.
    pub iov_len: usize,
}

/// `struct cpg_iteration_description_t`.
#[repr(C)]
pub struct CpgIterationDescription {
    /// The group.
    pub group: CpgName,
    /// A member's node (0 for `CPG_ITERATION_NAME_ONLY`).
    pub nodeid: u32,
    /// A member's pid (0 when unknown to this handle, see the module documentation).
    pub pid: u32,
}

/// `cpg_deliver_fn_t`.
pub type DeliverFn = unsafe extern "C" fn(CpgHandle, *const CpgName, u32, u32, *mut c_void, usize);
/// `cpg_confchg_fn_t`.
pub type ConfchgFn = unsafe extern "C" fn(
    CpgHandle,
    *const CpgName,
    *const CpgAddress,
    usize,
    *const CpgAddress,
    usize,
    *const CpgAddress,
    usize,
);
/// `cpg_totem_confchg_fn_t`.
pub type TotemFn = unsafe extern "C" fn(CpgHandle, CpgRingId, u32, *const u32);
/// `cohort_cpg_state_provide_fn_t` (cpg_ext.h): sets `*state` to a buffer valid until it returns and
/// returns its length.
pub type ProvideFn = unsafe extern "C" fn(CpgHandle, *const CpgName, u32, *mut *const c_void) -> usize;
/// `cohort_cpg_state_apply_fn_t` (cpg_ext.h).
pub type ApplyFn = unsafe extern "C" fn(CpgHandle, *const CpgName, u32, *const c_void, usize);
/// `cohort_cpg_event_fn_t` (cpg_ext.h).
pub type EventFn = unsafe extern "C" fn(CpgHandle, c_uint, *const c_char, *const u32, usize);

/// `cpg_callbacks_t`.
#[repr(C)]
pub struct CpgCallbacks {
    /// Deliveries.
    pub cpg_deliver_fn: Option<DeliverFn>,
    /// Membership changes.
    pub cpg_confchg_fn: Option<ConfchgFn>,
}

/// `cpg_model_data_t`.
#[repr(C)]
pub struct CpgModelData {
    /// `CPG_MODEL_V1`.
    pub model: c_uint,
}

/// `cpg_model_v1_data_t`.
#[repr(C)]
pub struct CpgModelV1Data {
    /// `CPG_MODEL_V1`.
    pub model: c_uint,
    /// Deliveries.
    pub cpg_deliver_fn: Option<DeliverFn>,
    /// Membership changes.
    pub cpg_confchg_fn: Option<ConfchgFn>,
    /// View changes.
    pub cpg_totem_confchg_fn: Option<TotemFn>,
    /// `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF` or 0.
    pub flags: c_uint,
}

const CPG_MODEL_V1: c_uint = 1;
const CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF: c_uint = 1;
const CPG_TYPE_UNORDERED: c_uint = 0;
const CPG_TYPE_SAFE: c_uint = 3;
const CPG_ITERATION_NAME_ONLY: c_uint = 1;
const CPG_ITERATION_ONE_GROUP: c_uint = 2;
const CPG_ITERATION_ALL: c_uint = 3;

/// The `cohort_cpg_event_t` values of cpg_ext.h.
const EV_BLOCKED: c_uint = 1;
const EV_UNBLOCKED: c_uint = 2;
const EV_RECOVERED: c_uint = 3;
const EV_REMOVED_SELF: c_uint = 4;
const EV_SELF_FENCED: c_uint = 5;
const EV_STATE_APPLIED: c_uint = 6;

/// A live handle: its session, the application's callbacks and context.
struct Entry {
    session: Arc<Session>,
    deliver: Option<DeliverFn>,
    confchg: Option<ConfchgFn>,
    totem: Option<TotemFn>,
    event: Mutex<Option<EventFn>>,
    state: Mutex<Option<(ProvideFn, ApplyFn)>>,
    /// `void *context`, kept as an address: the library never dereferences it.
    context: Mutex<usize>,
}

static HANDLES: Mutex<BTreeMap<CpgHandle, Arc<Entry>>> = Mutex::new(BTreeMap::new());
/// One `cpg_iteration_*` walk: (group, nodeid, pid) entries still to return.
type Iteration = VecDeque<(String, u32, u32)>;

static ITERATIONS: Mutex<BTreeMap<u64, Iteration>> = Mutex::new(BTreeMap::new());
/// Zero-copy buffers by address: the memory of each lives in its `Box` until `cpg_zcb_free`.
static ZCB: Mutex<BTreeMap<usize, Box<[u8]>>> = Mutex::new(BTreeMap::new());
/// Handle numbers: never reused within a process, so a stale handle is always `CS_ERR_BAD_HANDLE`.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(0x636f_6870_0000_0001);

fn table<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn entry(handle: CpgHandle) -> Result<Arc<Entry>, CsError> {
    table(&HANDLES).get(&handle).cloned().ok_or(CsError::BadHandle)
}

/// Runs `f`, turning its error or a panic into a `cs_error_t`.
fn guard(f: impl FnOnce() -> Result<(), CsError>) -> CsErrorT {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CS_OK,
        Ok(Err(e)) => e as CsErrorT,
        Err(_) => CsError::Library as CsErrorT,
    }
}

/// The name in a caller's `struct cpg_name`, checked: 1 to 128 bytes of UTF-8 (cohort's group names
/// are strings).
///
/// # Safety
/// `name` must be null or point to a readable `struct cpg_name`.
unsafe fn read_name(name: *const CpgName) -> Result<String, CsError> {
    // SAFETY: null is checked; otherwise the caller's contract gives a readable struct.
    let name = unsafe { name.as_ref() }.ok_or(CsError::InvalidParam)?;
    let len = name.length as usize;
    if len > CPG_MAX_NAME_LENGTH {
        return Err(CsError::NameTooLong);
    }
    if len == 0 {
        return Err(CsError::InvalidParam);
    }
    let bytes: Vec<u8> = name.value[..len].iter().map(|c| *c as u8).collect();
    String::from_utf8(bytes).map_err(|_| CsError::InvalidParam)
}

fn make_name(s: &str) -> CpgName {
    let mut n = CpgName { length: 0, value: [0; CPG_MAX_NAME_LENGTH] };
    let b = &s.as_bytes()[..s.len().min(CPG_MAX_NAME_LENGTH)];
    for (d, s) in n.value.iter_mut().zip(b) {
        *d = *s as c_char;
    }
    n.length = b.len() as u32;
    n
}

fn register(
    session: Arc<Session>,
    deliver: Option<DeliverFn>,
    confchg: Option<ConfchgFn>,
    totem: Option<TotemFn>,
    context: usize,
) -> CpgHandle {
    let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
    let e = Entry {
        session,
        deliver,
        confchg,
        totem,
        event: Mutex::new(None),
        state: Mutex::new(None),
        context: Mutex::new(context),
    };
    table(&HANDLES).insert(h, Arc::new(e));
    h
}

/// `cpg_initialize`: connects to the agent. `CS_ERR_LIBRARY` when no agent answers on the socket.
///
/// # Safety
/// `handle` and `callbacks` must be null or valid for writing and reading respectively.
#[no_mangle]
pub unsafe extern "C" fn cpg_initialize(handle: *mut CpgHandle, callbacks: *mut CpgCallbacks) -> CsErrorT {
    guard(|| {
        if handle.is_null() || callbacks.is_null() {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: non-null, and readable by the caller's contract.
        let cb = unsafe { &*callbacks };
        let (deliver, confchg) = (cb.cpg_deliver_fn, cb.cpg_confchg_fn);
        let session = Session::connect(false, false)?;
        let h = register(session, deliver, confchg, None, 0);
        // SAFETY: non-null, and writable by the caller's contract.
        unsafe { handle.write(h) };
        Ok(())
    })
}

/// `cpg_model_initialize`: model v1, with the totem confchg callback and
/// `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`.
///
/// # Safety
/// `handle` must be null or writable; `model_data` null or a readable `cpg_model_v1_data_t`.
#[no_mangle]
pub unsafe extern "C" fn cpg_model_initialize(
    handle: *mut CpgHandle,
    model: c_uint,
    model_data: *mut CpgModelData,
    context: *mut c_void,
) -> CsErrorT {
    guard(|| {
        if handle.is_null() || model_data.is_null() || model != CPG_MODEL_V1 {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: non-null; the caller's contract: model v1 data behind a model-v1 tag.
        let md = unsafe { &*(model_data as *const CpgModelV1Data) };
        if md.model != CPG_MODEL_V1 {
            return Err(CsError::InvalidParam);
        }
        let initial = md.flags & CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0;
        let session = Session::connect(md.cpg_totem_confchg_fn.is_some(), initial)?;
        let h = register(
            session,
            md.cpg_deliver_fn,
            md.cpg_confchg_fn,
            md.cpg_totem_confchg_fn,
            context as usize,
        );
        // SAFETY: non-null, and writable by the caller's contract.
        unsafe { handle.write(h) };
        Ok(())
    })
}

/// `cpg_finalize`: closes the connection (leaving the group) and invalidates the handle.
#[no_mangle]
pub extern "C" fn cpg_finalize(handle: CpgHandle) -> CsErrorT {
    guard(|| {
        let e = table(&HANDLES).remove(&handle).ok_or(CsError::BadHandle)?;
        e.session.finalize();
        Ok(())
    })
}

/// `cpg_fd_get`: a descriptor that polls readable while callbacks are due (or the connection is lost).
///
/// # Safety
/// `fd` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_fd_get(handle: CpgHandle, fd: *mut c_int) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if fd.is_null() {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: non-null, and writable by the caller's contract.
        unsafe { fd.write(e.session.fd()) };
        Ok(())
    })
}

/// `cpg_max_atomic_msgsize_get`.
///
/// # Safety
/// `size` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_max_atomic_msgsize_get(handle: CpgHandle, size: *mut u32) -> CsErrorT {
    guard(|| {
        entry(handle)?;
        if size.is_null() {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: non-null, and writable by the caller's contract.
        unsafe { size.write(MAX_ATOMIC_MSG_BYTES as u32) };
        Ok(())
    })
}

/// `cpg_context_get`.
///
/// # Safety
/// `context` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_context_get(handle: CpgHandle, context: *mut *mut c_void) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if context.is_null() {
            return Err(CsError::InvalidParam);
        }
        let c = *e.context.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: non-null, and writable by the caller's contract. The value is the caller's own.
        unsafe { context.write(c as *mut c_void) };
        Ok(())
    })
}

/// `cpg_context_set`.
#[no_mangle]
pub extern "C" fn cpg_context_set(handle: CpgHandle, context: *mut c_void) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        *e.context.lock().unwrap_or_else(|p| p.into_inner()) = context as usize;
        Ok(())
    })
}

/// Runs one callback on the dispatching thread; false when the application has no function for it.
/// Everything passed lives until the call returns.
fn run_callback(handle: CpgHandle, e: &Entry, cb: Callback) -> bool {
    match cb {
        Callback::Deliver { group, nodeid, pid, mut data } => {
            if let Some(f) = e.deliver {
                let name = make_name(&group);
                // SAFETY: a C function pointer the application registered for this signature; the
                // name and the message live until it returns.
                unsafe { f(handle, &name, nodeid, pid, data.as_mut_ptr().cast(), data.len()) };
                return true;
            }
        }
        Callback::Confchg { group, members, left, joined } => {
            if let Some(f) = e.confchg {
                let name = make_name(&group);
                // SAFETY: as above; each list is a live slice with its length.
                unsafe {
                    f(
                        handle,
                        &name,
                        members.as_ptr(),
                        members.len(),
                        left.as_ptr(),
                        left.len(),
                        joined.as_ptr(),
                        joined.len(),
                    )
                };
                return true;
            }
        }
        Callback::Totem { ring, members } => {
            if let Some(f) = e.totem {
                let ring = CpgRingId { nodeid: ring.nodeid, seq: ring.seq };
                // SAFETY: as above.
                unsafe { f(handle, ring, members.len() as u32, members.as_ptr()) };
                return true;
            }
        }
        Callback::ProvideState { group, joiner, token } => {
            let f = *e.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut state = Vec::new();
            if let Some((provide, _)) = f {
                let name = make_name(&group);
                let mut buf: *const c_void = std::ptr::null();
                // SAFETY: the application's function for this signature; `name` lives until it returns.
                let len = unsafe { provide(handle, &name, joiner.0 .0, &mut buf) };
                if !buf.is_null() && len > 0 {
                    // SAFETY: the callback's contract: `buf` holds `len` readable bytes until it returns,
                    // and they are copied before anything else runs.
                    state = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.to_vec();
                }
            }
            // Always answered (empty without a function), or the joiner's transfer would wait forever.
            let _ = e.session.provide_state(&group, joiner, token, state);
            return f.is_some();
        }
        Callback::ApplyState { group, provider, state } => {
            let f = *e.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, apply)) = f {
                let name = make_name(&group);
                // SAFETY: as above; `state` lives until it returns.
                unsafe { apply(handle, &name, provider, state.as_ptr().cast(), state.len()) };
                return true;
            }
        }
        Callback::Cohort(ev) => {
            let Some(f) = *e.event.lock().unwrap_or_else(|p| p.into_inner()) else { return false };
            let (kind, reason, nodes): (c_uint, String, Vec<u32>) = match ev {
                CohortEvent::Blocked { reason } => (EV_BLOCKED, reason, Vec::new()),
                CohortEvent::Unblocked => (EV_UNBLOCKED, String::new(), Vec::new()),
                CohortEvent::Recovered { nodes } => (EV_RECOVERED, String::new(), nodes),
                CohortEvent::RemovedSelf => (EV_REMOVED_SELF, String::new(), Vec::new()),
                CohortEvent::SelfFenced { reason } => (EV_SELF_FENCED, reason, Vec::new()),
                CohortEvent::StateApplied { group, provider } => (EV_STATE_APPLIED, group, vec![provider]),
            };
            let mut reason = reason.into_bytes();
            reason.retain(|b| *b != 0);
            reason.push(0);
            // SAFETY: as above; `reason` is NUL-terminated.
            unsafe { f(handle, kind, reason.as_ptr().cast(), nodes.as_ptr(), nodes.len()) };
            return true;
        }
    }
    false
}

/// `cpg_dispatch` with `CS_DISPATCH_ONE`, `ALL`, `BLOCKING` or `ONE_NONBLOCKING`.
#[no_mangle]
pub extern "C" fn cpg_dispatch(handle: CpgHandle, dispatch_types: c_uint) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        e.session.dispatch(dispatch_types, |cb| run_callback(handle, &e, cb))
    })
}

/// `cpg_join`: `CS_ERR_EXIST` when the handle already joined a group.
///
/// # Safety
/// `group` must be null or a readable `struct cpg_name`.
#[no_mangle]
pub unsafe extern "C" fn cpg_join(handle: CpgHandle, group: *const CpgName) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        // SAFETY: forwarded caller contract.
        let name = unsafe { read_name(group) }?;
        e.session.join(&name)
    })
}

/// `cpg_leave`: `CS_ERR_NOT_EXIST` when the handle did not join `group`.
///
/// # Safety
/// `group` must be null or a readable `struct cpg_name`.
#[no_mangle]
pub unsafe extern "C" fn cpg_leave(handle: CpgHandle, group: *const CpgName) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        // SAFETY: forwarded caller contract.
        let name = unsafe { read_name(group) }?;
        e.session.leave(&name)
    })
}

/// `cpg_mcast_joined`: `CPG_TYPE_FIFO` and `AGREED` as cohort's agreed delivery, `CPG_TYPE_SAFE` as its
/// safe delivery; `CPG_TYPE_UNORDERED` is `CS_ERR_INVALID_PARAM` (corosync never implemented it).
///
/// # Safety
/// `iovec` must be null or point to `iov_len` readable `struct iovec`s, each to `iov_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cpg_mcast_joined(
    handle: CpgHandle,
    guarantee: c_uint,
    iovec: *const IoVec,
    iov_len: c_uint,
) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if guarantee == CPG_TYPE_UNORDERED || guarantee > CPG_TYPE_SAFE || (iovec.is_null() && iov_len > 0) {
            return Err(CsError::InvalidParam);
        }
        let iovs: &[IoVec] = if iov_len == 0 {
            &[]
        } else {
            // SAFETY: non-null with `iov_len` elements by the caller's contract.
            unsafe { std::slice::from_raw_parts(iovec, iov_len as usize) }
        };
        let mut total = 0usize;
        for v in iovs {
            if v.iov_base.is_null() && v.iov_len > 0 {
                return Err(CsError::InvalidParam);
            }
            total = total.saturating_add(v.iov_len);
        }
        if total > MAX_ATOMIC_MSG_BYTES {
            return Err(CsError::TooBig);
        }
        let mut data = Vec::with_capacity(total);
        for v in iovs.iter().filter(|v| v.iov_len > 0) {
            // SAFETY: non-null with `iov_len` readable bytes by the caller's contract.
            data.extend_from_slice(unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) });
        }
        e.session.mcast(&data, guarantee == CPG_TYPE_SAFE)
    })
}

/// `cpg_membership_get`: the members of the joined group as of the last confchg.
///
/// # Safety
/// `group_name` must be null or readable; `member_list` null or writable for `*member_list_entries`
/// entries; `member_list_entries` null or readable and writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_membership_get(
    handle: CpgHandle,
    group_name: *mut CpgName,
    member_list: *mut CpgAddress,
    member_list_entries: *mut c_int,
) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if member_list.is_null() || member_list_entries.is_null() {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: forwarded caller contract.
        let name = unsafe { read_name(group_name) }?;
        let members = e.session.membership(&name)?;
        // SAFETY: non-null, readable by the caller's contract.
        let room = unsafe { member_list_entries.read() };
        let room = usize::try_from(room).map_err(|_| CsError::InvalidParam)?;
        let n = members.len().min(room);
        for (i, m) in members.iter().take(n).enumerate() {
            // SAFETY: `i < room`, the number of entries the caller has room for.
            unsafe { member_list.add(i).write(*m) };
        }
        // SAFETY: as above.
        unsafe { member_list_entries.write(n as c_int) };
        Ok(())
    })
}

/// `cpg_local_get`: this node's id.
///
/// # Safety
/// `local_nodeid` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_local_get(handle: CpgHandle, local_nodeid: *mut c_uint) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if local_nodeid.is_null() {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { local_nodeid.write(e.session.local_nodeid()) };
        Ok(())
    })
}

/// `cpg_flow_control_state_get`: `CPG_FLOW_CONTROL_ENABLED` (1) while multicasts would get
/// `CS_ERR_TRY_AGAIN`.
///
/// # Safety
/// `state` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_flow_control_state_get(handle: CpgHandle, state: *mut c_uint) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if state.is_null() {
            return Err(CsError::InvalidParam);
        }
        let on = e.session.flow_control()?;
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { state.write(c_uint::from(on)) };
        Ok(())
    })
}

/// `cpg_zcb_alloc`: an ordinary allocation (not shared memory: there is no zero copy on this
/// transport), freed by `cpg_zcb_free` and sent by `cpg_zcb_mcast_joined` with one copy.
///
/// # Safety
/// `buffer` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_zcb_alloc(handle: CpgHandle, size: usize, buffer: *mut *mut c_void) -> CsErrorT {
    guard(|| {
        entry(handle)?;
        if buffer.is_null() || size > MAX_ATOMIC_MSG_BYTES {
            return Err(CsError::InvalidParam);
        }
        let mut b = vec![0u8; size.max(1)].into_boxed_slice();
        let p = b.as_mut_ptr();
        table(&ZCB).insert(p as usize, b);
        // SAFETY: non-null, writable by the caller's contract; the memory lives in ZCB until freed.
        unsafe { buffer.write(p.cast()) };
        Ok(())
    })
}

/// `cpg_zcb_free`: `CS_ERR_INVALID_PARAM` for a pointer `cpg_zcb_alloc` did not return.
#[no_mangle]
pub extern "C" fn cpg_zcb_free(handle: CpgHandle, buffer: *mut c_void) -> CsErrorT {
    guard(|| {
        entry(handle)?;
        table(&ZCB).remove(&(buffer as usize)).map(drop).ok_or(CsError::InvalidParam)
    })
}

/// `cpg_zcb_mcast_joined`: multicasts `msg_len` bytes of a buffer from `cpg_zcb_alloc`.
#[no_mangle]
pub extern "C" fn cpg_zcb_mcast_joined(
    handle: CpgHandle,
    guarantee: c_uint,
    msg: *mut c_void,
    msg_len: usize,
) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if guarantee == CPG_TYPE_UNORDERED || guarantee > CPG_TYPE_SAFE {
            return Err(CsError::InvalidParam);
        }
        // The buffer is looked up in the library's own table, so no caller pointer is dereferenced.
        let data = {
            let zcb = table(&ZCB);
            let b = zcb.get(&(msg as usize)).ok_or(CsError::InvalidParam)?;
            b.get(..msg_len).ok_or(CsError::InvalidParam)?.to_vec()
        };
        e.session.mcast(&data, guarantee == CPG_TYPE_SAFE)
    })
}

/// `cpg_iteration_initialize`: groups and members as the local agent knows them (its status). Members
/// of the handle's own group carry their pids; members of other groups carry pid 0, because only
/// members of a group learn each other's pids (see [`crate::mapping`]).
///
/// # Safety
/// `group` must be null or readable (it is read for `CPG_ITERATION_ONE_GROUP` only);
/// `iteration_handle` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_iteration_initialize(
    handle: CpgHandle,
    iteration_type: c_uint,
    group: *const CpgName,
    iteration_handle: *mut u64,
) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if iteration_handle.is_null() {
            return Err(CsError::InvalidParam);
        }
        let one = match iteration_type {
            CPG_ITERATION_ONE_GROUP => {
                // SAFETY: forwarded caller contract.
                Some(unsafe { read_name(group) }?)
            }
            CPG_ITERATION_NAME_ONLY | CPG_ITERATION_ALL => None,
            _ => return Err(CsError::InvalidParam),
        };
        let status = e.session.status()?;
        let own = e.session.joined()?;
        let mut items = VecDeque::new();
        let groups = status.get("groups").and_then(|g| g.as_object()).cloned().unwrap_or_default();
        for (name, members) in groups {
            if one.as_ref().is_some_and(|o| *o != name) || name.len() > CPG_MAX_NAME_LENGTH {
                continue;
            }
            if iteration_type == CPG_ITERATION_NAME_ONLY {
                items.push_back((name, 0, 0));
                continue;
            }
            let known: Vec<CpgAddress> =
                own.as_ref().filter(|(n, _)| *n == name).map(|(_, m)| m.clone()).unwrap_or_default();
            for m in members.as_array().into_iter().flatten() {
                let Some(node) = m.get(0).and_then(|n| n.as_u64()).and_then(|n| u32::try_from(n).ok()) else {
                    continue;
                };
                let pid = known.iter().find(|a| a.nodeid == node).map_or(0, |a| a.pid);
                items.push_back((name.clone(), node, pid));
            }
        }
        let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        table(&ITERATIONS).insert(h, items);
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { iteration_handle.write(h) };
        Ok(())
    })
}

/// `cpg_iteration_next`: `CS_ERR_NO_SECTIONS` after the last entry.
///
/// # Safety
/// `description` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_iteration_next(
    iteration_handle: u64,
    description: *mut CpgIterationDescription,
) -> CsErrorT {
    const CS_ERR_NO_SECTIONS: CsErrorT = 27;
    let mut end = false;
    let r = guard(|| {
        if description.is_null() {
            return Err(CsError::InvalidParam);
        }
        let mut its = table(&ITERATIONS);
        let it = its.get_mut(&iteration_handle).ok_or(CsError::BadHandle)?;
        let Some((name, nodeid, pid)) = it.pop_front() else {
            end = true;
            return Ok(());
        };
        let d = CpgIterationDescription { group: make_name(&name), nodeid, pid };
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { description.write(d) };
        Ok(())
    });
    if end {
        CS_ERR_NO_SECTIONS
    } else {
        r
    }
}

/// `cpg_iteration_finalize`.
#[no_mangle]
pub extern "C" fn cpg_iteration_finalize(iteration_handle: u64) -> CsErrorT {
    guard(|| table(&ITERATIONS).remove(&iteration_handle).map(drop).ok_or(CsError::BadHandle))
}

/// `cohort_cpg_event_callback_set` (cpg_ext.h): the callback for cohort's own events, or null for none.
#[no_mangle]
pub extern "C" fn cohort_cpg_event_callback_set(handle: CpgHandle, f: Option<EventFn>) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        *e.event.lock().unwrap_or_else(|p| p.into_inner()) = f;
        Ok(())
    })
}

/// `cohort_cpg_state_callbacks_set` (cpg_ext.h): the application provides the group's state when a
/// member joins and applies the state it receives when it joins. Both functions, or both null to go
/// back to the library answering with an empty state. Set it before `cpg_join`.
#[no_mangle]
pub extern "C" fn cohort_cpg_state_callbacks_set(
    handle: CpgHandle,
    provide: Option<ProvideFn>,
    apply: Option<ApplyFn>,
) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        let pair = match (provide, apply) {
            (Some(p), Some(a)) => Some((p, a)),
            (None, None) => None,
            _ => return Err(CsError::InvalidParam),
        };
        *e.state.lock().unwrap_or_else(|p| p.into_inner()) = pair;
        e.session.set_state_transfer(pair.is_some())
    })
}

/// `cohort_cpg_send_failures_get` (cpg_ext.h): multicasts the agent refused after `cpg_mcast_joined`
/// returned `CS_OK` (the return is immediate, the agent's answer comes later).
///
/// # Safety
/// `count` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cohort_cpg_send_failures_get(handle: CpgHandle, count: *mut u64) -> CsErrorT {
    guard(|| {
        let e = entry(handle)?;
        if count.is_null() {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { count.write(e.session.send_failures()) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The same numbers as the `_Static_assert`s of tests/c/api.c, which checks them against Debian's
    /// headers: together they pin the layouts to corosync's.
    #[test]
    fn c_layouts_match_corosync_headers() {
        assert_eq!(size_of::<CpgName>(), 132);
        assert_eq!(offset_of!(CpgName, value), 4);
        assert_eq!(size_of::<CpgAddress>(), 12);
        assert_eq!(size_of::<CpgRingId>(), 16);
        assert_eq!(offset_of!(CpgRingId, seq), 8);
        assert_eq!(size_of::<CpgModelV1Data>(), 40);
        assert_eq!(offset_of!(CpgModelV1Data, cpg_deliver_fn), 8);
        assert_eq!(offset_of!(CpgModelV1Data, flags), 32);
        assert_eq!(size_of::<CpgCallbacks>(), 16);
        assert_eq!(size_of::<CpgIterationDescription>(), 140);
        assert_eq!(size_of::<IoVec>(), 16);
    }

    #[test]
    fn names_are_checked_and_made_within_128_bytes() {
        let n = make_name("orders");
        // SAFETY: a valid struct on the stack.
        assert_eq!(unsafe { read_name(&n) }, Ok("orders".to_string()));
        let mut long = make_name("x");
        long.length = 129;
        // SAFETY: as above.
        assert_eq!(unsafe { read_name(&long) }, Err(CsError::NameTooLong));
        // SAFETY: null is allowed.
        assert_eq!(unsafe { read_name(std::ptr::null()) }, Err(CsError::InvalidParam));
        assert_eq!(make_name(&"y".repeat(300)).length, 128);
    }

    #[test]
    fn unknown_handles_are_bad_handles() {
        assert_eq!(cpg_finalize(42), CsError::BadHandle as CsErrorT);
        assert_eq!(cpg_dispatch(42, 2), CsError::BadHandle as CsErrorT);
        assert_eq!(cpg_context_set(42, std::ptr::null_mut()), CsError::BadHandle as CsErrorT);
    }
}
