//! `tools/list` through the gateway shows each model only what its scope and the policy allow.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::json;

use crate::support::{
    DENIED_TOOL, FULL_KEY, Gateway, GatewayOptions, NARROW_KEY, ReferenceServer, key_header, run_mcp_client,
};

#[tokio::test]
async fn tools_list_is_filtered_per_model() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway =
        Gateway::start(GatewayOptions { upstream_url: Some(reference.url().to_owned()), ..GatewayOptions::default() })?;
    let list = json!([{"op": "list_tools"}]);
    let url = gateway.mcp_url();
    let full_key = [key_header(FULL_KEY)];
    let narrow_key = [key_header(NARROW_KEY)];
    let narrow_bearer = [format!("Authorization: Bearer {NARROW_KEY}")];

    let (direct, full, narrow, narrow_by_bearer) = tokio::try_join!(
        run_mcp_client(reference.url(), &[], &list),
        run_mcp_client(&url, &full_key, &list),
        run_mcp_client(&url, &narrow_key, &list),
        run_mcp_client(&url, &narrow_bearer, &list),
    )?;

    let direct_tools = direct.tools(0)?;
    let direct_names: BTreeSet<&str> = direct_tools.iter().map(|(name, _)| name.as_str()).collect();
    assert!(direct_names.contains(DENIED_TOOL), "the reference server lists `{DENIED_TOOL}`: {direct_names:?}");
    assert!(direct_names.contains("echo"), "the reference server lists `echo`: {direct_names:?}");

    let full_tools = full.tools(0)?;
    let full_names: BTreeSet<&str> = full_tools.iter().map(|(name, _)| name.as_str()).collect();
    let mut expected = direct_names.clone();
    expected.remove(DENIED_TOOL);
    assert_eq!(
        full_names, expected,
        "model `full` (scope `*`) sees every reference tool except `{DENIED_TOOL}`, which a rule denies"
    );
    for (name, tool) in &full_tools {
        let direct_tool = direct_tools.iter().find(|(direct_name, _)| direct_name == name).map(|(_, tool)| tool);
        assert_eq!(Some(tool), direct_tool, "the gateway passes the definition of `{name}` through unchanged");
    }

    let narrow_names: Vec<String> = narrow.tools(0)?.into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        narrow_names,
        ["echo", "get-sum"],
        "model `narrow` (scope `echo`, `get-sum`) sees exactly its two tools"
    );

    let bearer_names: Vec<String> = narrow_by_bearer.tools(0)?.into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        bearer_names,
        ["echo", "get-sum"],
        "the key in `Authorization: Bearer` selects the same model as `X-Model-Key`"
    );
    Ok(())
}
