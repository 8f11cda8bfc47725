//! The composition root and the NodeSupervisor.
//!
//! [`start_node`] checks the key file before it writes anything, then starts the actors in dependency
//! order and wires them with `Recipient`s: the epoch registry first (it takes the data-directory lock and persists the new epoch before anything can be
//! sent under it, G12), then the event log, the transport, fencing, the client API, the membership and
//! the admin endpoint. The binary ([`run_agent`]) and the tests use the same function.
//!
//! The [`NodeSupervisor`] handles what no single actor can: a new incarnation when the core asks for a
//! new epoch, the watchdog's exit, and fail-stop on a fatal error (a broken safety invariant or a durable
//! write that failed is never "carried on" from). The transport is started under actix's `Supervisor`,
//! so an IO failure of its socket restarts it.

use crate::admin::AdminActor;
use crate::client_api::{self, ClientApiActor, ClientApiConfig};
use crate::epoch_registry::EpochRegistryActor;
use crate::event_log::EventLogActor;
use crate::fencing::FencingActor;
use crate::key_file::{self, OwnerRule};
use crate::membership::{
    AgentClock, ExecuteOutputs, LeftCluster, MembershipActor, MembershipLinks, RecordStop, ReplaceCore,
};
use crate::messages::*;
use crate::metrics::Metrics;
use crate::sd_notify::ServiceEnv;
use crate::service_manager::{NodeLinks, ServiceManagerActor};
use crate::settings::{Settings, WatchdogAction};
use crate::transport::{TransportActor, TransportConfig};
use actix::prelude::*;
use anyhow::Context as _;
use cohort::{Member, NodeId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The file an operator creates in the data directory after restoring it from a backup
/// (docs/OPERATIONS.md, "Restoring a data directory"): the next start does not let the directory speak for
/// itself and catches up before it counts for a quorum. Removed once that is on disk.
pub const RESTORED_MARKER: &str = "RESTORED_FROM_BACKUP";

/// Handles to a running node.
pub struct NodeHandle {
    /// The membership actor (status, leave, client operations).
    pub membership: Addr<MembershipActor>,
    /// The transport (link filter).
    pub transport: Addr<TransportActor>,
    /// The client API.
    pub client_api: Addr<ClientApiActor>,
    /// The admin endpoint, if enabled.
    pub admin: Option<Addr<AdminActor>>,
    /// The event log.
    pub event_log: Addr<EventLogActor>,
    /// The fencing actor (a reload replaces its levels).
    pub fencing: Addr<FencingActor>,
    /// The supervisor.
    pub supervisor: Addr<NodeSupervisor>,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// The first incarnation.
    pub member: Member,
    /// Set to the reason when the node must stop (fatal error or watchdog exit).
    pub fatal: watch::Receiver<Option<String>>,
    /// Set once a clean leave completed.
    pub left: watch::Receiver<bool>,
}

/// The supervisor actor.
pub struct NodeSupervisor {
    registry: Addr<EpochRegistryActor>,
    membership: Option<Addr<MembershipActor>>,
    client_api: Option<Addr<ClientApiActor>>,
    watchdog: WatchdogAction,
    fatal_tx: watch::Sender<Option<String>>,
    left_tx: watch::Sender<bool>,
}

impl Actor for NodeSupervisor {
    type Context = Context<Self>;
}

/// Completes the supervisor's wiring once the actors it supervises exist.
#[derive(Message)]
#[rtype(result = "()")]
struct Wire {
    membership: Addr<MembershipActor>,
    client_api: Addr<ClientApiActor>,
}

impl Handler<Wire> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Wire, _ctx: &mut Context<Self>) {
        self.membership = Some(msg.membership);
        self.client_api = Some(msg.client_api);
    }
}

impl Handler<NewEpochRequested> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, msg: NewEpochRequested, ctx: &mut Context<Self>) {
        let fut = self.registry.send(OpenEpoch { min_epoch: msg.min_epoch });
        ctx.wait(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok(Ok(durable)) => {
                if let Some(m) = &act.membership {
                    m.do_send(ReplaceCore { durable, reason: msg.reason });
                }
            }
            Ok(Err(e)) => act.fail(format!("cannot persist a new epoch: {e}")),
            Err(e) => act.fail(format!("epoch registry unavailable: {e}")),
        }));
    }
}

impl Handler<FatalError> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, msg: FatalError, _ctx: &mut Context<Self>) {
        self.fail(msg.detail);
    }
}

impl Handler<SelfFenced> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, msg: SelfFenced, _ctx: &mut Context<Self>) {
        if let Some(c) = &self.client_api {
            c.do_send(msg.clone());
        }
        tracing::error!(reason = %msg.reason, "watchdog: this node stops acting on its state");
        if self.watchdog == WatchdogAction::Exit {
            self.fail(format!("watchdog self-fence: {}", msg.reason));
        }
    }
}

impl Handler<LeftCluster> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, _msg: LeftCluster, _ctx: &mut Context<Self>) {
        let _ = self.left_tx.send(true);
    }
}

impl NodeSupervisor {
    fn fail(&self, detail: String) {
        tracing::error!("fatal: {detail}");
        let _ = self.fatal_tx.send(Some(detail));
    }
}

/// Starts every actor of one node. Must be called inside an actix system.
pub async fn start_node(settings: Settings) -> anyhow::Result<NodeHandle> {
    let cfg = settings.core_config();
    cfg.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let cfg = Arc::new(cfg);
    let node_id = settings.node_id();
    let metrics = Arc::new(Metrics::default());
    let clock = AgentClock::new();

    // 1. The key is checked before anything is written (the data directory, its lock, an epoch): a bad
    //    key file is a configuration mistake ([`KeyFileError`], exit code 2), and an agent that
    //    persisted a new epoch before refusing its key would have spent an epoch on nothing.
    //    So are the further keys of node.accept_key_files.
    let rule = OwnerRule::Agent(key_file::effective_uid());
    let configured =
        key_file::check_configured(&settings.node.key_file, &settings.node.accept_key_files, rule)?;
    //    The keys `cohort key install` added in the previous run, checked the same way: read only.
    let ring_file = settings.node.data_dir.join(key_file::RING_FILE);
    let (keys, notes) = key_file::load_ring(&configured, &ring_file, &settings.cluster.name, rule)?;
    for note in notes {
        tracing::warn!("{note}");
    }
    // 2. The data directory: lock, then a new epoch persisted before anything else happens (G12). The
    //    cluster is asked which epochs of this node it has seen first, so a wiped or restored data
    //    directory never brings back a used epoch.
    let registry =
        EpochRegistryActor::open(&settings.node.data_dir).map_err(|e| anyhow::anyhow!("{e}"))?.start();
    let peers: BTreeMap<NodeId, std::net::SocketAddr> =
        settings.cluster.nodes.iter().map(|n| (NodeId(n.id), n.addr)).collect();
    let bind = settings.addr_of(node_id).context("node.id is not in cluster.nodes")?;
    let disk =
        registry.send(LoadDurable).await.context("epoch registry stopped")?.with_context(|| {
            format!("cannot read the data directory {}", settings.node.data_dir.display())
        })?;
    let disk_epoch = disk.epoch;
    // The operator restored this data directory from a backup and says so with this file
    // (docs/OPERATIONS.md): the directory may lack epochs and facts the cluster recorded since.
    let restored_marker = settings.node.data_dir.join(RESTORED_MARKER);
    let restored = restored_marker.exists();
    if restored {
        tracing::warn!(
            marker = %restored_marker.display(),
            "the data directory was restored from a backup: this node asks a majority of the others for \
             its epoch and counts for no quorum until it has installed a primary view"
        );
    }
    let asked =
        crate::inquiry::ask_epoch(cfg.clone(), node_id, disk, restored, bind, &peers, &keys, &registry)
            .await?;
    if asked.behind {
        tracing::warn!(
            disk_epoch = disk_epoch.0,
            cluster_knows = asked.min_epoch.0 - 1,
            "the data directory is behind the cluster (wiped, or restored from an older backup): \
             this node starts above every epoch the cluster has seen for it"
        );
    }
    tracing::info!(
        answers = asked.answers.len(),
        elapsed_ms = asked.elapsed.as_millis() as u64,
        min_epoch = asked.min_epoch.0,
        "asked the cluster for this node's epochs"
    );
    let durable = registry
        .send(OpenEpoch { min_epoch: asked.min_epoch })
        .await
        .context("epoch registry stopped")?
        .with_context(|| format!("cannot persist the epoch in {}", settings.node.data_dir.display()))?;
    // A data directory that lost its own highest view sequence number (wiped, restored) takes the
    // cluster's, so this incarnation never proposes a view id that was used (G1). Persisted with the
    // first ballot; a crash before that only repeats the inquiry.
    let mut durable = durable;
    durable.max_view_seq = durable.max_view_seq.max(asked.view_seq_floor);
    // A directory that forgot what it knew counts for no quorum until it installed a primary view (G8,
    // G12). On disk before the incarnation sends anything, and before the operator's marker goes.
    if asked.forgot && !durable.catching_up {
        durable.catching_up = true;
        registry
            .send(PersistDurable(durable.clone()))
            .await
            .context("epoch registry stopped")?
            .with_context(|| {
                format!("cannot persist the data directory {}", settings.node.data_dir.display())
            })?;
        tracing::warn!("this node catches up: it counts for no quorum until it has installed a primary view");
    }
    if restored {
        std::fs::remove_file(&restored_marker)
            .with_context(|| format!("cannot remove {}", restored_marker.display()))?;
    }
    let member = Member(node_id, durable.epoch);

    let (fatal_tx, fatal_rx) = watch::channel(None);
    let (left_tx, left_rx) = watch::channel(false);
    let sup_ctx: Context<NodeSupervisor> = Context::new();
    let sup = sup_ctx.address();

    // 3. The event log.
    let event_log = EventLogActor::open_rotating(
        &settings.event_log_path(),
        settings.event_log_rotation(),
        sup.clone().recipient(),
    )
    .with_context(|| format!("cannot open the event log {}", settings.event_log_path().display()))?
    .start();

    // 4. The membership's address exists before the actor, so the actors it talks to can point at it.
    let m_ctx: Context<MembershipActor> = Context::new();
    let m_addr = m_ctx.address();

    // 5. Transport, supervised: a socket failure restarts it. The ring it starts with is recorded
    //    first, with each key's origin, so that `cohort config check` can say what a reload would do.
    if let Err(e) = key_file::save_ring(&ring_file, &keys.list()) {
        tracing::warn!(path = %ring_file.display(), "cannot record the key ring: {e}");
    }
    let tcfg = TransportConfig {
        bind,
        node: node_id,
        peers,
        cluster: settings.cluster.name.clone(),
        keys,
        ring_file: Some(ring_file),
        max_datagram_bytes: settings.limits.max_datagram_bytes,
    };
    let deliver = m_addr.clone().recipient();
    let tmetrics = metrics.clone();
    let transport = actix::Supervisor::start(move |_| TransportActor::new(tcfg, deliver, tmetrics));

    // 6. Fencing.
    let fencing =
        FencingActor::new(settings.fencing.levels.clone(), m_addr.clone().recipient(), metrics.clone())
            .start();
    let fencing_addr = fencing.clone();

    // 7. The client API.
    let links = client_api::MembershipLinks {
        join: m_addr.clone().recipient(),
        leave: m_addr.clone().recipient(),
        multicast: m_addr.clone().recipient(),
        provide_state: m_addr.clone().recipient(),
        ack_fence: m_addr.clone().recipient(),
        get_status: m_addr.clone().recipient(),
        // The link filter is reachable from the operator socket only where a test bed or the demo
        // turned it on.
        link_filter: settings.testing.link_filter.then(|| transport.clone().recipient()),
        key_ring: Some(transport.clone().recipient()),
    };
    let client_api = ClientApiActor::new(ClientApiConfig::from_settings(&settings), links, metrics.clone())
        .with_fatal(sup.clone().recipient())
        .start();

    // 8. The membership itself.
    let mlinks = MembershipLinks {
        send_frame: transport.clone().recipient(),
        persist: registry.clone().recipient(),
        record: event_log.clone().recipient(),
        app: client_api.clone().recipient(),
        self_fenced: sup.clone().recipient(),
        fence: fencing.recipient(),
        new_epoch: sup.clone().recipient(),
        fatal: sup.clone().recipient(),
        left: Some(sup.clone().recipient()),
    };
    let (mut actor, first_outputs) =
        MembershipActor::new(cfg.clone(), node_id, durable, mlinks, metrics.clone(), clock);
    if asked.min_epoch.0 > disk_epoch.0 + 1 {
        actor.set_origin(format!(
            "the data directory held epoch {}, but the cluster had seen epoch {} of this node (a wiped data \
             directory or an older backup): started above it",
            disk_epoch.0,
            asked.min_epoch.0 - 1
        ));
    }
    m_ctx.run(actor);
    m_addr.do_send(ExecuteOutputs(first_outputs));

    // 9. Admin endpoint.
    let admin = settings
        .admin
        .listen
        .map(|addr| AdminActor::new(addr, node_id, m_addr.clone().recipient(), metrics.clone()).start());

    let supervisor = sup_ctx.run(NodeSupervisor {
        registry,
        membership: None,
        client_api: None,
        watchdog: settings.fencing.watchdog,
        fatal_tx,
        left_tx,
    });
    supervisor.do_send(Wire { membership: m_addr.clone(), client_api: client_api.clone() });

    Ok(NodeHandle {
        membership: m_addr,
        transport,
        client_api,
        admin,
        event_log,
        fencing: fencing_addr,
        supervisor,
        metrics,
        member,
        fatal: fatal_rx,
        left: left_rx,
    })
}

/// How a [`NodeHandle::shutdown`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The leave completed: this node saw a view installed without it (the core wrote `stop`).
    Left,
    /// The leave was sent but not seen completed within the deadline; a `stop` record with the reason
    /// was written. This is the normal outcome when every member shuts down at once: nobody is left to
    /// install a view without the leavers.
    NotAcknowledged,
}

/// How long a clean shutdown waits for its leave to complete: the failure timeout.
///
/// The other members act on the `Leave` datagram at once, so a leave normally completes within one
/// view change (a few round trips). It cannot complete when every other member is leaving too: nobody
/// is left to install a view without this one (and the core does not tell the agent that the others
/// are leaving). Waiting longer than the failure timeout gains nothing: by then the others would have
/// removed this node anyway, and because they received its `Leave` they record it as `left`, not
/// `failed`, whenever it goes. (Before this bound the agent waited three failure timeouts.)
pub fn leave_deadline(timing: &crate::settings::TimingSection) -> Duration {
    Duration::from_millis(timing.failure_timeout_ms.max(1))
}

impl NodeHandle {
    /// Leaves the cluster cleanly, waiting at most `deadline` for the leave to complete; writes a `stop`
    /// record when it did not. The event log is fsync'd before this returns.
    pub async fn shutdown(&mut self, reason: &str, deadline: Duration) -> ShutdownOutcome {
        let _ = self.membership.send(LeaveCluster).await;
        let done = tokio::time::timeout(deadline, self.left.wait_for(|l| *l)).await.is_ok_and(|r| r.is_ok());
        if !done {
            let _ = self.membership.send(RecordStop { reason: reason.to_string() }).await;
        }
        // Let the event log drain what was sent to it before the process ends.
        let _ = self.event_log.send(crate::event_log::Flush).await;
        if done {
            ShutdownOutcome::Left
        } else {
            ShutdownOutcome::NotAcknowledged
        }
    }
}

/// What [`run_agent`] needs besides the settings.
#[derive(Debug, Default)]
pub struct AgentOptions {
    /// How the settings were loaded: a reload (SIGHUP) loads them again the same way. `None` turns
    /// reloads off (they are then logged and ignored).
    pub reload_from: Option<crate::settings_load::LoadOptions>,
    /// What the service manager said in the environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    pub service: ServiceEnv,
}

/// The agent's exit code after a panic (`EX_SOFTWARE`): the service manager restarts it (the packaged
/// unit has `Restart=always` and prevents a restart only on 2, a configuration error).
pub const EXIT_PANIC: i32 = 70;

/// Makes every panic in the agent fail-stop: the panic message and location go to stderr (the journal
/// under systemd), then the process exits with [`EXIT_PANIC`] at once. Without this a panic in an actor's
/// handler ends only that actor's task (the runtime catches it) and leaves the process up, its sockets
/// open and its clients hanging, while its peers still hear the transport; exiting instead lets the
/// service manager restart it as a new epoch, which the protocol handles like any crash.
pub fn install_fail_stop() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("cohort: fatal: the agent panicked; exiting with status {EXIT_PANIC} (fail-stop: the service manager restarts it with a new epoch)");
        std::process::exit(EXIT_PANIC);
    }));
}

/// Fault injection for tests of [`install_fail_stop`]: with `COHORT_TEST_INJECT_PANIC_MS=N` in its
/// environment, the membership actor panics N ms after it starts (inside an actor handler, where a panic
/// is otherwise caught by the runtime). Read once, at start; never set it outside tests.
pub(crate) fn injected_panic_after() -> Option<std::time::Duration> {
    let v = std::env::var("COHORT_TEST_INJECT_PANIC_MS").ok()?;
    v.trim().parse::<u64>().ok().map(std::time::Duration::from_millis)
}

/// Runs the agent until SIGINT/SIGTERM (clean leave) or a fatal error (exit non-zero); SIGHUP reloads
/// the configuration ([`crate::reload`]). Under a service manager (`NOTIFY_SOCKET`) a
/// [`ServiceManagerActor`] reports readiness, status and the watchdog.
pub fn run_agent(settings: Settings, opts: AgentOptions) -> anyhow::Result<()> {
    let system = actix::System::new();
    system.block_on(async move {
        let notifier = opts.service.notifier().map_err(|e| {
            anyhow::anyhow!("cannot open a socket to notify the service manager at NOTIFY_SOCKET: {e}")
        })?;
        let manager = notifier.map(|n| ServiceManagerActor::new(n, opts.service.watchdog).start());
        if let (Some(_), Some(w)) = (&manager, opts.service.watchdog) {
            tracing::info!(watchdog_ms = w.as_millis() as u64, "the service manager's watchdog is on");
        }
        // SIGHUP is caught from the start: its default action ends the process, and a reload asked for
        // while the agent starts is carried out once it runs. SIGTERM keeps its default action until
        // the node runs: a stop during the epoch inquiry has nothing to leave yet.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        let mut handle = start_node(settings.clone()).await?;
        tracing::info!(member = %handle.member, "cohort agent started");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        if let Some(m) = &manager {
            m.do_send(WatchNode(NodeLinks {
                get_status: handle.membership.clone().recipient(),
                transport: handle.transport.clone().recipient(),
                client_socket: settings.socket_path(),
                cfg: Arc::new(settings.core_config()),
            }));
        }
        let running_path = crate::reload::running_file(&settings);
        let mut running = settings;
        record_running(&running_path, &running);
        let mut fatal = handle.fatal.clone();
        let outcome = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break Ok("interrupt"),
                _ = term.recv() => break Ok("terminate"),
                _ = hup.recv() => {
                    if let Some(m) = &manager {
                        m.do_send(NotifyReloading);
                    }
                    let summary = reload(&mut running, opts.reload_from.as_ref(), &handle).await;
                    record_running(&running_path, &running);
                    if let Some(m) = &manager {
                        m.do_send(NotifyReloaded { summary });
                    }
                }
                r = fatal.wait_for(|f| f.is_some()) => {
                    break Err(r.map(|f| f.clone().unwrap_or_default()).unwrap_or_default())
                }
            }
        };
        let _ = std::fs::remove_file(&running_path);
        match outcome {
            Ok(reason) => {
                tracing::info!("{reason}: leaving the cluster");
                if let Some(m) = &manager {
                    let _ = m.send(NotifyStopping { reason: format!("{reason}: leaving the cluster") }).await;
                }
                // The failure timeout may have changed at a reload since the start.
                let outcome = handle.shutdown(reason, leave_deadline(&running.timing)).await;
                tracing::info!(?outcome, "stopped");
                Ok(())
            }
            Err(detail) => {
                let _ = handle.event_log.send(crate::event_log::Flush).await;
                Err(anyhow::anyhow!("{detail}"))
            }
        }
    })
}

/// Reads and checks the key files of `new` and plans what the reload does to the transport's key ring.
async fn reload_keys_plan(running: &Settings, new: &Settings, handle: &NodeHandle) -> crate::reload::KeyPlan {
    let rule = OwnerRule::Agent(key_file::effective_uid());
    let configured = key_file::check_configured(&new.node.key_file, &new.node.accept_key_files, rule)
        .map_err(|e| e.to_string());
    let ring = match handle.transport.send(ChangeKeyRing(KeyRingOp::List)).await {
        Ok(Ok(ring)) => ring,
        Ok(Err(e)) => return crate::reload::KeyPlan::Refused(e.to_string()),
        Err(e) => return crate::reload::KeyPlan::Refused(format!("the transport did not answer: {e}")),
    };
    crate::reload::plan_keys(running, new, configured.as_ref().map_err(Clone::clone), &ring)
}

/// Writes the running configuration for `cohort config check`; a failure costs only that comparison.
fn record_running(path: &std::path::Path, settings: &Settings) {
    let rc = crate::reload::RunningConfig { pid: std::process::id(), settings: settings.clone() };
    if let Err(e) = crate::reload::write_running(path, &rc) {
        tracing::warn!(
            path = %path.display(),
            "cannot record the running configuration (cohort config check cannot compare with it): {e}"
        );
    }
}

/// Loads the configuration again and applies what can change at run time; returns the one-line
/// summary. A configuration that does not load changes nothing.
async fn reload(
    running: &mut Settings,
    from: Option<&crate::settings_load::LoadOptions>,
    handle: &NodeHandle,
) -> String {
    let Some(from) = from else {
        tracing::warn!("SIGHUP: this agent was started without a way to reload its configuration; ignored");
        return "reload ignored: no configuration source".to_string();
    };
    let loaded = match crate::settings_load::load(from) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("configuration reload failed, nothing changed: {e}");
            return format!("configuration reload failed, nothing changed: {e}");
        }
    };
    let keys = reload_keys_plan(running, &loaded.settings, handle).await;
    let mut plan = crate::reload::plan(running, &loaded.settings).with_keys(running, keys);
    if let crate::reload::KeyPlan::Steps(steps) = &plan.keys {
        let op = KeyRingOp::Reload {
            install: steps.install.iter().map(|k| (k.key.clone(), k.file.display().to_string())).collect(),
            primary: steps.primary,
            remove: steps.remove.clone(),
        };
        let answer = match handle.transport.send(ChangeKeyRing(op)).await {
            Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(format!("the transport did not answer: {e}")),
        };
        match answer {
            Ok(()) => tracing::warn!("key ring changed by the reload: {}", steps.describe()),
            Err(why) => {
                tracing::error!("the key change was not applied: {why}");
                plan = plan.with_keys(running, crate::reload::KeyPlan::Refused(why));
            }
        }
    } else if let crate::reload::KeyPlan::Refused(why) = &plan.keys {
        tracing::error!("the key change was refused, the key ring stays as it is: {why}");
    }
    if plan.changes_timing() {
        // The core checks the step against what it runs (the plan checked the same against the running
        // configuration); a refusal there keeps the running timing.
        let timing = plan.next.core_config().timing();
        let answer = match handle.membership.send(ApplyTiming { timing }).await {
            Ok(r) => r.map_err(|e| format!("timing.{e}")),
            Err(e) => Err(format!("the membership actor did not answer: {e}")),
        };
        if let Err(why) = answer {
            tracing::error!("the timing was not applied: {why}");
            plan.refuse_timing(running, why);
        }
    }
    for c in &plan.applied {
        match c.key.as_str() {
            "log.level" => {
                if let Err(e) = crate::telemetry::set_level(&plan.next.log.level) {
                    tracing::warn!("log.level changed but not applied: {e}");
                }
            }
            "fencing.levels" => {
                handle.fencing.do_send(ReplaceFenceLevels { levels: plan.next.fencing.levels.clone() })
            }
            "log.event_log_max_bytes" | "log.event_log_keep_files" => {
                handle.event_log.do_send(crate::messages::SetEventLogRotation(plan.next.event_log_rotation()))
            }
            _ => {}
        }
        tracing::info!(key = %c.key, old = %c.old, new = %c.new, "configuration change applied");
    }
    for c in &plan.need_restart {
        tracing::warn!(
            key = %c.key, running = %c.old, new = %c.new,
            "configuration change needs a restart; the running value stays"
        );
    }
    let summary = plan.summary();
    tracing::info!("{summary}");
    *running = plan.next;
    summary
}
