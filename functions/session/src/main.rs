//! `session`: the Lambda function behind `GET /api/session/{id}` and `GET /api/sessions`, on
//! the AWS stores.

use mcpsec_gateway::{http, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::init_tracing();
    let state = lambda::http_state_from_env().await?;
    lambda::run_http(http::session_routes().with_state(state)).await
}
