//! Loads the fuzzer's input as `model_keys.yaml` and checks the key set it yields.
//!
//! A load error must name the origin and place its problems inside the text. In a loaded key
//! set, every model must be found by its id with a usable scope. A valid key alone, as on the
//! MCP endpoint, must authenticate as the model it was written for. A key that authenticates
//! alone must also authenticate with the model id named.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpsec_fuzz::{check_load_error, probe_instant, probe_words};
use mcpsec_policy::keys::hash_key;
use mcpsec_policy::{KeySet, Scope};

const ORIGIN: &str = "fuzz/model_keys.yaml";

/// Most words of the text tried as keys and tool names; a try is a hash and a lookup per model.
const MAX_WORDS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    match KeySet::from_yaml(ORIGIN, text) {
        Ok(keys) => check_keys(&keys, text),
        Err(error) => check_load_error(&error, ORIGIN, text),
    }
});

fn check_keys(keys: &KeySet, text: &str) {
    assert_eq!(keys.len(), keys.entries().count());
    let words = probe_words(text, MAX_WORDS, &["modelkey-abc123", "calendar.create_event", "search.web"]);

    for entry in keys.entries() {
        let found = keys.get(&entry.model_id).map(|found| &found.model_id);
        assert_eq!(found, Some(&entry.model_id), "model is not found by its id");
        assert!(!entry.credentials.is_empty(), "model `{}` has no credential", entry.model_id);

        let rebuilt = Scope::new(entry.scope.patterns());
        let Ok(rebuilt) = rebuilt else { panic!("scope of `{}` does not compile again: {rebuilt:?}", entry.model_id) };
        for tool_name in &words {
            assert_eq!(rebuilt.allows(tool_name), entry.scope.allows(tool_name), "scope differs on `{tool_name}`");
        }
    }

    for key in &words {
        check_key(keys, key);
    }
}

/// Checks that `key` authenticates as the model entries require.
fn check_key(keys: &KeySet, key: &str) {
    let now = probe_instant();
    let hash = hash_key(key);
    let by_key = keys.authenticate_key(Some(key), now);

    if let Ok(principal) = &by_key {
        assert_eq!(principal.credential.hash, hash, "authenticated with another key's credential");
        let by_id = keys.authenticate(principal.model_id(), Some(key), now);
        assert!(by_id.is_ok(), "key authenticates alone but not with model id `{}`", principal.model_id());
    }

    for entry in keys.entries() {
        let valid = entry.credentials.iter().any(|credential| {
            credential.hash == hash && !credential.revoked && credential.expires.is_none_or(|expires| now < expires)
        });
        if !valid || entry.revoked {
            continue;
        }
        let model_id = by_key.as_ref().map(|principal| principal.model_id());
        assert_eq!(
            model_id,
            Ok(entry.model_id.as_str()),
            "a valid key of `{}` authenticates otherwise",
            entry.model_id
        );
        assert!(keys.authenticate(&entry.model_id, Some(key), now).is_ok());
    }
}
