//! Load errors shared by the keys and policy loaders.

use std::fmt;

/// A position in a YAML source, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: u64,
    /// Column number in characters, starting at 1.
    pub column: u64,
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending value sits, when the parser knows.
    pub position: Option<Position>,
    /// Dotted path of the offending field, such as `rules[2].tools[0]`; empty for the whole file.
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(position: Option<Position>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { position, field: field.into(), message: message.into() }
    }
}

/// Every problem found while loading one configuration source.
///
/// Parsing stops at the first YAML syntax or type error, since nothing after it can be read
/// reliably. Validation after a successful parse reports every problem it finds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The source's name as the user knows it, usually the file path.
    pub origin: String,
    /// The problems, in source order.
    pub problems: Vec<Problem>,
}

impl LoadError {
    pub(crate) fn single(origin: &str, problem: Problem) -> Self {
        Self { origin: origin.to_owned(), problems: vec![problem] }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.origin)?;
            if let Some(position) = problem.position {
                write!(f, ":{}:{}", position.line, position.column)?;
            }
            if problem.field.is_empty() {
                write!(f, ": {}", problem.message)?;
            } else {
                write!(f, ": {}: {}", problem.field, problem.message)?;
            }
        }
        Ok(())
    }
}
