//! The Schedule pipeline's pure parts: what the rule, its target and (for S3 triggers) the
//! trigger state machine should be ([`desired`]), the writes that get AWS there ([`plan`]),
//! and the Schedule's status ([`status`]). The I/O is in [`crate::controller::schedule`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::Value;

use crate::api::{Flow, Schedule, ScheduleStatus, ScheduledRun};
use crate::aws::events::{DeliveryRetry, ObservedRule, Rule, RuleTarget};
use crate::aws::sfn::ObservedMachine;
use crate::aws::sqs::ObservedQueue;
use crate::compile::cron::{CronError, Timing};
use crate::compile::{
    self, StateMachine, TAG_KIND, TAG_NAME, TAG_NAMESPACE, TAG_UID, naming, trigger,
};
use crate::settings::Settings;

use super::conditions::{Health, set_health};
use super::run::check_parameters;

/// The id of the one target Flowline puts on a Schedule's rule.
pub const TARGET_ID: &str = "flowline";

/// Most Runs listed in a Schedule's status.
pub const MAX_LAST_RUNS: usize = 10;

/// Fire times shown in a Schedule's status.
pub const NEXT_FIRE_TIMES: usize = 3;

/// How EventBridge retries delivering a Schedule's event to its trigger state machine before
/// dead-lettering it: a firing delivered more than an hour late would overlap the next one of
/// an hourly Schedule, so an hour (and at most 24 attempts) rather than EventBridge's 24 hours.
pub const DELIVERY_RETRY: DeliveryRetry = DeliveryRetry {
    max_attempts: 24,
    max_event_age_seconds: 3_600,
};

/// How long a dead-lettered event stays in the queue: SQS's maximum, 14 days, so a person has
/// time to look.
pub const DEAD_LETTER_RETENTION_SECONDS: u32 = 1_209_600;

/// What AWS should hold for a Schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub rule: Rule,
    pub target: RuleTarget,
    pub tags: BTreeMap<String, String>,
    /// The trigger state machine: it starts one execution of the Flow per event.
    pub dispatcher: Option<StateMachine>,
    /// The SQS queue that receives the events the rule could not deliver.
    pub dead_letter_queue: Option<DeadLetterQueue>,
    /// When a cron or rate Schedule fires.
    pub timing: Option<Timing>,
}

/// A Schedule's dead-letter queue: named like its rule, tagged like it, and open to
/// EventBridge's SendMessage from that rule only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    pub name: String,
    pub arn: String,
    /// `Policy` and `MessageRetentionPeriod`.
    pub attributes: BTreeMap<String, String>,
}

/// A Schedule that cannot become a rule until a person changes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Expression(#[from] CronError),
    #[error("{0}")]
    Parameters(String),
}

impl Invalid {
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Expression(_) => "InvalidSchedule",
            Invalid::Parameters(_) => "InvalidParameters",
        }
    }
}

/// The rule, target and trigger state machine for `schedule`, which starts `flow` (whose
/// state machine is `flow_machine_arn`).
pub fn desired(
    schedule: &Schedule,
    flow: &Flow,
    flow_machine_arn: &str,
    settings: &Settings,
) -> Result<Desired, Invalid> {
    let parameters = check_parameters(&flow.spec.parameters, &schedule.spec.parameters)
        .map_err(Invalid::Parameters)?;
    let bounds = compile::parameters::Bounds {
        s3_trigger: schedule.spec.event.is_some(),
    };
    compile::check_parameter_overrides(flow, settings, &parameters, bounds)
        .map_err(Invalid::Parameters)?;
    let namespace = schedule.namespace().unwrap_or_default();
    let name = schedule.name_any();
    let uid = schedule.uid().unwrap_or_default();
    let rule_name = naming::rule_name(&settings.name_prefix, &namespace, &name, &uid);
    let tags = BTreeMap::from([
        (TAG_NAMESPACE.to_owned(), namespace.clone()),
        (TAG_NAME.to_owned(), name.clone()),
        (TAG_UID.to_owned(), uid),
        (TAG_KIND.to_owned(), "Schedule".to_owned()),
    ]);
    let description = format!(
        "Flowline Schedule {namespace}/{name}: starts Flow {}",
        flow.name_any()
    );
    let enabled = !schedule.spec.suspend;
    // Both kinds go through the trigger state machine, which names each execution after its
    // event: EventBridge delivers at least once, and a redelivered firing must start nothing.
    let (firing, schedule_expression, event_pattern, input_paths, input_template, timing) =
        match &schedule.spec.event {
            Some(event) => (
                trigger::Firing::S3,
                None,
                Some(trigger::s3_event_pattern(&event.s3).to_string()),
                trigger::s3_input_paths(),
                trigger::S3_INPUT_TEMPLATE,
                None,
            ),
            None => {
                let timing =
                    Timing::parse(schedule.spec.cron.as_deref(), schedule.spec.rate.as_deref())?;
                (
                    trigger::Firing::Scheduled,
                    Some(timing.expression()),
                    None,
                    trigger::scheduled_input_paths(),
                    trigger::SCHEDULED_INPUT_TEMPLATE,
                    Some(timing),
                )
            }
        };
    let dispatcher = StateMachine {
        name: rule_name.clone(),
        role_arn: settings.states_role.clone(),
        kind: "STANDARD".to_owned(),
        definition: trigger::dispatcher_definition(flow_machine_arn, &name, &parameters, firing),
        tags: tags.clone(),
    };
    let dispatcher_arn = sibling_arn(flow_machine_arn, &dispatcher.name);
    let dead_letter_queue = dead_letter_queue(flow_machine_arn, &rule_name);
    Ok(Desired {
        rule: Rule {
            name: rule_name,
            schedule_expression,
            event_pattern,
            enabled,
            description,
        },
        target: RuleTarget {
            id: TARGET_ID.to_owned(),
            arn: dispatcher_arn,
            role_arn: settings.events_role.clone(),
            input: None,
            input_paths,
            input_template: Some(input_template.to_owned()),
            dead_letter_arn: Some(dead_letter_queue.arn.clone()),
            retry: Some(DELIVERY_RETRY),
        },
        tags,
        dispatcher: Some(dispatcher),
        dead_letter_queue: Some(dead_letter_queue),
        timing,
    })
}

/// The ARN of state machine `name` in the same account and region as `machine_arn`.
fn sibling_arn(machine_arn: &str, name: &str) -> String {
    match machine_arn.rsplit_once(':') {
        Some((base, _)) => format!("{base}:{name}"),
        None => name.to_owned(),
    }
}

/// The dead-letter queue of rule `rule_name`, in the account and region of the Flow's state
/// machine (`arn:<partition>:states:<region>:<account>:stateMachine:<name>`).
fn dead_letter_queue(machine_arn: &str, rule_name: &str) -> DeadLetterQueue {
    let parts: Vec<&str> = machine_arn.split(':').collect();
    let field = |i: usize| parts.get(i).copied().unwrap_or_default();
    let (partition, region, account) = (field(1), field(3), field(4));
    let arn = format!("arn:{partition}:sqs:{region}:{account}:{rule_name}");
    let rule_arn = format!("arn:{partition}:events:{region}:{account}:rule/{rule_name}");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DeadLettersOfItsRule",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}
        }]
    });
    DeadLetterQueue {
        name: rule_name.to_owned(),
        arn,
        attributes: BTreeMap::from([
            ("Policy".to_owned(), policy.to_string()),
            (
                "MessageRetentionPeriod".to_owned(),
                DEAD_LETTER_RETENTION_SECONDS.to_string(),
            ),
        ]),
    }
}

/// What exists in AWS for a Schedule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub rule: Option<ObservedRule>,
    /// The rule's `flowline.io/uid` tag, when it was read (a rule not yet known to be ours).
    pub rule_owner: Option<Option<String>>,
    pub targets: Vec<RuleTarget>,
    pub dispatcher: Option<ObservedMachine>,
    /// The trigger state machine's `flowline.io/uid` tag, when it was read.
    pub dispatcher_owner: Option<Option<String>>,
    pub dead_letter_queue: Option<ObservedQueue>,
    /// The dead-letter queue's `flowline.io/uid` tag, when it was read.
    pub dead_letter_queue_owner: Option<Option<String>>,
}

/// One write to AWS; each is idempotent.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    CreateDispatcher(StateMachine),
    UpdateDispatcher {
        arn: String,
        machine: StateMachine,
    },
    CreateDeadLetterQueue(DeadLetterQueue),
    SetDeadLetterQueueAttributes {
        url: String,
        attributes: BTreeMap<String, String>,
    },
    PutRule(Rule),
    PutTarget(RuleTarget),
    RemoveTargets(Vec<String>),
}

/// Why a plan cannot be made: a person has to act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{what} {name} exists but belongs to another owner (flowline.io/uid {owner:?}); Flowline never changes what it does not own: delete it or rename the Schedule"
    )]
    Foreign {
        what: &'static str,
        name: String,
        owner: Option<String>,
    },
}

/// The writes that make AWS match `desired`, in order: the trigger state machine, the rule,
/// its target, then the removal of targets Flowline did not put there. Empty when AWS
/// matches, so an unchanged Schedule costs reads only.
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    own_uid: &str,
) -> Result<Vec<Change>, PlanError> {
    for (what, name, owner) in [
        ("EventBridge rule", &desired.rule.name, &observed.rule_owner),
        (
            "state machine",
            &desired.rule.name,
            &observed.dispatcher_owner,
        ),
        (
            "SQS queue",
            &desired.rule.name,
            &observed.dead_letter_queue_owner,
        ),
    ] {
        if let Some(owner) = owner
            && owner.as_deref() != Some(own_uid)
        {
            return Err(PlanError::Foreign {
                what,
                name: name.clone(),
                owner: owner.clone(),
            });
        }
    }
    let mut changes = Vec::new();
    if let Some(machine) = &desired.dispatcher {
        match &observed.dispatcher {
            None => changes.push(Change::CreateDispatcher(machine.clone())),
            Some(existing)
                if existing.definition != machine.definition
                    || existing.role_arn != machine.role_arn =>
            {
                changes.push(Change::UpdateDispatcher {
                    arn: existing.arn.clone(),
                    machine: machine.clone(),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(queue) = &desired.dead_letter_queue {
        match &observed.dead_letter_queue {
            None => changes.push(Change::CreateDeadLetterQueue(queue.clone())),
            Some(existing) if !same_attributes(&existing.attributes, &queue.attributes) => {
                changes.push(Change::SetDeadLetterQueueAttributes {
                    url: existing.url.clone(),
                    attributes: queue.attributes.clone(),
                });
            }
            Some(_) => {}
        }
    }
    if !observed
        .rule
        .as_ref()
        .is_some_and(|existing| same_rule(&existing.rule, &desired.rule))
    {
        changes.push(Change::PutRule(desired.rule.clone()));
    }
    if !observed
        .targets
        .iter()
        .any(|target| same_target(target, &desired.target))
    {
        changes.push(Change::PutTarget(desired.target.clone()));
    }
    let strangers: Vec<String> = observed
        .targets
        .iter()
        .filter(|target| target.id != desired.target.id)
        .map(|target| target.id.clone())
        .collect();
    if !strangers.is_empty() {
        changes.push(Change::RemoveTargets(strangers));
    }
    Ok(changes)
}

/// Rules compare event patterns as JSON: EventBridge may return them reformatted.
fn same_rule(observed: &Rule, desired: &Rule) -> bool {
    observed.schedule_expression == desired.schedule_expression
        && same_json(&observed.event_pattern, &desired.event_pattern)
        && observed.enabled == desired.enabled
        && observed.description == desired.description
}

fn same_target(observed: &RuleTarget, desired: &RuleTarget) -> bool {
    observed.id == desired.id
        && observed.arn == desired.arn
        && observed.role_arn == desired.role_arn
        && same_json(&observed.input, &desired.input)
        && observed.input_paths == desired.input_paths
        && observed.input_template == desired.input_template
        && observed.dead_letter_arn == desired.dead_letter_arn
        && observed.retry == desired.retry
}

/// Queue attributes as Flowline sets them; the policy compared as JSON (SQS may reformat it).
fn same_attributes(
    observed: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> bool {
    desired
        .iter()
        .all(|(name, value)| same_json(&observed.get(name).cloned(), &Some(value.clone())))
}

fn same_json(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok() || a == b
        }
        (None, None) => true,
        _ => false,
    }
}

/// How one reconcile ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ready {
        rule_arn: String,
        changed: bool,
    },
    /// Waiting for something that resolves by itself (the Flow becoming Ready).
    Waiting {
        reason: String,
        message: String,
    },
    Stalled {
        reason: String,
        message: String,
    },
    Retrying {
        message: String,
    },
}

/// The Schedule's status. Fire times and last runs are passed in (they come from the clock
/// and from the Run objects); an unchanged outcome produces an equal status and no write.
pub fn status(
    previous: Option<&ScheduleStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    next_fire_times: Vec<Time>,
    last_runs: Vec<ScheduledRun>,
    now: Time,
) -> ScheduleStatus {
    let mut next = previous.cloned().unwrap_or_default();
    next.observed_generation = generation;
    next.last_run_time = last_runs.first().and_then(|run| run.start_time.clone());
    next.last_runs = last_runs;
    let (health_reason, message);
    let health = match outcome {
        Outcome::Ready { rule_arn, changed } => {
            next.rule_arn = Some(rule_arn.clone());
            next.next_fire_times = next_fire_times;
            let keep = previous
                .and_then(|s| {
                    crate::api::find_condition(&s.conditions, crate::api::condition::READY)
                })
                .filter(|c| c.status == "True")
                .map(|c| c.reason.clone());
            health_reason =
                keep.unwrap_or_else(|| if *changed { "Applied" } else { "UpToDate" }.to_owned());
            Health::Ready {
                reason: &health_reason,
                message: "the EventBridge rule and its target match the Schedule",
            }
        }
        Outcome::Waiting {
            reason,
            message: text,
        } => {
            next.next_fire_times = Vec::new();
            Health::Reconciling {
                reason,
                message: text,
            }
        }
        Outcome::Stalled {
            reason,
            message: text,
        } => {
            next.next_fire_times = Vec::new();
            Health::Stalled {
                reason,
                message: text,
            }
        }
        Outcome::Retrying { message: text } => {
            message = text.clone();
            Health::Reconciling {
                reason: "Retrying",
                message: &message,
            }
        }
    };
    set_health(&mut next.conditions, health, generation, &now);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EventTrigger, FlowSpec, S3Trigger, ScheduleSpec};

    const MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:flowline-ns-train";

    fn flow() -> Flow {
        let mut flow: Flow = Flow::new(
            "train",
            serde_json::from_value::<FlowSpec>(serde_json::json!({
                "steps": [{"name": "start", "image": "busybox"}],
                "parameters": [{"name": "alpha", "type": "Float", "default": "0.1"}]
            }))
            .unwrap(),
        );
        flow.metadata.namespace = Some("ns".into());
        flow
    }

    fn schedule(spec: serde_json::Value) -> Schedule {
        let mut schedule = Schedule::new(
            "nightly",
            serde_json::from_value::<ScheduleSpec>(spec).unwrap(),
        );
        schedule.metadata.namespace = Some("ns".into());
        schedule.metadata.uid = Some("3f1c2b9e-8d7a-4c55-9e1f-0a2b3c4d5e6f".into());
        schedule
    }

    fn settings() -> Settings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        Cli::parse_from(["x"]).settings
    }

    fn observed_as(desired: &Desired) -> Observed {
        Observed {
            rule: Some(ObservedRule {
                arn: "arn:rule".into(),
                rule: desired.rule.clone(),
            }),
            rule_owner: None,
            targets: vec![desired.target.clone()],
            dispatcher: desired.dispatcher.as_ref().map(|m| ObservedMachine {
                arn: "arn:m".into(),
                definition: m.definition.clone(),
                role_arn: m.role_arn.clone(),
                revision_id: None,
            }),
            dispatcher_owner: None,
            dead_letter_queue: desired.dead_letter_queue.as_ref().map(|q| ObservedQueue {
                url: format!("http://sqs/{}", q.name),
                attributes: q.attributes.clone(),
            }),
            dead_letter_queue_owner: None,
        }
    }

    #[test]
    fn cron_schedule_starts_one_named_execution_per_firing_through_its_trigger_machine() {
        let desired = desired(
            &schedule(serde_json::json!({"flowRef": {"name": "train"}, "cron": "0 3 * * 1", "parameters": {"alpha": "0.5"}})),
            &flow(),
            MACHINE,
            &settings(),
        )
        .unwrap();
        assert_eq!(
            desired.rule.schedule_expression.as_deref(),
            Some("cron(0 3 ? * 2 *)")
        );
        assert!(desired.rule.enabled);
        assert!(desired.rule.name.len() <= 64);
        let dispatcher = desired.dispatcher.as_ref().unwrap();
        assert!(
            desired
                .target
                .arn
                .ends_with(&format!(":stateMachine:{}", dispatcher.name))
        );
        assert_eq!(
            desired.target.input_template.as_deref(),
            Some(trigger::SCHEDULED_INPUT_TEMPLATE)
        );
        assert_eq!(desired.target.input_paths["eventId"], "$.id");
        let input = &dispatcher.definition["States"]["StartFlow"]["Parameters"]["Input"];
        // Typed: the Flow declares alpha a Float.
        assert_eq!(input["parameters"]["alpha"], serde_json::json!(0.5));
        assert_eq!(input["flowline"]["schedule"], "nightly");
    }

    #[test]
    fn undeliverable_events_go_to_a_dead_letter_queue_only_their_rule_may_write() {
        for spec in [
            serde_json::json!({"flowRef": {"name": "train"}, "rate": "1 hour"}),
            serde_json::json!({"flowRef": {"name": "train"}, "event": {"s3": {"bucket": "b"}}}),
        ] {
            let desired = desired(&schedule(spec), &flow(), MACHINE, &settings()).unwrap();
            let queue = desired.dead_letter_queue.as_ref().unwrap();
            assert_eq!(queue.name, desired.rule.name);
            assert_eq!(
                queue.arn,
                format!("arn:aws:sqs:us-east-1:123456789012:{}", queue.name)
            );
            assert_eq!(
                desired.target.dead_letter_arn.as_deref(),
                Some(queue.arn.as_str())
            );
            assert_eq!(desired.target.retry, Some(DELIVERY_RETRY));
            let policy: Value = serde_json::from_str(&queue.attributes["Policy"]).unwrap();
            assert_eq!(
                policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
                format!(
                    "arn:aws:events:us-east-1:123456789012:rule/{}",
                    desired.rule.name
                )
            );
            assert_eq!(
                policy["Statement"][0]["Principal"]["Service"],
                "events.amazonaws.com"
            );
        }
    }

    #[test]
    fn a_dead_letter_queue_missing_or_changed_is_repaired() {
        let s = schedule(serde_json::json!({"flowRef": {"name": "train"}, "rate": "1 hour"}));
        let desired = desired(&s, &flow(), MACHINE, &settings()).unwrap();
        let uid = s.uid().unwrap();
        let queue = desired.dead_letter_queue.clone().unwrap();
        let mut missing = observed_as(&desired);
        missing.dead_letter_queue = None;
        assert_eq!(
            plan(&desired, &missing, &uid).unwrap(),
            vec![Change::CreateDeadLetterQueue(queue.clone())]
        );
        let mut opened = observed_as(&desired);
        if let Some(q) = opened.dead_letter_queue.as_mut() {
            q.attributes.insert("Policy".into(), "{}".into());
        }
        assert!(matches!(
            plan(&desired, &opened, &uid).unwrap().as_slice(),
            [Change::SetDeadLetterQueueAttributes { .. }]
        ));
        let mut foreign = observed_as(&desired);
        foreign.dead_letter_queue_owner = Some(Some("other".into()));
        assert!(matches!(
            plan(&desired, &foreign, &uid),
            Err(PlanError::Foreign { .. })
        ));
    }

    #[test]
    fn s3_schedule_targets_its_trigger_state_machine() {
        let mut s = schedule(
            serde_json::json!({"flowRef": {"name": "train"}, "event": {"s3": {"bucket": "landing", "prefix": "in/"}}}),
        );
        s.spec.suspend = true;
        let desired = desired(&s, &flow(), MACHINE, &settings()).unwrap();
        let dispatcher = desired.dispatcher.as_ref().unwrap();
        assert!(
            desired
                .target
                .arn
                .ends_with(&format!(":stateMachine:{}", dispatcher.name))
        );
        assert_eq!(
            desired.target.input_template.as_deref(),
            Some(trigger::S3_INPUT_TEMPLATE)
        );
        assert!(!desired.rule.enabled);
        assert!(desired.rule.schedule_expression.is_none());
        assert_eq!(
            s.spec.event,
            Some(EventTrigger {
                s3: S3Trigger {
                    bucket: "landing".into(),
                    prefix: Some("in/".into()),
                    suffix: None
                }
            })
        );
    }

    #[test]
    fn bad_expressions_and_parameters_are_invalid() {
        let both_days = desired(
            &schedule(serde_json::json!({"flowRef": {"name": "train"}, "cron": "0 0 1 * 1"})),
            &flow(),
            MACHINE,
            &settings(),
        );
        assert_eq!(both_days.unwrap_err().reason(), "InvalidSchedule");
        let bad_parameter = desired(
            &schedule(
                serde_json::json!({"flowRef": {"name": "train"}, "rate": "1 hour", "parameters": {"alpha": "x"}}),
            ),
            &flow(),
            MACHINE,
            &settings(),
        );
        assert_eq!(bad_parameter.unwrap_err().reason(), "InvalidParameters");
    }

    #[test]
    fn converged_schedule_plans_nothing_and_drift_is_repaired() {
        let s = schedule(
            serde_json::json!({"flowRef": {"name": "train"}, "event": {"s3": {"bucket": "landing"}}}),
        );
        let desired = desired(&s, &flow(), MACHINE, &settings()).unwrap();
        let uid = s.uid().unwrap();
        assert_eq!(
            plan(&desired, &observed_as(&desired), &uid).unwrap(),
            vec![]
        );
        assert_eq!(plan(&desired, &Observed::default(), &uid).unwrap().len(), 4);

        let mut disabled = observed_as(&desired);
        if let Some(rule) = disabled.rule.as_mut() {
            rule.rule.enabled = false;
        }
        disabled.targets.push(RuleTarget {
            id: "someone-else".into(),
            ..desired.target.clone()
        });
        assert_eq!(
            plan(&desired, &disabled, &uid).unwrap(),
            vec![
                Change::PutRule(desired.rule.clone()),
                Change::RemoveTargets(vec!["someone-else".into()])
            ]
        );
    }

    #[test]
    fn a_rule_of_another_owner_is_never_touched() {
        let s = schedule(serde_json::json!({"flowRef": {"name": "train"}, "rate": "5 minutes"}));
        let desired = desired(&s, &flow(), MACHINE, &settings()).unwrap();
        let mut foreign = observed_as(&desired);
        foreign.rule_owner = Some(Some("other".into()));
        assert!(matches!(
            plan(&desired, &foreign, &s.uid().unwrap()),
            Err(PlanError::Foreign { .. })
        ));
    }

    #[test]
    fn suspended_or_stalled_schedules_show_no_fire_times() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let ready = status(
            None,
            Some(1),
            &Outcome::Ready {
                rule_arn: "arn:rule".into(),
                changed: true,
            },
            vec![now.clone()],
            vec![],
            now.clone(),
        );
        assert_eq!(ready.next_fire_times.len(), 1);
        let again = status(
            Some(&ready),
            Some(1),
            &Outcome::Ready {
                rule_arn: "arn:rule".into(),
                changed: false,
            },
            vec![now.clone()],
            vec![],
            now.clone(),
        );
        assert_eq!(again, ready);
        let stalled = status(
            Some(&ready),
            Some(2),
            &Outcome::Stalled {
                reason: "InvalidSchedule".into(),
                message: "bad".into(),
            },
            vec![],
            vec![],
            now,
        );
        assert!(stalled.next_fire_times.is_empty());
        assert!(crate::api::is_condition_true(
            &stalled.conditions,
            "Stalled"
        ));
    }
}
