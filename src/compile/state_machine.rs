//! The Step Functions state machine (Amazon States Language) of a Flow.
//!
//! Shape:
//! - `Flowline.*` states first normalize the execution input, so executions started by
//!   Flowline, by a Schedule or by hand all see the same data: `{root, runId, taskId,
//!   parameters, paramText, trigger: {bucket, key}, foreachIndex, foreachValue, caught}`;
//!   `parameters` are the input's typed values merged key by key over the Flow's typed
//!   defaults, and `paramText` each one's text (see [`super::parameters`]);
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
//!   retried twice; the Task's own `Retry` matches only a refused `SubmitJob` (throttling),
//!   when no job exists yet ([`SUBMIT_RETRY_ERRORS`]); `catch` is a Catch on the Task;
//! - every step has a timeout: Batch's attempt duration on the job definition, and the Task's
//!   `TimeoutSeconds` over all attempts plus queueing ([`task_timeout`]).
//!
//! Artifact layout: `<s3Root>/<namespace>/<flow>/<run id>/<step>/<task id>/`. The run id is
//! the execution name; the task id is `0` outside a foreach and `<outer>-<index>` inside one.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::api::{Parameter, Step};

use super::graph::{Chain, Segment, ValidGraph};
use super::parameters;

/// Everything the state machine is built from, already resolved.
pub struct MachineInput<'a> {
    pub steps: BTreeMap<&'a str, &'a Step>,
    /// Job definition name per step; the Flow reconciler pins each to its revision ARN
    /// ([`super::revisions::pin`]) before the machine is written.
    pub job_definitions: BTreeMap<&'a str, String>,
    /// Job queue per step.
    pub queues: BTreeMap<&'a str, String>,
    /// Tags of each step's Batch jobs: the ownership tags, the Flow's `spec.tags` and the
    /// step's `batch.tags`, as its job definition has them.
    pub job_tags: BTreeMap<&'a str, BTreeMap<String, String>>,
    /// `<s3Root>/<namespace>/<flow>` without a trailing slash.
    pub artifact_root: String,
    pub parameters: &'a [Parameter],
    /// The Task state's `TimeoutSeconds` per step: see [`task_timeout`].
    pub task_timeouts: BTreeMap<&'a str, i64>,
    pub timeout_seconds: Option<i64>,
    pub max_concurrency: Option<i32>,
    /// Batch job name prefix (the Flow's name), so jobs are recognizable in the console.
    pub job_name_prefix: String,
}

/// Why a state machine cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("{0}")]
    Parameter(String),
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

/// How long a job may wait in its queue per attempt before the Task gives up on it.
pub const QUEUE_ALLOWANCE_SECONDS: i64 = 24 * 3600;
/// The longest `TimeoutSeconds` Step Functions accepts on a state (one year).
const MAX_STATE_TIMEOUT_SECONDS: i64 = 31_536_000;

/// The Task's own timeout: every attempt's full duration (Batch enforces each one with the job
/// definition's attempt timeout, so retries keep their time) plus a day per attempt in the
/// queue. It is the backstop for what Batch's attempt timeout cannot see: a job that never
/// leaves RUNNABLE (no capacity) or a wait that was lost. Step Functions then fails the Task
/// with `States.Timeout` (which a `catch` handles) and terminates the job.
pub fn task_timeout(attempt_seconds: i64, attempts: i64) -> i64 {
    attempts
        .saturating_mul(attempt_seconds.saturating_add(QUEUE_ALLOWANCE_SECONDS))
        .min(MAX_STATE_TIMEOUT_SECONDS)
}

/// Errors of the `SubmitJob` call itself that Step Functions retries: Batch refused the request
/// (throttling: Batch admits about 50 SubmitJob calls a second per account), so no job exists
/// yet and submitting again cannot run an attempt twice. A job that ran and failed ends as
/// `States.TaskFailed` and is never matched here: Batch's `retryStrategy` owns those retries.
/// `Batch.ServerException` is left out on purpose: a server error may come after the job was
/// created, and a retry would then start a second one.
pub const SUBMIT_RETRY_ERRORS: [&str; 2] =
    ["Batch.AWSBatchException", "Batch.TooManyRequestsException"];

const DEFAULTS_STATE: &str = "Flowline.Defaults";
const MERGE_STATE: &str = "Flowline.Input";
const PARAMETERS_STATE: &str = "Flowline.Parameters";
const CONTEXT_STATE: &str = "Flowline.Context";
/// The Choice that starts a resumed Run's execution at its `resumeFrom` step.
pub const RESUME_STATE: &str = "Flowline.Resume";

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

    let defaults = parameters::typed_defaults(input.parameters).map_err(MachineError::Parameter)?;
    states.insert(
        DEFAULTS_STATE.into(),
        json!({
            "Type": "Pass",
            "Comment": "Defaults of the input: the Flow's parameter defaults (typed) and an empty trigger",
            "Result": {"parameters": defaults, "trigger": {"bucket": "", "key": ""}, "resume": {"step": ""}},
            "ResultPath": "$.flowlineDefaults",
            "Next": MERGE_STATE
        }),
    );
    states.insert(
        MERGE_STATE.into(),
        json!({
            "Type": "Pass",
            "Parameters": {"merged.$": "States.JsonMerge($.flowlineDefaults, $, false)"},
            "Next": PARAMETERS_STATE
        }),
    );
    // Key by key: a parameter the input leaves out keeps its default.
    states.insert(
        PARAMETERS_STATE.into(),
        json!({
            "Type": "Pass",
            "Parameters": {
                "parameters.$": "States.JsonMerge($.merged.flowlineDefaults.parameters, $.merged.parameters, false)",
                "trigger.$": "$.merged.trigger",
                "resume.$": "$.merged.resume"
            },
            "Next": CONTEXT_STATE
        }),
    );
    // Each parameter's text for FLOWLINE_PARAM_<NAME>, built once per execution. A parameter
    // without a default may be absent: its text starts empty and a Choice fills it only when
    // the value is there, so an unset optional parameter never fails the execution.
    let mut texts = Map::new();
    let mut optional = Vec::new();
    for parameter in input.parameters {
        let text = if parameter.default.is_some() {
            json!({"text.$": parameters::text_expression(parameter.type_, &format!("$.parameters.{}", parameter.name))})
        } else {
            optional.push(parameter);
            json!({"text": ""})
        };
        texts.insert(parameter.name.clone(), text);
    }
    let optional_state = |parameter: &Parameter| format!("Flowline.Parameter.{}", parameter.name);
    let after_parameters = RESUME_STATE.to_owned();
    let after_context = optional
        .first()
        .map_or(after_parameters.clone(), |p| optional_state(p));
    states.insert(
        CONTEXT_STATE.into(),
        json!({
            "Type": "Pass",
            "Comment": "The data every task of the run sees",
            "Parameters": {
                "root": input.artifact_root,
                "runId.$": "$$.Execution.Name",
                "taskId": "0",
                "parameters.$": "$.parameters",
                "paramText": texts,
                "trigger.$": "$.trigger",
                "foreachIndex": "",
                "foreachValue": "",
                "caught": {},
                "resumeStep.$": "$.resume.step"
            },
            "Next": after_context
        }),
    );
    for (index, parameter) in optional.iter().enumerate() {
        let next = optional
            .get(index + 1)
            .map_or(after_parameters.clone(), |p| optional_state(p));
        let path = format!("$.parameters.{}", parameter.name);
        let fill = format!("{}.Text", optional_state(parameter));
        states.insert(
            optional_state(parameter),
            json!({
                "Type": "Choice",
                "Choices": [{"Variable": path, "IsPresent": true, "Next": fill}],
                "Default": next
            }),
        );
        states.insert(
            fill,
            json!({
                "Type": "Pass",
                "Parameters": {"text.$": parameters::text_expression(parameter.type_, &path)},
                "ResultPath": format!("$.paramText.{}", parameter.name),
                "Next": next
            }),
        );
    }
    states.insert(RESUME_STATE.into(), resume_choice(&graph.chain, &first));
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

/// Steps an execution can start at: the steps on the flow's main line (not inside a branch
/// or a foreach), in order. A resumed Run starts at one of them and skips those before it.
pub fn resumable_steps(chain: &Chain) -> Vec<&str> {
    chain
        .iter()
        .filter_map(|segment| match segment {
            Segment::Step(name) => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// The Choice after the input is normalized: an execution whose input names a step in
/// `resume.step` (a resumed Run, `spec.resumeFrom`) jumps to it; any other goes to the first
/// step. One state machine serves both, so a resumed Run runs the Flow's current version like
/// any other Run and nothing is created for it.
fn resume_choice(chain: &Chain, first: &str) -> Value {
    let choices: Vec<Value> = resumable_steps(chain)
        .into_iter()
        .filter(|name| *name != first)
        .map(|name| json!({"Variable": "$.resumeStep", "StringEquals": name, "Next": name}))
        .collect();
    if choices.is_empty() {
        // ASL wants at least one choice; a one-step line has nothing to skip.
        return json!({"Type": "Pass", "Next": first});
    }
    let mut choice = json!({
        "Type": "Choice",
        "Comment": "A resumed Run starts at its resumeFrom step; the steps before it are reused",
        "Default": first
    });
    choice["Choices"] = Value::Array(choices);
    choice
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
        add_caught_states(&mut states);
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
                "paramText.$": "$.paramText",
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
        let job_name = truncate(&format!("{}-{}", self.input.job_name_prefix, name), 128);
        let mut parameters = json!({
            "JobName": job_name,
            "JobQueue": self.input.queues.get(name).cloned().unwrap_or_default(),
            "JobDefinition": self.input.job_definitions.get(name).cloned().unwrap_or_default(),
        });
        // SubmitJob does not copy the job definition's tags to the job: they are passed, and
        // propagated to the job's ECS task, so every job carries what `spec.tags` promises.
        if let Some(tags) = self.input.job_tags.get(name).filter(|t| !t.is_empty()) {
            parameters["Tags"] = json!(tags);
            parameters["PropagateTags"] = json!(true);
        }
        if let Some(parallel) = &step.parallel {
            // One override per node, each with the whole task contract and the node's own task
            // id, so nodes write to their own prefixes. Batch's SubmitJob (in Step Functions'
            // PascalCase) takes them as NodeOverrides.NodePropertyOverrides[].
            let nodes = (0..parallel.num_nodes.max(1))
                .map(|node| {
                    let mut item =
                        json!({"TargetNodes": format!("{node}:{node}"), "ContainerOverrides": {}});
                    item["ContainerOverrides"]["Environment"] =
                        Value::Array(self.environment(name, Some(node)));
                    item
                })
                .collect();
            parameters["NodeOverrides"] = json!({});
            parameters["NodeOverrides"]["NodePropertyOverrides"] = Value::Array(nodes);
        } else {
            parameters["ContainerOverrides"] = json!({});
            parameters["ContainerOverrides"]["Environment"] =
                Value::Array(self.environment(name, None));
        }
        // `Parameters` is moved in below: `json!` would copy it (the task's whole contract).
        let mut task = json!({
            "Type": "Task",
            "Resource": "arn:aws:states:::batch:submitJob.sync",
            "ResultPath": null,
            // Metaflow's Step Functions compiler retries submissions the same way.
            "Retry": [{
                "ErrorEquals": SUBMIT_RETRY_ERRORS,
                "IntervalSeconds": 2,
                "BackoffRate": 2,
                "MaxAttempts": 10,
                "MaxDelaySeconds": 60,
                "JitterStrategy": "FULL"
            }]
        });
        task["Parameters"] = parameters;
        if let Some(timeout) = self.input.task_timeouts.get(name) {
            task["TimeoutSeconds"] = json!(timeout);
        }
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
    ///
    /// On a multi-node step, `node` is the node's index: its task id is `<task>-node-<index>`,
    /// and the step after it gets every node's prefix in `FLOWLINE_INPUT_URIS`.
    fn environment(&self, name: &str, node: Option<i32>) -> Vec<Value> {
        let depth = self.scopes.get(name).copied().unwrap_or(0);
        let mut inputs = Vec::new();
        let mut input_args = Vec::new();
        for parent in self.predecessors.get(name).into_iter().flatten() {
            let nodes = self
                .input
                .steps
                .get(*parent)
                .and_then(|step| step.parallel.as_ref())
                .map(|parallel| parallel.num_nodes);
            if self.scopes.get(*parent).copied().unwrap_or(0) == depth {
                match nodes {
                    Some(count) => {
                        for index in 0..count {
                            inputs.push(format!("{{}}/{{}}/{parent}/{{}}-node-{index}/"));
                            input_args.extend(["$.root", "$.runId", "$.taskId"]);
                        }
                    }
                    None => {
                        inputs.push(format!("{{}}/{{}}/{parent}/{{}}/"));
                        input_args.extend(["$.root", "$.runId", "$.taskId"]);
                    }
                }
            } else {
                // Across a foreach boundary: every task of the parent step.
                inputs.push(format!("{{}}/{{}}/{parent}/"));
                input_args.extend(["$.root", "$.runId"]);
            }
        }
        let mut env = vec![
            json!({"Name": "FLOWLINE_STEP", "Value": name}),
            json!({"Name": "FLOWLINE_RUN_ID", "Value.$": "$.runId"}),
        ];
        match node {
            Some(index) => env.extend([
                json!({"Name": "FLOWLINE_TASK_ID", "Value.$": format!("States.Format('{{}}-node-{index}', $.taskId)")}),
                json!({
                    "Name": "FLOWLINE_ARTIFACT_URI",
                    "Value.$": format!("States.Format('{{}}/{{}}/{name}/{{}}-node-{index}/', $.root, $.runId, $.taskId)")
                }),
            ]),
            None => env.extend([
                json!({"Name": "FLOWLINE_TASK_ID", "Value.$": "$.taskId"}),
                json!({
                    "Name": "FLOWLINE_ARTIFACT_URI",
                    "Value.$": format!("States.Format('{{}}/{{}}/{name}/{{}}/', $.root, $.runId, $.taskId)")
                }),
            ]),
        }
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
                "Name": parameters::env_name(&parameter.name),
                "Value.$": format!("$.paramText.{}.text", parameter.name)
            }));
        }
        env
    }
}

/// Routes every Catch through states that cut the caught failure to a bounded size before the
/// step it continues with, whose `FLOWLINE_CAUGHT_ERROR` must fit Batch's 8,192 characters of
/// overrides. A failed Batch job's `Cause` is its whole description (tens of kilobytes with its
/// environment), and ASL cannot cut a string; so the handler gets the `Error`, and for a failed
/// job its `StatusReason` as `Cause` and its `JobId` (to find its logs). Other causes (a refused
/// submission, a timeout) are not passed: only their `Error`. The full cause stays in the
/// execution history and the Run's status.
fn add_caught_states(states: &mut Map<String, Value>) {
    let catching: Vec<(String, String)> = states
        .iter()
        .filter_map(|(name, state)| {
            let target = state["Catch"][0]["Next"].as_str()?;
            (!target.starts_with(&format!("{name}.caught")))
                .then(|| (name.clone(), target.to_owned()))
        })
        .collect();
    for (name, target) in catching {
        let caught = format!("{name}.caught");
        let job = format!("{name}.caught.job");
        let merged = format!("{name}.caught.merged");
        let summary = format!("{name}.caught.summary");
        let other = format!("{name}.caught.other");
        if let Some(state) = states.get_mut(&name) {
            state["Catch"][0]["Next"] = json!(caught);
        }
        states.insert(
            caught,
            json!({
                "Type": "Choice",
                "Comment": "A failed Batch job's cause is its description, as JSON",
                "Choices": [{
                    "And": [
                        {"Variable": "$.caught.Cause", "IsPresent": true},
                        {"Variable": "$.caught.Cause", "StringMatches": "{*}"}
                    ],
                    "Next": job
                }],
                "Default": other
            }),
        );
        states.insert(
            job,
            json!({
                "Type": "Pass",
                "Parameters": {
                    "Error.$": "$.caught.Error",
                    "defaults": {"JobId": "", "StatusReason": ""},
                    "job.$": "States.StringToJson($.caught.Cause)"
                },
                "ResultPath": "$.caught",
                "Next": merged
            }),
        );
        states.insert(
            merged,
            json!({
                "Type": "Pass",
                "Parameters": {
                    "Error.$": "$.caught.Error",
                    "job.$": "States.JsonMerge($.caught.defaults, $.caught.job, false)"
                },
                "ResultPath": "$.caught",
                "Next": summary
            }),
        );
        states.insert(
            summary,
            json!({
                "Type": "Pass",
                "Parameters": {
                    "Error.$": "$.caught.Error",
                    "Cause.$": "$.caught.job.StatusReason",
                    "JobId.$": "$.caught.job.JobId"
                },
                "ResultPath": "$.caught",
                "Next": target
            }),
        );
        states.insert(
            other,
            json!({
                "Type": "Pass",
                "Parameters": {"Error.$": "$.caught.Error", "Cause": "", "JobId": ""},
                "ResultPath": "$.caught",
                "Next": target
            }),
        );
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
    fn a_resumed_execution_jumps_to_its_step_on_the_main_line_and_others_start_at_the_first() {
        let flow: crate::api::Flow = serde_norway::from_str(
            "apiVersion: flowline.io/v1alpha1\nkind: Flow\nmetadata: {name: demo, namespace: ns}\nspec:\n  steps:\n  - {name: start, image: i, next: [each], foreach: {}}\n  - {name: each, image: i, next: [gather]}\n  - {name: gather, image: i, join: true, next: [end]}\n  - {name: end, image: i}\n",
        )
        .unwrap();
        let rendered = crate::compile::render(
            &flow,
            &crate::settings::Settings::default(),
            crate::compile::secrets::Lookups::Offline,
        )
        .unwrap();
        let states = &rendered.state_machine.definition["States"];
        assert_eq!(states["Flowline.Context"]["Next"], RESUME_STATE);
        assert_eq!(
            states["Flowline.Context"]["Parameters"]["resumeStep.$"],
            "$.resume.step"
        );
        assert_eq!(
            states["Flowline.Defaults"]["Result"]["resume"],
            json!({"step": ""})
        );
        let choice = &states[RESUME_STATE];
        assert_eq!(choice["Default"], "start");
        // Only steps on the main line: `each` runs inside the foreach.
        assert_eq!(
            choice["Choices"],
            json!([
                {"Variable": "$.resumeStep", "StringEquals": "gather", "Next": "gather"},
                {"Variable": "$.resumeStep", "StringEquals": "end", "Next": "end"}
            ])
        );
        crate::compile::asl_check::check(&rendered.state_machine.definition).unwrap();
    }

    #[test]
    fn format_templates_escape_special_characters() {
        assert_eq!(escape_format("a{b}'c\\"), "a\\{b\\}\\'c\\\\");
    }
}
