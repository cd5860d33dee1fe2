//! The real `fanout-operator` program, run against the control plane for one namespace.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::cluster::{Cluster, WORKER_TOKEN};
use crate::kit::say;

pub struct Operator {
    child: Option<Child>,
    pub identity: String,
    log: PathBuf,
}

/// Settings that tests change; the rest are the program's defaults.
pub struct OperatorArgs {
    pub reschedule_grace_seconds: u64,
    pub lease_duration_seconds: u64,
    pub extra: Vec<String>,
}

impl Default for OperatorArgs {
    fn default() -> Self {
        OperatorArgs { reschedule_grace_seconds: 30, lease_duration_seconds: 15, extra: Vec::new() }
    }
}

impl Operator {
    /// Starts `fanout-operator` with leader election on the Lease `fanout-operator` in the
    /// test's namespace, watching that namespace only.
    pub fn start(cluster: &Cluster, identity: &str, args: OperatorArgs) -> Operator {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{identity}.log", cluster.ns));
        let out = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(env!("CARGO_BIN_EXE_fanout-operator"))
            .args([
                "--metrics-addr=127.0.0.1:0",
                &format!("--watch-namespace={}", cluster.ns),
                &format!("--lease-namespace={}", cluster.ns),
                "--lease-name=fanout-operator",
                &format!("--identity={identity}"),
                &format!("--reschedule-grace-seconds={}", args.reschedule_grace_seconds),
                &format!("--lease-duration-seconds={}", args.lease_duration_seconds),
            ])
            .args(&args.extra)
            .env("KUBECONFIG", &cluster.plane.kubeconfig)
            .env("FANOUT_WORKER_TOKEN", WORKER_TOKEN)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("fanout-operator starts");
        Operator { child: Some(child), identity: identity.to_string(), log }
    }

    /// SIGKILL: the process gets no chance to release anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            say(format!(
                "--- last lines of operator {} ({}) ---\n{}",
                self.identity,
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
}
