//! Starting and stopping a whole worker in-process: media engine, control plane and REST API.
//! The `fanout-worker` binary, signalling's embedded mode and end-to-end tests all start a
//! worker through [`start`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::control::{ControlPlane, RandomIds};
use crate::engine::EngineError;
use crate::http::{self, ApiState, HttpLimits};
use crate::media::ice_tcp::TcpLimits;
use crate::room::ProtocolDefaults;
use crate::media::transport::TransportTimeouts;
use crate::media::udp::{EngineConfig, UdpEngine};
use crate::record::Recorder;
use crate::room::Quotas;

/// Everything a worker needs to run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the REST API listens (`0.0.0.0:3000` in a pod; port 0 picks a free one).
    pub http_addr: SocketAddr,
    /// Address the UDP sockets bind to.
    pub listen_ip: IpAddr,
    /// Address in ICE candidates.
    pub announced_ip: IpAddr,
    /// UDP port range for transports (inclusive).
    pub rtc_ports: (u16, u16),
    /// The ICE-TCP port all transports share (0: one the system picks, as tests do); `None`
    /// turns ICE-TCP off.
    pub rtc_tcp_port: Option<u16>,
    /// Media threads (rooms are spread over them).
    pub media_threads: usize,
    /// Bearer token of the REST API; `None` leaves it open (development only).
    pub api_token: Option<String>,
    /// Timeouts, quotas and size limits (the defaults suit production).
    pub limits: WorkerLimits,
}

/// What a worker allows and for how long: the `fanout-worker` flags of the same names set
/// them, and `docs/worker-api.md` documents what clients see when they are reached.
#[derive(Debug, Clone, Default)]
pub struct WorkerLimits {
    /// When transports close by themselves: ICE timeout (`--ice-timeout-seconds`), consent,
    /// DTLS setup.
    pub transport_timeouts: TransportTimeouts,
    /// The REST server's body size, timeouts and connection cap.
    pub http: HttpLimits,
    /// What one peer may hold, how much a room may list, how long an empty room stays open.
    pub quotas: Quotas,
    /// ICE-TCP's connection caps, first-check timeout and send queue.
    pub tcp: TcpLimits,
    /// Which protocols a transport gets unless its request says (`--enable-udp`,
    /// `--enable-tcp`, `--prefer-tcp`).
    pub protocols: ProtocolDefaults,
    /// Where recordings are written (`--recording-dir`); `None`: the worker does not record
    /// and answers 503 `RECORDING_DISABLED`.
    pub recording_dir: Option<std::path::PathBuf>,
}

/// How often empty rooms are looked for: often enough that a room closes within a quarter
/// of its timeout past it (a second at most), rarely enough to cost nothing.
fn empty_room_sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

impl WorkerConfig {
    /// A worker on loopback with an OS-chosen HTTP port, for local runs and tests.
    pub fn loopback(rtc_ports: (u16, u16)) -> Self {
        WorkerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_ip: [127, 0, 0, 1].into(),
            announced_ip: [127, 0, 0, 1].into(),
            rtc_ports,
            rtc_tcp_port: Some(0),
            media_threads: 1,
            api_token: None,
            limits: WorkerLimits::default(),
        }
    }
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the media engine: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot record to {dir}: {source}; give --recording-dir a writable directory (a mounted volume)")]
    Recording { dir: std::path::PathBuf, source: std::io::Error },
}

/// A worker running in this process.
pub struct RunningWorker {
    /// Where its REST API is.
    pub http_addr: SocketAddr,
    pub control: Arc<ControlPlane>,
    pub engine: Arc<UdpEngine>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningWorker {
    /// Base URL of the REST API, for [`crate::client::WorkerClient`].
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Graceful shutdown: no new transports or rooms, every room closed (clients' transports
    /// close and every event stream ends), then the HTTP server stops.
    pub async fn shutdown(mut self) {
        self.engine.shut_down();
        self.control.shutdown();
        // Blocking, but brief: finalising writes each file's cues and duration.
        let control = self.control.clone();
        let _ = tokio::task::spawn_blocking(move || control.finish_recordings(Duration::from_secs(10))).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server).await;
    }
}

/// Starts a worker. Needs a tokio runtime.
pub async fn start(config: WorkerConfig) -> Result<RunningWorker, StartError> {
    let (notices_tx, notices_rx) = mpsc::unbounded_channel();
    let engine = UdpEngine::start(
        EngineConfig {
            listen_ip: config.listen_ip,
            announced_ip: config.announced_ip,
            port_min: config.rtc_ports.0,
            port_max: config.rtc_ports.1,
            threads: config.media_threads.max(1),
            timeouts: config.limits.transport_timeouts,
            tcp_port: config.rtc_tcp_port,
            tcp_limits: config.limits.tcp,
            protocols: config.limits.protocols,
        },
        notices_tx,
    )?;
    let mut control = ControlPlane::with_quotas(engine.clone(), RandomIds::default(), config.limits.quotas);
    if let Some(dir) = &config.limits.recording_dir {
        let recorder = Recorder::start(dir.clone(), engine.clone()).map_err(|source| StartError::Recording { dir: dir.clone(), source })?;
        tracing::info!(dir = %dir.display(), "recording enabled");
        control = control.with_recorder(recorder);
    }
    let control = Arc::new(control);
    control.spawn_notice_handler(notices_rx);
    control.spawn_empty_room_sweeper(empty_room_sweep_interval(config.limits.quotas.empty_room_timeout));
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let state = ApiState::new(control.clone(), config.api_token.clone()).with_limits(config.limits.http);
    let server = tokio::spawn(http::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    tracing::info!(%http_addr, announced_ip = %config.announced_ip, ports = ?config.rtc_ports, tcp_port = ?engine.tcp_port(), threads = config.media_threads, "worker started");
    Ok(RunningWorker { http_addr, control, engine, stop: Some(stop), server })
}
