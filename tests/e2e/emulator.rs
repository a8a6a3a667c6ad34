//! The AWS emulator as Flowline needs it: Step Functions running `batch:submitJob.sync` tasks,
//! Batch jobs that can be made to fail or keep running, and EventBridge delivering events to a
//! state machine. These are the gaps hack/moto/launcher.py closes; each test would fail on a
//! plain moto server.

use std::time::Duration;

use aws_sdk_batch::types::{
    ContainerProperties, JobDefinitionType, KeyValuePair, ResourceRequirement, ResourceType,
};
use aws_sdk_eventbridge::types::{InputTransformer, Target};
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use serde_json::json;

use crate::harness::{aws_config, finished_execution, unique_name, wait_for_async};

const SFN_ROLE: &str = "arn:aws:iam::123456789012:role/flowline-states";
const EVENTS_ROLE: &str = "arn:aws:iam::123456789012:role/flowline-events";

/// The platform's job queue (created by `hack/env-up.sh`) and a job definition of the test's
/// own.
struct BatchSetup {
    queue_arn: String,
    job_definition_arn: String,
}

async fn batch_setup(batch: &aws_sdk_batch::Client, prefix: &str) -> BatchSetup {
    let name = unique_name(prefix);
    let queues = batch
        .describe_job_queues()
        .job_queues("flowline")
        .send()
        .await
        .expect("job queues are described");
    let queue_arn = queues
        .job_queues()
        .first()
        .and_then(|queue| queue.job_queue_arn())
        .expect("the platform job queue `flowline` exists")
        .to_owned();
    let definition = batch
        .register_job_definition()
        .job_definition_name(&name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("python:3.12-slim")
                .command("true")
                .resource_requirements(requirement(ResourceType::Vcpu, "1"))
                .resource_requirements(requirement(ResourceType::Memory, "512"))
                .build(),
        )
        .send()
        .await
        .expect("job definition is registered");
    BatchSetup {
        queue_arn,
        job_definition_arn: definition
            .job_definition_arn()
            .expect("definition arn")
            .to_owned(),
    }
}

fn requirement(kind: ResourceType, value: &str) -> ResourceRequirement {
    ResourceRequirement::builder()
        .r#type(kind)
        .value(value)
        .build()
}

/// A one-task state machine submitting a job with `.sync`, with extra environment.
fn submit_job_sync_definition(setup: &BatchSetup, environment: serde_json::Value) -> String {
    json!({
        "StartAt": "Train",
        "States": {
            "Train": {
                "Type": "Task",
                "Resource": "arn:aws:states:::batch:submitJob.sync",
                "Parameters": {
                    "JobName": "train",
                    "JobQueue": setup.queue_arn,
                    "JobDefinition": setup.job_definition_arn,
                    "ContainerOverrides": { "Environment": environment }
                },
                "End": true
            }
        }
    })
    .to_string()
}

async fn create_state_machine(
    sfn: &aws_sdk_sfn::Client,
    prefix: &str,
    definition: String,
) -> String {
    sfn.create_state_machine()
        .name(unique_name(prefix))
        .role_arn(SFN_ROLE)
        .definition(definition)
        .send()
        .await
        .expect("state machine is created")
        .state_machine_arn()
        .to_owned()
}

#[tokio::test]
async fn submit_job_sync_task_succeeds() {
    let config = aws_config().await;
    let (sfn, batch) = (
        aws_sdk_sfn::Client::new(&config),
        aws_sdk_batch::Client::new(&config),
    );
    let setup = batch_setup(&batch, "sync-ok").await;
    let definition =
        submit_job_sync_definition(&setup, json!([{"Name": "GREETING", "Value": "hi"}]));
    let machine = create_state_machine(&sfn, "sync-ok", definition).await;
    let execution = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name(unique_name("run"))
        .input("{}")
        .send()
        .await
        .expect("execution starts");

    let finished = finished_execution(&sfn, execution.execution_arn()).await;
    assert_eq!(
        finished.status(),
        &ExecutionStatus::Succeeded,
        "{finished:?}"
    );
    // The task's output is the Batch job description, in Step Functions' PascalCase.
    let output: serde_json::Value =
        serde_json::from_str(finished.output().expect("output")).expect("output is JSON");
    assert_eq!(output["Status"], "SUCCEEDED", "{output}");
    let job_id = output["JobId"].as_str().expect("JobId in output");
    let jobs = batch
        .describe_jobs()
        .jobs(job_id)
        .send()
        .await
        .expect("jobs");
    let job = &jobs.jobs()[0];
    let environment = job.container().expect("container").environment();
    assert!(
        environment
            .iter()
            .any(|kv| kv.name() == Some("GREETING") && kv.value() == Some("hi")),
        "container overrides reach the job: {environment:?}"
    );
}

#[tokio::test]
async fn failing_job_fails_the_execution_with_task_failed() {
    let config = aws_config().await;
    let (sfn, batch) = (
        aws_sdk_sfn::Client::new(&config),
        aws_sdk_batch::Client::new(&config),
    );
    let setup = batch_setup(&batch, "sync-fail").await;
    let definition = submit_job_sync_definition(
        &setup,
        json!([{"Name": "FLOWLINE_EMULATOR_FAIL", "Value": "CannotPullContainerError: no such image"}]),
    );
    let machine = create_state_machine(&sfn, "sync-fail", definition).await;
    let execution = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name(unique_name("run"))
        .send()
        .await
        .expect("execution starts");

    let finished = finished_execution(&sfn, execution.execution_arn()).await;
    assert_eq!(finished.status(), &ExecutionStatus::Failed, "{finished:?}");
    assert_eq!(finished.error(), Some("States.TaskFailed"), "{finished:?}");
    let history = sfn
        .get_execution_history()
        .execution_arn(execution.execution_arn())
        .send()
        .await
        .expect("history");
    let task_failed = history
        .events()
        .iter()
        .find(|event| event.r#type() == &HistoryEventType::TaskFailed)
        .and_then(|event| event.task_failed_event_details())
        .expect("a TaskFailed event");
    assert!(
        task_failed
            .cause()
            .unwrap_or_default()
            .contains("CannotPullContainerError"),
        "the cause carries the job's status reason: {task_failed:?}"
    );
}

#[tokio::test]
async fn job_made_to_run_is_seen_running_then_succeeds() {
    let config = aws_config().await;
    let batch = aws_sdk_batch::Client::new(&config);
    let setup = batch_setup(&batch, "running").await;
    let submitted = batch
        .submit_job()
        .job_name("slow")
        .job_queue(&setup.queue_arn)
        .job_definition(&setup.job_definition_arn)
        .container_overrides(
            aws_sdk_batch::types::ContainerOverrides::builder()
                .environment(
                    KeyValuePair::builder()
                        .name("FLOWLINE_EMULATOR_RUN_SECONDS")
                        .value("4")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("job is submitted");
    let job_id = submitted.job_id().expect("job id").to_owned();
    let status = |batch: aws_sdk_batch::Client, job_id: String| async move {
        let jobs = batch
            .describe_jobs()
            .jobs(job_id)
            .send()
            .await
            .expect("jobs");
        jobs.jobs()[0].status().expect("status").as_str().to_owned()
    };
    wait_for_async("the job to be RUNNING", Duration::from_secs(10), || {
        let (batch, job_id) = (batch.clone(), job_id.clone());
        async move { (status(batch, job_id).await == "RUNNING").then_some(()) }
    })
    .await;
    wait_for_async("the job to succeed", Duration::from_secs(30), || {
        let (batch, job_id) = (batch.clone(), job_id.clone());
        async move {
            let now = status(batch, job_id).await;
            assert_ne!(now, "FAILED", "the job should not fail");
            (now == "SUCCEEDED").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn event_reaches_a_rule_that_starts_an_execution_with_transformed_input() {
    let config = aws_config().await;
    let (sfn, events) = (
        aws_sdk_sfn::Client::new(&config),
        aws_sdk_eventbridge::Client::new(&config),
    );
    let pass = json!({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": true}}});
    let machine = create_state_machine(&sfn, "events", pass.to_string()).await;
    let source = unique_name("flowline.e2e");
    let rule = unique_name("rule");
    events
        .put_rule()
        .name(&rule)
        .event_pattern(json!({"source": [source], "detail-type": ["Object Created"]}).to_string())
        .send()
        .await
        .expect("rule is created");
    events
        .put_targets()
        .rule(&rule)
        .targets(
            Target::builder()
                .id("flow")
                .arn(&machine)
                .role_arn(EVENTS_ROLE)
                .input_transformer(
                    InputTransformer::builder()
                        .input_paths_map("bucket", "$.detail.bucket.name")
                        .input_paths_map("key", "$.detail.object.key")
                        .input_template(r#"{"trigger": {"bucket": <bucket>, "key": <key>}}"#)
                        .build()
                        .expect("valid transformer"),
                )
                .build()
                .expect("valid target"),
        )
        .send()
        .await
        .expect("target is put");
    let put = events
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source(&source)
                .detail_type("Object Created")
                .detail(
                    json!({"bucket": {"name": "data"}, "object": {"key": "in/a.csv"}}).to_string(),
                )
                .build(),
        )
        .send()
        .await
        .expect("event is put");
    assert_eq!(put.failed_entry_count(), 0, "{put:?}");

    let execution = wait_for_async(
        "an execution started by the rule",
        Duration::from_secs(30),
        || async {
            let listed = sfn
                .list_executions()
                .state_machine_arn(&machine)
                .send()
                .await
                .expect("executions are listed");
            listed
                .executions()
                .first()
                .map(|e| e.execution_arn().to_owned())
        },
    )
    .await;
    let described = sfn
        .describe_execution()
        .execution_arn(&execution)
        .send()
        .await
        .expect("execution is described");
    let input: serde_json::Value =
        serde_json::from_str(described.input().expect("input")).expect("input is JSON");
    assert_eq!(
        input,
        json!({"trigger": {"bucket": "data", "key": "in/a.csv"}})
    );
}
