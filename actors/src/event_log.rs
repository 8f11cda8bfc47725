//! The EventLogActor: appends the core's records to the event log, one JSON object per line.
//!
//! **Owns:** the event log file (`<data_dir>/events.jsonl` or the configured `event_log` path), opened
//! for appending. Every record becomes exactly one line, written with one `write` call on a file opened
//! with `O_APPEND` and unbuffered, so each line reaches the kernel as soon as it is handled and a reader
//! (`tail -f`, `cohort verify`) never sees half a line. Lines are never rewritten or truncated: the file
//! only grows (`shared/spec/event-log.md`).
//!
//! **Decides nothing:** which events happen and what they say is the core's business ([`cohort::Record`]);
//! this actor only writes them. A write that fails is fatal: an audit log the agent cannot write is a
//! broken guarantee, so it sends [`FatalError`] to the supervisor (which fail-stops the agent) and writes
//! nothing more.

use crate::messages::{AppendRecord, FatalError};
use actix::prelude::*;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Writes the event log. Start it with [`EventLogActor::open`] then `.start()`.
pub struct EventLogActor {
    path: PathBuf,
    file: File,
    fatal: Recipient<FatalError>,
    /// Set after the first failed write: the agent is stopping, later records are not attempted.
    failed: bool,
    /// Reused for every line, so appending allocates nothing once it has grown to the longest line.
    line: Vec<u8>,
}

impl std::fmt::Debug for EventLogActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLogActor")
            .field("path", &self.path)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl EventLogActor {
    /// Opens (creating it and its parent directories if needed) the event log at `path` for appending.
    /// `fatal` receives a [`FatalError`] if a later write fails. The error names the path.
    pub fn open(path: &Path, fatal: Recipient<FatalError>) -> io::Result<EventLogActor> {
        let named = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| named("create the directory of event log", e))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| named("open event log", e))?;
        Ok(EventLogActor {
            path: path.to_path_buf(),
            file,
            fatal,
            failed: false,
            line: Vec::with_capacity(512),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Actor for EventLogActor {
    type Context = Context<Self>;
}

/// Makes every record appended before it durable (`fdatasync`); the reply comes after. Sent at shutdown
/// and before a fail-stop, so the last lines of an incident are on disk. Records are already in the
/// kernel as soon as they are handled; this only adds the sync.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for EventLogActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _ctx: &mut Context<Self>) {
        if let Err(e) = self.file.sync_data() {
            // /dev/full and pipes cannot be synced; a real log file that cannot is worth a warning only,
            // because every line was already written.
            tracing::warn!("cannot fsync event log {}: {e}", self.path.display());
        }
    }
}

impl Handler<AppendRecord> for EventLogActor {
    type Result = ();

    fn handle(&mut self, AppendRecord(record): AppendRecord, _ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        self.line.clear();
        self.line.extend_from_slice(record.to_json_line().as_bytes());
        self.line.push(b'\n');
        // One write of the whole line: with O_APPEND the kernel places it atomically at the end of the
        // file. `write_all` only loops on a short write, which a regular file gives only when the disk
        // is full, and that is reported as an error anyway. The file is unbuffered, so there is nothing
        // to flush beyond the write itself.
        if let Err(e) = self.file.write_all(&self.line) {
            self.failed = true;
            let detail = format!("cannot append to event log {}: {e}", self.path.display());
            tracing::error!("{detail}");
            self.fatal.do_send(FatalError { detail });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::{BlockReason, Epoch, Event, NodeId, Record};
    use tokio::sync::mpsc;

    struct FatalProbe(mpsc::UnboundedSender<FatalError>);
    impl Actor for FatalProbe {
        type Context = Context<Self>;
    }
    impl Handler<FatalError> for FatalProbe {
        type Result = ();
        fn handle(&mut self, m: FatalError, _: &mut Context<Self>) {
            let _ = self.0.send(m);
        }
    }

    fn probe() -> (Recipient<FatalError>, mpsc::UnboundedReceiver<FatalError>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (FatalProbe(tx).start().recipient(), rx)
    }

    fn record(i: u64) -> Record {
        let event = match i % 3 {
            0 => Event::Start { version: "test".into() },
            1 => Event::Blocked { reason: BlockReason::NoQuorum },
            _ => Event::Unblocked {},
        };
        Record { ts_ms: 1_700_000_000_000 + i, node: NodeId(2), epoch: Epoch(i / 3 + 1), event }
    }

    #[actix_rt::test]
    async fn two_writers_in_sequence_append_valid_lines_and_the_file_only_grows() {
        /// Removes the scratch directory even when an assertion fails.
        struct Scratch(std::path::PathBuf);
        impl Drop for Scratch {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = Scratch(std::env::temp_dir().join(format!("cohort-eventlog-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        let path = dir.0.join("nested/events.jsonl");
        let (fatal, mut fatal_rx) = probe();
        let mut sizes = vec![];
        let mut written = vec![];
        for writer in 0..2u64 {
            let addr = EventLogActor::open(&path, fatal.clone()).expect("open").start();
            for i in 0..5 {
                let r = record(writer * 5 + i);
                addr.send(AppendRecord(r.clone())).await.expect("mailbox");
                written.push(r);
                sizes.push(std::fs::metadata(&path).expect("stat").len());
            }
            drop(addr);
        }
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "sizes {sizes:?}");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with('\n'));
        let parsed: Vec<Record> =
            text.lines().map(|l| Record::from_json_line(l).expect("every line is a record")).collect();
        assert_eq!(parsed, written);
        let addr = EventLogActor::open(&path, fatal.clone()).expect("open").start();
        addr.send(Flush).await.expect("mailbox");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text, "flush writes nothing");
        assert!(fatal_rx.try_recv().is_err(), "no fatal error expected");
    }

    #[actix_rt::test]
    async fn a_failed_write_is_fatal_and_reported_once() {
        // Every write to /dev/full fails with ENOSPC.
        let (fatal, mut fatal_rx) = probe();
        let addr = EventLogActor::open(Path::new("/dev/full"), fatal).expect("open").start();
        addr.send(AppendRecord(record(0))).await.expect("mailbox");
        addr.send(AppendRecord(record(1))).await.expect("mailbox");
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), fatal_rx.recv())
            .await
            .expect("fatal error within the deadline")
            .expect("probe alive");
        assert!(e.detail.starts_with("cannot append to event log /dev/full: "), "{}", e.detail);
        assert!(fatal_rx.try_recv().is_err(), "reported once");
    }

    #[test]
    fn open_names_the_path_when_it_cannot_create_the_log() {
        let sys = System::new();
        sys.block_on(async {
            let (fatal, _rx) = probe();
            let err = EventLogActor::open(Path::new("/proc/no-such-dir/events.jsonl"), fatal)
                .expect_err("cannot create");
            assert!(err.to_string().contains("/proc/no-such-dir"), "{err}");
        });
    }
}
