//! Rules on a step's effective Batch settings: what the Flow's `spec.batch` and the step's own
//! `batch` give together. Each level's own rules are CEL rules of the CRD; these combine both
//! levels (a Flow on Fargate and a step asking for a GPU), so the CRD checks them too where
//! CEL can (see `api::flow`), and the controller and `flowline render`/`validate` check them
//! here, naming both fields, for Flows that reached the cluster some other way.

use crate::api::{BatchSpec, Flow, Platform, Step};

use super::job_definition::{DEFAULT_CPU, DEFAULT_MEMORY_MIB, effective_batch};

/// The vCPU sizes Fargate offers, each with the memory sizes (MiB) it may be paired with:
/// (vCPUs, lowest, highest, step), from AWS Batch's Fargate resource table.
pub const FARGATE_SIZES: &[(f64, i32, i32, i32)] = &[
    (0.25, 512, 2048, 512),
    (0.5, 1024, 4096, 1024),
    (1.0, 2048, 8192, 1024),
    (2.0, 4096, 16384, 1024),
    (4.0, 8192, 30720, 1024),
    (8.0, 16384, 61440, 4096),
    (16.0, 32768, 122880, 8192),
];

/// Memory sizes (MiB) Fargate pairs with `cpu` vCPUs, or `None` for a size it does not offer.
pub fn fargate_memory(cpu: f64) -> Option<(i32, i32, i32)> {
    FARGATE_SIZES
        .iter()
        .find(|(vcpus, ..)| (*vcpus - cpu).abs() < f64::EPSILON)
        .map(|(_, low, high, step)| (*low, *high, *step))
}

/// Whether Fargate runs `cpu` vCPUs with `memory` MiB. 0.25 vCPU takes 512, 1024 or 2048
/// only; the other sizes take every step of their range.
pub fn fargate_pair_ok(cpu: f64, memory: i32) -> bool {
    match fargate_memory(cpu) {
        Some(_) if cpu < 0.5 => [512, 1024, 2048].contains(&memory),
        Some((low, high, step)) => (low..=high).contains(&memory) && (memory - low) % step == 0,
        None => false,
    }
}

/// Whether one level's `batch` sets a field.
type IsSet = fn(&BatchSpec) -> bool;

/// Where a step's effective value of a `batch` field comes from, as a field path.
fn source(index: usize, field: &str, set_in_step: bool, set_in_flow: bool) -> String {
    if set_in_step {
        format!("spec.steps[{index}].batch.{field}")
    } else if set_in_flow {
        format!("spec.batch.{field}")
    } else {
        format!("{field} (default)")
    }
}

/// Every problem of the Flow's steps' effective Batch settings, one line each, naming the
/// fields at fault (the step's, the Flow's, or both).
pub fn batch_problems(flow: &Flow) -> Vec<String> {
    let flow_batch = flow.spec.batch.as_ref();
    let mut problems = Vec::new();
    for (index, step) in flow.spec.steps.iter().enumerate() {
        let own = step.batch.as_ref();
        let batch = effective_batch(flow_batch, own);
        let at = |field: &str, f: fn(&BatchSpec) -> bool| {
            source(index, field, own.is_some_and(f), flow_batch.is_some_and(f))
        };
        let name = &step.name;
        let fargate = batch.platform == Some(Platform::Fargate);
        let platform = at("platform", |b| b.platform.is_some());
        if fargate {
            let refused: [(&str, bool, IsSet); 7] = [
                ("gpu", batch.gpu.unwrap_or(0) > 0, |b| b.gpu.is_some()),
                ("inferentia", batch.inferentia.unwrap_or(0) > 0, |b| {
                    b.inferentia.is_some()
                }),
                ("trainium", batch.trainium.unwrap_or(0) > 0, |b| {
                    b.trainium.is_some()
                }),
                ("tmpfs", batch.tmpfs.is_some(), |b| b.tmpfs.is_some()),
                ("sharedMemory", batch.shared_memory.is_some(), |b| {
                    b.shared_memory.is_some()
                }),
                ("maxSwap", batch.max_swap.is_some(), |b| {
                    b.max_swap.is_some()
                }),
                ("swappiness", batch.swappiness.is_some(), |b| {
                    b.swappiness.is_some()
                }),
            ];
            for (field, set, given) in refused {
                if set {
                    problems.push(format!(
                        "step `{name}`: {} is not supported on platform FARGATE ({platform})",
                        at(field, given)
                    ));
                }
            }
            if step.parallel.is_some() {
                problems.push(format!(
                    "step `{name}`: spec.steps[{index}].parallel (a multi-node job) is not supported on platform FARGATE ({platform})"
                ));
            }
            let cpu = batch.cpu.unwrap_or(DEFAULT_CPU);
            let memory = batch.memory.unwrap_or(DEFAULT_MEMORY_MIB);
            let cpu_at = at("cpu", |b| b.cpu.is_some());
            let memory_at = at("memory", |b| b.memory.is_some());
            match fargate_memory(cpu) {
                None => problems.push(format!(
                    "step `{name}`: {cpu_at} = {cpu} is not a Fargate size ({platform}): use 0.25, 0.5, 1, 2, 4, 8 or 16"
                )),
                Some((low, high, step_size)) if !fargate_pair_ok(cpu, memory) => {
                    let sizes = if cpu < 0.5 {
                        "512, 1024 or 2048".to_owned()
                    } else {
                        format!("{low} to {high} in steps of {step_size}")
                    };
                    problems.push(format!(
                        "step `{name}`: {memory_at} = {memory} MiB does not fit {cpu_at} = {cpu} on Fargate ({platform}): {cpu} vCPU takes {sizes} MiB"
                    ));
                }
                Some(_) => {}
            }
        } else if let Some(cpu) = batch.cpu
            && cpu.fract() != 0.0
        {
            problems.push(format!(
                "step `{name}`: {} = {cpu} must be a whole number of vCPUs on platform EC2 ({platform}; EC2 is the default)",
                at("cpu", |b| b.cpu.is_some())
            ));
        }
        if batch.inferentia.unwrap_or(0) > 0 && batch.trainium.unwrap_or(0) > 0 {
            problems.push(format!(
                "step `{name}`: {} and {} are mutually exclusive (both request AWS Neuron devices): set only one",
                at("inferentia", |b| b.inferentia.is_some()),
                at("trainium", |b| b.trainium.is_some())
            ));
        }
        if let Some(size) = batch.tmpfs.as_ref().and_then(|t| t.size) {
            let memory = batch.memory.unwrap_or(DEFAULT_MEMORY_MIB);
            if size > memory {
                problems.push(format!(
                    "step `{name}`: {} = {size} MiB is larger than {} = {memory} MiB, which it counts against",
                    at("tmpfs.size", |b| b.tmpfs.is_some()),
                    at("memory", |b| b.memory.is_some())
                ));
            }
        }
        if batch.swappiness.is_some() && batch.max_swap.is_none() {
            problems.push(format!(
                "step `{name}`: {} takes effect only with batch.maxSwap, which neither spec.steps[{index}].batch nor spec.batch sets",
                at("swappiness", |b| b.swappiness.is_some())
            ));
        }
    }
    problems.extend(parameter_collisions(flow));
    problems
}

/// Steps whose job queue cannot run their platform: a Fargate step on a queue of EC2
/// compute environments, or the reverse, which Batch refuses only when the job is submitted.
/// `platforms` holds, per queue as the steps name it, its compute environments' platforms
/// (`EC2`, `FARGATE`); a queue it does not list is not judged.
pub fn queue_platform_problems(
    flow: &Flow,
    queues: &[(String, String)],
    platforms: &std::collections::BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let flow_batch = flow.spec.batch.as_ref();
    let mut problems = Vec::new();
    for (index, step) in flow.spec.steps.iter().enumerate() {
        let batch = effective_batch(flow_batch, step.batch.as_ref());
        let Some((_, queue)) = queues.iter().find(|(name, _)| *name == step.name) else {
            continue;
        };
        let Some(offered) = platforms.get(queue).filter(|p| !p.is_empty()) else {
            continue;
        };
        let wanted = match batch.platform {
            Some(Platform::Fargate) => "FARGATE",
            _ => "EC2",
        };
        if offered.iter().any(|p| p == wanted) {
            continue;
        }
        let platform_at = source(
            index,
            "platform",
            step.batch.as_ref().is_some_and(|b| b.platform.is_some()),
            flow_batch.is_some_and(|b| b.platform.is_some()),
        );
        let queue_at = if step.batch.as_ref().is_some_and(|b| b.queue.is_some()) {
            format!("spec.steps[{index}].batch.queue")
        } else if flow_batch.is_some_and(|b| b.queue.is_some()) {
            "spec.batch.queue".to_owned()
        } else {
            "the controller's job queue (FLOWLINE_JOB_QUEUE)".to_owned()
        };
        problems.push(format!(
            "step `{}` runs on platform {wanted} ({platform_at}) but job queue `{queue}` ({queue_at}) has only {} compute environments: give the step a queue of {wanted} compute environments, or change its platform",
            step.name,
            offered.join(" and ")
        ));
    }
    problems
}

/// Parameters whose names differ only in letter case: both would reach the tasks as the same
/// `FLOWLINE_PARAM_<NAME>`.
fn parameter_collisions(flow: &Flow) -> Vec<String> {
    let parameters = &flow.spec.parameters;
    let mut problems = Vec::new();
    for (i, first) in parameters.iter().enumerate() {
        for (j, second) in parameters.iter().enumerate().skip(i + 1) {
            if first.name.eq_ignore_ascii_case(&second.name) {
                problems.push(format!(
                    "spec.parameters[{i}].name `{}` and spec.parameters[{j}].name `{}` collide: both reach the tasks as {}",
                    first.name,
                    second.name,
                    super::parameters::env_name(&first.name)
                ));
            }
        }
    }
    problems
}

/// Variables of a step that both `env` and a bound secret set: `secret_names` holds, per
/// index in `step.secrets`, the variables that secret sets.
pub fn env_secret_collisions(
    index: usize,
    step: &Step,
    secret_names: &[(usize, String)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (e, var) in step.env.iter().enumerate() {
        for (s, _) in secret_names.iter().filter(|(_, name)| *name == var.name) {
            problems.push(format!(
                "step `{}`: spec.steps[{index}].env[{e}].name `{}` is also set by spec.steps[{index}].secrets[{s}]: rename one",
                step.name, var.name
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flow(spec: serde_json::Value) -> Flow {
        serde_json::from_value(json!({
            "apiVersion": "flowline.io/v1alpha1",
            "kind": "Flow",
            "metadata": {"name": "f", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn steps_with(batch: serde_json::Value) -> serde_json::Value {
        json!([
            {"name": "start", "next": ["end"], "batch": batch},
            {"name": "end"},
        ])
    }

    #[test]
    fn a_gpu_step_under_a_fargate_flow_names_both_fields() {
        let problems = batch_problems(&flow(json!({
            "batch": {"platform": "FARGATE", "memory": 2048},
            "steps": steps_with(json!({"gpu": 1})),
        })));
        assert_eq!(
            problems,
            [
                "step `start`: spec.steps[0].batch.gpu is not supported on platform FARGATE (spec.batch.platform)"
            ]
        );
    }

    #[test]
    fn a_flow_inferentia_and_a_step_trainium_are_refused_instead_of_dropping_one() {
        let problems = batch_problems(&flow(json!({
            "batch": {"inferentia": 1},
            "steps": steps_with(json!({"trainium": 2})),
        })));
        assert!(
            problems[0].contains("spec.batch.inferentia and spec.steps[0].batch.trainium"),
            "{problems:?}"
        );
    }

    #[test]
    fn linux_settings_and_fargate_sizes_are_checked_on_effective_values() {
        let cases = [
            (
                json!({"batch": {"memory": 1024}, "steps": steps_with(json!({"tmpfs": {"size": 2048}}))}),
                "spec.steps[0].batch.tmpfs.size = 2048 MiB is larger than spec.batch.memory = 1024",
            ),
            (
                json!({"steps": steps_with(json!({"swappiness": 10}))}),
                "spec.steps[0].batch.swappiness takes effect only with batch.maxSwap",
            ),
            (
                json!({"batch": {"platform": "FARGATE"}, "steps": steps_with(json!({"cpu": 200}))}),
                "spec.steps[0].batch.cpu = 200 is not a Fargate size (spec.batch.platform)",
            ),
            (
                json!({"batch": {"platform": "FARGATE", "cpu": 1}, "steps": steps_with(json!({"memory": 16384}))}),
                "spec.steps[0].batch.memory = 16384 MiB does not fit spec.batch.cpu = 1 on Fargate",
            ),
            (
                json!({"steps": steps_with(json!({"cpu": 0.5}))}),
                "spec.steps[0].batch.cpu = 0.5 must be a whole number of vCPUs on platform EC2 (platform (default)",
            ),
            (
                json!({"steps": [{"name": "start", "next": ["end"]}, {"name": "end"}],
                       "parameters": [{"name": "alpha", "type": "Int"}, {"name": "ALPHA", "type": "Int"}]}),
                "spec.parameters[0].name `alpha` and spec.parameters[1].name `ALPHA` collide",
            ),
        ];
        for (spec, expected) in cases {
            let problems = batch_problems(&flow(spec.clone()));
            assert!(
                problems.len() == 1 && problems[0].contains(expected),
                "{spec}: {problems:?}"
            );
        }
        for (cpu, memory, ok) in [
            (0.25, 512, true),
            (0.25, 1536, false),
            (0.5, 3072, true),
            (8.0, 20480, true),
            (8.0, 18432, false),
            (16.0, 122880, true),
            (3.0, 8192, false),
        ] {
            assert_eq!(fargate_pair_ok(cpu, memory), ok, "{cpu} / {memory}");
        }
    }

    #[test]
    fn a_fargate_step_on_an_ec2_queue_is_named_with_its_queue_and_platform() {
        let flow = flow(json!({
            "batch": {"platform": "FARGATE", "memory": 2048},
            "steps": [
                {"name": "start", "next": ["end"], "batch": {"queue": "gpu-ec2"}},
                {"name": "end"},
            ],
        }));
        let queues = vec![
            ("start".to_owned(), "gpu-ec2".to_owned()),
            ("end".to_owned(), "flowline".to_owned()),
        ];
        let platforms = std::collections::BTreeMap::from([
            ("gpu-ec2".to_owned(), vec!["EC2".to_owned()]),
            ("flowline".to_owned(), vec!["FARGATE".to_owned()]),
        ]);
        assert_eq!(
            queue_platform_problems(&flow, &queues, &platforms),
            [
                "step `start` runs on platform FARGATE (spec.batch.platform) but job queue `gpu-ec2` (spec.steps[0].batch.queue) has only EC2 compute environments: give the step a queue of FARGATE compute environments, or change its platform"
            ]
        );
    }

    #[test]
    fn an_env_variable_a_secret_also_sets_is_named_with_both_fields() {
        let step: Step = serde_json::from_value(json!({
            "name": "start",
            "env": [{"name": "A"}, {"name": "DB_USER"}],
        }))
        .unwrap();
        let problems = env_secret_collisions(0, &step, &[(1, "DB_USER".into())]);
        assert_eq!(
            problems,
            [
                "step `start`: spec.steps[0].env[1].name `DB_USER` is also set by spec.steps[0].secrets[1]: rename one"
            ]
        );
    }
}
