//! The lock daemon's local control socket: one JSON object per line in each direction, so a person with
//! `cohort lock ...`, a shell script with `socat`, or a test can take and give back locks on any node.
//!
//! Requests (`op` selects the kind):
//! ```text
//! {"op":"acquire","lock":"printer","owner":"alice","mode":"exclusive","timeout_ms":5000}
//! {"op":"release","lock":"printer","owner":"alice"}
//! {"op":"holders","lock":"printer"}        (omit "lock" for every lock)
//! {"op":"status"}
//! ```
//! Every reply is `{"ok":true,...}` or `{"ok":false,"error":"..."}` on one line. Holds belong to the
//! daemon's session on behalf of the named owner, not to the connection: a lock taken with
//! `cohort lock acquire` stays held after the command exits, until `cohort lock release`, a clean
//! daemon stop, or the recovery of the node after it failed.
//!
//! Lines longer than [`MAX_LINE_BYTES`] end the connection with an error; at most [`MAX_CONNECTIONS`]
//! connections are served at once.

use super::service::LockHandle;
use super::table::Mode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Longest request line.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most control connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest acquire timeout accepted (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// A control request.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Wait for a lock.
    Acquire {
        /// The lock.
        lock: String,
        /// The owner name.
        owner: String,
        /// `exclusive` (default) or `shared`.
        #[serde(default)]
        mode: Option<String>,
        /// How long to wait (ms); default 10 s.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Give a lock back.
    Release {
        /// The lock.
        lock: String,
        /// The owner name.
        owner: String,
    },
    /// Holders and waiters of one lock or of all.
    Holders {
        /// The lock, or every lock.
        #[serde(default)]
        lock: Option<String>,
    },
    /// The service state and this node's member.
    Status {},
}

/// Parses a mode name.
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "exclusive" | "ex" => Ok(Mode::Exclusive),
        "shared" | "sh" => Ok(Mode::Shared),
        other => Err(format!("mode `{other}`: expected exclusive or shared")),
    }
}

fn err(e: impl std::fmt::Display) -> Value {
    json!({ "ok": false, "error": e.to_string() })
}

/// Answers one request line.
pub async fn handle_line(handle: &LockHandle, line: &str) -> Value {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return err(format!("bad request: {e}")),
    };
    match req {
        Request::Acquire { lock, owner, mode, timeout_ms } => {
            let mode = match mode.as_deref().map(parse_mode).transpose() {
                Ok(m) => m.unwrap_or(Mode::Exclusive),
                Err(e) => return err(e),
            };
            let timeout_ms = timeout_ms.unwrap_or(10_000);
            if timeout_ms > MAX_TIMEOUT_MS {
                return err(format!("timeout_ms {timeout_ms}: at most {MAX_TIMEOUT_MS}"));
            }
            match handle.acquire(&lock, &owner, mode, Duration::from_millis(timeout_ms)).await {
                Ok(g) => json!({
                    "ok": true, "lock": g.lock, "owner": g.owner, "mode": g.mode.to_string(),
                    "member": [g.member.node().0, g.member.epoch().0],
                }),
                Err(e) => err(e),
            }
        }
        Request::Release { lock, owner } => match handle.release(&lock, &owner).await {
            Ok(()) => json!({ "ok": true, "lock": lock, "owner": owner }),
            Err(e) => err(e),
        },
        Request::Holders { lock } => match handle.snapshot().await {
            Ok(s) => {
                let locks: Vec<Value> = s
                    .table
                    .locks()
                    .iter()
                    .filter(|(name, _)| lock.as_ref().is_none_or(|l| l == *name))
                    .map(|(name, l)| {
                        json!({
                            "lock": name,
                            "holders": l.holders.iter().map(|(o, (m, _))| json!({
                                "owner": o.name, "member": [o.client.member.node().0, o.client.member.epoch().0],
                                "mode": m.to_string(),
                            })).collect::<Vec<_>>(),
                            "waiting": l.queue.iter().map(|w| json!({
                                "owner": w.owner.name,
                                "member": [w.owner.client.member.node().0, w.owner.client.member.epoch().0],
                                "mode": w.mode.to_string(),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({ "ok": true, "state": s.state.to_string(), "locks": locks })
            }
            Err(e) => err(e),
        },
        Request::Status {} => match handle.snapshot().await {
            Ok(s) => json!({
                "ok": true,
                "state": s.state.to_string(),
                "member": s.client.map(|c| json!([c.member.node().0, c.member.epoch().0])),
                "locks": s.table.locks().len(),
                "applied": s.table.applied(),
                "view": s.view.map(|(id, members, primary)| json!({
                    "seq": id.seq, "coord": id.coord.0, "primary": primary,
                    "members": members.iter().map(|m| json!([m.node().0, m.epoch().0])).collect::<Vec<_>>(),
                })),
            }),
            Err(e) => err(e),
        },
    }
}

/// Serves the control socket at `path` until the listener fails. Removes a stale socket file first
/// (only a socket nobody answers on).
pub async fn serve(handle: LockHandle, path: &Path) -> std::io::Result<()> {
    remove_stale_socket(path).await?;
    let listener = UnixListener::bind(path)?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let mut s = stream;
            let _ = s.write_all(format!("{}\n", err("too many control connections")).as_bytes()).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = connection(handle, stream).await;
        });
    }
}

async fn connection(handle: LockHandle, stream: UnixStream) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut rd).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE_BYTES {
            wr.write_all(
                format!("{}\n", err(format!("request line over {MAX_LINE_BYTES} bytes"))).as_bytes(),
            )
            .await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let reply = handle_line(&handle, text).await;
        wr.write_all(format!("{reply}\n").as_bytes()).await?;
    }
}

async fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another lock daemon", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(_) => Ok(()),
    }
}

/// A connection to a lock daemon's control socket.
pub struct ControlClient {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
    path: PathBuf,
}

impl ControlClient {
    /// Connects to the daemon at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<ControlClient> {
        let s = UnixStream::connect(path).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot connect to the lock daemon at {}: is `cohort lock serve` running? ({e})",
                    path.display()
                ),
            )
        })?;
        let (rd, wr) = s.into_split();
        Ok(ControlClient { rd: BufReader::new(rd), wr, path: path.to_path_buf() })
    }

    /// Sends one request and returns the reply.
    pub async fn request(&mut self, req: &Value) -> std::io::Result<Value> {
        self.wr.write_all(format!("{req}\n").as_bytes()).await?;
        let mut line = String::new();
        let n = self.rd.read_line(&mut line).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the lock daemon at {} closed the connection", self.path.display()),
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let r: Request = serde_json::from_str(r#"{"op":"acquire","lock":"p","owner":"a","mode":"shared"}"#)
            .expect("parse");
        assert_eq!(
            r,
            Request::Acquire {
                lock: "p".into(),
                owner: "a".into(),
                mode: Some("shared".into()),
                timeout_ms: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"acquire","lock":"p"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"steal"}"#).is_err());
        assert_eq!(parse_mode("ex"), Ok(Mode::Exclusive));
        assert!(parse_mode("upgrade").expect_err("not a mode").contains("expected exclusive or shared"));
    }
}
