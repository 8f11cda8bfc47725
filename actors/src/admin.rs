//! AdminActor: `GET /status` (JSON) and `GET /metrics` (Prometheus text) over plain HTTP/1.1.
//!
//! The endpoint listens on loopback by default (`[admin] listen`). It is a deliberately small server
//! written by hand on a tokio `TcpListener`: one request per connection, the request head read up to
//! [`MAX_HEAD_BYTES`] within [`HEAD_TIMEOUT`], every response with `Content-Length` and
//! `Connection: close`, and each connection in its own task bounded by [`CONNECTION_TIMEOUT`].
//! Nothing a client sends can panic it or stop it: a malformed request gets `400`, a method other
//! than `GET` gets `405`, an unknown path `404`, and the next connection is served as usual.
//!
//! `/status` asks the membership for the core's [`Status`] ([`GetStatus`]) and serves it as JSON,
//! with the fields an operator looks for first added beside it (see [`status_json`]). `/metrics`
//! serves [`Metrics::render`].
//!
//! **Deliberately absent:** no keep-alive, no request bodies, no TLS or authentication (bind it to
//! loopback or a management network), no write operations: changing anything goes through the CLI.
//!
//! If the address cannot be bound, the actor logs it and stops; the rest of the agent goes on.
//! Tests bind port 0 and learn the address with [`GetAdminAddr`].

use crate::messages::GetStatus;
use crate::metrics::Metrics;
use actix::prelude::*;
use cohort::node::Status;
use cohort::{BlockReason, Member, NodeId};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

/// The largest request head read; a longer one gets `400`.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// How long a client has to send its request head; then it gets `408`.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection is kept, whatever happens on it.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `/status` waits for the membership's answer before replying `503`.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// After the response, unread request bytes are drained this long before closing, so the client
/// reads the response instead of a connection reset.
const LINGER: Duration = Duration::from_millis(500);

/// The address the endpoint listens on: `None` until bound (and forever if binding failed).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<SocketAddr>")]
pub struct GetAdminAddr;

/// Serves `/status` and `/metrics`.
pub struct AdminActor {
    listen: SocketAddr,
    service: Arc<Service>,
    local: Option<SocketAddr>,
}

/// What a connection needs to answer.
struct Service {
    node: NodeId,
    get_status: Recipient<GetStatus>,
    metrics: Arc<Metrics>,
}

impl AdminActor {
    /// An endpoint for `node` on `listen`, asking `get_status` for the status and rendering `metrics`.
    pub fn new(
        listen: SocketAddr,
        node: NodeId,
        get_status: Recipient<GetStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AdminActor { listen, service: Arc::new(Service { node, get_status, metrics }), local: None }
    }
}

impl Actor for AdminActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Binding synchronously keeps `GetAdminAddr` exact: it is answered only after `started`.
        let bound = std::net::TcpListener::bind(self.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std);
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                error!(listen = %self.listen, error = %e, "admin endpoint: cannot listen; /status and /metrics are off");
                ctx.stop();
                return;
            }
        };
        self.local = listener.local_addr().ok();
        info!(listen = ?self.local, "admin endpoint listening: GET /status, GET /metrics");
        ctx.spawn(serve(listener, self.service.clone()).into_actor(self));
    }
}

impl Handler<GetAdminAddr> for AdminActor {
    type Result = Option<SocketAddr>;

    fn handle(&mut self, _msg: GetAdminAddr, _ctx: &mut Self::Context) -> Self::Result {
        self.local
    }
}

/// Accepts connections until the actor stops (which drops this future and closes the listener).
async fn serve(listener: TcpListener, service: Arc<Service>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let service = service.clone();
                actix_rt::spawn(async move {
                    let _slot = slot;
                    if tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, &service)).await.is_err() {
                        debug!(%peer, "admin connection timed out");
                    }
                });
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                warn!(error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    extra: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        body.push('\n');
        Response { status, content_type: "text/plain; charset=utf-8", extra: "", body: body.into_bytes() }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.extra,
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// How reading the request head ended.
enum Head {
    /// The head up to and including its blank line (or the end of the stream after some bytes).
    Read(Vec<u8>),
    /// The client closed without sending anything.
    Empty,
    /// More than [`MAX_HEAD_BYTES`] without a blank line.
    TooLarge,
}

async fn connection(mut stream: TcpStream, service: &Service) {
    let response = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "request head not received in time"),
        Ok(Err(e)) => {
            debug!(error = %e, "admin connection: read failed");
            return;
        }
        Ok(Ok(Head::Empty)) => return,
        Ok(Ok(Head::TooLarge)) => {
            Response::text(400, format!("request head larger than {MAX_HEAD_BYTES} bytes"))
        }
        Ok(Ok(Head::Read(head))) => match parse_request_line(&head) {
            Err(why) => Response::text(400, why),
            Ok((method, target)) => respond(method, target, service).await,
        },
    };
    if let Err(e) = stream.write_all(&response.to_bytes()).await {
        debug!(error = %e, "admin connection: write failed");
        return;
    }
    let _ = stream.shutdown().await;
    // Whatever the client still sends (a body, the rest of an oversized head) is read and dropped
    // briefly: closing with unread data would reset the connection and could discard the response.
    let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
}

async fn read_head<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(if head.is_empty() { Head::Empty } else { Head::Read(head) });
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Head::Read(head));
        }
        if head.len() > MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

/// The length of the head through its terminating blank line (`\r\n\r\n`, or a bare `\n\n`).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    while total < 1024 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Parses `METHOD SP TARGET SP HTTP/1.x` from the first line of the head.
fn parse_request_line(head: &[u8]) -> Result<(&str, &str), &'static str> {
    let line_end = head.iter().position(|&b| b == b'\n').ok_or("malformed request line")?;
    let line = head[..line_end].strip_suffix(b"\r").unwrap_or(&head[..line_end]);
    let line = std::str::from_utf8(line).map_err(|_| "malformed request line")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed request method");
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("malformed request target");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("unsupported HTTP version");
    }
    Ok((method, target))
}

async fn respond(method: &str, target: &str, service: &Service) -> Response {
    if method != "GET" {
        let mut r = Response::text(405, "only GET is supported");
        r.extra = "Allow: GET\r\n";
        return r;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match path {
        "/status" => status(service).await,
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            extra: "",
            body: service.metrics.render(service.node.0).into_bytes(),
        },
        _ => Response::text(404, "not found; try /status or /metrics"),
    }
}

async fn status(service: &Service) -> Response {
    let status = match tokio::time::timeout(STATUS_TIMEOUT, service.get_status.send(GetStatus)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(error = %e, "admin /status: the membership did not answer");
            return Response::text(503, "membership unavailable");
        }
        Err(_) => return Response::text(503, "membership did not answer in time"),
    };
    match status_json(service.node, &status).and_then(|doc| serde_json::to_vec_pretty(&doc)) {
        Ok(mut body) => {
            body.push(b'\n');
            Response { status: 200, content_type: "application/json", extra: "", body }
        }
        Err(e) => {
            error!(error = %e, "admin /status: cannot encode the status");
            Response::text(500, "cannot encode the status")
        }
    }
}

fn member_json(m: Member) -> Value {
    json!({ "node": m.node().0, "epoch": m.epoch().0 })
}

/// The `/status` document: every field of the core's [`Status`] as it serializes, plus:
///
/// - `node`, `epoch`: this node and its incarnation;
/// - `quorate`: true in a primary view; `quorum`: `{quorate, view_members}`;
/// - `members`: the view's members as `{node, epoch}`;
/// - `blocked_reason`: why applications are blocked (`no_quorum`, `fencing`, `stateful_merge_wait`,
///   `state_transfer`), empty when they are not;
/// - `fencing`: `{pending: [{node, epoch}], blocked, self_fenced}`;
/// - `stateful_merge`: `{detected: [{node, epoch}], waiting_for_operator, removed_self}`;
/// - `liveness`: per peer `{node, epoch, last_heard_ms, in_view}`.
///
/// Fails only if the status cannot be encoded as JSON (then `/status` answers `500`).
pub fn status_json(node: NodeId, status: &Status) -> serde_json::Result<Value> {
    let members: Vec<Member> = status.view.as_ref().map(|v| v.members.clone()).unwrap_or_default();
    let extra = json!({
        "node": node.0,
        "epoch": status.member.epoch().0,
        "quorate": status.primary,
        "quorum": { "quorate": status.primary, "view_members": members.len() },
        "members": members.iter().map(|&m| member_json(m)).collect::<Vec<_>>(),
        "blocked_reason": status.blocked,
        "fencing": {
            "pending": status.pending_fences.iter().map(|&m| member_json(m)).collect::<Vec<_>>(),
            "blocked": status.blocked.contains(&BlockReason::Fencing),
            "self_fenced": status.self_fenced,
        },
        "stateful_merge": {
            "detected": status.stateful_merges.iter().map(|&m| member_json(m)).collect::<Vec<_>>(),
            "waiting_for_operator": status.blocked.contains(&BlockReason::StatefulMergeWait),
            "removed_self": status.removed_self,
        },
        "liveness": status.peers.iter().map(|&(m, ms)| json!({
            "node": m.node().0,
            "epoch": m.epoch().0,
            "last_heard_ms": ms,
            "in_view": members.contains(&m),
        })).collect::<Vec<_>>(),
    });
    let mut doc = serde_json::to_value(status)?;
    if let (Some(obj), Value::Object(extra)) = (doc.as_object_mut(), extra) {
        obj.extend(extra);
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(parse_request_line(b"GET /status HTTP/1.1\r\n\r\n"), Ok(("GET", "/status")));
        assert_eq!(parse_request_line(b"GET /metrics?x=1 HTTP/1.0\n\n"), Ok(("GET", "/metrics?x=1")));
        assert!(parse_request_line(b"GET /status\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET  /status HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"get /status HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET status HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET /status HTTP/2\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET /st\xffatus HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET /status HTTP/1.1").is_err());
        assert!(parse_request_line(b"").is_err());
    }

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
