//! Listening on Windows: TCP only. A Unix socket (`unix_path`, `--unix`) is
//! refused with an error that says so.

use std::io;
use std::path::Path;

use super::Stream;

/// std's `listen(128)` stays: Winsock ignores a second `listen` on a
/// listening socket, so the backlog cannot be raised after `bind`.
pub fn set_backlog(_l: &std::net::TcpListener) -> io::Result<()> {
    Ok(())
}

pub const UNIX_SOCKETS: &str =
    "Unix sockets (unix_path, --unix) are not available on Windows: listen on TCP (host, port)";

/// A Unix socket: cannot be made on Windows.
pub struct UnixBound {
    never: std::convert::Infallible,
}

impl UnixBound {
    pub fn bind(_path: &Path) -> io::Result<UnixBound> {
        Err(io::Error::new(io::ErrorKind::Unsupported, UNIX_SOCKETS))
    }

    pub fn path(&self) -> &Path {
        match self.never {}
    }

    pub fn into_listener(self) -> io::Result<UnixListener> {
        match self.never {}
    }
}

pub struct UnixListener {
    never: std::convert::Infallible,
}

impl UnixListener {
    pub fn path(&self) -> &Path {
        match self.never {}
    }

    pub async fn accept(&self) -> io::Result<Box<dyn Stream>> {
        match self.never {}
    }

    pub fn close(self) {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Bind, BoundSocket};

    #[test]
    fn a_unix_socket_is_refused_with_the_reason() {
        let err = BoundSocket::bind(&Bind::Unix("s.sock".into())).err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("not available on Windows"), "{err}");
    }
}
