//! The counter store on DynamoDB, shared by every Lambda invocation and stream shard.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use futures::{StreamExt, TryStreamExt};

use super::counters::{CounterState, CounterStore, CounterUpdate, CounterValue, KeyUpdate, merge_updates};
use crate::store::StoreError;

/// Partition key of the counters table: the counter's key.
pub const PK: &str = "pk";
/// Expiry of a counter in Unix seconds, the table's time-to-live attribute.
pub const TTL: &str = "ttl";
/// Prefix of a bucket attribute: `b<bucket index>`.
const BUCKET_PREFIX: &str = "b";

/// Maximum bucket attributes named in one `UpdateItem`, which keeps each expression far
/// below DynamoDB's limit of 4 KB.
const MAX_BUCKETS_PER_REQUEST: usize = 100;
/// Maximum counters updated at the same time by one call.
const MAX_CONCURRENT_UPDATES: usize = 16;

/// Counters in a DynamoDB table: one item per counter, one attribute per bucket.
///
/// An item has the partition key `pk` (S, the counter's key), `ttl` (N, Unix seconds) and
/// one attribute `b<bucket>` per bucket: a number (N) for a count, a string set (SS) for
/// members. Each call sends one `UpdateItem` per key that adds every bucket of the call and
/// returns the new item. When the item contains buckets older than the oldest one needed, a
/// second `UpdateItem` removes them.
#[derive(Debug, Clone)]
pub struct DynamoCounters {
    /// The DynamoDB client, built once.
    pub client: aws_sdk_dynamodb::Client,
    /// The counters table, created by [`super::ensure_counters_table`].
    pub table: String,
}

impl DynamoCounters {
    /// Returns the store on `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn apply_key(&self, update: KeyUpdate) -> Result<CounterState, StoreError> {
        let buckets: Vec<(i64, CounterValue)> = update.buckets.into_iter().collect();
        let mut item = HashMap::new();
        // At least one request, so that a key without values still returns its buckets.
        for chunk in chunks(&buckets) {
            item = self.add(&update.key, chunk, update.expires_at).await?;
        }

        let (state, stale) = read_item(&self.table, &update.key, &item, update.oldest_bucket)?;
        for chunk in stale.chunks(MAX_BUCKETS_PER_REQUEST) {
            self.remove(&update.key, chunk).await?;
        }
        Ok(state)
    }

    /// Adds `buckets` to the item of `key`, sets its `ttl`, and returns the new item.
    async fn add(
        &self,
        key: &str,
        buckets: &[(i64, CounterValue)],
        expires_at: i64,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.to_owned()))
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":ttl", AttributeValue::N(expires_at.to_string()))
            .return_values(ReturnValue::AllNew);

        let mut additions = Vec::new();
        for (index, (bucket, value)) in buckets.iter().enumerate() {
            let Some(value) = attribute_value(value) else { continue };
            let (name, placeholder) = (format!("#b{index}"), format!(":b{index}"));
            request = request
                .expression_attribute_names(&name, bucket_attribute(*bucket))
                .expression_attribute_values(&placeholder, value);
            additions.push(format!("{name} {placeholder}"));
        }

        let mut expression = "SET #ttl = :ttl".to_owned();
        if !additions.is_empty() {
            expression.push_str(" ADD ");
            expression.push_str(&additions.join(", "));
        }
        let output = request
            .update_expression(expression)
            .send()
            .await
            .map_err(|error| self.unavailable("update counter", key, &error))?;
        Ok(output.attributes.unwrap_or_default())
    }

    /// Removes the bucket attributes `names` from the item of `key`, unless the item is gone.
    async fn remove(&self, key: &str, names: &[String]) -> Result<(), StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.to_owned()))
            .expression_attribute_names("#pk", PK)
            // Without the condition, an item that expired in between would come back with
            // only its key and no `ttl`, and never expire again.
            .condition_expression("attribute_exists(#pk)");
        let mut placeholders = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let placeholder = format!("#r{index}");
            request = request.expression_attribute_names(&placeholder, name);
            placeholders.push(placeholder);
        }

        let result = request.update_expression(format!("REMOVE {}", placeholders.join(", "))).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(error) => Err(self.unavailable("remove old buckets of counter", key, &error)),
        }
    }

    /// Maps a failed request of `operation` on counter `key` to [`StoreError::Unavailable`].
    fn unavailable<E>(&self, operation: &str, key: &str, error: &SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + Error + 'static,
    {
        let table = &self.table;
        if error.code() == Some("ResourceNotFoundException") {
            return StoreError::Unavailable(format!(
                "table `{table}` not found while trying to {operation} `{key}`; create it with `mcpsec aws-init`"
            ));
        }
        StoreError::Unavailable(format!(
            "failed to {operation} `{key}` in table `{table}`: {}",
            DisplayErrorContext(error)
        ))
    }
}

#[async_trait]
impl CounterStore for DynamoCounters {
    async fn apply(&self, updates: Vec<CounterUpdate>) -> Result<Vec<CounterState>, StoreError> {
        let merged = merge_updates(updates)?;
        futures::stream::iter(merged)
            .map(|update| self.apply_key(update))
            .buffered(MAX_CONCURRENT_UPDATES)
            .try_collect()
            .await
    }
}

/// Splits `buckets` into requests, returning one empty chunk when there are none.
fn chunks(buckets: &[(i64, CounterValue)]) -> Vec<&[(i64, CounterValue)]> {
    if buckets.is_empty() {
        return vec![buckets];
    }
    buckets.chunks(MAX_BUCKETS_PER_REQUEST).collect()
}

/// Returns the value to `ADD`, or `None` for an empty set, which DynamoDB rejects.
fn attribute_value(value: &CounterValue) -> Option<AttributeValue> {
    match value {
        CounterValue::Count(count) => Some(AttributeValue::N(count.to_string())),
        CounterValue::Members(members) if members.is_empty() => None,
        CounterValue::Members(members) => Some(AttributeValue::Ss(members.iter().cloned().collect())),
    }
}

fn bucket_attribute(bucket: i64) -> String {
    format!("{BUCKET_PREFIX}{bucket}")
}

/// Returns the bucket index of a bucket attribute, or `None` for another attribute.
fn parse_bucket_attribute(name: &str) -> Option<i64> {
    name.strip_prefix(BUCKET_PREFIX)?.parse().ok()
}

/// Reads the buckets of an item: the state from `oldest_bucket` on, and the names of the
/// older bucket attributes.
fn read_item(
    table: &str,
    key: &str,
    item: &HashMap<String, AttributeValue>,
    oldest_bucket: i64,
) -> Result<(CounterState, Vec<String>), StoreError> {
    let mut buckets = BTreeMap::new();
    let mut stale = Vec::new();
    for (name, value) in item {
        let Some(bucket) = parse_bucket_attribute(name) else { continue };
        if bucket < oldest_bucket {
            stale.push(name.clone());
            continue;
        }
        buckets.insert(bucket, read_value(value).ok_or_else(|| corrupt(table, key, name))?);
    }
    stale.sort();
    Ok((CounterState { key: key.to_owned(), buckets }, stale))
}

fn read_value(value: &AttributeValue) -> Option<CounterValue> {
    match value {
        AttributeValue::N(number) => number.parse().ok().map(CounterValue::Count),
        AttributeValue::Ss(members) => Some(CounterValue::Members(members.iter().cloned().collect())),
        _ => None,
    }
}

fn corrupt(table: &str, key: &str, name: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "attribute `{name}` of counter `{key}` in table `{table}` is neither a whole number nor a string set"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_attribute_round_trips() {
        assert_eq!(bucket_attribute(-3), "b-3");
        assert_eq!(parse_bucket_attribute("b-3"), Some(-3));
        assert_eq!(parse_bucket_attribute("b170000"), Some(170_000));
        assert_eq!(parse_bucket_attribute("pk"), None);
        assert_eq!(parse_bucket_attribute("bx"), None);
    }

    #[test]
    fn chunks_of_nothing_is_one_empty_request() {
        assert_eq!(chunks(&[]).len(), 1);
        let many: Vec<(i64, CounterValue)> = (0..250).map(|bucket| (bucket, CounterValue::Count(1))).collect();
        assert_eq!(chunks(&many).len(), 3);
    }
}
