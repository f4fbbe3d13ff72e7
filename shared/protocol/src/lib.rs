//! MCP wire formats for MCP-Sec Gateway: JSON-RPC messages and the SSE event reader.
//!
//! The gateway reads untrusted bytes in two places: the JSON-RPC messages that models send to
//! `POST /mcp`, and the replies of upstream MCP servers, which may arrive as a
//! `text/event-stream`. This crate keeps that parsing apart from the gateway's HTTP server,
//! stores and AWS clients. It does no I/O, spawns no tasks and reads no clock, so the fuzz
//! targets under `fuzz/` build it alone, without the gateway's dependencies.
//!
//! * [`message`]: the messages a client sends to the server, checked as `POST /mcp` does.
//! * [`jsonrpc`]: the requests the gateway sends to an upstream and the responses it reads.
//! * [`sse`]: the event stream format and the reader that finds one response in a stream.

pub mod jsonrpc;
pub mod message;
pub mod sse;

/// Escapes control characters in untrusted text from a server and shortens the result to
/// `max_chars` characters, so that it fits on one log line. A shortened text ends in `…`, one
/// character past the limit. Escapes count in full and are never cut.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut shortened = String::new();
    let mut length = 0;
    for character in text.trim().chars() {
        let width = if character.is_control() { character.escape_default().len() } else { 1 };
        if length + width > max_chars {
            shortened.push('…');
            break;
        }

        if character.is_control() {
            shortened.extend(character.escape_default());
        } else {
            shortened.push(character);
        }
        length += width;
    }
    shortened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_escapes_control_characters() {
        assert_eq!(excerpt("line one\nline two\u{7}", 100), "line one\\nline two\\u{7}");
    }

    #[test]
    fn excerpt_marks_shortened_text() {
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("abc", 3), "abc");
    }

    /// Each escape used to count as one character, so text with control characters came out
    /// up to ten times longer than the limit.
    #[test]
    fn excerpt_counts_escapes_in_the_limit() {
        assert_eq!(excerpt("a\u{7f}\u{7f}b", 7), "a\\u{7f}…");
        assert_eq!(excerpt("a\u{7f}", 7), "a\\u{7f}");
        assert_eq!(excerpt("\u{1b}[31m", 3), "…");
    }
}
