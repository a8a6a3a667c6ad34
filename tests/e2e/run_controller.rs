//! The Run reconciler against the real API server and the emulator: a Run ends Succeeded with
//! its steps' status, a failing step fails the Run naming the step and the reason, a stopped
//! Run ends Aborted with its Batch job terminated, and bad parameters stall without starting.

use std::time::Duration;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_config, condition, install_crds, jsonpath, kubectl,
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(90);

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

fn wait_phase(namespace: &str, run: &str, phase: &str) {
    wait_for(&format!("Run {run} to be {phase}"), TIMEOUT, || {
        (jsonpath(namespace, &format!("run/{run}"), "{.status.phase}") == phase).then_some(())
    });
}

/// Waits until the `work` step of a Run has a Batch job, and returns its id.
fn work_job(namespace: &str, run: &str) -> String {
    wait_for("the work step's Batch job", TIMEOUT, || {
        let job = jsonpath(
            namespace,
            &format!("run/{run}"),
            "{.status.steps[?(@.name==\"work\")].jobIds[0]}",
        );
        (!job.is_empty()).then_some(job)
    })
}

fn run(name: &str, flow: &str, parameters: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: {flow}}}\n  parameters: {parameters}\n"
    )
}

/// A two-step flow whose `work` step gets the given environment (the emulator's controls).
fn flow(name: &str, work_env: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: {name}}}\nspec:\n  parameters: [{{name: epochs, type: Int, required: true}}]\n  steps:\n    - {{name: start, command: [\"true\"], next: [work]}}\n    - {{name: work, command: [\"true\"], next: [end], env: [{work_env}]}}\n    - {{name: end, command: [\"true\"]}}\n"
    )
}

#[test]
fn branch_join_run_succeeds_with_every_step() {
    install_crds();
    let ns = TestNamespace::create("run-ok");
    let _controller = ControllerProcess::start(&ns.name);
    let manifest = std::fs::read_to_string(
        crate::harness::repo_root().join("examples/manifests/branch-join.yaml"),
    )
    .expect("example");
    apply(&ns.name, &manifest);
    apply(&ns.name, &run("compare-1", "branch-join", "{}"));
    wait_phase(&ns.name, "compare-1", "Succeeded");
    let steps = jsonpath(
        &ns.name,
        "run/compare-1",
        "{range .status.steps[*]}{.name}={.phase}:{.jobIds[0]} {end}",
    );
    for step in ["start", "train_linear", "train_forest", "compare", "end"] {
        let entry = steps
            .split_whitespace()
            .find(|s| s.starts_with(&format!("{step}=")))
            .unwrap_or_else(|| panic!("{step} in {steps}"));
        assert!(
            entry.starts_with(&format!("{step}=Succeeded:")) && entry.len() > step.len() + 11,
            "{entry}"
        );
    }
    let (ready, reason, _) = condition(&ns.name, "run/compare-1", "Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Succeeded"));
    let (finished, reason, _) = condition(&ns.name, "run/compare-1", "Finished");
    assert_eq!((finished.as_str(), reason.as_str()), ("True", "Succeeded"));
    let execution = jsonpath(&ns.name, "run/compare-1", "{.status.executionArn}");
    let uid = jsonpath(&ns.name, "run/compare-1", "{.metadata.uid}");
    assert!(
        execution.ends_with(&uid),
        "the execution is named after the Run's UID: {execution}"
    );
    assert!(
        jsonpath(
            &ns.name,
            "run/compare-1",
            "{.status.stateMachineVersionArn}"
        )
        .ends_with(":1")
    );
}

#[test]
fn failing_step_fails_the_run_naming_step_and_reason() {
    install_crds();
    let ns = TestNamespace::create("run-fail");
    let _controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        &flow(
            "breaks",
            "{name: EMULATOR_FAIL, value: \"CannotPullContainerError: pull access denied\"}",
        ),
    );
    apply(&ns.name, &run("breaks-1", "breaks", "{epochs: \"3\"}"));
    // `kubectl wait` tells the end from success.
    let finished = kubectl(
        &[
            "wait",
            "run/breaks-1",
            "-n",
            &ns.name,
            "--for=condition=Finished",
            "--timeout=90s",
        ],
        None,
    );
    assert!(finished.success, "{}", finished.stderr);
    wait_phase(&ns.name, "breaks-1", "Failed");
    let succeeded = kubectl(
        &[
            "wait",
            "run/breaks-1",
            "-n",
            &ns.name,
            "--for=condition=Ready",
            "--timeout=2s",
        ],
        None,
    );
    assert!(!succeeded.success, "a failed Run is never Ready");
    let (ready, _, _) = condition(&ns.name, "run/breaks-1", "Ready");
    let (stalled, reason, stalled_message) = condition(&ns.name, "run/breaks-1", "Stalled");
    assert_eq!(
        (ready.as_str(), stalled.as_str(), reason.as_str()),
        ("False", "True", "Failed")
    );
    assert!(
        stalled_message.contains("step `work` failed"),
        "{stalled_message}"
    );
    let message = jsonpath(&ns.name, "run/breaks-1", "{.status.message}");
    assert!(
        message.contains("step `work` failed") && message.contains("CannotPullContainerError"),
        "{message}"
    );
    assert_eq!(
        jsonpath(
            &ns.name,
            "run/breaks-1",
            "{.status.steps[?(@.name==\"work\")].phase}"
        ),
        "Failed"
    );
    assert_eq!(
        jsonpath(
            &ns.name,
            "run/breaks-1",
            "{.status.steps[?(@.name==\"start\")].phase}"
        ),
        "Succeeded"
    );
}

#[tokio::test]
async fn submitted_jobs_carry_the_flow_and_step_tags() {
    install_crds();
    let ns = TestNamespace::create("run-tags");
    let _controller = ControllerProcess::start(&ns.name);
    let manifest = std::fs::read_to_string(
        crate::harness::repo_root().join("examples/manifests/tagged-step.yaml"),
    )
    .expect("example");
    apply(&ns.name, &manifest);
    apply(&ns.name, &run("tagged-1", "tagged-step", "{}"));
    wait_phase(&ns.name, "tagged-1", "Succeeded");
    let batch = aws_sdk_batch::Client::new(&aws_config().await);
    let job_tags = |step: &'static str| {
        let batch = batch.clone();
        let job = jsonpath(
            &ns.name,
            "run/tagged-1",
            &format!("{{.status.steps[?(@.name==\"{step}\")].jobIds[0]}}"),
        );
        async move {
            let described = batch
                .describe_jobs()
                .jobs(&job)
                .send()
                .await
                .expect("job described");
            described.jobs()[0].tags().cloned().unwrap_or_default()
        }
    };
    let start = job_tags("start").await;
    assert_eq!(
        start.get("team").map(String::as_str),
        Some("recommendations"),
        "{start:?}"
    );
    assert_eq!(
        start.get("flowline.io/name").map(String::as_str),
        Some("tagged-step")
    );
    assert_eq!(start.get("flowline.io/namespace"), Some(&ns.name));
    assert!(!start.contains_key("workload"), "{start:?}");
    let expensive = job_tags("expensive").await;
    assert_eq!(
        expensive.get("workload").map(String::as_str),
        Some("batch-scoring")
    );
    assert_eq!(
        expensive.get("cost-center").map(String::as_str),
        Some("4711")
    );
}

#[tokio::test]
async fn stopped_run_ends_aborted_and_its_job_is_terminated() {
    install_crds();
    let ns = TestNamespace::create("run-stop");
    let _controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        &flow("slow", "{name: EMULATOR_RUN_SECONDS, value: \"120\"}"),
    );
    apply(&ns.name, &run("slow-1", "slow", "{epochs: \"1\"}"));
    let job = work_job(&ns.name, "slow-1");
    kubectl(
        &[
            "patch",
            "run",
            "slow-1",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"stop":true}}"#,
        ],
        None,
    )
    .ok();
    wait_phase(&ns.name, "slow-1", "Aborted");
    let config = aws_config().await;
    let batch = aws_sdk_batch::Client::new(&config);
    let described = batch
        .describe_jobs()
        .jobs(&job)
        .send()
        .await
        .expect("job described");
    let status = described.jobs()[0]
        .status()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    assert_eq!(status, "FAILED", "the running job is terminated");
    let steps = jsonpath(
        &ns.name,
        "run/slow-1",
        "{range .status.steps[*]}{.name}={.phase} {end}",
    );
    assert_eq!(
        steps.trim(),
        "start=Succeeded work=Aborted",
        "the step the stop killed is Aborted, never Succeeded"
    );
}

#[test]
fn bad_parameters_stall_and_start_nothing() {
    install_crds();
    let ns = TestNamespace::create("run-params");
    let controller = ControllerProcess::start(&ns.name);
    apply(&ns.name, &flow("typed", "{name: X, value: \"1\"}"));
    apply(
        &ns.name,
        &run("typed-1", "typed", "{epochs: many, colour: red}"),
    );
    let message = wait_for("the Run to stall", TIMEOUT, || {
        let (stalled, _, message) = condition(&ns.name, "run/typed-1", "Stalled");
        (stalled == "True").then_some(message)
    });
    assert!(message.contains("unknown parameter `colour`"), "{message}");
    assert!(
        message.contains("`epochs`: \"many\" is not a valid Int"),
        "{message}"
    );
    assert_eq!(
        controller.aws_requests().get("states:StartExecution"),
        None,
        "nothing is started"
    );
}

#[test]
fn parameter_values_too_long_for_batch_stall_the_run_naming_size_and_limit() {
    install_crds();
    let ns = TestNamespace::create("run-oversize");
    let controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {name: notes}\nspec:\n  parameters: [{name: note, type: String, default: short}, {name: remark, type: String, default: short}]\n  steps:\n    - {name: start, command: [\"true\"], next: [end]}\n    - {name: end, command: [\"true\"]}\n",
    );
    // Each value is within the API's 4,096 bytes, but every task receives both twice
    // (FLOWLINE_PARAMETERS and FLOWLINE_PARAM_<NAME>): 12,000 characters in all.
    let long = "x".repeat(3000);
    apply(
        &ns.name,
        &run(
            "notes-1",
            "notes",
            &format!("{{note: {long}, remark: {long}}}"),
        ),
    );
    let (reason, message) = wait_for("the Run to stall", TIMEOUT, || {
        let (stalled, reason, message) = condition(&ns.name, "run/notes-1", "Stalled");
        (stalled == "True").then_some((reason, message))
    });
    assert_eq!(reason, "InvalidParameters", "{message}");
    assert!(message.contains("8192"), "{message}");
    assert!(message.contains("characters"), "{message}");
    assert_eq!(
        controller.aws_requests().get("states:StartExecution"),
        None,
        "nothing is started"
    );
}

#[tokio::test]
async fn finished_steps_list_the_artifacts_their_tasks_wrote() {
    install_crds();
    let ns = TestNamespace::create("run-artifacts");
    let _controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        &flow("writer", "{name: EMULATOR_RUN_SECONDS, value: \"5\"}"),
    );
    apply(&ns.name, &run("writer-1", "writer", "{epochs: \"2\"}"));
    let root = wait_for("the artifact root", TIMEOUT, || {
        let root = jsonpath(&ns.name, "run/writer-1", "{.status.artifactRoot}");
        (!root.is_empty()).then_some(root)
    });
    // Play the work step's task: write its outputs under its own prefix while it runs.
    let config = aws_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let (bucket, prefix) = flowline::compile::state_machine::split_s3(&root);
    for (name, body) in [
        ("model.json", "{\"w\": 1}"),
        ("metrics/loss.csv", "epoch,loss\n1,0.5\n"),
    ] {
        s3.put_object()
            .bucket(&bucket)
            .key(format!("{prefix}work/0/{name}"))
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("artifact written");
    }
    wait_phase(&ns.name, "writer-1", "Succeeded");
    let listed = jsonpath(
        &ns.name,
        "run/writer-1",
        "{range .status.steps[?(@.name==\"work\")].artifacts[*]}{.name}={.uri}={.size} {end}",
    );
    assert!(
        listed.contains(&format!("0/model.json={root}/work/0/model.json=8")),
        "{listed}"
    );
    assert!(listed.contains("0/metrics/loss.csv="), "{listed}");
    assert_eq!(
        jsonpath(
            &ns.name,
            "run/writer-1",
            "{.status.steps[?(@.name==\"work\")].artifactCount}"
        ),
        "2"
    );
    assert_eq!(
        jsonpath(
            &ns.name,
            "run/writer-1",
            "{.status.steps[?(@.name==\"start\")].artifactCount}"
        ),
        "0"
    );
}

#[test]
fn step_waiting_in_runnable_too_long_is_reported_with_a_hint() {
    install_crds();
    let ns = TestNamespace::create("run-runnable");
    let _controller =
        ControllerProcess::start_with(&ns.name, &[("FLOWLINE_RUNNABLE_TIMEOUT_SECONDS", "2")]);
    apply(
        &ns.name,
        &flow(
            "queued",
            "{name: EMULATOR_RUNNABLE_SECONDS, value: \"120\"}",
        ),
    );
    apply(&ns.name, &run("queued-1", "queued", "{epochs: \"1\"}"));
    let message = wait_for("the stuck step to be reported", TIMEOUT, || {
        let (status, reason, message) = condition(&ns.name, "run/queued-1", "Reconciling");
        (status == "True" && reason == "StuckRunnable").then_some(message)
    });
    assert!(
        message.contains("work") && message.contains("compute environment"),
        "{message}"
    );
    let step_reason = jsonpath(
        &ns.name,
        "run/queued-1",
        "{.status.steps[?(@.name==\"work\")].reason}",
    );
    assert!(step_reason.contains("RUNNABLE"), "{step_reason}");
    // Stop it so nothing is left waiting.
    kubectl(
        &[
            "patch",
            "run",
            "queued-1",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"stop":true}}"#,
        ],
        None,
    )
    .ok();
    wait_phase(&ns.name, "queued-1", "Aborted");
}

#[tokio::test]
async fn controller_killed_while_starting_fifty_runs_starts_each_exactly_once() {
    install_crds();
    let ns = TestNamespace::create("run-crash");
    // Keep every Run: the test reads all fifty at the end.
    let mut controller =
        ControllerProcess::start_with(&ns.name, &[("FLOWLINE_KEEP_SUCCEEDED_RUNS", "100")]);
    apply(&ns.name, &flow("many", "{name: X, value: \"1\"}"));
    wait_for("Flow many to be Ready", TIMEOUT, || {
        (condition(&ns.name, "flow/many", "Ready").0 == "True").then_some(())
    });
    let runs: Vec<String> = (0..50)
        .map(|i| run(&format!("many-{i}"), "many", "{epochs: \"1\"}"))
        .collect();
    apply(&ns.name, &runs.join("---\n"));
    wait_for("the first executions to start", TIMEOUT, || {
        (controller
            .aws_requests()
            .get("states:StartExecution")
            .copied()
            .unwrap_or(0)
            >= 1)
            .then_some(())
    });
    controller.kill_and_restart();
    for i in 0..50 {
        wait_phase(&ns.name, &format!("many-{i}"), "Succeeded");
    }
    let machine = jsonpath(&ns.name, "flow/many", "{.status.stateMachineArn}");
    let config = aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let mut executions = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .list_executions()
            .state_machine_arn(&machine)
            .set_next_token(token)
            .send()
            .await
            .expect("executions listed");
        executions.extend(page.executions().iter().map(|e| e.name().to_owned()));
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    executions.sort();
    let before = executions.len();
    executions.dedup();
    assert_eq!(before, executions.len(), "no execution name twice");
    assert_eq!(
        executions.len(),
        50,
        "exactly one execution per Run: {executions:?}"
    );
    let tracked: Vec<String> = (0..50)
        .map(|i| jsonpath(&ns.name, &format!("run/many-{i}"), "{.status.executionArn}"))
        .collect();
    assert!(tracked.iter().all(|arn| !arn.is_empty()));
}

#[test]
fn finished_runs_beyond_the_history_limit_are_deleted() {
    install_crds();
    let ns = TestNamespace::create("run-history");
    let _controller =
        ControllerProcess::start_with(&ns.name, &[("FLOWLINE_KEEP_SUCCEEDED_RUNS", "2")]);
    apply(&ns.name, &flow("often", "{name: X, value: \"1\"}"));
    for i in 0..4 {
        apply(
            &ns.name,
            &run(&format!("often-{i}"), "often", "{epochs: \"1\"}"),
        );
    }
    wait_for("only two succeeded Runs to remain", TIMEOUT, || {
        let phases = jsonpath(&ns.name, "runs", "{range .items[*]}{.status.phase} {end}");
        let phases: Vec<&str> = phases.split_whitespace().collect();
        (phases == ["Succeeded", "Succeeded"]).then_some(())
    });
}

#[tokio::test]
async fn deleting_a_running_run_stops_its_execution() {
    install_crds();
    let ns = TestNamespace::create("run-delete");
    let _controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        &flow("long", "{name: EMULATOR_RUN_SECONDS, value: \"120\"}"),
    );
    apply(&ns.name, &run("long-1", "long", "{epochs: \"1\"}"));
    work_job(&ns.name, "long-1");
    let execution = jsonpath(&ns.name, "run/long-1", "{.status.executionArn}");
    kubectl(
        &["delete", "run", "long-1", "-n", &ns.name, "--timeout=60s"],
        None,
    )
    .ok();
    let config = aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let described = crate::harness::finished_execution(&sfn, &execution).await;
    assert_eq!(
        described.status().as_str(),
        "ABORTED",
        "the execution is stopped"
    );
}

#[tokio::test]
async fn foreach_run_reports_its_tasks_and_their_steps() {
    install_crds();
    let ns = TestNamespace::create("run-foreach");
    let _controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {name: sweep}\nspec:\n  steps:\n    - {name: start, command: [\"true\"], foreach: {artifact: foreach.json}, next: [train], env: [{name: EMULATOR_RUN_SECONDS, value: \"6\"}]}\n    - {name: train, command: [\"true\"], next: [join]}\n    - {name: join, join: true, command: [\"true\"], next: [end]}\n    - {name: end, command: [\"true\"]}\n",
    );
    apply(&ns.name, &run("sweep-1", "sweep", "{}"));
    // Play the start task: write the item list where the foreach reads it.
    let root = wait_for("the Run's artifact root", TIMEOUT, || {
        let root = jsonpath(&ns.name, "run/sweep-1", "{.status.artifactRoot}");
        (!root.is_empty()).then_some(root)
    });
    let (bucket, prefix) = root
        .trim_start_matches("s3://")
        .split_once('/')
        .expect("s3://bucket/prefix");
    crate::harness::put_s3_object(
        bucket,
        &format!("{prefix}/start/0/foreach.json"),
        b"[1, 2, 3]",
    )
    .await;
    wait_phase(&ns.name, "sweep-1", "Succeeded");
    let foreach = jsonpath(
        &ns.name,
        "run/sweep-1",
        "{.status.foreach[0].step} {.status.foreach[0].total} {.status.foreach[0].succeeded} {.status.foreach[0].finished}",
    );
    assert_eq!(foreach, "start 3 3 true");
    let train = jsonpath(
        &ns.name,
        "run/sweep-1",
        "{.status.steps[?(@.name==\"train\")].phase} {.status.steps[?(@.name==\"train\")].jobIds}",
    );
    let (phase, jobs) = train.split_once(' ').expect("train's status");
    assert_eq!(phase, "Succeeded");
    let jobs: Vec<String> = serde_json::from_str(jobs).expect("job ids");
    assert_eq!(jobs.len(), 3, "one Batch job per task: {jobs:?}");
    let steps = jsonpath(&ns.name, "run/sweep-1", "{.status.steps[*].name}");
    for step in ["start", "train", "join", "end"] {
        assert!(
            steps.split_whitespace().any(|s| s == step),
            "{step} in {steps}"
        );
    }
}

#[test]
fn multi_node_step_reports_every_node_job() {
    install_crds();
    let ns = TestNamespace::create("run-mnp");
    let _controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {name: gang}\nspec:\n  steps:\n    - {name: start, command: [\"true\"], next: [train]}\n    - {name: train, command: [\"true\"], parallel: {numNodes: 3}, next: [end]}\n    - {name: end, command: [\"true\"]}\n",
    );
    apply(&ns.name, &run("gang-1", "gang", "{}"));
    wait_phase(&ns.name, "gang-1", "Succeeded");
    let train = |path: &str| {
        jsonpath(
            &ns.name,
            "run/gang-1",
            &format!("{{.status.steps[?(@.name==\"train\")].{path}}}"),
        )
    };
    assert_eq!(train("phase"), "Succeeded");
    let ids: Vec<String> = train("jobIds[*]")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let main = ids.first().cloned().unwrap_or_default();
    assert!(!main.is_empty() && !main.contains('#'), "{ids:?}");
    assert_eq!(
        ids[1..],
        [
            format!("{main}#0"),
            format!("{main}#1"),
            format!("{main}#2")
        ],
        "the main job and every node's job"
    );
}
