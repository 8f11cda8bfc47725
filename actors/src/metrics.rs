//! Counters and the delivery-latency histogram, shared by the actors and rendered as Prometheus text.
//!
//! Plain atomics: every actor increments what it sees, the admin endpoint reads them. Nothing here
//! allocates per event.

use crate::replay::Replay;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the delivery-latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

/// The agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Views installed.
    pub views_installed: AtomicU64,
    /// Members suspected (removed by failure).
    pub suspicions: AtomicU64,
    /// Stateful merges detected.
    pub stateful_merges: AtomicU64,
    /// Fence requests the core made (its `fence_request` records).
    pub fence_requests: AtomicU64,
    /// Fence results that fenced the member, by any method: agent, operator ack, watchdog, restart (the
    /// core's `fence_result` records with `ok`).
    pub fences_ok: AtomicU64,
    /// Fence results that did not (the core's `fence_result` records without `ok`).
    pub fences_failed: AtomicU64,
    /// Requests the fencing actor started running fence agents for (a duplicate is not started).
    pub fence_agent_requests: AtomicU64,
    /// Requests whose fence agents succeeded at some level.
    pub fence_agent_ok: AtomicU64,
    /// Requests whose every level failed.
    pub fence_agent_failed: AtomicU64,
    /// Application messages multicast from this node.
    pub msgs_sent: AtomicU64,
    /// Application messages delivered at this node.
    pub msgs_delivered: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Datagrams received and authenticated.
    pub datagrams_in: AtomicU64,
    /// Bytes sent (ciphertext).
    pub bytes_out: AtomicU64,
    /// Bytes received (ciphertext).
    pub bytes_in: AtomicU64,
    /// Datagrams dropped because they failed to authenticate or decode.
    pub bad_datagrams: AtomicU64,
    /// Of `bad_datagrams`: datagrams sealed under a key that is not installed here (a node that has
    /// not installed or has already removed a key another node seals with, or a foreign cluster).
    pub unknown_key_datagrams: AtomicU64,
    /// Datagrams dropped as replays, by [`Replay`] reason (in the order of [`Replay::ALL`]).
    pub replayed_datagrams: [AtomicU64; 3],
    /// Datagrams dropped by the link filter.
    pub filtered_datagrams: AtomicU64,
    /// Multicasts that had to wait because the send queue was full.
    pub flow_control_waits: AtomicU64,
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Clients disconnected for protocol errors or for being too slow.
    pub clients_dropped: AtomicU64,
    /// Connections refused at accept: a uid or gid the socket does not allow (`SO_PEERCRED`), or too
    /// many connections.
    pub clients_refused: AtomicU64,
    /// Requests refused for their class: an operator command on the client socket, or the link filter
    /// while `testing.link_filter` is off.
    pub requests_refused: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl Metrics {
    /// Counts one datagram dropped as a replay; returns the new count for that reason (for
    /// rate-limited logging).
    pub fn count_replay(&self, reason: Replay) -> u64 {
        self.replayed_datagrams[reason as usize].fetch_add(1, Relaxed) + 1
    }

    /// Datagrams dropped as replays for `reason` so far.
    pub fn replayed(&self, reason: Replay) -> u64 {
        self.replayed_datagrams[reason as usize].load(Relaxed)
    }

    /// Adds one delivery-latency observation.
    pub fn observe_latency_us(&self, us: u64) {
        let i = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self, node: u32) -> String {
        let mut s = String::new();
        let counters: [(&str, &str, &AtomicU64); 23] = [
            ("cohort_views_installed_total", "Views installed.", &self.views_installed),
            ("cohort_suspicions_total", "Members removed by failure or partition.", &self.suspicions),
            ("cohort_stateful_merges_total", "Stateful merges detected.", &self.stateful_merges),
            ("cohort_fence_requests_total", "Fence requests.", &self.fence_requests),
            ("cohort_fences_ok_total", "Members fenced (agent, ack, watchdog or restart).", &self.fences_ok),
            (
                "cohort_fences_failed_total",
                "Fence results that did not fence the member.",
                &self.fences_failed,
            ),
            (
                "cohort_fence_agent_requests_total",
                "Fence requests run through the fence agents.",
                &self.fence_agent_requests,
            ),
            ("cohort_fence_agent_ok_total", "Fence agent runs that succeeded.", &self.fence_agent_ok),
            (
                "cohort_fence_agent_failed_total",
                "Fence agent runs where every level failed.",
                &self.fence_agent_failed,
            ),
            ("cohort_messages_sent_total", "Application messages multicast from this node.", &self.msgs_sent),
            ("cohort_messages_delivered_total", "Application messages delivered here.", &self.msgs_delivered),
            ("cohort_datagrams_out_total", "Datagrams sent.", &self.datagrams_out),
            ("cohort_datagrams_in_total", "Datagrams received and authenticated.", &self.datagrams_in),
            ("cohort_bytes_out_total", "Bytes sent.", &self.bytes_out),
            ("cohort_bytes_in_total", "Bytes received.", &self.bytes_in),
            (
                "cohort_bad_datagrams_total",
                "Datagrams dropped: failed to authenticate or decode.",
                &self.bad_datagrams,
            ),
            (
                "cohort_unknown_key_datagrams_total",
                "Of the bad datagrams: sealed under a key not installed here.",
                &self.unknown_key_datagrams,
            ),
            (
                "cohort_filtered_datagrams_total",
                "Datagrams dropped by the link filter.",
                &self.filtered_datagrams,
            ),
            (
                "cohort_flow_control_waits_total",
                "Multicasts that waited for send-queue room.",
                &self.flow_control_waits,
            ),
            ("cohort_clients", "Connected clients.", &self.clients),
            (
                "cohort_clients_dropped_total",
                "Clients disconnected for errors or slowness.",
                &self.clients_dropped,
            ),
            (
                "cohort_clients_refused_total",
                "Connections refused: peer uid/gid not allowed or too many connections.",
                &self.clients_refused,
            ),
            (
                "cohort_requests_refused_total",
                "Requests refused on the socket they came in on (operator commands on the client socket).",
                &self.requests_refused,
            ),
        ];
        for (name, help, v) in counters {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {}",
                v.load(Relaxed)
            );
        }
        let name = "cohort_replayed_datagrams_total";
        let _ = writeln!(
            s,
            "# HELP {name} Authenticated-looking datagrams dropped as replays before the core, by reason.\n# TYPE {name} counter"
        );
        for r in Replay::ALL {
            let _ = writeln!(s, "{name}{{node=\"{node}\",reason=\"{}\"}} {}", r.label(), self.replayed(r));
        }
        let name = "cohort_delivery_latency_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Multicast to local delivery of this node's own messages.\n# TYPE {name} histogram"
        );
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS_US.iter().enumerate() {
            cum += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(s, "{name}_bucket{{node=\"{node}\",le=\"{}\"}} {cum}", *b as f64 / 1e6);
        }
        cum += self.latency_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {cum}");
        let _ =
            writeln!(s, "{name}_sum{{node=\"{node}\"}} {}", self.latency_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(s, "{name}_count{{node=\"{node}\"}} {}", self.latency_count.load(Relaxed));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let m = Metrics::default();
        m.observe_latency_us(50);
        m.observe_latency_us(700);
        m.observe_latency_us(10_000_000);
        let text = m.render(3);
        assert!(text.contains("cohort_delivery_latency_seconds_bucket{node=\"3\",le=\"0.0001\"} 1"));
        assert!(text.contains("cohort_delivery_latency_seconds_bucket{node=\"3\",le=\"0.001\"} 2"));
        assert!(text.contains("cohort_delivery_latency_seconds_bucket{node=\"3\",le=\"+Inf\"} 3"));
        assert!(text.contains("cohort_delivery_latency_seconds_count{node=\"3\"} 3"));
    }

    #[test]
    fn replays_are_counted_per_reason() {
        let m = Metrics::default();
        assert_eq!(m.count_replay(Replay::Duplicate), 1);
        assert_eq!(m.count_replay(Replay::Duplicate), 2);
        assert_eq!(m.count_replay(Replay::StaleEpoch), 1);
        let text = m.render(2);
        assert!(
            text.contains("cohort_replayed_datagrams_total{node=\"2\",reason=\"duplicate\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cohort_replayed_datagrams_total{node=\"2\",reason=\"stale_epoch\"} 1"),
            "{text}"
        );
        assert!(text.contains("cohort_replayed_datagrams_total{node=\"2\",reason=\"too_old\"} 0"), "{text}");
    }
}
