//! The IO of the client API's connections: the listeners as a stream of accepted connections, and each
//! connection's reader and writer tasks. [`crate::client_api`] holds every decision; these tasks only
//! move bytes, and bound what they hold:
//!
//! - the **reader** reads one frame at a time. Before hello its frame limit is
//!   [`MAX_HELLO_FRAME_BYTES`] (64 KiB), after it the agent's frame limit. Between a larger frame's
//!   length prefix and its body it takes that many bytes from the agent-wide budget of frames being
//!   read (`limits.client_frames_total_bytes`) and gives them back once the request is decoded, so
//!   slowly sent large frames on many connections cannot add up beyond the budget: readers wait
//!   instead (their peers' socket buffers push back). Frames up to 64 KiB never wait for it. It hands each request to the actor and waits
//!   for it to be handled; before a `Send` it takes one of the client's unanswered-send permits.
//! - the **writer** drains the client's queue of encoded frames, batching what is ready, and counts
//!   down the client's queued bytes as they are written (the actor counts them up and disconnects a
//!   client whose queue exceeds `limits.client_queue_bytes`).

use crate::client_access::Principal;
use crate::client_api::{ClientApiActor, FINAL_WRITE_DEADLINE};
use crate::client_proto::{FrameCodec, ProtoError, Request, MAX_HELLO_FRAME_BYTES};
use actix::prelude::*;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// An encoded frame (length prefix and body), shared when the same event goes to several clients.
pub(crate) type Frame = Arc<Vec<u8>>;

/// A connection's id, unique for the actor's lifetime.
pub(crate) type ClientId = u64;

/// The writer gathers ready frames into one write of at most about this many bytes.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// After an accept error (e.g. out of file descriptors), wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Removes a socket file left behind by an agent that is gone: only a socket, and only when nothing
/// answers a connect on it. Anything else at the path is an error naming the path.
pub(crate) fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on it (is another agent running with this socket?)",
            )),
            Err(_) => std::fs::remove_file(path),
        },
        Ok(_) => Err(io::Error::new(io::ErrorKind::AlreadyExists, "the path exists and is not a socket")),
    }
}

/// Accepted connections as a stream, with a short pause after an accept error so that running out of
/// file descriptors does not spin.
pub(crate) struct Incoming {
    listener: UnixListener,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    principal: Principal,
}

impl Incoming {
    /// The connections accepted on `listener`, the socket of `principal`.
    pub(crate) fn new(listener: UnixListener, principal: Principal) -> Incoming {
        Incoming { listener, backoff: None, principal }
    }
}

/// An accepted connection and the socket it came in on.
pub(crate) struct Accepted(pub(crate) Principal, pub(crate) io::Result<UnixStream>);

impl Stream for Incoming {
    type Item = Accepted;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if let Some(sleep) = self.backoff.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.backoff = None;
        }
        let principal = self.principal;
        match self.listener.poll_accept(cx) {
            Poll::Ready(Ok((stream, _))) => Poll::Ready(Some(Accepted(principal, Ok(stream)))),
            Poll::Ready(Err(e)) => {
                self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                Poll::Ready(Some(Accepted(principal, Err(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A request read from a client (from its reader task).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientRequest {
    pub(crate) client: ClientId,
    pub(crate) req: Request,
}

/// A client's connection ended (`error: None`) or sent something invalid (from its reader task).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientGone {
    pub(crate) client: ClientId,
    pub(crate) error: Option<String>,
}

/// What a reader may hold.
#[derive(Clone)]
pub(crate) struct ReadLimits {
    /// The frame limit after hello.
    pub(crate) codec: FrameCodec,
    /// The agent-wide budget of bytes of frames being read, and its size.
    pub(crate) frames: Arc<Semaphore>,
    pub(crate) frames_total: usize,
}

/// Reads one frame's body under `codec`'s limit, holding its size from `limits.frames` while it does;
/// `Ok(None)` on a clean end of stream before a frame.
async fn read_frame(
    rd: &mut BufReader<OwnedReadHalf>,
    codec: &FrameCodec,
    limits: &ReadLimits,
) -> Result<Option<(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>)>, ProtoError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = rd.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(ProtoError::Truncated) };
        }
        got += n;
    }
    let len = codec.check_len(header)?;
    // Small frames (every request but large sends and state answers) are bounded by the number of
    // connections already and never wait, so one client holding the budget with slow large frames
    // cannot stall everyone's ordinary requests. A frame larger than the whole budget takes all of it
    // (the frame limit allowed it).
    let permit = if len <= MAX_HELLO_FRAME_BYTES {
        None
    } else {
        let want = u32::try_from(len.min(limits.frames_total)).unwrap_or(u32::MAX);
        Some(limits.frames.clone().acquire_many_owned(want).await.map_err(|_| ProtoError::Truncated)?)
    };
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = rd.take(len as u64).read_to_end(&mut body).await?;
    if read != len {
        return Err(ProtoError::Truncated);
    }
    Ok(Some((body, permit)))
}

/// Reads a client's requests and hands them to the actor one at a time. See the module documentation.
pub(crate) async fn run_reader(
    id: ClientId,
    rd: OwnedReadHalf,
    limits: ReadLimits,
    addr: Addr<ClientApiActor>,
    permits: Arc<Semaphore>,
) {
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    // The first frame must be a small hello: a peer that has not said who it is gets no room for more.
    let hello = FrameCodec::new(MAX_HELLO_FRAME_BYTES);
    let mut greeted = false;
    let error = loop {
        let codec = if greeted { limits.codec } else { hello };
        let (body, held) = match read_frame(&mut rd, &codec, &limits).await {
            Ok(Some(frame)) => frame,
            // A clean end, a connection that broke, or one cut off mid-frame: nobody left to tell.
            Ok(None) | Err(ProtoError::Io(_)) | Err(ProtoError::Truncated) => break None,
            Err(e @ ProtoError::TooLarge { .. }) if !greeted => {
                break Some(format!("{e} before hello"));
            }
            Err(e) => break Some(e.to_string()),
        };
        let req = match codec.decode_body::<Request>(&body) {
            Ok(req) => req,
            Err(e) => break Some(e.to_string()),
        };
        drop(body);
        drop(held);
        if matches!(req, Request::Send { .. }) {
            // Wait for a permit. Meanwhile notice a client that goes away (its end of stream), as long as
            // that needs no more than filling the (bounded) read buffer: a client stuck behind a full
            // send queue that gives up must still leave its groups.
            loop {
                tokio::select! {
                    p = permits.acquire() => match p {
                        Ok(p) => {
                            p.forget();
                            break;
                        }
                        Err(_) => return,
                    },
                    ended = async { rd.fill_buf().await.map_or(true, |b| b.is_empty()) }, if rd.buffer().is_empty() => {
                        if ended {
                            addr.do_send(ClientGone { client: id, error: None });
                            return;
                        }
                    }
                }
            }
        }
        // The first frame is a hello or the actor closes the connection; either way, once it has been
        // handled the agent's own frame limit applies.
        greeted = true;
        if addr.send(ClientRequest { client: id, req }).await.is_err() {
            return;
        }
    };
    addr.do_send(ClientGone { client: id, error });
}

/// Writes a client's queued frames, batching what is ready, until told to stop; subtracts the bytes
/// of the frames it wrote from `queued`. See the module documentation.
pub(crate) async fn run_writer(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    mut kill: oneshot::Receiver<Option<Frame>>,
    queued: Arc<AtomicUsize>,
) {
    let mut batch: Vec<u8> = Vec::new();
    let final_frame = 'run: loop {
        tokio::select! {
            biased;
            k = &mut kill => break 'run k.ok().flatten(),
            f = rx.recv() => match f {
                Some(f) => batch.extend_from_slice(&f),
                None => break 'run None,
            },
        }
        while batch.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        let mut pos = 0;
        while pos < batch.len() {
            tokio::select! {
                biased;
                k = &mut kill => {
                    batch.drain(..pos);
                    break 'run k.ok().flatten();
                }
                r = w.write(&batch[pos..]) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pos += n,
                },
            }
        }
        queued.fetch_sub(batch.len().min(queued.load(Relaxed)), Relaxed);
        batch.clear();
        // Do not keep a state transfer's worth of memory per client after a large frame.
        if batch.capacity() > 4 * WRITE_BATCH_BYTES {
            batch.shrink_to(WRITE_BATCH_BYTES);
        }
    };
    // Finish the frame that was being written (the stream must stay well-formed), then the final
    // frame, within a deadline: the client may not be reading at all.
    let _ = tokio::time::timeout(FINAL_WRITE_DEADLINE, async {
        w.write_all(&batch).await?;
        if let Some(f) = final_frame {
            w.write_all(&f).await?;
        }
        w.shutdown().await
    })
    .await;
}
