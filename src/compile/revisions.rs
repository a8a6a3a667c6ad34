//! How a state machine refers to its job definitions: by revision.
//!
//! [`super::render`] names each step's job definition by name (its content hash makes the name
//! stable), because revisions exist only once Batch has registered them. Before the machine
//! is written, the Flow reconciler pins every name to the revision ARN it registered or found
//! (`arn:aws:batch:<region>:<account>:job-definition/<name>:<revision>`). A published version
//! then names exactly the revisions its executions submit, so:
//! - what a running execution needs is read from its version's definition
//!   ([`referenced`]), and a revision is deregistered only once nothing running refers to it;
//! - a revision registered again under the same name (after a crash, or by hand) never changes
//!   what an existing version runs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The Task resource prefix of Batch jobs (`submitJob` and `submitJob.sync`).
const SUBMIT_JOB: &str = "arn:aws:states:::batch:submitJob";

/// The definition with each Batch task's `JobDefinition` name replaced by its revision ARN
/// from `revisions` (name → ARN). `Err` with the names that have no revision yet.
pub fn pin(definition: &Value, revisions: &BTreeMap<String, String>) -> Result<Value, Vec<String>> {
    let mut pinned = definition.clone();
    let mut missing = BTreeSet::new();
    for_each_job_definition(&mut pinned, &mut |reference| {
        if let Value::String(name) = reference {
            match revisions.get(name.as_str()) {
                Some(arn) => *name = arn.clone(),
                None if is_revision_arn(name) => {}
                None => {
                    missing.insert(name.clone());
                }
            }
        }
    });
    if missing.is_empty() {
        Ok(pinned)
    } else {
        Err(missing.into_iter().collect())
    }
}

/// Every job definition a definition's Batch tasks submit: revision ARNs, or bare names for a
/// definition written before revisions were pinned (such a name stands for all its revisions).
pub fn referenced(definition: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut definition = definition.clone();
    for_each_job_definition(&mut definition, &mut |reference| {
        if let Some(text) = reference.as_str() {
            found.insert(text.to_owned());
        }
    });
    found
}

/// Whether `arn` (a revision ARN) is among `references` by ARN, or by its name alone.
pub fn is_referenced(arn: &str, references: &BTreeSet<String>) -> bool {
    references.contains(arn) || references.contains(name_of(arn))
}

/// `name` of `arn:aws:batch:<region>:<account>:job-definition/<name>:<revision>` (a bare name
/// is returned as is).
pub fn name_of(arn: &str) -> &str {
    match arn.rsplit_once("job-definition/") {
        Some((_, tail)) => tail.rsplit_once(':').map_or(tail, |(name, _)| name),
        None => arn,
    }
}

fn is_revision_arn(reference: &str) -> bool {
    reference.starts_with("arn:") && reference.contains(":job-definition/")
}

/// Calls `visit` with the `Parameters.JobDefinition` of every Batch Task, at any depth
/// (Parallel branches, Map item processors).
fn for_each_job_definition(value: &mut Value, visit: &mut impl FnMut(&mut Value)) {
    match value {
        Value::Object(map) => {
            let is_batch_task = map.get("Type").and_then(Value::as_str) == Some("Task")
                && map
                    .get("Resource")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r.starts_with(SUBMIT_JOB));
            if is_batch_task
                && let Some(reference) = map
                    .get_mut("Parameters")
                    .and_then(|p| p.get_mut("JobDefinition"))
            {
                visit(reference);
            }
            for child in map.values_mut() {
                for_each_job_definition(child, visit);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| for_each_job_definition(item, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ARN_A: &str = "arn:aws:batch:us-east-1:1:job-definition/jd-a:3";
    const ARN_B: &str = "arn:aws:batch:us-east-1:1:job-definition/jd-b:1";

    fn task(job_definition: &str) -> Value {
        json!({
            "Type": "Task",
            "Resource": "arn:aws:states:::batch:submitJob.sync",
            "Parameters": {"JobName": "x", "JobDefinition": job_definition},
            "End": true
        })
    }

    fn machine() -> Value {
        json!({
            "StartAt": "start",
            "States": {
                "start": task("jd-a"),
                "split.branches": {"Type": "Parallel", "Branches": [
                    {"StartAt": "left", "States": {"left": task("jd-b")}}
                ]},
                "split.foreach": {"Type": "Map", "ItemProcessor": {
                    "StartAt": "each", "States": {"each": task("jd-a")}
                }},
                "other": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                          "Parameters": {"JobDefinition": "not-batch"}}
            }
        })
    }

    #[test]
    fn every_batch_task_at_any_depth_is_pinned_to_its_revision() {
        let revisions = BTreeMap::from([
            ("jd-a".to_owned(), ARN_A.to_owned()),
            ("jd-b".to_owned(), ARN_B.to_owned()),
        ]);
        let pinned = pin(&machine(), &revisions).unwrap();
        let states = &pinned["States"];
        assert_eq!(states["start"]["Parameters"]["JobDefinition"], ARN_A);
        assert_eq!(
            states["split.branches"]["Branches"][0]["States"]["left"]["Parameters"]["JobDefinition"],
            ARN_B
        );
        assert_eq!(
            states["split.foreach"]["ItemProcessor"]["States"]["each"]["Parameters"]["JobDefinition"],
            ARN_A
        );
        assert_eq!(states["other"]["Parameters"]["JobDefinition"], "not-batch");
        assert_eq!(
            referenced(&pinned),
            BTreeSet::from([ARN_A.to_owned(), ARN_B.to_owned()])
        );
        // Pinning is idempotent: an already pinned definition stays as it is.
        assert_eq!(pin(&pinned, &BTreeMap::new()), Ok(pinned.clone()));
    }

    #[test]
    fn a_name_without_a_revision_cannot_be_pinned() {
        let revisions = BTreeMap::from([("jd-a".to_owned(), ARN_A.to_owned())]);
        assert_eq!(pin(&machine(), &revisions), Err(vec!["jd-b".to_owned()]));
    }

    #[test]
    fn a_bare_name_refers_to_every_revision_of_it() {
        let references = referenced(&machine());
        assert!(is_referenced(ARN_A, &references));
        assert!(is_referenced(ARN_B, &references));
        assert!(!is_referenced(
            "arn:aws:batch:us-east-1:1:job-definition/jd-c:1",
            &references
        ));
        assert_eq!(name_of(ARN_A), "jd-a");
        assert_eq!(name_of("jd-a"), "jd-a");
    }
}
