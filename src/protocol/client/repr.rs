//! Python's `repr()` of JSON values and frames, for the messages the client
//! session writes: the Python clients' messages quote a header with `{h!r}`
//! (a dict as `json.loads` made it) and a frame with `{frame!r}`, and the
//! session says the same words.

use std::borrow::Cow;

use jiter::JsonValue;

/// A parsed header: its members in order, as `json.loads` keeps them (a key
/// given twice keeps its first place and its last value).
pub(super) type Members<'a> = Vec<(Cow<'a, str>, JsonValue<'a>)>;

/// Parses a header's JSON text (the codec has checked that it is an object);
/// `None` if it is not one after all.
pub(super) fn parse_object(bytes: &[u8]) -> Option<Members<'_>> {
    let JsonValue::Object(members) = JsonValue::parse(bytes, true).ok()? else { return None };
    Some(dedupe(&members))
}

/// Members as `json.loads` keeps them: a key given twice keeps its first
/// place and its last value.
fn dedupe<'a>(members: &[(Cow<'a, str>, JsonValue<'a>)]) -> Members<'a> {
    let mut out: Members<'a> = Vec::with_capacity(members.len());
    for (key, value) in members {
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => out.push((key.clone(), value.clone())),
        }
    }
    out
}

/// The value of `key` in `members`.
pub(super) fn get<'m, 'a>(members: &'m Members<'a>, key: &str) -> Option<&'m JsonValue<'a>> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// `repr(s)` of a Python `str`.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character, for the characters headers
/// hold: control characters, separators other than the space, format
/// characters and surrogates are not printable.
fn printable(c: char) -> bool {
    let n = c as u32;
    !(n < 0x20
        || (0x7f..=0xa0).contains(&n)
        || n == 0xad
        || (0x2000..=0x200f).contains(&n)
        || (0x2028..=0x202f).contains(&n)
        || (0x205f..=0x206f).contains(&n)
        || n == 0x3000
        || n == 0xfeff
        || (0xd800..=0xdfff).contains(&n)
        || (0xe000..=0xf8ff).contains(&n)
        || (0xfff9..=0xfffb).contains(&n))
}

/// `repr(b)` of a Python `bytes`.
pub fn bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') { b'"' } else { b'\'' };
    let mut out = String::with_capacity(b.len() + 3);
    out.push('b');
    out.push(quote as char);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push(quote as char);
    out
}

/// `repr(f)` of a Python `float`: the shortest text that reads back as the
/// same number, in exponent form below 1e-4 and from 1e16 on.
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{f:e}"); // shortest digits: "1.5e-7", "1e16"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    if (-4..16).contains(&exp) {
        let text = format!("{f:?}"); // shortest digits, positional: "0.0001", "2.0"
        if text.contains('e') {
            // Debug prints exponents for very small or large values; spell it out.
            let digits = mantissa.replace(['.', '-'], "");
            let sign = if f < 0.0 { "-" } else { "" };
            return if exp < 0 {
                format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
            } else {
                let whole = exp as usize + 1;
                if digits.len() > whole {
                    format!("{sign}{}.{}", &digits[..whole], &digits[whole..])
                } else {
                    format!("{sign}{digits}{}.0", "0".repeat(whole - digits.len()))
                }
            };
        }
        return text;
    }
    format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// `repr(v)` of the Python value `json.loads` makes of a JSON value.
pub fn value_repr(v: &JsonValue<'_>) -> String {
    match v {
        JsonValue::Null => "None".into(),
        JsonValue::Bool(true) => "True".into(),
        JsonValue::Bool(false) => "False".into(),
        JsonValue::Int(i) => i.to_string(),
        JsonValue::BigInt(i) => i.to_string(),
        JsonValue::Float(f) => float_repr(*f),
        JsonValue::Str(s) => str_repr(s),
        JsonValue::Array(items) => {
            let items: Vec<String> = items.iter().map(value_repr).collect();
            format!("[{}]", items.join(", "))
        }
        JsonValue::Object(members) => members_repr(&dedupe(members)),
    }
}

/// `str(v)` of that Python value: a string as it is, anything else its repr.
pub fn value_str(v: &JsonValue<'_>) -> String {
    match v {
        JsonValue::Str(s) => s.to_string(),
        v => value_repr(v),
    }
}

/// `repr()` of a dict of these members.
pub(super) fn members_repr(members: &Members<'_>) -> String {
    let items: Vec<String> = members.iter().map(|(k, v)| format!("{}: {}", str_repr(k), value_repr(v))).collect();
    format!("{{{}}}", items.join(", "))
}

/// `repr()` of the dict a header's JSON text stands for (`{}` for no header).
pub fn header_repr(header: Option<&[u8]>) -> String {
    match header.map(|h| (h, parse_object(h))) {
        None => "{}".into(),
        Some((_, Some(members))) => members_repr(&members),
        Some((h, None)) => String::from_utf8_lossy(h).into_owned(),
    }
}

/// `repr()` of an `rframe.Frame`: its header, and its body's first 64 bytes.
pub fn frame_repr(header: Option<&[u8]>, body: &[u8]) -> String {
    const SHOWN: usize = 64;
    let body = if body.len() > SHOWN {
        format!("{}... ({} bytes)", bytes_repr(&body[..SHOWN]), body.len())
    } else {
        bytes_repr(body)
    };
    format!("Frame(header={}, body={body})", header_repr(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_python_dicts() {
        let h = br#"{"op": "x", "n": 3, "f": 2.0, "t": true, "z": null, "l": [1, "a'"], "op": "y", "total_size": 0}"#;
        assert_eq!(
            header_repr(Some(h)),
            r#"{'op': 'y', 'n': 3, 'f': 2.0, 't': True, 'z': None, 'l': [1, "a'"], 'total_size': 0}"#
        );
        assert_eq!(header_repr(None), "{}");
    }

    #[test]
    fn strings_and_bytes_quote_as_python_does() {
        assert_eq!(str_repr("it's"), r#""it's""#);
        assert_eq!(str_repr("a'\"b"), r#"'a\'"b'"#);
        assert_eq!(str_repr("\u{1}\n中\u{a0}"), r"'\x01\n中\xa0'");
        assert_eq!(bytes_repr(b"a'b\x00"), r#"b"a'b\x00""#);
        assert_eq!(
            frame_repr(None, &[b'x'; 65]),
            format!("Frame(header={{}}, body=b'{}'... (65 bytes))", "x".repeat(64))
        );
    }

    #[test]
    fn floats_print_as_python_does() {
        for (f, text) in [
            (2.0, "2.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (123456789012345.6, "123456789012345.6"),
            (-2.5, "-2.5"),
            (1e15, "1000000000000000.0"),
        ] {
            assert_eq!(float_repr(f), text, "{f}");
        }
    }
}
