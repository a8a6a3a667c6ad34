//! `flowline artifacts ls|get|put`: a Run's artifacts for people and scripts, as Metaflow's
//! S3 `list_paths`, `get_files` and `put_files` give them.
//!
//! A target is a Run (`run/NAME`, read through the cluster for its `status.artifactRoot`)
//! narrowed by `--step` and `--task`, or an explicit `s3://bucket/prefix`. Transfers are the
//! task runtime's (`task::transfer`) with the controller's S3 settings: endpoint and path
//! style, the Flow's server-side encryption on every upload, the retry count, and the worker
//! count as the number of transfers at once.

use std::path::{Path, PathBuf};

use kube::api::Api;

use crate::api::{Flow, Run};
use crate::compile::state_machine::split_s3;
use crate::settings::Settings;
use crate::task::TaskError;
use crate::task::contract::{Encryption, S3Settings};
use crate::task::layout::InputPrefix;
use crate::task::transfer;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error("{0}")]
    Usage(String),
    #[error("Run {name} in namespace {namespace} not found")]
    RunNotFound { name: String, namespace: String },
    #[error(
        "Run {name} has no status.artifactRoot yet (it has not started): nothing is stored for it"
    )]
    NoArtifactRoot { name: String },
    #[error("reading Run {name} from the cluster: {source}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error("{failed} of {total} files were not stored:\n{errors}")]
    Upload {
        failed: usize,
        total: usize,
        errors: String,
    },
}

/// What a command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Run, by name (`run/NAME`).
    Run(String),
    /// An S3 prefix (`s3://bucket/prefix`).
    Uri(String),
}

impl Target {
    /// `run/NAME` (also `runs/`, `flrun/`, `run.flowline.io/`) or `s3://…`.
    pub fn parse(text: &str) -> Result<Self, ArtifactsError> {
        if text.starts_with("s3://") {
            return Ok(Target::Uri(text.to_owned()));
        }
        match text.split_once('/') {
            Some((kind, name))
                if ["run", "runs", "flrun", "run.flowline.io"].contains(&kind)
                    && !name.is_empty()
                    && !name.contains('/') =>
            {
                Ok(Target::Run(name.to_owned()))
            }
            _ => Err(ArtifactsError::Usage(format!(
                "{text:?} is neither run/NAME nor an s3:// URI"
            ))),
        }
    }
}

/// Which part of a Run: a step, and one of its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub step: Option<String>,
    pub task: Option<String>,
}

/// The S3 prefix (ending with `/`) a scope of a Run addresses under its artifact root.
pub fn run_prefix(artifact_root: &str, scope: &Scope) -> Result<String, ArtifactsError> {
    let mut prefix = format!("{}/", artifact_root.trim_end_matches('/'));
    match (&scope.step, &scope.task) {
        (None, Some(_)) => {
            return Err(ArtifactsError::Usage("--task needs --step".into()));
        }
        (step, task) => {
            for part in [step, task].into_iter().flatten() {
                if part.is_empty() || part.contains('/') || part == "." || part == ".." {
                    return Err(ArtifactsError::Usage(format!(
                        "{part:?} is no step or task name"
                    )));
                }
                prefix.push_str(part);
                prefix.push('/');
            }
        }
    }
    Ok(prefix)
}

/// The prefix of an explicit URI: used as given, as a folder.
pub fn uri_prefix(uri: &str, scope: &Scope) -> Result<String, ArtifactsError> {
    if scope.step.is_some() || scope.task.is_some() {
        return Err(ArtifactsError::Usage(
            "--step and --task address a Run's artifacts; an s3:// URI is used as given".into(),
        ));
    }
    Ok(format!("{}/", uri.trim_end_matches('/')))
}

/// Where `put` stores: a Run's step and task (`0` unless given), or the URI as given.
pub fn put_scope(target: &Target, scope: &Scope) -> Result<Scope, ArtifactsError> {
    match target {
        Target::Uri(_) => Ok(scope.clone()),
        Target::Run(_) if scope.step.is_none() => Err(ArtifactsError::Usage(
            "put to a Run needs --step (and stores under task 0 unless --task says otherwise)"
                .into(),
        )),
        Target::Run(_) => Ok(Scope {
            step: scope.step.clone(),
            task: Some(scope.task.clone().unwrap_or_else(|| "0".into())),
        }),
    }
}

/// The controller's S3 settings, under the same flags and variables, and only those.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Options {
    /// S3 endpoint (MinIO or another S3-compatible store); unset means AWS.
    #[arg(long, env = "FLOWLINE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Address S3 buckets by path (`endpoint/bucket/key`); on whenever an endpoint is set.
    #[arg(long, env = "FLOWLINE_S3_FORCE_PATH_STYLE", default_value_t = false)]
    pub s3_force_path_style: bool,

    /// Server-side encryption of uploads when the Run's Flow sets none: `AES256` or `aws:kms`.
    #[arg(long, env = "FLOWLINE_S3_SSE")]
    pub s3_server_side_encryption: Option<String>,

    /// KMS key for `aws:kms` server-side encryption.
    #[arg(long, env = "FLOWLINE_S3_KMS_KEY_ID")]
    pub s3_kms_key_id: Option<String>,

    /// Retries of each S3 request.
    #[arg(long, env = "FLOWLINE_S3_RETRY_COUNT", default_value_t = 7)]
    pub s3_retry_count: u32,

    /// Transfers at once.
    #[arg(long, env = "FLOWLINE_S3_WORKER_COUNT", default_value_t = 64)]
    pub s3_worker_count: u32,
}

impl S3Options {
    /// The controller's settings with these S3 values.
    pub fn settings(&self) -> Settings {
        Settings {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_force_path_style: self.s3_force_path_style,
            s3_server_side_encryption: self.s3_server_side_encryption.clone(),
            s3_kms_key_id: self.s3_kms_key_id.clone(),
            s3_retry_count: self.s3_retry_count,
            s3_worker_count: self.s3_worker_count,
            ..Settings::default()
        }
    }
}

/// The task runtime's S3 settings from the controller's, with the Flow's encryption.
pub fn s3_settings(settings: &Settings, flow: Option<&Flow>) -> Result<S3Settings, TaskError> {
    let (sse, kms_key_id) = crate::compile::datastore_encryption(flow, settings);
    Ok(S3Settings {
        endpoint: settings.s3_endpoint.clone(),
        // As for the tasks: an S3-compatible endpoint needs path-style addressing.
        force_path_style: settings.s3_force_path_style || settings.s3_endpoint.is_some(),
        encryption: Encryption::parse(sse.as_deref(), kms_key_id.as_deref())?,
        retries: settings.s3_retry_count,
        workers: settings.s3_worker_count.max(1) as usize,
    })
}

/// A resolved target: its prefix, and the Flow of the Run (for its encryption).
struct Resolved {
    prefix: String,
    flow: Option<Flow>,
}

async fn resolve(
    target: &Target,
    scope: &Scope,
    namespace: Option<&str>,
) -> Result<Resolved, ArtifactsError> {
    let name = match target {
        Target::Uri(uri) => {
            return Ok(Resolved {
                prefix: uri_prefix(uri, scope)?,
                flow: None,
            });
        }
        Target::Run(name) => name,
    };
    let kube_error = |source| ArtifactsError::Kube {
        name: name.clone(),
        source,
    };
    let client = kube::Client::try_default().await.map_err(kube_error)?;
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let runs: Api<Run> = Api::namespaced(client.clone(), &namespace);
    let run = runs
        .get_opt(name)
        .await
        .map_err(kube_error)?
        .ok_or_else(|| ArtifactsError::RunNotFound {
            name: name.clone(),
            namespace: namespace.clone(),
        })?;
    let root = run
        .status
        .as_ref()
        .and_then(|s| s.artifact_root.clone())
        .ok_or_else(|| ArtifactsError::NoArtifactRoot { name: name.clone() })?;
    // The Flow gives the encryption of uploads; without it (deleted, no access), the
    // controller's settings do.
    let flows: Api<Flow> = Api::namespaced(client, &namespace);
    let flow = flows.get_opt(&run.spec.flow_ref.name).await.ok().flatten();
    Ok(Resolved {
        prefix: run_prefix(&root, scope)?,
        flow,
    })
}

/// One object: its URI and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub uri: String,
    pub size: i64,
}

/// The objects under the target, in key order.
pub async fn ls(
    target: &Target,
    scope: &Scope,
    namespace: Option<&str>,
    settings: &Settings,
) -> Result<Vec<Listed>, ArtifactsError> {
    let resolved = resolve(target, scope, namespace).await?;
    let s3 = s3_settings(settings, resolved.flow.as_ref())?;
    let client = transfer::client(&s3).await;
    let (bucket, prefix) = split_s3(&resolved.prefix);
    Ok(transfer::list(&client, &bucket, &prefix)
        .await?
        .into_iter()
        .map(|(key, size)| Listed {
            uri: format!("s3://{bucket}/{key}"),
            size,
        })
        .collect())
}

/// Downloads every object under the target into `dir`, at its path under the target's prefix;
/// returns how many.
pub async fn get(
    target: &Target,
    scope: &Scope,
    namespace: Option<&str>,
    settings: &Settings,
    dir: &Path,
) -> Result<usize, ArtifactsError> {
    let resolved = resolve(target, scope, namespace).await?;
    let s3 = s3_settings(settings, resolved.flow.as_ref())?;
    let client = transfer::client(&s3).await;
    let (bucket, prefix) = split_s3(&resolved.prefix);
    let input = InputPrefix {
        step: String::new(),
        bucket,
        prefix,
        folder: PathBuf::new(),
        // Everything under the Run's (or step's, or task's) prefix, not one task's relatives.
        whole_step_for: None,
    };
    Ok(transfer::download(&client, &[input], dir, s3.workers).await?)
}

/// Stores each file (a folder: the files under it, below its name) under the target with the
/// Flow's encryption; returns the URIs stored.
pub async fn put(
    target: &Target,
    scope: &Scope,
    namespace: Option<&str>,
    settings: &Settings,
    files: &[PathBuf],
) -> Result<Vec<String>, ArtifactsError> {
    let scope = put_scope(target, scope)?;
    let resolved = resolve(target, &scope, namespace).await?;
    let s3 = s3_settings(settings, resolved.flow.as_ref())?;
    let client = transfer::client(&s3).await;
    let (bucket, prefix) = split_s3(&resolved.prefix);
    let destination = transfer::Destination {
        bucket: &bucket,
        prefix: &prefix,
        encryption: &s3.encryption,
    };
    let mut stored = Vec::new();
    let mut errors = Vec::new();
    let mut total = 0;
    for (dir, relative) in upload_sets(files)? {
        total += relative.len();
        let (artifacts, failed) =
            transfer::upload(&client, &dir, &relative, &destination, s3.workers).await;
        stored.extend(
            artifacts
                .iter()
                .map(|a| format!("s3://{bucket}/{prefix}{}", a.name)),
        );
        errors.extend(failed);
    }
    if !errors.is_empty() {
        return Err(ArtifactsError::Upload {
            failed: errors.len(),
            total,
            errors: errors.join("\n"),
        });
    }
    stored.sort();
    Ok(stored)
}

/// Each argument as a folder and the files under it to store: a file by its name, a folder's
/// files below the folder's name.
fn upload_sets(files: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<PathBuf>)>, ArtifactsError> {
    let mut sets = Vec::new();
    for path in files {
        let meta =
            std::fs::metadata(path).map_err(|e| TaskError::Io(path.display().to_string(), e))?;
        let name = path.file_name().map(PathBuf::from).ok_or_else(|| {
            ArtifactsError::Usage(format!("{} names no file or folder", path.display()))
        })?;
        let parent = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        if meta.is_dir() {
            let inner = transfer::files_under(path)?;
            sets.push((parent, inner.into_iter().map(|f| name.join(f)).collect()));
        } else {
            sets.push((parent, vec![name]));
        }
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(step: Option<&str>, task: Option<&str>) -> Scope {
        Scope {
            step: step.map(str::to_owned),
            task: task.map(str::to_owned),
        }
    }

    #[test]
    fn a_target_is_a_run_by_name_or_an_s3_uri() {
        assert_eq!(
            Target::parse("run/demo-pipeline-1").unwrap(),
            Target::Run("demo-pipeline-1".into())
        );
        assert_eq!(Target::parse("flrun/x").unwrap(), Target::Run("x".into()));
        assert_eq!(
            Target::parse("s3://b/p").unwrap(),
            Target::Uri("s3://b/p".into())
        );
        for bad in ["demo", "flow/x", "run/", "run/a/b"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn step_and_task_narrow_the_run_prefix() {
        let root = "s3://b/data/ns/f/run-abc";
        assert_eq!(
            run_prefix(root, &Scope::default()).unwrap(),
            "s3://b/data/ns/f/run-abc/"
        );
        assert_eq!(
            run_prefix(root, &scope(Some("square"), Some("0"))).unwrap(),
            "s3://b/data/ns/f/run-abc/square/0/"
        );
        assert!(run_prefix(root, &scope(None, Some("0"))).is_err());
        assert!(run_prefix(root, &scope(Some(".."), None)).is_err());
        assert_eq!(
            uri_prefix("s3://b/x/", &Scope::default()).unwrap(),
            "s3://b/x/"
        );
        assert!(uri_prefix("s3://b/x", &scope(Some("a"), None)).is_err());
    }

    #[test]
    fn put_to_a_run_needs_a_step_and_defaults_to_task_zero() {
        let run = Target::Run("r".into());
        assert!(put_scope(&run, &Scope::default()).is_err());
        assert_eq!(
            put_scope(&run, &scope(Some("s"), None)).unwrap(),
            scope(Some("s"), Some("0"))
        );
        let uri = Target::Uri("s3://b/x".into());
        assert_eq!(
            put_scope(&uri, &Scope::default()).unwrap(),
            Scope::default()
        );
    }

    #[test]
    fn s3_settings_are_the_controllers_with_the_flows_encryption() {
        let settings = Settings {
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            s3_server_side_encryption: Some("AES256".into()),
            s3_retry_count: 3,
            s3_worker_count: 8,
            ..Settings::default()
        };
        let s3 = s3_settings(&settings, None).unwrap();
        assert!(s3.force_path_style);
        assert_eq!((s3.retries, s3.workers), (3, 8));
        assert_eq!(s3.encryption, Encryption::Aes256);
        let flow: Flow = serde_norway::from_str(
            "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {name: f}\nspec:\n  datastore: {serverSideEncryption: aws:kms, kmsKeyId: alias/k}\n  steps: []\n",
        )
        .unwrap();
        assert_eq!(
            s3_settings(&settings, Some(&flow)).unwrap().encryption,
            Encryption::Kms {
                key_id: Some("alias/k".into())
            }
        );
    }
}
