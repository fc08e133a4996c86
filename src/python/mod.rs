//! The PyO3 bindings: Python classes and functions that convert types, call the
//! codec, protocol, I/O and server layers, and map their errors. No protocol
//! logic lives here: what is an error reply is `protocol::is_error_reply`'s to
//! say, what a server may be configured with `ServerConfig::check`'s, and the
//! constants below are the core's, exported so that Python has no copies.

mod client_session;
mod codec;
mod decoder;
mod errors;
mod files;
mod frame;
mod header;
mod protocol;
mod replies;
mod server;
mod stream;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_rframe")]
fn rframe_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<codec::PyCodec>()?;
    m.add("Frame", frame::frame_type(m.py())?)?;
    // Facts of the protocol that the Python side needs too, defined once.
    m.add("TLS_ALPN", std::str::from_utf8(crate::tls::ALPN).expect("ASCII"))?;
    m.add("CHANNEL_BINDING_TLS", crate::protocol::auth::TLS_SERVER_END_POINT)?;
    m.add("CHANNEL_BINDING_NONE", crate::protocol::auth::NO_BINDING)?;
    m.add("ERROR_CODES", protocol::error_codes(m.py())?)?;
    m.add("MAX_SECONDS", crate::protocol::MAX_SECONDS)?;
    m.add("DEFAULT_PORT", crate::protocol::DEFAULT_PORT)?;
    m.add("TRANSFER_CHUNK", crate::protocol::TRANSFER_CHUNK)?;
    m.add("CHECKSUMS", pyo3::types::PyTuple::new(m.py(), crate::protocol::client::CHECKSUMS)?)?;
    m.add("SIGNALS", pyo3::types::PyTuple::new(m.py(), crate::protocol::live::SIGNALS)?)?;
    m.add("DEFAULT_TERM", crate::protocol::live::DEFAULT_TERM)?;
    m.add("STDIN_CHUNK", crate::protocol::live::STDIN_CHUNK)?;
    m.add("DEFAULT_TERMINAL_SIZE", crate::protocol::live::DEFAULT_SIZE)?;
    m.add("PART_SUFFIX", crate::files::PART_SUFFIX)?;
    m.add("WRITEBACK_EVERY", crate::files::WRITEBACK_EVERY)?;
    m.add("MODE_BITS", crate::files::MODE_BITS)?;
    m.add("TREE_DEPTH", crate::files::SWEEP_DEPTH)?;
    m.add_class::<decoder::PyFrameDecoder>()?;
    m.add_class::<server::PyServer>()?;
    m.add_class::<replies::PySessionReader>()?;
    m.add_class::<client_session::PyClientSession>()?;
    m.add_class::<files::PyPartFile>()?;
    m.add_class::<files::PyHasher>()?;
    m.add_function(wrap_pyfunction!(codec::pack_frame, m)?)?;
    m.add_function(wrap_pyfunction!(codec::read_frame, m)?)?;
    m.add_function(wrap_pyfunction!(codec::send_frame, m)?)?;
    m.add_function(wrap_pyfunction!(protocol::signal_name, m)?)?;
    m.add_function(wrap_pyfunction!(protocol::auth_nonce, m)?)?;
    m.add_function(wrap_pyfunction!(protocol::auth_proof, m)?)?;
    m.add_function(wrap_pyfunction!(protocol::auth_verify, m)?)?;
    m.add_function(wrap_pyfunction!(server::server_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(files::check_link_target, m)?)?;
    m.add_function(wrap_pyfunction!(files::sync_path, m)?)?;
    m.add_function(wrap_pyfunction!(server::_stop_python_threads, m)?)?;
    // Python threads of ours must be gone before the interpreter finalizes.
    m.py().import("atexit")?.call_method1("register", (m.getattr("_stop_python_threads")?,))?;
    Ok(())
}
