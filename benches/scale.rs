//! The controller at a platform's scale, against the local environment: 2,000 Flows, 20,000
//! finished Runs and 1,000 running ones in one namespace, watched by one controller (the
//! bench profile's build, optimized like a release). Prints the controller's memory (RSS), its
//! CPU when nothing changes, the AWS calls it makes per drift period and when it starts over
//! (a resync: every object listed again), and the status lag of running Runs with the
//! execution-events path. A benchmark, not a test: it prints numbers and asserts nothing about
//! time.
//!
//! Sizes: `FLOWLINE_BENCH_FLOWS` (2,000), `FLOWLINE_BENCH_FINISHED_RUNS` (20,000; spread
//! evenly over the Flows, half Succeeded and half Failed, within the default history limits
//! so nothing is pruned), `FLOWLINE_BENCH_RUNNING_RUNS` (1,000; one per Flow at most, each
//! held RUNNING by the emulator for `FLOWLINE_BENCH_HOLD_SECONDS`, 240), windows
//! `FLOWLINE_BENCH_IDLE_SECONDS` (300) and `FLOWLINE_BENCH_DRIFT_SECONDS` (the controller's
//! `--drift-interval-seconds`, 300: at 60, 2,000 Flows kept 8 workers of a loaded 2-core
//! machine busy with drift checks alone).
//!
//! Finished Runs are written directly (the object, then its status subresource, with the
//! finalizer the controller would add) while the controller is stopped, so none of them
//! starts an execution; the controller that starts next lists them all, which is the resync
//! measured.
//!
//! `FLOWLINE_BENCH_CONTROLLER=<path>` runs another build of the controller (say, the one
//! before a change) in place of this one's.
//!
//! Run against an environment whose emulator polls `.sync` tasks every 5 s:
//! `FLOWLINE_EMULATOR_SYNC_POLL_SECONDS=5 hack/env-up.sh`, `source <env>/env.sh`, then
//! `cargo bench --features e2e --bench scale`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Benchmark code.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use support::{Bench, percentile};

use flowline::api::{Flow, Run, RunPhase, condition, is_condition_true};

/// Requests in flight at once while creating objects: the emulator and the API server share
/// two cores with the controller.
const CONCURRENCY: usize = 16;

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn flow(i: usize, hold: usize) -> Flow {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "flowline.io/v1alpha1", "kind": "Flow", "metadata": {"name": format!("f{i}")},
        "spec": {"steps": [
            {"name": "start", "command": ["true"], "next": ["end"],
             "env": [{"name": "EMULATOR_RUN_SECONDS", "value": hold.to_string()}]},
            {"name": "end", "command": ["true"]}
        ]}
    }))
    .unwrap()
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// Resident memory of a process other than its mapped files (the binary's code, which a
/// debug build makes large): its heap and stacks, in MiB.
fn anon_mib(pid: u32) -> f64 {
    status_mib(pid, "RssAnon:")
}

fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The controller's AWS calls so far, by `service:Operation`, from its `/metrics`.
fn aws_calls(metrics: &str) -> BTreeMap<String, u64> {
    let body = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{metrics}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut calls = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("flowline_aws_calls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let key = format!("{}:{}", label("service"), label("operation"));
        *calls.entry(key).or_default() += value.trim().parse::<f64>().unwrap_or(0.0) as u64;
    }
    calls
}

/// Calls made between two readings, split into reads and writes (by the operation's verb).
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> (u64, u64, String) {
    let (mut reads, mut writes, mut by) = (0, 0, Vec::new());
    for (key, n) in after {
        let n = n - before.get(key).copied().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let operation = key.split(':').nth(1).unwrap_or("");
        let read = ["Describe", "Get", "List", "Receive", "Head"]
            .iter()
            .any(|verb| operation.starts_with(verb));
        if read {
            reads += n;
        } else {
            writes += n;
        }
        by.push(format!("{key} {n}"));
    }
    (reads, writes, by.join(", "))
}

/// Runs `make` for each index with at most `CONCURRENCY` in flight.
async fn bounded<F, Fut>(count: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(0..count)
        .map(make)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

async fn wait_synced(runs: &Api<Run>, metrics: &str) -> Duration {
    let started = Instant::now();
    // The controller's /readyz answers once its watches have listed everything.
    loop {
        let ok = std::process::Command::new("curl")
            .args(["-sf", &format!("http://{metrics}/readyz")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "never synced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = runs;
    started.elapsed()
}

/// The calls that depend on the objects' changes: without discovery's periodic listing and
/// the event queue's long polls, which never stop.
fn reconcile_calls(metrics: &str) -> BTreeMap<String, u64> {
    let mut calls = aws_calls(metrics);
    calls.retain(|key, _| !key.ends_with(":ListExecutions") && !key.ends_with(":ReceiveMessage"));
    calls
}

/// Waits until the controller's reconcile calls stop growing for `quiet` (two minutes at most).
async fn wait_quiet(metrics: &str, quiet: Duration) {
    let started = Instant::now();
    let mut last = reconcile_calls(metrics);
    let mut since = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = reconcile_calls(metrics);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let flows_count = size("FLOWLINE_BENCH_FLOWS", 2_000);
    let finished_count = size("FLOWLINE_BENCH_FINISHED_RUNS", 20_000);
    let running_count = size("FLOWLINE_BENCH_RUNNING_RUNS", 1_000).min(flows_count);
    let hold = size("FLOWLINE_BENCH_HOLD_SECONDS", 240);
    let idle = Duration::from_secs(size("FLOWLINE_BENCH_IDLE_SECONDS", 300) as u64);
    let drift = size("FLOWLINE_BENCH_DRIFT_SECONDS", 300);
    let endpoint = std::env::var("FLOWLINE_AWS_ENDPOINT").expect("source env.sh first");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .load()
        .await;

    // The execution-events path, as a platform team sets it up: a queue, and a rule sending
    // Step Functions' status changes of this namespace's state machines to it.
    let namespace = format!("scale-{}", std::process::id());
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("flowline-events-{namespace}"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let events = aws_sdk_eventbridge::Client::new(&config);
    let rule = format!("execution-events-{namespace}");
    let pattern = serde_json::json!({
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"stateMachineArn": [{"prefix": format!("arn:aws:states:us-east-1:123456789012:stateMachine:flowline-{namespace}")}]}
    });
    let rule_arn = events
        .put_rule()
        .name(&rule)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap()
        .rule_arn()
        .unwrap()
        .to_owned();
    // Without a queue policy letting the rule send, EventBridge delivers nothing (the
    // emulator too): every Run would be tracked by polling alone.
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:flowline-events-{namespace}");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}
        }]
    });
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::Policy,
            policy.to_string(),
        )
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let metrics = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let drift_env = drift.to_string();
    let mut bench = Bench::start(
        "scale",
        &[
            ("FLOWLINE_HTTP_ADDR", metrics.as_str()),
            ("FLOWLINE_DRIFT_INTERVAL_SECONDS", drift_env.as_str()),
            ("FLOWLINE_EXECUTION_EVENTS_QUEUE_URL", queue_url.as_str()),
        ],
    )
    .await;
    assert_eq!(bench.namespace, namespace);
    println!("load before: {}", load());
    let flows: Api<Flow> = Api::namespaced(bench.client.clone(), &namespace);
    let runs: Api<Run> = Api::namespaced(bench.client.clone(), &namespace);

    // 1. Flows, made Ready by the controller.
    let started = Instant::now();
    bounded(flows_count, |i| {
        let flows = flows.clone();
        async move {
            flows
                .create(&PostParams::default(), &flow(i, hold))
                .await
                .unwrap();
        }
    })
    .await;
    let created = started.elapsed();
    loop {
        let ready = flows
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|f| {
                f.status
                    .as_ref()
                    .is_some_and(|s| is_condition_true(&s.conditions, condition::READY))
            })
            .count();
        if ready == flows_count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{ready} of {flows_count} Flows Ready"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let flows_ready = started.elapsed();
    wait_quiet(&metrics, Duration::from_secs(5)).await;
    let rss_flows = rss_mib(bench.controller_pid());
    println!(
        "{flows_count} Flows created in {created:.0?}, all Ready after {flows_ready:.0?}; RSS {rss_flows:.1} MiB"
    );

    // 2. Finished Runs, written directly while the controller is stopped.
    bench.stop_controller();
    let now = now_rfc3339();
    let started = Instant::now();
    bounded(finished_count, |i| {
        let (runs, now) = (runs.clone(), now.clone());
        async move {
            let name = format!("done-{i}");
            let succeeded = (i / flows_count).is_multiple_of(2);
            let run: Run = serde_json::from_value(serde_json::json!({
                "apiVersion": "flowline.io/v1alpha1", "kind": "Run",
                "metadata": {"name": name, "finalizers": [flowline::api::FINALIZER]},
                "spec": {"flowRef": {"name": format!("f{}", i % flows_count)}}
            }))
            .unwrap();
            runs.create(&PostParams::default(), &run).await.unwrap();
            let phase = if succeeded { "Succeeded" } else { "Failed" };
            let status = serde_json::json!({"status": {
                "phase": phase, "startTime": now, "completionTime": now,
                "conditions": [{"type": "Finished", "status": "True", "reason": phase,
                                "message": "written by the benchmark", "lastTransitionTime": now}]
            }});
            runs.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .unwrap();
        }
    })
    .await;
    println!(
        "{finished_count} finished Runs written in {:.0?}",
        started.elapsed()
    );

    // 3. Resync: a fresh controller lists everything.
    bench.restart_controller();
    let pid = bench.controller_pid();
    let synced = wait_synced(&runs, &metrics).await;
    let resync_started = Instant::now();
    wait_quiet(&metrics, Duration::from_secs(10)).await;
    let resync = aws_calls(&metrics);
    let (resync_reads, resync_writes, resync_by) = delta(&BTreeMap::new(), &resync);
    let (rss_synced, anon_synced) = (rss_mib(pid), anon_mib(pid));
    println!(
        "resync: watches synced after {synced:.1?}, quiet after {:.0?}; AWS reads {resync_reads}, writes {resync_writes} ({resync_by}); RSS {rss_synced:.1} MiB",
        resync_started.elapsed()
    );

    // 4. Idle: nothing changes for `idle`.
    let (cpu_before, calls_before, at) = (cpu_seconds(pid), aws_calls(&metrics), Instant::now());
    tokio::time::sleep(idle).await;
    let minutes = at.elapsed().as_secs_f64() / 60.0;
    let cpu_per_minute = (cpu_seconds(pid) - cpu_before) / minutes;
    let (idle_reads, idle_writes, idle_by) = delta(&calls_before, &aws_calls(&metrics));
    let drift_periods = at.elapsed().as_secs_f64() / drift as f64;
    let (rss_idle, anon_idle) = (rss_mib(pid), anon_mib(pid));
    println!(
        "idle {:.0?}: CPU {cpu_per_minute:.2} s/min; AWS reads {idle_reads}, writes {idle_writes} over {drift_periods:.1} drift periods of {drift} s ({:.2} reads per Flow per period: {idle_by}); RSS {rss_idle:.1} MiB; load {}",
        at.elapsed(),
        idle_reads as f64 / drift_periods / flows_count as f64,
        load()
    );

    // 5. Running Runs, tracked through the execution-events path.
    // When each running Run was woken by its execution's end event (the annotation the
    // controller's event consumer writes) and when its status said it finished.
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, bool, SystemTime)>();
    let watch_api = runs.clone();
    tokio::spawn(async move {
        let (mut woken, mut seen) = (BTreeSet::new(), BTreeSet::new());
        let mut stream = watcher(
            watch_api,
            watcher::Config::default().labels("bench=running"),
        )
        .applied_objects()
        .boxed();
        while let Ok(Some(run)) = stream.try_next().await {
            let now = SystemTime::now();
            let ended_event = run
                .annotations()
                .get(flowline::controller::execution_events::EVENT_ANNOTATION)
                .is_some_and(|status| status != "RUNNING");
            if ended_event && woken.insert(run.name_any()) {
                let _ = done_tx.send((run.name_any(), false, now));
            }
            let finished = run
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RunPhase::is_finished);
            if finished && seen.insert(run.name_any()) {
                let _ = done_tx.send((run.name_any(), true, now));
            }
        }
    });
    let started = Instant::now();
    bounded(running_count, |i| {
        let runs = runs.clone();
        async move {
            let run: Run = serde_json::from_value(serde_json::json!({
                "apiVersion": "flowline.io/v1alpha1", "kind": "Run",
                "metadata": {"name": format!("live-{i}"), "labels": {"bench": "running"}},
                "spec": {"flowRef": {"name": format!("f{i}")}}
            }))
            .unwrap();
            runs.create(&PostParams::default(), &run).await.unwrap();
        }
    })
    .await;
    let mut peak = 0.0f64;
    let mut all_running = None;
    loop {
        peak = peak.max(rss_mib(pid));
        let list = runs
            .list(&ListParams::default().labels("bench=running"))
            .await
            .unwrap();
        let running = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running))
            .count();
        if running == running_count {
            all_running = Some(started.elapsed());
            break;
        }
        let finished = list
            .items
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(RunPhase::is_finished)
            })
            .count();
        if finished > 0 || started.elapsed() > Duration::from_secs(hold as u64) {
            println!(
                "only {running} of {running_count} Runs running at once ({finished} finished) after {:.0?}",
                started.elapsed()
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (rss_load, anon_load) = (rss_mib(pid), anon_mib(pid));
    let (cpu_before, calls_before, at) = (cpu_seconds(pid), aws_calls(&metrics), Instant::now());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (load_reads, load_writes, _) = delta(&calls_before, &aws_calls(&metrics));
    let load_cpu = (cpu_seconds(pid) - cpu_before) / at.elapsed().as_secs_f64() * 60.0;
    println!(
        "{running_count} running (all running after {all_running:.0?}): RSS {rss_load:.1} MiB; over 30 s: CPU {load_cpu:.1} s/min, AWS reads {load_reads}, writes {load_writes}; load {}",
        load()
    );

    let (mut seen_at, mut woken_at) = (BTreeMap::new(), BTreeMap::new());
    while seen_at.len() < running_count {
        peak = peak.max(rss_mib(pid));
        match tokio::time::timeout(Duration::from_secs(600), done_rx.recv()).await {
            Ok(Some((name, true, at))) => {
                seen_at.insert(name, at);
            }
            Ok(Some((name, false, at))) => {
                woken_at.insert(name, at);
            }
            _ => break,
        }
    }
    let sfn = aws_sdk_sfn::Client::new(&config);
    let (mut lags, mut event_lags, mut woken_lags) = (Vec::new(), Vec::new(), Vec::new());
    for run in runs
        .list(&ListParams::default().labels("bench=running"))
        .await
        .unwrap()
        .items
    {
        let (Some(arn), Some(seen)) = (
            run.status.as_ref().and_then(|s| s.execution_arn.clone()),
            seen_at.get(&run.name_any()),
        ) else {
            continue;
        };
        let described = sfn.describe_execution().execution_arn(&arn).send().await;
        let Some(stop) = described.ok().and_then(|d| d.stop_date().cloned()) else {
            continue;
        };
        let stop = SystemTime::UNIX_EPOCH + Duration::from_millis(stop.to_millis().unwrap() as u64);
        lags.push(seen.duration_since(stop).unwrap_or_default());
        // Split at the wake: the event's delivery (AWS → queue → consumer → annotation), and
        // the Run's reconcile after it.
        if let Some(woken) = woken_at.get(&run.name_any()) {
            event_lags.push(woken.duration_since(stop).unwrap_or_default());
            woken_lags.push(seen.duration_since(*woken).unwrap_or_default());
        }
    }
    lags.sort();
    event_lags.sort();
    woken_lags.sort();
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| objects | {flows_count} Flows, {finished_count} finished Runs, {running_count} running Runs |"
    );
    println!("| Flows all Ready after | {flows_ready:.0?} |");
    println!(
        "| RSS: Flows Ready / after resync / idle / {running_count} running / peak | {rss_flows:.1} / {rss_synced:.1} / {rss_idle:.1} / {rss_load:.1} / {peak:.1} MiB |"
    );
    println!(
        "| RSS without mapped files: after resync / idle / {running_count} running | {anon_synced:.1} / {anon_idle:.1} / {anon_load:.1} MiB |"
    );
    println!("| CPU idle | {cpu_per_minute:.2} s per minute |");
    println!("| AWS calls on resync | {resync_reads} reads, {resync_writes} writes |");
    println!(
        "| AWS calls per drift period ({drift} s), idle | {:.0} reads ({:.2} per Flow), {:.0} writes |",
        idle_reads as f64 / drift_periods,
        idle_reads as f64 / drift_periods / flows_count as f64,
        idle_writes as f64 / drift_periods
    );
    if !lags.is_empty() {
        println!(
            "| status lag with events, {} Runs (stopped -> status seen) | p50 {:.2?}, p99 {:.2?} |",
            lags.len(),
            percentile(&lags, 0.5),
            percentile(&lags, 0.99)
        );
    }
    if !event_lags.is_empty() {
        println!(
            "| of which: stopped -> woken by its event ({} Runs) | p50 {:.2?}, p99 {:.2?} |",
            event_lags.len(),
            percentile(&event_lags, 0.5),
            percentile(&event_lags, 0.99)
        );
        println!(
            "| of which: woken -> status seen | p50 {:.2?}, p99 {:.2?} |",
            percentile(&woken_lags, 0.5),
            percentile(&woken_lags, 0.99)
        );
    }
    println!("| load average at the end | {} |", load());

    // Clean up while the controller still runs (it removes the finalizers and AWS resources);
    // deleting 23,000 objects takes minutes, which FLOWLINE_BENCH_CLEANUP=0 skips (for an
    // environment about to be torn down).
    if std::env::var("FLOWLINE_BENCH_CLEANUP").as_deref() == Ok("0") {
        bench.stop_controller();
        return;
    }
    let _ = runs
        .delete_collection(&Default::default(), &Default::default())
        .await;
    let _ = flows
        .delete_collection(&Default::default(), &Default::default())
        .await;
    for _ in 0..600 {
        let empty = flows
            .list(&ListParams::default().limit(1))
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true);
        if empty {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = events
        .remove_targets()
        .rule(&rule)
        .ids("queue")
        .send()
        .await;
    let _ = events.delete_rule().name(&rule).send().await;
    let _ = sqs.delete_queue().queue_url(&queue_url).send().await;
    bench.finish().await;
}

/// Now as an RFC 3339 timestamp (seconds), as Kubernetes writes times.
fn now_rfc3339() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
