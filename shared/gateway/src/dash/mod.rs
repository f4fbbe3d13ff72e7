//! The admin dashboard: one static page with its script and style sheet, embedded in the
//! binary so that no front-end build step is needed.
//!
//! The page itself is public because it contains no data and prompts for the admin key. Every
//! data request the page makes goes to the `/api/` routes with the `X-Admin-Key` header, so
//! the key check stays in one place. The Content-Security-Policy allows scripts, styles and
//! requests from this origin only, so a model-supplied string that slipped into markup still
//! could not run.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

/// Content-Security-Policy of every dashboard response: same-origin scripts, styles,
/// requests and images, no inline code, no framing and no form submissions.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Routes of the dashboard: `GET /dash`, `GET /dash/app.js` and `GET /dash/app.css`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dash", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dash/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dash/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_security_headers() {
        for (content_type, body) in [("text/html; charset=utf-8", INDEX_HTML), ("text/css; charset=utf-8", APP_CSS)] {
            let response = asset(content_type, body);
            let headers = response.headers();
            assert_eq!(headers[CONTENT_TYPE], content_type);
            assert_eq!(headers[CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY_VALUE);
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn page_has_no_inline_code() {
        assert!(!INDEX_HTML.contains("<script>"), "index.html must load app.js, not inline a script");
        assert!(!INDEX_HTML.contains("<style"), "index.html must load app.css, not inline styles");
        assert!(!INDEX_HTML.contains(" style="), "index.html must not use style attributes");
        let handlers: Vec<&str> =
            INDEX_HTML.split_whitespace().filter(|word| word.starts_with("on") && word.contains('=')).collect();
        assert!(handlers.is_empty(), "index.html must not use inline event handlers: {handlers:?}");
    }

    #[test]
    fn script_never_sets_inner_html() {
        assert!(!APP_JS.contains("innerHTML"), "app.js must render data with textContent only");
        assert!(!APP_JS.contains("outerHTML"), "app.js must render data with textContent only");
        assert!(!APP_JS.contains("insertAdjacentHTML"), "app.js must render data with textContent only");
        assert!(!APP_JS.contains("document.write"), "app.js must render data with textContent only");
        assert!(!APP_JS.contains("localStorage"), "the admin key belongs in sessionStorage only");
        assert!(!APP_JS.contains("document.cookie"), "the admin key belongs in sessionStorage only");
    }
}
