//! `admin`: the Lambda function behind the admin routes, which require `X-Admin-Key`, on the
//! AWS stores.

use mcpsec_gateway::{http, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::init_tracing();
    let state = lambda::http_state_from_env().await?;
    lambda::run_http(http::admin_routes().with_state(state)).await
}
