//! The Flow reconciler's I/O shell: validate → render → observe → plan → apply → status.
//! The decisions are made by the pure functions of [`crate::compile`] and
//! [`crate::reconcilers::flow`]; this module only reads AWS, writes the planned changes and the
//! status, and records events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use tracing::{debug, info, warn};

use crate::api::{DeletionPolicy, FINALIZER, Flow, FlowStatus, JobDefinitionRef, SecretType};
use crate::aws;
use crate::aws::error::{AwsError, ErrorClass};
use crate::compile::job_definition::CONTENT_HASH_TAG;
use crate::compile::secrets::{Lookups, ResolvedSecret, SecretLookups};
use crate::compile::{self, Rendered, TAG_UID, naming};
use crate::failpoint;
use crate::reconcilers::flow::{
    Change, InUse, Observed, Outcome, deregistrations, in_use, job_definition_name, known_version,
    owner_uid, plan, retired, status,
};
use crate::reconcilers::{ownership, tenancy};

use super::report::{now, publish, write_status};
use super::{Context, ReconcileError};

/// Reconciles one Flow, with the finalizer that cleans up AWS when it is deleted.
pub async fn reconcile(flow: Arc<Flow>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if let Some(action) = ctx.settled_flows.unchanged(&flow, ctx.drift_interval) {
        return Ok(action);
    }
    ctx.settled_flows.forget(&flow.uid().unwrap_or_default());
    let namespace = flow.namespace().unwrap_or_default();
    let api: Api<Flow> = Api::namespaced(ctx.kube.clone(), &namespace);
    let started = Instant::now();
    let flow = with_finalizer(&api, flow).await?;
    debug!(flow = %flow.name_any(), %namespace, ms = ms(started), "finalizer present");
    finalizer(&api, FINALIZER, flow, |event| async {
        match event {
            Finalized::Apply(flow) => match apply(&flow, &api, &ctx).await {
                Err(ReconcileError::Aws(error)) => aws_failed(&flow, &api, &ctx, error).await,
                other => other,
            },
            Finalized::Cleanup(flow) => {
                super::cleanup::guarded(flow.as_ref(), &api, &ctx, cleanup(&flow, &ctx)).await
            }
        }
    })
    .await
    .map_err(|error| ReconcileError::Finalizer(Box::new(error)))
}

/// Adds the cleanup finalizer to a Flow that is not being deleted and lacks it, and gives the
/// Flow as written, so the same reconcile goes on to apply it instead of waiting for the watch
/// to deliver its own finalizer write (a round trip and a second reconcile for every new Flow).
/// The write is guarded by the resourceVersion read, so a concurrent change of the finalizers
/// is a conflict (a quick requeue), never overwritten.
async fn with_finalizer(api: &Api<Flow>, flow: Arc<Flow>) -> Result<Arc<Flow>, ReconcileError> {
    if flow.metadata.deletion_timestamp.is_some()
        || flow.finalizers().iter().any(|f| f == FINALIZER)
    {
        return Ok(flow);
    }
    let mut finalizers = flow.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": flow.resource_version(),
        "finalizers": finalizers,
    }});
    let written = api
        .patch(
            &flow.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(ReconcileError::Kube)?;
    Ok(Arc::new(written))
}

/// Flows whose last reconcile succeeded and left nothing pending, with the resourceVersions
/// that reconcile saw and wrote. The watch delivers the controller's own status write back as
/// a change; reconciling it again would read AWS three times to find nothing to do. A Flow at
/// one of those versions is unchanged since (any other write, to its spec, annotations,
/// finalizers or status, makes a new version), so its reconcile is skipped, but only for half
/// the drift interval: the periodic reconcile that looks for drift in AWS always runs.
#[derive(Default)]
pub struct SettledFlows {
    /// By Flow UID: the versions, and when they were recorded.
    settled: std::sync::Mutex<std::collections::HashMap<String, (Vec<String>, Instant)>>,
}

impl SettledFlows {
    /// The action for a Flow unchanged since its last reconcile settled it, if it is one.
    fn unchanged(&self, flow: &Flow, drift: Duration) -> Option<Action> {
        let version = flow.resource_version()?;
        let settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        let (versions, at) = settled.get(flow.uid().as_deref()?)?;
        let elapsed = at.elapsed();
        (flow.metadata.deletion_timestamp.is_none()
            && elapsed < drift / 2
            && versions.contains(&version))
        .then(|| Action::requeue(drift.saturating_sub(elapsed)))
    }

    /// Records a settled Flow. Entries older than the drift interval are of no use any more
    /// and are dropped here, so the map holds only Flows reconciled recently.
    fn record(&self, uid: &str, versions: Vec<String>, drift: Duration) {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        settled.retain(|_, (_, at)| at.elapsed() < drift);
        settled.insert(uid.to_owned(), (versions, Instant::now()));
    }

    fn forget(&self, uid: &str) {
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    /// How many Flows are recorded.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.settled.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The ARN of a state machine, from its name (the account and region are the controller's).
pub(super) fn state_machine_arn(ctx: &Context, name: &str) -> String {
    format!(
        "arn:aws:states:{}:{}:stateMachine:{name}",
        ctx.settings.region,
        ctx.settings.account()
    )
}

/// The ARN of a Flow's own state machine, derived from its namespace, name and UID — never
/// read from its status, which anyone with `flows/status` can write.
pub(super) fn own_state_machine_arn(ctx: &Context, flow: &Flow) -> String {
    let name = naming::state_machine_name(
        &ctx.settings.name_prefix,
        &flow.namespace().unwrap_or_default(),
        &flow.name_any(),
        &flow.uid().unwrap_or_default(),
    );
    state_machine_arn(ctx, &name)
}

/// Why the Flow's namespace may not run it now (the message of its `NotAllowed` condition),
/// decided from its spec and the allow lists rather than read from its status: Runs and
/// Schedules ask this before they start anything.
pub(super) async fn not_allowed_message(
    ctx: &Context,
    flow: &Flow,
) -> Result<Option<String>, ReconcileError> {
    let namespace = flow.namespace().unwrap_or_default();
    let policy = super::operations::tenancy_policy(ctx, &namespace).await?;
    let violations = tenancy::check(&flow.spec, &ctx.settings, &policy);
    Ok((!violations.is_empty()).then(|| tenancy::message(&namespace, &violations)))
}

/// Milliseconds since `started`, for the debug log of a reconcile's phases.
fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

async fn apply(flow: &Flow, api: &Api<Flow>, ctx: &Context) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let previous = flow.status.as_ref();
    let uid = flow.uid().unwrap_or_default();
    // The namespace's allow lists and defaults (a watch cache read, no AWS call).
    let namespace = flow.namespace().unwrap_or_default();
    let policy = super::operations::tenancy_policy(ctx, &namespace).await?;
    let settings = policy.settings(&ctx.settings);

    // Validate offline first: an invalid Flow costs no AWS call.
    if let Err(error) = compile::render(flow, &settings, Lookups::Offline) {
        return stall(flow, api, ctx, "InvalidFlow", &error.to_string(), None).await;
    }

    // Only the roles, job queues and secrets the namespace may use; checked before any AWS
    // call, since looking a secret up may already assume its role or read its key names.
    // Allow lists can change outside the Flow, so a refused Flow is checked again later, and
    // what it materialized while it was allowed stops running as the forbidden identity.
    let violations = tenancy::check(&flow.spec, &ctx.settings, &policy);
    if !violations.is_empty() {
        let message = tenancy::message(&namespace, &violations);
        return not_allowed(flow, api, ctx, &settings, &message).await;
    }

    // Secrets must exist; their ARNs (never their values) are recorded.
    let (lookups, resolved, missing) = match resolve_secrets(flow, ctx, &policy).await? {
        Resolution::Resolved(lookups, resolved, missing) => (lookups, resolved, missing),
        Resolution::NotAllowed(violation) => {
            let message = tenancy::message(&namespace, &[violation]);
            return not_allowed(flow, api, ctx, &settings, &message).await;
        }
    };
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
    let rendered = match compile::render(flow, &settings, Lookups::Resolved(&lookups)) {
        Ok(rendered) => rendered,
        Err(error) => return stall(flow, api, ctx, "InvalidFlow", &error.to_string(), None).await,
    };

    let mut queues: Vec<String> = rendered.steps.iter().map(|s| s.job_queue.clone()).collect();
    queues.sort();
    queues.dedup();
    // The job queues and what the plan needs are read at once: independent reads, and the
    // plan's are wasted only while a queue is missing or on the wrong platform.
    let machine_arn = state_machine_arn(ctx, &rendered.state_machine.name);
    let (platforms, observed) = futures::join!(
        ctx.queue_platforms.get(&ctx.batch, &queues),
        observe(ctx, &rendered, previous, &machine_arn, &uid)
    );
    debug!(flow = %flow.name_any(), %namespace, ms = ms(started), "observed");
    let platforms = platforms.map_err(aws_error)?;
    let missing_queues: Vec<String> = queues
        .iter()
        .filter(|queue| !platforms.contains_key(*queue))
        .cloned()
        .collect();
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

    let step_queues: Vec<(String, String)> = rendered
        .steps
        .iter()
        .map(|s| (s.step.clone(), s.job_queue.clone()))
        .collect();
    let mismatched = compile::checks::queue_platform_problems(flow, &step_queues, &platforms);
    if !mismatched.is_empty() {
        return stall(
            flow,
            api,
            ctx,
            "JobQueuePlatform",
            &mismatched.join("; "),
            Some(ctx.recheck_interval),
        )
        .await;
    }

    let mut observed = observed?;

    // Two phases (see `reconcilers::flow`): the first plan registers the job definitions that
    // have no revision; their revisions join what was observed, and the second plan pins them
    // into the state machine. A converged Flow plans nothing and leaves after one round.
    let mut applied = Vec::new();
    let mut published = None;
    for _phase in 0..2 {
        let changes = match plan(&rendered, &observed, &uid) {
            Ok(changes) => changes,
            Err(error) => {
                return stall(flow, api, ctx, "ForeignResource", &error.to_string(), None).await;
            }
        };
        if changes.is_empty() {
            break;
        }
        // Registrations are independent of each other: made at once, then the rest in order.
        let (registrations, rest): (Vec<&Change>, Vec<&Change>) = changes
            .iter()
            .partition(|change| matches!(change, Change::RegisterJobDefinition(_)));
        let registered =
            futures::future::join_all(registrations.into_iter().map(|c| apply_change(ctx, c)))
                .await;
        let mut results = registered.into_iter();
        let mut remaining = rest.into_iter();
        loop {
            let result = match results.next() {
                Some(result) => result,
                None => match remaining.next() {
                    Some(change) => apply_change(ctx, change).await,
                    None => break,
                },
            };
            match result {
                Ok(Applied::Registered { name, arn }) => {
                    observed.job_definitions.insert(name, arn);
                }
                Ok(Applied::Published(version)) => published = Some(version),
                Ok(Applied::Done) => {}
                Err(error) if error.class == ErrorClass::Terminal => {
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
                Err(error) => return Err(aws_error(error)),
            }
        }
        applied.extend(changes);
    }

    // The version Runs start on: the one just published, or the recorded one while the machine
    // is still at its revision; otherwise (an update whose status write was interrupted) the
    // latest, read from Step Functions, so the Flow is never Ready on a stale version.
    let version = match known_version(
        previous,
        &machine_arn,
        observed.machine.as_ref(),
        published.as_ref(),
    ) {
        Some(version) => Some(version),
        None => aws::sfn::latest_version(&ctx.sfn, &machine_arn)
            .await
            .map_err(aws_error)?
            .map(|version_arn| aws::sfn::Published {
                version_arn,
                revision_id: observed
                    .machine
                    .as_ref()
                    .and_then(|m| m.revision_id.clone()),
            }),
    };

    let job_definitions: Vec<JobDefinitionRef> = rendered
        .steps
        .iter()
        .filter_map(|binding| {
            observed
                .job_definitions
                .get(&binding.job_definition)
                .map(|arn| JobDefinitionRef {
                    step: binding.step.clone(),
                    arn: arn.clone(),
                })
        })
        .collect();
    let mut retired_job_definitions = retired(previous, &job_definitions);
    let mut outcome = Outcome::Ready {
        state_machine_arn: machine_arn.clone(),
        version,
        job_definitions,
        retired_job_definitions: retired_job_definitions.clone(),
        secrets: resolved,
        changed: !applied.is_empty(),
    };
    let next = status(previous, flow.metadata.generation, &outcome, now());
    // The new version and the retired revisions are recorded before any is deregistered: a
    // reconcile interrupted after this point finds them in the status and finishes the job.
    debug!(flow = %flow.name_any(), %namespace, ms = ms(started), "applied");
    let written = write_status(api, flow, previous, next.clone()).await?;
    debug!(flow = %flow.name_any(), %namespace, ms = ms(started), "status written");
    let settled = retired_job_definitions.is_empty();

    if !retired_job_definitions.is_empty() {
        let in_use = running_in_use(ctx, &machine_arn, &next).await?;
        let deregister = deregistrations(&retired_job_definitions, &in_use);
        // The status names the revisions, but anyone with `flows/status` can write it: only
        // ACTIVE revisions tagged with this Flow's UID are deregistered; others are forgotten.
        let candidates: Vec<String> = deregister
            .iter()
            .filter_map(|change| match change {
                Change::DeregisterJobDefinition { arn } => Some(arn.clone()),
                _ => None,
            })
            .collect();
        let owned = owned_job_definitions(ctx, &candidates, &uid).await?;
        for change in &deregister {
            if let Change::DeregisterJobDefinition { arn } = change {
                if owned.contains(arn) {
                    aws::batch::deregister(&ctx.batch, arn)
                        .await
                        .map_err(aws_error)?;
                } else {
                    warn!(flow = %flow.name_any(), %namespace, %arn, "a retired job definition in the status is not this Flow's (or no longer active): forgotten, not deregistered");
                }
                retired_job_definitions.retain(|retired| retired != arn);
            }
        }
        applied.extend(deregister);
        if let Outcome::Ready {
            retired_job_definitions: recorded,
            changed,
            ..
        } = &mut outcome
        {
            *recorded = retired_job_definitions.clone();
            *changed = !applied.is_empty();
        }
        let after = status(Some(&next), flow.metadata.generation, &outcome, now());
        write_status(api, flow, Some(&next), after).await?;
    }
    if !applied.is_empty() {
        let summary = summarize(&applied, retired_job_definitions.len());
        info!(flow = %flow.name_any(), namespace = %flow.namespace().unwrap_or_default(), %summary, "applied");
        publish(ctx, flow, EventType::Normal, "Applied", &summary, "Apply").await;
    }
    if settled {
        let versions = flow.resource_version().into_iter().chain(written).collect();
        ctx.settled_flows.record(&uid, versions, ctx.drift_interval);
    }
    // Retired revisions are looked at again when a Run of the Flow ends (the Run watch wakes
    // the Flow), and at least every recheck interval for executions started elsewhere.
    Ok(if retired_job_definitions.is_empty() {
        Action::requeue(ctx.drift_interval)
    } else {
        Action::requeue(ctx.drift_interval.min(ctx.recheck_interval))
    })
}

/// What the running executions of the machine may still submit: the job definitions their
/// versions' definitions refer to. One ListExecutions, plus one DescribeStateMachine per other
/// version with running executions (the current version's references are in `status`); only
/// called while revisions wait to be deregistered.
///
/// Asked of Step Functions rather than read from the Runs in the cluster, because executions
/// also start without a Run (a Schedule's rule, the console) and a Run records its execution
/// only after StartExecution returned. An execution started on the machine itself rather than
/// a version (a Schedule's rule) runs the revision current at its start, which is not known:
/// it keeps every retired revision until it ends.
async fn running_in_use(
    ctx: &Context,
    machine_arn: &str,
    status: &FlowStatus,
) -> Result<InUse, ReconcileError> {
    let running = aws::sfn::running_executions(&ctx.sfn, machine_arn)
        .await
        .map_err(aws_error)?;
    let current_version = status.state_machine_version_arn.as_deref();
    let current = revisions_of(status);
    let mut definitions: BTreeMap<Option<String>, Option<serde_json::Value>> = BTreeMap::new();
    for execution in running {
        let version = execution.version_arn;
        if definitions.contains_key(&version) {
            continue;
        }
        let definition = match version.as_deref() {
            None => None,
            Some(arn) if Some(arn) == current_version => Some(current.clone()),
            Some(arn) => aws::sfn::describe_state_machine(&ctx.sfn, arn)
                .await
                .map_err(aws_error)?
                .map(|version| version.definition),
        };
        definitions.insert(version, definition);
    }
    Ok(in_use(definitions.values().map(Option::as_ref)))
}

/// The current version's job definitions, as a definition [`in_use`] can read.
fn revisions_of(status: &FlowStatus) -> serde_json::Value {
    let tasks: Vec<serde_json::Value> = status
        .job_definitions
        .iter()
        .map(|r| {
            serde_json::json!({
                "Type": "Task",
                "Resource": "arn:aws:states:::batch:submitJob.sync",
                "Parameters": {"JobDefinition": r.arn}
            })
        })
        .collect();
    serde_json::Value::Array(tasks)
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
    // The machine and the job definitions are read at once: neither read depends on the other.
    let (machine, job_definitions) = futures::try_join!(
        observe_machine(ctx, previous, machine_arn),
        observe_job_definitions(ctx, rendered, previous, uid)
    )?;
    let (machine, machine_owner_uid) = machine;
    Ok(Observed {
        machine,
        machine_owner_uid,
        job_definitions,
    })
}

/// The state machine, and its owner's UID unless the status already knows it is ours.
async fn observe_machine(
    ctx: &Context,
    previous: Option<&FlowStatus>,
    machine_arn: &str,
) -> Result<
    (
        Option<crate::aws::sfn::ObservedMachine>,
        Option<Option<String>>,
    ),
    ReconcileError,
> {
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
    Ok((machine, machine_owner_uid))
}

/// The ACTIVE revision of each wanted job definition that is ours with the wanted content:
/// those the status names in one read, the others by name, all at once.
async fn observe_job_definitions(
    ctx: &Context,
    rendered: &Rendered,
    previous: Option<&FlowStatus>,
    uid: &str,
) -> Result<BTreeMap<String, String>, ReconcileError> {
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
    let found = futures::future::try_join_all(
        unknown
            .into_iter()
            .map(|name| aws::batch::active_revisions_by_name(&ctx.batch, name)),
    )
    .await
    .map_err(aws_error)?;
    for revisions in found {
        if let Some(revision) = revisions
            .iter()
            .filter(|r| ours(r))
            .max_by_key(|r| revision_number(&r.arn))
        {
            job_definitions.insert(revision.name.clone(), revision.arn.clone());
        }
    }
    Ok(job_definitions)
}

fn revision_number(arn: &str) -> u64 {
    arn.rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What applying one change gave back.
enum Applied {
    Registered { name: String, arn: String },
    Published(aws::sfn::Published),
    Done,
}

async fn apply_change(ctx: &Context, change: &Change) -> Result<Applied, AwsError> {
    Ok(match change {
        Change::RegisterJobDefinition(definition) => Applied::Registered {
            name: definition.job_definition_name.clone(),
            arn: aws::batch::register_job_definition(&ctx.batch, definition).await?,
        },
        Change::CreateStateMachine(machine) => {
            let (_, version_arn) = aws::sfn::create_published(&ctx.sfn, machine).await?;
            Applied::Published(aws::sfn::Published {
                version_arn,
                revision_id: None,
            })
        }
        Change::UpdateStateMachine { arn, machine } => {
            let published = aws::sfn::update_state_machine(&ctx.sfn, arn, machine).await?;
            failpoint::hit(failpoint::AFTER_STATE_MACHINE_UPDATE);
            Applied::Published(published)
        }
        Change::DeregisterJobDefinition { arn } => {
            aws::batch::deregister(&ctx.batch, arn).await?;
            Applied::Done
        }
    })
}

/// What looking the Flow's secrets up gave.
enum Resolution {
    /// The lookups, the ARNs for the status, and the ids not found.
    Resolved(SecretLookups, Vec<crate::api::ResolvedSecret>, Vec<String>),
    /// An id resolved to a secret the namespace may not use (found before its value is read).
    NotAllowed(tenancy::Violation),
}

/// Looks every referenced secret up: its ARN, and for a JSON secret listing no keys, its key
/// names. The ARN each id resolves to is checked against the namespace's secrets lists
/// before any value is read.
async fn resolve_secrets(
    flow: &Flow,
    ctx: &Context,
    policy: &tenancy::Policy,
) -> Result<Resolution, ReconcileError> {
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
                let field = format!("secret {}", spec.id);
                if let Some(violation) =
                    tenancy::check_resolved_secret(&field, &arn, &ctx.settings, policy)
                {
                    return Ok(Resolution::NotAllowed(violation));
                }
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
    Ok(Resolution::Resolved(lookups, resolved, missing))
}

/// The ARNs among `arns` that are ACTIVE job definitions tagged with `uid` (one
/// DescribeJobDefinitions per 100; none when `arns` is empty).
async fn owned_job_definitions(
    ctx: &Context,
    arns: &[String],
    uid: &str,
) -> Result<std::collections::BTreeSet<String>, ReconcileError> {
    if arns.is_empty() {
        return Ok(Default::default());
    }
    let revisions = aws::batch::active_revisions_by_arn(&ctx.batch, arns)
        .await
        .map_err(aws_error)?;
    Ok(ownership::owned_revisions(&revisions, uid))
}

/// Stalls a Flow its namespace may not run, and takes back what it materialized while it
/// was allowed, so nothing runs as the forbidden identity: its state machine (if it exists
/// and is this Flow's) is replaced by a definition that fails at once with the reason, and
/// its job definitions are deregistered (versions published earlier then fail to submit
/// anything). Its Schedules disable their rules and its Runs are refused (their
/// reconcilers read the Flow's `NotAllowed` condition). When the Flow is allowed again the
/// usual plan restores its definition and registers its job definitions anew.
///
/// A Flow that never was allowed has neither: this costs one read (DescribeStateMachine of
/// its own, derived name).
async fn not_allowed(
    flow: &Flow,
    api: &Api<Flow>,
    ctx: &Context,
    settings: &crate::settings::Settings,
    message: &str,
) -> Result<Action, ReconcileError> {
    let uid = flow.uid().unwrap_or_default();
    let namespace = flow.namespace().unwrap_or_default();
    let name =
        naming::state_machine_name(&settings.name_prefix, &namespace, &flow.name_any(), &uid);
    let machine_arn = state_machine_arn(ctx, &name);
    let mut taken_back = Vec::new();
    let machine = aws::sfn::describe_state_machine(&ctx.sfn, &machine_arn)
        .await
        .map_err(aws_error)?;
    let had_machine = machine.is_some();
    if let Some(machine) = machine {
        let failing = ownership::not_allowed_definition(message);
        if machine.definition != failing {
            let tags = aws::sfn::tags(&ctx.sfn, &machine_arn)
                .await
                .map_err(aws_error)?;
            if ownership::owned_by(&tags, &uid) {
                let replacement = compile::StateMachine {
                    name: name.clone(),
                    role_arn: machine.role_arn.clone(),
                    kind: "STANDARD".to_owned(),
                    definition: failing,
                    tags: BTreeMap::new(),
                };
                aws::sfn::update_state_machine(&ctx.sfn, &machine_arn, &replacement)
                    .await
                    .map_err(aws_error)?;
                taken_back
                    .push("state machine replaced by one that fails with the reason".to_owned());
            }
        }
    }
    // This Flow's revisions: those the status names and those of its current spec's names,
    // deregistered only when ACTIVE and tagged with its UID.
    let mut arns = status_job_definition_arns(flow);
    let mut owned = owned_job_definitions(ctx, &arns, &uid).await?;
    // Without a machine, revisions not in the status are referenced by nothing that runs
    // (a reconcile interrupted before it created the machine): not looked for, so a Flow
    // that never was allowed costs one read.
    if had_machine && let Ok(rendered) = compile::render(flow, settings, Lookups::Offline) {
        for definition in &rendered.job_definitions {
            let revisions =
                aws::batch::active_revisions_by_name(&ctx.batch, &definition.job_definition_name)
                    .await
                    .map_err(aws_error)?;
            owned.extend(ownership::owned_revisions(&revisions, &uid));
        }
    }
    arns = owned.into_iter().collect();
    for arn in &arns {
        aws::batch::deregister(&ctx.batch, arn)
            .await
            .map_err(aws_error)?;
    }
    if !arns.is_empty() {
        taken_back.push(format!("{} job definition(s) deregistered", arns.len()));
    }
    if !taken_back.is_empty() {
        let summary = taken_back.join("; ");
        info!(flow = %flow.name_any(), %namespace, %summary, "not allowed: taken back");
        publish(
            ctx,
            flow,
            EventType::Warning,
            "NotAllowed",
            &summary,
            "Reconcile",
        )
        .await;
    }
    stall(
        flow,
        api,
        ctx,
        "NotAllowed",
        message,
        Some(ctx.recheck_interval),
    )
    .await
}

/// Consecutive retryable failures after which the Flow says it is retrying: one transient
/// error is not worth flipping `Ready`.
const RETRIES_BEFORE_REPORTING: u32 = 2;

/// An AWS call failed where no step handled it (reading secrets, job queues, the state
/// machine): a terminal error (AccessDenied on DescribeSecret, an AssumeRole STS refused)
/// stalls the Flow with AWS's message, checked again every recheck interval instead of backed
/// off silently; a retryable one that keeps failing shows as `Reconciling`, reason `Retrying`,
/// with the last error, while the controller backs off.
async fn aws_failed(
    flow: &Flow,
    api: &Api<Flow>,
    ctx: &Context,
    error: AwsError,
) -> Result<Action, ReconcileError> {
    match error.class {
        ErrorClass::Terminal => {
            let message = format!(
                "AWS refused a call: {error}; checked again every {}s",
                ctx.recheck_interval.as_secs()
            );
            stall(
                flow,
                api,
                ctx,
                "AwsRejected",
                &message,
                Some(ctx.recheck_interval),
            )
            .await
        }
        ErrorClass::Retryable if ctx.consecutive_failures(flow) >= RETRIES_BEFORE_REPORTING => {
            let outcome = Outcome::Retrying {
                message: format!("retrying after an AWS error: {error}"),
            };
            let next = status(
                flow.status.as_ref(),
                flow.metadata.generation,
                &outcome,
                now(),
            );
            write_status(api, flow, flow.status.as_ref(), next).await?;
            Err(ReconcileError::Aws(error))
        }
        _ => Err(ReconcileError::Aws(error)),
    }
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
    let mut arns = status_job_definition_arns(flow);
    // Revisions registered by a reconcile that crashed before writing the status.
    let settings = super::operations::tenancy_policy(ctx, &namespace)
        .await?
        .settings(&ctx.settings);
    if let Ok(rendered) = compile::render(flow, &settings, Lookups::Offline) {
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
    // Whatever the status says, only this Flow's own ACTIVE revisions are deregistered.
    let arns: Vec<String> = owned_job_definitions(ctx, &arns, &uid)
        .await?
        .into_iter()
        .collect();
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

fn summarize(changes: &[Change], kept: usize) -> String {
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
    let kept = if kept > 0 {
        format!(", {kept} kept for running executions")
    } else {
        String::new()
    };
    format!(
        "{machine}; {registered} job definition(s) registered, {deregistered} deregistered{kept}"
    )
}

fn aws_error(error: AwsError) -> ReconcileError {
    ReconcileError::Aws(error)
}

/// The job definition revisions the Flow's status names, in use and retired: candidates only,
/// each deregistered after its ownership tags are checked.
fn status_job_definition_arns(flow: &Flow) -> Vec<String> {
    flow.status
        .as_ref()
        .map(|s| {
            s.job_definitions
                .iter()
                .map(|r| r.arn.clone())
                .chain(s.retired_job_definitions.iter().cloned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FlowSpec;

    fn flow(version: &str) -> Flow {
        let mut flow = Flow::new(
            "f",
            serde_json::from_value::<FlowSpec>(serde_json::json!({"steps": []})).unwrap(),
        );
        flow.metadata.uid = Some("uid-1".into());
        flow.metadata.resource_version = Some(version.into());
        flow
    }

    #[test]
    fn only_the_versions_a_settled_reconcile_saw_or_wrote_are_skipped() {
        let settled = SettledFlows::default();
        let drift = Duration::from_secs(300);
        assert!(
            settled.unchanged(&flow("7"), drift).is_none(),
            "nothing recorded"
        );
        settled.record("uid-1", vec!["7".into(), "8".into()], drift);
        assert!(settled.unchanged(&flow("7"), drift).is_some());
        assert!(
            settled.unchanged(&flow("8"), drift).is_some(),
            "its own status write"
        );
        assert!(
            settled.unchanged(&flow("9"), drift).is_none(),
            "written by someone else"
        );
        let mut deleting = flow("8");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(
            settled.unchanged(&deleting, drift).is_none(),
            "a deletion is cleaned up"
        );
        settled.forget("uid-1");
        assert!(settled.unchanged(&flow("8"), drift).is_none(), "forgotten");
    }

    #[test]
    fn the_periodic_drift_reconcile_is_never_skipped() {
        let settled = SettledFlows::default();
        // Half of no drift interval has always passed: the reconcile runs.
        settled.record("uid-1", vec!["7".into()], Duration::ZERO);
        assert!(settled.unchanged(&flow("7"), Duration::ZERO).is_none());
        assert_eq!(settled.len(), 1);
        // Entries older than the drift interval are dropped when another is recorded.
        settled.record("uid-2", vec!["1".into()], Duration::ZERO);
        assert_eq!(settled.len(), 1);
    }
}
