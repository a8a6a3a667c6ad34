//! Per-object caches are evicted when their object goes: the Context keeps state per Flow
//! (discovery cursors), per Schedule (when its rule was last checked), per Run (execution
//! histories, the running set, the execution index), per object (failure counts for backoff)
//! and per secrets identity (Secrets Manager clients by role and region). A deleted object's
//! cleanup forgets most of it, but not every object goes through a cleanup (deleted before its
//! finalizer was added, or while the controller was down), and a secrets client outlives the
//! Flow that needed it. So, every minute (`--cache-eviction-interval-seconds`), whatever no
//! live object needs any more is dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::api::{EXECUTION_ARN_ANNOTATION, Flow, Run, Schedule};
use crate::settings::Settings;

use super::{Context, RoleAndRegion, failure_key};

/// The keys under which live objects keep state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// `Kind:namespace/name` of every object (failure counts).
    pub objects: HashSet<String>,
    pub flow_uids: HashSet<String>,
    pub schedule_uids: HashSet<String>,
    /// `namespace/name` of every Run.
    pub runs: HashSet<String>,
    /// The executions Runs track (recorded or annotated).
    pub executions: HashSet<String>,
    /// The (role, region) each Flow's secrets are looked up with.
    pub secret_identities: HashSet<RoleAndRegion>,
}

impl Live {
    /// What the given objects need kept.
    pub fn of(
        flows: &[Arc<Flow>],
        runs: &[Arc<Run>],
        schedules: &[Arc<Schedule>],
        settings: &Settings,
    ) -> Live {
        let mut live = Live::default();
        for flow in flows {
            live.objects.insert(failure_key(flow.as_ref()));
            live.flow_uids.insert(flow.uid().unwrap_or_default());
            for secret in flow.spec.steps.iter().flat_map(|s| s.secrets.iter()) {
                live.secret_identities.insert((
                    secret
                        .role
                        .clone()
                        .or_else(|| settings.secrets_role.clone()),
                    secret
                        .region
                        .clone()
                        .or_else(|| settings.secrets_region.clone()),
                ));
            }
        }
        for run in runs {
            live.objects.insert(failure_key(run.as_ref()));
            live.runs.insert(format!(
                "{}/{}",
                run.namespace().unwrap_or_default(),
                run.name_any()
            ));
            live.executions.extend(
                run.status
                    .as_ref()
                    .and_then(|s| s.execution_arn.clone())
                    .into_iter()
                    .chain(run.annotations().get(EXECUTION_ARN_ANNOTATION).cloned()),
            );
        }
        for schedule in schedules {
            live.objects.insert(failure_key(schedule.as_ref()));
            live.schedule_uids
                .insert(schedule.uid().unwrap_or_default());
        }
        live
    }
}

/// Every `interval`, drops the cached state of objects that are gone and records how many
/// entries remain. Starts once the watches have their initial lists: before, every object
/// would look gone.
pub async fn evict_forever(
    ctx: Arc<Context>,
    (flows, runs, schedules): (Store<Flow>, Store<Run>, Store<Schedule>),
    interval: Duration,
) {
    super::until_ready(&flows).await;
    super::until_ready(&runs).await;
    super::until_ready(&schedules).await;
    loop {
        tokio::time::sleep(interval).await;
        let live = Live::of(
            &flows.state(),
            &runs.state(),
            &schedules.state(),
            &ctx.settings,
        );
        let evicted = ctx.evict_gone(&live);
        if evicted > 0 {
            tracing::debug!(evicted, "dropped the cached state of objects that are gone");
        }
        ctx.metrics
            .cached_entries
            .set(i64::try_from(ctx.cached_entries()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FlowSpec, RunSpec};

    fn settings() -> Settings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        Cli::parse_from(["x"]).settings
    }

    #[test]
    fn live_objects_name_every_key_their_state_is_cached_under() {
        let mut flow = Flow::new(
            "train",
            serde_json::from_value::<FlowSpec>(serde_json::json!({"steps": [
                {"name": "start", "image": "busybox", "secrets": [
                    {"id": "db", "role": "arn:aws:iam::1:role/reader", "region": "eu-west-1"},
                    {"id": "api"}
                ]}
            ]}))
            .unwrap(),
        );
        flow.metadata.namespace = Some("team".into());
        flow.metadata.uid = Some("flow-uid".into());
        let mut run = Run::new(
            "train-1",
            serde_json::from_value::<RunSpec>(serde_json::json!({"flowRef": {"name": "train"}}))
                .unwrap(),
        );
        run.metadata.namespace = Some("team".into());
        run.status = Some(crate::api::RunStatus {
            execution_arn: Some("arn:execution".into()),
            ..Default::default()
        });
        let live = Live::of(&[Arc::new(flow)], &[Arc::new(run)], &[], &settings());
        assert!(live.objects.contains("Flow:team/train"));
        assert!(live.objects.contains("Run:team/train-1"));
        assert!(live.flow_uids.contains("flow-uid"));
        assert!(live.runs.contains("team/train-1"));
        assert!(live.executions.contains("arn:execution"));
        assert!(live.secret_identities.contains(&(
            Some("arn:aws:iam::1:role/reader".to_owned()),
            Some("eu-west-1".to_owned())
        )));
        assert!(live.secret_identities.contains(&(None, None)));
        assert_eq!(
            Live::of(&[], &[], &[], &settings()),
            Live::default(),
            "nothing live: everything may go"
        );
    }
}
