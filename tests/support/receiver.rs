//! An HTTP receiver on a loopback port that stands in for a SIEM and an alert webhook: it
//! keeps every request it accepts, can be stopped and started again on the same port, and
//! can hold requests without answering.
//!
//! It runs on the test's runtime, so a test that blocks its thread (such as waiting for the
//! gateway to exit) needs the multi-threaded runtime to keep the receiver answering.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::task::JoinHandle;

/// One request the receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Received>>,
    hang: Mutex<bool>,
    held: Mutex<usize>,
}

/// The receiver. Every response carries `Connection: close`, so a stopped receiver has no
/// kept-alive connection left that a client could still reach it through.
pub struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts the receiver on a free 127.0.0.1 port.
    pub async fn start() -> Result<Self> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("failed to bind the receiver's port")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let server = Some(serve(listener, Arc::clone(&shared)));
        Ok(Self { port, shared, server })
    }

    /// Returns `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Stops listening: connections are refused until [`Receiver::restart`].
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => {
                    self.server = Some(serve(listener, Arc::clone(&self.shared)));
                    return Ok(());
                }
                Err(error) if Instant::now() < deadline => {
                    eprintln!("receiver port {} not free yet ({error}); retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => bail!("failed to listen on port {} again: {error}", self.port),
            }
        }
    }

    /// Makes the receiver hold every new request without answering (`true`), or answer
    /// again (`false`).
    pub fn set_hang(&self, hang: bool) {
        *lock(&self.shared.hang) = hang;
    }

    /// Returns how many requests are being held without an answer.
    pub fn held(&self) -> usize {
        *lock(&self.shared.held)
    }

    /// Returns the accepted requests to `path`.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        lock(&self.shared.requests).iter().filter(|request| request.path == path).cloned().collect()
    }

    /// Returns every JSON line of every accepted request to `path`, in arrival order.
    pub fn json_lines(&self, path: &str) -> Result<Vec<Value>> {
        let mut lines = Vec::new();
        for request in self.requests(path) {
            let text = std::str::from_utf8(&request.body).context("a request body is not UTF-8")?;
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                lines.push(serde_json::from_str(line).with_context(|| format!("not a JSON line: {line}"))?);
            }
        }
        Ok(lines)
    }

    /// Waits up to `timeout` for `done` to hold on the JSON lines of `path`.
    pub async fn wait_for_lines(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.json_lines(path)?;
            if done(&lines) {
                return Ok(lines);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the receiver's {path} did not get what was expected within {timeout:?}; it has {} lines",
                    lines.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let router = Router::new().fallback(accept).with_state(shared);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            eprintln!("receiver stopped: {error}");
        }
    })
}

async fn accept(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if *lock(&shared.hang) {
        *lock(&shared.held) += 1;
        std::future::pending::<()>().await;
    }
    lock(&shared.requests).push(Received { path: uri.path().to_owned(), headers, body });
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
