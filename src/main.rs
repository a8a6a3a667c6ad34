//! The `flowline` command line: one subcommand per capability.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use flowline::compile::{self, secrets::Lookups};
use flowline::iam::{Inputs, Role};
use flowline::settings::Settings;

#[derive(Parser)]
#[command(
    name = "flowline",
    version,
    about = "Runs Metaflow-style flows on AWS from Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once per process; boxing buys nothing.
enum Command {
    /// Print the CustomResourceDefinitions of Flow, Run and Schedule as YAML.
    Crds,
    /// Run the controller: reconcile Flows into AWS Batch job definitions and Step Functions
    /// state machines.
    Controller {
        #[command(flatten)]
        options: flowline::controller::Options,
        #[command(flatten)]
        settings: Settings,
    },
    /// Print the AWS resources a Flow becomes (job definitions, state machine), offline: no
    /// cluster and no AWS account are needed.
    Render {
        /// The Flow manifest (YAML or JSON; `-` for stdin). Other kinds in the file are skipped.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
        output: Format,
        #[command(flatten)]
        settings: Settings,
    },
    /// Check manifests offline as `kubectl apply` and the controller would: the CRDs' schema
    /// bounds and CEL rules, and the controller's checks of a Flow. Prints one line per problem
    /// (`FILE: Kind/name: field: what is wrong`) and exits 1 when there is any, 0 otherwise.
    /// Documents of other API groups are skipped.
    Validate {
        /// A manifest (YAML or JSON, several documents allowed; `-` for stdin); repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Print least-privilege IAM policies (permissions and trust) for the controller, the Step
    /// Functions role, the EventBridge role and the job role, generated from the settings.
    IamPolicy {
        /// Which role to print.
        #[arg(long, value_enum, default_value_t = RoleSelector::All)]
        role: RoleSelector,
        /// A job queue Flows use besides the default `--job-queue` (name or ARN); repeatable.
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
        /// A secret Flows bind (name or ARN); repeatable. Without any, no secret is readable.
        #[arg(long = "secret", value_name = "SECRET")]
        secrets: Vec<String>,
        /// A role Flows name in `batch.iamRole` or `batch.executionRole` besides `--job-role`
        /// and `--execution-role` (name or ARN); repeatable.
        #[arg(long = "flow-role", value_name = "ROLE")]
        flow_roles: Vec<String>,
        /// A role secrets name in `secrets[].role` to be read through, besides
        /// `--secrets-role` (name or ARN); repeatable.
        #[arg(long = "secret-role", value_name = "ROLE")]
        secret_roles: Vec<String>,
        /// A namespace's own execution role (its annotation `flowline.io/execution-role`), as
        /// `NAMESPACE=ROLE`; repeatable. Each gets a policy that reads only that namespace's
        /// secrets (`NAMESPACE/*` unless `--namespace-secret` names them).
        #[arg(long = "namespace-execution-role", value_name = "NAMESPACE=ROLE")]
        namespace_execution_roles: Vec<String>,
        /// A secret a namespace's Flows bind, as `NAMESPACE=SECRET` (name, ARN or `prefix*`);
        /// repeatable. Replaces that namespace's default `NAMESPACE/*`.
        #[arg(long = "namespace-secret", value_name = "NAMESPACE=SECRET")]
        namespace_secrets: Vec<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Json)]
        output: Format,
        #[command(flatten)]
        settings: Settings,
    },
    /// The installation's execution events rule and queue (see `flowline controller
    /// --execution-events`).
    ExecutionEvents {
        #[command(subcommand)]
        command: ExecutionEventsCommand,
    },
    /// List, download or store a Run's artifacts (`run/NAME`, narrowed by `--step` and
    /// `--task`, or an `s3://` URI) with the controller's S3 settings.
    Artifacts {
        #[command(subcommand)]
        command: ArtifactsCommand,
    },
    /// Convert a flow written for another tool into Flowline manifests, printed as YAML.
    Import {
        #[command(subcommand)]
        command: flowline::metaflow::ImportCommand,
    },
    /// Run a step's command inside its container with the task side around it: binary secrets
    /// and declared inputs before, outputs and a `_task.json` manifest stored after (see the
    /// README's "The task runtime"). Exits with the command's code (128 + n after signal n),
    /// or 125 when the command succeeded but the wrapper failed.
    Task {
        /// The command and its arguments, after `--`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// The user's commands, also installed as `kubectl flowline` (run, logs, graph, get, stop,
    /// resume).
    #[command(flatten)]
    User(flowline::cli::UserCommand),
}

#[derive(Subcommand)]
enum ExecutionEventsCommand {
    /// Delete the EventBridge rule (its targets first) and the SQS queue named
    /// `<name prefix>execution-events`, each only if tagged as Flowline's; what is gone already
    /// is fine. The Helm chart runs it when the release is uninstalled. Prints one line per
    /// thing deleted or kept; exits 1 when AWS refuses.
    Delete {
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    /// Print the URI and size of each object, tab-separated, in key order.
    Ls {
        #[command(flatten)]
        at: At,
        #[command(flatten)]
        s3: flowline::artifacts::S3Options,
    },
    /// Download every object into a folder, at its path under the addressed prefix.
    Get {
        #[command(flatten)]
        at: At,
        /// The folder to download into (created if missing).
        #[arg(short = 'o', long = "output", default_value = ".")]
        output: PathBuf,
        #[command(flatten)]
        s3: flowline::artifacts::S3Options,
    },
    /// Store files (a folder: the files under it, below its name) with the Flow's server-side
    /// encryption: under `<step>/<task>/` of a Run (task 0 unless `--task`), or the URI.
    Put {
        #[command(flatten)]
        at: At,
        /// The files or folders to store.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        s3: flowline::artifacts::S3Options,
    },
}

/// What an `artifacts` command addresses.
#[derive(clap::Args)]
struct At {
    /// `run/NAME` (read through the cluster: KUBECONFIG, its current context) or `s3://…`.
    target: String,
    /// The step of the Run.
    #[arg(long)]
    step: Option<String>,
    /// The task of the step (`0`, `0-<index>` in a foreach, `0-node-<i>` on a node).
    #[arg(long)]
    task: Option<String>,
    /// The Run's namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// The roles `iam-policy` prints.
#[derive(Clone, Copy, ValueEnum)]
enum RoleSelector {
    All,
    Controller,
    StepFunctions,
    Eventbridge,
    Job,
    Execution,
    /// The namespaces' own execution roles (`--namespace-execution-role`).
    NamespaceExecution,
}

impl RoleSelector {
    fn roles(self) -> Vec<Role> {
        match self {
            RoleSelector::All => Role::ALL.to_vec(),
            RoleSelector::Controller => vec![Role::Controller],
            RoleSelector::StepFunctions => vec![Role::StepFunctions],
            RoleSelector::Eventbridge => vec![Role::Eventbridge],
            RoleSelector::Job => vec![Role::Job],
            RoleSelector::Execution => vec![Role::Execution],
            RoleSelector::NamespaceExecution => vec![Role::NamespaceExecution],
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Task { command } => return run_task(command),
        Command::User(command) => return flowline::cli::execute(command),
        Command::Artifacts { command } => artifacts(command),
        Command::ExecutionEvents {
            command: ExecutionEventsCommand::Delete { settings },
        } => delete_execution_events(settings),
        Command::Import { command } => flowline::metaflow::run(command),
        Command::Crds => flowline::api::crds_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(anyhow::Error::from),
        Command::Render {
            file,
            output,
            settings,
        } => render(&file, output, &settings),
        Command::Validate { files, settings } => return validate(&files, &settings),
        Command::Controller { options, settings } => run_controller(settings, options),
        Command::IamPolicy {
            role,
            queues,
            secrets,
            flow_roles,
            secret_roles,
            namespace_execution_roles,
            namespace_secrets,
            output,
            settings,
        } => tenants(&namespace_execution_roles, &namespace_secrets).and_then(|tenants| {
            let inputs = Inputs {
                job_queues: queues,
                secrets,
                job_roles: flow_roles,
                secret_roles,
                tenants,
            };
            iam_policy(&settings, &inputs, role, output)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The task side runs on one thread: it waits on a child and on S3, and starts fast.
fn run_task(command: Vec<std::ffi::OsString>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowline task: {error}");
            return ExitCode::from(flowline::task::WRAPPER_FAILURE as u8);
        }
    };
    let code = runtime.block_on(flowline::task::run(command));
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

fn artifacts(command: ArtifactsCommand) -> anyhow::Result<()> {
    use flowline::artifacts::{Scope, Target};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let parse = |at: &At| -> anyhow::Result<(Target, Scope)> {
        Ok((
            Target::parse(&at.target)?,
            Scope {
                step: at.step.clone(),
                task: at.task.clone(),
            },
        ))
    };
    runtime.block_on(async {
        match command {
            ArtifactsCommand::Ls { at, s3 } => {
                let settings = s3.settings();
                let (target, scope) = parse(&at)?;
                let listed =
                    flowline::artifacts::ls(&target, &scope, at.namespace.as_deref(), &settings)
                        .await?;
                for object in listed {
                    println!("{}\t{}", object.uri, object.size);
                }
            }
            ArtifactsCommand::Get { at, output, s3 } => {
                let settings = s3.settings();
                let (target, scope) = parse(&at)?;
                let count = flowline::artifacts::get(
                    &target,
                    &scope,
                    at.namespace.as_deref(),
                    &settings,
                    &output,
                )
                .await?;
                eprintln!("{count} files downloaded into {}", output.display());
            }
            ArtifactsCommand::Put { at, files, s3 } => {
                let settings = s3.settings();
                let (target, scope) = parse(&at)?;
                let stored = flowline::artifacts::put(
                    &target,
                    &scope,
                    at.namespace.as_deref(),
                    &settings,
                    &files,
                )
                .await?;
                for uri in stored {
                    println!("{uri}");
                }
            }
        }
        Ok(())
    })
}

fn delete_execution_events(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for line in
        runtime.block_on(flowline::controller::execution_events_setup::delete_command(settings))?
    {
        println!("{line}");
    }
    Ok(())
}

fn run_controller(
    settings: Settings,
    options: flowline::controller::Options,
) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match std::env::var("FLOWLINE_LOG_FORMAT").as_deref() {
        Ok("text") => tracing_subscriber::fmt().with_env_filter(filter).init(),
        Ok("json") | Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init(),
        Ok(other) => anyhow::bail!("FLOWLINE_LOG_FORMAT must be json or text, not {other:?}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(flowline::controller::run(settings, options))
}

fn read_manifest(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the manifest from stdin")
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// `flowline validate`: every problem of every file, then the exit code.
fn validate(files: &[PathBuf], settings: &Settings) -> ExitCode {
    let mut objects = 0;
    let mut problems = 0;
    let mut failed = false;
    for file in files {
        let checked = read_manifest(file).and_then(|text| {
            flowline::validate::validate_manifest(&text, settings).map_err(anyhow::Error::from)
        });
        match checked {
            Ok(report) => {
                objects += report.objects;
                problems += report.problems.len();
                for problem in report.problems {
                    println!("{}: {problem}", file.display());
                }
            }
            Err(error) => {
                println!("{}: {error:#}", file.display());
                failed = true;
            }
        }
    }
    eprintln!("{objects} object(s) checked, {problems} problem(s)");
    if failed || problems > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn render(file: &PathBuf, output: Format, settings: &Settings) -> anyhow::Result<()> {
    let text = read_manifest(file)?;
    // What the API server or the controller would refuse is not rendered.
    let report = flowline::validate::validate_manifest(&text, settings)
        .with_context(|| format!("parsing {}", file.display()))?;
    if !report.problems.is_empty() {
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "{} would be refused (see `flowline validate`):\n{}",
            file.display(),
            lines.join("\n")
        );
    }
    let flows =
        compile::flows_in_manifest(&text).with_context(|| format!("parsing {}", file.display()))?;
    anyhow::ensure!(!flows.is_empty(), "{} holds no Flow", file.display());
    for flow in flows {
        let name = flow.metadata.name.clone().unwrap_or_default();
        let rendered = compile::render(&flow, settings, Lookups::Offline)
            .with_context(|| format!("Flow {name}"))?;
        match output {
            Format::Yaml => print!("---\n{}", serde_norway::to_string(&rendered)?),
            Format::Json => println!("{}", serde_json::to_string_pretty(&rendered)?),
        }
    }
    Ok(())
}

/// The namespaces with execution roles of their own, from `NAMESPACE=ROLE` and
/// `NAMESPACE=SECRET` pairs.
fn tenants(roles: &[String], secrets: &[String]) -> anyhow::Result<Vec<flowline::iam::Tenant>> {
    let pair = |text: &String, flag: &str| {
        text.split_once('=')
            .filter(|(namespace, value)| !namespace.is_empty() && !value.is_empty())
            .map(|(namespace, value)| (namespace.to_owned(), value.to_owned()))
            .ok_or_else(|| anyhow::anyhow!("{flag} {text:?} is not NAMESPACE=VALUE"))
    };
    let mut tenants: Vec<flowline::iam::Tenant> = Vec::new();
    for text in roles {
        let (namespace, role) = pair(text, "--namespace-execution-role")?;
        tenants.push(flowline::iam::Tenant {
            namespace,
            execution_role: role,
            secrets: Vec::new(),
        });
    }
    for text in secrets {
        let (namespace, secret) = pair(text, "--namespace-secret")?;
        let tenant = tenants
            .iter_mut()
            .find(|t| t.namespace == namespace)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--namespace-secret {text:?}: namespace {namespace} has no --namespace-execution-role"
                )
            })?;
        tenant.secrets.push(secret);
    }
    Ok(tenants)
}

fn iam_policy(
    settings: &Settings,
    inputs: &Inputs,
    role: RoleSelector,
    output: Format,
) -> anyhow::Result<()> {
    let policies = flowline::iam::policies(settings, inputs, &role.roles());
    if inputs.secrets.is_empty() && inputs.tenants.is_empty() {
        eprintln!("note: no --secret given, so no role may read secrets");
    }
    match output {
        Format::Yaml => print!("{}", serde_norway::to_string(&policies)?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&policies)?),
    }
    Ok(())
}
