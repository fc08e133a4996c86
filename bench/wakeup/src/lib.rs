//! A probe, not part of rframe: what it costs an asyncio event loop when a
//! tokio thread completes an awaitable through pyo3-async-runtimes (the
//! `future_into_py` round trip: a cross-thread wake-up per result). bench/async.py
//! reports it next to a whole pure-asyncio round trip, which is why rframe's
//! AsyncClient keeps its socket on the event loop (see README.md).
use pyo3::prelude::*;

/// An awaitable that a tokio worker completes at once.
#[pyfunction]
fn ping(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async { Ok(()) })
}

#[pymodule]
fn rframe_wakeup_probe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ping, m)?)?;
    Ok(())
}
