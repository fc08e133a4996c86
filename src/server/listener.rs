//! TCP and Unix-socket listeners behind one type.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

#[derive(Debug, Clone)]
pub enum Bind {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundAddr::Tcp(a) => write!(f, "{a}"),
            BoundAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Connections the kernel may hold ready for `accept()`. std's `bind` asks
/// for 128, which a burst of clients overflows: the kernel then drops their
/// handshakes, they retry after 1, 2, 4... seconds, and some give up. The
/// kernel caps this at `net.core.somaxconn` (4096 since Linux 5.4).
const BACKLOG: libc::c_int = 4096;

/// `listen()` again on a listening socket only sets its backlog.
fn set_backlog(fd: RawFd) -> io::Result<()> {
    // SAFETY: a plain syscall on a socket we own.
    if unsafe { libc::listen(fd, BACKLOG) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A bound socket not yet tied to a runtime: a server binds when it is made
/// (so `port=0` can be read at once) and serves on whichever runtime starts it.
pub enum BoundSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

impl BoundSocket {
    pub fn bind(bind: &Bind) -> io::Result<BoundSocket> {
        let socket = match bind {
            Bind::Tcp { host, port } => {
                let addr = (host.as_str(), *port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{host} has no address")))?;
                // std sets SO_REUSEADDR: a restarted server can bind while old
                // connections sit in TIME_WAIT.
                BoundSocket::Tcp(std::net::TcpListener::bind(addr)?)
            }
            Bind::Unix(path) => {
                remove_stale_socket(path)?;
                BoundSocket::Unix(bind_private(path)?, path.clone())
            }
        };
        match &socket {
            BoundSocket::Tcp(l) => {
                set_backlog(l.as_raw_fd())?;
                l.set_nonblocking(true)?
            }
            BoundSocket::Unix(l, _) => {
                set_backlog(l.as_raw_fd())?;
                l.set_nonblocking(true)?
            }
        }
        Ok(socket)
    }

    pub fn address(&self) -> io::Result<BoundAddr> {
        Ok(match self {
            BoundSocket::Tcp(l) => BoundAddr::Tcp(l.local_addr()?),
            BoundSocket::Unix(_, path) => BoundAddr::Unix(path.clone()),
        })
    }

    /// Registers the socket with the runtime this is called in.
    pub fn into_listener(self) -> io::Result<Listener> {
        Ok(match self {
            BoundSocket::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?),
            BoundSocket::Unix(l, path) => Listener::Unix(UnixListener::from_std(l)?, path),
        })
    }
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// A new connection, its peer as logged, and the peer's address (`None`
    /// for a Unix socket's peer).
    pub async fn accept(&self) -> io::Result<(Box<dyn Stream>, String, Option<IpAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                // Responses go out as soon as they are written.
                s.set_nodelay(true)?;
                Ok((Box::new(s), peer.to_string(), Some(peer.ip())))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Box::new(s), format!("unix:{}", path.display()), None))
            }
        }
    }

    /// Stops listening; a Unix socket's file is removed.
    pub fn close(self) {
        if let Listener::Unix(l, path) = self {
            drop(l);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// 127.0.0.0/8 and ::1, also as an IPv4-mapped IPv6 address (a dual-stack
/// listener's view of 127.0.0.1).
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

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
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len as libc::socklen_t) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let listening = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| set_backlog(fd.as_raw_fd()));
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(fd.into())
}

/// A socket file left by a server that died is removed; one that a live
/// server answers on is an "address in use" error.
fn remove_stale_socket(path: &PathBuf) -> io::Result<()> {
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
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
