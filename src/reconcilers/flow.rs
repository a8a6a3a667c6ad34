//! The Flow pipeline's pure parts: what changes AWS needs ([`plan`]) and what the Flow's
//! status says ([`status`]). The I/O around them is in [`crate::controller::flow`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{FlowStatus, JobDefinitionRef, ResolvedSecret};
use crate::aws::sfn::ObservedMachine;
use crate::compile::job_definition::JobDefinition;
use crate::compile::{Rendered, StateMachine, TAG_UID};

use super::conditions::{Health, set_health};

/// What exists in AWS for a Flow, as far as the plan needs to know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The state machine under the Flow's name, if any.
    pub machine: Option<ObservedMachine>,
    /// Its `flowline.io/uid` tag, when it was read (only for a machine not yet known to be
    /// the Flow's own).
    pub machine_owner_uid: Option<Option<String>>,
    /// ACTIVE job definition revisions, by name: their ARN.
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
}

/// The changes that make AWS match `desired`: register missing job definitions, create or
/// update the state machine (only when its definition or role differ, compared as parsed
/// JSON), then deregister the revisions the Flow used before and no longer needs. Empty when
/// AWS already matches.
pub fn plan(
    desired: &Rendered,
    observed: &Observed,
    previous: &[JobDefinitionRef],
    own_uid: &str,
) -> Result<Vec<Change>, PlanError> {
    let mut changes = Vec::new();
    if let (Some(_), Some(owner)) = (&observed.machine, &observed.machine_owner_uid)
        && owner.as_deref() != Some(own_uid)
    {
        return Err(PlanError::ForeignStateMachine {
            name: desired.state_machine.name.clone(),
            owner: owner.clone(),
        });
    }
    for definition in &desired.job_definitions {
        if !observed
            .job_definitions
            .contains_key(&definition.job_definition_name)
        {
            changes.push(Change::RegisterJobDefinition(Box::new(definition.clone())));
        }
    }
    match &observed.machine {
        None => changes.push(Change::CreateStateMachine(desired.state_machine.clone())),
        Some(machine)
            if machine.definition != desired.state_machine.definition
                || machine.role_arn != desired.state_machine.role_arn =>
        {
            changes.push(Change::UpdateStateMachine {
                arn: machine.arn.clone(),
                machine: desired.state_machine.clone(),
            });
        }
        Some(_) => {}
    }
    let wanted: BTreeSet<&str> = desired
        .job_definitions
        .iter()
        .map(|d| d.job_definition_name.as_str())
        .collect();
    let mut superseded: Vec<&str> = previous
        .iter()
        .filter(|reference| !wanted.contains(job_definition_name(&reference.arn)))
        .map(|reference| reference.arn.as_str())
        .collect();
    superseded.sort_unstable();
    superseded.dedup();
    changes.extend(
        superseded
            .into_iter()
            .map(|arn| Change::DeregisterJobDefinition {
                arn: arn.to_owned(),
            }),
    );
    Ok(changes)
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
        state_machine_version_arn: Option<String>,
        job_definitions: Vec<JobDefinitionRef>,
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
            state_machine_version_arn,
            job_definitions,
            secrets,
            changed,
        } => {
            next.state_machine_arn = Some(state_machine_arn.clone());
            if let Some(version) = state_machine_version_arn {
                next.state_machine_version_arn = Some(version.clone());
                next.state_machine_version = version_number(version);
            }
            next.job_definitions = job_definitions.clone();
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
    use serde_json::json;

    use super::*;
    use crate::api::condition;
    use crate::compile::{StateMachine, StepBinding};

    const UID: &str = "uid-1";

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

    fn rendered(names: &[&str], definition_json: serde_json::Value) -> Rendered {
        Rendered {
            state_machine: StateMachine {
                name: "flowline-ns-flow-abc".into(),
                role_arn: "role".into(),
                kind: "STANDARD".into(),
                definition: definition_json,
                tags: BTreeMap::new(),
            },
            job_definitions: names.iter().map(|n| definition(n)).collect(),
            steps: Vec::<StepBinding>::new(),
        }
    }

    fn machine(definition_json: serde_json::Value) -> ObservedMachine {
        ObservedMachine {
            arn: "arn:sm".into(),
            definition: definition_json,
            role_arn: "role".into(),
        }
    }

    #[test]
    fn nothing_exists_so_everything_is_created() {
        let desired = rendered(&["jd-a", "jd-b"], json!({"StartAt": "x"}));
        let changes = plan(&desired, &Observed::default(), &[], UID).unwrap();
        assert_eq!(changes.len(), 3);
        assert!(matches!(changes[2], Change::CreateStateMachine(_)));
    }

    #[test]
    fn converged_flow_plans_no_change() {
        let desired = rendered(&["jd-a"], json!({"StartAt": "x", "States": {}}));
        let observed = Observed {
            // Key order differs: compared as parsed JSON, not as text.
            machine: Some(machine(
                serde_json::from_str(r#"{"States": {}, "StartAt": "x"}"#).unwrap(),
            )),
            machine_owner_uid: None,
            job_definitions: BTreeMap::from([("jd-a".into(), "arn:jd-a:1".into())]),
        };
        let previous = [JobDefinitionRef {
            step: "start".into(),
            arn: "arn:aws:batch:us-east-1:1:job-definition/jd-a:1".into(),
        }];
        assert_eq!(plan(&desired, &observed, &previous, UID), Ok(vec![]));
    }

    #[test]
    fn changed_step_registers_updates_and_deregisters_the_old_revision() {
        let desired = rendered(&["jd-new"], json!({"v": 2}));
        let observed = Observed {
            machine: Some(machine(json!({"v": 1}))),
            machine_owner_uid: None,
            job_definitions: BTreeMap::from([("jd-old".into(), "arn:old".into())]),
        };
        let previous = [JobDefinitionRef {
            step: "start".into(),
            arn: "arn:aws:batch:us-east-1:1:job-definition/jd-old:4".into(),
        }];
        let changes = plan(&desired, &observed, &previous, UID).unwrap();
        assert!(
            matches!(&changes[0], Change::RegisterJobDefinition(d) if d.job_definition_name == "jd-new")
        );
        assert!(matches!(&changes[1], Change::UpdateStateMachine { arn, .. } if arn == "arn:sm"));
        assert_eq!(
            changes[2],
            Change::DeregisterJobDefinition {
                arn: "arn:aws:batch:us-east-1:1:job-definition/jd-old:4".into()
            }
        );
    }

    #[test]
    fn foreign_state_machine_is_never_touched() {
        let desired = rendered(&[], json!({}));
        let observed = Observed {
            machine: Some(machine(json!({"other": true}))),
            machine_owner_uid: Some(Some("someone-else".into())),
            job_definitions: BTreeMap::new(),
        };
        assert!(matches!(
            plan(&desired, &observed, &[], UID),
            Err(PlanError::ForeignStateMachine { .. })
        ));
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
        let outcome = Outcome::Ready {
            state_machine_arn: "arn:sm".into(),
            state_machine_version_arn: Some("arn:sm:1".into()),
            job_definitions: vec![],
            secrets: vec![],
            changed: true,
        };
        let first = status(
            None,
            Some(1),
            &outcome,
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        let later = Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
                + k8s_openapi::jiff::SignedDuration::from_secs(60),
        );
        let unchanged = Outcome::Ready {
            state_machine_arn: "arn:sm".into(),
            state_machine_version_arn: Some("arn:sm:1".into()),
            job_definitions: vec![],
            secrets: vec![],
            changed: false,
        };
        let second = status(Some(&first), Some(1), &unchanged, later);
        assert_eq!(first, second);
        assert!(crate::api::is_condition_true(
            &second.conditions,
            condition::READY
        ));
        assert_eq!(second.state_machine_version, Some(1));
    }
}
