//! Multi-tenancy guard: a namespace may use only the IAM roles and Batch job queues a
//! platform admin allowed. Pure: the Flow's spec, the controller defaults and the allow lists
//! go in, the violations come out; the Flow reconciler calls it before any AWS call that acts
//! on a role or queue (assuming a secret's role included).
//!
//! Allow lists come from two places, each optional:
//! - the controller (`FLOWLINE_ALLOWED_ROLES`, `FLOWLINE_ALLOWED_JOB_QUEUES`): the ceiling for
//!   every namespace;
//! - the namespace (annotations `flowline.io/allowed-roles`, `flowline.io/allowed-job-queues`):
//!   what that namespace may use.
//!
//! A value must match every list that is set (so a namespace annotation can only narrow the
//! controller's list); with no list set, everything is allowed, as before allow lists existed.
//! Values are checked after defaults are applied, so the controller's default job role and
//! queue must be allowed too wherever Flows rely on them.

use std::fmt;

use crate::api::FlowSpec;
use crate::compile::job_definition::{effective_batch, execution_role, job_role};
use crate::settings::Settings;

/// Namespace annotation listing the IAM roles Flows in the namespace may use.
pub const ALLOWED_ROLES_ANNOTATION: &str = "flowline.io/allowed-roles";
/// Namespace annotation listing the Batch job queues Flows in the namespace may use.
pub const ALLOWED_JOB_QUEUES_ANNOTATION: &str = "flowline.io/allowed-job-queues";
/// Controller-wide variable listing the IAM roles any Flow may use.
pub const ALLOWED_ROLES_VARIABLE: &str = "FLOWLINE_ALLOWED_ROLES";
/// Controller-wide variable listing the Batch job queues any Flow may use.
pub const ALLOWED_JOB_QUEUES_VARIABLE: &str = "FLOWLINE_ALLOWED_JOB_QUEUES";

/// Where an allow list was set, for messages that tell a person what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Controller(&'static str),
    Namespace(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Controller(variable) => write!(f, "controller setting {variable}"),
            Source::Namespace(annotation) => write!(f, "namespace annotation {annotation}"),
        }
    }
}

/// Comma-separated patterns: an exact name or ARN, `prefix*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    pub patterns: Vec<String>,
    pub source: Source,
}

impl AllowList {
    /// `None` for an unset or blank list (which allows everything).
    pub fn parse(text: Option<&str>, source: Source) -> Option<AllowList> {
        let patterns: Vec<String> = text?
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        (!patterns.is_empty()).then_some(AllowList { patterns, source })
    }

    /// Whether any pattern matches one of the value's forms (ARN, name, path/name).
    fn allows(&self, forms: &[String]) -> bool {
        self.patterns
            .iter()
            .any(|pattern| forms.iter().any(|form| matches(pattern, form)))
    }
}

/// `*` matches everything, `prefix*` a prefix, anything else itself.
pub fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Every allow list in force for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub roles: Vec<AllowList>,
    pub queues: Vec<AllowList>,
}

impl Policy {
    /// The controller's lists and the namespace's annotations (`None`: not set).
    pub fn new(
        controller_roles: Option<&str>,
        controller_queues: Option<&str>,
        namespace_roles: Option<&str>,
        namespace_queues: Option<&str>,
    ) -> Policy {
        Policy {
            roles: [
                AllowList::parse(controller_roles, Source::Controller(ALLOWED_ROLES_VARIABLE)),
                AllowList::parse(namespace_roles, Source::Namespace(ALLOWED_ROLES_ANNOTATION)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            queues: [
                AllowList::parse(
                    controller_queues,
                    Source::Controller(ALLOWED_JOB_QUEUES_VARIABLE),
                ),
                AllowList::parse(
                    namespace_queues,
                    Source::Namespace(ALLOWED_JOB_QUEUES_ANNOTATION),
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
}

/// What a field asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Role,
    JobQueue,
}

/// One role or queue a Flow may not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field that set it, or the controller default it fell back to.
    pub field: String,
    pub resource: Resource,
    pub value: String,
    /// The list that refused it.
    pub list: AllowList,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.resource {
            Resource::Role => "IAM role",
            Resource::JobQueue => "job queue",
        };
        write!(
            f,
            "{}: {what} {} is not allowed (allowed by {}: {})",
            self.field,
            self.value,
            self.list.source,
            self.list.patterns.join(", ")
        )
    }
}

/// The message of a Flow stalled by violations.
pub fn message(namespace: &str, violations: &[Violation]) -> String {
    let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!(
        "namespace {namespace} may not use what this Flow asks for: {}; ask a platform admin to allow it, or use an allowed one",
        list.join("; ")
    )
}

/// Checks every role and job queue the Flow would use — each step's job role, execution role
/// (Fargate, or a step with secrets) and queue, and each secret's lookup role — after controller defaults.
/// Empty when everything is allowed.
pub fn check(spec: &FlowSpec, settings: &Settings, policy: &Policy) -> Vec<Violation> {
    let mut wanted: Vec<(String, Resource, String)> = Vec::new();
    let flow_batch = spec.batch.as_ref();
    for step in &spec.steps {
        let step_batch = step.batch.as_ref();
        let batch = effective_batch(flow_batch, step_batch);
        let field = |name: &str, in_step: bool, in_flow: bool, default: &str| {
            if in_step {
                format!("spec.steps[{}].batch.{name}", step.name)
            } else if in_flow {
                format!("spec.batch.{name}")
            } else {
                format!("step {} (controller default {default})", step.name)
            }
        };
        if let Some(role) = job_role(&batch, settings) {
            let f = field(
                "iamRole",
                step_batch.is_some_and(|b| b.iam_role.is_some()),
                flow_batch.is_some_and(|b| b.iam_role.is_some()),
                "FLOWLINE_JOB_ROLE",
            );
            wanted.push((f, Resource::Role, role));
        }
        if let Some(role) = execution_role(step, &batch, settings) {
            let f = field(
                "executionRole",
                step_batch.is_some_and(|b| b.execution_role.is_some()),
                flow_batch.is_some_and(|b| b.execution_role.is_some()),
                "FLOWLINE_EXECUTION_ROLE",
            );
            wanted.push((f, Resource::Role, role));
        }
        let queue = batch
            .queue
            .clone()
            .unwrap_or_else(|| settings.job_queue.clone());
        let f = field(
            "queue",
            step_batch.is_some_and(|b| b.queue.is_some()),
            flow_batch.is_some_and(|b| b.queue.is_some()),
            "FLOWLINE_JOB_QUEUE",
        );
        wanted.push((f, Resource::JobQueue, queue));
        for secret in &step.secrets {
            let role = secret
                .role
                .clone()
                .or_else(|| settings.secrets_role.clone());
            if let Some(role) = role {
                let f = if secret.role.is_some() {
                    format!("spec.steps[{}].secrets[{}].role", step.name, secret.id)
                } else {
                    format!(
                        "secret {} of step {} (controller default FLOWLINE_SECRETS_ROLE)",
                        secret.id, step.name
                    )
                };
                wanted.push((f, Resource::Role, role));
            }
        }
    }
    wanted.dedup();
    let mut violations = Vec::new();
    for (field, resource, value) in wanted {
        let (lists, forms) = match resource {
            Resource::Role => (&policy.roles, role_forms(&value)),
            Resource::JobQueue => (&policy.queues, queue_forms(&value, settings)),
        };
        if let Some(list) = lists.iter().find(|list| !list.allows(&forms)) {
            let violation = Violation {
                field,
                resource,
                value,
                list: list.clone(),
            };
            if !violations.contains(&violation) {
                violations.push(violation);
            }
        }
    }
    violations
}

/// A role as patterns may name it: its ARN, `path/name` and the bare name.
fn role_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    if let Some((_, path)) = value.split_once(":role/") {
        forms.push(path.to_owned());
        if let Some(name) = path.rsplit('/').next() {
            forms.push(name.to_owned());
        }
    }
    forms
}

/// A queue as patterns may name it: its name and its ARN (built from the controller's region
/// and account when the Flow gave a name).
fn queue_forms(value: &str, settings: &Settings) -> Vec<String> {
    match value.split_once(":job-queue/") {
        Some((_, name)) => vec![value.to_owned(), name.to_owned()],
        None => vec![
            value.to_owned(),
            format!(
                "arn:aws:batch:{}:{}:job-queue/{value}",
                settings.region,
                settings.account()
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Flow;

    const TEAM_ROLE: &str = "arn:aws:iam::123456789012:role/team-a-jobs";
    const OTHER_ROLE: &str = "arn:aws:iam::123456789012:role/team-b-jobs";

    fn flow(yaml: &str) -> FlowSpec {
        let flow: Flow = serde_norway::from_str(yaml).unwrap();
        flow.spec
    }

    fn two_steps(batch: &str, step_batch: &str) -> FlowSpec {
        flow(&format!(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: f, namespace: ns}}
spec:
  batch: {batch}
  steps:
    - name: start
      next: [end]
      batch: {step_batch}
    - name: end
"#
        ))
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_everything() {
        assert!(matches("*", "anything"));
        assert!(matches("team-a-*", "team-a-jobs"));
        assert!(!matches("team-a-*", "team-b-jobs"));
        assert!(matches("gpu", "gpu"));
        assert!(!matches("gpu", "gpu-2"));
    }

    #[test]
    fn blank_lists_are_unset() {
        assert_eq!(AllowList::parse(Some(" , "), Source::Controller("X")), None);
        assert_eq!(AllowList::parse(None, Source::Controller("X")), None);
        let list = AllowList::parse(Some("a, b*"), Source::Controller("X")).unwrap();
        assert_eq!(list.patterns, vec!["a", "b*"]);
    }

    #[test]
    fn without_lists_everything_is_allowed() {
        let spec = two_steps(&format!("{{iamRole: {OTHER_ROLE}, queue: any}}"), "{}");
        assert!(check(&spec, &Settings::default(), &Policy::default()).is_empty());
    }

    #[test]
    fn a_role_outside_the_namespace_list_is_named_with_its_field_and_source() {
        let spec = two_steps("{}", &format!("{{iamRole: {OTHER_ROLE}}}"));
        let policy = Policy::new(None, None, Some("team-a-*"), None);
        let violations = check(&spec, &Settings::default(), &policy);
        assert_eq!(violations.len(), 1, "{violations:?}");
        let text = violations[0].to_string();
        assert!(
            text.starts_with("spec.steps[start].batch.iamRole: IAM role"),
            "{text}"
        );
        assert!(text.contains(OTHER_ROLE), "{text}");
        assert!(
            text.contains("namespace annotation flowline.io/allowed-roles: team-a-*"),
            "{text}"
        );
    }

    #[test]
    fn roles_match_by_arn_path_or_name() {
        let spec = two_steps(&format!("{{iamRole: {TEAM_ROLE}}}"), "{}");
        for pattern in [
            TEAM_ROLE,
            "team-a-jobs",
            "arn:aws:iam::123456789012:role/team-a-*",
        ] {
            let policy = Policy::new(Some(pattern), None, None, None);
            assert!(
                check(&spec, &Settings::default(), &policy).is_empty(),
                "{pattern}"
            );
        }
    }

    #[test]
    fn both_lists_must_allow_a_value() {
        let spec = two_steps(&format!("{{iamRole: {TEAM_ROLE}}}"), "{}");
        // The namespace allows it, the controller does not: the controller's list wins.
        let policy = Policy::new(Some("platform-*"), None, Some("team-a-*"), None);
        let violations = check(&spec, &Settings::default(), &policy);
        assert_eq!(violations.len(), 1);
        assert_eq!(
            violations[0].list.source,
            Source::Controller(ALLOWED_ROLES_VARIABLE)
        );
        assert_eq!(violations[0].field, "spec.batch.iamRole");
    }

    #[test]
    fn defaults_are_checked_and_named_as_defaults() {
        let spec = two_steps("{}", "{}");
        let settings = Settings {
            job_role: Some(OTHER_ROLE.into()),
            ..Settings::default()
        };
        let policy = Policy::new(None, None, Some("team-a-*"), Some("team-a"));
        let violations = check(&spec, &settings, &policy);
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "step start (controller default FLOWLINE_JOB_ROLE)",
                "step start (controller default FLOWLINE_JOB_QUEUE)",
                "step end (controller default FLOWLINE_JOB_ROLE)",
                "step end (controller default FLOWLINE_JOB_QUEUE)",
            ]
        );
    }

    #[test]
    fn queues_match_by_name_or_arn() {
        let spec = two_steps("{queue: team-a}", "{}");
        for pattern in [
            "team-a",
            "team-*",
            "arn:aws:batch:us-east-1:123456789012:job-queue/team-a",
        ] {
            let policy = Policy::new(None, Some(pattern), None, None);
            assert!(
                check(&spec, &Settings::default(), &policy).is_empty(),
                "{pattern}"
            );
        }
        let policy = Policy::new(None, None, None, Some("team-b"));
        let violations = check(&spec, &Settings::default(), &policy);
        // Both steps inherit spec.batch.queue: one field, reported once.
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].resource, Resource::JobQueue);
        assert_eq!(violations[0].field, "spec.batch.queue");
    }

    #[test]
    fn execution_and_secret_roles_are_checked() {
        let spec = flow(&format!(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: f, namespace: ns}}
spec:
  steps:
    - name: start
      next: [end]
      batch: {{platform: FARGATE, executionRole: {OTHER_ROLE}}}
      secrets:
        - {{id: db, role: {OTHER_ROLE}}}
    - name: end
"#
        ));
        let policy = Policy::new(Some("team-a-*"), None, None, None);
        let fields: Vec<String> = check(&spec, &Settings::default(), &policy)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.steps[start].batch.executionRole",
                "spec.steps[start].secrets[db].role"
            ]
        );
    }

    #[test]
    fn the_default_execution_role_of_an_ec2_step_with_secrets_is_checked() {
        let spec = flow(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: f, namespace: ns}
spec:
  steps:
    - name: start
      next: [end]
      secrets:
        - {id: db, type: plaintext, envVarName: DB}
    - name: end
"#,
        );
        let settings = Settings {
            execution_role: Some(OTHER_ROLE.into()),
            ..Settings::default()
        };
        let policy = Policy::new(Some("team-a-*"), None, None, None);
        let fields: Vec<String> = check(&spec, &settings, &policy)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            vec!["step start (controller default FLOWLINE_EXECUTION_ROLE)"]
        );
    }
}
