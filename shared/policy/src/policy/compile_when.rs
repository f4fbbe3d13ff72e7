//! Validation of a rule's `when` conditions.

use serde_json::Value;
use serde_saphyr::Spanned;

use super::condition::{Condition, Test, check_pointer};
use super::schema::RawCondition;
use crate::error::Problem;
use crate::glob::Pattern;
use crate::yaml::{plain_scalar, position_of};

pub(super) fn check_condition(
    condition: Spanned<RawCondition>,
    field: &str,
    source: &str,
    problems: &mut Vec<Problem>,
) -> Option<Condition> {
    let position = position_of(condition.referenced);
    let raw = condition.value;
    let before = problems.len();

    if let Err(message) = check_pointer(&raw.path.value) {
        problems.push(Problem::new(position_of(raw.path.referenced), format!("{field}.path"), message));
    }

    let test_given = raw.equals.is_some()
        || raw.one_of.is_some()
        || raw.matches.is_some()
        || [&raw.gt, &raw.gte, &raw.lt, &raw.lte].iter().any(|bound| bound.is_some())
        || raw.min_length.is_some()
        || raw.max_length.is_some()
        || raw.present.is_some();
    let mut tests = Vec::new();
    push_bounds(&raw, field, source, &mut tests, problems);
    if let Some(value) = raw.equals {
        check_spelling(&value, &format!("{field}.equals"), source, problems);
        tests.push(Test::Equals(value.value));
    }
    if let Some(options) = raw.one_of {
        if options.value.is_empty() {
            problems.push(Problem::new(
                position_of(options.referenced),
                format!("{field}.one_of"),
                "`one_of` needs at least one value",
            ));
        }
        for (index, option) in options.value.iter().enumerate() {
            check_spelling(option, &format!("{field}.one_of[{index}]"), source, problems);
        }
        tests.push(Test::OneOf(options.value.into_iter().map(|option| option.value).collect()));
    }
    if let Some(pattern) = raw.matches {
        match Pattern::new(&pattern.value) {
            Ok(compiled) => tests.push(Test::Matches(compiled)),
            Err(error) => problems.push(Problem::new(
                position_of(pattern.referenced),
                format!("{field}.matches"),
                error.to_string(),
            )),
        }
    }
    if let (Some(low), Some(high)) = (raw.min_length, raw.max_length)
        && low > high
    {
        problems.push(Problem::new(
            position,
            field,
            format!("`min_length` {low} is above `max_length` {high}, so the condition could never hold"),
        ));
    }
    if let Some(present) = raw.present {
        tests.push(Test::Present(present));
    }

    if !test_given {
        let message = "a condition needs at least one test: equals, one_of, matches, gt, gte, lt, lte, min_length, max_length or present";
        problems.push(Problem::new(position, field, message));
    }
    if problems.len() > before {
        return None;
    }
    Some(Condition { path: raw.path.value, tests })
}

fn push_bounds(raw: &RawCondition, field: &str, source: &str, tests: &mut Vec<Test>, problems: &mut Vec<Problem>) {
    let bounds = [
        ("gt", &raw.gt, Test::Greater as fn(f64) -> Test),
        ("gte", &raw.gte, Test::GreaterOrEqual),
        ("lt", &raw.lt, Test::Less),
        ("lte", &raw.lte, Test::LessOrEqual),
    ];
    for (name, bound, test) in bounds {
        let Some(bound) = bound else { continue };
        let field = format!("{field}.{name}");
        if !bound.value.is_finite() {
            // No JSON number is infinite or NaN, so `gt: .nan` would never hold and a deny
            // rule with it would never deny.
            let written = plain_scalar(source, bound.referenced).map_or_else(|| bound.value.to_string(), str::to_owned);
            let message = format!("`{name}` must be a finite number, not `{written}`");
            problems.push(Problem::new(position_of(bound.referenced), field, message));
            continue;
        }
        if check_number_spelling(bound.referenced, &field, source, problems) {
            tests.push(test(bound.value));
        }
    }
    if let Some(bound) = raw.min_length {
        tests.push(Test::MinLength(bound));
    }
    if let Some(bound) = raw.max_length {
        tests.push(Test::MaxLength(bound));
    }
}

/// Rejects a number in a condition value that YAML 1.1 and YAML 1.2 read differently.
fn check_spelling(value: &Spanned<Value>, field: &str, source: &str, problems: &mut Vec<Problem>) {
    if value.value.is_number() {
        check_number_spelling(value.referenced, field, source, problems);
    }
}

/// Returns false, after recording a problem, when the plain scalar at `location` is an integer
/// with a leading zero, such as `012`. YAML 1.1 reads it as octal 10 and YAML 1.2 as 12, so
/// the file does not say which number its author meant.
fn check_number_spelling(
    location: serde_saphyr::Location,
    field: &str,
    source: &str,
    problems: &mut Vec<Problem>,
) -> bool {
    let Some(text) = plain_scalar(source, location) else { return true };
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let leading_zero = digits.len() > 1
        && digits.starts_with('0')
        && digits.chars().all(|character| character.is_ascii_digit() || character == '_');
    if !leading_zero {
        return true;
    }
    let message = format!(
        "`{text}` has a leading zero, which YAML 1.1 reads as an octal number and YAML 1.2 as a decimal one; \
         write it without the leading zero, as `0o…` for octal, or quoted for text"
    );
    problems.push(Problem::new(position_of(location), field, message));
    false
}
