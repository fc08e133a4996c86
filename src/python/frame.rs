//! `rframe.Frame`: a decoded frame, a (header, body) pair.
//!
//! This one type is built on the C API (`PyType_FromSpec`) rather than as a
//! `#[pyclass]`: a decoder makes one per frame and the program drops it soon
//! after, and pyo3's generic object creation and destruction (a `tp_new` call
//! through the base type, a trampoline on dealloc) cost about 290 instructions
//! a frame more than this plain allocation does: nearly a tenth of decoding a
//! small frame, and 13% of its time (bench/decode_count.py, bench/framing.py).
//!
//! The object is a header dict and a body bytes, both strong references, set
//! once when it is made and never changed. It is not tracked by the garbage
//! collector: a frame refers only to its dict and bytes, so a cycle needs a
//! header edited to hold its own frame (which the `#[pyclass]`, tracked but
//! visiting nothing, did not collect either).

use std::any::Any;
use std::ffi::{c_int, c_void, CStr};
use std::mem::offset_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::{PyIndexError, PyMemoryError, PyTypeError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple, PyType};

#[repr(C)]
struct FrameObject {
    ob_base: ffi::PyObject,
    /// A dict: the header (`{}` for a length-only codec).
    header: *mut ffi::PyObject,
    /// A bytes: the body.
    body: *mut ffi::PyObject,
}

static FRAME_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The `rframe.Frame` type object (made on first use).
pub fn frame_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    FRAME_TYPE.get_or_try_init(py, || make_type(py)).map(|t| t.bind(py))
}

/// A new `Frame` of `header` and `body`.
pub fn new_frame<'py>(header: Bound<'py, PyDict>, body: Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyAny>> {
    let py = header.py();
    let tp = frame_type(py)?.as_type_ptr();
    // SAFETY: the size is FrameObject's; `PyObject_Init` sets the header of
    // the fresh memory (type, reference count; it takes a reference to our
    // heap type, which dealloc gives back), and both fields are set before
    // anything can see the object. Ownership of `header` and `body` moves in.
    unsafe {
        let obj = ffi::PyObject_Malloc(std::mem::size_of::<FrameObject>()).cast::<ffi::PyObject>();
        if obj.is_null() {
            return Err(PyMemoryError::new_err(()));
        }
        ffi::PyObject_Init(obj, tp);
        let frame = obj.cast::<FrameObject>();
        (*frame).header = header.into_ptr();
        (*frame).body = body.into_ptr();
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// The header and body of `obj` if it is a `Frame`.
pub fn frame_parts<'py>(obj: &Bound<'py, PyAny>) -> Option<(Bound<'py, PyDict>, Bound<'py, PyBytes>)> {
    let py = obj.py();
    let tp = frame_type(py).ok()?;
    if !obj.get_type().is(tp) {
        return None;
    }
    // SAFETY: `obj` is a Frame (its type is exactly ours: the type cannot be
    // subclassed), so it is a FrameObject with both fields set.
    unsafe { Some(parts(py, obj.as_ptr())) }
}

/// # Safety
/// `obj` must be a live FrameObject.
unsafe fn parts<'py>(py: Python<'py>, obj: *mut ffi::PyObject) -> (Bound<'py, PyDict>, Bound<'py, PyBytes>) {
    let frame = obj.cast::<FrameObject>();
    unsafe {
        (
            Bound::from_borrowed_ptr(py, (*frame).header).cast_into_unchecked(),
            Bound::from_borrowed_ptr(py, (*frame).body).cast_into_unchecked(),
        )
    }
}

fn pair<'py>(header: &Bound<'py, PyDict>, body: &Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(header.py(), [header.as_any(), body.as_any()])
}

const DOC: &CStr = c"Frame(header=None, body=None)
--

One frame: a header dict and a body.

It unpacks and compares like the tuple ``(header, body)``:

>>> frame = Frame({\"total_size\": 2}, b\"hi\")
>>> header, body = frame
>>> frame == ({\"total_size\": 2}, b\"hi\")
True";

fn make_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    // The tables must outlive the type, which lives as long as the process.
    let members: &'static mut [ffi::PyMemberDef] = Box::leak(Box::new([
        member(c"header", offset_of!(FrameObject, header), c"The header dict (``{}`` for a length-only codec)."),
        member(c"body", offset_of!(FrameObject, body), c"The body bytes."),
        // SAFETY: an all-zero PyMemberDef ends the table.
        unsafe { std::mem::zeroed() },
    ]));
    let getset: &'static mut [ffi::PyGetSetDef] = Box::leak(Box::new([
        ffi::PyGetSetDef {
            name: c"text".as_ptr(),
            get: Some(text),
            set: None,
            doc: c"The body decoded with the header's ``encoding`` field, else UTF-8.".as_ptr(),
            closure: ptr::null_mut(),
        },
        ffi::PyGetSetDef::default(),
    ]));
    let methods: &'static mut [ffi::PyMethodDef] = Box::leak(Box::new([
        ffi::PyMethodDef {
            ml_name: c"__reduce__".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: reduce },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: ptr::null(),
        },
        ffi::PyMethodDef::zeroed(),
    ]));
    let slot = |slot: c_int, pfunc: *mut c_void| ffi::PyType_Slot { slot, pfunc };
    let slots: &'static mut [ffi::PyType_Slot] = Box::leak(Box::new([
        slot(ffi::Py_tp_doc, DOC.as_ptr().cast_mut().cast()),
        slot(ffi::Py_tp_new, new as *mut c_void),
        slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
        slot(ffi::Py_tp_members, members.as_mut_ptr().cast()),
        slot(ffi::Py_tp_getset, getset.as_mut_ptr().cast()),
        slot(ffi::Py_tp_methods, methods.as_mut_ptr().cast()),
        slot(ffi::Py_tp_iter, iter as *mut c_void),
        slot(ffi::Py_sq_length, len as *mut c_void),
        slot(ffi::Py_sq_item, item as *mut c_void),
        slot(ffi::Py_tp_richcompare, richcompare as *mut c_void),
        // The header is a dict, so a frame is no more hashable than its tuple would be.
        slot(ffi::Py_tp_hash, ffi::PyObject_HashNotImplemented as *mut c_void),
        slot(ffi::Py_tp_repr, repr as *mut c_void),
        slot(0, ptr::null_mut()),
    ]));
    let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
        name: c"rframe.Frame".as_ptr(),
        basicsize: std::mem::size_of::<FrameObject>() as c_int,
        itemsize: 0,
        // Not a base type: a subclass would need its own allocation.
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_IMMUTABLETYPE) as _,
        slots: slots.as_mut_ptr(),
    }));
    // SAFETY: a complete spec with 'static tables; the result is a new reference or NULL.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(spec)) }
        .and_then(|t| t.cast_into::<PyType>().map_err(PyErr::from))
        .map(Bound::unbind)
}

fn member(name: &'static CStr, offset: usize, doc: &'static CStr) -> ffi::PyMemberDef {
    ffi::PyMemberDef {
        name: name.as_ptr(),
        type_code: ffi::Py_T_OBJECT_EX,
        offset: offset as ffi::Py_ssize_t,
        flags: ffi::Py_READONLY,
        doc: doc.as_ptr(),
    }
}

/// Runs the body of a slot CPython calls (always with the interpreter
/// attached): an error is raised as the exception, a panic as
/// `PanicException`; either way the slot returns `failed`.
///
/// The body runs without pyo3's own entry bookkeeping (it costs more than
/// these slots do), so it must not drop a `Py` or a `PyErr`: pyo3 would queue
/// the release for later, unbounded. An error is raised inside
/// `Python::attach`, which does the bookkeeping, so its objects go at once.
fn slot_body<T>(failed: T, body: impl FnOnce(Python<'_>) -> PyResult<T>) -> T {
    // SAFETY: CPython calls type slots with the interpreter attached.
    let py = unsafe { Python::assume_attached() };
    let err = match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(value)) => return value,
        Ok(Err(err)) => err,
        Err(payload) => panic_error(payload),
    };
    Python::attach(|py| err.restore(py));
    failed
}

fn panic_error(payload: Box<dyn Any + Send>) -> PyErr {
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic from Rust code".into());
    PanicException::new_err((message,))
}

/// `Frame(header=None, body=b"")`.
unsafe extern "C" fn new(
    subtype: *mut ffi::PyTypeObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    slot_body(ptr::null_mut(), |py| {
        // Frame is not a base type: the type called is always Frame itself.
        debug_assert_eq!(Some(subtype), frame_type(py).ok().map(|t| t.as_type_ptr()));
        // SAFETY: CPython passes a tuple and a dict or NULL, borrowed.
        let args = unsafe { Bound::from_borrowed_ptr(py, args).cast_into_unchecked::<PyTuple>() };
        let kwargs = unsafe { Bound::from_borrowed_ptr_or_opt(py, kwargs) };
        let kwargs = kwargs.map(|k| k.cast_into::<PyDict>()).transpose()?;
        let (header, body) = arguments(&args, kwargs.as_ref())?;
        let header = match header.filter(|h| !h.is_none()) {
            None => PyDict::new(py),
            Some(h) => match h.cast_into::<PyDict>() {
                Ok(dict) => dict,
                Err(e) => {
                    let name = e.into_inner().get_type().name()?;
                    return Err(PyTypeError::new_err(format!("Frame() argument 'header' must be a dict, not {name}")));
                }
            },
        };
        let body = match body.filter(|b| !b.is_none()) {
            None => PyBytes::new(py, b""),
            Some(b) => match b.cast_into::<PyBytes>() {
                Ok(bytes) => bytes,
                Err(e) => {
                    let b = e.into_inner();
                    // Not bytes(b) for anything: bytes(5) is five zero bytes.
                    // SAFETY: a live object; the call only inspects its type.
                    if unsafe { ffi::PyObject_CheckBuffer(b.as_ptr()) } == 0 {
                        return Err(PyTypeError::new_err(format!(
                            "Frame() argument 'body' must be a bytes-like object, not {}",
                            b.get_type().name()?
                        )));
                    }
                    py.get_type::<PyBytes>().call1((b,))?.cast_into::<PyBytes>()?
                }
            },
        };
        Ok(new_frame(header, body)?.into_ptr())
    })
}

type Argument<'py> = Option<Bound<'py, PyAny>>;

/// `header` and `body`, by position or by name, as Python binds them.
fn arguments<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<(Argument<'py>, Argument<'py>)> {
    if args.len() > 2 {
        return Err(PyTypeError::new_err(format!("Frame() takes at most 2 arguments ({} given)", args.len())));
    }
    let mut bound: [Argument<'py>; 2] = [None, None];
    for (at, arg) in args.iter().enumerate() {
        bound[at] = Some(arg);
    }
    for (key, value) in kwargs.into_iter().flatten() {
        // Compared without making a PyErr (see slot_body): keyword names are str.
        // SAFETY: a live str and a NUL-terminated ASCII name; the call cannot fail.
        let is = |name: &CStr| unsafe { ffi::PyUnicode_CompareWithASCIIString(key.as_ptr(), name.as_ptr()) == 0 };
        let at = if is(c"header") {
            0
        } else if is(c"body") {
            1
        } else {
            return Err(PyTypeError::new_err(format!("Frame() got an unexpected keyword argument {}", key.repr()?)));
        };
        if bound[at].is_some() {
            return Err(PyTypeError::new_err(format!("Frame() got multiple values for argument {}", key.repr()?)));
        }
        bound[at] = Some(value);
    }
    let [header, body] = bound;
    Ok((header, body))
}

unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls this once, when the last reference to a Frame
    // (made by new_frame) goes; it owns both fields and a reference to its
    // heap type.
    unsafe {
        let frame = obj.cast::<FrameObject>();
        ffi::Py_DECREF((*frame).header);
        ffi::Py_DECREF((*frame).body);
        let tp = ffi::Py_TYPE(obj);
        ffi::PyObject_Free(obj.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

unsafe extern "C" fn text(obj: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    slot_body(ptr::null_mut(), |py| {
        // SAFETY: CPython calls a Frame getter with a Frame.
        let (header, body) = unsafe { parts(py, obj) };
        let encoding = match header.get_item("encoding")? {
            Some(e) if e.is_instance_of::<PyString>() => e,
            _ => PyString::new(py, "utf-8").into_any(),
        };
        Ok(body.call_method1("decode", (encoding,))?.into_ptr())
    })
}

unsafe extern "C" fn iter(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    slot_body(ptr::null_mut(), |py| {
        // SAFETY: CPython calls a Frame's tp_iter with a Frame.
        let (header, body) = unsafe { parts(py, obj) };
        Ok(pair(&header, &body)?.try_iter()?.into_ptr())
    })
}

unsafe extern "C" fn len(_obj: *mut ffi::PyObject) -> ffi::Py_ssize_t {
    2
}

/// `frame[i]`; CPython has already added the length to a negative `i`.
unsafe extern "C" fn item(obj: *mut ffi::PyObject, index: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    slot_body(ptr::null_mut(), |py| {
        // SAFETY: CPython calls a Frame's sq_item with a Frame.
        let (header, body) = unsafe { parts(py, obj) };
        match index {
            0 => Ok(header.into_any().into_ptr()),
            1 => Ok(body.into_any().into_ptr()),
            _ => Err(PyIndexError::new_err("Frame index out of range")),
        }
    })
}

unsafe extern "C" fn richcompare(obj: *mut ffi::PyObject, other: *mut ffi::PyObject, op: c_int) -> *mut ffi::PyObject {
    slot_body(ptr::null_mut(), |py| {
        // SAFETY: CPython calls a Frame's tp_richcompare with a Frame first and a live object.
        let (header, body) = unsafe { parts(py, obj) };
        let other = unsafe { Bound::from_borrowed_ptr(py, other) };
        let other_pair = if let Some((h, b)) = frame_parts(&other) {
            pair(&h, &b)?.into_any()
        } else if other.is_instance_of::<PyTuple>() {
            other
        } else {
            return Ok(py.NotImplemented().into_ptr());
        };
        if op != ffi::Py_EQ && op != ffi::Py_NE {
            return Ok(py.NotImplemented().into_ptr());
        }
        // SAFETY: two live objects and a comparison CPython gave us; a new reference or NULL.
        let result = unsafe { ffi::PyObject_RichCompare(pair(&header, &body)?.as_ptr(), other_pair.as_ptr(), op) };
        unsafe { Bound::from_owned_ptr_or_err(py, result) }.map(Bound::into_ptr)
    })
}

unsafe extern "C" fn repr(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    slot_body(ptr::null_mut(), |py| {
        const SHOWN: usize = 64;
        // SAFETY: CPython calls a Frame's tp_repr with a Frame.
        let (header, body) = unsafe { parts(py, obj) };
        let bytes = body.as_bytes();
        let body_repr = if bytes.len() > SHOWN {
            format!("{}... ({} bytes)", PyBytes::new(py, &bytes[..SHOWN]).repr()?, bytes.len())
        } else {
            body.repr()?.to_string()
        };
        let text = format!("Frame(header={}, body={})", header.repr()?, body_repr);
        Ok(PyString::new(py, &text).into_ptr())
    })
}

/// `__reduce__`: `Frame(header, body)` again, for pickle and copy.
unsafe extern "C" fn reduce(obj: *mut ffi::PyObject, _unused: *mut ffi::PyObject) -> *mut ffi::PyObject {
    slot_body(ptr::null_mut(), |py| {
        // SAFETY: CPython calls a Frame method with a Frame.
        let (header, body) = unsafe { parts(py, obj) };
        let tp = frame_type(py)?;
        Ok(PyTuple::new(py, [tp.as_any(), pair(&header, &body)?.as_any()])?.into_ptr())
    })
}
