//! What `flowline render` produces, applied to the AWS emulator: every example's job
//! definitions register and its state machine is created; the linear, branch/join, foreach
//! and multi-node examples run to SUCCEEDED with the expected number of Batch jobs; a failing
//! step fails the execution.

use std::collections::BTreeMap;

use aws_sdk_sfn::types::ExecutionStatus;
use flowline::api::{EnvVar, Flow};
use flowline::compile::secrets::{Lookups, SecretLookups};
use flowline::compile::{self, Rendered, state_machine::split_s3};
use flowline::settings::Settings;

use crate::harness::{aws_config, finished_execution, repo_root, unique_name};

/// The Flows of one example manifest, renamed so repeated runs never collide.
fn example_flows(file: &str) -> Vec<Flow> {
    let path = repo_root().join("examples/manifests").join(file);
    let text = std::fs::read_to_string(&path).expect("example is readable");
    let mut flows = compile::flows_in_manifest(&text).expect("example parses");
    for flow in &mut flows {
        let name = flow.metadata.name.clone().expect("named");
        let short: String = name.chars().take(24).collect();
        flow.metadata.name = Some(unique_name(short.trim_end_matches('-')));
        flow.metadata.namespace = Some("e2e".into());
        flow.metadata.uid = Some(unique_name("uid"));
        // Every job goes to the emulator's one queue, whatever the example asks for.
        for batch in flow
            .spec
            .batch
            .iter_mut()
            .chain(flow.spec.steps.iter_mut().filter_map(|s| s.batch.as_mut()))
        {
            batch.queue = None;
        }
    }
    flows
}

/// Registers the job definitions and creates the state machine; returns its ARN.
async fn apply(config: &aws_config::SdkConfig, rendered: &Rendered) -> String {
    let batch = aws_sdk_batch::Client::new(config);
    for definition in &rendered.job_definitions {
        flowline::aws::batch::register_job_definition(&batch, definition)
            .await
            .unwrap_or_else(|e| panic!("{} registers: {e}", definition.job_definition_name));
    }
    let sfn = aws_sdk_sfn::Client::new(config);
    flowline::aws::sfn::create_state_machine(&sfn, &rendered.state_machine)
        .await
        .unwrap_or_else(|e| panic!("{} is created: {e}", rendered.state_machine.name))
}

fn render(flow: &Flow) -> Rendered {
    compile::render(
        flow,
        &Settings::default(),
        Lookups::Resolved(&lookups_for(flow)),
    )
    .unwrap_or_else(|e| panic!("{:?} renders: {e}", flow.metadata.name))
}

/// JSON secrets that list no keys get the keys the controller would look up.
fn lookups_for(flow: &Flow) -> SecretLookups {
    let mut lookups = SecretLookups::new();
    for step in &flow.spec.steps {
        for secret in step.secrets.iter().filter(|s| s.keys.is_empty()) {
            let arn = compile::secrets::offline_arn(secret, &Settings::default());
            lookups.insert(
                secret.id.clone(),
                compile::secrets::ResolvedSecret {
                    arn,
                    keys: vec!["username".into(), "password".into(), "host".into()],
                },
            );
        }
    }
    lookups
}

#[tokio::test]
async fn every_example_registers_and_creates_its_state_machine() {
    let config = aws_config().await;
    let mut applied = 0;
    for entry in std::fs::read_dir(repo_root().join("examples/manifests")).expect("examples") {
        let file = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        for flow in example_flows(&file) {
            let rendered = render(&flow);
            compile::asl_check::check(&rendered.state_machine.definition)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let arn = apply(&config, &rendered).await;
            assert!(arn.contains(&rendered.state_machine.name), "{arn}");
            applied += 1;
        }
    }
    assert!(applied >= 15, "only {applied} example flows were applied");
}

/// Starts an execution with a chosen name and waits for it to finish.
async fn run(
    config: &aws_config::SdkConfig,
    machine: &str,
    execution_name: &str,
) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
    let sfn = aws_sdk_sfn::Client::new(config);
    let started = sfn
        .start_execution()
        .state_machine_arn(machine)
        .name(execution_name)
        .input("{}")
        .send()
        .await
        .expect("execution starts");
    finished_execution(&sfn, started.execution_arn()).await
}

/// The Batch jobs (any status) whose names start with the flow's name, counted per step.
async fn jobs_per_step(config: &aws_config::SdkConfig, flow: &str) -> BTreeMap<String, usize> {
    let batch = aws_sdk_batch::Client::new(config);
    let mut counts = BTreeMap::new();
    for status in [
        aws_sdk_batch::types::JobStatus::Succeeded,
        aws_sdk_batch::types::JobStatus::Failed,
    ] {
        let listed = batch
            .list_jobs()
            .job_queue("flowline")
            .job_status(status)
            .send()
            .await
            .expect("jobs are listed");
        for job in listed.job_summary_list() {
            if let Some(step) = job
                .job_name()
                .and_then(|n| n.strip_prefix(&format!("{flow}-")))
            {
                *counts.entry(step.to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

async fn runs_to_success(file: &str, expected_jobs: &[(&str, usize)], prepare: Option<&str>) {
    let config = aws_config().await;
    let flow = example_flows(file).remove(0);
    let rendered = render(&flow);
    let machine = apply(&config, &rendered).await;
    let execution_name = unique_name("run");
    if let Some(foreach_step) = prepare {
        // Play the foreach task: write the item list where the state machine reads it.
        let root = compile::artifact_root(&flow, &Settings::default());
        let (bucket, prefix) = split_s3(&root);
        let key = format!("{prefix}{execution_name}/{foreach_step}/0/foreach.json");
        crate::harness::put_s3_object(&bucket, &key, br#"["a", "b", {"c": 3}]"#).await;
    }
    let finished = run(&config, &machine, &execution_name).await;
    assert_eq!(
        finished.status(),
        &ExecutionStatus::Succeeded,
        "{file}: {:?} {:?}",
        finished.error(),
        finished.cause()
    );
    let name = flow.metadata.name.clone().expect("named");
    let counts = jobs_per_step(&config, &name).await;
    let expected: BTreeMap<String, usize> = expected_jobs
        .iter()
        .map(|(step, n)| (step.to_string(), *n))
        .collect();
    assert_eq!(counts, expected, "{file}: Batch jobs per step");
}

#[tokio::test]
async fn linear_example_runs_to_success() {
    runs_to_success(
        "basic-batch.yaml",
        &[("start", 1), ("hello", 1), ("end", 1)],
        None,
    )
    .await;
}

#[tokio::test]
async fn branch_join_example_runs_to_success() {
    runs_to_success(
        "branch-join.yaml",
        &[
            ("start", 1),
            ("train_linear", 1),
            ("train_forest", 1),
            ("compare", 1),
            ("end", 1),
        ],
        None,
    )
    .await;
}

#[tokio::test]
async fn foreach_example_runs_once_per_item() {
    runs_to_success(
        "foreach.yaml",
        &[("start", 1), ("train", 3), ("join", 1), ("end", 1)],
        Some("start"),
    )
    .await;
}

#[tokio::test]
async fn multi_node_example_runs_to_success() {
    runs_to_success(
        "distributed-training.yaml",
        &[("start", 1), ("train", 1), ("gather", 1), ("end", 1)],
        None,
    )
    .await;
}

#[tokio::test]
async fn failing_step_fails_the_execution() {
    let config = aws_config().await;
    let mut flow = example_flows("basic-batch.yaml").remove(0);
    let step = flow
        .spec
        .steps
        .iter_mut()
        .find(|s| s.name == "hello")
        .expect("hello step");
    step.env.push(EnvVar {
        name: "FLOWLINE_EMULATOR_FAIL".into(),
        value: "Essential container in task exited".into(),
    });
    let machine = apply(&config, &render(&flow)).await;
    let finished = run(&config, &machine, &unique_name("run")).await;
    assert_eq!(finished.status(), &ExecutionStatus::Failed, "{finished:?}");
    assert_eq!(finished.error(), Some("States.TaskFailed"));
    let counts = jobs_per_step(&config, flow.metadata.name.as_deref().expect("named")).await;
    assert_eq!(
        counts.get("end"),
        None,
        "no step after the failed one runs: {counts:?}"
    );
}
