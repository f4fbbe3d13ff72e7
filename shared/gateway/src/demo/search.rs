//! Made-up web pages and documentation, searched by counting query words.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Maximum length of a query, in characters.
const MAX_QUERY_CHARS: usize = 500;

/// Number of web results when the request sets no limit.
const DEFAULT_WEB_LIMIT: u32 = 5;

/// Maximum number of web results that one request may request.
const MAX_WEB_LIMIT: u32 = 10;

/// The fake web: title, URL and snippet. The URLs use the reserved `example.org` domain.
const WEB_PAGES: [(&str, &str, &str); 8] = [
    (
        "Model Context Protocol overview",
        "https://example.org/mcp/overview",
        "The Model Context Protocol connects language models to tools and data.",
    ),
    (
        "Streamable HTTP transport explained",
        "https://example.org/mcp/streamable-http",
        "How MCP clients and servers exchange JSON-RPC messages over HTTP and server-sent events.",
    ),
    (
        "Writing a calendar tool",
        "https://example.org/tutorials/calendar-tool",
        "Build an MCP tool that creates and lists calendar events.",
    ),
    ("Rust async basics", "https://example.org/rust/async", "Futures, tasks and the tokio runtime in a few pages."),
    (
        "Securing tool calls",
        "https://example.org/security/tool-calls",
        "Policies, allow lists and audit logs for model tool calls.",
    ),
    ("Weekend weather", "https://example.org/weather/weekend", "Sunny with light wind; a fake forecast for demos."),
    (
        "JSON-RPC 2.0 in five minutes",
        "https://example.org/jsonrpc/intro",
        "Requests, responses, notifications and error codes.",
    ),
    (
        "Team calendar etiquette",
        "https://example.org/blog/calendar-etiquette",
        "Keep meetings short, send agendas and invite only who is needed.",
    ),
];

/// The fake documentation: id, title and text.
const DOCS: [(&str, &str, &str); 5] = [
    (
        "gateway-overview",
        "Gateway overview",
        "The gateway authenticates models, checks each tool call against policies and forwards allowed calls to upstream MCP servers.",
    ),
    (
        "policies",
        "Writing policies",
        "Rules allow or deny tools by name pattern, model and argument conditions; limits cap calls per session or model.",
    ),
    (
        "model-keys",
        "Model keys",
        "Each model gets an API key whose SHA-256 hash is stored with the tools the model may call.",
    ),
    (
        "upstreams",
        "Configuring upstreams",
        "Set TOOL_SERVER_URL for one upstream, or list several in an upstreams file with a tool-name prefix each.",
    ),
    (
        "audit-log",
        "Audit log",
        "Every tool call is recorded with the model, the tool, the decision and the rules that matched.",
    ),
];

/// Arguments of `search.web`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSearch {
    /// Words to search for.
    pub query: String,
    /// Maximum number of results, 1 to 10, or 5 when absent.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Arguments of `search.docs`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocsSearch {
    /// Words to search for.
    pub query: String,
}

/// One web result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct WebResult {
    /// Page title.
    pub title: String,
    /// Page URL.
    pub url: String,
    /// Short excerpt.
    pub snippet: String,
}

/// The results of `search.web`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct WebResults {
    /// The query as received.
    pub query: String,
    /// Matching pages, best first.
    pub results: Vec<WebResult>,
}

/// One documentation match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DocMatch {
    /// Document identifier.
    pub id: String,
    /// Document title.
    pub title: String,
    /// The document text.
    pub excerpt: String,
}

/// The results of `search.docs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DocsResults {
    /// The query as received.
    pub query: String,
    /// Matching documents, best first.
    pub documents: Vec<DocMatch>,
}

/// Searches the fake web.
pub fn web(request: WebSearch) -> Result<WebResults, String> {
    let words = query_words(&request.query)?;
    let limit = request.limit.unwrap_or(DEFAULT_WEB_LIMIT);
    if !(1..=MAX_WEB_LIMIT).contains(&limit) {
        return Err(format!("limit {limit} must be between 1 and {MAX_WEB_LIMIT}"));
    }

    let results = rank(&WEB_PAGES, &words, |(title, _, snippet)| format!("{title} {snippet}"))
        .into_iter()
        .take(limit as usize)
        .map(|(title, url, snippet)| WebResult {
            title: title.to_owned(),
            url: url.to_owned(),
            snippet: snippet.to_owned(),
        })
        .collect();
    Ok(WebResults { query: request.query, results })
}

/// Searches the fake documentation.
pub fn docs(request: DocsSearch) -> Result<DocsResults, String> {
    let words = query_words(&request.query)?;
    let documents = rank(&DOCS, &words, |(_, title, text)| format!("{title} {text}"))
        .into_iter()
        .map(|(id, title, text)| DocMatch { id: id.to_owned(), title: title.to_owned(), excerpt: text.to_owned() })
        .collect();
    Ok(DocsResults { query: request.query, documents })
}

fn query_words(query: &str) -> Result<Vec<String>, String> {
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(format!("query is longer than {MAX_QUERY_CHARS} characters"));
    }
    let words: Vec<String> = query
        .split(|character: char| !character.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return Err("query must contain at least one letter or digit".to_owned());
    }
    Ok(words)
}

/// Orders the entries that contain at least one query word by the number of words they
/// contain, keeping the table order among equals.
fn rank<T: Copy>(entries: &[T], words: &[String], text: impl Fn(&T) -> String) -> Vec<T> {
    let mut scored: Vec<(usize, T)> = entries
        .iter()
        .map(|entry| {
            let haystack = text(entry).to_lowercase();
            (words.iter().filter(|word| haystack.contains(word.as_str())).count(), *entry)
        })
        .filter(|(score, _)| *score > 0)
        .collect();
    scored.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    scored.into_iter().map(|(_, entry)| entry).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web_titles(query: &str, limit: Option<u32>) -> Result<Vec<String>, String> {
        let results = web(WebSearch { query: query.to_owned(), limit })?;
        Ok(results.results.into_iter().map(|result| result.title).collect())
    }

    #[test]
    fn web_ranks_by_matching_words() -> Result<(), String> {
        assert_eq!(
            web_titles("calendar tool", None)?,
            [
                "Writing a calendar tool",
                "Model Context Protocol overview",
                "Securing tool calls",
                "Team calendar etiquette"
            ]
        );
        assert_eq!(web_titles("calendar tool", Some(1))?, ["Writing a calendar tool"]);
        assert!(web_titles("zebra", None)?.is_empty());
        Ok(())
    }

    #[test]
    fn web_rejects_invalid_requests() {
        assert!(web_titles("   ", None).is_err());
        assert!(web_titles("mcp", Some(0)).is_err());
        assert!(web_titles("mcp", Some(11)).is_err());
        assert!(web_titles(&"a".repeat(MAX_QUERY_CHARS + 1), None).is_err());
    }

    #[test]
    fn docs_finds_upstream_page() -> Result<(), String> {
        let results = docs(DocsSearch { query: "TOOL_SERVER_URL upstreams".to_owned() })?;
        let ids: Vec<&str> = results.documents.iter().map(|document| document.id.as_str()).collect();
        assert_eq!(ids.first(), Some(&"upstreams"));
        Ok(())
    }
}
