//! The `Schedule` kind: when a Flow runs by itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{FlowRef, ParameterValues, conditions_schema, parameter_values_schema};

/// Longest Schedule name: EventBridge rule names, derived from the namespace, the Schedule's
/// name and a hash of its UID, allow 64 characters.
pub const SCHEDULE_NAME_MAX_LEN: usize = 40;

/// The desired state of a Schedule: which Flow to start, when, and with which parameters.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flowline.io",
    version = "v1alpha1",
    kind = "Schedule",
    namespaced,
    status = "ScheduleStatus",
    shortname = "flsched",
    category = "flowline",
    derive = "PartialEq",
    doc = "A Schedule starts executions of a Flow by itself: on a cron schedule, at a fixed rate, or when objects are created in an S3 bucket. The controller materializes it as an EventBridge rule that targets the Flow's state machine, and creates a Run for each execution the rule starts.",
    selectable = ".spec.flowRef.name",
    printcolumn(
        name = "Flow",
        type_ = "string",
        json_path = ".spec.flowRef.name",
        description = "The Flow this Schedule starts"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec['cron','rate','event.s3.bucket']",
        description = "The cron expression, the rate, or the S3 bucket whose new objects start runs"
    ),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether the rule is disabled"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the EventBridge rule is up to date"
    ),
    printcolumn(
        name = "Last run",
        type_ = "date",
        json_path = ".status.lastRunTime",
        description = "When the last execution started"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("self.metadata.name.size() <= 40")
        .message("metadata.name of a Schedule must be at most 40 characters, so that the EventBridge rule name derived from it fits"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name of a Schedule must be a DNS label (lower-case letters, digits and '-')"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.cron) || has(self.rate) || has(self.event)")
        .message("one of spec.cron, spec.rate or spec.event is required")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("(has(self.cron) ? 1 : 0) + (has(self.rate) ? 1 : 0) + (has(self.event) ? 1 : 0) <= 1")
        .message("spec.cron, spec.rate and spec.event are mutually exclusive: set only one")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.event) == has(oldSelf.event)")
        .message("a Schedule cannot switch between an event trigger and a cron or rate schedule: create a new Schedule instead")
        .reason(Reason::FieldValueForbidden),
)]
pub struct ScheduleSpec {
    /// The Flow to start, in the Schedule's namespace.
    pub flow_ref: FlowRef,

    /// A five-field cron expression (minute, hour, day of month, month, day of week), e.g.
    /// `0 3 * * *`, or one of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily` and
    /// `@hourly`. Times are UTC, as EventBridge rules only run in UTC. The controller
    /// translates it to EventBridge's six-field form and reports an expression EventBridge
    /// cannot express (e.g. both a day of month and a day of week) as Stalled. Exactly one of
    /// `cron`, `rate` and `event` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        pattern(
            r"^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9A-Za-z*?/,#-]+( [0-9A-Za-z*?/,#-]+){4})$"
        )
    )]
    pub cron: Option<String>,

    /// A fixed rate: a positive whole number and a unit, `minute(s)`, `hour(s)` or `day(s)`,
    /// singular for 1 and plural otherwise, e.g. `1 hour` or `15 minutes`. Exactly one of
    /// `cron`, `rate` and `event` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        pattern(r"^[1-9][0-9]* (minute|minutes|hour|hours|day|days)$")
    )]
    #[x_kube(
        validation = Rule::new("self.startsWith('1 ') ? !self.endsWith('s') : self.endsWith('s')")
            .message("spec.rate must use a singular unit for 1 (\"1 hour\") and a plural one otherwise (\"5 hours\")")
    )]
    pub rate: Option<String>,

    /// Starts a run for each matching event. Exactly one of `cron`, `rate` and `event` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventTrigger>,

    /// Set to true to disable the EventBridge rule without deleting it; executions already
    /// running continue.
    #[serde(default)]
    pub suspend: bool,

    /// Values of the Flow's parameters for every run, by name, as strings; checked like a
    /// Run's. Parameters left out take their default.
    #[serde(default, skip_serializing_if = "ParameterValues::is_empty")]
    #[schemars(schema_with = "parameter_values_schema")]
    pub parameters: ParameterValues,
}

/// An event that starts a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct EventTrigger {
    /// Objects created in an S3 bucket. The bucket must send events to EventBridge (bucket
    /// notification setting "Amazon EventBridge: On"). Each task sees the bucket and key of
    /// the object in `FLOWLINE_TRIGGER_S3_BUCKET` and `FLOWLINE_TRIGGER_S3_KEY`.
    pub s3: S3Trigger,
}

/// A filter on S3 "Object Created" events.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct S3Trigger {
    /// Name of the bucket.
    #[schemars(
        length(min = 3, max = 63),
        pattern(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    )]
    pub bucket: String,

    /// Only keys that start with this prefix, e.g. `incoming/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub prefix: Option<String>,

    /// Only keys that end with this suffix, e.g. `.csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub suffix: Option<String>,
}

/// The observed state of a Schedule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The `metadata.generation` that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Reconciling` and `Stalled`, as kstatus reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// ARN of the EventBridge rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_arn: Option<String>,

    /// The next few times a `cron` or `rate` schedule fires, soonest first; empty for an
    /// `event` schedule and while suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_fire_times: Vec<Time>,

    /// When the last execution started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,

    /// The latest Runs created for the Schedule's executions, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_runs: Vec<ScheduledRun>,
}

/// A Run created for one of a Schedule's executions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRun {
    /// Name of the Run, in the Schedule's namespace.
    pub name: String,
    /// When the execution started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
}
