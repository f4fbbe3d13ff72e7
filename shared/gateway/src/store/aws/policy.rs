//! Policy versions as the versions of one object in a versioned S3 bucket.

use std::collections::HashMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{StreamExt, TryStreamExt, stream};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{Failure, Resource};
use crate::store::{PolicyVersion, StoreError};

/// Metadata key of the author, base64url of its UTF-8 bytes.
const AUTHOR: &str = "author";
/// Metadata key of the comment, base64url of its UTF-8 bytes. Absent without a comment.
const COMMENT: &str = "comment";
/// Metadata key of the save time, RFC 3339.
const SAVED_AT: &str = "saved-at";

/// Author reported for a version written without the gateway's metadata, such as an upload
/// through the S3 console.
const UNKNOWN_AUTHOR: &str = "unknown";

/// Maximum size of user metadata on an S3 object: keys and values in UTF-8.
const MAX_METADATA_BYTES: usize = 2048;

/// Maximum length of a version id that is sent to S3. S3 documents its version ids as
/// URL-ready strings of at most 1,024 bytes, so a longer one cannot exist.
const MAX_VERSION_ID_BYTES: usize = 1024;

/// Number of versions whose metadata is read at the same time, one request each.
const CONCURRENT_HEADS: usize = 8;

/// The policy object: a bucket and the key of the object in it.
#[derive(Clone, Copy)]
pub(super) struct PolicyObject<'a> {
    pub(super) client: &'a Client,
    pub(super) bucket: &'a str,
    pub(super) key: &'a str,
}

/// The newest version of the object, as `HeadObject` returns it.
struct Head {
    version: String,
    e_tag: String,
}

impl PolicyObject<'_> {
    fn resource(&self) -> Resource<'_> {
        Resource::Bucket(self.bucket)
    }

    /// Returns the newest version, or `None` when the object does not exist.
    pub(super) async fn current(&self) -> Result<Option<PolicyVersion>, StoreError> {
        let result = self.client.get_object().bucket(self.bucket).key(self.key).send().await;
        let output = match result {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(|error| error.is_no_such_key()) => return Ok(None),
            Err(error) => {
                return Err(Failure::new(&error)
                    .unavailable(&format!("read the current policy `{}`", self.key), self.resource()));
            }
        };

        let version = self.required_version_id(output.version_id())?;
        let parts =
            VersionParts { version, metadata: output.metadata, last_modified: output.last_modified, size: None };
        let body = self.read_body(output.body, &parts.version).await?;
        parts.decode(body).map(Some)
    }

    /// Returns the version with id `version`. Any id that S3 cannot find, or rejects as
    /// malformed, is [`StoreError::NotFound`]. The id is sent only as the `versionId`
    /// query parameter, which the SDK percent-encodes, so it never names another object.
    pub(super) async fn version(&self, version: &str) -> Result<PolicyVersion, StoreError> {
        if !is_plausible_version_id(version) {
            return Err(version_not_found(version));
        }

        let result = self.client.get_object().bucket(self.bucket).key(self.key).version_id(version).send().await;
        let output = match result {
            Ok(output) => output,
            Err(error) => return Err(self.version_failure(&Failure::new(&error), version)),
        };

        let parts = VersionParts {
            version: version.to_owned(),
            metadata: output.metadata,
            last_modified: output.last_modified,
            size: None,
        };
        let body = self.read_body(output.body, version).await?;
        parts.decode(body)
    }

    /// Lists every version, newest first as S3 lists them, without YAML. Reads the metadata
    /// of each version with one `HeadObject` request.
    pub(super) async fn versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let ids = self.list_version_ids().await?;
        let versions: Vec<Option<PolicyVersion>> = stream::iter(ids)
            .map(|version| self.head_version(version))
            .buffered(CONCURRENT_HEADS)
            .try_collect()
            .await?;
        Ok(versions.into_iter().flatten().collect())
    }

    /// Saves `yaml` as a new version if the newest is still `base`.
    ///
    /// The first version is written with `If-None-Match: *`, a later one with `If-Match` and
    /// the ETag of the newest version, which `HeadObject` has just confirmed to be `base`.
    /// S3 then rejects the write when another save got in between.
    ///
    /// NOTE: an ETag is the MD5 of the content, so `If-Match` compares content, not version
    /// ids. A save that races with two others which restore the base's exact YAML in between
    /// succeeds. It still replaces only the content that its author saw.
    pub(super) async fn save(
        &self,
        yaml: &str,
        base: Option<&str>,
        author: &str,
        comment: Option<&str>,
    ) -> Result<PolicyVersion, StoreError> {
        let saved_at = OffsetDateTime::now_utc();
        let metadata = encode_metadata(author, comment, saved_at)?;
        let current = self.head_current().await?;
        check_base(current.as_ref().map(|head| head.version.as_str()), base)?;

        let request = self
            .client
            .put_object()
            .bucket(self.bucket)
            .key(self.key)
            .content_type("application/yaml")
            .set_metadata(Some(metadata))
            .body(ByteStream::from(yaml.as_bytes().to_vec()));
        let request = match &current {
            None => request.if_none_match("*"),
            Some(head) => request.if_match(&head.e_tag),
        };

        let output = match request.send().await {
            Ok(output) => output,
            Err(error) => return Err(self.save_failure(Failure::new(&error), base).await),
        };
        let version = self.required_version_id(output.version_id())?;
        Ok(PolicyVersion {
            version,
            saved_at,
            author: author.to_owned(),
            comment: comment.map(str::to_owned),
            yaml: yaml.to_owned(),
            size: yaml.len() as u64,
        })
    }

    /// Maps a failed conditional write to a conflict that names the version now current.
    async fn save_failure(&self, failure: Failure, base: Option<&str>) -> StoreError {
        let lost_race =
            failure.has_status(&[409, 412]) || failure.has_code(&["PreconditionFailed", "ConditionalRequestConflict"]);
        if !lost_race {
            return failure.unavailable(&format!("save the policy `{}`", self.key), self.resource());
        }

        let current = match self.head_current().await {
            Ok(current) => current,
            Err(error) => return error,
        };
        match check_base(current.as_ref().map(|head| head.version.as_str()), base) {
            Err(conflict) => conflict,
            Ok(()) => StoreError::Conflict(format!(
                "another save of the policy `{}` was in progress; reload the policy and apply the change again",
                self.key
            )),
        }
    }

    /// Returns the version id and ETag of the newest version, or `None` when the object
    /// does not exist.
    async fn head_current(&self) -> Result<Option<Head>, StoreError> {
        let result = self.client.head_object().bucket(self.bucket).key(self.key).send().await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let failure = Failure::new(&error);
                if failure.has_status(&[404]) && !failure.is_missing_resource() {
                    return Ok(None);
                }
                return Err(failure
                    .unavailable(&format!("read the current version of the policy `{}`", self.key), self.resource()));
            }
        };

        let version = self.required_version_id(output.version_id())?;
        let e_tag = output.e_tag().ok_or_else(|| {
            StoreError::Corrupt(format!("policy version `{version}` in {} has no ETag", self.resource()))
        })?;
        Ok(Some(Head { version, e_tag: e_tag.to_owned() }))
    }

    /// Returns the metadata of one version, or `None` when it was deleted after the listing.
    async fn head_version(&self, version: String) -> Result<Option<PolicyVersion>, StoreError> {
        let result = self.client.head_object().bucket(self.bucket).key(self.key).version_id(&version).send().await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                return match self.version_failure(&Failure::new(&error), &version) {
                    StoreError::NotFound(_) => Ok(None),
                    other => Err(other),
                };
            }
        };

        let size = output.content_length.and_then(|length| u64::try_from(length).ok());
        let parts = VersionParts { version, metadata: output.metadata, last_modified: output.last_modified, size };
        parts.decode(String::new()).map(Some)
    }

    /// Lists the version ids of the object, newest first, following S3's two pagination markers.
    async fn list_version_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);

        loop {
            let result = self
                .client
                .list_object_versions()
                .bucket(self.bucket)
                .prefix(self.key)
                .set_key_marker(markers.0.take())
                .set_version_id_marker(markers.1.take())
                .send()
                .await;
            let page = result.map_err(|error| {
                Failure::new(&error)
                    .unavailable(&format!("list the versions of the policy `{}`", self.key), self.resource())
            })?;

            // The prefix also matches longer keys, such as `policies.yaml.bak`.
            let own = page.versions().iter().filter(|version| version.key() == Some(self.key));
            ids.extend(own.filter_map(|version| version.version_id()).map(str::to_owned));

            if page.is_truncated() != Some(true) {
                return Ok(ids);
            }
            markers = (page.next_key_marker().map(str::to_owned), page.next_version_id_marker().map(str::to_owned));
            if markers.0.is_none() && markers.1.is_none() {
                return Ok(ids);
            }
        }
    }

    /// Maps a failed read of one version: unknown, malformed and deleted versions are not found.
    fn version_failure(&self, failure: &Failure, version: &str) -> StoreError {
        let not_found = failure.has_code(&["NoSuchVersion", "NoSuchKey", "InvalidArgument", "NotFound"])
            || (failure.has_status(&[400, 404, 405]) && !failure.is_missing_resource());
        if not_found {
            return version_not_found(version);
        }
        StoreError::Unavailable(format!(
            "failed to read policy version `{version}` in {}: {}",
            self.resource(),
            failure.detail()
        ))
    }

    async fn read_body(&self, body: ByteStream, version: &str) -> Result<String, StoreError> {
        let bytes = body.collect().await.map_err(|error| {
            StoreError::Unavailable(format!(
                "failed to read policy version `{version}` from {}: {error}",
                self.resource()
            ))
        })?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            StoreError::Corrupt(format!("policy version `{version}` in {} is not UTF-8 text", self.resource()))
        })
    }

    fn required_version_id(&self, version: Option<&str>) -> Result<String, StoreError> {
        match version {
            Some(version) if version != "null" => Ok(version.to_owned()),
            _ => Err(StoreError::Unavailable(format!(
                "the policy object `{}` in {} has no version id; enable versioning with `mcpsec aws-init`",
                self.key,
                self.resource()
            ))),
        }
    }
}

/// The response fields of one version, before decoding.
struct VersionParts {
    version: String,
    metadata: Option<HashMap<String, String>>,
    last_modified: Option<DateTime>,
    /// The object's length from a HEAD request; `None` when the body is read instead.
    size: Option<u64>,
}

impl VersionParts {
    /// Decodes the metadata. A version without the gateway's metadata gets the author
    /// [`UNKNOWN_AUTHOR`] and its `Last-Modified` time.
    fn decode(self, yaml: String) -> Result<PolicyVersion, StoreError> {
        let version = self.version;
        let field = |key: &str| self.metadata.as_ref().and_then(|metadata| metadata.get(key));

        let author = field(AUTHOR)
            .map(|text| decode_text(&version, AUTHOR, text))
            .transpose()?
            .unwrap_or_else(|| UNKNOWN_AUTHOR.to_owned());
        let comment = field(COMMENT).map(|text| decode_text(&version, COMMENT, text)).transpose()?;
        let saved_at = match field(SAVED_AT) {
            Some(text) => parse_saved_at(&version, text)?,
            None => last_modified(&version, self.last_modified.as_ref())?,
        };
        let size = self.size.unwrap_or(yaml.len() as u64);
        Ok(PolicyVersion { version, saved_at, author, comment, yaml, size })
    }
}

/// Encodes the metadata of a new version. Fails when S3 would reject its size.
fn encode_metadata(
    author: &str,
    comment: Option<&str>,
    saved_at: OffsetDateTime,
) -> Result<HashMap<String, String>, StoreError> {
    let saved_at = saved_at.format(&Rfc3339).map_err(|error| {
        StoreError::Unavailable(format!("save time {saved_at} cannot be written as RFC 3339: {error}"))
    })?;
    let mut metadata =
        HashMap::from([(AUTHOR.to_owned(), URL_SAFE_NO_PAD.encode(author)), (SAVED_AT.to_owned(), saved_at)]);
    if let Some(comment) = comment {
        metadata.insert(COMMENT.to_owned(), URL_SAFE_NO_PAD.encode(comment));
    }

    let size: usize = metadata.iter().map(|(key, value)| key.len() + value.len()).sum();
    if size > MAX_METADATA_BYTES {
        // NOTE: the SQLite store has no such limit; about 1,400 bytes of author and comment fit.
        return Err(StoreError::Unavailable(format!(
            "the author and comment of the policy version take {size} bytes of S3 object metadata, over the maximum of {MAX_METADATA_BYTES}; shorten the comment"
        )));
    }
    Ok(metadata)
}

fn decode_text(version: &str, key: &str, text: &str) -> Result<String, StoreError> {
    let corrupt = || {
        StoreError::Corrupt(format!("metadata `{key}` of policy version `{version}` is not base64url of UTF-8 text"))
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| corrupt())?;
    String::from_utf8(bytes).map_err(|_| corrupt())
}

fn parse_saved_at(version: &str, text: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|error| {
        StoreError::Corrupt(format!(
            "metadata `{SAVED_AT}` `{text}` of policy version `{version}` is not RFC 3339: {error}"
        ))
    })
}

fn last_modified(version: &str, time: Option<&DateTime>) -> Result<OffsetDateTime, StoreError> {
    let corrupt = || {
        StoreError::Corrupt(format!(
            "policy version `{version}` has neither metadata `{SAVED_AT}` nor a valid Last-Modified time"
        ))
    };
    let time = time.ok_or_else(corrupt)?;
    let nanos = i128::from(time.secs()) * 1_000_000_000 + i128::from(time.subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| corrupt())
}

/// Returns whether S3 could have issued `version`: non-empty, not too long and printable
/// ASCII. Other ids are rejected before any request, so an empty one never reaches S3 as a
/// request for no particular version.
fn is_plausible_version_id(version: &str) -> bool {
    !version.is_empty() && version.len() <= MAX_VERSION_ID_BYTES && version.bytes().all(|byte| byte.is_ascii_graphic())
}

fn version_not_found(version: &str) -> StoreError {
    let prefix: String = version.chars().take(64).collect();
    let ellipsis = if prefix.len() < version.len() { "…" } else { "" };
    StoreError::NotFound(format!("policy version `{prefix}{ellipsis}`; list the versions to find a valid id"))
}

/// Checks the caller's base version against the newest stored one.
fn check_base(current: Option<&str>, base: Option<&str>) -> Result<(), StoreError> {
    match (current, base) {
        (None, None) => Ok(()),
        (Some(current), Some(base)) if current == base => Ok(()),
        (Some(current), Some(base)) => Err(StoreError::Conflict(format!(
            "base version `{base}` is no longer the current policy version `{current}`; reload the policy and apply the change again"
        ))),
        (Some(current), None) => Err(StoreError::Conflict(format!(
            "the policy already has version `{current}`; pass it as the base version"
        ))),
        (None, Some(base)) => Err(StoreError::Conflict(format!(
            "base version `{base}` does not exist because no policy version was saved yet; save without a base version"
        ))),
    }
}
