//! Graph validation: a Flow's steps become a nested structure of linear chains, branches and
//! foreach fan-outs — the shape a state machine can express — or a message a person can act on.
//!
//! Rules (what the API server's schema cannot check): exactly one `start` and one `end`; every
//! `next` names a step; every step is reachable from `start`; no cycles; a step with several
//! `next` (a branch) or with `foreach` is closed by one step marked `join`, which every path
//! out of it reaches; a step reached from several places is a `join`; only `end` has no `next`.

use std::collections::{BTreeMap, BTreeSet};

/// The graph-relevant part of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphStep {
    pub name: String,
    pub next: Vec<String>,
    pub join: bool,
    pub foreach: bool,
    /// A multi-node step: its nodes may be closed by a `join` step like a fan-out's tasks.
    pub parallel: bool,
    /// The step that handles this step's failure (`catch.next`), if any.
    pub catch: Option<String>,
}

/// A validated graph: the main structure, and the failure handlers outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidGraph {
    pub chain: Chain,
    /// Steps reached only through a `catch` (handler → the step whose failure it handles).
    /// Each runs in the same part of the flow as that step and continues along its `next`.
    pub handlers: BTreeMap<String, String>,
}

/// A validated graph as nested segments, in execution order.
pub type Chain = Vec<Segment>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// One step, run as one task (or one multi-node gang).
    Step(String),
    /// The branches after a split step, run in parallel; the join step follows this segment.
    Branch(Vec<Chain>),
    /// The body run once per item of a foreach step's list; the join step follows.
    Foreach(Chain),
}

/// Why a graph is invalid. Each message names the step and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("the flow has no step named `{0}`; every flow starts at `start` and finishes at `end`")]
    MissingTerminal(&'static str),
    #[error("step `{0}` appears more than once; step names must be unique")]
    DuplicateStep(String),
    #[error("step `{step}` names next step `{next}`, which does not exist")]
    UnknownNext { step: String, next: String },
    #[error("steps {0:?} cannot be reached from `start`; remove them or add them to a `next` list")]
    Unreachable(Vec<String>),
    #[error("the steps {0:?} form a cycle; a flow must be acyclic")]
    Cycle(Vec<String>),
    #[error("step `end` must not have `next` steps")]
    EndHasNext,
    #[error("step `{0}` has no `next` step; only `end` may finish the flow")]
    DeadEnd(String),
    #[error("step `{0}` is reached from several steps, so it must be marked `join: true`")]
    JoinNotMarked(String),
    #[error("step `{0}` is marked `join: true` but does not close a branch or a foreach")]
    StrayJoin(String),
    #[error("the branches of step `{split}` do not meet at one join step (they reach {joins:?})")]
    BranchesDoNotMeet { split: String, joins: Vec<String> },
    #[error("the paths out of `{0}` reach `end` without passing a join step")]
    SplitNotJoined(String),
    #[error("foreach step `{0}` must have exactly one `next` step (the body of the fan-out)")]
    ForeachNext(String),
    #[error("step `start` must not be marked `join: true`")]
    StartIsJoin,
    #[error("step `{step}` names catch step `{target}`, which does not exist")]
    UnknownCatch { step: String, target: String },
    #[error(
        "steps {steps:?} both catch with `{handler}`; a step that is only a failure handler serves one step"
    )]
    SharedHandler { handler: String, steps: Vec<String> },
    #[error(
        "failure handler `{0}` must have exactly one `next` step and no join, foreach or parallel"
    )]
    HandlerShape(String),
}

/// Validates `steps` and returns the flow's structure, starting at `start`.
pub fn validate(steps: &[GraphStep]) -> Result<ValidGraph, GraphError> {
    let mut graph = Graph::new(steps)?;
    graph.check_edges()?;
    graph.check_reachable_and_acyclic()?;
    graph.handlers = graph.handlers();
    graph.check_joins_marked()?;
    let chain = match graph.walk("start", false)? {
        (chain, None) => chain,
        (_, Some(join)) => return Err(GraphError::StrayJoin(join)),
    };
    let mut handlers = BTreeMap::new();
    for step in graph.steps.values() {
        if let Some(target) = &step.catch
            && graph.handlers.contains(target.as_str())
            && let Some(previous) = handlers.insert(target.clone(), step.name.clone())
        {
            return Err(GraphError::SharedHandler {
                handler: target.clone(),
                steps: vec![previous, step.name.clone()],
            });
        }
    }
    Ok(ValidGraph { chain, handlers })
}

struct Graph<'a> {
    steps: BTreeMap<&'a str, &'a GraphStep>,
    /// Steps reached only through `catch` edges.
    handlers: BTreeSet<&'a str>,
}

impl<'a> Graph<'a> {
    fn new(steps: &'a [GraphStep]) -> Result<Self, GraphError> {
        let mut map = BTreeMap::new();
        for step in steps {
            if map.insert(step.name.as_str(), step).is_some() {
                return Err(GraphError::DuplicateStep(step.name.clone()));
            }
        }
        for terminal in ["start", "end"] {
            if !map.contains_key(terminal) {
                return Err(GraphError::MissingTerminal(terminal));
            }
        }
        Ok(Graph {
            steps: map,
            handlers: BTreeSet::new(),
        })
    }

    fn step(&self, name: &str) -> &'a GraphStep {
        // Every name reaching here was checked by `check_edges`.
        self.steps[name]
    }

    fn check_edges(&self) -> Result<(), GraphError> {
        for step in self.steps.values() {
            for next in &step.next {
                if !self.steps.contains_key(next.as_str()) {
                    return Err(GraphError::UnknownNext {
                        step: step.name.clone(),
                        next: next.clone(),
                    });
                }
            }
            if let Some(target) = &step.catch
                && !self.steps.contains_key(target.as_str())
            {
                return Err(GraphError::UnknownCatch {
                    step: step.name.clone(),
                    target: target.clone(),
                });
            }
            if step.name == "end" && !step.next.is_empty() {
                return Err(GraphError::EndHasNext);
            }
            if step.name != "end" && step.next.is_empty() {
                return Err(GraphError::DeadEnd(step.name.clone()));
            }
            if step.foreach && step.next.len() != 1 {
                return Err(GraphError::ForeachNext(step.name.clone()));
            }
        }
        if self.step("start").join {
            return Err(GraphError::StartIsJoin);
        }
        Ok(())
    }

    /// Depth-first search from `start` with an explicit stack (no recursion limit on
    /// thousand-step flows): grey nodes on the current path reveal cycles.
    fn check_reachable_and_acyclic(&self) -> Result<(), GraphError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Grey,
            Black,
        }
        let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
        let mut path: Vec<(&str, usize)> = vec![("start", 0)];
        marks.insert("start", Mark::Grey);
        while let Some((name, child)) = path.last().copied() {
            let step = self.step(name);
            let next: Vec<&String> = step.next.iter().chain(step.catch.iter()).collect();
            if child == next.len() {
                marks.insert(name, Mark::Black);
                path.pop();
                continue;
            }
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            let target = next[child].as_str();
            match marks.get(target) {
                Some(Mark::Grey) => {
                    let from = path.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let cycle = path[from..].iter().map(|(n, _)| n.to_string()).collect();
                    return Err(GraphError::Cycle(cycle));
                }
                Some(Mark::Black) => {}
                None => {
                    marks.insert(target, Mark::Grey);
                    path.push((target, 0));
                }
            }
        }
        let unreachable: Vec<String> = self
            .steps
            .keys()
            .filter(|name| !marks.contains_key(*name))
            .map(|name| name.to_string())
            .collect();
        if unreachable.is_empty() {
            Ok(())
        } else {
            Err(GraphError::Unreachable(unreachable))
        }
    }

    /// Steps not reachable from `start` along `next` alone: reached only through `catch`.
    fn handlers(&self) -> BTreeSet<&'a str> {
        let mut reached = BTreeSet::from(["start"]);
        let mut queue = vec!["start"];
        while let Some(name) = queue.pop() {
            for next in &self.step(name).next {
                if reached.insert(next.as_str()) {
                    queue.push(next.as_str());
                }
            }
        }
        self.steps
            .keys()
            .copied()
            .filter(|name| !reached.contains(name))
            .collect()
    }

    /// A step reached from several steps must be a join; a handler's `next` does not count,
    /// as it only runs instead of the step it handles.
    fn check_joins_marked(&self) -> Result<(), GraphError> {
        for handler in &self.handlers {
            let step = self.step(handler);
            if step.next.len() != 1 || step.join || step.foreach || step.parallel {
                return Err(GraphError::HandlerShape(handler.to_string()));
            }
        }
        let mut seen = BTreeSet::new();
        for step in self
            .steps
            .values()
            .filter(|s| !self.handlers.contains(s.name.as_str()))
        {
            for next in &step.next {
                if !seen.insert(next.as_str()) && !self.step(next).join {
                    return Err(GraphError::JoinNotMarked(next.clone()));
                }
            }
        }
        Ok(())
    }

    /// Walks from `from` until the flow ends (`None`) or a join closes an enclosing split
    /// (`Some(join)`). `continuing` is true when `from` is the join that closes a split of the
    /// caller's own chain, which then continues through it. Recursion depth is the nesting
    /// depth of branches and foreaches, not the number of steps.
    fn walk(&self, from: &str, continuing: bool) -> Result<(Chain, Option<String>), GraphError> {
        let mut chain = Chain::new();
        let mut current = from;
        let mut continuing = continuing;
        loop {
            let step = self.step(current);
            if step.join && !continuing {
                return Ok((chain, Some(current.to_owned())));
            }
            continuing = false;
            chain.push(Segment::Step(current.to_owned()));
            match step.next.as_slice() {
                [] => return Ok((chain, None)),
                [only] if step.foreach => {
                    let (body, join) = self.walk(only, false)?;
                    let join = join.ok_or_else(|| GraphError::SplitNotJoined(step.name.clone()))?;
                    chain.push(Segment::Foreach(body));
                    current = self.step(&join).name.as_str();
                    continuing = true;
                }
                [only] if step.parallel && self.step(only).join => {
                    current = only;
                    continuing = true;
                }
                [only] => current = only,
                several => {
                    let mut branches = Vec::with_capacity(several.len());
                    let mut joins = BTreeSet::new();
                    for start in several {
                        let (branch, join) = self.walk(start, false)?;
                        let join =
                            join.ok_or_else(|| GraphError::SplitNotJoined(step.name.clone()))?;
                        joins.insert(join);
                        branches.push(branch);
                    }
                    if joins.len() != 1 {
                        return Err(GraphError::BranchesDoNotMeet {
                            split: step.name.clone(),
                            joins: joins.into_iter().collect(),
                        });
                    }
                    chain.push(Segment::Branch(branches));
                    let join = joins.into_iter().next().unwrap_or_default();
                    current = self.step(&join).name.as_str();
                    continuing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, next: &[&str]) -> GraphStep {
        GraphStep {
            name: name.into(),
            next: next.iter().map(|s| s.to_string()).collect(),
            join: false,
            foreach: false,
            parallel: false,
            catch: None,
        }
    }
    fn join(name: &str, next: &[&str]) -> GraphStep {
        GraphStep {
            join: true,
            ..step(name, next)
        }
    }
    fn foreach(name: &str, next: &[&str]) -> GraphStep {
        GraphStep {
            foreach: true,
            ..step(name, next)
        }
    }
    fn s(name: &str) -> Segment {
        Segment::Step(name.into())
    }
    fn chain(steps: &[GraphStep]) -> Result<Chain, GraphError> {
        validate(steps).map(|graph| graph.chain)
    }

    #[test]
    fn linear_flow() {
        let chain = chain(&[step("start", &["a"]), step("a", &["end"]), step("end", &[])]);
        assert_eq!(chain, Ok(vec![s("start"), s("a"), s("end")]));
    }

    #[test]
    fn branch_and_join() {
        let chain = chain(&[
            step("start", &["a", "b"]),
            step("a", &["j"]),
            step("b", &["b2"]),
            step("b2", &["j"]),
            join("j", &["end"]),
            step("end", &[]),
        ]);
        let expected = vec![
            s("start"),
            Segment::Branch(vec![vec![s("a")], vec![s("b"), s("b2")]]),
            s("j"),
            s("end"),
        ];
        assert_eq!(chain, Ok(expected));
    }

    #[test]
    fn parallel_step_may_be_closed_by_a_join() {
        let gang = GraphStep {
            parallel: true,
            ..step("train", &["gather"])
        };
        let chain = chain(&[
            step("start", &["train"]),
            gang,
            join("gather", &["end"]),
            step("end", &[]),
        ]);
        assert_eq!(
            chain,
            Ok(vec![s("start"), s("train"), s("gather"), s("end")])
        );
    }

    #[test]
    fn foreach_with_nested_branch() {
        let chain = chain(&[
            foreach("start", &["split"]),
            step("split", &["x", "y"]),
            step("x", &["inner"]),
            step("y", &["inner"]),
            join("inner", &["outer"]),
            join("outer", &["end"]),
            step("end", &[]),
        ]);
        let body = vec![
            s("split"),
            Segment::Branch(vec![vec![s("x")], vec![s("y")]]),
            s("inner"),
        ];
        assert_eq!(
            chain,
            Ok(vec![
                s("start"),
                Segment::Foreach(body),
                s("outer"),
                s("end")
            ])
        );
    }

    #[test]
    fn errors_name_the_step() {
        let cases: Vec<(Vec<GraphStep>, GraphError)> = vec![
            (
                vec![step("a", &["end"]), step("end", &[])],
                GraphError::MissingTerminal("start"),
            ),
            (
                vec![step("start", &["nope"]), step("end", &[])],
                GraphError::UnknownNext {
                    step: "start".into(),
                    next: "nope".into(),
                },
            ),
            (
                vec![
                    step("start", &["end"]),
                    step("orphan", &["end"]),
                    step("end", &[]),
                ],
                GraphError::Unreachable(vec!["orphan".into()]),
            ),
            (
                vec![
                    step("start", &["a", "b"]),
                    step("a", &["c"]),
                    step("b", &["c"]),
                    step("c", &["end"]),
                    step("end", &[]),
                ],
                GraphError::JoinNotMarked("c".into()),
            ),
            (
                vec![
                    step("start", &["end"]),
                    step("orphan", &["orphan2"]),
                    step("orphan2", &["end2"]),
                    step("end2", &["x"]),
                    step("x", &["end2"]),
                    step("end", &[]),
                ],
                GraphError::Unreachable(vec![
                    "end2".into(),
                    "orphan".into(),
                    "orphan2".into(),
                    "x".into(),
                ]),
            ),
            (
                vec![
                    step("start", &["a"]),
                    step("a", &["b"]),
                    step("b", &["a"]),
                    step("end", &[]),
                ],
                GraphError::Cycle(vec!["a".into(), "b".into()]),
            ),
            (
                vec![step("start", &["a"]), step("a", &[]), step("end", &[])],
                GraphError::DeadEnd("a".into()),
            ),
            (
                vec![
                    foreach("start", &["a"]),
                    step("a", &["end"]),
                    step("end", &[]),
                ],
                GraphError::SplitNotJoined("start".into()),
            ),
            (
                vec![
                    step("start", &["a", "b"]),
                    step("a", &["j1"]),
                    step("b", &["j2"]),
                    join("j1", &["end"]),
                    join("j2", &["end"]),
                    join("end", &[]),
                ],
                GraphError::BranchesDoNotMeet {
                    split: "start".into(),
                    joins: vec!["j1".into(), "j2".into()],
                },
            ),
            (
                vec![step("start", &["j"]), join("j", &["end"]), step("end", &[])],
                GraphError::StrayJoin("j".into()),
            ),
            (
                vec![
                    foreach("start", &["a", "b"]),
                    step("a", &["end"]),
                    step("b", &["end"]),
                    step("end", &[]),
                ],
                GraphError::ForeachNext("start".into()),
            ),
            (
                vec![step("start", &["end"]), step("end", &["start"])],
                GraphError::EndHasNext,
            ),
        ];
        for (steps, expected) in cases {
            assert_eq!(chain(&steps), Err(expected.clone()), "{expected}");
        }
    }

    #[test]
    fn catch_handlers_sit_outside_the_main_chain() {
        let flaky = GraphStep {
            catch: Some("notify".into()),
            ..step("flaky", &["end"])
        };
        let graph = validate(&[
            step("start", &["flaky"]),
            flaky,
            step("notify", &["end"]),
            step("end", &[]),
        ])
        .expect("valid");
        assert_eq!(graph.chain, vec![s("start"), s("flaky"), s("end")]);
        assert_eq!(
            graph.handlers,
            BTreeMap::from([("notify".to_string(), "flaky".to_string())])
        );
    }

    #[test]
    fn thousand_step_chain_validates_without_deep_recursion() {
        let mut steps = vec![step("start", &["s0"])];
        for i in 0..1000 {
            let next = if i == 999 {
                "end".to_string()
            } else {
                format!("s{}", i + 1)
            };
            steps.push(step(&format!("s{i}"), &[&next]));
        }
        steps.push(step("end", &[]));
        assert_eq!(chain(&steps).map(|c| c.len()), Ok(1002));
    }
}
