//! AdminActor over real loopback TCP: a probe answers `GetStatus` with a canned status; the endpoint
//! is bound to port 0 and found with `GetAdminAddr`. The last test runs two real nodes in this process
//! (`start_node`) and reads their live `/status` and `/metrics`.

#[path = "support/inprocess.rs"]
mod inprocess;

use actix::prelude::*;
use cohort::node::Status;
use cohort::registry::{NodeRecord, Registry};
use cohort::{BlockReason, Epoch, Member, NodeId, View, ViewId};
use cohort_actors::admin::{AdminActor, GetAdminAddr, MAX_HEAD_BYTES};
use cohort_actors::messages::GetStatus;
use cohort_actors::metrics::Metrics;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(10);

fn m(node: u32, epoch: u64) -> Member {
    Member(NodeId(node), Epoch(epoch))
}

fn canned_status() -> Status {
    Status {
        member: m(1, 4),
        view: Some(View {
            id: ViewId { seq: 12, coord: NodeId(1) },
            members: vec![m(1, 4), m(2, 3)],
            primary: true,
        }),
        primary: true,
        blocked: vec![BlockReason::Fencing],
        removed_self: false,
        self_fenced: false,
        groups: BTreeMap::from([("orders".to_string(), vec![m(1, 4)])]),
        pending_fences: vec![m(3, 2)],
        stateful_merges: vec![m(4, 1)],
        outbox: 0,
        held_msgs: 0,
        changing: false,
        peers: vec![(m(2, 3), 40), (m(3, 2), 9_000)],
        registry: Registry {
            nodes: BTreeMap::from([(
                NodeId(3),
                NodeRecord { highest_epoch: Epoch(2), ..NodeRecord::default() },
            )]),
            last_primary: Some(ViewId { seq: 12, coord: NodeId(1) }),
            last_primary_view: None,
            last_primary_assumed: false,
        },
        stalled: false,
        told_to_move_past: vec![m(5, 1)],
        known_left: vec![m(2, 2)],
        origin: None,
        epoch_inquiries: vec![],
        catching_up: false,
        timing: cohort::Config::new("t", &[1]).timing(),
    }
}

/// Answers `GetStatus` with a fixed status.
struct StatusProbe(Status);

impl Actor for StatusProbe {
    type Context = Context<Self>;
}

impl Handler<GetStatus> for StatusProbe {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.0.clone())
    }
}

async fn start(metrics: Arc<Metrics>) -> (Addr<AdminActor>, SocketAddr) {
    let probe = StatusProbe(canned_status()).start();
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let admin = AdminActor::new(listen, NodeId(1), probe.recipient(), metrics).start();
    let addr = admin.send(GetAdminAddr).await.expect("admin alive").expect("bound");
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    (admin, addr)
}

/// Sends raw bytes, reads until the server closes, returns (status code, head, body).
async fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write request");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.expect("read response");
        resp
    };
    let resp = tokio::time::timeout(DEADLINE, exchange).await.expect("response within the deadline");
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let body = resp[split..].to_vec();
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(len, body.len(), "Content-Length matches the body");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    (code, head, body)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    http(addr, format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await
}

#[actix_rt::test]
async fn status_is_json_with_the_view_and_the_operator_fields() {
    let (_admin, addr) = start(Arc::new(Metrics::default())).await;
    let (code, head, body) = get(addr, "/status").await;
    assert_eq!(code, 200);
    assert!(head.contains("Content-Type: application/json\r\n"), "{head}");
    let v: Value = serde_json::from_slice(&body).expect("JSON body");
    // The core's Status as it serializes.
    assert_eq!(v["view"]["id"]["seq"], 12);
    assert_eq!(v["view"]["members"], serde_json::json!([[1, 4], [2, 3]]));
    assert_eq!(v["primary"], true);
    assert_eq!(v["registry"]["nodes"]["3"]["highest_epoch"], 2);
    // The operator's fields.
    assert_eq!(v["node"], 1);
    assert_eq!(v["epoch"], 4);
    assert_eq!(v["quorate"], true);
    assert_eq!(v["quorum"], serde_json::json!({"quorate": true, "view_members": 2}));
    assert_eq!(v["members"], serde_json::json!([{"node": 1, "epoch": 4}, {"node": 2, "epoch": 3}]));
    assert_eq!(v["blocked_reason"], serde_json::json!(["fencing"]));
    assert_eq!(v["fencing"]["pending"], serde_json::json!([{"node": 3, "epoch": 2}]));
    assert_eq!(v["fencing"]["blocked"], true);
    assert_eq!(v["fencing"]["self_fenced"], false);
    assert_eq!(v["stateful_merge"]["detected"], serde_json::json!([{"node": 4, "epoch": 1}]));
    assert_eq!(v["stateful_merge"]["waiting_for_operator"], false);
    assert_eq!(v["stateful_merge"]["removed_self"], false);
    assert_eq!(
        v["liveness"],
        serde_json::json!([
            {"node": 2, "epoch": 3, "last_heard_ms": 40, "in_view": true},
            {"node": 3, "epoch": 2, "last_heard_ms": 9000, "in_view": false},
        ])
    );
}

#[actix_rt::test]
async fn metrics_are_prometheus_text_with_every_counter_of_the_issue_and_the_latency_histogram() {
    let metrics = Arc::new(Metrics::default());
    // A distinct value per counter, so a name wired to the wrong counter shows.
    let counters = [
        ("cohort_views_installed_total", &metrics.views_installed),
        ("cohort_suspicions_total", &metrics.suspicions),
        ("cohort_stateful_merges_total", &metrics.stateful_merges),
        ("cohort_fence_requests_total", &metrics.fence_requests),
        ("cohort_fences_ok_total", &metrics.fences_ok),
        ("cohort_fences_failed_total", &metrics.fences_failed),
        ("cohort_fence_agent_requests_total", &metrics.fence_agent_requests),
        ("cohort_fence_agent_ok_total", &metrics.fence_agent_ok),
        ("cohort_fence_agent_failed_total", &metrics.fence_agent_failed),
        ("cohort_messages_sent_total", &metrics.msgs_sent),
        ("cohort_messages_delivered_total", &metrics.msgs_delivered),
        ("cohort_datagrams_out_total", &metrics.datagrams_out),
        ("cohort_datagrams_in_total", &metrics.datagrams_in),
        ("cohort_bytes_out_total", &metrics.bytes_out),
        ("cohort_bytes_in_total", &metrics.bytes_in),
        ("cohort_bad_datagrams_total", &metrics.bad_datagrams),
        ("cohort_filtered_datagrams_total", &metrics.filtered_datagrams),
        ("cohort_flow_control_waits_total", &metrics.flow_control_waits),
        ("cohort_clients_dropped_total", &metrics.clients_dropped),
        ("cohort_clients_refused_total", &metrics.clients_refused),
        ("cohort_requests_refused_total", &metrics.requests_refused),
    ];
    for (i, (_, c)) in counters.iter().enumerate() {
        c.store(100 + i as u64, Relaxed);
    }
    metrics.clients.store(3, Relaxed);
    metrics.observe_latency_us(80); // <= 100 us
    metrics.observe_latency_us(3_000); // <= 5 ms
    metrics.observe_latency_us(3_000);
    let (_admin, addr) = start(metrics.clone()).await;
    let (code, head, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(head.contains("Content-Type: text/plain; version=0.0.4\r\n"), "{head}");
    let text = String::from_utf8(body).expect("utf-8");
    for (i, (name, _)) in counters.iter().enumerate() {
        assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}: {text}");
        assert!(text.contains(&format!("{name}{{node=\"1\"}} {}\n", 100 + i)), "{name}: {text}");
    }
    assert!(text.contains("# TYPE cohort_clients gauge\ncohort_clients{node=\"1\"} 3\n"), "{text}");
    let h = "cohort_delivery_latency_seconds";
    assert!(text.contains(&format!("# TYPE {h} histogram\n")), "{text}");
    assert!(text.contains(&format!("{h}_bucket{{node=\"1\",le=\"0.0001\"}} 1\n")), "{text}");
    assert!(text.contains(&format!("{h}_bucket{{node=\"1\",le=\"0.0025\"}} 1\n")), "{text}");
    assert!(text.contains(&format!("{h}_bucket{{node=\"1\",le=\"0.005\"}} 3\n")), "{text}");
    assert!(text.contains(&format!("{h}_bucket{{node=\"1\",le=\"+Inf\"}} 3\n")), "{text}");
    assert!(text.contains(&format!("{h}_sum{{node=\"1\"}} 0.00608\n")), "{text}");
    assert!(text.contains(&format!("{h}_count{{node=\"1\"}} 3\n")), "{text}");
    // Every sample line is `name{labels} value` with a number.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
}

#[actix_rt::test]
async fn unknown_path_is_404_and_other_methods_405() {
    let (_admin, addr) = start(Arc::new(Metrics::default())).await;
    assert_eq!(get(addr, "/nope").await.0, 404);
    let (code, head, _) = http(addr, b"POST /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").await;
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET\r\n"), "{head}");
    assert_eq!(http(addr, b"DELETE /nope HTTP/1.0\r\n\r\n").await.0, 405);
    assert_eq!(get(addr, "/status?pretty=1").await.0, 200);
}

#[actix_rt::test]
async fn garbage_is_400_and_the_server_keeps_serving() {
    let (_admin, addr) = start(Arc::new(Metrics::default())).await;
    let garbage: [&[u8]; 5] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\xfe\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /status HTTP/9.9\r\n\r\n",
        b"\r\n\r\n",
        b"no newline at all",
    ];
    for g in garbage {
        // The last one has no head terminator: the client half-closes, the server answers what it has.
        let (code, _, _) = if g.ends_with(b"\n") {
            http(addr, g).await
        } else {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(g).await.expect("write");
            s.shutdown().await.expect("half-close");
            let mut resp = Vec::new();
            tokio::time::timeout(DEADLINE, s.read_to_end(&mut resp)).await.expect("in time").expect("read");
            let head = String::from_utf8_lossy(&resp).into_owned();
            (head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), head, vec![])
        };
        assert_eq!(code, 400, "for {g:?}");
        assert_eq!(get(addr, "/status").await.0, 200, "still serving after {g:?}");
    }
}

#[actix_rt::test]
async fn oversized_head_is_400_and_the_server_keeps_serving() {
    let (_admin, addr) = start(Arc::new(Metrics::default())).await;
    let mut big = b"GET /status HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES * 2));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http(addr, &big).await.0, 400);
    assert_eq!(get(addr, "/metrics").await.0, 200);
}

#[actix_rt::test]
async fn a_silent_connection_does_not_block_others() {
    let (_admin, addr) = start(Arc::new(Metrics::default())).await;
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /sta").await.expect("write");
    assert_eq!(get(addr, "/status").await.0, 200);
}

#[actix_rt::test]
async fn status_is_503_when_the_membership_is_gone() {
    let probe = StatusProbe(canned_status()).start();
    let recipient = probe.clone().recipient();
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let admin = AdminActor::new(listen, NodeId(1), recipient, Arc::new(Metrics::default())).start();
    let addr = admin.send(GetAdminAddr).await.expect("alive").expect("bound");
    // Stop the probe and wait until its mailbox is closed.
    let stopper = probe;
    stopper.do_send(StopProbe);
    let deadline = Instant::now() + DEADLINE;
    while stopper.connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!stopper.connected());
    assert_eq!(get(addr, "/status").await.0, 503);
    assert_eq!(get(addr, "/metrics").await.0, 200);
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopProbe;

impl Handler<StopProbe> for StatusProbe {
    type Result = ();
    fn handle(&mut self, _msg: StopProbe, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[actix_rt::test]
async fn bind_failure_stops_the_actor() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr");
    let probe = StatusProbe(canned_status()).start();
    let admin = AdminActor::new(listen, NodeId(1), probe.recipient(), Arc::new(Metrics::default())).start();
    let deadline = Instant::now() + DEADLINE;
    while admin.connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!admin.connected(), "the admin actor stopped after failing to bind");
}

/// GETs `path` and parses the body as Prometheus samples `name{node="N"}` → value (histograms left out).
async fn counters(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (code, _, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("le=\""))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.split('{').next()?.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[actix_rt::test]
async fn a_running_node_serves_its_live_status_and_counts_what_happens_on_metrics() {
    use cohort_actors::messages::{JoinGroup, Multicast, SetLinkFilter};
    use inprocess::{wait_primary_of_all, wait_status, Nodes};
    let nodes = Nodes::new("admin", 2, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let [h1, h2] = nodes.start_all([1, 2]).await;
    wait_primary_of_all(&[&h1, &h2]).await;
    let admin = h1.admin.as_ref().expect("admin endpoint configured");
    let addr = admin.send(GetAdminAddr).await.expect("admin alive").expect("bound");
    assert!(addr.ip().is_loopback());

    // Traffic the counters must see: a datagram from a stranger, and a message multicast and delivered.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    stranger.send_to(b"not a cohort datagram", ("127.0.0.1", nodes.ports()[0])).expect("send");
    h1.membership.send(JoinGroup { group: "g".into() }).await.expect("join");
    let end = Instant::now() + DEADLINE;
    loop {
        let r = h1
            .membership
            .send(Multicast { group: "g".into(), payload: b"m".to_vec(), delivery: cohort::Delivery::Agreed })
            .await
            .expect("mailbox");
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < end, "multicast refused: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = counters(addr).await;
    while (c["cohort_messages_delivered_total"] < 1.0 || c["cohort_bad_datagrams_total"] < 1.0)
        && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        c = counters(addr).await;
    }
    for name in [
        "cohort_views_installed_total",
        "cohort_messages_sent_total",
        "cohort_messages_delivered_total",
        "cohort_datagrams_out_total",
        "cohort_datagrams_in_total",
        "cohort_bytes_out_total",
        "cohort_bytes_in_total",
        "cohort_bad_datagrams_total",
        "cohort_delivery_latency_seconds_count",
    ] {
        assert!(c[name] >= 1.0, "{name} = {} after traffic: {c:?}", c[name]);
    }
    assert!(c["cohort_bytes_in_total"] > c["cohort_datagrams_in_total"], "bytes, not datagrams: {c:?}");
    assert_eq!(c["cohort_suspicions_total"], 0.0, "{c:?}");

    // The live status: the view with both members and their epochs, quorate, both peers live.
    let (code, _, body) = get(addr, "/status").await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    let members = serde_json::json!([
        {"node": 1, "epoch": h1.member.epoch().0},
        {"node": 2, "epoch": h2.member.epoch().0},
    ]);
    assert_eq!(v["members"], members);
    assert_eq!(v["quorum"], serde_json::json!({"quorate": true, "view_members": 2}));
    assert_eq!(v["blocked_reason"], serde_json::json!([]));
    let peer = &v["liveness"][0];
    assert_eq!(
        (peer["node"].clone(), peer["in_view"].clone()),
        (serde_json::json!(2), serde_json::json!(true))
    );

    // `cohort status --json` (the client API) serves the same document.
    let socket = nodes.settings(1, "").socket_path();
    let mut client = cohort_actors::client::Client::connect(&socket, "admin-test").await.expect("connect");
    let via_client = client.status().await.expect("status over the client socket");
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    assert_eq!(keys(&via_client), keys(&v), "the same fields");
    for field in
        ["members", "quorum", "quorate", "blocked_reason", "fencing", "stateful_merge", "view", "epoch"]
    {
        assert_eq!(via_client[field], v[field], "{field}");
    }
    assert_eq!(via_client["liveness"][0]["node"], 2);

    // Cut node 2 off at node 1: node 1 suspects it, installs a view without it and, one of two, has no
    // quorum. Status and metrics say so.
    let blocked = std::collections::BTreeSet::from([NodeId(2)]);
    h1.transport.send(SetLinkFilter { blocked }).await.expect("transport");
    wait_status(&h1, "a view without node 2", |s| {
        s.view.as_ref().is_some_and(|v| v.members == vec![h1.member])
    })
    .await;
    let c = counters(addr).await;
    assert!(c["cohort_suspicions_total"] >= 1.0, "{c:?}");
    assert!(c["cohort_filtered_datagrams_total"] >= 1.0, "{c:?}");
    let (_, _, body) = get(addr, "/status").await;
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["quorate"], false);
    assert_eq!(v["blocked_reason"], serde_json::json!(["no_quorum"]));
    assert_eq!(v["members"], serde_json::json!([{"node": 1, "epoch": h1.member.epoch().0}]));
    let peer = &v["liveness"][0];
    assert_eq!(peer["in_view"], false, "{v}");
}
