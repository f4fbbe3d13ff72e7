//! `stream`: the Lambda function on the DynamoDB stream of the sessions table, which
//! forwards each audit event to the SIEM, counts it in the anomaly detectors and posts
//! anomalies to the alert webhook.

use mcpsec_gateway::lambda::{self, stream};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::init_tracing();
    let pipeline = stream::pipeline_from_env().await?;
    stream::run(pipeline).await
}
