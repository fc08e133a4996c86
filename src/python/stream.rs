//! Where frames are read from and written to: Python sockets and file-like
//! objects. A plain socket takes the fast path (its file descriptor, or its
//! `SOCKET` on Windows, with the GIL released); SSL sockets and other objects are used through their methods.

use std::time::{Duration, Instant};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBlockingIOError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString, PyType};

use crate::codec::Codec;
use crate::io::read::{read_frame, BodyBuffer, ByteSource};
use crate::io::socket::{self, RawSocket};

use super::errors::{read_error, wait_error};
use super::frame::new_frame;
use super::header::header_to_py;

/// How reads and writes reach a Python object.
enum Endpoint<'py> {
    /// A plain `socket.socket`: its descriptor and its timeout as a deadline.
    Socket { sock: RawSocket, deadline: Option<Instant> },
    /// Anything else, through its methods.
    Object(Bound<'py, PyAny>),
}

/// True if `obj` is a `socket.socket` whose `method` is the C implementation's
/// (an `ssl.SSLSocket` overrides them: its bytes must go through OpenSSL).
fn is_plain_socket(obj: &Bound<'_, PyAny>, method: &str) -> PyResult<bool> {
    static SOCKET: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let py = obj.py();
    let base = SOCKET.import(py, "_socket", "socket")?;
    if !obj.is_instance(base)? {
        return Ok(false);
    }
    Ok(obj.get_type().getattr(method)?.is(&base.getattr(method)?))
}

fn endpoint<'py>(obj: &Bound<'py, PyAny>, method: &str, what: &str) -> PyResult<Endpoint<'py>> {
    endpoint_within(obj, method, what, Within::Timeout)
}

/// How long a read may wait.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// The socket's timeout (each frame as a whole).
    Timeout,
    /// As long as it takes, whatever the socket's timeout (Ctrl-C still
    /// interrupts).
    Untimed,
}

fn endpoint_within<'py>(obj: &Bound<'py, PyAny>, method: &str, what: &str, within: Within) -> PyResult<Endpoint<'py>> {
    if !is_plain_socket(obj, method)? {
        return Ok(Endpoint::Object(obj.clone()));
    }
    let sock = socket::from_fileno(obj.call_method0("fileno")?.extract()?)?;
    if within == Within::Untimed {
        return Ok(Endpoint::Socket { sock, deadline: None });
    }
    let timeout: Option<f64> = obj.call_method0("gettimeout")?.extract()?;
    let deadline = match timeout {
        None => None,
        Some(t) if t > 0.0 => Some(Instant::now() + Duration::from_secs_f64(t)),
        Some(_) => {
            return Err(PyValueError::new_err(format!(
                "{what} needs a blocking socket (or one with a timeout), and this one is non-blocking: \
                 feed what recv() returns to a FrameDecoder instead"
            )))
        }
    };
    Ok(Endpoint::Socket { sock, deadline })
}

/// Waits with the GIL released, checking for Ctrl-C between slices.
pub fn check_signals() -> Result<(), PyErr> {
    Python::attach(|py| py.check_signals())
}

struct SocketSource<'py> {
    py: Python<'py>,
    sock: RawSocket,
    deadline: Option<Instant>,
}

impl ByteSource for SocketSource<'_> {
    type Error = PyErr;
    fn read_some(&mut self, buf: &mut [u8]) -> PyResult<usize> {
        let (sock, deadline) = (self.sock, self.deadline);
        self.py.detach(|| socket::recv_some(sock, buf, deadline, &mut check_signals)).map_err(wait_error)
    }
}

/// Reads through `recv_into`, `readinto` or `read`, via a scratch bytearray so
/// that Python code never holds a view of Rust memory.
struct ObjectSource<'py> {
    obj: Bound<'py, PyAny>,
    method: &'static str,
    scratch: Option<Bound<'py, PyByteArray>>,
    deadline: Option<Deadline>,
}

/// An object with a timeout of its own (an `ssl.SSLSocket`) applies it to each
/// read; a frame is bounded as a whole, as on a plain socket: each read gets
/// what is left, and the timeout is put back afterwards.
struct Deadline {
    at: Instant,
    timeout: f64,
}

impl Deadline {
    fn of(obj: &Bound<'_, PyAny>) -> PyResult<Option<Deadline>> {
        if !obj.hasattr("gettimeout")? || !obj.hasattr("settimeout")? {
            return Ok(None);
        }
        let timeout: Option<f64> = obj.call_method0("gettimeout")?.extract()?;
        Ok(timeout.filter(|t| *t > 0.0 && t.is_finite()).map(|timeout| Deadline {
            at: Instant::now() + Duration::from_secs_f64(timeout.min(crate::protocol::MAX_SECONDS)),
            timeout,
        }))
    }

    /// Gives the next read what is left of the time, or fails once none is.
    fn arm(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(pyo3::exceptions::PyTimeoutError::new_err("timed out"));
        }
        obj.call_method1("settimeout", (left.as_secs_f64(),))?;
        Ok(())
    }

    fn restore(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        obj.call_method1("settimeout", (self.timeout,))?;
        Ok(())
    }
}

const SCRATCH: usize = 256 * 1024;

impl<'py> ObjectSource<'py> {
    fn new(obj: Bound<'py, PyAny>) -> PyResult<ObjectSource<'py>> {
        let method = ["recv_into", "readinto", "read"]
            .into_iter()
            .find(|m| obj.hasattr(*m).unwrap_or(false))
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "cannot read frames from {}: it has no recv_into(), readinto() or read()",
                    obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?;
        let deadline = Deadline::of(&obj)?;
        Ok(ObjectSource { obj, method, scratch: None, deadline })
    }
}

impl ByteSource for ObjectSource<'_> {
    type Error = PyErr;
    fn read_some(&mut self, buf: &mut [u8]) -> PyResult<usize> {
        let py = self.obj.py();
        if let Some(deadline) = &self.deadline {
            deadline.arm(&self.obj)?;
        }
        let want = buf.len().min(SCRATCH);
        let n = if self.method == "read" {
            let got = self.obj.call_method1("read", (want,))?;
            if got.is_none() {
                return Err(PyBlockingIOError::new_err("read() returned None: the stream is non-blocking"));
            }
            let data: &[u8] = got.extract()?;
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            n
        } else {
            let scratch = self.scratch.get_or_insert_with(|| PyByteArray::new(py, &vec![0u8; SCRATCH]));
            let view = py.get_type::<pyo3::types::PyMemoryView>().call1((&*scratch,))?;
            let window = view.get_item(pyo3::types::PySlice::new(py, 0, want as isize, 1))?;
            let got = self.obj.call_method1(self.method, (window,))?;
            view.call_method0("release")?;
            if got.is_none() {
                return Err(PyBlockingIOError::new_err(format!(
                    "{}() returned None: the stream is non-blocking",
                    self.method
                )));
            }
            let n: usize = got.extract()?;
            let n = n.min(want);
            // SAFETY: the bytearray is ours, holds SCRATCH bytes, and no Python code
            // runs while we copy out of it.
            let data = unsafe { scratch.as_bytes() };
            buf[..n].copy_from_slice(&data[..n]);
            n
        };
        Ok(n)
    }
}

/// A freshly made `bytes` object that the body is read into, in place. Its
/// memory is handed out a window at a time, zeroed just before use: pages a
/// peer never sends are never touched, so an announced but unsent body costs
/// address space, not memory.
struct BodyBuf<'py> {
    bytes: Bound<'py, PyBytes>,
    ptr: *mut u8,
    len: usize,
    zeroed: usize,
}

/// How far ahead of the data a body's memory is prepared.
const BODY_WINDOW: usize = 1 << 20;

impl<'py> BodyBuf<'py> {
    fn new(py: Python<'py>, len: usize) -> PyResult<BodyBuf<'py>> {
        // SAFETY: PyBytes_FromStringAndSize(NULL, n) makes an uninitialized bytes
        // object of n bytes; nothing reads it before `window` has zeroed each part
        // and the body is complete. PyBytes_AsString gives its writable buffer.
        unsafe {
            let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as pyo3::ffi::Py_ssize_t);
            let bytes = Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked::<PyBytes>();
            let ptr = pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) as *mut u8;
            Ok(BodyBuf { bytes, ptr, len, zeroed: 0 })
        }
    }
}

impl AsRef<[u8]> for BodyBuf<'_> {
    fn as_ref(&self) -> &[u8] {
        debug_assert_eq!(self.zeroed, self.len);
        self.bytes.as_bytes()
    }
}

impl BodyBuffer for BodyBuf<'_> {
    fn size(&self) -> usize {
        self.len
    }

    fn window(&mut self, filled: usize) -> &mut [u8] {
        let end = self.len.min(filled + BODY_WINDOW);
        if self.zeroed < end {
            // SAFETY: [zeroed, end) lies inside the object's buffer.
            unsafe { std::ptr::write_bytes(self.ptr.add(self.zeroed), 0, end - self.zeroed) };
            self.zeroed = end;
        }
        // SAFETY: [filled, end) is initialized (zeroed or already read), inside
        // the buffer, and the object is ours alone until it is returned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(filled), end - filled) }
    }
}

/// Reads one whole frame from a socket or file-like object.
pub fn read_from<'py>(py: Python<'py>, codec: &Codec, source: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let (header, body) = read_raw(py, codec, source, Within::Timeout)?;
    let header = match header {
        Some(bytes) => header_to_py(py, &bytes)?,
        None => PyDict::new(py),
    };
    new_frame(header, body)
}

/// Reads one whole frame from a socket or file-like object: the bytes of its
/// JSON header (`None` in length-only mode) and its body, read in place into
/// a new `bytes`.
pub fn read_raw<'py>(
    py: Python<'py>,
    codec: &Codec,
    source: &Bound<'py, PyAny>,
    within: Within,
) -> PyResult<(Option<Vec<u8>>, Bound<'py, PyBytes>)> {
    let alloc = |len| BodyBuf::new(py, len);
    let result = match endpoint_within(source, "recv_into", "read_frame", within)? {
        // A plain socket's timeout is not changed for an untimed read (two
        // system calls a frame): the wait is ours, and is given no deadline.
        Endpoint::Socket { sock, deadline } => read_frame(codec, &mut SocketSource { py, sock, deadline }, alloc),
        Endpoint::Object(obj) => {
            // An object applies its own timeout: none for this read.
            let saved = match within {
                Within::Untimed if obj.hasattr("settimeout")? => {
                    let saved = obj.call_method0("gettimeout")?;
                    obj.call_method1("settimeout", (py.None(),))?;
                    Some(saved)
                }
                _ => None,
            };
            let mut source = ObjectSource::new(obj)?;
            let mut read = read_frame(codec, &mut source, alloc);
            if let Some(deadline) = &source.deadline {
                let restored = deadline.restore(&source.obj);
                if read.is_ok() {
                    restored?;
                }
            }
            if let Some(saved) = saved {
                let restored = source.obj.call_method1("settimeout", (saved,));
                if let (Ok(_), Err(e)) = (&read, restored) {
                    read = Err(crate::io::read::ReadError::Source(e));
                }
            }
            read
        }
    };
    let frame = result.map_err(|e| read_error(py, e))?;
    Ok((frame.header, frame.body.bytes))
}

/// Calls `f` with the bytes of a body given as bytes, bytearray, memoryview
/// (any C-contiguous buffer) or str (as UTF-8), without copying it.
pub fn with_body<R>(body: Option<&Bound<'_, PyAny>>, f: impl FnOnce(&[u8]) -> PyResult<R>) -> PyResult<R> {
    let Some(body) = body else { return f(b"") };
    if let Ok(b) = body.cast::<PyBytes>() {
        return f(b.as_bytes());
    }
    if let Ok(s) = body.cast::<PyString>() {
        return f(s.to_str()?.as_bytes());
    }
    let buffer = PyUntypedBuffer::get(body).map_err(|_| {
        PyTypeError::new_err(format!(
            "body must be bytes, bytearray, memoryview or str, not {}",
            body.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("body buffer must be C-contiguous"));
    }
    // SAFETY: the buffer export keeps the memory alive and unmoved until `buffer`
    // drops, after `f` returns.
    let slice = unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) };
    f(slice)
}

/// Sends `head` then `body` to a socket or file-like object, completely.
pub fn send_to(py: Python<'_>, sink: &Bound<'_, PyAny>, head: &[u8], body: &[u8]) -> PyResult<()> {
    match endpoint(sink, "sendall", "send_frame")? {
        Endpoint::Socket { sock, deadline } => {
            py.detach(|| socket::send_all(sock, &[head, body], deadline, &mut check_signals)).map_err(wait_error)
        }
        Endpoint::Object(obj) => {
            if obj.hasattr("sendall")? {
                obj.call_method1("sendall", (PyBytes::new(py, head),))?;
                if !body.is_empty() {
                    obj.call_method1("sendall", (PyBytes::new(py, body),))?;
                }
                Ok(())
            } else if obj.hasattr("write")? {
                write_all(&obj, head)?;
                write_all(&obj, body)
            } else {
                Err(PyTypeError::new_err(format!(
                    "cannot send frames to {}: it has no sendall() or write()",
                    obj.get_type().name()?
                )))
            }
        }
    }
}

/// `write()` may take less than it was given (raw files, pipes): finish the job.
fn write_all(obj: &Bound<'_, PyAny>, mut data: &[u8]) -> PyResult<()> {
    let py = obj.py();
    while !data.is_empty() {
        let written = obj.call_method1("write", (PyBytes::new(py, data),))?;
        if written.is_none() {
            return Err(PyBlockingIOError::new_err("write() returned None: the stream is non-blocking"));
        }
        let n: usize = written.extract()?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        data = &data[n.min(data.len())..];
    }
    Ok(())
}

/// Builds the bytes of a whole frame, written straight into the result.
pub fn pack<'py>(
    py: Python<'py>,
    codec: &Codec,
    body: Option<&Bound<'py, PyAny>>,
    header: Option<&Bound<'py, PyAny>>,
    fields: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyBytes>> {
    with_body(body, |body| {
        let header = header_bytes(codec, header, fields, body)?;
        let header = header.as_deref().unwrap_or_default();
        let prefix = codec
            .encode_prefix(codec.json_header.then_some(header), body.len())
            .map_err(|e| super::errors::frame_error(py, &e))?;
        let (p, h) = (prefix.len(), header.len());
        PyBytes::new_with(py, p + h + body.len(), |out| {
            out[..p].copy_from_slice(&prefix);
            out[p..p + h].copy_from_slice(header);
            out[p + h..].copy_from_slice(body);
            Ok(())
        })
    })
}

/// The JSON header in JSON-header mode; `None` in length-only mode, which
/// refuses a header.
pub fn header_bytes(
    codec: &Codec,
    header: Option<&Bound<'_, PyAny>>,
    fields: Option<&Bound<'_, PyDict>>,
    body: &[u8],
) -> PyResult<Option<Vec<u8>>> {
    if codec.json_header {
        return Ok(Some(super::header::encode_header(codec, header, fields, body)?));
    }
    if header.is_some() || fields.is_some_and(|f| !f.is_empty()) {
        return Err(PyValueError::new_err(
            "a length-only codec (json_header=False) carries no header: pass only a body",
        ));
    }
    Ok(None)
}

/// Everything before the body: length prefix and, in JSON-header mode, the header.
fn encode_head(
    py: Python<'_>,
    codec: &Codec,
    header: Option<&Bound<'_, PyAny>>,
    fields: Option<&Bound<'_, PyDict>>,
    body: &[u8],
) -> PyResult<Vec<u8>> {
    let header = header_bytes(codec, header, fields, body)?;
    codec.encode_head(header.as_deref(), body.len()).map_err(|e| super::errors::frame_error(py, &e))
}

/// Packs and sends one frame.
pub fn send<'py>(
    py: Python<'py>,
    codec: &Codec,
    sink: &Bound<'py, PyAny>,
    body: Option<&Bound<'py, PyAny>>,
    header: Option<&Bound<'py, PyAny>>,
    fields: Option<&Bound<'py, PyDict>>,
) -> PyResult<()> {
    with_body(body, |bytes| {
        let head = encode_head(py, codec, header, fields, bytes)?;
        send_parts(py, sink, &head, body, bytes)
    })
}

/// Sends a frame's `head` and its body (`bytes`, the contents of `body`).
pub fn send_parts<'py>(
    py: Python<'py>,
    sink: &Bound<'py, PyAny>,
    head: &[u8],
    body: Option<&Bound<'py, PyAny>>,
    bytes: &[u8],
) -> PyResult<()> {
    {
        match body {
            // An ssl.SSLSocket (or any object with sendall): the body object
            // goes as it is, not copied into a new bytes first (a 1 MiB
            // upload chunk cost a fresh allocation and its page faults).
            Some(body)
                if !body.is_instance_of::<PyString>()
                    && !is_plain_socket(sink, "sendall")?
                    && sink.hasattr("sendall")? =>
            {
                sink.call_method1("sendall", (PyBytes::new(py, head),))?;
                if !bytes.is_empty() {
                    sink.call_method1("sendall", (body,))?;
                }
                Ok(())
            }
            _ => send_to(py, sink, head, bytes),
        }
    }
}
