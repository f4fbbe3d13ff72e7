//! Tool names, model ids, prefixes and patterns: which characters pass, and how case matches.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::names::{self, NameKind};
use mcpsec_policy::{Effect, KeySet, NoCalls, Policy, Request, authorize};
use proptest::prelude::*;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

/// Names that look like `calendar.delete_event` or another valid name to a person, but are not.
fn lookalike_names() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("129 characters", "a".repeat(129)),
        ("space", "calendar.delete event".to_owned()),
        ("leading space", " calendar.delete_event".to_owned()),
        ("tab", "calendar.delete\tevent".to_owned()),
        ("newline", "calendar.delete_event\n".to_owned()),
        ("NUL", "calendar.delete_event\0".to_owned()),
        ("zero-width space", "calendar.delete\u{200b}_event".to_owned()),
        ("zero-width joiner", "calendar\u{200d}.delete_event".to_owned()),
        ("byte order mark", "\u{feff}calendar.delete_event".to_owned()),
        ("soft hyphen", "calendar.de\u{ad}lete_event".to_owned()),
        ("no-break space", "calendar.delete\u{a0}event".to_owned()),
        ("right-to-left override", "calendar.\u{202e}tneve_eteled".to_owned()),
        ("full-width letters", "ｃａｌｅｎｄａｒ.delete_event".to_owned()),
        ("full-width full stop", "calendar\u{ff0e}delete_event".to_owned()),
        ("Cyrillic es", "\u{441}alendar.delete_event".to_owned()),
        ("Greek omicron", "search.w\u{3bf}rd".to_owned()),
        ("combining accent", "calendar.delete_e\u{301}vent".to_owned()),
        ("Kelvin sign", "\u{212a}ey.get".to_owned()),
        ("comma", "calendar.delete,event".to_owned()),
        ("colon", "calendar:delete_event".to_owned()),
        ("backslash", "calendar\\delete_event".to_owned()),
        ("asterisk", "calendar.*".to_owned()),
    ]
}

#[test]
fn tool_names_with_lookalike_characters_are_rejected() {
    let mut rendered = String::new();
    for (case, name) in lookalike_names() {
        let error = names::check_tool_name(&name).expect_err(case);
        rendered.push_str(&format!("{case}: {error}\n"));
    }
    insta::assert_snapshot!("lookalike_tool_names", rendered);
}

#[test]
fn valid_tool_names_are_accepted() {
    let cases = [
        "echo".to_owned(),
        "calendar.create_event".to_owned(),
        "Calendar.Create_Event".to_owned(),
        "user-profile/update".to_owned(),
        "DATA_EXPORT_v2".to_owned(),
        "admin.tools.list".to_owned(),
        "a".repeat(128),
    ];
    for name in cases {
        assert_eq!(names::check_tool_name(&name), Ok(()), "{name}");
    }
}

#[test]
fn name_kinds_table() {
    let cases = [
        (NameKind::Model, "gpt-4o", true),
        (NameKind::Model, "anthropic.claude-v2:1", true),
        (NameKind::Model, "no", true),
        (NameKind::Model, "012", true),
        (NameKind::Model, "openai/gpt-4o", false),
        (NameKind::Model, "gpt 4o", false),
        (NameKind::Model, "gpt\u{200b}-4o", false),
        (NameKind::Model, "", false),
        (NameKind::Prefix, "calendar", true),
        (NameKind::Prefix, "team/calendar", true),
        (NameKind::Prefix, "web_search-2", true),
        (NameKind::Prefix, "a.b", false),
        (NameKind::Prefix, "my tools", false),
        (NameKind::Prefix, "ｃalendar", false),
        (NameKind::Prefix, "", false),
    ];
    for (kind, name, valid) in cases {
        assert_eq!(names::check(kind, name).is_ok(), valid, "{kind:?} `{name}`");
    }
    assert!(names::check(NameKind::Prefix, &"p".repeat(64)).is_ok());
    assert!(names::check(NameKind::Prefix, &"p".repeat(65)).is_err());
    assert!(names::check(NameKind::Model, &"m".repeat(129)).is_err());
}

#[test]
fn patterns_that_could_match_no_name_are_rejected() {
    let cases = [
        (NameKind::Tool, "calendar.delete\u{200b}_*"),
        (NameKind::Tool, "ｃalendar.*"),
        (NameKind::Tool, "calendar delete*"),
        (NameKind::Tool, "{calendar,search}.*"),
        (NameKind::Tool, "calendar\\.*"),
        (NameKind::Tool, "calendar.[de"),
        (NameKind::Tool, "calendar.[^d]*"),
        (NameKind::Tool, "calendar.[d\u{ff44}]*"),
        (NameKind::Tool, "calendar.]*"),
        (NameKind::Tool, "calendar.delete_*\n"),
        (NameKind::Tool, &"x".repeat(129)),
        (NameKind::Tool, &"?".repeat(129)),
        (NameKind::Model, "openai/*"),
        (NameKind::Model, "gpt 4*"),
    ];
    let mut rendered = String::new();
    for (kind, pattern) in cases {
        let error = names::check_pattern(kind, pattern).expect_err(pattern);
        rendered.push_str(&format!("{kind:?} {}: {error}\n", pattern.escape_debug()));
    }
    insta::assert_snapshot!("impossible_patterns", rendered);
}

#[test]
fn patterns_on_valid_names_are_accepted() {
    let cases = [
        (NameKind::Tool, "*"),
        (NameKind::Tool, "calendar.*"),
        (NameKind::Tool, "calendar.delete_*"),
        (NameKind::Tool, "calendar.[cd]*"),
        (NameKind::Tool, "calendar.[!d]*"),
        (NameKind::Tool, "search.[a-z]?b"),
        (NameKind::Tool, "user-profile/*"),
        (NameKind::Tool, "Calendar.*"),
        (NameKind::Model, "gpt-*"),
        (NameKind::Model, "anthropic.claude-v2:*"),
    ];
    for (kind, pattern) in cases {
        assert_eq!(names::check_pattern(kind, pattern), Ok(()), "{kind:?} {pattern}");
    }
    let long_star = "*".repeat(300);
    assert_eq!(names::check_pattern(NameKind::Tool, &long_star), Ok(()), "stars need no characters");
}

const CASE_POLICY: &str = r#"
default: deny
rules:
  - id: allow-calendar
    action: allow
    tools: ["calendar.*"]
    reason: calendars are for everyone
  - id: allow-search-web
    action: allow
    tools: ["search.web"]
    reason: web search is read-only
  - id: no-deletes
    action: deny
    tools: ["calendar.delete_*"]
    reason: deleting events needs a human
  - id: no-exports
    action: deny
    tools: ["calendar.export"]
    reason: exports leave the company
  - id: no-admin
    action: deny
    tools: ["calendar.adm?n_*"]
    reason: admin tools need a human
"#;

const ALL_TOOLS_KEYS: &str = "models:\n  m:\n    key: k\n    tools: ['*']\n";

#[test]
fn case_variants_never_slip_past_a_deny() {
    let policy = Policy::from_yaml("policies.yaml", CASE_POLICY).unwrap();
    let keys = KeySet::from_yaml("model_keys.yaml", ALL_TOOLS_KEYS).unwrap();
    let principal = keys.authenticate("m", Some("k"), NOW).unwrap();
    let cases = [
        ("calendar.delete_event", Effect::Deny, Some("no-deletes")),
        ("Calendar.delete_event", Effect::Deny, Some("no-deletes")),
        ("calendar.DELETE_EVENT", Effect::Deny, Some("no-deletes")),
        ("CALENDAR.Delete_Event", Effect::Deny, Some("no-deletes")),
        ("calendar.export", Effect::Deny, Some("no-exports")),
        ("calendar.Export", Effect::Deny, Some("no-exports")),
        ("calendar.ADMIN_users", Effect::Deny, Some("no-admin")),
        ("calendar.create_event", Effect::Allow, Some("allow-calendar")),
        // Allow rules match exactly, so a case variant falls to the default.
        ("Calendar.create_event", Effect::Deny, None),
        ("search.web", Effect::Allow, Some("allow-search-web")),
        ("Search.Web", Effect::Deny, None),
        // Lookalike characters are denied before any rule is read.
        ("calendar.create\u{200b}_event", Effect::Deny, None),
        ("ｃalendar.create_event", Effect::Deny, None),
    ];
    for (tool, effect, rule) in cases {
        let input = json!({});
        let request = Request { model_id: "m", session_id: "s", tool_name: tool, input: &input, calls: &NoCalls };
        let decision = authorize(&principal, &policy, &request, NOW);
        assert_eq!(decision.verdict.effect, effect, "{tool}: {}", decision.verdict.reason);
        assert_eq!(decision.verdict.rule.as_deref(), rule, "{tool}");
    }
}

#[test]
fn lookalike_name_denial_says_which_character() {
    let policy = Policy::from_yaml("policies.yaml", CASE_POLICY).unwrap();
    let keys = KeySet::from_yaml("model_keys.yaml", ALL_TOOLS_KEYS).unwrap();
    let principal = keys.authenticate("m", Some("k"), NOW).unwrap();
    let input = json!({});
    let tool = "calendar.create\u{200b}_event";
    let request = Request { model_id: "m", session_id: "s", tool_name: tool, input: &input, calls: &NoCalls };
    let reason = authorize(&principal, &policy, &request, NOW).verdict.reason;
    assert!(reason.contains("U+200B"), "{reason}");
    assert!(reason.contains("character 16"), "{reason}");
}

#[test]
fn scopes_match_case_exactly() {
    let keys = KeySet::from_yaml("k", "models:\n  m:\n    key: k\n    tools: ['calendar.*']\n").unwrap();
    let scope = &keys.get("m").unwrap().scope;
    assert!(scope.allows("calendar.create_event"));
    assert!(!scope.allows("Calendar.create_event"));
    assert!(!scope.allows("CALENDAR.create_event"));
}

#[test]
fn tools_list_hides_case_variants_of_denied_tools() {
    let policy = Policy::from_yaml("policies.yaml", CASE_POLICY).unwrap();
    let cases = [
        ("calendar.create_event", true),
        ("calendar.delete_event", false),
        ("Calendar.Delete_Event", false),
        ("calendar.EXPORT", false),
        ("Calendar.create_event", false),
    ];
    for (tool, listed) in cases {
        assert_eq!(policy.may_allow("m", tool), listed, "{tool}");
    }
}

#[test]
fn limits_count_case_variants() {
    let policy = Policy::from_yaml(
        "policies.yaml",
        "default: allow\nlimits:\n  - id: searches\n    per: model\n    max_calls: 5\n    window: 1m\n    tools: ['search.*']\n",
    )
    .unwrap();
    for tool in ["search.web", "Search.web", "SEARCH.WEB", "search.Images"] {
        let input = json!({});
        let request = Request { model_id: "m", session_id: "s", tool_name: tool, input: &input, calls: &NoCalls };
        let decision = policy.evaluate(&request, NOW);
        let counted: Vec<&str> = decision.counted.iter().map(|limit| limit.key.limit_id.as_str()).collect();
        assert_eq!(counted, ["searches"], "{tool} is counted by the limit");
    }
}

#[test]
fn rejected_patterns_name_rule_field_and_position() {
    let cases = [
        (
            "zero-width deny",
            "rules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['calendar.delete\u{200b}_*']\n",
        ),
        ("full-width allow", "rules:\n  - id: r\n    action: allow\n    reason: r\n    tools: ['ｃalendar.*']\n"),
        (
            "model pattern with a space",
            "rules:\n  - id: r\n    action: allow\n    reason: r\n    tools: ['*']\n    models: ['gpt 4*']\n",
        ),
        (
            "limit with braces",
            "limits:\n  - id: l\n    per: model\n    max_calls: 1\n    window: 1m\n    tools: ['{a,b}.*']\n",
        ),
    ];
    let mut rendered = String::new();
    for (case, text) in cases {
        let error = Policy::from_yaml("policies.yaml", text).unwrap_err();
        rendered.push_str(&format!("{case}:\n{error}\n\n"));
    }
    let keys =
        "models:\n  m:\n    key: a\n    tools: ['search.*', 'ｃalendar.*']\n  'gpt 4':\n    key: b\n    tools: ['*']\n";
    let error = KeySet::from_yaml("model_keys.yaml", keys).unwrap_err();
    rendered.push_str(&format!("keys file:\n{error}\n"));
    insta::assert_snapshot!("rejected_patterns", rendered);
}

/// Flips the case of the letters of `name` where `flips` has a `true`.
fn flip_case(name: &str, flips: &[bool]) -> String {
    name.chars()
        .zip(flips.iter().chain(std::iter::repeat(&false)))
        .map(|(character, flip)| if *flip { flip_one(character) } else { character })
        .collect()
}

fn flip_one(character: char) -> char {
    if character.is_ascii_lowercase() { character.to_ascii_uppercase() } else { character.to_ascii_lowercase() }
}

proptest! {
    #[test]
    fn deny_matches_every_case_variant(
        name in "[a-z][a-z0-9_.-]{0,24}",
        cut in 0usize..24,
        flips in proptest::collection::vec(any::<bool>(), 25),
    ) {
        let prefix: String = name.chars().take(cut).collect();
        let text = format!(
            "default: allow\nrules:\n  - id: exact\n    action: deny\n    reason: r\n    tools: ['{name}']\n  \
             - id: prefix\n    action: deny\n    reason: r\n    tools: ['{prefix}*']\n"
        );
        let policy = Policy::from_yaml("p", &text).unwrap();
        let variant = flip_case(&name, &flips);
        let input = json!({});
        let request = Request { model_id: "m", session_id: "s", tool_name: &variant, input: &input, calls: &NoCalls };
        let decision = policy.evaluate(&request, NOW);
        prop_assert_eq!(decision.verdict.effect, Effect::Deny);
        prop_assert_eq!(decision.matched_ids(), vec!["exact", "prefix"]);
    }

    #[test]
    fn allow_matches_only_exact_case(
        name in "[a-z][a-z0-9_.-]{0,24}",
        flips in proptest::collection::vec(any::<bool>(), 25),
    ) {
        let variant = flip_case(&name, &flips);
        let text = format!("default: deny\nrules:\n  - id: exact\n    action: allow\n    reason: r\n    tools: ['{name}']\n");
        let policy = Policy::from_yaml("p", &text).unwrap();
        let input = json!({});
        let request = Request { model_id: "m", session_id: "s", tool_name: &variant, input: &input, calls: &NoCalls };
        let allowed = policy.evaluate(&request, NOW).is_allowed();
        prop_assert_eq!(allowed, variant == name);
    }
}
