//! The one place where Rust errors become Python exceptions.
//!
//! Framing errors map to the classes in `rframe/_errors.py` (Python classes, so
//! `IncompleteFrame` can be both a `FrameError` and an `EOFError`); I/O failures
//! map to the builtin `OSError` family, as the `socket` module raises them.

use pyo3::exceptions::{PyEOFError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use crate::codec::FrameError;
use crate::io::read::ReadError;
use crate::io::socket::WaitError;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Instantiates `rframe._errors.<class>(message, **attrs)` as a `PyErr`.
fn raise<'py>(
    py: Python<'py>,
    class: &str,
    message: String,
    attrs: impl FnOnce(&Bound<'py, PyDict>) -> PyResult<()>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = ERRORS.get_or_try_init(py, || py.import("rframe._errors").map(Bound::unbind))?;
        let cls = module.bind(py).getattr(class)?;
        let kwargs = PyDict::new(py);
        attrs(&kwargs)?;
        Ok(PyErr::from_value(cls.call((message,), Some(&kwargs))?))
    };
    build().unwrap_or_else(|e| e)
}

/// The Python exception for a framing error.
pub fn frame_error(py: Python<'_>, err: &FrameError) -> PyErr {
    let message = err.to_string();
    match err {
        FrameError::TooLarge { part, size, limit, .. } => raise(py, "FrameTooLarge", message, |kw| {
            kw.set_item("part", part.name())?;
            kw.set_item("size", size)?;
            kw.set_item("limit", limit)
        }),
        FrameError::NegativeLength { .. } => raise(py, "FrameError", message, |_| Ok(())),
        FrameError::Header(_) => raise(py, "HeaderError", message, |_| Ok(())),
        FrameError::Incomplete { part, expected, received } => raise(py, "IncompleteFrame", message, |kw| {
            kw.set_item("part", part.name())?;
            kw.set_item("expected", expected)?;
            kw.set_item("received", received)
        }),
        FrameError::Checksum { algorithm, expected, actual } => raise(py, "ChecksumError", message, |kw| {
            kw.set_item("algorithm", algorithm)?;
            kw.set_item("expected", expected)?;
            kw.set_item("actual", actual)
        }),
    }
}

/// A failed socket wait: an OSError, `TimeoutError("timed out")` as the socket
/// module says it, or the exception the signal check raised.
pub fn wait_error(err: WaitError<PyErr>) -> PyErr {
    match err {
        WaitError::Io(e) => e.into(),
        WaitError::TimedOut => PyTimeoutError::new_err("timed out"),
        WaitError::Interrupted(e) => e,
    }
}

/// A failed frame read. A clean end of stream is a plain `EOFError`.
pub fn read_error(py: Python<'_>, err: ReadError<PyErr>) -> PyErr {
    match err {
        ReadError::Frame(e) => frame_error(py, &e),
        ReadError::Eof => PyEOFError::new_err("connection closed before a frame began"),
        ReadError::Source(e) => e,
    }
}
