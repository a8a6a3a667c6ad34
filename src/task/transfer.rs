//! S3 transfers of the task side: parents' outputs down, the task's outputs up, with the
//! Flow's server-side encryption on every object, `workers` transfers at once and the SDK's
//! standard retries (`retries + 1` attempts per request).

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use futures::{StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TaskError;
use super::contract::{Encryption, S3Settings};
use super::layout::{InputPrefix, input_path, output_key};
use super::manifest::Artifact;

/// Files from this size up are uploaded in parts, `PART_SIZE` each (more for files so large
/// that S3's 10,000 parts would not hold them), several parts at once.
pub const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
const PART_SIZE: u64 = 16 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;

/// An S3 client for the task: its credentials and region from the default chain (the job
/// role's on Batch), the settings' endpoint and addressing.
pub async fn client(settings: &S3Settings) -> Client {
    let retry = aws_config::retry::RetryConfig::standard().with_max_attempts(settings.retries + 1);
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry)
        .load()
        .await;
    let mut builder =
        aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

fn s3_error(what: String, error: impl std::error::Error + Send + Sync + 'static) -> TaskError {
    TaskError::S3 {
        what,
        source: Box::new(error),
    }
}

/// Downloads every object under each prefix into `dir`, `workers` at once; returns how many.
pub async fn download(
    client: &Client,
    inputs: &[InputPrefix],
    dir: &Path,
    workers: usize,
) -> Result<usize, TaskError> {
    let mut objects = Vec::new();
    for input in inputs {
        for (key, _) in list(client, &input.bucket, &input.prefix).await? {
            if let Some(path) = input_path(input, &key) {
                objects.push((input.bucket.clone(), key, dir.join(path)));
            }
        }
    }
    let count = objects.len();
    stream::iter(objects)
        .map(|(bucket, key, path)| async move { download_one(client, &bucket, &key, &path).await })
        .buffer_unordered(workers)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(count)
}

/// The key and size of every object under `s3://bucket/prefix`, in key order.
pub async fn list(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, i64)>, TaskError> {
    let mut objects = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error(format!("listing s3://{bucket}/{prefix}"), e))?;
        for object in page.contents() {
            if let Some(key) = object.key() {
                objects.push((key.to_owned(), object.size().unwrap_or_default()));
            }
        }
    }
    Ok(objects)
}

async fn download_one(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
) -> Result<(), TaskError> {
    let what = || format!("downloading s3://{bucket}/{key}");
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| TaskError::Io(parent.display().to_string(), e))?;
    }
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_error(what(), e))?;
    let mut body = object.body;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| TaskError::Io(path.display().to_string(), e))?;
    while let Some(chunk) = body.try_next().await.map_err(|e| s3_error(what(), e))? {
        file.write_all(&chunk)
            .await
            .map_err(|e| TaskError::Io(path.display().to_string(), e))?;
    }
    file.flush()
        .await
        .map_err(|e| TaskError::Io(path.display().to_string(), e))
}

/// Every regular file under `dir`, as paths relative to it, sorted.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>, TaskError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TaskError> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| TaskError::Io(dir.display().to_string(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| TaskError::Io(dir.display().to_string(), e))?;
            let path = entry.path();
            // Symbolic links are followed: a task may link a file it wrote elsewhere.
            let meta = std::fs::metadata(&path)
                .map_err(|e| TaskError::Io(path.display().to_string(), e))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else if meta.is_file()
                && let Ok(relative) = path.strip_prefix(root)
            {
                out.push(relative.to_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Where uploads go, and how they are encrypted.
pub struct Destination<'a> {
    pub bucket: &'a str,
    /// Key prefix of the task (ends with `/`).
    pub prefix: &'a str,
    pub encryption: &'a Encryption,
}

/// Uploads each file (relative to `dir`) under the destination, `workers` at once. Every file
/// is tried; the artifacts stored and the errors of those that failed are returned.
pub async fn upload(
    client: &Client,
    dir: &Path,
    files: &[PathBuf],
    to: &Destination<'_>,
    workers: usize,
) -> (Vec<Artifact>, Vec<String>) {
    let results: Vec<Result<Artifact, TaskError>> = stream::iter(files)
        .map(|relative| upload_one(client, dir, relative, to, workers))
        .buffer_unordered(workers)
        .collect()
        .await;
    let mut artifacts = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(artifact) => artifacts.push(artifact),
            Err(error) => errors.push(error.to_string()),
        }
    }
    (artifacts, errors)
}

async fn upload_one(
    client: &Client,
    dir: &Path,
    relative: &Path,
    to: &Destination<'_>,
    workers: usize,
) -> Result<Artifact, TaskError> {
    let path = dir.join(relative);
    let key = output_key(to.prefix, relative).ok_or_else(|| {
        TaskError::Layout(format!(
            "output {} has no UTF-8 name to store it under",
            relative.display()
        ))
    })?;
    let (size, sha256) = digest(&path).await?;
    let what = || {
        format!(
            "uploading {} to s3://{}/{key}",
            relative.display(),
            to.bucket
        )
    };
    if size >= MULTIPART_THRESHOLD {
        upload_multipart(client, &path, size, to, &key, workers)
            .await
            .map_err(|e| TaskError::S3 {
                what: what(),
                source: e,
            })?;
    } else {
        let body = ByteStream::from_path(&path)
            .await
            .map_err(|e| s3_error(what(), e))?;
        let request = client.put_object().bucket(to.bucket).key(&key).body(body);
        let (sse, key_id) = sse(to.encryption);
        request
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(key_id)
            .send()
            .await
            .map_err(|e| s3_error(what(), e))?;
    }
    Ok(Artifact {
        name: key.strip_prefix(to.prefix).unwrap_or(&key).to_owned(),
        size,
        sha256,
    })
}

/// Stores bytes (the manifest) under the destination.
pub async fn put_bytes(
    client: &Client,
    to: &Destination<'_>,
    name: &str,
    bytes: Vec<u8>,
) -> Result<(), TaskError> {
    let key = format!("{}{name}", to.prefix);
    let (sse, key_id) = sse(to.encryption);
    client
        .put_object()
        .bucket(to.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(bytes))
        .set_server_side_encryption(sse)
        .set_ssekms_key_id(key_id)
        .send()
        .await
        .map_err(|e| s3_error(format!("uploading s3://{}/{key}", to.bucket), e))?;
    Ok(())
}

fn sse(encryption: &Encryption) -> (Option<ServerSideEncryption>, Option<String>) {
    match encryption {
        Encryption::BucketDefault => (None, None),
        Encryption::Aes256 => (Some(ServerSideEncryption::Aes256), None),
        Encryption::Kms { key_id } => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
    }
}

/// Size and hex SHA-256 of a file.
async fn digest(path: &Path) -> Result<(u64, String), TaskError> {
    let io = |e| TaskError::Io(path.display().to_string(), e);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer).await.map_err(io)?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok((size, hex))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A multipart upload; aborted when a part fails, so no orphaned parts are billed.
async fn upload_multipart(
    client: &Client,
    path: &Path,
    size: u64,
    to: &Destination<'_>,
    key: &str,
    workers: usize,
) -> Result<(), BoxError> {
    let (sse, key_id) = sse(to.encryption);
    let created = client
        .create_multipart_upload()
        .bucket(to.bucket)
        .key(key)
        .set_server_side_encryption(sse)
        .set_ssekms_key_id(key_id)
        .send()
        .await?;
    let upload_id = created.upload_id().unwrap_or_default().to_owned();
    let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS));
    let parts = size.div_ceil(part_size);
    let result: Result<Vec<CompletedPart>, BoxError> = stream::iter(0..parts)
        .map(|index| {
            let upload_id = upload_id.clone();
            async move {
                let offset = index * part_size;
                let length = part_size.min(size - offset);
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await?;
                let number = i32::try_from(index + 1)?;
                let part = client
                    .upload_part()
                    .bucket(to.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build())
            }
        })
        .buffered(workers.min(8))
        .try_collect()
        .await;
    let completed = match result {
        Ok(parts) => parts,
        Err(error) => {
            let _ = client
                .abort_multipart_upload()
                .bucket(to.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(error);
        }
    };
    client
        .complete_multipart_upload()
        .bucket(to.bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}
