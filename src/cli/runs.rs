//! `run`, `get runs`, `stop` and `resume`: Runs created, listed and changed through the
//! cluster, and `--wait`'s live view of a Run's progress. The pure parts (what changed
//! between two looks at a Run, the tables) are functions of the Run, tested below.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

use crate::api::{
    Flow, FlowRef, ParameterValues, ResumeFrom, Run, RunPhase, RunSpec, RunStatus, StepPhase,
    StepStatus,
};

use super::cluster;
use super::graph::human_duration;

/// `run FLOW`.
#[derive(Args)]
pub struct RunArgs {
    /// The Flow to run.
    flow: String,
    /// A parameter value, `name=value`; repeatable.
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    parameters: Vec<String>,
    /// Follow the Run until it ends; exit non-zero unless it succeeds.
    #[arg(short = 'w', long)]
    wait: bool,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `get runs`.
#[derive(Args)]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    what: Listed,
    /// Only the Runs of this Flow.
    #[arg(long)]
    flow: Option<String>,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// The kinds `get` lists.
#[derive(Clone, Copy, ValueEnum)]
pub enum Listed {
    Runs,
}

/// `stop RUN`.
#[derive(Args)]
pub struct StopArgs {
    /// The Run to stop.
    run: String,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `resume RUN`.
#[derive(Args)]
pub struct ResumeArgs {
    /// The finished Run to resume.
    run: String,
    /// The step to start from (default: the first step that did not succeed).
    #[arg(long = "from", value_name = "STEP")]
    from: Option<String>,
    /// Follow the new Run until it ends; exit non-zero unless it succeeds.
    #[arg(short = 'w', long)]
    wait: bool,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `name=value` pairs into parameter values.
pub fn parse_parameters(pairs: &[String]) -> anyhow::Result<ParameterValues> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
                .filter(|(name, _)| !name.is_empty())
                .with_context(|| format!("-p {pair:?}: write name=value"))
        })
        .collect()
}

/// A new Run of `flow`, named by the API server after the Flow (`<flow>-<5 characters>`).
fn new_run(flow: &str, parameters: ParameterValues, resume_from: Option<ResumeFrom>) -> Run {
    Run {
        metadata: ObjectMeta {
            generate_name: Some(format!("{flow}-")),
            ..ObjectMeta::default()
        },
        spec: RunSpec {
            flow_ref: FlowRef { name: flow.into() },
            parameters,
            stop: false,
            resume_from,
        },
        status: None,
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let parameters = parse_parameters(&args.parameters)?;
    let (client, namespace) = cluster(args.namespace.as_deref()).await?;
    let flows: Api<Flow> = Api::namespaced(client.clone(), &namespace);
    anyhow::ensure!(
        flows.get_opt(&args.flow).await?.is_some(),
        "Flow {} not found in namespace {namespace}",
        args.flow
    );
    let runs: Api<Run> = Api::namespaced(client, &namespace);
    let created = runs
        .create(
            &PostParams::default(),
            &new_run(&args.flow, parameters, None),
        )
        .await
        .context("creating the Run")?;
    let name = created.metadata.name.clone().unwrap_or_default();
    println!("run/{name} created (Flow {})", args.flow);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    watch(&runs, &flows, &name).await
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let (client, namespace) = cluster(args.namespace.as_deref()).await?;
    let runs: Api<Run> = Api::namespaced(client.clone(), &namespace);
    let flows: Api<Flow> = Api::namespaced(client, &namespace);
    let original = runs
        .get_opt(&args.run)
        .await?
        .with_context(|| format!("Run {} not found in namespace {namespace}", args.run))?;
    let flow_name = original.spec.flow_ref.name.clone();
    let step = match args.from {
        Some(step) => step,
        None => {
            let flow = flows
                .get_opt(&flow_name)
                .await?
                .with_context(|| format!("Flow {flow_name} not found"))?;
            first_unfinished_step(
                &flow,
                original.status.as_ref().unwrap_or(&Default::default()),
            )
            .with_context(|| {
                format!(
                    "every step of Run {} succeeded: name the step to re-run with --from",
                    args.run
                )
            })?
        }
    };
    let run = new_run(
        &flow_name,
        original.spec.parameters.clone(),
        Some(ResumeFrom {
            run: args.run.clone(),
            step: step.clone(),
        }),
    );
    let created = runs
        .create(&PostParams::default(), &run)
        .await
        .context("creating the Run")?;
    let name = created.metadata.name.clone().unwrap_or_default();
    println!(
        "run/{name} created: resumes Run {} from step {step}",
        args.run
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    watch(&runs, &flows, &name).await
}

/// The first step, in the Flow's order, that did not succeed in the Run: where a resume
/// starts by default.
pub fn first_unfinished_step(flow: &Flow, status: &RunStatus) -> Option<String> {
    let graph =
        crate::compile::graph::validate(&crate::compile::graph_steps(&flow.spec.steps)).ok()?;
    crate::compile::state_machine::resumable_steps(&graph.chain)
        .into_iter()
        .find(|step| {
            status
                .steps
                .iter()
                .find(|s| s.name == *step)
                .and_then(|s| s.phase)
                != Some(StepPhase::Succeeded)
        })
        .map(str::to_owned)
}

pub async fn stop(args: StopArgs) -> anyhow::Result<()> {
    let (client, namespace) = cluster(args.namespace.as_deref()).await?;
    let runs: Api<Run> = Api::namespaced(client, &namespace);
    runs.patch(
        &args.run,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"stop": true}})),
    )
    .await
    .with_context(|| format!("stopping Run {}", args.run))?;
    println!("run/{} stopping", args.run);
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let Listed::Runs = args.what;
    let (client, namespace) = cluster(args.namespace.as_deref()).await?;
    let runs: Api<Run> = Api::namespaced(client, &namespace);
    let params = match &args.flow {
        Some(flow) => ListParams::default().fields(&format!("spec.flowRef.name={flow}")),
        None => ListParams::default(),
    };
    let mut listed = runs.list(&params).await?.items;
    // Newest first.
    listed.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
    });
    if listed.is_empty() {
        println!("No Runs in namespace {namespace}.");
        return Ok(());
    }
    print!("{}", runs_table(&listed, now()));
    Ok(())
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Follows a Run to its end, printing its progress; the exit code says how it ended.
async fn watch(runs: &Api<Run>, flows: &Api<Flow>, name: &str) -> anyhow::Result<ExitCode> {
    let mut stderr = std::io::stderr();
    let bar = stderr.is_terminal();
    let mut previous = RunStatus::default();
    let mut total_steps = None;
    let mut drawn = false;
    loop {
        let run = runs
            .get_opt(name)
            .await?
            .with_context(|| format!("Run {name} was deleted"))?;
        if total_steps.is_none() {
            total_steps = flows
                .get_opt(&run.spec.flow_ref.name)
                .await?
                .map(|f| f.spec.steps.len());
        }
        let status = run.status.clone().unwrap_or_default();
        let lines = progress_lines(&previous, &status);
        if bar && drawn && !lines.is_empty() {
            let _ = write!(stderr, "\r\x1b[2K");
            drawn = false;
        }
        for line in lines {
            println!("{line}");
        }
        if let Some((reason, message)) = stalled(&status) {
            if bar && drawn {
                let _ = writeln!(stderr);
            }
            eprintln!("Run {name} cannot start ({reason}): {message}");
            return Ok(ExitCode::from(2));
        }
        if status.phase.is_some_and(RunPhase::is_finished) {
            if bar && drawn {
                let _ = write!(stderr, "\r\x1b[2K");
            }
            println!();
            print!("{}", steps_table(&status));
            println!();
            println!("{}", summary(name, &status));
            return Ok(if status.phase == Some(RunPhase::Succeeded) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if bar {
            let _ = write!(
                stderr,
                "\r\x1b[2K{}",
                progress_bar(&status, total_steps.unwrap_or(0))
            );
            let _ = stderr.flush();
            drawn = true;
        }
        previous = status;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Why the Run cannot start, when it is Stalled before it finished.
fn stalled(status: &RunStatus) -> Option<(String, String)> {
    if status.phase.is_some_and(RunPhase::is_finished) {
        return None;
    }
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// What happened between two looks at a Run, one line each: the phase, steps that started,
/// finished or were reused, foreach counts that moved.
pub fn progress_lines(previous: &RunStatus, current: &RunStatus) -> Vec<String> {
    let mut lines = Vec::new();
    if current.phase != previous.phase
        && let Some(phase) = current.phase
        && !phase.is_finished()
    {
        lines.push(format!("{phase:?}"));
    }
    let width = current
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    for step in &current.steps {
        let before = previous.steps.iter().find(|s| s.name == step.name);
        let was = before.and_then(|s| s.phase);
        if step.phase == was || step.phase.is_none() {
            continue;
        }
        let name = &step.name;
        let line = match (&step.reused_from, step.phase) {
            (Some(run), _) => format!("  {name:width$}  reused from {run}"),
            (None, Some(StepPhase::Pending)) => format!("  {name:width$}  submitted"),
            (None, Some(StepPhase::Running)) => format!("  {name:width$}  started"),
            (None, Some(phase)) => {
                let mut line = format!("  {name:width$}  {phase:?}");
                if let Some(duration) = step_duration(step) {
                    let _ = write!(line, " in {duration}");
                }
                if let Some(attempts) = step.attempts.filter(|a| *a > 1) {
                    let _ = write!(line, " after {attempts} attempts");
                }
                if phase == StepPhase::Failed
                    && let Some(reason) = &step.reason
                {
                    let _ = write!(line, ": {reason}");
                }
                line
            }
            (None, None) => continue,
        };
        lines.push(line);
    }
    for foreach in &current.foreach {
        let before = previous.foreach.iter().find(|f| f.step == foreach.step);
        let done = foreach.succeeded + foreach.failed + foreach.aborted;
        let was = before.map(|f| f.succeeded + f.failed + f.aborted);
        if was != Some(done) || before.map(|f| f.running) != Some(foreach.running) {
            let mut line = format!(
                "  {:width$}  foreach {done}/{} done, {} running",
                foreach.step, foreach.total, foreach.running
            );
            if foreach.failed > 0 {
                let _ = write!(line, ", {} failed", foreach.failed);
            }
            lines.push(line);
        }
    }
    lines
}

/// `[#####-----] 3/5 steps · running: train (foreach 12/40)`, for a terminal.
pub fn progress_bar(status: &RunStatus, total_steps: usize) -> String {
    let done = status
        .steps
        .iter()
        .filter(|s| {
            s.phase
                .is_some_and(|p| p != StepPhase::Running && p != StepPhase::Pending)
        })
        .count();
    let total = total_steps.max(done).max(1);
    let filled = done * 24 / total;
    let mut bar = format!(
        "[{}{}] {done}/{total} steps",
        "#".repeat(filled),
        "-".repeat(24 - filled)
    );
    let running: Vec<String> = status
        .steps
        .iter()
        .filter(|s| matches!(s.phase, Some(StepPhase::Running | StepPhase::Pending)))
        .map(|s| match status.foreach.iter().find(|f| f.step == s.name) {
            Some(f) => format!(
                "{} ({}/{})",
                s.name,
                f.succeeded + f.failed + f.aborted,
                f.total
            ),
            None => s.name.clone(),
        })
        .collect();
    if !running.is_empty() {
        let _ = write!(bar, " · running: {}", running.join(", "));
    }
    bar
}

fn step_duration(step: &StepStatus) -> Option<String> {
    let start = step.start_time.as_ref()?.0;
    let end = step.completion_time.as_ref()?.0;
    Some(human_duration(end.duration_since(start).as_secs().max(0)))
}

/// The steps of a Run, one row each.
pub fn steps_table(status: &RunStatus) -> String {
    let mut rows = vec![[
        "STEP".to_owned(),
        "PHASE".to_owned(),
        "ATTEMPTS".to_owned(),
        "DURATION".to_owned(),
        "ARTIFACTS".to_owned(),
        "NOTE".to_owned(),
    ]];
    // In the order the steps ran: reused ones (which ran first, in the original Run) first.
    let mut ordered: Vec<&StepStatus> = status.steps.iter().collect();
    ordered.sort_by_key(|s| (s.start_time.is_none(), s.start_time.as_ref().map(|t| t.0)));
    for step in ordered {
        let phase = match (&step.reused_from, step.phase) {
            (Some(_), _) => "Reused".to_owned(),
            (None, Some(phase)) => format!("{phase:?}"),
            (None, None) => "-".to_owned(),
        };
        let note = match (&step.reused_from, &step.reason) {
            (Some(run), _) => format!("from {run}"),
            (None, Some(reason)) => reason.lines().next().unwrap_or_default().to_owned(),
            (None, None) => String::new(),
        };
        rows.push([
            step.name.clone(),
            phase,
            step.attempts.map_or("-".into(), |a| a.to_string()),
            step_duration(step).unwrap_or_else(|| "-".into()),
            step.artifact_count
                .map_or("-".into(), |count| count.to_string()),
            note,
        ]);
    }
    columns(&rows)
}

/// How the Run ended, in a sentence.
pub fn summary(name: &str, status: &RunStatus) -> String {
    let phase = status
        .phase
        .map_or("Pending".to_owned(), |p| format!("{p:?}"));
    let mut line = format!("Run {name} {phase}");
    if let (Some(start), Some(end)) = (&status.start_time, &status.completion_time) {
        let _ = write!(
            line,
            " in {}",
            human_duration(end.0.duration_since(start.0).as_secs().max(0))
        );
    }
    if status.phase != Some(RunPhase::Succeeded)
        && let Some(message) = &status.message
    {
        let _ = write!(line, ": {message}");
    }
    if let Some(root) = &status.artifact_root {
        let _ = write!(line, "\nartifacts: {root}/");
    }
    line
}

/// Runs, one row each: name, Flow, phase, progress, the step now running (or the failed
/// one), duration and age.
pub fn runs_table(runs: &[Run], now: jiff::Timestamp) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "FLOW".to_owned(),
        "PHASE".to_owned(),
        "DONE".to_owned(),
        "CURRENT".to_owned(),
        "DURATION".to_owned(),
        "AGE".to_owned(),
    ]];
    for run in runs {
        let status = run.status.clone().unwrap_or_default();
        let done = status
            .steps
            .iter()
            .filter(|s| s.phase == Some(StepPhase::Succeeded))
            .count();
        let current = status
            .steps
            .iter()
            .find(|s| s.phase == Some(StepPhase::Failed))
            .or_else(|| {
                status
                    .steps
                    .iter()
                    .find(|s| matches!(s.phase, Some(StepPhase::Running | StepPhase::Pending)))
            })
            .map_or("-".to_owned(), |s| s.name.clone());
        let duration = status.start_time.as_ref().map(|start| {
            let end = status.completion_time.as_ref().map_or(now, |t| t.0);
            human_duration(end.duration_since(start.0).as_secs().max(0))
        });
        let age = run
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| human_duration(now.duration_since(t.0).as_secs().max(0)));
        let mut phase = status
            .phase
            .map_or("Pending".to_owned(), |p| format!("{p:?}"));
        if stalled(&status).is_some() {
            phase = "Stalled".into();
        }
        if run.spec.resume_from.is_some() {
            phase.push('*');
        }
        rows.push([
            run.metadata.name.clone().unwrap_or_default(),
            run.spec.flow_ref.name.clone(),
            phase,
            format!("{done}/{}", status.steps.len()),
            current,
            duration.unwrap_or_else(|| "-".into()),
            age.unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = columns(&rows);
    if runs.iter().any(|r| r.spec.resume_from.is_some()) {
        out.push_str("* resumed from an earlier Run\n");
    }
    out
}

/// Rows padded into columns two spaces apart, like kubectl's tables.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[index]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ForeachStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_700_000_000 + seconds).unwrap())
    }

    fn step(name: &str, phase: StepPhase) -> StepStatus {
        StepStatus {
            name: name.into(),
            phase: Some(phase),
            attempts: Some(1),
            ..StepStatus::default()
        }
    }

    #[test]
    fn parameters_are_name_value_pairs() {
        let parsed = parse_parameters(&["alpha=0.5".into(), "name=a=b".into()]).unwrap();
        assert_eq!(parsed["alpha"], "0.5");
        assert_eq!(parsed["name"], "a=b");
        assert!(parse_parameters(&["novalue".into()]).is_err());
    }

    #[test]
    fn progress_tells_steps_that_started_ended_or_were_reused() {
        let previous = RunStatus {
            phase: Some(RunPhase::Running),
            steps: vec![step("start", StepPhase::Running)],
            ..RunStatus::default()
        };
        let mut done = step("start", StepPhase::Succeeded);
        done.start_time = Some(at(0));
        done.completion_time = Some(at(65));
        let mut reused = step("prep", StepPhase::Succeeded);
        reused.reused_from = Some("first".into());
        let current = RunStatus {
            phase: Some(RunPhase::Running),
            steps: vec![reused, done, step("train", StepPhase::Running)],
            foreach: vec![ForeachStatus {
                step: "train".into(),
                total: 10,
                succeeded: 3,
                running: 2,
                ..ForeachStatus::default()
            }],
            ..RunStatus::default()
        };
        let lines = progress_lines(&previous, &current);
        assert_eq!(
            lines,
            vec![
                "  prep      reused from first",
                "  start     Succeeded in 1m 05s",
                "  train     started",
                "  train     foreach 3/10 done, 2 running",
            ]
        );
        assert!(progress_lines(&current, &current).is_empty());
    }

    #[test]
    fn the_progress_bar_counts_finished_steps_and_names_the_running_ones() {
        let status = RunStatus {
            steps: vec![
                step("start", StepPhase::Succeeded),
                step("train", StepPhase::Running),
            ],
            ..RunStatus::default()
        };
        let bar = progress_bar(&status, 4);
        assert!(
            bar.starts_with("[######------------------] 1/4 steps"),
            "{bar}"
        );
        assert!(bar.ends_with("running: train"), "{bar}");
    }

    #[test]
    fn the_runs_table_is_aligned_and_shows_the_failed_step() {
        let mut run = new_run("demo", Default::default(), None);
        run.metadata.name = Some("demo-x1y2z".into());
        run.metadata.creation_timestamp = Some(at(0));
        run.status = Some(RunStatus {
            phase: Some(RunPhase::Failed),
            start_time: Some(at(5)),
            completion_time: Some(at(47)),
            steps: vec![
                step("start", StepPhase::Succeeded),
                step("train", StepPhase::Failed),
            ],
            ..RunStatus::default()
        });
        let table = runs_table(&[run], at(3600).0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "NAME        FLOW  PHASE   DONE  CURRENT  DURATION  AGE"
        );
        assert_eq!(
            lines[1],
            "demo-x1y2z  demo  Failed  1/2   train    42s       1h 00m"
        );
    }

    #[test]
    fn the_steps_table_marks_reused_steps() {
        let mut reused = step("start", StepPhase::Succeeded);
        reused.reused_from = Some("first".into());
        reused.artifact_count = Some(2);
        let table = steps_table(&RunStatus {
            steps: vec![reused, step("train", StepPhase::Succeeded)],
            ..RunStatus::default()
        });
        assert!(
            table.contains("start  Reused     1         -         2          from first"),
            "{table}"
        );
    }

    #[test]
    fn a_resume_starts_by_default_at_the_first_step_that_did_not_succeed() {
        let spec: crate::api::FlowSpec = serde_norway::from_str(
            "steps:\n- {name: start, next: [a]}\n- {name: a, next: [b]}\n- {name: b, next: [end]}\n- {name: end}\n",
        )
        .unwrap();
        let flow = Flow::new("demo", spec);
        let status = RunStatus {
            steps: vec![
                step("start", StepPhase::Succeeded),
                step("a", StepPhase::Failed),
            ],
            ..RunStatus::default()
        };
        assert_eq!(first_unfinished_step(&flow, &status).as_deref(), Some("a"));
    }
}
