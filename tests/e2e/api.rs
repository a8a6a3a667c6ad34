//! The API against a real kube-apiserver: the CRDs install, every example is accepted, every
//! manifest of `tests/e2e/invalid` is rejected with a message that names the offending field,
//! a Run's spec cannot change after it is created (except `stop`), and `kubectl explain` and
//! `kubectl get` show what the types document.
//!
//! `tests/e2e/invalid` conventions: each file holds one object and starts with
//! `# expect: <text>`, a substring of the API server's error. A pair `<name>.create.yaml` /
//! `<name>.update.yaml` tests an update: the first is created (and must be accepted), then the
//! second, which carries the `# expect:` line, must be rejected as a change of it.
// Test code: a failed expectation is a failed test, helpers included.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{self, TestNamespace, kubectl};

/// The `.yaml` files of a folder of the repository, sorted by name.
fn yaml_files(relative: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(harness::repo_root().join(relative))
        .expect("folder exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The text after `# expect: ` on the first line of a manifest.
fn expected_error(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable manifest");
    text.lines()
        .next()
        .and_then(|line| line.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} does not start with `# expect: `", path.display()))
        .trim()
        .to_owned()
}

/// `kubectl apply --dry-run=server` with strict field validation: everything the API server
/// checks, nothing stored.
fn dry_run_apply(namespace: &str, path: &Path) -> harness::Kubectl {
    kubectl(
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            namespace,
            "-f",
            path_str(path),
        ],
        None,
    )
}

#[test]
fn every_example_is_accepted() {
    harness::install_crds();
    let namespace = TestNamespace::create("api-examples");
    let examples = yaml_files("examples/manifests");
    assert!(examples.len() >= 20, "{examples:?}");
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|path| {
            let result = dry_run_apply(&namespace.name, path);
            (!result.success).then(|| format!("{}: {}", file_name(path), result.stderr))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "rejected examples:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_invalid_manifest_is_rejected_naming_the_field() {
    harness::install_crds();
    let namespace = TestNamespace::create("api-invalid");
    let manifests: Vec<PathBuf> = yaml_files("tests/e2e/invalid")
        .into_iter()
        .filter(|path| {
            let name = file_name(path);
            !name.ends_with(".create.yaml") && !name.ends_with(".update.yaml")
        })
        .collect();
    assert!(manifests.len() >= 35, "{}", manifests.len());
    let mut failures = Vec::new();
    for path in &manifests {
        let expect = expected_error(path);
        let result = dry_run_apply(&namespace.name, path);
        if result.success {
            failures.push(format!(
                "{}: accepted, expected {expect:?}",
                file_name(path)
            ));
        } else if !result.stderr.contains(&expect) {
            failures.push(format!(
                "{}: expected {expect:?} in:\n    {}",
                file_name(path),
                result.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_run_spec_cannot_change_after_create_except_stop() {
    harness::install_crds();
    let namespace = TestNamespace::create("api-immutable");
    let creates: Vec<PathBuf> = yaml_files("tests/e2e/invalid")
        .into_iter()
        .filter(|path| file_name(path).ends_with(".create.yaml"))
        .collect();
    assert!(!creates.is_empty());
    for create in &creates {
        let update = create.with_file_name(file_name(create).replace(".create.", ".update."));
        kubectl(
            &["apply", "-n", &namespace.name, "-f", path_str(create)],
            None,
        )
        .ok();
        let expect = expected_error(&update);
        let result = kubectl(
            &["apply", "-n", &namespace.name, "-f", path_str(&update)],
            None,
        );
        assert!(
            !result.success,
            "{}: the update was accepted",
            file_name(&update)
        );
        assert!(
            result.stderr.contains(&expect),
            "{}: expected {expect:?} in {}",
            file_name(&update),
            result.stderr
        );
    }

    // Stopping is the one change allowed.
    let run = "run-to-stop";
    let manifest = format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata:\n  name: {run}\nspec:\n  \
         flowRef:\n    name: hello-batch\n  parameters:\n    greeting: hi\n"
    );
    kubectl(
        &["apply", "-n", &namespace.name, "-f", "-"],
        Some(&manifest),
    )
    .ok();
    kubectl(
        &[
            "patch",
            "run",
            run,
            "-n",
            &namespace.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"stop":true}}"#,
        ],
        None,
    )
    .ok();
    let stop = kubectl(
        &[
            "get",
            "run",
            run,
            "-n",
            &namespace.name,
            "-o",
            "jsonpath={.spec.stop}",
        ],
        None,
    )
    .ok();
    assert_eq!(stop, "true");
}

#[test]
fn kubectl_explain_shows_the_documentation() {
    harness::install_crds();
    // The CRDs' OpenAPI is published a moment after they are Established.
    let batch = harness::wait_for(
        "kubectl explain flow.spec.steps.batch",
        Duration::from_secs(30),
        || {
            let result = kubectl(&["explain", "flow.spec.steps.batch"], None);
            (result.success && result.stdout.contains("sharedMemory")).then_some(result.stdout)
        },
    );
    let flat = batch.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "AWS Batch settings of this step",
        "overrides the same field of `spec.batch`",
        "vCPUs for each container",
        "Memory for each container, in MiB",
        "Fargate",
    ] {
        assert!(flat.contains(text), "{text:?} not in:\n{batch}");
    }
    let secrets = kubectl(&["explain", "flow.spec.steps.secrets.type"], None).ok();
    assert!(secrets.contains("DATABASE_CONFIG_USERNAME"), "{secrets}");
    let run = kubectl(&["explain", "run.spec.stop"], None).ok();
    assert!(run.contains("abort"), "{run}");
    let schedule = kubectl(&["explain", "schedule.spec.cron"], None).ok();
    assert!(schedule.contains("UTC"), "{schedule}");
}

#[test]
fn kubectl_get_shows_the_printer_columns() {
    harness::install_crds();
    let namespace = TestNamespace::create("api-columns");
    for example in [
        "basic-batch.yaml",
        "run.yaml",
        "scheduled-flow.yaml",
        "s3-event-flow.yaml",
    ] {
        let path = harness::repo_root()
            .join("examples/manifests")
            .join(example);
        kubectl(
            &["apply", "-n", &namespace.name, "-f", path_str(&path)],
            None,
        )
        .ok();
    }
    let headers = |kind: &str| -> String {
        let table = kubectl(&["get", kind, "-n", &namespace.name], None).ok();
        let header = table.lines().next().unwrap_or_default();
        header.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(headers("fl"), "NAME READY VERSION AGE");
    assert_eq!(headers("flrun"), "NAME FLOW PHASE READY STARTED AGE");
    assert_eq!(
        headers("flsched"),
        "NAME FLOW SCHEDULE SUSPENDED READY LAST RUN AGE"
    );

    // The Schedule column shows whichever trigger is set.
    let schedules = kubectl(&["get", "flsched", "-n", &namespace.name], None).ok();
    assert!(schedules.contains("0 3 * * *"), "{schedules}");
    assert!(schedules.contains("acme-landing-zone"), "{schedules}");

    // One command lists all three kinds through the `flowline` category.
    let all = kubectl(&["get", "fl,flrun,flsched", "-n", &namespace.name], None).ok();
    let category = kubectl(
        &["get", "flowline", "-n", &namespace.name, "-o", "name"],
        None,
    )
    .ok();
    for object in [
        "flow.flowline.io/hello-batch",
        "run.flowline.io/hello-batch-1",
        "schedule.flowline.io/nightly-report",
    ] {
        assert!(all.contains(object), "{object} not in {all}");
        assert!(category.contains(object), "{object} not in {category}");
    }

    // Runs can be selected by their Flow.
    let runs = kubectl(
        &[
            "get",
            "flrun",
            "-n",
            &namespace.name,
            "--field-selector",
            "spec.flowRef.name=hello-batch",
            "-o",
            "name",
        ],
        None,
    )
    .ok();
    assert_eq!(runs.trim(), "run.flowline.io/hello-batch-1");
}
