//! A loopback HTTP proxy in front of a test server (the AWS emulator or the reference MCP
//! server). It records every request it receives and can inject a store fault: DynamoDB's and
//! S3's throttling errors, a request that gets no response, or refused connections.
//!
//! Every response carries `Connection: close`, so that no kept-alive connection outlives a
//! change of fault: each request opens a new connection and meets the fault in force.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

/// Header that names the DynamoDB operation, such as `DynamoDB_20120810.PutItem`.
const DYNAMODB_TARGET: &str = "x-amz-target";

/// Time limit of one forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one hop and are not forwarded.
const HOP_HEADERS: [&str; 6] = ["host", "connection", "content-length", "transfer-encoding", "keep-alive", "upgrade"];

/// What the proxy does with a request that the fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it.
    None,
    /// Reply as AWS does when a request is throttled. A DynamoDB request gets HTTP 400 with
    /// this exception name in `__type`, such as `ProvisionedThroughputExceededException` or
    /// `ThrottlingException`. An S3 request gets HTTP 503 with the code `SlowDown`.
    Throttle(&'static str),
    /// Hold it and never respond.
    Hang,
}

/// The requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requests {
    /// Every request.
    All,
    /// DynamoDB requests of one operation, such as `PutItem`; others are forwarded.
    DynamoDb(&'static str),
}

impl Requests {
    fn contains(self, operation: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::DynamoDb(name) => operation == Some(name),
        }
    }
}

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
    /// The DynamoDB operation, such as `PutItem`, from `X-Amz-Target`; `None` for S3 and MCP.
    pub operation: Option<String>,
    /// Whether a fault replied to it instead of the target.
    pub faulted: bool,
}

struct Shared {
    target: String,
    http: reqwest::Client,
    fault: Mutex<(Fault, Requests)>,
    requests: Mutex<Vec<Recorded>>,
}

/// The proxy. Dropping it stops listening.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts the proxy on a free 127.0.0.1 port, forwarding to `target`, an origin such as
    /// `http://127.0.0.1:5000` with no path. It starts with [`Fault::None`].
    pub async fn start(target: &str) -> Result<Self> {
        if !target.starts_with("http://127.0.0.1:") {
            bail!("the proxy forwards only to loopback; `{target}` is not an http://127.0.0.1 origin");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FORWARD_TIMEOUT)
            .build()
            .context("failed to build the proxy's HTTP client")?;
        let shared = Arc::new(Shared {
            target: target.trim_end_matches('/').to_owned(),
            http,
            fault: Mutex::new((Fault::None, Requests::All)),
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("failed to bind the proxy's port")?;
        let port = listener.local_addr()?.port();
        let server = Some(serve(listener, Arc::clone(&shared)));
        Ok(Self { port, shared, server })
    }

    /// Returns `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Applies `fault` to `requests` from now on; [`Fault::None`] clears it.
    pub fn set_fault(&self, fault: Fault, requests: Requests) {
        *lock(&self.shared.fault) = (fault, requests);
    }

    /// Stops listening, so that connections are refused until [`FaultProxy::listen_again`].
    pub fn refuse_connections(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn listen_again(&mut self) -> Result<()> {
        self.refuse_connections();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => {
                    self.server = Some(serve(listener, Arc::clone(&self.shared)));
                    return Ok(());
                }
                Err(error) if tokio::time::Instant::now() < deadline => {
                    eprintln!("proxy port {} not free yet ({error}); retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => bail!("failed to listen on port {} again: {error}", self.port),
            }
        }
    }

    /// Returns every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Returns how many requests were received so far; a mark for [`FaultProxy::requests_since`].
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Returns the requests received after `mark`, a value of [`FaultProxy::request_count`].
    pub fn requests_since(&self, mark: usize) -> Vec<Recorded> {
        lock(&self.shared.requests).get(mark..).map(<[Recorded]>::to_vec).unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.refuse_connections();
    }
}

fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let router = Router::new().fallback(handle).with_state(shared);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            eprintln!("proxy stopped: {error}");
        }
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get(DYNAMODB_TARGET)
        .and_then(|value| value.to_str().ok())
        .and_then(|target| target.rsplit_once('.'))
        .map(|(_, operation)| operation.to_owned());
    let (fault, requests) = *lock(&shared.fault);
    let fault = if requests.contains(operation.as_deref()) { fault } else { Fault::None };
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |path| path.as_str().to_owned());

    let recorded = Recorded {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
        operation: operation.clone(),
        faulted: fault != Fault::None,
    };
    lock(&shared.requests).push(recorded);

    let mut response = match fault {
        Fault::None => forward(&shared, method, &path, &headers, body).await,
        Fault::Throttle(exception) => throttled(operation.is_some(), exception),
        Fault::Hang => std::future::pending().await,
    };
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn forward(shared: &Shared, method: Method, path: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let mut request = shared.http.request(method, format!("{}{path}", shared.target)).body(body);
    for (name, value) in headers {
        if !HOP_HEADERS.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    let reply = match request.send().await {
        Ok(reply) => reply,
        Err(error) => return (StatusCode::BAD_GATEWAY, format!("proxy: forwarding failed: {error}")).into_response(),
    };

    let status = reply.status();
    let mut reply_headers = HeaderMap::new();
    for (name, value) in reply.headers() {
        if !HOP_HEADERS.contains(&name.as_str()) {
            reply_headers.append(name, value.clone());
        }
    }
    match reply.bytes().await {
        Ok(bytes) => (status, reply_headers, bytes).into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, format!("proxy: reading the reply failed: {error}")).into_response(),
    }
}

/// Builds the throttling error of DynamoDB (`is_dynamodb`) or S3, as those services send it.
fn throttled(is_dynamodb: bool, exception: &str) -> Response {
    if is_dynamodb {
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{exception}"),
            "message": "injected by the test proxy: the request rate is too high",
        });
        let headers = [(header::CONTENT_TYPE, "application/x-amz-json-1.0")];
        return (StatusCode::BAD_REQUEST, headers, body.to_string()).into_response();
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate. (injected by the test proxy)</Message></Error>";
    (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
