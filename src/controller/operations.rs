//! How the controller runs in production: leader election, the health and metrics endpoint,
//! AWS rate limits, tenancy allow lists, and shutdown on SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use crate::reconcilers::tenancy::{
    ALLOWED_JOB_QUEUES_ANNOTATION, ALLOWED_ROLES_ANNOTATION, ALLOWED_SECRETS_ANNOTATION,
    ALLOWED_TRIGGER_BUCKETS_ANNOTATION, EXECUTION_ROLE_ANNOTATION, Policy,
};

use super::{Context, ReconcileError};

/// Production settings of the controller process (each a flag and a `FLOWLINE_*` variable).
#[derive(Debug, Clone, clap::Args)]
pub struct OperationsOptions {
    /// Run only while holding the leader Lease, so several replicas can run and one
    /// reconciles. `false` for a single replica without a Lease.
    #[arg(
        long = "leader-election",
        env = "FLOWLINE_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "FLOWLINE_LEASE_NAME",
        default_value = "flowline-controller"
    )]
    pub lease_name: String,

    /// Namespace of the leader Lease (default: `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "FLOWLINE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a Lease holds without renewal before a follower may take it (seconds).
    #[arg(long, env = "FLOWLINE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// How often the leader renews the Lease (seconds); less than the duration.
    #[arg(long, env = "FLOWLINE_LEASE_RENEW_SECONDS", default_value_t = 5)]
    pub lease_renew_seconds: u64,

    /// How often a follower checks the Lease (seconds).
    #[arg(long, env = "FLOWLINE_LEASE_RETRY_SECONDS", default_value_t = 2)]
    pub lease_retry_seconds: u64,

    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint; empty or `off` disables it.
    #[arg(long, env = "FLOWLINE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,

    /// Fraction of AWS's published API quotas the controller may use (0.8 leaves 20% to
    /// other clients of the account); 0 turns the client-side limits off.
    #[arg(long, env = "FLOWLINE_AWS_RATE_SCALE", default_value_t = crate::aws::limits::DEFAULT_SCALE)]
    pub aws_rate_scale: f64,

    /// IAM roles any Flow may use (comma-separated ARNs or names, `*` suffix allowed); unset
    /// allows all. Namespaces narrow it with the annotation `flowline.io/allowed-roles`.
    #[arg(long, env = "FLOWLINE_ALLOWED_ROLES")]
    pub allowed_roles: Option<String>,

    /// Batch job queues any Flow may use (comma-separated names or ARNs, `*` suffix allowed);
    /// unset allows all. Namespaces narrow it with `flowline.io/allowed-job-queues`.
    #[arg(long, env = "FLOWLINE_ALLOWED_JOB_QUEUES")]
    pub allowed_job_queues: Option<String>,

    /// Secrets Manager secrets any Flow may bind (comma-separated names or ARNs, `*` suffix
    /// allowed, e.g. `team-*`); unset allows all. Namespaces narrow it with
    /// `flowline.io/allowed-secrets`.
    #[arg(long, env = "FLOWLINE_ALLOWED_SECRETS")]
    pub allowed_secrets: Option<String>,

    /// S3 buckets (`bucket`, or `bucket/prefix*`) any Schedule may trigger on; unset allows
    /// all. Namespaces narrow it with `flowline.io/allowed-trigger-buckets`.
    #[arg(long, env = "FLOWLINE_ALLOWED_TRIGGER_BUCKETS")]
    pub allowed_trigger_buckets: Option<String>,
}

/// Errors of the options, found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("FLOWLINE_HTTP_ADDR {0:?} is not an address (host:port), empty or off")]
    HttpAddr(String),
}

impl OperationsOptions {
    /// The endpoint's address, `None` when disabled.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, OptionsError> {
        let text = self.http_addr.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| OptionsError::HttpAddr(text.to_owned()))
    }

    /// The Lease's namespace: the flag, else the pod's namespace, else `default`.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| "default".to_owned())
    }
}

/// A future every part of the controller can await: it resolves on the first SIGTERM or
/// Ctrl-C. A second signal exits at once, without waiting for reconciles to finish.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

pub fn shutdown_signal() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        info!("shutdown requested: finishing the reconciles in flight (signal again to exit now)");
        let _ = tx.send(());
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        warn!("second signal: exiting without waiting");
        std::process::exit(1);
    });
    Ok(rx.map(|_| ()).boxed().shared())
}

/// The allow lists in force for a namespace and its default execution role: the
/// controller's lists, and the namespace's annotations (from the watch cache; read from the API when the cache does not have it yet).
pub async fn tenancy_policy(ctx: &Context, namespace: &str) -> Result<Policy, ReconcileError> {
    let annotations = match ctx.namespaces.get(&ObjectRef::new(namespace)) {
        Some(cached) => cached.metadata.annotations.clone(),
        None => Api::<Namespace>::all(ctx.kube.clone())
            .get_metadata_opt(namespace)
            .await
            .map_err(ReconcileError::Kube)?
            .and_then(|n| n.metadata.annotations),
    }
    .unwrap_or_default();
    Ok(Policy::new(
        ctx.allowed_roles.as_deref(),
        ctx.allowed_job_queues.as_deref(),
        annotations
            .get(ALLOWED_ROLES_ANNOTATION)
            .map(String::as_str),
        annotations
            .get(ALLOWED_JOB_QUEUES_ANNOTATION)
            .map(String::as_str),
    )
    .with_secrets(
        ctx.allowed_secrets.as_deref(),
        annotations
            .get(ALLOWED_SECRETS_ANNOTATION)
            .map(String::as_str),
    )
    .with_triggers(
        ctx.allowed_trigger_buckets.as_deref(),
        annotations
            .get(ALLOWED_TRIGGER_BUCKETS_ANNOTATION)
            .map(String::as_str),
    )
    .with_execution_role(
        annotations
            .get(EXECUTION_ROLE_ANNOTATION)
            .map(String::as_str),
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: OperationsOptions,
    }

    #[test]
    fn defaults_and_overrides_parse() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(cli.options.leader_election);
        assert_eq!(cli.options.lease_name, "flowline-controller");
        assert_eq!(
            cli.options.http_addr().unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        let cli =
            Cli::try_parse_from(["x", "--leader-election", "false", "--http-addr", "off"]).unwrap();
        assert!(!cli.options.leader_election);
        assert_eq!(cli.options.http_addr().unwrap(), None);
        let cli = Cli::try_parse_from(["x", "--http-addr", "nonsense"]).unwrap();
        assert!(cli.options.http_addr().is_err());
    }
}
