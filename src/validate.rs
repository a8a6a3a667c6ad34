//! Offline validation of manifests: what `kubectl apply` (the CRD's OpenAPI schema and its CEL
//! rules) and the controller (the checks it makes before it touches AWS) would refuse, each
//! problem on one line naming the field, so a pull request fails where a GitOps sync would
//! otherwise bounce. `flowline validate` prints them; `flowline render` refuses to render a
//! Flow that has any.
//!
//! The schema is evaluated here rather than with a JSON Schema crate because a CRD's schema
//! is OpenAPI v3 with Kubernetes' own rules (`nullable`, `x-kubernetes-list-type`, unknown
//! fields refused under strict field validation), and the problems should read like the API
//! server's, which the tests compare with. CEL rules run in kube's evaluator, the one the
//! unit tests of the API types use.

use std::collections::BTreeMap;
use std::fmt;

use kube::core::cel::{ValidationError, Validator};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{self, Flow, Run, Schedule};
use crate::compile::{self, secrets::Lookups};
use crate::settings::Settings;

/// One reason an object would be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `Kind/name` of the object (its position in the file when it has no name).
    pub object: String,
    /// What is wrong, starting with the field at fault, as the API server or the controller
    /// words it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// A manifest that is not YAML or JSON at all.
#[derive(Debug, thiserror::Error)]
#[error("not a YAML or JSON manifest: {0}")]
pub struct ParseError(#[from] serde_norway::Error);

/// The objects of `flowline.io` in a manifest checked: how many, and their problems.
#[derive(Debug, Default)]
pub struct Report {
    pub objects: usize,
    pub problems: Vec<Problem>,
}

/// Validates every `flowline.io` object of a (multi-document) manifest as `kubectl apply`
/// would on create and the controller would on its first reconcile, offline (secrets are not
/// looked up, so a JSON secret's keys are only known when it lists them). Other documents are
/// skipped.
pub fn validate_manifest(text: &str, settings: &Settings) -> Result<Report, ParseError> {
    let schemas: BTreeMap<String, Value> = api::crds()
        .into_iter()
        .filter_map(|crd| {
            let schema = crd
                .spec
                .versions
                .first()?
                .schema
                .as_ref()?
                .open_api_v3_schema
                .as_ref()?;
            Some((
                crd.spec.names.kind.clone(),
                serde_json::to_value(schema).ok()?,
            ))
        })
        .collect();
    let mut report = Report::default();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        let group = value["apiVersion"].as_str().unwrap_or_default();
        if group.split('/').next() != Some(api::GROUP) {
            continue;
        }
        report.objects += 1;
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"]
            .as_str()
            .map_or_else(|| format!("(document {})", index + 1), ToOwned::to_owned);
        let object = format!("{kind}/{name}");
        let mut push = |message: String| {
            report.problems.push(Problem {
                object: object.clone(),
                message,
            })
        };
        if group != format!("{}/{}", api::GROUP, api::VERSION) {
            push(format!(
                "apiVersion: {group} is not served: use {}/{}",
                api::GROUP,
                api::VERSION
            ));
            continue;
        }
        let Some(schema) = schemas.get(&kind) else {
            push(format!(
                "kind: {kind:?} is not a kind of {}: Flow, Run or Schedule",
                api::GROUP
            ));
            continue;
        };
        let mut problems = object_problems(schema, &value);
        if kind == "Flow" {
            name_combined_fields(&value, &mut problems);
        }
        if !problems.is_empty() {
            problems.into_iter().for_each(&mut push);
            continue;
        }
        for message in controller_problems(&kind, &value, settings) {
            push(message);
        }
    }
    Ok(report)
}

/// What the API server refuses: the schema first, then the CEL rules (which it evaluates only
/// on an object that fits the schema).
pub fn object_problems(schema: &Value, object: &Value) -> Vec<String> {
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return vec!["metadata.name: Required value: name or generateName is required".into()];
    }
    let mut problems = Vec::new();
    for (key, value) in object.as_object().into_iter().flatten() {
        // `status` is the controller's (a create drops it); the rest is the object's.
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            continue;
        }
        match schema["properties"].get(key) {
            Some(property) => check(property, value, key, &mut problems),
            None => problems.push(format!("unknown field {key:?}")),
        }
    }
    if problems.is_empty()
        && let Err(errors) = Validator::new().validate(schema, object, None)
    {
        problems.extend(errors.iter().map(cel_problem));
    }
    problems
}

/// The API server can only say `spec.steps` of a rule on both levels combined (a Flow on
/// Fargate, a step with a GPU); the controller's words name the step and both fields, so they
/// replace it.
fn name_combined_fields(value: &Value, problems: &mut Vec<String>) {
    let combined = |problem: &String| {
        problem.starts_with("spec.steps: ") && problem.ends_with(api::COMBINED_RULE_SUFFIX)
    };
    if !problems.iter().any(combined) {
        return;
    }
    let Ok(flow) = serde_json::from_value::<Flow>(value.clone()) else {
        return;
    };
    let named = compile::checks::batch_problems(&flow);
    if !named.is_empty() {
        problems.retain(|problem| !combined(problem));
        problems.extend(named);
    }
}

/// A CEL rule's failure, worded like the API server's.
fn cel_problem(error: &ValidationError) -> String {
    let detail = match error.reason.as_deref() {
        Some("FieldValueForbidden") => "Forbidden".to_owned(),
        Some("FieldValueRequired") => "Required value".to_owned(),
        Some("FieldValueDuplicate") => "Duplicate value".to_owned(),
        _ => "Invalid value".to_owned(),
    };
    if error.field_path.is_empty() {
        format!("{detail}: {}", error.message)
    } else {
        format!("{}: {detail}: {}", error.field_path, error.message)
    }
}

/// The checks the controller makes before any AWS call.
fn controller_problems(kind: &str, value: &Value, settings: &Settings) -> Vec<String> {
    match kind {
        "Flow" => match serde_json::from_value::<Flow>(value.clone()) {
            Err(error) => vec![format!("spec: {error}")],
            Ok(flow) => match compile::render(&flow, settings, Lookups::Offline) {
                Ok(_) => Vec::new(),
                Err(compile::CompileError::Settings(problems)) => problems,
                Err(error) => vec![format!("spec: {error}")],
            },
        },
        "Run" => serde_json::from_value::<Run>(value.clone())
            .err()
            .map(|error| vec![format!("spec: {error}")])
            .unwrap_or_default(),
        "Schedule" => match serde_json::from_value::<Schedule>(value.clone()) {
            Err(error) => vec![format!("spec: {error}")],
            Ok(schedule) => schedule_problems(&schedule),
        },
        _ => Vec::new(),
    }
}

/// A Schedule's cron or rate, which the controller translates for EventBridge.
fn schedule_problems(schedule: &Schedule) -> Vec<String> {
    let (cron, rate) = (schedule.spec.cron.as_deref(), schedule.spec.rate.as_deref());
    if cron.is_none() && rate.is_none() {
        return Vec::new();
    }
    match compile::cron::schedule_expression(cron, rate) {
        Ok(_) => Vec::new(),
        Err(error) => {
            let field = if cron.is_some() {
                "spec.cron"
            } else {
                "spec.rate"
            };
            vec![format!("{field}: {error}")]
        }
    }
}

/// Checks `value` at `path` against an OpenAPI v3 schema node of a CRD.
fn check(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    if value.is_null() {
        // The API server drops a null of a field that is not nullable, and keeps the others.
        return;
    }
    let shown = || compact(value);
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(compact).collect();
        problems.push(format!(
            "{path}: Unsupported value: {}: supported values: {}",
            shown(),
            list.join(", ")
        ));
        return;
    }
    let kind = schema["type"].as_str().unwrap_or_default();
    let type_ok = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        problems.push(format!(
            "{path}: Invalid value: \"{}\": {path} in body must be of type {kind}: \"{}\"",
            type_name(value),
            type_name(value)
        ));
        return;
    }
    match value {
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = required.as_str()
                    && !map.contains_key(name)
                {
                    problems.push(format!("{path}.{name}: Required value"));
                }
            }
            let properties = schema["properties"].as_object();
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match (
                    properties.and_then(|p| p.get(key)),
                    &schema["additionalProperties"],
                ) {
                    (Some(property), _) => check(property, child, &child_path, problems),
                    (None, Value::Object(_)) => check(
                        &schema["additionalProperties"],
                        child,
                        &child_path,
                        problems,
                    ),
                    (None, _) if preserve || properties.is_none() => {}
                    (None, _) => problems.push(format!("unknown field {child_path:?}")),
                }
            }
            if let Some(max) = schema["maxProperties"].as_u64()
                && map.len() as u64 > max
            {
                problems.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    map.len()
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                problems.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                problems.push(format!(
                    "{path}: Invalid value: {}: {path} in body should have at least {min} items",
                    items.len()
                ));
            }
            for (index, item) in items.iter().enumerate() {
                check(
                    &schema["items"],
                    item,
                    &format!("{path}[{index}]"),
                    problems,
                );
            }
            duplicates(schema, items, path, problems);
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && length > max
            {
                problems.push(format!(
                    "{path}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && length < min
            {
                problems.push(format!(
                    "{path}: Invalid value: {}: {path} in body should be at least {min} chars long",
                    shown()
                ));
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text))
            {
                problems.push(format!(
                    "{path}: Invalid value: {}: {path} in body should match '{pattern}'",
                    shown()
                ));
            }
        }
        Value::Number(number) => {
            // Like the API server, an integer is compared with the bound cut to an integer
            // (`cpu: 0` passes `minimum: 0.25`; a CEL rule refuses it).
            let integer = number.is_i64() || number.is_u64();
            let bound = |key: &str| {
                schema[key]
                    .as_f64()
                    .map(|b| if integer { b.trunc() } else { b })
            };
            let Some(number) = number.as_f64() else {
                return;
            };
            if let Some(max) = bound("maximum")
                && number > max
            {
                problems.push(format!(
                    "{path}: Invalid value: {}: {path} in body should be less than or equal to {}",
                    shown(),
                    plain(max)
                ));
            }
            if let Some(min) = bound("minimum")
                && number < min
            {
                problems.push(format!(
                    "{path}: Invalid value: {}: {path} in body should be greater than or equal to {}",
                    shown(),
                    plain(min)
                ));
            }
        }
        _ => {}
    }
}

/// Items a `set` list holds twice, or `map` list items with the same keys.
fn duplicates(schema: &Value, items: &[Value], path: &str, problems: &mut Vec<String>) {
    let key_of = |item: &Value| -> Option<String> {
        match schema["x-kubernetes-list-type"].as_str() {
            Some("set") => Some(compact(item)),
            Some("map") => {
                let keys: Vec<String> = schema["x-kubernetes-list-map-keys"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|key| format!("{key}={}", compact(&item[key])))
                    .collect();
                Some(keys.join(","))
            }
            _ => None,
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        if let Some(key) = key_of(item)
            && !seen.insert(key)
        {
            problems.push(format!(
                "{path}[{index}]: Duplicate value: {}",
                compact(item)
            ));
        }
    }
}

/// A bound as the API server prints it: `96`, `0.25`.
fn plain(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        number.to_string()
    }
}

fn compact(value: &Value) -> String {
    match value {
        Value::Number(number) => number.to_string(),
        other => other.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn yaml_files(relative: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
                .collect();
        files.sort();
        files
    }

    /// Every manifest the API server refuses (`tests/e2e/invalid`, the ones a create alone
    /// can refuse) is refused offline with the API server's words for it.
    #[test]
    fn every_manifest_the_api_server_refuses_is_refused_offline_with_its_message() {
        let mut checked = 0;
        for path in yaml_files("tests/e2e/invalid") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".create.yaml") || name.ends_with(".update.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("# expect: "))
                .unwrap()
                .trim()
                .to_owned();
            let report = validate_manifest(&text, &Settings::default()).unwrap();
            assert_eq!(report.objects, 1, "{name}");
            assert!(!report.problems.is_empty(), "{name}");
            // The API server's words (the report may name a combined rule's fields instead).
            let object: Value = serde_norway::from_str(&text).unwrap();
            let kind = object["kind"].as_str().unwrap();
            let crd = api::crds()
                .into_iter()
                .find(|crd| crd.spec.names.kind == kind)
                .unwrap();
            let schema = serde_json::to_value(
                crd.spec.versions[0]
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref(),
            )
            .unwrap();
            let problems = object_problems(&schema, &object);
            assert!(
                problems.iter().any(|p| p.contains(&expect)),
                "{name}: expected {expect:?}, got {problems:#?}"
            );
            checked += 1;
        }
        assert!(checked >= 60, "{checked}");
    }

    #[test]
    fn every_example_is_valid() {
        let settings = Settings {
            execution_role: Some("arn:aws:iam::123456789012:role/execution".into()),
            ..Settings::default()
        };
        for path in yaml_files("examples/manifests") {
            let text = std::fs::read_to_string(&path).unwrap();
            let report = validate_manifest(&text, &settings).unwrap();
            assert!(report.objects >= 1, "{}", path.display());
            assert_eq!(report.problems, [], "{}", path.display());
        }
    }

    /// The step of the issue: rendered before without a word, now three problems, each
    /// naming its field.
    #[test]
    fn a_step_with_200_vcpus_on_fargate_with_a_gpu_gets_one_line_per_problem() {
        let text = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata: {name: big}
spec:
  steps:
    - name: start
      next: [end]
      batch: {cpu: 200, platform: FARGATE, gpu: 1}
    - name: end
---
apiVersion: v1
kind: ConfigMap
metadata: {name: skipped}
"#;
        let report = validate_manifest(text, &Settings::default()).unwrap();
        assert_eq!(report.objects, 1);
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "Flow/big: spec.steps[0].batch.cpu: Invalid value: 200: spec.steps[0].batch.cpu in body should be less than or equal to 96"
            ]
        );
        // Within the schema's bounds, the CEL rules speak.
        let report =
            validate_manifest(&text.replace("cpu: 200", "cpu: 3"), &Settings::default()).unwrap();
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "Flow/big: spec.steps[0].batch.gpu: Forbidden: batch.gpu is not supported on platform FARGATE",
                "Flow/big: spec.steps[0].batch.cpu: Invalid value: batch.cpu on platform FARGATE must be one of 0.25, 0.5, 1, 2, 4, 8 or 16",
            ]
        );
    }
}
