//! The lock table: a pure, deterministic state machine over ordered operations.
//!
//! Every member of the lock group applies the same [`Op`]s in the same total order (cohort's agreed
//! delivery), so every member holds an identical [`LockTable`]. [`LockTable::apply`] reads no clock,
//! draws no randomness and iterates only ordered maps: the same sequence of operations gives the same
//! table, byte for byte, on every replica (a property test checks this).
//!
//! # Semantics
//! - A lock has a name, a set of holders and a FIFO wait queue. A holder is an [`Owner`]: a name chosen
//!   by the application, qualified by the lock-service session ([`ClientId`]: the cohort member plus a
//!   random session number) that asked for it.
//! - [`Mode::Exclusive`] is compatible with nothing; [`Mode::Shared`] with other shared holders.
//! - Grants are strictly FIFO: a request is granted only when it is at the head of the queue and
//!   compatible with every holder; consecutive shared requests at the head are granted together. No
//!   barging: a shared request behind a waiting exclusive one waits, so writers do not starve.
//! - Timeouts are not decided here (that would need a clock): the requester sends [`Op::Cancel`] when
//!   its own deadline passes. A cancel that arrives after the grant releases the lock again.
//! - [`Op::Leave`] (a session leaving cleanly) and [`Op::Hello`] (a new session of the same member, which
//!   proves the old one gone) release at once. [`Op::Expire`] releases every hold and request of failed
//!   members; the service sends it only after cohort said `recovered` for them (after fencing), never on
//!   a view change alone.
//!
//! Bounds: at most [`MAX_LOCKS`] locks, [`MAX_WAITERS`] waiters per lock, names of at most
//! [`MAX_NAME_BYTES`] bytes. An operation beyond a bound is refused identically on every replica.

use cohort::Member;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Most locks (held or waited for) in one table.
pub const MAX_LOCKS: usize = 10_000;
/// Most waiting requests per lock.
pub const MAX_WAITERS: usize = 1_000;
/// Longest lock or owner name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// One lock-service session: the cohort member it runs on and a random number chosen when it joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId {
    /// The cohort member (node, epoch) of the session.
    pub member: Member,
    /// Random per session, so two sessions on one member are told apart.
    pub session: u64,
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:x}", self.member, self.session)
    }
}

/// Who holds or waits for a lock: an application-chosen name within a session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The session.
    pub client: ClientId,
    /// The application's name for the holder (a worker, a user, a job).
    pub name: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.client.member)
    }
}

/// Lock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// One holder at a time.
    Exclusive,
    /// Any number of shared holders, no exclusive one.
    Shared,
}

impl Mode {
    fn compatible(self, other: Mode) -> bool {
        self == Mode::Shared && other == Mode::Shared
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        })
    }
}

/// An ordered operation on the table (the payload of one multicast, see [`Op::encode`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    /// Ask for `lock` in `mode`; `req` is unique within the owner's session.
    Acquire {
        /// The lock.
        lock: String,
        /// Who asks.
        owner: Owner,
        /// The mode.
        mode: Mode,
        /// The request number.
        req: u64,
    },
    /// Give `lock` back (or stop waiting for it).
    Release {
        /// The lock.
        lock: String,
        /// The holder.
        owner: Owner,
    },
    /// Withdraw request `req`: stop waiting, or release if it was granted meanwhile.
    Cancel {
        /// The lock.
        lock: String,
        /// Who asked.
        owner: Owner,
        /// The request number.
        req: u64,
    },
    /// A new session started on `client.member`: any other session of the same member is gone (one
    /// lock-service session per member owns the group at a time), so its holds are released.
    Hello {
        /// The new session.
        client: ClientId,
    },
    /// The session leaves cleanly: release its holds and requests now.
    Leave {
        /// The session.
        client: ClientId,
    },
    /// cohort announced `recovered` for these failed members (they are fenced): release everything they
    /// held or waited for.
    Expire {
        /// The members.
        members: Vec<Member>,
    },
}

impl Op {
    /// The wire form (MessagePack).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain types into a Vec cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Parses the wire form; `None` for bytes that are not an operation (never panics).
    pub fn decode(bytes: &[u8]) -> Option<Op> {
        rmp_serde::from_slice(bytes).ok()
    }
}

/// Why a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseCause {
    /// The owner released it.
    Released,
    /// The owner's request was cancelled (its timeout passed) after the grant.
    Cancelled,
    /// The session left cleanly, or a newer session of its member said hello.
    Left,
    /// The member failed and cohort announced its recovery.
    Recovered,
}

/// What applying an operation changed, for the service to tell local waiters and holders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `owner` now holds `lock` for request `req`.
    Granted {
        /// The lock.
        lock: String,
        /// The new holder.
        owner: Owner,
        /// The mode.
        mode: Mode,
        /// The request that was granted.
        req: u64,
    },
    /// Request `req` waits in the lock's queue.
    Queued {
        /// The lock.
        lock: String,
        /// Who waits.
        owner: Owner,
        /// The request.
        req: u64,
    },
    /// `owner` no longer holds `lock`.
    Released {
        /// The lock.
        lock: String,
        /// The former holder.
        owner: Owner,
        /// Why.
        cause: ReleaseCause,
    },
    /// Request `req` no longer waits (cancelled, or its session went away).
    Withdrawn {
        /// The lock.
        lock: String,
        /// Who waited.
        owner: Owner,
        /// The request.
        req: u64,
    },
    /// Request `req` was refused; the table did not change.
    Refused {
        /// The lock.
        lock: String,
        /// Who asked.
        owner: Owner,
        /// The request.
        req: u64,
        /// Why, one lowercase line.
        reason: String,
    },
}

/// One waiting request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// Who waits.
    pub owner: Owner,
    /// The mode asked for.
    pub mode: Mode,
    /// The request number.
    pub req: u64,
}

/// One lock's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Holders with their mode and the request that was granted.
    pub holders: BTreeMap<Owner, (Mode, u64)>,
    /// Waiting requests, oldest first.
    pub queue: VecDeque<Waiter>,
}

impl Lock {
    fn is_free(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty()
    }
}

/// The replicated lock table. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    locks: BTreeMap<String, Lock>,
    /// Operations applied since the table was created (including those carried in a state transfer).
    applied: u64,
}

impl LockTable {
    /// An empty table.
    pub fn new() -> LockTable {
        LockTable::default()
    }

    /// Operations applied so far, including those carried in by state transfer.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The lock named `name`, if anyone holds or waits for it.
    pub fn lock(&self, name: &str) -> Option<&Lock> {
        self.locks.get(name)
    }

    /// Every lock that is held or waited for, by name.
    pub fn locks(&self) -> &BTreeMap<String, Lock> {
        &self.locks
    }

    /// The state-transfer form (MessagePack).
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Parses a state transfer; `None` for anything that is not a valid table.
    pub fn decode(bytes: &[u8]) -> Option<LockTable> {
        let t: LockTable = rmp_serde::from_slice(bytes).ok()?;
        t.is_well_formed().then_some(t)
    }

    /// The invariants every reachable table satisfies: no empty lock entries, no two exclusive holders,
    /// no exclusive holder beside another holder, no owner both holding and waiting, bounds respected.
    pub fn is_well_formed(&self) -> bool {
        self.locks.len() <= MAX_LOCKS
            && self.locks.iter().all(|(name, l)| {
                let exclusive = l.holders.values().filter(|(m, _)| *m == Mode::Exclusive).count();
                name.len() <= MAX_NAME_BYTES
                    && !l.is_free()
                    && (exclusive == 0 || l.holders.len() == 1)
                    && l.queue.len() <= MAX_WAITERS
                    && l.queue.iter().all(|w| !l.holders.contains_key(&w.owner))
                    // A non-empty queue with no holders would mean a grant was missed.
                    && (l.queue.is_empty() || !l.holders.is_empty())
            })
    }

    /// Applies one ordered operation and returns what changed.
    pub fn apply(&mut self, op: &Op) -> Vec<Effect> {
        self.applied += 1;
        let mut fx = Vec::new();
        match op {
            Op::Acquire { lock, owner, mode, req } => self.acquire(lock, owner, *mode, *req, &mut fx),
            Op::Release { lock, owner } => {
                self.remove_owner_from(lock, |o| o == owner, ReleaseCause::Released, &mut fx)
            }
            Op::Cancel { lock, owner, req } => self.cancel(lock, owner, *req, &mut fx),
            Op::Hello { client } => {
                let gone = |o: &Owner| o.client.member == client.member && o.client.session != client.session;
                self.remove_everywhere(gone, ReleaseCause::Left, &mut fx);
            }
            Op::Leave { client } => {
                self.remove_everywhere(|o: &Owner| o.client == *client, ReleaseCause::Left, &mut fx)
            }
            Op::Expire { members } => self.remove_everywhere(
                |o: &Owner| members.contains(&o.client.member),
                ReleaseCause::Recovered,
                &mut fx,
            ),
        }
        fx
    }

    fn acquire(&mut self, lock: &str, owner: &Owner, mode: Mode, req: u64, fx: &mut Vec<Effect>) {
        let refuse = |reason: &str, fx: &mut Vec<Effect>| {
            fx.push(Effect::Refused {
                lock: lock.to_string(),
                owner: owner.clone(),
                req,
                reason: reason.to_string(),
            })
        };
        if lock.is_empty() || lock.len() > MAX_NAME_BYTES || owner.name.len() > MAX_NAME_BYTES {
            return refuse("lock and owner names must be 1 to 256 bytes", fx);
        }
        if !self.locks.contains_key(lock) && self.locks.len() >= MAX_LOCKS {
            return refuse("too many locks in the table", fx);
        }
        let l = self.locks.entry(lock.to_string()).or_default();
        if l.holders.contains_key(owner) {
            return refuse("already held by this owner", fx);
        }
        if l.queue.iter().any(|w| w.owner == *owner) {
            return refuse("this owner already waits for it", fx);
        }
        if l.queue.len() >= MAX_WAITERS {
            return refuse("too many waiters for this lock", fx);
        }
        l.queue.push_back(Waiter { owner: owner.clone(), mode, req });
        let granted_before = fx.len();
        Self::grant(lock, l, fx);
        let granted_now = fx[granted_before..]
            .iter()
            .any(|e| matches!(e, Effect::Granted { owner: o, req: r, .. } if o == owner && *r == req));
        if !granted_now {
            fx.push(Effect::Queued { lock: lock.to_string(), owner: owner.clone(), req });
        }
    }

    fn cancel(&mut self, lock: &str, owner: &Owner, req: u64, fx: &mut Vec<Effect>) {
        let Some(l) = self.locks.get_mut(lock) else { return };
        if let Some(pos) = l.queue.iter().position(|w| w.owner == *owner && w.req == req) {
            l.queue.remove(pos);
            fx.push(Effect::Withdrawn { lock: lock.to_string(), owner: owner.clone(), req });
        } else if l.holders.get(owner).is_some_and(|(_, r)| *r == req) {
            l.holders.remove(owner);
            fx.push(Effect::Released {
                lock: lock.to_string(),
                owner: owner.clone(),
                cause: ReleaseCause::Cancelled,
            });
        }
        Self::grant(lock, l, fx);
        self.drop_if_free(lock);
    }

    /// Removes owners matching `gone` from one lock: holds are released, requests withdrawn.
    fn remove_owner_from(
        &mut self,
        lock: &str,
        gone: impl Fn(&Owner) -> bool,
        cause: ReleaseCause,
        fx: &mut Vec<Effect>,
    ) {
        let Some(l) = self.locks.get_mut(lock) else { return };
        Self::remove_from_lock(lock, l, &gone, cause, fx);
        Self::grant(lock, l, fx);
        self.drop_if_free(lock);
    }

    fn remove_everywhere(
        &mut self,
        gone: impl Fn(&Owner) -> bool,
        cause: ReleaseCause,
        fx: &mut Vec<Effect>,
    ) {
        let names: Vec<String> = self.locks.keys().cloned().collect();
        for name in names {
            self.remove_owner_from(&name, &gone, cause, fx);
        }
    }

    fn remove_from_lock(
        name: &str,
        l: &mut Lock,
        gone: &impl Fn(&Owner) -> bool,
        cause: ReleaseCause,
        fx: &mut Vec<Effect>,
    ) {
        let leaving: Vec<Owner> = l.holders.keys().filter(|o| gone(o)).cloned().collect();
        for o in leaving {
            l.holders.remove(&o);
            fx.push(Effect::Released { lock: name.to_string(), owner: o, cause });
        }
        let mut kept = VecDeque::with_capacity(l.queue.len());
        for w in l.queue.drain(..) {
            if gone(&w.owner) {
                fx.push(Effect::Withdrawn { lock: name.to_string(), owner: w.owner, req: w.req });
            } else {
                kept.push_back(w);
            }
        }
        l.queue = kept;
    }

    /// Grants from the head of the queue while the head is compatible with every holder.
    fn grant(name: &str, l: &mut Lock, fx: &mut Vec<Effect>) {
        while let Some(head) = l.queue.front() {
            let ok = l.holders.values().all(|(m, _)| m.compatible(head.mode));
            if !ok {
                break;
            }
            let Some(w) = l.queue.pop_front() else { break };
            l.holders.insert(w.owner.clone(), (w.mode, w.req));
            fx.push(Effect::Granted { lock: name.to_string(), owner: w.owner, mode: w.mode, req: w.req });
        }
    }

    fn drop_if_free(&mut self, lock: &str) {
        if self.locks.get(lock).is_some_and(Lock::is_free) {
            self.locks.remove(lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::{Epoch, NodeId};
    use proptest::prelude::*;

    fn owner(node: u32, name: &str) -> Owner {
        Owner { client: ClientId { member: Member(NodeId(node), Epoch(1)), session: 7 }, name: name.into() }
    }

    fn acquire(lock: &str, o: &Owner, mode: Mode, req: u64) -> Op {
        Op::Acquire { lock: lock.into(), owner: o.clone(), mode, req }
    }

    fn holders(t: &LockTable, lock: &str) -> Vec<String> {
        t.lock(lock).map(|l| l.holders.keys().map(|o| o.name.clone()).collect()).unwrap_or_default()
    }

    #[test]
    fn exclusive_waits_for_the_holder_and_is_granted_on_release() {
        let (a, b) = (owner(1, "a"), owner(2, "b"));
        let mut t = LockTable::new();
        let fx = t.apply(&acquire("x", &a, Mode::Exclusive, 1));
        assert!(matches!(&fx[..], [Effect::Granted { req: 1, .. }]), "{fx:?}");
        let fx = t.apply(&acquire("x", &b, Mode::Exclusive, 1));
        assert!(matches!(&fx[..], [Effect::Queued { .. }]), "{fx:?}");
        assert_eq!(holders(&t, "x"), vec!["a"]);
        let fx = t.apply(&Op::Release { lock: "x".into(), owner: a.clone() });
        assert_eq!(fx.len(), 2, "{fx:?}");
        assert!(matches!(&fx[1], Effect::Granted { owner, .. } if *owner == b));
        assert_eq!(holders(&t, "x"), vec!["b"]);
        t.apply(&Op::Release { lock: "x".into(), owner: b });
        assert!(t.locks().is_empty(), "a free lock leaves no entry");
        assert!(t.is_well_formed());
    }

    #[test]
    fn shared_holders_share_and_a_waiting_writer_blocks_later_readers() {
        let (r1, r2, w, r3) = (owner(1, "r1"), owner(2, "r2"), owner(3, "w"), owner(4, "r3"));
        let mut t = LockTable::new();
        t.apply(&acquire("x", &r1, Mode::Shared, 1));
        t.apply(&acquire("x", &r2, Mode::Shared, 1));
        assert_eq!(holders(&t, "x"), vec!["r1", "r2"]);
        t.apply(&acquire("x", &w, Mode::Exclusive, 1));
        let fx = t.apply(&acquire("x", &r3, Mode::Shared, 1));
        assert!(matches!(&fx[..], [Effect::Queued { .. }]), "no barging past the writer: {fx:?}");
        t.apply(&Op::Release { lock: "x".into(), owner: r1 });
        assert_eq!(holders(&t, "x"), vec!["r2"]);
        t.apply(&Op::Release { lock: "x".into(), owner: r2 });
        assert_eq!(holders(&t, "x"), vec!["w"]);
        t.apply(&Op::Release { lock: "x".into(), owner: w });
        assert_eq!(holders(&t, "x"), vec!["r3"]);
    }

    #[test]
    fn cancel_withdraws_a_waiter_or_releases_a_late_grant() {
        let (a, b) = (owner(1, "a"), owner(2, "b"));
        let mut t = LockTable::new();
        t.apply(&acquire("x", &a, Mode::Exclusive, 1));
        t.apply(&acquire("x", &b, Mode::Exclusive, 5));
        let fx = t.apply(&Op::Cancel { lock: "x".into(), owner: b.clone(), req: 5 });
        assert!(matches!(&fx[..], [Effect::Withdrawn { req: 5, .. }]), "{fx:?}");
        t.apply(&acquire("x", &b, Mode::Exclusive, 6));
        t.apply(&Op::Release { lock: "x".into(), owner: a });
        assert_eq!(holders(&t, "x"), vec!["b"]);
        // The requester gave up on request 6 before hearing of the grant: the cancel releases it.
        let fx = t.apply(&Op::Cancel { lock: "x".into(), owner: b.clone(), req: 6 });
        assert!(matches!(&fx[..], [Effect::Released { cause: ReleaseCause::Cancelled, .. }]), "{fx:?}");
        // A stale cancel of an older request does nothing.
        t.apply(&acquire("x", &b, Mode::Exclusive, 7));
        assert!(t.apply(&Op::Cancel { lock: "x".into(), owner: b, req: 6 }).is_empty());
        assert_eq!(holders(&t, "x"), vec!["b"]);
    }

    #[test]
    fn expire_releases_only_the_recovered_members_and_grants_the_next() {
        let (a, b, c) = (owner(1, "a"), owner(2, "b"), owner(3, "c"));
        let mut t = LockTable::new();
        t.apply(&acquire("x", &a, Mode::Exclusive, 1));
        t.apply(&acquire("x", &b, Mode::Exclusive, 1));
        t.apply(&acquire("y", &c, Mode::Exclusive, 1));
        let fx = t.apply(&Op::Expire { members: vec![a.client.member] });
        assert!(fx.contains(&Effect::Released {
            lock: "x".into(),
            owner: a,
            cause: ReleaseCause::Recovered
        }));
        assert_eq!(holders(&t, "x"), vec!["b"]);
        assert_eq!(holders(&t, "y"), vec!["c"]);
    }

    #[test]
    fn a_new_session_of_a_member_releases_the_old_sessions_holds_only() {
        let old = owner(1, "a");
        let mut new = owner(1, "a");
        new.client.session = 8;
        let other = owner(2, "z");
        let mut t = LockTable::new();
        t.apply(&acquire("x", &old, Mode::Exclusive, 1));
        t.apply(&acquire("y", &other, Mode::Exclusive, 1));
        t.apply(&Op::Hello { client: new.client });
        assert!(t.lock("x").is_none());
        assert_eq!(holders(&t, "y"), vec!["z"]);
        t.apply(&Op::Leave { client: other.client });
        assert!(t.locks().is_empty());
    }

    #[test]
    fn duplicates_and_bad_names_are_refused_without_change() {
        let a = owner(1, "a");
        let mut t = LockTable::new();
        t.apply(&acquire("x", &a, Mode::Exclusive, 1));
        let before = t.locks().clone();
        assert!(matches!(&t.apply(&acquire("x", &a, Mode::Shared, 2))[..], [Effect::Refused { .. }]));
        assert!(matches!(&t.apply(&acquire("", &a, Mode::Shared, 3))[..], [Effect::Refused { .. }]));
        let long = "l".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(&t.apply(&acquire(&long, &a, Mode::Shared, 4))[..], [Effect::Refused { .. }]));
        assert_eq!(t.locks(), &before);
    }

    #[test]
    fn the_table_survives_a_state_transfer_round_trip_and_garbage_is_refused() {
        let mut t = LockTable::new();
        t.apply(&acquire("x", &owner(1, "a"), Mode::Shared, 1));
        t.apply(&acquire("x", &owner(2, "b"), Mode::Exclusive, 1));
        let back = LockTable::decode(&t.encode()).expect("decodes");
        assert_eq!(back, t);
        assert_eq!(LockTable::decode(b"\x93garbage"), None);
        assert_eq!(Op::decode(b"\xc1"), None);
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let owner = (1u32..4, 1u64..3, 0u64..2, 0usize..2).prop_map(|(node, epoch, session, name)| Owner {
            client: ClientId { member: Member(NodeId(node), Epoch(epoch)), session },
            name: ["p", "q"][name].to_string(),
        });
        let lock = prop_oneof![Just("a".to_string()), Just("b".to_string())];
        let mode = prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)];
        prop_oneof![
            4 => (lock.clone(), owner.clone(), mode, 0u64..4)
                .prop_map(|(lock, owner, mode, req)| Op::Acquire { lock, owner, mode, req }),
            3 => (lock.clone(), owner.clone()).prop_map(|(lock, owner)| Op::Release { lock, owner }),
            2 => (lock, owner.clone(), 0u64..4).prop_map(|(lock, owner, req)| Op::Cancel { lock, owner, req }),
            1 => owner.clone().prop_map(|o| Op::Hello { client: o.client }),
            1 => owner.clone().prop_map(|o| Op::Leave { client: o.client }),
            1 => proptest::collection::vec(owner, 0..3)
                .prop_map(|os| Op::Expire { members: os.into_iter().map(|o| o.client.member).collect() }),
        ]
    }

    proptest! {
        /// Two replicas that apply the same ordered operations hold identical tables, and every table on
        /// the way is well formed (in particular, never two exclusive holders).
        #[test]
        fn replicas_agree_and_never_have_two_exclusive_holders(ops in proptest::collection::vec(arb_op(), 0..120)) {
            let mut r1 = LockTable::new();
            let mut r2 = LockTable::new();
            for op in &ops {
                let f1 = r1.apply(op);
                // The second replica sees the operation as it came off the wire.
                let f2 = r2.apply(&Op::decode(&op.encode()).expect("round trip"));
                prop_assert_eq!(&f1, &f2);
                prop_assert!(r1.is_well_formed(), "ill-formed after {:?}: {:?}", op, r1);
            }
            prop_assert_eq!(r1.encode(), r2.encode());
        }

        /// A joiner that receives the table by state transfer midway and applies the rest of the order
        /// ends with the same table as a member that applied everything.
        #[test]
        fn a_transferred_table_continues_identically(
            ops in proptest::collection::vec(arb_op(), 0..80),
            cut in 0usize..80,
        ) {
            let cut = cut.min(ops.len());
            let mut full = LockTable::new();
            for op in &ops[..cut] {
                full.apply(op);
            }
            let mut joiner = LockTable::decode(&full.encode()).expect("transfer decodes");
            for op in &ops[cut..] {
                full.apply(op);
                joiner.apply(op);
            }
            prop_assert_eq!(full, joiner);
        }

        /// Exclusive grants follow the rule: while an owner holds a lock exclusively, no other grant of
        /// that lock happens until that owner's hold ended.
        #[test]
        fn no_grant_overlaps_an_exclusive_hold(ops in proptest::collection::vec(arb_op(), 0..150)) {
            let mut t = LockTable::new();
            let mut held: BTreeMap<String, Vec<(Owner, Mode)>> = BTreeMap::new();
            for op in &ops {
                for e in t.apply(op) {
                    match e {
                        Effect::Granted { lock, owner, mode, .. } => {
                            let hs = held.entry(lock).or_default();
                            prop_assert!(
                                hs.iter().all(|(_, m)| *m == Mode::Shared) && (mode == Mode::Shared || hs.is_empty()),
                                "grant of {:?} to {} beside {:?}", mode, owner, hs
                            );
                            hs.push((owner, mode));
                        }
                        Effect::Released { lock, owner, .. } => {
                            let hs = held.entry(lock).or_default();
                            let before = hs.len();
                            hs.retain(|(o, _)| *o != owner);
                            prop_assert_eq!(before, hs.len() + 1);
                        }
                        _ => {}
                    }
                }
            }
        }

        /// Arbitrary bytes never panic the decoders.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Op::decode(&bytes);
            let _ = LockTable::decode(&bytes);
        }
    }
}
