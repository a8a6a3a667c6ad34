//! Where a Run's status finds each step's artifacts, decided from plain data.
//!
//! A step in the task runtime leaves a `_task.json` manifest per task, at a key known from its
//! task id, listing what the task stored: the status reads those (one GetObject per task)
//! instead of listing the step's prefix. The task ids are known when the step runs once (`0`),
//! as a multi-node gang (`0-node-<i>`), or in the body of a top-level foreach whose item count
//! the status holds (`0-<index>`, `0-<index>-node-<i>`); other steps — not in the task
//! runtime, inside a nested foreach, or with more tasks than [`MAX_MANIFESTS_READ`] — are
//! listed as before.

use std::collections::BTreeMap;

use crate::api::{Artifact, Flow, ForeachStatus};
use crate::aws::s3::Listing;
use crate::compile::graph::{Chain, Segment, validate};
use crate::compile::graph_steps;
use crate::task::layout::MANIFEST_NAME;
use crate::task::manifest::{MANIFEST_VERSION, Manifest, Outcome};

/// Most manifests read for one step; a step with more tasks is listed instead.
pub const MAX_MANIFESTS_READ: usize = 100;

/// The task ids of each step whose artifacts are read from manifests. Steps left out are
/// listed. An invalid graph gives none (the Flow could not have run as written).
pub fn manifest_tasks(
    flow: &Flow,
    foreach: &[ForeachStatus],
    max_tasks: usize,
) -> BTreeMap<String, Vec<String>> {
    let Ok(graph) = validate(&graph_steps(&flow.spec.steps)) else {
        return BTreeMap::new();
    };
    // The task ids each step runs under (before a gang's `-node-<i>`): known or not.
    let mut scopes: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    walk(
        &graph.chain,
        Some(vec!["0".to_owned()]),
        foreach,
        &mut scopes,
    );
    // A handler runs where the step it handles runs (handlers may chain).
    for _ in 0..graph.handlers.len() {
        for (handler, catcher) in &graph.handlers {
            if let Some(scope) = scopes.get(catcher).cloned() {
                scopes.entry(handler.clone()).or_insert(scope);
            }
        }
    }
    let mut out = BTreeMap::new();
    for step in &flow.spec.steps {
        let wrapped =
            step.task_runtime.unwrap_or(flow.spec.task_runtime) && !step.command.is_empty();
        let Some(Some(prefixes)) = scopes.get(&step.name) else {
            continue;
        };
        if !wrapped {
            continue;
        }
        let tasks: Vec<String> = match &step.parallel {
            Some(parallel) => prefixes
                .iter()
                .flat_map(|p| (0..parallel.num_nodes.max(0)).map(move |i| format!("{p}-node-{i}")))
                .collect(),
            None => prefixes.clone(),
        };
        if tasks.len() <= max_tasks {
            out.insert(step.name.clone(), tasks);
        }
    }
    out
}

fn walk(
    chain: &Chain,
    prefixes: Option<Vec<String>>,
    foreach: &[ForeachStatus],
    scopes: &mut BTreeMap<String, Option<Vec<String>>>,
) {
    let mut last_step: Option<&str> = None;
    for segment in chain {
        match segment {
            Segment::Step(name) => {
                scopes.insert(name.clone(), prefixes.clone());
                last_step = Some(name);
            }
            Segment::Branch(branches) => {
                for branch in branches {
                    walk(branch, prefixes.clone(), foreach, scopes);
                }
                last_step = None;
            }
            Segment::Foreach(body) => {
                // The item count is in the status only for a foreach of the top execution.
                let total = last_step
                    .and_then(|step| foreach.iter().find(|f| f.step == step))
                    .map(|f| f.total);
                let inner = match (&prefixes, total) {
                    (Some(outer), Some(total)) if outer.len() == 1 => Some(
                        outer
                            .iter()
                            .flat_map(|p| (0..total.max(0)).map(move |i| format!("{p}-{i}")))
                            .collect(),
                    ),
                    _ => None,
                };
                walk(body, inner, foreach, scopes);
                last_step = None;
            }
        }
    }
}

/// One task's manifest as read: the task id, the manifest object's size, its content.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskManifest {
    pub task_id: String,
    pub size: i64,
    pub manifest: Manifest,
}

/// Parses a stored manifest; `None` for one this version cannot read (not JSON, or a newer
/// major version), which sends its step back to a listing.
pub fn parse_manifest(bytes: &[u8]) -> Option<Manifest> {
    serde_json::from_slice::<Manifest>(bytes)
        .ok()
        .filter(|m| m.version <= MANIFEST_VERSION)
}

/// The step's artifacts from its tasks' manifests (`step_uri` is `<artifact root>/<step>/`):
/// each stored output and each manifest, named relative to the step's prefix and in key
/// order — what a listing of the prefix would give — the first `limit` of them, with the
/// count. Objects of an attempt its manifest marks failed say so.
pub fn from_manifests(step_uri: &str, manifests: &[TaskManifest], limit: usize) -> Listing {
    let mut all: Vec<Artifact> = Vec::new();
    for task in manifests {
        let failed_attempt = task.manifest.outcome == Outcome::Failed;
        let entry = |name: &str, size: i64| Artifact {
            name: format!("{}/{name}", task.task_id),
            uri: format!("{step_uri}{}/{name}", task.task_id),
            size: Some(size),
            failed_attempt,
        };
        all.extend(
            task.manifest
                .artifacts
                .iter()
                .map(|a| entry(&a.name, i64::try_from(a.size).unwrap_or(i64::MAX))),
        );
        all.push(entry(MANIFEST_NAME, task.size));
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let count = all.len();
    all.truncate(limit);
    Listing {
        truncated: count > all.len(),
        count: i64::try_from(count).unwrap_or(i64::MAX),
        artifacts: all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::manifest::Artifact as Stored;
    use crate::task::manifest::TaskIdentity;

    fn flow(yaml: &str) -> Flow {
        serde_norway::from_str(yaml).unwrap()
    }

    const FLOW: &str = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: f, namespace: ns}
spec:
  taskRuntime: true
  steps:
    - {name: start, command: [a], next: [fan], catch: {next: recover}}
    - {name: recover, command: [a], next: [fan]}
    - {name: fan, command: [a], next: [body], foreach: {artifact: items.json}}
    - {name: body, command: [a], next: [join]}
    - {name: join, join: true, command: [a], next: [gang]}
    - {name: gang, command: [a], next: [plain], parallel: {numNodes: 2}}
    - {name: plain, command: [a], taskRuntime: false, next: [end]}
    - {name: end, command: [a]}
"#;

    fn counted(step: &str, total: i64) -> ForeachStatus {
        ForeachStatus {
            step: step.into(),
            total,
            ..ForeachStatus::default()
        }
    }

    #[test]
    fn wrapped_steps_get_their_task_ids_and_the_others_are_listed() {
        let tasks = manifest_tasks(&flow(FLOW), &[counted("fan", 2)], MAX_MANIFESTS_READ);
        assert_eq!(tasks["start"], ["0"]);
        assert_eq!(
            tasks["recover"],
            ["0"],
            "a handler runs where its step does"
        );
        assert_eq!(tasks["body"], ["0-0", "0-1"]);
        assert_eq!(tasks["join"], ["0"]);
        assert_eq!(tasks["gang"], ["0-node-0", "0-node-1"]);
        assert!(!tasks.contains_key("plain"), "not in the task runtime");
    }

    #[test]
    fn a_foreach_body_of_unknown_size_or_too_many_tasks_is_listed() {
        let unknown = manifest_tasks(&flow(FLOW), &[], MAX_MANIFESTS_READ);
        assert!(!unknown.contains_key("body"));
        assert_eq!(unknown["join"], ["0"]);
        let many = manifest_tasks(&flow(FLOW), &[counted("fan", 3)], 2);
        assert!(!many.contains_key("body"), "3 tasks are more than 2");
        assert_eq!(many["gang"].len(), 2);
    }

    fn manifest(outcome: Outcome, names: &[&str]) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            task: TaskIdentity {
                flow: "f".into(),
                namespace: "ns".into(),
                run_id: "r".into(),
                step: "s".into(),
                task_id: "0".into(),
                attempt: Some(1),
                node_index: None,
            },
            outcome,
            exit_code: Some(0),
            started_at: String::new(),
            ended_at: String::new(),
            artifacts: names
                .iter()
                .map(|name| Stored {
                    name: (*name).into(),
                    size: 3,
                    sha256: String::new(),
                })
                .collect(),
            errors: vec![],
        }
    }

    #[test]
    fn manifests_give_what_a_listing_would_with_failed_attempts_marked() {
        let tasks = [
            TaskManifest {
                task_id: "0-1".into(),
                size: 300,
                manifest: manifest(Outcome::Failed, &["partial.txt"]),
            },
            TaskManifest {
                task_id: "0-0".into(),
                size: 200,
                manifest: manifest(Outcome::Succeeded, &["b.txt", "a/x.bin"]),
            },
        ];
        let listing = from_manifests("s3://b/root/run/s/", &tasks, 100);
        let names: Vec<&str> = listing.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0-0/_task.json",
                "0-0/a/x.bin",
                "0-0/b.txt",
                "0-1/_task.json",
                "0-1/partial.txt"
            ]
        );
        assert_eq!(listing.count, 5);
        assert!(!listing.truncated);
        assert_eq!(listing.artifacts[1].uri, "s3://b/root/run/s/0-0/a/x.bin");
        assert_eq!(listing.artifacts[0].size, Some(200));
        assert!(!listing.artifacts[2].failed_attempt);
        assert!(listing.artifacts[3].failed_attempt && listing.artifacts[4].failed_attempt);

        let capped = from_manifests("s3://b/root/run/s/", &tasks, 2);
        assert_eq!((capped.artifacts.len(), capped.count), (2, 5));
        assert!(capped.truncated);
    }

    #[test]
    fn a_manifest_of_a_newer_version_or_no_json_is_not_read() {
        let mut newer = manifest(Outcome::Succeeded, &[]);
        let bytes = serde_json::to_vec(&newer).unwrap();
        assert!(parse_manifest(&bytes).is_some());
        newer.version = MANIFEST_VERSION + 1;
        assert!(parse_manifest(&serde_json::to_vec(&newer).unwrap()).is_none());
        assert!(parse_manifest(b"not json").is_none());
    }
}
