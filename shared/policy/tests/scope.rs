//! Tool scopes follow Python's `fnmatch.fnmatchcase`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::Scope;
use mcpsec_policy::glob::Pattern;
use proptest::prelude::*;

#[test]
fn scope_match_table() {
    let cases = [
        ("calendar.*", "calendar.create_event", true),
        ("calendar.*", "calendar.", true),
        ("calendar.*", "calendar", false),
        ("calendar.*", "Calendar.create_event", false),
        ("search.*", "searchx", false),
        ("search.*", "calendar.search", false),
        ("search.*", "search.web.deep", true),
        ("*", "", true),
        ("*", "any/thing.at all", true),
        ("*.read", "files/a.b.read", true),
        ("search.?eb", "search.web", true),
        ("search.?eb", "search.eb", false),
        ("search.[wd]*", "search.docs", true),
        ("search.[wd]*", "search.maps", false),
        ("search.[!wd]*", "search.maps", true),
        ("search.[!wd]*", "search.web", false),
        ("v[0-9]", "v7", true),
        ("v[0-9]", "vx", false),
        ("a[^b]", "a^", true),
        ("a[^b]", "ab", true),
        ("a[^b]", "ac", false),
        ("a[]]", "a]", true),
        ("a[!]]", "ab", true),
        ("a[!]]", "a]", false),
        ("a[", "a[", true),
        ("{a,b}", "a", false),
        ("{a,b}", "{a,b}", true),
        (r"a\*", r"a\xyz", true),
        (r"a\*", "a*", false),
        ("a**b", "a.x.b", true),
        ("tool", "tool", true),
        ("tool", "tool2", false),
        ("ａ*", "a", false),
        ("calendar.*", "calendar\u{200b}.x", false),
    ];
    for (pattern, name, expected) in cases {
        let scope = Scope::new(&[pattern]).unwrap();
        assert_eq!(scope.allows(name), expected, "pattern {pattern:?} name {name:?}");
    }
}

#[test]
fn scope_allows_any_listed_pattern() {
    let scope = Scope::new(&["calendar.*", "search.*"]).unwrap();
    assert!(scope.allows("calendar.create_event"));
    assert!(scope.allows("search.web"));
    assert!(!scope.allows("mail.send"));
    assert_eq!(scope.patterns(), ["calendar.*", "search.*"]);
}

#[test]
fn empty_scope_is_rejected() {
    let error = Scope::new::<&str>(&[]).unwrap_err();
    assert!(error.contains("at least one tool pattern"), "{error}");
}

#[test]
fn invalid_patterns_are_rejected() {
    for pattern in ["", "a[z-a]"] {
        assert!(Pattern::new(pattern).is_err(), "pattern {pattern:?}");
    }
}

/// Reference implementation of `fnmatch.fnmatchcase`, written from the Python documentation:
/// `*` any run, `?` one character, `[seq]`, `[!seq]`, a `[` without `]` is literal.
fn fnmatch(pattern: &[char], name: &[char]) -> bool {
    let Some((&first, rest)) = pattern.split_first() else {
        return name.is_empty();
    };
    match first {
        '*' => (0..=name.len()).any(|skip| fnmatch(rest, &name[skip..])),
        '?' => !name.is_empty() && fnmatch(rest, &name[1..]),
        '[' => match parse_class(rest) {
            Some((negated, members, after)) => {
                let Some((&c, name_rest)) = name.split_first() else { return false };
                let inside = class_contains(&members, c);
                inside != negated && fnmatch(after, name_rest)
            }
            None => name.first() == Some(&'[') && fnmatch(rest, &name[1..]),
        },
        literal => name.first() == Some(&literal) && fnmatch(rest, &name[1..]),
    }
}

fn parse_class(after_open: &[char]) -> Option<(bool, Vec<char>, &[char])> {
    let mut index = 0;
    let negated = after_open.first() == Some(&'!');
    if negated {
        index += 1;
    }
    let start = index;
    if after_open.get(index) == Some(&']') {
        index += 1;
    }
    while index < after_open.len() && after_open[index] != ']' {
        index += 1;
    }
    if index >= after_open.len() {
        return None;
    }
    Some((negated, after_open[start..index].to_vec(), &after_open[index + 1..]))
}

fn class_contains(members: &[char], c: char) -> bool {
    let mut index = 0;
    while index < members.len() {
        if index + 2 < members.len() && members[index + 1] == '-' {
            if members[index] <= c && c <= members[index + 2] {
                return true;
            }
            index += 3;
        } else {
            if members[index] == c {
                return true;
            }
            index += 1;
        }
    }
    false
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("*".to_owned()),
        Just("?".to_owned()),
        Just(".".to_owned()),
        Just("[ab]".to_owned()),
        Just("[!a]".to_owned()),
        Just("[a-c]".to_owned()),
        Just("[".to_owned()),
        Just("{".to_owned()),
        Just("\\".to_owned()),
        "[abc._]{1,3}",
    ];
    prop::collection::vec(piece, 1..6).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn scope_agrees_with_fnmatch(pattern in pattern_strategy(), name in "[abc._\\[{\\\\]{0,8}") {
        let compiled = Pattern::new(&pattern).unwrap();
        let chars: Vec<char> = pattern.chars().collect();
        let name_chars: Vec<char> = name.chars().collect();
        prop_assert_eq!(compiled.is_match(&name), fnmatch(&chars, &name_chars), "pattern {:?} name {:?}", pattern, name);
    }
}
