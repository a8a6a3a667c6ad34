//! SQS adapter: the queue that receives Step Functions' execution status change events, and
//! the Schedules' dead-letter queues.

use std::collections::BTreeMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};

use super::error::AwsError;
use super::limits::{Operation, call};

/// A received message: its body and the handle that deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub body: String,
    pub receipt_handle: String,
}

/// How long a receive waits for messages (long polling): 10 s, well under the controller's
/// 20 s attempt timeout. At SQS's maximum of 20 s an idle receive reached that timeout, was
/// retried as a failure and ended in an error after 60 s, missing whatever arrived meanwhile.
pub const RECEIVE_WAIT_SECONDS: i32 = 10;

/// Waits up to [`RECEIVE_WAIT_SECONDS`] for up to 10 messages.
pub async fn receive(client: &Client, queue_url: &str) -> Result<Vec<Message>, AwsError> {
    let output = call(
        Operation::ReceiveMessage,
        client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(RECEIVE_WAIT_SECONDS)
            .send(),
    )
    .await?;
    Ok(output
        .messages()
        .iter()
        .filter_map(|m| {
            Some(Message {
                body: m.body()?.to_owned(),
                receipt_handle: m.receipt_handle()?.to_owned(),
            })
        })
        .collect())
}

/// Deletes handled messages (at most 10, as received).
pub async fn delete(
    client: &Client,
    queue_url: &str,
    messages: &[Message],
) -> Result<(), AwsError> {
    if messages.is_empty() {
        return Ok(());
    }
    let entries = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&m.receipt_handle)
                .build()
                .map_err(AwsError::request)
        })
        .collect::<Result<Vec<_>, _>>()?;
    call(
        Operation::DeleteMessageBatch,
        client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send(),
    )
    .await?;
    Ok(())
}

/// A queue that exists: its URL and the attributes Flowline sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedQueue {
    pub url: String,
    pub attributes: BTreeMap<String, String>,
}

/// The attributes Flowline sets on a queue, and so reads back.
pub const MANAGED_ATTRIBUTES: [&str; 3] = ["Policy", "MessageRetentionPeriod", "VisibilityTimeout"];

/// The queue named `name` with the attributes Flowline sets; `None` when it does not exist.
pub async fn describe_queue(
    client: &Client,
    name: &str,
) -> Result<Option<ObservedQueue>, AwsError> {
    let url = match call(
        Operation::GetQueueUrl,
        client.get_queue_url().queue_name(name).send(),
    )
    .await
    {
        Ok(output) => output.queue_url().unwrap_or_default().to_owned(),
        Err(error) if is_missing(&error) => return Ok(None),
        Err(error) => return Err(error),
    };
    let request = client
        .get_queue_attributes()
        .queue_url(&url)
        .set_attribute_names(Some(
            MANAGED_ATTRIBUTES
                .iter()
                .map(|name| QueueAttributeName::from(*name))
                .collect(),
        ))
        .send();
    let output = match call(Operation::GetQueueAttributes, request).await {
        Ok(output) => output,
        Err(error) if is_missing(&error) => return Ok(None),
        Err(error) => return Err(error),
    };
    let attributes = output
        .attributes()
        .map(|all| {
            all.iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(ObservedQueue { url, attributes }))
}

/// Creates a queue with its attributes and tags (idempotent while they are the same).
pub async fn create_queue(
    client: &Client,
    name: &str,
    attributes: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let request = client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(
            attributes
                .iter()
                .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v.clone()))
                .collect(),
        ))
        .set_tags(Some(tags.clone().into_iter().collect()))
        .send();
    let output = call(Operation::CreateQueue, request).await?;
    Ok(output.queue_url().unwrap_or_default().to_owned())
}

/// Sets a queue's attributes.
pub async fn set_queue_attributes(
    client: &Client,
    url: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    let request = client
        .set_queue_attributes()
        .queue_url(url)
        .set_attributes(Some(
            attributes
                .iter()
                .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v.clone()))
                .collect(),
        ))
        .send();
    call(Operation::SetQueueAttributes, request).await?;
    Ok(())
}

/// The tags of a queue.
pub async fn queue_tags(client: &Client, url: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let output = call(
        Operation::ListQueueTags,
        client.list_queue_tags().queue_url(url).send(),
    )
    .await?;
    Ok(output
        .tags()
        .map(|tags| tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Deletes a queue; one already gone counts as deleted.
pub async fn delete_queue(client: &Client, url: &str) -> Result<(), AwsError> {
    match call(
        Operation::DeleteQueue,
        client.delete_queue().queue_url(url).send(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_missing(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

/// SQS names a missing queue in two ways (the JSON protocol's and the query protocol's).
fn is_missing(error: &AwsError) -> bool {
    error.code == "QueueDoesNotExist" || error.code == "AWS.SimpleQueueService.NonExistentQueue"
}
