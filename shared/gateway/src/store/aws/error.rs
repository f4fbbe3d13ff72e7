//! Classification of AWS SDK errors, and their mapping to [`StoreError`].

use std::error::Error;
use std::fmt;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::store::StoreError;

/// A table or bucket that an operation used, for error messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resource<'a> {
    /// A DynamoDB table.
    Table(&'a str),
    /// An S3 bucket.
    Bucket(&'a str),
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Table(name) => write!(formatter, "table `{name}`"),
            Self::Bucket(name) => write!(formatter, "bucket `{name}`"),
        }
    }
}

/// The parts of a failed SDK call that decide how the store reports it.
#[derive(Debug)]
pub(super) struct Failure {
    /// The AWS error code, such as `ThrottlingException` or `NoSuchKey`.
    code: Option<String>,
    /// The HTTP status, when a response arrived.
    status: Option<u16>,
    /// The error and its sources on one line. AWS error messages name resources and
    /// request ids, never credentials.
    detail: String,
}

impl Failure {
    /// Captures `error`.
    pub(super) fn new<E>(error: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + Error + 'static,
    {
        Self {
            code: error.code().map(str::to_owned),
            status: error.raw_response().map(|response| response.status().as_u16()),
            detail: error_chain(error),
        }
    }

    /// Returns whether the AWS error code is one of `codes`.
    pub(super) fn has_code(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|code| codes.contains(&code))
    }

    /// Returns whether the HTTP status is one of `statuses`.
    pub(super) fn has_status(&self, statuses: &[u16]) -> bool {
        self.status.is_some_and(|status| statuses.contains(&status))
    }

    /// Returns whether the table or bucket does not exist.
    pub(super) fn is_missing_resource(&self) -> bool {
        self.has_code(&["ResourceNotFoundException", "NoSuchBucket"])
    }

    /// Converts the failure of `operation` on `resource` to [`StoreError::Unavailable`].
    ///
    /// A missing table or bucket gets a message that names the command that creates it. Throttling,
    /// server errors, timeouts and network failures keep the SDK's description.
    pub(super) fn unavailable(self, operation: &str, resource: Resource<'_>) -> StoreError {
        if self.is_missing_resource() {
            return StoreError::Unavailable(format!(
                "{resource} not found while trying to {operation}; create it with `mcpsec aws-init` or deploy the SAM template"
            ));
        }
        StoreError::Unavailable(format!("failed to {operation} in {resource}: {}", self.detail))
    }

    /// Returns the error and its sources on one line.
    pub(super) fn detail(&self) -> &str {
        &self.detail
    }
}

/// Returns a closure that maps an SDK error of `operation` on `resource` to
/// [`StoreError::Unavailable`], for `map_err`.
pub(super) fn unavailable<'a, E>(
    operation: &'a str,
    resource: Resource<'a>,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> StoreError + 'a
where
    E: ProvideErrorMetadata + Error + 'static,
{
    move |error| Failure::new(&error).unavailable(operation, resource)
}

/// Formats `error` and each of its sources, joined with `: `. A source whose text already ends
/// the line is left out, because SDK service errors display their source's message again.
pub(super) fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let next_text = next.to_string();
        if !text.ends_with(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        source = next.source();
    }
    text
}
