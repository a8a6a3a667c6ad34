//! Where files go: parents' prefixes to folders under `$FLOWLINE_INPUT_DIR`, and files under
//! `$FLOWLINE_OUTPUT_DIR` to keys under the task's own prefix.
//!
//! Inputs: `$FLOWLINE_INPUT_DIR/<parent step>/` holds what that parent stored. A parent that
//! ran as one task (the usual case, a branch's join included) gives its files directly there;
//! a parent that ran as several tasks — the body of a foreach, seen whole from its join, or the
//! nodes of a multi-node step — gives one subfolder per task id
//! (`$FLOWLINE_INPUT_DIR/train/0-0/`, `…/0-1/`; `…/gang/0-node-0/`).

use std::path::{Component, Path, PathBuf};

use crate::compile::state_machine::split_s3;

use super::TaskError;

/// The manifest's name under the task's prefix.
pub const MANIFEST_NAME: &str = "_task.json";

/// One parent prefix to download, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPrefix {
    pub step: String,
    pub bucket: String,
    /// The key prefix to list (ends with `/`).
    pub prefix: String,
    /// The folder its keys land in, relative to the input folder: a key's part after
    /// `prefix` is appended.
    pub folder: PathBuf,
}

/// Maps each of `uris` (the parents' prefixes under `<datastore root>/<run id>/`) to its folder.
/// A URI outside the run is refused: it would not be named after a step.
pub fn input_prefixes(
    datastore_root: &str,
    run_id: &str,
    uris: &[String],
) -> Result<Vec<InputPrefix>, TaskError> {
    let run_prefix = format!("{}/{}/", datastore_root.trim_end_matches('/'), run_id);
    let mut parsed = Vec::with_capacity(uris.len());
    for uri in uris {
        let relative = uri
            .strip_prefix(&run_prefix)
            .ok_or_else(|| TaskError::Layout(format!("input {uri} is not under {run_prefix}")))?;
        let mut parts = relative.trim_end_matches('/').split('/');
        let step = parts.next().unwrap_or_default().to_owned();
        let task = parts.next().map(str::to_owned);
        if step.is_empty() || parts.next().is_some() || !safe_name(&step) {
            return Err(TaskError::Layout(format!(
                "input {uri} is not <run>/<step>/ or <run>/<step>/<task>/"
            )));
        }
        parsed.push((uri, step, task));
    }
    Ok(parsed
        .iter()
        .map(|(uri, step, task)| {
            let tasks_of_step = parsed.iter().filter(|(_, other, _)| other == step).count();
            let folder = match task {
                Some(task) if tasks_of_step > 1 => Path::new(step).join(task),
                _ => PathBuf::from(step),
            };
            let (bucket, prefix) = split_s3(uri);
            InputPrefix {
                step: step.clone(),
                bucket,
                prefix,
                folder,
            }
        })
        .collect())
}

/// Where an object of `input` lands, relative to the input folder; `None` for a key that
/// would leave its folder (`..`, absolute) or names a folder marker.
pub fn input_path(input: &InputPrefix, key: &str) -> Option<PathBuf> {
    let rest = key.strip_prefix(&input.prefix)?;
    if rest.is_empty() || rest.ends_with('/') {
        return None;
    }
    let relative = Path::new(rest);
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| input.folder.join(relative))
}

/// The key of an output file: its path under the output folder, `/`-separated, under the
/// task's prefix.
pub fn output_key(prefix: &str, relative: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts.filter(|p| !p.is_empty())?;
    Some(format!("{prefix}{}", parts.join("/")))
}

fn safe_name(part: &str) -> bool {
    part != "." && part != ".." && !part.contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "s3://bucket/flowline/ns/flow";

    fn uris(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| format!("{ROOT}/run-1/{s}")).collect()
    }

    #[test]
    fn a_parent_that_ran_once_lands_in_a_folder_named_after_its_step() {
        let inputs = input_prefixes(ROOT, "run-1", &uris(&["a/0/", "b/0/"])).unwrap();
        assert_eq!(inputs[0].step, "a");
        assert_eq!(inputs[0].folder, PathBuf::from("a"));
        assert_eq!(inputs[0].bucket, "bucket");
        assert_eq!(inputs[0].prefix, "flowline/ns/flow/run-1/a/0/");
        assert_eq!(
            input_path(&inputs[1], "flowline/ns/flow/run-1/b/0/out/model.bin"),
            Some(PathBuf::from("b/out/model.bin"))
        );
    }

    #[test]
    fn a_foreach_body_or_the_nodes_of_a_gang_get_a_folder_per_task() {
        let foreach = input_prefixes(ROOT, "run-1", &uris(&["train/"])).unwrap();
        assert_eq!(foreach[0].folder, PathBuf::from("train"));
        assert_eq!(
            input_path(&foreach[0], "flowline/ns/flow/run-1/train/0-1/score.txt"),
            Some(PathBuf::from("train/0-1/score.txt"))
        );
        let nodes =
            input_prefixes(ROOT, "run-1", &uris(&["gang/0-node-0/", "gang/0-node-1/"])).unwrap();
        assert_eq!(nodes[1].folder, PathBuf::from("gang/0-node-1"));
    }

    #[test]
    fn keys_that_would_leave_their_folder_are_skipped() {
        let inputs = input_prefixes(ROOT, "run-1", &uris(&["a/0/"])).unwrap();
        assert_eq!(
            input_path(&inputs[0], "flowline/ns/flow/run-1/a/0/../../x"),
            None
        );
        assert_eq!(
            input_path(&inputs[0], "flowline/ns/flow/run-1/a/0/dir/"),
            None
        );
        assert!(input_prefixes(ROOT, "run-1", &["s3://other/x/".to_string()]).is_err());
    }

    #[test]
    fn output_files_keep_their_relative_path_under_the_task_prefix() {
        assert_eq!(
            output_key("p/run/start/0/", Path::new("models/a.bin")).as_deref(),
            Some("p/run/start/0/models/a.bin")
        );
        assert_eq!(output_key("p/", Path::new("")), None);
    }
}
