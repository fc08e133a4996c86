//! TCP and Unix-socket listeners behind one type.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

#[derive(Debug, Clone)]
pub enum Bind {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Bind {
    /// True if only this machine can reach the address: a loopback host (every
    /// address it resolves to) or a Unix socket.
    pub fn is_local(&self) -> io::Result<bool> {
        match self {
            Bind::Unix(_) => Ok(true),
            Bind::Tcp { host, port } => {
                let addrs: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
                Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
            }
        }
    }
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
                BoundSocket::Unix(std::os::unix::net::UnixListener::bind(path)?, path.clone())
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
