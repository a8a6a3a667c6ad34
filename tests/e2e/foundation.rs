//! The control plane itself: readiness, garbage collection (kube-controller-manager really
//! runs) and RBAC (authorization is enforced, not AlwaysAllow).

use std::time::Duration;

use crate::harness::{TestNamespace, env, kubectl, kubectl_with, wait_for};

#[test]
fn api_server_answers_readyz() {
    let body = kubectl(&["get", "--raw", "/readyz"], None).ok();
    assert_eq!(body.trim(), "ok");
    let version = kubectl(&["version", "-o", "json"], None).ok();
    assert!(
        version.contains("\"gitVersion\": \"v1.36."),
        "server should report its stamped release version, got {version}"
    );
}

#[test]
fn owned_object_is_garbage_collected_after_its_owner_is_deleted() {
    let ns = TestNamespace::create("gc");
    kubectl(&["create", "configmap", "owner", "-n", &ns.name], None).ok();
    let owner_uid = kubectl(
        &[
            "get",
            "configmap",
            "owner",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
    .ok();
    let child = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"child","namespace":"{}",
        "ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"{}"}}]}}}}"#,
        ns.name, owner_uid
    );
    kubectl(&["create", "-f", "-"], Some(&child)).ok();
    kubectl(&["delete", "configmap", "owner", "-n", &ns.name], None).ok();
    // The garbage collector rediscovers resources every 30 s; allow a few rounds.
    wait_for(
        "the child ConfigMap to be collected",
        Duration::from_secs(120),
        || {
            let child = kubectl(&["get", "configmap", "child", "-n", &ns.name], None);
            (!child.success && child.stderr.contains("NotFound")).then_some(())
        },
    );
}

#[test]
fn user_without_rbac_rights_is_forbidden() {
    let ns = TestNamespace::create("rbac");
    let denied = kubectl_with(
        &env().unprivileged_kubeconfig,
        &["get", "configmaps", "-n", &ns.name],
        None,
    );
    assert!(!denied.success, "an unbound user must not list configmaps");
    assert!(
        denied.stderr.contains("Forbidden") && denied.stderr.contains("flowline-unprivileged"),
        "expected a 403 naming the user, got: {}",
        denied.stderr
    );
    // The same request as the admin succeeds: the denial is RBAC's, not a broken connection.
    kubectl(&["get", "configmaps", "-n", &ns.name], None).ok();
}

#[test]
fn default_service_account_appears_in_a_new_namespace() {
    let ns = TestNamespace::create("sa");
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || {
            kubectl(&["get", "serviceaccount", "default", "-n", &ns.name], None)
                .success
                .then_some(())
        },
    );
}
