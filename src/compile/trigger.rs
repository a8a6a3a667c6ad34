//! What a Schedule becomes besides its rule: the inputs its executions get, the event pattern
//! of an S3 trigger, and the small state machine that turns each event — an S3 object created
//! or a cron/rate firing — into exactly one execution of the Flow.
//!
//! EventBridge delivers events at least once and cannot name the executions it starts, so a
//! rule that targeted the Flow's state machine directly would start a second run for a
//! redelivered event. The rule targets a per-Schedule trigger state machine instead, which
//! starts the Flow's execution under a name derived from the event's id: Step Functions
//! refuses a second execution of that name, so a duplicate delivery ends there. The start is
//! retried with backoff and jitter on any other error (throttling, a passing outage), and an
//! event the rule cannot deliver at all goes to the Schedule's dead-letter queue.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::S3Trigger;

use super::parameters::TypedParameters;

/// The key of the input that tells which Schedule started an execution; the state machine
/// ignores it, the controller reads it to label the execution's Run.
pub const ORIGIN_KEY: &str = "flowline";

/// Prefix of the execution names the trigger state machine gives: `s3_<event id>`. The `_`
/// keeps them apart from a Run's own executions (`<run>-<uid>`).
pub const S3_EXECUTION_PREFIX: &str = "s3_";

/// Prefix of the execution names the trigger state machine gives a cron or rate firing:
/// `schedule_<event id>`.
pub const SCHEDULED_EXECUTION_PREFIX: &str = "schedule_";

/// Paths of a scheduled event that the rule hands to the trigger state machine.
pub fn scheduled_input_paths() -> BTreeMap<String, String> {
    BTreeMap::from([("eventId".to_owned(), "$.id".to_owned())])
}

/// The rule's input template for a cron or rate Schedule.
pub const SCHEDULED_INPUT_TEMPLATE: &str = r#"{"eventId": <eventId>}"#;

/// What starts a Schedule's executions, which decides their names and what they receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// An S3 object created: the execution gets the bucket and key.
    S3,
    /// A cron or rate rule firing.
    Scheduled,
}

/// Paths of the S3 event that the rule hands to the trigger state machine.
pub fn s3_input_paths() -> BTreeMap<String, String> {
    [
        ("eventId", "$.id"),
        ("bucket", "$.detail.bucket.name"),
        ("key", "$.detail.object.key"),
    ]
    .into_iter()
    .map(|(name, path)| (name.to_owned(), path.to_owned()))
    .collect()
}

/// The rule's input template for an S3 trigger (EventBridge quotes string values itself).
pub const S3_INPUT_TEMPLATE: &str = r#"{"eventId": <eventId>, "bucket": <bucket>, "key": <key>}"#;

/// The input of an execution a cron or rate rule starts.
pub fn scheduled_input(schedule: &str, parameters: &TypedParameters) -> Value {
    json!({"parameters": parameters, ORIGIN_KEY: {"schedule": schedule}})
}

/// The Schedule named in an execution's input, if a Schedule started it.
pub fn schedule_of_input(input: &str) -> Option<String> {
    let value: Value = serde_json::from_str(input).ok()?;
    value
        .get(ORIGIN_KEY)?
        .get("schedule")?
        .as_str()
        .map(str::to_owned)
}

/// The event pattern of S3 "Object Created" events in `trigger`'s bucket and key range.
pub fn s3_event_pattern(trigger: &S3Trigger) -> Value {
    let mut detail = json!({"bucket": {"name": [trigger.bucket]}});
    let key = match (&trigger.prefix, &trigger.suffix) {
        (None, None) => None,
        (Some(prefix), None) => Some(json!({"prefix": prefix})),
        (None, Some(suffix)) => Some(json!({"suffix": suffix})),
        // Two matchers in one array would mean "or"; a wildcard pattern means "and".
        (Some(prefix), Some(suffix)) => Some(json!({
            "wildcard": format!("{}*{}", escape_wildcard(prefix), escape_wildcard(suffix))
        })),
    };
    if let (Some(key), Some(object)) = (key, detail.as_object_mut()) {
        object.insert("object".into(), json!({"key": [key]}));
    }
    json!({
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": detail,
    })
}

/// EventBridge wildcard patterns treat `*` as a wildcard and `\` as the escape.
fn escape_wildcard(text: &str) -> String {
    text.replace('\\', "\\\\").replace('*', "\\*")
}

/// The error Step Functions raises when an execution of that name exists already.
const ALREADY_EXISTS: &str = "StepFunctions.ExecutionAlreadyExistsException";

/// How the trigger state machine retries a start that failed for another reason: 2 s doubling
/// to at most 60 s, with full jitter, 6 times (about 3 minutes in all), so throttling or a
/// passing outage does not lose a firing.
fn start_retry() -> Value {
    json!([
        // Listed first so it matches before States.ALL: a name taken is the answer, never
        // retried.
        {"ErrorEquals": [ALREADY_EXISTS], "MaxAttempts": 0},
        {
            "ErrorEquals": ["States.ALL"],
            "IntervalSeconds": 2,
            "BackoffRate": 2.0,
            "MaxAttempts": 6,
            "MaxDelaySeconds": 60,
            "JitterStrategy": "FULL"
        }
    ])
}

/// The trigger state machine of a Schedule: start the Flow's execution named after the event
/// (with the Schedule's parameters, and for S3 the object's bucket and key), retrying other
/// errors; a name already taken means the event was delivered before, which is not an error.
pub fn dispatcher_definition(
    flow_machine_arn: &str,
    schedule: &str,
    parameters: &TypedParameters,
    firing: Firing,
) -> Value {
    let (comment, prefix, input) = match firing {
        Firing::S3 => (
            "Generated by Flowline: one execution of the Flow per S3 event; edits are overwritten",
            S3_EXECUTION_PREFIX,
            json!({
                "parameters": parameters,
                "trigger": {"bucket.$": "$.bucket", "key.$": "$.key"},
                ORIGIN_KEY: {"schedule": schedule}
            }),
        ),
        Firing::Scheduled => (
            "Generated by Flowline: one execution of the Flow per schedule firing; edits are overwritten",
            SCHEDULED_EXECUTION_PREFIX,
            scheduled_input(schedule, parameters),
        ),
    };
    json!({
        "Comment": comment,
        "StartAt": "StartFlow",
        "States": {
            "StartFlow": {
                "Type": "Task",
                "Resource": "arn:aws:states:::states:startExecution",
                "Parameters": {
                    "StateMachineArn": flow_machine_arn,
                    "Name.$": format!("States.Format('{prefix}{{}}', $.eventId)"),
                    "Input": input
                },
                "Retry": start_retry(),
                "Catch": [{
                    "ErrorEquals": [ALREADY_EXISTS],
                    "Next": "AlreadyStarted"
                }],
                "End": true
            },
            "AlreadyStarted": {
                "Type": "Succeed",
                "Comment": "A redelivered event: its execution was started before"
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(prefix: Option<&str>, suffix: Option<&str>) -> S3Trigger {
        S3Trigger {
            bucket: "landing".into(),
            prefix: prefix.map(str::to_owned),
            suffix: suffix.map(str::to_owned),
        }
    }

    #[test]
    fn s3_patterns_filter_bucket_prefix_and_suffix() {
        let only_bucket = s3_event_pattern(&trigger(None, None));
        assert_eq!(
            only_bucket["detail"],
            json!({"bucket": {"name": ["landing"]}})
        );
        assert_eq!(only_bucket["detail-type"], json!(["Object Created"]));
        let prefix = s3_event_pattern(&trigger(Some("in/"), None));
        assert_eq!(
            prefix["detail"]["object"]["key"],
            json!([{"prefix": "in/"}])
        );
        let suffix = s3_event_pattern(&trigger(None, Some(".csv")));
        assert_eq!(
            suffix["detail"]["object"]["key"],
            json!([{"suffix": ".csv"}])
        );
        let both = s3_event_pattern(&trigger(Some("in/*x"), Some(".csv")));
        assert_eq!(
            both["detail"]["object"]["key"],
            json!([{"wildcard": "in/\\*x*.csv"}])
        );
    }

    #[test]
    fn origin_round_trips_through_the_input() {
        let parameters = TypedParameters::from([("alpha".to_owned(), json!(0.5))]);
        let input = scheduled_input("nightly", &parameters).to_string();
        assert_eq!(schedule_of_input(&input).as_deref(), Some("nightly"));
        assert_eq!(schedule_of_input(r#"{"parameters": {}}"#), None);
        assert_eq!(schedule_of_input("not json"), None);
    }

    #[test]
    fn dispatcher_names_executions_after_the_event() {
        let definition = dispatcher_definition(
            "arn:aws:states:us-east-1:1:stateMachine:f",
            "on-upload",
            &BTreeMap::new(),
            Firing::S3,
        );
        let start = &definition["States"]["StartFlow"]["Parameters"];
        assert_eq!(start["Name.$"], json!("States.Format('s3_{}', $.eventId)"));
        assert_eq!(start["Input"]["flowline"]["schedule"], json!("on-upload"));
        crate::compile::asl_check::check(&definition).unwrap();
    }

    #[test]
    fn scheduled_firings_start_one_named_execution_with_the_schedule_input() {
        let parameters = TypedParameters::from([("alpha".to_owned(), json!(0.5))]);
        let definition = dispatcher_definition(
            "arn:aws:states:us-east-1:1:stateMachine:f",
            "nightly",
            &parameters,
            Firing::Scheduled,
        );
        let start = &definition["States"]["StartFlow"];
        assert_eq!(
            start["Parameters"]["Name.$"],
            json!("States.Format('schedule_{}', $.eventId)")
        );
        assert_eq!(
            start["Parameters"]["Input"],
            scheduled_input("nightly", &parameters)
        );
        crate::compile::asl_check::check(&definition).unwrap();
    }

    #[test]
    fn starts_retry_with_jitter_except_when_the_name_is_taken() {
        for firing in [Firing::S3, Firing::Scheduled] {
            let definition = dispatcher_definition("arn:m", "s", &BTreeMap::new(), firing);
            let retry = definition["States"]["StartFlow"]["Retry"]
                .as_array()
                .unwrap()
                .clone();
            // Retriers are matched in order: the taken name is never retried, then caught.
            assert_eq!(retry[0]["ErrorEquals"], json!([ALREADY_EXISTS]));
            assert_eq!(retry[0]["MaxAttempts"], json!(0));
            assert_eq!(retry[1]["ErrorEquals"], json!(["States.ALL"]));
            assert_eq!(retry[1]["JitterStrategy"], json!("FULL"));
            assert!(retry[1]["MaxAttempts"].as_u64().unwrap() >= 3);
            assert_eq!(
                definition["States"]["StartFlow"]["Catch"][0]["ErrorEquals"],
                json!([ALREADY_EXISTS])
            );
        }
    }
}
