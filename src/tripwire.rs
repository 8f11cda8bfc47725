//! A tripwire over one member's own event records: the safety invariants that one member can check
//! alone, while it runs. The agent feeds every record its core emits through it and fail-stops (logs,
//! exits non-zero) on the first one broken, so a bug never goes on to act on a corrupted history.
//!
//! What one member can see of the guarantees (the whole-cluster checks are [`crate::checker`]'s):
//! - G12: every record carries this member's node and epoch (an epoch is never reused by one run);
//! - G2: the views it installs have strictly increasing ids;
//! - G5: within a view, its deliveries have strictly increasing positions of the total order, and a
//!   message id is delivered at most once (checked over this member's last [`RECENT`] deliveries,
//!   across views, which covers where a resent message could show up again: the tail of the previous
//!   view. The memory is bounded by that window, not by how long a view lives: a view can last months,
//!   and a set of every id delivered in it grew without bound);
//! - G7: it delivers application messages only in a primary view.

use crate::record::{Event, Record};
use crate::types::{Member, ViewId};
use std::collections::{BTreeSet, VecDeque};

/// How many of this member's latest deliveries the tripwire remembers to catch a message delivered
/// twice (the whole-cluster checker, `cohort verify`, checks every delivery of a log).
pub const RECENT: usize = 16 * 1024;

/// The tripwire's state: a few values per view and a bounded window of recent message ids.
#[derive(Clone, Debug)]
pub struct Tripwire {
    me: Member,
    view: Option<(ViewId, bool)>,
    last_seq: u64,
    /// The last [`RECENT`] delivered ids, oldest first, and the same as a set.
    recent: VecDeque<String>,
    recent_set: BTreeSet<String>,
}

impl Tripwire {
    /// A tripwire for member `me`.
    pub fn new(me: Member) -> Tripwire {
        Tripwire { me, view: None, last_seq: 0, recent: VecDeque::new(), recent_set: BTreeSet::new() }
    }

    /// Observes the next record this member emitted; `Some(description)` when it breaks an invariant.
    pub fn observe(&mut self, r: &Record) -> Option<String> {
        if r.member() != self.me {
            return Some(format!("G12: a record of {} was written by member {}", r.member(), self.me));
        }
        match &r.event {
            Event::View { view, primary, .. } => {
                if let Some((old, _)) = self.view {
                    if *view <= old {
                        return Some(format!("G2: view {view} installed after view {old}"));
                    }
                }
                self.view = Some((*view, *primary));
                self.last_seq = 0;
                None
            }
            Event::Deliver { msg, view, seq, .. } => {
                let Some((current, primary)) = self.view else {
                    return Some(format!("G7: message {msg} delivered before any view was installed"));
                };
                if *view != current {
                    return Some(format!(
                        "G5: message {msg} delivered in view {view} while in view {current}"
                    ));
                }
                if !primary {
                    return Some(format!("G7: message {msg} delivered in non-primary view {view}"));
                }
                if let Some(s) = seq {
                    if *s <= self.last_seq {
                        return Some(format!(
                            "G5: message {msg} delivered at position {s} of view {view} after position {}",
                            self.last_seq
                        ));
                    }
                    self.last_seq = *s;
                }
                if !self.recent_set.insert(msg.clone()) {
                    return Some(format!("G5: message {msg} delivered twice"));
                }
                self.recent.push_back(msg.clone());
                if self.recent.len() > RECENT {
                    if let Some(old) = self.recent.pop_front() {
                        self.recent_set.remove(&old);
                    }
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Delivery, Epoch, NodeId};

    const ME: Member = Member(NodeId(1), Epoch(2));

    fn rec(event: Event) -> Record {
        Record { ts_ms: 1, node: ME.node(), epoch: ME.epoch(), event }
    }

    fn view(seq: u64, primary: bool) -> Record {
        rec(Event::View {
            view: ViewId { seq, coord: NodeId(1) },
            members: vec![ME],
            primary,
            joined: vec![],
            left: vec![],
            failed: vec![],
            prev: None,
        })
    }

    fn deliver(msg: &str, seq_view: u64, seq: u64) -> Record {
        rec(Event::Deliver {
            group: "g".into(),
            msg: msg.into(),
            sender: ME,
            view: ViewId { seq: seq_view, coord: NodeId(1) },
            digest: "d".into(),
            seq: Some(seq),
            delivery: Some(Delivery::Agreed),
            held: false,
        })
    }

    fn run(records: &[Record]) -> Option<String> {
        let mut t = Tripwire::new(ME);
        records.iter().find_map(|r| t.observe(r))
    }

    #[test]
    fn a_correct_history_passes() {
        let h = [
            view(1, true),
            deliver("1.2.1", 1, 1),
            deliver("1.2.2", 1, 2),
            view(2, true),
            deliver("1.2.3", 2, 1),
        ];
        assert_eq!(run(&h), None);
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let cases: Vec<(Vec<Record>, &str)> = vec![
            (vec![view(2, true), view(2, true)], "G2"),
            (vec![view(2, true), view(1, true)], "G2"),
            (vec![view(1, true), deliver("a", 1, 2), deliver("b", 1, 2)], "G5"),
            (vec![view(1, true), deliver("a", 1, 1), view(2, true), deliver("a", 2, 1)], "G5"),
            (vec![view(1, true), deliver("a", 2, 1)], "G5"),
            (vec![view(1, false), deliver("a", 1, 1)], "G7"),
            (vec![deliver("a", 1, 1)], "G7"),
            (vec![Record { ts_ms: 1, node: NodeId(2), epoch: Epoch(2), event: Event::Unblocked {} }], "G12"),
        ];
        for (h, g) in cases {
            let v = run(&h).unwrap_or_else(|| panic!("no violation found for {g} in {h:?}"));
            assert!(v.starts_with(g), "{v} should name {g}");
        }
    }

    #[test]
    fn memory_stays_bounded_in_a_long_view_and_recent_duplicates_are_still_caught() {
        let mut t = Tripwire::new(ME);
        assert_eq!(t.observe(&view(1, true)), None);
        let n = (RECENT * 3) as u64;
        for i in 1..=n {
            assert_eq!(t.observe(&deliver(&format!("1.2.{i}"), 1, i)), None);
        }
        assert_eq!(t.recent.len(), RECENT, "the window holds the last RECENT ids, no more");
        assert_eq!(t.recent_set.len(), RECENT);
        // A duplicate of a recent delivery, in the next view (a resent message showing up again).
        assert_eq!(t.observe(&view(2, true)), None);
        let again = t.observe(&deliver(&format!("1.2.{n}"), 2, 1)).expect("a recent duplicate is caught");
        assert!(again.starts_with("G5"), "{again}");
    }
}
