//! Deleting an object whose AWS resources AWS refuses to remove (AccessDenied on
//! DeleteStateMachine, StopExecution, RemoveTargets…): the finalizer stays, so nothing is
//! orphaned silently, and a person is told what is missing — a Warning event and a `Stalled`
//! condition that quote AWS's refusal, which names the permission. The annotation
//! `flowline.io/skip-cleanup: "true"` releases the finalizer without cleanup, leaving the
//! AWS resources in place, for an admin who cannot or will not grant the permission.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::SKIP_CLEANUP_ANNOTATION;
use crate::aws::error::ErrorClass;
use crate::reconcilers::conditions::{Health, set_health};

use super::report::{now, publish};
use super::{Context, ReconcileError};

/// Whether the object asks to be released without cleanup.
pub fn skips_cleanup<K: Resource>(object: &K) -> bool {
    object
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// Runs `cleanup` for a deleted object unless it asks to skip it, and reports a cleanup AWS
/// refuses. An error keeps the finalizer (the delete waits, retried with backoff).
pub async fn guarded<K, F>(
    object: &K,
    api: &Api<K>,
    ctx: &Context,
    cleanup: F,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    F: std::future::Future<Output = Result<Action, ReconcileError>>,
{
    if skips_cleanup(object) {
        let note = format!(
            "finalizer released without cleanup ({SKIP_CLEANUP_ANNOTATION}): the AWS resources this {} made are left in place",
            K::kind(&())
        );
        warn!(object = %object.name_any(), "{note}");
        publish(
            ctx,
            object,
            EventType::Warning,
            "CleanupSkipped",
            &note,
            "Delete",
        )
        .await;
        return Ok(Action::await_change());
    }
    match cleanup.await {
        Err(ReconcileError::Aws(error)) if error.class == ErrorClass::Terminal => {
            let message = format!(
                "AWS refused the cleanup: {error}. Grant the controller that permission, or set the annotation {SKIP_CLEANUP_ANNOTATION}=true to remove the finalizer and leave the AWS resources in place"
            );
            publish(
                ctx,
                object,
                EventType::Warning,
                "CleanupFailed",
                &message,
                "Delete",
            )
            .await;
            report_stalled(api, object, "CleanupFailed", &message).await;
            Err(ReconcileError::Aws(error))
        }
        other => other,
    }
}

/// Sets the object's conditions to Stalled, best effort: the event already told.
async fn report_stalled<K>(api: &Api<K>, object: &K, reason: &str, message: &str)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let value = serde_json::to_value(object).unwrap_or_default();
    let mut conditions: Vec<Condition> =
        serde_json::from_value(value["status"]["conditions"].clone()).unwrap_or_default();
    let generation = object.meta().generation;
    set_health(
        &mut conditions,
        Health::Stalled { reason, message },
        generation,
        &now(),
    );
    let patch = json!({"status": {"conditions": conditions}});
    if let Err(error) = api
        .patch_status(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        warn!(%error, "could not report the refused cleanup in the status");
    }
}
