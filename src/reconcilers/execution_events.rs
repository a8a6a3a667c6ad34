//! The execution events path the controller sets up and owns (`--execution-events managed`):
//! an SQS queue and an EventBridge rule, both named `<name prefix>execution-events`, that
//! bring Step Functions' "Execution Status Change" events of Flowline's state machines to the
//! controller. One pair per installation (account, region and prefix), not per object, so
//! their tags say `flowline.io/kind: ExecutionEvents` and carry no namespace or UID.
//!
//! Pure: [`desired`] from the settings, [`plan`] against what was read, [`removal`] for the
//! uninstall. The I/O is in `controller::execution_events_setup`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::aws::events::{ObservedRule, Rule, RuleTarget};
use crate::aws::sqs::ObservedQueue;
use crate::compile::naming::RULE_NAME_MAX;
use crate::compile::{TAG_KIND, TAG_NAME};
use crate::settings::Settings;

/// The `flowline.io/kind` tag of the rule and the queue.
pub const KIND: &str = "ExecutionEvents";
/// Suffix of both names, after the name prefix.
pub const NAME_SUFFIX: &str = "execution-events";
/// How long an event waits in the queue: a day. An event is only a hint (polling is the
/// fallback), and one nobody read for a day wakes nothing useful.
pub const RETENTION_SECONDS: u32 = 86_400;
/// How long a received message stays hidden before it comes back: 10 s, not SQS's 30. Waking
/// a Run twice is harmless, while a message handed to a receive whose controller then died
/// (a long poll outlives its client by up to 10 s) waits this long before another controller
/// sees it.
pub const VISIBILITY_TIMEOUT_SECONDS: u32 = 10;
/// The id of the rule's one target.
pub const TARGET_ID: &str = "queue";
/// The detail type Step Functions gives the events.
pub const DETAIL_TYPE: &str = "Step Functions Execution Status Change";
/// SQS queue names: 1–80 characters.
const QUEUE_NAME_MAX: usize = 80;

/// What AWS should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The name of the rule and of the queue.
    pub name: String,
    pub queue_arn: String,
    pub rule_arn: String,
    /// `Policy`, `MessageRetentionPeriod` and `VisibilityTimeout`.
    pub queue_attributes: BTreeMap<String, String>,
    pub rule: Rule,
    pub target: RuleTarget,
    pub tags: BTreeMap<String, String>,
}

/// Settings that cannot name the rule and the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(
        "the name prefix {prefix:?} makes the rule name {name:?} longer than EventBridge's {RULE_NAME_MAX} characters"
    )]
    NameTooLong { prefix: String, name: String },
}

/// The rule and queue for these settings: the rule matches status changes of state machines
/// named with the prefix in this account and region, and only it may send to the queue.
pub fn desired(settings: &Settings) -> Result<Desired, Invalid> {
    let name = format!("{}{NAME_SUFFIX}", settings.name_prefix);
    if name.len() > RULE_NAME_MAX.min(QUEUE_NAME_MAX) {
        return Err(Invalid::NameTooLong {
            prefix: settings.name_prefix.clone(),
            name,
        });
    }
    let partition = crate::iam::partition(&settings.region);
    let (region, account) = (settings.region.as_str(), settings.account());
    let queue_arn = format!("arn:{partition}:sqs:{region}:{account}:{name}");
    let rule_arn = format!("arn:{partition}:events:{region}:{account}:rule/{name}");
    let machines = format!(
        "arn:{partition}:states:{region}:{account}:stateMachine:{}",
        settings.name_prefix
    );
    let pattern = json!({
        "source": ["aws.states"],
        "detail-type": [DETAIL_TYPE],
        "detail": {"stateMachineArn": [{"prefix": machines}]}
    });
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ExecutionEventsOfItsRule",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}
        }]
    });
    Ok(Desired {
        rule: Rule {
            name: name.clone(),
            schedule_expression: None,
            event_pattern: Some(pattern.to_string()),
            enabled: true,
            description: format!(
                "Step Functions execution status changes of {}* state machines, for the Flowline controller",
                settings.name_prefix
            ),
        },
        target: RuleTarget {
            id: TARGET_ID.to_owned(),
            arn: queue_arn.clone(),
            ..RuleTarget::default()
        },
        queue_attributes: BTreeMap::from([
            ("Policy".to_owned(), policy.to_string()),
            (
                "MessageRetentionPeriod".to_owned(),
                RETENTION_SECONDS.to_string(),
            ),
            (
                "VisibilityTimeout".to_owned(),
                VISIBILITY_TIMEOUT_SECONDS.to_string(),
            ),
        ]),
        tags: BTreeMap::from([
            (TAG_KIND.to_owned(), KIND.to_owned()),
            (TAG_NAME.to_owned(), name.clone()),
        ]),
        queue_arn,
        rule_arn,
        name,
    })
}

/// What exists in AWS: each resource with its tags (read only when it exists).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub queue: Option<ObservedQueue>,
    pub queue_tags: BTreeMap<String, String>,
    pub rule: Option<ObservedRule>,
    pub rule_tags: BTreeMap<String, String>,
    pub targets: Vec<RuleTarget>,
}

/// One write to AWS; each is idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// CreateQueue with the attributes and tags.
    CreateQueue,
    /// SetQueueAttributes with only the attributes that differ.
    SetQueueAttributes {
        url: String,
        attributes: BTreeMap<String, String>,
    },
    /// PutRule (an upsert).
    PutRule,
    /// PutTargets with the queue as the one target.
    PutTarget,
    /// RemoveTargets of targets Flowline did not put there.
    RemoveTargets(Vec<String>),
}

/// A resource with the name exists but is not Flowline's: it is never changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {name} exists but is not tagged {TAG_KIND}={KIND}, so Flowline leaves it alone: delete it, tag it, or name your own queue with --execution-events-queue-url"
)]
pub struct Foreign {
    pub what: &'static str,
    pub name: String,
}

/// Whether tags mark a resource as the installation's execution events resource `name`.
pub fn owned(tags: &BTreeMap<String, String>, name: &str) -> bool {
    tags.get(TAG_KIND).map(String::as_str) == Some(KIND)
        && tags.get(TAG_NAME).map(String::as_str) == Some(name)
}

/// The writes that make AWS match `desired`, in order: the queue (its policy already names
/// the rule's ARN, which follows from the name), the rule, its target, then the removal of
/// targets Flowline did not put there. Empty when AWS matches, so a check of an unchanged
/// setup costs reads only.
pub fn plan(desired: &Desired, observed: &Observed) -> Result<Vec<Change>, Foreign> {
    if observed.queue.is_some() && !owned(&observed.queue_tags, &desired.name) {
        return Err(Foreign {
            what: "SQS queue",
            name: desired.name.clone(),
        });
    }
    if observed.rule.is_some() && !owned(&observed.rule_tags, &desired.name) {
        return Err(Foreign {
            what: "EventBridge rule",
            name: desired.name.clone(),
        });
    }
    let mut changes = Vec::new();
    match &observed.queue {
        None => changes.push(Change::CreateQueue),
        Some(queue) => {
            let differing: BTreeMap<String, String> = desired
                .queue_attributes
                .iter()
                .filter(|(name, value)| !same_json(queue.attributes.get(*name), value))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            if !differing.is_empty() {
                changes.push(Change::SetQueueAttributes {
                    url: queue.url.clone(),
                    attributes: differing,
                });
            }
        }
    }
    if !observed
        .rule
        .as_ref()
        .is_some_and(|existing| same_rule(&existing.rule, &desired.rule))
    {
        changes.push(Change::PutRule);
    }
    if !observed
        .targets
        .iter()
        .any(|target| same_target(target, &desired.target))
    {
        changes.push(Change::PutTarget);
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

/// What the uninstall deletes, in order: the rule's targets, the rule, then the queue. Only
/// what is tagged as the installation's; `kept` names what is left because it is not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    pub remove_targets: Vec<String>,
    pub delete_rule: bool,
    /// The URL of the queue to delete.
    pub delete_queue: Option<String>,
    pub kept: Vec<Foreign>,
}

impl Removal {
    /// Nothing to delete.
    pub fn is_empty(&self) -> bool {
        self.remove_targets.is_empty() && !self.delete_rule && self.delete_queue.is_none()
    }
}

pub fn removal(desired: &Desired, observed: &Observed) -> Removal {
    let mut removal = Removal::default();
    if observed.rule.is_some() {
        if owned(&observed.rule_tags, &desired.name) {
            removal.remove_targets = observed.targets.iter().map(|t| t.id.clone()).collect();
            removal.delete_rule = true;
        } else {
            removal.kept.push(Foreign {
                what: "EventBridge rule",
                name: desired.name.clone(),
            });
        }
    }
    if let Some(queue) = &observed.queue {
        if owned(&observed.queue_tags, &desired.name) {
            removal.delete_queue = Some(queue.url.clone());
        } else {
            removal.kept.push(Foreign {
                what: "SQS queue",
                name: desired.name.clone(),
            });
        }
    }
    removal
}

/// Rules compare event patterns as JSON: EventBridge may return them reformatted.
fn same_rule(observed: &Rule, desired: &Rule) -> bool {
    observed.schedule_expression == desired.schedule_expression
        && match (&observed.event_pattern, &desired.event_pattern) {
            (Some(a), Some(b)) => same_json(Some(a), b),
            (a, b) => a == b,
        }
        && observed.enabled == desired.enabled
        && observed.description == desired.description
}

/// The fields Flowline sets on the target; what AWS may add (a default retry policy) is not
/// compared.
fn same_target(observed: &RuleTarget, desired: &RuleTarget) -> bool {
    observed.id == desired.id
        && observed.arn == desired.arn
        && observed.role_arn.is_empty()
        && observed.input.is_none()
        && observed.input_template.is_none()
        && observed.dead_letter_arn.is_none()
}

/// Equal as JSON (AWS may reformat a policy or a pattern), or as text.
fn same_json(observed: Option<&String>, desired: &str) -> bool {
    observed.is_some_and(|observed| {
        observed == desired
            || serde_json::from_str::<Value>(observed)
                .ok()
                .zip(serde_json::from_str::<Value>(desired).ok())
                .is_some_and(|(a, b)| a == b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            name_prefix: "fl-".into(),
            region: "eu-west-1".into(),
            account: Some("111122223333".into()),
            ..Settings::default()
        }
    }

    /// What AWS holds once the plan for `desired` was applied, as read back (the policy and
    /// the pattern reformatted, as AWS may).
    fn converged(desired: &Desired) -> Observed {
        let reformat = |text: &str| {
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(text).unwrap()).unwrap()
        };
        let mut attributes = desired.queue_attributes.clone();
        attributes.insert("Policy".into(), reformat(&attributes["Policy"]));
        let mut rule = desired.rule.clone();
        rule.event_pattern = rule.event_pattern.as_deref().map(reformat);
        Observed {
            queue: Some(ObservedQueue {
                url: format!(
                    "https://sqs.eu-west-1.amazonaws.com/111122223333/{}",
                    desired.name
                ),
                attributes,
            }),
            queue_tags: desired.tags.clone(),
            rule: Some(ObservedRule {
                arn: desired.rule_arn.clone(),
                rule,
            }),
            rule_tags: desired.tags.clone(),
            targets: vec![RuleTarget {
                retry: Some(crate::aws::events::DeliveryRetry {
                    max_attempts: 185,
                    max_event_age_seconds: 86_400,
                }),
                ..desired.target.clone()
            }],
        }
    }

    #[test]
    fn the_rule_matches_status_changes_of_prefixed_machines_and_only_it_may_send_to_the_queue() {
        let desired = desired(&settings()).unwrap();
        assert_eq!(desired.name, "fl-execution-events");
        assert_eq!(desired.rule.name, desired.name);
        assert_eq!(
            desired.queue_arn,
            "arn:aws:sqs:eu-west-1:111122223333:fl-execution-events"
        );
        assert_eq!(
            desired.rule_arn,
            "arn:aws:events:eu-west-1:111122223333:rule/fl-execution-events"
        );
        let pattern: Value =
            serde_json::from_str(desired.rule.event_pattern.as_deref().unwrap()).unwrap();
        assert_eq!(
            pattern,
            json!({
                "source": ["aws.states"],
                "detail-type": ["Step Functions Execution Status Change"],
                "detail": {"stateMachineArn": [{"prefix": "arn:aws:states:eu-west-1:111122223333:stateMachine:fl-"}]}
            })
        );
        assert!(desired.rule.enabled && desired.rule.schedule_expression.is_none());
        assert_eq!(desired.target.arn, desired.queue_arn);
        assert!(
            desired.target.role_arn.is_empty(),
            "SQS targets take no role"
        );
        let policy: Value = serde_json::from_str(&desired.queue_attributes["Policy"]).unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
        assert_eq!(statement["Action"], "sqs:SendMessage");
        assert_eq!(statement["Resource"], desired.queue_arn.as_str());
        assert_eq!(
            statement["Condition"]["ArnEquals"]["aws:SourceArn"],
            desired.rule_arn.as_str()
        );
        assert_eq!(desired.queue_attributes["MessageRetentionPeriod"], "86400");
        assert_eq!(desired.queue_attributes["VisibilityTimeout"], "10");
        assert_eq!(
            desired.tags,
            BTreeMap::from([
                ("flowline.io/kind".to_owned(), "ExecutionEvents".to_owned()),
                (
                    "flowline.io/name".to_owned(),
                    "fl-execution-events".to_owned()
                ),
            ])
        );
    }

    #[test]
    fn gov_cloud_arns_name_their_partition() {
        let mut settings = settings();
        settings.region = "us-gov-west-1".into();
        let desired = desired(&settings).unwrap();
        assert!(desired.queue_arn.starts_with("arn:aws-us-gov:sqs:"));
        assert!(
            desired
                .rule
                .event_pattern
                .unwrap()
                .contains("arn:aws-us-gov:states:")
        );
    }

    #[test]
    fn a_prefix_too_long_for_a_rule_name_is_refused() {
        let mut settings = settings();
        settings.name_prefix = "p".repeat(49);
        assert!(matches!(
            desired(&settings),
            Err(Invalid::NameTooLong { .. })
        ));
        settings.name_prefix = "p".repeat(48);
        assert_eq!(desired(&settings).unwrap().name.len(), 64);
    }

    #[test]
    fn nothing_exists_so_everything_is_created_queue_first() {
        let desired = desired(&settings()).unwrap();
        assert_eq!(
            plan(&desired, &Observed::default()).unwrap(),
            [Change::CreateQueue, Change::PutRule, Change::PutTarget]
        );
    }

    #[test]
    fn an_unchanged_setup_plans_no_write() {
        let desired = desired(&settings()).unwrap();
        assert_eq!(plan(&desired, &converged(&desired)).unwrap(), []);
    }

    #[test]
    fn a_deleted_rule_is_put_back_with_its_target_and_nothing_else() {
        let desired = desired(&settings()).unwrap();
        let mut observed = converged(&desired);
        observed.rule = None;
        observed.rule_tags.clear();
        observed.targets.clear();
        assert_eq!(
            plan(&desired, &observed).unwrap(),
            [Change::PutRule, Change::PutTarget]
        );
    }

    #[test]
    fn only_the_queue_attributes_that_differ_are_set() {
        let desired = desired(&settings()).unwrap();
        let mut observed = converged(&desired);
        let queue = observed.queue.as_mut().unwrap();
        queue.attributes.insert("Policy".into(), "{}".into());
        let url = queue.url.clone();
        assert_eq!(
            plan(&desired, &observed).unwrap(),
            [Change::SetQueueAttributes {
                url,
                attributes: BTreeMap::from([(
                    "Policy".to_owned(),
                    desired.queue_attributes["Policy"].clone()
                )]),
            }]
        );
    }

    #[test]
    fn a_changed_pattern_or_a_disabled_rule_is_put_again() {
        let desired = desired(&settings()).unwrap();
        let mut disabled = converged(&desired);
        disabled.rule.as_mut().unwrap().rule.enabled = false;
        assert_eq!(plan(&desired, &disabled).unwrap(), [Change::PutRule]);
        let mut widened = converged(&desired);
        widened.rule.as_mut().unwrap().rule.event_pattern =
            Some(r#"{"source":["aws.states"]}"#.into());
        assert_eq!(plan(&desired, &widened).unwrap(), [Change::PutRule]);
    }

    #[test]
    fn a_target_elsewhere_is_replaced_and_strangers_removed() {
        let desired = desired(&settings()).unwrap();
        let mut observed = converged(&desired);
        observed.targets = vec![
            RuleTarget {
                arn: "arn:aws:sqs:eu-west-1:111122223333:elsewhere".into(),
                ..desired.target.clone()
            },
            RuleTarget {
                id: "extra".into(),
                arn: "arn:aws:sns:eu-west-1:111122223333:topic".into(),
                ..RuleTarget::default()
            },
        ];
        assert_eq!(
            plan(&desired, &observed).unwrap(),
            [
                Change::PutTarget,
                Change::RemoveTargets(vec!["extra".into()])
            ]
        );
    }

    #[test]
    fn resources_not_tagged_as_ours_are_never_changed() {
        let desired = desired(&settings()).unwrap();
        let mut untagged_queue = converged(&desired);
        untagged_queue.queue_tags.clear();
        assert_eq!(
            plan(&desired, &untagged_queue).unwrap_err().what,
            "SQS queue"
        );
        let mut other_rule = converged(&desired);
        other_rule
            .rule_tags
            .insert(TAG_NAME.into(), "fl-something-else".into());
        let error = plan(&desired, &other_rule).unwrap_err();
        assert_eq!(error.what, "EventBridge rule");
        assert!(error.to_string().contains("--execution-events-queue-url"));
    }

    #[test]
    fn removal_deletes_targets_rule_and_queue_when_ours() {
        let desired = desired(&settings()).unwrap();
        let observed = converged(&desired);
        let removal = removal(&desired, &observed);
        assert_eq!(removal.remove_targets, ["queue"]);
        assert!(removal.delete_rule);
        assert_eq!(
            removal.delete_queue.as_deref(),
            observed.queue.as_ref().map(|q| q.url.as_str())
        );
        assert!(removal.kept.is_empty());
        assert!(super::removal(&desired, &Observed::default()).is_empty());
    }

    #[test]
    fn removal_keeps_what_is_not_ours() {
        let desired = desired(&settings()).unwrap();
        let mut observed = converged(&desired);
        observed.queue_tags.clear();
        let removal = removal(&desired, &observed);
        assert!(removal.delete_rule);
        assert_eq!(removal.delete_queue, None);
        assert_eq!(removal.kept.len(), 1);
        assert_eq!(removal.kept[0].what, "SQS queue");
    }
}
