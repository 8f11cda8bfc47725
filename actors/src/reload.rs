//! Configuration reload: what a running agent applies at SIGHUP (`systemctl reload cohort`), and the
//! record of the configuration it runs with, which `cohort config check` compares against.
//!
//! A reload loads the configuration again exactly as at start (the same files, environment and flags)
//! and validates all of it. A configuration that does not load changes nothing. Otherwise the keys the
//! loader's table marks [`Apply::Reload`] are applied ([`plan`]: `log.level`, `fencing.levels`), and every
//! other changed key is named as needing a restart and keeps its running value.
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
    /// The configuration the agent runs with once the plan is applied.
    pub next: Settings,
}

impl Plan {
    /// One line for the log and the service manager's status.
    pub fn summary(&self) -> String {
        let names = |v: &[KeyChange]| v.iter().map(|c| c.key.as_str()).collect::<Vec<_>>().join(", ");
        match (self.applied.is_empty(), self.need_restart.is_empty()) {
            (true, true) => "configuration reloaded: nothing changed".to_string(),
            (false, true) => format!("configuration reloaded: applied {}", names(&self.applied)),
            (true, false) => format!(
                "configuration reloaded: nothing applied; changed but needs a restart: {}",
                names(&self.need_restart)
            ),
            (false, false) => format!(
                "configuration reloaded: applied {}; changed but needs a restart: {}",
                names(&self.applied),
                names(&self.need_restart)
            ),
        }
    }
}

/// What reloading `new` into an agent running `running` does.
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
    Plan { applied, need_restart, next }
}

/// Copies one reloadable key from `from` into `to`. Every key the loader marks [`Apply::Reload`] has an
/// arm here (a test checks it).
fn apply_key(to: &mut Settings, from: &Settings, key: &str) {
    match key {
        "log.level" => to.log.level = from.log.level.clone(),
        "fencing.levels" => to.fencing.levels = from.fencing.levels.clone(),
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
        out.push_str(&format!("#   {}: {} -> {}    {}\n", c.key, c.old, c.new, c.apply.describe()));
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
    fn log_level_and_fence_levels_are_applied_and_the_rest_waits_for_a_restart() {
        let running = defaults();
        let mut new = running.clone();
        new.log.level = "debug".into();
        new.fencing.levels = vec![FenceLevel { agents: vec![agent(5000)] }];
        new.timing.failure_timeout_ms = 2000;
        let p = plan(&running, &new);
        let keys = |v: &[KeyChange]| v.iter().map(|c| c.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&p.applied), ["fencing.levels", "log.level"]);
        assert_eq!(keys(&p.need_restart), ["timing.failure_timeout_ms"]);
        assert_eq!(p.next.log.level, "debug");
        assert_eq!(p.next.fencing.levels, new.fencing.levels);
        assert_eq!(p.next.timing.failure_timeout_ms, 1000, "a restart-only key keeps its running value");
        assert_eq!(
            p.summary(),
            "configuration reloaded: applied fencing.levels, log.level; changed but needs a restart: \
             timing.failure_timeout_ms"
        );
        assert_eq!(p.need_restart[0].old, "1000");
        assert_eq!(p.need_restart[0].new, "2000");
        assert_eq!(plan(&running, &running).summary(), "configuration reloaded: nothing changed");
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
