//! AWS Secrets Manager secrets bound to a step's environment, as Metaflow's `@secrets` does.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Secrets Manager secret exposed to a step's container as environment variables.
///
/// The controller binds `json` and `plaintext` secrets to the Batch job definition by ARN, and
/// Batch injects the values when the container starts; the job's execution role needs
/// `secretsmanager:GetSecretValue` on the secret (and `kms:Decrypt` for a customer managed
/// key). Batch injects only string secrets, so a `binary` secret is passed to the task by ARN
/// and fetched when it starts, with the job role (`batch.iamRole`), which then needs the same
/// permissions. Either way, values never appear in the Flow, its status, events, the state
/// machine or the execution input.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'json' || has(self.envVarName)")
        .message("secrets[].envVarName is required when type is plaintext or binary")
        .field_path(".envVarName")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.type != 'json' || !has(self.envVarName)")
        .message("secrets[].envVarName applies to plaintext and binary secrets; json secrets export one variable per key (see envPrefix)")
        .field_path(".envVarName")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("self.type == 'json' || !has(self.envPrefix)")
        .message("secrets[].envPrefix applies to json secrets only")
        .field_path(".envPrefix")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("self.type == 'json' || !has(self.keys)")
        .message("secrets[].keys applies to json secrets only")
        .field_path(".keys")
        .reason(Reason::FieldValueForbidden),
)]
pub struct SecretSpec {
    /// The secret's name (e.g. `prod/database-config`) or full ARN. Use the ARN for a secret in
    /// another account or region.
    #[schemars(length(min = 1, max = 2048), pattern(r"^[A-Za-z0-9/_+=.@:-]+$"))]
    pub id: String,

    /// How the secret's value becomes environment variables:
    /// `json` (the default): the value is a JSON object and each key becomes one variable,
    /// named `envPrefix` followed by the key upper-cased with every character other than
    /// A-Z and 0-9 replaced by `_` (key `username` of secret `database-config` becomes
    /// `DATABASE_CONFIG_USERNAME`);
    /// `plaintext`: the whole secret string becomes the variable `envVarName`;
    /// `binary`: the secret's binary value, base64-encoded, becomes the variable `envVarName`.
    #[serde(default, rename = "type")]
    pub type_: SecretType,

    /// Prefix of the variables of a `json` secret. Defaults to the secret's name (the last
    /// `/`-separated part of `id`, without an ARN's random suffix) upper-cased, with every
    /// character other than A-Z and 0-9 replaced by `_`, followed by `_`. Set it to the empty
    /// string to name the variables after the keys alone, as Metaflow does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), pattern(r"^([A-Za-z_][A-Za-z0-9_]*)?$"))]
    pub env_prefix: Option<String>,

    /// Name of the variable that receives a `plaintext` or `binary` secret. Required for
    /// those types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub env_var_name: Option<String>,

    /// For a `json` secret, the keys to export; by default every key is exported. Listing the
    /// keys lets the controller bind them without reading the secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub keys: Vec<String>,

    /// ARN of an IAM role the controller assumes to look the secret up (its ARN and, for a
    /// `json` secret without `keys`, its key names), e.g. for a secret in another account.
    /// Defaults to the controller's Secrets Manager role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"))]
    pub role: Option<String>,

    /// AWS region of the secret when `id` is a name. Defaults to the controller's Secrets
    /// Manager region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]$"))]
    pub region: Option<String>,
}

/// How a secret's value becomes environment variables.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecretType {
    /// A JSON object: one variable per key.
    #[default]
    Json,
    /// A string: one variable with the whole value.
    Plaintext,
    /// Binary: one variable with the base64-encoded value.
    Binary,
}
