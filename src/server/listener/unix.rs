//! Listening on Unix: a backlog of 4096, and Unix sockets whose file only
//! this user may connect to.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::Stream;

/// Connections the kernel may hold ready for `accept()`. std's `bind` asks
/// for 128, which a burst of clients overflows: the kernel then drops their
/// handshakes, they retry after 1, 2, 4... seconds, and some give up. The
/// kernel caps this at `net.core.somaxconn` (4096 since Linux 5.4).
const BACKLOG: libc::c_int = 4096;

/// `listen()` again on a listening socket only sets its backlog.
fn listen_again(fd: RawFd) -> io::Result<()> {
    // SAFETY: a plain syscall on a socket we own.
    if unsafe { libc::listen(fd, BACKLOG) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The backlog of a listening TCP socket.
pub fn set_backlog(l: &std::net::TcpListener) -> io::Result<()> {
    listen_again(l.as_raw_fd())
}

/// A Unix socket, bound and listening, not yet tied to a runtime.
pub struct UnixBound(std::os::unix::net::UnixListener, PathBuf);

impl UnixBound {
    pub fn bind(path: &Path) -> io::Result<UnixBound> {
        remove_stale_socket(path)?;
        let l = bind_private(path)?;
        l.set_nonblocking(true)?;
        Ok(UnixBound(l, path.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.1
    }

    /// Registers the socket with the runtime this is called in.
    pub fn into_listener(self) -> io::Result<UnixListener> {
        Ok(UnixListener(tokio::net::UnixListener::from_std(self.0)?, self.1))
    }
}

/// A Unix socket a runtime accepts on.
pub struct UnixListener(tokio::net::UnixListener, PathBuf);

impl UnixListener {
    pub fn path(&self) -> &Path {
        &self.1
    }

    pub async fn accept(&self) -> io::Result<Box<dyn Stream>> {
        let (s, _) = self.0.accept().await?;
        Ok(Box::new(s))
    }

    /// Stops listening and removes the socket's file.
    pub fn close(self) {
        drop(self.0);
        let _ = std::fs::remove_file(self.1);
    }
}

#[cfg(not(target_vendor = "apple"))]
const SOCK_STREAM_CLOEXEC: libc::c_int = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
#[cfg(target_vendor = "apple")]
const SOCK_STREAM_CLOEXEC: libc::c_int = libc::SOCK_STREAM;

/// A Unix socket whose file has mode 0600, whatever the umask: only this
/// user can connect.
///
/// std's `UnixListener::bind` binds and listens in one call, so a peer could
/// connect between the bind and a chmod, and the check of the file's mode is
/// made only at connect. Here the socket is bound, its file chmodded, and only
/// then listens: until `listen`, a connect is refused. (Setting the umask
/// around the bind would do it too, but the umask is the whole process's, and
/// another thread creating a file meanwhile would get it.)
fn bind_private(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    // SAFETY: sockaddr_un is plain data, for which all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        let message =
            format!("{:?}: a Unix socket's path is 1 to {} bytes, without NUL", path, addr.sun_path.len() - 1);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: plain syscalls; the descriptor is owned at once, and `addr`
    // outlives the call that reads `len` bytes of it.
    let fd = unsafe { libc::socket(libc::AF_UNIX, SOCK_STREAM_CLOEXEC, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket() succeeded: an open descriptor, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // macOS has no SOCK_CLOEXEC: the flag is set at once (a command spawned
    // meanwhile by another thread could inherit it).
    #[cfg(target_vendor = "apple")]
    // SAFETY: plain syscall on an open descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `addr` is an initialised sockaddr_un that outlives the call, which reads `len` bytes of it.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len as libc::socklen_t) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let listening = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| listen_again(fd.as_raw_fd()));
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(fd.into())
}

/// A socket file left by a server that died is removed; one that a live
/// server answers on is an "address in use" error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a server is already listening on {}", path.display()),
        )),
        // Nobody listens: stale, left by a server that is gone.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path),
        // (EACCES, say: another user's socket, maybe live.)
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{} exists, and whether a server listens on it is unknown: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Bind, BoundSocket};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    #[test]
    fn a_unix_socket_file_is_private() {
        let dir = std::env::temp_dir().join(format!("rframe-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let socket = BoundSocket::bind(&Bind::Unix(path.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        drop(socket);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600, "{mode:o}");
        assert!(BoundSocket::bind(&Bind::Unix(PathBuf::new())).is_err());
        assert!(BoundSocket::bind(&Bind::Unix(dir.join("x".repeat(200)))).is_err());
    }
}
