//! Where files go: parents' prefixes to folders under `$FLOWLINE_INPUT_DIR`, and files under
//! `$FLOWLINE_OUTPUT_DIR` to keys under the task's own prefix.
//!
//! Inputs: `$FLOWLINE_INPUT_DIR/<parent step>/` holds what that parent stored. A parent that
//! ran as one task (the usual case, a branch's join included) gives its files directly there;
//! a parent that ran as several tasks — the body of a foreach, seen whole from its join, or the
//! nodes of a multi-node step — gives one subfolder per task id
//! (`$FLOWLINE_INPUT_DIR/train/0-0/`, `…/0-1/`; `…/gang/0-node-0/`).
//!
//!
//! Across a foreach boundary a task gets its parent's whole step prefix, which inside an outer
//! foreach also holds the tasks of the other outer iterations. Task `t` takes only its own
//! relatives there: the iterations it joins (`t-<index>`: join `0-1` takes `0-1-0`, `0-1-1`,
//! never `0-0-0`), or the split it is an iteration of (body `0-1-0` takes split `0-1`).

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
    /// For a whole step's prefix: this task's id, whose relatives alone are taken.
    pub whole_step_for: Option<String>,
}

/// Whether task `other` of a whole-step parent belongs to task `own`: an iteration `own`
/// joins (`<own>-<index>`), or the split `own` is an iteration of (`own` is `<other>-<index>…`).
fn related(own: &str, other: &str) -> bool {
    let indexes = |rest: &str| {
        rest.split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    };
    let joined = own_prefix(other, own).is_some_and(|index| !index.contains('-') && indexes(index));
    let split = own_prefix(own, other).is_some_and(indexes);
    joined || split
}

/// `long` without `<short>-`, if it starts so.
fn own_prefix<'a>(long: &'a str, short: &str) -> Option<&'a str> {
    long.strip_prefix(short)?.strip_prefix('-')
}

/// Maps each of `uris` (the parents' prefixes under `<datastore root>/<run id>/`) to its folder,
/// for the task `task_id`. A URI outside the run is refused: it would not be named after a step.
pub fn input_prefixes(
    datastore_root: &str,
    run_id: &str,
    task_id: &str,
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
                whole_step_for: task.is_none().then(|| task_id.to_owned()),
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
    if let Some(own) = &input.whole_step_for
        && !related(own, rest.split('/').next()?)
    {
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
        let inputs = input_prefixes(ROOT, "run-1", "0", &uris(&["a/0/", "b/0/"])).unwrap();
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
        let foreach = input_prefixes(ROOT, "run-1", "0", &uris(&["train/"])).unwrap();
        assert_eq!(foreach[0].folder, PathBuf::from("train"));
        assert_eq!(
            input_path(&foreach[0], "flowline/ns/flow/run-1/train/0-1/score.txt"),
            Some(PathBuf::from("train/0-1/score.txt"))
        );
        let nodes = input_prefixes(
            ROOT,
            "run-1",
            "0",
            &uris(&["gang/0-node-0/", "gang/0-node-1/"]),
        )
        .unwrap();
        assert_eq!(nodes[1].folder, PathBuf::from("gang/0-node-1"));
    }

    #[test]
    fn inside_an_outer_foreach_a_join_takes_only_its_own_iterations() {
        let inner = input_prefixes(ROOT, "run-1", "0-1", &uris(&["inner/"])).unwrap();
        let key = |task: &str| format!("flowline/ns/flow/run-1/inner/{task}/v.txt");
        assert_eq!(
            input_path(&inner[0], &key("0-1-0")),
            Some(PathBuf::from("inner/0-1-0/v.txt"))
        );
        assert_eq!(
            input_path(&inner[0], &key("0-1-12")),
            Some(PathBuf::from("inner/0-1-12/v.txt"))
        );
        for other in ["0-0-1", "0-10-0", "0-1", "0-1-x", "0-1-0-node-0", "0-1-0-1"] {
            assert_eq!(input_path(&inner[0], &key(other)), None, "{other}");
        }
    }

    #[test]
    fn inside_an_outer_foreach_a_body_takes_only_the_split_it_iterates_over() {
        let body = input_prefixes(ROOT, "run-1", "0-1-0", &uris(&["split/"])).unwrap();
        let key = |task: &str| format!("flowline/ns/flow/run-1/split/{task}/v.txt");
        assert_eq!(
            input_path(&body[0], &key("0-1")),
            Some(PathBuf::from("split/0-1/v.txt"))
        );
        let top = input_prefixes(ROOT, "run-1", "0-3", &uris(&["start/"])).unwrap();
        assert_eq!(
            input_path(&top[0], "flowline/ns/flow/run-1/start/0/v.txt"),
            Some(PathBuf::from("start/0/v.txt"))
        );
        for other in ["0-0", "0-10", "0-1-0", "1"] {
            assert_eq!(input_path(&body[0], &key(other)), None, "{other}");
        }
    }

    #[test]
    fn keys_that_would_leave_their_folder_are_skipped() {
        let inputs = input_prefixes(ROOT, "run-1", "0", &uris(&["a/0/"])).unwrap();
        assert_eq!(
            input_path(&inputs[0], "flowline/ns/flow/run-1/a/0/../../x"),
            None
        );
        assert_eq!(
            input_path(&inputs[0], "flowline/ns/flow/run-1/a/0/dir/"),
            None
        );
        assert!(input_prefixes(ROOT, "run-1", "0", &["s3://other/x/".to_string()]).is_err());
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
