//! Feeds the fuzzer's input to the SSE `EventParser` and `ResponseReader` in chunks, as an
//! upstream's `text/event-stream` reply arrives from the network.
//!
//! The input layout keeps a seed a real stream behind a two-byte header. Byte 0 is the request
//! id and byte 1 the number of split points (at most 16). Two bytes per split point follow, and
//! the rest is the stream.
//!
//! The events, the parser's final state and the reader's outcome must not depend on where the
//! stream was split. Events must be well formed. The reader's outcome must match the one worked
//! out from the whole stream's events: the first `message` event that is the response or
//! broken, or else the reason that the stream contained no response.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use mcpsec_protocol::jsonrpc::{MAX_ERROR_MESSAGE_CHARS, Reply, find_response};
use mcpsec_protocol::sse::{Event, EventParser, ResponseReader, SseError};

/// Most split points read from one input.
const MAX_SPLITS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(request_id) = input.arbitrary::<u8>() else { return };
    let Ok(split_count) = input.arbitrary::<u8>() else { return };
    let mut splits = Vec::new();
    for _ in 0..usize::from(split_count).min(MAX_SPLITS) {
        let Ok(split) = input.arbitrary::<u16>() else { return };
        splits.push(usize::from(split));
    }
    let stream = input.take_rest();
    let chunks = split_at(stream, &mut splits);

    let (events, whole_parser) = parse(&[stream]);
    let (chunked_events, chunked_parser) = parse(&chunks);
    assert_eq!(events, chunked_events, "events depend on the chunks {chunks:?}");
    assert_eq!(whole_parser.has_open_event(), chunked_parser.has_open_event());
    assert_eq!(whole_parser.retry(), chunked_parser.retry());
    assert_eq!(whole_parser.last_event_id(), chunked_parser.last_event_id());
    events.iter().for_each(check_event);

    let request_id = u64::from(request_id % 8);
    let outcome = read(&[stream], request_id);
    assert_eq!(outcome, read(&chunks, request_id), "reader outcome depends on the chunks {chunks:?}");
    check_outcome(&outcome, &events, &whole_parser, stream, request_id);
});

/// Splits `stream` at the given offsets, taken modulo its length plus one, so empty chunks
/// occur too.
fn split_at<'a>(stream: &'a [u8], splits: &mut [usize]) -> Vec<&'a [u8]> {
    for split in splits.iter_mut() {
        *split %= stream.len() + 1;
    }
    splits.sort_unstable();

    let mut chunks = Vec::new();
    let mut start = 0;
    for &split in splits.iter() {
        chunks.push(&stream[start..split]);
        start = split;
    }
    chunks.push(&stream[start..]);
    chunks
}

fn parse(chunks: &[&[u8]]) -> (Vec<Event>, EventParser) {
    let mut parser = EventParser::default();
    let mut events = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut events);
    }
    (events, parser)
}

/// Reads chunks as the upstream transport does: until the response or an error, then `finish`.
fn read(chunks: &[&[u8]], request_id: u64) -> Result<Reply, SseError> {
    let mut reader = ResponseReader::new(request_id);
    for chunk in chunks {
        if let Some(reply) = reader.feed(chunk)? {
            return Ok(reply);
        }
    }
    Err(reader.finish())
}

fn check_event(event: &Event) {
    assert!(!event.kind.is_empty(), "event without a type: {event:?}");
    assert!(!event.kind.contains(['\r', '\n']), "line break in the event type: {event:?}");
    assert!(!event.data.contains('\r'), "carriage return in the data: {event:?}");
    if let Some(id) = &event.last_event_id {
        assert!(!id.contains(['\0', '\r', '\n']), "invalid character in the event id: {event:?}");
    }
}

/// Checks the reader's outcome against the one worked out from the whole stream's events.
fn check_outcome(
    outcome: &Result<Reply, SseError>,
    events: &[Event],
    parser: &EventParser,
    stream: &[u8],
    request_id: u64,
) {
    if let Ok(Reply::Error { message, .. }) = outcome {
        // The limit leaves out the `…` that marks a cut.
        assert!(message.chars().count() <= MAX_ERROR_MESSAGE_CHARS + 1, "error message too long: {message:?}");
    }
    if let Err(error) = outcome {
        assert!(!error.to_string().is_empty());
    }

    for (index, event) in events.iter().enumerate() {
        let event_number = index + 1;
        if event.kind != "message" || event.data.trim().is_empty() {
            continue;
        }
        let expected = match serde_json::from_str(&event.data) {
            Err(error) => Err(SseError::InvalidJson { event_number, detail: error.to_string() }),
            Ok(message) => match find_response(message, request_id) {
                Ok(None) => continue,
                Ok(Some(reply)) => Ok(reply),
                Err(source) => Err(SseError::InvalidMessage { event_number, source }),
            },
        };
        assert_eq!(outcome, &expected, "reader outcome differs from event {event_number}: {event:?}");
        return;
    }

    let first_visible = stream.iter().find(|byte| !byte.is_ascii_whitespace());
    let expected_kind = if events.is_empty() && matches!(first_visible, Some(b'{' | b'[')) {
        "mislabelled"
    } else if parser.has_open_event() {
        "truncated"
    } else if parser.last_event_id().is_some() {
        "disconnected"
    } else {
        "no response"
    };
    let kind = match outcome {
        Err(SseError::MislabelledJson) => "mislabelled",
        Err(SseError::Truncated { .. }) => "truncated",
        Err(SseError::Disconnected { .. }) => "disconnected",
        Err(SseError::NoResponse { events: counted, .. }) => {
            assert_eq!(*counted, events.len(), "reader counted another number of events");
            "no response"
        }
        other => panic!("reader found an outcome in a stream without one: {other:?}"),
    };
    assert_eq!(kind, expected_kind, "reader explains the missing response otherwise");
}
