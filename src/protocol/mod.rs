//! The command protocol carried in frames (see PROTOCOL.md): request and
//! response headers, error codes, and the authentication handshake. Sans-IO:
//! no sockets, no runtime, no Python.

pub mod auth;
pub mod client;
pub mod config;
pub mod live;
pub mod server_session;

use serde::{Deserialize, Serialize};

use crate::codec::Checksum;
use std::collections::BTreeMap;

/// A command: a string for the shell, or an argv list run without one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Cmd {
    Line(String),
    Argv(Vec<String>),
}

/// The header of a request frame. Unknown fields are ignored, so newer
/// clients can talk to older servers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RequestHeader {
    pub op: Option<String>,
    pub cmd: Option<Cmd>,
    pub timeout: Option<f64>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    #[serde(default)]
    pub input: bool,
    pub nonce: Option<String>,
    pub client_nonce: Option<String>,
    pub proof: Option<String>,
    /// In a proof: the channel its proof is bound to (see `auth`).
    pub channel_binding: Option<String>,
}

/// The fields of the file requests (`put`, `get`, `list`) and of the `data`
/// and `end` frames of a transfer. Parsed only for those ops.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FileRequest {
    pub op: Option<String>,
    pub name: Option<String>,
    pub size: Option<u64>,
    #[serde(default)]
    pub overwrite: bool,
    /// One of [`CHECKSUMS_OFFERED`] (`None`: [`FALLBACK_CHECKSUM`]): the algorithm of `digest`.
    pub checksum: Option<String>,
    /// The hex digest of the whole file, in an `end` frame.
    pub digest: Option<String>,
    /// In a `get`: the largest `data` body the client takes.
    pub chunk_size: Option<u64>,
    /// In a `put` or `mkdir`: the permission bits (of `files::MODE_BITS`).
    pub mode: Option<u32>,
    /// In a `put`: the whole file is this frame's body (with its `digest`),
    /// and the reply is `stored` at once: no `ready`, `data` or `end`.
    #[serde(default)]
    pub inline: bool,
    /// In a `put`: `false` stores the file without waiting for the disk; a
    /// later `sync` request makes it durable.
    pub sync: Option<bool>,
    /// In a `list`: the whole tree beneath the directory.
    #[serde(default)]
    pub recursive: bool,
    /// In a recursive `list`: the page starts after this name.
    pub after: Option<String>,
    /// In a `symlink`: what the link points to.
    pub target: Option<String>,
    /// In a `put`: keep what arrives if the upload is cut, and continue
    /// from what an earlier cut upload of this name kept (PROTOCOL.md, "Resume").
    #[serde(default)]
    pub resume: bool,
    /// In a resumable `put`, the source's mtime in ns; in a resumable `get`,
    /// the one the client recorded for the server's file.
    pub mtime_ns: Option<i64>,
    /// In a resumable `get`: how many bytes the client kept; in the first
    /// `data` (or `end`) frame of a resumable `put`: where the data starts.
    pub offset: Option<u64>,
    /// In a resumable `get`: the digest of the kept bytes.
    pub prefix_digest: Option<String>,
}

/// Parses the header of a file request or transfer frame.
pub fn parse_file_request(header: &[u8]) -> Result<FileRequest, String> {
    serde_json::from_slice(header).map_err(|e| format!("bad file request header: {e}"))
}

/// Header JSON from a JSON object value, with `total_size` last.
pub fn json_header(mut fields: serde_json::Map<String, serde_json::Value>, total_size: u64) -> Vec<u8> {
    fields.insert("total_size".into(), total_size.into());
    serde_json::to_vec(&fields).expect("a JSON object always serializes")
}

/// The header of a transfer's `data` frame.
pub fn data_header(len: usize) -> Vec<u8> {
    format!(r#"{{"op": "data", "total_size": {len}}}"#).into_bytes()
}

/// The header of a `result` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultHeader {
    pub op: String,
    pub returncode: i32,
    pub stdout_size: u64,
    pub stderr_size: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration: f64,
    pub encoding: String,
    pub total_size: u64,
}

/// Machine-readable error codes of `error` responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    NotAllowed,
    Auth,
    Busy,
    TooLarge,
    Timeout,
    Handler,
    Spawn,
    NotFound,
    Exists,
    Checksum,
    Io,
    TlsRequired,
    Changed,
}

impl ErrorCode {
    /// Every code, in the order of PROTOCOL.md's table ("Errors").
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::NotAllowed,
        ErrorCode::Auth,
        ErrorCode::Busy,
        ErrorCode::TooLarge,
        ErrorCode::Timeout,
        ErrorCode::Handler,
        ErrorCode::Spawn,
        ErrorCode::NotFound,
        ErrorCode::Exists,
        ErrorCode::Checksum,
        ErrorCode::Io,
        ErrorCode::TlsRequired,
        ErrorCode::Changed,
    ];

    /// The code of this name, as an `error` response carries it.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.name() == name)
    }

    /// Whether the server always closes the connection after an error of this
    /// code (PROTOCOL.md, "Errors": "the connection is closed"), so a client
    /// closes its end too. (A server may close after others as well, in the
    /// middle of a transfer; the client learns that from the closed stream.)
    pub fn closes(self) -> bool {
        matches!(
            self,
            ErrorCode::Auth | ErrorCode::Busy | ErrorCode::TooLarge | ErrorCode::Timeout | ErrorCode::TlsRequired
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::NotAllowed => "not-allowed",
            ErrorCode::Auth => "auth",
            ErrorCode::Busy => "busy",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Handler => "handler",
            ErrorCode::Spawn => "spawn",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Exists => "exists",
            ErrorCode::Checksum => "checksum",
            ErrorCode::Io => "io",
            ErrorCode::TlsRequired => "tls-required",
            ErrorCode::Changed => "changed",
        }
    }
}

/// The `op` of an error response.
pub const ERROR_OP: &str = "error";

/// Whether a reply whose header has this `op` is an error response: only the
/// string `"error"` is (`op` is `None` when the header has no `op`, or one
/// that is not a string). A client raises such a reply as an error instead of
/// handing it to the request that waits for it.
pub fn is_error_reply(op: Option<&str>) -> bool {
    op == Some(ERROR_OP)
}

/// Whether the server has closed the connection after an error response of
/// code `code` (see [`ErrorCode::closes`]); a code this build does not know
/// does not close it.
pub fn error_closes(code: &str) -> bool {
    ErrorCode::from_name(code).is_some_and(ErrorCode::closes)
}

/// The longest time limit, in seconds, that a server and the clients take
/// (about 31 years): a deadline is now plus the limit, and a larger one would
/// overflow the clock.
pub const MAX_SECONDS: f64 = 1e9;

/// The largest `data` frame body of a file transfer that either side sends
/// (a `get`'s `chunk_size` and a `ready`'s may ask for less).
pub const TRANSFER_CHUNK: usize = 1 << 20;

/// The request that asks a server what it offers, and the op of its answer
/// (PROTOCOL.md, "features"). A server older than it answers `bad-request`.
pub const FEATURES_OP: &str = "features";

/// The checksums a server offers (its `features`), the fastest first: a
/// client asked for none picks the first of them that the server offers
/// ([`pick_checksum`]; its own order, not the server's), never `md5`.
pub const CHECKSUMS_OFFERED: [Checksum; 3] = [Checksum::Blake3, Checksum::Sha256, Checksum::Md5];

/// The checksum of a file request that names none, and the one a client
/// uses when it was asked for none and the server offers nothing faster
/// (every server verifies it).
pub const FALLBACK_CHECKSUM: Checksum = Checksum::Sha256;

/// The checksum a client picks, asked for none, from what the server offers:
/// `offered` are names from its `features` (empty from a server too old to
/// answer them).
pub fn pick_checksum(offered: &[String]) -> Checksum {
    CHECKSUMS_OFFERED
        .into_iter()
        .filter(|c| *c != Checksum::Md5)
        .find(|c| offered.iter().any(|name| name == c.name()))
        .unwrap_or(FALLBACK_CHECKSUM)
}

/// The port a server listens on unless told otherwise (the course's).
pub const DEFAULT_PORT: u16 = 8848;

/// The most characters of a message an error response carries. Messages quote
/// the request (a command, a bad value), and JSON escaping can make a quote six
/// times longer: cut to this, an error header stays under 4 KiB, so it fits
/// the codec's `max_header` and the peer hears why (found by fuzz target `request`).
pub const MAX_ERROR_MESSAGE: usize = 512;

/// A message of at most [`MAX_ERROR_MESSAGE`] characters (plus `...`): a long
/// one keeps its start and its end, where the quote's explanation is.
fn shorten(message: &str) -> std::borrow::Cow<'_, str> {
    let half = MAX_ERROR_MESSAGE / 2;
    let chars = message.chars().count();
    if chars <= MAX_ERROR_MESSAGE {
        return message.into();
    }
    let head: String = message.chars().take(half).collect();
    let tail: String = message.chars().skip(chars - half).collect();
    format!("{head}...{tail}").into()
}

/// Header JSON of an error response (body empty).
pub fn error_header(code: ErrorCode, message: &str) -> Vec<u8> {
    let message = shorten(message);
    serde_json::to_vec(&serde_json::json!({
        "op": "error",
        "error": code.name(),
        "message": message,
        "total_size": 0,
    }))
    .expect("a JSON object always serializes")
}

/// Header JSON of a response with only an `op` and optional extra fields.
pub fn op_header(op: &str, fields: &[(&str, &str)], total_size: u64) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("op".into(), op.into());
    for (k, v) in fields {
        map.insert((*k).into(), (*v).into());
    }
    json_header(map, total_size)
}

/// A header's JSON text with one more string field (replacing one of that name).
pub fn add_field(header: &[u8], key: &str, value: &str) -> Vec<u8> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).unwrap_or_default();
    map.insert(key.into(), value.into());
    serde_json::to_vec(&map).expect("a JSON object always serializes")
}

/// Parses a request header (already checked by the codec to be an object
/// with `total_size`).
pub fn parse_request(header: &[u8]) -> Result<RequestHeader, String> {
    serde_json::from_slice(header).map_err(|e| format!("bad request header: {e}"))
}

/// How a raw command line (the course client's request) is told from a frame:
/// four or more bytes whose prefix the codec refuses, or fewer that are text.
pub fn looks_like_raw_command(first: &[u8]) -> bool {
    !first.is_empty()
        && first.iter().all(|b| (0x20..0x7f).contains(b) || matches!(b, b'\t' | b'\r' | b'\n') || *b >= 0x80)
}

/// How a TLS connection starts: a handshake record (content type 22) of TLS
/// 1.0 to 1.3's record versions (a ClientHello's is 3.1 for compatibility).
/// A server on a port that serves both tells the two apart by this, where the
/// codec would refuse the same bytes as a frame's length.
pub fn looks_like_tls_hello(first: &[u8]) -> bool {
    first.len() >= 3 && first[0] == 0x16 && first[1] == 0x03 && (1..=4).contains(&first[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_request_parses_string_and_list_commands() {
        let r = parse_request(br#"{"op": "run", "cmd": "ls -l", "timeout": 2, "total_size": 0}"#).unwrap();
        assert_eq!(r.cmd, Some(Cmd::Line("ls -l".into())));
        assert_eq!(r.timeout, Some(2.0));
        let r = parse_request(br#"{"op": "run", "cmd": ["ls", "-l"], "input": true, "total_size": 3}"#).unwrap();
        assert_eq!(r.cmd, Some(Cmd::Argv(vec!["ls".into(), "-l".into()])));
        assert!(r.input);
    }

    #[test]
    fn bad_request_types_are_refused() {
        assert!(parse_request(br#"{"op": "run", "cmd": 5, "total_size": 0}"#).is_err());
        assert!(parse_request(br#"{"op": "run", "env": {"A": 1}, "total_size": 0}"#).is_err());
    }

    #[test]
    fn error_header_is_json_with_code() {
        let h: serde_json::Value = serde_json::from_slice(&error_header(ErrorCode::Busy, "full")).unwrap();
        assert_eq!(h["error"], "busy");
        assert_eq!(h["op"], "error");
        assert_eq!(h["total_size"], 0);
    }

    #[test]
    fn file_requests_parse() {
        let r = parse_file_request(br#"{"op": "end", "checksum": "md5", "digest": "ab", "total_size": 0}"#).unwrap();
        assert_eq!((r.checksum.as_deref(), r.digest.as_deref()), (Some("md5"), Some("ab")));
        let r = parse_file_request(br#"{"op": "put", "name": "a", "size": 3, "overwrite": true, "total_size": 0}"#);
        assert!(r.unwrap().overwrite);
        assert!(parse_file_request(br#"{"op": "put", "size": -1, "total_size": 0}"#).is_err());
        let data: serde_json::Value = serde_json::from_slice(&data_header(7)).unwrap();
        assert_eq!(data, serde_json::json!({"op": "data", "total_size": 7}));
    }

    #[test]
    fn error_header_quoting_a_long_request_stays_small() {
        // A 64 KiB raw line of quotes came back as a 256 KiB header, over
        // max_header: the server closed the connection without a word.
        for quoted in ["\"".repeat(100_000), "\u{1}".repeat(100_000), "中".repeat(100_000)] {
            let message = format!("cannot split {quoted}: unbalanced quotes");
            let header = error_header(ErrorCode::BadRequest, &message);
            assert!(header.len() <= 4096, "{} bytes", header.len());
            let h: serde_json::Value = serde_json::from_slice(&header).unwrap();
            let (head, tail) = h["message"].as_str().unwrap().split_once("...").unwrap();
            assert!(message.starts_with(head) && message.ends_with(tail), "{head}...{tail}");
            assert!(tail.ends_with(": unbalanced quotes"));
        }
        let short = "x".repeat(MAX_ERROR_MESSAGE);
        let h: serde_json::Value = serde_json::from_slice(&error_header(ErrorCode::BadRequest, &short)).unwrap();
        assert_eq!(h["message"], short.as_str());
    }

    #[test]
    fn every_code_is_found_by_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.name()), Some(code));
        }
        assert_eq!(ErrorCode::from_name("bad-response"), None);
        assert_eq!(ErrorCode::from_name("Busy"), None);
    }

    #[test]
    fn codes_and_their_closing_are_those_of_protocol_md() {
        // PROTOCOL.md's table of error codes, a row "| `code` | when |" each;
        // those after which the server closes the connection say so.
        let protocol = include_str!("../../PROTOCOL.md");
        let table = protocol.split_once("\n## Errors\n").expect("an Errors section").1;
        let rows: Vec<(&str, bool)> = table
            .lines()
            .skip_while(|line| !line.starts_with("|---"))
            .skip(1)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let code = line.split('`').nth(1).expect("a code in backquotes");
                (code, line.contains("(the connection is closed)"))
            })
            .collect();
        let ours: Vec<(&str, bool)> = ErrorCode::ALL.iter().map(|c| (c.name(), c.closes())).collect();
        assert_eq!(rows, ours);
    }

    #[test]
    fn only_known_closing_codes_close() {
        assert!(error_closes("busy") && error_closes("auth") && error_closes("tls-required"));
        assert!(!error_closes("not-found") && !error_closes("io"));
        assert!(!error_closes("bad-response") && !error_closes(""));
    }

    #[test]
    fn only_the_string_error_is_an_error_reply() {
        assert!(is_error_reply(Some("error")));
        assert!(!is_error_reply(Some("errors")));
        assert!(!is_error_reply(Some("Error")));
        assert!(!is_error_reply(Some("result")));
        assert!(!is_error_reply(None));
    }

    #[test]
    fn tls_hellos_are_told_by_their_record_header() {
        assert!(looks_like_tls_hello(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(looks_like_tls_hello(&[0x16, 0x03, 0x03]));
        assert!(!looks_like_tls_hello(&[0x16, 0x03]));
        assert!(!looks_like_tls_hello(&[0x16, 0x03, 0x00]));
        assert!(!looks_like_tls_hello(&[0x17, 0x03, 0x03]));
        assert!(!looks_like_tls_hello(b"ls -l"));
    }

    #[test]
    fn raw_commands_are_text() {
        assert!(looks_like_raw_command(b"dir"));
        assert!(looks_like_raw_command("ls -l 中".as_bytes()));
        assert!(!looks_like_raw_command(b"\x1f\x00\x00\x00"));
        assert!(!looks_like_raw_command(b""));
    }
}
