//! `rframe.Frame`: a decoded frame, a (header, body) pair.

use pyo3::basic::CompareOp;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

/// One frame: a header dict and a body.
///
/// It unpacks and compares like the tuple ``(header, body)``:
///
/// >>> frame = Frame({"total_size": 2}, b"hi")
/// >>> header, body = frame
/// >>> frame == ({"total_size": 2}, b"hi")
/// True
#[pyclass(frozen, freelist = 256, name = "Frame", module = "rframe")]
pub struct PyFrame {
    // `get` on a `Py` field of a frozen class makes a struct member, which
    // Python reads straight from the object (no getter call): the cheapest
    // attribute there is, and these two are read for every frame.
    /// The header dict (``{}`` for a length-only codec).
    #[pyo3(get)]
    header: Py<PyDict>,
    /// The body bytes.
    #[pyo3(get)]
    body: Py<PyBytes>,
}

impl PyFrame {
    pub fn from_parts(header: Bound<'_, PyDict>, body: Bound<'_, PyBytes>) -> PyFrame {
        PyFrame { header: header.unbind(), body: body.unbind() }
    }

    fn pair<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, [self.header.bind(py).as_any(), self.body.bind(py).as_any()])
    }
}

#[pymethods]
impl PyFrame {
    #[new]
    #[pyo3(signature = (header=None, body=None))]
    fn new(py: Python<'_>, header: Option<Bound<'_, PyDict>>, body: Option<&Bound<'_, PyAny>>) -> PyResult<PyFrame> {
        let header = header.unwrap_or_else(|| PyDict::new(py));
        let body = match body {
            None => PyBytes::new(py, b""),
            Some(b) => match b.cast::<PyBytes>() {
                Ok(bytes) => bytes.clone(),
                Err(_) => py.get_type::<PyBytes>().call1((b,))?.cast_into::<PyBytes>()?,
            },
        };
        Ok(PyFrame::from_parts(header, body))
    }

    /// The body decoded with the header's ``encoding`` field, else UTF-8.
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let header = self.header.bind(py);
        let encoding = match header.get_item("encoding")? {
            Some(e) if e.is_instance_of::<PyString>() => e,
            _ => PyString::new(py, "utf-8").into_any(),
        };
        self.body.bind(py).call_method1("decode", (encoding,))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.pair(py)?.try_iter()?.into_any())
    }

    fn __len__(&self) -> usize {
        2
    }

    fn __getitem__(&self, py: Python<'_>, index: isize) -> PyResult<Py<PyAny>> {
        match index {
            0 | -2 => Ok(self.header.clone_ref(py).into_any()),
            1 | -1 => Ok(self.body.clone_ref(py).into_any()),
            _ => Err(PyIndexError::new_err("Frame index out of range")),
        }
    }

    fn __richcmp__(&self, py: Python<'_>, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let other_pair = if let Ok(f) = other.cast::<PyFrame>() {
            f.get().pair(py)?.into_any()
        } else if other.is_instance_of::<PyTuple>() {
            other.clone()
        } else {
            return Ok(py.NotImplemented());
        };
        match op {
            CompareOp::Eq | CompareOp::Ne => Ok(self.pair(py)?.rich_compare(other_pair, op)?.unbind()),
            _ => Ok(py.NotImplemented()),
        }
    }

    // The header is a dict, so a frame is no more hashable than its tuple would be.
    #[classattr]
    const __hash__: Option<Py<PyAny>> = None;

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        const SHOWN: usize = 64;
        let body = self.body.bind(py);
        let bytes = body.as_bytes();
        let body_repr = if bytes.len() > SHOWN {
            format!("{}... ({} bytes)", PyBytes::new(py, &bytes[..SHOWN]).repr()?, bytes.len())
        } else {
            body.repr()?.to_string()
        };
        Ok(format!("Frame(header={}, body={})", self.header.bind(py).repr()?, body_repr))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        Ok((slf.get_type().into_any(), slf.get().pair(py)?))
    }
}
