//! The policies `flowline iam-policy` prints are enough, proven on an emulator that enforces
//! IAM like AWS (`--enforce-iam`) and runs each job's command: the controller runs as an IAM
//! user with exactly the controller policy, state machines as the Step Functions role, rules as
//! the EventBridge role and tasks as the job role, each with exactly what iam-policy prints for
//! it. A Flow with a branch and a join whose tasks write artifacts and read a secret runs to
//! Succeeded, a Schedule's rule starts a Run that succeeds, and deleting everything removes
//! what it made, with no access denied anywhere. Enforcement is shown to be live, so the suite
//! cannot pass because nothing is checked.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{
    ControllerProcess, TestNamespace, condition, iam_emulator, install_crds, jsonpath, kubectl,
    repo_root, tagged, task_output, wait_for, wait_for_async,
};

/// Jobs are real processes here (Python starts, boto3 imports): give them time.
const TIMEOUT: Duration = Duration::from_secs(180);
const ACCOUNT: &str = "123456789012";
const BUCKET: &str = "flowline-iam";
const QUEUE: &str = "flowline-iam";
/// A plaintext secret one step binds.
const SECRET: &str = "flowline-iam-api-token";
const SECRET_VALUE: &str = "iam-canary-token";
const CONTROLLER_USER: &str = "flowline-controller";
/// A controller user refused DescribeSecret and DeleteStateMachine on top of its policy.
const DENIED_USER: &str = "flowline-controller-denied";
/// The emulator's administrator (hack/moto/iam_mode.py), for set-up and inspection only.
const ADMIN_KEY: &str = "FLOWLINEADMINKEY0000";
const ADMIN_SECRET: &str = "flowline-admin-secret-key";

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// The controller's settings, given to `flowline iam-policy` as they are to the controller.
fn settings(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FLOWLINE_S3_ROOT", format!("s3://{BUCKET}/data")),
        ("FLOWLINE_JOB_QUEUE", QUEUE.to_owned()),
        ("FLOWLINE_JOB_ROLE", role_arn("flowline-job")),
        ("FLOWLINE_EXECUTION_ROLE", role_arn("flowline-execution")),
        ("FLOWLINE_STATES_ROLE", role_arn("flowline-states")),
        ("FLOWLINE_EVENTS_ROLE", role_arn("flowline-events")),
        ("FLOWLINE_NAME_PREFIX", "flowline-".to_owned()),
        ("FLOWLINE_AWS_ACCOUNT", ACCOUNT.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("FLOWLINE_S3_ENDPOINT", endpoint.to_owned()),
        ("FLOWLINE_S3_FORCE_PATH_STYLE", "true".to_owned()),
    ]
}

/// What `flowline iam-policy --role <role> --secret SECRET -o json` prints for one role.
fn iam_policy(role: &str, endpoint: &str) -> serde_json::Value {
    iam_policy_with_prefix(role, endpoint, "flowline-")
}

/// The same, for controller settings with another name prefix.
fn iam_policy_with_prefix(role: &str, endpoint: &str, prefix: &str) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args([
            "iam-policy",
            "--role",
            role,
            "--secret",
            SECRET,
            "-o",
            "json",
        ])
        .env_clear()
        .envs(settings(endpoint))
        .env("FLOWLINE_NAME_PREFIX", prefix)
        .output()
        .expect("flowline iam-policy runs");
    assert!(
        output.status.success(),
        "iam-policy --role {role}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("iam-policy prints JSON");
    let [policies] = printed.as_array().expect("a list of roles").as_slice() else {
        panic!("one role printed: {printed}")
    };
    policies.clone()
}

/// The emulator set up as a platform team would from iam-policy's output.
struct Platform {
    endpoint: String,
    controller_key: String,
    controller_secret: String,
    denied_key: String,
    denied_secret: String,
}

/// Sets up, once per test process: the bucket and queue, the four service roles with exactly
/// iam-policy's permissions and trust, the controller's IAM user with exactly the controller
/// policy, and the secret.
fn platform() -> &'static Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM.get_or_init(|| {
        let endpoint = iam_emulator().endpoint.clone();
        let role = |name: &str, printed: &serde_json::Value| {
            serde_json::json!({
                "name": name,
                "trust": printed["trust"],
                "permissions": printed["permissions"],
            })
        };
        let states = iam_policy("step-functions", &endpoint);
        let events = iam_policy("eventbridge", &endpoint);
        let job = iam_policy("job", &endpoint);
        let execution = iam_policy("execution", &endpoint);
        assert_eq!(states["roleArn"], role_arn("flowline-states"));
        assert_eq!(events["roleArn"], role_arn("flowline-events"));
        assert_eq!(job["roleArn"], role_arn("flowline-job"));
        assert_eq!(execution["roleArn"], role_arn("flowline-execution"));
        let mut denied = iam_policy("controller", &endpoint)["permissions"].clone();
        denied["Statement"]
            .as_array_mut()
            .expect("statements")
            .push(serde_json::json!({
                "Sid": "RefusedForTests",
                "Effect": "Deny",
                "Action": ["secretsmanager:DescribeSecret", "states:DeleteStateMachine"],
                "Resource": "*",
            }));
        let spec = serde_json::json!({
            "bucket": BUCKET,
            "queue": QUEUE,
            "roles": [
                role("flowline-states", &states),
                role("flowline-events", &events),
                role("flowline-job", &job),
                role("flowline-execution", &execution),
            ],
            "users": [{
                "name": CONTROLLER_USER,
                "permissions": iam_policy("controller", &endpoint)["permissions"],
            }, {
                "name": DENIED_USER,
                "permissions": denied,
            }],
            "secrets": [{"name": SECRET, "value": SECRET_VALUE}],
        });
        let answer = python(
            &[
                repo_root()
                    .join("tests/e2e/iam_setup.py")
                    .to_str()
                    .expect("utf-8 path"),
                &endpoint,
            ],
            Some(&spec.to_string()),
        );
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("set-up answers JSON");
        let key = &answer["users"][CONTROLLER_USER];
        let denied = &answer["users"][DENIED_USER];
        Platform {
            denied_key: denied["accessKeyId"].as_str().expect("key id").to_owned(),
            denied_secret: denied["secretAccessKey"]
                .as_str()
                .expect("secret key")
                .to_owned(),
            endpoint,
            controller_key: key["accessKeyId"].as_str().expect("key id").to_owned(),
            controller_secret: key["secretAccessKey"]
                .as_str()
                .expect("secret key")
                .to_owned(),
        }
    })
}

/// Runs the emulator's Python (which has boto3) and returns its stdout.
fn python(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let python = std::env::var("FLOWLINE_MOTO_PYTHON").expect("FLOWLINE_MOTO_PYTHON is set");
    let mut child = Command::new(python)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("python reads stdin");
    drop(pipe);
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn sdk_config(endpoint: &str, key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sfn::config::Credentials::new(
            key,
            secret,
            None,
            None,
            "flowline-e2e-iam",
        ))
        .load()
        .await
}

async fn admin_config() -> aws_config::SdkConfig {
    sdk_config(&platform().endpoint, ADMIN_KEY, ADMIN_SECRET).await
}

async fn controller_config() -> aws_config::SdkConfig {
    let platform = platform();
    sdk_config(
        &platform.endpoint,
        &platform.controller_key,
        &platform.controller_secret,
    )
    .await
}

fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// A JSON answer of one of the emulator's test endpoints.
fn emulator_call(method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
    let url = format!("{}{path}", platform().endpoint);
    let mut args = vec!["-s", "-X", method, "-H", "Content-Type: application/json"];
    let body = body.map(serde_json::Value::to_string);
    if let Some(body) = &body {
        args.extend(["-d", body]);
    }
    let output = Command::new("curl")
        .args(&args)
        .arg(&url)
        .output()
        .expect("curl runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "{url} answers JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

/// The lines every task of a step printed, on the suite's emulator.
fn step_output(namespace: &str, run: &str, step: &str) -> Vec<String> {
    task_output(namespace, run, step, &iam_emulator().job_log_dir)
}

/// Waits until the Run ends Succeeded; any other end fails with its status and task output.
fn wait_succeeded(namespace: &str, run: &str) {
    let phase = wait_for(&format!("Run {run} to end"), TIMEOUT, || {
        let phase = jsonpath(namespace, &format!("run/{run}"), "{.status.phase}");
        ["Succeeded", "Failed", "Aborted", "TimedOut"]
            .contains(&phase.as_str())
            .then_some(phase)
    });
    if phase != "Succeeded" {
        let status = kubectl(&["get", "run", run, "-n", namespace, "-o", "yaml"], None).stdout;
        let mut logs = String::new();
        for step in ["start", "left", "right", "join", "end"] {
            for line in step_output(namespace, run, step) {
                logs.push_str(&format!("[{step}] {line}\n"));
            }
        }
        panic!("Run {run} ended {phase}:\n{status}\ntask output:\n{logs}");
    }
}

fn wait_ready(namespace: &str, resource: &str) {
    wait_for(&format!("{resource} to be Ready"), TIMEOUT, || {
        let (status, reason, message) = condition(namespace, resource, "Ready");
        assert!(
            condition(namespace, resource, "Stalled").0 != "True",
            "{resource} stalled: {reason} {message}"
        );
        (status == "True").then_some(())
    });
}

/// Python steps: start writes numbers and shows that its job role may not use Step Functions;
/// left (with the secret) and right transform them; join sums both branches.
fn flow_manifest() -> String {
    let read_parent = r#"import hashlib, json, os, boto3
s3 = boto3.client("s3")
def get(uri, name):
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read())
def put(name, value):
    bucket, _, prefix = os.environ["FLOWLINE_ARTIFACT_URI"].removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=prefix + name, Body=json.dumps(value))
"#;
    let start = format!(
        r#"{read_parent}
from botocore.exceptions import ClientError
put("numbers.json", list(range(1, 11)))
try:
    boto3.client("stepfunctions").list_state_machines()
    print("LIST_STATE_MACHINES allowed")
except ClientError as error:
    print("LIST_STATE_MACHINES " + error.response["Error"]["Code"])
print("CALLER " + boto3.client("sts").get_caller_identity()["Arn"])
"#
    );
    let left = format!(
        r#"{read_parent}
numbers = get(os.environ["FLOWLINE_INPUT_URIS"], "numbers.json")
put("left.json", [n * n for n in numbers])
print("TOKEN_SHA256 " + hashlib.sha256(os.environ.get("API_TOKEN", "").encode()).hexdigest())
"#
    );
    let right = format!(
        r#"{read_parent}
numbers = get(os.environ["FLOWLINE_INPUT_URIS"], "numbers.json")
put("right.json", [n * 2 for n in numbers])
"#
    );
    let join = format!(
        r#"{read_parent}
totals = {{}}
for uri in os.environ["FLOWLINE_INPUT_URIS"].split(","):
    name = "left.json" if "/left/" in uri else "right.json"
    totals[name] = sum(get(uri, name))
put("summary.json", totals)
print("TOTALS " + json.dumps(totals, sort_keys=True))
"#
    );
    let step = |name: &str, script: &str, next: &[&str]| {
        let mut step = serde_json::json!({
            "name": name,
            "command": ["python3", "-c", script],
        });
        if !next.is_empty() {
            step["next"] = serde_json::json!(next);
        }
        step
    };
    let mut left = step("left", &left, &["join"]);
    left["secrets"] =
        serde_json::json!([{"id": SECRET, "type": "plaintext", "envVarName": "API_TOKEN"}]);
    let mut join = step("join", &join, &["end"]);
    join["join"] = serde_json::json!(true);
    serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "iam-pipeline"},
        "spec": {
            "batch": {"image": "python:3.12-slim", "cpu": 1, "memory": 512},
            "steps": [
                step("start", &start, &["left", "right"]),
                left,
                step("right", &right, &["join"]),
                join,
                step("end", "print('done')", &[]),
            ]
        }
    })
    .to_string()
}

/// Every execution of a state machine, with its history: none may show an access denied.
async fn assert_no_denied_execution(sfn: &aws_sdk_sfn::Client, machine: &str) -> usize {
    let executions = sfn
        .list_executions()
        .state_machine_arn(machine)
        .send()
        .await
        .expect("executions are listed");
    for execution in executions.executions() {
        let history = sfn
            .get_execution_history()
            .execution_arn(execution.execution_arn())
            .send()
            .await
            .expect("history is read");
        let text = format!("{:?}", history.events());
        assert!(
            !text.contains("AccessDenied") && !text.contains("not authorized"),
            "execution {} was refused something: {text}",
            execution.execution_arn()
        );
    }
    executions.executions().len()
}

fn assert_controller_never_denied(controller: &ControllerProcess) {
    let log = std::fs::read_to_string(&controller.log).expect("controller log");
    let denied: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("AccessDenied") || line.contains("not authorized"))
        .collect();
    assert!(
        denied.is_empty(),
        "the controller was refused what iam-policy should grant:\n{}",
        denied.join("\n")
    );
}

fn assert_no_failed_invocations() {
    let failed = emulator_call("GET", "/flowline-test/failed-invocations", None);
    assert_eq!(
        failed["failedInvocations"],
        serde_json::json!([]),
        "EventBridge could not start an execution with the events role"
    );
}

#[tokio::test]
async fn iam_is_enforced_so_only_what_a_policy_grants_is_allowed() {
    let platform = platform();
    let config = controller_config().await;
    // The controller's user may not do what its policy lacks: create users, list every state
    // machine, write outside the datastore prefix (it writes only a resumed Run's copies of
    // reused artifacts, under it), create secrets.
    let create_user = python(
        &[
            "-c",
            r#"import sys, boto3
from botocore.exceptions import ClientError
iam = boto3.client("iam", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3], region_name="us-east-1")
try:
    iam.create_user(UserName="intruder")
    print("allowed")
except ClientError as error:
    print(error.response["Error"]["Code"])
"#,
            &platform.endpoint,
            &platform.controller_key,
            &platform.controller_secret,
        ],
        None,
    );
    assert_eq!(create_user.trim(), "AccessDenied", "iam:CreateUser");
    let listed = aws_sdk_sfn::Client::new(&config)
        .list_state_machines()
        .send()
        .await
        .expect_err("states:ListStateMachines is not granted");
    assert_eq!(
        listed.as_service_error().and_then(|e| e.meta().code()),
        Some("AccessDeniedException"),
        "{listed:?}"
    );
    let written = s3_client(&config)
        .put_object()
        .bucket(BUCKET)
        .key("elsewhere/intruder.txt")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect_err("s3:PutObject outside the datastore prefix is not granted to the controller");
    assert_eq!(
        written.as_service_error().and_then(|e| e.meta().code()),
        Some("AccessDenied"),
        "{written:?}"
    );
    // What the policy grants is allowed, on the resources it names: reading under the
    // datastore prefix.
    let read = s3_client(&config)
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("data/")
        .send()
        .await;
    assert!(read.is_ok(), "s3:ListBucket is granted: {read:?}");
    // An unknown key is not a principal at all.
    let stranger = sdk_config(&platform.endpoint, "STRANGERKEY000000000", "x").await;
    let refused = aws_sdk_sfn::Client::new(&stranger)
        .list_state_machines()
        .send()
        .await
        .expect_err("an unknown key is refused");
    assert_eq!(
        refused.as_service_error().and_then(|e| e.meta().code()),
        Some("UnrecognizedClientException"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn generated_policies_run_a_flow_its_schedule_and_its_deletion_without_access_denied() {
    install_crds();
    let platform = platform();
    let ns = TestNamespace::create("iam");
    let mut env: Vec<(&str, String)> = settings(&platform.endpoint);
    env.push(("FLOWLINE_DISCOVERY_INTERVAL_SECONDS", "1".to_owned()));
    // The managed execution events path, under the controller's policy: polls of a running
    // Run 20 s apart, so the Run's end is seen from the event first.
    env.push(("FLOWLINE_EXECUTION_EVENTS", "managed".to_owned()));
    env.push(("FLOWLINE_TRACKING_CALLS_PER_SECOND", "0.05".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let controller = ControllerProcess::start_against(
        &ns.name,
        &platform.endpoint,
        &platform.controller_key,
        &platform.controller_secret,
        &env,
    );
    let admin = admin_config().await;
    let sfn = aws_sdk_sfn::Client::new(&admin);

    // The Flow: job definitions and a state machine, made as the controller's user.
    apply(&ns.name, &flow_manifest());
    wait_ready(&ns.name, "flow/iam-pipeline");
    let machine = jsonpath(&ns.name, "flow/iam-pipeline", "{.status.stateMachineArn}");
    let described = sfn
        .describe_state_machine()
        .state_machine_arn(&machine)
        .send()
        .await
        .expect("the state machine exists");
    assert_eq!(described.role_arn(), role_arn("flowline-states"));
    let definitions: Vec<String> = jsonpath(
        &ns.name,
        "flow/iam-pipeline",
        "{range .status.jobDefinitions[*]}{.arn} {end}",
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    assert_eq!(definitions.len(), 5, "one job definition per step");

    // A Run: the state machine submits jobs as the states role, tasks write artifacts as the
    // job role and get the secret through the execution role.
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {name: iam-1}\nspec:\n  flowRef: {name: iam-pipeline}\n",
    );
    wait_succeeded(&ns.name, "iam-1");
    assert_eq!(
        jsonpath(
            &ns.name,
            "run/iam-1",
            "{.metadata.annotations.flowline\\.io/execution-event}"
        ),
        "SUCCEEDED",
        "the execution status change event reached the controller through its queue"
    );
    let start = step_output(&ns.name, "iam-1", "start");
    assert_eq!(
        tagged(&start, "LIST_STATE_MACHINES"),
        Some("AccessDeniedException"),
        "the job role may not use Step Functions: {start:#?}"
    );
    assert!(
        tagged(&start, "CALLER").is_some_and(|arn| arn.contains(":assumed-role/flowline-job/")),
        "tasks act as the job role: {start:#?}"
    );
    let left = step_output(&ns.name, "iam-1", "left");
    let token_sha = {
        use sha2::Digest;
        sha2::Sha256::digest(SECRET_VALUE.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        tagged(&left, "TOKEN_SHA256"),
        Some(token_sha.as_str()),
        "{left:#?}"
    );
    let join = step_output(&ns.name, "iam-1", "join");
    assert_eq!(
        tagged(&join, "TOTALS"),
        Some(r#"{"left.json": 385, "right.json": 110}"#),
        "{join:#?}"
    );
    // The controller listed the artifacts into the status (s3:ListBucket with its policy),
    // and they are in S3.
    let artifacts: BTreeSet<String> = jsonpath(
        &ns.name,
        "run/iam-1",
        "{range .status.steps[*].artifacts[*]}{.uri} {end}",
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    let names: BTreeSet<&str> = artifacts
        .iter()
        .filter_map(|uri| uri.rsplit('/').next())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["left.json", "numbers.json", "right.json", "summary.json"]),
        "{artifacts:#?}"
    );
    let s3 = s3_client(&admin);
    for uri in &artifacts {
        let (bucket, key) = uri
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or_else(|| panic!("an S3 URI: {uri}"));
        s3.head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{uri} exists: {error:?}"));
    }

    // A Schedule: its rule, fired, starts an execution as the events role, which becomes a
    // Run that succeeds.
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Schedule\nmetadata: {name: iam-nightly}\nspec:\n  flowRef: {name: iam-pipeline}\n  cron: \"0 3 * * *\"\n",
    );
    wait_ready(&ns.name, "schedule/iam-nightly");
    let rule_arn = jsonpath(&ns.name, "schedule/iam-nightly", "{.status.ruleArn}");
    let rule = rule_arn.rsplit('/').next().expect("rule name").to_owned();
    let events = aws_sdk_eventbridge::Client::new(&admin);
    let targets = events
        .list_targets_by_rule()
        .rule(&rule)
        .send()
        .await
        .expect("targets are listed");
    assert_eq!(
        targets.targets().first().and_then(|t| t.role_arn()),
        Some(role_arn("flowline-events").as_str())
    );
    let fired = emulator_call(
        "POST",
        "/flowline-test/fire-rule",
        Some(&serde_json::json!({"name": rule})),
    );
    assert_no_failed_invocations();
    // The rule starts the Schedule's trigger state machine (as the events role), which starts
    // the Flow's execution (as the states role) under a name from the event id.
    assert!(
        fired["executionArns"][0].is_string(),
        "the rule started the trigger state machine: {fired}"
    );
    let event_id = fired["eventId"].as_str().expect("an event id");
    let execution = format!(
        "{}:schedule_{event_id}",
        machine.replacen(":stateMachine:", ":execution:", 1)
    );
    let scheduled = wait_for("a Run for the scheduled execution", TIMEOUT, || {
        let runs = kubectl(
            &[
                "get",
                "runs",
                "-n",
                &ns.name,
                "-l",
                "flowline.io/schedule=iam-nightly",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
            None,
        )
        .ok();
        runs.split_whitespace().next().map(str::to_owned)
    });
    wait_succeeded(&ns.name, &scheduled);
    assert_eq!(
        jsonpath(
            &ns.name,
            &format!("run/{scheduled}"),
            "{.status.executionArn}"
        ),
        execution
    );
    assert_eq!(assert_no_denied_execution(&sfn, &machine).await, 2);
    assert_no_failed_invocations();
    assert_controller_never_denied(&controller);

    // Deletion: the Schedule's rule, the Runs, then the Flow's state machine and job
    // definitions go, removed by the controller's user.
    for resource in ["schedule/iam-nightly", "runs --all", "flow/iam-pipeline"] {
        let mut args = vec!["delete", "-n", &ns.name, "--wait=true", "--timeout=120s"];
        args.extend(resource.split_whitespace());
        kubectl(&args, None).ok();
    }
    let gone = events.describe_rule().name(&rule).send().await;
    assert!(gone.is_err(), "the rule is deleted: {gone:?}");
    wait_for_async("the state machine to be deleted", TIMEOUT, || async {
        match sfn
            .describe_state_machine()
            .state_machine_arn(&machine)
            .send()
            .await
        {
            Err(_) => Some(()),
            Ok(described) => (described.status()
                == Some(&aws_sdk_sfn::types::StateMachineStatus::Deleting))
            .then_some(()),
        }
    })
    .await;
    let batch = aws_sdk_batch::Client::new(&admin);
    let described = batch
        .describe_job_definitions()
        .set_job_definitions(Some(definitions.clone()))
        .send()
        .await
        .expect("job definitions are described");
    let active: Vec<&str> = described
        .job_definitions()
        .iter()
        .filter(|d| d.status() == Some("ACTIVE"))
        .filter_map(|d| d.job_definition_arn())
        .collect();
    assert!(active.is_empty(), "deregistered: {active:?}");
    assert_no_failed_invocations();
    assert_controller_never_denied(&controller);
    drop(controller);
    // The uninstall hook's command, as the controller's user: the rule and queue go.
    let output = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(["execution-events", "delete"])
        .envs(env.iter().copied())
        .env("AWS_ENDPOINT_URL", &platform.endpoint)
        .env("AWS_ACCESS_KEY_ID", &platform.controller_key)
        .env("AWS_SECRET_ACCESS_KEY", &platform.controller_secret)
        .output()
        .expect("flowline runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && printed.contains("deleted rule flowline-execution-events")
            && printed.contains("deleted queue flowline-execution-events"),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        events
            .describe_rule()
            .name("flowline-execution-events")
            .send()
            .await
            .is_err(),
        "the execution events rule is deleted"
    );
    // What each principal did, by access key (`ASIA…`: the roles' STS sessions), for the
    // record of which actions this proves.
    eprintln!(
        "requests by access key: {}",
        emulator_call("GET", "/flowline-test/requests", None)["byAccessKey"]
    );
}

/// What AWS refuses is said where a person looks: a Flow whose secret the controller may not
/// describe ends Stalled with AWS's refusal (not backed off silently), and a Flow whose state
/// machine the controller may not delete keeps its finalizer with a Warning event and a
/// Stalled condition naming the permission, until the skip-cleanup annotation releases it
/// and leaves the state machine in place.
#[tokio::test]
async fn refused_reads_and_cleanups_are_reported_and_the_finalizer_can_be_released() {
    install_crds();
    let platform = platform();
    let ns = TestNamespace::create("iam-denied");
    let mut env: Vec<(&str, String)> = settings(&platform.endpoint);
    env.push(("FLOWLINE_RECHECK_INTERVAL_SECONDS", "5".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _controller = ControllerProcess::start_against(
        &ns.name,
        &platform.endpoint,
        &platform.denied_key,
        &platform.denied_secret,
        &env,
    );
    let flow = |name: &str, secrets: &str| {
        format!(
            "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: {name}}}\nspec:\n  steps:\n    - {{name: start, command: [\"true\"], next: [end]{secrets}}}\n    - {{name: end, command: [\"true\"]}}\n"
        )
    };
    apply(
        &ns.name,
        &flow(
            "secretive",
            &format!(", secrets: [{{id: {SECRET}, type: plaintext, envVarName: API_TOKEN}}]"),
        ),
    );
    let (reason, message) = wait_for("the Flow to stall on DescribeSecret", TIMEOUT, || {
        let (stalled, reason, message) = condition(&ns.name, "flow/secretive", "Stalled");
        (stalled == "True").then_some((reason, message))
    });
    assert_eq!(reason, "AwsRejected", "{message}");
    assert!(
        message.contains("AccessDenied") && message.contains("DescribeSecret"),
        "{message}"
    );

    apply(&ns.name, &flow("kept", ""));
    wait_ready(&ns.name, "flow/kept");
    let machine = jsonpath(&ns.name, "flow/kept", "{.status.stateMachineArn}");
    kubectl(
        &["delete", "flow", "kept", "-n", &ns.name, "--wait=false"],
        None,
    )
    .ok();
    let message = wait_for("the refused cleanup to be reported", TIMEOUT, || {
        let (stalled, reason, message) = condition(&ns.name, "flow/kept", "Stalled");
        (stalled == "True" && reason == "CleanupFailed").then_some(message)
    });
    assert!(
        message.contains("DeleteStateMachine") && message.contains(SKIP_CLEANUP),
        "{message}"
    );
    let events = kubectl(
        &[
            "get",
            "events",
            "-n",
            &ns.name,
            "--field-selector",
            "reason=CleanupFailed",
            "-o",
            "name",
        ],
        None,
    );
    assert!(
        !events.stdout.trim().is_empty(),
        "a Warning event is recorded"
    );
    kubectl(
        &[
            "annotate",
            "flow",
            "kept",
            "-n",
            &ns.name,
            &format!("{SKIP_CLEANUP}=true"),
        ],
        None,
    )
    .ok();
    wait_for("the Flow to be gone", TIMEOUT, || {
        let got = kubectl(&["get", "flow", "kept", "-n", &ns.name], None);
        (!got.success).then_some(())
    });
    let sfn = aws_sdk_sfn::Client::new(&admin_config().await);
    sfn.describe_state_machine()
        .state_machine_arn(&machine)
        .send()
        .await
        .expect("the state machine is left in place");
}

const SKIP_CLEANUP: &str = "flowline.io/skip-cleanup";

/// When AWS refuses the managed execution events path, the controller says so with AWS's
/// message, reads 0 on `flowline_execution_events_ready`, tracks its Runs by polling, and
/// retries with a growing pause instead of stopping or storming. Its user has iam-policy's
/// controller policy (for a name prefix of its own) without the statements that grant rules
/// (`ExecutionEventsRule`, and `ScheduleRules`, whose `rule/<prefix>*` covers that rule too).
#[tokio::test]
async fn refused_execution_events_leave_the_controller_polling_and_retrying_calmly() {
    install_crds();
    let platform = platform();
    let prefix = "flowline-noevents-";
    let mut permissions =
        iam_policy_with_prefix("controller", &platform.endpoint, prefix)["permissions"].clone();
    permissions["Statement"]
        .as_array_mut()
        .expect("statements")
        .retain(|statement| {
            statement["Sid"] != "ExecutionEventsRule" && statement["Sid"] != "ScheduleRules"
        });
    let created = python(
        &[
            "-c",
            "import json, sys, boto3\n\
             iam = boto3.client('iam', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])\n\
             iam.create_user(UserName='flowline-controller-noevents')\n\
             iam.put_user_policy(UserName='flowline-controller-noevents', PolicyName='flowline', PolicyDocument=sys.stdin.read())\n\
             key = iam.create_access_key(UserName='flowline-controller-noevents')['AccessKey']\n\
             print(json.dumps([key['AccessKeyId'], key['SecretAccessKey']]))",
            &platform.endpoint,
            ADMIN_KEY,
            ADMIN_SECRET,
        ],
        Some(&permissions.to_string()),
    );
    let [key, secret]: [String; 2] = serde_json::from_str(&created).expect("a key");
    let ns = TestNamespace::create("iam-noevents");
    let mut env: Vec<(&str, String)> = settings(&platform.endpoint);
    env.retain(|(name, _)| *name != "FLOWLINE_NAME_PREFIX");
    env.push(("FLOWLINE_NAME_PREFIX", prefix.to_owned()));
    env.push(("FLOWLINE_EXECUTION_EVENTS", "managed".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let controller =
        ControllerProcess::start_against(&ns.name, &platform.endpoint, &key, &secret, &env);
    wait_for("the refusal in the log", TIMEOUT, || {
        std::fs::read_to_string(&controller.log).ok().filter(|log| {
            log.lines().any(|line| {
                line.contains("execution events are not set up")
                    && line.contains("not authorized to perform: events:DescribeRule")
            })
        })
    });
    wait_for("flowline_execution_events_ready 0", TIMEOUT, || {
        let (_, text) = controller.http_get("/metrics")?;
        text.lines()
            .any(|line| line == "flowline_execution_events_ready 0")
            .then_some(())
    });
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {name: polled}\nspec:\n  steps:\n    - {name: start, command: [python3, -c, \"print('start')\"], next: [end]}\n    - {name: end, command: [python3, -c, \"print('end')\"]}\n",
    );
    wait_ready(&ns.name, "flow/polled");
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {name: polled-1}\nspec:\n  flowRef: {name: polled}\n",
    );
    wait_for("Run polled-1 to succeed by polling", TIMEOUT, || {
        (jsonpath(&ns.name, "run/polled-1", "{.status.phase}") == "Succeeded").then_some(())
    });
    // Retried after 1 s, 2 s, 4 s, ...: a handful of attempts, not one per reconcile.
    let requests = controller.aws_requests();
    let attempts = requests
        .iter()
        .filter(|(operation, _)| operation.ends_with("DescribeRule"))
        .map(|(_, count)| *count)
        .sum::<u64>();
    assert!(
        (2..=10).contains(&attempts),
        "{attempts} DescribeRule attempts: {requests:?}"
    );
    let started = std::fs::read_to_string(&controller.log).unwrap_or_default();
    assert!(
        started.contains("flowline controller starting") && !started.contains("panicked"),
        "the controller kept running"
    );
}
