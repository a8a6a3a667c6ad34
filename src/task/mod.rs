//! `flowline task -- <command…>`: the task side of a step, wrapped around its command.
//!
//! Before the command: binary secrets resolved with the task's own credentials and exported
//! base64-encoded; the parents' outputs the step asked for downloaded into
//! `$FLOWLINE_INPUT_DIR`. The command then runs as a child process with stdout and stderr
//! inherited, SIGTERM and SIGINT forwarded, and its exit code passed on (128 + n after signal
//! n). After it, whatever it wrote under `$FLOWLINE_OUTPUT_DIR` is stored under
//! `$FLOWLINE_ARTIFACT_URI` with the Flow's server-side encryption — also when it failed — and
//! a `_task.json` manifest records the attempt.
//!
//! The pure parts (what the contract says, where files go, the manifest, the foreach check)
//! are the submodules; [`run`] only reads, transfers and waits.

pub mod contract;
pub mod foreach;
pub mod layout;
pub mod manifest;
pub mod secrets;
pub mod transfer;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use contract::Contract;
use layout::MANIFEST_NAME;
use manifest::{Attempt, TaskIdentity};

/// The exit code of a task whose command succeeded but whose wrapper failed (a secret, an
/// input, an upload, the foreach list): 125, as `env`, `timeout` and `docker run` use for their
/// own failures, so it is told apart from the command's codes.
pub const WRAPPER_FAILURE: i32 = 125;
/// The exit code when the command cannot be started (as a shell reports it).
pub const COMMAND_NOT_RUN: i32 = 127;

/// What can go wrong on the task side.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{variable} {problem}")]
    Contract {
        variable: &'static str,
        problem: String,
    },
    #[error("{0}")]
    Layout(String),
    #[error("{what}: {source}")]
    S3 {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("binary secret {name} ({arn}) cannot be read with the task's credentials: {reason}")]
    Secret {
        name: String,
        arn: String,
        reason: String,
    },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error(transparent)]
    Foreach(#[from] foreach::ForeachError),
    #[error("the command {command:?} cannot be started: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped by signal {0} before the command started")]
    Stopped(i32),
    #[error("signal handlers cannot be installed: {0}")]
    Signals(#[source] std::io::Error),
}

fn note(message: impl std::fmt::Display) {
    eprintln!("flowline task: {message}");
}

/// Runs the wrapper around `command` and returns the exit code to end with.
pub async fn run(command: Vec<OsString>) -> i32 {
    let started_at = jiff::Timestamp::now();
    let vars: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let contract = match Contract::from_vars(&vars) {
        Ok(contract) => contract,
        Err(error) => {
            note(error);
            return WRAPPER_FAILURE;
        }
    };
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            note(error);
            return WRAPPER_FAILURE;
        }
    };
    let work = match WorkDirs::create() {
        Ok(work) => work,
        Err(error) => {
            note(error);
            return WRAPPER_FAILURE;
        }
    };
    let code = Task {
        contract: &contract,
        work: &work,
        started_at,
    }
    .run(&command, &mut signals)
    .await;
    work.remove();
    code
}

/// The wrapper's fresh folders for one attempt.
struct WorkDirs {
    base: PathBuf,
    input: PathBuf,
    output: PathBuf,
}

impl WorkDirs {
    /// `<temp dir>/flowline-task-<pid>-<nanos>/{input,output}` (the temp dir is `$TMPDIR`,
    /// the tmpfs mount when the step asks for one).
    fn create() -> Result<Self, TaskError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let base =
            std::env::temp_dir().join(format!("flowline-task-{}-{nanos}", std::process::id()));
        let input = base.join("input");
        let output = base.join("output");
        for dir in [&base, &input, &output] {
            std::fs::create_dir(dir).map_err(|e| TaskError::Io(dir.display().to_string(), e))?;
        }
        Ok(WorkDirs {
            base,
            input,
            output,
        })
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

struct Task<'a> {
    contract: &'a Contract,
    work: &'a WorkDirs,
    started_at: jiff::Timestamp,
}

impl Task<'_> {
    async fn run(&self, command: &[OsString], signals: &mut Signals) -> i32 {
        let contract = self.contract;
        let mut attempt = Attempt::default();
        let needs_s3 = contract.artifact_uri.is_some()
            || (!contract.input_uris.is_empty()
                && contract.inputs != contract::InputSelection::None);
        let client = if needs_s3 {
            Some(transfer::client(&contract.s3).await)
        } else {
            None
        };

        // Stopped before the command started: it is not started at all.
        let prepared = tokio::select! {
            prepared = self.prepare(client.as_ref()) => prepared,
            Some(()) = signals.term.recv() => Err(TaskError::Stopped(15)),
            Some(()) = signals.int.recv() => Err(TaskError::Stopped(2)),
        };
        let stopped = match &prepared {
            Err(TaskError::Stopped(signal)) => Some(128 + signal),
            _ => None,
        };
        match prepared {
            Ok(secret_env) => {
                let mut env = secret_env;
                env.push((contract::INPUT_DIR.into(), self.work.input.clone().into()));
                env.push((contract::OUTPUT_DIR.into(), self.work.output.clone().into()));
                match run_child(command, &env, signals).await {
                    Ok(code) => attempt.exit_code = Some(code),
                    Err(error) => {
                        note(&error);
                        attempt.errors.push(error.to_string());
                        attempt.exit_code = Some(COMMAND_NOT_RUN);
                    }
                }
            }
            Err(error) => {
                note(&error);
                attempt.errors.push(error.to_string());
            }
        }

        if attempt.exit_code == Some(0)
            && let Some(name) = &contract.foreach_artifact
            && let Err(error) = check_foreach(&self.work.output, name)
        {
            note(&error);
            attempt.errors.push(error.to_string());
        }
        self.store(client.as_ref(), &mut attempt).await;
        match stopped.or(attempt.exit_code) {
            Some(code) if code != 0 => code,
            _ if attempt.errors.is_empty() => 0,
            _ => WRAPPER_FAILURE,
        }
    }

    /// Secrets, then inputs; returns the secrets' variables for the command.
    async fn prepare(
        &self,
        client: Option<&aws_sdk_s3::Client>,
    ) -> Result<Vec<(OsString, OsString)>, TaskError> {
        let contract = self.contract;
        let secrets = secrets::resolve(&contract.binary_secrets).await?;
        if !secrets.is_empty() {
            let names: Vec<&str> = secrets.iter().map(|(name, _)| name.as_str()).collect();
            note(format!("binary secrets exported: {}", names.join(", ")));
        }
        let inputs: Vec<_> = layout::input_prefixes(
            &contract.datastore_root,
            &contract.run_id,
            &contract.task_id,
            &contract.input_uris,
        )?
        .into_iter()
        .filter(|input| contract.inputs.includes(&input.step))
        .collect();
        if let (Some(client), false) = (client, inputs.is_empty()) {
            let started = std::time::Instant::now();
            let count =
                transfer::download(client, &inputs, &self.work.input, contract.s3.workers).await?;
            note(format!(
                "{count} input files downloaded in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
        }
        Ok(secrets
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect())
    }

    /// Uploads the outputs and the manifest; failures join `attempt.errors`.
    async fn store(&self, client: Option<&aws_sdk_s3::Client>, attempt: &mut Attempt) {
        let contract = self.contract;
        let (Some(client), Some(uri)) = (client, &contract.artifact_uri) else {
            note("FLOWLINE_ARTIFACT_URI is not set: outputs are not stored");
            return;
        };
        let (bucket, prefix) = crate::compile::state_machine::split_s3(uri);
        let destination = transfer::Destination {
            bucket: &bucket,
            prefix: &prefix,
            encryption: &contract.s3.encryption,
        };
        match transfer::files_under(&self.work.output) {
            Ok(files) => {
                let (files, reserved): (Vec<_>, Vec<_>) = files
                    .into_iter()
                    .partition(|file| file != Path::new(MANIFEST_NAME));
                if !reserved.is_empty() {
                    note(format!(
                        "{MANIFEST_NAME} is the manifest's name; the output of that name is not stored"
                    ));
                }
                let started = std::time::Instant::now();
                let (artifacts, errors) = transfer::upload(
                    client,
                    &self.work.output,
                    &files,
                    &destination,
                    contract.s3.workers,
                )
                .await;
                if !files.is_empty() {
                    note(format!(
                        "{} of {} outputs stored in {:.1}s",
                        artifacts.len(),
                        files.len(),
                        started.elapsed().as_secs_f64()
                    ));
                }
                errors.iter().for_each(note);
                attempt.artifacts = artifacts;
                attempt.errors.extend(errors);
            }
            Err(error) => {
                note(&error);
                attempt.errors.push(error.to_string());
            }
        }
        let identity = TaskIdentity {
            flow: contract.flow.clone(),
            namespace: contract.namespace.clone(),
            run_id: contract.run_id.clone(),
            step: contract.step.clone(),
            task_id: contract.task_id.clone(),
            attempt: contract.attempt,
            node_index: contract.node_index,
        };
        let manifest =
            manifest::manifest(&identity, attempt, self.started_at, jiff::Timestamp::now());
        let stored = match serde_json::to_vec_pretty(&manifest) {
            Ok(bytes) => transfer::put_bytes(client, &destination, MANIFEST_NAME, bytes).await,
            Err(error) => Err(TaskError::Layout(error.to_string())),
        };
        if let Err(error) = stored {
            note(&error);
            attempt.errors.push(error.to_string());
        }
    }
}

fn check_foreach(output: &Path, name: &str) -> Result<(), TaskError> {
    let path = output.join(name);
    let bytes = std::fs::read(&path).map_err(|_| foreach::ForeachError::Missing {
        name: name.to_owned(),
    })?;
    let count = foreach::validate(name, &bytes)?;
    note(format!("foreach list {name}: {count} items"));
    Ok(())
}

/// SIGTERM and SIGINT, caught for the wrapper's whole life: forwarded to the command while it
/// runs, and held afterwards so the outputs are still stored (Batch sends SIGKILL when its
/// stop timeout ends).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, TaskError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(TaskError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(TaskError::Signals)?,
        })
    }
}

/// Runs the command with the extra variables; returns its exit code.
async fn run_child(
    command: &[OsString],
    env: &[(OsString, OsString)],
    signals: &mut Signals,
) -> Result<i32, TaskError> {
    let spawn_error = |source| TaskError::Spawn {
        command: command
            .first()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source,
    };
    let Some((program, args)) = command.split_first() else {
        return Err(spawn_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no command given after `--`",
        )));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(spawn_error)?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(spawn_error)?;
                return Ok(manifest::exit_code(status));
            }
            Some(()) = signals.term.recv() => forward(pid, rustix::process::Signal::TERM),
            Some(()) = signals.int.recv() => forward(pid, rustix::process::Signal::INT),
        }
    }
}

fn forward(pid: Option<rustix::process::Pid>, signal: rustix::process::Signal) {
    if let Some(pid) = pid {
        // The child may have exited already; `wait` reports that.
        let _ = rustix::process::kill_process(pid, signal);
    }
}
