//! The Flow pipeline's pure parts: what changes AWS needs ([`plan`]), which version the
//! status records ([`known_version`]), which superseded job definition revisions wait for
//! running executions ([`retired`]) and which may go ([`deregistrations`]), and what the
//! Flow's status says ([`status`]). The I/O around them is in [`crate::controller::flow`].
//!
//! The plan has two phases, because the state machine refers to job definitions by revision
//! ARN and a revision exists only once Batch registered it: while a wanted job definition has
//! no ACTIVE revision, the plan is those registrations; the shell applies them, adds the
//! revisions they returned to what it observed, and plans again, which then pins the
//! revisions into the machine and compares it. Both phases are the same pure function of
//! `(desired, observed)`, and a converged Flow plans nothing at either.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{FlowStatus, JobDefinitionRef, ResolvedSecret};
use crate::aws::sfn::ObservedMachine;
use crate::compile::job_definition::JobDefinition;
use crate::compile::{Rendered, StateMachine, TAG_UID, revisions};

use super::conditions::{Health, set_health};

/// What exists in AWS for a Flow, as far as the plan needs to know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The state machine under the Flow's name, if any.
    pub machine: Option<ObservedMachine>,
    /// Its `flowline.io/uid` tag, when it was read (only for a machine not yet known to be
    /// the Flow's own).
    pub machine_owner_uid: Option<Option<String>>,
    /// The Flow's ACTIVE job definition revisions with the wanted content, by name: their ARN
    /// (with the revision). Revisions registered by this reconcile are added as they come.
    pub job_definitions: BTreeMap<String, String>,
}

/// One write to AWS. Each is idempotent: re-applying it after a crash is harmless.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    RegisterJobDefinition(Box<JobDefinition>),
    CreateStateMachine(StateMachine),
    UpdateStateMachine { arn: String, machine: StateMachine },
    DeregisterJobDefinition { arn: String },
}

/// Why a plan cannot be made: terminal, a person has to act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "state machine {name} exists but belongs to another owner (flowline.io/uid {owner:?}); Flowline never changes what it does not own: delete or rename it"
    )]
    ForeignStateMachine { name: String, owner: Option<String> },
    #[error(
        "the state machine refers to job definition(s) {names:?} that the Flow does not define"
    )]
    UnknownJobDefinitions { names: Vec<String> },
}

/// The changes that make AWS match `desired`. First phase: register the job definitions that
/// have no ACTIVE revision (nothing else: the machine cannot name revisions that do not exist
/// yet). Second phase, once every one has a revision: create the state machine, or update it
/// (publishing a version) when its definition, with the revisions pinned, or its role differ
/// from what is observed (compared as parsed JSON). Empty when AWS already matches. Nothing
/// is deregistered here: see [`retired`] and [`deregistrations`].
pub fn plan(
    desired: &Rendered,
    observed: &Observed,
    own_uid: &str,
) -> Result<Vec<Change>, PlanError> {
    if let (Some(_), Some(owner)) = (&observed.machine, &observed.machine_owner_uid)
        && owner.as_deref() != Some(own_uid)
    {
        return Err(PlanError::ForeignStateMachine {
            name: desired.state_machine.name.clone(),
            owner: owner.clone(),
        });
    }
    let registrations: Vec<Change> = desired
        .job_definitions
        .iter()
        .filter(|d| {
            !observed
                .job_definitions
                .contains_key(&d.job_definition_name)
        })
        .map(|d| Change::RegisterJobDefinition(Box::new(d.clone())))
        .collect();
    if !registrations.is_empty() {
        return Ok(registrations);
    }
    let machine = pinned_machine(desired, &observed.job_definitions)?;
    Ok(match &observed.machine {
        None => vec![Change::CreateStateMachine(machine)],
        Some(current)
            if current.definition != machine.definition || current.role_arn != machine.role_arn =>
        {
            vec![Change::UpdateStateMachine {
                arn: current.arn.clone(),
                machine,
            }]
        }
        Some(_) => Vec::new(),
    })
}

/// The desired state machine with each job definition pinned to its revision.
pub fn pinned_machine(
    desired: &Rendered,
    revisions: &BTreeMap<String, String>,
) -> Result<StateMachine, PlanError> {
    let definition = revisions::pin(&desired.state_machine.definition, revisions)
        .map_err(|names| PlanError::UnknownJobDefinitions { names })?;
    Ok(StateMachine {
        definition,
        ..desired.state_machine.clone()
    })
}

/// The version Runs start on, when it is known without asking Step Functions: the one this
/// reconcile published, else the one the status recorded if the machine is still at the
/// revision that version was published from. `None` means the recorded version may be stale
/// (a reconcile updated the machine and was interrupted before writing the status, or the
/// status has none): the shell reads the latest version.
pub fn known_version(
    previous: Option<&FlowStatus>,
    machine_arn: &str,
    observed: Option<&ObservedMachine>,
    published: Option<&crate::aws::sfn::Published>,
) -> Option<crate::aws::sfn::Published> {
    if let Some(published) = published {
        return Some(published.clone());
    }
    let previous = previous.filter(|s| s.state_machine_arn.as_deref() == Some(machine_arn))?;
    let observed = observed?;
    // The status may have been written by anyone with `flows/status`: only a version of this
    // Flow's own machine is taken from it.
    let version_arn = previous
        .state_machine_version_arn
        .clone()
        .filter(|arn| super::ownership::is_version_of(arn, machine_arn))?;
    (previous.state_machine_revision_id == observed.revision_id).then(|| {
        crate::aws::sfn::Published {
            version_arn,
            revision_id: observed.revision_id.clone(),
        }
    })
}

/// The revisions the Flow used before and no longer uses: those the status already retired,
/// and those its previous job definitions named that `current` does not. Kept (ACTIVE) until
/// [`deregistrations`] finds no running execution that submits them.
pub fn retired(previous: Option<&FlowStatus>, current: &[JobDefinitionRef]) -> Vec<String> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let current: BTreeSet<&str> = current.iter().map(|r| r.arn.as_str()).collect();
    let mut retired: Vec<String> = previous
        .retired_job_definitions
        .iter()
        .chain(previous.job_definitions.iter().map(|r| &r.arn))
        .filter(|arn| !current.contains(arn.as_str()))
        .cloned()
        .collect();
    retired.sort();
    retired.dedup();
    retired
}

/// The job definitions that running executions may still submit: what the definitions of
/// their versions refer to. `complete` is false when some execution's definition could not be
/// told (then nothing is deregistered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    pub references: BTreeSet<String>,
    pub complete: bool,
}

/// What the running executions use, from the definitions of their versions: `None` for an
/// execution whose definition is unknown (started on the machine itself, or on a version that
/// cannot be read).
pub fn in_use<'a>(definitions: impl IntoIterator<Item = Option<&'a serde_json::Value>>) -> InUse {
    let mut in_use = InUse {
        references: BTreeSet::new(),
        complete: true,
    };
    for definition in definitions {
        match definition {
            Some(definition) => in_use.references.extend(revisions::referenced(definition)),
            None => in_use.complete = false,
        }
    }
    in_use
}

/// Deregisters each retired revision that no running execution refers to (by ARN, or by name
/// for a definition written before revisions were pinned). Nothing while `in_use` is
/// incomplete: a revision deregistered under a running execution fails its next step.
pub fn deregistrations(retired: &[String], in_use: &InUse) -> Vec<Change> {
    if !in_use.complete {
        return Vec::new();
    }
    retired
        .iter()
        .filter(|arn| !revisions::is_referenced(arn, &in_use.references))
        .map(|arn| Change::DeregisterJobDefinition { arn: arn.clone() })
        .collect()
}

/// `name` of `arn:aws:batch:<region>:<account>:job-definition/<name>:<revision>`.
pub fn job_definition_name(arn: &str) -> &str {
    let tail = arn.rsplit('/').next().unwrap_or(arn);
    tail.rsplit_once(':').map_or(tail, |(name, _)| name)
}

/// The tag that names a resource's owner.
pub fn owner_uid(tags: &BTreeMap<String, String>) -> Option<String> {
    tags.get(TAG_UID).cloned()
}

/// How one reconcile ended, for the status.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// AWS matches the Flow.
    Ready {
        state_machine_arn: String,
        /// The version Runs start on, and the machine revision it was published from.
        version: Option<crate::aws::sfn::Published>,
        job_definitions: Vec<JobDefinitionRef>,
        /// Superseded revisions still used by running executions.
        retired_job_definitions: Vec<String>,
        secrets: Vec<ResolvedSecret>,
        /// Whether this reconcile changed anything (for the condition's reason).
        changed: bool,
    },
    /// The Flow cannot become Ready until a person acts.
    Stalled { reason: String, message: String },
    /// A transient failure; the controller retries.
    Retrying { message: String },
}

/// The Flow's status after a reconcile. Unchanged facts keep their values (and conditions
/// their transition times), so a reconcile that changes nothing produces an equal status and
/// no write.
pub fn status(
    previous: Option<&FlowStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    now: Time,
) -> FlowStatus {
    let mut next = previous.cloned().unwrap_or_default();
    next.observed_generation = generation;
    match outcome {
        Outcome::Ready {
            state_machine_arn,
            version,
            job_definitions,
            retired_job_definitions,
            secrets,
            changed,
        } => {
            next.state_machine_arn = Some(state_machine_arn.clone());
            if let Some(version) = version {
                next.state_machine_version_arn = Some(version.version_arn.clone());
                next.state_machine_version = version_number(&version.version_arn);
                next.state_machine_revision_id = version.revision_id.clone();
            }
            next.job_definitions = job_definitions.clone();
            next.retired_job_definitions = retired_job_definitions.clone();
            next.secrets = secrets.clone();
            next.message = None;
            let reason = if *changed { "Applied" } else { "UpToDate" };
            let keep_reason = previous
                .and_then(|s| {
                    crate::api::find_condition(&s.conditions, crate::api::condition::READY)
                })
                .filter(|c| c.status == "True")
                .map(|c| c.reason.clone());
            let reason = keep_reason.unwrap_or_else(|| reason.to_owned());
            set_health(
                &mut next.conditions,
                Health::Ready {
                    reason: &reason,
                    message: "the job definitions and the state machine match the Flow",
                },
                generation,
                &now,
            );
        }
        Outcome::Stalled { reason, message } => {
            next.message = Some(message.clone());
            set_health(
                &mut next.conditions,
                Health::Stalled { reason, message },
                generation,
                &now,
            );
        }
        Outcome::Retrying { message } => {
            next.message = Some(message.clone());
            set_health(
                &mut next.conditions,
                Health::Reconciling {
                    reason: "Retrying",
                    message,
                },
                generation,
                &now,
            );
        }
    }
    next
}

/// `3` for `arn:…:stateMachine:name:3`.
pub fn version_number(version_arn: &str) -> Option<i64> {
    version_arn.rsplit(':').next().and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::condition;
    use crate::aws::sfn::Published;
    use crate::compile::{StateMachine, StepBinding};

    const UID: &str = "uid-1";
    const MACHINE: &str = "arn:aws:states:us-east-1:1:stateMachine:flowline-ns-flow-abc";

    fn arn(name: &str, revision: u32) -> String {
        format!("arn:aws:batch:us-east-1:1:job-definition/{name}:{revision}")
    }

    fn definition(name: &str) -> JobDefinition {
        JobDefinition {
            job_definition_name: name.into(),
            kind: "container".into(),
            platform_capabilities: vec!["EC2".into()],
            container_properties: None,
            node_properties: None,
            retry_strategy: None,
            timeout: None,
            propagate_tags: true,
            tags: BTreeMap::new(),
        }
    }

    /// A machine whose steps submit the named job definitions (names or revision ARNs).
    fn asl(job_definitions: &[&str], comment: &str) -> Value {
        let states: serde_json::Map<String, Value> = job_definitions
            .iter()
            .enumerate()
            .map(|(i, jd)| {
                (
                    format!("s{i}"),
                    json!({"Type": "Task", "Resource": "arn:aws:states:::batch:submitJob.sync",
                           "Parameters": {"JobDefinition": jd}, "End": true}),
                )
            })
            .collect();
        json!({"Comment": comment, "StartAt": "s0", "States": states})
    }

    fn rendered(names: &[&str], comment: &str) -> Rendered {
        Rendered {
            state_machine: StateMachine {
                name: "flowline-ns-flow-abc".into(),
                role_arn: "role".into(),
                kind: "STANDARD".into(),
                definition: asl(names, comment),
                tags: BTreeMap::new(),
            },
            job_definitions: names.iter().map(|n| definition(n)).collect(),
            steps: Vec::<StepBinding>::new(),
        }
    }

    fn machine(definition_json: Value, revision: &str) -> ObservedMachine {
        ObservedMachine {
            arn: MACHINE.into(),
            definition: definition_json,
            role_arn: "role".into(),
            revision_id: Some(revision.into()),
        }
    }

    fn registered(names: &[(&str, u32)]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|(name, revision)| ((*name).to_owned(), arn(name, *revision)))
            .collect()
    }

    #[test]
    fn nothing_exists_so_job_definitions_come_first_then_the_pinned_machine() {
        let desired = rendered(&["jd-a", "jd-b"], "v1");
        let mut observed = Observed::default();
        let first = plan(&desired, &observed, UID).unwrap();
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|c| matches!(c, Change::RegisterJobDefinition(_)))
        );
        // The shell folds the registered revisions into what it observed and plans again.
        observed.job_definitions = registered(&[("jd-a", 1), ("jd-b", 1)]);
        let second = plan(&desired, &observed, UID).unwrap();
        let [Change::CreateStateMachine(machine)] = second.as_slice() else {
            panic!("{second:?}")
        };
        assert_eq!(
            revisions::referenced(&machine.definition),
            BTreeSet::from([arn("jd-a", 1), arn("jd-b", 1)])
        );
    }

    #[test]
    fn converged_flow_plans_no_change() {
        let desired = rendered(&["jd-a"], "v1");
        let pinned = asl(&[&arn("jd-a", 1)], "v1");
        // Key order differs: compared as parsed JSON, not as text.
        let reordered: Value = serde_json::from_str(&pinned.to_string()).unwrap();
        let observed = Observed {
            machine: Some(machine(reordered, "r1")),
            machine_owner_uid: None,
            job_definitions: registered(&[("jd-a", 1)]),
        };
        assert_eq!(plan(&desired, &observed, UID), Ok(vec![]));
    }

    #[test]
    fn changed_step_registers_then_updates_the_machine_and_deregisters_nothing() {
        let desired = rendered(&["jd-new"], "v2");
        let mut observed = Observed {
            machine: Some(machine(asl(&[&arn("jd-old", 4)], "v1"), "r1")),
            machine_owner_uid: None,
            job_definitions: BTreeMap::new(),
        };
        let first = plan(&desired, &observed, UID).unwrap();
        assert!(
            matches!(first.as_slice(), [Change::RegisterJobDefinition(d)] if d.job_definition_name == "jd-new")
        );
        observed.job_definitions = registered(&[("jd-new", 1)]);
        let second = plan(&desired, &observed, UID).unwrap();
        let [
            Change::UpdateStateMachine {
                arn: machine_arn,
                machine,
            },
        ] = second.as_slice()
        else {
            panic!("{second:?}")
        };
        assert_eq!(machine_arn, MACHINE);
        assert_eq!(
            machine.definition["States"]["s0"]["Parameters"]["JobDefinition"],
            arn("jd-new", 1)
        );
    }

    #[test]
    fn a_machine_naming_job_definitions_by_name_is_repinned() {
        // A machine written before revisions were pinned differs from the pinned one.
        let desired = rendered(&["jd-a"], "v1");
        let observed = Observed {
            machine: Some(machine(asl(&["jd-a"], "v1"), "r1")),
            machine_owner_uid: None,
            job_definitions: registered(&[("jd-a", 2)]),
        };
        assert!(matches!(
            plan(&desired, &observed, UID).unwrap().as_slice(),
            [Change::UpdateStateMachine { .. }]
        ));
    }

    #[test]
    fn foreign_state_machine_is_never_touched() {
        let desired = rendered(&[], "v1");
        let observed = Observed {
            machine: Some(machine(json!({"other": true}), "r1")),
            machine_owner_uid: Some(Some("someone-else".into())),
            job_definitions: BTreeMap::new(),
        };
        assert!(matches!(
            plan(&desired, &observed, UID),
            Err(PlanError::ForeignStateMachine { .. })
        ));
    }

    fn status_with(version: &str, revision: Option<&str>, definitions: &[String]) -> FlowStatus {
        FlowStatus {
            state_machine_arn: Some(MACHINE.into()),
            state_machine_version_arn: Some(format!("{MACHINE}:{version}")),
            state_machine_revision_id: revision.map(str::to_owned),
            job_definitions: definitions
                .iter()
                .map(|arn| JobDefinitionRef {
                    step: job_definition_name(arn).into(),
                    arn: arn.clone(),
                })
                .collect(),
            ..FlowStatus::default()
        }
    }

    #[test]
    fn recorded_version_is_trusted_only_while_the_machine_is_at_its_revision() {
        let previous = status_with("1", Some("r1"), &[]);
        let at_r1 = machine(json!({}), "r1");
        assert_eq!(
            known_version(Some(&previous), MACHINE, Some(&at_r1), None),
            Some(Published {
                version_arn: format!("{MACHINE}:1"),
                revision_id: Some("r1".into())
            })
        );
        // The machine was updated (version 2 published) by a reconcile that was interrupted
        // before it wrote the status: version 1 is stale, so the latest must be read.
        let at_r2 = machine(json!({}), "r2");
        assert_eq!(
            known_version(Some(&previous), MACHINE, Some(&at_r2), None),
            None
        );
        // What this reconcile published wins.
        let published = Published {
            version_arn: format!("{MACHINE}:3"),
            revision_id: Some("r3".into()),
        };
        assert_eq!(
            known_version(Some(&previous), MACHINE, Some(&at_r2), Some(&published)),
            Some(published)
        );
        assert_eq!(known_version(None, MACHINE, Some(&at_r1), None), None);
    }

    #[test]
    fn a_version_of_another_machine_in_the_status_is_never_trusted() {
        let mut forged = status_with("1", Some("r1"), &[]);
        forged.state_machine_version_arn = Some(
            "arn:aws:states:us-east-1:123456789012:stateMachine:flowline-team-b-f-x-y:1".into(),
        );
        let at_r1 = machine(json!({}), "r1");
        assert_eq!(
            known_version(Some(&forged), MACHINE, Some(&at_r1), None),
            None
        );
    }

    #[test]
    fn superseded_revisions_are_retired_until_no_running_execution_uses_them() {
        let (old_a, old_b, new_a) = (arn("jd-a", 1), arn("jd-b", 1), arn("jd-a2", 1));
        let previous = FlowStatus {
            retired_job_definitions: vec![arn("jd-z", 7)],
            ..status_with("1", Some("r1"), &[old_a.clone(), old_b.clone()])
        };
        let current = vec![
            JobDefinitionRef {
                step: "a".into(),
                arn: new_a.clone(),
            },
            JobDefinitionRef {
                step: "b".into(),
                arn: old_b.clone(),
            },
        ];
        let waiting = retired(Some(&previous), &current);
        assert_eq!(waiting, vec![old_a.clone(), arn("jd-z", 7)]);

        // Version 1 still runs an execution: its revisions stay.
        let version_1 = asl(&[&old_a, &old_b], "v1");
        let version_2 = asl(&[&new_a, &old_b], "v2");
        let running = in_use([Some(&version_1), Some(&version_2)]);
        assert_eq!(
            deregistrations(&waiting, &running),
            vec![Change::DeregisterJobDefinition {
                arn: arn("jd-z", 7)
            }]
        );
        // An execution whose definition is unknown keeps everything.
        let unknown = in_use([Some(&version_2), None]);
        assert_eq!(deregistrations(&waiting, &unknown), vec![]);
        // A definition from before pinning refers to every revision of a name.
        let by_name = in_use([Some(&asl(&["jd-a"], "v0"))]);
        assert_eq!(
            deregistrations(&waiting, &by_name),
            vec![Change::DeregisterJobDefinition {
                arn: arn("jd-z", 7)
            }]
        );
        // Nothing running: all go.
        assert_eq!(deregistrations(&waiting, &in_use([])).len(), 2);
        assert_eq!(retired(None, &current), Vec::<String>::new());
    }

    #[test]
    fn names_and_versions_are_read_from_arns() {
        assert_eq!(
            job_definition_name("arn:aws:batch:us-east-1:1:job-definition/flowline-a-b:12"),
            "flowline-a-b"
        );
        assert_eq!(
            version_number("arn:aws:states:us-east-1:1:stateMachine:m:7"),
            Some(7)
        );
    }

    #[test]
    fn unchanged_outcome_gives_an_equal_status() {
        let ready = |changed: bool| Outcome::Ready {
            state_machine_arn: "arn:sm".into(),
            version: Some(Published {
                version_arn: "arn:sm:1".into(),
                revision_id: Some("r1".into()),
            }),
            job_definitions: vec![],
            retired_job_definitions: vec!["arn:old:1".into()],
            secrets: vec![],
            changed,
        };
        let first = status(
            None,
            Some(1),
            &ready(true),
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        let later = Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
                + k8s_openapi::jiff::SignedDuration::from_secs(60),
        );
        let second = status(Some(&first), Some(1), &ready(false), later);
        assert_eq!(first, second);
        assert!(crate::api::is_condition_true(
            &second.conditions,
            condition::READY
        ));
        assert_eq!(second.state_machine_version, Some(1));
        assert_eq!(second.state_machine_revision_id.as_deref(), Some("r1"));
        assert_eq!(second.retired_job_definitions, ["arn:old:1"]);
    }
}
