//! S3 adapter: lists the artifacts a task wrote under its prefix, reads one object (a task's
//! manifest). Reads only.

use aws_sdk_s3::Client;

use crate::api::Artifact;
use crate::compile::state_machine::split_s3;

use super::error::AwsError;
use super::limits::{Operation, call};

/// What lies under a prefix: the first `limit` objects, and how many there are (counted up
/// to `count_limit`, beyond which `truncated` says the count is a lower bound).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub artifacts: Vec<Artifact>,
    pub count: i64,
    pub truncated: bool,
}

/// Lists the objects under `s3://bucket/prefix/`.
pub async fn list(
    client: &Client,
    uri: &str,
    limit: usize,
    count_limit: usize,
) -> Result<Listing, AwsError> {
    let (bucket, prefix) = split_s3(uri);
    let mut listing = Listing::default();
    let mut token = None;
    loop {
        let page = call(
            Operation::ListObjectsV2,
            client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(&prefix)
                .set_continuation_token(token)
                .send(),
        )
        .await?;
        for object in page.contents() {
            listing.count += 1;
            if listing.artifacts.len() < limit {
                let key = object.key().unwrap_or_default();
                listing.artifacts.push(Artifact {
                    name: key.strip_prefix(&prefix).unwrap_or(key).to_owned(),
                    uri: format!("s3://{bucket}/{key}"),
                    size: object.size(),
                    failed_attempt: false,
                });
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return Ok(listing);
        }
        if listing.count as usize >= count_limit {
            listing.truncated = true;
            return Ok(listing);
        }
    }
}

/// Reads the object at `s3://bucket/key`; `None` when there is no such object (S3 answers
/// NoSuchKey, or 404 to a role that may list the bucket).
pub async fn get(client: &Client, uri: &str) -> Result<Option<Vec<u8>>, AwsError> {
    // An object's key, as is (`split_s3` gives a prefix, ending with `/`).
    let rest = uri.trim_start_matches("s3://");
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let object = match call(
        Operation::GetObject,
        client.get_object().bucket(bucket).key(key).send(),
    )
    .await
    {
        Ok(object) => object,
        Err(error) if error.code == "NoSuchKey" || error.code == "NotFound" => return Ok(None),
        Err(error) => return Err(error),
    };
    let bytes = object.body.collect().await.map_err(|error| AwsError {
        class: super::error::ErrorClass::Retryable,
        code: "ReadBody".into(),
        message: format!("reading s3://{bucket}/{key}: {error}"),
    })?;
    Ok(Some(bytes.to_vec()))
}
