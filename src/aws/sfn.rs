//! Step Functions adapter: reads and writes the state machine of a Flow.

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::{StateMachineType, Tag};

use crate::compile::StateMachine;

use super::error::{AwsError, classify};

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
}

/// Describes a state machine by ARN; `None` when it does not exist.
pub async fn describe_state_machine(
    client: &Client,
    arn: &str,
) -> Result<Option<ObservedMachine>, AwsError> {
    match client
        .describe_state_machine()
        .state_machine_arn(arn)
        .send()
        .await
    {
        Ok(output) => Ok(Some(ObservedMachine {
            arn: output.state_machine_arn().to_owned(),
            // A definition that is not JSON differs from any we would write: it gets replaced.
            definition: serde_json::from_str(output.definition())
                .unwrap_or(serde_json::Value::Null),
            role_arn: output.role_arn().to_owned(),
        })),
        Err(error) => {
            let error = classify(error);
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
    let output = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(classify)?;
    Ok(output
        .tags()
        .iter()
        .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
        .collect())
}

/// Replaces a state machine's definition and role, publishing a new version; returns the
/// version's ARN.
pub async fn update_state_machine(
    client: &Client,
    arn: &str,
    machine: &StateMachine,
) -> Result<String, AwsError> {
    let output = client
        .update_state_machine()
        .state_machine_arn(arn)
        .definition(machine.definition.to_string())
        .role_arn(&machine.role_arn)
        .publish(true)
        .send()
        .await
        .map_err(classify)?;
    Ok(output
        .state_machine_version_arn()
        .unwrap_or_default()
        .to_owned())
}

/// The newest published version of a state machine, if any.
pub async fn latest_version(client: &Client, arn: &str) -> Result<Option<String>, AwsError> {
    let output = client
        .list_state_machine_versions()
        .state_machine_arn(arn)
        .max_results(1)
        .send()
        .await
        .map_err(classify)?;
    Ok(output
        .state_machine_versions()
        .first()
        .map(|version| version.state_machine_version_arn().to_owned()))
}

/// Deletes a state machine (and its versions); a missing one counts as deleted.
pub async fn delete_state_machine(client: &Client, arn: &str) -> Result<(), AwsError> {
    match client
        .delete_state_machine()
        .state_machine_arn(arn)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => {
            let error = classify(error);
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
    let output = client
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
        .send()
        .await
        .map_err(classify)?;
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
