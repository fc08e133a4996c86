//! The read side of `rframe.AsyncClient`'s connection protocol.
//!
//! `_Connection` (python/rframe/_async.py) is an `asyncio.BufferedProtocol`:
//! the event loop asks it for a buffer before every read and reports every
//! read. Answering with a memoryview slice for `FrameDecoder.feed` costs a
//! new view and a buffer export per read, a good part of what decoding a
//! small reply costs; this reads the bytes straight from the bytearray.

use std::cell::RefCell;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList, PyMemoryView};

use super::decoder::PyFrameDecoder;

/// Bytes read from a socket at a time (asyncio's own default).
const READ_BUFFER_SIZE: usize = 256 * 1024;

thread_local! {
    /// The read buffer of this thread and a view of it, shared by every
    /// connection whose event loop runs here: a loop reads into it and
    /// reports the read right away (both on this thread, back to back), and
    /// the decoder copies what it keeps. One per thread, not per process: two
    /// loops in two threads read at the same time. (A fresh 256 KiB bytes
    /// per read, as `Protocol.data_received` gets, is an mmap in glibc.)
    static READ_BUFFER: RefCell<Option<(Py<PyByteArray>, Py<PyMemoryView>)>> = const { RefCell::new(None) };
}

/// This thread's read buffer's view, the buffer made on first use.
fn read_buffer_view(py: Python<'_>) -> PyResult<Py<PyMemoryView>> {
    if let Some(view) = READ_BUFFER.with_borrow(|slot| slot.as_ref().map(|(_, view)| view.clone_ref(py))) {
        return Ok(view);
    }
    // Made outside the borrow: making objects can run the garbage
    // collector, and with it Python code that could come back here.
    let buffer = PyByteArray::new_with(py, READ_BUFFER_SIZE, |_| Ok(()))?;
    let view = PyMemoryView::from(&buffer)?.cast_into::<PyMemoryView>()?.unbind();
    // If such code did make one meanwhile, that one stays: its view is out.
    Ok(READ_BUFFER.with_borrow_mut(|slot| slot.get_or_insert((buffer.unbind(), view)).1.clone_ref(py)))
}

/// This thread's read buffer: the one its loop was handed by `get_buffer`.
fn read_buffer<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyByteArray>> {
    READ_BUFFER.with_borrow(|slot| slot.as_ref().map(|(buffer, _)| buffer.bind(py).clone())).ok_or_else(|| {
        PyRuntimeError::new_err("a read reported on a thread whose loop never called get_buffer(): nothing to decode")
    })
}

/// Decodes what the event loop read into this thread's read buffer.
/// Private to ``rframe._async``.
#[pyclass(frozen, name = "_ReplyReader", module = "rframe._rframe")]
pub struct PyReplyReader {
    decoder: Py<PyFrameDecoder>,
}

#[pymethods]
impl PyReplyReader {
    #[new]
    fn new(decoder: Bound<'_, PyFrameDecoder>) -> PyReplyReader {
        PyReplyReader { decoder: decoder.unbind() }
    }

    /// ``BufferedProtocol.get_buffer``: a view of the whole read buffer of
    /// the calling thread (the thread the loop runs in).
    #[pyo3(signature = (sizehint, /))]
    fn get_buffer(&self, py: Python<'_>, sizehint: isize) -> PyResult<Py<PyMemoryView>> {
        let _ = sizehint; // the buffer is as large as it is
        read_buffer_view(py)
    }

    /// ``BufferedProtocol.buffer_updated``'s decoding: the frames completed
    /// by the first ``nbytes`` of the calling thread's read buffer (what the
    /// loop just read into it), as ``FrameDecoder.feed`` returns them.
    #[pyo3(signature = (nbytes, /))]
    fn read<'py>(&self, py: Python<'py>, nbytes: usize) -> PyResult<Bound<'py, PyList>> {
        let buffer = read_buffer(py)?;
        self.decoder.get().feed_with(py, |buf| {
            // SAFETY: the GIL is held, so no Python code resizes or writes the
            // bytearray while the slice lives (copying it is all that happens);
            // the one writer without the GIL is this thread's own loop, whose
            // read into it has finished before it reports the read.
            let read = unsafe { buffer.as_bytes() }.get(..nbytes);
            // No transport reports more than the buffer it was given; if one
            // did, the read is lost and the connection cannot go on.
            let read =
                read.ok_or_else(|| PyValueError::new_err(format!("{nbytes} bytes read into a smaller buffer")))?;
            buf.extend_from_slice(read);
            Ok(())
        })
    }
}
