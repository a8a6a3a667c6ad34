//! Typed parameters: how a Flow's parameters reach its tasks, and whether a Run's or
//! Schedule's values fit what Batch accepts.
//!
//! Where the types are applied, and why:
//! - Runs and Schedules pass values as strings (Kubernetes has no better common type for "a
//!   value of the Flow's type"). The controller checks each against its type when the Run or
//!   Schedule is admitted and converts it ([`typed`]): the execution input carries numbers,
//!   booleans and parsed JSON, never strings standing for them. Converting once, in the
//!   controller, keeps the state machine free of per-type branches and makes a bad value a
//!   `Stalled` condition instead of a failed execution.
//! - The Flow's defaults are converted the same way at compile time and merged by the state
//!   machine, key by key, under what the execution input sets; so an execution started by hand,
//!   with no input or only some parameters, runs with the defaults of the rest. A hand-started
//!   execution should pass typed values too: the state machine passes on what it is given.
//! - Tasks read `FLOWLINE_PARAMETERS` (the typed object as JSON) and `FLOWLINE_PARAM_<NAME>`,
//!   the value as text: a String as is, a number or boolean as JSON writes it (`5`, `0.5`,
//!   `true`), a JSON parameter as compact JSON. Step Functions builds that text with
//!   `States.Format` and `States.JsonToString`, once per execution, in `$.paramText`.
//! - An optional parameter without a default that is left unset is absent from
//!   `FLOWLINE_PARAMETERS` and its `FLOWLINE_PARAM_<NAME>` is empty: a Choice state per such
//!   parameter fills its text only when the value is present, so its absence never fails the
//!   execution.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api::{Parameter, ParameterType};

use super::{MAX_OVERRIDES_CHARS, TaskOverrides, task_overrides};

/// The prefix of each parameter's own variable.
pub const PARAM_ENV_PREFIX: &str = "FLOWLINE_PARAM_";

/// Parameter values as the execution input carries them: converted to their types.
pub type TypedParameters = BTreeMap<String, Value>;

/// `FLOWLINE_PARAM_<NAME>`: the name upper-cased (names are `[A-Za-z_][A-Za-z0-9_]*`, so
/// upper-casing is the only change, and two names that differ only in case collide — the
/// Flow's CRD refuses them).
pub fn env_name(parameter: &str) -> String {
    format!("{PARAM_ENV_PREFIX}{}", parameter.to_ascii_uppercase())
}

/// Converts a value given as a string to its parameter type, or says why it cannot.
pub fn typed(kind: ParameterType, text: &str) -> Result<Value, String> {
    let invalid = || format!("{text:?} is not a valid {kind:?}");
    match kind {
        ParameterType::String => Ok(Value::String(text.to_owned())),
        ParameterType::Int => text
            .trim()
            .trim_start_matches('+')
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| invalid()),
        ParameterType::Float => {
            let number = text.trim().parse::<f64>().map_err(|_| invalid())?;
            // JSON has no NaN or infinity; Rust's parser accepts "inf" and "NaN".
            serde_json::Number::from_f64(number)
                .map(Value::Number)
                .ok_or_else(|| format!("{text:?} is not a finite Float"))
        }
        ParameterType::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(invalid()),
        },
        ParameterType::Json => serde_json::from_str(text).map_err(|_| invalid()),
    }
}

/// The Flow's defaults, converted; a default that does not convert is named.
pub fn typed_defaults(declared: &[Parameter]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for parameter in declared {
        if let Some(default) = &parameter.default {
            let value = typed(parameter.type_, default).map_err(|problem| {
                format!("the default of parameter `{}`: {problem}", parameter.name)
            })?;
            out.insert(parameter.name.clone(), value);
        }
    }
    Ok(out)
}

/// The intrinsic that turns a parameter's value at `path` into its text.
pub fn text_expression(kind: ParameterType, path: &str) -> String {
    match kind {
        ParameterType::Json => format!("States.JsonToString({path})"),
        _ => format!("States.Format('{{}}', {path})"),
    }
}

/// The text a task finds in `FLOWLINE_PARAM_<NAME>` for a typed value (as Step Functions
/// writes it; floats may differ in notation).
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// What the overrides of one task can hold besides what the definition fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Whether the executions have an S3 trigger (an S3 Schedule): its bucket and key.
    pub s3_trigger: bool,
}

/// Longest execution name (Step Functions' limit): the run id.
const RUN_ID_CHARS: usize = 80;
/// Room for a task id: `0` and a `-<index>` per foreach level (and `-node-<i>`).
const TASK_ID_CHARS: usize = 40;
/// Room for a foreach index.
const FOREACH_INDEX_CHARS: usize = 10;
/// S3's longest bucket name and key.
const TRIGGER_BUCKET_CHARS: usize = 63;
const TRIGGER_KEY_CHARS: usize = 1024;
/// `FLOWLINE_CAUGHT_ERROR`: the error name, the job's status reason and its id (see the state
/// machine's catch states), generously bounded.
pub const CAUGHT_ERROR_CHARS: usize = 1536;

/// A Task whose overrides would exceed Batch's limit with the given values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    pub job: String,
    pub size: usize,
}

/// Checks that every Task's overrides, filled with `parameters` and the longest run id, task
/// id and trigger they can get, stay within Batch's 8,192 characters. Foreach values are the
/// one part not counted: they are known only when the foreach step has run.
pub fn check_overrides(
    definition: &Value,
    parameters: &TypedParameters,
    bounds: Bounds,
) -> Result<(), Oversized> {
    check_task_overrides(definition, &task_overrides(definition), parameters, bounds)
}

/// [`check_overrides`] on the definition's tasks found already, so that the compiler walks a
/// large definition once for both of its checks.
pub(crate) fn check_task_overrides(
    definition: &Value,
    tasks: &[TaskOverrides<'_>],
    parameters: &TypedParameters,
    bounds: Bounds,
) -> Result<(), Oversized> {
    let root_chars = definition["States"]["Flowline.Context"]["Parameters"]["root"]
        .as_str()
        .map_or(0, str::len);
    let parameters_json = serde_json::to_string(parameters).unwrap_or_default();
    let filler = Filler {
        root_chars,
        parameters_chars: escaped_len(&parameters_json),
        texts: parameters
            .iter()
            .map(|(name, value)| (name.as_str(), escaped_len(&text_of(value))))
            .collect(),
        bounds,
    };
    for task in tasks {
        for container in &task.containers {
            let size = filler.len(container);
            if size > MAX_OVERRIDES_CHARS {
                return Err(Oversized {
                    job: task.job.clone(),
                    size,
                });
            }
        }
    }
    Ok(())
}

/// Length of a string once written as JSON, without its quotes: counted as serde_json
/// escapes (quote, backslash and control characters), without writing it, since it runs for
/// every key of every task's overrides.
fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Measures overrides as Step Functions sends them: each `"Name.$": expression` becomes
/// `"Name": "<value>"`, with the value's longest length.
struct Filler<'a> {
    root_chars: usize,
    parameters_chars: usize,
    texts: BTreeMap<&'a str, usize>,
    bounds: Bounds,
}

impl Filler<'_> {
    fn len(&self, value: &Value) -> usize {
        match value {
            Value::Object(map) => {
                let fields: usize = map
                    .iter()
                    .map(
                        |(key, value)| match (key.strip_suffix(".$"), value.as_str()) {
                            (Some(name), Some(expression)) => {
                                escaped_len(name) + 2 + 1 + self.expression(expression) + 2
                            }
                            _ => escaped_len(key) + 2 + 1 + self.len(value),
                        },
                    )
                    .sum();
                2 + fields + map.len().saturating_sub(1)
            }
            Value::Array(items) => {
                2 + items.iter().map(|v| self.len(v)).sum::<usize>() + items.len().saturating_sub(1)
            }
            Value::String(text) => escaped_len(text) + 2,
            Value::Null | Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(number) => number.to_string().len(),
        }
    }

    /// The longest escaped length of an expression's value.
    fn expression(&self, expression: &str) -> usize {
        if let Some(rest) = expression.strip_prefix("States.Format('") {
            let (template, args) = split_template(rest);
            return template + args.iter().map(|arg| self.path(arg)).sum::<usize>();
        }
        if let Some(path) = expression
            .strip_prefix("States.JsonToString(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            return match path {
                "$.parameters" => self.parameters_chars,
                "$.caught" => CAUGHT_ERROR_CHARS,
                _ => self.path(path),
            };
        }
        self.path(expression)
    }

    fn path(&self, path: &str) -> usize {
        match path {
            "$.root" => self.root_chars,
            "$.runId" => RUN_ID_CHARS,
            "$.taskId" => TASK_ID_CHARS,
            "$.foreachIndex" => FOREACH_INDEX_CHARS,
            // Known only at run time: not counted (see `check_overrides`).
            "$.foreachValue" => 0,
            "$.trigger.bucket" if self.bounds.s3_trigger => TRIGGER_BUCKET_CHARS,
            "$.trigger.key" if self.bounds.s3_trigger => TRIGGER_KEY_CHARS,
            "$.trigger.bucket" | "$.trigger.key" => 0,
            other => other
                .strip_prefix("$.paramText.")
                .and_then(|rest| rest.strip_suffix(".text"))
                .and_then(|name| self.texts.get(name).copied())
                .unwrap_or(0),
        }
    }
}

/// The literal length of a `States.Format` template (after its opening quote) and its
/// arguments.
fn split_template(rest: &str) -> (usize, Vec<&str>) {
    let mut literal = 0;
    let mut chars = rest.char_indices();
    let mut end = rest.len();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
                literal += 1;
            }
            '\'' => {
                end = index;
                break;
            }
            '{' | '}' => {}
            _ => literal += 1,
        }
    }
    let args = rest
        .get(end + 1..)
        .unwrap_or("")
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|arg| !arg.is_empty())
        .collect();
    (literal, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaped_length_is_what_serde_json_writes() {
        for text in [
            "",
            "plain",
            "quote \" and \\ slash",
            "tab\tnew\nline\r",
            "\u{1}\u{1f}\u{7f}",
            "é ✓ 🦀",
            "\u{8}\u{c}",
        ] {
            let written = serde_json::to_string(text).unwrap();
            assert_eq!(
                escaped_len(text),
                written.len() - 2,
                "{text:?} as {written}"
            );
        }
    }

    #[test]
    fn values_convert_to_their_types() {
        assert_eq!(typed(ParameterType::Int, "5"), Ok(json!(5)));
        assert_eq!(typed(ParameterType::Int, " +7 "), Ok(json!(7)));
        assert_eq!(typed(ParameterType::Float, "0.5"), Ok(json!(0.5)));
        assert_eq!(typed(ParameterType::Bool, "true"), Ok(json!(true)));
        assert_eq!(
            typed(ParameterType::Json, r#"{"a": [1, 2]}"#),
            Ok(json!({"a": [1, 2]}))
        );
        assert_eq!(typed(ParameterType::String, "5"), Ok(json!("5")));
        assert!(typed(ParameterType::Int, "five").is_err());
        assert!(typed(ParameterType::Float, "inf").is_err());
        assert!(typed(ParameterType::Float, "NaN").is_err());
        assert!(typed(ParameterType::Bool, "yes").is_err());
        assert!(typed(ParameterType::Json, "{").is_err());
    }

    #[test]
    fn texts_are_what_json_writes() {
        assert_eq!(text_of(&json!(5)), "5");
        assert_eq!(text_of(&json!(true)), "true");
        assert_eq!(text_of(&json!("a b")), "a b");
        assert_eq!(text_of(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(env_name("learning_rate"), "FLOWLINE_PARAM_LEARNING_RATE");
    }

    #[test]
    fn templates_count_their_literal_part_and_arguments() {
        let (literal, args) = split_template("{}/{}/train/{}/', $.root, $.runId, $.taskId)");
        assert_eq!(literal, "//train//".len());
        assert_eq!(args, vec!["$.root", "$.runId", "$.taskId"]);
        let (literal, args) = split_template("a\\'b{}', $.x)");
        assert_eq!(literal, 3);
        assert_eq!(args, vec!["$.x"]);
    }

    #[test]
    fn filled_overrides_count_the_values_they_receive() {
        let definition = json!({"States": {
            "Flowline.Context": {"Parameters": {"root": "s3://b/p"}},
            "start": {"Type": "Task", "Parameters": {"JobName": "f-start", "ContainerOverrides": {"Environment": [
                {"Name": "FLOWLINE_PARAMETERS", "Value.$": "States.JsonToString($.parameters)"},
                {"Name": "FLOWLINE_PARAM_X", "Value.$": "$.paramText.x.text"}
            ]}}}
        }});
        let small = TypedParameters::from([("x".to_owned(), json!("v"))]);
        assert!(check_overrides(&definition, &small, Bounds { s3_trigger: false }).is_ok());
        let big = TypedParameters::from([("x".to_owned(), json!("v".repeat(4096)))]);
        let error = check_overrides(&definition, &big, Bounds { s3_trigger: false }).unwrap_err();
        assert_eq!(error.job, "f-start");
        // The value twice (in FLOWLINE_PARAMETERS, escaped, and as text) and the names.
        assert!(error.size > 2 * 4096, "{error:?}");
    }
}
