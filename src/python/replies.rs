//! The read side of `rframe.AsyncClient`'s connection protocol.
//!
//! `_Connection` (python/rframe/_async.py) is an `asyncio.BufferedProtocol`:
//! the event loop asks it for a buffer before every read and reports every
//! read. Answering with a memoryview slice for `FrameDecoder.feed` costs a
//! new view and a buffer export per read, more than a small frame's
//! decoding; this reads the bytes straight from the bytearray instead.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList, PyMemoryView};

use super::decoder::PyFrameDecoder;

/// The buffer the event loop reads into, and the decoder that takes what
/// each read brought. Private to ``rframe._async``.
#[pyclass(frozen, name = "_ReplyReader", module = "rframe._rframe")]
pub struct PyReplyReader {
    decoder: Py<PyFrameDecoder>,
    buffer: Py<PyByteArray>,
    /// A view of `buffer`. While it lives the bytearray cannot be resized,
    /// so the memory `read` copies from stays where it is.
    view: Py<PyMemoryView>,
}

#[pymethods]
impl PyReplyReader {
    #[new]
    fn new(decoder: Bound<'_, PyFrameDecoder>, buffer: Bound<'_, PyByteArray>) -> PyResult<PyReplyReader> {
        let view = PyMemoryView::from(&buffer)?.cast_into::<PyMemoryView>()?.unbind();
        Ok(PyReplyReader { decoder: decoder.unbind(), buffer: buffer.unbind(), view })
    }

    /// ``BufferedProtocol.get_buffer``: the whole buffer, every time.
    #[pyo3(signature = (sizehint, /))]
    fn get_buffer(&self, py: Python<'_>, sizehint: isize) -> Py<PyMemoryView> {
        let _ = sizehint; // the buffer is as large as it is
        self.view.clone_ref(py)
    }

    /// The frames completed by the first ``nbytes`` of the buffer (what the
    /// loop just read into it), as ``FrameDecoder.feed`` returns them.
    #[pyo3(signature = (nbytes, /))]
    fn read<'py>(&self, py: Python<'py>, nbytes: usize) -> PyResult<Bound<'py, PyList>> {
        let buffer = self.buffer.bind(py);
        self.decoder.get().feed_with(py, |buf| {
            // SAFETY: `view` keeps the bytearray from being resized, and no
            // Python code runs while the slice is alive (copying it is all).
            let read = unsafe { buffer.as_bytes() }
                .get(..nbytes)
                .ok_or_else(|| PyValueError::new_err(format!("{nbytes} bytes read into a smaller buffer")))?;
            buf.extend_from_slice(read);
            Ok(())
        })
    }
}
