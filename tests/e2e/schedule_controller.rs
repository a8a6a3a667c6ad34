//! The Schedule reconciler and execution discovery against the real API server and the
//! emulator: rules and targets as expected, suspend/resume, deletion, no writes when nothing
//! changed, cron firings and S3 events that start exactly one run (also when redelivered),
//! undeliverable firings in the Schedule's dead-letter queue, and Runs for executions started
//! outside Flowline.

use std::time::Duration;

use aws_sdk_eventbridge::types::RuleState;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_config, condition, env, install_crds, jsonpath, kubectl,
    wait_for, wait_for_async, writes,
};

const TIMEOUT: Duration = Duration::from_secs(90);

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

fn example(name: &str) -> String {
    std::fs::read_to_string(
        crate::harness::repo_root()
            .join("examples/manifests")
            .join(name),
    )
    .expect("example")
}

fn wait_ready(namespace: &str, resource: &str) {
    wait_for(&format!("{resource} to be Ready"), TIMEOUT, || {
        (condition(namespace, resource, "Ready").0 == "True").then_some(())
    });
}

/// A controller that looks for new executions every second and compares rules with AWS
/// again after 5 s (instead of 5 minutes), so drift repair is seen quickly.
fn controller(namespace: &str) -> ControllerProcess {
    ControllerProcess::start_with(
        namespace,
        &[
            ("FLOWLINE_DISCOVERY_INTERVAL_SECONDS", "1"),
            ("FLOWLINE_DRIFT_INTERVAL_SECONDS", "5"),
        ],
    )
}

fn emulator_post(path: &str, body: &serde_json::Value) -> serde_json::Value {
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &format!("{}{path}", env().aws_endpoint),
        ])
        .output()
        .expect("curl runs");
    serde_json::from_slice(&output.stdout).expect("the emulator answers JSON")
}

/// Names of the Runs in a namespace with a label selector.
/// A Run's execution ARN, once the controller has recorded it.
fn execution_of(namespace: &str, run: &str) -> String {
    wait_for(
        &format!("Run {run} to track its execution"),
        TIMEOUT,
        || {
            let arn = jsonpath(namespace, &format!("run/{run}"), "{.status.executionArn}");
            (!arn.is_empty()).then_some(arn)
        },
    )
}

fn runs(namespace: &str, selector: &str) -> Vec<String> {
    kubectl(
        &[
            "get",
            "runs",
            "-n",
            namespace,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        None,
    )
    .ok()
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

fn set_suspend(namespace: &str, schedule: &str, suspend: bool) {
    kubectl(
        &[
            "patch",
            "-n",
            namespace,
            &format!("schedule/{schedule}"),
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"suspend":{suspend}}}}}"#),
        ],
        None,
    )
    .ok();
}

async fn wait_rule_state(events: &aws_sdk_eventbridge::Client, rule: &str, state: RuleState) {
    wait_for_async(&format!("rule {rule} to be {state:?}"), TIMEOUT, || async {
        let described = events.describe_rule().name(rule).send().await.unwrap();
        (described.state() == Some(&state)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cron_schedule_rule_suspend_fire_and_delete() {
    install_crds();
    let ns = TestNamespace::create("sched-cron");
    let controller = controller(&ns.name);
    apply(&ns.name, &example("scheduled-flow.yaml"));
    wait_ready(&ns.name, "flow/nightly-report");
    wait_ready(&ns.name, "schedule/nightly-report");

    let config = aws_config().await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let rule_arn = jsonpath(&ns.name, "schedule/nightly-report", "{.status.ruleArn}");
    let rule_name = rule_arn.rsplit('/').next().unwrap().to_owned();
    assert!(rule_name.len() <= 64, "{rule_name}");
    let rule = events
        .describe_rule()
        .name(&rule_name)
        .send()
        .await
        .unwrap();
    assert_eq!(rule.schedule_expression(), Some("cron(0 3 * * ? *)"));
    assert_eq!(rule.state(), Some(&RuleState::Enabled));
    let targets = events
        .list_targets_by_rule()
        .rule(&rule_name)
        .send()
        .await
        .unwrap();
    let [target] = targets.targets() else {
        panic!("one target: {targets:?}")
    };
    let machine = jsonpath(&ns.name, "flow/nightly-report", "{.status.stateMachineArn}");
    // The rule starts the trigger state machine, which names the Flow's execution after the
    // event; the Schedule's parameters are in its definition.
    let trigger = target.arn().to_owned();
    assert!(
        trigger.ends_with(&format!(":stateMachine:{rule_name}")),
        "{trigger}"
    );
    assert_eq!(
        target.role_arn(),
        Some("arn:aws:iam::123456789012:role/flowline-events")
    );
    let sfn = aws_sdk_sfn::Client::new(&config);
    let definition: serde_json::Value = serde_json::from_str(
        sfn.describe_state_machine()
            .state_machine_arn(&trigger)
            .send()
            .await
            .unwrap()
            .definition(),
    )
    .unwrap();
    let input = &definition["States"]["StartFlow"]["Parameters"]["Input"];
    // Typed: lookback_days is an Int.
    assert_eq!(input["parameters"]["lookback_days"], 1);
    assert_eq!(input["flowline"]["schedule"], "nightly-report");
    let fire_times = jsonpath(
        &ns.name,
        "schedule/nightly-report",
        "{.status.nextFireTimes}",
    );
    let fire_times: Vec<String> = serde_json::from_str(&fire_times).unwrap();
    assert_eq!(fire_times.len(), 3, "{fire_times:?}");
    assert!(
        fire_times.iter().all(|t| t.ends_with("T03:00:00Z")),
        "{fire_times:?}"
    );

    // Nothing changed: a forced reconcile reads but writes nothing.
    let before = writes(&controller.aws_requests());
    kubectl(
        &[
            "annotate",
            "-n",
            &ns.name,
            "schedule/nightly-report",
            "touch=1",
            "--overwrite",
        ],
        None,
    )
    .ok();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(writes(&controller.aws_requests()), before, "no AWS writes");

    // Suspend and resume flip the rule's state.
    set_suspend(&ns.name, "nightly-report", true);
    wait_rule_state(&events, &rule_name, RuleState::Disabled).await;
    wait_for("fire times to clear", TIMEOUT, || {
        jsonpath(
            &ns.name,
            "schedule/nightly-report",
            "{.status.nextFireTimes}",
        )
        .is_empty()
        .then_some(())
    });
    let refused = emulator_post(
        "/flowline-test/fire-rule",
        &serde_json::json!({"name": rule_name}),
    );
    assert!(
        refused["executionArns"].is_null(),
        "a disabled rule fires nothing: {refused}"
    );
    set_suspend(&ns.name, "nightly-report", false);
    wait_rule_state(&events, &rule_name, RuleState::Enabled).await;

    // Drift: a rule disabled in AWS is enabled again.
    events.disable_rule().name(&rule_name).send().await.unwrap();
    kubectl(
        &[
            "annotate",
            "-n",
            &ns.name,
            "schedule/nightly-report",
            "touch=2",
            "--overwrite",
        ],
        None,
    )
    .ok();
    wait_rule_state(&events, &rule_name, RuleState::Enabled).await;

    // The schedule fires: its execution, named after the event, shows up as a Run labeled
    // with the Schedule.
    let fired = emulator_post(
        "/flowline-test/fire-rule",
        &serde_json::json!({"name": rule_name}),
    );
    let event_id = fired["eventId"].as_str().expect("an event id").to_owned();
    let execution = format!(
        "{}:schedule_{event_id}",
        machine.replacen(":stateMachine:", ":execution:", 1)
    );
    // EventBridge delivers at least once: the same firing arrives again.
    let again = emulator_post(
        "/flowline-test/fire-rule",
        &serde_json::json!({"name": rule_name, "eventId": event_id}),
    );
    assert_eq!(again["eventId"], fired["eventId"]);
    let trigger_runs = wait_for_async("both deliveries to be handled", TIMEOUT, || async {
        let listed = sfn
            .list_executions()
            .state_machine_arn(&trigger)
            .send()
            .await
            .unwrap();
        let statuses: Vec<String> = listed
            .executions()
            .iter()
            .map(|e| e.status().as_str().to_owned())
            .collect();
        (statuses.len() == 2 && statuses.iter().all(|s| s != "RUNNING")).then_some(statuses)
    })
    .await;
    assert_eq!(
        trigger_runs,
        ["SUCCEEDED", "SUCCEEDED"],
        "the duplicate is no error"
    );
    let flow_executions = sfn
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = flow_executions
        .executions()
        .iter()
        .map(|e| e.name())
        .collect();
    assert_eq!(
        names,
        [format!("schedule_{event_id}")],
        "one execution per firing"
    );
    let run = wait_for("a Run for the scheduled execution", TIMEOUT, || {
        runs(&ns.name, "flowline.io/schedule=nightly-report").pop()
    });
    assert_eq!(execution_of(&ns.name, &run), execution);
    assert_eq!(
        jsonpath(&ns.name, &format!("run/{run}"), "{.status.origin}"),
        "Schedule"
    );
    wait_for("the scheduled Run to succeed", TIMEOUT, || {
        (jsonpath(&ns.name, &format!("run/{run}"), "{.status.phase}") == "Succeeded").then_some(())
    });
    wait_for("the Schedule to list its Run", TIMEOUT, || {
        (jsonpath(
            &ns.name,
            "schedule/nightly-report",
            "{.status.lastRuns[0].name}",
        ) == run)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&ns.name, "flowline.io/schedule=nightly-report").len(),
        1
    );

    // A firing the rule cannot deliver (its trigger state machine deleted behind the
    // controller's back) lands in the Schedule's dead-letter queue.
    sfn.delete_state_machine()
        .state_machine_arn(&trigger)
        .send()
        .await
        .unwrap();
    let lost = emulator_post(
        "/flowline-test/fire-rule",
        &serde_json::json!({"name": rule_name}),
    );
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(&rule_name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();
    let [message] = received.messages() else {
        panic!("one dead letter: {received:?}")
    };
    let body: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
    assert_eq!(body["id"], lost["eventId"]);

    // Deletion removes the target, the rule and the dead-letter queue.
    kubectl(
        &[
            "delete",
            "-n",
            &ns.name,
            "schedule/nightly-report",
            "--wait=true",
        ],
        None,
    )
    .ok();
    let gone = events.describe_rule().name(&rule_name).send().await;
    assert!(gone.is_err(), "the rule is deleted: {gone:?}");
    let queue_gone = sqs.get_queue_url().queue_name(&rule_name).send().await;
    assert!(queue_gone.is_err(), "the queue is deleted: {queue_gone:?}");
}

#[test]
fn every_schedule_example_becomes_ready_with_its_rule() {
    install_crds();
    let ns = TestNamespace::create("sched-examples");
    let _controller = controller(&ns.name);
    apply(&ns.name, &example("foreach.yaml"));
    for file in ["schedule.yaml", "scheduled-flow.yaml", "s3-event-flow.yaml"] {
        apply(&ns.name, &example(file));
    }
    // (Schedule, its Flow, the expected schedule expression ("" for the S3 trigger), the
    // parameters its executions get.)
    let expectations = [
        (
            "foreach-sweep-every-6h",
            "foreach-sweep",
            "rate(6 hours)",
            serde_json::json!({"trials": 16}),
        ),
        (
            "nightly-report",
            "nightly-report",
            "cron(0 3 * * ? *)",
            serde_json::json!({"lookback_days": 1}),
        ),
        (
            "ingest-csv-on-upload",
            "ingest-csv",
            "",
            serde_json::json!({}),
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let events = rt.block_on(async { aws_sdk_eventbridge::Client::new(&aws_config().await) });
    let sfn = rt.block_on(async { aws_sdk_sfn::Client::new(&aws_config().await) });
    for (schedule, flow, expected, parameters) in expectations {
        wait_ready(&ns.name, &format!("schedule/{schedule}"));
        let rule_arn = jsonpath(
            &ns.name,
            &format!("schedule/{schedule}"),
            "{.status.ruleArn}",
        );
        assert!(
            rule_arn.starts_with("arn:aws:events:"),
            "{schedule}: {rule_arn}"
        );
        let fires = jsonpath(
            &ns.name,
            &format!("schedule/{schedule}"),
            "{.status.nextFireTimes}",
        );
        assert_eq!(fires.is_empty(), expected.is_empty(), "{schedule}: {fires}");
        let rule_name = rule_arn.rsplit('/').next().unwrap();
        let (rule, targets) = rt.block_on(async {
            let rule = events.describe_rule().name(rule_name).send().await.unwrap();
            let targets = events
                .list_targets_by_rule()
                .rule(rule_name)
                .send()
                .await
                .unwrap();
            (rule, targets)
        });
        assert_eq!(rule.state(), Some(&RuleState::Enabled), "{schedule}");
        let [target] = targets.targets() else {
            panic!("{schedule}: one target, got {targets:?}")
        };
        assert_eq!(
            target.role_arn(),
            Some("arn:aws:iam::123456789012:role/flowline-events"),
            "{schedule}"
        );
        let flow_machine = jsonpath(
            &ns.name,
            &format!("flow/{flow}"),
            "{.status.stateMachineArn}",
        );
        if expected.is_empty() {
            let pattern: serde_json::Value =
                serde_json::from_str(rule.event_pattern().unwrap()).unwrap();
            assert_eq!(pattern["detail"]["bucket"]["name"][0], "acme-landing-zone");
            assert_eq!(
                pattern["detail"]["object"]["key"][0]["wildcard"],
                "incoming/*.csv"
            );
            // The target is the trigger state machine, which starts the Flow's.
            let transformer = target.input_transformer().expect("an input transformer");
            assert_eq!(
                transformer
                    .input_paths_map()
                    .unwrap()
                    .get("key")
                    .map(String::as_str),
                Some("$.detail.object.key")
            );
            let trigger = rt.block_on(async {
                sfn.describe_state_machine()
                    .state_machine_arn(target.arn())
                    .send()
                    .await
                    .unwrap()
            });
            let definition: serde_json::Value = serde_json::from_str(trigger.definition()).unwrap();
            let start = &definition["States"]["StartFlow"]["Parameters"];
            assert_eq!(start["StateMachineArn"], flow_machine.as_str());
            assert_eq!(start["Input"]["parameters"], parameters);
        } else {
            assert_eq!(rule.schedule_expression(), Some(expected), "{schedule}");
            // The target is the trigger state machine too: one execution per firing.
            let trigger = rt.block_on(async {
                sfn.describe_state_machine()
                    .state_machine_arn(target.arn())
                    .send()
                    .await
                    .unwrap()
            });
            let definition: serde_json::Value = serde_json::from_str(trigger.definition()).unwrap();
            let start = &definition["States"]["StartFlow"]["Parameters"];
            assert_eq!(start["StateMachineArn"], flow_machine.as_str());
            assert_eq!(start["Input"]["parameters"], parameters, "{schedule}");
            assert_eq!(start["Input"]["flowline"]["schedule"], schedule);
        }
        // Every kind: undeliverable events go to the Schedule's own dead-letter queue.
        let dead_letters = target
            .dead_letter_config()
            .and_then(|d| d.arn())
            .unwrap_or_default();
        assert!(
            dead_letters.ends_with(&format!(":{rule_name}")),
            "{schedule}: {dead_letters}"
        );
        assert_eq!(
            target
                .retry_policy()
                .and_then(|r| r.maximum_event_age_in_seconds()),
            Some(3600)
        );
    }
}

#[test]
fn an_inexpressible_cron_is_stalled_and_creates_nothing() {
    install_crds();
    let ns = TestNamespace::create("sched-bad");
    let controller = controller(&ns.name);
    apply(&ns.name, &example("scheduled-flow.yaml"));
    wait_ready(&ns.name, "flow/nightly-report");
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Schedule\nmetadata: {name: both-days}\nspec:\n  flowRef: {name: nightly-report}\n  cron: \"0 3 1 * MON\"\n",
    );
    wait_for("the Schedule to stall", TIMEOUT, || {
        (condition(&ns.name, "schedule/both-days", "Stalled").0 == "True").then_some(())
    });
    let (_, reason, message) = condition(&ns.name, "schedule/both-days", "Stalled");
    assert_eq!(reason, "InvalidSchedule");
    assert!(
        message.contains("day of month and the day of week"),
        "{message}"
    );
    wait_ready(&ns.name, "schedule/nightly-report");
    let switched = kubectl(
        &[
            "patch",
            "-n",
            &ns.name,
            "schedule/nightly-report",
            "--type=merge",
            "-p",
            r#"{"spec":{"cron":null,"event":{"s3":{"bucket":"landing"}}}}"#,
        ],
        None,
    );
    assert!(
        !switched.success,
        "switching to an event trigger is refused"
    );
    assert!(
        switched
            .stderr
            .contains("cannot switch between an event trigger"),
        "{}",
        switched.stderr
    );
    let requests = controller.aws_requests();
    assert_eq!(
        requests.get("events:PutRule"),
        Some(&1),
        "only the valid nightly-report rule was written: {requests:?}"
    );
}

#[tokio::test]
async fn an_s3_object_starts_exactly_one_run_even_when_its_event_is_redelivered() {
    install_crds();
    let ns = TestNamespace::create("sched-s3");
    let _controller = controller(&ns.name);
    let config = aws_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("landing-{}", ns.name);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            aws_sdk_s3::types::NotificationConfiguration::builder()
                .event_bridge_configuration(
                    aws_sdk_s3::types::EventBridgeConfiguration::builder().build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let manifest = example("s3-event-flow.yaml").replace("acme-landing-zone", &bucket);
    apply(&ns.name, &manifest);
    wait_ready(&ns.name, "schedule/ingest-csv-on-upload");

    s3.put_object()
        .bucket(&bucket)
        .key("incoming/2026-11-26.csv")
        .body(b"a,b\n1,2\n".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key("incoming/notes.txt")
        .body(b"ignored".to_vec().into())
        .send()
        .await
        .unwrap();
    let run = wait_for("a Run for the S3 event", TIMEOUT, || {
        runs(&ns.name, "flowline.io/schedule=ingest-csv-on-upload").pop()
    });
    wait_for("the S3 Run to succeed", TIMEOUT, || {
        (jsonpath(&ns.name, &format!("run/{run}"), "{.status.phase}") == "Succeeded").then_some(())
    });

    // The task got the bucket and the key.
    let job = jsonpath(
        &ns.name,
        &format!("run/{run}"),
        "{.status.steps[?(@.name==\"start\")].jobIds[0]}",
    );
    let batch = aws_sdk_batch::Client::new(&config);
    let described = batch.describe_jobs().jobs(&job).send().await.unwrap();
    let environment: Vec<(String, String)> = described.jobs()[0]
        .container()
        .map(|c| {
            c.environment()
                .iter()
                .map(|kv| {
                    (
                        kv.name().unwrap_or_default().to_owned(),
                        kv.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        environment.contains(&("FLOWLINE_TRIGGER_S3_BUCKET".into(), bucket.clone())),
        "{environment:?}"
    );
    assert!(
        environment.contains(&(
            "FLOWLINE_TRIGGER_S3_KEY".into(),
            "incoming/2026-11-26.csv".into()
        )),
        "{environment:?}"
    );

    // The same event again: no second execution, no second Run.
    let machine = jsonpath(&ns.name, "flow/ingest-csv", "{.status.stateMachineArn}");
    let sfn = aws_sdk_sfn::Client::new(&config);
    let count = || async {
        sfn.list_executions()
            .state_machine_arn(&machine)
            .send()
            .await
            .unwrap()
            .executions()
            .len()
    };
    assert_eq!(count().await, 1);
    let redelivered = emulator_post(
        "/flowline-test/redeliver-s3-event",
        &serde_json::json!({"key": "incoming/2026-11-26.csv"}),
    );
    assert!(redelivered["eventId"].is_string(), "{redelivered}");
    let trigger_machine = jsonpath(
        &ns.name,
        "schedule/ingest-csv-on-upload",
        "{.status.ruleArn}",
    )
    .replace(":events:", ":states:")
    .replace(":rule/", ":stateMachine:");
    wait_for_async("the redelivery to reach the trigger", TIMEOUT, || async {
        let listed = sfn
            .list_executions()
            .state_machine_arn(&trigger_machine)
            .send()
            .await
            .unwrap();
        let executions = listed.executions();
        (executions.len() == 2
            && executions
                .iter()
                .all(|e| e.status() != &aws_sdk_sfn::types::ExecutionStatus::Running))
        .then_some(())
    })
    .await;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count().await,
        1,
        "a redelivered event starts no second execution"
    );
    assert_eq!(
        runs(&ns.name, "flowline.io/schedule=ingest-csv-on-upload"),
        vec![run]
    );

    // Deleting the Schedule removes the trigger state machine too.
    kubectl(
        &[
            "delete",
            "-n",
            &ns.name,
            "schedule/ingest-csv-on-upload",
            "--wait=true",
        ],
        None,
    )
    .ok();
    let gone = sfn
        .describe_state_machine()
        .state_machine_arn(&trigger_machine)
        .send()
        .await;
    assert!(gone.is_err(), "the trigger state machine is deleted");
}

#[tokio::test]
async fn an_execution_started_outside_flowline_becomes_a_run() {
    install_crds();
    let ns = TestNamespace::create("adopt");
    let _controller = controller(&ns.name);
    apply(
        &ns.name,
        example("scheduled-flow.yaml").split("---").next().unwrap(),
    );
    wait_ready(&ns.name, "flow/nightly-report");
    // A Run of Flowline's own: it must not get a second Run.
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {name: own}\nspec:\n  flowRef: {name: nightly-report}\n",
    );
    let machine = jsonpath(&ns.name, "flow/nightly-report", "{.status.stateMachineArn}");
    let sfn = aws_sdk_sfn::Client::new(&aws_config().await);
    let started = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name("from-the-console")
        .input(r#"{"parameters": {"lookback_days": "7"}}"#)
        .send()
        .await
        .unwrap();
    let adopted = wait_for("a Run for the console's execution", TIMEOUT, || {
        runs(&ns.name, "flowline.io/origin=external").pop()
    });
    assert_eq!(execution_of(&ns.name, &adopted), started.execution_arn());
    assert_eq!(
        jsonpath(&ns.name, &format!("run/{adopted}"), "{.status.origin}"),
        "External"
    );
    for run in ["own", adopted.as_str()] {
        wait_for(&format!("Run {run} to succeed"), TIMEOUT, || {
            (jsonpath(&ns.name, &format!("run/{run}"), "{.status.phase}") == "Succeeded")
                .then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(3));
    let all = runs(&ns.name, "");
    assert_eq!(all.len(), 2, "one Run per execution: {all:?}");

    // A Run may only take over an execution of its own Flow's state machine.
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata:\n  name: sneaky\n  annotations: {flowline.io/execution-arn: \"arn:aws:states:us-east-1:123456789012:execution:someone-else:x\"}\nspec:\n  flowRef: {name: nightly-report}\n",
    );
    wait_for("the foreign takeover to stall", TIMEOUT, || {
        (condition(&ns.name, "run/sneaky", "Stalled").1 == "ForeignExecution").then_some(())
    });
}
