//! The Recording reconciler: the calls and writes around [`crate::recording`]'s decisions.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::{retry_after, Context};
use crate::crd::{Recording, RecordingPhase, RecordingStatus, FIELD_MANAGER};
use crate::metrics::{ControllerLabels, ErrorLabels};
use crate::recording::{after, cleanup_after, cleanup_call, next, Answer, Call, CallKind, Cleanup, RoomView, Step, RECORDING_CONDITION};
use crate::{Error, Result};

/// Finalizer that stops the recording on its worker before the Recording object goes away.
pub const FINALIZER: &str = "fanout.dev/stop-recording";

const CONTROLLER: &str = "recording";

pub async fn reconcile(rec: Arc<Recording>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.get_or_create(&ControllerLabels { controller: CONTROLLER }).inc();
    let ns = rec.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Recording> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, rec, |event| async {
        match event {
            Finalizer::Apply(rec) => apply(&rec, &api, &ctx).await,
            Finalizer::Cleanup(rec) => cleanup(&rec, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(_rec: Arc<Recording>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels { controller: CONTROLLER, error: error.metric_label() })
        .inc();
    tracing::warn!(%error, "recording reconcile failed");
    retry_after(error)
}

/// The id the worker knows the recording by: the object's UID, unique across re-creations
/// under the same name (so a new Recording never continues an old one's files), and within the
/// worker's id rule (letters, digits and `-`).
fn recording_id(rec: &Recording) -> Result<String> {
    rec.uid().ok_or(Error::MissingField("metadata.uid"))
}

async fn call_worker(ctx: &Context, rec: &Recording, call: &Call) -> Result<Answer> {
    let id = recording_id(rec)?;
    let (endpoint, room) = (call.worker.endpoint.as_str(), rec.spec.room_name.as_str());
    let result = match call.kind {
        CallKind::Start => ctx.workers.start_recording(endpoint, room, &id).await,
        CallKind::Poll => ctx.workers.recording(endpoint, room, &id).await,
        CallKind::Stop => ctx.workers.stop_recording(endpoint, room, &id).await,
    };
    Ok(Answer::from_result(result))
}

async fn apply(rec: &Recording, api: &Api<Recording>, ctx: &Context) -> Result<Action> {
    let ns = rec.namespace().unwrap_or_default();
    let room = ctx.rooms.get(&ObjectRef::new(&rec.spec.room_name).within(&ns));
    let view = RoomView::of(room.as_deref());
    let outcome = match next(rec, &view, Timestamp::now()) {
        Step::Write(outcome) => outcome,
        Step::Call(call) => {
            let answer = call_worker(ctx, rec, &call).await?;
            after(rec, &view, &call, answer, Timestamp::now())
        }
    };
    announce(ctx, rec, &outcome.status).await;
    write_status(rec, api, outcome.status).await?;
    Ok(outcome.requeue.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// An Event when the phase or the reason changes (not at every poll).
async fn announce(ctx: &Context, rec: &Recording, status: &RecordingStatus) {
    let reason_of = |s: Option<&RecordingStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == RECORDING_CONDITION)).map(|c| (c.reason.clone(), c.message.clone()))
    };
    let before = (rec.status.as_ref().and_then(|s| s.phase), reason_of(rec.status.as_ref()).map(|r| r.0));
    let Some((reason, message)) = reason_of(Some(status)) else { return };
    if before == (status.phase, Some(reason.clone())) {
        return;
    }
    let type_ = match (status.phase, reason.as_str()) {
        (Some(RecordingPhase::Failed), _) | (_, "WorkerUnreachable" | "RecordingDisabled") => EventType::Warning,
        _ => EventType::Normal,
    };
    ctx.event(rec, type_, &reason, message).await;
}

/// Stops the recording on its worker, then lets the object go.
async fn cleanup(rec: &Recording, ctx: &Context) -> Result<Action> {
    let Some(call) = cleanup_call(rec) else { return Ok(Action::await_change()) };
    let answer = call_worker(ctx, rec, &call).await?;
    match cleanup_after(rec, &call, &answer, Timestamp::now()) {
        Cleanup::Release { note } => {
            if let Some(note) = note {
                tracing::info!(recording = %rec.name_any(), pod = %call.worker.pod, "{note}");
            } else {
                ctx.event(rec, EventType::Normal, "Stopped", format!("stopped on {} before deletion", call.worker.pod)).await;
            }
            Ok(Action::await_change())
        }
        Cleanup::Retry(after) => {
            tracing::info!(recording = %rec.name_any(), pod = %call.worker.pod, ?answer, "worker refused to stop the recording; retrying");
            Ok(Action::requeue(after.max(Duration::from_secs(1))))
        }
    }
}

/// Writes the status with server-side apply, skipping equal writes; conditional on the
/// resourceVersion the decision was made on, as for Rooms.
async fn write_status(rec: &Recording, api: &Api<Recording>, status: RecordingStatus) -> Result<()> {
    if rec.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "fanout.dev/v1alpha1",
        "kind": "Recording",
        "metadata": { "resourceVersion": rec.resource_version() },
        "status": status,
    });
    api.patch_status(&rec.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}
