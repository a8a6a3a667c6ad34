//! Secrets Manager adapter: finds a secret's ARN and, for a JSON secret that lists no keys,
//! its key names. A value read for its key names is dropped at once: it is never stored,
//! logged or returned.

use aws_sdk_secretsmanager::Client;

use super::error::AwsError;
use super::limits::{Operation, call};

/// A secret's ARN, or `None` when it does not exist.
pub async fn arn(client: &Client, id: &str) -> Result<Option<String>, AwsError> {
    match call(
        Operation::DescribeSecret,
        client.describe_secret().secret_id(id).send(),
    )
    .await
    {
        Ok(output) => Ok(output.arn().map(str::to_owned)),
        Err(error) => {
            if error.code == "ResourceNotFoundException" {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

/// The top-level keys of a JSON secret, sorted. A secret whose value is not a JSON object
/// has none.
pub async fn json_keys(client: &Client, id: &str) -> Result<Vec<String>, AwsError> {
    let output = call(
        Operation::GetSecretValue,
        client.get_secret_value().secret_id(id).send(),
    )
    .await?;
    let keys = output
        .secret_string()
        .and_then(|text| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).ok()
        })
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default();
    Ok(keys)
}
