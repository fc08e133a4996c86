//! The read side of `rframe.AsyncClient`'s connection protocol.
//!
//! `_Connection` (python/rframe/_async.py) is an `asyncio.BufferedProtocol`:
//! the event loop asks it for a buffer before every read and reports every
//! read. Answering with a memoryview slice costs a new view and a buffer
//! export per read, a good part of what decoding a small reply costs; this
//! reads the bytes straight from the bytearray. It decodes them itself, each
//! header's dict built in the pass that checks it (as `FrameDecoder` does),
//! gives the session whole frames (`receive_frame`), and hands each reply to
//! the future waiting for its request id.

use std::cell::RefCell;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString};
use pyo3::{ffi, intern};

use super::client_session::{bytes_of, event_to_py, frame_to_py, PyClientSession};
use super::frame::new_frame;
use super::header::{KeyCache, PyFrames};
use crate::codec::{Decoder, Frame, FrameError, FrameModel, HeaderFacts};
use crate::protocol::client::Event;

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

/// The reader's frames: the header's dict built in the one pass that checks
/// it (as `FrameDecoder` builds it), with its JSON text for the session's
/// rules; the body read into its `bytes`.
struct SessionFrames<'a, 'py> {
    inner: PyFrames<'a, 'py>,
}

type ReadHeader = (Py<PyDict>, Bytes);

impl FrameModel for SessionFrames<'_, '_> {
    type Header = ReadHeader;
    type Body = Py<PyBytes>;

    fn parse(&mut self, bytes: &[u8], digest_key: Option<&str>) -> Result<(ReadHeader, HeaderFacts), FrameError> {
        let (dict, facts) = self.inner.parse(bytes, digest_key)?;
        Ok(((dict, Bytes::copy_from_slice(bytes)), facts))
    }

    fn take_body(&mut self, buf: &mut BytesMut, len: usize) -> Py<PyBytes> {
        self.inner.take_body(buf, len)
    }
}

struct ReaderState {
    decoder: Decoder<ReadHeader>,
    buf: BytesMut,
    keys: KeyCache,
}

/// A frame's Python objects, made when it was read: its reply's, if it makes one.
type Objects = (Option<Py<PyDict>>, Py<PyBytes>);

/// Decodes what the event loop read into this thread's read buffer, and
/// gives the session whole frames. Private to ``rframe._async``.
#[pyclass(frozen, name = "_SessionReader", module = "rframe._rframe")]
pub struct PySessionReader {
    session: Py<PyClientSession>,
    state: Mutex<ReaderState>,
}

impl PySessionReader {
    /// The session's events for the frames decoded so far (and the error that
    /// ended them), each reply with the objects made for its frame. Python
    /// objects are made while only the reader is locked; the session is then
    /// fed without running Python code.
    fn events(
        &self,
        py: Python<'_>,
        fill: impl FnOnce(&mut BytesMut) -> PyResult<()>,
        eof: bool,
    ) -> PyResult<Vec<(Event, Option<Objects>)>> {
        let (frames, error) = {
            let mut state = self
                .state
                .lock_py_attached(py)
                .map_err(|_| PyRuntimeError::new_err("the reader is broken by an earlier panic"))?;
            let ReaderState { decoder, buf, keys } = &mut *state;
            fill(buf)?;
            let mut model = SessionFrames { inner: PyFrames { py, keys } };
            let mut frames = Vec::new();
            let error = loop {
                let next =
                    if eof { decoder.decode_eof_with(buf, &mut model) } else { decoder.decode_with(buf, &mut model) };
                match next {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break None,
                    Err(err) => break Some(err),
                }
                if eof {
                    break None;
                }
            };
            (frames, error)
        };
        let mut session = self.session.get().lock(py)?;
        let mut made = Vec::new();
        for Frame { header, body } in frames {
            let (dict, text) = header.map_or((None, None), |(dict, text)| (Some(dict), Some(text)));
            session.receive_frame(Frame { header: text, body: bytes_of(body.bind(py)) });
            let mut objects = Some((dict, body));
            while let Some(event) = session.next_event() {
                let its = matches!(event, Event::Reply { .. } | Event::Unsolicited { .. });
                made.push((event, if its { objects.take() } else { None }));
            }
        }
        match error {
            Some(err) => session.receive_frame_error(err),
            None if eof => session.receive_eof(),
            None => {}
        }
        made.extend(session.events().into_iter().map(|e| (e, None)));
        Ok(made)
    }
}

/// The frame object of a reply: the one made when it was read, if it was.
fn frame_object<'py>(
    py: Python<'py>,
    frame: Frame,
    objects: Option<Objects>,
    session: &PyClientSession,
) -> PyResult<Bound<'py, PyAny>> {
    match objects {
        Some((dict, body)) => {
            new_frame(dict.map_or_else(|| PyDict::new(py), |d| d.into_bound(py)), body.into_bound(py))
        }
        None => session.with_keys(|keys| frame_to_py(py, frame, None, keys)),
    }
}

/// An event as ``ClientSession``'s tuples, a reply's frame the one made when it was read.
fn event_object<'py>(
    py: Python<'py>,
    event: Event,
    objects: Option<Objects>,
    session: &PyClientSession,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match event {
        Event::Reply { id, frame } => {
            ("reply", id, frame_object(py, frame, objects, session)?).into_pyobject(py)?.into_any()
        }
        Event::Unsolicited { frame } => {
            ("unsolicited", frame_object(py, frame, objects, session)?).into_pyobject(py)?.into_any()
        }
        other => session.with_keys(|keys| event_to_py(py, other, None, keys))?,
    })
}

#[pymethods]
impl PySessionReader {
    #[new]
    fn new(session: Bound<'_, PyClientSession>) -> PySessionReader {
        let decoder = Decoder::with_codec(session.get().codec);
        let state = ReaderState { decoder, buf: BytesMut::new(), keys: KeyCache::default() };
        PySessionReader { session: session.unbind(), state: Mutex::new(state) }
    }

    /// ``BufferedProtocol.get_buffer``: a view of the whole read buffer of
    /// the calling thread (the thread the loop runs in).
    #[pyo3(signature = (sizehint, /))]
    fn get_buffer(&self, py: Python<'_>, sizehint: isize) -> PyResult<Py<PyMemoryView>> {
        let _ = sizehint; // the buffer is as large as it is
        read_buffer_view(py)
    }

    /// ``BufferedProtocol.buffer_updated``: the first ``nbytes`` of the
    /// calling thread's read buffer (what the loop just read into it) are
    /// decoded, and the whole frames go to the session. Each reply whose id
    /// has a future in ``waiters`` (a dict) is taken out of it and resolved
    /// with ``set_result`` (a future already done keeps its result). At the
    /// first other event (an error, a transfer's step, a reply nobody waits
    /// for yet) it stops: that event and every one after it come back, in
    /// order, as ``ClientSession``'s tuples, for the driver; ``None`` when
    /// every event was a reply handed over.
    #[pyo3(signature = (nbytes, waiters, /))]
    fn deliver<'py>(
        &self,
        py: Python<'py>,
        nbytes: usize,
        waiters: &Bound<'py, PyDict>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let buffer = read_buffer(py)?;
        let events = self.events(
            py,
            |buf| {
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
            },
            false,
        )?;
        // Handed out with no lock held: set_result schedules the futures'
        // callbacks with the loop's call_soon, which may be Python code.
        let (done, set_result) = (intern!(py, "done"), intern!(py, "set_result"));
        let session = self.session.get();
        let mut rest: Option<Bound<'py, PyList>> = None;
        for (event, objects) in events {
            if let Some(rest) = &rest {
                rest.append(event_object(py, event, objects, session)?)?;
                continue;
            }
            let event = match event {
                Event::Reply { id, frame } => {
                    let key = id.into_pyobject(py)?;
                    match waiters.get_item(&key)? {
                        Some(fut) => {
                            waiters.del_item(&key)?;
                            if !call_method(&fut, done, None)?.is_truthy()? {
                                let frame = frame_object(py, frame, objects, session)?;
                                call_method(&fut, set_result, Some(&frame))?;
                            }
                            continue;
                        }
                        None => Event::Reply { id, frame },
                    }
                }
                other => other,
            };
            rest = Some(PyList::new(py, [event_object(py, event, objects, session)?])?);
        }
        Ok(rest)
    }

    /// ``eof_received``: the server's stream ended; every event that makes
    /// (the last is ``("closed", reason, error_or_None)``).
    fn receive_eof<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let events = self.events(py, |_| Ok(()), true)?;
        let session = self.session.get();
        events.into_iter().map(|(event, objects)| event_object(py, event, objects, session)).collect()
    }
}

/// `obj.name()` or `obj.name(arg)`. Under abi3 before Python 3.12, pyo3's
/// `call_method` makes a bound method and an argument tuple for every call;
/// `PyObject_CallMethodObjArgs` looks the method up without binding it and
/// passes the arguments on the stack.
fn call_method<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    arg: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let end = std::ptr::null_mut::<ffi::PyObject>();
    // SAFETY: every pointer is a live object borrowed for the call, and the
    // argument list ends with NULL, as the function requires; it returns a
    // new reference or NULL with an exception set.
    unsafe {
        let result = match arg {
            Some(arg) => ffi::PyObject_CallMethodObjArgs(obj.as_ptr(), name.as_ptr(), arg.as_ptr(), end),
            None => ffi::PyObject_CallMethodObjArgs(obj.as_ptr(), name.as_ptr(), end),
        };
        Bound::from_owned_ptr_or_err(obj.py(), result)
    }
}
