//! The route path of an API Gateway request, without the stage.

use axum::http::Uri;
use axum::http::uri::PathAndQuery;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

/// Rewrites the path of `request` to the route path, the path without the API Gateway stage,
/// so that `/mcp/toolcall` matches on every stage.
///
/// What `lambda_http` 1.3 builds as the request path (read from `apigw_path_with_stage` in its
/// `src/request.rs`):
///
/// * HTTP API (payload 2.0): `rawPath`. On the `$default` stage it is `/mcp/toolcall`; on a
///   named stage API Gateway sends `/prod/mcp/toolcall`.
/// * REST API (payload 1.0): API Gateway sends `path` without the stage (`/mcp/toolcall`), and
///   `lambda_http` puts `/{stage}` in front of it, so the router gets `/prod/mcp/toolcall`.
/// * With `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` set to any value, `lambda_http` adds nothing
///   and the path is `rawPath` or `path` as sent.
///
/// The rewrite starts from what API Gateway sent, which does not depend on that variable:
/// `path` for a REST API, and `rawPath` without a leading `/{stage}` segment for an HTTP API
/// on a named stage. It encodes the path the way `lambda_http` does and keeps the query.
/// Requests from other sources are left as they are.
///
/// NOTE: the tests cover requests to the API's own `execute-api` host name only. Behind a
/// custom domain name with an API mapping, the path may carry the mapping's base path, which
/// this does not remove.
pub fn strip_stage(mut request: lambda_http::Request) -> lambda_http::Request {
    let Some(route_path) = route_path(&request) else {
        return request;
    };
    if let Some(uri) = with_path(request.uri(), &route_path) {
        *request.uri_mut() = uri;
    }
    request
}

/// Returns the path API Gateway routed, without the stage, as sent (not percent-encoded).
fn route_path(request: &lambda_http::Request) -> Option<String> {
    let raw_path = request.raw_http_path();
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV1(_) => Some(raw_path.to_owned()),
        RequestContext::ApiGatewayV2(context) => Some(without_stage(raw_path, context.stage.as_deref()).to_owned()),
        _ => None,
    }
}

/// Removes a leading `/{stage}` segment, unless the stage is `$default` or absent.
fn without_stage<'a>(path: &'a str, stage: Option<&str>) -> &'a str {
    let Some(stage) = stage.filter(|stage| !stage.is_empty() && *stage != "$default") else {
        return path;
    };
    match path.strip_prefix('/').and_then(|rest| rest.strip_prefix(stage)) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Returns `uri` with its path replaced by `path`, keeping the scheme, authority and query.
/// The path is percent-encoded as `lambda_http` encodes it, by parsing it as a URL.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let url = reqwest::Url::parse(&format!("http://localhost{path}")).ok()?;
    let path_and_query = match uri.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };

    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::without_stage;

    #[test]
    fn without_stage_removes_only_a_whole_leading_segment() {
        let cases = [
            ("/mcp/toolcall", None, "/mcp/toolcall"),
            ("/mcp/toolcall", Some("$default"), "/mcp/toolcall"),
            ("/prod/mcp/toolcall", Some("prod"), "/mcp/toolcall"),
            ("/prod", Some("prod"), "/"),
            ("/prod/", Some("prod"), "/"),
            ("/production/mcp", Some("prod"), "/production/mcp"),
            ("/mcp/toolcall", Some("prod"), "/mcp/toolcall"),
            ("/mcp/mcp/toolcall", Some("mcp"), "/mcp/toolcall"),
            ("/prod/mcp", Some(""), "/prod/mcp"),
        ];
        for (path, stage, expected) in cases {
            assert_eq!(without_stage(path, stage), expected, "path {path:?} on stage {stage:?}");
        }
    }
}
