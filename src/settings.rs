//! Controller-wide defaults: what a Flow leaves out is filled from here. Each setting is a
//! flag and an environment variable (the Helm chart sets the variables), one for one with the
//! configuration a Metaflow-on-AWS deployment needs.

use clap::Args;

/// Default attempt timeout of a step: 5 days, long enough for any training job Metaflow's
/// users run on Batch (Metaflow's own `@timeout` default is 5 days too), short of a year.
pub const DEFAULT_STEP_TIMEOUT_SECONDS: i64 = 5 * 24 * 3600;

/// Defaults and AWS identities shared by every Flow the controller manages.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Settings {
    /// S3 prefix under which runs store artifacts (`s3://bucket/prefix`), used when a Flow
    /// sets no `spec.datastore.s3Root`.
    #[arg(long, env = "FLOWLINE_S3_ROOT", default_value = "s3://flowline/data")]
    pub s3_root: String,

    /// Default AWS Batch job queue (name or ARN).
    #[arg(long, env = "FLOWLINE_JOB_QUEUE", default_value = "flowline")]
    pub job_queue: String,

    /// Default IAM role the Batch jobs run as (needs S3 access to the datastore).
    #[arg(long, env = "FLOWLINE_JOB_ROLE")]
    pub job_role: Option<String>,

    /// Default execution role of jobs that need one: Fargate jobs (pulls images, writes logs)
    /// and jobs with secrets on any platform (Batch injects secrets only through it).
    #[arg(long, env = "FLOWLINE_EXECUTION_ROLE")]
    pub execution_role: Option<String>,

    /// IAM role Step Functions assumes to submit and track Batch jobs.
    #[arg(
        long,
        env = "FLOWLINE_STATES_ROLE",
        default_value = "arn:aws:iam::123456789012:role/flowline-states"
    )]
    pub states_role: String,

    /// IAM role EventBridge assumes to start executions for Schedules.
    #[arg(
        long,
        env = "FLOWLINE_EVENTS_ROLE",
        default_value = "arn:aws:iam::123456789012:role/flowline-events"
    )]
    pub events_role: String,

    /// Prefix of every AWS resource name Flowline creates.
    #[arg(long, env = "FLOWLINE_NAME_PREFIX", default_value = "flowline-")]
    pub name_prefix: String,

    /// Registry prepended to step images that name no registry (e.g. an ECR registry host).
    #[arg(long, env = "FLOWLINE_CONTAINER_REGISTRY")]
    pub container_registry: Option<String>,

    /// Image used by steps that set none.
    #[arg(
        long,
        env = "FLOWLINE_DEFAULT_IMAGE",
        default_value = "python:3.12-slim"
    )]
    pub default_image: String,

    /// S3 endpoint the tasks use (MinIO or another S3-compatible store); unset means AWS.
    #[arg(long, env = "FLOWLINE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Address S3 buckets by path (`endpoint/bucket/key`), as S3-compatible stores such as
    /// MinIO and emulators need; AWS itself uses virtual-hosted addressing.
    #[arg(long, env = "FLOWLINE_S3_FORCE_PATH_STYLE", default_value_t = false)]
    pub s3_force_path_style: bool,

    /// Server-side encryption of artifacts when a Flow sets none: `AES256` or `aws:kms`.
    #[arg(long, env = "FLOWLINE_S3_SSE")]
    pub s3_server_side_encryption: Option<String>,

    /// KMS key for `aws:kms` server-side encryption.
    #[arg(long, env = "FLOWLINE_S3_KMS_KEY_ID")]
    pub s3_kms_key_id: Option<String>,

    /// Retries of S3 operations inside tasks.
    #[arg(long, env = "FLOWLINE_S3_RETRY_COUNT", default_value_t = 7)]
    pub s3_retry_count: u32,

    /// Parallel S3 transfers inside tasks.
    #[arg(long, env = "FLOWLINE_S3_WORKER_COUNT", default_value_t = 64)]
    pub s3_worker_count: u32,

    /// Longest time one attempt of a step may run, in seconds, when neither the step
    /// (`timeoutSeconds`) nor the Flow (`spec.timeoutSeconds`, when shorter) says: Batch stops
    /// an attempt that runs longer, so a hung job cannot hold its instance for months.
    #[arg(long, env = "FLOWLINE_STEP_TIMEOUT_SECONDS", default_value_t = DEFAULT_STEP_TIMEOUT_SECONDS, value_parser = clap::value_parser!(i64).range(60..=31_536_000))]
    pub step_timeout_seconds: i64,

    /// Region of secrets that name none.
    #[arg(long, env = "FLOWLINE_SECRETS_REGION")]
    pub secrets_region: Option<String>,

    /// Role assumed to read secrets that name none.
    #[arg(long, env = "FLOWLINE_SECRETS_ROLE")]
    pub secrets_role: Option<String>,

    /// AWS region of the resources Flowline manages.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,

    /// AWS account that owns them, for the ARNs Flowline builds. The controller asks STS
    /// (GetCallerIdentity) when it is not set; offline commands use 123456789012.
    #[arg(long, env = "FLOWLINE_AWS_ACCOUNT")]
    pub account: Option<String>,
}

/// The account offline commands (`render`, `validate`, `iam-policy`) build ARNs with when
/// none is given: AWS's documentation placeholder.
pub const OFFLINE_ACCOUNT: &str = "123456789012";

impl Settings {
    /// The account ARNs are built with: the configured one (the controller fills it from STS
    /// at start), else [`OFFLINE_ACCOUNT`].
    pub fn account(&self) -> &str {
        self.account.as_deref().unwrap_or(OFFLINE_ACCOUNT)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            s3_root: "s3://flowline/data".into(),
            job_queue: "flowline".into(),
            job_role: None,
            execution_role: None,
            states_role: "arn:aws:iam::123456789012:role/flowline-states".into(),
            events_role: "arn:aws:iam::123456789012:role/flowline-events".into(),
            name_prefix: "flowline-".into(),
            container_registry: None,
            default_image: "python:3.12-slim".into(),
            s3_endpoint: None,
            s3_force_path_style: false,
            s3_server_side_encryption: None,
            s3_kms_key_id: None,
            s3_retry_count: 7,
            s3_worker_count: 64,
            step_timeout_seconds: DEFAULT_STEP_TIMEOUT_SECONDS,
            secrets_region: None,
            secrets_role: None,
            region: "us-east-1".into(),
            account: None,
        }
    }
}
