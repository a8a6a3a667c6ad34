//! Unit tests of the API types: the generated CRDs, serde defaults and round trips, and the CEL
//! rules evaluated without an API server against `examples/manifests` and the invalid manifests
//! of the end-to-end tests (`tests/e2e/invalid`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::core::cel::{ValidationErrors, Validator};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The `.yaml` files of a folder, sorted by name.
fn yaml_files(relative: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path(relative))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The documents of a YAML stream, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The openAPIV3Schema of a kind, as JSON.
fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema;
    serde_json::to_value(schema.unwrap()).unwrap()
}

/// Evaluates the CEL rules of the object's kind, as the API server would on create (no `old`)
/// or update.
fn check_cel(object: &Value, old: Option<&Value>) -> Result<(), ValidationErrors> {
    let kind = object["kind"].as_str().unwrap();
    Validator::new().validate(&schema_of(kind), object, old)
}

/// Every CEL rule message of the three CRDs.
fn rule_messages() -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    for rule in rules {
                        out.push(rule["message"].as_str().unwrap().to_owned());
                    }
                }
                map.values().for_each(|child| walk(child, out));
            }
            Value::Array(items) => items.iter().for_each(|child| walk(child, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for kind in ["Flow", "Run", "Schedule"] {
        walk(&schema_of(kind), &mut out);
    }
    out
}

/// Calls `visit(path, schema)` for every schema node under `schema`.
fn walk_schema(path: &str, schema: &Value, visit: &mut impl FnMut(&str, &Value)) {
    visit(path, schema);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            walk_schema(&format!("{path}.{name}"), property, visit);
        }
    }
    if let Some(items) = schema.get("items") {
        walk_schema(&format!("{path}[]"), items, visit);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk_schema(&format!("{path}{{}}"), values, visit);
    }
}

// --- the CRDs -------------------------------------------------------------------------------

#[test]
fn three_namespaced_kinds_with_status_short_names_and_category() {
    let crds = crds();
    let names: Vec<_> = crds
        .iter()
        .map(|crd| crd.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "flows.flowline.io",
            "runs.flowline.io",
            "schedules.flowline.io"
        ]
    );
    for (crd, short_name) in crds.iter().zip(["fl", "flrun", "flsched"]) {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec![short_name.to_owned()])
        );
        assert_eq!(crd.spec.names.categories, Some(vec!["flowline".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        assert!(version.served && version.storage);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
    }
}

#[test]
fn printer_columns_are_what_a_person_wants_in_kubectl_get() {
    let columns = |kind: &str| -> Vec<String> {
        let crd = crds()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .unwrap();
        let version = &crd.spec.versions[0];
        let columns = version.additional_printer_columns.as_ref().unwrap();
        columns
            .iter()
            .filter(|column| column.priority.unwrap_or(0) == 0)
            .map(|column| column.name.clone())
            .collect()
    };
    assert_eq!(columns("Flow"), ["Ready", "Version", "Age"]);
    assert_eq!(columns("Run"), ["Flow", "Phase", "Ready", "Started", "Age"]);
    assert_eq!(
        columns("Schedule"),
        ["Flow", "Schedule", "Suspended", "Ready", "Last run", "Age"]
    );
}

#[test]
fn crds_yaml_is_the_three_crds_with_a_header() {
    let yaml = crds_yaml().unwrap();
    assert!(yaml.starts_with("# Generated"), "{yaml:.80}");
    assert!(yaml.contains(CRDS_REGENERATE_COMMAND));
    let parsed: Vec<CustomResourceDefinition> = documents(&yaml)
        .into_iter()
        .map(|document| serde_json::from_value(document).unwrap())
        .collect();
    assert_eq!(parsed, crds());
}

#[test]
fn every_field_is_described() {
    let mut missing = Vec::new();
    for kind in ["Flow", "Run", "Schedule"] {
        walk_schema(kind, &schema_of(kind), &mut |path, schema| {
            let is_item = path.ends_with("[]") || path.ends_with("{}");
            if !is_item && schema.get("description").is_none() {
                missing.push(path.to_owned());
            }
        });
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}

#[test]
fn descriptions_are_reflowed_into_paragraphs() {
    assert_eq!(reflow("one\ntwo\n\nthree\n  four"), "one two\n\nthree four");
    for kind in ["Flow", "Run", "Schedule"] {
        walk_schema(kind, &schema_of(kind), &mut |path, schema| {
            if let Some(text) = schema.get("description").and_then(Value::as_str) {
                assert!(
                    !text.replace("\n\n", "").contains('\n'),
                    "{path}: a line break inside a paragraph: {text:?}"
                );
            }
        });
    }
}

/// The API server estimates the cost of CEL rules from the bounds of the lists, maps and
/// strings they reach; unbounded ones make it reject the CRD. Every list and map of a spec is
/// bounded, whether or not a rule reads it today.
#[test]
fn every_list_and_map_of_a_spec_is_bounded() {
    let mut unbounded = Vec::new();
    for kind in ["Flow", "Run", "Schedule"] {
        let schema = schema_of(kind);
        walk_schema(
            &format!("{kind}.spec"),
            &schema["properties"]["spec"],
            &mut |path, s| {
                let is_list = s.get("type") == Some(&json!("array"));
                let is_map = s.get("additionalProperties").is_some_and(Value::is_object);
                if (is_list && s.get("maxItems").is_none())
                    || (is_map && s.get("maxProperties").is_none())
                {
                    unbounded.push(path.to_owned());
                }
            },
        );
    }
    assert!(unbounded.is_empty(), "unbounded: {unbounded:#?}");
}

#[test]
fn keyed_lists_are_map_lists() {
    let flow = schema_of("Flow");
    let spec = &flow["properties"]["spec"]["properties"];
    let step = &spec["steps"]["items"]["properties"];
    for (list, key) in [
        (&spec["steps"], "name"),
        (&spec["parameters"], "name"),
        (&step["env"], "name"),
        (&step["secrets"], "id"),
        (
            &flow["properties"]["status"]["properties"]["conditions"],
            "type",
        ),
    ] {
        assert_eq!(list["x-kubernetes-list-type"], "map", "{list}");
        assert_eq!(list["x-kubernetes-list-map-keys"], json!([key]));
    }
    assert_eq!(step["next"]["x-kubernetes-list-type"], "set");
}

#[test]
fn limits_in_the_schema_match_the_constants() {
    let flow = schema_of("Flow");
    let spec = &flow["properties"]["spec"]["properties"];
    assert_eq!(spec["steps"]["maxItems"], json!(MAX_STEPS));
    assert_eq!(spec["tags"]["maxProperties"], json!(MAX_TAGS));
    assert_eq!(
        spec["batch"]["properties"]["tags"]["maxProperties"],
        json!(MAX_TAGS)
    );
    for (kind, limit) in [
        ("Flow", FLOW_NAME_MAX_LEN),
        ("Run", RUN_NAME_MAX_LEN),
        ("Schedule", SCHEDULE_NAME_MAX_LEN),
    ] {
        let rules = schema_of(kind)["x-kubernetes-validations"].to_string();
        assert!(
            rules.contains(&format!("self.metadata.name.size() <= {limit}")),
            "{kind}: {rules}"
        );
    }
}

// --- serde: defaults and round trips --------------------------------------------------------

const MINIMAL_FLOW: &str = r#"
apiVersion: flowline.io/v1alpha1
kind: Flow
metadata:
  name: minimal
spec:
  parameters:
    - name: alpha
  steps:
    - name: start
      foreach: {}
      secrets:
        - id: database-config
      next: [work]
    - name: work
      next: [end]
    - name: end
      join: true
"#;

#[test]
fn defaults_fill_what_a_minimal_flow_leaves_out() {
    let flow: Flow = serde_norway::from_str(MINIMAL_FLOW).unwrap();
    assert_eq!(flow.spec.deletion_policy, DeletionPolicy::Delete);
    assert_eq!(flow.spec.parameters[0].type_, ParameterType::String);
    assert!(!flow.spec.parameters[0].required);
    let start = &flow.spec.steps[0];
    assert_eq!(start.foreach.as_ref().unwrap().artifact, "foreach.json");
    assert_eq!(start.secrets[0].type_, SecretType::Json);
    assert!(!start.join && flow.spec.steps[2].join);
    assert!(flow.spec.batch.is_none() && flow.spec.tags.is_empty());
}

#[test]
fn serialization_leaves_out_what_is_unset() {
    let flow: Flow = serde_norway::from_str(MINIMAL_FLOW).unwrap();
    let spec = serde_json::to_value(&flow.spec).unwrap();
    assert_eq!(
        spec,
        json!({
            "deletionPolicy": "Delete",
            "parameters": [{"name": "alpha", "type": "String"}],
            "steps": [
                {
                    "name": "start",
                    "foreach": {"artifact": "foreach.json"},
                    "secrets": [{"id": "database-config", "type": "json"}],
                    "next": ["work"],
                },
                {"name": "work", "next": ["end"]},
                {"name": "end", "join": true},
            ],
        })
    );
    let run = Run::new(
        "r",
        RunSpec {
            flow_ref: FlowRef::new("minimal"),
            parameters: BTreeMap::new(),
            stop: false,
            resume_from: None,
        },
    );
    assert_eq!(
        serde_json::to_value(&run.spec).unwrap(),
        json!({"flowRef": {"name": "minimal"}, "stop": false})
    );
}

#[test]
fn enums_use_the_aws_spelling() {
    let batch: BatchSpec = serde_json::from_value(json!({"platform": "FARGATE"})).unwrap();
    assert_eq!(batch.platform, Some(Platform::Fargate));
    let datastore: Datastore =
        serde_json::from_value(json!({"serverSideEncryption": "aws:kms"})).unwrap();
    assert_eq!(
        datastore.server_side_encryption,
        Some(ServerSideEncryption::AwsKms)
    );
    let rule: RetryRule = serde_json::from_value(json!({"action": "EXIT"})).unwrap();
    assert_eq!(rule.action, RetryAction::Exit);
    let parameter: Parameter =
        serde_json::from_value(json!({"name": "config", "type": "JSON"})).unwrap();
    assert_eq!(parameter.type_, ParameterType::Json);
}

#[test]
fn statuses_round_trip() {
    let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2025-01-02T03:04:05Z".parse().unwrap(),
    );
    let status = RunStatus {
        observed_generation: Some(1),
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: condition::READY.into(),
            status: "True".into(),
            reason: "Succeeded".into(),
            message: "every step succeeded".into(),
            last_transition_time: time.clone(),
            observed_generation: Some(1),
        }],
        phase: Some(RunPhase::Succeeded),
        origin: Some(RunOrigin::Flowline),
        execution_arn: Some("arn:aws:states:us-east-1:123456789012:execution:sm:run".into()),
        start_time: Some(time.clone()),
        completion_time: Some(time.clone()),
        steps: vec![StepStatus {
            name: "start".into(),
            phase: Some(StepPhase::Succeeded),
            attempts: Some(1),
            job_ids: vec!["job-1".into()],
            artifacts: vec![Artifact {
                name: "model.pt".into(),
                uri: "s3://bucket/ns/flow/run/start/1/model.pt".into(),
                size: Some(42),
                failed_attempt: true,
            }],
            artifact_count: Some(1),
            ..StepStatus::default()
        }],
        ..RunStatus::default()
    };
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(value["steps"][0]["jobIds"], json!(["job-1"]));
    assert!(value["steps"][0].get("artifactsTruncated").is_none());
    assert_eq!(value["steps"][0]["artifacts"][0]["failedAttempt"], true);
    assert_eq!(serde_json::from_value::<RunStatus>(value).unwrap(), status);
    assert!(is_condition_true(&status.conditions, condition::READY));
    assert!(!is_condition_true(&status.conditions, condition::STALLED));
    assert!(RunPhase::TimedOut.is_finished() && !RunPhase::Running.is_finished());
}

// --- examples -------------------------------------------------------------------------------

#[test]
fn examples_parse_round_trip_and_pass_the_cel_rules() {
    let files = yaml_files("examples/manifests");
    assert!(files.len() >= 20, "{files:?}");
    let mut kinds = BTreeMap::<String, usize>::new();
    for path in files {
        let name = file_name(&path);
        for document in documents(&std::fs::read_to_string(&path).unwrap()) {
            let kind = document["kind"].as_str().unwrap().to_owned();
            *kinds.entry(kind.clone()).or_default() += 1;
            match kind.as_str() {
                "Flow" => {
                    let flow: Flow = serde_json::from_value(document.clone()).unwrap();
                    let again: Flow =
                        serde_json::from_value(serde_json::to_value(&flow).unwrap()).unwrap();
                    assert_eq!(again, flow, "{name}");
                    flow.validate_cel()
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                "Run" => {
                    let run: Run = serde_json::from_value(document.clone()).unwrap();
                    let again: Run =
                        serde_json::from_value(serde_json::to_value(&run).unwrap()).unwrap();
                    assert_eq!(again, run, "{name}");
                    run.validate_cel().unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                "Schedule" => {
                    let schedule: Schedule = serde_json::from_value(document.clone()).unwrap();
                    let again: Schedule =
                        serde_json::from_value(serde_json::to_value(&schedule).unwrap()).unwrap();
                    assert_eq!(again, schedule, "{name}");
                    schedule
                        .validate_cel()
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                other => panic!("{name}: unexpected kind {other}"),
            }
            check_cel(&document, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    assert!(
        kinds["Flow"] >= 18 && kinds["Run"] >= 1 && kinds["Schedule"] >= 3,
        "{kinds:?}"
    );
}

// --- invalid manifests ----------------------------------------------------------------------

/// An invalid manifest of `tests/e2e/invalid`: the expected error, and for an update pair the
/// object created first.
struct Invalid {
    name: String,
    expect: String,
    object: Value,
    old: Option<Value>,
}

fn invalid_manifests() -> Vec<Invalid> {
    let mut out = Vec::new();
    for path in yaml_files("tests/e2e/invalid") {
        let name = file_name(&path);
        if name.ends_with(".create.yaml") {
            let update = path.with_file_name(name.replace(".create.yaml", ".update.yaml"));
            assert!(update.exists(), "{name} has no {}", update.display());
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name} does not start with `# expect: `"))
            .trim()
            .to_owned();
        assert!(!expect.is_empty(), "{name}");
        let mut docs = documents(&text);
        assert_eq!(docs.len(), 1, "{name}: one object per file");
        let old = name.ends_with(".update.yaml").then(|| {
            let create = path.with_file_name(name.replace(".update.yaml", ".create.yaml"));
            documents(&std::fs::read_to_string(create).unwrap()).remove(0)
        });
        out.push(Invalid {
            name,
            expect,
            object: docs.remove(0),
            old,
        });
    }
    out
}

#[test]
fn there_are_enough_invalid_manifests_and_each_says_what_it_expects() {
    let invalid = invalid_manifests();
    assert!(invalid.len() >= 35, "{}", invalid.len());
    assert!(invalid.iter().any(|i| i.old.is_some()));
}

/// For each invalid manifest aimed at a CEL rule (its expected message contains the rule's),
/// the rule rejects it client-side too, and no other rule does.
#[test]
fn cel_rules_reject_the_invalid_manifests_aimed_at_them() {
    let messages = rule_messages();
    let mut aimed = 0;
    for invalid in invalid_manifests() {
        let Invalid {
            name,
            expect,
            object,
            old,
        } = invalid;
        let targets: Vec<&String> = messages
            .iter()
            .filter(|message| expect.contains(message.as_str()) || message.contains(&expect))
            .collect();
        let result = check_cel(&object, old.as_ref());
        if targets.is_empty() {
            // Aimed at the schema (bounds, patterns, enums, unknown fields), which only the API
            // server checks; the e2e tests cover it.
            continue;
        }
        aimed += 1;
        let errors = result.expect_err(&name);
        assert!(
            errors.iter().any(|e| targets.contains(&&e.message)),
            "{name}: expected {expect:?}, got {errors}"
        );
        // Nothing else is wrong with the manifest: it fails for the one reason it names.
        assert!(
            errors.iter().all(|e| targets.contains(&&e.message)),
            "{name}: also failed {errors}"
        );
    }
    assert!(
        aimed >= 20,
        "only {aimed} invalid manifests are aimed at CEL rules"
    );
}

// --- CEL rules at their boundaries ----------------------------------------------------------

fn flow_with(name: &str, batch: Value) -> Value {
    json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": name},
        "spec": {
            "batch": batch,
            "steps": [
                {"name": "start", "next": ["end"]},
                {"name": "end"},
            ],
        },
    })
}

#[test]
fn flow_names_are_dns_labels_of_at_most_40_characters() {
    let longest = "a".repeat(FLOW_NAME_MAX_LEN);
    assert!(check_cel(&flow_with(&longest, json!({})), None).is_ok());
    let too_long = "a".repeat(FLOW_NAME_MAX_LEN + 1);
    assert!(check_cel(&flow_with(&too_long, json!({})), None).is_err());
    assert!(check_cel(&flow_with("train.v2", json!({})), None).is_err());
}

#[test]
fn fargate_takes_its_own_cpu_sizes_and_ec2_whole_vcpus() {
    for (batch, ok) in [
        (
            json!({"platform": "FARGATE", "cpu": 0.25, "memory": 512}),
            true,
        ),
        (
            json!({"platform": "FARGATE", "cpu": 4, "memory": 8192}),
            true,
        ),
        (json!({"platform": "FARGATE", "cpu": 3}), false),
        (json!({"platform": "EC2", "cpu": 3}), true),
        (json!({"platform": "EC2", "cpu": 0.5}), false),
        // EC2 is the default platform: its rule holds when no platform is written.
        (json!({"cpu": 0.5}), false),
        (json!({"cpu": 0}), false),
        (
            json!({"platform": "FARGATE", "cpu": 0.5, "memory": 1024}),
            true,
        ),
        (
            json!({"platform": "FARGATE", "gpu": 0, "memory": 2048}),
            true,
        ),
        (json!({"platform": "FARGATE", "gpu": 1}), false),
        (json!({"inferentia": 1, "trainium": 0}), true),
        (json!({"inferentia": 1, "trainium": 1}), false),
        (
            json!({"executionRole": "arn:aws:iam::123456789012:role/x"}),
            true,
        ),
        // Batch injects secrets through the execution role on EC2 too.
        (
            json!({"platform": "EC2", "executionRole": "arn:aws:iam::123456789012:role/x"}),
            true,
        ),
    ] {
        assert_eq!(
            check_cel(&flow_with("f", batch.clone()), None).is_ok(),
            ok,
            "{batch}"
        );
    }
}

/// A Flow whose `spec.batch` is `flow` and whose start step's `batch` is `step`.
fn flow_with_step_batch(flow: Value, step: Value) -> Value {
    json!({
        "apiVersion": "flowline.io/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "f"},
        "spec": {
            "batch": flow,
            "steps": [
                {"name": "start", "next": ["end"], "batch": step},
                {"name": "end"},
            ],
        },
    })
}

#[test]
fn rules_hold_on_what_each_step_ends_up_with_both_levels_combined() {
    for (flow, step, refused) in [
        // The Flow on Fargate, a step asking for a GPU.
        (
            json!({"platform": "FARGATE", "memory": 2048}),
            json!({"gpu": 1}),
            Some("batch.gpu is not supported on platform FARGATE (each step"),
        ),
        // ... unless the step moves itself to EC2.
        (
            json!({"platform": "FARGATE", "memory": 2048}),
            json!({"gpu": 1, "platform": "EC2"}),
            None,
        ),
        (
            json!({"inferentia": 1}),
            json!({"trainium": 1}),
            Some(
                "batch.inferentia and batch.trainium are mutually exclusive: both request AWS Neuron devices, set only one (each",
            ),
        ),
        (
            json!({"memory": 1024}),
            json!({"tmpfs": {"size": 2048}}),
            Some("batch.tmpfs.size must not exceed batch.memory"),
        ),
        (
            json!({"memory": 4096}),
            json!({"tmpfs": {"size": 2048}}),
            None,
        ),
        (
            json!({}),
            json!({"swappiness": 10}),
            Some("batch.swappiness takes effect only with batch.maxSwap"),
        ),
        (json!({"maxSwap": 1024}), json!({"swappiness": 10}), None),
        (
            json!({"platform": "FARGATE"}),
            json!({"cpu": 1, "memory": 16384}),
            Some("batch.memory on platform FARGATE must fit batch.cpu"),
        ),
        (
            json!({"platform": "FARGATE"}),
            json!({"cpu": 0.25, "memory": 1536}),
            Some("batch.memory on platform FARGATE must fit batch.cpu"),
        ),
        (
            json!({"platform": "FARGATE"}),
            json!({"cpu": 16, "memory": 40960}),
            None,
        ),
        // A fractional size on the Flow, a step that moves to EC2.
        (
            json!({"platform": "FARGATE", "cpu": 0.5, "memory": 1024}),
            json!({"platform": "EC2"}),
            Some("batch.cpu on platform EC2 must be a whole number of vCPUs"),
        ),
    ] {
        let result = check_cel(&flow_with_step_batch(flow.clone(), step.clone()), None);
        match refused {
            None => assert!(result.is_ok(), "{flow} / {step}: {result:?}"),
            Some(message) => {
                let errors = result.expect_err(&format!("{flow} / {step}"));
                assert!(
                    errors.iter().all(|e| e.message.contains(message)),
                    "{flow} / {step}: {errors}"
                );
            }
        }
    }
}

#[test]
fn rates_use_singular_for_one_and_plural_otherwise() {
    let schedule = |rate: &str| {
        json!({
            "apiVersion": "flowline.io/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "s"},
            "spec": {"flowRef": {"name": "f"}, "rate": rate},
        })
    };
    for (rate, ok) in [
        ("1 minute", true),
        ("1 minutes", false),
        ("10 minutes", true),
        ("10 minute", false),
        ("1 day", true),
        ("12 hours", true),
    ] {
        assert_eq!(check_cel(&schedule(rate), None).is_ok(), ok, "{rate}");
    }
}

#[test]
fn a_run_can_be_stopped_but_nothing_else_changes() {
    let run = |spec: Value| {
        json!({
            "apiVersion": "flowline.io/v1alpha1",
            "kind": "Run",
            "metadata": {"name": "r"},
            "spec": spec,
        })
    };
    let created = run(json!({"flowRef": {"name": "f"}, "parameters": {"a": "1"}}));
    let stopped = run(json!({"flowRef": {"name": "f"}, "parameters": {"a": "1"}, "stop": true}));
    assert!(check_cel(&stopped, Some(&created)).is_ok());
    assert!(check_cel(&created, Some(&created)).is_ok());
    let unstopped = run(json!({"flowRef": {"name": "f"}, "parameters": {"a": "1"}, "stop": false}));
    assert!(check_cel(&unstopped, Some(&stopped)).is_err());
    let without_parameters = run(json!({"flowRef": {"name": "f"}}));
    assert!(check_cel(&without_parameters, Some(&created)).is_err());
    let resumed = run(json!({
        "flowRef": {"name": "f"},
        "parameters": {"a": "1"},
        "resumeFrom": {"run": "r0", "step": "train"},
    }));
    assert!(check_cel(&resumed, Some(&created)).is_err());
}

#[test]
fn parameter_names_that_differ_only_in_case_are_refused() {
    let flow = |names: &[&str]| {
        let parameters: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        json!({
            "apiVersion": "flowline.io/v1alpha1",
            "kind": "Flow",
            "metadata": {"name": "f"},
            "spec": {
                "parameters": parameters,
                "steps": [{"name": "start", "next": ["end"]}, {"name": "end"}]
            }
        })
    };
    assert!(check_cel(&flow(&["lr", "epochs"]), None).is_ok());
    let error = check_cel(&flow(&["lr", "LR"]), None).unwrap_err();
    assert!(
        format!("{error:?}").contains("differ in more than letter case"),
        "{error:?}"
    );
}
