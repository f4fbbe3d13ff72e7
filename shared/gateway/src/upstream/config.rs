//! The upstreams file: parsed with positions, then checked into [`UpstreamSpec`]s.
//!
//! The file is read like the policy and keys files, with the same YAML limits and wording of
//! errors ([`mcpsec_policy::yaml`]). Prefixes follow [`mcpsec_policy::names`], and two
//! prefixes, or two names, that differ only in ASCII case are rejected: the policy's deny
//! rules ignore case, so such prefixes would make one rule apply to two servers.

use std::collections::HashMap;
use std::time::Duration;

use mcpsec_policy::yaml::{YamlLimits, position_of};
use mcpsec_policy::{LoadError, Position, Problem, names};
use reqwest::Url;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::client::DEFAULT_MAX_RESPONSE_BYTES;

/// Timeout of an upstream whose entry sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum timeout. A longer wait would hold a model's tool call open for hours.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Largest accepted `max_response_bytes`.
const MAX_RESPONSE_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;

/// Maximum length of an upstream name, in characters.
const MAX_NAME_CHARS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    upstreams: Spanned<Vec<Spanned<RawUpstream>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Spanned<String>,
    url: Spanned<String>,
    prefix: Spanned<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    max_response_bytes: Option<Spanned<u64>>,
}

/// One checked entry of the upstreams file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamSpec {
    /// Name in logs and errors.
    pub(crate) name: String,
    /// The MCP endpoint, http or https.
    pub(crate) url: Url,
    /// The tool-name prefix that routes to this upstream.
    pub(crate) prefix: String,
    /// Time limit of one request.
    pub(crate) timeout: Duration,
    /// Limit on the size of one reply body, in bytes.
    pub(crate) max_response_bytes: usize,
}

/// Parses and checks an upstreams file, naming `origin` in every error.
pub(crate) fn parse(origin: &str, text: &str) -> Result<Vec<UpstreamSpec>, LoadError> {
    let raw: RawFile = mcpsec_policy::yaml::parse(origin, text, YamlLimits::UPSTREAMS)?;

    let mut problems = Vec::new();
    let specs = check_file(raw, &mut problems);
    if problems.is_empty() {
        Ok(specs)
    } else {
        problems.sort_by_key(|problem| problem.position.map(|position| (position.line, position.column)));
        Err(load_error(origin, problems))
    }
}

/// Checks a URL from the file or the environment.
pub(crate) fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|error| format!("`{text}` is not a valid URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}` must be an http or https URL"));
    }
    Ok(url)
}

fn check_file(raw: RawFile, problems: &mut Vec<Problem>) -> Vec<UpstreamSpec> {
    if raw.upstreams.value.is_empty() {
        let message = "list at least one upstream, or unset `UPSTREAMS_FILE` to run without upstreams";
        problems.push(problem(position_of(raw.upstreams.referenced), "upstreams", message.to_owned()));
    }

    let mut names = FirstUse::default();
    let mut prefixes = FirstUse::default();
    let mut specs = Vec::new();
    for (index, entry) in raw.upstreams.value.into_iter().enumerate() {
        let field = format!("upstreams[{index}]");
        let entry = entry.value;
        names.check(&entry.name, "upstream name", &format!("{field}.name"), problems);
        prefixes.check(&entry.prefix, "prefix", &format!("{field}.prefix"), problems);
        if let Some(spec) = check_entry(entry, &field, problems) {
            specs.push(spec);
        }
    }
    specs
}

fn check_entry(entry: RawUpstream, field: &str, problems: &mut Vec<Problem>) -> Option<UpstreamSpec> {
    let name = report(problems, &entry.name, &format!("{field}.name"), check_name(&entry.name.value));
    let prefix = report(problems, &entry.prefix, &format!("{field}.prefix"), check_prefix(&entry.prefix.value));
    let url = report(problems, &entry.url, &format!("{field}.url"), check_url(&entry.url.value));

    let timeout = match &entry.timeout {
        Some(timeout) => report(problems, timeout, &format!("{field}.timeout"), check_timeout(&timeout.value)),
        None => Some(DEFAULT_TIMEOUT),
    };
    let max_response_bytes = match &entry.max_response_bytes {
        Some(max) => report(problems, max, &format!("{field}.max_response_bytes"), check_max_response_bytes(max.value)),
        None => Some(DEFAULT_MAX_RESPONSE_BYTES),
    };

    Some(UpstreamSpec {
        name: name.map(|()| entry.name.value)?,
        url: url?,
        prefix: prefix.map(|()| entry.prefix.value)?,
        timeout: timeout?,
        max_response_bytes: max_response_bytes?,
    })
}

/// Records a failed check as a problem at `value`'s position.
fn report<T, V>(problems: &mut Vec<Problem>, value: &Spanned<V>, field: &str, checked: Result<T, String>) -> Option<T> {
    match checked {
        Ok(checked) => Some(checked),
        Err(message) => {
            problems.push(problem(position_of(value.referenced), field, message));
            None
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    check_identifier(name, "upstream name", |character| character.is_ascii_alphanumeric() || "_-.".contains(character))
        .map_err(|reason| format!("{reason}; use letters, digits, `_`, `-` and `.`"))
}

/// Checks a prefix against [`names::check_prefix`]. A prefix never contains `.`, so the first
/// `.` of a tool name ends the prefix, and no prefix such as `a` can shadow another such as
/// `a.b`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    names::check_prefix(prefix).map_err(|error| error.to_string())
}

fn check_identifier(value: &str, kind: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{kind} is empty"));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(format!("{kind} `{value}` is longer than {MAX_NAME_CHARS} characters"));
    }
    if let Some(character) = value.chars().find(|character| !allowed(*character)) {
        return Err(format!("{kind} `{value}` contains {character:?}"));
    }
    Ok(())
}

fn check_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a duration such as `30s` or `2m`: {error}"))?;
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(format!(
            "timeout `{text}` must be more than zero and at most {}",
            humantime::format_duration(MAX_TIMEOUT)
        ));
    }
    Ok(timeout)
}

fn check_max_response_bytes(max: u64) -> Result<usize, String> {
    if max == 0 || max > MAX_RESPONSE_BYTES_LIMIT {
        return Err(format!("{max} must be between 1 and {MAX_RESPONSE_BYTES_LIMIT} bytes"));
    }
    usize::try_from(max).map_err(|_| format!("{max} does not fit in memory on this platform"))
}

/// The first use of each name, keyed by its lowercase form, to report duplicates, including
/// names that differ only in ASCII case.
#[derive(Default)]
struct FirstUse(HashMap<String, (String, Option<Position>)>);

impl FirstUse {
    fn check(&mut self, value: &Spanned<String>, kind: &str, field: &str, problems: &mut Vec<Problem>) {
        let position = position_of(value.referenced);
        let folded = value.value.to_ascii_lowercase();
        let Some((first_value, first)) = self.0.get(&folded) else {
            self.0.insert(folded, (value.value.clone(), position));
            return;
        };

        let duplicate = if *first_value == value.value {
            format!("duplicate {kind} `{}`", value.value)
        } else {
            format!("{kind} `{}` differs only in case from `{first_value}`", value.value)
        };
        let message = match first {
            Some(first) => format!("{duplicate}, first used on line {}", first.line),
            None => duplicate,
        };
        problems.push(problem(position, field, message));
    }
}

fn problem(position: Option<Position>, field: &str, message: String) -> Problem {
    Problem { position, field: field.to_owned(), message }
}

fn load_error(origin: &str, problems: Vec<Problem>) -> LoadError {
    LoadError { origin: origin.to_owned(), problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_file_with_defaults() -> Result<(), LoadError> {
        let text = "upstreams:\n  - name: calendar\n    url: http://127.0.0.1:9001/mcp\n    prefix: calendar\n";
        let specs = parse("upstreams.yaml", text)?;
        assert_eq!(specs.len(), 1);
        let spec = specs.first();
        assert_eq!(spec.map(|spec| spec.name.as_str()), Some("calendar"));
        assert_eq!(spec.map(|spec| spec.url.as_str()), Some("http://127.0.0.1:9001/mcp"));
        assert_eq!(spec.map(|spec| spec.timeout), Some(DEFAULT_TIMEOUT));
        assert_eq!(spec.map(|spec| spec.max_response_bytes), Some(DEFAULT_MAX_RESPONSE_BYTES));
        Ok(())
    }

    #[test]
    fn valid_file_with_every_field() -> Result<(), LoadError> {
        let text = "\
upstreams:
  - name: calendar
    url: http://127.0.0.1:9001/mcp
    prefix: calendar      # tools are named calendar.<tool>
    timeout: 2m 30s
    max_response_bytes: 1048576
  - name: search.v2
    url: https://127.0.0.1:9002/mcp
    prefix: web_search-2
";
        let specs = parse("upstreams.yaml", text)?;
        let summary: Vec<_> =
            specs.iter().map(|spec| (spec.prefix.as_str(), spec.timeout, spec.max_response_bytes)).collect();
        assert_eq!(
            summary,
            [
                ("calendar", Duration::from_secs(150), 1_048_576),
                ("web_search-2", DEFAULT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES)
            ]
        );
        Ok(())
    }

    #[test]
    fn invalid_files() {
        let entry =
            |name: &str, url: &str, prefix: &str| format!("  - name: {name}\n    url: {url}\n    prefix: {prefix}\n");
        let good = entry("calendar", "http://127.0.0.1:9001/mcp", "calendar");
        let cases = [
            ("empty list", "upstreams: []\n".to_owned()),
            ("missing list", "other: 1\n".to_owned()),
            ("unknown field", format!("upstreams:\n{good}    retries: 3\n")),
            ("missing url", "upstreams:\n  - name: a\n    prefix: a\n".to_owned()),
            (
                "duplicate names",
                format!("upstreams:\n{good}{}", entry("calendar", "http://127.0.0.1:9002/mcp", "other")),
            ),
            (
                "duplicate prefixes",
                format!("upstreams:\n{good}{}", entry("other", "http://127.0.0.1:9002/mcp", "calendar")),
            ),
            (
                "dotted prefix",
                format!(
                    "upstreams:\n{}{}",
                    entry("a", "http://127.0.0.1:1/mcp", "a"),
                    entry("ab", "http://127.0.0.1:2/mcp", "a.b")
                ),
            ),
            ("prefix with space", format!("upstreams:\n{}", entry("a", "http://127.0.0.1:1/mcp", "'my tools'"))),
            ("empty prefix", format!("upstreams:\n{}", entry("a", "http://127.0.0.1:1/mcp", "''"))),
            ("file url", format!("upstreams:\n{}", entry("a", "file:///etc/passwd", "a"))),
            ("relative url", format!("upstreams:\n{}", entry("a", "/mcp", "a"))),
            ("bad name", format!("upstreams:\n{}", entry("'my server'", "http://127.0.0.1:1/mcp", "a"))),
            ("bad timeout", format!("upstreams:\n{good}    timeout: soon\n")),
            ("zero timeout", format!("upstreams:\n{good}    timeout: 0s\n")),
            ("long timeout", format!("upstreams:\n{good}    timeout: 2h\n")),
            ("zero size limit", format!("upstreams:\n{good}    max_response_bytes: 0\n")),
            ("duplicate key", format!("upstreams:\n{good}    prefix: again\n")),
            ("duplicate top-level key", format!("upstreams: []\nupstreams:\n{good}")),
            ("not yaml", "upstreams: [\n".to_owned()),
            (
                "prefixes differing only in case",
                format!("upstreams:\n{good}{}", entry("other", "http://127.0.0.1:9002/mcp", "Calendar")),
            ),
            (
                "names differing only in case",
                format!("upstreams:\n{good}{}", entry("CALENDAR", "http://127.0.0.1:9002/mcp", "other")),
            ),
            ("full-width prefix", format!("upstreams:\n{}", entry("a", "http://127.0.0.1:1/mcp", "ｃalendar"))),
            (
                "zero-width prefix",
                format!("upstreams:\n{}", entry("a", "http://127.0.0.1:1/mcp", "\"cal\\u200Bendar\"")),
            ),
            (
                "prefix of 65 characters",
                format!("upstreams:\n{}", entry("a", "http://127.0.0.1:1/mcp", &"p".repeat(65))),
            ),
            ("null prefix", format!("upstreams:\n{}", entry("a", "http://127.0.0.1:1/mcp", "~"))),
            ("size limit as an exponent", format!("upstreams:\n{good}    max_response_bytes: 1e6\n")),
            ("size limit with a leading zero", format!("upstreams:\n{good}    max_response_bytes: 0100\n")),
            ("timeout without a unit", format!("upstreams:\n{good}    timeout: 30\n")),
            (
                "merge key",
                "upstreams:\n  - &a {name: a, url: 'http://127.0.0.1:1/mcp', prefix: a}\n  - <<: *a\n    name: b\n"
                    .to_owned(),
            ),
            ("two documents", format!("upstreams:\n{good}---\nupstreams: []\n")),
        ];

        let mut rendered = String::new();
        for (case, text) in cases {
            let outcome = match parse("upstreams.yaml", &text) {
                Ok(specs) => format!("unexpectedly valid: {specs:?}"),
                Err(error) => error.to_string(),
            };
            rendered.push_str(&format!("{case}:\n{outcome}\n\n"));
        }
        insta::assert_snapshot!("invalid_upstream_files", rendered);
    }

    #[test]
    fn yaml_one_one_words_are_text() -> Result<(), LoadError> {
        let text = "upstreams:\n  - name: no\n    url: http://127.0.0.1:1/mcp\n    prefix: on\n  \
                    - name: 012\n    url: http://127.0.0.1:2/mcp\n    prefix: 1e3\n";
        let specs = parse("upstreams.yaml", text)?;
        let pairs: Vec<(&str, &str)> = specs.iter().map(|spec| (spec.name.as_str(), spec.prefix.as_str())).collect();
        assert_eq!(pairs, [("no", "on"), ("012", "1e3")]);
        Ok(())
    }

    #[test]
    fn oversized_file_is_rejected() {
        let text = format!("upstreams: []\n# {}\n", "x".repeat(1024 * 1024));
        let error = parse("upstreams.yaml", &text).err().map(|error| error.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "upstreams.yaml: input is 1048593 bytes, more than the limit of 1048576 bytes; split the file or \
                 remove unused entries"
            )
        );
    }

    #[test]
    fn url_check_cases() {
        assert!(check_url("http://127.0.0.1:9001/mcp").is_ok());
        assert!(check_url("https://127.0.0.1/mcp").is_ok());
        assert_eq!(
            check_url("ftp://127.0.0.1/mcp").err().as_deref(),
            Some("`ftp://127.0.0.1/mcp` must be an http or https URL")
        );
        assert!(check_url("127.0.0.1:9001").is_err());
    }
}
