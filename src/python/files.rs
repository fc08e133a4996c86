//! File helpers for the Python clients' downloads.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::stream::with_body;
use crate::codec::{Checksum, Hasher};
use crate::files::{Identity, Upload};

/// A file being received at a local path: the server's uploads' temporary
/// file (`files::Upload::local`), for ``rframe._files.LocalFile``. Private.
#[pyclass(frozen, name = "_PartFile", module = "rframe._rframe")]
pub struct PyPartFile {
    /// `None` once committed or discarded.
    upload: Mutex<Option<Upload>>,
    temp: Py<PyBytes>,
    /// A resumable one: the bytes kept when it was opened, and the source's
    /// `(size, mtime_ns)` recorded beside them.
    kept: u64,
    recorded: Option<(u64, i64)>,
}

fn finished() -> PyErr {
    PyValueError::new_err("the file was already committed or discarded")
}

impl PyPartFile {
    fn take(&self) -> PyResult<Upload> {
        self.upload.lock().expect("lock").take().ok_or_else(finished)
    }
}

#[pymethods]
impl PyPartFile {
    /// A temporary file beside ``path``, created and locked; ``OSError`` as
    /// the system says (a missing directory: ``FileNotFoundError``).
    /// ``resume=True``: the part an earlier cut download to ``path`` kept
    /// (``kept`` bytes, from a source of ``recorded`` size and mtime), or a
    /// new one; it stays if dropped unfinished.
    #[new]
    #[pyo3(signature = (path, overwrite, resume=false))]
    fn new(py: Python<'_>, path: PathBuf, overwrite: bool, resume: bool) -> PyResult<PyPartFile> {
        let (upload, recorded) = py.detach(|| {
            if resume {
                Upload::local_kept(&path, overwrite)
            } else {
                Upload::local(&path, overwrite).map(|upload| (upload, None))
            }
        })?;
        let temp = PyBytes::new(py, upload.temp_name().to_bytes()).unbind();
        let (kept, recorded) = (upload.written(), recorded.map(|r| (r.size, r.mtime_ns)));
        Ok(PyPartFile { upload: Mutex::new(Some(upload)), temp, kept, recorded })
    }

    /// How many bytes a resumable part held when it was opened.
    #[getter]
    fn kept(&self) -> u64 {
        self.kept
    }

    /// ``(size, mtime_ns)`` of the source whose bytes a resumable part
    /// holds, or ``None``.
    #[getter]
    fn recorded(&self) -> Option<(u64, i64)> {
        self.recorded
    }

    /// A resumable part starts over for a source of this size and mtime:
    /// its bytes are dropped, the source recorded beside it.
    fn restart(&self, py: Python<'_>, size: u64, mtime_ns: i64) -> PyResult<()> {
        py.detach(|| {
            let mut upload = self.upload.lock().expect("lock");
            let upload = upload.as_mut().ok_or_else(finished)?;
            upload.restart(Identity { size, mtime_ns }).map_err(Into::into)
        })
    }

    /// Lets go of a resumable part, keeping its bytes (a cut download).
    fn release(&self, py: Python<'_>) {
        if let Ok(upload) = self.take() {
            py.detach(|| drop(upload));
        }
    }

    /// The temporary file's name (bytes), in the directory of ``path``.
    #[getter]
    fn temp(&self, py: Python<'_>) -> Py<PyBytes> {
        self.temp.clone_ref(py)
    }

    /// Appends ``data``, handing what was written to the disk every
    /// ``WRITEBACK_EVERY`` bytes; the GIL is released meanwhile.
    fn write(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        py.detach(|| {
            self.upload.lock().expect("lock").as_mut().ok_or_else(finished)?.write_io(data).map_err(Into::into)
        })
    }

    /// fsync, then the final name, atomically (``FileExistsError`` if it was
    /// taken meanwhile and ``overwrite`` was not asked for), then the
    /// directory's fsync, whose failure is ignored: the file is stored.
    /// ``durable=False`` (on Linux): the name without the fsyncs, which a
    /// later ``sync_path`` of its directory makes up for.
    #[pyo3(signature = (durable=true))]
    fn commit(&self, py: Python<'_>, durable: bool) -> PyResult<()> {
        let upload = self.take()?;
        py.detach(|| upload.commit_io_with(durable))?;
        Ok(())
    }

    /// Removes the temporary file (a resumable part and what is recorded
    /// beside it too); the final name is left as it was.
    fn discard(&self, py: Python<'_>) {
        if let Ok(upload) = self.take() {
            py.detach(|| upload.discard());
        }
    }
}

/// Refuses (``ValueError``) a symlink ``target`` for a link at ``name``
/// that would lead out of the tree it is in: the server's rule for
/// ``symlink`` requests (``files::check_link_target``), which the clients
/// apply to the links they copy too.
#[pyfunction]
pub fn check_link_target(name: &str, target: &str) -> PyResult<()> {
    crate::files::check_link_target(name, target).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Makes durable what was saved beneath ``path`` with ``_PartFile.commit(durable=False)``:
/// ``syncfs`` of its file system on Linux (elsewhere nothing is left unsynced).
#[pyfunction]
pub fn sync_path(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| crate::files::sync_path(&path))?;
    Ok(())
}

/// A digest computed piece by piece, as ``hashlib``'s objects are: the
/// Rust core's (``codec::Hasher``), for the checksums ``hashlib`` lacks
/// (``blake3``). ``update`` releases the GIL for large buffers. Private:
/// ``rframe._files.new_hash`` picks it.
#[pyclass(frozen, name = "_Hasher", module = "rframe._rframe")]
pub struct PyHasher {
    inner: Mutex<Hasher>,
    name: &'static str,
}

#[pymethods]
impl PyHasher {
    #[new]
    fn new(checksum: &str) -> PyResult<PyHasher> {
        let algorithm = Checksum::from_name(checksum)
            .ok_or_else(|| PyValueError::new_err(format!("unknown checksum {checksum:?}")))?;
        Ok(PyHasher { inner: Mutex::new(Hasher::new(algorithm)), name: algorithm.name() })
    }

    #[getter]
    fn name(&self) -> &'static str {
        self.name
    }

    fn update(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        with_body(Some(data), |bytes| {
            if bytes.len() >= 64 * 1024 {
                py.detach(|| self.inner.lock().expect("lock").update(bytes));
            } else {
                self.inner.lock().expect("lock").update(bytes);
            }
            Ok(())
        })
    }

    /// The lower-case hex digest of everything given so far.
    fn hexdigest(&self) -> String {
        self.inner.lock().expect("lock").clone().hex_digest()
    }
}
