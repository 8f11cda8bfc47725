//! How one cohort process group becomes one CPG group: who the CPG members are, and which confchg
//! callbacks each member sees. Pure logic, no IO: [`GroupTracker`] takes the group's events in the
//! order the agent delivers them and returns what the session must do ([`Out`]).
//!
//! # Why the library says something in the group itself
//! A CPG member is a (nodeid, pid) pair. cohort's group views list members as (node, epoch): the agent
//! has no notion of the pid of a remote process. So every message the library multicasts starts with a
//! five-byte header ([`Header`]): a kind and the sender's pid. Right after a member sees itself in the
//! group, and whenever it sees a newcomer, it multicasts an *announcement* (kind [`KIND_ANNOUNCE`]) so
//! that every member learns every pid through the group's total order. A newcomer is reported as
//! joined (confchg, reason `JOIN`) when its announcement is delivered; the newcomer itself gets its
//! first confchg (every member, joined = itself) once it knows every member's pid, and the messages it
//! receives before that are held until after that confchg. Because announcements travel in the total
//! order, every member reports the same joins between the same messages.
//!
//! A member that calls `cpg_leave` first multicasts a leave notice (kind [`KIND_LEAVE`]), so the others
//! report reason `LEAVE`; a member that disappears from the group while its node stays in the view is
//! reported as `PROCDOWN` (its process or connection went away), and one whose node left the view as
//! `NODEDOWN`.
//!
//! **Deliberately absent:** a CPG `NODEUP` reason (cohort reports nodes coming back as joins after
//! their announcement, reason `JOIN`), and interoperation with non-CPG clients of the same group: they
//! would see the header and must not share a group with CPG programs.

use crate::types::{CpgAddress, REASON_JOIN, REASON_LEAVE, REASON_NODEDOWN, REASON_PROCDOWN};
use crate::Callback;
use std::collections::{BTreeMap, BTreeSet};

/// An application message.
pub const KIND_DATA: u8 = 1;
/// "My pid is ...": sent once a member sees itself in the group and whenever it sees a newcomer.
pub const KIND_ANNOUNCE: u8 = 2;
/// "I am leaving by `cpg_leave`": sent just before the leave request.
pub const KIND_LEAVE: u8 = 3;
/// The header's length in bytes.
pub const HEADER_BYTES: usize = 5;

/// The header the library puts in front of every payload it multicasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`KIND_DATA`], [`KIND_ANNOUNCE`] or [`KIND_LEAVE`].
    pub kind: u8,
    /// The sending process's pid.
    pub pid: u32,
}

impl Header {
    /// `payload` with this header in front.
    pub fn wrap(self, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_BYTES + payload.len());
        v.push(self.kind);
        v.extend_from_slice(&self.pid.to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// The header and the application bytes after it, or `None` for a payload too short to carry one.
    pub fn parse(payload: &[u8]) -> Option<(Header, &[u8])> {
        let (head, rest) = payload.split_at_checked(HEADER_BYTES)?;
        let mut pid = [0u8; 4];
        pid.copy_from_slice(&head[1..]);
        Some((Header { kind: head[0], pid: u32::from_le_bytes(pid) }, rest))
    }
}

/// A cohort member of the group: (node, epoch).
pub type Key = (u32, u64);

/// What the session must do after an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// Multicast an announcement of this process's pid.
    Announce,
    /// Queue this callback for `cpg_dispatch`.
    Emit(Callback),
    /// This process is no longer in the group (it left, or was dropped): forget the group.
    SelfGone,
}

/// One CPG group as seen by one member. See the module documentation.
#[derive(Debug)]
pub struct GroupTracker {
    name: String,
    me: u32,
    my_pid: u32,
    /// This process was seen in a group view.
    in_group: bool,
    /// The latest group view.
    cohort: BTreeSet<Key>,
    /// Pids learnt from announcements, for members of the latest group view.
    pids: BTreeMap<Key, u32>,
    /// The CPG membership as reported to the application (the member list of the last confchg).
    reported: BTreeMap<Key, u32>,
    /// Members that announced a `cpg_leave`.
    leaving: BTreeSet<Key>,
    /// The nodes of the latest cohort view.
    view_nodes: BTreeSet<u32>,
    /// Deliveries held until this member's first confchg.
    held: Vec<Callback>,
}

impl GroupTracker {
    /// A group this process (node `me`, pid `my_pid`) asked to join; `view_nodes` is the current view.
    pub fn new(name: &str, me: u32, my_pid: u32, view_nodes: BTreeSet<u32>) -> GroupTracker {
        GroupTracker {
            name: name.to_string(),
            me,
            my_pid,
            in_group: false,
            cohort: BTreeSet::new(),
            pids: BTreeMap::new(),
            reported: BTreeMap::new(),
            leaving: BTreeSet::new(),
            view_nodes,
            held: Vec::new(),
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once this process has multicast its announcement (its own sends may go out).
    pub fn announced(&self) -> bool {
        self.in_group
    }

    /// The CPG membership as last reported, sorted by node id.
    pub fn members(&self) -> Vec<CpgAddress> {
        self.reported.iter().map(|(k, pid)| CpgAddress { nodeid: k.0, pid: *pid, reason: 0 }).collect()
    }

    fn self_reported(&self) -> bool {
        self.reported.keys().any(|k| k.0 == self.me)
    }

    /// A cohort view was installed.
    pub fn on_view(&mut self, nodes: BTreeSet<u32>) {
        self.view_nodes = nodes;
    }

    /// The group's cohort membership changed to `members`.
    pub fn on_group_view(&mut self, members: &[Key]) -> Vec<Out> {
        let mut out = Vec::new();
        let now: BTreeSet<Key> = members.iter().copied().collect();
        let newcomers: Vec<Key> = now.difference(&self.cohort).copied().collect();
        let gone: Vec<Key> = self.cohort.difference(&now).copied().collect();
        let self_in = now.iter().any(|k| k.0 == self.me);
        if !self.in_group && self_in {
            self.in_group = true;
            if let Some(k) = now.iter().find(|k| k.0 == self.me) {
                self.pids.insert(*k, self.my_pid);
            }
            out.push(Out::Announce);
        } else if self.in_group && self_in && !newcomers.is_empty() {
            out.push(Out::Announce);
        }
        self.cohort = now;
        let mut left = Vec::new();
        for k in gone {
            self.pids.remove(&k);
            if let Some(pid) = self.reported.remove(&k) {
                let reason = if k.0 == self.me || self.leaving.contains(&k) {
                    REASON_LEAVE
                } else if !self.view_nodes.contains(&k.0) {
                    REASON_NODEDOWN
                } else {
                    REASON_PROCDOWN
                };
                left.push(CpgAddress { nodeid: k.0, pid, reason });
            }
            self.leaving.remove(&k);
        }
        let joined = self.report_joins();
        self.emit(&mut out, left, joined);
        if self.in_group && !self_in {
            out.push(Out::SelfGone);
        }
        out
    }

    /// This process's `cpg_leave` was carried out. The agent tells a client nothing more about a group
    /// it left, so the confchg that lists this process as left (reason `LEAVE`, as corosync gives the
    /// leaver) is made here.
    pub fn on_self_left(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        let mine: Vec<Key> = self.reported.keys().filter(|k| k.0 == self.me).copied().collect();
        let mut left = Vec::new();
        for k in mine {
            if let Some(pid) = self.reported.remove(&k) {
                left.push(CpgAddress { nodeid: k.0, pid, reason: REASON_LEAVE });
            }
        }
        self.emit(&mut out, left, Vec::new());
        out.push(Out::SelfGone);
        out
    }

    /// A message of the group from `sender`; returns what to emit (announcements and leave notices
    /// change the membership; data is delivered, or held until this member's first confchg).
    pub fn on_deliver(&mut self, sender: Key, payload: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        let Some((header, data)) = Header::parse(payload) else { return out };
        match header.kind {
            KIND_DATA => {
                let cb = Callback::Deliver {
                    group: self.name.clone(),
                    nodeid: sender.0,
                    pid: header.pid,
                    data: data.to_vec(),
                };
                if self.self_reported() {
                    out.push(Out::Emit(cb));
                } else if self.in_group {
                    self.held.push(cb);
                }
            }
            KIND_ANNOUNCE if self.cohort.contains(&sender) => {
                self.pids.insert(sender, header.pid);
                let joined = self.report_joins();
                self.emit(&mut out, Vec::new(), joined);
            }
            KIND_LEAVE => {
                self.leaving.insert(sender);
            }
            _ => {}
        }
        out
    }

    /// Moves members whose pid is known into the reported membership, and returns the joined list.
    /// Before this member's own first confchg, that waits until every member's pid is known, and the
    /// joined list is this member alone (as corosync tells a joiner).
    fn report_joins(&mut self) -> Vec<CpgAddress> {
        if !self.in_group {
            return Vec::new();
        }
        let first = !self.self_reported();
        if first && !self.cohort.iter().all(|k| self.pids.contains_key(k)) {
            return Vec::new();
        }
        let mut joined = Vec::new();
        for (k, pid) in &self.pids {
            if !self.reported.contains_key(k) && self.cohort.contains(k) {
                self.reported.insert(*k, *pid);
                if !first || k.0 == self.me {
                    joined.push(CpgAddress { nodeid: k.0, pid: *pid, reason: REASON_JOIN });
                }
            }
        }
        joined
    }

    fn emit(&mut self, out: &mut Vec<Out>, left: Vec<CpgAddress>, joined: Vec<CpgAddress>) {
        if left.is_empty() && joined.is_empty() {
            return;
        }
        let first = joined.iter().any(|a| a.nodeid == self.me);
        out.push(Out::Emit(Callback::Confchg {
            group: self.name.clone(),
            members: self.members(),
            left,
            joined,
        }));
        if first {
            out.extend(self.held.drain(..).map(Out::Emit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(nodeid: u32, pid: u32, reason: u32) -> CpgAddress {
        CpgAddress { nodeid, pid, reason }
    }

    fn announce(pid: u32) -> Vec<u8> {
        Header { kind: KIND_ANNOUNCE, pid }.wrap(&[])
    }

    fn confchgs(out: &[Out]) -> Vec<(Vec<CpgAddress>, Vec<CpgAddress>, Vec<CpgAddress>)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Emit(Callback::Confchg { members, left, joined, .. }) => {
                    Some((members.clone(), left.clone(), joined.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn header_round_trips_and_short_payloads_are_ignored() {
        let h = Header { kind: KIND_DATA, pid: 0x0102_0304 };
        let w = h.wrap(b"abc");
        assert_eq!(Header::parse(&w), Some((h, &b"abc"[..])));
        assert_eq!(Header::parse(&w[..4]), None);
    }

    #[test]
    fn first_member_reports_itself_at_once() {
        let mut t = GroupTracker::new("g", 1, 100, [1, 2].into());
        let out = t.on_group_view(&[(1, 1)]);
        assert_eq!(out[0], Out::Announce);
        assert_eq!(confchgs(&out), vec![(vec![addr(1, 100, 0)], vec![], vec![addr(1, 100, REASON_JOIN)])]);
    }

    #[test]
    fn joiner_waits_for_every_pid_and_holds_messages_until_its_first_confchg() {
        let mut t = GroupTracker::new("g", 3, 300, [1, 2, 3].into());
        let out = t.on_group_view(&[(1, 1), (2, 1), (3, 1)]);
        assert_eq!(out, vec![Out::Announce]);
        let data = Header { kind: KIND_DATA, pid: 100 }.wrap(b"m");
        assert!(t.on_deliver((1, 1), &data).is_empty());
        assert!(t.on_deliver((1, 1), &announce(100)).is_empty());
        let out = t.on_deliver((2, 1), &announce(200));
        assert_eq!(
            confchgs(&out),
            vec![(vec![addr(1, 100, 0), addr(2, 200, 0), addr(3, 300, 0)], vec![], vec![addr(3, 300, 1)])]
        );
        assert!(
            matches!(&out[1], Out::Emit(Callback::Deliver { nodeid: 1, pid: 100, data, .. }) if data == b"m")
        );
    }

    #[test]
    fn existing_member_reports_a_newcomer_on_its_announcement_and_reasons_on_departures() {
        let mut t = GroupTracker::new("g", 1, 100, [1, 2, 3].into());
        t.on_group_view(&[(1, 1)]);
        let out = t.on_group_view(&[(1, 1), (2, 1)]);
        assert_eq!(out, vec![Out::Announce]);
        let out = t.on_deliver((2, 1), &announce(200));
        assert_eq!(
            confchgs(&out),
            vec![(vec![addr(1, 100, 0), addr(2, 200, 0)], vec![], vec![addr(2, 200, 1)])]
        );
        t.on_group_view(&[(1, 1), (2, 1), (3, 1)]);
        t.on_deliver((3, 1), &announce(300));
        // Node 3 announces its leave: LEAVE. Node 2's node leaves the view: NODEDOWN.
        t.on_deliver((3, 1), &Header { kind: KIND_LEAVE, pid: 300 }.wrap(&[]));
        let out = t.on_group_view(&[(1, 1), (2, 1)]);
        assert_eq!(confchgs(&out)[0].1, vec![addr(3, 300, REASON_LEAVE)]);
        t.on_view([1, 3].into());
        let out = t.on_group_view(&[(1, 1)]);
        assert_eq!(
            confchgs(&out),
            vec![(vec![addr(1, 100, 0)], vec![addr(2, 200, REASON_NODEDOWN)], vec![])]
        );
    }

    #[test]
    fn own_leave_lists_this_process_as_left_and_ends_the_group() {
        let mut t = GroupTracker::new("g", 1, 100, [1, 2].into());
        t.on_group_view(&[(1, 1), (2, 1)]);
        t.on_deliver((2, 1), &announce(200));
        let out = t.on_self_left();
        assert_eq!(confchgs(&out), vec![(vec![addr(2, 200, 0)], vec![addr(1, 100, REASON_LEAVE)], vec![])]);
        assert_eq!(out.last(), Some(&Out::SelfGone));
    }

    #[test]
    fn a_member_gone_while_its_node_stays_is_procdown_and_own_leave_ends_the_group() {
        let mut t = GroupTracker::new("g", 1, 100, [1, 2].into());
        t.on_group_view(&[(1, 1), (2, 1)]);
        t.on_deliver((2, 1), &announce(200));
        let out = t.on_group_view(&[(1, 1)]);
        assert_eq!(confchgs(&out)[0].1, vec![addr(2, 200, REASON_PROCDOWN)]);
        let out = t.on_group_view(&[]);
        assert_eq!(confchgs(&out), vec![(vec![], vec![addr(1, 100, REASON_LEAVE)], vec![])]);
        assert_eq!(out.last(), Some(&Out::SelfGone));
    }
}
