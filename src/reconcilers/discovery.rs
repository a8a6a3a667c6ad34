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

/// Annotation on a Flow: the executions adopted that started within [`LISTING_MARGIN_MS`] of
/// the watermark, as `<key>@<start ms>` separated by commas (key: [`execution_key`]). Listing
/// looks that far behind the watermark, so without it a restart would adopt again the ones
/// whose Runs were deleted since (by the history limits or by a person).
pub const RECENT_ANNOTATION: &str = "flowline.io/executions-adopted-recent";

/// How far behind its cursor a Flow's executions are listed again: listing is eventually
/// consistent, so an execution may show up after newer ones did.
pub const LISTING_MARGIN_MS: i64 = 60_000;

/// Most executions [`RECENT_ANNOTATION`] remembers (the newest), so a burst cannot grow the
/// Flow's annotations without bound (≈ 25 bytes each).
pub const MAX_RECENT: usize = 2_000;

/// Label on an adopted Run: `schedule` or `external`.
pub const ORIGIN_LABEL: &str = "flowline.io/origin";

/// Label on every Run Flowline creates: the Flow's name.
pub const FLOW_LABEL: &str = "flowline.io/flow";

/// The state machine whose executions discovery should list again because an execution
/// status change event named `execution_arn`: `None` for a Run's own execution (nothing to
/// adopt) and for what is not an execution ARN.
pub fn machine_to_sweep(execution_arn: &str) -> Option<String> {
    let (_, name) = execution_arn.rsplit_once(':')?;
    if is_run_execution(name) {
        return None;
    }
    super::ownership::machine_of_execution(execution_arn)
}

/// How often every Flow's executions are listed. With execution events flowing, an execution
/// started elsewhere announces itself (its machine is swept at once), so the full sweep is
/// only the fallback for a lost event: once per drift interval instead of every `interval`,
/// which at 2,000 Flows and 10 s was 19 ListExecutions per Flow per 300 s drift period.
pub fn full_sweep_interval(
    interval: std::time::Duration,
    drift: std::time::Duration,
    events_ready: bool,
) -> std::time::Duration {
    if events_ready {
        interval.max(drift)
    } else {
        interval
    }
}

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

/// What a Flow's discovery has adopted: everything that started before `until`, except the
/// ones started within the listing margin below it, which `recent` names one by one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adopted {
    pub until: i64,
    /// Execution key → start time (ms).
    pub recent: BTreeMap<String, i64>,
}

/// The key an adopted execution is remembered by: a hash of its ARN (the one its Run's name
/// ends with).
pub fn execution_key(arn: &str) -> String {
    naming::short_hash(arn, 10)
}

impl Adopted {
    /// What a Flow's annotations record (its watermark, the recent executions).
    pub fn of(flow: &Flow) -> Adopted {
        let recent = flow
            .annotations()
            .get(RECENT_ANNOTATION)
            .map(|text| {
                text.split(',')
                    .filter_map(|entry| {
                        let (key, start) = entry.split_once('@')?;
                        Some((key.to_owned(), start.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Adopted {
            until: watermark(flow),
            recent,
        }
    }

    /// Whether `execution` was handled already: it started before the listing margin (so
    /// before everything listed again) or is one of the recent ones.
    pub fn knows(&self, execution: &ListedExecution) -> bool {
        execution.start_ms < self.until.saturating_sub(LISTING_MARGIN_MS)
            || self.recent.contains_key(&execution_key(&execution.arn))
    }

    /// Records an adopted execution: the watermark moves up to it, and the recent ones that
    /// fell out of the margin are forgotten.
    pub fn record(&mut self, execution: &ListedExecution) {
        self.until = self.until.max(execution.start_ms);
        self.recent
            .insert(execution_key(&execution.arn), execution.start_ms);
        let floor = self.until.saturating_sub(LISTING_MARGIN_MS);
        self.recent.retain(|_, start| *start >= floor);
        while self.recent.len() > MAX_RECENT {
            let oldest = self
                .recent
                .iter()
                .min_by_key(|(key, start)| (**start, (*key).clone()))
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => self.recent.remove(&key),
                None => break,
            };
        }
    }

    /// The Flow annotations that persist this record.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut recent: Vec<(&String, &i64)> = self.recent.iter().collect();
        recent.sort_by_key(|(key, start)| (**start, (*key).clone()));
        BTreeMap::from([
            (WATERMARK_ANNOTATION.to_owned(), self.until.to_string()),
            (
                RECENT_ANNOTATION.to_owned(),
                recent
                    .iter()
                    .map(|(key, start)| format!("{key}@{start}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ])
    }
}

/// The executions to adopt, oldest first: not a Run's own, and not adopted before (whether
/// or not their Run still exists: one deleted by the history limits or a person stays gone).
pub fn to_adopt<'a>(listed: &'a [ListedExecution], adopted: &Adopted) -> Vec<&'a ListedExecution> {
    let mut adopt: Vec<&ListedExecution> = listed
        .iter()
        .filter(|e| !is_run_execution(&e.name) && !adopted.knows(e))
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
    fn an_event_for_an_execution_started_elsewhere_names_the_machine_to_sweep() {
        assert_eq!(
            machine_to_sweep(
                "arn:aws:states:us-east-1:123456789012:execution:flowline-ns-f-1a2b:manual-1"
            )
            .as_deref(),
            Some("arn:aws:states:us-east-1:123456789012:stateMachine:flowline-ns-f-1a2b")
        );
        // A Run's own execution, and what is not an execution, start no sweep.
        let own =
            "arn:aws:states:us-east-1:1:execution:m:nightly-4f9d1c7e-0000-4000-8000-000000000001";
        assert_eq!(machine_to_sweep(own), None);
        assert_eq!(
            machine_to_sweep("arn:aws:states:us-east-1:1:stateMachine:m"),
            None
        );
        assert_eq!(
            machine_to_sweep("arn:aws:states:us-east-1:1:execution::x"),
            None
        );
        assert_eq!(machine_to_sweep("not an arn"), None);
    }

    #[test]
    fn with_events_flowing_every_flow_is_listed_once_per_drift_interval() {
        use std::time::Duration;
        let (interval, drift) = (Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(full_sweep_interval(interval, drift, false), interval);
        assert_eq!(full_sweep_interval(interval, drift, true), drift);
        // A sweep configured slower than the drift interval stays as slow.
        let slow = Duration::from_secs(600);
        assert_eq!(full_sweep_interval(slow, drift, true), slow);
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
        let names: Vec<&str> = to_adopt(&executions, &Adopted::default())
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
    fn adopted_executions_are_never_adopted_again_even_within_the_listing_margin() {
        let burst: Vec<ListedExecution> = (0..20)
            .map(|i| listed(&format!("console-{i}"), 1_000_000 + i * 100))
            .collect();
        let mut adopted = Adopted {
            until: 900_000,
            ..Adopted::default()
        };
        let first = to_adopt(&burst, &adopted);
        assert_eq!(first.len(), 20);
        for execution in first {
            adopted.record(execution);
        }
        assert_eq!(adopted.until, 1_001_900);
        assert!(to_adopt(&burst, &adopted).is_empty(), "a second sweep");
        // A restart: the record comes back from the Flow's annotations.
        let mut flow = Flow::new(
            "f",
            serde_json::from_value::<FlowSpec>(
                serde_json::json!({"steps": [{"name": "start", "image": "busybox"}]}),
            )
            .unwrap(),
        );
        flow.metadata.annotations = Some(adopted.annotations());
        let restored = Adopted::of(&flow);
        assert_eq!(restored, adopted);
        assert!(to_adopt(&burst, &restored).is_empty(), "after a restart");
        // A late execution within the margin that was never adopted still is.
        let late = [listed("late", 1_000_050)];
        assert_eq!(to_adopt(&late, &restored).len(), 1);
        // Executions far older than the margin are not looked at.
        assert!(to_adopt(&[listed("old", 10)], &restored).is_empty());
    }

    #[test]
    fn the_recent_record_forgets_what_left_the_margin_and_stays_bounded() {
        let mut adopted = Adopted::default();
        adopted.record(&listed("a", 0));
        adopted.record(&listed("b", LISTING_MARGIN_MS + 1));
        assert_eq!(adopted.recent.len(), 1, "a is below the margin now");
        assert!(adopted.knows(&listed("a", 0)), "and known by its age");
        for i in 0..(MAX_RECENT as i64 + 10) {
            adopted.record(&listed(&format!("x{i}"), LISTING_MARGIN_MS + 2 + i));
        }
        assert_eq!(adopted.recent.len(), MAX_RECENT);
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
