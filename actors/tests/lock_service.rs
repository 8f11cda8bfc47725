//! The lock service's connection to its agent, against a mocked agent socket on a paused clock.

#[path = "support/paused.rs"]
mod paused;

use cohort_actors::lock::service::{self, ServiceConfig, ServiceState};
use std::os::unix::net::UnixListener;
use std::time::Duration;

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

/// While the agent is down, an application polls the service more often than its reconnection backoff
/// (the demo polls every few milliseconds while it waits for the services to become active). The
/// reconnection must still happen on schedule once the agent's socket is back: a poll must not restart
/// the backoff wait (it did, and the service never reconnected).
#[tokio::test(flavor = "current_thread")]
async fn frequent_commands_do_not_postpone_reconnection() {
    let _clock = paused::ManualClock::start();
    let dir = Scratch::new("lock-reconnect");
    let socket = dir.0.join("cohort.sock");
    let (handle, task) = service::spawn(ServiceConfig::new(&socket));

    let step = Duration::from_millis(10);
    let agent_back_at = Duration::from_millis(300);
    // The backoff is at most 500 ms; allow two of them after the socket appears.
    let bound = agent_back_at + Duration::from_millis(1000);
    let mut elapsed = Duration::ZERO;
    let mut listener: Option<UnixListener> = None;
    let mut accepted_at = None;
    while elapsed <= bound {
        // (Checked before the poll: once connected, the service waits for the mock agent's answer to its
        // hello, which never comes, before it reads the next command.)
        if let Some(l) = &listener {
            if l.accept().is_ok() {
                accepted_at = Some(elapsed);
                break;
            }
        }
        let snap = handle.snapshot().await.expect("the service answers while disconnected");
        assert_eq!(snap.state, ServiceState::Connecting, "not connected yet, at {elapsed:?}");
        if elapsed >= agent_back_at && listener.is_none() {
            let l = UnixListener::bind(&socket).expect("bind the mock agent's socket");
            l.set_nonblocking(true).expect("nonblocking");
            listener = Some(l);
        }
        tokio::time::advance(step).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        elapsed += step;
    }
    let at = accepted_at.unwrap_or_else(|| {
        panic!("the service did not connect within {bound:?} while polled every {step:?} (socket back at {agent_back_at:?})")
    });
    assert!(at >= agent_back_at, "connected at {at:?}, before the socket existed");
    task.abort();
}
