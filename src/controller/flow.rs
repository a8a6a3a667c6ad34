//! The Flow reconciler's I/O shell: validate → render → observe → plan → apply → status.
//! The decisions are made by the pure functions of [`crate::compile`] and
//! [`crate::reconcilers::flow`]; this module only reads AWS, writes the planned changes and the
//! status, and records events.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use tracing::{info, warn};

use crate::api::{DeletionPolicy, FINALIZER, Flow, FlowStatus, JobDefinitionRef, SecretType};
use crate::aws;
use crate::aws::error::{AwsError, ErrorClass};
use crate::compile::job_definition::CONTENT_HASH_TAG;
use crate::compile::secrets::{Lookups, ResolvedSecret, SecretLookups};
use crate::compile::{self, Rendered, TAG_UID, naming};
use crate::reconcilers::flow::{
    Change, Observed, Outcome, job_definition_name, owner_uid, plan, status,
};
use crate::reconcilers::tenancy;

use super::report::{now, publish, write_status};
use super::{Context, ReconcileError};

/// Reconciles one Flow, with the finalizer that cleans up AWS when it is deleted.
pub async fn reconcile(flow: Arc<Flow>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = flow.namespace().unwrap_or_default();
    let api: Api<Flow> = Api::namespaced(ctx.kube.clone(), &namespace);
    finalizer(&api, FINALIZER, flow, |event| async {
        match event {
            Finalized::Apply(flow) => apply(&flow, &api, &ctx).await,
            Finalized::Cleanup(flow) => cleanup(&flow, &ctx).await,
        }
    })
    .await
    .map_err(|error| ReconcileError::Finalizer(Box::new(error)))
}

/// The ARN of a state machine, from its name (the account and region are the controller's).
pub(super) fn state_machine_arn(ctx: &Context, name: &str) -> String {
    format!(
        "arn:aws:states:{}:{}:stateMachine:{name}",
        ctx.settings.region, ctx.settings.account
    )
}

async fn apply(flow: &Flow, api: &Api<Flow>, ctx: &Context) -> Result<Action, ReconcileError> {
    let previous = flow.status.as_ref();
    let uid = flow.uid().unwrap_or_default();

    // Validate offline first: an invalid Flow costs no AWS call.
    if let Err(error) = compile::render(flow, &ctx.settings, Lookups::Offline) {
        return stall(flow, api, ctx, "InvalidFlow", &error.to_string(), None).await;
    }

    // Only the roles and job queues the namespace may use; checked before any AWS call,
    // since looking a secret up may already assume its role. Allow lists can change
    // outside the Flow, so a refused Flow is checked again later.
    let namespace = flow.namespace().unwrap_or_default();
    let policy = super::operations::tenancy_policy(ctx, &namespace).await?;
    let violations = tenancy::check(&flow.spec, &ctx.settings, &policy);
    if !violations.is_empty() {
        let message = tenancy::message(&namespace, &violations);
        return stall(
            flow,
            api,
            ctx,
            "NotAllowed",
            &message,
            Some(ctx.recheck_interval),
        )
        .await;
    }

    // Secrets must exist; their ARNs (never their values) are recorded.
    let (lookups, resolved, missing) = resolve_secrets(flow, ctx).await?;
    if !missing.is_empty() {
        let message = format!(
            "secret(s) {} not found in Secrets Manager: create them, or fix spec.steps[].secrets[].id",
            missing.join(", ")
        );
        return stall(
            flow,
            api,
            ctx,
            "SecretNotFound",
            &message,
            Some(ctx.recheck_interval),
        )
        .await;
    }
    let rendered = match compile::render(flow, &ctx.settings, Lookups::Resolved(&lookups)) {
        Ok(rendered) => rendered,
        Err(error) => return stall(flow, api, ctx, "InvalidFlow", &error.to_string(), None).await,
    };

    let mut queues: Vec<String> = rendered.steps.iter().map(|s| s.job_queue.clone()).collect();
    queues.sort();
    queues.dedup();
    let missing_queues = aws::batch::missing_queues(&ctx.batch, &queues)
        .await
        .map_err(aws_error)?;
    if !missing_queues.is_empty() {
        let message = format!(
            "job queue(s) {} not found in AWS Batch: create them, or fix spec.batch.queue / spec.steps[].batch.queue",
            missing_queues.join(", ")
        );
        return stall(
            flow,
            api,
            ctx,
            "JobQueueNotFound",
            &message,
            Some(ctx.recheck_interval),
        )
        .await;
    }

    let machine_arn = state_machine_arn(ctx, &rendered.state_machine.name);
    let observed = observe(ctx, &rendered, previous, &machine_arn, &uid).await?;
    let previous_definitions = previous
        .map(|s| s.job_definitions.as_slice())
        .unwrap_or_default();
    let changes = match plan(&rendered, &observed, previous_definitions, &uid) {
        Ok(changes) => changes,
        Err(error) => {
            return stall(flow, api, ctx, "ForeignResource", &error.to_string(), None).await;
        }
    };

    let mut registered = observed.job_definitions.clone();
    let mut version = previous
        .filter(|s| s.state_machine_arn.as_deref() == Some(machine_arn.as_str()))
        .and_then(|s| s.state_machine_version_arn.clone());
    for change in &changes {
        let result = apply_change(ctx, change, &mut registered, &mut version).await;
        if let Err(error) = result {
            if error.class == ErrorClass::Terminal {
                let message = format!("AWS rejected a change: {error}");
                return stall(
                    flow,
                    api,
                    ctx,
                    "AwsRejected",
                    &message,
                    Some(ctx.recheck_interval),
                )
                .await;
            }
            return Err(aws_error(error));
        }
    }
    if version.is_none() {
        version = aws::sfn::latest_version(&ctx.sfn, &machine_arn)
            .await
            .map_err(aws_error)?;
    }

    let job_definitions: Vec<JobDefinitionRef> = rendered
        .steps
        .iter()
        .filter_map(|binding| {
            registered
                .get(&binding.job_definition)
                .map(|arn| JobDefinitionRef {
                    step: binding.step.clone(),
                    arn: arn.clone(),
                })
        })
        .collect();
    let outcome = Outcome::Ready {
        state_machine_arn: machine_arn,
        state_machine_version_arn: version,
        job_definitions,
        secrets: resolved,
        changed: !changes.is_empty(),
    };
    let next = status(previous, flow.metadata.generation, &outcome, now());
    if !changes.is_empty() {
        let summary = summarize(&changes);
        info!(flow = %flow.name_any(), namespace = %flow.namespace().unwrap_or_default(), %summary, "applied");
        publish(ctx, flow, EventType::Normal, "Applied", &summary, "Apply").await;
    }
    write_status(api, flow, flow.status.as_ref(), next).await?;
    Ok(Action::requeue(ctx.drift_interval))
}

/// Reads what the plan needs: the state machine (and, if not known to be ours, its owner tag)
/// and the ACTIVE revisions of the wanted job definitions. In steady state that is two reads.
async fn observe(
    ctx: &Context,
    rendered: &Rendered,
    previous: Option<&FlowStatus>,
    machine_arn: &str,
    uid: &str,
) -> Result<Observed, ReconcileError> {
    let machine = aws::sfn::describe_state_machine(&ctx.sfn, machine_arn)
        .await
        .map_err(aws_error)?;
    let known_own = previous.and_then(|s| s.state_machine_arn.as_deref()) == Some(machine_arn);
    let machine_owner_uid = match &machine {
        Some(_) if !known_own => {
            let tags = aws::sfn::tags(&ctx.sfn, machine_arn)
                .await
                .map_err(aws_error)?;
            Some(owner_uid(&tags))
        }
        _ => None,
    };

    let wanted: BTreeMap<&str, &str> = rendered
        .job_definitions
        .iter()
        .map(|d| {
            let hash = d
                .tags
                .get(CONTENT_HASH_TAG)
                .map(String::as_str)
                .unwrap_or_default();
            (d.job_definition_name.as_str(), hash)
        })
        .collect();
    let ours = |revision: &aws::batch::ActiveRevision| {
        revision.tags.get(TAG_UID).map(String::as_str) == Some(uid)
            && wanted.get(revision.name.as_str()).copied()
                == revision.tags.get(CONTENT_HASH_TAG).map(String::as_str)
    };
    let mut job_definitions = BTreeMap::new();
    let known: Vec<String> = previous
        .map(|s| s.job_definitions.iter().map(|r| r.arn.clone()).collect())
        .unwrap_or_default();
    let known: Vec<String> = known
        .into_iter()
        .filter(|arn| wanted.contains_key(job_definition_name(arn)))
        .collect();
    if !known.is_empty() {
        for revision in aws::batch::active_revisions_by_arn(&ctx.batch, &known)
            .await
            .map_err(aws_error)?
        {
            if ours(&revision) {
                job_definitions.insert(revision.name.clone(), revision.arn.clone());
            }
        }
    }
    let unknown: Vec<&str> = wanted
        .keys()
        .copied()
        .filter(|name| !job_definitions.contains_key(*name))
        .collect();
    for name in unknown {
        let revisions = aws::batch::active_revisions_by_name(&ctx.batch, name)
            .await
            .map_err(aws_error)?;
        if let Some(revision) = revisions
            .iter()
            .filter(|r| ours(r))
            .max_by_key(|r| revision_number(&r.arn))
        {
            job_definitions.insert(revision.name.clone(), revision.arn.clone());
        }
    }
    Ok(Observed {
        machine,
        machine_owner_uid,
        job_definitions,
    })
}

fn revision_number(arn: &str) -> u64 {
    arn.rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn apply_change(
    ctx: &Context,
    change: &Change,
    registered: &mut BTreeMap<String, String>,
    version: &mut Option<String>,
) -> Result<(), AwsError> {
    match change {
        Change::RegisterJobDefinition(definition) => {
            let arn = aws::batch::register_job_definition(&ctx.batch, definition).await?;
            registered.insert(definition.job_definition_name.clone(), arn);
        }
        Change::CreateStateMachine(machine) => {
            let (_, published) = aws::sfn::create_published(&ctx.sfn, machine).await?;
            *version = Some(published);
        }
        Change::UpdateStateMachine { arn, machine } => {
            *version = Some(aws::sfn::update_state_machine(&ctx.sfn, arn, machine).await?);
        }
        Change::DeregisterJobDefinition { arn } => aws::batch::deregister(&ctx.batch, arn).await?,
    }
    Ok(())
}

/// Looks every referenced secret up: its ARN, and for a JSON secret listing no keys, its key
/// names. Returns the lookups, the ARNs for the status, and the ids not found.
async fn resolve_secrets(
    flow: &Flow,
    ctx: &Context,
) -> Result<(SecretLookups, Vec<crate::api::ResolvedSecret>, Vec<String>), ReconcileError> {
    let mut lookups = SecretLookups::new();
    let mut resolved = Vec::new();
    let mut missing = Vec::new();
    for spec in flow.spec.steps.iter().flat_map(|step| step.secrets.iter()) {
        if lookups.contains_key(&spec.id) || missing.contains(&spec.id) {
            continue;
        }
        let role = spec
            .role
            .as_deref()
            .or(ctx.settings.secrets_role.as_deref());
        let region = spec
            .region
            .as_deref()
            .or(ctx.settings.secrets_region.as_deref());
        let client = ctx.secrets_client(role, region).await;
        match aws::secrets::arn(&client, &spec.id)
            .await
            .map_err(aws_error)?
        {
            None => missing.push(spec.id.clone()),
            Some(arn) => {
                let keys = if spec.type_ == SecretType::Json && spec.keys.is_empty() {
                    aws::secrets::json_keys(&client, &spec.id)
                        .await
                        .map_err(aws_error)?
                } else {
                    Vec::new()
                };
                resolved.push(crate::api::ResolvedSecret {
                    id: spec.id.clone(),
                    arn: arn.clone(),
                });
                lookups.insert(spec.id.clone(), ResolvedSecret { arn, keys });
            }
        }
    }
    Ok((lookups, resolved, missing))
}

/// Reports a Flow that cannot become Ready: Stalled with the cause, an event when that is
/// news, and no retry storm — a fix to the Flow triggers the next reconcile, and causes
/// outside it (a missing secret or queue) are checked again after `recheck`.
async fn stall(
    flow: &Flow,
    api: &Api<Flow>,
    ctx: &Context,
    reason: &str,
    message: &str,
    recheck: Option<std::time::Duration>,
) -> Result<Action, ReconcileError> {
    let previous = flow.status.as_ref();
    let outcome = Outcome::Stalled {
        reason: reason.to_owned(),
        message: message.to_owned(),
    };
    ctx.metrics.reconcile_failed("Flow", "terminal", reason);
    let next = status(previous, flow.metadata.generation, &outcome, now());
    if previous.and_then(|s| s.message.as_deref()) != Some(message) {
        warn!(flow = %flow.name_any(), namespace = %flow.namespace().unwrap_or_default(), reason, message, "stalled");
        publish(ctx, flow, EventType::Warning, reason, message, "Reconcile").await;
    }
    write_status(api, flow, flow.status.as_ref(), next).await?;
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// Removes what the Flow materialized, unless its deletion policy retains it. Resources that
/// are already gone, or that another owner tagged, are left alone.
async fn cleanup(flow: &Flow, ctx: &Context) -> Result<Action, ReconcileError> {
    if flow.spec.deletion_policy == DeletionPolicy::Retain {
        publish(
            ctx,
            flow,
            EventType::Normal,
            "Retained",
            "AWS resources kept (deletionPolicy: Retain)",
            "Delete",
        )
        .await;
        return Ok(Action::await_change());
    }
    let uid = flow.uid().unwrap_or_default();
    let namespace = flow.namespace().unwrap_or_default();
    let name = naming::state_machine_name(
        &ctx.settings.name_prefix,
        &namespace,
        &flow.name_any(),
        &uid,
    );
    let machine_arn = state_machine_arn(ctx, &name);
    if aws::sfn::describe_state_machine(&ctx.sfn, &machine_arn)
        .await
        .map_err(aws_error)?
        .is_some()
    {
        let tags = aws::sfn::tags(&ctx.sfn, &machine_arn)
            .await
            .map_err(aws_error)?;
        if owner_uid(&tags).as_deref() == Some(uid.as_str()) {
            aws::sfn::delete_state_machine(&ctx.sfn, &machine_arn)
                .await
                .map_err(aws_error)?;
        }
    }
    let mut arns: Vec<String> = flow
        .status
        .as_ref()
        .map(|s| s.job_definitions.iter().map(|r| r.arn.clone()).collect())
        .unwrap_or_default();
    // Revisions registered by a reconcile that crashed before writing the status.
    if let Ok(rendered) = compile::render(flow, &ctx.settings, Lookups::Offline) {
        for definition in &rendered.job_definitions {
            for revision in
                aws::batch::active_revisions_by_name(&ctx.batch, &definition.job_definition_name)
                    .await
                    .map_err(aws_error)?
            {
                if revision.tags.get(TAG_UID) == Some(&uid) {
                    arns.push(revision.arn);
                }
            }
        }
    }
    arns.sort();
    arns.dedup();
    for arn in &arns {
        aws::batch::deregister(&ctx.batch, arn)
            .await
            .map_err(aws_error)?;
    }
    info!(flow = %flow.name_any(), %namespace, job_definitions = arns.len(), "deleted AWS resources");
    publish(
        ctx,
        flow,
        EventType::Normal,
        "Deleted",
        "state machine deleted and job definitions deregistered",
        "Delete",
    )
    .await;
    Ok(Action::await_change())
}

fn summarize(changes: &[Change]) -> String {
    let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
    let registered = count(|c| matches!(c, Change::RegisterJobDefinition(_)));
    let deregistered = count(|c| matches!(c, Change::DeregisterJobDefinition { .. }));
    let machine = if changes
        .iter()
        .any(|c| matches!(c, Change::CreateStateMachine(_)))
    {
        "state machine created"
    } else if changes
        .iter()
        .any(|c| matches!(c, Change::UpdateStateMachine { .. }))
    {
        "state machine updated (new version)"
    } else {
        "state machine unchanged"
    };
    format!("{machine}; {registered} job definition(s) registered, {deregistered} deregistered")
}

fn aws_error(error: AwsError) -> ReconcileError {
    ReconcileError::Aws(error)
}
