//! One real Kubernetes control plane per test binary: kube-apiserver + etcd on loopback, from
//! the workspace's kube-kit or from envtest's binaries, started on first use and stopped when
//! the test process ends (by a watcher process, so a killed or panicking run cleans up too).
//!
//! Where it comes from, in order:
//! 1. `FANOUT_KUBE_KIT=<dir>`: the kit there (`up.sh`, `down.sh`); `FANOUT_KUBE_KIT=off` skips
//!    the kit and goes on to 2.
//! 2. `shared/kube-kit` beside the repository or beside one of its parent folders (the
//!    workspace keeps it at `<repo>/../shared/kube-kit`).
//! 3. `KUBEBUILDER_ASSETS=<dir>` holding envtest's `kube-apiserver` and `etcd` (no controller
//!    manager: tests make their namespaces' default ServiceAccount themselves).
//!
//! Without any of them every test of this binary says that it was skipped and why, on the
//! terminal (not in captured output), and returns.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running control plane.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    /// Helm 3, when the kit (or PATH) has one.
    pub helm: Option<PathBuf>,
    /// Where it came from, for messages.
    pub source: String,
}

/// Writes to the terminal even while the test harness captures output: skips and figures must
/// be seen in a passing run.
pub fn say(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line.as_ref());
}

/// The shared control plane, started on first call; `None` (after printing why) when there is
/// nothing to start. A control plane that is there but fails to start fails the test.
pub fn control_plane(test: &str) -> Option<&'static ControlPlane> {
    static PLANE: OnceLock<Result<Option<ControlPlane>, String>> = OnceLock::new();
    let plane = PLANE.get_or_init(|| {
        let started = Instant::now();
        let plane = start();
        if let Ok(Some(p)) = &plane {
            say(format!("api_server: control plane from {} ready in {:.1} s", p.source, started.elapsed().as_secs_f64()));
        }
        plane
    });
    match plane {
        Ok(Some(p)) => Some(p),
        Ok(None) => {
            say(format!("SKIPPED {test}: {}", why_absent()));
            None
        }
        Err(e) => {
            // On the terminal too: a failed start fails every test of the binary, and the
            // first panic's message may be far from where a reader of the log looks.
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| say(format!("api_server: the Kubernetes control plane did not start: {e}")));
            panic!("the Kubernetes control plane did not start: {e}")
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The kit's folder, if there is one to use.
fn find_kit() -> Result<Option<PathBuf>, String> {
    match std::env::var("FANOUT_KUBE_KIT") {
        Ok(v) if v == "off" => return Ok(None),
        Ok(v) if !v.is_empty() => {
            let dir = PathBuf::from(&v);
            return if dir.join("up.sh").is_file() {
                Ok(Some(dir))
            } else {
                Err(format!("FANOUT_KUBE_KIT={v} has no up.sh"))
            };
        }
        _ => {}
    }
    let root = repo_root().canonicalize().map_err(|e| e.to_string())?;
    Ok(root.ancestors().map(|a| a.join("shared/kube-kit")).find(|k| k.join("up.sh").is_file()))
}

fn envtest_assets() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
    (dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()).then_some(dir)
}

fn why_absent() -> String {
    let root = repo_root().canonicalize().unwrap_or_else(|_| repo_root());
    let looked: Vec<String> = root.ancestors().map(|a| a.join("shared/kube-kit").display().to_string()).collect();
    let kit = match std::env::var("FANOUT_KUBE_KIT") {
        Ok(v) if v == "off" => "the kube-kit is turned off (FANOUT_KUBE_KIT=off)".to_string(),
        _ => format!("no kube-kit (looked for up.sh in {}; set FANOUT_KUBE_KIT to its folder)", looked.join(", ")),
    };
    let envtest = match std::env::var("KUBEBUILDER_ASSETS") {
        Ok(v) => format!("KUBEBUILDER_ASSETS={v} lacks kube-apiserver or etcd"),
        Err(_) => "KUBEBUILDER_ASSETS (envtest's kube-apiserver and etcd) is not set".to_string(),
    };
    format!("no Kubernetes API server to test against: {kit}, and {envtest}")
}

fn start() -> Result<Option<ControlPlane>, String> {
    if let Some(kit) = find_kit()? {
        return start_kit(&kit).map(Some);
    }
    if let Some(assets) = envtest_assets() {
        return start_envtest(&assets).map(Some);
    }
    Ok(None)
}

/// A port P with P, P+17347 and P+17357 free (the kit puts etcd's client and peer ports there).
fn free_ports(offsets: &[u16]) -> u16 {
    let seed = std::process::id() as u16;
    for i in 0..2000u16 {
        let p = 20000 + (seed.wrapping_add(i.wrapping_mul(37)) % 28000);
        if offsets.iter().all(|o| TcpListener::bind(("127.0.0.1", p + o)).is_ok()) {
            return p;
        }
    }
    panic!("no free loopback ports for a control plane");
}

fn state_dir(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("fanout-operator-tests-{}-{port}", std::process::id()))
}

/// Stops the control plane once this process is gone, however it ends. In its own process
/// group, so the Ctrl-C that ends the tests does not end the clean-up too.
fn clean_up_after_exit(script: &str) {
    use std::os::unix::process::CommandExt as _;
    let me = std::process::id();
    let watcher = format!("while kill -0 {me} 2>/dev/null; do sleep 0.5; done; {script}");
    let spawned = Command::new("sh")
        .args(["-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        say(format!("api_server: cannot start the clean-up watcher ({e}); stop the control plane by hand"));
    }
}

fn start_kit(kit: &Path) -> Result<ControlPlane, String> {
    let port = free_ports(&[0, 17347, 17357]);
    let state = state_dir(port);
    let env = format!("KUBE_PORT={port} KUBE_KIT_STATE='{}'", state.display());
    clean_up_after_exit(&format!("{env} '{}' >/dev/null 2>&1", kit.join("down.sh").display()));
    let out = Command::new(kit.join("up.sh"))
        .env("KUBE_PORT", port.to_string())
        .env("KUBE_KIT_STATE", &state)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", kit.join("up.sh").display()))?;
    if !out.status.success() {
        // up.sh prints the tail of the failing component's log on stdout, its own reason on
        // stderr: both belong in the message.
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let hint = if printed.contains("no space left on device") {
            format!("\n(the disk holding {} is full: etcd and the kit's binaries need about 500 MB there)", state.display())
        } else {
            String::new()
        };
        return Err(format!("{} failed ({}):\n{printed}{hint}", kit.join("up.sh").display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !kubeconfig.is_file() {
        return Err(format!("up.sh printed no kubeconfig path: {stdout}"));
    }
    let helm = state.join("bin/helm");
    Ok(ControlPlane {
        helm: helm.is_file().then_some(helm).or_else(helm_on_path),
        kubeconfig,
        source: format!("kube-kit {}", kit.display()),
    })
}

fn helm_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("helm")).find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// envtest's binaries: etcd and kube-apiserver started here, with a self-signed serving
/// certificate (the client skips verification on loopback) and a static admin token.
fn start_envtest(assets: &Path) -> Result<ControlPlane, String> {
    let port = free_ports(&[0, 1, 2]);
    let (etcd_port, peer_port) = (port + 1, port + 2);
    let state = state_dir(port);
    std::fs::create_dir_all(state.join("certs")).map_err(|e| e.to_string())?;
    let pids = state.join("pids");
    clean_up_after_exit(&format!(
        "for p in $(cat '{pids}' 2>/dev/null); do kill -9 $p 2>/dev/null; done; rm -rf '{}'",
        state.display(),
        pids = pids.display()
    ));
    let key = state.join("sa.key");
    run(Command::new("openssl").args(["genrsa", "-out"]).arg(&key).arg("2048"))
        .map_err(|e| format!("envtest needs openssl to make the service-account key: {e}"))?;
    let token: String = format!("{:032x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    std::fs::write(state.join("tokens.csv"), format!("{token},admin,uid-admin,\"system:masters\"\n")).map_err(|e| e.to_string())?;

    let log = |name: &str| std::fs::File::create(state.join(format!("{name}.log"))).map_err(|e| e.to_string());
    let etcd = Command::new(assets.join("etcd"))
        .arg(format!("--data-dir={}", state.join("etcd").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"))
        .stdin(Stdio::null())
        .stdout(log("etcd")?)
        .stderr(log("etcd")?)
        .spawn()
        .map_err(|e| format!("cannot start etcd: {e}"))?;
    let apiserver = Command::new(assets.join("kube-apiserver"))
        .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", state.join("certs").display()))
        .arg(format!("--token-auth-file={}", state.join("tokens.csv").display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", key.display()))
        .arg(format!("--service-account-signing-key-file={}", key.display()))
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--allow-privileged=true")
        .stdin(Stdio::null())
        .stdout(log("kube-apiserver")?)
        .stderr(log("kube-apiserver")?)
        .spawn()
        .map_err(|e| format!("cannot start kube-apiserver: {e}"))?;
    std::fs::write(&pids, format!("{} {}", apiserver.id(), etcd.id())).map_err(|e| e.to_string())?;

    let kubeconfig = state.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: admin, namespace: default}}\n\
             current-context: envtest\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    // Ready when /readyz answers: poll the port until the server takes connections, then let
    // the first client request wait on readiness (see `client`).
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(state.join("kube-apiserver.log")).unwrap_or_default();
            return Err(format!("kube-apiserver did not listen within 60 s:\n{}", tail.lines().rev().take(20).collect::<Vec<_>>().join("\n")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ControlPlane { kubeconfig, helm: helm_on_path(), source: format!("envtest binaries in {}", assets.display()) })
}
