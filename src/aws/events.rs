//! EventBridge adapter: the rule and the single target of a Schedule, and the execution
//! events rule.

use std::collections::BTreeMap;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::{
    DeadLetterConfig, InputTransformer, RetryPolicy, RuleState, Tag, Target,
};

use super::error::AwsError;
use super::limits::{Operation, call};

/// A rule as Flowline writes it and reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub name: String,
    /// `cron(...)` or `rate(...)`, for time-based rules.
    pub schedule_expression: Option<String>,
    /// The event pattern (JSON text), for event-based rules.
    pub event_pattern: Option<String>,
    pub enabled: bool,
    pub description: String,
}

/// The rule's one target: a state machine started with a role and an input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleTarget {
    pub id: String,
    pub arn: String,
    pub role_arn: String,
    /// A constant input (JSON text).
    pub input: Option<String>,
    /// Or an input built from the event: JSONPaths by placeholder name, and the template.
    pub input_paths: BTreeMap<String, String>,
    pub input_template: Option<String>,
    /// Where EventBridge puts an event it could not deliver (an SQS queue's ARN).
    pub dead_letter_arn: Option<String>,
    /// How long EventBridge keeps retrying a failed delivery.
    pub retry: Option<DeliveryRetry>,
}

/// A target's retry policy: EventBridge retries a failed delivery (with backoff and jitter)
/// up to this many times, or until the event is this old, then dead-letters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRetry {
    pub max_attempts: i32,
    pub max_event_age_seconds: i32,
}

/// A rule that exists: what was read, and its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    pub arn: String,
    pub rule: Rule,
}

/// Describes a rule; `None` when it does not exist.
pub async fn describe_rule(client: &Client, name: &str) -> Result<Option<ObservedRule>, AwsError> {
    match call(
        Operation::DescribeRule,
        client.describe_rule().name(name).send(),
    )
    .await
    {
        Ok(output) => Ok(Some(ObservedRule {
            arn: output.arn().unwrap_or_default().to_owned(),
            rule: Rule {
                name: output.name().unwrap_or(name).to_owned(),
                schedule_expression: output
                    .schedule_expression()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                event_pattern: output
                    .event_pattern()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                enabled: output.state() == Some(&RuleState::Enabled),
                description: output.description().unwrap_or_default().to_owned(),
            },
        })),
        Err(error) => not_found_is_none(error),
    }
}

/// Creates or updates a rule (PutRule is an upsert, state included); returns its ARN.
pub async fn put_rule(
    client: &Client,
    rule: &Rule,
    tags: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let request = client
        .put_rule()
        .name(&rule.name)
        .set_schedule_expression(rule.schedule_expression.clone())
        .set_event_pattern(rule.event_pattern.clone())
        .state(if rule.enabled {
            RuleState::Enabled
        } else {
            RuleState::Disabled
        })
        .description(&rule.description)
        .set_tags(Some(
            tags.iter()
                .map(|(key, value)| Tag::builder().key(key).value(value).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(AwsError::request)?,
        ))
        .send();
    let output = call(Operation::PutRule, request).await?;
    Ok(output.rule_arn().unwrap_or_default().to_owned())
}

/// The rule's targets.
pub async fn list_targets(client: &Client, rule: &str) -> Result<Vec<RuleTarget>, AwsError> {
    let mut targets = Vec::new();
    let mut token = None;
    loop {
        let request = client
            .list_targets_by_rule()
            .rule(rule)
            .set_next_token(token)
            .send();
        let output = match call(Operation::ListTargetsByRule, request).await {
            Ok(output) => output,
            Err(error) => {
                return if is_not_found(&error) {
                    Ok(targets)
                } else {
                    Err(error)
                };
            }
        };
        targets.extend(output.targets().iter().map(|target| {
            let transformer = target.input_transformer();
            RuleTarget {
                id: target.id().to_owned(),
                arn: target.arn().to_owned(),
                role_arn: target.role_arn().unwrap_or_default().to_owned(),
                input: target.input().map(str::to_owned),
                input_paths: transformer
                    .and_then(|t| t.input_paths_map())
                    .map(|paths| paths.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                input_template: transformer.map(|t| t.input_template().to_owned()),
                dead_letter_arn: target
                    .dead_letter_config()
                    .and_then(|d| d.arn())
                    .map(str::to_owned),
                retry: target.retry_policy().map(|r| DeliveryRetry {
                    max_attempts: r.maximum_retry_attempts().unwrap_or_default(),
                    max_event_age_seconds: r.maximum_event_age_in_seconds().unwrap_or_default(),
                }),
            }
        }));
        token = output.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(targets);
        }
    }
}

/// Sets the rule's target (PutTargets replaces a target with the same id).
pub async fn put_target(client: &Client, rule: &str, target: &RuleTarget) -> Result<(), AwsError> {
    let transformer = match &target.input_template {
        Some(template) => Some(
            InputTransformer::builder()
                .set_input_paths_map(Some(target.input_paths.clone().into_iter().collect()))
                .input_template(template)
                .build()
                .map_err(AwsError::request)?,
        ),
        None => None,
    };
    let built = Target::builder()
        .id(&target.id)
        .arn(&target.arn)
        // SQS targets take no role (the queue's policy lets EventBridge send).
        .set_role_arn(Some(target.role_arn.clone()).filter(|arn| !arn.is_empty()))
        .set_input(target.input.clone())
        .set_input_transformer(transformer)
        .set_dead_letter_config(
            target
                .dead_letter_arn
                .as_ref()
                .map(|arn| DeadLetterConfig::builder().arn(arn).build()),
        )
        .set_retry_policy(target.retry.map(|retry| {
            RetryPolicy::builder()
                .maximum_retry_attempts(retry.max_attempts)
                .maximum_event_age_in_seconds(retry.max_event_age_seconds)
                .build()
        }))
        .build()
        .map_err(AwsError::request)?;
    let output = call(
        Operation::PutTargets,
        client.put_targets().rule(rule).targets(built).send(),
    )
    .await?;
    match output.failed_entries().first() {
        Some(failed) => Err(AwsError {
            class: super::error::class_of_code(failed.error_code().unwrap_or("Unknown")),
            code: failed.error_code().unwrap_or("Unknown").to_owned(),
            message: failed.error_message().unwrap_or_default().to_owned(),
        }),
        None => Ok(()),
    }
}

/// Removes targets by id; targets already gone are fine.
pub async fn remove_targets(client: &Client, rule: &str, ids: &[String]) -> Result<(), AwsError> {
    if ids.is_empty() {
        return Ok(());
    }
    let request = client
        .remove_targets()
        .rule(rule)
        .set_ids(Some(ids.to_vec()))
        .send();
    match call(Operation::RemoveTargets, request).await {
        Ok(_) => Ok(()),
        Err(error) => not_found_is_none(error).map(|_: Option<()>| ()),
    }
}

/// Deletes a rule (its targets must be removed first); a missing rule counts as deleted.
pub async fn delete_rule(client: &Client, rule: &str) -> Result<(), AwsError> {
    match call(
        Operation::DeleteRule,
        client.delete_rule().name(rule).send(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(error) => not_found_is_none(error).map(|_: Option<()>| ()),
    }
}

/// The tags of a rule.
pub async fn tags(client: &Client, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let output = call(
        Operation::ListRuleTags,
        client.list_tags_for_resource().resource_arn(arn).send(),
    )
    .await?;
    Ok(output
        .tags()
        .iter()
        .map(|tag| (tag.key().to_owned(), tag.value().to_owned()))
        .collect())
}

fn is_not_found(error: &AwsError) -> bool {
    error.code == "ResourceNotFoundException"
}

fn not_found_is_none<T>(error: AwsError) -> Result<Option<T>, AwsError> {
    if is_not_found(&error) {
        Ok(None)
    } else {
        Err(error)
    }
}
