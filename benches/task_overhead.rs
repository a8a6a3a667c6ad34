//! The task wrapper's own cost: `flowline task -- true` against `true` alone, with no inputs,
//! no outputs and no secrets, and the difference per task (median and p95 over repeated runs).
//! A benchmark, not a test: it prints numbers and asserts nothing about time. Run with
//! `cargo bench --bench task_overhead` (add `--profile dev` to skip the release build).
//!
//! Without an S3 endpoint it measures the process, the runtime and the contract alone (no
//! `FLOWLINE_ARTIFACT_URI`, so nothing is stored). With `FLOWLINE_AWS_EXEC_ENDPOINT` set (the
//! local environment's `env.sh` exports it) it also stores each run's `_task.json` there, the
//! one object every wrapped task writes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 40;

fn time(mut command: Command) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let status = command.status().expect("the command starts");
        samples.push(start.elapsed());
        assert!(status.success(), "{command:?} failed: {status}");
    }
    samples.sort();
    samples
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn report(name: &str, samples: &[Duration], baseline: &[Duration]) {
    let median = samples[samples.len() / 2];
    let p95 = samples[samples.len() * 95 / 100];
    let base = baseline[baseline.len() / 2];
    println!(
        "{name:<40} median {:>7.2} ms  p95 {:>7.2} ms  overhead (median) {:>7.2} ms",
        ms(median),
        ms(p95),
        ms(median.saturating_sub(base))
    );
}

fn command(program: &str, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("TMPDIR", std::env::temp_dir())
        .stderr(std::process::Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

fn main() {
    let flowline = env!("CARGO_BIN_EXE_flowline");
    let bare = time(command("true", &[], &[]));
    report("true", &bare, &bare);
    let contract = [
        ("FLOWLINE_FLOW", "bench".to_string()),
        ("FLOWLINE_STEP", "start".to_string()),
        ("FLOWLINE_TASK_ID", "0".to_string()),
        ("FLOWLINE_RUN_ID", "bench-run".to_string()),
    ];
    let wrapped = time(command(flowline, &["task", "--", "true"], &contract));
    report("flowline task -- true (nothing stored)", &wrapped, &bare);

    if let Ok(endpoint) = std::env::var("FLOWLINE_AWS_EXEC_ENDPOINT") {
        let mut env = contract.to_vec();
        env.extend([
            (
                "FLOWLINE_ARTIFACT_URI",
                "s3://flowline/bench/run/start/0/".to_string(),
            ),
            ("FLOWLINE_S3_ENDPOINT", endpoint.clone()),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ]);
        let stored = time(command(flowline, &["task", "--", "true"], &env));
        report("flowline task -- true (_task.json stored)", &stored, &bare);
    }
}
