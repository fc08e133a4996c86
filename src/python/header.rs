//! Conversion between Python header dicts and JSON header bytes.
//!
//! Writing follows `json.dumps(d)` with default settings, decision for
//! decision (the C encoder's order of type checks, its key conversions, its
//! messages), so that rframe's bytes equal the course code's bytes.

use std::borrow::Cow;

use pyo3::exceptions::{PyRecursionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use jiter::{FloatMode, PartialMode, PythonParse, StringCacheMode};

use crate::codec::json::{Entry, JsonWriter};
use crate::codec::{escape_bytes, Codec, FrameError};

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
        (h, Some(f)) => {
            merged = match h {
                Some(h) => as_dict(h)?.copy()?,
                None => PyDict::new(f.py()),
            };
            merged.update(f.as_mapping())?;
            Some(&merged)
        }
    };
    let mut out = codec.header_writer(body);
    if let Some(dict) = dict {
        let mut stack = Vec::new();
        for (key, value) in dict.iter() {
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
    Err(PyTypeError::new_err(format!(
        "header must be a dict, not {}",
        header.get_type().name()?
    )))
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
    Err(PyTypeError::new_err(format!(
        "keys must be str, int, float, bool or None, not {}",
        key.get_type().name()?
    )))
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
        for (i, (k, v)) in d.iter().enumerate() {
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
        return Err(PyRecursionError::new_err(
            "maximum recursion depth exceeded while encoding a JSON object",
        ));
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
        return Err(PyValueError::new_err(format!(
            "Out of range float values are not JSON compliant: {text}"
        )));
    }
    Ok(text)
}

fn json_dumps(value: &Bound<'_, PyAny>) -> PyResult<String> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = value.py();
    let dumps = DUMPS.get_or_try_init(py, || py.import("json")?.getattr("dumps").map(Bound::unbind))?;
    dumps.bind(py).call1((value,))?.extract()
}

/// A header's JSON text as a Python dict, with the values `json.loads` gives.
/// The codec has already checked that it is an object.
pub fn header_to_py<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    const PARSE: PythonParse = PythonParse {
        allow_inf_nan: true,
        // Headers repeat the same keys frame after frame: reuse their str objects.
        cache_mode: StringCacheMode::Keys,
        partial_mode: PartialMode::Off,
        catch_duplicate_keys: false,
        float_mode: FloatMode::Float,
    };
    let value = match PARSE.python_parse(py, bytes) {
        Ok(value) => value,
        // What jiter refuses but the codec accepted holds lone surrogates
        // (`"\udcff"`): json.loads gives them the meaning Python gives them.
        Err(e) => json_loads(py, bytes).map_err(|_| {
            let err = FrameError::header(format!("frame header is not valid JSON ({e}); header bytes: {}", escape_bytes(bytes)));
            frame_error(py, &err)
        })?,
    };
    Ok(value.cast_into::<PyDict>()?)
}

fn json_loads<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let loads = LOADS.get_or_try_init(py, || py.import("json")?.getattr("loads").map(Bound::unbind))?;
    loads.bind(py).call1((pyo3::types::PyBytes::new(py, bytes),))
}
