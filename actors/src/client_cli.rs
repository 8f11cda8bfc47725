//! The `cohort` commands that talk to the local agent: `status`, `members`, `watch` and `send` over its
//! client socket, `fence ack` over its operator socket. Each is one async function the CLI
//! (`crate::cli`) calls with the socket path; all of them use the [`crate::client`] library, so they
//! double as its examples.
//!
//! Output goes to stdout; progress and notices of `send` and `watch` to stderr. Every error names the
//! socket ("cannot connect to the cohort agent at PATH: is `cohort agent` running?").

use crate::client::{Client, ClientError, ClientEvent};
use crate::client_proto::{KeyRequest, MAX_UNANSWERED_SENDS};
use anyhow::{bail, Context as _};
use cohort::{Delivery, Member, NodeId};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long `send` waits for its last messages to come back before it reports them missing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `send` waits for its join (and state transfer) to complete.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The first bytes of every message `cohort send` sends: a timestamp and a sequence number.
const HEADER_BYTES: usize = 16;

async fn connect(socket: &Path, name: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(socket, name).await?)
}

/// `cohort status [--json]`: the node's view, members with epochs, quorum, blocks, pending fences,
/// stateful merges and peers (last heard, in ms); `json` prints the agent's JSON document instead.
pub async fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let mut c = connect(socket, "cohort status").await?;
    let s = c.status().await.with_context(|| format!("cannot read the status from {}", socket.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render_status(&s));
    }
    Ok(())
}

/// `cohort members`: the members of the installed view, one per line.
pub async fn members(socket: &Path) -> anyhow::Result<()> {
    let mut c = connect(socket, "cohort members").await?;
    let s = c.status().await.with_context(|| format!("cannot read the status from {}", socket.display()))?;
    let me = member_of(&s["member"]);
    let Some(view) = s.get("view").filter(|v| !v.is_null()) else {
        println!("no view installed yet");
        return Ok(());
    };
    let primary = view["primary"].as_bool().unwrap_or(false);
    println!(
        "view {} ({})",
        view_id(&view["id"]),
        if primary { "primary" } else { "non-primary: no quorum" }
    );
    println!("{:>6} {:>10}", "NODE", "EPOCH");
    for m in view["members"].as_array().into_iter().flatten() {
        if let Some(mm) = member_of(m) {
            let mark = if Some(mm) == me { "  (this node)" } else { "" };
            println!("{:>6} {:>10}{mark}", mm.0 .0, mm.1 .0);
        }
    }
    Ok(())
}

/// `cohort watch [--group G]`: one line per view, group-view and block event, with a UTC timestamp,
/// until Ctrl-C or until the agent closes the connection.
pub async fn watch(socket: &Path, group: Option<String>) -> anyhow::Result<()> {
    let mut c = connect(socket, "cohort watch").await?;
    c.watch(group.as_deref()).await?;
    eprintln!(
        "watching {} on {} (Ctrl-C to stop)",
        group.as_deref().map_or("all groups".to_string(), |g| format!("group {g}")),
        socket.display()
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            ev = c.next_event() => match ev {
                Ok(ev) => println!("{} {}", utc_timestamp(SystemTime::now()), describe_event(&ev)),
                Err(ClientError::Closed) => bail!("the cohort agent at {} closed the connection", socket.display()),
                Err(e) => return Err(e.into()),
            },
        }
    }
}

/// The arguments of `cohort send`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendArgs {
    /// The group to join and multicast to.
    pub group: String,
    /// How many messages.
    pub count: u64,
    /// Messages per second; `None` sends as fast as backpressure allows, pipelined.
    pub rate: Option<u64>,
    /// Bytes per message (at least 16: a send timestamp and a sequence number come first).
    pub size: usize,
    /// Safe delivery instead of agreed.
    pub safe: bool,
}

/// `cohort send`: joins the group (answering state requests with an empty state), multicasts `count`
/// messages of `size` bytes at `rate` (or as fast as backpressure allows, [`MAX_UNANSWERED_SENDS`] in
/// flight), waits for its own deliveries, and prints throughput and send-to-own-delivery latency.
/// Progress goes to stderr every second.
pub async fn send(socket: &Path, args: SendArgs) -> anyhow::Result<()> {
    if args.size < HEADER_BYTES {
        bail!("--size must be at least {HEADER_BYTES} bytes: each message starts with a send timestamp and a sequence number");
    }
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.rate == Some(0) {
        bail!("--rate must be at least 1 message per second (leave it out to send as fast as possible)");
    }
    let mut c = connect(socket, "cohort send").await?;
    c.join(&args.group).await.with_context(|| format!("cannot join group {}", args.group))?;
    let me = c.member();
    wait_joined(&mut c, &args.group, me).await?;

    let delivery = if args.safe { Delivery::Safe } else { Delivery::Agreed };
    let mut run = SendRun::new(args.count);
    let start = Instant::now();
    let mut progress = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let mut last_progress = (Instant::now(), 0u64);
    loop {
        // Send what is due and fits in the window.
        while run.issued < args.count && c.unanswered_sends() < MAX_UNANSWERED_SENDS {
            let due = args.rate.map(|r| start + Duration::from_secs_f64(run.issued as f64 / r as f64));
            if due.is_some_and(|d| d > Instant::now()) {
                break;
            }
            let payload = message(run.issued, args.size);
            c.send_nowait(&args.group, payload, delivery).await?;
            run.issued += 1;
        }
        if run.issued == args.count && c.unanswered_sends() == 0 && run.delivered >= run.accepted {
            break;
        }
        let next_due = match args.rate {
            Some(r) if run.issued < args.count && c.unanswered_sends() < MAX_UNANSWERED_SENDS => {
                Some(start + Duration::from_secs_f64(run.issued as f64 / r as f64))
            }
            _ => None,
        };
        let sleep_until = tokio::time::Instant::from_std(next_due.unwrap_or_else(Instant::now));
        tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; break; }
            _ = tokio::time::sleep_until(sleep_until), if next_due.is_some() => {}
            _ = progress.tick() => {
                let now = Instant::now();
                let secs = now.duration_since(last_progress.0).as_secs_f64().max(1e-9);
                let rate = (run.delivered - last_progress.1) as f64 / secs;
                eprintln!(
                    "[{:>4.0}s] sent {} accepted {} delivered {} failed {} ({rate:.0} msgs/s)",
                    start.elapsed().as_secs_f64(), run.issued, run.accepted, run.delivered, run.failed
                );
                last_progress = (now, run.delivered);
                if run.issued == args.count && run.last_delivery.unwrap_or(start).elapsed() > DRAIN_TIMEOUT {
                    eprintln!("gave up waiting: {} accepted messages did not come back", run.accepted - run.delivered);
                    break;
                }
            }
            ev = c.next_event() => {
                let ev = ev.with_context(|| format!("connection to the cohort agent at {} failed", socket.display()))?;
                if let Some(ProvideFor { group, joiner, token }) = run.on_event(ev, me.node()) {
                    c.provide_state(&group, joiner, token, Vec::new()).await?;
                }
                if let Some(reason) = run.stopped.take() {
                    eprintln!("stopping: {reason}");
                    break;
                }
            }
        }
    }
    let _ = c.leave(&args.group).await;
    print!("{}", run.report(&args, start, interrupted));
    if run.failed > 0 {
        bail!(
            "{} sends failed (first error: {})",
            run.failed,
            run.first_error.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

/// `cohort fence ack NODE`: the operator confirms that `node` is fenced (powered off, cut off), so its
/// recovery may proceed. `socket` is the agent's operator socket.
pub async fn fence_ack(socket: &Path, node: u32) -> anyhow::Result<()> {
    let mut c = connect(socket, "cohort fence ack").await?;
    c.fence_ack(NodeId(node)).await.with_context(|| format!("cannot acknowledge node {node} as fenced"))?;
    println!("node {node} acknowledged as fenced");
    Ok(())
}

/// `cohort key install|use|remove|list`: one key-ring command to the agent behind the operator socket
/// `socket`; prints the installed keys after it.
pub async fn keys(socket: &Path, op: KeyRequest) -> anyhow::Result<()> {
    let what = match &op {
        KeyRequest::Install { path } => format!("cannot install the key file {path}"),
        KeyRequest::Use { id } => format!("cannot make key {id} the primary key"),
        KeyRequest::Remove { id } => format!("cannot remove key {id}"),
        KeyRequest::List => "cannot list the keys".to_string(),
    };
    let mut c = connect(socket, "cohort key").await?;
    let keys = c.keys(op).await.context(what)?;
    println!("{:<8}  {:<7}  {:<7}  SOURCE", "KEY", "PRIMARY", "FROM");
    for k in keys {
        println!("{:<8}  {:<7}  {:<7}  {}", k.id, if k.primary { "yes" } else { "" }, k.from, k.source);
    }
    Ok(())
}

/// Waits until this member appears in the group's view and, when the group had other members, until its
/// state arrived; answers state requests meanwhile.
async fn wait_joined(c: &mut Client, group: &str, me: Member) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let mut awaiting_state = None;
    loop {
        let ev = match tokio::time::timeout_at(deadline, c.next_event()).await {
            Ok(ev) => ev?,
            Err(_) => bail!(
                "timed out after {} s joining group {group}: is this node in a primary view? (see `cohort status`)",
                JOIN_TIMEOUT.as_secs()
            ),
        };
        match ev {
            ClientEvent::GroupView { group: g, members }
                if g == group && members.iter().any(|m| m.node() == me.node()) =>
            {
                if members.len() == 1 {
                    return Ok(());
                }
                awaiting_state = Some(());
            }
            ClientEvent::ApplyState { group: g, .. } if g == group && awaiting_state.is_some() => {
                return Ok(())
            }
            ClientEvent::ProvideState { group: g, joiner, token } => {
                c.provide_state(&g, joiner, token, Vec::new()).await?
            }
            ClientEvent::Blocked { reason } => eprintln!("blocked while joining: {reason}"),
            ClientEvent::SelfFenced { reason } => bail!("this node fenced itself: {reason}"),
            ClientEvent::RemovedSelf { view } => bail!("this node was removed from the primary view {view}"),
            _ => {}
        }
    }
}

/// A message of `size` bytes: the send time in ns since the UNIX epoch and the sequence number, both
/// big-endian, then zeros.
fn message(seq: u64, size: usize) -> Vec<u8> {
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut p = vec![0u8; size];
    p[..8].copy_from_slice(&now_ns.to_be_bytes());
    p[8..16].copy_from_slice(&seq.to_be_bytes());
    p
}

struct ProvideFor {
    group: String,
    joiner: Member,
    token: cohort::msg::TransferToken,
}

/// Counters and latencies of one `cohort send` run.
struct SendRun {
    issued: u64,
    accepted: u64,
    failed: u64,
    first_error: Option<String>,
    delivered: u64,
    from_others: u64,
    latencies_ns: Vec<u64>,
    last_delivery: Option<Instant>,
    stopped: Option<String>,
}

impl SendRun {
    fn new(count: u64) -> SendRun {
        SendRun {
            issued: 0,
            accepted: 0,
            failed: 0,
            first_error: None,
            delivered: 0,
            from_others: 0,
            latencies_ns: Vec::with_capacity(count.min(10_000_000) as usize),
            last_delivery: None,
            stopped: None,
        }
    }

    fn on_event(&mut self, ev: ClientEvent, me: NodeId) -> Option<ProvideFor> {
        match ev {
            ClientEvent::Sent { .. } => self.accepted += 1,
            ClientEvent::SendFailed { error, .. } => {
                self.failed += 1;
                self.first_error.get_or_insert(error);
            }
            ClientEvent::Deliver { sender, payload, .. } => {
                if sender.node() == me && payload.len() >= HEADER_BYTES {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&payload[..8]);
                    let sent_ns = u64::from_be_bytes(ts);
                    let now_ns =
                        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                    self.latencies_ns.push(now_ns.saturating_sub(sent_ns));
                    self.delivered += 1;
                    self.last_delivery = Some(Instant::now());
                } else {
                    self.from_others += 1;
                }
            }
            ClientEvent::ProvideState { group, joiner, token } => {
                return Some(ProvideFor { group, joiner, token })
            }
            ClientEvent::Blocked { reason } => eprintln!("blocked: {reason}"),
            ClientEvent::Unblocked => eprintln!("unblocked"),
            ClientEvent::View { id, members, primary } => {
                eprintln!(
                    "view {id}: {} members{}",
                    members.len(),
                    if primary { "" } else { " (non-primary)" }
                )
            }
            ClientEvent::SelfFenced { reason } => {
                self.stopped = Some(format!("this node fenced itself: {reason}"))
            }
            ClientEvent::RemovedSelf { view } => {
                self.stopped = Some(format!("this node was removed from the primary view {view}"))
            }
            ClientEvent::GroupView { .. }
            | ClientEvent::ApplyState { .. }
            | ClientEvent::Recovered { .. } => {}
        }
        None
    }

    fn report(&mut self, args: &SendArgs, start: Instant, interrupted: bool) -> String {
        let mut s = String::new();
        let mode = if args.safe { "safe" } else { "agreed" };
        let _ = writeln!(
            s,
            "sent {} messages of {} B to group {} ({mode}): {} accepted, {} failed, {} delivered back{}",
            self.issued,
            args.size,
            args.group,
            self.accepted,
            self.failed,
            self.delivered,
            if interrupted { " (interrupted)" } else { "" }
        );
        if self.from_others > 0 {
            let _ = writeln!(s, "also delivered: {} messages from other senders", self.from_others);
        }
        let end = self.last_delivery.unwrap_or_else(Instant::now);
        let secs = end.duration_since(start).as_secs_f64().max(1e-9);
        let rate = self.delivered as f64 / secs;
        let mbps = rate * args.size as f64 / 1e6;
        let _ = writeln!(s, "throughput: {rate:.0} msgs/s, {mbps:.2} MB/s over {secs:.3} s");
        if !self.latencies_ns.is_empty() {
            self.latencies_ns.sort_unstable();
            let ms = |ns: u64| ns as f64 / 1e6;
            let _ = writeln!(
                s,
                "latency (send to own delivery): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                ms(percentile(&self.latencies_ns, 0.50)),
                ms(percentile(&self.latencies_ns, 0.99)),
                ms(self.latencies_ns.last().copied().unwrap_or(0)),
            );
        }
        s
    }
}

/// The `q` quantile (nearest rank) of sorted values; 0 when empty.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn describe_event(ev: &ClientEvent) -> String {
    let list = |ms: &[Member]| ms.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(" ");
    match ev {
        ClientEvent::View { id, members, primary } => {
            format!(
                "view {id} {} members {}",
                if *primary { "primary" } else { "non-primary" },
                list(members)
            )
        }
        ClientEvent::Deliver { group, msg, sender, seq, payload, .. } => {
            format!("deliver group {group} msg {msg} from {sender} seq {seq} ({} B)", payload.len())
        }
        ClientEvent::GroupView { group, members } => format!("group {group} members {}", list(members)),
        ClientEvent::ProvideState { group, joiner, .. } => {
            format!("provide-state group {group} for {joiner}")
        }
        ClientEvent::ApplyState { group, provider, state } => {
            format!("apply-state group {group} from {provider} ({} B)", state.len())
        }
        ClientEvent::Blocked { reason } => format!("blocked {reason}"),
        ClientEvent::Unblocked => "unblocked".to_string(),
        ClientEvent::Recovered { failed } => format!("recovered {}", list(failed)),
        ClientEvent::RemovedSelf { view } => format!("removed-self by primary view {view}"),
        ClientEvent::SelfFenced { reason } => format!("self-fenced: {reason}"),
        ClientEvent::Sent { req, msg } => format!("sent req {req} msg {msg}"),
        ClientEvent::SendFailed { req, error } => format!("send-failed req {req}: {error}"),
    }
}

/// A member from its JSON form `[node, epoch]`.
fn member_of(v: &Value) -> Option<Member> {
    let a = v.as_array()?;
    let node = u32::try_from(a.first()?.as_u64()?).ok()?;
    Some(Member(NodeId(node), cohort::Epoch(a.get(1)?.as_u64()?)))
}

fn member_str(v: &Value) -> String {
    member_of(v).map_or_else(|| v.to_string(), |m| format!("node {} epoch {}", m.0 .0, m.1 .0))
}

fn view_id(v: &Value) -> String {
    match (v["seq"].as_u64(), v["coord"].as_u64()) {
        (Some(s), Some(c)) => format!("{s}.{c}"),
        _ => v.to_string(),
    }
}

fn list_or_none(v: &Value, f: impl Fn(&Value) -> String) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(f).collect::<Vec<_>>().join(", "),
        _ => "none".to_string(),
    }
}

/// The human form of `cohort status`.
fn render_status(s: &Value) -> String {
    let mut o = String::new();
    let me = member_of(&s["member"]);
    let _ = writeln!(o, "this node:        {}", member_str(&s["member"]));
    match s.get("view").filter(|v| !v.is_null()) {
        Some(v) => {
            let _ = writeln!(o, "view:             {}", view_id(&v["id"]));
        }
        None => {
            let _ = writeln!(o, "view:             none installed yet");
        }
    }
    let primary = s["primary"].as_bool().unwrap_or(false);
    let _ = writeln!(
        o,
        "quorum:           {}",
        if primary { "yes (primary view)" } else { "no (non-primary: applications are blocked)" }
    );
    let _ = writeln!(
        o,
        "blocked:          {}",
        list_or_none(&s["blocked"], |r| r.as_str().map_or_else(|| r.to_string(), str::to_string))
    );
    if s["changing"].as_bool() == Some(true) {
        let _ = writeln!(o, "view change:      in progress");
    }
    if s["removed_self"].as_bool() == Some(true) {
        let _ = writeln!(o, "removed:          this member was removed from the primary view");
    }
    if s["self_fenced"].as_bool() == Some(true) {
        let _ = writeln!(o, "self-fenced:      yes (watchdog)");
    }
    let _ = writeln!(o, "pending fences:   {}", list_or_none(&s["pending_fences"], member_str));
    let _ = writeln!(o, "stateful merges:  {}", list_or_none(&s["stateful_merges"], member_str));
    if s["stalled"].as_bool() == Some(true) {
        let _ = writeln!(o, "stalled:          yes: waiting for the view to be confirmed after a pause");
    }
    if s["catching_up"].as_bool() == Some(true) {
        let _ = writeln!(
            o,
            "catching up:      yes: the data directory forgot what it knew (wiped or restored); this node \
             counts for no quorum until it has installed a primary view"
        );
    }
    let t = &s["timing"];
    if let (Some(hb), Some(ft)) = (t["heartbeat_interval_ms"].as_u64(), t["failure_timeout_ms"].as_u64()) {
        let _ = writeln!(
            o,
            "timing:           heartbeat {hb} ms, failure timeout {ft} ms, discovery {} ms, view change {} ms, \
             retransmit {} ms",
            t["discovery_interval_ms"],
            t["view_change_timeout_ms"],
            t["retransmit_interval_ms"]
        );
    }
    if s["told_to_move_past"].as_array().is_some_and(|a| !a.is_empty()) {
        let _ = writeln!(o, "told to move past: {}", list_or_none(&s["told_to_move_past"], member_str));
    }
    if let Some(asked) = s["epoch_inquiries"].as_array().filter(|a| !a.is_empty()) {
        let told: Vec<String> = asked
            .iter()
            .filter_map(|x| Some(format!("node {} (knew epoch {})", x[0].as_u64()?, x[1].as_u64()?)))
            .collect();
        let _ = writeln!(o, "asked for epochs: {}", told.join(", "));
    }
    if let Some(origin) = s["origin"].as_str() {
        let _ = writeln!(o, "started because:  {origin}");
    }
    if let Some(v) = s.get("view").filter(|v| !v.is_null()) {
        let _ = writeln!(o, "members:");
        for m in v["members"].as_array().into_iter().flatten() {
            let mark = if member_of(m).is_some() && member_of(m) == me { " (this node)" } else { "" };
            let _ = writeln!(o, "  {}{mark}", member_str(m));
        }
    }
    let _ = writeln!(o, "peers:");
    match s["peers"].as_array() {
        Some(peers) if !peers.is_empty() => {
            for p in peers {
                let last =
                    p.get(1).and_then(Value::as_u64).map_or_else(|| "?".to_string(), |ms| ms.to_string());
                let _ = writeln!(o, "  {}: last heard {last} ms ago", member_str(&p[0]));
            }
        }
        _ => {
            let _ = writeln!(o, "  none heard");
        }
    }
    if let Some(groups) = s["groups"].as_object().filter(|g| !g.is_empty()) {
        let _ = writeln!(o, "groups:");
        for (g, ms) in groups {
            let _ = writeln!(
                o,
                "  {g}: {}",
                list_or_none(ms, |m| member_of(m).map_or_else(|| m.to_string(), |m| m.to_string()))
            );
        }
    }
    if let (Some(out), Some(held)) = (s["outbox"].as_u64(), s["held_msgs"].as_u64()) {
        let _ = writeln!(o, "queues:           {out} outgoing, {held} held");
    }
    o
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) without a date library.
fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::{Epoch, ViewId};

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // 2024-02-29 12:34:56.789
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn messages_carry_timestamp_and_sequence() {
        let m = message(42, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(u64::from_be_bytes(m[8..16].try_into().expect("8 bytes")), 42);
        assert!(u64::from_be_bytes(m[..8].try_into().expect("8 bytes")) > 1_600_000_000_000_000_000);
    }

    #[test]
    fn own_deliveries_give_latencies_and_others_are_counted() {
        let me = Member(NodeId(1), Epoch(3));
        let mut run = SendRun::new(2);
        let view = ViewId { seq: 1, coord: NodeId(1) };
        let deliver = |sender, payload| ClientEvent::Deliver {
            group: "g".into(),
            msg: "1.3.1".into(),
            sender,
            view,
            seq: 1,
            delivery: Delivery::Agreed,
            payload,
        };
        run.on_event(deliver(me, message(0, 16)), me.node());
        run.on_event(deliver(Member(NodeId(2), Epoch(1)), vec![0; 16]), me.node());
        run.on_event(ClientEvent::Sent { req: 1, msg: "1.3.1".into() }, me.node());
        assert_eq!((run.delivered, run.from_others, run.accepted), (1, 1, 1));
        assert_eq!(run.latencies_ns.len(), 1);
        let args = SendArgs { group: "g".into(), count: 1, rate: None, size: 16, safe: false };
        let text = run.report(&args, Instant::now(), false);
        assert!(text.contains("1 accepted, 0 failed, 1 delivered back"), "{text}");
        assert!(text.contains("latency (send to own delivery): p50"), "{text}");
    }

    #[test]
    fn status_renders_every_section() {
        let s = serde_json::json!({
            "member": [1, 5],
            "view": {"id": {"seq": 4, "coord": 1}, "members": [[1, 5], [2, 2]], "primary": true},
            "primary": true,
            "blocked": ["fencing"],
            "removed_self": false,
            "self_fenced": false,
            "groups": {"orders": [[1, 5]]},
            "pending_fences": [[3, 1]],
            "stateful_merges": [],
            "outbox": 0,
            "held_msgs": 2,
            "changing": false,
            "peers": [[[2, 2], 15]],
            "registry": {"nodes": {}, "last_primary": null}
        });
        let text = render_status(&s);
        for needle in [
            "this node:        node 1 epoch 5",
            "view:             4.1",
            "quorum:           yes (primary view)",
            "blocked:          fencing",
            "pending fences:   node 3 epoch 1",
            "stateful merges:  none",
            "  node 1 epoch 5 (this node)",
            "  node 2 epoch 2\n",
            "  node 2 epoch 2: last heard 15 ms ago",
            "  orders: [1,5]",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
