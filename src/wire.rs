//! The wire format: the versioned envelope every packet carries, and the framing that splits a packet
//! into datagrams and puts it back together on the other side.
//!
//! A *packet* is one [`Envelope`] (wire version, cluster name, sending member, body) encoded with
//! rmp-serde in its compact array form. A *datagram* is what the transport sends; each one starts with a
//! three-byte frame header:
//!
//! ```text
//! 0xC7  WIRE_VERSION  kind
//! kind 0 (whole):    the packet
//! kind 1 (fragment): packet id (u64 LE), index (u16 LE), count (u16 LE), total length (u32 LE), bytes
//! ```
//!
//! A packet that fits in one datagram goes as kind 0; a bigger one is cut into fragments of at most
//! `max_datagram_bytes` each, and the receiver reassembles them by (peer, packet id).
//!
//! **What it deliberately does not do:** no sockets and no clock (time is the `now_ms` argument); no
//! authentication or encryption (the transport authenticates a datagram before it reaches the core); no
//! retransmission of lost fragments (a packet with a missing fragment is dropped when it times out or is
//! evicted, and the protocol above resends what it still needs). Nothing here trusts the bytes it is given:
//! every length is checked before it is used, and no input makes it panic or grow without bound.
//!
//! Entry points: sending is [`encode`] then [`Fragmenter::frame`]; receiving is [`Reassembler::accept`]
//! then [`decode`].

use crate::types::{Member, NodeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// The wire version written in every datagram header and every envelope.
pub const WIRE_VERSION: u8 = 1;

/// The first byte of every datagram. It lets a receiver drop stray traffic cheaply.
pub const MAGIC: u8 = 0xC7;

/// Bytes of the frame header every datagram starts with: magic, version, kind.
pub const FRAME_HEADER_BYTES: usize = 3;

/// Bytes in front of the data of a fragment: the frame header plus packet id, index, count and total length.
pub const FRAGMENT_HEADER_BYTES: usize = FRAME_HEADER_BYTES + 8 + 2 + 2 + 4;

/// The most fragments one packet can be cut into (the count is a `u16`).
pub const MAX_FRAGMENTS: usize = u16::MAX as usize;

/// Datagram kind: the rest of the datagram is the whole packet.
const KIND_WHOLE: u8 = 0;

/// Datagram kind: the rest of the datagram is a fragment header and one fragment of a packet.
const KIND_FRAGMENT: u8 = 1;

/// What the reassembler charges for keeping one fragment, on top of its bytes. Without it, a flood of
/// one-byte fragments would hold far more memory than [`Reassembler::partial_bytes`] admits.
const FRAGMENT_BOOKKEEPING_BYTES: usize = 48;

/// A packet on the wire: who sent it, in which cluster, under which wire version, and the body.
///
/// The body type is a parameter so that the protocol's message enum plugs in without this module
/// knowing it; any `B: Serialize + DeserializeOwned` works.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    /// The wire version of the sender; [`decode`] accepts only [`WIRE_VERSION`].
    pub version: u8,
    /// The sender's cluster name; [`decode`] rejects any other cluster's packets.
    pub cluster: String,
    /// The sending member (node and epoch).
    pub from: Member,
    /// The protocol message.
    pub body: B,
}

impl<B> Envelope<B> {
    /// An envelope of the current [`WIRE_VERSION`].
    pub fn new(cluster: &str, from: Member, body: B) -> Self {
        Envelope { version: WIRE_VERSION, cluster: cluster.to_string(), from, body }
    }
}

/// Why bytes were refused or could not be produced.
///
/// Every variant except [`WireError::Encode`] is the sender's fault (or corruption on the way), and none
/// of them changes the receiver's state, with one exception documented on [`Reassembler::accept`].
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum WireError {
    /// A packet is bigger than the receiver accepts; it was refused before decoding or buffering.
    #[error("packet of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The packet's length, as received or as declared by its fragments.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The datagram does not start with [`MAGIC`]: it is not cohort traffic.
    #[error("bad magic byte")]
    BadMagic,
    /// The datagram or envelope carries a wire version this build does not speak.
    #[error("unsupported wire version {0}, this node speaks {WIRE_VERSION}")]
    BadVersion(u8),
    /// The envelope belongs to another cluster (the name it carries is given).
    #[error("packet of another cluster {0:?}")]
    WrongCluster(String),
    /// The datagram ends inside its header.
    #[error("datagram truncated")]
    Truncated,
    /// The datagram kind byte is neither whole packet nor fragment.
    #[error("unknown datagram kind {0}")]
    BadKind(u8),
    /// A fragment header contradicts itself or the earlier fragments of its packet.
    #[error("bad fragment: {0}")]
    BadFragment(&'static str),
    /// The packet is not a valid envelope of the expected body type.
    #[error("cannot decode packet: {0}")]
    Decode(String),
    /// The envelope could not be encoded (a body whose `Serialize` fails); the local node's fault.
    #[error("cannot encode packet: {0}")]
    Encode(String),
}

/// Encodes an envelope into a packet (rmp-serde, compact array form: fields by position, not by name).
pub fn encode<B: Serialize>(env: &Envelope<B>) -> Result<Vec<u8>, WireError> {
    rmp_serde::to_vec(env).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a packet into an envelope and checks that it is meant for this node.
///
/// The size is checked before any decoding, so an oversized packet costs nothing. After decoding, the
/// envelope's version must be [`WIRE_VERSION`] and its cluster must be `cluster`. Trailing bytes after
/// the envelope are refused too: a packet is exactly one envelope.
pub fn decode<B: DeserializeOwned>(
    packet: &[u8],
    max_packet_bytes: usize,
    cluster: &str,
) -> Result<Envelope<B>, WireError> {
    if packet.len() > max_packet_bytes {
        return Err(WireError::TooLarge { len: packet.len(), max: max_packet_bytes });
    }
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(packet));
    let env = Envelope::<B>::deserialize(&mut de).map_err(|e| WireError::Decode(e.to_string()))?;
    let trailing = (packet.len() as u64).saturating_sub(de.position());
    if trailing != 0 {
        return Err(WireError::Decode(format!("{trailing} trailing bytes after the envelope")));
    }
    if env.version != WIRE_VERSION {
        return Err(WireError::BadVersion(env.version));
    }
    if env.cluster != cluster {
        return Err(WireError::WrongCluster(env.cluster));
    }
    Ok(env)
}

/// The fixed part of a fragment after the frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FragmentHeader {
    packet_id: u64,
    index: u16,
    count: u16,
    total_len: u32,
}

impl FragmentHeader {
    /// Splits a fragment (the datagram after the frame header) into its header and its bytes.
    fn parse(bytes: &[u8]) -> Result<(FragmentHeader, &[u8]), WireError> {
        let (packet_id, rest) = bytes.split_first_chunk::<8>().ok_or(WireError::Truncated)?;
        let (index, rest) = rest.split_first_chunk::<2>().ok_or(WireError::Truncated)?;
        let (count, rest) = rest.split_first_chunk::<2>().ok_or(WireError::Truncated)?;
        let (total_len, data) = rest.split_first_chunk::<4>().ok_or(WireError::Truncated)?;
        let header = FragmentHeader {
            packet_id: u64::from_le_bytes(*packet_id),
            index: u16::from_le_bytes(*index),
            count: u16::from_le_bytes(*count),
            total_len: u32::from_le_bytes(*total_len),
        };
        Ok((header, data))
    }

    /// A whole fragment datagram: frame header, this header, then `data`.
    fn datagram(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAGMENT_HEADER_BYTES + data.len());
        out.extend_from_slice(&[MAGIC, WIRE_VERSION, KIND_FRAGMENT]);
        out.extend_from_slice(&self.packet_id.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.total_len.to_le_bytes());
        out.extend_from_slice(data);
        out
    }
}

/// Splits a datagram into its kind and the bytes after the frame header.
fn split_frame(datagram: &[u8]) -> Result<(u8, &[u8]), WireError> {
    match datagram {
        [] => Err(WireError::Truncated),
        [magic, ..] if *magic != MAGIC => Err(WireError::BadMagic),
        [_] => Err(WireError::Truncated),
        [_, version, ..] if *version != WIRE_VERSION => Err(WireError::BadVersion(*version)),
        [_, _] => Err(WireError::Truncated),
        [_, _, kind, rest @ ..] => Ok((*kind, rest)),
    }
}

/// Cuts packets into datagrams, numbering the fragmented ones.
///
/// Packet ids only need to be unique per sender among the packets a receiver may still be reassembling.
/// Seed it differently for every incarnation (the epoch is a good seed) so that fragments of a previous
/// incarnation cannot be mixed into a new packet with the same id.
#[derive(Clone, Debug)]
pub struct Fragmenter {
    next_packet_id: u64,
}

impl Fragmenter {
    /// A fragmenter whose first fragmented packet gets id `seed`.
    pub fn new(seed: u64) -> Self {
        Fragmenter { next_packet_id: seed }
    }

    /// The largest packet [`Fragmenter::frame`] can send with datagrams of `max_datagram_bytes`.
    pub fn max_packet_bytes(max_datagram_bytes: usize) -> usize {
        let per_fragment = max_datagram_bytes.saturating_sub(FRAGMENT_HEADER_BYTES);
        if per_fragment == 0 {
            return max_datagram_bytes.saturating_sub(FRAME_HEADER_BYTES);
        }
        per_fragment.saturating_mul(MAX_FRAGMENTS).min(u32::MAX as usize)
    }

    /// Cuts `packet` into datagrams of at most `max_datagram_bytes` each.
    ///
    /// Returns one whole-packet datagram when `3 + packet.len() <= max_datagram_bytes`, otherwise the
    /// fragments in index order under a fresh packet id. Returns no datagram at all when the packet
    /// cannot be sent with that datagram size (it is larger than [`Fragmenter::max_packet_bytes`]);
    /// callers that must know check that bound first.
    pub fn frame(&mut self, packet: &[u8], max_datagram_bytes: usize) -> Vec<Vec<u8>> {
        if FRAME_HEADER_BYTES.checked_add(packet.len()).is_some_and(|n| n <= max_datagram_bytes) {
            let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + packet.len());
            out.extend_from_slice(&[MAGIC, WIRE_VERSION, KIND_WHOLE]);
            out.extend_from_slice(packet);
            return vec![out];
        }
        let per_fragment = max_datagram_bytes.saturating_sub(FRAGMENT_HEADER_BYTES);
        if per_fragment == 0 {
            return Vec::new();
        }
        let Ok(total_len) = u32::try_from(packet.len()) else {
            return Vec::new();
        };
        let Ok(count) = u16::try_from(packet.len().div_ceil(per_fragment)) else {
            return Vec::new();
        };
        let packet_id = self.next_packet_id;
        self.next_packet_id = packet_id.wrapping_add(1);
        (0..count)
            .zip(packet.chunks(per_fragment))
            .map(|(index, data)| FragmentHeader { packet_id, index, count, total_len }.datagram(data))
            .collect()
    }
}

/// One packet being reassembled.
#[derive(Debug)]
struct Partial {
    /// Position in the reassembler's arrival order (smaller is older).
    arrival: u64,
    /// When its first fragment arrived.
    started_ms: u64,
    /// Fragment count every fragment of the packet must declare.
    count: u16,
    /// Total length every fragment of the packet must declare.
    total_len: u32,
    /// The fragments received so far, by index.
    fragments: BTreeMap<u16, Vec<u8>>,
    /// Sum of the fragments' lengths.
    data_bytes: usize,
    /// What this partial counts towards [`Reassembler::partial_bytes`].
    charged_bytes: usize,
}

/// Puts fragmented packets back together, within fixed memory bounds.
///
/// Partial packets are keyed by (peer, packet id). Memory is bounded three ways: at most
/// `max_partial_per_peer` partial packets per peer, at most `max_total_bytes` held over all peers, and
/// no partial packet lives longer than `partial_timeout_ms`. When a limit is hit the oldest partial
/// packet goes first, because it is the one least likely to still complete.
#[derive(Debug)]
pub struct Reassembler {
    max_packet_bytes: usize,
    max_partial_per_peer: usize,
    max_total_bytes: usize,
    partial_timeout_ms: u64,
    /// The latest `now_ms` seen. It never goes back, so arrival order is also age order.
    clock_ms: u64,
    /// The arrival number the next new partial gets.
    next_arrival: u64,
    partials: BTreeMap<(NodeId, u64), Partial>,
    /// Partial keys by arrival number: the first entry is the oldest partial.
    by_arrival: BTreeMap<u64, (NodeId, u64)>,
    /// Number of partial packets per peer.
    per_peer: BTreeMap<NodeId, usize>,
    /// Sum of the partials' charged bytes.
    held_bytes: usize,
}

impl Reassembler {
    /// A reassembler that accepts packets of up to `max_packet_bytes`, keeps at most
    /// `max_partial_per_peer` partial packets per peer and `max_total_bytes` in all (see
    /// [`Reassembler::partial_bytes`]), and drops partial packets older than `partial_timeout_ms`.
    ///
    /// A `max_partial_per_peer` of 0 refuses every packet that needs more than one fragment.
    pub fn new(
        max_packet_bytes: usize,
        max_partial_per_peer: usize,
        max_total_bytes: usize,
        partial_timeout_ms: u64,
    ) -> Self {
        Reassembler {
            max_packet_bytes,
            max_partial_per_peer,
            max_total_bytes,
            partial_timeout_ms,
            clock_ms: 0,
            next_arrival: 0,
            partials: BTreeMap::new(),
            by_arrival: BTreeMap::new(),
            per_peer: BTreeMap::new(),
            held_bytes: 0,
        }
    }

    /// Takes one datagram from `peer` and returns the packet it completes, if any.
    ///
    /// First drops the partial packets that have been waiting longer than the timeout. Then a whole-packet
    /// datagram is returned at once; a fragment is stored, and when it is the last missing one of its
    /// packet, the packet is returned. A duplicate fragment returns `Ok(None)` and changes nothing.
    ///
    /// An error leaves the reassembler as it was (apart from the expiry above), with one exception: when
    /// all fragments of a packet are in but add up to less than the declared total, the packet can never
    /// complete, so it is dropped and [`WireError::BadFragment`] is returned.
    ///
    /// A fragment is refused when its count is zero (a count above 65535 cannot be written), its index is
    /// not below the count, it is empty, its count or total length disagrees with earlier fragments of the
    /// same packet, its total length is above `max_packet_bytes` or could never fit in `max_total_bytes`,
    /// or its bytes would overflow the declared total.
    pub fn accept(
        &mut self,
        now_ms: u64,
        peer: NodeId,
        datagram: &[u8],
    ) -> Result<Option<Vec<u8>>, WireError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.expire();
        match split_frame(datagram)? {
            (KIND_WHOLE, packet) => {
                if packet.len() > self.max_packet_bytes {
                    return Err(WireError::TooLarge { len: packet.len(), max: self.max_packet_bytes });
                }
                Ok(Some(packet.to_vec()))
            }
            (KIND_FRAGMENT, rest) => {
                let (header, data) = FragmentHeader::parse(rest)?;
                self.accept_fragment(peer, header, data)
            }
            (kind, _) => Err(WireError::BadKind(kind)),
        }
    }

    /// Bytes held by partial packets: their fragments' bytes plus a fixed bookkeeping charge per fragment,
    /// so that many tiny fragments cannot hold more memory than this says. Never above `max_total_bytes`.
    pub fn partial_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The number of partial packets held, over all peers.
    pub fn partial_packets(&self) -> usize {
        self.partials.len()
    }

    fn accept_fragment(
        &mut self,
        peer: NodeId,
        header: FragmentHeader,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, WireError> {
        if header.count == 0 {
            return Err(WireError::BadFragment("fragment count is zero"));
        }
        if header.index >= header.count {
            return Err(WireError::BadFragment("fragment index is not below the fragment count"));
        }
        let total = usize::try_from(header.total_len).unwrap_or(usize::MAX);
        if total > self.max_packet_bytes {
            return Err(WireError::TooLarge { len: total, max: self.max_packet_bytes });
        }
        if data.is_empty() {
            return Err(WireError::BadFragment("empty fragment"));
        }
        if data.len() > total {
            return Err(WireError::BadFragment("fragments overflow the declared total"));
        }
        let count = usize::from(header.count);
        if count > total {
            return Err(WireError::BadFragment("more fragments than packet bytes"));
        }
        if count == 1 {
            // A packet in one fragment completes at once and is never buffered.
            if data.len() != total {
                return Err(WireError::BadFragment("fragments fall short of the declared total"));
            }
            return Ok(Some(data.to_vec()));
        }
        // The whole packet, with its bookkeeping, must fit in the buffer, or it could never complete.
        let room = self.max_total_bytes.saturating_sub(count.saturating_mul(FRAGMENT_BOOKKEEPING_BYTES));
        if total > room {
            return Err(WireError::TooLarge { len: total, max: room });
        }

        let key = (peer, header.packet_id);
        match self.partials.get(&key) {
            Some(p) => {
                if p.count != header.count || p.total_len != header.total_len {
                    return Err(WireError::BadFragment(
                        "fragment count or total length disagrees with earlier fragments",
                    ));
                }
                if p.fragments.contains_key(&header.index) {
                    return Ok(None);
                }
                if p.data_bytes.saturating_add(data.len()) > total {
                    return Err(WireError::BadFragment("fragments overflow the declared total"));
                }
            }
            None => {
                if self.max_partial_per_peer == 0 {
                    return Ok(None);
                }
                while self.per_peer.get(&peer).copied().unwrap_or(0) >= self.max_partial_per_peer {
                    match self.oldest_of_peer(peer) {
                        Some(old) => self.remove(old),
                        None => break,
                    }
                }
                let arrival = self.next_arrival;
                self.next_arrival = arrival.wrapping_add(1);
                self.partials.insert(
                    key,
                    Partial {
                        arrival,
                        started_ms: self.clock_ms,
                        count: header.count,
                        total_len: header.total_len,
                        fragments: BTreeMap::new(),
                        data_bytes: 0,
                        charged_bytes: 0,
                    },
                );
                self.by_arrival.insert(arrival, key);
                *self.per_peer.entry(peer).or_insert(0) += 1;
            }
        }

        let charge = data.len().saturating_add(FRAGMENT_BOOKKEEPING_BYTES);
        while self.held_bytes.saturating_add(charge) > self.max_total_bytes {
            match self.by_arrival.values().find(|k| **k != key).copied() {
                Some(old) => self.remove(old),
                None => break,
            }
        }
        if self.held_bytes.saturating_add(charge) > self.max_total_bytes {
            // Unreachable given the room check above; kept so that the bound holds even if that changes.
            self.remove(key);
            return Ok(None);
        }
        let Some(p) = self.partials.get_mut(&key) else {
            return Ok(None);
        };
        p.fragments.insert(header.index, data.to_vec());
        p.data_bytes = p.data_bytes.saturating_add(data.len());
        p.charged_bytes = p.charged_bytes.saturating_add(charge);
        self.held_bytes = self.held_bytes.saturating_add(charge);
        if p.fragments.len() < count {
            return Ok(None);
        }

        let complete = p.data_bytes == total;
        let fragments = std::mem::take(&mut p.fragments);
        self.remove(key);
        if !complete {
            return Err(WireError::BadFragment("fragments fall short of the declared total"));
        }
        let mut packet = Vec::with_capacity(total);
        for fragment in fragments.into_values() {
            packet.extend_from_slice(&fragment);
        }
        Ok(Some(packet))
    }

    /// Drops the partial packets that have waited longer than the timeout, oldest first.
    fn expire(&mut self) {
        while let Some((&arrival, &key)) = self.by_arrival.first_key_value() {
            match self.partials.get(&key) {
                Some(p) if self.clock_ms.saturating_sub(p.started_ms) > self.partial_timeout_ms => {
                    self.remove(key)
                }
                Some(_) => break,
                None => {
                    self.by_arrival.remove(&arrival);
                }
            }
        }
    }

    /// The key of `peer`'s oldest partial packet.
    fn oldest_of_peer(&self, peer: NodeId) -> Option<(NodeId, u64)> {
        self.partials.range((peer, 0)..=(peer, u64::MAX)).min_by_key(|(_, p)| p.arrival).map(|(key, _)| *key)
    }

    /// Forgets one partial packet and everything counted for it.
    fn remove(&mut self, key: (NodeId, u64)) {
        let Some(p) = self.partials.remove(&key) else {
            return;
        };
        self.by_arrival.remove(&p.arrival);
        self.held_bytes = self.held_bytes.saturating_sub(p.charged_bytes);
        if let Some(n) = self.per_peer.get_mut(&key.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&key.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Epoch;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum TestBody {
        Data(Vec<u8>),
        Join { view_seq: u64, reason: String, members: Vec<Member> },
    }

    const CLUSTER: &str = "alpha";
    const MIB: usize = 1 << 20;

    fn member(node: u32, epoch: u64) -> Member {
        Member(NodeId(node), Epoch(epoch))
    }

    fn data_envelope(payload: Vec<u8>) -> Envelope<TestBody> {
        Envelope::new(CLUSTER, member(1, 7), TestBody::Data(payload))
    }

    /// A deterministic Fisher-Yates shuffle driven by xorshift64, so a failing case replays exactly.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut state = seed | 1;
        for i in (1..items.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = (state % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    fn patterned(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn fragment(packet_id: u64, index: u16, count: u16, total_len: u32, data: &[u8]) -> Vec<u8> {
        FragmentHeader { packet_id, index, count, total_len }.datagram(data)
    }

    /// Feeds datagrams in order and returns every packet that completed.
    fn feed(r: &mut Reassembler, peer: NodeId, datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
        datagrams.iter().filter_map(|d| r.accept(0, peer, d).expect("valid datagram accepted")).collect()
    }

    #[test]
    fn envelope_round_trips_with_payload_and_struct_bodies() {
        let bodies = [
            TestBody::Data(vec![]),
            TestBody::Data(patterned(1000, 3)),
            TestBody::Join {
                view_seq: 42,
                reason: "merge".into(),
                members: vec![member(1, 7), member(2, 9)],
            },
        ];
        for body in bodies {
            let env = Envelope::new(CLUSTER, member(3, 1), body);
            let bytes = encode(&env).expect("encodes");
            let back: Envelope<TestBody> = decode(&bytes, MIB, CLUSTER).expect("decodes");
            assert_eq!(back, env);
        }
    }

    #[test]
    fn envelope_uses_the_compact_array_form() {
        let bytes = encode(&data_envelope(vec![])).expect("encodes");
        // A fixarray of four fields, then the version as a positive fixint: no field names on the wire.
        assert_eq!(bytes.first(), Some(&0x94));
        assert_eq!(bytes.get(1), Some(&WIRE_VERSION));
    }

    #[test]
    fn small_packet_is_one_whole_datagram() {
        let packet = patterned(100, 1);
        let datagrams = Fragmenter::new(0).frame(&packet, 103);
        assert_eq!(datagrams.len(), 1);
        assert_eq!(datagrams[0][..3], [MAGIC, WIRE_VERSION, 0]);
        assert_eq!(datagrams[0][3..], packet[..]);
        let mut r = Reassembler::new(MIB, 4, 4 * MIB, 1000);
        assert_eq!(r.accept(0, NodeId(1), &datagrams[0]), Ok(Some(packet)));
    }

    #[test]
    fn packet_one_byte_over_is_fragmented_within_the_datagram_limit() {
        let packet = patterned(101, 1);
        let datagrams = Fragmenter::new(0).frame(&packet, 103);
        assert_eq!(datagrams.len(), 2);
        assert!(datagrams.iter().all(|d| d.len() <= 103 && d[2] == 1));
    }

    #[test]
    fn fragmented_packets_get_consecutive_ids_from_the_seed() {
        let mut f = Fragmenter::new(u64::MAX);
        let first = f.frame(&[0; 100], 64);
        let second = f.frame(&[0; 100], 64);
        let id = |d: &[Vec<u8>]| FragmentHeader::parse(&d[0][3..]).expect("header").0.packet_id;
        assert_eq!(id(&first), u64::MAX);
        assert_eq!(id(&second), 0);
    }

    #[test]
    fn frame_sends_nothing_when_the_packet_cannot_be_framed() {
        let mut f = Fragmenter::new(0);
        assert!(f.frame(&[0; FRAGMENT_HEADER_BYTES - 2], FRAGMENT_HEADER_BYTES).is_empty());
        assert!(f.frame(&[], 2).is_empty());
        let max = Fragmenter::max_packet_bytes(FRAGMENT_HEADER_BYTES + 1);
        assert_eq!(max, MAX_FRAGMENTS);
        assert!(f.frame(&vec![0; max + 1], FRAGMENT_HEADER_BYTES + 1).is_empty());
        assert_eq!(f.frame(&vec![0; max], FRAGMENT_HEADER_BYTES + 1).len(), MAX_FRAGMENTS);
    }

    #[test]
    fn one_mib_packet_reassembles_in_reverse_and_shuffled_order_with_duplicates() {
        let env = data_envelope(patterned(MIB, 9));
        let packet = encode(&env).expect("encodes");
        let datagrams = Fragmenter::new(5).frame(&packet, 60_000);
        assert!(datagrams.len() > 1);
        assert!(datagrams.iter().all(|d| d.len() <= 60_000));

        let mut reversed = datagrams.clone();
        reversed.reverse();
        let mut shuffled_with_duplicates: Vec<Vec<u8>> =
            datagrams.iter().chain(&datagrams).cloned().collect();
        shuffle(&mut shuffled_with_duplicates, 0x5eed);

        for order in [datagrams.clone(), reversed, shuffled_with_duplicates] {
            let mut r = Reassembler::new(4 * MIB, 4, 8 * MIB, 10_000);
            let done = feed(&mut r, NodeId(1), &order);
            assert_eq!(done.len(), 1, "exactly one completion; later duplicates start nothing complete");
            assert_eq!(done[0], packet);
            let back: Envelope<TestBody> = decode(&done[0], 4 * MIB, CLUSTER).expect("decodes");
            assert_eq!(back, env);
        }
    }

    #[test]
    fn duplicate_fragment_is_ignored() {
        let datagrams = Fragmenter::new(0).frame(&patterned(300, 2), 120);
        let mut r = Reassembler::new(MIB, 4, MIB, 1000);
        assert_eq!(r.accept(0, NodeId(1), &datagrams[0]), Ok(None));
        let held = r.partial_bytes();
        assert_eq!(r.accept(0, NodeId(1), &datagrams[0]), Ok(None));
        assert_eq!(r.partial_bytes(), held);
    }

    #[test]
    fn same_packet_id_from_two_peers_is_two_packets() {
        let a = patterned(300, 1);
        let b = patterned(300, 2);
        let da = Fragmenter::new(7).frame(&a, 120);
        let db = Fragmenter::new(7).frame(&b, 120);
        let mut r = Reassembler::new(MIB, 4, MIB, 1000);
        let mut done = Vec::new();
        for (x, y) in da.iter().zip(&db) {
            done.extend(r.accept(0, NodeId(1), x).expect("accepted"));
            done.extend(r.accept(0, NodeId(2), y).expect("accepted"));
        }
        assert_eq!(done, vec![a, b]);
        assert_eq!(r.partial_bytes(), 0);
    }

    #[test]
    fn eviction_keeps_memory_bounded() {
        let max_total = 64 * 1024;
        let mut r = Reassembler::new(MIB, 1000, max_total, 60_000);
        let mut f = Fragmenter::new(0);
        for i in 0..500u64 {
            let datagrams = f.frame(&patterned(20_000, i as u8), 1500);
            // Every fragment but the last: the packet never completes.
            for d in &datagrams[..datagrams.len() - 1] {
                assert_eq!(r.accept(i, NodeId(1), d), Ok(None));
                assert!(r.partial_bytes() <= max_total);
            }
        }
        assert!(r.partial_bytes() > max_total / 2, "the buffer is used, not just emptied");
        assert!(r.partial_packets() <= 4);
    }

    #[test]
    fn eviction_drops_the_oldest_partial_first() {
        let mut r = Reassembler::new(MIB, 2, MIB, 60_000);
        let mut f = Fragmenter::new(0);
        let packets: Vec<Vec<u8>> = (0..3).map(|i| patterned(300, i)).collect();
        let framed: Vec<Vec<Vec<u8>>> = packets.iter().map(|p| f.frame(p, 120)).collect();
        for d in &framed {
            assert_eq!(r.accept(0, NodeId(1), &d[0]), Ok(None));
        }
        // The per-peer limit of two evicted packet 0; packets 1 and 2 still complete.
        assert_eq!(r.partial_packets(), 2);
        assert_eq!(feed(&mut r, NodeId(1), &framed[1][1..]), vec![packets[1].clone()]);
        assert_eq!(feed(&mut r, NodeId(1), &framed[2][1..]), vec![packets[2].clone()]);
        assert!(feed(&mut r, NodeId(1), &framed[0][1..]).is_empty());
    }

    #[test]
    fn one_peer_at_its_limit_does_not_evict_another_peers_partials() {
        let mut r = Reassembler::new(MIB, 1, MIB, 60_000);
        let mut f = Fragmenter::new(0);
        let mine = patterned(300, 1);
        let framed = f.frame(&mine, 120);
        assert_eq!(r.accept(0, NodeId(2), &framed[0]), Ok(None));
        for _ in 0..10 {
            let other = f.frame(&patterned(300, 3), 120);
            assert_eq!(r.accept(0, NodeId(1), &other[0]), Ok(None));
        }
        assert_eq!(feed(&mut r, NodeId(2), &framed[1..]), vec![mine]);
    }

    #[test]
    fn partial_is_dropped_after_the_timeout() {
        let datagrams = Fragmenter::new(0).frame(&patterned(300, 4), 120);
        let mut r = Reassembler::new(MIB, 4, MIB, 1000);
        assert_eq!(r.accept(10, NodeId(1), &datagrams[0]), Ok(None));
        // At exactly the timeout the partial is still kept.
        assert_eq!(r.accept(1010, NodeId(1), &datagrams[1]), Ok(None));
        assert!(r.partial_bytes() > 0);
        // Any later datagram, even an invalid one, first expires it.
        assert_eq!(r.accept(1011, NodeId(9), &[0]), Err(WireError::BadMagic));
        assert_eq!(r.partial_bytes(), 0);
        assert_eq!(r.partial_packets(), 0);
        // The rest of the packet alone does not complete it.
        assert_eq!(r.accept(1011, NodeId(1), &datagrams[2]), Ok(None));
    }

    #[test]
    fn time_going_backwards_does_not_revive_or_break_expiry() {
        let datagrams = Fragmenter::new(0).frame(&patterned(300, 4), 120);
        let mut r = Reassembler::new(MIB, 4, MIB, 1000);
        assert_eq!(r.accept(5000, NodeId(1), &datagrams[0]), Ok(None));
        assert_eq!(r.accept(0, NodeId(1), &datagrams[1]), Ok(None));
        assert_eq!(r.accept(6001, NodeId(1), &datagrams[2]), Ok(None));
        assert_eq!(r.partial_packets(), 1, "the first partial expired, the last fragment started a new one");
    }

    #[test]
    fn malformed_datagrams_are_rejected() {
        let mut r = Reassembler::new(1000, 4, MIB, 1000);
        let p = NodeId(1);
        let cases: Vec<(Vec<u8>, WireError)> = vec![
            (vec![], WireError::Truncated),
            (vec![0x00, 1, 0], WireError::BadMagic),
            (vec![MAGIC], WireError::Truncated),
            (vec![MAGIC, 2, 0], WireError::BadVersion(2)),
            (vec![MAGIC, WIRE_VERSION], WireError::Truncated),
            (vec![MAGIC, WIRE_VERSION, 7], WireError::BadKind(7)),
            (vec![MAGIC, WIRE_VERSION, 1, 0, 0, 0], WireError::Truncated),
            (fragment(1, 0, 0, 10, &[1]), WireError::BadFragment("fragment count is zero")),
            (
                fragment(1, 2, 2, 10, &[1]),
                WireError::BadFragment("fragment index is not below the fragment count"),
            ),
            (fragment(1, 0, 2, 1001, &[1]), WireError::TooLarge { len: 1001, max: 1000 }),
            (fragment(1, 0, 2, 10, &[]), WireError::BadFragment("empty fragment")),
            (
                fragment(1, 0, 2, 3, &[1, 2, 3, 4]),
                WireError::BadFragment("fragments overflow the declared total"),
            ),
            (fragment(1, 0, 5, 3, &[1]), WireError::BadFragment("more fragments than packet bytes")),
            (
                fragment(1, 0, 1, 3, &[1]),
                WireError::BadFragment("fragments fall short of the declared total"),
            ),
            (
                [&[MAGIC, WIRE_VERSION, 0][..], &[0; 1001]].concat(),
                WireError::TooLarge { len: 1001, max: 1000 },
            ),
        ];
        for (datagram, err) in cases {
            assert_eq!(r.accept(0, p, &datagram), Err(err), "datagram {datagram:?}");
        }
        assert_eq!(r.partial_packets(), 0);
    }

    #[test]
    fn fragment_that_can_never_fit_the_buffer_is_rejected() {
        let mut r = Reassembler::new(MIB, 4, 1000, 1000);
        let err = r.accept(0, NodeId(1), &fragment(1, 0, 2, 950, &[1]));
        assert_eq!(err, Err(WireError::TooLarge { len: 950, max: 1000 - 2 * FRAGMENT_BOOKKEEPING_BYTES }));
    }

    #[test]
    fn inconsistent_fragments_of_one_packet_are_rejected_without_losing_the_partial() {
        let mut r = Reassembler::new(1000, 4, MIB, 1000);
        let p = NodeId(1);
        assert_eq!(r.accept(0, p, &fragment(1, 0, 2, 6, &[1, 2, 3])), Ok(None));
        let disagree =
            WireError::BadFragment("fragment count or total length disagrees with earlier fragments");
        assert_eq!(r.accept(0, p, &fragment(1, 1, 3, 6, &[4])), Err(disagree.clone()));
        assert_eq!(r.accept(0, p, &fragment(1, 1, 2, 7, &[4])), Err(disagree));
        assert_eq!(
            r.accept(0, p, &fragment(1, 1, 2, 6, &[4, 5, 6, 7])),
            Err(WireError::BadFragment("fragments overflow the declared total"))
        );
        assert_eq!(r.accept(0, p, &fragment(1, 1, 2, 6, &[4, 5, 6])), Ok(Some(vec![1, 2, 3, 4, 5, 6])));
    }

    #[test]
    fn fragments_short_of_the_total_drop_the_packet() {
        let mut r = Reassembler::new(1000, 4, MIB, 1000);
        let p = NodeId(1);
        assert_eq!(r.accept(0, p, &fragment(1, 0, 2, 6, &[1, 2])), Ok(None));
        assert_eq!(
            r.accept(0, p, &fragment(1, 1, 2, 6, &[3])),
            Err(WireError::BadFragment("fragments fall short of the declared total"))
        );
        assert_eq!(r.partial_packets(), 0);
        assert_eq!(r.partial_bytes(), 0);
    }

    #[test]
    fn no_partials_allowed_refuses_fragmented_packets() {
        let datagrams = Fragmenter::new(0).frame(&patterned(300, 4), 120);
        let mut r = Reassembler::new(MIB, 0, MIB, 1000);
        assert!(feed(&mut r, NodeId(1), &datagrams).is_empty());
        assert_eq!(r.partial_bytes(), 0);
    }

    #[test]
    fn wrong_cluster_is_rejected() {
        let env = Envelope::new("beta", member(1, 1), TestBody::Data(vec![1]));
        let bytes = encode(&env).expect("encodes");
        assert_eq!(decode::<TestBody>(&bytes, MIB, CLUSTER), Err(WireError::WrongCluster("beta".into())));
    }

    #[test]
    fn wrong_envelope_version_is_rejected() {
        let mut env = data_envelope(vec![1]);
        env.version = 2;
        let bytes = encode(&env).expect("encodes");
        assert_eq!(decode::<TestBody>(&bytes, MIB, CLUSTER), Err(WireError::BadVersion(2)));
    }

    #[test]
    fn oversize_packet_is_rejected_before_decoding() {
        // Garbage would be a decode error; the size check must come first.
        let garbage = vec![0xc1; 101];
        assert_eq!(
            decode::<TestBody>(&garbage, 100, CLUSTER),
            Err(WireError::TooLarge { len: 101, max: 100 })
        );
        assert!(matches!(decode::<TestBody>(&garbage[..100], 100, CLUSTER), Err(WireError::Decode(_))));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&data_envelope(vec![1, 2])).expect("encodes");
        bytes.push(0);
        assert_eq!(
            decode::<TestBody>(&bytes, MIB, CLUSTER),
            Err(WireError::Decode("1 trailing bytes after the envelope".into()))
        );
    }

    #[test]
    fn error_messages_are_lowercase_without_a_full_stop() {
        let errors = [
            WireError::TooLarge { len: 2, max: 1 },
            WireError::BadMagic,
            WireError::BadVersion(9),
            WireError::WrongCluster("x".into()),
            WireError::Truncated,
            WireError::BadKind(3),
            WireError::BadFragment("x"),
            WireError::Decode("x".into()),
            WireError::Encode("x".into()),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }

    /// Datagrams that are mostly well-formed headers followed by junk reach the deeper checks.
    fn datagram_strategy() -> impl Strategy<Value = Vec<u8>> {
        let junk = proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            junk.clone().prop_map(|j| [&[MAGIC, WIRE_VERSION, KIND_WHOLE][..], &j].concat()),
            (0..3u64, 0..4u16, 0..4u16, 0..40u32, junk)
                .prop_map(|(id, index, count, total, data)| { fragment(id, index, count, total, &data) }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic_and_stay_within_bounds(
            steps in proptest::collection::vec((0..3u32, 0..5_000u64, datagram_strategy()), 0..200),
        ) {
            let max_total = 400;
            let mut r = Reassembler::new(100, 3, max_total, 1000);
            for (peer, now_ms, datagram) in steps {
                if let Ok(Some(packet)) = r.accept(now_ms, NodeId(peer), &datagram) {
                    prop_assert!(packet.len() <= 100);
                }
                prop_assert!(r.partial_bytes() <= max_total);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_in_decode(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<TestBody>(&bytes, 256, CLUSTER);
        }

        #[test]
        fn mutated_envelopes_never_panic_in_decode(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode(&data_envelope(payload)).expect("encodes");
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = decode::<TestBody>(&bytes, MIB, CLUSTER);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn encode_frame_accept_decode_round_trips_in_any_order(
            len in 0..200_000usize,
            fill in any::<u8>(),
            max_datagram_bytes in 1024..65_000usize,
            order_seed in any::<u64>(),
            packet_id in any::<u64>(),
        ) {
            let env = data_envelope(patterned(len, fill));
            let packet = encode(&env).expect("encodes");
            let mut datagrams = Fragmenter::new(packet_id).frame(&packet, max_datagram_bytes);
            prop_assert!(!datagrams.is_empty());
            prop_assert!(datagrams.iter().all(|d| d.len() <= max_datagram_bytes));
            shuffle(&mut datagrams, order_seed);

            let mut r = Reassembler::new(MIB, 2, 2 * MIB, 1000);
            let done = feed(&mut r, NodeId(4), &datagrams);
            prop_assert_eq!(done.len(), 1);
            prop_assert_eq!(&done[0], &packet);
            prop_assert_eq!(r.partial_bytes(), 0);
            let back: Envelope<TestBody> = decode(&done[0], MIB, CLUSTER).expect("decodes");
            prop_assert_eq!(back, env);
        }
    }
}
