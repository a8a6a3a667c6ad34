//! A structural check of Amazon States Language documents.
//!
//! The emulator accepts state machines real Step Functions rejects, so generated definitions
//! are checked here, offline: `StartAt` and every `Next` (also in `Catch` and `Choice`) name a
//! state of the same scope, every state is reachable from `StartAt`, every state that does not
//! transition ends (`End: true`, or is a Succeed/Fail state), and nested scopes (Parallel
//! branches, Map processors) obey the same rules.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The first structural fault found, with the JSON path of the scope it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid state machine at {scope}: {problem}")]
pub struct AslError {
    pub scope: String,
    pub problem: String,
}

/// Checks a whole definition (the document with `StartAt` and `States`).
pub fn check(definition: &Value) -> Result<(), AslError> {
    check_scope(definition, "$")
}

fn fault(scope: &str, problem: String) -> AslError {
    AslError {
        scope: scope.to_owned(),
        problem,
    }
}

fn check_scope(scope: &Value, path: &str) -> Result<(), AslError> {
    let start = scope
        .get("StartAt")
        .and_then(Value::as_str)
        .ok_or_else(|| fault(path, "missing StartAt".into()))?;
    let states = scope
        .get("States")
        .and_then(Value::as_object)
        .ok_or_else(|| fault(path, "missing States".into()))?;
    if !states.contains_key(start) {
        return Err(fault(
            path,
            format!("StartAt names unknown state `{start}`"),
        ));
    }
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, state) in states {
        let state_path = format!("{path}.States.{name}");
        let targets = transitions(state, &state_path)?;
        for target in &targets {
            if !states.contains_key(*target) {
                return Err(fault(
                    &state_path,
                    format!("Next names unknown state `{target}`"),
                ));
            }
        }
        edges.insert(name.as_str(), targets);
        check_nested(state, &state_path)?;
    }
    let mut reached = BTreeSet::from([start]);
    let mut queue = vec![start];
    while let Some(name) = queue.pop() {
        for target in edges.get(name).into_iter().flatten() {
            if reached.insert(target) {
                queue.push(target);
            }
        }
    }
    if let Some(unreached) = states.keys().find(|name| !reached.contains(name.as_str())) {
        return Err(fault(
            path,
            format!("state `{unreached}` is unreachable from StartAt"),
        ));
    }
    Ok(())
}

/// The states a state can move to; fails when a non-terminal state neither ends nor moves.
fn transitions<'a>(state: &'a Value, path: &str) -> Result<Vec<&'a str>, AslError> {
    let kind = state
        .get("Type")
        .and_then(Value::as_str)
        .ok_or_else(|| fault(path, "missing Type".into()))?;
    let mut targets = Vec::new();
    if let Some(catchers) = state.get("Catch").and_then(Value::as_array) {
        for catcher in catchers {
            let next = catcher
                .get("Next")
                .and_then(Value::as_str)
                .ok_or_else(|| fault(path, "a Catch has no Next".into()))?;
            targets.push(next);
        }
    }
    match kind {
        "Succeed" | "Fail" => Ok(targets),
        "Choice" => {
            let choices = state
                .get("Choices")
                .and_then(Value::as_array)
                .ok_or_else(|| fault(path, "Choice without Choices".into()))?;
            for choice in choices {
                let next = choice
                    .get("Next")
                    .and_then(Value::as_str)
                    .ok_or_else(|| fault(path, "a Choice rule has no Next".into()))?;
                targets.push(next);
            }
            targets.extend(state.get("Default").and_then(Value::as_str));
            Ok(targets)
        }
        "Task" | "Pass" | "Wait" | "Parallel" | "Map" => {
            let ends = state.get("End").and_then(Value::as_bool) == Some(true);
            match (state.get("Next").and_then(Value::as_str), ends) {
                (Some(_), true) => Err(fault(path, "has both Next and End".into())),
                (None, false) => Err(fault(
                    path,
                    "neither Next nor End: the state would dangle".into(),
                )),
                (Some(next), false) => {
                    targets.push(next);
                    Ok(targets)
                }
                (None, true) => Ok(targets),
            }
        }
        other => Err(fault(path, format!("unknown state Type `{other}`"))),
    }
}

fn check_nested(state: &Value, path: &str) -> Result<(), AslError> {
    if let Some(branches) = state.get("Branches").and_then(Value::as_array) {
        if branches.is_empty() {
            return Err(fault(path, "Parallel with no Branches".into()));
        }
        for (index, branch) in branches.iter().enumerate() {
            check_scope(branch, &format!("{path}.Branches[{index}]"))?;
        }
    }
    for key in ["ItemProcessor", "Iterator"] {
        if let Some(processor) = state.get(key) {
            check_scope(processor, &format!("{path}.{key}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn accepts_nested_valid_definition() {
        let definition = json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Task", "Resource": "x", "Next": "P",
                      "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Failed"}]},
                "P": {"Type": "Parallel", "Next": "M", "Branches": [
                    {"StartAt": "B", "States": {"B": {"Type": "Pass", "End": true}}}
                ]},
                "M": {"Type": "Map", "End": true, "ItemProcessor":
                    {"StartAt": "C", "States": {"C": {"Type": "Pass", "End": true}}}},
                "Failed": {"Type": "Fail"}
            }
        });
        assert_eq!(check(&definition), Ok(()));
    }

    #[test]
    fn rejects_structural_faults() {
        let cases = [
            (
                json!({"StartAt": "X", "States": {"A": {"Type": "Pass", "End": true}}}),
                "StartAt",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}),
                "unknown state `B`",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Pass"}}}),
                "neither Next nor End",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}, "B": {"Type": "Pass", "End": true}}}),
                "`B` is unreachable",
            ),
            (
                json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
                    {"StartAt": "B", "States": {"B": {"Type": "Pass"}}}]}}}),
                "Branches[0]",
            ),
        ];
        for (definition, expected) in cases {
            let error = check(&definition).expect_err("fault is found");
            assert!(
                error.to_string().contains(expected),
                "{error} should mention {expected}"
            );
        }
    }
}
