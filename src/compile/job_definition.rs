//! Batch job definitions: every `@batch` option of a step, after the step's `batch` overrides
//! the Flow's field by field and the controller's settings fill the rest.
//!
//! The types mirror the `RegisterJobDefinition` request (serialized in its camelCase shape, so
//! `flowline render` shows what AWS receives). Steps whose definitions are identical share one
//! job definition: its name carries a hash of its content, so "register only when the content
//! changed" is a lookup by name, and a name's latest revision never changes meaning.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::{BatchSpec, Platform, Retry, RetryAction, SecretType, Step, Tmpfs};
use crate::settings::Settings;

use super::naming;

/// Tag holding the hash of a job definition's content (compared instead of the content).
pub const CONTENT_HASH_TAG: &str = "flowline.io/content-hash";

/// A `RegisterJobDefinition` request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDefinition {
    pub job_definition_name: String,
    /// `container` or `multinode`.
    #[serde(rename = "type")]
    pub kind: String,
    pub platform_capabilities: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_properties: Option<ContainerProperties>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_properties: Option<NodeProperties>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<JobTimeout>,
    pub propagate_tags: bool,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    pub image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    pub resource_requirements: Vec<ResourceRequirement>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<LinuxParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fargate_platform_configuration: Option<FargatePlatformConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceRequirement {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

/// A secret bound by reference: Batch resolves `valueFrom` when the container starts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
    pub value_from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_memory_size: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_swap: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TmpfsMount {
    pub container_path: String,
    pub size: i32,
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub host_path: String,
    pub container_path: String,
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FargatePlatformConfiguration {
    pub platform_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    pub assign_public_ip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeProperties {
    pub num_nodes: i32,
    pub main_node: i32,
    pub node_range_properties: Vec<NodeRangeProperty>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRangeProperty {
    pub target_nodes: String,
    pub container: ContainerProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategy {
    pub attempts: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evaluate_on_exit: Vec<EvaluateOnExit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluateOnExit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_exit_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_status_reason: Option<String>,
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTimeout {
    pub attempt_duration_seconds: i64,
}

/// Default compute when neither the step, the Flow nor the settings say (Metaflow's defaults).
pub const DEFAULT_CPU: f64 = 1.0;
pub const DEFAULT_MEMORY_MIB: i32 = 4096;
/// Where tmpfs is mounted when `tmpfs.path` is not set (Metaflow's default).
pub const DEFAULT_TMPFS_PATH: &str = "/metaflow_temp";
/// Neuron devices per Inferentia/Trainium unit are exposed as `/dev/neuron<N>`.
const NEURON_DEVICE_PREFIX: &str = "/dev/neuron";

/// `step.batch` over `flow.batch`, field by field (tags are merged, the step's win).
pub fn effective_batch(flow: Option<&BatchSpec>, step: Option<&BatchSpec>) -> BatchSpec {
    let base = flow.cloned().unwrap_or_default();
    let Some(over) = step else {
        return base;
    };
    let mut tags = base.tags.clone();
    tags.extend(over.tags.clone());
    BatchSpec {
        cpu: over.cpu.or(base.cpu),
        memory: over.memory.or(base.memory),
        gpu: over.gpu.or(base.gpu),
        inferentia: over.inferentia.or(base.inferentia),
        trainium: over.trainium.or(base.trainium),
        image: over.image.clone().or(base.image),
        queue: over.queue.clone().or(base.queue),
        iam_role: over.iam_role.clone().or(base.iam_role),
        execution_role: over.execution_role.clone().or(base.execution_role),
        platform: over.platform.or(base.platform),
        shared_memory: over.shared_memory.or(base.shared_memory),
        max_swap: over.max_swap.or(base.max_swap),
        swappiness: over.swappiness.or(base.swappiness),
        tmpfs: over.tmpfs.clone().or(base.tmpfs),
        tags,
    }
}

/// The job role a step's jobs get: its own, else the controller's default.
pub fn job_role(batch: &BatchSpec, settings: &Settings) -> Option<String> {
    batch.iam_role.clone().or_else(|| settings.job_role.clone())
}

/// The execution role a step's jobs get: its own, else — when the job needs one — the
/// controller's default. A job needs one on Fargate (to pull the image and write logs) and,
/// on EC2 as well, when Batch injects secrets into it: Batch resolves `secrets[].valueFrom`
/// only with the execution role, and a job with secrets and no execution role never starts.
pub fn execution_role(step: &Step, batch: &BatchSpec, settings: &Settings) -> Option<String> {
    batch.execution_role.clone().or_else(|| {
        needs_execution_role(step, batch)
            .then(|| settings.execution_role.clone())
            .flatten()
    })
}

/// Whether a step's jobs cannot run without an execution role: on Fargate, or when Batch
/// injects secrets (every secret type but `binary`, which the task resolves itself with its
/// job role).
pub fn needs_execution_role(step: &Step, batch: &BatchSpec) -> bool {
    batch.platform == Some(Platform::Fargate) || injects_secrets(step)
}

/// Whether Batch injects some of the step's secrets (`secrets[].valueFrom`).
pub fn injects_secrets(step: &Step) -> bool {
    step.secrets
        .iter()
        .any(|secret| secret.type_ != SecretType::Binary)
}

/// How long one attempt of a step may run: the step's `timeoutSeconds`, else the controller's
/// default (`FLOWLINE_STEP_TIMEOUT_SECONDS`), cut to the Flow's `timeoutSeconds` when that is
/// shorter (no attempt outlives its run). Every step has one, so a hung job is stopped by
/// Batch rather than holding its instance until someone notices.
pub fn attempt_timeout(step: &Step, flow_timeout: Option<i64>, settings: &Settings) -> i64 {
    step.timeout_seconds.unwrap_or_else(|| {
        flow_timeout.map_or(settings.step_timeout_seconds, |flow| {
            flow.min(settings.step_timeout_seconds)
        })
    })
}

/// Batch's attempts of a step: `retry.times + 1`.
pub fn attempts(step: &Step) -> i64 {
    step.retry
        .as_ref()
        .map_or(1, |retry| i64::from(retry.times) + 1)
}

/// The image a step runs: `step.image`, else the effective `batch.image`, else the settings'
/// default; an image naming no registry gets the configured registry prepended.
pub fn image_for(step: &Step, batch: &BatchSpec, settings: &Settings) -> String {
    let image = step
        .image
        .clone()
        .or_else(|| batch.image.clone())
        .unwrap_or_else(|| settings.default_image.clone());
    match &settings.container_registry {
        Some(registry) if !names_registry(&image) => {
            format!("{}/{}", registry.trim_end_matches('/'), image)
        }
        _ => image,
    }
}

/// Whether an image reference starts with a registry host (`host.tld/…` or `host:port/…`).
fn names_registry(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// What a step's job definition is built from; everything run-specific goes into the state
/// machine's container overrides instead, so identical steps share a definition.
pub struct JobInput<'a> {
    pub step: &'a Step,
    pub batch: &'a BatchSpec,
    pub image: String,
    /// Environment common to every task of the Flow (task contract, datastore settings).
    pub environment: Vec<KeyValue>,
    pub secrets: Vec<SecretRef>,
    pub tags: BTreeMap<String, String>,
    /// Batch's attempt duration: see [`attempt_timeout`].
    pub attempt_timeout_seconds: i64,
    /// Set when the step's command runs inside `flowline task`.
    pub task_runtime: Option<TaskRuntime>,
}

/// How a step runs inside `flowline task`: its command is wrapped and the wrapper's variables
/// are added to the job definition's environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskRuntime {
    /// The parents whose outputs are downloaded (`FLOWLINE_INPUT_STEPS`): names, or `*`.
    pub inputs: Vec<String>,
    /// A foreach step's list (`FLOWLINE_FOREACH_ARTIFACT`), checked before it is stored.
    pub foreach_artifact: Option<String>,
    /// `FLOWLINE_S3_FORCE_PATH_STYLE=true` for the wrapper's S3 client.
    pub force_path_style: bool,
}

/// The wrapper's command line before the step's own command.
pub const TASK_RUNTIME_COMMAND: [&str; 3] = ["flowline", "task", "--"];

impl TaskRuntime {
    fn wrap(&self, command: Vec<String>) -> Vec<String> {
        TASK_RUNTIME_COMMAND
            .iter()
            .map(|part| (*part).to_owned())
            .chain(command)
            .collect()
    }

    fn environment(&self) -> Vec<KeyValue> {
        let mut env = Vec::new();
        if !self.inputs.is_empty() {
            env.push(KeyValue::new(
                crate::task::contract::INPUT_STEPS,
                &self.inputs.join(","),
            ));
        }
        if let Some(artifact) = &self.foreach_artifact {
            env.push(KeyValue::new(
                crate::task::contract::FOREACH_ARTIFACT,
                artifact,
            ));
        }
        if self.force_path_style {
            env.push(KeyValue::new(
                crate::task::contract::S3_FORCE_PATH_STYLE,
                "true",
            ));
        }
        env
    }
}

/// Builds the job definition of one step (its name is filled from the content hash).
pub fn job_definition(
    input: &JobInput<'_>,
    settings: &Settings,
    naming_prefix: &NamePrefix<'_>,
) -> JobDefinition {
    let batch = input.batch;
    let fargate = batch.platform == Some(Platform::Fargate);
    let container = container_properties(input, settings, fargate);
    let (kind, container_properties, node_properties) = match &input.step.parallel {
        Some(parallel) => (
            "multinode",
            None,
            Some(NodeProperties {
                num_nodes: parallel.num_nodes,
                main_node: 0,
                node_range_properties: vec![NodeRangeProperty {
                    target_nodes: "0:".into(),
                    container,
                }],
            }),
        ),
        None => ("container", Some(container), None),
    };
    let mut definition = JobDefinition {
        job_definition_name: String::new(),
        kind: kind.into(),
        platform_capabilities: vec![if fargate { "FARGATE" } else { "EC2" }.into()],
        container_properties,
        node_properties,
        retry_strategy: input.step.retry.as_ref().map(retry_strategy),
        timeout: Some(JobTimeout {
            attempt_duration_seconds: input.attempt_timeout_seconds,
        }),
        propagate_tags: true,
        tags: input.tags.clone(),
    };
    let hash = content_hash(&definition);
    definition.job_definition_name = naming::job_definition_name(
        naming_prefix.prefix,
        naming_prefix.namespace,
        naming_prefix.flow,
        &hash,
        naming_prefix.uid,
    );
    definition.tags.insert(CONTENT_HASH_TAG.into(), hash);
    definition
}

/// The parts of a job definition's name that come from the Flow.
pub struct NamePrefix<'a> {
    pub prefix: &'a str,
    pub namespace: &'a str,
    pub flow: &'a str,
    pub uid: &'a str,
}

/// Hash of everything in a definition except its name and the hash tag itself.
fn content_hash(definition: &JobDefinition) -> String {
    naming::json_hash(definition, 12)
}

fn container_properties(
    input: &JobInput<'_>,
    settings: &Settings,
    fargate: bool,
) -> ContainerProperties {
    let batch = input.batch;
    let mut command = input.step.command.clone();
    command.extend(input.step.args.iter().cloned());
    if let Some(runtime) = &input.task_runtime {
        command = runtime.wrap(command);
    }
    let mut requirements = vec![
        ResourceRequirement {
            kind: "VCPU".into(),
            value: format_cpu(batch.cpu.unwrap_or(DEFAULT_CPU)),
        },
        ResourceRequirement {
            kind: "MEMORY".into(),
            value: batch.memory.unwrap_or(DEFAULT_MEMORY_MIB).to_string(),
        },
    ];
    if let Some(gpu) = batch.gpu.filter(|gpu| *gpu > 0) {
        requirements.push(ResourceRequirement {
            kind: "GPU".into(),
            value: gpu.to_string(),
        });
    }
    let mut environment = input.environment.clone();
    environment.extend(input.step.env.iter().map(|var| KeyValue {
        name: var.name.clone(),
        value: var.value.clone(),
    }));
    if let Some(runtime) = &input.task_runtime {
        environment.extend(runtime.environment());
    }
    let linux = linux_parameters(batch, &mut environment);
    environment.sort();
    environment.dedup_by(|later, earlier| later.name == earlier.name);
    ContainerProperties {
        image: input.image.clone(),
        command,
        job_role_arn: job_role(batch, settings),
        execution_role_arn: execution_role(input.step, batch, settings),
        resource_requirements: requirements,
        environment,
        secrets: input.secrets.clone(),
        linux_parameters: linux,
        fargate_platform_configuration: fargate.then(|| FargatePlatformConfiguration {
            platform_version: "LATEST".into(),
        }),
        network_configuration: fargate.then(|| NetworkConfiguration {
            assign_public_ip: "ENABLED".into(),
        }),
    }
}

/// vCPUs as Batch expects them: whole numbers without a fraction, Fargate's fractions as is.
fn format_cpu(cpu: f64) -> String {
    if cpu.fract() == 0.0 {
        format!("{}", cpu as i64)
    } else {
        format!("{cpu}")
    }
}

/// Shared memory, swap, tmpfs and Neuron devices; a tmpfs with `tempdir` also sets the
/// temp-dir variables so libraries write scratch files to memory.
fn linux_parameters(batch: &BatchSpec, environment: &mut Vec<KeyValue>) -> Option<LinuxParameters> {
    let mut linux = LinuxParameters {
        shared_memory_size: batch.shared_memory,
        max_swap: batch.max_swap,
        swappiness: batch.swappiness,
        ..LinuxParameters::default()
    };
    if let Some(tmpfs) = &batch.tmpfs {
        let Tmpfs {
            size,
            path,
            tempdir,
        } = tmpfs;
        let path = path.clone().unwrap_or_else(|| DEFAULT_TMPFS_PATH.into());
        // Metaflow's default tmpfs size: half of the job's memory.
        let size = size.unwrap_or_else(|| batch.memory.unwrap_or(DEFAULT_MEMORY_MIB) / 2);
        linux.tmpfs.push(TmpfsMount {
            container_path: path.clone(),
            size,
            mount_options: vec!["rw".into(), "nosuid".into(), "nodev".into()],
        });
        if tempdir.unwrap_or(true) {
            for name in ["FLOWLINE_TEMPDIR", "TMPDIR"] {
                environment.push(KeyValue {
                    name: name.into(),
                    value: path.clone(),
                });
            }
        }
    }
    let neuron_units = batch.inferentia.or(batch.trainium).unwrap_or(0);
    for index in 0..neuron_units.max(0) {
        let device = format!("{NEURON_DEVICE_PREFIX}{index}");
        linux.devices.push(Device {
            host_path: device.clone(),
            container_path: device,
            permissions: vec!["READ".into(), "WRITE".into()],
        });
    }
    (linux != LinuxParameters::default()).then_some(linux)
}

/// Batch's attempts count the first try: `retry.times` retries make `times + 1` attempts.
fn retry_strategy(retry: &Retry) -> RetryStrategy {
    RetryStrategy {
        attempts: retry.times + 1,
        evaluate_on_exit: retry
            .evaluate_on_exit
            .iter()
            .map(|rule| EvaluateOnExit {
                on_exit_code: rule.on_exit_code.clone(),
                on_reason: rule.on_reason.clone(),
                on_status_reason: rule.on_status_reason.clone(),
                action: match rule.action {
                    RetryAction::Retry => "RETRY",
                    RetryAction::Exit => "EXIT",
                }
                .into(),
            })
            .collect(),
    }
}
