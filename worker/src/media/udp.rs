//! The media engine's I/O shell: UDP sockets and media threads around the sans-IO
//! [`WebRtcTransport`] and [`Router`].
//!
//! mediasoup's model inside one process: each room is pinned to one media thread (by a hash
//! of its id), and every transport of the room has its socket on that thread. A packet is
//! received, decrypted, routed, re-encrypted and sent without a lock or a hop between
//! threads. The control plane talks to a thread through a command channel.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use std::os::fd::AsRawFd;

use rand::Rng;
use rustc_hash::FxHashMap;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, Notify};

use crate::engine::{EngineError, EngineNotice, EngineSnapshot, MediaEngine, RoomMediaStats};
use crate::media::data_router::DataRouter;
use crate::media::dtls::DtlsIdentity;
use crate::media::sctp::SctpMessage;
use crate::media::egress::{self, SegmentBatch};
use crate::media::ice_tcp::{SendOutcome, TcpLimits};
use crate::media::ports::PortPool;
use crate::media::tcp::{self, Handoff, Refusal, TcpCounters, TcpLeg};
use crate::media::router::{Outgoing, Router};
use crate::media::transport::{Output, TransportTimeouts, WebRtcTransport};
use crate::record::RecordTap;
use crate::room::{
    DtlsParameters, DtlsRole, ForwardingTable, IceProtocol, ListenAddress, ProducerId, ProtocolDefaults, RoomId, TransportId,
    TransportNetwork, TransportProtocols,
};

/// How often a media thread publishes its rooms' media figures.
const MEDIA_STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a media thread drives its routers' timers. NACK delays are tens of
/// milliseconds, so a coarser tick would delay repairs.
const ROUTER_TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// Where the engine listens and what it announces.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Address the UDP sockets bind to (`0.0.0.0` in a pod on the host network).
    pub listen_ip: IpAddr,
    /// Address put in ICE candidates (the node's IP, or a NAT's public one).
    pub announced_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    /// Media threads; rooms are spread over them.
    pub threads: usize,
    /// When transports close by themselves (ICE timeout and consent, DTLS setup).
    pub timeouts: TransportTimeouts,
    /// The ICE-TCP port all transports share (0: one the system picks); `None`: no ICE-TCP.
    pub tcp_port: Option<u16>,
    /// Which protocols a transport gets when its request does not say.
    pub protocols: ProtocolDefaults,
    pub tcp_limits: TcpLimits,
}

/// Counters the metrics endpoint and `/v1/stats` read.
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub packets_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub packets_forwarded: AtomicU64,
    /// Data channel message copies queued for DataConsumers.
    pub data_messages_forwarded: AtomicU64,
    /// Datagrams dropped (bad STUN, failed SRTP, unknown protocol...), all reasons.
    pub packets_dropped: AtomicU64,
    pub transports_open: AtomicU64,
    /// Drops by reason, for `/metrics`.
    pub drops_by_reason: Mutex<HashMap<&'static str, u64>>,
    /// Each room's media figures, refreshed by its media thread about once a second.
    pub media: Mutex<HashMap<RoomId, RoomMediaStats>>,
    /// ICE-TCP connections.
    pub tcp: Arc<TcpCounters>,
}

impl EngineCounters {
    fn drop_for(&self, reason: &'static str) {
        self.packets_dropped.fetch_add(1, Ordering::Relaxed);
        *lock(&self.drops_by_reason).entry(reason).or_default() += 1;
    }
}

enum Command {
    /// `socket` and `port` are `None` for a transport on ICE-TCP only.
    Open { room: RoomId, transport: TransportId, socket: Option<std::net::UdpSocket>, port: Option<u16>, ufrag: String, password: String },
    Connect { transport: TransportId, remote: DtlsParameters, role: DtlsRole },
    RestartIce { transport: TransportId, ufrag: String, password: String },
    Close { transport: TransportId },
    Routes { room: RoomId, table: ForwardingTable },
    CloseRoom { room: RoomId },
    /// An ICE-TCP connection whose first check names this transport's ufrag.
    AttachTcp { transport: TransportId, handoff: Box<Handoff> },
    /// The room's producer packets are copied to the recorder (`None`: no longer).
    Tap { room: RoomId, tap: Option<RecordTap> },
    /// The recorder asks a producer for a keyframe.
    Keyframe { room: RoomId, producer: ProducerId },
}

/// What the engine knows of an open transport.
struct OpenTransport {
    room: RoomId,
    /// Whether it has an ICE-TCP candidate (its ufrags are in the lookup).
    tcp: bool,
    /// Its ufrags, current and before the last ICE restart, for the ICE-TCP lookup.
    ufrags: Vec<String>,
}

/// Finds the transport of an ICE-TCP connection by ufrag, for the listener's thread.
type UfragTable = Arc<Mutex<HashMap<String, (RoomId, TransportId)>>>;

/// The UDP media engine.
pub struct UdpEngine {
    config: EngineConfig,
    identity: DtlsIdentity,
    /// Shared with the media threads: a port returns to the pool only once its socket is
    /// dropped, so the next bind of it cannot fail.
    ports: Arc<Mutex<PortPool>>,
    threads: Arc<Vec<mpsc::UnboundedSender<Command>>>,
    /// The open transports' rooms and ufrags.
    transports: Mutex<HashMap<TransportId, OpenTransport>>,
    ufrags: UfragTable,
    /// The ICE-TCP port, once bound.
    tcp_port: Option<u16>,
    shutting_down: AtomicBool,
    pub counters: Arc<EngineCounters>,
    /// The byte counts at the start of the current bitrate window, and the last rates.
    bitrate: Mutex<BitrateWindow>,
}

/// Bitrates are measured over windows of at least [`BITRATE_WINDOW`].
const BITRATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug)]
struct BitrateWindow {
    started: Instant,
    bytes_received: u64,
    bytes_sent: u64,
    recv_bitrate: u64,
    send_bitrate: u64,
}

impl UdpEngine {
    /// Starts the media threads. Transports the engine closes by itself are reported on
    /// `notices`.
    pub fn start(config: EngineConfig, notices: mpsc::UnboundedSender<EngineNotice>) -> Result<Arc<UdpEngine>, EngineError> {
        let provider = rtc::crypto::default_provider().map_err(|e| EngineError::Io(e.to_string()))?;
        let identity = DtlsIdentity::generate(provider).map_err(|e| EngineError::Io(e.to_string()))?;
        let counters = Arc::new(EngineCounters::default());
        let ports = Arc::new(Mutex::new(PortPool::new(config.port_min, config.port_max)));
        let mut threads = Vec::new();
        for index in 0..config.threads.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let identity = identity.clone();
            let notices = notices.clone();
            let counters = counters.clone();
            let ports = ports.clone();
            let timeouts = config.timeouts;
            let send_queue_limit = config.tcp_limits.send_queue_limit;
            let per_transport = config.tcp_limits.per_transport;
            let first_request_timeout = config.tcp_limits.first_request_timeout;
            std::thread::Builder::new()
                .name(format!("fanout-media-{index}"))
                .spawn(move || {
                    let tcp = TcpSettings { send_queue_limit, per_transport, first_request_timeout };
                    media_thread(rx, identity, timeouts, tcp, notices, counters, ports)
                })
                .map_err(|e| EngineError::Io(e.to_string()))?;
            threads.push(tx);
        }
        let threads = Arc::new(threads);
        let ufrags = UfragTable::default();
        let tcp_port = match config.tcp_port {
            Some(port) => Some(start_tcp(&config, port, &threads, &ufrags, &counters)?),
            None => None,
        };
        Ok(Arc::new(UdpEngine {
            ports,
            config,
            identity,
            threads,
            ufrags,
            tcp_port,
            transports: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            counters,
            bitrate: Mutex::new(BitrateWindow { started: Instant::now(), bytes_received: 0, bytes_sent: 0, recv_bitrate: 0, send_bitrate: 0 }),
        }))
    }

    /// Takes no new transports from now on.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Ports currently held by transports.
    pub fn ports_in_use(&self) -> usize {
        lock(&self.ports).in_use()
    }

    /// The ICE-TCP port every transport's TCP candidate has, when ICE-TCP is on.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    fn thread_for(&self, room: &RoomId) -> &mpsc::UnboundedSender<Command> {
        thread_for(&self.threads, room)
    }

    fn send(&self, room: &RoomId, command: Command) {
        // A media thread only stops when the process does.
        let _ = self.thread_for(room).send(command);
    }

    fn room_of(&self, transport: &TransportId) -> Result<RoomId, EngineError> {
        lock(&self.transports)
            .get(transport)
            .map(|open| open.room.clone())
            .ok_or_else(|| EngineError::UnknownTransport(transport.to_string()))
    }
}

fn thread_for<'a>(threads: &'a [mpsc::UnboundedSender<Command>], room: &RoomId) -> &'a mpsc::UnboundedSender<Command> {
    let mut h = DefaultHasher::new();
    room.as_str().hash(&mut h);
    &threads[(h.finish() as usize) % threads.len()]
}

/// Binds the ICE-TCP port and starts its listener, which hands each identified connection to
/// its transport's media thread. Returns the bound port.
fn start_tcp(
    config: &EngineConfig,
    port: u16,
    threads: &Arc<Vec<mpsc::UnboundedSender<Command>>>,
    ufrags: &UfragTable,
    counters: &Arc<EngineCounters>,
) -> Result<u16, EngineError> {
    let address = SocketAddr::new(config.listen_ip, port);
    let listener = std::net::TcpListener::bind(address).map_err(|e| EngineError::Io(format!("cannot listen for ICE-TCP on {address}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| EngineError::Io(e.to_string()))?.port();
    let (threads, table) = (threads.clone(), ufrags.clone());
    let route: tcp::Route = Arc::new(move |ufrag, handoff| {
        let Some((room, transport)) = lock(&table).get(ufrag).cloned() else { return false };
        thread_for(&threads, &room).send(Command::AttachTcp { transport, handoff: Box::new(handoff) }).is_ok()
    });
    let refusals = counters.clone();
    let refused = Arc::new(move |refusal: Refusal| refusals.drop_for(refusal.as_str()));
    tcp::start_listener(listener, config.tcp_limits, counters.tcp.clone(), route, refused).map_err(|e| EngineError::Io(e.to_string()))?;
    Ok(bound)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// ICE credentials: 16 and 32 characters from the ICE alphabet (RFC 8445 needs 4 and 22 at least).
fn ice_credential(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

impl MediaEngine for UdpEngine {
    fn open_transport(&self, room: &RoomId, transport: &TransportId, protocols: &TransportProtocols) -> Result<TransportNetwork, EngineError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let protocols = protocols.resolve(self.config.protocols, self.tcp_port.is_some())?;
        let (mut socket, mut port) = (None, None);
        if protocols.contains(&IceProtocol::Udp) {
            port = lock(&self.ports).allocate(|port| match std::net::UdpSocket::bind(SocketAddr::new(self.config.listen_ip, port)) {
                Ok(s) => {
                    socket = Some(s);
                    true
                }
                Err(_) => false,
            });
            if port.is_none() || socket.is_none() {
                return Err(EngineError::PortsExhausted { min: self.config.port_min, max: self.config.port_max });
            }
        }
        let tcp = protocols.contains(&IceProtocol::Tcp);
        let (ufrag, password) = (ice_credential(16), ice_credential(32));
        lock(&self.transports).insert(transport.clone(), OpenTransport { room: room.clone(), tcp, ufrags: vec![ufrag.clone()] });
        if tcp {
            lock(&self.ufrags).insert(ufrag.clone(), (room.clone(), transport.clone()));
        }
        self.counters.transports_open.fetch_add(1, Ordering::Relaxed);
        self.send(room, Command::Open {
            room: room.clone(),
            transport: transport.clone(),
            socket,
            port,
            ufrag: ufrag.clone(),
            password: password.clone(),
        });
        // Preferred first: candidates' priorities follow this order.
        let addresses = protocols
            .iter()
            .map(|&protocol| {
                let port = match protocol {
                    IceProtocol::Udp => port.unwrap_or_default(),
                    IceProtocol::Tcp => self.tcp_port.unwrap_or_default(),
                };
                ListenAddress { ip: self.config.announced_ip, port, protocol }
            })
            .collect();
        Ok(TransportNetwork {
            ice_username_fragment: ufrag,
            ice_password: password,
            addresses,
            fingerprints: self.identity.fingerprints(),
        })
    }

    fn connect_transport(&self, room: &RoomId, transport: &TransportId, remote: &DtlsParameters, local_role: DtlsRole) -> Result<(), EngineError> {
        self.room_of(transport)?;
        self.send(room, Command::Connect { transport: transport.clone(), remote: remote.clone(), role: local_role });
        Ok(())
    }

    fn restart_ice(&self, room: &RoomId, transport: &TransportId) -> Result<(String, String), EngineError> {
        let (ufrag, password) = (ice_credential(16), ice_credential(32));
        {
            let mut transports = lock(&self.transports);
            let open = transports.get_mut(transport).ok_or_else(|| EngineError::UnknownTransport(transport.to_string()))?;
            if open.tcp {
                let mut table = lock(&self.ufrags);
                // The transport accepts the credentials before the restart until the new ones
                // are used, and never older ones.
                if open.ufrags.len() >= 2 {
                    table.remove(&open.ufrags.remove(0));
                }
                table.insert(ufrag.clone(), (room.clone(), transport.clone()));
            }
            open.ufrags.push(ufrag.clone());
        }
        self.send(room, Command::RestartIce { transport: transport.clone(), ufrag: ufrag.clone(), password: password.clone() });
        Ok((ufrag, password))
    }

    fn close_transport(&self, room: &RoomId, transport: &TransportId) {
        if let Some(open) = lock(&self.transports).remove(transport) {
            self.counters.transports_open.fetch_sub(1, Ordering::Relaxed);
            let mut table = lock(&self.ufrags);
            for ufrag in &open.ufrags {
                table.remove(ufrag);
            }
        }
        self.send(room, Command::Close { transport: transport.clone() });
    }

    fn update_routes(&self, room: &RoomId, table: ForwardingTable) {
        self.send(room, Command::Routes { room: room.clone(), table });
    }

    fn snapshot(&self) -> EngineSnapshot {
        let c = &self.counters;
        let (bytes_received, bytes_sent) = (c.bytes_received.load(Ordering::Relaxed), c.bytes_sent.load(Ordering::Relaxed));
        let mut window = lock(&self.bitrate);
        let elapsed = window.started.elapsed();
        if elapsed >= BITRATE_WINDOW {
            let secs = elapsed.as_secs_f64();
            window.recv_bitrate = ((bytes_received - window.bytes_received) as f64 * 8.0 / secs) as u64;
            window.send_bitrate = ((bytes_sent - window.bytes_sent) as f64 * 8.0 / secs) as u64;
            *window = BitrateWindow { started: Instant::now(), bytes_received, bytes_sent, ..*window };
        }
        let mut drops: Vec<(&'static str, u64)> = lock(&c.drops_by_reason).iter().map(|(r, n)| (*r, *n)).collect();
        drops.sort();
        EngineSnapshot {
            packets_received: c.packets_received.load(Ordering::Relaxed),
            bytes_received,
            packets_sent: c.packets_sent.load(Ordering::Relaxed),
            bytes_sent,
            packets_forwarded: c.packets_forwarded.load(Ordering::Relaxed),
            data_messages_forwarded: c.data_messages_forwarded.load(Ordering::Relaxed),
            drops_by_reason: drops,
            recv_bitrate: window.recv_bitrate,
            send_bitrate: window.send_bitrate,
        }
    }

    fn media_stats(&self, room: &RoomId) -> Option<RoomMediaStats> {
        lock(&self.counters.media).get(room).cloned()
    }

    fn all_media_stats(&self) -> Vec<(RoomId, RoomMediaStats)> {
        let mut all: Vec<(RoomId, RoomMediaStats)> = lock(&self.counters.media).iter().map(|(r, s)| (r.clone(), s.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn set_recording_tap(&self, room: &RoomId, tap: Option<RecordTap>) {
        self.send(room, Command::Tap { room: room.clone(), tap });
    }

    fn request_keyframe(&self, room: &RoomId, producer: &ProducerId) {
        self.send(room, Command::Keyframe { room: room.clone(), producer: producer.clone() });
    }

    fn close_room(&self, room: &RoomId) {
        let mut transports = lock(&self.transports);
        let before = transports.len();
        let mut table = lock(&self.ufrags);
        transports.retain(|_, open| {
            if &open.room != room {
                return true;
            }
            for ufrag in &open.ufrags {
                table.remove(ufrag);
            }
            false
        });
        drop(table);
        self.counters.transports_open.fetch_sub((before - transports.len()) as u64, Ordering::Relaxed);
        drop(transports);
        self.send(room, Command::CloseRoom { room: room.clone() });
    }
}

/// Datagrams taken from a socket before the copies they made are sent: a keyframe's packets
/// and then some.
const RECEIVE_BATCH: usize = 16;

/// A transport's batch buffer keeps this much between batches: a delta frame's copies fit,
/// a keyframe's grow it for the moment.
const BATCH_BUFFER_KEPT: usize = 8 * 1024;

/// Sends a transport's pending copies ([`egress::send_batch`]) and counts them.
fn send_pending(slot: &mut Slot, segmentation: &mut bool, counters: &EngineCounters) {
    let Some(fd) = slot.fd else {
        slot.pending.clear();
        return;
    };
    let sent = egress::send_batch(fd, &slot.pending, segmentation);
    if let Some((_, segment, data)) = slot.pending.contents().filter(|_| sent > 0) {
        counters.packets_sent.fetch_add(sent, Ordering::Relaxed);
        // Every segment but a short last one has the segment size.
        let bytes = if sent == slot.pending.len() as u64 { data.len() as u64 } else { sent * segment as u64 };
        counters.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }
    slot.pending.clear();
}

/// One transport on a media thread.
struct Slot {
    room: RoomId,
    /// The socket's descriptor, for sends: direct system calls ([`egress`]). The socket is
    /// owned by the transport's receive task, which closes it only once this slot is gone.
    /// It is registered with the poller for reading only: registered for writing too, it
    /// would wake the media thread each time the kernel frees a sent datagram, that is once
    /// per copy.
    fd: Option<std::os::fd::RawFd>,
    /// Forwarded copies waiting to leave together: sent when the router moves on to another
    /// transport ([`MediaThread::forward`]) or at the end of the step ([`MediaThread::flush_sends`]).
    pending: SegmentBatch,
    transport: WebRtcTransport,
    /// Wakes the receive task when its timer may have changed, or to stop it.
    wake: Rc<Notify>,
    closed: bool,
    /// ICE-TCP connections, nearly always none or one.
    tcp: Vec<Rc<TcpLeg>>,
}

impl Slot {
    /// The ICE-TCP connection from `peer`, if that tuple is one. A UDP tuple with the very
    /// same address and port as a TCP one would be taken for it; browsers bind the two
    /// independently, so this does not happen in practice.
    fn tcp_leg(&self, peer: SocketAddr) -> Option<&Rc<TcpLeg>> {
        self.tcp.iter().find(|leg| leg.peer == peer)
    }

    /// Sends one datagram of the transport's own (STUN, DTLS, RTCP) to `to`.
    fn transmit(&self, to: SocketAddr, data: &[u8], counters: &EngineCounters) {
        let sent = match self.tcp_leg(to) {
            Some(leg) => send_on_leg(leg, data, counters),
            None => self.fd.is_some_and(|fd| egress::send_datagram(fd, data, to)),
        };
        if sent {
            counters.packets_sent.fetch_add(1, Ordering::Relaxed);
            counters.bytes_sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Frames and writes (or queues) a datagram on an ICE-TCP connection; a full queue drops it,
/// counted. True when it was written or queued.
fn send_on_leg(leg: &TcpLeg, data: &[u8], counters: &EngineCounters) -> bool {
    match leg.send(data) {
        SendOutcome::Written | SendOutcome::Queued => true,
        SendOutcome::Dropped => {
            counters.drop_for("tcp_send_queue_full");
            false
        }
        SendOutcome::Failed => false,
    }
}

/// A media thread's share of the ICE-TCP limits.
#[derive(Debug, Clone, Copy)]
struct TcpSettings {
    send_queue_limit: usize,
    per_transport: usize,
    first_request_timeout: std::time::Duration,
}

/// A media thread's transports. Each keeps its index (its handle) while it is open, so the
/// routers can hand each forwarded copy back with its transport's handle and the hot path
/// needs no lookup by id; handles are given to the routers again whenever they change
/// ([`MediaThread::refresh_handles`]).
#[derive(Default)]
struct Slots {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: FxHashMap<TransportId, usize>,
}

impl Slots {
    fn insert(&mut self, id: TransportId, slot: Slot) {
        // A transport opened again under the same id replaces the old one.
        self.remove(&id);
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, index);
    }

    fn remove(&mut self, id: &TransportId) -> Option<Slot> {
        let index = self.by_id.remove(id)?;
        self.free.push(index);
        self.slots[index].take()
    }

    fn handle(&self, id: &TransportId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    fn get(&self, id: &TransportId) -> Option<&Slot> {
        self.slots[self.handle(id)?].as_ref()
    }

    fn get_mut(&mut self, id: &TransportId) -> Option<&mut Slot> {
        let index = self.handle(id)?;
        self.slots[index].as_mut()
    }

    fn at_mut(&mut self, handle: usize) -> Option<&mut Slot> {
        self.slots.get_mut(handle)?.as_mut()
    }

    fn iter(&self) -> impl Iterator<Item = (&TransportId, &Slot)> {
        self.by_id.iter().filter_map(|(id, &i)| self.slots[i].as_ref().map(|s| (id, s)))
    }
}

/// A media thread's commands in order, with one shortcut: a room's table is skipped when a
/// newer one for the same room waits behind it. A burst of joins sends a table per consume,
/// each a full copy of the room's routes; installing every one would cost O(consumers) each,
/// O(consumers²) for the burst, and only the newest matters (it includes everything before).
#[derive(Default)]
struct CommandQueue {
    commands: std::collections::VecDeque<Command>,
    /// Tables queued per room.
    tables: HashMap<RoomId, usize>,
}

impl CommandQueue {
    fn push(&mut self, command: Command) {
        if let Command::Routes { room, .. } = &command {
            *self.tables.entry(room.clone()).or_default() += 1;
        }
        self.commands.push_back(command);
    }

    fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The next command to carry out, past tables that a newer one replaces.
    fn pop(&mut self) -> Option<Command> {
        while let Some(command) = self.commands.pop_front() {
            if let Command::Routes { room, .. } = &command {
                let queued = self.tables.get_mut(room).map(|n| {
                    *n -= 1;
                    *n
                });
                if queued == Some(0) {
                    self.tables.remove(room);
                } else {
                    continue;
                }
            }
            return Some(command);
        }
        None
    }
}

/// Everything one media thread owns.
struct MediaThread {
    identity: DtlsIdentity,
    timeouts: TransportTimeouts,
    tcp: TcpSettings,
    transports: Slots,
    routers: HashMap<RoomId, Router>,
    /// Each room's data channel routes (DataProducers to DataConsumers).
    data_routers: HashMap<RoomId, DataRouter>,
    notices: mpsc::UnboundedSender<EngineNotice>,
    counters: Arc<EngineCounters>,
    ports: Arc<Mutex<PortPool>>,
    /// RTP packets decrypted in this step, with their room and transport, to forward
    /// together ([`MediaThread::finish_batch`]).
    arrived: Vec<(RoomId, TransportId, Vec<u8>)>,
    /// Transports with copies in their [`Slot::pending`] batch.
    sending: Vec<usize>,
    /// Whether the kernel and route take segmented sends; cleared on the first refusal.
    segmentation: bool,
}

fn media_thread(
    mut commands: mpsc::UnboundedReceiver<Command>,
    identity: DtlsIdentity,
    timeouts: TransportTimeouts,
    tcp: TcpSettings,
    notices: mpsc::UnboundedSender<EngineNotice>,
    counters: Arc<EngineCounters>,
    ports: Arc<Mutex<PortPool>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "media thread could not start its runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let state = Rc::new(RefCell::new(MediaThread {
        identity,
        timeouts,
        tcp,
        transports: Slots::default(),
        routers: HashMap::new(),
        data_routers: HashMap::new(),
        notices,
        counters,
        ports,
        arrived: Vec::new(),
        sending: Vec::new(),
        segmentation: true,
    }));
    // Router timers (keyframe request repeats, NACKs, reports, congestion feedback) for every
    // room of this thread, in between the finer steps of probes in progress, and once a
    // second its rooms' media figures.
    let ticking = state.clone();
    local.spawn_local(async move {
        let mut next_tick = Instant::now() + ROUTER_TICK;
        let mut next_stats = Instant::now();
        loop {
            let probe_step = ticking.borrow().routers.values().filter_map(|r| r.poll_timeout()).min();
            let wake = probe_step.map_or(next_tick, |at| at.min(next_tick));
            tokio::time::sleep_until(wake.into()).await;
            let now = Instant::now();
            let mut st = ticking.borrow_mut();
            let out: Vec<Outgoing> = if now >= next_tick {
                next_tick = (next_tick + ROUTER_TICK).max(now);
                st.routers.values_mut().flat_map(|r| r.handle_timeout(now)).collect()
            } else {
                st.routers.values_mut().filter(|r| r.poll_timeout().is_some_and(|at| at <= now)).flat_map(|r| r.handle_probe_steps(now)).collect()
            };
            for o in out {
                st.deliver(o, now);
            }
            st.report_media_events();
            if now >= next_stats {
                next_stats = now + MEDIA_STATS_INTERVAL;
                let figures: Vec<(RoomId, RoomMediaStats)> = st.routers.iter().map(|(room, r)| (room.clone(), r.media_stats(now))).collect();
                let mut media = lock(&st.counters.media);
                for (room, stats) in figures {
                    media.insert(room, stats);
                }
            }
        }
    });
    local.block_on(&runtime, async move {
        let mut queue = CommandQueue::default();
        loop {
            if queue.is_empty() {
                let Some(command) = commands.recv().await else { break };
                queue.push(command);
            }
            while let Ok(command) = commands.try_recv() {
                queue.push(command);
            }
            let Some(command) = queue.pop() else { continue };
            // Commands taken without waiting do not count against the runtime's budget:
            // count them, so a long burst still lets the receive loops run (a closed
            // transport's port returns only when its loop does).
            tokio::task::consume_budget().await;
            let now = Instant::now();
            match command {
                Command::Open { room, transport, socket, port, ufrag, password } => {
                    // SAFETY: a std UdpSocket owns its descriptor, which stays open and the same
                    // for as long as the AsyncFd owns the socket.
                    // A transport on ICE-TCP only has no socket of its own.
                    let registered = socket.map(|socket| {
                        socket
                            .set_nonblocking(true)
                            .and_then(|_| unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(|e| e.into()))
                    });
                    let socket = match registered.transpose() {
                        Ok(s) => s.map(Rc::new),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot register a transport socket");
                            if let Some(port) = port {
                                lock(&state.borrow().ports).release(port);
                            }
                            continue;
                        }
                    };
                    let wake = Rc::new(Notify::new());
                    let identity = state.borrow().identity.clone();
                    let fd = socket.as_ref().map(|s| s.as_raw_fd());
                    let mut st = state.borrow_mut();
                    let timeouts = st.timeouts;
                    st.transports.insert(transport.clone(), Slot {
                        room: room.clone(),
                        fd,
                        transport: WebRtcTransport::with_timeouts(ufrag, password, identity, now, timeouts),
                        wake: wake.clone(),
                        closed: false,
                        pending: SegmentBatch::default(),
                        tcp: Vec::new(),
                    });
                    st.refresh_handles(&room);
                    drop(st);
                    tokio::task::spawn_local(receive_loop(state.clone(), transport, socket, port, wake));
                }
                Command::Connect { transport, remote, role } => {
                    let mut st = state.borrow_mut();
                    if let Some(slot) = st.transports.get_mut(&transport) {
                        // A refusal closes the transport, which the drain below reports.
                        if let Err(e) = slot.transport.connect(&remote, role, now) {
                            tracing::warn!(%transport, error = %e, "DTLS setup refused");
                        }
                        slot.wake.notify_one();
                    }
                    st.drain(&transport, now);
                }
                Command::RestartIce { transport, ufrag, password } => {
                    if let Some(slot) = state.borrow_mut().transports.get_mut(&transport) {
                        slot.transport.restart_ice(ufrag, password);
                    }
                }
                Command::Close { transport } => state.borrow_mut().close(&transport, now),
                Command::Routes { room, mut table } => {
                    let mut st = state.borrow_mut();
                    let reset = st.data_routers.entry(room.clone()).or_default().update(table.take_data_routes());
                    for (transport, stream_id) in reset {
                        if let Some(slot) = st.transports.get_mut(&transport) {
                            slot.transport.close_data_stream(stream_id, now);
                            slot.wake.notify_one();
                        }
                        st.drain(&transport, now);
                    }
                    let out = st.routers.entry(room.clone()).or_default().update(table, now);
                    st.refresh_handles(&room);
                    for o in out {
                        st.deliver(o, now);
                    }
                }
                Command::CloseRoom { room } => {
                    let mut st = state.borrow_mut();
                    let ids: Vec<TransportId> = st.transports.iter().filter(|(_, s)| s.room == room).map(|(t, _)| t.clone()).collect();
                    for t in ids {
                        st.close(&t, now);
                    }
                    st.routers.remove(&room);
                    st.data_routers.remove(&room);
                    lock(&st.counters.media).remove(&room);
                }
                Command::AttachTcp { transport, handoff } => attach_tcp(&state, transport, *handoff),
                Command::Tap { room, tap } => {
                    let mut st = state.borrow_mut();
                    match tap {
                        Some(tap) => st.routers.entry(room).or_default().set_tap(Some(tap)),
                        None => {
                            if let Some(router) = st.routers.get_mut(&room) {
                                router.set_tap(None);
                            }
                        }
                    }
                }
                Command::Keyframe { room, producer } => {
                    let mut st = state.borrow_mut();
                    let out = st.routers.get_mut(&room).map(|r| r.request_producer_keyframe(&producer, now)).unwrap_or_default();
                    for o in out {
                        st.deliver(o, now);
                    }
                }
            }
            // Packets are forwarded by the receive loop that got them, so nothing should wait
            // here; but no packet or copy outlives the step that made it.
            state.borrow_mut().finish_batch(Instant::now());
        }
    });
}

/// Receives datagrams for one transport and drives its timers, until it is closed.
async fn receive_loop(
    state: Rc<RefCell<MediaThread>>,
    id: TransportId,
    socket: Option<Rc<AsyncFd<std::net::UdpSocket>>>,
    port: Option<u16>,
    wake: Rc<Notify>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = {
            let st = state.borrow();
            match st.transports.get(&id) {
                // Closed by the engine: idle until the control plane removes it.
                Some(slot) if slot.closed => None,
                Some(slot) => slot.transport.poll_timeout(),
                None => {
                    // The slot (and its socket handle) is gone; dropping ours closes the
                    // socket, and only then may the port be bound again.
                    drop(socket);
                    if let Some(port) = port {
                        lock(&st.ports).release(port);
                    }
                    return;
                }
            }
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let readable = async {
            match &socket {
                Some(socket) => socket.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            readable = readable => {
                let Ok(mut ready) = readable else { continue };
                let mut st = state.borrow_mut();
                // Everything already queued makes one batch, so a frame's packets leave each
                // consumer's transport in one send (see `egress`). Bounded, so the first
                // copies are not held back for long.
                for _ in 0..RECEIVE_BATCH {
                    match ready.get_inner().recv_from(&mut buf) {
                        Ok((len, from)) => st.receive(&id, from, &buf[..len]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            ready.clear_ready();
                            break;
                        }
                        Err(_) => break,
                    }
                }
                st.finish_batch(Instant::now());
            }
            _ = sleep => {
                let now = Instant::now();
                let mut st = state.borrow_mut();
                if let Some(slot) = st.transports.get_mut(&id) {
                    slot.transport.handle_timeout(now);
                }
                st.drain(&id, now);
                st.finish_batch(now);
            }
            _ = wake.notified() => {}
        }
    }
}

/// Makes an identified ICE-TCP connection a leg of its transport, within the per-transport
/// cap, and starts its task.
fn attach_tcp(state: &Rc<RefCell<MediaThread>>, transport: TransportId, handoff: Handoff) {
    let mut st = state.borrow_mut();
    let settings = st.tcp;
    let Some(slot) = st.transports.get_mut(&transport) else {
        // Closed while the connection was on its way.
        st.counters.drop_for(Refusal::UnknownUfrag.as_str());
        return;
    };
    slot.tcp.retain(|leg| !leg.is_closed());
    if slot.closed || slot.tcp.len() >= settings.per_transport {
        st.counters.drop_for("tcp_too_many_for_transport");
        return;
    }
    let Handoff { stream, peer, first, decoder, accepted, permit } = handoff;
    let stream = match stream.set_nonblocking(true).and_then(|_| tokio::net::TcpStream::from_std(stream)) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register an ICE-TCP connection");
            return;
        }
    };
    let leg = Rc::new(TcpLeg::new(peer, stream, settings.send_queue_limit, permit));
    slot.tcp.push(leg.clone());
    drop(st);
    let deadline = accepted + settings.first_request_timeout;
    tokio::task::spawn_local(tcp_loop(state.clone(), transport, leg, first, decoder, deadline));
}

/// Reads one ICE-TCP connection's frames into its transport and writes out what queued up,
/// until either side closes it. A connection that has not passed an ICE check by `deadline`
/// is closed.
async fn tcp_loop(
    state: Rc<RefCell<MediaThread>>,
    id: TransportId,
    leg: Rc<TcpLeg>,
    first: Vec<u8>,
    mut decoder: crate::media::ice_tcp::FrameDecoder,
    deadline: Instant,
) {
    let mut buf = vec![0u8; tcp::READ_BUFFER];
    let mut validated = false;
    let mut pending_first = Some(first);
    loop {
        {
            let now = Instant::now();
            let mut st = state.borrow_mut();
            if let Some(frame) = pending_first.take() {
                st.receive(&id, leg.peer, &frame);
            }
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => st.receive(&id, leg.peer, frame),
                    Ok(None) => break,
                    Err(_) => {
                        st.counters.drop_for(Refusal::FrameTooLarge.as_str());
                        leg.close();
                        break;
                    }
                }
            }
            match st.transports.get(&id) {
                Some(slot) if !slot.closed => validated |= slot.transport.is_valid_tuple(leg.peer),
                // The transport is gone, or closed by the engine: so is the connection.
                _ => leg.close(),
            }
            st.finish_batch(now);
        }
        if leg.is_closed() {
            break;
        }
        let expiry = async {
            if validated {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(deadline.into()).await;
        };
        tokio::select! {
            readable = leg.stream.readable() => {
                if readable.is_err() || !matches!(tcp::read_into(&leg, &mut buf, &mut decoder), Ok(true)) {
                    break;
                }
            }
            writable = leg.stream.writable(), if leg.has_queued() => {
                if writable.is_err() || !leg.flush() {
                    break;
                }
            }
            _ = leg.wake.notified() => {}
            _ = expiry => {
                state.borrow().counters.drop_for("tcp_no_valid_check");
                break;
            }
        }
    }
    // What is queued (a close_notify, say) goes if the socket takes it now.
    leg.flush();
    leg.close();
    if let Some(slot) = state.borrow_mut().transports.get_mut(&id) {
        slot.tcp.retain(|l| !Rc::ptr_eq(l, &leg));
    }
}

impl MediaThread {
    /// One datagram arrived on a transport's socket.
    fn receive(&mut self, id: &TransportId, from: SocketAddr, datagram: &[u8]) {
        let now = Instant::now();
        self.counters.packets_received.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_received.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        if let Some(slot) = self.transports.get_mut(id) {
            slot.transport.handle_datagram(from, datagram, now);
        }
        self.drain(id, now);
    }

    /// Acts on everything a transport has to say.
    fn drain(&mut self, id: &TransportId, now: Instant) {
        loop {
            let Some(slot) = self.transports.get_mut(id) else { return };
            for reason in slot.transport.drops.drain(..) {
                self.counters.drop_for(reason.as_str());
            }
            let Some(output) = slot.transport.poll_output() else { return };
            // Cheap next to what each output costs (a datagram, a decryption).
            let room = slot.room.clone();
            match output {
                Output::Transmit { to, data } => slot.transmit(to, &data, &self.counters),
                // Forwarded with the rest of the batch ([`MediaThread::finish_batch`]).
                Output::Rtp(packet) => self.arrived.push((room, id.clone(), packet)),
                Output::Data(message) => self.forward_data(&room, id, message, now),
                Output::Rtcp(packet) => {
                    let out = self.routers.get_mut(&room).map(|r| r.on_rtcp(id, &packet, now)).unwrap_or_default();
                    for o in out {
                        self.deliver(o, now);
                    }
                }
                Output::Connected => {
                    tracing::debug!(transport = %id, "transport connected");
                    // The router is made here if the room has no table yet, so it knows the
                    // transport is connected when its first consumer comes.
                    let out = self.routers.entry(room).or_default().on_transport_connected(id, now);
                    for o in out {
                        self.deliver(o, now);
                    }
                }
                Output::Closed { code, reason } => {
                    tracing::info!(transport = %id, %code, %reason, "transport closed by the media engine");
                    let _ = self.notices.send(EngineNotice::TransportClosed { room, transport: id.clone(), code, reason });
                    if let Some(slot) = self.transports.get_mut(id) {
                        slot.closed = true;
                        slot.wake.notify_one();
                    }
                }
            }
        }
    }

    /// Forwards the RTP packets that arrived in this batch and sends every copy: see
    /// [`MediaThread::forward`]. Called at the end of each step of a media thread.
    fn finish_batch(&mut self, now: Instant) {
        let mut arrived = std::mem::take(&mut self.arrived);
        // Nearly always one transport's packets (a receive batch is one socket's).
        let mut start = 0;
        while start < arrived.len() {
            let (room, from) = (&arrived[start].0, &arrived[start].1);
            let end = start + arrived[start..].iter().take_while(|(r, f, _)| r == room && f == from).count();
            let packets: Vec<&[u8]> = arrived[start..end].iter().map(|(_, _, p)| &p[..]).collect();
            self.forward(room, from, &packets, now);
            start = end;
        }
        arrived.clear();
        self.arrived = arrived;
        self.flush_sends();
    }

    /// Where packets are forwarded: the room's router rewrites one copy per consumer, and
    /// each is encrypted in place (same thread: same room) and added to its transport's
    /// batch. The router hands a consumer all its copies in a row, so a transport's batch is
    /// sent as soon as the router moves on to another transport: one send for a frame's
    /// packets, and no consumer waits for the others' copies. No allocation per copy.
    fn forward(&mut self, room: &RoomId, from: &TransportId, packets: &[&[u8]], now: Instant) {
        let MediaThread { routers, transports, counters, sending, segmentation, .. } = self;
        let Some(router) = routers.get_mut(room) else { return };
        let mut previous: Option<usize> = None;
        let copies = router.route_rtp_batch(from, packets, now, &mut |handle, transport, copy| {
            let Some(handle) = handle.or_else(|| transports.handle(transport)) else { return };
            if let Some(previous) = previous.filter(|p| *p != handle) {
                if let Some(slot) = transports.at_mut(previous) {
                    send_pending(slot, segmentation, counters);
                }
            }
            previous = Some(handle);
            let Some(slot) = transports.at_mut(handle) else { return };
            let Some(to) = slot.transport.seal_rtp(copy) else { return };
            // Over ICE-TCP each copy is framed into the connection's queue at once: TCP
            // coalesces by itself, and GSO is for datagrams.
            if let Some(leg) = slot.tcp_leg(to) {
                if send_on_leg(leg, copy, counters) {
                    counters.packets_sent.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_sent.fetch_add(copy.len() as u64, Ordering::Relaxed);
                }
                return;
            }
            if slot.pending.is_empty() {
                sending.push(handle);
            } else if !slot.pending.admits(copy.len(), to) {
                send_pending(slot, segmentation, counters);
            }
            let admitted = slot.pending.push(copy, to);
            debug_assert!(admitted, "an empty batch admits any copy");
        });
        counters.packets_forwarded.fetch_add(copies as u64, Ordering::Relaxed);
    }

    /// Copies a data channel message to its DataProducer's DataConsumers, each on its own
    /// stream of its transport (same thread: same room). A consumer that cannot take it
    /// (association not up, send buffer full) misses it, as in mediasoup; drops are counted.
    fn forward_data(&mut self, room: &RoomId, from: &TransportId, message: SctpMessage, now: Instant) {
        let Some(router) = self.data_routers.get_mut(room) else {
            self.counters.drop_for(crate::media::data_router::DataDrop::NoRoute.as_str());
            return;
        };
        let targets = match router.route(from, message.stream_id, now) {
            Ok(targets) => targets.to_vec(),
            Err(drop) => return self.counters.drop_for(drop.as_str()),
        };
        for target in targets {
            let Some(slot) = self.transports.get_mut(&target.transport_id) else { continue };
            match slot.transport.send_data(target.stream_id, message.ppid, &message.payload, target.reliability(), now) {
                Ok(()) => {
                    self.counters.data_messages_forwarded.fetch_add(1, Ordering::Relaxed);
                    // SCTP armed a retransmission timer: the transport's loop must see it.
                    slot.wake.notify_one();
                }
                Err(drop) => self.counters.drop_for(drop.as_str()),
            }
            self.drain(&target.transport_id, now);
        }
    }

    /// Tells the control plane what the routers noticed (scores, layer changes).
    fn report_media_events(&mut self) {
        for (room, router) in self.routers.iter_mut() {
            let events = router.drain_events();
            if !events.is_empty() {
                let _ = self.notices.send(EngineNotice::Media { room: room.clone(), events });
            }
        }
    }

    /// Sends every transport's batch of forwarded copies.
    fn flush_sends(&mut self) {
        let MediaThread { transports, counters, sending, segmentation, .. } = self;
        for handle in sending.drain(..) {
            if let Some(slot) = transports.at_mut(handle) {
                send_pending(slot, segmentation, counters);
                slot.pending.shrink(BATCH_BUFFER_KEPT);
            }
        }
    }

    /// Encrypts and sends a routed packet on its transport (same thread: same room).
    fn deliver(&mut self, out: Outgoing, now: Instant) {
        let Some(slot) = self.transports.get_mut(&out.transport) else { return };
        let sent = if out.rtcp { slot.transport.send_rtcp(&out.packet) } else { slot.transport.send_rtp(&out.packet) };
        if sent {
            self.drain(&out.transport, now);
        }
    }

    /// Gives the room's router the current transport handles.
    fn refresh_handles(&mut self, room: &RoomId) {
        let MediaThread { routers, transports, .. } = self;
        if let Some(router) = routers.get_mut(room) {
            router.set_transport_handles(&|id| transports.handle(id));
        }
    }

    fn close(&mut self, id: &TransportId, now: Instant) {
        if let Some(mut slot) = self.transports.remove(id) {
            // Before the handle can be reused by another transport.
            self.refresh_handles(&slot.room);
            if let Some(router) = self.routers.get_mut(&slot.room) {
                router.on_transport_closed(id);
            }
            slot.transport.close(now);
            while let Some(output) = slot.transport.poll_output() {
                if let Output::Transmit { to, data } = output {
                    slot.transmit(to, &data, &self.counters);
                }
            }
            slot.wake.notify_one();
            for leg in &slot.tcp {
                leg.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::peer::TestPeer;
    use std::time::Duration;

    fn engine(port_min: u16, port_max: u16) -> (Arc<UdpEngine>, mpsc::UnboundedReceiver<EngineNotice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = EngineConfig {
            listen_ip: [127, 0, 0, 1].into(),
            announced_ip: [127, 0, 0, 1].into(),
            port_min,
            port_max,
            threads: 2,
            timeouts: TransportTimeouts::default(),
            tcp_port: Some(0),
            tcp_limits: TcpLimits::default(),
            protocols: ProtocolDefaults::default(),
        };
        (UdpEngine::start(config, tx).unwrap(), rx)
    }

    #[test]
    fn only_the_newest_queued_table_of_a_room_is_installed() {
        // Tables told apart by their number of streams: none, or a video call's.
        let call = crate::testing::video_call();
        let routes = |room: &str, streams: usize| Command::Routes {
            room: RoomId::from(room),
            table: if streams == 0 { ForwardingTable::default() } else { call.rooms.forwarding_table(&call.room).unwrap() },
        };
        let mut queue = CommandQueue::default();
        queue.push(routes("a", 0));
        queue.push(routes("b", 0));
        queue.push(Command::Close { transport: TransportId::from("t") });
        queue.push(routes("a", 0));
        queue.push(routes("a", 1));
        let mut seen = Vec::new();
        while let Some(command) = queue.pop() {
            seen.push(match command {
                Command::Routes { room, table } => format!("{room}:{}", table.streams().count()),
                Command::Close { transport } => format!("close {transport}"),
                _ => "other".into(),
            });
        }
        // Order kept; a's first two tables skipped, b's (not replaced) installed.
        let newest = format!("a:{}", call.rooms.forwarding_table(&call.room).unwrap().streams().count());
        assert_eq!(seen, vec!["b:0".to_string(), "close t".into(), newest]);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_peer_completes_ice_and_dtls_with_a_transport_over_udp() {
        let (engine, _notices) = engine(46000, 46009);
        let room = RoomId::from("r");
        let transport = TransportId::from("t1");
        let network = engine.open_transport(&room, &transport, &TransportProtocols::default()).unwrap();
        assert_eq!(network.addresses[0].ip, IpAddr::from([127, 0, 0, 1]));
        assert!((46000..=46009).contains(&network.addresses[0].port));
        assert_eq!(network.ice_username_fragment.len(), 16);
        assert_eq!(network.fingerprints[0].algorithm, "sha-256");

        let mut peer = TestPeer::new(&network).await.unwrap();
        engine.connect_transport(&room, &transport, &peer.dtls_parameters(), DtlsRole::Server).unwrap();
        peer.connect(Duration::from_secs(5)).await.unwrap();
        assert!(peer.is_connected());
        // Media with no route is received, decrypted and dropped, not echoed.
        peer.send_rtp(&[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7, 1, 2, 3]).await.unwrap();
        assert_eq!(peer.recv_rtp(Duration::from_millis(200)).await.unwrap(), None);
        assert!(engine.counters.packets_received.load(Ordering::Relaxed) >= 3);
    }

    #[tokio::test]
    async fn a_peer_completes_ice_and_dtls_over_tcp_on_the_shared_port_with_a_passive_candidate() {
        let (engine, _notices) = engine(46400, 46409);
        let room = RoomId::from("r");
        let tcp_port = engine.tcp_port().expect("ICE-TCP is on");
        let networks: Vec<TransportNetwork> =
            ["t1", "t2"].iter().map(|t| engine.open_transport(&room, &TransportId::from(*t), &TransportProtocols::default()).unwrap()).collect();
        for network in &networks {
            let protocols: Vec<(IceProtocol, u16)> = network.addresses.iter().map(|a| (a.protocol, a.port)).collect();
            assert_eq!(protocols[1], (IceProtocol::Tcp, tcp_port), "UDP first, then the shared TCP port: {protocols:?}");
        }
        // Both transports' peers reach their own transport on the one port, told apart by ufrag.
        let mut peers = Vec::new();
        for (network, id) in networks.iter().zip(["t1", "t2"]) {
            let mut peer = TestPeer::over(network, IceProtocol::Tcp).await.unwrap();
            engine.connect_transport(&room, &TransportId::from(id), &peer.dtls_parameters(), DtlsRole::Server).unwrap();
            peer.connect(Duration::from_secs(5)).await.unwrap();
            assert!(peer.is_connected());
            peers.push(peer);
        }
        assert_eq!(engine.counters.tcp.connections_open.load(Ordering::Relaxed), 2);
        // A peer that goes away takes its connection with it.
        peers.pop();
        for _ in 0..100 {
            if engine.counters.tcp.connections_open.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(engine.counters.tcp.connections_open.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_transport_on_tcp_only_takes_no_udp_port_and_one_on_udp_only_is_not_reachable_over_tcp() {
        let (engine, _notices) = engine(46410, 46410);
        let room = RoomId::from("r");
        let tcp_only = TransportProtocols { enable_udp: Some(false), ..Default::default() };
        let udp_only = TransportProtocols { enable_tcp: Some(false), ..Default::default() };
        let network = engine.open_transport(&room, &TransportId::from("tcp"), &tcp_only).unwrap();
        assert_eq!(network.addresses.iter().map(|a| a.protocol).collect::<Vec<_>>(), vec![IceProtocol::Tcp]);
        assert_eq!(engine.ports_in_use(), 0, "no UDP port held");
        let mut peer = TestPeer::over(&network, IceProtocol::Tcp).await.unwrap();
        engine.connect_transport(&room, &TransportId::from("tcp"), &peer.dtls_parameters(), DtlsRole::Server).unwrap();
        peer.connect(Duration::from_secs(5)).await.expect("connects over TCP with no socket of its own");
        // The one UDP port is free for a UDP-only transport, whose ufrag TCP cannot reach.
        let network = engine.open_transport(&room, &TransportId::from("udp"), &udp_only).unwrap();
        assert_eq!(network.addresses.iter().map(|a| a.protocol).collect::<Vec<_>>(), vec![IceProtocol::Udp]);
        let tcp = ListenAddress { ip: [127, 0, 0, 1].into(), port: engine.tcp_port().unwrap(), protocol: IceProtocol::Tcp };
        let stranger = TransportNetwork { addresses: vec![tcp], ..network.clone() };
        let mut peer = TestPeer::over(&stranger, IceProtocol::Tcp).await.unwrap();
        assert!(peer.connect(Duration::from_millis(500)).await.is_err(), "its ufrag is not looked up over TCP");
        let preferred = TransportProtocols { prefer_tcp: Some(true), ..Default::default() };
        let error = engine.open_transport(&room, &TransportId::from("both"), &preferred).unwrap_err();
        assert_eq!(error, EngineError::PortsExhausted { min: 46410, max: 46410 }, "TCP and UDP asked, and no UDP port left");
        let neither = TransportProtocols { enable_udp: Some(false), enable_tcp: Some(false), ..Default::default() };
        let error = engine.open_transport(&room, &TransportId::from("none"), &neither).unwrap_err();
        assert_eq!((error.code(), error.http_status()), ("NO_TRANSPORT_PROTOCOL", 400));
    }

    #[tokio::test]
    async fn ports_run_out_with_a_clear_error_and_come_back_on_close() {
        let (engine, _notices) = engine(46100, 46101);
        let room = RoomId::from("r");
        engine.open_transport(&room, &TransportId::from("a"), &TransportProtocols::default()).unwrap();
        engine.open_transport(&room, &TransportId::from("b"), &TransportProtocols::default()).unwrap();
        let err = engine.open_transport(&room, &TransportId::from("c"), &TransportProtocols::default()).unwrap_err();
        assert_eq!(err, EngineError::PortsExhausted { min: 46100, max: 46101 });
        assert_eq!((err.code(), err.http_status()), ("PORTS_EXHAUSTED", 503));
        engine.close_transport(&room, &TransportId::from("a"));
        wait_for_ports(&engine, 1).await;
        engine.open_transport(&room, &TransportId::from("c"), &TransportProtocols::default()).unwrap();
        engine.close_room(&room);
        wait_for_ports(&engine, 0).await;
    }

    /// Ports return once the media thread has dropped the socket: shortly after close.
    async fn wait_for_ports(engine: &UdpEngine, expected: usize) {
        for _ in 0..100 {
            if engine.ports_in_use() == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("ports in use stayed at {} (expected {expected})", engine.ports_in_use());
    }

    #[tokio::test]
    async fn a_shutting_down_engine_refuses_new_transports() {
        let (engine, _notices) = engine(46200, 46201);
        engine.shut_down();
        assert_eq!(engine.open_transport(&RoomId::from("r"), &TransportId::from("t"), &TransportProtocols::default()).unwrap_err(), EngineError::ShuttingDown);
    }

    #[tokio::test]
    async fn a_failed_dtls_handshake_is_reported_as_a_closed_transport() {
        let (engine, mut notices) = engine(46300, 46301);
        let room = RoomId::from("r");
        let transport = TransportId::from("t");
        let network = engine.open_transport(&room, &transport, &TransportProtocols::default()).unwrap();
        let mut peer = TestPeer::new(&network).await.unwrap();
        // The worker expects another certificate than the peer's.
        let mut wrong = peer.dtls_parameters();
        wrong.fingerprints[0].value = ["01"; 32].join(":");
        engine.connect_transport(&room, &transport, &wrong, DtlsRole::Server).unwrap();
        assert!(peer.connect(Duration::from_secs(2)).await.is_err());
        let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv()).await.unwrap().unwrap();
        let EngineNotice::TransportClosed { transport: closed, code, .. } = notice else { panic!("{notice:?}") };
        assert_eq!(closed, transport);
        assert_eq!(code, crate::room::TransportCloseCode::DtlsFingerprintMismatch);
    }
}
