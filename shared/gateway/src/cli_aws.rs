//! The `mcpsec aws-init` command and the AWS SDK configuration that the AWS deployment reads
//! from its environment.
//!
//! Both live in [`crate::store::aws::setup`] beside the table layout they depend on; this
//! module is the command line's entry point to them.

pub use crate::store::aws::setup::{aws_init, load_sdk_config};
pub use crate::store::aws::{AwsNames, DEFAULT_POLICY_KEY};
