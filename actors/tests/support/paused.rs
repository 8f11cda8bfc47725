//! A paused tokio clock for actor tests, shared by the test files that include it with `#[path]`.
#![allow(dead_code)]

use std::time::Duration;

/// A paused tokio clock that moves only when the test advances it: a blocking task held open for the
/// guard's lifetime stops tokio from jumping the clock to the next timer whenever the runtime is idle
/// (which, with real sockets, processes or files, would fire timers while a reply is still on its way;
/// tokio's test-util does not auto-advance while a blocking task runs).
pub struct ManualClock {
    _hold: std::sync::mpsc::Sender<()>,
}

impl ManualClock {
    /// Pauses the clock and holds it until the guard is dropped.
    pub fn start() -> ManualClock {
        tokio::time::pause();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        ManualClock { _hold: tx }
    }
}

/// Advances the paused clock in small steps until `cond` holds or `within` of virtual time passed.
pub async fn advance_until(within: Duration, cond: impl Fn() -> bool) -> bool {
    let step = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    while waited < within {
        if cond() {
            return true;
        }
        tokio::time::advance(step).await;
        tokio::task::yield_now().await;
        waited += step;
    }
    cond()
}
