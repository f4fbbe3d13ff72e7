//! Routing of tool names to upstream servers.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use mcpsec_policy::{KnownTool, LoadError, names};
use serde_json::Value;

use super::client::UpstreamClient;
use super::config::{self, DEFAULT_TIMEOUT};

/// Environment variable with the URL of the one default upstream.
pub const TOOL_SERVER_URL: &str = "TOOL_SERVER_URL";

/// Environment variable with the path of the upstreams file.
pub const UPSTREAMS_FILE: &str = "UPSTREAMS_FILE";

/// Name of the upstream configured by [`TOOL_SERVER_URL`].
pub const DEFAULT_UPSTREAM_NAME: &str = "default";

/// Maximum number of distinct rejected tool names logged at `warn`. Later ones are logged at
/// `debug`, so that an upstream that renames its tools on every list cannot flood the log.
const MAX_REPORTED_NAMES: usize = 1024;

/// An error loading the upstream configuration.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    /// The upstreams file has problems, each with its position and field.
    #[error(transparent)]
    Invalid(#[from] LoadError),

    /// The upstreams file could not be read.
    #[error("failed to read upstreams file `{path}` named by `UPSTREAMS_FILE`: {source}")]
    Read {
        /// The path from the environment.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },

    /// `TOOL_SERVER_URL` is not an http or https URL.
    #[error("invalid `TOOL_SERVER_URL`: {detail}")]
    InvalidUrl {
        /// The problem with the value.
        detail: String,
    },

    /// Both ways of configuring upstreams are set.
    #[error("both `TOOL_SERVER_URL` and `UPSTREAMS_FILE` are set; unset one of them")]
    Conflict,
}

/// The upstream MCP servers and the rule that maps a tool name to one of them.
///
/// With one default upstream, tool names pass through unchanged. With an upstreams file, each
/// upstream owns a prefix: the gateway shows the upstream's tool `create_event` as
/// `calendar.create_event` when the prefix is `calendar`, and calls it there as `create_event`.
#[derive(Debug, Clone)]
pub struct Upstreams {
    routing: Routing,
    /// The rejected tool names already logged at `warn`, as `upstream/name`.
    reported: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug, Clone)]
enum Routing {
    Empty,
    Single(UpstreamClient),
    Prefixed(BTreeMap<String, UpstreamClient>),
}

impl Upstreams {
    /// Creates routing without upstreams, where every tool name is unknown and the tool list is empty.
    pub fn none() -> Self {
        Self::with_routing(Routing::Empty)
    }

    fn with_routing(routing: Routing) -> Self {
        Self { routing, reported: Arc::default() }
    }

    /// Creates routing to one upstream that receives every tool name unchanged.
    pub fn single(client: UpstreamClient) -> Self {
        Self::with_routing(Routing::Single(client))
    }

    /// Loads several prefixed upstreams from the text of an upstreams file. `origin` names
    /// the file in errors.
    ///
    /// ```yaml
    /// upstreams:
    ///   - name: calendar                  # letters, digits, _ - . ; unique
    ///     url: http://127.0.0.1:9001/mcp  # http or https
    ///     prefix: calendar                # letters, digits, _ - ; unique; tools are calendar.<tool>
    ///     timeout: 30s                    # optional, default 30s, at most 1h
    ///     max_response_bytes: 16777216    # optional, default 16 MiB
    /// ```
    pub fn from_yaml(origin: &str, text: &str, http: reqwest::Client) -> Result<Self, UpstreamConfigError> {
        let specs = config::parse(origin, text)?;
        let routes = specs
            .into_iter()
            .map(|spec| {
                let client = UpstreamClient::new(spec.name, spec.url, http.clone(), spec.timeout)
                    .with_max_response_bytes(spec.max_response_bytes);
                (spec.prefix, client)
            })
            .collect();
        Ok(Self::with_routing(Routing::Prefixed(routes)))
    }

    /// Loads the upstreams named by the environment: [`UPSTREAMS_FILE`], or else
    /// [`TOOL_SERVER_URL`] with a 30 s timeout, or else none. An empty variable counts as unset.
    ///
    /// `var` returns a variable's value, so tests need not change the process environment.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, http: reqwest::Client) -> Result<Self, UpstreamConfigError> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        match (var(UPSTREAMS_FILE), var(TOOL_SERVER_URL)) {
            (Some(_), Some(_)) => Err(UpstreamConfigError::Conflict),
            (Some(path), None) => Self::from_file(&path, http),
            (None, Some(url)) => {
                let url = config::check_url(&url).map_err(|detail| UpstreamConfigError::InvalidUrl { detail })?;
                Ok(Self::single(UpstreamClient::new(DEFAULT_UPSTREAM_NAME.to_owned(), url, http, DEFAULT_TIMEOUT)))
            }
            (None, None) => Ok(Self::none()),
        }
    }

    fn from_file(path: &str, http: reqwest::Client) -> Result<Self, UpstreamConfigError> {
        let text = std::fs::read_to_string(Path::new(path))
            .map_err(|source| UpstreamConfigError::Read { path: path.to_owned(), source })?;
        Self::from_yaml(path, &text, http)
    }

    /// Returns `true` when there is no upstream.
    pub fn is_empty(&self) -> bool {
        match &self.routing {
            Routing::Empty => true,
            Routing::Single(_) => false,
            Routing::Prefixed(routes) => routes.is_empty(),
        }
    }

    /// Returns the upstream clients, in prefix order.
    pub fn clients(&self) -> Vec<&UpstreamClient> {
        match &self.routing {
            Routing::Empty => Vec::new(),
            Routing::Single(client) => vec![client],
            Routing::Prefixed(routes) => routes.values().collect(),
        }
    }

    /// Finds the upstream for the gateway-visible `tool_name` and the name to call there.
    ///
    /// With prefixes, the name must be `<prefix>.<tool>` with a non-empty tool part; the tool
    /// part may itself contain dots. The prefix must match exactly, case included: the file
    /// has no two prefixes that differ only in case, so no name can reach two upstreams.
    pub fn route(&self, tool_name: &str) -> Option<(&UpstreamClient, String)> {
        match &self.routing {
            Routing::Empty => None,
            Routing::Single(client) => Some((client, tool_name.to_owned())),
            Routing::Prefixed(routes) => {
                let (prefix, upstream_name) = tool_name.split_once(names::PREFIX_SEPARATOR)?;
                if upstream_name.is_empty() {
                    return None;
                }
                routes.get(prefix).map(|client| (client, upstream_name.to_owned()))
            }
        }
    }

    /// Lists the tools of every upstream as gateway-visible name and `Tool` object, with the
    /// object's `name` rewritten to the gateway-visible name.
    ///
    /// Upstreams are asked concurrently. One that fails is logged and skipped, so the list
    /// contains the tools of the healthy upstreams. A tool whose gateway-visible name breaks
    /// the rules of [`names`], or repeats an earlier one, is logged and left out. No call to
    /// the first could pass the name check, and a second definition under one name would let
    /// the upstream change what a listed tool means.
    pub async fn list_tools(&self) -> Vec<(String, Value)> {
        let routes: Vec<(Option<&str>, &UpstreamClient)> = match &self.routing {
            Routing::Empty => Vec::new(),
            Routing::Single(client) => vec![(None, client)],
            Routing::Prefixed(routes) => {
                routes.iter().map(|(prefix, client)| (Some(prefix.as_str()), client)).collect()
            }
        };

        let lists = futures::future::join_all(
            routes.into_iter().map(|(prefix, client)| async move { (prefix, client, client.list_tools().await) }),
        )
        .await;

        let mut visible = Vec::new();
        let mut seen = HashSet::new();
        for (prefix, client, list) in lists {
            match list {
                Ok(tools) => {
                    for (name, tool) in tools.into_iter().filter_map(|tool| visible_tool(prefix, tool)) {
                        match rejection(&name, &mut seen) {
                            None => visible.push((name, tool)),
                            Some(reason) => self.report_rejected(client.name(), &name, &reason),
                        }
                    }
                }
                Err(error) => {
                    let name = client.name();
                    tracing::warn!(
                        upstream.name = %name,
                        error = %error,
                        "skipping upstream whose tools could not be listed"
                    );
                }
            }
        }
        visible
    }

    /// Lists the tools of every upstream with their input schemas, for the warnings of
    /// [`mcpsec_policy::Policy::warnings`]. A tool without an `inputSchema` gets `null`, so
    /// no condition on its fields is reported.
    pub async fn known_tools(&self) -> Vec<KnownTool> {
        self.list_tools()
            .await
            .into_iter()
            .map(|(name, mut tool)| {
                let input_schema = tool.get_mut("inputSchema").map(Value::take).unwrap_or_default();
                KnownTool { name, input_schema }
            })
            .collect()
    }

    /// Logs a tool left out of the list, at `warn` the first time for each name.
    fn report_rejected(&self, upstream: &str, name: &str, reason: &str) {
        let first_time = match self.reported.lock() {
            Ok(mut reported) if reported.len() < MAX_REPORTED_NAMES => reported.insert(format!("{upstream}/{name}")),
            _ => false,
        };
        let shown = name.escape_debug().to_string();
        if first_time {
            tracing::warn!(upstream.name = %upstream, tool.name = %shown, reason, "upstream tool left out of the tool list");
        } else {
            tracing::debug!(upstream.name = %upstream, tool.name = %shown, reason, "upstream tool left out of the tool list");
        }
    }
}

/// Returns why a listed tool must be left out, or `None` when it may be listed.
fn rejection(name: &str, seen: &mut HashSet<String>) -> Option<String> {
    if let Err(error) = names::check_tool_name(name) {
        return Some(error.to_string());
    }
    if !seen.insert(name.to_owned()) {
        return Some(format!("tool `{name}` is listed more than once; the first definition is kept"));
    }
    None
}

/// Renames a tool to its gateway-visible name. [`UpstreamClient::list_tools`] has checked that
/// every tool has a string `name`, so `None` never occurs in practice.
fn visible_tool(prefix: Option<&str>, mut tool: Value) -> Option<(String, Value)> {
    let name = tool.get("name")?.as_str()?;
    let visible_name = match prefix {
        Some(prefix) => format!("{prefix}.{name}"),
        None => name.to_owned(),
    };
    if let Some(object) = tool.as_object_mut() {
        object.insert("name".to_owned(), Value::String(visible_name.clone()));
    }
    Some((visible_name, tool))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use reqwest::Url;
    use serde_json::json;

    use super::*;

    const TWO_UPSTREAMS: &str = "\
upstreams:
  - name: calendar
    url: http://127.0.0.1:9001/mcp
    prefix: calendar
  - name: search
    url: http://127.0.0.1:9002/mcp
    prefix: search
    timeout: 5s
";

    fn routed(upstreams: &Upstreams, tool_name: &str) -> Option<(String, String)> {
        upstreams.route(tool_name).map(|(client, name)| (client.name().to_owned(), name))
    }

    #[test]
    fn prefixed_route_cases() -> Result<(), UpstreamConfigError> {
        let upstreams = Upstreams::from_yaml("upstreams.yaml", TWO_UPSTREAMS, reqwest::Client::new())?;
        let owned = |upstream: &str, name: &str| Some((upstream.to_owned(), name.to_owned()));
        let cases = [
            ("calendar.create_event", owned("calendar", "create_event")),
            ("search.web", owned("search", "web")),
            ("search.docs.v2", owned("search", "docs.v2")),
            ("calendar.", None),
            ("calendar", None),
            ("weather.today", None),
            (".create_event", None),
            ("Calendar.create_event", None),
            ("CALENDAR.create_event", None),
            ("calendar\u{200b}.create_event", None),
            ("ｃalendar.create_event", None),
            ("calendar．create_event", None),
            ("search..web", owned("search", ".web")),
        ];
        for (tool_name, expected) in cases {
            assert_eq!(routed(&upstreams, tool_name), expected, "tool {tool_name}");
        }
        Ok(())
    }

    #[test]
    fn listed_tool_rejection_cases() {
        let cases = [
            ("calendar.create_event", None),
            ("calendar.delete\u{200b}_event", Some("U+200B")),
            ("calendar.ｄelete_event", Some("U+FF44")),
            ("calendar.delete event", Some("U+0020")),
            ("calendar.\u{202e}tneve", Some("U+202E")),
            ("calendar.", None),
            ("calendar.create_event", Some("listed more than once")),
            ("Calendar.create_event", None),
        ];
        let mut seen = HashSet::new();
        for (name, expected) in cases {
            let reason = rejection(name, &mut seen);
            match expected {
                None => assert_eq!(reason, None, "{name}"),
                Some(text) => {
                    let reason = reason.unwrap_or_default();
                    assert!(reason.contains(text), "{name}: {reason}");
                }
            }
        }
        let long = format!("calendar.{}", "x".repeat(120));
        assert!(rejection(&long, &mut seen).is_some_and(|reason| reason.contains("129 characters")));
    }

    #[test]
    fn single_route_passes_names_through() -> Result<(), Box<dyn std::error::Error>> {
        let client = UpstreamClient::new(
            "default".to_owned(),
            Url::parse("http://127.0.0.1:9/mcp")?,
            reqwest::Client::new(),
            Duration::from_secs(1),
        );
        let upstreams = Upstreams::single(client);
        assert_eq!(
            routed(&upstreams, "calendar.create_event"),
            Some(("default".to_owned(), "calendar.create_event".to_owned()))
        );
        assert!(!upstreams.is_empty());
        assert_eq!(upstreams.clients().len(), 1);
        Ok(())
    }

    #[test]
    fn none_routes_nothing() {
        let upstreams = Upstreams::none();
        assert_eq!(routed(&upstreams, "calendar.create_event"), None);
        assert!(upstreams.is_empty());
        assert!(upstreams.clients().is_empty());
    }

    #[test]
    fn clients_keep_file_settings() -> Result<(), UpstreamConfigError> {
        let upstreams = Upstreams::from_yaml("upstreams.yaml", TWO_UPSTREAMS, reqwest::Client::new())?;
        let settings: Vec<_> =
            upstreams.clients().iter().map(|client| (client.name().to_owned(), client.timeout())).collect();
        assert_eq!(settings, [("calendar".to_owned(), DEFAULT_TIMEOUT), ("search".to_owned(), Duration::from_secs(5))]);
        Ok(())
    }

    #[test]
    fn visible_tool_renames_with_prefix() {
        let tool = json!({ "name": "create_event", "inputSchema": { "type": "object" } });
        let expected = json!({ "name": "calendar.create_event", "inputSchema": { "type": "object" } });
        assert_eq!(visible_tool(Some("calendar"), tool.clone()), Some(("calendar.create_event".to_owned(), expected)));
        assert_eq!(visible_tool(None, tool.clone()), Some(("create_event".to_owned(), tool)));
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> =
            pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn from_env_cases() -> Result<(), UpstreamConfigError> {
        let http = reqwest::Client::new();
        assert!(Upstreams::from_env(env(&[]), http.clone())?.is_empty());
        assert!(Upstreams::from_env(env(&[(TOOL_SERVER_URL, " ")]), http.clone())?.is_empty());

        let single = Upstreams::from_env(env(&[(TOOL_SERVER_URL, "http://127.0.0.1:9001/mcp")]), http.clone())?;
        assert_eq!(routed(&single, "search.web"), Some((DEFAULT_UPSTREAM_NAME.to_owned(), "search.web".to_owned())));

        let both = Upstreams::from_env(
            env(&[(TOOL_SERVER_URL, "http://127.0.0.1:1/mcp"), (UPSTREAMS_FILE, "u.yaml")]),
            http.clone(),
        );
        assert_eq!(
            both.err().map(|error| error.to_string()).as_deref(),
            Some("both `TOOL_SERVER_URL` and `UPSTREAMS_FILE` are set; unset one of them")
        );

        let bad_url = Upstreams::from_env(env(&[(TOOL_SERVER_URL, "ftp://127.0.0.1/mcp")]), http.clone());
        assert_eq!(
            bad_url.err().map(|error| error.to_string()).as_deref(),
            Some("invalid `TOOL_SERVER_URL`: `ftp://127.0.0.1/mcp` must be an http or https URL")
        );

        let missing = Upstreams::from_env(env(&[(UPSTREAMS_FILE, "/nonexistent/upstreams.yaml")]), http);
        assert!(matches!(missing, Err(UpstreamConfigError::Read { .. })), "result {missing:?}");
        Ok(())
    }

    #[test]
    fn from_env_reads_upstreams_file() -> Result<(), Box<dyn std::error::Error>> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), TWO_UPSTREAMS)?;
        let path = file.path().to_string_lossy().into_owned();

        let upstreams = Upstreams::from_env(env(&[(UPSTREAMS_FILE, &path)]), reqwest::Client::new())?;
        assert_eq!(routed(&upstreams, "search.web"), Some(("search".to_owned(), "web".to_owned())));
        Ok(())
    }
}
