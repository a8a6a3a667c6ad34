//! The Step Functions state machine (Amazon States Language) of a Flow.
//!
//! Shape:
//! - three `Flowline.*` Pass states first normalize the execution input, so executions
//!   started by Flowline, by a Schedule or by hand all see the same data:
//!   `{runId, taskId, parameters, trigger: {bucket, key}, foreachIndex, foreachValue, caught}`;
//!   `parameters` are the Run's, merged over the Flow's defaults (shallowly: a started
//!   execution passes either no `parameters` or all of them, as strings);
//! - each step is a `batch:submitJob.sync` Task whose container overrides carry the task
//!   contract (run id, task id, artifact and input prefixes, parameters, trigger, foreach
//!   position); its result is discarded (`ResultPath: null`) so the data above flows on;
//! - a branch is a Parallel state with one branch per path, followed by the join step;
//! - a foreach is a Distributed Map reading the JSON array the foreach task wrote to S3
//!   (`ItemReader`), followed by the join step. Distributed rather than inline: an inline Map
//!   needs its items in the state's input, which would take an extra Task to read S3, and it
//!   caps fan-out at 40 concurrent iterations and 256 KiB of items; Distributed Map reads S3
//!   itself and runs up to 10,000 child executions (`maxConcurrency` bounds it);
//! - retries are Batch's (`retryStrategy` in the job definition), so a failed attempt is never
//!   retried twice; `catch` is a Catch on the Task.
//!
//! Artifact layout: `<s3Root>/<namespace>/<flow>/<run id>/<step>/<task id>/`. The run id is
//! the execution name; the task id is `0` outside a foreach and `<outer>-<index>` inside one.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::api::{Parameter, Step};

use super::graph::{Chain, Segment, ValidGraph};

/// Everything the state machine is built from, already resolved.
pub struct MachineInput<'a> {
    pub steps: BTreeMap<&'a str, &'a Step>,
    /// Job definition name per step; the Flow reconciler pins each to its revision ARN
    /// ([`super::revisions::pin`]) before the machine is written.
    pub job_definitions: BTreeMap<&'a str, String>,
    /// Job queue per step.
    pub queues: BTreeMap<&'a str, String>,
    /// `<s3Root>/<namespace>/<flow>` without a trailing slash.
    pub artifact_root: String,
    pub parameters: &'a [Parameter],
    pub timeout_seconds: Option<i64>,
    pub max_concurrency: Option<i32>,
    /// Batch job name prefix (the Flow's name), so jobs are recognizable in the console.
    pub job_name_prefix: String,
}

/// Why a state machine cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error(
        "step `{step}` catches its failure with step `{target}`, which runs in another part of the flow (a branch or foreach must continue within itself)"
    )]
    CatchOutOfScope { step: String, target: String },
    #[error("step `{step}` catches its failure with step `{target}`, which does not exist")]
    UnknownCatchTarget { step: String, target: String },
    #[error(
        "failure handler `{handler}` continues with `{next}`, which runs in another part of the flow; a handler must rejoin the steps around the step it handles"
    )]
    HandlerLeavesScope { handler: String, next: String },
}

const DEFAULTS_STATE: &str = "Flowline.Defaults";
const MERGE_STATE: &str = "Flowline.Input";
const CONTEXT_STATE: &str = "Flowline.Context";

/// Builds the definition from the validated graph.
pub fn definition(input: &MachineInput<'_>, graph: &ValidGraph) -> Result<Value, MachineError> {
    let scopes = scopes_of(graph);
    let builder = Builder {
        input,
        scopes: &scopes,
        predecessors: predecessors(input),
        handlers: &graph.handlers,
        catch_targets: catch_targets(input),
    };
    let (first, mut states) = builder.chain(&graph.chain, 0)?;

    let defaults: Map<String, Value> = input
        .parameters
        .iter()
        .filter_map(|p| {
            p.default
                .as_ref()
                .map(|d| (p.name.clone(), Value::String(d.clone())))
        })
        .collect();
    states.insert(
        DEFAULTS_STATE.into(),
        json!({
            "Type": "Pass",
            "Comment": "Defaults of the input: the Flow's parameter defaults and an empty trigger",
            "Result": {"parameters": defaults, "trigger": {"bucket": "", "key": ""}},
            "ResultPath": "$.flowlineDefaults",
            "Next": MERGE_STATE
        }),
    );
    states.insert(
        MERGE_STATE.into(),
        json!({
            "Type": "Pass",
            "Parameters": {"merged.$": "States.JsonMerge($.flowlineDefaults, $, false)"},
            "Next": CONTEXT_STATE
        }),
    );
    states.insert(
        CONTEXT_STATE.into(),
        json!({
            "Type": "Pass",
            "Comment": "The data every task of the run sees",
            "Parameters": {
                "root": input.artifact_root,
                "runId.$": "$$.Execution.Name",
                "taskId": "0",
                "parameters.$": "$.merged.parameters",
                "trigger.$": "$.merged.trigger",
                "foreachIndex": "",
                "foreachValue": "",
                "caught": {}
            },
            "Next": first
        }),
    );
    let mut machine = json!({
        "Comment": "Generated by Flowline; edits are overwritten",
        "StartAt": DEFAULTS_STATE,
    });
    machine["States"] = Value::Object(states);
    if let Some(timeout) = input.timeout_seconds {
        machine["TimeoutSeconds"] = json!(timeout);
    }
    Ok(machine)
}

/// The Map nesting depth of each step (0 outside any foreach); steps in one Parallel branch
/// share their enclosing depth. Used to tell whether two steps share a task id.
fn scopes_of(graph: &ValidGraph) -> BTreeMap<String, usize> {
    fn visit(chain: &Chain, depth: usize, out: &mut BTreeMap<String, usize>) {
        for segment in chain {
            match segment {
                Segment::Step(name) => {
                    out.insert(name.clone(), depth);
                }
                Segment::Branch(branches) => branches.iter().for_each(|b| visit(b, depth, out)),
                Segment::Foreach(body) => visit(body, depth + 1, out),
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(&graph.chain, 0, &mut out);
    // A handler runs where the step it handles runs (handlers may chain).
    for _ in 0..graph.handlers.len() {
        for (handler, catcher) in &graph.handlers {
            if let Some(depth) = out.get(catcher).copied() {
                out.insert(handler.clone(), depth);
            }
        }
    }
    out
}

/// The step each `catch` continues with: its `catch.next`, or else the step's own `next`.
fn catch_targets(input: &MachineInput<'_>) -> std::collections::BTreeSet<String> {
    input
        .steps
        .values()
        .filter_map(|step| {
            let catch = step.catch.as_ref()?;
            Some(match &catch.next {
                Some(target) => vec![target.clone()],
                None => step.next.clone(),
            })
        })
        .flatten()
        .collect()
}

fn predecessors<'a>(input: &MachineInput<'a>) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, step) in &input.steps {
        let catch = step.catch.as_ref().and_then(|c| c.next.as_ref());
        for next in step.next.iter().chain(catch) {
            if let Some((target, _)) = input.steps.get_key_value(next.as_str()) {
                out.entry(*target).or_default().push(*name);
            }
        }
    }
    out
}

struct Builder<'a, 'b> {
    input: &'b MachineInput<'a>,
    scopes: &'b BTreeMap<String, usize>,
    predecessors: BTreeMap<&'a str, Vec<&'a str>>,
    handlers: &'b BTreeMap<String, String>,
    /// Steps a `catch` can lead to: they see the caught error.
    catch_targets: std::collections::BTreeSet<String>,
}

impl Builder<'_, '_> {
    /// The states of one chain (one scope) and the name of its first state.
    fn chain(
        &self,
        chain: &Chain,
        depth: usize,
    ) -> Result<(String, Map<String, Value>), MachineError> {
        let names: Vec<String> = state_names(chain);
        let mut states = Map::new();
        for (index, segment) in chain.iter().enumerate() {
            let next = names.get(index + 1);
            let mut state = match segment {
                Segment::Step(name) => self.task(name, next)?,
                Segment::Branch(branches) => {
                    let mut scopes = Vec::with_capacity(branches.len());
                    for branch in branches {
                        let (start, branch_states) = self.chain(branch, depth)?;
                        let mut scope = json!({"StartAt": start});
                        scope["States"] = Value::Object(branch_states);
                        scopes.push(scope);
                    }
                    let mut parallel = json!({"Type": "Parallel", "ResultPath": null});
                    parallel["Branches"] = Value::Array(scopes);
                    parallel
                }
                Segment::Foreach(body) => {
                    let split = previous_step(chain, index);
                    self.foreach(split, body, depth)?
                }
            };
            match next {
                Some(next) => state["Next"] = json!(next),
                None => state["End"] = json!(true),
            }
            states.insert(names[index].clone(), state);
        }
        self.add_handlers(&mut states)?;
        Ok((names.first().cloned().unwrap_or_default(), states))
    }

    /// Adds the failure handlers of the steps in `states` (and theirs, in turn), each a Task
    /// continuing with its `next`, which must run in the same scope.
    fn add_handlers(&self, states: &mut Map<String, Value>) -> Result<(), MachineError> {
        loop {
            let pending: Vec<(&String, &String)> = self
                .handlers
                .iter()
                .filter(|(handler, catcher)| {
                    states.contains_key(catcher.as_str()) && !states.contains_key(handler.as_str())
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            for (handler, _) in pending {
                let next = self
                    .input
                    .steps
                    .get(handler.as_str())
                    .and_then(|step| step.next.first())
                    .cloned()
                    .unwrap_or_default();
                let mut state = self.task(handler, Some(&next))?;
                state["Next"] = json!(next);
                states.insert(handler.clone(), state);
            }
        }
        for (handler, _) in self
            .handlers
            .iter()
            .filter(|(h, _)| states.contains_key(h.as_str()))
        {
            let next = states[handler.as_str()]["Next"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !states.contains_key(&next) {
                return Err(MachineError::HandlerLeavesScope {
                    handler: handler.clone(),
                    next,
                });
            }
        }
        Ok(())
    }

    fn foreach(&self, split: &str, body: &Chain, depth: usize) -> Result<Value, MachineError> {
        let (start, body_states) = self.chain(body, depth + 1)?;
        let artifact = self
            .input
            .steps
            .get(split)
            .and_then(|step| step.foreach.as_ref())
            .map(|foreach| foreach.artifact.clone())
            .unwrap_or_else(|| "foreach.json".into());
        let (bucket, key_prefix) = split_s3(&self.input.artifact_root);
        // The placeholders stay unescaped; the literal parts are escaped.
        let key = format!(
            "{}{{}}/{}/{{}}/{}",
            escape_format(&key_prefix),
            escape_format(split),
            escape_format(&artifact)
        );
        let mut map = json!({
            "Type": "Map",
            "Comment": format!("One iteration per element of the array step `{split}` wrote"),
            "ItemReader": {
                "Resource": "arn:aws:states:::s3:getObject",
                "ReaderConfig": {"InputType": "JSON"},
                "Parameters": {
                    "Bucket": bucket,
                    "Key.$": format!("States.Format('{key}', $.runId, $.taskId)")
                }
            },
            "ItemSelector": {
                "root.$": "$.root",
                "runId.$": "$.runId",
                "taskId.$": "States.Format('{}-{}', $.taskId, $$.Map.Item.Index)",
                "parameters.$": "$.parameters",
                "trigger.$": "$.trigger",
                "foreachIndex.$": "States.Format('{}', $$.Map.Item.Index)",
                "foreachValue.$": "States.JsonToString($$.Map.Item.Value)",
                "caught.$": "$.caught"
            },
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": start
            },
            "ResultPath": null
        });
        // Moved in, not through `json!`, which would copy the whole body.
        map["ItemProcessor"]["States"] = Value::Object(body_states);
        if let Some(limit) = self.input.max_concurrency {
            map["MaxConcurrency"] = json!(limit);
        }
        Ok(map)
    }

    /// The Task of one step.
    fn task(&self, name: &str, next_state: Option<&String>) -> Result<Value, MachineError> {
        let Some(step) = self.input.steps.get(name) else {
            return Ok(json!({"Type": "Pass"}));
        };
        let environment = self.environment(name);
        let job_name = truncate(&format!("{}-{}", self.input.job_name_prefix, name), 128);
        let mut parameters = json!({
            "JobName": job_name,
            "JobQueue": self.input.queues.get(name).cloned().unwrap_or_default(),
            "JobDefinition": self.input.job_definitions.get(name).cloned().unwrap_or_default(),
        });
        if step.parallel.is_some() {
            let mut node = json!({"TargetNodes": "0:", "ContainerOverrides": {}});
            node["ContainerOverrides"]["Environment"] = Value::Array(environment);
            parameters["NodeOverrides"] = json!({});
            parameters["NodeOverrides"]["NodePropertyOverrides"] = Value::Array(vec![node]);
        } else {
            parameters["ContainerOverrides"] = json!({});
            parameters["ContainerOverrides"]["Environment"] = Value::Array(environment);
        }
        let mut task = json!({
            "Type": "Task",
            "Resource": "arn:aws:states:::batch:submitJob.sync",
            "Parameters": parameters,
            "ResultPath": null
        });
        if let Some(catch) = &step.catch {
            let target = match &catch.next {
                Some(target) => {
                    if !self.input.steps.contains_key(target.as_str()) {
                        return Err(MachineError::UnknownCatchTarget {
                            step: name.into(),
                            target: target.clone(),
                        });
                    }
                    if self.scopes.get(target) != self.scopes.get(name) {
                        return Err(MachineError::CatchOutOfScope {
                            step: name.into(),
                            target: target.clone(),
                        });
                    }
                    target.clone()
                }
                None => next_state.cloned().unwrap_or_else(|| name.to_owned()),
            };
            task["Catch"] = json!([{
                "ErrorEquals": ["States.ALL"],
                "ResultPath": "$.caught",
                "Next": target
            }]);
        }
        Ok(task)
    }

    /// The run-specific part of the task contract, as container overrides. Paths are built
    /// from `$.root` (the artifact root, carried in the state data) so the definition stays
    /// small; the foreach position is set only inside a foreach, and the caught error only on
    /// steps a `catch` leads to.
    fn environment(&self, name: &str) -> Vec<Value> {
        let depth = self.scopes.get(name).copied().unwrap_or(0);
        let mut inputs = Vec::new();
        let mut input_args = Vec::new();
        for parent in self.predecessors.get(name).into_iter().flatten() {
            if self.scopes.get(*parent).copied().unwrap_or(0) == depth {
                inputs.push(format!("{{}}/{{}}/{parent}/{{}}/"));
                input_args.extend(["$.root", "$.runId", "$.taskId"]);
            } else {
                // Across a foreach boundary: every task of the parent step.
                inputs.push(format!("{{}}/{{}}/{parent}/"));
                input_args.extend(["$.root", "$.runId"]);
            }
        }
        let mut env = vec![
            json!({"Name": "FLOWLINE_STEP", "Value": name}),
            json!({"Name": "FLOWLINE_RUN_ID", "Value.$": "$.runId"}),
            json!({"Name": "FLOWLINE_TASK_ID", "Value.$": "$.taskId"}),
            json!({
                "Name": "FLOWLINE_ARTIFACT_URI",
                "Value.$": format!("States.Format('{{}}/{{}}/{name}/{{}}/', $.root, $.runId, $.taskId)")
            }),
        ];
        if inputs.is_empty() {
            env.push(json!({"Name": "FLOWLINE_INPUT_URIS", "Value": ""}));
        } else {
            env.push(json!({
                "Name": "FLOWLINE_INPUT_URIS",
                "Value.$": format!("States.Format('{}', {})", inputs.join(","), input_args.join(", "))
            }));
        }
        if depth > 0 {
            env.push(json!({"Name": "FLOWLINE_FOREACH_INDEX", "Value.$": "$.foreachIndex"}));
            env.push(json!({"Name": "FLOWLINE_FOREACH_VALUE", "Value.$": "$.foreachValue"}));
        }
        env.extend([
            json!({"Name": "FLOWLINE_TRIGGER_S3_BUCKET", "Value.$": "$.trigger.bucket"}),
            json!({"Name": "FLOWLINE_TRIGGER_S3_KEY", "Value.$": "$.trigger.key"}),
            json!({"Name": "FLOWLINE_PARAMETERS", "Value.$": "States.JsonToString($.parameters)"}),
        ]);
        if self.catch_targets.contains(name) {
            env.push(json!({"Name": "FLOWLINE_CAUGHT_ERROR", "Value.$": "States.JsonToString($.caught)"}));
        }
        for parameter in self.input.parameters {
            env.push(json!({
                "Name": format!("FLOWLINE_PARAM_{}", parameter.name.to_ascii_uppercase()),
                "Value.$": format!("$.parameters.{}", parameter.name)
            }));
        }
        env
    }
}

/// The state name of each segment: the step's name, `<split>.branches` or `<split>.foreach`.
fn state_names(chain: &Chain) -> Vec<String> {
    chain
        .iter()
        .enumerate()
        .map(|(index, segment)| match segment {
            Segment::Step(name) => name.clone(),
            Segment::Branch(_) => format!("{}.branches", previous_step(chain, index)),
            Segment::Foreach(_) => format!("{}.foreach", previous_step(chain, index)),
        })
        .collect()
}

/// The step just before a Branch or Foreach segment: the split that opened it.
fn previous_step(chain: &Chain, index: usize) -> &str {
    match index.checked_sub(1).and_then(|i| chain.get(i)) {
        Some(Segment::Step(name)) => name,
        _ => "split",
    }
}

/// `s3://bucket/a/b` → (`bucket`, `a/b/`).
pub fn split_s3(uri: &str) -> (String, String) {
    let rest = uri.trim_start_matches("s3://");
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let key = key.trim_end_matches('/');
    let key = if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    };
    (bucket.to_owned(), key)
}

/// Escapes the characters that are special in a `States.Format` template literal.
fn escape_format(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\'' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_key_prefix() {
        assert_eq!(
            split_s3("s3://bucket/a/b"),
            ("bucket".into(), "a/b/".into())
        );
        assert_eq!(
            split_s3("s3://bucket/a/b/"),
            ("bucket".into(), "a/b/".into())
        );
        assert_eq!(split_s3("s3://bucket"), ("bucket".into(), String::new()));
        assert_eq!(split_s3("s3://bucket/"), ("bucket".into(), String::new()));
    }

    #[test]
    fn format_templates_escape_special_characters() {
        assert_eq!(escape_format("a{b}'c\\"), "a\\{b\\}\\'c\\\\");
    }
}
