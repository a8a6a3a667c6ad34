//! The `Flow` kind: a graph of steps and how each one runs on AWS Batch.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::batch::BatchSpec;
use super::common::{Tags, conditions_schema, is_false, optional_enum, tags_schema};
use super::secret::SecretSpec;

/// Longest Flow name. AWS names are derived from the namespace, the Flow's name and a hash of
/// its UID; Step Functions allows 80 characters for a state machine name.
pub const FLOW_NAME_MAX_LEN: usize = 40;

/// Most steps in a Flow.
pub const MAX_STEPS: usize = 100;

/// CEL rules on each step's effective Batch settings: the step's own `batch` field where it
/// sets one, else `spec.batch`'s, else the default. The same rules, with messages naming the
/// fields, are in `compile::checks` for Flows the API server did not check.
mod effective {
    use kube::core::{Message, Reason, Rule};

    /// A step's effective value of a `batch` field.
    fn value(field: &str, default: &str) -> String {
        format!(
            "((has(s.batch) && has(s.batch.{field})) ? s.batch.{field} : ((has(self.batch) && has(self.batch.{field})) ? self.batch.{field} : {default}))"
        )
    }

    /// Whether the step or the Flow sets a `batch` field.
    fn set(field: &str) -> String {
        format!(
            "((has(s.batch) && has(s.batch.{field})) || (has(self.batch) && has(self.batch.{field})))"
        )
    }

    fn fargate() -> String {
        format!("{} == 'FARGATE'", value("platform", "'EC2'"))
    }

    fn cpu() -> String {
        format!("double({})", value("cpu", "1.0"))
    }

    fn memory() -> String {
        value("memory", "4096")
    }

    /// `violated` on every step, except where one level alone breaks the rule: `BatchSpec`'s
    /// own rule (`own`, with `L` for the level) reports that, at the field's own path.
    fn each_step(violated: &str, own: Option<&str>, message: &str) -> Rule {
        let exempt = own
            .map(|own| {
                format!(
                    " && !(has(s.batch) && {}) && !(has(self.batch) && {})",
                    own.replace('L', "s.batch"),
                    own.replace('L', "self.batch")
                )
            })
            .unwrap_or_default();
        Rule::new(format!("self.steps.all(s, !(({violated}){exempt}))"))
            .message(Message::Message(format!(
                "{message}{}",
                super::COMBINED_RULE_SUFFIX
            )))
            .field_path(".steps")
    }

    /// A field Fargate does not offer, on a step whose effective platform is FARGATE.
    pub fn fargate_refuses(field: &str, message: &str) -> Rule {
        let (given, own) = match field {
            "gpu" | "inferentia" | "trainium" => (
                format!("{} > 0", value(field, "0")),
                format!("has(L.{field}) && L.{field} > 0"),
            ),
            _ => (set(field), format!("has(L.{field})")),
        };
        each_step(
            &format!("{} && {given}", fargate()),
            Some(&format!(
                "has(L.platform) && L.platform == 'FARGATE' && {own}"
            )),
            message,
        )
        .reason(Reason::FieldValueForbidden)
    }

    pub fn fargate_parallel() -> Rule {
        // A step that sets FARGATE itself is refused by the step's own rule.
        each_step(
            &format!(
                "has(s.parallel) && {} && !(has(s.batch) && has(s.batch.platform))",
                fargate()
            ),
            None,
            "steps[].parallel (a multi-node job) is not supported on platform FARGATE",
        )
        .reason(Reason::FieldValueForbidden)
    }

    pub fn neuron_exclusive() -> Rule {
        each_step(
            &format!(
                "{} > 0 && {} > 0",
                value("inferentia", "0"),
                value("trainium", "0")
            ),
            Some("has(L.inferentia) && L.inferentia > 0 && has(L.trainium) && L.trainium > 0"),
            "batch.inferentia and batch.trainium are mutually exclusive: both request AWS Neuron devices, set only one",
        )
        .reason(Reason::FieldValueForbidden)
    }

    const FARGATE_CPUS: &str = "[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]";

    pub fn fargate_cpu() -> Rule {
        each_step(
            &format!("{} && !({} in {FARGATE_CPUS})", fargate(), cpu()),
            Some(&format!(
                "has(L.platform) && L.platform == 'FARGATE' && has(L.cpu) && !(double(L.cpu) in {FARGATE_CPUS})"
            )),
            "batch.cpu on platform FARGATE must be one of 0.25, 0.5, 1, 2, 4, 8 or 16",
        )
    }

    pub fn ec2_whole_cpu() -> Rule {
        let cpu = cpu();
        each_step(
            &format!("!({}) && {cpu} != double(int({cpu}))", fargate()),
            Some(
                "has(L.platform) && L.platform == 'EC2' && has(L.cpu) && double(L.cpu) != double(int(L.cpu))",
            ),
            "batch.cpu on platform EC2 must be a whole number of vCPUs; EC2 is the default platform",
        )
    }

    pub fn fargate_memory() -> Rule {
        let (c, m) = (cpu(), memory());
        let range = |cpu: &str, low: i32, high: i32, step: i32| {
            format!("{c} == {cpu} ? ({m} >= {low} && {m} <= {high} && {m} % {step} == 0) : ")
        };
        let fits = format!(
            "({c} == 0.25 ? {m} in [512, 1024, 2048] : {}{}{}{}{}{}true)",
            range("0.5", 1024, 4096, 1024),
            range("1.0", 2048, 8192, 1024),
            range("2.0", 4096, 16384, 1024),
            range("4.0", 8192, 30720, 1024),
            range("8.0", 16384, 61440, 4096),
            range("16.0", 32768, 122880, 8192),
        );
        each_step(
            &format!("{} && !{fits}", fargate()),
            None,
            "batch.memory on platform FARGATE must fit batch.cpu: 0.25 vCPU takes 512, 1024 or 2048 MiB; 0.5 takes 1024-4096, 1 takes 2048-8192, 2 takes 4096-16384, 4 takes 8192-30720 (steps of 1024); 8 takes 16384-61440 (steps of 4096); 16 takes 32768-122880 (steps of 8192)",
        )
    }

    pub fn tmpfs_within_memory() -> Rule {
        let size = "((has(s.batch) && has(s.batch.tmpfs)) ? (has(s.batch.tmpfs.size) ? s.batch.tmpfs.size : 0) : ((has(self.batch) && has(self.batch.tmpfs) && has(self.batch.tmpfs.size)) ? self.batch.tmpfs.size : 0))";
        each_step(
            &format!("{size} > {}", memory()),
            None,
            "batch.tmpfs.size must not exceed batch.memory, which the tmpfs counts against",
        )
    }

    pub fn swappiness_needs_max_swap() -> Rule {
        each_step(
            &format!("{} && !{}", set("swappiness"), set("maxSwap")),
            None,
            "batch.swappiness takes effect only with batch.maxSwap: set maxSwap too",
        )
        .reason(Reason::FieldValueRequired)
    }
}

/// The end of the message of every rule on a step's settings with the Flow's combined.
pub const COMBINED_RULE_SUFFIX: &str =
    " (each step's own batch overrides spec.batch field by field)";

/// The desired state of a Flow: its steps, the Batch defaults they share, its parameters and
/// where its artifacts live.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flowline.io",
    version = "v1alpha1",
    kind = "Flow",
    namespaced,
    status = "FlowStatus",
    shortname = "fl",
    category = "flowline",
    derive = "PartialEq",
    doc = "A Flow is a graph of steps, each a container run as an AWS Batch job. The controller compiles it into Batch job definitions and a Step Functions state machine; a Run starts one execution of it and a Schedule starts executions by itself.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the job definitions and the state machine are up to date"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.stateMachineVersion",
        description = "Version of the state machine that new Runs use"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "State machine",
        type_ = "string",
        json_path = ".status.stateMachineArn",
        priority = 1,
        description = "ARN of the Step Functions state machine"
    ),
    validation = Rule::new("self.metadata.name.size() <= 40")
        .message("metadata.name of a Flow must be at most 40 characters, so that the AWS names derived from it fit"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name of a Flow must be a DNS label (lower-case letters, digits and '-'), as AWS Batch names allow no '.'"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.steps.exists(s, s.name == 'start')")
        .message("spec.steps must contain a step named start")
        .field_path(".steps")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.steps.exists(s, s.name == 'end')")
        .message("spec.steps must contain a step named end")
        .field_path(".steps")
        .reason(Reason::FieldValueRequired),
    validation = effective::fargate_refuses("gpu", "batch.gpu is not supported on platform FARGATE"),
    validation = effective::fargate_refuses("inferentia", "batch.inferentia is not supported on platform FARGATE"),
    validation = effective::fargate_refuses("trainium", "batch.trainium is not supported on platform FARGATE"),
    validation = effective::fargate_refuses("tmpfs", "batch.tmpfs is not supported on platform FARGATE"),
    validation = effective::fargate_refuses("sharedMemory", "batch.sharedMemory is not supported on platform FARGATE"),
    validation = effective::fargate_refuses("maxSwap", "batch.maxSwap is not supported on platform FARGATE"),
    validation = effective::fargate_refuses("swappiness", "batch.swappiness is not supported on platform FARGATE"),
    validation = effective::fargate_parallel(),
    validation = effective::neuron_exclusive(),
    validation = effective::fargate_cpu(),
    validation = effective::ec2_whole_cpu(),
    validation = effective::fargate_memory(),
    validation = effective::tmpfs_within_memory(),
    validation = effective::swappiness_needs_max_swap(),
    validation = Rule::new("!has(self.parameters) || self.parameters.all(p, self.parameters.exists_one(q, q.name.upperAscii() == p.name.upperAscii()))")
        .message("spec.parameters names must differ in more than letter case: each one reaches the tasks as FLOWLINE_PARAM_<NAME upper-cased>")
        .field_path(".parameters")
        .reason(Reason::FieldValueDuplicate),
)]
pub struct FlowSpec {
    /// The steps of the graph, keyed by name. There must be a step named `start`, where every
    /// run begins, and one named `end`, where it finishes. Each step names its successors in
    /// `next`. The controller checks the graph as a whole before it touches AWS: every step is
    /// reachable from `start` and reaches `end`, there are no cycles, and every branch or
    /// foreach is closed by a step with `join: true`. A Flow that breaks these rules is
    /// reported as Stalled with the reason in its Ready condition.
    #[schemars(length(min = 2, max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub steps: Vec<Step>,

    /// AWS Batch defaults for every step (Metaflow's `@batch` options). A step's own `batch`
    /// overrides them field by field: each field it sets replaces the Flow's (`tmpfs` as a
    /// whole), and `tags` are merged key by key. What neither sets comes from the controller's
    /// configuration (job queue, job role, default image). Rules that combine both levels (a
    /// step asking for a GPU under a Flow on Fargate) are checked when the Flow is applied,
    /// and by the controller, which reports a Flow breaking one as Stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,

    /// Parameters of the Flow, which Runs and Schedules set (Metaflow's `Parameter`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub parameters: Vec<Parameter>,

    /// Where the Flow's artifacts are stored. Defaults to the controller's datastore settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<Datastore>,

    /// Longest time a whole run may take, in seconds, from 60 to 31536000 (one year, the
    /// longest a Step Functions execution may run). A run that exceeds it is stopped and its
    /// phase becomes TimedOut. Defaults to no limit beyond Step Functions' own; each step's
    /// attempts are limited on their own (see `steps[].timeoutSeconds`), never beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 31536000))]
    pub timeout_seconds: Option<i64>,

    /// Most tasks of one foreach that run at the same time, from 1 to 10000. Defaults to no
    /// limit beyond the job queue's capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrency: Option<i32>,

    /// Tags for every AWS resource the Flow materializes and every Batch job it runs, next to
    /// the controller's ownership tags (`flowline.io/namespace`, `/name`, `/uid`, `/kind`).
    /// At most 20; keys of 1 to 128 characters that do not start with `aws:` or `flowline.io/`,
    /// values of at most 256 characters.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Tags,

    /// Runs every step's command inside `flowline task` (the same binary as the controller),
    /// which gives the command Flowline's task side: binary secrets resolved with the job role,
    /// the parents' outputs a step lists in `inputs` downloaded into `$FLOWLINE_INPUT_DIR`, and
    /// whatever the command writes to `$FLOWLINE_OUTPUT_DIR` stored under its
    /// `FLOWLINE_ARTIFACT_URI` with the Flow's encryption, with a `_task.json` manifest of the
    /// attempt; a foreach step's list is checked before the fan-out. The step's image must
    /// hold the `flowline` binary on its PATH (see the README). A step's own `taskRuntime`
    /// overrides it. Defaults to false: the command runs as written.
    #[serde(default, skip_serializing_if = "is_false")]
    pub task_runtime: bool,

    /// What happens to the AWS resources the Flow materialized (state machine, job
    /// definitions) when the Flow is deleted: `Delete` (the default) removes them, `Retain`
    /// leaves them in place. Artifacts in S3 are never deleted by the controller.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One step of a Flow: a container, what follows it, and how it runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.name == 'end' || (has(self.next) && size(self.next) > 0)")
        .message("steps[].next is required: every step except end names the step(s) that follow it")
        .field_path(".next")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.name != 'end' || !has(self.next) || size(self.next) == 0")
        .message("steps[].next must be empty for the end step, where every run finishes")
        .field_path(".next")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.next) || !(self.name in self.next)")
        .message("steps[].next must not name the step itself")
        .field_path(".next"),
    validation = Rule::new("!has(self.join) || !self.join || self.name != 'start'")
        .message("steps[].join cannot be set on the start step")
        .field_path(".join")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.foreach) || (has(self.next) && size(self.next) == 1)")
        .message("steps[].foreach needs exactly one step in next: the step that runs once per item")
        .field_path(".foreach"),
    validation = Rule::new("!(has(self.foreach) && has(self.parallel))")
        .message("steps[].foreach and steps[].parallel are mutually exclusive")
        .field_path(".parallel")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.image) && has(self.batch) && has(self.batch.image))")
        .message("set either steps[].image or steps[].batch.image, not both")
        .field_path(".image")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.parallel) && has(self.batch) && has(self.batch.platform) && self.batch.platform == 'FARGATE')")
        .message("steps[].parallel (a multi-node job) is not supported on platform FARGATE")
        .field_path(".parallel")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.catch) || !has(self.catch.next) || self.catch.next != self.name")
        .message("steps[].catch.next must name another step")
        .field_path(".catch.next"),
)]
pub struct Step {
    /// Name of the step, unique in the Flow: a lower-case Python identifier of at most 63
    /// characters, as Metaflow step names are. It names the step's job definition, its state
    /// in the state machine and its folder in the datastore.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z][a-z0-9_]{0,62}$"))]
    pub name: String,

    /// Container image of the step. Defaults to `batch.image` of the step, then of the Flow,
    /// then to the controller's default image. An image that names no registry (such as
    /// `python:3.12-slim`) is pulled from the controller's container registry when one is
    /// configured, and from Docker Hub otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,

    /// The command to run. `command` and `args` are joined into the Batch job's command, which
    /// replaces the image's CMD; the image's ENTRYPOINT, if it has one, still runs, because
    /// Batch cannot override it. Defaults to the image's CMD.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 65536)))]
    pub command: Vec<String>,

    /// Arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 65536)))]
    pub args: Vec<String>,

    /// Environment variables of the container, in addition to the bound secrets and to the
    /// ones the controller sets (`FLOWLINE_*`: flow, run, step and task ids, artifact URIs,
    /// parameters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// The steps that run after this one, always a list: `next: [train]` continues linearly;
    /// several names (`next: [a, b]`) start a branch, where the named steps run in parallel and
    /// must meet again at a step with `join: true`. Required for every step except `end`, which
    /// must not have it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 63), pattern(r"^[a-z][a-z0-9_]{0,62}$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub next: Vec<String>,

    /// Whether the step joins the branches of a split, the tasks of a foreach or the nodes of a
    /// parallel step: it runs once, after all of them, and `FLOWLINE_INPUT_URIS` lists the
    /// artifact prefixes of every one. The join of a foreach is the first step after the fan-out
    /// with `join: true`; the join of a parallel step is the step in its `next`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub join: bool,

    /// Makes the step fan out over a list it writes (Metaflow's `foreach`): the step writes a
    /// JSON array to the object named `artifact` under its `FLOWLINE_ARTIFACT_URI`, then the
    /// single step in `next` runs once per element, in parallel (at most `spec.maxConcurrency`
    /// at a time). Each of those tasks finds its position (from 0) in `FLOWLINE_FOREACH_INDEX`
    /// and the element, JSON-encoded, in `FLOWLINE_FOREACH_VALUE`. A step with `join: true`
    /// closes the fan-out. `foreach: {}` switches it on with the default object name,
    /// `foreach.json` (with `taskRuntime`, a file of that name in `$FLOWLINE_OUTPUT_DIR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<Foreach>,

    /// Runs the step as an AWS Batch multi-node parallel job: a gang of containers started
    /// together, e.g. for distributed training (Metaflow's `@parallel`). Each container sees
    /// its index in `AWS_BATCH_JOB_NODE_INDEX`, the gang's size in `AWS_BATCH_JOB_NUM_NODES`,
    /// and the main node's address in `AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS`. The step
    /// in `next` has `join: true` and sees every node's artifacts. EC2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Parallel>,

    /// AWS Batch settings of this step (Metaflow's `@batch`): each field set here overrides the
    /// same field of `spec.batch` (`tmpfs` as a whole, `tags` merged key by key), and every
    /// field left out is inherited from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,

    /// Secrets Manager secrets exposed to the step's container as environment variables
    /// (Metaflow's `@secrets`), keyed by `id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub secrets: Vec<SecretSpec>,

    /// Retries of the step's Batch job when an attempt fails (Metaflow's `@retry`). Defaults
    /// to no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,

    /// Longest time one attempt of the step may run, in seconds (Batch's attempt duration; at
    /// least 60, Batch's minimum). An attempt that exceeds it is stopped by Batch and counts as
    /// failed, so `retry` may run it again (Metaflow's `@timeout`). Defaults to the
    /// controller's step timeout (5 days unless configured), or to `spec.timeoutSeconds` when
    /// that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 31536000))]
    pub timeout_seconds: Option<i64>,

    /// Whether the step's command runs inside `flowline task`: overrides `spec.taskRuntime`
    /// for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_runtime: Option<bool>,

    /// The parent steps whose stored outputs are downloaded before the command starts, into
    /// `$FLOWLINE_INPUT_DIR/<parent>/` (one subfolder per task when the parent ran as several:
    /// a foreach body seen from its join, or the nodes of a parallel step); `["*"]` for every
    /// parent. Needs the task runtime (`taskRuntime`). Defaults to none: a step reads what it
    /// needs itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 63), pattern(r"^([a-z][a-z0-9_]{0,62}|\*)$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub inputs: Vec<String>,

    /// Handles the step's failure after its retries instead of failing the run (Metaflow's
    /// `@catch`): the run goes on with `catch.next`, or with the step's own `next` when that is
    /// unset. The failure's error and cause reach the steps that run next as JSON in
    /// `FLOWLINE_CAUGHT_ERROR`, and the step's phase in the Run's status stays Failed. Without
    /// `catch`, a failed step fails the run. `catch: {}` switches it on and goes on along
    /// `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<Catch>,
}

/// An environment variable of a step's container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!self.name.startsWith('FLOWLINE_') && !self.name.startsWith('AWS_BATCH_')")
        .message("env[].name must not start with FLOWLINE_ or AWS_BATCH_: those variables are set by the controller and by AWS Batch")
        .field_path(".name")
        .reason(Reason::FieldValueForbidden),
)]
pub struct EnvVar {
    /// Name of the variable.
    #[schemars(length(min = 1, max = 255), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,

    /// Value of the variable. Defaults to the empty string.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// The fan-out of a foreach step: see [`Step::foreach`] for the contract with the containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Foreach {
    /// Name of the object, under the step's `FLOWLINE_ARTIFACT_URI`, that holds the JSON array
    /// to fan out over. Defaults to `foreach.json`.
    #[serde(default = "default_foreach_artifact")]
    #[schemars(length(min = 1, max = 255), pattern(r"^[A-Za-z0-9_.-]+$"))]
    pub artifact: String,
}

impl Flow {
    /// The status of a Flow that is Ready for its current generation: only then do its state
    /// machine and version match the spec, so Runs and Schedules may start it.
    pub fn ready_status(&self) -> Option<&FlowStatus> {
        self.status.as_ref().filter(|status| {
            super::is_condition_true(&status.conditions, super::condition::READY)
                && status.observed_generation == self.metadata.generation
        })
    }
}

impl Default for Foreach {
    fn default() -> Self {
        Self {
            artifact: default_foreach_artifact(),
        }
    }
}

fn default_foreach_artifact() -> String {
    "foreach.json".into()
}

/// A multi-node parallel step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parallel {
    /// Number of containers in the gang, from 1 to 1000 (Batch's limit). Node 0 is the main
    /// node; the step succeeds when it does. Each node gets the task contract in its own
    /// override, with task id `<task>-node-<index>`; all of them must fit Batch's 8,192
    /// characters of overrides, which leaves room for about 8 nodes (the controller reports a
    /// Flow whose nodes do not fit as Stalled).
    #[schemars(range(min = 1, max = 1000))]
    pub num_nodes: i32,
}

/// Retries of a step's Batch job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// How many times a failed attempt is retried, from 0 to 9, like Metaflow's
    /// `@retry(times=...)`: a step runs at most `times + 1` attempts (Batch allows 10).
    /// `status.steps[].attempts` counts the attempts made.
    #[schemars(range(min = 0, max = 9))]
    pub times: i32,

    /// Which failures are retried, as Batch's `evaluateOnExit`: the first rule that matches a
    /// failed attempt decides, and an attempt that matches no rule is retried. Defaults to
    /// retrying every failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub evaluate_on_exit: Vec<RetryRule>,
}

/// A rule that decides whether a failed attempt is retried. Every condition that is set must
/// match. The patterns may end with `*` to match a prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryRule {
    /// Pattern for the container's exit code: digits, optionally ending with `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(r"^[0-9]*\*?$"))]
    pub on_exit_code: Option<String>,

    /// Pattern for Batch's reason for the failure (e.g. `CannotPullContainerError*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub on_reason: Option<String>,

    /// Pattern for Batch's status reason (e.g. `Host EC2*` for a Spot interruption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub on_status_reason: Option<String>,

    /// `RETRY` to retry a matching attempt, `EXIT` to fail the step at once.
    pub action: RetryAction,
}

/// What a matching retry rule does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RetryAction {
    /// Retry the attempt, if attempts remain.
    Retry,
    /// Fail the step without further attempts.
    Exit,
}

/// How a step's failure (after its retries) is handled instead of failing the run: see
/// [`Step::catch`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Catch {
    /// The step to continue with when this step fails, e.g. one that cleans up or notifies.
    /// When unset, the run continues along the step's normal `next`, as with Metaflow's
    /// `@catch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z][a-z0-9_]{0,62}$"))]
    pub next: Option<String>,
}

/// A parameter of a Flow. Runs and Schedules pass values as strings; the controller checks
/// them against `type` before it starts an execution. Every task receives the values of all
/// parameters in `FLOWLINE_PARAMETERS`, a JSON object from name to value converted to its type
/// (a number for Int and Float, true or false for Bool, the parsed document for JSON), and each
/// one as text in `FLOWLINE_PARAM_<NAME>` (the name upper-cased, so names must differ in more
/// than case). An optional parameter without a default that is not set is absent from
/// `FLOWLINE_PARAMETERS` and its `FLOWLINE_PARAM_<NAME>` is empty.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.required) && self.required && has(self.default))")
        .message("parameters[].default cannot be set on a required parameter")
        .field_path(".default")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.default) || self.type != 'Int' || self.default.matches('^[-+]?[0-9]+$')")
        .message("parameters[].default must be an integer for type Int")
        .field_path(".default"),
    validation = Rule::new("!has(self.default) || self.type != 'Float' || self.default.matches('^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$')")
        .message("parameters[].default must be a number for type Float")
        .field_path(".default"),
    validation = Rule::new("!has(self.default) || self.type != 'Bool' || self.default in ['true', 'false']")
        .message("parameters[].default must be true or false for type Bool")
        .field_path(".default"),
)]
pub struct Parameter {
    /// Name of the parameter: a Python identifier of at most 63 characters.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,

    /// Type of the values: `String` (the default), `Int`, `Float`, `Bool` (`true` or `false`)
    /// or `JSON` (any JSON document, as a string).
    #[serde(default, rename = "type")]
    pub type_: ParameterType,

    /// Value used when a Run or Schedule does not set the parameter, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub default: Option<String>,

    /// Whether every Run and Schedule must set the parameter. A required parameter has no
    /// default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,

    /// What the parameter means, for the people who run the Flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// The type of a Flow parameter.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ParameterType {
    /// Any string.
    #[default]
    String,
    /// A 64-bit integer.
    Int,
    /// A floating-point number.
    Float,
    /// `true` or `false`.
    Bool,
    /// A JSON document.
    #[serde(rename = "JSON")]
    Json,
}

/// Where a Flow's artifacts are stored: `<s3Root>/<namespace>/<flow>/<run>/<step>/<task>/`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.kmsKeyId) || (has(self.serverSideEncryption) && self.serverSideEncryption == 'aws:kms')")
        .message("datastore.kmsKeyId requires serverSideEncryption: aws:kms")
        .field_path(".kmsKeyId")
        .reason(Reason::FieldValueForbidden),
)]
pub struct Datastore {
    /// S3 prefix under which runs write their artifacts, e.g. `s3://my-bucket/flowline`.
    /// Defaults to the controller's S3 root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1024),
        pattern(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    )]
    pub s3_root: Option<String>,

    /// Server-side encryption of the artifacts: `AES256` (S3-managed keys) or `aws:kms`.
    /// Defaults to the controller's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = optional_enum)]
    pub server_side_encryption: Option<ServerSideEncryption>,

    /// KMS key for `aws:kms`: key ID, key ARN, alias name or alias ARN. Defaults to the
    /// account's AWS managed key for S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
}

/// Server-side encryption of S3 objects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServerSideEncryption {
    /// S3-managed keys (SSE-S3).
    #[serde(rename = "AES256")]
    Aes256,
    /// AWS KMS keys (SSE-KMS).
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// What happens to a Flow's AWS resources when the Flow is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the state machine and deregister the job definitions.
    #[default]
    Delete,
    /// Leave them in place.
    Retain,
}

/// The observed state of a Flow.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlowStatus {
    /// The `metadata.generation` that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Reconciling` and `Stalled`, as kstatus reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// ARN of the Step Functions state machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_machine_arn: Option<String>,

    /// ARN of the state machine version that new Runs are pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_machine_version_arn: Option<String>,

    /// Number of that state machine version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_machine_version: Option<i64>,

    /// The revision ID of the state machine that version was published from. While the
    /// machine's current revision is this one, the version is the latest; when it is not (a
    /// reconcile interrupted after updating the machine), the latest version is read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_machine_revision_id: Option<String>,

    /// The Batch job definition revision of each step (the revisions the version submits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["step".into()]))]
    pub job_definitions: Vec<JobDefinitionRef>,

    /// Job definition revisions the Flow no longer uses, still ACTIVE because an execution
    /// that is running submits them (its version refers to them); each is deregistered once
    /// no running execution does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_job_definitions: Vec<String>,

    /// The ARN each secret `id` resolved to. Values are never read into the status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub secrets: Vec<ResolvedSecret>,

    /// A short human-readable summary of the last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The Batch job definition registered for a step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct JobDefinitionRef {
    /// Name of the step.
    pub step: String,
    /// ARN of the job definition revision.
    pub arn: String,
}

/// A secret reference resolved to its ARN.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ResolvedSecret {
    /// The `id` as written in the Flow.
    pub id: String,
    /// The secret's full ARN.
    pub arn: String,
}
