//! The custom resources of group `flowline.io`, version `v1alpha1`: [`Flow`], [`Run`] and
//! [`Schedule`].
//!
//! Types only: serde, schemars and the kube derive, no I/O and no AWS types. Whatever the API
//! server can check is in the schema (bounds, patterns, enums, list keys) or in CEL rules
//! (`x-kubernetes-validations`), so a bad manifest is rejected at `kubectl apply` with a message
//! that names the field; rules that need more than one object (the graph of a Flow, a Run's
//! parameters against its Flow's) are checked by the controller.

mod batch;
mod common;
mod flow;
mod run;
mod schedule;
mod secret;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use batch::{BatchSpec, Platform, Tmpfs};
pub use common::{
    FlowRef, MAX_TAGS, ParameterValues, Tags, condition, find_condition, is_condition_true,
};
pub use flow::{
    COMBINED_RULE_SUFFIX, Catch, Datastore, DeletionPolicy, EnvVar, FLOW_NAME_MAX_LEN, Flow,
    FlowSpec, FlowStatus, Foreach, JobDefinitionRef, MAX_STEPS, Parallel, Parameter, ParameterType,
    ResolvedSecret, Retry, RetryAction, RetryRule, ServerSideEncryption, Step,
};
pub use run::{
    Artifact, EXECUTION_ARN_ANNOTATION, ForeachStatus, MAX_FOREACH_TASKS_READ,
    MAX_LISTED_ARTIFACTS, RUN_NAME_MAX_LEN, ResumeFrom, Run, RunOrigin, RunPhase, RunSpec,
    RunStatus, SCHEDULE_LABEL, StepPhase, StepStatus,
};
pub use schedule::{
    EventTrigger, S3Trigger, SCHEDULE_NAME_MAX_LEN, Schedule, ScheduleSpec, ScheduleStatus,
    ScheduledRun,
};
pub use secret::{SecretSpec, SecretType};

/// API group of every kind.
pub const GROUP: &str = "flowline.io";

/// API version of every kind.
pub const VERSION: &str = "v1alpha1";

/// Annotation that releases a deleted Flow's, Run's or Schedule's finalizer without cleaning
/// up AWS (`"true"`): for when AWS refuses the cleanup (a missing permission) and the
/// resources are to be left in place, or removed by hand.
pub const SKIP_CLEANUP_ANNOTATION: &str = "flowline.io/skip-cleanup";

/// Finalizer the controller puts on every resource, to remove what it materialized in AWS
/// before the resource goes away.
pub const FINALIZER: &str = "flowline.io/cleanup";

/// How to regenerate the checked-in CRDs; printed at the top of the file and by the test that
/// keeps it in sync.
pub const CRDS_REGENERATE_COMMAND: &str = "cargo run -- crds > crds/flowline.io_crds.yaml";

/// The CustomResourceDefinitions of Flow, Run and Schedule.
///
/// Descriptions come from the doc comments of the types, reflowed so that each paragraph is
/// one line: `kubectl explain` wraps text to the terminal itself.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        reflow_descriptions(Flow::crd()),
        reflow_descriptions(Run::crd()),
        reflow_descriptions(Schedule::crd()),
    ]
}

fn reflow_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = reflow(text);
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

/// Joins the lines of each paragraph (paragraphs are separated by a blank line).
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The three CRDs as one multi-document YAML stream, as checked in at
/// `crds/flowline.io_crds.yaml`.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = format!(
        "# Generated from the types in src/api by `{CRDS_REGENERATE_COMMAND}`; do not edit.\n"
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
