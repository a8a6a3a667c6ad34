//! The sweep that gives executions started outside Flowline a Run: every interval, each
//! Ready Flow's new executions are listed (one ListExecutions page in steady state) and those
//! that are not a Run's own get a Run that tracks them. Decisions are in
//! [`crate::reconcilers::discovery`].

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{Flow, Run};
use crate::aws;
use crate::compile::trigger::schedule_of_input;
use crate::reconcilers::discovery::{WATERMARK_ANNOTATION, adopted_run, to_adopt, watermark};

use super::{Context, ReconcileError};

/// Sweeps forever, every `interval`; a failed sweep is logged and retried at the next one.
pub async fn sweep_forever(ctx: Arc<Context>, flows: Api<Flow>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let listed = match flows.list(&Default::default()).await {
            Ok(listed) => listed.items,
            Err(error) => {
                warn!(%error, "could not list Flows for execution discovery");
                continue;
            }
        };
        for flow in listed {
            if let Err(error) = sweep_flow(&ctx, &flow).await {
                warn!(flow = %flow.name_any(), namespace = %flow.namespace().unwrap_or_default(), %error, "execution discovery failed");
            }
        }
    }
}

/// Adopts one Flow's new executions and moves its watermark past everything listed.
async fn sweep_flow(ctx: &Context, flow: &Flow) -> Result<(), ReconcileError> {
    if flow.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let Some(machine_arn) = flow
        .status
        .as_ref()
        .and_then(|s| s.state_machine_arn.clone())
    else {
        return Ok(());
    };
    let namespace = flow.namespace().unwrap_or_default();
    let since = watermark(flow);
    let listed = aws::sfn::list_executions_since(&ctx.sfn, &machine_arn, since)
        .await
        .map_err(ReconcileError::Aws)?;
    let runs: Api<Run> = Api::namespaced(ctx.kube.clone(), &namespace);
    for execution in to_adopt(&listed) {
        let probe = adopted_run(flow, execution, None);
        if runs
            .get_opt(&probe.name_any())
            .await
            .map_err(ReconcileError::Kube)?
            .is_some()
        {
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
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(ReconcileError::Kube(error)),
        }
    }
    if let Some(newest) = listed
        .iter()
        .map(|e| e.start_ms)
        .max()
        .filter(|n| *n > since)
    {
        let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &namespace);
        let patch =
            json!({"metadata": {"annotations": {WATERMARK_ANNOTATION: newest.to_string()}}});
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
