//! One thin adapter per AWS service, and the classification of their errors.

pub mod batch;
pub mod error;
pub mod events;
pub mod limits;
pub mod s3;
pub mod secrets;
pub mod sfn;
pub mod sqs;

/// The account the credentials belong to (STS GetCallerIdentity).
pub async fn caller_account(client: &aws_sdk_sts::Client) -> Result<String, error::AwsError> {
    let identity = client
        .get_caller_identity()
        .send()
        .await
        .map_err(error::classify)?;
    identity
        .account()
        .map(ToOwned::to_owned)
        .ok_or_else(|| error::AwsError::request("GetCallerIdentity returned no account"))
}
