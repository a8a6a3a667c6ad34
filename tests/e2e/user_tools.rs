//! The user's tools, as a person runs them (`kubectl flowline …`, the `kubectl-flowline`
//! binary): `run --wait` follows a Run to its end and exits by its outcome, `logs` prints what
//! a step printed (from the emulator's CloudWatch Logs), `graph` draws a finished Run, and
//! `resume` re-runs a failed Run from its failed step, reusing the steps before it.

use std::process::{Command, Output};

use crate::harness::{
    ControllerProcess, TestNamespace, aws_exec_config, env, install_crds, jsonpath, kubectl,
};
use crate::task_side::{apply, s3_client};

/// `kubectl-flowline ARGS -n NAMESPACE` against the cluster and the exec-mode emulator.
fn plugin(namespace: &str, args: &[&str]) -> Output {
    let endpoint = env().aws_exec_endpoint.as_str();
    Command::new(env!("CARGO_BIN_EXE_kubectl-flowline"))
        .args(args)
        .args(["-n", namespace])
        .env("KUBECONFIG", &env().kubeconfig)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "USERTOOLSCLI")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("kubectl-flowline runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn flow(name: &str, steps: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": name},
        "spec": {"taskRuntime": true, "steps": steps}
    })
    .to_string()
}

/// A step that prints a line, reads its parent's file (when it has one) and writes its own.
fn step(name: &str, parent: Option<&str>, next: Option<&str>, fails: bool) -> serde_json::Value {
    let script = format!(
        r#"import os, pathlib, sys
step = os.environ["FLOWLINE_STEP"]
print("hello from", step, "attempt", os.environ.get("AWS_BATCH_JOB_ATTEMPT", "?"), flush=True)
parent = {parent:?}
if parent != "None":
    got = (pathlib.Path(os.environ["FLOWLINE_INPUT_DIR"]) / parent / "trail.txt").read_text()
    print("read", got.strip(), flush=True)
else:
    got = ""
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "trail.txt").write_text(got.strip() + " " + step)
if {fails}:
    print("giving up in", step, flush=True)
    sys.exit(4)
"#,
        parent = parent.unwrap_or("None"),
        fails = if fails { "True" } else { "False" },
    );
    let mut value = serde_json::json!({"name": name, "command": ["python3", "-c", script]});
    if let Some(next) = next {
        value["next"] = serde_json::json!([next]);
    }
    if let Some(parent) = parent {
        value["inputs"] = serde_json::json!([parent]);
    }
    value
}

/// `start → b → c → d → end`, step `c` failing when told to.
fn five_steps(c_fails: bool) -> serde_json::Value {
    serde_json::json!([
        step("start", None, Some("b"), false),
        step("b", Some("start"), Some("c"), false),
        step("c", Some("b"), Some("d"), c_fails),
        step("d", Some("c"), Some("end"), false),
        step("end", Some("d"), None, false),
    ])
}

/// The name of the Run the plugin created (`run/NAME created …`).
fn created(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("run/"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Run created in {output}"))
        .to_owned()
}

fn status(namespace: &str, run: &str) -> serde_json::Value {
    let json = kubectl(&["get", "run", run, "-n", namespace, "-o", "json"], None).ok();
    serde_json::from_str::<serde_json::Value>(&json).expect("the Run is JSON")["status"].clone()
}

fn step_status<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("step {name} in {status:#}"))
}

#[tokio::test]
async fn run_wait_follows_a_run_to_its_end_and_logs_and_graph_show_what_happened() {
    install_crds();
    let ns = TestNamespace::create("usertools");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    apply(&ns.name, &flow("fine", five_steps(false)));
    apply(&ns.name, &flow("broken", five_steps(true)));

    // A succeeding Flow: exit 0, every step in the final table, a generated name.
    let ok = plugin(&ns.name, &["run", "fine", "--wait"]);
    let text = stdout(&ok);
    assert!(
        ok.status.success(),
        "run --wait of a succeeding Flow: {text}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let fine_run = created(&text);
    assert!(fine_run.starts_with("fine-"), "{fine_run}");
    assert!(
        text.contains(&format!("Run {fine_run} Succeeded")),
        "{text}"
    );
    for name in ["start", "b", "c", "d", "end"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("Succeeded")),
            "step {name} in the final table:\n{text}"
        );
    }
    eprintln!("{text}");
    // Not a terminal: plain lines, no progress bar control characters.
    assert!(!text.contains('\r') && !text.contains("\x1b["), "{text:?}");

    // A failing Flow: exit 1, the failed step in the table.
    let failed = plugin(&ns.name, &["run", "broken", "--wait"]);
    let text = stdout(&failed);
    assert_eq!(failed.status.code(), Some(1), "{text}");
    let broken_run = created(&text);
    assert!(text.contains(&format!("Run {broken_run} Failed")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("c ") && l.contains("Failed")),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("d ")),
        "d never ran: {text}"
    );

    // `get runs`: both, with their phase.
    let listed = stdout(&plugin(&ns.name, &["get", "runs"]));
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&fine_run) && l.contains("Succeeded") && l.contains("5/5")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&broken_run) && l.contains("Failed")),
        "{listed}"
    );

    // `logs`: what step c printed, from CloudWatch Logs.
    let logs = plugin(&ns.name, &["logs", &broken_run, "--step", "c"]);
    let printed = stdout(&logs);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(printed.contains("hello from c attempt"), "{printed}");
    assert!(printed.contains("read start b"), "{printed}");
    assert!(printed.contains("giving up in c"), "{printed}");
    assert!(!printed.contains("hello from b"), "only step c: {printed}");
    let task = stdout(&plugin(
        &ns.name,
        &["logs", &broken_run, "--step", "b", "--task", "0"],
    ));
    assert!(task.contains("hello from b"), "{task}");
    let all = stdout(&plugin(&ns.name, &["logs", &fine_run]));
    for name in ["start", "b", "c", "d", "end"] {
        assert!(
            all.contains(&format!("[{name}] hello from {name}")),
            "{all}"
        );
    }

    // `graph -o svg`: one node per step, coloured by its phase.
    let drawn = plugin(
        &ns.name,
        &["graph", &format!("run/{broken_run}"), "-o", "svg"],
    );
    let svg = stdout(&drawn);
    assert!(
        drawn.status.success(),
        "{}",
        String::from_utf8_lossy(&drawn.stderr)
    );
    resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default())
        .expect("graph -o svg is an SVG a renderer reads");
    assert_eq!(svg.matches(r#"<g class="step""#).count(), 5, "{svg}");
    for (name, phase) in [
        ("start", "Succeeded"),
        ("b", "Succeeded"),
        ("c", "Failed"),
        ("d", "not run"),
        ("end", "not run"),
    ] {
        assert!(
            svg.contains(&format!(r#"data-step="{name}" data-phase="{phase}""#)),
            "{name} {phase}: {svg}"
        );
    }
    assert!(svg.contains("#c62828"), "the failed step is red");
    assert!(svg.contains("#2e7d32"), "the succeeded steps are green");
    let png = env().env_dir.join(format!("{broken_run}.png"));
    let out = plugin(
        &ns.name,
        &[
            "graph",
            &format!("run/{broken_run}"),
            "-o",
            "png",
            "--out",
            png.to_str().expect("UTF-8 path"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("the PNG is written");
    assert_eq!(&bytes[1..4], b"PNG");
}

#[tokio::test]
async fn a_run_failing_at_step_3_of_5_resumed_from_step_3_runs_only_steps_3_to_5() {
    install_crds();
    let ns = TestNamespace::create("resume");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    apply(&ns.name, &flow("pipeline", five_steps(true)));
    let failed = plugin(&ns.name, &["run", "pipeline", "--wait"]);
    assert_eq!(failed.status.code(), Some(1), "{}", stdout(&failed));
    let original = created(&stdout(&failed));

    // Resuming from a step after the failed one is refused: `c` did not succeed.
    let refused = plugin(&ns.name, &["resume", &original, "--from", "d", "--wait"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    let refused_run = created(&stdout(&refused));
    assert_eq!(
        jsonpath(
            &ns.name,
            &format!("run/{refused_run}"),
            "{.status.conditions[?(@.type==\"Stalled\")].reason}"
        ),
        "ResumeRefused"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("step `c` comes before `d`"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Fix step c (the graph stays the same) and resume from it, by default the failed step.
    apply(&ns.name, &flow("pipeline", five_steps(false)));
    crate::harness::wait_for(
        "the fixed Flow to be Ready",
        std::time::Duration::from_secs(60),
        || {
            (jsonpath(&ns.name, "flow/pipeline", "{.status.observedGeneration}") == "2"
                && jsonpath(
                    &ns.name,
                    "flow/pipeline",
                    "{.status.conditions[?(@.type==\"Ready\")].status}",
                ) == "True")
                .then_some(())
        },
    );
    let resumed = plugin(&ns.name, &["resume", &original, "--wait"]);
    let text = stdout(&resumed);
    assert!(
        resumed.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(text.contains("from step c"), "{text}");
    let run = created(&text);
    let done = status(&ns.name, &run);
    assert_eq!(done["phase"], "Succeeded", "{done:#}");

    // Steps 1–2 are reused (no job of their own), 3–5 ran.
    for name in ["start", "b"] {
        let step = step_status(&done, name);
        assert_eq!(step["reusedFrom"], original.as_str(), "{done:#}");
        assert_eq!(step["phase"], "Succeeded", "{done:#}");
        assert!(
            step["jobIds"].is_null(),
            "{name} did not run again: {done:#}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("Reused")),
            "{text}"
        );
    }
    for name in ["c", "d", "end"] {
        let step = step_status(&done, name);
        assert_eq!(step["phase"], "Succeeded", "{done:#}");
        assert!(step["reusedFrom"].is_null(), "{done:#}");
        assert_eq!(
            step["jobIds"].as_array().map(Vec::len),
            Some(1),
            "{name} ran once: {done:#}"
        );
    }
    assert_eq!(done["steps"].as_array().map(Vec::len), Some(5), "{done:#}");

    // The reused artifacts are under the new Run's prefix, and step c read b's from there.
    let root = done["artifactRoot"].as_str().expect("artifactRoot");
    assert!(!root.ends_with(&original), "a prefix of its own: {root}");
    let config = aws_exec_config().await;
    let (bucket, prefix) = flowline::compile::state_machine::split_s3(root);
    let s3 = s3_client(&config);
    for name in ["start", "b"] {
        let key = format!("{prefix}{name}/0/trail.txt");
        let object = s3
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("s3://{bucket}/{key}: {e:?}"));
        let body = object.body.collect().await.expect("body").into_bytes();
        let expected = if name == "start" { "start" } else { "start b" };
        assert_eq!(String::from_utf8_lossy(&body).trim(), expected);
        let listed = step_status(&done, name)["artifacts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["uri"].as_str())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        assert!(
            listed.contains(&format!("s3://{bucket}/{key}").as_str()),
            "the status lists the copied artifact: {listed:?}"
        );
    }
    let end = s3
        .get_object()
        .bucket(&bucket)
        .key(format!("{prefix}end/0/trail.txt"))
        .send()
        .await
        .expect("end wrote its trail");
    let trail = end.body.collect().await.expect("body").into_bytes();
    assert_eq!(String::from_utf8_lossy(&trail).trim(), "start b c d end");
    let printed = stdout(&plugin(&ns.name, &["logs", &run, "--step", "c"]));
    assert!(printed.contains("read start b"), "{printed}");

    // The picture shows the reused steps as such.
    let svg = stdout(&plugin(&ns.name, &["graph", &run, "-o", "svg"]));
    assert!(
        svg.contains(r#"data-step="b" data-phase="Reused""#),
        "{svg}"
    );
    let png = env().env_dir.join(format!("{run}.png"));
    let path = png.to_str().expect("UTF-8 path");
    assert!(
        plugin(&ns.name, &["graph", &run, "-o", "png", "--out", path])
            .status
            .success()
    );
    eprintln!("{text}\n{}", stdout(&plugin(&ns.name, &["get", "runs"])));
}

/// The manifest of the README's "Your first Flow", as written there.
fn readme_first_flow() -> String {
    let readme =
        std::fs::read_to_string(crate::harness::repo_root().join("README.md")).expect("README.md");
    let section = readme
        .split("## Your first Flow")
        .nth(1)
        .expect("the README has a section \"Your first Flow\"");
    section
        .split("```yaml\n")
        .nth(1)
        .and_then(|block| block.split("\n```").next())
        .expect("the section starts with a Flow manifest")
        .to_owned()
}

#[tokio::test]
async fn the_readmes_first_flow_runs_as_written_and_its_logs_show_the_sum() {
    install_crds();
    let ns = TestNamespace::create("firstflow");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    apply(&ns.name, &readme_first_flow());
    let ran = plugin(&ns.name, &["run", "squares", "-p", "count=4", "--wait"]);
    let text = stdout(&ran);
    assert!(
        ran.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(text.contains("foreach 4/4 done"), "{text}");
    let run = created(&text);
    let total = stdout(&plugin(&ns.name, &["logs", &run, "--step", "total"]));
    assert!(total.contains("sum of squares: 30"), "{total}");
    let squares = stdout(&plugin(&ns.name, &["logs", &run, "--step", "square"]));
    for n in 1..=4 {
        assert!(
            squares.contains(&format!("{n} squared is {}", n * n)),
            "{squares}"
        );
    }
    let graph = stdout(&plugin(&ns.name, &["graph", &run]));
    assert!(graph.contains("[foreach]"), "{graph}");
    assert!(graph.contains("4/4 tasks"), "{graph}");
}
