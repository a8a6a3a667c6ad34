//! Resuming a Run from one of its steps (`spec.resumeFrom`), the pure part: which steps are
//! reused, whether reuse is safe, what is copied where, and how the reused steps appear in
//! the new Run's status.
//!
//! The execution of a resumed Run starts at the resume step (the state machine's
//! `Flowline.Resume` Choice reads `resume.step` from the execution input), so the steps before
//! it never run; their artifacts are copied from the original Run's prefix into the new Run's
//! before the execution starts, and the steps after read them from there as usual.
//!
//! Reuse is refused when it cannot be trusted: the resume step is not on the Flow's main line
//! (inside a branch or a foreach the other iterations or branches would be half re-run), the
//! original Run is of another Flow or has not finished, or a step before the resume step did
//! not succeed in it (the Flow gained or renamed a step there, or the Run failed earlier).

use std::collections::BTreeSet;

use crate::api::{ResumeFrom, Run, RunStatus, StepPhase, StepStatus};
use crate::compile::graph::{Chain, Segment, validate};
use crate::compile::graph_steps;
use crate::compile::state_machine::resumable_steps;

/// What a resumed Run does before its execution starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePlan {
    /// The step the execution starts at.
    pub step: String,
    /// The original Run's name.
    pub original: String,
    /// Per reused step: its prefix in the original Run and in the new one (`s3://…/<step>/`).
    pub copies: Vec<Copy>,
    /// The reused steps' status in the new Run: Succeeded, `reusedFrom` the original.
    pub reused: Vec<StepStatus>,
}

/// One reused step's artifacts, copied prefix to prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub step: String,
    pub from: String,
    pub to: String,
}

/// Why a Run cannot resume, for a person (the Run is Stalled with reason `ResumeRefused`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("spec.resumeFrom.run {0} is this Run itself: name an earlier Run of the Flow")]
    SelfReference(String),
    #[error("Run {run} executes Flow {theirs}, not {ours}: a Run resumes a Run of its own Flow")]
    OtherFlow {
        run: String,
        theirs: String,
        ours: String,
    },
    #[error("Run {0} has not finished: resume it once it has (or stop it with `spec.stop: true`)")]
    NotFinished(String),
    #[error("Run {0} has no artifact root (it never started): there is nothing to reuse")]
    NeverStarted(String),
    #[error("the Flow's graph is invalid: {0}")]
    InvalidGraph(String),
    #[error("the Flow has no step `{step}`; its steps on the main line are: {steps}")]
    UnknownStep { step: String, steps: String },
    #[error(
        "step `{step}` runs inside a {within}, which cannot be resumed half-way: resume from `{opener}`, the step that opens it, or from a step on the main line ({steps})"
    )]
    NotOnMainLine {
        step: String,
        within: &'static str,
        opener: String,
        steps: String,
    },
    #[error(
        "step `{step}` comes before `{resume}` but did not succeed in Run {run} ({seen}): the Flow's graph changed since that Run or the Run failed earlier; resume from `{step}` or an earlier step, or start a new Run"
    )]
    NotReusable {
        step: String,
        resume: String,
        run: String,
        seen: String,
    },
    #[error(
        "Run {run} ran step `{step}`, which the Flow no longer has before `{resume}`: the graph changed in a way that makes its results unsafe to reuse; start a new Run"
    )]
    StepRemoved {
        step: String,
        resume: String,
        run: String,
    },
}

/// The original Run's artifact prefix: its execution's name (the last part of its ARN) under
/// the Flow's root, which is `artifact_root` (the new Run's) without its last segment. `None`
/// when the original never started or its execution name could not be a prefix segment.
fn original_artifact_root(status: &RunStatus, artifact_root: &str) -> Option<String> {
    let execution_name = status.execution_arn.as_deref()?.rsplit(':').next()?;
    if execution_name.is_empty() || execution_name.contains('/') {
        return None;
    }
    let (flow_root, _) = artifact_root.trim_end_matches('/').rsplit_once('/')?;
    Some(format!("{flow_root}/{execution_name}"))
}

/// Plans the resume of `run` from the original Run, against the Flow's current steps.
/// `artifact_root` is the new Run's (`<s3Root>/<namespace>/<flow>/<execution name>`).
pub fn plan(
    run: &Run,
    resume: &ResumeFrom,
    flow_steps: &[crate::api::Step],
    original: &Run,
    artifact_root: &str,
) -> Result<ResumePlan, ResumeError> {
    let name = run.metadata.name.clone().unwrap_or_default();
    if resume.run == name {
        return Err(ResumeError::SelfReference(name));
    }
    if original.spec.flow_ref.name != run.spec.flow_ref.name {
        return Err(ResumeError::OtherFlow {
            run: resume.run.clone(),
            theirs: original.spec.flow_ref.name.clone(),
            ours: run.spec.flow_ref.name.clone(),
        });
    }
    let status = original.status.clone().unwrap_or_default();
    if !status.phase.is_some_and(|phase| phase.is_finished()) {
        return Err(ResumeError::NotFinished(resume.run.clone()));
    }
    // The reused artifacts are read from the original execution's prefix under this Flow's own
    // root, derived like the new Run's, never from `status.artifactRoot`: anyone with
    // `runs/status` could point that at another Flow's or namespace's prefix, and the copy
    // runs with the controller's identity.
    let Some(original_root) = original_artifact_root(&status, artifact_root) else {
        return Err(ResumeError::NeverStarted(resume.run.clone()));
    };
    let graph = validate(&graph_steps(flow_steps))
        .map_err(|error| ResumeError::InvalidGraph(error.to_string()))?;
    let main_line = resumable_steps(&graph.chain);
    if !main_line.contains(&resume.step.as_str()) {
        return Err(match enclosing(&graph.chain, &resume.step) {
            Some((within, opener)) => ResumeError::NotOnMainLine {
                step: resume.step.clone(),
                within,
                opener,
                steps: main_line.join(", "),
            },
            None => ResumeError::UnknownStep {
                step: resume.step.clone(),
                steps: main_line.join(", "),
            },
        });
    }
    let before = steps_before(&graph.chain, &resume.step);
    check_reusable(&before, &resume.step, &resume.run, &status, flow_steps)?;
    let copies = before
        .iter()
        .map(|step| Copy {
            step: step.clone(),
            from: format!("{}/{step}/", original_root.trim_end_matches('/')),
            to: format!("{}/{step}/", artifact_root.trim_end_matches('/')),
        })
        .collect();
    let reused = before
        .iter()
        .filter_map(|step| status.steps.iter().find(|s| &s.name == step))
        .map(|step| StepStatus {
            name: step.name.clone(),
            phase: Some(StepPhase::Succeeded),
            attempts: step.attempts,
            start_time: step.start_time.clone(),
            completion_time: step.completion_time.clone(),
            // A step reused twice names the Run that ran it.
            reused_from: Some(
                step.reused_from
                    .clone()
                    .unwrap_or_else(|| resume.run.clone()),
            ),
            ..StepStatus::default()
        })
        .collect();
    Ok(ResumePlan {
        step: resume.step.clone(),
        original: resume.run.clone(),
        copies,
        reused,
    })
}

/// Every step before `resume` ran and succeeded in the original Run (reused there counts),
/// and the original Run ran no step that the Flow has dropped from before `resume`.
fn check_reusable(
    before: &[String],
    resume: &str,
    original: &str,
    status: &RunStatus,
    flow_steps: &[crate::api::Step],
) -> Result<(), ResumeError> {
    for step in before {
        let seen = status.steps.iter().find(|s| &s.name == step);
        if seen.and_then(|s| s.phase) != Some(StepPhase::Succeeded) {
            return Err(ResumeError::NotReusable {
                step: step.clone(),
                resume: resume.to_owned(),
                run: original.to_owned(),
                seen: match seen.and_then(|s| s.phase) {
                    Some(phase) => format!("it ended {phase:?}"),
                    None => "it did not run there".into(),
                },
            });
        }
    }
    let known: BTreeSet<&str> = flow_steps.iter().map(|s| s.name.as_str()).collect();
    if let Some(gone) = status
        .steps
        .iter()
        .find(|s| !known.contains(s.name.as_str()))
    {
        return Err(ResumeError::StepRemoved {
            step: gone.name.clone(),
            resume: resume.to_owned(),
            run: original.to_owned(),
        });
    }
    Ok(())
}

/// Every step that runs before `resume` (on the main line, with everything inside the
/// branches and foreaches before it), in order.
fn steps_before(chain: &Chain, resume: &str) -> Vec<String> {
    fn all(chain: &Chain, out: &mut Vec<String>) {
        for segment in chain {
            match segment {
                Segment::Step(name) => out.push(name.clone()),
                Segment::Branch(branches) => branches.iter().for_each(|b| all(b, out)),
                Segment::Foreach(body) => all(body, out),
            }
        }
    }
    let at = chain
        .iter()
        .position(|segment| matches!(segment, Segment::Step(name) if name == resume))
        .unwrap_or(0);
    let mut out = Vec::new();
    all(&chain[..at].to_vec(), &mut out);
    out
}

/// For a step inside a branch or foreach: which kind, and the main-line step that opens it.
fn enclosing(chain: &Chain, step: &str) -> Option<(&'static str, String)> {
    fn contains(chain: &Chain, step: &str) -> bool {
        chain.iter().any(|segment| match segment {
            Segment::Step(name) => name == step,
            Segment::Branch(branches) => branches.iter().any(|b| contains(b, step)),
            Segment::Foreach(body) => contains(body, step),
        })
    }
    let mut opener = String::new();
    for segment in chain {
        match segment {
            Segment::Step(name) => opener = name.clone(),
            Segment::Branch(branches) if branches.iter().any(|b| contains(b, step)) => {
                return Some(("branch", opener));
            }
            Segment::Foreach(body) if contains(body, step) => return Some(("foreach", opener)),
            _ => {}
        }
    }
    None
}

/// The execution input's `resume` member for a resumed Run.
pub fn execution_input(step: &str) -> serde_json::Value {
    serde_json::json!({ "step": step })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FlowRef, RunPhase, RunSpec, Step};

    fn steps(yaml: &str) -> Vec<Step> {
        serde_norway::from_str(yaml).unwrap()
    }

    fn linear() -> Vec<Step> {
        steps(
            "- {name: start, image: i, next: [b]}\n- {name: b, image: i, next: [c]}\n- {name: c, image: i, next: [d]}\n- {name: d, image: i, next: [end]}\n- {name: end, image: i}\n",
        )
    }

    fn run(name: &str, resume: Option<(&str, &str)>) -> Run {
        let mut run = Run::new(
            name,
            RunSpec {
                flow_ref: FlowRef { name: "f".into() },
                parameters: Default::default(),
                stop: false,
                resume_from: resume.map(|(run, step)| ResumeFrom {
                    run: run.into(),
                    step: step.into(),
                }),
            },
        );
        run.metadata.namespace = Some("ns".into());
        run
    }

    fn finished(phases: &[(&str, StepPhase)]) -> Run {
        let mut original = run("first", None);
        original.status = Some(RunStatus {
            phase: Some(RunPhase::Failed),
            artifact_root: Some("s3://bucket/ns/f/exec-first".into()),
            execution_arn: Some(
                "arn:aws:states:us-east-1:1:execution:flowline-ns-f:exec-first".into(),
            ),
            steps: phases
                .iter()
                .map(|(name, phase)| StepStatus {
                    name: (*name).into(),
                    phase: Some(*phase),
                    attempts: Some(1),
                    ..StepStatus::default()
                })
                .collect(),
            ..RunStatus::default()
        });
        original
    }

    fn resume(step: &str) -> ResumeFrom {
        ResumeFrom {
            run: "first".into(),
            step: step.into(),
        }
    }

    #[test]
    fn reused_artifacts_come_from_the_flows_own_prefix_whatever_the_status_says() {
        let mut original = finished(&[
            ("start", StepPhase::Succeeded),
            ("b", StepPhase::Succeeded),
            ("c", StepPhase::Failed),
        ]);
        if let Some(status) = original.status.as_mut() {
            status.artifact_root = Some("s3://bucket/other-team/secret-flow/exec-x".into());
        }
        let new = run("second", Some(("first", "c")));
        let planned = plan(
            &new,
            &resume("c"),
            &linear(),
            &original,
            "s3://bucket/ns/f/exec-second",
        )
        .unwrap();
        assert!(
            planned
                .copies
                .iter()
                .all(|copy| copy.from.starts_with("s3://bucket/ns/f/exec-first/")),
            "{:?}",
            planned.copies
        );
        if let Some(status) = original.status.as_mut() {
            status.execution_arn =
                Some("arn:aws:states:us-east-1:1:execution:m:../../other-team/x".into());
        }
        assert!(matches!(
            plan(
                &new,
                &resume("c"),
                &linear(),
                &original,
                "s3://bucket/ns/f/exec-second"
            ),
            Err(ResumeError::NeverStarted(_))
        ));
    }

    #[test]
    fn steps_before_the_resume_step_are_reused_and_their_artifacts_copied() {
        let original = finished(&[
            ("start", StepPhase::Succeeded),
            ("b", StepPhase::Succeeded),
            ("c", StepPhase::Failed),
        ]);
        let new = run("second", Some(("first", "c")));
        let plan = plan(
            &new,
            &resume("c"),
            &linear(),
            &original,
            "s3://bucket/ns/f/exec-second",
        )
        .unwrap();
        assert_eq!(plan.step, "c");
        assert_eq!(
            plan.copies,
            vec![
                Copy {
                    step: "start".into(),
                    from: "s3://bucket/ns/f/exec-first/start/".into(),
                    to: "s3://bucket/ns/f/exec-second/start/".into(),
                },
                Copy {
                    step: "b".into(),
                    from: "s3://bucket/ns/f/exec-first/b/".into(),
                    to: "s3://bucket/ns/f/exec-second/b/".into(),
                },
            ]
        );
        let reused: Vec<_> = plan
            .reused
            .iter()
            .map(|s| (s.name.as_str(), s.phase, s.reused_from.as_deref()))
            .collect();
        assert_eq!(
            reused,
            vec![
                ("start", Some(StepPhase::Succeeded), Some("first")),
                ("b", Some(StepPhase::Succeeded), Some("first")),
            ]
        );
    }

    #[test]
    fn a_step_before_the_resume_step_that_did_not_succeed_refuses_the_resume() {
        let original = finished(&[("start", StepPhase::Succeeded), ("b", StepPhase::Failed)]);
        let new = run("second", Some(("first", "c")));
        let error = plan(&new, &resume("c"), &linear(), &original, "s3://b/x").unwrap_err();
        assert!(
            matches!(&error, ResumeError::NotReusable { step, .. } if step == "b"),
            "{error}"
        );
        assert!(error.to_string().contains("resume from `b`"));
    }

    #[test]
    fn a_step_added_before_the_resume_step_refuses_the_resume() {
        let original = finished(&[("start", StepPhase::Succeeded), ("c", StepPhase::Failed)]);
        let new = run("second", Some(("first", "c")));
        let error = plan(&new, &resume("c"), &linear(), &original, "s3://b/x").unwrap_err();
        assert!(error.to_string().contains("did not run there"), "{error}");
    }

    #[test]
    fn a_step_the_flow_dropped_refuses_the_resume() {
        let original = finished(&[
            ("start", StepPhase::Succeeded),
            ("gone", StepPhase::Succeeded),
            ("b", StepPhase::Succeeded),
            ("c", StepPhase::Failed),
        ]);
        let new = run("second", Some(("first", "c")));
        let error = plan(&new, &resume("c"), &linear(), &original, "s3://b/x").unwrap_err();
        assert!(
            matches!(&error, ResumeError::StepRemoved { step, .. } if step == "gone"),
            "{error}"
        );
    }

    #[test]
    fn a_step_inside_a_foreach_names_the_step_to_resume_from() {
        let flow = steps(
            "- {name: start, image: i, next: [each], foreach: {}}\n- {name: each, image: i, next: [join]}\n- {name: join, image: i, join: true, next: [end]}\n- {name: end, image: i}\n",
        );
        let original = finished(&[("start", StepPhase::Failed)]);
        let new = run("second", Some(("first", "each")));
        let error = plan(&new, &resume("each"), &flow, &original, "s3://b/x").unwrap_err();
        assert!(
            matches!(&error, ResumeError::NotOnMainLine { opener, within: "foreach", .. } if opener == "start"),
            "{error}"
        );
    }

    #[test]
    fn an_unfinished_or_foreign_or_unknown_original_is_refused() {
        let mut running = finished(&[]);
        running.status.as_mut().unwrap().phase = Some(RunPhase::Running);
        let new = run("second", Some(("first", "c")));
        assert!(matches!(
            plan(&new, &resume("c"), &linear(), &running, "s3://b/x"),
            Err(ResumeError::NotFinished(_))
        ));
        let mut other = finished(&[]);
        other.spec.flow_ref.name = "g".into();
        assert!(matches!(
            plan(&new, &resume("c"), &linear(), &other, "s3://b/x"),
            Err(ResumeError::OtherFlow { .. })
        ));
        assert!(matches!(
            plan(&new, &resume("nope"), &linear(), &finished(&[]), "s3://b/x"),
            Err(ResumeError::UnknownStep { .. })
        ));
        let itself = run("first", Some(("first", "c")));
        assert!(matches!(
            plan(&itself, &resume("c"), &linear(), &finished(&[]), "s3://b/x"),
            Err(ResumeError::SelfReference(_))
        ));
    }
}
