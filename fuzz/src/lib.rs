//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! The loader targets take the fuzzer's bytes as the YAML text, so that the seed corpus can be
//! real files. The names, keys and tool inputs they probe the loaded result with come from the
//! same text, which lets the fuzzer steer the probes without a second input format.

use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Maximum length of a probe word, in bytes.
const MAX_WORD_BYTES: usize = 64;

/// Returns the instant at which keys and policies are checked: 2026-01-01T00:00:00Z.
pub fn probe_instant() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Returns up to `max_words` distinct words of `text`, in order of appearance, followed by
/// `fixed`. A word is a run of characters that can appear in a model id, a tool name, a key or
/// a JSON Pointer, so quoted YAML scalars come out without their quotes. Comments, from `#` to
/// the end of the line, are skipped, so the header comment of a real file does not use up the
/// words.
pub fn probe_words<'a>(text: &'a str, max_words: usize, fixed: &[&'a str]) -> Vec<&'a str> {
    let is_word_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '*' | '?' | '@');
    let uncommented = text.lines().map(|line| line.split('#').next().unwrap_or_default());
    let mut words: Vec<&str> = Vec::new();
    for word in uncommented.flat_map(|line| line.split(|c: char| !is_word_char(c))) {
        if words.len() == max_words {
            break;
        }
        if !word.is_empty() && word.len() <= MAX_WORD_BYTES && !words.contains(&word) {
            words.push(word);
        }
    }
    for word in fixed {
        if !words.contains(word) {
            words.push(word);
        }
    }
    words
}

/// Builds tool inputs for the policy's conditions from `words`: an empty object, and objects
/// whose fields, named by the words that look like JSON Pointers, hold a string, a number or
/// an array of the words.
pub fn probe_inputs(words: &[&str]) -> Vec<Value> {
    let fields: Vec<&str> = words
        .iter()
        .filter_map(|word| word.strip_prefix('/'))
        .map(|pointer| pointer.split('/').next().unwrap_or_default())
        .collect();
    let array: Vec<Value> = words.iter().map(|word| Value::from(*word)).collect();
    let number = words.iter().find_map(|word| word.parse::<f64>().ok()).unwrap_or(51.0);

    let object_of = |value: Value| {
        let object: Map<String, Value> = fields.iter().map(|field| ((*field).to_owned(), value.clone())).collect();
        Value::Object(object)
    };
    vec![
        Value::Object(Map::new()),
        object_of(Value::from(words.first().copied().unwrap_or_default())),
        object_of(Value::from(number)),
        object_of(Value::Array(array)),
    ]
}

/// Checks what every load error must satisfy: it names `origin`, lists at least one problem,
/// and places each problem at a 1-based position inside `text`.
pub fn check_load_error(error: &mcpsec_policy::LoadError, origin: &str, text: &str) {
    assert_eq!(error.origin, origin);
    assert!(!error.problems.is_empty(), "a load error without problems: {error:?}");

    // Every line break counts, so CRLF counts twice and the bound stays an upper bound.
    let max_line = text.chars().filter(|c| matches!(c, '\n' | '\r')).count() as u64 + 1;
    for problem in &error.problems {
        assert!(!problem.message.is_empty(), "a problem without a message: {problem:?}");
        if let Some(position) = problem.position {
            assert!(position.line >= 1, "line is not 1-based: {problem:?}");
            assert!(position.column >= 1, "column is not 1-based: {problem:?}");
            assert!(position.line <= max_line, "line {} is past the end of the text: {problem:?}", position.line);
        }
    }

    let rendered = error.to_string();
    assert!(rendered.starts_with(origin), "rendered error does not start with the origin: {rendered}");
}
