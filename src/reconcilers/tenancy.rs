//! Multi-tenancy guard: a namespace may use only the IAM roles, Batch job queues, Secrets
//! Manager secrets and S3 trigger buckets a platform admin allowed. Pure: the Flow's spec (or
//! a Schedule's trigger), the controller defaults and the allow lists go in, the violations
//! come out; the reconcilers call it before any AWS call that acts on one of them (assuming a
//! secret's role or reading a secret included).
//!
//! Allow lists come from two places, each optional:
//! - the controller (`FLOWLINE_ALLOWED_ROLES`, `FLOWLINE_ALLOWED_JOB_QUEUES`,
//!   `FLOWLINE_ALLOWED_SECRETS`, `FLOWLINE_ALLOWED_TRIGGER_BUCKETS`): the ceiling for every
//!   namespace;
//! - the namespace (annotations `flowline.io/allowed-roles`, `flowline.io/allowed-job-queues`,
//!   `flowline.io/allowed-secrets`, `flowline.io/allowed-trigger-buckets`): what that
//!   namespace may use.
//!
//! A value must match every list that is set (so a namespace annotation can only narrow the
//! controller's list); with no list set, everything is allowed, as before allow lists existed.
//! Values are checked after defaults are applied, so the controller's default job role and
//! queue must be allowed too wherever Flows rely on them.
//!
//! A pattern that names a role, queue or secret by name (not by ARN) matches only in the
//! controller's own account and partition: `team-a-*` must not allow
//! `arn:aws:iam::<another account>:role/team-a-x`. Other accounts are allowed by ARN patterns.

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
/// Namespace annotation listing the Secrets Manager secrets Flows in the namespace may bind.
pub const ALLOWED_SECRETS_ANNOTATION: &str = "flowline.io/allowed-secrets";
/// Controller-wide variable listing the Secrets Manager secrets any Flow may bind.
pub const ALLOWED_SECRETS_VARIABLE: &str = "FLOWLINE_ALLOWED_SECRETS";
/// Namespace annotation listing the S3 buckets (and prefixes) Schedules may trigger on.
pub const ALLOWED_TRIGGER_BUCKETS_ANNOTATION: &str = "flowline.io/allowed-trigger-buckets";
/// Controller-wide variable listing the S3 buckets (and prefixes) any Schedule may trigger on.
pub const ALLOWED_TRIGGER_BUCKETS_VARIABLE: &str = "FLOWLINE_ALLOWED_TRIGGER_BUCKETS";
/// Namespace annotation naming the execution role the namespace's steps get by default
/// (instead of `FLOWLINE_EXECUTION_ROLE`), so each team's secrets are read with a role that
/// can read that team's secrets only.
pub const EXECUTION_ROLE_ANNOTATION: &str = "flowline.io/execution-role";

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

/// Every allow list in force for one namespace, and the namespace's own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub roles: Vec<AllowList>,
    pub queues: Vec<AllowList>,
    pub secrets: Vec<AllowList>,
    pub triggers: Vec<AllowList>,
    /// The namespace's default execution role (annotation `flowline.io/execution-role`).
    pub execution_role: Option<String>,
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
            roles: lists(
                controller_roles,
                namespace_roles,
                ALLOWED_ROLES_VARIABLE,
                ALLOWED_ROLES_ANNOTATION,
            ),
            queues: lists(
                controller_queues,
                namespace_queues,
                ALLOWED_JOB_QUEUES_VARIABLE,
                ALLOWED_JOB_QUEUES_ANNOTATION,
            ),
            ..Policy::default()
        }
    }

    /// Adds the secrets lists: the controller's and the namespace's (`None`: not set).
    pub fn with_secrets(mut self, controller: Option<&str>, namespace: Option<&str>) -> Policy {
        self.secrets = lists(
            controller,
            namespace,
            ALLOWED_SECRETS_VARIABLE,
            ALLOWED_SECRETS_ANNOTATION,
        );
        self
    }

    /// Adds the S3 trigger lists: the controller's and the namespace's (`None`: not set).
    pub fn with_triggers(mut self, controller: Option<&str>, namespace: Option<&str>) -> Policy {
        self.triggers = lists(
            controller,
            namespace,
            ALLOWED_TRIGGER_BUCKETS_VARIABLE,
            ALLOWED_TRIGGER_BUCKETS_ANNOTATION,
        );
        self
    }

    /// Sets the namespace's default execution role (blank: none).
    pub fn with_execution_role(mut self, role: Option<&str>) -> Policy {
        self.execution_role = role
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        self
    }

    /// The controller settings as this namespace sees them: its default execution role, when
    /// it has one, replaces the controller's.
    pub fn settings(&self, settings: &Settings) -> Settings {
        let mut own = settings.clone();
        if let Some(role) = &self.execution_role {
            own.execution_role = Some(role.clone());
        }
        own
    }
}

/// The allow lists one kind is bounded by: the controller's (`variable`) and the namespace's
/// (`annotation`), each only when set.
fn lists(
    controller: Option<&str>,
    namespace: Option<&str>,
    variable: &'static str,
    annotation: &'static str,
) -> Vec<AllowList> {
    [
        AllowList::parse(controller, Source::Controller(variable)),
        AllowList::parse(namespace, Source::Namespace(annotation)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What a field asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Role,
    JobQueue,
    Secret,
    TriggerBucket,
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
            Resource::Secret => "secret",
            Resource::TriggerBucket => "S3 trigger",
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

/// Checks every role, job queue and secret the Flow would use — each step's job role,
/// execution role (Fargate, or a step with secrets) and queue, each secret and its lookup
/// role — after the namespace's and the controller's defaults.
/// Empty when everything is allowed.
pub fn check(spec: &FlowSpec, settings: &Settings, policy: &Policy) -> Vec<Violation> {
    let settings = &policy.settings(settings);
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
                if policy.execution_role.is_some() {
                    "of the namespace, flowline.io/execution-role"
                } else {
                    "FLOWLINE_EXECUTION_ROLE"
                },
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
            wanted.push((
                format!("spec.steps[{}].secrets[{}].id", step.name, secret.id),
                Resource::Secret,
                secret_forms_key(secret, settings),
            ));
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
        let (lists, forms, value) = match resource {
            Resource::Role => (&policy.roles, role_forms(&value, settings), value),
            Resource::JobQueue => (&policy.queues, queue_forms(&value, settings), value),
            Resource::Secret => {
                // Carried as `region|id` so the forms know the region of a secret named by name.
                let (region, id) = value.split_once('|').unwrap_or(("", &value));
                (
                    &policy.secrets,
                    secret_forms(id, region, settings),
                    id.to_owned(),
                )
            }
            Resource::TriggerBucket => (&policy.triggers, vec![value.clone()], value),
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

/// The partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Whether an ARN is in the controller's own account and partition (names match only there).
fn in_home_account(arn: &str, settings: &Settings) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6 && parts[1] == partition(&settings.region) && parts[4] == settings.account()
}

/// A role as patterns may name it: its ARN and, in the controller's account only, `path/name`
/// and the bare name. A role given by name is in the controller's account.
fn role_forms(value: &str, settings: &Settings) -> Vec<String> {
    match value.split_once(":role/") {
        Some((_, path)) => {
            let mut forms = vec![value.to_owned()];
            if in_home_account(value, settings) {
                forms.push(path.to_owned());
                if let Some(name) = path.rsplit('/').next() {
                    forms.push(name.to_owned());
                }
            }
            forms
        }
        None => {
            let mut forms = vec![
                value.to_owned(),
                format!(
                    "arn:{}:iam::{}:role/{value}",
                    partition(&settings.region),
                    settings.account()
                ),
            ];
            if let Some(name) = value.rsplit('/').next().filter(|n| *n != value) {
                forms.push(name.to_owned());
            }
            forms
        }
    }
}

/// A queue as patterns may name it: its ARN and, in the controller's account only, its name
/// (a queue given by name gets its ARN from the controller's region and account).
fn queue_forms(value: &str, settings: &Settings) -> Vec<String> {
    match value.split_once(":job-queue/") {
        Some((_, name)) if in_home_account(value, settings) => {
            vec![value.to_owned(), name.to_owned()]
        }
        Some(_) => vec![value.to_owned()],
        None => vec![
            value.to_owned(),
            format!(
                "arn:{}:batch:{}:{}:job-queue/{value}",
                partition(&settings.region),
                settings.region,
                settings.account()
            ),
        ],
    }
}

/// `region|id` of a secret: the region it is looked up in, and its id.
fn secret_forms_key(secret: &crate::api::SecretSpec, settings: &Settings) -> String {
    let region = secret
        .region
        .as_deref()
        .or(settings.secrets_region.as_deref())
        .unwrap_or(&settings.region);
    format!("{region}|{}", secret.id)
}

/// A secret as patterns may name it: its ARN (built from the region and the controller's
/// account when the Flow gave a name, without the random suffix) and, in the controller's
/// account only, its name — with and without the random suffix of a full ARN.
pub fn secret_forms(id: &str, region: &str, settings: &Settings) -> Vec<String> {
    match id.split_once(":secret:") {
        Some((_, name)) => {
            let mut forms = vec![id.to_owned()];
            if in_home_account(id, settings) {
                forms.push(name.to_owned());
                if let Some(bare) = without_random_suffix(name) {
                    forms.push(bare.to_owned());
                }
            }
            forms
        }
        None => vec![
            id.to_owned(),
            format!(
                "arn:{}:secretsmanager:{region}:{}:secret:{id}",
                partition(&settings.region),
                settings.account()
            ),
        ],
    }
}

/// `name` of `name-AbCdEf`: Secrets Manager appends `-` and six random characters to a
/// secret's name in its ARN.
fn without_random_suffix(name: &str) -> Option<&str> {
    let (bare, suffix) = name.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric())).then_some(bare)
}

/// Checks a secret again by the ARN Secrets Manager resolved its id to, before its value is
/// read: the id the Flow gave passed [`check`], and the secret it names must too.
pub fn check_resolved_secret(
    field: &str,
    arn: &str,
    settings: &Settings,
    policy: &Policy,
) -> Option<Violation> {
    let forms = secret_forms(arn, &settings.region, settings);
    policy
        .secrets
        .iter()
        .find(|list| !list.allows(&forms))
        .map(|list| Violation {
            field: field.to_owned(),
            resource: Resource::Secret,
            value: arn.to_owned(),
            list: list.clone(),
        })
}

/// Checks a Schedule's S3 trigger against the trigger lists. A trigger is written
/// `bucket/prefix`; a pattern that is a bare bucket name allows every prefix of that bucket,
/// `bucket/prefix*` the prefixes that start with `prefix`, `bucket/prefix` that prefix only.
/// `arn:aws:s3:::` before a pattern is ignored.
pub fn check_trigger(trigger: &crate::api::S3Trigger, policy: &Policy) -> Option<Violation> {
    let value = trigger_value(trigger);
    policy
        .triggers
        .iter()
        .find(|list| {
            !list
                .patterns
                .iter()
                .any(|pattern| matches(&trigger_pattern(pattern), &value))
        })
        .map(|list| Violation {
            field: "spec.event.s3".to_owned(),
            resource: Resource::TriggerBucket,
            value: format!("s3://{value}"),
            list: list.clone(),
        })
}

/// `bucket/prefix` of a trigger (`bucket/` for a whole bucket).
fn trigger_value(trigger: &crate::api::S3Trigger) -> String {
    format!(
        "{}/{}",
        trigger.bucket,
        trigger.prefix.as_deref().unwrap_or_default()
    )
}

fn trigger_pattern(pattern: &str) -> String {
    let pattern = pattern
        .strip_prefix("arn:aws:s3:::")
        .or_else(|| pattern.strip_prefix("s3://"))
        .unwrap_or(pattern);
    if pattern.contains('/') || pattern.ends_with('*') {
        pattern.to_owned()
    } else {
        format!("{pattern}/*")
    }
}

/// Why a trigger may not watch the controller's shared datastore (`FLOWLINE_S3_ROOT`): every
/// namespace's artifacts are written under it, and a trigger there would tell the tasks the
/// keys of other namespaces' objects. A trigger under the namespace's own part of it,
/// `<root>/<namespace>/`, is the namespace's business (and [`trigger_loop`] refuses the
/// Flow's own prefix). `None` when the trigger stays out of other namespaces' parts.
pub fn trigger_on_shared_datastore(
    trigger: &crate::api::S3Trigger,
    shared_root: &str,
    namespace: &str,
) -> Option<String> {
    let (bucket, root) = split_s3(shared_root)?;
    if bucket != trigger.bucket {
        return None;
    }
    let root = root.trim_matches('/');
    let root_dir = if root.is_empty() {
        String::new()
    } else {
        format!("{root}/")
    };
    let own = format!("{root_dir}{namespace}/");
    let watched = trigger.prefix.as_deref().unwrap_or_default();
    let overlaps_root = watched.starts_with(&root_dir) || root_dir.starts_with(watched);
    (overlaps_root && !watched.starts_with(&own)).then(|| {
        format!(
            "spec.event.s3 (s3://{}/{watched}) watches the shared datastore {shared_root}, where every namespace's artifacts are written; only s3://{bucket}/{own} is this namespace's to watch",
            trigger.bucket
        )
    })
}

/// `(bucket, key prefix)` of `s3://bucket/prefix`.
fn split_s3(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// Why a trigger would start its own Flow without end: it watches objects under the prefix
/// the Flow's tasks write to (`artifact_root`, `s3://bucket/prefix`). `None` when the two do
/// not overlap.
pub fn trigger_loop(trigger: &crate::api::S3Trigger, artifact_root: &str) -> Option<String> {
    let (bucket, own) = split_s3(artifact_root)?;
    if bucket != trigger.bucket {
        return None;
    }
    let own = format!("{}/", own.trim_end_matches('/'));
    let own = own.trim_start_matches('/');
    let watched = trigger.prefix.as_deref().unwrap_or_default();
    (watched.starts_with(own) || own.starts_with(watched)).then(|| {
        format!(
            "spec.event.s3 (s3://{}/{watched}) overlaps the Flow's own datastore prefix {artifact_root}/: every Run writes objects there, and each would start another Run without end; trigger on a prefix the Flow does not write to",
            trigger.bucket
        )
    })
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

    fn with_secret(id: &str) -> FlowSpec {
        flow(&format!(
            r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {{name: f, namespace: ns}}
spec:
  steps:
    - name: start
      next: [end]
      secrets:
        - {{id: "{id}", keys: [password]}}
    - name: end
"#
        ))
    }

    fn secret_fields(id: &str, policy: &Policy) -> Vec<String> {
        check(&with_secret(id), &Settings::default(), policy)
            .into_iter()
            .filter(|v| v.resource == Resource::Secret)
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn secrets_outside_the_namespace_prefix_are_refused_by_name_or_arn() {
        let policy = Policy::default().with_secrets(None, Some("team-a/*"));
        assert!(secret_fields("team-a/db", &policy).is_empty());
        assert!(
            secret_fields(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db-AbCdEf",
                &policy
            )
            .is_empty()
        );
        let refused = secret_fields("team-b/db", &policy);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("spec.steps[start].secrets[team-b/db].id: secret team-b/db is not allowed (allowed by namespace annotation flowline.io/allowed-secrets: team-a/*)"),
            "{}",
            refused[0]
        );
        assert_eq!(
            secret_fields(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-b/db-AbCdEf",
                &policy
            )
            .len(),
            1
        );
    }

    #[test]
    fn the_controller_secrets_list_is_a_ceiling_and_arn_patterns_match_names() {
        let policy = Policy::default().with_secrets(
            Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:team-*"),
            Some("team-a/*"),
        );
        assert!(secret_fields("team-a/db", &policy).is_empty());
        let policy = Policy::default().with_secrets(Some("platform/*"), Some("team-a/*"));
        let refused = secret_fields("team-a/db", &policy);
        assert!(
            refused[0].contains("controller setting FLOWLINE_ALLOWED_SECRETS"),
            "{refused:?}"
        );
    }

    #[test]
    fn names_match_only_in_the_controllers_account() {
        let foreign_role = "arn:aws:iam::999999999999:role/team-a-x";
        let spec = two_steps(&format!("{{iamRole: {foreign_role}}}"), "{}");
        for pattern in ["team-a-*", "team-a-x"] {
            let policy = Policy::new(Some(pattern), None, None, None);
            assert_eq!(
                check(&spec, &Settings::default(), &policy).len(),
                1,
                "{pattern} must not allow {foreign_role}"
            );
        }
        let policy = Policy::new(
            Some("arn:aws:iam::999999999999:role/team-a-*"),
            None,
            None,
            None,
        );
        assert!(check(&spec, &Settings::default(), &policy).is_empty());
        // Another partition, same account number.
        let china = "arn:aws-cn:iam::123456789012:role/team-a-x";
        let spec = two_steps(&format!("{{iamRole: {china}}}"), "{}");
        let policy = Policy::new(Some("team-a-*"), None, None, None);
        assert_eq!(check(&spec, &Settings::default(), &policy).len(), 1);

        let queue = "arn:aws:batch:us-east-1:999999999999:job-queue/team-a";
        let spec = two_steps(&format!("{{queue: \"{queue}\"}}"), "{}");
        let policy = Policy::new(None, Some("team-a"), None, None);
        assert_eq!(check(&spec, &Settings::default(), &policy).len(), 1);

        let secret = "arn:aws:secretsmanager:us-east-1:999999999999:secret:team-a/db-AbCdEf";
        let policy = Policy::default().with_secrets(None, Some("team-a/*"));
        assert_eq!(secret_fields(secret, &policy).len(), 1);
    }

    #[test]
    fn a_resolved_secret_is_checked_by_its_arn() {
        let policy = Policy::default().with_secrets(None, Some("team-a/db"));
        let settings = Settings::default();
        let own = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db-AbCdEf";
        assert_eq!(check_resolved_secret("s", own, &settings, &policy), None);
        let other = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-b/db-AbCdEf";
        assert!(check_resolved_secret("s", other, &settings, &policy).is_some());
    }

    #[test]
    fn the_namespace_execution_role_is_the_default_and_is_checked() {
        let spec = with_secret("team-a/db");
        let settings = Settings {
            execution_role: Some(OTHER_ROLE.into()),
            ..Settings::default()
        };
        let policy = Policy::new(Some("team-a-*"), None, None, None)
            .with_execution_role(Some(" arn:aws:iam::123456789012:role/team-a-exec "));
        assert_eq!(
            policy.settings(&settings).execution_role.as_deref(),
            Some("arn:aws:iam::123456789012:role/team-a-exec")
        );
        assert!(check(&spec, &settings, &policy).is_empty());
        let policy =
            Policy::new(Some("team-a-*"), None, None, None).with_execution_role(Some(OTHER_ROLE));
        let fields: Vec<String> = check(&spec, &settings, &policy)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            vec!["step start (controller default of the namespace, flowline.io/execution-role)"]
        );
        assert_eq!(
            Policy::default()
                .with_execution_role(Some(" "))
                .execution_role,
            None
        );
    }

    fn trigger(bucket: &str, prefix: Option<&str>) -> crate::api::S3Trigger {
        crate::api::S3Trigger {
            bucket: bucket.into(),
            prefix: prefix.map(str::to_owned),
            suffix: None,
        }
    }

    #[test]
    fn triggers_match_buckets_and_prefixes() {
        let policy = Policy::default().with_triggers(None, Some("team-a-in, shared/team-a/*"));
        for allowed in [
            trigger("team-a-in", None),
            trigger("team-a-in", Some("x/")),
            trigger("shared", Some("team-a/in/")),
        ] {
            assert_eq!(check_trigger(&allowed, &policy), None, "{allowed:?}");
        }
        for refused in [
            trigger("team-b-in", None),
            trigger("shared", None),
            trigger("shared", Some("team-b/")),
            trigger("team-a-in-2", None),
        ] {
            let violation = check_trigger(&refused, &policy);
            assert!(violation.is_some(), "{refused:?}");
        }
        let violation = check_trigger(&trigger("shared", Some("team-b/")), &policy).unwrap();
        assert_eq!(
            violation.to_string(),
            "spec.event.s3: S3 trigger s3://shared/team-b/ is not allowed (allowed by namespace annotation flowline.io/allowed-trigger-buckets: team-a-in, shared/team-a/*)"
        );
        let arns = Policy::default().with_triggers(Some("arn:aws:s3:::team-a-in"), None);
        assert_eq!(
            check_trigger(&trigger("team-a-in", Some("p/")), &arns),
            None
        );
        assert_eq!(
            check_trigger(&trigger("any", None), &Policy::default()),
            None
        );
    }

    #[test]
    fn a_trigger_on_the_flows_own_datastore_prefix_is_a_loop() {
        let root = "s3://data/flowline/ns/f";
        for looping in [
            trigger("data", None),
            trigger("data", Some("flowline/")),
            trigger("data", Some("flowline/ns/f/")),
            trigger("data", Some("flowline/ns/f/run-1/")),
        ] {
            let message = trigger_loop(&looping, root);
            assert!(
                message
                    .as_deref()
                    .is_some_and(|m| m.contains("s3://data/flowline/ns/f/")),
                "{looping:?}: {message:?}"
            );
        }
        for apart in [
            trigger("other", None),
            trigger("data", Some("incoming/")),
            trigger("data", Some("flowline/ns/g/")),
            trigger("data", Some("flowline/ns/f2/")),
        ] {
            assert_eq!(trigger_loop(&apart, root), None, "{apart:?}");
        }
    }

    #[test]
    fn the_shared_datastore_is_watched_only_in_the_namespaces_own_part() {
        let shared = "s3://data/flowline";
        assert!(trigger_on_shared_datastore(&trigger("data", None), shared, "ns").is_some());
        assert!(
            trigger_on_shared_datastore(&trigger("data", Some("flowline/other/")), shared, "ns")
                .is_some()
        );
        assert_eq!(
            trigger_on_shared_datastore(&trigger("data", Some("flowline/ns/g/")), shared, "ns"),
            None
        );
        assert_eq!(
            trigger_on_shared_datastore(&trigger("data", Some("incoming/")), shared, "ns"),
            None
        );
        assert_eq!(
            trigger_on_shared_datastore(&trigger("other", None), shared, "ns"),
            None
        );
    }
}
