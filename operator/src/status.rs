//! What `SfuWorker.status` says: a pure function of the pool, its pods, the workers' reports
//! and the rooms placed on them.

use std::collections::HashMap;

use fanout_worker::api::WorkerStats;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::{
    condition, labels, AnnouncedAddressSource, SfuWorker, SfuWorkerSpec, SfuWorkerStatus,
    WorkerReplicaStatus,
};
use crate::pod::{pool_selector, template_hash};
use crate::pool::{is_ready, PortConflict};
use crate::scheduler::Load;

/// Base URL of a worker pod's REST API. With hostNetwork the pod IP is the node's IP.
pub fn endpoint(pod: &Pod, http_port: i32) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    Some(if ip.contains(':') {
        format!("http://[{ip}]:{http_port}")
    } else {
        format!("http://{ip}:{http_port}")
    })
}

/// The IP a worker pod announces to browsers, when known.
pub fn announced_ip(pod: &Pod, spec: &SfuWorkerSpec) -> Option<String> {
    match spec.announced_address.source {
        AnnouncedAddressSource::NodeIp => pod.status.as_ref()?.host_ip.clone(),
        AnnouncedAddressSource::Fixed => spec.announced_address.ip.clone(),
        AnnouncedAddressSource::NodeExternalIp => pod.annotations().get(labels::ANNOUNCED_IP).cloned(),
    }
}

/// Everything the pool's status is computed from.
pub struct PoolObservation<'a> {
    pub pool: &'a SfuWorker,
    pub pods: &'a [Pod],
    /// Reports of the workers that answered, by pod name.
    pub stats: &'a HashMap<String, WorkerStats>,
    /// Committed load by pod UID (from Rooms' status).
    pub committed: &'a HashMap<String, Load>,
    pub conflict: Option<&'a PortConflict>,
    /// Set when the spec cannot be acted on (reported instead of creating broken pods).
    pub spec_error: Option<String>,
    pub now: Timestamp,
}

pub fn pool_status(o: &PoolObservation) -> SfuWorkerStatus {
    let spec = &o.pool.spec;
    let previous = o.pool.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = o.pool.metadata.generation;
    let hash = template_hash(spec);

    let mut workers: Vec<WorkerReplicaStatus> = o
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|pod| {
            let name = pod.name_any();
            let stats = o.stats.get(&name);
            let committed = o.committed.get(&pod.uid().unwrap_or_default()).copied().unwrap_or_default();
            WorkerReplicaStatus {
                node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                endpoint: endpoint(pod, spec.http_port),
                announced_ip: announced_ip(pod, spec),
                ready: is_ready(pod),
                draining: pod.annotations().contains_key(labels::DRAINING_SINCE),
                outdated: pod.annotations().get(labels::TEMPLATE_HASH) != Some(&hash),
                rooms: committed.rooms.max(stats.map_or(0, |s| s.rooms)) as i32,
                peers: stats.map(|s| s.peers as i32),
                pod: name,
            }
        })
        .collect();
    workers.sort_by_key(|w| {
        let ordinal: u32 = w.pod.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(u32::MAX);
        ordinal
    });

    let ready_replicas = workers.iter().filter(|w| w.ready).count() as i32;
    let serving = workers.iter().filter(|w| w.ready && !w.draining).count() as i32;
    let replicas = workers.len() as i32;
    let progressing = workers.iter().any(|w| w.draining || w.outdated) || replicas != spec.replicas;

    let ready = match (&o.spec_error, o.conflict) {
        (Some(err), _) => condition(&previous, "Ready", false, "InvalidSpec", err.clone(), generation, o.now),
        (None, Some(c)) if c.held => condition(
            &previous,
            "Ready",
            false,
            "PortConflict",
            format!("held: its ports clash with older pool(s) {} on nodes both may use", c.with.join(", ")),
            generation,
            o.now,
        ),
        _ if spec.replicas == 0 => condition(&previous, "Ready", true, "ScaledToZero", "no replicas requested", generation, o.now),
        _ if serving >= spec.replicas => condition(
            &previous,
            "Ready",
            true,
            "AllReplicasReady",
            format!("{serving} of {} replicas ready for rooms", spec.replicas),
            generation,
            o.now,
        ),
        _ => condition(
            &previous,
            "Ready",
            false,
            "ReplicasNotReady",
            format!("{serving} of {} replicas ready for rooms", spec.replicas),
            generation,
            o.now,
        ),
    };
    let progressing = if progressing {
        let draining = workers.iter().filter(|w| w.draining).count();
        let outdated = workers.iter().filter(|w| w.outdated).count();
        condition(
            &previous,
            "Progressing",
            true,
            "Reconciling",
            format!("{replicas} pods for {} replicas; {draining} draining, {outdated} outdated", spec.replicas),
            generation,
            o.now,
        )
    } else {
        condition(&previous, "Progressing", false, "Stable", "pods match the spec", generation, o.now)
    };
    let ports = match o.conflict {
        Some(c) => condition(
            &previous,
            "PortConflict",
            true,
            "PortsOverlap",
            format!(
                "ports clash with pool(s) {} that may run on the same node ({}); give each pool its own rtcPorts range and tcpPort, or disjoint nodeSelectors{}",
                c.with.join(", "),
                c.clashes.join("; "),
                if c.held { "; this (newer) pool starts no pods until resolved" } else { "" }
            ),
            generation,
            o.now,
        ),
        None => condition(&previous, "PortConflict", false, "NoOverlap", "rtcPorts and tcpPort clash with no other pool", generation, o.now),
    };

    SfuWorkerStatus {
        replicas,
        ready_replicas,
        selector: pool_selector(&o.pool.name_any()),
        port_range: Some(format!("{}-{}", spec.rtc_ports.min, spec.rtc_ports.max)),
        rooms: workers.iter().map(|w| w.rooms).sum(),
        peers: workers.iter().filter_map(|w| w.peers).sum(),
        workers,
        conditions: vec![ready, progressing, ports],
        observed_generation: generation,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pod::tests::pool;
    use crate::pod::worker_pod;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    pub(crate) fn running(pool: &SfuWorker, ordinal: u32, ready: bool) -> Pod {
        let mut pod = worker_pod(pool, ordinal);
        pod.metadata.uid = Some(format!("pod-uid-{ordinal}"));
        pod.spec.as_mut().unwrap().node_name = Some(format!("node-{ordinal}"));
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(format!("10.0.0.{}", ordinal + 1)),
            host_ip: Some(format!("10.0.0.{}", ordinal + 1)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn cond<'a>(s: &'a SfuWorkerStatus, t: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn status_lists_each_replica_with_its_endpoint_load_and_readiness() {
        let mut p = pool("sfu", 2);
        p.metadata.generation = Some(3);
        let pods = [running(&p, 0, true), running(&p, 1, false)];
        let stats = HashMap::from([("sfu-0".to_string(), WorkerStats { rooms: 2, peers: 7, ..Default::default() })]);
        let committed = HashMap::from([("pod-uid-0".to_string(), Load { rooms: 3, peers: 30 })]);
        let s = pool_status(&PoolObservation {
            pool: &p, pods: &pods, stats: &stats, committed: &committed, conflict: None, spec_error: None, now: now(),
        });
        assert_eq!((s.replicas, s.ready_replicas, s.rooms, s.peers), (2, 1, 3, 7));
        assert_eq!(s.selector, "fanout.dev/sfuworker=sfu");
        assert_eq!(s.observed_generation, Some(3));
        let w0 = &s.workers[0];
        assert_eq!(w0.pod, "sfu-0");
        assert_eq!(w0.endpoint.as_deref(), Some("http://10.0.0.1:3000"));
        assert_eq!(w0.announced_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(w0.node.as_deref(), Some("node-0"));
        assert!(w0.ready && !w0.draining && !w0.outdated);
        assert_eq!((w0.rooms, w0.peers), (3, Some(7)));
        assert_eq!(s.workers[1].peers, None, "no report from a worker that was not asked");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Ready").message, "1 of 2 replicas ready for rooms");
    }

    #[test]
    fn a_full_healthy_pool_is_ready_and_stable() {
        let p = pool("sfu", 2);
        let pods = [running(&p, 0, true), running(&p, 1, true)];
        let s = pool_status(&PoolObservation {
            pool: &p, pods: &pods, stats: &HashMap::new(), committed: &HashMap::new(), conflict: None, spec_error: None, now: now(),
        });
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Progressing").status, "False");
        assert_eq!(cond(&s, "PortConflict").status, "False");
    }

    #[test]
    fn a_held_conflicting_pool_says_so_on_ready_and_port_conflict() {
        let p = pool("b", 1);
        let conflict = PortConflict { with: vec!["a".into()], clashes: vec!["pool a: tcpPort 50000 is its tcpPort too".into()], held: true };
        let s = pool_status(&PoolObservation {
            pool: &p, pods: &[], stats: &HashMap::new(), committed: &HashMap::new(), conflict: Some(&conflict), spec_error: None, now: now(),
        });
        assert_eq!(cond(&s, "PortConflict").status, "True");
        assert!(cond(&s, "PortConflict").message.contains("pool(s) a"));
        assert!(cond(&s, "PortConflict").message.contains("tcpPort 50000 is its tcpPort too"), "{}", cond(&s, "PortConflict").message);
        assert_eq!(cond(&s, "Ready").reason, "PortConflict");
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let p = pool("sfu", 1);
        let mut pod = running(&p, 0, true);
        pod.status.as_mut().unwrap().pod_ip = Some("fd00::5".into());
        assert_eq!(endpoint(&pod, 3000).as_deref(), Some("http://[fd00::5]:3000"));
    }
}
