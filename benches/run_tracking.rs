//! Run tracking cost and lag, against the local environment: starts 200 Runs (or
//! `FLOWLINE_BENCH_RUNS`) of a Flow whose
//! middle step runs for 120 s, then prints the AWS calls the controller makes per running Run
//! per minute (measured over a window in which every Run is running) and the status lag —
//! from the execution's stop time in Step Functions to the controller's status update seen by
//! a watch — at p50/p99. A benchmark, not a test: it prints numbers and asserts nothing about
//! time.
//!
//! Run against an environment whose emulator polls `.sync` tasks every 5 s (its default 0.5 s
//! saturates it with 200 running executions): `FLOWLINE_EMULATOR_SYNC_POLL_SECONDS=5
//! hack/env-up.sh`, `source <env>/env.sh`, then `cargo bench --features e2e --bench
//! run_tracking`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Benchmark code.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use support::{Bench, percentile};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use flowline::api::{Flow, Run, RunPhase, condition, is_condition_true};

/// Runs started; `FLOWLINE_BENCH_RUNS` overrides it.
fn run_count() -> usize {
    std::env::var("FLOWLINE_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
}

#[tokio::main]
async fn main() {
    let runs_count = run_count();
    let bench = Bench::start("track", &[("FLOWLINE_KEEP_SUCCEEDED_RUNS", "1000")]).await;
    let endpoint = bench.endpoint.clone();

    let flows: Api<Flow> = Api::namespaced(bench.client.clone(), &bench.namespace);
    let flow: Flow = serde_json::from_value(serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1", "kind": "Flow", "metadata": {"name": "tracked"},
        "spec": {"steps": [
            {"name": "start", "command": ["true"], "next": ["work"]},
            {"name": "work", "command": ["true"], "next": ["end"], "env": [{"name": "EMULATOR_RUN_SECONDS", "value": "120"}]},
            {"name": "end", "command": ["true"]}
        ]}
    }))
    .unwrap();
    flows.create(&PostParams::default(), &flow).await.unwrap();
    for _ in 0..120 {
        let ready = flows
            .get("tracked")
            .await
            .ok()
            .and_then(|f| f.status)
            .is_some_and(|s| is_condition_true(&s.conditions, condition::READY));
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let runs: Api<Run> = Api::namespaced(bench.client.clone(), &bench.namespace);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, SystemTime)>();
    let watch_api = runs.clone();
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        let mut stream = watcher(watch_api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(run)) = stream.next().await {
            let finished = run
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RunPhase::is_finished);
            if finished && seen.insert(run.name_any()) {
                let _ = done_tx.send((run.name_any(), SystemTime::now()));
            }
        }
    });
    let started = Instant::now();
    for i in 0..runs_count {
        let run: Run = serde_json::from_value(serde_json::json!({
            "apiVersion": "flowline.io/v1alpha1", "kind": "Run", "metadata": {"name": format!("tracked-{i}")},
            "spec": {"flowRef": {"name": "tracked"}}
        }))
        .unwrap();
        runs.create(&PostParams::default(), &run).await.unwrap();
    }
    // Measure the steady cost while every Run is running: a 10 s window after all started.
    loop {
        let list = runs.list(&Default::default()).await.unwrap();
        let running = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running))
            .count();
        if running == runs_count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(110),
            "Runs did not all start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_running = started.elapsed();
    let before = bench.requests().values().sum::<u64>();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = bench.requests().values().sum::<u64>() - before;
    let window = window.elapsed();
    let per_run_minute = calls as f64 / runs_count as f64 / window.as_secs_f64() * 60.0;

    let mut seen_at = BTreeMap::new();
    while seen_at.len() < runs_count {
        let (name, at) = tokio::time::timeout(Duration::from_secs(300), done_rx.recv())
            .await
            .expect("Runs finish")
            .unwrap();
        seen_at.insert(name, at);
    }
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .load()
        .await;
    let sfn = aws_sdk_sfn::Client::new(&aws);
    let mut lags = Vec::new();
    for run in runs.list(&Default::default()).await.unwrap().items {
        let arn = run
            .status
            .as_ref()
            .and_then(|s| s.execution_arn.clone())
            .unwrap();
        let described = sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        let stop = described.stop_date().unwrap();
        let stop = SystemTime::UNIX_EPOCH + Duration::from_millis(stop.to_millis().unwrap() as u64);
        let seen = seen_at[&run.name_any()];
        lags.push(seen.duration_since(stop).unwrap_or_default());
    }
    lags.sort();
    println!("runs: {runs_count}, all running after {all_running:.1?}");
    println!(
        "AWS calls per running Run per minute: {per_run_minute:.1} ({calls} calls in {window:.1?})"
    );
    println!(
        "status lag (execution stopped -> Run status seen): p50 {:.2?}, p99 {:.2?}",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99)
    );

    let _ = runs
        .delete_collection(&Default::default(), &Default::default())
        .await;
    let _ = flows
        .delete_collection(&Default::default(), &Default::default())
        .await;
    for _ in 0..120 {
        let empty = runs
            .list(&Default::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
            && flows
                .list(&Default::default())
                .await
                .map(|l| l.items.is_empty())
                .unwrap_or(true);
        if empty {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bench.finish().await;
}
