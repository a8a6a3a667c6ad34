//! The `Run` kind: one execution of a Flow.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    FlowRef, ParameterValues, conditions_schema, is_false, optional_enum, parameter_values_schema,
};

/// Longest Run name: the name appears in the datastore layout and in label values, which
/// allow 63 characters.
pub const RUN_NAME_MAX_LEN: usize = 63;

/// Most artifacts listed per step in a Run's status; `artifactsTruncated` tells when a step
/// wrote more.
pub const MAX_LISTED_ARTIFACTS: usize = 100;

/// Annotation the controller sets on a Run it creates for an execution that started outside
/// of a Run (by a Schedule's EventBridge rule, or directly in Step Functions): the Run tracks
/// that execution instead of starting one.
pub const EXECUTION_ARN_ANNOTATION: &str = "flowline.io/execution-arn";

/// Label the controller sets on a Run created for a Schedule's execution: the Schedule's name.
pub const SCHEDULE_LABEL: &str = "flowline.io/schedule";

/// The desired state of a Run: which Flow to execute, with which parameters, and whether to
/// stop it. Everything but `stop` is fixed when the Run is created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flowline.io",
    version = "v1alpha1",
    kind = "Run",
    namespaced,
    status = "RunStatus",
    shortname = "flrun",
    category = "flowline",
    derive = "PartialEq",
    doc = "A Run is one execution of a Flow: the controller starts a Step Functions execution of the Flow's current state machine version and reports its progress, its steps' Batch jobs and the S3 URIs of their artifacts in the status. One Run is one execution: for each new execution create a new Run, e.g. with `metadata.generateName: <flow>-` and `kubectl create`, or `kubectl flowline run <flow>`.",
    selectable = ".spec.flowRef.name",
    selectable = ".status.phase",
    printcolumn(
        name = "Flow",
        type_ = "string",
        json_path = ".spec.flowRef.name",
        description = "The Flow this Run executes"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed, Aborted or TimedOut"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "True once the Run succeeded (Finished tells whether it ended)"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTime",
        description = "When the execution started"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1,
        description = "Why the Run failed or is waiting"
    ),
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name of a Run must be at most 63 characters"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name of a Run must be a DNS label (lower-case letters, digits and '-')"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.flowRef == oldSelf.flowRef")
        .message("spec.flowRef is immutable: create a new Run to execute another Flow")
        .field_path(".flowRef"),
    validation = Rule::new("has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)")
        .message("spec.parameters is immutable: create a new Run to use other values")
        .field_path(".parameters"),
    validation = Rule::new("has(self.resumeFrom) == has(oldSelf.resumeFrom) && (!has(self.resumeFrom) || self.resumeFrom == oldSelf.resumeFrom)")
        .message("spec.resumeFrom is immutable")
        .field_path(".resumeFrom"),
)]
pub struct RunSpec {
    /// The Flow to execute, in the Run's namespace. The Run is pinned to the state machine
    /// version that is current when it starts; later changes to the Flow do not affect it.
    pub flow_ref: FlowRef,

    /// Values of the Flow's parameters, by name, as strings (`"0.5"`, `"true"`, `'{"a": 1}'`).
    /// The controller checks them against the Flow's parameters (known names, types, required
    /// ones set) before it starts the execution; parameters left out take their default.
    #[serde(default, skip_serializing_if = "ParameterValues::is_empty")]
    #[schemars(schema_with = "parameter_values_schema")]
    pub parameters: ParameterValues,

    /// Set to true to abort the Run: the controller stops the execution and its running Batch
    /// jobs, and the phase becomes Aborted. It cannot be set back to false.
    #[serde(default)]
    #[x_kube(
        validation = Rule::new("self || !oldSelf")
            .message("spec.stop cannot be set back to false: an aborted Run cannot be resumed, create a new Run")
    )]
    pub stop: bool,

    /// Resume an earlier Run of the same Flow from one of its steps, as Metaflow's `resume`:
    /// this Run re-runs `step` and every step after it, and reuses the results of the steps
    /// before it (their artifacts are copied server-side into this Run's prefix, and they are
    /// listed in `status.steps` with `reusedFrom`). `step` must be on the Flow's main line
    /// (not inside a branch or a foreach; resume from the step that opens it), and every step
    /// before it must have succeeded in that Run: a Flow whose earlier steps were added,
    /// renamed or removed since is refused (Stalled, reason `ResumeRefused`). Commands and
    /// images may have changed: fixing a step and resuming is what this is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<ResumeFrom>,
}

/// Where a resumed Run starts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ResumeFrom {
    /// Name of the earlier Run of the same Flow whose artifacts are reused.
    #[schemars(length(min = 1, max = 63))]
    pub run: String,

    /// The step to start from.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z][a-z0-9_]{0,62}$"))]
    pub step: String,
}

/// The observed state of a Run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// The `metadata.generation` that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (true only once the Run succeeded), `Reconciling` (while it waits or runs),
    /// `Stalled` (it cannot start, or it failed, timed out or was aborted: the reason is the
    /// phase), as kstatus reads them, and `Finished` (true once the execution ended, whatever
    /// its outcome). `kubectl wait --for=condition=Ready` waits for success,
    /// `--for=condition=Finished` for the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Where the Run is in its life: Pending, Running, then Succeeded, Failed, Aborted or
    /// TimedOut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = optional_enum)]
    pub phase: Option<RunPhase>,

    /// Who started the execution: `Flowline` when the Run started it, `Schedule` when a
    /// Schedule's EventBridge rule did, `External` when it was started directly in Step
    /// Functions. Runs of the last two are created by the controller with the annotation
    /// `flowline.io/execution-arn` (and, for a Schedule, the label `flowline.io/schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = optional_enum)]
    pub origin: Option<RunOrigin>,

    /// ARN of the Step Functions execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,

    /// ARN of the state machine version the execution runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_machine_version_arn: Option<String>,

    /// When the execution started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the execution finished, whatever the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// S3 prefix under which the Run's tasks write their artifacts:
    /// `<s3Root>/<namespace>/<flow>/<run>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_root: Option<String>,

    /// The Metaflow run of a Flow converted by `flowline import metaflow`, as Metaflow's
    /// client names it: `<FlowSpec class>/fl-<execution name>` (read it with
    /// `Run("<this>")` after `python -m flowline_task.metaflow.pull <this>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metaflow_run: Option<String>,

    /// A CamelCase reason for the phase when the Run failed or waits, e.g. `ImageNotFound`,
    /// `AccessDenied` or `StuckRunnable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// What happened and what to do about it, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Progress of each step that has started, in the order the steps started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub steps: Vec<StepStatus>,

    /// Progress of each foreach: its tasks run in the child executions of a Distributed Map
    /// run. Their steps appear in `steps` (job ids and log streams of the first
    /// `MAX_FOREACH_TASKS_READ` tasks) once the foreach has finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["step".into()]))]
    pub foreach: Vec<ForeachStatus>,
}

/// Most child executions of a foreach whose histories are read into the steps' status.
pub const MAX_FOREACH_TASKS_READ: usize = 100;

/// The tasks of one foreach, counted by state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForeachStatus {
    /// The step whose array the foreach iterates over.
    pub step: String,
    /// ARN of the Distributed Map run.
    pub map_run_arn: String,
    /// Whether every task has finished (the counts are final).
    #[serde(default)]
    pub finished: bool,
    /// Tasks in all: the length of the array the step wrote.
    pub total: i64,
    /// Tasks not started yet.
    pub pending: i64,
    /// Tasks running.
    pub running: i64,
    /// Tasks that succeeded.
    pub succeeded: i64,
    /// Tasks that failed.
    pub failed: i64,
    /// Tasks aborted or timed out.
    pub aborted: i64,
}

/// The phase of a Run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunPhase {
    /// Waiting to start: the Flow is not ready yet, or the execution is being started.
    Pending,
    /// The execution is running.
    Running,
    /// Every step finished and the execution succeeded.
    Succeeded,
    /// A step failed, or the execution could not start.
    Failed,
    /// Stopped on request (`spec.stop`) or by someone in Step Functions.
    Aborted,
    /// The Flow's `timeoutSeconds` elapsed.
    TimedOut,
}

impl RunPhase {
    /// Whether the phase is final: the Run will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Aborted | Self::TimedOut
        )
    }
}

/// Who started a Run's execution.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunOrigin {
    /// The Run itself.
    Flowline,
    /// A Schedule's EventBridge rule.
    Schedule,
    /// Someone or something else, directly in Step Functions.
    External,
}

/// The progress of one step of a Run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Name of the step.
    pub name: String,

    /// Where the step is: Pending (submitted, waiting for capacity or starting), Running,
    /// Succeeded, Failed or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = optional_enum)]
    pub phase: Option<StepPhase>,

    /// Attempts made so far, the first included; retries add to it. For a foreach, the most
    /// attempts any of its tasks made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,

    /// IDs of the step's Batch jobs: one per task (several for a foreach).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_ids: Vec<String>,

    /// Job ids left out of `jobIds` to keep the Run's status within its size budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub job_ids_omitted: i64,

    /// CloudWatch Logs streams of the step's containers, in the job queue's log group
    /// (`/aws/batch/job` unless configured otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_streams: Vec<String>,

    /// Log streams left out of `logStreams` to keep the Run's status within its size budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_streams_omitted: i64,

    /// When the step's first job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the step's last job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Why the step failed or waits, for a person: e.g. the image cannot be pulled, S3 access
    /// is denied, or the job is stuck in RUNNABLE because no compute environment can place it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Set on a step a resumed Run did not run: the Run whose results it reuses (its
    /// artifacts were copied into this Run's prefix). Such a step is `Succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,

    /// Objects the step's tasks wrote under their artifact prefix, at most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,

    /// How many objects the step's tasks wrote in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_count: Option<i64>,

    /// True when the step wrote more objects than `artifacts` lists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub artifacts_truncated: bool,
}

fn is_zero(count: &i64) -> bool {
    *count == 0
}

/// The phase of one step of a Run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StepPhase {
    /// Submitted to Batch, waiting for capacity or starting.
    Pending,
    /// At least one of the step's containers runs.
    Running,
    /// Every task of the step succeeded.
    Succeeded,
    /// The step failed after its retries.
    Failed,
    /// Stopped with the Run.
    Aborted,
}

/// An object a task wrote.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Key of the object relative to the task's artifact prefix, e.g. `model.pt`; for a
    /// foreach, prefixed by the task's folder.
    pub name: String,
    /// Full S3 URI of the object.
    pub uri: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// True when the task's `_task.json` manifest says the attempt that stored the object
    /// failed (steps in the task runtime only): the object may be partial.
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed_attempt: bool,
}
