//! The EventLogActor: appends the core's records to the event log, one JSON object per line, and
//! rotates the log by size.
//!
//! **Owns:** the event log file (`<data_dir>/events.jsonl` or the configured `event_log` path), opened
//! for appending, and its rotated predecessors `events.jsonl.1` (the newest) to `events.jsonl.<keep>`.
//! Every record becomes exactly one line, written with one `write` call on a file opened with `O_APPEND`
//! and unbuffered, so each line reaches the kernel as soon as it is handled and a reader (`tail -f`,
//! `cohort verify`) never sees half a line. Lines are never rewritten or truncated
//! (`shared/spec/event-log.md`).
//!
//! **Rotation** ([`Rotation`], `log.event_log_max_bytes` and `log.event_log_keep_files`): before a line
//! that would take the live file past the size, the files are renamed logrotate-style (`events.jsonl.1`
//! → `.2`, …, the live file → `.1`, the oldest beyond `keep_files` deleted) and a new live file is
//! opened. A rotated file is renamed, never rewritten, and a line is never split between two files (a
//! line longer than the size goes alone into a file of its own). The first line of every file after the
//! first is an ordinary record with one added field, `log_part`: how many rotations the log had had when
//! that file began. `cohort verify` reads the files oldest first, checks that their parts follow one
//! another, and knows from the oldest file's part whether the history it reads begins mid-way.
//!
//! **Decides nothing:** which events happen and what they say is the core's business ([`cohort::Record`]);
//! this actor only writes them. A write or a rotation that fails is fatal: an audit log the agent cannot
//! write is a broken guarantee, so it sends [`FatalError`] to the supervisor (which fail-stops the agent)
//! and writes nothing more.

use crate::messages::{AppendRecord, FatalError, SetEventLogRotation};
use actix::prelude::*;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};

/// The field added to the first line of every file after the first (see the module documentation).
pub const LOG_PART_FIELD: &str = "log_part";

/// When the event log is rotated and how many rotated files are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take the live file past this size (bytes); 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept besides the live one (`events.jsonl.1` … `.<keep_files>`); older ones are deleted.
    pub keep_files: u32,
}

impl Rotation {
    /// No rotation: the log only grows.
    pub const NEVER: Rotation = Rotation { max_bytes: 0, keep_files: 0 };
}

/// `path` with `.n` appended to its file name: the `n`-th newest rotated file (`n` ≥ 1).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The `log_part` of the file at `path`: the field of its first line, 0 when the first line has none
/// (the log's first file) and `None` when the file is missing, empty or unreadable.
pub fn log_part_of(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let mut first = String::new();
    io::BufReader::new(file).read_line(&mut first).ok()?;
    if first.trim().is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(first.trim_end()).ok()?;
    Some(v.get(LOG_PART_FIELD).and_then(serde_json::Value::as_u64).unwrap_or(0))
}

/// The live file of the log a path names: a directory names its `events.jsonl`; a rotated file
/// `<live>.<n>` names `<live>`; any other path is a live file.
pub fn live_path_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.join("events.jsonl");
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match name.rsplit_once('.') {
        Some((stem, n)) if !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            path.with_file_name(stem)
        }
        _ => path.to_path_buf(),
    }
}

/// The files of the log whose live file is `live`, oldest first: the rotated files `<live>.<n>` that
/// exist, highest `n` first, then the live file if it exists.
///
/// # Errors
/// The directory of `live` cannot be read.
pub fn log_files(live: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = live.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));
    let name = live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut rotated: Vec<u32> = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let digits = file.strip_prefix(&name).and_then(|rest| rest.strip_prefix('.'));
            // Exactly the names the writer makes: `.1`, `.2`, … (not `.01`, not `.1.gz`).
            if let Some(n) =
                digits.and_then(|d| d.parse::<u32>().ok().filter(|n| *n > 0 && n.to_string() == d))
            {
                rotated.push(n);
            }
        }
    }
    rotated.sort_unstable_by(|a, b| b.cmp(a));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|n| rotated_path(live, n)).collect();
    if live.exists() {
        out.push(live.to_path_buf());
    }
    Ok(out)
}

/// The live file and its rotation state; the IO of [`EventLogActor`], usable without a running actor.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    rotation: Rotation,
    /// Rotation applies only to a regular file (not to `/dev/full`, a pipe or a terminal).
    regular: bool,
    /// Bytes in the live file.
    size: u64,
    /// The live file's `log_part`.
    part: u64,
    /// The next line is the first of a file after the first and carries `log_part`.
    mark_next: bool,
}

impl LogFile {
    /// Opens (creating it and its parent directories if needed) the live file at `path` for appending.
    /// An existing live file is appended to and keeps its part; an empty one after a rotation (the agent
    /// stopped before its first line) takes the part after `.1`'s. The error names the path.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<LogFile> {
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
        let meta = file.metadata().map_err(|e| named("stat event log", e))?;
        let regular = meta.is_file();
        let size = meta.len();
        let (part, mark_next) = if !regular {
            (0, false)
        } else if size > 0 {
            (log_part_of(path).unwrap_or(0), false)
        } else {
            match log_part_of(&rotated_path(path, 1)) {
                Some(p) => (p + 1, true),
                None => (0, false),
            }
        };
        Ok(LogFile { path: path.to_path_buf(), file, rotation, regular, size, part, mark_next })
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live file's `log_part` (0 before the first rotation).
    pub fn part(&self) -> u64 {
        self.part
    }

    /// Changes the size and the number of files kept from the next line on (a reload).
    pub fn set_rotation(&mut self, rotation: Rotation) {
        self.rotation = rotation;
    }

    /// Appends one JSON object (without its newline) as one line, rotating first when the line would
    /// take a non-empty live file past the size. The error says what failed and names the file.
    pub fn append(&mut self, json: &str) -> io::Result<()> {
        let mut line = String::with_capacity(json.len() + 24);
        self.append_with(json, &mut line)
    }

    /// [`LogFile::append`] with a buffer reused between lines.
    fn append_with(&mut self, json: &str, line: &mut String) -> io::Result<()> {
        // A marked line is only ever the first of an empty file, so the unmarked length decides.
        let len = json.len() as u64 + 1;
        if self.regular
            && self.rotation.max_bytes > 0
            && self.size > 0
            && self.size + len > self.rotation.max_bytes
        {
            self.rotate()?;
        }
        line.clear();
        match json.strip_suffix('}') {
            // The added field goes inside the object; `{}` (never written: a record has fields) stays as is.
            Some(body) if self.mark_next && body.len() > 1 => {
                line.push_str(body);
                line.push_str(&format!(",\"{LOG_PART_FIELD}\":{}}}", self.part));
            }
            _ => line.push_str(json),
        }
        line.push('\n');
        // One write of the whole line: with O_APPEND the kernel places it atomically at the end of the
        // file. `write_all` only loops on a short write, which a regular file gives only when the disk
        // is full, and that is reported as an error anyway. The file is unbuffered, so there is nothing
        // to flush beyond the write itself.
        self.file.write_all(line.as_bytes()).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot append to event log {}: {e}", self.path.display()))
        })?;
        self.size += line.len() as u64;
        self.mark_next = false;
        Ok(())
    }

    /// Renames the files one step older, deletes those beyond `keep_files`, and opens a new live file.
    /// Renames within one directory are atomic; a crash in between leaves every line in some file.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.keep_files;
        let failed = |what: String, e: io::Error| {
            io::Error::new(e.kind(), format!("cannot rotate event log {}: {what}: {e}", self.path.display()))
        };
        // The oldest kept file would move beyond `keep`, and files left beyond it (when `keep_files` was
        // lowered) go too.
        let mut n = keep.max(1);
        loop {
            let p = rotated_path(&self.path, n);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if n > keep {
                        break;
                    }
                }
                Err(e) => return Err(failed(format!("remove {}", p.display()), e)),
            }
            n += 1;
        }
        for n in (1..keep).rev() {
            let from = rotated_path(&self.path, n);
            match std::fs::rename(&from, rotated_path(&self.path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(format!("rename {}", from.display()), e)),
            }
        }
        if keep == 0 {
            std::fs::remove_file(&self.path).map_err(|e| failed("remove the live file".into(), e))?;
        } else {
            std::fs::rename(&self.path, rotated_path(&self.path, 1))
                .map_err(|e| failed("rename the live file".into(), e))?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| failed("open a new live file".into(), e))?;
        self.size = 0;
        self.part += 1;
        self.mark_next = true;
        Ok(())
    }

    /// `fdatasync` of the live file.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Writes the event log. Start it with [`EventLogActor::open`] (or [`EventLogActor::open_rotating`])
/// then `.start()`.
pub struct EventLogActor {
    log: LogFile,
    fatal: Recipient<FatalError>,
    /// Set after the first failed write: the agent is stopping, later records are not attempted.
    failed: bool,
    /// Reused for every line, so appending allocates nothing once it has grown to the longest line.
    line: String,
}

impl std::fmt::Debug for EventLogActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLogActor")
            .field("log", &self.log)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl EventLogActor {
    /// Opens (creating it and its parent directories if needed) the event log at `path` for appending,
    /// never rotated. `fatal` receives a [`FatalError`] if a later write fails. The error names the path.
    pub fn open(path: &Path, fatal: Recipient<FatalError>) -> io::Result<EventLogActor> {
        EventLogActor::open_rotating(path, Rotation::NEVER, fatal)
    }

    /// [`EventLogActor::open`], rotating the log by `rotation`.
    pub fn open_rotating(
        path: &Path,
        rotation: Rotation,
        fatal: Recipient<FatalError>,
    ) -> io::Result<EventLogActor> {
        Ok(EventLogActor {
            log: LogFile::open(path, rotation)?,
            fatal,
            failed: false,
            line: String::with_capacity(512),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        self.log.path()
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
        if let Err(e) = self.log.sync() {
            // /dev/full and pipes cannot be synced; a real log file that cannot is worth a warning only,
            // because every line was already written.
            tracing::warn!("cannot fsync event log {}: {e}", self.log.path().display());
        }
    }
}

impl Handler<SetEventLogRotation> for EventLogActor {
    type Result = ();

    fn handle(&mut self, SetEventLogRotation(rotation): SetEventLogRotation, _ctx: &mut Context<Self>) {
        self.log.set_rotation(rotation);
    }
}

impl Handler<AppendRecord> for EventLogActor {
    type Result = ();

    fn handle(&mut self, AppendRecord(record): AppendRecord, _ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        let json = record.to_json_line();
        if let Err(e) = self.log.append_with(&json, &mut self.line) {
            self.failed = true;
            let detail = e.to_string();
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

    /// Removes a scratch directory even when an assertion fails.
    struct Scratch(std::path::PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("cohort-rotate-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }
        fn log(&self) -> PathBuf {
            self.0.join("events.jsonl")
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The files of the log oldest first (`.N` … `.1`, then the live file), each with its text.
    fn files(live: &Path) -> Vec<(PathBuf, String)> {
        let mut out = vec![];
        let mut n = 1;
        while rotated_path(live, n).exists() {
            n += 1;
        }
        for k in (1..n).rev() {
            let p = rotated_path(live, k);
            out.push((p.clone(), std::fs::read_to_string(&p).expect("read")));
        }
        if live.exists() {
            out.push((live.to_path_buf(), std::fs::read_to_string(live).expect("read")));
        }
        out
    }

    /// Every line of `text` as a record, and its `log_part` if it has one.
    fn lines_of(text: &str) -> Vec<(Record, Option<u64>)> {
        assert!(text.is_empty() || text.ends_with('\n'), "no half line: {text:?}");
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("every line is JSON");
                (Record::from_json_line(l).expect("every line is a record"), v[LOG_PART_FIELD].as_u64())
            })
            .collect()
    }

    #[test]
    fn the_log_rotates_by_size_keeps_the_configured_files_and_never_splits_a_line() {
        let s = Scratch::new("size");
        let rotation = Rotation { max_bytes: 400, keep_files: 3 };
        let mut log = LogFile::open(&s.log(), rotation).expect("open");
        let written: Vec<Record> = (0..200).map(record).collect();
        for r in &written {
            log.append(&r.to_json_line()).expect("append");
        }
        let fs = files(&s.log());
        let names: Vec<String> = fs
            .iter()
            .map(|(p, _)| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["events.jsonl.3", "events.jsonl.2", "events.jsonl.1", "events.jsonl"]);
        let mut kept = vec![];
        let mut parts = vec![];
        for (p, text) in &fs {
            assert!(text.len() <= 400, "{} has {} bytes", p.display(), text.len());
            let lines = lines_of(text);
            assert!(!lines.is_empty(), "{} is empty", p.display());
            // Only the first line of a file carries its part.
            assert!(lines.iter().skip(1).all(|(_, part)| part.is_none()), "{text}");
            parts.push(lines[0].1.expect("a rotated log's files all begin with log_part"));
            kept.extend(lines.into_iter().map(|(r, _)| r));
        }
        assert!(parts.windows(2).all(|w| w[1] == w[0] + 1), "parts follow one another: {parts:?}");
        assert_eq!(parts.last().copied(), Some(log.part()));
        // What is kept is the newest records, whole and in order.
        assert_eq!(kept.as_slice(), &written[written.len() - kept.len()..]);
        assert!(kept.len() > 10, "{}", kept.len());
    }

    #[test]
    fn a_line_longer_than_the_size_goes_alone_into_a_file_of_its_own() {
        let s = Scratch::new("long");
        let mut log = LogFile::open(&s.log(), Rotation { max_bytes: 30, keep_files: 5 }).expect("open");
        for i in 0..3 {
            log.append(&record(i).to_json_line()).expect("append");
        }
        let fs = files(&s.log());
        assert_eq!(fs.len(), 3, "one file per line: {fs:?}");
        for (i, (_, text)) in fs.iter().enumerate() {
            let lines = lines_of(text);
            assert_eq!(lines.len(), 1, "{text}");
            assert_eq!(lines[0].0, record(i as u64));
            assert_eq!(lines[0].1, if i == 0 { None } else { Some(i as u64) }, "{text}");
        }
    }

    #[test]
    fn keeping_no_files_deletes_the_full_one_and_lowering_keep_deletes_the_surplus() {
        let s = Scratch::new("keep");
        let mut log = LogFile::open(&s.log(), Rotation { max_bytes: 200, keep_files: 6 }).expect("open");
        for i in 0..100 {
            log.append(&record(i).to_json_line()).expect("append");
        }
        assert_eq!(files(&s.log()).len(), 7);
        log.set_rotation(Rotation { max_bytes: 200, keep_files: 2 });
        for i in 100..110 {
            log.append(&record(i).to_json_line()).expect("append");
        }
        assert_eq!(files(&s.log()).len(), 3, "{:?}", files(&s.log()));
        assert!(!rotated_path(&s.log(), 3).exists() && !rotated_path(&s.log(), 6).exists());
        log.set_rotation(Rotation { max_bytes: 200, keep_files: 0 });
        for i in 110..120 {
            log.append(&record(i).to_json_line()).expect("append");
        }
        let fs = files(&s.log());
        assert_eq!(fs.len(), 1, "{fs:?}");
        assert_eq!(lines_of(&fs[0].1).last().map(|(r, _)| r.clone()), Some(record(119)));
    }

    #[test]
    fn a_reopened_log_appends_to_the_live_file_and_continues_the_numbering() {
        let s = Scratch::new("reopen");
        let rotation = Rotation { max_bytes: 300, keep_files: 20 };
        let mut written = vec![];
        let mut parts_at_close = vec![];
        for writer in 0..3u64 {
            let mut log = LogFile::open(&s.log(), rotation).expect("open");
            if let Some(&p) = parts_at_close.last() {
                assert_eq!(log.part(), p, "the reopened live file keeps its part");
            }
            for i in 0..17 {
                let r = record(writer * 100 + i);
                log.append(&r.to_json_line()).expect("append");
                written.push(r);
            }
            parts_at_close.push(log.part());
        }
        let fs = files(&s.log());
        let mut all = vec![];
        let mut parts = vec![];
        for (_, text) in &fs {
            let lines = lines_of(text);
            parts.push(lines[0].1.unwrap_or(0));
            all.extend(lines.into_iter().map(|(r, _)| r));
        }
        assert_eq!(all, written, "nothing lost, nothing repeated, in order");
        assert_eq!(parts, (0..fs.len() as u64).collect::<Vec<_>>(), "parts 0, 1, 2, ... in file order");

        // An agent that stopped right after a rotation, before its first line: the empty live file
        // takes the part after `.1`'s and its first line says so.
        let before = log_part_of(&s.log()).expect("a part");
        for n in (1..fs.len() as u32).rev() {
            std::fs::rename(rotated_path(&s.log(), n), rotated_path(&s.log(), n + 1))
                .unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        std::fs::rename(s.log(), rotated_path(&s.log(), 1)).expect("shift by hand");
        std::fs::write(s.log(), "").expect("empty live file");
        let mut log = LogFile::open(&s.log(), rotation).expect("open");
        assert_eq!(log.part(), before + 1);
        log.append(&record(999).to_json_line()).expect("append");
        let lines = lines_of(&std::fs::read_to_string(s.log()).expect("read"));
        assert_eq!(lines, [(record(999), Some(before + 1))]);
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
