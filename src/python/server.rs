//! `rframe.Server`: the tokio server, driven from Python.
//!
//! Tokio's shared workers never wait for the GIL. Python code runs on threads
//! of rframe's own, each attached to the interpreter once for its whole life:
//! - a handler server serves on its own thread ("rframe-handler"), with a
//!   single-threaded runtime of its own: a request is read, handled and
//!   answered there, crossing no thread (a hand-off costs each side a wake-up);
//! - log lines go through a bounded queue to one "rframe-log" thread, which
//!   hands them to `logging`; a full queue drops lines rather than wait.
//!
//! Both are stopped by an `atexit` hook, before the interpreter finalizes
//! (a thread that takes the GIL back during finalization is killed).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use tokio::sync::mpsc;

use crate::codec::{Codec, Frame};
use crate::protocol::MAX_SECONDS;
use crate::runtime;
use crate::server::{
    Bind, BoundAddr, BoxFuture, Handler, Level, MaxStartups, Observer, Reply, Server, ServerConfig, TlsMode,
};
use crate::tls::{Identity, IdentitySource};

use super::codec::PyCodec;
use super::decoder::frame_to_py;
use super::frame::frame_parts;
use super::stream::{check_signals, header_bytes, with_body};

/// How long `stop()` waits for connections to wind down.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Log lines waiting for the log thread; past this they are dropped, so a
/// server whose logging is slow never slows down or grows.
const LOG_QUEUE: usize = 1024;

enum LogJob {
    Line(Level, String),
    Exit,
}

struct LogThread {
    jobs: mpsc::Sender<LogJob>,
    thread: JoinHandle<()>,
}

static LOG_THREAD: OnceLock<Option<LogThread>> = OnceLock::new();

fn log_thread() -> Option<&'static LogThread> {
    LOG_THREAD
        .get_or_init(|| {
            let (jobs, mut rx) = mpsc::channel::<LogJob>(LOG_QUEUE);
            let thread = std::thread::Builder::new()
                .name("rframe-log".into())
                .spawn(move || {
                    Python::try_attach(|py| {
                        while let Some(LogJob::Line(level, message)) = py.detach(|| rx.blocking_recv()) {
                            if EXITING.load(Ordering::SeqCst) {
                                break;
                            }
                            log_line(py, level, message);
                        }
                    });
                })
                .ok()?;
            Some(LogThread { jobs, thread })
        })
        .as_ref()
}

fn log_line(py: Python<'_>, level: Level, message: String) {
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

/// Sends log lines to the log thread, never waiting.
struct PyLog;

impl Observer for PyLog {
    fn log(&self, level: Level, message: String) {
        if let Some(t) = log_thread() {
            let _ = t.jobs.try_send(LogJob::Line(level, message));
        }
    }
}

/// Calls the Python handler on the thread that serves its connections.
struct PyHandler {
    handler: Py<PyAny>,
    codec: Codec,
}

impl Handler for PyHandler {
    fn call(&self, frame: Frame) -> BoxFuture<Result<Reply, String>> {
        let result =
            Python::attach(|py| call_handler(py, &self.handler, &self.codec, frame).map_err(|e| describe(py, &e)));
        Box::pin(std::future::ready(result))
    }
}

/// Every started server (with its thread, for a handler server), so the
/// `atexit` hook can stop them: a running command must not outlive Python.
static STARTED: Mutex<Vec<Started>> = Mutex::new(Vec::new());

/// A started server, and the thread a handler server serves on.
type Started = (Weak<Server>, Option<JoinHandle<()>>);

/// Set by the `atexit` hook: the log thread stops after the line in hand.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Stops a started server and waits, up to `until`, for it to wind down.
fn stop_and_wait(server: &Server, thread: Option<&JoinHandle<()>>, until: Instant) -> PyResult<()> {
    server.stop();
    match thread {
        Some(thread) => {
            join_by(thread, until);
        }
        None => {
            let rt = runtime::get().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
            server.wait(rt, until.saturating_duration_since(Instant::now()));
        }
    }
    Ok(())
}

/// Waits (GIL released by the caller) until `thread` ends or `until` passes.
fn join_by(thread: &JoinHandle<()>, until: Instant) -> bool {
    while !thread.is_finished() {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Stops rframe's Python threads; registered with `atexit` by the module. A
/// handler stuck in a call is waited for at most [`STOP_GRACE`].
#[pyfunction]
pub fn _stop_python_threads(py: Python<'_>) {
    let started = std::mem::take(&mut *STARTED.lock().expect("lock"));
    py.detach(|| {
        let until = Instant::now() + STOP_GRACE;
        for (server, thread) in &started {
            if let Some(server) = server.upgrade() {
                let _ = stop_and_wait(&server, thread.as_ref(), until);
            } else if let Some(thread) = thread {
                join_by(thread, until);
            }
        }
        EXITING.store(true, Ordering::SeqCst);
        if let Some(log) = LOG_THREAD.get().and_then(Option::as_ref) {
            // Wakes it if idle; a busy one sees EXITING after its current line.
            let _ = log.jobs.try_send(LogJob::Exit);
            join_by(&log.thread, Instant::now() + Duration::from_secs(1));
        }
    });
}

fn describe(py: Python<'_>, err: &PyErr) -> String {
    let name = err.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", err.value(py))
}

/// Calls the handler and turns what it returns (bytes, str, (header, body),
/// or Frame) into a reply.
fn call_handler(py: Python<'_>, handler: &Py<PyAny>, codec: &Codec, frame: Frame) -> PyResult<Reply> {
    let frame = frame_to_py(py, frame)?;
    let result = handler.bind(py).call1((frame,))?;
    let (header, body): (Option<Bound<'_, PyAny>>, Bound<'_, PyAny>) =
        if let Some((header, body)) = frame_parts(&result) {
            (Some(header.into_any()), body.into_any())
        } else if let Ok(t) = result.cast::<PyTuple>() {
            if t.len() != 2 {
                return Err(PyTypeError::new_err(format!(
                    "handler returned a tuple of {} items; expected (header, body)",
                    t.len()
                )));
            }
            (Some(t.get_item(0)?), t.get_item(1)?)
        } else if result.is_none() {
            return Err(PyTypeError::new_err("handler returned None; expected bytes, str, (header, body) or Frame"));
        } else {
            (None, result)
        };
    let header = header.filter(|h| !h.is_none());
    let header = if codec.json_header {
        header
    } else {
        if header.as_ref().is_some_and(|h| h.cast::<PyDict>().map(|d| !d.is_empty()).unwrap_or(true)) {
            return Err(PyValueError::new_err(
                "the server's codec is length-only: the handler must return only a body",
            ));
        }
        None
    };
    with_body(Some(&body), |body| {
        let header = header_bytes(codec, header.as_ref(), None, body)?;
        Ok(Reply::new(header, Bytes::copy_from_slice(body)))
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
    server: Arc<Server>,
    has_handler: bool,
    /// `start()` has run (a second call does nothing).
    started: AtomicBool,
}

/// Where the certificate comes from: PEM files (both), else made and kept in
/// ``tls_dir`` (default: the per-user state directory).
fn identity_source(cert: Option<PathBuf>, key: Option<PathBuf>, dir: Option<PathBuf>) -> PyResult<IdentitySource> {
    match (cert, key, dir) {
        (Some(cert), Some(key), None) => Ok(IdentitySource::Files { cert, key }),
        (None, None, dir) => Ok(IdentitySource::Generated(dir)),
        (_, _, Some(_)) => Err(PyValueError::new_err(
            "tls_dir is where a generated certificate is kept: give it, or tls_cert and tls_key, not both",
        )),
        _ => Err(PyValueError::new_err("tls_cert and tls_key go together: the certificate and its private key")),
    }
}

/// The fingerprint of the certificate a server with these arguments would
/// use (made and kept first, for a generated one): what
/// ``python -m rframe.server --fingerprint`` prints.
#[pyfunction]
#[pyo3(signature = (*, tls_cert=None, tls_key=None, tls_dir=None))]
pub fn server_fingerprint(
    py: Python<'_>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
) -> PyResult<String> {
    let source = identity_source(tls_cert, tls_key, tls_dir)?;
    let identity = py.detach(|| Identity::load(&source))?;
    Ok(hex::encode(identity.cert_hash()))
}

/// `max_startups`: `N` (at most N unauthenticated connections) or OpenSSH's
/// `(start, rate, full)`; `ServerConfig::check` checks the numbers.
fn max_startups(value: &Bound<'_, PyAny>) -> PyResult<MaxStartups> {
    let wrong = || {
        PyValueError::new_err(format!(
            "max_startups must be a whole number N or a tuple (start, rate, full), got {}",
            value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into())
        ))
    };
    let limits = if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(wrong());
    } else if let Ok(n) = value.extract::<usize>() {
        MaxStartups { start: n, rate: 100, full: n }
    } else if let Ok((start, rate, full)) = value.extract::<(usize, u32, usize)>() {
        MaxStartups { start, rate, full }
    } else {
        return Err(wrong());
    };
    Ok(limits)
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_SECONDS) {
        return Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds up to {MAX_SECONDS:e}, got {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (
        host="127.0.0.1", port=8848, *, unix_path=None, handler=None, token=None, codec=None,
        timeout=30.0, live_timeout=None, max_output=16777216, max_connections=1024, allow=None, shell=true, cwd=None,
        root=None, pty=true, allow_pty=false, insecure=false, header_timeout=10.0, idle_timeout=300.0, encoding="utf-8",
        tls=None, tls_cert=None, tls_key=None, tls_dir=None, output_budget=268435456,
        max_startups=None, max_startups_per_source=16
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
        live_timeout: Option<f64>,
        max_output: usize,
        max_connections: usize,
        allow: Option<Vec<String>>,
        shell: bool,
        cwd: Option<PathBuf>,
        root: Option<PathBuf>,
        pty: bool,
        allow_pty: bool,
        insecure: bool,
        header_timeout: f64,
        idle_timeout: f64,
        encoding: &str,
        tls: Option<bool>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        tls_dir: Option<PathBuf>,
        output_budget: usize,
        max_startups: Option<&Bound<'_, PyAny>>,
        max_startups_per_source: usize,
    ) -> PyResult<PyServer> {
        let token = match token {
            None => None,
            Some(t) if t.is_none() => None,
            Some(t) => {
                let bytes: Vec<u8> =
                    if let Ok(s) = t.cast::<PyString>() { s.to_str()?.as_bytes().to_vec() } else { t.extract()? };
                Some(bytes)
            }
        };
        if handler.as_ref().is_some_and(|h| !h.bind(py).is_callable()) {
            return Err(PyTypeError::new_err(
                "handler must be callable: handler(frame) -> bytes | str | (header, body) | Frame",
            ));
        }
        let default = ServerConfig::default();
        let max_startups = match max_startups {
            Some(value) if !value.is_none() => self::max_startups(value)?,
            _ => default.max_startups,
        };
        let codec = codec.map(|c| c.get().codec()).unwrap_or(default.codec);
        let bind = match unix_path {
            Some(path) => Bind::Unix(path),
            None => Bind::Tcp { host: host.to_owned(), port },
        };
        let config = ServerConfig {
            codec,
            token,
            timeout: seconds("timeout", timeout)?,
            live_timeout: live_timeout.map(|t| seconds("live_timeout", t)).transpose()?,
            max_output,
            max_connections,
            allow,
            shell,
            pty,
            allow_pty,
            cwd,
            root,
            header_timeout: seconds("header_timeout", header_timeout)?,
            idle_timeout: seconds("idle_timeout", idle_timeout)?,
            encoding: encoding.to_owned(),
            tls: match tls {
                // A certificate given, or where to keep one: TLS was meant.
                None if tls_cert.is_some() || tls_key.is_some() || tls_dir.is_some() => TlsMode::On,
                None => TlsMode::Auto,
                Some(true) => TlsMode::On,
                Some(false) => TlsMode::Off,
            },
            tls_identity: identity_source(tls_cert, tls_key, tls_dir)?,
            insecure,
            output_budget,
            max_startups,
            max_startups_per_source,
        };
        let has_handler = handler.is_some();
        let handler = handler.map(|handler| Arc::new(PyHandler { handler, codec }) as Arc<dyn Handler>);
        let server = py.detach(|| Server::bind(bind, config, handler, Arc::new(PyLog))).map_err(|e| {
            // What the server's checks refuse (ServerConfig::check, exposure::check) is a bad argument.
            if e.kind() == std::io::ErrorKind::InvalidInput {
                PyValueError::new_err(e.to_string())
            } else if e.kind() == std::io::ErrorKind::Unsupported {
                // Not on this system (Windows: the command server, Unix sockets, root), as
                // asyncio's add_signal_handler says it there.
                pyo3::exceptions::PyNotImplementedError::new_err(e.to_string())
            } else {
                e.into()
            }
        })?;
        for warning in server.warnings() {
            PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
                &std::ffi::CString::new(warning.as_str()).expect("no NUL"),
                1,
            )?;
        }
        Ok(PyServer { server: Arc::new(server), has_handler, started: Default::default() })
    }

    /// The lowercase hex SHA-256 of the TLS certificate's DER bytes (what
    /// clients pin with ``fingerprint=``), or ``None`` without TLS.
    #[getter]
    fn tls_fingerprint(&self) -> Option<String> {
        self.server.tls_fingerprint()
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
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if !self.has_handler {
            self.server.start(rt);
            STARTED.lock().expect("lock").push((Arc::downgrade(&self.server), None));
            return Ok(());
        }
        let server = self.server.clone();
        let thread = std::thread::Builder::new()
            .name("rframe-handler".into())
            .spawn(move || {
                // Attached once, so each call re-enters the same thread state.
                Python::try_attach(|py| {
                    if let Err(e) = py.detach(|| server.serve_here(STOP_GRACE)) {
                        server.log(Level::Error, format!("server failed: {e}"));
                    }
                });
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the rframe-handler thread: {e}")))?;
        STARTED.lock().expect("lock").push((Arc::downgrade(&self.server), Some(thread)));
        Ok(())
    }

    /// Stops serving: no new connections, open ones closed, running commands
    /// killed. Waits up to a grace period for connections to wind down.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.server.stop();
        let mut started = STARTED.lock().expect("lock");
        started.retain(|(s, _)| s.strong_count() > 0);
        let mine = started.iter().position(|(s, _)| s.as_ptr() == Arc::as_ptr(&self.server));
        let Some(i) = mine else { return Ok(()) };
        if started[i].1.as_ref().is_some_and(|t| t.thread().id() == std::thread::current().id()) {
            // A handler stopping its own server: its thread winds down once the
            // handler returns. It stays listed, so that serve_forever()'s stop()
            // and the exit hook still wait for it.
            return Ok(());
        }
        let (_, thread) = started.swap_remove(i);
        drop(started);
        py.detach(|| stop_and_wait(&self.server, thread.as_ref(), Instant::now() + STOP_GRACE))
    }

    /// Serves until ``stop()`` is called (from another thread or a signal
    /// handler) or Ctrl-C, which stops the server and is re-raised.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        self.start()?;
        while !self.server.is_stopping() {
            py.detach(|| std::thread::sleep(crate::io::socket::SLICE));
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
