//! The Flow reconciler against the real API server and the emulator: Flows become Ready with
//! the resources the renderer predicts, edits publish versions, a no-op makes no AWS write,
//! bad input stalls without touching AWS, deletion honours the policy, drift is repaired, and
//! a controller killed mid-way converges without duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flowline::api::{Flow, SecretType};
use flowline::compile::secrets::{Lookups, ResolvedSecret, SecretLookups};
use flowline::compile::{self, TAG_NAMESPACE};
use flowline::settings::Settings;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_config, condition, create_job_queue, install_crds,
    jsonpath, kubectl, repo_root, wait_for, wait_for_async, writes,
};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

fn example(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples/manifests").join(file))
        .expect("example exists")
}

fn wait_ready(namespace: &str, flow: &str) {
    wait_for(&format!("Flow {flow} to be Ready"), READY_TIMEOUT, || {
        let (status, _, _) = condition(namespace, &format!("flow/{flow}"), "Ready");
        (status == "True").then_some(())
    });
}

fn wait_stalled(namespace: &str, flow: &str) -> String {
    wait_for(&format!("Flow {flow} to be Stalled"), READY_TIMEOUT, || {
        let (status, _, message) = condition(namespace, &format!("flow/{flow}"), "Stalled");
        (status == "True").then_some(message)
    })
}

fn flow_object(namespace: &str, name: &str) -> Flow {
    let json = kubectl(&["get", "flow", name, "-n", namespace, "-o", "json"], None).ok();
    serde_json::from_str(&json).expect("a Flow")
}

/// Queues and secrets the examples name, created as a platform team would.
async fn create_example_dependencies(config: &aws_config::SdkConfig) -> SecretLookups {
    for queue in [
        "gpu-queue",
        "multi-node-gpu-queue",
        "inferentia-queue",
        "trainium-queue",
    ] {
        create_job_queue(config, queue).await;
    }
    // Fargate steps need a queue of Fargate compute environments (the controller checks).
    let python = std::env::var("FLOWLINE_MOTO_PYTHON").expect("FLOWLINE_MOTO_PYTHON is set");
    let script = crate::harness::repo_root().join("tests/e2e/fargate_queue.py");
    let made = std::process::Command::new(python)
        .arg(script)
        .arg(&crate::harness::env().aws_endpoint)
        .arg("fargate-queue")
        .output()
        .expect("python runs");
    assert!(
        made.status.success(),
        "fargate_queue.py: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let secrets = aws_sdk_secretsmanager::Client::new(config);
    let json_value = r#"{"username": "app", "password": "s3cr3t", "host": "db.internal"}"#;
    for (id, kind) in [
        ("database-config", SecretType::Json),
        ("prod/postgres", SecretType::Json),
        ("slack/bot-token", SecretType::Plaintext),
        ("certs/client-keystore", SecretType::Binary),
    ] {
        let request = secrets.create_secret().name(id);
        let request = match kind {
            SecretType::Json => request.secret_string(json_value),
            SecretType::Plaintext => request.secret_string("xoxb-token"),
            SecretType::Binary => {
                request.secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(vec![
                    0u8, 1, 2, 255,
                ]))
            }
        };
        let _ = request.send().await;
    }
    // A secret in another account and region, read through a role there.
    let role = "arn:aws:iam::210987654321:role/flowline-secrets-reader";
    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("e2e")
        .configure(config)
        .build()
        .await;
    let warehouse = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(config)
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(provider)
            .build(),
    );
    let _ = warehouse
        .create_secret()
        .name("analytics/warehouse")
        .secret_string(r#"{"token": "t"}"#)
        .send()
        .await;
    let described = warehouse
        .describe_secret()
        .secret_id("analytics/warehouse")
        .send()
        .await
        .expect("warehouse secret");
    let warehouse_arn = described.arn().expect("arn").to_owned();
    assert!(
        warehouse_arn.contains(":eu-west-1:210987654321:"),
        "{warehouse_arn}"
    );

    let mut lookups = SecretLookups::new();
    lookups.insert(
        "analytics/warehouse".into(),
        ResolvedSecret {
            arn: warehouse_arn,
            keys: vec!["token".into()],
        },
    );
    for id in [
        "database-config",
        "prod/postgres",
        "slack/bot-token",
        "certs/client-keystore",
    ] {
        let described = secrets
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .expect("secret exists");
        lookups.insert(
            id.to_owned(),
            ResolvedSecret {
                arn: described.arn().expect("arn").to_owned(),
                keys: vec!["host".into(), "password".into(), "username".into()],
            },
        );
    }
    lookups
}

#[tokio::test]
async fn example_flows_become_ready_with_the_rendered_resources() {
    install_crds();
    let config = aws_config().await;
    let lookups = create_example_dependencies(&config).await;
    let ns = TestNamespace::create("flows");
    let _controller = ControllerProcess::start(&ns.name);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("examples/manifests")).expect("examples") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("readable");
        let flows = compile::flows_in_manifest(&text).expect("parses");
        if flows.is_empty() {
            continue;
        }
        // Only the Flows: Runs and Schedules are other reconcilers' business.
        for flow in &flows {
            let yaml = serde_json::to_string(flow).expect("serializes");
            apply(&ns.name, &yaml);
            names.push(flow.metadata.name.clone().expect("named"));
        }
    }
    assert!(names.len() >= 18, "{names:?}");
    let sfn = aws_sdk_sfn::Client::new(&config);
    for name in &names {
        wait_ready(&ns.name, name);
        let flow = flow_object(&ns.name, name);
        // The controller runs with path-style S3 addressing (the emulator needs it), which
        // wrapped steps are told.
        let settings = Settings {
            s3_force_path_style: true,
            ..Settings::default()
        };
        let predicted = compile::render(&flow, &settings, Lookups::Resolved(&lookups))
            .unwrap_or_else(|e| panic!("{name} renders: {e}"));
        let status = flow.status.clone().expect("status");
        let arn = status
            .state_machine_arn
            .clone()
            .expect("state machine ARN in status");
        assert!(
            arn.ends_with(&format!(":{}", predicted.state_machine.name)),
            "{arn}"
        );
        let described = sfn
            .describe_state_machine()
            .state_machine_arn(&arn)
            .send()
            .await
            .expect("exists");
        let definition: serde_json::Value =
            serde_json::from_str(described.definition()).expect("JSON");
        // As rendered, with each job definition pinned to the revision the status records.
        let revisions: BTreeMap<String, String> = status
            .job_definitions
            .iter()
            .map(|r| {
                (
                    flowline::reconcilers::flow::job_definition_name(&r.arn).to_owned(),
                    r.arn.clone(),
                )
            })
            .collect();
        let pinned = compile::revisions::pin(&predicted.state_machine.definition, &revisions)
            .unwrap_or_else(|missing| panic!("{name}: no revision for {missing:?}"));
        assert_eq!(definition, pinned, "{name}: definition as rendered");
        assert_eq!(status.state_machine_version, Some(1), "{name}");
        let registered: BTreeSet<&str> = status
            .job_definitions
            .iter()
            .map(|r| flowline::reconcilers::flow::job_definition_name(&r.arn))
            .collect();
        let rendered: BTreeSet<&str> = predicted
            .job_definitions
            .iter()
            .map(|d| d.job_definition_name.as_str())
            .collect();
        assert_eq!(registered, rendered, "{name}: job definitions as rendered");
        assert_eq!(
            status.job_definitions.len(),
            flow.spec.steps.len(),
            "{name}: one per step"
        );
    }
}

#[tokio::test]
async fn editing_a_step_publishes_a_version_and_a_no_op_writes_nothing() {
    install_crds();
    let ns = TestNamespace::create("edit");
    let controller = ControllerProcess::start(&ns.name);
    let manifest = example("basic-batch.yaml");
    apply(&ns.name, &manifest);
    wait_ready(&ns.name, "hello-batch");
    assert_eq!(
        jsonpath(
            &ns.name,
            "flow/hello-batch",
            "{.status.stateMachineVersion}"
        ),
        "1"
    );

    // A no-op re-apply and a forced resync: reads, and not a single write.
    let before = controller.aws_requests();
    apply(&ns.name, &manifest);
    kubectl(
        &[
            "annotate",
            "flow",
            "hello-batch",
            "-n",
            &ns.name,
            "e2e/resync=1",
            "--overwrite",
        ],
        None,
    )
    .ok();
    let reads_before = before
        .get("states:DescribeStateMachine")
        .copied()
        .unwrap_or(0);
    wait_for("the resync to reconcile", Duration::from_secs(30), || {
        let now = controller.aws_requests();
        (now.get("states:DescribeStateMachine").copied().unwrap_or(0) > reads_before).then_some(())
    });
    let after = controller.aws_requests();
    assert_eq!(
        writes(&after),
        writes(&before),
        "a no-op reconcile makes no AWS write: {after:?}"
    );

    // An edited step: a new job definition, an updated machine, version 2, the old revision gone.
    let old_arn = jsonpath(
        &ns.name,
        "flow/hello-batch",
        "{.status.jobDefinitions[?(@.step==\"hello\")].arn}",
    );
    let edited = manifest.replace("from AWS Batch, task", "from AWS Batch again, task");
    assert_ne!(
        edited, manifest,
        "the example's hello step prints its greeting"
    );
    apply(&ns.name, &edited);
    wait_for("version 2", READY_TIMEOUT, || {
        (jsonpath(
            &ns.name,
            "flow/hello-batch",
            "{.status.stateMachineVersion}",
        ) == "2")
            .then_some(())
    });
    let new_arn = jsonpath(
        &ns.name,
        "flow/hello-batch",
        "{.status.jobDefinitions[?(@.step==\"hello\")].arn}",
    );
    assert_ne!(old_arn, new_arn);
    let config = aws_config().await;
    let batch = aws_sdk_batch::Client::new(&config);
    // Deregistered once the status records version 2 (no execution runs version 1).
    let status = wait_for_async(
        "the superseded revision to be deregistered",
        READY_TIMEOUT,
        || async {
            let old = batch
                .describe_job_definitions()
                .job_definitions(&old_arn)
                .send()
                .await
                .expect("described");
            old.job_definitions()[0]
                .status()
                .filter(|s| *s == "INACTIVE")
                .map(str::to_owned)
        },
    )
    .await;
    assert_eq!(status, "INACTIVE");
    let after_edit = controller.aws_requests();
    assert_eq!(after_edit.get("states:UpdateStateMachine"), Some(&1));
}

#[tokio::test]
async fn bad_input_stalls_with_the_cause_and_creates_nothing() {
    install_crds();
    let ns = TestNamespace::create("stall");
    let controller = ControllerProcess::start(&ns.name);
    let cycle = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: cyclic}
spec:
  steps:
    - {name: start, command: ["true"], next: [a]}
    - {name: a, command: ["true"], next: [b]}
    - {name: b, command: ["true"], next: [a]}
    - {name: end, command: ["true"]}
"#;
    let missing_secret = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: needs-secret}
spec:
  steps:
    - {name: start, command: ["true"], next: [end], batch: {executionRole: "arn:aws:iam::123456789012:role/flowline-execution"}, secrets: [{id: no/such-secret, type: plaintext, envVarName: TOKEN}]}
    - {name: end, command: ["true"]}
"#;
    let missing_queue = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: needs-queue}
spec:
  batch: {queue: no-such-queue}
  steps:
    - {name: start, command: ["true"], next: [end]}
    - {name: end, command: ["true"]}
"#;
    for manifest in [cycle, missing_secret, missing_queue] {
        apply(&ns.name, manifest);
    }
    let message = wait_stalled(&ns.name, "cyclic");
    assert!(
        message.contains("cycle") && message.contains("\"a\""),
        "{message}"
    );
    let message = wait_stalled(&ns.name, "needs-secret");
    assert!(
        message.contains("no/such-secret") && message.contains("not found"),
        "{message}"
    );
    let message = wait_stalled(&ns.name, "needs-queue");
    assert!(
        message.contains("no-such-queue") && message.contains("not found"),
        "{message}"
    );
    let (ready, reason, _) = condition(&ns.name, "flow/needs-queue", "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "JobQueueNotFound")
    );
    let requests = controller.aws_requests();
    assert_eq!(
        writes(&requests),
        BTreeMap::new(),
        "nothing is created in AWS: {requests:?}"
    );
}

#[tokio::test]
async fn deletion_honours_the_policy_and_drift_is_repaired() {
    install_crds();
    let ns = TestNamespace::create("delete");
    let _controller =
        ControllerProcess::start_with(&ns.name, &[("FLOWLINE_DRIFT_INTERVAL_SECONDS", "2")]);
    let flow = |name: &str, policy: &str| {
        format!(
            "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: {name}}}\nspec:\n  deletionPolicy: {policy}\n  steps:\n    - {{name: start, command: [\"true\"], next: [end]}}\n    - {{name: end, command: [\"echo\", \"{name}\"]}}\n"
        )
    };
    apply(&ns.name, &flow("removed", "Delete"));
    apply(&ns.name, &flow("kept", "Retain"));
    wait_ready(&ns.name, "removed");
    wait_ready(&ns.name, "kept");
    let config = aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let batch = aws_sdk_batch::Client::new(&config);
    let machine = |name: &str| {
        jsonpath(
            &ns.name,
            &format!("flow/{name}"),
            "{.status.stateMachineArn}",
        )
    };
    let (removed_arn, kept_arn) = (machine("removed"), machine("kept"));
    let removed_definitions: Vec<String> =
        jsonpath(&ns.name, "flow/removed", "{.status.jobDefinitions[*].arn}")
            .split_whitespace()
            .map(str::to_owned)
            .collect();

    // Drift: the state machine deleted behind the controller's back comes back.
    sfn.delete_state_machine()
        .state_machine_arn(&kept_arn)
        .send()
        .await
        .expect("deleted");
    wait_for_async(
        "the state machine to be recreated",
        Duration::from_secs(60),
        || async {
            sfn.describe_state_machine()
                .state_machine_arn(&kept_arn)
                .send()
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;

    kubectl(
        &[
            "delete",
            "flow",
            "removed",
            "kept",
            "-n",
            &ns.name,
            "--timeout=60s",
        ],
        None,
    )
    .ok();
    assert!(
        sfn.describe_state_machine()
            .state_machine_arn(&removed_arn)
            .send()
            .await
            .is_err(),
        "Delete removes it"
    );
    let described = batch
        .describe_job_definitions()
        .set_job_definitions(Some(removed_definitions.clone()))
        .send()
        .await
        .expect("described");
    assert!(!removed_definitions.is_empty());
    assert!(
        described
            .job_definitions()
            .iter()
            .all(|d| d.status() == Some("INACTIVE")),
        "Delete deregisters the job definitions"
    );
    assert!(
        sfn.describe_state_machine()
            .state_machine_arn(&kept_arn)
            .send()
            .await
            .is_ok(),
        "Retain keeps it"
    );
    // Deleting a Flow whose resources are already gone succeeds too.
    apply(&ns.name, &flow("gone", "Delete"));
    wait_ready(&ns.name, "gone");
    let gone_arn = machine("gone");
    sfn.delete_state_machine()
        .state_machine_arn(&gone_arn)
        .send()
        .await
        .expect("deleted");
    kubectl(
        &["delete", "flow", "gone", "-n", &ns.name, "--timeout=60s"],
        None,
    )
    .ok();
}

#[tokio::test]
async fn controller_killed_while_creating_fifty_flows_converges_without_duplicates() {
    install_crds();
    let ns = TestNamespace::create("crash");
    let mut controller = ControllerProcess::start(&ns.name);
    let manifests: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: flow-{i}}}\nspec:\n  steps:\n    - {{name: start, command: [\"echo\", \"{i}\"], next: [work]}}\n    - {{name: work, command: [\"echo\", \"work\"], next: [end]}}\n    - {{name: end, command: [\"echo\", \"end\"]}}\n"
            )
        })
        .collect();
    apply(&ns.name, &manifests.join("---\n"));
    // Kill it as soon as it has started writing, before it could finish.
    wait_for("the first AWS writes", Duration::from_secs(60), || {
        let counts = controller.aws_requests();
        (counts
            .get("batch:RegisterJobDefinition")
            .copied()
            .unwrap_or(0)
            >= 3)
            .then_some(())
    });
    controller.kill_and_restart();
    for i in 0..50 {
        wait_ready(&ns.name, &format!("flow-{i}"));
    }

    let config = aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let mut machines = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .list_state_machines()
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .expect("listed");
        machines.extend(
            page.state_machines()
                .iter()
                .map(|m| m.name().to_owned())
                .filter(|name| name.contains(&format!("-{}-flow-", ns.name))),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        machines.len(),
        50,
        "one state machine per Flow: {machines:?}"
    );

    let batch = aws_sdk_batch::Client::new(&config);
    let active = active_definitions(&batch, &ns.name).await;
    // An ARN ends `:<revision>`: one name per revision means no duplicate registrations.
    let names: BTreeSet<&str> = active
        .iter()
        .filter_map(|arn| arn.rsplit_once(':').map(|(name, _)| name))
        .collect();
    // Three steps with different commands: three job definitions per Flow, one revision each.
    assert_eq!(names.len(), active.len(), "no duplicate revisions");
    assert_eq!(active.len(), 150, "no orphaned or missing job definitions");
}

/// The job definition revisions a Flow's status names, one per distinct step definition.
fn status_definitions(namespace: &str, flow: &str) -> BTreeSet<String> {
    jsonpath(
        namespace,
        &format!("flow/{flow}"),
        "{.status.jobDefinitions[*].arn}",
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// The ACTIVE job definition revisions tagged with the namespace.
async fn active_definitions(batch: &aws_sdk_batch::Client, namespace: &str) -> BTreeSet<String> {
    let mut active = BTreeSet::new();
    let mut token = None;
    loop {
        let page = batch
            .describe_job_definitions()
            .status("ACTIVE")
            .set_next_token(token)
            .send()
            .await
            .expect("described");
        active.extend(
            page.job_definitions()
                .iter()
                .filter(|d| {
                    d.tags()
                        .and_then(|t| t.get(TAG_NAMESPACE))
                        .map(String::as_str)
                        == Some(namespace)
                })
                .filter_map(|d| d.job_definition_arn().map(str::to_owned)),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return active;
        }
    }
}

/// The job definition revision each Batch job of a Run was submitted with, by step.
async fn run_job_definitions(
    batch: &aws_sdk_batch::Client,
    namespace: &str,
    run: &str,
) -> BTreeMap<String, String> {
    let steps = jsonpath(
        namespace,
        &format!("run/{run}"),
        "{range .status.steps[*]}{.name}={.jobIds[0]} {end}",
    );
    let mut used = BTreeMap::new();
    for entry in steps.split_whitespace() {
        let (step, job) = entry.split_once('=').expect("step=job");
        let described = batch
            .describe_jobs()
            .jobs(job)
            .send()
            .await
            .expect("job described");
        used.insert(
            step.to_owned(),
            described.jobs()[0]
                .job_definition()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    used
}

fn wait_run_phase(namespace: &str, run: &str, phase: &str) {
    wait_for(&format!("Run {run} to be {phase}"), READY_TIMEOUT, || {
        (jsonpath(namespace, &format!("run/{run}"), "{.status.phase}") == phase).then_some(())
    });
}

fn wait_version(namespace: &str, flow: &str, version: &str) {
    wait_for(
        &format!("Flow {flow} at version {version}"),
        READY_TIMEOUT,
        || {
            (jsonpath(
                namespace,
                &format!("flow/{flow}"),
                "{.status.stateMachineVersion}",
            ) == version)
                .then_some(())
        },
    );
}

#[tokio::test]
async fn editing_every_step_mid_run_leaves_the_run_on_its_version_and_deregisters_after_it_ends() {
    install_crds();
    let ns = TestNamespace::create("mid-run");
    let controller = ControllerProcess::start(&ns.name);
    // `work` is held RUNNING by the emulator for `hold` seconds.
    let flow = |edition: &str, hold: &str| {
        format!(
            "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: edited}}\nspec:\n  steps:\n    - {{name: start, command: [\"echo\", \"start {edition}\"], next: [work]}}\n    - {{name: work, command: [\"echo\", \"work {edition}\"], next: [end], env: [{{name: EMULATOR_RUN_SECONDS, value: \"{hold}\"}}]}}\n    - {{name: end, command: [\"echo\", \"end {edition}\"]}}\n"
        )
    };
    let run = |name: &str| {
        format!(
            "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: edited}}\n"
        )
    };
    apply(&ns.name, &flow("one", "15"));
    wait_ready(&ns.name, "edited");
    let first = status_definitions(&ns.name, "edited");
    assert_eq!(first.len(), 3, "{first:?}");

    // The first Run is mid-way: its `work` job runs, `end` is still to be submitted.
    apply(&ns.name, &run("before-edit"));
    wait_for("the work step to run", READY_TIMEOUT, || {
        let work = jsonpath(
            &ns.name,
            "run/before-edit",
            "{.status.steps[?(@.name==\"work\")].jobIds[0]}",
        );
        (!work.is_empty()).then_some(())
    });

    // Every step's command changes: three new job definitions, version 2.
    apply(&ns.name, &flow("two", "1"));
    wait_version(&ns.name, "edited", "2");
    let second = status_definitions(&ns.name, "edited");
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(first.is_disjoint(&second), "{first:?} {second:?}");
    let retired: BTreeSet<String> = jsonpath(
        &ns.name,
        "flow/edited",
        "{.status.retiredJobDefinitions[*]}",
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        retired, first,
        "version 1's revisions wait for its execution"
    );
    let config = aws_config().await;
    let batch = aws_sdk_batch::Client::new(&config);
    let active = active_definitions(&batch, &ns.name).await;
    assert!(
        first.is_subset(&active),
        "still ACTIVE while the first Run runs: {active:?}"
    );

    apply(&ns.name, &run("after-edit"));
    wait_run_phase(&ns.name, "before-edit", "Succeeded");
    wait_run_phase(&ns.name, "after-edit", "Succeeded");
    let version = |run: &str| {
        jsonpath(
            &ns.name,
            &format!("run/{run}"),
            "{.status.stateMachineVersionArn}",
        )
    };
    assert!(version("before-edit").ends_with(":1"));
    assert!(version("after-edit").ends_with(":2"));
    let before = run_job_definitions(&batch, &ns.name, "before-edit").await;
    let after = run_job_definitions(&batch, &ns.name, "after-edit").await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        before.values().all(|arn| first.contains(arn)),
        "the first Run ran on version 1's definitions to its end: {before:?}"
    );
    assert!(
        after.values().all(|arn| second.contains(arn)),
        "the second Run ran on version 2's: {after:?}"
    );

    // Both ended: nothing but the current revisions stays ACTIVE.
    wait_for("the retired revisions to go", READY_TIMEOUT, || {
        jsonpath(&ns.name, "flow/edited", "{.status.retiredJobDefinitions}")
            .is_empty()
            .then_some(())
    });
    assert_eq!(active_definitions(&batch, &ns.name).await, second);

    // And a reconcile of the unchanged Flow still writes nothing.
    let before = controller.aws_requests();
    let reads_before = before
        .get("states:DescribeStateMachine")
        .copied()
        .unwrap_or(0);
    kubectl(
        &[
            "annotate",
            "flow",
            "edited",
            "-n",
            &ns.name,
            "e2e/resync=1",
            "--overwrite",
        ],
        None,
    )
    .ok();
    wait_for("the resync to reconcile", Duration::from_secs(30), || {
        let now = controller.aws_requests();
        (now.get("states:DescribeStateMachine").copied().unwrap_or(0) > reads_before).then_some(())
    });
    let after = controller.aws_requests();
    assert_eq!(writes(&after), writes(&before), "no AWS write: {after:?}");
}

#[tokio::test]
async fn controller_stopped_between_machine_update_and_status_write_records_the_new_version() {
    install_crds();
    let ns = TestNamespace::create("failpoint");
    let mut controller = ControllerProcess::start_with(
        &ns.name,
        &[(
            "FLOWLINE_FAILPOINT",
            flowline::failpoint::AFTER_STATE_MACHINE_UPDATE,
        )],
    );
    let flow = |greeting: &str| {
        format!(
            "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: interrupted}}\nspec:\n  steps:\n    - {{name: start, command: [\"echo\", \"{greeting}\"], next: [end]}}\n    - {{name: end, command: [\"echo\", \"{greeting} again\"]}}\n"
        )
    };
    apply(&ns.name, &flow("hello"));
    wait_ready(&ns.name, "interrupted");
    let first = status_definitions(&ns.name, "interrupted");

    // The edit updates the machine (version 2), and the process exits before the status.
    apply(&ns.name, &flow("goodbye"));
    let exit = controller.wait_exit(READY_TIMEOUT);
    assert_eq!(exit.code(), Some(flowline::failpoint::EXIT_CODE));
    let machine_arn = jsonpath(&ns.name, "flow/interrupted", "{.status.stateMachineArn}");
    let config = aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let versions = sfn
        .list_state_machine_versions()
        .state_machine_arn(&machine_arn)
        .send()
        .await
        .expect("listed");
    assert_eq!(versions.state_machine_versions().len(), 2);
    assert_eq!(
        jsonpath(
            &ns.name,
            "flow/interrupted",
            "{.status.stateMachineVersion}"
        ),
        "1",
        "the status was not written"
    );
    let batch = aws_sdk_batch::Client::new(&config);
    assert!(first.is_subset(&active_definitions(&batch, &ns.name).await));

    // Restarted, it finds the machine already matching the Flow and records its version.
    controller.restart_with(&[]);
    wait_version(&ns.name, "interrupted", "2");
    wait_ready(&ns.name, "interrupted");
    let second = status_definitions(&ns.name, "interrupted");
    assert!(first.is_disjoint(&second), "{first:?} {second:?}");
    let described = sfn
        .describe_state_machine()
        .state_machine_arn(&machine_arn)
        .send()
        .await
        .expect("described");
    let definition: serde_json::Value = serde_json::from_str(described.definition()).expect("JSON");
    assert_eq!(compile::revisions::referenced(&definition), second);
    wait_for_async("version 1's revisions to go", READY_TIMEOUT, || async {
        (active_definitions(&batch, &ns.name).await == second).then_some(())
    })
    .await;
    assert_eq!(
        controller.aws_requests().get("states:UpdateStateMachine"),
        Some(&1),
        "the restarted controller updates nothing again"
    );
}

/// A new Flow is applied in the reconcile that adds its finalizer, and the watch event of its
/// own status write is not reconciled again: one read of each kind, no second round of reads.
#[tokio::test]
async fn a_new_flow_is_applied_in_one_pass_and_its_own_status_write_costs_no_call() {
    install_crds();
    let ns = TestNamespace::create("one-pass");
    let controller = ControllerProcess::start(&ns.name);
    let manifest = "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata:\n  name: three\nspec:\n  steps:\n  - {name: start, command: [echo, start], next: [work]}\n  - {name: work, command: [echo, work], next: [end]}\n  - {name: end, command: [echo, end]}\n";
    apply(&ns.name, manifest);
    wait_ready(&ns.name, "three");
    // Long enough for the watch to deliver the status write and any reconcile it would start.
    std::thread::sleep(Duration::from_secs(3));
    let calls = controller.aws_requests();
    let count = |op: &str| calls.get(op).copied().unwrap_or(0);
    assert_eq!(count("states:DescribeStateMachine"), 1, "{calls:?}");
    assert_eq!(count("batch:DescribeJobQueues"), 1, "{calls:?}");
    assert_eq!(count("batch:DescribeJobDefinitions"), 3, "{calls:?}");
    assert_eq!(count("batch:RegisterJobDefinition"), 3, "{calls:?}");
    assert_eq!(count("states:CreateStateMachine"), 1, "{calls:?}");
}
