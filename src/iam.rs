//! Least-privilege IAM policies for the roles a Flowline installation needs, generated from the
//! controller's settings so that they name the same prefix, bucket, account and region the
//! controller uses. `flowline iam-policy` prints them; nothing here calls AWS.
//!
//! Resources are scoped by ARN wherever the service authorizes the action on a resource;
//! the few actions AWS authorizes only on `*` say so where they are granted.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::compile::state_machine::split_s3;
use crate::settings::Settings;

/// Policy language version every document uses.
pub const POLICY_VERSION: &str = "2012-10-17";

/// The managed rule through which Step Functions follows Batch jobs of `.sync` tasks.
pub const SYNC_BATCH_RULE: &str = "StepFunctionsGetEventsForBatchJobsRule";

/// An IAM policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    pub version: &'static str,
    pub statement: Vec<Statement>,
}

/// One statement: who may do what on which resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub sid: String,
    pub effect: Effect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    pub action: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<String>,
    /// Operator -> condition key -> values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub condition: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Effect {
    Allow,
}

/// The service a trust policy lets assume the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Principal {
    pub service: String,
}

/// The roles a Flowline installation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The controller's own identity (IRSA or Pod Identity).
    Controller,
    /// The role state machines run as (`--states-role`).
    StepFunctions,
    /// The role EventBridge rules start executions with (`--events-role`).
    Eventbridge,
    /// The role Batch jobs run as (`--job-role`).
    Job,
    /// The role ECS starts a job's container with (`--execution-role`): it reads the secrets
    /// Batch injects, pulls the image from ECR and writes the container's logs.
    Execution,
    /// A namespace's own execution role (namespace annotation `flowline.io/execution-role`):
    /// the execution role's permissions, with only that namespace's secrets.
    NamespaceExecution,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Controller,
        Role::StepFunctions,
        Role::Eventbridge,
        Role::Job,
        Role::Execution,
    ];
}

/// What a role needs: its permissions and, for roles a service assumes, its trust policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolePolicies {
    pub role: Role,
    /// The namespace a per-namespace role serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The role's ARN when the settings name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    pub permissions: PolicyDocument,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<PolicyDocument>,
}

/// What the policies are generated from beyond the controller's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Job queues Flows may use (names or ARNs) besides the default one.
    pub job_queues: Vec<String>,
    /// Secrets Flows bind (names or ARNs).
    pub secrets: Vec<String>,
    /// Roles Flows name in `batch.iamRole` or `batch.executionRole` besides the defaults.
    pub job_roles: Vec<String>,
    /// Roles secrets name (`secrets[].role`) to be read through, besides `--secrets-role`.
    pub secret_roles: Vec<String>,
    /// Namespaces with an execution role of their own.
    pub tenants: Vec<Tenant>,
}

/// A namespace with its own execution role, and the secrets its Flows bind (names, ARNs or
/// `prefix*`; by default `<namespace>/*`, the path prefix per team the README recommends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    pub namespace: String,
    pub execution_role: String,
    pub secrets: Vec<String>,
}

impl Tenant {
    /// The secrets it binds: those given, else `<namespace>/*`.
    fn secret_patterns(&self) -> Vec<String> {
        if self.secrets.is_empty() {
            vec![format!("{}/*", self.namespace)]
        } else {
            self.secrets.clone()
        }
    }
}

/// The policies of the selected roles, in the order given.
pub fn policies(settings: &Settings, inputs: &Inputs, roles: &[Role]) -> Vec<RolePolicies> {
    let arns = Arns::new(settings);
    let mut all: Vec<RolePolicies> = roles
        .iter()
        .filter(|role| **role != Role::NamespaceExecution)
        .map(|role| match role {
            Role::Controller => RolePolicies {
                role: *role,
                namespace: None,
                role_arn: None,
                permissions: document(controller(&arns, settings, inputs)),
                trust: None,
            },
            Role::StepFunctions => RolePolicies {
                role: *role,
                namespace: None,
                role_arn: Some(arns.role(&settings.states_role)),
                permissions: document(step_functions(&arns, settings, inputs)),
                trust: Some(trust("states.amazonaws.com", Some(settings.account()))),
            },
            Role::Eventbridge => RolePolicies {
                role: *role,
                namespace: None,
                role_arn: Some(arns.role(&settings.events_role)),
                permissions: document(eventbridge(&arns)),
                trust: Some(trust("events.amazonaws.com", Some(settings.account()))),
            },
            Role::Job => RolePolicies {
                role: *role,
                namespace: None,
                role_arn: settings.job_role.as_deref().map(|r| arns.role(r)),
                permissions: document(job(&arns, settings, inputs)),
                // Batch runs jobs as ECS tasks; ECS assumes the job role.
                trust: Some(trust("ecs-tasks.amazonaws.com", None)),
            },
            Role::Execution | Role::NamespaceExecution => RolePolicies {
                role: *role,
                namespace: None,
                role_arn: settings.execution_role.as_deref().map(|r| arns.role(r)),
                permissions: document(execution(&arns, settings, inputs)),
                // ECS assumes it to start the container, as it does the job role.
                trust: Some(trust("ecs-tasks.amazonaws.com", None)),
            },
        })
        .collect();
    // Each namespace's execution role comes with the execution role.
    if roles
        .iter()
        .any(|r| matches!(r, Role::Execution | Role::NamespaceExecution))
    {
        all.extend(inputs.tenants.iter().map(|tenant| RolePolicies {
            role: Role::NamespaceExecution,
            namespace: Some(tenant.namespace.clone()),
            role_arn: Some(arns.role(&tenant.execution_role)),
            permissions: document(namespace_execution(&arns, settings, tenant)),
            trust: Some(trust("ecs-tasks.amazonaws.com", None)),
        }));
    }
    all
}

/// A namespace's execution role: what ECS needs to start its containers, and only the
/// secrets of that namespace, so a Flow of another namespace that binds them by ARN gets
/// nothing injected.
fn namespace_execution(arns: &Arns<'_>, settings: &Settings, tenant: &Tenant) -> Vec<Statement> {
    let mut statements = execution(arns, settings, &Inputs::default());
    statements.push(allow(
        "ReadNamespaceSecrets",
        &["secretsmanager:GetSecretValue"],
        tenant_secrets(arns, settings, tenant),
    ));
    statements
}

/// A tenant's secret patterns as resources: `prefix*` stays a wildcard, a name gets the
/// random suffix wildcard.
fn tenant_secrets(arns: &Arns<'_>, settings: &Settings, tenant: &Tenant) -> Vec<String> {
    let region = settings.secrets_region.as_deref().unwrap_or(arns.region);
    tenant
        .secret_patterns()
        .iter()
        .map(|pattern| {
            if pattern.starts_with("arn:") {
                pattern.clone()
            } else if pattern.ends_with('*') {
                arns.arn("secretsmanager", region, &format!("secret:{pattern}"))
            } else {
                arns.secret(settings, pattern)
            }
        })
        .collect()
}

fn document(statement: Vec<Statement>) -> PolicyDocument {
    PolicyDocument {
        version: POLICY_VERSION,
        statement,
    }
}

/// Lets `service` assume the role; `account` limits it to requests on behalf of that account
/// (the confused-deputy guard the service supports).
fn trust(service: &str, account: Option<&str>) -> PolicyDocument {
    let mut statement = allow("AssumeRole", &["sts:AssumeRole"], Vec::new());
    statement.principal = Some(Principal {
        service: service.to_owned(),
    });
    if let Some(account) = account {
        statement = statement.when(
            "StringEquals",
            "aws:SourceAccount",
            vec![account.to_owned()],
        );
    }
    document(vec![statement])
}

fn allow(sid: &str, actions: &[&str], resource: Vec<String>) -> Statement {
    Statement {
        sid: sid.to_owned(),
        effect: Effect::Allow,
        principal: None,
        action: actions.iter().map(|a| (*a).to_owned()).collect(),
        resource,
        condition: BTreeMap::new(),
    }
}

impl Statement {
    fn when(mut self, operator: &str, key: &str, values: Vec<String>) -> Statement {
        self.condition
            .entry(operator.to_owned())
            .or_default()
            .insert(key.to_owned(), values);
        self
    }
}

/// ARNs of what the settings name, in their partition, region and account.
struct Arns<'a> {
    partition: &'static str,
    region: &'a str,
    account: &'a str,
    prefix: &'a str,
    bucket: String,
    /// Key prefix of the datastore, empty or ending in `/`.
    key_prefix: String,
}

impl<'a> Arns<'a> {
    fn new(settings: &'a Settings) -> Self {
        let (bucket, key_prefix) = split_s3(&settings.s3_root);
        Arns {
            partition: partition(&settings.region),
            region: &settings.region,
            account: settings.account(),
            prefix: &settings.name_prefix,
            bucket,
            key_prefix,
        }
    }

    fn arn(&self, service: &str, region: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{region}:{}:{resource}",
            self.partition, self.account
        )
    }

    fn state_machines(&self) -> String {
        // Also matches versions (`name:1`), as wildcards span `:`.
        self.arn(
            "states",
            self.region,
            &format!("stateMachine:{}*", self.prefix),
        )
    }

    /// Executions of Flowline's state machines, including Distributed Map child executions
    /// (`execution:<machine>/<map run>:<id>`).
    fn executions(&self) -> String {
        self.arn(
            "states",
            self.region,
            &format!("execution:{}*", self.prefix),
        )
    }

    /// Distributed Map runs (the foreach of a Flow) of Flowline's state machines.
    fn map_runs(&self) -> String {
        self.arn("states", self.region, &format!("mapRun:{}*", self.prefix))
    }

    fn job_definitions(&self) -> String {
        // Also matches revisions (`name:3`).
        self.arn(
            "batch",
            self.region,
            &format!("job-definition/{}*", self.prefix),
        )
    }

    fn jobs(&self) -> String {
        // Job ids are generated by Batch, so jobs cannot be scoped by name.
        self.arn("batch", self.region, "job/*")
    }

    fn job_queues(&self, settings: &Settings, inputs: &Inputs) -> Vec<String> {
        let mut queues: Vec<String> = std::iter::once(&settings.job_queue)
            .chain(&inputs.job_queues)
            .map(|q| {
                if q.starts_with("arn:") {
                    q.clone()
                } else {
                    self.arn("batch", self.region, &format!("job-queue/{q}"))
                }
            })
            .collect();
        dedup(&mut queues);
        queues
    }

    /// The execution events queue (`kind` "") or rule (`kind` "rule/").
    fn execution_events(&self, service: &str, kind: &str) -> String {
        self.arn(
            service,
            self.region,
            &format!(
                "{kind}{}{}",
                self.prefix,
                crate::reconcilers::execution_events::NAME_SUFFIX
            ),
        )
    }

    fn rules(&self) -> String {
        self.arn("events", self.region, &format!("rule/{}*", self.prefix))
    }

    fn bucket(&self) -> String {
        format!("arn:{}:s3:::{}", self.partition, self.bucket)
    }

    fn objects(&self) -> String {
        format!(
            "arn:{}:s3:::{}/{}*",
            self.partition, self.bucket, self.key_prefix
        )
    }

    /// `s3:ListBucket` limited to the datastore prefix, when there is one.
    fn list_datastore(&self, sid: &str) -> Statement {
        let statement = allow(sid, &["s3:ListBucket"], vec![self.bucket()]);
        if self.key_prefix.is_empty() {
            statement
        } else {
            statement.when(
                "StringLike",
                "s3:prefix",
                vec![format!("{}*", self.key_prefix)],
            )
        }
    }

    /// A secret by ARN, or by name: Secrets Manager appends six random characters to the name
    /// in the ARN.
    fn secret(&self, settings: &Settings, secret: &str) -> String {
        if secret.starts_with("arn:") {
            return secret.to_owned();
        }
        let region = settings.secrets_region.as_deref().unwrap_or(self.region);
        self.arn("secretsmanager", region, &format!("secret:{secret}-??????"))
    }

    fn role(&self, role: &str) -> String {
        if role.starts_with("arn:") {
            role.to_owned()
        } else {
            format!("arn:{}:iam::{}:role/{role}", self.partition, self.account)
        }
    }
}

/// The partition of a region: ARNs in China and GovCloud differ from the rest.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

/// What the controller calls (src/aws and src/controller), and the roles it hands to AWS.
fn controller(arns: &Arns<'_>, settings: &Settings, inputs: &Inputs) -> Vec<Statement> {
    let mut statements = vec![
        allow(
            "BatchJobDefinitions",
            &[
                "batch:RegisterJobDefinition",
                "batch:DeregisterJobDefinition",
                // Tags are set when the definition is registered.
                "batch:TagResource",
            ],
            vec![arns.job_definitions()],
        ),
        // Batch authorizes its Describe actions only on `*`.
        allow(
            "BatchDescribe",
            &[
                "batch:DescribeJobDefinitions",
                "batch:DescribeJobQueues",
                "batch:DescribeComputeEnvironments",
                "batch:DescribeJobs",
            ],
            vec!["*".into()],
        ),
        allow(
            "BatchTerminateJobs",
            &["batch:TerminateJob"],
            vec![arns.jobs()],
        ),
        allow(
            "StateMachines",
            &[
                "states:CreateStateMachine",
                "states:UpdateStateMachine",
                "states:DeleteStateMachine",
                "states:DescribeStateMachine",
                "states:ListStateMachineVersions",
                "states:PublishStateMachineVersion",
                "states:ListTagsForResource",
                "states:TagResource",
                "states:StartExecution",
                "states:ListExecutions",
            ],
            vec![arns.state_machines()],
        ),
        allow(
            "Executions",
            &[
                "states:DescribeExecution",
                "states:StopExecution",
                "states:GetExecutionHistory",
            ],
            vec![arns.executions()],
        ),
        // Foreach progress: the map run's counts and its child executions.
        allow(
            "ForeachProgress",
            &["states:DescribeMapRun", "states:ListExecutions"],
            vec![arns.map_runs()],
        ),
        // Execution status change events (--execution-events managed, the default): the queue
        // and the rule named `<prefix>execution-events`, which the leader creates, tags,
        // checks, repairs and reads, and `flowline execution-events delete` removes. Tags are
        // set at creation (sqs:TagQueue, events:TagResource) and read before anything is
        // changed or deleted.
        allow(
            "ExecutionEventsQueue",
            &[
                "sqs:CreateQueue",
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
                "sqs:SetQueueAttributes",
                "sqs:TagQueue",
                "sqs:ListQueueTags",
                "sqs:DeleteQueue",
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
            ],
            vec![arns.execution_events("sqs", "")],
        ),
        allow(
            "ExecutionEventsRule",
            &[
                "events:PutRule",
                "events:DescribeRule",
                "events:PutTargets",
                "events:ListTargetsByRule",
                "events:RemoveTargets",
                "events:DeleteRule",
                "events:TagResource",
                "events:ListTagsForResource",
            ],
            vec![arns.execution_events("events", "rule/")],
        ),
        // Or your own queue (--execution-events-queue-url), named with the prefix: read only.
        allow(
            "OwnExecutionEventsQueue",
            &["sqs:ReceiveMessage", "sqs:DeleteMessage"],
            vec![arns.arn("sqs", arns.region, &format!("{}*", arns.prefix))],
        ),
        // Each Schedule's dead-letter queue, named like its rule (with the prefix).
        allow(
            "ScheduleDeadLetterQueues",
            &[
                "sqs:CreateQueue",
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
                "sqs:SetQueueAttributes",
                "sqs:TagQueue",
                "sqs:ListQueueTags",
                "sqs:DeleteQueue",
            ],
            vec![arns.arn("sqs", arns.region, &format!("{}*", arns.prefix))],
        ),
        allow(
            "ScheduleRules",
            &[
                "events:PutRule",
                "events:DeleteRule",
                "events:DescribeRule",
                "events:EnableRule",
                "events:DisableRule",
                "events:PutTargets",
                "events:RemoveTargets",
                "events:ListTargetsByRule",
                "events:ListTagsForResource",
                "events:TagResource",
            ],
            vec![arns.rules()],
        ),
        arns.list_datastore("ListArtifacts"),
        allow("ReadArtifacts", &["s3:GetObject"], vec![arns.objects()]),
        // A resumed Run's reused artifacts are copied (CopyObject) into its own prefix.
        allow(
            "CopyReusedArtifacts",
            &["s3:PutObject"],
            vec![arns.objects()],
        ),
        allow(
            "PassStatesRole",
            &["iam:PassRole"],
            vec![arns.role(&settings.states_role)],
        )
        .when(
            "StringEquals",
            "iam:PassedToService",
            vec!["states.amazonaws.com".into()],
        ),
        allow(
            "PassEventsRole",
            &["iam:PassRole"],
            vec![arns.role(&settings.events_role)],
        )
        .when(
            "StringEquals",
            "iam:PassedToService",
            vec!["events.amazonaws.com".into()],
        ),
    ];
    if let Some(key) = kms_key(arns, settings) {
        // Reading SSE-KMS manifests, and copying a resumed Run's reused artifacts (decrypted
        // from the earlier Run's objects, encrypted again into the new Run's prefix).
        statements.push(key.statement("ArtifactsKey", &["kms:Decrypt", "kms:GenerateDataKey"]));
    }
    let job_roles = job_roles(arns, settings, inputs);
    if !job_roles.is_empty() {
        // Registering a job definition that names a role passes it; Batch hands it on to ECS.
        statements.push(allow("PassJobRoles", &["iam:PassRole"], job_roles));
    }
    let secrets = looked_up_secrets(arns, settings, inputs);
    if !secrets.is_empty() {
        // GetSecretValue only lists a JSON secret's keys; values never leave the controller.
        statements.push(allow(
            "LookUpSecrets",
            &[
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue",
            ],
            secrets,
        ));
    }
    let mut secret_roles: Vec<String> = settings
        .secrets_role
        .iter()
        .chain(&inputs.secret_roles)
        .map(|r| arns.role(r))
        .collect();
    dedup(&mut secret_roles);
    if !secret_roles.is_empty() {
        statements.push(allow(
            "AssumeSecretsRoles",
            &["sts:AssumeRole"],
            secret_roles,
        ));
    }
    statements
}

fn job_roles(arns: &Arns<'_>, settings: &Settings, inputs: &Inputs) -> Vec<String> {
    let mut roles: Vec<String> = settings
        .job_role
        .iter()
        .chain(&settings.execution_role)
        .chain(&inputs.job_roles)
        .chain(inputs.tenants.iter().map(|t| &t.execution_role))
        .map(|r| arns.role(r))
        .collect();
    dedup(&mut roles);
    roles
}

fn secrets(arns: &Arns<'_>, settings: &Settings, inputs: &Inputs) -> Vec<String> {
    let mut secrets: Vec<String> = inputs
        .secrets
        .iter()
        .map(|s| arns.secret(settings, s))
        .collect();
    dedup(&mut secrets);
    secrets
}

/// What the controller looks up: the shared secrets and every namespace's.
fn looked_up_secrets(arns: &Arns<'_>, settings: &Settings, inputs: &Inputs) -> Vec<String> {
    let mut secrets = secrets(arns, settings, inputs);
    for tenant in &inputs.tenants {
        secrets.extend(tenant_secrets(arns, settings, tenant));
    }
    dedup(&mut secrets);
    secrets
}

/// What the state machines do: run Batch jobs synchronously, run Distributed Map children, and
/// read the foreach item lists steps wrote.
fn step_functions(arns: &Arns<'_>, settings: &Settings, inputs: &Inputs) -> Vec<Statement> {
    let mut submit = vec![arns.job_definitions()];
    submit.extend(arns.job_queues(settings, inputs));
    let mut statements = vec![
        allow("SubmitBatchJobs", &["batch:SubmitJob"], submit),
        // Jobs are submitted with the Flow's tags, which Batch authorizes as tagging the job.
        allow(
            "TagSubmittedJobs",
            &["batch:TagResource"],
            vec![arns.jobs()],
        ),
        allow(
            "TerminateBatchJobs",
            &["batch:TerminateJob"],
            vec![arns.jobs()],
        ),
        // Batch authorizes DescribeJobs only on `*`.
        allow(
            "DescribeBatchJobs",
            &["batch:DescribeJobs"],
            vec!["*".into()],
        ),
        allow(
            "FollowBatchJobs",
            &["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            vec![arns.arn("events", arns.region, &format!("rule/{SYNC_BATCH_RULE}"))],
        ),
        allow(
            "StartMapChildren",
            &["states:StartExecution"],
            vec![arns.state_machines()],
        ),
        allow(
            "TrackMapChildren",
            &["states:DescribeExecution", "states:StopExecution"],
            vec![arns.executions()],
        ),
        arns.list_datastore("ListForeachItems"),
        allow("ReadForeachItems", &["s3:GetObject"], vec![arns.objects()]),
    ];
    if let Some(key) = kms_key(arns, settings) {
        statements.push(key.statement("DecryptForeachItems", &["kms:Decrypt"]));
    }
    statements
}

/// What EventBridge does for Schedules: start executions of Flowline's state machines.
fn eventbridge(arns: &Arns<'_>) -> Vec<Statement> {
    vec![allow(
        "StartScheduledExecutions",
        &["states:StartExecution"],
        vec![arns.state_machines()],
    )]
}

/// What tasks do: read and write artifacts under the datastore prefix, and read the secrets
/// they are bound to. Batch injects `secrets[]` with the execution role, so a Fargate or EC2
/// execution role needs the same secret statement.
fn job(arns: &Arns<'_>, settings: &Settings, inputs: &Inputs) -> Vec<Statement> {
    let mut statements = vec![
        arns.list_datastore("ListArtifacts"),
        allow(
            "ReadWriteArtifacts",
            // Abort: `flowline task` cancels a multipart upload whose part failed.
            &["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            vec![arns.objects()],
        ),
    ];
    if let Some(key) = kms_key(arns, settings) {
        statements.push(key.statement("EncryptArtifacts", &["kms:GenerateDataKey", "kms:Decrypt"]));
    }
    let secrets = secrets(arns, settings, inputs);
    if !secrets.is_empty() {
        statements.push(allow(
            "ReadSecrets",
            &["secretsmanager:GetSecretValue"],
            secrets,
        ));
    }
    statements
}

/// What ECS does with the execution role before the container starts: read the secrets Batch
/// injects (`secrets[].valueFrom`, on EC2 as on Fargate), pull the image from ECR, and create
/// the container's log stream in Batch's log group.
fn execution(arns: &Arns<'_>, settings: &Settings, inputs: &Inputs) -> Vec<Statement> {
    let mut statements = vec![
        // ECR authorizes GetAuthorizationToken only on `*`.
        allow(
            "AuthenticateToEcr",
            &["ecr:GetAuthorizationToken"],
            vec!["*".into()],
        ),
        allow(
            "PullImages",
            &[
                "ecr:BatchCheckLayerAvailability",
                "ecr:GetDownloadUrlForLayer",
                "ecr:BatchGetImage",
            ],
            vec![arns.arn("ecr", arns.region, "repository/*")],
        ),
        allow(
            "WriteContainerLogs",
            &["logs:CreateLogStream", "logs:PutLogEvents"],
            vec![arns.arn("logs", arns.region, "log-group:/aws/batch/job:*")],
        ),
    ];
    let secrets = secrets(arns, settings, inputs);
    if !secrets.is_empty() {
        statements.push(allow(
            "ReadInjectedSecrets",
            &["secretsmanager:GetSecretValue"],
            secrets,
        ));
    }
    statements
}

/// The KMS key of SSE-KMS artifacts, by ARN, or by alias: KMS authorizes on the key, so an
/// alias becomes a condition on the key's aliases.
enum KmsKey {
    Key(String),
    Alias { keys: String, alias: String },
}

fn kms_key(arns: &Arns<'_>, settings: &Settings) -> Option<KmsKey> {
    let key = settings.s3_kms_key_id.as_deref()?;
    // A key configured without `aws:kms` is not used.
    if settings
        .s3_server_side_encryption
        .as_deref()
        .is_some_and(|sse| sse != "aws:kms")
    {
        return None;
    }
    let alias = key
        .split_once(":alias/")
        .map(|(_, name)| format!("alias/{name}"))
        .or_else(|| key.starts_with("alias/").then(|| key.to_owned()));
    Some(match alias {
        Some(alias) => KmsKey::Alias {
            keys: arns.arn("kms", arns.region, "key/*"),
            alias,
        },
        None if key.starts_with("arn:") => KmsKey::Key(key.to_owned()),
        None => KmsKey::Key(arns.arn("kms", arns.region, &format!("key/{key}"))),
    })
}

impl KmsKey {
    fn statement(&self, sid: &str, actions: &[&str]) -> Statement {
        match self {
            KmsKey::Key(arn) => allow(sid, actions, vec![arn.clone()]),
            KmsKey::Alias { keys, alias } => allow(sid, actions, vec![keys.clone()]).when(
                "ForAnyValue:StringEquals",
                "kms:ResourceAliases",
                vec![alias.clone()],
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
