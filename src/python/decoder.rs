//! `rframe.FrameDecoder`: the sans-IO decoder with a buffer, for Python.

use std::sync::{Mutex, MutexGuard};

use bytes::BytesMut;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::codec::{Decoder, Frame};

use super::codec::PyCodec;
use super::errors::frame_error;
use super::frame::new_frame;
use super::header::{header_to_py, KeyCache, PyFrames};
use super::stream::with_body;

/// Turns arbitrarily split chunks of a byte stream back into frames.
///
/// ``feed()`` whatever ``recv()`` returned; it returns every frame completed by
/// it, in order. A length over the codec's limit is refused as soon as its four
/// bytes arrive, before anything it announces is buffered. After an error the
/// decoder refuses all further input with the same error.
///
/// >>> dec = FrameDecoder()
/// >>> data = pack_frame(b"one") + pack_frame(b"two")
/// >>> [f.body for f in dec.feed(data[:5]) + dec.feed(data[5:])]
/// [b'one', b'two']
#[pyclass(frozen, name = "FrameDecoder", module = "rframe")]
pub struct PyFrameDecoder {
    codec: PyCodec,
    state: Mutex<State>,
}

struct State {
    decoder: Decoder<Py<PyDict>>,
    buf: BytesMut,
    keys: KeyCache,
}

impl PyFrameDecoder {
    pub fn with_codec(codec: PyCodec) -> PyFrameDecoder {
        let decoder = Decoder::with_codec(codec.codec());
        PyFrameDecoder { codec, state: Mutex::new(State { decoder, buf: BytesMut::new(), keys: KeyCache::default() }) }
    }

    /// Locks the state, releasing the GIL while waiting: the holder may be
    /// running Python code (building an exception) and need the GIL back.
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, State>> {
        self.state
            .lock_py_attached(py)
            .map_err(|_| PyRuntimeError::new_err("FrameDecoder is broken by an earlier panic"))
    }

    /// The frames completed once `fill` has appended new bytes to the buffer.
    /// `fill` runs before any frame is built, so before the decoder runs any
    /// Python code.
    pub fn feed_with<'py>(
        &self,
        py: Python<'py>,
        fill: impl FnOnce(&mut BytesMut) -> PyResult<()>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut state = self.lock(py)?;
        let State { decoder, buf, keys } = &mut *state;
        if let Some(err) = decoder.error() {
            return Err(frame_error(py, err));
        }
        fill(buf)?;
        let frames = PyList::empty(py);
        let mut model = PyFrames { py, keys };
        loop {
            match decoder.decode_with(buf, &mut model) {
                Ok(Some(Frame { header, body })) => {
                    let header = header.map_or_else(|| PyDict::new(py), |h| h.into_bound(py));
                    frames.append(new_frame(header, body.into_bound(py))?)?
                }
                Ok(None) => return Ok(frames),
                Err(err) => return Err(frame_error(py, &err)),
            }
        }
    }
}

pub fn frame_to_py(py: Python<'_>, frame: Frame) -> PyResult<Bound<'_, PyAny>> {
    let header = match &frame.header {
        Some(bytes) => header_to_py(py, bytes)?,
        None => PyDict::new(py),
    };
    new_frame(header, PyBytes::new(py, &frame.body))
}

#[pymethods]
impl PyFrameDecoder {
    #[new]
    #[pyo3(signature = (codec=None))]
    fn new(codec: Option<&Bound<'_, PyCodec>>) -> PyFrameDecoder {
        PyFrameDecoder::with_codec(codec.map_or_else(|| PyCodec::from_codec(Default::default()), |c| c.get().clone()))
    }

    #[getter]
    fn codec(&self) -> PyCodec {
        self.codec.clone()
    }

    /// Bytes fed but not yet returned as part of a frame. After an error:
    /// the bytes that followed the refused part (a length, a header, a frame).
    #[getter]
    fn pending(&self, py: Python<'_>) -> PyResult<usize> {
        let state = self.lock(py)?;
        Ok(state.buf.len() + state.decoder.consumed())
    }

    /// How many more bytes the decoder must be fed before it can take its next
    /// step: read exactly this many (``await reader.readexactly(dec.needed)``)
    /// and nothing past the frame is consumed. Lengths are checked before they
    /// are asked for, so it never exceeds the codec's limits.
    #[getter]
    fn needed(&self, py: Python<'_>) -> PyResult<usize> {
        let state = self.lock(py)?;
        Ok(state.decoder.needed(&state.buf))
    }

    /// Adds ``data`` (bytes-like) and returns the frames it completes.
    fn feed<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        self.feed_with(py, |buf| {
            with_body(Some(data), |bytes| {
                buf.extend_from_slice(bytes);
                Ok(())
            })
        })
    }

    /// Declares the end of the stream. Raises ``IncompleteFrame`` if a frame was
    /// started and not finished; returns ``None`` otherwise.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = self.lock(py)?;
        let State { decoder, buf, keys } = &mut *state;
        match decoder.decode_eof_with(buf, &mut PyFrames { py, keys }) {
            Ok(_) => Ok(()),
            Err(err) => Err(frame_error(py, &err)),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("<FrameDecoder pending={}>", self.pending(py)?))
    }
}
