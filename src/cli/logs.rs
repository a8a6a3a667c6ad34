//! `logs RUN`: what a Run's tasks printed, read from CloudWatch Logs, where AWS Batch sends a
//! container's output (the streams the Run's status names, in the job queue's log group).
//! With `-f` the Run is read again every two seconds for new streams, and every stream for
//! new lines, until the Run has finished and everything is printed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::api::Api;

use crate::api::{Run, StepStatus};

use super::cluster;

/// `logs RUN`.
#[derive(Args)]
pub struct LogsArgs {
    /// The Run (`NAME` or `run/NAME`).
    run: String,
    /// Only this step.
    #[arg(long)]
    step: Option<String>,
    /// Only this task of the step (`0`, `0-<index>` in a foreach): its job is found by its
    /// `FLOWLINE_TASK_ID` in Batch.
    #[arg(long, requires = "step")]
    task: Option<String>,
    /// Keep printing new lines while the Run runs.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The log group of the job queue's compute environment.
    #[arg(long, default_value = "/aws/batch/job", env = "FLOWLINE_LOG_GROUP")]
    log_group: String,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// One stream to print: the label its lines get and how far it was read.
struct Stream {
    label: String,
    token: Option<String>,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let name = args
        .run
        .strip_prefix("run/")
        .unwrap_or(&args.run)
        .to_owned();
    let (client, namespace) = cluster(args.namespace.as_deref()).await?;
    let runs: Api<Run> = Api::namespaced(client, &namespace);
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let batch = aws_sdk_batch::Client::new(&config);
    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    loop {
        let run = runs
            .get_opt(&name)
            .await?
            .with_context(|| format!("Run {name} not found in namespace {namespace}"))?;
        let finished = run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished());
        let steps: Vec<&StepStatus> = run
            .status
            .iter()
            .flat_map(|s| s.steps.iter())
            .filter(|s| args.step.as_deref().is_none_or(|want| s.name == want))
            .collect();
        if let Some(step) = &args.step
            && steps.is_empty()
            && (finished || !args.follow)
        {
            anyhow::bail!("Run {name} has no step {step} (yet)");
        }
        for step in &steps {
            let names = match &args.task {
                Some(task) => task_streams(&batch, step, task).await?,
                None => step.log_streams.clone(),
            };
            let several = names.len() > 1;
            for (index, stream) in names.into_iter().enumerate() {
                streams.entry(stream).or_insert_with(|| Stream {
                    label: if several {
                        format!("{} #{index}", step.name)
                    } else {
                        step.name.clone()
                    },
                    token: None,
                });
            }
        }
        let label = streams.len() > 1 || args.step.is_none();
        for (stream, state) in streams.iter_mut() {
            print_new(&logs, &args.log_group, stream, state, label).await?;
        }
        if !args.follow || finished {
            if streams.is_empty() {
                eprintln!("Run {name} has no log streams yet");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The streams of one task of a step: its jobs whose `FLOWLINE_TASK_ID` is `task`.
async fn task_streams(
    batch: &aws_sdk_batch::Client,
    step: &StepStatus,
    task: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for ids in step.job_ids.chunks(100) {
        let described = batch
            .describe_jobs()
            .set_jobs(Some(ids.to_vec()))
            .send()
            .await
            .context("reading the step's jobs from AWS Batch")?;
        for job in described.jobs() {
            let Some(container) = job.container() else {
                continue;
            };
            let is_task = container
                .environment()
                .iter()
                .any(|v| v.name() == Some("FLOWLINE_TASK_ID") && v.value() == Some(task));
            if let (true, Some(stream)) = (is_task, container.log_stream_name()) {
                out.push(stream.to_owned());
            }
        }
    }
    Ok(out)
}

/// Prints the lines of a stream not printed yet. A stream that does not exist yet (the job
/// has not started) prints nothing.
async fn print_new(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    state: &mut Stream,
    label: bool,
) -> anyhow::Result<()> {
    loop {
        let answer = logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(state.token.clone())
            .send()
            .await;
        let page = match answer {
            Ok(page) => page,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(());
            }
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("reading log stream {stream} in {group}")));
            }
        };
        for event in page.events() {
            let message = event.message().unwrap_or_default();
            if label {
                println!("[{}] {message}", state.label);
            } else {
                println!("{message}");
            }
        }
        let next = page.next_forward_token().map(str::to_owned);
        // The same token again means the end of what is there now.
        if next.is_none() || next == state.token {
            return Ok(());
        }
        state.token = next;
        if page.events().is_empty() {
            return Ok(());
        }
    }
}
