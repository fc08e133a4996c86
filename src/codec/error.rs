//! The ways a byte stream can fail to be a frame, with messages that say what was
//! expected and what came.

use std::fmt;

/// Which part of a frame an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Length,
    Header,
    Body,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Length => "length",
            Part::Header => "header",
            Part::Body => "body",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Four length bytes that are printable ASCII, kept to explain a bad length:
/// a peer that sends `GET ` or `dir\n` speaks text, not frames (Netty 13331).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPrefix(pub [u8; 4]);

impl TextPrefix {
    pub fn detect(raw: [u8; 4]) -> Option<TextPrefix> {
        let printable = |b: &u8| (0x20..0x7f).contains(b) || matches!(b, b'\t' | b'\r' | b'\n');
        raw.iter().all(printable).then_some(TextPrefix(raw))
    }
}

impl fmt::Display for TextPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "; the length bytes {} are ASCII text: the peer seems to be sending text \
             (a raw command line or another protocol), not rframe frames",
            escape_bytes(&self.0)
        )
    }
}

fn hint(text: &Option<TextPrefix>) -> String {
    text.map(|t| t.to_string()).unwrap_or_default()
}

/// Python's `repr()` of a short `bytes` value, for error messages.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut s = String::from("b'");
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('\'');
    s
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length beyond the codec's limit (or beyond what the 4-byte field holds).
    #[error("frame {part} of {size} bytes exceeds the limit of {limit} bytes ({limit_name}){}", hint(.text))]
    TooLarge { part: Part, size: u64, limit: u64, limit_name: &'static str, text: Option<TextPrefix> },

    /// A length prefix that reads as a negative number.
    #[error("invalid length prefix {}: {value} is negative{}", escape_bytes(.raw), hint(.text))]
    NegativeLength { raw: [u8; 4], value: i32, text: Option<TextPrefix> },

    /// The JSON header is malformed or lacks a valid `total_size`.
    #[error("{0}")]
    Header(String),

    /// The stream ended inside a frame.
    #[error("stream ended in the middle of a frame: expected {}, received {received} byte{}",
            expected_part(*.part, *.expected), if *.received == 1 { "" } else { "s" })]
    Incomplete { part: Part, expected: u64, received: u64 },

    /// The body's digest differs from the header's, or the header has none.
    #[error("{}", checksum_message(.algorithm, .expected.as_deref(), .actual))]
    Checksum { algorithm: &'static str, expected: Option<String>, actual: String },
}

fn expected_part(part: Part, expected: u64) -> String {
    match part {
        Part::Length => format!("a {expected}-byte length prefix"),
        _ => format!("a {expected}-byte {part}"),
    }
}

fn checksum_message(algorithm: &str, expected: Option<&str>, actual: &str) -> String {
    match expected {
        Some(e) => format!("body {algorithm} mismatch: header says {e}, body is {actual}"),
        None => format!("frame header has no \"{algorithm}\" field to verify the body against (body is {actual})"),
    }
}

impl FrameError {
    pub fn header(msg: impl Into<String>) -> FrameError {
        FrameError::Header(msg.into())
    }
}
