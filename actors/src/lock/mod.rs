//! A distributed lock service built only on cohort's public client API ([`crate::client`]): the worked
//! example of docs/CLIENTS.md, and the service the demo (`cohort demo`) shows through a partition.
//!
//! - [`table`]: the pure, deterministic lock table (named locks, exclusive and shared modes, FIFO wait
//!   queues) over ordered operations; property-tested.
//! - [`service`]: one node's lock service: a task that owns a [`crate::client::Client`], turns every
//!   operation into an agreed multicast in one process group, applies deliveries to the table, transfers
//!   the table to joiners, releases failed members' locks only on cohort's `recovered`, and tells its
//!   application when it must stop relying on a lock.
//! - [`daemon`]: a long-running daemon per node (`cohort lock serve`) with a local control socket, and
//!   the client the `cohort lock acquire|release|holders|status` commands use.
//!
//! **Deliberately absent:** anything that reaches into the agent beyond the client API; a lock service
//! that needs more than that would show a gap in the API, not a reason to bypass it.

pub mod daemon;
pub mod service;
pub mod table;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The control socket's file name beside the agent's socket, unless `--control` names another.
pub const CONTROL_SOCKET_NAME: &str = "lock.sock";

/// The default control socket for an agent socket: `lock.sock` in the same directory.
pub fn default_control_path(agent_socket: &Path) -> PathBuf {
    agent_socket.with_file_name(CONTROL_SOCKET_NAME)
}

/// Runs `cohort lock serve` until SIGINT or SIGTERM, then leaves the lock group cleanly (every hold of
/// this daemon released at once).
pub async fn serve(agent_socket: PathBuf, control: PathBuf, group: String) -> anyhow::Result<()> {
    let mut cfg = service::ServiceConfig::new(&agent_socket);
    cfg.group = group;
    let (handle, task) = service::spawn(cfg);
    let mut notices = handle.subscribe();
    let printer = tokio::spawn(async move {
        loop {
            match notices.recv().await {
                Ok(service::Notice::State { state, member }) => {
                    let m = member.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
                    eprintln!("cohort lock: {state} (member {m})");
                }
                Ok(service::Notice::Lost { lock, owner, reason }) => {
                    eprintln!("cohort lock: LOST {lock} held by {owner}: {reason}");
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("cohort lock: serving {} for the agent at {}", control.display(), agent_socket.display());
    let outcome = tokio::select! {
        r = daemon::serve(handle.clone(), &control) => r.map_err(|e| anyhow::anyhow!("control socket {}: {e}", control.display())),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    printer.abort();
    let _ = std::fs::remove_file(&control);
    outcome
}

/// One `cohort lock` client request: prints the reply and fails when it says `ok: false`.
pub async fn client_request(control: &Path, req: Value, json_out: bool) -> anyhow::Result<()> {
    let mut c = daemon::ControlClient::connect(control).await?;
    let reply = c.request(&req).await?;
    if json_out {
        println!("{reply}");
    } else {
        print!("{}", render(&req, &reply));
    }
    if reply["ok"].as_bool() == Some(true) {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}", reply["error"].as_str().unwrap_or("the lock daemon refused")))
    }
}

/// A human-readable form of a reply.
pub fn render(req: &Value, reply: &Value) -> String {
    if reply["ok"].as_bool() != Some(true) {
        return String::new();
    }
    let member = |v: &Value| format!("({}, {})", v[0], v[1]);
    match req["op"].as_str() {
        Some("acquire") => format!(
            "acquired {} ({}) for {} on member {}\n",
            reply["lock"].as_str().unwrap_or(""),
            reply["mode"].as_str().unwrap_or(""),
            reply["owner"].as_str().unwrap_or(""),
            member(&reply["member"])
        ),
        Some("release") => format!(
            "released {} for {}\n",
            reply["lock"].as_str().unwrap_or(""),
            reply["owner"].as_str().unwrap_or("")
        ),
        Some("holders") => {
            let mut out = String::new();
            let locks = reply["locks"].as_array().cloned().unwrap_or_default();
            if locks.is_empty() {
                out.push_str("no lock is held\n");
            }
            for l in locks {
                let list = |key: &str| {
                    l[key]
                        .as_array()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    format!(
                                        "{}@{} {}",
                                        h["owner"].as_str().unwrap_or(""),
                                        member(&h["member"]),
                                        h["mode"].as_str().unwrap_or("")
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                };
                out.push_str(&format!("{}: held by [{}]", l["lock"].as_str().unwrap_or(""), list("holders")));
                let waiting = list("waiting");
                if !waiting.is_empty() {
                    out.push_str(&format!(", waiting [{waiting}]"));
                }
                out.push('\n');
            }
            out
        }
        Some("status") => format!(
            "state: {}\nmember: {}\nlocks: {}\noperations applied: {}\n",
            reply["state"].as_str().unwrap_or(""),
            if reply["member"].is_null() { "-".to_string() } else { member(&reply["member"]) },
            reply["locks"],
            reply["applied"]
        ),
        _ => format!("{reply}\n"),
    }
}

/// The request of `cohort lock acquire`.
pub fn acquire_request(lock: &str, owner: &str, shared: bool, timeout_ms: u64) -> Value {
    json!({
        "op": "acquire", "lock": lock, "owner": owner,
        "mode": if shared { "shared" } else { "exclusive" }, "timeout_ms": timeout_ms,
    })
}
