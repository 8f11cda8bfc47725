//! Configuration reload: what a running agent applies at SIGHUP (`systemctl reload cohort`), and the
//! record of the configuration it runs with, which `cohort config check` compares against.
//!
//! A reload loads the configuration again exactly as at start (the same files, environment and flags)
//! and validates all of it. A configuration that does not load changes nothing. Otherwise the keys the
//! loader's table marks [`Apply::Reload`] are applied ([`plan`]: `log.level`, `fencing.levels` and the
//! `timing.*` keys, the latter together and only one step from the running timing, else refused as a
//! whole with the reason), and every other changed key is named as needing a restart and keeps its
//! running value.
//!
//! The running configuration is written to `running-config.toml` beside the client socket
//! ([`running_file`]) at start and after every reload, with the agent's PID, and removed on exit. It is
//! mode 0640: fence levels may name devices and users.
//!
//! **Deliberately absent:** no IO but that file; applying a plan (the log filter, the fencing actor) is
//! the caller's ([`crate::supervisor::run_agent`]).

use crate::settings::Settings;
use crate::settings_load::{changed_keys, Apply, KeyChange};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What a reload does.
#[derive(Clone, Debug, PartialEq)]
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
        if !self.need_restart.is_empty() {
            parts.push(format!("changed but needs a restart: {}", names(&self.need_restart)));
        }
        match (parts.is_empty(), self.applied.is_empty()) {
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

    /// When the change of `key` takes effect, as `cohort config check` says it.
    pub fn describe(&self, key: &str) -> String {
        if self.refused.iter().any(|c| c.key == key) {
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
    let mut plan = Plan { applied, need_restart, refused: Vec::new(), refused_why: None, next };
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

/// Copies one reloadable key from `from` into `to`. Every key the loader marks [`Apply::Reload`] has an
/// arm here (a test checks it).
fn apply_key(to: &mut Settings, from: &Settings, key: &str) {
    match key {
        "log.level" => to.log.level = from.log.level.clone(),
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

/// The lines `cohort config check` prints after the effective configuration: how `new` differs from the
/// agent running on this node, and when each difference would take effect.
pub fn compare_with_running(new: &Settings) -> String {
    let path = running_file(new);
    let running = match read_running(&path) {
        Ok(r) => r,
        Err(why) => return format!("\n# no running agent to compare with: {why}\n"),
    };
    let changes = changed_keys(&running.settings, new);
    let plan = plan(&running.settings, new);
    if changes.is_empty() {
        return format!("\n# the running agent (pid {}) runs exactly this configuration\n", running.pid);
    }
    let mut out = format!(
        "\n# the running agent (pid {}) differs in {} key{}; each with when it would take effect:\n",
        running.pid,
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    for c in &changes {
        out.push_str(&format!("#   {}: {} -> {}    {}\n", c.key, c.old, c.new, plan.describe(&c.key)));
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
        new.fencing.levels = vec![FenceLevel { agents: vec![agent(1)] }];
        new.timing.heartbeat_interval_ms = 200;
        new.timing.failure_timeout_ms = 1500;
        new.timing.discovery_interval_ms = 600;
        new.timing.view_change_timeout_ms = 500;
        new.timing.retransmit_interval_ms = 40;
        let reloadable: Vec<&str> =
            known_keys().filter(|k| crate::settings_load::apply_of(k) == Some(Apply::Reload)).collect();
        let p = plan(&running, &new);
        let applied: Vec<&str> = p.applied.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(applied, reloadable, "the test must change every reloadable key");
        assert!(changed_keys(&p.next, &new).is_empty(), "{:?}", changed_keys(&p.next, &new));
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
