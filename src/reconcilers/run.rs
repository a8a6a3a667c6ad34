//! The Run pipeline's pure parts: checking parameters against the Flow's, reading an
//! execution's history into per-step status, and the Run's phase.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{Parameter, ParameterValues, RunPhase, StepPhase, StepStatus};
use crate::compile::parameters::{self, TypedParameters};

/// Checks a Run's parameter values against the Flow's declarations and returns every value
/// the execution gets (defaults filled in), or a message naming each problem.
///
/// The values come back converted to their types (see [`crate::compile::parameters`]): the
/// execution input carries numbers, booleans and parsed JSON.
pub fn check_parameters(
    declared: &[Parameter],
    values: &ParameterValues,
) -> Result<TypedParameters, String> {
    let mut problems = Vec::new();
    for name in values.keys() {
        if !declared.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
            problems.push(format!(
                "unknown parameter `{name}` (the Flow declares {known:?})"
            ));
        }
    }
    let mut merged = BTreeMap::new();
    for parameter in declared {
        let value = match (values.get(&parameter.name), &parameter.default) {
            (Some(value), _) => value.clone(),
            (None, Some(default)) => default.clone(),
            (None, None) if parameter.required => {
                problems.push(format!(
                    "required parameter `{}` is not set",
                    parameter.name
                ));
                continue;
            }
            (None, None) => continue,
        };
        match parameters::typed(parameter.type_, &value) {
            Ok(value) => {
                merged.insert(parameter.name.clone(), value);
            }
            Err(problem) => problems.push(format!("parameter `{}`: {problem}", parameter.name)),
        }
    }
    if problems.is_empty() {
        Ok(merged)
    } else {
        Err(problems.join("; "))
    }
}

/// The Run's phase for a Step Functions execution status.
pub fn phase_of(execution_status: &str) -> RunPhase {
    match execution_status {
        "SUCCEEDED" => RunPhase::Succeeded,
        "FAILED" => RunPhase::Failed,
        "TIMED_OUT" => RunPhase::TimedOut,
        "ABORTED" => RunPhase::Aborted,
        _ => RunPhase::Running,
    }
}

/// One history event, reduced to what step tracking needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    pub id: i64,
    pub previous_id: i64,
    pub kind: String,
    /// TaskScheduled: the task's parameters; TaskSubmitted/TaskSucceeded: its output;
    /// TaskFailed: its cause (all JSON text). TaskStateEntered, MapStateEntered: the state's
    /// name.
    pub detail: Option<String>,
    pub timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Per-step status from the execution history of the top-level state machine (the tasks of
/// a Distributed Map run in child executions and are not listed here). Steps are recognised
/// by their `FLOWLINE_STEP` override, else by the name of their Task state (a step's state is
/// named after it): a multi-node task's parameters carry its environment in `NodeOverrides`,
/// which a history may not echo.
///
/// A step of a multi-node (gang) job lists the main job's id and then each node's,
/// `<jobId>#<node>` (Batch's ids of the node jobs), once the node count is known: from the
/// task's `NodeOverrides.NumNodes`, else from the job description the task ends with.
///
/// History ends at `ExecutionAborted`: a step whose task had not left its state by then
/// (`TaskStateExited`, which follows a task that ended) was killed by the stop and is
/// Aborted, whatever its task reported: stopping terminates the job, and the task can still
/// record an end (even TaskSucceeded) before or after the abort.
pub fn step_statuses(events: &[HistoryEvent]) -> Vec<StepStatus> {
    let by_id: BTreeMap<i64, &HistoryEvent> = events.iter().map(|e| (e.id, e)).collect();
    let mut steps: BTreeMap<String, StepStatus> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    // Node counts of the multi-node steps, from their task parameters.
    let mut node_counts: BTreeMap<String, i64> = BTreeMap::new();
    // Steps whose last task has left its state.
    let mut exited: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for event in events {
        if event.kind == "ExecutionAborted" {
            for step in steps.values_mut() {
                if !exited.contains(&step.name) && step.phase != Some(StepPhase::Aborted) {
                    step.phase = Some(StepPhase::Aborted);
                    step.completion_time = event.timestamp.clone();
                }
            }
            break;
        }
        let Some(scheduled) = scheduled_event(event, &by_id) else {
            continue;
        };
        let Some(step) = step_of(scheduled, &by_id) else {
            continue;
        };
        match event.kind.as_str() {
            "TaskStateExited" => {
                exited.insert(step);
                continue;
            }
            "TaskScheduled" => {
                exited.remove(&step);
            }
            _ => {}
        }
        if !steps.contains_key(&step) {
            order.push(step.clone());
        }
        let status = steps.entry(step.clone()).or_insert_with(|| StepStatus {
            name: step.clone(),
            ..StepStatus::default()
        });
        let job = event
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok());
        match event.kind.as_str() {
            "TaskScheduled" => {
                status.phase = Some(StepPhase::Running);
                status.start_time = event.timestamp.clone();
                if let Some(count) = job
                    .as_ref()
                    .and_then(|p| p["NodeOverrides"]["NumNodes"].as_i64())
                {
                    node_counts.insert(step.clone(), count);
                }
            }
            "TaskSubmitted" => {
                if let Some(id) = job.as_ref().and_then(|j| j["JobId"].as_str()) {
                    push_job_ids(&mut status.job_ids, id, node_counts.get(&step).copied());
                }
            }
            "TaskSucceeded" | "TaskFailed" => {
                let job = if event.kind == "TaskFailed" {
                    // The cause of a failed .sync task is the job description.
                    job.and_then(|cause| cause.get("Cause").cloned().or(Some(cause)))
                        .map(|v| match v {
                            Value::String(text) => {
                                serde_json::from_str(&text).unwrap_or(Value::Null)
                            }
                            other => other,
                        })
                } else {
                    job
                };
                status.phase = Some(if event.kind == "TaskSucceeded" {
                    StepPhase::Succeeded
                } else {
                    StepPhase::Failed
                });
                status.completion_time = event.timestamp.clone();
                if let Some(job) = job {
                    if let Some(id) = job["JobId"].as_str() {
                        let nodes = job["NodeProperties"]["NumNodes"]
                            .as_i64()
                            .or_else(|| node_counts.get(&step).copied());
                        push_job_ids(&mut status.job_ids, id, nodes);
                    }
                    if let Some(attempts) = job["Attempts"].as_array() {
                        status.attempts = i32::try_from(attempts.len()).ok().filter(|n| *n > 0);
                        for attempt in attempts {
                            if let Some(stream) = attempt["Container"]["LogStreamName"].as_str() {
                                push_unique(&mut status.log_streams, stream);
                            }
                        }
                    }
                    if let Some(stream) = job["Container"]["LogStreamName"].as_str() {
                        push_unique(&mut status.log_streams, stream);
                    }
                    if event.kind == "TaskFailed" {
                        status.reason = job["StatusReason"]
                            .as_str()
                            .or_else(|| job["Container"]["Reason"].as_str())
                            .map(str::to_owned);
                    }
                }
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|name| steps.remove(&name))
        .collect()
}

/// The Distributed Map runs an execution started: `(foreach step, map run ARN)`. The Map
/// state of a foreach is named `<step>.foreach`.
pub fn map_runs(events: &[HistoryEvent]) -> Vec<(String, String)> {
    let by_id: BTreeMap<i64, &HistoryEvent> = events.iter().map(|e| (e.id, e)).collect();
    events
        .iter()
        .filter(|e| e.kind == "MapRunStarted")
        .filter_map(|started| {
            let arn = started.detail.clone()?;
            let mut current = started;
            for _ in 0..16 {
                if current.kind == "MapStateEntered" {
                    let state = current.detail.as_deref()?;
                    let step = state.strip_suffix(".foreach").unwrap_or(state);
                    return Some((step.to_owned(), arn));
                }
                current = by_id.get(&current.previous_id)?;
            }
            None
        })
        .collect()
}

/// Most job ids and log streams kept per step when the tasks of a foreach are merged.
const MAX_MERGED_IDS: usize = 100;

/// One status per step from the step statuses of many tasks (the child executions of a
/// foreach): job ids and log streams together (bounded), the most attempts, the earliest
/// start and latest completion, Failed if any task failed, Running while any runs.
pub fn merge_task_steps(tasks: &[Vec<StepStatus>]) -> Vec<StepStatus> {
    let mut merged: Vec<StepStatus> = Vec::new();
    for step in tasks.iter().flatten() {
        let Some(into) = merged.iter_mut().find(|s| s.name == step.name) else {
            merged.push(step.clone());
            continue;
        };
        for id in &step.job_ids {
            if into.job_ids.len() < MAX_MERGED_IDS {
                push_unique(&mut into.job_ids, id);
            }
        }
        for stream in &step.log_streams {
            if into.log_streams.len() < MAX_MERGED_IDS {
                push_unique(&mut into.log_streams, stream);
            }
        }
        into.attempts = into.attempts.max(step.attempts);
        into.phase = match (into.phase, step.phase) {
            (Some(StepPhase::Failed), _) | (_, Some(StepPhase::Failed)) => Some(StepPhase::Failed),
            (Some(StepPhase::Running), _) | (_, Some(StepPhase::Running)) => {
                Some(StepPhase::Running)
            }
            (phase, other) => phase.or(other),
        };
        if into.reason.is_none() {
            into.reason = step.reason.clone();
        }
        into.start_time = match (into.start_time.take(), step.start_time.clone()) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        into.completion_time = match (into.completion_time.take(), step.completion_time.clone()) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
    }
    merged
}

/// Most node job ids listed for one multi-node step (Batch allows up to 1,000 nodes).
const MAX_NODE_IDS: i64 = 100;

/// Adds a job's id and, for a multi-node job of `nodes` nodes, its nodes' ids (`<id>#<n>`).
fn push_job_ids(list: &mut Vec<String>, id: &str, nodes: Option<i64>) {
    push_unique(list, id);
    for node in 0..nodes.unwrap_or(0).clamp(0, MAX_NODE_IDS) {
        push_unique(list, &format!("{id}#{node}"));
    }
}

/// Whether a job id names one node of a multi-node job (`<id>#<n>`): such a job is stopped
/// through its main job.
pub fn is_node_job(id: &str) -> bool {
    id.contains('#')
}

fn push_unique(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|v| v == value) {
        list.push(value.to_owned());
    }
}

/// The TaskScheduled event a task event belongs to (following `previous_id` back).
fn scheduled_event<'a>(
    event: &'a HistoryEvent,
    by_id: &BTreeMap<i64, &'a HistoryEvent>,
) -> Option<&'a HistoryEvent> {
    // A TaskStateEntered precedes its task: walking back from it would find an earlier one.
    if !event.kind.starts_with("Task") || event.kind == "TaskStateEntered" {
        return None;
    }
    let mut current = event;
    for _ in 0..16 {
        if current.kind == "TaskScheduled" {
            return Some(current);
        }
        current = by_id.get(&current.previous_id)?;
    }
    None
}

/// The step a task runs: its `FLOWLINE_STEP` override, else the name of the Task state the
/// task was scheduled in.
fn step_of(scheduled: &HistoryEvent, by_id: &BTreeMap<i64, &HistoryEvent>) -> Option<String> {
    scheduled
        .detail
        .as_deref()
        .and_then(step_of_parameters)
        .or_else(|| {
            by_id
                .get(&scheduled.previous_id)
                .filter(|entered| entered.kind == "TaskStateEntered")
                .and_then(|entered| entered.detail.clone())
        })
}

/// The step a Batch task runs, from its `FLOWLINE_STEP` container or node override.
fn step_of_parameters(parameters: &str) -> Option<String> {
    let parameters: Value = serde_json::from_str(parameters).ok()?;
    let environment = parameters["ContainerOverrides"]["Environment"]
        .as_array()
        .or_else(|| {
            parameters["NodeOverrides"]["NodePropertyOverrides"][0]["ContainerOverrides"]["Environment"].as_array()
        })?;
    environment
        .iter()
        .find(|kv| kv["Name"] == "FLOWLINE_STEP")
        .and_then(|kv| kv["Value"].as_str())
        .map(str::to_owned)
}

/// What to do about a Batch failure, for the reasons people meet most (Metaflow's
/// troubleshooting list).
pub fn hint(reason: &str) -> Option<&'static str> {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("cannotpullcontainer")
        || reason.contains("pull access denied")
        || reason.contains("manifest unknown")
    {
        Some(
            "the image could not be pulled: check the image name and tag, that the registry is reachable from the compute environment, and that the execution role may pull from it",
        )
    } else if reason.contains("accessdenied")
        || reason.contains("access denied")
        || reason.contains("403")
    {
        Some(
            "access was denied: check that the job role (spec.batch.iamRole) may read and write the datastore bucket and use its KMS key",
        )
    } else if reason.contains("outofmemory")
        || reason.contains("out of memory")
        || reason.contains("oomkilled")
    {
        Some("the container ran out of memory: raise spec.batch.memory")
    } else if reason.contains("host ec2") && reason.contains("terminated") {
        Some(
            "the instance was reclaimed (Spot): add retry with an evaluateOnExit rule for `Host EC2*`",
        )
    } else {
        None
    }
}

/// The hint for a step stuck in RUNNABLE: Batch found no capacity to place it.
pub const RUNNABLE_HINT: &str = "the job has been RUNNABLE (waiting for capacity) too long: check the compute environment's maximum vCPUs and instance types against the step's cpu/memory/gpu, its subnets and security groups, the instance role, and the account's EC2 quotas";

/// A message for a failed Run: the first failed step, why, and what to do about it.
pub fn failure_message(steps: &[StepStatus], error: Option<&str>, cause: Option<&str>) -> String {
    match steps.iter().find(|s| s.phase == Some(StepPhase::Failed)) {
        Some(step) => {
            let reason = step.reason.as_deref().unwrap_or("the Batch job failed");
            match hint(reason) {
                Some(hint) => format!("step `{}` failed: {reason}; {hint}", step.name),
                None => format!("step `{}` failed: {reason}", step.name),
            }
        }
        None => format!(
            "the execution failed: {} {}",
            error.unwrap_or("unknown error"),
            cause.unwrap_or_default()
        )
        .trim_end()
        .to_owned(),
    }
}

/// A finished Run, as history pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    pub name: String,
    pub succeeded: bool,
    /// When it finished (RFC 3339 sorts as text), or when it was created.
    pub finished_at: String,
}

/// Annotation on a Run that decides whether the history limits may delete it: `keep` (never)
/// or `prune` (even when a GitOps tool tracks it). Without it, see [`history_prunable`].
pub const HISTORY_ANNOTATION: &str = "flowline.io/history";

/// Labels and annotations by which Argo CD, Flux and Helm mark what they apply. A Run that
/// carries one is declared somewhere that re-applies it: deleted by the history limits, it
/// would come back under a new UID and execute again.
const DECLARED_BY_LABELS: [&str; 3] = [
    "app.kubernetes.io/instance", // Argo CD label tracking (its default before 3.0)
    "kustomize.toolkit.fluxcd.io/name", // Flux Kustomization
    "helm.toolkit.fluxcd.io/name", // Flux HelmRelease
];
const DECLARED_BY_ANNOTATIONS: [&str; 2] = [
    "argocd.argoproj.io/tracking-id", // Argo CD annotation tracking (its default since 3.0)
    "meta.helm.sh/release-name",      // Helm (an upgrade re-creates what is missing)
];

/// Whether the history limits may delete a Run: Runs the controller created (for executions
/// started elsewhere) and Runs applied by hand may go; Runs a GitOps tool or Helm tracks stay,
/// since the tool would re-create them and each re-creation would start a new execution. The
/// annotation [`HISTORY_ANNOTATION`] overrides either way.
pub fn history_prunable(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    match annotations.get(HISTORY_ANNOTATION).map(String::as_str) {
        Some("keep") => return false,
        Some("prune") => return true,
        _ => {}
    }
    !DECLARED_BY_LABELS.iter().any(|l| labels.contains_key(*l))
        && !DECLARED_BY_ANNOTATIONS
            .iter()
            .any(|a| annotations.contains_key(*a))
}

/// The ARN a Run's own execution has (or would have) when the status does not record one: a
/// start whose status write was lost (a crash, a conflict) left it running untracked. `None`
/// when there is nothing to look for: an adopted Run (its execution is in its annotation),
/// a finished Run, a Run that records its execution, or a Flow without a state machine.
pub fn unrecorded_execution_arn(
    run: &crate::api::Run,
    flow_machine_arn: Option<&str>,
) -> Option<String> {
    use kube::ResourceExt;
    let status = run.status.as_ref();
    if run
        .annotations()
        .contains_key(crate::api::EXECUTION_ARN_ANNOTATION)
        || status.is_some_and(|s| s.execution_arn.is_some())
        || status
            .and_then(|s| s.phase)
            .is_some_and(RunPhase::is_finished)
    {
        return None;
    }
    let name =
        crate::compile::naming::execution_name(&run.name_any(), &run.uid().unwrap_or_default());
    flow_machine_arn.map(|machine| crate::aws::sfn::execution_arn(machine, &name))
}

/// Whether a change of Flow `flow` in `namespace` should wake `run`: a Run of that Flow that
/// has not started its execution yet waits on the Flow (to become Ready, or to declare the
/// parameters it was stalled on), and a Stalled Run would otherwise wait for its own change.
pub fn waits_on_flow(run: &crate::api::Run, namespace: Option<&str>, flow: &str) -> bool {
    use kube::ResourceExt;
    let status = run.status.as_ref();
    run.spec.flow_ref.name == flow
        && run.namespace().as_deref() == namespace
        && run.metadata.deletion_timestamp.is_none()
        && status.is_none_or(|s| s.execution_arn.is_none())
        && !status
            .and_then(|s| s.phase)
            .is_some_and(RunPhase::is_finished)
}

/// The Runs to delete so that at most `keep_succeeded` succeeded and `keep_failed` other
/// finished (Failed, Aborted, TimedOut) Runs of a Flow remain: the oldest go first.
pub fn runs_to_prune(
    runs: &[FinishedRun],
    keep_succeeded: usize,
    keep_failed: usize,
) -> Vec<String> {
    let mut doomed = Vec::new();
    for (succeeded, keep) in [(true, keep_succeeded), (false, keep_failed)] {
        let mut group: Vec<&FinishedRun> =
            runs.iter().filter(|r| r.succeeded == succeeded).collect();
        group.sort_by(|a, b| {
            b.finished_at
                .cmp(&a.finished_at)
                .then_with(|| b.name.cmp(&a.name))
        });
        doomed.extend(group.into_iter().skip(keep).map(|r| r.name.clone()));
    }
    doomed.sort();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ParameterType;

    fn parameter(
        name: &str,
        type_: ParameterType,
        default: Option<&str>,
        required: bool,
    ) -> Parameter {
        Parameter {
            name: name.into(),
            type_,
            default: default.map(str::to_owned),
            required,
            description: None,
        }
    }

    #[test]
    fn parameters_are_checked_and_defaults_filled() {
        let declared = [
            parameter("alpha", ParameterType::Float, Some("0.5"), false),
            parameter("epochs", ParameterType::Int, None, true),
            parameter("debug", ParameterType::Bool, Some("false"), false),
        ];
        let values = ParameterValues::from([("epochs".to_string(), "3".to_string())]);
        let merged = check_parameters(&declared, &values).unwrap();
        // Converted to their types: numbers and booleans, not strings.
        assert_eq!(merged["alpha"], serde_json::json!(0.5));
        assert_eq!(merged["epochs"], serde_json::json!(3));
        assert_eq!(merged["debug"], serde_json::json!(false));

        let bad = ParameterValues::from([
            ("epochs".to_string(), "three".to_string()),
            ("colour".to_string(), "red".to_string()),
        ]);
        let message = check_parameters(&declared, &bad).unwrap_err();
        assert!(message.contains("unknown parameter `colour`"), "{message}");
        assert!(
            message.contains("`epochs`: \"three\" is not a valid Int"),
            "{message}"
        );
        let missing = check_parameters(&declared, &ParameterValues::new()).unwrap_err();
        assert!(
            missing.contains("required parameter `epochs` is not set"),
            "{missing}"
        );
    }

    fn event(id: i64, previous_id: i64, kind: &str, detail: Value) -> HistoryEvent {
        HistoryEvent {
            id,
            previous_id,
            kind: kind.into(),
            detail: Some(detail.to_string()),
            timestamp: None,
        }
    }

    #[test]
    fn history_becomes_step_status() {
        let params = |step: &str| serde_json::json!({"ContainerOverrides": {"Environment": [{"Name": "FLOWLINE_STEP", "Value": step}]}});
        let events = vec![
            event(5, 4, "TaskScheduled", params("start")),
            event(7, 5, "TaskSubmitted", serde_json::json!({"JobId": "job-1"})),
            event(
                9,
                7,
                "TaskSucceeded",
                serde_json::json!({"JobId": "job-1", "Attempts": [{"Container": {"LogStreamName": "log/1"}}]}),
            ),
            event(12, 11, "TaskScheduled", params("train")),
            event(
                14,
                12,
                "TaskFailed",
                serde_json::json!({"Error": "States.TaskFailed", "Cause": "{\"JobId\": \"job-2\", \"StatusReason\": \"CannotPullContainerError: no image\"}"}),
            ),
        ];
        let steps = step_statuses(&events);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].name, "start");
        assert_eq!(steps[0].phase, Some(StepPhase::Succeeded));
        assert_eq!(steps[0].job_ids, ["job-1"]);
        assert_eq!(steps[0].attempts, Some(1));
        assert_eq!(steps[0].log_streams, ["log/1"]);
        assert_eq!(steps[1].phase, Some(StepPhase::Failed));
        assert_eq!(steps[1].job_ids, ["job-2"]);
        let message = failure_message(&steps, Some("States.TaskFailed"), None);
        assert!(
            message.starts_with("step `train` failed: CannotPullContainerError: no image; the image could not be pulled"),
            "{message}"
        );
    }

    fn params(step: &str) -> Value {
        serde_json::json!({"ContainerOverrides": {"Environment": [{"Name": "FLOWLINE_STEP", "Value": step}]}})
    }

    #[test]
    fn a_step_killed_by_a_stop_is_aborted_whatever_its_task_reported() {
        // As the emulator records a stop: the task of the terminated job "succeeds" with no
        // job description just before the abort, without leaving its state.
        let mut events = vec![
            event(5, 4, "TaskScheduled", params("start")),
            event(6, 5, "TaskSucceeded", serde_json::json!({"JobId": "job-1"})),
            event(7, 6, "TaskStateExited", serde_json::json!({})),
            event(8, 7, "TaskScheduled", params("work")),
            event(9, 8, "TaskSubmitted", serde_json::json!({"JobId": "job-2"})),
            event(10, 9, "TaskSucceeded", Value::Null),
            event(11, 0, "ExecutionAborted", serde_json::json!({})),
        ];
        let steps = step_statuses(&events);
        assert_eq!(steps[0].phase, Some(StepPhase::Succeeded));
        assert_eq!(steps[1].name, "work");
        assert_eq!(steps[1].phase, Some(StepPhase::Aborted));
        assert_eq!(steps[1].job_ids, ["job-2"]);
        // A task that ends after the abort changes nothing either.
        events.push(event(12, 10, "TaskFailed", serde_json::json!({})));
        assert_eq!(step_statuses(&events)[1].phase, Some(StepPhase::Aborted));
        // A step still running at the abort is Aborted too.
        events.truncate(5);
        events.push(event(11, 0, "ExecutionAborted", serde_json::json!({})));
        assert_eq!(step_statuses(&events)[1].phase, Some(StepPhase::Aborted));
    }

    #[test]
    fn a_multi_node_step_lists_every_node_job() {
        // The history need not echo the node overrides (the emulator's does not): the step is
        // then known by the name of its Task state.
        let entered = HistoryEvent {
            detail: Some("train".into()),
            ..event(4, 3, "TaskStateEntered", Value::Null)
        };
        let events = vec![
            entered,
            event(
                5,
                4,
                "TaskScheduled",
                serde_json::json!({"JobDefinition": "jd"}),
            ),
            event(6, 5, "TaskSubmitted", serde_json::json!({"JobId": "mnp"})),
        ];
        let running = step_statuses(&events);
        assert_eq!(running[0].name, "train");
        assert_eq!(running[0].phase, Some(StepPhase::Running));
        assert_eq!(running[0].job_ids, ["mnp"]);
        let mut events = events;
        events.push(event(
            7,
            6,
            "TaskSucceeded",
            serde_json::json!({"JobId": "mnp", "NodeProperties": {"NumNodes": 3, "MainNode": 0}}),
        ));
        let done = step_statuses(&events);
        assert_eq!(done[0].phase, Some(StepPhase::Succeeded));
        assert_eq!(done[0].job_ids, ["mnp", "mnp#0", "mnp#1", "mnp#2"]);
        assert!(is_node_job("mnp#1") && !is_node_job("mnp"));

        // A node count in the task's overrides lists the nodes from the submission on.
        let counted = serde_json::json!({"NodeOverrides": {"NumNodes": 2, "NodePropertyOverrides": [
            {"TargetNodes": "0:", "ContainerOverrides": {"Environment": [{"Name": "FLOWLINE_STEP", "Value": "train"}]}}
        ]}});
        let events = vec![
            event(5, 4, "TaskScheduled", counted),
            event(6, 5, "TaskSubmitted", serde_json::json!({"JobId": "mnp"})),
        ];
        assert_eq!(step_statuses(&events)[0].job_ids, ["mnp", "mnp#0", "mnp#1"]);
    }

    #[test]
    fn history_keeps_the_newest_of_each_kind() {
        let run = |name: &str, succeeded: bool, at: &str| FinishedRun {
            name: name.into(),
            succeeded,
            finished_at: at.into(),
        };
        let runs = [
            run("a", true, "2026-01-01T00:00:01Z"),
            run("b", true, "2026-01-01T00:00:03Z"),
            run("c", true, "2026-01-01T00:00:02Z"),
            run("d", false, "2026-01-01T00:00:04Z"),
            run("e", false, "2026-01-01T00:00:05Z"),
        ];
        assert_eq!(runs_to_prune(&runs, 2, 1), ["a", "d"]);
        assert_eq!(runs_to_prune(&runs, 5, 5), Vec::<String>::new());
    }

    #[test]
    fn common_failures_get_a_hint() {
        assert!(
            hint("CannotPullContainerError: pull access denied")
                .is_some_and(|h| h.contains("image"))
        );
        assert!(
            hint("An error occurred (AccessDenied) when calling the PutObject operation")
                .is_some_and(|h| h.contains("job role"))
        );
        assert!(
            hint("OutOfMemoryError: Container killed due to memory usage")
                .is_some_and(|h| h.contains("memory"))
        );
        assert_eq!(hint("Essential container in task exited"), None);
    }

    #[test]
    fn execution_status_maps_to_phase() {
        assert_eq!(phase_of("RUNNING"), RunPhase::Running);
        assert_eq!(phase_of("SUCCEEDED"), RunPhase::Succeeded);
        assert_eq!(phase_of("ABORTED"), RunPhase::Aborted);
        assert_eq!(phase_of("TIMED_OUT"), RunPhase::TimedOut);
    }
}

/// How long a running Run waits before it is polled again: `fastest`, unless the Runs being
/// tracked would then need more than `calls_per_second` polls per second — then they share
/// that budget evenly, so any number of running Runs stays within Step Functions'
/// DescribeExecution quota (10,000 Runs at 12 calls/s are each polled every ~14 minutes).
pub fn poll_interval(
    running: usize,
    calls_per_second: f64,
    fastest: std::time::Duration,
) -> std::time::Duration {
    if !calls_per_second.is_finite() || calls_per_second <= 0.0 {
        return fastest;
    }
    // At most a day between polls, whatever the rate (and never a panic on overflow).
    let slowest = std::time::Duration::from_secs(86_400);
    std::time::Duration::try_from_secs_f64(running as f64 / calls_per_second)
        .unwrap_or(slowest)
        .min(slowest)
        .max(fastest)
}

/// Every how many polls a running Run reads its history: 1 while all running Runs' polls fit
/// in `history_calls_per_second` (GetExecutionHistory's quota is a third of
/// DescribeExecution's), else as rarely as it takes to fit. A Run that has just finished
/// always reads it, whatever this says.
pub fn history_every(
    running: usize,
    interval: std::time::Duration,
    history_calls_per_second: f64,
) -> u32 {
    let polls_per_second = running as f64 / interval.as_secs_f64().max(0.001);
    if !history_calls_per_second.is_finite()
        || history_calls_per_second <= 0.0
        || polls_per_second <= history_calls_per_second
    {
        return 1;
    }
    // The tolerance keeps float noise (12.000000001 / 4) from adding a poll.
    let every = (polls_per_second / history_calls_per_second - 1e-9).ceil();
    if every >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        every as u32
    }
}

/// The execution and its new status from a Step Functions "Execution Status Change" event
/// as EventBridge delivers it (the event's JSON is the message body); `None` for anything else.
pub fn execution_status_change(body: &str) -> Option<(String, String)> {
    let event: Value = serde_json::from_str(body).ok()?;
    if event["source"] != "aws.states"
        || event["detail-type"] != "Step Functions Execution Status Change"
    {
        return None;
    }
    let detail = &event["detail"];
    Some((
        detail["executionArn"].as_str()?.to_owned(),
        detail["status"].as_str()?.to_owned(),
    ))
}

#[cfg(test)]
mod poll_tests {
    use std::time::Duration;

    use super::poll_interval;

    #[test]
    fn polls_share_the_budget_when_many_runs_are_running() {
        let fastest = Duration::from_secs(3);
        assert_eq!(poll_interval(1, 12.0, fastest), fastest);
        assert_eq!(poll_interval(36, 12.0, fastest), fastest);
        assert_eq!(poll_interval(120, 12.0, fastest), Duration::from_secs(10));
        let at_scale = poll_interval(10_000, 12.0, fastest);
        assert!(
            10_000.0 / at_scale.as_secs_f64() <= 12.0 + 1e-6,
            "{at_scale:?}"
        );
        assert_eq!(poll_interval(10, 0.0, fastest), fastest);
        assert_eq!(poll_interval(10, f64::NAN, fastest), fastest);
        assert_eq!(
            poll_interval(10, f64::MIN_POSITIVE, fastest),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn execution_status_change_events_are_recognised() {
        use super::execution_status_change;
        let event = serde_json::json!({
            "source": "aws.states",
            "detail-type": "Step Functions Execution Status Change",
            "detail": {"executionArn": "arn:aws:states:r:1:execution:m:x", "status": "SUCCEEDED"}
        });
        assert_eq!(
            execution_status_change(&event.to_string()),
            Some((
                "arn:aws:states:r:1:execution:m:x".into(),
                "SUCCEEDED".into()
            ))
        );
        let other = serde_json::json!({"source": "aws.s3", "detail-type": "Object Created"});
        assert_eq!(execution_status_change(&other.to_string()), None);
        assert_eq!(execution_status_change("not json"), None);
    }

    #[test]
    fn history_is_read_less_often_than_the_execution_when_its_quota_is_tighter() {
        use super::history_every;
        let fastest = Duration::from_secs(3);
        assert_eq!(history_every(12, fastest, 4.0), 1);
        assert_eq!(history_every(36, fastest, 4.0), 3);
        let interval = poll_interval(10_000, 12.0, fastest);
        let every = history_every(10_000, interval, 4.0);
        assert_eq!(every, 3);
        let history_calls = 10_000.0 / interval.as_secs_f64() / f64::from(every);
        assert!(history_calls <= 4.0 + 1e-6, "{history_calls}");
        assert_eq!(history_every(10, fastest, 0.0), 1);
    }
}

#[cfg(test)]
mod foreach_tests {
    use super::*;

    fn event(id: i64, previous_id: i64, kind: &str, detail: Option<&str>) -> HistoryEvent {
        HistoryEvent {
            id,
            previous_id,
            kind: kind.into(),
            detail: detail.map(str::to_owned),
            timestamp: None,
        }
    }

    #[test]
    fn map_runs_are_named_after_their_foreach_step() {
        let events = vec![
            event(5, 4, "MapStateEntered", Some("start.foreach")),
            event(6, 5, "MapStateStarted", None),
            event(7, 6, "MapRunStarted", Some("arn:map-run")),
        ];
        assert_eq!(
            map_runs(&events),
            vec![("start".to_owned(), "arn:map-run".to_owned())]
        );
    }

    #[test]
    fn task_steps_merge_into_one_status_per_step() {
        let task = |job: &str, phase: StepPhase| StepStatus {
            name: "train".into(),
            phase: Some(phase),
            attempts: Some(1),
            job_ids: vec![job.into()],
            ..StepStatus::default()
        };
        let merged = merge_task_steps(&[
            vec![task("a", StepPhase::Succeeded)],
            vec![task("b", StepPhase::Failed)],
            vec![task("c", StepPhase::Succeeded)],
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].job_ids, vec!["a", "b", "c"]);
        assert_eq!(merged[0].phase, Some(StepPhase::Failed));
        let ok = merge_task_steps(&[
            vec![task("a", StepPhase::Succeeded)],
            vec![task("b", StepPhase::Succeeded)],
        ]);
        assert_eq!(ok[0].phase, Some(StepPhase::Succeeded));
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;
    use crate::api::{FlowRef, Run, RunSpec, RunStatus};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn runs_a_gitops_tool_tracks_are_never_pruned_unless_they_opt_in() {
        let none = BTreeMap::new();
        assert!(history_prunable(&none, &none), "applied by hand");
        assert!(
            history_prunable(&labels(&[("flowline.io/origin", "external")]), &none),
            "created by the controller"
        );
        for label in DECLARED_BY_LABELS {
            assert!(
                !history_prunable(&labels(&[(label, "app")]), &none),
                "{label}"
            );
        }
        for annotation in DECLARED_BY_ANNOTATIONS {
            assert!(
                !history_prunable(&none, &labels(&[(annotation, "x")])),
                "{annotation}"
            );
        }
        let argo = labels(&[("app.kubernetes.io/instance", "ml")]);
        assert!(history_prunable(
            &argo,
            &labels(&[(HISTORY_ANNOTATION, "prune")])
        ));
        assert!(!history_prunable(
            &none,
            &labels(&[(HISTORY_ANNOTATION, "keep")])
        ));
    }

    fn run(status: Option<RunStatus>) -> Run {
        let mut run = Run::new(
            "nightly-7",
            RunSpec {
                flow_ref: FlowRef {
                    name: "train".into(),
                },
                parameters: Default::default(),
                stop: false,
                resume_from: None,
            },
        );
        run.metadata.uid = Some("3f1c2b9e-8d7a-4c55-9e1f-0a2b3c4d5e6f".into());
        run.status = status;
        run
    }

    #[test]
    fn flow_changes_wake_the_runs_that_have_not_started() {
        let mut waiting = run(None);
        waiting.metadata.namespace = Some("team".into());
        assert!(waits_on_flow(&waiting, Some("team"), "train"));
        assert!(!waits_on_flow(&waiting, Some("other"), "train"));
        assert!(!waits_on_flow(&waiting, Some("team"), "serve"));
        let mut started = waiting.clone();
        started.status = Some(RunStatus {
            execution_arn: Some("arn:x".into()),
            ..RunStatus::default()
        });
        assert!(!waits_on_flow(&started, Some("team"), "train"));
        let mut finished = waiting.clone();
        finished.status = Some(RunStatus {
            phase: Some(RunPhase::Aborted),
            ..RunStatus::default()
        });
        assert!(!waits_on_flow(&finished, Some("team"), "train"));
    }

    #[test]
    fn a_start_the_status_lost_is_found_by_its_deterministic_name() {
        let machine = "arn:aws:states:us-east-1:1:stateMachine:flowline-train";
        assert_eq!(
            unrecorded_execution_arn(&run(None), Some(machine)).as_deref(),
            Some(
                "arn:aws:states:us-east-1:1:execution:flowline-train:nightly-7-3f1c2b9e-8d7a-4c55-9e1f-0a2b3c4d5e6f"
            )
        );
        assert_eq!(unrecorded_execution_arn(&run(None), None), None);
        let recorded = run(Some(RunStatus {
            execution_arn: Some("arn:x".into()),
            ..RunStatus::default()
        }));
        assert_eq!(unrecorded_execution_arn(&recorded, Some(machine)), None);
        let finished = run(Some(RunStatus {
            phase: Some(RunPhase::Aborted),
            ..RunStatus::default()
        }));
        assert_eq!(unrecorded_execution_arn(&finished, Some(machine)), None);
        let mut adopted = run(None);
        adopted.metadata.annotations = Some(labels(&[(
            crate::api::EXECUTION_ARN_ANNOTATION,
            "arn:aws:states:us-east-1:1:execution:flowline-train:console",
        )]));
        assert_eq!(unrecorded_execution_arn(&adopted, Some(machine)), None);
    }
}
