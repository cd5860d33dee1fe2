//! The `fanout-operator` binary: leader election, watch caches, the three controllers, and an
//! HTTP server for `/healthz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use clap::Parser;
use fanout_operator::controller::{self, Caches, Config, Context};
use fanout_operator::leader::LeaderElector;
use fanout_operator::metrics::Metrics;
use fanout_operator::scheduler::Policy;
use fanout_operator::worker_api::HttpWorkers;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};

/// Fanout's Kubernetes operator: runs SfuWorker pools, schedules Rooms onto them and has their
/// workers record Rooms (Recordings).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of the HTTP server for /healthz and /metrics.
    #[arg(long, env = "FANOUT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// How rooms are spread over workers: spread (least loaded) or pack (fill workers first).
    #[arg(long, env = "FANOUT_SCHEDULING_POLICY", value_enum, default_value_t = Policy::Spread)]
    scheduling_policy: Policy,
    /// Seconds a room waits on a NotReady worker pod before it is moved to another.
    #[arg(long, env = "FANOUT_RESCHEDULE_GRACE_SECONDS", default_value_t = 30)]
    reschedule_grace_seconds: u64,
    /// Bearer token of the workers' REST API.
    #[arg(long, env = "FANOUT_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,
    /// Take part in leader election (off: act as the only replica).
    #[arg(long, env = "FANOUT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Seconds a leader's Lease stays valid without renewal: how long the other replicas wait
    /// after the leader dies before one of them takes over. Renewed every third of it.
    #[arg(long, env = "FANOUT_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_duration_seconds: u64,
    /// Watch and act in this namespace only (default: every namespace).
    #[arg(long, env = "FANOUT_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "FANOUT_LEASE_NAME", default_value = "fanout-operator")]
    lease_name: String,
    /// Namespace of the Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in leader election and events (defaults to the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "FANOUT_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube uses rustls with ring; one process-wide provider avoids an ambiguous-provider panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_tracing(&args.log_format);

    let identity = args.identity.clone().unwrap_or_else(|| {
        format!("fanout-operator-{}", std::process::id())
    });
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration found (in-cluster service account or kubeconfig)")?;
    let metrics = Arc::new(Metrics::default());

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    let http_metrics = metrics.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { http_metrics.render() }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(addr = %args.metrics_addr, %identity, "fanout-operator starting");

    let elector = args.leader_election.then(|| {
        LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &args.lease_namespace),
            args.lease_name.clone(),
            identity.clone(),
            Duration::from_secs(args.lease_duration_seconds),
        )
    });
    if let Some(elector) = &elector {
        tracing::info!(lease = %args.lease_name, "waiting to become leader");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown_signal() => return Ok(()),
        }
        tracing::info!("became leader");
    }
    metrics.is_leader.set(1);

    let caches = Caches::start(&client, args.watch_namespace.as_deref()).await;
    let ctx = Arc::new(Context {
        client: client.clone(),
        rooms: caches.rooms,
        pools: caches.pools,
        pods: caches.pods,
        workers: Arc::new(HttpWorkers::new(args.worker_token.clone(), Duration::from_secs(5))),
        ledger: Mutex::new(Default::default()),
        recorder: Recorder::new(client.clone(), Reporter { controller: "fanout-operator".into(), instance: Some(identity) }),
        metrics: metrics.clone(),
        config: Config {
            policy: args.scheduling_policy,
            reschedule_grace: Duration::from_secs(args.reschedule_grace_seconds),
            namespace: args.watch_namespace.clone(),
            ..Config::default()
        },
    });

    let lost_leadership = async {
        match &elector {
            Some(e) => e.keep().await,
            None => futures::future::pending().await,
        }
    };
    tokio::select! {
        _ = controller::run(ctx, shutdown_signal()) => tracing::info!("controllers stopped"),
        _ = lost_leadership => {
            metrics.is_leader.set(0);
            // Another replica leads now; exit so we restart clean as a follower.
            anyhow::bail!("lost the leader lease; exiting");
        }
    }
    Ok(())
}

/// Logs to stderr, coloured only when stderr is a terminal (a redirected log gets no escape
/// codes). Without `RUST_LOG`: the operator's own lines at info, libraries' warnings only.
fn init_tracing(format: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fanout_operator=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
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
