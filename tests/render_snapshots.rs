//! Snapshots of what every example Flow renders to, reviewed like code: a change to the
//! compiler shows up here as a diff of the job definitions and state machines AWS receives.
//! Each rendered state machine also passes the structural ASL check.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

use flowline::compile::{self, asl_check, secrets::Lookups};
use flowline::settings::Settings;

#[test]
fn every_example_renders_as_snapshotted() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut rendered_flows = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable example");
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name")
            .to_owned();
        for flow in compile::flows_in_manifest(&text).expect("example parses") {
            let rendered = compile::render(&flow, &Settings::default(), Lookups::Offline)
                .unwrap_or_else(|e| panic!("{stem}: {e}"));
            asl_check::check(&rendered.state_machine.definition)
                .unwrap_or_else(|e| panic!("{stem}: {e}"));
            insta::assert_yaml_snapshot!(stem.clone(), rendered);
            rendered_flows += 1;
        }
    }
    assert!(
        rendered_flows >= 18,
        "only {rendered_flows} example flows rendered"
    );
}

/// The task runtime: wrapped commands, the join's inputs, the foreach list the wrapper checks,
/// and a step that opts out running its command as written.
#[test]
fn task_runtime_flow_renders_as_snapshotted() {
    let text = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: task-runtime, namespace: ml}
spec:
  taskRuntime: true
  datastore: {serverSideEncryption: "aws:kms", kmsKeyId: alias/flowline}
  steps:
    - {name: start, command: [python3, prepare.py], next: [train, report]}
    - {name: train, command: [python3, train.py], next: [shards], foreach: {artifact: shards.json}}
    - {name: shards, command: [python3, shard.py], next: [gather]}
    - {name: gather, join: true, command: [python3, gather.py], inputs: [shards], next: [join]}
    - {name: report, command: [sh, -c, "echo report"], taskRuntime: false, next: [join]}
    - {name: join, join: true, command: [python3, join.py], inputs: ["*"], next: [end]}
    - {name: end, command: ["true"]}
"#;
    let flows = compile::flows_in_manifest(text).expect("the flow parses");
    let rendered =
        compile::render(&flows[0], &Settings::default(), Lookups::Offline).expect("renders");
    asl_check::check(&rendered.state_machine.definition).expect("valid ASL");
    insta::assert_yaml_snapshot!("task-runtime", rendered);
}
