//! `flowline task` inside real task processes, on the emulator that runs each Batch job's
//! command with only what a container gets (the binary on PATH as an image would have it):
//! outputs written to `$FLOWLINE_OUTPUT_DIR` reach the join's `$FLOWLINE_INPUT_DIR` with no
//! S3 code in the steps, a failed step's outputs are stored with a manifest saying so, every
//! object carries the Flow's KMS encryption, and a binary secret arrives base64-encoded and
//! appears in no log.

use std::collections::BTreeSet;

use sha2::Digest;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_exec_config, env, install_crds, jsonpath, kubectl,
    tagged, unique_name,
};
use crate::task_side::{apply, run, s3_client, step_output, wait_ended, walk};

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `s3://flowline/data/<namespace>/<flow>/<run id>/<step>/0/`: the controller's default root.
fn task_prefix(namespace: &str, flow: &str, run: &str, step: &str) -> (String, String) {
    let execution = jsonpath(namespace, &format!("run/{run}"), "{.status.executionArn}");
    let run_id = execution.rsplit(':').next().expect("an execution name");
    (
        "flowline".to_owned(),
        format!("data/{namespace}/{flow}/{run_id}/{step}/0/"),
    )
}

async fn object(config: &aws_config::SdkConfig, bucket: &str, key: &str) -> Vec<u8> {
    s3_client(config)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|error| panic!("s3://{bucket}/{key} is read: {error:?}"))
        .body
        .collect()
        .await
        .expect("the body is read")
        .to_vec()
}

async fn manifest(config: &aws_config::SdkConfig, bucket: &str, prefix: &str) -> serde_json::Value {
    let bytes = object(config, bucket, &format!("{prefix}_task.json")).await;
    serde_json::from_slice(&bytes).expect("_task.json is JSON")
}

fn flow(name: &str, spec: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": name},
        "spec": spec
    })
    .to_string()
}

#[tokio::test]
async fn branch_outputs_reach_the_join_as_files_and_a_binary_secret_arrives_base64() {
    install_crds();
    let config = aws_exec_config().await;
    // Bytes that are no text, and a canary no other test uses.
    let mut secret_bytes = vec![0u8, 159, 146, 150, 255, 10];
    secret_bytes.extend(unique_name("cert-canary").into_bytes());
    let secret_b64 = aws_smithy_types::base64::encode(&secret_bytes);
    let secret = unique_name("tls-cert");
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(&secret)
        .secret_binary(aws_smithy_types::Blob::new(secret_bytes.clone()))
        .send()
        .await
        .expect("binary secret created");

    let ns = TestNamespace::create("task-wrapper");
    let controller = ControllerProcess::start_exec(&ns.name, &[]);
    let start = r#"import hashlib, os
print("CERT_SHA " + hashlib.sha256(os.environ["CERT"].encode()).hexdigest())
print("PATH_HAS_FLOWLINE " + str(any(os.path.exists(os.path.join(p, "flowline")) for p in os.environ["PATH"].split(":"))))
"#;
    let branch = r#"import os, pathlib, sys
out = pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"])
step = os.environ["FLOWLINE_STEP"]
(out / f"{step}.txt").write_text(f"from {step}")
(out / "deep" / "dir").mkdir(parents=True)
(out / "deep" / "dir" / f"{step}.bin").write_bytes(bytes(range(256)))
"#;
    let join = r#"import json, os, pathlib
inputs = pathlib.Path(os.environ["FLOWLINE_INPUT_DIR"])
print("JOINED " + (inputs / "a" / "a.txt").read_text() + "|" + (inputs / "b" / "b.txt").read_text())
print("INPUT_FILES " + json.dumps(sorted(str(p.relative_to(inputs)) for p in inputs.rglob("*") if p.is_file())))
"#;
    let python = |script: &str| serde_json::json!(["python3", "-c", script]);
    apply(
        &ns.name,
        &flow(
            "wrapped",
            serde_json::json!({
                "taskRuntime": true,
                "steps": [
                    {
                        "name": "start", "command": python(start), "next": ["a", "b"],
                        "secrets": [{"id": secret, "type": "binary", "envVarName": "CERT"}]
                    },
                    {"name": "a", "command": python(branch), "next": ["join"]},
                    {"name": "b", "command": python(branch), "next": ["join"]},
                    {"name": "join", "join": true, "command": python(join), "inputs": ["a", "b"], "next": ["end"]},
                    {"name": "end", "command": ["true"]}
                ]
            }),
        ),
    );
    apply(&ns.name, &run("wrapped-1", "wrapped", "{}"));
    wait_ended(&ns.name, "wrapped-1", "Succeeded");

    let started = step_output(&ns.name, "wrapped-1", "start");
    assert_eq!(
        tagged(&started, "CERT_SHA"),
        Some(sha256_hex(secret_b64.as_bytes()).as_str()),
        "the secret's bytes arrive base64-encoded: {started:#?}"
    );
    assert_eq!(tagged(&started, "PATH_HAS_FLOWLINE"), Some("True"));

    let joined = step_output(&ns.name, "wrapped-1", "join");
    assert_eq!(
        tagged(&joined, "JOINED"),
        Some("from a|from b"),
        "{joined:#?}"
    );
    let files: BTreeSet<String> =
        serde_json::from_str(tagged(&joined, "INPUT_FILES").expect("files listed")).expect("JSON");
    for file in [
        "a/a.txt",
        "a/deep/dir/a.bin",
        "a/_task.json",
        "b/b.txt",
        "b/deep/dir/b.bin",
        "b/_task.json",
    ] {
        assert!(files.contains(file), "{file} in {files:?}");
    }

    let (bucket, prefix) = task_prefix(&ns.name, "wrapped", "wrapped-1", "a");
    let stored = manifest(&config, &bucket, &prefix).await;
    assert_eq!(stored["outcome"], "succeeded", "{stored}");
    assert_eq!(stored["exitCode"], 0, "{stored}");
    assert_eq!(stored["attempt"], 1, "{stored}");
    assert_eq!(stored["step"], "a", "{stored}");
    let artifacts = stored["artifacts"].as_array().expect("artifacts");
    let bin = artifacts
        .iter()
        .find(|a| a["name"] == "deep/dir/a.bin")
        .expect("the nested output is listed");
    let content: Vec<u8> = (0..=255).collect();
    assert_eq!(bin["size"], 256);
    assert_eq!(bin["sha256"], sha256_hex(&content));
    assert_eq!(
        object(&config, &bucket, &format!("{prefix}deep/dir/a.bin")).await,
        content
    );

    // The value reached the task and nothing else: no log holds it, base64 or raw.
    let mut haystacks = vec![(
        "controller log".to_owned(),
        std::fs::read_to_string(&controller.log).unwrap_or_default(),
    )];
    for dir in ["logs", "exec-job-logs"] {
        for file in walk(&env().env_dir.join(dir)) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            haystacks.push((
                file.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    let yaml = kubectl(
        &["get", "runs,flows,events", "-n", &ns.name, "-o", "yaml"],
        None,
    )
    .stdout;
    haystacks.push(("kubectl get".into(), yaml));
    let canary = String::from_utf8_lossy(&secret_bytes[6..]).into_owned();
    for (place, text) in &haystacks {
        assert!(
            !text.contains(&secret_b64) && !text.contains(&canary),
            "the binary secret appears in {place}"
        );
    }
}

#[tokio::test]
async fn a_failed_step_keeps_what_it_wrote_and_its_manifest_says_it_failed() {
    install_crds();
    let ns = TestNamespace::create("task-wrapper-fail");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    let script = r#"import os, pathlib, sys
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "partial.txt").write_text("half done")
sys.exit(3)
"#;
    apply(
        &ns.name,
        &flow(
            "breaks",
            serde_json::json!({
                "taskRuntime": true,
                "steps": [
                    {"name": "start", "command": ["python3", "-c", script], "next": ["end"]},
                    {"name": "end", "command": ["true"]}
                ]
            }),
        ),
    );
    apply(&ns.name, &run("breaks-1", "breaks", "{}"));
    wait_ended(&ns.name, "breaks-1", "Failed");

    let config = aws_exec_config().await;
    let (bucket, prefix) = task_prefix(&ns.name, "breaks", "breaks-1", "start");
    assert_eq!(
        object(&config, &bucket, &format!("{prefix}partial.txt")).await,
        b"half done"
    );
    let stored = manifest(&config, &bucket, &prefix).await;
    assert_eq!(stored["outcome"], "failed", "{stored}");
    assert_eq!(stored["exitCode"], 3, "{stored}");
    assert_eq!(stored["artifacts"][0]["name"], "partial.txt", "{stored}");
    // The command's exit code reached Batch unchanged.
    let job = jsonpath(
        &ns.name,
        "run/breaks-1",
        "{.status.steps[?(@.name==\"start\")].jobIds[0]}",
    );
    let described = aws_sdk_batch::Client::new(&config)
        .describe_jobs()
        .jobs(&job)
        .send()
        .await
        .expect("the job is described");
    let exit_code = described.jobs()[0]
        .container()
        .and_then(|container| container.exit_code());
    assert_eq!(exit_code, Some(3), "{described:?}");
}

#[tokio::test]
async fn every_object_a_task_stores_carries_the_flows_kms_key() {
    install_crds();
    let ns = TestNamespace::create("task-wrapper-kms");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    let key = "alias/flowline-e2e";
    let script = r#"import os, pathlib
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "model.txt").write_text("weights")
"#;
    apply(
        &ns.name,
        &flow(
            "sealed",
            serde_json::json!({
                "taskRuntime": true,
                "datastore": {"serverSideEncryption": "aws:kms", "kmsKeyId": key},
                "steps": [
                    {"name": "start", "command": ["python3", "-c", script], "next": ["end"]},
                    {"name": "end", "command": ["true"]}
                ]
            }),
        ),
    );
    apply(&ns.name, &run("sealed-1", "sealed", "{}"));
    wait_ended(&ns.name, "sealed-1", "Succeeded");

    let config = aws_exec_config().await;
    let (bucket, prefix) = task_prefix(&ns.name, "sealed", "sealed-1", "start");
    for name in ["model.txt", "_task.json"] {
        let head = s3_client(&config)
            .head_object()
            .bucket(&bucket)
            .key(format!("{prefix}{name}"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{name} is stored: {error:?}"));
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms),
            "{name}"
        );
        assert_eq!(head.ssekms_key_id(), Some(key), "{name}");
    }
}

#[tokio::test]
async fn a_foreach_list_is_checked_before_the_fan_out_and_the_join_gets_a_folder_per_task() {
    install_crds();
    let ns = TestNamespace::create("task-wrapper-foreach");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    let split = r#"import json, os, pathlib
items = json.loads(os.environ["ITEMS"])
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "items.json").write_text(json.dumps(items))
"#;
    let body = r#"import json, os, pathlib
value = json.loads(os.environ["FLOWLINE_FOREACH_VALUE"])
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "square.txt").write_text(str(value * value))
"#;
    let join = r#"import os, pathlib
inputs = pathlib.Path(os.environ["FLOWLINE_INPUT_DIR"]) / "body"
print("SQUARES " + ",".join(sorted(p.read_text() for p in inputs.glob("*/square.txt"))))
"#;
    let python = |script: &str| serde_json::json!(["python3", "-c", script]);
    for (name, items) in [("fans", "[1, 2, 3]"), ("nofan", "{\"not\": \"a list\"}")] {
        apply(
            &ns.name,
            &flow(
                name,
                serde_json::json!({
                    "taskRuntime": true,
                    "steps": [
                        {
                            "name": "start", "command": python(split), "next": ["body"],
                            "foreach": {"artifact": "items.json"},
                            "env": [{"name": "ITEMS", "value": items}]
                        },
                        {"name": "body", "command": python(body), "next": ["join"]},
                        {"name": "join", "join": true, "command": python(join), "inputs": ["*"], "next": ["end"]},
                        {"name": "end", "command": ["true"]}
                    ]
                }),
            ),
        );
        apply(&ns.name, &run(&format!("{name}-1"), name, "{}"));
    }
    wait_ended(&ns.name, "fans-1", "Succeeded");
    let joined = step_output(&ns.name, "fans-1", "join");
    assert_eq!(tagged(&joined, "SQUARES"), Some("1,4,9"), "{joined:#?}");

    wait_ended(&ns.name, "nofan-1", "Failed");
    let config = aws_exec_config().await;
    let (bucket, prefix) = task_prefix(&ns.name, "nofan", "nofan-1", "start");
    let stored = manifest(&config, &bucket, &prefix).await;
    assert_eq!(stored["outcome"], "failed", "{stored}");
    assert_eq!(
        stored["exitCode"], 0,
        "the command itself succeeded: {stored}"
    );
    let errors = stored["errors"].to_string();
    assert!(
        errors.contains("must be a JSON array, not an object"),
        "{stored}"
    );
    let started = step_output(&ns.name, "nofan-1", "start");
    assert!(
        started
            .iter()
            .any(|line| line.contains("flowline task: the foreach list items.json")),
        "the reason is in the task's log: {started:#?}"
    );
}

#[test]
fn across_a_nested_foreach_each_inner_join_reads_only_its_own_outer_iterations_files() {
    install_crds();
    let ns = TestNamespace::create("task-wrapper-nested");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    // start fans out over two letters; each letter fans out over two numbers. A cell reads its
    // letter from the split it iterates over, the inner join of a letter must see its own two
    // cells and no other letter's, and the outer join sees each letter's row.
    let letters = r#"import json, os, pathlib
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "letters.json").write_text(json.dumps(["a", "b"]))
"#;
    let split = r#"import json, os, pathlib
out = pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"])
(out / "letter.txt").write_text(json.loads(os.environ["FLOWLINE_FOREACH_VALUE"]))
(out / "numbers.json").write_text(json.dumps([1, 2]))
"#;
    let cell = r#"import os, pathlib
inputs = pathlib.Path(os.environ["FLOWLINE_INPUT_DIR"])
[letter] = [p.read_text() for p in inputs.glob("split/*/letter.txt")]
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "cell.txt").write_text(letter + os.environ["FLOWLINE_FOREACH_VALUE"])
"#;
    let inner_join = r#"import os, pathlib
inputs = pathlib.Path(os.environ["FLOWLINE_INPUT_DIR"])
cells = sorted(p.read_text() for p in inputs.glob("cell/*/cell.txt"))
folders = sorted(p.name for p in (inputs / "cell").iterdir())
print("INNER " + os.environ["FLOWLINE_TASK_ID"] + " " + ",".join(cells) + " " + ",".join(folders))
(pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "row.txt").write_text("".join(cells))
"#;
    let outer_join = r#"import os, pathlib
inputs = pathlib.Path(os.environ["FLOWLINE_INPUT_DIR"])
print("OUTER " + ",".join(sorted(p.read_text() for p in inputs.glob("inner_join/*/row.txt"))))
"#;
    let python = |script: &str| serde_json::json!(["python3", "-c", script]);
    apply(
        &ns.name,
        &flow(
            "nested",
            serde_json::json!({
                "taskRuntime": true,
                "steps": [
                    {"name": "start", "command": python(letters), "next": ["split"],
                     "foreach": {"artifact": "letters.json"}},
                    {"name": "split", "command": python(split), "next": ["cell"],
                     "foreach": {"artifact": "numbers.json"}},
                    {"name": "cell", "command": python(cell), "inputs": ["split"], "next": ["inner_join"]},
                    {"name": "inner_join", "join": true, "command": python(inner_join),
                     "inputs": ["cell"], "next": ["outer_join"]},
                    {"name": "outer_join", "join": true, "command": python(outer_join),
                     "inputs": ["inner_join"], "next": ["end"]},
                    {"name": "end", "command": ["true"]}
                ]
            }),
        ),
    );
    apply(&ns.name, &run("nested-1", "nested", "{}"));
    wait_ended(&ns.name, "nested-1", "Succeeded");

    let inner_joins: BTreeSet<String> = step_output(&ns.name, "nested-1", "inner_join")
        .iter()
        .filter_map(|line| line.strip_prefix("INNER ").map(str::to_owned))
        .collect();
    assert_eq!(
        inner_joins,
        BTreeSet::from([
            "0-0 a1,a2 0-0-0,0-0-1".to_owned(),
            "0-1 b1,b2 0-1-0,0-1-1".to_owned()
        ]),
        "each inner join gets its own letter's two cells, in folders named by task id"
    );
    let outer = step_output(&ns.name, "nested-1", "outer_join");
    assert_eq!(tagged(&outer, "OUTER"), Some("a1a2,b1b2"), "{outer:#?}");
}

#[test]
fn every_node_writes_its_own_folder_and_the_join_reads_them_all() {
    install_crds();
    let ns = TestNamespace::create("task-wrapper-nodes");
    let _controller = ControllerProcess::start_exec(&ns.name, &[]);
    let shard = r#"import os, pathlib
node = os.environ["AWS_BATCH_JOB_NODE_INDEX"]
out = pathlib.Path(os.environ["FLOWLINE_OUTPUT_DIR"]) / "shards"
out.mkdir()
(out / f"shard-{node}.txt").write_text(f"node {node} of {os.environ['AWS_BATCH_JOB_NUM_NODES']}")
"#;
    let gather = r#"import os, pathlib
inputs = pathlib.Path(os.environ["FLOWLINE_INPUT_DIR"])
print("NODES " + ",".join(sorted(p.name for p in (inputs / "train").iterdir())))
print("SHARDS " + "|".join(p.read_text() for p in sorted(inputs.glob("train/*/shards/*.txt"))))
"#;
    apply(
        &ns.name,
        &flow(
            "gang-files",
            serde_json::json!({
                "taskRuntime": true,
                "steps": [
                    {"name": "start", "command": ["true"], "next": ["train"]},
                    {"name": "train", "command": ["python3", "-c", shard],
                     "parallel": {"numNodes": 3}, "next": ["gather"]},
                    {"name": "gather", "join": true, "command": ["python3", "-c", gather],
                     "inputs": ["train"], "next": ["end"]},
                    {"name": "end", "command": ["true"]}
                ]
            }),
        ),
    );
    apply(&ns.name, &run("gang-files-1", "gang-files", "{}"));
    wait_ended(&ns.name, "gang-files-1", "Succeeded");
    let gathered = step_output(&ns.name, "gang-files-1", "gather");
    assert_eq!(
        tagged(&gathered, "NODES"),
        Some("0-node-0,0-node-1,0-node-2"),
        "{gathered:#?}"
    );
    assert_eq!(
        tagged(&gathered, "SHARDS"),
        Some("node 0 of 3|node 1 of 3|node 2 of 3"),
        "{gathered:#?}"
    );
}
