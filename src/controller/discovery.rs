//! The sweep that gives executions started outside Flowline a Run: every interval, each
//! Ready Flow's new executions are listed (one ListExecutions page in steady state) and those
//! that are not a Run's own get a Run that tracks them. Decisions are in
//! [`crate::reconcilers::discovery`].

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tracing::{info, warn};

use crate::api::{Flow, Run};
use crate::aws;
use crate::compile::trigger::schedule_of_input;
use crate::reconcilers::discovery::{
    Adopted, LISTING_MARGIN_MS, adopted_run, full_sweep_interval, to_adopt,
};

use super::{Context, ReconcileError};

/// Sweeps forever: every Flow every `interval` (once per drift interval while execution
/// events flow, see [`full_sweep_interval`]), and at once the Flows whose state machine an
/// execution status change event named for an execution no Run tracks. A failed sweep is
/// logged and retried at the next one. The Flows come from the Flow controller's cache:
/// listing them from the API server on every sweep cost a full list of every Flow each
/// interval. A Flow the cache has not seen yet is swept at the next interval; its cursor keeps
/// what an earlier sweep adopted.
pub async fn sweep_forever(ctx: Arc<Context>, flows: Store<Flow>, interval: Duration) {
    let mut next_full = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_full) => {
                for flow in flows.state() {
                    sweep_logged(&ctx, &flow).await;
                }
                let events_ready = ctx.metrics.execution_events_ready.get() == 1;
                next_full = tokio::time::Instant::now()
                    + full_sweep_interval(interval, ctx.drift_interval, events_ready);
            }
            () = ctx.discovery_nudged() => {
                let machines = ctx.take_discovery_nudges();
                for flow in flows.state() {
                    if machines.contains(&super::flow::own_state_machine_arn(&ctx, &flow)) {
                        sweep_logged(&ctx, &flow).await;
                    }
                }
            }
        }
    }
}

async fn sweep_logged(ctx: &Context, flow: &Flow) {
    if let Err(error) = sweep_flow(ctx, flow).await {
        warn!(flow = %flow.name_any(), namespace = %flow.namespace().unwrap_or_default(), %error, "execution discovery failed");
    }
}

/// Adopts one Flow's new executions and moves its watermark past everything listed.
async fn sweep_flow(ctx: &Context, flow: &Flow) -> Result<(), ReconcileError> {
    if flow.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    if flow
        .status
        .as_ref()
        .and_then(|s| s.state_machine_arn.as_ref())
        .is_none()
    {
        return Ok(());
    }
    // The Flow's own machine, from its UID: its status may name another namespace's.
    let machine_arn = super::flow::own_state_machine_arn(ctx, flow);
    let namespace = flow.namespace().unwrap_or_default();
    let uid = flow.uid().unwrap_or_default();
    let mut adopted = Adopted::of(flow);
    let persisted = adopted.until;
    let cursor = ctx
        .discovery_cursor(&uid)
        .unwrap_or(persisted)
        .max(persisted);
    // Listing is eventually consistent: look a minute behind the cursor; executions seen
    // twice are found by their Run's name and skipped.
    let since = cursor.saturating_sub(LISTING_MARGIN_MS);
    let listed = aws::sfn::list_executions_since(&ctx.sfn, &machine_arn, since)
        .await
        .map_err(ReconcileError::Aws)?;
    let runs: Api<Run> = Api::namespaced(ctx.kube.clone(), &namespace);
    let mut newly_adopted = false;
    for execution in to_adopt(&listed, &Adopted::of(flow)) {
        let probe = adopted_run(flow, execution, None);
        if runs
            .get_opt(&probe.name_any())
            .await
            .map_err(ReconcileError::Kube)?
            .is_some()
        {
            adopted.record(execution);
            newly_adopted = true;
            continue;
        }
        let described = aws::sfn::describe_execution(&ctx.sfn, &execution.arn)
            .await
            .map_err(ReconcileError::Aws)?;
        let schedule = described.input.as_deref().and_then(schedule_of_input);
        let run = adopted_run(flow, execution, schedule.as_deref());
        match runs.create(&PostParams::default(), &run).await {
            Ok(_) => {
                info!(run = %run.name_any(), %namespace, execution = %execution.arn, schedule = ?schedule, "created a Run for an execution started outside Flowline");
                adopted.record(execution);
                newly_adopted = true;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                adopted.record(execution);
                newly_adopted = true;
            }
            // A Run the API refuses (e.g. invalid) would be refused on every sweep: skip it
            // rather than stop discovery for the whole Flow.
            Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
                warn!(%namespace, execution = %execution.arn, message = %status.message, "the Run for an execution was refused; skipped");
            }
            Err(error) => return Err(ReconcileError::Kube(error)),
        }
    }
    if let Some(newest) = listed.iter().map(|e| e.start_ms).max() {
        ctx.set_discovery_cursor(&uid, newest.max(cursor));
    }
    // Persisted only when something was adopted (one Flow write per sweep that adopted, not
    // per Run): it keeps Runs deleted by the history limits or by a person from coming back,
    // in later sweeps and after a restart.
    if newly_adopted {
        let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &namespace);
        let patch = json!({"metadata": {"annotations": adopted.annotations()}});
        flows
            .patch(
                &flow.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(ReconcileError::Kube)?;
    }
    Ok(())
}
