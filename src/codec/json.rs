//! JSON headers written exactly as Python's `json.dumps(obj)` writes them with its
//! default settings (`ensure_ascii=True`, separators `", "` and `": "`), and read
//! back with the checks a frame header needs.
//!
//! The writer knows JSON syntax; what a value *is* (a Python int, a float's repr)
//! is decided by the caller, which hands numbers over as finished text.

use jiter::{Jiter, JiterError, Peek};

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

    /// Like [`JsonWriter::key`] for a key already quoted and escaped by the caller.
    pub fn quoted_key(&mut self, first: bool, quoted: &str) {
        if !first {
            self.out.extend_from_slice(b", ");
        }
        self.out.extend_from_slice(quoted.as_bytes());
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

    /// Decimal digits, as `{n}` writes them but without `core::fmt` (two
    /// numbers per frame, `total_size` and often a counter: it shows).
    pub fn u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[i..]);
    }

    pub fn i64(&mut self, n: i64) {
        if n < 0 {
            self.out.push(b'-');
        }
        self.u64(n.unsigned_abs());
    }

    /// A string with `ensure_ascii` escaping: `"` and `\`, the short escapes
    /// `\b \f \n \r \t`, and `\uXXXX` (lower-case hex, surrogate pairs above the
    /// BMP) for everything outside printable ASCII, DEL included.
    pub fn string(&mut self, s: &str) {
        self.out.push(b'"');
        let bytes = s.as_bytes();
        // Header strings are mostly plain ASCII: copy that run in one go.
        let plain = plain_prefix(bytes);
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

/// True if `text` is printable ASCII with no `"` or `\\`: JSON string text
/// that reads as itself.
pub fn is_plain_text(text: &str) -> bool {
    plain_prefix(text.as_bytes()) == text.len()
}

/// How many bytes at the start of `bytes` are plain (see [`is_plain`]),
/// eight at a time: headers are mostly such text.
fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte, the high bit of each term is set where the byte is: below
    // 0x20; 0x7f or above; '"'; '\\'. A borrow or carry only runs upward
    // from a byte that is itself set, so the lowest set bit is exact.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let high = (w.wrapping_add(ONES) | w) & HIGH;
        let special = zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')));
        let stop = control | high | special;
        if stop != 0 {
            return i + (stop.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..].iter().position(|&b| !is_plain(b)).unwrap_or(bytes.len() - i)
}

/// Writes a header object field by field, putting the fields the codec owns
/// where `d[key] = value` would: in place of an existing key, otherwise
/// appended at the end, the digest (if any) before `total_size`.
pub struct HeaderWriter {
    w: JsonWriter,
    first: bool,
    total_size: (u64, bool),
    digest: Option<(&'static str, String, bool)>,
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
    /// `digest` is the checksum field's name and hex digest, if the codec has one.
    pub fn new(total_size: u64, digest: Option<(&'static str, String)>) -> HeaderWriter {
        let mut w = JsonWriter::with_capacity(128);
        w.begin_object();
        HeaderWriter { w, first: true, total_size: (total_size, false), digest: digest.map(|(k, v)| (k, v, false)) }
    }

    pub fn key(&mut self, key: &str) -> Entry {
        self.w.key(self.first, key);
        self.first = false;
        if key == TOTAL_SIZE {
            self.w.u64(self.total_size.0);
            self.total_size.1 = true;
            return Entry::Replaced;
        }
        if let Some((name, hex, written)) = &mut self.digest {
            if key == *name {
                self.w.string(hex);
                *written = true;
                return Entry::Replaced;
            }
        }
        Entry::WriteValue
    }

    /// A key already quoted and escaped by the caller; never one the codec owns
    /// (those are plain ASCII).
    pub fn quoted_key(&mut self, quoted: &str) -> Entry {
        self.w.quoted_key(self.first, quoted);
        self.first = false;
        Entry::WriteValue
    }

    pub fn writer(&mut self) -> &mut JsonWriter {
        &mut self.w
    }

    pub fn finish(mut self) -> Vec<u8> {
        if let Some((name, hex, false)) = &self.digest {
            self.w.key(self.first, name);
            self.w.string(hex);
            self.first = false;
        }
        if !self.total_size.1 {
            self.w.key(self.first, TOTAL_SIZE);
            self.w.u64(self.total_size.0);
        }
        self.w.end_object();
        self.w.into_bytes()
    }
}

#[cfg(test)]
/// JSON text of a string value.
pub fn string_literal(s: &str) -> String {
    let mut w = JsonWriter::default();
    w.string(s);
    String::from_utf8(w.into_bytes()).expect("the writer emits ASCII")
}

/// What the codec needs to know from a header; the rest is the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    pub total_size: u64,
    /// The value of the checksum field asked for, as text (`None` if absent).
    pub digest: Option<String>,
}

/// Checks a header without building it: a JSON object whose `total_size` is a
/// non-negative integer. Also picks out the field named `digest_key`, if given.
/// As with `json.loads`, a repeated key counts with its last value.
pub fn parse_header(bytes: &[u8], digest_key: Option<&str>) -> Result<HeaderFacts, FrameError> {
    match scan_header(bytes, digest_key) {
        // Python writes lone surrogates (file names from os.listdir, say) as
        // `\udcff`, which strict parsers refuse. They cannot matter to the codec's
        // fields, so look again with them masked.
        Err(e) => match mask_lone_surrogates(bytes) {
            Some(masked) => scan_header(&masked, digest_key).map_err(|_| e),
            None => Err(e),
        },
        ok => ok,
    }
}

fn scan_header(bytes: &[u8], digest_key: Option<&str>) -> Result<HeaderFacts, FrameError> {
    let bad_json = |e: JiterError| {
        FrameError::header(format!("frame header is not valid JSON ({e}); header bytes: {}", preview(bytes)))
    };
    let mut j = Jiter::new(bytes).with_allow_inf_nan();
    let peek = j.peek().map_err(bad_json)?;
    if peek != Peek::Object {
        return Err(FrameError::header(format!(
            "frame header must be a JSON object, got {}: {}",
            kind(peek),
            preview(bytes)
        )));
    }
    let mut total: Option<Result<u64, String>> = None;
    let mut digest = None;
    // Classify each key at once, so no key is copied and the parser stays free.
    #[derive(PartialEq)]
    enum Key {
        TotalSize,
        Digest,
        Other,
    }
    let classify = |k: &str| match k {
        TOTAL_SIZE => Key::TotalSize,
        k if Some(k) == digest_key => Key::Digest,
        _ => Key::Other,
    };
    let mut key = j.known_object().map_err(bad_json)?.map(classify);
    while let Some(k) = key {
        if k == Key::TotalSize {
            let peek = j.peek().map_err(bad_json)?;
            total = Some(if peek.is_num() {
                let text = std::str::from_utf8(j.known_number_bytes(peek).map_err(bad_json)?).unwrap_or("?").to_owned();
                total_size_value(&text)
            } else {
                let start = j.current_index();
                j.known_skip(peek).map_err(bad_json)?;
                Err(format!("{} {}", kind(peek), String::from_utf8_lossy(j.slice_to_current(start)).trim()))
            });
        } else if k == Key::Digest {
            let peek = j.peek().map_err(bad_json)?;
            let start = j.current_index();
            digest = Some(if peek == Peek::String {
                j.known_str().map_err(bad_json)?.to_owned()
            } else {
                j.known_skip(peek).map_err(bad_json)?;
                String::from_utf8_lossy(j.slice_to_current(start)).trim().to_owned()
            });
        } else {
            j.next_skip().map_err(bad_json)?;
        }
        key = j.next_key().map_err(bad_json)?.map(classify);
    }
    j.finish().map_err(bad_json)?;
    match total {
        None => Err(FrameError::header(format!("frame header has no \"{TOTAL_SIZE}\" field: {}", preview(bytes)))),
        Some(Err(got)) => {
            Err(FrameError::header(format!("\"{TOTAL_SIZE}\" must be a non-negative integer, got {got}")))
        }
        Some(Ok(total_size)) => Ok(HeaderFacts { total_size, digest }),
    }
}

fn total_size_value(text: &str) -> Result<u64, String> {
    if !is_integer_text(text) {
        return Err(format!("the number {text}"));
    }
    if text.starts_with('-') {
        return Err(format!("the integer {text}"));
    }
    // Beyond 64 bits is beyond any limit: saturate, and the limit check refuses it.
    Ok(text.parse::<u64>().unwrap_or(u64::MAX))
}

/// Replaces `\uXXXX` escapes of lone UTF-16 surrogates with `\ufffd`; `None`
/// if there are none. Escaped backslashes and valid surrogate pairs are kept.
pub fn mask_lone_surrogates(bytes: &[u8]) -> Option<Vec<u8>> {
    fn unit_at(bytes: &[u8], i: usize) -> Option<u16> {
        if bytes.get(i) != Some(&b'\\') || bytes.get(i + 1) != Some(&b'u') {
            return None;
        }
        let hex = std::str::from_utf8(bytes.get(i + 2..i + 6)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    }
    let is_high = |u: u16| (0xd800..0xdc00).contains(&u);
    let is_low = |u: u16| (0xdc00..0xe000).contains(&u);
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            if let Some(o) = out.as_mut() {
                o.push(bytes[i]);
            }
            i += 1;
            continue;
        }
        let step = match unit_at(bytes, i) {
            Some(u) if is_high(u) && unit_at(bytes, i + 6).is_some_and(is_low) => 12,
            Some(u) if is_high(u) || is_low(u) => {
                let o = out.get_or_insert_with(|| bytes[..i].to_vec());
                o.extend_from_slice(b"\\ufffd");
                i += 6;
                continue;
            }
            Some(_) => 6,
            None => 2,
        };
        let end = (i + step).min(bytes.len());
        if let Some(o) = out.as_mut() {
            o.extend_from_slice(&bytes[i..end]);
        }
        i = end;
    }
    out
}

/// A value of a flat header, as [`scan_flat`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Null,
}

/// A key of a flat header, as [`scan_flat`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatKey<'a> {
    /// The text the caller expected at this position.
    Known,
    Text(&'a str),
}

/// The common header, fast: a flat object whose keys and string values are
/// printable ASCII without escapes, and whose numbers are ints of up to 18
/// digits. Calls `pair` for each member in order and returns `Some(())`; returns
/// `None` as soon as anything else appears (the caller then uses a full JSON
/// parser, which also reports errors). What it accepts, it reads exactly as
/// `json.loads` does.
///
/// `known(position)` may give the [`key_token`] of the key the caller expects
/// at that position (a stream's headers repeat their keys); a member that
/// starts with that token is reported as [`FlatKey::Known`] after one
/// comparison instead of a scan. The same key with white space before its
/// colon comes as [`FlatKey::Text`].
pub fn scan_flat<'a, 'k>(
    bytes: &'a [u8],
    known: impl Fn(usize) -> Option<&'k [u8]>,
    mut pair: impl FnMut(FlatKey<'a>, FlatValue<'a>),
) -> Option<()> {
    // `rest` is what is left to read: every step matches its front and moves
    // past it, so no step can read out of bounds or compute an index.
    let mut rest = bytes;
    skip_ws(&mut rest);
    let [b'{', tail @ ..] = rest else { return None };
    rest = tail;
    skip_ws(&mut rest);
    if let [b'}', tail @ ..] = rest {
        rest = tail;
    } else {
        let mut position = 0;
        loop {
            let key = match known(position) {
                Some(token) if rest.len() >= token.len() && same(&rest[..token.len()], token) => {
                    // The colon is in the token; json.dumps puts one space after it.
                    rest = match &rest[token.len()..] {
                        [b' ', tail @ ..] => tail,
                        after => after,
                    };
                    if let [b' ' | b'\t' | b'\n' | b'\r', ..] = rest {
                        skip_ws(&mut rest);
                    }
                    FlatKey::Known
                }
                _ => {
                    let key = plain_string(&mut rest)?;
                    // json.dumps separates with ": "; anything else the long way.
                    if let [b':', b' ', tail @ ..] = rest {
                        rest = tail;
                    } else {
                        skip_ws(&mut rest);
                        let [b':', tail @ ..] = rest else { return None };
                        rest = tail;
                        skip_ws(&mut rest);
                    }
                    FlatKey::Text(key)
                }
            };
            position += 1;
            let value = match *rest {
                [b'"', ..] => FlatValue::Str(plain_string(&mut rest)?),
                [b't', b'r', b'u', b'e', ref tail @ ..] => {
                    rest = tail;
                    FlatValue::Bool(true)
                }
                [b'f', b'a', b'l', b's', b'e', ref tail @ ..] => {
                    rest = tail;
                    FlatValue::Bool(false)
                }
                [b'n', b'u', b'l', b'l', ref tail @ ..] => {
                    rest = tail;
                    FlatValue::Null
                }
                [first @ (b'-' | b'0'..=b'9'), ..] => {
                    let negative = first == b'-';
                    let unsigned = &rest[usize::from(negative)..];
                    let (n, count) = leading_digits(unsigned);
                    // JSON has no leading zeros; fractions and exponents are
                    // floats. At most 18 digits cannot overflow an i64.
                    if count == 0 || count > 18 || (count > 1 && unsigned[0] == b'0') {
                        return None;
                    }
                    rest = &unsigned[count..];
                    if let [b'.' | b'e' | b'E', ..] = rest {
                        return None;
                    }
                    let n = n as i64;
                    FlatValue::Int(if negative { -n } else { n })
                }
                _ => return None,
            };
            pair(key, value);
            if let [b',', b' ', tail @ ..] = rest {
                rest = tail;
                continue;
            }
            skip_ws(&mut rest);
            match rest {
                [b',', tail @ ..] => {
                    rest = tail;
                    skip_ws(&mut rest);
                }
                [b'}', tail @ ..] => {
                    rest = tail;
                    break;
                }
                _ => return None,
            }
        }
    }
    skip_ws(&mut rest);
    rest.is_empty().then_some(())
}

/// What [`scan_flat`] matches for a known key: the key in quotes and the
/// colon (`"key":`), whatever white space follows, so compact JSON (orjson's,
/// serde_json's, JavaScript's) is matched as well as json.dumps's. Only plain
/// keys (see [`is_plain_text`]) have one: any other key's text differs from
/// its JSON form.
pub fn key_token(key: &str) -> Option<Box<[u8]>> {
    if !is_plain_text(key) {
        return None;
    }
    Some([b"\"", key.as_bytes(), b"\":"].concat().into_boxed_slice())
}

fn skip_ws(rest: &mut &[u8]) {
    while let [b' ' | b'\t' | b'\n' | b'\r', tail @ ..] = *rest {
        *rest = tail;
    }
}

/// A JSON string at the front of `rest` whose text is plain (see
/// [`is_plain`]), which is then its own value; `None` for any other string.
fn plain_string<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let [b'"', tail @ ..] = *rest else { return None };
    let (text, after) = tail.split_at(plain_prefix(tail));
    // Not a quote: an escape, a control or non-ASCII character, or the end.
    let [b'"', after @ ..] = after else { return None };
    *rest = after;
    debug_assert!(text.is_ascii());
    // SAFETY: every byte is printable ASCII (checked by `plain_prefix`),
    // which is valid UTF-8; this is the hot path of every header.
    Some(unsafe { std::str::from_utf8_unchecked(text) })
}

/// `a == b` for slices of equal length, inline: a call to memcmp costs more
/// than these short keys.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    debug_assert_eq!(n, b.len());
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"));
    if n >= 8 {
        // Whole words, the last one overlapping the one before.
        let mut at = 0;
        while at + 8 < n {
            if word(a, at) != word(b, at) {
                return false;
            }
            at += 8;
        }
        word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("four bytes"));
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else {
        a.iter().zip(b).all(|(x, y)| x == y)
    }
}

/// The ASCII digits at the start of `bytes` as a number, and how many there
/// are: exact up to 18 digits; past that the count only says "too many".
fn leading_digits(bytes: &[u8]) -> (u64, usize) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const POW10: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];
    let (mut n, mut count) = (0u64, 0usize);
    while let Some(chunk) = bytes.get(count..count + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let values = w.wrapping_sub(ONES * u64::from(b'0'));
        // The high bit is set in each byte that is not a digit: below '0' the
        // subtraction borrows into it, above '9' adding 0x76 carries into it.
        // Borrows and carries only come from such a byte, so the lowest set
        // bit is exact.
        let stop = (values | values.wrapping_add(ONES * 0x76)) & HIGH;
        let k = (stop.trailing_zeros() / 8) as usize; // 8: all are digits
        if k == 0 {
            return (n, count);
        }
        // The k digits to the top bytes, then combined in pairs, fours, eight.
        let x = values << (8 * (8 - k));
        let x = (x.wrapping_mul(10).wrapping_add(x >> 8)) & 0x00ff_00ff_00ff_00ff;
        let x = (x.wrapping_mul(100).wrapping_add(x >> 16)) & 0x0000_ffff_0000_ffff;
        let x = (x.wrapping_mul(10_000).wrapping_add(x >> 32)) & 0xffff_ffff;
        n = n.wrapping_mul(POW10[k]).wrapping_add(x);
        count += k;
        if k < 8 || count > 18 {
            return (n, count);
        }
    }
    // Fewer than eight bytes left: one at a time.
    while let Some(&b) = bytes.get(count) {
        let d = b.wrapping_sub(b'0');
        if d > 9 || count > 18 {
            break;
        }
        n = n.wrapping_mul(10).wrapping_add(u64::from(d));
        count += 1;
    }
    (n, count)
}

/// True for JSON number text with no fraction or exponent (Python reads it as an int).
pub fn is_integer_text(text: &str) -> bool {
    !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) && !text.ends_with("Infinity") && text != "NaN"
}

fn kind(peek: Peek) -> &'static str {
    match peek {
        Peek::Null => "null",
        Peek::True | Peek::False => "a boolean",
        Peek::String => "the string",
        Peek::Array => "an array",
        Peek::Object => "an object",
        _ => "the number",
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
        let mut h = HeaderWriter::new(5, None);
        assert_eq!(h.key("file_name"), Entry::WriteValue);
        h.writer().string("a.txt");
        assert_eq!(h.finish(), br#"{"file_name": "a.txt", "total_size": 5}"#);
    }

    #[test]
    fn header_writer_keeps_existing_key_in_place() {
        let mut h = HeaderWriter::new(5, Some(("md5", "ab".into())));
        assert_eq!(h.key(TOTAL_SIZE), Entry::Replaced);
        assert_eq!(h.key("x"), Entry::WriteValue);
        h.writer().null();
        assert_eq!(h.finish(), br#"{"total_size": 5, "x": null, "md5": "ab"}"#);
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 12345, -1, -10, i64::MAX, i64::MIN, i64::MIN + 1] {
            let mut w = JsonWriter::default();
            w.i64(n);
            assert_eq!(w.out, n.to_string().into_bytes());
        }
        for n in [0, 7, 10, 1 << 40, u64::MAX] {
            let mut w = JsonWriter::default();
            w.u64(n);
            assert_eq!(w.out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn empty_header_is_just_total_size() {
        let h = HeaderWriter::new(0, None);
        assert_eq!(h.finish(), br#"{"total_size": 0}"#);
    }

    fn flat(bytes: &[u8]) -> Option<Vec<(&str, FlatValue<'_>)>> {
        let mut pairs = vec![];
        scan_flat(
            bytes,
            |_| None,
            |k, v| match k {
                FlatKey::Text(k) => pairs.push((k, v)),
                FlatKey::Known => panic!("no key was known"),
            },
        )?;
        Some(pairs)
    }

    #[test]
    fn plain_prefix_stops_at_the_first_byte_that_needs_care() {
        let naive = |s: &[u8]| s.iter().position(|&b| !is_plain(b)).unwrap_or(s.len());
        for b in 0..=255u8 {
            for len in 0..20 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(plain_prefix(&s), naive(&s), "byte {b:#x} at {at} of {len}");
                    // A second odd byte after the first must not move the answer.
                    if at + 1 < len {
                        s[at + 1] = 0xff;
                        assert_eq!(plain_prefix(&s), naive(&s), "byte {b:#x} at {at} of {len}, 0xff after");
                    }
                }
            }
        }
    }

    #[test]
    fn known_keys_are_matched_whole() {
        let scan = |bytes: &'static [u8], known: &[&str]| {
            let tokens: Vec<_> = known.iter().map(|k| key_token(k).unwrap()).collect();
            let mut keys = vec![];
            scan_flat(bytes, |p| tokens.get(p).map(|t| &t[..]), |k, _| keys.push(k)).map(|()| keys)
        };
        let header = br#"{"ab": 1, "c": "x", "total_size": 2}"#;
        assert_eq!(scan(header, &["ab", "c", "total_size"]).unwrap(), [FlatKey::Known, FlatKey::Known, FlatKey::Known]);
        // A prefix, a longer key, another key: scanned as text.
        assert_eq!(
            scan(header, &["a", "cd", "size"]).unwrap(),
            [FlatKey::Text("ab"), FlatKey::Text("c"), FlatKey::Text("total_size")]
        );
        assert_eq!(scan(br#"{"a": 1, "b": 2}"#, &["a"]).unwrap(), [FlatKey::Known, FlatKey::Text("b")]);
        // Compact JSON, and any white space after the colon: known.
        assert_eq!(scan(br#"{"a":1,"b":  2}"#, &["a", "b"]).unwrap(), [FlatKey::Known, FlatKey::Known]);
        // White space before the colon: read, as text.
        assert_eq!(scan(b"{\"a\" : 1, \"b\"\t:2}", &["a", "b"]).unwrap(), [FlatKey::Text("a"), FlatKey::Text("b")]);
        // A token that runs past the end is no match.
        assert_eq!(
            scan(br#"{"total_size": 1}"#, &["total_size_longer_than_the_header"]),
            Some(vec![FlatKey::Text("total_size")])
        );
        // Keys that need escapes have no token.
        assert!(key_token("a\"b").is_none() && key_token("é").is_none() && key_token("a\nb").is_none());
    }

    #[test]
    fn same_compares_every_length() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same(&a, &b), "length {n}, differing at {at}");
            }
        }
    }

    #[test]
    fn leading_digits_reads_every_count_and_stops_at_any_other_byte() {
        let naive = |s: &[u8]| {
            let count = s.iter().take_while(|b| b.is_ascii_digit()).count();
            let n = s[..count.min(18)].iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
            (n, count)
        };
        for len in 0..=22 {
            let digits: Vec<u8> = (0..len).map(|i| b"9876543210"[i % 10]).collect();
            for stop in 0..=255u8 {
                for tail in 0..10 {
                    let mut s = digits.clone();
                    s.push(stop);
                    s.extend(std::iter::repeat_n(b'7', tail));
                    let (n, count) = leading_digits(&s);
                    let (want_n, want_count) = naive(&s);
                    if want_count <= 18 {
                        assert_eq!((n, count), (want_n, want_count), "{}", String::from_utf8_lossy(&s));
                    } else {
                        assert!(count > 18, "{}", String::from_utf8_lossy(&s));
                    }
                }
            }
        }
    }

    #[test]
    fn flat_headers_are_scanned_as_json_loads_reads_them() {
        assert_eq!(
            flat(br#" {"a": "x y", "n": -12, "z": 0, "t": true, "f": false, "u": null, "total_size": 5} "#).unwrap(),
            [
                ("a", FlatValue::Str("x y")),
                ("n", FlatValue::Int(-12)),
                ("z", FlatValue::Int(0)),
                ("t", FlatValue::Bool(true)),
                ("f", FlatValue::Bool(false)),
                ("u", FlatValue::Null),
                ("total_size", FlatValue::Int(5)),
            ]
        );
        assert_eq!(flat(b"{}").unwrap(), []);
        assert_eq!(
            flat(br#"{"big": 999999999999999999, "neg0": -0}"#).unwrap(),
            [("big", FlatValue::Int(999_999_999_999_999_999)), ("neg0", FlatValue::Int(0))]
        );
        assert_eq!(flat(b"{\n\t}").unwrap(), []);
    }

    #[test]
    fn anything_else_leaves_the_fast_path() {
        for other in [
            &br#"{"a": "\n"}"#[..],
            br#"{"a": "\u00e9"}"#,
            "{\"a\": \"é\"}".as_bytes(),
            br#"{"a": 1.5}"#,
            br#"{"a": 1e3}"#,
            br#"{"a": 01}"#,
            br#"{"a": -}"#,
            br#"{"a": 1234567890123456789}"#,
            br#"{"a": [1]}"#,
            br#"{"a": {}}"#,
            br#"{"a": NaN}"#,
            br#"{"a": tru}"#,
            br#"{"a": 1,}"#,
            br#"{"a" 1}"#,
            br#"{"a": 1} x"#,
            br#"{"a": 1"#,
            b"[]",
            b"",
        ] {
            assert!(flat(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn parse_header_accepts_object_with_total_size() {
        let facts = parse_header(br#"{"a": [1, 2.5, {"b": NaN}], "total_size": 7}"#, None).unwrap();
        assert_eq!(facts, HeaderFacts { total_size: 7, digest: None });
    }

    #[test]
    fn lone_surrogates_as_python_writes_them_are_accepted() {
        let facts = parse_header(br#"{"file_name": "\udcff", "a": ["\ud800x"], "total_size": 1}"#, None).unwrap();
        assert_eq!(facts.total_size, 1);
    }

    #[test]
    fn masking_keeps_pairs_and_escaped_backslashes() {
        assert_eq!(mask_lone_surrogates(br#""\ud83d\ude00""#), None);
        assert_eq!(mask_lone_surrogates(br#""\\ud800""#), None);
        assert_eq!(mask_lone_surrogates(br#""a\udc00b\ud800""#).unwrap(), br#""a\ufffdb\ufffd""#);
    }

    #[test]
    fn last_of_repeated_keys_counts_as_in_json_loads() {
        let facts =
            parse_header(br#"{"total_size": -1, "md5": 1, "total_size": 2, "md5": "ab"}"#, Some("md5")).unwrap();
        assert_eq!(facts, HeaderFacts { total_size: 2, digest: Some("ab".into()) });
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
            b"",
            br#"{"total_size": 1} x"#,
            br#"{"total_size": 1, "a": [1,}"#,
        ] {
            match parse_header(bad, None) {
                Err(FrameError::Header(_)) => {}
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }

    #[test]
    fn header_error_names_what_came() {
        let err = parse_header(br#"{"total_size": "5"}"#, None).unwrap_err().to_string();
        assert!(err.contains("non-negative integer") && err.contains("\"5\""), "{err}");
    }
}
