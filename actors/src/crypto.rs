//! The cluster keys and the authenticated encryption of every datagram.
//!
//! **Owns:** the key file format (`cohort keygen`), the checks made when loading it, the key ring, and
//! the sealed datagram format. **Decides nothing** about what a datagram means: a datagram that opens is
//! handed on as its header and plaintext bytes, one that does not is an error the caller drops and
//! counts. Replay windows are the transport's ([`crate::replay`]); this module only carries the fields
//! they need inside the authenticated part.
//!
//! # Key file
//! 32 random bytes, written as 64 lowercase hex digits and a newline, in a file of mode 0600 that is never
//! overwritten ([`generate_key_file`]). [`load_key`] refuses a key file that its group or others may read
//! or write: the key is the cluster's only credential. A key's [`KeyId`] (eight hex digits of a hash) names
//! it in `cohort key list` and in every datagram.
//!
//! # Sealed datagram (seal version 2)
//! ```text
//! [version = 2 : 1][key id : 4][node : u32 LE][epoch : u64 LE][counter : u64 LE]   (the header, 25 bytes)
//! [XChaCha20-Poly1305 ciphertext : len(plaintext) bytes][tag : 16 bytes]
//! ```
//! The associated data is the header and the cluster name, so a datagram of another cluster that happens
//! to share the key fails to authenticate exactly like a forged one, and nobody can change the sender,
//! epoch or counter the receiver's replay window sees. Version 1 (random 96-bit nonces, no header) is
//! refused: every node of a cluster must run a build that seals version 2 (docs/adr/0007).
//!
//! # Nonces
//! The 192-bit XChaCha20 nonce is the sender's node, the receiver's node, the epoch and the counter: it
//! is never random, and the receiver rebuilds it from the header and its own id. Under one key a nonce
//! repeats only if one node sealed two datagrams to one receiver with the same epoch and counter. The
//! transport's counter per receiver only grows within its process (and sealing refuses to wrap it); a
//! new process runs under a new epoch, above every epoch its node used before (G12, `src/inquiry.rs`);
//! so within the cluster's guarantees a repeat is impossible, not merely improbable. Binding the
//! receiver also means a datagram replayed at another node than the one it was sealed for does not
//! authenticate there. The one exception is epoch 0, which every start's epoch inquiry uses before an
//! incarnation exists: the inquiry starts its counter at a random 63-bit value, so two inquiries of a
//! node repeat a nonce only if their few dozen counters overlap in a 2^63 space. See
//! docs/adr/0007-counter-nonces-replay-windows-and-a-key-ring.md for the whole argument.
//!
//! # Replays
//! Authentication proves a datagram was sealed by a key holder of this cluster, not that it is fresh.
//! The header gives the transport what it needs to drop replays before the core sees them: the sender's
//! epoch and a counter, checked against a sliding window per sender ([`crate::replay`]).

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The format version written as the first byte of every sealed datagram.
pub const SEAL_VERSION: u8 = 2;
/// Length of a [`KeyId`].
pub const KEY_ID_BYTES: usize = 4;
/// Length of the XChaCha20 nonce (built from the header, never sent apart from it).
pub const NONCE_BYTES: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_BYTES: usize = 16;
/// Length of the clear header: version, key id, node, epoch, counter.
pub const HEADER_BYTES: usize = 1 + KEY_ID_BYTES + 4 + 8 + 8;
/// Bytes a sealed datagram has beyond its plaintext: the header and the tag.
pub const SEAL_OVERHEAD: usize = HEADER_BYTES + TAG_BYTES;
/// Length of a cluster key.
pub const KEY_BYTES: usize = 32;

/// The shared secret of a cluster: 32 bytes. Its `Debug` output shows no key material.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_BYTES]);

impl ClusterKey {
    /// A key from raw bytes (tests, or a key obtained some other way than a key file).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<ClusterKey, CryptoError> {
        let mut k = [0u8; KEY_BYTES];
        getrandom::getrandom(&mut k).map_err(|e| CryptoError::Random(e.to_string()))?;
        Ok(ClusterKey(k))
    }

    fn to_hex(&self) -> String {
        let mut s = String::with_capacity(KEY_BYTES * 2 + 1);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a key file could not be loaded. Nothing changed on disk in any case; every variant is the
/// operator's to fix.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The file could not be inspected or read.
    #[error("cannot read key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("key file {} is not a regular file", path.display())]
    NotAFile {
        /// The key file.
        path: PathBuf,
    },
    /// The group or others may read or write the file.
    #[error(
        "key file {path} is readable by others (mode {mode:04o}); run: chmod 600 {path}",
        path = path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The contents are not 64 hexadecimal digits.
    #[error("key file {} is malformed: {detail} (expected 64 hex digits, as written by `cohort keygen`)", path.display())]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Why a datagram could not be sealed or opened. Opening errors are the sender's fault (or an
/// attacker's) and change nothing; the caller drops the datagram and counts it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Shorter than the header and tag.
    #[error("datagram of {len} bytes is shorter than the {SEAL_OVERHEAD}-byte seal")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// An unknown format version.
    #[error("unknown seal version {0}")]
    Version(u8),
    /// The tag did not verify: another key, another cluster name, or a modified datagram.
    #[error("datagram failed to authenticate")]
    Authentication,
    /// The datagram names a key this node has not installed (or has removed).
    #[error("datagram sealed under key {0}, which is not installed here")]
    UnknownKey(KeyId),
    /// The operating system's random generator failed (nothing was sealed).
    #[error("random generator failed: {0}")]
    Random(String),
}

/// Writes a new random key to `path`, hex-encoded with a trailing newline, in a file created with mode
/// 0600. Refuses to overwrite an existing file; the parent directory must exist. The error names the path.
pub fn generate_key_file(path: &Path) -> io::Result<()> {
    let named =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot create key file {}: {e}", path.display()));
    let key = ClusterKey::generate()
        .map_err(|e| io::Error::other(format!("cannot create key file {}: {e}", path.display())))?;
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(named)?;
    let mut text = key.to_hex();
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(named)?;
    f.sync_all().map_err(named)
}

/// Loads a key file written by [`generate_key_file`], refusing it if its group or others may read or
/// write it (mode `& 0o077 != 0`). Surrounding whitespace is ignored; upper- and lowercase hex are accepted.
pub fn load_key(path: &Path) -> Result<ClusterKey, KeyError> {
    let io_err = |source| KeyError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile { path: path.to_path_buf() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_path_buf(), mode });
    }
    // A key file is 65 bytes; anything far larger is not one, and is not read into memory.
    if meta.len() > 1024 {
        return Err(KeyError::Format {
            path: path.to_path_buf(),
            detail: format!("{} bytes long", meta.len()),
        });
    }
    let text = std::fs::read(path).map_err(io_err)?;
    let hex = text.trim_ascii();
    let format = |detail: String| KeyError::Format { path: path.to_path_buf(), detail };
    if hex.len() != KEY_BYTES * 2 {
        return Err(format(format!("{} characters", hex.len())));
    }
    let mut key = [0u8; KEY_BYTES];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(hi), Some(lo)) => key[i] = hi << 4 | lo,
            _ => return Err(format(format!("non-hex character at offset {}", 2 * i))),
        }
    }
    Ok(ClusterKey(key))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A key's public name: the first four bytes of SHA-256 over a domain label and the key, shown as
/// eight hex digits (`cohort key list`). It tells keys apart and is carried in every datagram so a
/// receiver picks the key at once; it reveals nothing usable about the key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; KEY_ID_BYTES]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = String;

    /// Eight hex digits, as [`KeyId`]'s `Display` writes them.
    fn from_str(s: &str) -> Result<KeyId, String> {
        let b = s.trim().as_bytes();
        if b.len() != KEY_ID_BYTES * 2 {
            return Err(format!("key id {s:?} is not {} hex digits", KEY_ID_BYTES * 2));
        }
        let mut id = [0u8; KEY_ID_BYTES];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            match (hex_digit(pair[0]), hex_digit(pair[1])) {
                (Some(hi), Some(lo)) => id[i] = hi << 4 | lo,
                _ => return Err(format!("key id {s:?} is not {} hex digits", KEY_ID_BYTES * 2)),
            }
        }
        Ok(KeyId(id))
    }
}

impl ClusterKey {
    /// This key's [`KeyId`].
    pub fn id(&self) -> KeyId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"cohort cluster key id v1\0");
        h.update(self.0);
        let d = h.finalize();
        let mut id = [0u8; KEY_ID_BYTES];
        id.copy_from_slice(&d[..KEY_ID_BYTES]);
        KeyId(id)
    }
}

/// Who sealed a datagram and its place in the sender's sequence: the clear, authenticated header of
/// every sealed datagram, and the source of its nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealHeader {
    /// The key it is sealed under.
    pub key_id: KeyId,
    /// The sending node.
    pub node: u32,
    /// The sender's epoch: its incarnation, or 0 before one exists (the epoch inquiry).
    pub epoch: u64,
    /// The sender's datagram counter: strictly increasing over the sender's process.
    pub counter: u64,
}

impl SealHeader {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(SEAL_VERSION);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&self.node.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.counter.to_le_bytes());
    }

    /// The 24-byte XChaCha20 nonce of this header's datagram to node `to`: sender, receiver, epoch,
    /// counter. Distinct (sender, receiver, epoch, counter) give distinct nonces (see the module docs for
    /// why none repeats under a key). The receiver is not sent: it uses its own id, so a datagram
    /// replayed at another node than the one it was sealed for fails to authenticate there.
    fn nonce(&self, to: u32) -> [u8; NONCE_BYTES] {
        let mut n = [0u8; NONCE_BYTES];
        n[..4].copy_from_slice(&self.node.to_le_bytes());
        n[4..8].copy_from_slice(&to.to_le_bytes());
        n[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        n[16..24].copy_from_slice(&self.counter.to_le_bytes());
        n
    }
}

/// Reads the clear header of a sealed datagram without authenticating anything: what the receiver
/// needs to pick the key and to check the replay window cheaply before it spends a decryption.
/// Nothing in it may be trusted until [`KeyRing::open`] succeeded.
pub fn peek_header(datagram: &[u8]) -> Result<SealHeader, CryptoError> {
    if datagram.len() < SEAL_OVERHEAD {
        return Err(CryptoError::TooShort { len: datagram.len() });
    }
    if datagram[0] != SEAL_VERSION {
        return Err(CryptoError::Version(datagram[0]));
    }
    let mut key_id = [0u8; KEY_ID_BYTES];
    key_id.copy_from_slice(&datagram[1..5]);
    let u32_at = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&datagram[i..i + 4]);
        u32::from_le_bytes(b)
    };
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&datagram[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Ok(SealHeader { key_id: KeyId(key_id), node: u32_at(5), epoch: u64_at(9), counter: u64_at(17) })
}

/// Why a change of the key ring was refused. Nothing changed in any case.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyRingError {
    /// `use` or `remove` named a key the ring does not hold.
    #[error("key {0} is not installed (cohort key list shows the installed keys)")]
    Unknown(KeyId),
    /// `remove` named the primary key, which senders use.
    #[error("key {0} is the primary key and cannot be removed: make another key primary first (cohort key use <key-id>)")]
    RemovePrimary(KeyId),
    /// `install` of a key whose id an installed key already has.
    #[error("key {0} is already installed")]
    Duplicate(KeyId),
    /// The change could not be recorded for the next start; it was undone.
    #[error("cannot record the key ring in {path}: {reason}; nothing was changed")]
    Save {
        /// The ring file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
}

/// One key of a ring: its cipher and where it came from (for `cohort key list`).
#[derive(Clone)]
struct RingKey {
    aead: XChaCha20Poly1305,
    source: String,
    origin: KeyOrigin,
}

/// Who put a key into the ring, which decides who may take it out: a reload (SIGHUP) installs and
/// removes the keys of the configuration (`node.key_file`, `node.accept_key_files`) and never touches a
/// key installed by `cohort key install`, which only `cohort key remove` removes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrigin {
    /// Read from a key file the configuration names, at start or at a reload.
    Config,
    /// Installed by `cohort key install` through the operator socket. The default of ring files written
    /// before origins were recorded: such a key is then kept, never removed by a reload.
    #[default]
    Command,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyOrigin::Config => "config",
            KeyOrigin::Command => "command",
        })
    }
}

/// Seals and opens datagrams of one cluster with a ring of keys, as knet and Serf do: every installed
/// key is accepted on receipt (the datagram names its key), the primary key seals. Rotating the
/// cluster key is install the new key everywhere, make it primary everywhere, remove the old one
/// everywhere, with no moment at which two nodes cannot read each other.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, RingKey>,
    primary: KeyId,
    cluster: Box<[u8]>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("cluster", &String::from_utf8_lossy(&self.cluster))
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("primary", &self.primary)
            .finish()
    }
}

/// One installed key as `cohort key list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyInfo {
    /// The key's id, eight hex digits.
    pub id: String,
    /// Senders use this key.
    pub primary: bool,
    /// Where it came from: the key file it was read from.
    pub source: String,
    /// Who installed it: the configuration or `cohort key install` (`cohort key list`'s FROM column).
    #[serde(default)]
    pub from: KeyOrigin,
}

impl KeyRing {
    /// A ring of one key, primary, for `cluster`'s datagrams. `source` names where the key came from;
    /// the key is the configuration's ([`KeyOrigin::Config`]).
    pub fn new(key: &ClusterKey, source: &str, cluster: &str) -> KeyRing {
        let id = key.id();
        let mut keys = BTreeMap::new();
        keys.insert(
            id,
            RingKey {
                aead: XChaCha20Poly1305::new(Key::from_slice(&key.0)),
                source: source.into(),
                origin: KeyOrigin::Config,
            },
        );
        KeyRing { keys, primary: id, cluster: cluster.as_bytes().into() }
    }

    /// The primary key's id.
    pub fn primary(&self) -> KeyId {
        self.primary
    }

    /// The installed keys, in id order.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|(id, k)| KeyInfo {
                id: id.to_string(),
                primary: *id == self.primary,
                source: k.source.clone(),
                from: k.origin,
            })
            .collect()
    }

    /// Adds `key` as installed by a command ([`KeyOrigin::Command`]): accepted on receipt from now on,
    /// not yet used to seal.
    pub fn install(&mut self, key: &ClusterKey, source: &str) -> Result<KeyId, KeyRingError> {
        self.install_from(key, source, KeyOrigin::Command)
    }

    /// Adds `key`, installed by `origin`: accepted on receipt from now on, not yet used to seal.
    pub fn install_from(
        &mut self,
        key: &ClusterKey,
        source: &str,
        origin: KeyOrigin,
    ) -> Result<KeyId, KeyRingError> {
        let id = key.id();
        if self.keys.contains_key(&id) {
            return Err(KeyRingError::Duplicate(id));
        }
        self.keys.insert(
            id,
            RingKey { aead: XChaCha20Poly1305::new(Key::from_slice(&key.0)), source: source.into(), origin },
        );
        Ok(id)
    }

    /// Makes the installed key `id` the one that seals.
    pub fn use_key(&mut self, id: KeyId) -> Result<(), KeyRingError> {
        if !self.keys.contains_key(&id) {
            return Err(KeyRingError::Unknown(id));
        }
        self.primary = id;
        Ok(())
    }

    /// Removes the installed key `id`; the primary key cannot be removed.
    pub fn remove(&mut self, id: KeyId) -> Result<(), KeyRingError> {
        if id == self.primary {
            return Err(KeyRingError::RemovePrimary(id));
        }
        self.keys.remove(&id).map(|_| ()).ok_or(KeyRingError::Unknown(id))
    }

    /// Seals `plaintext` under the primary key as datagram `counter` of `node` to node `to` in `epoch`,
    /// into `out` (cleared first; its capacity is reused). On error `out` is left empty.
    ///
    /// The caller must never seal two datagrams with the same (node, to, epoch, counter) under one key:
    /// the transport's counters only grow, and an epoch belongs to one incarnation (module docs).
    pub fn seal_into(
        &self,
        node: u32,
        to: u32,
        epoch: u64,
        counter: u64,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        out.clear();
        let header = SealHeader { key_id: self.primary, node, epoch, counter };
        let Some(key) = self.keys.get(&self.primary) else {
            // The primary is always installed (remove refuses it); kept as an error, not a panic.
            return Err(CryptoError::UnknownKey(self.primary));
        };
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        header.write(out);
        let mut aad = Vec::with_capacity(HEADER_BYTES + self.cluster.len());
        aad.extend_from_slice(&out[..HEADER_BYTES]);
        aad.extend_from_slice(&self.cluster);
        out.extend_from_slice(plaintext);
        match key.aead.encrypt_in_place_detached(
            XNonce::from_slice(&header.nonce(to)),
            &aad,
            &mut out[HEADER_BYTES..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            // Only possible for plaintexts beyond 256 GiB, which no datagram is; kept as an error anyway.
            Err(_) => {
                out.clear();
                Err(CryptoError::Authentication)
            }
        }
    }

    /// Authenticates and decrypts a sealed datagram to node `to` (this node) under the key it names,
    /// returning its header and plaintext. Never panics, whatever the input; the only allocation is the
    /// returned plaintext.
    pub fn open(&self, datagram: &[u8], to: u32) -> Result<(SealHeader, Vec<u8>), CryptoError> {
        let header = peek_header(datagram)?;
        let key = self.keys.get(&header.key_id).ok_or(CryptoError::UnknownKey(header.key_id))?;
        let mut aad = Vec::with_capacity(HEADER_BYTES + self.cluster.len());
        aad.extend_from_slice(&datagram[..HEADER_BYTES]);
        aad.extend_from_slice(&self.cluster);
        let (body, tag) = datagram[HEADER_BYTES..].split_at(datagram.len() - HEADER_BYTES - TAG_BYTES);
        let mut plain = body.to_vec();
        key.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(&header.nonce(to)),
                &aad,
                &mut plain,
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok((header, plain))
    }
}

/// Seals one datagram of `cluster` under `key` as datagram `counter` of `node` to `to` in `epoch`. For
/// tests and one-off senders; the same (node, to, epoch, counter) must never be sealed twice under one
/// key.
pub fn seal(
    key: &ClusterKey,
    cluster: &str,
    node: u32,
    to: u32,
    epoch: u64,
    counter: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::new();
    KeyRing::new(key, "", cluster).seal_into(node, to, epoch, counter, plaintext, &mut out)?;
    Ok(out)
}

/// Opens one datagram of `cluster` to node `to` sealed under `key`, returning only the plaintext. Never
/// panics, whatever the input.
pub fn open(key: &ClusterKey, cluster: &str, to: u32, datagram: &[u8]) -> Result<Vec<u8>, CryptoError> {
    KeyRing::new(key, "", cluster).open(datagram, to).map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::from_bytes([b; KEY_BYTES])
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("cohort-crypto-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create scratch dir");
            Scratch(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sealed_datagram_opens_to_the_plaintext_and_its_header() {
        let k = key(7);
        let d = seal(&k, "prod", 3, 4, 9, 41, b"hello").expect("seal");
        assert_eq!(d.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(d[0], SEAL_VERSION);
        assert_eq!(open(&k, "prod", 4, &d).expect("open"), b"hello");
        // Sealed for node 4: at node 5 it does not authenticate.
        assert_eq!(open(&k, "prod", 5, &d), Err(CryptoError::Authentication));
        let ring = KeyRing::new(&k, "k", "prod");
        let (h, p) = ring.open(&d, 4).expect("open");
        assert_eq!(h, SealHeader { key_id: k.id(), node: 3, epoch: 9, counter: 41 });
        assert_eq!((p.as_slice(), peek_header(&d)), (&b"hello"[..], Ok(h)));
        let empty = seal(&k, "prod", 3, 4, 9, 42, b"").expect("seal");
        assert_eq!(open(&k, "prod", 4, &empty).expect("open"), b"");
    }

    #[test]
    fn ring_reuses_the_output_buffer_and_the_nonce_follows_the_header() {
        let k = key(1);
        let ring = KeyRing::new(&k, "k", "c");
        let mut buf = Vec::new();
        let mut nonces = std::collections::BTreeSet::new();
        for (node, to, epoch, counter) in
            [(1, 2, 1, 0), (1, 2, 1, 1), (1, 2, 2, 0), (2, 1, 1, 0), (1, 3, 1, 0), (1, 2, 0, 0), (1, 2, 0, 1)]
        {
            let msg = vec![counter as u8; 10];
            ring.seal_into(node, to, epoch, counter, &msg, &mut buf).expect("seal");
            let h = peek_header(&buf).expect("header");
            assert!(nonces.insert(h.nonce(to)), "nonce repeated for {h:?} to {to}");
            assert_eq!(ring.open(&buf, to).expect("open").1, msg);
        }
        // Changing the header's epoch or counter changes the nonce and the associated data: the tag fails.
        ring.seal_into(1, 2, 5, 7, b"x", &mut buf).expect("seal");
        let mut t = buf.clone();
        t[17] ^= 1;
        assert_eq!(ring.open(&t, 2), Err(CryptoError::Authentication));
    }

    #[test]
    fn any_modified_byte_fails_to_open() {
        let k = key(7);
        let d = seal(&k, "prod", 1, 2, 1, 1, b"some datagram").expect("seal");
        for i in 1..d.len() {
            let mut t = d.clone();
            t[i] ^= 0x01;
            let e = open(&k, "prod", 2, &t).expect_err("modified");
            // Bytes 1..5 are the key id: another id names a key that is not installed.
            let want = if (1..5).contains(&i) {
                CryptoError::UnknownKey(peek_header(&t).expect("header").key_id)
            } else {
                CryptoError::Authentication
            };
            assert_eq!(e, want, "byte {i}");
        }
        let mut t = d.clone();
        t[0] = 1;
        assert_eq!(open(&k, "prod", 2, &t), Err(CryptoError::Version(1)));
        assert_eq!(open(&k, "prod", 2, &d[..d.len() - 1]), Err(CryptoError::Authentication));
        assert_eq!(open(&k, "prod", 2, &d[..10]), Err(CryptoError::TooShort { len: 10 }));
    }

    #[test]
    fn another_cluster_or_key_fails_to_open() {
        let d = seal(&key(7), "prod", 1, 2, 1, 1, b"x").expect("seal");
        assert_eq!(open(&key(7), "staging", 2, &d), Err(CryptoError::Authentication));
        assert_eq!(open(&key(8), "prod", 2, &d), Err(CryptoError::UnknownKey(key(7).id())));
    }

    #[test]
    fn ring_accepts_every_installed_key_and_seals_with_the_primary() {
        let (old, new) = (key(1), key(2));
        let mut ring = KeyRing::new(&old, "old.key", "c");
        let by_old = seal(&old, "c", 1, 2, 1, 1, b"old").expect("seal");
        let by_new = seal(&new, "c", 1, 2, 1, 2, b"new").expect("seal");
        assert_eq!(ring.open(&by_new, 2), Err(CryptoError::UnknownKey(new.id())));
        assert_eq!(ring.install(&new, "new.key"), Ok(new.id()));
        assert_eq!(ring.install(&new, "again.key"), Err(KeyRingError::Duplicate(new.id())));
        assert_eq!(ring.open(&by_new, 2).expect("open").1, b"new");
        assert_eq!(ring.open(&by_old, 2).expect("open").1, b"old");
        let mut buf = Vec::new();
        ring.seal_into(1, 2, 1, 3, b"x", &mut buf).expect("seal");
        assert_eq!(peek_header(&buf).expect("header").key_id, old.id());
        ring.use_key(new.id()).expect("use");
        ring.seal_into(1, 2, 1, 4, b"x", &mut buf).expect("seal");
        assert_eq!(peek_header(&buf).expect("header").key_id, new.id());
        let e = ring.remove(new.id()).expect_err("primary");
        assert_eq!(e, KeyRingError::RemovePrimary(new.id()));
        assert!(e.to_string().contains("primary key and cannot be removed"), "{e}");
        ring.remove(old.id()).expect("remove the old key");
        assert_eq!(ring.open(&by_old, 2), Err(CryptoError::UnknownKey(old.id())));
        assert_eq!(ring.remove(old.id()), Err(KeyRingError::Unknown(old.id())));
        assert_eq!(ring.use_key(old.id()), Err(KeyRingError::Unknown(old.id())));
        assert_eq!(
            ring.list(),
            vec![KeyInfo {
                id: new.id().to_string(),
                primary: true,
                source: "new.key".into(),
                from: KeyOrigin::Command
            }]
        );
    }

    #[test]
    fn key_ids_are_eight_hex_digits_that_parse_back() {
        let id = key(9).id();
        let text = id.to_string();
        assert_eq!(text.len(), 8);
        assert_eq!(text.parse::<KeyId>(), Ok(id));
        assert_ne!(key(9).id(), key(10).id());
        assert!("xyz".parse::<KeyId>().is_err());
        assert!("0123456789".parse::<KeyId>().is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let k = key(0xab);
        let s = format!("{k:?} {:?}", KeyRing::new(&k, "f", "c"));
        assert_eq!(
            s,
            format!(
                "ClusterKey(..) KeyRing {{ cluster: \"c\", keys: [KeyId({0})], primary: KeyId({0}) }}",
                k.id()
            )
        );
    }

    #[test]
    fn key_file_round_trips_with_mode_0600_and_is_never_overwritten() {
        let dir = Scratch::new("roundtrip");
        let p = dir.0.join("cluster.key");
        generate_key_file(&p).expect("keygen");
        let meta = std::fs::metadata(&p).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let k = load_key(&p).expect("load");
        assert_eq!(k.to_hex(), text.trim_end());
        let err = generate_key_file(&p).expect_err("must refuse to overwrite");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), text);
        let missing = dir.0.join("no/such/dir/key");
        let err = generate_key_file(&missing).expect_err("parent must exist");
        assert!(err.to_string().contains("no/such/dir/key"), "{err}");
    }

    #[test]
    fn key_file_readable_by_others_is_refused_with_the_chmod_to_run() {
        let dir = Scratch::new("mode");
        let p = dir.0.join("k");
        generate_key_file(&p).expect("keygen");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_key(&p).expect_err("0644 must be refused");
        let ps = p.display().to_string();
        assert_eq!(
            err.to_string(),
            format!("key file {ps} is readable by others (mode 0644); run: chmod 600 {ps}")
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o620)).expect("chmod");
        assert!(matches!(load_key(&p), Err(KeyError::Permissions { mode: 0o620, .. })));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(load_key(&p).is_ok());
    }

    #[test]
    fn malformed_key_files_are_refused_naming_the_file() {
        let dir = Scratch::new("format");
        for (name, body) in
            [("short", "abcd\n"), ("nonhex", &*format!("{}zz\n", "a".repeat(62))), ("empty", "")]
        {
            let p = dir.0.join(name);
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p).expect("create");
            f.write_all(body.as_bytes()).expect("write");
            let err = load_key(&p).expect_err("malformed");
            assert!(matches!(err, KeyError::Format { .. }), "{name}: {err}");
            assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        }
        let err = load_key(&dir.0.join("absent")).expect_err("missing");
        assert!(err.to_string().starts_with("cannot read key file "), "{err}");
        assert!(matches!(load_key(&dir.0), Err(KeyError::NotAFile { .. })));
    }

    proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let r = open(&key(3), "prod", 2, &bytes);
            prop_assert!(r.is_err());
            let _ = peek_header(&bytes);
        }

        #[test]
        fn opening_a_sealed_datagram_with_one_arbitrary_change_fails(
            msg in proptest::collection::vec(any::<u8>(), 0..100),
            pos in any::<prop::sample::Index>(),
            flip in 1u8..,
        ) {
            let k = key(3);
            let mut d = seal(&k, "prod", 1, 2, 2, 3, &msg).expect("seal");
            prop_assert_eq!(open(&k, "prod", 2, &d).expect("open"), msg);
            let i = pos.index(d.len());
            d[i] ^= flip;
            prop_assert!(open(&k, "prod", 2, &d).is_err());
        }
    }
}
