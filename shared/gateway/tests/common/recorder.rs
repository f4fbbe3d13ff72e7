//! moto's request recorder, read back as AWS operations, to count the requests that a function
//! sends to the emulator. Include it with `#[path = "common/recorder.rs"] mod recorder;`.
//!
//! Read from moto 5.2.5 (`moto/moto_api/_internal/recorder/models.py` and `core/utils.py`):
//! the server passes every request through the recorder before handling it. While recording
//! is on, the recorder appends one JSON line per request to the file named by
//! `MOTO_RECORDER_FILEPATH`, or to `moto_recording` in the server's working directory when
//! that variable is unset. A line has `method`, `url`, `headers` and `body`, and the body is
//! base64 when `body_encoded` is true. `POST /moto-api/recorder/start-recording` turns
//! recording on without `MOTO_ENABLE_RECORDING`, which would turn it on from the start.
//! Requests to `/moto-api/recorder/` themselves are never recorded.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use serde_json::{Map, Value};

/// The recorder endpoints of one moto server.
pub struct Recorder {
    endpoint: String,
    http: reqwest::Client,
}

impl Recorder {
    /// Returns the recorder of the server at `endpoint`, such as `http://127.0.0.1:5000`.
    pub fn new(endpoint: &str) -> Self {
        Self { endpoint: endpoint.to_owned(), http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    /// Empties the recording and turns recording on. Every request the server receives from
    /// now on is recorded, the test's own included, so a test sends none of its own until
    /// [`Recorder::finish`].
    pub async fn start(&self) {
        self.post("reset-recording").await;
        self.post("start-recording").await;
    }

    /// Turns recording off and returns the requests recorded since [`Recorder::start`].
    pub async fn finish(&self) -> Tally {
        self.post("stop-recording").await;
        let url = format!("{}/moto-api/recorder/download-recording", self.endpoint);
        let response = self.http.get(url).send().await.unwrap();
        assert!(response.status().is_success(), "moto download-recording returned {}", response.status());
        let text = response.text().await.unwrap();
        Tally { requests: text.lines().filter(|line| !line.trim().is_empty()).map(Recorded::parse).collect() }
    }

    async fn post(&self, action: &str) {
        let url = format!("{}/moto-api/recorder/{action}", self.endpoint);
        let response = self.http.post(url).send().await.unwrap();
        assert!(response.status().is_success(), "moto {action} returned {}", response.status());
    }
}

/// One request that the recorder stored.
#[derive(Debug, Clone)]
pub struct Recorded {
    method: String,
    url: String,
    /// Header names in lower case.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// What a request does to the stores, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A DynamoDB request that writes items and costs write request units.
    DynamoDbWrite,
    /// A DynamoDB request that reads items and costs read request units.
    DynamoDbRead,
    /// Any S3 request.
    S3,
    /// Anything else, such as `DescribeTable` or a DynamoDB Streams request.
    Other,
}

const DYNAMODB_TARGET_PREFIX: &str = "DynamoDB_20120810.";
const DYNAMODB_WRITES: [&str; 5] = ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"];
const DYNAMODB_READS: [&str; 5] = ["GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"];

impl Recorded {
    fn parse(line: &str) -> Self {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("invalid recording line ({error}): {line}"));
        let headers = entry["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str().unwrap_or_default().to_owned()))
            .collect();
        let body = entry["body"].as_str().unwrap_or_default();
        let body = if entry["body_encoded"] == Value::Bool(true) {
            base64::engine::general_purpose::STANDARD.decode(body).unwrap()
        } else {
            body.as_bytes().to_vec()
        };
        Self {
            method: entry["method"].as_str().unwrap_or_default().to_owned(),
            url: entry["url"].as_str().unwrap_or_default().to_owned(),
            headers,
            body,
        }
    }

    /// Returns the DynamoDB operation from `X-Amz-Target`, such as `PutItem`.
    fn dynamodb_operation(&self) -> Option<&str> {
        self.headers.get("x-amz-target")?.strip_prefix(DYNAMODB_TARGET_PREFIX)
    }

    /// Returns the service in the credential scope of the SigV4 `Authorization` header, such
    /// as `s3` in `Credential=test/20260101/us-east-1/s3/aws4_request`.
    fn signing_service(&self) -> Option<&str> {
        let authorization = self.headers.get("authorization")?;
        let scope = authorization.split("Credential=").nth(1)?.split([',', ' ']).next()?;
        scope.split('/').nth(3)
    }

    fn path(&self) -> String {
        reqwest::Url::parse(&self.url).map_or_else(|_| self.url.clone(), |url| url.path().to_owned())
    }

    fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Returns what the request does to the stores.
    pub fn access(&self) -> Access {
        match self.dynamodb_operation() {
            Some(operation) if DYNAMODB_WRITES.contains(&operation) => Access::DynamoDbWrite,
            Some(operation) if DYNAMODB_READS.contains(&operation) => Access::DynamoDbRead,
            Some(_) => Access::Other,
            None if self.signing_service() == Some("s3") => Access::S3,
            None => Access::Other,
        }
    }

    /// Returns the tables a DynamoDB request names, in the order of its body.
    fn tables(&self) -> Vec<String> {
        let body = self.body_json();
        if let Some(table) = body["TableName"].as_str() {
            return vec![table.to_owned()];
        }
        let transacted = body["TransactItems"].as_array().into_iter().flatten().filter_map(|item| {
            let action = item.as_object()?.values().next()?;
            action["TableName"].as_str().map(str::to_owned)
        });
        let batched = body["RequestItems"].as_object().into_iter().flat_map(|items| items.keys().cloned());
        transacted.chain(batched).collect()
    }

    /// Returns a label that names the operation and what it acts on: the DynamoDB operation
    /// and its tables, or the HTTP method and path of any other request.
    pub fn operation(&self) -> String {
        match self.dynamodb_operation() {
            Some(operation) => format!("{operation} {}", self.tables().join("+")),
            None if self.access() == Access::S3 => format!("S3 {} {}", self.method, self.path()),
            None => {
                let target = self.headers.get("x-amz-target").map_or(String::new(), |target| format!(" {target}"));
                format!("{} {}{target}", self.method, self.path())
            }
        }
    }

    /// Returns the size of the item that a `PutItem` request writes, by DynamoDB's rules, or
    /// `None` for any other request.
    pub fn put_item_size(&self) -> Option<usize> {
        if self.dynamodb_operation() != Some("PutItem") {
            return None;
        }
        self.body_json()["Item"].as_object().map(item_size)
    }
}

/// The requests of one recording.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// The requests, oldest first.
    pub requests: Vec<Recorded>,
}

impl Tally {
    /// Returns how many requests have `access`.
    pub fn count(&self, access: Access) -> usize {
        self.requests.iter().filter(|request| request.access() == access).count()
    }

    /// Returns how many requests have `access` and name `table`.
    pub fn count_on(&self, access: Access, table: &str) -> usize {
        let on_table = |request: &&Recorded| request.tables().iter().any(|name| name == table);
        self.requests.iter().filter(|request| request.access() == access).filter(on_table).count()
    }

    /// Returns the number of requests per [`Recorded::operation`].
    pub fn by_operation(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for request in &self.requests {
            *counts.entry(request.operation()).or_insert(0) += 1;
        }
        counts
    }

    /// Returns the operations with their counts on one line, such as `PutItem sessions: 10`.
    pub fn describe(&self) -> String {
        let counts = self.by_operation();
        if counts.is_empty() {
            return "none".to_owned();
        }
        counts.iter().map(|(operation, count)| format!("{operation}: {count}")).collect::<Vec<_>>().join(", ")
    }

    /// Returns the sizes in bytes of the items that `PutItem` requests wrote.
    pub fn put_item_sizes(&self) -> Vec<usize> {
        self.requests.iter().filter_map(Recorded::put_item_size).collect()
    }
}

/// Returns the size of an item in DynamoDB's JSON shape (`{"name": {"S": "text"}}`): the sum of
/// the UTF-8 lengths of its attribute names and the sizes of their values.
///
/// The rules are those of the DynamoDB Developer Guide, "DynamoDB item sizes and formats". A
/// string counts its UTF-8 bytes, and a number about 1 byte per two significant digits plus 1.
/// A binary value counts its raw bytes, and a Boolean or null 1 byte. A list or map counts 3
/// bytes plus its elements, each with 1 byte of overhead.
pub fn item_size(item: &Map<String, Value>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &Value) -> usize {
    let (kind, inner) = value
        .as_object()
        .and_then(|typed| typed.iter().next())
        .unwrap_or_else(|| panic!("not a DynamoDB attribute value: {value}"));
    let strings = || inner.as_array().into_iter().flatten().filter_map(Value::as_str);
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        "N" => inner.as_str().map_or(0, number_size),
        "B" => inner.as_str().map_or(0, binary_size),
        "BOOL" | "NULL" => 1,
        "SS" => strings().map(str::len).sum(),
        "NS" => strings().map(number_size).sum(),
        "BS" => strings().map(binary_size).sum(),
        "L" => 3 + inner.as_array().into_iter().flatten().map(|element| 1 + value_size(element)).sum::<usize>(),
        "M" => 3 + inner.as_object().map_or(0, |map| map.values().count() + item_size(map)),
        other => panic!("unknown DynamoDB attribute type `{other}` in {value}"),
    }
}

/// Returns the size of a DynamoDB number: 1 byte per two significant digits, plus 1.
fn number_size(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

fn binary_size(encoded: &str) -> usize {
    base64::engine::general_purpose::STANDARD.decode(encoded).map_or(0, |bytes| bytes.len())
}
