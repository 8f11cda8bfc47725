//! The EpochRegistryActor: owns the data directory, the node's durable state and the lock on both.
//!
//! **Owns:** `<data_dir>` (created with mode 0700) and in it
//! - `lock`: held with an exclusive `flock` for the actor's whole life, so two agents can never share a
//!   data directory (and so never run under the same epoch);
//! - `state.rmp`: the core's [`Durable`] (epoch, highest view sequence number, registry), rmp-serde;
//! - `epoch`: the current epoch as a decimal number and a newline, for operators (`cat epoch`); the
//!   agent never reads it back.
//!
//! Every file is replaced atomically and durably: write `NAME.tmp`, fsync it, rename it over `NAME`,
//! fsync the directory. The reply to [`OpenEpoch`] and [`PersistDurable`] is sent only after that, and
//! the agent sends nothing under an epoch before the reply (guarantee G12: an epoch is on disk before
//! anything is sent under it, so a restarted agent can never reuse one).
//!
//! **Decides nothing** about what the state means: the new epoch is `max(old + 1, min_epoch)` as the
//! core asks, and the snapshot is whatever the core asked to persist. A `state.rmp` that cannot be
//! decoded is an error naming the file, never silently replaced by a fresh state: that would reuse epochs.
//!
//! The handlers block their arbiter for the duration of two fsyncs. That is the point (nothing may
//! overtake a persist), but the composition root may run this actor in an arbiter of its own.

use crate::messages::{LoadDurable, OpenEpoch, PersistDurable};
use actix::prelude::*;
use cohort::{Durable, Epoch};
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The durable state file.
pub const STATE_FILE: &str = "state.rmp";
/// The operators' copy of the epoch.
pub const EPOCH_FILE: &str = "epoch";
/// The lock file.
pub const LOCK_FILE: &str = "lock";

/// Why the data directory could not be opened or its state read or written. Each variant names the path.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Another agent holds the lock; nothing was changed.
    #[error("data directory {} is in use by another cohort agent (lock held on {})", dir.display(), lock.display())]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// An IO operation on a file or directory of the data directory failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create data directory`, `write`, `fsync`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `state.rmp` exists but does not decode: left untouched for the operator to inspect.
    #[error("corrupt state file {}: {detail} (not reset automatically: move it aside to start this node as new)", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
    },
    /// The epoch cannot be incremented any further.
    #[error("epoch in {} cannot be incremented past {}", path.display(), epoch.0)]
    EpochExhausted {
        /// The state file.
        path: PathBuf,
        /// The epoch on disk.
        epoch: Epoch,
    },
}

impl From<DataDirError> for io::Error {
    fn from(e: DataDirError) -> io::Error {
        let kind = match &e {
            DataDirError::InUse { .. } => io::ErrorKind::WouldBlock,
            DataDirError::Io { source, .. } => source.kind(),
            DataDirError::Corrupt { .. } => io::ErrorKind::InvalidData,
            DataDirError::EpochExhausted { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Owns the data directory; see the module docs. Build it with [`EpochRegistryActor::open`].
#[derive(Debug)]
pub struct EpochRegistryActor {
    dir: PathBuf,
    /// Held open (and locked) for the actor's lifetime; dropping it releases the lock.
    _lock: File,
    /// The epoch last written to the `epoch` file, so a persist that does not change it skips that file.
    epoch_file: Option<Epoch>,
}

impl EpochRegistryActor {
    /// Creates `data_dir` (mode 0700) if needed and takes the exclusive lock on `<data_dir>/lock`.
    /// Fails with [`DataDirError::InUse`] if another agent (or another `EpochRegistryActor`) holds it.
    pub fn open(data_dir: &Path) -> Result<EpochRegistryActor, DataDirError> {
        let dir = data_dir.to_path_buf();
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| DataDirError::Io { action, path, source }
        };
        let existed = dir.is_dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("create data directory", &dir))?;
        if !existed {
            // Make the new directory's entry durable too, or a crash could lose the directory with the
            // epoch inside it.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("open lock file", &lock_path))?;
        // `File::try_lock` is stable since Rust 1.89; the crate's declared rust-version (1.85) is behind
        // the toolchain it is built with. Remove this allow once `rust-version` says 1.89.
        #[allow(clippy::incompatible_msrv)]
        let locked = lock.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(DataDirError::InUse { dir, lock: lock_path }),
            Err(TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        // For operators: which process holds the lock. Best effort, the lock itself is what counts.
        let _ =
            lock.set_len(0).and_then(|()| (&lock).write_all(format!("{}\n", std::process::id()).as_bytes()));
        Ok(EpochRegistryActor { dir, _lock: lock, epoch_file: None })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the durable state: `Durable::default()` if `state.rmp` does not exist, an error naming the
    /// file if it cannot be read or decoded.
    pub fn load(&self) -> Result<Durable, DataDirError> {
        let path = self.dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => rmp_serde::from_slice(&bytes)
                .map_err(|e| DataDirError::Corrupt { path, detail: e.to_string() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Durable::default()),
            Err(source) => Err(DataDirError::Io { action: "read", path, source }),
        }
    }

    /// Starts a new incarnation: reads the state, sets `epoch = max(old + 1, min_epoch)`, persists it
    /// durably and returns it (registry and view sequence number as they were on disk).
    pub fn open_epoch(&mut self, min_epoch: Epoch) -> Result<Durable, DataDirError> {
        let mut d = self.load()?;
        let next = d.epoch.0.checked_add(1).ok_or_else(|| DataDirError::EpochExhausted {
            path: self.dir.join(STATE_FILE),
            epoch: d.epoch,
        })?;
        d.epoch = Epoch(next.max(min_epoch.0));
        self.persist(&d)?;
        tracing::info!(epoch = d.epoch.0, dir = %self.dir.display(), "new epoch persisted");
        Ok(d)
    }

    /// Writes `d` durably (see the module docs), then the `epoch` file if the epoch changed.
    pub fn persist(&mut self, d: &Durable) -> Result<(), DataDirError> {
        let bytes = rmp_serde::to_vec_named(d).map_err(|e| DataDirError::Io {
            action: "encode state for",
            path: self.dir.join(STATE_FILE),
            source: io::Error::other(e),
        })?;
        replace_durably(&self.dir, STATE_FILE, &bytes)?;
        if self.epoch_file != Some(d.epoch) {
            replace_durably(&self.dir, EPOCH_FILE, format!("{}\n", d.epoch.0).as_bytes())?;
            self.epoch_file = Some(d.epoch);
        }
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: write `name.tmp`, fsync, rename, fsync `dir`.
fn replace_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { action, path, source }
    };
    let mut f =
        OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &dst).map_err(io("rename over", &dst))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| DataDirError::Io {
        action: "fsync directory",
        path: dir.to_path_buf(),
        source,
    })
}

impl Actor for EpochRegistryActor {
    type Context = Context<Self>;
}

impl Handler<OpenEpoch> for EpochRegistryActor {
    type Result = io::Result<Durable>;

    fn handle(&mut self, msg: OpenEpoch, _ctx: &mut Context<Self>) -> io::Result<Durable> {
        self.open_epoch(msg.min_epoch).map_err(|e| {
            tracing::error!("{e}");
            e.into()
        })
    }
}

impl Handler<LoadDurable> for EpochRegistryActor {
    type Result = io::Result<Durable>;

    fn handle(&mut self, _msg: LoadDurable, _ctx: &mut Context<Self>) -> io::Result<Durable> {
        self.load().map_err(|e| {
            tracing::error!("{e}");
            e.into()
        })
    }
}

impl Handler<PersistDurable> for EpochRegistryActor {
    type Result = io::Result<()>;

    fn handle(&mut self, PersistDurable(d): PersistDurable, _ctx: &mut Context<Self>) -> io::Result<()> {
        self.persist(&d).map_err(|e| {
            tracing::error!("{e}");
            e.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::registry::{FenceStatus, NodeRecord, Removal, RemovalReason};
    use cohort::{FenceMethod, Member, NodeId, ViewId};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("cohort-epochs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Scratch(p)
        }
        fn data(&self) -> PathBuf {
            self.0.join("data")
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Opens the registry, waiting (with a deadline) for a previous actor on the same directory to be
    /// dropped: an actor whose last address is gone stops on the next turn of the event loop.
    async fn reopen(dir: &Path) -> EpochRegistryActor {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match EpochRegistryActor::open(dir) {
                Ok(r) => return r,
                Err(DataDirError::InUse { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("open {}: {e}", dir.display()),
            }
        }
    }

    /// One agent start: open the directory, take a new epoch, stop.
    async fn open_epoch(dir: &Path, min: u64) -> io::Result<Durable> {
        let addr = reopen(dir).await.start();
        addr.send(OpenEpoch { min_epoch: Epoch(min) }).await.expect("mailbox")
    }

    #[actix_rt::test]
    async fn epochs_strictly_increase_across_reopenings() {
        let s = Scratch::new("increase");
        let mut seen = vec![];
        for _ in 0..4 {
            seen.push(open_epoch(&s.data(), 0).await.expect("open epoch").epoch);
        }
        assert_eq!(seen, vec![Epoch(1), Epoch(2), Epoch(3), Epoch(4)]);
        assert_eq!(std::fs::read_to_string(s.data().join(EPOCH_FILE)).expect("epoch file"), "4\n");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(s.data()).expect("stat").permissions().mode() & 0o777, 0o700);
        assert!(!s.data().join("state.rmp.tmp").exists());
    }

    #[actix_rt::test]
    async fn min_epoch_is_honoured() {
        let s = Scratch::new("min");
        assert_eq!(open_epoch(&s.data(), 10).await.expect("open").epoch, Epoch(10));
        assert_eq!(open_epoch(&s.data(), 5).await.expect("open").epoch, Epoch(11));
        assert_eq!(open_epoch(&s.data(), 11).await.expect("open").epoch, Epoch(12));
        assert_eq!(open_epoch(&s.data(), 20).await.expect("open").epoch, Epoch(20));
    }

    #[actix_rt::test]
    async fn a_locked_data_dir_is_in_use_until_its_holder_is_gone() {
        let s = Scratch::new("lock");
        let first = EpochRegistryActor::open(&s.data()).expect("first open");
        let err = EpochRegistryActor::open(&s.data()).expect_err("second open must fail");
        assert!(matches!(err, DataDirError::InUse { .. }));
        let d = s.data().display().to_string();
        assert_eq!(
            err.to_string(),
            format!("data directory {d} is in use by another cohort agent (lock held on {d}/lock)")
        );
        // Also while the holder runs as an actor.
        let addr = first.start();
        addr.send(OpenEpoch { min_epoch: Epoch(0) }).await.expect("mailbox").expect("open epoch");
        assert!(matches!(EpochRegistryActor::open(&s.data()), Err(DataDirError::InUse { .. })));
        // Once the actor is gone (its last address dropped), the lock is free again.
        drop(addr);
        let reopened = reopen(&s.data()).await;
        drop(reopened);
        // And dropping a registry that never ran as an actor releases it at once.
        let held = EpochRegistryActor::open(&s.data()).expect("open");
        assert!(matches!(EpochRegistryActor::open(&s.data()), Err(DataDirError::InUse { .. })));
        drop(held);
        EpochRegistryActor::open(&s.data()).expect("open after drop");
    }

    #[actix_rt::test]
    async fn a_corrupt_state_file_is_an_error_naming_it_and_is_left_alone() {
        let s = Scratch::new("corrupt");
        open_epoch(&s.data(), 0).await.expect("first epoch");
        let state = s.data().join(STATE_FILE);
        std::fs::write(&state, b"\xc1 not msgpack").expect("corrupt it");
        let err = open_epoch(&s.data(), 0).await.expect_err("corrupt state must not be reset");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().starts_with(&format!("corrupt state file {}: ", state.display())), "{err}");
        assert_eq!(std::fs::read(&state).expect("read"), b"\xc1 not msgpack");
    }

    #[actix_rt::test]
    async fn persisted_state_is_returned_by_the_next_open() {
        let s = Scratch::new("persist");
        let addr = EpochRegistryActor::open(&s.data()).expect("open").start();
        let mut d = addr.send(OpenEpoch { min_epoch: Epoch(3) }).await.expect("mailbox").expect("open epoch");
        assert_eq!(d.epoch, Epoch(3));
        d.max_view_seq = 42;
        let view = ViewId { seq: 5, coord: NodeId(1) };
        let removal = Removal {
            member: Member(NodeId(2), Epoch(6)),
            view,
            reason: RemovalReason::Failed,
            at_ms: 99,
            fence: FenceStatus::Fenced(FenceMethod::Ack),
            recovered: true,
        };
        d.registry.nodes.insert(
            NodeId(2),
            NodeRecord { highest_epoch: Epoch(7), removed_up_to: Epoch(6), removals: vec![removal] },
        );
        d.registry.last_primary = Some(view);
        addr.send(PersistDurable(d.clone())).await.expect("mailbox").expect("persist");
        drop(addr);
        let reg = reopen(&s.data()).await;
        assert_eq!(reg.load().expect("load"), d);
        let addr = reg.start();
        let next = addr.send(OpenEpoch { min_epoch: Epoch(0) }).await.expect("mailbox").expect("open epoch");
        assert_eq!(next, Durable { epoch: Epoch(4), ..d });
    }
}
