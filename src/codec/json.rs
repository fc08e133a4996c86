//! JSON headers written exactly as Python's `json.dumps(obj)` writes them with its
//! default settings (`ensure_ascii=True`, separators `", "` and `": "`), and read
//! back with the checks a frame header needs.
//!
//! The writer knows JSON syntax; what a value *is* (a Python int, a float's repr)
//! is decided by the caller, which hands numbers over as finished text.

use serde_json::{Map, Value};

use super::error::FrameError;

/// The header field that carries the body's length.
pub const TOTAL_SIZE: &str = "total_size";

/// Appends JSON text in `json.dumps` style. Containers are opened and closed by
/// the caller, which says whether an item is the first in its container.
#[derive(Debug, Default)]
pub struct JsonWriter {
    out: Vec<u8>,
}

impl JsonWriter {
    pub fn with_capacity(n: usize) -> JsonWriter {
        JsonWriter { out: Vec::with_capacity(n) }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn begin_object(&mut self) {
        self.out.push(b'{');
    }

    pub fn end_object(&mut self) {
        self.out.push(b'}');
    }

    pub fn begin_array(&mut self) {
        self.out.push(b'[');
    }

    pub fn end_array(&mut self) {
        self.out.push(b']');
    }

    /// Writes `key: ` (preceded by `, ` unless it is the first key).
    pub fn key(&mut self, first: bool, key: &str) {
        if !first {
            self.out.extend_from_slice(b", ");
        }
        self.string(key);
        self.out.extend_from_slice(b": ");
    }

    /// Writes the `, ` before an array item that is not the first.
    pub fn item(&mut self, first: bool) {
        if !first {
            self.out.extend_from_slice(b", ");
        }
    }

    pub fn null(&mut self) {
        self.out.extend_from_slice(b"null");
    }

    pub fn bool(&mut self, b: bool) {
        self.out.extend_from_slice(if b { b"true" } else { b"false" });
    }

    /// A number already formatted as Python formats it (`int.__repr__`, `float.__repr__`).
    pub fn raw_number(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
    }

    pub fn u64(&mut self, n: u64) {
        self.out.extend_from_slice(n.to_string().as_bytes());
    }

    pub fn i64(&mut self, n: i64) {
        self.out.extend_from_slice(n.to_string().as_bytes());
    }

    /// A string with `ensure_ascii` escaping: `"` and `\`, the short escapes
    /// `\b \f \n \r \t`, and `\uXXXX` (lower-case hex, surrogate pairs above the
    /// BMP) for everything outside printable ASCII, DEL included.
    pub fn string(&mut self, s: &str) {
        self.out.push(b'"');
        let bytes = s.as_bytes();
        // Header strings are mostly plain ASCII: copy that run in one go.
        let plain = bytes.iter().position(|&b| !is_plain(b)).unwrap_or(bytes.len());
        self.out.extend_from_slice(&bytes[..plain]);
        for c in s[plain..].chars() {
            if c.is_ascii() {
                let b = c as u8;
                if is_plain(b) {
                    self.out.push(b);
                } else {
                    self.escape_ascii(b);
                }
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    self.unicode_escape(*unit);
                }
            }
        }
        self.out.push(b'"');
    }

    fn escape_ascii(&mut self, b: u8) {
        match b {
            b'"' => self.out.extend_from_slice(b"\\\""),
            b'\\' => self.out.extend_from_slice(b"\\\\"),
            b'\n' => self.out.extend_from_slice(b"\\n"),
            b'\r' => self.out.extend_from_slice(b"\\r"),
            b'\t' => self.out.extend_from_slice(b"\\t"),
            0x08 => self.out.extend_from_slice(b"\\b"),
            0x0c => self.out.extend_from_slice(b"\\f"),
            _ => self.unicode_escape(b as u16),
        }
    }

    fn unicode_escape(&mut self, unit: u16) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.out.extend_from_slice(&[
            b'\\',
            b'u',
            HEX[(unit >> 12) as usize & 0xf],
            HEX[(unit >> 8) as usize & 0xf],
            HEX[(unit >> 4) as usize & 0xf],
            HEX[unit as usize & 0xf],
        ]);
    }
}

/// Printable ASCII that `json.dumps` copies as it is.
fn is_plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Writes a header object field by field, putting the fields the codec owns
/// (`total_size`, and the checksum digest if any) where `d[key] = value` would:
/// in place of an existing key, otherwise appended at the end.
pub struct HeaderWriter {
    w: JsonWriter,
    first: bool,
    owned: Vec<(&'static str, String, bool)>,
}

/// What the caller does with the value of a key it just passed to [`HeaderWriter::key`].
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// Write the value next (with the writer from [`HeaderWriter::writer`]).
    WriteValue,
    /// The codec wrote its own value for this key: skip the caller's.
    Replaced,
}

impl HeaderWriter {
    /// `owned` lists (key, finished JSON text of the value) in the order a Python
    /// caller would assign them: checksum first, then `total_size`.
    pub fn new(owned: Vec<(&'static str, String)>) -> HeaderWriter {
        let mut w = JsonWriter::with_capacity(64);
        w.begin_object();
        HeaderWriter {
            w,
            first: true,
            owned: owned.into_iter().map(|(k, v)| (k, v, false)).collect(),
        }
    }

    pub fn key(&mut self, key: &str) -> Entry {
        self.w.key(self.first, key);
        self.first = false;
        if let Some(slot) = self.owned.iter_mut().find(|(k, _, _)| *k == key) {
            self.w.raw_number(&slot.1);
            slot.2 = true;
            return Entry::Replaced;
        }
        Entry::WriteValue
    }

    pub fn writer(&mut self) -> &mut JsonWriter {
        &mut self.w
    }

    pub fn finish(mut self) -> Vec<u8> {
        for (key, value, written) in std::mem::take(&mut self.owned) {
            if !written {
                self.w.key(self.first, key);
                self.first = false;
                self.w.raw_number(&value);
            }
        }
        self.w.end_object();
        self.w.into_bytes()
    }
}

/// JSON text of a string value, for [`HeaderWriter::new`]'s owned fields.
pub fn string_literal(s: &str) -> String {
    let mut w = JsonWriter::default();
    w.string(s);
    String::from_utf8(w.into_bytes()).expect("the writer emits ASCII")
}

/// Parses a header and checks it: a JSON object whose `total_size` is a
/// non-negative integer. Returns the object and `total_size`.
pub fn parse_header(bytes: &[u8]) -> Result<(Map<String, Value>, u64), FrameError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        FrameError::header(format!(
            "frame header is not valid JSON ({e}); header bytes: {}",
            preview(bytes)
        ))
    })?;
    let map = match value {
        Value::Object(map) => map,
        other => {
            return Err(FrameError::header(format!(
                "frame header must be a JSON object, got {}: {}",
                kind(&other),
                preview(bytes)
            )))
        }
    };
    let total = match map.get(TOTAL_SIZE) {
        None => {
            return Err(FrameError::header(format!(
                "frame header has no \"{TOTAL_SIZE}\" field: {}",
                preview(bytes)
            )))
        }
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
        Some(Value::Number(n)) if is_integer_text(n.as_str()) => {
            return Err(FrameError::header(format!(
                "\"{TOTAL_SIZE}\" must be a non-negative integer that fits in 64 bits, got {n}"
            )))
        }
        Some(other) => {
            return Err(FrameError::header(format!(
                "\"{TOTAL_SIZE}\" must be a non-negative integer, got {} {other}",
                kind(other)
            )))
        }
    };
    Ok((map, total))
}

/// True for JSON number text with no fraction or exponent (Python reads it as an int).
pub fn is_integer_text(text: &str) -> bool {
    !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if is_integer_text(n.as_str()) => "the integer",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let shown = super::error::escape_bytes(&bytes[..bytes.len().min(MAX)]);
    if bytes.len() > MAX {
        format!("{shown}... ({} bytes)", bytes.len())
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        string_literal(text)
    }

    #[test]
    fn strings_escape_like_python_json_dumps() {
        // Expected values are what CPython's json.dumps prints.
        assert_eq!(s("abc"), r#""abc""#);
        assert_eq!(s("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(s("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(s("\u{0}\u{1f}\u{7f}"), r#""\u0000\u001f\u007f""#);
        assert_eq!(s("é中"), r#""\u00e9\u4e2d""#);
        assert_eq!(s("😀"), r#""\ud83d\ude00""#);
        assert_eq!(s("x\"é\ny"), r#""x\"\u00e9\ny""#);
        assert_eq!(s("é\"\n"), r#""\u00e9\"\n""#);
        assert_eq!(s(""), r#""""#);
    }

    #[test]
    fn header_writer_appends_owned_fields_last() {
        let mut h = HeaderWriter::new(vec![(TOTAL_SIZE, "5".into())]);
        assert_eq!(h.key("file_name"), Entry::WriteValue);
        h.writer().string("a.txt");
        assert_eq!(h.finish(), br#"{"file_name": "a.txt", "total_size": 5}"#);
    }

    #[test]
    fn header_writer_keeps_existing_key_in_place() {
        let mut h = HeaderWriter::new(vec![("md5", s("ab")), (TOTAL_SIZE, "5".into())]);
        assert_eq!(h.key(TOTAL_SIZE), Entry::Replaced);
        assert_eq!(h.key("x"), Entry::WriteValue);
        h.writer().null();
        assert_eq!(h.finish(), br#"{"total_size": 5, "x": null, "md5": "ab"}"#);
    }

    #[test]
    fn empty_header_is_just_total_size() {
        let h = HeaderWriter::new(vec![(TOTAL_SIZE, "0".into())]);
        assert_eq!(h.finish(), br#"{"total_size": 0}"#);
    }

    #[test]
    fn parse_header_accepts_object_with_total_size() {
        let (map, total) = parse_header(br#"{"a": [1, 2.5], "total_size": 7}"#).unwrap();
        assert_eq!(total, 7);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "total_size"]);
    }

    #[test]
    fn parse_header_rejects_bad_headers() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"\"x\"",
            b"1",
            b"{}",
            br#"{"total_size": -1}"#,
            br#"{"total_size": 1.5}"#,
            br#"{"total_size": 5.0}"#,
            br#"{"total_size": 1e3}"#,
            br#"{"total_size": "5"}"#,
            br#"{"total_size": true}"#,
            br#"{"total_size": 100000000000000000000000}"#,
            b"",
        ] {
            match parse_header(bad) {
                Err(FrameError::Header(_)) => {}
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }

    #[test]
    fn header_error_names_what_came() {
        let err = parse_header(br#"{"total_size": "5"}"#).unwrap_err().to_string();
        assert!(err.contains("non-negative integer") && err.contains("\"5\""), "{err}");
    }
}
