//! Creation of the tables and the bucket (`mcpsec aws-init`), and the SDK configuration.
//!
//! [`aws_init`] is idempotent. It creates what is missing and completes what exists: a
//! sessions table without its stream, index or time to live gets them, and the bucket gets
//! versioning, default encryption and a public access block on every run.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableDescription, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    VersioningConfiguration,
};

use super::error::error_chain;
use super::layout::{ALERT_DAY, ALERTS_INDEX, BY_DAY_INDEX, DAY, MODEL_ID, PK, SESSION_ID, SK, TIME_NS, TTL};
use super::{AwsNames, s3_client};

/// Maximum time to wait for a table to become active after a change.
const TABLE_WAIT: Duration = Duration::from_secs(600);

/// Time limit of connecting to DynamoDB or S3: the SDK's default (aws-smithy-runtime 1.10), kept
/// because a timeout configuration replaces the defaults.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Time limit of one attempt of a DynamoDB or S3 request. Those services respond in
/// milliseconds, so an attempt this slow has hung and is retried. With 2 s, the request
/// budget test once counted every request of a first call twice on a loaded 2-core machine
/// against the emulator, most likely because slow attempts were retried (inferred from the
/// counts, not traced).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time limit of one DynamoDB or S3 operation, retries included. The SDK sets none by default,
/// so a store that accepts a connection and never responds would hold a tool call forever. Past
/// this limit the call fails closed with 503, well within the template's Lambda timeouts of
/// 30 s and more.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);

/// Loads the SDK configuration from the environment: region, credentials (environment,
/// profile, web identity, container or instance metadata) and `AWS_ENDPOINT_URL`, which
/// points the clients at an emulator. Every request is bounded by [`ATTEMPT_TIMEOUT`] and
/// [`OPERATION_TIMEOUT`].
pub async fn load_sdk_config() -> SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).load().await
}

/// Creates or completes the keys table, the sessions table and the policy bucket named in
/// `names`, and returns one line for each thing that was created, changed or already right.
///
/// Safe to run again. Fails when a table exists with another key schema, or the bucket
/// name belongs to another account.
pub async fn aws_init(sdk_config: &SdkConfig, names: &AwsNames) -> Result<Vec<String>, String> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk_config);
    let s3 = s3_client(sdk_config);
    let mut lines = Vec::new();

    ensure_keys_table(&dynamodb, &names.keys_table, &mut lines).await?;
    ensure_sessions_table(&dynamodb, &names.sessions_table, &mut lines).await?;
    if let Some(counters) = &names.counters_table {
        lines.extend(ensure_counters_table(&dynamodb, counters).await?);
    }
    let region = sdk_config.region().map(ToString::to_string);
    ensure_bucket(&s3, &names.policy_bucket, region.as_deref(), &mut lines).await?;
    Ok(lines)
}

/// Creates the anomaly detectors' counters table unless it exists (partition key `pk`,
/// on-demand capacity), waits until it is active and turns on its time to live on `ttl`.
/// Returns one line for each thing created, changed or already right.
///
/// Safe to run again. Fails when the table exists with another key schema or its time to
/// live is on another attribute.
pub async fn ensure_counters_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PK, ScalarAttributeType::S)?)
        .key_schema(key(PK, KeyType::Hash)?);
    create_table(client, table, request, &mut lines).await?;

    let description = describe_table(client, table).await?;
    check_key_schema(&description, table, &[(PK, KeyType::Hash)])?;
    ensure_ttl(client, table, &mut lines).await?;
    Ok(lines)
}

async fn ensure_keys_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    let request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(MODEL_ID, ScalarAttributeType::S)?)
        .key_schema(key(MODEL_ID, KeyType::Hash)?);
    create_table(client, table, request, lines).await?;

    let description = describe_table(client, table).await?;
    check_key_schema(&description, table, &[(MODEL_ID, KeyType::Hash)])
}

async fn ensure_sessions_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    let request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(session_attributes()?))
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(by_day_index()?)
        .global_secondary_indexes(alerts_index()?)
        .stream_specification(new_image_stream()?);
    create_table(client, table, request, lines).await?;

    let description = describe_table(client, table).await?;
    check_key_schema(&description, table, &[(PK, KeyType::Hash), (SK, KeyType::Range)])?;
    ensure_stream(client, table, &description, lines).await?;
    ensure_index(client, table, &description, by_day_index()?, lines).await?;
    let description = describe_table(client, table).await?;
    ensure_index(client, table, &description, alerts_index()?, lines).await?;
    ensure_ttl(client, table, lines).await
}

/// Sends `request` and waits until the table is active. A table that already exists is
/// left as it is.
async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    request: CreateTableFluentBuilder,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    match request.send().await {
        Ok(_) => lines.push(format!("created table `{table}` with on-demand capacity")),
        Err(error) if error.code() == Some("ResourceInUseException") => {
            lines.push(format!("table `{table}` already exists"))
        }
        Err(error) => return Err(format!("failed to create table `{table}`: {}", error_chain(&error))),
    }
    wait_until_active(client, table).await
}

async fn wait_until_active(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), String> {
    client.wait_until_table_exists().table_name(table).wait(TABLE_WAIT).await.map_err(|error| {
        format!("table `{table}` did not become active within {} s: {}", TABLE_WAIT.as_secs(), error_chain(&error))
    })?;
    Ok(())
}

async fn describe_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<TableDescription, String> {
    let output = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|error| format!("failed to describe table `{table}`: {}", error_chain(&error)))?;
    output.table.ok_or_else(|| format!("describing table `{table}` returned no description"))
}

/// Fails when an existing table has another key schema, which no setting can change.
fn check_key_schema(description: &TableDescription, table: &str, expected: &[(&str, KeyType)]) -> Result<(), String> {
    let actual: Vec<(&str, &KeyType)> =
        description.key_schema().iter().map(|element| (element.attribute_name(), element.key_type())).collect();
    let wanted: Vec<(&str, &KeyType)> = expected.iter().map(|(name, key_type)| (*name, key_type)).collect();
    if actual == wanted {
        return Ok(());
    }
    Err(format!(
        "table `{table}` exists with key schema {actual:?} instead of {wanted:?}; delete it or choose another table name"
    ))
}

/// Turns on the stream of new images, unless a stream that carries them is already on.
async fn ensure_stream(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    description: &TableDescription,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    let current = description.stream_specification().filter(|stream| stream.stream_enabled());
    match current.and_then(StreamSpecification::stream_view_type) {
        Some(StreamViewType::NewImage | StreamViewType::NewAndOldImages) => {
            lines.push(format!("table `{table}` already streams new images"));
            return Ok(());
        }
        Some(other) => {
            return Err(format!(
                "table `{table}` has a stream of `{other}`, without new images; disable the stream and run `mcpsec aws-init` again"
            ));
        }
        None => {}
    }

    client
        .update_table()
        .table_name(table)
        .stream_specification(new_image_stream()?)
        .send()
        .await
        .map_err(|error| format!("failed to turn on the stream of table `{table}`: {}", error_chain(&error)))?;
    lines.push(format!("turned on the stream of new images of table `{table}`"));
    wait_until_active(client, table).await
}

/// Adds the index by day to a table that lacks it.
async fn ensure_index(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    description: &TableDescription,
    index: GlobalSecondaryIndex,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    let name = index.index_name().to_owned();
    let exists = description.global_secondary_indexes().iter().any(|existing| existing.index_name() == Some(&name));
    if exists {
        lines.push(format!("table `{table}` already has index `{name}`"));
        return Ok(());
    }

    let action = CreateGlobalSecondaryIndexAction::builder()
        .index_name(&name)
        .set_key_schema(Some(index.key_schema().to_vec()))
        .set_projection(index.projection().cloned())
        .build()
        .map_err(request_error)?;
    client
        .update_table()
        .table_name(table)
        .set_attribute_definitions(Some(session_attributes()?))
        .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(action).build())
        .send()
        .await
        .map_err(|error| format!("failed to add index `{name}` to table `{table}`: {}", error_chain(&error)))?;
    lines.push(format!(
        "added index `{name}` to table `{table}`; DynamoDB fills it from the existing items in the background"
    ));
    wait_until_active(client, table).await
}

/// Turns on the time to live on `ttl`, unless it is on already.
async fn ensure_ttl(client: &aws_sdk_dynamodb::Client, table: &str, lines: &mut Vec<String>) -> Result<(), String> {
    let output = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|error| format!("failed to read the time to live of table `{table}`: {}", error_chain(&error)))?;
    let current = output.time_to_live_description();
    let status = current.and_then(|description| description.time_to_live_status());
    let attribute = current.and_then(|description| description.attribute_name());

    if matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)) {
        if attribute != Some(TTL) {
            return Err(format!(
                "table `{table}` has its time to live on attribute `{}` instead of `{TTL}`; turn it off and run `mcpsec aws-init` again",
                attribute.unwrap_or("?")
            ));
        }
        lines.push(format!("table `{table}` already has its time to live on `{TTL}`"));
        return Ok(());
    }

    let specification =
        TimeToLiveSpecification::builder().enabled(true).attribute_name(TTL).build().map_err(request_error)?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(specification)
        .send()
        .await
        .map_err(|error| format!("failed to turn on the time to live of table `{table}`: {}", error_chain(&error)))?;
    lines.push(format!("turned on the time to live of table `{table}` on `{TTL}`"));
    Ok(())
}

/// Creates the bucket unless it exists, then sets versioning, default encryption with
/// S3-managed keys and a public access block that blocks everything.
async fn ensure_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    region: Option<&str>,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    if bucket_exists(client, bucket).await? {
        lines.push(format!("bucket `{bucket}` already exists"));
    } else {
        create_bucket(client, bucket, region).await?;
        lines.push(format!("created bucket `{bucket}`"));
    }

    enable_versioning(client, bucket, lines).await?;
    enable_encryption(client, bucket, lines).await?;
    block_public_access(client, bucket, lines).await
}

/// Returns whether the bucket exists and this account may use it. `CreateBucket` cannot tell,
/// because in us-east-1 it succeeds again for a bucket that the caller owns.
async fn bucket_exists(client: &aws_sdk_s3::Client, bucket: &str) -> Result<bool, String> {
    let error = match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(true),
        Err(error) => error,
    };

    match error.raw_response().map(|response| response.status().as_u16()) {
        Some(404) => Ok(false),
        Some(403) => Err(format!(
            "bucket `{bucket}` exists but this account may not use it; choose another bucket name or check the credentials"
        )),
        Some(301) => Err(format!(
            "bucket `{bucket}` exists in another region; set the region of the bucket or choose another bucket name"
        )),
        _ => Err(format!("failed to check whether bucket `{bucket}` exists: {}", error_chain(&error))),
    }
}

async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str, region: Option<&str>) -> Result<(), String> {
    let mut request = client.create_bucket().bucket(bucket);
    // us-east-1 is the default location and rejects being named as a constraint.
    if let Some(region) = region.filter(|region| *region != "us-east-1") {
        let location =
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build();
        request = request.create_bucket_configuration(location);
    }

    match request.send().await {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some("BucketAlreadyExists") => {
            Err(format!("bucket name `{bucket}` belongs to another account; choose another bucket name"))
        }
        Err(error) => Err(format!("failed to create bucket `{bucket}`: {}", error_chain(&error))),
    }
}

async fn enable_versioning(client: &aws_sdk_s3::Client, bucket: &str, lines: &mut Vec<String>) -> Result<(), String> {
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(versioning)
        .send()
        .await
        .map_err(|error| format!("failed to turn on versioning of bucket `{bucket}`: {}", error_chain(&error)))?;
    lines.push(format!("versioning of bucket `{bucket}` is on"));
    Ok(())
}

async fn enable_encryption(client: &aws_sdk_s3::Client, bucket: &str, lines: &mut Vec<String>) -> Result<(), String> {
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(request_error)?;
    let rule = ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(by_default).build();
    let configuration = ServerSideEncryptionConfiguration::builder().rules(rule).build().map_err(request_error)?;
    client
        .put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(configuration)
        .send()
        .await
        .map_err(|error| {
            format!("failed to set the default encryption of bucket `{bucket}`: {}", error_chain(&error))
        })?;
    lines.push(format!("default encryption of bucket `{bucket}` is SSE-S3"));
    Ok(())
}

async fn block_public_access(client: &aws_sdk_s3::Client, bucket: &str, lines: &mut Vec<String>) -> Result<(), String> {
    let block = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(block)
        .send()
        .await
        .map_err(|error| format!("failed to block public access to bucket `{bucket}`: {}", error_chain(&error)))?;
    lines.push(format!("public access to bucket `{bucket}` is blocked"));
    Ok(())
}

/// Returns the definitions of the attributes that the keys of the sessions table and of its
/// index use.
fn session_attributes() -> Result<Vec<AttributeDefinition>, String> {
    Ok(vec![
        attribute(PK, ScalarAttributeType::S)?,
        attribute(SK, ScalarAttributeType::S)?,
        attribute(DAY, ScalarAttributeType::S)?,
        attribute(ALERT_DAY, ScalarAttributeType::S)?,
        attribute(TIME_NS, ScalarAttributeType::N)?,
    ])
}

fn alerts_index() -> Result<GlobalSecondaryIndex, String> {
    GlobalSecondaryIndex::builder()
        .index_name(ALERTS_INDEX)
        .key_schema(key(ALERT_DAY, KeyType::Hash)?)
        .key_schema(key(TIME_NS, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .map_err(request_error)
}

fn by_day_index() -> Result<GlobalSecondaryIndex, String> {
    GlobalSecondaryIndex::builder()
        .index_name(BY_DAY_INDEX)
        .key_schema(key(DAY, KeyType::Hash)?)
        .key_schema(key(TIME_NS, KeyType::Range)?)
        .projection(session_id_projection())
        .build()
        .map_err(request_error)
}

/// Returns the projection of the index: the keys and the session id, all that listing recent
/// sessions reads.
fn session_id_projection() -> Projection {
    Projection::builder().projection_type(ProjectionType::Include).non_key_attributes(SESSION_ID).build()
}

fn new_image_stream() -> Result<StreamSpecification, String> {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewImage)
        .build()
        .map_err(request_error)
}

fn attribute(name: &str, attribute_type: ScalarAttributeType) -> Result<AttributeDefinition, String> {
    AttributeDefinition::builder().attribute_name(name).attribute_type(attribute_type).build().map_err(request_error)
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, String> {
    KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(request_error)
}

/// Reports a request that could not be built, which means a required field is missing in
/// this file.
fn request_error(error: BuildError) -> String {
    format!("failed to build an AWS request: {error}")
}
