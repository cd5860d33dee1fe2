//! The Room reconciler: places rooms, keeps them placed, moves them off lost pods, and closes
//! them on their worker when deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout_worker::client::ClientError;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::{retry_after, Context};
use crate::crd::{condition, Placement, Room, RoomPhase, RoomStatus, FIELD_MANAGER};
use crate::empty_room::{judge, Occupancy, Verdict};
use crate::metrics::{ControllerLabels, ErrorLabels, OutcomeLabels};
use crate::placement::{decide_and_reserve, placement_health, Cluster, PlacementHealth};
use crate::{selector, Error, Result};

/// Finalizer that closes the room on its worker before the Room object goes away.
pub const FINALIZER: &str = "fanout.dev/close-on-worker";

/// How often an unschedulable room is tried again even if no watched object changes.
const PENDING_RETRY: Duration = Duration::from_secs(30);

const CONTROLLER: &str = "room";

/// How stale the ledger's reading of the Room cache may be. Our own placements count at once
/// regardless; staleness only delays noticing rooms deleted by others (conservative).
const LEDGER_MAX_AGE: Duration = Duration::from_millis(500);

pub async fn reconcile(room: Arc<Room>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.get_or_create(&ControllerLabels { controller: CONTROLLER }).inc();
    let ns = room.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Room> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, room, |event| async {
        match event {
            Finalizer::Apply(room) => apply(&room, &api, &ctx).await,
            Finalizer::Cleanup(room) => cleanup(&room, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(_room: Arc<Room>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels { controller: CONTROLLER, error: error.metric_label() })
        .inc();
    tracing::warn!(%error, "room reconcile failed");
    retry_after(error)
}

async fn apply(room: &Room, api: &Api<Room>, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    if let Some(sel) = &room.spec.worker_selector
        && let Err(e) = selector::validate(sel)
    {
        let status = status_for(room, None, RoomPhase::Failed, false, "InvalidWorkerSelector", e.to_string(), now);
        write_status(room, api, status).await?;
        return Ok(Action::await_change());
    }

    let current = room.status.as_ref().and_then(|s| s.placement.clone());
    let Some(placement) = current else {
        return place(room, api, ctx, None, now).await;
    };
    let ns = room.namespace().unwrap_or_default();
    let pod = ctx.pods.get(&ObjectRef::new(&placement.pod).within(&ns));
    match placement_health(&placement, pod.as_deref(), now, ctx.config.reschedule_grace) {
        PlacementHealth::Healthy => {
            let message = format!("placed on {} ({})", placement.pod, placement.endpoint);
            let mut status = status_for(room, Some(placement.clone()), RoomPhase::Scheduled, true, "Scheduled", message, now);
            let Some(timeout) = room.spec.empty_timeout_seconds.filter(|t| *t > 0) else {
                write_status(room, api, status).await?;
                return Ok(Action::await_change());
            };
            let timeout = Duration::from_secs(timeout as u64);
            let occupancy = occupancy(ctx, &placement.endpoint, &room.name_any()).await;
            let since = room.status.as_ref().and_then(|s| s.empty_since.as_ref()).map(|t| t.0);
            match judge(timeout, since, occupancy, now) {
                Verdict::Keep { empty_since, recheck_after } => {
                    status.empty_since = empty_since.map(MicroTime);
                    write_status(room, api, status).await?;
                    Ok(Action::requeue(recheck_after))
                }
                Verdict::Delete { empty_for } => {
                    let note = format!(
                        "no peers on {} for {}s (emptyTimeoutSeconds {}); deleting the room",
                        placement.pod,
                        empty_for.as_secs(),
                        timeout.as_secs()
                    );
                    ctx.event(room, EventType::Normal, "EmptyTimeout", note).await;
                    // Only this Room: not one recreated under the same name meanwhile.
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions { uid: room.uid(), resource_version: None }),
                        ..Default::default()
                    };
                    match api.delete(&room.name_any(), &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                    // The finalizer closes it on the worker next.
                    Ok(Action::await_change())
                }
            }
        }
        PlacementHealth::Unready { recheck_after } => Ok(Action::requeue(recheck_after)),
        PlacementHealth::Lost(why) => {
            ctx.event(room, EventType::Warning, "PlacementLost", format!("{why}; moving the room")).await;
            place(room, api, ctx, Some(&placement), now).await
        }
    }
}

/// Schedules the room (again, when `previous` is its lost placement) and records the result.
async fn place(room: &Room, api: &Api<Room>, ctx: &Context, previous: Option<&Placement>, now: Timestamp) -> Result<Action> {
    let started = Instant::now();
    let uid = room.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let ns = room.namespace().unwrap_or_default();

    // Decide and reserve under the ledger lock: no other room can claim the same capacity
    // between our decision and our reservation. No await happens while it is held.
    let decision = {
        let mut ledger = ctx.ledger();
        ledger.refresh_if_older_than(LEDGER_MAX_AGE, Instant::now(), || ctx.rooms.state());
        let (pools, pods) = (ctx.pools.state(), ctx.pods.state());
        decide_and_reserve(
            &mut ledger,
            &Cluster { namespace: &ns, pools: &pools, pods: &pods },
            room,
            &uid,
            ctx.config.policy,
            previous,
        )
    };

    match decision {
        Ok(placement) => {
            let message = format!("placed on {} ({})", placement.pod, placement.endpoint);
            let status = status_for(room, Some(placement.clone()), RoomPhase::Scheduled, true, "Scheduled", message.clone(), now);
            if let Err(e) = write_status(room, api, status).await {
                ctx.ledger().forget(&uid);
                return Err(e);
            }
            ctx.metrics.scheduling_latency.observe(started.elapsed().as_secs_f64());
            let (outcome, reason) = if previous.is_some() { ("rescheduled", "Rescheduled") } else { ("scheduled", "Scheduled") };
            ctx.metrics.scheduling_decisions.get_or_create(&OutcomeLabels { outcome }).inc();
            ctx.event(room, EventType::Normal, reason, message).await;
            Ok(Action::await_change())
        }
        Err(why) => {
            ctx.metrics.scheduling_decisions.get_or_create(&OutcomeLabels { outcome: "unschedulable" }).inc();
            let message = why.to_string();
            let unchanged = room
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Scheduled"))
                .is_some_and(|c| c.status == "False" && c.message == message);
            let status = status_for(room, None, RoomPhase::Pending, false, why.reason(), message.clone(), now);
            if let Err(e) = write_status(room, api, status).await {
                ctx.ledger().forget(&uid);
                return Err(e);
            }
            if !unchanged {
                ctx.event(room, EventType::Warning, why.reason(), message).await;
            }
            Ok(Action::requeue(PENDING_RETRY))
        }
    }
}

/// How many peers the room's worker reports in it, within the stats timeout.
async fn occupancy(ctx: &Context, endpoint: &str, room: &str) -> Occupancy {
    match tokio::time::timeout(ctx.config.stats_timeout, ctx.workers.room_peers(endpoint, room)).await {
        Ok(Ok(peers)) => Occupancy::Peers(peers),
        Ok(Err(e)) => {
            tracing::debug!(%room, %endpoint, error = %e, "room occupancy unavailable");
            Occupancy::Unknown
        }
        Err(_) => Occupancy::Unknown,
    }
}

/// Closes the room on its worker. A worker that is gone cannot hold the room any more, so it
/// does not block deletion; a worker that is there but fails is retried.
async fn cleanup(room: &Room, ctx: &Context) -> Result<Action> {
    if let Some(placement) = room.status.as_ref().and_then(|s| s.placement.as_ref()) {
        let ns = room.namespace().unwrap_or_default();
        let pod = ctx.pods.get(&ObjectRef::new(&placement.pod).within(&ns));
        let pod_alive = pod.is_some_and(|p| p.uid().as_deref() == Some(placement.pod_uid.as_str()));
        match ctx.workers.close_room(&placement.endpoint, &room.name_any()).await {
            Ok(()) => ctx.event(room, EventType::Normal, "Closed", format!("closed on {}", placement.pod)).await,
            Err(ClientError::Unavailable { .. }) | Err(_) if !pod_alive => {
                tracing::info!(room = %room.name_any(), pod = %placement.pod, "worker gone; nothing to close");
            }
            Err(ClientError::Unavailable { reason, .. }) => {
                tracing::info!(room = %room.name_any(), pod = %placement.pod, %reason, "worker unreachable; its rooms are gone with it");
            }
            Err(e) => {
                ctx.event(room, EventType::Warning, "CloseFailed", e.to_string()).await;
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
        }
    }
    if let Some(uid) = room.uid() {
        ctx.ledger().forget(&uid);
    }
    Ok(Action::await_change())
}

/// The full status the operator owns, with conditions stamped against the previous ones.
fn status_for(
    room: &Room,
    placement: Option<Placement>,
    phase: RoomPhase,
    scheduled: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> RoomStatus {
    let previous = room.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = room.metadata.generation;
    RoomStatus {
        phase: Some(phase),
        placement,
        conditions: vec![condition(&previous, "Scheduled", scheduled, reason, message, generation, now)],
        observed_generation: generation,
        empty_since: None,
    }
}

/// Writes the status with server-side apply, skipping the write when nothing changed (so a
/// resync of thousands of rooms costs no API writes). The decision was made on the cached
/// `room`: its resourceVersion makes the write conditional, so a decision taken on a copy
/// older than the server's (a reconcile that ran before the watch delivered this operator's
/// own last write, as after a leader takeover) is refused with a conflict and made again on
/// the fresh object, instead of placing a room twice.
async fn write_status(room: &Room, api: &Api<Room>, status: RoomStatus) -> Result<()> {
    if room.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "fanout.dev/v1alpha1",
        "kind": "Room",
        "metadata": { "resourceVersion": room.resource_version() },
        "status": status,
    });
    api.patch_status(&room.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}
