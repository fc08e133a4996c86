//! `rframe.Server`: the tokio server, driven from Python.
//!
//! Python code (the handler, `logging`) runs on one thread of its own, fed by
//! a channel: tokio workers never wait for the GIL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{Codec, Frame};
use crate::runtime;
use crate::server::{Bind, BoundAddr, BoxFuture, Handler, Level, Observer, Reply, Server, ServerConfig};

use super::codec::PyCodec;
use super::decoder::frame_to_py;
use super::frame::PyFrame;
use super::stream::{check_signals, header_bytes, with_body};

/// How long `stop()` waits for connections to wind down.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Log lines waiting for the Python thread; past this they are dropped, so a
/// server whose logging is slow never slows down or grows.
const LOG_QUEUE: usize = 1024;

enum Job {
    Log(Level, String),
    Call(Frame, oneshot::Sender<Result<Reply, String>>),
}

/// The sending side of the Python thread's queue.
struct PyWorker {
    jobs: mpsc::Sender<Job>,
}

impl Observer for PyWorker {
    fn log(&self, level: Level, message: String) {
        let _ = self.jobs.try_send(Job::Log(level, message));
    }
}

impl Handler for PyWorker {
    fn call(&self, frame: Frame) -> BoxFuture<Result<Reply, String>> {
        let jobs = self.jobs.clone();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            jobs.send(Job::Call(frame, tx)).await.map_err(|_| "the handler thread has stopped".to_string())?;
            rx.await.map_err(|_| "the handler thread has stopped".to_string())?
        })
    }
}

/// Starts the Python thread; it ends when every sender is gone.
fn spawn_worker(handler: Option<Py<PyAny>>, codec: Codec) -> PyResult<mpsc::Sender<Job>> {
    let (tx, mut rx) = mpsc::channel::<Job>(LOG_QUEUE);
    std::thread::Builder::new()
        .name("rframe-python".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                // Take the GIL once for everything queued meanwhile.
                let alive = Python::try_attach(|py| {
                    let mut next = Some(job);
                    let mut batch = 0;
                    while let Some(job) = next.take() {
                        run_job(py, handler.as_ref(), &codec, job);
                        batch += 1;
                        if batch < 64 {
                            next = rx.try_recv().ok();
                        }
                    }
                });
                if alive.is_none() {
                    break; // the interpreter is shutting down
                }
            }
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the rframe-python thread: {e}")))?;
    Ok(tx)
}

fn run_job(py: Python<'_>, handler: Option<&Py<PyAny>>, codec: &Codec, job: Job) {
    match job {
        Job::Log(level, message) => {
            let level = match level {
                Level::Debug => 10,
                Level::Info => 20,
                Level::Warning => 30,
                Level::Error => 40,
            };
            let logged = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", ("rframe.server",)))
                .and_then(|logger| logger.call_method1("log", (level, message)));
            if let Err(e) = logged {
                e.print(py);
            }
        }
        Job::Call(frame, reply) => {
            let result = match handler {
                Some(handler) => call_handler(py, handler, codec, frame).map_err(|e| describe(py, &e)),
                None => Err("no handler".into()),
            };
            let _ = reply.send(result);
        }
    }
}

fn describe(py: Python<'_>, err: &PyErr) -> String {
    let name = err.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", err.value(py))
}

/// Calls the handler and turns what it returns (bytes, str, (header, body),
/// or Frame) into a reply.
fn call_handler(py: Python<'_>, handler: &Py<PyAny>, codec: &Codec, frame: Frame) -> PyResult<Reply> {
    let frame = Bound::new(py, frame_to_py(py, frame)?)?;
    let result = handler.bind(py).call1((frame,))?;
    let (header, body): (Option<Bound<'_, PyAny>>, Bound<'_, PyAny>) = if let Ok(f) = result.cast::<PyFrame>() {
        let mut items = f.try_iter()?;
        (Some(items.next().expect("header")?), items.next().expect("body")?)
    } else if let Ok(t) = result.cast::<PyTuple>() {
        if t.len() != 2 {
            return Err(PyTypeError::new_err(format!("handler returned a tuple of {} items; expected (header, body)", t.len())));
        }
        (Some(t.get_item(0)?), t.get_item(1)?)
    } else if result.is_none() {
        return Err(PyTypeError::new_err("handler returned None; expected bytes, str, (header, body) or Frame"));
    } else {
        (None, result)
    };
    let header = header.filter(|h| !h.is_none());
    let header = if codec.json_header { header } else {
        if header.as_ref().is_some_and(|h| h.cast::<PyDict>().map(|d| !d.is_empty()).unwrap_or(true)) {
            return Err(PyValueError::new_err("the server's codec is length-only: the handler must return only a body"));
        }
        None
    };
    with_body(Some(&body), |body| {
        let header = header_bytes(codec, header.as_ref(), None, body)?;
        Ok(Reply { header, body: Bytes::copy_from_slice(body) })
    })
}

/// A tokio command server (or, with ``handler``, a server for your own protocol).
///
/// Binds at construction (``port=0`` picks a free port, see ``address``);
/// ``start()`` serves in the background, ``serve_forever()`` in the foreground.
///
/// >>> with Server(port=0) as server:
/// ...     with Client(*server.address) as client:
/// ...         client.run("echo hi").stdout
/// b'hi\n'
#[pyclass(frozen, name = "Server", module = "rframe")]
pub struct PyServer {
    server: Server,
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && value > 0.0) {
        return Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, got {value}")));
    }
    Ok(Duration::from_secs_f64(value))
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (
        host="127.0.0.1", port=8848, *, unix_path=None, handler=None, token=None, codec=None,
        timeout=30.0, max_output=16777216, max_connections=1024, allow=None, shell=true, cwd=None,
        insecure=false, header_timeout=10.0, idle_timeout=300.0, encoding="utf-8"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        unix_path: Option<PathBuf>,
        handler: Option<Py<PyAny>>,
        token: Option<&Bound<'_, PyAny>>,
        codec: Option<&Bound<'_, PyCodec>>,
        timeout: f64,
        max_output: usize,
        max_connections: usize,
        allow: Option<Vec<String>>,
        shell: bool,
        cwd: Option<PathBuf>,
        insecure: bool,
        header_timeout: f64,
        idle_timeout: f64,
        encoding: &str,
    ) -> PyResult<PyServer> {
        let token = match token {
            None => None,
            Some(t) if t.is_none() => None,
            Some(t) => {
                let bytes: Vec<u8> = if let Ok(s) = t.cast::<PyString>() { s.to_str()?.as_bytes().to_vec() } else { t.extract()? };
                if bytes.is_empty() {
                    return Err(PyValueError::new_err("token must not be empty"));
                }
                Some(bytes)
            }
        };
        if handler.as_ref().is_some_and(|h| !h.bind(py).is_callable()) {
            return Err(PyTypeError::new_err("handler must be callable: handler(frame) -> bytes | str | (header, body) | Frame"));
        }
        if max_connections == 0 {
            return Err(PyValueError::new_err("max_connections must be at least 1"));
        }
        let default = ServerConfig::default();
        let codec = codec.map(|c| c.get().codec()).unwrap_or(default.codec);
        if token.is_some() && !codec.json_header {
            return Err(PyValueError::new_err("token needs a JSON-header codec: the handshake travels in headers"));
        }
        let bind = match unix_path {
            Some(path) => Bind::Unix(path),
            None => Bind::Tcp { host: host.to_owned(), port },
        };
        let local = py.detach(|| bind.is_local())?;
        if token.is_none() && !local && insecure {
            let warn = format!("serving on {host}:{port} without a token (insecure=True): anyone who can reach it can run commands");
            PyErr::warn(py, &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(), &std::ffi::CString::new(warn).expect("no NUL"), 1)?;
        }
        if token.is_none() && !insecure && !local {
            return Err(PyValueError::new_err(format!(
                "refusing to serve on {host}:{port} without a token: anyone who can reach it could run commands. \
                 Set a token (token=..., --token-file or RFRAME_TOKEN), bind to 127.0.0.1 or a Unix socket, \
                 or pass insecure=True (--insecure) if you really mean it"
            )));
        }
        let config = ServerConfig {
            codec,
            token,
            timeout: seconds("timeout", timeout)?,
            max_output,
            max_connections,
            allow,
            shell,
            cwd,
            header_timeout: seconds("header_timeout", header_timeout)?,
            idle_timeout: seconds("idle_timeout", idle_timeout)?,
            encoding: encoding.to_owned(),
        };
        let rt = runtime::get().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let has_handler = handler.is_some();
        let worker = Arc::new(PyWorker { jobs: spawn_worker(handler, codec)? });
        let handler: Option<Arc<dyn Handler>> = if has_handler { Some(worker.clone()) } else { None };
        let server = py.detach(|| Server::bind(rt, bind, config, handler, worker))?;
        Ok(PyServer { server })
    }

    /// The bound address: ``(host, port)``, or the Unix socket's path.
    #[getter]
    fn address<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.server.address() {
            BoundAddr::Tcp(a) => (a.ip().to_string(), a.port()).into_pyobject(py)?.into_any(),
            BoundAddr::Unix(p) => p.to_string_lossy().into_pyobject(py)?.into_any(),
        })
    }

    /// Starts serving in the background and returns at once.
    fn start(&self) -> PyResult<()> {
        let rt = runtime::get().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        self.server.start(rt);
        Ok(())
    }

    /// Stops serving: no new connections, open ones closed, running commands
    /// killed. Waits up to a grace period for connections to wind down.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let rt = runtime::get().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        self.server.stop();
        py.detach(|| self.server.wait(rt, STOP_GRACE));
        Ok(())
    }

    /// Serves until ``stop()`` is called (from another thread or a signal
    /// handler) or Ctrl-C, which stops the server and is re-raised.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        self.start()?;
        while !self.server.is_stopping() {
            py.detach(|| std::thread::sleep(crate::io::fd::SLICE));
            if let Err(interrupt) = check_signals() {
                self.stop(py)?;
                return Err(interrupt);
            }
        }
        self.stop(py)
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().start()?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.stop(py)
    }

    fn __repr__(&self) -> String {
        format!("<rframe.Server {}{}>", self.server.address(), if self.server.is_stopping() { " stopped" } else { "" })
    }
}
