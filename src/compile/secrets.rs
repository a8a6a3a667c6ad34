//! Secret bindings: each `@secrets` entry becomes references Batch resolves when the container
//! starts (`secrets[].valueFrom`), so no value passes through Flowline, the state machine, the
//! execution input, the job definition or any status.
//!
//! - `json`: one variable per key, bound with Batch's JSON-key selector
//!   (`<secret ARN>:<key>::`). The keys come from the spec's `keys` or, when it lists none,
//!   from the controller's lookup of the secret's key names.
//! - `plaintext`: the whole secret string, bound to `envVarName`.
//! - `binary`: Batch injects only string secrets (`SecretString`), so a binary secret cannot be
//!   bound by reference. Flowline passes the secret's ARN (not its value) in
//!   `FLOWLINE_BINARY_SECRETS` (`NAME=ARN` lines) and the task resolves it at start with its
//!   own job role, base64-encoding the bytes into `NAME` — Metaflow's `@secrets` fetches in
//!   the task the same way. The value still never leaves AWS and the task.

use std::collections::BTreeMap;

use crate::api::{SecretSpec, SecretType};
use crate::settings::Settings;

use super::job_definition::{KeyValue, SecretRef};

/// Environment variable listing a task's binary secrets as `NAME=ARN` lines.
pub const BINARY_SECRETS_ENV: &str = "FLOWLINE_BINARY_SECRETS";

/// What the controller learned about a secret without reading its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSecret {
    /// The secret's full ARN (with its random suffix).
    pub arn: String,
    /// For a `json` secret: its key names.
    pub keys: Vec<String>,
}

/// Secrets looked up by the controller, by spec `id`. `flowline render` has none and falls
/// back to [`offline_arn`].
pub type SecretLookups = BTreeMap<String, ResolvedSecret>;

/// Why a secret cannot be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret `{0}` is of type json but lists no `keys`, and its key names have not been looked up; list the keys in spec.steps[].secrets[].keys"
    )]
    UnknownKeys(String),
    #[error("secret `{secret}` makes two variables named `{name}`; set envPrefix or envVarName")]
    DuplicateVariable { secret: String, name: String },
}

/// The variables of one step's secrets: `valueFrom` references, and the binary-secret list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    pub secrets: Vec<SecretRef>,
    pub environment: Vec<KeyValue>,
}

/// The ARN a secret name has before the controller looked it up: a partial ARN (without the
/// random suffix), which Batch accepts for whole-secret references in the same account.
pub fn offline_arn(spec: &SecretSpec, settings: &Settings) -> String {
    if spec.id.starts_with("arn:") {
        return spec.id.clone();
    }
    let region = spec
        .region
        .as_deref()
        .or(settings.secrets_region.as_deref())
        .unwrap_or(&settings.region);
    format!(
        "arn:aws:secretsmanager:{region}:{}:secret:{}",
        settings.account(),
        spec.id
    )
}

/// `DATABASE_CONFIG_` for `prod/database-config` (the last path part, without an ARN's
/// six-character random suffix), or the spec's `envPrefix`.
pub fn env_prefix(spec: &SecretSpec) -> String {
    if let Some(prefix) = &spec.env_prefix {
        return prefix.clone();
    }
    let name = if spec.id.starts_with("arn:") {
        let after = spec.id.rsplit(':').next().unwrap_or(&spec.id);
        strip_random_suffix(after)
    } else {
        &spec.id
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    format!("{}_", env_name(last))
}

/// A Secrets Manager ARN ends in `-` and six random characters.
fn strip_random_suffix(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, suffix))
            if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base
        }
        _ => name,
    }
}

/// Upper-cases and replaces every character other than A-Z and 0-9 by `_`.
pub fn env_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            let upper = c.to_ascii_uppercase();
            if upper.is_ascii_uppercase() || upper.is_ascii_digit() {
                upper
            } else {
                '_'
            }
        })
        .collect()
}

/// Where secret details come from: the controller's lookups, or none when rendering offline.
#[derive(Debug, Clone, Copy)]
pub enum Lookups<'a> {
    /// `flowline render`: nothing is looked up. A `json` secret that lists no keys is shown
    /// with one placeholder variable, `<PREFIX>*`, bound to `<ARN>:*::`, as a plan would show
    /// a value known only after apply.
    Offline,
    /// The controller's lookups; a `json` secret without keys must be among them.
    Resolved(&'a SecretLookups),
}

/// The placeholder key of an offline render.
pub const UNKNOWN_KEYS: &str = "*";

/// Binds a step's secrets.
pub fn bind(
    specs: &[SecretSpec],
    lookups: Lookups<'_>,
    settings: &Settings,
) -> Result<Bindings, SecretError> {
    let mut bindings = Bindings::default();
    let mut binary_lines = Vec::new();
    let mut names = BTreeMap::new();
    let mut claim = |name: &str, secret: &str| match names.insert(name.to_owned(), ()) {
        None => Ok(()),
        Some(()) => Err(SecretError::DuplicateVariable {
            secret: secret.to_owned(),
            name: name.to_owned(),
        }),
    };
    for spec in specs {
        let resolved = match lookups {
            Lookups::Offline => None,
            Lookups::Resolved(found) => found.get(&spec.id),
        };
        let arn = resolved
            .map(|r| r.arn.clone())
            .unwrap_or_else(|| offline_arn(spec, settings));
        match spec.type_ {
            SecretType::Json => {
                let keys = if !spec.keys.is_empty() {
                    spec.keys.clone()
                } else if let Some(resolved) = resolved {
                    resolved.keys.clone()
                } else if matches!(lookups, Lookups::Offline) {
                    vec![UNKNOWN_KEYS.to_owned()]
                } else {
                    return Err(SecretError::UnknownKeys(spec.id.clone()));
                };
                let prefix = env_prefix(spec);
                for key in keys {
                    let name = if key == UNKNOWN_KEYS {
                        format!("{prefix}{UNKNOWN_KEYS}")
                    } else {
                        format!("{prefix}{}", env_name(&key))
                    };
                    claim(&name, &spec.id)?;
                    bindings.secrets.push(SecretRef {
                        name,
                        value_from: format!("{arn}:{key}::"),
                    });
                }
            }
            SecretType::Plaintext => {
                let name = spec.env_var_name.clone().unwrap_or_default();
                claim(&name, &spec.id)?;
                bindings.secrets.push(SecretRef {
                    name,
                    value_from: arn,
                });
            }
            SecretType::Binary => {
                let name = spec.env_var_name.clone().unwrap_or_default();
                claim(&name, &spec.id)?;
                binary_lines.push(format!("{name}={arn}"));
            }
        }
    }
    if !binary_lines.is_empty() {
        bindings.environment.push(KeyValue {
            name: BINARY_SECRETS_ENV.into(),
            value: binary_lines.join("\n"),
        });
    }
    bindings.secrets.sort();
    Ok(bindings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, type_: SecretType) -> SecretSpec {
        SecretSpec {
            id: id.into(),
            type_,
            ..SecretSpec::default()
        }
    }

    #[test]
    fn json_secret_keys_become_prefixed_variables() {
        let mut database = spec("prod/database-config", SecretType::Json);
        database.keys = vec!["username".into(), "password".into(), "host".into()];
        let bindings = bind(&[database], Lookups::Offline, &Settings::default()).unwrap();
        let names: Vec<_> = bindings.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DATABASE_CONFIG_HOST",
                "DATABASE_CONFIG_PASSWORD",
                "DATABASE_CONFIG_USERNAME"
            ]
        );
        assert_eq!(
            bindings.secrets[0].value_from,
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/database-config:host::"
        );
    }

    #[test]
    fn looked_up_arn_and_keys_are_used() {
        let arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:api-token-AbCdEf";
        let lookups = SecretLookups::from([(
            "api-token".to_string(),
            ResolvedSecret {
                arn: arn.into(),
                keys: vec!["token".into()],
            },
        )]);
        let bindings = bind(
            &[spec("api-token", SecretType::Json)],
            Lookups::Resolved(&lookups),
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(bindings.secrets[0].name, "API_TOKEN_TOKEN");
        assert_eq!(bindings.secrets[0].value_from, format!("{arn}:token::"));
    }

    #[test]
    fn json_secret_without_keys_needs_a_lookup() {
        let lookups = SecretLookups::new();
        let error = bind(
            &[spec("x", SecretType::Json)],
            Lookups::Resolved(&lookups),
            &Settings::default(),
        );
        assert_eq!(error, Err(SecretError::UnknownKeys("x".into())));
        let offline = bind(
            &[spec("x", SecretType::Json)],
            Lookups::Offline,
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(offline.secrets[0].name, "X_*");
        assert_eq!(
            offline.secrets[0].value_from,
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x:*::"
        );
    }

    #[test]
    fn plaintext_and_binary_secrets() {
        let mut plain = spec("token", SecretType::Plaintext);
        plain.env_var_name = Some("API_TOKEN".into());
        let mut binary = spec(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:cert-AbCdEf",
            SecretType::Binary,
        );
        binary.env_var_name = Some("TLS_CERT".into());
        let bindings = bind(&[plain, binary], Lookups::Offline, &Settings::default()).unwrap();
        assert_eq!(bindings.secrets.len(), 1);
        assert_eq!(bindings.secrets[0].name, "API_TOKEN");
        assert_eq!(
            bindings.environment,
            vec![KeyValue {
                name: BINARY_SECRETS_ENV.into(),
                value: "TLS_CERT=arn:aws:secretsmanager:us-east-1:123456789012:secret:cert-AbCdEf"
                    .into(),
            }]
        );
    }

    #[test]
    fn prefix_comes_from_the_secret_name_without_arn_suffix() {
        let arn = spec(
            "arn:aws:secretsmanager:us-east-1:1:secret:team/db-config-a1B2c3",
            SecretType::Json,
        );
        assert_eq!(env_prefix(&arn), "DB_CONFIG_");
        let mut explicit = spec("x", SecretType::Json);
        explicit.env_prefix = Some(String::new());
        assert_eq!(env_prefix(&explicit), "");
    }

    #[test]
    fn duplicate_variables_are_rejected() {
        let mut a = spec("a", SecretType::Plaintext);
        a.env_var_name = Some("SAME".into());
        let mut b = spec("b", SecretType::Plaintext);
        b.env_var_name = Some("SAME".into());
        assert!(matches!(
            bind(&[a, b], Lookups::Offline, &Settings::default()),
            Err(SecretError::DuplicateVariable { .. })
        ));
    }
}
