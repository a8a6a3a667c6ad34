//! SQS adapter: the queue that receives Step Functions' execution status change events.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

use super::error::AwsError;
use super::limits::{Operation, call};

/// A received message: its body and the handle that deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub body: String,
    pub receipt_handle: String,
}

/// Waits up to 20 s (long polling) for up to 10 messages.
pub async fn receive(client: &Client, queue_url: &str) -> Result<Vec<Message>, AwsError> {
    let output = call(
        Operation::ReceiveMessage,
        client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
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
