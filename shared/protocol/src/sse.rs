//! Reading a JSON-RPC response out of a `text/event-stream` reply.
//!
//! [`EventParser`] follows the event stream format of the HTML standard's server-sent events.
//! Lines end in CRLF, LF or CR. A line starting with `:` is a comment. A line `field: value`
//! sets a field, and one space after the colon is dropped. The `data` lines of one event are
//! joined with `\n`, and an empty line ends the event. An event still open when the stream ends
//! is discarded. The parser accepts the body in chunks of any size, so a chunk may end inside a
//! line or between the CR and LF of one line end.
//!
//! [`ResponseReader`] parses each event's data as a JSON-RPC message and stops at the response
//! to one request, skipping the server's notifications and requests. Both are pure: they do no
//! I/O and hold no clock.

use std::time::Duration;

use serde_json::Value;

use crate::jsonrpc::{self, MessageError, Reply};

/// The byte order mark that may open a stream, and that the parser drops.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event` field, or `message` when the event had none.
    pub kind: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// The last `id` field seen in the stream up to this event.
    pub last_event_id: Option<String>,
}

/// An incremental parser of the event stream format.
#[derive(Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    after_cr: bool,
    first_line_done: bool,
    kind: String,
    data: String,
    last_event_id: Option<String>,
    retry: Option<Duration>,
}

impl EventParser {
    /// Parses `chunk` and appends the events it completes to `events`.
    pub fn feed(&mut self, chunk: &[u8], events: &mut Vec<Event>) {
        for &byte in chunk {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' => self.end_line(events),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(events);
                }
                _ => self.line.push(byte),
            }
        }
    }

    /// Returns `true` when the input so far ends inside an event, which the format discards.
    pub fn has_open_event(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || !self.kind.is_empty()
    }

    /// Returns the reconnection time from the last valid `retry` field.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Returns the last event id from an `id` field.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    fn end_line(&mut self, events: &mut Vec<Event>) {
        let mut bytes = std::mem::take(&mut self.line);
        if !std::mem::replace(&mut self.first_line_done, true) && bytes.starts_with(BYTE_ORDER_MARK) {
            bytes.drain(..BYTE_ORDER_MARK.len());
        }

        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            self.dispatch(events);
        } else if line.starts_with(':') {
            // A comment, which servers send as a keep-alive.
        } else {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            self.set_field(field, value);
        }
    }

    fn set_field(&mut self, field: &str, value: &str) {
        match field {
            "event" => value.clone_into(&mut self.kind),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) => {
                self.retry = value.parse().ok().map(Duration::from_millis);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        let kind = std::mem::take(&mut self.kind);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }

        data.pop();
        let kind = if kind.is_empty() { "message".to_owned() } else { kind };
        events.push(Event { kind, data, last_event_id: self.last_event_id.clone() });
    }
}

/// A failure to read the response from an event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event's data is not JSON.
    #[error("event {event_number} of the stream is not valid JSON: {detail}")]
    InvalidJson {
        /// Position of the event in the stream, from 1.
        event_number: usize,
        /// The JSON parser's message.
        detail: String,
    },

    /// An event's data is JSON but not a usable JSON-RPC message.
    #[error("event {event_number} of the stream: {source}")]
    InvalidMessage {
        /// Position of the event in the stream, from 1.
        event_number: usize,
        /// The problem with the message.
        source: MessageError,
    },

    /// The body is labelled `text/event-stream` but is plain JSON, so it contains no events.
    #[error("reply is labelled `text/event-stream` but its body is plain JSON without events")]
    MislabelledJson,

    /// The stream ended in the middle of an event, before the response.
    #[error("event stream ended in the middle of an event, before the response to request {request_id}")]
    Truncated {
        /// Id of our request.
        request_id: u64,
    },

    /// The stream ended after an event id without the response, so the server may expect the
    /// client to resume the stream.
    #[error(
        "event stream closed after event id `{last_event_id}` without the response to request {request_id}; \
         the server may expect a reconnection with `Last-Event-ID`{}, which this client does not make",
        retry.map(|retry| format!(" after {}", humantime::format_duration(retry))).unwrap_or_default()
    )]
    Disconnected {
        /// Id of our request.
        request_id: u64,
        /// The last event id sent by the server.
        last_event_id: String,
        /// The reconnection time that the server asked for.
        retry: Option<Duration>,
    },

    /// The stream ended cleanly without the response.
    #[error("event stream ended after {events} events without the response to request {request_id}")]
    NoResponse {
        /// Id of our request.
        request_id: u64,
        /// Number of events received.
        events: usize,
    },
}

/// Reads events until the response to one request arrives.
#[derive(Debug)]
pub struct ResponseReader {
    request_id: u64,
    parser: EventParser,
    pending: Vec<Event>,
    events_seen: usize,
    first_visible_byte: Option<u8>,
}

impl ResponseReader {
    /// Starts reading for the response to `request_id`.
    pub fn new(request_id: u64) -> Self {
        Self {
            request_id,
            parser: EventParser::default(),
            pending: Vec::new(),
            events_seen: 0,
            first_visible_byte: None,
        }
    }

    /// Parses `chunk`, returning the response once it is complete.
    ///
    /// Bytes after the response are never parsed, so the caller should stop reading.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Option<Reply>, SseError> {
        if self.first_visible_byte.is_none() {
            self.first_visible_byte = chunk.iter().copied().find(|byte| !byte.is_ascii_whitespace());
        }

        self.parser.feed(chunk, &mut self.pending);
        for event in std::mem::take(&mut self.pending) {
            self.events_seen += 1;
            if let Some(reply) = self.read_event(event)? {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }

    /// Explains why the stream, which has just ended, did not contain the response.
    pub fn finish(self) -> SseError {
        let request_id = self.request_id;
        if self.events_seen == 0 && matches!(self.first_visible_byte, Some(b'{' | b'[')) {
            SseError::MislabelledJson
        } else if self.parser.has_open_event() {
            SseError::Truncated { request_id }
        } else if let Some(last_event_id) = self.parser.last_event_id() {
            let last_event_id = crate::excerpt(last_event_id, 80);
            SseError::Disconnected { request_id, last_event_id, retry: self.parser.retry() }
        } else {
            SseError::NoResponse { request_id, events: self.events_seen }
        }
    }

    fn read_event(&self, event: Event) -> Result<Option<Reply>, SseError> {
        let event_number = self.events_seen;
        if event.kind != "message" {
            tracing::debug!(sse.event = %event.kind, "skipping event that is not a message");
            return Ok(None);
        }
        if event.data.trim().is_empty() {
            // A priming event, which carries only an id for resuming the stream.
            return Ok(None);
        }

        let message: Value = serde_json::from_str(&event.data)
            .map_err(|error| SseError::InvalidJson { event_number, detail: error.to_string() })?;
        jsonrpc::find_response(message, self.request_id)
            .map_err(|source| SseError::InvalidMessage { event_number, source })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn events_of(input: &str) -> Vec<Event> {
        let mut parser = EventParser::default();
        let mut events = Vec::new();
        parser.feed(input.as_bytes(), &mut events);
        events
    }

    fn event(kind: &str, data: &str, last_event_id: Option<&str>) -> Event {
        Event { kind: kind.to_owned(), data: data.to_owned(), last_event_id: last_event_id.map(str::to_owned) }
    }

    #[test]
    fn parser_cases() {
        let cases = [
            ("data: hello\n\n", vec![event("message", "hello", None)]),
            ("data:hello\n\n", vec![event("message", "hello", None)]),
            ("data:  two spaces\n\n", vec![event("message", " two spaces", None)]),
            ("data: one\ndata: two\n\n", vec![event("message", "one\ntwo", None)]),
            ("data: crlf\r\n\r\n", vec![event("message", "crlf", None)]),
            ("data: cr\r\r", vec![event("message", "cr", None)]),
            (": keep-alive\n\ndata: after comment\n\n", vec![event("message", "after comment", None)]),
            ("event: ping\ndata: x\n\n", vec![event("ping", "x", None)]),
            (
                "id: 41\ndata: a\n\ndata: b\n\n",
                vec![event("message", "a", Some("41")), event("message", "b", Some("41"))],
            ),
            ("id: 1\n\n", vec![]),
            ("data\n\n", vec![event("message", "", None)]),
            ("data:\ndata:\n\n", vec![event("message", "\n", None)]),
            ("\u{FEFF}data: bom\n\n", vec![event("message", "bom", None)]),
            ("unknown: field\ndata: x\n\n", vec![event("message", "x", None)]),
            ("data: unterminated", vec![]),
            ("data: unterminated\n", vec![]),
        ];
        for (input, expected) in cases {
            assert_eq!(events_of(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn parser_reads_retry_field() {
        let mut parser = EventParser::default();
        let mut events = Vec::new();
        parser.feed(b"retry: 3000\n\nretry: soon\n\n", &mut events);
        assert_eq!(parser.retry(), Some(Duration::from_millis(3000)));
    }

    #[test]
    fn parser_result_is_independent_of_chunking() {
        let input = b"\xEF\xBB\xBF: hi\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: x\rdata: y\r\rdata: z\n\n";
        let whole = {
            let mut events = Vec::new();
            EventParser::default().feed(input, &mut events);
            events
        };
        assert_eq!(whole.len(), 3);

        for split in 0..input.len() {
            let (head, tail) = input.split_at(split);
            let mut parser = EventParser::default();
            let mut events = Vec::new();
            parser.feed(head, &mut events);
            parser.feed(tail, &mut events);
            assert_eq!(events, whole, "split at byte {split}");
        }
    }

    fn read_all(input: &str, request_id: u64) -> Result<Reply, SseError> {
        let mut reader = ResponseReader::new(request_id);
        match reader.feed(input.as_bytes())? {
            Some(reply) => Ok(reply),
            None => Err(reader.finish()),
        }
    }

    #[test]
    fn reader_cases() {
        let response = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[],"isError":true}}"#;
        let result = Reply::Result(json!({"content": [], "isError": true}));
        let cases = [
            (format!("data: {response}\n\n"), Ok(result.clone())),
            (format!(": ping\r\n\r\nid: e1\r\ndata: \r\n\r\ndata: {response}\r\n\r\n"), Ok(result.clone())),
            (
                format!(
                    "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{}}}}\n\n\
                     data: {{\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"method\":\"roots/list\"}}\n\n\
                     data: {{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{{}}}}\n\n\
                     data: {response}\n\n"
                ),
                Ok(result.clone()),
            ),
            (
                "data: {\"jsonrpc\":\"2.0\",\n\
                 data: \"id\":3,\"result\":{\"content\":[],\"isError\":true}}\n\n"
                    .to_owned(),
                Ok(result.clone()),
            ),
            ("event: endpoint\ndata: /other\n\n".to_owned(), Err(SseError::NoResponse { request_id: 3, events: 1 })),
            (format!("{response}\n"), Err(SseError::MislabelledJson)),
            (format!("data: {response}"), Err(SseError::Truncated { request_id: 3 })),
            (format!("data: {response}\n"), Err(SseError::Truncated { request_id: 3 })),
            (": only a comment\n\n".to_owned(), Err(SseError::NoResponse { request_id: 3, events: 0 })),
            (String::new(), Err(SseError::NoResponse { request_id: 3, events: 0 })),
            (
                "retry: 2500\nid: e7\ndata:\n\n".to_owned(),
                Err(SseError::Disconnected {
                    request_id: 3,
                    last_event_id: "e7".to_owned(),
                    retry: Some(Duration::from_millis(2500)),
                }),
            ),
            (
                "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n".to_owned(),
                Err(SseError::NoResponse { request_id: 3, events: 1 }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(read_all(&input, 3), expected, "input {input:?}");
        }
    }

    #[test]
    fn reader_rejects_invalid_json_event() {
        let result = read_all("data: {not json\n\n", 1);
        assert!(matches!(result, Err(SseError::InvalidJson { event_number: 1, .. })), "result {result:?}");
    }

    #[test]
    fn reader_rejects_response_without_result() {
        let error = read_all("data: {\"jsonrpc\":\"2.0\",\"id\":1}\n\n", 1);
        assert_eq!(
            error,
            Err(SseError::InvalidMessage { event_number: 1, source: MessageError::ResultOrError { request_id: 1 } })
        );
    }

    /// The `sse_reader` fuzz target found a server error message that came out longer than the
    /// limit, because the escapes of its control characters were counted as one character each.
    /// The input is in `fuzz/corpus/sse_reader/error-message-control-characters.sse`.
    #[test]
    fn reader_bounds_error_message_with_control_characters() {
        let message = format!("P{}{}", "\\u007f".repeat(100), "x".repeat(500));
        let stream = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{{\"code\":-32700,\"message\":\"{message}\"}}}}\n\n"
        );
        let Ok(Reply::Error { code, message }) = read_all(&stream, 3) else { panic!("expected an error reply") };
        assert_eq!(code, -32700);
        assert!(message.chars().count() <= crate::jsonrpc::MAX_ERROR_MESSAGE_CHARS + 1, "{message}");
        assert!(message.starts_with("P\\u{7f}\\u{7f}"), "{message}");
        assert!(message.ends_with('…'), "{message}");
    }

    #[test]
    fn reader_stops_at_response() -> Result<(), SseError> {
        let mut reader = ResponseReader::new(5);
        let first = reader.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{}}\n\ndata: {broken")?;
        assert_eq!(first, Some(Reply::Result(json!({}))));
        Ok(())
    }

    #[test]
    fn error_messages() {
        let messages = [
            SseError::MislabelledJson.to_string(),
            SseError::Truncated { request_id: 4 }.to_string(),
            SseError::NoResponse { request_id: 4, events: 2 }.to_string(),
            SseError::Disconnected {
                request_id: 4,
                last_event_id: "e1".to_owned(),
                retry: Some(Duration::from_secs(3)),
            }
            .to_string(),
        ];
        insta::assert_snapshot!(messages.join("\n"), @r"
        reply is labelled `text/event-stream` but its body is plain JSON without events
        event stream ended in the middle of an event, before the response to request 4
        event stream ended after 2 events without the response to request 4
        event stream closed after event id `e1` without the response to request 4; the server may expect a reconnection with `Last-Event-ID` after 3s, which this client does not make
        ");
    }
}
