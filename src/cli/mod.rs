//! The user's commands, as `kubectl flowline …` (the `kubectl-flowline` binary, found by
//! kubectl on PATH) and as `flowline …`: start a Run and watch it, read its tasks' output,
//! draw its graph, list Runs, stop one, resume one. They talk to the cluster of the current
//! kubeconfig context (and, for `logs`, to CloudWatch Logs with the usual AWS configuration);
//! `graph -f` works offline.

pub mod graph;
mod logs;
mod runs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

/// The commands a person runs against Flows and Runs.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Start a Run of a Flow (named `<flow>-<random>`), and with `--wait` follow it to its end:
    /// steps as they start and finish, foreach progress, and a table of the steps at the end.
    /// With `--wait`, exits 1 when the Run fails, is aborted or times out, 2 when it cannot
    /// start.
    Run(runs::RunArgs),
    /// Print what a Run's tasks printed (their CloudWatch Logs streams, which the Run's
    /// status names), optionally one step or one task, and with `-f` keep following while
    /// the Run runs.
    Logs(logs::LogsArgs),
    /// Draw a Flow's graph, or a Run's with each step's phase, attempts and duration, as SVG,
    /// PNG, Graphviz DOT, Mermaid or text. `-f flow.yaml` draws a manifest offline.
    Graph(GraphArgs),
    /// List Runs in a compact table.
    Get(runs::GetArgs),
    /// Stop a Run (sets `spec.stop`): the execution and its running Batch jobs are stopped.
    Stop(runs::StopArgs),
    /// Start a new Run that resumes a finished one from a step (`--from`, by default the
    /// first step that did not succeed), reusing the results of the steps before it.
    Resume(runs::ResumeArgs),
}

/// Where a graph comes from and how it is written.
#[derive(Args)]
pub struct GraphArgs {
    /// `FLOW`, `flow/NAME` or `run/NAME` (a bare name is a Flow, or a Run if no Flow has it).
    target: Option<String>,
    /// A Flow manifest to draw offline (YAML or JSON; `-` for stdin), like `render`.
    #[arg(short = 'f', long = "filename", conflicts_with = "target")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = GraphFormat::Text)]
    output: GraphFormat,
    /// Write to this file instead of stdout (PNG is never written to a terminal).
    #[arg(long = "out")]
    out: Option<PathBuf>,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// The formats `graph` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Text,
    Svg,
    Png,
    Dot,
    Mermaid,
}

/// Runs a user command; the exit code says how it went.
pub fn execute(command: UserCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            UserCommand::Run(args) => runs::run(args).await,
            UserCommand::Logs(args) => logs::logs(args).await.map(|()| ExitCode::SUCCESS),
            UserCommand::Graph(args) => draw(args).await.map(|()| ExitCode::SUCCESS),
            UserCommand::Get(args) => runs::get(args).await.map(|()| ExitCode::SUCCESS),
            UserCommand::Stop(args) => runs::stop(args).await.map(|()| ExitCode::SUCCESS),
            UserCommand::Resume(args) => runs::resume(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster client and the namespace to use.
async fn cluster(namespace: Option<&str>) -> anyhow::Result<(kube::Client, String)> {
    use anyhow::Context as _;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG, its current context)")?;
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((client, namespace))
}

async fn draw(args: GraphArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use kube::api::Api;

    use crate::api::{Flow, Run};

    let graphs = match (&args.file, &args.target) {
        (Some(file), _) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let flows = crate::compile::flows_in_manifest(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            anyhow::ensure!(!flows.is_empty(), "{} holds no Flow", file.display());
            flows.iter().map(|flow| graph::build(flow, None)).collect()
        }
        (None, Some(target)) => {
            let (client, namespace) = cluster(args.namespace.as_deref()).await?;
            let flows: Api<Flow> = Api::namespaced(client.clone(), &namespace);
            let runs: Api<Run> = Api::namespaced(client, &namespace);
            let (kind, name) = match target.split_once('/') {
                Some((kind, name)) => (Some(kind), name),
                None => (None, target.as_str()),
            };
            let run = match kind {
                Some("run" | "runs" | "flrun" | "run.flowline.io") => Some(
                    runs.get_opt(name)
                        .await?
                        .with_context(|| format!("Run {name} not found in {namespace}"))?,
                ),
                Some("flow" | "flows" | "fl" | "flow.flowline.io") => None,
                Some(other) => anyhow::bail!("{other}/{name}: name a flow/NAME or a run/NAME"),
                None if flows.get_opt(name).await?.is_some() => None,
                None => Some(runs.get_opt(name).await?.with_context(|| {
                    format!("neither a Flow nor a Run is named {name} in {namespace}")
                })?),
            };
            let flow_name = run
                .as_ref()
                .map_or(name.to_owned(), |r| r.spec.flow_ref.name.clone());
            let flow = flows
                .get_opt(&flow_name)
                .await?
                .with_context(|| format!("Flow {flow_name} not found in {namespace}"))?;
            vec![graph::build(&flow, run.as_ref())]
        }
        (None, None) => anyhow::bail!("name a Flow or a Run, or give -f FILE"),
    };
    let mut bytes = Vec::new();
    for drawn in &graphs {
        match args.output {
            GraphFormat::Text => bytes.extend(graph::text(drawn).into_bytes()),
            GraphFormat::Svg => bytes.extend(graph::svg(drawn).into_bytes()),
            GraphFormat::Dot => bytes.extend(graph::dot(drawn).into_bytes()),
            GraphFormat::Mermaid => bytes.extend(graph::mermaid(drawn).into_bytes()),
            GraphFormat::Png => {
                anyhow::ensure!(
                    graphs.len() == 1,
                    "the file holds {} Flows: a PNG draws one",
                    graphs.len()
                );
                bytes = graph::png(&graph::svg(drawn))?;
            }
        }
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            use std::io::{IsTerminal, Write};
            let mut stdout = std::io::stdout();
            anyhow::ensure!(
                !matches!(args.output, GraphFormat::Png) || !stdout.is_terminal(),
                "a PNG is not written to a terminal: use --out FILE or redirect stdout"
            );
            stdout.write_all(&bytes)?;
        }
    }
    Ok(())
}
