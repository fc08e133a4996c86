//! TCP and Unix-socket listeners behind one type. What differs by platform
//! (the backlog, Unix sockets) is in `listener/unix.rs` and
//! `listener/windows.rs`, where Unix sockets are refused.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;

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

/// A bound socket not yet tied to a runtime: a server binds when it is made
/// (so `port=0` can be read at once) and serves on whichever runtime starts it.
pub enum BoundSocket {
    Tcp(std::net::TcpListener),
    Unix(sys::UnixBound),
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
            Bind::Unix(path) => BoundSocket::Unix(sys::UnixBound::bind(path)?),
        };
        if let BoundSocket::Tcp(l) = &socket {
            sys::set_backlog(l)?;
            l.set_nonblocking(true)?
        }
        Ok(socket)
    }

    pub fn address(&self) -> io::Result<BoundAddr> {
        Ok(match self {
            BoundSocket::Tcp(l) => BoundAddr::Tcp(l.local_addr()?),
            BoundSocket::Unix(l) => BoundAddr::Unix(l.path().to_owned()),
        })
    }

    /// Registers the socket with the runtime this is called in.
    pub fn into_listener(self) -> io::Result<Listener> {
        Ok(match self {
            BoundSocket::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?),
            BoundSocket::Unix(l) => Listener::Unix(l.into_listener()?),
        })
    }
}

/// Silence on a connection before the first keepalive probe, and between probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// An accepted TCP connection's options.
fn tune<S>(s: &S) -> io::Result<()>
where
    for<'a> SockRef<'a>: From<&'a S>,
{
    let s = SockRef::from(s);
    // Responses go out as soon as they are written.
    s.set_tcp_nodelay(true)?;
    // A peer whose machine vanished sends no FIN: probes find it (after about
    // 2.5 minutes of silence on Linux: 60 s, then 9 probes 10 s apart; macOS
    // and Windows probe a few times less), and the connection's commands are
    // killed, a live one too, which has no time limit of its own by default.
    // Best effort: a system that refuses the option (a peer that reset
    // already, on some) still gets its connection served.
    let _ = s.set_tcp_keepalive(&TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL));
    Ok(())
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(sys::UnixListener),
}

impl Listener {
    /// A new connection, its peer as logged, and the peer's address (`None`
    /// for a Unix socket's peer).
    pub async fn accept(&self) -> io::Result<(Box<dyn Stream>, String, Option<IpAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                tune(&s)?;
                Ok((Box::new(s), peer.to_string(), Some(peer.ip())))
            }
            Listener::Unix(l) => {
                let s = l.accept().await?;
                Ok((s, format!("unix:{}", l.path().display()), None))
            }
        }
    }

    /// Stops listening; a Unix socket's file is removed.
    pub fn close(self) {
        if let Listener::Unix(l) = self {
            l.close();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_send_at_once_and_probe_a_silent_peer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let s = SockRef::from(&accepted);
        assert!(!s.tcp_nodelay().unwrap() && !s.keepalive().unwrap(), "not so by default");
        tune(&accepted).unwrap();
        assert!(s.tcp_nodelay().unwrap() && s.keepalive().unwrap());
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        assert_eq!(
            (s.tcp_keepalive_time().unwrap(), s.tcp_keepalive_interval().unwrap()),
            (KEEPALIVE_IDLE, KEEPALIVE_INTERVAL)
        );
    }
}
