//! Running like a production controller: two replicas elect one leader on a Lease, only the
//! leader reconciles, a killed leader is replaced within the lease duration, a stopped one
//! hands over at once, `/metrics` and the health endpoints answer, and a namespace cannot use
//! IAM roles it was not allowed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{
    ControllerProcess, TestNamespace, condition, install_crds, jsonpath, kubectl, unique_name,
    wait_for, writes,
};

const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_secs(2);

fn flow(name: &str) -> String {
    format!(
        r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: {name}}}
spec:
  steps:
    - {{name: start, command: ["true"], next: [end]}}
    - {{name: end, command: ["true"]}}
"#
    )
}

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

fn wait_ready(namespace: &str, flow: &str, timeout: Duration) {
    wait_for(&format!("Flow {flow} to be Ready"), timeout, || {
        let (status, _, _) = condition(namespace, &format!("flow/{flow}"), "Ready");
        (status == "True").then_some(())
    });
}

fn holder(namespace: &str, lease: &str) -> String {
    jsonpath(
        namespace,
        &format!("lease/{lease}"),
        "{.spec.holderIdentity}",
    )
}

/// Two replicas sharing a Lease of the test's own, in the test's namespace.
fn replicas(namespace: &str, lease: &str) -> (ControllerProcess, ControllerProcess) {
    let env = [
        ("FLOWLINE_LEADER_ELECTION", "true"),
        ("FLOWLINE_LEASE_NAME", lease),
        ("FLOWLINE_LEASE_NAMESPACE", namespace),
    ];
    (
        ControllerProcess::start_replica(namespace, "a", &env),
        ControllerProcess::start_replica(namespace, "b", &env),
    )
}

/// Waits for a leader and returns `(leader, follower)`.
fn leader_and_follower(
    namespace: &str,
    lease: &str,
    a: ControllerProcess,
    b: ControllerProcess,
) -> (ControllerProcess, ControllerProcess) {
    let identity = wait_for("a leader", Duration::from_secs(30), || {
        let holder = holder(namespace, lease);
        (!holder.is_empty()).then_some(holder)
    });
    if identity.ends_with(&format!("-{}", a.pid())) {
        (a, b)
    } else {
        assert!(identity.ends_with(&format!("-{}", b.pid())), "{identity}");
        (b, a)
    }
}

/// The value of one sample of the metrics text (`name{labels}`), summed over matching lines.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `/readyz` once it answers 200 (a leader is ready once its watches have synced).
fn ready_body(controller: &ControllerProcess) -> (u16, String) {
    wait_for("the replica to be ready", Duration::from_secs(30), || {
        controller
            .http_get("/readyz")
            .filter(|(code, _)| *code == 200)
    })
}

#[test]
fn only_the_leader_reconciles_and_a_killed_leader_is_replaced_within_the_lease_duration() {
    install_crds();
    let ns = TestNamespace::create("leader");
    let lease = unique_name("lease");
    let (a, b) = replicas(&ns.name, &lease);
    let (mut leader, follower) = leader_and_follower(&ns.name, &lease, a, b);

    apply(&ns.name, &flow("first"));
    wait_ready(&ns.name, "first", Duration::from_secs(60));
    assert_eq!(ready_body(&leader), (200, "leader\n".to_owned()));
    assert_eq!(ready_body(&follower), (200, "follower\n".to_owned()));
    assert_eq!(
        follower.aws_requests(),
        BTreeMap::new(),
        "the follower does not reconcile"
    );
    assert_eq!(leader.http_get("/healthz").map(|(code, _)| code), Some(200));

    // Metrics of the leader, after a Flow became Ready.
    let (code, text) = leader.http_get("/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    for family in [
        "flowline_reconciles_total{kind=\"Flow\",outcome=\"success\"}",
        "flowline_reconcile_duration_seconds_count{kind=\"Flow\"}",
        "flowline_aws_calls_total{service=\"states\",operation=\"CreateStateMachine\",outcome=\"success\"}",
        "flowline_aws_calls_total{service=\"batch\",operation=\"RegisterJobDefinition\",outcome=\"success\"}",
        "flowline_objects{kind=\"Flow\"}",
        "flowline_leader",
    ] {
        assert!(metric(&text, family) > 0.0, "{family} in\n{text}");
    }
    assert!(
        text.contains("flowline_runs{phase=\"Running\"} 0"),
        "{text}"
    );
    let (_, follower_text) = follower.http_get("/metrics").expect("metrics answer");
    assert_eq!(metric(&follower_text, "flowline_leader "), 0.0);

    // SIGKILL: no release; the follower takes over once the lease expires.
    let killed = Instant::now();
    leader.kill();
    apply(&ns.name, &flow("after-kill"));
    let follower_identity = format!("-{}", follower.pid());
    wait_for(
        "the follower to acquire the lease",
        Duration::from_secs(60),
        || {
            holder(&ns.name, &lease)
                .ends_with(&follower_identity)
                .then_some(())
        },
    );
    let acquired = killed.elapsed();
    wait_ready(&ns.name, "after-kill", Duration::from_secs(60));
    let failover = killed.elapsed();
    eprintln!(
        "failover after SIGKILL: lease acquired after {:.1} s, new Flow Ready after {:.1} s (lease duration {} s, renew {} s)",
        acquired.as_secs_f64(),
        failover.as_secs_f64(),
        LEASE_DURATION.as_secs(),
        RENEW.as_secs()
    );
    // The follower takes over at most one lease duration after the last renewal it saw
    // (renewals are at most RENEW apart), plus one retry to notice.
    assert!(
        acquired <= LEASE_DURATION + RENEW + RETRY,
        "acquired after {acquired:?}"
    );
    assert!(
        failover <= LEASE_DURATION + RENEW + RETRY + Duration::from_secs(3),
        "Ready after {failover:?}"
    );
    assert_eq!(ready_body(&follower), (200, "leader\n".to_owned()));
}

#[test]
fn a_stopped_leader_releases_the_lease_and_the_follower_takes_over_at_once() {
    install_crds();
    let ns = TestNamespace::create("handover");
    let lease = unique_name("lease");
    let (a, b) = replicas(&ns.name, &lease);
    let (mut leader, follower) = leader_and_follower(&ns.name, &lease, a, b);
    apply(&ns.name, &flow("first"));
    wait_ready(&ns.name, "first", Duration::from_secs(60));

    let stopped = Instant::now();
    leader.terminate();
    let status = leader.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    apply(&ns.name, &flow("after-stop"));
    let follower_identity = format!("-{}", follower.pid());
    wait_for(
        "the follower to acquire the lease",
        Duration::from_secs(30),
        || {
            holder(&ns.name, &lease)
                .ends_with(&follower_identity)
                .then_some(())
        },
    );
    let acquired = stopped.elapsed();
    wait_ready(&ns.name, "after-stop", Duration::from_secs(30));
    let failover = stopped.elapsed();
    eprintln!(
        "failover after SIGTERM: lease acquired after {:.1} s, new Flow Ready after {:.1} s",
        acquired.as_secs_f64(),
        failover.as_secs_f64()
    );
    // Released: no waiting for expiry, only for the follower's next retry.
    assert!(
        acquired <= RETRY + Duration::from_secs(3),
        "acquired after {acquired:?}"
    );
    assert!(
        failover <= RETRY + Duration::from_secs(6),
        "Ready after {failover:?}"
    );
    let log = std::fs::read_to_string(&leader.log).unwrap_or_default();
    assert!(log.contains("released the leader lease"), "{log}");
}

#[test]
fn a_namespace_may_use_only_the_roles_it_was_allowed() {
    install_crds();
    let ns = TestNamespace::create("tenancy");
    kubectl(
        &[
            "annotate",
            "namespace",
            &ns.name,
            "flowline.io/allowed-roles=arn:aws:iam::123456789012:role/team-a-*",
        ],
        None,
    )
    .ok();
    let controller = ControllerProcess::start(&ns.name);
    let denied = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: denied}
spec:
  steps:
    - name: start
      command: ["true"]
      next: [end]
      batch: {iamRole: "arn:aws:iam::123456789012:role/team-b-jobs"}
    - {name: end, command: ["true"]}
"#;
    apply(&ns.name, denied);
    let message = wait_for("Flow denied to be Stalled", Duration::from_secs(60), || {
        let (status, reason, message) = condition(&ns.name, "flow/denied", "Stalled");
        (status == "True").then_some((reason, message))
    });
    assert_eq!(message.0, "NotAllowed");
    for part in [
        "spec.steps[start].batch.iamRole",
        "arn:aws:iam::123456789012:role/team-b-jobs",
        "namespace annotation flowline.io/allowed-roles: arn:aws:iam::123456789012:role/team-a-*",
    ] {
        assert!(message.1.contains(part), "{part} in {}", message.1);
    }
    let requests = controller.aws_requests();
    assert_eq!(
        writes(&requests),
        BTreeMap::new(),
        "nothing created: {requests:?}"
    );
    // One read: whether the Flow has a state machine to take back (it has none); and the
    // controller's own account, asked of STS once at start.
    assert!(
        requests
            .keys()
            .all(|op| op == "states:DescribeStateMachine" || op == "sts:GetCallerIdentity"),
        "no AWS call but the look for its own state machine: {requests:?}"
    );

    let allowed = denied
        .replace("name: denied", "name: allowed")
        .replace("team-b-jobs", "team-a-jobs");
    apply(&ns.name, &allowed);
    wait_ready(&ns.name, "allowed", Duration::from_secs(60));
    let (stalled, _, _) = condition(&ns.name, "flow/denied", "Stalled");
    assert_eq!(stalled, "True");
}
