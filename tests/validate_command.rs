//! `flowline validate` and `flowline render` as a CI pipeline runs them: one line per problem
//! naming the file, the object and the field; exit code 1 when there is any, 0 otherwise.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code.

use std::path::Path;
use std::process::Command;

fn flowline(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(args)
        .output()
        .expect("flowline runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn repo(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn validate_prints_each_problem_with_its_file_and_fails() {
    let bad = repo("tests/e2e/invalid/flow-fargate-step-gpu.yaml");
    let also_bad = repo("tests/e2e/invalid/cpu-too-high.yaml");
    let good = repo("examples/manifests/basic-batch.yaml");
    let (code, stdout, stderr) = flowline(&["validate", "-f", &good, "-f", &bad, "-f", &also_bad]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0]
            == format!(
                "{bad}: Flow/invalid-flow: step `start`: spec.steps[0].batch.gpu is not supported on platform FARGATE (spec.batch.platform)"
            ),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{also_bad}: Flow/invalid-flow: spec.batch.cpu: Invalid value: 128"
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("3 object(s) checked, 2 problem(s)"),
        "{stderr}"
    );
}

#[test]
fn validate_passes_the_examples_and_render_refuses_what_validate_refuses() {
    let good = repo("examples/manifests/basic-batch.yaml");
    let (code, stdout, stderr) = flowline(&["validate", "-f", &good]);
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");

    let bad = repo("tests/e2e/invalid/tmpfs-larger-than-memory.yaml");
    let (code, stdout, stderr) = flowline(&["render", "-f", &bad]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(
            "spec.steps[0].batch.tmpfs.size = 2048 MiB is larger than spec.batch.memory = 1024 MiB"
        ),
        "{stderr}"
    );
}
