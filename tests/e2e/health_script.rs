//! The Argo CD health script of the chart (`charts/flowline/health/health.lua`), run by the
//! Lua VM Argo CD embeds (gopher-lua, built by `hack/build-tools.sh` as `lua`) against Flows,
//! Runs and Schedules in every state the controller reports.

use serde_json::{Value, json};

use crate::harness::{env, repo_root};

/// Runs the health script on `object` and returns (status, message).
pub fn health(object: &Value) -> (String, String) {
    let script = repo_root().join("charts/flowline/health/health.lua");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("object.json");
    std::fs::write(&path, object.to_string()).expect("object written");
    let output = std::process::Command::new(env().bin_dir.join("lua"))
        .arg(&script)
        .arg(&path)
        .output()
        .expect("the lua runner starts (hack/build-tools.sh builds it)");
    assert!(
        output.status.success(),
        "the health script failed on {object}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text.lines();
    (
        lines.next().unwrap_or_default().to_owned(),
        lines.next().unwrap_or_default().to_owned(),
    )
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
    })
}

/// The three kstatus conditions as the controller sets them for one outcome.
fn conditions(outcome: &str, reason: &str, message: &str) -> Value {
    let flag = |type_: &str| if type_ == outcome { "True" } else { "False" };
    json!([
        condition("Ready", flag("Ready"), reason, message),
        condition("Reconciling", flag("Reconciling"), reason, message),
        condition("Stalled", flag("Stalled"), reason, message),
    ])
}

fn object(kind: &str, generation: i64, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "sample", "namespace": "team-a", "generation": generation},
        "spec": {},
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn with_conditions(kind: &str, outcome: &str, reason: &str, message: &str) -> Value {
    object(
        kind,
        1,
        Some(json!({"observedGeneration": 1, "conditions": conditions(outcome, reason, message)})),
    )
}

fn run(phase: &str, outcome: &str, reason: &str, message: &str) -> Value {
    object(
        "Run",
        1,
        Some(json!({
            "observedGeneration": 1,
            "phase": phase,
            "message": message,
            "conditions": conditions(outcome, reason, message),
        })),
    )
}

fn assert_health(object: &Value, status: &str, message: &str) {
    let (got_status, got_message) = health(object);
    assert_eq!(
        (got_status.as_str(), got_message.as_str()),
        (status, message),
        "health of {object}"
    );
}

#[test]
fn ready_flows_and_schedules_are_healthy() {
    for kind in ["Flow", "Schedule"] {
        assert_health(
            &with_conditions(
                kind,
                "Ready",
                "Applied",
                "state machine version 3 is current",
            ),
            "Healthy",
            "state machine version 3 is current",
        );
    }
}

#[test]
fn reconciling_objects_are_progressing_with_the_condition_message() {
    for kind in ["Flow", "Schedule"] {
        assert_health(
            &with_conditions(
                kind,
                "Reconciling",
                "Applying",
                "registering job definitions",
            ),
            "Progressing",
            "registering job definitions",
        );
    }
    assert_health(
        &run(
            "Running",
            "Reconciling",
            "Running",
            "the execution is running",
        ),
        "Progressing",
        "the execution is running",
    );
    // A Run waiting for its Flow is Pending and Reconciling.
    assert_health(
        &run(
            "Pending",
            "Reconciling",
            "FlowNotReady",
            "Flow trainer is not Ready",
        ),
        "Progressing",
        "Flow trainer is not Ready",
    );
}

#[test]
fn stalled_objects_are_degraded_with_the_condition_message() {
    let message = "job queue `gpu` not found";
    for kind in ["Flow", "Schedule"] {
        assert_health(
            &with_conditions(kind, "Stalled", "JobQueueNotFound", message),
            "Degraded",
            message,
        );
    }
    // A Run whose parameters are wrong stalls before it starts.
    assert_health(
        &run(
            "Pending",
            "Stalled",
            "InvalidParameters",
            "parameter `epochs` is required",
        ),
        "Degraded",
        "parameter `epochs` is required",
    );
}

#[test]
fn objects_the_controller_has_not_caught_up_with_are_progressing() {
    for kind in ["Flow", "Run", "Schedule"] {
        let (status, _) = health(&object(kind, 1, None));
        assert_eq!(status, "Progressing", "{kind} without status");
        // Ready for generation 2 while the spec is at generation 3: not yet judged.
        let mut stale = with_conditions(kind, "Ready", "Applied", "ok");
        stale["metadata"]["generation"] = json!(3);
        stale["status"]["observedGeneration"] = json!(2);
        assert_health(
            &stale,
            "Progressing",
            "Waiting for the controller to observe generation 3",
        );
        // A status without observedGeneration has not been written for this spec either.
        let mut unobserved = with_conditions(kind, "Ready", "Applied", "ok");
        unobserved["status"]
            .as_object_mut()
            .expect("status is an object")
            .remove("observedGeneration");
        let (status, _) = health(&unobserved);
        assert_eq!(status, "Progressing", "{kind} without observedGeneration");
    }
}

#[test]
fn finished_runs_are_judged_by_their_phase() {
    // A finished Run is Ready only if it succeeded; otherwise Stalled, its phase the reason.
    let failed = "step `work` failed: CannotPullContainerError: pull access denied";
    assert_health(
        &run("Failed", "Stalled", "Failed", failed),
        "Degraded",
        failed,
    );
    assert_health(
        &run("Aborted", "Stalled", "Aborted", "the execution was stopped"),
        "Degraded",
        "the execution was stopped",
    );
    assert_health(
        &run("TimedOut", "Stalled", "TimedOut", "the execution timed out"),
        "Degraded",
        "the execution timed out",
    );
    assert_health(
        &run("Succeeded", "Ready", "Succeeded", "the execution succeeded"),
        "Healthy",
        "the execution succeeded",
    );
    // Without a message the phase speaks.
    let mut silent = run("Failed", "Stalled", "Failed", "x");
    silent["status"]
        .as_object_mut()
        .expect("status is an object")
        .remove("message");
    assert_health(&silent, "Degraded", "Run Failed");
}
