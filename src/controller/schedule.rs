//! The Schedule reconciler's I/O shell: wait for the Flow → desired rule → observe → plan →
//! apply → status. Decisions are made in [`crate::reconcilers::schedule`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use tracing::{info, warn};

use crate::api::{FINALIZER, Flow, Run, SCHEDULE_LABEL, Schedule, ScheduledRun, condition};
use crate::aws;
use crate::aws::error::ErrorClass;
use crate::compile::{cron, naming};
use crate::reconcilers::flow::owner_uid;
use crate::reconcilers::schedule::{
    Change, Desired, MAX_LAST_RUNS, NEXT_FIRE_TIMES, Observed, Outcome, desired, plan, status,
};
use crate::reconcilers::{ownership, tenancy};

use super::report::{now, publish, write_status};
use super::{Context, ReconcileError};

/// A Schedule waiting for its Flow looks again this often (Flow changes also wake it).
const WAIT_FOR_FLOW: Duration = Duration::from_secs(30);

/// Fire times in the status are refreshed at least this often.
const MIN_REFRESH: Duration = Duration::from_secs(30);

pub async fn reconcile(
    schedule: Arc<Schedule>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = schedule.namespace().unwrap_or_default();
    let api: Api<Schedule> = Api::namespaced(ctx.kube.clone(), &namespace);
    finalizer(&api, FINALIZER, schedule, |event| async {
        match event {
            Finalized::Apply(schedule) => apply(&schedule, &api, &ctx).await,
            Finalized::Cleanup(schedule) => {
                super::cleanup::guarded(schedule.as_ref(), &api, &ctx, cleanup(&schedule, &ctx))
                    .await
            }
        }
    })
    .await
    .map_err(|error| ReconcileError::Finalizer(Box::new(error)))
}

async fn apply(
    schedule: &Schedule,
    api: &Api<Schedule>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let namespace = schedule.namespace().unwrap_or_default();
    let flows: Api<Flow> = Api::namespaced(ctx.kube.clone(), &namespace);
    let flow_name = &schedule.spec.flow_ref.name;
    let Some(flow) = flows
        .get_opt(flow_name)
        .await
        .map_err(ReconcileError::Kube)?
    else {
        let message = format!("Flow {flow_name} not found in namespace {namespace}");
        return finish(schedule, api, ctx, waiting("FlowNotFound", message), None).await;
    };
    // Tenancy, decided from the specs and the allow lists (never from a status): a Flow its
    // namespace may not run, or a trigger on a bucket it may not watch or on the Flow's own
    // datastore, starts nothing — a rule made while it was allowed is disabled.
    if let Some(message) = refusal(ctx, schedule, &flow).await? {
        disable_rule(ctx, schedule).await?;
        let outcome = Outcome::Stalled {
            reason: "NotAllowed".into(),
            message,
        };
        return finish(schedule, api, ctx, outcome, None).await;
    }
    if flow
        .ready_status()
        .and_then(|s| s.state_machine_arn.as_ref())
        .is_none()
    {
        let message = format!("waiting for Flow {flow_name} to be Ready");
        return finish(schedule, api, ctx, waiting("FlowNotReady", message), None).await;
    }
    // The Flow's own machine, from its UID: its status may name another.
    let machine_arn = super::flow::own_state_machine_arn(ctx, &flow);

    // Validate before any AWS call: a bad expression or parameter costs nothing.
    let desired = match desired(schedule, &flow, &machine_arn, &ctx.settings) {
        Ok(desired) => desired,
        Err(invalid) => {
            let outcome = Outcome::Stalled {
                reason: invalid.reason().to_owned(),
                message: invalid.to_string(),
            };
            return finish(schedule, api, ctx, outcome, None).await;
        }
    };
    let uid = schedule.uid().unwrap_or_default();
    // Woken by its Runs or its own status write, a Schedule whose rule was checked recently
    // for this very desired state refreshes its status only: AWS is read at most once per
    // drift interval unless something changed.
    let fingerprint = naming::short_hash(&format!("{desired:?}"), 16);
    let ready_rule = schedule
        .status
        .as_ref()
        .filter(|s| {
            s.observed_generation == schedule.metadata.generation
                && crate::api::is_condition_true(&s.conditions, condition::READY)
        })
        .and_then(|s| s.rule_arn.clone());
    if let Some(rule_arn) = ready_rule
        && ctx.recently_checked(&uid, &fingerprint)
    {
        let outcome = Outcome::Ready {
            rule_arn,
            changed: false,
        };
        return finish(schedule, api, ctx, outcome, Some(&desired)).await;
    }
    let observed = observe(ctx, schedule, &desired).await?;
    let changes = match plan(&desired, &observed, &uid) {
        Ok(changes) => changes,
        Err(error) => {
            let outcome = Outcome::Stalled {
                reason: "ForeignResource".into(),
                message: error.to_string(),
            };
            return finish(schedule, api, ctx, outcome, None).await;
        }
    };
    let mut rule_arn = observed.rule.as_ref().map(|r| r.arn.clone());
    for change in &changes {
        match apply_change(ctx, &desired, change).await {
            Ok(Some(arn)) => rule_arn = Some(arn),
            Ok(None) => {}
            Err(error) if error.class == ErrorClass::Terminal => {
                let outcome = Outcome::Stalled {
                    reason: "AwsRejected".into(),
                    message: format!("AWS rejected a change: {error}"),
                };
                return finish(schedule, api, ctx, outcome, None).await;
            }
            Err(error) => return Err(ReconcileError::Aws(error)),
        }
    }
    if !changes.is_empty() {
        let summary = summarize(&changes);
        info!(schedule = %schedule.name_any(), %namespace, %summary, "applied");
        publish(
            ctx,
            schedule,
            EventType::Normal,
            "Applied",
            &summary,
            "Apply",
        )
        .await;
    }
    ctx.mark_checked(&uid, &fingerprint);
    let outcome = Outcome::Ready {
        rule_arn: rule_arn.unwrap_or_default(),
        changed: !changes.is_empty(),
    };
    finish(schedule, api, ctx, outcome, Some(&desired)).await
}

/// Why the Schedule may not start its Flow: the Flow is not allowed in the namespace, the S3
/// trigger's bucket (or prefix) is not in the namespace's trigger lists, or the trigger
/// watches the Flow's own datastore prefix (each Run would start another).
async fn refusal(
    ctx: &Context,
    schedule: &Schedule,
    flow: &Flow,
) -> Result<Option<String>, ReconcileError> {
    let namespace = schedule.namespace().unwrap_or_default();
    if let Some(reason) = super::flow::not_allowed_message(ctx, flow).await? {
        return Ok(Some(format!(
            "Flow {} is not allowed in namespace {namespace}, so this Schedule starts nothing (its rule is disabled): {reason}",
            flow.name_any()
        )));
    }
    let Some(event) = &schedule.spec.event else {
        return Ok(None);
    };
    let policy = super::operations::tenancy_policy(ctx, &namespace).await?;
    if let Some(violation) = tenancy::check_trigger(&event.s3, &policy) {
        return Ok(Some(tenancy::message(&namespace, &[violation])));
    }
    let root = crate::compile::artifact_root(flow, &ctx.settings);
    Ok(tenancy::trigger_loop(&event.s3, &root).or_else(|| {
        tenancy::trigger_on_shared_datastore(&event.s3, &ctx.settings.s3_root, &namespace)
    }))
}

/// Disables the Schedule's rule if it exists, is enabled and carries the Schedule's owner
/// tag (reads only otherwise).
async fn disable_rule(ctx: &Context, schedule: &Schedule) -> Result<(), ReconcileError> {
    let uid = schedule.uid().unwrap_or_default();
    let name = naming::rule_name(
        &ctx.settings.name_prefix,
        &schedule.namespace().unwrap_or_default(),
        &schedule.name_any(),
        &uid,
    );
    let Some(observed) = aws::events::describe_rule(&ctx.events, &name)
        .await
        .map_err(ReconcileError::Aws)?
    else {
        return Ok(());
    };
    let Some(off) = ownership::disabled(&observed.rule) else {
        return Ok(());
    };
    let tags = aws::events::tags(&ctx.events, &observed.arn)
        .await
        .map_err(ReconcileError::Aws)?;
    if ownership::owned_by(&tags, &uid) {
        aws::events::put_rule(&ctx.events, &off, &tags)
            .await
            .map_err(ReconcileError::Aws)?;
        ctx.forget_checked(&uid);
        info!(schedule = %schedule.name_any(), rule = %name, "rule disabled: not allowed");
    }
    Ok(())
}

fn waiting(reason: &str, message: String) -> Outcome {
    Outcome::Waiting {
        reason: reason.to_owned(),
        message,
    }
}

/// Reads the rule, its targets, the trigger state machine and the dead-letter queue; owner
/// tags only for resources not yet known to be the Schedule's own. In steady state that is
/// five reads, made at most once per drift interval.
async fn observe(
    ctx: &Context,
    schedule: &Schedule,
    desired: &Desired,
) -> Result<Observed, ReconcileError> {
    let rule = aws::events::describe_rule(&ctx.events, &desired.rule.name)
        .await
        .map_err(ReconcileError::Aws)?;
    let known_arn = schedule.status.as_ref().and_then(|s| s.rule_arn.as_deref());
    // Resources are known to be ours once the status recorded the rule we read.
    let known_own = rule
        .as_ref()
        .map(|r| r.arn.as_str())
        .is_some_and(|arn| known_arn == Some(arn));
    let mut observed = Observed::default();
    if let Some(found) = &rule {
        if !known_own {
            let tags = aws::events::tags(&ctx.events, &found.arn)
                .await
                .map_err(ReconcileError::Aws)?;
            observed.rule_owner = Some(owner_uid(&tags));
        }
        observed.targets = aws::events::list_targets(&ctx.events, &desired.rule.name)
            .await
            .map_err(ReconcileError::Aws)?;
    }
    observed.rule = rule;
    if desired.dispatcher.is_some() {
        let arn = &desired.target.arn;
        observed.dispatcher = aws::sfn::describe_state_machine(&ctx.sfn, arn)
            .await
            .map_err(ReconcileError::Aws)?;
        if observed.dispatcher.is_some() && !known_own {
            let tags = aws::sfn::tags(&ctx.sfn, arn)
                .await
                .map_err(ReconcileError::Aws)?;
            observed.dispatcher_owner = Some(owner_uid(&tags));
        }
    }
    if let Some(queue) = &desired.dead_letter_queue {
        observed.dead_letter_queue = aws::sqs::describe_queue(&ctx.sqs, &queue.name)
            .await
            .map_err(ReconcileError::Aws)?;
        if let Some(found) = &observed.dead_letter_queue
            && !known_own
        {
            let tags = aws::sqs::queue_tags(&ctx.sqs, &found.url)
                .await
                .map_err(ReconcileError::Aws)?;
            observed.dead_letter_queue_owner = Some(owner_uid(&tags));
        }
    }
    Ok(observed)
}

/// Applies one change; returns the rule's ARN when the change wrote the rule.
async fn apply_change(
    ctx: &Context,
    desired: &Desired,
    change: &Change,
) -> Result<Option<String>, aws::error::AwsError> {
    let rule = &desired.rule.name;
    match change {
        Change::CreateDispatcher(machine) => {
            aws::sfn::create_state_machine(&ctx.sfn, machine).await?;
        }
        Change::UpdateDispatcher { arn, machine } => {
            aws::sfn::update_state_machine(&ctx.sfn, arn, machine).await?;
        }
        Change::CreateDeadLetterQueue(queue) => {
            aws::sqs::create_queue(&ctx.sqs, &queue.name, &queue.attributes, &desired.tags).await?;
        }
        Change::SetDeadLetterQueueAttributes { url, attributes } => {
            aws::sqs::set_queue_attributes(&ctx.sqs, url, attributes).await?;
        }
        Change::PutRule(wanted) => {
            return aws::events::put_rule(&ctx.events, wanted, &desired.tags)
                .await
                .map(Some);
        }
        Change::PutTarget(target) => aws::events::put_target(&ctx.events, rule, target).await?,
        Change::RemoveTargets(ids) => aws::events::remove_targets(&ctx.events, rule, ids).await?,
    }
    Ok(None)
}

fn summarize(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|change| match change {
            Change::CreateDispatcher(m) => format!("created trigger state machine {}", m.name),
            Change::UpdateDispatcher { machine, .. } => {
                format!("updated trigger state machine {}", machine.name)
            }
            Change::CreateDeadLetterQueue(q) => format!("created dead-letter queue {}", q.name),
            Change::SetDeadLetterQueueAttributes { url, .. } => {
                format!("repaired dead-letter queue {url}")
            }
            Change::PutRule(rule) => format!(
                "put rule {} ({})",
                rule.name,
                if rule.enabled { "enabled" } else { "disabled" }
            ),
            Change::PutTarget(target) => format!("put target {}", target.arn),
            Change::RemoveTargets(ids) => format!("removed foreign targets {}", ids.join(", ")),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes the status for `outcome` (with fire times when `desired` is known) and decides when
/// to look again: at the next fire time, so the times shown stay current.
async fn finish(
    schedule: &Schedule,
    api: &Api<Schedule>,
    ctx: &Context,
    outcome: Outcome,
    desired: Option<&Desired>,
) -> Result<Action, ReconcileError> {
    let previous = schedule.status.as_ref();
    if let Outcome::Stalled { reason, message } = &outcome
        && previous.and_then(|s| stalled_message(s)) != Some(message.as_str())
    {
        warn!(schedule = %schedule.name_any(), reason, message, "stalled");
        publish(
            ctx,
            schedule,
            EventType::Warning,
            reason,
            message,
            "Reconcile",
        )
        .await;
    }
    let fire_times = match desired.and_then(|d| d.timing.as_ref()) {
        Some(timing) if !schedule.spec.suspend => {
            let created = schedule
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or_else(k8s_openapi::jiff::Timestamp::now, |t| t.0);
            cron::next_fire_times(
                timing,
                created,
                k8s_openapi::jiff::Timestamp::now(),
                NEXT_FIRE_TIMES,
            )
        }
        _ => Vec::new(),
    };
    let last_runs = last_runs(ctx, schedule).await?;
    let next = status(
        previous,
        schedule.metadata.generation,
        &outcome,
        fire_times.iter().copied().map(Time).collect(),
        last_runs,
        now(),
    );
    write_status(api, schedule, previous, next).await?;
    Ok(match outcome {
        Outcome::Ready { .. } => {
            let until_fire = fire_times
                .first()
                .and_then(|t| {
                    let ms =
                        t.as_millisecond() - k8s_openapi::jiff::Timestamp::now().as_millisecond();
                    u64::try_from(ms).ok()
                })
                .map(|ms| Duration::from_millis(ms + 1000));
            Action::requeue(
                until_fire
                    .unwrap_or(ctx.drift_interval)
                    .clamp(MIN_REFRESH, ctx.drift_interval.max(MIN_REFRESH)),
            )
        }
        Outcome::Waiting { .. } => Action::requeue(WAIT_FOR_FLOW),
        // A refusal by AWS, a foreign rule or an allow list may be resolved outside the
        // Schedule.
        Outcome::Stalled { reason, .. }
            if reason == "AwsRejected" || reason == "ForeignResource" || reason == "NotAllowed" =>
        {
            Action::requeue(ctx.recheck_interval)
        }
        Outcome::Stalled { .. } => Action::await_change(),
        Outcome::Retrying { .. } => Action::requeue(ctx.recheck_interval),
    })
}

fn stalled_message(status: &crate::api::ScheduleStatus) -> Option<&str> {
    crate::api::find_condition(&status.conditions, condition::STALLED)
        .filter(|c| c.status == "True")
        .map(|c| c.message.as_str())
}

/// The Schedule's latest Runs (labeled with its name), newest first.
async fn last_runs(
    ctx: &Context,
    schedule: &Schedule,
) -> Result<Vec<ScheduledRun>, ReconcileError> {
    let runs: Api<Run> =
        Api::namespaced(ctx.kube.clone(), &schedule.namespace().unwrap_or_default());
    let selector = format!("{SCHEDULE_LABEL}={}", schedule.name_any());
    let mut listed: Vec<ScheduledRun> = runs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(ReconcileError::Kube)?
        .items
        .into_iter()
        .map(|run| ScheduledRun {
            start_time: run
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .or_else(|| run.metadata.creation_timestamp.clone()),
            name: run.name_any(),
        })
        .collect();
    listed.sort_by(|a, b| {
        b.start_time
            .as_ref()
            .map(|t| t.0)
            .cmp(&a.start_time.as_ref().map(|t| t.0))
            .then_with(|| a.name.cmp(&b.name))
    });
    listed.truncate(MAX_LAST_RUNS);
    Ok(listed)
}

/// Removes the rule's targets, then the rule, then the trigger state machine and the
/// dead-letter queue — only what carries this Schedule's owner tag. Executions already running
/// continue.
async fn cleanup(schedule: &Schedule, ctx: &Context) -> Result<Action, ReconcileError> {
    let uid = schedule.uid().unwrap_or_default();
    let namespace = schedule.namespace().unwrap_or_default();
    let name = naming::rule_name(
        &ctx.settings.name_prefix,
        &namespace,
        &schedule.name_any(),
        &uid,
    );
    if let Some(rule) = aws::events::describe_rule(&ctx.events, &name)
        .await
        .map_err(ReconcileError::Aws)?
    {
        let tags = aws::events::tags(&ctx.events, &rule.arn)
            .await
            .map_err(ReconcileError::Aws)?;
        if owner_uid(&tags).as_deref() == Some(uid.as_str()) {
            let ids: Vec<String> = aws::events::list_targets(&ctx.events, &name)
                .await
                .map_err(ReconcileError::Aws)?
                .into_iter()
                .map(|t| t.id)
                .collect();
            aws::events::remove_targets(&ctx.events, &name, &ids)
                .await
                .map_err(ReconcileError::Aws)?;
            aws::events::delete_rule(&ctx.events, &name)
                .await
                .map_err(ReconcileError::Aws)?;
        }
    }
    // Probed whatever the spec says now: it may have been an S3 trigger before.
    {
        let arn = super::flow::state_machine_arn(ctx, &name);
        if aws::sfn::describe_state_machine(&ctx.sfn, &arn)
            .await
            .map_err(ReconcileError::Aws)?
            .is_some()
        {
            let tags = aws::sfn::tags(&ctx.sfn, &arn)
                .await
                .map_err(ReconcileError::Aws)?;
            if owner_uid(&tags).as_deref() == Some(uid.as_str()) {
                aws::sfn::delete_state_machine(&ctx.sfn, &arn)
                    .await
                    .map_err(ReconcileError::Aws)?;
            }
        }
    }
    // The dead-letter queue goes last: the rule that wrote to it is gone. Events still in it
    // are deleted with it (a Schedule deleted is a Schedule whose firings nobody will replay).
    if let Some(queue) = aws::sqs::describe_queue(&ctx.sqs, &name)
        .await
        .map_err(ReconcileError::Aws)?
    {
        let tags = aws::sqs::queue_tags(&ctx.sqs, &queue.url)
            .await
            .map_err(ReconcileError::Aws)?;
        if owner_uid(&tags).as_deref() == Some(uid.as_str()) {
            aws::sqs::delete_queue(&ctx.sqs, &queue.url)
                .await
                .map_err(ReconcileError::Aws)?;
        }
    }
    ctx.forget_checked(&uid);
    info!(schedule = %schedule.name_any(), %namespace, rule = %name, "removed");
    Ok(Action::await_change())
}
