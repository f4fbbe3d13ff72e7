//! `stream`: the Lambda function on the DynamoDB stream of the sessions table, which hands
//! each new audit event to the SIEM sink.

use mcpsec_gateway::lambda::{self, stream};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::init_tracing();
    stream::run(stream::LogSink).await
}
