//! Runs for executions that Flowline did not start itself (a Schedule's rule, the console, the
//! CLI), so `kubectl get flrun` is the one list of a Flow's runs. The pure parts: which
//! executions to adopt, the Run that stands for one, and the per-Flow watermark.
//!
//! A Run's own execution is named `<run>-<run uid>`; anything else on the Flow's state
//! machine is adopted. The watermark (an annotation on the Flow: the start time of the newest
//! execution already adopted) keeps executions whose Runs were later deleted by the history
//! limits from coming back.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::api::{EXECUTION_ARN_ANNOTATION, Flow, FlowRef, Run, RunSpec, SCHEDULE_LABEL};
use crate::aws::sfn::ListedExecution;
use crate::compile::naming;

/// Annotation on a Flow: the start time (ms since the epoch) of the newest execution adopted.
pub const WATERMARK_ANNOTATION: &str = "flowline.io/executions-adopted-until";

/// Label on an adopted Run: `schedule` or `external`.
pub const ORIGIN_LABEL: &str = "flowline.io/origin";

/// Label on every Run Flowline creates: the Flow's name.
pub const FLOW_LABEL: &str = "flowline.io/flow";

/// Whether `name` is a Run's own execution name: anything followed by `-` and a UUID.
pub fn is_run_execution(name: &str) -> bool {
    const UUID_LEN: usize = 36;
    let Some(split) = name.len().checked_sub(UUID_LEN + 1) else {
        return false;
    };
    // Names may hold any Unicode: split only where a character boundary is.
    let (Some(head), Some(tail)) = (name.get(..split), name.get(split..)) else {
        return false;
    };
    match tail.strip_prefix('-') {
        Some(uuid) => !head.is_empty() && is_uuid(uuid),
        None => false,
    }
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// The watermark of a Flow: executions that started before it were handled already. A Flow
/// without one adopts executions from its creation on.
pub fn watermark(flow: &Flow) -> i64 {
    flow.annotations()
        .get(WATERMARK_ANNOTATION)
        .and_then(|value| value.parse().ok())
        .or_else(|| {
            flow.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
        })
        .unwrap_or(0)
}

/// The executions to adopt, oldest first: not a Run's own.
pub fn to_adopt(listed: &[ListedExecution]) -> Vec<&ListedExecution> {
    let mut adopt: Vec<&ListedExecution> = listed
        .iter()
        .filter(|e| !is_run_execution(&e.name))
        .collect();
    adopt.sort_by_key(|e| e.start_ms);
    adopt
}

/// The Run that tracks `execution` of `flow`: named after the Flow and a hash of the
/// execution's ARN (so creating it twice is harmless), labeled with its origin and, for a
/// Schedule's execution, the Schedule.
pub fn adopted_run(flow: &Flow, execution: &ListedExecution, schedule: Option<&str>) -> Run {
    // The input is anyone's to write: a name that cannot be a Schedule's is no Schedule.
    let schedule = schedule.filter(|name| is_schedule_name(name));
    let hash = naming::short_hash(&execution.arn, 10);
    let room = crate::api::RUN_NAME_MAX_LEN - hash.len() - 1;
    let lead: String = flow.name_any().chars().take(room).collect();
    let name = format!("{}-{hash}", lead.trim_end_matches('-'));
    let mut labels = BTreeMap::from([
        (FLOW_LABEL.to_owned(), flow.name_any()),
        (
            ORIGIN_LABEL.to_owned(),
            if schedule.is_some() {
                "schedule"
            } else {
                "external"
            }
            .to_owned(),
        ),
    ]);
    if let Some(schedule) = schedule {
        labels.insert(SCHEDULE_LABEL.to_owned(), schedule.to_owned());
    }
    Run {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: flow.namespace(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                EXECUTION_ARN_ANNOTATION.to_owned(),
                execution.arn.clone(),
            )])),
            ..ObjectMeta::default()
        },
        spec: RunSpec {
            flow_ref: FlowRef {
                name: flow.name_any(),
            },
            parameters: Default::default(),
            stop: false,
            resume_from: None,
        },
        status: None,
    }
}

/// Whether `name` can be a Schedule's name (a DNS label of at most 40 characters), and so a
/// label value.
fn is_schedule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= crate::api::SCHEDULE_NAME_MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FlowSpec;

    fn listed(name: &str, start_ms: i64) -> ListedExecution {
        ListedExecution {
            arn: format!("arn:aws:states:us-east-1:1:execution:m:{name}"),
            name: name.into(),
            start_ms,
        }
    }

    #[test]
    fn own_executions_are_told_apart() {
        let uid = "3f1c2b9e-8d7a-4c55-9e1f-0a2b3c4d5e6f";
        assert!(is_run_execution(&naming::execution_name("nightly", uid)));
        assert!(
            !is_run_execution(uid),
            "a bare UUID is a console default name"
        );
        assert!(!is_run_execution(&format!("s3_{uid}")));
        assert!(!is_run_execution("manual-retry"));
        assert!(!is_run_execution(&format!("x-{}", uid.to_uppercase())));
        // A multi-byte character where the UUID would start is no panic.
        assert!(!is_run_execution(&format!("ü{}", "a".repeat(36))));
        assert!(!is_run_execution(&format!("{}ü", "a".repeat(36))));
    }

    #[test]
    fn adoption_skips_own_executions_and_runs_oldest_first() {
        let uid = "3f1c2b9e-8d7a-4c55-9e1f-0a2b3c4d5e6f";
        let executions = vec![
            listed("console-2", 30),
            listed(&format!("run-{uid}"), 20),
            listed("console-1", 10),
        ];
        let names: Vec<&str> = to_adopt(&executions)
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, vec!["console-1", "console-2"]);
    }

    #[test]
    fn adopted_runs_are_named_stably_and_labeled() {
        let mut flow = Flow::new(
            &"f".repeat(70),
            serde_json::from_value::<FlowSpec>(
                serde_json::json!({"steps": [{"name": "start", "image": "busybox"}]}),
            )
            .unwrap(),
        );
        flow.metadata.namespace = Some("team".into());
        let execution = listed("console-1", 10);
        let run = adopted_run(&flow, &execution, Some("nightly"));
        let again = adopted_run(&flow, &execution, Some("nightly"));
        assert_eq!(run.metadata.name, again.metadata.name);
        assert!(run.name_any().len() <= crate::api::RUN_NAME_MAX_LEN);
        assert_eq!(
            run.labels().get(SCHEDULE_LABEL).map(String::as_str),
            Some("nightly")
        );
        assert_eq!(
            run.labels().get(ORIGIN_LABEL).map(String::as_str),
            Some("schedule")
        );
        assert_eq!(
            run.annotations().get(EXECUTION_ARN_ANNOTATION),
            Some(&execution.arn)
        );
        let external = adopted_run(&flow, &listed("console-2", 20), None);
        assert_eq!(
            external.labels().get(ORIGIN_LABEL).map(String::as_str),
            Some("external")
        );
        assert_ne!(external.metadata.name, run.metadata.name);
        let forged = adopted_run(&flow, &listed("console-3", 30), Some("Not A Label!"));
        assert_eq!(
            forged.labels().get(ORIGIN_LABEL).map(String::as_str),
            Some("external")
        );
        assert!(!forged.labels().contains_key(SCHEDULE_LABEL));
    }

    #[test]
    fn watermark_falls_back_to_creation() {
        let mut flow = Flow::new(
            "f",
            serde_json::from_value::<FlowSpec>(
                serde_json::json!({"steps": [{"name": "start", "image": "busybox"}]}),
            )
            .unwrap(),
        );
        assert_eq!(watermark(&flow), 0);
        flow.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(5_000).unwrap(),
            ));
        assert_eq!(watermark(&flow), 5_000);
        flow.annotations_mut()
            .insert(WATERMARK_ANNOTATION.into(), "7000".into());
        assert_eq!(watermark(&flow), 7_000);
    }
}
