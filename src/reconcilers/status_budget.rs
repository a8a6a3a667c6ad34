//! Keeps a Run's status within a total size, whatever the Flow: a Kubernetes object is stored
//! in etcd whole and refused above 1.5 MiB, and a Run of 100 steps, each a foreach of 100
//! tasks with their job ids, log streams and artifacts, would exceed it. What is left out is
//! counted, so the status still says how much there was.

use crate::api::{RunStatus, StepStatus};

/// The most a Run's status may take as JSON: a third of etcd's object limit, leaving room for
/// the spec, metadata and managed fields.
pub const STATUS_BUDGET_BYTES: usize = 512 * 1024;

/// The longest `reason` a step keeps, in characters.
const MAX_REASON_CHARS: usize = 1024;

/// Cuts the per-step lists of `status` (artifacts first, then log streams, then job ids, each
/// to the same length for every step) until its JSON fits `budget`, and records per step how
/// many job ids and log streams were left out (artifacts already have `artifactCount` and
/// `artifactsTruncated`). Deterministic, so an unchanged status stays equal. Steps themselves
/// are never dropped: each keeps its name, phase, attempts, times and reason.
pub fn fit(status: &mut RunStatus, budget: usize) {
    for step in &mut status.steps {
        if let Some(reason) = &step.reason
            && reason.chars().count() > MAX_REASON_CHARS
        {
            let cut: String = reason.chars().take(MAX_REASON_CHARS).collect();
            step.reason = Some(format!("{cut}…"));
        }
    }
    let lists: [(Length, Cut); 3] = [
        (|s| s.artifacts.len(), cut_artifacts),
        (|s| s.log_streams.len(), cut_log_streams),
        (|s| s.job_ids.len(), cut_job_ids),
    ];
    for (length, cut) in lists {
        let mut cap = status.steps.iter().map(length).max().unwrap_or(0);
        while size(status) > budget && cap > 0 {
            cap /= 2;
            for step in &mut status.steps {
                cut(step, cap);
            }
        }
        if size(status) <= budget {
            return;
        }
    }
}

/// The length of one of a step's lists, and how to cut it to a length.
type Length = fn(&StepStatus) -> usize;
type Cut = fn(&mut StepStatus, usize);

fn size(status: &RunStatus) -> usize {
    serde_json::to_vec(status).map_or(0, |json| json.len())
}

fn cut_artifacts(step: &mut StepStatus, cap: usize) {
    if step.artifacts.len() > cap {
        let listed = step.artifacts.len() as i64;
        step.artifacts.truncate(cap);
        step.artifacts_truncated = true;
        step.artifact_count = Some(step.artifact_count.unwrap_or(listed).max(listed));
    }
}

fn cut_log_streams(step: &mut StepStatus, cap: usize) {
    if step.log_streams.len() > cap {
        step.log_streams_omitted += (step.log_streams.len() - cap) as i64;
        step.log_streams.truncate(cap);
    }
}

fn cut_job_ids(step: &mut StepStatus, cap: usize) {
    if step.job_ids.len() > cap {
        step.job_ids_omitted += (step.job_ids.len() - cap) as i64;
        step.job_ids.truncate(cap);
    }
}

#[cfg(test)]
mod tests {
    use crate::api::{Artifact, StepPhase};

    use super::*;

    /// 100 steps, each a foreach of 100 tasks: about 4 MiB of status before the budget.
    fn huge() -> RunStatus {
        let steps = (0..100)
            .map(|s| StepStatus {
                name: format!("step_{s}"),
                phase: Some(StepPhase::Succeeded),
                attempts: Some(1),
                job_ids: (0..100)
                    .map(|t| format!("{s:08}-0000-0000-0000-{t:012}"))
                    .collect(),
                log_streams: (0..100)
                    .map(|t| format!("flowline-default-big-{s}/default/{t:032}"))
                    .collect(),
                artifacts: (0..100)
                    .map(|t| Artifact {
                        name: format!("0-{t}/model-{t}.pt"),
                        uri: format!("s3://flowline/data/ns/big/run-1/step_{s}/0-{t}/model-{t}.pt"),
                        size: Some(1 << 20),
                        failed_attempt: false,
                    })
                    .collect(),
                artifact_count: Some(100),
                reason: Some("x".repeat(10_000)),
                ..StepStatus::default()
            })
            .collect();
        RunStatus {
            steps,
            ..RunStatus::default()
        }
    }

    #[test]
    fn a_status_of_100_foreach_steps_fits_the_budget_and_counts_what_it_left_out() {
        let mut status = huge();
        assert!(size(&status) > 4 * STATUS_BUDGET_BYTES);
        fit(&mut status, STATUS_BUDGET_BYTES);
        assert!(size(&status) <= STATUS_BUDGET_BYTES, "{}", size(&status));
        assert_eq!(status.steps.len(), 100, "no step is dropped");
        for step in &status.steps {
            assert_eq!(step.job_ids.len() as i64 + step.job_ids_omitted, 100);
            assert_eq!(
                step.log_streams.len() as i64 + step.log_streams_omitted,
                100
            );
            assert_eq!(step.artifact_count, Some(100));
            assert!(step.artifacts_truncated);
            assert!(step.reason.as_ref().unwrap().chars().count() <= MAX_REASON_CHARS + 1);
        }
        // The first job of every step is still there: artifacts went first.
        assert!(status.steps.iter().all(|s| !s.job_ids.is_empty()));
        // Fitting again changes nothing: the status written next time is equal.
        let once = status.clone();
        fit(&mut status, STATUS_BUDGET_BYTES);
        assert_eq!(status, once);
    }

    #[test]
    fn a_status_within_the_budget_is_left_alone() {
        let mut status = huge();
        status.steps.truncate(2);
        for step in &mut status.steps {
            step.reason = None;
        }
        let before = status.clone();
        fit(&mut status, STATUS_BUDGET_BYTES);
        assert_eq!(status, before);
    }
}
