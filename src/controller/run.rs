//! The Run reconciler's I/O shell: check the Flow and the parameters, start the execution on
//! the Flow's current state machine version (named after the Run's UID, so a crash never
//! starts a second one), track it into the Run's status, stop it on `spec.stop` or deletion.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::api::{
    EXECUTION_ARN_ANNOTATION, FINALIZER, Flow, ForeachStatus, MAX_FOREACH_TASKS_READ,
    MAX_LISTED_ARTIFACTS, Run, RunOrigin, RunPhase, RunStatus, SCHEDULE_LABEL, StepPhase,
};
use crate::aws;
use crate::aws::error::ErrorClass;
use crate::compile::{self, naming};
use crate::reconcilers::artifacts::{
    MAX_MANIFESTS_READ, TaskManifest, from_manifests, manifest_tasks, parse_manifest,
};
use crate::reconcilers::conditions::{Health, run_health, set_finished, set_health};
use crate::reconcilers::ownership;
use crate::reconcilers::run::{
    FinishedRun, RUNNABLE_HINT, check_parameters, failure_message, history_every, history_prunable,
    is_node_job, map_runs, merge_task_steps, phase_of, poll_interval, runs_to_prune, step_statuses,
    unrecorded_execution_arn,
};
use crate::reconcilers::status_budget::STATUS_BUDGET_BYTES;
use crate::task::layout::MANIFEST_NAME;

use super::report::{now, publish, write_status_guarded};
use super::{Context, ReconcileError};

/// The health of a Run whose execution is running normally.
const RUNNING: Health<'static> = Health::Reconciling {
    reason: "Running",
    message: "the execution is running",
};

/// How often a running execution is polled.
const POLL: Duration = Duration::from_secs(3);

pub async fn reconcile(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = run.namespace().unwrap_or_default();
    let api: Api<Run> = Api::namespaced(ctx.kube.clone(), &namespace);
    finalizer(&api, FINALIZER, run, |event| async {
        match event {
            Finalized::Apply(run) => apply(&run, &api, &ctx).await,
            Finalized::Cleanup(run) => {
                super::cleanup::guarded(run.as_ref(), &api, &ctx, cleanup(&run, &ctx)).await
            }
        }
    })
    .await
    .map_err(|error| ReconcileError::Finalizer(Box::new(error)))
}

async fn apply(run: &Run, api: &Api<Run>, ctx: &Context) -> Result<Action, ReconcileError> {
    let previous = run.status.clone().unwrap_or_default();
    if previous.phase.is_some_and(RunPhase::is_finished) {
        return Ok(Action::await_change());
    }
    let Some(execution_arn) = previous.execution_arn.clone() else {
        return start(run, api, ctx, previous).await;
    };
    // The status may have been written by anyone with `runs/status`: the execution is read
    // or stopped only if it is this Run's.
    if let Some(message) = foreign_execution(run, ctx, &execution_arn).await? {
        return stall(api, run, ctx, previous, "ForeignExecution", &message).await;
    }
    if run.spec.stop {
        aws::sfn::stop_execution(&ctx.sfn, &execution_arn)
            .await
            .map_err(ReconcileError::Aws)?;
        terminate_jobs(ctx, &execution_arn).await;
    }
    track(run, api, ctx, previous, &execution_arn).await
}

/// Why `execution_arn` (read from the Run's status) is not this Run's to read or stop; `None`
/// when it is: the execution this Run started (its name derives from the Run's UID), one
/// this controller already tracked for the Run, or an execution of the Flow's own state
/// machine (derived from the Flow's UID, as for adopted executions).
async fn foreign_execution(
    run: &Run,
    ctx: &Context,
    execution_arn: &str,
) -> Result<Option<String>, ReconcileError> {
    let namespace = run.namespace().unwrap_or_default();
    let own_name = naming::execution_name(&run.name_any(), &run.uid().unwrap_or_default());
    if execution_arn.rsplit(':').next() == Some(own_name.as_str())
        || ctx.run_of_execution(execution_arn) == Some((namespace.clone(), run.name_any()))
    {
        return Ok(None);
    }
    let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &namespace);
    let flow = flows
        .get_opt(&run.spec.flow_ref.name)
        .await
        .map_err(ReconcileError::Kube)?;
    let machine = flow
        .as_ref()
        .map(|flow| super::flow::own_state_machine_arn(ctx, flow));
    Ok(match machine {
        Some(machine) if ownership::is_execution_of(execution_arn, &machine) => None,
        Some(machine) => Some(format!(
            "status.executionArn names {execution_arn}, which is not an execution of Flow {}'s state machine {machine}: it is neither read nor stopped",
            run.spec.flow_ref.name
        )),
        // The Flow is gone (its machine may be retained): the machine's owner tags decide.
        None => {
            let tags = match ownership::machine_of_execution(execution_arn) {
                Some(machine) => aws::sfn::tags(&ctx.sfn, &machine).await.ok(),
                None => None,
            };
            let flow = &run.spec.flow_ref.name;
            match tags {
                Some(tags) if ownership::tagged_for_flow(&tags, &namespace, flow) => None,
                _ => Some(format!(
                    "status.executionArn names {execution_arn}, which this Run did not start and which is not an execution of a state machine of Flow {flow} (gone): it is neither read nor stopped"
                )),
            }
        }
    })
}

/// Starts the execution once the Flow is Ready.
async fn start(
    run: &Run,
    api: &Api<Run>,
    ctx: &Context,
    mut status: RunStatus,
) -> Result<Action, ReconcileError> {
    let namespace = run.namespace().unwrap_or_default();
    if let Some(execution_arn) = run.annotations().get(EXECUTION_ARN_ANNOTATION) {
        return adopt(run, api, ctx, status, execution_arn).await;
    }
    if run.spec.stop {
        // A start whose status write was lost left an execution the status does not name:
        // stop it by its deterministic name, then track it to its end like any stopped Run.
        if let Some(execution_arn) = stop_unrecorded(run, ctx).await? {
            status.origin.get_or_insert(RunOrigin::Flowline);
            status.execution_arn = Some(execution_arn.clone());
            status.phase = Some(RunPhase::Running);
            return track(run, api, ctx, status, &execution_arn).await;
        }
        status.phase = Some(RunPhase::Aborted);
        status.completion_time = Some(now());
        set(
            &mut status,
            run,
            run_health(RunPhase::Aborted, "stopped before it started"),
        );
        write_status_guarded(api, run, run.status.as_ref(), status).await?;
        return Ok(Action::await_change());
    }
    let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &namespace);
    let Some(flow) = flows
        .get_opt(&run.spec.flow_ref.name)
        .await
        .map_err(ReconcileError::Kube)?
    else {
        let message = format!(
            "Flow {} not found in namespace {namespace}",
            run.spec.flow_ref.name
        );
        return wait(
            api,
            run,
            status,
            "FlowNotFound",
            &message,
            ctx.recheck_interval,
        )
        .await;
    };
    let parameters = match check_parameters(&flow.spec.parameters, &run.spec.parameters) {
        Ok(parameters) => parameters,
        Err(message) => return stall(api, run, ctx, status, "InvalidParameters", &message).await,
    };
    // A Run's executions have no S3 trigger.
    let bounds = compile::parameters::Bounds { s3_trigger: false };
    if let Err(message) =
        compile::check_parameter_overrides(&flow, &ctx.settings, &parameters, bounds)
    {
        return stall(api, run, ctx, status, "InvalidParameters", &message).await;
    }
    // Decided from the Flow's spec and the allow lists, not from its status.
    if let Some(reason) = super::flow::not_allowed_message(ctx, &flow).await? {
        let message = format!(
            "Flow {} is not allowed in namespace {namespace}, so no Run of it starts: {reason}",
            flow.name_any()
        );
        return stall(api, run, ctx, status, "NotAllowed", &message).await;
    }
    let ready = flow.ready_status();
    let Some(version_arn) = ready.and_then(|s| s.state_machine_version_arn.clone()) else {
        let message = format!("waiting for Flow {} to be Ready", flow.name_any());
        return wait(api, run, status, "FlowNotReady", &message, POLL).await;
    };
    // The machine is the Flow's own (from its UID); the version the status names must be
    // one of its versions, or anyone with `flows/status` could start another Flow's.
    let machine_arn = super::flow::own_state_machine_arn(ctx, &flow);
    if !ownership::is_version_of(&version_arn, &machine_arn) {
        let message = format!(
            "Flow {}'s status names version {version_arn}, which is not a version of its state machine {machine_arn}: nothing is started",
            flow.name_any()
        );
        return stall(api, run, ctx, status, "NotAllowed", &message).await;
    }
    let name = naming::execution_name(&run.name_any(), &run.uid().unwrap_or_default());
    let artifact_root = format!("{}/{name}", compile::artifact_root(&flow, &ctx.settings));
    let mut input = json!({"parameters": parameters});
    if let Some(from) = &run.spec.resume_from {
        match super::resume::prepare(ctx, run, from, &flow, &artifact_root).await {
            Ok(plan) => {
                input["resume"] = crate::reconcilers::resume::execution_input(&plan.step);
                status.steps = plan.reused;
            }
            Err(super::resume::ResumeFailure::Refused { reason, message }) => {
                return stall(api, run, ctx, status, reason, &message).await;
            }
            Err(super::resume::ResumeFailure::Waiting { message }) => {
                return wait(api, run, status, "ResumeWaiting", &message, POLL).await;
            }
            Err(super::resume::ResumeFailure::Retry(error)) => return Err(error),
        }
    }
    let input = input.to_string();
    let execution_arn = match aws::sfn::start_execution(
        &ctx.sfn,
        &version_arn,
        &machine_arn,
        &name,
        &input,
    )
    .await
    {
        Ok(arn) => arn,
        Err(error) if error.class == ErrorClass::Terminal => {
            let message = format!("Step Functions refused to start the execution: {error}");
            return stall(api, run, ctx, status, "StartFailed", &message).await;
        }
        Err(error) => return Err(ReconcileError::Aws(error)),
    };
    crate::failpoint::hit(crate::failpoint::AFTER_EXECUTION_START);
    info!(run = %run.name_any(), %namespace, %execution_arn, "started");
    publish(
        ctx,
        run,
        EventType::Normal,
        "Started",
        &format!("execution {name} started"),
        "Start",
    )
    .await;
    status.phase = Some(RunPhase::Running);
    status.origin.get_or_insert(RunOrigin::Flowline);
    status.execution_arn = Some(execution_arn);
    status.state_machine_version_arn = Some(version_arn);
    status.start_time = Some(now());
    status.artifact_root = Some(artifact_root);
    status.metaflow_run = crate::metaflow::convert::metaflow_run(&flow, &name);
    set(&mut status, run, RUNNING);
    write_status_guarded(api, run, run.status.as_ref(), status).await?;
    Ok(Action::requeue(POLL))
}

/// Records that the Run waits (Pending, `Reconciling` with the reason) and looks again later.
async fn wait(
    api: &Api<Run>,
    run: &Run,
    mut status: RunStatus,
    reason: &str,
    message: &str,
    after: Duration,
) -> Result<Action, ReconcileError> {
    status.phase = Some(RunPhase::Pending);
    set(&mut status, run, Health::Reconciling { reason, message });
    write_status_guarded(api, run, run.status.as_ref(), status).await?;
    Ok(Action::requeue(after))
}

/// Takes over an execution started outside this Run (by a Schedule's rule or in Step
/// Functions directly): nothing is started, the execution is tracked like a Run's own.
async fn adopt(
    run: &Run,
    api: &Api<Run>,
    ctx: &Context,
    mut status: RunStatus,
    execution_arn: &str,
) -> Result<Action, ReconcileError> {
    let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &run.namespace().unwrap_or_default());
    let execution_name = execution_arn.rsplit(':').next().unwrap_or_default();
    let flow = flows
        .get_opt(&run.spec.flow_ref.name)
        .await
        .map_err(ReconcileError::Kube)?;
    // The Flow's own machine, from its UID (its status may name another).
    let machine = flow
        .as_ref()
        .filter(|f| {
            f.status
                .as_ref()
                .and_then(|s| s.state_machine_arn.as_ref())
                .is_some()
        })
        .map(|f| super::flow::own_state_machine_arn(ctx, f));
    let Some(machine) = machine else {
        let message = format!(
            "waiting for Flow {} to have a state machine",
            run.spec.flow_ref.name
        );
        return wait(
            api,
            run,
            status,
            "FlowNotReady",
            &message,
            ctx.recheck_interval,
        )
        .await;
    };
    // Only an execution of this Flow's own state machine: the annotation must not let a Run
    // read or stop another Flow's (or another namespace's) executions.
    if !ownership::is_execution_of(execution_arn, &machine) {
        let message = format!(
            "the annotation {EXECUTION_ARN_ANNOTATION} names {execution_arn}, which is not an execution of Flow {}'s state machine {machine}",
            run.spec.flow_ref.name
        );
        return stall(api, run, ctx, status, "ForeignExecution", &message).await;
    }
    if let Some(flow) = &flow {
        status.artifact_root = Some(format!(
            "{}/{execution_name}",
            compile::artifact_root(flow, &ctx.settings)
        ));
        status.metaflow_run = crate::metaflow::convert::metaflow_run(flow, execution_name);
    }
    status.origin = Some(if run.labels().contains_key(SCHEDULE_LABEL) {
        RunOrigin::Schedule
    } else {
        RunOrigin::External
    });
    status.execution_arn = Some(execution_arn.to_owned());
    status.phase = Some(RunPhase::Running);
    set(&mut status, run, RUNNING);
    track(run, api, ctx, status, execution_arn).await
}

/// Reads the execution and its history into the status.
async fn track(
    run: &Run,
    api: &Api<Run>,
    ctx: &Context,
    mut status: RunStatus,
    execution_arn: &str,
) -> Result<Action, ReconcileError> {
    let execution = match aws::sfn::describe_execution(&ctx.sfn, execution_arn).await {
        Ok(execution) => execution,
        // Retrying cannot fix these: say so, and look again now and then (a permission may
        // be granted later).
        Err(error)
            if error.class == ErrorClass::Terminal || error.code == "ExecutionDoesNotExist" =>
        {
            let message = format!("the execution {execution_arn} cannot be read: {error}");
            stall(api, run, ctx, status, "ExecutionUnreadable", &message).await?;
            return Ok(Action::requeue(ctx.recheck_interval));
        }
        Err(error) => return Err(ReconcileError::Aws(error)),
    };
    let running = ctx.running_count();
    let every = history_every(
        running,
        poll_interval(running, ctx.tracking_rate, POLL),
        ctx.history_rate,
    );
    let force = phase_of(&execution.status).is_finished();
    let events = ctx.history(execution_arn, every, force).await?;
    let mut steps = step_statuses(&events);
    status.foreach = track_foreach(ctx, &status, &events, &mut steps).await?;
    // Steps never disappear: ones read before (foreach tasks) stay.
    for known in &status.steps {
        if !steps.iter().any(|s| s.name == known.name) {
            steps.push(known.clone());
        }
    }
    list_artifacts(
        ctx,
        run,
        execution_arn,
        &status,
        &status.foreach,
        &mut steps,
    )
    .await;
    let phase = phase_of(&execution.status);
    let stuck = if phase == RunPhase::Running {
        stuck_runnable(ctx, &mut steps).await?
    } else {
        None
    };
    if phase == RunPhase::Aborted {
        for step in steps
            .iter_mut()
            .filter(|s| s.phase == Some(StepPhase::Running))
        {
            step.phase = Some(StepPhase::Aborted);
        }
    }
    status.steps = steps;
    status.phase = Some(phase);
    if let Some(start) = execution.start {
        status.start_time = Some(Time(start));
    }
    match phase {
        RunPhase::Running | RunPhase::Pending => match &stuck {
            Some(message) => {
                if status.message.as_deref() != Some(message) {
                    publish(
                        ctx,
                        run,
                        EventType::Warning,
                        "StuckRunnable",
                        message,
                        "Track",
                    )
                    .await;
                }
                status.message = Some(message.clone());
                set(
                    &mut status,
                    run,
                    Health::Reconciling {
                        reason: "StuckRunnable",
                        message,
                    },
                );
            }
            None => {
                status.message = None;
                set(&mut status, run, RUNNING);
            }
        },
        RunPhase::Succeeded => {
            status.completion_time = execution.stop.map(Time);
            status.message = None;
            set(
                &mut status,
                run,
                run_health(phase, "the execution succeeded"),
            );
        }
        RunPhase::Aborted => {
            status.completion_time = execution.stop.map(Time);
            status.message = Some("stopped (spec.stop)".into());
            set(
                &mut status,
                run,
                run_health(phase, "the execution was stopped"),
            );
        }
        RunPhase::Failed | RunPhase::TimedOut => {
            status.completion_time = execution.stop.map(Time);
            let message = if phase == RunPhase::TimedOut {
                "the execution exceeded spec.timeoutSeconds of its Flow".to_owned()
            } else {
                failure_message(
                    &status.steps,
                    execution.error.as_deref(),
                    execution.cause.as_deref(),
                )
            };
            status.reason = Some(format!("{phase:?}"));
            status.message = Some(message.clone());
            publish(
                ctx,
                run,
                EventType::Warning,
                &format!("{phase:?}"),
                &message,
                "Track",
            )
            .await;
            set(&mut status, run, run_health(phase, &message));
        }
    }
    let finished = phase.is_finished();
    crate::reconcilers::status_budget::fit(&mut status, STATUS_BUDGET_BYTES);
    write_status_guarded(api, run, run.status.as_ref(), status).await?;
    let key = format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any());
    let running = ctx.track_running(&key, !finished);
    ctx.index_execution(
        execution_arn,
        (!finished).then(|| (run.namespace().unwrap_or_default(), run.name_any())),
    );
    if finished {
        ctx.forget_history(execution_arn);
        prune_history(api, ctx, &run.spec.flow_ref.name).await?;
    }
    Ok(if finished {
        Action::await_change()
    } else {
        Action::requeue(poll_interval(running, ctx.tracking_rate, POLL))
    })
}

/// The progress of each foreach of the execution: item counts from the Distributed Map run
/// while it runs (one call each per poll); once it has finished, the steps of its tasks, read
/// once from the histories of its first child executions.
async fn track_foreach(
    ctx: &Context,
    previous: &RunStatus,
    events: &[crate::reconcilers::run::HistoryEvent],
    steps: &mut Vec<crate::api::StepStatus>,
) -> Result<Vec<ForeachStatus>, ReconcileError> {
    let mut foreach = Vec::new();
    for (step, map_run_arn) in map_runs(events) {
        if let Some(done) = previous
            .foreach
            .iter()
            .find(|f| f.map_run_arn == map_run_arn && f.finished)
        {
            foreach.push(done.clone());
            continue;
        }
        // Foreach progress is extra detail: failing to read it never fails the Run's tracking.
        let known = previous
            .foreach
            .iter()
            .find(|f| f.map_run_arn == map_run_arn);
        let mut counts = match aws::sfn::map_run_counts(&ctx.sfn, &map_run_arn).await {
            Ok(counts) => counts,
            Err(error) => {
                // Keep what was known, so a passing error does not flap the status.
                warn!(%map_run_arn, %error, "could not read a foreach's progress");
                foreach.extend(known.cloned());
                continue;
            }
        };
        if counts.finished {
            match foreach_task_steps(ctx, &map_run_arn).await {
                Ok(task_steps) => {
                    for task_step in task_steps {
                        if !steps.iter().any(|s| s.name == task_step.name) {
                            steps.push(task_step);
                        }
                    }
                }
                Err(error) => {
                    // Not final until the tasks' steps are read: the next poll tries again.
                    warn!(%map_run_arn, %error, "could not read a foreach's tasks");
                    counts.finished = false;
                }
            }
        }
        foreach.push(ForeachStatus {
            step,
            map_run_arn,
            finished: counts.finished,
            total: counts.total,
            pending: counts.pending,
            running: counts.running,
            succeeded: counts.succeeded,
            failed: counts.failed,
            aborted: counts.aborted,
        });
    }
    Ok(foreach)
}

/// The steps of a finished foreach's tasks, merged, from its first child executions.
async fn foreach_task_steps(
    ctx: &Context,
    map_run_arn: &str,
) -> Result<Vec<crate::api::StepStatus>, aws::error::AwsError> {
    let children =
        aws::sfn::map_run_executions(&ctx.sfn, map_run_arn, MAX_FOREACH_TASKS_READ).await?;
    let mut tasks = Vec::with_capacity(children.len());
    for child in &children {
        tasks.push(step_statuses(&aws::sfn::history(&ctx.sfn, child).await?));
    }
    Ok(merge_task_steps(&tasks))
}

/// Deletes the oldest finished Runs of a Flow beyond the configured history limits.
async fn prune_history(api: &Api<Run>, ctx: &Context, flow: &str) -> Result<(), ReconcileError> {
    let selector = format!("spec.flowRef.name={flow}");
    let runs = api
        .list(&kube::api::ListParams::default().fields(&selector))
        .await
        .map_err(ReconcileError::Kube)?;
    let finished: Vec<FinishedRun> = runs
        .items
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .filter(|r| history_prunable(r.labels(), r.annotations()))
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            let phase = status.phase.filter(|p| p.is_finished())?;
            let at = status
                .completion_time
                .as_ref()
                .or(r.metadata.creation_timestamp.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            Some(FinishedRun {
                name: r.name_any(),
                succeeded: phase == RunPhase::Succeeded,
                finished_at: at,
            })
        })
        .collect();
    let (keep_succeeded, keep_failed) = ctx.keep_runs;
    for name in runs_to_prune(&finished, keep_succeeded, keep_failed) {
        info!(run = %name, %flow, "deleting a Run beyond the history limit");
        match api.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(ReconcileError::Kube(error)),
        }
    }
    Ok(())
}

/// Marks running steps whose Batch job has waited in RUNNABLE longer than the configured time
/// and returns a message naming them.
async fn stuck_runnable(
    ctx: &Context,
    steps: &mut [crate::api::StepStatus],
) -> Result<Option<String>, ReconcileError> {
    let ids: Vec<String> = steps
        .iter()
        .filter(|s| s.phase == Some(StepPhase::Running))
        .flat_map(|s| s.job_ids.iter().filter(|id| !is_node_job(id)).cloned())
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    let jobs = aws::batch::describe_jobs(&ctx.batch, &ids)
        .await
        .map_err(ReconcileError::Aws)?;
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let limit_ms = i64::try_from(ctx.runnable_timeout.as_millis()).unwrap_or(i64::MAX);
    let mut stuck = Vec::new();
    for step in steps.iter_mut() {
        let waiting = jobs.iter().any(|job| {
            step.job_ids.contains(&job.id)
                && job.status == "RUNNABLE"
                && job
                    .created_at
                    .is_some_and(|created| now_ms - created > limit_ms)
        });
        if waiting {
            step.reason = Some(RUNNABLE_HINT.to_owned());
            stuck.push(step.name.clone());
        }
    }
    Ok((!stuck.is_empty()).then(|| format!("step(s) {} stuck: {RUNNABLE_HINT}", stuck.join(", "))))
}

/// Fills each finished step's artifacts: kept from the previous status once read; for a step
/// in the task runtime, read from its tasks' `_task.json` manifests (one GetObject each, no
/// listing); otherwise — or when a manifest is missing or unreadable — listed from S3
/// (`<artifact root>/<step>/`). A read that fails is retried on the next poll rather than
/// failing the Run.
async fn list_artifacts(
    ctx: &Context,
    run: &Run,
    execution_arn: &str,
    previous: &RunStatus,
    foreach: &[ForeachStatus],
    steps: &mut [crate::api::StepStatus],
) {
    if previous.artifact_root.is_none() {
        return;
    }
    let mut unread = Vec::new();
    for step in steps.iter_mut() {
        if let Some(known) = previous
            .steps
            .iter()
            .find(|s| s.name == step.name && s.artifact_count.is_some())
        {
            step.artifacts = known.artifacts.clone();
            step.artifact_count = known.artifact_count;
            step.artifacts_truncated = known.artifacts_truncated;
        } else if matches!(step.phase, Some(StepPhase::Succeeded | StepPhase::Failed)) {
            unread.push(step);
        }
    }
    if unread.is_empty() {
        return;
    }
    // The Flow says which steps ran in the task runtime; one without it is listed. The
    // prefix read is the Flow's own (`<s3Root>/<namespace>/<flow>/<execution>`), never the
    // status's `artifactRoot`, which anyone with `runs/status` could point at another
    // namespace's objects.
    let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &run.namespace().unwrap_or_default());
    let flow = match flows.get_opt(&run.spec.flow_ref.name).await {
        Ok(Some(flow)) => flow,
        Ok(None) => return,
        Err(error) => {
            warn!(%error, "could not read the Flow; artifacts are read on a later poll");
            return;
        }
    };
    let tasks = manifest_tasks(&flow, foreach, MAX_MANIFESTS_READ);
    let execution_name = execution_arn.rsplit(':').next().unwrap_or_default();
    let root = format!(
        "{}/{execution_name}",
        compile::artifact_root(&flow, &ctx.settings)
    );
    let root = root.as_str();
    for step in unread {
        let prefix = format!("{}/{}/", root.trim_end_matches('/'), step.name);
        let listing = match tasks.get(&step.name) {
            Some(task_ids) => match read_manifests(ctx, &prefix, task_ids).await {
                Ok(Some(manifests)) => {
                    Ok(from_manifests(&prefix, &manifests, MAX_LISTED_ARTIFACTS))
                }
                Ok(None) => aws::s3::list(&ctx.s3, &prefix, MAX_LISTED_ARTIFACTS, 10 * 1000).await,
                Err(error) => Err(error),
            },
            None => aws::s3::list(&ctx.s3, &prefix, MAX_LISTED_ARTIFACTS, 10 * 1000).await,
        };
        match listing {
            Ok(listing) => {
                step.artifacts_truncated =
                    listing.count > listing.artifacts.len() as i64 || listing.truncated;
                step.artifacts = listing.artifacts;
                step.artifact_count = Some(listing.count);
            }
            Err(error) => warn!(step = %step.name, %prefix, %error, "could not read artifacts"),
        }
    }
}

/// The manifests of a step's tasks; `None` when one is missing or unreadable (the step did
/// not run in the task runtime as the Flow now says, or a task never stored one).
async fn read_manifests(
    ctx: &Context,
    step_prefix: &str,
    task_ids: &[String],
) -> Result<Option<Vec<TaskManifest>>, aws::error::AwsError> {
    let mut manifests = Vec::with_capacity(task_ids.len());
    for task_id in task_ids {
        let uri = format!("{step_prefix}{task_id}/{MANIFEST_NAME}");
        let Some(bytes) = aws::s3::get(&ctx.s3, &uri).await? else {
            debug!(%uri, "no manifest; the step is listed");
            return Ok(None);
        };
        let Some(manifest) = parse_manifest(&bytes) else {
            warn!(%uri, "a manifest this version cannot read; the step is listed");
            return Ok(None);
        };
        manifests.push(TaskManifest {
            task_id: task_id.clone(),
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            manifest,
        });
    }
    Ok(Some(manifests))
}

/// Terminates the Batch jobs of steps still running (Step Functions' StopExecution leaves
/// them running). The job ids come from the execution's history, never from the Run's status
/// (which anyone with `runs/status` can write).
async fn terminate_jobs(ctx: &Context, execution_arn: &str) {
    let events = match aws::sfn::history(&ctx.sfn, execution_arn).await {
        Ok(events) => events,
        Err(error) => {
            warn!(%execution_arn, %error, "could not read the history: no Batch job terminated");
            return;
        }
    };
    for step in step_statuses(&events)
        .iter()
        .filter(|s| s.phase == Some(StepPhase::Running))
    {
        // A multi-node job is terminated through its main job, which ends its nodes.
        for job in step.job_ids.iter().filter(|id| !is_node_job(id)) {
            if let Err(error) =
                aws::batch::terminate_job(&ctx.batch, job, "Run stopped (spec.stop)").await
            {
                warn!(job, %error, "could not terminate a Batch job");
            }
        }
    }
}

/// A Run deleted while running stops its execution.
async fn cleanup(run: &Run, ctx: &Context) -> Result<Action, ReconcileError> {
    ctx.track_running(
        &format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any()),
        false,
    );
    let status = run.status.clone().unwrap_or_default();
    if let (Some(arn), false) = (
        &status.execution_arn,
        status.phase.is_some_and(RunPhase::is_finished),
    ) {
        match foreign_execution(run, ctx, arn).await? {
            None => {
                aws::sfn::stop_execution(&ctx.sfn, arn)
                    .await
                    .map_err(ReconcileError::Aws)?;
                terminate_jobs(ctx, arn).await;
            }
            Some(message) => warn!(run = %run.name_any(), %message, "not stopped"),
        }
    } else {
        stop_unrecorded(run, ctx).await?;
    }
    if let Some(arn) = status.execution_arn.as_deref() {
        ctx.forget_history(arn);
        ctx.index_execution(arn, None);
    }
    Ok(Action::await_change())
}

/// Stops the Run's own execution when its status does not record one (the Run was stopped or
/// deleted between StartExecution and the status write) and terminates the Batch jobs its
/// history names. Returns the execution's ARN when it existed; an execution never started
/// (`ExecutionDoesNotExist`) is nothing to stop.
async fn stop_unrecorded(run: &Run, ctx: &Context) -> Result<Option<String>, ReconcileError> {
    let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &run.namespace().unwrap_or_default());
    let machine = flows
        .get_opt(&run.spec.flow_ref.name)
        .await
        .map_err(ReconcileError::Kube)?
        .map(|flow| super::flow::own_state_machine_arn(ctx, &flow));
    // Without a Flow nothing can have started (a deleted Flow's machine is deleted with it,
    // which ends its executions). The machine is derived from the Flow, never read from status.
    let Some(arn) = unrecorded_execution_arn(run, machine.as_deref()) else {
        return Ok(None);
    };
    if !aws::sfn::stop_execution(&ctx.sfn, &arn)
        .await
        .map_err(ReconcileError::Aws)?
    {
        return Ok(None);
    }
    info!(run = %run.name_any(), execution = %arn, "stopped an execution its status did not record");
    terminate_jobs(ctx, &arn).await;
    Ok(Some(arn))
}

async fn stall(
    api: &Api<Run>,
    run: &Run,
    ctx: &Context,
    mut status: RunStatus,
    reason: &str,
    message: &str,
) -> Result<Action, ReconcileError> {
    ctx.metrics.reconcile_failed("Run", "terminal", reason);
    if status.message.as_deref() != Some(message) {
        warn!(run = %run.name_any(), reason, message, "stalled");
        publish(ctx, run, EventType::Warning, reason, message, "Start").await;
    }
    status.phase = Some(RunPhase::Pending);
    status.message = Some(message.to_owned());
    set(&mut status, run, Health::Stalled { reason, message });
    write_status_guarded(api, run, run.status.as_ref(), status).await?;
    Ok(Action::await_change())
}

fn set(status: &mut RunStatus, run: &Run, health: Health<'_>) {
    status.observed_generation = run.metadata.generation;
    let now = now();
    set_health(
        &mut status.conditions,
        health,
        run.metadata.generation,
        &now,
    );
    set_finished(
        &mut status.conditions,
        status.phase,
        run.metadata.generation,
        &now,
    );
}
