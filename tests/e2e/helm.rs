//! The Helm chart installed into the real API server. No controller pod runs (the local
//! cluster has no nodes), so the test runs `flowline controller` itself with the token of the
//! chart's ServiceAccount: Flows become Ready and Runs succeed with exactly the RBAC the chart
//! grants, and what it does not grant is denied. The pod template passes the restricted Pod
//! Security Standard. Each release lives in its own namespace; its cluster-scoped objects
//! carry the namespace in their names, so the tests run in parallel with every other one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    ControllerProcess, Kubectl, TestNamespace, env, install_crds, jsonpath, kubectl, kubectl_with,
    repo_root, wait_for,
};
use crate::health_script::health;

const TIMEOUT: Duration = Duration::from_secs(90);
const RELEASE: &str = "flowline";

/// A Helm release of the chart; uninstalled when dropped.
struct Release {
    namespace: String,
    home: tempfile::TempDir,
}

impl Release {
    fn install(namespace: &str, values: &[&str]) -> Release {
        let release = Release {
            namespace: namespace.to_owned(),
            home: tempfile::tempdir().expect("helm home"),
        };
        let chart = repo_root().join("charts/flowline");
        let mut args = vec![
            "install",
            RELEASE,
            chart.to_str().expect("utf-8 path"),
            "--namespace",
            namespace,
        ];
        for value in values {
            args.extend(["--set", value]);
        }
        release.helm(&args).ok();
        release
    }

    /// Runs helm as the cluster admin, with its caches and configuration in a folder of its own.
    fn helm(&self, args: &[&str]) -> Kubectl {
        let home = self.home.path();
        let output = Command::new(env().bin_dir.join("helm"))
            .args(args)
            .env("KUBECONFIG", &env().kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .expect("helm runs (hack/build-tools.sh builds it)");
        Kubectl {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A kubeconfig that authenticates as the chart's ServiceAccount with a fresh token.
    fn service_account_kubeconfig(&self) -> PathBuf {
        let token = kubectl(
            &[
                "create",
                "token",
                RELEASE,
                "-n",
                &self.namespace,
                "--duration=1h",
            ],
            None,
        )
        .ok();
        let cluster = |field: &str| {
            kubectl(
                &[
                    "config",
                    "view",
                    "--minify",
                    "-o",
                    &format!("jsonpath={{.clusters[0].cluster.{field}}}"),
                ],
                None,
            )
            .ok()
        };
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": cluster("server"),
                "certificate-authority": cluster("certificate-authority"),
            }}],
            "users": [{"name": RELEASE, "user": {"token": token.trim()}}],
            "contexts": [{"name": RELEASE, "context": {"cluster": "local", "user": RELEASE}}],
            "current-context": RELEASE,
        });
        let path = self.home.path().join("service-account.kubeconfig");
        std::fs::write(&path, kubeconfig.to_string()).expect("kubeconfig written");
        path
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // Without hooks: the pre-delete Job that removes the execution events rule and queue
        // would never run here (no kubelet), and Helm would wait for it until its timeout.
        // The tests check the hook as rendered instead ([`uninstall_hook`]), and
        // `flowline execution-events delete` itself runs in tests/e2e/execution_events.rs.
        let _ = self.helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            &self.namespace,
            "--no-hooks",
        ]);
    }
}

/// The release's pre-delete hook Job, as Helm stored it with the release.
fn uninstall_hook(release: &Release) -> Value {
    let hooks = release
        .helm(&["get", "hooks", RELEASE, "--namespace", &release.namespace])
        .ok();
    hooks
        .split("\n---")
        .filter_map(|doc| serde_norway::from_str::<Value>(doc).ok())
        .find(|doc| doc["kind"] == "Job")
        .unwrap_or_else(|| panic!("a hook Job in the release:\n{hooks}"))
}

/// `kubectl auth can-i` as the holder of `kubeconfig`.
fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend(args);
    kubectl_with(kubeconfig, &all, None).stdout.trim() == "yes"
}

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

fn object_json(namespace: &str, resource: &str) -> Value {
    let text = kubectl(&["get", resource, "-n", namespace, "-o", "json"], None).ok();
    serde_json::from_str(&text).expect("kubectl prints JSON")
}

const FLOW: &str = "apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: hello}
spec:
  steps:
    - {name: start, command: [\"true\"], next: [work]}
    - {name: work, command: [\"true\"], next: [end]}
    - {name: end, command: [\"true\"]}
";

fn run(name: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: hello}}\n"
    )
}

fn wait_succeeded(namespace: &str, name: &str) {
    wait_for(&format!("Run {name} to succeed"), TIMEOUT, || {
        (jsonpath(namespace, &format!("run/{name}"), "{.status.phase}") == "Succeeded")
            .then_some(())
    });
}

#[test]
fn namespaced_release_runs_flows_with_only_the_charts_rbac() {
    install_crds();
    let ns = TestNamespace::create("helm");
    let release = Release::install(
        &ns.name,
        &[
            &format!("watchNamespace={}", ns.name),
            &format!("aws.endpointUrl={}", env().aws_endpoint),
            "flowDefaults.s3ForcePathStyle=true",
            "controller.keepSucceededRuns=1",
            "podDisruptionBudget.enabled=true",
        ],
    );

    // The Deployment carries the values as the controller's settings.
    let deployment = object_json(&ns.name, &format!("deployment/{RELEASE}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let setting = |name: &str| {
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap_or("(valueFrom)").to_owned())
    };
    assert_eq!(setting("FLOWLINE_WATCH_NAMESPACE"), Some(ns.name.clone()));
    assert_eq!(
        setting("AWS_ENDPOINT_URL"),
        Some(env().aws_endpoint.clone())
    );
    assert_eq!(
        setting("FLOWLINE_KEEP_SUCCEEDED_RUNS").as_deref(),
        Some("1")
    );
    assert_eq!(setting("FLOWLINE_LEADER_ELECTION").as_deref(), Some("true"));
    assert_eq!(
        setting("FLOWLINE_LEASE_NAMESPACE").as_deref(),
        Some("(valueFrom)")
    );

    // The pod template passes the restricted Pod Security Standard: admission of a Pod made
    // from it in a namespace enforcing `restricted` (a server-side dry run).
    kubectl(
        &[
            "label",
            "namespace",
            &ns.name,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    )
    .ok();
    let template = &deployment["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "restricted-check", "namespace": ns.name, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    let admitted = kubectl(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod.to_string()),
    );
    assert!(
        admitted.success && !admitted.stderr.contains("Warning"),
        "the controller pod is admitted under the restricted policy: {}",
        admitted.stderr
    );

    // The uninstall hook: a pre-delete Job deleting the execution events rule and queue with
    // the controller's ServiceAccount and settings, deleted once it succeeded, whose pod is
    // admitted under the restricted policy too.
    let hook = uninstall_hook(&release);
    let annotations = &hook["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/hook"], "pre-delete");
    assert_eq!(
        annotations["helm.sh/hook-delete-policy"],
        "before-hook-creation,hook-succeeded"
    );
    let hook_pod = &hook["spec"]["template"]["spec"];
    assert_eq!(hook_pod["serviceAccountName"], RELEASE);
    let hook_container = &hook_pod["containers"][0];
    assert_eq!(
        hook_container["args"],
        json!(["execution-events", "delete"])
    );
    assert!(
        hook_container["env"].as_array().is_some_and(|env| env
            .iter()
            .any(|e| { e["name"] == "FLOWLINE_NAME_PREFIX" && e["value"] == "flowline-" })
            && env.iter().any(|e| e["name"] == "AWS_ENDPOINT_URL")),
        "the hook gets the controller's settings: {hook_container}"
    );
    let hook_labels = &hook["spec"]["template"]["metadata"]["labels"];
    assert_ne!(
        hook_labels["app.kubernetes.io/name"],
        template["metadata"]["labels"]["app.kubernetes.io/name"],
        "the Service and the PDB never select the hook's pod"
    );
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "restricted-hook-check", "namespace": ns.name, "labels": hook_labels},
        "spec": hook_pod,
    });
    let admitted = kubectl(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod.to_string()),
    );
    assert!(
        admitted.success && !admitted.stderr.contains("Warning"),
        "the hook pod is admitted under the restricted policy: {}",
        admitted.stderr
    );

    // The controller, authenticated as the chart's ServiceAccount.
    let kubeconfig = release.service_account_kubeconfig();
    let controller = ControllerProcess::start_as(
        &ns.name,
        &kubeconfig,
        &[("FLOWLINE_KEEP_SUCCEEDED_RUNS", "1")],
    );
    apply(&ns.name, FLOW);
    wait_for("Flow hello to be Ready", TIMEOUT, || {
        (jsonpath(
            &ns.name,
            "flow/hello",
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True")
            .then_some(())
    });
    apply(&ns.name, &run("hello-1"));
    wait_succeeded(&ns.name, "hello-1");
    apply(&ns.name, &run("hello-2"));
    wait_succeeded(&ns.name, "hello-2");
    // History pruning deleted the older Run (keepSucceededRuns=1): delete and the finalizer's
    // removal are granted.
    wait_for("Run hello-1 to be pruned", TIMEOUT, || {
        let got = kubectl(&["get", "run", "hello-1", "-n", &ns.name], None);
        (!got.success && got.stderr.contains("NotFound")).then_some(())
    });
    // Events were recorded (events.k8s.io create).
    let events = kubectl(
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={range .items[*]}{.reportingController}/{.reason} {end}",
        ],
        None,
    )
    .ok();
    assert!(events.contains("flowline/Applied"), "events: {events}");

    // The Argo CD health script agrees with what the controller wrote.
    assert_eq!(health(&object_json(&ns.name, "flow/hello")).0, "Healthy");
    assert_eq!(health(&object_json(&ns.name, "run/hello-2")).0, "Healthy");

    // Deleting the Flow runs its cleanup and removes the finalizer, as the ServiceAccount.
    kubectl(
        &["delete", "flow", "hello", "-n", &ns.name, "--timeout=60s"],
        None,
    )
    .ok();
    drop(controller);
    let log = std::fs::read_to_string(
        env()
            .env_dir
            .join("logs")
            .join(format!("controller-{}.log", ns.name)),
    )
    .unwrap_or_default();
    assert!(
        !log.contains("Forbidden") && !log.contains("could not record an event"),
        "the controller was denied something it needs:\n{log}"
    );

    // What the chart does not grant is denied.
    let n = ns.name.as_str();
    assert!(!can_i(&kubeconfig, &["delete", "flows", "-n", n]));
    assert!(!can_i(&kubeconfig, &["update", "flows", "-n", n]));
    assert!(!can_i(&kubeconfig, &["create", "flows", "-n", n]));
    assert!(!can_i(&kubeconfig, &["get", "secrets", "-n", n]));
    assert!(!can_i(&kubeconfig, &["list", "pods", "-n", n]));
    assert!(!can_i(&kubeconfig, &["create", "events", "-n", n]));
    assert!(!can_i(&kubeconfig, &["list", "flows", "-n", "default"]));
    assert!(!can_i(&kubeconfig, &["list", "flows", "--all-namespaces"]));
    assert!(!can_i(&kubeconfig, &["delete", "leases", "-n", n]));
    assert!(!can_i(&kubeconfig, &["update", "leases/another", "-n", n]));
    // (No controller runs now, so this Flow gets no finalizer and goes with the namespace.)
    apply(&ns.name, FLOW);
    let denied = kubectl_with(&kubeconfig, &["delete", "flow", "hello", "-n", n], None);
    assert!(
        !denied.success && denied.stderr.contains("Forbidden"),
        "deleting a Flow as the controller is forbidden: {}",
        denied.stderr
    );
    // And what it grants beyond what this test exercised: leader election and namespaces.
    assert!(can_i(&kubeconfig, &["create", "leases", "-n", n]));
    assert!(can_i(
        &kubeconfig,
        &["update", "leases/flowline-controller", "-n", n]
    ));
    assert!(can_i(&kubeconfig, &["watch", "namespaces"]));
    assert!(can_i(
        &kubeconfig,
        &["patch", "schedules", "--subresource=status", "-n", n]
    ));
    // Uninstalling removes the cluster-scoped objects too.
    let cluster_role = format!("{n}-{RELEASE}-namespaces");
    assert!(kubectl(&["get", "clusterrole", &cluster_role], None).success);
    drop(release);
    assert!(!kubectl(&["get", "clusterrole", &cluster_role], None).success);
}

#[test]
fn cluster_wide_release_grants_every_namespace_and_nothing_more() {
    install_crds();
    let ns = TestNamespace::create("helm-cluster");
    let other = TestNamespace::create("helm-other");
    let release = Release::install(
        &ns.name,
        &["serviceAccount.roleArn=arn:aws:iam::123456789012:role/flowline"],
    );
    let annotation = jsonpath(
        &ns.name,
        &format!("serviceaccount/{RELEASE}"),
        "{.metadata.annotations.eks\\.amazonaws\\.com/role-arn}",
    );
    assert_eq!(annotation, "arn:aws:iam::123456789012:role/flowline");
    let kubeconfig = release.service_account_kubeconfig();
    let o = other.name.as_str();
    for (verb, resource, extra) in [
        ("list", "flows", "--all-namespaces"),
        ("watch", "runs", "--all-namespaces"),
        ("watch", "schedules", "--all-namespaces"),
        ("get", "flows", ""),
        ("patch", "flows", ""),
        ("patch", "runs", "--subresource=status"),
        ("create", "runs", ""),
        ("delete", "runs", ""),
        ("create", "events.events.k8s.io", ""),
        ("patch", "events.events.k8s.io", ""),
    ] {
        let mut args = vec![verb, resource, "-n", o];
        if !extra.is_empty() {
            args.push(extra);
        }
        assert!(can_i(&kubeconfig, &args), "granted: {args:?}");
    }
    for (verb, resource) in [
        ("delete", "flows"),
        ("update", "flows"),
        ("delete", "schedules"),
        ("create", "schedules"),
        ("update", "runs"),
        ("get", "secrets"),
        ("get", "configmaps"),
        ("create", "events"),
        ("create", "leases"),
        ("update", "namespaces"),
    ] {
        assert!(
            !can_i(&kubeconfig, &[verb, resource, "-n", o]),
            "denied: {verb} {resource} in another namespace"
        );
    }
    // Leases only in the release namespace.
    assert!(can_i(&kubeconfig, &["create", "leases", "-n", &ns.name]));
    let forbidden = kubectl_with(&kubeconfig, &["get", "secrets", "-n", o], None);
    assert!(
        forbidden.stderr.contains("Forbidden"),
        "{}",
        forbidden.stderr
    );
}
