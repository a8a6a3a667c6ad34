//! Binary secrets, resolved in the task with its own credentials (the job role): Batch injects
//! only string secrets, so the compiler passes their ARNs in `FLOWLINE_BINARY_SECRETS` and the
//! task reads the bytes and exports them base64-encoded under each name. Values are never
//! logged; errors name the variable and the ARN only.

use aws_sdk_secretsmanager::Client;

use super::TaskError;

/// The region of a Secrets Manager ARN (`arn:aws:secretsmanager:<region>:…`).
fn region_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|region| !region.is_empty())
}

/// Fetches each `NAME=ARN` and returns `NAME=base64(bytes)`. A secret stored as a string is
/// taken as its UTF-8 bytes.
pub async fn resolve(secrets: &[(String, String)]) -> Result<Vec<(String, String)>, TaskError> {
    if secrets.is_empty() {
        return Ok(Vec::new());
    }
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut values = Vec::with_capacity(secrets.len());
    for (name, arn) in secrets {
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&shared);
        if let Some(region) = region_of(arn) {
            config = config.region(aws_sdk_secretsmanager::config::Region::new(
                region.to_owned(),
            ));
        }
        let client = Client::from_conf(config.build());
        let secret = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|error| TaskError::Secret {
                name: name.clone(),
                arn: arn.clone(),
                reason: aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
            })?;
        let bytes: Vec<u8> = match (secret.secret_binary(), secret.secret_string()) {
            (Some(blob), _) => blob.as_ref().to_vec(),
            (None, Some(text)) => text.as_bytes().to_vec(),
            (None, None) => {
                return Err(TaskError::Secret {
                    name: name.clone(),
                    arn: arn.clone(),
                    reason: "the secret has no value".into(),
                });
            }
        };
        values.push((name.clone(), aws_smithy_types::base64::encode(bytes)));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_read_in_its_own_region() {
        assert_eq!(
            region_of("arn:aws:secretsmanager:eu-west-1:1:secret:x-AbCdEf"),
            Some("eu-west-1")
        );
        assert_eq!(region_of("plain-name"), None);
    }
}
