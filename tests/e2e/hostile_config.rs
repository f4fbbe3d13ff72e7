//! Hostile configuration and lookalike tool names against the real gateway. A rejected policy
//! or keys import changes nothing, and a policy that cannot take effect is saved with warnings.
//! A tool name that differs from a denied one only in case, or by an invisible or full-width
//! character, is never allowed.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::support::gateway::Reply;
use crate::support::{
    ADMIN_KEY, DENIED_TOOL, DENY_RULE, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, ReferenceServer, TEST_POLICY,
};

fn upstream_gateway(reference: &ReferenceServer) -> Result<Gateway> {
    Gateway::start(GatewayOptions { upstream_url: Some(reference.url().to_owned()), ..GatewayOptions::default() })
}

/// Sends `method path` with the admin key and a JSON body.
async fn admin_send(gateway: &Gateway, method: reqwest::Method, path: &str, body: &Value) -> Result<Reply> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?;
    let response = client
        .request(method.clone(), gateway.url(path))
        .header("x-admin-key", ADMIN_KEY)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body)?)
        .send()
        .await
        .with_context(|| format!("{method} {path} failed; gateway output:\n{}", gateway.recent_output()))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, headers, text, json })
}

/// Returns the policy in force: its version and its text.
async fn policy_in_force(gateway: &Gateway) -> Result<(String, String)> {
    let reply = gateway.admin_get("/api/config", Some(ADMIN_KEY)).await?;
    if reply.status != 200 {
        bail!("GET /api/config returned {}: {}", reply.status, reply.text);
    }
    let text = |field: &str| reply.json.get(field).and_then(Value::as_str).map(str::to_owned);
    let version = text("version").context("no `version` in /api/config")?;
    let yaml = text("policy_yaml").context("no `policy_yaml` in /api/config")?;
    Ok((version, yaml))
}

/// Calls `tool` over REST as the model with every tool in scope.
async fn rest_call(gateway: &Gateway, tool: &str, input: Value) -> Result<Reply> {
    let body = json!({"model_id": FULL_MODEL, "session_id": "hostile-config", "tool_name": tool, "input": input});
    gateway.rest_call(Some(FULL_KEY), &body).await
}

fn alias_bomb() -> String {
    let mut text = String::from(
        "default: allow\nrules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['*']\n    when:\n      - path: /x\n        one_of:\n          - &l0 [a, a, a, a, a, a, a, a, a, a]\n",
    );
    for level in 1..9 {
        let items = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("          - &l{level} [{items}]\n"));
    }
    text
}

/// Hostile policies: the name, the YAML, the HTTP status and text the reason must contain.
fn hostile_policies() -> Vec<(&'static str, String, u16, &'static str)> {
    let allow_all = "default: allow\nrules:\n";
    let deny = |tools: &str| format!("{allow_all}  - id: d\n    action: deny\n    reason: r\n    tools: {tools}\n");
    vec![
        ("duplicate top-level key", "default: allow\ndefault: deny\n".to_owned(), 400, "duplicate key `default`"),
        ("duplicate rule field", format!("{}    action: allow\n", deny("['get-env']")), 400, "duplicate key `action`"),
        ("action yes", deny("['get-env']").replace("action: deny", "action: yes"), 400, "unknown value `yes`"),
        (
            "max_calls 1e3",
            "limits:\n  - id: l\n    per: model\n    max_calls: 1e3\n    window: 1m\n".to_owned(),
            400,
            "expected a whole number",
        ),
        ("bound .nan", format!("{}    when:\n      - {{path: /a, gt: .nan}}\n", deny("['get-sum']")), 400, "finite"),
        (
            "equals 012",
            format!("{}    when:\n      - {{path: /a, equals: 012}}\n", deny("['get-sum']")),
            400,
            "leading zero",
        ),
        ("zero-width deny pattern", deny("['get\u{200b}-env']"), 400, "U+200B"),
        ("full-width deny pattern", deny("['ｇet-env']"), 400, "U+FF47"),
        ("unknown field", format!("{}    tool: x\n", deny("['get-env']")), 400, "unknown field `tool`"),
        ("alias bomb", alias_bomb(), 400, "alias bomb"),
        ("deep nesting", format!("rules: {}{}\n", "[".repeat(5_000), "]".repeat(5_000)), 400, "recursion limit"),
        ("two documents", "default: allow\n---\ndefault: deny\n".to_owned(), 400, "more than one YAML document"),
        ("input over the body limit", format!("default: allow\n# {}\n", "x".repeat(2 * 1024 * 1024)), 413, "limit"),
    ]
}

#[tokio::test]
async fn rejected_policy_leaves_the_old_one_in_force() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = upstream_gateway(&reference)?;
    let (version, yaml) = policy_in_force(&gateway).await?;
    assert_eq!(yaml, TEST_POLICY, "the gateway starts with the test policy");

    for (name, policy, status, reason) in hostile_policies() {
        let body = json!({"policy_yaml": policy, "base_version": version});
        let reply = admin_send(&gateway, reqwest::Method::PUT, "/api/config", &body).await?;
        assert_eq!(reply.status, status, "{name}: status: {}", reply.text);
        let text = reply.json["reason"].as_str().unwrap_or_default();
        assert!(text.contains(reason), "{name}: the reason contains `{reason}`: {}", reply.text);
        if status == 400 {
            assert_eq!(reply.json["status"], "invalid_policy", "{name}: {}", reply.text);
            assert!(reply.json["problems"][0]["line"].is_u64(), "{name}: the problem has a line: {}", reply.text);
        }
        assert_eq!(policy_in_force(&gateway).await?, (version.clone(), yaml.clone()), "{name}: the policy in force");
    }

    let versions = gateway.admin_get("/api/policy/versions", Some(ADMIN_KEY)).await?;
    let count = versions.json["versions"].as_array().map(Vec::len);
    assert_eq!(count, Some(1), "no rejected policy was stored: {}", versions.text);

    let denied = rest_call(&gateway, DENIED_TOOL, json!({})).await?;
    assert_eq!(denied.status, 403, "the old policy still denies `{DENIED_TOOL}`: {}", denied.text);
    assert_eq!(denied.json["rules"], json!([DENY_RULE]), "by its rule: {}", denied.text);
    let allowed = rest_call(&gateway, "echo", json!({"message": "still here"})).await?;
    assert_eq!(allowed.status, 200, "the old policy still allows `echo`: {}", allowed.text);
    Ok(())
}

/// Hostile keys files: the name, the YAML and the text the reason must contain.
fn hostile_keys() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "duplicate model",
            "models:\n  m:\n    key: a\n    tools: ['*']\n  m:\n    key: b\n    tools: ['*']\n",
            "duplicate key `m`",
        ),
        ("revoked yes", "models:\n  m:\n    key: a\n    tools: ['*']\n    revoked: yes\n", "`true` or `false`"),
        ("model id with a space", "models:\n  'gpt 4':\n    key: a\n    tools: ['*']\n", "U+0020"),
        ("full-width scope", "models:\n  m:\n    key: a\n    tools: ['ｅcho']\n", "U+FF45"),
        ("null key", "models:\n  m:\n    key: ~\n    tools: ['*']\n", "missing `key`"),
        (
            "one valid model and one invalid",
            "models:\n  newcomer:\n    key: fresh\n    tools: ['*']\n  broken:\n    key: b\n    tools: []\n",
            "at least one tool pattern",
        ),
        ("two documents", "models: {}\n---\nmodels: {}\n", "more than one YAML document"),
    ]
}

#[tokio::test]
async fn rejected_keys_import_changes_no_key() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = upstream_gateway(&reference)?;
    let before = gateway.admin_get("/api/keys", Some(ADMIN_KEY)).await?;
    assert_eq!(before.status, 200, "GET /api/keys: {}", before.text);

    for (name, keys, reason) in hostile_keys() {
        let body = json!({"model_keys_yaml": keys});
        let reply = admin_send(&gateway, reqwest::Method::POST, "/api/keys/import", &body).await?;
        assert_eq!(reply.status, 400, "{name}: status: {}", reply.text);
        assert_eq!(reply.json["status"], "invalid_keys", "{name}: {}", reply.text);
        let text = reply.json["reason"].as_str().unwrap_or_default();
        assert!(text.contains(reason), "{name}: the reason contains `{reason}`: {}", reply.text);
        let after = gateway.admin_get("/api/keys", Some(ADMIN_KEY)).await?;
        assert_eq!(after.json, before.json, "{name}: the stored keys are unchanged");
    }

    let allowed = rest_call(&gateway, "echo", json!({"message": "key still works"})).await?;
    assert_eq!(allowed.status, 200, "the old key still works: {}", allowed.text);
    let body = json!({"model_id": "newcomer", "session_id": "hostile-config", "tool_name": "echo", "input": {}});
    let newcomer = gateway.rest_call(Some("fresh"), &body).await?;
    assert_eq!(newcomer.status, 401, "no model of a rejected file was imported: {}", newcomer.text);
    Ok(())
}

#[tokio::test]
async fn policy_that_cannot_match_is_saved_with_warnings() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = upstream_gateway(&reference)?;
    let (version, _) = policy_in_force(&gateway).await?;
    let misspelt = "default: allow\nrules:\n  - id: long-echoes\n    action: deny\n    reason: too long\n    \
                    tools: ['echo']\n    when:\n      - path: /mesage\n        min_length: 5\n";

    let reply =
        admin_send(&gateway, reqwest::Method::POST, "/api/policy/validate", &json!({"policy_yaml": misspelt})).await?;
    assert_eq!(reply.status, 200, "a policy with warnings is valid: {}", reply.text);
    assert_eq!(reply.json["valid"], true, "{}", reply.text);
    assert_eq!(reply.json["tools_checked"], true, "the reference server's tools were listed: {}", reply.text);
    let warning = &reply.json["warnings"][0];
    assert_eq!(warning["rule"], "long-echoes", "the warning names the rule: {}", reply.text);
    assert_eq!(warning["field"], "when[0].path", "the warning names the field: {}", reply.text);
    assert_eq!(warning["tools"], json!(["echo"]), "the warning names the tool: {}", reply.text);
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(message.contains("`/mesage`"), "the message names the input field: {}", reply.text);
    assert_eq!(reply.json["warnings"].as_array().map(Vec::len), Some(1), "one warning: {}", reply.text);

    let body = json!({"policy_yaml": misspelt, "base_version": version});
    let saved = admin_send(&gateway, reqwest::Method::PUT, "/api/config", &body).await?;
    assert_eq!(saved.status, 200, "the policy is saved despite its warning: {}", saved.text);
    assert_eq!(saved.json["warnings"][0]["rule"], "long-echoes", "the save lists the warning: {}", saved.text);
    let (new_version, _) = policy_in_force(&gateway).await?;
    assert_ne!(new_version, version, "the new policy is in force");
    let long = rest_call(&gateway, "echo", json!({"message": "longer than five"})).await?;
    assert_eq!(long.status, 200, "the misspelt condition never matches, as warned: {}", long.text);

    let deny_only = "default: deny\nrules:\n  - id: no-env\n    action: deny\n    reason: r\n    tools: ['get-env']\n";
    let reply =
        admin_send(&gateway, reqwest::Method::POST, "/api/policy/validate", &json!({"policy_yaml": deny_only})).await?;
    assert_eq!(reply.json["warnings"][0]["field"], "default", "a deny-only policy warns: {}", reply.text);
    Ok(())
}

/// Tool names that a person could take for `get-env` or `echo`: the name, the REST status and
/// the text the reason must contain.
fn lookalike_calls() -> Vec<(&'static str, u16, &'static str)> {
    vec![
        ("Get-Env", 403, DENY_RULE),
        ("GET-ENV", 403, DENY_RULE),
        ("get-ENV", 403, DENY_RULE),
        ("get\u{200b}-env", 400, "U+200B"),
        ("get-env\u{feff}", 400, "U+FEFF"),
        ("ｇet-env", 400, "U+FF47"),
        ("get\u{2010}env", 400, "U+2010"),
        ("\u{435}cho", 400, "U+0435"),
        ("echo\u{0}", 400, "U+0000"),
        ("echo\u{301}", 400, "U+0301"),
    ]
}

#[tokio::test]
async fn lookalike_tool_names_are_never_allowed() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = upstream_gateway(&reference)?;

    for (tool, status, reason) in lookalike_calls() {
        let shown = tool.escape_debug();
        let reply = rest_call(&gateway, tool, json!({"message": "hi"})).await?;
        assert_eq!(reply.status, status, "`{shown}`: status: {}", reply.text);
        let text = if status == 403 { reply.json["rules"].to_string() } else { reply.json["reason"].to_string() };
        assert!(text.contains(reason), "`{shown}`: the reply names `{reason}`: {}", reply.text);
    }
    Ok(())
}
