//! AWS Batch adapter: turns compiled job definitions into SDK requests. Writes only; each is
//! idempotent by name (a job definition's name carries its content hash).

use aws_sdk_batch::Client;
use aws_sdk_batch::types as sdk;

use crate::compile::job_definition::{
    ContainerProperties, JobDefinition, LinuxParameters, RetryStrategy,
};

use super::error::AwsError;
use super::limits::{Operation, call};

/// Registers a job definition and returns the ARN of the new revision.
pub async fn register_job_definition(
    client: &Client,
    definition: &JobDefinition,
) -> Result<String, AwsError> {
    let kind = if definition.kind == "multinode" {
        sdk::JobDefinitionType::Multinode
    } else {
        sdk::JobDefinitionType::Container
    };
    let mut request = client
        .register_job_definition()
        .job_definition_name(&definition.job_definition_name)
        .r#type(kind)
        .propagate_tags(definition.propagate_tags)
        .set_tags(Some(definition.tags.clone().into_iter().collect()))
        .set_platform_capabilities(Some(
            definition
                .platform_capabilities
                .iter()
                .map(|p| sdk::PlatformCapability::from(p.as_str()))
                .collect(),
        ))
        .set_container_properties(
            definition
                .container_properties
                .as_ref()
                .map(container)
                .transpose()?,
        )
        .set_retry_strategy(definition.retry_strategy.as_ref().map(retry).transpose()?);
    if let Some(timeout) = &definition.timeout {
        request = request.timeout(
            sdk::JobTimeout::builder()
                .attempt_duration_seconds(timeout.attempt_duration_seconds as i32)
                .build(),
        );
    }
    if let Some(nodes) = &definition.node_properties {
        let ranges = nodes
            .node_range_properties
            .iter()
            .map(|range| {
                let range = sdk::NodeRangeProperty::builder()
                    .target_nodes(&range.target_nodes)
                    .container(container(&range.container)?)
                    .build();
                Ok(range)
            })
            .collect::<Result<Vec<_>, AwsError>>()?;
        request = request.node_properties(
            sdk::NodeProperties::builder()
                .num_nodes(nodes.num_nodes)
                .main_node(nodes.main_node)
                .set_node_range_properties(Some(ranges))
                .build(),
        );
    }
    let output = call(Operation::RegisterJobDefinition, request.send()).await?;
    Ok(output.job_definition_arn().unwrap_or_default().to_owned())
}

fn container(properties: &ContainerProperties) -> Result<sdk::ContainerProperties, AwsError> {
    Ok(sdk::ContainerProperties::builder()
        .image(&properties.image)
        .set_command((!properties.command.is_empty()).then(|| properties.command.clone()))
        .set_job_role_arn(properties.job_role_arn.clone())
        .set_execution_role_arn(properties.execution_role_arn.clone())
        .set_resource_requirements(Some(
            properties
                .resource_requirements
                .iter()
                .map(|r| {
                    sdk::ResourceRequirement::builder()
                        .r#type(sdk::ResourceType::from(r.kind.as_str()))
                        .value(&r.value)
                        .build()
                })
                .collect(),
        ))
        .set_environment(Some(
            properties
                .environment
                .iter()
                .map(|kv| {
                    sdk::KeyValuePair::builder()
                        .name(&kv.name)
                        .value(&kv.value)
                        .build()
                })
                .collect(),
        ))
        .set_secrets(Some(
            properties
                .secrets
                .iter()
                .map(|s| {
                    sdk::Secret::builder()
                        .name(&s.name)
                        .value_from(&s.value_from)
                        .build()
                })
                .collect(),
        ))
        .set_linux_parameters(
            properties
                .linux_parameters
                .as_ref()
                .map(linux)
                .transpose()?,
        )
        .set_fargate_platform_configuration(properties.fargate_platform_configuration.as_ref().map(
            |f| {
                sdk::FargatePlatformConfiguration::builder()
                    .platform_version(&f.platform_version)
                    .build()
            },
        ))
        .set_network_configuration(properties.network_configuration.as_ref().map(|n| {
            sdk::NetworkConfiguration::builder()
                .assign_public_ip(sdk::AssignPublicIp::from(n.assign_public_ip.as_str()))
                .build()
        }))
        .build())
}

fn linux(parameters: &LinuxParameters) -> Result<sdk::LinuxParameters, AwsError> {
    Ok(sdk::LinuxParameters::builder()
        .set_shared_memory_size(parameters.shared_memory_size)
        .set_max_swap(parameters.max_swap)
        .set_swappiness(parameters.swappiness)
        .set_tmpfs(Some(
            parameters
                .tmpfs
                .iter()
                .map(|t| {
                    sdk::Tmpfs::builder()
                        .container_path(&t.container_path)
                        .size(t.size)
                        .set_mount_options(Some(t.mount_options.clone()))
                        .build()
                })
                .collect(),
        ))
        .set_devices(Some(
            parameters
                .devices
                .iter()
                .map(|d| {
                    sdk::Device::builder()
                        .host_path(&d.host_path)
                        .container_path(&d.container_path)
                        .set_permissions(Some(
                            d.permissions
                                .iter()
                                .map(|p| sdk::DeviceCgroupPermission::from(p.as_str()))
                                .collect(),
                        ))
                        .build()
                })
                .collect(),
        ))
        .build())
}

fn retry(strategy: &RetryStrategy) -> Result<sdk::RetryStrategy, AwsError> {
    Ok(sdk::RetryStrategy::builder()
        .attempts(strategy.attempts)
        .set_evaluate_on_exit(Some(
            strategy
                .evaluate_on_exit
                .iter()
                .map(|rule| {
                    sdk::EvaluateOnExit::builder()
                        .set_on_exit_code(rule.on_exit_code.clone())
                        .set_on_reason(rule.on_reason.clone())
                        .set_on_status_reason(rule.on_status_reason.clone())
                        .action(sdk::RetryAction::from(rule.action.as_str()))
                        .build()
                })
                .collect(),
        ))
        .build())
}

/// An ACTIVE job definition revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRevision {
    pub name: String,
    pub arn: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// The ACTIVE revisions among the given job definition ARNs (up to 100 per call).
pub async fn active_revisions_by_arn(
    client: &Client,
    arns: &[String],
) -> Result<Vec<ActiveRevision>, AwsError> {
    let mut found = Vec::new();
    for chunk in arns.chunks(100) {
        let output = call(
            Operation::DescribeJobDefinitions,
            client
                .describe_job_definitions()
                .set_job_definitions(Some(chunk.to_vec()))
                .send(),
        )
        .await?;
        found.extend(active(output.job_definitions()));
    }
    Ok(found)
}

/// The ACTIVE revisions of one job definition name.
pub async fn active_revisions_by_name(
    client: &Client,
    name: &str,
) -> Result<Vec<ActiveRevision>, AwsError> {
    let output = call(
        Operation::DescribeJobDefinitions,
        client
            .describe_job_definitions()
            .job_definition_name(name)
            .status("ACTIVE")
            .send(),
    )
    .await?;
    Ok(active(output.job_definitions()))
}

fn active(definitions: &[sdk::JobDefinition]) -> Vec<ActiveRevision> {
    definitions
        .iter()
        .filter(|d| d.status() == Some("ACTIVE"))
        .filter_map(|d| {
            Some(ActiveRevision {
                name: d.job_definition_name()?.to_owned(),
                arn: d.job_definition_arn()?.to_owned(),
                tags: d.tags().cloned().unwrap_or_default().into_iter().collect(),
            })
        })
        .collect()
}

/// Deregisters a revision; one already gone counts as deregistered.
pub async fn deregister(client: &Client, arn: &str) -> Result<(), AwsError> {
    match call(
        Operation::DeregisterJobDefinition,
        client
            .deregister_job_definition()
            .job_definition(arn)
            .send(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(error) => {
            if error.message.contains("does not exist") || error.message.contains("not found") {
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

/// The platforms (`EC2` or `FARGATE`) of the compute environments of each found job queue,
/// keyed by the name or ARN the caller gave. A queue not found is left out; a queue whose
/// environments could not be described maps to an empty list.
pub async fn queue_platforms(
    client: &Client,
    queues: &[String],
) -> Result<std::collections::BTreeMap<String, Vec<String>>, AwsError> {
    let mut out = std::collections::BTreeMap::new();
    if queues.is_empty() {
        return Ok(out);
    }
    let output = call(
        Operation::DescribeJobQueues,
        client
            .describe_job_queues()
            .set_job_queues(Some(queues.to_vec()))
            .send(),
    )
    .await?;
    let mut environments: Vec<String> = output
        .job_queues()
        .iter()
        .flat_map(|q| q.compute_environment_order())
        .filter_map(|order| order.compute_environment().map(ToOwned::to_owned))
        .collect();
    environments.sort();
    environments.dedup();
    let mut platform_of = std::collections::BTreeMap::new();
    if !environments.is_empty() {
        let described = call(
            Operation::DescribeComputeEnvironments,
            client
                .describe_compute_environments()
                .set_compute_environments(Some(environments))
                .send(),
        )
        .await?;
        for environment in described.compute_environments() {
            // An unmanaged environment is EC2 instances; a managed one says in its type.
            let platform = match environment.compute_resources().and_then(|r| r.r#type()) {
                Some(sdk::CrType::Fargate | sdk::CrType::FargateSpot) => "FARGATE",
                _ => "EC2",
            };
            for key in [
                environment.compute_environment_arn(),
                environment.compute_environment_name(),
            ]
            .into_iter()
            .flatten()
            {
                platform_of.insert(key.to_owned(), platform.to_owned());
            }
        }
    }
    for queue in output.job_queues() {
        let mut platforms: Vec<String> = queue
            .compute_environment_order()
            .iter()
            .filter_map(|order| {
                order
                    .compute_environment()
                    .and_then(|name| platform_of.get(name).cloned())
            })
            .collect();
        platforms.sort();
        platforms.dedup();
        for wanted in queues {
            if queue.job_queue_name() == Some(wanted.as_str())
                || queue.job_queue_arn() == Some(wanted.as_str())
            {
                out.insert(wanted.clone(), platforms.clone());
            }
        }
    }
    Ok(out)
}

/// Terminates a job (running or not yet started); a finished one is left as it is.
pub async fn terminate_job(client: &Client, job_id: &str, reason: &str) -> Result<(), AwsError> {
    call(
        Operation::TerminateJob,
        client.terminate_job().job_id(job_id).reason(reason).send(),
    )
    .await?;
    Ok(())
}

/// A job's status and when it was created (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub id: String,
    pub status: String,
    pub created_at: Option<i64>,
}

/// Describes jobs, up to 100 per call.
pub async fn describe_jobs(client: &Client, ids: &[String]) -> Result<Vec<JobState>, AwsError> {
    let mut states = Vec::new();
    for chunk in ids.chunks(100) {
        let output = call(
            Operation::DescribeJobs,
            client.describe_jobs().set_jobs(Some(chunk.to_vec())).send(),
        )
        .await?;
        states.extend(output.jobs().iter().map(|job| {
            JobState {
                id: job.job_id().unwrap_or_default().to_owned(),
                status: job
                    .status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                created_at: job.created_at(),
            }
        }));
    }
    Ok(states)
}
