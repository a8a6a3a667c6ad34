//! Crash windows and races of the Run lifecycle, against the real API server and the
//! emulator: a Run stopped or deleted between StartExecution and its status write, history
//! limits that must not bring back what they deleted (discovery, restarts, GitOps re-applies),
//! and a stalled Run that its Flow's change wakes.

use std::time::Duration;

use crate::harness::{
    ControllerProcess, TestNamespace, aws_config, condition, install_crds, jsonpath, kubectl,
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(90);

fn apply(namespace: &str, manifest: &str) {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).ok();
}

fn wait_phase(namespace: &str, run: &str, phase: &str) {
    wait_for(&format!("Run {run} to be {phase}"), TIMEOUT, || {
        (jsonpath(namespace, &format!("run/{run}"), "{.status.phase}") == phase).then_some(())
    });
}

fn wait_ready(namespace: &str, flow: &str) -> String {
    wait_for(&format!("Flow {flow} to be Ready"), TIMEOUT, || {
        (condition(namespace, &format!("flow/{flow}"), "Ready").0 == "True").then_some(())
    });
    jsonpath(
        namespace,
        &format!("flow/{flow}"),
        "{.status.stateMachineArn}",
    )
}

/// A two-step Flow whose `work` step gets the given environment (the emulator's controls).
fn flow(name: &str, work_env: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {{name: {name}}}\nspec:\n  steps:\n    - {{name: start, command: [\"true\"], next: [work]}}\n    - {{name: work, command: [\"true\"], next: [end], env: [{work_env}]}}\n    - {{name: end, command: [\"true\"]}}\n"
    )
}

fn run(name: &str, flow: &str) -> String {
    format!(
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  flowRef: {{name: {flow}}}\n"
    )
}

/// Every execution of a state machine: (name, status).
async fn executions(sfn: &aws_sdk_sfn::Client, machine: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .list_executions()
            .state_machine_arn(machine)
            .set_next_token(token)
            .send()
            .await
            .expect("executions listed");
        all.extend(
            page.executions()
                .iter()
                .map(|e| (e.name().to_owned(), e.status().as_str().to_owned())),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return all;
        }
    }
}

/// Starts a controller that exits right after StartExecution (before the Run's status names
/// the execution), creates a Run of a long-running Flow and waits for that exit. Returns the
/// controller, the Flow's state machine and the execution's name.
async fn crash_after_start(ns: &TestNamespace, name: &str) -> (ControllerProcess, String, String) {
    let mut controller =
        ControllerProcess::start_with(&ns.name, &[("FLOWLINE_FAILPOINT", "after-execution-start")]);
    apply(
        &ns.name,
        &flow("slow", "{name: EMULATOR_RUN_SECONDS, value: \"120\"}"),
    );
    let machine = wait_ready(&ns.name, "slow");
    apply(&ns.name, &run(name, "slow"));
    let exit = controller.wait_exit(TIMEOUT);
    assert_eq!(exit.code(), Some(86), "stopped at the fail point");
    assert_eq!(
        jsonpath(&ns.name, &format!("run/{name}"), "{.status.executionArn}"),
        "",
        "the status does not name the execution"
    );
    let sfn = aws_sdk_sfn::Client::new(&aws_config().await);
    let started = executions(&sfn, &machine).await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].1, "RUNNING");
    (controller, machine, started[0].0.clone())
}

#[tokio::test]
async fn run_stopped_between_start_and_status_write_stops_its_execution() {
    install_crds();
    let ns = TestNamespace::create("race-stop");
    let (mut controller, machine, execution) = crash_after_start(&ns, "slow-1").await;
    kubectl(
        &[
            "patch",
            "run",
            "slow-1",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"stop":true}}"#,
        ],
        None,
    )
    .ok();
    controller.restart_with(&[]);
    wait_phase(&ns.name, "slow-1", "Aborted");
    let sfn = aws_sdk_sfn::Client::new(&aws_config().await);
    let after = executions(&sfn, &machine).await;
    assert_eq!(
        after,
        vec![(execution.clone(), "ABORTED".to_owned())],
        "the one execution is stopped, none other started"
    );
    assert!(
        jsonpath(&ns.name, "run/slow-1", "{.status.executionArn}").ends_with(&execution),
        "the Run names the execution it stopped"
    );
}

#[tokio::test]
async fn run_deleted_between_start_and_status_write_stops_its_execution() {
    install_crds();
    let ns = TestNamespace::create("race-delete");
    let (mut controller, machine, execution) = crash_after_start(&ns, "slow-1").await;
    kubectl(
        &["delete", "run", "slow-1", "-n", &ns.name, "--wait=false"],
        None,
    )
    .ok();
    controller.restart_with(&[]);
    wait_for("the Run to be gone", TIMEOUT, || {
        (!kubectl(&["get", "run", "slow-1", "-n", &ns.name], None).success).then_some(())
    });
    // The emulator's StopExecution ends the execution's worker, which records ABORTED a
    // moment later: poll for it rather than read once.
    let sfn = aws_sdk_sfn::Client::new(&aws_config().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut after = executions(&sfn, &machine).await;
    while after.iter().any(|(_, status)| status == "RUNNING")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = executions(&sfn, &machine).await;
    }
    assert_eq!(after, vec![(execution, "ABORTED".to_owned())]);
}

/// How many Runs the controller created for executions started elsewhere, from its log.
fn adoptions(controller: &ControllerProcess) -> usize {
    std::fs::read_to_string(&controller.log)
        .unwrap_or_default()
        .matches("created a Run for an execution started outside Flowline")
        .count()
}

fn run_names(namespace: &str) -> Vec<String> {
    let mut names: Vec<String> = jsonpath(namespace, "runs", "{.items[*].metadata.name}")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn history_limits_and_discovery_never_bring_back_a_pruned_run() {
    install_crds();
    let ns = TestNamespace::create("race-prune");
    let settings = [
        ("FLOWLINE_KEEP_SUCCEEDED_RUNS", "10"),
        ("FLOWLINE_DISCOVERY_INTERVAL_SECONDS", "1"),
    ];
    let mut controller = ControllerProcess::start_with(&ns.name, &settings);
    apply(&ns.name, &flow("burst", "{name: X, value: \"1\"}"));
    let machine = wait_ready(&ns.name, "burst");
    let sfn = aws_sdk_sfn::Client::new(&aws_config().await);
    for i in 0..20 {
        sfn.start_execution()
            .state_machine_arn(&machine)
            .name(format!("console-{i}"))
            .input("{\"parameters\": {}}")
            .send()
            .await
            .expect("execution started");
    }
    wait_for("every execution to be adopted", TIMEOUT, || {
        (adoptions(&controller) >= 20).then_some(())
    });
    let kept = wait_for("ten succeeded Runs to remain", TIMEOUT, || {
        let phases = jsonpath(&ns.name, "runs", "{range .items[*]}{.status.phase} {end}");
        let phases: Vec<&str> = phases.split_whitespace().collect();
        (phases.len() == 10 && phases.iter().all(|p| *p == "Succeeded"))
            .then(|| run_names(&ns.name))
    });
    // Three sweeps and more, all within the minute that discovery lists behind its cursor:
    // the ten pruned executions get no Run again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(adoptions(&controller), 20, "no Run re-created by a sweep");
    assert_eq!(run_names(&ns.name), kept, "exactly the ten newest remain");
    // A person deletes one of the adopted Runs; then the controller restarts.
    kubectl(&["delete", "run", &kept[0], "-n", &ns.name], None).ok();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        adoptions(&controller),
        20,
        "a deleted Run is not re-created"
    );
    controller.kill_and_restart();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        adoptions(&controller),
        20,
        "no Run re-created after a restart"
    );
    assert_eq!(run_names(&ns.name), kept[1..].to_vec());
}

#[tokio::test]
async fn run_declared_in_git_is_not_pruned_and_a_reapply_starts_nothing() {
    install_crds();
    let ns = TestNamespace::create("race-gitops");
    let _controller =
        ControllerProcess::start_with(&ns.name, &[("FLOWLINE_KEEP_SUCCEEDED_RUNS", "1")]);
    apply(&ns.name, &flow("declared", "{name: X, value: \"1\"}"));
    let machine = wait_ready(&ns.name, "declared");
    // As Argo CD applies it: with its tracking annotation.
    let declared = "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata:\n  name: from-git\n  annotations: {argocd.argoproj.io/tracking-id: \"ml:flowline.io/Run:team/from-git\"}\nspec:\n  flowRef: {name: declared}\n";
    apply(&ns.name, declared);
    wait_phase(&ns.name, "from-git", "Succeeded");
    for i in 0..3 {
        let name = format!("by-hand-{i}");
        apply(&ns.name, &run(&name, "declared"));
        wait_for(&format!("Run {name} to finish"), TIMEOUT, || {
            let phase = jsonpath(&ns.name, &format!("run/{name}"), "{.status.phase}");
            // Pruned already counts as finished.
            (phase == "Succeeded" || phase.is_empty()).then_some(())
        });
    }
    wait_for(
        "the history limit to prune the Runs applied by hand",
        TIMEOUT,
        || (run_names(&ns.name) == ["by-hand-2", "from-git"]).then_some(()),
    );
    // The GitOps tool syncs again.
    apply(&ns.name, declared);
    std::thread::sleep(Duration::from_secs(3));
    let sfn = aws_sdk_sfn::Client::new(&aws_config().await);
    let of_declared: Vec<(String, String)> = executions(&sfn, &machine)
        .await
        .into_iter()
        .filter(|(name, _)| name.starts_with("from-git-"))
        .collect();
    assert_eq!(
        of_declared.len(),
        1,
        "one execution of the declared Run: {of_declared:?}"
    );
    assert_eq!(
        jsonpath(&ns.name, "run/from-git", "{.status.phase}"),
        "Succeeded"
    );
}

#[test]
fn stalled_run_starts_when_its_flow_declares_what_it_lacked() {
    install_crds();
    let ns = TestNamespace::create("race-stalled");
    let _controller = ControllerProcess::start(&ns.name);
    apply(&ns.name, &flow("grows", "{name: X, value: \"1\"}"));
    wait_ready(&ns.name, "grows");
    apply(
        &ns.name,
        "apiVersion: flowline.io/v1alpha1\nkind: Run\nmetadata: {name: tuned}\nspec:\n  flowRef: {name: grows}\n  parameters: {epochs: \"3\"}\n",
    );
    wait_for("the Run to stall on the unknown parameter", TIMEOUT, || {
        let (stalled, reason, _) = condition(&ns.name, "run/tuned", "Stalled");
        (stalled == "True" && reason == "InvalidParameters").then_some(())
    });
    // The Flow now declares the parameter; the Run must not wait for a change of its own
    // (the recheck interval is a minute: well past this test's wait).
    let with_parameter = flow("grows", "{name: X, value: \"1\"}").replace(
        "spec:\n",
        "spec:\n  parameters: [{name: epochs, type: Int}]\n",
    );
    apply(&ns.name, &with_parameter);
    wait_for("the Run to start", Duration::from_secs(30), || {
        (!jsonpath(&ns.name, "run/tuned", "{.status.executionArn}").is_empty()).then_some(())
    });
    wait_phase(&ns.name, "tuned", "Succeeded");
}

/// The guard Run status writes rely on: a status merge patch that carries the resourceVersion
/// it was computed from is refused once someone else wrote the Run, instead of overwriting
/// that write.
#[test]
fn a_status_patch_computed_from_a_stale_read_is_refused() {
    install_crds();
    let ns = TestNamespace::create("race-status");
    apply(&ns.name, &run("guarded", "absent"));
    let read_at = jsonpath(&ns.name, "run/guarded", "{.metadata.resourceVersion}");
    let patch = |phase: &str| {
        kubectl(
            &[
                "patch",
                "run",
                "guarded",
                "-n",
                &ns.name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &format!(
                    r#"{{"metadata":{{"resourceVersion":"{read_at}"}},"status":{{"phase":"{phase}"}}}}"#
                ),
            ],
            None,
        )
    };
    assert!(patch("Running").success, "the first writer wins");
    let stale = patch("Pending");
    assert!(
        !stale.success && stale.stderr.contains("Conflict"),
        "{}",
        stale.stderr
    );
    assert_eq!(
        jsonpath(&ns.name, "run/guarded", "{.status.phase}"),
        "Running"
    );
}

/// `flowline_cached_entries` from the controller's metrics endpoint.
fn cached_entries(controller: &ControllerProcess) -> Option<f64> {
    let (_, text) = controller.http_get("/metrics")?;
    text.lines()
        .find(|line| line.starts_with("flowline_cached_entries "))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[test]
fn state_cached_for_a_deleted_flow_is_dropped() {
    install_crds();
    let ns = TestNamespace::create("race-evict");
    let controller = ControllerProcess::start_with(
        &ns.name,
        &[
            ("FLOWLINE_DISCOVERY_INTERVAL_SECONDS", "1"),
            ("FLOWLINE_CACHE_EVICTION_INTERVAL_SECONDS", "1"),
        ],
    );
    apply(&ns.name, &flow("brief", "{name: X, value: \"1\"}"));
    wait_ready(&ns.name, "brief");
    apply(&ns.name, &run("brief-1", "brief"));
    wait_phase(&ns.name, "brief-1", "Succeeded");
    // Discovery now keeps a cursor for the Flow.
    wait_for("the Flow's state to be cached", TIMEOUT, || {
        cached_entries(&controller)
            .filter(|n| *n >= 1.0)
            .map(|_| ())
    });
    kubectl(
        &["delete", "run,flow", "--all", "-n", &ns.name, "--wait=true"],
        None,
    )
    .ok();
    wait_for(
        "the state of what was deleted to be dropped",
        TIMEOUT,
        || (cached_entries(&controller) == Some(0.0)).then_some(()),
    );
}
