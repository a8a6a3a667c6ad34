//! The generated policies name the configured account, region, prefix, bucket and roles, and
//! grant `*` only where AWS authorizes nothing narrower.

use super::*;

fn settings() -> Settings {
    Settings {
        s3_root: "s3://ml-artifacts/flowline/data".into(),
        job_queue: "gpu".into(),
        job_role: Some("arn:aws:iam::210987654321:role/flowline-job".into()),
        execution_role: None,
        states_role: "arn:aws:iam::210987654321:role/flowline-states".into(),
        events_role: "flowline-events".into(),
        name_prefix: "fl-".into(),
        s3_kms_key_id: Some("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
        s3_server_side_encryption: Some("aws:kms".into()),
        secrets_role: Some("arn:aws:iam::999999999999:role/secrets-reader".into()),
        region: "eu-west-1".into(),
        account: Some("210987654321".into()),
        ..Settings::default()
    }
}

fn inputs() -> Inputs {
    Inputs {
        job_queues: vec![
            "cpu".into(),
            "arn:aws:batch:eu-west-1:210987654321:job-queue/spot".into(),
            "gpu".into(),
        ],
        secrets: vec![
            "db-password".into(),
            "arn:aws:secretsmanager:eu-west-1:210987654321:secret:api-key-AbCdEf".into(),
        ],
        job_roles: vec!["team-a-job".into()],
        secret_roles: vec!["arn:aws:iam::888888888888:role/vault".into()],
        tenants: Vec::new(),
    }
}

fn role(role: Role) -> RolePolicies {
    policies(&settings(), &inputs(), &[role])
        .into_iter()
        .next()
        .unwrap()
}

fn statement<'a>(policies: &'a RolePolicies, sid: &str) -> &'a Statement {
    policies
        .permissions
        .statement
        .iter()
        .find(|s| s.sid == sid)
        .unwrap_or_else(|| panic!("no statement {sid}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn controller_scopes_its_resources_by_prefix_account_and_region() {
    let controller = role(Role::Controller);
    assert!(controller.trust.is_none());
    assert_eq!(
        statement(&controller, "StateMachines").resource,
        ["arn:aws:states:eu-west-1:210987654321:stateMachine:fl-*"]
    );
    assert_eq!(
        statement(&controller, "Executions").resource,
        ["arn:aws:states:eu-west-1:210987654321:execution:fl-*"]
    );
    assert_eq!(
        statement(&controller, "BatchJobDefinitions").resource,
        ["arn:aws:batch:eu-west-1:210987654321:job-definition/fl-*"]
    );
    assert_eq!(
        statement(&controller, "ScheduleRules").resource,
        ["arn:aws:events:eu-west-1:210987654321:rule/fl-*"]
    );
    assert!(
        statement(&controller, "StateMachines")
            .action
            .contains(&"states:PublishStateMachineVersion".to_owned())
    );
}

#[test]
fn controller_reads_artifacts_only_under_the_datastore_prefix() {
    let controller = role(Role::Controller);
    let list = statement(&controller, "ListArtifacts");
    assert_eq!(list.resource, ["arn:aws:s3:::ml-artifacts"]);
    assert_eq!(
        list.condition["StringLike"]["s3:prefix"],
        ["flowline/data/*"]
    );
    assert_eq!(
        statement(&controller, "ReadArtifacts").resource,
        ["arn:aws:s3:::ml-artifacts/flowline/data/*"]
    );
}

#[test]
fn controller_passes_only_the_configured_roles_to_their_services() {
    let controller = role(Role::Controller);
    let states = statement(&controller, "PassStatesRole");
    assert_eq!(
        states.resource,
        ["arn:aws:iam::210987654321:role/flowline-states"]
    );
    assert_eq!(
        states.condition["StringEquals"]["iam:PassedToService"],
        ["states.amazonaws.com"]
    );
    // A role given by name becomes an ARN in the account.
    assert_eq!(
        statement(&controller, "PassEventsRole").resource,
        ["arn:aws:iam::210987654321:role/flowline-events"]
    );
    assert_eq!(
        statement(&controller, "PassJobRoles").resource,
        [
            "arn:aws:iam::210987654321:role/flowline-job",
            "arn:aws:iam::210987654321:role/team-a-job"
        ]
    );
    assert_eq!(
        statement(&controller, "AssumeSecretsRoles").resource,
        [
            "arn:aws:iam::999999999999:role/secrets-reader",
            "arn:aws:iam::888888888888:role/vault"
        ]
    );
}

#[test]
fn secrets_by_name_match_the_suffix_secrets_manager_adds() {
    let controller = role(Role::Controller);
    assert_eq!(
        statement(&controller, "LookUpSecrets").resource,
        [
            "arn:aws:secretsmanager:eu-west-1:210987654321:secret:db-password-??????",
            "arn:aws:secretsmanager:eu-west-1:210987654321:secret:api-key-AbCdEf"
        ]
    );
    let job = role(Role::Job);
    assert_eq!(
        statement(&job, "ReadSecrets").action,
        ["secretsmanager:GetSecretValue"]
    );
}

#[test]
fn without_secrets_or_optional_roles_nothing_is_granted_for_them() {
    let settings = Settings::default();
    let all = policies(&settings, &Inputs::default(), &Role::ALL);
    let sids: Vec<&str> = all
        .iter()
        .flat_map(|p| p.permissions.statement.iter().map(|s| s.sid.as_str()))
        .collect();
    for absent in [
        "LookUpSecrets",
        "ReadSecrets",
        "ReadInjectedSecrets",
        "AssumeSecretsRoles",
        "PassJobRoles",
        "EncryptArtifacts",
        "DecryptForeachItems",
    ] {
        assert!(!sids.contains(&absent), "{absent} granted");
    }
}

#[test]
fn wildcard_resources_only_for_actions_aws_does_not_scope() {
    let unscoped = [
        "batch:DescribeJobDefinitions",
        "batch:DescribeJobQueues",
        "batch:DescribeComputeEnvironments",
        "batch:DescribeJobs",
        "ecr:GetAuthorizationToken",
    ];
    for policies in policies(&settings(), &inputs(), &Role::ALL) {
        for statement in &policies.permissions.statement {
            if statement.resource.iter().any(|r| r == "*") {
                assert_eq!(statement.resource, ["*"], "{}", statement.sid);
                for action in &statement.action {
                    assert!(
                        unscoped.contains(&action.as_str()),
                        "{action} on * in {}",
                        statement.sid
                    );
                }
            }
        }
    }
}

#[test]
fn step_functions_role_submits_to_the_queues_and_follows_jobs() {
    let sfn = role(Role::StepFunctions);
    assert_eq!(
        sfn.role_arn.as_deref(),
        Some("arn:aws:iam::210987654321:role/flowline-states")
    );
    assert_eq!(
        statement(&sfn, "SubmitBatchJobs").resource,
        strings(&[
            "arn:aws:batch:eu-west-1:210987654321:job-definition/fl-*",
            "arn:aws:batch:eu-west-1:210987654321:job-queue/gpu",
            "arn:aws:batch:eu-west-1:210987654321:job-queue/cpu",
            "arn:aws:batch:eu-west-1:210987654321:job-queue/spot",
        ])
    );
    assert_eq!(
        statement(&sfn, "FollowBatchJobs").resource,
        ["arn:aws:events:eu-west-1:210987654321:rule/StepFunctionsGetEventsForBatchJobsRule"]
    );
    assert_eq!(
        statement(&sfn, "TrackMapChildren").resource,
        ["arn:aws:states:eu-west-1:210987654321:execution:fl-*"]
    );
    assert_eq!(
        statement(&sfn, "DecryptForeachItems").resource,
        ["arn:aws:kms:eu-west-1:210987654321:key/1234abcd-12ab-34cd-56ef-1234567890ab"]
    );
    let trust = sfn.trust.unwrap();
    let principal = trust.statement[0].principal.as_ref().unwrap();
    assert_eq!(principal.service, "states.amazonaws.com");
    assert_eq!(
        trust.statement[0].condition["StringEquals"]["aws:SourceAccount"],
        ["210987654321"]
    );
}

#[test]
fn eventbridge_role_only_starts_flowline_state_machines() {
    let events = role(Role::Eventbridge);
    assert_eq!(events.permissions.statement.len(), 1);
    let start = &events.permissions.statement[0];
    assert_eq!(start.action, ["states:StartExecution"]);
    assert_eq!(
        start.resource,
        ["arn:aws:states:eu-west-1:210987654321:stateMachine:fl-*"]
    );
    let trust = events.trust.unwrap();
    assert_eq!(
        trust.statement[0].principal.as_ref().unwrap().service,
        "events.amazonaws.com"
    );
}

#[test]
fn job_role_reads_and_writes_the_datastore_with_its_kms_key() {
    let job = role(Role::Job);
    assert_eq!(
        statement(&job, "ReadWriteArtifacts").resource,
        ["arn:aws:s3:::ml-artifacts/flowline/data/*"]
    );
    assert_eq!(
        statement(&job, "EncryptArtifacts").action,
        ["kms:GenerateDataKey", "kms:Decrypt"]
    );
    assert_eq!(
        job.trust.unwrap().statement[0]
            .principal
            .as_ref()
            .unwrap()
            .service,
        "ecs-tasks.amazonaws.com"
    );
}

#[test]
fn kms_alias_becomes_a_condition_on_the_key() {
    let settings = Settings {
        s3_kms_key_id: Some("alias/flowline".into()),
        ..settings()
    };
    let job = &policies(&settings, &inputs(), &[Role::Job])[0];
    let kms = statement(job, "EncryptArtifacts");
    assert_eq!(kms.resource, ["arn:aws:kms:eu-west-1:210987654321:key/*"]);
    assert_eq!(
        kms.condition["ForAnyValue:StringEquals"]["kms:ResourceAliases"],
        ["alias/flowline"]
    );
}

#[test]
fn bucket_root_and_other_partitions() {
    let settings = Settings {
        s3_root: "s3://bucket".into(),
        region: "cn-north-1".into(),
        ..settings()
    };
    let job = &policies(&settings, &Inputs::default(), &[Role::Job])[0];
    let list = statement(job, "ListArtifacts");
    assert_eq!(list.resource, ["arn:aws-cn:s3:::bucket"]);
    assert!(list.condition.is_empty());
    assert_eq!(
        statement(job, "ReadWriteArtifacts").resource,
        ["arn:aws-cn:s3:::bucket/*"]
    );
}

#[test]
fn execution_role_reads_the_injected_secrets_pulls_images_and_writes_logs() {
    let execution = role(Role::Execution);
    assert_eq!(
        statement(&execution, "ReadInjectedSecrets").resource,
        [
            "arn:aws:secretsmanager:eu-west-1:210987654321:secret:db-password-??????",
            "arn:aws:secretsmanager:eu-west-1:210987654321:secret:api-key-AbCdEf"
        ]
    );
    assert_eq!(
        statement(&execution, "PullImages").resource,
        ["arn:aws:ecr:eu-west-1:210987654321:repository/*"]
    );
    assert_eq!(
        statement(&execution, "WriteContainerLogs").resource,
        ["arn:aws:logs:eu-west-1:210987654321:log-group:/aws/batch/job:*"]
    );
    let trust = execution.trust.expect("ECS assumes the execution role");
    assert_eq!(
        trust.statement[0]
            .principal
            .as_ref()
            .map(|p| p.service.as_str()),
        Some("ecs-tasks.amazonaws.com")
    );
}

#[test]
fn each_namespace_execution_role_reads_only_its_namespace_secrets() {
    let inputs = Inputs {
        tenants: vec![
            Tenant {
                namespace: "team-a".into(),
                execution_role: "team-a-execution".into(),
                secrets: Vec::new(),
            },
            Tenant {
                namespace: "team-b".into(),
                execution_role: "arn:aws:iam::210987654321:role/team-b-execution".into(),
                secrets: vec!["shared/b-*".into(), "team-b-db".into()],
            },
        ],
        ..inputs()
    };
    let all = policies(&settings(), &inputs, &[Role::Execution]);
    assert_eq!(
        all.len(),
        3,
        "the shared execution role, then one per namespace"
    );
    assert_eq!(all[0].role, Role::Execution);
    assert_eq!(all[0].namespace, None);
    let team_a = &all[1];
    assert_eq!(team_a.role, Role::NamespaceExecution);
    assert_eq!(team_a.namespace.as_deref(), Some("team-a"));
    assert_eq!(
        team_a.role_arn.as_deref(),
        Some("arn:aws:iam::210987654321:role/team-a-execution")
    );
    assert_eq!(
        statement(team_a, "ReadNamespaceSecrets").resource,
        strings(&["arn:aws:secretsmanager:eu-west-1:210987654321:secret:team-a/*"])
    );
    // The shared secrets are not the namespace's.
    assert!(
        !team_a
            .permissions
            .statement
            .iter()
            .any(|s| s.sid == "ReadInjectedSecrets")
    );
    statement(team_a, "PullImages");
    assert_eq!(
        statement(&all[2], "ReadNamespaceSecrets").resource,
        strings(&[
            "arn:aws:secretsmanager:eu-west-1:210987654321:secret:shared/b-*",
            "arn:aws:secretsmanager:eu-west-1:210987654321:secret:team-b-db-??????",
        ])
    );
    // Only the namespace roles, when asked for them alone.
    let only = policies(&settings(), &inputs, &[Role::NamespaceExecution]);
    assert_eq!(only.len(), 2);
    // The controller passes them to Batch and looks their secrets up.
    let controller = policies(&settings(), &inputs, &[Role::Controller]);
    let passed = &statement(&controller[0], "PassJobRoles").resource;
    assert!(passed.contains(&"arn:aws:iam::210987654321:role/team-a-execution".to_owned()));
    let looked_up = &statement(&controller[0], "LookUpSecrets").resource;
    assert!(
        looked_up
            .contains(&"arn:aws:secretsmanager:eu-west-1:210987654321:secret:team-a/*".to_owned())
    );
}

#[test]
fn controller_manages_exactly_the_execution_events_queue_and_rule() {
    let controller = role(Role::Controller);
    let queue = statement(&controller, "ExecutionEventsQueue");
    assert_eq!(
        queue.resource,
        ["arn:aws:sqs:eu-west-1:210987654321:fl-execution-events"]
    );
    for action in [
        "sqs:CreateQueue",
        "sqs:TagQueue",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "sqs:SetQueueAttributes",
        "sqs:ListQueueTags",
        "sqs:DeleteQueue",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
    ] {
        assert!(queue.action.iter().any(|a| a == action), "{action}");
    }
    assert!(!queue.action.iter().any(|a| a == "sqs:SendMessage"));
    let rule = statement(&controller, "ExecutionEventsRule");
    assert_eq!(
        rule.resource,
        ["arn:aws:events:eu-west-1:210987654321:rule/fl-execution-events"]
    );
    assert_eq!(
        rule.action,
        strings(&[
            "events:PutRule",
            "events:DescribeRule",
            "events:PutTargets",
            "events:ListTargetsByRule",
            "events:RemoveTargets",
            "events:DeleteRule",
            "events:TagResource",
            "events:ListTagsForResource",
        ])
    );
    // A queue of one's own (--execution-events-queue-url) is only read.
    assert_eq!(
        statement(&controller, "OwnExecutionEventsQueue").action,
        strings(&["sqs:ReceiveMessage", "sqs:DeleteMessage"])
    );
}
