//! Sets up and owns the execution events path (`--execution-events managed`, the default): the
//! leader reads the rule and the queue at start and again every drift interval, writes only
//! what differs ([`crate::reconcilers::execution_events::plan`]), and reads the queue while
//! it is there. When AWS refuses (AccessDenied, a queue deleted less than 60 s ago) the
//! warning carries AWS's message, `flowline_execution_events_ready` reads 0, Runs are tracked
//! by polling, and the next check retries (backing off from 1 s to the drift interval, so a
//! refusal never turns into a storm).
//!
//! `flowline execution-events delete` ([`delete`]) removes both with the installation.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::aws::{self, error::AwsError};
use crate::reconcilers::execution_events::{
    self as pure, Change, Desired, Foreign, Observed, Removal,
};
use crate::settings::Settings;

use super::Context;

/// How Runs hear that their execution ended, besides polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The controller sets up and owns an EventBridge rule and an SQS queue named
    /// `<name prefix>execution-events`, and reads the queue.
    Managed,
    /// Polling only.
    Off,
}

/// Why the rule and queue are not as wanted.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Invalid(#[from] pure::Invalid),
    #[error("{0}")]
    Foreign(#[from] Foreign),
    #[error("AWS: {0}")]
    Aws(#[from] AwsError),
}

/// Starts what feeds Runs from events, if anything: the queue given by URL (nothing is
/// created), or the managed rule and queue; `None` when events are off. Aborting the handle
/// stops the consumer too.
pub fn spawn(ctx: Arc<Context>, mode: Mode, queue_url: Option<String>) -> Option<JoinHandle<()>> {
    if let Some(url) = queue_url.filter(|url| !url.is_empty()) {
        ctx.metrics.execution_events_ready.set(1);
        return Some(tokio::spawn(super::execution_events::consume_forever(
            ctx, url,
        )));
    }
    match mode {
        Mode::Off => {
            info!("execution events are off: Runs are tracked by polling");
            None
        }
        Mode::Managed => Some(tokio::spawn(manage_forever(ctx))),
    }
}

/// Aborts the consumer when the managing task ends or is aborted.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// Ensures the rule and queue every drift interval (sooner after a failure) and starts the
/// consumer once the queue exists.
async fn manage_forever(ctx: Arc<Context>) {
    let mut consumer = AbortOnDrop(None);
    let mut failures: u32 = 0;
    loop {
        let wait = match ensure(&ctx.events, &ctx.sqs, &ctx.settings).await {
            Ok(ensured) => {
                if failures > 0 || consumer.0.is_none() {
                    info!(queue_url = %ensured.url, writes = ensured.writes, "execution events are set up");
                }
                failures = 0;
                ctx.metrics.execution_events_ready.set(1);
                if consumer.0.is_none() {
                    consumer.0 = Some(tokio::spawn(super::execution_events::consume_forever(
                        ctx.clone(),
                        ensured.url,
                    )));
                }
                ctx.drift_interval
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                ctx.metrics.execution_events_ready.set(0);
                let retry = super::backoff(failures, 1.0).min(ctx.drift_interval);
                warn!(
                    %error,
                    retry_in_seconds = retry.as_secs(),
                    "execution events are not set up; Runs are tracked by polling until they are"
                );
                retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The queue's URL and how many writes it took to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub url: String,
    pub writes: usize,
}

/// Reads the rule and queue, and writes what differs from what the settings want.
pub async fn ensure(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    settings: &Settings,
) -> Result<Ensured, SetupError> {
    let desired = pure::desired(settings)?;
    let observed = observe(events, sqs, &desired).await?;
    let changes = pure::plan(&desired, &observed)?;
    let mut url = observed.queue.map(|queue| queue.url);
    for change in &changes {
        if let Some(created) = apply(events, sqs, &desired, change).await? {
            url = Some(created);
        }
        info!(change = %describe(change, &desired), "execution events");
    }
    let url = match url {
        Some(url) => url,
        // CreateQueue answered without a URL: ask for it.
        None => aws::sqs::describe_queue(sqs, &desired.name)
            .await?
            .map(|queue| queue.url)
            .unwrap_or_default(),
    };
    Ok(Ensured {
        url,
        writes: changes.len(),
    })
}

/// Describe and List calls only; tags are read of what exists.
async fn observe(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    desired: &Desired,
) -> Result<Observed, AwsError> {
    let mut observed = Observed {
        queue: aws::sqs::describe_queue(sqs, &desired.name).await?,
        rule: aws::events::describe_rule(events, &desired.name).await?,
        ..Observed::default()
    };
    if let Some(queue) = &observed.queue {
        observed.queue_tags = aws::sqs::queue_tags(sqs, &queue.url).await?;
    }
    if let Some(rule) = &observed.rule {
        observed.rule_tags = aws::events::tags(events, &rule.arn).await?;
        observed.targets = aws::events::list_targets(events, &desired.name).await?;
    }
    Ok(observed)
}

/// Applies one change; returns the queue's URL when the change created it.
async fn apply(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    desired: &Desired,
    change: &Change,
) -> Result<Option<String>, AwsError> {
    match change {
        Change::CreateQueue => {
            let url = aws::sqs::create_queue(
                sqs,
                &desired.name,
                &desired.queue_attributes,
                &desired.tags,
            )
            .await?;
            return Ok(Some(url).filter(|url| !url.is_empty()));
        }
        Change::SetQueueAttributes { url, attributes } => {
            aws::sqs::set_queue_attributes(sqs, url, attributes).await?;
        }
        Change::PutRule => {
            aws::events::put_rule(events, &desired.rule, &desired.tags).await?;
        }
        Change::PutTarget => {
            aws::events::put_target(events, &desired.name, &desired.target).await?;
        }
        Change::RemoveTargets(ids) => {
            aws::events::remove_targets(events, &desired.name, ids).await?;
        }
    }
    Ok(None)
}

fn describe(change: &Change, desired: &Desired) -> String {
    match change {
        Change::CreateQueue => format!("created queue {}", desired.name),
        Change::SetQueueAttributes { attributes, .. } => format!(
            "set {} of queue {}",
            attributes.keys().cloned().collect::<Vec<_>>().join(", "),
            desired.name
        ),
        Change::PutRule => format!("put rule {}", desired.name),
        Change::PutTarget => format!("pointed rule {} at its queue", desired.name),
        Change::RemoveTargets(ids) => {
            format!(
                "removed targets {} of rule {}",
                ids.join(", "),
                desired.name
            )
        }
    }
}

/// Deletes the rule's targets, the rule and the queue, each only if tagged as the
/// installation's; what is gone already is fine. Returns one line per thing done or kept.
pub async fn delete(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    settings: &Settings,
) -> Result<Vec<String>, SetupError> {
    let desired = pure::desired(settings)?;
    let observed = observe(events, sqs, &desired).await?;
    let Removal {
        remove_targets,
        delete_rule,
        delete_queue,
        kept,
    } = pure::removal(&desired, &observed);
    let mut done = Vec::new();
    if !remove_targets.is_empty() {
        aws::events::remove_targets(events, &desired.name, &remove_targets).await?;
        done.push(format!(
            "removed targets {} of rule {}",
            remove_targets.join(", "),
            desired.name
        ));
    }
    if delete_rule {
        aws::events::delete_rule(events, &desired.name).await?;
        done.push(format!("deleted rule {}", desired.name));
    }
    if let Some(url) = delete_queue {
        aws::sqs::delete_queue(sqs, &url).await?;
        done.push(format!("deleted queue {}", desired.name));
    }
    done.extend(kept.iter().map(|foreign| format!("kept: {foreign}")));
    if done.is_empty() {
        done.push(format!(
            "nothing to delete: no rule or queue named {}",
            desired.name
        ));
    }
    Ok(done)
}

/// `flowline execution-events delete`: AWS configuration as the controller loads it (region,
/// endpoint, credential chain; the account from STS when not set), then [`delete`].
pub async fn delete_command(mut settings: Settings) -> anyhow::Result<Vec<String>> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(settings.region.clone()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await;
    if settings.account.is_none() {
        let account = aws::caller_account(&aws_sdk_sts::Client::new(&config))
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "FLOWLINE_AWS_ACCOUNT is not set and STS GetCallerIdentity failed: {error}"
                )
            })?;
        settings.account = Some(account);
    }
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    Ok(delete(&events, &sqs, &settings).await?)
}
