//! From the description of a Metaflow flow (what `graph.py` prints) to a Flow and its
//! Schedules. Pure: no I/O, no Python.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ObjectMeta;
use serde::Deserialize;

use crate::api::{
    BatchSpec, EnvVar, EventTrigger, FLOW_NAME_MAX_LEN, Flow, FlowRef, FlowSpec, Foreach, Parallel,
    Parameter, Retry, S3Trigger, Schedule, ScheduleSpec, Step,
};

/// Annotation naming the Metaflow flow (its FlowSpec class) a Flow was converted from; the
/// Metaflow pathspec of a run is `<class>/fl-<execution name>`.
pub const FLOW_ANNOTATION: &str = "flowline.io/metaflow-flow";
/// Annotation holding the code package a Flow's steps run.
pub const CODE_ANNOTATION: &str = "flowline.io/metaflow-code";
/// The prefix of Metaflow run ids: `fl-<execution name>`.
pub const RUN_PREFIX: &str = "fl-";

/// The flow as `graph.py` describes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlowDoc {
    /// The FlowSpec class.
    pub flow: String,
    /// The flow file's name, relative to the code package's root.
    pub flow_file: String,
    pub steps: Vec<StepDoc>,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub schedule: Option<ScheduleDoc>,
    #[serde(default)]
    pub trigger: Option<EventTrigger>,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One node of Metaflow's graph and its decorators, mapped.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepDoc {
    pub name: String,
    /// How the entrypoint finds the step's inputs: start, linear, foreach-body, foreach-join,
    /// parallel, parallel-join.
    pub kind: String,
    #[serde(default)]
    pub next: Vec<String>,
    #[serde(default)]
    pub parents: Vec<String>,
    #[serde(default)]
    pub join: bool,
    #[serde(default)]
    pub foreach: bool,
    #[serde(default)]
    pub user_code_retries: i32,
    /// Every retry Batch makes: `@retry`'s and `@catch`'s fallback attempt.
    #[serde(default)]
    pub retries: i32,
    #[serde(default)]
    pub batch: BatchSpec,
    /// A join's split step (the foreach or the step before `@parallel`).
    #[serde(default)]
    pub split: Option<String>,
    /// A split's `num_parallel`.
    #[serde(default)]
    pub num_parallel: Option<i32>,
    /// A `@parallel` step's node count.
    #[serde(default)]
    pub num_nodes: Option<i32>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ScheduleDoc {
    pub cron: String,
}

/// How a step's container gets the flow's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// A package in S3 (`s3://…/<sha256>.tgz`) that the step fetches before it runs.
    Package(String),
    /// Baked into the image at this folder, with `flowline_task` installed.
    InImage(String),
}

/// What the converted Flow is called and where its code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub name: String,
    pub namespace: Option<String>,
    pub image: Option<String>,
    pub code: Code,
    /// Metaflow's metadata service, when runs should be recorded there too.
    pub metadata_service: Option<String>,
}

/// The manifests of a converted flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub flow: Flow,
    pub schedules: Vec<Schedule>,
    pub warnings: Vec<String>,
}

/// A flow that cannot be converted: every reason, each naming what is at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the flow cannot be converted:\n  - {}", .0.join("\n  - "))]
pub struct Unconvertible(pub Vec<String>);

/// Fetches the code package with boto3 (which Metaflow depends on) and runs the entrypoint in
/// it: `python3 -c BOOTSTRAP <package uri> <entrypoint arguments>`. Path-style addressing and
/// retries follow Flowline's S3 settings, as the task runtime's do.
pub const BOOTSTRAP: &str = r#"import time
begun = time.monotonic()
import io, os, runpy, sys, tarfile, boto3
from botocore.config import Config
url, args = sys.argv[1], sys.argv[2:]
bucket, _, key = url[len("s3://"):].partition("/")
endpoint = os.environ.get("FLOWLINE_S3_ENDPOINT") or None
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"} if endpoint else {}, retries={"max_attempts": int(os.environ.get("FLOWLINE_S3_RETRY_COUNT") or 7) + 1, "mode": "standard"}))
code = os.path.abspath("flowline-code")
with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
    tar.extractall(code, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
print("flowline metaflow: code package %s fetched in %.2fs" % (url, time.monotonic() - begun), file=sys.stderr)
sys.argv = [os.path.join(code, "_flowline", "entrypoint.py"), "--code-dir", code] + args
runpy.run_path(sys.argv[0], run_name="__main__")
"#;

/// The Flow name derived from a FlowSpec class: `HelloBatchFlow` -> `hello-batch-flow`.
pub fn default_name(class: &str) -> String {
    let mut name = String::new();
    let mut previous_lower = false;
    for c in class.chars() {
        if c.is_ascii_uppercase() {
            if previous_lower {
                name.push('-');
            }
            name.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else if c.is_ascii_alphanumeric() {
            name.push(c);
            previous_lower = true;
        } else {
            if !name.ends_with('-') && !name.is_empty() {
                name.push('-');
            }
            previous_lower = false;
        }
    }
    name.trim_matches('-').to_owned()
}

fn valid_step_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_flow_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FLOW_NAME_MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The entrypoint's arguments for one step.
fn entrypoint_args(doc: &FlowDoc, step: &StepDoc, steps: &BTreeMap<&str, &StepDoc>) -> Vec<String> {
    let mut args = vec![
        "--flow-file".to_owned(),
        doc.flow_file.clone(),
        "--flow".to_owned(),
        doc.flow.clone(),
        "--step".to_owned(),
        step.name.clone(),
        "--kind".to_owned(),
        step.kind.clone(),
    ];
    if !step.parents.is_empty() {
        args.push("--parents".to_owned());
        args.push(step.parents.join(","));
    }
    if let Some(split) = &step.split {
        args.push("--split".to_owned());
        args.push(split.clone());
        if step.kind == "parallel-join" {
            let nodes = steps
                .get(split.as_str())
                .and_then(|split| split.num_parallel)
                .unwrap_or_default();
            args.push("--num-parallel".to_owned());
            args.push(nodes.to_string());
        }
    }
    if step.foreach {
        args.push("--foreach".to_owned());
    }
    if step.user_code_retries > 0 {
        args.push("--user-code-retries".to_owned());
        args.push(step.user_code_retries.to_string());
    }
    args
}

fn step_command(code: &Code, args: Vec<String>) -> (Vec<String>, Vec<String>) {
    match code {
        Code::Package(uri) => (
            vec!["python3".to_owned(), "-c".to_owned(), BOOTSTRAP.to_owned()],
            std::iter::once(uri.clone()).chain(args).collect(),
        ),
        Code::InImage(dir) => (
            vec![
                "python3".to_owned(),
                "-m".to_owned(),
                "flowline_task.metaflow.entrypoint".to_owned(),
            ],
            ["--code-dir".to_owned(), dir.clone()]
                .into_iter()
                .chain(args)
                .collect(),
        ),
    }
}

fn convert_step(
    doc: &FlowDoc,
    step: &StepDoc,
    steps: &BTreeMap<&str, &StepDoc>,
    options: &Options,
) -> Step {
    let (command, args) = step_command(&options.code, entrypoint_args(doc, step, steps));
    let mut env: Vec<EnvVar> = step
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    if let Some(service) = &options.metadata_service {
        env.push(EnvVar {
            name: "METAFLOW_SERVICE_URL".into(),
            value: service.clone(),
        });
    }
    Step {
        name: step.name.clone(),
        command,
        args,
        env,
        next: step.next.clone(),
        join: step.join,
        foreach: step.foreach.then(Foreach::default),
        parallel: (step.kind == "parallel").then(|| Parallel {
            num_nodes: step.num_nodes.unwrap_or(1),
        }),
        batch: (step.batch != BatchSpec::default()).then(|| step.batch.clone()),
        retry: (step.retries > 0).then(|| Retry {
            times: step.retries,
            evaluate_on_exit: Vec::new(),
        }),
        timeout_seconds: step.timeout_seconds,
        ..Step::default()
    }
}

/// The Flow (and Schedules) of a described flow, or every reason it cannot be converted.
pub fn convert(doc: &FlowDoc, options: &Options) -> Result<Converted, Unconvertible> {
    let mut errors = doc.errors.clone();
    if !valid_flow_name(&options.name) {
        errors.push(format!(
            "the Flow name {:?} is not a DNS label of at most {FLOW_NAME_MAX_LEN} characters: pass --name",
            options.name
        ));
    }
    for step in &doc.steps {
        if !valid_step_name(&step.name) {
            errors.push(format!(
                "step {}: Flowline step names are lower-case identifiers of at most 63 characters",
                step.name
            ));
        }
    }
    let upper: BTreeSet<String> = doc
        .parameters
        .iter()
        .map(|p| p.name.to_ascii_uppercase())
        .collect();
    if upper.len() != doc.parameters.len() {
        errors.push(
            "parameters differ only in letter case (or in '-' and '_'), which Flowline's task variables cannot tell apart".to_owned(),
        );
    }
    if !errors.is_empty() {
        return Err(Unconvertible(errors));
    }
    let steps: BTreeMap<&str, &StepDoc> = doc.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut annotations = BTreeMap::from([(FLOW_ANNOTATION.to_owned(), doc.flow.clone())]);
    if let Code::Package(uri) = &options.code {
        annotations.insert(CODE_ANNOTATION.to_owned(), uri.clone());
    }
    let spec = FlowSpec {
        steps: doc
            .steps
            .iter()
            .map(|step| convert_step(doc, step, &steps, options))
            .collect(),
        batch: options.image.as_ref().map(|image| BatchSpec {
            image: Some(image.clone()),
            ..BatchSpec::default()
        }),
        parameters: doc.parameters.clone(),
        datastore: None,
        timeout_seconds: None,
        max_concurrency: None,
        tags: BTreeMap::new(),
        task_runtime: false,
        deletion_policy: Default::default(),
    };
    let mut flow = Flow::new(&options.name, spec);
    flow.metadata.namespace = options.namespace.clone();
    flow.metadata.annotations = Some(annotations);
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: options.namespace.clone(),
        ..ObjectMeta::default()
    };
    let mut schedules = Vec::new();
    if let Some(schedule) = &doc.schedule {
        schedules.push(Schedule {
            metadata: meta(options.name.clone()),
            spec: ScheduleSpec {
                flow_ref: FlowRef::new(&options.name),
                cron: Some(schedule.cron.clone()),
                ..schedule_spec_default()
            },
            status: None,
        });
    }
    if let Some(trigger) = &doc.trigger {
        let name = format!("{}-on-s3", options.name);
        let name = if name.len() > 40 {
            options.name.clone()
        } else {
            name
        };
        schedules.push(Schedule {
            metadata: meta(name),
            spec: ScheduleSpec {
                flow_ref: FlowRef::new(&options.name),
                event: Some(EventTrigger {
                    s3: S3Trigger {
                        bucket: trigger.s3.bucket.clone(),
                        prefix: trigger.s3.prefix.clone(),
                        suffix: trigger.s3.suffix.clone(),
                    },
                }),
                ..schedule_spec_default()
            },
            status: None,
        });
    }
    Ok(Converted {
        flow,
        schedules,
        warnings: doc.warnings.clone(),
    })
}

fn schedule_spec_default() -> ScheduleSpec {
    ScheduleSpec {
        flow_ref: FlowRef::default(),
        cron: None,
        rate: None,
        event: None,
        suspend: false,
        parameters: BTreeMap::new(),
    }
}

/// The Metaflow pathspec of an execution of a converted Flow (`<class>/fl-<execution>`), for
/// the Run's status; `None` for other Flows.
pub fn metaflow_run(flow: &Flow, execution_name: &str) -> Option<String> {
    let class = flow.metadata.annotations.as_ref()?.get(FLOW_ANNOTATION)?;
    Some(format!("{class}/{RUN_PREFIX}{execution_name}"))
}

/// The manifests as one YAML stream (`---` between documents).
pub fn to_yaml(converted: &Converted) -> Result<String, serde_norway::Error> {
    let mut documents = vec![serde_norway::to_string(&converted.flow)?];
    for schedule in &converted.schedules {
        documents.push(serde_norway::to_string(schedule)?);
    }
    Ok(documents.join("---\n"))
}

#[cfg(test)]
mod tests;
