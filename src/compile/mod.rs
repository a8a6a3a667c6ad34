//! Pure compilation of a Flow into the AWS resources it becomes: Batch job definitions, one
//! Step Functions state machine, secret bindings, names and tags. No I/O here: what
//! [`render`] returns is what the Flow reconciler applies and what `flowline render` prints.

pub mod asl_check;
pub mod cron;
pub mod graph;
pub mod job_definition;
pub mod naming;
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
    #[error("invalid secret: {0}")]
    Secret(secrets::SecretError),
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

/// Environment every task of the Flow shares (the static part of the task contract).
fn flow_environment(flow: &Flow, settings: &Settings, id: &Identity<'_>) -> Vec<KeyValue> {
    let datastore = flow.spec.datastore.as_ref();
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

/// Compiles a Flow. `lookups` are the secrets the controller looked up.
pub fn render(
    flow: &Flow,
    settings: &Settings,
    lookups: Lookups<'_>,
) -> Result<Rendered, CompileError> {
    let graph = graph::validate(&graph_steps(&flow.spec.steps))?;
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
    for step in &flow.spec.steps {
        let batch = job_definition::effective_batch(flow.spec.batch.as_ref(), step.batch.as_ref());
        let bound = secrets::bind(&step.secrets, lookups, settings)?;
        let mut step_environment = environment.clone();
        step_environment.extend(bound.environment);
        let mut step_tags = tags.clone();
        step_tags.extend(batch.tags.clone());
        let definition = job_definition::job_definition(
            &JobInput {
                step,
                batch: &batch,
                image: job_definition::image_for(step, &batch, settings),
                environment: step_environment,
                secrets: bound.secrets,
                tags: step_tags,
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
        artifact_root: artifact_root(flow, settings),
        parameters: &flow.spec.parameters,
        timeout_seconds: flow.spec.timeout_seconds,
        max_concurrency: flow.spec.max_concurrency,
        job_name_prefix: id.name.to_owned(),
    };
    let definition = state_machine::definition(&machine_input, &graph)?;
    check_overrides(&definition)?;
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

/// Batch rejects a job whose container overrides exceed 8,192 characters. The overrides are
/// templates filled at run time, so this bounds their fixed part; parameter values add to it.
fn check_overrides(definition: &Value) -> Result<(), CompileError> {
    fn visit(value: &Value, found: &mut Vec<(String, usize)>) {
        match value {
            Value::Object(map) => {
                if map.get("Type").and_then(Value::as_str) == Some("Task")
                    && let Some(params) = map.get("Parameters")
                {
                    let overrides = params
                        .get("ContainerOverrides")
                        .or_else(|| params.get("NodeOverrides"));
                    let size = overrides.map(json_len).unwrap_or(0);
                    let job = params.get("JobName").and_then(Value::as_str).unwrap_or("");
                    found.push((job.to_owned(), size));
                }
                map.values().for_each(|v| visit(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| visit(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    visit(definition, &mut found);
    match found
        .into_iter()
        .find(|(_, size)| *size > MAX_OVERRIDES_CHARS)
    {
        Some((job, size)) => Err(CompileError::Limit {
            what: format!("the container overrides of job `{job}`"),
            size,
            limit: MAX_OVERRIDES_CHARS,
            hint: "declare fewer parameters or move static environment into the step's env",
        }),
        None => Ok(()),
    }
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
        CompileError::Machine(error)
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
