//! The OpenAPI document at `/openapi.json` and the routers stay in step, in both directions.
//!
//! axum cannot list its routes, so each direction is checked from what can be observed:
//!
//! * Documented operations are served: every documented path is requested with every method
//!   on the real router (built as `mcpsec serve` builds it, on a temporary SQLite store). The
//!   router's own fallbacks are recognizable by their JSON `status`, `route_not_found` for a
//!   path and `method_not_allowed` for a method, so any other reply means that a handler ran.
//!   The methods a path serves must be exactly the documented ones. `HEAD` is left out,
//!   because axum serves it on every `GET` route and the document says so once.
//! * Served paths are documented: the path literals of every `.route(` call in `src/http/`
//!   and `src/dash/`, the only folders that build the gateway's routers, must each be a
//!   documented path. Together with the first check, this covers every (method, path) pair.
//!   Reading the literals is less fragile than parsing the method chains, which span lines and
//!   handlers. The scan fails when a `.route(` has no literal path, or when the folders use
//!   `nest` or `route_service`, whose routes it could not see, so that a new style of route
//!   cannot slip past it.
//!
//! The document's validity against the OpenAPI 3.1 schema, and the answers' conformance to it,
//! are checked by `infra/schemathesis.sh`, which the test command runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use mcpsec_gateway::sessions::SessionIssuer;
use mcpsec_gateway::state::{AppState, AuditWrites, Options, Stores};
use mcpsec_gateway::store::sqlite::SqliteStore;
use mcpsec_gateway::upstream::Upstreams;
use serde_json::Value;
use tower::ServiceExt;

const ADMIN_KEY: &str = "admin-secret";

/// Methods probed on every documented path. axum serves `HEAD` on every `GET` route, and
/// `CONNECT` is not a request to a resource, so neither is probed.
const PROBED_METHODS: [Method; 7] =
    [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS, Method::TRACE];

/// Folders, relative to the crate, whose `.route(` calls build the gateway's routers.
const ROUTER_SOURCES: [&str; 2] = ["src/http", "src/dash"];

/// Router methods that add routes the source scan cannot see.
const UNSCANNED_ROUTING: [&str; 3] = [".nest(", ".nest_service(", ".route_service("];

struct Gateway {
    _dir: tempfile::TempDir,
    router: Router,
}

async fn gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let stores = Stores { keys: store.clone(), policy: store.clone(), audit: store };
    stores.policy.save("default: allow\n", None, "import", None).await.unwrap();
    let options = Options {
        audit_tool_input: true,
        max_body_bytes: 1 << 20,
        cache_ttl: Duration::from_secs(600),
        audit_writes: AuditWrites::Twice,
    };
    let sessions = SessionIssuer::new(b"test-secret", Duration::from_secs(60));
    let state = AppState::new(stores, Upstreams::none(), Some(ADMIN_KEY), sessions, options);
    Gateway { _dir: dir, router: mcpsec_gateway::http::router(state) }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

/// Sends a request without a body or credentials, so that no handler changes any state.
async fn send(gateway: &Gateway, method: Method, uri: &str) -> Reply {
    let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let response = gateway.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Reply { status, headers, json: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

async fn document(gateway: &Gateway) -> Value {
    let reply = send(gateway, Method::GET, "/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK, "GET /openapi.json");
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    assert!(reply.json.is_object(), "the document is a JSON object");
    reply.json
}

/// Returns the documented methods of each path, in upper case.
fn documented_operations(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let paths = document["paths"].as_object().expect("the document has `paths`");
    let operation_keys = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    paths
        .iter()
        .map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            let methods = item
                .keys()
                .filter(|key| operation_keys.contains(&key.as_str()))
                .map(|key| key.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// Replaces each `{parameter}` of a path template with a sample value.
fn sample_uri(template: &str) -> String {
    let mut uri = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map(|offset| start + offset).expect("a closed `{` in the path");
        uri.push_str(&rest[..start]);
        uri.push_str("probe");
        rest = &rest[end + 1..];
    }
    uri.push_str(rest);
    uri
}

/// Returns whether the reply came from the router's own fallback, not from a handler.
fn is_router_fallback(reply: &Reply) -> bool {
    let label = reply.json["status"].as_str();
    (reply.status == StatusCode::NOT_FOUND && label == Some("route_not_found"))
        || (reply.status == StatusCode::METHOD_NOT_ALLOWED && label == Some("method_not_allowed"))
}

/// Returns the methods, among [`PROBED_METHODS`], that a handler serves at `path`.
async fn served_methods(gateway: &Gateway, path: &str) -> BTreeSet<String> {
    let uri = sample_uri(path);
    let mut served = BTreeSet::new();
    for method in PROBED_METHODS {
        let reply = send(gateway, method.clone(), &uri).await;
        if !is_router_fallback(&reply) {
            served.insert(method.to_string());
        }
    }
    served
}

fn rust_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// Returns the path of every `.route(` call in `source`, or an error naming a call whose first
/// argument is not a string literal.
fn route_literals(source: &str) -> Result<Vec<String>, String> {
    let mut paths = Vec::new();
    for (offset, _) in source.match_indices(".route(") {
        let argument = source[offset + ".route(".len()..].trim_start();
        let Some(literal) = argument.strip_prefix('"') else {
            let line = source[..offset].matches('\n').count() + 1;
            return Err(format!("line {line}: the path of `.route(` is not a string literal"));
        };
        let end = literal.find('"').expect("a closed string literal");
        paths.push(literal[..end].to_owned());
    }
    Ok(paths)
}

/// Returns the path of every route in [`ROUTER_SOURCES`].
fn routed_paths() -> BTreeSet<String> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for folder in ROUTER_SOURCES {
        rust_files(&crate_dir.join(folder), &mut files);
    }

    let mut paths = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        for call in UNSCANNED_ROUTING {
            assert!(
                !source.contains(call),
                "{}: `{call}` adds routes this test cannot see; extend `routed_paths`",
                file.display()
            );
        }
        let literals = route_literals(&source).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        paths.extend(literals);
    }
    paths
}

/// Collects every `$ref` value in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, member) in object {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => references(member, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn document_is_served_as_openapi_3_1() {
    let gateway = gateway().await;
    let document = document(&gateway).await;

    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "OpenAPI version 3.1, got `{version}`");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"), "info.version is the crate version");

    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(!found.is_empty(), "the document uses components");
    for reference in found {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("`{reference}` is not a local reference"));
        assert!(document.pointer(pointer).is_some(), "`{reference}` resolves");
    }
}

#[tokio::test]
async fn operations_have_ids_responses_and_known_security() {
    let gateway = gateway().await;
    let document = document(&gateway).await;
    let schemes = document["components"]["securitySchemes"].as_object().unwrap();

    let mut operation_ids = BTreeSet::new();
    for (path, methods) in documented_operations(&document) {
        for method in methods {
            let operation = &document["paths"][&path][method.to_lowercase()];
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(operation_ids.insert(id.to_owned()), "{method} {path}: operationId `{id}` is unique and set");
            let responses = operation["responses"].as_object();
            assert!(responses.is_some_and(|responses| !responses.is_empty()), "{method} {path}: has responses");

            let requirements = operation["security"].as_array().cloned().unwrap_or_default();
            for scheme in requirements.iter().filter_map(Value::as_object).flat_map(|requirement| requirement.keys()) {
                assert!(schemes.contains_key(scheme), "{method} {path}: security scheme `{scheme}` is declared");
            }
        }
    }
}

#[tokio::test]
async fn documented_methods_are_exactly_the_served_ones() {
    let gateway = gateway().await;
    let document = document(&gateway).await;

    for (path, documented) in documented_operations(&document) {
        let documented: BTreeSet<String> = documented.into_iter().filter(|method| method != "HEAD").collect();
        let served = served_methods(&gateway, &path).await;
        assert_eq!(served, documented, "methods served at `{path}` (left) and documented (right)");
    }
}

#[tokio::test]
async fn every_routed_path_is_documented() {
    let gateway = gateway().await;
    let documented = documented_operations(&document(&gateway).await);
    let routed = routed_paths();

    assert!(routed.contains("/mcp/toolcall"), "the scan finds the routes: {routed:?}");
    for path in &routed {
        assert!(documented.contains_key(path), "`{path}` is routed but not documented");
    }
}

#[test]
fn route_scan_rejects_paths_that_are_not_literals() {
    let source = "Router::new()\n    .route(\"/a\", get(a))\n    .route(PATH, get(b))\n";

    assert_eq!(route_literals("Router::new().route(\n  \"/a/{id}\", get(a))"), Ok(vec!["/a/{id}".to_owned()]));
    assert_eq!(route_literals(source), Err("line 3: the path of `.route(` is not a string literal".to_owned()));
}

#[tokio::test]
async fn unknown_path_gets_json_404() {
    let gateway = gateway().await;

    let reply = send(&gateway, Method::GET, "/no/such/route").await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(reply.json["status"], "route_not_found");
    assert!(reply.json["reason"].as_str().unwrap().contains("`/no/such/route`"), "reason: {}", reply.json);
}

#[tokio::test]
async fn unserved_method_gets_json_405_with_allow() {
    let gateway = gateway().await;

    let reply = send(&gateway, Method::PUT, "/api/keys").await;

    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(reply.headers[header::ALLOW], "GET,HEAD,POST");
    assert_eq!(reply.json["status"], "method_not_allowed");
    assert!(reply.json["reason"].as_str().unwrap().contains("PUT"), "reason: {}", reply.json);
}
