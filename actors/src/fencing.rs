//! FencingActor: carries out fence requests by running the configured fence agents.
//!
//! The core decides who is fenced and when; this actor only executes a [`Fence`] request and reports
//! exactly one [`FenceCompleted`] for it. For a target member it tries the configured levels in order:
//! a level succeeds when every one of its agents exits 0, and the first level that succeeds ends the
//! request. An agent that fails is run again up to `retries` more times; an agent that runs past its
//! `timeout_ms` is killed (its whole process group, so a script's children go too) and counts as a
//! failure. When every level failed, the report lists every failure, so an operator can read what
//! went wrong from one line.
//!
//! Agents follow the `fence_*` family's conventions: `{node}`, `{plug}`, `{epoch}` and `{action}` are
//! substituted in the arguments and in the standard-input options (not in `env`, passed as written), the options are written to the
//! agent's standard input as `key=value` lines, and standard input is then closed. Standard output and
//! standard error are captured (the first [`CAPTURE_BYTES`] of each) for the report and the log.
//!
//! Requests for different members run concurrently; a request for a member that is already being
//! fenced is not started again, and that member gets one report. (Two epochs of one node are two
//! members: each request runs.)
//!
//! Metrics: `fence_agent_requests` counts requests started (duplicates are not), so it always equals
//! `fence_agent_ok + fence_agent_failed` plus the requests still running. (`fence_requests`,
//! `fences_ok` and `fences_failed` count the core's fence records, whatever the method; the
//! membership counts those, so a fence is never counted twice.)
//!
//! **Deliberately absent:** no decisions (no choice of target, no retry of a whole request once it
//! has been reported: the core asks again if it wants to), and no operator acknowledgements: those
//! (`cohort fence ack NODE`) go to the membership as [`crate::messages::AckFence`], because accepting
//! one is a decision about the registry, which the core owns.
//!
//! Entry points: [`FencingActor`], and [`fence_member`] / [`run_agent`] for running the same logic
//! without an actor (for example to try a configuration by hand).

use crate::messages::{Fence, FenceCompleted, ReplaceFenceLevels};
use crate::metrics::Metrics;
use crate::settings::{FenceAgent, FenceLevel};
use actix::prelude::*;
use cohort::Member;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tracing::{debug, error, info, warn};

/// How much of each of an agent's standard output and standard error is kept.
pub const CAPTURE_BYTES: usize = 4096;

/// The report when no fence level is configured.
pub const NO_LEVELS_DETAIL: &str =
    "no fence levels configured; use `cohort fence ack NODE` after fencing the node by hand";

/// How long the output of an agent that has exited is still read: a background process it left
/// behind may hold the pipes open, and that must not turn a success into a timeout.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// How long reaping a killed agent may take before it is given up on (it is then left to
/// `kill_on_drop`).
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest output line quoted in a report.
const MAX_LINE_CHARS: usize = 200;

/// `ETXTBSY`: the program file is still open for writing somewhere (it was just written or is being
/// replaced); trying again shortly is the remedy.
const ETXTBSY: i32 = 26;

/// Why one run of one fence agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The program could not be started (not found, not executable...); nothing was done to the node.
    #[error("could not start {command}: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Waiting for the agent failed; its outcome is unknown, so it counts as a failure.
    #[error("could not wait for the agent: {0}")]
    Wait(std::io::Error),
    /// The agent exited with a non-zero status.
    #[error("exit {code}{}", colon(.line))]
    Exit {
        /// The exit status.
        code: i32,
        /// The first line it wrote (standard error first), if any.
        line: String,
    },
    /// The agent was killed by a signal it did not get from us.
    #[error("killed by signal {signal}{}", colon(.line))]
    Signal {
        /// The signal number.
        signal: i32,
        /// The first line it wrote, if any.
        line: String,
    },
    /// The agent ran past its `timeout_ms` and was killed.
    #[error("timed out after {timeout_ms} ms")]
    TimedOut {
        /// The configured timeout.
        timeout_ms: u64,
    },
}

fn colon(line: &str) -> String {
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

/// What a successful agent run wrote (each stream bounded to [`CAPTURE_BYTES`], decoded lossily).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl AgentOutput {
    /// The first non-empty line, standard error first (where `fence_*` agents say what they did).
    pub fn first_line(&self) -> String {
        first_line(&self.stderr).or_else(|| first_line(&self.stdout)).unwrap_or_default()
    }
}

/// The result of a whole fence request: what goes into [`FenceCompleted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceOutcome {
    /// True when a level succeeded.
    pub ok: bool,
    /// The level and agents that succeeded, or every failure.
    pub detail: String,
}

/// Runs fence agents for [`Fence`] requests and reports each as one [`FenceCompleted`].
pub struct FencingActor {
    levels: Arc<[FenceLevel]>,
    completed: Recipient<FenceCompleted>,
    metrics: Arc<Metrics>,
    /// Members being fenced now; a second request for one of them is not started.
    in_flight: BTreeSet<Member>,
}

impl FencingActor {
    /// A fencing actor that tries `levels` in order and reports to `completed`.
    pub fn new(levels: Vec<FenceLevel>, completed: Recipient<FenceCompleted>, metrics: Arc<Metrics>) -> Self {
        FencingActor { levels: levels.into(), completed, metrics, in_flight: BTreeSet::new() }
    }
}

impl Actor for FencingActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let agents: usize = self.levels.iter().map(|l| l.agents.len()).sum();
        info!(levels = self.levels.len(), agents, "fencing actor started");
    }
}

impl Handler<Fence> for FencingActor {
    type Result = ();

    fn handle(&mut self, msg: Fence, ctx: &mut Self::Context) {
        let target = msg.target;
        if !self.in_flight.insert(target) {
            debug!(?target, reason = %msg.reason, "fence request for a member already being fenced; not started again");
            return;
        }
        self.metrics.fence_agent_requests.fetch_add(1, Relaxed);
        info!(?target, reason = %msg.reason, "fencing");
        let levels = self.levels.clone();
        let fut = async move { fence_member(&levels, target).await };
        ctx.spawn(fut.into_actor(self).map(move |outcome, act, _ctx| {
            act.in_flight.remove(&target);
            if outcome.ok {
                act.metrics.fence_agent_ok.fetch_add(1, Relaxed);
                info!(?target, detail = %outcome.detail, "fenced");
            } else {
                act.metrics.fence_agent_failed.fetch_add(1, Relaxed);
                error!(?target, detail = %outcome.detail, "fencing failed");
            }
            act.completed.do_send(FenceCompleted { target, ok: outcome.ok, detail: outcome.detail });
        }));
    }
}

impl Handler<ReplaceFenceLevels> for FencingActor {
    type Result = ();

    fn handle(&mut self, msg: ReplaceFenceLevels, _ctx: &mut Self::Context) {
        let agents: usize = msg.levels.iter().map(|l| l.agents.len()).sum();
        info!(
            levels = msg.levels.len(),
            agents,
            running = self.in_flight.len(),
            "fence levels replaced; requests already running finish with the levels they started with"
        );
        self.levels = msg.levels.into();
    }
}

/// Tries `levels` in order against `target` until one succeeds.
///
/// A level succeeds when all its agents succeed (run in order; the level stops at the first agent
/// that fails all its attempts). A level without agents fails: an empty level must never count as a
/// fence.
pub async fn fence_member(levels: &[FenceLevel], target: Member) -> FenceOutcome {
    if levels.is_empty() {
        return FenceOutcome { ok: false, detail: NO_LEVELS_DETAIL.to_string() };
    }
    let mut failures = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        let n = i + 1;
        match run_level(level, n, target).await {
            Ok(done) => {
                let mut detail = format!("level {n} {done}");
                if !failures.is_empty() {
                    detail.push_str(&format!(" (after {})", failures.join("; ")));
                }
                return FenceOutcome { ok: true, detail };
            }
            Err(failure) => failures.push(failure),
        }
    }
    FenceOutcome { ok: false, detail: failures.join("; ") }
}

/// Runs the agents of one level; `Ok` names them and quotes what they said, `Err` names the level and
/// the agent that failed and why.
async fn run_level(level: &FenceLevel, n: usize, target: Member) -> Result<String, String> {
    if level.agents.is_empty() {
        return Err(format!("level {n}: no agents configured"));
    }
    let mut said = Vec::new();
    for agent in &level.agents {
        let attempts = agent.retries.saturating_add(1);
        let mut attempt = 1;
        loop {
            match run_agent(agent, target).await {
                Ok(out) => {
                    let line = out.first_line();
                    info!(?target, level = n, agent = %agent.name, attempt, %line, "fence agent succeeded");
                    said.push(line);
                    break;
                }
                Err(e) if attempt < attempts => {
                    warn!(?target, level = n, agent = %agent.name, attempt, attempts, error = %e, "fence agent failed; retrying");
                    attempt += 1;
                }
                Err(e) => {
                    warn!(?target, level = n, agent = %agent.name, attempt, attempts, error = %e, "fence agent failed");
                    let tries = if attempts > 1 { format!(" ({attempts} attempts)") } else { String::new() };
                    return Err(format!("level {n} {}: {e}{tries}", agent.name));
                }
            }
        }
    }
    let names: Vec<&str> = level.agents.iter().map(|a| a.name.as_str()).collect();
    let said: Vec<String> = said.into_iter().filter(|l| !l.is_empty()).collect();
    let quoted = if said.is_empty() { String::new() } else { format!(": {}", said.join(" / ")) };
    Ok(format!("{}: ok{quoted}", names.join(", ")))
}

/// The values substituted into an agent's arguments and options.
struct Vars {
    node: String,
    plug: String,
    epoch: String,
    action: String,
}

impl Vars {
    fn new(agent: &FenceAgent, target: Member) -> Self {
        let node = target.node().0.to_string();
        let plug = agent.plugs.get(&node).cloned().unwrap_or_else(|| node.clone());
        Vars { node, plug, epoch: target.epoch().0.to_string(), action: agent.action.clone() }
    }

    /// Replaces `{node}`, `{plug}`, `{epoch}` and `{action}` in one pass (so a substituted value is
    /// never substituted again); any other `{...}` is left as written.
    fn apply(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            let value = after.find('}').and_then(|close| {
                let v = match &after[1..close] {
                    "node" => &self.node,
                    "plug" => &self.plug,
                    "epoch" => &self.epoch,
                    "action" => &self.action,
                    _ => return None,
                };
                Some((v, close))
            });
            match value {
                Some((v, close)) => {
                    out.push_str(v);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('{');
                    rest = &after[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Substitutes `{node}`, `{plug}`, `{epoch}` and `{action}` in `template` as the actor does for
/// `agent` and `target` (exposed for `cohort config check` and tests).
pub fn substitute(agent: &FenceAgent, target: Member, template: &str) -> String {
    Vars::new(agent, target).apply(template)
}

/// Runs one fence agent once against `target`, within its `timeout_ms`.
///
/// The agent runs in its own process group; on timeout the whole group is killed and the agent is
/// reaped before this returns, so nothing it started outlives the attempt.
pub async fn run_agent(agent: &FenceAgent, target: Member) -> Result<AgentOutput, AttemptError> {
    let vars = Vars::new(agent, target);
    let mut cmd = Command::new(&agent.command);
    cmd.args(agent.args.iter().map(|a| vars.apply(a)))
        .envs(&agent.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let input: String = agent.stdin.iter().map(|(k, v)| format!("{k}={}\n", vars.apply(v))).collect();
    debug!(agent = %agent.name, command = %agent.command.display(), "starting fence agent");
    let mut child = spawn(&mut cmd)
        .await
        .map_err(|source| AttemptError::Spawn { command: agent.command.display().to_string(), source })?;
    let pid = child.id();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let limit = Duration::from_millis(agent.timeout_ms);
    let finished = tokio::time::timeout(limit, talk(&mut child, &input, &mut out, &mut err)).await;
    let output = AgentOutput {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    };
    match finished {
        Ok(Ok(status)) => classify(status, output),
        Ok(Err(e)) => {
            kill(&mut child, pid).await;
            Err(AttemptError::Wait(e))
        }
        Err(_elapsed) => {
            warn!(agent = %agent.name, timeout_ms = agent.timeout_ms, "fence agent timed out; killing it");
            kill(&mut child, pid).await;
            Err(AttemptError::TimedOut { timeout_ms: agent.timeout_ms })
        }
    }
}

/// Starts the program, trying again briefly while its file is busy (just written or replaced).
async fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut delay = Duration::from_millis(10);
    for _ in 0..5 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    cmd.spawn()
}

/// Writes the options, closes standard input, collects the output and waits for the exit.
async fn talk(
    child: &mut Child,
    input: &str,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
) -> std::io::Result<ExitStatus> {
    if let Some(mut stdin) = child.stdin.take() {
        // An agent that exits without reading its options makes this fail (EPIPE); its exit status
        // still tells what happened, so the write error is only logged.
        if let Err(e) = stdin.write_all(input.as_bytes()).await {
            debug!(error = %e, "could not write the fence agent's standard input");
        }
        // Dropping the handle closes the pipe: the agent sees the end of its options.
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
    let wait = async {
        let status = child.wait().await;
        let _ = exited_tx.send(());
        status
    };
    let read = async {
        let both = async { tokio::join!(capture(stdout, out), capture(stderr, err)) };
        tokio::pin!(both);
        tokio::select! {
            _ = &mut both => {}
            _ = async {
                let _ = exited_rx.await;
                tokio::time::sleep(OUTPUT_GRACE).await;
            } => {}
        }
    };
    let (status, ()) = tokio::join!(wait, read);
    status
}

/// Reads a stream to its end, keeping the first [`CAPTURE_BYTES`] (the rest is read and dropped so
/// the agent never blocks on a full pipe).
async fn capture<R: AsyncRead + Unpin>(stream: Option<R>, keep: &mut Vec<u8>) {
    let Some(mut stream) = stream else { return };
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = CAPTURE_BYTES.saturating_sub(keep.len());
                keep.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Kills the agent's process group (the agent and anything it started), then the agent itself, and
/// reaps it.
async fn kill(child: &mut Child, pid: Option<u32>) {
    // The agent leads its own group (`process_group(0)`), so its pid is the group id. A pid below 2
    // would address every process or init: never signal that.
    if let Some(pgid) = pid.filter(|&p| p > 1) {
        let group = format!("-{pgid}");
        match Command::new("kill").args(["-s", "KILL", "--", &group]).stdin(Stdio::null()).output().await {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                debug!(pgid, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "kill of the agent's group failed")
            }
            Err(e) => warn!(pgid, error = %e, "could not run kill for the agent's process group"),
        }
    }
    if let Err(e) = child.start_kill() {
        debug!(error = %e, "start_kill of the fence agent failed (it may have exited)");
    }
    if tokio::time::timeout(REAP_TIMEOUT, child.wait()).await.is_err() {
        warn!(?pid, "a killed fence agent was not reaped in time");
    }
}

fn classify(status: ExitStatus, output: AgentOutput) -> Result<AgentOutput, AttemptError> {
    if status.success() {
        return Ok(output);
    }
    let line = output.first_line();
    match (status.code(), status.signal()) {
        (Some(code), _) => Err(AttemptError::Exit { code, line }),
        (None, Some(signal)) => Err(AttemptError::Signal { signal, line }),
        // Neither an exit code nor a signal cannot happen on Unix; report it as an odd exit.
        (None, None) => Err(AttemptError::Exit { code: -1, line }),
    }
}

/// The first non-empty line of `text`, trimmed and cut to [`MAX_LINE_CHARS`] characters.
fn first_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut cut: String = line.chars().take(MAX_LINE_CHARS).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::{Epoch, NodeId};
    use std::collections::BTreeMap;

    fn agent(plugs: &[(&str, &str)]) -> FenceAgent {
        FenceAgent {
            name: "t".into(),
            command: "/bin/true".into(),
            args: vec![],
            stdin: BTreeMap::new(),
            env: BTreeMap::new(),
            action: "off".into(),
            plugs: plugs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            timeout_ms: 1000,
            retries: 0,
        }
    }

    #[test]
    fn substitution_replaces_known_names_once_and_keeps_the_rest() {
        let a = agent(&[("3", "{epoch}-port")]);
        let m = Member(NodeId(3), Epoch(7));
        assert_eq!(substitute(&a, m, "-n {plug} {node}/{epoch} -o {action}"), "-n {epoch}-port 3/7 -o off");
        assert_eq!(substitute(&a, m, "{unknown} { {node"), "{unknown} { {node");
        assert_eq!(substitute(&agent(&[]), m, "{plug}"), "3");
        assert_eq!(substitute(&a, m, "é{node}é}"), "é3é}");
    }

    #[test]
    fn first_line_prefers_stderr_and_is_bounded() {
        let out = AgentOutput { stdout: "out\n".into(), stderr: "\n  err line  \nmore".into() };
        assert_eq!(out.first_line(), "err line");
        let out = AgentOutput { stdout: "out\n".into(), stderr: String::new() };
        assert_eq!(out.first_line(), "out");
        let long = "x".repeat(500);
        assert_eq!(first_line(&long).map(|l| l.chars().count()), Some(MAX_LINE_CHARS + 1));
    }

    #[test]
    fn attempt_errors_read_as_one_line() {
        assert_eq!(AttemptError::Exit { code: 1, line: "boom".into() }.to_string(), "exit 1: boom");
        assert_eq!(AttemptError::Exit { code: 2, line: String::new() }.to_string(), "exit 2");
        assert_eq!(AttemptError::TimedOut { timeout_ms: 20000 }.to_string(), "timed out after 20000 ms");
        assert_eq!(AttemptError::Signal { signal: 9, line: String::new() }.to_string(), "killed by signal 9");
    }
}
