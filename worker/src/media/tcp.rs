//! ICE-TCP's I/O shell (the rules are in [`ice_tcp`](crate::media::ice_tcp)).
//!
//! One listening socket per worker, on its own thread: it accepts connections, waits (with a
//! deadline) for each one's first frame, reads the transport's ufrag from it and hands the
//! connection to the media thread of that transport's room ([`Handoff`]), as the UDP path
//! hands a datagram to its transport. From then on the connection is a [`TcpLeg`] of its
//! transport on that media thread: frames read from it go to the transport as datagrams from
//! the connection's address, and whatever the transport sends to that address is framed and
//! written to it without ever waiting ([`SendQueue`]).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use crate::media::ice_tcp::{local_ufrag, FrameDecoder, SendOutcome, SendQueue, TcpLimits};

/// Counts open ICE-TCP connections; each [`ConnectionPermit`] is one.
#[derive(Debug, Default)]
pub struct TcpCounters {
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
}

/// One open connection, counted while it lives.
#[derive(Debug)]
pub struct ConnectionPermit {
    counters: Arc<TcpCounters>,
}

impl ConnectionPermit {
    fn new(counters: Arc<TcpCounters>) -> Self {
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
        ConnectionPermit { counters }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection whose first frame named a transport, on its way to the transport's media
/// thread.
#[derive(Debug)]
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    /// The first frame (the STUN request that named the transport).
    pub first: Vec<u8>,
    /// What came after it in the same reads.
    pub decoder: FrameDecoder,
    /// When the connection was accepted: its ICE check must pass within the first-request
    /// timeout of this.
    pub accepted: Instant,
    pub permit: ConnectionPermit,
}

/// Where the listener sends identified connections: the engine's ufrag lookup. `false` when
/// no transport has the ufrag (the connection is then dropped: closed).
pub type Route = Arc<dyn Fn(&str, Handoff) -> bool + Send + Sync>;

/// Why a connection was closed before it reached a transport; counted by the engine as drop
/// reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyPending,
    /// No frame, or a frame that is not a STUN Binding request, within the timeout.
    NoRequest,
    FrameTooLarge,
    UnknownUfrag,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "tcp_too_many_connections",
            Refusal::TooManyPending => "tcp_too_many_pending",
            Refusal::NoRequest => "tcp_no_stun_request",
            Refusal::FrameTooLarge => "tcp_frame_too_large",
            Refusal::UnknownUfrag => "tcp_unknown_ufrag",
        }
    }
}

/// Starts the listener's thread. `refused` counts connections closed before a transport got
/// them.
pub fn start_listener(
    listener: std::net::TcpListener,
    limits: TcpLimits,
    counters: Arc<TcpCounters>,
    route: Route,
    refused: Arc<dyn Fn(Refusal) + Send + Sync>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("fanout-ice-tcp".into()).spawn(move || {
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "the ICE-TCP listener could not start");
                    return;
                }
            };
            let pending = Arc::new(AtomicUsize::new(0));
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, most likely: try again shortly rather than spin.
                        tracing::warn!(error = %e, "ICE-TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if counters.connections_open.load(Ordering::Relaxed) >= limits.max_connections as u64 {
                    refused(Refusal::TooManyConnections);
                    continue;
                }
                if pending.load(Ordering::Relaxed) >= limits.max_pending {
                    refused(Refusal::TooManyPending);
                    continue;
                }
                let permit = ConnectionPermit::new(counters.clone());
                pending.fetch_add(1, Ordering::Relaxed);
                let (pending, route, refused) = (pending.clone(), route.clone(), refused.clone());
                tokio::task::spawn_local(async move {
                    let outcome = identify(stream, peer, permit, limits).await;
                    pending.fetch_sub(1, Ordering::Relaxed);
                    match outcome {
                        Ok((ufrag, handoff)) => {
                            if !route(&ufrag, handoff) {
                                refused(Refusal::UnknownUfrag);
                            }
                        }
                        Err(refusal) => refused(refusal),
                    }
                });
            }
        });
    })?;
    Ok(())
}

/// Reads a new connection's first frame and the ufrag it names.
async fn identify(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: ConnectionPermit,
    limits: TcpLimits,
) -> Result<(String, Handoff), Refusal> {
    let accepted = Instant::now();
    let mut decoder = FrameDecoder::default();
    let mut buf = [0u8; 2048];
    let first = tokio::time::timeout(limits.first_request_timeout, async {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => return Ok(frame.to_vec()),
                Ok(None) => {}
                Err(_) => return Err(Refusal::FrameTooLarge),
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(Refusal::NoRequest),
                Ok(n) => decoder.extend(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| Refusal::NoRequest)??;
    let ufrag = local_ufrag(&first).ok_or(Refusal::NoRequest)?;
    // Media is latency-bound: small frames must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let stream = stream.into_std().map_err(|_| Refusal::NoRequest)?;
    Ok((ufrag, Handoff { stream, peer, first, decoder, accepted, permit }))
}

/// One ICE-TCP connection of a transport, on its media thread.
pub struct TcpLeg {
    /// First, so the count drops no later than the connection closes.
    _permit: ConnectionPermit,
    pub peer: SocketAddr,
    pub stream: tokio::net::TcpStream,
    queue: RefCell<SendQueue>,
    /// Wakes the connection's task: bytes were queued, or the leg is to close.
    pub wake: Notify,
    closed: Cell<bool>,
}

impl TcpLeg {
    pub fn new(peer: SocketAddr, stream: tokio::net::TcpStream, send_queue_limit: usize, permit: ConnectionPermit) -> Self {
        TcpLeg {
            peer,
            stream,
            queue: RefCell::new(SendQueue::new(send_queue_limit)),
            wake: Notify::new(),
            closed: Cell::new(false),
            _permit: permit,
        }
    }

    /// Frames and writes `data`, or queues it; never waits.
    pub fn send(&self, data: &[u8]) -> SendOutcome {
        if self.closed.get() {
            return SendOutcome::Failed;
        }
        let mut queue = self.queue.borrow_mut();
        let was_empty = queue.is_empty();
        let outcome = queue.send(data, |slices| self.stream.try_write_vectored(slices));
        match outcome {
            // The task waits for the socket to be writable only while bytes wait.
            SendOutcome::Queued if was_empty => self.wake.notify_one(),
            SendOutcome::Failed => self.close(),
            _ => {}
        }
        outcome
    }

    pub fn has_queued(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Writes what is queued, as far as the socket takes it. `false` when the connection failed.
    pub fn flush(&self) -> bool {
        self.queue.borrow_mut().flush(|slices| self.stream.try_write_vectored(slices)).is_ok()
    }

    /// Frames dropped for a full queue so far.
    pub fn dropped(&self) -> u64 {
        self.queue.borrow().dropped
    }

    /// Ends the connection: its task stops and drops it.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// How a leg's task reads: one buffer per read, then the frames in it are handled.
pub const READ_BUFFER: usize = 16 * 1024;

/// Reads once from a leg that is readable: `Ok(false)` at the end of the stream.
pub fn read_into(leg: &Rc<TcpLeg>, buf: &mut [u8], decoder: &mut FrameDecoder) -> std::io::Result<bool> {
    match leg.stream.try_read(buf) {
        Ok(0) => Ok(false),
        Ok(n) => {
            decoder.extend(&buf[..n]);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}
