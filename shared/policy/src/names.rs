//! Tool names, model ids and upstream prefixes: the characters they may contain, and the
//! patterns written on them.
//!
//! Every place that reads one of these names checks it here: the REST and MCP routes, the
//! tools an upstream lists, the tool and model patterns of the policy, key scopes and the
//! upstreams file. The rules therefore cannot drift apart.
//!
//! # Tool names
//!
//! A tool name is 1 to 128 ASCII letters, digits, `_`, `-`, `.` and `/`. MCP 2025-11-25
//! recommends the same set without `/`. The gateway also accepts `/`, which the SEP-986 draft
//! allowed, so that servers written against that draft work. Everything else is rejected:
//! spaces, control characters, zero-width characters and full-width or other non-ASCII
//! letters could make two names look alike to a person while they match different rules.
//!
//! # Case
//!
//! Names are case-sensitive, as MCP says, but the gateway cannot know whether an upstream
//! is: one that ignores case would run `calendar.delete_event` when asked for
//! `Calendar.delete_event`. So deny rules and limits match tool names ignoring ASCII case,
//! and allow rules and key scopes match them exactly. A name that differs from a listed one
//! only in case can then be denied or counted more, but never allowed more.

use crate::glob::{PatternError, class_end};

/// Maximum length of a tool name or model id, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Maximum length of an upstream prefix, in characters. With the separator it leaves an
/// upstream 63 characters of its own tool name.
pub const MAX_PREFIX_CHARS: usize = 64;

/// The character between an upstream's prefix and that upstream's own tool name, as in
/// `calendar.create_event`. A prefix never contains it, so the first one in a name ends
/// the prefix.
pub const PREFIX_SEPARATOR: char = '.';

/// What a name identifies, which decides the characters it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A tool name as models call it: ASCII letters, digits, `_`, `-`, `.` and `/`.
    Tool,
    /// A model id: ASCII letters, digits, `_`, `-`, `.` and `:`.
    Model,
    /// An upstream's tool-name prefix: the tool-name characters except the separator `.`.
    Prefix,
}

impl NameKind {
    /// Returns whether `character` may appear in a name of this kind.
    pub fn allows(self, character: char) -> bool {
        let extra = match self {
            Self::Tool => matches!(character, '_' | '-' | '.' | '/'),
            Self::Model => matches!(character, '_' | '-' | '.' | ':'),
            Self::Prefix => matches!(character, '_' | '-' | '/'),
        };
        character.is_ascii_alphanumeric() || extra
    }

    /// Returns the maximum length of a name of this kind, in characters.
    pub fn max_chars(self) -> usize {
        match self {
            Self::Tool | Self::Model => MAX_NAME_CHARS,
            Self::Prefix => MAX_PREFIX_CHARS,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Tool => "tool name",
            Self::Model => "model id",
            Self::Prefix => "prefix",
        }
    }

    fn characters(self) -> &'static str {
        match self {
            Self::Tool => "ASCII letters, digits, `_`, `-`, `.` and `/`",
            Self::Model => "ASCII letters, digits, `_`, `-`, `.` and `:`",
            Self::Prefix => "ASCII letters, digits, `_`, `-` and `/`",
        }
    }

    fn advice(self) -> String {
        let reason = match self {
            Self::Prefix => ", because tool names are split at the first `.`",
            Self::Tool | Self::Model => "",
        };
        format!("use 1 to {} {}{reason}", self.max_chars(), self.characters())
    }

    fn pattern_advice(self) -> String {
        format!("a pattern holds {}, and the wildcards `*`, `?` and `[...]`", self.characters())
    }
}

/// A name that breaks the rules of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct NameError {
    /// The kind of name.
    pub kind: NameKind,
    /// The name as given.
    pub name: String,
    /// The rule it breaks.
    pub problem: NameProblem,
}

/// The way a name breaks the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name has this many characters, more than its kind allows.
    TooLong(usize),
    /// The character at this 1-based character position is not allowed.
    Character(char, usize),
}

impl NameError {
    fn render(&self) -> String {
        let noun = self.kind.noun();
        let advice = self.kind.advice();
        let name = self.name.escape_debug();
        match self.problem {
            NameProblem::Empty => format!("{noun} is empty; {advice}"),
            NameProblem::TooLong(chars) => format!("{noun} `{name}` has {chars} characters; {advice}"),
            NameProblem::Character(character, position) => {
                format!("{noun} `{name}` contains {} at character {position}; {advice}", describe_char(character))
            }
        }
    }
}

/// Renders a character as `` `x` (U+0078) ``, escaping invisible ones, so that a zero-width or
/// full-width character is recognizable in a message.
pub fn describe_char(character: char) -> String {
    format!("`{}` (U+{:04X})", character.escape_debug(), u32::from(character))
}

/// Checks a name of `kind` against the rules in the [module documentation](self).
pub fn check(kind: NameKind, name: &str) -> Result<(), NameError> {
    let error = |problem| NameError { kind, name: name.to_owned(), problem };
    if name.is_empty() {
        return Err(error(NameProblem::Empty));
    }
    if let Some((index, character)) = name.chars().enumerate().find(|(_, character)| !kind.allows(*character)) {
        return Err(error(NameProblem::Character(character, index + 1)));
    }
    // Every allowed character is ASCII, so the byte length is the character count.
    if name.len() > kind.max_chars() {
        return Err(error(NameProblem::TooLong(name.len())));
    }
    Ok(())
}

/// Checks a tool name, as models send it and as the gateway lists it.
pub fn check_tool_name(name: &str) -> Result<(), NameError> {
    check(NameKind::Tool, name)
}

/// Checks a model id.
pub fn check_model_id(id: &str) -> Result<(), NameError> {
    check(NameKind::Model, id)
}

/// Checks an upstream's tool-name prefix.
pub fn check_prefix(prefix: &str) -> Result<(), NameError> {
    check(NameKind::Prefix, prefix)
}

/// Checks that an fnmatch pattern on names of `kind` could match some valid name: every
/// literal character and every class member is a character such names contain, every `[`
/// is closed, and the pattern needs no more characters than a name may have.
///
/// A pattern that breaks this would match nothing, so a deny rule written with a zero-width
/// space or a full-width letter would silently never deny. The pattern's syntax is checked
/// when it is compiled, by [`crate::glob::Pattern::new`].
pub fn check_pattern(kind: NameKind, pattern: &str) -> Result<(), PatternError> {
    let chars: Vec<char> = pattern.chars().collect();
    let error = |reason: String| PatternError { pattern: pattern.to_owned(), reason };
    let mut index = 0;
    let mut min_length = 0usize;

    while let Some(&current) = chars.get(index) {
        match current {
            '*' => {}
            '?' => min_length += 1,
            '[' => {
                let Some(end) = class_end(&chars, index) else {
                    let reason = format!("`[` at character {} is never closed; close the class with `]`", index + 1);
                    return Err(error(reason));
                };
                let members = chars.get(index + 1..end).unwrap_or_default();
                let members = members.strip_prefix(&['!']).unwrap_or(members);
                if members.first() == Some(&'^') {
                    let reason =
                        format!("`[^` at character {} is not a negation in fnmatch patterns; write `[!`", index + 1);
                    return Err(error(reason));
                }
                if let Some(bad) = members.iter().find(|member| !(kind.allows(**member) || **member == '-')) {
                    let reason = format!(
                        "the class at character {} contains {}, which no {} contains; {}",
                        index + 1,
                        describe_char(*bad),
                        kind.noun(),
                        kind.pattern_advice()
                    );
                    return Err(error(reason));
                }
                min_length += 1;
                index = end;
            }
            literal if kind.allows(literal) => min_length += 1,
            literal => {
                let reason = format!(
                    "{} at character {} is in no {}, so the pattern could never match; {}",
                    describe_char(literal),
                    index + 1,
                    kind.noun(),
                    kind.pattern_advice()
                );
                return Err(error(reason));
            }
        }
        index += 1;
    }

    if min_length > kind.max_chars() {
        let reason = format!(
            "the pattern needs at least {min_length} characters, but a {} has at most {}",
            kind.noun(),
            kind.max_chars()
        );
        return Err(error(reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_char_shows_invisible_characters() {
        assert_eq!(describe_char('\u{200b}'), "`\\u{200b}` (U+200B)");
        assert_eq!(describe_char('ｃ'), "`ｃ` (U+FF43)");
        assert_eq!(describe_char(' '), "` ` (U+0020)");
    }
}
