//! The service manager's notification protocol (`sd_notify(3)`), over a Unix datagram socket.
//!
//! When systemd starts a `Type=notify` service it passes the path of its notification socket in
//! `$NOTIFY_SOCKET` (a file path, or an abstract address written with a leading `@`), and, with
//! `WatchdogSec=`, the watchdog interval in `$WATCHDOG_USEC` (microseconds) and the process it applies
//! to in `$WATCHDOG_PID`. The service tells the manager about itself by sending newline-separated
//! `KEY=VALUE` assignments as one datagram: `READY=1`, `STATUS=...`, `RELOADING=1`, `STOPPING=1`,
//! `WATCHDOG=1`, `EXTEND_TIMEOUT_USEC=...`.
//!
//! [`ServiceEnv::take_from_process`] reads those variables once, at start, and removes them from the
//! environment so that the programs the agent runs (fence agents) neither inherit nor use the
//! agent's socket. [`Notifier`] sends the datagrams. The whole protocol is these few lines of
//! standard-library code, so no crate is needed (docs/adr/0005-service-manager-integration.md).
//!
//! **Deliberately absent:** no decisions about *when* to say what: that is
//! [`crate::service_manager::ServiceManagerActor`]'s and [`crate::supervisor::run_agent`]'s. A send that
//! fails is reported to the caller, which logs it; the protocol is best effort by design (the manager
//! may have gone away), and nothing the agent does for the cluster depends on it.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// The environment variable with the manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The environment variable with the watchdog interval in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog applies to.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A mistake in the service manager's environment, reported as one line naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor an `@abstract` name.
    #[error("NOTIFY_SOCKET = {0:?}: expected an absolute socket path or an @abstract name")]
    BadSocket(String),
    /// `WATCHDOG_USEC` is not a positive integer.
    #[error("WATCHDOG_USEC = {0:?}: expected a positive integer number of microseconds")]
    BadWatchdogUsec(String),
}

/// What the service manager told this process through its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEnv {
    /// `NOTIFY_SOCKET`, if set and not empty.
    pub notify_socket: Option<String>,
    /// The watchdog interval, if `WATCHDOG_USEC` is set and applies to this process.
    pub watchdog: Option<Duration>,
}

impl ServiceEnv {
    /// Reads the variables from `vars` for the process `my_pid`. The watchdog applies when
    /// `WATCHDOG_PID` is absent or names `my_pid` (a manager that set it for another process, such as a
    /// wrapper script, did not mean this one).
    ///
    /// # Errors
    /// [`EnvError`] when a variable is set but malformed.
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
        my_pid: u32,
    ) -> Result<ServiceEnv, EnvError> {
        let (mut socket, mut usec, mut pid) = (None, None, None);
        for (k, v) in vars {
            match k {
                NOTIFY_SOCKET => socket = Some(v),
                WATCHDOG_USEC => usec = Some(v),
                WATCHDOG_PID => pid = Some(v),
                _ => {}
            }
        }
        let notify_socket = match socket.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) if s.starts_with('/') || (s.starts_with('@') && s.len() > 1) => Some(s.to_string()),
            Some(s) => return Err(EnvError::BadSocket(s.to_string())),
        };
        let for_me = pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(my_pid));
        let watchdog = match usec.filter(|_| for_me) {
            None => None,
            Some(u) => match u.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(Duration::from_micros(n)),
                _ => return Err(EnvError::BadWatchdogUsec(u.to_string())),
            },
        };
        Ok(ServiceEnv { notify_socket, watchdog })
    }

    /// Reads the variables of this process and removes them from its environment, so that child
    /// processes do not inherit them. Call it before any thread is started.
    ///
    /// # Errors
    /// As [`ServiceEnv::from_vars`].
    pub fn take_from_process() -> Result<ServiceEnv, EnvError> {
        let vars: Vec<(String, String)> = [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID]
            .into_iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .collect();
        let env =
            ServiceEnv::from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())), std::process::id());
        for k in [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID] {
            // Edition 2021: safe, and called before the runtime starts any thread.
            std::env::remove_var(k);
        }
        env
    }

    /// The notifier for `notify_socket`, if there is one.
    ///
    /// # Errors
    /// The operating system's error when the local socket cannot be made.
    pub fn notifier(&self) -> io::Result<Option<Notifier>> {
        self.notify_socket.as_deref().map(Notifier::new).transpose()
    }
}

/// Sends notifications to the service manager's socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    shown: String,
}

impl Notifier {
    /// A notifier for `target`: an absolute path, or `@name` for the abstract address `name`.
    ///
    /// # Errors
    /// The operating system's error when the local socket cannot be made or the address is invalid.
    pub fn new(target: &str) -> io::Result<Notifier> {
        let addr = match target.strip_prefix('@') {
            Some(name) => abstract_addr(name.as_bytes())?,
            None => SocketAddr::from_pathname(Path::new(target))?,
        };
        Ok(Notifier { socket: UnixDatagram::unbound()?, addr, shown: target.to_string() })
    }

    /// Where notifications go, as given.
    pub fn target(&self) -> &str {
        &self.shown
    }

    /// Sends one datagram of `KEY=VALUE` lines. A value's newlines are replaced by spaces (a newline
    /// would start another assignment).
    ///
    /// # Errors
    /// The operating system's error when the datagram cannot be sent (the manager is gone, or its
    /// socket's buffer is full: the socket is non-blocking, so a stuck manager never stalls the agent).
    pub fn notify(&self, assignments: &[(&str, &str)]) -> io::Result<()> {
        let mut text = String::new();
        for (k, v) in assignments {
            text.push_str(k);
            text.push('=');
            text.push_str(&v.replace(['\n', '\r'], " "));
            text.push('\n');
        }
        self.socket.set_nonblocking(true)?;
        self.socket.send_to_addr(text.as_bytes(), &self.addr).map(|_| ())
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket addresses exist only on Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_read_strictly() {
        let env = ServiceEnv::from_vars(
            [("NOTIFY_SOCKET", "/run/systemd/notify"), ("WATCHDOG_USEC", "3000000")],
            7,
        )
        .expect("valid");
        assert_eq!(env.notify_socket.as_deref(), Some("/run/systemd/notify"));
        assert_eq!(env.watchdog, Some(Duration::from_secs(3)));
        // The watchdog of another process is not ours.
        let env =
            ServiceEnv::from_vars([("WATCHDOG_USEC", "3000000"), ("WATCHDOG_PID", "8")], 7).expect("valid");
        assert_eq!(env.watchdog, None);
        let env = ServiceEnv::from_vars([("WATCHDOG_USEC", "10"), ("WATCHDOG_PID", "7")], 7).expect("valid");
        assert_eq!(env.watchdog, Some(Duration::from_micros(10)));
        assert_eq!(ServiceEnv::from_vars([("NOTIFY_SOCKET", "")], 7), Ok(ServiceEnv::default()));
        assert_eq!(
            ServiceEnv::from_vars([("NOTIFY_SOCKET", "relative")], 7),
            Err(EnvError::BadSocket("relative".into()))
        );
        assert_eq!(
            ServiceEnv::from_vars([("WATCHDOG_USEC", "0")], 7),
            Err(EnvError::BadWatchdogUsec("0".into()))
        );
        assert_eq!(
            ServiceEnv::from_vars([("WATCHDOG_USEC", "soon")], 7).map_err(|e| e.to_string()),
            Err("WATCHDOG_USEC = \"soon\": expected a positive integer number of microseconds".into())
        );
    }

    fn recv_text(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let n = s.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifications_reach_a_socket_at_a_path() {
        let dir = std::env::temp_dir().join(format!("cohort-sdn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.to_str().expect("utf-8")).expect("notifier");
        n.notify(&[("READY", "1"), ("STATUS", "two\nlines")]).expect("send");
        assert_eq!(recv_text(&manager), "READY=1\nSTATUS=two lines\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cohort-sdn-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let manager = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        let n = Notifier::new(&format!("@{name}")).expect("notifier");
        n.notify(&[("WATCHDOG", "1")]).expect("send");
        assert_eq!(recv_text(&manager), "WATCHDOG=1\n");
    }

    #[test]
    fn a_missing_manager_is_an_error_not_a_panic() {
        let n = Notifier::new("/nonexistent/cohort/notify").expect("notifier");
        assert!(n.notify(&[("READY", "1")]).is_err());
    }
}
