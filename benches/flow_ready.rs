//! Apply-to-Ready latency of the Flow reconciler, against the local environment: creates 100
//! Flows one after another in a fresh namespace watched by a fresh controller, and prints the
//! latency from create to `Ready=True` (p50/p99), the AWS calls per Flow, and the emulator's
//! own latency per call, so the controller's added latency can be told apart from AWS's.
//! A benchmark, not a test: it prints numbers and asserts nothing about time.
//!
//! Run: `eval "$(hack/env-up.sh)"` (or `source <env>/env.sh`), then
//! `cargo bench --features e2e --bench flow_ready`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Benchmark code.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use support::{Bench, percentile};

use flowline::api::{Flow, condition, is_condition_true};

const FLOWS: usize = 100;

fn flow(i: usize) -> Flow {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": format!("bench-{i}")},
        "spec": {"steps": [
            {"name": "start", "command": ["echo", i.to_string()], "next": ["work"]},
            {"name": "work", "command": ["echo", "work"], "next": ["end"]},
            {"name": "end", "command": ["echo", "end"]}
        ]}
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let bench = Bench::start("bench", &[]).await;
    let endpoint = bench.endpoint.clone();

    let flows: Api<Flow> = Api::namespaced(bench.client.clone(), &bench.namespace);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_api = flows.clone();
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        let mut stream = watcher(watch_api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(flow)) = stream.next().await {
            let ready = flow
                .status
                .as_ref()
                .is_some_and(|s| is_condition_true(&s.conditions, condition::READY));
            if ready && seen.insert(flow.name_any()) {
                let _ = ready_tx.send((flow.name_any(), Instant::now()));
            }
        }
    });
    // Let the controller start and the watch settle before timing.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut latencies = Vec::with_capacity(FLOWS);
    let started = Instant::now();
    for i in 0..FLOWS {
        let created = Instant::now();
        flows
            .create(&PostParams::default(), &flow(i))
            .await
            .expect("Flow created");
        let (name, at) = tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .expect("Ready within 60 s")
            .expect("watch alive");
        assert_eq!(name, format!("bench-{i}"));
        latencies.push(at - created);
    }
    let total = started.elapsed();
    let counts = bench.requests();
    let calls: u64 = counts.values().sum();

    // The emulator's own latency per call, measured the same way the controller calls it.
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let sfn = aws_sdk_sfn::Client::new(&aws);
    let probe = Instant::now();
    for _ in 0..50 {
        let _ = sfn.list_state_machines().max_results(1).send().await;
    }
    let per_call = probe.elapsed() / 50;

    latencies.sort();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let calls_per_flow = calls as f64 / FLOWS as f64;
    println!("flows: {FLOWS} created one after another in {total:.1?}");
    println!(
        "apply-to-Ready latency: p50 {p50:.1?}, p99 {p99:.1?}, max {:.1?}",
        latencies[FLOWS - 1]
    );
    println!("AWS calls: {calls} ({calls_per_flow:.1} per Flow)");
    for (operation, count) in &counts {
        println!("  {operation}: {count}");
    }
    println!("emulator latency per call: {per_call:.1?}");
    let own = p50.saturating_sub(per_call.mul_f64(calls_per_flow));
    println!("controller's own added latency at p50 (latency - calls x per-call): {own:.1?}");

    // Clean up while the controller runs, so the finalizers are honoured.
    let _ = flows
        .delete_collection(&Default::default(), &Default::default())
        .await;
    for _ in 0..120 {
        if flows
            .list(&Default::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bench.finish().await;
}
