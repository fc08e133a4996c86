//! The command protocol's handshake, for the Python clients.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use pyo3::types::PyTuple;

use crate::protocol::auth::{self, Role};
use crate::protocol::{live, ErrorCode};

/// `ERROR_CODES`: every error code and whether the server closes the
/// connection after it, as `((code, closes), ...)` in PROTOCOL.md's order.
pub fn error_codes(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    PyTuple::new(py, ErrorCode::ALL.map(|code| (code.name(), code.closes())))
}

fn parse_role(name: &str) -> PyResult<Role> {
    match name {
        "client" => Ok(Role::Client),
        "server" => Ok(Role::Server),
        _ => Err(PyValueError::new_err(format!("role must be 'client' or 'server', not {name:?}"))),
    }
}

/// A signal as the protocol names it (``"INT"`` for ``"SIGINT"`` or
/// ``"int"``); ``ValueError`` for one a live command may not be sent.
#[pyfunction]
pub fn signal_name(name: &str) -> PyResult<&'static str> {
    live::check_signal(name).map_err(PyValueError::new_err)
}

/// 32 random bytes from the OS, as hex: a handshake nonce.
#[pyfunction]
pub fn auth_nonce() -> String {
    auth::nonce()
}

/// The hex HMAC-SHA256 proof that ``role`` holds ``token`` (see PROTOCOL.md);
/// ``binding``: the SHA-256 of the server's certificate on TLS.
#[pyfunction]
#[pyo3(signature = (token, role, server_nonce, client_nonce, *, binding=None))]
pub fn auth_proof(
    token: &[u8],
    role: &str,
    server_nonce: &str,
    client_nonce: &str,
    binding: Option<&[u8]>,
) -> PyResult<String> {
    Ok(auth::proof(token, parse_role(role)?, server_nonce, client_nonce, binding))
}

/// Checks a proof in constant time.
#[pyfunction]
#[pyo3(signature = (token, role, server_nonce, client_nonce, proof, *, binding=None))]
pub fn auth_verify(
    token: &[u8],
    role: &str,
    server_nonce: &str,
    client_nonce: &str,
    proof: &str,
    binding: Option<&[u8]>,
) -> PyResult<bool> {
    Ok(auth::verify(token, parse_role(role)?, server_nonce, client_nonce, binding, proof))
}
