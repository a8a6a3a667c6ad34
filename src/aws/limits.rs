//! Client-side rate limits per AWS API, sized to AWS's published quotas, so that no number of
//! Flows and Runs can make this controller exceed them: 10,000 running Runs wait for tokens
//! instead of drawing `ThrottlingException`s (which would slow every other caller in the
//! account too).
//!
//! Each operation draws from a token bucket (GCRA, `governor`) whose burst and refill rate are
//! the published quota times a scale (`FLOWLINE_AWS_RATE_SCALE`, 0.8 by default: a margin for
//! other clients in the same account and region). Quotas are per account and region, so the
//! buckets are process-wide: [`install`] sets them up once, and every adapter function in
//! [`crate::aws`] goes through [`call`], which waits for a token, sends the request, and counts
//! the call by outcome in the metrics.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::error::{AwsError, ErrorClass, classify};
use crate::metrics::Metrics;

/// Default fraction of each published quota the controller uses.
pub const DEFAULT_SCALE: f64 = 0.8;

/// An AWS API operation Flowline calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    // Step Functions
    StartExecution,
    DescribeExecution,
    GetExecutionHistory,
    StopExecution,
    DescribeStateMachine,
    CreateStateMachine,
    UpdateStateMachine,
    DeleteStateMachine,
    ListStateMachineVersions,
    ListTagsForResource,
    ListExecutions,
    DescribeMapRun,
    // AWS Batch
    DescribeJobDefinitions,
    DescribeJobQueues,
    DescribeComputeEnvironments,
    DescribeJobs,
    RegisterJobDefinition,
    DeregisterJobDefinition,
    TerminateJob,
    // Secrets Manager
    DescribeSecret,
    GetSecretValue,
    // S3
    ListObjectsV2,
    GetObject,
    CopyObject,
    // EventBridge (Schedules)
    PutRule,
    PutTargets,
    DeleteRule,
    RemoveTargets,
    DescribeRule,
    ListTargetsByRule,
    ListRuleTags,
    // SQS (execution status change events)
    ReceiveMessage,
    DeleteMessageBatch,
    // SQS (Schedules' dead-letter queues)
    GetQueueUrl,
    GetQueueAttributes,
    CreateQueue,
    SetQueueAttributes,
    ListQueueTags,
    DeleteQueue,
}

/// A published quota: the bucket size (burst) and refill rate per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishedQuota {
    pub burst: f64,
    pub per_second: f64,
}

impl Operation {
    pub const ALL: &'static [Operation] = &[
        Operation::StartExecution,
        Operation::DescribeExecution,
        Operation::GetExecutionHistory,
        Operation::StopExecution,
        Operation::DescribeStateMachine,
        Operation::CreateStateMachine,
        Operation::UpdateStateMachine,
        Operation::DeleteStateMachine,
        Operation::ListStateMachineVersions,
        Operation::ListTagsForResource,
        Operation::ListExecutions,
        Operation::DescribeMapRun,
        Operation::DescribeJobDefinitions,
        Operation::DescribeJobQueues,
        Operation::DescribeComputeEnvironments,
        Operation::DescribeJobs,
        Operation::RegisterJobDefinition,
        Operation::DeregisterJobDefinition,
        Operation::TerminateJob,
        Operation::DescribeSecret,
        Operation::GetSecretValue,
        Operation::ListObjectsV2,
        Operation::GetObject,
        Operation::CopyObject,
        Operation::PutRule,
        Operation::PutTargets,
        Operation::DeleteRule,
        Operation::RemoveTargets,
        Operation::DescribeRule,
        Operation::ListTargetsByRule,
        Operation::ListRuleTags,
        Operation::ReceiveMessage,
        Operation::DeleteMessageBatch,
        Operation::GetQueueUrl,
        Operation::GetQueueAttributes,
        Operation::CreateQueue,
        Operation::SetQueueAttributes,
        Operation::ListQueueTags,
        Operation::DeleteQueue,
    ];

    /// The service's signing name, as metrics label it.
    pub fn service(self) -> &'static str {
        use Operation::*;
        match self {
            StartExecution
            | DescribeExecution
            | GetExecutionHistory
            | StopExecution
            | DescribeStateMachine
            | CreateStateMachine
            | UpdateStateMachine
            | DeleteStateMachine
            | ListStateMachineVersions
            | ListTagsForResource
            | ListExecutions
            | DescribeMapRun => "states",
            DescribeJobDefinitions
            | DescribeJobQueues
            | DescribeComputeEnvironments
            | DescribeJobs
            | RegisterJobDefinition
            | DeregisterJobDefinition
            | TerminateJob => "batch",
            DescribeSecret | GetSecretValue => "secretsmanager",
            ListObjectsV2 | GetObject | CopyObject => "s3",
            PutRule | PutTargets | DeleteRule | RemoveTargets | DescribeRule
            | ListTargetsByRule | ListRuleTags => "events",
            ReceiveMessage | DeleteMessageBatch | GetQueueUrl | GetQueueAttributes
            | CreateQueue | SetQueueAttributes | ListQueueTags | DeleteQueue => "sqs",
        }
    }

    /// The operation's API name.
    pub fn name(self) -> &'static str {
        use Operation::*;
        match self {
            StartExecution => "StartExecution",
            DescribeExecution => "DescribeExecution",
            GetExecutionHistory => "GetExecutionHistory",
            StopExecution => "StopExecution",
            DescribeStateMachine => "DescribeStateMachine",
            CreateStateMachine => "CreateStateMachine",
            UpdateStateMachine => "UpdateStateMachine",
            DeleteStateMachine => "DeleteStateMachine",
            ListStateMachineVersions => "ListStateMachineVersions",
            ListTagsForResource | ListRuleTags => "ListTagsForResource",
            ListExecutions => "ListExecutions",
            ReceiveMessage => "ReceiveMessage",
            DeleteMessageBatch => "DeleteMessageBatch",
            GetQueueUrl => "GetQueueUrl",
            GetQueueAttributes => "GetQueueAttributes",
            CreateQueue => "CreateQueue",
            SetQueueAttributes => "SetQueueAttributes",
            ListQueueTags => "ListQueueTags",
            DeleteQueue => "DeleteQueue",
            DescribeMapRun => "DescribeMapRun",
            DescribeJobDefinitions => "DescribeJobDefinitions",
            DescribeJobQueues => "DescribeJobQueues",
            DescribeComputeEnvironments => "DescribeComputeEnvironments",
            DescribeJobs => "DescribeJobs",
            RegisterJobDefinition => "RegisterJobDefinition",
            DeregisterJobDefinition => "DeregisterJobDefinition",
            TerminateJob => "TerminateJob",
            DescribeSecret => "DescribeSecret",
            GetSecretValue => "GetSecretValue",
            ListObjectsV2 => "ListObjectsV2",
            GetObject => "GetObject",
            CopyObject => "CopyObject",
            PutRule => "PutRule",
            PutTargets => "PutTargets",
            DeleteRule => "DeleteRule",
            RemoveTargets => "RemoveTargets",
            DescribeRule => "DescribeRule",
            ListTargetsByRule => "ListTargetsByRule",
        }
    }

    /// The token bucket the operation draws from. Operations with a quota of their own have a
    /// bucket of their own; Secrets Manager's DescribeSecret and GetSecretValue share one
    /// quota, so they share a bucket.
    pub fn bucket(self) -> &'static str {
        match self {
            Operation::DescribeSecret | Operation::GetSecretValue => "secretsmanager:read",
            Operation::ListRuleTags => "events:ListTagsForResource",
            other => other.name(),
        }
    }

    /// The published quota (see README, "AWS rate limits"). Step Functions: API action
    /// throttling of Standard workflows (the lower of the published regional figures). Batch
    /// publishes no per-action rates: reads assume 50/s, writes 10/s. Secrets Manager: 10,000/s
    /// for DescribeSecret and GetSecretValue combined. S3: 5,500 GET/s and 3,500 PUT/COPY/s per prefix. EventBridge:
    /// 50/s for rule and target management.
    pub fn quota(self) -> PublishedQuota {
        use Operation::*;
        let (burst, per_second) = match self {
            StartExecution => (800.0, 150.0),
            DescribeExecution => (250.0, 15.0),
            GetExecutionHistory => (250.0, 5.0),
            StopExecution => (500.0, 25.0),
            DescribeStateMachine => (200.0, 20.0),
            CreateStateMachine | UpdateStateMachine | DeleteStateMachine => (100.0, 1.0),
            ListStateMachineVersions | ListTagsForResource => (100.0, 1.0),
            ListExecutions => (100.0, 2.0),
            // Not published; assumed like the other map run reads.
            DescribeMapRun => (100.0, 5.0),
            DescribeJobDefinitions
            | DescribeJobQueues
            | DescribeComputeEnvironments
            | DescribeJobs => (100.0, 50.0),
            RegisterJobDefinition | DeregisterJobDefinition | TerminateJob => (50.0, 10.0),
            DescribeSecret | GetSecretValue => (10_000.0, 10_000.0),
            ListObjectsV2 | GetObject => (5_500.0, 5_500.0),
            CopyObject => (3_500.0, 3_500.0),
            PutRule | PutTargets | DeleteRule | RemoveTargets | DescribeRule
            | ListTargetsByRule | ListRuleTags => (50.0, 50.0),
            // SQS publishes no per-action rate for standard queues ("nearly unlimited").
            ReceiveMessage | DeleteMessageBatch => (3_000.0, 3_000.0),
            // Queue management publishes no rate either; assumed like EventBridge's.
            GetQueueUrl | GetQueueAttributes | CreateQueue | SetQueueAttributes | ListQueueTags
            | DeleteQueue => (50.0, 50.0),
        };
        PublishedQuota { burst, per_second }
    }
}

/// A quota scaled for this controller: at least one token of burst; `None` when limits are
/// off (a scale of zero or less).
pub fn scaled(quota: PublishedQuota, scale: f64) -> Option<Quota> {
    if scale.is_nan() || scale <= 0.0 || !scale.is_finite() {
        return None;
    }
    let burst = (quota.burst * scale)
        .floor()
        .max(1.0)
        .min(f64::from(u32::MAX)) as u32;
    let per_second = (quota.per_second * scale).max(f64::MIN_POSITIVE);
    let period = Duration::from_secs_f64((1.0 / per_second).min(86_400.0));
    Some(Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?))
}

/// The process-wide buckets and the metrics that count calls.
struct Limits {
    buckets: HashMap<&'static str, DefaultDirectRateLimiter>,
    metrics: Option<Arc<Metrics>>,
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets up the buckets at `scale` and the metrics calls are counted in. The first call wins;
/// without one, calls are neither limited nor counted (the offline renderer, tests).
pub fn install(scale: f64, metrics: Option<Arc<Metrics>>) {
    let mut buckets = HashMap::new();
    for operation in Operation::ALL {
        if let Some(quota) = scaled(operation.quota(), scale) {
            buckets
                .entry(operation.bucket())
                .or_insert_with(|| RateLimiter::direct(quota));
        }
    }
    let _ = LIMITS.set(Limits { buckets, metrics });
}

/// Sends one request under the operation's rate limit and counts it by outcome. `request` is
/// a not-yet-polled `send()` future, so nothing reaches AWS before a token is granted.
pub async fn call<T, E, R, F>(operation: Operation, request: F) -> Result<T, AwsError>
where
    F: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let limits = LIMITS.get();
    if let Some(bucket) = limits.and_then(|l| l.buckets.get(operation.bucket())) {
        let started = Instant::now();
        bucket.until_ready().await;
        let waited = started.elapsed();
        if waited >= Duration::from_millis(1)
            && let Some(metrics) = limits.and_then(|l| l.metrics.as_ref())
        {
            metrics.aws_waited(operation.service(), operation.name(), waited.as_secs_f64());
        }
    }
    let sent = Instant::now();
    let result = request.await.map_err(classify);
    // Per call at debug level: where a reconcile's time goes, without a profiler.
    tracing::debug!(
        service = operation.service(),
        operation = operation.name(),
        ms = sent.elapsed().as_secs_f64() * 1e3,
        ok = result.is_ok(),
        "aws call"
    );
    if let Some(metrics) = limits.and_then(|l| l.metrics.as_ref()) {
        let outcome = match &result {
            Ok(_) => "success",
            Err(error) => outcome_of(error),
        };
        metrics.aws_call(operation.service(), operation.name(), outcome);
    }
    result
}

/// The metrics outcome of a failed call: throttling apart, else the error's class.
pub fn outcome_of(error: &AwsError) -> &'static str {
    if error.code.contains("Throttl") || error.code.contains("TooManyRequests") {
        return "throttled";
    }
    match error.class {
        ErrorClass::Terminal => "terminal",
        ErrorClass::Retryable => "retryable",
        ErrorClass::Conflict => "conflict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_scaled_with_a_floor_of_one_token() {
        let describe = scaled(Operation::DescribeExecution.quota(), 0.8).unwrap();
        assert_eq!(describe.burst_size().get(), 200);
        // 15/s * 0.8 = 12/s: one token every 83.3 ms.
        assert_eq!(describe.replenish_interval().as_millis(), 83);
        let create = scaled(Operation::CreateStateMachine.quota(), 0.8).unwrap();
        assert_eq!(create.burst_size().get(), 80);
        assert_eq!(create.replenish_interval(), Duration::from_millis(1250));
        let tiny = scaled(Operation::CreateStateMachine.quota(), 0.001).unwrap();
        assert_eq!(tiny.burst_size().get(), 1);
    }

    #[test]
    fn a_scale_of_zero_turns_limits_off() {
        assert!(scaled(Operation::StartExecution.quota(), 0.0).is_none());
        assert!(scaled(Operation::StartExecution.quota(), -1.0).is_none());
        assert!(scaled(Operation::StartExecution.quota(), f64::NAN).is_none());
    }

    #[test]
    fn every_operation_has_a_service_and_a_positive_quota() {
        for operation in Operation::ALL {
            let quota = operation.quota();
            assert!(
                quota.burst >= 1.0 && quota.per_second > 0.0,
                "{operation:?}"
            );
            assert!(!operation.service().is_empty());
        }
        assert_eq!(
            Operation::DescribeSecret.bucket(),
            Operation::GetSecretValue.bucket()
        );
    }

    #[test]
    fn sustained_rate_never_exceeds_the_scaled_quota() {
        // Drain a bucket synchronously: after the burst, only the refill passes.
        let quota = scaled(Operation::DescribeExecution.quota(), 0.8).unwrap();
        let limiter = RateLimiter::direct(quota);
        let passed = (0..1000).filter(|_| limiter.check().is_ok()).count();
        assert!((200..=201).contains(&passed), "{passed}");
    }

    #[test]
    fn throttling_is_its_own_outcome() {
        let error = AwsError {
            class: ErrorClass::Retryable,
            code: "ThrottlingException".into(),
            message: String::new(),
        };
        assert_eq!(outcome_of(&error), "throttled");
        let denied = AwsError {
            class: ErrorClass::Terminal,
            code: "AccessDeniedException".into(),
            message: String::new(),
        };
        assert_eq!(outcome_of(&denied), "terminal");
    }
}
