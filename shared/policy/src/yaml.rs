//! Bounded YAML parsing for untrusted configuration files.
//!
//! `serde-saphyr` parses without unsafe code, reports positions, rejects duplicate keys and
//! enforces a budget on events, nodes, aliases, depth and scalar bytes. The loaders here add a
//! cap on the input size, because the budget's own size limit applies only to readers, and
//! tighten the budget: a policy or keys file is a small, flat document, so anything much
//! deeper or larger is an attack or a mistake.

use serde::de::DeserializeOwned;
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
pub(crate) fn parse<T: DeserializeOwned>(origin: &str, text: &str, limits: YamlLimits) -> Result<T, LoadError> {
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
        let message = plain_message(&error);
        LoadError::single(origin, Problem::new(position, "", message))
    })
}

/// Converts a parser location to a position, or `None` when the parser did not know it.
pub(crate) fn position_of(location: Location) -> Option<Position> {
    if location.line() == 0 {
        return None;
    }
    Some(Position { line: location.line(), column: location.column() })
}

/// Renders a parser error as one line without the source snippet, since the caller prints
/// the position itself.
fn plain_message(error: &serde_saphyr::Error) -> String {
    let rendered = error.without_snippet().to_string();
    let first_line = rendered.lines().next().unwrap_or("invalid YAML").trim();
    strip_location_suffix(first_line).to_owned()
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
