//! Types shared by Flow, Run and Schedule: the reference to a Flow, status conditions, AWS tags
//! and parameter values.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The condition types every kind reports, following the kstatus convention that Argo CD and
/// Flux read: `Ready` is the summary, `Reconciling` is true while the controller is still
/// converging, `Stalled` is true when it cannot make progress without a change from a person.
pub mod condition {
    /// The resource is fully materialized (Flow, Schedule) or finished successfully (Run).
    pub const READY: &str = "Ready";
    /// The controller is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// The controller cannot make progress; the condition's message says what to change. A
    /// Run that failed, timed out or was aborted is Stalled with its phase as the reason.
    pub const STALLED: &str = "Stalled";
    /// Runs only: the execution has ended, whatever its outcome (`kubectl wait
    /// --for=condition=Finished`); `Ready` tells whether it succeeded.
    pub const FINISHED: &str = "Finished";
}

/// A reference to a Flow in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FlowRef {
    /// Name of the Flow, in the same namespace as the referring object. References across
    /// namespaces are not supported, so that a namespace's Flows can only be run by objects
    /// that live beside them (namespaces are the unit of access control).
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
}

impl FlowRef {
    /// A reference to the Flow named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// AWS tags: key to value.
pub type Tags = BTreeMap<String, String>;

/// Most tags a Flow may set at each level. AWS allows 50 tags per resource; the Flow's `tags`
/// and a step's `batch.tags` both land on a Batch job, next to the controller's ownership tags.
pub const MAX_TAGS: u32 = 20;

/// The schema of a tag map: AWS key and value limits, and the prefixes that are reserved for
/// AWS and for the controller's ownership tags.
pub(crate) fn tags_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_TAGS,
        "additionalProperties": { "type": "string", "maxLength": 256 },
        "x-kubernetes-validations": [
            {
                "rule": "self.all(k, k.size() >= 1 && k.size() <= 128)",
                "message": "tag keys must be 1 to 128 characters long",
            },
            {
                "rule": "self.all(k, !k.startsWith('aws:') && !k.startsWith('flowline.io/'))",
                "message": "tag keys must not start with 'aws:' (reserved by AWS) or 'flowline.io/' (the controller's ownership tags)",
            },
        ],
    })
}

/// Parameter values of a Run or Schedule: parameter name to value.
pub type ParameterValues = BTreeMap<String, String>;

/// The schema of parameter values: bounded so that they fit the execution input.
pub(crate) fn parameter_values_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": { "type": "string", "maxLength": 4096 },
    })
}

/// The schema of a status `conditions` list: Kubernetes conditions, one per `type`.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// Finds the condition of type `type_` in a status' conditions.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.type_ == type_)
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|condition| condition.status == "True")
}

/// Schema transform for `Option<Enum>` fields. Schemars describes an optional enum as an
/// `anyOf` of the enum and null, which the CRD derive flattens by copying the enum's schema over
/// the field's, description included; without the enum's description the field's own stays.
pub(crate) fn optional_enum(schema: &mut Schema) {
    if let Some(any_of) = schema
        .get_mut("anyOf")
        .and_then(serde_json::Value::as_array_mut)
    {
        for variant in any_of {
            if let Some(variant) = variant.as_object_mut() {
                variant.remove("description");
            }
        }
    }
}

/// `skip_serializing_if` helper for `bool` fields that default to `false`.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}
