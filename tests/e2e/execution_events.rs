//! The managed execution events path (`--execution-events managed`, the default) against the
//! emulator, whose rules deliver to an SQS queue only when the queue's policy lets the rule
//! send: the controller creates the rule and the queue (names, tags, pattern, policy), a Run
//! ends within seconds although polling alone would take minutes, a second controller writes
//! nothing, a deleted rule comes back, and `flowline execution-events delete` leaves nothing
//! (and keeps what is not Flowline's). A queue of that name that is not Flowline's leaves the
//! controller on polling, warning, without writing to it.
//!
//! The harness turns the events path off for every other test (they share the emulator and
//! the default name prefix); these tests turn it on with a name prefix of their own.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    ControllerProcess, TestNamespace, aws_config, env, install_crds, jsonpath, kubectl, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(90);
const ACCOUNT: &str = "123456789012";

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

/// A two-step flow whose `work` step runs for `seconds` on the emulator.
fn flow(name: &str, seconds: u32) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: {name}}}\nspec:\n  steps:\n    - {{name: start, command: [\"true\"], next: [work]}}\n    - {{name: work, command: [\"true\"], next: [end], env: [{{name: EMULATOR_RUN_SECONDS, value: \"{seconds}\"}}]}}\n    - {{name: end, command: [\"true\"]}}\n"
    )
}

fn run(name: &str, flow: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: {flow}}}\n"
    )
}

/// `flowline_execution_events_ready` as the controller serves it; `None` until it answers.
fn ready(controller: &ControllerProcess) -> Option<f64> {
    let (_, text) = controller.http_get("/metrics")?;
    text.lines()
        .find(|line| line.starts_with("flowline_execution_events_ready "))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

fn wait_ready(controller: &ControllerProcess, value: f64) {
    wait_for(
        &format!("flowline_execution_events_ready {value}"),
        Duration::from_secs(30),
        || (ready(controller) == Some(value)).then_some(()),
    );
}

/// The controller's calls that change the rule or the queue (reading and deleting messages
/// is the consumer's work, not a change).
fn setup_writes(controller: &ControllerProcess) -> BTreeMap<String, u64> {
    crate::harness::writes(&controller.aws_requests())
        .into_iter()
        .filter(|(operation, _)| operation.starts_with("events:") || operation.starts_with("sqs:"))
        .filter(|(operation, _)| {
            !operation.ends_with("ReceiveMessage") && !operation.contains("DeleteMessage")
        })
        .collect()
}

/// A name prefix of the test's own, so its rule and queue are its alone.
fn prefix(namespace: &TestNamespace) -> String {
    format!("fl-{}-", namespace.name)
}

/// `flowline execution-events delete` as the Helm hook runs it: the controller's settings
/// from the environment, the account from STS.
fn delete_command(prefix: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(["execution-events", "delete"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", &env().aws_endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("FLOWLINE_NAME_PREFIX", prefix)
        .output()
        .expect("flowline runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> Option<String> {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .ok()
        .and_then(|out| out.queue_url().map(str::to_owned))
}

async fn rule_exists(events: &aws_sdk_eventbridge::Client, name: &str) -> bool {
    events.describe_rule().name(name).send().await.is_ok()
}

#[tokio::test]
async fn managed_rule_and_queue_wake_runs_survive_restarts_and_drift_and_are_deleted() {
    install_crds();
    let ns = TestNamespace::create("events");
    let prefix = prefix(&ns);
    let name = format!("{prefix}execution-events");
    let queue_arn = format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{name}");
    let rule_arn = format!("arn:aws:events:us-east-1:{ACCOUNT}:rule/{name}");
    let config = aws_config().await;
    let (sqs, events) = (
        aws_sdk_sqs::Client::new(&config),
        aws_sdk_eventbridge::Client::new(&config),
    );
    // Polling alone would look at a running Run again only after 200 s; the drift check runs
    // every 2 s.
    let settings = [
        ("FLOWLINE_EXECUTION_EVENTS", "managed"),
        ("FLOWLINE_NAME_PREFIX", prefix.as_str()),
        ("FLOWLINE_TRACKING_CALLS_PER_SECOND", "0.005"),
        ("FLOWLINE_DRIFT_INTERVAL_SECONDS", "2"),
    ];
    let first = ControllerProcess::start_with(&ns.name, &settings);
    wait_ready(&first, 1.0);

    // The queue: tagged as the installation's, a day's retention, open to the rule only.
    let url = queue_url(&sqs, &name).await.expect("the queue exists");
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes");
    let attribute = |key: &str| {
        attributes
            .attributes()
            .and_then(|all| all.get(&aws_sdk_sqs::types::QueueAttributeName::from(key)))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(attribute("MessageRetentionPeriod"), "86400");
    assert_eq!(attribute("VisibilityTimeout"), "10");
    let policy: Value = serde_json::from_str(&attribute("Policy")).expect("a JSON policy");
    assert_eq!(
        policy["Statement"][0],
        json!({
            "Sid": "ExecutionEventsOfItsRule",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}
        })
    );
    let expected_tags = BTreeMap::from([
        ("flowline.io/kind".to_owned(), "ExecutionEvents".to_owned()),
        ("flowline.io/name".to_owned(), name.clone()),
    ]);
    let queue_tags: BTreeMap<String, String> = sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .expect("queue tags")
        .tags()
        .map(|tags| tags.clone().into_iter().collect())
        .unwrap_or_default();
    assert_eq!(queue_tags, expected_tags);

    // The rule: status changes of this prefix's state machines, to the queue.
    let rule = events
        .describe_rule()
        .name(&name)
        .send()
        .await
        .expect("the rule exists");
    assert_eq!(rule.arn(), Some(rule_arn.as_str()));
    assert_eq!(
        rule.state(),
        Some(&aws_sdk_eventbridge::types::RuleState::Enabled)
    );
    let pattern: Value =
        serde_json::from_str(rule.event_pattern().expect("a pattern")).expect("JSON");
    assert_eq!(
        pattern,
        json!({
            "source": ["aws.states"],
            "detail-type": ["Step Functions Execution Status Change"],
            "detail": {"stateMachineArn": [{"prefix": format!("arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{prefix}")}]}
        })
    );
    let targets = events
        .list_targets_by_rule()
        .rule(&name)
        .send()
        .await
        .expect("targets");
    let targets: Vec<(String, String)> = targets
        .targets()
        .iter()
        .map(|t| (t.id().to_owned(), t.arn().to_owned()))
        .collect();
    assert_eq!(targets, [("queue".to_owned(), queue_arn.clone())]);
    let rule_tags: BTreeMap<String, String> = events
        .list_tags_for_resource()
        .resource_arn(&rule_arn)
        .send()
        .await
        .expect("rule tags")
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    assert_eq!(rule_tags, expected_tags);

    // A Run ends within seconds of its execution, not at its next poll.
    apply(&ns.name, &flow("evented", 8));
    apply(&ns.name, &run("evented-1", "evented"));
    // `within`: the status lag allowed; polling alone would take up to 200 s.
    let ends_soon = |run: &str, within: u64| {
        wait_for(&format!("Run {run} to be running"), TIMEOUT, || {
            (jsonpath(&ns.name, &format!("run/{run}"), "{.status.phase}") == "Running")
                .then_some(())
        });
        let started = Instant::now();
        wait_for(
            &format!("the event to finish Run {run}"),
            Duration::from_secs(60),
            || {
                (jsonpath(&ns.name, &format!("run/{run}"), "{.status.phase}") == "Succeeded")
                    .then_some(())
            },
        );
        let seen = jiff::Timestamp::now();
        // The status lag: from the end of the execution (its last history event) to the
        // status saying so; polling alone would take up to 200 s.
        let ended: jiff::Timestamp =
            jsonpath(&ns.name, &format!("run/{run}"), "{.status.completionTime}")
                .parse()
                .expect("an RFC 3339 completion time");
        let lag = seen.duration_since(ended);
        eprintln!(
            "Run {run}: Running -> Succeeded seen after {:?}; status lag after the execution ended {lag:#}",
            started.elapsed()
        );
        assert!(
            lag < jiff::SignedDuration::from_secs(within as i64),
            "lag {lag:#}"
        );
        assert_eq!(
            jsonpath(
                &ns.name,
                &format!("run/{run}"),
                "{.metadata.annotations.flowline\\.io/execution-event}"
            ),
            "SUCCEEDED",
            "an execution event woke Run {run}"
        );
    };
    ends_soon("evented-1", 5);
    drop(first);

    // A second controller finds everything as wanted: its checks (every 2 s) write nothing.
    let second = ControllerProcess::start_replica(&ns.name, "second", &settings);
    wait_ready(&second, 1.0);
    std::thread::sleep(Duration::from_secs(5));
    let requests = second.aws_requests();
    assert!(
        requests.get("events:DescribeRule").copied().unwrap_or(0) >= 2,
        "the rule was checked more than once: {requests:?}"
    );
    assert_eq!(setup_writes(&second), BTreeMap::new(), "{requests:?}");

    // Drift: the rule deleted behind its back is put back with its target at the next check.
    events
        .remove_targets()
        .rule(&name)
        .ids("queue")
        .send()
        .await
        .expect("targets removed");
    events
        .delete_rule()
        .name(&name)
        .send()
        .await
        .expect("rule deleted");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let targets = events.list_targets_by_rule().rule(&name).send().await;
        if targets.is_ok_and(|t| t.targets().iter().any(|t| t.arn() == queue_arn)) {
            break;
        }
        assert!(Instant::now() < deadline, "the rule was not re-created");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let writes = setup_writes(&second);
    assert_eq!(
        writes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["events:PutRule", "events:PutTargets"],
        "only the rule and its target were written: {writes:?}"
    );
    // A Run started after the repair is woken by an event too.
    // Its execution may end within 10 s of the first controller's death, whose last long poll
    // (up to 10 s) may still take the event: it comes back after the queue's visibility
    // timeout (10 s), as on AWS.
    apply(&ns.name, &run("evented-2", "evented"));
    ends_soon("evented-2", 15);
    drop(second);

    // Uninstall: the delete command leaves nothing, and a second run has nothing to do.
    let (ok, output) = delete_command(&prefix);
    assert!(ok, "{output}");
    assert!(output.contains(&format!("deleted rule {name}")), "{output}");
    assert!(
        output.contains(&format!("deleted queue {name}")),
        "{output}"
    );
    assert!(!rule_exists(&events, &name).await, "the rule is gone");
    assert_eq!(queue_url(&sqs, &name).await, None, "the queue is gone");
    let (ok, output) = delete_command(&prefix);
    assert!(ok && output.contains("nothing to delete"), "{output}");

    // A queue of that name Flowline did not tag is kept.
    let foreign = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("queue created")
        .queue_url()
        .expect("url")
        .to_owned();
    let (ok, output) = delete_command(&prefix);
    assert!(ok && output.contains("kept: SQS queue"), "{output}");
    assert_eq!(
        queue_url(&sqs, &name).await.as_deref(),
        Some(foreign.as_str())
    );
    sqs.delete_queue()
        .queue_url(&foreign)
        .send()
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn a_queue_that_is_not_flowlines_leaves_the_controller_polling_without_touching_it() {
    install_crds();
    let ns = TestNamespace::create("events-foreign");
    let prefix = prefix(&ns);
    let name = format!("{prefix}execution-events");
    let sqs = aws_sdk_sqs::Client::new(&aws_config().await);
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("someone else's queue")
        .queue_url()
        .expect("url")
        .to_owned();
    let controller = ControllerProcess::start_with(
        &ns.name,
        &[
            ("FLOWLINE_EXECUTION_EVENTS", "managed"),
            ("FLOWLINE_NAME_PREFIX", prefix.as_str()),
        ],
    );
    wait_for(
        "the warning about the queue",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&controller.log)
                .ok()
                .filter(|log| log.contains("is not tagged flowline.io/kind=ExecutionEvents"))
        },
    );
    wait_ready(&controller, 0.0);
    // Runs are tracked by polling meanwhile.
    apply(&ns.name, &flow("polled", 1));
    apply(&ns.name, &run("polled-1", "polled"));
    wait_for("Run polled-1 to succeed by polling", TIMEOUT, || {
        (jsonpath(&ns.name, "run/polled-1", "{.status.phase}") == "Succeeded").then_some(())
    });
    // Checks back off (1 s, 2 s, 4 s, ... up to the drift interval) and never write.
    let requests = controller.aws_requests();
    let checks = requests.get("sqs:GetQueueUrl").copied().unwrap_or(0);
    assert!((1..=8).contains(&checks), "{checks} checks: {requests:?}");
    assert_eq!(setup_writes(&controller), BTreeMap::new(), "{requests:?}");
    let tags = sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .expect("tags");
    assert!(tags.tags().is_none_or(|t| t.is_empty()), "{tags:?}");
    assert!(
        !rule_exists(
            &aws_sdk_eventbridge::Client::new(&aws_config().await),
            &name
        )
        .await,
        "no rule was put for a queue that is not Flowline's"
    );
    drop(controller);
    sqs.delete_queue()
        .queue_url(&url)
        .send()
        .await
        .expect("cleanup");
}

/// An execution started elsewhere (here: straight on Step Functions, as the console does)
/// announces itself with its RUNNING event, and discovery lists that one Flow's executions
/// at once: the Run appears within seconds although the sweep of every Flow would come only
/// after 600 s, and no other Flow's executions are listed.
#[tokio::test]
async fn an_execution_started_elsewhere_gets_its_run_from_its_event() {
    install_crds();
    let ns = TestNamespace::create("events-adopt");
    let prefix = prefix(&ns);
    let controller = ControllerProcess::start_with(
        &ns.name,
        &[
            ("FLOWLINE_EXECUTION_EVENTS", "managed"),
            ("FLOWLINE_NAME_PREFIX", prefix.as_str()),
            ("FLOWLINE_DISCOVERY_INTERVAL_SECONDS", "600"),
        ],
    );
    wait_ready(&controller, 1.0);
    apply(&ns.name, &flow("adopted", 30));
    apply(&ns.name, &flow("untouched", 1));
    for flow in ["adopted", "untouched"] {
        wait_for(&format!("Flow {flow} to be Ready"), TIMEOUT, || {
            (jsonpath(
                &ns.name,
                &format!("flow/{flow}"),
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True")
                .then_some(())
        });
    }
    let machine = jsonpath(&ns.name, "flow/adopted", "{.status.stateMachineArn}");
    let sfn = aws_sdk_sfn::Client::new(&aws_config().await);
    let started = Instant::now();
    let execution = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name("from-the-console")
        .send()
        .await
        .expect("started")
        .execution_arn()
        .to_owned();
    let adopted = wait_for(
        "a Run for the execution, from its event",
        Duration::from_secs(30),
        || {
            let names = kubectl(
                &[
                    "get",
                    "runs",
                    "-n",
                    &ns.name,
                    "-l",
                    "flowline.io/origin=external",
                    "-o",
                    "name",
                ],
                None,
            )
            .ok();
            names.lines().next().map(|n| n.trim().to_owned())
        },
    );
    let waited = started.elapsed();
    // The Run appears while the execution still runs (its work step takes 30 s).
    assert!(waited < Duration::from_secs(25), "{waited:?}");
    wait_for("the Run to track the execution", TIMEOUT, || {
        (jsonpath(&ns.name, &adopted, "{.status.executionArn}") == execution).then_some(())
    });
    // Only the nudged Flow was listed: once per event about it, never the sweep of all.
    let requests = controller.aws_requests();
    let listed = requests.get("states:ListExecutions").copied().unwrap_or(0);
    assert!((1..=2).contains(&listed), "{listed} listings: {requests:?}");
    sfn.stop_execution()
        .execution_arn(&execution)
        .send()
        .await
        .expect("stopped");
    drop(controller);
    let (ok, output) = delete_command(&prefix);
    assert!(ok, "{output}");
}
