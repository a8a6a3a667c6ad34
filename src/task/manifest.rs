//! `_task.json`: what one attempt of a task did, stored beside its outputs.

use serde::{Deserialize, Serialize};

/// Version of the manifest's shape; readers refuse a newer major.
pub const MANIFEST_VERSION: u32 = 1;

/// How the attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// One stored output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path under the task's prefix (`/`-separated).
    pub name: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// The manifest of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    /// Which task and attempt, written at the top level of the JSON.
    #[serde(flatten)]
    pub task: TaskIdentity,
    pub outcome: Outcome,
    /// The command's exit code (128 + n when signal n ended it); absent when the command
    /// never started.
    pub exit_code: Option<i32>,
    /// RFC 3339 times of the wrapper's start and end.
    pub started_at: String,
    pub ended_at: String,
    pub artifacts: Vec<Artifact>,
    /// Why the attempt failed besides the exit code (inputs, the foreach list, uploads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What the manifest is built from.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub exit_code: Option<i32>,
    pub errors: Vec<String>,
    pub artifacts: Vec<Artifact>,
}

impl Attempt {
    /// Succeeded only when the command exited 0 and nothing else went wrong.
    pub fn outcome(&self) -> Outcome {
        if self.exit_code == Some(0) && self.errors.is_empty() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        }
    }
}

/// Identity of the task, from the contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIdentity {
    pub flow: String,
    pub namespace: String,
    pub run_id: String,
    pub step: String,
    pub task_id: String,
    /// Batch's attempt (from 1); absent outside Batch.
    pub attempt: Option<u32>,
    /// The node of a multi-node step.
    pub node_index: Option<u32>,
}

/// Builds the manifest; artifacts are sorted by name so equal attempts give equal manifests.
pub fn manifest(
    identity: &TaskIdentity,
    attempt: &Attempt,
    started_at: jiff::Timestamp,
    ended_at: jiff::Timestamp,
) -> Manifest {
    let mut artifacts = attempt.artifacts.clone();
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    Manifest {
        version: MANIFEST_VERSION,
        task: identity.clone(),
        outcome: attempt.outcome(),
        exit_code: attempt.exit_code,
        started_at: started_at.to_string(),
        ended_at: ended_at.to_string(),
        artifacts,
        errors: attempt.errors.clone(),
    }
}

/// The exit code a shell reports: the process's own, or 128 + the signal that ended it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_records_exit_code_attempt_times_and_each_artifact() {
        let identity = TaskIdentity {
            flow: "f".into(),
            run_id: "r".into(),
            step: "train".into(),
            task_id: "0-node-1".into(),
            attempt: Some(2),
            node_index: Some(1),
            ..TaskIdentity::default()
        };
        let attempt = Attempt {
            exit_code: Some(0),
            errors: vec![],
            artifacts: vec![
                Artifact {
                    name: "z.txt".into(),
                    size: 1,
                    sha256: "aa".into(),
                },
                Artifact {
                    name: "a.txt".into(),
                    size: 2,
                    sha256: "bb".into(),
                },
            ],
        };
        let start = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let end = jiff::Timestamp::from_second(1_700_000_005).unwrap();
        let json = serde_json::to_value(manifest(&identity, &attempt, start, end)).unwrap();
        assert_eq!(json["outcome"], "succeeded");
        assert_eq!(json["exitCode"], 0);
        assert_eq!(json["attempt"], 2);
        assert_eq!(json["nodeIndex"], 1);
        assert_eq!(json["startedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(json["endedAt"], "2023-11-14T22:13:25Z");
        assert_eq!(json["artifacts"][0]["name"], "a.txt");
        assert_eq!(json["artifacts"][1]["sha256"], "aa");
        assert!(json.get("errors").is_none());
    }

    #[test]
    fn a_nonzero_exit_or_any_error_marks_the_attempt_failed() {
        let failed = Attempt {
            exit_code: Some(3),
            ..Attempt::default()
        };
        assert_eq!(failed.outcome(), Outcome::Failed);
        let foreach = Attempt {
            exit_code: Some(0),
            errors: vec!["foreach list is not an array".into()],
            ..Attempt::default()
        };
        assert_eq!(foreach.outcome(), Outcome::Failed);
        let never_started = Attempt::default();
        assert_eq!(never_started.outcome(), Outcome::Failed);
    }

    #[test]
    fn signal_death_is_128_plus_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
    }
}
