//! The cluster key file's checks, made before anything is written: by `cohort agent` before it creates
//! its data directory, takes the lock or persists an epoch, and by `cohort config check`.
//!
//! A key file is refused when it does not exist or cannot be read, is not a regular file, is owned by
//! anyone but the agent's user or root, lets its group or others read or write it (mode `& 0o077`), or
//! does not hold exactly one 32-byte key in 64 hex digits (as `cohort keygen` writes it). Every refusal
//! is a [`KeyFileError`]: one line that names the file, says what is wrong and how to fix it. The CLI
//! exits with code 2 on one (a configuration mistake that a restart would only repeat).
//!
//! Why the owner matters: whoever owns the file can change its mode and contents, so a key owned by
//! another unprivileged user is a key that user controls. Root is accepted because root can read the
//! agent's memory anyway.
//!
//! **Deliberately absent:** parsing the key itself ([`crate::crypto::load_key`] does that, after these
//! checks), and any write: a bad key is never "repaired".

use crate::crypto::{self, ClusterKey, KeyError, KEY_BYTES};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a key file is refused. Nothing was written in any case; each variant is the operator's to fix.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// No file at the path (`node.key_file`).
    #[error(
        "key file {path} (node.key_file) does not exist: make one with `cohort keygen --out {path}` and copy it to every node",
        path = path.display()
    )]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// The file exists but cannot be inspected or read (permissions of the file or a directory above it).
    #[error("key file {} (node.key_file) cannot be read: {reason}", path.display())]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A directory, a device or a socket.
    #[error("key file {} (node.key_file) is not a regular file", path.display())]
    NotAFile {
        /// The key file.
        path: PathBuf,
    },
    /// Owned by another user than the agent's or root.
    #[error(
        "key file {path} (node.key_file) is owned by uid {owner}: expected uid {expected} (the agent's user) or root; run: chown {expected} {path}",
        path = path.display()
    )]
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The uid the agent runs as.
        expected: u32,
    },
    /// Its group or others may read, write or execute it.
    #[error(
        "key file {path} (node.key_file) has mode {mode:04o}: its group and others must have no access; run: chmod 600 {path}",
        path = path.display()
    )]
    Mode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not one key of [`KEY_BYTES`] bytes in hex.
    #[error("key file {} (node.key_file) is malformed: {detail}", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong, and what is expected.
        detail: String,
    },
}

/// Whose key it is: the owners a key file may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerRule {
    /// The agent runs as this uid: the file must be owned by it or by root.
    Agent(u32),
    /// Any owner (`cohort config check` run by root, which cannot know which user the agent runs as).
    Any,
}

impl OwnerRule {
    /// The rule for a process: the agent's own effective uid; for `config check`, the same unless it runs
    /// as root.
    pub fn for_config_check() -> OwnerRule {
        match effective_uid() {
            0 => OwnerRule::Any,
            uid => OwnerRule::Agent(uid),
        }
    }
}

/// What a key file that passed looks like, for `cohort config check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFileInfo {
    /// The key file.
    pub path: PathBuf,
    /// Its owner.
    pub owner: u32,
    /// Its permission bits.
    pub mode: u32,
}

impl KeyFileInfo {
    /// One line for `cohort config check`.
    pub fn describe(&self, rule: OwnerRule) -> String {
        let who = match rule {
            OwnerRule::Agent(_) => String::new(),
            OwnerRule::Any if self.owner == 0 => String::new(),
            OwnerRule::Any => format!("; the agent must run as uid {} or root to read it", self.owner),
        };
        format!(
            "key file {}: ok (owner uid {}, mode {:04o}, a {KEY_BYTES}-byte key){who}",
            self.path.display(),
            self.owner,
            self.mode
        )
    }
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks the key file at `path` and loads the key. See the module documentation for what is refused.
///
/// # Errors
/// The first problem found, in the order: existence, type, owner, mode, contents.
pub fn check(path: &Path, rule: OwnerRule) -> Result<(ClusterKey, KeyFileInfo), KeyFileError> {
    let p = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KeyFileError::Missing { path: p() },
        _ => KeyFileError::Unreadable { path: p(), reason: e.to_string() },
    })?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile { path: p() });
    }
    if let OwnerRule::Agent(expected) = rule {
        if meta.uid() != expected && meta.uid() != 0 {
            return Err(KeyFileError::Owner { path: p(), owner: meta.uid(), expected });
        }
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Mode { path: p(), mode });
    }
    let key = crypto::load_key(path).map_err(|e| match e {
        KeyError::Io { source, .. } => KeyFileError::Unreadable { path: p(), reason: source.to_string() },
        KeyError::NotAFile { .. } => KeyFileError::NotAFile { path: p() },
        KeyError::Permissions { mode, .. } => KeyFileError::Mode { path: p(), mode },
        KeyError::Format { detail, .. } => KeyFileError::Malformed {
            path: p(),
            detail: format!(
                "{detail}; expected one {KEY_BYTES}-byte key as {} hex digits, as `cohort keygen` writes it",
                KEY_BYTES * 2
            ),
        },
    })?;
    Ok((key, KeyFileInfo { path: p(), owner: meta.uid(), mode }))
}

/// The file in the data directory that remembers the key ring across restarts: the installed keys'
/// ids and files and which is primary (`cohort key ...`), never key material.
pub const RING_FILE: &str = "keyring.json";

/// A key file's refusal for the configuration key that names it (`node.key_file`,
/// `node.accept_key_files`): the [`KeyFileError`]'s line with that key in it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{}", .error.to_string().replace("(node.key_file)", &format!("({})", .key)))]
pub struct ConfiguredKeyError {
    /// The configuration key that names the file.
    pub key: &'static str,
    /// What is wrong with the file.
    pub error: KeyFileError,
}

/// The keys the configuration names, read and checked: `node.key_file`'s (the primary) and those of
/// `node.accept_key_files`, each with its file.
#[derive(Clone, Debug)]
pub struct ConfiguredKeys {
    /// `node.key_file`'s key and file.
    pub primary: (ClusterKey, PathBuf),
    /// `node.accept_key_files`' keys and files, in the configuration's order.
    pub accept: Vec<(ClusterKey, PathBuf)>,
    /// What each file looked like, with the key that names it, for `cohort config check`.
    pub infos: Vec<(&'static str, KeyFileInfo)>,
}

impl ConfiguredKeys {
    /// Every configured key with its file, the primary first.
    pub fn all(&self) -> impl Iterator<Item = &(ClusterKey, PathBuf)> {
        std::iter::once(&self.primary).chain(&self.accept)
    }
}

/// Checks the key files `key_file` (`node.key_file`) and `accept` (`node.accept_key_files`) with
/// [`check`] and reads their keys.
///
/// # Errors
/// The first file that fails a check, with the key that names it.
pub fn check_configured(
    key_file: &Path,
    accept: &[PathBuf],
    rule: OwnerRule,
) -> Result<ConfiguredKeys, ConfiguredKeyError> {
    let (key, info) =
        check(key_file, rule).map_err(|error| ConfiguredKeyError { key: "node.key_file", error })?;
    let mut keys = ConfiguredKeys {
        primary: (key, key_file.to_path_buf()),
        accept: Vec::new(),
        infos: vec![("node.key_file", info)],
    };
    for path in accept {
        let (k, info) =
            check(path, rule).map_err(|error| ConfiguredKeyError { key: "node.accept_key_files", error })?;
        keys.accept.push((k, path.clone()));
        keys.infos.push(("node.accept_key_files", info));
    }
    Ok(keys)
}

/// The key ring file's entries, or none when there is no ring file.
///
/// # Errors
/// A ring file that cannot be read or is not one the agent wrote.
pub fn read_ring(ring_file: &Path) -> Result<Vec<crypto::KeyInfo>, KeyFileError> {
    let text = match std::fs::read_to_string(ring_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(KeyFileError::Unreadable { path: ring_file.to_path_buf(), reason: e.to_string() })
        }
    };
    serde_json::from_str(&text).map_err(|e| KeyFileError::Malformed {
        path: ring_file.to_path_buf(),
        detail: format!("not a key ring written by the agent: {e}"),
    })
}

/// The key ring a starting agent uses: the configured keys (`keys`: `node.key_file`'s and those of
/// `node.accept_key_files`, already checked, [`KeyOrigin::Config`](crypto::KeyOrigin::Config)), plus
/// every key the ring file `ring_file` lists as installed by `cohort key install` whose file is still
/// there, checked like `node.key_file`. The ring file's keys that came from the configuration are not
/// read again: the configuration of this start decides them. The primary is the ring file's primary
/// when that is a command's key installed again (a rotation with `cohort key` survives a restart),
/// else `node.key_file`'s key. A listed file that no longer exists is left out (the operator moved the
/// new key over `node.key_file`, or deleted an old one); a listed file that fails a check stops the
/// start, naming the file. Returns the ring and one line per thing worth a warning.
///
/// # Errors
/// An unreadable or malformed ring file, or a listed command key's file that fails a check.
pub fn load_ring(
    keys: &ConfiguredKeys,
    ring_file: &Path,
    cluster: &str,
    rule: OwnerRule,
) -> Result<(crypto::KeyRing, Vec<String>), KeyFileError> {
    let (key, key_path) = &keys.primary;
    let mut ring = crypto::KeyRing::new(key, &key_path.display().to_string(), cluster);
    for (k, path) in &keys.accept {
        // The same key under two names: one is enough.
        let _ = ring.install_from(k, &path.display().to_string(), crypto::KeyOrigin::Config);
    }
    let mut notes = Vec::new();
    let listed = read_ring(ring_file)?;
    let mut primary = None;
    for k in listed.iter().filter(|k| k.from == crypto::KeyOrigin::Command) {
        let path = Path::new(&k.source);
        let installed = ring.list().into_iter().find(|i| i.id == k.id);
        let id = if installed.is_some() {
            k.id.parse::<crypto::KeyId>().ok()
        } else if !path.exists() {
            notes.push(format!(
                "key {} of the key ring ({}) is left out: its file {} no longer exists",
                k.id,
                ring_file.display(),
                path.display()
            ));
            None
        } else {
            let (other, _) = check(path, rule)?;
            if other.id().to_string() != k.id {
                notes.push(format!(
                    "key file {} now holds key {} instead of {} (key ring {}): installed as it is",
                    path.display(),
                    other.id(),
                    k.id,
                    ring_file.display()
                ));
            }
            match ring.install(&other, &k.source) {
                Ok(id) => Some(id),
                Err(_) => Some(other.id()),
            }
        };
        if k.primary {
            primary = id;
        }
    }
    if let Some(p) = primary {
        if p != key.id() {
            notes.push(format!(
                "sealing under key {p}, the key ring's primary ({}) installed by `cohort key install`, \
                 not under node.key_file {} (key {}): point node.key_file at the primary key once a \
                 rotation is complete",
                ring_file.display(),
                key_path.display(),
                key.id()
            ));
        }
        let _ = ring.use_key(p);
    }
    Ok((ring, notes))
}

/// Writes the key ring's description (ids, files, primary; no key material) to `ring_file`: a
/// temporary file written and synced, then renamed over it, so a crash leaves the old or the new one.
pub fn save_ring(ring_file: &Path, keys: &[crypto::KeyInfo]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = ring_file.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(keys).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, ring_file)?;
    if let Some(dir) = ring_file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("cohort-keyfile-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("create a scratch dir");
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn each_problem_is_named_with_the_path() {
        let d = Dir::new("unit");
        let me = OwnerRule::Agent(effective_uid());
        let missing = d.0.join("absent.key");
        let e = check(&missing, me).expect_err("missing");
        assert_eq!(e, KeyFileError::Missing { path: missing.clone() });
        assert!(e.to_string().contains(&format!("cohort keygen --out {}", missing.display())), "{e}");

        assert_eq!(check(&d.0, me).expect_err("dir"), KeyFileError::NotAFile { path: d.0.clone() });

        let open = d.0.join("open.key");
        write(&open, &"ab".repeat(KEY_BYTES), 0o644);
        let e = check(&open, me).expect_err("0644");
        assert_eq!(e, KeyFileError::Mode { path: open.clone(), mode: 0o644 });
        assert!(e.to_string().contains("mode 0644") && e.to_string().contains("chmod 600"), "{e}");

        let short = d.0.join("short.key");
        write(&short, "abcd\n", 0o600);
        let e = check(&short, me).expect_err("short");
        assert!(matches!(e, KeyFileError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("4 characters") && e.to_string().contains("32-byte"), "{e}");

        let good = d.0.join("good.key");
        write(&good, &format!("{}\n", "ab".repeat(KEY_BYTES)), 0o400);
        let (_, info) = check(&good, me).expect("a good key");
        assert_eq!(info.mode, 0o400);
        assert_eq!(info.owner, effective_uid());
    }

    #[test]
    fn a_start_installs_the_configured_keys_and_the_command_keys_of_the_ring_file() {
        let d = Dir::new("ring");
        let me = OwnerRule::Agent(effective_uid());
        let file = |name: &str, byte: &str| {
            let p = d.0.join(name);
            write(&p, &byte.repeat(KEY_BYTES), 0o600);
            p
        };
        let (primary, accept, by_hand, dropped) = (
            file("primary.key", "01"),
            file("accept.key", "02"),
            file("hand.key", "03"),
            file("old.key", "04"),
        );
        let keys = check_configured(&primary, std::slice::from_ref(&accept), me).expect("good files");
        let id = |p: &Path| check(p, me).expect("key").0.id().to_string();
        // The previous run: the primary was installed by command; old.key came from the configuration
        // and is configured no longer.
        let info = |p: &Path, primary: bool, from: crypto::KeyOrigin| crypto::KeyInfo {
            id: id(p),
            primary,
            source: p.display().to_string(),
            from,
        };
        let ring_file = d.0.join(RING_FILE);
        save_ring(
            &ring_file,
            &[
                info(&dropped, false, crypto::KeyOrigin::Config),
                info(&by_hand, true, crypto::KeyOrigin::Command),
            ],
        )
        .expect("save");
        let (ring, _) = load_ring(&keys, &ring_file, "c", me).expect("load");
        let mut got: Vec<(String, bool, crypto::KeyOrigin)> =
            ring.list().into_iter().map(|k| (k.id, k.primary, k.from)).collect();
        got.sort();
        let mut want = vec![
            (id(&primary), false, crypto::KeyOrigin::Config),
            (id(&accept), false, crypto::KeyOrigin::Config),
            (id(&by_hand), true, crypto::KeyOrigin::Command),
        ];
        want.sort();
        assert_eq!(got, want, "old.key is not installed again; the command's primary stays primary");

        // A bad accept key file is refused naming node.accept_key_files.
        write(&accept, &"02".repeat(KEY_BYTES), 0o644);
        let e = check_configured(&primary, std::slice::from_ref(&accept), me).expect_err("0644");
        assert_eq!(e.key, "node.accept_key_files");
        assert!(
            e.to_string()
                .starts_with(&format!("key file {} (node.accept_key_files) has mode 0644", accept.display())),
            "{e}"
        );
    }

    #[test]
    fn another_users_file_is_refused_unless_any_owner_is_accepted() {
        let d = Dir::new("owner");
        let key = d.0.join("theirs.key");
        write(&key, &"cd".repeat(KEY_BYTES), 0o600);
        let me = effective_uid();
        // As root, give the file to `nobody` and check it for an agent running as root; otherwise check
        // this user's own file for an agent running as some other uid. Either way the owner is neither
        // the agent's uid nor root.
        let (owner, agent) = match std::os::unix::fs::chown(&key, Some(65534), None) {
            Ok(()) => (65534, me),
            Err(_) => (me, me.wrapping_add(4242)),
        };
        assert!(owner != 0 && owner != agent);
        let e = check(&key, OwnerRule::Agent(agent)).expect_err("another user's key");
        assert_eq!(e, KeyFileError::Owner { path: key.clone(), owner, expected: agent });
        assert!(e.to_string().contains(&format!("chown {agent} {}", key.display())), "{e}");
        let (_, info) = check(&key, OwnerRule::Any).expect("any owner");
        assert_eq!(info.owner, owner);
        assert!(info
            .describe(OwnerRule::Any)
            .contains(&format!("the agent must run as uid {owner} or root")));
    }
}
