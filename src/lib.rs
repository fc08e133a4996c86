//! rframe: length-prefixed message framing and a command server, for Python.
//!
//! Layers, each in its own folder:
//! - [`codec`]: the sans-IO protocol core (no PyO3, tested by `cargo test`);
//! - [`io`]: blocking reads and writes;
//! - [`server`], [`exec`], [`files`], [`tls`]: the tokio server, running
//!   commands, files beneath a root, and the server's TLS identity;
//! - `python`: the PyO3 bindings, which convert types and map errors (feature
//!   `python`, on by default).

pub mod codec;
pub mod exec;
pub mod files;
pub mod io;
pub mod protocol;
#[cfg(feature = "python")]
mod python;
pub mod runtime;
pub mod server;
pub mod tls;
