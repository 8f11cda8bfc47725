//! The agent's epoch inquiry: before it persists the epoch of a new incarnation, the agent asks the
//! cluster which epochs of its node were seen ([`cohort::inquiry::EpochInquiry`], the sans-IO machine),
//! so that a wiped data directory or one restored from an older backup never brings back an epoch that
//! already appears in somebody's event log (G12).
//!
//! It runs once, at start, before the transport exists: it binds the node's own configured address
//! (peers know the node by it), seals and opens datagrams with the cluster key exactly as the
//! transport does, and closes the socket when the machine decides: once a majority of the cluster
//! answered and then recorded the epoch it claims (two round trips when the others run). An empty data
//! directory does not speak for itself: it needs a majority of the other nodes, except at a cluster's
//! very first start (itself and answers from nodes that never ran either, after twice the larger of
//! the discovery interval and the failure timeout). It says what it waits for in its log every ten
//! seconds. Claims of other nodes it grants meanwhile are persisted before the answer goes out.
//!
//! Its datagrams are sealed under epoch 0 (there is no incarnation yet) with a counter that starts at a
//! random 63-bit value, so two inquiries of one node do not share nonces (docs/adr/0007). Receivers do
//! not window epoch-0 datagrams; a replayed query or answer is harmless because each carries this
//! inquiry's nonce, and a replayed claim only asks again for what is already on disk. Answers are
//! taken only from the configured address of the node their header names.
//!
//! A running agent whose core asks for a new epoch claims it the same way through its transport
//! (`MembershipActor`).

use crate::crypto::KeyRing;
use crate::epoch_registry::EpochRegistryActor;
use crate::messages::PersistDurable;
use actix::Addr;
use anyhow::Context as _;
use cohort::inquiry::EpochInquiry;
use cohort::{Config, Durable, Epoch, NodeId, Output};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::time::{Duration, Instant};

/// What the inquiry learned.
#[derive(Debug, Clone)]
pub struct InquiryOutcome {
    /// The lowest epoch the new incarnation may use.
    pub min_epoch: Epoch,
    /// Per answering node, the highest epoch it knew for this node.
    pub answers: BTreeMap<NodeId, Epoch>,
    /// The view sequence number the new incarnation starts above (see
    /// [`EpochInquiry::view_seq_floor`]).
    pub view_seq_floor: u64,
    /// An answer knew an epoch of this node above its data directory's (wiped or restored).
    pub behind: bool,
    /// The data directory lost what an incarnation learned (an epoch of this node seen in use above it,
    /// or restored from a backup by the operator's word): the incarnation starts catching up
    /// ([`Durable::catching_up`]).
    pub forgot: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// Asks the cluster for this node's epochs. `bind` is the node's configured address, `peers` every
/// node's; `disk` the data directory's durable state as it is; `restored` the operator's word that it was
/// restored from a backup (docs/OPERATIONS.md).
#[allow(clippy::too_many_arguments)]
pub async fn ask_epoch(
    cfg: Arc<Config>,
    node: NodeId,
    disk: Durable,
    restored: bool,
    bind: SocketAddr,
    peers: &BTreeMap<NodeId, SocketAddr>,
    ring: &KeyRing,
    registry: &Addr<EpochRegistryActor>,
) -> anyhow::Result<InquiryOutcome> {
    let socket = UdpSocket::bind(bind)
        .await
        .with_context(|| format!("cannot bind {bind} to ask the cluster for this node's epoch"))?;
    let by_addr: HashMap<SocketAddr, NodeId> = peers.iter().map(|(&n, &a)| (canonical(a), n)).collect();
    let start = Instant::now();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
    // The nonce only tells this inquiry's answers from an earlier one's.
    let nonce = (wall as u64) | 1;
    let now_ms = |t: Instant| t.duration_since(start).as_millis() as u64;
    let mut counter = {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b)
            .map_err(|e| anyhow::anyhow!("cannot draw the inquiry's first datagram counter: {e}"))?;
        u64::from_le_bytes(b) >> 1
    };
    let mut sealed = Vec::new();
    let mut q = EpochInquiry::new(cfg, node, disk, nonce, 0);
    if restored {
        q = q.after_restore();
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut decided = q.tick(0, &mut out);
    let mut next_note = Duration::from_secs(5);
    loop {
        for o in out.drain(..) {
            match o {
                Output::Send { to, bytes } => {
                    let Some(addr) = peers.get(&to) else { continue };
                    // Each counter is used once: 2^63 of them lie above any start.
                    counter += 1;
                    if ring.seal_into(node.0, to.0, 0, counter, &bytes, &mut sealed).is_err() {
                        continue;
                    }
                    // A peer that is down answers with ICMP at worst; the machine asks again.
                    let _ = socket.send_to(&sealed, addr).await;
                }
                // Another node's claim this one granted: on disk before the grant goes out.
                Output::Persist(d) => registry
                    .send(PersistDurable(d))
                    .await
                    .context("epoch registry stopped")?
                    .context("cannot record another node's epoch claim in the data directory")?,
                _ => {}
            }
        }
        if let Some(min_epoch) = decided {
            return Ok(InquiryOutcome {
                min_epoch,
                answers: q.answers().clone(),
                view_seq_floor: q.view_seq_floor(),
                behind: q.behind(),
                forgot: q.forgot(),
                elapsed: start.elapsed(),
            });
        }
        if start.elapsed() >= next_note {
            // It waits for a majority however long it takes: say so.
            tracing::warn!(
                waited_s = start.elapsed().as_secs(),
                "waiting for {} before this node may pick its epoch",
                q.waiting_for()
            );
            next_note += Duration::from_secs(10);
        }
        let wake = start + Duration::from_millis(q.next_wakeup_ms());
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((len, src)) = r else { continue };
                let Some(&from) = by_addr.get(&canonical(src)) else { continue };
                let Ok((header, plain)) = ring.open(&buf[..len], node.0) else { continue };
                if header.node != from.0 {
                    continue;
                }
                decided = q.receive(now_ms(Instant::now()), &plain, &mut out);
            }
            _ = tokio::time::sleep_until(wake) => {
                decided = q.tick(now_ms(Instant::now()), &mut out);
            }
        }
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
