//! The worker Pod for one replica of an SfuWorker: a pure function of the pool and the ordinal.
//!
//! Why it looks the way it does:
//! - `hostNetwork`: browsers send UDP straight to the node's address and `rtcPorts`; there is no
//!   NAT or Service in the media path.
//! - The HTTP port is declared as a `hostPort`, so the kube-scheduler refuses to put two pods
//!   that would collide on one node. The UDP range cannot be declared (thousands of hostPorts),
//!   which is why the operator checks overlapping ranges between pools itself.
//! - Required anti-affinity keeps replicas of one pool on different nodes even if the HTTP port
//!   changes between pools.
//! - Identity and addresses come from the downward API: the worker needs no Kubernetes access.
//! - A pool with `recording` mounts its volume (the root filesystem is read-only) and passes the
//!   mount path as `--recording-dir`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaimVolumeSource, ObjectFieldSelector, Pod, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, Probe, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{labels, AnnouncedAddressSource, RecordingVolume, SfuWorker, SfuWorkerSpec};

/// Where the worker reads its announced IP when the operator resolves it (NodeExternalIP): a
/// downward-API file that the kubelet refreshes when the pod's annotation changes.
pub const ANNOUNCED_IP_FILE: &str = "/etc/fanout/podinfo/announced-ip";

/// The program a worker container runs, looked up on the image's PATH. Named explicitly so that
/// one image can carry all of Fanout's programs (see the Dockerfile).
pub const WORKER_COMMAND: &str = "fanout-worker";

/// Name of the pod for `ordinal` in `pool`.
pub fn pod_name(pool: &str, ordinal: u32) -> String {
    format!("{pool}-{ordinal}")
}

/// Labels that select every pod of a pool.
pub fn pool_selector(pool: &str) -> String {
    format!("{}={pool}", labels::SFU_WORKER)
}

/// A short hash of the fields that shape a pod. Pods whose hash differs from the pool's are
/// replaced (one at a time, draining first). Replicas, capacity and drain timeout are left out:
/// changing them must not restart media.
pub fn template_hash(spec: &SfuWorkerSpec) -> String {
    let shaping = serde_json::json!({
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "httpPort": spec.http_port,
        "rtcPorts": [spec.rtc_ports.min, spec.rtc_ports.max],
        "announcedAddress": spec.announced_address,
        "mediaThreads": spec.media_threads,
        "apiTokenSecret": spec.api_token_secret,
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "resources": spec.resources,
    });
    // ICE-TCP's fields count only when they differ from what pods made before them ran with
    // (the worker's default port, on), so an operator upgrade does not replace every pod.
    let mut shaping = shaping;
    if spec.tcp_port != crate::crd::DEFAULT_TCP_PORT || !spec.enable_tcp {
        shaping["tcpPort"] = serde_json::json!(spec.tcp_port);
        shaping["enableTcp"] = serde_json::json!(spec.enable_tcp);
    }
    // Likewise the recording volume: only a pool that has one hashes it.
    if let Some(recording) = &spec.recording {
        shaping["recording"] = serde_json::json!(recording);
    }
    let digest = Sha256::digest(shaping.to_string().as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// Name of the recording volume in a worker pod.
pub const RECORDING_VOLUME: &str = "recordings";

fn recording_volume(volume: &RecordingVolume) -> Volume {
    Volume {
        name: RECORDING_VOLUME.into(),
        persistent_volume_claim: volume.persistent_volume_claim.as_ref().map(|c| PersistentVolumeClaimVolumeSource {
            claim_name: c.claim_name.clone(),
            read_only: None,
        }),
        // The schema admits exactly one of the two; an object that bypassed it with neither
        // still gets a writable (emptyDir) directory rather than a pod the server refuses.
        empty_dir: match (&volume.persistent_volume_claim, &volume.empty_dir) {
            (Some(_), _) => None,
            (None, dir) => Some(EmptyDirVolumeSource {
                size_limit: dir.as_ref().and_then(|d| d.size_limit.clone()),
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// Builds the pod for `ordinal` of `pool`. The pool must have been read from the API (it needs
/// a name, namespace and UID for the owner reference).
pub fn worker_pod(pool: &SfuWorker, ordinal: u32) -> Pod {
    let spec = &pool.spec;
    let name = pool.name_any();
    let pod_labels = BTreeMap::from([
        (labels::APP_NAME.to_string(), "fanout".to_string()),
        (labels::APP_COMPONENT.to_string(), "worker".to_string()),
        (labels::MANAGED_BY.to_string(), "fanout-operator".to_string()),
        (labels::SFU_WORKER.to_string(), name.clone()),
        (labels::ORDINAL.to_string(), ordinal.to_string()),
    ]);
    let annotations =
        BTreeMap::from([(labels::TEMPLATE_HASH.to_string(), template_hash(spec))]);

    let mut args = vec![
        format!("--http-port={}", spec.http_port),
        format!("--rtc-min-port={}", spec.rtc_ports.min),
        format!("--rtc-max-port={}", spec.rtc_ports.max),
        format!("--rtc-tcp-port={}", spec.tcp_port),
        format!("--enable-tcp={}", spec.enable_tcp),
        "--listen-ip=0.0.0.0".to_string(),
    ];
    if let Some(threads) = spec.media_threads {
        args.push(format!("--media-threads={threads}"));
    }

    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("NODE_IP", "status.hostIP"),
    ];
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    match spec.announced_address.source {
        AnnouncedAddressSource::NodeIp => env.push(field_env("FANOUT_ANNOUNCED_IP", "status.hostIP")),
        AnnouncedAddressSource::Fixed => env.push(value_env(
            "FANOUT_ANNOUNCED_IP",
            spec.announced_address.ip.clone().unwrap_or_default(),
        )),
        AnnouncedAddressSource::NodeExternalIp => {
            env.push(value_env("FANOUT_ANNOUNCED_IP_FILE", ANNOUNCED_IP_FILE));
            volumes.push(Volume {
                name: "podinfo".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "announced-ip".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: format!("metadata.annotations['{}']", labels::ANNOUNCED_IP),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "podinfo".into(),
                mount_path: "/etc/fanout/podinfo".into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    if let Some(recording) = &spec.recording {
        args.push(format!("--recording-dir={}", recording.path));
        volumes.push(recording_volume(&recording.volume));
        mounts.push(VolumeMount { name: RECORDING_VOLUME.into(), mount_path: recording.path.clone(), ..Default::default() });
    }
    if let Some(secret) = &spec.api_token_secret {
        env.push(EnvVar {
            name: "FANOUT_API_TOKEN".into(),
            value_from: Some(EnvVarSource { secret_key_ref: Some(secret.clone()), ..Default::default() }),
            ..Default::default()
        });
    }

    let health_probe = |initial_delay: i32, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };

    let container = Container {
        name: "worker".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        command: Some(vec![WORKER_COMMAND.into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(
            std::iter::once(ContainerPort {
                name: Some("http".into()),
                container_port: spec.http_port,
                host_port: Some(spec.http_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            // A hostPort too, so the scheduler never puts two pools' ICE-TCP ports on a node.
            .chain(spec.enable_tcp.then(|| ContainerPort {
                name: Some("ice-tcp".into()),
                container_port: spec.tcp_port,
                host_port: Some(spec.tcp_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }))
            .collect(),
        ),
        readiness_probe: Some(health_probe(1, 5)),
        liveness_probe: Some(health_probe(10, 10)),
        resources: spec.resources.clone(),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name, ordinal)),
            namespace: pool.namespace(),
            labels: Some(pod_labels),
            annotations: Some(annotations),
            owner_references: pool.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            host_network: Some(true),
            // With hostNetwork the default policy would resolve with the node's resolver only.
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            // hostNetwork pods otherwise get every Service's address in env; useless here.
            enable_service_links: Some(false),
            automount_service_account_token: Some(false),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(30),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            affinity: Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(labels::SFU_WORKER.to_string(), name.clone())])),
                            ..Default::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                // A claim's volume belongs to root until the kubelet hands it to this group, and
                // the worker (user 65532) must write its recordings there.
                fs_group: spec.recording.as_ref().map(|_| 65532),
                ..Default::default()
            }),
            image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
            containers: vec![container],
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{AnnouncedAddress, RtcPortRange, WorkerCapacity};
    use k8s_openapi::api::core::v1::{LocalObjectReference, SecretKeySelector};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    pub(crate) fn pool(name: &str, replicas: i32) -> SfuWorker {
        let mut p = SfuWorker::new(name, SfuWorkerSpec {
            replicas,
            image: "ghcr.io/fanout-dev/fanout:0.1.0".into(),
            image_pull_policy: None,
            image_pull_secrets: vec![],
            http_port: 3000,
            rtc_ports: RtcPortRange::default(),
            tcp_port: crate::crd::DEFAULT_TCP_PORT,
            enable_tcp: true,
            capacity: WorkerCapacity::default(),
            announced_address: AnnouncedAddress::default(),
            media_threads: None,
            api_token_secret: None,
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            resources: None,
            drain_timeout_seconds: 60,
            recording: None,
        });
        p.metadata.namespace = Some("media".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p
    }

    fn env<'a>(pod: &'a Pod, name: &str) -> &'a EnvVar {
        pod.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("env {name} missing"))
    }

    #[test]
    fn worker_pod_runs_on_the_host_network_with_cluster_dns() {
        let pod = worker_pod(&pool("sfu", 2), 1);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("sfu-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("media"));
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(spec.automount_service_account_token, Some(false));
    }

    #[test]
    fn worker_pod_is_owned_by_its_pool() {
        let pod = worker_pod(&pool("sfu", 1), 0);
        let owners = pod.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "SfuWorker");
        assert_eq!(owners[0].name, "sfu");
        assert_eq!(owners[0].uid, "uid-sfu");
        assert_eq!(owners[0].controller, Some(true));
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[labels::SFU_WORKER], "sfu");
        assert_eq!(labels[labels::ORDINAL], "0");
    }

    #[test]
    fn http_port_is_a_host_port_and_ports_reach_the_worker_as_arguments() {
        let mut p = pool("sfu", 1);
        p.spec.http_port = 3100;
        p.spec.rtc_ports = RtcPortRange { min: 41000, max: 41999 };
        p.spec.media_threads = Some(4);
        let pod = worker_pod(&p, 0);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!((port.container_port, port.host_port), (3100, Some(3100)));
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        let args = c.args.as_ref().unwrap();
        for expected in ["--http-port=3100", "--rtc-min-port=41000", "--rtc-max-port=41999", "--media-threads=4", "--rtc-tcp-port=50000"] {
            assert!(args.iter().any(|a| a == expected), "{expected} missing from {args:?}");
        }
    }

    #[test]
    fn the_ice_tcp_port_is_a_host_port_unless_ice_tcp_is_off_and_only_a_change_of_it_replaces_pods() {
        let mut p = pool("sfu", 1);
        let default_hash = template_hash(&p.spec);
        p.spec.tcp_port = 50443;
        let pod = worker_pod(&p, 0);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let tcp = c.ports.as_ref().unwrap().iter().find(|port| port.name.as_deref() == Some("ice-tcp")).expect("ice-tcp port");
        assert_eq!((tcp.container_port, tcp.host_port, tcp.protocol.as_deref()), (50443, Some(50443), Some("TCP")));
        assert!(c.args.as_ref().unwrap().iter().any(|a| a == "--rtc-tcp-port=50443"));
        assert_ne!(template_hash(&p.spec), default_hash, "a new port replaces pods");
        p.spec.tcp_port = crate::crd::DEFAULT_TCP_PORT;
        assert_eq!(template_hash(&p.spec), default_hash, "the default shapes pods as before ICE-TCP had a field");
        p.spec.enable_tcp = false;
        let pod = worker_pod(&p, 0);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.ports.as_ref().unwrap().len(), 1, "no ICE-TCP port declared");
        assert!(c.args.as_ref().unwrap().iter().any(|a| a == "--enable-tcp=false"));
    }

    #[test]
    fn worker_container_runs_the_worker_program_whatever_the_image_entrypoint() {
        let pod = worker_pod(&pool("sfu", 1), 0);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.command.as_deref(), Some(&[WORKER_COMMAND.to_string()][..]));
    }

    #[test]
    fn identity_and_addresses_come_from_the_downward_api() {
        let pod = worker_pod(&pool("sfu", 1), 0);
        let path = |n| env(&pod, n).value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path.clone();
        assert_eq!(path("POD_NAME"), "metadata.name");
        assert_eq!(path("NODE_IP"), "status.hostIP");
        assert_eq!(path("NODE_NAME"), "spec.nodeName");
        assert_eq!(path("FANOUT_ANNOUNCED_IP"), "status.hostIP");
    }

    #[test]
    fn fixed_announced_address_is_passed_as_a_value() {
        let mut p = pool("sfu", 1);
        p.spec.announced_address = AnnouncedAddress { source: AnnouncedAddressSource::Fixed, ip: Some("203.0.113.7".into()) };
        let pod = worker_pod(&p, 0);
        assert_eq!(env(&pod, "FANOUT_ANNOUNCED_IP").value.as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn external_ip_is_read_from_a_downward_api_file_the_operator_fills() {
        let mut p = pool("sfu", 1);
        p.spec.announced_address.source = AnnouncedAddressSource::NodeExternalIp;
        let pod = worker_pod(&p, 0);
        assert_eq!(env(&pod, "FANOUT_ANNOUNCED_IP_FILE").value.as_deref(), Some(ANNOUNCED_IP_FILE));
        let vol = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        let item = &vol.downward_api.as_ref().unwrap().items.as_ref().unwrap()[0];
        assert_eq!(item.field_ref.as_ref().unwrap().field_path, "metadata.annotations['fanout.dev/announced-ip']");
    }

    #[test]
    fn replicas_of_a_pool_repel_each_other_per_node() {
        let pod = worker_pod(&pool("sfu", 3), 2);
        let terms = pod.spec.unwrap().affinity.unwrap().pod_anti_affinity.unwrap()
            .required_during_scheduling_ignored_during_execution.unwrap();
        assert_eq!(terms[0].topology_key, "kubernetes.io/hostname");
        assert_eq!(terms[0].label_selector.as_ref().unwrap().match_labels.as_ref().unwrap()[labels::SFU_WORKER], "sfu");
    }

    #[test]
    fn probes_check_healthz_on_the_http_port() {
        let pod = worker_pod(&pool("sfu", 1), 0);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        for probe in [c.readiness_probe.as_ref().unwrap(), c.liveness_probe.as_ref().unwrap()] {
            let get = probe.http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some("/healthz"));
            assert_eq!(get.port, IntOrString::String("http".into()));
        }
    }

    #[test]
    fn scheduling_constraints_and_secrets_come_from_the_spec() {
        let mut p = pool("sfu", 1);
        p.spec.node_selector = BTreeMap::from([("fanout.dev/media".into(), "true".into())]);
        p.spec.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("media".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }];
        p.spec.api_token_secret = Some(SecretKeySelector { name: "fanout-worker-token".into(), key: "token".into(), optional: None });
        let pod = worker_pod(&p, 0);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_selector.as_ref().unwrap()["fanout.dev/media"], "true");
        assert_eq!(spec.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("media"));
        let secret = env(&pod, "FANOUT_API_TOKEN").value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(secret.name, "fanout-worker-token");
    }

    #[test]
    fn template_hash_changes_with_the_image_but_not_with_replicas_or_capacity() {
        let base = pool("sfu", 1);
        let mut scaled = base.clone();
        scaled.spec.replicas = 5;
        scaled.spec.capacity.max_peers = 9;
        scaled.spec.drain_timeout_seconds = 1;
        assert_eq!(template_hash(&base.spec), template_hash(&scaled.spec));
        let mut upgraded = base.clone();
        upgraded.spec.image = "ghcr.io/fanout-dev/fanout:0.2.0".into();
        assert_ne!(template_hash(&base.spec), template_hash(&upgraded.spec));
        let pod = worker_pod(&upgraded, 0);
        assert_eq!(pod.metadata.annotations.unwrap()[labels::TEMPLATE_HASH], template_hash(&upgraded.spec));
    }

    #[test]
    fn pull_secrets_reach_the_pod_without_replacing_running_ones() {
        let base = pool("sfu", 1);
        assert_eq!(worker_pod(&base, 0).spec.unwrap().image_pull_secrets, None);
        let mut private = base.clone();
        private.spec.image_pull_secrets = vec![LocalObjectReference { name: "regcred".into() }];
        let secrets = worker_pod(&private, 0).spec.unwrap().image_pull_secrets.unwrap();
        assert_eq!(secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["regcred"]);
        assert_eq!(template_hash(&base.spec), template_hash(&private.spec), "a new pull secret restarts no worker");
    }

    #[test]
    fn a_recording_volume_is_mounted_and_passed_as_the_recording_dir() {
        use crate::crd::{RecordingClaim, RecordingEmptyDir, RecordingStorage};
        let base = pool("sfu", 1);
        let plain = worker_pod(&base, 0);
        assert!(!plain.spec.as_ref().unwrap().containers[0].args.as_ref().unwrap().iter().any(|a| a.starts_with("--recording-dir")));
        assert_eq!(plain.spec.as_ref().unwrap().security_context.as_ref().unwrap().fs_group, None);

        let mut claim = base.clone();
        claim.spec.recording = Some(RecordingStorage {
            volume: RecordingVolume {
                persistent_volume_claim: Some(RecordingClaim { claim_name: "recordings".into() }),
                empty_dir: None,
            },
            path: "/data/rec".into(),
        });
        let pod = worker_pod(&claim, 0);
        let spec = pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert!(c.args.as_ref().unwrap().iter().any(|a| a == "--recording-dir=/data/rec"));
        let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == RECORDING_VOLUME).unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/data/rec", None));
        let vol = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == RECORDING_VOLUME).unwrap();
        assert_eq!(vol.persistent_volume_claim.as_ref().unwrap().claim_name, "recordings");
        assert!(vol.empty_dir.is_none());
        assert_eq!(spec.security_context.as_ref().unwrap().fs_group, Some(65532), "the worker's group can write the claim");
        assert_ne!(template_hash(&base.spec), template_hash(&claim.spec), "adding a volume replaces the pods");

        let mut dir = base.clone();
        dir.spec.recording = Some(RecordingStorage {
            volume: RecordingVolume {
                persistent_volume_claim: None,
                empty_dir: Some(RecordingEmptyDir { size_limit: Some(Quantity("10Gi".into())) }),
            },
            path: crate::crd::DEFAULT_RECORDING_PATH.into(),
        });
        let pod = worker_pod(&dir, 0);
        let vol = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap().iter().find(|v| v.name == RECORDING_VOLUME).unwrap().clone();
        assert_eq!(vol.empty_dir.unwrap().size_limit, Some(Quantity("10Gi".into())));
        assert!(pod.spec.unwrap().containers[0].args.as_ref().unwrap().iter().any(|a| a == "--recording-dir=/var/lib/fanout/recordings"));
    }
}
