//! Unmodified Metaflow flows (examples/metaflow/) converted by `flowline import metaflow`,
//! applied, run on the exec emulator (each step runs Metaflow's own task runtime in the
//! `python` runtime, which holds Metaflow as a plain Python image with Metaflow would), and
//! read back with Metaflow's client after `pull.py` copied the run's metadata: parameters,
//! artifacts, attempts and stdout as a Metaflow user sees them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_exec_config, condition, create_job_queue, env,
    install_crds, jsonpath, kubectl, repo_root, unique_name, wait_for,
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

/// A reader's folder on a laptop: the run's metadata pulled by `pull.py` into `./.metaflow`,
/// Metaflow configured for the Flow's datastore.
struct Reader {
    dir: PathBuf,
    root: String,
}

impl Reader {
    fn pull(root: &str, pathspec: &str) -> Reader {
        let dir = std::env::temp_dir().join(format!(
            "flowline-metaflow-reader-{}",
            crate::harness::unique_name("r")
        ));
        std::fs::create_dir_all(&dir).expect("reader folder");
        let reader = Reader {
            dir,
            root: root.to_owned(),
        };
        let pull = repo_root().join("python/flowline-task/src/flowline_task/metaflow/pull.py");
        let pulled = reader
            .command()
            .arg(&pull)
            .arg(pathspec)
            .output()
            .expect("pull.py runs");
        assert!(
            pulled.status.success(),
            "pull.py {pathspec}: {}",
            String::from_utf8_lossy(&pulled.stderr)
        );
        reader
    }

    /// The runtime's Python in the reader's folder, with Metaflow pointed at the datastore.
    fn command(&self) -> Command {
        let mut command = Command::new(runtime_python());
        aws_env(&mut command)
            .current_dir(&self.dir)
            .env("METAFLOW_DEFAULT_DATASTORE", "s3")
            .env("METAFLOW_DEFAULT_METADATA", "local")
            .env("METAFLOW_DATASTORE_SYSROOT_S3", &self.root)
            .env("METAFLOW_S3_ENDPOINT_URL", &env().aws_exec_endpoint)
            .env("METAFLOW_USER", "reader")
            .env("USERNAME", "reader");
        command
    }

    /// What `script` (given the pathspec as its argument) printed as JSON on its last line.
    fn read(&self, script: &str, pathspec: &str) -> serde_json::Value {
        let output = self
            .command()
            .arg("-c")
            .arg(script)
            .arg(pathspec)
            .output()
            .expect("the reader runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "reading {pathspec} with Metaflow's client failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

/// Pulls the run's metadata into a fresh folder and reads it with Metaflow's client.
fn read_with_metaflow(root: &str, pathspec: &str, script: &str) -> serde_json::Value {
    Reader::pull(root, pathspec).read(script, pathspec)
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
    assert!(
        manifests.contains("flowline.io/metaflow-flow: HelloBatchFlow"),
        "{manifests}"
    );
    let run_id = scenario.run("hello-1", "{greeting: \"hi\"}", "Succeeded");
    assert_eq!(
        jsonpath(&scenario.ns.name, "run/hello-1", "{.status.metaflowRun}"),
        format!("HelloBatchFlow/{run_id}"),
        "the Run's status names the Metaflow run"
    );
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
        end["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("Result: HI HI"),
        "stdout is Metaflow's log: {end:#}"
    );
    assert_eq!(end["attempt"], 0);
    // The step's own output also reached the job's log, as CloudWatch would show it.
    let compute = step_output(&scenario.ns.name, "hello-1", "compute_step");
    assert!(
        compute.iter().any(|line| line == "computed HI HI"),
        "{compute:#?}"
    );
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
    assert_eq!(
        join[0]["base"], 10,
        "merge_artifacts carried base: {read:#}"
    );
    assert_eq!(data(&read, "end")[0]["total"], 120);

    // `resume` on a laptop with the Flowline run as its origin: every step before `end` is
    // cloned from it, `end` runs again locally.
    let reader = Reader::pull(&scenario.root(), &format!("BranchJoinFlow/{run_id}"));
    let resumed = reader
        .command()
        .arg(example("branch_join.py"))
        .args([
            "--no-pylint",
            "--datastore=s3",
            "--metadata=local",
            "resume",
            "end",
        ])
        .args([
            "--origin-run-id",
            &run_id,
            "--run-id-file",
            "resumed-run-id",
        ])
        .output()
        .expect("resume runs");
    assert!(
        resumed.status.success(),
        "resume from {run_id}: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let new_run = std::fs::read_to_string(reader.dir.join("resumed-run-id")).expect("run id");
    let read = reader.read(READER, &format!("BranchJoinFlow/{}", new_run.trim()));
    assert_eq!(
        data(&read, "join")[0]["total"],
        120,
        "cloned from the origin: {read:#}"
    );
    assert_eq!(data(&read, "end")[0]["total"], 120, "{read:#}");
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
    assert_eq!(
        sorted,
        vec![26.0, 27.0, 51.0, 52.0],
        "one task per rate and seed: {read:#}"
    );
    assert_eq!(data(&read, "join_seeds").len(), 2);
    assert_eq!(
        data(&read, "end")[0]["scores"],
        serde_json::json!({"0.5": 52.0, "0.25": 27.0}),
        "{read:#}"
    );
}

fn wait_ready(namespace: &str, resource: &str) {
    wait_for(&format!("{resource} to be Ready"), TIMEOUT, || {
        (condition(namespace, resource, "Ready").0 == "True").then_some(())
    });
}

#[tokio::test]
async fn a_gpu_and_resources_flow_gets_every_batch_option_it_asked_for() {
    let config = aws_exec_config().await;
    create_job_queue(&config, "gpu-queue").await;
    let (scenario, _) = Scenario::start("mf-gpu", "gpu_resources.py", &[]);
    let run_id = scenario.run("gpu-1", "{epochs: \"2\"}", "Succeeded");
    let read = read_with_metaflow(
        &scenario.root(),
        &format!("GpuResourcesFlow/{run_id}"),
        READER,
    );
    assert_eq!(
        data(&read, "tagged_step")[0]["result"],
        serde_json::json!({"gpus": 1, "final_loss": 0.5, "large": 499500}),
        "one GPU reached the task, epochs was an Int: {read:#}"
    );
    // The job definitions Batch ran: resources, shared memory, swap and tags as in @batch.
    let batch = aws_sdk_batch::Client::new(&config);
    let arn = |step: &str| {
        jsonpath(
            &scenario.ns.name,
            &format!("flow/{}", scenario.flow),
            &format!("{{.status.jobDefinitions[?(@.step==\"{step}\")].arn}}"),
        )
    };
    let describe = |arn: String| {
        let batch = batch.clone();
        async move {
            batch
                .describe_job_definitions()
                .job_definitions(arn)
                .send()
                .await
                .expect("described")
                .job_definitions()[0]
                .clone()
        }
    };
    let gpu = describe(arn("gpu_training")).await;
    let requirements: Vec<(String, String)> = gpu
        .container_properties()
        .expect("a container job")
        .resource_requirements()
        .iter()
        .map(|r| {
            (
                r.r#type().expect("typed").as_str().to_owned(),
                r.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [("GPU", "1"), ("VCPU", "8"), ("MEMORY", "32000")] {
        assert!(
            requirements.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{requirements:?}"
        );
    }
    let memory = describe(arn("memory_intensive")).await;
    let linux = memory
        .container_properties()
        .and_then(|c| c.linux_parameters())
        .expect("linux parameters");
    assert_eq!(linux.shared_memory_size(), Some(8000));
    assert_eq!(linux.max_swap(), Some(4000));
    assert_eq!(linux.swappiness(), Some(60));
    let tagged = describe(arn("tagged_step")).await;
    let tags = tagged.tags().expect("tags");
    assert_eq!(tags.get("project").map(String::as_str), Some("ml-training"));
    assert_eq!(
        tags.get("cost-center").map(String::as_str),
        Some("research")
    );
}

#[test]
fn a_parallel_step_runs_as_one_gang_and_its_join_sees_every_node() {
    let (scenario, manifests) = Scenario::start("mf-parallel", "parallel_training.py", &[]);
    assert!(manifests.contains("numNodes: 3"), "{manifests}");
    let run_id = scenario.run("gang-1", "{}", "Succeeded");
    let read = read_with_metaflow(
        &scenario.root(),
        &format!("ParallelTrainingFlow/{run_id}"),
        READER,
    );
    assert_eq!(
        data(&read, "join")[0]["ranks"],
        serde_json::json!([0, 1, 2]),
        "{read:#}"
    );
    let nodes = data(&read, "distributed_training");
    assert_eq!(nodes.len(), 3, "a control task and two workers: {read:#}");
    assert!(nodes.iter().all(|node| node["num_nodes"] == 3), "{read:#}");
}

#[test]
fn retry_catch_and_timeout_behave_as_in_metaflow() {
    let (scenario, manifests) = Scenario::start("mf-retry", "retry_catch_timeout.py", &[]);
    assert!(
        manifests.contains("timeoutSeconds: 65"),
        "@timeout(5 s) + grace: {manifests}"
    );
    let run_id = scenario.run("retry-1", "{}", "Succeeded");
    let read = read_with_metaflow(
        &scenario.root(),
        &format!("RetryCatchTimeoutFlow/{run_id}"),
        READER,
    );
    let flaky = &read["steps"]["flaky"][0];
    assert_eq!(
        flaky["attempt"], 1,
        "the second attempt succeeded: {read:#}"
    );
    assert_eq!(flaky["data"]["flaky_attempt"], 1);
    let end = data(&read, "end")[0];
    let broken = end["broken_error"].as_str().unwrap_or_default();
    assert!(
        broken.contains("ZeroDivisionError"),
        "@catch kept the exception: {end:#}"
    );
    let slow = end["slow_error"].as_str().unwrap_or_default();
    assert!(
        slow.contains("timed out"),
        "@timeout stopped the step: {end:#}"
    );
    let attempts = jsonpath(
        &scenario.ns.name,
        "run/retry-1",
        "{.status.steps[?(@.name==\"flaky\")].attempts}",
    );
    assert_eq!(attempts, "2", "Batch ran flaky twice");
}

#[tokio::test]
async fn secrets_are_resolved_by_metaflow_in_the_task_and_never_bound_by_the_flow() {
    let config = aws_exec_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let password = format!("pw-{}", unique_name("mf"));
    let value =
        format!(r#"{{"username": "admin", "password": "{password}", "host": "db.example.com"}}"#);
    if secrets
        .create_secret()
        .name("database-config")
        .secret_string(&value)
        .send()
        .await
        .is_err()
    {
        secrets
            .put_secret_value()
            .secret_id("database-config")
            .secret_string(&value)
            .send()
            .await
            .expect("the secret's value is set");
    }
    let (scenario, manifests) = Scenario::start("mf-secrets", "secrets_flow.py", &[]);
    assert!(
        !manifests.contains("secrets:"),
        "no Batch binding: {manifests}"
    );
    let run_id = scenario.run("secrets-1", "{}", "Succeeded");
    let read = read_with_metaflow(&scenario.root(), &format!("SecretsFlow/{run_id}"), READER);
    let start = data(&read, "start")[0];
    assert_eq!(start["db_user"], "admin", "{read:#}");
    assert_eq!(start["db_host"], "db.example.com");
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(password.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(start["password_sha256"], digest.as_str());
    let status = kubectl(
        &["get", "flows,runs", "-n", &scenario.ns.name, "-o", "yaml"],
        None,
    )
    .stdout;
    assert!(
        !status.contains(&password),
        "the value appears in no object"
    );
}

#[test]
fn an_s3_data_flow_stores_and_reads_files_with_metaflows_s3() {
    let (scenario, _) = Scenario::start("mf-s3", "s3_data.py", &[]);
    let run_id = scenario.run("s3-1", "{}", "Succeeded");
    let read = read_with_metaflow(&scenario.root(), &format!("S3DataFlow/{run_id}"), READER);
    let process = data(&read, "process")[0];
    assert_eq!(process["total"], 30, "{read:#}");
    assert_eq!(process["notes"], "stored with metaflow.S3");
    assert_eq!(
        process["listed"],
        serde_json::json!(["notes/readme.txt", "remote_file.csv"])
    );
}

#[test]
fn a_scheduled_flow_gets_a_schedule_and_runs() {
    let (scenario, manifests) = Scenario::start("mf-schedule", "scheduled.py", &[]);
    assert!(manifests.contains("kind: Schedule"), "{manifests}");
    assert!(manifests.contains("cron: 0 0 * * *"), "{manifests}");
    wait_ready(&scenario.ns.name, &format!("schedule/{}", scenario.flow));
    let run_id = scenario.run("scheduled-1", "{}", "Succeeded");
    let read = read_with_metaflow(&scenario.root(), &format!("ScheduledFlow/{run_id}"), READER);
    assert_eq!(data(&read, "process")[0]["result"], 10, "{read:#}");
}

#[test]
fn an_edited_flow_reimported_publishes_a_new_version_that_runs_the_new_code() {
    install_crds();
    let ns = TestNamespace::create("mf-edit");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    let dir = std::env::temp_dir().join(unique_name("mf-edit"));
    std::fs::create_dir_all(&dir).expect("folder");
    let file = dir.join("hello_batch.py");
    let original = std::fs::read_to_string(example("hello_batch.py")).expect("example");
    std::fs::write(&file, &original).expect("written");
    let first = import(&file, &ns.name, &[]).expect("imports");
    apply(&ns.name, &first);
    let flow = "flow/hello-batch-flow";
    wait_ready(&ns.name, flow);
    let version = jsonpath(&ns.name, flow, "{.status.stateMachineVersion}");
    let code = |manifests: &str| {
        manifests
            .lines()
            .find_map(|l| l.trim().strip_prefix("flowline.io/metaflow-code: "))
            .expect("a code package")
            .to_owned()
    };
    // The same code imported again is the same manifest: nothing changes.
    assert_eq!(import(&file, &ns.name, &[]).expect("imports"), first);
    std::fs::write(&file, original.replace(".upper()", ".upper() + \"!\"")).expect("edited");
    let second = import(&file, &ns.name, &[]).expect("imports");
    assert_ne!(code(&first), code(&second), "a new package for new code");
    apply(&ns.name, &second);
    wait_for("a new state machine version", TIMEOUT, || {
        let now = jsonpath(&ns.name, flow, "{.status.stateMachineVersion}");
        (now != version && !now.is_empty() && condition(&ns.name, flow, "Ready").0 == "True")
            .then_some(())
    });
    apply(&ns.name, &run("edited-1", "hello-batch-flow", "{}"));
    wait_ended(&ns.name, "edited-1", "Succeeded");
    let run_id = metaflow_run_id(&ns.name, "edited-1");
    let root = format!("{S3_ROOT}/{}/hello-batch-flow", ns.name);
    let read = read_with_metaflow(&root, &format!("HelloBatchFlow/{run_id}"), READER);
    assert_eq!(
        data(&read, "compute_step")[0]["result"],
        "HELLO HELLO!",
        "{read:#}"
    );
}

#[test]
fn flows_metaflow_rejects_or_flowline_cannot_express_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(unique_name("mf-bad"));
    std::fs::create_dir_all(&dir).expect("folder");
    let cases = [
        (
            "unbalanced.py",
            "from metaflow import FlowSpec, step\nclass BadFlow(FlowSpec):\n    @step\n    def start(self):\n        self.next(self.a, self.b)\n    @step\n    def a(self):\n        self.next(self.end)\n    @step\n    def b(self):\n        self.next(self.end)\n    @step\n    def end(self):\n        pass\n",
            "Metaflow's linter rejects the flow",
        ),
        (
            "conda.py",
            "from metaflow import FlowSpec, step, conda\nclass CondaFlow(FlowSpec):\n    @conda(packages={'pandas': '2.2.2'})\n    @step\n    def start(self):\n        self.next(self.end)\n    @step\n    def end(self):\n        pass\n",
            "@conda",
        ),
        (
            "project.py",
            "from metaflow import FlowSpec, step, project\n@project(name='p')\nclass ProjectFlow(FlowSpec):\n    @step\n    def start(self):\n        self.next(self.end)\n    @step\n    def end(self):\n        pass\n",
            "@project",
        ),
    ];
    for (file, source, reason) in cases {
        let path = dir.join(file);
        std::fs::write(&path, source).expect("written");
        let error = import(&path, "default", &[]).expect_err("refused");
        assert!(error.contains(reason), "{file}: {error}");
    }
}

/// Prints (asserts nothing about) what running a step through Flowline costs beyond plain
/// Metaflow: each Batch job of the same 3-step flow (fetch the code package, the entrypoint,
/// `init` for start, Metaflow's `step`, logs and metadata to S3) against the per-task time of
/// `python flow.py run` on the same machine with a local datastore.
#[tokio::test]
async fn entrypoint_overhead_per_task_is_printed() {
    let (scenario, _) = Scenario::start("mf-overhead", "scheduled.py", &[]);
    scenario.run("overhead-1", "{}", "Succeeded");
    let ids = jsonpath(
        &scenario.ns.name,
        "run/overhead-1",
        "{range .status.steps[*]}{.jobIds[*]} {end}",
    );
    let batch = aws_sdk_batch::Client::new(&aws_exec_config().await);
    let jobs = batch
        .describe_jobs()
        .set_jobs(Some(ids.split_whitespace().map(str::to_owned).collect()))
        .send()
        .await
        .expect("jobs are described");
    let durations: Vec<f64> = jobs
        .jobs()
        .iter()
        .filter_map(|job| Some((job.stopped_at()? - job.started_at()?) as f64 / 1000.0))
        .collect();
    let flowline = durations.iter().sum::<f64>() / durations.len().max(1) as f64;

    let dir = std::env::temp_dir().join(unique_name("mf-local"));
    std::fs::create_dir_all(&dir).expect("folder");
    let begun = std::time::Instant::now();
    let local = Command::new(runtime_python())
        .arg(example("scheduled.py"))
        .args([
            "--no-pylint",
            "--datastore=local",
            "--metadata=local",
            "run",
        ])
        .current_dir(&dir)
        .env("METAFLOW_USER", "bench")
        .output()
        .expect("metaflow runs");
    let local_elapsed = begun.elapsed().as_secs_f64();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    println!(
        "metaflow task overhead: Flowline Batch job (package, entrypoint, step, logs, metadata) {flowline:.2} s per task ({} jobs: {durations:.2?}); plain `python flow.py run` locally {:.2} s per task ({local_elapsed:.2} s for 3 tasks and the run's start)",
        durations.len(),
        local_elapsed / 3.0
    );
}
