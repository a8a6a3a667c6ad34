//! A Run's artifacts as its status and `flowline artifacts` give them, on the emulator that
//! runs each job's command: the status of a Flow in the task runtime is read from its tasks'
//! `_task.json` manifests with no listing, marks what a failed attempt stored, and
//! `flowline artifacts ls|get|put` lists what the status lists, downloads the same bytes and
//! stores with the Flow's encryption.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_exec_config, env, install_crds, kubectl,
};
use crate::task_side::{apply, run, s3_client, wait_ended, walk};

fn flow(name: &str, spec: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": name},
        "spec": spec
    })
    .to_string()
}

/// The bucket and key of an object's URI.
fn object_of(uri: &str) -> (&str, &str) {
    uri.trim_start_matches("s3://")
        .split_once('/')
        .expect("s3://bucket/key")
}

fn status(namespace: &str, run: &str) -> serde_json::Value {
    let json = kubectl(&["get", "run", run, "-n", namespace, "-o", "json"], None).ok();
    serde_json::from_str::<serde_json::Value>(&json).expect("the Run is JSON")["status"].clone()
}

fn step<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("step {name} in {status:#}"))
}

/// `flowline artifacts …` as a person would run it: the cluster from KUBECONFIG, the S3
/// settings of the controller from its variables.
fn cli(args: &[&str]) -> String {
    let endpoint = env().aws_exec_endpoint.as_str();
    let output = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .arg("artifacts")
        .args(args)
        .env("KUBECONFIG", &env().kubeconfig)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("FLOWLINE_S3_ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", "ARTIFACTSCLI")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("flowline runs");
    assert!(
        output.status.success(),
        "flowline artifacts {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test]
async fn a_wrapped_runs_status_lists_artifacts_from_manifests_and_the_cli_lists_gets_and_puts_them()
{
    install_crds();
    let ns = TestNamespace::create("artifacts");
    let controller = ControllerProcess::start_exec(&ns.name, &[]);
    let writes = r#"import os, pathlib
out = pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"])
(out / "model.txt").write_text("weights of " + os.environ["FLOWLINE_STEP"])
(out / "deep").mkdir()
(out / "deep" / "bytes.bin").write_bytes(bytes(range(256)) * 3)
"#;
    let fails = r#"import os, pathlib, sys
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "partial.txt").write_text("half done")
sys.exit(3)
"#;
    let steps = |first: &str| {
        serde_json::json!([
            {"name": "start", "command": ["python3", "-c", first], "next": ["square"]},
            {"name": "square", "command": ["python3", "-c", writes], "next": ["end"]},
            {"name": "end", "command": ["true"]}
        ])
    };
    apply(
        &ns.name,
        &flow(
            "pipeline",
            serde_json::json!({
                "taskRuntime": true,
                "datastore": {"serverSideEncryption": "AES256"},
                "steps": steps(writes)
            }),
        ),
    );
    apply(
        &ns.name,
        &flow(
            "breaks",
            serde_json::json!({"taskRuntime": true, "steps": steps(fails)}),
        ),
    );
    apply(&ns.name, &run("pipeline-1", "pipeline", "{}"));
    apply(&ns.name, &run("breaks-1", "breaks", "{}"));
    wait_ended(&ns.name, "pipeline-1", "Succeeded");
    wait_ended(&ns.name, "breaks-1", "Failed");

    // The status: each output and each manifest, by task, from the manifests.
    let done = status(&ns.name, "pipeline-1");
    let root = done["artifactRoot"]
        .as_str()
        .expect("artifactRoot")
        .to_owned();
    let square = step(&done, "square");
    let names: Vec<&str> = square["artifacts"]
        .as_array()
        .expect("artifacts listed")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["0/_task.json", "0/deep/bytes.bin", "0/model.txt"],
        "{square:#}"
    );
    assert_eq!(square["artifactCount"], 3, "{square:#}");
    assert_eq!(square["artifacts"][1]["size"], 768, "{square:#}");
    assert_eq!(
        square["artifacts"][2]["uri"],
        format!("{root}/square/0/model.txt")
    );
    assert!(
        square["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.get("failedAttempt").is_none()),
        "{square:#}"
    );
    assert_eq!(step(&done, "end")["artifacts"][0]["name"], "0/_task.json");

    // A failed attempt's objects say so.
    let failed = status(&ns.name, "breaks-1");
    let start = step(&failed, "start");
    assert_eq!(start["phase"], "Failed", "{start:#}");
    let marked: Vec<(&str, bool)> = start["artifacts"]
        .as_array()
        .expect("a failed step's artifacts are listed")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default(),
                a["failedAttempt"] == true,
            )
        })
        .collect();
    assert_eq!(
        marked,
        [("0/_task.json", true), ("0/partial.txt", true)],
        "{start:#}"
    );

    // Read from manifests: the controller listed nothing.
    let requests = controller.aws_requests();
    assert!(
        requests
            .iter()
            .any(|(op, n)| op.ends_with("GetObject") && *n > 0),
        "the manifests were read: {requests:?}"
    );
    assert!(
        !requests.keys().any(|op| op.ends_with("ListObjectsV2")),
        "no listing for wrapped steps: {requests:?}"
    );

    // `ls` lists what the status lists.
    let listed: BTreeSet<String> = cli(&["ls", "run/pipeline-1", "-n", &ns.name])
        .lines()
        .map(|line| line.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    let in_status: BTreeSet<String> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["artifacts"].as_array().cloned().unwrap_or_default())
        .map(|a| a["uri"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(listed, in_status);
    let square_listed = cli(&["ls", "run/pipeline-1", "-n", &ns.name, "--step", "square"]);
    assert!(
        square_listed.contains(&format!("{root}/square/0/deep/bytes.bin\t768")),
        "{square_listed}"
    );

    // `get` downloads the bytes S3 holds, at their paths under the addressed prefix.
    let config = aws_exec_config().await;
    let s3 = s3_client(&config);
    let out = tempfile::tempdir().expect("a temp dir");
    let step_dir = out.path().join("step");
    cli(&[
        "get",
        "run/pipeline-1",
        "-n",
        &ns.name,
        "--step",
        "square",
        "-o",
        step_dir.to_str().unwrap(),
    ]);
    let mut got: Vec<String> = walk(&step_dir)
        .iter()
        .map(|p| p.strip_prefix(&step_dir).unwrap().display().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["0/_task.json", "0/deep/bytes.bin", "0/model.txt"]);
    for name in &got {
        let uri = format!("{root}/square/{name}");
        let (bucket, key) = object_of(&uri);
        let stored = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("the object is read")
            .body
            .collect()
            .await
            .expect("the body is read")
            .to_vec();
        assert_eq!(
            std::fs::read(step_dir.join(name)).unwrap(),
            stored,
            "{name}"
        );
    }
    let task_dir = out.path().join("task");
    cli(&[
        "get",
        "run/pipeline-1",
        "-n",
        &ns.name,
        "--step",
        "square",
        "--task",
        "0",
        "-o",
        task_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(task_dir.join("model.txt")).unwrap(),
        "weights of square"
    );

    // `put` stores under the step's task with the Flow's encryption.
    let upload = out.path().join("notes.txt");
    std::fs::write(&upload, "reviewed").unwrap();
    let stored = cli(&[
        "put",
        "run/pipeline-1",
        "-n",
        &ns.name,
        "--step",
        "square",
        "--task",
        "review",
        upload.to_str().unwrap(),
    ]);
    let uri = format!("{root}/square/review/notes.txt");
    assert_eq!(stored.trim(), uri);
    let (bucket, key) = object_of(&uri);
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("the upload is stored");
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    assert_eq!(head.content_length(), Some(8));
    assert!(Path::new(&upload).exists());
}
