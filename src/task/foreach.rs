//! The item list of a foreach step, checked before it is stored: the Distributed Map reads it
//! as a JSON array (`ItemReader`, `InputType: JSON`), and each element reaches one task in
//! `FLOWLINE_FOREACH_VALUE`. A list that cannot fan out fails the foreach task itself, with the
//! reason, rather than the Map state or a child job later.

use serde_json::Value;

/// Most items a Distributed Map reads (`ItemReader` `MaxItems`: 100,000,000).
pub const MAX_ITEMS: usize = 100_000_000;
/// Longest JSON encoding of one item. Each item is passed to its task as
/// `FLOWLINE_FOREACH_VALUE` in the job's container overrides, which Batch caps at 8,192
/// characters in all; an item this long can never fit next to the rest of the task contract.
pub const MAX_ITEM_CHARS: usize = crate::compile::MAX_OVERRIDES_CHARS;

/// Why a foreach list cannot fan out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForeachError {
    #[error("the foreach list {name} was not written under $FLOWLINE_OUTPUT_DIR")]
    Missing { name: String },
    #[error("the foreach list {name} is not JSON: {reason}")]
    NotJson { name: String, reason: String },
    #[error("the foreach list {name} must be a JSON array, not {found}")]
    NotArray { name: String, found: &'static str },
    #[error(
        "the foreach list {name} has {count} items, over the {MAX_ITEMS} a Distributed Map reads"
    )]
    TooMany { name: String, count: usize },
    #[error(
        "item {index} of the foreach list {name} is {chars} characters as JSON; each item reaches its task in FLOWLINE_FOREACH_VALUE, within AWS Batch's {MAX_ITEM_CHARS} characters of container overrides: store large items in S3 and list their keys"
    )]
    ItemTooLarge {
        name: String,
        index: usize,
        chars: usize,
    },
}

/// Checks the list's bytes; returns its length.
pub fn validate(name: &str, bytes: &[u8]) -> Result<usize, ForeachError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| ForeachError::NotJson {
        name: name.into(),
        reason: error.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(ForeachError::NotArray {
            name: name.into(),
            found: kind(&value),
        });
    };
    if items.len() > MAX_ITEMS {
        return Err(ForeachError::TooMany {
            name: name.into(),
            count: items.len(),
        });
    }
    for (index, item) in items.iter().enumerate() {
        let chars = item.to_string().chars().count();
        if chars > MAX_ITEM_CHARS {
            return Err(ForeachError::ItemTooLarge {
                name: name.into(),
                index,
                chars,
            });
        }
    }
    Ok(items.len())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_of_small_items_fans_out() {
        assert_eq!(validate("foreach.json", br#"[1, "a", {"k": [2]}]"#), Ok(3));
        assert_eq!(validate("foreach.json", b"[]"), Ok(0));
    }

    #[test]
    fn anything_but_an_array_of_fitting_items_is_refused_with_the_reason() {
        assert!(matches!(
            validate("items.json", b"{\"a\": 1}"),
            Err(ForeachError::NotArray {
                found: "an object",
                ..
            })
        ));
        assert!(matches!(
            validate("items.json", b"[1,"),
            Err(ForeachError::NotJson { .. })
        ));
        let big = format!("[1, \"{}\"]", "x".repeat(MAX_ITEM_CHARS));
        let error = validate("items.json", big.as_bytes()).unwrap_err();
        assert!(
            matches!(error, ForeachError::ItemTooLarge { index: 1, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("FLOWLINE_FOREACH_VALUE"));
    }
}
