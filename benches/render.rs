//! Render throughput: compiles generated flows of 10, 100 and 1,000 steps and prints the time
//! per render (median and p95 over repeated runs). A benchmark, not a test: it prints numbers
//! and asserts nothing about time. Run with `cargo bench --bench render`.
//!
//! The API caps a Flow at 100 steps; the 1,000-step flow is built in code to show how the
//! compiler scales past that. Its definition is over Step Functions' 1 MiB, so `render` refuses
//! it at the size check, which comes after all the work: the time is still the whole compile.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

use std::hint::black_box;
use std::time::{Duration, Instant};

use flowline::api::{Flow, FlowSpec, Step};
use flowline::compile::{self, CompileError, secrets::Lookups};
use flowline::settings::Settings;

/// A flow of `n` steps: `start`, then groups of a three-way branch and its join, then `end`.
fn generated_flow(n: usize) -> Flow {
    let mut steps = vec![Step {
        name: "start".into(),
        command: vec!["python3".into(), "-c".into(), "print('start')".into()],
        ..Step::default()
    }];
    let mut previous = "start".to_string();
    let mut index = 0;
    while steps.len() + 5 <= n {
        let branches: Vec<String> = (0..3).map(|b| format!("s{index}_b{b}")).collect();
        let join = format!("s{index}_join");
        if let Some(last) = steps.iter_mut().find(|s| s.name == previous) {
            last.next = branches.clone();
        }
        for branch in &branches {
            steps.push(Step {
                name: branch.clone(),
                command: vec!["python3".into(), "-c".into(), format!("print('{branch}')")],
                next: vec![join.clone()],
                ..Step::default()
            });
        }
        steps.push(Step {
            name: join.clone(),
            join: true,
            command: vec!["python3".into(), "-c".into(), format!("print('{join}')")],
            ..Step::default()
        });
        previous = join;
        index += 1;
    }
    while steps.len() + 1 < n {
        let name = format!("l{}", steps.len());
        if let Some(last) = steps.iter_mut().find(|s| s.name == previous) {
            last.next = vec![name.clone()];
        }
        steps.push(Step {
            name: name.clone(),
            command: vec!["python3".into(), "-c".into(), format!("print('{name}')")],
            ..Step::default()
        });
        previous = name;
    }
    if let Some(last) = steps.iter_mut().find(|s| s.name == previous) {
        last.next = vec!["end".into()];
    }
    steps.push(Step {
        name: "end".into(),
        command: vec!["python3".into(), "-c".into(), "print('end')".into()],
        ..Step::default()
    });
    let mut flow = Flow::new(
        "bench",
        FlowSpec {
            steps,
            ..serde_json::from_value(serde_json::json!({"steps": []})).expect("empty spec")
        },
    );
    flow.metadata.namespace = Some("bench".into());
    flow.metadata.uid = Some("4f9d1c7e-0000-4000-8000-000000000001".into());
    flow
}

fn main() {
    let settings = Settings::default();
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>10}  outcome",
        "steps", "runs", "median", "p95", "steps/ms"
    );
    for n in [10, 100, 1000] {
        let flow = generated_flow(n);
        assert_eq!(flow.spec.steps.len(), n);
        let outcome = match compile::render(&flow, &settings, Lookups::Offline) {
            Ok(_) => "rendered".to_owned(),
            Err(CompileError::Limit { what, size, .. }) => {
                format!("refused: {what} is {size} bytes")
            }
            Err(error) => panic!("the generated flow does not compile: {error}"),
        };
        let runs = match n {
            10 => 2000,
            100 => 300,
            _ => 40,
        };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            black_box(compile::render(black_box(&flow), &settings, Lookups::Offline).ok());
            times.push(start.elapsed());
        }
        times.sort();
        let median = times[runs / 2];
        let p95 = times[runs * 95 / 100];
        println!(
            "{n:>6} {runs:>8} {:>12} {:>12} {:>10.0}  {outcome}",
            format_duration(median),
            format_duration(p95),
            n as f64 / median.as_secs_f64() / 1000.0
        );
    }
}

fn format_duration(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}
