//! The Helm chart with a real helm and a real API server: `helm lint --strict`, `helm template`
//! with the default values and with values that turn on every optional part, and a
//! server-side dry-run apply (strict field validation) of every object it renders, which checks
//! each against the server's schema for its kind, the CRDs' included.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective};
use kube::discovery::{pinned_kind, Scope};
use serde_json::Value;

use crate::cluster::{cluster, Cluster};
use crate::kit::say;

/// Values that differ from every default that shapes an object.
const NON_DEFAULT_VALUES: &str = r#"
nameOverride: media
commonLabels: {team: rtc}
image: {repository: registry.example.com/fanout, tag: "9.9.9", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
workerApiToken: {existingSecret: my-worker-token, secretKey: tok}
operator:
  replicas: 2
  leaderElection: {enabled: true, leaseName: my-lease}
  schedulingPolicy: pack
  rescheduleGraceSeconds: 10
  logFormat: json
  podAnnotations: {example.com/a: b}
  nodeSelector: {role: control}
  tolerations: [{key: dedicated, operator: Equal, value: control, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: role, operator: In, values: [control]}]}]
  serviceAccount: {name: fanout-op, annotations: {example.com/role: operator}}
signalling:
  replicas: 3
  corsOrigins: ["https://app.example.com"]
  demoPage: {enabled: false}
  autoCreateRooms: {enabled: false}
  jwt:
    algorithm: ES256
    publicKey: |
      -----BEGIN PUBLIC KEY-----
      MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9
      q9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==
      -----END PUBLIC KEY-----
    audience: app
    issuer: https://issuer.example.com
  service: {type: LoadBalancer, sessionAffinity: ClientIP, annotations: {example.com/lb: internal}}
  ingress:
    enabled: true
    className: nginx
    tls: [{secretName: rtc-tls, hosts: [rtc.example.com]}]
redis: {existingSecret: my-redis, secretKey: redis-url}
sfuWorker:
  name: media-pool
  labels: {tier: gold}
  replicas: 3
  image: {repository: registry.example.com/worker, tag: "9.9.9", pullPolicy: IfNotPresent}
  httpPort: 3100
  rtcPorts: {min: 50000, max: 50999}
  capacity: {maxPeers: 200, maxRooms: 20}
  announcedAddress: {source: Fixed, ip: 203.0.113.7}
  mediaThreads: 2
  nodeSelector: {fanout.dev/media: "true"}
  tolerations: [{key: media, operator: Exists, effect: NoSchedule}]
  drainTimeoutSeconds: 600
  recording: {enabled: true, path: /data/recordings, existingClaim: media-recordings}
rbac: {aggregateToDefaultRoles: false}
networkPolicy:
  enabled: true
  extraApiFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
serviceMonitor: {enabled: true, workers: true, interval: 15s, labels: {release: prometheus}}
turn:
  enabled: true
  credentialTtlSeconds: 43200
  iceTransportPolicy: relay
  extraIceServers: [{urls: "stun:stun.example.com:3478"}]
  coturn:
    enabled: true
    image: {repository: registry.example.com/coturn, tag: "9.9.9", pullPolicy: Always}
    host: turn.example.com
    replicas: 2
    realm: example
    tls: {port: 443, secretName: turn-tls}
    plainPort: 3479
    relayPorts: {min: 60000, max: 60999}
    allowedPeerIps: ["10.0.0.0-10.0.255.255"]
    serviceAnnotations: {example.com/lb: external}
    resources: {requests: {cpu: 200m}}
    nodeSelector: {role: edge}
    tolerations: [{key: edge, operator: Exists, effect: NoSchedule}]
"#;

/// Kinds whose CRDs come from elsewhere (the Prometheus Operator) and are not installed in the
/// test cluster: rendered and parsed, but not sent to the server.
const FOREIGN_KINDS: &[&str] = &["ServiceMonitor", "PodMonitor"];

fn chart() -> PathBuf {
    crate::repo().join("charts/fanout")
}

fn run_helm(helm: &Path, args: &[&str]) -> std::process::Output {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", helm.display()))
}

fn helm_ok(helm_bin: &Path, args: &[&str]) -> String {
    let out = run_helm(helm_bin, args);
    assert!(
        out.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values_file(c: &Cluster) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-values.yaml", c.ns));
    std::fs::write(&path, NON_DEFAULT_VALUES).unwrap();
    path
}

/// The helm the kit brings, or `None` after saying why the test is skipped.
fn helm_of(c: &Cluster, test: &str) -> Option<PathBuf> {
    let helm = c.plane.helm.clone();
    if helm.is_none() {
        say(format!("SKIPPED {test}: no helm (the kube-kit brings one; otherwise put helm 3 on PATH)"));
    }
    helm
}

#[tokio::test]
async fn helm_lint_strict_passes_with_default_and_non_default_values() {
    let Some(c) = cluster("chart-lint").await else { return };
    let Some(helm) = helm_of(&c, "chart-lint") else { return };
    let chart = chart();
    let chart = chart.to_str().unwrap();
    helm_ok(&helm, &["lint", "--strict", chart]);
    let values = values_file(&c);
    helm_ok(&helm, &["lint", "--strict", chart, "--values", values.to_str().unwrap()]);

    // What the chart refuses, it refuses with the reason.
    let out = run_helm(&helm, &["template", "fanout", chart, "--set", "operator.replicas=2", "--set", "operator.leaderElection.enabled=false"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("operator.replicas > 1 needs operator.leaderElection.enabled"));
    let out = run_helm(&helm, &["template", "fanout", chart, "--set", "sfuWorker.announcedAddress.source=Fixed"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sfuWorker.announcedAddress.ip is required"));
    let out = run_helm(&helm, &["template", "fanout", chart, "--set", "turn.enabled=true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("turn.enabled needs turn.urls"));
    let coturn = ["--set", "turn.enabled=true", "--set", "turn.coturn.enabled=true", "--set", "turn.coturn.host=turn.example.com"];
    let out = run_helm(&helm, &[&["template", "fanout", chart][..], &coturn[..]].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("turn.coturn.tls.secretName"));
    let out = run_helm(&helm, &["template", "fanout", chart, "--set", "redis.bundled.enabled=false"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signalling.replicas > 1 needs Redis"));
    helm_ok(&helm, &["template", "fanout", chart, "--set", "redis.bundled.enabled=false", "--set", "signalling.replicas=1"]);
}

/// Renders the chart and dry-runs every object on the server; returns the objects rendered.
async fn dry_run_rendered(c: &Cluster, helm: &Path, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "fanout", chart.to_str().unwrap(), "--namespace", &c.ns, "--include-crds"];
    args.extend_from_slice(extra);
    let rendered = helm_ok(helm, &args);
    let mut objects = Vec::new();
    let mut refusals = Vec::new();
    for doc in rendered.split("\n---") {
        let value: Value = yaml_serde::from_str(doc).unwrap_or_else(|e| panic!("helm rendered invalid YAML ({e}):\n{doc}"));
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value.clone()).unwrap();
        let types = object.types.clone().expect("every rendered object has apiVersion and kind");
        let name = object.metadata.name.clone().expect("every rendered object has a name");
        objects.push(value.clone());
        if FOREIGN_KINDS.contains(&types.kind.as_str()) {
            continue;
        }
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = pinned_kind(&c.client, &gvk).await.unwrap_or_else(|e| panic!("the server does not serve {gvk:?}: {e}"));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = object.metadata.namespace.clone().unwrap_or_else(|| c.ns.clone());
                assert_eq!(ns, c.ns, "{} {name} is not in the release namespace", types.kind);
                Api::namespaced_with(c.client.clone(), &ns, &resource)
            }
            Scope::Cluster => Api::all_with(c.client.clone(), &resource),
        };
        let params = PatchParams {
            dry_run: true,
            force: true,
            field_manager: Some("helm".into()),
            field_validation: Some(ValidationDirective::Strict),
        };
        if let Err(e) = api.patch(&name, &params, &Patch::Apply(&value)).await {
            refusals.push(format!("{} {name}: {e}", types.kind));
        }
    }
    assert!(refusals.is_empty(), "the server refused rendered objects:\n{}", refusals.join("\n"));
    objects
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects.iter().map(|o| o["kind"].as_str().unwrap_or_default().to_string()).collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn every_object_the_chart_renders_passes_a_server_side_dry_run() {
    let Some(c) = cluster("chart-dry-run").await else { return };
    let Some(helm) = helm_of(&c, "chart-dry-run") else { return };
    let default_objects = dry_run_rendered(&c, &helm, &[]).await;
    let defaults = kinds(&default_objects);
    for kind in ["CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Secret", "SfuWorker", "PodDisruptionBudget"] {
        assert!(defaults.contains(&kind.to_string()), "the default values render no {kind}: {defaults:?}");
    }
    let named = |objects: &[Value], kind: &str, suffix: &str| -> Option<Value> {
        objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with(suffix))).cloned()
    };
    let env = |d: &Value, name: &str| -> Value {
        d["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or_default()
    };
    // By default: two signalling replicas on the bundled Redis, sticky for long polling, and
    // drained one at a time.
    let signalling = named(&default_objects, "Deployment", "-signalling").expect("the signalling Deployment");
    assert_eq!(signalling["spec"]["replicas"], 2);
    let redis = named(&default_objects, "Deployment", "-redis").expect("a bundled Redis Deployment");
    let container = &redis["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "redis:7-alpine");
    assert!(container["resources"]["limits"]["memory"].is_string(), "the bundled Redis has a memory limit");
    let redis_service = named(&default_objects, "Service", "-redis").expect("a bundled Redis Service");
    let redis_service_name = redis_service["metadata"]["name"].as_str().unwrap();
    assert_eq!(env(&signalling, "FANOUT_REDIS_URL")["value"], format!("redis://{redis_service_name}:6379/"));
    let service = named(&default_objects, "Service", "-signalling").expect("the signalling Service");
    assert_eq!(service["spec"]["sessionAffinity"], "ClientIP");
    let budget = named(&default_objects, "PodDisruptionBudget", "-signalling").expect("a signalling PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(budget["spec"]["selector"], signalling["spec"]["selector"]);
    // Locked down, the bundled Redis takes connections from signalling only.
    let policed = dry_run_rendered(&c, &helm, &["--set", "networkPolicy.enabled=true"]).await;
    let policy = named(&policed, "NetworkPolicy", "-redis").expect("a NetworkPolicy for the bundled Redis");
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        signalling["spec"]["selector"]["matchLabels"]
    );
    let values = values_file(&c);
    let objects = dry_run_rendered(&c, &helm, &["--values", values.to_str().unwrap()]).await;
    let all = kinds(&objects);
    // The pull secrets reach every pod template and the worker pool.
    for o in &objects {
        let secrets = match o["kind"].as_str() {
            Some("Deployment") => &o["spec"]["template"]["spec"]["imagePullSecrets"],
            Some("SfuWorker") => &o["spec"]["imagePullSecrets"],
            _ => continue,
        };
        assert_eq!(secrets, &serde_json::json!([{"name": "regcred"}]), "{} {}", o["kind"], o["metadata"]["name"]);
    }
    for kind in ["Ingress", "NetworkPolicy", "ServiceMonitor", "PodMonitor", "SfuWorker"] {
        assert!(all.contains(&kind.to_string()), "the non-default values render no {kind}: {all:?}");
    }
    // The worker pool records onto the existing claim.
    let pool = named(&objects, "SfuWorker", "media-pool").expect("the SfuWorker");
    assert_eq!(
        pool["spec"]["recording"],
        serde_json::json!({"path": "/data/recordings", "volume": {"persistentVolumeClaim": {"claimName": "media-recordings"}}})
    );
    // Or onto an emptyDir, with and without a size limit (the CRD's rule wants exactly one).
    for extra in [&["--set", "sfuWorker.recording.enabled=true"][..], &["--set", "sfuWorker.recording.enabled=true", "--set", "sfuWorker.recording.emptyDirSizeLimit=5Gi"]] {
        let objects = dry_run_rendered(&c, &helm, extra).await;
        let pool = objects.iter().find(|o| o["kind"] == "SfuWorker").expect("the SfuWorker");
        assert!(pool["spec"]["recording"]["volume"]["emptyDir"].is_object(), "{}", pool["spec"]["recording"]);
        assert_eq!(pool["spec"]["recording"]["path"], "/var/lib/fanout/recordings");
    }
    // An existing Redis by Secret: no bundled one.
    assert!(named(&objects, "Deployment", "-redis").is_none(), "no bundled Redis next to an existing one");
    let signalling = named(&objects, "Deployment", "-signalling").expect("the signalling Deployment");
    assert_eq!(
        env(&signalling, "FANOUT_REDIS_URL")["valueFrom"],
        serde_json::json!({"secretKeyRef": {"name": "my-redis", "key": "redis-url"}})
    );
    // coturn behind a LoadBalancer on 443, and signalling handing it out with the same Secret.
    let service = named(&objects, "Service", "-coturn").expect("a coturn Service");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    let coturn = named(&objects, "Deployment", "-coturn").expect("a coturn Deployment");
    assert!(env(&signalling, "FANOUT_TURN_URLS")["value"].as_str().unwrap().starts_with("turns:turn.example.com:443?transport=tcp"));
    assert_eq!(env(&signalling, "FANOUT_TURN_SECRET")["valueFrom"], env(&coturn, "TURN_SECRET")["valueFrom"]);
    // The same on the nodes' network: no Service, one pod per node.
    let host_network = dry_run_rendered(&c, &helm, &["--values", values.to_str().unwrap(), "--set", "turn.coturn.exposure=HostNetwork"]).await;
    let coturn = named(&host_network, "Deployment", "-coturn").expect("a coturn Deployment");
    assert_eq!(coturn["spec"]["template"]["spec"]["hostNetwork"], true);
    assert!(named(&host_network, "Service", "-coturn").is_none(), "no coturn Service on the host network");
    say(format!(
        "chart: {} objects (default values) and {} (non-default values) passed a server-side dry run; {} not sent (their CRDs belong to the Prometheus Operator)",
        defaults.len(),
        all.len() - all.iter().filter(|k| FOREIGN_KINDS.contains(&k.as_str())).count(),
        FOREIGN_KINDS.join(" and ")
    ));
}
