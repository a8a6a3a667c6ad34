//! Wiring only: the watches, the shared context, error handling and shutdown.

mod cleanup;
pub mod discovery;
pub mod eviction;
pub mod execution_events;
pub mod execution_events_setup;
pub mod flow;
pub mod http;
mod informers;
pub mod leader;
pub mod operations;
pub mod queue_platforms;
mod report;
mod resume;
pub mod run;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, finalizer, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{error, info, warn};

use crate::api::{Flow, Run, Schedule};
use crate::aws::error::{AwsError, ErrorClass};
use crate::metrics::Metrics;
use crate::settings::Settings;

/// How the controller runs (beyond the Flow defaults in [`Settings`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FLOWLINE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// How often a Ready Flow is compared with AWS again, repairing drift (seconds).
    #[arg(long, env = "FLOWLINE_DRIFT_INTERVAL_SECONDS", default_value_t = 300)]
    pub drift_interval_seconds: u64,

    /// How often a Flow stalled by something outside it (a missing secret or job queue) is
    /// checked again (seconds).
    #[arg(long, env = "FLOWLINE_RECHECK_INTERVAL_SECONDS", default_value_t = 60)]
    pub recheck_interval_seconds: u64,

    /// How long a step's Batch job may wait in RUNNABLE before the Run reports it as stuck
    /// (seconds).
    #[arg(long, env = "FLOWLINE_RUNNABLE_TIMEOUT_SECONDS", default_value_t = 600)]
    pub runnable_timeout_seconds: u64,

    /// Succeeded Runs kept per Flow; older ones are deleted.
    #[arg(long, env = "FLOWLINE_KEEP_SUCCEEDED_RUNS", default_value_t = 10)]
    pub keep_succeeded_runs: usize,

    /// Failed, aborted or timed-out Runs kept per Flow; older ones are deleted.
    #[arg(long, env = "FLOWLINE_KEEP_FAILED_RUNS", default_value_t = 20)]
    pub keep_failed_runs: usize,

    /// How often each Flow's new executions are listed, to give executions started
    /// outside Flowline (Schedules, the console) a Run (seconds). While execution events
    /// flow, at most once per drift interval: an execution's event names its Flow.
    #[arg(
        long,
        env = "FLOWLINE_DISCOVERY_INTERVAL_SECONDS",
        default_value_t = 10
    )]
    pub discovery_interval_seconds: u64,

    /// Polls of running executions per second, shared by all running Runs: each Run is
    /// polled every 3 s until there are so many that this budget would be exceeded, then
    /// less often. Sized under Step Functions' DescribeExecution quota (15/s in the large
    /// regions) and the client-side limit (80 % of it), leaving room for discovery and
    /// retries.
    #[arg(
        long,
        env = "FLOWLINE_TRACKING_CALLS_PER_SECOND",
        default_value_t = 10.0
    )]
    pub tracking_calls_per_second: f64,

    /// Reads of running executions' histories per second, shared by all running Runs: when
    /// polls come faster, each Run reads its history on every n-th poll only (and always when
    /// it finishes). Sized under GetExecutionHistory's quota (5/s in the smaller regions) and
    /// the client-side limit (4/s), leaving room for foreach tasks' histories.
    #[arg(
        long,
        env = "FLOWLINE_TRACKING_HISTORY_CALLS_PER_SECOND",
        default_value_t = 3.0
    )]
    pub tracking_history_calls_per_second: f64,

    /// Step Functions' "Execution Status Change" events wake the Run of each execution at
    /// once, so status lag no longer grows with the number of running Runs; polling stays as
    /// the fallback. `managed`: the leader sets up and owns an EventBridge rule and an SQS
    /// queue named `<name prefix>execution-events` (checked every drift interval; removed by
    /// `flowline execution-events delete`). `off`: polling only.
    #[arg(
        long,
        env = "FLOWLINE_EXECUTION_EVENTS",
        value_enum,
        default_value_t = execution_events_setup::Mode::Managed
    )]
    pub execution_events: execution_events_setup::Mode,

    /// URL of your own SQS queue of execution status change events (an EventBridge rule on the
    /// default bus targets it; see README): it is read, and nothing is created, whatever
    /// `--execution-events` says.
    #[arg(long, env = "FLOWLINE_EXECUTION_EVENTS_QUEUE_URL")]
    pub execution_events_queue_url: Option<String>,

    /// How often the in-memory state of deleted objects (failure counts, discovery cursors,
    /// histories, Secrets Manager clients) is dropped (seconds).
    #[arg(
        long,
        env = "FLOWLINE_CACHE_EVICTION_INTERVAL_SECONDS",
        default_value_t = 60
    )]
    pub cache_eviction_interval_seconds: u64,

    /// Flows reconciled at the same time.
    #[arg(long, env = "FLOWLINE_WORKERS", default_value_t = 8)]
    pub workers: u16,

    #[command(flatten)]
    pub operations: operations::OperationsOptions,
}

/// An optional role to assume and an optional region.
type RoleAndRegion = (Option<String>, Option<String>);

/// The events of an execution read so far, and the polls since the last read.
type HistoryCache = (Vec<crate::reconcilers::run::HistoryEvent>, u32);

/// What every reconcile shares.
pub struct Context {
    pub kube: Client,
    pub sfn: aws_sdk_sfn::Client,
    pub batch: aws_sdk_batch::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub s3: aws_sdk_s3::Client,
    /// The base AWS configuration, for clients assuming other roles or regions.
    pub aws: aws_config::SdkConfig,
    /// Secrets Manager clients by (role, region), so assumed credentials are reused.
    secrets_clients: Mutex<HashMap<RoleAndRegion, aws_sdk_secretsmanager::Client>>,
    pub settings: Settings,
    pub recorder: Recorder,
    pub drift_interval: Duration,
    /// The job queues' platforms, read once per period for all Flows that name them.
    pub queue_platforms: queue_platforms::QueuePlatforms,
    /// Flows whose own status write need not be reconciled again.
    pub settled_flows: flow::SettledFlows,
    pub recheck_interval: Duration,
    pub runnable_timeout: Duration,
    /// Finished Runs kept per Flow: (succeeded, failed).
    pub keep_runs: (usize, usize),
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    pub metrics: Arc<Metrics>,
    /// Namespaces' metadata, for their tenancy annotations.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Controller-wide allow lists (`FLOWLINE_ALLOWED_ROLES`, `FLOWLINE_ALLOWED_JOB_QUEUES`).
    pub allowed_roles: Option<String>,
    pub allowed_job_queues: Option<String>,
    /// `FLOWLINE_ALLOWED_SECRETS`, `FLOWLINE_ALLOWED_TRIGGER_BUCKETS`.
    pub allowed_secrets: Option<String>,
    pub allowed_trigger_buckets: Option<String>,
    /// Polls of running executions per second, shared by all running Runs.
    pub tracking_rate: f64,
    /// The Runs whose execution is being polled (`namespace/name`).
    running_runs: Mutex<std::collections::HashSet<String>>,
    /// The history read so far of each running execution, so a poll reads new events only,
    /// with the number of polls since it was last read.
    histories: Mutex<HashMap<String, HistoryCache>>,
    /// History reads per second, shared by all running Runs.
    pub history_rate: f64,
    /// When each Schedule's rule was last compared with AWS, for which desired state
    /// (Schedule UID → fingerprint, time).
    schedule_checks: Mutex<HashMap<String, (String, std::time::Instant)>>,
    /// The Run tracking each running execution (ARN → namespace, name), so an execution
    /// status change event wakes the right Run.
    execution_runs: Mutex<HashMap<String, (String, String)>>,
    /// How far execution discovery listed each Flow (Flow UID → start time in ms).
    discovery_cursors: Mutex<HashMap<String, i64>>,
    /// State machines whose executions discovery lists now: an execution status change
    /// event named one of their executions that no Run tracks. Drained by each sweep.
    discovery_nudges: Mutex<std::collections::HashSet<String>>,
    discovery_wake: tokio::sync::Notify,
}

impl Context {
    /// Reconciles of the object that failed in a row so far.
    pub fn consecutive_failures<K: Resource<DynamicType = ()>>(&self, object: &K) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&failure_key(object))
            .copied()
            .unwrap_or(0)
    }

    /// The history of a running execution: what was read before plus the new events. The
    /// history is read on one poll in `every` (always when `force`); the other polls reuse
    /// what was read.
    pub async fn history(
        &self,
        execution_arn: &str,
        every: u32,
        force: bool,
    ) -> Result<Vec<crate::reconcilers::run::HistoryEvent>, ReconcileError> {
        let (mut events, skipped) = self
            .histories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(execution_arn)
            .unwrap_or_default();
        let cached = !events.is_empty();
        if cached && !force && skipped.saturating_add(1) < every {
            let kept = events.clone();
            self.histories
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(execution_arn.to_owned(), (events, skipped + 1));
            return Ok(kept);
        }
        let after = events.last().map_or(0, |e| e.id);
        let new = crate::aws::sfn::history_after(&self.sfn, execution_arn, after)
            .await
            .map_err(ReconcileError::Aws)?;
        events.extend(new);
        self.histories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(execution_arn.to_owned(), (events.clone(), 0));
        Ok(events)
    }

    /// Whether a Schedule's rule was compared with AWS for this desired state within the
    /// drift interval.
    pub fn recently_checked(&self, uid: &str, fingerprint: &str) -> bool {
        self.schedule_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .is_some_and(|(known, at)| known == fingerprint && at.elapsed() < self.drift_interval)
    }

    /// Records that a Schedule's rule matches `fingerprint` now.
    pub fn mark_checked(&self, uid: &str, fingerprint: &str) {
        self.schedule_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                uid.to_owned(),
                (fingerprint.to_owned(), std::time::Instant::now()),
            );
    }

    /// Forgets a deleted Schedule.
    pub fn forget_checked(&self, uid: &str) {
        self.schedule_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    /// How far discovery listed a Flow's executions in this process.
    pub fn discovery_cursor(&self, flow_uid: &str) -> Option<i64> {
        self.discovery_cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(flow_uid)
            .copied()
    }

    pub fn set_discovery_cursor(&self, flow_uid: &str, start_ms: i64) {
        self.discovery_cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(flow_uid.to_owned(), start_ms);
    }

    /// Asks discovery to list a state machine's executions now.
    pub fn nudge_discovery(&self, machine_arn: String) {
        self.discovery_nudges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(machine_arn);
        self.discovery_wake.notify_one();
    }

    /// Waits until discovery is asked to list some state machine's executions.
    pub async fn discovery_nudged(&self) {
        self.discovery_wake.notified().await;
    }

    /// The state machines discovery was asked to list since the last call.
    pub fn take_discovery_nudges(&self) -> std::collections::HashSet<String> {
        std::mem::take(
            &mut *self
                .discovery_nudges
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// How many Runs are being polled.
    pub fn running_count(&self) -> usize {
        self.running_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Drops the history kept for an execution that has finished.
    pub fn forget_history(&self, execution_arn: &str) {
        self.histories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(execution_arn);
    }

    /// Records which Run tracks a running execution (or forgets it once it has finished).
    pub fn index_execution(&self, execution_arn: &str, run: Option<(String, String)>) {
        let mut index = self
            .execution_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match run {
            Some(run) => index.insert(execution_arn.to_owned(), run),
            None => index.remove(execution_arn),
        };
    }

    /// The Run tracking an execution, if this process tracks it.
    pub fn run_of_execution(&self, execution_arn: &str) -> Option<(String, String)> {
        self.execution_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(execution_arn)
            .cloned()
    }

    /// Drops the state cached for objects that are gone (see [`eviction`]); returns how many
    /// entries went.
    pub fn evict_gone(&self, live: &eviction::Live) -> usize {
        fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
            mutex.lock().unwrap_or_else(|p| p.into_inner())
        }
        let mut evicted = retain_live(&mut lock(&self.failures), &live.objects);
        evicted += retain_live(&mut lock(&self.discovery_cursors), &live.flow_uids);
        evicted += retain_live(&mut lock(&self.schedule_checks), &live.schedule_uids);
        evicted += retain_live(&mut lock(&self.histories), &live.executions);
        evicted += retain_live(&mut lock(&self.execution_runs), &live.executions);
        {
            let mut running = lock(&self.running_runs);
            let before = running.len();
            running.retain(|run| live.runs.contains(run));
            evicted += before - running.len();
        }
        let mut clients = lock(&self.secrets_clients);
        let before = clients.len();
        clients.retain(|identity, _| live.secret_identities.contains(identity));
        evicted + before - clients.len()
    }

    /// Entries in the per-object caches.
    pub fn cached_entries(&self) -> usize {
        fn len<K, V>(map: &Mutex<HashMap<K, V>>) -> usize {
            map.lock().unwrap_or_else(|p| p.into_inner()).len()
        }
        len(&self.failures)
            + len(&self.discovery_cursors)
            + len(&self.schedule_checks)
            + len(&self.histories)
            + len(&self.execution_runs)
            + len(&self.secrets_clients)
            + self
                .running_runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len()
    }

    /// Records whether a Run is running and returns how many are.
    pub fn track_running(&self, key: &str, running: bool) -> usize {
        let mut runs = self.running_runs.lock().unwrap_or_else(|p| p.into_inner());
        if running {
            runs.insert(key.to_owned());
        } else {
            runs.remove(key);
        }
        runs.len()
    }

    /// The Secrets Manager client for a secret read through `role` in `region` (the
    /// controller's own identity and region when both are unset).
    pub async fn secrets_client(
        &self,
        role: Option<&str>,
        region: Option<&str>,
    ) -> aws_sdk_secretsmanager::Client {
        if role.is_none() && region.is_none() {
            return self.secrets.clone();
        }
        let key = (role.map(str::to_owned), region.map(str::to_owned));
        if let Some(client) = self
            .secrets_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return client.clone();
        }
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&self.aws);
        if let Some(region) = region {
            config = config.region(aws_config::Region::new(region.to_owned()));
        }
        if let Some(role) = role {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("flowline-secrets")
                .configure(&self.aws)
                .build()
                .await;
            config = config.credentials_provider(provider);
        }
        let client = aws_sdk_secretsmanager::Client::from_conf(config.build());
        self.secrets_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, client.clone());
        client
    }
}

/// Keeps the entries of `map` whose key is live; returns how many went.
fn retain_live<V>(map: &mut HashMap<String, V>, live: &std::collections::HashSet<String>) -> usize {
    let before = map.len();
    map.retain(|key, _| live.contains(key));
    before - map.len()
}

/// Why a reconcile failed; terminal problems never get here (they become Stalled).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("AWS: {0}")]
    Aws(AwsError),
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<ReconcileError>>),
}

impl ReconcileError {
    /// The error's code, for metrics: the AWS error code or the API server's HTTP status.
    fn code(&self) -> String {
        match self {
            ReconcileError::Aws(error) => error.code.clone(),
            ReconcileError::Kube(kube::Error::Api(status)) => status.code.to_string(),
            ReconcileError::Kube(_) => "Transport".into(),
            ReconcileError::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error.code()
                }
                finalizer::Error::AddFinalizer(kube::Error::Api(status))
                | finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) => {
                    status.code.to_string()
                }
                _ => "Finalizer".into(),
            },
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            ReconcileError::Aws(error) => error.class,
            ReconcileError::Kube(kube::Error::Api(status)) if status.code == 409 => {
                ErrorClass::Conflict
            }
            ReconcileError::Kube(_) => ErrorClass::Retryable,
            ReconcileError::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error.class()
                }
                finalizer::Error::AddFinalizer(kube::Error::Api(status))
                | finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
                    if status.code == 409 =>
                {
                    ErrorClass::Conflict
                }
                _ => ErrorClass::Retryable,
            },
        }
    }
}

/// Conflicts are retried at once a few times; everything else, and conflicts that persist,
/// back off exponentially (1 s doubling to 5 min) with jitter, so many failing objects do not
/// retry in lockstep.
fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let class = match error.class() {
        ErrorClass::Terminal => "terminal",
        ErrorClass::Retryable => "retryable",
        ErrorClass::Conflict => "conflict",
    };
    ctx.metrics
        .reconcile_failed(&K::kind(&()), class, &error.code());
    retry_after(failure_key(object.as_ref()), error, &ctx)
}

fn retry_after(key: String, error: &ReconcileError, ctx: &Context) -> Action {
    let class = error.class();
    warn!(object = %key, ?class, %error, "reconcile failed");
    let attempt = {
        let mut failures = ctx
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    Action::requeue(retry_delay(class, attempt, jitter_fraction()))
}

/// Conflicts retried at once before they back off like any other failure.
const IMMEDIATE_CONFLICT_RETRIES: u32 = 3;

/// How long to wait before the `attempt`-th consecutive retry: a conflict (someone wrote the
/// object in between) is usually gone on the next read, so the first few are retried at once;
/// a conflict that persists (another writer fighting over the object) backs off like other
/// failures instead of hot-looping.
pub fn retry_delay(class: ErrorClass, attempt: u32, jitter: f64) -> Duration {
    match class {
        ErrorClass::Conflict if attempt <= IMMEDIATE_CONFLICT_RETRIES => Duration::from_millis(500),
        ErrorClass::Conflict => backoff(attempt - IMMEDIATE_CONFLICT_RETRIES, jitter),
        _ => backoff(attempt, jitter),
    }
}

/// `min(2^(attempt-1) s, 300 s)`, scaled by a jitter fraction in [0.5, 1.0].
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = 2f64
        .powi(attempt.saturating_sub(1).min(16) as i32)
        .min(300.0);
    Duration::from_secs_f64(base * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
}

/// A jitter fraction in [0, 1) from the clock's nanoseconds: good enough to spread retries.
fn jitter_fraction() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Runs the controller until SIGTERM or Ctrl-C: serves the health and metrics endpoint,
/// waits for the leader Lease (when leader election is on), reconciles while leading, and on
/// a signal lets the reconciles in flight finish and releases the Lease. Losing the Lease
/// ends the process with an error (the pod restarts as a follower).
pub async fn run(settings: Settings, options: Options) -> anyhow::Result<()> {
    let ops = &options.operations;
    let metrics = Arc::new(Metrics::new());
    crate::aws::limits::install(ops.aws_rate_scale, Some(metrics.clone()));
    let health = Arc::new(http::Health::default());
    if let Some(addr) = ops.http_addr()? {
        http::serve(addr, health.clone(), metrics.clone()).await?;
    }
    let shutdown = operations::shutdown_signal()?;
    let kube = Client::try_default().await?;

    let mut elector = if ops.leader_election {
        let timing = leader::Timing::new(
            ops.lease_duration_seconds,
            ops.lease_renew_seconds,
            ops.lease_retry_seconds,
        )?;
        let namespace = ops.lease_namespace();
        let identity = leader::identity();
        info!(lease = %ops.lease_name, %namespace, %identity, "waiting for the leader lease");
        Some(leader::Elector::new(
            kube.clone(),
            &namespace,
            &ops.lease_name,
            &identity,
            timing,
        ))
    } else {
        None
    };
    if let Some(elector) = elector.as_mut() {
        health.following();
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.clone() => {
                info!("stopped while following");
                return Ok(());
            }
        }
    }
    health.leading();
    metrics.leader.set(1);

    // The SDK honours AWS_ENDPOINT_URL (an emulator) and the usual credential chain (IRSA,
    // EKS Pod Identity, instance roles).
    // Every call has a deadline: a hung call would otherwise hold a worker forever.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build();
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(settings.region.clone()))
        .timeout_config(timeouts)
        .load()
        .await;
    // ARNs name the account: the configured one, else the one the credentials belong to
    // (never a placeholder, which would name resources that do not exist).
    let mut settings = settings;
    if settings.account.is_none() {
        let account = crate::aws::caller_account(&aws_sdk_sts::Client::new(&aws))
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "FLOWLINE_AWS_ACCOUNT is not set and STS GetCallerIdentity failed: {error}"
                )
            })?;
        info!(%account, "AWS account from STS");
        settings.account = Some(account);
    }
    let reporter = Reporter {
        controller: "flowline".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    // Namespaces' metadata only (their annotations), limited to the watched namespace.
    let (namespaces, writer) = reflector::store();
    let namespace_config = match &options.namespace {
        Some(namespace) => watcher::Config::default().fields(&format!("metadata.name={namespace}")),
        None => watcher::Config::default(),
    };
    let namespace_watch = reflector::reflector(
        writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(kube.clone()),
            namespace_config,
        ),
    )
    .default_backoff()
    .for_each(|event| async move {
        if let Err(error) = event {
            warn!(%error, "watching namespaces failed; retrying");
        }
    });
    tokio::spawn(namespace_watch);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(kube.clone(), reporter),
        sfn: aws_sdk_sfn::Client::new(&aws),
        batch: aws_sdk_batch::Client::new(&aws),
        events: aws_sdk_eventbridge::Client::new(&aws),
        sqs: aws_sdk_sqs::Client::new(&aws),
        secrets: aws_sdk_secretsmanager::Client::new(&aws),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(settings.s3_force_path_style)
                .build(),
        ),
        secrets_clients: Mutex::new(HashMap::new()),
        aws,
        settings,
        drift_interval: Duration::from_secs(options.drift_interval_seconds.max(1)),
        // Within a drift interval, and at most a minute so a changed queue is seen soon.
        queue_platforms: queue_platforms::QueuePlatforms::new(Duration::from_secs(
            options.drift_interval_seconds.clamp(1, 60),
        )),
        settled_flows: Default::default(),
        recheck_interval: Duration::from_secs(options.recheck_interval_seconds.max(1)),
        runnable_timeout: Duration::from_secs(options.runnable_timeout_seconds),
        keep_runs: (options.keep_succeeded_runs, options.keep_failed_runs),
        failures: Mutex::new(HashMap::new()),
        metrics: metrics.clone(),
        namespaces: namespaces.clone(),
        allowed_roles: ops.allowed_roles.clone(),
        allowed_job_queues: ops.allowed_job_queues.clone(),
        allowed_secrets: ops.allowed_secrets.clone(),
        allowed_trigger_buckets: ops.allowed_trigger_buckets.clone(),
        tracking_rate: options.tracking_calls_per_second,
        running_runs: Mutex::new(std::collections::HashSet::new()),
        histories: Mutex::new(HashMap::new()),
        history_rate: options.tracking_history_calls_per_second,
        schedule_checks: Mutex::new(HashMap::new()),
        discovery_cursors: Mutex::new(HashMap::new()),
        discovery_nudges: Mutex::new(std::collections::HashSet::new()),
        discovery_wake: tokio::sync::Notify::new(),
        execution_runs: Mutex::new(HashMap::new()),
        kube: kube.clone(),
    });
    let (flows, runs, schedules): (Api<Flow>, Api<Run>, Api<Schedule>) = match &options.namespace {
        Some(namespace) => (
            Api::namespaced(kube.clone(), namespace),
            Api::namespaced(kube.clone(), namespace),
            Api::namespaced(kube.clone(), namespace),
        ),
        None => (
            Api::all(kube.clone()),
            Api::all(kube.clone()),
            Api::all(kube.clone()),
        ),
    };
    info!(namespace = ?options.namespace, workers = options.workers, "flowline controller starting");
    // One trimmed Run cache, read by the Run controller and (for finished Runs) the Flow
    // controller; see informers.rs.
    let (run_cache, mut run_subscribers, run_watch) =
        informers::shared(runs.clone(), watcher::Config::default(), 2);
    let (Some(runs_for_flows), Some(runs_for_runs)) =
        (run_subscribers.pop(), run_subscribers.pop())
    else {
        anyhow::bail!("a shared Run cache takes subscribers");
    };
    let (flow_cache, flow_changes) = informers::cached(flows.clone(), watcher::Config::default());
    let flow_controller = Controller::for_stream(flow_changes, flow_cache);
    let known_flows = flow_controller.store();
    let known_flows_for_discovery = known_flows.clone();
    let flow_controller = flow_controller
        // A Run that ends wakes its Flow when the Flow keeps superseded job definition
        // revisions for running executions: they may be deregistered now.
        .watches_shared_stream(runs_for_flows, move |run: Arc<Run>| {
            let finished = run
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(crate::api::RunPhase::is_finished);
            let flow = ObjectRef::<Flow>::new(&run.spec.flow_ref.name)
                .within(&run.namespace().unwrap_or_default());
            let retiring = known_flows.get(&flow).is_some_and(|flow| {
                flow.status
                    .as_ref()
                    .is_some_and(|s| !s.retired_job_definitions.is_empty())
            });
            (finished && retiring).then_some(flow)
        })
        .with_config(ControllerConfig::default().concurrency(options.workers))
        .graceful_shutdown_on(shutdown.clone());
    let run_controller = Controller::for_shared_stream(runs_for_runs, run_cache);
    let known_runs = run_controller.store();
    let run_controller = run_controller
        // A Flow that changes wakes its Runs that have not started: they wait for it to be
        // Ready, or stalled on what it declares (parameters), and would otherwise wait forever.
        .watches(
            flows.clone(),
            watcher::Config::default(),
            move |flow: Flow| {
                let (namespace, name) = (flow.namespace(), flow.name_any());
                known_runs
                    .state()
                    .into_iter()
                    .filter(|run| {
                        crate::reconcilers::run::waits_on_flow(run, namespace.as_deref(), &name)
                    })
                    .map(|run| ObjectRef::from_obj(run.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(ControllerConfig::default().concurrency(options.workers))
        .graceful_shutdown_on(shutdown.clone());
    let (schedule_cache, schedule_changes) =
        informers::cached(schedules, watcher::Config::default());
    let schedule_controller = Controller::for_stream(schedule_changes, schedule_cache);
    let known_schedules = schedule_controller.store();
    let schedule_controller = schedule_controller
        // A Flow that becomes Ready (or changes) wakes the Schedules that start it.
        .watches(
            flows.clone(),
            watcher::Config::default(),
            move |flow: Flow| {
                known_schedules
                    .state()
                    .into_iter()
                    .filter(|s| {
                        s.namespace() == flow.namespace() && s.spec.flow_ref.name == flow.name_any()
                    })
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // A Run created for a Schedule's execution updates the Schedule's last runs.
        .watches(
            runs,
            watcher::Config::default().labels(crate::api::SCHEDULE_LABEL),
            |run: Run| {
                run.labels()
                    .get(crate::api::SCHEDULE_LABEL)
                    .map(|name| ObjectRef::new(name).within(&run.namespace().unwrap_or_default()))
            },
        )
        .with_config(ControllerConfig::default().concurrency(options.workers))
        .graceful_shutdown_on(shutdown.clone());
    let (flow_store, run_store) = (flow_controller.store(), run_controller.store());
    let schedule_store = schedule_controller.store();
    let eviction = eviction::evict_forever(
        ctx.clone(),
        (
            flow_store.clone(),
            run_store.clone(),
            schedule_store.clone(),
        ),
        Duration::from_secs(options.cache_eviction_interval_seconds.max(1)),
    );
    health.set_stores(flow_store.clone(), run_store.clone());
    let synced = {
        let health = health.clone();
        async move {
            until_ready(&flow_store).await;
            until_ready(&run_store).await;
            until_ready(&schedule_store).await;
            until_ready(&namespaces).await;
            info!("watches synced");
            health.synced();
        }
    };
    tokio::spawn(synced);
    let discovery_interval = Duration::from_secs(options.discovery_interval_seconds.max(1));
    let controllers = async {
        // Only the leader reaches this point, so only the leader adopts executions.
        let discovery = tokio::spawn(discovery::sweep_forever(
            ctx.clone(),
            known_flows_for_discovery,
            discovery_interval,
        ));
        let eviction = tokio::spawn(eviction);
        let run_watch = tokio::spawn(run_watch);
        let execution_events = execution_events_setup::spawn(
            ctx.clone(),
            options.execution_events,
            options.execution_events_queue_url.clone(),
        );
        futures::join!(
            flow_controller
                .run(reconcile_flow, error_policy::<Flow>, ctx.clone())
                .for_each(|_| async {}),
            run_controller
                .run(reconcile_run, error_policy::<Run>, ctx.clone())
                .for_each(|_| async {}),
            schedule_controller
                .run(reconcile_schedule, error_policy::<Schedule>, ctx.clone())
                .for_each(|_| async {}),
        );
        discovery.abort();
        eviction.abort();
        run_watch.abort();
        if let Some(consumer) = execution_events {
            consumer.abort();
        }
    };
    match elector.as_mut() {
        None => {
            controllers.await;
        }
        Some(elector) => {
            let lost = tokio::select! {
                _ = controllers => None,
                lost = elector.hold() => Some(lost),
            };
            metrics.leader.set(0);
            if let Some(lost) = lost {
                error!(error = %lost, "leadership lost: exiting so a new leader takes over alone");
                return Err(lost.into());
            }
            if let Err(error) = elector.release().await {
                warn!(%error, "could not release the leader lease; it expires by itself");
            }
        }
    }
    info!("flowline controller stopped");
    Ok(())
}

/// Waits until a watch cache has its initial list. A store wakes only its most recent
/// waiter, and the controller itself waits on its own store, so this waiter polls again
/// every half second instead of relying on a wake-up.
async fn until_ready<K>(store: &Store<K>)
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await
        {
            if result.is_err() {
                warn!("a watch stopped before its initial list");
            }
            return;
        }
    }
}

async fn reconcile_run(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    instrumented(run, ctx, run::reconcile).await
}

async fn reconcile_schedule(
    schedule: Arc<Schedule>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    instrumented(schedule, ctx, schedule::reconcile).await
}

async fn reconcile_flow(flow: Arc<Flow>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    instrumented(flow, ctx, flow::reconcile).await
}

/// Runs one reconcile with what every kind shares: the in-flight gauge, the reconcile
/// metrics and the reset of the object's backoff on success.
async fn instrumented<K, F, Fut>(
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, ReconcileError>>,
{
    let kind = K::kind(&());
    let key = failure_key(object.as_ref());
    let started = Instant::now();
    let in_flight = ctx.metrics.in_flight(&kind);
    in_flight.inc();
    let result = reconcile(object, ctx.clone()).await;
    in_flight.dec();
    measured(&ctx, &kind, started, &result);
    forget_on_success(&ctx, &key, result)
}

fn measured(ctx: &Context, kind: &str, started: Instant, result: &Result<Action, ReconcileError>) {
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics
        .reconciled(kind, outcome, started.elapsed().as_secs_f64());
}

/// `Kind:namespace/name`: the key of an object's failure count.
fn failure_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}:{}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// A successful reconcile resets the object's backoff.
fn forget_on_success(
    ctx: &Context,
    key: &str,
    result: Result<Action, ReconcileError>,
) -> Result<Action, ReconcileError> {
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, 1.0), Duration::from_secs(300));
        assert_eq!(backoff(4, 0.0), Duration::from_secs(4));
    }

    #[test]
    fn only_live_keys_are_kept() {
        let mut failures: HashMap<String, u32> =
            HashMap::from([("Run:a/gone".to_owned(), 3), ("Run:a/here".to_owned(), 1)]);
        let live = std::collections::HashSet::from(["Run:a/here".to_owned()]);
        assert_eq!(retain_live(&mut failures, &live), 1);
        assert_eq!(failures.keys().collect::<Vec<_>>(), ["Run:a/here"]);
        assert_eq!(retain_live(&mut failures, &live), 0);
    }

    #[test]
    fn conflicts_retry_at_once_a_few_times_then_back_off() {
        let delays: Vec<Duration> = (1..=6)
            .map(|attempt| retry_delay(ErrorClass::Conflict, attempt, 1.0))
            .collect();
        assert_eq!(
            delays,
            [500, 500, 500, 1000, 2000, 4000].map(Duration::from_millis)
        );
        assert_eq!(
            retry_delay(ErrorClass::Conflict, 40, 1.0),
            Duration::from_secs(300)
        );
        assert_eq!(
            retry_delay(ErrorClass::Retryable, 1, 1.0),
            Duration::from_secs(1)
        );
    }
}
