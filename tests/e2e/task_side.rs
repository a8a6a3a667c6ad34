//! What a step's container actually receives, proven against the emulator that runs each Batch
//! job's command as a local process with only what a container on AWS would get: the examples
//! run as written with typed parameters, secrets arrive by value and appear nowhere else, the
//! environment holds nothing from the host, every node of a multi-node step gets the task
//! contract, and an image that cannot be pulled fails the Run with the image hint.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_config, aws_exec_config, condition, create_job_queue,
    env, install_crds, jsonpath, kubectl, repo_root, tagged, task_output, unique_name, wait_for,
};

/// Jobs are real processes here (Python starts, boto3 imports): give them time.
const TIMEOUT: Duration = Duration::from_secs(180);

pub(crate) fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

fn example(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples/manifests").join(file))
        .expect("example exists")
}

pub(crate) fn run(name: &str, flow: &str, parameters: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: {flow}}}\n  parameters: {parameters}\n"
    )
}

/// Waits until the Run ends and returns its phase; a Run ending otherwise than `expected`
/// fails the test with the Run's status and its tasks' output.
pub(crate) fn wait_ended(namespace: &str, run: &str, expected: &str) {
    let phase = wait_for(&format!("Run {run} to end"), TIMEOUT, || {
        let phase = jsonpath(namespace, &format!("run/{run}"), "{.status.phase}");
        ["Succeeded", "Failed", "Aborted", "TimedOut"]
            .contains(&phase.as_str())
            .then_some(phase)
    });
    if phase != expected {
        let status = kubectl(&["get", "run", run, "-n", namespace, "-o", "yaml"], None).stdout;
        let steps = jsonpath(
            namespace,
            &format!("run/{run}"),
            "{range .status.steps[*]}{.name} {end}",
        );
        let mut logs = String::new();
        for step in steps.split_whitespace() {
            for line in step_output(namespace, run, step) {
                logs.push_str(&format!("[{step}] {line}\n"));
            }
        }
        panic!("Run {run} ended {phase}, not {expected}:\n{status}\ntask output:\n{logs}");
    }
}

/// The lines every task of a step printed, on the exec emulator.
pub(crate) fn step_output(namespace: &str, run: &str, step: &str) -> Vec<String> {
    task_output(namespace, run, step, &env().env_dir.join("exec-job-logs"))
}

pub(crate) fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// Every key under an `s3://bucket/prefix/` URI.
async fn keys_under(config: &aws_config::SdkConfig, uri: &str) -> Vec<String> {
    let (bucket, prefix) = flowline::compile::state_machine::split_s3(uri);
    let listed = s3_client(config)
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(&prefix)
        .send()
        .await
        .expect("artifacts are listed");
    listed
        .contents()
        .iter()
        .filter_map(|object| object.key().map(str::to_owned))
        .collect()
}

#[test]
fn foreach_example_runs_as_written_with_typed_parameters() {
    install_crds();
    let ns = TestNamespace::create("task-foreach");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    apply(&ns.name, &example("foreach.yaml"));
    apply(
        &ns.name,
        &run("sweep-1", "foreach-sweep", "{trials: \"3\"}"),
    );
    wait_ended(&ns.name, "sweep-1", "Succeeded");

    // `range(trials)` needs an integer: the parameter reached the task typed.
    let start = step_output(&ns.name, "sweep-1", "start");
    assert!(
        start.iter().any(|line| line == "fanning out over 3 trials"),
        "{start:#?}"
    );
    let train = step_output(&ns.name, "sweep-1", "train");
    let trials: BTreeSet<&str> = train
        .iter()
        .filter_map(|line| line.strip_prefix("trial "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(
        trials,
        BTreeSet::from(["0", "1", "2"]),
        "one task per item: {train:#?}"
    );
    let join = step_output(&ns.name, "sweep-1", "join");
    assert!(
        join.iter()
            .any(|line| line.starts_with("results of 3 trials; best ")),
        "{join:#?}"
    );
}

#[tokio::test]
async fn gpu_training_example_runs_as_written_on_the_gpu_it_asked_for() {
    install_crds();
    create_job_queue(&aws_exec_config().await, "gpu-queue").await;
    let ns = TestNamespace::create("task-gpu");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    apply(&ns.name, &example("gpu-training.yaml"));
    apply(
        &ns.name,
        &run(
            "train-1",
            "gpu-training",
            "{epochs: \"2\", learning_rate: \"0.01\"}",
        ),
    );
    wait_ended(&ns.name, "train-1", "Succeeded");
    let train = step_output(&ns.name, "train-1", "train");
    let epochs: Vec<&String> = train
        .iter()
        .filter(|line| line.starts_with("epoch "))
        .collect();
    assert_eq!(epochs.len(), 2, "two epochs (an Int parameter): {train:#?}");
}

#[tokio::test]
async fn task_gets_its_secrets_by_value_and_no_secret_appears_anywhere_else() {
    install_crds();
    let config = aws_exec_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    // Values no other test uses, so finding one anywhere is this test's leak.
    let password = format!("pw-canary-{}", unique_name("s"));
    let token = format!("token-canary-{}", unique_name("t"));
    let db = unique_name("db");
    let slack = unique_name("slack");
    secrets
        .create_secret()
        .name(&db)
        .secret_string(format!(
            r#"{{"username": "app", "password": "{password}"}}"#
        ))
        .send()
        .await
        .expect("JSON secret created");
    secrets
        .create_secret()
        .name(&slack)
        .secret_string(&token)
        .send()
        .await
        .expect("plaintext secret created");

    let ns = TestNamespace::create("task-secrets");
    let controller = ControllerProcess::start_exec(&ns.name, &[]);
    let script = r#"import hashlib, json, os
def digest(name):
    value = os.environ.get(name)
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()
print("SECRETS " + json.dumps({n: digest(n) for n in ("DB_PASSWORD", "DB_USERNAME", "SLACK_TOKEN")}, sort_keys=True))
print("ENV_NAMES " + json.dumps(sorted(os.environ)))
print("PATH " + os.environ.get("PATH", ""))
print("CWD " + os.getcwd())
print("KEY_ID " + os.environ.get("AWS_ACCESS_KEY_ID", ""))
print("PARAMETERS " + os.environ.get("FLOWLINE_PARAMETERS", ""))
import boto3
print("CALLER " + boto3.client("sts").get_caller_identity()["Arn"])
"#;
    let flow = serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "secret-env"},
        "spec": {
            "parameters": [
                {"name": "epochs", "type": "Int", "default": "3"},
                {"name": "rate", "type": "Float", "default": "0.5"},
                {"name": "dry_run", "type": "Bool", "default": "false"},
                {"name": "config", "type": "JSON", "default": "{\"layers\": [1, 2]}"},
                {"name": "note", "type": "String"}
            ],
            "steps": [
                {
                    "name": "start",
                    "command": ["python3", "-c", script],
                    "env": [{"name": "STEP_SETTING", "value": "on"}],
                    "secrets": [
                        {"id": db, "type": "json", "envPrefix": "DB_", "keys": ["username", "password"]},
                        {"id": slack, "type": "plaintext", "envVarName": "SLACK_TOKEN"}
                    ],
                    "next": ["end"]
                },
                {"name": "end", "command": ["true"]}
            ]
        }
    });
    apply(&ns.name, &flow.to_string());
    apply(
        &ns.name,
        &run("secret-env-1", "secret-env", "{epochs: \"5\"}"),
    );
    wait_ended(&ns.name, "secret-env-1", "Succeeded");
    let output = step_output(&ns.name, "secret-env-1", "start");

    // The values arrived: the task printed only their digests.
    let sha = |value: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(value.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    let received: BTreeMap<String, Option<String>> =
        serde_json::from_str(tagged(&output, "SECRETS").expect("the task printed its secrets"))
            .expect("JSON");
    assert_eq!(
        received["DB_PASSWORD"].as_deref(),
        Some(sha(&password).as_str())
    );
    assert_eq!(
        received["DB_USERNAME"].as_deref(),
        Some(sha("app").as_str())
    );
    assert_eq!(
        received["SLACK_TOKEN"].as_deref(),
        Some(sha(&token).as_str())
    );

    // Typed parameters: numbers, booleans and parsed JSON; an optional one left unset does not
    // fail the execution.
    let parameters: serde_json::Value =
        serde_json::from_str(tagged(&output, "PARAMETERS").expect("parameters printed"))
            .expect("FLOWLINE_PARAMETERS is JSON");
    assert_eq!(parameters["epochs"], serde_json::json!(5), "{parameters}");
    assert_eq!(parameters["rate"], serde_json::json!(0.5), "{parameters}");
    assert_eq!(
        parameters["dry_run"],
        serde_json::json!(false),
        "{parameters}"
    );
    assert_eq!(
        parameters["config"],
        serde_json::json!({"layers": [1, 2]}),
        "{parameters}"
    );

    // Nothing from the host: only the job's own variables, Batch's, and the container basics.
    let names: Vec<String> =
        serde_json::from_str(tagged(&output, "ENV_NAMES").expect("names printed")).expect("JSON");
    let container_basics = [
        "PATH",
        "HOME",
        "HOSTNAME",
        "LC_CTYPE",
        "PWD",
        "NVIDIA_VISIBLE_DEVICES",
        "STEP_SETTING",
        "DB_PASSWORD",
        "DB_USERNAME",
        "SLACK_TOKEN",
        "TMPDIR",
        // Set by the image (python:3.12-slim's Dockerfile) and by Step Functions on every job.
        "LANG",
        "MANAGED_BY_AWS",
    ];
    let foreign: Vec<&String> = names
        .iter()
        .filter(|name| {
            !(name.starts_with("FLOWLINE_")
                || name.starts_with("AWS_")
                || name.starts_with("ECS_")
                || container_basics.contains(&name.as_str()))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "host variables leaked into the task: {foreign:?}"
    );
    let path = tagged(&output, "PATH").expect("PATH printed");
    assert!(
        !path.contains(".cargo")
            && !path.contains(".cache/flowline/bin")
            && !path.contains("moto-venv"),
        "the task's PATH is the image's, not the host's: {path}"
    );
    // Credentials are the job role's, obtained through STS, not the emulator's own.
    let key_id = tagged(&output, "KEY_ID").expect("key id printed");
    assert!(!key_id.is_empty() && key_id != "testing", "{key_id}");
    let caller = tagged(&output, "CALLER").expect("caller printed");
    assert!(
        caller.contains(":assumed-role/flowline-job/"),
        "the task calls AWS as its job role: {caller}"
    );

    // Canary: neither value appears in any log, event, status, definition or job definition.
    let mut haystacks: Vec<(String, String)> = Vec::new();
    for resource in ["flows", "runs", "events"] {
        let yaml = kubectl(&["get", resource, "-n", &ns.name, "-o", "yaml"], None).ok();
        haystacks.push((format!("kubectl get {resource}"), yaml));
    }
    haystacks.push((
        "controller log".into(),
        std::fs::read_to_string(&controller.log).unwrap_or_default(),
    ));
    for dir in ["logs", "exec-job-logs"] {
        for file in walk(&env().env_dir.join(dir)) {
            let text = std::fs::read(&file)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            haystacks.push((file.display().to_string(), text));
        }
    }
    let batch = aws_sdk_batch::Client::new(&config);
    let definitions = batch
        .describe_job_definitions()
        .status("ACTIVE")
        .send()
        .await
        .expect("job definitions are described");
    haystacks.push((
        "job definitions".into(),
        format!("{:?}", definitions.job_definitions()),
    ));
    let sfn = aws_sdk_sfn::Client::new(&config);
    let execution = jsonpath(&ns.name, "run/secret-env-1", "{.status.executionArn}");
    let history = sfn
        .get_execution_history()
        .execution_arn(&execution)
        .send()
        .await
        .expect("history is read");
    haystacks.push((
        "execution history".into(),
        format!("{:?}", history.events()),
    ));
    let machine = sfn
        .describe_state_machine_for_execution()
        .execution_arn(&execution)
        .send()
        .await
        .expect("state machine is described");
    haystacks.push(("state machine".into(), machine.definition().to_owned()));
    for (place, text) in &haystacks {
        for secret in [&password, &token] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret value appears in {place}"
            );
        }
    }
}

/// Every file below `dir`.
pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn every_node_of_a_multi_node_step_gets_the_task_contract() {
    install_crds();
    let ns = TestNamespace::create("task-nodes");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    let write_node = r#"import os, boto3
uri = os.environ["FLOWLINE_ARTIFACT_URI"]
bucket, _, prefix = uri.removeprefix("s3://").partition("/")
node = os.environ["AWS_BATCH_JOB_NODE_INDEX"]
boto3.client("s3").put_object(Bucket=bucket, Key=prefix.rstrip("/") + "/node.txt", Body=node.encode())
print("NODE", node, os.environ["AWS_BATCH_JOB_NUM_NODES"], os.environ["FLOWLINE_TASK_ID"], uri)
"#;
    let gather = r#"import os
print("INPUTS " + os.environ["FLOWLINE_INPUT_URIS"])
"#;
    let flow = serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "gang"},
        "spec": {
            "steps": [
                {"name": "start", "command": ["true"], "next": ["train"]},
                {
                    "name": "train",
                    "command": ["python3", "-c", write_node],
                    "parallel": {"numNodes": 3},
                    "next": ["gather"]
                },
                {"name": "gather", "join": true, "command": ["python3", "-c", gather], "next": ["end"]},
                {"name": "end", "command": ["true"]}
            ]
        }
    });
    apply(&ns.name, &flow.to_string());
    apply(&ns.name, &run("gang-1", "gang", "{}"));
    wait_ended(&ns.name, "gang-1", "Succeeded");

    let train = step_output(&ns.name, "gang-1", "train");
    let nodes: BTreeMap<String, (String, String)> = train
        .iter()
        .filter_map(|line| line.strip_prefix("NODE "))
        .map(|rest| {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(parts[1], "3", "{rest}");
            (
                parts[0].to_owned(),
                (parts[2].to_owned(), parts[3].to_owned()),
            )
        })
        .collect();
    assert_eq!(
        nodes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["0", "1", "2"],
        "every node ran with the contract: {train:#?}"
    );
    let prefixes: BTreeSet<&String> = nodes.values().map(|(_, uri)| uri).collect();
    let task_ids: BTreeSet<&String> = nodes.values().map(|(task, _)| task).collect();
    assert_eq!(prefixes.len(), 3, "each node has its own prefix: {nodes:?}");
    assert_eq!(
        task_ids.len(),
        3,
        "each node has its own task id: {nodes:?}"
    );

    let config = aws_exec_config().await;
    for (node, (_, uri)) in &nodes {
        let keys = keys_under(&config, uri).await;
        assert!(
            keys.iter().any(|key| key.ends_with("/node.txt")),
            "node {node} stored its output under {uri}: {keys:?}"
        );
    }
    let gathered = step_output(&ns.name, "gang-1", "gather");
    let inputs = tagged(&gathered, "INPUTS").expect("the join printed its inputs");
    for uri in &prefixes {
        assert!(
            inputs
                .split(',')
                .any(|input| uri.starts_with(input.trim_end_matches('/'))),
            "the join sees node prefix {uri} in {inputs}"
        );
    }

    let jobs = jsonpath(
        &ns.name,
        "run/gang-1",
        "{range .status.steps[?(@.name==\"train\")].jobIds[*]}{@} {end}",
    );
    // The multi-node job first, then each node's job (`<job id>#<node>`).
    let nodes: Vec<&str> = jobs
        .split_whitespace()
        .filter(|id| id.contains('#'))
        .collect();
    assert_eq!(nodes.len(), 3, "the step lists every node's job: {jobs}");
}

#[test]
fn image_that_cannot_be_pulled_fails_the_run_with_the_image_hint() {
    install_crds();
    let ns = TestNamespace::create("task-image");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {name: no-image}\nspec:\n  steps:\n    - {name: start, image: \"registry.invalid/team/missing:1.0\", command: [\"true\"], next: [end]}\n    - {name: end, command: [\"true\"]}\n",
    );
    apply(&ns.name, &run("no-image-1", "no-image", "{}"));
    wait_ended(&ns.name, "no-image-1", "Failed");
    let message = jsonpath(
        &ns.name,
        "run/no-image-1",
        "{.status.steps[?(@.name==\"start\")].message} {.status.message}",
    );
    let (_, _, ready) = condition(&ns.name, "run/no-image-1", "Ready");
    let all = format!("{message} {ready}");
    assert!(all.contains("CannotPullContainerError"), "{all}");
}

#[tokio::test]
async fn step_with_secrets_and_no_execution_role_stalls_naming_the_setting() {
    install_crds();
    let secret = unique_name("token");
    aws_sdk_secretsmanager::Client::new(&aws_config().await)
        .create_secret()
        .name(&secret)
        .secret_string("value")
        .send()
        .await
        .expect("secret created");
    let ns = TestNamespace::create("task-no-exec-role");
    // The main emulator's controller has no FLOWLINE_EXECUTION_ROLE.
    let _controller = ControllerProcess::start(&ns.name);
    apply(
        &ns.name,
        &format!(
            "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: needs-role}}\nspec:\n  steps:\n    - name: start\n      command: [\"true\"]\n      secrets: [{{id: {secret}, type: plaintext, envVarName: TOKEN}}]\n      next: [end]\n    - {{name: end, command: [\"true\"]}}\n"
        ),
    );
    let message = wait_for("the Flow to stall", TIMEOUT, || {
        let (status, _, message) = condition(&ns.name, "flow/needs-role", "Stalled");
        (status == "True").then_some(message)
    });
    assert!(message.contains("FLOWLINE_EXECUTION_ROLE"), "{message}");
    assert!(message.contains("executionRole"), "{message}");
}
