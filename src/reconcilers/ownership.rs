//! Which AWS identifiers the controller may act on for an object. A tenant who may patch
//! `flows/status` or `runs/status` can write any ARN there, so nothing is started, stopped,
//! deregistered or terminated on an identifier read from status alone: state machine ARNs are
//! derived from the Flow's namespace, name and UID; a version or an execution must belong to
//! that state machine; a job definition must carry the Flow's `flowline.io/uid` tag; and the
//! Batch jobs of a Run come from its execution's history. Pure: the shells in `controller/`
//! read what these functions judge.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::aws::batch::ActiveRevision;
use crate::aws::events::Rule;
use crate::compile::{TAG_KIND, TAG_NAME, TAG_NAMESPACE, TAG_UID};

/// Error name of the state a NotAllowed Flow's state machine fails with.
pub const NOT_ALLOWED_ERROR: &str = "Flowline.NotAllowed";

/// Longest cause written into the failing definition (Step Functions allows 32,768).
const MAX_CAUSE: usize = 4000;

/// Whether `version_arn` is a published version of `machine_arn` (`<machine arn>:<number>`).
pub fn is_version_of(version_arn: &str, machine_arn: &str) -> bool {
    version_arn
        .strip_prefix(machine_arn)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|number| !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()))
}

/// Whether `execution_arn` is an execution of `machine_arn` (or of one of its versions: an
/// execution's ARN names the machine, never the version).
pub fn is_execution_of(execution_arn: &str, machine_arn: &str) -> bool {
    let prefix = crate::aws::sfn::execution_arn(machine_arn, "");
    execution_arn
        .strip_prefix(&prefix)
        .is_some_and(|name| !name.is_empty() && !name.contains(':'))
}

/// The state machine an execution ran on (`…:execution:<machine>:<name>` →
/// `…:stateMachine:<machine>`); `None` for anything else.
pub fn machine_of_execution(execution_arn: &str) -> Option<String> {
    let (base, rest) = execution_arn.split_once(":execution:")?;
    let (machine, name) = rest.split_once(':')?;
    (!machine.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| format!("{base}:stateMachine:{machine}"))
}

/// Whether tags say the resource belongs to the Flow `namespace/name` (of any UID: a Flow
/// deleted and created again under its name is the same tenant's).
pub fn tagged_for_flow(tags: &BTreeMap<String, String>, namespace: &str, name: &str) -> bool {
    tags.get(TAG_NAMESPACE).map(String::as_str) == Some(namespace)
        && tags.get(TAG_NAME).map(String::as_str) == Some(name)
        && tags.get(TAG_KIND).map(String::as_str) == Some("Flow")
}

/// Whether tags say `uid` owns the resource.
pub fn owned_by(tags: &BTreeMap<String, String>, uid: &str) -> bool {
    !uid.is_empty() && tags.get(TAG_UID).map(String::as_str) == Some(uid)
}

/// The ARNs among `revisions` (as read from Batch) that are ACTIVE and tagged with `uid`: the
/// only ones a Flow may deregister, whatever its status lists.
pub fn owned_revisions(revisions: &[ActiveRevision], uid: &str) -> BTreeSet<String> {
    revisions
        .iter()
        .filter(|revision| owned_by(&revision.tags, uid))
        .map(|revision| revision.arn.clone())
        .collect()
}

/// The definition a NotAllowed Flow's state machine is replaced with: it fails at once, with
/// the reason, so an execution started on the machine (a Schedule's rule, the console) runs
/// nothing as the forbidden identity. The Flow's own definition comes back when it is
/// allowed again (the plan sees a different definition and updates it).
pub fn not_allowed_definition(message: &str) -> Value {
    let cause: String = message.chars().take(MAX_CAUSE).collect();
    json!({
        "Comment": "Flowline: this Flow is not allowed in its namespace; it runs nothing until it is",
        "StartAt": "NotAllowed",
        "States": {
            "NotAllowed": {
                "Type": "Fail",
                "Error": NOT_ALLOWED_ERROR,
                "Cause": cause,
            }
        }
    })
}

/// The rule to put so a rule stops starting executions: the same rule, disabled. `None` when
/// it is already disabled.
pub fn disabled(rule: &Rule) -> Option<Rule> {
    rule.enabled.then(|| Rule {
        enabled: false,
        ..rule.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:flowline-a-f-1-2";

    #[test]
    fn a_version_must_be_numbered_under_its_own_machine() {
        assert!(is_version_of(&format!("{MACHINE}:3"), MACHINE));
        for other in [
            "arn:aws:states:us-east-1:123456789012:stateMachine:flowline-b-f-1-2:3".to_owned(),
            format!("{MACHINE}-x:3"),
            format!("{MACHINE}:"),
            format!("{MACHINE}:3:4"),
            MACHINE.to_owned(),
        ] {
            assert!(!is_version_of(&other, MACHINE), "{other}");
        }
    }

    #[test]
    fn an_execution_must_run_on_its_own_machine() {
        let own = "arn:aws:states:us-east-1:123456789012:execution:flowline-a-f-1-2:run-1";
        assert!(is_execution_of(own, MACHINE));
        for other in [
            "arn:aws:states:us-east-1:123456789012:execution:flowline-b-f-1-2:run-1",
            "arn:aws:states:us-east-1:123456789012:execution:flowline-a-f-1-2-x:run-1",
            "arn:aws:states:us-east-1:123456789012:execution:flowline-a-f-1-2:",
            "arn:aws:states:us-east-1:999999999999:execution:flowline-a-f-1-2:run-1",
        ] {
            assert!(!is_execution_of(other, MACHINE), "{other}");
        }
    }

    #[test]
    fn an_executions_machine_and_its_flow_tags() {
        assert_eq!(
            machine_of_execution(
                "arn:aws:states:us-east-1:123456789012:execution:flowline-a-f-1-2:run-1"
            )
            .as_deref(),
            Some(MACHINE)
        );
        assert_eq!(machine_of_execution(MACHINE), None);
        let tags = BTreeMap::from([
            (TAG_NAMESPACE.to_owned(), "a".to_owned()),
            (TAG_NAME.to_owned(), "f".to_owned()),
            (TAG_KIND.to_owned(), "Flow".to_owned()),
        ]);
        assert!(tagged_for_flow(&tags, "a", "f"));
        assert!(!tagged_for_flow(&tags, "b", "f"));
        assert!(!tagged_for_flow(&tags, "a", "g"));
        assert!(!tagged_for_flow(&BTreeMap::new(), "a", "f"));
    }

    #[test]
    fn only_revisions_tagged_with_the_uid_are_owned() {
        let revision = |arn: &str, uid: Option<&str>| ActiveRevision {
            name: "n".into(),
            arn: arn.into(),
            tags: uid
                .map(|u| BTreeMap::from([(TAG_UID.to_owned(), u.to_owned())]))
                .unwrap_or_default(),
        };
        let owned = owned_revisions(
            &[
                revision("a:1", Some("uid-a")),
                revision("b:1", Some("uid-b")),
                revision("c:1", None),
            ],
            "uid-a",
        );
        assert_eq!(owned, BTreeSet::from(["a:1".to_owned()]));
        assert!(owned_revisions(&[revision("c:1", None)], "").is_empty());
    }

    #[test]
    fn the_not_allowed_definition_fails_with_the_reason() {
        let definition = not_allowed_definition("role x is not allowed");
        assert_eq!(definition["States"]["NotAllowed"]["Type"], "Fail");
        assert_eq!(
            definition["States"]["NotAllowed"]["Cause"],
            "role x is not allowed"
        );
        let long = "x".repeat(MAX_CAUSE * 2);
        let definition = not_allowed_definition(&long);
        assert_eq!(
            definition["States"]["NotAllowed"]["Cause"]
                .as_str()
                .map(str::len),
            Some(MAX_CAUSE)
        );
    }

    #[test]
    fn an_enabled_rule_is_disabled_once() {
        let rule = Rule {
            name: "r".into(),
            enabled: true,
            ..Rule::default()
        };
        let off = disabled(&rule).unwrap();
        assert!(!off.enabled);
        assert_eq!(off.name, "r");
        assert_eq!(disabled(&off), None);
    }
}
