//! Tenant isolation against the real API server and the emulator. Two tenant namespaces, each
//! with the RBAC a tenant typically gets (every verb on Flowline's kinds, their `/status`
//! included, and nothing on its namespace), each with allow lists a platform admin set: roles
//! `<namespace>-*`, secrets `<namespace>/*`, trigger buckets `<namespace>-in` and the
//! namespace's part of the datastore, and an execution role of its own. Tenant A tries every
//! escape of the README's tenancy table against tenant B; each is refused (Stalled or a denied
//! request), makes no AWS write and reads no secret of B.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_eventbridge::types::RuleState;

use crate::harness::{
    ControllerProcess, Kubectl, TestNamespace, aws_config, condition, install_crds, jsonpath,
    kubectl, put_s3_object, wait_for, wait_for_async, writes,
};

const TIMEOUT: Duration = Duration::from_secs(90);
const ACCOUNT: &str = "123456789012";

/// Short drift and recheck intervals, so changed allow lists and status apply within seconds.
const QUICK: &[(&str, &str)] = &[
    ("FLOWLINE_DRIFT_INTERVAL_SECONDS", "3"),
    ("FLOWLINE_RECHECK_INTERVAL_SECONDS", "2"),
    ("FLOWLINE_DISCOVERY_INTERVAL_SECONDS", "1"),
];

/// A tenant: a namespace an admin annotated, and a user bound to the tenant Role in it.
struct Tenant {
    ns: TestNamespace,
    user: String,
}

impl Tenant {
    fn create(prefix: &str) -> Tenant {
        let ns = TestNamespace::create(prefix);
        let name = ns.name.clone();
        let user = format!("tenant-{name}");
        annotate(
            &name,
            &[
                ("flowline.io/allowed-roles", format!("{name}-*")),
                ("flowline.io/allowed-secrets", format!("{name}/*")),
                (
                    "flowline.io/allowed-trigger-buckets",
                    format!("{name}-in, flowline/data/{name}/*"),
                ),
                (
                    "flowline.io/execution-role",
                    format!("arn:aws:iam::{ACCOUNT}:role/{name}-execution"),
                ),
            ],
        );
        let rbac = format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: flowline-tenant, namespace: {name}}}
rules:
  - apiGroups: [flowline.io]
    resources: [flows, runs, schedules, flows/status, runs/status, schedules/status]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: flowline-tenant, namespace: {name}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: flowline-tenant}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}
"#
        );
        kubectl(&["apply", "-f", "-"], Some(&rbac)).ok();
        Tenant { ns, user }
    }

    fn name(&self) -> &str {
        &self.ns.name
    }

    fn role(&self) -> String {
        format!("arn:aws:iam::{ACCOUNT}:role/{}-jobs", self.name())
    }

    /// kubectl as the tenant's user, in its namespace.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Kubectl {
        let mut all = vec!["--as", self.user.as_str(), "-n", self.name()];
        all.extend_from_slice(args);
        kubectl(&all, stdin)
    }

    fn apply(&self, manifest: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(manifest)).ok();
    }

    /// A status patch, as a tenant with `patch` on `<kind>/status` can make.
    fn patch_status(&self, resource: &str, patch: &str) {
        self.kubectl(
            &[
                "patch",
                resource,
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )
        .ok();
    }
}

fn annotate(namespace: &str, annotations: &[(&str, String)]) {
    let mut args = vec![
        "annotate".to_owned(),
        "namespace".to_owned(),
        namespace.to_owned(),
        "--overwrite".to_owned(),
    ];
    args.extend(annotations.iter().map(|(k, v)| format!("{k}={v}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl(&args, None).ok();
}

/// A two-step Flow running as `role`; `start` gets `start_extra` (YAML fields).
fn flow(name: &str, role: &str, start_extra: &str) -> String {
    format!(
        r#"apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: {name}}}
spec:
  batch: {{iamRole: "{role}"}}
  steps:
    - {{name: start, command: ["true"], next: [end]{start_extra}}}
    - {{name: end, command: ["true"]}}
"#
    )
}

fn run(name: &str, flow: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: {flow}}}\n"
    )
}

fn wait_condition(namespace: &str, resource: &str, type_: &str) -> (String, String) {
    wait_for(&format!("{resource} to be {type_}"), TIMEOUT, || {
        let (status, reason, message) = condition(namespace, resource, type_);
        (status == "True").then_some((reason, message))
    })
}

fn wait_not_allowed(namespace: &str, resource: &str) -> String {
    let (reason, message) = wait_condition(namespace, resource, "Stalled");
    assert_eq!(reason, "NotAllowed", "{resource}: {message}");
    message
}

/// Requests made since `before` (counts per operation).
fn since(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(op, n)| {
            let diff = n - before.get(op).copied().unwrap_or(0);
            (diff > 0).then(|| (op.clone(), diff))
        })
        .collect()
}

fn secrets_calls(requests: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    requests
        .iter()
        .filter(|(op, _)| op.starts_with("secretsmanager:"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

async fn create_secret(config: &aws_config::SdkConfig, id: &str) -> String {
    let client = aws_sdk_secretsmanager::Client::new(config);
    let created = client
        .create_secret()
        .name(id)
        .secret_string(r#"{"password": "only-for-its-team"}"#)
        .send()
        .await
        .expect("secret created");
    created.arn().expect("an ARN").to_owned()
}

#[tokio::test]
async fn a_tenant_cannot_bind_another_tenants_secret_or_a_role_of_another_account() {
    install_crds();
    let a = Tenant::create("tna");
    let b = Tenant::create("tnb");
    let config = aws_config().await;
    let b_secret_arn = create_secret(&config, &format!("{}/db", b.name())).await;
    create_secret(&config, &format!("{}/db", a.name())).await;
    let controller = ControllerProcess::start(a.name());

    // B's secret by name and by ARN (a JSON secret without keys: binding it would read its
    // key names), and A's role name in another account.
    let foreign_role = format!("arn:aws:iam::999999999999:role/{}-jobs", a.name());
    let attempts = [
        (
            "by-name",
            flow(
                "by-name",
                &a.role(),
                &format!(r#", secrets: [{{id: "{}/db"}}]"#, b.name()),
            ),
            format!("{}/db", b.name()),
        ),
        (
            "by-arn",
            flow(
                "by-arn",
                &a.role(),
                &format!(r#", secrets: [{{id: "{b_secret_arn}"}}]"#),
            ),
            b_secret_arn.clone(),
        ),
        (
            "other-account",
            flow("other-account", &foreign_role, ""),
            foreign_role.clone(),
        ),
    ];
    for (_, manifest, _) in &attempts {
        a.apply(manifest);
    }
    for (name, _, value) in &attempts {
        let message = wait_not_allowed(a.name(), &format!("flow/{name}"));
        assert!(message.contains(value.as_str()), "{name}: {message}");
    }
    let requests = controller.aws_requests();
    assert_eq!(
        writes(&requests),
        BTreeMap::new(),
        "no AWS write: {requests:?}"
    );
    assert_eq!(
        secrets_calls(&requests),
        BTreeMap::new(),
        "no Secrets Manager call at all: {requests:?}"
    );

    // A's own secret binds, injected with A's own execution role (its namespace default).
    a.apply(&flow(
        "own",
        &a.role(),
        &format!(r#", secrets: [{{id: "{}/db"}}]"#, a.name()),
    ));
    wait_condition(a.name(), "flow/own", "Ready");
    let definition = jsonpath(
        a.name(),
        "flow/own",
        "{.status.jobDefinitions[?(@.step==\"start\")].arn}",
    );
    let described = aws_sdk_batch::Client::new(&config)
        .describe_job_definitions()
        .job_definitions(&definition)
        .send()
        .await
        .expect("job definition described");
    let container = described.job_definitions()[0]
        .container_properties()
        .expect("container properties");
    assert_eq!(
        container.execution_role_arn(),
        Some(format!("arn:aws:iam::{ACCOUNT}:role/{}-execution", a.name()).as_str())
    );
    assert!(
        container.secrets()[0]
            .value_from()
            .unwrap_or_default()
            .starts_with(&format!(
                "arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{}/db",
                a.name()
            )),
        "{container:?}"
    );
}

#[tokio::test]
async fn a_tenant_cannot_trigger_on_another_bucket_or_its_own_datastore() {
    install_crds();
    let a = Tenant::create("tna");
    let b = Tenant::create("tnb");
    let controller = ControllerProcess::start(a.name());
    a.apply(&flow("f", &a.role(), ""));
    wait_condition(a.name(), "flow/f", "Ready");
    let before = controller.aws_requests();

    let schedule = |name: &str, bucket: &str, prefix: &str| {
        format!(
            "apiVersion: flowline.io/v1alpha1\nkind: Schedule\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: f}}\n  event:\n    s3: {{bucket: {bucket}, prefix: \"{prefix}\"}}\n"
        )
    };
    let b_bucket = format!("{}-in", b.name());
    a.apply(&schedule("other-bucket", &b_bucket, "incoming/"));
    a.apply(&schedule("shared-datastore", "flowline", "data/"));
    a.apply(&schedule(
        "own-datastore",
        "flowline",
        &format!("data/{}/f/", a.name()),
    ));
    let other = wait_not_allowed(a.name(), "schedule/other-bucket");
    assert!(
        other.contains(&format!("s3://{b_bucket}/incoming/"))
            && other.contains("flowline.io/allowed-trigger-buckets"),
        "{other}"
    );
    let shared = wait_not_allowed(a.name(), "schedule/shared-datastore");
    assert!(shared.contains("s3://flowline/data/"), "{shared}");
    let own = wait_not_allowed(a.name(), "schedule/own-datastore");
    assert!(
        own.contains("overlaps the Flow's own datastore prefix")
            && own.contains(&format!("s3://flowline/data/{}/f/", a.name())),
        "{own}"
    );
    let after = since(&controller.aws_requests(), &before);
    assert_eq!(
        writes(&after),
        BTreeMap::new(),
        "no rule, no trigger: {after:?}"
    );

    // Its own bucket is allowed.
    a.apply(&schedule(
        "own-bucket",
        &format!("{}-in", a.name()),
        "incoming/",
    ));
    wait_condition(a.name(), "schedule/own-bucket", "Ready");
}

#[tokio::test]
async fn status_patched_by_a_tenant_is_never_acted_on() {
    install_crds();
    let a = Tenant::create("tna");
    let b = Tenant::create("tnb");
    let config = aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let batch = aws_sdk_batch::Client::new(&config);

    // B runs a Flow whose `start` step stays RUNNING for a while.
    let _b_controller = ControllerProcess::start(b.name());
    b.apply(&flow(
        "slow",
        &b.role(),
        r#", env: [{name: EMULATOR_RUN_SECONDS, value: "300"}]"#,
    ));
    wait_condition(b.name(), "flow/slow", "Ready");
    b.apply(&run("b-1", "slow"));
    let b_job = wait_for("B's running job", TIMEOUT, || {
        let job = jsonpath(
            b.name(),
            "run/b-1",
            "{.status.steps[?(@.name==\"start\")].jobIds[0]}",
        );
        (!job.is_empty()).then_some(job)
    });
    let b_machine = jsonpath(b.name(), "flow/slow", "{.status.stateMachineArn}");
    let b_version = jsonpath(b.name(), "flow/slow", "{.status.stateMachineVersionArn}");
    let b_execution = jsonpath(b.name(), "run/b-1", "{.status.executionArn}");
    let b_definition = jsonpath(b.name(), "flow/slow", "{.status.jobDefinitions[0].arn}");

    let mut controller = ControllerProcess::start_with(a.name(), QUICK);
    a.apply(&flow("f", &a.role(), ""));
    wait_condition(a.name(), "flow/f", "Ready");
    let a_machine = jsonpath(a.name(), "flow/f", "{.status.stateMachineArn}");
    let before = controller.aws_requests();

    // 1. B's execution and job written into a Run's status before the controller saw it,
    //    with spec.stop: never read, stopped or terminated.
    controller.kill();
    a.apply(&run("a-stop", "f"));
    a.patch_status(
        "run/a-stop",
        &format!(
            r#"{{"status":{{"phase":"Running","executionArn":"{b_execution}","steps":[{{"name":"start","phase":"Running","jobIds":["{b_job}"]}}]}}}}"#
        ),
    );
    a.kubectl(
        &[
            "patch",
            "run",
            "a-stop",
            "--type=merge",
            "-p",
            r#"{"spec":{"stop":true}}"#,
        ],
        None,
    )
    .ok();
    let before_stop = controller.aws_requests();
    controller.kill_and_restart();
    let (reason, message) = wait_condition(a.name(), "run/a-stop", "Stalled");
    assert_eq!(reason, "ForeignExecution", "{message}");
    assert!(message.contains(&b_execution), "{message}");
    // Deleting the Run (its finalizer would stop its execution) stops nothing either.
    a.kubectl(
        &["delete", "run", "a-stop", "--wait=true", "--timeout=60s"],
        None,
    )
    .ok();
    let after = since(&controller.aws_requests(), &before_stop);
    for op in [
        "states:StopExecution",
        "states:DescribeExecution",
        "states:GetExecutionHistory",
        "batch:TerminateJob",
    ] {
        assert_eq!(after.get(op), None, "{op} in {after:?}");
    }
    // 2. B's job definition written into A's Flow status as retired: never deregistered.
    a.patch_status(
        "flow/f",
        &format!(r#"{{"status":{{"retiredJobDefinitions":["{b_definition}"]}}}}"#),
    );
    // 3. B's machine and version written into A's Flow status, and a Run created at once.
    a.patch_status(
        "flow/f",
        &format!(
            r#"{{"status":{{"stateMachineArn":"{b_machine}","stateMachineVersionArn":"{b_version}"}}}}"#
        ),
    );
    a.apply(&run("a-version", "f"));
    let started = wait_for("Run a-version to start or be refused", TIMEOUT, || {
        let execution = jsonpath(a.name(), "run/a-version", "{.status.executionArn}");
        let (stalled, reason, _) = condition(a.name(), "run/a-version", "Stalled");
        if !execution.is_empty() {
            Some(Some(execution))
        } else {
            (stalled == "True" && reason == "NotAllowed").then_some(None)
        }
    });
    if let Some(execution) = started {
        // The Flow repaired its status first: the Run started on A's own machine.
        assert!(
            execution.contains(&a_machine.replace(":stateMachine:", ":execution:")),
            "{execution}"
        );
    }
    // The Flow reconciled the forged status: it forgot the foreign revision (never
    // deregistering it) and names its own version again.
    wait_for("A's Flow to repair its status", TIMEOUT, || {
        let retired = jsonpath(a.name(), "flow/f", "{.status.retiredJobDefinitions}");
        let version = jsonpath(a.name(), "flow/f", "{.status.stateMachineVersionArn}");
        (retired.is_empty() && version.starts_with(&format!("{a_machine}:"))).then_some(())
    });
    let definitions = batch
        .describe_job_definitions()
        .job_definitions(&b_definition)
        .send()
        .await
        .expect("B's job definition described");
    assert_eq!(
        definitions.job_definitions()[0].status(),
        Some("ACTIVE"),
        "B's job definition is untouched"
    );
    let b_executions = sfn
        .list_executions()
        .state_machine_arn(&b_machine)
        .send()
        .await
        .expect("B's executions listed");
    assert_eq!(
        b_executions.executions().len(),
        1,
        "only B's own execution: {:?}",
        b_executions.executions()
    );
    // Execution discovery listed A's own machine, not the one the status named: no Run in
    // A's namespace tells B's executions.
    let runs = a.kubectl(&["get", "runs", "-o", "name"], None).ok();
    assert_eq!(runs.trim(), "run.flowline.io/a-version", "{runs}");
    // a-version is done with (its execution, if any, finished at once).
    a.kubectl(
        &["delete", "run", "a-version", "--wait=true", "--timeout=60s"],
        None,
    )
    .ok();

    // 4. B's artifact prefix written into a running Run's status as its artifact root: the
    //    controller lists the Run's own prefix, never B's objects.
    let b_execution_name = b_execution.rsplit(':').next().unwrap_or_default();
    put_s3_object(
        "flowline",
        &format!(
            "data/{}/slow/{b_execution_name}/start/0/b-private.csv",
            b.name()
        ),
        b"b's data",
    )
    .await;
    a.apply(&flow("g", &a.role(), "").replace(
        r#"{name: end, command: ["true"]}"#,
        r#"{name: end, command: ["true"], env: [{name: EMULATOR_RUN_SECONDS, value: "300"}]}"#,
    ));
    wait_condition(a.name(), "flow/g", "Ready");
    a.apply(&run("a-list", "g"));
    let listed = "{.status.steps[?(@.name==\"start\")].artifactCount}";
    wait_for("a-list's start step to be listed", TIMEOUT, || {
        (!jsonpath(a.name(), "run/a-list", listed).is_empty()).then_some(())
    });
    controller.kill();
    a.patch_status(
        "run/a-list",
        &format!(
            r#"{{"status":{{"artifactRoot":"s3://flowline/data/{}/slow/{b_execution_name}","steps":[{{"name":"start","phase":"Succeeded"}}]}}}}"#,
            b.name()
        ),
    );
    controller.kill_and_restart();
    wait_for("a-list's start step to be listed again", TIMEOUT, || {
        (!jsonpath(a.name(), "run/a-list", listed).is_empty()).then_some(())
    });
    let artifacts = jsonpath(
        a.name(),
        "run/a-list",
        "{.status.steps[?(@.name==\"start\")].artifacts}",
    );
    assert!(!artifacts.contains("b-private"), "{artifacts}");
    assert_eq!(jsonpath(a.name(), "run/a-list", listed), "0");

    let all = since(&controller.aws_requests(), &before);
    for op in ["batch:DeregisterJobDefinition", "batch:TerminateJob"] {
        assert_eq!(all.get(op), None, "{op} in {all:?}");
    }
    let execution = sfn
        .describe_execution()
        .execution_arn(&b_execution)
        .send()
        .await
        .expect("B's execution described");
    assert_eq!(
        execution.status(),
        &aws_sdk_sfn::types::ExecutionStatus::Running,
        "B's execution still runs"
    );
    let job = batch
        .describe_jobs()
        .jobs(&b_job)
        .send()
        .await
        .expect("B's job described");
    assert_eq!(
        job.jobs()[0].status().map(|s| s.as_str()),
        Some("RUNNING"),
        "B's job still runs"
    );
}

#[tokio::test]
async fn a_flow_no_longer_allowed_runs_nothing_until_allowed_again() {
    install_crds();
    let a = Tenant::create("tna");
    let config = aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let batch = aws_sdk_batch::Client::new(&config);
    let events = aws_sdk_eventbridge::Client::new(&config);
    let controller = ControllerProcess::start_with(a.name(), QUICK);
    a.apply(&flow("f", &a.role(), ""));
    a.apply(
        "apiVersion: flowline.io/v1alpha1\nkind: Schedule\nmetadata: {name: nightly}\nspec:\n  flowRef: {name: f}\n  cron: \"0 3 * * *\"\n",
    );
    wait_condition(a.name(), "flow/f", "Ready");
    wait_condition(a.name(), "schedule/nightly", "Ready");
    let machine = jsonpath(a.name(), "flow/f", "{.status.stateMachineArn}");
    let rule = jsonpath(a.name(), "schedule/nightly", "{.status.ruleArn}");
    let rule = rule.rsplit('/').next().unwrap_or_default().to_owned();
    let definitions: Vec<String> = jsonpath(
        a.name(),
        "flow/f",
        "{range .status.jobDefinitions[*]}{.arn} {end}",
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    assert!(!definitions.is_empty());
    let rule_state = |events: aws_sdk_eventbridge::Client, rule: String| async move {
        events
            .describe_rule()
            .name(rule)
            .send()
            .await
            .expect("rule described")
            .state()
            .cloned()
    };

    // The tenant cannot widen its own allow list.
    let denied = a.kubectl(
        &[
            "annotate",
            "namespace",
            a.name(),
            "--overwrite",
            "flowline.io/allowed-roles=*",
        ],
        None,
    );
    assert!(!denied.success, "a tenant may not annotate its namespace");
    assert!(denied.stderr.contains("forbidden"), "{}", denied.stderr);

    // The admin narrows the roles: the Flow's role is no longer allowed.
    annotate(
        a.name(),
        &[("flowline.io/allowed-roles", format!("{}-other-*", a.name()))],
    );
    let message = wait_not_allowed(a.name(), "flow/f");
    assert!(message.contains(&a.role()), "{message}");
    let described = sfn
        .describe_state_machine()
        .state_machine_arn(&machine)
        .send()
        .await
        .expect("machine described");
    let definition: serde_json::Value =
        serde_json::from_str(described.definition()).expect("JSON definition");
    assert_eq!(
        definition["States"]["NotAllowed"]["Type"], "Fail",
        "{definition}"
    );
    assert_eq!(definition["States"].as_object().map(|s| s.len()), Some(1));
    let listed = batch
        .describe_job_definitions()
        .set_job_definitions(Some(definitions.clone()))
        .send()
        .await
        .expect("job definitions described");
    for revision in listed.job_definitions() {
        assert_eq!(revision.status(), Some("INACTIVE"), "{revision:?}");
    }
    wait_for_async("the Schedule's rule to be disabled", TIMEOUT, || {
        let (events, rule) = (events.clone(), rule.clone());
        async move { (rule_state(events, rule).await == Some(RuleState::Disabled)).then_some(()) }
    })
    .await;
    wait_not_allowed(a.name(), "schedule/nightly");
    let before = controller.aws_requests();
    a.apply(&run("after", "f"));
    let refused = wait_not_allowed(a.name(), "run/after");
    assert!(refused.contains(&a.role()), "{refused}");
    let after = since(&controller.aws_requests(), &before);
    assert_eq!(after.get("states:StartExecution"), None, "{after:?}");

    // Allowed again: the Flow's own definition, fresh job definitions and the rule come back.
    annotate(
        a.name(),
        &[("flowline.io/allowed-roles", format!("{}-*", a.name()))],
    );
    wait_condition(a.name(), "flow/f", "Ready");
    let described = sfn
        .describe_state_machine()
        .state_machine_arn(&machine)
        .send()
        .await
        .expect("machine described");
    assert!(
        !described.definition().contains("NotAllowed"),
        "{}",
        described.definition()
    );
    wait_for_async("the Schedule's rule to be enabled", TIMEOUT, || {
        let (events, rule) = (events.clone(), rule.clone());
        async move { (rule_state(events, rule).await == Some(RuleState::Enabled)).then_some(()) }
    })
    .await;
}
