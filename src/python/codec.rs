//! `rframe.Codec` and the module-level functions that use the default codec.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::codec::{ByteOrder, Checksum, Codec, DEFAULT_MAX_BODY, DEFAULT_MAX_HEADER};

use super::decoder::PyFrameDecoder;
use super::stream;

/// How frames are laid out on the wire, and the limits a reader enforces.
///
/// ``json_header=True`` (the default) is the course's custom-header format: a
/// 4-byte ``struct 'i'`` length, a JSON header holding ``total_size``, then the
/// body. ``json_header=False`` is a bare length and body, as Twisted's
/// ``Int32StringReceiver``, tokio-util's ``LengthDelimitedCodec`` and Netty use
/// (with ``byteorder="big"``).
///
/// >>> Codec(json_header=False, byteorder="big").pack(b"hi")
/// b'\x00\x00\x00\x02hi'
#[pyclass(frozen, eq, hash, name = "Codec", module = "rframe")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyCodec {
    inner: Codec,
}

impl PyCodec {
    pub fn codec(&self) -> Codec {
        self.inner
    }

    pub fn from_codec(c: Codec) -> PyCodec {
        PyCodec { inner: c }
    }
}

fn limit(name: &str, value: i128) -> PyResult<u64> {
    u64::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be a non-negative integer, got {value}")))
}

#[pymethods]
impl PyCodec {
    #[new]
    #[pyo3(signature = (*, json_header=true, byteorder="little", max_header=DEFAULT_MAX_HEADER as i128, max_body=DEFAULT_MAX_BODY as i128, checksum=None))]
    fn new(
        json_header: bool,
        byteorder: &str,
        max_header: i128,
        max_body: i128,
        checksum: Option<&str>,
    ) -> PyResult<PyCodec> {
        let byteorder = ByteOrder::from_name(byteorder)
            .ok_or_else(|| PyValueError::new_err(format!("byteorder must be 'little' or 'big', not {byteorder:?}")))?;
        let checksum = match checksum {
            None => None,
            Some(name) => Some(Checksum::from_name(name).ok_or_else(|| {
                PyValueError::new_err(format!("checksum must be None, 'md5', 'sha256' or 'blake3', not {name:?}"))
            })?),
        };
        let codec = Codec {
            json_header,
            byteorder,
            max_header: limit("max_header", max_header)?,
            max_body: limit("max_body", max_body)?,
            checksum,
        };
        codec.validate().map_err(PyValueError::new_err)?;
        Ok(PyCodec::from_codec(codec))
    }

    #[getter]
    fn json_header(&self) -> bool {
        self.inner.json_header
    }

    #[getter]
    fn byteorder(&self) -> &'static str {
        self.codec().byteorder.name()
    }

    #[getter]
    fn max_header(&self) -> u64 {
        self.inner.max_header
    }

    #[getter]
    fn max_body(&self) -> u64 {
        self.inner.max_body
    }

    #[getter]
    fn checksum(&self) -> Option<&'static str> {
        self.inner.checksum.map(Checksum::name)
    }

    /// The bytes of one frame: ``header`` (a dict) updated with ``fields``, with
    /// ``total_size`` set to ``len(body)``.
    ///
    /// >>> Codec().pack(b"hi", file_name="a")
    /// b'\x1f\x00\x00\x00{"file_name": "a", "total_size": 2}hi'
    #[pyo3(signature = (body=None, header=None, **fields))]
    fn pack<'py>(
        &self,
        py: Python<'py>,
        body: Option<&Bound<'py, PyAny>>,
        header: Option<&Bound<'py, PyAny>>,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        stream::pack(py, &self.codec(), body, header, fields)
    }

    /// Reads exactly one frame from a socket or a binary file-like object.
    ///
    /// Blocks until the whole frame is in (however the bytes were split), with
    /// the GIL released; a socket's timeout bounds the whole frame, as it bounds
    /// ``sendall``. Raises ``EOFError`` if the stream ended before the frame
    /// began and ``IncompleteFrame`` if it ended inside it.
    fn read<'py>(&self, py: Python<'py>, source: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        stream::read_from(py, &self.codec(), source)
    }

    /// Sends one frame completely: prefix, header and body in one vectored
    /// write, without copying the body.
    #[pyo3(signature = (sock, body=None, header=None, **fields))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        sock: &Bound<'py, PyAny>,
        body: Option<&Bound<'py, PyAny>>,
        header: Option<&Bound<'py, PyAny>>,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<()> {
        stream::send(py, &self.codec(), sock, body, header, fields)
    }

    /// A new incremental decoder for this codec.
    fn decoder(slf: &Bound<'_, Self>) -> PyFrameDecoder {
        PyFrameDecoder::with_codec(slf.get().clone())
    }

    fn __repr__(&self) -> String {
        let c = self.codec();
        let checksum = c.checksum.map(|c| format!("'{}'", c.name())).unwrap_or_else(|| "None".into());
        format!(
            "Codec(json_header={}, byteorder='{}', max_header={}, max_body={}, checksum={})",
            if c.json_header { "True" } else { "False" },
            c.byteorder.name(),
            c.max_header,
            c.max_body,
            checksum
        )
    }
}

/// ``Codec().pack(body, header, **fields)``.
#[pyfunction]
#[pyo3(signature = (body=None, header=None, **fields))]
pub fn pack_frame<'py>(
    py: Python<'py>,
    body: Option<&Bound<'py, PyAny>>,
    header: Option<&Bound<'py, PyAny>>,
    fields: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyBytes>> {
    stream::pack(py, &Codec::default(), body, header, fields)
}

/// ``Codec().read(source)``: one frame from a socket or file-like object.
#[pyfunction]
pub fn read_frame<'py>(py: Python<'py>, source: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    stream::read_from(py, &Codec::default(), source)
}

/// ``Codec().send(sock, body, header, **fields)``.
#[pyfunction]
#[pyo3(signature = (sock, body=None, header=None, **fields))]
pub fn send_frame<'py>(
    py: Python<'py>,
    sock: &Bound<'py, PyAny>,
    body: Option<&Bound<'py, PyAny>>,
    header: Option<&Bound<'py, PyAny>>,
    fields: Option<&Bound<'py, PyDict>>,
) -> PyResult<()> {
    stream::send(py, &Codec::default(), sock, body, header, fields)
}
