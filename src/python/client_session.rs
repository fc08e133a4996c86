//! `rframe._rframe.ClientSession`: the client session of
//! `protocol::client` for Python drivers. Types are converted here, nothing
//! more: requests come back as ``(id, bytes)``, events as tuples whose first
//! item names them.

use std::sync::{Mutex, MutexGuard};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyConnectionAbortedError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyDict};

use bytes::Bytes;

use crate::codec::{Codec, Frame};
use crate::protocol::client::{Cancelled, ClientSession, Event, GetResume, PutOptions, SessionError, ViolationKind};

use super::codec::PyCodec;
use super::errors::frame_error;
use super::frame::new_frame;
use super::header::{header_to_py, header_to_py_with, KeyCache};
use super::stream::{header_bytes, read_raw, send_parts, with_body, Within};

/// A `bytes` object's memory as [`Bytes`], without a copy: a body read
/// straight into its `bytes` goes through the session and comes back out as
/// that same object (see [`body_to_py`]).
struct PyBytesOwner {
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: a `bytes` object is immutable and its buffer does not move while a
// reference to it is held (`_obj`); `Py` itself may be sent between threads.
unsafe impl Send for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: `ptr` and `len` are the held object's buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

pub(super) fn bytes_of(obj: &Bound<'_, PyBytes>) -> Bytes {
    let data = obj.as_bytes();
    Bytes::from_owner(PyBytesOwner { _obj: obj.clone().unbind(), ptr: data.as_ptr(), len: data.len() })
}

/// `data` as a Python `bytes`: `read` itself if `data` is all of it (the body
/// just read), else a copy.
fn body_to_py<'py>(py: Python<'py>, data: &Bytes, read: Option<&Bound<'py, PyBytes>>) -> Bound<'py, PyBytes> {
    match read {
        Some(obj) if obj.as_bytes().as_ptr() == data.as_ptr() && obj.as_bytes().len() == data.len() => obj.clone(),
        _ => PyBytes::new(py, data),
    }
}

/// `into`'s memory, checked before anything is read for it (the copy
/// into it is then safe, and a refusal has taken nothing from the socket).
fn writable(into: &Bound<'_, PyAny>) -> PyResult<PyUntypedBuffer> {
    let buffer = PyUntypedBuffer::get(into)?;
    if buffer.readonly() || !buffer.is_c_contiguous() {
        return Err(PyTypeError::new_err("into must be a writable, C-contiguous buffer"));
    }
    Ok(buffer)
}

/// Copies `data` into `buffer` if it fits: how many bytes, else `None`.
fn copy_into(buffer: &PyUntypedBuffer, data: &[u8]) -> Option<usize> {
    if data.len() > buffer.len_bytes() {
        return None;
    }
    // SAFETY: the export keeps the memory alive and unmoved until `buffer`
    // drops; it is writable, contiguous and at least `data.len()` bytes long;
    // the GIL is held, so no Python code touches it meanwhile.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buffer.buf_ptr() as *mut u8, data.len()) };
    Some(data.len())
}

/// The client side of the command protocol, without I/O (see
/// ``src/protocol/client``): request methods return ``(id, bytes)`` for the
/// driver to send; bytes from the server go to ``receive_data`` (or
/// ``feed``), and ``next_event`` (or ``feed``) returns what they meant, as
/// tuples:
///
/// - ``("reply", id, frame)``, ``("unsolicited", frame)``
/// - ``("remote-error", id_or_None, code, message, closes, header)``
/// - ``("send", bytes)``: the login's answer, to send now
/// - ``("logged-in", id)``, ``("login-failed", id, message)``
/// - ``("upload-ready", id, chunk_size)``, ``("download-started", id, size)``
/// - ``("file-chunk", id, data)``
/// - ``("transfer-end", id, name, size, checksum, digest, header)``
/// - ``("violation", id_or_None, kind, message, closes, header_or_None)``
/// - ``("started", id)``, ``("output", id, fd, data)``,
///   ``("exit", id, returncode, duration, timed_out, header)``: a live command
/// - ``("features", id, checksums)``: what the server offers (``[]`` from a
///   server too old to say); ``default_checksum`` picks from it
/// - ``("closed", reason, frame_error_or_None)``: the last event
#[pyclass(frozen, name = "ClientSession", module = "rframe._rframe")]
pub struct PyClientSession {
    /// The session's codec, for headers built before the lock is taken
    /// (building one runs Python code).
    pub(super) codec: Codec,
    inner: Mutex<ClientSession>,
    /// The key objects of the headers so far: a stream's headers repeat
    /// their keys, and building a dict with keys already made is cheaper.
    keys: Mutex<KeyCache>,
}

impl PyClientSession {
    pub(super) fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, ClientSession>> {
        self.inner
            .lock_py_attached(py)
            .map_err(|_| PyRuntimeError::new_err("ClientSession is broken by an earlier panic"))
    }

    /// Runs `f` with the header keys of this session's stream, for converting
    /// its events. Building a dict may run Python code (the garbage
    /// collector, a finalizer); if such code converts this session's events
    /// meanwhile, it does so with keys of its own rather than wait.
    pub(super) fn with_keys<T>(&self, f: impl FnOnce(&mut KeyCache) -> T) -> T {
        match self.keys.try_lock() {
            Ok(mut keys) => f(&mut keys),
            Err(_) => f(&mut KeyCache::default()),
        }
    }
}

fn session_error(py: Python<'_>, err: SessionError) -> PyErr {
    match err {
        SessionError::Closed(_) => PyConnectionAbortedError::new_err(err.to_string()),
        SessionError::Busy(why) => PyRuntimeError::new_err(why),
        SessionError::Usage(why) => PyValueError::new_err(why),
        SessionError::Frame(e) => frame_error(py, &e),
    }
}

fn outgoing(py: Python<'_>, made: Result<(u64, Vec<u8>), SessionError>) -> PyResult<(u64, Bound<'_, PyBytes>)> {
    let (id, data) = made.map_err(|e| session_error(py, e))?;
    Ok((id, PyBytes::new(py, &data)))
}

fn header_dict<'py>(py: Python<'py>, header: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if header.is_empty() {
        return Ok(py.None().into_bound(py));
    }
    Ok(header_to_py(py, header)?.into_any())
}

fn violation_kind(kind: ViolationKind) -> &'static str {
    match kind {
        ViolationKind::UnexpectedReply => "unexpected-reply",
        ViolationKind::NoSize => "no-size",
        ViolationKind::DownloadData => "download-data",
        ViolationKind::ShortDownload => "short-download",
        ViolationKind::StoredElse => "stored-else",
        ViolationKind::UploadData => "upload-data",
        ViolationKind::BadOffset => "bad-offset",
    }
}

pub(super) fn frame_to_py<'py>(
    py: Python<'py>,
    frame: Frame,
    read: Option<&Bound<'py, PyBytes>>,
    keys: &mut KeyCache,
) -> PyResult<Bound<'py, PyAny>> {
    let header = match &frame.header {
        Some(bytes) => header_to_py_with(py, bytes, keys)?,
        None => PyDict::new(py),
    };
    new_frame(header, body_to_py(py, &frame.body, read))
}

/// `read`: the body of the frame the event came from, when the driver read
/// it; `keys`: the session's header keys (see [`PyClientSession::keys`]).
pub(super) fn event_to_py<'py>(
    py: Python<'py>,
    event: Event,
    read: Option<&Bound<'py, PyBytes>>,
    keys: &mut KeyCache,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match event {
        Event::Reply { id, frame } => ("reply", id, frame_to_py(py, frame, read, keys)?).into_pyobject(py)?.into_any(),
        Event::Unsolicited { frame } => {
            ("unsolicited", frame_to_py(py, frame, read, keys)?).into_pyobject(py)?.into_any()
        }
        Event::RemoteError { id, error } => {
            let header = header_dict(py, &error.header)?;
            ("remote-error", id, error.code, error.message, error.closes, header).into_pyobject(py)?.into_any()
        }
        Event::Send(data) => ("send", PyBytes::new(py, &data)).into_pyobject(py)?.into_any(),
        Event::LoggedIn { id } => ("logged-in", id).into_pyobject(py)?.into_any(),
        Event::LoginFailed { id, message } => ("login-failed", id, message).into_pyobject(py)?.into_any(),
        Event::UploadReady { id, chunk_size, offset, prefix_digest } => {
            ("upload-ready", id, chunk_size, offset, prefix_digest).into_pyobject(py)?.into_any()
        }
        Event::DownloadStarted { id, size, offset, mtime_ns } => {
            ("download-started", id, size, offset, mtime_ns).into_pyobject(py)?.into_any()
        }
        Event::FileChunk { id, data } => ("file-chunk", id, body_to_py(py, &data, read)).into_pyobject(py)?.into_any(),
        Event::TransferEnd { id, end } => {
            let header = header_dict(py, &end.header)?;
            ("transfer-end", id, end.name, end.size, end.checksum, end.digest, header).into_pyobject(py)?.into_any()
        }
        Event::Violation { id, kind, message, closes, header } => {
            let header = header_dict(py, &header)?;
            ("violation", id, violation_kind(kind), message, closes, header).into_pyobject(py)?.into_any()
        }
        Event::Started { id } => ("started", id).into_pyobject(py)?.into_any(),
        Event::Features { id, checksums } => ("features", id, checksums).into_pyobject(py)?.into_any(),
        Event::Output { id, fd, data } => ("output", id, fd, body_to_py(py, &data, read)).into_pyobject(py)?.into_any(),
        Event::Exit { id, returncode, duration, timed_out, header } => {
            let header = header_dict(py, &header)?;
            ("exit", id, returncode, duration.as_secs_f64(), timed_out, header).into_pyobject(py)?.into_any()
        }
        Event::Closed { reason, error } => {
            let error = error.map(|e| frame_error(py, &e).into_value(py));
            ("closed", reason, error).into_pyobject(py)?.into_any()
        }
    })
}

#[pymethods]
impl PyClientSession {
    /// ``token``: the server's token, for ``login()``; ``binding``: on TLS,
    /// the SHA-256 of the server certificate's DER bytes.
    #[new]
    #[pyo3(signature = (codec=None, *, token=None, binding=None))]
    fn new(codec: Option<&Bound<'_, PyCodec>>, token: Option<Vec<u8>>, binding: Option<Vec<u8>>) -> PyResult<Self> {
        let codec = codec.map_or_else(Default::default, |c| c.get().codec());
        let session = ClientSession::new(codec, token, binding).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyClientSession { codec, inner: Mutex::new(session), keys: Mutex::default() })
    }

    /// Why the connection is closed, or ``None`` while it is open.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.lock(py)?.closed().map(str::to_owned))
    }

    #[getter]
    fn logged_in(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.logged_in())
    }

    /// Requests whose replies are still to come.
    #[getter]
    fn in_flight(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.in_flight())
    }

    /// The checksum for a transfer asked for none (the fastest the server
    /// offers), or ``None`` until the answer to :meth:`features` came.
    #[getter]
    fn default_checksum(&self, py: Python<'_>) -> PyResult<Option<&'static str>> {
        Ok(self.lock(py)?.default_checksum())
    }

    /// ``features``: asks what the server offers; its answer is a
    /// ``("features", id, checksums)`` event: ``(id, bytes)``.
    fn features<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let made = self.lock(py)?.features();
        outgoing(py, made)
    }

    /// True while an upload owns the sending side (``put`` to ``put_end``).
    #[getter]
    fn uploading(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.uploading())
    }

    /// Any request, its header as ``Codec.pack`` takes it: ``(id, bytes)``.
    #[pyo3(signature = (body=None, header=None, **fields))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        body: Option<&Bound<'py, PyAny>>,
        header: Option<&Bound<'py, PyAny>>,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        with_body(body, |body| {
            let header = header_bytes(&self.codec, header, fields, body)?;
            let header = header.as_deref();
            let made = self.lock(py)?.request_prefix(header, body.len());
            let (id, prefix) = made.map_err(|e| session_error(py, e))?;
            let (p, h) = (prefix.len(), header.map_or(0, <[u8]>::len));
            // Written straight into the bytes object, as Codec.pack does.
            let data = PyBytes::new_with(py, p + h + body.len(), |out| {
                out[..p].copy_from_slice(&prefix);
                out[p..p + h].copy_from_slice(header.unwrap_or_default());
                out[p + h..].copy_from_slice(body);
                Ok(())
            })?;
            Ok((id, data))
        })
    }

    /// A ``run`` request of this header (``_protocol.run_request``'s):
    /// ``(id, bytes)``.
    #[pyo3(signature = (header, body=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        header: &Bound<'py, PyAny>,
        body: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        with_body(body, |body| {
            let header = header_bytes(&self.codec, Some(header), None, body)?;
            let header = header.ok_or_else(|| PyValueError::new_err("run needs a JSON-header codec"))?;
            let made = self.lock(py)?.run(&header, body);
            outgoing(py, made)
        })
    }

    /// A frame that waits for no reply: its bytes.
    #[pyo3(signature = (body=None, header=None, **fields))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        body: Option<&Bound<'py, PyAny>>,
        header: Option<&Bound<'py, PyAny>>,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        with_body(body, |body| {
            let header = header_bytes(&self.codec, header, fields, body)?;
            let data = self.lock(py)?.send(header.as_deref(), body).map_err(|e| session_error(py, e))?;
            Ok(PyBytes::new(py, &data))
        })
    }

    /// Waits for the next frame nobody claims: its id.
    fn expect_reply(&self, py: Python<'_>) -> PyResult<u64> {
        self.lock(py)?.expect_reply().map_err(|e| session_error(py, e))
    }

    /// On TLS, the SHA-256 of the server certificate's DER bytes, for a
    /// session made before the handshake ended; before ``login()``.
    fn bind_channel(&self, py: Python<'_>, binding: Vec<u8>) -> PyResult<()> {
        self.lock(py)?.bind_channel(binding).map_err(|e| session_error(py, e))
    }

    /// The login's hello: ``(id, bytes)``.
    fn login<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let made = self.lock(py)?.login();
        outgoing(py, made)
    }

    /// ``list`` of a directory beneath the server's root (``recursive``: a
    /// page of its whole tree, the names after ``after``, with each file's
    /// digest under ``checksum`` if given): ``(id, bytes)``.
    #[pyo3(signature = (name="", *, recursive=false, checksum=None, after=None))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        recursive: bool,
        checksum: Option<&str>,
        after: Option<&str>,
    ) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let made = if recursive {
            self.lock(py)?.list_tree(name, checksum, after)
        } else if checksum.is_some() || after.is_some() {
            return Err(PyValueError::new_err("checksum and after are for a recursive listing"));
        } else {
            self.lock(py)?.list(name)
        };
        outgoing(py, made)
    }

    /// ``put``: an upload of ``size`` bytes to ``name``: ``(id, bytes)``.
    /// ``resume_mtime_ns``: a resumable upload of a source with this mtime
    /// (ns); its ``upload-ready`` may offer a kept prefix (see
    /// :meth:`put_resume`).
    #[pyo3(signature = (name, size, *, overwrite=false, checksum="sha256", mode=None, sync=true, resume_mtime_ns=None))]
    #[allow(clippy::too_many_arguments)]
    fn put<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        size: u64,
        overwrite: bool,
        checksum: &str,
        mode: Option<u32>,
        sync: bool,
        resume_mtime_ns: Option<i64>,
    ) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let options = PutOptions { overwrite, checksum, mode, sync, resume: resume_mtime_ns };
        let made = self.lock(py)?.put_with(name, size, &options);
        outgoing(py, made)
    }

    /// A resumable upload whose server offered its kept prefix: the hex
    /// digest of the source's first ``offset`` bytes. Returns where the data
    /// starts: ``offset`` if the digests match, else 0.
    fn put_resume(&self, py: Python<'_>, own_digest: &str) -> PyResult<u64> {
        self.lock(py)?.put_resume(own_digest).map_err(|e| session_error(py, e))
    }

    /// A whole small file in one ``put`` frame, with the hex ``digest`` of
    /// ``data``: ``(id, bytes)``; its ``transfer-end`` (or error) comes
    /// without a ``upload-ready``, and the connection stays free.
    #[pyo3(signature = (name, data, digest, *, overwrite=false, checksum="sha256", mode=None, sync=true))]
    #[allow(clippy::too_many_arguments)]
    fn put_inline<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        data: &Bound<'py, PyAny>,
        digest: &str,
        overwrite: bool,
        checksum: &str,
        mode: Option<u32>,
        sync: bool,
    ) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let mut session = self.lock(py)?;
        let made = with_body(Some(data), |data| {
            Ok(session.put_inline(name, data, digest, &PutOptions { overwrite, checksum, mode, sync, resume: None }))
        })?;
        outgoing(py, made)
    }

    /// ``mkdir``: the directory ``name`` and those above it: ``(id, bytes)``.
    #[pyo3(signature = (name, *, mode=None))]
    fn mkdir<'py>(&self, py: Python<'py>, name: &str, mode: Option<u32>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let made = self.lock(py)?.mkdir(name, mode);
        outgoing(py, made)
    }

    /// ``symlink``: a link ``name`` to ``target``: ``(id, bytes)``.
    #[pyo3(signature = (name, target, *, overwrite=false))]
    fn symlink<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        target: &str,
        overwrite: bool,
    ) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let made = self.lock(py)?.symlink(name, target, overwrite);
        outgoing(py, made)
    }

    /// ``sync``: what was stored with ``sync=False`` is made durable: ``(id, bytes)``.
    fn sync<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let made = self.lock(py)?.sync();
        outgoing(py, made)
    }

    /// The upload's next ``data`` frame (``chunk`` copied once, into it).
    fn put_data<'py>(&self, py: Python<'py>, chunk: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut session = self.lock(py)?;
        with_body(Some(chunk), |chunk| {
            let head = session.put_data_head(chunk).map_err(|e| session_error(py, e))?;
            PyBytes::new_with(py, head.len() + chunk.len(), |out| {
                out[..head.len()].copy_from_slice(&head);
                out[head.len()..].copy_from_slice(chunk);
                Ok(())
            })
        })
    }

    /// The upload's ``end`` frame, with the hex digest of what was sent.
    fn put_end<'py>(&self, py: Python<'py>, digest: &str) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.lock(py)?.put_end(digest).map_err(|e| session_error(py, e))?;
        Ok(PyBytes::new(py, &data))
    }

    /// ``get``: a download of ``name``: ``(id, bytes)``. ``resume``:
    /// ``(offset, prefix_digest, size, mtime_ns)`` of what an earlier cut
    /// download kept (the bytes, their digest, and the server's file's size
    /// and mtime when they were written).
    #[pyo3(signature = (name, *, checksum="sha256", resume=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        checksum: &str,
        resume: Option<(u64, String, u64, i64)>,
    ) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let resume = resume.as_ref().map(|(offset, prefix_digest, size, mtime_ns)| GetResume {
            offset: *offset,
            prefix_digest,
            size: *size,
            mtime_ns: *mtime_ns,
        });
        let made = self.lock(py)?.get_with(name, checksum, resume.as_ref());
        outgoing(py, made)
    }

    /// ``start``: a live command of this header (``op`` ``"start"``):
    /// ``(id, bytes)``. The connection is the command's until its ``exit``.
    fn start<'py>(&self, py: Python<'py>, header: &Bound<'py, PyAny>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let header = header_bytes(&self.codec, Some(header), None, b"")?;
        let header = header.ok_or_else(|| PyValueError::new_err("start needs a JSON-header codec"))?;
        let made = self.lock(py)?.start(&header);
        outgoing(py, made)
    }

    /// The id of the live command that holds the connection, or ``None``.
    #[getter]
    fn live(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        Ok(self.lock(py)?.live())
    }

    /// ``stdin`` frames of ``data`` for the live command (``eof``: then the
    /// end of its input).
    #[pyo3(signature = (data, eof=false))]
    fn stdin<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>, eof: bool) -> PyResult<Bound<'py, PyBytes>> {
        with_body(Some(data), |data| {
            let out = self.lock(py)?.stdin(data, eof).map_err(|e| session_error(py, e))?;
            Ok(PyBytes::new(py, &out))
        })
    }

    /// A ``signal`` frame for the live command (``"INT"``, ``"SIGTERM"``, ...).
    fn signal<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.lock(py)?.signal(name).map_err(|e| session_error(py, e))?;
        Ok(PyBytes::new(py, &data))
    }

    /// A ``resize`` frame for the live command's terminal.
    fn resize<'py>(&self, py: Python<'py>, columns: u16, lines: u16) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.lock(py)?.resize(columns, lines).map_err(|e| session_error(py, e))?;
        Ok(PyBytes::new(py, &data))
    }

    /// The caller of request ``id`` gives up: ``None`` if the connection goes
    /// on (the reply will be dropped, or a claim with none behind it is
    /// withdrawn), else the reason it must close (the session is closed).
    fn cancel(&self, py: Python<'_>, id: u64) -> PyResult<Option<&'static str>> {
        Ok(match self.lock(py)?.cancel(id) {
            Cancelled::NotPending | Cancelled::ReplyDropped | Cancelled::Withdrawn => None,
            Cancelled::MustClose(reason) => Some(reason),
        })
    }

    /// The driver closes the connection: no more events.
    fn abort(&self, py: Python<'_>, reason: &str) -> PyResult<()> {
        self.lock(py)?.abort(reason);
        Ok(())
    }

    /// Bytes from the server (any bytes-like object).
    fn receive_data(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut session = self.lock(py)?;
        with_body(Some(data), |data| {
            session.receive_data(data);
            Ok(())
        })
    }

    /// The next event, reading whole frames from ``sock`` (a socket or an
    /// ``ssl.SSLSocket``) as ``read_frame`` does until one makes an event:
    /// with the GIL released, within the socket's timeout (each frame), and
    /// Ctrl-C raising ``KeyboardInterrupt``. Its errors are ``read_frame``'s
    /// (``EOFError`` at a clean end). A body comes back as the ``bytes`` it
    /// was read into, not copied. ``untimed``: wait as long as it takes,
    /// whatever the socket's timeout (which is left as it is).
    ///
    /// ``into`` (a writable buffer) and ``want`` (``(id, fd)``): a live
    /// command's reader waiting for that stream. If the event is output of
    /// that stream that fits ``into``, its bytes go there and their count
    /// comes back instead of the tuple: no tuple is built and no Python
    /// copies them, which each line's latency felt.
    #[pyo3(signature = (sock, *, untimed = false, into = None, want = None))]
    fn read_event<'py>(
        &self,
        py: Python<'py>,
        sock: &Bound<'py, PyAny>,
        untimed: bool,
        into: Option<&Bound<'py, PyAny>>,
        want: Option<(u64, u8)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let within = if untimed { Within::Untimed } else { Within::Timeout };
        if into.is_some() != want.is_some() {
            return Err(PyValueError::new_err(
                "into and want go together: the buffer, and (id, fd) of the stream it is for",
            ));
        }
        let into = into.map(writable).transpose()?;
        let deliver = |event: &Event| -> PyResult<Option<Bound<'py, PyAny>>> {
            match (event, &into, want) {
                // (Empty output, which no server sends, would read as the stream's end.)
                (Event::Output { id, fd, data }, Some(into), Some(want)) if (*id, *fd) == want && !data.is_empty() => {
                    match copy_into(into, data) {
                        Some(n) => Ok(Some(n.into_pyobject(py)?.into_any())),
                        None => Ok(None),
                    }
                }
                _ => Ok(None),
            }
        };
        loop {
            let event = {
                let mut session = self.lock(py)?;
                match (session.next_event(), session.closed()) {
                    (Some(event), _) => Some(event),
                    (None, Some(reason)) => {
                        return Err(PyConnectionAbortedError::new_err(format!("the connection is closed ({reason})")))
                    }
                    (None, None) => None,
                }
            };
            if let Some(event) = event {
                if let Some(n) = deliver(&event)? {
                    return Ok(n);
                }
                return self.with_keys(|keys| event_to_py(py, event, None, keys));
            }
            let (header, body) = read_raw(py, &self.codec, sock, within)?;
            let frame = Frame { header: header.map(Bytes::from), body: bytes_of(&body) };
            let event = {
                let mut session = self.lock(py)?;
                session.receive_frame(frame);
                session.next_event()
            };
            if let Some(event) = event {
                if let Some(n) = deliver(&event)? {
                    return Ok(n);
                }
                return self.with_keys(|keys| event_to_py(py, event, Some(&body), keys));
            }
            // A frame that made no event (the reply of a cancelled request): the next.
        }
    }

    /// The upload's next ``data`` frame, sent to ``sock`` (as
    /// ``Codec.send``): its head, then ``chunk`` from its own buffer.
    fn send_data<'py>(&self, py: Python<'py>, sock: &Bound<'py, PyAny>, chunk: &Bound<'py, PyAny>) -> PyResult<()> {
        with_body(Some(chunk), |bytes| {
            let head = self.lock(py)?.put_data_head(bytes).map_err(|e| session_error(py, e))?;
            send_parts(py, sock, &head, Some(chunk), bytes)
        })
    }

    /// The server's stream ended.
    fn receive_eof(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py)?.receive_eof();
        Ok(())
    }

    /// The next event, or ``None`` until more bytes come.
    fn next_event<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let event = self.lock(py)?.next_event();
        self.with_keys(|keys| event.map(|e| event_to_py(py, e, None, keys)).transpose())
    }

    /// ``receive_data(data)``, then every event so far.
    fn feed<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let events = {
            let mut session = self.lock(py)?;
            with_body(Some(data), |data| {
                session.receive_data(data);
                Ok(())
            })?;
            session.events()
        };
        self.with_keys(|keys| events.into_iter().map(|e| event_to_py(py, e, None, keys)).collect())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let s = self.lock(py)?;
        Ok(match s.closed() {
            Some(reason) => format!("<ClientSession closed: {reason}>"),
            None => format!("<ClientSession open, {} in flight>", s.in_flight()),
        })
    }
}
