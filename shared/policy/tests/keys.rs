//! Model keys: loading `model_keys.yaml` and authenticating presented keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::keys::{hash_key, key_id, parse_timestamp};
use mcpsec_policy::{AuthError, KeySet, ModelEntry};
use time::OffsetDateTime;
use time::macros::datetime;

const KEYS: &str = r#"
models:
  gpt-4o:
    key: "modelkey-abc123"
    tools: ["calendar.*", "search.*"]
    expires: "2025-12-31T00:00:00Z"
  mistral-open:
    key_sha256: "SHA"
    tools: ["search.*"]
    expires: "2025-12-31T01:00:00+01:00"
  forever:
    key: "forever-key"
    tools: ["*"]
  retired:
    key: "retired-key"
    tools: ["*"]
    revoked: true
"#;

fn keys() -> KeySet {
    let digest = hex::encode(hash_key("modelkey-def456"));
    let text = KEYS.replace("SHA", &digest);
    KeySet::from_yaml("model_keys.yaml", &text).unwrap()
}

const BEFORE: OffsetDateTime = datetime!(2025-06-01 00:00 UTC);

#[test]
fn authenticate_table() {
    let keys = keys();
    let expiry = datetime!(2025-12-31 00:00 UTC);
    let just_before = expiry - time::Duration::nanoseconds(1);
    let expired = |model: &str, key: &str, expires: &str| AuthError::Expired {
        model_id: model.into(),
        key_id: key_id(&hash_key(key)),
        expires: expires.into(),
    };

    type Case<'a> = (&'a str, Option<&'a str>, OffsetDateTime, Result<(), AuthError>);
    let cases: Vec<Case> = vec![
        ("gpt-4o", Some("modelkey-abc123"), BEFORE, Ok(())),
        ("gpt-4o", Some("modelkey-abc123"), just_before, Ok(())),
        ("gpt-4o", Some("modelkey-abc123"), expiry, Err(expired("gpt-4o", "modelkey-abc123", "2025-12-31T00:00:00Z"))),
        ("gpt-4o", Some("modelkey-abc124"), BEFORE, Err(AuthError::WrongKey("gpt-4o".into()))),
        ("gpt-4o", Some("modelkey-def456"), BEFORE, Err(AuthError::WrongKey("gpt-4o".into()))),
        ("gpt-4o", Some(""), BEFORE, Err(AuthError::MissingKey)),
        ("gpt-4o", None, BEFORE, Err(AuthError::MissingKey)),
        ("GPT-4O", Some("modelkey-abc123"), BEFORE, Err(AuthError::UnknownModel("GPT-4O".into()))),
        ("nobody", Some("modelkey-abc123"), BEFORE, Err(AuthError::UnknownModel("nobody".into()))),
        ("mistral-open", Some("modelkey-def456"), just_before, Ok(())),
        // The +01:00 offset puts the expiry at the same instant as gpt-4o's.
        (
            "mistral-open",
            Some("modelkey-def456"),
            expiry,
            Err(expired("mistral-open", "modelkey-def456", "2025-12-31T00:00:00Z")),
        ),
        ("forever", Some("forever-key"), datetime!(9999-01-01 00:00 UTC), Ok(())),
        (
            "retired",
            Some("retired-key"),
            BEFORE,
            Err(AuthError::Revoked { model_id: "retired".into(), key_id: key_id(&hash_key("retired-key")) }),
        ),
        ("retired", Some("wrong"), BEFORE, Err(AuthError::WrongKey("retired".into()))),
    ];

    for (model, key, now, expected) in cases {
        let got = keys.authenticate(model, key, now).map(|_| ());
        assert_eq!(got, expected, "model {model} key {key:?} at {now}");
    }
}

#[test]
fn principal_carries_model_and_scope() {
    let keys = keys();
    let principal = keys.authenticate("gpt-4o", Some("modelkey-abc123"), BEFORE).unwrap();
    assert_eq!(principal.model_id(), "gpt-4o");
    assert!(principal.entry.scope.allows("calendar.create_event"));
    assert!(!principal.entry.scope.allows("mail.send"));
    assert_eq!(principal.credential.key_id(), key_id(&hash_key("modelkey-abc123")));
}

#[test]
fn plaintext_keys_are_not_kept() {
    let keys = keys();
    let dump = format!("{keys:?}");
    assert!(!dump.contains("modelkey-abc123"));
    assert!(!dump.contains("forever-key"));
}

#[test]
fn key_id_is_short_hash_prefix() {
    let id = key_id(&hash_key("modelkey-abc123"));
    assert!(id.starts_with("k_"));
    assert_eq!(id.len(), 14);
    assert!(!id.contains("modelkey"));
}

#[test]
fn digest_in_uppercase_is_accepted() {
    let digest = hex::encode_upper(hash_key("secret"));
    let text = format!("models:\n  m:\n    key_sha256: \"{digest}\"\n    tools: [\"*\"]\n");
    let keys = KeySet::from_yaml("k", &text).unwrap();
    assert!(keys.authenticate("m", Some("secret"), BEFORE).is_ok());
}

#[test]
fn invalid_files_name_model_field_and_position() {
    let cases = [
        ("empty_key", "models:\n  m:\n    key: ''\n    tools: ['*']\n"),
        ("no_key", "models:\n  m:\n    tools: ['*']\n"),
        ("both_keys", "models:\n  m:\n    key: a\n    key_sha256: 'ab'\n    tools: ['*']\n"),
        ("bad_digest", "models:\n  m:\n    key_sha256: 'xyz'\n    tools: ['*']\n"),
        ("empty_scope", "models:\n  m:\n    key: a\n    tools: []\n"),
        ("missing_scope", "models:\n  m:\n    key: a\n"),
        ("bad_glob", "models:\n  m:\n    key: a\n    tools: ['search.*', 'calendar.[z-a]']\n"),
        ("date_only", "models:\n  m:\n    key: a\n    tools: ['*']\n    expires: 2025-12-31\n"),
        ("bare_time", "models:\n  m:\n    key: a\n    tools: ['*']\n    expires: '12:00:00'\n"),
        ("no_offset", "models:\n  m:\n    key: a\n    tools: ['*']\n    expires: '2025-12-31T00:00:00'\n"),
        ("garbage_expiry", "models:\n  m:\n    key: a\n    tools: ['*']\n    expires: soon\n"),
        ("unknown_field", "models:\n  m:\n    key: a\n    tools: ['*']\n    expiry: '2025-12-31T00:00:00Z'\n"),
        ("duplicate_model", "models:\n  m:\n    key: a\n    tools: ['*']\n  m:\n    key: b\n    tools: ['*']\n"),
        ("yes_as_revoked", "models:\n  m:\n    key: a\n    tools: ['*']\n    revoked: yes\n"),
        (
            "two_errors",
            "models:\n  a:\n    key: ''\n    tools: ['*']\n  b:\n    key: k\n    tools: ['*']\n    expires: tomorrow\n",
        ),
    ];
    for (name, text) in cases {
        let error = KeySet::from_yaml("model_keys.yaml", text).unwrap_err();
        insta::assert_snapshot!(format!("keys_{name}"), error.to_string());
    }
}

#[test]
fn key_alone_identifies_model() {
    let keys = keys();
    let principal = keys.authenticate_key(Some("modelkey-def456"), BEFORE).unwrap();
    assert_eq!(principal.model_id(), "mistral-open");
    assert_eq!(keys.authenticate_key(Some("nope"), BEFORE).unwrap_err(), AuthError::UnknownKey);
    assert_eq!(keys.authenticate_key(Some(""), BEFORE).unwrap_err(), AuthError::MissingKey);
    assert!(matches!(keys.authenticate_key(Some("retired-key"), BEFORE), Err(AuthError::Revoked { .. })));
}

/// Two models with one key. Before the loader rejected this, the key alone authenticated as
/// either model, depending on the iteration order of a hash map. The same input is in
/// `fuzz/corpus/keys_yaml/shared-key.yaml`.
const SHARED_KEY: &str = "models:\n  reader:\n    key: \"team-key\"\n    tools: [\"search.*\"]\n  writer:\n    key: \"team-key\"\n    tools: [\"*\"]\n";

#[test]
fn shared_key_is_rejected_at_load() {
    let error = KeySet::from_yaml("model_keys.yaml", SHARED_KEY).unwrap_err();
    assert_eq!(error.problems.len(), 1, "{error}");
    let problem = &error.problems[0];
    assert_eq!(problem.field, "models.writer");
    assert_eq!(problem.message, "model `writer` has the same key as model `reader`; give each model its own key");
    assert_eq!(problem.position.map(|position| position.line), Some(6));
}

#[test]
fn shared_key_alone_identifies_no_model() {
    // A store can hold one key for two models, for example after two separate imports.
    let distinct = SHARED_KEY.replacen("team-key", "other-key", 1);
    let mut entries: Vec<ModelEntry> =
        KeySet::from_yaml("model_keys.yaml", &distinct).unwrap().entries().cloned().collect();
    for entry in &mut entries {
        entry.credentials[0].hash = hash_key("team-key");
    }

    let keys = KeySet::from_entries(entries);
    assert_eq!(keys.authenticate_key(Some("team-key"), BEFORE).unwrap_err(), AuthError::UnknownKey);
    assert_eq!(keys.authenticate("reader", Some("team-key"), BEFORE).unwrap().model_id(), "reader");
    assert_eq!(keys.authenticate("writer", Some("team-key"), BEFORE).unwrap().model_id(), "writer");
}

#[test]
fn timestamp_out_of_range_in_utc_is_an_error() {
    let error = parse_timestamp("9999-12-31T23:59:59-23:59").err().unwrap_or_default();
    assert!(error.contains("out of range once converted to UTC"), "{error}");
    assert!(parse_timestamp("9999-12-31T23:59:59+01:00").is_ok(), "an offset towards UTC stays in range");
}
