//! Step Functions adapter: creates a compiled state machine. Writes only; idempotent by name.

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::{StateMachineType, Tag};

use crate::compile::StateMachine;

use super::error::{AwsError, classify};

/// Creates the state machine (publishing version 1) and returns its ARN.
pub async fn create_state_machine(
    client: &Client,
    machine: &StateMachine,
) -> Result<String, AwsError> {
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
    Ok(output.state_machine_arn().to_owned())
}
