//! Conditions on fields of a tool call's JSON input.

use serde_json::Value;

use crate::glob::Pattern;

/// One test on the value at a path.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Equals(Value),
    OneOf(Vec<Value>),
    Matches(Pattern),
    Greater(f64),
    GreaterOrEqual(f64),
    Less(f64),
    LessOrEqual(f64),
    MinLength(u64),
    MaxLength(u64),
    Present(bool),
}

/// A path into the input and the tests its value must pass, all of them.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    /// JSON Pointer (RFC 6901), such as `/attendees/0/email`.
    pub path: String,
    pub tests: Vec<Test>,
}

/// Outcome of a condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Holds,
    Fails,
    /// The value has a type the test cannot apply to; the message says which.
    WrongType(String),
}

impl Condition {
    pub(crate) fn evaluate(&self, input: &Value) -> Outcome {
        let value = input.pointer(&self.path);
        for test in &self.tests {
            match test.evaluate(value) {
                Ok(true) => {}
                Ok(false) => return Outcome::Fails,
                Err(expected) => {
                    let found = value.map_or("nothing", type_name);
                    return Outcome::WrongType(format!("input field `{}` is {found}, expected {expected}", self.path));
                }
            }
        }
        Outcome::Holds
    }
}

impl Test {
    /// Returns whether the test passes, or the expected type when the value has another one.
    /// An absent value fails every test except `present: false`.
    fn evaluate(&self, value: Option<&Value>) -> Result<bool, &'static str> {
        let Some(value) = value else {
            return Ok(matches!(self, Self::Present(false)));
        };
        match self {
            Self::Present(expected) => Ok(*expected),
            Self::Equals(expected) => Ok(json_equal(value, expected)),
            Self::OneOf(options) => Ok(options.iter().any(|option| json_equal(value, option))),
            Self::Matches(pattern) => value.as_str().map(|text| pattern.is_match(text)).ok_or("a string"),
            Self::Greater(bound) => number(value).map(|n| n > *bound),
            Self::GreaterOrEqual(bound) => number(value).map(|n| n >= *bound),
            Self::Less(bound) => number(value).map(|n| n < *bound),
            Self::LessOrEqual(bound) => number(value).map(|n| n <= *bound),
            Self::MinLength(bound) => length(value).map(|n| n >= *bound),
            Self::MaxLength(bound) => length(value).map(|n| n <= *bound),
        }
    }
}

fn number(value: &Value) -> Result<f64, &'static str> {
    value.as_f64().ok_or("a number")
}

/// Length in Unicode scalar values for strings, in elements for arrays and objects.
fn length(value: &Value) -> Result<u64, &'static str> {
    let count = match value {
        Value::String(text) => text.chars().count(),
        Value::Array(items) => items.len(),
        Value::Object(fields) => fields.len(),
        _ => return Err("a string, array or object"),
    };
    Ok(u64::try_from(count).unwrap_or(u64::MAX))
}

/// JSON equality in which numbers compare by value, so `1` equals `1.0`.
fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_equal(x, y)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(key, x)| b.get(key).is_some_and(|y| json_equal(x, y)))
        }
        _ => left == right,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks that `path` is a JSON Pointer: empty, or `/`-separated tokens in which `~` is
/// followed only by `0` or `1`.
pub(crate) fn check_pointer(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "invalid path `{path}`: expected a JSON Pointer starting with `/`, such as `/query` or `/attendees/0/email`"
        ));
    }
    let mut chars = path.chars();
    while let Some(current) = chars.next() {
        if current == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!("invalid path `{path}`: `~` must be followed by `0` (for `~`) or `1` (for `/`)"));
        }
    }
    Ok(())
}
