//! The `fanout-worker` binary: Fanout's SFU. Flags mirror the environment (`FANOUT_*`), which
//! is how the operator configures worker pods.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fanout_worker::defaults;
use fanout_worker::http::HttpLimits;
use fanout_worker::logging::LogFormat;
use fanout_worker::room::ProtocolDefaults;
use fanout_worker::room::Quotas;
use fanout_worker::server::{start, WorkerConfig, WorkerLimits};

/// Fanout's SFU worker: WebRTC media for mediasoup-client browsers, with an internal REST API.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TCP port of the REST API and /healthz.
    #[arg(long, env = "FANOUT_HTTP_PORT", default_value_t = defaults::HTTP_PORT)]
    http_port: u16,
    /// IP the REST API and the UDP sockets listen on.
    #[arg(long, env = "FANOUT_LISTEN_IP", default_value = "0.0.0.0")]
    listen_ip: IpAddr,
    /// First UDP port for WebRTC transports.
    #[arg(long, env = "FANOUT_RTC_MIN_PORT", default_value_t = defaults::RTC_MIN_PORT)]
    rtc_min_port: u16,
    /// Last UDP port for WebRTC transports (inclusive).
    #[arg(long, env = "FANOUT_RTC_MAX_PORT", default_value_t = defaults::RTC_MAX_PORT)]
    rtc_max_port: u16,
    /// TCP port for ICE-TCP, shared by all transports: clients whose networks block UDP
    /// connect here.
    #[arg(long, env = "FANOUT_RTC_TCP_PORT", default_value_t = defaults::RTC_TCP_PORT)]
    rtc_tcp_port: u16,
    /// Listen on the ICE-TCP port and offer TCP candidates (`false`: UDP only).
    #[arg(long, env = "FANOUT_ENABLE_TCP", default_value_t = true, action = clap::ArgAction::Set)]
    enable_tcp: bool,
    /// Give transports a UDP candidate unless their request says otherwise (`enableUdp`).
    #[arg(long, env = "FANOUT_ENABLE_UDP", default_value_t = true, action = clap::ArgAction::Set)]
    enable_udp: bool,
    /// Put the TCP candidate before the UDP one unless a request says otherwise
    /// (`preferUdp`/`preferTcp`).
    #[arg(long, env = "FANOUT_PREFER_TCP", default_value_t = false, action = clap::ArgAction::Set)]
    prefer_tcp: bool,
    /// ICE-TCP connections open at once; one more is closed at once.
    #[arg(long, env = "FANOUT_RTC_TCP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rtc_tcp_max_connections: u64,
    /// IP announced to browsers in ICE candidates (the node's address in Kubernetes).
    #[arg(long, env = "FANOUT_ANNOUNCED_IP")]
    announced_ip: Option<IpAddr>,
    /// File to read the announced IP from, once it has content (the operator fills it for
    /// `NodeExternalIP` pools); the worker waits for it before it starts.
    #[arg(long, env = "FANOUT_ANNOUNCED_IP_FILE")]
    announced_ip_file: Option<PathBuf>,
    /// Bearer token required on the REST API.
    #[arg(long, env = "FANOUT_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Media threads (default: one per core).
    #[arg(long, env = "FANOUT_MEDIA_THREADS")]
    media_threads: Option<usize>,
    /// Seconds a new transport waits for its first valid ICE check before it is closed
    /// (ICE_TIMEOUT) and its port returns to the pool.
    #[arg(long, env = "FANOUT_ICE_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ice_timeout_seconds: u64,
    /// Largest REST request body in bytes; a larger one is refused with 413 PAYLOAD_TOO_LARGE.
    #[arg(long, env = "FANOUT_HTTP_BODY_LIMIT_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    http_body_limit_bytes: u64,
    /// Seconds a REST client may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, env = "FANOUT_HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    http_header_timeout_seconds: u64,
    /// Seconds a REST request may take from its headers to its answer, body included (408
    /// REQUEST_TIMEOUT past it).
    #[arg(long, env = "FANOUT_HTTP_REQUEST_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    http_request_timeout_seconds: u64,
    /// REST connections served at once, event streams included; one more is answered 503
    /// TOO_MANY_CONNECTIONS.
    #[arg(long, env = "FANOUT_HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    http_max_connections: u64,
    /// Transports one peer may have open at once; one more is refused with 409
    /// TOO_MANY_TRANSPORTS.
    #[arg(long, env = "FANOUT_MAX_TRANSPORTS_PER_PEER", default_value_t = Quotas::default().transports_per_peer as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_transports_per_peer: u64,
    /// Producers one peer may have open at once (409 TOO_MANY_PRODUCERS past it).
    #[arg(long, env = "FANOUT_MAX_PRODUCERS_PER_PEER", default_value_t = Quotas::default().producers_per_peer as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_producers_per_peer: u64,
    /// Consumers one peer may have open at once (409 TOO_MANY_CONSUMERS past it).
    #[arg(long, env = "FANOUT_MAX_CONSUMERS_PER_PEER", default_value_t = Quotas::default().consumers_per_peer as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_consumers_per_peer: u64,
    /// Largest producer appData in bytes of JSON (413 APP_DATA_TOO_LARGE past it).
    #[arg(long, env = "FANOUT_MAX_APP_DATA_BYTES", default_value_t = Quotas::default().app_data_bytes as u64, value_parser = clap::value_parser!(u64).range(2..=1024 * 1024))]
    max_app_data_bytes: u64,
    /// Largest listing of a room (its peers and producers, sent to every joiner) in bytes of
    /// JSON (409 ROOM_FULL past it).
    #[arg(long, env = "FANOUT_MAX_ROOM_LISTING_BYTES", default_value_t = Quotas::default().room_listing_bytes as u64, value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    max_room_listing_bytes: u64,
    /// Seconds a room without peers stays open before the worker closes it; a room's own
    /// `emptyTimeoutSeconds` (PUT /v1/rooms/{room}) overrides it.
    #[arg(long, env = "FANOUT_EMPTY_ROOM_TIMEOUT_SECONDS", default_value_t = Quotas::default().empty_room_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(0..=30 * 86_400))]
    empty_room_timeout_seconds: u64,
    /// Directory recordings are written to (`<room>/<recording>/<producer>.webm`), usually a
    /// mounted volume; without it the worker does not record (503 RECORDING_DISABLED).
    #[arg(long, env = "FANOUT_RECORDING_DIR")]
    recording_dir: Option<std::path::PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "FANOUT_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fanout_worker::logging::init(args.log_format, &["fanout_worker"]);
    if !args.enable_udp && !args.enable_tcp {
        anyhow::bail!("--enable-udp=false and --enable-tcp=false leave transports no protocol: enable at least one");
    }
    if args.rtc_min_port > args.rtc_max_port {
        anyhow::bail!("--rtc-min-port ({}) is above --rtc-max-port ({})", args.rtc_min_port, args.rtc_max_port);
    }
    // One socket per transport: the usual soft limit of 1,024 open files would refuse
    // transports long before the port range or memory runs out.
    let ports = u64::from(args.rtc_max_port - args.rtc_min_port) + 1;
    match fanout_worker::os::raise_open_file_limit() {
        Some(limit) if limit < ports => tracing::warn!(
            limit,
            ports,
            "the open-file limit is below the RTC port range: transports past it will fail; raise the hard limit (ulimit -Hn, or the pod's runtime)"
        ),
        _ => {}
    }
    let announced_ip = announced_ip(&args).await?;
    if args.api_token.is_none() {
        tracing::warn!("no API token configured: anything that reaches the REST API can control rooms");
    }
    let threads = args.media_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let worker = start(WorkerConfig {
        http_addr: SocketAddr::new(args.listen_ip, args.http_port),
        listen_ip: args.listen_ip,
        announced_ip,
        rtc_ports: (args.rtc_min_port, args.rtc_max_port),
        rtc_tcp_port: args.enable_tcp.then_some(args.rtc_tcp_port),
        media_threads: threads,
        api_token: args.api_token.clone(),
        limits: limits(&args),
    })
    .await?;
    shutdown_signal().await;
    tracing::info!("shutting down: closing rooms");
    worker.shutdown().await;
    Ok(())
}

/// The limits the flags set.
fn limits(args: &Args) -> WorkerLimits {
    let mut limits = WorkerLimits::default();
    limits.transport_timeouts.ice.setup = Duration::from_secs(args.ice_timeout_seconds);
    limits.tcp.max_connections = args.rtc_tcp_max_connections as usize;
    limits.protocols = ProtocolDefaults { enable_udp: args.enable_udp, enable_tcp: args.enable_tcp, prefer_tcp: args.prefer_tcp };
    limits.http = HttpLimits {
        // Both bounded by the flags' ranges, far below usize::MAX.
        body_limit: args.http_body_limit_bytes as usize,
        header_read_timeout: Duration::from_secs(args.http_header_timeout_seconds),
        request_timeout: Duration::from_secs(args.http_request_timeout_seconds),
        max_connections: args.http_max_connections as usize,
    };
    // Each bounded by its flag's range, far below usize::MAX.
    limits.quotas = Quotas {
        transports_per_peer: args.max_transports_per_peer as usize,
        producers_per_peer: args.max_producers_per_peer as usize,
        consumers_per_peer: args.max_consumers_per_peer as usize,
        app_data_bytes: args.max_app_data_bytes as usize,
        room_listing_bytes: args.max_room_listing_bytes as usize,
        empty_room_timeout: Duration::from_secs(args.empty_room_timeout_seconds),
        ..Quotas::default()
    };
    limits.recording_dir = args.recording_dir.clone();
    limits
}

/// The announced IP: the flag, else the file (waited for), else the listen IP when it is a
/// concrete address.
async fn announced_ip(args: &Args) -> anyhow::Result<IpAddr> {
    if let Some(ip) = args.announced_ip {
        return Ok(ip);
    }
    if let Some(path) = &args.announced_ip_file {
        let mut waited = Duration::ZERO;
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let text = text.trim();
            if !text.is_empty() {
                return text.parse().with_context(|| format!("{} holds {text:?}, which is not an IP address", path.display()));
            }
            if waited.as_secs().is_multiple_of(30) {
                tracing::info!(path = %path.display(), "waiting for the announced IP to be written");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += Duration::from_secs(1);
        }
    }
    if !args.listen_ip.is_unspecified() {
        return Ok(args.listen_ip);
    }
    anyhow::bail!("set --announced-ip (or FANOUT_ANNOUNCED_IP): browsers need an address to send media to")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
