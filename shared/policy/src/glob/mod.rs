//! Tool and model name patterns with Python `fnmatch.fnmatchcase` semantics.
//!
//! Users of the original gateway wrote scopes for Python's `fnmatch`: `*` matches any run of
//! characters (dots and slashes included), `?` one character, `[abc]` and `[a-z]` a class,
//! `[!abc]` a negated class, and matching is case-sensitive. Braces, backslashes and a leading
//! `^` in a class have no special meaning there, but do in `globset`. Each pattern is therefore
//! rewritten into an equivalent `globset` pattern in which every such character is literal,
//! then compiled once.
//!
//! Deny rules and limits compile their tool patterns with [`Pattern::new_ignoring_case`], for
//! the reason given in [`crate::names`].

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

pub use index::PatternIndex;

mod index;

/// A compiled fnmatch pattern.
///
/// A pattern that is a literal (`search.web`), a literal prefix and a `*` (`calendar.*`), or
/// `*` alone matches with a string comparison. Every other pattern is compiled by `globset`.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    matcher: Matcher,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    Any,
    Exact(String),
    Prefix(String),
    Glob(GlobMatcher),
}

impl Pattern {
    /// Compiles one fnmatch pattern that matches case-sensitively.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        Self::compile(source, false)
    }

    /// Compiles one fnmatch pattern that ignores ASCII case, so `calendar.delete_*` also
    /// matches `Calendar.DELETE_event`.
    pub fn new_ignoring_case(source: &str) -> Result<Self, PatternError> {
        Self::compile(source, true)
    }

    fn compile(source: &str, ignore_case: bool) -> Result<Self, PatternError> {
        if source.is_empty() {
            return Err(empty_pattern_error());
        }
        let prefix = literal_prefix(source);
        let rest = source.get(prefix.len()..).unwrap_or_default();
        let matcher = if rest.is_empty() {
            Matcher::Exact(source.to_owned())
        } else if rest.chars().all(|c| c == '*') {
            if prefix.is_empty() { Matcher::Any } else { Matcher::Prefix(prefix.to_owned()) }
        } else {
            Matcher::Glob(build_glob(source, ignore_case)?.compile_matcher())
        };
        Ok(Self { source: source.to_owned(), matcher, ignore_case })
    }

    /// Returns whether `name` matches the whole pattern.
    pub fn is_match(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Exact(literal) if self.ignore_case => name.eq_ignore_ascii_case(literal),
            Matcher::Exact(literal) => name == literal,
            Matcher::Prefix(prefix) if self.ignore_case => {
                name.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
            }
            Matcher::Prefix(prefix) => name.starts_with(prefix.as_str()),
            Matcher::Glob(glob) => glob.is_match(name),
        }
    }

    /// Returns whether the pattern ignores ASCII case.
    pub fn ignores_case(&self) -> bool {
        self.ignore_case
    }

    /// Returns the pattern as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Returns the literal text that every matching name starts with.
    pub fn literal_prefix(&self) -> &str {
        literal_prefix(&self.source)
    }

    /// Returns whether every name matches.
    pub fn matches_everything(&self) -> bool {
        matches!(self.matcher, Matcher::Any)
    }
}

/// Returns the text before the first character that has a meaning in fnmatch.
fn literal_prefix(source: &str) -> &str {
    let end = source.find(['*', '?', '[']).unwrap_or(source.len());
    source.get(..end).unwrap_or_default()
}

fn empty_pattern_error() -> PatternError {
    PatternError {
        pattern: String::new(),
        reason: "a pattern cannot be empty; write `*` to match every name".to_owned(),
    }
}

/// Several patterns compiled into one matcher; a name matches when any pattern does.
#[derive(Debug, Clone)]
pub struct PatternList {
    sources: Vec<String>,
    set: GlobSet,
}

impl PatternList {
    /// Compiles every pattern, returning the index and error of each one that is invalid.
    pub fn new<S: AsRef<str>>(sources: &[S]) -> Result<Self, Vec<(usize, PatternError)>> {
        let mut builder = GlobSetBuilder::new();
        let mut errors = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            match build_glob(source.as_ref(), false) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(error) => errors.push((index, error)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let set = builder.build().map_err(|error| vec![(0, PatternError::from_globset(error))])?;
        let sources = sources.iter().map(|source| source.as_ref().to_owned()).collect();
        Ok(Self { sources, set })
    }

    /// Creates a list that matches nothing.
    pub fn empty() -> Self {
        Self { sources: Vec::new(), set: GlobSet::empty() }
    }

    /// Returns whether `name` matches any pattern.
    pub fn is_match(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// Appends the indexes of every pattern that matches `name` to `matches`, after clearing it.
    pub fn matches_into(&self, name: &str, matches: &mut Vec<usize>) {
        self.set.matches_into(name, matches);
    }

    /// Returns the patterns as the user wrote them.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

/// An fnmatch pattern that cannot be compiled, or that could match no name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern `{}`: {reason}", pattern.escape_debug())]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// The reason it was rejected.
    pub reason: String,
}

impl PatternError {
    fn from_globset(error: globset::Error) -> Self {
        let pattern = error.glob().unwrap_or_default().to_owned();
        Self { pattern, reason: error.kind().to_string() }
    }
}

fn build_glob(source: &str, ignore_case: bool) -> Result<globset::Glob, PatternError> {
    if source.is_empty() {
        return Err(empty_pattern_error());
    }

    let translated = translate(source);
    GlobBuilder::new(&translated)
        .literal_separator(false)
        .backslash_escape(false)
        .case_insensitive(ignore_case)
        .empty_alternates(false)
        .build()
        .map_err(|error| PatternError { pattern: source.to_owned(), reason: error.kind().to_string() })
}

/// Rewrites an fnmatch pattern as a `globset` pattern with the same meaning.
///
/// Literal characters that `globset` treats specially are wrapped in a one-character class.
/// Runs of `*` collapse to one, because they mean the same in fnmatch while `**` is special in
/// `globset`. A `[` without a closing `]` is a literal, as in Python.
pub(crate) fn translate(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut index = 0;

    while let Some(&current) = chars.get(index) {
        match current {
            '*' => {
                out.push('*');
                while chars.get(index + 1) == Some(&'*') {
                    index += 1;
                }
            }
            '?' => out.push('?'),
            '[' => match class_end(&chars, index).and_then(|end| Some((end, chars.get(index + 1..end)?))) {
                Some((end, content)) => {
                    push_class(content, &mut out);
                    index = end;
                }
                None => push_literal('[', &mut out),
            },
            other => push_literal(other, &mut out),
        }
        index += 1;
    }
    out
}

/// Finds the `]` that closes the class opened at `start`, following Python's rules: a `!` and
/// then a `]` right after the `[` belong to the class.
pub(crate) fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut end = start + 1;
    if chars.get(end) == Some(&'!') {
        end += 1;
    }
    if chars.get(end) == Some(&']') {
        end += 1;
    }
    while let Some(&current) = chars.get(end) {
        if current == ']' {
            return Some(end);
        }
        end += 1;
    }
    None
}

/// Writes the class whose content (between the brackets) is `content`.
fn push_class(content: &[char], out: &mut String) {
    let (negated, members) = match content.split_first() {
        Some(('!', rest)) => (true, rest),
        _ => (false, content),
    };

    // A lone member is a literal; this also covers `[^]`, which globset would read as an
    // empty negated class.
    if let ([single], false) = (members, negated) {
        push_literal(*single, out);
        return;
    }

    out.push('[');
    if negated {
        out.push('!');
    }
    // A leading `^` is literal in fnmatch but negates in globset, so it moves to the end.
    let (caret, members) = match members.split_first() {
        Some(('^', rest)) if !rest.is_empty() => (true, rest),
        _ => (false, members),
    };
    out.extend(members.iter());
    if caret {
        out.push('^');
    }
    out.push(']');
}

fn push_literal(character: char, out: &mut String) {
    match character {
        '*' | '?' | '[' | ']' | '{' | '}' | '\\' | ',' => {
            out.push('[');
            out.push(character);
            out.push(']');
        }
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_table() {
        let cases = [
            ("calendar.*", "calendar.*"),
            ("a**b", "a*b"),
            ("{a,b}", "[{]a[,]b[}]"),
            (r"a\b", r"a[\]b"),
            ("[abc]", "[abc]"),
            ("[!abc]", "[!abc]"),
            ("[^a]", "[a^]"),
            ("[^]", "^"),
            ("[]]", "[]]"),
            ("[!]]", "[!]]"),
            ("a[", "a[[]"),
            ("[x]", "x"),
        ];
        for (input, expected) in cases {
            assert_eq!(translate(input), expected, "pattern {input}");
        }
    }
}
