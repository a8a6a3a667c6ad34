//! The task contract as `flowline task` reads it: every variable is read here, once, into a
//! [`Contract`]; the rest of the task side takes plain values.

use std::collections::BTreeMap;

use super::TaskError;

/// Variables the controller sets for the task side (see the README's task contract).
pub const ARTIFACT_URI: &str = "FLOWLINE_ARTIFACT_URI";
pub const INPUT_URIS: &str = "FLOWLINE_INPUT_URIS";
pub const DATASTORE_ROOT: &str = "FLOWLINE_DATASTORE_ROOT";
pub const RUN_ID: &str = "FLOWLINE_RUN_ID";
pub const STEP: &str = "FLOWLINE_STEP";
pub const TASK_ID: &str = "FLOWLINE_TASK_ID";
pub const FLOW: &str = "FLOWLINE_FLOW";
pub const NAMESPACE: &str = "FLOWLINE_NAMESPACE";
/// Which parents' outputs are downloaded: `*` for all, or parent step names, comma-separated.
pub const INPUT_STEPS: &str = "FLOWLINE_INPUT_STEPS";
/// The object a foreach step writes its item list to (its `foreach.artifact`).
pub const FOREACH_ARTIFACT: &str = "FLOWLINE_FOREACH_ARTIFACT";
pub const S3_ENDPOINT: &str = "FLOWLINE_S3_ENDPOINT";
pub const S3_FORCE_PATH_STYLE: &str = "FLOWLINE_S3_FORCE_PATH_STYLE";
pub const S3_SSE: &str = "FLOWLINE_S3_SSE";
pub const S3_KMS_KEY_ID: &str = "FLOWLINE_S3_KMS_KEY_ID";
pub const S3_RETRY_COUNT: &str = "FLOWLINE_S3_RETRY_COUNT";
pub const S3_WORKER_COUNT: &str = "FLOWLINE_S3_WORKER_COUNT";
pub const BINARY_SECRETS: &str = crate::compile::secrets::BINARY_SECRETS_ENV;
/// Set by Batch: the attempt (from 1) and, on a multi-node step, the node's index.
pub const BATCH_ATTEMPT: &str = "AWS_BATCH_JOB_ATTEMPT";
pub const BATCH_NODE_INDEX: &str = "AWS_BATCH_JOB_NODE_INDEX";
/// What the wrapper gives the command.
pub const INPUT_DIR: &str = "FLOWLINE_INPUT_DIR";
pub const OUTPUT_DIR: &str = "FLOWLINE_OUTPUT_DIR";

/// Defaults when the controller set no datastore settings (its own defaults).
const DEFAULT_RETRY_COUNT: u32 = 7;
const DEFAULT_WORKER_COUNT: u32 = 64;

/// Server-side encryption of every object the task writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// The bucket's default encryption.
    BucketDefault,
    /// SSE-S3.
    Aes256,
    /// SSE-KMS with the named key, or the account's AWS managed key for S3.
    Kms { key_id: Option<String> },
}

impl Encryption {
    /// `FLOWLINE_S3_SSE` and `FLOWLINE_S3_KMS_KEY_ID`. A key id only applies to `aws:kms`: the
    /// Flow's `AES256` over a controller-wide key means SSE-S3.
    pub fn parse(sse: Option<&str>, kms_key_id: Option<&str>) -> Result<Self, TaskError> {
        let key_id = kms_key_id.filter(|key| !key.is_empty()).map(str::to_owned);
        match sse.unwrap_or_default() {
            "" => Ok(Encryption::BucketDefault),
            "AES256" => Ok(Encryption::Aes256),
            "aws:kms" => Ok(Encryption::Kms { key_id }),
            other => Err(TaskError::Contract {
                variable: S3_SSE,
                problem: format!("must be AES256 or aws:kms, not {other:?}"),
            }),
        }
    }
}

/// Which parents' outputs the task downloads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InputSelection {
    #[default]
    None,
    All,
    Steps(Vec<String>),
}

impl InputSelection {
    pub fn parse(text: &str) -> Self {
        let names: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        if names.iter().any(|name| name == "*") {
            InputSelection::All
        } else if names.is_empty() {
            InputSelection::None
        } else {
            InputSelection::Steps(names)
        }
    }

    pub fn includes(&self, step: &str) -> bool {
        match self {
            InputSelection::None => false,
            InputSelection::All => true,
            InputSelection::Steps(names) => names.iter().any(|name| name == step),
        }
    }
}

/// S3 settings of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub encryption: Encryption,
    /// Retries of each S3 request (the SDK makes `retries + 1` attempts).
    pub retries: u32,
    /// Transfers at once.
    pub workers: usize,
}

/// What the wrapper needs from the task contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    /// The task's own prefix; none when run outside a Flow (nothing is stored then).
    pub artifact_uri: Option<String>,
    pub input_uris: Vec<String>,
    pub datastore_root: String,
    pub run_id: String,
    pub flow: String,
    pub namespace: String,
    pub step: String,
    pub task_id: String,
    pub inputs: InputSelection,
    pub foreach_artifact: Option<String>,
    pub attempt: Option<u32>,
    pub node_index: Option<u32>,
    pub s3: S3Settings,
    /// `NAME=ARN` pairs of binary secrets (ARNs, never values).
    pub binary_secrets: Vec<(String, String)>,
}

impl Contract {
    /// Reads the contract from variables (the process environment in `flowline task`).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, TaskError> {
        let get = |name: &str| vars.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let text = |name: &str| get(name).unwrap_or_default().to_owned();
        let endpoint = get(S3_ENDPOINT).map(str::to_owned);
        // An S3-compatible endpoint (MinIO, an emulator) usually needs path-style addressing;
        // the controller's FLOWLINE_S3_FORCE_PATH_STYLE says so explicitly when it is set.
        let force_path_style = match get(S3_FORCE_PATH_STYLE) {
            Some(value) => parse_bool(S3_FORCE_PATH_STYLE, value)?,
            None => endpoint.is_some(),
        };
        Ok(Contract {
            artifact_uri: get(ARTIFACT_URI).map(str::to_owned),
            input_uris: get(INPUT_URIS)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|uri| !uri.is_empty())
                .map(str::to_owned)
                .collect(),
            datastore_root: text(DATASTORE_ROOT),
            run_id: text(RUN_ID),
            flow: text(FLOW),
            namespace: text(NAMESPACE),
            step: text(STEP),
            task_id: text(TASK_ID),
            inputs: InputSelection::parse(get(INPUT_STEPS).unwrap_or_default()),
            foreach_artifact: get(FOREACH_ARTIFACT).map(str::to_owned),
            attempt: get(BATCH_ATTEMPT)
                .map(|v| parse_number(BATCH_ATTEMPT, v))
                .transpose()?,
            node_index: get(BATCH_NODE_INDEX)
                .map(|v| parse_number(BATCH_NODE_INDEX, v))
                .transpose()?,
            s3: S3Settings {
                endpoint,
                force_path_style,
                encryption: Encryption::parse(get(S3_SSE), get(S3_KMS_KEY_ID))?,
                retries: get(S3_RETRY_COUNT)
                    .map(|v| parse_number(S3_RETRY_COUNT, v))
                    .transpose()?
                    .unwrap_or(DEFAULT_RETRY_COUNT),
                workers: get(S3_WORKER_COUNT)
                    .map(|v| parse_number(S3_WORKER_COUNT, v))
                    .transpose()?
                    .unwrap_or(DEFAULT_WORKER_COUNT)
                    .max(1) as usize,
            },
            binary_secrets: parse_binary_secrets(get(BINARY_SECRETS).unwrap_or_default())?,
        })
    }
}

fn parse_number(variable: &'static str, value: &str) -> Result<u32, TaskError> {
    value.trim().parse().map_err(|_| TaskError::Contract {
        variable,
        problem: format!("must be a non-negative integer, not {value:?}"),
    })
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, TaskError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(TaskError::Contract {
            variable,
            problem: format!("must be true or false, not {value:?}"),
        }),
    }
}

/// `NAME=ARN` lines, as the compiler writes them.
pub fn parse_binary_secrets(text: &str) -> Result<Vec<(String, String)>, TaskError> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once('=') {
            Some((name, arn)) if !name.is_empty() && !arn.is_empty() => {
                Ok((name.to_owned(), arn.to_owned()))
            }
            _ => Err(TaskError::Contract {
                variable: BINARY_SECRETS,
                problem: format!("each line must be NAME=ARN, not {line:?}"),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sse_settings_parse_into_the_encryption_of_every_object() {
        assert_eq!(
            Encryption::parse(None, None).unwrap(),
            Encryption::BucketDefault
        );
        assert_eq!(
            Encryption::parse(Some("AES256"), Some("alias/ignored")).unwrap(),
            Encryption::Aes256
        );
        assert_eq!(
            Encryption::parse(Some("aws:kms"), Some("alias/flowline")).unwrap(),
            Encryption::Kms {
                key_id: Some("alias/flowline".into())
            }
        );
        assert_eq!(
            Encryption::parse(Some("aws:kms"), None).unwrap(),
            Encryption::Kms { key_id: None }
        );
        let error = Encryption::parse(Some("kms"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("FLOWLINE_S3_SSE"), "{error}");
    }

    #[test]
    fn contract_reads_datastore_settings_with_defaults() {
        let contract = Contract::from_vars(&vars(&[
            (ARTIFACT_URI, "s3://b/root/ns/f/run/start/0/"),
            (
                INPUT_URIS,
                "s3://b/root/ns/f/run/a/0/,s3://b/root/ns/f/run/b/0/",
            ),
            (S3_ENDPOINT, "http://127.0.0.1:5000"),
            (S3_WORKER_COUNT, "4"),
            (BATCH_ATTEMPT, "2"),
            (INPUT_STEPS, "*"),
        ]))
        .unwrap();
        assert_eq!(contract.input_uris.len(), 2);
        assert!(contract.s3.force_path_style, "an endpoint means path style");
        assert_eq!(contract.s3.workers, 4);
        assert_eq!(contract.s3.retries, 7);
        assert_eq!(contract.attempt, Some(2));
        assert_eq!(contract.inputs, InputSelection::All);

        let aws = Contract::from_vars(&vars(&[(S3_FORCE_PATH_STYLE, "false")])).unwrap();
        assert!(!aws.s3.force_path_style);
        assert_eq!(aws.inputs, InputSelection::None);
        let error = Contract::from_vars(&vars(&[(S3_RETRY_COUNT, "many")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains(S3_RETRY_COUNT), "{error}");
    }

    #[test]
    fn input_selection_names_steps_or_all() {
        assert_eq!(InputSelection::parse(""), InputSelection::None);
        let some = InputSelection::parse("a, b");
        assert!(some.includes("a") && some.includes("b") && !some.includes("c"));
        assert!(InputSelection::parse("*").includes("anything"));
    }

    #[test]
    fn binary_secret_lines_are_name_and_arn() {
        let parsed =
            parse_binary_secrets("CERT=arn:aws:secretsmanager:us-east-1:1:secret:c-AbCdEf\n")
                .unwrap();
        assert_eq!(
            parsed,
            [(
                "CERT".to_string(),
                "arn:aws:secretsmanager:us-east-1:1:secret:c-AbCdEf".to_string()
            )]
        );
        assert!(parse_binary_secrets("no-equals-sign").is_err());
    }
}
