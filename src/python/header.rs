//! Conversion between Python header dicts and JSON header bytes.
//!
//! Writing follows `json.dumps(d)` with default settings, decision for
//! decision (the C encoder's order of type checks, its key conversions, its
//! messages), so that rframe's bytes equal the course code's bytes.

use std::borrow::Cow;

use jiter::{Jiter, NumberAny, NumberInt, Peek};
use pyo3::exceptions::{PyRecursionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use bytes::{Buf, BytesMut};

use crate::codec::json::{key_token, scan_flat, Entry, FlatKey, FlatValue, JsonWriter, TOTAL_SIZE};
use crate::codec::{escape_bytes, Codec, FrameError, FrameModel, HeaderFacts};

use super::errors::frame_error;

/// Nesting deeper than this is refused, as CPython's recursion limit refuses it.
const MAX_DEPTH: usize = 1000;

/// The header bytes for `header` updated with `fields`, plus the fields the
/// codec owns (`total_size`, the checksum digest).
pub fn encode_header(
    codec: &Codec,
    header: Option<&Bound<'_, PyAny>>,
    fields: Option<&Bound<'_, PyDict>>,
    body: &[u8],
) -> PyResult<Vec<u8>> {
    let merged;
    let dict: Option<&Bound<'_, PyDict>> = match (header, fields.filter(|f| !f.is_empty())) {
        (None, None) => None,
        (Some(h), None) => match h.cast::<PyDict>() {
            Ok(d) => Some(d),
            Err(_) => {
                merged = as_dict(h)?;
                Some(&merged)
            }
        },
        // `fields` is the dict pyo3 built for this call's keywords: read as it is.
        (None, Some(f)) => Some(f),
        (Some(h), Some(f)) => {
            merged = as_dict(h)?.copy()?;
            merged.update(f.as_mapping())?;
            Some(&merged)
        }
    };
    let mut out = codec.header_writer(body);
    if let Some(dict) = dict {
        let mut stack = Vec::new();
        for item in items(dict)? {
            let (key, value) = item?;
            let entry = match dict_key(&key)? {
                Key::Text(text) => out.key(&text),
                Key::Quoted(quoted) => out.quoted_key(&quoted),
            };
            if entry == Entry::WriteValue {
                write_value(out.writer(), &value, &mut stack)?;
            }
        }
    }
    Ok(out.finish())
}

type Items<'py> = Box<dyn Iterator<Item = PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> + 'py>;

/// A dict's items in the order json.dumps takes them: `PyDict_Next` order for a
/// plain dict, `.items()` for a subclass (an OrderedDict after `move_to_end`).
fn items<'py>(d: &Bound<'py, PyDict>) -> PyResult<Items<'py>> {
    if d.is_exact_instance_of::<PyDict>() {
        return Ok(Box::new(d.clone().into_iter().map(Ok)));
    }
    let items = d.call_method0("items")?.try_iter()?;
    Ok(Box::new(items.map(|item| item?.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>())))
}

/// A header given as any mapping becomes a dict; anything else is a TypeError.
fn as_dict<'py>(header: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    if let Ok(d) = header.cast::<PyDict>() {
        return Ok(d.clone());
    }
    if header.hasattr("keys")? {
        let d = PyDict::new(header.py());
        d.update(&header.cast::<pyo3::types::PyMapping>().map_err(PyErr::from)?.clone())?;
        return Ok(d);
    }
    Err(PyTypeError::new_err(format!("header must be a dict, not {}", header.get_type().name()?)))
}

/// A dict key as json.dumps converts it: text for the writer to escape, or,
/// for a str with lone surrogates (no UTF-8 form), json's own quoted escape.
enum Key<'a> {
    Text(Cow<'a, str>),
    Quoted(String),
}

fn dict_key<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Key<'a>> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(match s.to_str() {
            Ok(text) => Key::Text(Cow::Borrowed(text)),
            Err(_) => Key::Quoted(json_dumps(key)?),
        });
    }
    key_text(key).map(Key::Text)
}

/// A non-str dict key as json.dumps converts it.
fn key_text<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, str>> {
    if key.is_instance_of::<PyFloat>() {
        return float_text(key).map(Cow::Owned);
    }
    if let Ok(b) = key.cast::<PyBool>() {
        return Ok(Cow::Borrowed(if b.is_true() { "true" } else { "false" }));
    }
    if key.is_none() {
        return Ok(Cow::Borrowed("null"));
    }
    if key.is_instance_of::<PyInt>() {
        return int_text(key).map(Cow::Owned);
    }
    Err(PyTypeError::new_err(format!("keys must be str, int, float, bool or None, not {}", key.get_type().name()?)))
}

fn write_value(w: &mut JsonWriter, value: &Bound<'_, PyAny>, stack: &mut Vec<usize>) -> PyResult<()> {
    if let Ok(s) = value.cast::<PyString>() {
        match s.to_str() {
            Ok(text) => w.string(text),
            // A str with lone surrogates has no UTF-8 form; let json escape it.
            Err(_) => w.raw_number(&json_dumps(value)?),
        }
    } else if value.is_none() {
        w.null();
    } else if let Ok(b) = value.cast::<PyBool>() {
        w.bool(b.is_true());
    } else if value.is_instance_of::<PyInt>() {
        match value.extract::<i64>() {
            Ok(n) => w.i64(n),
            Err(_) => w.raw_number(&int_text(value)?),
        }
    } else if value.is_instance_of::<PyFloat>() {
        w.raw_number(&float_text(value)?);
    } else if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        enter(value, stack)?;
        w.begin_array();
        for (i, item) in value.try_iter()?.enumerate() {
            w.item(i == 0);
            write_value(w, &item?, stack)?;
        }
        w.end_array();
        stack.pop();
    } else if let Ok(d) = value.cast::<PyDict>() {
        enter(value, stack)?;
        w.begin_object();
        for (i, item) in items(d)?.enumerate() {
            let (k, v) = item?;
            match dict_key(&k)? {
                Key::Text(text) => w.key(i == 0, &text),
                Key::Quoted(quoted) => w.quoted_key(i == 0, &quoted),
            }
            write_value(w, &v, stack)?;
        }
        w.end_object();
        stack.pop();
    } else {
        return Err(PyTypeError::new_err(format!(
            "Object of type {} is not JSON serializable",
            value.get_type().name()?
        )));
    }
    Ok(())
}

/// Guards against cycles and runaway nesting before descending into a container.
fn enter(container: &Bound<'_, PyAny>, stack: &mut Vec<usize>) -> PyResult<()> {
    let id = container.as_ptr() as usize;
    if stack.contains(&id) {
        return Err(PyValueError::new_err("Circular reference detected"));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(PyRecursionError::new_err("maximum recursion depth exceeded while encoding a JSON object"));
    }
    stack.push(id);
    Ok(())
}

/// `int.__repr__(value)`, which is what json writes for ints and int subclasses.
fn int_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(n) = value.extract::<i64>() {
        return Ok(n.to_string());
    }
    let py = value.py();
    Ok(py.get_type::<PyInt>().call1((value,))?.str()?.to_str()?.to_owned())
}

/// `float.__repr__(value)`; NaN and infinities are not JSON.
fn float_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let f: f64 = value.extract()?;
    let exact = PyFloat::new(value.py(), f);
    let text = exact.repr()?.to_str()?.to_owned();
    if !f.is_finite() {
        return Err(PyValueError::new_err(format!("Out of range float values are not JSON compliant: {text}")));
    }
    Ok(text)
}

fn json_dumps(value: &Bound<'_, PyAny>) -> PyResult<String> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = value.py();
    let dumps = DUMPS.get_or_try_init(py, || py.import("json")?.getattr("dumps").map(Bound::unbind))?;
    dumps.bind(py).call1((value,))?.extract()
}

/// The decoder's frames as Python objects, for one call with the interpreter
/// attached: header dicts built straight from the bytes (one parse per
/// header), reading the codec's facts on the way, and bodies copied once into
/// `bytes`. Anything out of the ordinary (bad JSON, a missing or odd
/// `total_size`, a digest that is not a string) is handed to the core's scan,
/// which decides, so both paths refuse alike.
pub struct PyFrames<'a, 'py> {
    pub py: Python<'py>,
    pub keys: &'a mut KeyCache,
}

/// Frames of one stream repeat their header keys in the same order, so a
/// decoder remembers the key objects by position and reuses them (with their
/// cached hashes) when the same text comes again.
#[derive(Default)]
pub struct KeyCache {
    keys: Vec<KnownKey>,
}

struct KnownKey {
    text: Box<str>,
    obj: Py<PyString>,
    /// What [`scan_flat`] matches to take it as known (see [`key_token`]).
    token: Option<Box<[u8]>>,
    is_total: bool,
}

/// Keys remembered per decoder; headers with more keys build the rest afresh.
const REMEMBERED_KEYS: usize = 32;

impl FrameModel for PyFrames<'_, '_> {
    type Header = Py<PyDict>;
    type Body = Py<PyBytes>;

    fn parse(&mut self, bytes: &[u8], digest_key: Option<&str>) -> Result<(Py<PyDict>, HeaderFacts), FrameError> {
        let py = self.py;
        let built = self.keys.build(py, bytes, digest_key);
        if let Ok((dict, Some(facts))) = built {
            return Ok((dict.unbind(), facts));
        }
        let facts = crate::codec::json::parse_header(bytes, digest_key)?;
        // The core accepts it, so it is JSON the fast path did not take
        // (lone surrogates, say): json.loads gives it Python's meaning.
        let dict = match built {
            Ok((dict, _)) => dict,
            Err(_) => parse_dict(py, bytes)
                .map_err(|_| FrameError::header(format!("frame header could not be read: {}", escape_bytes(bytes))))?,
        };
        Ok((dict.unbind(), facts))
    }

    fn take_body(&mut self, buf: &mut BytesMut, len: usize) -> Py<PyBytes> {
        let body = PyBytes::new(self.py, &buf[..len]).unbind();
        buf.advance(len);
        body
    }
}

impl KeyCache {
    /// The header dict, and the facts if they are plain (an int `total_size`
    /// that fits 64 bits, a str digest).
    fn build<'py>(
        &mut self,
        py: Python<'py>,
        bytes: &[u8],
        digest_key: Option<&str>,
    ) -> Result<(Bound<'py, PyDict>, Option<HeaderFacts>), ()> {
        if let Some(flat) = self.build_flat(py, bytes, digest_key) {
            return Ok(flat);
        }
        let mut j = Jiter::new(bytes).with_allow_inf_nan();
        if j.peek().map_err(drop)? != Peek::Object {
            return Err(());
        }
        let dict = PyDict::new(py);
        let mut total = None;
        let mut digest = None;
        let mut position = 0;
        let mut key = j.known_object().map_err(drop)?.map(|k| self.key(py, position, k));
        while let Some((name, is_total)) = key {
            let peek = j.peek().map_err(drop)?;
            let value = json_value(py, &mut j, peek, 1)?;
            if is_total {
                total = value.is_exact_instance_of::<PyInt>().then(|| value.extract::<u64>().ok()).flatten();
            } else if digest_key.is_some_and(|d| name.to_str().is_ok_and(|n| n == d)) {
                digest = Some(value.cast::<PyString>().ok().and_then(|s| s.to_str().ok().map(str::to_owned)));
            }
            dict.set_item(name, value).map_err(drop)?;
            position += 1;
            key = j.next_key().map_err(drop)?.map(|k| self.key(py, position, k));
        }
        j.finish().map_err(drop)?;
        let facts = plain_facts(total, digest);
        Ok((dict, facts))
    }

    /// The common flat header, without a general JSON parser (see
    /// [`scan_flat`]); `None` if the header is not of that shape.
    fn build_flat<'py>(
        &mut self,
        py: Python<'py>,
        bytes: &[u8],
        digest_key: Option<&str>,
    ) -> Option<(Bound<'py, PyDict>, Option<HeaderFacts>)> {
        let dict = PyDict::new(py);
        let (mut total, mut digest, mut position, mut ok) = (None, None, 0, true);
        let mut fresh: Vec<(usize, &str, Bound<'py, PyString>)> = Vec::new();
        let keys = &self.keys;
        scan_flat(
            bytes,
            |position| keys.get(position).and_then(|k| k.token.as_deref()),
            |key, value| {
                let made;
                let (name, text, is_total) = match key {
                    FlatKey::Known => keys[position].parts(py),
                    // The remembered key, spelled with white space before its colon.
                    FlatKey::Text(text) => match remembered(keys, position, text) {
                        Some(known) => known.parts(py),
                        // Not interned: on some CPython versions interned strings
                        // are immortal, and a peer could send endless fresh keys.
                        None => {
                            made = ascii_str(py, text);
                            fresh.push((position, text, made.clone()));
                            (&made, text, text == TOTAL_SIZE)
                        }
                    },
                };
                position += 1;
                if is_total {
                    total = match value {
                        FlatValue::Int(n) => u64::try_from(n).ok(),
                        _ => None,
                    };
                } else if digest_key.is_some_and(|d| d == text) {
                    digest = Some(match value {
                        FlatValue::Str(s) => Some(s.to_owned()),
                        _ => None,
                    });
                }
                let value = match value {
                    FlatValue::Str(s) => ascii_str(py, s).into_any(),
                    FlatValue::Int(n) => n.into_pyobject(py).expect("infallible").into_any(),
                    FlatValue::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
                    FlatValue::Null => py.None().into_bound(py),
                };
                ok &= set_item(&dict, name, &value);
            },
        )?;
        for (position, text, name) in fresh {
            self.remember(position, text, name);
        }
        if !ok {
            return None;
        }
        let facts = plain_facts(total, digest);
        Some((dict, facts))
    }

    /// The str object for the key at `position`, reused when the text repeats;
    /// with whether it is `total_size`.
    fn key<'py>(&mut self, py: Python<'py>, position: usize, text: &str) -> (Bound<'py, PyString>, bool) {
        let is_total = text == TOTAL_SIZE;
        if let Some(known) = remembered(&self.keys, position, text) {
            return (known.obj.bind(py).clone(), is_total);
        }
        let obj = PyString::new(py, text);
        self.remember(position, text, obj.clone());
        (obj, is_total)
    }

    /// Remembers the key `text` (as the str `obj`) at `position`, one of the
    /// first [`REMEMBERED_KEYS`] of a header.
    fn remember(&mut self, position: usize, text: &str, obj: Bound<'_, PyString>) {
        if position > self.keys.len() || position >= REMEMBERED_KEYS {
            return;
        }
        let entry =
            KnownKey { token: key_token(text), is_total: text == TOTAL_SIZE, text: Box::from(text), obj: obj.unbind() };
        if position < self.keys.len() {
            self.keys[position] = entry;
        } else {
            self.keys.push(entry);
        }
    }
}

impl KnownKey {
    /// The str, its text, and whether it is `total_size`.
    fn parts<'a, 'py>(&'a self, py: Python<'py>) -> (&'a Bound<'py, PyString>, &'a str, bool) {
        (self.obj.bind(py), &self.text, self.is_total)
    }
}

/// The key remembered at `position`, if its text is `text`.
fn remembered<'k>(keys: &'k [KnownKey], position: usize, text: &str) -> Option<&'k KnownKey> {
    keys.get(position).filter(|known| *known.text == *text)
}

/// A str from text known to be ASCII (as [`scan_flat`]'s is): CPython's
/// Latin-1 constructor copies it as is, where the UTF-8 one decodes it.
fn ascii_str<'py>(py: Python<'py>, text: &str) -> Bound<'py, PyString> {
    debug_assert!(text.is_ascii());
    let len = text.len() as pyo3::ffi::Py_ssize_t;
    // SAFETY: the pointer and length describe `text`, alive for the call. The
    // result is a new str (from_owned_ptr panics on NULL, out of memory, as
    // PyString::new does).
    unsafe {
        let ptr = pyo3::ffi::PyUnicode_DecodeLatin1(text.as_ptr().cast(), len, std::ptr::null());
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// `dict[key] = value` for a fresh dict of our own: `PyDict_SetItem` on
/// borrowed references (pyo3's `set_item` takes owned conversions); true on success.
fn set_item(dict: &Bound<'_, PyDict>, key: &Bound<'_, PyString>, value: &Bound<'_, PyAny>) -> bool {
    // SAFETY: three live objects, the first a dict; the call borrows them.
    let status = unsafe { pyo3::ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), value.as_ptr()) };
    if status == 0 {
        return true;
    }
    drop(PyErr::take(dict.py()));
    false
}

/// The codec's facts when they are plain: an int `total_size` that fits 64
/// bits, and a str digest if the digest field is there at all.
fn plain_facts(total: Option<u64>, digest: Option<Option<String>>) -> Option<HeaderFacts> {
    match (total, digest) {
        (Some(total_size), None) => Some(HeaderFacts { total_size, digest: None }),
        (Some(total_size), Some(Some(d))) => Some(HeaderFacts { total_size, digest: Some(d) }),
        _ => None,
    }
}

/// Deeper than this, a header is left to json.loads (which has its own limit).
const MAX_NESTING: usize = 200;

/// One JSON value as the Python object json.loads gives.
fn json_value<'py>(py: Python<'py>, j: &mut Jiter<'_>, peek: Peek, depth: usize) -> Result<Bound<'py, PyAny>, ()> {
    if depth > MAX_NESTING {
        return Err(());
    }
    Ok(match peek {
        Peek::Null => {
            j.known_null().map_err(drop)?;
            py.None().into_bound(py)
        }
        Peek::True | Peek::False => PyBool::new(py, j.known_bool(peek).map_err(drop)?).to_owned().into_any(),
        Peek::String => PyString::new(py, j.known_str().map_err(drop)?).into_any(),
        Peek::Array => {
            let list = PyList::empty(py);
            let mut next = j.known_array().map_err(drop)?;
            while let Some(peek) = next {
                list.append(json_value(py, j, peek, depth + 1)?).map_err(drop)?;
                next = j.array_step().map_err(drop)?;
            }
            list.into_any()
        }
        Peek::Object => {
            let dict = PyDict::new(py);
            let mut key = j.known_object().map_err(drop)?.map(|k| PyString::new(py, k));
            while let Some(k) = key {
                let peek = j.peek().map_err(drop)?;
                dict.set_item(k, json_value(py, j, peek, depth + 1)?).map_err(drop)?;
                key = j.next_key().map_err(drop)?.map(|k| PyString::new(py, k));
            }
            dict.into_any()
        }
        _ => match j.known_number(peek).map_err(drop)? {
            NumberAny::Int(NumberInt::Int(i)) => i.into_pyobject(py).map_err(drop)?.into_any(),
            NumberAny::Int(NumberInt::BigInt(big)) => py.get_type::<PyInt>().call1((big.to_string(),)).map_err(drop)?,
            NumberAny::Float(f) => PyFloat::new(py, f).into_any(),
        },
    })
}

fn parse_dict<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    json_loads(py, bytes)?.cast_into::<PyDict>().map_err(Into::into)
}

/// A header's JSON text as a Python dict, with the values `json.loads` gives.
/// The codec has already checked that it is an object.
pub fn header_to_py<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    header_to_py_with(py, bytes, &mut KeyCache::default())
}

/// [`header_to_py`] with the key objects of the stream's earlier headers.
pub fn header_to_py_with<'py>(py: Python<'py>, bytes: &[u8], keys: &mut KeyCache) -> PyResult<Bound<'py, PyDict>> {
    if let Ok((dict, _)) = keys.build(py, bytes, None) {
        return Ok(dict);
    }
    parse_dict(py, bytes).map_err(|e| {
        let err =
            FrameError::header(format!("frame header is not valid JSON ({e}); header bytes: {}", escape_bytes(bytes)));
        frame_error(py, &err)
    })
}

fn json_loads<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let loads = LOADS.get_or_try_init(py, || py.import("json")?.getattr("loads").map(Bound::unbind))?;
    loads.bind(py).call1((pyo3::types::PyBytes::new(py, bytes),))
}
