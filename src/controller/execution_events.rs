//! Wakes Runs from Step Functions' execution status change events: an EventBridge rule
//! delivers them to an SQS queue, and each event for an execution a Run tracks touches that
//! Run (an annotation), so its reconcile reads the new state at once instead of at its next
//! poll. An event for an execution no Run tracks (started by a Schedule's rule or the
//! console) makes discovery list that Flow's executions at once, so it gets its Run without
//! waiting for the next sweep of every Flow.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use crate::api::Run;
use crate::aws;
use crate::reconcilers::discovery::machine_to_sweep;
use crate::reconcilers::run::execution_status_change;

use super::Context;

/// Annotation on a Run: the last execution status change event that woke it.
pub const EVENT_ANNOTATION: &str = "flowline.io/execution-event";

/// Consumes the queue until the process stops; failures are logged and retried after a pause
/// that grows while they last.
pub async fn consume_forever(ctx: Arc<Context>, queue_url: String) {
    info!(%queue_url, "waking Runs from execution status change events");
    let mut failures: u32 = 0;
    loop {
        let messages = match aws::sqs::receive(&ctx.sqs, &queue_url).await {
            Ok(messages) => {
                failures = 0;
                messages
            }
            Err(error) => {
                // 5 s, doubling to 40 s while the queue stays unreadable (deleted, denied):
                // polling covers the Runs meanwhile.
                failures = failures.saturating_add(1);
                let pause = Duration::from_secs(5 << failures.min(4).saturating_sub(1))
                    .min(Duration::from_secs(60));
                warn!(%queue_url, %error, retry_in_seconds = pause.as_secs(), "could not receive execution events");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        for message in &messages {
            let Some((execution_arn, status)) = execution_status_change(&message.body) else {
                continue;
            };
            let Some((namespace, name)) = ctx.run_of_execution(&execution_arn) else {
                // An execution no Run tracks: started elsewhere (a Schedule's rule, the
                // console), so discovery gives it a Run now instead of at its next sweep.
                if let Some(machine) = machine_to_sweep(&execution_arn) {
                    ctx.nudge_discovery(machine);
                }
                continue;
            };
            // The Run started the execution and knows it runs: only its end wakes it.
            if status == "RUNNING" {
                continue;
            }
            let runs: Api<Run> = Api::namespaced(ctx.kube.clone(), &namespace);
            let patch = json!({"metadata": {"annotations": {EVENT_ANNOTATION: status}}});
            match runs
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(error) => warn!(run = %name, %namespace, %error, "could not wake a Run"),
            }
        }
        // At-least-once: a message not deleted comes back, and waking a Run twice is harmless.
        if let Err(error) = aws::sqs::delete(&ctx.sqs, &queue_url, &messages).await {
            warn!(%queue_url, %error, "could not delete execution events");
        }
    }
}
