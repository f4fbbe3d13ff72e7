//! `toolcall`: the Lambda function behind the routes models call, `POST /mcp/toolcall` and
//! `POST /mcp`, on the AWS stores.

use mcpsec_gateway::{http, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::init_tracing();
    let state = lambda::http_state_from_env().await?;
    lambda::run_http(http::model_routes().with_state(state)).await
}
