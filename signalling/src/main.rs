//! The `fanout-signalling` binary: flags and environment, logging, and the HTTP server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use fanout_signalling::auth::{JwtConfig, JwtKey, JwtVerifier};
use fanout_signalling::chat::ChatRules;
use fanout_signalling::embedded::{self, EmbeddedOptions};
use fanout_signalling::placement::{Placement, StaticPlacement};
use fanout_signalling::worker::{InProcessBackend, MediaBackend, WorkerBackend};
use fanout_signalling::worker_pool::parse_worker_urls;
use fanout_worker::client::WorkerClient;
use fanout_signalling::http::HttpLimits;
use fanout_signalling::ice_servers::{IceConfig, IceServer, IceTransportPolicy, TurnRest};
use fanout_signalling::replicas::{Lease, Replicas};
use fanout_signalling::{Limits, Signalling, app_replicated};

/// Algorithms of a public key file.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum PublicKeyAlgorithm {
    Rs256,
    Es256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlacementMode {
    Static,
    Kubernetes,
    Embedded,
}

/// Fanout's Socket.IO signalling server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on. Default: 127.0.0.1 in embedded mode (it hands out development
    /// tokens to anyone who can reach it), 0.0.0.0 otherwise.
    #[arg(long, env = "FANOUT_LISTEN_ADDR")]
    listen_addr: Option<IpAddr>,
    /// Embedded mode: allow --listen-addr to be other than loopback, so that other machines
    /// on your network can join calls, and take development tokens from /dev/token.
    #[arg(long, env = "FANOUT_DEV_ON_NETWORK", default_value_t = false)]
    dev_on_network: bool,
    /// Seconds a client may take to send a request's headers before its connection is closed.
    #[arg(long, env = "FANOUT_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    header_read_timeout_seconds: u64,
    /// Most connections open at once (websockets included); more are closed on arrival.
    #[arg(long, env = "FANOUT_MAX_CONNECTIONS", default_value_t = 50_000)]
    max_connections: usize,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Browser origins allowed to connect (comma-separated); empty or `*` allows any.
    #[arg(long, env = "FANOUT_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// HS256 secret shared with the application's token issuer.
    #[arg(
        long,
        env = "FANOUT_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key_file"
    )]
    jwt_secret: Option<String>,
    /// PEM public key of the token issuer, for RS256 or ES256 tokens.
    #[arg(long, env = "FANOUT_JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,
    /// Algorithm of --jwt-public-key-file.
    #[arg(long, env = "FANOUT_JWT_ALGORITHM", value_enum, default_value_t = PublicKeyAlgorithm::Rs256)]
    jwt_algorithm: PublicKeyAlgorithm,
    /// Required `aud` of tokens (unchecked when unset).
    #[arg(long, env = "FANOUT_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Required `iss` of tokens (unchecked when unset).
    #[arg(long, env = "FANOUT_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Base URLs of the media workers' REST API (static placement), comma-separated:
    /// `http://10.0.0.7:3000`, or several (`http://10.0.0.7:3000,http://10.0.0.8:3000`) to
    /// spread rooms over them by rendezvous hashing and move a failed worker's rooms to the
    /// others (clients get `room-migrated` and rejoin).
    #[arg(long, env = "FANOUT_WORKER_URL")]
    worker_url: Option<String>,
    /// Static placement with several workers: milliseconds between health probes of each
    /// worker (`GET /healthz`, also each probe's timeout). Two failed probes in a row, or a
    /// broken room event stream and a failed probe, mark a worker down.
    #[arg(long, env = "FANOUT_WORKER_PROBE_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    worker_probe_interval_ms: u64,
    /// Bearer token of the workers' REST API.
    #[arg(long, env = "FANOUT_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,
    /// Timeout of each worker call, in milliseconds.
    #[arg(long, env = "FANOUT_WORKER_TIMEOUT_MS", default_value_t = 5000)]
    worker_timeout_ms: u64,
    /// Roles allowed to publish, with static placement (comma-separated; empty: everyone).
    #[arg(long, env = "FANOUT_PUBLISHERS", value_delimiter = ',')]
    publishers: Vec<String>,
    /// Largest request payload in bytes. Engine.IO messages (websocket messages, polling
    /// bodies, the connect packet with its token) may be twice that, and larger ones close
    /// their connection before they are read.
    #[arg(long, env = "FANOUT_MAX_EVENT_BYTES", default_value_t = 64 * 1024)]
    max_event_bytes: usize,
    /// Request events per second allowed per connection (sustained).
    #[arg(long, env = "FANOUT_EVENTS_PER_SECOND", default_value_t = 50)]
    events_per_second: u32,
    /// Request events allowed per connection in a burst.
    #[arg(long, env = "FANOUT_EVENT_BURST", default_value_t = 100)]
    event_burst: u32,
    /// Longest chat message, in UTF-8 bytes after trimming.
    #[arg(long, env = "FANOUT_CHAT_MAX_BYTES", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..=32_768))]
    chat_max_bytes: u32,
    /// Chat messages a participant may send at once.
    #[arg(long, env = "FANOUT_CHAT_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    chat_burst: u32,
    /// Chat messages a participant may send per second after a burst.
    #[arg(long, env = "FANOUT_CHAT_MESSAGES_PER_SECOND", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    chat_messages_per_second: u32,
    /// Chat messages of a room kept and sent to each joiner (the most recent ones); 0 keeps none.
    #[arg(long, env = "FANOUT_CHAT_HISTORY", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    chat_history: u32,
    /// Roles that may delete anybody's chat message (comma-separated); authors may always
    /// delete their own.
    #[arg(long, env = "FANOUT_CHAT_MODERATOR_ROLES", value_delimiter = ',',
          default_values = ["teacher", "moderator", "admin"])]
    chat_moderator_roles: Vec<String>,
    /// Without --redis-url: most rooms whose chat history is kept in memory at once (a room's
    /// history also goes when its last participant leaves).
    #[arg(long, env = "FANOUT_CHAT_MAX_ROOMS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    chat_max_rooms: u32,
    /// With --redis-url: seconds a room's chat history is kept after its last message.
    #[arg(long, env = "FANOUT_CHAT_HISTORY_TTL_SECONDS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    chat_history_ttl_seconds: u64,
    /// Log format: text or json.
    #[arg(long, env = "FANOUT_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Where rooms live: `static` (--worker-url), `kubernetes` (Room objects placed by the
    /// operator), `embedded` (a worker in this process). Default: static with a worker URL,
    /// kubernetes inside a cluster, embedded otherwise.
    #[arg(long, env = "FANOUT_PLACEMENT", value_enum)]
    placement: Option<PlacementMode>,
    /// Redis shared by several signalling replicas (`redis://host:6379/`): relays reach
    /// sockets on the other replicas, and a replica that dies has its participants removed
    /// from their workers by the others. Without it this process is the only replica.
    #[arg(long, env = "FANOUT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// With --redis-url: how long a replica's lease lasts unrenewed. A replica that dies has
    /// its participants removed within this plus a third of it.
    #[arg(long, env = "FANOUT_REPLICA_LEASE_SECONDS", default_value_t = 15)]
    replica_lease_seconds: u64,
    /// Kubernetes placement: namespace of the Room objects.
    #[arg(long, env = "FANOUT_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Kubernetes placement: create a Room object for an unknown room id (deleted by the
    /// operator after --auto-create-empty-timeout-seconds without peers).
    #[arg(long, env = "FANOUT_AUTO_CREATE_ROOMS", default_value_t = false)]
    auto_create_rooms: bool,
    /// Kubernetes placement: how long an auto-created Room may stay empty.
    #[arg(long, env = "FANOUT_AUTO_CREATE_EMPTY_TIMEOUT_SECONDS", default_value_t = 300)]
    auto_create_empty_timeout_seconds: i64,
    /// Kubernetes placement: how long a join waits for the operator to place a room.
    #[arg(long, env = "FANOUT_PLACEMENT_WAIT_SECONDS", default_value_t = 10)]
    placement_wait_seconds: u64,
    /// Embedded mode: IP the in-process worker's UDP sockets use and announce to browsers.
    #[arg(long, env = "FANOUT_RTC_IP", default_value = "127.0.0.1")]
    rtc_ip: std::net::IpAddr,
    /// Embedded mode: first UDP port of the in-process worker.
    #[arg(long, env = "FANOUT_RTC_MIN_PORT", default_value_t = 40000)]
    rtc_min_port: u16,
    /// Embedded mode: last UDP port of the in-process worker.
    #[arg(long, env = "FANOUT_RTC_MAX_PORT", default_value_t = 40999)]
    rtc_max_port: u16,
    /// ICE servers handed to every client with its transports, as a JSON list of
    /// RTCIceServer (`[{"urls": "stun:stun.example.com:3478"}, {"urls":
    /// "turns:turn.example.com:443?transport=tcp", "username": "u", "credential": "p"}]`).
    #[arg(long, env = "FANOUT_ICE_SERVERS", hide_env_values = true, value_parser = parse_ice_servers)]
    ice_servers: Option<IceServerList>,
    /// TURN servers that take TURN REST API credentials made with --turn-secret (coturn's
    /// use-auth-secret), comma-separated: `turn:turn.example.com:3478?transport=tcp`.
    #[arg(long, env = "FANOUT_TURN_URLS", value_delimiter = ',')]
    turn_urls: Vec<String>,
    /// The secret shared with the TURN servers of --turn-urls (coturn's static-auth-secret).
    #[arg(long, env = "FANOUT_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// How long a TURN credential is valid, in seconds. Browsers refresh their relays with the
    /// same credential: keep it longer than calls last.
    #[arg(long, env = "FANOUT_TURN_CREDENTIAL_TTL_SECONDS", default_value_t = 86_400)]
    turn_credential_ttl_seconds: u64,
    /// `relay` makes browsers send media through the TURN servers only (iceTransportPolicy);
    /// unset, browsers choose (`all`).
    #[arg(long, env = "FANOUT_ICE_TRANSPORT_POLICY", value_enum)]
    ice_transport_policy: Option<PolicyArg>,
    /// Folder of the built web client (the demo page). Embedded mode always serves it; the
    /// other modes serve its files when the folder exists (the container image has them).
    #[arg(long, env = "FANOUT_WEB_ROOT", default_value = "web/dist")]
    web_root: PathBuf,
}

/// `--ice-transport-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PolicyArg {
    All,
    Relay,
}

/// The parsed `--ice-servers` (a newtype, so clap takes the whole list as one value).
#[derive(Debug, Clone)]
struct IceServerList(Vec<IceServer>);

fn parse_ice_servers(text: &str) -> Result<IceServerList, String> {
    serde_json::from_str(text)
        .map(IceServerList)
        .map_err(|e| format!("not a JSON list of {{urls, username?, credential?}} objects: {e}"))
}

/// The ICE servers of the flags, checked.
fn ice_config(args: &Args) -> anyhow::Result<IceConfig> {
    let turn = (!args.turn_urls.is_empty() || args.turn_secret.is_some()).then(|| TurnRest {
        urls: args.turn_urls.clone(),
        secret: args.turn_secret.clone().unwrap_or_default(),
        ttl_seconds: args.turn_credential_ttl_seconds,
    });
    let config = IceConfig {
        static_servers: args.ice_servers.clone().map(|l| l.0).unwrap_or_default(),
        turn,
        policy: args.ice_transport_policy.map(|p| match p {
            PolicyArg::All => IceTransportPolicy::All,
            PolicyArg::Relay => IceTransportPolicy::Relay,
        }),
    };
    config.validate().context("ICE server configuration")?;
    Ok(config)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Every connection holds a socket, and the usual soft limit of 1,024 open files would refuse
    // connections long before memory runs out.
    fanout_worker::os::raise_open_file_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fanout-signalling: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One readable line (with its causes) for the operator, not a backtrace.
            eprintln!("fanout-signalling: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    init_tracing(&args.log_format)?;
    let ice = ice_config(&args)?;

    let mode = args.placement.unwrap_or(if args.worker_url.is_some() {
        PlacementMode::Static
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        PlacementMode::Kubernetes
    } else {
        PlacementMode::Embedded
    });
    // Embedded mode (the local default): a worker in this process.
    let mut embedded = match mode {
        PlacementMode::Embedded => {
            let options = EmbeddedOptions {
                rtc_ip: args.rtc_ip,
                rtc_ports: (args.rtc_min_port, args.rtc_max_port),
                web_root: args.web_root.clone(),
            };
            Some(embedded::start_worker(&options, args.jwt_secret.clone()).await.context("starting the embedded worker")?)
        }
        _ => None,
    };
    let mut args = args;
    if let Some(embedded) = &mut embedded {
        tracing::warn!(
            "DEVELOPMENT MODE: no --worker-url and no Kubernetes, so a worker runs inside this process \
             and GET /dev/token hands out tokens to anyone. Never expose this to a network you do not trust."
        );
        if args.jwt_public_key_file.is_none() {
            args.jwt_secret = Some(embedded.jwt_secret.clone());
        } else {
            embedded.dev_tokens = embedded::DevTokens::Refused {
                algorithm: format!("{:?}", args.jwt_algorithm).to_uppercase(),
            };
        }
    }
    let verifier = JwtVerifier::new(&jwt_config(&args)?)
        .map_err(anyhow::Error::msg)
        .context("JWT configuration")?;
    // Static placement over several workers, whose backend reports to it.
    let mut pool: Option<StaticPlacement> = None;
    let (placement, worker_url): (Arc<dyn Placement>, String) = match (mode, &embedded) {
        (PlacementMode::Kubernetes, _) => {
            // kube uses rustls with ring: one process-wide provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default()
                .await
                .context("Kubernetes placement needs in-cluster configuration or a kubeconfig")?;
            let rooms = fanout_signalling::kube_placement::watch_rooms(client.clone(), &args.namespace).await;
            let creator: Option<Arc<dyn fanout_signalling::kube_placement::RoomCreator>> = args.auto_create_rooms.then(|| {
                Arc::new(fanout_signalling::kube_placement::ApiRoomCreator {
                    client: client.clone(),
                    empty_timeout_seconds: args.auto_create_empty_timeout_seconds,
                }) as Arc<dyn fanout_signalling::kube_placement::RoomCreator>
            });
            let placement = fanout_signalling::kube_placement::KubePlacement::new(
                rooms,
                args.namespace.clone(),
                creator,
                Duration::from_secs(args.placement_wait_seconds),
            );
            placement.spawn_migration_watch();
            (placement as Arc<dyn Placement>, format!("Room objects in namespace {}", args.namespace))
        }
        (_, Some(embedded)) => {
            let url = embedded.worker.endpoint();
            (Arc::new(StaticPlacement::new(url.clone()).with_publishers(args.publishers.clone())), url)
        }
        (_, None) => {
            let Some(urls) = args.worker_url.clone() else {
                bail!("static placement needs --worker-url (FANOUT_WORKER_URL)");
            };
            let endpoints = parse_worker_urls(&urls)?;
            let placement = StaticPlacement::with_workers(endpoints.clone()).with_publishers(args.publishers.clone());
            if endpoints.len() > 1 {
                let interval = Duration::from_millis(args.worker_probe_interval_ms);
                placement.spawn_health_watch(WorkerClient::new(args.worker_token.clone(), interval), interval);
                pool = Some(placement.clone());
            }
            (Arc::new(placement), endpoints.join(","))
        }
    };
    let backend: Arc<dyn MediaBackend> = match &embedded {
        Some(embedded) => Arc::new(InProcessBackend::new(embedded.worker.control.clone())),
        None => Arc::new(WorkerBackend::new(
            args.worker_token.clone(),
            Duration::from_millis(args.worker_timeout_ms),
        )),
    };
    let backend = match &pool {
        Some(pool) => Arc::new(pool.watched(backend)) as Arc<dyn MediaBackend>,
        None => backend,
    };
    let limits = Limits {
        max_event_bytes: args.max_event_bytes,
        // Room for the framing and JSON escapes around a payload of the largest size.
        max_packet_bytes: u64::try_from(args.max_event_bytes.saturating_mul(2))
            .unwrap_or(u64::MAX)
            .max(16 * 1024),
        events_per_second: args.events_per_second,
        event_burst: args.event_burst,
        chat: ChatRules {
            max_text_bytes: args.chat_max_bytes as usize,
            burst: args.chat_burst,
            per_second: args.chat_messages_per_second,
            history: args.chat_history as usize,
            moderator_roles: args
                .chat_moderator_roles
                .iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect(),
            max_rooms: args.chat_max_rooms as usize,
            history_ttl: Duration::from_secs(args.chat_history_ttl_seconds),
        },
        ..Limits::default()
    };
    let state = Signalling::with_ice(verifier, placement, backend, limits, ice);
    let extra = match &embedded {
        Some(embedded) => embedded::routes(embedded, args.web_root.clone()),
        // Only the files: no index.html for unknown paths, so the demo page's request for a
        // development token gets a 404 and tells the user to paste a token instead.
        None if args.web_root.is_dir() => {
            tracing::info!(web_root = %args.web_root.display(), "serving the demo page");
            axum::Router::new().fallback_service(tower_http::services::ServeDir::new(&args.web_root))
        }
        None => axum::Router::new(),
    };
    let replicas = match &args.redis_url {
        Some(_) if embedded.is_some() => bail!(
            "--redis-url is for several replicas in front of shared workers, but embedded mode's \
             worker lives inside this process: give --worker-url (or run in Kubernetes) as well"
        ),
        Some(url) => {
            let lease = Lease { ttl: Duration::from_secs(args.replica_lease_seconds.max(3)) };
            Replicas::connect(url, lease).await.context("--redis-url (FANOUT_REDIS_URL)")?
        }
        None => Replicas::alone(),
    };
    let ownership = replicas.ownership().cloned();
    let router = app_replicated(state, &args.cors_origins, extra, replicas).await?;

    let listen = listen_address(mode == PlacementMode::Embedded, args.listen_addr, args.dev_on_network)
        .map_err(anyhow::Error::msg)?;
    let addr = SocketAddr::new(listen, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, worker = worker_url, "signalling listening");
    if embedded.is_some() {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(args.port);
        let host = match listen {
            _ if listen.is_unspecified() || listen.is_loopback() => "localhost".to_owned(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        println!("Fanout is running: open http://{host}:{port}/ in two browser tabs to make a call.");
    }
    let http = HttpLimits {
        header_read_timeout: Duration::from_secs(args.header_read_timeout_seconds.max(1)),
        max_connections: args.max_connections.max(1),
    };
    fanout_signalling::http::serve(listener, router, http, shutdown_signal())
        .await
        .context("serving HTTP")?;
    if let Some(ownership) = ownership {
        ownership.release().await;
    }
    if let Some(embedded) = embedded {
        embedded.worker.shutdown().await;
    }
    Ok(())
}

/// Where to listen: loopback by default in embedded mode, whose `/dev/token` gives a token to
/// anyone who asks; any address there only with `--dev-on-network`. The other modes default
/// to every interface (a pod's).
fn listen_address(embedded: bool, requested: Option<IpAddr>, dev_on_network: bool) -> Result<IpAddr, String> {
    match (embedded, requested) {
        (false, requested) => Ok(requested.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
        (true, None) => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        (true, Some(address)) if address.is_loopback() || dev_on_network => Ok(address),
        (true, Some(address)) => Err(format!(
            "--listen-addr {address} would let anyone who can reach this machine take a token at \
             /dev/token and join calls (embedded mode is for development); add --dev-on-network \
             to do it anyway, on a network you trust"
        )),
    }
}

fn jwt_config(args: &Args) -> anyhow::Result<JwtConfig> {
    let key = match (&args.jwt_secret, &args.jwt_public_key_file) {
        (Some(secret), None) => JwtKey::Hs256 {
            secret: secret.clone().into_bytes(),
        },
        (None, Some(path)) => {
            let public_key_pem = std::fs::read(path)
                .with_context(|| format!("reading the JWT public key {}", path.display()))?;
            match args.jwt_algorithm {
                PublicKeyAlgorithm::Rs256 => JwtKey::Rs256 { public_key_pem },
                PublicKeyAlgorithm::Es256 => JwtKey::Es256 { public_key_pem },
            }
        }
        _ => bail!(
            "set exactly one of --jwt-secret (FANOUT_JWT_SECRET) or --jwt-public-key-file \
             (FANOUT_JWT_PUBLIC_KEY_FILE): connections are refused without a way to verify tokens"
        ),
    };
    Ok(JwtConfig {
        key,
        audience: args.jwt_audience.clone(),
        issuer: args.jwt_issuer.clone(),
        leeway_seconds: 30,
    })
}

/// Fanout's log set-up (`fanout_worker::logging`): stderr, coloured only on a terminal,
/// libraries at warn unless `RUST_LOG` says otherwise. The embedded worker's lines are ours too.
fn init_tracing(format: &str) -> anyhow::Result<()> {
    let format = format.parse().map_err(anyhow::Error::msg)?;
    fanout_worker::logging::init(format, &["fanout_signalling", "fanout_worker", "fanout_operator"]);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_mode_listens_on_loopback_unless_told_it_may_not() {
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(listen_address(true, None, false), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(listen_address(true, Some("::1".parse().unwrap()), false), Ok("::1".parse().unwrap()));
        let refused = listen_address(true, Some(lan), false).unwrap_err();
        assert!(refused.contains("--dev-on-network"), "{refused}");
        assert!(listen_address(true, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), false).is_err());
        assert_eq!(listen_address(true, Some(lan), true), Ok(lan));
    }

    #[test]
    fn other_modes_listen_everywhere_by_default() {
        assert_eq!(listen_address(false, None, false), Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        let lan: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(listen_address(false, Some(lan), false), Ok(lan));
    }
}
