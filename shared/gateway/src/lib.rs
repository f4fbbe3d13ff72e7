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

pub mod anomaly;
pub mod audit;
pub mod cli;
pub mod cli_aws;
pub mod config;
pub mod dash;
pub mod demo;
pub mod http;
pub mod lambda;
pub mod metrics;
pub mod pipeline;
pub mod serve;
pub mod sessions;
pub mod siem;
pub mod state;
pub mod store;
pub mod toolcall;
pub mod upstream;
