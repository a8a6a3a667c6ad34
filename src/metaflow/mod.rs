//! `flowline import metaflow FLOW_FILE`: an unmodified Metaflow flow as a Flow (and a Schedule
//! for `@schedule` or an S3 `@trigger`).
//!
//! Metaflow itself reads the flow: the subcommand runs a copy of
//! `python/flowline-task/src/flowline_task/metaflow/graph.py` that the binary carries, with
//! `--python` (a Python with Metaflow, as the flow's authors have), which lints the flow with
//! Metaflow's linter and prints its graph, decorators and parameters as JSON, and builds the
//! code package. The package is stored content-addressed in S3, under the Flow's datastore
//! root, and each step runs the Metaflow entrypoint from it ([`convert`]).

pub mod convert;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::settings::Settings;
pub use convert::{Code, Converted, FlowDoc, Options, convert, to_yaml};

/// The describer, carried by the binary so that only Metaflow must be installed.
const GRAPH_PY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/python/flowline-task/src/flowline_task/metaflow/graph.py"
));
/// The task entrypoint, which the describer puts into the code package.
const ENTRYPOINT_PY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/python/flowline-task/src/flowline_task/metaflow/entrypoint.py"
));

/// Sources `flowline import` converts from.
#[derive(clap::Subcommand)]
pub enum ImportCommand {
    /// Print a Flow (and a Schedule for `@schedule` or an S3 `@trigger`) that runs an
    /// unmodified Metaflow flow: its steps mirror the flow's graph and run Metaflow's own task
    /// runtime. Metaflow's linter runs first. The flow's code is uploaded to the datastore as
    /// a content-addressed package, unless `--code-dir` says it is in the image.
    Metaflow(MetaflowArgs),
}

/// Arguments of `flowline import metaflow`.
#[derive(clap::Args)]
pub struct MetaflowArgs {
    /// The flow file (`python flow.py run` would run it).
    pub flow_file: PathBuf,
    /// Name of the Flow (default: the FlowSpec class in kebab case, `HelloFlow` -> `hello-flow`).
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace of the manifests, and of the code package's place in the datastore.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Image of every step that `@batch(image=...)` does not name: Python with Metaflow
    /// (default: the controller's default image).
    #[arg(long)]
    pub image: Option<String>,
    /// The folder where the image holds the flow's code (and `flowline_task` is installed):
    /// nothing is uploaded and the steps run the code from there.
    #[arg(long, value_name = "DIR")]
    pub code_dir: Option<String>,
    /// A Python interpreter with Metaflow installed, which reads the flow.
    #[arg(long, env = "FLOWLINE_PYTHON", default_value = "python3")]
    pub python: String,
    /// Metaflow's metadata service URL, for runs recorded there as well as in the datastore.
    #[arg(long, value_name = "URL")]
    pub metadata_service: Option<String>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Runs an import command: prints the manifests, warnings on stderr.
pub fn run(command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Metaflow(args) = command;
    let work = scratch_dir()?;
    let result = import_metaflow(&args, &work);
    let _ = std::fs::remove_dir_all(&work);
    let converted = result?;
    for warning in &converted.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", to_yaml(&converted)?);
    Ok(())
}

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("flowline-import-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn import_metaflow(args: &MetaflowArgs, work: &Path) -> anyhow::Result<Converted> {
    let graph = work.join("graph.py");
    std::fs::write(&graph, GRAPH_PY)?;
    std::fs::write(work.join("entrypoint.py"), ENTRYPOINT_PY)?;
    let package = work.join("code.tgz");
    let mut command = Command::new(&args.python);
    command.arg(&graph).arg(&args.flow_file);
    if args.code_dir.is_none() {
        command.arg("--package").arg(&package);
    }
    let output = command.output().with_context(|| {
        format!(
            "running {} (a Python with Metaflow installed; set --python or FLOWLINE_PYTHON)",
            args.python
        )
    })?;
    if !output.status.success() {
        bail!(
            "{}: {}",
            args.flow_file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let doc: FlowDoc = serde_json::from_slice(&output.stdout)
        .context("reading the flow's description from graph.py")?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| convert::default_name(&doc.flow));
    let code = match &args.code_dir {
        Some(dir) => Code::InImage(dir.clone()),
        None => {
            let bytes = std::fs::read(&package)?;
            let uri = package_uri(&args.settings, args.namespace.as_deref(), &name, &bytes);
            upload(&args.settings, &uri, bytes)?;
            Code::Package(uri)
        }
    };
    let options = Options {
        name,
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        code,
        metadata_service: args.metadata_service.clone(),
    };
    Ok(convert(&doc, &options)?)
}

/// `<s3Root>/<namespace>/<flow>/_metaflow/code/<sha256>.tgz`: under the Flow's datastore
/// root, which its job role reads, and named by content, so the Flow's steps (and with them
/// its state machine version) change exactly when the code does.
pub fn package_uri(
    settings: &Settings,
    namespace: Option<&str>,
    flow: &str,
    bytes: &[u8],
) -> String {
    let digest: String = Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "{}/{}/{flow}/_metaflow/code/{digest}.tgz",
        settings.s3_root.trim_end_matches('/'),
        namespace.unwrap_or("default"),
    )
}

fn upload(settings: &Settings, uri: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let s3 = crate::artifacts::s3_settings(settings, None)?;
        let client = crate::task::transfer::client(&s3).await;
        let (bucket, key) = uri
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .with_context(|| format!("{uri} is not an s3://bucket/key URI"))?;
        let (sse, kms_key_id) = crate::compile::datastore_encryption(None, settings);
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/gzip")
            .body(bytes.into())
            .set_server_side_encryption(sse.as_deref().map(Into::into))
            .set_ssekms_key_id(kms_key_id)
            .send()
            .await
            .with_context(|| format!("uploading the code package to {uri}"))?;
        Ok(())
    })
}
