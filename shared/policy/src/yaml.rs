//! Bounded YAML parsing for untrusted configuration files.
//!
//! `serde-saphyr` parses without unsafe code, reports positions, rejects duplicate keys and
//! enforces a budget on events, nodes, aliases, depth and scalar bytes. The loaders here add a
//! cap on the input size, because the budget's own size limit applies only to readers, and
//! tighten the budget: a policy or keys file is a small, flat document, so anything much
//! deeper or larger is an attack or a mistake.
//!
//! Documents are read as YAML 1.2 core schema. Where YAML 1.1 would read a value differently,
//! the value either has one meaning here, or is rejected:
//!
//! * A text field contains the text as written: a model named `no` is the model `no`, and a tool
//!   pattern `on` matches the tool `on`. `null`, `~` and an empty value are rejected there.
//! * A boolean field takes only `true` and `false`; `yes`, `no`, `on`, `off`, `y` and `n`
//!   are rejected.
//! * A count takes whole numbers: `120`, `0x78`, `0o170`, `1_000`. A leading zero (`012`,
//!   octal in YAML 1.1), a fraction, an exponent (`1e3`) and `.inf` are rejected.
//! * Merge keys (`<<`), duplicate keys at any level and more than one document are rejected.

use serde::de::DeserializeOwned;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::options::{DuplicateKeyPolicy, MergeKeyPolicy};
use serde_saphyr::{Location, Options};

use crate::error::{LoadError, Position, Problem};

/// Limits applied to one YAML source.
#[derive(Debug, Clone, Copy)]
pub struct YamlLimits {
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most YAML nodes (scalars, mappings, sequences) in the document.
    pub max_nodes: usize,
    /// Most alias references (`*name`).
    pub max_aliases: usize,
    /// Most bytes in all scalars together, after alias expansion.
    pub max_scalar_bytes: usize,
}

impl YamlLimits {
    /// Limits for `policies.yaml`: room for 20,000 rules, nesting deep enough for
    /// conditions on list values.
    pub const POLICY: Self = Self {
        max_bytes: 8 * 1024 * 1024,
        max_depth: 24,
        max_nodes: 1_000_000,
        max_aliases: 1_000,
        max_scalar_bytes: 16 * 1024 * 1024,
    };

    /// Limits for `model_keys.yaml`: room for 50,000 models.
    pub const KEYS: Self = Self {
        max_bytes: 16 * 1024 * 1024,
        max_depth: 8,
        max_nodes: 1_000_000,
        max_aliases: 1_000,
        max_scalar_bytes: 16 * 1024 * 1024,
    };

    /// Limits for the upstreams file: room for roughly 10,000 entries of about 100 bytes.
    pub const UPSTREAMS: Self = Self {
        max_bytes: 1024 * 1024,
        max_depth: 8,
        max_nodes: 100_000,
        max_aliases: 100,
        max_scalar_bytes: 1024 * 1024,
    };

    fn options(self) -> Options {
        let budget = serde_saphyr::budget! {
            max_depth: self.max_depth,
            max_nodes: self.max_nodes,
            max_aliases: self.max_aliases,
            max_anchors: self.max_aliases,
            max_total_scalar_bytes: self.max_scalar_bytes,
            max_documents: 1,
            max_reader_input_bytes: Some(self.max_bytes),
        };
        serde_saphyr::options! {
            budget: budget,
            duplicate_keys: DuplicateKeyPolicy::Error,
            merge_keys: MergeKeyPolicy::Error,
            strict_booleans: true,
        }
    }
}

/// Parses `text` into `T` within `limits`, naming `origin` in every error.
///
/// `T` should reject unknown fields, so that a misspelt field is an error.
pub fn parse<T: DeserializeOwned>(origin: &str, text: &str, limits: YamlLimits) -> Result<T, LoadError> {
    if text.len() > limits.max_bytes {
        let message = format!(
            "input is {} bytes, more than the limit of {} bytes; split the file or remove unused entries",
            text.len(),
            limits.max_bytes
        );
        return Err(LoadError::single(origin, Problem::new(None, "", message)));
    }

    serde_saphyr::from_str_with_options(text, limits.options()).map_err(|error| {
        let position = error.location().and_then(position_of);
        let message = describe(&error, limits);
        LoadError::single(origin, Problem::new(position, "", message))
    })
}

/// Converts a parser location to a position, or `None` when the parser did not know it.
pub fn position_of(location: Location) -> Option<Position> {
    if location.line() == 0 {
        return None;
    }
    Some(Position { line: location.line(), column: location.column() })
}

/// Returns the source text of the scalar at `location` when it is written plain, without
/// quotes, or `None` when it is quoted or its position is unknown.
pub(crate) fn plain_scalar(source: &str, location: Location) -> Option<&str> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let length = usize::try_from(span.byte_len()?).ok()?;
    let text = source.get(start..start.checked_add(length)?)?;
    (!text.starts_with(['\'', '"'])).then_some(text)
}

/// Words a parser error for the person editing the file, because the parser's own messages
/// name Rust types (`invalid u64`) and options (`strict mode`).
fn describe(error: &serde_saphyr::Error, limits: YamlLimits) -> String {
    use serde_saphyr::Error;

    let mut inner = error;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    match inner {
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{key}`: a key may appear once in each mapping; delete or rename one of them")
        }
        Error::DuplicateMappingKey { key: None, .. } => {
            "duplicate key: a key may appear once in each mapping; delete or rename one of them".to_owned()
        }
        Error::MergeKeyNotAllowed { .. } => {
            "merge keys (`<<`) are not supported; write the fields out in each entry".to_owned()
        }
        Error::InvalidBooleanStrict { .. } => {
            "expected `true` or `false`; YAML 1.1 spellings such as `yes`, `no`, `on` and `off` are not booleans here"
                .to_owned()
        }
        Error::NullIntoString { .. } => {
            "expected text, found null (`null`, `~` or nothing); quote the value if you mean the word".to_owned()
        }
        Error::NonFiniteFloat { value, .. } => {
            format!("`{value}` is not a finite number, and JSON inputs have no infinity or NaN; write a finite number")
        }
        Error::InvalidScalar { ty, .. } => describe_scalar(ty),
        Error::SerdeUnknownVariant { variant, expected, .. } => {
            format!("unknown value `{variant}`; expected one of {}", quoted_list(expected))
        }
        Error::SerdeUnknownField { field, expected, .. } => {
            format!("unknown field `{field}`; expected one of {}", quoted_list(expected))
        }
        Error::SerdeMissingField { field, .. } => format!("missing field `{field}`"),
        Error::Budget { breach, .. } => describe_breach(breach, limits),
        Error::MultipleDocuments { .. } => {
            "the file holds more than one YAML document (`---`); keep everything in one document".to_owned()
        }
        Error::Unexpected { expected: "mapping start", .. } => "expected a mapping of `key: value` entries".to_owned(),
        Error::Unexpected { expected: "sequence start", .. } => "expected a list".to_owned(),
        _ => plain_message(inner),
    }
}

fn describe_scalar(target: &str) -> String {
    match target {
        "floating point" => "expected a number, such as `10` or `2.5`".to_owned(),
        "boolean" => "expected `true` or `false`".to_owned(),
        integer if integer.starts_with(['u', 'i']) => "expected a whole number such as `120`, written without a \
            fraction, an exponent (`1e3`) or a leading zero (`012`, which YAML 1.1 reads as octal)"
            .to_owned(),
        other => format!("invalid {other} value"),
    }
}

fn describe_breach(breach: &BudgetBreach, limits: YamlLimits) -> String {
    match breach {
        BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => {
            format!("more than {} aliases or anchors (`*name`, `&name`); write the values out", limits.max_aliases)
        }
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
            "the document has {aliases} aliases (`*name`) but only {anchors} anchors (`&name`); more than 10 \
             aliases for each anchor are read as an alias bomb, so write the values out"
        ),
        BudgetBreach::Events { .. } => {
            "the document, with its aliases expanded, is too large, as in an alias bomb; write the values out"
                .to_owned()
        }
        BudgetBreach::Depth { .. } => format!("nesting is deeper than the limit of {} levels", limits.max_depth),
        BudgetBreach::Nodes { .. } => {
            format!("more than the limit of {} YAML nodes; split the file or remove unused entries", limits.max_nodes)
        }
        BudgetBreach::ScalarBytes { .. } => {
            format!("the values, with aliases expanded, hold more than the limit of {} bytes", limits.max_scalar_bytes)
        }
        BudgetBreach::Documents { .. } => {
            "the file holds more than one YAML document (`---`); keep everything in one document".to_owned()
        }
        BudgetBreach::InputBytes { .. } => format!("input is more than the limit of {} bytes", limits.max_bytes),
        other => format!("the document exceeds a parser limit: {other:?}"),
    }
}

fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|item| format!("`{item}`")).collect::<Vec<_>>().join(", ")
}

/// Renders a parser error as one line without the source snippet, since the caller prints
/// the position itself.
fn plain_message(error: &serde_saphyr::Error) -> String {
    let rendered = error.without_snippet().to_string();
    let first_line = rendered.lines().next().unwrap_or("invalid YAML").trim();
    match strip_location_suffix(first_line) {
        "recursion limit exceeded" => "nesting is deeper than the parser's recursion limit".to_owned(),
        message => message.to_owned(),
    }
}

/// Removes a trailing ` at line N, column M` that the parser appends, since positions are
/// printed in the `file:line:column` prefix.
fn strip_location_suffix(message: &str) -> &str {
    let message = match message.rfind(" at line ") {
        Some(index) => message.get(..index).unwrap_or(message),
        None => message,
    };
    // The parser's advice on duplicate keys is for programmers embedding it, not for the
    // person editing the file.
    message.strip_suffix(", set DuplicateKeyPolicy in Options if acceptable").unwrap_or(message)
}
