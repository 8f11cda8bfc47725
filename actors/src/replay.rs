//! Replay protection: which authenticated datagrams are fresh.
//!
//! **Owns:** per sending node, the highest epoch seen and a sliding window over the counters of that
//! epoch (RFC 6479: a ring of 64-bit blocks, whole blocks cleared as the window slides, so an update
//! costs a few word writes whatever the jump). The transport asks [`ReplayGuard::check`] before it spends
//! a decryption and calls [`ReplayGuard::accept`] only after the datagram authenticated, so forged
//! datagrams can never move a window.
//!
//! A datagram is dropped, for the reason [`Replay`] names, when its epoch is below the one known for its
//! node (an earlier incarnation's traffic), or when in the known epoch its counter was already accepted
//! or lies below the window. A higher epoch (a restarted node, or one that started a new incarnation in
//! place) starts a new window: its datagrams are accepted once they authenticate, whatever their counter.
//!
//! **Epoch 0** is the epoch inquiry's (`src/inquiry.rs`, `crate::inquiry`): a starting node asks the
//! cluster for its epoch before it has one, under epoch 0, and each start's inquiry begins its counter at
//! a random value. Those datagrams are neither ordered nor windowed here (a window would refuse the next
//! start's inquiry or be reset by any replay); their bodies carry the inquiry's nonce, which makes a
//! replayed query or answer a no-op (docs/adr/0007). [`ReplayGuard::check`] returns
//! [`Freshness::Unsequenced`] for them.
//!
//! **Deliberately absent:** any IO, clock or logging (the transport counts and logs), and any memory of
//! nodes that are not configured (the transport only asks about configured peers).

use std::collections::BTreeMap;

/// Bits of the sliding window (RFC 6479's bitmap). The window accepts counters up to
/// [`WINDOW_BITS`]` - 64` below the highest accepted one: the last block is the one being cleared.
pub const WINDOW_BITS: u64 = 2048;
const BLOCKS: usize = (WINDOW_BITS / 64) as usize;
/// How far below the highest accepted counter a counter may be and still be accepted once.
pub const WINDOW_SPAN: u64 = WINDOW_BITS - 64;

/// Why a datagram is a replay (or too late to tell it from one). Each is counted apart in `/metrics`
/// (`cohort_replayed_datagrams_total{reason=...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Replay {
    /// Its epoch is below the highest epoch known for its node: an earlier incarnation's datagram.
    StaleEpoch,
    /// Its counter was already accepted in this epoch.
    Duplicate,
    /// Its counter lies below the window: it may or may not have been seen; it is not accepted.
    TooOld,
}

impl Replay {
    /// Every reason, in the order `/metrics` shows them.
    pub const ALL: [Replay; 3] = [Replay::StaleEpoch, Replay::Duplicate, Replay::TooOld];

    /// The label in `/metrics` and logs.
    pub fn label(self) -> &'static str {
        match self {
            Replay::StaleEpoch => "stale_epoch",
            Replay::Duplicate => "duplicate",
            Replay::TooOld => "too_old",
        }
    }
}

/// What [`ReplayGuard::check`] found for a datagram not (yet) dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Fresh in its node's current (or a newer) epoch: deliver it once it authenticates, then
    /// [`ReplayGuard::accept`] it.
    Fresh,
    /// An epoch-0 datagram of the epoch inquiry: not windowed (see the module docs).
    Unsequenced,
}

/// A sliding window over the counters of one epoch (RFC 6479).
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// The highest counter accepted; meaningless while `empty`.
    top: u64,
    empty: bool,
    blocks: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> ReplayWindow {
        ReplayWindow { top: 0, empty: true, blocks: [0; BLOCKS] }
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted, without changing anything.
    pub fn check(&self, counter: u64) -> Result<(), Replay> {
        if self.empty || counter > self.top {
            return Ok(());
        }
        if self.top - counter >= WINDOW_SPAN {
            return Err(Replay::TooOld);
        }
        let (block, bit) = Self::slot(counter);
        if self.blocks[block] & (1 << bit) != 0 {
            return Err(Replay::Duplicate);
        }
        Ok(())
    }

    /// Checks `counter` and, if it is accepted, records it.
    pub fn accept(&mut self, counter: u64) -> Result<(), Replay> {
        self.check(counter)?;
        if self.empty {
            self.blocks = [0; BLOCKS];
            self.top = counter;
            self.empty = false;
        } else if counter > self.top {
            // Clear the blocks the window slides over (at most all of them), RFC 6479 section 2.
            let old_block = self.top / 64;
            let new_block = counter / 64;
            let clear = (new_block - old_block).min(BLOCKS as u64);
            for i in 1..=clear {
                self.blocks[((old_block + i) % BLOCKS as u64) as usize] = 0;
            }
            self.top = counter;
        }
        let (block, bit) = Self::slot(counter);
        self.blocks[block] |= 1 << bit;
        Ok(())
    }

    fn slot(counter: u64) -> (usize, u64) {
        (((counter / 64) % BLOCKS as u64) as usize, counter % 64)
    }
}

/// One sending node's highest epoch and that epoch's window.
#[derive(Clone, Debug, Default)]
struct Peer {
    epoch: u64,
    window: ReplayWindow,
}

/// Every configured sender's replay state; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard {
    peers: BTreeMap<u32, Peer>,
}

impl ReplayGuard {
    /// Whether a datagram of `node` in `epoch` with `counter` may be fresh. Changes nothing: call it
    /// before authenticating, and [`ReplayGuard::accept`] after.
    pub fn check(&self, node: u32, epoch: u64, counter: u64) -> Result<Freshness, Replay> {
        if epoch == 0 {
            return Ok(Freshness::Unsequenced);
        }
        match self.peers.get(&node) {
            None => Ok(Freshness::Fresh),
            Some(p) if epoch < p.epoch => Err(Replay::StaleEpoch),
            Some(p) if epoch > p.epoch => Ok(Freshness::Fresh),
            Some(p) => p.window.check(counter).map(|()| Freshness::Fresh),
        }
    }

    /// Records an authenticated datagram: a higher epoch replaces the node's window, the counter is
    /// marked seen. Returns the same verdict as [`ReplayGuard::check`].
    pub fn accept(&mut self, node: u32, epoch: u64, counter: u64) -> Result<Freshness, Replay> {
        if epoch == 0 {
            return Ok(Freshness::Unsequenced);
        }
        let p = self.peers.entry(node).or_default();
        if epoch < p.epoch {
            return Err(Replay::StaleEpoch);
        }
        if epoch > p.epoch {
            *p = Peer { epoch, window: ReplayWindow::default() };
        }
        p.window.accept(counter).map(|()| Freshness::Fresh)
    }

    /// The highest epoch accepted from `node`, if any.
    pub fn epoch_of(&self, node: u32) -> Option<u64> {
        self.peers.get(&node).map(|p| p.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_counters_are_accepted_once() {
        let mut w = ReplayWindow::default();
        for c in 0..5000 {
            assert_eq!(w.accept(c), Ok(()), "counter {c}");
            assert_eq!(w.check(c), Err(Replay::Duplicate), "counter {c} again");
        }
    }

    #[test]
    fn out_of_order_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::default();
        w.accept(100).expect("first");
        w.accept(3000).expect("a jump ahead");
        // 3000 - 1100 = 1900 < WINDOW_SPAN: still inside, never seen.
        assert_eq!(w.accept(1100), Ok(()));
        assert_eq!(w.accept(1100), Err(Replay::Duplicate));
        assert_eq!(w.accept(2999), Ok(()));
        assert_eq!(w.accept(3000), Err(Replay::Duplicate));
        // Exactly at the edge: 3000 - WINDOW_SPAN is too old, one above is inside.
        assert_eq!(w.accept(3000 - WINDOW_SPAN), Err(Replay::TooOld));
        assert_eq!(w.accept(3000 - WINDOW_SPAN + 1), Ok(()));
        // Below the window: 100 was seen, 101 not; both too old now.
        assert_eq!(w.check(100), Err(Replay::TooOld));
        assert_eq!(w.check(101), Err(Replay::TooOld));
    }

    #[test]
    fn a_slide_clears_the_bits_of_the_counters_it_passes() {
        let mut w = ReplayWindow::default();
        // Counters one block apart map to the same bit after a full turn of the ring; a slide must clear
        // the old bit before the new counter is checked, or it would look like a duplicate.
        w.accept(5).expect("first");
        assert_eq!(w.accept(5 + WINDOW_BITS), Ok(()));
        assert_eq!(w.accept(5 + 2 * WINDOW_BITS + 64), Ok(()));
        assert_eq!(w.check(5 + WINDOW_BITS), Err(Replay::TooOld));
        // Reordered just behind a large jump: fresh.
        assert_eq!(w.accept(5 + 2 * WINDOW_BITS + 63), Ok(()));
        assert_eq!(w.accept(5 + 2 * WINDOW_BITS + 63), Err(Replay::Duplicate));
    }

    #[test]
    fn epochs_only_move_forward_and_a_new_epoch_starts_a_new_window() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.accept(1, 7, 500), Ok(Freshness::Fresh));
        assert_eq!(g.check(1, 7, 500), Err(Replay::Duplicate));
        // The same counter of another node is its own business.
        assert_eq!(g.accept(2, 7, 500), Ok(Freshness::Fresh));
        // A restarted node: a higher epoch, counter from 0 again.
        assert_eq!(g.check(1, 9, 0), Ok(Freshness::Fresh));
        assert_eq!(g.accept(1, 9, 0), Ok(Freshness::Fresh));
        assert_eq!(g.epoch_of(1), Some(9));
        assert_eq!(g.accept(1, 9, 0), Err(Replay::Duplicate));
        // The earlier incarnation's datagrams, fresh or not in their own epoch, are stale now.
        assert_eq!(g.check(1, 7, 501), Err(Replay::StaleEpoch));
        assert_eq!(g.accept(1, 7, 501), Err(Replay::StaleEpoch));
        assert_eq!(g.accept(1, 8, 0), Err(Replay::StaleEpoch));
        assert_eq!(g.epoch_of(1), Some(9));
    }

    #[test]
    fn check_changes_nothing_so_forgeries_cannot_move_a_window() {
        let mut g = ReplayGuard::default();
        g.accept(1, 3, 10).expect("fresh");
        // A forged datagram claiming a far higher epoch and counter passes check (it might be real),
        // but only accept, after authentication, would record it.
        assert_eq!(g.check(1, 1 << 40, u64::MAX), Ok(Freshness::Fresh));
        assert_eq!(g.epoch_of(1), Some(3));
        assert_eq!(g.accept(1, 3, 11), Ok(Freshness::Fresh));
    }

    #[test]
    fn epoch_zero_is_the_inquirys_and_is_not_windowed() {
        let mut g = ReplayGuard::default();
        g.accept(1, 4, 0).expect("fresh");
        assert_eq!(g.check(1, 0, 12345), Ok(Freshness::Unsequenced));
        assert_eq!(g.accept(1, 0, 12345), Ok(Freshness::Unsequenced));
        assert_eq!(g.accept(1, 0, 12345), Ok(Freshness::Unsequenced));
        // ... and does not disturb the node's epoch or window.
        assert_eq!(g.epoch_of(1), Some(4));
        assert_eq!(g.check(1, 4, 0), Err(Replay::Duplicate));
    }
}
