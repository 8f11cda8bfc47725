//! The bodies of the coverage-guided fuzz targets, and the seeds of their corpora.
//!
//! Each target takes arbitrary bytes, drives one decoder or loader of the agent with them exactly as the
//! agent does, and asserts what must hold for any input (round trips, memory bounds), not only that
//! nothing panics. They live here, in the library, so that two callers run the very same code: the
//! cargo-fuzz project in `fuzz/` (one `fuzz_target!` per function, run by `scripts/fuzz`), and
//! `actors/tests/fuzz_corpus.rs`, which replays every file of `fuzz/corpus/<target>/` and every saved
//! crash in `fuzz/regressions/<target>/` through them in the normal test suite, without cargo-fuzz.
//!
//! The targets ([`TARGETS`]):
//! - [`datagram`]: what the transport does with a datagram from the network: the sealed path
//!   ([`crate::crypto::KeyRing::open`] with a fixed key; a mode that seals the input first, so
//!   well-formed sealed frames are reached), then the plaintext path the core runs after the open
//!   (reassembly, envelope decoding, and a whole [`cohort::Node`] receiving it);
//! - [`reassembly`]: sequences of fragments, forged and well-formed, from several peers into one
//!   [`cohort::wire::Reassembler`], within its memory bounds;
//! - [`client_frame`]: the client protocol's frame decoder on a byte stream, requests and replies;
//! - [`config`]: the layered configuration loader on up to three TOML texts, environment variables and
//!   overrides;
//! - [`event_log`]: `cohort verify`'s reader and checker on event-log texts.
//!
//! **Deliberately absent:** sockets, files, clocks and randomness: a target is a pure function of its
//! input, so a crash replays exactly. [`seeds`] builds each target's starting corpus from the real
//! encoders (a small in-memory cluster's datagrams, every client request and reply, the example
//! configurations, a simulated event log); `scripts/fuzz --seeds` writes them out.

use crate::client_proto::{FrameCodec, KeyRequest, Reply, Request, MAX_HELLO_FRAME_BYTES, PROTOCOL_VERSION};
use crate::crypto::{ClusterKey, KeyRing, SealHeader};
use crate::settings_load;
use cohort::msg::{Body, TransferToken};
use cohort::wire::{self, Envelope, Fragmenter, Reassembler};
use cohort::{Config, Delivery, Durable, Epoch, Member, Node, NodeId, Output, ViewId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A fuzz target: takes any bytes, panics only when something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target by name; the names are those of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`.
pub const TARGETS: &[(&str, Target)] = &[
    ("datagram", datagram),
    ("reassembly", reassembly),
    ("client_frame", client_frame),
    ("config", config),
    ("event_log", event_log),
];

/// The cluster name of the datagram target's node and of its seeds.
const CLUSTER: &str = "fuzz";
/// The fixed key of the datagram target's sealed path.
const KEY: [u8; 32] = [0x5a; 32];
/// The node the datagram target plays: datagrams are sealed to it.
const ME: u32 = 2;
/// The datagram size of the target's cluster: small, so that seeds include fragments.
const MAX_DATAGRAM_BYTES: usize = 1024;

fn key_ring() -> KeyRing {
    KeyRing::new(&ClusterKey::from_bytes(KEY), "fuzz", CLUSTER)
}

fn core_config() -> Config {
    let mut cfg = Config::new(CLUSTER, &[1, 2, 3]);
    cfg.max_datagram_bytes = MAX_DATAGRAM_BYTES;
    cfg
}

/// The largest packet the core accepts under `cfg`, as `Node` computes it.
fn max_packet(cfg: &Config) -> usize {
    cfg.max_message_bytes.max(cfg.max_state_bytes) + 64 * 1024
}

// ---------------------------------------------------------------------------------------------------
// datagram
// ---------------------------------------------------------------------------------------------------

/// The first byte picks the path: 0 a sealed datagram opened with the fixed key; 1 a header (node u32,
/// epoch u64, counter u64, tamper position u8, all little-endian) and a plaintext that the target seals
/// under the fixed key, opens, and tampers with; anything else a plaintext datagram as the transport
/// hands it to the core after the open.
pub fn datagram(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode {
        0 => {
            let ring = key_ring();
            let peeked = crate::crypto::peek_header(rest);
            if let Ok((header, plain)) = ring.open(rest, ME) {
                assert_eq!(peeked.ok(), Some(header), "open accepted a datagram whose header does not parse");
                after_open(&plain);
            }
        }
        1 => seal_open_tamper(rest),
        _ => after_open(rest),
    }
}

fn seal_open_tamper(rest: &[u8]) {
    let Some((head, plain)) = rest.split_first_chunk::<21>() else { return };
    let le_u64 = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let node = le_u64(&head[0..4]) as u32;
    let epoch = le_u64(&head[4..12]);
    let counter = le_u64(&head[12..20]);
    let ring = key_ring();
    let mut sealed = Vec::new();
    if let Err(e) = ring.seal_into(node, ME, epoch, counter, plain, &mut sealed) {
        panic!("sealing {} bytes failed: {e}", plain.len());
    }
    let want = SealHeader { key_id: ring.primary(), node, epoch, counter };
    match ring.open(&sealed, ME) {
        Ok((header, back)) => {
            assert_eq!(header, want, "the opened header differs from the sealed one");
            assert_eq!(back, plain, "the opened plaintext differs from the sealed one");
        }
        Err(e) => panic!("a datagram sealed under the fixed key does not open: {e}"),
    }
    assert!(ring.open(&sealed, ME + 1).is_err(), "a datagram sealed to one node opened at another");
    let pos = usize::from(head[20]) % sealed.len();
    sealed[pos] ^= 0x01;
    assert!(ring.open(&sealed, ME).is_err(), "a datagram with byte {pos} flipped still opened");
    after_open(plain);
}

/// What runs after a successful open: the core's reassembly and envelope decoding, with a round trip of
/// whatever decodes, then a whole node receiving the datagram (nothing a peer sends may panic it).
fn after_open(plain: &[u8]) {
    let cfg = core_config();
    let max = max_packet(&cfg);
    let mut reasm = Reassembler::new(max, 64, 2 * max, 4 * cfg.failure_timeout_ms);
    if let Ok(Some(packet)) = reasm.accept(0, NodeId(1), plain) {
        assert!(packet.len() <= max, "the reassembler returned a packet over its limit");
        if let Ok(env) = wire::decode::<Body>(&packet, max, CLUSTER) {
            let once = match wire::encode(&env) {
                Ok(b) => b,
                Err(e) => panic!("a decoded envelope does not encode: {e}"),
            };
            let back: Envelope<Body> = match wire::decode(&once, usize::MAX, CLUSTER) {
                Ok(b) => b,
                Err(e) => panic!("a re-encoded envelope does not decode: {e}"),
            };
            let twice = match wire::encode(&back) {
                Ok(b) => b,
                Err(e) => panic!("a decoded envelope does not encode the second time: {e}"),
            };
            // Bytes, not values: a float that is NaN would make value equality fail on a faithful trip.
            assert_eq!(once, twice, "decode -> encode -> decode -> encode changed the packet");
        }
    }
    let mut out = Vec::new();
    let durable = Durable { epoch: Epoch(1), ..Durable::default() };
    let mut node = Node::new(Arc::new(cfg), NodeId(ME), durable, 0, &mut out);
    node.receive(1, plain, &mut out);
}

// ---------------------------------------------------------------------------------------------------
// reassembly
// ---------------------------------------------------------------------------------------------------

/// Reassembler bounds of the target: small, so the fuzzer reaches every limit.
const RA_MAX_PACKET: usize = 4096;
const RA_PER_PEER: usize = 4;
const RA_MAX_TOTAL: usize = 8192;
const RA_TIMEOUT_MS: u64 = 100;
/// The peer whose datagrams come only from a [`Fragmenter`], so its packets must come back intact.
const RA_HONEST_PEER: NodeId = NodeId(9);

/// A program of operations on one reassembler. Each operation starts with a byte whose low two bits
/// pick it: 0 a raw datagram (peer, length, bytes); 1 a forged fragment with a small packet id (peer,
/// id, index, count, total length u16, length, bytes); 2 a packet cut by a [`Fragmenter`] and fed in an
/// order the input permutes, with duplicates, from a peer nobody else impersonates (it must come back
/// exactly); 3 the clock moves on (`byte >> 2` times 8 ms). After every operation the memory bounds
/// must hold.
pub fn reassembly(data: &[u8]) {
    let mut r = Reassembler::new(RA_MAX_PACKET, RA_PER_PEER, RA_MAX_TOTAL, RA_TIMEOUT_MS);
    let mut frag = Fragmenter::new(1 << 40);
    let mut now = 0u64;
    let mut input = Bytes(data);
    let mut ops = 0;
    while let Some(op) = input.byte() {
        ops += 1;
        if ops > 256 {
            break;
        }
        let peer = NodeId(1 + u32::from((op >> 2) & 3));
        match op & 3 {
            0 => {
                let len = usize::from(input.byte().unwrap_or(0));
                let bytes = input.take(len);
                let _ = r.accept(now, peer, bytes);
            }
            1 => {
                let id = u64::from(input.byte().unwrap_or(0));
                let index = u16::from(input.byte().unwrap_or(0));
                let count = u16::from(input.byte().unwrap_or(1));
                let total = u32::from(input.u16());
                let len = usize::from(input.byte().unwrap_or(0));
                let bytes = input.take(len);
                let mut d = vec![wire::MAGIC, wire::WIRE_VERSION, 1];
                d.extend_from_slice(&id.to_le_bytes());
                d.extend_from_slice(&index.to_le_bytes());
                d.extend_from_slice(&count.to_le_bytes());
                d.extend_from_slice(&total.to_le_bytes());
                d.extend_from_slice(bytes);
                if let Ok(Some(p)) = r.accept(now, peer, &d) {
                    assert!(p.len() <= RA_MAX_PACKET, "a packet over the limit came out");
                }
            }
            2 => honest_packet(&mut r, &mut frag, now, &mut input),
            _ => now += u64::from(op >> 2) * 8,
        }
        assert!(r.partial_bytes() <= RA_MAX_TOTAL, "partial bytes {} over the bound", r.partial_bytes());
        assert!(
            r.partial_packets() <= 5 * RA_PER_PEER,
            "{} partial packets over the per-peer bound",
            r.partial_packets()
        );
    }
}

fn honest_packet(r: &mut Reassembler, frag: &mut Fragmenter, now: u64, input: &mut Bytes<'_>) {
    let max_datagram = wire::FRAGMENT_HEADER_BYTES + 1 + usize::from(input.byte().unwrap_or(0));
    let len = usize::from(input.u16()) % (RA_MAX_PACKET + 64);
    let fill = input.byte().unwrap_or(0);
    let packet: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
    let datagrams = frag.frame(&packet, max_datagram);
    if datagrams.is_empty() {
        return;
    }
    // The input rotates the order and picks up to four fragments to send twice.
    let n = datagrams.len();
    let start = usize::from(input.byte().unwrap_or(0)) % n;
    let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
    for _ in 0..usize::from(input.byte().unwrap_or(0) % 5) {
        let dup = usize::from(input.byte().unwrap_or(0)) % n;
        let at = usize::from(input.byte().unwrap_or(0)) % (order.len() + 1);
        order.insert(at, dup);
    }
    let fits = len <= RA_MAX_PACKET && (n == 1 || n.saturating_mul(48).saturating_add(len) <= RA_MAX_TOTAL);
    let mut completed = 0;
    for i in order {
        match r.accept(now, RA_HONEST_PEER, &datagrams[i]) {
            Ok(Some(p)) => {
                assert_eq!(p, packet, "a packet of the honest peer came back altered");
                completed += 1;
            }
            Ok(None) => {}
            Err(e) => assert!(!fits, "a well-formed fragment of a packet that fits was refused: {e}"),
        }
    }
    if fits {
        assert!(completed >= 1, "every fragment of a packet of {len} bytes arrived but it never completed");
    }
}

/// A cursor over the input that yields zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte().unwrap_or(0), self.byte().unwrap_or(0)])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

// ---------------------------------------------------------------------------------------------------
// client_frame
// ---------------------------------------------------------------------------------------------------

/// The input is a byte stream from a client (or, for the client library, from the agent). It is cut
/// into frames as the agent's connection reader does, under the hello limit and under the default
/// limit, and each frame is decoded as a [`Request`] and as a [`Reply`]. Whatever decodes must encode
/// to a frame that decodes to the same value, and requests are classified as the agent does.
pub fn client_frame(data: &[u8]) {
    for codec in [FrameCodec::new(MAX_HELLO_FRAME_BYTES), FrameCodec::default()] {
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let req = codec.decode_frame::<Request>(rest);
            let reply = codec.decode_frame::<Reply>(rest);
            let used = match (req, reply) {
                (Ok(None), _) | (_, Ok(None)) => break,
                (Err(_), Err(_)) => break,
                (Ok(Some((req, used))), reply) => {
                    round_trip(&codec, &req);
                    let _ = crate::client_access::refusal(
                        crate::client_access::Principal::Application,
                        &req,
                        std::path::Path::new("/run/cohort/operator.sock"),
                        false,
                    );
                    if let Ok(Some((reply, _))) = reply {
                        round_trip(&codec, &reply);
                    }
                    used
                }
                (Err(_), Ok(Some((reply, used)))) => {
                    round_trip(&codec, &reply);
                    used
                }
            };
            assert!(used >= 4 && used <= rest.len(), "a frame claimed {used} of {} bytes", rest.len());
            pos += used;
        }
    }
}

fn round_trip<T>(codec: &FrameCodec, msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    // A message decoded from a frame within the limit may encode larger (a sender may write structs
    // as arrays, shorter than the named fields written here): then encoding refuses it, which is no
    // bug, and there is nothing to compare.
    let Ok(frame) = codec.encode(msg) else { return };
    match codec.decode_frame::<T>(&frame) {
        Ok(Some((back, used))) => {
            assert_eq!(used, frame.len(), "a re-encoded frame was not consumed whole");
            assert_eq!(&back, msg, "decode -> encode -> decode changed the message");
        }
        Ok(None) => panic!("a re-encoded frame is incomplete"),
        Err(e) => panic!("a re-encoded frame does not decode: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------------------------------

/// The input is up to five parts separated by NUL bytes: three TOML texts (layers in order), then
/// environment variables and command-line overrides, one `NAME=value` per line. Non-UTF-8 input is
/// what reading a file would refuse, so it is skipped. Whatever loads must render (`cohort config
/// check`), that rendering must load to the same settings, a reload from the defaults must be planned
/// without panicking, and the log level must build the agent's log filter.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(5, '\0');
    let texts: Vec<(&str, &str)> =
        ["file:a.toml", "file:b.toml", "file:c.toml"].into_iter().zip(parts.by_ref().take(3)).collect();
    let pairs = |s: Option<&str>| -> Vec<(String, String)> {
        s.unwrap_or("")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let env = pairs(parts.next());
    let overrides = pairs(parts.next());
    let Ok(loaded) = settings_load::load_texts(&texts, &env, &overrides) else { return };
    let rendered = settings_load::render_effective(&loaded);
    match settings_load::load_texts(&[("effective", &rendered)], &[], &[]) {
        Ok(again) => assert_eq!(
            again.settings, loaded.settings,
            "the effective configuration loads to other settings:\n{rendered}"
        ),
        Err(e) => panic!("the effective configuration does not load: {e}\n{rendered}"),
    }
    let _ = settings_load::changed_keys(&loaded.settings, &loaded.settings);
    let _ = crate::telemetry::filter(&loaded.settings.log.level);
}

// ---------------------------------------------------------------------------------------------------
// event_log
// ---------------------------------------------------------------------------------------------------

/// The input is up to three event logs separated by NUL bytes (non-UTF-8 input is what reading a file
/// refuses). Every record that parses must print as a JSON line that parses back to it, and `cohort
/// verify` (with and without G13) must read and check the logs and count their records.
pub fn event_log(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let logs: Vec<(&str, &str)> =
        ["a.jsonl", "b.jsonl", "c.jsonl"].into_iter().zip(text.splitn(3, '\0')).collect();
    let mut total = Some(0);
    for (_, log) in &logs {
        match cohort::checker::parse_log(log) {
            Ok(records) => {
                for r in &records {
                    let line = r.to_json_line();
                    match cohort::Record::from_json_line(&line) {
                        Ok(back) => assert_eq!(&back, r, "a record changed through its JSON line {line}"),
                        Err(e) => panic!("a record's JSON line does not parse: {e}: {line}"),
                    }
                }
                total = total.map(|t| t + records.len());
            }
            Err(_) => total = None,
        }
    }
    for independent_clocks in [false, true] {
        match crate::cli::verify_texts(&logs, independent_clocks) {
            Ok(report) => {
                assert_eq!(Some(report.records), total, "verify counted other records than the reader");
                let _ = report.render();
            }
            Err(_) => assert_eq!(total, None, "verify refused logs that parse"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------------

/// The starting corpus of `target` (a name of [`TARGETS`]), built with the real encoders; empty for an
/// unknown name.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "datagram" => datagram_seeds(),
        "reassembly" => reassembly_seeds(),
        "client_frame" => client_frame_seeds(),
        "config" => config_seeds(),
        "event_log" => event_log_seeds(),
        _ => Vec::new(),
    }
}

/// Datagrams of a three-node in-memory cluster of [`CLUSTER`] (views forming, a group joined, agreed
/// and safe multicasts, one large enough to be fragmented, a state transfer), and the node-2 datagrams
/// of the first few of each message kind, plain and sealed.
fn cluster_datagrams() -> Vec<(NodeId, NodeId, Vec<u8>)> {
    let cfg = Arc::new(core_config());
    let mut nodes: BTreeMap<u32, Node> = BTreeMap::new();
    let mut queue: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    let mut sent: Vec<(NodeId, NodeId, Vec<u8>)> = Vec::new();
    let collect = |from: u32, out: Vec<Output>, q: &mut Vec<(u32, u32, Vec<u8>)>| {
        for o in out {
            if let Output::Send { to, bytes } = o {
                q.push((from, to.0, bytes));
            }
        }
    };
    for id in [1u32, 2, 3] {
        let mut out = Vec::new();
        let d = Durable { epoch: Epoch(1), ..Durable::default() };
        nodes.insert(id, Node::new(cfg.clone(), NodeId(id), d, 0, &mut out));
        collect(id, out, &mut queue);
    }
    for now in 1..3000u64 {
        let due = std::mem::take(&mut queue);
        for (from, to, bytes) in due {
            sent.push((NodeId(from), NodeId(to), bytes.clone()));
            let mut out = Vec::new();
            if let Some(n) = nodes.get_mut(&to) {
                n.receive(now, &bytes, &mut out);
            }
            collect(to, out, &mut queue);
        }
        for (&id, n) in nodes.iter_mut() {
            let mut out = Vec::new();
            n.tick(now, &mut out);
            match now {
                1500 if id != 2 => n.join_group(now, "g", &mut out),
                2000 if id == 2 => n.join_group(now, "g", &mut out),
                1800 | 2400 if id == 1 => {
                    let _ = n.multicast(now, "g", b"hello".to_vec(), Delivery::Agreed, &mut out);
                    let _ = n.multicast(now, "g", vec![7; 3000], Delivery::Safe, &mut out);
                }
                _ => {}
            }
            collect(id, out, &mut queue);
        }
    }
    sent
}

fn datagram_seeds() -> Vec<Vec<u8>> {
    let ring = key_ring();
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut counter = 0u64;
    let mut reasm = Reassembler::new(1 << 20, 64, 1 << 22, 1 << 30);
    for (from, to, bytes) in cluster_datagrams() {
        if to != NodeId(ME) {
            continue;
        }
        // The kind of a datagram: its message's variant, or "fragment" for the pieces of a large one.
        let kind = match reasm.accept(0, from, &bytes) {
            Ok(Some(p)) => match wire::decode::<Body>(&p, usize::MAX, CLUSTER) {
                Ok(env) => format!("{:?}", env.body).split([' ', '(', '{']).next().unwrap_or("").to_string(),
                Err(_) => "undecodable".to_string(),
            },
            _ => "fragment".to_string(),
        };
        let seen = per_kind.entry(kind).or_insert(0);
        *seen += 1;
        if *seen > 3 {
            continue;
        }
        out.push([&[2u8][..], &bytes].concat());
        counter += 1;
        let mut sealed = Vec::new();
        if ring.seal_into(from.0, ME, 1, counter, &bytes, &mut sealed).is_ok() {
            out.push([&[0u8][..], &sealed].concat());
        }
        let mut head = Vec::with_capacity(21 + bytes.len());
        head.extend_from_slice(&from.0.to_le_bytes());
        head.extend_from_slice(&1u64.to_le_bytes());
        head.extend_from_slice(&counter.to_le_bytes());
        head.push(counter as u8);
        out.push([&[1u8][..], &head, &bytes].concat());
    }
    out
}

fn reassembly_seeds() -> Vec<Vec<u8>> {
    vec![
        // A whole packet from peer 1, then one of 600 bytes in 40-byte fragments, rotated, with a duplicate.
        vec![0, 6, wire::MAGIC, wire::WIRE_VERSION, 0, 1, 2, 3, 2, 23, 0x58, 0x02, 9, 3, 1, 2, 4],
        // Forged fragments of one packet id from two peers, then time passing beyond the timeout.
        vec![
            1, 7, 0, 2, 20, 0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 7, 1, 2, 20, 0, 10, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0xff,
        ],
        // Many small honest packets, some too large for the total bound.
        vec![2, 10, 0x00, 0x01, 1, 0, 0, 2, 0, 0x40, 0x1f, 2, 0, 0, 2, 200, 0x00, 0x10, 3, 1, 1, 5, 0],
        // Raw garbage: a bad magic, a bad version, an unknown kind, a truncated fragment header.
        vec![
            0,
            2,
            0,
            0,
            4,
            2,
            wire::MAGIC,
            9,
            8,
            3,
            wire::MAGIC,
            wire::WIRE_VERSION,
            7,
            12,
            5,
            wire::MAGIC,
            wire::WIRE_VERSION,
            1,
            0,
            0,
        ],
    ]
}

fn client_frame_seeds() -> Vec<Vec<u8>> {
    let member = Member(NodeId(3), Epoch(9));
    let view = ViewId { seq: 7, coord: NodeId(2) };
    let token = TransferToken { view, seq: 41 };
    let requests = [
        Request::Hello { client_name: "orders".into(), version: PROTOCOL_VERSION },
        Request::Join { group: "g".into() },
        Request::Leave { group: "g".into() },
        Request::Send { group: "g".into(), payload: vec![0, 1, 255], safe: true, req: 7 },
        Request::ProvideState { group: "g".into(), joiner: member, token, state: vec![9; 40] },
        Request::Status,
        Request::FenceAck { node: 4 },
        Request::SetLinkFilter { blocked: vec![2, 3] },
        Request::Watch { group: Some("g".into()) },
        Request::Keys { op: KeyRequest::Install { path: "/etc/cohort/new.key".into() } },
        Request::Keys { op: KeyRequest::List },
    ];
    let replies = [
        Reply::Welcome { node: 1, epoch: 5, max_frame_bytes: 1 << 20 },
        Reply::Sent { req: 1, msg: "1.5.1".into() },
        Reply::View { id: view, members: vec![member], primary: true },
        Reply::Deliver {
            group: "g".into(),
            msg: "1.5.1".into(),
            sender: member,
            view,
            seq: 12,
            safe: false,
            payload: b"hello".to_vec(),
        },
        Reply::ApplyState { group: "g".into(), provider: member, state: vec![1, 2] },
        Reply::Blocked { reason: "no_quorum".into() },
        Reply::Recovered { failed: vec![member] },
        Reply::Error { message: "nope".into() },
    ];
    let codec = FrameCodec::default();
    let mut out: Vec<Vec<u8>> = Vec::new();
    out.extend(requests.iter().filter_map(|r| codec.encode(r).ok()));
    out.extend(replies.iter().filter_map(|r| codec.encode(r).ok()));
    // A conversation: hello, join, send, status in one stream.
    let stream: Vec<u8> = requests.iter().take(6).filter_map(|r| codec.encode(r).ok()).flatten().collect();
    out.push(stream);
    out
}

fn config_seeds() -> Vec<Vec<u8>> {
    let three = [
        include_str!("../../config/examples/three-node/cluster.toml"),
        include_str!("../../config/examples/three-node/node1.toml"),
    ];
    let five = [
        include_str!("../../config/examples/five-node/cluster.toml"),
        include_str!("../../config/examples/five-node/node3.toml"),
    ];
    let minimal = "[cluster]\nname = \"c\"\nnodes = [{ id = 1, addr = \"127.0.0.1:7401\" }]\n\n[node]\nid = 1\n\n[log]\nlevel = \"info,cohort=debug\"\n";
    vec![
        format!("{}\0{}", three[0], three[1]).into_bytes(),
        format!("{}\0{}", five[0], five[1]).into_bytes(),
        minimal.as_bytes().to_vec(),
        format!("{minimal}\0[timing]\nfailure_timeout_ms = 3000\n\0\0COHORT__LOG__LEVEL=debug\nCOHORT__NODE__DATA_DIR=/tmp/x\0admin.listen=127.0.0.1:9000\n").into_bytes(),
        // A mistake of each kind: syntax, unknown key, wrong type.
        format!("{minimal}\0[timing\n").into_bytes(),
        format!("{minimal}\0[timing]\nfailure_timeot_ms = 1\n").into_bytes(),
        format!("{minimal}\0[limits]\nmax_datagram_bytes = \"big\"\n").into_bytes(),
    ]
}

fn event_log_seeds() -> Vec<Vec<u8>> {
    // The records the three-node cluster of the datagram seeds writes, one log per node.
    let cfg = Arc::new(core_config());
    let mut logs: BTreeMap<u32, String> = BTreeMap::new();
    let mut nodes: BTreeMap<u32, Node> = BTreeMap::new();
    let mut queue: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut handle = |id: u32, out: Vec<Output>, q: &mut Vec<(u32, Vec<u8>)>| {
        for o in out {
            match o {
                Output::Send { to, bytes } => q.push((to.0, bytes)),
                Output::Record(r) => {
                    let log = logs.entry(id).or_default();
                    log.push_str(&r.to_json_line());
                    log.push('\n');
                }
                _ => {}
            }
        }
    };
    for id in [1u32, 2, 3] {
        let mut out = Vec::new();
        let d = Durable { epoch: Epoch(1), ..Durable::default() };
        nodes.insert(id, Node::new(cfg.clone(), NodeId(id), d, 0, &mut out));
        handle(id, out, &mut queue);
    }
    for now in 1..2500u64 {
        for (to, bytes) in std::mem::take(&mut queue) {
            let mut out = Vec::new();
            if let Some(n) = nodes.get_mut(&to) {
                n.receive(now, &bytes, &mut out);
            }
            handle(to, out, &mut queue);
        }
        for (&id, n) in nodes.iter_mut() {
            let mut out = Vec::new();
            n.tick(now, &mut out);
            if now == 1500 {
                n.join_group(now, "g", &mut out);
            }
            if now == 2000 && id == 1 {
                let _ = n.multicast(now, "g", b"m".to_vec(), Delivery::Agreed, &mut out);
            }
            handle(id, out, &mut queue);
        }
    }
    let all: Vec<&String> = logs.values().collect();
    let mut out: Vec<Vec<u8>> = all.iter().map(|l| l.as_bytes().to_vec()).collect();
    out.push(all.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\0").into_bytes());
    out.push(b"{\"not\":\"a record\"}\n".to_vec());
    out
}
