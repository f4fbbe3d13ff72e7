//! The gateway around the decision core: HTTP handlers, stores, the upstream MCP client, audit
//! events and the command line that the binaries in `functions/` start.
//!
//! * [`http`]: the axum routers every deployment mounts.
//! * [`toolcall`]: the path of one tool call, shared by the REST and MCP routes.
//! * [`store`]: storage traits and the embedded SQLite backend.
//! * [`upstream`]: the client for the MCP servers behind the gateway.
//! * [`lambda`]: the AWS Lambda functions' state, HTTP adapter and stream handler.
//! * [`demo`]: a demo MCP tool server for trying the gateway out.
//! * [`cli`] and [`serve`]: the `mcpsec` command line.
//!
//! # Features
//!
//! Two features, both on by default, select the code of each deployment. A binary that needs
//! one of them turns the default off, so that it does not compile the other's dependencies.
//!
//! * `container`: the one-process deployment, which is the embedded SQLite store
//!   ([`store::sqlite`]) and its outbox ([`pipeline::outbox`]), the command line ([`cli`],
//!   [`serve`]) and the [`demo`] tool server. The `mcpsec` binary turns it on.
//! * `lambda`: the [`lambda`] module, which adapts the routers to API Gateway events and
//!   handles DynamoDB stream batches. The four Lambda functions turn it on.

pub mod anomaly;
pub mod audit;
#[cfg(feature = "container")]
pub mod cli;
pub mod cli_aws;
pub mod config;
pub mod dash;
#[cfg(feature = "container")]
pub mod demo;
pub mod http;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod pipeline;
#[cfg(feature = "container")]
pub mod serve;
pub mod sessions;
pub mod siem;
pub mod state;
pub mod store;
pub mod toolcall;
pub mod upstream;
