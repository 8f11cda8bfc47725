//! Configuration reload: what a running agent applies at SIGHUP (`systemctl reload cohort`), and the
//! record of the configuration it runs with, which `cohort config check` compares against.
//!
//! A reload loads the configuration again exactly as at start (the same files, environment and flags)
//! and validates all of it. A configuration that does not load changes nothing. Otherwise the keys the
//! loader's table marks [`Apply::Reload`] are applied ([`plan`]: `log.level`, `log.event_log_*`, `fencing.levels` and the
//! `timing.*` keys, the latter together and only one step from the running timing, else refused as a
//! whole with the reason), and every other changed key is named as needing a restart and keeps its
//! running value.
//!
//! The key files (`node.key_file`, `node.accept_key_files`) are read again at every reload, also when
//! the configuration did not change (a key file rewritten in place), and [`plan_keys`] compares their
//! keys with the running key ring: configured keys not in the ring are installed, `node.key_file`'s key
//! becomes the primary when the configuration is in charge of the primary, and keys that came from the
//! configuration and are no longer configured are removed. Keys installed by `cohort key install` are
//! never removed by a reload. One bad key file refuses the key change as a whole, with the reason
//! naming the key and the file, and the rest of the reload is applied.
//!
//! The running configuration is written to `running-config.toml` beside the client socket
//! ([`running_file`]) at start and after every reload, with the agent's PID, and removed on exit. It is
//! mode 0640: fence levels may name devices and users.
//!
//! **Deliberately absent:** no IO but that file; applying a plan (the log filter, the fencing actor) is
//! the caller's ([`crate::supervisor::run_agent`]).

use crate::crypto::{ClusterKey, KeyId, KeyInfo, KeyOrigin};
use crate::key_file::ConfiguredKeys;
use crate::settings::Settings;
use crate::settings_load::{changed_keys, Apply, KeyChange};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The configuration keys that name key files: their changes are applied with the key ring's steps.
const KEY_FILE_KEYS: [&str; 2] = ["node.key_file", "node.accept_key_files"];

/// One key a reload installs into the key ring, as the configuration's.
#[derive(Clone, Debug)]
pub struct KeyInstall {
    /// The key's id.
    pub id: KeyId,
    /// The key file it was read from.
    pub file: PathBuf,
    /// The key, read and checked.
    pub key: ClusterKey,
}

/// What a reload does to the key ring, in this order: install, make primary, remove.
#[derive(Clone, Debug, Default)]
pub struct KeySteps {
    /// Configured keys the ring lacks.
    pub install: Vec<KeyInstall>,
    /// The key that seals from now on, when it changes.
    pub primary: Option<KeyId>,
    /// Keys that came from the configuration and are no longer configured.
    pub remove: Vec<KeyId>,
}

impl KeySteps {
    /// True when the ring stays as it is.
    pub fn is_empty(&self) -> bool {
        self.install.is_empty() && self.primary.is_none() && self.remove.is_empty()
    }

    /// The steps in words, with key ids and files, never key material.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> =
            self.install.iter().map(|k| format!("installed {} from {}", k.id, k.file.display())).collect();
        if let Some(p) = self.primary {
            parts.push(format!("primary now {p}"));
        }
        parts.extend(self.remove.iter().map(|id| format!("removed {id}")));
        parts.join(", ")
    }
}

/// What a reload does with the key files.
#[derive(Clone, Debug, Default)]
pub enum KeyPlan {
    /// The ring already holds exactly the configured keys.
    #[default]
    Unchanged,
    /// These steps.
    Steps(KeySteps),
    /// A key file failed a check (or the ring refused the steps): the ring stays as it is.
    Refused(String),
}

/// What a reload does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Changed keys applied now.
    pub applied: Vec<KeyChange>,
    /// Changed keys that keep their running value until a restart.
    pub need_restart: Vec<KeyChange>,
    /// Changed reloadable keys refused as a whole, with why: a timing step too far for peers that still
    /// run the old timing ([`cohort::Timing::check_step`]). They keep their running values.
    pub refused: Vec<KeyChange>,
    /// Why `refused` was refused (one line naming the key).
    pub refused_why: Option<String>,
    /// What it does to the key ring ([`plan_keys`]).
    pub keys: KeyPlan,
    /// Changed key-file keys (`node.key_file`, `node.accept_key_files`) whose change the key plan
    /// refused; they keep their running values.
    pub keys_refused: Vec<KeyChange>,
    /// The configuration the agent runs with once the plan is applied.
    pub next: Settings,
}

impl Plan {
    /// One line for the log and the service manager's status.
    pub fn summary(&self) -> String {
        let names = |v: &[KeyChange]| v.iter().map(|c| c.key.as_str()).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !self.applied.is_empty() {
            parts.push(format!("applied {}", names(&self.applied)));
        }
        if !self.refused.is_empty() {
            parts.push(format!(
                "refused {} ({})",
                names(&self.refused),
                self.refused_why.as_deref().unwrap_or("out of bounds")
            ));
        }
        match &self.keys {
            KeyPlan::Unchanged => {}
            KeyPlan::Steps(steps) => parts.push(format!("keys: {}", steps.describe())),
            KeyPlan::Refused(why) if self.keys_refused.is_empty() => {
                parts.push(format!("refused the key change ({why})"))
            }
            KeyPlan::Refused(why) => {
                parts.push(format!("refused the key change of {} ({why})", names(&self.keys_refused)))
            }
        }
        if !self.need_restart.is_empty() {
            parts.push(format!("changed but needs a restart: {}", names(&self.need_restart)));
        }
        let nothing_applied = self.applied.is_empty() && !matches!(self.keys, KeyPlan::Steps(_));
        match (parts.is_empty(), nothing_applied) {
            (true, _) => "configuration reloaded: nothing changed".to_string(),
            (false, true) => format!("configuration reloaded: nothing applied; {}", parts.join("; ")),
            (false, false) => format!("configuration reloaded: {}", parts.join("; ")),
        }
    }

    /// True when the plan applies a `timing.*` key.
    pub fn changes_timing(&self) -> bool {
        self.applied.iter().any(|c| c.key.starts_with("timing."))
    }

    /// Refuses every applied `timing.*` key (they go together) for `why`; `next` keeps the timing of
    /// `running`.
    pub fn refuse_timing(&mut self, running: &Settings, why: String) {
        self.next.timing = running.timing.clone();
        let (t, rest): (Vec<KeyChange>, Vec<KeyChange>) =
            std::mem::take(&mut self.applied).into_iter().partition(|c| c.key.starts_with("timing."));
        self.applied = rest;
        self.refused.extend(t);
        self.refused_why.get_or_insert(why);
    }

    /// Sets the key plan; a refusal keeps the running `node.key_file` and `node.accept_key_files`.
    pub fn with_keys(mut self, running: &Settings, keys: KeyPlan) -> Plan {
        self.keys = keys;
        if let KeyPlan::Refused(_) = self.keys {
            self.next.node.key_file = running.node.key_file.clone();
            self.next.node.accept_key_files = running.node.accept_key_files.clone();
            let (k, rest): (Vec<KeyChange>, Vec<KeyChange>) = std::mem::take(&mut self.applied)
                .into_iter()
                .partition(|c| KEY_FILE_KEYS.contains(&c.key.as_str()));
            self.applied = rest;
            self.keys_refused.extend(k);
        }
        self
    }

    /// When the change of `key` takes effect, as `cohort config check` says it.
    pub fn describe(&self, key: &str) -> String {
        if let (KeyPlan::Refused(why), true) = (&self.keys, KEY_FILE_KEYS.contains(&key)) {
            format!("refused by a reload: {why}")
        } else if self.refused.iter().any(|c| c.key == key) {
            format!("refused by a reload: {}", self.refused_why.as_deref().unwrap_or("out of bounds"))
        } else if self.applied.iter().any(|c| c.key == key) {
            Apply::Reload.describe().to_string()
        } else {
            Apply::Restart.describe().to_string()
        }
    }
}

/// What reloading `new` into an agent running `running` does. The `timing.*` keys are applied together
/// or not at all: the new timing must be one step from the running one ([`cohort::Timing::check_step`]).
pub fn plan(running: &Settings, new: &Settings) -> Plan {
    let mut next = running.clone();
    let (mut applied, mut need_restart) = (Vec::new(), Vec::new());
    for change in changed_keys(running, new) {
        match change.apply {
            Apply::Reload => {
                apply_key(&mut next, new, &change.key);
                applied.push(change);
            }
            Apply::Restart => need_restart.push(change),
        }
    }
    let mut plan = Plan {
        applied,
        need_restart,
        refused: Vec::new(),
        refused_why: None,
        keys: KeyPlan::Unchanged,
        keys_refused: Vec::new(),
        next,
    };
    if plan.changes_timing() {
        let step = plan.next.core_config().timing();
        let core = running.core_config();
        let ok =
            step.check_step(&core.timing(), core.fencing).and_then(|()| core.with_timing(step).map(|_| ()));
        if let Err(e) = ok {
            plan.refuse_timing(running, format!("timing.{e}"));
        }
    }
    plan
}

/// What a reload of `new` (whose key files were read and checked into `configured`, or refused with a
/// line naming the key and the file) does to the running key ring `ring` of an agent running
/// `running`:
/// - every configured key the ring lacks is installed (as [`KeyOrigin::Config`]);
/// - `node.key_file`'s key becomes the primary when the configuration is in charge of the primary: the
///   running primary came from the configuration, or `node.key_file` names another file than it ran
///   with, or its key is new to the ring (the file was rewritten in place). A primary chosen with
///   `cohort key use` stays until `node.key_file` changes;
/// - every key that came from the configuration and is no longer configured is removed (a file
///   rewritten in place: its old key); keys installed by `cohort key install` are never removed.
pub fn plan_keys(
    running: &Settings,
    new: &Settings,
    configured: Result<&ConfiguredKeys, String>,
    ring: &[KeyInfo],
) -> KeyPlan {
    let configured = match configured {
        Ok(c) => c,
        Err(why) => return KeyPlan::Refused(why),
    };
    let in_ring: BTreeSet<String> = ring.iter().map(|k| k.id.clone()).collect();
    let mut steps = KeySteps::default();
    let mut wanted = BTreeSet::new();
    for (key, file) in configured.all() {
        let id = key.id();
        if wanted.insert(id.to_string()) && !in_ring.contains(&id.to_string()) {
            steps.install.push(KeyInstall { id, file: file.clone(), key: key.clone() });
        }
    }
    let primary = configured.primary.0.id();
    let running_primary = ring.iter().find(|k| k.primary);
    let config_in_charge = running_primary.is_none_or(|k| k.from == KeyOrigin::Config)
        || running.node.key_file != new.node.key_file
        || steps.install.iter().any(|k| k.id == primary);
    if config_in_charge && running_primary.is_none_or(|k| k.id != primary.to_string()) {
        steps.primary = Some(primary);
    }
    steps.remove = ring
        .iter()
        .filter(|k| k.from == KeyOrigin::Config && !wanted.contains(&k.id))
        .filter_map(|k| k.id.parse().ok())
        .collect();
    if steps.is_empty() {
        KeyPlan::Unchanged
    } else {
        KeyPlan::Steps(steps)
    }
}

/// Copies one reloadable key from `from` into `to`. Every key the loader marks [`Apply::Reload`] has an
/// arm here (a test checks it).
fn apply_key(to: &mut Settings, from: &Settings, key: &str) {
    match key {
        "log.level" => to.log.level = from.log.level.clone(),
        "log.event_log_max_bytes" => to.log.event_log_max_bytes = from.log.event_log_max_bytes,
        "log.event_log_keep_files" => to.log.event_log_keep_files = from.log.event_log_keep_files,
        // The key ring follows in [`plan_keys`]'s steps; a refusal puts these back ([`Plan::with_keys`]).
        "node.key_file" => to.node.key_file = from.node.key_file.clone(),
        "node.accept_key_files" => to.node.accept_key_files = from.node.accept_key_files.clone(),
        "fencing.levels" => to.fencing.levels = from.fencing.levels.clone(),
        "timing.heartbeat_interval_ms" => to.timing.heartbeat_interval_ms = from.timing.heartbeat_interval_ms,
        "timing.failure_timeout_ms" => to.timing.failure_timeout_ms = from.timing.failure_timeout_ms,
        "timing.discovery_interval_ms" => to.timing.discovery_interval_ms = from.timing.discovery_interval_ms,
        "timing.view_change_timeout_ms" => {
            to.timing.view_change_timeout_ms = from.timing.view_change_timeout_ms
        }
        "timing.retransmit_interval_ms" => {
            to.timing.retransmit_interval_ms = from.timing.retransmit_interval_ms
        }
        other => {
            tracing::error!(key = other, "a reloadable key has no reload step; it keeps its running value")
        }
    }
}

/// Where the running configuration of an agent with these settings is written.
pub fn running_file(settings: &Settings) -> PathBuf {
    let socket = settings.socket_path();
    socket.parent().map_or_else(|| PathBuf::from("running-config.toml"), |d| d.join("running-config.toml"))
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningConfig {
    /// The agent's process id.
    pub pid: u32,
    /// The configuration it runs with.
    pub settings: Settings,
}

/// Writes `running` to `path` (atomically, mode 0640).
///
/// # Errors
/// The operating system's or the encoder's error.
pub fn write_running(path: &Path, running: &RunningConfig) -> std::io::Result<()> {
    let text = toml::to_string(running).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("toml.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(&tmp)?;
    f.write_all(
        b"# The configuration this cohort agent runs with, written at start and at each reload;\n\
          # `cohort config check` compares a new configuration against it. Removed when the agent exits.\n",
    )?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the running configuration at `path` when the agent that wrote it still runs.
///
/// # Errors
/// A one-line reason when there is no file, it cannot be read, or its agent is gone.
pub fn read_running(path: &Path) -> Result<RunningConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let running: RunningConfig =
        toml::from_str(&text).map_err(|e| format!("cannot parse {}: {}", path.display(), e.message()))?;
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", running.pid)).unwrap_or_default();
    if comm.trim() != "cohort" {
        return Err(format!("{} was written by pid {}, which no longer runs", path.display(), running.pid));
    }
    Ok(running)
}

/// The lines `cohort config check` prints after the effective configuration: how `new` (whose key
/// files were checked into `configured`) differs from the agent running on this node, when each
/// difference would take effect, and what a reload would do to the agent's key ring (read from the
/// ring file in its data directory).
pub fn compare_with_running(new: &Settings, configured: &ConfiguredKeys) -> String {
    let path = running_file(new);
    let running = match read_running(&path) {
        Ok(r) => r,
        Err(why) => return format!("\n# no running agent to compare with: {why}\n"),
    };
    let changes = changed_keys(&running.settings, new);
    let ring_file = running.settings.node.data_dir.join(crate::key_file::RING_FILE);
    let ring = crate::key_file::read_ring(&ring_file);
    // Without the ring (run as another user than the agent's, say) the key steps are unknown, not refused.
    let keys = match &ring {
        Ok(ring) => plan_keys(&running.settings, new, Ok(configured), ring),
        Err(_) => KeyPlan::Unchanged,
    };
    let plan = plan(&running.settings, new).with_keys(&running.settings, keys);
    let mut out = if changes.is_empty() {
        format!("\n# the running agent (pid {}) runs exactly this configuration\n", running.pid)
    } else {
        format!(
            "\n# the running agent (pid {}) differs in {} key{}; each with when it would take effect:\n",
            running.pid,
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        )
    };
    for c in &changes {
        out.push_str(&format!("#   {}: {} -> {}    {}\n", c.key, c.old, c.new, plan.describe(&c.key)));
    }
    if let Ok(ring) = &ring {
        let keys: Vec<String> = ring
            .iter()
            .map(|k| format!("{} ({}{})", k.id, if k.primary { "primary, " } else { "" }, k.from))
            .collect();
        out.push_str(&format!("# the running key ring ({}): {}\n", ring_file.display(), keys.join(", ")));
    }
    match (&plan.keys, &ring) {
        (_, Err(e)) => {
            out.push_str(&format!("# keys at a reload: unknown: cannot read the running key ring: {e}\n"))
        }
        (KeyPlan::Unchanged, _) => out.push_str("# keys at a reload: no change\n"),
        (KeyPlan::Steps(steps), _) => out.push_str(&format!("# keys at a reload: {}\n", steps.describe())),
        (KeyPlan::Refused(why), _) => out.push_str(&format!("# keys at a reload: refused: {why}\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{FenceAgent, FenceLevel};
    use crate::settings_load::{known_keys, load, LoadOptions};

    fn defaults() -> Settings {
        load(&LoadOptions { system_file: None, ..LoadOptions::default() }).expect("defaults").settings
    }

    fn agent(timeout_ms: u64) -> FenceAgent {
        FenceAgent {
            name: "x".into(),
            command: "/bin/true".into(),
            args: vec![],
            stdin: Default::default(),
            env: Default::default(),
            action: "off".into(),
            plugs: Default::default(),
            timeout_ms,
            retries: 0,
        }
    }

    #[test]
    fn log_level_fence_levels_and_timing_are_applied_and_the_rest_waits_for_a_restart() {
        let running = defaults();
        let mut new = running.clone();
        new.log.level = "debug".into();
        new.fencing.levels = vec![FenceLevel { agents: vec![agent(5000)] }];
        new.timing.failure_timeout_ms = 2000;
        new.limits.window_msgs = 2 * running.limits.window_msgs;
        let p = plan(&running, &new);
        let keys = |v: &[KeyChange]| v.iter().map(|c| c.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&p.applied), ["timing.failure_timeout_ms", "fencing.levels", "log.level"]);
        assert_eq!(keys(&p.need_restart), ["limits.window_msgs"]);
        assert!(p.refused.is_empty());
        assert_eq!(p.next.log.level, "debug");
        assert_eq!(p.next.fencing.levels, new.fencing.levels);
        assert_eq!(p.next.timing.failure_timeout_ms, 2000);
        assert_eq!(
            p.next.limits.window_msgs, running.limits.window_msgs,
            "a restart-only key keeps its running value"
        );
        assert_eq!(
            p.summary(),
            "configuration reloaded: applied timing.failure_timeout_ms, fencing.levels, log.level; \
             changed but needs a restart: limits.window_msgs"
        );
        assert_eq!(p.need_restart[0].old, running.limits.window_msgs.to_string());
        assert_eq!(p.need_restart[0].new, (2 * running.limits.window_msgs).to_string());
        assert_eq!(plan(&running, &running).summary(), "configuration reloaded: nothing changed");
    }

    #[test]
    fn a_timing_step_too_far_is_refused_as_a_whole_and_the_rest_applied() {
        let running = defaults();
        let mut new = running.clone();
        new.log.level = "debug".into();
        // Heartbeats every 600 ms: peers still suspecting after 1000 ms would suspect this node.
        new.timing.heartbeat_interval_ms = 600;
        new.timing.failure_timeout_ms = 3000;
        let p = plan(&running, &new);
        let keys = |v: &[KeyChange]| v.iter().map(|c| c.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&p.applied), ["log.level"]);
        assert_eq!(keys(&p.refused), ["timing.heartbeat_interval_ms", "timing.failure_timeout_ms"]);
        assert_eq!(p.next.timing, running.timing, "a refused timing keeps every running value");
        let why = p.refused_why.clone().expect("a reason");
        assert!(why.starts_with("timing.heartbeat_interval_ms = 600: at most half the running"), "{why}");
        assert!(p.summary().contains("refused timing.heartbeat_interval_ms, timing.failure_timeout_ms (timing.heartbeat_interval_ms = 600"), "{}", p.summary());
        assert!(p
            .describe("timing.failure_timeout_ms")
            .starts_with("refused by a reload: timing.heartbeat_interval_ms"));
        assert_eq!(p.describe("log.level"), Apply::Reload.describe());
        // The same change in two steps is applied: first the failure timeout, then the interval.
        let mut first = running.clone();
        first.timing.failure_timeout_ms = 3000;
        let p1 = plan(&running, &first);
        assert!(p1.refused.is_empty(), "{}", p1.summary());
        let p2 = plan(&p1.next, &new);
        assert!(p2.refused.is_empty(), "{}", p2.summary());
        assert_eq!(p2.next.timing, new.timing);
    }

    #[test]
    fn a_fence_agent_timeout_is_a_reloadable_change() {
        let mut running = defaults();
        running.fencing.levels = vec![FenceLevel { agents: vec![agent(5000)] }];
        let mut new = running.clone();
        new.fencing.levels[0].agents[0].timeout_ms = 9000;
        let p = plan(&running, &new);
        assert_eq!(p.applied.len(), 1);
        assert_eq!(p.next.fencing.levels[0].agents[0].timeout_ms, 9000);
    }

    #[test]
    fn every_reloadable_key_has_a_reload_step() {
        // A configuration that differs from the defaults in every reloadable key: after the plan, the
        // next configuration equals the new one in each of them.
        let running = defaults();
        let mut new = running.clone();
        new.log.level = "warn".into();
        new.log.event_log_max_bytes = 1 << 20;
        new.log.event_log_keep_files = 3;
        new.fencing.levels = vec![FenceLevel { agents: vec![agent(1)] }];
        new.timing.heartbeat_interval_ms = 200;
        new.timing.failure_timeout_ms = 1500;
        new.timing.discovery_interval_ms = 600;
        new.timing.view_change_timeout_ms = 500;
        new.timing.retransmit_interval_ms = 40;
        new.node.key_file = "/etc/cohort/cluster.key.new".into();
        new.node.accept_key_files = vec!["/etc/cohort/cluster.key".into()];
        let reloadable: Vec<&str> =
            known_keys().filter(|k| crate::settings_load::apply_of(k) == Some(Apply::Reload)).collect();
        let p = plan(&running, &new);
        let applied: Vec<&str> = p.applied.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(applied, reloadable, "the test must change every reloadable key");
        assert!(changed_keys(&p.next, &new).is_empty(), "{:?}", changed_keys(&p.next, &new));
    }

    fn key(n: u8) -> ClusterKey {
        ClusterKey::from_bytes([n; 32])
    }

    /// The configured keys: `primary` in `node.key_file`, `accept` in `node.accept_key_files`.
    fn configured(primary: (u8, &str), accept: &[(u8, &str)]) -> ConfiguredKeys {
        ConfiguredKeys {
            primary: (key(primary.0), primary.1.into()),
            accept: accept.iter().map(|(n, f)| (key(*n), PathBuf::from(f))).collect(),
            infos: Vec::new(),
        }
    }

    fn settings(c: &ConfiguredKeys) -> Settings {
        let mut s = defaults();
        s.node.key_file = c.primary.1.clone();
        s.node.accept_key_files = c.accept.iter().map(|(_, f)| f.clone()).collect();
        s
    }

    /// A ring entry: key `n`, from `file`, primary or not, installed by `from`.
    fn entry(n: u8, file: &str, primary: bool, from: KeyOrigin) -> KeyInfo {
        KeyInfo { id: key(n).id().to_string(), primary, source: file.into(), from }
    }

    fn steps(p: KeyPlan) -> KeySteps {
        match p {
            KeyPlan::Steps(s) => s,
            other => panic!("expected steps, got {other:?}"),
        }
    }

    fn installed(s: &KeySteps) -> Vec<(KeyId, String)> {
        s.install.iter().map(|k| (k.id, k.file.display().to_string())).collect()
    }

    #[test]
    fn a_rotation_by_file_adds_then_promotes_then_removes() {
        let (old, new) = (1, 2);
        let c0 = configured((old, "/k/old"), &[]);
        let ring0 = vec![entry(old, "/k/old", true, KeyOrigin::Config)];
        assert!(matches!(plan_keys(&settings(&c0), &settings(&c0), Ok(&c0), &ring0), KeyPlan::Unchanged));

        // 1. The new key as an accept key: installed, not primary.
        let c1 = configured((old, "/k/old"), &[(new, "/k/new")]);
        let s1 = steps(plan_keys(&settings(&c0), &settings(&c1), Ok(&c1), &ring0));
        assert_eq!(installed(&s1), [(key(new).id(), "/k/new".to_string())]);
        assert_eq!((s1.primary, s1.remove.clone()), (None, vec![]));
        assert_eq!(s1.describe(), format!("installed {} from /k/new", key(new).id()));
        let ring1 = vec![
            entry(old, "/k/old", true, KeyOrigin::Config),
            entry(new, "/k/new", false, KeyOrigin::Config),
        ];

        // 2. node.key_file names the new key, the old one is accepted: the new key becomes primary.
        let c2 = configured((new, "/k/new"), &[(old, "/k/old")]);
        let s2 = steps(plan_keys(&settings(&c1), &settings(&c2), Ok(&c2), &ring1));
        assert!(s2.install.is_empty() && s2.remove.is_empty(), "{}", s2.describe());
        assert_eq!(s2.primary, Some(key(new).id()));
        assert_eq!(s2.describe(), format!("primary now {}", key(new).id()));
        let ring2 = vec![
            entry(old, "/k/old", false, KeyOrigin::Config),
            entry(new, "/k/new", true, KeyOrigin::Config),
        ];

        // 3. The old key dropped from the configuration: removed.
        let c3 = configured((new, "/k/new"), &[]);
        let s3 = steps(plan_keys(&settings(&c2), &settings(&c3), Ok(&c3), &ring2));
        assert_eq!((s3.install.len(), s3.primary, s3.remove.clone()), (0, None, vec![key(old).id()]));
        assert_eq!(s3.describe(), format!("removed {}", key(old).id()));
    }

    #[test]
    fn a_key_file_rewritten_in_place_installs_its_new_key_and_removes_the_old_one() {
        // node.key_file keeps its path and gets another key: the new key seals, the old one goes.
        let c0 = configured((1, "/k/cluster.key"), &[]);
        let c1 = configured((2, "/k/cluster.key"), &[]);
        let ring = vec![entry(1, "/k/cluster.key", true, KeyOrigin::Config)];
        let s = steps(plan_keys(&settings(&c0), &settings(&c1), Ok(&c1), &ring));
        assert_eq!(installed(&s), [(key(2).id(), "/k/cluster.key".to_string())]);
        assert_eq!(s.primary, Some(key(2).id()));
        assert_eq!(s.remove, [key(1).id()]);
        // An accept key rewritten in place: installed, the old one removed, the primary untouched.
        let c2 = configured((1, "/k/cluster.key"), &[(3, "/k/next.key")]);
        let c3 = configured((1, "/k/cluster.key"), &[(4, "/k/next.key")]);
        let ring = vec![
            entry(1, "/k/cluster.key", true, KeyOrigin::Config),
            entry(3, "/k/next.key", false, KeyOrigin::Config),
        ];
        let s = steps(plan_keys(&settings(&c2), &settings(&c3), Ok(&c3), &ring));
        assert_eq!(installed(&s), [(key(4).id(), "/k/next.key".to_string())]);
        assert_eq!((s.primary, s.remove), (None, vec![key(3).id()]));
    }

    #[test]
    fn keys_installed_by_command_are_kept_and_a_primary_chosen_by_command_stays() {
        let c = configured((1, "/k/cluster.key"), &[]);
        // `cohort key install` of key 5 and `cohort key use` of it: a reload with the same key files
        // changes nothing.
        let ring = vec![
            entry(1, "/k/cluster.key", false, KeyOrigin::Config),
            entry(5, "/k/by-hand.key", true, KeyOrigin::Command),
        ];
        assert!(matches!(plan_keys(&settings(&c), &settings(&c), Ok(&c), &ring), KeyPlan::Unchanged));
        // node.key_file changes: the configuration takes the primary back, the command's key stays.
        let c2 = configured((2, "/k/cluster.key.new"), &[]);
        let s = steps(plan_keys(&settings(&c), &settings(&c2), Ok(&c2), &ring));
        assert_eq!(installed(&s), [(key(2).id(), "/k/cluster.key.new".to_string())]);
        assert_eq!(s.primary, Some(key(2).id()));
        assert_eq!(s.remove, [key(1).id()], "only the configuration's key is removed, never key 5");
    }

    #[test]
    fn a_bad_key_file_refuses_the_key_change_and_the_rest_is_applied() {
        let c0 = configured((1, "/k/cluster.key"), &[]);
        let running = settings(&c0);
        let mut new = running.clone();
        new.log.level = "debug".into();
        new.node.accept_key_files = vec!["/k/open.key".into()];
        let why = "key file /k/open.key (node.accept_key_files) has mode 0644: its group and others must \
                   have no access; run: chmod 600 /k/open.key";
        let ring = vec![entry(1, "/k/cluster.key", true, KeyOrigin::Config)];
        let keys = plan_keys(&running, &new, Err(why.to_string()), &ring);
        let p = plan(&running, &new).with_keys(&running, keys);
        let names: Vec<&str> = p.applied.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(names, ["log.level"]);
        assert_eq!(p.next.log.level, "debug");
        assert!(p.next.node.accept_key_files.is_empty(), "a refused key change keeps the running files");
        assert_eq!(
            p.summary(),
            format!("configuration reloaded: applied log.level; refused the key change of node.accept_key_files ({why})")
        );
        assert_eq!(p.describe("node.accept_key_files"), format!("refused by a reload: {why}"));
        // With the file fixed, the same reload installs the key and says so.
        let c1 = configured((1, "/k/cluster.key"), &[(2, "/k/open.key")]);
        let p = plan(&running, &new).with_keys(&running, plan_keys(&running, &new, Ok(&c1), &ring));
        assert_eq!(
            p.summary(),
            format!(
                "configuration reloaded: applied node.accept_key_files, log.level; keys: installed {} from /k/open.key",
                key(2).id()
            )
        );
    }

    #[test]
    fn the_running_file_round_trips_and_names_a_dead_writer() {
        let dir = std::env::temp_dir().join(format!("cohort-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("running-config.toml");
        let mut settings = defaults();
        settings.fencing.levels = vec![FenceLevel { agents: vec![agent(7)] }];
        // No process is named `cohort` with pid u32::MAX.
        let rc = RunningConfig { pid: u32::MAX, settings };
        write_running(&path, &rc).expect("write");
        let text = std::fs::read_to_string(&path).expect("read back");
        let parsed: RunningConfig = toml::from_str(&text).expect("parse");
        assert_eq!(parsed, rc);
        let err = read_running(&path).expect_err("the writer is not running");
        assert!(err.contains("no longer runs"), "{err}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
