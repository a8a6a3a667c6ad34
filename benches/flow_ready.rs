//! Apply-to-Ready latency of the Flow reconciler, against the local environment: creates 100
//! Flows one after another in a fresh namespace watched by a fresh controller, and prints the
//! latency from create to `Ready=True` (p50/p99), the AWS calls per Flow, and the emulator's
//! own latency per call, so the controller's added latency can be told apart from AWS's.
//! The controller logs each AWS call and reconcile phase (debug level); from that log the
//! benchmark takes, per Flow, the time its reconcile waited on AWS (calls made at once count
//! once) and prints the controller-side latency: apply-to-Ready minus that wait. What is left
//! is the controller's own work, its API server writes and the two watch deliveries.
//! A benchmark, not a test: it prints numbers and asserts nothing about time.
//!
//! Run: `eval "$(hack/env-up.sh)"` (or `source <env>/env.sh`), then
//! `cargo bench --features e2e --bench flow_ready`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Benchmark code.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
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
    let bench = Bench::start("bench", &[("RUST_LOG", "warn,flowline=debug")]).await;
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
    let mut by_flow = BTreeMap::new();
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
        by_flow.insert(name, at - created);
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

    let waits = aws_waits(&bench.controller_log());
    let mut aws_wait: Vec<Duration> = by_flow
        .keys()
        .filter_map(|f| waits.get(f))
        .copied()
        .collect();
    let mut controller_side: Vec<Duration> = by_flow
        .iter()
        .filter_map(|(flow, latency)| Some(latency.saturating_sub(*waits.get(flow)?)))
        .collect();
    if controller_side.is_empty() {
        println!("controller-side latency: no debug log to measure it from");
    } else {
        aws_wait.sort();
        controller_side.sort();
        println!(
            "waiting on AWS per Flow (critical path): p50 {:.1?}, p99 {:.1?}",
            percentile(&aws_wait, 0.50),
            percentile(&aws_wait, 0.99)
        );
        println!(
            "controller-side apply-to-Ready (latency - waiting on AWS), {} Flows: p50 {:.1?}, p99 {:.1?}",
            controller_side.len(),
            percentile(&controller_side, 0.50),
            percentile(&controller_side, 0.99)
        );
    }

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

/// Per Flow, how long its apply waited on AWS: the union of the intervals during which at
/// least one of its calls was in flight (the reads and registrations made at once count
/// once), from the controller's debug log, between the reconcile's first phase and its status
/// write. Flows are created one after another, so the calls between those two lines are that
/// Flow's; discovery's ListExecutions runs beside them, off the path to Ready, and is left out.
fn aws_waits(log: &Path) -> BTreeMap<String, Duration> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut waits = BTreeMap::new();
    let mut current: Option<(String, Vec<(f64, f64)>)> = None;
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &entry["fields"];
        let Some(at) = entry["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_microsecond() as f64 / 1e3)
        else {
            continue;
        };
        let ms = fields["ms"].as_f64().unwrap_or(0.0);
        match fields["message"].as_str() {
            Some("finalizer present") => {
                current = fields["flow"].as_str().map(|f| (f.to_owned(), Vec::new()));
            }
            Some("aws call") if fields["operation"] != "ListExecutions" => {
                if let Some((_, calls)) = current.as_mut() {
                    calls.push((at - ms, at));
                }
            }
            Some("status written")
                if current.as_ref().map(|(f, _)| f.as_str()) == fields["flow"].as_str() =>
            {
                if let Some((flow, mut calls)) = current.take() {
                    calls.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let (mut busy, mut until) = (0.0f64, f64::MIN);
                    for (start, end) in calls {
                        if end > until {
                            busy += end - start.max(until);
                            until = end;
                        }
                    }
                    waits.insert(flow, Duration::from_secs_f64(busy / 1e3));
                }
            }
            _ => {}
        }
    }
    waits
}
