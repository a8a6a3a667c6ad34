//! Pure compilation of a Flow into the AWS resources it becomes: Batch job definitions, one
//! Step Functions state machine, secret bindings, names and tags. No I/O here: what
//! [`render`] returns is what the Flow reconciler applies and what `flowline render` prints.

pub mod asl_check;
pub mod checks;
pub mod cron;
pub mod graph;
pub mod job_definition;
pub mod naming;
pub mod parameters;
pub mod revisions;
pub mod secrets;
pub mod state_machine;
pub mod trigger;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::api::{Flow, ServerSideEncryption, Step};
use crate::settings::Settings;

use graph::GraphStep;
use job_definition::{JobDefinition, JobInput, KeyValue, NamePrefix};
use secrets::Lookups;

/// Ownership tags on every AWS resource: the controller never changes or deletes a resource
/// whose tags name another owner.
pub const TAG_NAMESPACE: &str = "flowline.io/namespace";
pub const TAG_NAME: &str = "flowline.io/name";
pub const TAG_UID: &str = "flowline.io/uid";
pub const TAG_KIND: &str = "flowline.io/kind";

/// Step Functions' limit on a definition, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;
/// Batch's limit on a job definition, in bytes.
pub const MAX_JOB_DEFINITION_BYTES: usize = 24 * 1024;
/// Batch's limit on a job's container overrides, in characters.
pub const MAX_OVERRIDES_CHARS: usize = 8192;

/// UID used for names when rendering a manifest that has none (not yet created).
pub const OFFLINE_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Everything a Flow becomes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub state_machine: StateMachine,
    /// Unique job definitions (steps with identical content share one).
    pub job_definitions: Vec<JobDefinition>,
    /// For each step, in the Flow's order: its job definition and queue.
    pub steps: Vec<StepBinding>,
}

/// A `CreateStateMachine` request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateMachine {
    pub name: String,
    pub role_arn: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub definition: Value,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepBinding {
    pub step: String,
    pub job_definition: String,
    pub job_queue: String,
}

/// Why a Flow cannot be compiled. Every variant is terminal: the Flow must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    // The causes are part of the message (it becomes a Stalled condition), so they are not
    // also chained as sources, which would print them twice.
    #[error("invalid graph: {0}")]
    Graph(graph::GraphError),
    #[error("invalid graph: {0}")]
    Machine(state_machine::MachineError),
    #[error("invalid parameter: {0}")]
    Parameter(String),
    #[error("invalid secret: {0}")]
    Secret(secrets::SecretError),
    #[error(
        "step `{step}` binds secrets, which AWS Batch injects only through an execution role (on EC2 as on Fargate), and none is set: set spec.steps[].batch.executionRole or spec.batch.executionRole, or the controller's default FLOWLINE_EXECUTION_ROLE"
    )]
    MissingExecutionRole { step: String },
    #[error(
        "step `{step}` lists inputs, which only the task runtime downloads: set spec.steps[].taskRuntime or spec.taskRuntime, or read the parents' outputs from FLOWLINE_INPUT_URIS yourself"
    )]
    InputsWithoutTaskRuntime { step: String },
    #[error(
        "step `{step}` lists input `{input}`, which is not one of its parent steps ({parents})"
    )]
    UnknownInput {
        step: String,
        input: String,
        parents: String,
    },
    #[error(
        "step `{step}` runs in the task runtime, which wraps its command, and it has none: set spec.steps[].command (the image's CMD cannot be wrapped)"
    )]
    TaskRuntimeWithoutCommand { step: String },
    /// Rules that combine the Flow's and the steps' settings, one problem per line.
    #[error("{}", .0.join("; "))]
    Settings(Vec<String>),
    #[error("{what} is {size} bytes, over the AWS limit of {limit}; {hint}")]
    Limit {
        what: String,
        size: usize,
        limit: usize,
        hint: &'static str,
    },
}

/// The Flow's identity as used in AWS names and tags.
struct Identity<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
}

fn identity(flow: &Flow) -> Identity<'_> {
    Identity {
        namespace: flow.metadata.namespace.as_deref().unwrap_or("default"),
        name: flow.metadata.name.as_deref().unwrap_or("flow"),
        uid: flow.metadata.uid.as_deref().unwrap_or(OFFLINE_UID),
    }
}

/// Ownership tags plus the Flow's own `spec.tags`.
fn tags(flow: &Flow, id: &Identity<'_>) -> BTreeMap<String, String> {
    let mut tags = flow.spec.tags.clone();
    tags.insert(TAG_NAMESPACE.into(), id.namespace.into());
    tags.insert(TAG_NAME.into(), id.name.into());
    tags.insert(TAG_UID.into(), id.uid.into());
    tags.insert(TAG_KIND.into(), "Flow".into());
    tags
}

/// The Flows among the documents of a (multi-document) YAML or JSON manifest; documents of
/// other kinds are skipped.
pub fn flows_in_manifest(text: &str) -> Result<Vec<Flow>, serde_norway::Error> {
    let mut flows = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value: serde_norway::Value = serde::Deserialize::deserialize(document)?;
        if value.get("kind").and_then(serde_norway::Value::as_str) == Some("Flow") {
            flows.push(serde_norway::from_value(value)?);
        }
    }
    Ok(flows)
}

/// The graph part of the steps.
pub fn graph_steps(steps: &[Step]) -> Vec<GraphStep> {
    steps
        .iter()
        .map(|step| GraphStep {
            name: step.name.clone(),
            next: step.next.clone(),
            join: step.join,
            foreach: step.foreach.is_some(),
            parallel: step.parallel.is_some(),
            catch: step.catch.as_ref().and_then(|c| c.next.clone()),
        })
        .collect()
}

/// `<s3Root>/<namespace>/<flow>`: where the Flow's runs keep their artifacts.
pub fn artifact_root(flow: &Flow, settings: &Settings) -> String {
    let id = identity(flow);
    let root = flow
        .spec
        .datastore
        .as_ref()
        .and_then(|d| d.s3_root.clone())
        .unwrap_or_else(|| settings.s3_root.clone());
    format!(
        "{}/{}/{}",
        root.trim_end_matches('/'),
        id.namespace,
        id.name
    )
}

/// The server-side encryption of the Flow's objects (`FLOWLINE_S3_SSE`) and its KMS key
/// (`FLOWLINE_S3_KMS_KEY_ID`): the Flow's `spec.datastore`, else the controller's settings.
pub fn datastore_encryption(
    flow: Option<&Flow>,
    settings: &Settings,
) -> (Option<String>, Option<String>) {
    let datastore = flow.and_then(|f| f.spec.datastore.as_ref());
    let sse = datastore
        .and_then(|d| d.server_side_encryption)
        .map(|sse| match sse {
            ServerSideEncryption::Aes256 => "AES256".to_owned(),
            ServerSideEncryption::AwsKms => "aws:kms".to_owned(),
        })
        .or_else(|| settings.s3_server_side_encryption.clone());
    let kms_key = datastore
        .and_then(|d| d.kms_key_id.clone())
        .or_else(|| settings.s3_kms_key_id.clone());
    (sse, kms_key)
}

/// Environment every task of the Flow shares (the static part of the task contract).
fn flow_environment(flow: &Flow, settings: &Settings, id: &Identity<'_>) -> Vec<KeyValue> {
    let (sse, kms_key) = datastore_encryption(Some(flow), settings);
    let mut env = vec![
        KeyValue::new("FLOWLINE_FLOW", id.name),
        KeyValue::new("FLOWLINE_NAMESPACE", id.namespace),
        KeyValue::new("FLOWLINE_DATASTORE_ROOT", &artifact_root(flow, settings)),
        KeyValue::new(
            "FLOWLINE_S3_RETRY_COUNT",
            &settings.s3_retry_count.to_string(),
        ),
        KeyValue::new(
            "FLOWLINE_S3_WORKER_COUNT",
            &settings.s3_worker_count.to_string(),
        ),
    ];
    if let Some(endpoint) = &settings.s3_endpoint {
        env.push(KeyValue::new("FLOWLINE_S3_ENDPOINT", endpoint));
        // Honoured by the AWS SDKs and CLI, so tasks reach the same store without code.
        env.push(KeyValue::new("AWS_ENDPOINT_URL_S3", endpoint));
    }
    if let Some(sse) = sse {
        env.push(KeyValue::new("FLOWLINE_S3_SSE", &sse));
    }
    if let Some(key) = kms_key {
        env.push(KeyValue::new("FLOWLINE_S3_KMS_KEY_ID", &key));
    }
    env
}

/// The parents of a step: the steps naming it in `next` or `catch.next`.
fn parents<'a>(steps: &'a [Step], name: &str) -> Vec<&'a str> {
    steps
        .iter()
        .filter(|step| {
            step.next.iter().any(|next| next == name)
                || step
                    .catch
                    .as_ref()
                    .and_then(|c| c.next.as_deref())
                    .is_some_and(|next| next == name)
        })
        .map(|step| step.name.as_str())
        .collect()
}

/// Whether a step runs inside `flowline task` (its own `taskRuntime`, else the Flow's), and
/// with which inputs; `inputs` must name parents and needs the task runtime.
fn task_runtime(
    flow: &Flow,
    step: &Step,
    settings: &Settings,
) -> Result<Option<job_definition::TaskRuntime>, CompileError> {
    let wrapped = step.task_runtime.unwrap_or(flow.spec.task_runtime);
    if !wrapped {
        if !step.inputs.is_empty() {
            return Err(CompileError::InputsWithoutTaskRuntime {
                step: step.name.clone(),
            });
        }
        return Ok(None);
    }
    if step.command.is_empty() {
        return Err(CompileError::TaskRuntimeWithoutCommand {
            step: step.name.clone(),
        });
    }
    let parents = parents(&flow.spec.steps, &step.name);
    for input in step.inputs.iter().filter(|input| *input != "*") {
        if !parents.contains(&input.as_str()) {
            return Err(CompileError::UnknownInput {
                step: step.name.clone(),
                input: input.clone(),
                parents: if parents.is_empty() {
                    "it has none".into()
                } else {
                    parents.join(", ")
                },
            });
        }
    }
    let inputs = if step.inputs.iter().any(|input| input == "*") {
        vec!["*".to_owned()]
    } else {
        step.inputs.clone()
    };
    Ok(Some(job_definition::TaskRuntime {
        inputs,
        foreach_artifact: step.foreach.as_ref().map(|f| f.artifact.clone()),
        force_path_style: settings.s3_force_path_style,
    }))
}

/// Compiles a Flow. `lookups` are the secrets the controller looked up.
pub fn render(
    flow: &Flow,
    settings: &Settings,
    lookups: Lookups<'_>,
) -> Result<Rendered, CompileError> {
    let graph = graph::validate(&graph_steps(&flow.spec.steps))?;
    let mut problems = checks::batch_problems(flow);
    for (index, step) in flow.spec.steps.iter().enumerate() {
        let mut names = Vec::new();
        for (position, spec) in step.secrets.iter().enumerate() {
            if let Ok(bound) = secrets::bind(std::slice::from_ref(spec), lookups, settings) {
                names.extend(bound.secrets.into_iter().map(|s| (position, s.name)));
            }
            if spec.type_ == crate::api::SecretType::Binary
                && let Some(name) = &spec.env_var_name
            {
                names.push((position, name.clone()));
            }
        }
        problems.extend(checks::env_secret_collisions(index, step, &names));
    }
    if !problems.is_empty() {
        return Err(CompileError::Settings(problems));
    }
    let id = identity(flow);
    let tags = tags(flow, &id);
    let environment = flow_environment(flow, settings, &id);
    let prefix = NamePrefix {
        prefix: &settings.name_prefix,
        namespace: id.namespace,
        flow: id.name,
        uid: id.uid,
    };

    let mut job_definitions: Vec<JobDefinition> = Vec::new();
    let mut registered = std::collections::HashSet::new();
    let mut bindings = Vec::with_capacity(flow.spec.steps.len());
    let mut job_tags = BTreeMap::new();
    for step in &flow.spec.steps {
        let batch = job_definition::effective_batch(flow.spec.batch.as_ref(), step.batch.as_ref());
        let bound = secrets::bind(&step.secrets, lookups, settings)?;
        if !bound.secrets.is_empty()
            && job_definition::execution_role(step, &batch, settings).is_none()
        {
            return Err(CompileError::MissingExecutionRole {
                step: step.name.clone(),
            });
        }
        let task_runtime = task_runtime(flow, step, settings)?;
        let mut step_environment = environment.clone();
        step_environment.extend(bound.environment);
        let mut step_tags = tags.clone();
        step_tags.extend(batch.tags.clone());
        job_tags.insert(step.name.as_str(), step_tags.clone());
        let definition = job_definition::job_definition(
            &JobInput {
                step,
                batch: &batch,
                image: job_definition::image_for(step, &batch, settings),
                environment: step_environment,
                secrets: bound.secrets,
                tags: step_tags,
                attempt_timeout_seconds: job_definition::attempt_timeout(
                    step,
                    flow.spec.timeout_seconds,
                    settings,
                ),
                task_runtime,
            },
            settings,
            &prefix,
        );
        let size = json_len(&definition);
        if size > MAX_JOB_DEFINITION_BYTES {
            return Err(CompileError::Limit {
                what: format!("the job definition of step `{}`", step.name),
                size,
                limit: MAX_JOB_DEFINITION_BYTES,
                hint: "shorten its command, environment or secrets",
            });
        }
        bindings.push(StepBinding {
            step: step.name.clone(),
            job_definition: definition.job_definition_name.clone(),
            job_queue: batch
                .queue
                .clone()
                .unwrap_or_else(|| settings.job_queue.clone()),
        });
        if registered.insert(definition.job_definition_name.clone()) {
            job_definitions.push(definition);
        }
    }

    let machine_input = state_machine::MachineInput {
        steps: flow
            .spec
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect(),
        job_definitions: bindings
            .iter()
            .map(|b| (b.step.as_str(), b.job_definition.clone()))
            .collect(),
        queues: bindings
            .iter()
            .map(|b| (b.step.as_str(), b.job_queue.clone()))
            .collect(),
        job_tags,
        artifact_root: artifact_root(flow, settings),
        parameters: &flow.spec.parameters,
        task_timeouts: flow
            .spec
            .steps
            .iter()
            .map(|s| {
                let attempt =
                    job_definition::attempt_timeout(s, flow.spec.timeout_seconds, settings);
                (
                    s.name.as_str(),
                    state_machine::task_timeout(attempt, job_definition::attempts(s)),
                )
            })
            .collect(),
        timeout_seconds: flow.spec.timeout_seconds,
        max_concurrency: flow.spec.max_concurrency,
        job_name_prefix: id.name.to_owned(),
    };
    let definition = state_machine::definition(&machine_input, &graph)?;
    let tasks = task_overrides(&definition);
    check_overrides(&tasks)?;
    check_filled_overrides(flow, &definition, &tasks)?;
    let size = json_len(&definition);
    if size > MAX_DEFINITION_BYTES {
        return Err(CompileError::Limit {
            what: "the state machine definition".into(),
            size,
            limit: MAX_DEFINITION_BYTES,
            hint: "split the flow or reduce its steps' environment",
        });
    }
    Ok(Rendered {
        state_machine: StateMachine {
            name: naming::state_machine_name(&settings.name_prefix, id.namespace, id.name, id.uid),
            role_arn: settings.states_role.clone(),
            kind: "STANDARD".into(),
            definition,
            tags,
        },
        job_definitions,
        steps: bindings,
    })
}

/// Whether a Run's or Schedule's parameter values keep every task's container overrides
/// within Batch's 8,192 characters, with the longest run id, task id and trigger. Checked
/// when the Run or Schedule is admitted, so values too long for Batch end `Stalled` instead
/// of failing a step at submission. A Flow that does not compile is the Flow's problem, not
/// the values'.
pub fn check_parameter_overrides(
    flow: &Flow,
    settings: &Settings,
    values: &parameters::TypedParameters,
    bounds: parameters::Bounds,
) -> Result<(), String> {
    let Ok(rendered) = render(flow, settings, Lookups::Offline) else {
        return Ok(());
    };
    parameters::check_overrides(&rendered.state_machine.definition, values, bounds).map_err(
        |oversized| {
            format!(
                "with these parameter values the container overrides of job `{}` would be up to {} characters, over AWS Batch's limit of {MAX_OVERRIDES_CHARS} (every task receives the parameters twice: FLOWLINE_PARAMETERS and FLOWLINE_PARAM_<NAME>); pass shorter values, or store large inputs in S3 and pass their URI",
                oversized.job, oversized.size
            )
        },
    )
}

/// Batch rejects a job whose container overrides exceed 8,192 characters. The overrides are
/// templates filled at run time, so this bounds their fixed part; parameter values add to it.
fn check_overrides(tasks: &[TaskOverrides<'_>]) -> Result<(), CompileError> {
    for task in tasks {
        let Some(size) = task.containers.iter().map(|c| json_len(*c)).max() else {
            continue;
        };
        if size > MAX_OVERRIDES_CHARS {
            return Err(CompileError::Limit {
                what: format!("the container overrides of job `{}`", task.job),
                size,
                limit: MAX_OVERRIDES_CHARS,
                hint: if task.multi_node {
                    "every node of a multi-node step gets the task contract in its own override: declare fewer parameters or move static environment into the step's env"
                } else {
                    "declare fewer parameters or move static environment into the step's env"
                },
            });
        }
    }
    Ok(())
}

/// The templates are filled at run time, and a join after a multi-node step receives every
/// node's prefix, so its overrides grow with `parallel.numNodes`. Measured filled with the
/// Flow's defaults and the longest run and task ids, so that a Flow every Run of which Batch
/// would refuse is refused itself (a Run's own values are measured again when it is admitted).
fn check_filled_overrides(
    flow: &Flow,
    definition: &Value,
    tasks: &[TaskOverrides<'_>],
) -> Result<(), CompileError> {
    // Defaults that do not parse are reported by the state machine's compiler.
    let Ok(defaults) = parameters::typed_defaults(&flow.spec.parameters) else {
        return Ok(());
    };
    let defaults: parameters::TypedParameters = defaults.into_iter().collect();
    let bounds = parameters::Bounds { s3_trigger: false };
    parameters::check_task_overrides(definition, tasks, &defaults, bounds).map_err(|oversized| {
        CompileError::Limit {
            what: format!(
                "the container overrides of job `{}`, filled with the longest run and task ids",
                oversized.job
            ),
            size: oversized.size,
            limit: MAX_OVERRIDES_CHARS,
            hint: "a join after a multi-node step receives every node's prefix: lower parallel.numNodes; otherwise shorten the parameter defaults or move static environment into the step's env",
        }
    })
}

/// The container overrides one Batch Task of a state machine submits.
pub(crate) struct TaskOverrides<'a> {
    pub job: String,
    /// One entry per container Batch starts: the job's `ContainerOverrides`, or each node's of
    /// a multi-node job. ECS applies the 8,192-character limit to each container's overrides
    /// (every node of a multi-node job is its own ECS task), so each is measured alone.
    pub containers: Vec<&'a Value>,
    pub multi_node: bool,
}

/// Every Batch Task of a definition, at any depth (Parallel branches, Map item processors).
pub(crate) fn task_overrides(definition: &Value) -> Vec<TaskOverrides<'_>> {
    fn visit<'a>(value: &'a Value, found: &mut Vec<TaskOverrides<'a>>) {
        match value {
            Value::Object(map) => {
                if map.get("Type").and_then(Value::as_str) == Some("Task")
                    && let Some(params) = map.get("Parameters")
                {
                    let job = params.get("JobName").and_then(Value::as_str).unwrap_or("");
                    let nodes = params.get("NodeOverrides");
                    let containers = match nodes {
                        Some(nodes) => nodes
                            .get("NodePropertyOverrides")
                            .and_then(Value::as_array)
                            .map(|list| {
                                list.iter()
                                    .filter_map(|node| node.get("ContainerOverrides"))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        None => params.get("ContainerOverrides").into_iter().collect(),
                    };
                    found.push(TaskOverrides {
                        job: job.to_owned(),
                        containers,
                        multi_node: nodes.is_some(),
                    });
                }
                map.values().for_each(|v| visit(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| visit(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    visit(definition, &mut found);
    found
}

/// Length of a value's JSON form, counted without building the string.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing plain data into a writer that cannot fail does not fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

impl From<graph::GraphError> for CompileError {
    fn from(error: graph::GraphError) -> Self {
        CompileError::Graph(error)
    }
}

impl From<state_machine::MachineError> for CompileError {
    fn from(error: state_machine::MachineError) -> Self {
        match error {
            state_machine::MachineError::Parameter(problem) => CompileError::Parameter(problem),
            other => CompileError::Machine(other),
        }
    }
}

impl From<secrets::SecretError> for CompileError {
    fn from(error: secrets::SecretError) -> Self {
        CompileError::Secret(error)
    }
}

impl KeyValue {
    fn new(name: &str, value: &str) -> Self {
        KeyValue {
            name: name.into(),
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(yaml: &str) -> Flow {
        serde_norway::from_str(yaml).unwrap()
    }

    fn secret_flow(batch: &str) -> Flow {
        flow(&format!(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: f, namespace: ns}}
spec:
  steps:
    - name: start
      next: [end]
      batch: {batch}
      secrets:
        - {{id: db, type: plaintext, envVarName: DB}}
    - name: end
"#
        ))
    }

    fn start_definition(rendered: &Rendered) -> &JobDefinition {
        let name = &rendered.steps[0].job_definition;
        rendered
            .job_definitions
            .iter()
            .find(|d| &d.job_definition_name == name)
            .unwrap()
    }

    fn start_execution_role(rendered: &Rendered) -> Option<String> {
        let definition = start_definition(rendered);
        definition
            .container_properties
            .as_ref()
            .and_then(|c| c.execution_role_arn.clone())
    }

    const EXEC: &str = "arn:aws:iam::123456789012:role/exec";

    fn task_runtime_flow(spec_extra: &str, join_extra: &str) -> Flow {
        flow(&format!(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: f, namespace: ns}}
spec:
  {spec_extra}
  steps:
    - {{name: start, command: [python3, -c, "print(1)"], next: [a, b]}}
    - {{name: a, command: [python3], args: [a.py], next: [join]}}
    - {{name: b, command: [python3, b.py], next: [join], taskRuntime: false}}
    - {{name: join, join: true, command: [python3, join.py], next: [end], {join_extra}}}
    - {{name: end, command: ["true"]}}
"#
        ))
    }

    fn definition_of<'a>(rendered: &'a Rendered, step: &str) -> &'a ContainerPropertiesRef {
        let name = &rendered
            .steps
            .iter()
            .find(|b| b.step == step)
            .unwrap()
            .job_definition;
        rendered
            .job_definitions
            .iter()
            .find(|d| &d.job_definition_name == name)
            .and_then(|d| d.container_properties.as_ref())
            .unwrap()
    }

    type ContainerPropertiesRef = job_definition::ContainerProperties;

    fn env_value(container: &ContainerPropertiesRef, name: &str) -> Option<String> {
        container
            .environment
            .iter()
            .find(|kv| kv.name == name)
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn task_runtime_wraps_each_command_unless_a_step_opts_out() {
        let rendered = render(
            &task_runtime_flow("taskRuntime: true", "inputs: [a, b]"),
            &Settings::default(),
            Lookups::Offline,
        )
        .unwrap();
        let a = definition_of(&rendered, "a");
        assert_eq!(a.command, ["flowline", "task", "--", "python3", "a.py"]);
        let b = definition_of(&rendered, "b");
        assert_eq!(b.command, ["python3", "b.py"]);
        let join = definition_of(&rendered, "join");
        assert_eq!(
            env_value(join, "FLOWLINE_INPUT_STEPS").as_deref(),
            Some("a,b")
        );
        assert_eq!(env_value(a, "FLOWLINE_INPUT_STEPS"), None);
    }

    #[test]
    fn task_runtime_is_off_unless_asked_for() {
        let rendered = render(
            &task_runtime_flow("", "taskRuntime: true, inputs: ['*']"),
            &Settings::default(),
            Lookups::Offline,
        )
        .unwrap();
        assert_eq!(definition_of(&rendered, "a").command, ["python3", "a.py"]);
        let join = definition_of(&rendered, "join");
        assert_eq!(join.command[..3], ["flowline", "task", "--"]);
        assert_eq!(
            env_value(join, "FLOWLINE_INPUT_STEPS").as_deref(),
            Some("*")
        );
    }

    #[test]
    fn inputs_must_name_parents_and_need_the_task_runtime() {
        let error = render(
            &task_runtime_flow("", "inputs: [a]"),
            &Settings::default(),
            Lookups::Offline,
        )
        .unwrap_err();
        assert!(
            matches!(error, CompileError::InputsWithoutTaskRuntime { .. }),
            "{error}"
        );
        let error = render(
            &task_runtime_flow("taskRuntime: true", "inputs: [start]"),
            &Settings::default(),
            Lookups::Offline,
        )
        .unwrap_err();
        assert!(error.to_string().contains("(a, b)"), "{error}");
    }

    #[test]
    fn a_wrapped_foreach_step_names_its_list_and_a_step_without_command_is_refused() {
        let foreach = flow(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: f, namespace: ns}
spec:
  taskRuntime: true
  steps:
    - {name: start, command: ["true"], next: [body], foreach: {artifact: items.json}}
    - {name: body, command: ["true"], next: [join]}
    - {name: join, join: true, command: ["true"], next: [end]}
    - {name: end, command: ["true"]}
"#,
        );
        let settings = Settings {
            s3_force_path_style: true,
            ..Settings::default()
        };
        let rendered = render(&foreach, &settings, Lookups::Offline).unwrap();
        let start = definition_of(&rendered, "start");
        assert_eq!(
            env_value(start, "FLOWLINE_FOREACH_ARTIFACT").as_deref(),
            Some("items.json")
        );
        assert_eq!(
            env_value(start, "FLOWLINE_S3_FORCE_PATH_STYLE").as_deref(),
            Some("true")
        );
        let mut no_command = foreach.clone();
        no_command.spec.steps[3].command.clear();
        let error = render(&no_command, &settings, Lookups::Offline).unwrap_err();
        assert!(
            matches!(error, CompileError::TaskRuntimeWithoutCommand { .. }),
            "{error}"
        );
    }

    #[test]
    fn an_ec2_step_with_secrets_gets_the_default_execution_role() {
        let settings = Settings {
            execution_role: Some(EXEC.into()),
            ..Settings::default()
        };
        let rendered = render(&secret_flow("{}"), &settings, Lookups::Offline).unwrap();
        assert_eq!(start_execution_role(&rendered).as_deref(), Some(EXEC));
        // The end step binds no secrets on EC2: no execution role.
        let end = &rendered.steps[1].job_definition;
        let end = rendered
            .job_definitions
            .iter()
            .find(|d| &d.job_definition_name == end)
            .unwrap();
        assert_eq!(
            end.container_properties
                .as_ref()
                .and_then(|c| c.execution_role_arn.clone()),
            None
        );
    }

    #[test]
    fn an_ec2_step_with_secrets_takes_its_own_execution_role() {
        let flow = secret_flow(&format!("{{platform: EC2, executionRole: {EXEC}}}"));
        let rendered = render(&flow, &Settings::default(), Lookups::Offline).unwrap();
        assert_eq!(start_execution_role(&rendered).as_deref(), Some(EXEC));
    }

    #[test]
    fn secrets_without_any_execution_role_stall_naming_the_settings() {
        let error = render(&secret_flow("{}"), &Settings::default(), Lookups::Offline)
            .unwrap_err()
            .to_string();
        for setting in [
            "spec.steps[].batch.executionRole",
            "spec.batch.executionRole",
            "FLOWLINE_EXECUTION_ROLE",
            "`start`",
        ] {
            assert!(error.contains(setting), "{error}");
        }
    }

    #[test]
    fn binary_secrets_alone_need_no_execution_role() {
        let flow = flow(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: f, namespace: ns}
spec:
  steps:
    - name: start
      next: [end]
      secrets:
        - {id: cert, type: binary, envVarName: CERT}
    - name: end
"#,
        );
        let rendered = render(&flow, &Settings::default(), Lookups::Offline).unwrap();
        assert_eq!(start_execution_role(&rendered), None);
    }

    fn timed_flow(flow_timeout: &str) -> Flow {
        flow(&format!(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: f, namespace: ns}}
spec:
  {flow_timeout}
  steps:
    - name: start
      next: [end]
      timeoutSeconds: 600
      retry: {{times: 2}}
    - name: end
"#
        ))
    }

    fn attempt_duration(rendered: &Rendered, step: usize) -> Option<i64> {
        let name = &rendered.steps[step].job_definition;
        rendered
            .job_definitions
            .iter()
            .find(|d| &d.job_definition_name == name)
            .and_then(|d| d.timeout.as_ref())
            .map(|t| t.attempt_duration_seconds)
    }

    #[test]
    fn every_step_has_an_attempt_timeout_from_the_step_the_flow_or_the_controller() {
        let rendered = render(&timed_flow(""), &Settings::default(), Lookups::Offline).unwrap();
        assert_eq!(attempt_duration(&rendered, 0), Some(600));
        assert_eq!(attempt_duration(&rendered, 1), Some(5 * 24 * 3600));
        let states = &rendered.state_machine.definition["States"];
        // Three attempts of 600 s, each with a day to leave the queue.
        assert_eq!(states["start"]["TimeoutSeconds"], 3 * (600 + 86_400));
        assert_eq!(states["end"]["TimeoutSeconds"], 5 * 24 * 3600 + 86_400);

        // No attempt outlives its run.
        let short = render(
            &timed_flow("timeoutSeconds: 3600"),
            &Settings::default(),
            Lookups::Offline,
        )
        .unwrap();
        assert_eq!(attempt_duration(&short, 0), Some(600));
        assert_eq!(attempt_duration(&short, 1), Some(3600));

        let settings = Settings {
            step_timeout_seconds: 7200,
            ..Settings::default()
        };
        let configured = render(&timed_flow(""), &settings, Lookups::Offline).unwrap();
        assert_eq!(attempt_duration(&configured, 1), Some(7200));
    }

    #[test]
    fn every_task_retries_refused_submissions_and_never_job_failures() {
        let rendered = render(&timed_flow(""), &Settings::default(), Lookups::Offline).unwrap();
        for step in ["start", "end"] {
            let retry = &rendered.state_machine.definition["States"][step]["Retry"];
            assert_eq!(
                retry,
                &serde_json::json!([{
                    "ErrorEquals": ["Batch.AWSBatchException", "Batch.TooManyRequestsException"],
                    "IntervalSeconds": 2,
                    "BackoffRate": 2,
                    "MaxAttempts": 10,
                    "MaxDelaySeconds": 60,
                    "JitterStrategy": "FULL"
                }]),
                "{step}"
            );
        }
    }

    fn multi_node_flow(nodes: i32) -> Flow {
        flow(&format!(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: f, namespace: ns}}
spec:
  parameters:
    - {{name: epochs, type: Int, default: "3"}}
  steps:
    - name: start
      next: [train]
    - name: train
      parallel: {{numNodes: {nodes}}}
      next: [gather]
    - name: gather
      join: true
      next: [end]
    - name: end
"#
        ))
    }

    fn variable<'a>(environment: &'a Value, name: &str) -> &'a Value {
        environment
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["Name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {environment}"))
    }

    #[test]
    fn every_node_of_a_multi_node_step_gets_the_task_contract_and_its_own_prefix() {
        let rendered = render(&multi_node_flow(3), &Settings::default(), Lookups::Offline).unwrap();
        let states = &rendered.state_machine.definition["States"];
        let overrides = &states["train"]["Parameters"]["NodeOverrides"]["NodePropertyOverrides"];
        let overrides = overrides.as_array().unwrap();
        assert_eq!(overrides.len(), 3);
        for (index, node) in overrides.iter().enumerate() {
            assert_eq!(node["TargetNodes"], format!("{index}:{index}"));
            let environment = &node["ContainerOverrides"]["Environment"];
            for name in [
                "FLOWLINE_STEP",
                "FLOWLINE_RUN_ID",
                "FLOWLINE_INPUT_URIS",
                "FLOWLINE_PARAMETERS",
                "FLOWLINE_PARAM_EPOCHS",
                "FLOWLINE_TRIGGER_S3_BUCKET",
            ] {
                variable(environment, name);
            }
            assert_eq!(
                variable(environment, "FLOWLINE_TASK_ID")["Value.$"],
                format!("States.Format('{{}}-node-{index}', $.taskId)")
            );
            assert_eq!(
                variable(environment, "FLOWLINE_ARTIFACT_URI")["Value.$"],
                format!(
                    "States.Format('{{}}/{{}}/train/{{}}-node-{index}/', $.root, $.runId, $.taskId)"
                )
            );
        }
        let join = &states["gather"]["Parameters"]["ContainerOverrides"]["Environment"];
        let inputs = variable(join, "FLOWLINE_INPUT_URIS")["Value.$"]
            .as_str()
            .unwrap();
        for index in 0..3 {
            assert!(
                inputs.contains(&format!("/train/{{}}-node-{index}/")),
                "{inputs}"
            );
        }
    }

    #[test]
    fn each_node_s_overrides_are_measured_alone_as_ecs_does() {
        // Together 16 nodes' overrides exceed 8,192 characters; each node's fits, and so does
        // the join's list of 16 prefixes.
        let rendered = render(&multi_node_flow(16), &Settings::default(), Lookups::Offline);
        assert!(rendered.is_ok(), "{:?}", rendered.err());
    }

    #[test]
    fn a_multi_node_step_whose_overrides_do_not_fit_names_num_nodes() {
        let error = render(&multi_node_flow(64), &Settings::default(), Lookups::Offline)
            .unwrap_err()
            .to_string();
        assert!(error.contains("parallel.numNodes"), "{error}");
        assert!(error.contains("8192"), "{error}");
    }

    fn parameter_flow() -> Flow {
        flow(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: f, namespace: ns}
spec:
  parameters:
    - {name: epochs, type: Int, default: "5"}
    - {name: lr, type: Float, default: "0.1"}
    - {name: debug, type: Bool, default: "false"}
    - {name: config, type: JSON, default: '{"layers": [1, 2]}'}
    - {name: dataset, required: true}
    - {name: note}
  steps:
    - name: start
      next: [end]
    - name: end
"#,
        )
    }

    #[test]
    fn defaults_are_typed_and_merged_key_by_key_under_the_input() {
        let rendered = render(&parameter_flow(), &Settings::default(), Lookups::Offline).unwrap();
        let states = &rendered.state_machine.definition["States"];
        assert_eq!(
            states["Flowline.Defaults"]["Result"]["parameters"],
            serde_json::json!({"epochs": 5, "lr": 0.1, "debug": false, "config": {"layers": [1, 2]}})
        );
        assert_eq!(
            states["Flowline.Parameters"]["Parameters"]["parameters.$"],
            "States.JsonMerge($.merged.flowlineDefaults.parameters, $.merged.parameters, false)"
        );
        let environment = &states["start"]["Parameters"]["ContainerOverrides"]["Environment"];
        assert_eq!(
            variable(environment, "FLOWLINE_PARAMETERS")["Value.$"],
            "States.JsonToString($.parameters)"
        );
        assert_eq!(
            variable(environment, "FLOWLINE_PARAM_EPOCHS")["Value.$"],
            "$.paramText.epochs.text"
        );
    }

    #[test]
    fn parameter_texts_are_built_once_and_unset_ones_are_empty_instead_of_failing() {
        let rendered = render(&parameter_flow(), &Settings::default(), Lookups::Offline).unwrap();
        let states = &rendered.state_machine.definition["States"];
        let texts = &states["Flowline.Context"]["Parameters"]["paramText"];
        assert_eq!(
            texts["epochs"],
            serde_json::json!({"text.$": "States.Format('{}', $.parameters.epochs)"})
        );
        assert_eq!(
            texts["config"],
            serde_json::json!({"text.$": "States.JsonToString($.parameters.config)"})
        );
        // No default: empty until a Choice finds the value.
        assert_eq!(texts["note"], serde_json::json!({"text": ""}));
        assert_eq!(texts["dataset"], serde_json::json!({"text": ""}));
        assert_eq!(
            states["Flowline.Context"]["Next"],
            "Flowline.Parameter.dataset"
        );
        let choice = &states["Flowline.Parameter.note"];
        assert_eq!(choice["Type"], "Choice");
        assert_eq!(choice["Choices"][0]["Variable"], "$.parameters.note");
        assert_eq!(choice["Choices"][0]["IsPresent"], true);
        assert_eq!(choice["Default"], "Flowline.Resume");
        let fill = &states["Flowline.Parameter.note.Text"];
        assert_eq!(fill["ResultPath"], "$.paramText.note");
        assert_eq!(
            fill["Parameters"]["text.$"],
            "States.Format('{}', $.parameters.note)"
        );
        asl_check::check(&rendered.state_machine.definition).unwrap();
    }

    #[test]
    fn an_invalid_json_default_stalls_the_flow() {
        let flow = flow(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: f, namespace: ns}
spec:
  parameters:
    - {name: config, type: JSON, default: "{"}
  steps:
    - name: start
      next: [end]
    - name: end
"#,
        );
        let error = render(&flow, &Settings::default(), Lookups::Offline).unwrap_err();
        assert!(matches!(error, CompileError::Parameter(_)), "{error}");
        assert!(error.to_string().contains("`config`"), "{error}");
    }

    #[test]
    fn parameter_values_too_long_for_batch_are_refused_naming_size_and_limit() {
        let flow = parameter_flow();
        let settings = Settings::default();
        let bounds = parameters::Bounds { s3_trigger: false };
        let mut values = parameters::TypedParameters::new();
        values.insert("dataset".into(), serde_json::json!("s3://bucket/train.csv"));
        assert_eq!(
            check_parameter_overrides(&flow, &settings, &values, bounds),
            Ok(())
        );
        values.insert("note".into(), serde_json::json!("x".repeat(4000)));
        let message = check_parameter_overrides(&flow, &settings, &values, bounds).unwrap_err();
        assert!(message.contains("8192"), "{message}");
        assert!(message.contains("would be up to"), "{message}");
    }

    #[test]
    fn a_caught_failure_reaches_its_handler_cut_to_error_reason_and_job() {
        let flow = flow(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: f, namespace: ns}
spec:
  steps:
    - name: start
      next: [end]
      catch: {next: notify}
    - name: notify
      next: [end]
    - name: end
"#,
        );
        let rendered = render(&flow, &Settings::default(), Lookups::Offline).unwrap();
        let definition = &rendered.state_machine.definition;
        asl_check::check(definition).unwrap();
        let states = &definition["States"];
        assert_eq!(states["start"]["Catch"][0]["Next"], "start.caught");
        assert_eq!(states["start"]["Catch"][0]["ResultPath"], "$.caught");
        assert_eq!(states["start.caught"]["Type"], "Choice");
        assert_eq!(states["start.caught"]["Default"], "start.caught.other");
        let summary = &states["start.caught.summary"];
        assert_eq!(
            summary["Parameters"],
            serde_json::json!({
                "Error.$": "$.caught.Error",
                "Cause.$": "$.caught.job.StatusReason",
                "JobId.$": "$.caught.job.JobId"
            })
        );
        assert_eq!(summary["Next"], "notify");
        assert_eq!(states["start.caught.other"]["Next"], "notify");
        // The whole cause (a job description of many kilobytes) never reaches the handler.
        let other = serde_json::to_string(&states["start.caught.other"]).unwrap();
        assert!(!other.contains("$.caught.Cause"), "{other}");
    }
}
