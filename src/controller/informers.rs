//! The watch caches the controllers read from, kept small for a platform's scale (thousands of
//! Flows, tens of thousands of finished Runs):
//!
//! - what enters a cache is trimmed first: `metadata.managedFields` and kubectl's
//!   last-applied annotation are bookkeeping of the API server and kubectl that no reconcile
//!   reads, and they are often the largest part of an object;
//! - Runs are watched once: the Run controller and the Flow controller (which a finished Run
//!   wakes) read one shared cache instead of listing and holding every Run twice.

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tracing::warn;

/// kubectl's copy of the last applied manifest (`kubectl apply` without server-side apply).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Objects a slow subscriber may fall behind the shared watch before the watch waits for it.
const SHARED_BUFFER: usize = 1024;

/// Removes what no reconcile reads from an object about to enter a cache.
pub fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A cache of `api`'s objects, trimmed, with the stream of changed objects a controller is
/// driven by (`Controller::for_stream`).
pub fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// One trimmed cache of `api`'s objects shared by several controllers: the cache, one
/// subscription per controller, and the watch itself, which must be driven (spawned) for the
/// subscriptions to receive anything. Subscribers see applied objects (a deletion that
/// waits on a finalizer is one); they do not see an object's final removal.
pub fn shared<K>(
    api: Api<K>,
    config: watcher::Config,
    subscribers: usize,
) -> (
    Store<K>,
    Vec<ReflectHandle<K>>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
    let handles = (0..subscribers)
        .filter_map(|_| writer.subscribe())
        .collect();
    let kind = K::kind(&Default::default()).into_owned();
    let watch = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect_shared(writer)
        .for_each(move |event| {
            if let Err(error) = event {
                warn!(%kind, %error, "watch failed; retrying");
            }
            futures::future::ready(())
        });
    (reader, handles, watch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Run;

    #[test]
    fn trimming_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "apiVersion": "flowline.io/v1alpha1", "kind": "Run",
            "metadata": {
                "name": "r", "namespace": "n", "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{}", "flowline.io/execution-event": "SUCCEEDED"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                "finalizers": ["flowline.io/cleanup"]
            },
            "spec": {"flowRef": {"name": "f"}},
            "status": {"phase": "Succeeded"}
        }))
        .unwrap();
        trim(&mut run);
        assert!(run.metadata.managed_fields.is_none());
        let annotations = run.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["flowline.io/execution-event"], "SUCCEEDED");
        assert_eq!(run.metadata.labels.unwrap()["a"], "b");
        assert_eq!(run.metadata.finalizers.unwrap(), ["flowline.io/cleanup"]);
        assert_eq!(run.spec.flow_ref.name, "f");
        assert!(run.status.is_some());
    }

    #[test]
    fn trimming_removes_an_annotation_map_left_empty() {
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "apiVersion": "flowline.io/v1alpha1", "kind": "Run",
            "metadata": {"name": "r", "annotations": {LAST_APPLIED: "{}"}},
            "spec": {"flowRef": {"name": "f"}}
        }))
        .unwrap();
        trim(&mut run);
        assert!(run.metadata.annotations.is_none());
    }
}
