//! The SfuWorker reconciler: keeps a pool's pods as [`crate::pool::plan`] says, resolves
//! announced addresses, and writes the pool's status.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use fanout_worker::api::WorkerStats;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::{retry_after, Context};
use crate::crd::{labels, AnnouncedAddressSource, SfuWorker, SfuWorkerSpec, FIELD_MANAGER};
use crate::metrics::{ControllerLabels, ErrorLabels, PodLabels};
use crate::pod::{pool_selector, template_hash, worker_pod};
use crate::pool::{is_ready, plan, port_conflicts, ObservedPod, PoolAction, PoolPorts};
use crate::status::{endpoint, pool_status, PoolObservation};
use crate::{Error, Result};

const CONTROLLER: &str = "sfuworker";

/// How often a pool is looked at even when nothing changes, to refresh the workers' load.
const RESYNC: Duration = Duration::from_secs(30);

pub async fn reconcile(pool: Arc<SfuWorker>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.get_or_create(&ControllerLabels { controller: CONTROLLER }).inc();
    let ns = pool.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = pool.name_any();
    let pool_uid = pool.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();

    // Fresh list rather than the cache: creating a pod twice must not depend on watch lag.
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&pool_selector(&name)))
        .await?
        .items
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == pool_uid))
        .collect();

    let spec_error = validate(&pool.spec);
    let conflicts = port_conflicts(&all_pool_ports(&ctx));
    let conflict = conflicts.get(&format!("{ns}/{name}"));
    let committed = {
        let rooms = ctx.rooms.state();
        ctx.ledger().commitments(rooms)
    };
    let stats = fetch_stats(&ctx, &pods, pool.spec.http_port).await;

    let observed: Vec<ObservedPod> = pods
        .iter()
        .map(|p| {
            let committed_rooms = p.uid().and_then(|u| committed.get(&u)).map_or(0, |l| l.rooms);
            let reported = stats.get(&p.name_any()).map_or(0, |s| s.rooms);
            ObservedPod::from_pod(p, committed_rooms.max(reported))
        })
        .collect();
    let hold = spec_error.is_some() || conflict.is_some_and(|c| c.held);
    let drain_timeout = Duration::from_secs(pool.spec.drain_timeout_seconds.max(0) as u64);
    let plan = plan(pool.spec.replicas.max(0) as u32, &template_hash(&pool.spec), &observed, drain_timeout, now, hold);

    for action in &plan.actions {
        execute(&ctx, &pool, &pods_api, action, now).await?;
    }
    if pool.spec.announced_address.source == AnnouncedAddressSource::NodeExternalIp {
        resolve_external_ips(&ctx, &pool, &pods_api, &pods).await?;
    }

    for p in &pods {
        let rooms = p.uid().and_then(|u| committed.get(&u)).map_or(0, |l| l.rooms);
        ctx.metrics
            .rooms_per_worker
            .get_or_create(&PodLabels { namespace: ns.clone(), pod: p.name_any() })
            .set(rooms as i64);
    }

    let status = pool_status(&PoolObservation {
        pool: &pool,
        pods: &pods,
        stats: &stats,
        committed: &committed,
        conflict,
        spec_error,
        now,
    });
    if pool.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": "fanout.dev/v1alpha1",
            "kind": "SfuWorker",
            "status": status,
        });
        Api::<SfuWorker>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    let next = plan.recheck_after.map_or(RESYNC, |d| d.min(RESYNC));
    Ok(Action::requeue(next))
}

pub fn error_policy(_pool: Arc<SfuWorker>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels { controller: CONTROLLER, error: error.metric_label() })
        .inc();
    tracing::warn!(%error, "sfuworker reconcile failed");
    retry_after(error)
}

/// Problems the schema cannot catch, reported on the pool's Ready condition.
pub fn validate(spec: &SfuWorkerSpec) -> Option<String> {
    if spec.rtc_ports.max < spec.rtc_ports.min {
        return Some(format!("rtcPorts.max ({}) is below rtcPorts.min ({})", spec.rtc_ports.max, spec.rtc_ports.min));
    }
    // One pod cannot listen on one TCP port for both (the API server refuses a pod that
    // declares a hostPort twice).
    if spec.enable_tcp && spec.tcp_port == spec.http_port {
        return Some(format!("tcpPort and httpPort are both {}: give ICE-TCP and the REST API different ports", spec.tcp_port));
    }
    if spec.announced_address.source == AnnouncedAddressSource::Fixed {
        match spec.announced_address.ip.as_deref() {
            None | Some("") => return Some("announcedAddress.source is Fixed but announcedAddress.ip is empty".into()),
            Some(ip) if ip.parse::<IpAddr>().is_err() => {
                return Some(format!("announcedAddress.ip {ip:?} is not an IP address"));
            }
            _ => {}
        }
    }
    None
}

fn all_pool_ports(ctx: &Context) -> Vec<PoolPorts> {
    ctx.pools
        .state()
        .iter()
        .map(|p| PoolPorts {
            name: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
            created: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            rtc_ports: p.spec.rtc_ports,
            tcp_port: p.spec.enable_tcp.then_some(p.spec.tcp_port),
            http_port: p.spec.http_port,
            node_selector: p.spec.node_selector.clone(),
        })
        .collect()
}

/// Asks every ready worker for its load, concurrently, each bounded by the stats timeout.
async fn fetch_stats(ctx: &Context, pods: &[Pod], http_port: i32) -> HashMap<String, WorkerStats> {
    let asks = pods.iter().filter(|p| is_ready(p)).filter_map(|p| {
        let endpoint = endpoint(p, http_port)?;
        let name = p.name_any();
        Some(async move {
            let answer = tokio::time::timeout(ctx.config.stats_timeout, ctx.workers.stats(&endpoint)).await;
            match answer {
                Ok(Ok(stats)) => Some((name, stats)),
                Ok(Err(e)) => {
                    tracing::debug!(pod = %name, error = %e, "worker stats unavailable");
                    None
                }
                Err(_) => None,
            }
        })
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

async fn execute(ctx: &Context, pool: &SfuWorker, pods: &Api<Pod>, action: &PoolAction, now: Timestamp) -> Result<()> {
    match action {
        PoolAction::Create { ordinal } => {
            let pod = worker_pod(pool, *ordinal);
            let pod_name = pod.name_any();
            match pods.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    let note = format!("created worker pod {pod_name}");
                    ctx.event_about(pool, Some(created.object_ref(&())), EventType::Normal, "CreatedPod", note).await
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        PoolAction::Drain { pod, reason } => {
            let patch = serde_json::json!({"metadata": {"annotations": {
                labels::DRAINING_SINCE: now.to_string(),
                labels::DRAIN_REASON: reason.as_str(),
            }}});
            pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            let note = format!("draining {pod} ({}): no new rooms", reason.as_str());
            ctx.event_about(pool, Some(pod_ref(pool, pod)), EventType::Normal, "Draining", note).await;
        }
        PoolAction::Undrain { pod } => {
            let patch = serde_json::json!({"metadata": {"annotations": {
                labels::DRAINING_SINCE: null,
                labels::DRAIN_REASON: null,
            }}});
            pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            let note = format!("{pod} takes rooms again");
            ctx.event_about(pool, Some(pod_ref(pool, pod)), EventType::Normal, "DrainCancelled", note).await;
        }
        PoolAction::Delete { pod, reason } => {
            match pods.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            let note = format!("deleted worker pod {pod} ({reason:?})");
            ctx.event_about(pool, Some(pod_ref(pool, pod)), EventType::Normal, "DeletedPod", note).await;
        }
    }
    Ok(())
}

fn pod_ref(pool: &SfuWorker, pod: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.into()),
        namespace: pool.namespace(),
        ..Default::default()
    }
}

/// For `NodeExternalIP` pools: copies the node's ExternalIP into the pod's annotation, which
/// the kubelet projects into the worker's announced-IP file.
async fn resolve_external_ips(ctx: &Context, pool: &SfuWorker, pods_api: &Api<Pod>, pods: &[Pod]) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    for pod in pods {
        if pod.annotations().contains_key(labels::ANNOUNCED_IP) {
            continue;
        }
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        let Some(node) = nodes.get_opt(&node_name).await? else { continue };
        let external = node
            .status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "ExternalIP")
            .map(|a| a.address);
        match external {
            Some(ip) => {
                let patch = serde_json::json!({"metadata": {"annotations": {labels::ANNOUNCED_IP: ip}}});
                pods_api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            None => {
                ctx.event(
                    pool,
                    EventType::Warning,
                    "NoExternalIP",
                    format!("node {node_name} of {} has no ExternalIP; use announcedAddress.source NodeIP or Fixed", pod.name_any()),
                )
                .await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AnnouncedAddress;
    use crate::pod::tests::pool;

    #[test]
    fn fixed_address_needs_a_valid_ip() {
        let mut p = pool("sfu", 1).spec;
        assert_eq!(validate(&p), None);
        p.announced_address = AnnouncedAddress { source: AnnouncedAddressSource::Fixed, ip: None };
        assert!(validate(&p).unwrap().contains("ip is empty"));
        p.announced_address.ip = Some("not-an-ip".into());
        assert!(validate(&p).unwrap().contains("not an IP"));
        p.announced_address.ip = Some("2001:db8::1".into());
        assert_eq!(validate(&p), None);
    }

    #[test]
    fn ice_tcp_on_the_api_port_is_reported_unless_ice_tcp_is_off() {
        let mut p = pool("sfu", 1).spec;
        p.tcp_port = p.http_port;
        assert!(validate(&p).unwrap().contains("tcpPort and httpPort are both"));
        p.enable_tcp = false;
        assert_eq!(validate(&p), None);
    }

    #[test]
    fn inverted_port_range_is_reported() {
        let mut p = pool("sfu", 1).spec;
        p.rtc_ports.min = 50000;
        p.rtc_ports.max = 40000;
        assert!(validate(&p).unwrap().contains("below rtcPorts.min"));
    }
}
