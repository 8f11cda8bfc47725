//! `cohort-fence-test`: a fence agent for cohort's test bed and demo. **Not for production.**
//!
//! It follows the `fence_*` family's conventions so it is configured like a real agent: options come
//! from the command line (`-o/--action`, `-n/--plug`) and/or from standard input as `key=value`
//! lines (`action`, `plug` or `port`, `pidfile_dir`, `mode`), command-line options winning. It
//! "fences" node PLUG by signalling the agent process whose pid is in `<pidfile_dir>/node<PLUG>.pid`:
//!
//! - `off` / `reboot`: SIGKILL of the process and of every process it started (its fence agents in
//!   flight die with it, as with a power-off), then waits until it is gone (with `mode=stop`: SIGSTOP);
//! - `stop`: SIGSTOP, the demo's "stopped, not dead" node that resumes later as a zombie member;
//! - `on`: SIGCONT (resume a stopped node);
//! - `status`: exit 0 if the process exists, 2 if not (the `fence_*` convention for "off");
//! - `monitor`: exit 0 if the pid-file directory is reachable; `list`: print the nodes with pid files.
//!
//! Failure injection for tests, by files in `pidfile_dir`: `fence-fail` makes every action fail
//! (exit 1), `fence-fail-once` fails once and removes itself (exercises retries), `fence-hang` makes
//! it sleep forever (exercises the FencingActor's timeout).
//!
//! Exit status: 0 on success, 1 on failure, 2 for `status` of a node that is off. One line on
//! standard error says what it did. Signals are sent with the `kill` program, so this uses only std.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "\
cohort-fence-test: a fence agent for cohort's test bed and demo (NOT for production)

It fences node PLUG by signalling the process whose pid is in <pidfile_dir>/node<PLUG>.pid,
following the fence_* agents' conventions (options on the command line and/or as key=value
lines on standard input: action, plug|port, pidfile_dir, mode).

Usage: cohort-fence-test [-o ACTION] [-n PLUG] [-d PIDFILE_DIR] [--mode kill|stop]

Options:
  -o, --action ACTION      off|reboot (SIGKILL), stop (SIGSTOP), on (SIGCONT), status, monitor, list
  -n, --plug, --port PLUG  the node id; the pid file is <pidfile_dir>/node<PLUG>.pid
  -d, --pidfile-dir DIR    directory of the node pid files (or COHORT_FENCE_PIDFILE_DIR)
      --mode kill|stop     what off/reboot sends: SIGKILL (default) or SIGSTOP (a paused zombie)
  -h, --help               this text

Failure injection (files in pidfile_dir): fence-fail (exit 1), fence-fail-once (fail once,
then remove the file), fence-hang (hang until killed).

Exit status: 0 success, 1 failure, 2 `status` of a node that is off.

Example (what a FencingActor level runs):
  printf 'action=off\\nplug=3\\npidfile_dir=/tmp/bed\\n' | cohort-fence-test
  cohort-fence-test -o off -n 3 -d /tmp/bed
";

/// The options, from arguments and standard input.
#[derive(Debug, Default)]
struct Options {
    action: Option<String>,
    plug: Option<String>,
    pidfile_dir: Option<String>,
    mode: Option<String>,
}

impl Options {
    /// Fills the options not set yet from `key=value` lines; unknown keys are ignored, as `fence_*`
    /// agents do for the extra keys cluster managers pass.
    fn fill_from_lines(&mut self, text: &str) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.trim().to_string();
            let slot = match key.trim() {
                "action" | "option" => &mut self.action,
                "plug" | "port" => &mut self.plug,
                "pidfile_dir" => &mut self.pidfile_dir,
                "mode" => &mut self.mode,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
    }
}

/// What to say and how to exit.
struct Done {
    code: u8,
    message: String,
}

fn ok(message: String) -> Done {
    Done { code: 0, message }
}

fn fail(message: impl Into<String>) -> Done {
    Done { code: 1, message: message.into() }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let done = run(&args);
    if !done.message.is_empty() {
        eprintln!("cohort-fence-test: {}", done.message);
    }
    ExitCode::from(done.code)
}

fn run(args: &[String]) -> Done {
    let mut opts = Options::default();
    match parse_args(args, &mut opts) {
        Ok(true) => {
            print!("{USAGE}");
            return Done { code: 0, message: String::new() };
        }
        Ok(false) => {}
        Err(e) => return fail(format!("{e}; see --help")),
    }
    // The fence_* convention: options arrive on standard input (the FencingActor closes it after
    // writing them). Read it when nothing came on the command line or when it is not a terminal.
    let stdin = std::io::stdin();
    if args.is_empty() || !stdin.is_terminal() {
        let mut text = String::new();
        if let Err(e) = stdin.lock().read_to_string(&mut text) {
            return fail(format!("cannot read options from standard input: {e}"));
        }
        opts.fill_from_lines(&text);
    }
    if opts.pidfile_dir.is_none() {
        opts.pidfile_dir = std::env::var("COHORT_FENCE_PIDFILE_DIR").ok();
    }
    fence(&opts)
}

/// Returns `Ok(true)` for `--help`.
fn parse_args(args: &[String], opts: &mut Options) -> Result<bool, String> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(true);
        }
        let mut value =
            || inline.clone().or_else(|| it.next().cloned()).ok_or(format!("{flag} needs a value"));
        match flag {
            "-o" | "--action" => opts.action = Some(value()?),
            "-n" | "--plug" | "--port" => opts.plug = Some(value()?),
            "-d" | "--pidfile-dir" => opts.pidfile_dir = Some(value()?),
            "--mode" => opts.mode = Some(value()?),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(false)
}

fn fence(opts: &Options) -> Done {
    let action = opts.action.as_deref().unwrap_or("off");
    let Some(dir) = opts.pidfile_dir.as_deref().map(Path::new) else {
        return fail(
            "no pidfile_dir: give -d DIR, pidfile_dir=DIR on standard input or COHORT_FENCE_PIDFILE_DIR",
        );
    };
    if dir.join("fence-hang").exists() {
        eprintln!("cohort-fence-test: fence-hang present in {}: hanging until killed", dir.display());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if dir.join("fence-fail").exists() {
        return fail(format!("fence-fail present in {}: failing {action} on purpose", dir.display()));
    }
    let once = dir.join("fence-fail-once");
    if once.exists() {
        let _ = std::fs::remove_file(&once);
        return fail(format!(
            "fence-fail-once present in {}: failing {action} once on purpose",
            dir.display()
        ));
    }
    match action {
        "monitor" => {
            return if dir.is_dir() {
                ok(format!("monitor: {} is reachable", dir.display()))
            } else {
                fail(format!("monitor: {} is not a directory", dir.display()))
            };
        }
        "list" => return list(dir),
        _ => {}
    }
    let Some(plug) = opts.plug.as_deref() else {
        return fail("no plug: give -n PLUG or plug=PLUG on standard input");
    };
    let Ok(node) = plug.parse::<u32>() else { return fail(format!("plug `{plug}` is not a node id")) };
    let pidfile = dir.join(format!("node{node}.pid"));
    let pid = match read_pid(&pidfile) {
        Ok(pid) => pid,
        Err(e) => return fail(e),
    };
    let stop_mode = match opts.mode.as_deref() {
        None | Some("kill") => false,
        Some("stop") => true,
        Some(other) => return fail(format!("mode `{other}` is not kill or stop")),
    };
    match action {
        "off" | "reboot" if !stop_mode => {
            if !alive(pid) {
                return ok(format!("{action} node {node}: pid {pid} is already gone"));
            }
            // A power-off takes everything the node runs with it, its own fence agents in flight
            // included: stop the agent so it starts nothing new, kill what it started, then the agent.
            let _ = signal("STOP", pid);
            let children = descendants(pid);
            for child in &children {
                let _ = signal("KILL", *child);
            }
            if let Err(e) = signal("KILL", pid) {
                return fail(format!("{action} node {node}: {e}"));
            }
            if wait_until(|| !alive(pid)) {
                ok(format!(
                    "{action} node {node}: sent SIGKILL to pid {pid} and its {} child processes; it is gone",
                    children.len()
                ))
            } else {
                fail(format!("{action} node {node}: pid {pid} still runs after SIGKILL"))
            }
        }
        "off" | "reboot" | "stop" => {
            if !alive(pid) {
                return fail(format!("{action} node {node}: pid {pid} is not running"));
            }
            if let Err(e) = signal("STOP", pid) {
                return fail(format!("{action} node {node}: {e}"));
            }
            if wait_until(|| state(pid) == Some('T') || state(pid) == Some('t')) {
                ok(format!("{action} node {node}: sent SIGSTOP to pid {pid}; it is stopped"))
            } else {
                fail(format!("{action} node {node}: pid {pid} did not stop"))
            }
        }
        "on" => match signal("CONT", pid) {
            Ok(()) => ok(format!("on node {node}: sent SIGCONT to pid {pid}")),
            Err(e) => fail(format!("on node {node}: {e}")),
        },
        "status" => {
            if alive(pid) {
                ok(format!("status node {node}: pid {pid} is running"))
            } else {
                Done { code: 2, message: format!("status node {node}: pid {pid} is off") }
            }
        }
        other => {
            fail(format!("unknown action `{other}` (expected off, reboot, stop, on, status, monitor, list)"))
        }
    }
}

fn list(dir: &Path) -> Done {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return fail(format!("list: cannot read {}: {e}", dir.display())),
    };
    let mut nodes: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("node")?.strip_suffix(".pid")?.parse().ok()
        })
        .collect();
    nodes.sort_unstable();
    for n in &nodes {
        println!("{n},node{n}");
    }
    ok(format!("list: {} nodes", nodes.len()))
}

/// Every descendant of process `pid` (children, their children...), from `/proc/*/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, _) in parents.iter().filter(|(_, pp)| *pp == parent) {
            if *p > 1 && *p != std::process::id() && !found.contains(p) {
                found.push(*p);
                frontier.push(*p);
            }
        }
    }
    found
}

/// Reads a pid file, refusing anything that is not a single process id above 1 (a `kill` of 0, 1 or
/// a negative number would hit far more than one node).
fn read_pid(path: &Path) -> Result<u32, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read pid file {}: {e}", path.display()))?;
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 1 && pid != std::process::id() => Ok(pid),
        _ => Err(format!("pid file {} holds `{}`, not a process id", path.display(), text.trim())),
    }
}

fn signal(name: &str, pid: u32) -> Result<(), String> {
    let out = Command::new("kill")
        .args(["-s", name, "--", &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {name} {pid} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The process's state letter from `/proc/PID/stat` (`R`, `S`, `T`, `Z`...), `None` if it does not exist.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True while the process exists and is not a zombie (a zombie is dead; only its parent's `wait` is missing).
fn alive(pid: u32) -> bool {
    if Path::new("/proc/self/stat").exists() {
        !matches!(state(pid), None | Some('Z') | Some('X'))
    } else {
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Polls `cond` for up to five seconds.
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
