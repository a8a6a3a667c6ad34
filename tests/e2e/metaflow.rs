//! Unmodified Metaflow flows (examples/metaflow/) converted by `flowline import metaflow`,
//! applied, run on the exec emulator (each step runs Metaflow's own task runtime in the
//! `python` runtime, which holds Metaflow as a plain Python image with Metaflow would), and
//! read back with Metaflow's client after `pull.py` copied the run's metadata: parameters,
//! artifacts, attempts and stdout as a Metaflow user sees them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    ControllerProcess, TestNamespace, env, install_crds, jsonpath, repo_root, wait_for,
};
use crate::task_side::{apply, run, step_output, wait_ended};

/// Every step starts Python and Metaflow twice (entrypoint and step): give runs time.
const TIMEOUT: Duration = Duration::from_secs(420);

/// The controller's default S3 root on the exec emulator.
const S3_ROOT: &str = "s3://flowline/data";

/// The Python of the emulator's `python` runtime: it has Metaflow, as a flow's author has.
fn runtime_python() -> PathBuf {
    let runtimes = std::fs::read_to_string(env().env_dir.join("runtimes.txt"))
        .expect("the environment lists its runtimes");
    let venv = runtimes
        .lines()
        .find_map(|line| line.strip_prefix("python="))
        .expect("a python runtime");
    Path::new(venv).join("bin/python")
}

fn example(file: &str) -> PathBuf {
    repo_root().join("examples/metaflow").join(file)
}

/// Variables of a person's shell pointed at the exec emulator.
fn aws_env(command: &mut Command) -> &mut Command {
    let endpoint = env().aws_exec_endpoint.as_str();
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("FLOWLINE_S3_ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", "METAFLOWIMPORT")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
}

/// `flowline import metaflow FILE -n NAMESPACE …`: the manifests it printed, or its error.
fn import(file: &Path, namespace: &str, extra: &[&str]) -> Result<String, String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowline"));
    command
        .args(["import", "metaflow"])
        .arg(file)
        .args(["-n", namespace])
        .args(extra)
        .env("FLOWLINE_PYTHON", runtime_python());
    let output = aws_env(&mut command).output().expect("flowline runs");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The Metaflow run id of a Run: `fl-<execution name>`, as its status says.
fn metaflow_run_id(namespace: &str, run: &str) -> String {
    let arn = jsonpath(namespace, &format!("run/{run}"), "{.status.executionArn}");
    format!(
        "fl-{}",
        arn.rsplit(':').next().expect("an execution ARN has a name")
    )
}

/// Runs `script` with Metaflow's client in a fresh folder after pulling the run's metadata
/// there, as a reader on a laptop would; returns what it printed as JSON on its last line.
fn read_with_metaflow(root: &str, pathspec: &str, script: &str) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!(
        "flowline-metaflow-reader-{}",
        crate::harness::unique_name("r")
    ));
    std::fs::create_dir_all(&dir).expect("reader folder");
    let pull = repo_root().join("python/flowline-task/src/flowline_task/metaflow/pull.py");
    let reader_env = |command: &mut Command| {
        aws_env(command)
            .current_dir(&dir)
            .env("METAFLOW_DEFAULT_DATASTORE", "s3")
            .env("METAFLOW_DEFAULT_METADATA", "local")
            .env("METAFLOW_DATASTORE_SYSROOT_S3", root)
            .env("METAFLOW_S3_ENDPOINT_URL", &env().aws_exec_endpoint)
            .env("METAFLOW_USER", "reader")
            .env("USERNAME", "reader");
    };
    let mut pulling = Command::new(runtime_python());
    pulling.arg(&pull).arg(pathspec);
    reader_env(&mut pulling);
    let pulled = pulling.output().expect("pull.py runs");
    assert!(
        pulled.status.success(),
        "pull.py {pathspec}: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let mut reading = Command::new(runtime_python());
    reading.arg("-c").arg(script).arg(pathspec);
    reader_env(&mut reading);
    let output = reading.output().expect("the reader runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "reading {pathspec} with Metaflow's client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Reads every step's tasks: parameters, artifacts (small values), attempts and stdout.
const READER: &str = r#"import json, sys
from metaflow import Run, namespace
namespace(None)
run = Run(sys.argv[1])
out = {"successful": run.successful, "finished": run.finished, "steps": {}}
for step in run:
    tasks = []
    for task in step:
        data = {}
        for artifact in task:
            if artifact.id.startswith("_") or artifact.id == "name":
                continue
            value = artifact.data
            try:
                json.dumps(value)
            except TypeError:
                value = repr(value)
            data[artifact.id] = value
        tasks.append({"id": task.id, "data": data, "attempt": task.current_attempt,
                      "successful": task.successful, "stdout": task.stdout})
    out["steps"][step.id] = sorted(tasks, key=lambda t: t["id"])
print(json.dumps(out, sort_keys=True))
"#;

/// Imports an example into a fresh namespace with an exec controller, runs it and waits.
struct Scenario {
    ns: TestNamespace,
    _controller: ControllerProcess,
    flow: String,
}

impl Scenario {
    fn start(prefix: &str, file: &str, extra: &[&str]) -> (Scenario, String) {
        install_crds();
        let ns = TestNamespace::create(prefix);
        let controller = ControllerProcess::start_exec(&ns.name, &[]);
        let manifests = import(&example(file), &ns.name, extra)
            .unwrap_or_else(|error| panic!("import {file}: {error}"));
        apply(&ns.name, &manifests);
        let flow = manifests
            .lines()
            .skip_while(|line| *line != "kind: Flow")
            .find_map(|line| line.trim().strip_prefix("name: "))
            .expect("the Flow is named")
            .to_owned();
        (
            Scenario {
                ns,
                _controller: controller,
                flow,
            },
            manifests,
        )
    }

    fn root(&self) -> String {
        format!("{S3_ROOT}/{}/{}", self.ns.name, self.flow)
    }

    /// Starts a Run and waits for it to end as `expected`; returns the Metaflow run id.
    fn run(&self, name: &str, parameters: &str, expected: &str) -> String {
        apply(&self.ns.name, &run(name, &self.flow, parameters));
        wait_for(&format!("Run {name} to end"), TIMEOUT, || {
            let phase = jsonpath(&self.ns.name, &format!("run/{name}"), "{.status.phase}");
            ["Succeeded", "Failed", "Aborted", "TimedOut"]
                .contains(&phase.as_str())
                .then_some(())
        });
        wait_ended(&self.ns.name, name, expected);
        metaflow_run_id(&self.ns.name, name)
    }
}

fn data<'a>(read: &'a serde_json::Value, step: &str) -> Vec<&'a serde_json::Value> {
    read["steps"][step]
        .as_array()
        .unwrap_or_else(|| panic!("step {step} in {read:#}"))
        .iter()
        .map(|task| &task["data"])
        .collect()
}

#[test]
fn a_plain_batch_flow_runs_and_metaflows_client_reads_its_parameters_artifacts_and_stdout() {
    let (scenario, manifests) = Scenario::start("mf-hello", "hello_batch.py", &[]);
    assert!(manifests.contains("flowline.io/metaflow-flow: HelloBatchFlow"), "{manifests}");
    let run_id = scenario.run("hello-1", "{greeting: \"hi\"}", "Succeeded");
    let read = read_with_metaflow(
        &scenario.root(),
        &format!("HelloBatchFlow/{run_id}"),
        READER,
    );
    assert_eq!(read["successful"], true, "{read:#}");
    let start = data(&read, "start");
    assert_eq!(start[0]["greeting"], "hi", "the Run's parameter: {read:#}");
    assert_eq!(start[0]["times"], 2, "the default, typed: {read:#}");
    assert_eq!(data(&read, "compute_step")[0]["result"], "HI HI");
    let end = &read["steps"]["end"][0];
    assert!(
        end["stdout"].as_str().unwrap_or_default().contains("Result: HI HI"),
        "stdout is Metaflow's log: {end:#}"
    );
    assert_eq!(end["attempt"], 0);
    // The step's own output also reached the job's log, as CloudWatch would show it.
    let compute = step_output(&scenario.ns.name, "hello-1", "compute_step");
    assert!(compute.iter().any(|line| line == "computed HI HI"), "{compute:#?}");
}

#[test]
fn a_branch_and_join_flow_merges_both_branches() {
    let (scenario, _) = Scenario::start("mf-branch", "branch_join.py", &[]);
    let run_id = scenario.run("branch-1", "{}", "Succeeded");
    let read = read_with_metaflow(
        &scenario.root(),
        &format!("BranchJoinFlow/{run_id}"),
        READER,
    );
    assert_eq!(data(&read, "double")[0]["value"], 20);
    assert_eq!(data(&read, "square")[0]["value"], 100);
    let join = data(&read, "join");
    assert_eq!(join[0]["total"], 120, "{read:#}");
    assert_eq!(join[0]["base"], 10, "merge_artifacts carried base: {read:#}");
    assert_eq!(data(&read, "end")[0]["total"], 120);
}

#[test]
fn a_nested_foreach_fans_out_per_item_and_joins_every_task() {
    let (scenario, _) = Scenario::start("mf-foreach", "foreach.py", &[]);
    let run_id = scenario.run("sweep-1", "{rates: \"0.5,0.25\"}", "Succeeded");
    let read = read_with_metaflow(&scenario.root(), &format!("ForeachFlow/{run_id}"), READER);
    let trials: Vec<f64> = data(&read, "trial")
        .iter()
        .map(|d| d["score"].as_f64().expect("a score"))
        .collect();
    let mut sorted = trials.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted, vec![26.0, 27.0, 51.0, 52.0], "one task per rate and seed: {read:#}");
    assert_eq!(data(&read, "join_seeds").len(), 2);
    assert_eq!(
        data(&read, "end")[0]["scores"],
        serde_json::json!({"0.5": 52.0, "0.25": 27.0}),
        "{read:#}"
    );
}
