//! How a step's container runs on AWS Batch: the options of Metaflow's `@batch` decorator.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Tags, optional_enum, tags_schema};

/// AWS Batch settings of a step: compute, image, queue, roles and Linux parameters.
///
/// The same type sets the Flow-wide defaults (`spec.batch`) and a step's own settings
/// (`spec.steps[].batch`). A step's value wins field by field: every field it sets replaces
/// the Flow's (`tmpfs` as a whole), `tags` are merged key by key, and every field left out is
/// inherited. What neither sets comes from the controller's configuration (job queue,
/// job role, default image). Rules within one level are checked here; the same rules on
/// what each step ends up with, both levels combined (a step asking for a GPU under a Flow
/// on Fargate), are CEL rules of the Flow's spec. The API server checks both when the Flow is
/// applied, and the controller again before it touches AWS (a Flow breaking one is Stalled,
/// the message naming both fields).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.cpu) || self.cpu >= 0.25")
        .message("batch.cpu must be at least 0.25 vCPU")
        .field_path(".cpu"),
    validation = Rule::new("!(has(self.inferentia) && self.inferentia > 0 && has(self.trainium) && self.trainium > 0)")
        .message("batch.inferentia and batch.trainium are mutually exclusive: both request AWS Neuron devices, set only one")
        .field_path(".trainium")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.gpu) && self.gpu > 0)")
        .message("batch.gpu is not supported on platform FARGATE")
        .field_path(".gpu")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.inferentia) && self.inferentia > 0)")
        .message("batch.inferentia is not supported on platform FARGATE")
        .field_path(".inferentia")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.trainium) && self.trainium > 0)")
        .message("batch.trainium is not supported on platform FARGATE")
        .field_path(".trainium")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.tmpfs))")
        .message("batch.tmpfs is not supported on platform FARGATE")
        .field_path(".tmpfs")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.sharedMemory))")
        .message("batch.sharedMemory is not supported on platform FARGATE")
        .field_path(".sharedMemory")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.maxSwap))")
        .message("batch.maxSwap is not supported on platform FARGATE")
        .field_path(".maxSwap")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.swappiness))")
        .message("batch.swappiness is not supported on platform FARGATE")
        .field_path(".swappiness")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.platform) && self.platform == 'FARGATE' && has(self.cpu)) || double(self.cpu) in [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]")
        .message("batch.cpu on platform FARGATE must be one of 0.25, 0.5, 1, 2, 4, 8 or 16")
        .field_path(".cpu"),
    validation = Rule::new("!(has(self.platform) && self.platform == 'EC2' && has(self.cpu)) || double(self.cpu) == double(int(self.cpu))")
        .message("batch.cpu on platform EC2 must be a whole number of vCPUs")
        .field_path(".cpu"),
)]
pub struct BatchSpec {
    /// vCPUs for each container (Metaflow's `cpu`). Whole numbers from 1 to 96 on EC2;
    /// 0.25, 0.5, 1, 2, 4, 8 or 16 on Fargate, where memory must also fit the vCPU count.
    /// Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.25, max = 96))]
    pub cpu: Option<f64>,

    /// Memory for each container, in MiB (Metaflow's `memory`), from 128 to 245760.
    /// Defaults to 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 245760))]
    pub memory: Option<i32>,

    /// NVIDIA GPUs for each container (Metaflow's `gpu`). The job queue's compute environment
    /// must offer GPU instances. EC2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub gpu: Option<i32>,

    /// AWS Inferentia devices for each container (Metaflow's `inferentia`), exposed as
    /// `/dev/neuron*`. Needs a queue of inf1/inf2 instances. EC2 only; excludes `trainium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub inferentia: Option<i32>,

    /// AWS Trainium devices for each container (Metaflow's `trainium`), exposed as
    /// `/dev/neuron*`. Needs a queue of trn1/trn2 instances. EC2 only; excludes `inferentia`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub trainium: Option<i32>,

    /// Container image (Metaflow's `image`), e.g. `python:3.12-slim` or an ECR image URI.
    /// A step's own `image` takes precedence; the controller's default image applies when
    /// neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,

    /// AWS Batch job queue, by name or ARN (Metaflow's `queue`). Defaults to the controller's
    /// job queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(
        r"^([A-Za-z0-9_-]{1,128}|arn:aws[a-z-]*:batch:[a-z0-9-]+:[0-9]{12}:job-queue/[A-Za-z0-9_-]{1,128})$"
    ))]
    pub queue: Option<String>,

    /// ARN of the IAM role the container runs as (Metaflow's `iam_role`): it needs access to
    /// the datastore's S3 root. Defaults to the controller's job role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"))]
    pub iam_role: Option<String>,

    /// ARN of the IAM role AWS Batch uses to start the container (Metaflow's `execution_role`):
    /// on Fargate it pulls the image and writes logs; on EC2 and Fargate alike it reads the
    /// step's secrets, which Batch injects only through it. Defaults to the controller's
    /// execution role for steps that need one (on Fargate, or binding `json` or `plaintext`
    /// secrets); a step that binds such secrets with no execution role anywhere is reported
    /// as Stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"))]
    pub execution_role: Option<String>,

    /// Where the container runs: `EC2` (the default) or `FARGATE`. Fargate has no GPUs, Neuron
    /// devices, tmpfs, shared memory or swap, and cannot run multi-node (`parallel`) steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = optional_enum)]
    pub platform: Option<Platform>,

    /// Size of `/dev/shm` in MiB (Metaflow's `shared_memory`); PyTorch data loaders with
    /// several workers usually need more than Docker's 64 MiB. EC2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 245760))]
    pub shared_memory: Option<i32>,

    /// Swap available to the container, in MiB (Metaflow's `max_swap`); 0 disables swap.
    /// The instances must have swap configured. EC2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1048576))]
    pub max_swap: Option<i32>,

    /// How eagerly the kernel swaps the container's memory, from 0 (only to avoid running out
    /// of memory) to 100 (aggressively), like Metaflow's `swappiness`. Takes effect only when
    /// `maxSwap` is set. EC2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub swappiness: Option<i32>,

    /// A memory-backed scratch file system mounted into the container (Metaflow's `use_tmpfs`,
    /// `tmpfs_size`, `tmpfs_path` and `tmpfs_tempdir`). EC2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<Tmpfs>,

    /// Tags for the Batch jobs of the step (Metaflow's `aws_batch_tags`), added to the Flow's
    /// `tags`. At most 20; keys of 1 to 128 characters that do not start with `aws:` or
    /// `flowline.io/`, values of at most 256 characters.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Tags,
}

/// Where a Batch job runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Platform {
    /// EC2 (or Spot) instances of the queue's compute environment.
    #[serde(rename = "EC2")]
    Ec2,
    /// AWS Fargate.
    #[serde(rename = "FARGATE")]
    Fargate,
}

/// A tmpfs mount: scratch space in memory, faster than the instance's disk for many small
/// files.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tmpfs {
    /// Size of the mount in MiB; it counts against the container's memory. Defaults to half
    /// of the container's `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 245760))]
    pub size: Option<i32>,

    /// Absolute path of the mount in the container. Defaults to `/metaflow_temp`, as in
    /// Metaflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 4096), pattern(r"^/"))]
    pub path: Option<String>,

    /// Whether the mount also becomes the task's temporary directory (`TMPDIR`), so that
    /// Python's `tempfile` writes to memory. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tempdir: Option<bool>,
}
