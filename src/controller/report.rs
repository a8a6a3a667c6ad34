//! What reconcilers tell people: the status subresource (written only when it changed) and
//! Kubernetes events (best effort).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use super::{Context, ReconcileError};

/// Writes `next` as the object's status unless it equals `current`.
pub async fn write_status<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    next: S,
) -> Result<Option<String>, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    patch_status(api, object, current, next, None).await
}

/// Writes `next` as the object's status unless it equals `current`, only if the object is
/// still at the resourceVersion it was read at: a write computed from a stale read (an old
/// watch cache, another writer in between) is refused with a conflict instead of overwriting
/// what was written meanwhile, and the reconcile reads again.
pub async fn write_status_guarded<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    next: S,
) -> Result<Option<String>, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    patch_status(api, object, current, next, object.resource_version()).await
}

/// The status write both share: nothing when unchanged, else a merge patch, guarded by
/// `resource_version` when given. Gives the object's resourceVersion after the write (none
/// when nothing was written), so a reconciler can tell its own write's watch event apart.
async fn patch_status<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    next: S,
    resource_version: Option<String>,
) -> Result<Option<String>, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(&next) {
        return Ok(None);
    }
    let patch = guarded_patch(resource_version, status_patch(current, &next));
    let written = api
        .patch_status(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(ReconcileError::Kube)?;
    Ok(written.resource_version())
}

/// A status merge patch with the resourceVersion precondition the API server checks.
fn guarded_patch(resource_version: Option<String>, status: serde_json::Value) -> serde_json::Value {
    match resource_version {
        Some(version) => json!({"metadata": {"resourceVersion": version}, "status": status}),
        None => json!({ "status": status }),
    }
}

/// The merge patch from `current` to `next`: `next`'s fields, plus `null` for each field that
/// `next` leaves out (an emptied list or a cleared message), which a merge patch would
/// otherwise keep.
fn status_patch<S: Serialize>(current: Option<&S>, next: &S) -> serde_json::Value {
    let mut patch = serde_json::to_value(next).unwrap_or_default();
    let before = current.and_then(|c| serde_json::to_value(c).ok());
    if let (Some(serde_json::Value::Object(before)), serde_json::Value::Object(after)) =
        (before, &mut patch)
    {
        for key in before.keys() {
            if !after.contains_key(key) {
                after.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
    patch
}

/// Records an event on the object; failing to record one never fails the reconcile.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(%error, "could not record an event");
    }
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_left_out_are_cleared() {
        let before = json!({"message": "boom", "steps": [1], "phase": "Failed"});
        let after = json!({"phase": "Running"});
        assert_eq!(
            status_patch(Some(&before), &after),
            json!({"message": null, "steps": null, "phase": "Running"})
        );
        assert_eq!(status_patch(None, &after), after);
    }

    #[test]
    fn guarded_patches_carry_the_version_they_were_computed_from() {
        let status = json!({"phase": "Running"});
        assert_eq!(
            guarded_patch(Some("42".into()), status.clone()),
            json!({"metadata": {"resourceVersion": "42"}, "status": {"phase": "Running"}})
        );
        assert_eq!(
            guarded_patch(None, status),
            json!({"status": {"phase": "Running"}})
        );
    }
}
