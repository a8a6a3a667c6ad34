//! Step Functions adapter: reads and writes the state machine of a Flow.

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::{StateMachineType, Tag};

use crate::compile::StateMachine;

use super::error::AwsError;
use super::limits::{Operation, call};

/// Creates the state machine (publishing version 1) and returns its ARN.
pub async fn create_state_machine(
    client: &Client,
    machine: &StateMachine,
) -> Result<String, AwsError> {
    create_published(client, machine).await.map(|(arn, _)| arn)
}

/// What Flowline reads back of a state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedMachine {
    pub arn: String,
    pub definition: serde_json::Value,
    pub role_arn: String,
    /// The machine's current revision (a version: the revision it was published from).
    pub revision_id: Option<String>,
}

/// Describes a state machine by ARN; `None` when it does not exist.
pub async fn describe_state_machine(
    client: &Client,
    arn: &str,
) -> Result<Option<ObservedMachine>, AwsError> {
    match call(
        Operation::DescribeStateMachine,
        client
            .describe_state_machine()
            .state_machine_arn(arn)
            .send(),
    )
    .await
    {
        Ok(output) => Ok(Some(ObservedMachine {
            arn: output.state_machine_arn().to_owned(),
            // A definition that is not JSON differs from any we would write: it gets replaced.
            definition: serde_json::from_str(output.definition())
                .unwrap_or(serde_json::Value::Null),
            role_arn: output.role_arn().to_owned(),
            revision_id: output.revision_id().map(str::to_owned),
        })),
        Err(error) => {
            if is_not_found(&error) {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

/// The tags of a state machine.
pub async fn tags(
    client: &Client,
    arn: &str,
) -> Result<std::collections::BTreeMap<String, String>, AwsError> {
    let output = call(
        Operation::ListTagsForResource,
        client.list_tags_for_resource().resource_arn(arn).send(),
    )
    .await?;
    Ok(output
        .tags()
        .iter()
        .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
        .collect())
}

/// A version published by an update, and the machine revision it was published from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub version_arn: String,
    pub revision_id: Option<String>,
}

/// Replaces a state machine's definition and role, publishing a new version.
pub async fn update_state_machine(
    client: &Client,
    arn: &str,
    machine: &StateMachine,
) -> Result<Published, AwsError> {
    let output = call(
        Operation::UpdateStateMachine,
        client
            .update_state_machine()
            .state_machine_arn(arn)
            .definition(machine.definition.to_string())
            .role_arn(&machine.role_arn)
            .publish(true)
            .send(),
    )
    .await?;
    Ok(Published {
        version_arn: output
            .state_machine_version_arn()
            .unwrap_or_default()
            .to_owned(),
        revision_id: output.revision_id().map(str::to_owned),
    })
}

/// The newest published version of a state machine, if any.
pub async fn latest_version(client: &Client, arn: &str) -> Result<Option<String>, AwsError> {
    let output = call(
        Operation::ListStateMachineVersions,
        client
            .list_state_machine_versions()
            .state_machine_arn(arn)
            .max_results(1)
            .send(),
    )
    .await?;
    Ok(output
        .state_machine_versions()
        .first()
        .map(|version| version.state_machine_version_arn().to_owned()))
}

/// A running execution of a state machine, and the version it was started on (none for an
/// execution started on the machine itself, which runs the revision current at its start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningExecution {
    pub arn: String,
    pub version_arn: Option<String>,
}

/// The executions of a state machine (of every version) that are running.
pub async fn running_executions(
    client: &Client,
    machine_arn: &str,
) -> Result<Vec<RunningExecution>, AwsError> {
    let mut running = Vec::new();
    let mut token = None;
    loop {
        let output = call(
            Operation::ListExecutions,
            client
                .list_executions()
                .state_machine_arn(machine_arn)
                .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
                .max_results(1000)
                .set_next_token(token)
                .send(),
        )
        .await?;
        running.extend(output.executions().iter().map(|e| RunningExecution {
            arn: e.execution_arn().to_owned(),
            version_arn: e.state_machine_version_arn().map(str::to_owned),
        }));
        token = output.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(running);
        }
    }
}

/// Deletes a state machine (and its versions); a missing one counts as deleted.
pub async fn delete_state_machine(client: &Client, arn: &str) -> Result<(), AwsError> {
    match call(
        Operation::DeleteStateMachine,
        client.delete_state_machine().state_machine_arn(arn).send(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(error) => {
            if is_not_found(&error) {
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

/// Creates a state machine, returning `(machine ARN, version ARN)`.
pub async fn create_published(
    client: &Client,
    machine: &StateMachine,
) -> Result<(String, String), AwsError> {
    let output = call(
        Operation::CreateStateMachine,
        client
            .create_state_machine()
            .name(&machine.name)
            .role_arn(&machine.role_arn)
            .definition(machine.definition.to_string())
            .r#type(StateMachineType::from(machine.kind.as_str()))
            .publish(true)
            .set_tags(Some(
                machine
                    .tags
                    .iter()
                    .map(|(key, value)| Tag::builder().key(key).value(value).build())
                    .collect(),
            ))
            .send(),
    )
    .await?;
    Ok((
        output.state_machine_arn().to_owned(),
        output
            .state_machine_version_arn()
            .unwrap_or_default()
            .to_owned(),
    ))
}

fn is_not_found(error: &AwsError) -> bool {
    matches!(
        error.code.as_str(),
        "StateMachineDoesNotExist" | "ResourceNotFound" | "ResourceNotFoundException"
    )
}

/// Starts an execution under a fixed name. A name already taken (a retry after a crash)
/// returns the existing execution's ARN instead of starting a second one.
pub async fn start_execution(
    client: &Client,
    state_machine: &str,
    machine_arn: &str,
    name: &str,
    input: &str,
) -> Result<String, AwsError> {
    match call(
        Operation::StartExecution,
        client
            .start_execution()
            .state_machine_arn(state_machine)
            .name(name)
            .input(input)
            .send(),
    )
    .await
    {
        Ok(output) => Ok(output.execution_arn().to_owned()),
        Err(error) => {
            if error.code == "ExecutionAlreadyExists" {
                Ok(execution_arn(machine_arn, name))
            } else {
                Err(error)
            }
        }
    }
}

/// `arn:aws:states:r:a:execution:<machine>:<name>` from the machine's ARN.
pub fn execution_arn(machine_arn: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// An execution's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionState {
    pub status: String,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub start: Option<k8s_openapi::jiff::Timestamp>,
    pub stop: Option<k8s_openapi::jiff::Timestamp>,
    /// The execution's input (JSON text), read to tell who started it.
    pub input: Option<String>,
}

pub async fn describe_execution(client: &Client, arn: &str) -> Result<ExecutionState, AwsError> {
    let output = call(
        Operation::DescribeExecution,
        client.describe_execution().execution_arn(arn).send(),
    )
    .await?;
    let time =
        |t: &aws_smithy_types::DateTime| k8s_openapi::jiff::Timestamp::from_second(t.secs()).ok();
    Ok(ExecutionState {
        status: output.status().as_str().to_owned(),
        error: output.error().map(str::to_owned),
        cause: output.cause().map(str::to_owned),
        start: time(output.start_date()),
        stop: output.stop_date().and_then(time),
        input: output.input().map(str::to_owned),
    })
}

/// An execution as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedExecution {
    pub arn: String,
    pub name: String,
    /// Start time in milliseconds since the epoch.
    pub start_ms: i64,
}

/// The executions of a state machine that started at or after `since_ms`, newest first.
/// Step Functions lists newest first, so paging stops at the first older one.
pub async fn list_executions_since(
    client: &Client,
    machine_arn: &str,
    since_ms: i64,
) -> Result<Vec<ListedExecution>, AwsError> {
    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let output = call(
            Operation::ListExecutions,
            client
                .list_executions()
                .state_machine_arn(machine_arn)
                .max_results(100)
                .set_next_token(token)
                .send(),
        )
        .await?;
        let mut older_seen = false;
        for execution in output.executions() {
            let start = execution.start_date();
            let start_ms = start.secs() * 1000 + i64::from(start.subsec_nanos() / 1_000_000);
            if start_ms < since_ms {
                older_seen = true;
                continue;
            }
            listed.push(ListedExecution {
                arn: execution.execution_arn().to_owned(),
                name: execution.name().to_owned(),
                start_ms,
            });
        }
        token = output.next_token().map(str::to_owned);
        if token.is_none() || older_seen {
            return Ok(listed);
        }
    }
}

/// The whole history of an execution, oldest first, reduced to what step tracking reads.
pub async fn history(
    client: &Client,
    arn: &str,
) -> Result<Vec<crate::reconcilers::run::HistoryEvent>, AwsError> {
    history_after(client, arn, 0).await
}

/// The events of an execution's history after event `after_id`, oldest first. The history
/// is read newest first and only until `after_id`, so a Run that already read most of its
/// history pays for the new events only (one call in steady state).
pub async fn history_after(
    client: &Client,
    arn: &str,
    after_id: i64,
) -> Result<Vec<crate::reconcilers::run::HistoryEvent>, AwsError> {
    use aws_sdk_sfn::types::HistoryEventType as Kind;
    let mut events = Vec::new();
    let mut token = None;
    loop {
        let page = call(
            Operation::GetExecutionHistory,
            client
                .get_execution_history()
                .execution_arn(arn)
                .reverse_order(true)
                .max_results(if after_id > 0 { 100 } else { 1000 })
                .set_next_token(token)
                .send(),
        )
        .await?;
        let mut reached_known = false;
        for event in page.events() {
            if event.id() <= after_id {
                reached_known = true;
                break;
            }
            let detail = match event.r#type() {
                Kind::TaskScheduled => event
                    .task_scheduled_event_details()
                    .map(|d| d.parameters().to_owned()),
                Kind::TaskSubmitted => event
                    .task_submitted_event_details()
                    .and_then(|d| d.output().map(str::to_owned)),
                Kind::TaskSucceeded => event
                    .task_succeeded_event_details()
                    .and_then(|d| d.output().map(str::to_owned)),
                Kind::TaskFailed => event
                    .task_failed_event_details()
                    .and_then(|d| d.cause().map(str::to_owned)),
                Kind::MapRunStarted => event
                    .map_run_started_event_details()
                    .and_then(|d| d.map_run_arn().map(str::to_owned)),
                Kind::MapStateEntered | Kind::TaskStateEntered => event
                    .state_entered_event_details()
                    .map(|d| d.name().to_owned()),
                _ => None,
            };
            events.push(crate::reconcilers::run::HistoryEvent {
                id: event.id(),
                previous_id: event.previous_event_id(),
                kind: event.r#type().as_str().to_owned(),
                detail,
                timestamp: k8s_openapi::jiff::Timestamp::from_second(event.timestamp().secs())
                    .ok()
                    .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            });
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() || reached_known {
            events.reverse();
            return Ok(events);
        }
    }
}

/// How many items of a Distributed Map run are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapRunCounts {
    /// Whether the map run has ended (its counts are final).
    pub finished: bool,
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub aborted: i64,
}

/// The item counts of a Distributed Map run.
pub async fn map_run_counts(client: &Client, map_run_arn: &str) -> Result<MapRunCounts, AwsError> {
    let output = call(
        Operation::DescribeMapRun,
        client.describe_map_run().map_run_arn(map_run_arn).send(),
    )
    .await?;
    let finished = output.status() != &aws_sdk_sfn::types::MapRunStatus::Running;
    Ok(output
        .item_counts()
        .map(|c| MapRunCounts {
            finished,
            total: c.total(),
            pending: c.pending(),
            running: c.running(),
            succeeded: c.succeeded(),
            failed: c.failed(),
            aborted: c.aborted() + c.timed_out(),
        })
        .unwrap_or_default())
}

/// The child executions of a Distributed Map run, at most `limit`.
pub async fn map_run_executions(
    client: &Client,
    map_run_arn: &str,
    limit: usize,
) -> Result<Vec<String>, AwsError> {
    let mut arns = Vec::new();
    let mut token = None;
    loop {
        let page = call(
            Operation::ListExecutions,
            client
                .list_executions()
                .map_run_arn(map_run_arn)
                .max_results(100)
                .set_next_token(token)
                .send(),
        )
        .await?;
        arns.extend(
            page.executions()
                .iter()
                .map(|e| e.execution_arn().to_owned()),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() || arns.len() >= limit {
            arns.truncate(limit);
            return Ok(arns);
        }
    }
}

/// Stops an execution; one already finished counts as stopped. Returns whether it existed
/// (one that does not is no error).
pub async fn stop_execution(client: &Client, arn: &str) -> Result<bool, AwsError> {
    match call(
        Operation::StopExecution,
        client
            .stop_execution()
            .execution_arn(arn)
            .cause("stopped by Flowline: spec.stop")
            .send(),
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(error) => {
            if error.code == "ExecutionDoesNotExist" {
                Ok(false)
            } else {
                Err(error)
            }
        }
    }
}
