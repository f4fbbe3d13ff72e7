//! The keys table: one item per model, with its credentials as a list of maps.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use mcpsec_policy::keys::KeyHash;
use mcpsec_policy::{Credential, ModelEntry, Scope};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{Resource, unavailable};
use super::layout::{CREDENTIALS, EXPIRES, HASH, KEY_ID, MODEL_ID, QUARANTINED_UNTIL, REVOKED, TOOLS};
use crate::store::StoreError;

/// A DynamoDB item.
type Item = HashMap<String, AttributeValue>;

/// Returns every model, sorted by model id. The scan reads consistently, so a model put
/// just before is included.
pub(super) async fn load_models(client: &Client, table: &str) -> Result<Vec<ModelEntry>, StoreError> {
    let items = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(unavailable("scan models", Resource::Table(table)))?;

    let mut models = items.iter().map(decode_model).collect::<Result<Vec<_>, _>>()?;
    models.sort_by(|left, right| left.model_id.cmp(&right.model_id));
    Ok(models)
}

/// Replaces the item of `entry` with one `PutItem`, so credentials and scope change together.
///
/// Writes the model's tools, revocation and credentials with `UpdateItem`, so the
/// quarantine, which only [`set_quarantine`] and the stream function write, is kept even when
/// it changed after the caller read the model.
pub(super) async fn put_model(client: &Client, table: &str, entry: &ModelEntry) -> Result<(), StoreError> {
    let mut item = encode_model(entry)?;
    let operation = format!("put model `{}`", entry.model_id);
    let value = |item: &mut Item, name: &str| item.remove(name).unwrap_or(AttributeValue::Null(true));

    client
        .update_item()
        .table_name(table)
        .key(MODEL_ID, AttributeValue::S(entry.model_id.clone()))
        .update_expression("SET #tools = :tools, #revoked = :revoked, #credentials = :credentials")
        .expression_attribute_names("#tools", TOOLS)
        .expression_attribute_names("#revoked", REVOKED)
        .expression_attribute_names("#credentials", CREDENTIALS)
        .expression_attribute_values(":tools", value(&mut item, TOOLS))
        .expression_attribute_values(":revoked", value(&mut item, REVOKED))
        .expression_attribute_values(":credentials", value(&mut item, CREDENTIALS))
        .send()
        .await
        .map_err(unavailable(&operation, Resource::Table(table)))?;
    Ok(())
}

/// Returns whether the table contains no model, reading at most one item per page.
pub(super) async fn is_empty(client: &Client, table: &str) -> Result<bool, StoreError> {
    let mut pages = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .projection_expression("#model_id")
        .expression_attribute_names("#model_id", MODEL_ID)
        .into_paginator()
        .page_size(1)
        .send();

    // A page may be empty and still point to more, so read on until an item or the end.
    while let Some(page) = pages.next().await {
        let page = page.map_err(unavailable("scan for any model", Resource::Table(table)))?;
        if !page.items().is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn encode_model(entry: &ModelEntry) -> Result<Item, StoreError> {
    let tools = entry.scope.patterns().iter().cloned().map(AttributeValue::S).collect();
    let credentials = entry
        .credentials
        .iter()
        .map(|credential| encode_credential(&entry.model_id, credential))
        .collect::<Result<_, _>>()?;

    Ok(HashMap::from([
        (MODEL_ID.to_owned(), AttributeValue::S(entry.model_id.clone())),
        (TOOLS.to_owned(), AttributeValue::L(tools)),
        (REVOKED.to_owned(), AttributeValue::Bool(entry.revoked)),
        (CREDENTIALS.to_owned(), AttributeValue::L(credentials)),
    ])
    .into_iter()
    .chain(entry.quarantined_until.map(|until| (QUARANTINED_UNTIL.to_owned(), AttributeValue::S(rfc3339(until)))))
    .collect())
}

/// Formats an instant as RFC 3339; one that RFC 3339 cannot express (a year past 9999)
/// becomes the greatest it can.
fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_else(|_| "9999-12-31T23:59:59Z".to_owned())
}

/// Sets or removes the quarantine attribute of an existing model item.
pub(super) async fn set_quarantine(
    client: &Client,
    table: &str,
    model_id: &str,
    until: Option<OffsetDateTime>,
) -> Result<bool, StoreError> {
    let request = client
        .update_item()
        .table_name(table)
        .key(MODEL_ID, AttributeValue::S(model_id.to_owned()))
        .condition_expression("attribute_exists(#model_id)")
        .expression_attribute_names("#model_id", MODEL_ID)
        .expression_attribute_names("#until", QUARANTINED_UNTIL);
    let request = match until {
        Some(until) => request
            .update_expression("SET #until = :until")
            .expression_attribute_values(":until", AttributeValue::S(rfc3339(until))),
        None => request.update_expression("REMOVE #until"),
    };

    match request.send().await {
        Ok(_) => Ok(true),
        Err(error) if error.as_service_error().is_some_and(|error| error.is_conditional_check_failed_exception()) => {
            Ok(false)
        }
        Err(error) => {
            Err(unavailable(&format!("set the quarantine of model `{model_id}`"), Resource::Table(table))(error))
        }
    }
}

/// Encodes one credential: the hash of the key, never the key.
fn encode_credential(model_id: &str, credential: &Credential) -> Result<AttributeValue, StoreError> {
    let key_id = credential.key_id();
    let mut map = HashMap::from([
        (HASH.to_owned(), AttributeValue::B(Blob::new(credential.hash.to_vec()))),
        (KEY_ID.to_owned(), AttributeValue::S(key_id.clone())),
        (REVOKED.to_owned(), AttributeValue::Bool(credential.revoked)),
    ]);

    if let Some(expires) = credential.expires {
        let text = expires.format(&Rfc3339).map_err(|error| {
            StoreError::Unavailable(format!(
                "expiry `{expires}` of key `{key_id}` of model `{model_id}` cannot be written as RFC 3339: {error}"
            ))
        })?;
        map.insert(EXPIRES.to_owned(), AttributeValue::S(text));
    }
    Ok(AttributeValue::M(map))
}

fn decode_model(item: &Item) -> Result<ModelEntry, StoreError> {
    let model_id = item.get(MODEL_ID).and_then(|value| value.as_s().ok()).ok_or_else(|| {
        StoreError::Corrupt(format!("an item in the keys table has no string `{MODEL_ID}`; delete or repair it"))
    })?;
    let corrupt = |problem: &str| corrupt_model(model_id, problem);

    let patterns =
        string_list(item.get(TOOLS)).ok_or_else(|| corrupt(&format!("`{TOOLS}` is not a list of strings")))?;
    let scope = Scope::new(&patterns).map_err(|error| corrupt(&format!("invalid tool patterns: {error}")))?;
    let revoked = boolean(item.get(REVOKED)).ok_or_else(|| corrupt(&format!("`{REVOKED}` is not a boolean")))?;
    let credentials = item
        .get(CREDENTIALS)
        .and_then(|value| value.as_l().ok())
        .ok_or_else(|| corrupt(&format!("`{CREDENTIALS}` is not a list")))?
        .iter()
        .map(|value| decode_credential(model_id, value))
        .collect::<Result<_, _>>()?;

    let quarantined_until = item
        .get(QUARANTINED_UNTIL)
        .map(|value| {
            let text = value.as_s().map_err(|_| corrupt(&format!("`{QUARANTINED_UNTIL}` is not a string")))?;
            OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|error| corrupt(&format!("`{QUARANTINED_UNTIL}` `{text}` is not RFC 3339: {error}")))
        })
        .transpose()?;

    Ok(ModelEntry { model_id: model_id.clone(), credentials, scope, revoked, quarantined_until })
}

fn decode_credential(model_id: &str, value: &AttributeValue) -> Result<Credential, StoreError> {
    let corrupt = |problem: &str| corrupt_model(model_id, problem);
    let map = value.as_m().map_err(|_| corrupt(&format!("an entry of `{CREDENTIALS}` is not a map")))?;
    let key_id = map.get(KEY_ID).and_then(|value| value.as_s().ok()).map_or("?", String::as_str);

    let bytes = map
        .get(HASH)
        .and_then(|value| value.as_b().ok())
        .ok_or_else(|| corrupt(&format!("key `{key_id}` has no binary `{HASH}`")))?;
    let hash = KeyHash::try_from(bytes.as_ref())
        .map_err(|_| corrupt(&format!("hash of key `{key_id}` has {} bytes instead of 32", bytes.as_ref().len())))?;
    let revoked =
        boolean(map.get(REVOKED)).ok_or_else(|| corrupt(&format!("`{REVOKED}` of key `{key_id}` is not a boolean")))?;
    let expires = map.get(EXPIRES).map(|value| parse_expiry(value, key_id, model_id)).transpose()?;

    Ok(Credential { hash, expires, revoked })
}

fn parse_expiry(value: &AttributeValue, key_id: &str, model_id: &str) -> Result<OffsetDateTime, StoreError> {
    let text =
        value.as_s().map_err(|_| corrupt_model(model_id, &format!("expiry of key `{key_id}` is not a string")))?;
    OffsetDateTime::parse(text, &Rfc3339).map_err(|error| {
        corrupt_model(model_id, &format!("expiry `{text}` of key `{key_id}` is not RFC 3339: {error}"))
    })
}

fn string_list(value: Option<&AttributeValue>) -> Option<Vec<String>> {
    let list = value?.as_l().ok()?;
    list.iter().map(|entry| entry.as_s().ok().cloned()).collect()
}

fn boolean(value: Option<&AttributeValue>) -> Option<bool> {
    value?.as_bool().ok().copied()
}

fn corrupt_model(model_id: &str, problem: &str) -> StoreError {
    StoreError::Corrupt(format!("model `{model_id}`: {problem}; put the model again to replace the item"))
}
