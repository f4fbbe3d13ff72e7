//! Loads the fuzzer's input as `policies.yaml` and checks the policy it yields.
//!
//! A load error must name the origin and place its problems inside the text. A loaded policy
//! must be deterministic, report sorted and unique rule ids, and decide probe calls by its
//! documented semantics: an enforced deny wins, then an enforced allow, then the default. Any
//! allowed call must also be one that `Policy::may_allow`, which filters `tools/list`, keeps.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpsec_fuzz::{check_load_error, probe_inputs, probe_instant, probe_words};
use mcpsec_policy::{Decision, Effect, Mode, NoCalls, Policy, Request};

const ORIGIN: &str = "fuzz/policies.yaml";

/// Most words of the text used as model ids and tool names. Each pair of them is evaluated with
/// four inputs, so the work per input grows with the square of this.
const MAX_WORDS: usize = 6;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    let loaded = Policy::from_yaml(ORIGIN, text);
    let again = Policy::from_yaml(ORIGIN, text);
    match (&loaded, &again) {
        (Ok(policy), Ok(other)) => assert_eq!(policy.rule_ids(), other.rule_ids(), "loading twice differs"),
        (Err(error), Err(other)) => assert_eq!(error, other, "loading twice differs"),
        _ => panic!("loading twice differs: {loaded:?} then {again:?}"),
    }

    match loaded {
        Ok(policy) => check_policy(&policy, text),
        Err(error) => check_load_error(&error, ORIGIN, text),
    }
});

fn check_policy(policy: &Policy, text: &str) {
    let ids = policy.rule_ids();
    assert_eq!(ids.len(), policy.rule_count() + policy.limit_count());
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "rule ids are not sorted and unique: {ids:?}");

    let words = probe_words(text, MAX_WORDS, &["gpt-4o", "calendar.delete_event", "search.web"]);
    let inputs = probe_inputs(&words);
    for model_id in &words {
        for tool_name in &words {
            for input in &inputs {
                let request = Request { model_id, session_id: "fuzz-session", tool_name, input, calls: &NoCalls };
                let decision = policy.evaluate(&request, probe_instant());
                assert_eq!(decision, policy.evaluate(&request, probe_instant()), "evaluating twice differs");
                check_decision(policy, &decision, &ids);
                assert!(
                    !decision.is_allowed() || policy.may_allow(model_id, tool_name),
                    "`{tool_name}` is allowed for `{model_id}` but may_allow hides it: {decision:?}"
                );
            }
        }
    }
}

/// Checks a decision against the documented order: enforced deny, enforced allow, default.
fn check_decision(policy: &Policy, decision: &Decision, ids: &[&str]) {
    let matched = decision.matched_ids();
    assert!(matched.windows(2).all(|pair| pair[0] <= pair[1]), "matches are not sorted: {matched:?}");
    assert!(matched.iter().all(|id| ids.contains(id)), "a match names an unknown id: {matched:?}");
    if let Some(rule) = &decision.verdict.rule {
        assert!(matched.contains(&rule.as_str()), "deciding rule `{rule}` is not among the matches");
    }

    let enforced = |effect: Effect| decision.matched.iter().any(|m| !m.shadow && m.action == effect);
    let expected = if enforced(Effect::Deny) {
        Effect::Deny
    } else if enforced(Effect::Allow) || policy.mode() == Mode::Shadow {
        Effect::Allow
    } else {
        policy.default_effect()
    };
    assert_eq!(decision.verdict.effect, expected, "decision breaks the evaluation order: {decision:?}");

    if let Some(shadow) = &decision.shadow {
        assert_ne!(shadow, &decision.verdict, "a shadow verdict equal to the enforced one is reported");
    }
}
