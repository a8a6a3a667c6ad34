//! S3 adapter: lists the artifacts a task wrote under its prefix, reads one object (a task's
//! manifest), and copies a resumed Run's reused artifacts server-side.

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

/// Copies every object under `from` (an `s3://bucket/prefix/`) to the same relative key under
/// `to`, server-side (CopyObject: no bytes pass through the controller), with the Flow's
/// server-side encryption; returns how many objects were copied. Copying again is harmless:
/// the same objects are written with the same content.
pub async fn copy_prefix(
    client: &Client,
    from: &str,
    to: &str,
    encryption: (Option<&str>, Option<&str>),
) -> Result<usize, AwsError> {
    let (from_bucket, from_prefix) = split_s3(from);
    let (to_bucket, to_prefix) = split_s3(to);
    let mut copied = 0;
    let mut token = None;
    loop {
        let page = call(
            Operation::ListObjectsV2,
            client
                .list_objects_v2()
                .bucket(&from_bucket)
                .prefix(&from_prefix)
                .set_continuation_token(token)
                .send(),
        )
        .await?;
        for object in page.contents() {
            let key = object.key().unwrap_or_default();
            let relative = key.strip_prefix(&from_prefix).unwrap_or(key);
            let (sse, kms_key_id) = encryption;
            let request = client
                .copy_object()
                .copy_source(format!("{from_bucket}/{}", encode_key(key)))
                .bucket(&to_bucket)
                .key(format!("{to_prefix}{relative}"))
                .set_server_side_encryption(sse.map(aws_sdk_s3::types::ServerSideEncryption::from))
                .set_ssekms_key_id(kms_key_id.map(str::to_owned));
            call(Operation::CopyObject, request.send()).await?;
            copied += 1;
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return Ok(copied);
        }
    }
}

/// A key as CopyObject's `x-amz-copy-source` wants it: URL-encoded, `/` kept.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_sources_are_url_encoded_but_keep_slashes() {
        assert_eq!(super::encode_key("a/b c/ü+.txt"), "a/b%20c/%C3%BC%2B.txt");
    }
}
