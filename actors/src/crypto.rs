//! The cluster key and the authenticated encryption of every datagram.
//!
//! **Owns:** the key file format (`cohort keygen`), the checks made when loading it, and the sealed
//! datagram format. **Decides nothing** about what a datagram means: a datagram that opens is handed on
//! as plaintext bytes, one that does not is an error the caller drops and counts.
//!
//! # Key file
//! 32 random bytes, written as 64 lowercase hex digits and a newline, in a file of mode 0600 that is never
//! overwritten ([`generate_key_file`]). [`load_key`] refuses a key file that its group or others may read
//! or write: the key is the cluster's only credential.
//!
//! # Sealed datagram
//! ```text
//! [version = 1 : 1 byte][nonce : 12 bytes][ChaCha20-Poly1305 ciphertext : len(plaintext) bytes][tag : 16 bytes]
//! ```
//! The associated data is the cluster name, so a datagram of another cluster that happens to share the key
//! fails to authenticate exactly like a forged one. The version byte leaves room for another AEAD later
//! (for example XChaCha20-Poly1305 with 24-byte nonces) without a flag day.
//!
//! # Nonces
//! Every datagram gets a fresh random 96-bit nonce from the operating system's generator (drawn in
//! batches by [`ClusterCipher`] to save system calls; every nonce is still used exactly once). Random
//! nonces need no state that would have to survive a restart or be coordinated between the nodes that
//! share the key, which counters would. The price is the birthday bound: after `n` datagrams sealed
//! under one key, cluster-wide, the chance that two shared a nonce is about `n² / 2⁹⁷`. At 100,000
//! datagrams per second (the core batches many messages per datagram, so this is well above our
//! load) a year is about 2⁴¹·⁵ datagrams, a chance of about 2⁻¹⁴; the conventional limit of 2³²
//! datagrams per key keeps it below 2⁻³². Operators running near those rates for months should rotate
//! the key (a cluster restart with a new key file); version 2 of the format would lift the limit.
//!
//! # Replays
//! Authentication proves a datagram was sealed by a key holder of this cluster, not that it is fresh:
//! an attacker on the path can replay captured datagrams. That is tolerated by the protocol layer, which
//! is idempotent (sequence numbers and view ids make duplicates and stale messages no-ops, and a node's
//! epoch tells an old incarnation's datagrams apart), exactly as it tolerates duplication by the network.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The format version written as the first byte of every sealed datagram.
pub const SEAL_VERSION: u8 = 1;
/// Length of the random nonce.
pub const NONCE_BYTES: usize = 12;
/// Length of the Poly1305 tag.
pub const TAG_BYTES: usize = 16;
/// Bytes a sealed datagram has beyond its plaintext: version, nonce and tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_BYTES + TAG_BYTES;
/// Length of a cluster key.
pub const KEY_BYTES: usize = 32;

const HEADER_BYTES: usize = 1 + NONCE_BYTES;
/// Nonces drawn from the operating system per system call by [`ClusterCipher`].
const NONCE_BATCH: usize = 64;

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
    /// Shorter than the version, nonce and tag.
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

/// Seals and opens datagrams of one cluster: the cipher keyed once, the cluster name as associated
/// data, and a pool of random nonces refilled by one system call per 64 datagrams.
///
/// This is what the transport holds; [`seal`] and [`open`] are one-shot conveniences over it.
pub struct ClusterCipher {
    aead: ChaCha20Poly1305,
    cluster: Box<[u8]>,
    nonces: [u8; NONCE_BYTES * NONCE_BATCH],
    next_nonce: usize,
}

impl fmt::Debug for ClusterCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCipher")
            .field("cluster", &String::from_utf8_lossy(&self.cluster))
            .finish_non_exhaustive()
    }
}

impl ClusterCipher {
    /// A cipher for `cluster`'s datagrams under `key`.
    pub fn new(key: &ClusterKey, cluster: &str) -> ClusterCipher {
        ClusterCipher {
            aead: ChaCha20Poly1305::new(Key::from_slice(&key.0)),
            cluster: cluster.as_bytes().into(),
            nonces: [0; NONCE_BYTES * NONCE_BATCH],
            // Empty pool: the first seal draws a batch.
            next_nonce: NONCE_BATCH,
        }
    }

    fn fresh_nonce(&mut self) -> Result<[u8; NONCE_BYTES], CryptoError> {
        if self.next_nonce == NONCE_BATCH {
            getrandom::getrandom(&mut self.nonces).map_err(|e| CryptoError::Random(e.to_string()))?;
            self.next_nonce = 0;
        }
        let start = self.next_nonce * NONCE_BYTES;
        let mut n = [0u8; NONCE_BYTES];
        n.copy_from_slice(&self.nonces[start..start + NONCE_BYTES]);
        self.next_nonce += 1;
        Ok(n)
    }

    /// Seals `plaintext` into `out` (cleared first; its capacity is reused, so a caller that keeps one
    /// buffer allocates nothing per datagram). On error `out` is left empty.
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        out.clear();
        let nonce = self.fresh_nonce()?;
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        match self.aead.encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            &self.cluster,
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

    /// Seals `plaintext` into a new buffer.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        self.seal_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// Authenticates and decrypts a sealed datagram. Never panics, whatever the input; the only
    /// allocation is the returned plaintext.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if datagram.len() < SEAL_OVERHEAD {
            return Err(CryptoError::TooShort { len: datagram.len() });
        }
        if datagram[0] != SEAL_VERSION {
            return Err(CryptoError::Version(datagram[0]));
        }
        let nonce = Nonce::from_slice(&datagram[1..HEADER_BYTES]);
        let (body, tag) = datagram[HEADER_BYTES..].split_at(datagram.len() - HEADER_BYTES - TAG_BYTES);
        let mut plain = body.to_vec();
        self.aead
            .decrypt_in_place_detached(nonce, &self.cluster, &mut plain, Tag::from_slice(tag))
            .map_err(|_| CryptoError::Authentication)?;
        Ok(plain)
    }
}

/// Seals one datagram of `cluster` under `key`: `[1][nonce][ciphertext][tag]`, `SEAL_OVERHEAD` bytes
/// longer than `plaintext`. Fails only if the operating system's random generator fails.
pub fn seal(key: &ClusterKey, cluster: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    ClusterCipher::new(key, cluster).seal(plaintext)
}

/// Opens one datagram of `cluster` sealed under `key`. Never panics, whatever the input.
pub fn open(key: &ClusterKey, cluster: &str, datagram: &[u8]) -> Result<Vec<u8>, CryptoError> {
    ClusterCipher::new(key, cluster).open(datagram)
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
    fn sealed_datagram_opens_to_the_plaintext() {
        let k = key(7);
        let d = seal(&k, "prod", b"hello").expect("seal");
        assert_eq!(d.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(d[0], SEAL_VERSION);
        assert_eq!(open(&k, "prod", &d).expect("open"), b"hello");
        let empty = seal(&k, "prod", b"").expect("seal");
        assert_eq!(open(&k, "prod", &empty).expect("open"), b"");
    }

    #[test]
    fn cipher_reuses_the_output_buffer_and_never_repeats_a_nonce() {
        let k = key(1);
        let mut c = ClusterCipher::new(&k, "c");
        let mut buf = Vec::new();
        let mut nonces = std::collections::BTreeSet::new();
        for i in 0..(3 * NONCE_BATCH) {
            let msg = vec![i as u8; i % 100];
            c.seal_into(&msg, &mut buf).expect("seal");
            assert!(nonces.insert(buf[1..HEADER_BYTES].to_vec()), "nonce repeated");
            assert_eq!(c.open(&buf).expect("open"), msg);
        }
    }

    #[test]
    fn any_modified_byte_fails_to_authenticate() {
        let k = key(7);
        let d = seal(&k, "prod", b"some datagram").expect("seal");
        for i in 1..d.len() {
            let mut t = d.clone();
            t[i] ^= 0x01;
            assert_eq!(open(&k, "prod", &t), Err(CryptoError::Authentication), "byte {i}");
        }
        let mut t = d.clone();
        t[0] = 2;
        assert_eq!(open(&k, "prod", &t), Err(CryptoError::Version(2)));
        assert_eq!(open(&k, "prod", &d[..d.len() - 1]), Err(CryptoError::Authentication));
        assert_eq!(open(&k, "prod", &d[..10]), Err(CryptoError::TooShort { len: 10 }));
    }

    #[test]
    fn another_cluster_or_key_fails_to_authenticate() {
        let d = seal(&key(7), "prod", b"x").expect("seal");
        assert_eq!(open(&key(7), "staging", &d), Err(CryptoError::Authentication));
        assert_eq!(open(&key(8), "prod", &d), Err(CryptoError::Authentication));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let s = format!("{:?} {:?}", key(0xab), ClusterCipher::new(&key(0xab), "c"));
        assert_eq!(s, "ClusterKey(..) ClusterCipher { cluster: \"c\", .. }");
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
            let r = open(&key(3), "prod", &bytes);
            prop_assert!(r.is_err());
        }

        #[test]
        fn opening_a_sealed_datagram_with_one_arbitrary_change_fails(
            msg in proptest::collection::vec(any::<u8>(), 0..100),
            pos in any::<prop::sample::Index>(),
            flip in 1u8..,
        ) {
            let k = key(3);
            let mut d = seal(&k, "prod", &msg).expect("seal");
            prop_assert_eq!(open(&k, "prod", &d).expect("open"), msg);
            let i = pos.index(d.len());
            d[i] ^= flip;
            prop_assert!(open(&k, "prod", &d).is_err());
        }
    }
}
